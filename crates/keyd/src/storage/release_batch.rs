//! Releases that arrive together are held together (PostgreSQL, decision
//! 0012, eighth slice): the holds of concurrent releases
//! ([`Storage::hold_release`](super::Storage::hold_release)) share one
//! transaction — one `BEGIN`, one statement that locks every host's row
//! (shared, in the hosts' order) and spends every nonce, one `COMMIT` —
//! instead of three statements and a transaction each.
//!
//! - [`Batcher`] gathers the asks: the first caller that finds no batch
//!   running starts one with every ask queued by then. The batch runs in
//!   a task of its own, so a caller that goes away (its client hung up)
//!   strands none of the others.
//! - [`SharedTx`] is a batch's transaction and [`Share`] one release's
//!   part of it. Each release commits its share once its audit entry is
//!   durable; the transaction commits when every share is committed or
//!   dropped, and a committed share returns only then (the answer still
//!   goes out after the commit). A share dropped uncommitted (a refusal,
//!   a record changed meanwhile, an error) gets its nonce back: the
//!   commit deletes it first, so, as with a transaction of its own, a
//!   release that fails before its commit leaves its nonce unspent. If no
//!   share is committed the transaction is rolled back.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::{self, Either};
use tokio::sync::{oneshot, watch};

use super::{StorageError, backend};

/// Asks in one batch at most; the rest wait for the next.
const MAX_BATCH: usize = 256;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data (a queue, counters): a panic elsewhere leaves it usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs asks in batches, one batch at a time (group commit): asks that
/// come while a batch runs go together into the next.
pub(crate) struct Batcher<Q, R> {
    queue: Mutex<Vec<(Q, oneshot::Sender<R>)>>,
    /// Held by the running batch's task.
    running: Arc<tokio::sync::Mutex<()>>,
    batches: AtomicU64,
}

impl<Q, R> Default for Batcher<Q, R> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            running: Arc::default(),
            batches: AtomicU64::new(0),
        }
    }
}

impl<Q, R> std::fmt::Debug for Batcher<Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("batches", &self.batches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, R: Send + 'static> Batcher<Q, R> {
    /// Puts `ask` in the next batch and waits for its answer. `run`
    /// answers a batch, one answer per ask in their order; whichever
    /// caller starts a batch runs it (in a task). `None`: the batch ended
    /// without an answer (its task panicked).
    pub async fn ask<F, Fut>(&self, ask: Q, run: F) -> Option<R>
    where
        F: Fn(Vec<Q>) -> Fut,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (answer, mut answered) = oneshot::channel();
        lock(&self.queue).push((ask, answer));
        loop {
            // A batch's task answers before it lets the next batch start,
            // so once this caller may start one, either its answer is in
            // (taken first) or its ask is still queued.
            let start = std::pin::pin!(self.running.clone().lock_owned());
            let running = match future::select(&mut answered, start).await {
                Either::Left((answer, _)) => return answer.ok(),
                Either::Right((running, _)) => running,
            };
            let asks: Vec<_> = {
                let mut queue = lock(&self.queue);
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            if asks.is_empty() {
                continue;
            }
            self.batches.fetch_add(1, Ordering::Relaxed);
            let (asks, answers): (Vec<Q>, Vec<_>) = asks.into_iter().unzip();
            let batch = run(asks);
            tokio::spawn(async move {
                let results = batch.await;
                for (answer, result) in answers.into_iter().zip(results) {
                    // A caller gone: its answer (and its share) is dropped.
                    let _ = answer.send(result);
                }
                drop(running);
            });
        }
    }

    /// Batches started so far.
    #[cfg(test)]
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

/// The transaction of a batch of holds, shared by its [`Share`]s.
pub(crate) struct SharedTx {
    state: Mutex<SharedState>,
    /// The outcome of the commit, for the shares waiting for it.
    done: watch::Sender<Option<Result<(), StorageError>>>,
}

struct SharedState {
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    /// Shares neither committed nor dropped.
    open: usize,
    committed: usize,
    /// Nonces the transaction spent for asks that did not keep them (a
    /// share dropped, an unknown host): deleted before the commit.
    unspend: Vec<[u8; 16]>,
}

impl SharedTx {
    /// `tx`, to be shared by `shares` shares; `unspend`, nonces it spent
    /// that no share keeps.
    pub fn new(
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        shares: usize,
        unspend: Vec<[u8; 16]>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SharedState {
                tx: Some(tx),
                open: shares,
                committed: 0,
                unspend,
            }),
            done: watch::Sender::new(None),
        })
    }

    /// A share's end: whether it was the last, and then whether the
    /// transaction is to commit (some share committed).
    fn end(&self, committed: bool, unspend: Option<[u8; 16]>) -> Option<bool> {
        let mut state = lock(&self.state);
        state.open = state.open.saturating_sub(1);
        if committed {
            state.committed += 1;
        }
        state.unspend.extend(unspend);
        (state.open == 0).then_some(state.committed > 0)
    }

    /// Commits (the nonces no share keeps deleted first) and tells every
    /// waiting share.
    async fn commit(self: Arc<Self>) {
        let (tx, unspend) = {
            let mut state = lock(&self.state);
            (state.tx.take(), std::mem::take(&mut state.unspend))
        };
        let result = match tx {
            Some(tx) => commit_giving_back(tx, &unspend).await,
            None => Ok(()),
        };
        self.done.send_replace(Some(result));
    }

    /// Lets the transaction go without a commit (rolled back).
    fn roll_back(&self) {
        let tx = lock(&self.state).tx.take();
        drop(tx);
    }
}

async fn commit_giving_back(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    unspend: &[[u8; 16]],
) -> Result<(), StorageError> {
    if !unspend.is_empty() {
        sqlx::query("DELETE FROM keyd_nonces WHERE nonce = ANY($1::bytea[])")
            .bind(unspend.iter().map(|n| &n[..]).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

/// One release's part of a [`SharedTx`]: the rows its batch holds stay
/// held until every share of the batch has ended.
pub(crate) struct Share {
    tx: Arc<SharedTx>,
    /// The nonce this share's ask spent, given back if it is dropped.
    spent: Option<[u8; 16]>,
    ended: bool,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share").finish_non_exhaustive()
    }
}

impl Share {
    pub fn new(tx: &Arc<SharedTx>, spent: Option<[u8; 16]>) -> Self {
        Self {
            tx: tx.clone(),
            spent,
            ended: false,
        }
    }

    /// Returns once the batch's transaction has committed (every other
    /// share committed or dropped), with its outcome.
    pub async fn commit(mut self) -> Result<(), StorageError> {
        self.ended = true;
        let mut done = self.tx.done.subscribe();
        if self.tx.end(true, None).is_some() {
            // The commit runs in a task: a caller that goes away while
            // it runs strands no other share.
            tokio::spawn(self.tx.clone().commit());
        }
        // Not kept while waiting: if the commit's task panics, the
        // transaction (and the sender) go with the last reference.
        drop(self);
        match done.wait_for(Option::is_some).await {
            Ok(outcome) => match outcome.as_ref() {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(again(e)),
                None => Err(lost()),
            },
            Err(_) => Err(lost()),
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        match self.tx.end(false, self.spent) {
            None => {}
            Some(false) => self.tx.roll_back(),
            Some(true) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(self.tx.clone().commit())),
                // No runtime (a process ending): the transaction rolls
                // back with the last reference; waiting shares fail.
                Err(_) => self.tx.roll_back(),
            },
        }
    }
}

/// A batch's task ended without telling (it panicked).
pub(crate) fn lost() -> StorageError {
    StorageError::Unavailable(sqlx::Error::WorkerCrashed)
}

/// The same error for another member of a batch (a driver's error is not
/// `Clone`): its kind is kept, so an unreachable or read-only database
/// still refuses every release with the stable code.
pub(crate) fn again(e: &StorageError) -> StorageError {
    match e {
        StorageError::Unavailable(inner) => {
            StorageError::Unavailable(sqlx::Error::Io(std::io::Error::other(inner.to_string())))
        }
        StorageError::ReadOnly => StorageError::ReadOnly,
        StorageError::Contended(host) => StorageError::Contended(host.clone()),
        StorageError::Corrupt(what) => StorageError::Corrupt(what.clone()),
        StorageError::HostExists(host) => StorageError::HostExists(host.clone()),
        StorageError::NewerSchema { found, known } => StorageError::NewerSchema {
            found: *found,
            known: *known,
        },
        StorageError::SchemaVersion { found, known } => StorageError::SchemaVersion {
            found: *found,
            known: *known,
        },
        StorageError::Backend(_) | StorageError::SecretsKey(_) => {
            StorageError::Backend(sqlx::Error::Protocol(e.to_string()))
        }
    }
}
