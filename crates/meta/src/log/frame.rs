//! Byte layouts of §16.12: the 80-byte segment header, the 24-byte record
//! header, the AAD of a record's sealed body and the chain hash.

use atrest_core::labels::domain;

use crate::bytes::{Put, Reader, is_zero};

/// `"ATRESTLG"`, the first bytes of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ATRESTLG";
/// `"ATLR"`, the first bytes of every record.
pub const RECORD_MAGIC: &[u8; 4] = b"ATLR";
pub const SEGMENT_VERSION: u16 = 2;
pub const SEGMENT_HEADER_LEN: usize = 80;
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest sealed body `L` (overhead included).
pub const MAX_BODY: u32 = 131_072;
/// Largest payload `P`.
pub const MAX_PAYLOAD: u32 = 1_048_576;
pub const BLOCK: u32 = 4096;
/// Length of the AAD of a record's sealed body.
pub const AAD_LEN: usize = 81;

/// The header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub vault_id: [u8; 16],
    pub segment: u64,
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    /// Chain hash before its first record, `h_{first_seq − 1}`.
    pub chain: [u8; 32],
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN);
        out.put(SEGMENT_MAGIC)
            .put_u16(SEGMENT_VERSION)
            .put_zeros(6)
            .put(&self.vault_id)
            .put_u64(self.segment)
            .put_u64(self.first_seq)
            .put(&self.chain);
        out.try_into().expect("80 bytes")
    }

    /// Parses a segment header; `Err` names what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(bytes);
        if r.take(8).ok_or("short segment header")? != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if r.u16().ok_or("short segment header")? != SEGMENT_VERSION {
            return Err("unknown segment version");
        }
        if !is_zero(r.take(6).ok_or("short segment header")?) {
            return Err("nonzero reserved bytes in segment header");
        }
        let vault_id = r.array().ok_or("short segment header")?;
        let segment = r.u64().ok_or("short segment header")?;
        let first_seq = r.u64().ok_or("short segment header")?;
        let chain = r.array().ok_or("short segment header")?;
        Ok(Self {
            vault_id,
            segment,
            first_seq,
            chain,
        })
    }
}

/// The fixed 24-byte header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sealed body length `L`.
    pub sealed_len: u32,
    /// Payload length `P`.
    pub payload_len: u32,
    pub seq: u64,
    pub kind: u8,
}

/// Why bytes at a record position are not a record frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 24 bytes.
    Short,
    BadMagic,
    /// Lengths or kind or reserved bytes out of range.
    Invalid(&'static str),
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN);
        out.put(RECORD_MAGIC)
            .put_u32(self.sealed_len)
            .put_u32(self.payload_len)
            .put_u64(self.seq)
            .put_u8(self.kind)
            .put_zeros(3);
        out.try_into().expect("24 bytes")
    }

    /// Parses a record header; `overhead` is the AEAD's (the least `L`).
    pub fn decode(bytes: &[u8], overhead: usize) -> Result<Self, FrameError> {
        let mut r = Reader::new(bytes);
        let magic = r.take(4).ok_or(FrameError::Short)?;
        if magic != RECORD_MAGIC {
            // A short run of a magic's prefix is still "short", not "bad".
            return Err(FrameError::BadMagic);
        }
        let sealed_len = r.u32().ok_or(FrameError::Short)?;
        let payload_len = r.u32().ok_or(FrameError::Short)?;
        let seq = r.u64().ok_or(FrameError::Short)?;
        let kind = r.u8().ok_or(FrameError::Short)?;
        let zero = r.take(3).ok_or(FrameError::Short)?;
        if (sealed_len as usize) < overhead || sealed_len > MAX_BODY {
            return Err(FrameError::Invalid("sealed body length out of range"));
        }
        if payload_len % BLOCK != 0 || payload_len > MAX_PAYLOAD {
            return Err(FrameError::Invalid("payload length out of range"));
        }
        if !(1..=12).contains(&kind) {
            return Err(FrameError::Invalid("unknown record kind"));
        }
        if !is_zero(zero) {
            return Err(FrameError::Invalid(
                "nonzero reserved bytes in record header",
            ));
        }
        Ok(Self {
            sealed_len,
            payload_len,
            seq,
            kind,
        })
    }

    /// Whole record length, `24 + L + P`.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.sealed_len as usize + self.payload_len as usize
    }
}

/// `AAD(seq)` of §16.12, 81 bytes.
pub fn aad(vault_id: &[u8; 16], seq: u64, kind: u8, payload_len: u32, prev: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_LEN);
    out.put(domain::LOG_RECORD)
        .put(vault_id)
        .put_u64(seq)
        .put_u8(kind)
        .put_u32(payload_len)
        .put(prev);
    debug_assert_eq!(out.len(), AAD_LEN);
    out
}

/// `h_0 = SHA-256("atrest log chain v2" ‖ vault_id)`.
pub fn chain_genesis(vault_id: &[u8; 16]) -> [u8; 32] {
    atrest_core::sha256_parts(&[domain::LOG_CHAIN, vault_id])
}

/// `h_seq = SHA-256("atrest log chain v2" ‖ h_{seq−1} ‖ record bytes)`.
pub fn chain_next(prev: &[u8; 32], record: &[u8]) -> [u8; 32] {
    atrest_core::sha256_parts(&[domain::LOG_CHAIN, prev, record])
}
