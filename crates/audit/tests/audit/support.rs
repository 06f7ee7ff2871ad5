//! Helpers: a log on a temporary SQLite file, a controllable clock, a store
//! wrapper that can hold or fail commits, and raw SQL for tampering.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use atrest_audit::*;
use serde_json::json;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::{Notify, Semaphore};

/// A clock the test sets.
#[derive(Clone, Default)]
pub struct ManualClock(pub Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct TestLog<S: AuditStore = SqliteStore> {
    pub dir: tempfile::TempDir,
    pub log: AuditLog<S>,
    pub public: AuditPublicKey,
    /// The audit key's seed, to reopen the log as the server would.
    pub seed: [u8; 32],
    pub clock: ManualClock,
}

impl<S: AuditStore> TestLog<S> {
    pub fn path(&self) -> PathBuf {
        db_path(self.dir.path())
    }
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("audit.db")
}

pub async fn sqlite_log(options: LogOptions) -> TestLog {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(dir.path())).await.unwrap();
    with_store(dir, store, options).await
}

pub async fn with_store<S: AuditStore>(
    dir: tempfile::TempDir,
    store: S,
    options: LogOptions,
) -> TestLog<S> {
    let key = AuditSigningKey::generate();
    let public = key.public_key();
    let seed = *key.expose_seed();
    let clock = ManualClock::at(1_800_000_000_000);
    let log = AuditLog::open(store, key, options, clock.clone())
        .await
        .unwrap();
    TestLog {
        dir,
        log,
        public,
        seed,
        clock,
    }
}

/// The `n`th entry of a test: a request by host `web-{n % 7}`.
pub fn entry(n: usize) -> NewEntry {
    NewEntry::new(EntryKind::Request, format!("web-{}", n % 7))
        .subject(format!("web-{}", n % 7))
        .details(json!({ "n": n, "boot_id": "6f1b9c6e" }))
}

pub async fn append_n<S: AuditStore>(log: &AuditLog<S>, n: usize) {
    for i in 0..n {
        log.append(entry(i)).await.unwrap();
    }
}

/// A connection of its own to the database file, with the append-only
/// triggers dropped: what someone with write access to the file can do.
pub async fn tamper(path: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap();
    for trigger in [
        "audit_entries_no_update",
        "audit_entries_no_delete",
        "audit_checkpoints_no_update",
        "audit_checkpoints_no_delete",
        "audit_tree_heads_no_update",
        "audit_tree_heads_no_delete",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TRIGGER IF EXISTS {trigger}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn
}

/// Reopens the log's file with its own key, as a restarted server does.
pub async fn reopen(t: &TestLog) -> Result<AuditLog<SqliteStore>, OpenError> {
    let store = SqliteStore::open(&t.path()).await.unwrap();
    AuditLog::open(
        store,
        AuditSigningKey::from_seed(&t.seed),
        LogOptions::default(),
        t.clock.clone(),
    )
    .await
}

pub async fn exec(conn: &mut SqliteConnection, sql: &'static str) {
    sqlx::query(sql).execute(conn).await.unwrap();
}

/// Wraps a store to count and control its transactions. Cloning shares the
/// script, so the test keeps a handle while the log owns the store.
#[derive(Clone)]
pub struct ScriptedStore(Arc<Script>);

impl std::ops::Deref for ScriptedStore {
    type Target = Script;
    fn deref(&self) -> &Script {
        &self.0
    }
}

pub struct Script {
    pub inner: SqliteStore,
    /// `append` calls that reached the store.
    pub appends: AtomicUsize,
    /// When set, `append` fails without writing, like a full disk.
    pub fail: AtomicBool,
    /// When set, the first `append` waits here for a permit.
    pub hold_first: Option<Semaphore>,
    /// Notified when an `append` starts.
    pub entered: Notify,
}

impl ScriptedStore {
    pub fn new(inner: SqliteStore, hold_first: bool) -> Self {
        Self(Arc::new(Script {
            inner,
            appends: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            hold_first: hold_first.then(|| Semaphore::new(0)),
            entered: Notify::new(),
        }))
    }
}

impl AuditStore for ScriptedStore {
    async fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        let call = self.appends.fetch_add(1, Ordering::SeqCst);
        self.entered.notify_one();
        if call == 0
            && let Some(gate) = &self.hold_first
        {
            gate.acquire().await.unwrap().forget();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "No space left on device (simulated)".into(),
            ));
        }
        self.inner.append(entries, checkpoints, tree_heads).await
    }

    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        self.inner.read_entries(from, limit).await
    }

    async fn read_checkpoints(&self, from: u64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.read_checkpoints(from, limit).await
    }

    async fn read_tree_heads(&self, from: u64, limit: u32) -> Result<Vec<TreeHead>, StoreError> {
        self.inner.read_tree_heads(from, limit).await
    }

    async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
        self.inner.latest_tree_head().await
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.inner.head().await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.latest_checkpoint().await
    }
}

/// Polls `condition` until it holds, yielding to other tasks; panics after
/// a bounded number of rounds rather than hang.
pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("condition not reached");
}
