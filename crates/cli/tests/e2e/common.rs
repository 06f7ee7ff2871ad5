//! Test harness: a vault in a temporary directory, mounted through the real
//! `atrest` binary, unmounted on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn atrest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atrest"))
}

/// Runs atrest with `args`; returns the output (not checked).
pub fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = atrest();
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run atrest")
}

/// Runs atrest and asserts success.
pub fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "atrest {:?} failed: {}\n{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "these tests mount a real FUSE file system: /dev/fuse is missing (load the fuse module; install fuse3)"
    );
    assert!(
        rustix::process::geteuid().is_root() || which("fusermount3"),
        "these tests need root or fusermount3 (apt install fuse3)"
    );
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
        .unwrap_or(false)
}

/// Cheap Argon2 parameters: these tests are about the file system.
pub const FAST_KDF: [&str; 4] = ["--argon2-memory", "8", "--argon2-iterations", "1"];

pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub vault: PathBuf,
    pub mnt: PathBuf,
    pub pass: PathBuf,
    pub log: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// A new vault, mounted. `base` chooses the file system it lives on.
    pub fn new_in(base: &Path) -> Self {
        require_fuse();
        let dir = tempfile::Builder::new()
            .prefix("atrest-e2e-")
            .tempdir_in(base)
            .expect("tempdir");
        let vault = dir.path().join("vault");
        let mnt = dir.path().join("mnt");
        let pass = dir.path().join("pass");
        let log = dir.path().join("mount.log");
        fs::create_dir(&mnt).unwrap();
        fs::write(&pass, "test passphrase\n").unwrap();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"init",
            &vault,
            &"--passphrase-file",
            &pass,
            &"--no-recovery-key",
        ];
        for a in &FAST_KDF {
            args.push(a);
        }
        ok(&args);
        let mut m = Self {
            dir,
            vault,
            mnt,
            pass,
            log,
            mounted: false,
        };
        m.mount();
        m
    }

    pub fn new() -> Self {
        Self::new_in(&std::env::temp_dir())
    }

    pub fn mount(&mut self) {
        ok(&[
            &"mount",
            &self.vault,
            &self.mnt,
            &"--passphrase-file",
            &self.pass,
            &"--log-file",
            &self.log,
        ]);
        self.mounted = true;
    }

    pub fn unmount(&mut self) {
        ok(&[&"unmount", &self.mnt]);
        self.mounted = false;
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every regular file of the backing directory that holds content.
    pub fn backing_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    walk(&e.path(), out);
                } else if t.is_file() && !e.file_name().to_string_lossy().contains('.') {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.vault, &mut out);
        out
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run(&[&"unmount", &"--lazy", &self.mnt]);
        }
    }
}

/// A deterministic pseudo-random byte stream (xorshift), so failures replay.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
