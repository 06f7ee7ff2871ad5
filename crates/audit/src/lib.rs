//! The key authority's audit log: append-only, hash-chained, with signed
//! checkpoints, durable before anything is released.
//!
//! - [`AuditLog`]: the writer. [`AuditLog::append`] resolves only once the
//!   entry is committed; concurrent appends share one transaction (group
//!   commit); a failed commit fails every append in it, so the server
//!   releases no key it could not log.
//! - [`Entry`]: sequence number, time, [`EntryKind`], actor, subject, JSON
//!   details, and `hash = SHA-256(canonical encoding ‖ prev_hash)`.
//! - [`Checkpoint`]: the authority's Ed25519 signature over a head
//!   (`seq`, hash, time), every `checkpoint_every` entries and on demand.
//! - [`verify`] / [`verify_against`]: walk the log and name the first bad
//!   entry; against a checkpoint the caller kept, also catch a rollback.
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
//!     .await?; // only now may the key be released
//! let held = log.checkpoint().await?;
//!
//! let report = verify_against(log.store(), &public, &held).await?;
//! assert_eq!(report.head.seq, receipt.seq);
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod encoding;
mod entry;
mod log;
pub mod merkle;
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
pub use sqlite::{SqliteOptions, SqliteStore};
pub use store::{AuditStore, ChainHead, StoreError};
pub use tree_head::{
    BadTreeHeadSignature, ConsistencyError, InclusionError, TREE_HEAD_VERSION, TreeHead,
    entry_leaf_hash, verify_consistency, verify_inclusion,
};
pub use verify::{VerifyError, VerifyReport, verify, verify_against, verify_with_witnesses};
