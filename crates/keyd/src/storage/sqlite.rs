//! The embedded store: the authority's state in a SQLite file that one
//! keyd process owns (`keyd.lock`), so the nonces of recent requests can
//! live in its memory (reloaded from the audit log at start).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_remote::{HostId, KeyId};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use zeroize::Zeroizing;

use crate::secrets_key::{EpochKey, SecretsKeyring, StoreKeys, StoredEpoch};

use super::buckets::{self, ScopeKeyRow, StoredBucket};
use super::{
    BootRow, BootState, GenerationRow, Held, HeldRow, HeldState, HoldOutcome, HostRecord, HostRow,
    HostState, MAX_HELD_PER_HOST, PolicyRule, PolicyScope, ScopeRow, SecretRow, SessionRow,
    Storage, StorageError, StoredApp, StoredApprover, StoredGeneration, StoredHeld, StoredScope,
    StoredSecret, StoredSession, StoredWindow, app_from, backend, keys_and_bucket, read_secrets,
    rewrap_all, scope_from_key, stored_epoch, to_i64, to_u64, wrap_plaintext,
};

/// The schema this keyd writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 8;
const SET_SCHEMA_VERSION: &str = "PRAGMA user_version = 8";
/// From version 1: the boot ticket. (From version 2 to 3 a table is added:
/// `held_requests`; from 3 to 4 the scoped tables and `web_sessions`; from
/// 4 to 5 `secrets_epoch`, and the secrets in the clear are wrapped by
/// [`SqliteStorage::settle_secrets`]; from 6 to 7 `login_failures` and
/// `login_trusted`; from 7 to 8 `scope_buckets` and `records_epoch`, and
/// the scope keys are moved under bucket keys by
/// [`SqliteStorage::settle_records`]; tables are created by [`SCHEMA`]
/// like every table.)
const MIGRATE_1_TO_2: &str = "ALTER TABLE hosts ADD COLUMN ticket_hash BLOB";
/// To version 6 (the witness, format.md §16.17): each policy's `rollback`
/// rule. (`vault_generations` is created by [`SCHEMA`].) Self-contained:
/// it runs after whatever migrated a database to version 5.
const MIGRATE_TO_6: &str =
    "ALTER TABLE policies ADD COLUMN rollback TEXT NOT NULL DEFAULT 'approve'";
/// To version 8 (decision 0020): each scope's bucket, for a database whose
/// `scopes` table exists (since version 4). Self-contained, like
/// [`MIGRATE_TO_6`].
const MIGRATE_TO_8: &str = "ALTER TABLE scopes ADD COLUMN bucket INTEGER";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tokens (
        hash BLOB PRIMARY KEY, group_name TEXT NOT NULL,
        expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS hosts (
        id TEXT PRIMARY KEY, group_name TEXT NOT NULL, public_key BLOB NOT NULL,
        state TEXT NOT NULL, enrolled_at INTEGER NOT NULL,
        last_boot_id TEXT, last_unlock_at INTEGER,
        planned_until INTEGER, planned_from TEXT, ticket_hash BLOB)",
    "CREATE TABLE IF NOT EXISTS host_secrets (
        host_id TEXT NOT NULL REFERENCES hosts(id), key_id BLOB NOT NULL,
        secret BLOB NOT NULL, current INTEGER NOT NULL,
        PRIMARY KEY (host_id, key_id))",
    "CREATE TABLE IF NOT EXISTS policies (
        scope TEXT PRIMARY KEY, policy TEXT NOT NULL, unannounced TEXT NOT NULL,
        rollback TEXT NOT NULL DEFAULT 'approve')",
    "CREATE TABLE IF NOT EXISTS approvers (
        name TEXT PRIMARY KEY, totp_secret BLOB NOT NULL,
        created_at INTEGER NOT NULL, last_step INTEGER NOT NULL DEFAULT 0)",
    // Since version 3: requests held for an approver, so a restart keeps them.
    "CREATE TABLE IF NOT EXISTS held_requests (
        id TEXT PRIMARY KEY, host_id TEXT NOT NULL REFERENCES hosts(id),
        state TEXT NOT NULL, decided_by TEXT,
        created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        poll_token_hash BLOB NOT NULL, request BLOB NOT NULL, sealed_grant BLOB)",
    "CREATE INDEX IF NOT EXISTS held_requests_by_host ON held_requests (host_id, state)",
    // Since version 4: scoped encryption (apps, scopes and their wrapped
    // keys, and the fingerprint of the records key that wraps them).
    "CREATE TABLE IF NOT EXISTS scoped_records_key (
        only_row INTEGER PRIMARY KEY CHECK (only_row = 1), fingerprint BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS scoped_apps (
        name TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, policy TEXT NOT NULL,
        created_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS scopes (
        id TEXT PRIMARY KEY, needs_share INTEGER NOT NULL, minimum INTEGER NOT NULL,
        shredded INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
        window_start INTEGER, window_end INTEGER, window_fields TEXT, bucket INTEGER)",
    "CREATE TABLE IF NOT EXISTS scope_keys (
        scope_id TEXT NOT NULL REFERENCES scopes(id), version INTEGER NOT NULL,
        wrapped BLOB NOT NULL, PRIMARY KEY (scope_id, version))",
    // Since version 4: approval-page sessions, so a restart keeps them.
    "CREATE TABLE IF NOT EXISTS web_sessions (
        id_hash BLOB PRIMARY KEY, approver TEXT NOT NULL, csrf TEXT NOT NULL,
        expires_at INTEGER NOT NULL, flash TEXT)",
    // Since version 5: the epoch of the key host secrets are wrapped under
    // (`secrets.key`), and a check value of that key.
    "CREATE TABLE IF NOT EXISTS secrets_epoch (
        only_row INTEGER PRIMARY KEY CHECK (only_row = 1), epoch INTEGER NOT NULL,
        key_check BLOB NOT NULL)",
    // Since version 6: the generation witnessed for each vault of each
    // host (format.md §16.17.1).
    "CREATE TABLE IF NOT EXISTS vault_generations (
        host_id TEXT NOT NULL REFERENCES hosts(id), vault_id BLOB NOT NULL,
        k INTEGER NOT NULL, seq INTEGER NOT NULL, chain BLOB NOT NULL,
        config_generation INTEGER NOT NULL, reported_at_ms INTEGER NOT NULL,
        boot_id TEXT NOT NULL, reason INTEGER NOT NULL,
        rollback_approved INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (host_id, vault_id))",
    // Since version 7: the approval page's budgets of wrong codes and the
    // addresses approvers logged in from (storage/logins.rs), kept in the
    // database rather than in memory, as on PostgreSQL.
    "CREATE TABLE IF NOT EXISTS login_failures (
        kind TEXT NOT NULL, name TEXT NOT NULL, client TEXT NOT NULL,
        window_end INTEGER NOT NULL, failures INTEGER NOT NULL,
        PRIMARY KEY (kind, name, client))",
    "CREATE TABLE IF NOT EXISTS login_trusted (
        client TEXT PRIMARY KEY, trusted_until INTEGER NOT NULL)",
    // Since version 8 (decision 0020): the bucket keys scope keys are
    // wrapped under, each wrapped under the records epoch key
    // (`records.key`), and that epoch with a check value of its key.
    "CREATE TABLE IF NOT EXISTS scope_buckets (
        bucket INTEGER PRIMARY KEY CHECK (bucket BETWEEN 0 AND 255), wrapped BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS scopes_by_bucket ON scopes (bucket)",
    "CREATE TABLE IF NOT EXISTS records_epoch (
        only_row INTEGER PRIMARY KEY CHECK (only_row = 1), epoch INTEGER NOT NULL,
        key_check BLOB NOT NULL)",
];

/// The authority's state in a SQLite file (WAL, `synchronous=FULL`,
/// `secure_delete` so a shredded secret is overwritten in the file), kept
/// apart from the audit database so each has its own schema version.
#[derive(Debug)]
pub struct SqliteStorage {
    pool: SqlitePool,
    /// Nonces of recent requests and until when they are kept: in memory,
    /// as only this process answers for this file.
    nonces: Mutex<HashMap<[u8; 16], u64>>,
    /// The key host secrets are wrapped under.
    secrets: Arc<SecretsKeyring>,
    /// The key scope bucket keys are wrapped under.
    records: Arc<SecretsKeyring>,
}

impl SqliteStorage {
    /// Opens (creating or migrating) the file; host secrets are wrapped
    /// under `keys.secrets` (`secrets.key`) and scope bucket keys under
    /// `keys.records` (`records.key`), each checked against the database's
    /// epoch.
    pub async fn open(path: &Path, keys: StoreKeys) -> Result<Self, StorageError> {
        let StoreKeys { secrets, records } = keys;
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await
            .map_err(backend)?;
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .map_err(backend)?;
        if found > SCHEMA_VERSION {
            return Err(StorageError::NewerSchema {
                found,
                known: SCHEMA_VERSION,
            });
        }
        let mut tx = pool.begin().await.map_err(backend)?;
        if found == 1 {
            sqlx::query(MIGRATE_1_TO_2)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if (1..6).contains(&found) {
            sqlx::query(MIGRATE_TO_6)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if (4..8).contains(&found) {
            sqlx::query(MIGRATE_TO_8)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let stored = Self::settle_secrets(&mut tx, &secrets).await?;
        let (records_stored, records_migrated) = Self::settle_records(&mut tx, &records).await?;
        sqlx::query(SET_SCHEMA_VERSION)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let storage = Self {
            pool,
            nonces: Mutex::default(),
            secrets,
            records,
        };
        match stored {
            Some(_) if storage.secrets.is_probe() => {}
            Some(stored) => drop(storage.secrets.settle(&stored)?),
            // Secrets that were in the clear are overwritten (secure_delete):
            // no copy may stay in the write-ahead log either.
            None => storage.truncate_wal().await?,
        }
        if let Some(stored) = records_stored
            && !storage.records.is_probe()
        {
            storage.records.settle(&stored)?;
        }
        if records_migrated {
            storage.truncate_wal().await?;
        }
        Ok(storage)
    }

    /// The database's records epoch (`None` for a probe); if it has none
    /// yet (new, or from before version 8), 256 bucket keys are made under
    /// the key file's `K_0`, every scope is given a bucket and its keys
    /// (wrapped under the bare `records.key` of before) are wrapped again
    /// under its bucket's key, in the open transaction (`true` then). A
    /// self-contained step of the migration to version 8: it keys on the
    /// epoch row, not on the version.
    async fn settle_records(
        tx: &mut SqliteConnection,
        records: &SecretsKeyring,
    ) -> Result<(Option<StoredEpoch>, bool), StorageError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT epoch, key_check FROM records_epoch")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some((epoch, check)) = row {
            return Ok((Some(stored_epoch(epoch, check)?), false));
        }
        if records.is_probe() {
            return Ok((None, false));
        }
        let scopes: Vec<String> = sqlx::query_scalar("SELECT id FROM scopes")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        let keys: Vec<ScopeKeyRow> =
            sqlx::query_as("SELECT scope_id, version, wrapped FROM scope_keys")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let migration = buckets::migrate(records, scopes, keys)?;
        for (bucket, wrapped) in &migration.buckets {
            sqlx::query("INSERT INTO scope_buckets (bucket, wrapped) VALUES (?, ?)")
                .bind(bucket)
                .bind(wrapped)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        for (scope, bucket) in &migration.scope_buckets {
            sqlx::query("UPDATE scopes SET bucket = ? WHERE id = ?")
                .bind(bucket)
                .bind(scope)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        update_scope_keys(tx, &migration.scope_keys).await?;
        // The fingerprint of the bare records key is replaced by the
        // epoch's check value.
        sqlx::query("DELETE FROM scoped_records_key")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let key = &migration.key;
        sqlx::query("INSERT INTO records_epoch (only_row, epoch, key_check) VALUES (1, ?, ?)")
            .bind(i64::from(key.epoch()))
            .bind(&key.check()[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Ok((
            Some(StoredEpoch {
                epoch: key.epoch(),
                check: key.check().to_vec(),
            }),
            true,
        ))
    }

    /// The database's secrets epoch; if it has none yet (new, or from
    /// before version 5), the secrets still in the clear are wrapped under
    /// the key file's `K_0` (made now if absent) and the epoch written, in
    /// the open transaction (`None` then). A self-contained step of the
    /// migration to version 5.
    async fn settle_secrets(
        tx: &mut SqliteConnection,
        secrets: &SecretsKeyring,
    ) -> Result<Option<StoredEpoch>, StorageError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT epoch, key_check FROM secrets_epoch")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some((epoch, check)) = row {
            return stored_epoch(epoch, check).map(Some);
        }
        if secrets.is_probe() {
            return Ok(None);
        }
        let plain: Vec<SecretRow> =
            sqlx::query_as("SELECT host_id, key_id, secret FROM host_secrets")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let (key, wrapped) = wrap_plaintext(secrets, plain)?;
        update_secrets(tx, &wrapped).await?;
        sqlx::query("INSERT INTO secrets_epoch (only_row, epoch, key_check) VALUES (1, ?, ?)")
            .bind(i64::from(key.epoch()))
            .bind(&key.check()[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Ok(None)
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The key of the database's epoch, in `tx` (which holds the write
    /// lock, so no shred moves it meanwhile).
    async fn epoch_key(&self, tx: &mut SqliteConnection) -> Result<Arc<EpochKey>, StorageError> {
        let (epoch, check): (i64, Vec<u8>) =
            sqlx::query_as("SELECT epoch, key_check FROM secrets_epoch")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        Ok(self.secrets.key_at(stored_epoch(epoch, check)?.epoch)?)
    }

    /// The key of the database's records epoch, in `tx` (which holds the
    /// write lock).
    async fn records_key(&self, tx: &mut SqliteConnection) -> Result<Arc<EpochKey>, StorageError> {
        let (epoch, check): (i64, Vec<u8>) =
            sqlx::query_as("SELECT epoch, key_check FROM records_epoch")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        Ok(self.records.key_at(stored_epoch(epoch, check)?.epoch)?)
    }

    /// Whether bucket `bucket`'s key is still the one a new scope key was
    /// wrapped under, in `tx` (which holds the write lock).
    async fn bucket_is(
        tx: &mut SqliteConnection,
        bucket: &StoredBucket,
    ) -> Result<bool, StorageError> {
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT wrapped FROM scope_buckets WHERE bucket = ?")
                .bind(i64::from(bucket.number))
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        Ok(stored.as_deref() == Some(bucket.wrapped.as_slice()))
    }

    /// The transaction [`Storage::take_login`] counts in: `BEGIN
    /// IMMEDIATE` takes the write lock first, so no other count runs
    /// between its read and its write.
    async fn login_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StorageError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }

    fn nonces(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], u64>> {
        // A panic while holding the lock leaves a plain map behind.
        self.nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves the write-ahead log into the database and truncates it, so
    /// deleted rows (a shredded secret) leave no copy in the WAL file.
    async fn truncate_wal(&self) -> Result<(), StorageError> {
        // A reader holding an old snapshot blocks the truncation (reported
        // in the result row, not as an error): retry a little, then say so.
        for attempt in 0..20u32 {
            let (busy,): (i64,) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt + 1))).await;
        }
        tracing::warn!(
            "the write-ahead log could not be truncated after a secret was deleted (a reader \
             is busy); the secret is overwritten in the database but a copy may remain in \
             keyd.db-wal until the next checkpoint"
        );
        Ok(())
    }
}

/// Hosts per statement of [`SqliteStorage::save_unlock_times`]: 2 bound
/// values each, far inside SQLite's limit of 32,766 per statement.
const UNLOCK_TIMES_PER_UPDATE: usize = 1000;

/// Hosts per statement of [`SqliteStorage::save_boot_states`]: 6 bound
/// values each.
const BOOT_STATES_PER_UPDATE: usize = 1000;

/// A host and the key ids of its secrets (`concat!`ed with a condition).
macro_rules! select_hosts {
    () => {
        "SELECT h.id, h.group_name, h.public_key, h.state, h.enrolled_at,
            (SELECT key_id FROM host_secrets s WHERE s.host_id = h.id AND s.current = 1)
                AS key_id,
            (SELECT key_id FROM host_secrets s WHERE s.host_id = h.id AND s.current = 0)
                AS previous_key_id
         FROM hosts h"
    };
}

macro_rules! select_held {
    () => {
        "SELECT id, host_id, state, decided_by, created_at, expires_at, poll_token_hash,
            request, sealed_grant
         FROM held_requests"
    };
}

macro_rules! select_scopes {
    () => {
        "SELECT id, needs_share, minimum, shredded, created_at, window_start, window_end,
            window_fields
         FROM scopes"
    };
}

macro_rules! select_boots {
    () => {
        "SELECT id, last_boot_id, last_unlock_at, planned_until, planned_from, ticket_hash
         FROM hosts"
    };
}

/// An enrollment of a [`SqliteStorage`] not yet committed (its
/// transaction holds the file's write lock); none by default.
#[derive(Debug, Default)]
pub struct SqliteHeld(Option<sqlx::Transaction<'static, sqlx::Sqlite>>);

impl Held for SqliteHeld {
    async fn commit(self) -> Result<(), StorageError> {
        match self.0 {
            Some(tx) => tx.commit().await.map_err(backend),
            None => Ok(()),
        }
    }
}

impl Storage for SqliteStorage {
    type Held = SqliteHeld;

    async fn insert_token(
        &self,
        token_hash: [u8; 32],
        group: &str,
        expires_at: u64,
    ) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO tokens (hash, group_name, expires_at) VALUES (?, ?, ?)")
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
    ) -> Result<Option<(String, SqliteHeld)>, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let group: Option<String> = sqlx::query_scalar(
            "UPDATE tokens SET used = 1 WHERE hash = ? AND used = 0 AND expires_at > ?
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
            "INSERT OR IGNORE INTO hosts (id, group_name, public_key, state, enrolled_at)
             VALUES (?, ?, ?, ?, ?)",
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
        let key = self.epoch_key(&mut tx).await?;
        sqlx::query(
            "INSERT INTO host_secrets (host_id, key_id, secret, current) VALUES (?, ?, ?, 1)",
        )
        .bind(host.id.as_str())
        .bind(&host.key_id.0[..])
        .bind(key.wrap(&host.id, &host.key_id, secret))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Ok(Some((group, SqliteHeld(Some(tx)))))
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StorageError> {
        let rows = sqlx::query(concat!(select_hosts!(), " ORDER BY h.id"))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(host_from_row).collect()
    }

    async fn host(&self, id: &HostId) -> Result<Option<HostRecord>, StorageError> {
        let row = sqlx::query(concat!(select_hosts!(), " WHERE h.id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(host_from_row).transpose()
    }

    async fn host_secrets(&self, id: &HostId) -> Result<Vec<StoredSecret>, StorageError> {
        read_secrets(&self.secrets, id, || async {
            sqlx::query_as(
                "SELECT key_id, secret, current = 1 FROM host_secrets WHERE host_id = ?
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
        _exclusive: bool,
    ) -> Result<Option<(HostRecord, SqliteHeld)>, StorageError> {
        // One process per file: the authority orders its own changes and
        // releases, so nothing is held.
        Ok(self
            .host(id)
            .await?
            .map(|record| (record, SqliteHeld::default())))
    }

    /// Committed at once, whatever `held` is: nothing else writes the file
    /// to be made to wait (see [`hold_host`](Self::hold_host)).
    async fn set_host_state(
        &self,
        _held: &mut SqliteHeld,
        id: &HostId,
        state: HostState,
    ) -> Result<bool, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let updated =
            sqlx::query("UPDATE hosts SET state = ? WHERE id = ? AND state != 'shredded'")
                .bind(state.as_str())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        let shredded = state == HostState::Shredded && updated.rows_affected() > 0;
        let mut next_epoch = None;
        if shredded {
            let key = self.epoch_key(&mut tx).await?;
            sqlx::query("DELETE FROM host_secrets WHERE host_id = ?")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            let rest: Vec<SecretRow> =
                sqlx::query_as("SELECT host_id, key_id, secret FROM host_secrets")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(backend)?;
            let (next, rewrapped) = rewrap_all(&key, rest)?;
            update_secrets(&mut tx, &rewrapped).await?;
            sqlx::query("UPDATE secrets_epoch SET epoch = ?, key_check = ?")
                .bind(i64::from(next.epoch()))
                .bind(&next.check()[..])
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            next_epoch = Some(next.epoch());
        }
        tx.commit().await.map_err(backend)?;
        if let Some(epoch) = next_epoch {
            self.truncate_wal().await?;
            // Committed: the key file moves forward, and the last key that
            // opens the database's earlier copies is gone.
            self.secrets.key_at(epoch)?;
        }
        Ok(updated.rows_affected() > 0)
    }

    async fn rotate_secret(
        &self,
        id: &HostId,
        key_id: KeyId,
        secret: &[u8; 32],
    ) -> Result<bool, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let active: Option<String> =
            sqlx::query_scalar("SELECT state FROM hosts WHERE id = ? AND state != 'shredded'")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if active.is_none() {
            return Ok(false);
        }
        let key = self.epoch_key(&mut tx).await?;
        sqlx::query("DELETE FROM host_secrets WHERE host_id = ? AND current = 0")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE host_secrets SET current = 0 WHERE host_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO host_secrets (host_id, key_id, secret, current) VALUES (?, ?, ?, 1)",
        )
        .bind(id.as_str())
        .bind(&key_id.0[..])
        .bind(key.wrap(id, &key_id, secret))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        // The secret before the previous one was deleted: as for a shred,
        // no copy may stay behind in the write-ahead log.
        self.truncate_wal().await?;
        Ok(true)
    }

    async fn retire_secrets(&self, id: &HostId, key_ids: &[KeyId]) -> Result<(), StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        for key_id in key_ids {
            sqlx::query(
                "DELETE FROM host_secrets WHERE host_id = ? AND key_id = ? AND current = 0",
            )
            .bind(id.as_str())
            .bind(&key_id.0[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        self.truncate_wal().await?;
        Ok(())
    }

    async fn set_policy(&self, scope: &PolicyScope, rule: PolicyRule) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT OR REPLACE INTO policies (scope, policy, unannounced, rollback)
             VALUES (?, ?, ?, ?)",
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
        let rows =
            sqlx::query("SELECT scope, policy, unannounced, rollback FROM policies ORDER BY scope")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let scope: String = row.try_get("scope").map_err(backend)?;
                let policy: String = row.try_get("policy").map_err(backend)?;
                let unannounced: String = row.try_get("unannounced").map_err(backend)?;
                let rollback: String = row.try_get("rollback").map_err(backend)?;
                let scope = scope_from_key(&scope)?;
                Ok((
                    scope,
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
        let row = sqlx::query(concat!(select_boots!(), " WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(boot_from_row).transpose()
    }

    /// A batch that fits is one statement: one round trip to sqlx's
    /// worker thread, atomic on its own. A larger one is several in one
    /// transaction.
    async fn save_boot_states(&self, states: &[(HostId, BootState)]) -> Result<(), StorageError> {
        if states.len() <= BOOT_STATES_PER_UPDATE {
            return update_boot_states(&self.pool, states).await;
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        for chunk in states.chunks(BOOT_STATES_PER_UPDATE) {
            update_boot_states(&mut *tx, chunk).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    /// One statement per chunk (each statement is a round trip to sqlx's
    /// worker thread), each committed on its own: a time shown to
    /// operators needs no transaction across chunks.
    async fn save_unlock_times(
        &self,
        times: &[(HostId, u64)],
    ) -> Result<Vec<HostId>, StorageError> {
        for chunk in times.chunks(UNLOCK_TIMES_PER_UPDATE) {
            let mut update = sqlx::QueryBuilder::<sqlx::Sqlite>::new("WITH t (id, at) AS (");
            update.push_values(chunk, |mut row, (id, at)| {
                row.push_bind(id.as_str()).push_bind(to_i64(*at));
            });
            update.push(
                ") UPDATE hosts SET last_unlock_at = t.at FROM t
                 WHERE hosts.id = t.id
                    AND (hosts.last_unlock_at IS NULL OR hosts.last_unlock_at < t.at)",
            );
            update.build().execute(&self.pool).await.map_err(backend)?;
        }
        Ok(Vec::new())
    }

    async fn vault_generation(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<Option<StoredGeneration>, StorageError> {
        let row = sqlx::query(
            "SELECT host_id, vault_id, k, seq, chain, config_generation, reported_at_ms,
                boot_id, reason, rollback_approved
             FROM vault_generations WHERE host_id = ? AND vault_id = ?",
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
            "INSERT INTO vault_generations (host_id, vault_id, k, seq, chain,
                config_generation, reported_at_ms, boot_id, reason, rollback_approved)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (host_id, vault_id) DO UPDATE SET k = excluded.k,
                seq = excluded.seq, chain = excluded.chain,
                config_generation = excluded.config_generation,
                reported_at_ms = excluded.reported_at_ms, boot_id = excluded.boot_id,
                reason = excluded.reason, rollback_approved = excluded.rollback_approved
             WHERE vault_generations.seq <= excluded.seq",
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
            "UPDATE vault_generations SET rollback_approved = 1
             WHERE host_id = ? AND vault_id = ?",
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
            "INSERT OR REPLACE INTO approvers (name, totp_secret, created_at, last_step)
             VALUES (?, ?, ?, 0)",
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
        let row = sqlx::query("SELECT name, totp_secret, last_step FROM approvers WHERE name = ?")
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
        let updated =
            sqlx::query("UPDATE approvers SET last_step = ? WHERE name = ? AND last_step < ?")
                .bind(to_i64(step))
                .bind(name)
                .bind(to_i64(step))
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn spend_nonce(&self, nonce: [u8; 16], keep_until: u64) -> Result<bool, StorageError> {
        match self.nonces().entry(nonce) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(false),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(keep_until);
                Ok(true)
            }
        }
    }

    async fn remember_nonces(&self, nonces: &[([u8; 16], u64)]) -> Result<(), StorageError> {
        let mut map = self.nonces();
        for (nonce, until) in nonces {
            map.entry(*nonce).or_insert(*until);
        }
        Ok(())
    }

    async fn prune_nonces(&self, now: u64) -> Result<(), StorageError> {
        self.nonces().retain(|_, until| *until >= now);
        Ok(())
    }

    async fn insert_held(&self, held: &StoredHeld, now: u64) -> Result<HoldOutcome, StorageError> {
        // BEGIN IMMEDIATE takes the write lock first: no other count and
        // insert can run between this count and this insert.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM held_requests
             WHERE host_id = ? AND state IN ('pending', 'deciding') AND expires_at > ?",
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
            "INSERT INTO held_requests (id, host_id, state, decided_by, created_at, expires_at,
                poll_token_hash, request, sealed_grant)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let row = sqlx::query(concat!(select_held!(), " WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(held_from_row).transpose()
    }

    async fn waiting_held(&self, now: u64) -> Result<Vec<StoredHeld>, StorageError> {
        let rows = sqlx::query(concat!(
            select_held!(),
            " WHERE state IN ('pending', 'deciding') AND expires_at > ? ORDER BY created_at, id"
        ))
        .bind(to_i64(now))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(held_from_row).collect()
    }

    async fn expired_held_ids(&self, now: u64) -> Result<Vec<String>, StorageError> {
        sqlx::query_scalar(
            "SELECT id FROM held_requests WHERE state = 'pending' AND expires_at <= ?
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
        let moved = sqlx::query(
            "UPDATE held_requests SET state = ?, decided_by = coalesce(?, decided_by)
             WHERE id = ? AND state = ? AND (? IS NULL OR (expires_at <= ?) = ?)",
        )
        .bind(to.as_str())
        .bind(by)
        .bind(id)
        .bind(from.as_str())
        .bind(now)
        .bind(now)
        .bind(expired)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(moved.rows_affected() == 1)
    }

    async fn store_held_grant(&self, id: &str, sealed_grant: &[u8]) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE held_requests SET sealed_grant = ?
             WHERE id = ? AND state = 'released' AND sealed_grant IS NULL",
        )
        .bind(sealed_grant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_pending_held(&self, id: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM held_requests WHERE id = ? AND state = 'pending'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn prune_held(&self, before: u64) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM held_requests WHERE state <> 'pending' AND expires_at < ?")
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
            sqlx::query_scalar("SELECT wrapped FROM scope_buckets WHERE bucket = ?")
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
            "INSERT INTO scoped_apps (name, token_hash, policy, created_at) VALUES (?, ?, ?, ?)
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
            "SELECT name, token_hash, policy, created_at FROM scoped_apps WHERE token_hash = ?",
        )
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|(n, t, p, c)| app_from(n, t, p, c)).transpose()
    }

    async fn apps(&self) -> Result<Vec<StoredApp>, StorageError> {
        let rows: Vec<(String, Vec<u8>, String, i64)> = sqlx::query_as(
            "SELECT name, token_hash, policy, created_at FROM scoped_apps ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|(n, t, p, c)| app_from(n, t, p, c))
            .collect()
    }

    async fn delete_app(&self, name: &str) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM scoped_apps WHERE name = ?")
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        if !Self::bucket_is(&mut tx, bucket).await? {
            return Ok(false);
        }
        let window = scope.window.as_ref();
        let done = sqlx::query(
            "INSERT INTO scopes (id, needs_share, minimum, shredded, created_at,
                window_start, window_end, window_fields, bucket) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)
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
            sqlx::query("INSERT INTO scope_keys (scope_id, version, wrapped) VALUES (?, ?, ?)")
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
        let Some(row) = sqlx::query(concat!(select_scopes!(), " WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        // The keys and their bucket's key in one statement: they agree.
        let rows = sqlx::query_as(
            "SELECT k.version, k.wrapped, s.bucket, b.wrapped FROM scope_keys k
             JOIN scopes s ON s.id = k.scope_id
             LEFT JOIN scope_buckets b ON b.bucket = s.bucket
             WHERE k.scope_id = ? ORDER BY k.version",
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
            "SELECT scope_id, version, wrapped FROM scope_keys ORDER BY scope_id, version",
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        if !Self::bucket_is(&mut tx, bucket).await? {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO scope_keys (scope_id, version, wrapped)
             SELECT id, ?, ? FROM scopes WHERE id = ? AND shredded = 0 AND bucket = ?
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
        let done = sqlx::query("UPDATE scopes SET minimum = ? WHERE id = ? AND shredded = 0")
            .bind(i64::from(minimum))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn shred_scope(&self, id: &str) -> Result<bool, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let shredded: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE scopes SET shredded = 1, window_start = NULL, window_end = NULL,
                window_fields = NULL WHERE id = ? AND shredded = 0 RETURNING bucket",
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
        sqlx::query("DELETE FROM scope_keys WHERE scope_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let key = self.records_key(&mut tx).await?;
        let all: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT bucket, wrapped FROM scope_buckets ORDER BY bucket")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let siblings: Vec<ScopeKeyRow> = sqlx::query_as(
            "SELECT k.scope_id, k.version, k.wrapped FROM scope_keys k
             JOIN scopes s ON s.id = k.scope_id WHERE s.bucket = ?",
        )
        .bind(bucket)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let step = buckets::shred_step(&key, bucket, all, siblings)?;
        update_scope_keys(&mut tx, &step.scope_keys).await?;
        for (number, wrapped) in &step.buckets {
            sqlx::query("UPDATE scope_buckets SET wrapped = ? WHERE bucket = ?")
                .bind(wrapped)
                .bind(number)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        sqlx::query("UPDATE records_epoch SET epoch = ?, key_check = ?")
            .bind(i64::from(step.next.epoch()))
            .bind(&step.next.check()[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.truncate_wal().await?;
        // Committed: the key file moves forward, and the last key that
        // opens the shredded scope in the database's earlier copies is
        // gone. (A crash before this leaves the file one epoch behind: the
        // next start ratchets it.)
        self.records.key_at(step.next.epoch())?;
        Ok(true)
    }

    async fn set_scope_window(
        &self,
        id: &str,
        window: Option<&StoredWindow>,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE scopes SET window_start = ?, window_end = ?, window_fields = ?
             WHERE id = ? AND shredded = 0",
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
            "INSERT INTO web_sessions (id_hash, approver, csrf, expires_at, flash)
             VALUES (?, ?, ?, ?, ?)",
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
            "SELECT id_hash, approver, csrf, expires_at, flash FROM web_sessions
             WHERE id_hash = ? AND expires_at > ?",
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
        sqlx::query("UPDATE web_sessions SET flash = ? WHERE id_hash = ?")
            .bind(flash)
            .bind(&id_hash[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: [u8; 32]) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
            .bind(&id_hash[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn prune_sessions(&self, now: u64) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= ?")
            .bind(to_i64(now))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    login_methods!("login_failures", "login_trusted");

    async fn check_writable(&self) -> Result<(), StorageError> {
        // A write that changes nothing still needs the write lock and a
        // writable file.
        sqlx::query("UPDATE policies SET scope = scope WHERE 0")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn scope_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ScopeRow, StorageError> {
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

fn host_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<HostRecord, StorageError> {
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

fn session_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredSession, StorageError> {
    SessionRow {
        id_hash: row.try_get("id_hash").map_err(backend)?,
        approver: row.try_get("approver").map_err(backend)?,
        csrf: row.try_get("csrf").map_err(backend)?,
        expires_at: row.try_get("expires_at").map_err(backend)?,
        flash: row.try_get("flash").map_err(backend)?,
    }
    .session()
}

fn held_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredHeld, StorageError> {
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

fn boot_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<BootState, StorageError> {
    Ok(BootRow {
        last_boot_id: row.try_get("last_boot_id").map_err(backend)?,
        last_unlock_at: row.try_get("last_unlock_at").map_err(backend)?,
        planned_until: row.try_get("planned_until").map_err(backend)?,
        planned_from: row.try_get("planned_from").map_err(backend)?,
        ticket_hash: row.try_get("ticket_hash").map_err(backend)?,
    }
    .state())
}

/// Writes `states` over their hosts' boot states in one statement.
async fn update_boot_states<'c>(
    executor: impl sqlx::SqliteExecutor<'c>,
    states: &[(HostId, BootState)],
) -> Result<(), StorageError> {
    let mut update = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "WITH s (id, last_boot_id, last_unlock_at, planned_until, planned_from, ticket_hash) AS (",
    );
    update.push_values(states, |mut row, (id, state)| {
        row.push_bind(id.as_str())
            .push_bind(state.last_boot_id.as_deref())
            .push_bind(state.last_unlock_at.map(to_i64))
            .push_bind(state.planned_until.map(to_i64))
            .push_bind(state.planned_from.as_deref())
            .push_bind(state.ticket_hash.as_ref().map(|h| &h[..]));
    });
    update.push(
        ") UPDATE hosts SET last_boot_id = s.last_boot_id, last_unlock_at = s.last_unlock_at,
            planned_until = s.planned_until, planned_from = s.planned_from,
            ticket_hash = s.ticket_hash
         FROM s WHERE hosts.id = s.id",
    );
    update.build().execute(executor).await.map_err(backend)?;
    Ok(())
}

/// Writes scope keys wrapped again (under a migration's or a shred's
/// bucket keys) over their rows.
async fn update_scope_keys(
    tx: &mut SqliteConnection,
    rows: &[ScopeKeyRow],
) -> Result<(), StorageError> {
    for (scope, version, wrapped) in rows {
        sqlx::query("UPDATE scope_keys SET wrapped = ? WHERE scope_id = ? AND version = ?")
            .bind(wrapped)
            .bind(scope)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

async fn update_secrets(tx: &mut SqliteConnection, rows: &[SecretRow]) -> Result<(), StorageError> {
    for (host, key_id, wrapped) in rows {
        sqlx::query("UPDATE host_secrets SET secret = ? WHERE host_id = ? AND key_id = ?")
            .bind(wrapped)
            .bind(host)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    Ok(())
}
