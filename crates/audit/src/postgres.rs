//! The shared store: the audit log in a PostgreSQL database that several
//! `atrest keyd` replicas write to (issue 10, decision 0012).
//!
//! The chain stays one linear chain under concurrent writers because every
//! append runs in one transaction that first takes a row lock on the single
//! `audit_chain_head` row (`SELECT … FOR UPDATE`). Under that lock the batch
//! must continue the head exactly (its first entry's `seq` is the head's
//! `seq + 1` and its `prev_hash` is the head's hash); if another replica
//! appended first the transaction is rolled back and
//! [`StoreError::Conflict`] returned, so the caller re-chains its batch on
//! the new head. A commit is durable once PostgreSQL acknowledges it
//! (`synchronous_commit` as the server is configured; `on` by default).

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, EntryHash};
use crate::rows::{AuditRow, backend, from_sql, to_sql};
use crate::store::{AuditStore, ChainHead, StoreError};
use crate::tree_head::TreeHead;

/// `version` in `audit_schema`. It starts at 2 so the two backends share one
/// numbering: version 2 is the SQLite schema of the same name (entries,
/// checkpoints, tree heads) plus the chain-head row only PostgreSQL needs.
const SCHEMA_VERSION: i64 = 2;

/// Arbitrary constant for `pg_advisory_xact_lock`: replicas starting at
/// the same time migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6174_7265_7374_0001;

/// The triggers make the tables append-only for anything that goes through
/// PostgreSQL's own checks; the hash chain and signed heads catch the rest.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_schema (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit_entries (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        timestamp_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        subject TEXT,
        details TEXT NOT NULL,
        prev_hash BYTEA NOT NULL CHECK (length(prev_hash) = 32),
        hash BYTEA NOT NULL CHECK (length(hash) = 32)
    )",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        head_hash BYTEA NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        signature BYTEA NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit_tree_heads (
        tree_size BIGINT PRIMARY KEY CHECK (tree_size >= 1),
        root_hash BYTEA NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        signature BYTEA NOT NULL
    )",
    // The one row every append locks. seq 0 and the genesis hash are the
    // empty chain.
    "CREATE TABLE IF NOT EXISTS audit_chain_head (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        seq BIGINT NOT NULL CHECK (seq >= 0),
        hash BYTEA NOT NULL CHECK (length(hash) = 32),
        timestamp_ms BIGINT NOT NULL
    )",
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
        FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "CREATE OR REPLACE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
        FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "CREATE OR REPLACE TRIGGER audit_tree_heads_append_only BEFORE UPDATE OR DELETE ON audit_tree_heads
        FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
];

/// The audit log in a PostgreSQL database.
/// How long an append waits for a connection before it fails.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and creates or migrates the
    /// schema. Several replicas may do this at once.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // While the server is away a batch fails after this long
            // (sqlx's default is 30 s): its callers are refused
            // (`NotDurable`) rather than left waiting.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(backend)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('audit_schema') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if exists {
            let found: Option<i64> = sqlx::query_scalar("SELECT version FROM audit_schema")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            if let Some(found) = found {
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaVersion {
                        found,
                        known: SCHEMA_VERSION,
                    });
                }
                return tx.commit().await.map_err(backend);
            }
        }
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        sqlx::query(
            "INSERT INTO audit_chain_head (seq, hash, timestamp_ms) VALUES (0, $1, 0)
             ON CONFLICT DO NOTHING",
        )
        .bind(&EntryHash::GENESIS.0[..])
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("INSERT INTO audit_schema (version) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(SCHEMA_VERSION)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Under the chain-head row lock: does the batch continue the head?
async fn lock_head(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[Entry],
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_chain_head FOR UPDATE")
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
    let head_seq = from_sql(row.try_get("seq").map_err(backend)?, 0, "head seq")?;
    let head_hash = row.hash("hash", head_seq)?;
    if let Some(first) = entries.first()
        && (first.seq != head_seq.saturating_add(1) || first.prev_hash != head_hash)
    {
        return Err(StoreError::Conflict {
            batch_seq: first.seq,
            head_seq,
        });
    }
    Ok(())
}

async fn write_batch(
    pool: &PgPool,
    entries: &[Entry],
    checkpoints: &[Checkpoint],
    tree_heads: &[TreeHead],
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    // Dropping `tx` on any error below rolls it back.
    lock_head(&mut tx, entries).await?;
    for e in entries {
        sqlx::query(
            "INSERT INTO audit_entries
             (seq, timestamp_ms, kind, actor, subject, details, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(to_sql(e.seq))
        .bind(to_sql(e.timestamp_ms))
        .bind(e.kind.as_str())
        .bind(e.actor.as_str())
        .bind(e.subject.as_deref())
        .bind(e.details.as_str())
        .bind(&e.prev_hash.0[..])
        .bind(&e.hash.0[..])
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    if let Some(last) = entries.last() {
        sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2, timestamp_ms = $3")
            .bind(to_sql(last.seq))
            .bind(&last.hash.0[..])
            .bind(to_sql(last.timestamp_ms))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    for c in checkpoints {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, timestamp_ms, signature)
             VALUES ($1, $2, $3, $4)",
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
             VALUES ($1, $2, $3, $4)",
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

impl AuditStore for PgStore {
    async fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        write_batch(&self.pool, entries, checkpoints, tree_heads).await
    }

    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, timestamp_ms, kind, actor, subject, details, prev_hash, hash
             FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
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
             FROM audit_checkpoints WHERE seq >= $1 ORDER BY seq LIMIT $2",
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
             FROM audit_tree_heads WHERE tree_size >= $1 ORDER BY tree_size LIMIT $2",
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
