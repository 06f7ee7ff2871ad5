//! Where `atrest keyd` keeps its state and its audit log: `--database`.
//!
//! - `sqlite:DIR`: `DIR/keyd.db` and `DIR/audit.db`, one keyd process
//!   (the default, DIR being the data directory);
//! - `postgres://USER@HOST:PORT/DB`: both on one PostgreSQL database that
//!   several replicas share. The password comes from `PGPASSWORD` or
//!   `~/.pgpass`, never from the URL kept in `keyd.json`.
//!
//! [`KeydStorage`] and [`KeydAuditStore`] are the two backends behind one
//! type each, so the authority and the audit log stay generic and learn
//! nothing of which one runs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use atrest_audit::TreeHead;
use atrest_audit::{
    AuditStore, BatchRows, Catchup, ChainHead, Checkpoint, Entry, PgStore, SqliteStore, StoreError,
};
use atrest_remote::{HostId, KeyId};

use super::{
    BootState, Cached, CachedHeld, Held, HeldState, HoldOutcome, HostRecord, HostState,
    LoginAttempt, LoginCounts, PgHeld, PgStorage, PolicyRule, PolicyScope, ReleaseHold, SqliteHeld,
    SqliteStorage, Storage, StorageError, StoredApp, StoredApprover, StoredBucket,
    StoredGeneration, StoredHeld, StoredScope, StoredSecret, StoredSession, StoredWindow,
};

use crate::secrets_key::{SecretsKeyring, StoreKeys};

const STATE_DB: &str = crate::DataDir::STATE_DB;
const AUDIT_DB: &str = crate::DataDir::AUDIT_DB;

/// Where the authority's databases are.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// `keyd.db` and `audit.db` in this directory.
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL.
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(
        "{0:?} is not a database keyd knows: use postgres://USER@HOST:PORT/DATABASE or sqlite:DIR"
    )]
    BadUrl(String),
    #[error(
        "the database URL {0} holds a password, and keyd.json is readable by others: \
         drop it from the URL and give it in PGPASSWORD or ~/.pgpass"
    )]
    PasswordInUrl(String),
    #[error(
        "cannot reach the PostgreSQL database {target} ({reason}); check that the server runs \
         and the URL's host, port, database and user (the password comes from PGPASSWORD or \
         ~/.pgpass)"
    )]
    Unreachable { target: String, reason: String },
    #[error("{target}: {source}")]
    Storage {
        target: String,
        #[source]
        source: StorageError,
    },
    #[error("{target}: {source}")]
    Audit {
        target: String,
        #[source]
        source: StoreError,
    },
}

impl FromStr for Database {
    type Err = DatabaseError;

    fn from_str(text: &str) -> Result<Self, DatabaseError> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            // `sqlite://DIR` as well as `sqlite:DIR`.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(DatabaseError::BadUrl(text.to_owned()));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // Checked now, so a typo fails before anything is written.
            text.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|_| DatabaseError::BadUrl(Self::redact(text)))?;
            return Ok(Self::Postgres(text.to_owned()));
        }
        Err(DatabaseError::BadUrl(Self::redact(text)))
    }
}

impl fmt::Display for Database {
    /// The URL as keyd.json keeps it; a password is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(dir) => write!(f, "sqlite:{}", dir.display()),
            Self::Postgres(url) => f.write_str(&Self::redact(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

impl Database {
    /// The default: SQLite files in the data directory.
    pub fn in_data_dir(dir: &Path) -> Self {
        Self::Sqlite(dir.to_owned())
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Whether the URL carries a password (`user:password@` or
    /// `password=`).
    pub fn has_password(&self) -> bool {
        let Self::Postgres(url) = self else {
            return false;
        };
        let (authority, query) = split_url(url);
        let user_info = authority.rsplit_once('@').map(|(info, _)| info);
        user_info.is_some_and(|info| info.contains(':'))
            || query.split('&').any(|pair| pair.starts_with("password="))
    }

    /// `url` with any password replaced by `***`, for messages.
    fn redact(url: &str) -> String {
        let (authority, query) = split_url(url);
        let mut out = url.to_owned();
        if let Some((info, _)) = authority.rsplit_once('@')
            && let Some((user, _)) = info.split_once(':')
        {
            out = out.replacen(info, &format!("{user}:***"), 1);
        }
        if query.split('&').any(|pair| pair.starts_with("password=")) {
            out = out.split('?').next().unwrap_or_default().to_owned() + "?***";
        }
        out
    }

    /// Opens (creating or migrating) the authority's state store, its
    /// host secrets wrapped under `keys.secrets` (`secrets.key`) and its
    /// scope bucket keys under `keys.records` (`records.key`).
    pub async fn open_storage(&self, keys: StoreKeys) -> Result<KeydStorage, DatabaseError> {
        match self {
            Self::Sqlite(dir) => SqliteStorage::open(&dir.join(STATE_DB), keys)
                .await
                .map(|s| KeydStorage::Sqlite(Cached::new(s)))
                .map_err(|source| DatabaseError::Storage {
                    target: dir.join(STATE_DB).display().to_string(),
                    source,
                }),
            Self::Postgres(url) => PgStorage::open(url, keys)
                .await
                .map(KeydStorage::Postgres)
                .map_err(|source| {
                    let target = Self::redact(url);
                    match source {
                        StorageError::Unavailable(e) => DatabaseError::Unreachable {
                            target,
                            reason: e.to_string(),
                        },
                        source => DatabaseError::Storage { target, source },
                    }
                }),
        }
    }

    /// Opens (creating or migrating) the audit log's store.
    pub async fn open_audit(&self) -> Result<KeydAuditStore, DatabaseError> {
        match self {
            Self::Sqlite(dir) => SqliteStore::open(&dir.join(AUDIT_DB))
                .await
                .map(KeydAuditStore::Sqlite)
                .map_err(|source| DatabaseError::Audit {
                    target: dir.join(AUDIT_DB).display().to_string(),
                    source,
                }),
            Self::Postgres(url) => PgStore::open(url)
                .await
                .map(KeydAuditStore::Postgres)
                .map_err(|source| {
                    let target = Self::redact(url);
                    let unreachable = match &source {
                        StoreError::Backend(e) => e
                            .downcast_ref::<sqlx::Error>()
                            .is_some_and(super::unavailable),
                        _ => false,
                    };
                    if unreachable {
                        DatabaseError::Unreachable {
                            target,
                            reason: source.to_string(),
                        }
                    } else {
                        DatabaseError::Audit { target, source }
                    }
                }),
        }
    }
}

/// The authority part (`user:pw@host:port`) and the query of a URL.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    (authority, query)
}

/// The state store `atrest keyd` runs on.
#[derive(Debug)]
pub enum KeydStorage {
    Sqlite(Cached<SqliteStorage>),
    Postgres(PgStorage),
}

/// What a [`KeydStorage`] holds for its caller: its backend's hold.
#[derive(Default)]
pub enum KeydHeld {
    #[default]
    Nothing,
    Sqlite(CachedHeld<SqliteHeld>),
    Postgres(PgHeld),
}

impl Held for KeydHeld {
    async fn commit(self) -> Result<(), StorageError> {
        match self {
            Self::Nothing => Ok(()),
            Self::Sqlite(held) => held.commit().await,
            Self::Postgres(held) => held.commit().await,
        }
    }
}

/// The audit store `atrest keyd` runs on.
#[derive(Clone, Debug)]
pub enum KeydAuditStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// One arm per backend, the same call.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Self::Sqlite($s) => $call,
            Self::Postgres($s) => $call,
        }
    };
}

impl Storage for KeydStorage {
    type Held = KeydHeld;

    async fn insert_token(
        &self,
        token_hash: [u8; 32],
        group: &str,
        expires_at: u64,
    ) -> Result<(), StorageError> {
        each!(self, s => s.insert_token(token_hash, group, expires_at).await)
    }

    async fn enroll(
        &self,
        token_hash: [u8; 32],
        now: u64,
        host: &HostRecord,
        secret: &[u8; 32],
    ) -> Result<Option<(String, KeydHeld)>, StorageError> {
        Ok(match self {
            Self::Sqlite(s) => s
                .enroll(token_hash, now, host, secret)
                .await?
                .map(|(group, held)| (group, KeydHeld::Sqlite(held))),
            Self::Postgres(s) => s
                .enroll(token_hash, now, host, secret)
                .await?
                .map(|(group, held)| (group, KeydHeld::Postgres(held))),
        })
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StorageError> {
        each!(self, s => s.hosts().await)
    }

    async fn host(&self, id: &HostId) -> Result<Option<HostRecord>, StorageError> {
        each!(self, s => s.host(id).await)
    }

    async fn host_secrets(&self, id: &HostId) -> Result<Vec<StoredSecret>, StorageError> {
        each!(self, s => s.host_secrets(id).await)
    }

    async fn hold_host(
        &self,
        id: &HostId,
        exclusive: bool,
    ) -> Result<Option<(HostRecord, KeydHeld)>, StorageError> {
        Ok(match self {
            Self::Sqlite(s) => s
                .hold_host(id, exclusive)
                .await?
                .map(|(record, held)| (record, KeydHeld::Sqlite(held))),
            Self::Postgres(s) => s
                .hold_host(id, exclusive)
                .await?
                .map(|(record, held)| (record, KeydHeld::Postgres(held))),
        })
    }

    async fn hold_release(
        &self,
        known: &HostRecord,
        nonce: Option<([u8; 16], u64)>,
    ) -> Result<Option<ReleaseHold<KeydHeld>>, StorageError> {
        Ok(match self {
            Self::Sqlite(s) => s
                .hold_release(known, nonce)
                .await?
                .map(|hold| hold.map_held(KeydHeld::Sqlite)),
            Self::Postgres(s) => s
                .hold_release(known, nonce)
                .await?
                .map(|hold| hold.map_held(KeydHeld::Postgres)),
        })
    }

    async fn set_host_state(
        &self,
        held: &mut KeydHeld,
        id: &HostId,
        state: HostState,
    ) -> Result<bool, StorageError> {
        match (self, held) {
            (Self::Sqlite(s), KeydHeld::Sqlite(held)) => s.set_host_state(held, id, state).await,
            (Self::Postgres(s), KeydHeld::Postgres(held)) => {
                s.set_host_state(held, id, state).await
            }
            // Nothing held (or, which never happens, another backend's
            // hold): committed at once.
            (Self::Sqlite(s), _) => s.set_host_state(&mut Default::default(), id, state).await,
            (Self::Postgres(s), _) => s.set_host_state(&mut Default::default(), id, state).await,
        }
    }

    async fn rotate_secret(
        &self,
        id: &HostId,
        key_id: KeyId,
        secret: &[u8; 32],
    ) -> Result<bool, StorageError> {
        each!(self, s => s.rotate_secret(id, key_id, secret).await)
    }

    async fn retire_secrets(&self, id: &HostId, key_ids: &[KeyId]) -> Result<(), StorageError> {
        each!(self, s => s.retire_secrets(id, key_ids).await)
    }

    async fn set_policy(&self, scope: &PolicyScope, rule: PolicyRule) -> Result<(), StorageError> {
        each!(self, s => s.set_policy(scope, rule).await)
    }

    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicyRule)>, StorageError> {
        each!(self, s => s.policies().await)
    }

    async fn boot_states(&self) -> Result<Vec<(HostId, BootState)>, StorageError> {
        each!(self, s => s.boot_states().await)
    }

    async fn boot_state(&self, id: &HostId) -> Result<Option<BootState>, StorageError> {
        each!(self, s => s.boot_state(id).await)
    }

    async fn save_boot_states(&self, states: &[(HostId, BootState)]) -> Result<(), StorageError> {
        each!(self, s => s.save_boot_states(states).await)
    }

    async fn save_unlock_times(
        &self,
        times: &[(HostId, u64)],
    ) -> Result<Vec<HostId>, StorageError> {
        each!(self, s => s.save_unlock_times(times).await)
    }

    async fn vault_generation(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<Option<StoredGeneration>, StorageError> {
        each!(self, s => s.vault_generation(host, vault_id).await)
    }

    async fn save_vault_generation(
        &self,
        generation: &StoredGeneration,
    ) -> Result<bool, StorageError> {
        each!(self, s => s.save_vault_generation(generation).await)
    }

    async fn approve_rollback(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<bool, StorageError> {
        each!(self, s => s.approve_rollback(host, vault_id).await)
    }

    async fn put_approver(
        &self,
        name: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> Result<(), StorageError> {
        each!(self, s => s.put_approver(name, totp_secret, now).await)
    }

    async fn approver(&self, name: &str) -> Result<Option<StoredApprover>, StorageError> {
        each!(self, s => s.approver(name).await)
    }

    async fn use_approver_step(&self, name: &str, step: u64) -> Result<bool, StorageError> {
        each!(self, s => s.use_approver_step(name, step).await)
    }

    async fn spend_nonce(&self, nonce: [u8; 16], keep_until: u64) -> Result<bool, StorageError> {
        each!(self, s => s.spend_nonce(nonce, keep_until).await)
    }

    async fn remember_nonces(&self, nonces: &[([u8; 16], u64)]) -> Result<(), StorageError> {
        each!(self, s => s.remember_nonces(nonces).await)
    }

    async fn prune_nonces(&self, now: u64) -> Result<(), StorageError> {
        each!(self, s => s.prune_nonces(now).await)
    }

    async fn insert_held(&self, held: &StoredHeld, now: u64) -> Result<HoldOutcome, StorageError> {
        each!(self, s => s.insert_held(held, now).await)
    }

    async fn held(&self, id: &str) -> Result<Option<StoredHeld>, StorageError> {
        each!(self, s => s.held(id).await)
    }

    async fn waiting_held(&self, now: u64) -> Result<Vec<StoredHeld>, StorageError> {
        each!(self, s => s.waiting_held(now).await)
    }

    async fn expired_held_ids(&self, now: u64) -> Result<Vec<String>, StorageError> {
        each!(self, s => s.expired_held_ids(now).await)
    }

    async fn move_held(
        &self,
        id: &str,
        from: HeldState,
        to: HeldState,
        by: Option<&str>,
        expired: Option<(u64, bool)>,
    ) -> Result<bool, StorageError> {
        each!(self, s => s.move_held(id, from, to, by, expired).await)
    }

    async fn store_held_grant(&self, id: &str, sealed_grant: &[u8]) -> Result<(), StorageError> {
        each!(self, s => s.store_held_grant(id, sealed_grant).await)
    }

    async fn delete_pending_held(&self, id: &str) -> Result<(), StorageError> {
        each!(self, s => s.delete_pending_held(id).await)
    }

    async fn prune_held(&self, before: u64) -> Result<(), StorageError> {
        each!(self, s => s.prune_held(before).await)
    }

    fn records_keyring(&self) -> Arc<SecretsKeyring> {
        each!(self, s => s.records_keyring())
    }

    async fn scope_bucket(&self, number: u8) -> Result<StoredBucket, StorageError> {
        each!(self, s => s.scope_bucket(number).await)
    }

    async fn insert_app(&self, app: &StoredApp) -> Result<bool, StorageError> {
        each!(self, s => s.insert_app(app).await)
    }

    async fn app_by_token(&self, token_hash: [u8; 32]) -> Result<Option<StoredApp>, StorageError> {
        each!(self, s => s.app_by_token(token_hash).await)
    }

    async fn apps(&self) -> Result<Vec<StoredApp>, StorageError> {
        each!(self, s => s.apps().await)
    }

    async fn delete_app(&self, name: &str) -> Result<bool, StorageError> {
        each!(self, s => s.delete_app(name).await)
    }

    async fn insert_scope(&self, scope: &StoredScope) -> Result<bool, StorageError> {
        each!(self, s => s.insert_scope(scope).await)
    }

    async fn scope(&self, id: &str) -> Result<Option<StoredScope>, StorageError> {
        each!(self, s => s.scope(id).await)
    }

    async fn scopes(&self) -> Result<Vec<StoredScope>, StorageError> {
        each!(self, s => s.scopes().await)
    }

    async fn add_scope_key(
        &self,
        id: &str,
        version: u32,
        wrapped: &[u8],
        bucket: &StoredBucket,
    ) -> Result<bool, StorageError> {
        each!(self, s => s.add_scope_key(id, version, wrapped, bucket).await)
    }

    async fn set_scope_minimum(&self, id: &str, minimum: u32) -> Result<bool, StorageError> {
        each!(self, s => s.set_scope_minimum(id, minimum).await)
    }

    async fn shred_scope(&self, id: &str) -> Result<bool, StorageError> {
        each!(self, s => s.shred_scope(id).await)
    }

    async fn set_scope_window(
        &self,
        id: &str,
        window: Option<&StoredWindow>,
    ) -> Result<bool, StorageError> {
        each!(self, s => s.set_scope_window(id, window).await)
    }

    async fn insert_session(&self, session: &StoredSession) -> Result<(), StorageError> {
        each!(self, s => s.insert_session(session).await)
    }

    async fn session(
        &self,
        id_hash: [u8; 32],
        now: u64,
    ) -> Result<Option<StoredSession>, StorageError> {
        each!(self, s => s.session(id_hash, now).await)
    }

    async fn set_session_flash(
        &self,
        id_hash: [u8; 32],
        flash: Option<&str>,
    ) -> Result<(), StorageError> {
        each!(self, s => s.set_session_flash(id_hash, flash).await)
    }

    async fn delete_session(&self, id_hash: [u8; 32]) -> Result<(), StorageError> {
        each!(self, s => s.delete_session(id_hash).await)
    }

    async fn prune_sessions(&self, now: u64) -> Result<(), StorageError> {
        each!(self, s => s.prune_sessions(now).await)
    }

    async fn take_login(
        &self,
        attempt: &LoginAttempt<'_>,
        allow: fn(&LoginCounts) -> bool,
    ) -> Result<LoginCounts, StorageError> {
        each!(self, s => s.take_login(attempt, allow).await)
    }

    async fn login_succeeded(
        &self,
        name: &str,
        client: &str,
        untrusted: bool,
        trusted_until: u64,
    ) -> Result<(), StorageError> {
        each!(self, s => s.login_succeeded(name, client, untrusted, trusted_until).await)
    }

    async fn prune_logins(&self, now: u64) -> Result<(), StorageError> {
        each!(self, s => s.prune_logins(now).await)
    }

    async fn check_writable(&self) -> Result<(), StorageError> {
        each!(self, s => s.check_writable().await)
    }
}

impl AuditStore for KeydAuditStore {
    async fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        each!(self, s => s.append(entries, checkpoints, tree_heads).await)
    }

    async fn append_locked<B, F>(&self, known: ChainHead, prepare: F) -> Result<B, StoreError>
    where
        B: BatchRows + Send,
        F: FnMut(Option<Catchup>) -> Result<B, StoreError> + Send,
    {
        each!(self, s => s.append_locked(known, prepare).await)
    }

    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        each!(self, s => s.read_entries(from, limit).await)
    }

    async fn read_checkpoints(&self, from: u64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        each!(self, s => s.read_checkpoints(from, limit).await)
    }

    async fn read_tree_heads(&self, from: u64, limit: u32) -> Result<Vec<TreeHead>, StoreError> {
        each!(self, s => s.read_tree_heads(from, limit).await)
    }

    async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
        each!(self, s => s.latest_tree_head().await)
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        each!(self, s => s.head().await)
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        each!(self, s => s.latest_checkpoint().await)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_name_a_backend_or_are_refused_with_the_forms_keyd_knows() {
        assert_eq!(
            "sqlite:/var/lib/atrest/keyd".parse::<Database>().unwrap(),
            Database::Sqlite("/var/lib/atrest/keyd".into())
        );
        assert_eq!(
            "sqlite:///srv/k".parse::<Database>().unwrap(),
            Database::Sqlite("/srv/k".into())
        );
        let pg: Database = "postgres://keyd@db.internal:5432/atrest".parse().unwrap();
        assert!(pg.is_shared() && !pg.has_password());
        for bad in ["mysql://x/y", "/var/lib/keyd", "sqlite:", "postgres://[::1"] {
            let error = bad.parse::<Database>().unwrap_err().to_string();
            assert!(
                error.contains("postgres://") && error.contains("sqlite:"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_password_is_found_and_never_shown() {
        for url in [
            "postgres://keyd:hunter2@db:5432/atrest",
            "postgresql://db/atrest?user=keyd&password=hunter2",
        ] {
            let database: Database = url.parse().unwrap();
            assert!(database.has_password(), "{url}");
            assert!(!database.to_string().contains("hunter2"), "{database}");
            assert!(!format!("{database:?}").contains("hunter2"));
        }
        let bad = "mysql://keyd:hunter2@db/x".parse::<Database>().unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }
}
