//! `atrest.migrate/times` (docs/format.md §16.19) on any bytes:
//! `parse_times` never panics, keeps only records that check, and what it
//! keeps encodes back to records that parse to the same times.
#![no_main]

use atrest_vault::migrate::{TIMES_RECORD, encode_times, parse_times};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let known = parse_times(data);
    assert!(known.len() <= data.len() / TIMES_RECORD);
    let mut again = Vec::new();
    for (&id, &times) in &known {
        assert_ne!(id, 0);
        again.extend_from_slice(&encode_times(id, times));
    }
    assert_eq!(parse_times(&again), known);
});
