//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a committed transaction is on disk (fsync of the WAL) before
//! [`AuditStore::append`] returns.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row};

use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::rows::{AuditRow, backend, from_sql, to_sql};
use crate::store::{AuditStore, ChainHead, StoreError};
use crate::tree_head::TreeHead;

/// `PRAGMA user_version` of the schema below. Version 1 had entries and
/// checkpoints; version 2 adds `audit_tree_heads`. A version 1 database is
/// migrated in place by creating the new table (no existing row changes);
/// [`crate::AuditLog::open`] then signs the first tree head over it.
const SCHEMA_VERSION: i64 = 2;

/// STRICT tables refuse values of the wrong type; the triggers make the
/// log append-only for everything that goes through SQLite's own checks
/// (a bug or a careless `UPDATE`). Someone with the file can still drop
/// them: that is what the hash chain and checkpoints are for.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_entries (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        timestamp_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        subject TEXT,
        details TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        head_hash BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        signature BLOB NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    // Version 2.
    "CREATE TABLE IF NOT EXISTS audit_tree_heads (
        tree_size INTEGER PRIMARY KEY CHECK (tree_size >= 1),
        root_hash BLOB NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        signature BLOB NOT NULL
    ) STRICT",
    "CREATE TRIGGER IF NOT EXISTS audit_tree_heads_no_update BEFORE UPDATE ON audit_tree_heads
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_tree_heads_no_delete BEFORE DELETE ON audit_tree_heads
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
];

/// Tuning for [`SqliteStore::open_with`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How long a write waits for another writer's lock before failing
    /// (and so refusing the releases in that batch).
    pub busy_timeout: Duration,
    /// Connections for concurrent readers (`verify`, `tail`); the log's
    /// writer uses one at a time.
    pub max_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

/// The audit log in a SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Device and inode of the file when opened.
    file_id: (u64, u64),
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect)
            .await
            .map_err(backend)?;
        let file_id = file_id(path).ok_or_else(|| {
            StoreError::Backend(format!("{} vanished while being opened", path.display()).into())
        })?;
        let store = Self {
            pool,
            path: path.to_path_buf(),
            file_id,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// SQLite keeps writing to a database file that was deleted (or whose
    /// directory was) through its open descriptors, and would acknowledge
    /// commits that vanish when it closes. So each append first and last
    /// checks that the path still names the file that was opened.
    fn check_file(&self) -> Result<(), StoreError> {
        if file_id(&self.path) == Some(self.file_id) {
            Ok(())
        } else {
            Err(StoreError::Backend(
                format!(
                    "the database file {} was removed or replaced since it was opened; \
                     restart with the right file",
                    self.path.display()
                )
                .into(),
            ))
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        // 0 is a new file, 1 the schema before tree heads: both are brought
        // to the current version by the idempotent statements below.
        if !(0..=SCHEMA_VERSION).contains(&found) {
            return Err(StoreError::SchemaVersion {
                found,
                known: SCHEMA_VERSION,
            });
        }
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        sqlx::query("PRAGMA user_version = 2")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Closes every connection (so the file can be moved or checked).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool, for a server that keeps its other tables in the same file.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// One transaction with every entry, checkpoint and tree head of a batch. IMMEDIATE
/// takes the write lock up front, so a busy database fails at BEGIN rather
/// than half-way through the batch.
/// Entries in one INSERT: 8 bound values each, far inside SQLite's limit
/// of 32,766 per statement.
const ENTRIES_PER_INSERT: usize = 128;

async fn write_batch(
    conn: &mut SqliteConnection,
    entries: &[Entry],
    checkpoints: &[Checkpoint],
    tree_heads: &[TreeHead],
) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    // Many rows per statement: each statement is a round trip to sqlx's
    // worker thread, which cost more than the insert itself.
    for chunk in entries.chunks(ENTRIES_PER_INSERT) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_entries
             (seq, timestamp_ms, kind, actor, subject, details, prev_hash, hash) ",
        );
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(to_sql(e.seq))
                .push_bind(to_sql(e.timestamp_ms))
                .push_bind(e.kind.as_str())
                .push_bind(e.actor.as_str())
                .push_bind(e.subject.as_deref())
                .push_bind(e.details.as_str())
                .push_bind(&e.prev_hash.0[..])
                .push_bind(&e.hash.0[..]);
        });
        insert.build().execute(&mut *tx).await.map_err(backend)?;
    }
    for c in checkpoints {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, timestamp_ms, signature)
             VALUES (?, ?, ?, ?)",
        )
        .bind(to_sql(c.seq))
        .bind(&c.head_hash.0[..])
        .bind(to_sql(c.timestamp_ms))
        .bind(&c.signature[..])
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    for h in tree_heads {
        sqlx::query(
            "INSERT INTO audit_tree_heads (tree_size, root_hash, timestamp_ms, signature)
             VALUES (?, ?, ?, ?)",
        )
        .bind(to_sql(h.tree_size))
        .bind(&h.root_hash.0[..])
        .bind(to_sql(h.timestamp_ms))
        .bind(&h.signature[..])
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

impl AuditStore for SqliteStore {
    async fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        self.check_file()?;
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let written = write_batch(&mut conn, entries, checkpoints, tree_heads).await;
        if written.is_err() {
            // After a failed COMMIT (an I/O error, a full disk) sqlx may
            // still count the connection as inside a transaction, and every
            // later BEGIN on it would fail: drop it rather than pool it.
            conn.close_on_drop();
        }
        written?;
        self.check_file()
    }

    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, timestamp_ms, kind, actor, subject, details, prev_hash, hash
             FROM audit_entries WHERE seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(to_sql(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(AuditRow::entry).collect()
    }

    async fn read_checkpoints(&self, from: u64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, head_hash, timestamp_ms, signature
             FROM audit_checkpoints WHERE seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(to_sql(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(AuditRow::checkpoint).collect()
    }

    async fn read_tree_heads(&self, from: u64, limit: u32) -> Result<Vec<TreeHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT tree_size, root_hash, timestamp_ms, signature
             FROM audit_tree_heads WHERE tree_size >= ? ORDER BY tree_size LIMIT ?",
        )
        .bind(to_sql(from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(AuditRow::tree_head).collect()
    }

    async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
        let row = sqlx::query(
            "SELECT tree_size, root_hash, timestamp_ms, signature
             FROM audit_tree_heads ORDER BY tree_size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(AuditRow::tree_head).transpose()
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash, timestamp_ms FROM audit_entries ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(ChainHead::EMPTY);
        };
        let seq = from_sql(row.try_get("seq").map_err(backend)?, 0, "seq")?;
        Ok(ChainHead {
            seq,
            hash: row.hash("hash", seq)?,
            timestamp_ms: from_sql(row.try_get("timestamp_ms").map_err(backend)?, seq, "time")?,
        })
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, head_hash, timestamp_ms, signature
             FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(AuditRow::checkpoint).transpose()
    }
}
