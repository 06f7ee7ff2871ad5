//! Writes the local witness vectors (docs/format.md §16.17.5), replacing
//! `testdata/vectors-v2/witness-*.json`: each the key, the fields, the
//! file's 122 bytes and what reading them must give. The MAC is
//! deterministic, so the files change only when the format does. Checked
//! by `cargo test -p atrest-meta --test log_vectors` and, from §16.17.5's
//! byte table alone, by `tests/differential/check_vectors_v2.py`.
//!
//!     cargo run -p atrest-meta --example make_witness_vectors

use std::fmt::Write as _;
use std::path::PathBuf;

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::MetaKeys;
use atrest_meta::superblock::Generation;
use atrest_meta::witness::{LEN, LocalWitness};

const MASTER: [u8; 32] = [0x57; 32];
const VAULT: [u8; 16] = [
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
];

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors-v2");
    let keys = MetaKeys::derive(
        &SecretKey::from_bytes(MASTER),
        VAULT,
        ContentAlgorithm::Aes256Gcm,
    );
    let witness = LocalWitness {
        vault_id: VAULT,
        generation: Generation {
            checkpoint: 815,
            sequence: 1_204_233,
            chain: *b"chain hash h_S of checkpoint 815",
        },
        config_generation: 7,
        time_ms: 1_800_000_000_123,
    };
    let valid = witness.encode(&keys);
    let mut flipped = valid;
    flipped[LEN - 1] ^= 0x01;
    let mut older = valid;
    older[41] ^= 0x01; // the last byte of S: a different generation
    let other_vault = LocalWitness {
        vault_id: [0xaa; 16],
        ..witness
    }
    .encode(&keys);
    let mut version = valid;
    version[9] = 2;
    let cases: [(&str, &str, &[u8], &str); 5] = [
        ("valid", "the witness of checkpoint 815", &valid, "ok"),
        (
            "flipped-mac",
            "the last byte of the MAC flipped",
            &flipped,
            "mac",
        ),
        (
            "changed-sequence",
            "a sequence number edited without the key",
            &older,
            "mac",
        ),
        (
            "other-vault",
            "MAC'd with this vault's key but naming another vault id",
            &other_vault,
            "other-vault",
        ),
        (
            "version-2",
            "version 2, which no build knows (checked before the MAC)",
            &version,
            "version",
        ),
    ];
    for (name, comment, bytes, expect) in cases {
        let json = format!(
            "{{\n  \"kind\": \"local-witness\",\n  \"comment\": \"{comment}\",\n  \"master_key\": \"{}\",\n  \"vault_id\": \"{}\",\n  \"witness_key_info\": \"atrest v2 witness mac\",\n  \"checkpoint\": {},\n  \"sequence\": {},\n  \"chain\": \"{}\",\n  \"config_generation\": {},\n  \"time_ms\": {},\n  \"file\": \"{}\",\n  \"expect\": \"{expect}\"\n}}\n",
            hex(&MASTER),
            hex(&VAULT),
            witness.generation.checkpoint,
            witness.generation.sequence,
            hex(&witness.generation.chain),
            witness.config_generation,
            witness.time_ms,
            hex(bytes),
        );
        std::fs::write(dir.join(format!("witness-{name}.json")), json).expect("write vector");
    }
}
