//! `parse_header` and `names::parse_dir_id` on arbitrary bytes, and
//! `RecoveryKey::parse` on arbitrary text; `display`/`parse` round trip for
//! arbitrary 32-byte keys.
#![no_main]

use atrest_core::SecretKey;
use atrest_vault::names::parse_dir_id;
use atrest_vault::{RecoveryKey, RecoveryKeyError, parse_header};
use libfuzzer_sys::fuzz_target;

const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The parser's reading of one character: `None` for a separator.
fn normalize(c: char) -> Option<char> {
    if c == '-' || c.is_whitespace() {
        return None;
    }
    Some(match c.to_ascii_uppercase() {
        'I' | 'L' => '1',
        'O' => '0',
        other => other,
    })
}

fn check_recovery_text(text: &str) {
    let values: Vec<char> = text.chars().filter_map(normalize).collect();
    let first_bad = values.iter().copied().find(|c| !ALPHABET.contains(*c));
    match RecoveryKey::parse(text) {
        Ok(key) => {
            assert_eq!(first_bad, None);
            // One key, one spelling (up to case and separators).
            let canonical: String = key.display().chars().filter(|&c| c != '-').collect();
            let given: String = values.iter().collect();
            assert_eq!(given, canonical, "two spellings of one recovery key");
        }
        Err(RecoveryKeyError::Character(c)) => assert_eq!(Some(c), first_bad),
        Err(RecoveryKeyError::Length(n)) => {
            assert_eq!(first_bad, None);
            assert_eq!(n, values.len());
            assert_ne!(n, 55);
        }
        Err(RecoveryKeyError::Checksum) => {
            assert_eq!(first_bad, None);
            assert_eq!(values.len(), 55);
        }
    }
}

fn check_key_round_trip(raw: [u8; 32]) {
    let key = RecoveryKey::from_secret(SecretKey::from_bytes(raw));
    let shown = key.display();
    assert_eq!(shown.len(), 65, "{shown}");
    let groups: Vec<&str> = shown.split('-').collect();
    assert_eq!(groups.len(), 11, "{shown}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.chars().all(|c| ALPHABET.contains(c))),
        "{shown}"
    );
    for variant in [
        shown.clone(),
        shown.to_lowercase(),
        shown.replace('-', " "),
        shown.replace('-', ""),
        shown.replace('1', "l").replace('0', "o"),
        format!(" \t{}\n", shown.replace('1', "I").replace('0', "O")),
    ] {
        let back = RecoveryKey::parse(&variant).unwrap_or_else(|e| panic!("{variant:?}: {e}"));
        assert_eq!(back.secret().expose(), &raw, "{variant:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let valid = data.len() == 18 && data[..2] == [0, 1];
    match parse_header(data) {
        Ok(id) => {
            assert!(valid);
            assert_eq!(id[..], data[2..]);
        }
        Err(_) => assert!(!valid),
    }
    match parse_dir_id(data) {
        Ok(id) => {
            assert!(valid);
            assert_eq!(id[..], data[2..]);
        }
        Err(_) => assert!(!valid),
    }
    check_recovery_text(&String::from_utf8_lossy(data));
    if let Some(raw) = data.get(..32) {
        check_key_round_trip(raw.try_into().expect("32 bytes"));
    }
});
