//! `VaultConfig::decode` on arbitrary bytes: never panics; whatever it
//! accepts has 1..=32 keyslots with unique ids, labels of at most 64 bytes,
//! in-range Argon2 parameters, and re-encodes to exactly the input (the
//! format has one encoding per config).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    atrest_fuzz::decode_and_check(data);
});
