//! What the integration tests of atrest-backup share: test data, a tree
//! comparison, a backend that counts its reads, and a source spread over
//! many packs.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use atrest_backup::{
    Backend, BackupOptions, ChunkSizes, ReadProfile, Repository, Result, SnapshotMeta,
};
use atrest_core::SecretKey;

/// Deterministic bytes (xorshift) for a seed.
pub fn pseudo(len: usize, seed: u64) -> Vec<u8> {
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

/// Every entry under `a` equals the one under `b`: kind, bytes, mode,
/// owner, mtime (ns), symlink target.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        seen += 1;
        assert_eq!(ma.file_type(), mb.file_type(), "{rel:?}");
        assert_eq!(ma.mode(), mb.mode(), "mode of {rel:?}");
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {rel:?}"
        );
        if !ma.is_dir() || rel.as_os_str().is_empty() {
            // (directory mtimes are checked too, except the root's)
        }
        if !rel.as_os_str().is_empty() {
            assert_eq!(
                (ma.mtime(), ma.mtime_nsec()),
                (mb.mtime(), mb.mtime_nsec()),
                "mtime of {rel:?}"
            );
        }
        let xattrs = |p: &Path| -> Vec<(String, Vec<u8>)> {
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap_or(0);
            names[..n]
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let name = String::from_utf8_lossy(n).into_owned();
                    let mut v = vec![0u8; 4096];
                    let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
                    (name, v[..len].to_vec())
                })
                .collect()
        };
        assert_eq!(xattrs(&pa), xattrs(&pb), "xattrs of {rel:?}");
        if ma.is_file() {
            assert_eq!(
                fs::read(&pa).unwrap(),
                fs::read(&pb).unwrap(),
                "content of {rel:?}"
            );
            assert_eq!(ma.nlink(), mb.nlink(), "links of {rel:?}");
        } else if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else if ma.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&pa)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let mut other: Vec<_> = fs::read_dir(&pb)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            other.sort();
            assert_eq!(names, other, "entries of {rel:?}");
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        }
    }
    assert!(seen > 10);
}

/// A backend that counts its ranged reads (each one request on S3) and
/// reads as `profile` says: with [`ReadProfile::REMOTE`], a local
/// directory is read exactly as S3 is.
pub struct Counting<B> {
    pub inner: B,
    pub ranged: Arc<AtomicUsize>,
    /// Whole-object reads.
    pub gets: Arc<AtomicUsize>,
    pub profile: ReadProfile,
}

impl<B: Backend> Counting<B> {
    pub fn new(inner: B, profile: ReadProfile) -> Self {
        Self {
            inner,
            ranged: Arc::default(),
            gets: Arc::default(),
            profile,
        }
    }
}

impl<B: Backend> Backend for Counting<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.inner.put(name, data)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(name)
    }
    fn size(&self, name: &str) -> Result<u64> {
        self.inner.size(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.ranged.fetch_add(1, Ordering::Relaxed);
        self.inner.get_range(name, offset, len)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn exists(&self, name: &str) -> Result<bool> {
        self.inner.exists(name)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }
    fn destroy(&self, name: &str) -> Result<()> {
        self.inner.destroy(name)
    }
    fn read_profile(&self) -> ReadProfile {
        self.profile
    }
}

/// What [`back_up_in_runs`] made.
pub struct Spread {
    /// Regular files in the last snapshot.
    pub files: usize,
    /// Directories in it.
    pub dirs: usize,
    /// The last snapshot's id.
    pub snapshot: String,
}

/// Backs up `src` `runs` times with one packer, adding `dirs` new
/// directories of `files` small files each before every run, so the last
/// snapshot's files are spread over at least `runs` data packs (each run
/// closes its own). Every run also adds `rN/shared.bin`, the same 40 KB in
/// each: one blob that several files use.
pub fn back_up_in_runs<B: Backend>(
    repo: &mut Repository<B>,
    src: &Path,
    runs: usize,
    dirs: usize,
    files: usize,
) -> Spread {
    let mut snapshot = String::new();
    for run in 0..runs {
        let top = src.join(format!("r{run}"));
        for d in 0..dirs {
            let dir = top.join(format!("d{d}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..files {
                let seed = ((run * 1000 + d) * 1000 + f) as u64;
                fs::write(
                    dir.join(format!("f{f}")),
                    pseudo(500 + (f * 37) % 3000, seed),
                )
                .unwrap();
            }
        }
        fs::write(top.join("shared.bin"), pseudo(40_000, 4242)).unwrap();
        let (id, snap) = back_up_spread(repo, src, 1 + run as u64);
        assert!(snap.summary.errors.is_empty(), "{:?}", snap.summary.errors);
        snapshot = id;
    }
    Spread {
        files: runs * (dirs * files + 1),
        dirs: runs * (dirs + 1) + 1,
        snapshot,
    }
}

/// One run of [`back_up_in_runs`] (one packer, so it closes packs of its
/// own) at `time_ms`.
fn back_up_spread<B: Backend>(
    repo: &mut Repository<B>,
    src: &Path,
    time_ms: u64,
) -> (String, atrest_backup::Snapshot) {
    let meta = SnapshotMeta {
        time_ms,
        hostname: "spread".into(),
        tags: vec![],
    };
    let options = BackupOptions {
        threads: 1,
        ..BackupOptions::default()
    };
    repo.backup_with(&[src.to_path_buf()], &meta, &options)
        .unwrap()
}

/// Leaves every data pack of a [`back_up_in_runs`] repository partly
/// used: removes the odd-numbered files of every directory of `src`, backs
/// it up again and forgets every other snapshot. Returns the new
/// snapshot's id; a `prune` then rewrites each data pack with its even
/// files (and `shared.bin`), and deletes the old tree packs.
pub fn thin_out<B: Backend>(repo: &mut Repository<B>, src: &Path) -> String {
    let mut removed = 0;
    for run in fs::read_dir(src).unwrap() {
        for dir in fs::read_dir(run.unwrap().path()).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for file in fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                if name[1..].parse::<usize>().unwrap() % 2 == 1 {
                    fs::remove_file(file).unwrap();
                    removed += 1;
                }
            }
        }
    }
    assert!(removed > 0);
    let (kept, _) = back_up_spread(repo, src, 1000);
    let older: Vec<String> = repo
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| *id != kept)
        .collect();
    repo.forget(&older).unwrap();
    kept
}

/// Prunes a [`thin_out`] repository of `runs` runs (`dirs` directories of
/// `files` files each) on the store `store` gives (a new handle each
/// call), read as S3 is through [`Counting`], and checks that copying the
/// blobs kept out of the `runs` partly used data packs costs requests per
/// pack, not one per blob kept as it did; then that the repository checks
/// whole and the kept snapshot restores as `dir/src` is.
pub fn prune_costs_requests_per_pack<B: Backend>(
    store: impl Fn() -> B,
    sizes: ChunkSizes,
    dir: &Path,
    (runs, dirs, files): (usize, usize, usize),
) {
    let src = dir.join("src");
    let key = SecretKey::random();
    let mut repo = Repository::init(store(), &key, sizes).unwrap();
    back_up_in_runs(&mut repo, &src, runs, dirs, files);
    let kept = thin_out(&mut repo, &src);
    drop(repo);
    let before = packs(&store());

    let counting = Counting::new(store(), ReadProfile::REMOTE);
    let ranged = Arc::clone(&counting.ranged);
    let mut repo = Repository::open(counting, &key).unwrap();
    let gets = Arc::clone(&repo.backend().gets);
    ranged.store(0, Ordering::Relaxed);
    gets.store(0, Ordering::Relaxed);
    let report = repo.prune().unwrap();
    let reads = ranged.load(Ordering::Relaxed);
    // Whole-object reads: the index and snapshot files, never a pack (it
    // read every pack it deleted to count the bytes freed).
    let whole = gets.load(Ordering::Relaxed);
    assert!(
        whole < report.packs_deleted,
        "{whole} whole reads: {report:?}"
    );
    assert!(report.bytes_freed > 0, "{report:?}");
    // The data packs lose their odd files; the old tree packs go whole.
    assert_eq!(report.packs_repacked, runs, "{report:?}");
    assert!(report.packs_deleted >= runs, "{report:?}");
    let even = runs * dirs * files.div_ceil(2);
    assert!(report.blobs_kept > even, "{report:?}");
    assert!(
        reads <= 3 * before && reads * 10 < even,
        "prune: {reads} requests for {} blobs kept in {before} packs",
        report.blobs_kept
    );
    assert!(packs(&store()) < before);

    let repo = Repository::open(store(), &key).unwrap();
    let check = repo.check(true).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    let target = dir.join("restore");
    let report = repo.restore(&kept, &target).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_same_tree(&src, &restored_root(&target, &src));
}

/// The blob every `shared.bin` of a [`back_up_in_runs`] source starts
/// with (hex id).
pub fn shared_blob<B: Backend>(repo: &Repository<B>, snapshot: &str) -> String {
    repo.list(snapshot)
        .unwrap()
        .into_iter()
        .find(|n| n.path.ends_with(b"r0/shared.bin"))
        .unwrap()
        .node
        .content[0]
        .clone()
}

/// The number of packs in a repository.
pub fn packs<B: Backend>(backend: &B) -> usize {
    backend.list("data").unwrap().len()
}

/// Where restore puts `src` under `target`.
pub fn restored_root(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// No temporary file of a restore is left anywhere under `dir`.
pub fn assert_no_temporary_files(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".atrest"), "{name} left under {dir:?}");
        if entry.file_type().unwrap().is_dir() {
            assert_no_temporary_files(&entry.path());
        }
    }
}

/// Flips a byte of the blob every `shared.bin` of a [`back_up_in_runs`]
/// source starts with, in its pack; `overwrite(pack, bytes)` puts the
/// damaged pack back in the store.
pub fn damage_shared_blob<B: Backend>(
    repo: &Repository<B>,
    snapshot: &str,
    overwrite: impl Fn(&str, &[u8]),
) {
    let (pack, at) = repo.locate(&shared_blob(repo, snapshot)).unwrap().unwrap();
    let mut bytes = repo.backend().get(&pack).unwrap();
    bytes[at.offset as usize + 20] ^= 4;
    overwrite(&pack, &bytes);
}
