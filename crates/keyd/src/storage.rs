//! What the authority keeps besides its audit log: hosts, their exchange
//! secrets, enrollment tokens, policies, approvers and what it knows of
//! each host's boots. A store knows no protocol; [`crate::Authority`]
//! holds the rules.
//!
//! Used nonces are not stored here: every answered request's nonce is in
//! its durable audit entry, and the authority reloads the recent ones
//! from the audit log when it starts.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use atrest_remote::{HostId, HostPublicKey, KeyId};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use zeroize::Zeroizing;

/// Whether a host may still be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Active,
    /// Refused from now on; the secret is kept (an operator may reinstate).
    Revoked,
    /// The secret is destroyed: the host's remote keyslots never open again.
    Shredded,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Shredded => "shredded",
        }
    }
}

impl FromStr for HostState {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, StorageError> {
        match s {
            "active" => Ok(Self::Active),
            "revoked" => Ok(Self::Revoked),
            "shredded" => Ok(Self::Shredded),
            other => Err(StorageError::Corrupt(format!(
                "unknown host state {other:?}"
            ))),
        }
    }
}

/// What the authority does with an unlock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Release at once.
    Auto,
    /// Hold until an approver decides.
    Approve,
    /// Refuse.
    Deny,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

impl FromStr for Policy {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, StorageError> {
        match s {
            "auto" => Ok(Self::Auto),
            "approve" => Ok(Self::Approve),
            "deny" => Ok(Self::Deny),
            other => Err(StorageError::Corrupt(format!("unknown policy {other:?}"))),
        }
    }
}

/// What a policy applies to; a host's own policy wins over its group's,
/// and a group's over the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "name")]
pub enum PolicyScope {
    Default,
    Group(String),
    Host(HostId),
}

impl PolicyScope {
    fn key(&self) -> String {
        match self {
            Self::Default => "default".to_owned(),
            Self::Group(g) => format!("group:{g}"),
            Self::Host(h) => format!("host:{h}"),
        }
    }
}

impl std::fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// A scope's rules: what to do with a request, and what to do when the
/// host booted without announcing it (`atrest reboot --planned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub policy: Policy,
    pub unannounced_reboot: Policy,
}

impl Default for PolicyRule {
    /// Release at once, but hold an unaccounted reboot for an approver.
    fn default() -> Self {
        Self {
            policy: Policy::Auto,
            unannounced_reboot: Policy::Approve,
        }
    }
}

/// An enrolled host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: HostId,
    pub group: String,
    pub public_key: HostPublicKey,
    /// The key id of the host's current exchange secret.
    pub key_id: KeyId,
    /// After a rotation, the previous secret's key id until the host has
    /// re-bound its keyslot.
    pub previous_key_id: Option<KeyId>,
    pub state: HostState,
    /// Unix seconds.
    pub enrolled_at: u64,
}

/// What the authority knows of a host's boots. Written in batches (a lost
/// update makes the next boot look unannounced: the safe side).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// The boot id of the last release.
    pub last_boot_id: Option<String>,
    pub last_unlock_at: Option<u64>,
    /// `atrest reboot --planned`: a boot id other than `planned_from`
    /// is accounted for until this time.
    pub planned_until: Option<u64>,
    pub planned_from: Option<String>,
    /// SHA-256 of the ticket given to the boot `last_boot_id`; only that
    /// boot can prove it is still itself (not a copy of its disk).
    #[serde(skip_serializing, default)]
    pub ticket_hash: Option<[u8; 32]>,
}

/// An exchange secret of a host, by its key id.
pub struct StoredSecret {
    pub key_id: KeyId,
    pub secret: Zeroizing<[u8; 32]>,
    pub current: bool,
}

/// A person who may approve or deny held requests, with a TOTP secret.
pub struct StoredApprover {
    pub name: String,
    pub totp_secret: Zeroizing<Vec<u8>>,
    /// The last TOTP time step accepted, so a code is used once.
    pub last_step: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key authority storage: {0}")]
    Backend(#[source] sqlx::Error),
    #[error("key authority storage holds a bad row: {0}")]
    Corrupt(String),
    #[error("a host named {0} is already enrolled")]
    HostExists(HostId),
    #[error(
        "the key authority database has schema version {found}, this keyd knows up to {known}; \
         run the newer atrest keyd that wrote it"
    )]
    NewerSchema { found: i64, known: i64 },
}

fn backend(e: sqlx::Error) -> StorageError {
    StorageError::Backend(e)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Where the authority's state lives. Every method is one atomic,
/// durable operation unless it says otherwise.
pub trait Storage: Send + Sync + 'static {
    /// Stores a token by the SHA-256 of its text, so a stolen database
    /// holds no usable token.
    fn insert_token(
        &self,
        token_hash: [u8; 32],
        group: &str,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Spends an unexpired, unused token and enrolls `host` with `secret`
    /// in one transaction. `Ok(None)`: no such token, used, or expired.
    fn enroll(
        &self,
        token_hash: [u8; 32],
        now: u64,
        host: &HostRecord,
        secret: &[u8; 32],
    ) -> impl Future<Output = Result<Option<String>, StorageError>> + Send;

    /// The group of an unexpired, unused token, without spending it:
    /// enrollment checks the token before it logs the enrollment, and
    /// spends it (with [`enroll`](Self::enroll)) only after.
    fn token_group(
        &self,
        token_hash: [u8; 32],
        now: u64,
    ) -> impl Future<Output = Result<Option<String>, StorageError>> + Send;

    fn hosts(&self) -> impl Future<Output = Result<Vec<HostRecord>, StorageError>> + Send;

    /// A host's exchange secrets (current, and previous after a rotation);
    /// empty once shredded.
    fn host_secrets(
        &self,
        id: &HostId,
    ) -> impl Future<Output = Result<Vec<StoredSecret>, StorageError>> + Send;

    /// Sets the state; `Shredded` also deletes every secret of the host,
    /// in the same transaction. A shredded host stays shredded.
    /// `Ok(false)`: no such host, or it is shredded.
    fn set_host_state(
        &self,
        id: &HostId,
        state: HostState,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Makes `secret` the host's current secret and keeps the current one
    /// as previous (dropping an older previous one).
    fn rotate_secret(
        &self,
        id: &HostId,
        key_id: KeyId,
        secret: &[u8; 32],
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Deletes these non-current secrets of the host (it has re-bound to
    /// the current one).
    fn retire_secrets(
        &self,
        id: &HostId,
        key_ids: &[KeyId],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn set_policy(
        &self,
        scope: &PolicyScope,
        rule: PolicyRule,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn policies(
        &self,
    ) -> impl Future<Output = Result<Vec<(PolicyScope, PolicyRule)>, StorageError>> + Send;

    /// Every host's boot state, for loading at start.
    fn boot_states(
        &self,
    ) -> impl Future<Output = Result<Vec<(HostId, BootState)>, StorageError>> + Send;

    /// Saves several hosts' boot states in one transaction.
    fn save_boot_states(
        &self,
        states: &[(HostId, BootState)],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Adds or replaces an approver.
    fn put_approver(
        &self,
        name: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn approver(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<StoredApprover>, StorageError>> + Send;

    /// Records that `step` was used; `Ok(false)` if a step at or after it
    /// already was (a replayed code).
    fn use_approver_step(
        &self,
        name: &str,
        step: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;
}

/// The schema this keyd writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;
const SET_SCHEMA_VERSION: &str = "PRAGMA user_version = 2";
/// From version 1: the boot ticket.
const MIGRATE_1_TO_2: &str = "ALTER TABLE hosts ADD COLUMN ticket_hash BLOB";

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
        scope TEXT PRIMARY KEY, policy TEXT NOT NULL, unannounced TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS approvers (
        name TEXT PRIMARY KEY, totp_secret BLOB NOT NULL,
        created_at INTEGER NOT NULL, last_step INTEGER NOT NULL DEFAULT 0)",
];

/// The authority's state in a SQLite file (WAL, `synchronous=FULL`,
/// `secure_delete` so a shredded secret is overwritten in the file), kept
/// apart from the audit database so each has its own schema version.
#[derive(Clone, Debug)]
pub struct SqliteStorage {
    pool: SqlitePool,
}

impl SqliteStorage {
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
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
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        sqlx::query(SET_SCHEMA_VERSION)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Self { pool })
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

fn key_id_from(bytes: Vec<u8>, what: &str) -> Result<KeyId, StorageError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{what}: key id length")))?;
    Ok(KeyId(bytes))
}

impl Storage for SqliteStorage {
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
    ) -> Result<Option<String>, StorageError> {
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
        sqlx::query(
            "INSERT INTO host_secrets (host_id, key_id, secret, current) VALUES (?, ?, ?, 1)",
        )
        .bind(host.id.as_str())
        .bind(&host.key_id.0[..])
        .bind(&secret[..])
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(group))
    }

    async fn token_group(
        &self,
        token_hash: [u8; 32],
        now: u64,
    ) -> Result<Option<String>, StorageError> {
        sqlx::query_scalar(
            "SELECT group_name FROM tokens WHERE hash = ? AND used = 0 AND expires_at > ?",
        )
        .bind(&token_hash[..])
        .bind(to_i64(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT h.id, h.group_name, h.public_key, h.state, h.enrolled_at,
                    (SELECT key_id FROM host_secrets s WHERE s.host_id = h.id AND s.current = 1)
                        AS key_id,
                    (SELECT key_id FROM host_secrets s WHERE s.host_id = h.id AND s.current = 0)
                        AS previous_key_id
             FROM hosts h ORDER BY h.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(host_from_row).collect()
    }

    async fn host_secrets(&self, id: &HostId) -> Result<Vec<StoredSecret>, StorageError> {
        let rows = sqlx::query(
            "SELECT key_id, secret, current FROM host_secrets WHERE host_id = ?
             ORDER BY current DESC",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let key_id = key_id_from(row.try_get("key_id").map_err(backend)?, id.as_str())?;
                let secret = Zeroizing::new(row.try_get::<Vec<u8>, _>("secret").map_err(backend)?);
                let mut out = Zeroizing::new([0u8; 32]);
                if secret.len() != 32 {
                    return Err(StorageError::Corrupt(format!("host {id}: secret length")));
                }
                out.copy_from_slice(&secret);
                let current: i64 = row.try_get("current").map_err(backend)?;
                Ok(StoredSecret {
                    key_id,
                    secret: out,
                    current: current == 1,
                })
            })
            .collect()
    }

    async fn set_host_state(&self, id: &HostId, state: HostState) -> Result<bool, StorageError> {
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
        if state == HostState::Shredded {
            sqlx::query("DELETE FROM host_secrets WHERE host_id = ?")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        if state == HostState::Shredded {
            self.truncate_wal().await?;
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
        .bind(&secret[..])
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
            "INSERT OR REPLACE INTO policies (scope, policy, unannounced) VALUES (?, ?, ?)",
        )
        .bind(scope.key())
        .bind(rule.policy.as_str())
        .bind(rule.unannounced_reboot.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicyRule)>, StorageError> {
        let rows = sqlx::query("SELECT scope, policy, unannounced FROM policies ORDER BY scope")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let scope: String = row.try_get("scope").map_err(backend)?;
                let policy: String = row.try_get("policy").map_err(backend)?;
                let unannounced: String = row.try_get("unannounced").map_err(backend)?;
                let scope = if scope == "default" {
                    PolicyScope::Default
                } else if let Some(group) = scope.strip_prefix("group:") {
                    PolicyScope::Group(group.to_owned())
                } else if let Some(host) = scope.strip_prefix("host:") {
                    PolicyScope::Host(HostId::new(host).map_err(|e| {
                        StorageError::Corrupt(format!("policy scope {scope:?}: {e}"))
                    })?)
                } else {
                    return Err(StorageError::Corrupt(format!("policy scope {scope:?}")));
                };
                Ok((
                    scope,
                    PolicyRule {
                        policy: policy.parse()?,
                        unannounced_reboot: unannounced.parse()?,
                    },
                ))
            })
            .collect()
    }

    async fn boot_states(&self) -> Result<Vec<(HostId, BootState)>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, last_boot_id, last_unlock_at, planned_until, planned_from, ticket_hash
             FROM hosts",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(backend)?;
                let id = HostId::new(id.clone())
                    .map_err(|_| StorageError::Corrupt(format!("host id {id:?}")))?;
                let opt_u64 = |name: &str| -> Result<Option<u64>, StorageError> {
                    Ok(row
                        .try_get::<Option<i64>, _>(name)
                        .map_err(backend)?
                        .map(to_u64))
                };
                Ok((
                    id,
                    BootState {
                        last_boot_id: row.try_get("last_boot_id").map_err(backend)?,
                        last_unlock_at: opt_u64("last_unlock_at")?,
                        planned_until: opt_u64("planned_until")?,
                        planned_from: row.try_get("planned_from").map_err(backend)?,
                        ticket_hash: row
                            .try_get::<Option<Vec<u8>>, _>("ticket_hash")
                            .map_err(backend)?
                            .and_then(|h| h.try_into().ok()),
                    },
                ))
            })
            .collect()
    }

    async fn save_boot_states(&self, states: &[(HostId, BootState)]) -> Result<(), StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        for (id, state) in states {
            sqlx::query(
                "UPDATE hosts SET last_boot_id = ?, last_unlock_at = ?, planned_until = ?,
                    planned_from = ?, ticket_hash = ? WHERE id = ?",
            )
            .bind(state.last_boot_id.as_deref())
            .bind(state.last_unlock_at.map(to_i64))
            .bind(state.planned_until.map(to_i64))
            .bind(state.planned_from.as_deref())
            .bind(state.ticket_hash.as_ref().map(|h| &h[..]))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
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
}

fn host_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<HostRecord, StorageError> {
    let id: String = row.try_get("id").map_err(backend)?;
    let group: String = row.try_get("group_name").map_err(backend)?;
    let public_key: Vec<u8> = row.try_get("public_key").map_err(backend)?;
    let key_id: Option<Vec<u8>> = row.try_get("key_id").map_err(backend)?;
    let previous: Option<Vec<u8>> = row.try_get("previous_key_id").map_err(backend)?;
    let state: String = row.try_get("state").map_err(backend)?;
    let enrolled_at: i64 = row.try_get("enrolled_at").map_err(backend)?;
    let corrupt = |what: &str| StorageError::Corrupt(format!("host {id}: {what}"));
    let public_key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| corrupt("public key length"))?;
    let state: HostState = state.parse()?;
    // A shredded host has no secrets left; its key id is all zero.
    let key_id = match key_id {
        Some(k) => key_id_from(k, &id)?,
        None if state == HostState::Shredded => KeyId([0; 16]),
        None => return Err(corrupt("no current secret")),
    };
    Ok(HostRecord {
        id: HostId::new(id.clone()).map_err(|_| corrupt("id"))?,
        group,
        public_key: HostPublicKey::from_bytes(&public_key).map_err(|_| corrupt("public key"))?,
        key_id,
        previous_key_id: previous.map(|p| key_id_from(p, &id)).transpose()?,
        state,
        enrolled_at: to_u64(enrolled_at),
    })
}
