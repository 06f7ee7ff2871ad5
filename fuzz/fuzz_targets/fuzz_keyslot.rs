//! The keyslot record parser, reached directly: the input is the keyslot
//! section of the config body (count byte, then records), placed after a
//! valid magic, version, length and fixed fields, with a MAC after it.
//! Same invariants as `fuzz_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = atrest_fuzz::config_with_slot_section(data);
    if let Some(cfg) = atrest_fuzz::decode_and_check(&bytes) {
        assert_eq!(cfg.vault_id, [0x42; 16]);
        assert_eq!(cfg.created_unix, 1_700_000_000);
        assert_eq!(cfg.generation, 7);
        assert_eq!(usize::from(data[0]), cfg.keyslots.len());
    }
});
