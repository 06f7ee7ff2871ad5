//! Appending records: each is sealed and chained as it is added, kept in
//! memory until [`LogWriter::commit`] writes the whole group with one
//! append and one sync (group commit). A segment is started at every
//! checkpoint cut and when the current one passes the segment size.

use std::collections::BTreeMap;

use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;
use crate::record::MapEntry;

use super::body::{Body, Kind};
use super::frame::{
    FrameHeader, MAX_BODY, MAX_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, aad,
    chain_next,
};

/// A segment passes this size and the next record starts a new one.
pub const SEGMENT_SIZE: u64 = 64 << 20;

/// Where segments live: `atrest.log/` on a vault, a map in tests.
pub trait SegmentStore {
    /// Segment numbers present, ascending.
    fn list(&self) -> Result<Vec<u64>, MetaError>;
    fn read(&self, segment: u64) -> Result<Vec<u8>, MetaError>;
    /// Creates segment `segment` holding `header` (fails if it exists).
    fn create(&mut self, segment: u64, header: &[u8]) -> Result<(), MetaError>;
    fn append(&mut self, segment: u64, bytes: &[u8]) -> Result<(), MetaError>;
    /// Makes what was appended to `segment` durable.
    fn sync(&mut self, segment: u64) -> Result<(), MetaError>;
}

/// Segments in memory (tests, and the crash simulator later).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemSegments {
    pub segments: BTreeMap<u64, Vec<u8>>,
}

impl SegmentStore for MemSegments {
    fn list(&self) -> Result<Vec<u64>, MetaError> {
        Ok(self.segments.keys().copied().collect())
    }

    fn read(&self, segment: u64) -> Result<Vec<u8>, MetaError> {
        self.segments
            .get(&segment)
            .cloned()
            .ok_or_else(|| MetaError::corrupt(Location::Segment { segment }, "segment missing"))
    }

    fn create(&mut self, segment: u64, header: &[u8]) -> Result<(), MetaError> {
        if self.segments.contains_key(&segment) {
            return Err(MetaError::Inconsistent(format!(
                "log segment {segment:016x} already exists"
            )));
        }
        self.segments.insert(segment, header.to_vec());
        Ok(())
    }

    fn append(&mut self, segment: u64, bytes: &[u8]) -> Result<(), MetaError> {
        self.segments
            .get_mut(&segment)
            .ok_or_else(|| MetaError::corrupt(Location::Segment { segment }, "segment missing"))?
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, _segment: u64) -> Result<(), MetaError> {
        Ok(())
    }
}

/// The appending end of the log.
#[derive(Debug)]
pub struct LogWriter {
    vault_id: [u8; 16],
    segment: u64,
    /// Bytes of the current segment, pending ones included.
    segment_len: u64,
    next_seq: u64,
    chain: [u8; 32],
    pending: Vec<u8>,
    segment_size: u64,
}

impl LogWriter {
    /// Starts segment `segment` whose first record will be `next_seq`,
    /// with `chain` = `h_{next_seq − 1}` (a new vault: segment 0, seq 1,
    /// [`super::chain_genesis`]).
    pub fn create(
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        segment: u64,
        next_seq: u64,
        chain: [u8; 32],
    ) -> Result<Self, MetaError> {
        let mut w = Self {
            vault_id: *keys.vault_id(),
            segment,
            segment_len: 0,
            next_seq,
            chain,
            pending: Vec::new(),
            segment_size: SEGMENT_SIZE,
        };
        w.start_segment(store, segment)?;
        Ok(w)
    }

    /// Continues at the end of a replay (whose tail the caller cut off:
    /// `end.offset` is the new length of segment `end.segment`). A segment
    /// with no durable header is created again.
    pub fn resume(
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        end: &super::ReplayEnd,
    ) -> Result<Self, MetaError> {
        let mut w = Self {
            vault_id: *keys.vault_id(),
            segment: end.segment,
            segment_len: end.offset,
            next_seq: end.next_seq,
            chain: end.chain,
            pending: Vec::new(),
            segment_size: SEGMENT_SIZE,
        };
        if end.offset < SEGMENT_HEADER_LEN as u64 {
            w.start_segment(store, end.segment)?;
        }
        Ok(w)
    }

    /// Sets the size past which a new segment is started (tests).
    pub fn set_segment_size(&mut self, bytes: u64) {
        self.segment_size = bytes;
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// `h` of the last record appended (committed or not).
    pub fn chain(&self) -> [u8; 32] {
        self.chain
    }

    /// Offset in the current segment where the next record goes.
    pub fn offset(&self) -> u64 {
        self.segment_len
    }

    fn start_segment(
        &mut self,
        store: &mut dyn SegmentStore,
        segment: u64,
    ) -> Result<(), MetaError> {
        let header = SegmentHeader {
            vault_id: self.vault_id,
            segment,
            first_seq: self.next_seq,
            chain: self.chain,
        };
        store.create(segment, &header.encode())?;
        store.sync(segment)?;
        self.segment = segment;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Seals, chains and queues one record; returns `(segment, offset,
    /// seq)` of it. Nothing is written before [`Self::commit`].
    pub fn append(
        &mut self,
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        time: u64,
        body: &Body,
        payload: &[u8],
    ) -> Result<(u64, u64, u64), MetaError> {
        let seq = self.next_seq;
        self.append_at(keys, store, seq, time, body, payload)
    }

    /// [`Self::append`] with an explicit sequence number: only a
    /// `ROLLBACK_ACCEPTED` record may jump past the next one (§16.12).
    pub fn append_at(
        &mut self,
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        seq: u64,
        time: u64,
        body: &Body,
        payload: &[u8],
    ) -> Result<(u64, u64, u64), MetaError> {
        let kind = body.kind();
        if seq != self.next_seq && !(kind == Kind::RollbackAccepted && seq > self.next_seq) {
            return Err(MetaError::Inconsistent(format!(
                "log record {seq} appended where {} is next",
                self.next_seq
            )));
        }
        let entry_len = MapEntry::len(keys.algorithm());
        body.validate(entry_len)
            .map_err(|e| MetaError::Inconsistent(e.into()))?;
        if payload.len() != body.payload_len() {
            return Err(MetaError::Inconsistent(format!(
                "{kind:?} record with a payload of {} bytes, {} expected",
                payload.len(),
                body.payload_len()
            )));
        }
        let plain = body.encode(time);
        let sealed_len = plain.len() + keys.log().overhead();
        if sealed_len > MAX_BODY as usize || payload.len() > MAX_PAYLOAD as usize {
            return Err(MetaError::TooLarge(format!(
                "{kind:?} log record of {sealed_len} sealed bytes"
            )));
        }
        let header = FrameHeader {
            sealed_len: sealed_len as u32,
            payload_len: payload.len() as u32,
            seq,
            kind: kind as u8,
        };
        let len = header.record_len() as u64;
        if self.segment_len > SEGMENT_HEADER_LEN as u64
            && self.segment_len + len > self.segment_size
        {
            let next = self.segment + 1;
            self.commit(store)?;
            self.start_segment(store, next)?;
        }
        let start = self.pending.len();
        self.pending.extend_from_slice(&header.encode());
        let at = self.pending.len();
        self.pending.resize(at + sealed_len, 0);
        let aad = aad(
            &self.vault_id,
            seq,
            kind as u8,
            payload.len() as u32,
            &self.chain,
        );
        keys.log().seal_to(&aad, &plain, &mut self.pending[at..]);
        self.pending.extend_from_slice(payload);
        debug_assert_eq!(
            self.pending.len() - start,
            RECORD_HEADER_LEN + sealed_len + payload.len()
        );
        self.chain = chain_next(&self.chain, &self.pending[start..]);
        let offset = self.segment_len;
        self.segment_len += len;
        self.next_seq = seq + 1;
        Ok((self.segment, offset, seq))
    }

    /// Writes every queued record with one append and syncs it.
    pub fn commit(&mut self, store: &mut dyn SegmentStore) -> Result<(), MetaError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        store.append(self.segment, &self.pending)?;
        store.sync(self.segment)?;
        self.pending.clear();
        Ok(())
    }

    /// The cut of a checkpoint (§16.13 step 1–2): commits what is queued,
    /// starts a new segment with `CHECKPOINT(k)` and makes it durable.
    /// Returns the record's `(segment, offset, seq)`, the replay position
    /// of superblock `k`.
    pub fn cut_checkpoint(
        &mut self,
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        time: u64,
        k: u64,
    ) -> Result<(u64, u64, u64), MetaError> {
        self.commit(store)?;
        let next = self.segment + 1;
        self.start_segment(store, next)?;
        let at = self.append(keys, store, time, &Body::Checkpoint { k }, &[])?;
        self.commit(store)?;
        Ok(at)
    }
}
