//! The shared store: the authority's state in a PostgreSQL database that
//! several `atrest keyd` replicas serve at once (issue 10, decision 0012).
//! Nothing here is kept in the process: a revoke, shred, rotation or spent
//! nonce written by one replica is what every other reads next.
//!
//! Tables are prefixed `keyd_` (the audit log's, on the same database, are
//! `audit_`). The version is a row in `keyd_schema`; replicas starting at
//! once migrate one after the other under a transaction-scoped advisory
//! lock, as the audit store does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use atrest_remote::{HostId, KeyId};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use zeroize::Zeroizing;

use crate::secrets_key::{EpochKey, SecretsKeyring, StoreKeys, StoredEpoch};

use super::buckets::{self, ScopeKeyRow, StoredBucket};
use super::release_batch::{Batcher, Share, SharedTx, again, lost};
use super::{
    BootRow, BootState, GenerationRow, Held, HeldRow, HeldState, HoldOutcome, HostRecord, HostRow,
    HostState, MAX_HELD_PER_HOST, PolicyRule, PolicyScope, ReleaseHold, ScopeRow, SecretRow,
    SessionRow, Storage, StorageError, StoredApp, StoredApprover, StoredGeneration, StoredHeld,
    StoredScope, StoredSecret, StoredSession, StoredWindow, app_from, backend, keys_and_bucket,
    read_secrets, rewrap_all, scope_from_key, stored_epoch, to_i64, to_u64, wrap_plaintext,
};

/// `version` in `keyd_schema`. Version 2 added `keyd_held_requests`,
/// version 3 the scoped tables and `keyd_web_sessions`, version 4
/// `keyd_secrets_epoch` (host secrets wrapped at rest: the secrets in the
/// clear are wrapped by [`PgStorage::settle_secrets`]), version 5
/// `keyd_vault_generations` and the policies' `rollback` column (the
/// witness, format.md §16.17), version 6 `keyd_login_failures` and
/// `keyd_login_trusted` (the approval page's budgets of wrong codes, shared
/// by the replicas), version 7 `keyd_scope_buckets`, `keyd_records_epoch`
/// and the scopes' `bucket` column (scope keys under bucket keys under the
/// records epoch key, decision 0020: the scope keys are moved by
/// [`PgStorage::settle_records`]), all by idempotent statements in
/// [`SCHEMA`]; older databases are migrated (their other tables are
/// unchanged).
pub const PG_SCHEMA_VERSION: i64 = 7;

/// The oldest version this keyd migrates.
const PG_OLDEST_MIGRATED: i64 = 1;

/// Arbitrary constant for `pg_advisory_xact_lock` (the audit store's is
/// `…0001`).
const MIGRATION_LOCK: i64 = 0x6174_7265_7374_0002;

/// The advisory lock a login attempt's count is taken under, on every
/// replica (logins are rare: one at a time is no cost).
const LOGIN_LOCK: i64 = 0x6174_7265_7374_0003;

/// Connections per replica: a batch of releases holds one across its
/// audit appends (the hosts' rows, shared; [`Storage::hold_release`]),
/// a claim's or a changed host's read takes one, and the boot-state
/// writer and maintenance take one each. Before batches, a release held
/// one of its own, and 8 let at most 8 releases wait for one audit batch;
/// 16 stays, and three replicas (plus their audit stores' 4 each) stay
/// within PostgreSQL's default `max_connections` (100).
const MAX_CONNECTIONS: u32 = 16;

/// How long a query waits for a connection before the database counts as
/// unreachable (the release is refused rather than left hanging).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS keyd_schema (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS keyd_tokens (
        hash BYTEA PRIMARY KEY CHECK (length(hash) = 32),
        group_name TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used BOOLEAN NOT NULL DEFAULT FALSE
    )",
    "CREATE TABLE IF NOT EXISTS keyd_hosts (
        id TEXT PRIMARY KEY,
        group_name TEXT NOT NULL,
        public_key BYTEA NOT NULL CHECK (length(public_key) = 32),
        state TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'shredded')),
        enrolled_at BIGINT NOT NULL,
        last_boot_id TEXT,
        last_unlock_at BIGINT,
        planned_until BIGINT,
        planned_from TEXT,
        ticket_hash BYTEA
    )",
    "CREATE TABLE IF NOT EXISTS keyd_host_secrets (
        host_id TEXT NOT NULL REFERENCES keyd_hosts (id),
        key_id BYTEA NOT NULL CHECK (length(key_id) = 16),
        secret BYTEA NOT NULL,
        current BOOLEAN NOT NULL,
        PRIMARY KEY (host_id, key_id)
    )",
    "CREATE TABLE IF NOT EXISTS keyd_policies (
        scope TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        unannounced TEXT NOT NULL
    )",
    // Since version 5: each policy's rule for a vault put back to an
    // earlier copy.
    "ALTER TABLE keyd_policies ADD COLUMN IF NOT EXISTS rollback TEXT NOT NULL DEFAULT 'approve'",
    // Since version 5: the generation witnessed for each vault of each host.
    "CREATE TABLE IF NOT EXISTS keyd_vault_generations (
        host_id TEXT NOT NULL REFERENCES keyd_hosts(id),
        vault_id BYTEA NOT NULL,
        k BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        chain BYTEA NOT NULL,
        config_generation BIGINT NOT NULL,
        reported_at_ms BIGINT NOT NULL,
        boot_id TEXT NOT NULL,
        reason BIGINT NOT NULL,
        rollback_approved BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (host_id, vault_id)
    )",
    "CREATE TABLE IF NOT EXISTS keyd_approvers (
        name TEXT PRIMARY KEY,
        totp_secret BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        last_step BIGINT NOT NULL DEFAULT 0
    )",
    // The nonces of recent requests, for every replica: the primary key
    // refuses a replay whichever replica saw the nonce first.
    "CREATE TABLE IF NOT EXISTS keyd_nonces (
        nonce BYTEA PRIMARY KEY CHECK (length(nonce) = 16),
        keep_until BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS keyd_nonces_keep_until ON keyd_nonces (keep_until)",
    // Since version 2: requests held for an approver, for every replica.
    // The host's row is locked while one is held, so the per-host limit
    // holds under concurrent holds on several replicas.
    "CREATE TABLE IF NOT EXISTS keyd_held_requests (
        id TEXT PRIMARY KEY,
        host_id TEXT NOT NULL REFERENCES keyd_hosts (id),
        state TEXT NOT NULL CHECK (state IN
            ('pending', 'deciding', 'approved', 'denied', 'expired', 'released')),
        decided_by TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        poll_token_hash BYTEA NOT NULL CHECK (length(poll_token_hash) = 32),
        request BYTEA NOT NULL,
        sealed_grant BYTEA
    )",
    "CREATE INDEX IF NOT EXISTS keyd_held_requests_by_host
        ON keyd_held_requests (host_id, state)",
    // Since version 3: scoped encryption (apps, scopes and their wrapped
    // keys, and the fingerprint of the records key that wraps them).
    "CREATE TABLE IF NOT EXISTS keyd_scoped_records_key (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        fingerprint BYTEA NOT NULL CHECK (length(fingerprint) = 32)
    )",
    "CREATE TABLE IF NOT EXISTS keyd_scoped_apps (
        name TEXT PRIMARY KEY,
        token_hash BYTEA NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        policy TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS keyd_scopes (
        id TEXT PRIMARY KEY,
        needs_share BOOLEAN NOT NULL,
        minimum BIGINT NOT NULL,
        shredded BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        window_start BIGINT,
        window_end BIGINT,
        window_fields TEXT
    )",
    "CREATE TABLE IF NOT EXISTS keyd_scope_keys (
        scope_id TEXT NOT NULL REFERENCES keyd_scopes (id),
        version BIGINT NOT NULL,
        wrapped BYTEA NOT NULL,
        PRIMARY KEY (scope_id, version)
    )",
    // Since version 3: approval-page sessions, shared by the replicas.
    "CREATE TABLE IF NOT EXISTS keyd_web_sessions (
        id_hash BYTEA PRIMARY KEY CHECK (length(id_hash) = 32),
        approver TEXT NOT NULL,
        csrf TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        flash TEXT
    )",
    // Since version 4: secrets are wrapped (docs/format.md), no longer 32
    // bytes in the clear; the epoch of the key they are wrapped under
    // (`secrets.key`) and a check value of that key.
    "ALTER TABLE keyd_host_secrets DROP CONSTRAINT IF EXISTS keyd_host_secrets_secret_check",
    "CREATE TABLE IF NOT EXISTS keyd_secrets_epoch (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        epoch BIGINT NOT NULL CHECK (epoch >= 0),
        key_check BYTEA NOT NULL CHECK (length(key_check) = 32)
    )",
    // A shredded host stays shredded, and gets no secret again, whatever
    // writes to the table (a second line of defence behind the queries).
    "CREATE OR REPLACE FUNCTION keyd_shredded_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_TABLE_NAME = 'keyd_hosts' THEN
                IF OLD.state = 'shredded' AND NEW.state <> 'shredded' THEN
                    RAISE EXCEPTION 'host % is shredded: it stays shredded', OLD.id;
                END IF;
            ELSIF EXISTS (SELECT 1 FROM keyd_hosts WHERE id = NEW.host_id AND state = 'shredded') THEN
                RAISE EXCEPTION 'host % is shredded: it gets no secret', NEW.host_id;
            END IF;
            RETURN NEW;
        END $$",
    "CREATE OR REPLACE TRIGGER keyd_hosts_shredded_is_final BEFORE UPDATE ON keyd_hosts
        FOR EACH ROW EXECUTE FUNCTION keyd_shredded_is_final()",
    "CREATE OR REPLACE TRIGGER keyd_host_secrets_shredded_is_final BEFORE INSERT OR UPDATE
        ON keyd_host_secrets FOR EACH ROW EXECUTE FUNCTION keyd_shredded_is_final()",
    // Since version 6: the approval page's budgets of wrong codes and the
    // addresses approvers logged in from (storage/logins.rs), for every
    // replica: R replicas allow no more attempts than one.
    "CREATE TABLE IF NOT EXISTS keyd_login_failures (
        kind TEXT NOT NULL CHECK (kind IN ('name', 'address', 'untrusted')),
        name TEXT NOT NULL,
        client TEXT NOT NULL,
        window_end BIGINT NOT NULL,
        failures BIGINT NOT NULL CHECK (failures >= 0),
        PRIMARY KEY (kind, name, client)
    )",
    "CREATE TABLE IF NOT EXISTS keyd_login_trusted (
        client TEXT PRIMARY KEY,
        trusted_until BIGINT NOT NULL
    )",
    // Since version 7 (decision 0020): each scope's bucket, the bucket
    // keys its keys are wrapped under (each wrapped under the records
    // epoch key, `records.key`), and that epoch with a check value of its
    // key.
    "ALTER TABLE keyd_scopes ADD COLUMN IF NOT EXISTS bucket BIGINT
        CHECK (bucket BETWEEN 0 AND 255)",
    "CREATE INDEX IF NOT EXISTS keyd_scopes_by_bucket ON keyd_scopes (bucket)",
    "CREATE TABLE IF NOT EXISTS keyd_scope_buckets (
        bucket BIGINT PRIMARY KEY CHECK (bucket BETWEEN 0 AND 255),
        wrapped BYTEA NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS keyd_records_epoch (
        only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        epoch BIGINT NOT NULL CHECK (epoch >= 0),
        key_check BYTEA NOT NULL CHECK (length(key_check) = 32)
    )",
];

/// A host's columns and the key ids of its secrets, from `keyd_hosts h`.
macro_rules! host_columns {
    () => {
        "h.id, h.group_name, h.public_key, h.state, h.enrolled_at,
            (SELECT key_id FROM keyd_host_secrets s WHERE s.host_id = h.id AND s.current)
                AS key_id,
            (SELECT key_id FROM keyd_host_secrets s WHERE s.host_id = h.id AND NOT s.current)
                AS previous_key_id,
            (SELECT epoch FROM keyd_secrets_epoch) AS secrets_epoch"
    };
}

/// A host and the key ids of its secrets (`concat!`ed with a condition).
macro_rules! select_hosts {
    () => {
        concat!("SELECT ", host_columns!(), " FROM keyd_hosts h")
    };
}

/// A host's boot state, from `keyd_hosts h`.
macro_rules! boot_columns {
    () => {
        "h.last_boot_id, h.last_unlock_at, h.planned_until, h.planned_from, h.ticket_hash"
    };
}

macro_rules! select_held {
    () => {
        "SELECT id, host_id, state, decided_by, created_at, expires_at, poll_token_hash,
            request, sealed_grant
         FROM keyd_held_requests"
    };
}

macro_rules! select_scopes {
    () => {
        "SELECT id, needs_share, minimum, shredded, created_at, window_start, window_end,
            window_fields
         FROM keyd_scopes"
    };
}

macro_rules! select_boots {
    () => {
        concat!("SELECT h.id, ", boot_columns!(), " FROM keyd_hosts h")
    };
}

/// The authority's state in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStorage {
    pool: PgPool,
    /// The key host secrets are wrapped under.
    secrets: Arc<SecretsKeyring>,
    /// The key scope bucket keys are wrapped under.
    records: Arc<SecretsKeyring>,
    /// Releases' holds, batched ([`Storage::hold_release`]).
    holds: Arc<Batcher<ReleaseAsk, HoldAnswer>>,
}

/// What one release asks of a batch of holds.
struct ReleaseAsk {
    id: HostId,
    nonce: Option<([u8; 16], u64)>,
}

type HoldAnswer = Result<Option<ReleaseHold<PgHeld>>, StorageError>;

impl PgStorage {
    /// Connects to `url` (`postgres://…`; a password comes from
    /// `PGPASSWORD` or `~/.pgpass` if the URL has none) and creates or
    /// migrates the schema. Several replicas may do this at once. Host
    /// secrets are wrapped under `keys.secrets` (`secrets.key`) and scope
    /// bucket keys under `keys.records` (`records.key`), each checked
    /// against the database's epoch (ratcheted forward if the file is
    /// behind).
    pub async fn open(url: &str, keys: StoreKeys) -> Result<Self, StorageError> {
        let StoreKeys { secrets, records } = keys;
        let connect: PgConnectOptions = url.parse().map_err(StorageError::Backend)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection the server dropped (a restart) fails its next
            // query, which the pool then discards: one refused request
            // instead of a round trip before every query.
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(backend)?;
        let storage = Self {
            pool,
            secrets,
            records,
            holds: Arc::default(),
        };
        // A probe (a second `init` checking the database first) only asks
        // whether the database answers: its epoch is not this host's to
        // judge, and the authority already in it is refused after this.
        let (secrets_epoch, records_epoch) = storage.migrate().await?;
        if let Some(stored) = secrets_epoch
            && !storage.secrets.is_probe()
        {
            storage.secrets.settle(&stored)?;
        }
        if let Some(stored) = records_epoch
            && !storage.records.is_probe()
        {
            storage.records.settle(&stored)?;
        }
        Ok(storage)
    }

    /// Creates or migrates the schema; the secrets epoch and the records
    /// epoch as the database holds them (`None`: a probe's, or secrets
    /// wrapped just now).
    async fn migrate(&self) -> Result<(Option<StoredEpoch>, Option<StoredEpoch>), StorageError> {
        let mut tx = self.locked_tx(MIGRATION_LOCK).await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('keyd_schema') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if exists {
            let found: Option<i64> = sqlx::query_scalar("SELECT version FROM keyd_schema")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            if let Some(found) = found {
                if found > PG_SCHEMA_VERSION {
                    return Err(StorageError::NewerSchema {
                        found,
                        known: PG_SCHEMA_VERSION,
                    });
                }
                if found < PG_OLDEST_MIGRATED {
                    return Err(StorageError::SchemaVersion {
                        found,
                        known: PG_SCHEMA_VERSION,
                    });
                }
                if found == PG_SCHEMA_VERSION {
                    let stored = Self::settle_secrets(&mut tx, &self.secrets).await?;
                    let records = Self::settle_records(&mut tx, &self.records).await?;
                    tx.commit().await.map_err(backend)?;
                    return Ok((stored, records));
                }
            }
        }
        // New, or an older version: every statement is idempotent and
        // creates what the older version lacks.
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let stored = Self::settle_secrets(&mut tx, &self.secrets).await?;
        let records = Self::settle_records(&mut tx, &self.records).await?;
        sqlx::query(
            "INSERT INTO keyd_schema (version) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(PG_SCHEMA_VERSION)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok((stored, records))
    }

    /// The database's records epoch (`None` for a probe); if it has none
    /// yet (new, or from before version 7), 256 bucket keys are made under
    /// the key file's `K_0`, every scope is given a bucket and its keys
    /// (wrapped under the bare `records.key` of before) are wrapped again
    /// under its bucket's key, in the migration's transaction (under its
    /// advisory lock, so one replica does it). A self-contained step of the
    /// migration to version 7: it keys on the epoch row, not on the
    /// version.
    async fn settle_records(
        tx: &mut PgConnection,
        records: &SecretsKeyring,
    ) -> Result<Option<StoredEpoch>, StorageError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT epoch, key_check FROM keyd_records_epoch")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some((epoch, check)) = row {
            return stored_epoch(epoch, check).map(Some);
        }
        if records.is_probe() {
            return Ok(None);
        }
        let scopes: Vec<String> =
            sqlx::query_scalar("SELECT id FROM keyd_scopes ORDER BY id FOR UPDATE")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let keys: Vec<ScopeKeyRow> = sqlx::query_as(
            "SELECT scope_id, version, wrapped FROM keyd_scope_keys ORDER BY scope_id, version
             FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let migration = buckets::migrate(records, scopes, keys)?;
        for (bucket, wrapped) in &migration.buckets {
            sqlx::query("INSERT INTO keyd_scope_buckets (bucket, wrapped) VALUES ($1, $2)")
                .bind(bucket)
                .bind(wrapped)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        for (scope, bucket) in &migration.scope_buckets {
            sqlx::query("UPDATE keyd_scopes SET bucket = $1 WHERE id = $2")
                .bind(bucket)
                .bind(scope)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        update_scope_keys(tx, &migration.scope_keys).await?;
        // The fingerprint of the bare records key is replaced by the
        // epoch's check value.
        sqlx::query("DELETE FROM keyd_scoped_records_key")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let key = &migration.key;
        sqlx::query("INSERT INTO keyd_records_epoch (epoch, key_check) VALUES ($1, $2)")
            .bind(i64::from(key.epoch()))
            .bind(&key.check()[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Ok(Some(StoredEpoch {
            epoch: key.epoch(),
            check: key.check().to_vec(),
        }))
    }

    /// Whether bucket `bucket`'s key is still the one a new scope key was
    /// wrapped under, its row held `FOR SHARE` in `tx` until it ends: a
    /// shred (which takes every bucket row `FOR UPDATE` first) waits for
    /// the insert, and then rewraps what it inserted, or the insert waits
    /// for the shred and sees the key changed.
    async fn bucket_is(tx: &mut PgConnection, bucket: &StoredBucket) -> Result<bool, StorageError> {
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT wrapped FROM keyd_scope_buckets WHERE bucket = $1 FOR SHARE",
        )
        .bind(i64::from(bucket.number))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        Ok(stored.as_deref() == Some(bucket.wrapped.as_slice()))
    }

    /// The database's secrets epoch; if it has none yet (new, or from
    /// before version 4), the secrets still in the clear are wrapped under
    /// the key file's `K_0` (made now if absent) and the epoch written, in
    /// the migration's transaction (`None` then). A self-contained step of
    /// the migration to version 4.
    async fn settle_secrets(
        tx: &mut PgConnection,
        secrets: &SecretsKeyring,
    ) -> Result<Option<StoredEpoch>, StorageError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT epoch, key_check FROM keyd_secrets_epoch")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some((epoch, check)) = row {
            return stored_epoch(epoch, check).map(Some);
        }
        if secrets.is_probe() {
            return Ok(None);
        }
        let plain: Vec<SecretRow> = sqlx::query_as(
            "SELECT host_id, key_id, secret FROM keyd_host_secrets ORDER BY host_id, key_id
             FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let (key, wrapped) = wrap_plaintext(secrets, plain)?;
        update_secrets(tx, &wrapped).await?;
        sqlx::query("INSERT INTO keyd_secrets_epoch (epoch, key_check) VALUES ($1, $2)")
            .bind(i64::from(key.epoch()))
            .bind(&key.check()[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Ok(None)
    }

    /// The key of the database's epoch, read in `tx` with the epoch row
    /// locked (`FOR SHARE` to wrap a new secret, `FOR UPDATE` by a shred),
    /// so no shred moves it before `tx` ends.
    async fn epoch_key(
        &self,
        tx: &mut PgConnection,
        for_update: bool,
    ) -> Result<Arc<EpochKey>, StorageError> {
        let query = if for_update {
            "SELECT epoch, key_check FROM keyd_secrets_epoch FOR UPDATE"
        } else {
            "SELECT epoch, key_check FROM keyd_secrets_epoch FOR SHARE"
        };
        let (epoch, check): (i64, Vec<u8>) = sqlx::query_as(query)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        Ok(self.secrets.key_at(stored_epoch(epoch, check)?.epoch)?)
    }

    /// A transaction that first takes the advisory lock `key` (held until
    /// it ends): its later statements run after the commit of every other
    /// transaction that held it before (each statement reads anew).
    async fn locked_tx(
        &self,
        key: i64,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Ok(tx)
    }

    /// The transaction [`Storage::take_login`] counts in: under the lock
    /// every replica's count takes.
    async fn login_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StorageError> {
        self.locked_tx(LOGIN_LOCK).await
    }

    /// A host row also says the database's secrets epoch: a shred on
    /// another replica moved it, and this one's key file follows (at no
    /// extra round trip). A file that cannot be written is reported, and
    /// the release goes on: the next read tries again, and the next start
    /// ratchets it.
    fn follow_epoch(&self, row: &PgRow) -> Result<(), StorageError> {
        let epoch: Option<i64> = row.try_get("secrets_epoch").map_err(backend)?;
        if let Some(epoch) = epoch.and_then(|e| u32::try_from(e).ok())
            && let Err(e) = self.secrets.follow(epoch)
        {
            tracing::warn!(error = %e, "could not ratchet the secrets key forward; will retry");
        }
        Ok(())
    }

    /// The holds of a batch of releases (decision 0012, eighth slice):
    /// `BEGIN`, then one statement that inserts every nonce (`ON CONFLICT
    /// DO NOTHING`: a replay refuses its own release, not the batch) and
    /// reads every host with its row held shared, locked in the hosts'
    /// order (two replicas' batches of the same hosts cannot deadlock);
    /// the transaction is then shared by the answers' holds
    /// ([`SharedTx`]). Two asks with one nonce: the first spends it, the
    /// second is a replay. An ask whose host is not there gets `None`
    /// (and its nonce back at the commit).
    async fn hold_batch(&self, asks: Vec<ReleaseAsk>) -> Vec<HoldAnswer> {
        match self.try_hold_batch(&asks).await {
            Ok(answers) => answers,
            Err(e) => asks.iter().map(|_| Err(again(&e))).collect(),
        }
    }

    async fn try_hold_batch(&self, asks: &[ReleaseAsk]) -> Result<Vec<HoldAnswer>, StorageError> {
        let mut ids: Vec<&str> = asks.iter().map(|ask| ask.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut nonces: Vec<([u8; 16], i64)> = asks
            .iter()
            .filter_map(|ask| ask.nonce.map(|(nonce, keep)| (nonce, to_i64(keep))))
            .collect();
        nonces.sort_unstable();
        nonces.dedup_by(|a, b| a.0 == b.0);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Every nonce is inserted before any row is locked (the filter on
        // `spent` is evaluated once, before the scan), in the nonces'
        // order, and the rows are locked in the ids' order: every batch
        // takes what it waits for in the same order, so two replicas'
        // batches (and a revoke or a boot-state write between them, which
        // lock rows only) never wait on each other in a circle.
        let rows = sqlx::query(concat!(
            "WITH spent AS (
                INSERT INTO keyd_nonces (nonce, keep_until)
                SELECT * FROM UNNEST($2::bytea[], $3::bigint[])
                ON CONFLICT DO NOTHING RETURNING nonce
             ), spent_all AS (
                SELECT ARRAY(SELECT nonce FROM spent) AS nonces
             )
             SELECT ",
            host_columns!(),
            ", ",
            boot_columns!(),
            ", (SELECT nonces FROM spent_all) AS spent
             FROM keyd_hosts h
             WHERE h.id = ANY($1::text[]) AND (SELECT nonces FROM spent_all) IS NOT NULL
             ORDER BY h.id FOR SHARE OF h"
        ))
        .bind(ids)
        .bind(nonces.iter().map(|(n, _)| &n[..]).collect::<Vec<_>>())
        .bind(nonces.iter().map(|(_, keep)| *keep).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        // Spent by this batch (the same in every row).
        let mut fresh: HashSet<[u8; 16]> = match rows.first() {
            Some(row) => row
                .try_get::<Vec<Vec<u8>>, _>("spent")
                .map_err(backend)?
                .into_iter()
                .filter_map(|nonce| <[u8; 16]>::try_from(nonce).ok())
                .collect(),
            None => HashSet::new(),
        };
        let mut read = HashMap::with_capacity(rows.len());
        for row in &rows {
            self.follow_epoch(row)?;
            let record = host_from_row(row)?;
            read.insert(record.id.clone(), (record, boot_from_row(row)?));
        }
        // Per ask: what was read, the nonce it spent, whether it is fresh.
        let judged: Vec<_> = asks
            .iter()
            .map(|ask| {
                let (spent, nonce_fresh) = match ask.nonce {
                    None => (None, true),
                    Some((nonce, _)) if fresh.remove(&nonce) => (Some(nonce), true),
                    Some(_) => (None, false),
                };
                (read.get(&ask.id), spent, nonce_fresh)
            })
            .collect();
        let shares = judged.iter().filter(|(read, ..)| read.is_some()).count();
        if shares == 0 {
            // Dropped: rolled back, nothing spent.
            return Ok(asks.iter().map(|_| Ok(None)).collect());
        }
        let unspend = judged
            .iter()
            .filter(|(read, ..)| read.is_none())
            .filter_map(|(_, spent, _)| *spent)
            .collect();
        let shared = SharedTx::new(tx, shares, unspend, self.holds.counts());
        Ok(judged
            .into_iter()
            .map(|(read, spent, nonce_fresh)| {
                Ok(read.map(|(record, boot)| ReleaseHold {
                    record: record.clone(),
                    boot: boot.clone(),
                    nonce_fresh,
                    held: PgHeld::shared(Share::new(&shared, spent)),
                }))
            })
            .collect())
    }

    /// What the batches of releases' holds did so far (a test's check
    /// that releases at once share a transaction, and that a lone one
    /// runs in its caller's task).
    #[cfg(test)]
    pub(crate) fn hold_counts(&self) -> &super::release_batch::BatchCounts {
        self.holds.counts()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A transaction of a [`PgStorage`] holding host rows (`FOR SHARE` or
/// `FOR UPDATE`) or an enrollment not yet committed, or a release's share
/// of a batch's transaction ([`Storage::hold_release`]); none by default.
/// A shred written through it moves the key file forward once it commits.
#[derive(Debug, Default)]
pub struct PgHeld {
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    /// A release's part of the transaction its batch holds rows in.
    share: Option<Share>,
    /// The secrets epoch a shred in `tx` advanced to.
    advanced: Option<(Arc<SecretsKeyring>, u32)>,
}

impl PgHeld {
    fn new(tx: sqlx::Transaction<'static, sqlx::Postgres>) -> Self {
        Self {
            tx: Some(tx),
            ..Self::default()
        }
    }

    fn shared(share: Share) -> Self {
        Self {
            share: Some(share),
            ..Self::default()
        }
    }
}

impl Held for PgHeld {
    async fn commit(self) -> Result<(), StorageError> {
        if let Some(share) = self.share {
            share.commit().await?;
        }
        if let Some(tx) = self.tx {
            tx.commit().await.map_err(backend)?;
        }
        if let Some((secrets, epoch)) = self.advanced {
            secrets.key_at(epoch)?;
        }
        Ok(())
    }
}

impl Storage for PgStorage {
    type Held = PgHeld;

    async fn insert_token(
        &self,
        token_hash: [u8; 32],
        group: &str,
        expires_at: u64,
    ) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO keyd_tokens (hash, group_name, expires_at) VALUES ($1, $2, $3)")
            .bind(&token_hash[..])
            .bind(group)
            .bind(to_i64(expires_at))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn enroll(
        &self,
        token_hash: [u8; 32],
        now: u64,
        host: &HostRecord,
        secret: &[u8; 32],
    ) -> Result<Option<(String, PgHeld)>, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The row lock of the UPDATE makes a second replica spending the
        // same token wait, then find it used.
        let group: Option<String> = sqlx::query_scalar(
            "UPDATE keyd_tokens SET used = TRUE WHERE hash = $1 AND NOT used AND expires_at > $2
             RETURNING group_name",
        )
        .bind(&token_hash[..])
        .bind(to_i64(now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(group) = group else {
            return Ok(None);
        };
        let inserted = sqlx::query(
            "INSERT INTO keyd_hosts (id, group_name, public_key, state, enrolled_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(host.id.as_str())
        .bind(&group)
        .bind(&host.public_key.to_bytes()[..])
        .bind(HostState::Active.as_str())
        .bind(to_i64(host.enrolled_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            // Dropping the transaction rolls back, so the token stays unused.
            return Err(StorageError::HostExists(host.id.clone()));
        }
        let key = self.epoch_key(&mut tx, false).await?;
        sqlx::query(
            "INSERT INTO keyd_host_secrets (host_id, key_id, secret, current)
             VALUES ($1, $2, $3, TRUE)",
        )
        .bind(host.id.as_str())
        .bind(&host.key_id.0[..])
        .bind(key.wrap(&host.id, &host.key_id, secret))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Ok(Some((group, PgHeld::new(tx))))
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StorageError> {
        let rows = sqlx::query(concat!(select_hosts!(), " ORDER BY h.id"))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(host_from_row).collect()
    }

    async fn host(&self, id: &HostId) -> Result<Option<HostRecord>, StorageError> {
        let row = sqlx::query(concat!(select_hosts!(), " WHERE h.id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        self.follow_epoch(&row)?;
        host_from_row(&row).map(Some)
    }

    async fn host_secrets(&self, id: &HostId) -> Result<Vec<StoredSecret>, StorageError> {
        read_secrets(&self.secrets, id, || async {
            sqlx::query_as(
                "SELECT key_id, secret, current FROM keyd_host_secrets WHERE host_id = $1
                 ORDER BY current DESC",
            )
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
        })
        .await
    }

    async fn hold_host(
        &self,
        id: &HostId,
        exclusive: bool,
    ) -> Result<Option<(HostRecord, PgHeld)>, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Shared by releases (they do not wait for each other), exclusive
        // by a change of state: each waits for the other's transaction.
        let query = if exclusive {
            concat!(select_hosts!(), " WHERE h.id = $1 FOR UPDATE OF h")
        } else {
            concat!(select_hosts!(), " WHERE h.id = $1 FOR SHARE OF h")
        };
        let row = sqlx::query(query)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        self.follow_epoch(&row)?;
        Ok(Some((host_from_row(&row)?, PgHeld::new(tx))))
    }

    /// Batched with the releases that come at the same time (see
    /// [`PgStorage::hold_batch`]; a release that finds no batch running
    /// and none queued runs a batch of one in its own task): the hosts
    /// and their boot states read
    /// with the rows held shared, and the nonces inserted, in one
    /// statement of one transaction (the primary key makes a second
    /// replica's insert of the same nonce wait for this commit, then find
    /// it spent). Whatever the record read, the nonce is spent only if
    /// the caller commits the hold.
    async fn hold_release(
        &self,
        known: &HostRecord,
        nonce: Option<([u8; 16], u64)>,
    ) -> Result<Option<ReleaseHold<PgHeld>>, StorageError> {
        let ask = ReleaseAsk {
            id: known.id.clone(),
            nonce,
        };
        self.holds
            .ask(ask, |asks| {
                let storage = self.clone();
                async move { storage.hold_batch(asks).await }
            })
            .await
            .unwrap_or_else(|| Err(lost()))
    }

    async fn set_host_state(
        &self,
        held: &mut PgHeld,
        id: &HostId,
        state: HostState,
    ) -> Result<bool, StorageError> {
        let mut own = None;
        let tx = match &mut held.tx {
            Some(tx) => tx,
            None => own.insert(self.pool.begin().await.map_err(backend)?),
        };
        let updated =
            sqlx::query("UPDATE keyd_hosts SET state = $1 WHERE id = $2 AND state <> 'shredded'")
                .bind(state.as_str())
                .bind(id.as_str())
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
        let mut advanced = None;
        if state == HostState::Shredded && updated.rows_affected() > 0 {
            // The epoch row locked first: a shred on another replica, or
            // an enrollment or rotation wrapping under the current key,
            // waits for this transaction.
            let key = self.epoch_key(tx, true).await?;
            sqlx::query("DELETE FROM keyd_host_secrets WHERE host_id = $1")
                .bind(id.as_str())
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
            let rest: Vec<SecretRow> = sqlx::query_as(
                "SELECT host_id, key_id, secret FROM keyd_host_secrets ORDER BY host_id, key_id
                 FOR UPDATE",
            )
            .fetch_all(&mut **tx)
            .await
            .map_err(backend)?;
            let (next, rewrapped) = rewrap_all(&key, rest)?;
            update_secrets(tx, &rewrapped).await?;
            sqlx::query("UPDATE keyd_secrets_epoch SET epoch = $1, key_check = $2")
                .bind(i64::from(next.epoch()))
                .bind(&next.check()[..])
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
            advanced = Some((self.secrets.clone(), next.epoch()));
        }
        if let Some(tx) = own {
            tx.commit().await.map_err(backend)?;
            if let Some((secrets, epoch)) = advanced {
                secrets.key_at(epoch)?;
            }
        } else {
            // Moved forward once the caller commits the hold.
            held.advanced = advanced;
        }
        Ok(updated.rows_affected() > 0)
    }

    async fn rotate_secret(
        &self,
        id: &HostId,
        key_id: KeyId,
        secret: &[u8; 32],
    ) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Locks the host: a shred on another replica waits for this
        // rotation, then deletes its secret too.
        let active: Option<String> = sqlx::query_scalar(
            "SELECT state FROM keyd_hosts WHERE id = $1 AND state <> 'shredded' FOR UPDATE",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if active.is_none() {
            return Ok(false);
        }
        // The epoch row before any secret row: a shred locks them in
        // that order too.
        let key = self.epoch_key(&mut tx, false).await?;
        sqlx::query("DELETE FROM keyd_host_secrets WHERE host_id = $1 AND NOT current")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE keyd_host_secrets SET current = FALSE WHERE host_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO keyd_host_secrets (host_id, key_id, secret, current)
             VALUES ($1, $2, $3, TRUE)",
        )
        .bind(id.as_str())
        .bind(&key_id.0[..])
        .bind(key.wrap(id, &key_id, secret))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn retire_secrets(&self, id: &HostId, key_ids: &[KeyId]) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for key_id in key_ids {
            sqlx::query(
                "DELETE FROM keyd_host_secrets WHERE host_id = $1 AND key_id = $2 AND NOT current",
            )
            .bind(id.as_str())
            .bind(&key_id.0[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn set_policy(&self, scope: &PolicyScope, rule: PolicyRule) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO keyd_policies (scope, policy, unannounced, rollback)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope) DO UPDATE
             SET policy = EXCLUDED.policy, unannounced = EXCLUDED.unannounced,
                 rollback = EXCLUDED.rollback",
        )
        .bind(scope.key())
        .bind(rule.policy.as_str())
        .bind(rule.unannounced_reboot.as_str())
        .bind(rule.rollback.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicyRule)>, StorageError> {
        let rows = sqlx::query(
            "SELECT scope, policy, unannounced, rollback FROM keyd_policies ORDER BY scope",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let scope: String = row.try_get("scope").map_err(backend)?;
                let policy: String = row.try_get("policy").map_err(backend)?;
                let unannounced: String = row.try_get("unannounced").map_err(backend)?;
                let rollback: String = row.try_get("rollback").map_err(backend)?;
                Ok((
                    scope_from_key(&scope)?,
                    PolicyRule {
                        policy: policy.parse()?,
                        unannounced_reboot: unannounced.parse()?,
                        rollback: rollback.parse()?,
                    },
                ))
            })
            .collect()
    }

    async fn boot_states(&self) -> Result<Vec<(HostId, BootState)>, StorageError> {
        let rows = sqlx::query(select_boots!())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(backend)?;
                let id = HostId::new(id.clone())
                    .map_err(|_| StorageError::Corrupt(format!("host id {id:?}")))?;
                Ok((id, boot_from_row(row)?))
            })
            .collect()
    }

    async fn boot_state(&self, id: &HostId) -> Result<Option<BootState>, StorageError> {
        let row = sqlx::query(concat!(select_boots!(), " WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(boot_from_row).transpose()
    }

    async fn save_boot_states(&self, states: &[(HostId, BootState)]) -> Result<(), StorageError> {
        if states.is_empty() {
            return Ok(());
        }
        // Rows are locked in one order, the hosts' ids: two replicas
        // writing overlapping batches in their own orders deadlocked
        // (PostgreSQL aborted one, and its release failed with a 500).
        let mut states: Vec<&(HostId, BootState)> = states.iter().collect();
        states.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        states.dedup_by(|a, b| a.0 == b.0);
        // One statement for the whole batch (one round trip, committed on
        // its own), the rows locked in the order above.
        sqlx::query(
            "WITH s AS (
                SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[],
                                     $5::TEXT[], $6::BYTEA[])
                    AS s(id, last_boot_id, last_unlock_at, planned_until, planned_from, ticket_hash)
             ), locked AS (
                SELECT h.id FROM keyd_hosts h JOIN s ON s.id = h.id ORDER BY h.id FOR UPDATE OF h
             )
             UPDATE keyd_hosts h SET last_boot_id = s.last_boot_id,
                last_unlock_at = s.last_unlock_at, planned_until = s.planned_until,
                planned_from = s.planned_from, ticket_hash = s.ticket_hash
             FROM s, locked WHERE h.id = s.id AND locked.id = s.id",
        )
        .bind(states.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
        .bind(
            states
                .iter()
                .map(|(_, s)| s.last_boot_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, s)| s.last_unlock_at.map(to_i64))
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, s)| s.planned_until.map(to_i64))
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, s)| s.planned_from.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, s)| s.ticket_hash.as_ref().map(|h| &h[..]))
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// A row held by a release or a change (a batch of holds keeps its
    /// rows across its audit appends) is passed over, not waited for
    /// (`SKIP LOCKED`): the tick's write never queues ahead of the next
    /// batch of holds on a row it could not lock yet. Those hosts are
    /// returned; their times are written by the next call.
    async fn save_unlock_times(
        &self,
        times: &[(HostId, u64)],
    ) -> Result<Vec<HostId>, StorageError> {
        if times.is_empty() {
            return Ok(Vec::new());
        }
        // Rows locked in the hosts' ids' order, as in save_boot_states.
        let mut times: Vec<&(HostId, u64)> = times.iter().collect();
        times.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        times.dedup_by(|a, b| a.0 == b.0);
        let busy: Vec<String> = sqlx::query_scalar(
            "WITH t AS (
                SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS t(id, at)
             ), locked AS (
                SELECT h.id FROM keyd_hosts h JOIN t ON t.id = h.id ORDER BY h.id
                FOR UPDATE OF h SKIP LOCKED
             ), written AS (
                UPDATE keyd_hosts h SET last_unlock_at = t.at
                FROM t, locked
                WHERE h.id = t.id AND locked.id = t.id
                    AND (h.last_unlock_at IS NULL OR h.last_unlock_at < t.at)
             )
             SELECT h.id FROM keyd_hosts h JOIN t ON t.id = h.id
             WHERE h.id NOT IN (SELECT id FROM locked)",
        )
        .bind(times.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
        .bind(times.iter().map(|(_, at)| to_i64(*at)).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        busy.into_iter()
            .map(|id| {
                HostId::new(id.clone())
                    .map_err(|_| StorageError::Corrupt(format!("host id {id:?}")))
            })
            .collect()
    }

    async fn vault_generation(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<Option<StoredGeneration>, StorageError> {
        let row = sqlx::query(
            "SELECT host_id, vault_id, k, seq, chain, config_generation, reported_at_ms,
                boot_id, reason, rollback_approved
             FROM keyd_vault_generations WHERE host_id = $1 AND vault_id = $2",
        )
        .bind(host.as_str())
        .bind(&vault_id[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        GenerationRow {
            host_id: row.try_get("host_id").map_err(backend)?,
            vault_id: row.try_get("vault_id").map_err(backend)?,
            k: row.try_get("k").map_err(backend)?,
            seq: row.try_get("seq").map_err(backend)?,
            chain: row.try_get("chain").map_err(backend)?,
            config_generation: row.try_get("config_generation").map_err(backend)?,
            reported_at_ms: row.try_get("reported_at_ms").map_err(backend)?,
            boot_id: row.try_get("boot_id").map_err(backend)?,
            reason: row.try_get("reason").map_err(backend)?,
            rollback_approved: row.try_get("rollback_approved").map_err(backend)?,
        }
        .generation()
        .map(Some)
    }

    async fn save_vault_generation(&self, g: &StoredGeneration) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "INSERT INTO keyd_vault_generations (host_id, vault_id, k, seq, chain,
                config_generation, reported_at_ms, boot_id, reason, rollback_approved)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (host_id, vault_id) DO UPDATE SET k = EXCLUDED.k,
                seq = EXCLUDED.seq, chain = EXCLUDED.chain,
                config_generation = EXCLUDED.config_generation,
                reported_at_ms = EXCLUDED.reported_at_ms, boot_id = EXCLUDED.boot_id,
                reason = EXCLUDED.reason, rollback_approved = EXCLUDED.rollback_approved
             WHERE keyd_vault_generations.seq <= EXCLUDED.seq",
        )
        .bind(g.host_id.as_str())
        .bind(&g.vault_id[..])
        .bind(to_i64(g.generation.checkpoint))
        .bind(to_i64(g.generation.seq))
        .bind(&g.generation.chain[..])
        .bind(to_i64(g.config_generation))
        .bind(to_i64(g.reported_at_ms))
        .bind(&g.boot_id)
        .bind(i64::from(g.reason as u8))
        .bind(g.rollback_approved)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn approve_rollback(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE keyd_vault_generations SET rollback_approved = TRUE
             WHERE host_id = $1 AND vault_id = $2",
        )
        .bind(host.as_str())
        .bind(&vault_id[..])
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_approver(
        &self,
        name: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO keyd_approvers (name, totp_secret, created_at, last_step)
             VALUES ($1, $2, $3, 0)
             ON CONFLICT (name) DO UPDATE SET totp_secret = EXCLUDED.totp_secret,
                created_at = EXCLUDED.created_at, last_step = 0",
        )
        .bind(name)
        .bind(totp_secret)
        .bind(to_i64(now))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn approver(&self, name: &str) -> Result<Option<StoredApprover>, StorageError> {
        let row =
            sqlx::query("SELECT name, totp_secret, last_step FROM keyd_approvers WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.map(|row| {
            Ok(StoredApprover {
                name: row.try_get("name").map_err(backend)?,
                totp_secret: Zeroizing::new(row.try_get("totp_secret").map_err(backend)?),
                last_step: to_u64(row.try_get("last_step").map_err(backend)?),
            })
        })
        .transpose()
    }

    async fn use_approver_step(&self, name: &str, step: u64) -> Result<bool, StorageError> {
        let updated = sqlx::query(
            "UPDATE keyd_approvers SET last_step = $1 WHERE name = $2 AND last_step < $1",
        )
        .bind(to_i64(step))
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn spend_nonce(&self, nonce: [u8; 16], keep_until: u64) -> Result<bool, StorageError> {
        let inserted = sqlx::query(
            "INSERT INTO keyd_nonces (nonce, keep_until) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&nonce[..])
        .bind(to_i64(keep_until))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn remember_nonces(&self, nonces: &[([u8; 16], u64)]) -> Result<(), StorageError> {
        if nonces.is_empty() {
            return Ok(());
        }
        let (keys, until): (Vec<Vec<u8>>, Vec<i64>) = nonces
            .iter()
            .map(|(nonce, until)| (nonce.to_vec(), to_i64(*until)))
            .unzip();
        sqlx::query(
            "INSERT INTO keyd_nonces (nonce, keep_until)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(keys)
        .bind(until)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn prune_nonces(&self, now: u64) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM keyd_nonces WHERE keep_until < $1")
            .bind(to_i64(now))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_held(&self, held: &StoredHeld, now: u64) -> Result<HoldOutcome, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The host's row lock: a hold on another replica waits here, and
        // its count (a new snapshot per statement) then sees this insert.
        sqlx::query("SELECT 1 FROM keyd_hosts WHERE id = $1 FOR UPDATE")
            .bind(held.host_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM keyd_held_requests
             WHERE host_id = $1 AND state IN ('pending', 'deciding') AND expires_at > $2",
        )
        .bind(held.host_id.as_str())
        .bind(to_i64(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let waiting = usize::try_from(waiting).unwrap_or(usize::MAX);
        if waiting >= MAX_HELD_PER_HOST {
            return Ok(HoldOutcome::Full { waiting });
        }
        sqlx::query(
            "INSERT INTO keyd_held_requests (id, host_id, state, decided_by, created_at,
                expires_at, poll_token_hash, request, sealed_grant)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&held.id)
        .bind(held.host_id.as_str())
        .bind(held.state.as_str())
        .bind(held.decided_by.as_deref())
        .bind(to_i64(held.created_at))
        .bind(to_i64(held.expires_at))
        .bind(&held.poll_token_hash[..])
        .bind(&held.request)
        .bind(held.sealed_grant.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(HoldOutcome::Held)
    }

    async fn held(&self, id: &str) -> Result<Option<StoredHeld>, StorageError> {
        let row = sqlx::query(concat!(select_held!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(held_from_row).transpose()
    }

    async fn waiting_held(&self, now: u64) -> Result<Vec<StoredHeld>, StorageError> {
        let rows = sqlx::query(concat!(
            select_held!(),
            " WHERE state IN ('pending', 'deciding') AND expires_at > $1 ORDER BY created_at, id"
        ))
        .bind(to_i64(now))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(held_from_row).collect()
    }

    async fn expired_held_ids(&self, now: u64) -> Result<Vec<String>, StorageError> {
        sqlx::query_scalar(
            "SELECT id FROM keyd_held_requests WHERE state = 'pending' AND expires_at <= $1
             ORDER BY expires_at",
        )
        .bind(to_i64(now))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }

    async fn move_held(
        &self,
        id: &str,
        from: HeldState,
        to: HeldState,
        by: Option<&str>,
        expired: Option<(u64, bool)>,
    ) -> Result<bool, StorageError> {
        let (now, expired) = expired.map_or((None, None), |(now, e)| (Some(to_i64(now)), Some(e)));
        // One statement: the row lock of the UPDATE makes a second mover
        // wait, re-check `state` on the committed row and find it moved.
        let moved = sqlx::query(
            "UPDATE keyd_held_requests SET state = $1, decided_by = coalesce($2, decided_by)
             WHERE id = $3 AND state = $4
                AND ($5::bigint IS NULL OR (expires_at <= $5) = $6)",
        )
        .bind(to.as_str())
        .bind(by)
        .bind(id)
        .bind(from.as_str())
        .bind(now)
        .bind(expired)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(moved.rows_affected() == 1)
    }

    async fn store_held_grant(&self, id: &str, sealed_grant: &[u8]) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE keyd_held_requests SET sealed_grant = $1
             WHERE id = $2 AND state = 'released' AND sealed_grant IS NULL",
        )
        .bind(sealed_grant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_pending_held(&self, id: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM keyd_held_requests WHERE id = $1 AND state = 'pending'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn prune_held(&self, before: u64) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM keyd_held_requests WHERE state <> 'pending' AND expires_at < $1")
            .bind(to_i64(before))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn records_keyring(&self) -> Arc<SecretsKeyring> {
        self.records.clone()
    }

    async fn scope_bucket(&self, number: u8) -> Result<StoredBucket, StorageError> {
        let wrapped: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT wrapped FROM keyd_scope_buckets WHERE bucket = $1")
                .bind(i64::from(number))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let wrapped =
            wrapped.ok_or_else(|| StorageError::Corrupt(format!("no scope bucket {number}")))?;
        Ok(StoredBucket { number, wrapped })
    }

    async fn insert_app(&self, app: &StoredApp) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "INSERT INTO keyd_scoped_apps (name, token_hash, policy, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&app.name)
        .bind(&app.token_hash[..])
        .bind(&app.policy)
        .bind(to_i64(app.created_at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn app_by_token(&self, token_hash: [u8; 32]) -> Result<Option<StoredApp>, StorageError> {
        let row: Option<(String, Vec<u8>, String, i64)> = sqlx::query_as(
            "SELECT name, token_hash, policy, created_at FROM keyd_scoped_apps WHERE token_hash = $1",
        )
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|(n, t, p, c)| app_from(n, t, p, c)).transpose()
    }

    async fn apps(&self) -> Result<Vec<StoredApp>, StorageError> {
        let rows: Vec<(String, Vec<u8>, String, i64)> = sqlx::query_as(
            "SELECT name, token_hash, policy, created_at FROM keyd_scoped_apps ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|(n, t, p, c)| app_from(n, t, p, c))
            .collect()
    }

    async fn delete_app(&self, name: &str) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM keyd_scoped_apps WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_scope(&self, scope: &StoredScope) -> Result<bool, StorageError> {
        let bucket = scope
            .bucket
            .as_ref()
            .ok_or_else(|| StorageError::Corrupt(format!("scope {}: no bucket", scope.id)))?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !Self::bucket_is(&mut tx, bucket).await? {
            return Ok(false);
        }
        let window = scope.window.as_ref();
        let done = sqlx::query(
            "INSERT INTO keyd_scopes (id, needs_share, minimum, shredded, created_at,
                window_start, window_end, window_fields, bucket)
             VALUES ($1, $2, $3, FALSE, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&scope.id)
        .bind(scope.needs_client_share)
        .bind(i64::from(scope.minimum_version))
        .bind(to_i64(scope.created_at))
        .bind(window.map(|w| i64::from(w.start)))
        .bind(window.map(|w| i64::from(w.end)))
        .bind(window.map(|w| w.fields.as_str()))
        .bind(i64::from(bucket.number))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for (version, wrapped) in &scope.keys {
            sqlx::query(
                "INSERT INTO keyd_scope_keys (scope_id, version, wrapped) VALUES ($1, $2, $3)",
            )
            .bind(&scope.id)
            .bind(i64::from(*version))
            .bind(wrapped.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn scope(&self, id: &str) -> Result<Option<StoredScope>, StorageError> {
        let Some(row) = sqlx::query(concat!(select_scopes!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        // The keys and their bucket's key in one statement (one snapshot):
        // they agree, whatever a shred on another replica commits between
        // this and the row's read.
        let rows = sqlx::query_as(
            "SELECT k.version, k.wrapped, s.bucket, b.wrapped FROM keyd_scope_keys k
             JOIN keyd_scopes s ON s.id = k.scope_id
             LEFT JOIN keyd_scope_buckets b ON b.bucket = s.bucket
             WHERE k.scope_id = $1 ORDER BY k.version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let (keys, bucket) = keys_and_bucket(id, rows)?;
        scope_from_row(&row)?.scope(keys, bucket).map(Some)
    }

    async fn scopes(&self) -> Result<Vec<StoredScope>, StorageError> {
        let rows = sqlx::query(concat!(select_scopes!(), " ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let keys: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT scope_id, version, wrapped FROM keyd_scope_keys ORDER BY scope_id, version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut by_scope: HashMap<String, Vec<(i64, Vec<u8>)>> = HashMap::new();
        for (scope, version, wrapped) in keys {
            by_scope.entry(scope).or_default().push((version, wrapped));
        }
        rows.iter()
            .map(|row| {
                let row = scope_from_row(row)?;
                let keys = by_scope.remove(&row.id).unwrap_or_default();
                row.scope(keys, None)
            })
            .collect()
    }

    async fn add_scope_key(
        &self,
        id: &str,
        version: u32,
        wrapped: &[u8],
        bucket: &StoredBucket,
    ) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !Self::bucket_is(&mut tx, bucket).await? {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO keyd_scope_keys (scope_id, version, wrapped)
             SELECT id, $1, $2 FROM keyd_scopes WHERE id = $3 AND NOT shredded AND bucket = $4
             ON CONFLICT (scope_id, version) DO NOTHING",
        )
        .bind(i64::from(version))
        .bind(wrapped)
        .bind(id)
        .bind(i64::from(bucket.number))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_scope_minimum(&self, id: &str, minimum: u32) -> Result<bool, StorageError> {
        let done =
            sqlx::query("UPDATE keyd_scopes SET minimum = $1 WHERE id = $2 AND NOT shredded")
                .bind(i64::from(minimum))
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn shred_scope(&self, id: &str) -> Result<bool, StorageError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The epoch row, then every bucket row, held to the end: shreds on
        // every replica take turns, and a scope insert or rotation (which
        // holds its bucket's row shared) is either committed before the
        // rows below are read, or sees the bucket's key changed.
        let (epoch, check): (i64, Vec<u8>) =
            sqlx::query_as("SELECT epoch, key_check FROM keyd_records_epoch FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        let all: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT bucket, wrapped FROM keyd_scope_buckets ORDER BY bucket FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let shredded: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE keyd_scopes SET shredded = TRUE, window_start = NULL, window_end = NULL,
                window_fields = NULL WHERE id = $1 AND NOT shredded RETURNING bucket",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(bucket) = shredded else {
            return Ok(false);
        };
        let bucket =
            bucket.ok_or_else(|| StorageError::Corrupt(format!("scope {id}: no bucket")))?;
        sqlx::query("DELETE FROM keyd_scope_keys WHERE scope_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let key = self.records.key_at(stored_epoch(epoch, check)?.epoch)?;
        let siblings: Vec<ScopeKeyRow> = sqlx::query_as(
            "SELECT k.scope_id, k.version, k.wrapped FROM keyd_scope_keys k
             JOIN keyd_scopes s ON s.id = k.scope_id WHERE s.bucket = $1
             ORDER BY k.scope_id, k.version FOR UPDATE OF k",
        )
        .bind(bucket)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let step = buckets::shred_step(&key, bucket, all, siblings)?;
        update_scope_keys(&mut tx, &step.scope_keys).await?;
        for (number, wrapped) in &step.buckets {
            sqlx::query("UPDATE keyd_scope_buckets SET wrapped = $1 WHERE bucket = $2")
                .bind(wrapped)
                .bind(number)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        sqlx::query("UPDATE keyd_records_epoch SET epoch = $1, key_check = $2")
            .bind(i64::from(step.next.epoch()))
            .bind(&step.next.check()[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        // Committed: the key file moves forward (a crash before this
        // leaves it one epoch behind, and the next start ratchets it; the
        // other replicas follow when they next open a bucket key).
        self.records.key_at(step.next.epoch())?;
        Ok(true)
    }

    async fn set_scope_window(
        &self,
        id: &str,
        window: Option<&StoredWindow>,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE keyd_scopes SET window_start = $1, window_end = $2, window_fields = $3
             WHERE id = $4 AND NOT shredded",
        )
        .bind(window.map(|w| i64::from(w.start)))
        .bind(window.map(|w| i64::from(w.end)))
        .bind(window.map(|w| w.fields.as_str()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_session(&self, session: &StoredSession) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO keyd_web_sessions (id_hash, approver, csrf, expires_at, flash)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash[..])
        .bind(&session.approver)
        .bind(&session.csrf)
        .bind(to_i64(session.expires_at))
        .bind(&session.flash)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn session(
        &self,
        id_hash: [u8; 32],
        now: u64,
    ) -> Result<Option<StoredSession>, StorageError> {
        let row = sqlx::query(
            "SELECT id_hash, approver, csrf, expires_at, flash FROM keyd_web_sessions
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(&id_hash[..])
        .bind(to_i64(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn set_session_flash(
        &self,
        id_hash: [u8; 32],
        flash: Option<&str>,
    ) -> Result<(), StorageError> {
        sqlx::query("UPDATE keyd_web_sessions SET flash = $1 WHERE id_hash = $2")
            .bind(flash)
            .bind(&id_hash[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: [u8; 32]) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM keyd_web_sessions WHERE id_hash = $1")
            .bind(&id_hash[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn prune_sessions(&self, now: u64) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM keyd_web_sessions WHERE expires_at <= $1")
            .bind(to_i64(now))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    login_methods!("keyd_login_failures", "keyd_login_trusted");

    async fn check_writable(&self) -> Result<(), StorageError> {
        let writable: bool = sqlx::query_scalar(
            "SELECT current_setting('transaction_read_only') = 'off' AND NOT pg_is_in_recovery()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        if writable {
            Ok(())
        } else {
            Err(StorageError::ReadOnly)
        }
    }
}

fn scope_from_row(row: &PgRow) -> Result<ScopeRow, StorageError> {
    Ok(ScopeRow {
        id: row.try_get("id").map_err(backend)?,
        needs_share: row.try_get("needs_share").map_err(backend)?,
        minimum: row.try_get("minimum").map_err(backend)?,
        shredded: row.try_get("shredded").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        window_start: row.try_get("window_start").map_err(backend)?,
        window_end: row.try_get("window_end").map_err(backend)?,
        window_fields: row.try_get("window_fields").map_err(backend)?,
    })
}

fn host_from_row(row: &PgRow) -> Result<HostRecord, StorageError> {
    HostRow {
        id: row.try_get("id").map_err(backend)?,
        group: row.try_get("group_name").map_err(backend)?,
        public_key: row.try_get("public_key").map_err(backend)?,
        key_id: row.try_get("key_id").map_err(backend)?,
        previous_key_id: row.try_get("previous_key_id").map_err(backend)?,
        state: row.try_get("state").map_err(backend)?,
        enrolled_at: row.try_get("enrolled_at").map_err(backend)?,
    }
    .record()
}

fn session_from_row(row: &PgRow) -> Result<StoredSession, StorageError> {
    SessionRow {
        id_hash: row.try_get("id_hash").map_err(backend)?,
        approver: row.try_get("approver").map_err(backend)?,
        csrf: row.try_get("csrf").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        flash: row.try_get("flash").map_err(backend)?,
    }
    .session()
}

fn held_from_row(row: &PgRow) -> Result<StoredHeld, StorageError> {
    HeldRow {
        id: row.try_get("id").map_err(backend)?,
        host_id: row.try_get("host_id").map_err(backend)?,
        state: row.try_get("state").map_err(backend)?,
        decided_by: row.try_get("decided_by").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        poll_token_hash: row.try_get("poll_token_hash").map_err(backend)?,
        request: row.try_get("request").map_err(backend)?,
        sealed_grant: row.try_get("sealed_grant").map_err(backend)?,
    }
    .held()
}

fn boot_from_row(row: &PgRow) -> Result<BootState, StorageError> {
    Ok(BootRow {
        last_boot_id: row.try_get("last_boot_id").map_err(backend)?,
        last_unlock_at: row.try_get("last_unlock_at").map_err(backend)?,
        planned_until: row.try_get("planned_until").map_err(backend)?,
        planned_from: row.try_get("planned_from").map_err(backend)?,
        ticket_hash: row.try_get("ticket_hash").map_err(backend)?,
    }
    .state())
}

/// Writes scope keys wrapped again (under a migration's or a shred's
/// bucket keys) over their rows.
async fn update_scope_keys(
    tx: &mut PgConnection,
    rows: &[ScopeKeyRow],
) -> Result<(), StorageError> {
    for (scope, version, wrapped) in rows {
        sqlx::query("UPDATE keyd_scope_keys SET wrapped = $1 WHERE scope_id = $2 AND version = $3")
            .bind(wrapped)
            .bind(scope)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

async fn update_secrets(tx: &mut PgConnection, rows: &[SecretRow]) -> Result<(), StorageError> {
    for (host, key_id, wrapped) in rows {
        sqlx::query("UPDATE keyd_host_secrets SET secret = $1 WHERE host_id = $2 AND key_id = $3")
            .bind(wrapped)
            .bind(host)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    Ok(())
}
