//! Signed tree heads, and the checks a host makes with them (pure
//! functions, no I/O).
//!
//! The authority signs a [`TreeHead`] over the Merkle root of the whole log
//! at the end of every committed batch, so every entry is covered by a
//! signature from the moment it is acknowledged. A host keeps the latest
//! head it was given; with the next one it gets a [`ConsistencyProof`] and
//! checks that the log only grew ([`verify_consistency`]), and with its own
//! entry an [`InclusionProof`] ([`verify_inclusion`]).

use std::fmt;
use std::sync::Arc;

use atrest_core::labels;
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::checkpoint::{AuditPublicKey, AuditSigningKey};
use crate::encoding::{Canonical, base64url_array};
use crate::entry::Entry;
use crate::merkle::{
    ConsistencyProof, InclusionProof, MerkleHash, PathError, leaf_hash, verify_consistency_path,
    verify_inclusion_path,
};

/// The version byte in a tree head's signed encoding.
pub const TREE_HEAD_VERSION: u8 = 1;

/// "At `timestamp_ms`, the first `tree_size` entries of this log had Merkle
/// root `root_hash`", signed by the authority's audit key.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeHead {
    pub tree_size: u64,
    pub root_hash: MerkleHash,
    pub timestamp_ms: u64,
    #[serde(with = "base64url_array")]
    pub signature: [u8; 64],
}

/// A tree head whose signature does not verify under the given key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the tree head of size {tree_size} is not signed by this audit key")]
pub struct BadTreeHeadSignature {
    pub tree_size: u64,
}

impl TreeHead {
    /// `lp(domain::AUDIT_TREE_HEAD) ‖ version ‖ lp(tree_size) ‖
    /// lp(root_hash) ‖ lp(timestamp_ms)`, integers as u64 big-endian. A
    /// label of its own, so a v1 checkpoint's signature never passes for a
    /// tree head's (both sign a 32-byte hash after a u64).
    pub fn signed_bytes(tree_size: u64, root_hash: &MerkleHash, timestamp_ms: u64) -> Vec<u8> {
        let mut out = Canonical::new(labels::domain::AUDIT_TREE_HEAD, TREE_HEAD_VERSION);
        out.field(&tree_size.to_be_bytes())
            .field(&root_hash.0)
            .field(&timestamp_ms.to_be_bytes());
        out.into_bytes()
    }

    /// Strict Ed25519 verification (canonical `S`, no small-order `R`).
    pub fn verify(&self, key: &AuditPublicKey) -> Result<(), BadTreeHeadSignature> {
        self.verified(key).map(|_| ())
    }

    /// [`verify`](Self::verify), returning the proof that it passed: the
    /// checks that take a [`VerifiedTreeHead`] run only on a head whose
    /// signature was checked, and a host that checks one head against both
    /// its own entry and the head it kept verifies the signature once.
    pub fn verified(
        &self,
        key: &AuditPublicKey,
    ) -> Result<VerifiedTreeHead<'_>, BadTreeHeadSignature> {
        key.0
            .verify_strict(
                &Self::signed_bytes(self.tree_size, &self.root_hash, self.timestamp_ms),
                &Signature::from_bytes(&self.signature),
            )
            .map(|()| VerifiedTreeHead(self))
            .map_err(|_| BadTreeHeadSignature {
                tree_size: self.tree_size,
            })
    }
}

/// A tree head whose signature verified under the audit key it was checked
/// with. Only [`TreeHead::verified`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedTreeHead<'a>(&'a TreeHead);

impl VerifiedTreeHead<'_> {
    pub fn head(&self) -> &TreeHead {
        self.0
    }
}

impl fmt::Debug for TreeHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeHead")
            .field("tree_size", &self.tree_size)
            .field("root_hash", &self.root_hash)
            .field("timestamp_ms", &self.timestamp_ms)
            .finish_non_exhaustive()
    }
}

/// A tree head's JSON text (above), encoded once and shared: every answer
/// of a batch splices the same text in rather than encoding the head again.
/// Serializes as that JSON value, verbatim.
#[derive(Clone, Debug)]
pub struct TreeHeadJson(Arc<RawValue>);

impl TreeHeadJson {
    /// `None` only if serde_json cannot encode the head (it always can).
    pub fn new(head: &TreeHead) -> Option<Self> {
        serde_json::value::to_raw_value(head)
            .ok()
            .map(|raw| Self(Arc::from(raw)))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for TreeHeadJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for TreeHeadJson {}

impl Serialize for TreeHeadJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl AuditSigningKey {
    pub fn sign_tree_head(
        &self,
        tree_size: u64,
        root_hash: MerkleHash,
        timestamp_ms: u64,
    ) -> TreeHead {
        let signature = self
            .0
            .sign(&TreeHead::signed_bytes(tree_size, &root_hash, timestamp_ms));
        TreeHead {
            tree_size,
            root_hash,
            timestamp_ms,
            signature: signature.to_bytes(),
        }
    }
}

/// The leaf hash of an entry: `SHA-256(0x00 ‖ Entry.hash)`.
pub fn entry_leaf_hash(entry: &Entry) -> MerkleHash {
    leaf_hash(&entry.hash.0)
}

/// Why a host refuses an entry's inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    #[error(transparent)]
    BadSignature(#[from] BadTreeHeadSignature),
    #[error("entry {seq} does not match its own hash: it is not the entry that was logged")]
    EntryHashMismatch { seq: u64 },
    #[error(
        "the proof is for leaf {leaf_index} of a tree of {tree_size}, \
         not for entry {seq} under the signed head of size {head_size}"
    )]
    WrongProof {
        seq: u64,
        leaf_index: u64,
        tree_size: u64,
        head_size: u64,
    },
    #[error("entry {seq} is not in the log the signed head of size {tree_size} describes ({path})")]
    NotIncluded {
        seq: u64,
        tree_size: u64,
        path: PathError,
    },
}

/// Checks that `entry` is in the log whose signed head is `head`: the head's
/// signature, the entry's own hash, then the proof from its leaf to the
/// head's root.
pub fn verify_inclusion(
    key: &AuditPublicKey,
    entry: &Entry,
    proof: &InclusionProof,
    head: &TreeHead,
) -> Result<(), InclusionError> {
    verify_inclusion_under(head.verified(key)?, entry, proof)
}

/// [`verify_inclusion`] under a head whose signature was already checked
/// ([`TreeHead::verified`]): the entry's own hash, then the proof.
pub fn verify_inclusion_under(
    head: VerifiedTreeHead<'_>,
    entry: &Entry,
    proof: &InclusionProof,
) -> Result<(), InclusionError> {
    let head = head.head();
    if entry.compute_hash() != entry.hash {
        return Err(InclusionError::EntryHashMismatch { seq: entry.seq });
    }
    if entry.seq == 0 || proof.leaf_index != entry.seq - 1 || proof.tree_size != head.tree_size {
        return Err(InclusionError::WrongProof {
            seq: entry.seq,
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
            head_size: head.tree_size,
        });
    }
    verify_inclusion_path(&entry_leaf_hash(entry), proof, &head.root_hash).map_err(|path| {
        InclusionError::NotIncluded {
            seq: entry.seq,
            tree_size: head.tree_size,
            path,
        }
    })
}

/// Why a host refuses a new tree head against the one it kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error(transparent)]
    BadSignature(#[from] BadTreeHeadSignature),
    #[error(
        "the log's signed head has {given} entries, fewer than the {held} of the head you kept: \
         the log was rolled back"
    )]
    RolledBack { held: u64, given: u64 },
    #[error(
        "the signed heads of size {old_size} and {new_size} describe two different logs ({path}): \
         the log was rewritten or forked; keep both heads as evidence"
    )]
    Inconsistent {
        old_size: u64,
        new_size: u64,
        path: PathError,
    },
    #[error(
        "the proof is between sizes {proof_old} and {proof_new}, \
         not between the heads' {old_size} and {new_size}"
    )]
    WrongProof {
        proof_old: u64,
        proof_new: u64,
        old_size: u64,
        new_size: u64,
    },
}

/// Checks that the log described by `new` extends the one described by
/// `old` (the head the host kept): both signatures, then the proof. Both
/// heads being signed, an `Inconsistent` answer is proof of misbehaviour
/// that a host should keep and raise, not retry past.
pub fn verify_consistency(
    key: &AuditPublicKey,
    old: &TreeHead,
    new: &TreeHead,
    proof: &ConsistencyProof,
) -> Result<(), ConsistencyError> {
    let old = old.verified(key)?;
    verify_consistency_between(old, new.verified(key)?, proof)
}

/// [`verify_consistency`] between two heads whose signatures were already
/// checked under the same audit key ([`TreeHead::verified`]): the sizes,
/// then the proof.
pub fn verify_consistency_between(
    old: VerifiedTreeHead<'_>,
    new: VerifiedTreeHead<'_>,
    proof: &ConsistencyProof,
) -> Result<(), ConsistencyError> {
    let (old, new) = (old.head(), new.head());
    if new.tree_size < old.tree_size {
        return Err(ConsistencyError::RolledBack {
            held: old.tree_size,
            given: new.tree_size,
        });
    }
    if proof.old_size != old.tree_size || proof.new_size != new.tree_size {
        return Err(ConsistencyError::WrongProof {
            proof_old: proof.old_size,
            proof_new: proof.new_size,
            old_size: old.tree_size,
            new_size: new.tree_size,
        });
    }
    verify_consistency_path(proof, &old.root_hash, &new.root_hash).map_err(|path| {
        ConsistencyError::Inconsistent {
            old_size: old.tree_size,
            new_size: new.tree_size,
            path,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryHash, EntryKind};
    use crate::merkle::MerkleTree;

    fn entries(n: u64) -> Vec<Entry> {
        let mut prev = EntryHash::GENESIS;
        (1..=n)
            .map(|seq| {
                let mut e = Entry {
                    seq,
                    timestamp_ms: 1_800_000_000_000 + seq,
                    kind: EntryKind::Decision,
                    actor: "keyd".into(),
                    subject: Some(format!("web-{seq}")),
                    details: format!(r#"{{"n":{seq}}}"#),
                    prev_hash: prev,
                    hash: EntryHash::GENESIS,
                };
                e.hash = e.compute_hash();
                prev = e.hash;
                e
            })
            .collect()
    }

    fn tree_of(entries: &[Entry]) -> MerkleTree {
        let mut t = MerkleTree::new();
        for e in entries {
            t.push(entry_leaf_hash(e));
        }
        t
    }

    #[test]
    fn a_tree_head_verifies_only_as_signed() {
        let key = AuditSigningKey::generate();
        let head = key.sign_tree_head(42, MerkleHash([5; 32]), 1_000);
        assert_eq!(head.verify(&key.public_key()), Ok(()));
        let changes: [fn(&mut TreeHead); 4] = [
            |h| h.tree_size += 1,
            |h| h.root_hash.0[31] ^= 1,
            |h| h.timestamp_ms += 1,
            |h| h.signature[0] ^= 1,
        ];
        for change in changes {
            let mut bad = head;
            change(&mut bad);
            assert!(bad.verify(&key.public_key()).is_err());
        }
        // A checkpoint over the same numbers is a different statement.
        let cp = key.sign_checkpoint(42, crate::EntryHash([5; 32]), 1_000);
        let mut forged = head;
        forged.signature = cp.signature;
        assert!(forged.verify(&key.public_key()).is_err());
        let json = serde_json::to_string(&head).unwrap();
        assert_eq!(serde_json::from_str::<TreeHead>(&json).unwrap(), head);
        // The shared text is the same JSON, spliced verbatim.
        let shared = TreeHeadJson::new(&head).unwrap();
        assert_eq!(shared.get(), json);
        assert_eq!(
            serde_json::to_string(&[&shared]).unwrap(),
            format!("[{json}]")
        );
    }

    /// A log of 20 entries, its tree, and heads signed over its first 7
    /// and over all 20.
    fn log_with_two_heads() -> (AuditSigningKey, Vec<Entry>, MerkleTree, TreeHead, TreeHead) {
        let key = AuditSigningKey::generate();
        let log = entries(20);
        let tree = tree_of(&log);
        let old = key.sign_tree_head(7, tree.root_at(7).unwrap(), 1);
        let new = key.sign_tree_head(20, tree.root(), 2);
        (key, log, tree, old, new)
    }

    /// The checks under heads verified once give the answers of the
    /// checks that verify the heads themselves, and a head whose signature
    /// does not verify yields no `VerifiedTreeHead` to run them with.
    #[test]
    fn heads_verified_once_are_checked_as_the_key_taking_checks_check_them() {
        let (key, log, tree, old, new) = log_with_two_heads();
        let public = key.public_key();
        let (old_v, new_v) = (
            old.verified(&public).unwrap(),
            new.verified(&public).unwrap(),
        );
        assert_eq!(new_v.head(), &new);
        let proof = tree.inclusion_proof(4, 20).unwrap();
        let cproof = tree.consistency_proof(7, 20).unwrap();
        let mut edited = log[4].clone();
        edited.actor = "someone".into();
        for entry in [&log[4], &edited, &log[5]] {
            assert_eq!(
                verify_inclusion_under(new_v, entry, &proof),
                verify_inclusion(&public, entry, &proof, &new)
            );
        }
        let mut cut = cproof.clone();
        cut.path.pop();
        for p in [&cproof, &cut] {
            assert_eq!(
                verify_consistency_between(old_v, new_v, p),
                verify_consistency(&public, &old, &new, p)
            );
        }
        assert_eq!(
            verify_consistency_between(new_v, old_v, &cproof),
            Err(ConsistencyError::RolledBack { held: 20, given: 7 })
        );
        let mut bad = new;
        bad.signature[0] ^= 1;
        assert_eq!(
            bad.verified(&public),
            Err(BadTreeHeadSignature { tree_size: 20 })
        );
        let other = AuditSigningKey::generate().public_key();
        assert!(new.verified(&other).is_err());
    }

    #[test]
    fn a_host_checks_its_entry_and_the_log_growth() {
        let (key, log, tree, old, new) = log_with_two_heads();
        let public = key.public_key();

        // The entry travels as JSON and comes back hashing the same.
        let sent = serde_json::to_string(&log[4]).unwrap();
        let entry: Entry = serde_json::from_str(&sent).unwrap();
        assert_eq!(entry, log[4]);
        let proof = tree.inclusion_proof(4, 20).unwrap();
        verify_inclusion(&public, &entry, &proof, &new).unwrap();

        let mut edited = entry.clone();
        edited.actor = "someone".into();
        assert_eq!(
            verify_inclusion(&public, &edited, &proof, &new),
            Err(InclusionError::EntryHashMismatch { seq: 5 })
        );
        edited.hash = edited.compute_hash();
        assert!(matches!(
            verify_inclusion(&public, &edited, &proof, &new),
            Err(InclusionError::NotIncluded { seq: 5, .. })
        ));
        assert!(matches!(
            verify_inclusion(&public, &log[5], &proof, &new),
            Err(InclusionError::WrongProof { .. })
        ));

        let cproof = tree.consistency_proof(7, 20).unwrap();
        verify_consistency(&public, &old, &new, &cproof).unwrap();
        assert_eq!(
            verify_consistency(&public, &new, &old, &cproof),
            Err(ConsistencyError::RolledBack { held: 20, given: 7 })
        );
        // A fork: the same first 7 entries signed with another root.
        let mut other = log.clone();
        other[3].details = r#"{"n":"forged"}"#.into();
        other[3].hash = other[3].compute_hash();
        let forged = key.sign_tree_head(20, tree_of(&other).root(), 3);
        assert!(matches!(
            verify_consistency(&public, &old, &forged, &cproof),
            Err(ConsistencyError::Inconsistent { .. })
        ));
        let mut unsigned = new;
        unsigned.timestamp_ms += 1;
        assert!(matches!(
            verify_consistency(&public, &old, &unsigned, &cproof),
            Err(ConsistencyError::BadSignature(_))
        ));
    }
}
