//! The committed known-answer vectors (testdata/vectors-scoped/) open and
//! compute exactly as recorded, and every tampered copy is refused. The
//! same file is checked by tests/differential/check_scoped.py, an
//! independent implementation.
#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Read};

use atrest_core::SecretKey;
use atrest_scoped::{
    ClientShare, Column, FieldContext, IndexDefinition, KeyVersion, Keyring, Normalize, RecordsKey,
    ScopeId, ScopeKey, ScopeSecret, StreamContext, StreamReader, Table, Wrapped,
};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key32(v: &Value) -> [u8; 32] {
    unhex(v.as_str().unwrap()).try_into().unwrap()
}

fn load() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/vectors-scoped/vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn scope_key(scope: &Value, version: &Value, secret: &Value, share: Option<&Value>) -> ScopeKey {
    let share = share
        .and_then(|s| s.as_str())
        .map(|s| ClientShare::from_bytes(unhex(s).try_into().unwrap()));
    ScopeKey::new(
        ScopeId::new(scope.as_str().unwrap()).unwrap(),
        KeyVersion::new(version.as_u64().unwrap() as u32).unwrap(),
        &ScopeSecret::from_bytes(key32(secret)),
        share.as_ref(),
    )
}

#[test]
fn field_vectors_open_and_tampered_copies_do_not() {
    let doc = load();
    let fields = doc["fields"].as_array().unwrap();
    assert!(fields.len() >= 5);
    for v in fields {
        let ring = Keyring::new(scope_key(
            &v["scope"],
            &v["key_version"],
            &v["scope_secret"],
            Some(&v["client_share"]),
        ));
        let ctx = FieldContext::new(
            v["table"].as_str().unwrap(),
            v["column"].as_str().unwrap(),
            v["row"].as_str().unwrap(),
        )
        .unwrap();
        let text = v["envelope"].as_str().unwrap();
        assert_eq!(
            &ring.decrypt_field(&ctx, text).unwrap()[..],
            &unhex(v["plaintext"].as_str().unwrap())[..]
        );
        let other_row = FieldContext::new(
            v["table"].as_str().unwrap(),
            v["column"].as_str().unwrap(),
            "other",
        )
        .unwrap();
        assert!(ring.decrypt_field(&other_row, text).is_err());
        // A changed character of the base64url body.
        let mut bad: Vec<char> = text.chars().collect();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == 'A' { 'B' } else { 'A' };
        assert!(
            ring.decrypt_field(&ctx, &bad.into_iter().collect::<String>())
                .is_err()
        );
    }
}

#[test]
fn index_vectors_compute_exactly() {
    let doc = load();
    for v in doc["indexes"].as_array().unwrap() {
        let k = scope_key(&v["scope"], &v["key_version"], &v["scope_secret"], None);
        let def = IndexDefinition {
            table: Table::new(v["table"].as_str().unwrap()).unwrap(),
            name: Column::new(v["name"].as_str().unwrap()).unwrap(),
            columns: v["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| Column::new(c.as_str().unwrap()).unwrap())
                .collect(),
            bits: v["bits"].as_u64().unwrap() as u16,
            normalize: v["normalize"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| Normalize::from_name(n.as_str().unwrap()).unwrap())
                .collect(),
        };
        let values: Vec<&str> = v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(
            k.blind_index(&def)
                .unwrap()
                .compute(&values)
                .unwrap()
                .to_hex(),
            v["index"].as_str().unwrap()
        );
    }
}

#[test]
fn stream_vectors_open_and_cut_copies_do_not() {
    let doc = load();
    for v in doc["streams"].as_array().unwrap() {
        let ring = Keyring::new(scope_key(
            &v["scope"],
            &v["key_version"],
            &v["scope_secret"],
            None,
        ));
        let ctx = StreamContext::new(v["table"].as_str().unwrap(), v["object"].as_str().unwrap())
            .unwrap();
        let sealed = unhex(v["stream"].as_str().unwrap());
        let mut out = Vec::new();
        StreamReader::new(&ring, &ctx, Cursor::new(sealed.clone()))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let len = v["plaintext_len"].as_u64().unwrap() as usize;
        assert_eq!(
            out,
            (0..len).map(|i| (i * 31 % 256) as u8).collect::<Vec<u8>>()
        );
        let mut cut = StreamReader::new(
            &ring,
            &ctx,
            Cursor::new(sealed[..sealed.len() - 1].to_vec()),
        );
        assert!(cut.is_err() || cut.as_mut().unwrap().verify().is_err());
    }
}

#[test]
fn wrap_vectors_unwrap() {
    let doc = load();
    for v in doc["wraps"].as_array().unwrap() {
        let records = RecordsKey::from_master(&SecretKey::from_bytes(key32(&v["master_key"])));
        let scope = ScopeId::new(v["scope"].as_str().unwrap()).unwrap();
        let wrapped = Wrapped::from_text(v["wrapped"].as_str().unwrap()).unwrap();
        assert_eq!(
            wrapped.key_version().get() as u64,
            v["key_version"].as_u64().unwrap()
        );
        assert_eq!(
            wrapped.needs_client_share(),
            v["client_share_flag"].as_bool().unwrap()
        );
        let unwrapped = records.unwrap_scope(&scope, &wrapped).unwrap();
        // Equal secrets give equal keys: compare through a field round trip.
        let share = wrapped
            .needs_client_share()
            .then(|| ClientShare::from_bytes([0x11; 32]));
        let ctx = FieldContext::new("t", "c", "r").unwrap();
        let from_vector = ScopeKey::new(
            scope.clone(),
            wrapped.key_version(),
            &ScopeSecret::from_bytes(key32(&v["scope_secret"])),
            share.as_ref(),
        );
        let text = from_vector.encrypt_field(&ctx, b"x").unwrap();
        let unwrapped = Keyring::new(ScopeKey::open(&unwrapped, share.as_ref()).unwrap());
        assert_eq!(&unwrapped.decrypt_field(&ctx, &text).unwrap()[..], b"x");
    }
    for v in doc["groups"].as_array().unwrap() {
        let member = scope_key(
            &v["member"],
            &v["member_key_version"],
            &v["member_secret"],
            Some(&v["member_client_share"]),
        );
        let group = ScopeId::new(v["group"].as_str().unwrap()).unwrap();
        let wrapped = Wrapped::from_text(v["wrapped"].as_str().unwrap()).unwrap();
        assert!(member.unwrap_group(&group, &wrapped).is_ok());
        let no_share = scope_key(
            &v["member"],
            &v["member_key_version"],
            &v["member_secret"],
            None,
        );
        assert!(no_share.unwrap_group(&group, &wrapped).is_err());
    }
}
