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

/// Zeros the mount keeps written ahead of the log's records
/// ([`LogWriter::set_zeros_ahead`]).
pub const ZEROS_AHEAD: u64 = 4 << 20;

/// Where segments live: `atrest.log/` on a vault ([`super::BackingSegments`]),
/// a map in tests.
pub trait SegmentStore {
    /// Segment numbers present, ascending.
    fn list(&self) -> Result<Vec<u64>, MetaError>;
    fn read(&self, segment: u64) -> Result<Vec<u8>, MetaError>;
    /// Creates segment `segment` holding `header` and makes it and its
    /// directory entry durable (an existing file of that number is
    /// replaced).
    fn create(&mut self, segment: u64, header: &[u8]) -> Result<(), MetaError>;
    /// Writes `bytes` at `offset` of `segment` (no sync).
    fn write(&mut self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), MetaError>;
    /// Makes what was written to `segment` durable.
    fn sync(&mut self, segment: u64) -> Result<(), MetaError>;
    /// Cuts `segment` to `len` bytes, durably (recovery's cut of a torn
    /// tail: nothing of it may come back after a later crash).
    fn cut(&mut self, segment: u64, len: u64) -> Result<(), MetaError>;
    /// Deletes a segment; one already gone is fine.
    fn remove(&mut self, segment: u64) -> Result<(), MetaError>;
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
        self.segments.insert(segment, header.to_vec());
        Ok(())
    }

    fn write(&mut self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), MetaError> {
        let seg = self
            .segments
            .get_mut(&segment)
            .ok_or_else(|| MetaError::corrupt(Location::Segment { segment }, "segment missing"))?;
        let start = usize::try_from(offset).map_err(|_| {
            MetaError::TooLarge(format!("offset {offset} of log segment {segment:016x}"))
        })?;
        let end = start + bytes.len();
        if seg.len() < end {
            seg.resize(end, 0);
        }
        seg[start..end].copy_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, _segment: u64) -> Result<(), MetaError> {
        Ok(())
    }

    fn cut(&mut self, segment: u64, len: u64) -> Result<(), MetaError> {
        if let Some(seg) = self.segments.get_mut(&segment) {
            seg.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        }
        Ok(())
    }

    fn remove(&mut self, segment: u64) -> Result<(), MetaError> {
        self.segments.remove(&segment);
        Ok(())
    }
}

/// A flush of the log [`LogWriter::begin_sync`] asks for: `segment`
/// synced makes every record up to `through` durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    pub segment: u64,
    pub through: u64,
}

/// The appending end of the log.
///
/// Records are sealed and chained by [`Self::append`] and queued;
/// [`Self::write_out`] writes the queue with one `pwrite` (what every
/// operation does before it returns, so `kill -9` loses nothing), and
/// [`Self::commit`] also makes it durable with one sync: however many
/// records were queued or written since the last sync share that flush
/// (group commit). [`Self::sync`] is the `fsync` of §16.15: commit, then
/// a `SYNC` record stating what the flush covered, the proof on the disk
/// that those records were acknowledged (§16.12, torn tail or tampering).
#[derive(Debug)]
pub struct LogWriter {
    vault_id: [u8; 16],
    segment: u64,
    /// Bytes of the current segment, pending ones included.
    segment_len: u64,
    next_seq: u64,
    chain: [u8; 32],
    /// Sealed records not yet written; they start at
    /// `segment_len - pending.len()`.
    pending: Vec<u8>,
    segment_size: u64,
    /// The last record a completed sync covered (0: none yet).
    durable_through: u64,
    /// The sequence number of the last record if it is a `SYNC` written
    /// after its flush (nothing new to make durable then).
    sync_mark: Option<u64>,
    /// Bytes of the current segment on the disk: its records, and zeros
    /// written ahead of them ([`Self::set_zeros_ahead`]).
    zeroed_to: u64,
    /// How far ahead of the records zeros are kept before a flush (0:
    /// none).
    zeros_ahead: u64,
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
        let mut w = Self::new(keys, segment, 0, next_seq, chain);
        w.start_segment(store, segment)?;
        Ok(w)
    }

    fn new(
        keys: &MetaKeys,
        segment: u64,
        segment_len: u64,
        next_seq: u64,
        chain: [u8; 32],
    ) -> Self {
        Self {
            vault_id: *keys.vault_id(),
            segment,
            segment_len,
            next_seq,
            chain,
            pending: Vec::new(),
            segment_size: SEGMENT_SIZE,
            durable_through: next_seq - 1,
            sync_mark: None,
            zeroed_to: segment_len,
            zeros_ahead: 0,
        }
    }

    /// Continues at the end of a replay (whose tail the caller cut off:
    /// `end.offset` is the new length of segment `end.segment`). A segment
    /// with no durable header is created again.
    pub fn resume(
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        end: &super::ReplayEnd,
    ) -> Result<Self, MetaError> {
        let mut w = Self::continuing(keys, end);
        w.ensure_segment(store)?;
        Ok(w)
    }

    /// [`Self::resume`] without touching the disk yet: recovery applies
    /// the replayed records first and cuts the tail after
    /// ([`Self::ensure_segment`]).
    pub fn continuing(keys: &MetaKeys, end: &super::ReplayEnd) -> Self {
        let mut w = Self::new(keys, end.segment, end.offset, end.next_seq, end.chain);
        // What replay read may still be only in the page cache (a killed
        // mount, no power loss): the next commit syncs it before any
        // `SYNC` record may claim it.
        w.durable_through = 0;
        w
    }

    /// Writes the current segment's header again if it has none (its
    /// creation was not durable before a crash).
    pub fn ensure_segment(&mut self, store: &mut dyn SegmentStore) -> Result<(), MetaError> {
        if self.segment_len < SEGMENT_HEADER_LEN as u64 {
            self.start_segment(store, self.segment)?;
        }
        Ok(())
    }

    /// Sets the size past which a new segment is started (tests).
    pub fn set_segment_size(&mut self, bytes: u64) {
        self.segment_size = bytes;
    }

    /// Before each flush, keeps zeros written up to `bytes` past the last
    /// record (at least half as far), so that the records later flushes
    /// cover overwrite bytes the segment already has. On ext4 an
    /// `fdatasync` after an append also makes the new size and blocks
    /// durable (a journal commit; without a journal, the inode and
    /// allocation blocks written) before it flushes the device; after an
    /// overwrite it writes the data and flushes, as format 1's `fsync`
    /// of a file overwritten in place does, for as long as the zeros
    /// last. The zeros read as a torn tail (§16.12): a crash leaves them,
    /// recovery cuts them, and a segment is cut to its records before the
    /// next one starts, so only the newest segment ever holds any.
    pub fn set_zeros_ahead(&mut self, bytes: u64) {
        self.zeros_ahead = bytes;
    }

    /// Writes the zeros [`Self::set_zeros_ahead`] asks for, if the
    /// records came within half of them of the end.
    fn zero_ahead(&mut self, store: &mut dyn SegmentStore) -> Result<(), MetaError> {
        if self.zeros_ahead == 0 || self.zeroed_to >= self.segment_len + self.zeros_ahead / 2 {
            return Ok(());
        }
        let from = self.zeroed_to.max(self.segment_len);
        let to = (self.segment_len + self.zeros_ahead).min(self.segment_size.max(from));
        if to > from {
            store.write(self.segment, from, &vec![0u8; (to - from) as usize])?;
            self.zeroed_to = to;
        }
        Ok(())
    }

    /// Makes the current segment durable as it stays once the next one
    /// exists: its records written and synced, zeros ahead of them cut
    /// off (in a segment older than the newest, anything after the last
    /// record is tampering).
    fn close_segment(&mut self, store: &mut dyn SegmentStore) -> Result<(), MetaError> {
        if self.zeroed_to <= self.segment_len {
            return self.commit(store);
        }
        self.write_out(store)?;
        store.cut(self.segment, self.segment_len)?;
        self.zeroed_to = self.segment_len;
        self.durable_through = self.next_seq - 1;
        Ok(())
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

    /// The last record a completed sync made durable.
    pub fn durable_through(&self) -> u64 {
        self.durable_through
    }

    fn start_segment(
        &mut self,
        store: &mut dyn SegmentStore,
        segment: u64,
    ) -> Result<(), MetaError> {
        debug_assert!(self.pending.is_empty());
        let header = SegmentHeader {
            vault_id: self.vault_id,
            segment,
            first_seq: self.next_seq,
            chain: self.chain,
        };
        store.create(segment, &header.encode())?;
        self.segment = segment;
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        self.zeroed_to = self.segment_len;
        Ok(())
    }

    /// Seals, chains and queues one record; returns `(segment, offset,
    /// seq)` of it. Nothing is written before [`Self::write_out`].
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
            // The old segment is made durable before the next exists, so
            // a failure in any segment but the newest is never a crash.
            let next = self.segment + 1;
            self.close_segment(store)?;
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
        self.sync_mark = None;
        Ok((self.segment, offset, seq))
    }

    /// Writes every queued record with one write, no sync.
    pub fn write_out(&mut self, store: &mut dyn SegmentStore) -> Result<(), MetaError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let offset = self.segment_len - self.pending.len() as u64;
        store.write(self.segment, offset, &self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Writes every queued record and makes everything written durable
    /// with one sync.
    pub fn commit(&mut self, store: &mut dyn SegmentStore) -> Result<(), MetaError> {
        self.write_out(store)?;
        if self.durable_through + 1 < self.next_seq {
            store.sync(self.segment)?;
            self.durable_through = self.next_seq - 1;
        }
        Ok(())
    }

    /// `fsync` of the log (§16.15): every record appended so far becomes
    /// durable with one sync, then a `SYNC(object, through)` record is
    /// written (not synced) right after the last of them. Its sequence
    /// number is `through + 1`, which is what lets replay tell a torn
    /// tail from a changed record (§16.12): a `SYNC` frame is only ever
    /// on the disk after the flush it states completed. Returns the
    /// sequence number the flush covered; a call with nothing new to make
    /// durable does no I/O.
    pub fn sync(
        &mut self,
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        time: u64,
        object: u64,
    ) -> Result<u64, MetaError> {
        let Some(flush) = self.begin_sync(store)? else {
            return Ok(self.durable_through);
        };
        store.sync(flush.segment)?;
        self.end_sync(keys, store, time, object, flush)
    }

    /// The first half of [`Self::sync`], for callers that flush without
    /// holding the writer (so that others append meanwhile, and share the
    /// flush): writes what is queued, and says which segment to flush
    /// for which records (`None`: every record is durable already).
    /// Every record up to `through` is in that segment or in an older
    /// one, which was synced before the next was created.
    pub fn begin_sync(&mut self, store: &mut dyn SegmentStore) -> Result<Option<Flush>, MetaError> {
        let last = self.next_seq - 1;
        if self.durable_through == last
            || (self.sync_mark == Some(last) && self.durable_through + 1 == last)
        {
            return Ok(None);
        }
        self.write_out(store)?;
        self.zero_ahead(store)?;
        Ok(Some(Flush {
            segment: self.segment,
            through: last,
        }))
    }

    /// The last half of [`Self::sync`], once the flush `flush` names
    /// completed (a segment already gone was retired by a checkpoint,
    /// which synced it first): records up to `flush.through` are durable,
    /// and if the last of them is still the last record, a `SYNC(object,
    /// through)` follows it (written, not flushed; §16.12: a `SYNC` only
    /// ever directly follows the records its flush covered). Returns the
    /// last durable record.
    pub fn end_sync(
        &mut self,
        keys: &MetaKeys,
        store: &mut dyn SegmentStore,
        time: u64,
        object: u64,
        flush: Flush,
    ) -> Result<u64, MetaError> {
        self.durable_through = self.durable_through.max(flush.through);
        if self.next_seq - 1 == flush.through {
            let through = flush.through;
            let (_, _, seq) =
                self.append(keys, store, time, &Body::Sync { object, through }, &[])?;
            self.write_out(store)?;
            self.sync_mark = Some(seq);
        }
        Ok(self.durable_through)
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
        self.close_segment(store)?;
        let next = self.segment + 1;
        self.start_segment(store, next)?;
        let at = self.append(keys, store, time, &Body::Checkpoint { k }, &[])?;
        self.commit(store)?;
        Ok(at)
    }
}
