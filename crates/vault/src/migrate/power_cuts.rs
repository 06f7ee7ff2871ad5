//! Power loss during `atrest migrate` (docs/plans/format-2.md, stage 6):
//! the migration runs with the format 2 store on stage 1's simulated disk
//! ([`SimDisk`]), which loses what was not synced when the power goes.
//!
//! What the simulated cuts cover: every write, sync, truncate and removal
//! of the store's files (`atrest.meta`, `atrest.log/`, `objects/`), the
//! power going after any one of them, and the crash keeping any mix of
//! the unsynced pages, torn at sectors, and of the unsynced directory
//! entries. The format 1 tree, the config and `atrest.migrate/` stay on
//! the real vault directory: their changes happen in program order and
//! are kept (a removal the crash would undo only gives back a source, a
//! case the resumed run handles as "not removed yet"), and none happens
//! after the cut, since the run stops at the first failing store call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::sim::{Rng, SimDisk};
use atrest_meta::{Backing, MemBacking, Store};

use atrest_core::{Argon2Params, SecretKey};

use super::tests::{Format1, names_in};
use super::*;
use crate::{ContentFile2, Contents2, LockedVault, Unlocker};

/// One name of the original tree: its plaintext path, its format 1
/// backing path, and for a regular file its contents.
struct Original {
    plain: String,
    backing: PathBuf,
    contents: Option<Vec<u8>>,
}

/// A format 1 vault with every kind the other migrate tests make: nested
/// directories (one with a long name), files with contents, holes, none,
/// a hard link across directories, short and long symlinks, a FIFO and a
/// socket, xattrs on a file, a directory and the root; enough objects
/// for several batches of three.
fn every_kind(v: &Format1) -> Vec<Original> {
    let mut originals = Vec::new();
    let mut note = |plain: &str, backing: &Path, contents: Option<Vec<u8>>| {
        originals.push(Original {
            plain: plain.to_owned(),
            backing: backing.strip_prefix(&v.root).unwrap().to_path_buf(),
            contents,
        });
    };
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let a = v.mkdir(&v.root, "a");
    note("/a", &a, None);
    let long = "d".repeat(230);
    let deep = v.mkdir(&a, &long);
    note(&format!("/a/{long}"), &deep, None);
    let one = v.file(&v.root, "big", &[(0, &big[..])]);
    note("/big", &one, Some(big.clone()));
    let mut holes = vec![0u8; 5 * 4096 + 10];
    holes[..5].copy_from_slice(b"start");
    holes[5 * 4096 + 7..].copy_from_slice(b"end");
    let path = v.file(
        &a,
        "holes",
        &[(0, &b"start"[..]), (5 * 4096 + 7, &b"end"[..])],
    );
    note("/a/holes", &path, Some(holes));
    let path = v.file(&deep, "empty", &[]);
    note(&format!("/a/{long}/empty"), &path, Some(Vec::new()));
    let again = v.entry(&deep, "big-again");
    fs::hard_link(&one, &again).unwrap();
    note(&format!("/a/{long}/big-again"), &again, Some(big));
    let path = v.symlink(&a, "short", "../big");
    note("/a/short", &path, None);
    let path = v.symlink(&v.root, "long", &"t/".repeat(1800));
    note("/long", &path, None);
    let fifo = v.entry(&a, "fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    note("/a/fifo", &fifo, None);
    let socket = v.entry(&v.root, "sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    note("/sock", &socket, None);
    let b = v.mkdir(&v.root, "b");
    note("/b", &b, None);
    for i in 0..8u8 {
        let data = vec![i + 1; 4096 * usize::from(i % 3) + usize::from(i) * 100];
        let path = v.file(&b, &format!("f{i}"), &[(0, &data[..])]);
        note(&format!("/b/f{i}"), &path, Some(data));
    }
    v.xattr(
        &v.root.join(&originals[2].backing),
        "user.file",
        b"on a file",
    );
    v.xattr(&b, "user.dir", b"on a directory");
    v.xattr(&v.root, "user.root", b"on the root");
    originals
}

/// What a plaintext listing shows of a format 2 tree: per path its kind,
/// mode, owner, mtime, size, link count, device, contents or target, and
/// xattrs (atimes left out: reading a format 1 file again may change the
/// atime a resumed run sees).
fn manifest(contents: &mut Contents2) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(contents, ROOT_ID, "", &mut out);
    out
}

fn walk(contents: &mut Contents2, id: u64, path: &str, out: &mut BTreeMap<String, String>) {
    let head = contents.store.getattr(id).unwrap();
    let data = match head.kind {
        ObjectKind::Regular => {
            let mut file = ContentFile2::new(&mut contents.store, &contents.content, id);
            let len = file.len().unwrap();
            atrest_core::sha256(&file.read_at(0, len as usize).unwrap()).to_vec()
        }
        ObjectKind::Symlink => atrest_core::sha256(&contents.store.readlink(id).unwrap()).to_vec(),
        _ => Vec::new(),
    };
    let data: String = data[..data.len().min(8)]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut xattrs = Vec::new();
    for name in contents.store.list_xattrs(id).unwrap() {
        let value = contents.store.get_xattr(id, &name).unwrap();
        xattrs.push((
            String::from_utf8_lossy(&name).into_owned(),
            String::from_utf8_lossy(&value).into_owned(),
        ));
    }
    let size = if head.kind == ObjectKind::Directory {
        0
    } else {
        head.size
    };
    out.insert(
        if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        format!(
            "{:?} {:o} {}:{} {:?} size {size} nlink {} rdev {} {data} {xattrs:?}",
            head.kind, head.mode, head.uid, head.gid, head.mtime, head.nlink, head.rdev
        ),
    );
    if head.kind == ObjectKind::Directory {
        for entry in contents.store.readdir(id, 0, usize::MAX).unwrap() {
            let name = String::from_utf8(entry.name).unwrap();
            walk(contents, entry.id, &format!("{path}/{name}"), out);
        }
    }
}

/// The manifests are equal; if not, the paths that differ are named.
fn assert_same(got: &BTreeMap<String, String>, expected: &BTreeMap<String, String>, at: &str) {
    let differ: Vec<String> = expected
        .keys()
        .chain(got.keys())
        .filter(|path| got.get(*path) != expected.get(*path))
        .map(|path| {
            format!(
                "{path}: {:?} instead of {:?}",
                got.get(path),
                expected.get(path)
            )
        })
        .collect();
    assert!(differ.is_empty(), "{at}: {differ:#?}");
}

/// The format 2 object at plaintext `path`, if every name on the way
/// exists.
fn find(store: &mut Store, path: &str) -> Option<u64> {
    let mut id = ROOT_ID;
    for name in path.split('/').filter(|c| !c.is_empty()) {
        id = store.lookup_entry(id, name.as_bytes()).unwrap()?.id;
    }
    Some(id)
}

/// A copy of the template vault (`cp -a`: hard links, special files,
/// times and xattrs kept), with the simulated disk its store goes on.
fn copy_vault(template: &Format1, to: &Path) -> PathBuf {
    let status = Command::new("cp")
        .arg("-a")
        .arg(&template.root)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    to.to_path_buf()
}

/// Unlocks the vault at `root` with the key file slot (no Argon2: the
/// test unlocks a few hundred times).
fn unlock(root: &Path, key: &SecretKey) -> Vault {
    LockedVault::open(root)
        .unwrap()
        .unlock(&Unlocker::KeyFile(key.clone()))
        .unwrap()
}

fn run(root: &Path, key: &SecretKey, disk: &Arc<SimDisk>) -> Result<MigrateReport, MigrateError> {
    let mut vault = unlock(root, key);
    let lock = MountLock::acquire(root, "test").unwrap();
    let backing: Arc<dyn Backing> = disk.clone();
    let options = MigrateOptions {
        batch_objects: 3,
        ..Default::default()
    };
    migrate_on(
        &mut vault,
        &lock,
        &options,
        &MigrateProgress::default(),
        backing,
    )
}

/// A run with the power cut after `cut` more store calls: whether the
/// power went before the run ended. A run that fails for any other
/// reason fails the test.
fn run_until_cut(root: &Path, key: &SecretKey, disk: &Arc<SimDisk>, cut: u64, at: &str) -> bool {
    let before = disk.calls();
    disk.cut_power_after(cut);
    let result = run(root, key, disk);
    let cut_off = disk.calls() - before > cut;
    match result {
        Ok(_) => assert!(!cut_off, "{at}: finished without power"),
        Err(e) => assert!(cut_off, "{at}: stopped before the power went: {e}"),
    }
    cut_off
}

/// The store on a copy of what the disk holds after the crash, recovered
/// as the next run would (on a copy, so that the next run recovers it
/// itself).
fn recovered(vault: &Vault, disk: &SimDisk) -> Contents2 {
    let copy = MemBacking::new();
    copy.restore(disk.contents());
    let (store, content) = open_store(vault, Arc::new(copy)).unwrap();
    Contents2 { store, content }
}

/// "Both copies never missing" (plans/format-2.md stage 6), after a
/// crash: every name of the original is still its format 1 source (a
/// backing entry is removed whole or not at all) or resolves in the
/// recovered format 2 tree, and a regular file whose source is gone
/// reads there as the original did. `MIGRATE` records are not the
/// witness here: checkpoints retire them (§16.19 "What this build does"),
/// and the recovered tree is what they would only describe.
fn assert_never_both_missing(
    root: &Path,
    key: &SecretKey,
    disk: &SimDisk,
    originals: &[Original],
    at: &str,
) {
    let locked = LockedVault::open(root).unwrap();
    if locked.config().format == VERSION {
        for o in originals {
            assert!(
                fs::symlink_metadata(root.join(&o.backing)).is_ok(),
                "{at}: {} lost before the first commit point",
                o.plain
            );
        }
        return;
    }
    let vault = locked.unlock(&Unlocker::KeyFile(key.clone())).unwrap();
    let mut contents = recovered(&vault, disk);
    for o in originals {
        if fs::symlink_metadata(root.join(&o.backing)).is_ok() {
            continue;
        }
        let id = find(&mut contents.store, &o.plain).unwrap_or_else(|| {
            panic!("{at}: {} is in neither tree", o.plain);
        });
        if let Some(expected) = &o.contents {
            let mut file = ContentFile2::new(&mut contents.store, &contents.content, id);
            let len = file.len().unwrap();
            assert!(
                file.read_at(0, len as usize).unwrap() == *expected,
                "{at}: {} has lost its format 1 source but is not whole in format 2 \
                 ({len} bytes there, {} in the original)",
                o.plain,
                expected.len()
            );
        }
    }
}

/// Writes the simulated disk's files into the vault directory, so that
/// `fsck` and the format 2 open read the store where they always do.
fn land(root: &Path, disk: &SimDisk) {
    for (name, bytes) in disk.contents() {
        let path = root.join(&name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
    }
}

/// The format 1 tree is gone: the vault directory holds the config, the
/// lock and the (empty) data file directories; the store is on the disk.
fn assert_no_format_1_left(root: &Path) {
    assert_eq!(
        names_in(root),
        ["atrest.conf", "atrest.conf.bak", "atrest.lock", "objects"]
    );
    for sub in fs::read_dir(root.join(OBJECTS_DIR)).unwrap() {
        let sub = sub.unwrap().path();
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 0, "{}", sub.display());
    }
}

/// Power cuts at many points of a migration, each time the disk keeping
/// a random part of what was not synced; after each, both copies of no
/// object are missing; a second cut lands in the resumed run; a third
/// run finishes. Then the plaintext manifest is the one an uninterrupted
/// migration gives (itself checked against the generated contents), no
/// format 1 file is left, and `fsck` finds nothing.
#[test]
fn power_cuts_during_a_migration_lose_nothing() {
    // On tmpfs where there is one: the real directory's syncs (the
    // format 1 side, which the simulator does not cover) are most of the
    // time otherwise.
    let shm = Path::new("/dev/shm");
    let work = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let mut template = Format1::new_in(&work.path().join("template"));
    let originals = every_kind(&template);
    let key = SecretKey::random();
    template
        .vault
        .add_slot(
            &Unlocker::KeyFile(key.clone()),
            "test",
            Argon2Params::INSECURE_FAST,
        )
        .unwrap();
    // The lock file exists before the copies, so that taking the lock does
    // not change the root directory's mtime, which the manifest holds.
    drop(MountLock::acquire(&template.root, "test").unwrap());

    let reference = copy_vault(&template, &work.path().join("reference"));
    let disk = Arc::new(SimDisk::new());
    run(&reference, &key, &disk).unwrap();
    let calls = disk.calls();
    let vault = unlock(&reference, &key);
    let mut contents = recovered(&vault, &disk);
    for o in &originals {
        let id = find(&mut contents.store, &o.plain)
            .unwrap_or_else(|| panic!("{} not migrated", o.plain));
        if let Some(expected) = &o.contents {
            let mut file = ContentFile2::new(&mut contents.store, &contents.content, id);
            let len = file.len().unwrap();
            assert_eq!(
                &file.read_at(0, len as usize).unwrap(),
                expected,
                "{}",
                o.plain
            );
        }
    }
    let expected = manifest(&mut contents);
    assert_eq!(
        expected.len(),
        originals.len() + 1,
        "the root and every name"
    );
    drop((contents, vault));

    // Cut points spread over the whole run (Store::format's calls before
    // the first commit point and every batch's included), each round
    // picking one at random in its share of the calls.
    let rounds = ROUNDS.min(calls - 1);
    let mut rng = Rng::new(0x6d69_6772_6174_6531);
    for round in 0..rounds {
        // Below `calls`: a cut after the last call is no cut.
        let share = (calls - 1) / rounds;
        let first = 1 + round * share + rng.below(share.max(1));
        let root = copy_vault(&template, &work.path().join(format!("v{round}")));
        let disk = Arc::new(SimDisk::new());
        let at = format!("round {round}, cut after call {first}");
        assert!(run_until_cut(&root, &key, &disk, first, &at), "{at}");
        disk.crash(&mut rng);
        assert_never_both_missing(&root, &key, &disk, &originals, &at);

        // A second cut in the resumed run, where it lands before its end.
        let second = 1 + rng.below(calls);
        let at = format!("{at}, then after {second} more");
        if run_until_cut(&root, &key, &disk, second, &at) {
            disk.crash(&mut rng);
            assert_never_both_missing(&root, &key, &disk, &originals, &at);
            run(&root, &key, &disk).unwrap_or_else(|e| panic!("{at}: {e}"));
        }

        let vault = unlock(&root, &key);
        assert_eq!(
            (vault.config().format, vault.config().migrating),
            (VERSION_2, false),
            "{at}"
        );
        let mut contents = recovered(&vault, &disk);
        assert_same(&manifest(&mut contents), &expected, &at);
        drop(contents);
        assert_no_format_1_left(&root);
        land(&root, &disk);
        let lock = MountLock::acquire(&root, "test").unwrap();
        let report = crate::fsck2::check(&vault, &lock, Vec::new());
        assert!(report.is_clean(), "{at}: {:?}", report.problems);
        drop((lock, vault));
        fs::remove_dir_all(&root).unwrap();
    }
}

/// Rounds of cuts (each a copy of the vault, two cuts and a finishing
/// run, about 0.1 s here).
const ROUNDS: u64 = 60;
