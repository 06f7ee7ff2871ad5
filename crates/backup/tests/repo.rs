//! Repository round trips on a real directory tree: contents, modes,
//! owners, nanosecond mtimes, symlinks, fifos, empty directories, long and
//! non-UTF-8 names; dedup across runs; tampered objects named by `check`
//! and never restored as wrong data; wrong key, not a repository, newer
//! version refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atrest_backup::{BackupError, ChunkSizes, LocalBackend, Repository, SnapshotMeta};
use atrest_core::SecretKey;
use std::sync::atomic::Ordering;

use atrest_backup::ReadProfile;
use common::{
    Counting, assert_no_temporary_files, assert_same_tree, back_up_in_runs, damage_shared_blob,
    packs, prune_costs_requests_per_pack, pseudo, restored_root, shared_blob, thin_out,
};

const SIZES: ChunkSizes = ChunkSizes {
    min: 16 << 10,
    avg: 64 << 10,
    max: 256 << 10,
};

fn meta(t: u64) -> SnapshotMeta {
    SnapshotMeta {
        time_ms: t,
        hostname: "test".into(),
        tags: vec![],
    }
}

/// Builds the source tree; returns its root.
fn build(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::write(src.join("small.txt"), b"hello backup\n").unwrap();
    fs::write(src.join("empty-file"), b"").unwrap();
    fs::write(src.join("sub/big.bin"), pseudo(3 << 20, 1)).unwrap();
    fs::write(src.join("sub/deeper/copy.bin"), pseudo(3 << 20, 1)).unwrap();
    fs::write(
        src.join(OsStr::from_bytes(b"non-utf8-\xff\xfe")),
        b"bytes name",
    )
    .unwrap();
    fs::write(src.join("n".repeat(255)), b"long name").unwrap();
    std::os::unix::fs::symlink("sub/big.bin", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/dangling", src.join("dangling")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    // Two names of one inode; an extended attribute; a sparse file.
    fs::write(src.join("linked-a"), b"one inode, two names").unwrap();
    fs::hard_link(src.join("linked-a"), src.join("sub/linked-b")).unwrap();
    rustix::fs::setxattr(
        src.join("small.txt"),
        "user.comment",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let sparse = fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"head", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"tail", (8 << 20) - 4).unwrap();
    drop(sparse);
    fs::set_permissions(src.join("small.txt"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    let t = rustix::fs::Timespec {
        tv_sec: 1_700_000_000,
        tv_nsec: 123_456_789,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        src.join("small.txt"),
        &times,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(src.join("empty-file"), Some(1234), Some(5678)).unwrap();
    }
    src
}

#[test]
fn round_trip_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let src = build(dir.path());
    let key = SecretKey::random();
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    let (id, snap) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    assert!(snap.summary.errors.is_empty(), "{:?}", snap.summary.errors);
    assert_eq!(snap.summary.files, 9);
    // The second copy of big.bin is deduplicated (one 3 MiB copy stored),
    // and the sparse file's 8 MiB of zeros are one repeated chunk: at most
    // one copy, three chunks of the sparse file (head, zeros, tail) and
    // the small files are new.
    assert!(
        snap.summary.new_bytes < (3 << 20) + 3 * (256 << 10) + (64 << 10),
        "{}",
        snap.summary.new_bytes
    );

    // Reopen from storage, then restore.
    let repo = Repository::open(LocalBackend::new(dir.path().join("repo")), &key).unwrap();
    let target = dir.path().join("restore");
    let report = repo.restore(&id[..8], &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let out = restored_root(&target, &src);
    assert_same_tree(&src, &out);
    assert_eq!(
        fs::metadata(out.join("linked-a")).unwrap().ino(),
        fs::metadata(out.join("sub/linked-b")).unwrap().ino(),
        "hard links restored as one inode"
    );
    let sparse = fs::metadata(out.join("sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < sparse.len() / 4,
        "sparse file restored dense: {} blocks",
        sparse.blocks()
    );
    let check = repo.check(true).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert!(check.blobs_read > 0 && check.trees >= 4);
}

#[test]
fn second_run_stores_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // 32 MiB: 1% of it exceeds the largest chunk (256 KiB) plus the trees.
    // A fixed key: for about 1 key in 10^5 the first cut moves and the
    // streams take several chunks to fall back in step.
    let big = pseudo(32 << 20, 5);
    fs::write(src.join("big"), &big).unwrap();
    let key = SecretKey::from_bytes([5; 32]);
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    // Unchanged: nothing new but the (identical) trees.
    let (_, again) = repo.backup(std::slice::from_ref(&src), &meta(2)).unwrap();
    assert_eq!(again.summary.new_bytes, 0);
    // One byte inserted at the start, and the file moved: < 1% new (the
    // first chunk or two, and the trees).
    let mut shifted = vec![0x7f];
    shifted.extend_from_slice(&big);
    fs::remove_file(src.join("big")).unwrap();
    fs::create_dir(src.join("moved")).unwrap();
    fs::write(src.join("moved/big"), &shifted).unwrap();
    let (_, third) = repo.backup(std::slice::from_ref(&src), &meta(3)).unwrap();
    eprintln!(
        "one-byte insert: {} new bytes in {} blobs",
        third.summary.new_bytes, third.summary.new_blobs
    );
    assert!(
        third.summary.new_bytes * 100 < shifted.len() as u64,
        "{} new bytes",
        third.summary.new_bytes
    );
    assert_eq!(repo.snapshots().unwrap().len(), 3);
}

#[test]
fn tampered_objects_are_named_and_never_restored() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), pseudo(300 << 10, 1)).unwrap();
    fs::write(src.join("b"), b"the other file").unwrap();
    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    let (id, _) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    // Packers run in parallel and lay blobs out in a random order: the
    // index says where a's first chunk is.
    let a = repo
        .list(&id)
        .unwrap()
        .into_iter()
        .find(|n| n.path.ends_with(b"/a"))
        .unwrap();
    let (pack, at) = repo.locate(&a.node.content[0]).unwrap().unwrap();
    let path = root.join(&pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[at.offset as usize + 1] ^= 1;
    fs::write(&path, &bytes).unwrap();

    let repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    let check = repo.check(true).unwrap();
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.contains(&pack[pack.len() - 64..])),
        "{:?}",
        check.problems
    );
    let target = dir.path().join("restore");
    let report = repo.restore(&id, &target).unwrap();
    let out = restored_root(&target, &src);
    assert_eq!(fs::read(out.join("b")).unwrap(), b"the other file");
    assert!(
        !out.join("a").exists(),
        "a damaged file must not be written"
    );
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(report.failed[0].contains("damaged"), "{}", report.failed[0]);
    assert!(fs::read_dir(&out).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".atrest")
    }));
}

#[test]
fn tampered_index_and_snapshot_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"x").unwrap();
    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    let backend = LocalBackend::new(&root);
    let snap = atrest_backup::Backend::list(&backend, "snapshots")
        .unwrap()
        .remove(0);
    let mut bytes = fs::read(root.join(&snap)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(root.join(&snap), &bytes).unwrap();
    let report = repo.check(false).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains(&snap)),
        "{:?}",
        report.problems
    );

    let index = atrest_backup::Backend::list(&backend, "index")
        .unwrap()
        .remove(0);
    fs::write(root.join(&index), b"garbage").unwrap();
    match Repository::open(LocalBackend::new(&root), &key) {
        Err(BackupError::Damaged { object, .. }) => assert_eq!(object, index),
        other => panic!("expected a damaged index, got {:?}", other.err()),
    }
}

#[test]
fn wrong_key_missing_repo_and_newer_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    assert!(matches!(
        Repository::open(LocalBackend::new(&root), &SecretKey::random()),
        Err(BackupError::NotARepository(_))
    ));
    let key = SecretKey::random();
    Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    assert_eq!(
        Repository::open(LocalBackend::new(&root), &key)
            .unwrap()
            .version(),
        atrest_backup::REPO_VERSION
    );
    assert!(matches!(
        Repository::init(LocalBackend::new(&root), &key, SIZES),
        Err(BackupError::AlreadyExists(_))
    ));
    assert!(matches!(
        Repository::open(LocalBackend::new(&root), &SecretKey::random()),
        Err(BackupError::WrongKey)
    ));
    let mut config = fs::read(root.join("config")).unwrap();
    config[4] = 3;
    fs::write(root.join("config"), &config).unwrap();
    match Repository::open(LocalBackend::new(&root), &key) {
        Err(e @ BackupError::UnsupportedVersion(3)) => {
            assert!(e.to_string().contains("upgrade atrest"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
    // A format 2 config relabelled as format 1 no longer authenticates.
    config[4] = 1;
    config.splice(21..21, [0u8; 16]);
    fs::write(root.join("config"), &config).unwrap();
    assert!(Repository::open(LocalBackend::new(&root), &key).is_err());
}

#[test]
fn nothing_of_the_source_appears_in_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("canary-dir-7f3a");
    fs::create_dir(&src).unwrap();
    let canary = b"CANARY-4b1d-secret-content";
    fs::write(src.join("canary-name-91c2.txt"), canary.repeat(100)).unwrap();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &SecretKey::random(), SIZES).unwrap();
    repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    let backend = LocalBackend::new(&root);
    for dirname in ["data", "index", "snapshots"] {
        for name in atrest_backup::Backend::list(&backend, dirname).unwrap() {
            let bytes = fs::read(root.join(&name)).unwrap();
            for needle in [
                &canary[..],
                b"canary-name-91c2",
                b"canary-dir-7f3a",
                b"CANARY",
            ] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{needle:?} in {name}"
                );
            }
            assert!(!name.contains("canary"));
        }
    }
}

#[test]
fn forget_and_prune_free_space_and_keep_what_snapshots_use() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let root = dir.path().join("repo");
    let key = SecretKey::random();
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    // Snapshot 1: a (big, unique to it) and b and c (small, sharing a pack).
    fs::write(src.join("a"), pseudo(2 << 20, 11)).unwrap();
    fs::write(src.join("b"), b"kept small file").unwrap();
    fs::write(src.join("c"), b"dropped small file").unwrap();
    let (first, _) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    // Snapshot 2: only b.
    fs::remove_file(src.join("a")).unwrap();
    fs::remove_file(src.join("c")).unwrap();
    let (second, _) = repo.backup(std::slice::from_ref(&src), &meta(2)).unwrap();
    let size = |root: &Path| -> u64 {
        let backend = LocalBackend::new(root);
        atrest_backup::Backend::list(&backend, "data")
            .unwrap()
            .iter()
            .map(|n| fs::metadata(root.join(n)).unwrap().len())
            .sum()
    };
    let before = size(&root);

    // Nothing to prune while both snapshots live.
    assert_eq!(repo.prune().unwrap().blobs_dropped, 0);
    let policy = atrest_backup::KeepPolicy {
        last: 1,
        ..Default::default()
    };
    let snaps = repo.snapshots().unwrap();
    let kept = atrest_backup::keep(&policy, &snaps);
    assert_eq!(kept.iter().collect::<Vec<_>>(), [&second]);
    repo.forget(std::slice::from_ref(&first)).unwrap();
    let report = repo.prune().unwrap();
    assert!(report.blobs_dropped >= 3, "{report:?}");
    assert!(
        size(&root) < before / 4,
        "{} of {before} bytes left",
        size(&root)
    );

    // Reopened: check reads everything, the kept snapshot restores whole.
    let repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    let check = repo.check(true).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    let target = dir.path().join("restore");
    assert!(repo.restore(&second, &target).unwrap().failed.is_empty());
    let out = restored_root(&target, &src);
    assert_eq!(fs::read(out.join("b")).unwrap(), b"kept small file");
    assert!(!out.join("a").exists() && !out.join("c").exists());
    assert!(matches!(
        repo.restore(&first, &target),
        Err(BackupError::NoSuchSnapshot(_))
    ));
}

#[test]
fn packs_of_a_run_that_never_wrote_its_index_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("big"), pseudo(4 << 20, 21)).unwrap();
    let root = dir.path().join("repo");
    let key = SecretKey::random();
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    // As if the run had died after its packs and before its index and
    // snapshot: remove both.
    let backend = LocalBackend::new(&root);
    for dir in ["index", "snapshots"] {
        for name in atrest_backup::Backend::list(&backend, dir).unwrap() {
            fs::remove_file(root.join(name)).unwrap();
        }
    }
    let mut repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    let (id, snap) = repo.backup(std::slice::from_ref(&src), &meta(2)).unwrap();
    assert!(
        snap.summary.new_bytes < 64 << 10,
        "{} bytes uploaded again",
        snap.summary.new_bytes
    );
    let repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    assert!(repo.check(true).unwrap().problems.is_empty());
    let target = dir.path().join("restore");
    assert!(repo.restore(&id, &target).unwrap().failed.is_empty());
    assert_eq!(
        fs::read(restored_root(&target, &src).join("big")).unwrap(),
        pseudo(4 << 20, 21)
    );
}

#[test]
fn excludes_one_file_system_and_dry_run() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts a tmpfs: run it as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("keep/tmp")).unwrap();
    fs::create_dir(src.join("other-fs")).unwrap();
    fs::write(src.join("a.txt"), b"kept").unwrap();
    fs::write(src.join("b.tmp"), b"excluded by name").unwrap();
    fs::write(src.join("cache/x"), b"excluded with its directory").unwrap();
    fs::write(src.join("keep/tmp/y"), b"excluded by path").unwrap();
    fs::write(src.join("keep/z"), b"kept").unwrap();
    rustix::mount::mount(
        "tmpfs",
        src.join("other-fs"),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _guard = Unmount(src.join("other-fs"));
    fs::write(src.join("other-fs/on-tmpfs"), b"another file system").unwrap();

    let root = dir.path().join("repo");
    let key = SecretKey::random();
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    let options = atrest_backup::BackupOptions {
        excludes: ["*.tmp", "cache", &format!("{}/keep/tmp", src.display())]
            .iter()
            .map(|p| glob::Pattern::new(p).unwrap())
            .collect(),
        one_file_system: true,
        dry_run: true,
        ..Default::default()
    };
    let (id, dry) = repo
        .backup_with(std::slice::from_ref(&src), &meta(1), &options)
        .unwrap();
    assert!(id.is_empty());
    assert!(dry.summary.new_bytes > 0);
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "a dry run stores no snapshot"
    );
    let backend = LocalBackend::new(&root);
    assert!(
        atrest_backup::Backend::list(&backend, "data")
            .unwrap()
            .is_empty(),
        "a dry run stores no pack"
    );

    let options = atrest_backup::BackupOptions {
        dry_run: false,
        ..options
    };
    let (id, snap) = repo
        .backup_with(std::slice::from_ref(&src), &meta(2), &options)
        .unwrap();
    assert_eq!(
        snap.summary.new_bytes, dry.summary.new_bytes,
        "the dry run counted what the run stored"
    );
    let target = dir.path().join("restore");
    assert!(repo.restore(&id, &target).unwrap().failed.is_empty());
    let out = restored_root(&target, &src);
    assert!(out.join("a.txt").exists() && out.join("keep/z").exists());
    for gone in ["b.tmp", "cache", "keep/tmp"] {
        assert!(!out.join(gone).exists(), "{gone} should be excluded");
    }
    assert!(out.join("other-fs").is_dir(), "the mount point is kept");
    assert!(
        !out.join("other-fs/on-tmpfs").exists(),
        "--one-file-system did not descend"
    );
}

#[test]
fn unchanged_files_come_from_the_parent_and_changed_ones_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = build(dir.path());
    let key = SecretKey::random();
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    let (first, snap1) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    assert_eq!(snap1.summary.unchanged_files, 0);
    assert_eq!(snap1.parent, None);

    // Nothing changed: every file (hard links count once: their second
    // name reuses the first) comes from the parent, unread.
    let (_, snap2) = repo.backup(std::slice::from_ref(&src), &meta(2)).unwrap();
    assert_eq!(snap2.parent.as_deref(), Some(first.as_str()));
    assert_eq!(snap2.summary.unchanged_files, snap2.summary.files - 1);
    assert_eq!(snap2.summary.new_bytes, 0);

    // Same size, mtime put back: the ctime still differs, so the new bytes
    // are read and restored.
    let path = src.join("small.txt");
    let before = fs::symlink_metadata(&path).unwrap();
    fs::write(&path, b"HELLO BACKUP\n").unwrap();
    let t = rustix::fs::Timespec {
        tv_sec: before.mtime(),
        tv_nsec: before.mtime_nsec(),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let (third, snap3) = repo.backup(std::slice::from_ref(&src), &meta(3)).unwrap();
    assert_eq!(snap3.summary.unchanged_files, snap3.summary.files - 2);
    let target = dir.path().join("restore");
    repo.restore(&third, &target).unwrap();
    assert_eq!(
        fs::read(restored_root(&target, &src).join("small.txt")).unwrap(),
        b"HELLO BACKUP\n"
    );

    // --force (no parent): every file is read.
    let options = atrest_backup::BackupOptions {
        parent: atrest_backup::Parent::None,
        ..Default::default()
    };
    let (_, forced) = repo
        .backup_with(std::slice::from_ref(&src), &meta(4), &options)
        .unwrap();
    assert_eq!(forced.summary.unchanged_files, 0);
    assert_eq!(forced.parent, None);
    // Another host's snapshots are not a parent.
    let other = SnapshotMeta {
        hostname: "other".into(),
        ..meta(5)
    };
    let (_, elsewhere) = repo.backup(std::slice::from_ref(&src), &other).unwrap();
    assert_eq!(elsewhere.summary.unchanged_files, 0);
}

#[test]
fn restore_includes_and_excludes_select_entries() {
    let dir = tempfile::tempdir().unwrap();
    let src = build(dir.path());
    let key = SecretKey::random();
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    let (id, _) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    let patterns = |p: &[&str]| {
        atrest_backup::Patterns(p.iter().map(|p| glob::Pattern::new(p).unwrap()).collect())
    };

    // Include a directory (by path): it and everything below, and the
    // directories leading to it, nothing else.
    let target = dir.path().join("only-sub");
    let options = atrest_backup::RestoreOptions {
        includes: patterns(&[&format!("{}/sub", src.display())]),
        ..Default::default()
    };
    let report = repo.restore_with(&id, &target, &options).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let out = restored_root(&target, &src);
    assert_eq!(
        fs::read(out.join("sub/deeper/copy.bin")).unwrap(),
        pseudo(3 << 20, 1)
    );
    let mut top: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, vec![std::ffi::OsString::from("sub")]);
    // The directory leading to it keeps its stored mode.
    assert_eq!(
        fs::metadata(&out).unwrap().mode() & 0o7777,
        fs::metadata(&src).unwrap().mode() & 0o7777
    );

    // Exclude by name: every `*.bin` and the `empty` directory are left out.
    let target = dir.path().join("no-bin");
    let options = atrest_backup::RestoreOptions {
        excludes: patterns(&["*.bin", "empty"]),
        ..Default::default()
    };
    let report = repo.restore_with(&id, &target, &options).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let out = restored_root(&target, &src);
    assert!(!out.join("sub/big.bin").exists());
    assert!(!out.join("sub/deeper/copy.bin").exists());
    assert!(!out.join("empty").exists());
    assert_eq!(fs::read(out.join("small.txt")).unwrap(), b"hello backup\n");
    assert!(out.join("sub/deeper").is_dir());
}

#[test]
fn read_data_subset_reads_that_share_of_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let key = SecretKey::random();
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    // Six runs, each of new data: at least six packs.
    for i in 0..6 {
        fs::write(src.join(format!("f{i}")), pseudo(300 << 10, 50 + i)).unwrap();
        repo.backup(std::slice::from_ref(&src), &meta(i)).unwrap();
    }
    let packs = repo.check(true).unwrap().packs_read;
    assert!(packs >= 6, "{packs}");
    for (percent, want) in [(1, 1), (50, packs.div_ceil(2)), (100, packs)] {
        let report = repo.check_packs(percent).unwrap();
        assert_eq!(report.packs_read, want, "{percent}%");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
    assert_eq!(repo.check_packs(0).unwrap().packs_read, 0);
}

/// A file that reads to another length than its size (a /proc file, whose
/// size is 0, stands for one appended to while read) is kept with the bytes
/// read and named in the summary.
#[test]
fn a_file_changing_while_read_is_kept_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::random();
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    let file = PathBuf::from("/proc/self/mountinfo");
    let (id, snap) = repo.backup(std::slice::from_ref(&file), &meta(1)).unwrap();
    assert_eq!(
        snap.summary.changed_while_read,
        vec![file.display().to_string()]
    );
    assert!(snap.summary.errors.is_empty());
    let listed = repo.list(&id).unwrap();
    assert!(listed[0].node.size > 0, "the bytes read are kept");
    // An ordinary file is not reported.
    let plain = dir.path().join("plain");
    fs::write(&plain, b"steady").unwrap();
    let (_, snap) = repo.backup(&[plain], &meta(2)).unwrap();
    assert!(snap.summary.changed_while_read.is_empty());
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A tmpfs of `bytes` at `path` (root only; CI runs tests as root).
    fn mount(path: &Path, bytes: u64) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts a tmpfs: run it as root (CI does)"
        );
        fs::create_dir_all(path).unwrap();
        let options = std::ffi::CString::new(format!("size={bytes}")).unwrap();
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(options.as_c_str()),
        )
        .unwrap();
        Self(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn a_full_disk_stops_a_run_cleanly_and_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), pseudo(3 << 20, 71)).unwrap();
    fs::write(src.join("b"), pseudo(3 << 20, 72)).unwrap();
    let small = dir.path().join("small");
    let _fs = Tmpfs::mount(&small, 4 << 20);
    let root = small.join("repo");
    let key = SecretKey::random();
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    match repo.backup(std::slice::from_ref(&src), &meta(1)) {
        Err(BackupError::Storage { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc_enospc()), "{source}")
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    // Nothing half-committed: no snapshot, and what was written checks.
    let repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    assert!(repo.snapshots().unwrap().is_empty());
    let check = repo.check(true).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    // With room again, the next run completes (reusing the packs the
    // failed run wrote) and restores.
    let bigger = std::ffi::CString::new("size=32m").unwrap();
    rustix::mount::mount_remount(
        &small,
        rustix::mount::MountFlags::empty(),
        bigger.as_c_str(),
    )
    .unwrap();
    drop(repo);
    let mut repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    let (id, _) = repo.backup(std::slice::from_ref(&src), &meta(2)).unwrap();
    let target = dir.path().join("restored");
    let report = repo.restore(&id, &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for (name, seed) in [("a", 71), ("b", 72)] {
        assert_eq!(
            fs::read(restored_root(&target, &src).join(name)).unwrap(),
            pseudo(3 << 20, seed)
        );
    }
}

#[test]
fn a_full_disk_during_restore_fails_those_files_and_writes_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("small"), b"fits").unwrap();
    fs::write(src.join("large"), pseudo(2 << 20, 73)).unwrap();
    let key = SecretKey::random();
    let mut repo =
        Repository::init(LocalBackend::new(dir.path().join("repo")), &key, SIZES).unwrap();
    let (id, _) = repo.backup(std::slice::from_ref(&src), &meta(1)).unwrap();
    let target = dir.path().join("target");
    let _fs = Tmpfs::mount(&target, 1 << 20);
    let report = repo.restore(&id, &target).unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(report.failed[0].contains("large"), "{:?}", report.failed);
    let out = restored_root(&target, &src);
    assert_eq!(fs::read(out.join("small")).unwrap(), b"fits");
    assert!(
        !out.join("large").exists(),
        "no partial file under its name"
    );
    let leftovers: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".atrest-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

#[test]
fn read_ahead_changes_nothing_in_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let src = build(dir.path());
    // A wider tree than the read-ahead's threads, so that they list
    // directories out of the walk's order.
    for d in 0..24 {
        let sub = src.join(format!("wide/d{d:02}/inner"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..12 {
            fs::write(
                sub.join(format!("f{f}")),
                pseudo(100 + f * d, (d * 100 + f) as u64),
            )
            .unwrap();
        }
    }
    // Attribute names and a value longer than the first buffer read_xattrs
    // tries (256 bytes).
    let many = src.join("many-xattrs");
    fs::write(&many, b"attributes").unwrap();
    for i in 0..20 {
        let value = if i == 0 {
            pseudo(1000, 7)
        } else {
            vec![i as u8]
        };
        let name = format!("user.attribute-with-a-long-name-{i:02}");
        rustix::fs::setxattr(
            &many,
            name.as_str(),
            &value,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }

    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    let run = |repo: &mut Repository<LocalBackend>, t, no_read_ahead, parent| {
        let options = atrest_backup::BackupOptions {
            no_read_ahead,
            parent,
            ..Default::default()
        };
        let (id, snap) = repo
            .backup_with(std::slice::from_ref(&src), &meta(t), &options)
            .unwrap();
        assert!(snap.summary.errors.is_empty(), "{:?}", snap.summary.errors);
        (id, snap)
    };
    let (_, serial) = run(&mut repo, 1, true, atrest_backup::Parent::None);
    let (id, ahead) = run(&mut repo, 2, false, atrest_backup::Parent::None);
    let (_, with_parent) = run(&mut repo, 3, false, atrest_backup::Parent::Latest);
    assert_eq!(serial.tree, ahead.tree, "same root tree with read-ahead");
    assert_eq!(
        serial.tree, with_parent.tree,
        "same root tree from the parent"
    );
    assert_eq!(ahead.summary.unchanged_files, 0);
    assert_eq!(
        with_parent.summary.unchanged_files,
        with_parent.summary.files - 1,
        "every file but the second name of the hard link came from the parent"
    );

    let target = dir.path().join("restore");
    let report = repo.restore(&id, &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_same_tree(&src, &restored_root(&target, &src));
}

/// Files of a [`back_up_in_runs`] source, relative to it: every `f` file
/// and every `shared.bin`.
fn spread_files(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(src.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let name = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(name);
            } else {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn restore_ls_and_parent_trees_cost_requests_per_pack_not_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    let spread = back_up_in_runs(&mut repo, &src, 5, 20, 20);
    drop(repo);
    // One data pack and one tree pack per run (trees have packs of their
    // own): the 2,005 files' blobs are in five data packs.
    let packs = packs(&LocalBackend::new(&root));
    assert!((5..=10).contains(&packs), "{packs} packs");

    // Read as S3 is read, counting the ranged reads (one request each on
    // S3). Before pack-wise reads: one per file and one per directory.
    let counting = Counting::new(LocalBackend::new(&root), ReadProfile::REMOTE);
    let ranged = std::sync::Arc::clone(&counting.ranged);
    let mut repo = Repository::open(counting, &key).unwrap();
    ranged.store(0, Ordering::Relaxed);
    let target = dir.path().join("restore");
    let report = repo.restore(&spread.snapshot, &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.files, spread.files as u64);
    assert_same_tree(&src, &restored_root(&target, &src));
    let reads = ranged.swap(0, Ordering::Relaxed);
    assert!(
        reads <= 3 * packs,
        "restore: {reads} reads for {} files and {} directories in {packs} packs",
        spread.files,
        spread.dirs
    );

    // `ls` reads the trees pack-wise too.
    assert_eq!(
        repo.list(&spread.snapshot).unwrap().len(),
        spread.files + spread.dirs
    );
    let reads = ranged.swap(0, Ordering::Relaxed);
    assert!(
        reads <= 2 * packs && reads * 4 < spread.dirs,
        "ls: {reads} reads"
    );

    // A run with a parent: the parent's trees, pack-wise; one changed file.
    fs::write(src.join("r0/d0/f0"), b"changed").unwrap();
    let meta = SnapshotMeta {
        time_ms: 100,
        hostname: "spread".into(),
        tags: vec![],
    };
    let (_, snap) = repo.backup(std::slice::from_ref(&src), &meta).unwrap();
    assert_eq!(snap.parent.as_deref(), Some(spread.snapshot.as_str()));
    assert_eq!(snap.summary.unchanged_files, spread.files as u64 - 1);
    let reads = ranged.swap(0, Ordering::Relaxed);
    assert!(
        reads <= 2 * packs && reads * 4 < spread.dirs,
        "run with a parent: {reads} reads for {} directories",
        spread.dirs
    );

    // Read as a local directory is, the same bytes come back.
    let repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    let target = dir.path().join("restore-local");
    let report = repo.restore(&spread.snapshot, &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let out = restored_root(&target, &src);
    for rel in spread_files(&src) {
        let want = if rel == Path::new("r0/d0/f0") {
            pseudo(500, 0)
        } else {
            fs::read(src.join(&rel)).unwrap()
        };
        assert!(fs::read(out.join(&rel)).unwrap() == want, "{rel:?}");
    }
}

#[test]
fn a_damaged_blob_read_in_a_batch_leaves_out_only_the_files_that_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    let spread = back_up_in_runs(&mut repo, &src, 3, 4, 25);
    // The blob that every `shared.bin` starts with, damaged in its pack;
    // its neighbours in the pack are read in the same ranged read.
    damage_shared_blob(&repo, &spread.snapshot, |pack, bytes| {
        fs::write(root.join(pack), bytes).unwrap()
    });
    drop(repo);

    for profile in [ReadProfile::REMOTE, ReadProfile::LOCAL] {
        let counting = Counting::new(LocalBackend::new(&root), profile);
        let repo = Repository::open(counting, &key).unwrap();
        let target = dir
            .path()
            .join(format!("restore-{}", profile.requests_in_flight));
        let report = repo.restore(&spread.snapshot, &target).unwrap();
        let out = restored_root(&target, &src);
        let mut failed = report.failed.clone();
        failed.sort();
        assert_eq!(failed.len(), 3, "{failed:?}");
        for (run, f) in failed.iter().enumerate() {
            let name = out.join(format!("r{run}/shared.bin"));
            assert!(
                f.starts_with(&format!("{}: ", name.display())) && f.contains("damaged"),
                "{f}"
            );
            assert!(!name.exists(), "a damaged file must not be written");
        }
        assert_eq!(report.files, spread.files as u64 - 3);
        for rel in spread_files(&src) {
            if rel.ends_with("shared.bin") {
                continue;
            }
            assert!(
                fs::read(out.join(&rel)).unwrap() == fs::read(src.join(&rel)).unwrap(),
                "{rel:?}"
            );
        }
        assert_no_temporary_files(&target);
    }
}

/// Five data packs of which prune keeps about half, read as S3 is: a few
/// requests in all, where it made one per blob kept (over a thousand).
#[test]
fn prune_copies_the_blobs_it_keeps_in_requests_per_pack_not_per_blob() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let store = || LocalBackend::new(&root);
    prune_costs_requests_per_pack(store, SIZES, dir.path(), (5, 20, 20));
}

/// Every file of a local repository but its locks, with its bytes.
fn repository_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.starts_with(root.join("locks")) {
                let bytes = fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn prune_stops_before_deleting_anything_when_a_blob_it_keeps_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    back_up_in_runs(&mut repo, &src, 3, 4, 25);
    let kept = thin_out(&mut repo, &src);
    // The blob every `shared.bin` starts with is in the first run's data
    // pack, which prune rewrites (its odd files are gone).
    let shared = shared_blob(&repo, &kept);
    damage_shared_blob(&repo, &kept, |pack, bytes| {
        fs::write(root.join(pack), bytes).unwrap()
    });
    drop(repo);
    let before = repository_files(&root);

    for profile in [ReadProfile::REMOTE, ReadProfile::LOCAL] {
        let counting = Counting::new(LocalBackend::new(&root), profile);
        let mut repo = Repository::open(counting, &key).unwrap();
        match repo.prune() {
            Err(e @ BackupError::PruneStopped { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&shared)
                        && text.contains("damaged")
                        && text.contains("before deleting anything"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Nothing deleted, nothing left behind: the packs the copy had
        // written are gone again.
        assert!(repository_files(&root) == before, "the repository changed");
    }

    // The forgotten snapshots' data is all still there; only the damaged
    // blob is reported, and the kept snapshot restores all but the files
    // that use it.
    let repo = Repository::open(LocalBackend::new(&root), &key).unwrap();
    assert!(repo.check(false).unwrap().problems.is_empty());
    let problems = repo.check(true).unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("damaged"), "{problems:?}");
    let target = dir.path().join("restore");
    let report = repo.restore(&kept, &target).unwrap();
    assert_eq!(report.failed.len(), 3, "{:?}", report.failed);
    assert!(report.failed.iter().all(|f| f.contains("shared.bin: ")));
    let out = restored_root(&target, &src);
    for rel in spread_files(&src) {
        if !rel.ends_with("shared.bin") {
            assert!(
                fs::read(out.join(&rel)).unwrap() == fs::read(src.join(&rel)).unwrap(),
                "{rel:?}"
            );
        }
    }
}

#[test]
fn mount_reads_a_file_and_lists_directories_in_requests_per_pack_not_per_blob() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = pseudo(24 << 20, 77);
    fs::write(src.join("big.bin"), &big).unwrap();
    for d in 0..30 {
        let sub = src.join(format!("tree/d{d}"));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("f"), pseudo(100 + d, d as u64)).unwrap();
    }
    let key = SecretKey::random();
    let root = dir.path().join("repo");
    let mut repo = Repository::init(LocalBackend::new(&root), &key, SIZES).unwrap();
    // Two packers: the file's blobs alternate between two packs.
    let options = atrest_backup::BackupOptions {
        threads: 2,
        ..Default::default()
    };
    repo.backup_with(std::slice::from_ref(&src), &meta(1), &options)
        .unwrap();
    let blobs = repo
        .list("latest")
        .unwrap()
        .into_iter()
        .find(|n| n.path.ends_with(b"/big.bin"))
        .unwrap()
        .node
        .content
        .len();
    assert!(blobs > 200, "{blobs} blobs");
    drop(repo);
    let packs = packs(&LocalBackend::new(&root));

    let counting = Counting::new(LocalBackend::new(&root), ReadProfile::REMOTE);
    let ranged = std::sync::Arc::clone(&counting.ranged);
    let repo = Repository::open(counting, &key).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("atrest-backup-test".into()),
    ];
    let session =
        fuser::spawn_mount(atrest_backup::SnapshotFs::new(repo).unwrap(), &mnt, &config).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let base = mnt.join("snapshots/latest").join(src.file_name().unwrap());
        ranged.store(0, Ordering::Relaxed);
        // Before: one request per blob (and one per directory).
        assert!(fs::read(base.join("big.bin")).unwrap() == big);
        let reads = ranged.swap(0, Ordering::Relaxed);
        assert!(
            reads <= 4 * packs + 8 && reads * 10 < blobs,
            "read: {reads} requests for {blobs} blobs in {packs} packs"
        );
        // Thirty sibling directories: their trees are read together.
        let mut files = Vec::new();
        for d in fs::read_dir(base.join("tree")).unwrap() {
            for f in fs::read_dir(d.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        let reads = ranged.swap(0, Ordering::Relaxed);
        assert!(reads <= 8, "listing: {reads} requests for 31 directories");
        assert_eq!(files.len(), 30);
        for f in files {
            let d: usize = f.parent().unwrap().file_name().unwrap().to_str().unwrap()[1..]
                .parse()
                .unwrap();
            assert_eq!(fs::read(&f).unwrap(), pseudo(100 + d, d as u64));
        }
    }));
    session.umount_and_join().unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
