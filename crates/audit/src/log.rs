//! The log's writer: group commit with fail-closed acknowledgements.
//!
//! Every [`AuditLog::append`] goes through a channel to one writer task.
//! The writer takes whatever is queued (up to `max_batch`), chains it onto
//! the head, adds the entries to the Merkle tree, signs a [`TreeHead`] over
//! the new root, and commits entries and head in one transaction: one fsync
//! and one signature for the batch rather than one per entry, so durability
//! does not cap the release rate, and no entry is ever durable without a
//! signed head that covers it. Each caller's future resolves only after its
//! batch committed; if the commit fails, every caller in the batch gets the
//! error, and the server must then refuse the release it was about to make.
//!
//! The tree lives in memory behind a lock that request handlers share for
//! proofs ([`AuditLog::consistency_proof`], [`AuditLog::inclusion_proof`]);
//! the writer holds it for writing only to push a batch's leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::{AuditPublicKey, AuditSigningKey, BadCheckpointSignature, Checkpoint};
use crate::entry::{Entry, MAX_DETAILS_LEN, MAX_NAME_LEN, NewEntry};
use crate::merkle::{ConsistencyProof, InclusionProof, MerkleTree, PathError};
use crate::store::{AuditStore, BatchRows, Catchup, ChainHead, StoreError};
use crate::tree_head::{BadTreeHeadSignature, TreeHead, TreeHeadJson, entry_leaf_hash};
use crate::verify::{Checks, VerifyError, walk};

/// Where the log gets the time. Injected so tests control it; the server
/// passes [`SystemClock`].
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods, reason = "this is the clock")]
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Tuning for [`AuditLog::open`].
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Also sign a format 1 [`Checkpoint`] once this many entries have been
    /// added since the last one (at the end of the batch that crosses the
    /// mark), for hosts that do not check tree heads yet. Every batch gets
    /// a [`TreeHead`] regardless; `u64::MAX` signs no checkpoints unless
    /// asked ([`AuditLog::checkpoint`]).
    pub checkpoint_every: u64,
    /// Most entries committed in one transaction.
    pub max_batch: usize,
    /// Appends that may wait in the queue before `append` itself waits.
    pub queue_capacity: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            max_batch: 512,
            queue_capacity: 8192,
        }
    }
}

/// Why an append (or checkpoint) was not made durable. On any of these the
/// caller must not release a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("audit entry refused: {0}")]
    Invalid(String),
    #[error("the audit entry could not be made durable ({0}); no key may be released")]
    NotDurable(String),
    #[error("the audit log's writer has stopped; no key may be released")]
    Closed,
    #[error("the audit log is empty: there is nothing to sign a checkpoint over")]
    EmptyLog,
}

/// Why [`AuditLog::open`] refused a store.
///
/// Opening reads every entry (to rebuild the Merkle tree), so it takes time
/// in proportion to the log: about a second per million entries.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: the audit key is not the one that signed this log, or the log was changed")]
    ForeignCheckpoint(BadCheckpointSignature),
    #[error("{0}: the audit key is not the one that signed this log, or the log was changed")]
    ForeignTreeHead(BadTreeHeadSignature),
    /// The stored entries do not hash to what the authority signed, or go
    /// past it: someone changed the database. The server must not serve
    /// (nor sign anything over) such a log.
    #[error(
        "the stored audit log does not match its latest signed tree head ({0}); \
         run `atrest keyd audit verify` and restore the database from a backup"
    )]
    DoesNotMatchSignedHead(VerifyError),
}

/// Proof that an entry is durably in the log, and what a host needs to
/// check it: the signed head of the entry's batch and the entry's
/// inclusion proof under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub hash: crate::EntryHash,
    pub timestamp_ms: u64,
    /// The latest format 1 checkpoint once the entry's batch committed (it
    /// may precede the entry), for hosts that only know checkpoints.
    pub checkpoint: Option<Checkpoint>,
    /// The head signed at the end of the entry's batch: it covers the
    /// entry.
    pub tree_head: TreeHead,
    /// `tree_head`'s JSON text (docs/format.md §15.2), encoded once for the
    /// whole batch and shared by its receipts, so that an answer splices
    /// it in rather than encoding the head again per entry. `None` only if
    /// encoding failed (the answer then encodes the head itself).
    pub tree_head_json: Option<TreeHeadJson>,
    /// Leaf `seq - 1` in the tree of `tree_head.tree_size` leaves.
    pub inclusion: InclusionProof,
    /// The entry as stored: a host is sent it to check that the proof is
    /// about its own release ([`crate::verify_inclusion`]).
    pub entry: crate::Entry,
}

/// Why [`AuditLog::consistency_proof`] or [`AuditLog::inclusion_proof`]
/// gave no proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofRequestError {
    #[error("the log has no signed tree head of size {size} or more (the latest is {latest})")]
    NotSigned { size: u64, latest: u64 },
    #[error(transparent)]
    Invalid(#[from] PathError),
}

/// Counters of the writer, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Transactions committed.
    pub batches: u64,
    pub entries: u64,
    pub checkpoints: u64,
    pub tree_heads: u64,
    /// Transactions that failed (each failed every append in it).
    pub failed_batches: u64,
    /// Batches that found, under the store's write lock, that another
    /// writer on the same database (a replica on PostgreSQL) had moved the
    /// chain head, and were chained on the new head.
    pub rechained_batches: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    checkpoints: AtomicU64,
    tree_heads: AtomicU64,
    failed_batches: AtomicU64,
    rechained_batches: AtomicU64,
}

#[derive(Clone, Copy)]
struct Committed {
    head: ChainHead,
    checkpoint: Option<Checkpoint>,
    tree_head: Option<TreeHead>,
}

/// The in-memory tree, shared by the writer and proof requests.
type SharedTree = Arc<RwLock<MerkleTree>>;

/// A panic while the lock was held cannot leave the tree half-pushed in a
/// way a later batch would not repair (the writer reloads after failures),
/// so a poisoned lock is used as is rather than taking the server down.
fn read(tree: &RwLock<MerkleTree>) -> RwLockReadGuard<'_, MerkleTree> {
    tree.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(tree: &RwLock<MerkleTree>) -> RwLockWriteGuard<'_, MerkleTree> {
    tree.write().unwrap_or_else(PoisonError::into_inner)
}

/// A prepared entry: validated, with its details serialized once.
struct Pending {
    kind: crate::EntryKind,
    actor: String,
    subject: Option<String>,
    details: String,
}

enum Command {
    Append(Pending, oneshot::Sender<Result<Receipt, AppendError>>),
    Checkpoint(oneshot::Sender<Result<Checkpoint, AppendError>>),
}

/// The authority's audit log. Cheap to clone; the writer task stops when
/// the last clone is dropped, after committing what was queued.
pub struct AuditLog<S: AuditStore> {
    sender: mpsc::Sender<Command>,
    store: Arc<S>,
    counters: Arc<Counters>,
    committed: watch::Receiver<Committed>,
    public_key: AuditPublicKey,
    tree: SharedTree,
}

impl<S: AuditStore> Clone for AuditLog<S> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            store: self.store.clone(),
            counters: self.counters.clone(),
            committed: self.committed.clone(),
            public_key: self.public_key,
            tree: self.tree.clone(),
        }
    }
}

impl<S: AuditStore> AuditLog<S> {
    /// Resumes the log in `store` and starts its writer on the current
    /// tokio runtime.
    ///
    /// Rebuilds the Merkle tree from every stored entry, checking each
    /// entry's hash and link, and refuses a log whose root at the latest
    /// signed tree head's size is not that head's root, or that goes past
    /// it ([`OpenError::DoesNotMatchSignedHead`]), so a rewritten log is
    /// never extended or signed over. A log without tree heads (written
    /// before they existed, with format 1 checkpoints only) is verified in
    /// full the old way, every checkpoint included, and then gets its first
    /// tree head, signed over all of it.
    pub async fn open(
        store: S,
        key: AuditSigningKey,
        options: LogOptions,
        clock: impl Clock,
    ) -> Result<Self, OpenError> {
        let public_key = key.public_key();
        let mut tree_head = store.latest_tree_head().await?;
        if let Some(th) = &tree_head {
            th.verify(&public_key).map_err(OpenError::ForeignTreeHead)?;
        }
        let checkpoint = store.latest_checkpoint().await?;
        if let Some(cp) = &checkpoint {
            cp.verify(&public_key)
                .map_err(OpenError::ForeignCheckpoint)?;
        }
        let checks = Checks {
            // Every head was checked when it was written and by `verify`;
            // at each start the latest one decides.
            every_tree_head: false,
            // The old way, only for a log that has no tree head yet.
            every_checkpoint: tree_head.is_none(),
            require_covered: tree_head.is_some(),
            ..Checks::default()
        };
        let walked = walk(&store, &public_key, &checks)
            .await
            .map_err(|e| match e {
                VerifyError::Store(e) => OpenError::Store(e),
                other => OpenError::DoesNotMatchSignedHead(other),
            })?;
        let head = walked.report.head;
        // The walk may have found heads newer than the one read above,
        // written by another replica meanwhile.
        tree_head = walked.report.latest_tree_head.or(tree_head);
        if tree_head.is_none() && head.seq > 0 {
            let timestamp_ms = clock.now_ms().max(head.timestamp_ms);
            let first = key.sign_tree_head(head.seq, walked.tree.root(), timestamp_ms);
            store.append(&[], &[], &[first]).await?;
            tracing::info!(
                tree_size = head.seq,
                "audit log from before tree heads verified; signed its first tree head"
            );
            tree_head = Some(first);
        }
        let store = Arc::new(store);
        let counters = Arc::new(Counters::default());
        let tree = Arc::new(RwLock::new(walked.tree));
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let (committed_tx, committed) = watch::channel(Committed {
            head,
            checkpoint,
            tree_head,
        });
        let writer = Writer {
            store: store.clone(),
            key,
            clock: Box::new(clock),
            options,
            counters: counters.clone(),
            committed: committed_tx,
            head,
            checkpoint,
            tree_head,
            tree: tree.clone(),
            reload: false,
        };
        tokio::spawn(writer.run(receiver));
        Ok(Self {
            sender,
            store,
            counters,
            committed,
            public_key,
            tree,
        })
    }

    /// Appends one entry; resolves once it is durable. An `Err` means the
    /// entry may not be in the log: fail closed.
    pub async fn append(&self, entry: NewEntry) -> Result<Receipt, AppendError> {
        let pending = prepare(entry)?;
        let (reply, receive) = oneshot::channel();
        self.sender
            .send(Command::Append(pending, reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        receive.await.map_err(|_| AppendError::Closed)?
    }

    /// Signs a checkpoint over the current head now (or returns the latest
    /// one if nothing was added since).
    pub async fn checkpoint(&self) -> Result<Checkpoint, AppendError> {
        let (reply, receive) = oneshot::channel();
        self.sender
            .send(Command::Checkpoint(reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        receive.await.map_err(|_| AppendError::Closed)?
    }

    /// The head of the chain as last committed.
    pub fn head(&self) -> ChainHead {
        self.committed.borrow().head
    }

    /// The latest format 1 checkpoint.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.committed.borrow().checkpoint
    }

    /// The latest signed tree head: it covers every committed entry. `None`
    /// only for an empty log.
    pub fn tree_head(&self) -> Option<TreeHead> {
        self.committed.borrow().tree_head
    }

    /// The proof that the log of `old_size` entries is a prefix of the log
    /// of `new_size` entries, for a host that kept a head of `old_size` and
    /// is given one of `new_size` (at most the latest signed size). Reads
    /// the in-memory tree in O(log n) under a shared lock.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, ProofRequestError> {
        self.check_signed(new_size)?;
        Ok(read(&self.tree).consistency_proof(old_size, new_size)?)
    }

    /// The proof that entry `seq` is in the log of `tree_size` entries (at
    /// most the latest signed size).
    pub fn inclusion_proof(
        &self,
        seq: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ProofRequestError> {
        self.check_signed(tree_size)?;
        let index = seq.checked_sub(1).ok_or(PathError::IndexOutOfRange {
            index: 0,
            size: tree_size,
        })?;
        Ok(read(&self.tree).inclusion_proof(index, tree_size)?)
    }

    /// Only committed, signed sizes are answered: the tree may briefly hold
    /// the leaves of a batch whose commit is still under way.
    fn check_signed(&self, size: u64) -> Result<(), ProofRequestError> {
        let latest = self.tree_head().map_or(0, |h| h.tree_size);
        if size > latest {
            return Err(ProofRequestError::NotSigned { size, latest });
        }
        Ok(())
    }

    pub fn public_key(&self) -> AuditPublicKey {
        self.public_key
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
            tree_heads: self.counters.tree_heads.load(Ordering::Relaxed),
            failed_batches: self.counters.failed_batches.load(Ordering::Relaxed),
            rechained_batches: self.counters.rechained_batches.load(Ordering::Relaxed),
        }
    }

    /// Requests waiting for the writer (a gauge for metrics).
    pub fn queue_len(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// The store, for reading (`tail`, `verify`).
    pub fn store(&self) -> &S {
        &self.store
    }
}

fn prepare(entry: NewEntry) -> Result<Pending, AppendError> {
    let name_ok = |s: &str| s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control);
    if entry.actor.is_empty() || !name_ok(&entry.actor) {
        return Err(AppendError::Invalid(format!(
            "the actor must be 1 to {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    if let Some(subject) = &entry.subject
        && !name_ok(subject)
    {
        return Err(AppendError::Invalid(format!(
            "the subject must be at most {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    let details = serde_json::to_string(&entry.details)
        .map_err(|e| AppendError::Invalid(format!("details: {e}")))?;
    if details.len() > MAX_DETAILS_LEN {
        return Err(AppendError::Invalid(format!(
            "details are {} bytes, more than {MAX_DETAILS_LEN}",
            details.len()
        )));
    }
    Ok(Pending {
        kind: entry.kind,
        actor: entry.actor,
        subject: entry.subject,
        details,
    })
}

struct Writer<S> {
    store: Arc<S>,
    key: AuditSigningKey,
    clock: Box<dyn Clock>,
    options: LogOptions,
    counters: Arc<Counters>,
    committed: watch::Sender<Committed>,
    /// The committed head; batches build on it and only move it forward
    /// once they committed.
    head: ChainHead,
    checkpoint: Option<Checkpoint>,
    tree_head: Option<TreeHead>,
    /// Holds exactly `head.seq` leaves between batches.
    tree: SharedTree,
    /// After a failed commit the outcome is uncertain (a commit can fail
    /// after reaching the disk), so the head (and the tree) are read back
    /// from the store before the next batch.
    reload: bool,
}

/// A batch ready to commit.
struct Prepared {
    entries: Vec<Entry>,
    head: ChainHead,
    checkpoint: Option<Checkpoint>,
    tree_head: Option<TreeHead>,
    inclusions: Vec<InclusionProof>,
}

impl BatchRows for Prepared {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn checkpoints(&self) -> &[Checkpoint] {
        self.checkpoint.as_slice()
    }

    fn tree_heads(&self) -> &[TreeHead] {
        self.tree_head.as_slice()
    }
}

impl<S: AuditStore> Writer<S> {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while let Some(first) = receiver.recv().await {
            batch.push(first);
            while batch.len() < self.options.max_batch.max(1) {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch).await;
        }
    }

    async fn commit_batch(&mut self, batch: &mut Vec<Command>) {
        if self.reload {
            match self.reload_head().await {
                Ok(()) => self.reload = false,
                Err(e) => return self.fail(batch, &e),
            }
        }
        // The store writes a batch only under its write lock and only on
        // the head it continues (asking for it again on a head another
        // replica moved): a batch always continues the head, whichever
        // replica on the same database appended last.
        let store = self.store.clone();
        let known = self.head;
        let written = store
            .append_locked(known, |catchup| {
                if let Some(catchup) = catchup {
                    self.catch_up(catchup)?;
                }
                self.prepare(batch)
            })
            .await;
        let prepared = match written {
            Ok(prepared) => prepared,
            Err(e) => {
                write(&self.tree).truncate(self.head.seq);
                self.reload = true;
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit batch not committed");
                return self.fail(batch, &e);
            }
        };
        let wrote = !prepared.entries.is_empty() || prepared.checkpoint.is_some();
        self.head = prepared.head;
        if prepared.checkpoint.is_some() {
            self.checkpoint = prepared.checkpoint;
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        if prepared.tree_head.is_some() {
            self.tree_head = prepared.tree_head;
            self.counters.tree_heads.fetch_add(1, Ordering::Relaxed);
        }
        if wrote {
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .entries
                .fetch_add(prepared.entries.len() as u64, Ordering::Relaxed);
        }
        // Also after a catch-up alone (only checkpoint requests, nothing
        // new to sign): the head moved.
        self.committed.send_replace(Committed {
            head: self.head,
            checkpoint: self.checkpoint,
            tree_head: self.tree_head,
        });
        self.succeed(batch, prepared);
    }

    /// Brings the writer to the head another writer moved (under the
    /// store's write lock): checks that the entries it appended continue
    /// this writer's head, adds them to the tree, and takes the latest
    /// checkpoint and tree head.
    fn catch_up(&mut self, catchup: Catchup) -> Result<(), StoreError> {
        let mut head = self.head;
        let mut leaves = Vec::with_capacity(catchup.entries.len());
        for entry in &catchup.entries {
            if entry.seq != head.seq + 1 || entry.prev_hash != head.hash {
                return Err(StoreError::Corrupt {
                    seq: entry.seq,
                    reason: format!(
                        "does not continue seq {} that this writer knew: the chain was changed",
                        head.seq
                    ),
                });
            }
            if entry.hash != entry.compute_hash() {
                return Err(StoreError::Corrupt {
                    seq: entry.seq,
                    reason: "its hash does not match its contents".into(),
                });
            }
            head = ChainHead {
                seq: entry.seq,
                hash: entry.hash,
                timestamp_ms: entry.timestamp_ms,
            };
            leaves.push(entry_leaf_hash(entry));
        }
        if head.seq != catchup.head.seq || head.hash != catchup.head.hash {
            return Err(StoreError::Corrupt {
                seq: catchup.head.seq,
                reason: format!(
                    "the chain head does not follow from seq {} that this writer knew",
                    self.head.seq
                ),
            });
        }
        {
            let mut tree = write(&self.tree);
            tree.truncate(self.head.seq);
            for leaf in leaves {
                tree.push(leaf);
            }
        }
        self.counters
            .rechained_batches
            .fetch_add(1, Ordering::Relaxed);
        self.head = catchup.head;
        self.checkpoint = catchup.checkpoint.or(self.checkpoint);
        self.tree_head = catchup.tree_head.or(self.tree_head);
        Ok(())
    }

    /// Chains the batch's entries onto the head, adds them to the tree, and
    /// signs what is due. The proofs are made here, before the commit, so
    /// that nothing can fail once the batch is durable.
    fn prepare(&self, batch: &[Command]) -> Result<Prepared, StoreError> {
        let mut head = self.head;
        let timestamp_ms = self.clock.now_ms().max(head.timestamp_ms);
        let mut entries = Vec::new();
        let mut wants_checkpoint = false;
        for command in batch {
            match command {
                Command::Append(pending, _) => {
                    let mut entry = Entry {
                        seq: head.seq + 1,
                        timestamp_ms,
                        kind: pending.kind,
                        // Copied: the store may ask for the batch again
                        // on a head another writer moved.
                        actor: pending.actor.clone(),
                        subject: pending.subject.clone(),
                        details: pending.details.clone(),
                        prev_hash: head.hash,
                        hash: crate::EntryHash::GENESIS,
                    };
                    entry.hash = entry.compute_hash();
                    head = ChainHead {
                        seq: entry.seq,
                        hash: entry.hash,
                        timestamp_ms,
                    };
                    entries.push(entry);
                }
                Command::Checkpoint(_) => wants_checkpoint = true,
            }
        }
        let last_sealed = self.checkpoint.map_or(0, |c| c.seq);
        let due = head.seq.saturating_sub(last_sealed) >= self.options.checkpoint_every.max(1);
        let checkpoint = ((due || wants_checkpoint) && head.seq > last_sealed)
            .then(|| self.key.sign_checkpoint(head.seq, head.hash, timestamp_ms));

        let mut tree_head = None;
        let mut inclusions = Vec::with_capacity(entries.len());
        if !entries.is_empty() {
            {
                let mut tree = write(&self.tree);
                tree.truncate(self.head.seq);
                for entry in &entries {
                    tree.push(entry_leaf_hash(entry));
                }
            }
            let tree = read(&self.tree);
            let root = tree.root_at(head.seq).map_err(unexpected)?;
            tree_head = Some(self.key.sign_tree_head(head.seq, root, timestamp_ms));
            for entry in &entries {
                inclusions.push(
                    tree.inclusion_proof(entry.seq - 1, head.seq)
                        .map_err(unexpected)?,
                );
            }
        }
        Ok(Prepared {
            entries,
            head,
            checkpoint,
            tree_head,
            inclusions,
        })
    }

    /// Reads the head back, and brings the tree to it: the leaves of a
    /// commit that reported failure but reached the disk are added.
    async fn reload_head(&mut self) -> Result<(), StoreError> {
        let head = self.store.head().await?;
        let checkpoint = self.store.latest_checkpoint().await?;
        let tree_head = self.store.latest_tree_head().await?;
        let mut size = read(&self.tree).size();
        if size > head.seq {
            write(&self.tree).truncate(head.seq);
            size = head.seq;
        }
        while size < head.seq {
            let page = self.store.read_entries(size + 1, 1000).await?;
            if page.is_empty() {
                return Err(StoreError::Corrupt {
                    seq: size + 1,
                    reason: "missing while reloading the audit tree".into(),
                });
            }
            let mut tree = write(&self.tree);
            for entry in page.iter().filter(|e| e.seq <= head.seq) {
                if entry.seq != size + 1 {
                    return Err(StoreError::Corrupt {
                        seq: size + 1,
                        reason: "missing while reloading the audit tree".into(),
                    });
                }
                tree.push(entry_leaf_hash(entry));
                size += 1;
            }
        }
        self.head = head;
        self.checkpoint = checkpoint;
        self.tree_head = tree_head;
        Ok(())
    }

    fn succeed(&self, batch: &mut Vec<Command>, prepared: Prepared) {
        // Once per batch, and only for a batch that appended.
        let tree_head_json = self
            .tree_head
            .filter(|_| !prepared.entries.is_empty())
            .and_then(|head| TreeHeadJson::new(&head));
        // Moved, not copied: each entry and proof goes to its own caller.
        let mut receipts = prepared.entries.into_iter().zip(prepared.inclusions);
        for command in batch.drain(..) {
            // A caller that gave up (its future dropped) has no receiver;
            // its entry is in the log all the same.
            match command {
                Command::Append(_, reply) => {
                    let result = receipts
                        .next()
                        .zip(self.tree_head)
                        .map(|((entry, inclusion), tree_head)| Receipt {
                            seq: entry.seq,
                            hash: entry.hash,
                            timestamp_ms: entry.timestamp_ms,
                            checkpoint: self.checkpoint,
                            tree_head,
                            tree_head_json: tree_head_json.clone(),
                            inclusion,
                            entry,
                        })
                        .ok_or(AppendError::Closed);
                    let _ = reply.send(result);
                }
                Command::Checkpoint(reply) => {
                    let _ = reply.send(self.checkpoint.ok_or(AppendError::EmptyLog));
                }
            }
        }
    }

    fn fail(&self, batch: &mut Vec<Command>, error: &StoreError) {
        let error = AppendError::NotDurable(error.to_string());
        for command in batch.drain(..) {
            match command {
                Command::Append(_, reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Checkpoint(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The tree always holds the leaves just pushed, so a proof request over
/// them cannot fail; if it ever did, the batch is refused, not logged
/// without its proof.
fn unexpected(e: PathError) -> StoreError {
    StoreError::Backend(format!("audit tree out of step with the log: {e}").into())
}
