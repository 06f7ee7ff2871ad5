//! Repositories on a real S3-compatible server (moto's, from PyPI), started
//! by each test on 127.0.0.1: round trip, forget/prune (its copies pack
//! by pack), and the server frozen mid-run (requests time out, retries give up with a clear error,
//! nothing half-committed, the next run completes). CI sets
//! ATREST_TEST_MOTO (the moto_server binary) and ATREST_REQUIRE_S3=1, so a
//! missing server fails instead of skipping.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atrest_backup::{Backend, ChunkSizes, Repository, S3Backend, S3Options, SnapshotMeta};
use atrest_core::SecretKey;
use std::sync::atomic::Ordering;

use atrest_backup::ReadProfile;
use common::{
    Counting, assert_no_temporary_files, assert_same_tree, back_up_in_runs, damage_shared_blob,
    packs, prune_costs_requests_per_pack, pseudo, restored_root,
};

const SIZES: ChunkSizes = ChunkSizes {
    min: 16 << 10,
    avg: 64 << 10,
    max: 256 << 10,
};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::CONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Option<Moto> {
    let bin = match std::env::var("ATREST_TEST_MOTO") {
        Ok(b) => b,
        Err(_) if Path::new("/opt/moto/bin/moto_server").exists() => {
            "/opt/moto/bin/moto_server".into()
        }
        Err(_) => {
            assert!(
                std::env::var_os("ATREST_REQUIRE_S3").is_none(),
                "ATREST_REQUIRE_S3 is set but no moto_server: set ATREST_TEST_MOTO (scripts/test-all.sh installs it)"
            );
            eprintln!(
                "skipping: no moto_server (python3 -m venv /opt/moto && /opt/moto/bin/pip install 'moto[server]')"
            );
            return None;
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    // Create the bucket (path-style PUT; moto takes any credentials).
    let status = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/backups")])
        .status()
        .unwrap();
    assert!(status.success(), "cannot create the bucket");
    Some(Moto { child, endpoint })
}

fn options(m: &Moto, timeout: Duration) -> S3Options {
    S3Options {
        endpoint: Some(m.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        timeout: Some(timeout),
        retry_timeout: Some(timeout * 3),
    }
}

fn meta(t: u64) -> SnapshotMeta {
    SnapshotMeta {
        time_ms: t,
        hostname: "s3-test".into(),
        tags: vec![],
    }
}

#[test]
fn s3_round_trip_prune_and_a_frozen_server() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.bin"), pseudo(1 << 20, 1)).unwrap();
    fs::write(src.join("sub/b.txt"), b"on s3").unwrap();
    let key = SecretKey::random();
    let url = "s3://backups/host-1/srv";
    let backend = S3Backend::new(url, &options(&m, Duration::from_secs(10))).unwrap();
    assert_eq!(backend.location(), url);
    let mut repo = Repository::init(backend, &key, SIZES).unwrap();
    let (first, _) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    drop(repo);

    // Reopen from the server; restore; check every byte.
    let repo = Repository::open(
        S3Backend::new(url, &options(&m, Duration::from_secs(10))).unwrap(),
        &key,
    )
    .unwrap();
    let target = dir.path().join("restore");
    assert!(repo.restore(&first, &target).unwrap().failed.is_empty());
    let out = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(out.join("a.bin")).unwrap(), pseudo(1 << 20, 1));
    assert_eq!(fs::read(out.join("sub/b.txt")).unwrap(), b"on s3");
    let check = repo.check(true).unwrap();
    assert!(
        check.problems.is_empty() && check.blobs_read > 0,
        "{:?}",
        check.problems
    );
    drop(repo);

    // Frozen server: the run fails after its retries, with the object named.
    fs::write(src.join("c.bin"), pseudo(600 << 10, 2)).unwrap();
    let pid = rustix::process::Pid::from_child(&m.child);
    let mut repo = Repository::open(
        S3Backend::new(url, &options(&m, Duration::from_millis(500))).unwrap(),
        &key,
    )
    .unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let err = repo
        .backup(std::slice::from_ref(&src), &meta(2))
        .unwrap_err()
        .to_string();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    assert!(err.contains("s3://backups/host-1/srv/"), "{err}");
    drop(repo);

    // Nothing half-committed: still one snapshot, check clean; the next
    // run completes and restores.
    let mut repo = Repository::open(
        S3Backend::new(url, &options(&m, Duration::from_secs(10))).unwrap(),
        &key,
    )
    .unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    assert!(repo.check(true).unwrap().problems.is_empty());
    let (second, _) = repo.backup(std::slice::from_ref(&src), &meta(3)).unwrap();
    let target2 = dir.path().join("restore2");
    assert!(repo.restore(&second, &target2).unwrap().failed.is_empty());
    assert_eq!(
        fs::read(target2.join(src.strip_prefix("/").unwrap()).join("c.bin")).unwrap(),
        pseudo(600 << 10, 2)
    );

    // forget the first, prune, and nothing breaks.
    repo.forget(std::slice::from_ref(&first)).unwrap();
    repo.prune().unwrap();
    let repo = Repository::open(
        S3Backend::new(url, &options(&m, Duration::from_secs(10))).unwrap(),
        &key,
    )
    .unwrap();
    let check = repo.check(true).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(repo.snapshots().unwrap().len(), 1);
}

#[test]
fn s3_restore_of_many_small_files_reads_pack_by_pack_and_leaves_out_a_damaged_blob() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let key = SecretKey::random();
    let url = "s3://backups/spread";
    let s3 = || S3Backend::new(url, &options(&m, Duration::from_secs(10))).unwrap();
    assert_eq!(s3().read_profile(), ReadProfile::REMOTE);
    let mut repo = Repository::init(s3(), &key, SIZES).unwrap();
    let spread = back_up_in_runs(&mut repo, &src, 4, 10, 25);
    drop(repo);
    let packs = packs(&s3());

    // Reopened from the server: every file byte for byte, in a few
    // requests per pack (one per file's blob before).
    let counting = Counting::new(s3(), ReadProfile::REMOTE);
    let ranged = std::sync::Arc::clone(&counting.ranged);
    let repo = Repository::open(counting, &key).unwrap();
    ranged.store(0, Ordering::Relaxed);
    let target = dir.path().join("restore");
    let report = repo.restore(&spread.snapshot, &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.files, spread.files as u64);
    assert_same_tree(&src, &restored_root(&target, &src));
    let reads = ranged.load(Ordering::Relaxed);
    assert!(
        reads <= 3 * packs,
        "{reads} requests for {} files in {packs} packs",
        spread.files
    );

    // The blob every `shared.bin` uses, damaged on the server: those four
    // files are left out and named, every other one restored.
    // A plain PUT over the object (S3 keeps no "already there" rule).
    damage_shared_blob(&repo, &spread.snapshot, |pack, bytes| {
        repo.backend().inner.put(pack, bytes).unwrap()
    });
    let target = dir.path().join("restore-damaged");
    let report = repo.restore(&spread.snapshot, &target).unwrap();
    let out = restored_root(&target, &src);
    assert_eq!(report.failed.len(), 4, "{:?}", report.failed);
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.contains("shared.bin: ") && f.contains("damaged")),
        "{:?}",
        report.failed
    );
    assert_eq!(report.files, spread.files as u64 - 4);
    for run in 0..4 {
        assert!(!out.join(format!("r{run}/shared.bin")).exists());
        assert!(
            fs::read(out.join(format!("r{run}/d3/f7"))).unwrap()
                == fs::read(src.join(format!("r{run}/d3/f7"))).unwrap()
        );
    }
    assert_no_temporary_files(&target);
}

/// Prune's copies on the server: a few GETs in all, where it made one per
/// blob kept (over 500).
#[test]
fn s3_prune_copies_the_blobs_it_keeps_in_requests_per_pack_not_per_blob() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store =
        || S3Backend::new("s3://backups/prune", &options(&m, Duration::from_secs(10))).unwrap();
    prune_costs_requests_per_pack(store, SIZES, dir.path(), (4, 10, 25));
}
