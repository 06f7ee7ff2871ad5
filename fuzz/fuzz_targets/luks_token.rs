//! The `atrest` LUKS2 token parser (docs/format.md §19) on arbitrary JSON
//! bytes: it must not panic, and a token it accepts must re-encode to the
//! same fields and never verify under a key the fuzzer cannot know.
#![no_main]

use atrest_core::SecretKey;
use atrest_luks::Binding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(Some(mut binding)) = Binding::from_json(0, &token) else {
        return;
    };
    let key = SecretKey::from_slice(&[7; 32]).expect("32 bytes");
    assert!(
        binding.verify("0b2f1c3e-5d4a-4e8b-9c7d-6f5e4d3c2b1a", &key).is_err(),
        "a fuzzed token verified"
    );
    // Parsing is canonical: what re-encodes (with a new MAC) parses back to
    // the same binding apart from the MAC.
    let again = binding.to_json("0b2f1c3e-5d4a-4e8b-9c7d-6f5e4d3c2b1a", &key);
    let reparsed = Binding::from_json(0, &again).expect("re-encoding parses").expect("atrest");
    assert_eq!(reparsed.keyslot, binding.keyslot);
    assert_eq!(reparsed.binding_id, binding.binding_id);
    assert_eq!(reparsed.authorities, binding.authorities);
});
