//! What a format 2 vault's metadata says before any key exists, for
//! `atrest status`: the newer superblock's checkpoint, sequence, state and
//! time as written (docs/format.md §16.5), and how many changes the log
//! holds after its replay position (§16.12 frame headers, which are
//! plaintext). Nothing here is authenticated (the MAC and the record
//! bodies need the vault's keys): it describes the disk, it proves
//! nothing, and what it reads is never used to open the store.

use crate::backing::Backing;
use crate::log::{BackingSegments, FrameHeader, SEGMENT_HEADER_LEN, SegmentStore};
use crate::page::PAGE_SIZE;
use crate::pager::META_FILE;
use crate::superblock::State;

/// The newer superblock's fields and the log after it, unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unverified {
    /// Checkpoint `k`.
    pub checkpoint: u64,
    /// Sequence `S`: the last log record the checkpoint includes.
    pub sequence: u64,
    pub state: State,
    /// Unix milliseconds when the checkpoint was written.
    pub time_ms: u64,
    /// Well-framed `META`, `WRITE` and `TRUNCATE` records after the
    /// checkpoint's replay position: changes the next open replays.
    pub changes_after: u64,
}

/// Field offsets of §16.5.
const MAGIC: &[u8; 8] = b"ATRESTSB";
const STATE_AT: usize = 11;
const CHECKPOINT_AT: usize = 32;
const SEQUENCE_AT: usize = 40;
const REPLAY_AT: usize = 80;
const TIME_AT: usize = 274;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the superblock with the higher checkpoint number of the two that
/// have the magic, version 2 and a known state, and walks the log frames
/// from its replay position; `overhead` is the AEAD's (the config's
/// algorithm). `None`: no superblock parses.
pub fn read_unverified(backing: &dyn Backing, overhead: usize) -> Option<Unverified> {
    let mut best: Option<(Unverified, u64, u64)> = None;
    for index in 0..2u64 {
        let mut page = vec![0u8; PAGE_SIZE];
        if backing
            .read_exact_at(META_FILE, index * PAGE_SIZE as u64, &mut page)
            .is_err()
            || &page[..8] != MAGIC
            || page[8..10] != [0, 2]
        {
            continue;
        }
        let state = match page[STATE_AT] {
            1 => State::Clean,
            2 => State::Open,
            3 => State::Migrating,
            4 => State::Recovered,
            _ => continue,
        };
        let found = Unverified {
            checkpoint: u64_at(&page, CHECKPOINT_AT),
            sequence: u64_at(&page, SEQUENCE_AT),
            state,
            time_ms: u64_at(&page, TIME_AT),
            changes_after: 0,
        };
        let replay = (u64_at(&page, REPLAY_AT), u64_at(&page, REPLAY_AT + 8));
        if best.is_none_or(|(b, _, _)| b.checkpoint < found.checkpoint) {
            best = Some((found, replay.0, replay.1));
        }
    }
    let (mut found, segment, offset) = best?;
    found.changes_after = changes_after(backing, overhead, segment, offset, found.sequence);
    Some(found)
}

/// Counts `META`, `WRITE` and `TRUNCATE` frames with sequence numbers
/// above `sequence`, from `offset` of `segment` on, segment after segment
/// while each ends exactly where its last frame does.
fn changes_after(
    backing: &dyn Backing,
    overhead: usize,
    segment: u64,
    offset: u64,
    sequence: u64,
) -> u64 {
    let segments = BackingSegments::new(backing);
    let Ok(list) = segments.list() else {
        return 0;
    };
    let mut changes = 0;
    let mut start = usize::try_from(offset).unwrap_or(usize::MAX);
    for number in list.into_iter().filter(|&n| n >= segment) {
        let Ok(bytes) = segments.read(number) else {
            break;
        };
        let mut pos = start;
        while let Some(frame) = bytes
            .get(pos..)
            .and_then(|rest| FrameHeader::decode(rest, overhead).ok())
        {
            if pos + frame.record_len() > bytes.len() {
                break;
            }
            if frame.seq > sequence && matches!(frame.kind, 1..=3) {
                changes += 1;
            }
            pos += frame.record_len();
        }
        if pos != bytes.len() {
            break;
        }
        start = SEGMENT_HEADER_LEN;
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use atrest_core::{ContentAlgorithm, SecretKey};

    use super::*;
    use crate::record::{ObjectKind, ROOT_ID, Timestamp};
    use crate::{ConfigBinding, MemBacking, MetaKeys, NewObject, Store};

    fn fifo() -> NewObject {
        NewObject {
            kind: ObjectKind::Fifo,
            mode: 0o600,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: Vec::new(),
        }
    }

    #[test]
    fn reads_the_newest_checkpoint_and_counts_changes_after_it() {
        let algorithm = ContentAlgorithm::Aes256Gcm;
        let keys = MetaKeys::derive(&SecretKey::from_bytes([1; 32]), [2; 16], algorithm);
        let backing = Arc::new(MemBacking::new());
        let config = ConfigBinding {
            generation: 1,
            hash: [3; 32],
        };
        let at = |secs| Timestamp { secs, nanos: 0 };
        let mut store = Store::format(
            keys,
            backing.clone(),
            config,
            (0o755, 0, 0),
            at(1_700_000_000),
        )
        .unwrap();
        let overhead = algorithm.overhead();
        let first = read_unverified(backing.as_ref(), overhead).unwrap();
        assert_eq!((first.checkpoint, first.changes_after), (1, 0));
        assert_eq!(first.time_ms, 1_700_000_000_000);
        for i in 0..3 {
            let name = format!("f{i}");
            store
                .create(ROOT_ID, name.as_bytes(), fifo(), at(1_700_000_001))
                .unwrap();
        }
        store.sync().unwrap();
        let open = read_unverified(backing.as_ref(), overhead).unwrap();
        assert_eq!((open.checkpoint, open.changes_after), (1, 3));
        store.checkpoint(at(1_700_000_002)).unwrap();
        let after = read_unverified(backing.as_ref(), overhead).unwrap();
        assert_eq!((after.checkpoint, after.changes_after), (2, 0));
        assert!(after.sequence > open.sequence);
        backing.with_file(META_FILE, |f| f.truncate(0));
        assert_eq!(read_unverified(backing.as_ref(), overhead), None);
    }

    /// Clean at close; after a crash, recovered (with what recovery did)
    /// until a complete check; then clean again.
    #[test]
    fn the_state_follows_closes_crashes_and_checks() {
        let algorithm = ContentAlgorithm::XChaCha20Poly1305;
        let keys = || MetaKeys::derive(&SecretKey::from_bytes([1; 32]), [2; 16], algorithm);
        let backing = Arc::new(MemBacking::new());
        let config = ConfigBinding {
            generation: 1,
            hash: [3; 32],
        };
        let at = |secs| Timestamp { secs, nanos: 0 };
        let open = || Store::open(keys(), backing.clone(), config, &crate::NoContents).unwrap();
        let state = || {
            read_unverified(backing.as_ref(), algorithm.overhead())
                .unwrap()
                .state
        };
        let mut store =
            Store::format(keys(), backing.clone(), config, (0o755, 0, 0), at(1)).unwrap();
        store.close(at(2)).unwrap();
        drop(store);
        assert_eq!(state(), State::Clean);
        let mut store = open();
        assert_eq!(store.recovery(), None);
        assert_eq!(store.superblock().state, State::Open, "open while in use");
        store.create(ROOT_ID, b"p", fifo(), at(3)).unwrap();
        store.sync().unwrap();
        drop(store);
        let mut store = open();
        let recovery = store.recovery().expect("a crash was recovered");
        assert!(
            recovery.replayed >= 2 && recovery.reverted == 0,
            "{recovery:?}"
        );
        store.close(at(4)).unwrap();
        drop(store);
        assert_eq!(state(), State::Recovered, "until a complete check");
        let mut store = open();
        assert_eq!(store.recovery(), None);
        store.mark_checked();
        store.close(at(5)).unwrap();
        assert_eq!(state(), State::Clean);
    }
}
