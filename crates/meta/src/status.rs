//! What a format 2 vault's metadata says before any key exists: for
//! `atrest status`, the newer superblock's checkpoint, sequence, state and
//! time as written (docs/format.md §16.5), and how many changes the log
//! holds after its replay position (§16.12 frame headers, which are
//! plaintext); for an unlock request, the vault's [`Claim`] (§16.17.2).
//! Nothing here is authenticated (the MAC and the record bodies need the
//! vault's keys): it describes the disk, it proves nothing, and what it
//! reads is never used to open the store.

use crate::backing::Backing;
use crate::log::{BackingSegments, FrameHeader, SEGMENT_HEADER_LEN, SegmentStore, chain_next};
use crate::page::PAGE_SIZE;
use crate::pager::META_FILE;
use crate::superblock::{Generation, MAX_ACKNOWLEDGED, MAX_RECENT, State};

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

/// What an unlock request claims about the vault on disk (§16.17.2),
/// read before any key exists: the newer superblock's checkpoint, config
/// generation and lineage, with the sequence number and chain hash of the
/// last record that parses from its replay position on (at or past the
/// superblock's). The authority judges it; after unlock the host checks
/// it against what authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub checkpoint: u64,
    pub sequence: u64,
    pub chain: [u8; 32],
    pub config_generation: u64,
    /// The superblock's own generation, then its `recent` and
    /// `acknowledged` lists, as [`crate::superblock::Superblock::lineage`].
    pub lineage: Vec<Generation>,
}

/// Field offsets of §16.5.
const MAGIC: &[u8; 8] = b"ATRESTSB";
const STATE_AT: usize = 11;
const CHECKPOINT_AT: usize = 32;
const SEQUENCE_AT: usize = 40;
const CHAIN_AT: usize = 48;
const REPLAY_AT: usize = 80;
const CONFIG_GENERATION_AT: usize = 96;
const TIME_AT: usize = 274;
const RECENT_COUNT_AT: usize = 282;
const ACKNOWLEDGED_COUNT_AT: usize = 283;
const LISTS_AT: usize = 284;
const GENERATION_LEN: usize = 48;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn generation_at(bytes: &[u8], at: usize) -> Generation {
    Generation {
        checkpoint: u64_at(bytes, at),
        sequence: u64_at(bytes, at + 8),
        chain: bytes[at + 16..at + 48].try_into().expect("32 bytes"),
    }
}

/// The superblock pages that have the magic, version 2 and a known state,
/// with that state, the higher checkpoint number first.
fn superblocks(backing: &dyn Backing) -> Vec<(Vec<u8>, State)> {
    let mut found: Vec<(Vec<u8>, State)> = Vec::with_capacity(2);
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
        found.push((page, state));
    }
    found.sort_by_key(|(page, _)| std::cmp::Reverse(u64_at(page, CHECKPOINT_AT)));
    found
}

/// Reads the superblock with the higher checkpoint number of the two that
/// have the magic, version 2 and a known state, and walks the log frames
/// from its replay position; `overhead` is the AEAD's (the config's
/// algorithm). `None`: no superblock parses.
pub fn read_unverified(backing: &dyn Backing, overhead: usize) -> Option<Unverified> {
    let (page, state) = superblocks(backing).into_iter().next()?;
    let sequence = u64_at(&page, SEQUENCE_AT);
    let walk = walk_log(backing, overhead, &page);
    Some(Unverified {
        checkpoint: u64_at(&page, CHECKPOINT_AT),
        sequence,
        state,
        time_ms: u64_at(&page, TIME_AT),
        changes_after: walk.changes,
    })
}

/// The vault's claim (§16.17.2), from the newer superblock whose lists
/// parse (a page torn or garbled there is passed over for the other, so
/// that whenever a superblock can authenticate there is a claim to
/// judge); `None` when neither does.
pub fn read_claim(backing: &dyn Backing, overhead: usize) -> Option<Claim> {
    superblocks(backing)
        .iter()
        .find_map(|(page, _)| claim_of(backing, overhead, page))
}

/// The claim of one superblock page.
fn claim_of(backing: &dyn Backing, overhead: usize, page: &[u8]) -> Option<Claim> {
    let (recent, acknowledged) = (
        usize::from(page[RECENT_COUNT_AT]),
        usize::from(page[ACKNOWLEDGED_COUNT_AT]),
    );
    if !(1..=MAX_RECENT).contains(&recent) || acknowledged > MAX_ACKNOWLEDGED {
        return None;
    }
    // The superblock's `recent` list starts with its own generation: one
    // that does not was not written by a checkpoint.
    let lineage: Vec<Generation> = (0..recent + acknowledged)
        .map(|i| generation_at(page, LISTS_AT + i * GENERATION_LEN))
        .collect();
    if lineage[0] != generation_at(page, CHECKPOINT_AT) {
        return None;
    }
    let walk = walk_log(backing, overhead, page);
    Some(Claim {
        checkpoint: u64_at(page, CHECKPOINT_AT),
        sequence: walk.last_sequence,
        chain: walk.chain,
        config_generation: u64_at(page, CONFIG_GENERATION_AT),
        lineage,
    })
}

/// What the frames after a superblock's replay position show.
struct Walk {
    /// `META`, `WRITE` and `TRUNCATE` frames past the superblock's `S`.
    changes: u64,
    /// The last frame that continues the sequence from `S` (or `S`).
    last_sequence: u64,
    /// Its chain hash, `h_seq` (keyless: §16.12 hashes the record bytes).
    chain: [u8; 32],
}

/// Walks the frames from `superblock`'s replay position on, segment after
/// segment while each ends exactly where its last frame does: counts the
/// changes past its `S`, and follows the chain from `h_S` through the
/// frames whose sequence numbers continue it.
fn walk_log(backing: &dyn Backing, overhead: usize, superblock: &[u8]) -> Walk {
    let sequence = u64_at(superblock, SEQUENCE_AT);
    let (segment, offset) = (
        u64_at(superblock, REPLAY_AT),
        u64_at(superblock, REPLAY_AT + 8),
    );
    let mut walk = Walk {
        changes: 0,
        last_sequence: sequence,
        chain: superblock[CHAIN_AT..CHAIN_AT + 32]
            .try_into()
            .expect("32 bytes"),
    };
    let mut chained = true;
    let segments = BackingSegments::new(backing);
    let Ok(list) = segments.list() else {
        return walk;
    };
    let mut start = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut expected = Some(segment);
    for number in list.into_iter().filter(|&n| n >= segment) {
        // The replay segment, then the ones after it, none missing.
        if Some(number) != expected {
            break;
        }
        expected = number.checked_add(1);
        let Ok(bytes) = segments.read(number) else {
            break;
        };
        let mut pos = start;
        while let Some(frame) = bytes
            .get(pos..)
            .and_then(|rest| FrameHeader::decode(rest, overhead).ok())
        {
            let end = pos + frame.record_len();
            if end > bytes.len() {
                break;
            }
            if frame.seq > sequence && matches!(frame.kind, 1..=3) {
                walk.changes += 1;
            }
            if chained && walk.last_sequence.checked_add(1) == Some(frame.seq) {
                walk.chain = chain_next(&walk.chain, &bytes[pos..end]);
                walk.last_sequence = frame.seq;
            } else {
                chained = false;
            }
            pos = end;
        }
        if pos != bytes.len() {
            break;
        }
        start = SEGMENT_HEADER_LEN;
    }
    walk
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

    /// A new store in memory with config generation `config`, formatted
    /// at Unix time 1,700,000,000.
    fn new_store(algorithm: ContentAlgorithm, config: u64) -> (Store, Arc<MemBacking>) {
        let keys = MetaKeys::derive(&SecretKey::from_bytes([1; 32]), [2; 16], algorithm);
        let backing = Arc::new(MemBacking::new());
        let config = ConfigBinding {
            generation: config,
            hash: [3; 32],
        };
        let at = Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        };
        let store = Store::format(keys, backing.clone(), config, (0o755, 0, 0), at).unwrap();
        (store, backing)
    }

    #[test]
    fn reads_the_newest_checkpoint_and_counts_changes_after_it() {
        let algorithm = ContentAlgorithm::Aes256Gcm;
        let (mut store, backing) = new_store(algorithm, 1);
        let at = |secs| Timestamp { secs, nanos: 0 };
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

    /// The claim names the newest superblock's checkpoint, config
    /// generation and lineage, and the log's last record: its sequence
    /// number and chain hash as the writer computed them with the key.
    #[test]
    fn the_claim_follows_the_log_past_the_superblock() {
        let algorithm = ContentAlgorithm::XChaCha20Poly1305;
        let (mut store, backing) = new_store(algorithm, 3);
        let at = |secs| Timestamp { secs, nanos: 0 };
        for k in 0..3 {
            store
                .create(ROOT_ID, format!("c{k}").as_bytes(), fifo(), at(2))
                .unwrap();
            store.checkpoint(at(3)).unwrap();
        }
        let overhead = algorithm.overhead();
        let sb = store.superblock().clone();
        let claim = read_claim(backing.as_ref(), overhead).unwrap();
        assert_eq!(claim.checkpoint, sb.generation.checkpoint);
        assert_eq!(claim.config_generation, 3);
        assert_eq!(claim.lineage, sb.lineage().copied().collect::<Vec<_>>());
        assert_eq!(claim.lineage.len(), 4);
        // The checkpoint's own CHECKPOINT record follows its `S`.
        assert_eq!(claim.sequence, store.sequence());
        assert!(claim.sequence > sb.generation.sequence);
        for i in 0..2 {
            store
                .create(ROOT_ID, format!("later{i}").as_bytes(), fifo(), at(4))
                .unwrap();
        }
        store.sync().unwrap();
        let later = read_claim(backing.as_ref(), overhead).unwrap();
        assert_eq!(later.sequence, store.sequence());
        assert_eq!(later.lineage, claim.lineage, "no checkpoint since");
        assert_ne!(later.chain, claim.chain);
        // A record cut in half ends the walk before it.
        let last = *BackingSegments::new(backing.as_ref())
            .list()
            .unwrap()
            .last()
            .unwrap();
        let path = crate::log::segment_name(last);
        backing
            .with_file(&path, |f| f.truncate(f.len() - 10))
            .unwrap();
        let torn = read_claim(backing.as_ref(), overhead).unwrap();
        assert_eq!(torn.sequence, later.sequence - 1);
        assert_eq!(torn.lineage, claim.lineage);
        // The newer superblock's lists garbled: the claim is the other
        // page's, which is what the store would authenticate.
        let newer = PAGE_SIZE * (sb.generation.checkpoint % 2) as usize;
        backing
            .with_file(META_FILE, |f| f[newer + LISTS_AT] ^= 0xff)
            .unwrap();
        let older = read_claim(backing.as_ref(), overhead).unwrap();
        assert_eq!(older.checkpoint, sb.generation.checkpoint - 1);
        assert_eq!(older.lineage[..], claim.lineage[1..]);
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
