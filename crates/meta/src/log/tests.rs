use atrest_core::{ContentAlgorithm, SecretKey};
use proptest::prelude::*;

use super::*;
use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;
use crate::record::{HEAD_LEN, MapEntry};

const VAULT: [u8; 16] = [0x5a; 16];

fn keys(algorithm: ContentAlgorithm) -> MetaKeys {
    MetaKeys::derive(&SecretKey::from_bytes([7; 32]), VAULT, algorithm)
}

const ALGORITHMS: [ContentAlgorithm; 2] = [
    ContentAlgorithm::Aes256Gcm,
    ContentAlgorithm::XChaCha20Poly1305,
];

fn head(n: u8) -> [u8; HEAD_LEN] {
    [n; HEAD_LEN]
}

/// One body of every kind (and both payload-carrying shapes).
fn every_kind(e: usize) -> Vec<(Body, Vec<u8>)> {
    vec![
        (
            Body::Meta {
                op: 4,
                heads: vec![head(1), head(2)],
                entries: vec![EntryChange {
                    action: 1,
                    dir: 7,
                    object: 9,
                    kind: 3,
                    name: b"link".to_vec(),
                }],
                extra: b"/target/of/the/link".to_vec(),
            },
            vec![],
        ),
        (
            Body::Write {
                head: head(3),
                first_block: 10,
                mode: 1,
                settled_size: 40960,
                entries: vec![vec![0xe1; e], vec![0xe2; e]],
            },
            vec![],
        ),
        (
            Body::Write {
                head: head(4),
                first_block: 0,
                mode: 2,
                settled_size: 8192,
                entries: vec![vec![0xe3; e], vec![0xe4; e]],
            },
            (0..8192u32).map(|i| i as u8).collect(),
        ),
        (
            Body::Truncate {
                head: head(5),
                old_size: 1 << 20,
                tail: 0,
                tail_entry: None,
            },
            vec![],
        ),
        (
            Body::Truncate {
                head: head(6),
                old_size: 5000,
                tail: 2,
                tail_entry: Some(vec![0xe5; e]),
            },
            vec![0x77; 4096],
        ),
        (
            Body::Sync {
                object: 12,
                through: 99,
            },
            vec![],
        ),
        (Body::Checkpoint { k: 3 }, vec![]),
        (
            Body::Mount {
                reason: 1,
                host_id: b"host-a".to_vec(),
                boot_id: b"boot-1234".to_vec(),
            },
            vec![],
        ),
        (
            Body::Recovery {
                replayed: 1,
                reverted: 2,
                cut_back: 3,
                trimmed: 4,
                removed: 5,
            },
            vec![],
        ),
        (
            Body::Config {
                generation: 4,
                hash: [0xc0; 32],
            },
            vec![],
        ),
        (
            Body::Witnessed {
                k: 2,
                s: 50,
                h: [0x11; 32],
                witness: 1,
                audit_key: [0x22; 32],
            },
            vec![],
        ),
        (
            Body::Migrate {
                action: 2,
                path_hash: [0x33; 32],
                object: 40,
                inode: 1234,
            },
            vec![],
        ),
        (
            Body::Repair {
                action: 5,
                object: 41,
                detail: 777,
            },
            vec![],
        ),
    ]
}

fn new_log(keys: &MetaKeys) -> (MemSegments, LogWriter) {
    let mut store = MemSegments::default();
    let w = LogWriter::create(keys, &mut store, 0, 1, chain_genesis(keys.vault_id())).unwrap();
    (store, w)
}

fn start() -> Start {
    Start {
        segment: 0,
        offset: SEGMENT_HEADER_LEN as u64,
        next_seq: 1,
        chain: chain_genesis(&VAULT),
    }
}

/// A log of every kind, committed in small groups and ending with the
/// `SYNC` record a completed sync writes (so every record before it is
/// acknowledged); returns the records' `(segment, offset)` and the
/// expected bodies.
type Sample = (MemSegments, Vec<(u64, u64)>, Vec<(Body, Vec<u8>)>);

fn sample(keys: &MetaKeys) -> Sample {
    let (mut store, mut w) = new_log(keys);
    let mut bodies = every_kind(MapEntry::len(keys.algorithm()));
    let through = bodies.len() as u64;
    bodies.push((Body::Sync { object: 0, through }, vec![]));
    let mut at = Vec::new();
    for (i, (body, payload)) in bodies.iter().enumerate() {
        let (s, o, seq) = w
            .append(keys, &mut store, 1000 + i as u64, body, payload)
            .unwrap();
        assert_eq!(seq, i as u64 + 1);
        at.push((s, o));
        if i % 3 == 2 {
            w.commit(&mut store).unwrap();
        }
    }
    w.commit(&mut store).unwrap();
    (store, at, bodies)
}

#[test]
fn every_kind_round_trips() {
    for algorithm in ALGORITHMS {
        let keys = keys(algorithm);
        let (store, at, bodies) = sample(&keys);
        let replay = replay(&keys, &store, start()).unwrap();
        assert_eq!(replay.records.len(), bodies.len());
        for (i, (r, (body, payload))) in replay.records.iter().zip(&bodies).enumerate() {
            assert_eq!(&r.body, body);
            assert_eq!(&r.payload, payload);
            assert_eq!(r.seq, i as u64 + 1);
            assert_eq!(r.time, 1000 + i as u64);
            assert_eq!((r.segment, r.offset), at[i]);
        }
        assert_eq!(replay.end.torn, None);
        assert_eq!(replay.end.next_seq, bodies.len() as u64 + 1);
        assert_eq!(replay.end.offset, store.segments[&0].len() as u64);
    }
}

#[test]
fn body_encoding_is_decoded_back_and_refuses_trailing_bytes() {
    for algorithm in ALGORITHMS {
        let e = MapEntry::len(algorithm);
        for (body, _) in every_kind(e) {
            let bytes = body.encode(42);
            assert_eq!(Body::decode(body.kind(), &bytes, e), Ok((42, body.clone())));
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Body::decode(body.kind(), &longer, e).is_err());
            assert!(Body::decode(body.kind(), &bytes[..bytes.len() - 1], e).is_err());
        }
    }
}

#[test]
fn the_writer_refuses_bodies_the_reader_would_refuse() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, mut w) = new_log(&keys);
    let bad = Body::Write {
        head: head(1),
        first_block: 0,
        mode: 2,
        settled_size: 0,
        entries: vec![vec![0; 32]],
    };
    // Journaled without its payload.
    assert!(w.append(&keys, &mut store, 0, &bad, &[]).is_err());
    let no_heads = Body::Meta {
        op: 1,
        heads: vec![],
        entries: vec![],
        extra: vec![],
    };
    assert!(w.append(&keys, &mut store, 0, &no_heads, &[]).is_err());
    // A jump of the sequence number is for ROLLBACK_ACCEPTED only.
    assert!(
        w.append_at(&keys, &mut store, 5, 0, &Body::Checkpoint { k: 1 }, &[])
            .is_err()
    );
    assert_eq!(w.next_seq(), 1);
}

#[test]
fn rollback_accepted_may_jump_the_sequence() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, mut w) = new_log(&keys);
    w.append(&keys, &mut store, 0, &Body::Checkpoint { k: 1 }, &[])
        .unwrap();
    let accepted = Body::RollbackAccepted {
        k: 9,
        s: 500,
        h: [4; 32],
        disk_s: 1,
        audit_seq: 0,
    };
    w.append_at(&keys, &mut store, 501, 1, &accepted, &[])
        .unwrap();
    w.append(
        &keys,
        &mut store,
        2,
        &Body::Sync {
            object: 1,
            through: 501,
        },
        &[],
    )
    .unwrap();
    w.commit(&mut store).unwrap();
    let r = replay(&keys, &store, start()).unwrap();
    let seqs: Vec<u64> = r.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 501, 502]);
    assert_eq!(r.records[1].body, accepted);
}

#[test]
fn torn_tail_at_every_byte_keeps_exactly_the_whole_records() {
    for algorithm in ALGORITHMS {
        let keys = keys(algorithm);
        let (store, at, _) = sample(&keys);
        let full = store.segments[&0].clone();
        let ends: Vec<u64> = at
            .iter()
            .map(|&(_, o)| o)
            .skip(1)
            .chain([full.len() as u64])
            .collect();
        for cut in SEGMENT_HEADER_LEN..=full.len() {
            let mut torn = store.clone();
            torn.segments.insert(0, full[..cut].to_vec());
            let r = replay(&keys, &torn, start()).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            assert_eq!(r.records.len(), whole, "cut at {cut}");
            let end = if whole == 0 {
                SEGMENT_HEADER_LEN as u64
            } else {
                ends[whole - 1]
            };
            assert_eq!(r.end.offset, end, "cut at {cut}");
            assert_eq!(r.end.torn.is_some(), cut as u64 != end, "cut at {cut}");
            assert_eq!(r.end.next_seq, whole as u64 + 1);
        }
    }
}

#[test]
fn zeroed_tail_is_a_torn_tail() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, at, bodies) = sample(&keys);
    let seg = store.segments.get_mut(&0).unwrap();
    let last = at.last().unwrap().1 as usize;
    seg[last..].fill(0);
    let r = replay(&keys, &store, start()).unwrap();
    assert_eq!(r.records.len(), bodies.len() - 1);
    assert_eq!(r.end.offset, last as u64);
    assert_eq!(r.end.torn, Some("bad record magic"));
}

/// Every byte of every record but the last, changed: an error naming
/// segment 0 and the record's offset (or, for a payload byte, which only
/// the chain covers, the next record's offset). Never a silent cut.
#[test]
fn a_changed_byte_before_the_last_record_is_reported_not_cut() {
    for algorithm in ALGORITHMS {
        let keys = keys(algorithm);
        let (store, at, _) = sample(&keys);
        let full = store.segments[&0].clone();
        let last = at.last().unwrap().1 as usize;
        for byte in SEGMENT_HEADER_LEN..last {
            let mut bad = store.clone();
            bad.segments.get_mut(&0).unwrap()[byte] ^= 0x10;
            let err = replay(&keys, &bad, start()).expect_err(&format!("byte {byte}"));
            let rec = at.iter().rposition(|&(_, o)| o as usize <= byte).unwrap();
            let (segment, offset) = match &err {
                MetaError::Auth(Location::LogRecord {
                    segment, offset, ..
                })
                | MetaError::Corrupt {
                    location:
                        Location::LogRecord {
                            segment, offset, ..
                        },
                    ..
                } => (*segment, *offset),
                other => panic!("byte {byte}: {other}"),
            };
            assert_eq!(segment, 0);
            assert!(
                offset == at[rec].1 || offset == at[rec + 1].1,
                "byte {byte} in record {rec} reported at {offset}"
            );
        }
        assert_eq!(full, store.segments[&0]);
    }
}

#[test]
fn a_changed_body_with_records_after_it_is_an_authentication_failure() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, at, _) = sample(&keys);
    let offset = at[4].1;
    store.segments.get_mut(&0).unwrap()[offset as usize + 40] ^= 1;
    let err = replay(&keys, &store, start()).unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "log record 5 (atrest.log/0000000000000000 at byte {offset}): authentication failed (changed, swapped or rolled back on the disk)"
        )
    );
}

fn record_bytes(store: &MemSegments, at: &[(u64, u64)], i: usize) -> Vec<u8> {
    let seg = &store.segments[&at[i].0];
    let end = at.get(i + 1).map_or(seg.len(), |&(_, o)| o as usize);
    seg[at[i].1 as usize..end].to_vec()
}

fn rebuild(store: &MemSegments, at: &[(u64, u64)], order: &[usize]) -> MemSegments {
    let mut out = store.clone();
    let seg = out.segments.get_mut(&0).unwrap();
    seg.truncate(SEGMENT_HEADER_LEN);
    for &i in order {
        seg.extend_from_slice(&record_bytes(store, at, i));
    }
    out
}

#[test]
fn reordered_dropped_or_repeated_records_are_detected() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (store, at, bodies) = sample(&keys);
    let n = bodies.len();
    let all: Vec<usize> = (0..n).collect();
    assert_eq!(
        replay(&keys, &rebuild(&store, &at, &all), start())
            .unwrap()
            .records
            .len(),
        n
    );
    let mut swapped = all.clone();
    swapped.swap(3, 4);
    let mut dropped = all.clone();
    dropped.remove(5);
    let mut repeated = all.clone();
    repeated.insert(6, 5);
    for order in [swapped, dropped, repeated] {
        let err = replay(&keys, &rebuild(&store, &at, &order), start()).unwrap_err();
        assert!(
            matches!(err, MetaError::Auth(Location::LogRecord { segment: 0, .. })),
            "{order:?}: {err}"
        );
    }
}

/// A log of several segments (small segment size).
fn segmented(keys: &MetaKeys) -> (MemSegments, usize) {
    let (mut store, mut w) = new_log(keys);
    w.set_segment_size(600);
    let mut n = 0;
    for i in 0..40 {
        w.append(
            keys,
            &mut store,
            i,
            &Body::Sync {
                object: i,
                through: i,
            },
            &[],
        )
        .unwrap();
        n += 1;
        if i % 4 == 3 {
            w.commit(&mut store).unwrap();
        }
        if i == 20 {
            w.cut_checkpoint(keys, &mut store, i, 2).unwrap();
            n += 1;
        }
    }
    w.commit(&mut store).unwrap();
    (store, n)
}

#[test]
fn segments_rotate_and_replay_in_order() {
    let keys = keys(ContentAlgorithm::XChaCha20Poly1305);
    let (store, n) = segmented(&keys);
    assert!(store.segments.len() >= 4);
    for seg in store.segments.values() {
        assert!(seg.len() <= 600 || seg.len() < SEGMENT_HEADER_LEN + 200);
    }
    let r = replay(&keys, &store, start()).unwrap();
    assert_eq!(r.records.len(), n);
    assert!(r.records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    // Replay from the checkpoint's position sees only what follows it.
    let cp = r
        .records
        .iter()
        .find(|r| r.body == Body::Checkpoint { k: 2 })
        .unwrap();
    assert_eq!(cp.offset, SEGMENT_HEADER_LEN as u64);
    let before = &r.records[r.records.iter().position(|x| x == cp).unwrap() - 1];
    let mut chain = chain_genesis(&VAULT);
    for rec in &r.records[..r.records.iter().position(|x| x == cp).unwrap()] {
        let seg = &store.segments[&rec.segment];
        let len = RECORD_HEADER_LEN
            + FrameHeader::decode(&seg[rec.offset as usize..], keys.log().overhead())
                .unwrap()
                .sealed_len as usize;
        chain = chain_next(&chain, &seg[rec.offset as usize..rec.offset as usize + len]);
    }
    let from = replay(
        &keys,
        &store,
        Start {
            segment: cp.segment,
            offset: cp.offset,
            next_seq: before.seq + 1,
            chain,
        },
    )
    .unwrap();
    assert_eq!(from.records.len(), n - (before.seq as usize));
    assert_eq!(from.records[0].body, Body::Checkpoint { k: 2 });
}

#[test]
fn dropped_swapped_or_repeated_segments_are_detected() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (store, _) = segmented(&keys);
    let last = *store.segments.keys().last().unwrap();
    // A middle segment dropped.
    let mut dropped = store.clone();
    dropped.segments.remove(&2);
    assert!(replay(&keys, &dropped, start()).is_err());
    // Two segments' contents swapped.
    let mut swapped = store.clone();
    let (a, b) = (store.segments[&1].clone(), store.segments[&2].clone());
    swapped.segments.insert(1, b);
    swapped.segments.insert(2, a);
    assert!(replay(&keys, &swapped, start()).is_err());
    // A segment repeated under the next number (its header says otherwise).
    let mut repeated = store.clone();
    repeated
        .segments
        .insert(last + 1, store.segments[&last].clone());
    assert!(replay(&keys, &repeated, start()).is_err());
    // A header renamed to match, yet its chain does not.
    let mut renamed = store.clone();
    let mut copy = store.segments[&last].clone();
    copy[32..40].copy_from_slice(&(last + 1).to_be_bytes());
    renamed.segments.insert(last + 1, copy);
    let err = replay(&keys, &renamed, start()).unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::Corrupt {
                location: Location::Segment { .. },
                ..
            }
        ),
        "{err}"
    );
    // The last segment dropped entirely is indistinguishable from a log
    // that ended earlier: the superblock's S catches it (§16.13).
    let mut cut = store.clone();
    cut.segments.remove(&last);
    assert!(replay(&keys, &cut, start()).is_ok());
}

#[test]
fn a_torn_middle_segment_is_an_error() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, _) = segmented(&keys);
    let seg = store.segments.get_mut(&1).unwrap();
    seg.truncate(seg.len() - 3);
    let err = replay(&keys, &store, start()).unwrap_err();
    assert!(
        matches!(err, MetaError::Auth(Location::LogRecord { segment: 1, .. })),
        "{err}"
    );
}

/// A group commit torn out of order by a crash (§16.12, question a): an
/// earlier record's pages lost, later ones durable, and no `SYNC` frame
/// after the hole. None of those records was acknowledged, so the prefix
/// ends cleanly at the hole, whatever follows it.
#[test]
fn a_group_torn_out_of_order_is_a_torn_tail() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, mut w) = new_log(&keys);
    let bodies = every_kind(MapEntry::len(keys.algorithm()));
    let bodies: Vec<_> = bodies
        .into_iter()
        .filter(|(b, _)| !matches!(b, Body::Sync { .. }))
        .collect();
    let mut at = Vec::new();
    for (i, (body, payload)) in bodies.iter().enumerate() {
        at.push(
            w.append(&keys, &mut store, i as u64, body, payload)
                .unwrap(),
        );
    }
    // Written, not yet synced: a crash may tear any of it.
    w.write_out(&mut store).unwrap();
    let full = store.segments[&0].clone();
    for hole in 0..bodies.len() - 1 {
        let mut torn = store.clone();
        let start_at = at[hole].1 as usize;
        let end_at = at[hole + 1].1 as usize;
        torn.segments.get_mut(&0).unwrap()[start_at..end_at].fill(0);
        let r = replay(&keys, &torn, start()).unwrap();
        assert_eq!(r.records.len(), hole, "hole at record {hole}");
        assert_eq!(r.end.offset, start_at as u64);
        assert!(r.end.torn.is_some());
    }
    // The same holes before a SYNC frame: those records were acknowledged.
    assert_eq!(
        w.sync(&keys, &mut store, 99, 0).unwrap(),
        bodies.len() as u64
    );
    assert_eq!(w.next_seq(), bodies.len() as u64 + 2);
    for hole in 0..bodies.len() {
        let mut bad = store.clone();
        let start_at = at[hole].1 as usize;
        let end_at = at.get(hole + 1).map_or(full.len(), |a| a.1 as usize);
        bad.segments.get_mut(&0).unwrap()[start_at..end_at].fill(0);
        let err = replay(&keys, &bad, start()).unwrap_err();
        assert!(
            matches!(err, MetaError::Auth(Location::LogRecord { segment: 0, seq, .. }) if seq == hole as u64 + 1),
            "hole at record {hole}: {err}"
        );
    }
}

/// A sync with nothing new does no I/O and writes no second SYNC record.
#[test]
fn a_sync_with_nothing_new_writes_nothing() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, mut w) = new_log(&keys);
    w.append(&keys, &mut store, 1, &Body::Checkpoint { k: 1 }, &[])
        .unwrap();
    assert_eq!(w.durable_through(), 0);
    assert_eq!(w.sync(&keys, &mut store, 2, 0).unwrap(), 1);
    let len = store.segments[&0].len();
    assert_eq!(w.sync(&keys, &mut store, 3, 0).unwrap(), 1);
    assert_eq!(store.segments[&0].len(), len);
    let r = replay(&keys, &store, start()).unwrap();
    assert_eq!(
        r.records.last().unwrap().body,
        Body::Sync {
            object: 0,
            through: 1
        }
    );
}

/// Zeros kept ahead of the records (the mount's setting): a sync writes
/// them past its records, later records overwrite them; replay reads
/// every record and calls the zeros a torn tail; a new segment (rotation
/// or a checkpoint's cut) starts only once the old one is cut to its
/// records, so a segment older than the newest never has any.
#[test]
fn zeros_ahead_are_a_torn_tail_and_cut_from_closed_segments() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, mut w) = new_log(&keys);
    w.set_zeros_ahead(1000);
    w.set_segment_size(1500);
    let mut appended = 0;
    let mut zeros_seen = false;
    for i in 0..40u64 {
        w.append(&keys, &mut store, i, &Body::Checkpoint { k: i }, &[])
            .unwrap();
        appended += 1;
        if i % 3 == 0 {
            w.sync(&keys, &mut store, i, 0).unwrap();
            appended += 1;
            let newest = store.segments.last_key_value().unwrap().1;
            assert!(newest.len() as u64 >= w.offset(), "records all written");
            zeros_seen |= newest.len() as u64 > w.offset();
            assert!(
                newest[w.offset() as usize..].iter().all(|&b| b == 0),
                "nothing but zeros after the records"
            );
        }
        if i == 20 {
            w.cut_checkpoint(&keys, &mut store, i, 2).unwrap();
            appended += 1;
        }
    }
    assert!(zeros_seen, "a sync wrote zeros ahead");
    assert!(store.segments.len() >= 3, "segments rotated");
    let r = replay(&keys, &store, start()).unwrap();
    assert_eq!(r.records.len(), appended);
    let newest = *store.segments.last_key_value().unwrap().0;
    assert_eq!(r.end.segment, newest);
    assert_eq!(r.end.offset, w.offset());
    assert_eq!(
        r.end.torn.is_some(),
        store.segments[&newest].len() as u64 > w.offset(),
        "the zeros, where there are any, are the torn tail"
    );
    // Every segment before the newest ends with its last record: replay
    // from each one's start reads on into the next without a failure.
    for (&number, bytes) in store.segments.range(..newest) {
        let ends: Vec<u64> = r
            .records
            .iter()
            .filter(|x| x.segment == number)
            .map(|x| {
                let seg = &store.segments[&number];
                x.offset
                    + (RECORD_HEADER_LEN
                        + FrameHeader::decode(&seg[x.offset as usize..], keys.log().overhead())
                            .unwrap()
                            .sealed_len as usize) as u64
            })
            .collect();
        assert_eq!(
            ends.last().copied(),
            Some(bytes.len() as u64),
            "segment {number}"
        );
    }
}

#[test]
fn the_writer_resumes_after_a_cut_tail() {
    let keys = keys(ContentAlgorithm::Aes256Gcm);
    let (mut store, at, bodies) = sample(&keys);
    let seg = store.segments.get_mut(&0).unwrap();
    seg.truncate(seg.len() - 5);
    let r = replay(&keys, &store, start()).unwrap();
    assert_eq!(r.records.len(), bodies.len() - 1);
    store
        .segments
        .get_mut(&0)
        .unwrap()
        .truncate(r.end.offset as usize);
    assert_eq!(r.end.offset, at.last().unwrap().1);
    let mut w = LogWriter::resume(&keys, &mut store, &r.end).unwrap();
    w.append(&keys, &mut store, 5, &Body::Checkpoint { k: 8 }, &[])
        .unwrap();
    w.commit(&mut store).unwrap();
    let again = replay(&keys, &store, start()).unwrap();
    assert_eq!(again.records.len(), bodies.len());
    assert_eq!(
        again.records.last().unwrap().body,
        Body::Checkpoint { k: 8 }
    );
}

#[test]
fn another_key_or_vault_does_not_open_the_log() {
    let keys_a = keys(ContentAlgorithm::Aes256Gcm);
    let (store, _, _) = sample(&keys_a);
    let other = MetaKeys::derive(
        &SecretKey::from_bytes([8; 32]),
        VAULT,
        ContentAlgorithm::Aes256Gcm,
    );
    // Only record 1 fails and others follow: an authentication error.
    assert!(replay(&other, &store, start()).unwrap_err().is_auth());
    let other_vault = MetaKeys::derive(
        &SecretKey::from_bytes([7; 32]),
        [1; 16],
        ContentAlgorithm::Aes256Gcm,
    );
    assert!(replay(&other_vault, &store, start()).is_err());
}

fn arb_body(e: usize) -> impl Strategy<Value = (Body, Vec<u8>)> {
    let name = prop::collection::vec(any::<u8>(), 1..40);
    let entry = EntryChange::strategy(name);
    prop_oneof![
        (
            1u8..=12,
            prop::collection::vec(any::<u8>().prop_map(head), 1..=4),
            prop::collection::vec(entry, 0..=4),
            prop::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(op, heads, entries, extra)| (
                Body::Meta {
                    op,
                    heads,
                    entries,
                    extra
                },
                vec![]
            )),
        (any::<u64>(), 1u8..=2, any::<u64>(), 1usize..=4, any::<u8>()).prop_map(
            move |(first_block, mode, settled_size, c, fill)| {
                let payload = if mode == 2 {
                    vec![fill; c * 4096]
                } else {
                    vec![]
                };
                (
                    Body::Write {
                        head: head(fill),
                        first_block,
                        mode,
                        settled_size,
                        entries: vec![vec![fill; e]; c],
                    },
                    payload,
                )
            }
        ),
        (any::<u64>(), 0u8..=2).prop_map(move |(old_size, tail)| {
            let payload = if tail == 2 { vec![9; 4096] } else { vec![] };
            (
                Body::Truncate {
                    head: head(tail),
                    old_size,
                    tail,
                    tail_entry: (tail != 0).then(|| vec![3; e]),
                },
                payload,
            )
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(object, through)| (Body::Sync { object, through }, vec![])),
        any::<u64>().prop_map(|k| (Body::Checkpoint { k }, vec![])),
        (
            1u8..=3,
            prop::collection::vec(any::<u8>(), 0..=255),
            prop::collection::vec(any::<u8>(), 0..=255)
        )
            .prop_map(|(reason, host_id, boot_id)| (
                Body::Mount {
                    reason,
                    host_id,
                    boot_id
                },
                vec![]
            )),
        (any::<u64>(), any::<u8>(), 1u8..=5).prop_map(|(object, x, action)| (
            Body::Repair {
                action,
                object,
                detail: u64::from(x)
            },
            vec![]
        )),
        (1u8..=4, any::<[u8; 32]>(), any::<u64>(), any::<u64>()).prop_map(
            |(action, path_hash, object, inode)| (
                Body::Migrate {
                    action,
                    path_hash,
                    object,
                    inode
                },
                vec![]
            )
        ),
    ]
}

impl EntryChange {
    fn strategy(name: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Self> {
        (1u8..=2, any::<u64>(), any::<u64>(), any::<u8>(), name).prop_map(
            |(action, dir, object, kind, name)| Self {
                action,
                dir,
                object,
                kind,
                name,
            },
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random sequences, random group commits and segment sizes: replay
    /// returns exactly what was appended, and any cut of the last segment
    /// keeps exactly the whole records before the cut.
    #[test]
    fn random_sequences_replay_exactly(
        xchacha in any::<bool>(),
        records in prop::collection::vec((any::<bool>(), any::<u64>()), 1..30),
        bodies_seed in prop::collection::vec(arb_body(32), 30),
        bodies_seed48 in prop::collection::vec(arb_body(48), 30),
        segment_size in 300u64..40_000,
        cut in any::<prop::sample::Index>(),
    ) {
        let algorithm = if xchacha { ContentAlgorithm::XChaCha20Poly1305 } else { ContentAlgorithm::Aes256Gcm };
        let keys = keys(algorithm);
        let bodies = if xchacha { bodies_seed48 } else { bodies_seed };
        let (mut store, mut w) = new_log(&keys);
        w.set_segment_size(segment_size);
        let mut at = Vec::new();
        for (i, (commit, time)) in records.iter().enumerate() {
            let (body, payload) = &bodies[i];
            at.push(w.append(&keys, &mut store, *time, body, payload).unwrap());
            if *commit {
                w.commit(&mut store).unwrap();
            }
        }
        w.commit(&mut store).unwrap();
        let r = replay(&keys, &store, start()).unwrap();
        prop_assert_eq!(r.records.len(), records.len());
        for (i, rec) in r.records.iter().enumerate() {
            prop_assert_eq!(&rec.body, &bodies[i].0);
            prop_assert_eq!(&rec.payload, &bodies[i].1);
            prop_assert_eq!(rec.time, records[i].1);
            prop_assert_eq!((rec.segment, rec.offset, rec.seq), at[i]);
        }
        // Cut the last segment anywhere after its header.
        let last = *store.segments.keys().last().unwrap();
        let len = store.segments[&last].len();
        let cut_at = SEGMENT_HEADER_LEN + cut.index(len - SEGMENT_HEADER_LEN + 1);
        store.segments.get_mut(&last).unwrap().truncate(cut_at);
        let r = replay(&keys, &store, start()).unwrap();
        let whole = at.iter().enumerate().filter(|&(i, &(s, o, _))| {
            let end = at.get(i + 1).filter(|n| n.0 == s).map_or(
                if s == last { len as u64 } else { u64::MAX },
                |n| n.1,
            );
            s < last || (s == last && o < cut_at as u64 && end <= cut_at as u64)
        }).count();
        prop_assert_eq!(r.records.len(), whole);
    }
}
