//! Power cuts anywhere (docs/plans/format-2.md, stage 1 `crash.rs`): a
//! random workload of namespace operations, syncs and checkpoints on the
//! crash simulator, the power cut after a random number of disk calls
//! (inside a group commit, a checkpoint, a segment's creation, anywhere),
//! then a crash that keeps a random part of what was not synced. The
//! store must open, and show the state after some prefix of the
//! operations that contains every operation a completed sync (or
//! checkpoint) covered; and it must go on from there.

use atrest_meta::NoContents;
use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::sim::{Rng, SimDisk};
use atrest_meta::{FsError, RenameMode, SetAttr, Store, XattrMode};

use crate::common::{CONFIG, at, keys};
use crate::tamper::{Listing, listing, object};

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// One random namespace operation: `Ok(true)` if it changed the tree,
/// `Ok(false)` if the file system refused it (no record), `Err` if the
/// disk failed (the power is off).
fn operate(store: &mut Store, rng: &mut Rng, dirs: &mut Vec<u64>, t: i64) -> Result<bool, FsError> {
    const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"long-name-of-a-file", b"d"];
    let name = NAMES[rng.below(NAMES.len() as u64) as usize];
    let other = NAMES[rng.below(NAMES.len() as u64) as usize];
    let dir = dirs[rng.below(dirs.len() as u64) as usize];
    let to = dirs[rng.below(dirs.len() as u64) as usize];
    let result = match rng.below(11) {
        0..=2 => {
            let kind = [
                ObjectKind::Regular,
                ObjectKind::Directory,
                ObjectKind::Symlink,
                ObjectKind::Fifo,
            ][rng.below(4) as usize];
            let target: Vec<u8> = if rng.below(3) == 0 {
                vec![b'z'; 200]
            } else {
                b"t".to_vec()
            };
            store
                .create(dir, name, object(kind, &target), at(t))
                .map(|h| {
                    if h.kind == ObjectKind::Directory {
                        dirs.push(h.id);
                    }
                })
        }
        3 => store.unlink(dir, name, at(t)).map(drop),
        4 => store.rmdir(dir, name, at(t)).map(drop),
        5 | 6 => {
            let mode = [
                RenameMode::Replace,
                RenameMode::NoReplace,
                RenameMode::Exchange,
            ][rng.below(3) as usize];
            store.rename(dir, name, to, other, mode, at(t))
        }
        7 => match store.lookup(dir, name) {
            Ok(head) if head.kind != ObjectKind::Directory => {
                store.link(head.id, to, other, at(t)).map(drop)
            }
            Ok(_) => Err(FsError::IsDir),
            Err(e) => Err(e),
        },
        8 => match store.lookup(dir, name) {
            // Small values inline, large ones in blobs; names shared so
            // that replacements and removals happen.
            Ok(head) => {
                let key = format!("user.{}", rng.below(4));
                let len = [0, 30, 1500, 20_000][rng.below(4) as usize];
                let mode =
                    [XattrMode::Any, XattrMode::Create, XattrMode::Replace][rng.below(3) as usize];
                let value = vec![rng.below(256) as u8; len];
                store.set_xattr(head.id, key.as_bytes(), &value, mode, at(t))
            }
            Err(e) => Err(e),
        },
        9 => match store.lookup(dir, name) {
            Ok(head) => {
                let key = format!("user.{}", rng.below(4));
                store.remove_xattr(head.id, key.as_bytes(), at(t))
            }
            Err(e) => Err(e),
        },
        _ => match store.lookup(dir, name) {
            Ok(head) => {
                let change = SetAttr {
                    mode: Some(rng.below(0o7777) as u16),
                    ..SetAttr::default()
                };
                store.setattr(head.id, &change, at(t)).map(drop)
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => Ok(true),
        Err(FsError::Meta(e)) => Err(FsError::Meta(e)),
        Err(_) => Ok(false),
    }
}

/// The outcome of one workload: the tree after each operation that
/// changed it (`states[0]` is the tree before the first), and how many of
/// them a completed sync or checkpoint covered.
struct Workload {
    states: Vec<Listing>,
    acknowledged: usize,
}

/// Runs `ops` random steps on `store`; stops at the first disk failure.
fn run(store: &mut Store, rng: &mut Rng, ops: u32) -> Workload {
    let mut dirs = vec![ROOT_ID];
    let mut states = vec![listing(store).unwrap()];
    let mut acknowledged = 0;
    for step in 0..ops {
        let t = 10 + i64::from(step);
        match rng.below(12) {
            0 => match store.sync() {
                Ok(()) => acknowledged = states.len() - 1,
                Err(_) => break,
            },
            1 => match store.checkpoint(at(t)) {
                Ok(_) => acknowledged = states.len() - 1,
                Err(_) => break,
            },
            _ => match operate(store, rng, &mut dirs, t) {
                Ok(true) => states.push(listing(store).unwrap()),
                Ok(false) => {}
                Err(_) => break,
            },
        }
    }
    Workload {
        states,
        acknowledged,
    }
}

fn open(disk: &Arc<SimDisk>) -> Result<Store, atrest_meta::MetaError> {
    Store::open(keys(GCM), disk.clone(), CONFIG, &NoContents)
}

/// Crashes `disk`, sometimes a second time in the middle of the recovery
/// itself, opens it and checks the tree against `w`; then the store must
/// take more changes, a sync and a checkpoint, and open again.
fn crash_and_check(disk: &Arc<SimDisk>, w: &Workload, rng: &mut Rng, trial: String) {
    disk.crash(rng);
    if rng.below(4) == 0 {
        disk.cut_power_after(rng.below(12));
        drop(open(disk));
        disk.crash(rng);
    }
    let mut store = open(disk)
        .unwrap_or_else(|e| panic!("{trial}: the store does not open after the crash: {e}"));
    let found = listing(&mut store).unwrap();
    let position = w.states[w.acknowledged..].iter().position(|s| *s == found);
    assert!(
        position.is_some(),
        "{trial}: after the crash the tree is not the state after any prefix of the operations \
         holding the {} acknowledged ones ({} states)",
        w.acknowledged,
        w.states.len()
    );
    let more = run(&mut store, rng, 10);
    store.sync().unwrap();
    let expected = more.states.last().unwrap().clone();
    drop(store);
    disk.crash(rng);
    let mut again = open(disk).unwrap_or_else(|e| panic!("{trial}: second open: {e}"));
    assert_eq!(
        listing(&mut again).unwrap(),
        expected,
        "{trial}: synced changes lost"
    );
}

#[test]
fn a_power_cut_anywhere_recovers_a_prefix_holding_every_synced_operation() {
    let mut rng = Rng::new(0x05ee_d10c);
    for trial in 0..300u32 {
        let disk = Arc::new(SimDisk::new());
        let mut store =
            Store::format(keys(GCM), disk.clone(), CONFIG, (0o700, 0, 0), at(1)).unwrap();
        // Some history first, so that recovery starts at a later
        // checkpoint with segments retired.
        if rng.below(2) == 0 {
            run(&mut store, &mut rng, 20);
            store.checkpoint(at(9)).unwrap();
        }
        disk.cut_power_after(rng.below(120));
        let w = run(&mut store, &mut rng, 60);
        drop(store);
        crash_and_check(&disk, &w, &mut rng, format!("trial {trial}"));
    }
}

/// One workload, the power cut after every possible number of disk
/// calls: at every sync, inside every group commit and checkpoint.
#[test]
fn a_power_cut_at_every_disk_call_of_one_workload() {
    const SEED: u64 = 0xc0ffee;
    let workload = |disk: &Arc<SimDisk>, cut: Option<u64>| {
        let mut store =
            Store::format(keys(GCM), disk.clone(), CONFIG, (0o700, 0, 0), at(1)).unwrap();
        let start = disk.calls();
        if let Some(cut) = cut {
            disk.cut_power_after(cut);
        }
        let w = run(&mut store, &mut Rng::new(SEED), 80);
        (w, disk.calls() - start)
    };
    let (full, calls) = workload(&Arc::new(SimDisk::new()), None);
    assert!(
        full.states.len() > 10 && calls > 40,
        "{} states, {calls} calls",
        full.states.len()
    );
    let mut rng = Rng::new(7);
    for cut in 0..=calls {
        for round in 0..3 {
            let disk = Arc::new(SimDisk::new());
            let (w, _) = workload(&disk, Some(cut));
            crash_and_check(
                &disk,
                &w,
                &mut rng,
                format!("cut after {cut} calls, round {round}"),
            );
        }
    }
}

/// §16.12, question (a): the power cut inside the flush of a group
/// commit, so that any subset of the group's sectors persists, later
/// records without earlier ones. The store always opens (never an
/// authentication alarm for records no sync acknowledged) and holds a
/// prefix of the group; all of it once the sync returned.
#[test]
fn a_group_commit_cut_in_its_flush_is_never_taken_for_tampering() {
    let mut rng = Rng::new(0x0a0a);
    for trial in 0..240u32 {
        let disk = Arc::new(SimDisk::new());
        let mut store =
            Store::format(keys(GCM), disk.clone(), CONFIG, (0o700, 0, 0), at(1)).unwrap();
        let mut states = vec![listing(&mut store).unwrap()];
        for i in 0..(4 + rng.below(24)) {
            let kind = if i % 5 == 4 {
                ObjectKind::Directory
            } else {
                ObjectKind::Regular
            };
            store
                .create(
                    ROOT_ID,
                    format!("file-{i}").as_bytes(),
                    object(kind, b""),
                    at(2),
                )
                .unwrap();
            states.push(listing(&mut store).unwrap());
        }
        // 0: the flush fails; 1: the flush completes, what follows it
        // fails; 2: the sync completes.
        disk.cut_power_after(u64::from(trial % 3));
        let acknowledged = if store.sync().is_ok() {
            states.len() - 1
        } else {
            0
        };
        drop(store);
        let w = Workload {
            states,
            acknowledged,
        };
        crash_and_check(&disk, &w, &mut rng, format!("group trial {trial}"));
    }
}
