//! Writes the grant vectors into `testdata/grant/` (or the directory given
//! as the first argument), replacing the vector files there: whole `200
//! granted` answers of versions 1 and 2, with what the host knows (its
//! audit key, host id, request nonce, kept head) and what it must conclude.
//! Every input is fixed, so a rerun writes identical files: a change
//! without a deliberate format change is a bug. `testdata/grant/README.md`
//! describes the files.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use atrest_audit::{
    AuditSigningKey, Entry, EntryHash, EntryKind, MerkleTree, TreeHead, TreeHeadJson,
    entry_leaf_hash,
};
use atrest_wire::AuditProof;
use serde_json::{Value, json};

const HOST: &str = "h-web-1";
const NONCE: [u8; 16] = [0x4e; 16];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A log of entries about other hosts, `salt` telling two logs apart.
struct Log {
    key: AuditSigningKey,
    entries: Vec<Entry>,
    tree: MerkleTree,
}

impl Log {
    fn new(others: u64, salt: &str) -> Self {
        let mut log = Self {
            key: AuditSigningKey::from_seed(&[0x11; 32]),
            entries: Vec::new(),
            tree: MerkleTree::new(),
        };
        for i in 0..others {
            log.push("h-db-2", format!(r#"{{"outcome":"denied","n":{i}{salt}}}"#));
        }
        log
    }

    fn push(&mut self, subject: &str, details: String) -> Entry {
        let prev = self.entries.last().map_or(EntryHash::GENESIS, |e| e.hash);
        let seq = self.entries.len() as u64 + 1;
        let mut entry = Entry {
            seq,
            timestamp_ms: 1_800_000_000_000 + seq * 1000,
            kind: EntryKind::Decision,
            actor: "keyd".into(),
            subject: Some(subject.into()),
            details,
            prev_hash: prev,
            hash: EntryHash::GENESIS,
        };
        entry.hash = entry.compute_hash();
        self.tree.push(entry_leaf_hash(&entry));
        self.entries.push(entry.clone());
        entry
    }

    fn head_at(&self, size: u64) -> TreeHead {
        let root = self.tree.root_at(size).expect("size");
        self.key
            .sign_tree_head(size, root, 1_800_000_000_000 + size * 1000)
    }

    /// keyd's release of `nonce` to `host`, and its proof for a host that
    /// kept a head of `known` entries (0: none).
    fn release(&mut self, host: &str, nonce: &[u8; 16], known: u64) -> AuditProof {
        // As keyd writes them: not in serde_json's key order.
        let details = format!(
            r#"{{"outcome":"released","boot_id":"b-1","keyslot":1,"nonce":"{}","source":"192.0.2.7","boot":"same"}}"#,
            atrest_core::to_base64url(nonce)
        );
        let entry = self.push(host, details);
        let size = self.tree.size();
        AuditProof {
            inclusion: self
                .tree
                .inclusion_proof(entry.seq - 1, size)
                .expect("proof"),
            consistency: (known > 0)
                .then(|| self.tree.consistency_proof(known, size).expect("proof")),
            entry,
            tree_head: self.head_at(size),
        }
    }
}

fn answer(version: u32, proof: AuditProof) -> Value {
    let json = TreeHeadJson::new(&proof.tree_head);
    let (audit, proof) = atrest_wire::grant_proof_fields(version, proof, json);
    serde_json::to_value(atrest_wire::UnlockReply::Granted {
        version,
        // The ristretto255 base point.
        response: serde_json::from_value(json!("4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY"))
            .expect("point"),
        audit_seq: 0,
        checkpoint: None,
        rebind: None,
        boot_ticket: None,
        audit,
        proof,
        witnessed: None,
    })
    .expect("json")
}

struct Out {
    dir: PathBuf,
    names: BTreeSet<String>,
}

struct Vector {
    name: String,
    expect: &'static str,
    comment: &'static str,
    kept: Option<TreeHead>,
    answer: Value,
    nonce: [u8; 16],
}

fn vector(
    name: &str,
    expect: &'static str,
    comment: &'static str,
    kept: Option<TreeHead>,
    answer: Value,
) -> Vector {
    Vector {
        name: name.to_owned(),
        expect,
        comment,
        kept,
        answer,
        nonce: NONCE,
    }
}

impl Out {
    fn write(&mut self, v: Vector) {
        assert!(self.names.insert(v.name.clone()), "vector {} twice", v.name);
        let key = AuditSigningKey::from_seed(&[0x11; 32])
            .public_key()
            .to_bytes();
        let mut text = format!(
            "kind: grant\nexpect: {}\ncomment: {}\naudit_public_key: {}\nhost_id: {HOST}\nnonce: {}\n",
            v.expect,
            v.comment,
            hex(&key),
            hex(&v.nonce),
        );
        let kept = v.kept.map(|h| serde_json::to_string(&h).expect("json"));
        let _ = writeln!(text, "kept_head: {}", kept.unwrap_or_default());
        let mut answer = serde_json::to_string(&v.answer).expect("json");
        if v.expect == "success" {
            // Byte for byte as keyd writes it (tampered answers are
            // written as edited, keys in alphabetical order).
            let reply: atrest_wire::UnlockReply =
                serde_json::from_value(v.answer.clone()).expect("reply");
            answer = serde_json::to_string(&reply).expect("json");
            // What the host concludes: the entry and the head it keeps.
            let atrest_wire::UnlockReply::Granted {
                version,
                audit,
                proof,
                ..
            } = reply
            else {
                unreachable!()
            };
            let proof = atrest_wire::read_grant_proof(version, audit, proof)
                .expect("readable")
                .expect("a proof");
            let _ = writeln!(text, "entry_hash: {}", hex(&proof.entry.hash.0));
            let _ = writeln!(text, "tree_size: {}", proof.tree_head.tree_size);
        }
        let _ = writeln!(text, "answer: {answer}");
        fs::write(self.dir.join(&v.name), text).expect("write vector");
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/grant"));
    fs::create_dir_all(&dir).expect("create output dir");
    for entry in fs::read_dir(&dir).expect("list output dir") {
        let path = entry.expect("dir entry").path();
        if path.is_file() && path.extension().is_none() {
            fs::remove_file(&path).expect("remove old vector");
        }
    }
    let mut out = Out {
        dir: dir.clone(),
        names: BTreeSet::new(),
    };
    // The honest log: 12 entries about another host, then this host's
    // release as entry 13, signed with the batch. The host kept a head of 7.
    let honest = || Log::new(12, "");
    let kept7 = honest().head_at(7);
    let fresh = |version| answer(version, honest().release(HOST, &NONCE, 0));
    let known = |version| answer(version, honest().release(HOST, &NONCE, 7));
    for version in [1, 2] {
        out.write(vector(
            &format!("v{version}-first-head"),
            "success",
            "a host that kept no head: inclusion only; it keeps this head",
            None,
            fresh(version),
        ));
        out.write(vector(
            &format!("v{version}-extends-kept-head"),
            "success",
            "inclusion, and consistency from the kept head of 7 entries",
            Some(kept7),
            known(version),
        ));
    }
    // Version 2 edge cases.
    let first = Log::new(0, "").release(HOST, &NONCE, 0);
    out.write(vector(
        "v2-only-entry",
        "success",
        "the release is the log's only entry: an empty inclusion path",
        None,
        answer(2, first),
    ));
    let mut same = honest();
    let proof = same.release(HOST, &NONCE, 13);
    out.write(vector(
        "v2-same-size-as-kept",
        "success",
        "the kept head is this head: an empty consistency path",
        Some(same.head_at(13)),
        answer(2, proof),
    ));

    // Refused: wrong, but no proof of the authority's misbehaviour.
    let tampered = |version, pointer: &str, value: Value| {
        let mut a = known(version);
        *a.pointer_mut(pointer).expect(pointer) = value;
        a
    };
    let flip = |version, pointer: &str| {
        let a = known(version);
        let text = a.pointer(pointer).and_then(Value::as_str).expect(pointer);
        let flipped = if text.starts_with('A') { "B" } else { "A" };
        tampered(version, pointer, format!("{flipped}{}", &text[1..]).into())
    };
    let refused = [
        (
            "v2-inclusion-tampered",
            "one hash of the inclusion path changed",
            flip(2, "/proof/inclusion"),
        ),
        (
            "v2-signature-tampered",
            "the tree head's signature changed",
            flip(2, "/proof/tree_head/signature"),
        ),
        (
            "v2-root-tampered",
            "the tree head's root changed",
            flip(2, "/proof/tree_head/root_hash"),
        ),
        (
            "v2-prev-hash-tampered",
            "the entry's prev_hash changed: another entry, not in the tree",
            flip(2, "/proof/entry/prev_hash"),
        ),
        (
            "v2-details-tampered",
            "the entry's details changed (one space added): not the entry that was logged",
            {
                let a = known(2);
                let details = a["proof"]["entry"]["details"]
                    .as_str()
                    .expect("details")
                    .replacen(':', ": ", 1);
                tampered(2, "/proof/entry/details", details.into())
            },
        ),
        (
            "v2-seq-zero",
            "an entry of sequence number 0 is in no tree",
            tampered(2, "/proof/entry/seq", 0.into()),
        ),
        (
            "v2-no-consistency",
            "a host that kept a head needs the consistency proof",
            {
                let mut a = known(2);
                a["proof"]
                    .as_object_mut()
                    .expect("object")
                    .remove("consistency");
                a
            },
        ),
        (
            "v2-path-not-whole-hashes",
            "an inclusion path of 33 bytes",
            tampered(
                2,
                "/proof/inclusion",
                atrest_core::to_base64url(&[7; 33]).into(),
            ),
        ),
        (
            "v2-path-padded",
            "base64url with padding is not the one spelling",
            tampered(
                2,
                "/proof/inclusion",
                format!("{}=", atrest_core::to_base64url(&[7; 32])).into(),
            ),
        ),
        (
            "v2-unknown-field",
            "unknown fields are refused (here the entry's hash)",
            {
                let mut a = known(2);
                a["proof"]["entry"]["hash"] = atrest_core::to_base64url(&[1; 32]).into();
                a
            },
        ),
        (
            "v2-unknown-version",
            "a version this host does not read",
            tampered(2, "/version", 3.into()),
        ),
        (
            "v2-version-1-form",
            "version 2 with the proof in version 1's form",
            {
                let mut a = known(1);
                a["version"] = 2.into();
                a
            },
        ),
        (
            "v1-version-2-form",
            "version 1 (no version field) with the proof in version 2's form",
            {
                let mut a = known(2);
                a.as_object_mut().expect("object").remove("version");
                a
            },
        ),
        (
            "v1-entry-hash-tampered",
            "version 1 entry text whose hash field is not its hash",
            {
                let a = known(1);
                let entry = a["audit"]["entry"].as_str().expect("entry");
                let mut e: Value = serde_json::from_str(entry).expect("entry json");
                e["hash"] = atrest_core::to_base64url(&[1; 32]).into();
                tampered(1, "/audit/entry", e.to_string().into())
            },
        ),
        (
            "v1-inclusion-tampered",
            "one hash of the version 1 inclusion path changed",
            flip(1, "/audit/inclusion/path/0"),
        ),
    ];
    for (name, comment, a) in refused {
        out.write(vector(name, "refused", comment, Some(kept7), a));
    }
    for (name, comment, host, nonce) in [
        (
            "v2-other-nonce",
            "another request's release: proves nothing about this one",
            HOST,
            [0x4f; 16],
        ),
        ("v2-other-host", "another host's release", "h-db-2", NONCE),
    ] {
        out.write(vector(
            name,
            "refused",
            comment,
            Some(kept7),
            answer(2, honest().release(host, &nonce, 7)),
        ));
    }
    let mut other_key = honest();
    let mut p = other_key.release(HOST, &NONCE, 7);
    other_key.key = AuditSigningKey::from_seed(&[0x12; 32]);
    p.tree_head = other_key.head_at(13);
    out.write(vector(
        "v2-other-key",
        "refused",
        "a head signed by a key other than the keyslot's",
        Some(kept7),
        answer(2, p),
    ));

    // Alarms: signed proof that the log was rolled back or forked.
    let forked_kept = Log::new(7, ",\"forked\":true").head_at(7);
    for version in [1, 2] {
        out.write(vector(
            &format!("v{version}-forked"),
            "alarm",
            "the kept head of 7 entries is of another log: no consistency proof joins them",
            Some(forked_kept),
            known(version),
        ));
    }
    let longer = Log::new(20, "").head_at(20);
    out.write(vector(
        "v2-rolled-back",
        "alarm",
        "the kept head has 20 entries, the signed answer's 13: rolled back",
        Some(longer),
        fresh(2),
    ));
    println!("wrote {} vectors to {}", out.names.len(), dir.display());
}
