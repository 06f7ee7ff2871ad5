//! Writes testdata/vectors-scoped/vectors.json: known-answer vectors for
//! every envelope of atrest-scoped (docs/format.md §17.7), checked by
//! `cargo test -p atrest-scoped --test vectors` and independently by
//! tests/differential/check_scoped.py. Keys are fixed; nonces and salts are
//! random, so a new run gives new (equally valid) ciphertexts: regenerate
//! only when the format version changes, and keep the old file.
//!
//! cargo run -p atrest-scoped --example make_vectors > testdata/vectors-scoped/vectors.json

use std::io::Write;

use atrest_core::SecretKey;
use atrest_scoped::{
    ClientShare, Column, FieldContext, IndexDefinition, KeyVersion, Normalize, RecordsKey, ScopeId,
    ScopeKey, ScopeSecret, StreamContext, StreamWriter, Table, UnwrappedScope,
};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(byte: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = byte.wrapping_add(i as u8);
    }
    k
}

/// Scope, key version, client share, (table, column, row), plaintext.
type FieldCase = (
    &'static str,
    u32,
    Option<[u8; 32]>,
    (&'static str, &'static str, &'static str),
    &'static [u8],
);
/// Scope, bits, columns, normalisation steps, values.
type IndexCase = (
    &'static str,
    u16,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut fields = Vec::new();
    let cases: [FieldCase; 5] = [
        (
            "user:42",
            1,
            None,
            ("users", "email", "row-1"),
            b"alice@example.org",
        ),
        ("user:42", 3, None, ("users", "email", "row-1"), b""),
        (
            "org:acme",
            1,
            Some(key(0x90)),
            ("invoices", "amount", "inv-2026-001"),
            b"1234.50 EUR",
        ),
        (
            "\u{fc}ser:\u{e9}",
            7,
            None,
            ("t", "c", "r"),
            &[0u8, 1, 2, 255, 254, 253, 128],
        ),
        (
            "user:1",
            1,
            Some(key(0x33)),
            ("profile", "bio", "u1"),
            &[0x5a; 300],
        ),
    ];
    for (scope, version, share, (table, column, row), plain) in cases {
        let secret = key(version as u8 * 16 + scope.len() as u8);
        let share_key = share.map(ClientShare::from_bytes);
        let k = ScopeKey::new(
            ScopeId::new(scope)?,
            KeyVersion::new(version)?,
            &ScopeSecret::from_bytes(secret),
            share_key.as_ref(),
        );
        let ctx = FieldContext::new(table, column, row)?;
        fields.push(json!({
            "scope": scope, "key_version": version, "scope_secret": hex(&secret),
            "client_share": share.map(|s| hex(&s)),
            "table": table, "column": column, "row": row,
            "plaintext": hex(plain),
            "envelope": k.encrypt_field(&ctx, plain)?,
        }));
    }

    let mut indexes = Vec::new();
    let index_cases: [IndexCase; 6] = [
        (
            "app:users",
            32,
            &["email"],
            &["trim", "lowercase"],
            &["  Alice@Example.ORG "],
        ),
        (
            "app:users",
            12,
            &["email"],
            &["trim", "lowercase"],
            &["bob@example.org"],
        ),
        (
            "org:acme",
            256,
            &["first", "last"],
            &[],
            &["Ada", "Lovelace"],
        ),
        (
            "org:acme",
            16,
            &["phone"],
            &["digits-only"],
            &["+49 (30) 1234-567"],
        ),
        (
            "org:\u{e9}t\u{e9}",
            40,
            &["name"],
            &["remove-whitespace", "lowercase"],
            &["\u{c9}MILE\u{a0}Zola \u{2003}\u{c0}"],
        ),
        (
            "user:\u{e9}",
            1,
            &["city"],
            &["collapse-whitespace", "lowercase"],
            &["  New   York "],
        ),
    ];
    for (scope, bits, columns, normalize, values) in index_cases {
        let secret = key(bits as u8);
        let k = ScopeKey::new(
            ScopeId::new(scope)?,
            KeyVersion::FIRST,
            &ScopeSecret::from_bytes(secret),
            None,
        );
        let def = IndexDefinition {
            table: Table::new("people")?,
            name: Column::new("idx")?,
            columns: columns
                .iter()
                .map(|c| Column::new(*c))
                .collect::<Result<_, _>>()?,
            bits,
            normalize: normalize
                .iter()
                .map(|n| Normalize::from_name(n))
                .collect::<Result<_, _>>()?,
        };
        let value = k.blind_index(&def)?.compute(values)?;
        indexes.push(json!({
            "scope": scope, "key_version": 1, "scope_secret": hex(&secret),
            "table": "people", "name": "idx", "columns": columns, "bits": bits,
            "normalize": normalize, "normalize_ids": def.normalize.iter().map(|n| n.id()).collect::<Vec<_>>(),
            "values": values, "index": value.to_hex(),
        }));
    }

    let mut streams = Vec::new();
    for (len, log2) in [(0usize, 12u8), (5000, 12), (8192, 12), (65_540, 16)] {
        let secret = key(0x40 + log2);
        let k = ScopeKey::new(
            ScopeId::new("user:42")?,
            KeyVersion::new(2)?,
            &ScopeSecret::from_bytes(secret),
            None,
        );
        let ctx = StreamContext::new("uploads", "file-7")?;
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
        let mut w = StreamWriter::new(&k, &ctx, Some(log2), Vec::new())?;
        w.write_all(&plain)?;
        let sealed = w.finish()?;
        streams.push(json!({
            "scope": "user:42", "key_version": 2, "scope_secret": hex(&secret),
            "table": "uploads", "object": "file-7", "plaintext_len": len,
            "plaintext_pattern": "byte i = (i * 31) mod 256", "stream": hex(&sealed),
        }));
    }

    let mut wraps = Vec::new();
    for (scope, version, share) in [("user:42", 1u32, false), ("org:acme", 4, true)] {
        let master = key(0x10);
        let secret = key(0xa0 + version as u8);
        let records = RecordsKey::from_master(&SecretKey::from_bytes(master));
        let w = records.wrap_scope(
            &ScopeId::new(scope)?,
            KeyVersion::new(version)?,
            share,
            &ScopeSecret::from_bytes(secret),
        );
        wraps.push(json!({
            "master_key": hex(&master), "scope": scope, "key_version": version, "client_share_flag": share,
            "scope_secret": hex(&secret), "wrapped": w.to_text(),
        }));
    }

    let member_secret = key(0x70);
    let share = key(0x71);
    let group_secret = key(0x72);
    let member = ScopeKey::new(
        ScopeId::new("user:alice")?,
        KeyVersion::new(2)?,
        &ScopeSecret::from_bytes(member_secret),
        Some(&ClientShare::from_bytes(share)),
    );
    let gw = member.wrap_group(&UnwrappedScope::from_secret(
        ScopeId::new("group:finance")?,
        KeyVersion::new(5)?,
        false,
        ScopeSecret::from_bytes(group_secret),
    ));
    let groups = vec![json!({
        "member": "user:alice", "member_key_version": 2, "member_secret": hex(&member_secret),
        "member_client_share": hex(&share), "group": "group:finance", "group_key_version": 5,
        "group_secret": hex(&group_secret), "wrapped": gw.to_text(),
    })];

    let doc: Value = json!({
        "format": "atrest-scoped vectors", "version": 1,
        "fields": fields, "indexes": indexes, "streams": streams, "wraps": wraps, "groups": groups,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
