//! An unlock request's claim (docs/format.md §16.17.2), read before any
//! key exists from whatever the disk holds: the input's first two pages
//! are `atrest.meta`'s superblocks, the rest one log segment, named by the
//! replay segment either page gives. Never a panic; a claim has 1 to 64
//! generations of lineage led by its own superblock's, and a sequence at
//! or past that superblock's. Its superblock is the newest whose lists
//! hold, which need not be the one `status` reads (the newest that parses
//! at all: a page with a garbled list gives way to the other for the
//! claim; the first crash the fuzzer found, kept in corpus-seed/claim/).
#![no_main]

use atrest_meta::log::segment_name;
use atrest_meta::page::PAGE_SIZE;
use atrest_meta::pager::META_FILE;
use atrest_meta::status::{read_claim, read_unverified};
use atrest_meta::{Backing, MemBacking};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(2 * PAGE_SIZE);
    let (meta, segment) = data.split_at(split);
    let backing = MemBacking::new();
    backing.write_at(META_FILE, 0, meta).expect("in memory");
    for page in 0..2 {
        let at = page * PAGE_SIZE + 80;
        if let Some(number) = meta.get(at..at + 8) {
            let number = u64::from_be_bytes(number.try_into().expect("8 bytes"));
            backing
                .write_at(&segment_name(number), 0, segment)
                .expect("in memory");
        }
    }
    for overhead in [28, 40] {
        let claim = read_claim(&backing, overhead);
        let _ = read_unverified(&backing, overhead);
        let Some(claim) = claim else {
            continue;
        };
        assert!((1..=64).contains(&claim.lineage.len()));
        assert_eq!(claim.lineage[0].checkpoint, claim.checkpoint);
        assert!(claim.sequence >= claim.lineage[0].sequence);
    }
});
