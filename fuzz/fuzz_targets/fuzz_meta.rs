//! The format 2 metadata parsers (docs/format.md §16) on arbitrary bytes:
//! object records (decode, and decode → encode gives the same bytes: one
//! encoding per record), record heads and head changes, page references,
//! superblock pages (never accepted without their MAC), and sealed pages
//! whose header and items come from the input (accepted exactly when they
//! are what the referrer expects; a page moved to another number never).
#![no_main]

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::MetaKeys;
use atrest_meta::page::{self, Expect, PageHeader, PageKind, PageRef, REF_LEN};
use atrest_meta::record::{HEAD_LEN, HeadChange, ObjectHead, ObjectRecord, RECORD_LEN};
use atrest_meta::superblock::Superblock;
use libfuzzer_sys::fuzz_target;

fn keys(algorithm: ContentAlgorithm) -> MetaKeys {
    MetaKeys::derive(&SecretKey::from_bytes([0x42; 32]), [0x24; 16], algorithm)
}

fn check_records(algorithm: ContentAlgorithm, data: &[u8]) {
    let mut bytes = [0u8; RECORD_LEN];
    let n = data.len().min(RECORD_LEN);
    bytes[..n].copy_from_slice(&data[..n]);
    if let Ok(Some(record)) = ObjectRecord::decode(algorithm, &bytes) {
        assert_eq!(
            record.encode(algorithm),
            bytes,
            "two encodings of one record"
        );
    }
    let head: &[u8; HEAD_LEN] = bytes[..HEAD_LEN].try_into().expect("a head");
    if let Ok(decoded) = ObjectHead::decode(head) {
        assert_eq!(&decoded.encode(), head, "two encodings of one head");
    }
    if let Ok(change) = HeadChange::decode(head) {
        assert_eq!(&change.encode(), head, "two encodings of one head change");
    }
    let reference: &[u8; REF_LEN] = bytes[..REF_LEN].try_into().expect("40 bytes");
    if let Some(decoded) = PageRef::decode(reference) {
        assert_eq!(
            &decoded.encode(),
            reference,
            "two encodings of one reference"
        );
    }
}

fn check_superblock(keys: &MetaKeys, data: &[u8]) {
    let mut bytes = [0u8; page::PAGE_SIZE];
    let n = data.len().min(page::PAGE_SIZE);
    bytes[..n].copy_from_slice(&data[..n]);
    for index in [0, 1] {
        assert!(
            Superblock::open(keys, index, &bytes).is_err(),
            "a superblock accepted without its MAC"
        );
    }
}

fn check_page(keys: &MetaKeys, data: &[u8]) {
    let [
        kind_bits,
        level,
        count_hi,
        count_lo,
        owner_bits,
        expect_bits,
        rest @ ..,
    ] = data
    else {
        return;
    };
    let kind_index = usize::from(*kind_bits) % PageKind::ALL.len();
    let kind = PageKind::ALL[kind_index];
    let header = PageHeader {
        kind,
        level: *level % 4,
        count: u16::from_be_bytes([*count_hi, *count_lo]),
        owner: u64::from(*owner_bits % 3),
    };
    let items = &rest[..rest.len().min(page::item_space(keys))];
    let number = 2 + u64::from(*expect_bits >> 6);
    let sealed = page::seal(keys, number, &header, items);
    let expect = Expect {
        kind: PageKind::ALL[usize::from(*expect_bits & 1) * kind_index],
        owner: u64::from((*expect_bits >> 1) % 3),
        level: ((*expect_bits >> 3) & 1 == 1).then_some((*expect_bits >> 4) % 4),
    };
    let reference = PageRef::to_sealed(number, &sealed);
    let valid_level =
        (header.level > 0) == kind.is_index() && expect.level.is_none_or(|l| l == header.level);
    let matches = expect.kind == kind && expect.owner == header.owner && valid_level;
    match page::open(keys, &reference, &sealed, expect) {
        Ok(open) => {
            assert!(matches, "a page accepted against what its referrer expects");
            assert_eq!(open.header, header);
            assert_eq!(&open.items[..items.len()], items);
            assert!(open.items[items.len()..].iter().all(|&b| b == 0));
        }
        Err(_) => assert!(!matches, "a well-sealed, expected page refused"),
    }
    // The same sealed bytes under another page number: never.
    let moved = PageRef::to_sealed(number + 4, &sealed);
    assert!(
        page::open(keys, &moved, &sealed, expect).is_err(),
        "a page moved to another number accepted"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let algorithm = if selector & 1 == 0 {
        ContentAlgorithm::Aes256Gcm
    } else {
        ContentAlgorithm::XChaCha20Poly1305
    };
    check_records(algorithm, rest);
    let keys = keys(algorithm);
    check_superblock(&keys, rest);
    check_page(&keys, rest);
});
