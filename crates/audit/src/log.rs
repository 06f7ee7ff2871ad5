//! The log's writer: group commit with fail-closed acknowledgements.
//!
//! Every [`AuditLog::append`] goes through a channel to one writer task.
//! The writer takes whatever is queued (up to `max_batch`), chains it onto
//! the head, adds a signed checkpoint when one is due, and commits it all
//! in one transaction: one fsync for the batch rather than one per entry,
//! so durability does not cap the release rate. Each caller's future
//! resolves only after its batch committed; if the commit fails, every
//! caller in the batch gets the error, and the server must then refuse the
//! release it was about to make.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::{AuditPublicKey, AuditSigningKey, BadCheckpointSignature, Checkpoint};
use crate::entry::{Entry, MAX_DETAILS_LEN, MAX_NAME_LEN, NewEntry};
use crate::store::{AuditStore, ChainHead, StoreError};

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
    /// Sign a checkpoint once this many entries have been added since the
    /// last one (at the end of the batch that crosses the mark).
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
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the last entry (seq {seq}) does not match its own hash: the audit log was changed; \
         run `atrest keyd audit verify`"
    )]
    CorruptHead { seq: u64 },
    #[error("{0}: the audit key is not the one that signed this log, or the log was changed")]
    ForeignCheckpoint(BadCheckpointSignature),
}

/// Proof that an entry is durably in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub hash: crate::EntryHash,
    pub timestamp_ms: u64,
    /// The latest checkpoint once the entry's batch committed (it may
    /// precede the entry). The server hands it to the host with its key.
    pub checkpoint: Option<Checkpoint>,
}

/// Counters of the writer, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Transactions committed.
    pub batches: u64,
    pub entries: u64,
    pub checkpoints: u64,
    /// Transactions that failed (each failed every append in it).
    pub failed_batches: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    checkpoints: AtomicU64,
    failed_batches: AtomicU64,
}

#[derive(Clone, Copy)]
struct Committed {
    head: ChainHead,
    checkpoint: Option<Checkpoint>,
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
}

impl<S: AuditStore> Clone for AuditLog<S> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            store: self.store.clone(),
            counters: self.counters.clone(),
            committed: self.committed.clone(),
            public_key: self.public_key,
        }
    }
}

impl<S: AuditStore> AuditLog<S> {
    /// Resumes the log in `store` and starts its writer on the current
    /// tokio runtime. Checks the tail cheaply (the head entry's own hash,
    /// the latest checkpoint's signature) so a tampered or foreign log is
    /// not silently extended; a full check is [`crate::verify`].
    pub async fn open(
        store: S,
        key: AuditSigningKey,
        options: LogOptions,
        clock: impl Clock,
    ) -> Result<Self, OpenError> {
        let head = store.head().await?;
        if head.seq > 0 {
            let last = store.read_entries(head.seq, 1).await?;
            match last.first() {
                Some(entry) if entry.compute_hash() == entry.hash => {}
                _ => return Err(OpenError::CorruptHead { seq: head.seq }),
            }
        }
        let checkpoint = store.latest_checkpoint().await?;
        if let Some(cp) = &checkpoint {
            cp.verify(&key.public_key())
                .map_err(OpenError::ForeignCheckpoint)?;
        }
        let store = Arc::new(store);
        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let (committed_tx, committed) = watch::channel(Committed { head, checkpoint });
        let public_key = key.public_key();
        let writer = Writer {
            store: store.clone(),
            key,
            clock: Box::new(clock),
            options,
            counters: counters.clone(),
            committed: committed_tx,
            head,
            checkpoint,
            reload: false,
        };
        tokio::spawn(writer.run(receiver));
        Ok(Self {
            sender,
            store,
            counters,
            committed,
            public_key,
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

    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.committed.borrow().checkpoint
    }

    pub fn public_key(&self) -> AuditPublicKey {
        self.public_key
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
            failed_batches: self.counters.failed_batches.load(Ordering::Relaxed),
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
    /// After a failed commit the outcome is uncertain (a commit can fail
    /// after reaching the disk), so the head is read back from the store
    /// before the next batch.
    reload: bool,
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
        let mut head = self.head;
        let timestamp_ms = self.clock.now_ms().max(head.timestamp_ms);
        let mut entries = Vec::new();
        let mut wants_checkpoint = false;
        for command in batch.iter_mut() {
            match command {
                Command::Append(pending, _) => {
                    let mut entry = Entry {
                        seq: head.seq + 1,
                        timestamp_ms,
                        kind: pending.kind,
                        actor: std::mem::take(&mut pending.actor),
                        subject: pending.subject.take(),
                        details: std::mem::take(&mut pending.details),
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

        if entries.is_empty() && checkpoint.is_none() {
            // Only checkpoint requests, and nothing new to sign.
            return self.succeed(batch, &entries);
        }
        match self.store.append(&entries, checkpoint.as_slice()).await {
            Ok(()) => {
                self.head = head;
                if checkpoint.is_some() {
                    self.checkpoint = checkpoint;
                    self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .entries
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                self.committed.send_replace(Committed {
                    head,
                    checkpoint: self.checkpoint,
                });
                self.succeed(batch, &entries);
            }
            Err(e) => {
                self.reload = true;
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, entries = entries.len(), "audit batch not committed");
                self.fail(batch, &e);
            }
        }
    }

    async fn reload_head(&mut self) -> Result<(), StoreError> {
        self.head = self.store.head().await?;
        self.checkpoint = self.store.latest_checkpoint().await?;
        Ok(())
    }

    fn succeed(&self, batch: &mut Vec<Command>, entries: &[Entry]) {
        let mut entries = entries.iter();
        for command in batch.drain(..) {
            // A caller that gave up (its future dropped) has no receiver;
            // its entry is in the log all the same.
            match command {
                Command::Append(_, reply) => {
                    let result = entries
                        .next()
                        .map(|e| Receipt {
                            seq: e.seq,
                            hash: e.hash,
                            timestamp_ms: e.timestamp_ms,
                            checkpoint: self.checkpoint,
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
