//! The files `atrest demo` writes through its mount, and the check that
//! the backing directory never holds their canary. Standard library
//! only: the e2e test of `atrest migrate` (crates/cli/tests/e2e/migrate.rs)
//! includes this file, so that the format 1 vault it migrates holds the
//! demo's data.

use std::fs;
use std::io;
use std::path::Path;

/// The first line of `hello.txt`: a string that must never appear in the
/// backing directory.
pub const CANARY: &str = "CANARY-7f3a: the quarterly numbers nobody may read";

/// Writes the demo's files under `root`: a directory tree, a small text
/// file holding [`CANARY`], a CSV, 1 MiB of one byte, and a relative
/// symlink to the CSV.
pub fn write(root: &Path) -> io::Result<()> {
    fs::create_dir_all(root.join("reports/2026"))?;
    fs::write(root.join("hello.txt"), format!("{CANARY}\n"))?;
    fs::write(
        root.join("reports/2026/q3-revenue.csv"),
        "region,revenue\nnorth,1200000\n",
    )?;
    fs::write(root.join("reports/2026/big.bin"), vec![0x5au8; 1 << 20])?;
    std::os::unix::fs::symlink("reports/2026/q3-revenue.csv", root.join("latest.csv"))
}

/// Whether any regular file under `dir` holds `needle`.
pub fn contains(dir: &Path, needle: &[u8]) -> io::Result<bool> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            if contains(&e.path(), needle)? {
                return Ok(true);
            }
        } else if t.is_file()
            && fs::read(e.path())?
                .windows(needle.len())
                .any(|w| w == needle)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
