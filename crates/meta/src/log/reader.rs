//! Replaying the durable prefix of the log (§16.12): every record in
//! order from the superblock's replay position, each checked for its
//! sequence number, its chain hash (through the AAD) and its AEAD.
//!
//! The prefix ends at the first record that is short, badly framed, out
//! of sequence or not authentic. That is a clean end (a torn tail) unless
//! the disk proves the record was acknowledged: a segment after it (the
//! writer syncs a segment before it starts the next), or a `SYNC` record
//! frame after it in the same segment whose sequence number is higher
//! (the writer puts a `SYNC` frame on the disk only after the flush of
//! every record before it completed, docs/format.md §16.12). Then the
//! failure is tampering, reported as an authentication error naming the
//! segment, offset and sequence number, never silently cut off. A crash
//! cannot produce that proof, so it never raises a false alarm; an
//! attacker who removes the proof as well gains only what cutting the log
//! there gives him anyway.

use crate::blocks::BlockVerifier;
use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;
use crate::record::MapEntry;

use super::body::{Body, Kind};
use super::frame::{
    FrameError, FrameHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, aad, chain_next,
};
use super::writer::SegmentStore;

/// Where replay starts: the superblock's replay position, its `S + 1`
/// and `h_S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub segment: u64,
    pub offset: u64,
    pub next_seq: u64,
    pub chain: [u8; 32],
}

/// One record of the durable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
    pub time: u64,
    pub body: Body,
    pub payload: Vec<u8>,
}

/// Where the durable prefix ends: recovery cuts segment `segment` to
/// `offset` bytes and appends from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEnd {
    pub segment: u64,
    pub offset: u64,
    pub next_seq: u64,
    pub chain: [u8; 32],
    /// Why the prefix ended before the end of the segment (a torn tail),
    /// `None` when it ended exactly there.
    pub torn: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub records: Vec<Replayed>,
    pub end: ReplayEnd,
}

/// Whether a well-framed `SYNC` record header with a sequence number
/// above `seq` starts anywhere in `bytes` at or after `from`: the proof
/// that the record `seq` was durable (and so not torn by a crash) before
/// it. At `from` itself too: a record dropped just before a `SYNC` leaves
/// that `SYNC` where the record should be.
fn sync_frame_after(bytes: &[u8], from: usize, seq: u64, overhead: usize) -> bool {
    (from..bytes.len()).any(|q| {
        bytes[q..].starts_with(super::frame::RECORD_MAGIC)
            && FrameHeader::decode(&bytes[q..], overhead)
                .is_ok_and(|h| h.kind == Kind::Sync as u8 && h.seq > seq)
    })
}

/// Whether every payload block of `body` opens with its map entry
/// (§16.12 (c)): the payload is outside the record's AEAD, its blocks
/// are authenticated by the entries inside it.
fn payload_verifies(
    body: &Body,
    payload: &[u8],
    algorithm: atrest_core::ContentAlgorithm,
    verifier: &dyn BlockVerifier,
) -> bool {
    let (head, first, entries): (&[u8; crate::record::HEAD_LEN], u64, Vec<&Vec<u8>>) = match body {
        Body::Write {
            head,
            first_block,
            mode: 2,
            entries,
            ..
        } => (head, *first_block, entries.iter().collect()),
        Body::Truncate {
            head,
            tail: 2,
            tail_entry: Some(entry),
            ..
        } => {
            let size = u64::from_be_bytes(head[24..32].try_into().expect("8 bytes"));
            (head, size / 4096, vec![entry])
        }
        _ => return true,
    };
    let file_id: [u8; 16] = head[96..112].try_into().expect("16 bytes");
    entries.iter().enumerate().all(|(i, bytes)| {
        let Some(MapEntry::Sealed(nonce_tag)) = MapEntry::decode(algorithm, bytes) else {
            return false;
        };
        let Some(n) = first.checked_add(i as u64) else {
            return false;
        };
        payload
            .get(i * 4096..(i + 1) * 4096)
            .is_some_and(|block| verifier.verify(&file_id, n, &nonce_tag, block))
    })
}

fn kind_of(kind: u8) -> Kind {
    Kind::from_u8(kind).expect("checked by the frame")
}

/// [`payload_verifies`] on a body not decoded yet: a body that does not
/// decode is left to the caller, which reports it as corruption.
fn payload_verifies_plain(
    kind: Kind,
    plain: &[u8],
    payload: &[u8],
    entry_len: usize,
    algorithm: atrest_core::ContentAlgorithm,
    verifier: &dyn BlockVerifier,
) -> bool {
    if payload.is_empty() {
        return true;
    }
    match Body::decode(kind, plain, entry_len) {
        Ok((_, body)) => {
            body.payload_len() != payload.len()
                || payload_verifies(&body, payload, algorithm, verifier)
        }
        Err(_) => true,
    }
}

/// Replays the log in `store` from `start`, checking frames, sequence,
/// chain and every record's AEAD but not the blocks of journaled
/// payloads, which need the content layer ([`replay_with`]): for tools
/// and tests of the log alone.
pub fn replay(
    keys: &MetaKeys,
    store: &dyn SegmentStore,
    start: Start,
) -> Result<Replay, MetaError> {
    replay_inner(keys, store, start, None)
}

/// Replays the log in `store` from `start`; `verifier` checks every
/// journaled block in a record's payload before the record is accepted
/// (§16.12 (c)): a block that fails is a failure of its record, a torn
/// tail or tampering by the same rules as any other.
pub fn replay_with(
    keys: &MetaKeys,
    store: &dyn SegmentStore,
    start: Start,
    verifier: &dyn BlockVerifier,
) -> Result<Replay, MetaError> {
    replay_inner(keys, store, start, Some(verifier))
}

fn replay_inner(
    keys: &MetaKeys,
    store: &dyn SegmentStore,
    start: Start,
    verifier: Option<&dyn BlockVerifier>,
) -> Result<Replay, MetaError> {
    let overhead = keys.log().overhead();
    let entry_len = MapEntry::len(keys.algorithm());
    let vault_id = *keys.vault_id();
    let segments: Vec<u64> = store
        .list()?
        .into_iter()
        .filter(|&s| s >= start.segment)
        .collect();
    if segments.first() != Some(&start.segment) {
        return Err(MetaError::corrupt(
            Location::Segment {
                segment: start.segment,
            },
            "the segment of the replay position is missing",
        ));
    }
    let mut records = Vec::new();
    let mut next_seq = start.next_seq;
    let mut chain = start.chain;
    for (i, &segment) in segments.iter().enumerate() {
        let seg_loc = Location::Segment { segment };
        let last_segment = i + 1 == segments.len();
        if segment != start.segment + i as u64 {
            return Err(MetaError::corrupt(
                Location::Segment {
                    segment: start.segment + i as u64,
                },
                "segment missing (the next one present is later)",
            ));
        }
        let bytes = store.read(segment)?;
        let header = bytes
            .get(..SEGMENT_HEADER_LEN)
            .ok_or("short segment header")
            .and_then(SegmentHeader::decode);
        if let Err(why) = header
            && last_segment
            && i > 0
            && bytes.len() <= SEGMENT_HEADER_LEN
        {
            // A segment whose creation was not durable (its header is
            // synced before any record goes into it, so it holds none):
            // only the newest may be such.
            return Ok(Replay {
                records,
                end: ReplayEnd {
                    segment,
                    offset: 0,
                    next_seq,
                    chain,
                    torn: Some(why),
                },
            });
        }
        let header = header.map_err(|e| MetaError::corrupt(seg_loc.clone(), e))?;
        if header.vault_id != vault_id {
            return Err(MetaError::corrupt(seg_loc, "segment of another vault"));
        }
        if header.segment != segment {
            return Err(MetaError::corrupt(
                seg_loc,
                "segment number differs from its name",
            ));
        }
        let mut pos = if i == 0 {
            start.offset
        } else {
            SEGMENT_HEADER_LEN as u64
        };
        if pos == SEGMENT_HEADER_LEN as u64
            && (header.first_seq != next_seq || header.chain != chain)
        {
            return Err(MetaError::corrupt(
                seg_loc,
                format!(
                    "segment starts at sequence {} where {next_seq} is next, or with another chain hash \
                     (a segment dropped, swapped or repeated)",
                    header.first_seq
                ),
            ));
        }
        if pos < SEGMENT_HEADER_LEN as u64 || pos > bytes.len() as u64 {
            return Err(MetaError::corrupt(
                seg_loc,
                format!("replay offset {pos} outside the segment"),
            ));
        }
        loop {
            let at = pos as usize;
            if at == bytes.len() {
                break;
            }
            let location = |seq| Location::LogRecord {
                segment,
                offset: pos,
                seq,
            };
            // Why the record at `pos` is not the next one, if it is not.
            let why: &'static str = match FrameHeader::decode(&bytes[at..], overhead) {
                Err(FrameError::Short) => "short record header",
                Err(FrameError::BadMagic) => "bad record magic",
                Err(FrameError::Invalid(why)) => why,
                Ok(h) if at + h.record_len() > bytes.len() => "short record",
                Ok(h)
                    if h.seq != next_seq
                        && !(h.kind == Kind::RollbackAccepted as u8 && h.seq > next_seq) =>
                {
                    "unexpected sequence number"
                }
                Ok(h) => {
                    let record = &bytes[at..at + h.record_len()];
                    let sealed_end = RECORD_HEADER_LEN + h.sealed_len as usize;
                    let aad = aad(&vault_id, h.seq, h.kind, h.payload_len, &chain);
                    match keys
                        .log()
                        .open(&aad, &record[RECORD_HEADER_LEN..sealed_end])
                    {
                        Err(_) => "authentication failed",
                        Ok(plain)
                            if verifier.is_some_and(|verifier| {
                                !payload_verifies_plain(
                                    kind_of(h.kind),
                                    &plain,
                                    &record[sealed_end..],
                                    entry_len,
                                    keys.algorithm(),
                                    verifier,
                                )
                            }) =>
                        {
                            "a journaled block does not open with its map entry"
                        }
                        Ok(plain) => {
                            let kind = Kind::from_u8(h.kind).expect("checked by the frame");
                            let (time, body) = Body::decode(kind, &plain, entry_len)
                                .map_err(|e| MetaError::corrupt(location(h.seq), e))?;
                            if body.payload_len() != h.payload_len as usize {
                                return Err(MetaError::corrupt(
                                    location(h.seq),
                                    "payload length differs from what the body requires",
                                ));
                            }
                            records.push(Replayed {
                                segment,
                                offset: pos,
                                seq: h.seq,
                                time,
                                body,
                                payload: record[sealed_end..].to_vec(),
                            });
                            chain = chain_next(&chain, record);
                            next_seq = h.seq + 1;
                            pos += h.record_len() as u64;
                            continue;
                        }
                    }
                }
            };
            if !last_segment || sync_frame_after(&bytes, at, next_seq, overhead) {
                // Acknowledged, so not torn by a crash: changed, dropped,
                // swapped or reordered on the disk, whatever the failure.
                return Err(MetaError::Auth(location(next_seq)));
            }
            return Ok(Replay {
                records,
                end: ReplayEnd {
                    segment,
                    offset: pos,
                    next_seq,
                    chain,
                    torn: Some(why),
                },
            });
        }
        if last_segment {
            return Ok(Replay {
                records,
                end: ReplayEnd {
                    segment,
                    offset: pos,
                    next_seq,
                    chain,
                    torn: None,
                },
            });
        }
    }
    unreachable!("the replay segment is in the list")
}
