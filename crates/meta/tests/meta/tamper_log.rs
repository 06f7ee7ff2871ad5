//! Changed, zeroed, dropped, swapped and reordered log records
//! (docs/format.md §16.12): a record a completed sync acknowledged is
//! protected, and any change to it is an authentication error naming its
//! segment and record; the records after the last acknowledgement are a
//! tail that a crash may have torn, so a change there ends the log
//! before it, keeping every acknowledged operation.

use atrest_meta::NoContents;
use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::log::{FrameHeader, Kind, LOG_DIR, SEGMENT_HEADER_LEN, segment_name};
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::{Backing, Location, MemBacking, MetaError, Store};

use crate::common::{CONFIG, at, keys, new_store};
use crate::tamper::{Listing, listing, object};

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// One record of a segment file.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: usize,
    len: usize,
    seq: u64,
    kind: u8,
}

/// The records of segment `segment`, read frame by frame.
fn records(backing: &MemBacking, segment: u64) -> Vec<Rec> {
    let bytes = backing
        .snapshot()
        .remove(&segment_name(segment))
        .expect("segment");
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let h = FrameHeader::decode(&bytes[pos..], GCM.overhead()).expect("a frame");
        out.push(Rec {
            offset: pos,
            len: h.record_len(),
            seq: h.seq,
            kind: h.kind,
        });
        pos += h.record_len();
    }
    out
}

/// A vault whose log after its checkpoint holds two synced batches of
/// operations and an unsynced tail of three. Returns the backing, the
/// segment, the tree after each operation (`states[0]`: before the first)
/// and how many operations the last sync covered.
fn logged() -> (Arc<MemBacking>, u64, Vec<Listing>, usize) {
    let (mut store, backing) = new_store(GCM);
    let mut states = vec![listing(&mut store).unwrap()];
    let mut acknowledged = 0;
    let sub = store
        .create(ROOT_ID, b"sub", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    states.push(listing(&mut store).unwrap());
    for batch in 0..3 {
        for i in 0..3 {
            let name = format!("f{batch}-{i}");
            let parent = if i == 1 { sub } else { ROOT_ID };
            let kind = if i == 2 {
                ObjectKind::Symlink
            } else {
                ObjectKind::Regular
            };
            store
                .create(parent, name.as_bytes(), object(kind, &[b'x'; 150]), at(3))
                .unwrap();
            states.push(listing(&mut store).unwrap());
        }
        store
            .rename(
                ROOT_ID,
                format!("f{batch}-0").as_bytes(),
                sub,
                b"moved",
                Default::default(),
                at(4),
            )
            .unwrap();
        states.push(listing(&mut store).unwrap());
        if batch < 2 {
            store.sync().unwrap();
            acknowledged = states.len() - 1;
        }
    }
    let segment = store.superblock().replay_segment;
    (backing, segment, states, acknowledged)
}

fn open(backing: &Arc<MemBacking>) -> Result<Listing, MetaError> {
    let mut store = Store::open(keys(GCM), backing.clone(), CONFIG, &NoContents)?;
    listing(&mut store).map_err(|e| MetaError::Inconsistent(e.to_string()))
}

/// Applies `tamper` to the segment file, opens, and restores it.
fn open_tampered(
    backing: &Arc<MemBacking>,
    segment: u64,
    tamper: impl FnOnce(&mut Vec<u8>),
) -> Result<Listing, MetaError> {
    let clean = backing.snapshot();
    backing
        .with_file(&segment_name(segment), tamper)
        .expect("segment");
    let result = open(backing);
    backing.restore(clean);
    result
}

/// The error names segment `segment` and record `seq`.
#[track_caller]
fn assert_names(result: &Result<Listing, MetaError>, segment: u64, seq: u64, what: &str) {
    match result {
        Err(MetaError::Auth(Location::LogRecord {
            segment: s, seq: q, ..
        })) if *s == segment && *q == seq => {
            let message = result.as_ref().unwrap_err().to_string();
            assert!(
                message.contains(&format!("log record {seq} (atrest.log/{segment:016x}")),
                "{what}: {message}"
            );
        }
        other => panic!(
            "{what}: expected an authentication error at record {seq} of segment {segment}, got {other:?}"
        ),
    }
}

/// The last SYNC record and the records acknowledged before it.
fn acknowledged_records(recs: &[Rec]) -> (&[Rec], Rec) {
    let last_sync = recs
        .iter()
        .rposition(|r| r.kind == Kind::Sync as u8)
        .expect("a SYNC record");
    (&recs[..last_sync], recs[last_sync])
}

#[test]
fn every_changed_byte_of_an_acknowledged_record_is_an_authentication_error() {
    let (backing, segment, states, _) = logged();
    assert_eq!(
        open_tampered(&backing, segment, |_| {}).unwrap(),
        *states.last().unwrap()
    );
    let recs = records(&backing, segment);
    let (acked, _) = acknowledged_records(&recs);
    assert!(acked.len() > 10, "{} records", acked.len());
    for r in acked {
        for at in [0, 4, 9, 15, 20, 22, 24, 40, r.len / 2, r.len - 1] {
            let result = open_tampered(&backing, segment, |f| f[r.offset + at] ^= 0x20);
            assert_names(
                &result,
                segment,
                r.seq,
                &format!("record {} byte {at}", r.seq),
            );
        }
    }
}

#[test]
fn zeroed_dropped_swapped_and_reordered_acknowledged_records_are_authentication_errors() {
    let (backing, segment, _, _) = logged();
    let recs = records(&backing, segment);
    let (acked, _) = acknowledged_records(&recs);
    for (i, r) in acked.iter().enumerate() {
        let zeroed = open_tampered(&backing, segment, |f| f[r.offset..r.offset + r.len].fill(0));
        assert_names(&zeroed, segment, r.seq, &format!("record {} zeroed", r.seq));
        let dropped = open_tampered(&backing, segment, |f| {
            f.drain(r.offset..r.offset + r.len).for_each(drop);
        });
        assert_names(
            &dropped,
            segment,
            r.seq,
            &format!("record {} dropped", r.seq),
        );
        let Some(next) = acked.get(i + 1) else {
            continue;
        };
        let swapped = open_tampered(&backing, segment, |f| {
            let a = f[r.offset..r.offset + r.len].to_vec();
            let b = f[next.offset..next.offset + next.len].to_vec();
            f.splice(r.offset..next.offset + next.len, b.into_iter().chain(a))
                .for_each(drop);
        });
        assert_names(
            &swapped,
            segment,
            r.seq,
            &format!("records {} and {} swapped", r.seq, next.seq),
        );
        // Moved to the end of the log, after everything else.
        let moved = open_tampered(&backing, segment, |f| {
            let a: Vec<u8> = f.drain(r.offset..r.offset + r.len).collect();
            f.extend_from_slice(&a);
        });
        assert_names(
            &moved,
            segment,
            r.seq,
            &format!("record {} moved to the end", r.seq),
        );
    }
}

/// §16.12, questions a and b: a changed, zeroed or cut record after the
/// last acknowledgement is a torn tail. The log ends before it and the
/// tree is the state after the operations before it: never an error,
/// never a state without an acknowledged operation.
#[test]
fn a_changed_record_in_the_unacknowledged_tail_ends_the_log_there() {
    let (backing, segment, states, acknowledged) = logged();
    let recs = records(&backing, segment);
    let (_, sync) = acknowledged_records(&recs);
    let meta_before = |seq: u64| {
        recs.iter()
            .filter(|r| r.kind == Kind::Meta as u8 && r.seq < seq)
            .count()
    };
    let tail: Vec<Rec> = recs.iter().copied().filter(|r| r.seq > sync.seq).collect();
    assert!(tail.len() >= 3);
    for r in &tail {
        let want = &states[meta_before(r.seq)];
        for at in [0, 12, 30, r.len - 1] {
            let found = open_tampered(&backing, segment, |f| f[r.offset + at] ^= 0x01)
                .unwrap_or_else(|e| panic!("record {} byte {at}: {e}", r.seq));
            assert_eq!(&found, want, "record {} byte {at}", r.seq);
        }
        let zeroed =
            open_tampered(&backing, segment, |f| f[r.offset..r.offset + r.len].fill(0)).unwrap();
        assert_eq!(&zeroed, want, "record {} zeroed", r.seq);
    }
    // The SYNC record itself changed: every operation it acknowledged is
    // still there.
    let found = open_tampered(&backing, segment, |f| {
        f[sync.offset + 30] ^= 0x01;
        f.truncate(sync.offset + sync.len);
    })
    .unwrap();
    assert_eq!(found, states[acknowledged]);
}

#[test]
fn a_missing_or_older_log_is_refused() {
    let (mut store, backing) = new_store(GCM);
    store
        .create(ROOT_ID, b"a", object(ObjectKind::Regular, b""), at(2))
        .unwrap();
    store.sync().unwrap();
    let before = backing.snapshot();
    store.checkpoint(at(3)).unwrap();
    let segment = store.superblock().replay_segment;
    store
        .create(ROOT_ID, b"b", object(ObjectKind::Regular, b""), at(4))
        .unwrap();
    store.sync().unwrap();
    drop(store);
    // The segment the superblock starts from deleted.
    let clean = backing.snapshot();
    let is_refused = |r: Result<Listing, MetaError>| {
        matches!(
            r,
            Err(MetaError::Corrupt {
                location: Location::Segment { segment: s },
                ..
            }) if s == segment
        )
    };
    backing.with_file(&segment_name(segment), |f| f.clear());
    assert!(is_refused(open(&backing)));
    backing.restore(clean.clone());
    backing.remove(&segment_name(segment)).unwrap();
    assert!(is_refused(open(&backing)));
    backing.restore(clean.clone());
    // The log put back to its state before the checkpoint, with the
    // newer metadata: the superblock's CHECKPOINT record is not there.
    let mut mixed = clean.clone();
    mixed.retain(|name, _| !name.starts_with(LOG_DIR));
    mixed.extend(
        before
            .into_iter()
            .filter(|(name, _)| name.starts_with(LOG_DIR)),
    );
    backing.restore(mixed);
    assert!(is_refused(open(&backing)));
    backing.restore(clean);
    let found = open(&backing).unwrap();
    assert!(found.contains_key(&b"/b"[..]));
}
