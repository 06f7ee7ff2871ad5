//! The one test harness of keyd's tests (its unit tests and those in
//! `tests/`): a [`TestKeyd`] in a temporary data directory, on a
//! [`ManualClock`] the test moves, over a [`FlakyStore`] audit store the
//! test can make fail or stall. Built only for tests (feature
//! `test-hooks`, which keyd's dev-dependency on itself turns on).

#![allow(clippy::unwrap_used, reason = "test set-up: a panic is the report")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atrest_audit::{
    AuditLog, AuditSigningKey, AuditStore, ChainHead, Checkpoint, Clock, Entry, LogOptions,
    SqliteStore, StoreError, TreeHead,
};

use crate::authority::{Authority, AuthorityOptions};
use crate::storage::SqliteStorage;

/// Time the test moves by hand (token and request expiry, sessions,
/// failure windows, TOTP codes), in milliseconds since the epoch.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    /// Stopped at `secs` since the epoch.
    pub fn at(secs: u64) -> Self {
        Self(Arc::new(AtomicU64::new(secs * 1000)))
    }

    /// Stopped at the real time now: for tests whose TOTP codes or TLS
    /// certificates must agree with the real clock.
    pub fn now() -> Self {
        #[allow(
            clippy::disallowed_methods,
            reason = "the clock that starts the test's time from the real one"
        )]
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        Self(Arc::new(AtomicU64::new(u64::try_from(ms).unwrap())))
    }

    /// Seconds since the epoch.
    pub fn secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    pub fn advance(&self, secs: u64) {
        self.advance_ms(secs * 1000);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Permits of the commit gate: more than any test's commits at once.
const GATE_PERMITS: u32 = 1 << 20;

/// Switches of a [`FlakyStore`], shared with the test.
#[derive(Clone)]
pub struct StoreFaults {
    fail: Arc<AtomicBool>,
    /// Each commit takes a permit; a test holding them all stops it.
    gate: Arc<tokio::sync::Semaphore>,
    /// Signalled when a commit starts.
    entered: Arc<tokio::sync::Notify>,
}

impl Default for StoreFaults {
    fn default() -> Self {
        Self {
            fail: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(GATE_PERMITS as usize)),
            entered: Arc::default(),
        }
    }
}

impl StoreFaults {
    /// From now on every commit fails (disk full), or none does.
    pub fn fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Commits stop inside the store until the returned permits drop.
    pub async fn hold_commits(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.gate.acquire_many(GATE_PERMITS).await.unwrap()
    }

    /// Waits until a commit has started.
    pub async fn commit_started(&self) {
        self.entered.notified().await;
    }
}

/// An audit store (SQLite) that can be made to refuse writes (disk full),
/// or to stop inside a commit until the test lets it go on.
pub struct FlakyStore {
    inner: SqliteStore,
    faults: StoreFaults,
}

impl FlakyStore {
    pub async fn open(path: &Path, faults: StoreFaults) -> Self {
        Self {
            inner: SqliteStore::open(path).await.unwrap(),
            faults,
        }
    }
}

impl AuditStore for FlakyStore {
    async fn append(
        &self,
        entries: &[Entry],
        cps: &[Checkpoint],
        heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        self.faults.entered.notify_one();
        let _permit = self
            .faults
            .gate
            .acquire()
            .await
            .map_err(|e| StoreError::Backend(e.into()))?;
        if self.faults.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full".into()));
        }
        self.inner.append(entries, cps, heads).await
    }
    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        self.inner.read_entries(from, limit).await
    }
    async fn read_checkpoints(&self, from: u64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.read_checkpoints(from, limit).await
    }
    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.inner.head().await
    }
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn read_tree_heads(&self, from: u64, limit: u32) -> Result<Vec<TreeHead>, StoreError> {
        self.inner.read_tree_heads(from, limit).await
    }
    async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
        self.inner.latest_tree_head().await
    }
}

/// The authority of a [`TestKeyd`].
pub type TestAuthority<C = ManualClock> = Authority<SqliteStorage, FlakyStore, C>;

/// A keyd for a test: its authority over `keyd.db` and `audit.db` in a
/// temporary directory (gone with it), on clock `C`.
pub struct TestKeyd<C: Clock + Clone = ManualClock> {
    pub authority: TestAuthority<C>,
    pub clock: C,
    pub faults: StoreFaults,
    options: AuthorityOptions,
    log_options: LogOptions,
    audit_seed: [u8; 32],
    dir: tempfile::TempDir,
}

impl TestKeyd<ManualClock> {
    /// The time a [`TestKeyd::start`] starts at.
    pub const T0: u64 = 1_800_000_000;

    /// A keyd at [`Self::T0`] with default options.
    pub async fn start() -> Self {
        Self::start_with(AuthorityOptions::default()).await
    }

    pub async fn start_with(options: AuthorityOptions) -> Self {
        Self::open(ManualClock::at(Self::T0), options, LogOptions::default()).await
    }
}

impl<C: Clock + Clone> TestKeyd<C> {
    /// A keyd on `clock` with these options, in a fresh directory.
    pub async fn open(clock: C, options: AuthorityOptions, log_options: LogOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let faults = StoreFaults::default();
        let audit_seed = atrest_core::random_array();
        let authority = open_authority(
            dir.path(),
            &clock,
            &faults,
            &audit_seed,
            options.clone(),
            log_options.clone(),
        )
        .await;
        Self {
            authority,
            clock,
            faults,
            options,
            log_options,
            audit_seed,
            dir,
        }
    }

    /// The data directory (`keyd.db`, `audit.db`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the authority (as a restart would: boot states flushed) and
    /// opens its files again, with the same clock, faults, audit key and
    /// options.
    pub async fn restart(self) -> Self {
        self.authority.flush_boots().await.unwrap();
        let Self {
            authority,
            clock,
            faults,
            options,
            log_options,
            audit_seed,
            dir,
        } = self;
        drop(authority);
        // Let the writer task see the channel close and finish.
        tokio::task::yield_now().await;
        let authority = open_authority(
            dir.path(),
            &clock,
            &faults,
            &audit_seed,
            options.clone(),
            log_options.clone(),
        )
        .await;
        Self {
            authority,
            clock,
            faults,
            options,
            log_options,
            audit_seed,
            dir,
        }
    }

    /// Every audit entry, oldest first.
    pub async fn entries(&self) -> Vec<Entry> {
        self.authority
            .audit()
            .store()
            .read_entries(1, 100_000)
            .await
            .unwrap()
    }

    /// Serves the API (with the admin API when given its token) in plain
    /// HTTP on a loopback port, until the returned value drops.
    #[cfg(feature = "test-hooks")]
    pub async fn serve(&self, admin_token: Option<&str>) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = crate::http::router(self.authority.clone(), admin_token);
        Served {
            addr,
            base: format!("http://{addr}"),
            task: tokio::spawn(async move { crate::http::serve(listener, app).await.unwrap() }),
        }
    }

    /// The same over HTTPS with `certificates`, as approvers reach keyd.
    #[cfg(feature = "test-hooks")]
    pub async fn serve_tls(
        &self,
        certificates: crate::tls::ServerCertificates,
        admin_token: Option<&str>,
    ) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = crate::http::router(self.authority.clone(), admin_token);
        Served {
            addr,
            base: format!("https://{addr}"),
            task: tokio::spawn(async move {
                crate::tls::serve_tls(listener, &certificates, app)
                    .await
                    .unwrap();
            }),
        }
    }
}

async fn open_authority<C: Clock + Clone>(
    dir: &Path,
    clock: &C,
    faults: &StoreFaults,
    audit_seed: &[u8; 32],
    options: AuthorityOptions,
    log_options: LogOptions,
) -> TestAuthority<C> {
    let store = FlakyStore::open(&dir.join("audit.db"), faults.clone()).await;
    let audit = AuditLog::open(
        store,
        AuditSigningKey::from_seed(audit_seed),
        log_options,
        clock.clone(),
    )
    .await
    .unwrap();
    let storage = SqliteStorage::open(&dir.join("keyd.db")).await.unwrap();
    Authority::open(storage, audit, clock.clone(), options)
        .await
        .unwrap()
}

/// A [`TestKeyd`] being served; stops serving when dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
