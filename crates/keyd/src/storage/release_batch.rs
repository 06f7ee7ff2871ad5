//! Releases that arrive together are held together (PostgreSQL, decision
//! 0012, eighth and ninth slices): the holds of concurrent releases
//! ([`Storage::hold_release`](super::Storage::hold_release)) share one
//! transaction — one `BEGIN`, one statement that locks every host's row
//! (shared, in the hosts' order) and spends every nonce, one `COMMIT` —
//! instead of three statements and a transaction each.
//!
//! - [`Batcher`] gathers the asks, group-commit style: an ask that finds
//!   the batcher idle (nothing queued, no batch running) runs at once in
//!   its caller's task, a batch of one with no hand-off; asks that come
//!   while a batch runs queue up, and the first of them to find the
//!   batch over starts the next with every ask queued by then. A batch
//!   of several runs in a task of its own, so a caller that goes away
//!   (its client hung up) strands none of the others.
//! - [`SharedTx`] is a batch's transaction and [`Share`] one release's
//!   part of it. Each release commits its share once its audit entry is
//!   durable; the transaction commits when every share is committed or
//!   dropped, and a committed share returns only then (the answer still
//!   goes out after the commit). The last share commits in its own task
//!   when no other committed share waits for it (a batch of one), else in
//!   a task of its own. A share dropped uncommitted (a refusal, a record
//!   changed meanwhile, an error) gets its nonce back: the commit deletes
//!   it first, so, as with a transaction of its own, a release that fails
//!   before its commit leaves its nonce unspent. If no share is committed
//!   the transaction is rolled back.

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

/// Runs asks in batches, one batch at a time (group commit): an ask that
/// finds the batcher idle runs at once in its caller's task; asks that
/// come while a batch runs go together into the next.
pub(crate) struct Batcher<Q, R> {
    queue: Mutex<Vec<(Q, oneshot::Sender<R>)>>,
    /// Held by whoever runs the current batch (its caller, or its task).
    running: Arc<tokio::sync::Mutex<()>>,
    counts: Arc<BatchCounts>,
}

/// What a [`Batcher`] and its batches' transactions did so far.
#[derive(Default)]
pub(crate) struct BatchCounts {
    batches: AtomicU64,
    /// Asks answered by a batch's task rather than run in their caller's
    /// (each costs a wake-up of that task and one of the caller).
    handed_off: AtomicU64,
    /// Commits of a [`SharedTx`] run in a task of their own rather than
    /// by the share that ended last.
    commits_handed_off: AtomicU64,
}

impl std::fmt::Debug for BatchCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCounts")
            .field("batches", &self.batches.load(Ordering::Relaxed))
            .field("handed_off", &self.handed_off.load(Ordering::Relaxed))
            .field(
                "commits_handed_off",
                &self.commits_handed_off.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl<Q, R> Default for Batcher<Q, R> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            running: Arc::default(),
            counts: Arc::default(),
        }
    }
}

impl<Q, R> std::fmt::Debug for Batcher<Q, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, R: Send + 'static> Batcher<Q, R> {
    /// Answers `ask`, alone at once if no batch runs and none is queued,
    /// else in the next batch. `run` answers a batch, one answer per ask
    /// in their order. `None`: the batch ended without an answer (its
    /// task panicked).
    pub async fn ask<F, Fut>(&self, ask: Q, run: F) -> Option<R>
    where
        F: Fn(Vec<Q>) -> Fut,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        // The leader of an idle batcher. Asks that come meanwhile wait for
        // `running`, which this caller holds until its answer is in: they
        // form the next batch.
        if let Ok(running) = self.running.clone().try_lock_owned() {
            if lock(&self.queue).is_empty() {
                self.counts.batches.fetch_add(1, Ordering::Relaxed);
                let answer = run(vec![ask]).await.pop();
                drop(running);
                return answer;
            }
            // Asks queued that have not reached `running` yet: they go
            // first.
            drop(running);
        }
        let (answer, mut answered) = oneshot::channel();
        lock(&self.queue).push((ask, answer));
        loop {
            // A batch answers before it lets the next batch start, so once
            // this caller may start one, either its answer is in (taken
            // first) or its ask is still queued.
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
            self.counts.batches.fetch_add(1, Ordering::Relaxed);
            let (asks, answers): (Vec<Q>, Vec<_>) = asks.into_iter().unzip();
            if asks.len() == 1 {
                // Only this caller's own ask (it is queued, and nothing
                // else was): run here, as an idle batcher's leader does.
                // Its answer is taken at the top of the loop.
                let results = run(asks).await;
                answer_all(answers, results);
                drop(running);
                continue;
            }
            self.counts
                .handed_off
                .fetch_add(asks.len() as u64, Ordering::Relaxed);
            let batch = run(asks);
            tokio::spawn(async move {
                answer_all(answers, batch.await);
                drop(running);
            });
        }
    }

    /// The counts, shared with the batches' [`SharedTx`]s.
    pub fn counts(&self) -> &Arc<BatchCounts> {
        &self.counts
    }

    /// Asks waiting for the next batch.
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.queue).len()
    }
}

#[cfg(test)]
impl BatchCounts {
    /// Batches run so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Asks answered by a batch's task so far (none for asks that each
    /// found the batcher idle).
    pub fn handed_off(&self) -> u64 {
        self.handed_off.load(Ordering::Relaxed)
    }

    /// Shared transactions committed by a task of their own so far.
    pub fn commits_handed_off(&self) -> u64 {
        self.commits_handed_off.load(Ordering::Relaxed)
    }
}

fn answer_all<R>(answers: Vec<oneshot::Sender<R>>, results: Vec<R>) {
    for (answer, result) in answers.into_iter().zip(results) {
        // A caller gone: its answer (and its share) is dropped.
        let _ = answer.send(result);
    }
}

/// The transaction of a batch of holds, shared by its [`Share`]s.
pub(crate) struct SharedTx {
    state: Mutex<SharedState>,
    /// The outcome of the commit, for the shares waiting for it.
    done: watch::Sender<Option<Result<(), StorageError>>>,
    counts: Arc<BatchCounts>,
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
        counts: &Arc<BatchCounts>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SharedState {
                tx: Some(tx),
                open: shares,
                committed: 0,
                unspend,
            }),
            done: watch::Sender::new(None),
            counts: counts.clone(),
        })
    }

    /// Commits in a task of its own, for shares that wait for it.
    fn commit_in_task(self: Arc<Self>, runtime: &tokio::runtime::Handle) {
        self.counts
            .commits_handed_off
            .fetch_add(1, Ordering::Relaxed);
        drop(runtime.spawn(self.commit()));
    }

    /// A share's end: `None` while other shares are open; for the last,
    /// how many shares committed (the transaction commits if any did).
    fn end(&self, committed: bool, unspend: Option<[u8; 16]>) -> Option<usize> {
        let mut state = lock(&self.state);
        state.open = state.open.saturating_sub(1);
        if committed {
            state.committed += 1;
        }
        state.unspend.extend(unspend);
        (state.open == 0).then_some(state.committed)
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
        let tx = self.tx.clone();
        // Not kept while waiting: if the commit's task panics, the
        // transaction (and the sender) go with the last reference.
        drop(self);
        match tx.end(true, None) {
            None => drop(tx),
            // No other share waits for this commit (a batch of one, or
            // the others dropped): it runs here, and a caller that goes
            // away meanwhile rolls back only its own release.
            Some(1) => tx.commit().await,
            // Others wait: the commit runs in a task, so a caller that
            // goes away while it runs strands none of them.
            Some(_) => tx.commit_in_task(&tokio::runtime::Handle::current()),
        }
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
            Some(0) => self.tx.roll_back(),
            Some(_) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => self.tx.clone().commit_in_task(&runtime),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::Batcher;

    tokio::task_local! {
        /// The asking caller, seen by a batch only if it runs in that
        /// caller's task.
        static CALLER: u32;
    }

    /// A batcher whose batches answer each ask with the caller whose task
    /// ran it (if any), once `gate` lets them through.
    fn ask(
        batcher: &Batcher<u32, (u32, Option<u32>)>,
        gate: &Arc<Semaphore>,
        i: u32,
    ) -> impl Future<Output = Option<(u32, Option<u32>)>> {
        let run = {
            let gate = gate.clone();
            move |asks: Vec<u32>| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await.unwrap().forget();
                    let caller = CALLER.try_with(|caller| *caller).ok();
                    asks.into_iter().map(|ask| (ask, caller)).collect()
                }
            }
        };
        CALLER.scope(i, async move { batcher.ask(i, run).await })
    }

    #[tokio::test]
    async fn asks_one_after_another_run_in_their_callers_tasks() {
        let batcher = Batcher::default();
        let gate = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        for i in 0..5 {
            assert_eq!(ask(&batcher, &gate, i).await, Some((i, Some(i))));
        }
        assert_eq!(batcher.counts().batches(), 5);
        assert_eq!(batcher.counts().handed_off(), 0);
    }

    /// Asks `n` at once: the first finds the batcher idle and runs in its
    /// caller's task, held there until the other `n - 1` are queued.
    /// Their answers, and the batches and hand-offs that took.
    async fn ask_while_the_first_runs(n: u32) -> (Vec<Option<(u32, Option<u32>)>>, u64, u64) {
        let batcher = Batcher::default();
        let gate = Arc::new(Semaphore::new(0));
        let asks = futures::future::join_all((0..n).map(|i| ask(&batcher, &gate, i)));
        let open = async {
            while batcher.queued() < n as usize - 1 {
                tokio::task::yield_now().await;
            }
            gate.add_permits(2);
        };
        let (answers, ()) = tokio::join!(asks, open);
        let counts = batcher.counts();
        (answers, counts.batches(), counts.handed_off())
    }

    /// The nine that come while the first runs wait, then go together into
    /// one batch run by a task of its own.
    #[tokio::test]
    async fn asks_that_come_while_a_batch_runs_share_the_next() {
        let mut expected = vec![Some((0, Some(0)))];
        expected.extend((1..10).map(|i| Some((i, None))));
        assert_eq!(ask_while_the_first_runs(10).await, (expected, 2, 9));
    }

    /// An ask that waited for a batch and is then the only one queued runs
    /// alone in its own task too: no hand-off for a batch of one.
    #[tokio::test]
    async fn a_lone_ask_after_a_batch_runs_in_its_callers_task() {
        let expected = vec![Some((0, Some(0))), Some((1, Some(1)))];
        assert_eq!(ask_while_the_first_runs(2).await, (expected, 2, 0));
    }
}
