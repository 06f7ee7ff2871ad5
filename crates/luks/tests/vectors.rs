//! Every file in testdata/luks/ (written by `examples/make_luks_vectors.rs`),
//! checked through the public API: parse, MAC, passphrase, re-encoding.
//! tests/differential/check_luks.py checks the same files without atrest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use atrest_core::SecretKey;
use atrest_luks::{Binding, LuksError};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fields(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line
            .split_once(": ")
            .unwrap_or((line.trim_end_matches(':'), ""));
        assert!(
            out.insert(k.to_owned(), v.to_owned()).is_none(),
            "{k} twice"
        );
    }
    out
}

#[test]
fn every_luks_token_vector() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/luks");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "README.md") {
            continue;
        }
        let f = fields(&std::fs::read_to_string(&path).unwrap());
        let name = path.display();
        assert_eq!(f["kind"], "luks-token", "{name}");
        let token: serde_json::Value = serde_json::from_str(&f["token"]).unwrap();
        let token_id: u32 = f["token_id"].parse().unwrap();
        let secret = SecretKey::from_slice(&unhex(&f["secret"])).unwrap();
        let parsed = Binding::from_json(token_id, &token);
        match f["expect"].as_str() {
            "success" => {
                let mut binding = parsed.unwrap().expect("an atrest token");
                binding.verify(&f["uuid"], &secret).unwrap();
                assert_eq!(
                    binding.passphrase(&secret).as_slice(),
                    &unhex(&f["passphrase"])[..],
                    "{name}"
                );
                // Re-encoding gives the same token: one encoding per binding.
                assert_eq!(binding.to_json(&f["uuid"], &secret), token, "{name}");
                // And another secret does not verify it.
                assert!(binding.verify(&f["uuid"], &SecretKey::random()).is_err());
            }
            "tampered" => {
                let binding = parsed.unwrap().expect("an atrest token");
                assert!(
                    matches!(
                        binding.verify(&f["uuid"], &secret),
                        Err(LuksError::TokenTampered { .. })
                    ),
                    "{name}"
                );
            }
            "parse-error" => assert!(
                matches!(parsed, Err(LuksError::BadToken { .. })),
                "{name}: {parsed:?}"
            ),
            other => panic!("{name}: unknown expect {other}"),
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} vectors in {}", dir.display());
}

#[test]
fn tokens_of_other_tools_are_left_alone() {
    let clevis = serde_json::json!({"type": "clevis", "keyslots": ["1"], "jwe": {}});
    assert!(Binding::from_json(0, &clevis).unwrap().is_none());
}
