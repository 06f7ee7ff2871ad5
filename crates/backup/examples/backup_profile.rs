//! Times two `backup` runs of one source directory into a new local
//! repository (the second with the first as parent), for `perf record`
//! and quick direction checks; not a benchmark (bench/backup.sh is).
//!
//! cargo run --release -p atrest-backup --example backup_profile -- SRC REPO_DIR
//!
//! RUNS=N: N runs (default 2); NO_READ_AHEAD=1: walk without read-ahead;
//! DROP_CACHES=1 (root): drop the page cache before each run.

use std::path::PathBuf;
use std::time::Instant;

use atrest_backup::{BackupOptions, ChunkSizes, LocalBackend, Repository, SnapshotMeta};
use atrest_core::SecretKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, src, repo_dir] = &args[..] else {
        return Err("usage: backup_profile SRC REPO_DIR".into());
    };
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut repo = Repository::init(
        LocalBackend::new(repo_dir),
        &SecretKey::from_bytes([0x42; 32]),
        ChunkSizes::DEFAULT,
    )?;
    for run in 1..=runs {
        let meta = SnapshotMeta {
            time_ms: 1_767_225_600_000 + run as u64,
            hostname: "profile".into(),
            tags: Vec::new(),
        };
        if std::env::var_os("DROP_CACHES").is_some() {
            // Root only: every run from cold caches, as bench/backup.sh does.
            std::process::Command::new("sync").status()?;
            std::fs::write("/proc/sys/vm/drop_caches", "3")?;
        }
        let start = Instant::now();
        let options = BackupOptions {
            no_read_ahead: std::env::var_os("NO_READ_AHEAD").is_some(),
            ..BackupOptions::default()
        };
        let (_, snap) = repo.backup_with(&[PathBuf::from(src)], &meta, &options)?;
        let s = &snap.summary;
        eprintln!(
            "run {run}: {:.2} s, {} files, {} dirs, {} unchanged, {} new blobs, {} packs",
            start.elapsed().as_secs_f64(),
            s.files,
            s.dirs,
            s.unchanged_files,
            s.new_blobs,
            s.packs
        );
    }
    Ok(())
}
