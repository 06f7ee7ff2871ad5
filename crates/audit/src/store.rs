//! Where the log lives. A store only keeps rows: it knows nothing of hashes
//! or signatures, so a PostgreSQL backend is one more implementation of
//! [`AuditStore`] and the chain logic stays in one place.

use std::future::Future;

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, EntryHash};
use crate::tree_head::TreeHead;

/// The last entry of the chain, or the empty chain's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// 0 for an empty log.
    pub seq: u64,
    pub hash: EntryHash,
    pub timestamp_ms: u64,
}

impl ChainHead {
    pub const EMPTY: ChainHead = ChainHead {
        seq: 0,
        hash: EntryHash::GENESIS,
        timestamp_ms: 0,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed (disk full, read-only, locked,
    /// gone). Nothing of the failed call was written.
    #[error("audit store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A row cannot be read back as an entry or checkpoint: a sign of
    /// tampering or damage.
    #[error("audit store: the row at seq {seq} is unreadable ({reason})")]
    Corrupt { seq: u64, reason: String },
    #[error(
        "audit store: schema version {found}, this atrest knows version {known}; \
         use the atrest release that wrote it"
    )]
    SchemaVersion { found: i64, known: i64 },
    /// Another writer (a second `atrest keyd` replica on the same
    /// PostgreSQL database) appended first: the batch does not continue
    /// the chain head any more and nothing of it was written. The caller
    /// re-chains the batch on the new head and retries; the chain never
    /// forks.
    #[error(
        "audit store: the batch starts at seq {batch_seq} but the chain head is seq {head_seq} \
         (another replica appended first); nothing was written, re-chain and retry"
    )]
    Conflict { batch_seq: u64, head_seq: u64 },
}

/// An append-only store of entries, signed tree heads and (format 1)
/// checkpoints.
///
/// The methods return `Send` futures so the log's writer can run on any
/// tokio worker; implementations may simply write `async fn`.
pub trait AuditStore: Send + Sync + 'static {
    /// Writes `entries` (consecutive, continuing the chain), `checkpoints`
    /// and `tree_heads` in one atomic, durable transaction: when this
    /// returns `Ok` all of them survive a crash or power loss, and no entry
    /// is ever durable without the head that covers it. `Err` means they
    /// must not be counted on; usually nothing was written, but a failure
    /// after the commit reached the disk is possible, so the caller reads
    /// the head back before building on it.
    fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` entries with `seq >= from`, in `seq` order.
    fn read_entries(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Up to `limit` checkpoints with `seq >= from`, in `seq` order.
    fn read_checkpoints(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;

    /// Up to `limit` tree heads with `tree_size >= from`, in size order.
    fn read_tree_heads(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TreeHead>, StoreError>> + Send;

    /// The tree head with the highest `tree_size`.
    fn latest_tree_head(&self)
    -> impl Future<Output = Result<Option<TreeHead>, StoreError>> + Send;

    /// The entry with the highest `seq`, or [`ChainHead::EMPTY`].
    fn head(&self) -> impl Future<Output = Result<ChainHead, StoreError>> + Send;

    /// The checkpoint with the highest `seq`.
    fn latest_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;
}
