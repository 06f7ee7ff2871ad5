//! The key authority's audit log: append-only, hash-chained, in an RFC 9162
//! Merkle tree with a signed tree head over every batch, durable before
//! anything is released, and checkable by hosts with short proofs.
//!
//! - [`AuditLog`]: the writer. [`AuditLog::append`] resolves only once the
//!   entry is committed, with a [`Receipt`] holding the signed [`TreeHead`]
//!   of its batch and the entry's [`InclusionProof`]; concurrent appends
//!   share one transaction and one signature (group commit); a failed commit
//!   fails every append in it, so the server releases no key it could not
//!   log. [`AuditLog::open`] rebuilds the tree and refuses a log that does
//!   not match its latest signed head.
//! - [`Entry`]: sequence number, time, [`EntryKind`], actor, subject, JSON
//!   details, and `hash = SHA-256(canonical encoding ‖ prev_hash)`, the leaf
//!   input of the tree ([`merkle`]).
//! - [`verify_inclusion`] / [`verify_consistency`]: what a host checks,
//!   with no I/O: its entry is under a signed head, and a new head extends
//!   the one it kept (else [`ConsistencyError::RolledBack`] or
//!   [`ConsistencyError::Inconsistent`]). A host checking one head against
//!   both verifies its signature once ([`TreeHead::verified`]) and runs
//!   [`verify_inclusion_under`] / [`verify_consistency_between`].
//! - [`verify`] / [`verify_with_witnesses`]: walk the stored log, name the
//!   first bad entry or head; against heads kept outside, also catch a
//!   rollback or a rewrite. [`Checkpoint`]s (format 1) are still read and
//!   checked ([`verify_against`]).
//! - [`AuditStore`]: where rows live; [`SqliteStore`] is the embedded one.
//!
//! ```
//! use atrest_audit::*;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(&dir.path().join("audit.db")).await?;
//! let key = AuditSigningKey::generate();
//! let public = key.public_key();
//! let log = AuditLog::open(store, key, LogOptions::default(), SystemClock).await?;
//!
//! let receipt = log
//!     .append(NewEntry::new(EntryKind::Decision, "keyd").subject("web-1"))
//!     .await?; // only now may the key be released, with the receipt
//!
//! // On the host: its entry is in the log the authority signed...
//! let entry = log.store().read_entries(receipt.seq, 1).await?.remove(0);
//! verify_inclusion(&public, &entry, &receipt.inclusion, &receipt.tree_head)?;
//! let kept = receipt.tree_head;
//! // ...and later, the log only grew since the head it kept.
//! log.append(NewEntry::new(EntryKind::Request, "web-2")).await?;
//! let latest = log.tree_head().expect("signed");
//! let proof = log.consistency_proof(kept.tree_size, latest.tree_size)?;
//! verify_consistency(&public, &kept, &latest, &proof)?;
//!
//! let report = verify_with_witnesses(log.store(), &public, &[kept]).await?;
//! assert_eq!(report.head.seq, 2);
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod encoding;
mod entry;
mod log;
pub mod merkle;
mod postgres;
mod rows;
mod sqlite;
mod store;
mod tree_head;
mod verify;

pub use checkpoint::{
    AuditPublicKey, AuditSigningKey, BadCheckpointSignature, CHECKPOINT_VERSION, Checkpoint,
    InvalidPublicKey,
};
pub use entry::{
    ENTRY_VERSION, Entry, EntryHash, EntryKind, MAX_DETAILS_LEN, MAX_NAME_LEN, NewEntry,
    UnknownKind,
};
pub use log::{
    AppendError, AuditLog, Clock, LogOptions, LogStats, OpenError, ProofRequestError, Receipt,
    SystemClock,
};
pub use merkle::{ConsistencyProof, InclusionProof, MerkleHash, MerkleTree, PathError};
pub use postgres::{PgAppends, PgStore};
pub use sqlite::{SqliteOptions, SqliteStore};
pub use store::{AuditStore, BatchRows, Catchup, ChainHead, StoreError};
pub use tree_head::{
    BadTreeHeadSignature, ConsistencyError, InclusionError, TREE_HEAD_VERSION, TreeHead,
    TreeHeadJson, VerifiedTreeHead, entry_leaf_hash, verify_consistency,
    verify_consistency_between, verify_inclusion, verify_inclusion_under,
};
pub use verify::{VerifyError, VerifyReport, verify, verify_against, verify_with_witnesses};
