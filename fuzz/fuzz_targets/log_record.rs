//! The format 2 log parsers (docs/format.md §16.12) on arbitrary bytes:
//! the segment and record headers (decode → encode is the identity),
//! every record body kind (decode → encode is the identity: one encoding
//! per body), and a whole replay of the input as a segment file, which
//! must never panic and never return a record it could not authenticate.
#![no_main]

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::MetaKeys;
use atrest_meta::log::{
    Body, FrameHeader, Kind, MemSegments, SEGMENT_HEADER_LEN, SegmentHeader, Start, chain_genesis,
    replay,
};
use libfuzzer_sys::fuzz_target;

const VAULT: [u8; 16] = [0x24; 16];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let algorithm = if selector & 1 == 0 {
        ContentAlgorithm::Aes256Gcm
    } else {
        ContentAlgorithm::XChaCha20Poly1305
    };
    let entry_len = atrest_meta::record::MapEntry::len(algorithm);
    if let Ok(header) = SegmentHeader::decode(rest) {
        assert_eq!(&header.encode()[..], &rest[..SEGMENT_HEADER_LEN]);
    }
    let overhead = algorithm.overhead();
    if let Ok(frame) = FrameHeader::decode(rest, overhead) {
        assert_eq!(&frame.encode()[..], &rest[..24]);
    }
    if let Some(kind) = Kind::from_u8((selector >> 1) % 13) {
        if let Ok((time, body)) = Body::decode(kind, rest, entry_len) {
            assert_eq!(body.kind(), kind);
            assert_eq!(body.encode(time), rest, "two encodings of one body");
        }
    }
    // The input as a segment file of a vault whose key the input cannot
    // know: nothing authenticates, so replay returns no record.
    let keys = MetaKeys::derive(&SecretKey::from_bytes([0x42; 32]), VAULT, algorithm);
    let mut store = MemSegments::default();
    store.segments.insert(0, rest.to_vec());
    let start = Start {
        segment: 0,
        offset: SEGMENT_HEADER_LEN as u64,
        next_seq: 1,
        chain: chain_genesis(&VAULT),
    };
    if let Ok(r) = replay(&keys, &store, start) {
        assert!(r.records.is_empty(), "a record authenticated without the key");
    }
});
