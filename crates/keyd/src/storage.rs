//! What the authority keeps besides its audit log: hosts, their exchange
//! secrets, enrollment tokens, used nonces and policies. A store knows no
//! protocol; [`crate::Authority`] holds the rules.

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
    fn as_str(self) -> &'static str {
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
    fn as_str(self) -> &'static str {
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

/// What a policy applies to; a host's own policy wins over its group's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "name")]
pub enum PolicyScope {
    Group(String),
    Host(HostId),
}

impl PolicyScope {
    fn key(&self) -> String {
        match self {
            Self::Group(g) => format!("group:{g}"),
            Self::Host(h) => format!("host:{h}"),
        }
    }
}

/// An enrolled host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRecord {
    pub id: HostId,
    pub group: String,
    pub public_key: HostPublicKey,
    /// The key id of the host's current exchange secret.
    pub key_id: KeyId,
    pub state: HostState,
    /// Unix seconds.
    pub enrolled_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key authority storage: {0}")]
    Backend(#[source] sqlx::Error),
    #[error("key authority storage holds a bad row: {0}")]
    Corrupt(String),
    #[error("a host named {0} is already enrolled")]
    HostExists(HostId),
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
/// durable operation.
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
    /// in one transaction. `Ok(false)`: no such token, used, or expired.
    fn enroll(
        &self,
        token_hash: [u8; 32],
        now: u64,
        host: &HostRecord,
        secret: &[u8; 32],
    ) -> impl Future<Output = Result<Option<String>, StorageError>> + Send;

    fn host(
        &self,
        id: &HostId,
    ) -> impl Future<Output = Result<Option<HostRecord>, StorageError>> + Send;

    fn hosts(&self) -> impl Future<Output = Result<Vec<HostRecord>, StorageError>> + Send;

    /// The host's exchange secret; `None` once shredded.
    fn host_secret(
        &self,
        id: &HostId,
    ) -> impl Future<Output = Result<Option<Zeroizing<[u8; 32]>>, StorageError>> + Send;

    /// Sets the state; `Shredded` also deletes the secret, in the same
    /// transaction. `Ok(false)`: no such host.
    fn set_host_state(
        &self,
        id: &HostId,
        state: HostState,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Records a nonce until `keep_until`; `Ok(false)` if it was already
    /// seen (a replay). Also forgets nonces past their time.
    fn record_nonce(
        &self,
        host: &HostId,
        nonce: &[u8; 16],
        now: u64,
        keep_until: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    fn set_policy(
        &self,
        scope: &PolicyScope,
        policy: Policy,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn policy(
        &self,
        scope: &PolicyScope,
    ) -> impl Future<Output = Result<Option<Policy>, StorageError>> + Send;
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tokens (
        hash BLOB PRIMARY KEY, group_name TEXT NOT NULL,
        expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS hosts (
        id TEXT PRIMARY KEY, group_name TEXT NOT NULL, public_key BLOB NOT NULL,
        key_id BLOB NOT NULL, state TEXT NOT NULL, enrolled_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS host_secrets (
        host_id TEXT PRIMARY KEY REFERENCES hosts(id), secret BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS nonces (
        host_id TEXT NOT NULL, nonce BLOB NOT NULL, keep_until INTEGER NOT NULL,
        PRIMARY KEY (host_id, nonce))",
    "CREATE INDEX IF NOT EXISTS nonces_keep_until ON nonces(keep_until)",
    "CREATE TABLE IF NOT EXISTS policies (scope TEXT PRIMARY KEY, policy TEXT NOT NULL)",
];

/// The authority's state in a SQLite file (WAL, `synchronous=FULL`), kept
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
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await
            .map_err(backend)?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&pool)
                .await
                .map_err(backend)?;
        }
        Ok(Self { pool })
    }
}

fn host_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<HostRecord, StorageError> {
    let id: String = row.try_get("id").map_err(backend)?;
    let group: String = row.try_get("group_name").map_err(backend)?;
    let public_key: Vec<u8> = row.try_get("public_key").map_err(backend)?;
    let key_id: Vec<u8> = row.try_get("key_id").map_err(backend)?;
    let state: String = row.try_get("state").map_err(backend)?;
    let enrolled_at: i64 = row.try_get("enrolled_at").map_err(backend)?;
    let corrupt = |what: &str| StorageError::Corrupt(format!("host {id}: {what}"));
    let public_key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| corrupt("public key length"))?;
    let key_id: [u8; 16] = key_id.try_into().map_err(|_| corrupt("key id length"))?;
    Ok(HostRecord {
        id: HostId::new(id.clone()).map_err(|_| corrupt("id"))?,
        group,
        public_key: HostPublicKey::from_bytes(&public_key).map_err(|_| corrupt("public key"))?,
        key_id: KeyId(key_id),
        state: state.parse()?,
        enrolled_at: to_u64(enrolled_at),
    })
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
            "INSERT OR IGNORE INTO hosts (id, group_name, public_key, key_id, state, enrolled_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(host.id.as_str())
        .bind(&group)
        .bind(&host.public_key.to_bytes()[..])
        .bind(&host.key_id.0[..])
        .bind(HostState::Active.as_str())
        .bind(to_i64(host.enrolled_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            // Dropping the transaction rolls back, so the token stays unused.
            return Err(StorageError::HostExists(host.id.clone()));
        }
        sqlx::query("INSERT INTO host_secrets (host_id, secret) VALUES (?, ?)")
            .bind(host.id.as_str())
            .bind(&secret[..])
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(group))
    }

    async fn host(&self, id: &HostId) -> Result<Option<HostRecord>, StorageError> {
        let row = sqlx::query("SELECT * FROM hosts WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(host_from_row).transpose()
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StorageError> {
        let rows = sqlx::query("SELECT * FROM hosts ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(host_from_row).collect()
    }

    async fn host_secret(&self, id: &HostId) -> Result<Option<Zeroizing<[u8; 32]>>, StorageError> {
        let secret: Option<Zeroizing<Vec<u8>>> =
            sqlx::query_scalar::<_, Vec<u8>>("SELECT secret FROM host_secrets WHERE host_id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(Zeroizing::new);
        secret
            .map(|s| {
                let mut out = Zeroizing::new([0u8; 32]);
                if s.len() != 32 {
                    return Err(StorageError::Corrupt(format!("host {id}: secret length")));
                }
                out.copy_from_slice(&s);
                Ok(out)
            })
            .transpose()
    }

    async fn set_host_state(&self, id: &HostId, state: HostState) -> Result<bool, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        // A shredded host stays shredded: its secret is gone.
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
        Ok(updated.rows_affected() > 0)
    }

    async fn record_nonce(
        &self,
        host: &HostId,
        nonce: &[u8; 16],
        now: u64,
        keep_until: u64,
    ) -> Result<bool, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM nonces WHERE keep_until < ?")
            .bind(to_i64(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO nonces (host_id, nonce, keep_until) VALUES (?, ?, ?)",
        )
        .bind(host.as_str())
        .bind(&nonce[..])
        .bind(to_i64(keep_until))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn set_policy(&self, scope: &PolicyScope, policy: Policy) -> Result<(), StorageError> {
        sqlx::query("INSERT OR REPLACE INTO policies (scope, policy) VALUES (?, ?)")
            .bind(scope.key())
            .bind(policy.as_str())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn policy(&self, scope: &PolicyScope) -> Result<Option<Policy>, StorageError> {
        let policy: Option<String> =
            sqlx::query_scalar("SELECT policy FROM policies WHERE scope = ?")
                .bind(scope.key())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        policy.map(|p| p.parse()).transpose()
    }
}
