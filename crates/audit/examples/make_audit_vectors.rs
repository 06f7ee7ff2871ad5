//! Writes the audit log's known-answer vectors into `testdata/audit/` (or
//! the directory given as the first argument), replacing the vector files
//! there. Every input is fixed (SHA-256 in counter mode over a label), so a
//! rerun writes identical files: a change without a deliberate format
//! change is a bug. `testdata/audit/README.md` describes the files.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use atrest_audit::merkle::{
    self, ConsistencyProof, InclusionProof, MerkleHash, MerkleTree, PathError,
};
use atrest_audit::{AuditSigningKey, TreeHead};

/// `n` fixed bytes named by `label`.
fn fixed(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 0u32;
    while out.len() < n {
        let mut input = format!("atrest audit vectors: {label}").into_bytes();
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&atrest_core::sha256(&input));
        counter += 1;
    }
    out.truncate(n);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_list(hashes: &[MerkleHash]) -> String {
    hashes
        .iter()
        .map(|h| hex(&h.0))
        .collect::<Vec<_>>()
        .join(",")
}

/// Leaf inputs are 32 bytes, like the entry hashes the log uses.
fn leaf_inputs(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| fixed(&format!("leaf {i}"), 32)).collect()
}

fn tree_of(inputs: &[Vec<u8>]) -> MerkleTree {
    let mut t = MerkleTree::new();
    for input in inputs {
        t.push(merkle::leaf_hash(input));
    }
    t
}

fn class(result: Result<(), PathError>) -> &'static str {
    match result {
        Ok(()) => "success",
        Err(PathError::IndexOutOfRange { .. }) => "index-out-of-range",
        Err(PathError::EmptyTree) => "empty-tree",
        Err(PathError::SizesOutOfOrder { .. }) => "sizes-out-of-order",
        Err(PathError::WrongLength) => "wrong-length",
        Err(PathError::RootMismatch) => "root-mismatch",
    }
}

struct Out {
    dir: PathBuf,
    names: BTreeSet<String>,
}

impl Out {
    fn write(
        &mut self,
        name: &str,
        kind: &str,
        expect: &str,
        comment: &str,
        fields: &[(&str, String)],
    ) {
        assert!(self.names.insert(name.to_string()), "vector {name} twice");
        let mut text = format!("kind: {kind}\nexpect: {expect}\ncomment: {comment}\n");
        for (key, value) in fields {
            text.push_str(&format!("{key}: {value}\n"));
        }
        fs::write(self.dir.join(name), text).expect("write vector");
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audit"));
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
    hashes(&mut out);
    roots(&mut out);
    inclusions(&mut out);
    consistencies(&mut out);
    tree_heads(&mut out);
    println!("wrote {} vectors to {}", out.names.len(), dir.display());
}

fn hashes(out: &mut Out) {
    for (name, input) in [("empty", Vec::new()), ("32-bytes", fixed("leaf 0", 32))] {
        out.write(
            &format!("leaf-{name}"),
            "merkle-leaf",
            "success",
            "leaf hash = SHA-256(0x00 ‖ input)",
            &[
                ("input", hex(&input)),
                ("leaf_hash", hex(&merkle::leaf_hash(&input).0)),
            ],
        );
    }
    let left = MerkleHash(fixed("left", 32).try_into().expect("32"));
    let right = MerkleHash(fixed("right", 32).try_into().expect("32"));
    out.write(
        "node",
        "merkle-node",
        "success",
        "node hash = SHA-256(0x01 ‖ left ‖ right)",
        &[
            ("left", hex(&left.0)),
            ("right", hex(&right.0)),
            ("node_hash", hex(&merkle::node_hash(&left, &right).0)),
        ],
    );
}

fn roots(out: &mut Out) {
    for n in (0..=8).chain([13, 100]) {
        let inputs = leaf_inputs(n);
        let list = inputs.iter().map(|i| hex(i)).collect::<Vec<_>>().join(",");
        out.write(
            &format!("root-{n:03}"),
            "merkle-root",
            "success",
            "MTH of the leaf inputs (RFC 9162 §2.1.1)",
            &[
                ("leaf_inputs", list),
                ("root", hex(&tree_of(&inputs).root().0)),
            ],
        );
    }
}

fn inclusion_vector(
    out: &mut Out,
    name: &str,
    comment: &str,
    input: &[u8],
    proof: &InclusionProof,
    root: &MerkleHash,
) {
    let expect = class(merkle::verify_inclusion_path(
        &merkle::leaf_hash(input),
        proof,
        root,
    ));
    out.write(
        name,
        "inclusion",
        expect,
        comment,
        &[
            ("leaf_input", hex(input)),
            ("leaf_index", proof.leaf_index.to_string()),
            ("tree_size", proof.tree_size.to_string()),
            ("path", hex_list(&proof.path)),
            ("root", hex(&root.0)),
            ("json", serde_json::to_string(proof).expect("json")),
        ],
    );
}

fn inclusions(out: &mut Out) {
    let inputs = leaf_inputs(13);
    let tree = tree_of(&inputs);
    for (index, size) in [(0, 1), (0, 8), (5, 8), (7, 8), (2, 7), (12, 13), (6, 13)] {
        let proof = tree.inclusion_proof(index, size).expect("proof");
        let root = tree.root_at(size).expect("root");
        inclusion_vector(
            out,
            &format!("inclusion-{index}-of-{size}"),
            "RFC 9162 §2.1.3",
            &inputs[index as usize],
            &proof,
            &root,
        );
    }
    let proof = tree.inclusion_proof(6, 13).expect("proof");
    let root = tree.root();
    let leaf = &inputs[6];
    let mut bad = proof.clone();
    bad.path[1].0[0] ^= 0x80;
    inclusion_vector(
        out,
        "inclusion-tampered-path",
        "one bit of a path hash flipped",
        leaf,
        &bad,
        &root,
    );
    let mut bad_leaf = leaf.clone();
    bad_leaf[31] ^= 1;
    inclusion_vector(
        out,
        "inclusion-tampered-leaf",
        "one bit of the leaf input flipped",
        &bad_leaf,
        &proof,
        &root,
    );
    let mut bad = proof.clone();
    bad.leaf_index = 7;
    inclusion_vector(
        out,
        "inclusion-wrong-index",
        "the proof of leaf 6 given as leaf 7's",
        leaf,
        &bad,
        &root,
    );
    let mut bad = proof.clone();
    bad.tree_size = 7;
    inclusion_vector(
        out,
        "inclusion-wrong-size",
        "the proof in a tree of 13 given for 7, where leaf 6 is the last",
        leaf,
        &bad,
        &root,
    );
    let mut same_shape = proof.clone();
    same_shape.tree_size = 16;
    inclusion_vector(
        out,
        "inclusion-other-size-same-shape",
        "the proof in a tree of 13 labelled 16: the path has the same shape, so the RFC algorithm \
         accepts it; only the signed head binds the size (verify_inclusion requires \
         proof.tree_size = head.tree_size)",
        leaf,
        &same_shape,
        &root,
    );
    let mut bad = proof.clone();
    bad.path.pop();
    inclusion_vector(
        out,
        "inclusion-truncated",
        "the last path hash dropped",
        leaf,
        &bad,
        &root,
    );
    let mut bad = proof.clone();
    bad.path.push(root);
    inclusion_vector(
        out,
        "inclusion-extended",
        "a hash appended to the path",
        leaf,
        &bad,
        &root,
    );
    let mut bad = proof;
    bad.leaf_index = 13;
    inclusion_vector(
        out,
        "inclusion-index-out-of-range",
        "leaf index equal to the tree size",
        leaf,
        &bad,
        &root,
    );
}

fn consistency_vector(
    out: &mut Out,
    name: &str,
    comment: &str,
    proof: &ConsistencyProof,
    old_root: &MerkleHash,
    new_root: &MerkleHash,
) {
    let expect = class(merkle::verify_consistency_path(proof, old_root, new_root));
    out.write(
        name,
        "consistency",
        expect,
        comment,
        &[
            ("old_size", proof.old_size.to_string()),
            ("new_size", proof.new_size.to_string()),
            ("old_root", hex(&old_root.0)),
            ("new_root", hex(&new_root.0)),
            ("path", hex_list(&proof.path)),
            ("json", serde_json::to_string(proof).expect("json")),
        ],
    );
}

fn consistencies(out: &mut Out) {
    let inputs = leaf_inputs(100);
    let tree = tree_of(&inputs);
    let root = |n| tree.root_at(n).expect("root");
    for (old, new) in [
        (1, 2),
        (1, 8),
        (3, 7),
        (4, 8),
        (6, 8),
        (7, 13),
        (8, 13),
        (13, 100),
        (64, 100),
        (8, 8),
    ] {
        let proof = tree.consistency_proof(old, new).expect("proof");
        consistency_vector(
            out,
            &format!("consistency-{old}-to-{new}"),
            "RFC 9162 §2.1.4",
            &proof,
            &root(old),
            &root(new),
        );
    }
    let proof = tree.consistency_proof(7, 13).expect("proof");
    let mut bad = proof.clone();
    bad.path[0].0[5] ^= 4;
    consistency_vector(
        out,
        "consistency-tampered-path",
        "one bit of a path hash flipped",
        &bad,
        &root(7),
        &root(13),
    );
    let mut forked = root(7);
    forked.0[0] ^= 1;
    consistency_vector(
        out,
        "consistency-forked-old-root",
        "an old root the new tree does not extend",
        &proof,
        &forked,
        &root(13),
    );
    let mut bad = proof.clone();
    bad.new_size = 12;
    consistency_vector(
        out,
        "consistency-wrong-size",
        "the proof from 7 to 13 given for 7 to 12",
        &bad,
        &root(7),
        &root(12),
    );
    let mut bad = proof.clone();
    bad.path.pop();
    consistency_vector(
        out,
        "consistency-truncated",
        "the last path hash dropped",
        &bad,
        &root(7),
        &root(13),
    );
    let mut bad = proof;
    bad.path.push(root(13));
    consistency_vector(
        out,
        "consistency-extended",
        "a hash appended to the path",
        &bad,
        &root(7),
        &root(13),
    );
    let empty = ConsistencyProof {
        old_size: 4,
        new_size: 8,
        path: vec![],
    };
    consistency_vector(
        out,
        "consistency-empty-path",
        "m < n with an empty path never verifies (§2.1.4.2 step 1)",
        &empty,
        &root(4),
        &root(8),
    );
    let same = ConsistencyProof {
        old_size: 8,
        new_size: 8,
        path: vec![],
    };
    consistency_vector(
        out,
        "consistency-same-size-other-root",
        "equal sizes, different roots: a fork",
        &same,
        &root(8),
        &forked,
    );
    let zero = ConsistencyProof {
        old_size: 0,
        new_size: 8,
        path: vec![],
    };
    consistency_vector(
        out,
        "consistency-from-empty",
        "no proof starts at an empty tree",
        &zero,
        &merkle::empty_root(),
        &root(8),
    );
    let backwards = ConsistencyProof {
        old_size: 13,
        new_size: 7,
        path: tree.consistency_proof(7, 13).expect("proof").path,
    };
    consistency_vector(
        out,
        "consistency-backwards",
        "a new size below the old one",
        &backwards,
        &root(13),
        &root(7),
    );
}

fn tree_head_vector(
    out: &mut Out,
    name: &str,
    comment: &str,
    key: &AuditSigningKey,
    head: &TreeHead,
) {
    let expect = if head.verify(&key.public_key()).is_ok() {
        "success"
    } else {
        "bad-signature"
    };
    out.write(
        name,
        "tree-head",
        expect,
        comment,
        &[
            ("seed", hex(&key.expose_seed()[..])),
            ("public_key", hex(&key.public_key().to_bytes())),
            ("tree_size", head.tree_size.to_string()),
            ("root_hash", hex(&head.root_hash.0)),
            ("timestamp_ms", head.timestamp_ms.to_string()),
            (
                "signed_bytes",
                hex(&TreeHead::signed_bytes(
                    head.tree_size,
                    &head.root_hash,
                    head.timestamp_ms,
                )),
            ),
            ("signature", hex(&head.signature)),
            ("json", serde_json::to_string(head).expect("json")),
        ],
    );
}

fn tree_heads(out: &mut Out) {
    let key = AuditSigningKey::from_seed(&fixed("tree head seed", 32).try_into().expect("32"));
    let root = tree_of(&leaf_inputs(13)).root();
    let head = key.sign_tree_head(13, root, 1_800_000_000_000);
    tree_head_vector(
        out,
        "tree-head",
        "a signed tree head over the 13-leaf tree",
        &key,
        &head,
    );
    let mut bad = head;
    bad.tree_size = 12;
    tree_head_vector(
        out,
        "tree-head-changed-size",
        "the size changed after signing",
        &key,
        &bad,
    );
    let mut bad = head;
    bad.signature[63] ^= 0x01;
    tree_head_vector(
        out,
        "tree-head-flipped-signature-bit",
        "one bit of S flipped",
        &key,
        &bad,
    );
    let cp = key.sign_checkpoint(13, atrest_audit::EntryHash(root.0), 1_800_000_000_000);
    let mut bad = head;
    bad.signature = cp.signature;
    tree_head_vector(
        out,
        "tree-head-checkpoint-signature",
        "a v1 checkpoint's signature over the same numbers: another label",
        &key,
        &bad,
    );
}
