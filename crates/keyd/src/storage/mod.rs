//! What the authority keeps besides its audit log: hosts, their exchange
//! secrets, enrollment tokens, policies, approvers, what it knows of each
//! host's boots, the nonces of recent requests, the requests held for
//! an approver, and the approval page's sessions and counts of wrong codes
//! ([`logins`]). A store knows no
//! protocol; [`crate::Authority`] holds the rules and does not know which
//! database it runs on.
//!
//! - [`Storage`]: the seam; [`SqliteStorage`] (one keyd per file) and
//!   [`PgStorage`] (several replicas on one PostgreSQL database).
//! - [`Cached`]: the decorator that answers the hot path's reads from
//!   memory for a store only this process writes (SQLite).
//! - [`Database`]: where `atrest keyd` keeps its state and audit log,
//!   parsed from `--database` (`sqlite:DIR` or `postgres://…`), and the
//!   [`KeydStorage`] / [`KeydAuditStore`] it opens.

use std::future::Future;
use std::str::FromStr;

use std::sync::Arc;

use atrest_remote::{HostId, HostPublicKey, KeyId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secrets_key::{EpochKey, SecretsKeyError, SecretsKeyring, StoredEpoch, wrapped_epoch};

#[macro_use]
mod logins;
mod buckets;
mod cached;
mod database;
mod postgres;
mod release_batch;
mod scoped;
mod sqlite;

pub use buckets::{StoredBucket, random_bucket};
pub use cached::{Cached, CachedHeld};
pub use database::{Database, DatabaseError, KeydAuditStore, KeydHeld, KeydStorage};
pub use postgres::{PG_SCHEMA_VERSION, PgHeld, PgStorage};
pub(crate) use scoped::{ScopeRow, app_from, keys_and_bucket};
pub use scoped::{StoredApp, StoredScope, StoredWindow};
pub use sqlite::{SCHEMA_VERSION, SqliteHeld, SqliteStorage};

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
    /// The default of fields added to stored rules later.
    pub(crate) fn approve() -> Self {
        Self::Approve
    }

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
    pub(crate) fn key(&self) -> String {
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

/// A scope's rules: what to do with a request, what to do when the host
/// booted without announcing it (`atrest reboot --planned`), and what to
/// do when a format 2 vault on its disk is older than, or forked from,
/// the generation this authority witnessed (format.md §16.17.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub policy: Policy,
    pub unannounced_reboot: Policy,
    /// Absent in rules written before the witness: `approve`.
    #[serde(default = "Policy::approve")]
    pub rollback: Policy,
}

impl Default for PolicyRule {
    /// Release at once, but hold an unaccounted reboot, or a vault put
    /// back to an earlier copy, for an approver.
    fn default() -> Self {
        Self {
            policy: Policy::Auto,
            unannounced_reboot: Policy::Approve,
            rollback: Policy::Approve,
        }
    }
}

/// The generation an authority witnesses for one vault of one host
/// (format.md §16.17.1): the latest the host reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGeneration {
    pub host_id: HostId,
    pub vault_id: [u8; 16],
    pub generation: atrest_remote::Generation,
    pub config_generation: u64,
    /// Unix milliseconds.
    pub reported_at_ms: u64,
    /// The boot that reported it: the first report of each boot is logged.
    pub boot_id: String,
    pub reason: atrest_remote::ReportReason,
    /// An unlock of an older or forked copy of this vault was released
    /// (by an approver, or an `auto` rollback rule): the host's next
    /// report with reason `rollback_accepted` is taken once, whatever its
    /// lineage (format.md §16.17.3).
    pub rollback_approved: bool,
}

impl StoredGeneration {
    /// As a grant and the report's answer carry it.
    pub fn witnessed(&self) -> atrest_wire::WitnessedGeneration {
        atrest_wire::WitnessedGeneration {
            checkpoint: self.generation.checkpoint,
            seq: self.generation.seq,
            chain: self.generation.chain,
            config_generation: self.config_generation,
            reported_at_ms: self.reported_at_ms,
            reason: self.reason,
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

/// What the authority knows of a host's boots. A release writes it before
/// it answers (several releases' states in one transaction), so another
/// replica, or this one after a crash, judges the next boot by it; a
/// release that moves only `last_unlock_at` leaves that time to be written
/// within a tick.
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

/// Where a held request stands. `Deciding` is a decision (or an expiry)
/// being written to the audit log by one process: nobody else may decide
/// it meanwhile, and the host still sees it waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldState {
    Pending,
    Deciding,
    Approved,
    Denied,
    Expired,
    /// Approved and claimed by the one poll that releases it.
    Released,
}

impl HeldState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Deciding => "deciding",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Released => "released",
        }
    }
}

impl FromStr for HeldState {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, StorageError> {
        [
            Self::Pending,
            Self::Deciding,
            Self::Approved,
            Self::Denied,
            Self::Expired,
            Self::Released,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| StorageError::Corrupt(format!("unknown held request state {s:?}")))
    }
}

/// A request held for an approver, as stored. What the request was (the
/// signed request, how its boot was judged, what approvers are shown) is
/// the authority's own encoding in `request`; the store reads only the
/// columns it decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredHeld {
    pub id: String,
    pub host_id: HostId,
    pub state: HeldState,
    pub decided_by: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
    /// SHA-256 of the poll token only the requester was given.
    pub poll_token_hash: [u8; 32],
    pub request: Vec<u8>,
    /// The answer once released, sealed under a key derived from the poll
    /// token: a copy of the database holds no usable boot ticket.
    pub sealed_grant: Option<Vec<u8>>,
}

/// What [`Storage::insert_held`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    Held,
    /// The host already has this many requests waiting: nothing stored.
    Full {
        waiting: usize,
    },
}

/// A login to the approval page. Stored by the SHA-256 of its cookie's
/// value, so a copy of the database holds no usable session; any replica
/// reading the row knows the login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    pub id_hash: [u8; 32],
    pub approver: String,
    /// What every form of the session carries back (CSRF): useless
    /// without the cookie.
    pub csrf: String,
    /// Unix seconds; the session is gone from then on.
    pub expires_at: u64,
    /// A message for the session's next page, shown once.
    pub flash: Option<String>,
}

/// A session's row as both backends read it.
pub(crate) struct SessionRow {
    pub id_hash: Vec<u8>,
    pub approver: String,
    pub csrf: String,
    pub expires_at: i64,
    pub flash: Option<String>,
}

impl SessionRow {
    pub fn session(self) -> Result<StoredSession, StorageError> {
        Ok(StoredSession {
            id_hash: self
                .id_hash
                .try_into()
                .map_err(|_| StorageError::Corrupt("web session: id hash length".into()))?,
            approver: self.approver,
            csrf: self.csrf,
            expires_at: to_u64(self.expires_at),
            flash: self.flash,
        })
    }
}

/// The counts of wrong codes a login to the approval page is judged by
/// ([`crate::approvers`] holds the budgets), as [`Storage::take_login`]
/// reads them: only windows still open count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoginCounts {
    /// This approver name from this client address.
    pub name_from_address: u32,
    /// This client address, all names together.
    pub address: u32,
    /// Every address without a recent good login together; `None` when
    /// this address had one (it is trusted and skips that budget).
    pub untrusted: Option<u32>,
}

/// One login attempt, as [`Storage::take_login`] counts it.
#[derive(Clone, Copy, Debug)]
pub struct LoginAttempt<'a> {
    pub name: &'a str,
    /// The client's address as the budgets key it (an IPv6 one cut to its
    /// /64), as text.
    pub client: &'a str,
    /// Unix seconds.
    pub now: u64,
    /// When a window this attempt opens ends (a window lasts from its
    /// first attempt).
    pub window_end: u64,
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
    /// The database cannot be reached or refuses writes (down, restarting,
    /// read-only standby): a state that passes, unlike a bad row.
    #[error(
        "the key authority database is unavailable ({0}); nothing is released until it is back"
    )]
    Unavailable(#[source] sqlx::Error),
    /// The database answers but takes no writes (a standby, or
    /// `default_transaction_read_only`).
    #[error("the key authority database is read-only; nothing is released until it takes writes")]
    ReadOnly,
    /// A host's row changed on every read of a release or a change: others
    /// keep changing it; try again.
    #[error("host {0} changed on every read (other changes at the same time); try again")]
    Contended(HostId),
    #[error("key authority storage holds a bad row: {0}")]
    Corrupt(String),
    #[error("a host named {0} is already enrolled")]
    HostExists(HostId),
    #[error(
        "the key authority database has schema version {found}, this keyd knows up to {known}; \
         run the newer atrest keyd that wrote it"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error(
        "the key authority database has schema version {found}, this keyd writes {known}; \
         run the atrest keyd release that wrote it (or migrate with a newer one)"
    )]
    SchemaVersion { found: i64, known: i64 },
    /// The key host secrets (`secrets.key`) or scope bucket keys
    /// (`records.key`) are wrapped under does not fit the database, or
    /// could not be written.
    #[error(transparent)]
    SecretsKey(#[from] crate::secrets_key::SecretsKeyError),
}

impl StorageError {
    /// Whether the database is unreachable or read-only, rather than the
    /// request or a row being wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::ReadOnly | Self::Contended(_)
        )
    }
}

/// Sorts a driver error: connection loss and read-only refusals become
/// [`StorageError::Unavailable`].
pub(crate) fn backend(e: sqlx::Error) -> StorageError {
    if unavailable(&e) {
        StorageError::Unavailable(e)
    } else {
        StorageError::Backend(e)
    }
}

pub(crate) fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 25006 read_only_sql_transaction; class 08 connection
            // exceptions; 57P01-57P03 admin shutdown, crash shutdown,
            // cannot connect now (starting up); 53300 too many connections.
            code == "25006" || code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// A `vault_generations` row, as both backends read it.
pub(crate) struct GenerationRow {
    pub host_id: String,
    pub vault_id: Vec<u8>,
    pub k: i64,
    pub seq: i64,
    pub chain: Vec<u8>,
    pub config_generation: i64,
    pub reported_at_ms: i64,
    pub boot_id: String,
    pub reason: i64,
    pub rollback_approved: bool,
}

impl GenerationRow {
    pub fn generation(self) -> Result<StoredGeneration, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("vault_generations: {what}"));
        Ok(StoredGeneration {
            host_id: HostId::new(self.host_id).map_err(|_| corrupt("host id"))?,
            vault_id: self.vault_id.try_into().map_err(|_| corrupt("vault id"))?,
            generation: atrest_remote::Generation {
                checkpoint: to_u64(self.k),
                seq: to_u64(self.seq),
                chain: self.chain.try_into().map_err(|_| corrupt("chain"))?,
            },
            config_generation: to_u64(self.config_generation),
            reported_at_ms: to_u64(self.reported_at_ms),
            boot_id: self.boot_id,
            reason: u8::try_from(self.reason)
                .ok()
                .and_then(atrest_remote::ReportReason::from_byte)
                .ok_or_else(|| corrupt("reason"))?,
            rollback_approved: self.rollback_approved,
        })
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn key_id_from(bytes: Vec<u8>, what: &str) -> Result<KeyId, StorageError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("{what}: key id length")))?;
    Ok(KeyId(bytes))
}

/// The stored text of a policy scope (`default`, `group:G`, `host:H`).
pub(crate) fn scope_from_key(scope: &str) -> Result<PolicyScope, StorageError> {
    if scope == "default" {
        Ok(PolicyScope::Default)
    } else if let Some(group) = scope.strip_prefix("group:") {
        Ok(PolicyScope::Group(group.to_owned()))
    } else if let Some(host) = scope.strip_prefix("host:") {
        Ok(PolicyScope::Host(HostId::new(host).map_err(|e| {
            StorageError::Corrupt(format!("policy scope {scope:?}: {e}"))
        })?))
    } else {
        Err(StorageError::Corrupt(format!("policy scope {scope:?}")))
    }
}

/// A host row as both backends read it (the key ids come from its
/// secrets: current, and previous after a rotation).
pub(crate) struct HostRow {
    pub id: String,
    pub group: String,
    pub public_key: Vec<u8>,
    pub key_id: Option<Vec<u8>>,
    pub previous_key_id: Option<Vec<u8>>,
    pub state: String,
    pub enrolled_at: i64,
}

impl HostRow {
    pub fn record(self) -> Result<HostRecord, StorageError> {
        let id = self.id;
        let corrupt = |what: &str| StorageError::Corrupt(format!("host {id}: {what}"));
        let public_key: [u8; 32] = self
            .public_key
            .try_into()
            .map_err(|_| corrupt("public key length"))?;
        let state: HostState = self.state.parse()?;
        // A shredded host has no secrets left; its key id is all zero.
        let key_id = match self.key_id {
            Some(k) => key_id_from(k, &id)?,
            None if state == HostState::Shredded => KeyId([0; 16]),
            None => return Err(corrupt("no current secret")),
        };
        Ok(HostRecord {
            id: HostId::new(id.clone()).map_err(|_| corrupt("id"))?,
            group: self.group,
            public_key: HostPublicKey::from_bytes(&public_key)
                .map_err(|_| corrupt("public key"))?,
            key_id,
            previous_key_id: self
                .previous_key_id
                .map(|p| key_id_from(p, &id))
                .transpose()?,
            state,
            enrolled_at: to_u64(self.enrolled_at),
        })
    }
}

/// A held request's row as both backends read it.
pub(crate) struct HeldRow {
    pub id: String,
    pub host_id: String,
    pub state: String,
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub poll_token_hash: Vec<u8>,
    pub request: Vec<u8>,
    pub sealed_grant: Option<Vec<u8>>,
}

impl HeldRow {
    pub fn held(self) -> Result<StoredHeld, StorageError> {
        let corrupt =
            |what: &str| StorageError::Corrupt(format!("held request {}: {what}", self.id));
        Ok(StoredHeld {
            host_id: HostId::new(self.host_id.clone()).map_err(|_| corrupt("host id"))?,
            state: self.state.parse()?,
            poll_token_hash: self
                .poll_token_hash
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("poll token hash length"))?,
            decided_by: self.decided_by,
            created_at: to_u64(self.created_at),
            expires_at: to_u64(self.expires_at),
            request: self.request,
            sealed_grant: self.sealed_grant,
            id: self.id,
        })
    }
}

/// Held requests one host may have waiting at once, across every process
/// that serves the store.
pub const MAX_HELD_PER_HOST: usize = 8;

/// A boot-state row as both backends read it.
pub(crate) struct BootRow {
    pub last_boot_id: Option<String>,
    pub last_unlock_at: Option<i64>,
    pub planned_until: Option<i64>,
    pub planned_from: Option<String>,
    pub ticket_hash: Option<Vec<u8>>,
}

impl BootRow {
    pub fn state(self) -> BootState {
        BootState {
            last_boot_id: self.last_boot_id,
            last_unlock_at: self.last_unlock_at.map(to_u64),
            planned_until: self.planned_until.map(to_u64),
            planned_from: self.planned_from,
            ticket_hash: self.ticket_hash.and_then(|h| h.try_into().ok()),
        }
    }
}

/// A stored secret's row as both backends read it: unwrapped with the
/// key of its epoch.
pub(crate) fn stored_secret(
    key: &EpochKey,
    id: &HostId,
    key_id: Vec<u8>,
    wrapped: &[u8],
    current: bool,
) -> Result<StoredSecret, StorageError> {
    let key_id = key_id_from(key_id, id.as_str())?;
    let secret = key
        .unwrap(id, &key_id, wrapped)
        .map_err(|e| StorageError::Corrupt(format!("host {id}: {e}")))?;
    Ok(StoredSecret {
        key_id,
        secret,
        current,
    })
}

/// How often a read of a host's secrets is repeated when it comes from
/// before a shred this process has already followed (on a shared
/// database, a snapshot taken just before another replica's commit).
pub(crate) const SECRET_READS: usize = 3;

/// A host's secrets as a store reads them (`key_id`, wrapped secret,
/// current), each unwrapped with the key of its epoch, the key file
/// ratcheted forward first if the database is past it. A read from before
/// a shred this process already followed is made again.
pub(crate) async fn read_secrets<F, R>(
    keyring: &SecretsKeyring,
    id: &HostId,
    mut read: F,
) -> Result<Vec<StoredSecret>, StorageError>
where
    F: FnMut() -> R,
    R: Future<Output = Result<Vec<(Vec<u8>, Vec<u8>, bool)>, StorageError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let rows = read().await?;
        let opened = rows
            .into_iter()
            .map(|(key_id, wrapped, current)| {
                let epoch = wrapped_epoch(&wrapped)
                    .map_err(|e| StorageError::Corrupt(format!("host {id}: {e}")))?;
                let key = keyring.key_at(epoch)?;
                stored_secret(&key, id, key_id, &wrapped, current)
            })
            .collect::<Result<Vec<_>, StorageError>>();
        match opened {
            Err(StorageError::SecretsKey(SecretsKeyError::RestoredDatabase { .. }))
                if attempt < SECRET_READS => {}
            other => return other,
        }
    }
}

/// A stored secret as a migration or a shred reads it: host id, key id,
/// and the secret (in the clear before the migration, wrapped after).
pub(crate) type SecretRow = (String, Vec<u8>, Vec<u8>);

/// What a store does when its database has no secrets epoch yet (new, or
/// from before secrets were wrapped): the rows still in the clear, to be
/// wrapped under the key returned, in the store's open transaction.
pub(crate) fn wrap_plaintext(
    keyring: &SecretsKeyring,
    rows: Vec<SecretRow>,
) -> Result<(Arc<EpochKey>, Vec<SecretRow>), StorageError> {
    let key = keyring.for_new_epoch()?;
    let wrapped = rows
        .into_iter()
        .map(|(host, key_id, secret)| {
            let secret = Zeroizing::new(secret);
            let id = HostId::new(host.clone())
                .map_err(|_| StorageError::Corrupt(format!("host id {host:?}")))?;
            let key_id_parsed = key_id_from(key_id.clone(), &host)?;
            let plain: &[u8; 32] = secret.as_slice().try_into().map_err(|_| {
                StorageError::Corrupt(format!(
                    "host {host}: a secret in the clear is not 32 bytes"
                ))
            })?;
            Ok((host, key_id, key.wrap(&id, &key_id_parsed, plain)))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok((key, wrapped))
}

/// A shred's step: every remaining secret, unwrapped with `key` and
/// wrapped again under the next epoch's key (returned).
pub(crate) fn rewrap_all(
    key: &EpochKey,
    rows: Vec<SecretRow>,
) -> Result<(EpochKey, Vec<SecretRow>), StorageError> {
    let next = key.next()?;
    let rewrapped = rows
        .into_iter()
        .map(|(host, key_id, wrapped)| {
            let id = HostId::new(host.clone())
                .map_err(|_| StorageError::Corrupt(format!("host id {host:?}")))?;
            let secret = stored_secret(key, &id, key_id.clone(), &wrapped, true)?;
            Ok((host, key_id, next.wrap(&id, &secret.key_id, &secret.secret)))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok((next, rewrapped))
}

/// The epoch row as both backends read it.
pub(crate) fn stored_epoch(epoch: i64, check: Vec<u8>) -> Result<StoredEpoch, StorageError> {
    Ok(StoredEpoch {
        epoch: u32::try_from(epoch)
            .map_err(|_| StorageError::Corrupt(format!("secrets epoch {epoch}")))?,
        check,
    })
}

/// What [`Storage::hold_release`] read with the host's row held.
pub struct ReleaseHold<H> {
    pub record: HostRecord,
    /// The host's boot state as stored (the default if it never booted).
    pub boot: BootState,
    /// Whether the request's nonce was spent now (`false`: a replay).
    pub nonce_fresh: bool,
    /// The row, held shared until committed or dropped.
    pub held: H,
}

impl<H> ReleaseHold<H> {
    /// The same reads around another type of hold (a backend's, wrapped).
    pub fn map_held<T>(self, f: impl FnOnce(H) -> T) -> ReleaseHold<T> {
        ReleaseHold {
            record: self.record,
            boot: self.boot,
            nonce_fresh: self.nonce_fresh,
            held: f(self.held),
        }
    }
}

/// Rows a [`Storage`] holds for its caller (an open transaction, or
/// nothing): committed by [`commit`](Held::commit); dropped, what was
/// written through it is rolled back and the rows are let go.
pub trait Held: Send {
    fn commit(self) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// Where the authority's state lives. Every method is one atomic,
/// durable operation unless it says otherwise.
pub trait Storage: Send + Sync + 'static {
    /// What [`hold_host`](Self::hold_host) and [`enroll`](Self::enroll)
    /// hold open; the default holds nothing.
    type Held: Held + Default;

    /// Stores a token by the SHA-256 of its text, so a stolen database
    /// holds no usable token.
    fn insert_token(
        &self,
        token_hash: [u8; 32],
        group: &str,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Spends an unexpired, unused token and enrolls `host` with `secret`
    /// in one transaction, left open: the enrollment exists once the
    /// caller commits the returned hold (after the enrollment's audit
    /// entry is durable); dropping it enrolls nothing and leaves the token
    /// unspent. `Ok(None)`: no such token, used, or expired.
    fn enroll(
        &self,
        token_hash: [u8; 32],
        now: u64,
        host: &HostRecord,
        secret: &[u8; 32],
    ) -> impl Future<Output = Result<Option<(String, Self::Held)>, StorageError>> + Send;

    fn hosts(&self) -> impl Future<Output = Result<Vec<HostRecord>, StorageError>> + Send;

    /// One host as stored now: what the release path checks, so a revoke,
    /// shred or rotation made by another replica is honoured at once.
    fn host(
        &self,
        id: &HostId,
    ) -> impl Future<Output = Result<Option<HostRecord>, StorageError>> + Send;

    /// A host's exchange secrets (current, and previous after a rotation);
    /// empty once shredded.
    fn host_secrets(
        &self,
        id: &HostId,
    ) -> impl Future<Output = Result<Vec<StoredSecret>, StorageError>> + Send;

    /// Reads host `id` and holds its row until the returned hold is
    /// committed or dropped: shared by a release across its audit append,
    /// exclusive by a change of the host's state across its own (written
    /// with [`set_host_state`](Self::set_host_state) through the hold). So
    /// on a store several processes share, a change waits for the releases
    /// being logged, and a release that comes after the change commits sees
    /// it. A store only this process writes may hold nothing (the authority
    /// orders its own changes and releases). `Ok(None)`: no such host.
    fn hold_host(
        &self,
        id: &HostId,
        exclusive: bool,
    ) -> impl Future<Output = Result<Option<(HostRecord, Self::Held)>, StorageError>> + Send;

    /// What a release checks, read with the row of host `known.id` held
    /// shared as by [`hold_host`](Self::hold_host)`(id, false)`: the host,
    /// its boot state, and the request's `nonce` spent until the given
    /// time (Unix seconds; `None` spends nothing: an approved request's
    /// nonce was spent when it was held). A shared store does it in one
    /// statement, and spends the nonce in the hold's transaction: spent
    /// for every process once the hold commits, unspent if it is dropped,
    /// and a second process spending it meanwhile waits for the first's
    /// commit. PostgreSQL holds the releases that ask at the same time in
    /// one transaction (one statement for all of them): a hold's commit
    /// then returns once every hold of its batch is committed or dropped,
    /// so a caller never keeps one hold while it commits another. A store
    /// only this process writes may spend it at once, but
    /// then only if the record read is `known` (the one whose secrets the
    /// caller parsed): otherwise the caller drops the hold and asks again,
    /// and must not find its own nonce spent. `Ok(None)`: no such host.
    fn hold_release(
        &self,
        known: &HostRecord,
        nonce: Option<([u8; 16], u64)>,
    ) -> impl Future<Output = Result<Option<ReleaseHold<Self::Held>>, StorageError>> + Send {
        async move {
            let Some((record, held)) = self.hold_host(&known.id, false).await? else {
                return Ok(None);
            };
            let boot = self.boot_state(&known.id).await?.unwrap_or_default();
            let nonce_fresh = match nonce {
                Some((nonce, keep_until)) if record == *known => {
                    self.spend_nonce(nonce, keep_until).await?
                }
                _ => true,
            };
            Ok(Some(ReleaseHold {
                record,
                boot,
                nonce_fresh,
                held,
            }))
        }
    }

    /// Sets the state; `Shredded` also deletes every secret of the host,
    /// in the same transaction, and advances the secrets epoch: every
    /// other host's secret is wrapped again under the next epoch's key,
    /// and once the transaction commits `secrets.key` is replaced by that
    /// key (decision 0018), so no backup of the database taken before the
    /// shred opens again. A shredded host stays shredded. Written
    /// through `held` (an exclusive [`hold_host`](Self::hold_host)) when it
    /// holds a transaction, and then durable only once it commits; else
    /// committed at once. `Ok(false)`: no such host, or it is shredded.
    fn set_host_state(
        &self,
        held: &mut Self::Held,
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

    /// One host's boot state as stored now (`None`: no such host).
    fn boot_state(
        &self,
        id: &HostId,
    ) -> impl Future<Output = Result<Option<BootState>, StorageError>> + Send;

    /// Saves several hosts' boot states in one transaction.
    fn save_boot_states(
        &self,
        states: &[(HostId, BootState)],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Sets each host's `last_unlock_at` to the time given, unless the
    /// stored one is later (another replica's release, or a boot state
    /// written meanwhile), leaving the rest of its boot state as it is.
    /// Returns the hosts it passed over, to be given again later: a
    /// shared store passes over a row another transaction holds (a
    /// release in flight) rather than wait for it; a store only this
    /// process writes passes over none. A host that is not stored is
    /// passed over for good (not returned).
    fn save_unlock_times(
        &self,
        times: &[(HostId, u64)],
    ) -> impl Future<Output = Result<Vec<HostId>, StorageError>> + Send;

    /// The generation witnessed for `vault_id` of `host`, if any.
    fn vault_generation(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> impl Future<Output = Result<Option<StoredGeneration>, StorageError>> + Send;

    /// Stores `generation` as the one witnessed for its (host, vault),
    /// durably, unless the stored one has a higher sequence number (a
    /// report judged meanwhile on another replica): `Ok(false)` then.
    fn save_vault_generation(
        &self,
        generation: &StoredGeneration,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Remembers that an unlock of an older or forked copy of the vault
    /// was released (see [`StoredGeneration::rollback_approved`]);
    /// `Ok(false)` when nothing is witnessed for it.
    fn approve_rollback(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

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

    /// Spends a request's nonce until `keep_until` (Unix seconds), for
    /// every process that serves this store. `Ok(false)`: it was already
    /// spent (a replay).
    fn spend_nonce(
        &self,
        nonce: [u8; 16],
        keep_until: u64,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Spends nonces already answered (reloaded from the audit log at
    /// start); those already spent are left as they are.
    fn remember_nonces(
        &self,
        nonces: &[([u8; 16], u64)],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Forgets nonces kept until before `now`.
    fn prune_nonces(&self, now: u64) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Stores a held request (state `Pending`) unless its host already has
    /// [`MAX_HELD_PER_HOST`] waiting (pending or deciding, unexpired at
    /// `now`). The count and the insert are one transaction that holds the
    /// host's row (or the database's write lock), so processes holding at
    /// once cannot pass the limit together.
    fn insert_held(
        &self,
        held: &StoredHeld,
        now: u64,
    ) -> impl Future<Output = Result<HoldOutcome, StorageError>> + Send;

    fn held(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredHeld>, StorageError>> + Send;

    /// Requests pending or being decided and unexpired at `now`, oldest
    /// first.
    fn waiting_held(
        &self,
        now: u64,
    ) -> impl Future<Output = Result<Vec<StoredHeld>, StorageError>> + Send;

    /// The ids of pending requests whose time is up at `now`.
    fn expired_held_ids(
        &self,
        now: u64,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// Moves request `id` from `from` to `to` (recording `by` if given),
    /// only if it is in `from` and, with `expired` = `Some((now, e))`, only
    /// if its time is up at `now` exactly when `e`. `Ok(false)`: it was
    /// not, and nothing changed. This is how a decision is claimed once
    /// (`Pending` → `Deciding`) and an approved request released once
    /// (`Approved` → `Released`), whichever process asks.
    fn move_held(
        &self,
        id: &str,
        from: HeldState,
        to: HeldState,
        by: Option<&str>,
        expired: Option<(u64, bool)>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Keeps a released request's sealed answer for its later polls.
    fn store_held_grant(
        &self,
        id: &str,
        sealed_grant: &[u8],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Deletes a request still pending (its hold could not be audited).
    fn delete_pending_held(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Forgets requests that are no longer waiting and expired before
    /// `before`.
    fn prune_held(&self, before: u64) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The keyring scope bucket keys are wrapped under (`records.key`),
    /// checked against the database's records epoch at open; the scoped
    /// API unwraps bucket keys with it (decision 0020).
    fn records_keyring(&self) -> Arc<SecretsKeyring>;

    /// Bucket `number`'s key as stored now (every database has all
    /// 256 once open), for a new scope's key to be wrapped under.
    fn scope_bucket(
        &self,
        number: u8,
    ) -> impl Future<Output = Result<StoredBucket, StorageError>> + Send;

    /// `Ok(false)`: an app of that name exists.
    fn insert_app(
        &self,
        app: &StoredApp,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    fn app_by_token(
        &self,
        token_hash: [u8; 32],
    ) -> impl Future<Output = Result<Option<StoredApp>, StorageError>> + Send;

    fn apps(&self) -> impl Future<Output = Result<Vec<StoredApp>, StorageError>> + Send;

    /// `Ok(false)`: no such app.
    fn delete_app(&self, name: &str) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Stores a new scope with its keys, wrapped under the key of
    /// `scope.bucket` (which must be set). `Ok(false)`: the id is taken
    /// (also by a shredded scope), or the bucket's key is no longer the
    /// one given (a shred replaced it, or moved the epoch: read it again).
    fn insert_scope(
        &self,
        scope: &StoredScope,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    fn scope(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredScope>, StorageError>> + Send;

    fn scopes(&self) -> impl Future<Output = Result<Vec<StoredScope>, StorageError>> + Send;

    /// Adds a key version, wrapped under the key of `bucket` (the scope's,
    /// as read). `Ok(false)`: no such scope, it is shredded, it has that
    /// version already (another rotation won), or the bucket's key is no
    /// longer the one given.
    fn add_scope_key(
        &self,
        id: &str,
        version: u32,
        wrapped: &[u8],
        bucket: &StoredBucket,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// `Ok(false)`: no such scope, or shredded.
    fn set_scope_minimum(
        &self,
        id: &str,
        minimum: u32,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Deletes every key of the scope and marks it shredded, replaces its
    /// bucket's key (the bucket's other scopes wrapped again under the new
    /// one) and advances the records epoch (every bucket key wrapped under
    /// the next epoch's key), in one transaction; then `records.key` is
    /// replaced by the next epoch's (decision 0020). `Ok(false)`: no such
    /// scope, or already shredded.
    fn shred_scope(&self, id: &str) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Sets or clears the window. `Ok(false)`: no such scope, or shredded.
    fn set_scope_window(
        &self,
        id: &str,
        window: Option<&StoredWindow>,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;

    fn insert_session(
        &self,
        session: &StoredSession,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The session whose cookie hashes to `id_hash`, unless it expired at
    /// `now`.
    fn session(
        &self,
        id_hash: [u8; 32],
        now: u64,
    ) -> impl Future<Output = Result<Option<StoredSession>, StorageError>> + Send;

    /// Sets or clears the session's message for its next page.
    fn set_session_flash(
        &self,
        id_hash: [u8; 32],
        flash: Option<&str>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Ends a session (logout).
    fn delete_session(
        &self,
        id_hash: [u8; 32],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Forgets sessions expired at `now`.
    fn prune_sessions(&self, now: u64) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Counts a login attempt to the approval page, for every process
    /// that serves this store: reads the attempt's [`LoginCounts`] and,
    /// if `allow` says it may be made, adds it to them (the untrusted
    /// count only when the address is untrusted; a window over by
    /// `attempt.now` starts again), all as one transaction that holds the
    /// counts (the database's write lock, or a lock every replica takes),
    /// so attempts made at once on several replicas never pass a budget
    /// together. Returns the counts as read, before this attempt.
    fn take_login(
        &self,
        attempt: &LoginAttempt<'_>,
        allow: fn(&LoginCounts) -> bool,
    ) -> impl Future<Output = Result<LoginCounts, StorageError>> + Send;

    /// A right code after [`take_login`](Self::take_login) counted the
    /// attempt: the name's count from the address is forgotten, the
    /// attempt given back to the address's count (and the untrusted one,
    /// if it was counted there), and the address trusted until
    /// `trusted_until`.
    fn login_succeeded(
        &self,
        name: &str,
        client: &str,
        untrusted: bool,
        trusted_until: u64,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Forgets login counts whose windows are over at `now`, and trusted
    /// addresses whose trust ran out.
    fn prune_logins(&self, now: u64) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Whether the database answers and takes writes: what `/healthz`
    /// reports. `Err` says why not.
    fn check_writable(&self) -> impl Future<Output = Result<(), StorageError>> + Send;
}

#[cfg(test)]
mod tests;
