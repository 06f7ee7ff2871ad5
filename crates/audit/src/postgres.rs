//! The shared store: the audit log in a PostgreSQL database that several
//! `atrest keyd` replicas write to (issue 10, decision 0012).
//!
//! The chain stays one linear chain under concurrent writers because every
//! append runs in one transaction that first takes a row lock on the single
//! `audit_chain_head` row (`SELECT … FOR UPDATE`). The log's writer appends
//! through [`AuditStore::append_locked`]: a batch chained on the head the
//! writer knows is written by one statement that takes that lock and
//! writes only if the head is still the one the batch continues (one round
//! trip; a lone replica's every batch). If another replica moved the head,
//! the writer reads, under the lock, what that replica appended since its
//! own head, chains, hashes and signs its batch again on the head as it
//! is, and writes it in the same transaction, so no replica's batch ever
//! fails another's. A plain
//! [`AuditStore::append`] of a batch that does not continue the head is
//! rolled back with [`StoreError::Conflict`]. A commit is durable once PostgreSQL acknowledges it
//! (`synchronous_commit` as the server is configured; `on` by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::postgres::{PgExecutor, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, EntryHash};
use crate::rows::{AuditRow, backend, from_sql, to_sql};
use crate::store::{AuditStore, BatchRows, Catchup, ChainHead, StoreError};
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

/// How long an append waits for a connection before it fails.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The audit log in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Whether another writer moved the head lately: then a batch is
    /// prepared under the head's lock at once, not tried first on the
    /// head this writer knows ([`AuditStore::append_locked`]).
    contended: Arc<AtomicBool>,
    appends: Arc<AppendCounters>,
}

/// How [`PgStore`]'s batches were written ([`AuditStore::append_locked`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgAppends {
    /// Written by one statement on the head the writer knew.
    pub one_statement: u64,
    /// Written in a transaction that took the head's lock first (another
    /// writer had moved the head, now or lately).
    pub under_lock: u64,
}

#[derive(Debug, Default)]
struct AppendCounters {
    one_statement: AtomicU64,
    under_lock: AtomicU64,
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
        let store = Self {
            pool,
            contended: Arc::default(),
            appends: Arc::default(),
        };
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

    /// How the batches appended so far were written.
    pub fn appends(&self) -> PgAppends {
        PgAppends {
            one_statement: self.appends.one_statement.load(Ordering::Relaxed),
            under_lock: self.appends.under_lock.load(Ordering::Relaxed),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Takes the chain-head row lock (held to the end of `tx`) and reads the
/// head.
async fn lock_head(tx: &mut Transaction<'_, Postgres>) -> Result<ChainHead, StoreError> {
    let row = sqlx::query("SELECT seq, hash, timestamp_ms FROM audit_chain_head FOR UPDATE")
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
    let seq = from_sql(row.try_get("seq").map_err(backend)?, 0, "head seq")?;
    Ok(ChainHead {
        seq,
        hash: row.hash("hash", seq)?,
        timestamp_ms: from_sql(row.try_get("timestamp_ms").map_err(backend)?, seq, "time")?,
    })
}

/// Does the batch continue the head (read under its lock)?
fn continues(head: ChainHead, entries: &[Entry]) -> Result<(), StoreError> {
    if let Some(first) = entries.first()
        && (first.seq != head.seq.saturating_add(1) || first.prev_hash != head.hash)
    {
        return Err(StoreError::Conflict {
            batch_seq: first.seq,
            head_seq: head.seq,
        });
    }
    Ok(())
}

/// What was appended after `known` up to `head`, read in the transaction
/// that holds the head's lock.
async fn catch_up(
    tx: &mut Transaction<'_, Postgres>,
    known: ChainHead,
    head: ChainHead,
) -> Result<Catchup, StoreError> {
    if head.seq < known.seq {
        return Err(StoreError::Corrupt {
            seq: head.seq,
            reason: format!(
                "the chain head went back from seq {} (the database was restored or changed \
                 under a running keyd: restart it)",
                known.seq
            ),
        });
    }
    let mut entries = Vec::new();
    while (known.seq + entries.len() as u64) < head.seq {
        let from = known.seq + entries.len() as u64 + 1;
        let page = read_entries(&mut **tx, from, 1000).await?;
        if page.is_empty() {
            return Err(StoreError::Corrupt {
                seq: from,
                reason: "missing below the chain head".into(),
            });
        }
        entries.extend(page.into_iter().filter(|e| e.seq <= head.seq));
    }
    Ok(Catchup {
        head,
        entries,
        checkpoint: latest_checkpoint(&mut **tx).await?,
        tree_head: latest_tree_head(&mut **tx).await?,
    })
}

/// Writes a batch and moves the chain-head row, in one statement (one
/// round trip, whatever the batch's size), if the head is still `head`:
/// the statement takes the head's row lock first (waiting for a writer
/// that holds it, then reading the head it left) and writes nothing if
/// the head moved. Whether it wrote.
async fn write_rows<'e>(
    db: impl PgExecutor<'e>,
    head: ChainHead,
    entries: &[Entry],
    checkpoints: &[Checkpoint],
    tree_heads: &[TreeHead],
) -> Result<bool, StoreError> {
    let last = entries.last().map_or(head, |e| ChainHead {
        seq: e.seq,
        hash: e.hash,
        timestamp_ms: e.timestamp_ms,
    });
    let written = sqlx::query(
        "WITH h AS MATERIALIZED (
            SELECT seq FROM audit_chain_head WHERE seq = $20 AND hash = $21 FOR UPDATE
         ), e AS (
            INSERT INTO audit_entries
            (seq, timestamp_ms, kind, actor, subject, details, prev_hash, hash)
            SELECT u.* FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[],
                                   $5::TEXT[], $6::TEXT[], $7::BYTEA[], $8::BYTEA[]) AS u, h
         ), c AS (
            INSERT INTO audit_checkpoints (seq, head_hash, timestamp_ms, signature)
            SELECT u.* FROM UNNEST($9::BIGINT[], $10::BYTEA[], $11::BIGINT[], $12::BYTEA[])
                AS u, h
         ), t AS (
            INSERT INTO audit_tree_heads (tree_size, root_hash, timestamp_ms, signature)
            SELECT u.* FROM UNNEST($13::BIGINT[], $14::BYTEA[], $15::BIGINT[], $16::BYTEA[])
                AS u, h
         )
         UPDATE audit_chain_head SET seq = $17, hash = $18, timestamp_ms = $19
         WHERE EXISTS (SELECT 1 FROM h)
         RETURNING seq",
    )
    .bind(entries.iter().map(|e| to_sql(e.seq)).collect::<Vec<_>>())
    .bind(
        entries
            .iter()
            .map(|e| to_sql(e.timestamp_ms))
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
    .bind(
        entries
            .iter()
            .map(|e| e.subject.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.details.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| &e.prev_hash.0[..])
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| &e.hash.0[..]).collect::<Vec<_>>())
    .bind(
        checkpoints
            .iter()
            .map(|c| to_sql(c.seq))
            .collect::<Vec<_>>(),
    )
    .bind(
        checkpoints
            .iter()
            .map(|c| &c.head_hash.0[..])
            .collect::<Vec<_>>(),
    )
    .bind(
        checkpoints
            .iter()
            .map(|c| to_sql(c.timestamp_ms))
            .collect::<Vec<_>>(),
    )
    .bind(
        checkpoints
            .iter()
            .map(|c| &c.signature[..])
            .collect::<Vec<_>>(),
    )
    .bind(
        tree_heads
            .iter()
            .map(|h| to_sql(h.tree_size))
            .collect::<Vec<_>>(),
    )
    .bind(
        tree_heads
            .iter()
            .map(|h| &h.root_hash.0[..])
            .collect::<Vec<_>>(),
    )
    .bind(
        tree_heads
            .iter()
            .map(|h| to_sql(h.timestamp_ms))
            .collect::<Vec<_>>(),
    )
    .bind(
        tree_heads
            .iter()
            .map(|h| &h.signature[..])
            .collect::<Vec<_>>(),
    )
    .bind(to_sql(last.seq))
    .bind(&last.hash.0[..])
    .bind(to_sql(last.timestamp_ms))
    .bind(to_sql(head.seq))
    .bind(&head.hash.0[..])
    .fetch_optional(db)
    .await
    .map_err(backend)?;
    Ok(written.is_some())
}

/// [`write_rows`] in a transaction that holds the head's lock, on the
/// head it read: it always writes.
async fn write_under_lock(
    tx: &mut Transaction<'_, Postgres>,
    head: ChainHead,
    entries: &[Entry],
    checkpoints: &[Checkpoint],
    tree_heads: &[TreeHead],
) -> Result<(), StoreError> {
    if write_rows(&mut **tx, head, entries, checkpoints, tree_heads).await? {
        return Ok(());
    }
    Err(StoreError::Backend(
        "the audit chain head moved under its lock".into(),
    ))
}

async fn read_entries<'e>(
    db: impl PgExecutor<'e>,
    from: u64,
    limit: u32,
) -> Result<Vec<Entry>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, timestamp_ms, kind, actor, subject, details, prev_hash, hash
         FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
    )
    .bind(to_sql(from))
    .bind(i64::from(limit))
    .fetch_all(db)
    .await
    .map_err(backend)?;
    rows.iter().map(AuditRow::entry).collect()
}

async fn latest_tree_head<'e>(db: impl PgExecutor<'e>) -> Result<Option<TreeHead>, StoreError> {
    let row = sqlx::query(
        "SELECT tree_size, root_hash, timestamp_ms, signature
         FROM audit_tree_heads ORDER BY tree_size DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await
    .map_err(backend)?;
    row.as_ref().map(AuditRow::tree_head).transpose()
}

async fn latest_checkpoint<'e>(db: impl PgExecutor<'e>) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(
        "SELECT seq, head_hash, timestamp_ms, signature
         FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(db)
    .await
    .map_err(backend)?;
    row.as_ref().map(AuditRow::checkpoint).transpose()
}

impl AuditStore for PgStore {
    async fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Dropping `tx` on any error below rolls it back.
        let head = lock_head(&mut tx).await?;
        continues(head, entries)?;
        write_under_lock(&mut tx, head, entries, checkpoints, tree_heads).await?;
        tx.commit().await.map_err(backend)
    }

    /// First, unless another writer moved the head lately, the batch
    /// prepared on `known` and written in one statement of its own
    /// transaction, which takes the head's lock and writes only if the
    /// head is still `known` (one round trip: a lone replica's every
    /// batch). Else, or if the head moved, one transaction: the head's
    /// row lock first, then what other replicas appended since `known`,
    /// the batch prepared again on the head as it is, and the write.
    /// Another replica's append waits for the lock (up to PostgreSQL's
    /// `lock_timeout`, unlimited by default) rather than failing; batches
    /// of two replicas alternate, each one group commit.
    async fn append_locked<B, F>(&self, known: ChainHead, mut prepare: F) -> Result<B, StoreError>
    where
        B: BatchRows + Send,
        F: FnMut(Option<Catchup>) -> Result<B, StoreError> + Send,
    {
        if !self.contended.load(Ordering::Relaxed) {
            let batch = prepare(None)?;
            if batch.entries().is_empty() && batch.checkpoints().is_empty() {
                return Ok(batch);
            }
            continues(known, batch.entries())?;
            let written = write_rows(
                &self.pool,
                known,
                batch.entries(),
                batch.checkpoints(),
                batch.tree_heads(),
            )
            .await?;
            if written {
                self.appends.one_statement.fetch_add(1, Ordering::Relaxed);
                return Ok(batch);
            }
            // Nothing of this batch is anywhere but in memory: prepared
            // again below, on what the other writer appended.
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let head = lock_head(&mut tx).await?;
        let moved = head.seq != known.seq || head.hash != known.hash;
        // Tried without the lock again once a batch finds the head where
        // this writer left it.
        self.contended.store(moved, Ordering::Relaxed);
        let catchup = if moved {
            Some(catch_up(&mut tx, known, head).await?)
        } else {
            None
        };
        let batch = prepare(catchup)?;
        if batch.entries().is_empty() && batch.checkpoints().is_empty() {
            return Ok(batch);
        }
        continues(head, batch.entries())?;
        write_under_lock(
            &mut tx,
            head,
            batch.entries(),
            batch.checkpoints(),
            batch.tree_heads(),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        self.appends.under_lock.fetch_add(1, Ordering::Relaxed);
        Ok(batch)
    }

    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        read_entries(&self.pool, from, limit).await
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
        latest_tree_head(&self.pool).await
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
        latest_checkpoint(&self.pool).await
    }
}
