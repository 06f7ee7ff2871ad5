//! File contents through the store (docs/format.md §16.9, §16.12
//! `WRITE`/`TRUNCATE`, §16.14, §16.16 step 3): random writes and
//! truncates against a plain model across checkpoints and reopening,
//! inline and tree maps; lost fresh blocks reverted to holes; journaled
//! payloads checked; fsync'ed data surviving power cuts.

use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{Content, MapEntry, ObjectKind, ROOT_ID};
use atrest_meta::sim::{Rng, SimDisk};
use atrest_meta::{
    Backing, FsError, Location, MemBacking, MetaError, NewObject, Store, data_file_name,
};
use proptest::prelude::*;

use crate::common::{CONFIG, TestContent, at, keys};

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;
const XCHACHA: ContentAlgorithm = ContentAlgorithm::XChaCha20Poly1305;

fn regular() -> NewObject {
    NewObject {
        kind: ObjectKind::Regular,
        mode: 0o600,
        uid: 0,
        gid: 0,
        rdev: 0,
        target: Vec::new(),
    }
}

fn format(backing: Arc<dyn Backing>, algorithm: ContentAlgorithm) -> Store {
    Store::format(keys(algorithm), backing, CONFIG, (0o755, 0, 0), at(1)).unwrap()
}

fn open(
    backing: Arc<dyn Backing>,
    algorithm: ContentAlgorithm,
    content: &TestContent,
) -> Result<Store, MetaError> {
    Store::open(keys(algorithm), backing, CONFIG, content)
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, usize, u8),
    Truncate(u64),
    SyncFile,
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..700_000, 1usize..9000, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        2 => (0u64..16_000).prop_map(|o| Op::Write(o, 100, 7)).prop_map(|w| w),
        2 => (0u64..700_000).prop_map(Op::Truncate),
        1 => (0u64..20_000).prop_map(Op::Truncate),
        1 => Just(Op::SyncFile),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

fn apply_model(model: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(off, len, byte) => {
            let end = *off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[*off as usize..end].fill(*byte);
        }
        Op::Truncate(n) => model.resize(*n as usize, 0),
        _ => {}
    }
}

fn check_form(store: &mut Store, id: u64, algorithm: ContentAlgorithm) {
    let record = store.record(id).unwrap();
    let inline = record.head.size.div_ceil(4096) <= atrest_meta::record::inline_blocks(algorithm);
    assert_eq!(record.head.inline, inline);
    assert_eq!(matches!(record.content, Content::InlineMap(_)), inline);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random writes (partial blocks, holes, files growing past the
    /// inline map into trees of two levels) and truncates up and down
    /// agree with a plain byte vector, after each checkpoint and reopen.
    #[test]
    fn file_contents_match_a_plain_model(
        ops in proptest::collection::vec(op(), 1..28),
        xchacha in any::<bool>(),
    ) {
        let algorithm = if xchacha { XCHACHA } else { GCM };
        let content = TestContent::new(algorithm);
        let backing = Arc::new(MemBacking::new());
        let mut store = format(backing.clone(), algorithm);
        let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
        let mut model = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let t = 3 + i as i64;
            match op {
                Op::Write(off, len, byte) => content.write(&mut store, id, *off, &vec![*byte; *len], t).unwrap(),
                Op::Truncate(n) => content.truncate(&mut store, id, *n, t).unwrap(),
                Op::SyncFile => store.sync_file(id).unwrap(),
                Op::Checkpoint => { store.checkpoint(at(t)).unwrap(); }
                Op::Reopen => {
                    drop(store);
                    store = open(backing.clone(), algorithm, &content).unwrap();
                }
            }
            apply_model(&mut model, op);
            prop_assert_eq!(store.getattr(id).unwrap().size, model.len() as u64);
            check_form(&mut store, id, algorithm);
        }
        prop_assert!(content.read(&mut store, id).unwrap() == model, "contents differ before reopen");
        drop(store);
        let mut store = open(backing.clone(), algorithm, &content).unwrap();
        prop_assert!(content.read(&mut store, id).unwrap() == model, "contents differ after reopen");
        store.checkpoint(at(100)).unwrap();
        drop(store);
        let mut store = open(backing.clone(), algorithm, &content).unwrap();
        prop_assert!(content.read(&mut store, id).unwrap() == model, "contents differ after checkpoint");
        // No data file is longer than its file's blocks after a checkpoint.
        let len = backing.len_of(&data_file_name(id)) as u64;
        prop_assert!(len <= model.len().div_ceil(4096) as u64 * 4096);
    }
}

#[test]
fn a_file_past_the_inline_map_gets_a_tree_and_back() {
    for (algorithm, inline) in [(GCM, 3u64), (XCHACHA, 2)] {
        let content = TestContent::new(algorithm);
        let backing = Arc::new(MemBacking::new());
        let mut store = format(backing.clone(), algorithm);
        let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
        content
            .write(&mut store, id, 0, &vec![1; inline as usize * 4096], 3)
            .unwrap();
        assert!(matches!(
            store.record(id).unwrap().content,
            Content::InlineMap(_)
        ));
        content
            .write(&mut store, id, inline * 4096, b"x", 4)
            .unwrap();
        store.checkpoint(at(5)).unwrap();
        let Content::Tree(root) = store.record(id).unwrap().content else {
            panic!("not a tree");
        };
        assert!(!root.reference.is_null());
        content
            .truncate(&mut store, id, inline * 4096 - 1, 6)
            .unwrap();
        store.checkpoint(at(7)).unwrap();
        assert!(matches!(
            store.record(id).unwrap().content,
            Content::InlineMap(_)
        ));
        let mut expected = vec![1; inline as usize * 4096 - 1];
        assert_eq!(content.read(&mut store, id).unwrap(), expected);
        content
            .truncate(&mut store, id, 3 * 1024 * 1024, 8)
            .unwrap();
        expected.resize(3 * 1024 * 1024, 0);
        store.checkpoint(at(9)).unwrap();
        drop(store);
        let mut store = open(backing.clone(), algorithm, &content).unwrap();
        assert_eq!(content.read(&mut store, id).unwrap(), expected);
        // A hole written in the middle of a big sparse file.
        content
            .write(&mut store, id, 2 * 1024 * 1024 + 5, b"middle", 10)
            .unwrap();
        expected[2 * 1024 * 1024 + 5..2 * 1024 * 1024 + 11].copy_from_slice(b"middle");
        store.checkpoint(at(11)).unwrap();
        let mut store = open(backing.clone(), algorithm, &content).unwrap();
        assert_eq!(content.read(&mut store, id).unwrap(), expected);
        // Unlinked, its data file goes with the checkpoint that follows.
        store.unlink(ROOT_ID, b"f", at(12)).unwrap();
        store.checkpoint(at(13)).unwrap();
        assert!(backing.len(&data_file_name(id)).unwrap().is_none());
    }
}

/// The first write of a hole is fresh (to the data file, no payload);
/// a rewrite of a block the checkpoint holds is journaled (payload in
/// the log, the data file untouched until the next checkpoint).
#[test]
fn fresh_blocks_go_to_the_data_file_and_journaled_ones_to_the_log() {
    let content = TestContent::new(GCM);
    let backing = Arc::new(MemBacking::new());
    let mut store = format(backing.clone(), GCM);
    let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
    content.write(&mut store, id, 0, &[1; 4096], 3).unwrap();
    let name = data_file_name(id);
    let first = backing.snapshot()[&name].clone();
    assert_eq!(first.len(), 4096);
    store.checkpoint(at(4)).unwrap();
    content.write(&mut store, id, 0, &[2; 4096], 5).unwrap();
    assert_eq!(
        backing.snapshot()[&name],
        first,
        "journaled: not in place yet"
    );
    assert_eq!(content.read(&mut store, id).unwrap(), vec![2; 4096]);
    store.checkpoint(at(6)).unwrap();
    assert_ne!(
        backing.snapshot()[&name],
        first,
        "written in place by the checkpoint"
    );
    assert_eq!(content.read(&mut store, id).unwrap(), vec![2; 4096]);
}

/// Journaled blocks are read back from their record in the log until
/// the checkpoint, not kept in memory: a change to the payload in the
/// live segment fails that block's authentication (and only its), and
/// the checkpoint copies the log's bytes in place, after which the
/// segment is gone and every block reads from the data file.
#[test]
fn journaled_blocks_are_read_back_from_the_log_until_the_checkpoint() {
    let content = TestContent::new(GCM);
    let backing = Arc::new(MemBacking::new());
    let mut store = format(backing.clone(), GCM);
    let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
    content.write(&mut store, id, 0, &[1; 6 * 4096], 3).unwrap();
    store.checkpoint(at(4)).unwrap();
    content
        .write(&mut store, id, 4096, &[2; 3 * 4096], 5)
        .unwrap();
    assert_eq!(store.journaled_bytes(), 3 * 4096);
    let mut expected = vec![1; 6 * 4096];
    expected[4096..4 * 4096].fill(2);
    assert_eq!(content.read(&mut store, id).unwrap(), expected);
    // The WRITE record is the last one: its payload, the three blocks,
    // ends the live segment.
    let segment = backing.list("atrest.log").unwrap().last().cloned().unwrap();
    let name = format!("atrest.log/{segment}");
    let flip = |f: &mut Vec<u8>| {
        let at = f.len() - 2 * 4096 + 7; // block 2 of the file
        f[at] ^= 1;
    };
    backing.with_file(&name, flip).unwrap();
    assert!(store.read_block(id, 1).is_ok());
    assert!(store.read_block(id, 3).is_ok());
    let err = content.read(&mut store, id).unwrap_err();
    assert!(err.contains("block 2 "), "{err}");
    backing.with_file(&name, flip).unwrap();
    store.checkpoint(at(6)).unwrap();
    assert_eq!(store.journaled_bytes(), 0);
    assert!(
        !backing.list("atrest.log").unwrap().contains(&segment),
        "retired by the checkpoint"
    );
    assert_eq!(content.read(&mut store, id).unwrap(), expected);
    let mut store = open(backing.clone(), GCM, &content).unwrap();
    assert_eq!(content.read(&mut store, id).unwrap(), expected);
}

/// Recovery step 3: a fresh block whose ciphertext did not reach the
/// disk (only the log was synced) reads as a hole, and the file is cut
/// back to its last sealed block, never below its settled size.
#[test]
fn a_lost_fresh_block_becomes_a_hole_and_the_size_is_cut_back() {
    let content = TestContent::new(GCM);
    let backing = Arc::new(MemBacking::new());
    let mut store = format(backing.clone(), GCM);
    let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
    content.write(&mut store, id, 0, &[1; 5000], 3).unwrap();
    store.sync_file(id).unwrap();
    content.write(&mut store, id, 5000, &[2; 9000], 4).unwrap();
    store.sync().unwrap(); // the log only: fsyncdir
    drop(store);
    // Blocks 2 and 3 never reached the disk; block 1 did.
    let name = data_file_name(id);
    backing.with_file(&name, |f| f[8192..].fill(0)).unwrap();
    let mut store = open(backing.clone(), GCM, &content).unwrap();
    let mut expected = vec![1; 5000];
    expected.resize(8192, 2);
    assert_eq!(content.read(&mut store, id).unwrap(), expected);
    assert_eq!(store.map_entry(id, 2).unwrap(), MapEntry::Hole);

    // A lost block in the middle stays a hole; the size stays.
    content.write(&mut store, id, 0, &[3; 3 * 4096], 5).unwrap();
    store.checkpoint(at(6)).unwrap();
    content
        .write(&mut store, id, 5 * 4096, &[4; 4096], 7)
        .unwrap();
    content
        .write(&mut store, id, 7 * 4096, &[5; 4096], 8)
        .unwrap();
    store.sync().unwrap();
    drop(store);
    backing
        .with_file(&name, |f| f[5 * 4096..6 * 4096].fill(0))
        .unwrap();
    let mut store = open(backing.clone(), GCM, &content).unwrap();
    let mut expected = vec![3; 3 * 4096];
    expected.resize(8 * 4096, 0);
    expected[7 * 4096..].fill(5);
    assert_eq!(content.read(&mut store, id).unwrap(), expected);
}

/// After `sync_file`, the same damage is no crash but tampering: the
/// block fails authentication on read, never reads as zeros.
#[test]
fn a_synced_block_changed_on_the_disk_is_an_authentication_error() {
    let content = TestContent::new(GCM);
    let backing = Arc::new(MemBacking::new());
    let mut store = format(backing.clone(), GCM);
    let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
    content.write(&mut store, id, 0, &[1; 8192], 3).unwrap();
    store.sync_file(id).unwrap();
    drop(store);
    let name = data_file_name(id);
    backing.with_file(&name, |f| f[4096..].fill(0)).unwrap();
    let mut store = open(backing.clone(), GCM, &content).unwrap();
    let err = content.read(&mut store, id).unwrap_err();
    assert!(err.contains("block 1"), "{err}");
    // A data file cut short is an authentication failure of the block.
    backing.with_file(&name, |f| f.truncate(4096)).unwrap();
    let err = store.read_block(id, 1).unwrap_err();
    assert!(
        matches!(err, atrest_meta::FsError::Meta(ref m) if m.is_auth()),
        "{err}"
    );
}

/// §16.12 (c): a journaled block's payload is checked against its map
/// entry at replay. Changed in an acknowledged record (a `SYNC` follows):
/// an authentication error. Changed in the unacknowledged tail: cut as
/// torn, the write is gone as a whole, the file as before it.
#[test]
fn a_changed_journaled_payload_is_never_accepted() {
    for acknowledged in [true, false] {
        let content = TestContent::new(GCM);
        let backing = Arc::new(MemBacking::new());
        let mut store = format(backing.clone(), GCM);
        let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
        content.write(&mut store, id, 0, &[1; 8192], 3).unwrap();
        store.checkpoint(at(4)).unwrap();
        content.write(&mut store, id, 0, &[2; 8192], 5).unwrap();
        if acknowledged {
            store.sync_file(id).unwrap();
        }
        drop(store);
        // The payload is the last 8,192 bytes of the WRITE record; with a
        // SYNC record after it, it sits before that record.
        let segment = backing.list("atrest.log").unwrap().last().cloned().unwrap();
        let name = format!("atrest.log/{segment}");
        let sync_len = if acknowledged {
            backing_sync_record_len()
        } else {
            0
        };
        backing
            .with_file(&name, |f| {
                let at = f.len() - sync_len - 100;
                f[at] ^= 1;
            })
            .unwrap();
        let result = open(backing.clone(), GCM, &content);
        if acknowledged {
            let err = result.err().expect("refused");
            assert!(err.is_auth(), "{err}");
        } else {
            let mut store = result.unwrap();
            assert_eq!(content.read(&mut store, id).unwrap(), vec![1; 8192]);
        }
    }
}

/// The bytes of a `SYNC` record with GCM: header, sealed body (time,
/// object, through) and tag.
fn backing_sync_record_len() -> usize {
    24 + 12 + 24 + 16
}

/// One file, random writes (fresh and journaled, partial blocks),
/// truncates, `fsync`s and checkpoints on the crash simulator, the power
/// cut after a random number of disk calls. After the crash the store
/// opens; every block of the file opens (a fresh block lost is a hole,
/// never an authentication error); the contents are a state at or after
/// the last completed `fsync`, where only blocks written since then may
/// read as holes, the size may be cut back only over such blocks, and the
/// last operation may be there in part (a `pwrite` of fresh and
/// journaled blocks is two records, as ext4 does not make a `pwrite`
/// atomic either): nothing fsync'ed is lost.
#[test]
fn power_cuts_never_lose_fsynced_data_nor_fail_a_block() {
    let mut rng = Rng::new(0xda7a);
    for trial in 0..250u32 {
        let algorithm = if trial % 2 == 0 { GCM } else { XCHACHA };
        let content = TestContent::new(algorithm);
        let disk = Arc::new(SimDisk::new());
        let mut store = format(disk.clone(), algorithm);
        // Half the trials keep zeros ahead of the log's records, as the
        // mount does (a little, so that they run out and are written
        // again, and checkpoints cut them off).
        let zeros = if trial % 4 >= 2 { 8192 } else { 0 };
        store.set_log_zeros_ahead(zeros);
        let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
        store.sync().unwrap();
        let mut states = vec![Vec::<u8>::new()];
        let mut acknowledged = 0;
        let mut model = Vec::new();
        disk.cut_power_after(rng.below(160));
        for step in 0..40 {
            let t = 3 + step;
            let result = match rng.below(10) {
                0..=5 => {
                    let off = rng.below(40_000);
                    let len = 1 + rng.below(12_000) as usize;
                    let byte = 1 + rng.below(250) as u8;
                    content
                        .write(&mut store, id, off, &vec![byte; len], t)
                        .map(|()| apply_model(&mut model, &Op::Write(off, len, byte)))
                        .map_err(|e| e.to_string())
                }
                6 => {
                    let size = rng.below(45_000);
                    content
                        .truncate(&mut store, id, size, t)
                        .map(|()| apply_model(&mut model, &Op::Truncate(size)))
                        .map_err(|e| e.to_string())
                }
                7 | 8 => store
                    .sync_file(id)
                    .map(|()| acknowledged = states.len() - 1)
                    .map_err(|e| e.to_string()),
                _ => store
                    .checkpoint(at(t))
                    .map(|_| acknowledged = states.len() - 1)
                    .map_err(|e| e.to_string()),
            };
            if result.is_err() {
                break;
            }
            if states.last() != Some(&model) {
                states.push(model.clone());
            }
        }
        drop(store);
        disk.crash(&mut rng);
        let mut store = open(disk.clone(), algorithm, &content)
            .unwrap_or_else(|e| panic!("trial {trial}: does not open after the crash: {e}"));
        let found = content
            .read(&mut store, id)
            .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        let synced = &states[acknowledged];
        let explained = (acknowledged..states.len()).any(|i| {
            explains(
                &found,
                &states[i],
                &states[i.saturating_sub(1).max(acknowledged)],
                synced,
            )
        });
        assert!(
            explained,
            "trial {trial}: {} bytes found are no state since the last fsync ({} states after it)",
            found.len(),
            states.len() - acknowledged
        );
        // And it goes on: a write, an fsync, another crash.
        store.set_log_zeros_ahead(zeros);
        content.write(&mut store, id, 100, b"after", 99).unwrap();
        store.sync_file(id).unwrap();
        let expected = content.read(&mut store, id).unwrap();
        drop(store);
        disk.crash(&mut rng);
        let mut store = open(disk.clone(), algorithm, &content).unwrap();
        assert_eq!(
            content.read(&mut store, id).unwrap(),
            expected,
            "trial {trial}"
        );
    }
}

/// Whether `found` is `state` with some blocks that changed since
/// `synced` read as zeros (fresh blocks lost), or as they were in
/// `before` (the state before the last operation, which may be there in
/// part), perhaps cut back over such blocks.
fn explains(found: &[u8], state: &[u8], before: &[u8], synced: &[u8]) -> bool {
    if found.len() > state.len().max(before.len()) {
        return false;
    }
    let block = |b: &[u8], n: usize| -> Vec<u8> {
        let mut v = b
            .get(n * 4096..b.len().min((n + 1) * 4096))
            .unwrap_or(&[])
            .to_vec();
        v.resize(4096, 0);
        v
    };
    let changed = |n: usize| block(synced, n) != block(state, n) || (n + 1) * 4096 > synced.len();
    let kept = (0..found.len().div_ceil(4096)).all(|n| {
        let f = block(found, n);
        f == block(state, n) || f == block(before, n) || (changed(n) && f.iter().all(|&b| b == 0))
    });
    let cut = (found.len().div_ceil(4096)..state.len().div_ceil(4096))
        .all(|n| changed(n) || block(state, n).iter().all(|&b| b == 0));
    kept && cut
}

/// §16.14: a journaled write is one record, there whole or not at all.
/// Eight blocks the checkpoint holds, rewritten in one `pwrite`, the power
/// cut at every disk call of it and of the sync after it: the file is all
/// old or all new, and all new once the sync returned.
#[test]
fn a_journaled_write_is_all_or_nothing() {
    let content = TestContent::new(GCM);
    for cut in 0..12 {
        for seed in 0..4 {
            let disk = Arc::new(SimDisk::new());
            let mut store = format(disk.clone(), GCM);
            let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
            content.write(&mut store, id, 0, &[1; 8 * 4096], 3).unwrap();
            store.checkpoint(at(4)).unwrap();
            disk.cut_power_after(cut);
            let written = content.write(&mut store, id, 0, &[2; 8 * 4096], 5).is_ok();
            let synced = written && store.sync_file(id).is_ok();
            drop(store);
            disk.crash(&mut Rng::new(seed + 1));
            let mut store = open(disk.clone(), GCM, &content).unwrap();
            let found = content.read(&mut store, id).unwrap();
            assert!(
                found == vec![2; 8 * 4096] || (!synced && found == vec![1; 8 * 4096]),
                "cut {cut}, seed {seed}: a mix of old and new blocks (synced: {synced})"
            );
        }
    }
}

/// The mount's reads: blocks located under the store and fetched without
/// it are the blocks read one by one (journaled ones from the log, the
/// others from the data file, holes never read); a data file cut short
/// fails the first block it lacks.
#[test]
fn located_blocks_are_the_blocks_read_one_by_one() {
    let content = TestContent::new(GCM);
    let backing = Arc::new(MemBacking::new());
    let mut store = format(backing.clone(), GCM);
    let id = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
    content.write(&mut store, id, 0, &[1; 5 * 4096], 3).unwrap();
    content
        .write(&mut store, id, 6 * 4096, &[2; 4 * 4096], 4)
        .unwrap();
    store.checkpoint(at(5)).unwrap();
    // Journaled: in the log until the next checkpoint.
    content
        .write(&mut store, id, 3 * 4096, &[3; 4096], 6)
        .unwrap();
    content
        .write(&mut store, id, 7 * 4096, &[4; 4096], 7)
        .unwrap();
    let mut buf = vec![0u8; 10 * 4096];
    let plan = store.locate_blocks(id, 0, &mut buf).unwrap();
    plan.fetch(&mut buf).unwrap();
    assert_eq!(plan.first(), 0);
    assert_eq!(plan.entries()[5], MapEntry::Hole);
    for n in 0..10 {
        let located = &buf[n * 4096..(n + 1) * 4096];
        match store.read_block(id, n as u64).unwrap() {
            None => assert_eq!(plan.entries()[n], MapEntry::Hole, "block {n}"),
            Some(b) => {
                assert_eq!(plan.entries()[n], b.entry(), "block {n}");
                assert_eq!(located, &b.ciphertext[..], "block {n}");
            }
        }
    }
    assert_eq!(
        content.read(&mut store, id).unwrap()[3 * 4096..4 * 4096],
        [3; 4096]
    );
    backing
        .with_file(&data_file_name(id), |f| f.truncate(8 * 4096 + 100))
        .unwrap();
    let err = plan.fetch(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            FsError::Meta(MetaError::Auth(Location::DataFile { object, block: 8 })) if object == id
        ),
        "{err}"
    );
}

/// `fsync` in two halves with another file's write logged between them
/// (the mount's concurrent requests): no `SYNC` record follows records
/// its flush did not cover, and what it covered survives a power cut.
/// Without anything between, the `SYNC` record follows as before.
#[test]
fn a_split_fsync_keeps_its_data_when_others_log_between_its_halves() {
    let content = TestContent::new(GCM);
    let mut rng = Rng::new(0x5f5c);
    for trial in 0..40 {
        let disk = Arc::new(SimDisk::new());
        let mut store = format(disk.clone(), GCM);
        let f = store.create(ROOT_ID, b"f", regular(), at(2)).unwrap().id;
        let g = store.create(ROOT_ID, b"g", regular(), at(2)).unwrap().id;
        let data = vec![1; 3 * 4096 + 10];
        content.write(&mut store, f, 0, &data, 3).unwrap();
        let sync = store.begin_sync_file(f).unwrap();
        content.write(&mut store, g, 0, &[2; 4096], 4).unwrap();
        let logged = store.sequence();
        let flushed = sync.run();
        store.end_sync_file(sync, flushed).unwrap();
        assert_eq!(store.sequence(), logged, "no SYNC after g's write");
        if trial % 2 == 1 {
            content.write(&mut store, f, 4096, &[3; 10], 5).unwrap();
            let logged = store.sequence();
            store.sync_file(f).unwrap();
            assert_eq!(store.sequence(), logged + 1, "a SYNC after f's write");
        }
        drop(store);
        disk.crash(&mut rng);
        let mut store = open(disk.clone(), GCM, &content)
            .unwrap_or_else(|e| panic!("trial {trial}: does not open: {e}"));
        let mut expected = data.clone();
        if trial % 2 == 1 {
            expected[4096..4106].fill(3);
        }
        assert_eq!(
            content.read(&mut store, f).unwrap(),
            expected,
            "trial {trial}"
        );
    }
}

/// `fsync`s of several files at once (the mount's threads, each flushing
/// without the store) share the log's flushes (`GroupCommit`), with
/// zeros kept ahead of the log's records as the mount does; every file's
/// data survives a power cut right after they return, and the zeros a
/// crash leaves are cut as a torn tail.
#[test]
fn concurrent_fsyncs_share_the_log_flush_and_survive_a_power_cut() {
    let content = TestContent::new(GCM);
    let mut rng = Rng::new(0xc0c0);
    for trial in 0..30u8 {
        let disk = Arc::new(SimDisk::new());
        let mut store = format(disk.clone(), GCM);
        store.set_log_zeros_ahead(64 << 10);
        let ids: Vec<u64> = (0..4u8)
            .map(|i| {
                let name = format!("f{i}");
                store
                    .create(ROOT_ID, name.as_bytes(), regular(), at(2))
                    .unwrap()
                    .id
            })
            .collect();
        if trial % 2 == 1 {
            // Later writes journaled (each file synced once already).
            for &id in &ids {
                content.write(&mut store, id, 0, &[9; 6000], 3).unwrap();
                store.sync_file(id).unwrap();
            }
        }
        // Each file's fsync asks for a later record than the one before.
        let mut syncs = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let data = vec![trial ^ (i as u8 + 1); 6000];
            content.write(&mut store, id, 0, &data, 4).unwrap();
            syncs.push(store.begin_sync_file(id).unwrap());
        }
        let flushed: Vec<_> = std::thread::scope(|s| {
            let running: Vec<_> = syncs
                .iter()
                .map(|sync| s.spawn(move || sync.run()))
                .collect();
            running.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (sync, flushed) in syncs.into_iter().zip(flushed) {
            store.end_sync_file(sync, flushed).unwrap();
        }
        drop(store);
        disk.crash(&mut rng);
        let mut store = open(disk.clone(), GCM, &content)
            .unwrap_or_else(|e| panic!("trial {trial}: does not open: {e}"));
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(
                content.read(&mut store, id).unwrap(),
                vec![trial ^ (i as u8 + 1); 6000],
                "trial {trial}, file {i}"
            );
        }
    }
}

/// §16.13 step 5: a checkpoint with more than 64 data files to sync
/// syncs the backing file system once instead of each file and its
/// directory; every file survives a power cut right after it.
#[test]
fn a_checkpoint_of_many_data_files_syncs_the_file_system_once() {
    let content = TestContent::new(GCM);
    let disk = Arc::new(SimDisk::new());
    let mut store = format(disk.clone(), GCM);
    let mut ids = Vec::new();
    for i in 0..70u8 {
        let name = format!("f{i}");
        let id = store
            .create(ROOT_ID, name.as_bytes(), regular(), at(2))
            .unwrap()
            .id;
        content.write(&mut store, id, 0, &[i + 1; 100], 3).unwrap();
        ids.push(id);
    }
    let before = disk.sync_count();
    store.checkpoint(at(4)).unwrap();
    let syncs = disk.sync_count() - before;
    assert!(
        syncs < 16,
        "{syncs} syncs for a checkpoint of 70 data files"
    );
    drop(store);
    disk.crash(&mut Rng::new(7));
    let mut store = open(disk.clone(), GCM, &content).unwrap();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(
            content.read(&mut store, id).unwrap(),
            vec![i as u8 + 1; 100],
            "file {i}"
        );
    }
}

/// The mount's checkpointer flushes data files ahead of a checkpoint
/// without the store, again while writes meanwhile left some: each round
/// lists only the files written (or created) since the last, and the
/// checkpoint then syncs only what no round covered. After a power cut
/// every file holds what was written before the checkpoint, whichever
/// flush made it durable.
#[test]
fn flushes_ahead_cover_what_they_listed_and_the_checkpoint_the_rest() {
    for seed in 0..8 {
        let content = TestContent::new(GCM);
        let disk = Arc::new(SimDisk::new());
        let mut store = format(disk.clone(), GCM);
        let mut files: Vec<(u64, Vec<u8>)> = Vec::new();
        let create = |store: &mut Store, i: u8| {
            let name = format!("f{i}");
            let id = store
                .create(ROOT_ID, name.as_bytes(), regular(), at(2))
                .unwrap()
                .id;
            content.write(store, id, 0, &[i + 1; 100], 3).unwrap();
            (id, vec![i + 1; 100])
        };
        for i in 0..70u8 {
            files.push(create(&mut store, i));
        }
        let flush = |store: &mut Store| {
            let ahead = store.flush_ahead();
            let result = ahead.run();
            store.flushed_ahead(&ahead, result).unwrap();
        };
        flush(&mut store);
        assert_eq!(store.unflushed_count(), 0);
        assert!(store.flush_ahead().is_empty(), "nothing new to flush");
        // Written while the first round ran: an old file and a new one.
        content
            .write(&mut store, files[3].0, 100, &[9; 50], 4)
            .unwrap();
        files[3].1.extend_from_slice(&[9; 50]);
        files.push(create(&mut store, 70));
        assert_eq!(store.unflushed_count(), 2);
        flush(&mut store);
        assert_eq!(store.unflushed_count(), 0);
        // Written after the last round: the checkpoint's to sync.
        content
            .write(&mut store, files[5].0, 0, &[8; 100], 5)
            .unwrap();
        files[5].1 = vec![8; 100];
        assert_eq!(store.unflushed_count(), 1);
        let before = disk.sync_count();
        store.checkpoint(at(6)).unwrap();
        let syncs = disk.sync_count() - before;
        assert!(syncs < 10, "{syncs} syncs for a checkpoint of one file");
        drop(store);
        disk.crash(&mut Rng::new(seed));
        let mut store = open(disk.clone(), GCM, &content).unwrap();
        for (i, (id, data)) in files.iter().enumerate() {
            assert_eq!(
                &content.read(&mut store, *id).unwrap(),
                data,
                "file {i}, seed {seed}"
            );
        }
    }
}

/// What the mount's checkpoint triggers read (`crates/fuse/src/v2/
/// checkpoints.rs`): the fresh bytes recovery would verify, which a
/// `SYNC` of their file, a shrink, an unlink and a checkpoint take out
/// (a rewrite of a synced block is journaled: no change); and the fresh
/// bytes written since the last flush ahead.
#[test]
fn unsynced_fresh_bytes_count_what_recovery_would_verify() {
    const MIB: u64 = 1 << 20;
    let content = TestContent::new(GCM);
    let backing = Arc::new(MemBacking::new());
    let mut store = format(backing.clone(), GCM);
    store.checkpoint(at(2)).unwrap();
    let a = store.create(ROOT_ID, b"a", regular(), at(3)).unwrap().id;
    let b = store.create(ROOT_ID, b"b", regular(), at(3)).unwrap().id;
    content
        .write(&mut store, a, 0, &vec![1; MIB as usize], 4)
        .unwrap();
    content
        .write(&mut store, b, 0, &vec![2; MIB as usize], 4)
        .unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), 2 * MIB);
    assert_eq!(store.unflushed_bytes(), 2 * MIB);
    store.sync_file(a).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), MIB, "a's fsync covered a");
    // Rewritten after its sync, a's first block is journaled: no change.
    content.write(&mut store, a, 0, &[3; 4096], 5).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), MIB);
    content.write(&mut store, a, MIB, &[4; 8192], 5).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), MIB + 8192);
    // Flushed ahead, then written again: only the new bytes are left.
    let ahead = store.flush_ahead();
    let flushed = ahead.run();
    store.flushed_ahead(&ahead, flushed).unwrap();
    assert_eq!(store.unflushed_bytes(), 0);
    content.write(&mut store, b, MIB, &[5; 4096], 6).unwrap();
    assert_eq!(store.unflushed_bytes(), 4096);
    assert_eq!(store.unsynced_fresh_bytes(), MIB + 3 * 4096);
    // A shrink drops b's blocks past the new end.
    content.truncate(&mut store, b, MIB / 2, 7).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), MIB / 2 + 2 * 4096);
    // An unlink frees the file's blocks with it; a checkpoint holds the
    // rest.
    store.unlink(ROOT_ID, b"a", at(8)).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), MIB / 2);
    store.checkpoint(at(9)).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), 0);
    assert_eq!(store.unflushed_bytes(), 0);
    // Reopened after writes with no checkpoint: recovery's checkpoint
    // holds them too.
    content.write(&mut store, b, 0, &[6; 4096], 10).unwrap();
    drop(store);
    let store = open(backing.clone(), GCM, &content).unwrap();
    assert_eq!(store.unsynced_fresh_bytes(), 0);
}
