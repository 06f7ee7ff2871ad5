//! The local witness file (docs/format.md §16.17.5) on arbitrary bytes:
//! never a panic; accepted only when it is exactly what `encode` writes
//! for its fields with the vault's key; and a witness built from the
//! input's fields round-trips.
#![no_main]

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::MetaKeys;
use atrest_meta::superblock::Generation;
use atrest_meta::witness::{LEN, LocalWitness};
use libfuzzer_sys::fuzz_target;

const VAULT: [u8; 16] = [0x24; 16];

fuzz_target!(|data: &[u8]| {
    let keys = MetaKeys::derive(
        &SecretKey::from_bytes([0x42; 32]),
        VAULT,
        ContentAlgorithm::Aes256Gcm,
    );
    if let Ok(w) = LocalWitness::decode(data, &keys) {
        assert_eq!(&w.encode(&keys)[..], data, "two encodings of one witness");
        assert_eq!(w.vault_id, VAULT);
    }
    let mut fields = [0u8; LEN];
    let n = data.len().min(LEN);
    fields[..n].copy_from_slice(&data[..n]);
    let u64_at = |i: usize| u64::from_be_bytes(fields[i..i + 8].try_into().expect("8 bytes"));
    let w = LocalWitness {
        vault_id: VAULT,
        generation: Generation {
            checkpoint: u64_at(0),
            sequence: u64_at(8),
            chain: fields[16..48].try_into().expect("32 bytes"),
        },
        config_generation: u64_at(48),
        time_ms: u64_at(56),
    };
    let bytes = w.encode(&keys);
    assert_eq!(LocalWitness::decode(&bytes, &keys), Ok(w));
});
