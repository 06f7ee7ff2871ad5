//! Known-answer vectors: walks every file under `testdata/audit/` (except
//! `README.md`) and checks it against the public API. Nothing here names a
//! vector: add a file and it is checked. An unknown kind or `expect`, a
//! missing field, a field given twice or a field never read fails.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use atrest_audit::merkle::{self, MerkleHash, MerkleTree, PathError};
use atrest_audit::{AuditPublicKey, ConsistencyProof, InclusionProof, TreeHead};

/// `ATREST_AUDIT_VECTORS_DIR` points the harness at another copy.
fn vectors_dir() -> PathBuf {
    std::env::var_os("ATREST_AUDIT_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audit"))
}

struct Vector {
    kind: String,
    expect: String,
    fields: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Vector {
    fn parse(text: &str) -> Result<Self, String> {
        let mut fields = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
                .ok_or_else(|| format!("line {}: not `name: value`", i + 1))?;
            if fields.insert(key.to_string(), value.to_string()).is_some() {
                return Err(format!("line {}: `{key}` given twice", i + 1));
            }
        }
        let mut take = |k: &str| fields.remove(k).ok_or_else(|| format!("no `{k}` line"));
        let kind = take("kind")?;
        let expect = take("expect")?;
        if take("comment")?.trim().is_empty() {
            return Err("empty comment".into());
        }
        Ok(Self {
            kind,
            expect,
            fields,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    fn text(&self, key: &str) -> Result<&str, String> {
        self.used.borrow_mut().insert(key.to_string());
        self.fields
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    fn number(&self, key: &str) -> Result<u64, String> {
        self.text(key)?
            .parse()
            .map_err(|_| format!("`{key}`: not a decimal number"))
    }

    fn bytes(&self, key: &str) -> Result<Vec<u8>, String> {
        hex(self.text(key)?).ok_or_else(|| format!("`{key}`: not hex"))
    }

    fn hash(&self, key: &str) -> Result<MerkleHash, String> {
        Ok(MerkleHash(
            self.bytes(key)?
                .try_into()
                .map_err(|_| format!("`{key}`: not 32 bytes"))?,
        ))
    }

    /// Comma-separated hex values (possibly none).
    fn list(&self, key: &str) -> Result<Vec<Vec<u8>>, String> {
        let text = self.text(key)?;
        if text.is_empty() {
            return Ok(Vec::new());
        }
        text.split(',')
            .map(|h| hex(h).ok_or_else(|| format!("`{key}`: not hex")))
            .collect()
    }

    fn hashes(&self, key: &str) -> Result<Vec<MerkleHash>, String> {
        self.list(key)?
            .into_iter()
            .map(|b| {
                b.try_into()
                    .map(MerkleHash)
                    .map_err(|_| format!("`{key}`: not 32 bytes"))
            })
            .collect()
    }

    fn outcome(&self, got: Result<(), String>) -> Result<(), String> {
        let got = got.err().unwrap_or_else(|| "success".into());
        if got == self.expect {
            Ok(())
        } else {
            Err(format!("expected {}, got {got}", self.expect))
        }
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

fn class(e: PathError) -> String {
    match e {
        PathError::IndexOutOfRange { .. } => "index-out-of-range",
        PathError::EmptyTree => "empty-tree",
        PathError::SizesOutOfOrder { .. } => "sizes-out-of-order",
        PathError::WrongLength => "wrong-length",
        PathError::RootMismatch => "root-mismatch",
    }
    .into()
}

fn check(v: &Vector) -> Result<(), String> {
    match v.kind.as_str() {
        "merkle-leaf" => {
            let got = merkle::leaf_hash(&v.bytes("input")?);
            v.outcome(Ok(()))?;
            (got == v.hash("leaf_hash")?)
                .then_some(())
                .ok_or("leaf hash differs".into())
        }
        "merkle-node" => {
            let got = merkle::node_hash(&v.hash("left")?, &v.hash("right")?);
            v.outcome(Ok(()))?;
            (got == v.hash("node_hash")?)
                .then_some(())
                .ok_or("node hash differs".into())
        }
        "merkle-root" => {
            let mut tree = MerkleTree::new();
            for input in v.list("leaf_inputs")? {
                tree.push(merkle::leaf_hash(&input));
            }
            v.outcome(Ok(()))?;
            (tree.root() == v.hash("root")?)
                .then_some(())
                .ok_or("root differs".into())
        }
        "inclusion" => {
            let proof = InclusionProof {
                leaf_index: v.number("leaf_index")?,
                tree_size: v.number("tree_size")?,
                path: v.hashes("path")?,
            };
            let json: InclusionProof =
                serde_json::from_str(v.text("json")?).map_err(|e| format!("json: {e}"))?;
            if json != proof
                || serde_json::to_string(&proof).ok().as_deref() != Some(v.text("json")?)
            {
                return Err("json form differs".into());
            }
            let leaf = merkle::leaf_hash(&v.bytes("leaf_input")?);
            v.outcome(merkle::verify_inclusion_path(&leaf, &proof, &v.hash("root")?).map_err(class))
        }
        "consistency" => {
            let proof = ConsistencyProof {
                old_size: v.number("old_size")?,
                new_size: v.number("new_size")?,
                path: v.hashes("path")?,
            };
            let json: ConsistencyProof =
                serde_json::from_str(v.text("json")?).map_err(|e| format!("json: {e}"))?;
            if json != proof
                || serde_json::to_string(&proof).ok().as_deref() != Some(v.text("json")?)
            {
                return Err("json form differs".into());
            }
            v.outcome(
                merkle::verify_consistency_path(&proof, &v.hash("old_root")?, &v.hash("new_root")?)
                    .map_err(class),
            )
        }
        "tree-head" => {
            let seed: [u8; 32] = v
                .bytes("seed")?
                .try_into()
                .map_err(|_| "seed: not 32 bytes")?;
            let signing = atrest_audit::AuditSigningKey::from_seed(&seed);
            let public_bytes: [u8; 32] = v
                .bytes("public_key")?
                .try_into()
                .map_err(|_| "public_key: not 32 bytes")?;
            let public = AuditPublicKey::from_bytes(&public_bytes).map_err(|e| e.to_string())?;
            if signing.public_key() != public {
                return Err("public key is not the seed's".into());
            }
            let head = TreeHead {
                tree_size: v.number("tree_size")?,
                root_hash: v.hash("root_hash")?,
                timestamp_ms: v.number("timestamp_ms")?,
                signature: v
                    .bytes("signature")?
                    .try_into()
                    .map_err(|_| "signature: not 64 bytes")?,
            };
            if TreeHead::signed_bytes(head.tree_size, &head.root_hash, head.timestamp_ms)
                != v.bytes("signed_bytes")?
            {
                return Err("signed bytes differ".into());
            }
            let json: TreeHead =
                serde_json::from_str(v.text("json")?).map_err(|e| format!("json: {e}"))?;
            if json != head || serde_json::to_string(&head).ok().as_deref() != Some(v.text("json")?)
            {
                return Err("json form differs".into());
            }
            v.outcome(head.verify(&public).map_err(|_| "bad-signature".into()))
        }
        other => Err(format!("unknown kind {other}")),
    }
}

#[test]
fn every_audit_vector_holds() {
    let dir = vectors_dir();
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "README.md" {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let result = Vector::parse(&text).and_then(|v| {
            check(&v)?;
            let unread: Vec<_> = v
                .fields
                .keys()
                .filter(|k| !v.used.borrow().contains(*k))
                .cloned()
                .collect();
            if unread.is_empty() {
                Ok(())
            } else {
                Err(format!("fields never read: {unread:?}"))
            }
        });
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(count >= 40, "only {count} vectors in {}", dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
