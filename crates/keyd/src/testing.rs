//! The one test harness of keyd's tests (its unit tests and those in
//! `tests/`): a [`TestKeyd`] in a temporary data directory, on a
//! [`ManualClock`] the test moves, over a [`FlakyStore`] audit store the
//! test can make fail or stall, on either [`Backend`]. Built only for
//! tests (feature `test-hooks`, which keyd's dev-dependency on itself
//! turns on).
//!
//! PostgreSQL tests need a server: `ATREST_TEST_POSTGRES=postgres://…`
//! (scripts/test-postgres.sh starts a private one; scripts/test-all.sh
//! sets it). Each test gets a database of its own on it. Without the
//! variable they are skipped, unless `ATREST_REQUIRE_POSTGRES=1`, when
//! they fail.

#![allow(clippy::unwrap_used, reason = "test set-up: a panic is the report")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atrest_audit::{
    AuditLog, AuditSigningKey, AuditStore, BatchRows, Catchup, ChainHead, Checkpoint, Clock, Entry,
    LogOptions, StoreError, TreeHead,
};

use crate::authority::{Authority, AuthorityOptions};
use crate::storage::{Database, KeydAuditStore, KeydStorage};

const SECRETS_KEY: &str = crate::DataDir::SECRETS_KEY;
const RECORDS_KEY: &str = crate::DataDir::RECORDS_KEY;

/// The database a [`TestKeyd`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `keyd.db` and `audit.db` in the test's directory.
    Sqlite,
    /// A database of its own on the `ATREST_TEST_POSTGRES` server.
    Postgres,
}

impl Backend {
    /// A fresh, empty database of this backend, or `None` to skip the
    /// test (PostgreSQL with no server named and none required).
    pub async fn fresh_database(self, dir: &Path) -> Option<Database> {
        match self {
            Self::Sqlite => Some(Database::in_data_dir(dir)),
            Self::Postgres => fresh_postgres().await.map(Database::Postgres),
        }
    }
}

/// A PostgreSQL server of the test's own (scripts/test-postgres.sh on a
/// free port), for a test that stops and starts it: the shared
/// `ATREST_TEST_POSTGRES` server must stay up for the others. Stopped when
/// dropped.
pub struct PostgresServer {
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Starts one; `None` to skip, as for [`fresh_postgres`] (no
    /// PostgreSQL named for the tests, and none required).
    pub async fn start() -> Option<Self> {
        if std::env::var("ATREST_TEST_POSTGRES").is_err() {
            return fresh_postgres().await.map(|_| unreachable!());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            url: String::new(),
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.url = server.script("start");
        Some(server)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended).
    pub fn stop(&self) {
        self.script("stop");
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&self) {
        self.script("start");
    }

    fn script(&self, action: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(action)
            .arg(self.dir.path().join("cluster"))
            .env("ATREST_TEST_POSTGRES_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "test-postgres.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if !self.url.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        }
    }
}

/// A new database on the `ATREST_TEST_POSTGRES` server, or `None` to skip.
pub async fn fresh_postgres() -> Option<String> {
    use sqlx::Connection;
    let Ok(url) = std::env::var("ATREST_TEST_POSTGRES") else {
        assert!(
            std::env::var("ATREST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "ATREST_REQUIRE_POSTGRES=1 but ATREST_TEST_POSTGRES is not set: start a PostgreSQL \
             server (scripts/test-postgres.sh start DIR) and export its URL"
        );
        eprintln!("ATREST_TEST_POSTGRES not set: skipping a PostgreSQL test");
        return None;
    };
    let mut admin = sqlx::postgres::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to ATREST_TEST_POSTGRES={url}: {e}"));
    let name = format!(
        "atrest_keyd_{}",
        atrest_core::random_array::<8>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

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
    /// Commits waiting at the gate, and a signal when one arrives.
    waiting: Arc<AtomicU64>,
    entered: Arc<tokio::sync::Notify>,
}

impl Default for StoreFaults {
    fn default() -> Self {
        Self {
            fail: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(GATE_PERMITS as usize)),
            waiting: Arc::default(),
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
    /// Waits until a commit is stopped at the gate (while the test holds
    /// the commits): one that started after
    /// [`hold_commits`](Self::hold_commits), not an earlier one.
    pub async fn commit_started(&self) {
        loop {
            let mut arrived = std::pin::pin!(self.entered.notified());
            arrived.as_mut().enable();
            if self.waiting.load(Ordering::SeqCst) > 0 {
                return;
            }
            arrived.await;
        }
    }
}

/// An audit store (either backend) that can be made to refuse writes
/// (disk full), or to stop inside a commit until the test lets it go on.
pub struct FlakyStore {
    inner: KeydAuditStore,
    faults: StoreFaults,
}

impl FlakyStore {
    pub async fn open(database: &Database, faults: StoreFaults) -> Self {
        Self {
            inner: database.open_audit().await.unwrap(),
            faults,
        }
    }
}

impl FlakyStore {
    /// Stops at the gate while the test holds commits, then refuses if
    /// told to: what every write goes through.
    async fn fault(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.faults.waiting.fetch_add(1, Ordering::SeqCst);
        self.faults.entered.notify_waiters();
        let permit = self.faults.gate.acquire().await;
        self.faults.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|e| StoreError::Backend(e.into()))?;
        if self.faults.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full".into()));
        }
        Ok(permit)
    }
}

impl AuditStore for FlakyStore {
    async fn append(
        &self,
        entries: &[Entry],
        cps: &[Checkpoint],
        heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        let _permit = self.fault().await?;
        self.inner.append(entries, cps, heads).await
    }
    async fn append_locked<B, F>(&self, known: ChainHead, prepare: F) -> Result<B, StoreError>
    where
        B: BatchRows + Send,
        F: FnMut(Option<Catchup>) -> Result<B, StoreError> + Send,
    {
        let _permit = self.fault().await?;
        self.inner.append_locked(known, prepare).await
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
pub type TestAuthority<C = ManualClock> = Authority<KeydStorage, FlakyStore, C>;

/// A keyd for a test: its authority over `keyd.db` and `audit.db` in a
/// temporary directory (gone with it), or over a PostgreSQL database of
/// its own, on clock `C`.
pub struct TestKeyd<C: Clock + Clone = ManualClock> {
    pub authority: TestAuthority<C>,
    pub clock: C,
    pub faults: StoreFaults,
    pub database: Database,
    options: AuthorityOptions,
    log_options: LogOptions,
    audit_seed: [u8; 32],
    dir: Arc<tempfile::TempDir>,
    /// Where this keyd's `secrets.key` and `records.key` are: the data
    /// directory, or a replica's own (copies of the first one's, as
    /// operators make).
    keys: Arc<tempfile::TempDir>,
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

    /// The same on `backend`; `None` to skip (see [`Backend::fresh_database`]).
    pub async fn start_on(backend: Backend, options: AuthorityOptions) -> Option<Self> {
        Self::open_on(
            backend,
            ManualClock::at(Self::T0),
            options,
            LogOptions::default(),
        )
        .await
    }
}

impl<C: Clock + Clone> TestKeyd<C> {
    /// A keyd on `clock` with these options, in a fresh directory (SQLite).
    pub async fn open(clock: C, options: AuthorityOptions, log_options: LogOptions) -> Self {
        Self::open_on(Backend::Sqlite, clock, options, log_options)
            .await
            .unwrap()
    }

    /// A keyd on a fresh database of `backend`; `None` to skip.
    pub async fn open_on(
        backend: Backend,
        clock: C,
        options: AuthorityOptions,
        log_options: LogOptions,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let database = backend.fresh_database(dir.path()).await?;
        Some(Self::open_in(dir, database, clock, options, log_options).await)
    }

    /// A keyd on `database` (a PostgreSQL server the test runs itself).
    pub async fn open_at(
        database: Database,
        clock: C,
        options: AuthorityOptions,
        log_options: LogOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open_in(dir, database, clock, options, log_options).await
    }

    async fn open_in(
        dir: tempfile::TempDir,
        database: Database,
        clock: C,
        options: AuthorityOptions,
        log_options: LogOptions,
    ) -> Self {
        let faults = StoreFaults::default();
        let audit_seed = atrest_core::random_array();
        let options = AuthorityOptions {
            scoped: true,
            ..options
        };
        let dir = Arc::new(dir);
        let authority = open_authority(
            &database,
            &clock,
            &faults,
            &audit_seed,
            dir.path(),
            options.clone(),
            log_options.clone(),
        )
        .await;
        Self {
            authority,
            clock,
            faults,
            database,
            options,
            log_options,
            audit_seed,
            keys: dir.clone(),
            dir,
        }
    }

    /// A second authority on the same (PostgreSQL) database, as another
    /// `keyd serve` replica would be: same audit key, clock and options,
    /// its own memory and faults.
    pub async fn replica(&self) -> Self {
        assert!(
            self.database.is_shared(),
            "replicas share a PostgreSQL database; SQLite has one keyd per file"
        );
        let faults = StoreFaults::default();
        let keys = Arc::new(tempfile::tempdir().unwrap());
        std::fs::copy(self.secrets_key(), keys.path().join(SECRETS_KEY)).unwrap();
        std::fs::copy(self.records_key(), keys.path().join(RECORDS_KEY)).unwrap();
        let authority = open_authority(
            &self.database,
            &self.clock,
            &faults,
            &self.audit_seed,
            keys.path(),
            self.options.clone(),
            self.log_options.clone(),
        )
        .await;
        Self {
            authority,
            clock: self.clock.clone(),
            faults,
            database: self.database.clone(),
            options: self.options.clone(),
            log_options: self.log_options.clone(),
            audit_seed: self.audit_seed,
            dir: self.dir.clone(),
            keys,
        }
    }

    /// The data directory (`keyd.db`, `audit.db`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// This keyd's `secrets.key` (a replica has its own).
    pub fn secrets_key(&self) -> std::path::PathBuf {
        self.keys.path().join(SECRETS_KEY)
    }

    /// This keyd's `records.key` (a replica has its own).
    pub fn records_key(&self) -> std::path::PathBuf {
        self.keys.path().join(RECORDS_KEY)
    }

    /// Stops the authority (as a restart would: boot states flushed) and
    /// opens its files again, with the same clock, faults, audit key and
    /// options.
    pub async fn restart(self) -> Self {
        self.authority.flush_boots().await.unwrap();
        self.crash().await
    }

    /// Drops the authority with nothing written on its way out (what a
    /// `kill -9` leaves) and opens its database again.
    pub async fn crash(self) -> Self {
        let Self {
            authority,
            clock,
            faults,
            database,
            options,
            log_options,
            audit_seed,
            dir,
            keys,
        } = self;
        drop(authority);
        // Let the writer task see the channel close and finish.
        tokio::task::yield_now().await;
        let authority = open_authority(
            &database,
            &clock,
            &faults,
            &audit_seed,
            keys.path(),
            options.clone(),
            log_options.clone(),
        )
        .await;
        Self {
            authority,
            clock,
            faults,
            database,
            options,
            log_options,
            audit_seed,
            dir,
            keys,
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
    database: &Database,
    clock: &C,
    faults: &StoreFaults,
    audit_seed: &[u8; 32],
    keys: &Path,
    options: AuthorityOptions,
    log_options: LogOptions,
) -> TestAuthority<C> {
    let store = FlakyStore::open(database, faults.clone()).await;
    let audit = AuditLog::open(
        store,
        AuditSigningKey::from_seed(audit_seed),
        log_options,
        clock.clone(),
    )
    .await
    .unwrap();
    let keys = crate::secrets_key::StoreKeys::open(keys).unwrap();
    let storage = database.open_storage(keys).await.unwrap();
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
