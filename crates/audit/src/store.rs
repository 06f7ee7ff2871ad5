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
    /// A batch given to [`AuditStore::append`] does not continue the chain
    /// head (another writer, a second `atrest keyd` replica on the same
    /// PostgreSQL database, appended first) and nothing of it was written;
    /// the chain never forks. The log's writer appends through
    /// [`AuditStore::append_locked`], which prepares the batch under the
    /// head's lock and so never meets this.
    #[error(
        "audit store: the batch starts at seq {batch_seq} but the chain head is seq {head_seq} \
         (another replica appended first); nothing was written, re-chain and retry"
    )]
    Conflict { batch_seq: u64, head_seq: u64 },
}

/// What a writer finds under the store's write lock when another writer
/// (a second `atrest keyd` replica on the same PostgreSQL database) moved
/// the chain head past the one it knew: what it needs to build on the new
/// head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catchup {
    /// The chain head as it is now.
    pub head: ChainHead,
    /// The entries after the writer's head up to `head`, in `seq` order.
    pub entries: Vec<Entry>,
    pub checkpoint: Option<Checkpoint>,
    pub tree_head: Option<TreeHead>,
}

/// The rows of one prepared batch, as [`AuditStore::append_locked`] writes
/// them.
pub trait BatchRows {
    fn entries(&self) -> &[Entry];
    fn checkpoints(&self) -> &[Checkpoint];
    fn tree_heads(&self) -> &[TreeHead];
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

    /// Prepares a batch on the chain head and writes it, such that no other
    /// writer can append in between: the log's writer calls this for every
    /// group commit.
    ///
    /// A store several writers share (PostgreSQL) writes a batch only
    /// under its write lock and only on the head as it is: it compares
    /// the head with `known` (the head the caller built its state on); if
    /// it moved, `prepare` is given what was appended meanwhile
    /// ([`Catchup`]), else `None`. The batch `prepare` returns is written
    /// under the same lock, so it always continues the head and no writer
    /// ever fails another's batch. `prepare` must build on `known` (or the
    /// catch-up's head).
    ///
    /// A store may call `prepare` more than once (PostgreSQL first tries
    /// a batch prepared on `known` without the lock, see
    /// [`crate::PgStore`]); only the batch it returns was written.
    ///
    /// This default is for a store with one writer (SQLite, which one
    /// `atrest keyd` owns through `keyd.lock`): nobody else moves the head,
    /// so `prepare` runs on `known` and the batch is [`Self::append`]ed.
    /// A batch without entries or checkpoints is not written. Errors are
    /// those of [`Self::append`], plus whatever `prepare` returns (then
    /// nothing was written).
    fn append_locked<B, F>(
        &self,
        known: ChainHead,
        mut prepare: F,
    ) -> impl Future<Output = Result<B, StoreError>> + Send
    where
        B: BatchRows + Send,
        F: FnMut(Option<Catchup>) -> Result<B, StoreError> + Send,
    {
        let _ = known;
        async move {
            let batch = prepare(None)?;
            if !(batch.entries().is_empty() && batch.checkpoints().is_empty()) {
                self.append(batch.entries(), batch.checkpoints(), batch.tree_heads())
                    .await?;
            }
            Ok(batch)
        }
    }

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
