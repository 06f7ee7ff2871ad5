//! Known-answer vectors of host secrets and scope bucket keys at rest
//! (`testdata/keyd/`, see its README): walks every file but the README,
//! with no list of names. A
//! vector whose kind or `expect` is unknown, that lacks a field, or that
//! has a field the check never reads, fails.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atrest_core::{SecretKey, labels};
use atrest_keyd::secrets_key::{EpochKey, Purpose, RECORDS, SECRETS, UnwrapError};
use atrest_remote::{HostId, KeyId};

fn dir() -> PathBuf {
    std::env::var_os("ATREST_KEYD_VECTORS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keyd"),
        PathBuf::from,
    )
}

/// One file's `name: value` lines, taken one by one.
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn take(&mut self, name: &str) -> String {
        self.0
            .remove(name)
            .unwrap_or_else(|| panic!("no `{name}` line"))
    }

    fn bytes(&mut self, name: &str) -> Vec<u8> {
        let text = self.take(name);
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(&mut self) -> EpochKey {
        self.key_of(&SECRETS)
    }

    fn key_of(&mut self, purpose: &'static Purpose) -> EpochKey {
        let epoch = self.take("epoch").parse().unwrap();
        EpochKey::of(
            purpose,
            epoch,
            SecretKey::from_slice(&self.bytes("key")).unwrap(),
        )
    }
}

fn unwrapped(
    expect: &str,
    opened: Result<zeroize::Zeroizing<[u8; 32]>, UnwrapError>,
    want: impl FnOnce() -> Vec<u8>,
) {
    match (expect, opened) {
        ("success", Ok(secret)) => assert_eq!(secret.to_vec(), want()),
        ("auth-failure", Err(UnwrapError::Authentication))
        | ("epoch-mismatch", Err(UnwrapError::Epoch { .. }))
        | ("unknown-version", Err(UnwrapError::UnknownVersion(_)))
        | ("length", Err(UnwrapError::Length(_))) => {}
        (expect, got) => panic!("expected {expect}, got {:?}", got.map(|_| "a key")),
    }
}

fn check(fields: &mut Fields) {
    let kind = fields.take("kind");
    let expect = fields.take("expect");
    assert!(!fields.take("comment").is_empty());
    match kind.as_str() {
        "secrets-ratchet" | "records-ratchet" => {
            assert_eq!(expect, "success");
            let (purpose, label) = if kind == "records-ratchet" {
                (&RECORDS, labels::KEYD_RECORDS_WRAP)
            } else {
                (&SECRETS, labels::KEYD_SECRETS_WRAP)
            };
            let key = fields.key_of(purpose);
            let wrap_key =
                SecretKey::from_bytes(*key.expose()).derive(&key.epoch().to_be_bytes(), label);
            assert_eq!(wrap_key.expose().to_vec(), fields.bytes("wrap_key"));
            assert_eq!(key.check().to_vec(), fields.bytes("check"));
            let next = key.next().unwrap();
            assert_eq!(next.epoch(), key.epoch() + 1);
            assert_eq!(next.expose().to_vec(), fields.bytes("next_key"));
        }
        "host-secret" => {
            let key = fields.key();
            let host = HostId::new(fields.take("host_id")).unwrap();
            let key_id = KeyId(fields.bytes("key_id").try_into().unwrap());
            let opened = key.unwrap(&host, &key_id, &fields.bytes("wrapped"));
            unwrapped(&expect, opened, || fields.bytes("secret"));
        }
        "records-origin" => {
            assert_eq!(expect, "success");
            let key = fields.key_of(&RECORDS);
            let master = SecretKey::from_slice(&fields.bytes("master")).unwrap();
            let origin = EpochKey::from_legacy(&RECORDS, &master).unwrap();
            assert_eq!(
                (origin.epoch(), origin.expose()),
                (key.epoch(), key.expose())
            );
        }
        "bucket-key" => {
            let key = fields.key_of(&RECORDS);
            let bucket: u8 = fields.take("bucket").parse().unwrap();
            let opened = key.unwrap_bucket(bucket, &fields.bytes("wrapped"));
            unwrapped(&expect, opened, || fields.bytes("bucket_key"));
        }
        other => panic!("unknown kind {other}"),
    }
    assert!(
        fields.0.is_empty(),
        "fields never read: {:?}",
        fields.0.keys()
    );
}

#[test]
fn every_vector_gives_its_expected_answer() {
    let mut checked = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "README.md" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut fields = Fields(BTreeMap::new());
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, value) = line
                .split_once(": ")
                .unwrap_or((line.trim_end_matches(':'), ""));
            assert!(
                fields.0.insert(name.into(), value.into()).is_none(),
                "{}: `{name}` twice",
                path.display()
            );
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mut fields)));
        assert!(result.is_ok(), "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} vectors");
}
