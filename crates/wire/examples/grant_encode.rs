//! Micro-benchmark of what keyd does per release to write a grant, and what
//! a host does to read one, in grant versions 1 and 2: a release entry as
//! keyd writes it, in a log of `N` entries (default 100,000: a 17-hash
//! inclusion path), with a consistency proof from half the log when
//! `--consistency` is given. Prints one `RESULT` line per version: answer
//! bytes, ns to encode, ns to decode (and read the proof back).
//!
//! ```text
//! cargo run --release -p atrest-wire --example grant_encode -- [N] [--consistency]
//! ```
//!
//! A sanity check on a quiet machine, not the release benchmark
//! (`bench/keyd-ab.sh`): it leaves out TLS, HTTP and everything else keyd
//! does per release.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use atrest_audit::{
    AuditSigningKey, Entry, EntryHash, EntryKind, MerkleHash, MerkleTree, TreeHeadJson,
    entry_leaf_hash,
};
use atrest_wire::{AuditProof, UnlockReply, read_grant_proof};

const ROUNDS: u32 = 50_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let with_consistency = args.iter().any(|a| a == "--consistency");
    let mut tree = MerkleTree::new();
    for i in 0..n - 1 {
        tree.push(MerkleHash(atrest_core::sha256(&i.to_be_bytes())));
    }
    let mut entry = Entry {
        seq: n,
        timestamp_ms: 1_800_000_000_000,
        kind: EntryKind::Decision,
        actor: "keyd".into(),
        subject: Some("h-3f9a2c41d7e08b65".into()),
        details: r#"{"outcome":"released","boot_id":"6f1c0e8e-3b8a-4c2e-9d7a-2f4b1a0c9e11","keyslot":1,"vault_id":"mV3q0fS2xP8kL1nT6yR4wA","key_id":"Qx8vN2mK5pL7rT1wY4zB3g","nonce":"9rHgwgxexAxzW0mBOJyCiw","source":"192.0.2.7:53124","boot":"same"}"#.into(),
        prev_hash: EntryHash([7; 32]),
        hash: EntryHash::GENESIS,
    };
    entry.hash = entry.compute_hash();
    tree.push(entry_leaf_hash(&entry));
    let key = AuditSigningKey::from_seed(&[1; 32]);
    let head = key.sign_tree_head(n, tree.root(), 1_800_000_000_000);
    let proof = AuditProof {
        inclusion: tree.inclusion_proof(n - 1, n).unwrap(),
        consistency: with_consistency.then(|| tree.consistency_proof(n / 2, n).unwrap()),
        entry,
        tree_head: head,
    };
    let shared = TreeHeadJson::new(&head);

    for version in [1u32, 2] {
        let make = || {
            let (audit, compact) =
                atrest_wire::grant_proof_fields(version, proof.clone(), shared.clone());
            UnlockReply::Granted {
                version,
                response: serde_json::from_value(serde_json::json!(
                    "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY"
                ))
                .unwrap(),
                audit_seq: n,
                checkpoint: None,
                rebind: None,
                boot_ticket: None,
                audit,
                proof: compact,
                witnessed: None,
            }
        };
        let replies: Vec<UnlockReply> = (0..ROUNDS).map(|_| make()).collect();
        // As keyd writes it: one buffer, sized once.
        let started = Instant::now();
        let mut size = 0;
        for reply in &replies {
            let mut body = Vec::with_capacity(4096);
            serde_json::to_writer(&mut body, reply).unwrap();
            size = body.len();
            black_box(body);
        }
        let encode = started.elapsed().as_nanos() / u128::from(ROUNDS);
        let body = serde_json::to_vec(&replies[0]).unwrap();
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let UnlockReply::Granted {
                version,
                audit,
                proof,
                ..
            } = serde_json::from_slice(black_box(&body)).unwrap()
            else {
                unreachable!()
            };
            black_box(read_grant_proof(version, audit, proof).unwrap());
        }
        let decode = started.elapsed().as_nanos() / u128::from(ROUNDS);
        println!(
            "RESULT version={version} log={n} consistency={with_consistency} bytes={size} \
             encode_ns={encode} decode_ns={decode}"
        );
    }
}
