//! Scoped encryption served by the authority (issue 12, decision 0014):
//! applications with their own tokens seal, open, rewrap and index fields
//! of scopes whose keys the authority keeps wrapped under bucket keys,
//! themselves wrapped under its records epoch key (decision 0020).
//!
//! - [`App`]: an application authenticated by its token, with the
//!   [`AppPolicy`] that names the scopes and fields it may use. Only
//!   [`Authority::app`] makes one, so no operation runs unauthenticated.
//! - [`Authority::scoped_fields`] and [`Authority::scoped_index`] take a batch
//!   of items (one item is the single variant); the batch is refused as a
//!   whole at the first item that fails, with that item's index.
//! - A scope made with a client share opens only with the share the
//!   request carries; a scope without one that has a window opens only
//!   inside it, for the window's fields.
//! - Files (uploads) are streams (docs/format.md §17.5) sealed and opened
//!   by [`Authority::scoped_file_sealer`] and [`Authority::scoped_file_opener`]
//!   in constant memory; a file counts as the column [`FILE_COLUMN`] of its
//!   table for the policy and the window.
//! - Every decryption is in the audit log before its plaintext is
//!   answered (one entry per scope and request, written in the log's
//!   batches); every denial is too, within the refusal budget.
//!
//! HTTP is in [`crate::scoped_routes`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_core::SecretKey;
use atrest_scoped::{
    ClientShare, Column, DailyWindow, FieldContext, IndexDefinition, KeyVersion, Keyring,
    Normalize, RecordsKey, STREAM_HEADER_LEN, ScopeId, ScopeKey, ScopedError, StreamContext,
    StreamOpener, StreamWriter, Table, TimeOfDay, Wrapped,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::authority::{Authority, AuthorityError, RequestContext};
use crate::events::AuditEvent;
use crate::secrets_key::{SecretsKeyError, SecretsKeyring, wrapped_epoch};
use crate::storage::{
    Storage, StorageError, StoredApp, StoredBucket, StoredScope, StoredWindow, random_bucket,
};

/// Most items in one request.
pub const MAX_ITEMS: usize = 1000;

/// Items named in one audit entry; a request with more writes several, so
/// no entry passes the log's size limit.
const ITEMS_PER_ENTRY: usize = 64;

/// Bytes of names (field and row) one audit entry holds at most: JSON can
/// escape a byte to six, so this stays well inside
/// [`atrest_audit::MAX_DETAILS_LEN`] whatever the names hold.
const NAME_BYTES_PER_ENTRY: usize = 8 * 1024;

/// `items` in runs that each fit one audit entry: at most
/// [`ITEMS_PER_ENTRY`] items and [`NAME_BYTES_PER_ENTRY`] bytes of names
/// (an item past the byte budget alone is a run of its own).
fn audit_chunks(items: &[(String, String)]) -> Vec<&[(String, String)]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (field, row)) in items.iter().enumerate() {
        let len = field.len() + row.len();
        if i > start && (i - start == ITEMS_PER_ENTRY || bytes + len > NAME_BYTES_PER_ENTRY) {
            chunks.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// Items of one scope in a request from which their crypto runs as
/// blocking work (about a millisecond and up): the runtime's other tasks
/// (small requests, the audit log's writer) move to another thread
/// meanwhile instead of waiting behind a large batch.
const BLOCKING_ITEMS: usize = 256;

/// `work()`, told to the runtime as blocking when `items` reach `threshold`
/// on a multi-threaded runtime (a current-thread runtime has no other
/// thread to hand its tasks to).
fn blocking_above<R>(threshold: usize, items: usize, work: impl FnOnce() -> R) -> R {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if items >= threshold && multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Text prefix of an app token.
pub const APP_TOKEN_PREFIX: &str = "atrapp_";

/// Reads of a scope before giving up on one from before a shred this
/// process already followed (on a shared database, a read that started
/// just before another replica's shred committed), and writes of a new
/// scope key before giving up on a bucket whose key a shred keeps
/// replacing.
const SCOPE_ATTEMPTS: usize = 3;

/// The records keyring and the bucket keys opened with it; absent, the
/// scoped API answers `scoped_disabled`.
pub(crate) struct ScopedKeys {
    records: Arc<SecretsKeyring>,
    /// Each bucket's key as last opened, with the wrapped form it came
    /// from: a scope costs one more unwrap only when its bucket's key is
    /// first used or has changed (a shred, on this replica or another).
    /// Unwrapped keys live in memory as `records.key` itself does.
    buckets: Mutex<HashMap<u8, OpenedBucket>>,
}

/// A bucket's key as opened, and the wrapped form it was opened from.
type OpenedBucket = (Vec<u8>, Arc<RecordsKey>);

impl ScopedKeys {
    pub fn new(records: Arc<SecretsKeyring>) -> Self {
        Self {
            records,
            buckets: Mutex::default(),
        }
    }

    /// The key of `bucket` as read: the one kept if the wrapped form is
    /// the same, else unwrapped with the records key of its epoch (the
    /// key file moved forward first if the database is past it, as a
    /// replica follows another's shred).
    fn bucket_key(&self, bucket: &StoredBucket) -> Result<Arc<RecordsKey>, StorageError> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((wrapped, key)) = buckets.get(&bucket.number)
            && *wrapped == bucket.wrapped
        {
            return Ok(key.clone());
        }
        let corrupt = |e: &dyn std::fmt::Display| {
            StorageError::Corrupt(format!("scope bucket {}: {e}", bucket.number))
        };
        let epoch = wrapped_epoch(&bucket.wrapped).map_err(|e| corrupt(&e))?;
        let raw = self
            .records
            .key_at(epoch)?
            .unwrap_bucket(bucket.number, &bucket.wrapped)
            .map_err(|e| corrupt(&e))?;
        let key = Arc::new(RecordsKey::new(SecretKey::from_bytes(*raw)));
        buckets.insert(bucket.number, (bucket.wrapped.clone(), key.clone()));
        Ok(key)
    }
}

/// Whether `error` is a read from before a shred this process followed
/// (read again), rather than a database restored from before one.
fn read_before_followed_shred(error: &StorageError) -> bool {
    matches!(
        error,
        StorageError::SecretsKey(SecretsKeyError::RestoredDatabase { .. })
    )
}

/// Why a scoped request was refused. Each has a stable [`code`](Self::code)
/// (docs/keyd-api.md); the library's refusals keep the library's codes.
#[derive(Debug, thiserror::Error)]
pub enum ScopedApiError {
    #[error(
        "scoped encryption is not configured on this authority (no records key); \
         run `atrest keyd serve` on a data directory made or migrated by this version"
    )]
    Disabled,
    #[error("unknown or removed app token (Authorization: Bearer atrapp_…)")]
    BadAppToken,
    #[error("app {app} may not use {what}; an operator can widen its policy (`atrest app add`)")]
    NotAllowed { app: String, what: String },
    #[error("no scope {0}; create it first (`atrest scope create`)")]
    UnknownScope(String),
    #[error("scope {0} was shredded: its data can never be decrypted again")]
    ScopeShredded(String),
    #[error("a scope {0} exists already (a shredded scope's id stays taken)")]
    ScopeExists(String),
    #[error("an app named {0} exists already; remove it first or pick another name")]
    AppExists(String),
    #[error("no app named {0}")]
    UnknownApp(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "app {app} has {limit} file streams open already, the most keyd serves one app at once; \
         retry when one has ended (an operator can raise max_file_streams_per_app in keyd.json)"
    )]
    TooManyStreams { app: String, limit: usize },
    /// A refusal of the envelope library, for item `index` of the batch.
    #[error("{}{error}", index.map(|i| format!("item {i}: ")).unwrap_or_default())]
    Library {
        index: Option<usize>,
        error: ScopedError,
    },
    #[error(transparent)]
    Authority(#[from] AuthorityError),
}

impl From<StorageError> for ScopedApiError {
    fn from(e: StorageError) -> Self {
        Self::Authority(e.into())
    }
}

impl From<atrest_audit::AppendError> for ScopedApiError {
    fn from(e: atrest_audit::AppendError) -> Self {
        Self::Authority(e.into())
    }
}

impl From<ScopedError> for ScopedApiError {
    fn from(error: ScopedError) -> Self {
        Self::Library { index: None, error }
    }
}

impl ScopedApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Disabled => "scoped_disabled",
            Self::BadAppToken => "bad_app_token",
            Self::NotAllowed { .. } => "not_allowed",
            Self::UnknownScope(_) => "unknown_scope",
            Self::ScopeShredded(_) => "scope_shredded",
            Self::ScopeExists(_) => "scope_exists",
            Self::AppExists(_) => "app_exists",
            Self::UnknownApp(_) => "unknown_app",
            Self::Invalid(_) => "invalid_request",
            Self::TooManyStreams { .. } => "too_many_streams",
            Self::Library { error, .. } => error.code(),
            Self::Authority(e) => e.code(),
        }
    }

    fn at(self, index: usize) -> Self {
        match self {
            Self::Library { error, .. } => Self::Library {
                index: Some(index),
                error,
            },
            other => other,
        }
    }
}

type Result<T, E = ScopedApiError> = std::result::Result<T, E>;

/// Which scopes and fields an app may use, and what it may do with them.
/// A pattern is an exact name or a prefix followed by `*` (`user:*`); a
/// field is `table.column` (`users.email`, `users.*`, or `*` for every
/// field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPolicy {
    pub scopes: Vec<String>,
    pub fields: Vec<String>,
    /// Whether the app may create scopes (a sign-up creates the user's).
    #[serde(default)]
    pub create_scopes: bool,
    /// What it may do: a sign-up form that only seals needs `encrypt` and
    /// `index`, and then cannot read back what it sealed. Absent (policies
    /// made before this existed): every operation.
    #[serde(default = "Operation::all")]
    pub operations: Vec<Operation>,
}

/// One kind of use of a scope, for [`AppPolicy::operations`]. A file's
/// sealing is `encrypt` and its opening `decrypt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Encrypt,
    Decrypt,
    Rewrap,
    Index,
    /// A new data key handed out in the clear beside its envelope.
    #[serde(rename = "datakey")]
    DataKey,
}

impl Operation {
    pub fn all() -> Vec<Self> {
        vec![
            Self::Encrypt,
            Self::Decrypt,
            Self::Rewrap,
            Self::Index,
            Self::DataKey,
        ]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Rewrap => "rewrap",
            Self::Index => "index",
            Self::DataKey => "datakey",
        }
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl AppPolicy {
    fn check(&self) -> Result<()> {
        if self.scopes.is_empty() || self.fields.is_empty() {
            return Err(ScopedApiError::Invalid(
                "an app's policy names at least one scope pattern and one field pattern".into(),
            ));
        }
        for pattern in self.scopes.iter().chain(&self.fields) {
            if pattern.is_empty()
                || pattern.len() > 255
                || pattern.chars().any(char::is_control)
                || pattern.strip_suffix('*').unwrap_or(pattern).contains('*')
            {
                return Err(ScopedApiError::Invalid(format!(
                    "bad pattern {pattern:?}: a name, or a prefix ending in one `*`"
                )));
            }
        }
        let mut operations = self.operations.clone();
        operations.sort();
        operations.dedup();
        if operations.is_empty() || operations.len() != self.operations.len() {
            return Err(ScopedApiError::Invalid(
                "an app's operations name each of encrypt, decrypt, rewrap, index, datakey at \
                 most once, and at least one"
                    .into(),
            ));
        }
        for field in &self.fields {
            if field != "*" && !field.contains('.') {
                return Err(ScopedApiError::Invalid(format!(
                    "bad field pattern {field:?}: table.column, table.* or *"
                )));
            }
        }
        Ok(())
    }

    pub fn allows_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|p| matches(p, scope))
    }

    pub fn allows_field(&self, table: &str, column: &str) -> bool {
        let field = format!("{table}.{column}");
        self.fields.iter().any(|p| matches(p, &field))
    }
}

/// An app whose token was checked.
#[derive(Clone, Debug)]
pub struct App {
    name: String,
    policy: AppPolicy,
}

impl App {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn actor(&self) -> String {
        format!("app:{}", self.name)
    }

    fn need_scope(&self, scope: &str) -> Result<()> {
        if self.policy.allows_scope(scope) {
            Ok(())
        } else {
            Err(ScopedApiError::NotAllowed {
                app: self.name.clone(),
                what: format!("scope {scope}"),
            })
        }
    }

    fn need_operation(&self, op: Use) -> Result<()> {
        let operation = match op {
            Use::Encrypt => Operation::Encrypt,
            Use::Decrypt => Operation::Decrypt,
            Use::Rewrap => Operation::Rewrap,
            Use::Index => Operation::Index,
            Use::DataKey => Operation::DataKey,
        };
        if self.policy.operations.contains(&operation) {
            Ok(())
        } else {
            Err(ScopedApiError::NotAllowed {
                app: self.name.clone(),
                what: format!("the operation {}", operation.as_str()),
            })
        }
    }

    /// What the policy says of `op` on `scope` for the fields `named`
    /// (`table.column`, row).
    fn may(&self, op: Use, scope: &str, named: &[(String, String)]) -> Result<()> {
        self.need_operation(op)?;
        self.need_scope(scope)?;
        for (field, _) in named {
            let (table, column) = field.split_once('.').unwrap_or((field, ""));
            self.need_field(table, column)?;
        }
        Ok(())
    }

    fn need_field(&self, table: &str, column: &str) -> Result<()> {
        if self.policy.allows_field(table, column) {
            Ok(())
        } else {
            Err(ScopedApiError::NotAllowed {
                app: self.name.clone(),
                what: format!("field {table}.{column}"),
            })
        }
    }
}

/// An app as an operator sees it (never its token).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    #[serde(flatten)]
    pub policy: AppPolicy,
    pub created_at: u64,
}

/// A new app and its token, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewApp {
    #[serde(flatten)]
    pub app: AppView,
    pub token: Zeroizing<String>,
}

/// A scope's daily window as an operator sets and sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowView {
    /// `HH:MM`, UTC.
    pub start: String,
    pub end: String,
    /// The fields it opens (`table.column`).
    pub fields: Vec<String>,
}

/// A scope as an operator sees it (never a key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScopeView {
    pub scope: String,
    pub client_share: bool,
    /// Key versions held, oldest first; empty once shredded.
    pub versions: Vec<u32>,
    pub minimum_version: u32,
    pub shredded: bool,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowView>,
}

/// A created scope, with the client's share when it takes one: hand it to
/// the client; the authority keeps no copy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedScope {
    #[serde(flatten)]
    pub scope: ScopeView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_share_secret: Option<Zeroizing<String>>,
}

fn window_of(stored: &StoredWindow) -> Result<(DailyWindow, Vec<String>), StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("window: {what}"));
    let start = TimeOfDay::from_minutes(stored.start).map_err(|_| corrupt("start"))?;
    let end = TimeOfDay::from_minutes(stored.end).map_err(|_| corrupt("end"))?;
    let window = DailyWindow::new(start, end).map_err(|_| corrupt("empty"))?;
    let fields = serde_json::from_str(&stored.fields).map_err(|_| corrupt("fields"))?;
    Ok((window, fields))
}

impl ScopeView {
    fn of(stored: &StoredScope) -> Result<Self, StorageError> {
        let window = stored
            .window
            .as_ref()
            .map(|w| {
                window_of(w).map(|(window, fields)| WindowView {
                    start: window.start().to_string(),
                    end: window.end().to_string(),
                    fields,
                })
            })
            .transpose()?;
        Ok(Self {
            scope: stored.id.clone(),
            client_share: stored.needs_client_share,
            versions: stored.keys.iter().map(|(v, _)| *v).collect(),
            minimum_version: stored.minimum_version,
            shredded: stored.shredded,
            created_at: stored.created_at,
            window,
        })
    }
}

/// One field of a batch: where it lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldItem {
    pub scope: String,
    pub table: String,
    pub column: String,
    pub row: String,
    /// `atrcs:…`, for a scope made with a client share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_share: Option<Zeroizing<String>>,
    /// Encrypt: the value (UTF-8 text). Decrypt, rewrap: the envelope
    /// (`atrf:…`).
    pub value: Zeroizing<String>,
}

/// One data key to make: the field its envelope is bound to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyItem {
    pub scope: String,
    pub table: String,
    pub column: String,
    pub row: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_share: Option<Zeroizing<String>>,
}

/// A data key made for an app: the key's text (`atrdk:…`) and its
/// envelope (`atrf:…`), whose decryption gives the key's text back.
#[derive(Debug, Serialize, Deserialize)]
pub struct DataKeyView {
    pub key: Zeroizing<String>,
    pub ciphertext: String,
}

/// One blind-index computation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexItem {
    pub scope: String,
    pub table: String,
    /// The index's name.
    pub index: String,
    pub columns: Vec<String>,
    pub bits: u16,
    #[serde(default)]
    pub normalize: Vec<String>,
    /// One value per column.
    pub values: Vec<Zeroizing<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_share: Option<Zeroizing<String>>,
}

/// The column a file (a stream) counts as in an app's policy, a window's
/// fields and the audit log: `uploads.#file` (`uploads.*` covers it too).
/// Field requests refuse a column of that name, so no field shares its
/// policy entry or its audit name with a table's files.
pub const FILE_COLUMN: &str = "#file";

/// A file to seal or open: its scope, and the table and object its stream
/// is bound to (part of every chunk's AAD, so a file copied to another
/// object does not open).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileItem {
    pub scope: String,
    pub table: String,
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_share: Option<Zeroizing<String>>,
}

/// What a file route does ([`Authority::admit_file_stream`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOperation {
    Encrypt,
    Decrypt,
}

fn file_key(item: &FileItem) -> (&str, Option<&str>) {
    (
        item.scope.as_str(),
        item.client_share.as_ref().map(|s| s.as_str()),
    )
}

/// The file streams each app has open, for
/// [`AuthorityOptions::max_file_streams_per_app`](crate::AuthorityOptions).
#[derive(Debug, Default)]
pub(crate) struct FileStreams {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl FileStreams {
    fn counts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        // Plain counts: a panic elsewhere leaves nothing half-done here.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(self: &std::sync::Arc<Self>, app: &str, limit: usize) -> Result<FileStreamPermit> {
        let mut counts = self.counts();
        let count = counts.entry(app.to_owned()).or_default();
        if *count >= limit {
            return Err(ScopedApiError::TooManyStreams {
                app: app.to_owned(),
                limit,
            });
        }
        *count += 1;
        Ok(FileStreamPermit {
            streams: self.clone(),
            app: app.to_owned(),
        })
    }
}

/// One open file stream of an app; its place is given back when this is
/// dropped (the stream ended, failed, or its client went away).
#[derive(Debug)]
pub struct FileStreamPermit {
    streams: std::sync::Arc<FileStreams>,
    app: String,
}

impl Drop for FileStreamPermit {
    fn drop(&mut self) {
        let mut counts = self.streams.counts();
        if let Some(count) = counts.get_mut(&self.app) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.app);
            }
        }
    }
}

fn file_field(item: &FileItem) -> Vec<(String, String)> {
    vec![(field_name(&item.table, FILE_COLUMN), item.object.clone())]
}

/// What an app does with fields ([`Authority::scoped_fields`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOperation {
    Encrypt,
    Decrypt,
    Rewrap,
}

/// What kind of use a request makes of a scope: what the window and the
/// audit log look at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Encrypt,
    Decrypt,
    Rewrap,
    Index,
    DataKey,
}

impl Use {
    fn as_str(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Rewrap => "rewrap",
            Self::Index => "index",
            Self::DataKey => "datakey",
        }
    }

    /// The outcome a use is audited with before it is answered: those that
    /// hand plaintext or key material to the app.
    fn audited_as(self) -> Option<&'static str> {
        match self {
            Self::Decrypt => Some("decrypted"),
            Self::DataKey => Some("issued"),
            Self::Encrypt | Self::Rewrap | Self::Index => None,
        }
    }
}

/// Who asks for what, from where: what every refusal and decryption
/// entry names.
struct Call<'a> {
    app: &'a App,
    op: Use,
    ctx: RequestContext,
}

/// A batch's items by (scope, share), with their indexes.
type Groups<'a, T> = BTreeMap<(&'a str, Option<&'a str>), Vec<(usize, &'a T)>>;

fn check_items<T>(items: &[T]) -> Result<()> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ScopedApiError::Invalid(format!(
            "{} items: a request carries 1 to {MAX_ITEMS}",
            items.len()
        )));
    }
    Ok(())
}

fn share_of(text: Option<&str>) -> Result<Option<ClientShare>> {
    text.map(ClientShare::from_text)
        .transpose()
        .map_err(Into::into)
}

fn scope_id(text: &str) -> Result<ScopeId> {
    Ok(ScopeId::new(text)?)
}

fn field_name(table: &str, column: &str) -> String {
    format!("{table}.{column}")
}

/// The audit details of a scoped use or refusal.
fn event(
    op: Use,
    outcome: &str,
    app: &str,
    share: bool,
    items: &[(String, String)],
    ctx: RequestContext,
) -> AuditEvent {
    AuditEvent::Scoped(crate::events::ScopedEvent {
        scoped: op.as_str().into(),
        outcome: outcome.into(),
        app: app.into(),
        client_share: share,
        items: items
            .iter()
            .map(|(field, row)| crate::events::ScopedItem {
                field: field.clone(),
                row: row.clone(),
            })
            .collect(),
        from: ctx.source_text(),
    })
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    fn scoped_keys(&self) -> Result<&ScopedKeys> {
        self.scoped().ok_or(ScopedApiError::Disabled)
    }

    /// The app whose token this is. An unknown token is audited (within
    /// the refusal budget) and refused.
    pub async fn app(&self, token: &str, ctx: RequestContext) -> Result<App> {
        self.scoped_keys()?;
        let hash = atrest_core::sha256(token.trim().as_bytes());
        let Some(stored) = self.storage().app_by_token(hash).await? else {
            self.refused_input("bad_app_token", ctx).await;
            return Err(ScopedApiError::BadAppToken);
        };
        let policy = serde_json::from_str(&stored.policy).map_err(|_| {
            StorageError::Corrupt(format!("app {}: policy is not JSON", stored.name))
        })?;
        Ok(App {
            name: stored.name,
            policy,
        })
    }

    /// Audits a refusal of an authenticated app (within its budget) and
    /// hands the refusal back.
    async fn deny(
        &self,
        call: &Call<'_>,
        scope: &str,
        items: &[(String, String)],
        error: ScopedApiError,
    ) -> ScopedApiError {
        let code = error.code();
        if !self.admit_authenticated_refusal(code) {
            return error;
        }
        // Every refused item is named, in as many entries as it takes: one
        // entry for a large batch would pass the log's size limit and name
        // nothing.
        let chunks = match audit_chunks(items) {
            chunks if chunks.is_empty() => vec![&items[..0]],
            chunks => chunks,
        };
        for chunk in chunks {
            let mut entry = NewEntry::new(EntryKind::Decision, call.app.actor())
                .details(event(call.op, code, &call.app.name, false, chunk, call.ctx).details());
            if !scope.is_empty() {
                entry = entry.subject(scope);
            }
            if let Err(e) = self.audit().append(entry).await {
                tracing::warn!(error = %e, code, "could not audit a scoped refusal");
            }
        }
        error
    }

    /// The keyring of a scope for this request: every version at or above
    /// the minimum, opened with the request's share.
    async fn keyring(
        &self,
        scope: &ScopeId,
        share: Option<&ClientShare>,
    ) -> Result<(Keyring, StoredScope)> {
        let keys = self.scoped_keys()?;
        let mut attempt = 0;
        let (stored, records) = loop {
            attempt += 1;
            let stored = self
                .storage()
                .scope(scope.as_str())
                .await?
                .ok_or_else(|| ScopedApiError::UnknownScope(scope.to_string()))?;
            if stored.shredded {
                return Err(ScopedApiError::ScopeShredded(scope.to_string()));
            }
            let bucket = stored.bucket.as_ref().ok_or_else(|| {
                StorageError::Corrupt(format!("scope {scope} has keys under no bucket"))
            })?;
            match keys.bucket_key(bucket) {
                Ok(records) => break (stored, records),
                Err(e) if read_before_followed_shred(&e) && attempt < SCOPE_ATTEMPTS => {}
                Err(e) => return Err(e.into()),
            }
        };
        let mut ring: Option<Keyring> = None;
        for (version, wrapped) in &stored.keys {
            if *version < stored.minimum_version {
                continue;
            }
            let wrapped = Wrapped::from_bytes(wrapped).map_err(|e| {
                StorageError::Corrupt(format!("scope {scope} version {version}: {e}"))
            })?;
            if wrapped.key_version().get() != *version {
                return Err(StorageError::Corrupt(format!(
                    "scope {scope}: key stored as version {version} is {}",
                    wrapped.key_version()
                ))
                .into());
            }
            let unwrapped = records.unwrap_scope(scope, &wrapped).map_err(|_| {
                StorageError::Corrupt(format!(
                    "scope {scope} version {version} does not open under its bucket's key"
                ))
            })?;
            let key = ScopeKey::open(&unwrapped, share)?;
            match &mut ring {
                None => ring = Some(Keyring::new(key)),
                Some(ring) => ring.insert(key)?,
            }
        }
        let mut ring = ring.ok_or_else(|| {
            StorageError::Corrupt(format!(
                "scope {scope} holds no key at or above its minimum"
            ))
        })?;
        if stored.minimum_version > 1 {
            ring.set_minimum(KeyVersion::new(stored.minimum_version)?)?;
        }
        Ok((ring, stored))
    }

    /// Checks the app's policy and the scope's window for `items` of one
    /// scope, opens the keyring, and runs `each` on every item; refusals
    /// are audited.
    async fn run_scope<T, R>(
        &self,
        call: &Call<'_>,
        scope: &str,
        share: Option<&str>,
        items: &[(usize, &T)],
        field: impl Fn(&T) -> Vec<(String, String)>,
        each: impl Fn(&Keyring, &T) -> Result<R, ScopedError>,
    ) -> Result<Vec<(usize, R)>> {
        let named: Vec<(String, String)> = items.iter().flat_map(|(_, item)| field(item)).collect();
        let app = call.app;
        let checked = async {
            app.may(call.op, scope, &named)?;
            let id = scope_id(scope)?;
            let share = share_of(share)?;
            let (ring, stored) = self.keyring(&id, share.as_ref()).await?;
            if call.op == Use::Decrypt
                && share.is_none()
                && let Some(window) = &stored.window
            {
                let (window, fields) = window_of(window)?;
                window.check(scope, self.now())?;
                if let Some((field, _)) = named.iter().find(|(f, _)| !fields.contains(f)) {
                    return Err(ScopedApiError::NotAllowed {
                        app: app.name.clone(),
                        what: format!("field {field} outside the window's fields"),
                    });
                }
            }
            let run = || {
                items
                    .iter()
                    .map(|(index, item)| {
                        each(&ring, item)
                            .map(|r| (*index, r))
                            .map_err(|e| ScopedApiError::from(e).at(*index))
                    })
                    .collect::<Result<Vec<_>>>()
            };
            blocking_above(BLOCKING_ITEMS, items.len(), run)
        }
        .await;
        match checked {
            Ok(out) => Ok(out),
            Err(e @ ScopedApiError::Authority(_)) => Err(e),
            Err(e) => Err(self.deny(call, scope, &named, e).await),
        }
    }

    /// Runs `each` over a batch grouped by (scope, share), and audits the
    /// uses that hand plaintext or keys out ([`Use::audited_as`]) before
    /// anything is answered.
    async fn run_batch<T, R>(
        &self,
        call: Call<'_>,
        items: &[T],
        key: impl Fn(&T) -> (&str, Option<&str>),
        field: impl Fn(&T) -> Vec<(String, String)> + Copy,
        each: impl Fn(&Keyring, &T) -> Result<R, ScopedError> + Copy,
    ) -> Result<Vec<R>> {
        check_items(items)?;
        let mut groups: Groups<'_, T> = BTreeMap::new();
        for (index, item) in items.iter().enumerate() {
            groups.entry(key(item)).or_default().push((index, item));
        }
        let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
        let mut audits = Vec::new();
        for ((scope, share), group) in &groups {
            let done = self
                .run_scope(&call, scope, *share, group, field, each)
                .await?;
            if let Some(outcome) = call.op.audited_as() {
                let named: Vec<(String, String)> =
                    group.iter().flat_map(|(_, i)| field(i)).collect();
                for chunk in audit_chunks(&named) {
                    audits.push(
                        NewEntry::new(EntryKind::Decision, call.app.actor())
                            .subject(*scope)
                            .details(
                                event(
                                    call.op,
                                    outcome,
                                    &call.app.name,
                                    share.is_some(),
                                    chunk,
                                    call.ctx,
                                )
                                .details(),
                            ),
                    );
                }
            }
            for (index, result) in done {
                results[index] = Some(result);
            }
        }
        // Fail closed: no plaintext leaves before its entries are durable.
        // The entries go to the log at once, so they share its batches.
        let receipts =
            futures::future::join_all(audits.into_iter().map(|entry| self.audit().append(entry)))
                .await;
        for receipt in receipts {
            receipt?;
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every item belongs to one group"))
            .collect())
    }

    /// Runs `operation` on every field of the batch: seal the value under
    /// its scope's current key version (encrypt); open the envelope,
    /// audited before it is answered (decrypt); or open and seal again
    /// under the current version inside the authority, so the plaintext
    /// never leaves it (rewrap; an envelope already current comes back as
    /// it was).
    pub async fn scoped_fields(
        &self,
        app: &App,
        operation: FieldOperation,
        items: &[FieldItem],
        ctx: RequestContext,
    ) -> Result<Vec<Zeroizing<String>>> {
        let op = match operation {
            FieldOperation::Encrypt => Use::Encrypt,
            FieldOperation::Decrypt => Use::Decrypt,
            FieldOperation::Rewrap => Use::Rewrap,
        };
        let call = Call { app, op, ctx };
        self.run_batch(call, items, item_key, item_field, move |ring, item| {
            if item.column.ends_with(FILE_COLUMN) {
                return Err(file_column_refused());
            }
            let field = FieldContext::new(&item.table, &item.column, &item.row)?;
            let value = match operation {
                FieldOperation::Encrypt => ring
                    .current()
                    .encrypt_field(&field, item.value.as_bytes())?,
                FieldOperation::Decrypt => {
                    // The plaintext's own buffer becomes the answer: no
                    // copy is left behind unzeroized.
                    let mut plain = ring.decrypt_field(&field, &item.value)?;
                    String::from_utf8(std::mem::take(&mut *plain)).map_err(|e| {
                        drop(Zeroizing::new(e.into_bytes()));
                        ScopedError::Malformed {
                            what: "field value",
                            why: "it is not UTF-8 text; binary values go through the \
                                  library's streams"
                                .into(),
                        }
                    })?
                }
                FieldOperation::Rewrap => ring.rewrap_field(&field, &item.value)?,
            };
            Ok(Zeroizing::new(value))
        })
        .await
    }

    /// Makes a data key per item under its scope's current key version
    /// ([`atrest_scoped::DataKey`]): its use is in the audit log before the
    /// keys are answered. Like an encryption, it looks at no window (a new
    /// key opens nothing already sealed); opening its envelope later is a
    /// decryption, window and all.
    pub async fn scoped_data_keys(
        &self,
        app: &App,
        items: &[DataKeyItem],
        ctx: RequestContext,
    ) -> Result<Vec<DataKeyView>> {
        let call = Call {
            app,
            op: Use::DataKey,
            ctx,
        };
        self.run_batch(call, items, data_key_key, data_key_field, |ring, item| {
            if item.column.ends_with(FILE_COLUMN) {
                return Err(file_column_refused());
            }
            let field = FieldContext::new(&item.table, &item.column, &item.row)?;
            let made = ring.current().data_key(&field)?;
            Ok(DataKeyView {
                key: made.key,
                ciphertext: made.envelope,
            })
        })
        .await
    }

    /// Admits a file stream of `app` before any of its body is read: the
    /// app's policy (the operation, the scope, the table's files), then a
    /// place among the app's open streams, held by the permit. A refusal
    /// is audited.
    pub async fn admit_file_stream(
        &self,
        app: &App,
        item: &FileItem,
        operation: FileOperation,
        ctx: RequestContext,
    ) -> Result<FileStreamPermit> {
        let op = match operation {
            FileOperation::Encrypt => Use::Encrypt,
            FileOperation::Decrypt => Use::Decrypt,
        };
        let named = file_field(item);
        let admitted = app.may(op, &item.scope, &named).and_then(|()| {
            self.file_streams()
                .admit(&app.name, self.options().max_file_streams_per_app)
        });
        match admitted {
            Ok(permit) => Ok(permit),
            Err(e) => {
                let call = Call { app, op, ctx };
                Err(self.deny(&call, &item.scope, &named, e).await)
            }
        }
    }

    /// A sealer for a new file of `item`'s scope under its current key,
    /// after the same checks as a field's encryption. What it has sealed
    /// so far is taken with [`StreamWriter::take_sealed`] (the header
    /// first); [`StreamWriter::finish`] seals the last chunk.
    pub async fn scoped_file_sealer(
        &self,
        app: &App,
        item: &FileItem,
        ctx: RequestContext,
    ) -> Result<StreamWriter<Vec<u8>>> {
        self.run_file(app, item, Use::Encrypt, ctx, |ring, stream| {
            StreamWriter::new(ring.current(), stream, None, Vec::new())
        })
        .await
    }

    /// An opener for the file of `item` whose stream starts with `header`,
    /// after the same checks as a field's decryption; the use is in the
    /// audit log before this returns, so before any plaintext is answered.
    pub async fn scoped_file_opener(
        &self,
        app: &App,
        item: &FileItem,
        header: &[u8; STREAM_HEADER_LEN],
        ctx: RequestContext,
    ) -> Result<StreamOpener> {
        self.run_file(app, item, Use::Decrypt, ctx, |ring, stream| {
            StreamOpener::new(ring, stream, header)
        })
        .await
    }

    /// One file as a batch of one: the checks, the audit of a decryption,
    /// then `each` with the scope's keyring and the file's stream context.
    async fn run_file<R>(
        &self,
        app: &App,
        item: &FileItem,
        op: Use,
        ctx: RequestContext,
        each: impl Fn(&Keyring, &StreamContext) -> Result<R, ScopedError> + Copy,
    ) -> Result<R> {
        let call = Call { app, op, ctx };
        let mut done = self
            .run_batch(
                call,
                std::slice::from_ref(item),
                file_key,
                file_field,
                move |ring, item| each(ring, &StreamContext::new(&item.table, &item.object)?),
            )
            .await?;
        Ok(done.pop().expect("one item, one result"))
    }

    /// Blind-index values (lowercase hex) under each scope's current key.
    pub async fn scoped_index(
        &self,
        app: &App,
        items: &[IndexItem],
        ctx: RequestContext,
    ) -> Result<Vec<String>> {
        // The policy is checked on every column the index covers.
        let field = |item: &IndexItem| {
            item.columns
                .iter()
                .map(|column| {
                    (
                        field_name(&item.table, column),
                        format!("index:{}", item.index),
                    )
                })
                .collect()
        };
        self.run_batch(
            Call {
                app,
                op: Use::Index,
                ctx,
            },
            items,
            index_key,
            field,
            |ring, item| {
                let definition = IndexDefinition {
                    table: Table::new(item.table.as_str())?,
                    name: Column::new(item.index.as_str())?,
                    columns: item
                        .columns
                        .iter()
                        .map(|c| Column::new(c.as_str()))
                        .collect::<Result<_, _>>()?,
                    bits: item.bits,
                    normalize: item
                        .normalize
                        .iter()
                        .map(|n| Normalize::from_name(n))
                        .collect::<Result<_, _>>()?,
                };
                let values: Vec<&str> = item.values.iter().map(|v| v.as_str()).collect();
                Ok(ring
                    .current()
                    .blind_index(&definition)?
                    .compute(&values)?
                    .to_hex())
            },
        )
        .await
    }

    /// Creates a scope; with `client_share`, the share is in the answer
    /// and nowhere else.
    pub async fn create_scope(
        &self,
        scope: &str,
        client_share: bool,
        actor: &str,
    ) -> Result<CreatedScope> {
        let keys = self.scoped_keys()?;
        let id = scope_id(scope)?;
        if self.storage().scope(scope).await?.is_some() {
            return Err(ScopedApiError::ScopeExists(scope.into()));
        }
        self.audit_change(EntryKind::PolicyChange, actor, scope, "scope_created")
            .await?;
        let number = random_bucket();
        for _ in 0..SCOPE_ATTEMPTS {
            let bucket = self.storage().scope_bucket(number).await?;
            let records = match keys.bucket_key(&bucket) {
                Ok(records) => records,
                Err(e) if read_before_followed_shred(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let (wrapped, share) = records.create_scope(&id, client_share);
            let stored = StoredScope {
                id: id.to_string(),
                needs_client_share: client_share,
                minimum_version: 1,
                shredded: false,
                created_at: self.now(),
                keys: vec![(wrapped.key_version().get(), wrapped.as_bytes().to_vec())],
                window: None,
                bucket: Some(bucket),
            };
            if self.storage().insert_scope(&stored).await? {
                return Ok(CreatedScope {
                    scope: ScopeView::of(&stored)?,
                    client_share_secret: share.map(|s| s.to_text()),
                });
            }
            if self.storage().scope(scope).await?.is_some() {
                return Err(ScopedApiError::ScopeExists(scope.into()));
            }
            // The bucket's key changed meanwhile (a shred): wrap again.
        }
        Err(bucket_busy(scope))
    }

    /// An app creates a scope its policy names, if it may create scopes.
    pub async fn app_create_scope(
        &self,
        app: &App,
        scope: &str,
        client_share: bool,
    ) -> Result<CreatedScope> {
        app.need_scope(scope)?;
        if !app.policy.create_scopes {
            return Err(ScopedApiError::NotAllowed {
                app: app.name.clone(),
                what: "creating scopes".into(),
            });
        }
        self.create_scope(scope, client_share, &app.actor()).await
    }

    pub async fn scope_view(&self, scope: &str) -> Result<ScopeView> {
        self.scoped_keys()?;
        let stored = self
            .storage()
            .scope(scope)
            .await?
            .ok_or_else(|| ScopedApiError::UnknownScope(scope.into()))?;
        Ok(ScopeView::of(&stored)?)
    }

    pub async fn scope_views(&self) -> Result<Vec<ScopeView>> {
        self.scoped_keys()?;
        let scopes = self.storage().scopes().await?;
        Ok(scopes.iter().map(ScopeView::of).collect::<Result<_, _>>()?)
    }

    /// The key a live scope's keys are wrapped under now (its bucket's):
    /// for tests that open what the API sealed with the library alone.
    #[cfg(any(test, feature = "test-hooks"))]
    pub async fn scope_wrapping_key(&self, scope: &str) -> Result<Arc<RecordsKey>> {
        let keys = self.scoped_keys()?;
        let stored = self.live_scope(scope).await?;
        let bucket = stored.bucket.ok_or_else(|| {
            StorageError::Corrupt(format!("scope {scope} has keys under no bucket"))
        })?;
        Ok(keys.bucket_key(&bucket)?)
    }

    async fn live_scope(&self, scope: &str) -> Result<StoredScope> {
        let stored = self
            .storage()
            .scope(scope)
            .await?
            .ok_or_else(|| ScopedApiError::UnknownScope(scope.into()))?;
        if stored.shredded {
            return Err(ScopedApiError::ScopeShredded(scope.into()));
        }
        Ok(stored)
    }

    async fn audit_change(
        &self,
        kind: EntryKind,
        actor: &str,
        subject: &str,
        change: &str,
    ) -> Result<()> {
        self.audit()
            .append(
                NewEntry::new(kind, actor).subject(subject).details(
                    AuditEvent::ScopedChange {
                        scoped_change: change.into(),
                    }
                    .details(),
                ),
            )
            .await?;
        Ok(())
    }

    /// Adds a key version that seals from now on; older versions still
    /// open (down to the minimum) until their data is rewrapped. The
    /// client share, if any, stays the same.
    pub async fn rotate_scope(&self, scope: &str, actor: &str) -> Result<ScopeView> {
        let keys = self.scoped_keys()?;
        let mut stored = self.live_scope(scope).await?;
        let id = scope_id(scope)?;
        let next = stored.keys.iter().map(|(v, _)| *v).max().unwrap_or(0) + 1;
        self.audit_change(
            EntryKind::Rotation,
            actor,
            scope,
            &format!("scope_rotated_to_{next}"),
        )
        .await?;
        let secret = atrest_scoped::ScopeSecret::random();
        for _ in 0..SCOPE_ATTEMPTS {
            let bucket = stored.bucket.as_ref().ok_or_else(|| {
                StorageError::Corrupt(format!("scope {scope} has keys under no bucket"))
            })?;
            let records = match keys.bucket_key(bucket) {
                Ok(records) => records,
                Err(e) if read_before_followed_shred(&e) => {
                    stored = self.live_scope(scope).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let wrapped = records.wrap_scope(
                &id,
                KeyVersion::new(next)?,
                stored.needs_client_share,
                &secret,
            );
            if self
                .storage()
                .add_scope_key(scope, next, wrapped.as_bytes(), bucket)
                .await?
            {
                return self.scope_view(scope).await;
            }
            stored = self.live_scope(scope).await?;
            if stored.keys.iter().any(|(v, _)| *v >= next) {
                return Err(ScopedApiError::Invalid(format!(
                    "scope {scope} changed meanwhile (rotated); look and retry"
                )));
            }
            // The bucket's key changed meanwhile (a shred): wrap again.
        }
        Err(bucket_busy(scope))
    }

    /// Refuses versions below `minimum` from now on (after a rewrap).
    pub async fn set_scope_minimum(
        &self,
        scope: &str,
        minimum: u32,
        actor: &str,
    ) -> Result<ScopeView> {
        self.scoped_keys()?;
        let stored = self.live_scope(scope).await?;
        let current = stored.keys.iter().map(|(v, _)| *v).max().unwrap_or(0);
        if minimum < stored.minimum_version || minimum > current {
            return Err(ScopedApiError::Invalid(format!(
                "minimum version {minimum} is outside {}..={current}: it only rises, and never \
                 above the current version",
                stored.minimum_version
            )));
        }
        self.audit_change(
            EntryKind::PolicyChange,
            actor,
            scope,
            &format!("scope_minimum_{minimum}"),
        )
        .await?;
        if !self.storage().set_scope_minimum(scope, minimum).await? {
            return Err(ScopedApiError::ScopeShredded(scope.into()));
        }
        self.scope_view(scope).await
    }

    /// Destroys every key of the scope: its data, and every copy of it,
    /// never decrypts again. Other scopes are untouched.
    pub async fn shred_scope(&self, scope: &str, actor: &str) -> Result<ScopeView> {
        self.scoped_keys()?;
        self.live_scope(scope).await?;
        self.audit_change(EntryKind::Shred, actor, scope, "scope_shredded")
            .await?;
        if !self.storage().shred_scope(scope).await? {
            return Err(ScopedApiError::ScopeShredded(scope.into()));
        }
        self.scope_view(scope).await
    }

    /// Sets (or with `None` clears) the scope's daily window.
    pub async fn set_scope_window(
        &self,
        scope: &str,
        window: Option<&WindowView>,
        actor: &str,
    ) -> Result<ScopeView> {
        self.scoped_keys()?;
        let stored_scope = self.live_scope(scope).await?;
        if stored_scope.needs_client_share && window.is_some() {
            return Err(ScopedApiError::Invalid(format!(
                "scope {scope} takes a client share, so nothing opens it without its owner's \
                 request; a window is for scopes made without one"
            )));
        }
        let stored = window
            .map(|w| {
                let daily = DailyWindow::new(w.start.parse()?, w.end.parse()?)?;
                if w.fields.is_empty() {
                    return Err(ScopedApiError::Invalid(
                        "a window names the fields it opens (table.column)".into(),
                    ));
                }
                for field in &w.fields {
                    let (table, column) = field.split_once('.').ok_or_else(|| {
                        ScopedApiError::Invalid(format!("bad field {field:?}: table.column"))
                    })?;
                    Table::new(table)?;
                    Column::new(column)?;
                }
                Ok(StoredWindow {
                    start: daily.start().minutes(),
                    end: daily.end().minutes(),
                    fields: serde_json::to_string(&w.fields).expect("strings serialize"),
                })
            })
            .transpose()?;
        let change = match window {
            Some(w) => format!("window {}-{} UTC {}", w.start, w.end, w.fields.join(",")),
            None => "window_cleared".into(),
        };
        self.audit_change(EntryKind::PolicyChange, actor, scope, &change)
            .await?;
        if !self
            .storage()
            .set_scope_window(scope, stored.as_ref())
            .await?
        {
            return Err(ScopedApiError::ScopeShredded(scope.into()));
        }
        self.scope_view(scope).await
    }

    /// Adds an app; its token is in the answer and stored only as a hash.
    pub async fn add_app(&self, name: &str, policy: AppPolicy, actor: &str) -> Result<NewApp> {
        self.scoped_keys()?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(ScopedApiError::Invalid(format!(
                "bad app name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ -"
            )));
        }
        policy.check()?;
        let token = Zeroizing::new(format!(
            "{APP_TOKEN_PREFIX}{}",
            atrest_remote::to_base64url(&atrest_core::random_array::<32>())
        ));
        let stored = StoredApp {
            name: name.into(),
            token_hash: atrest_core::sha256(token.as_bytes()),
            policy: serde_json::to_string(&policy).expect("policies serialize"),
            created_at: self.now(),
        };
        if self.storage().apps().await?.iter().any(|a| a.name == name) {
            return Err(ScopedApiError::AppExists(name.into()));
        }
        self.audit_change(EntryKind::Authority, actor, name, "app_added")
            .await?;
        if !self.storage().insert_app(&stored).await? {
            return Err(ScopedApiError::AppExists(name.into()));
        }
        Ok(NewApp {
            app: AppView {
                name: stored.name,
                policy,
                created_at: stored.created_at,
            },
            token,
        })
    }

    pub async fn apps(&self) -> Result<Vec<AppView>> {
        self.scoped_keys()?;
        self.storage()
            .apps()
            .await?
            .into_iter()
            .map(|a| {
                let policy = serde_json::from_str(&a.policy).map_err(|_| {
                    StorageError::Corrupt(format!("app {}: policy is not JSON", a.name))
                })?;
                Ok(AppView {
                    name: a.name,
                    policy,
                    created_at: a.created_at,
                })
            })
            .collect()
    }

    /// Removes an app: its token is refused from now on.
    pub async fn remove_app(&self, name: &str, actor: &str) -> Result<()> {
        self.scoped_keys()?;
        if !self.storage().apps().await?.iter().any(|a| a.name == name) {
            return Err(ScopedApiError::UnknownApp(name.into()));
        }
        self.audit_change(EntryKind::Revoke, actor, name, "app_removed")
            .await?;
        if !self.storage().delete_app(name).await? {
            return Err(ScopedApiError::UnknownApp(name.into()));
        }
        Ok(())
    }
}

/// A field request naming a table's files as its column (also `b.#file`:
/// table `a`, column `b.#file` would be named `a.b.#file`, as the files of
/// table `a.b` are).
/// A scope key could not be written: its bucket's key changed at every
/// attempt (shreds one after the other).
fn bucket_busy(scope: &str) -> ScopedApiError {
    ScopedApiError::Invalid(format!(
        "scope {scope}: shreds kept replacing its bucket's key meanwhile; retry"
    ))
}

fn file_column_refused() -> ScopedError {
    ScopedError::InvalidName {
        what: "column",
        why: format!("{FILE_COLUMN} stands for a table's files (/v1/scoped/file/…)"),
    }
}

fn data_key_key(item: &DataKeyItem) -> (&str, Option<&str>) {
    (
        item.scope.as_str(),
        item.client_share.as_ref().map(|s| s.as_str()),
    )
}

fn data_key_field(item: &DataKeyItem) -> Vec<(String, String)> {
    vec![(field_name(&item.table, &item.column), item.row.clone())]
}

fn item_key(item: &FieldItem) -> (&str, Option<&str>) {
    (
        item.scope.as_str(),
        item.client_share.as_ref().map(|s| s.as_str()),
    )
}

fn index_key(item: &IndexItem) -> (&str, Option<&str>) {
    (
        item.scope.as_str(),
        item.client_share.as_ref().map(|s| s.as_str()),
    )
}

fn item_field(item: &FieldItem) -> Vec<(String, String)> {
    vec![(field_name(&item.table, &item.column), item.row.clone())]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn items(n: usize, row_len: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| ("users.email".to_string(), format!("{i:0row_len$}")))
            .collect()
    }

    #[test]
    fn audit_chunks_bound_items_and_name_bytes_and_keep_every_item_once() {
        for (n, row_len) in [
            (0, 1),
            (1, 1),
            (64, 1),
            (65, 1),
            (1000, 8),
            (200, 255),
            (3, 20_000),
        ] {
            let all = items(n, row_len);
            let chunks = audit_chunks(&all);
            assert_eq!(chunks.concat(), all, "{n} items of {row_len}");
            for chunk in &chunks {
                assert!(!chunk.is_empty() && chunk.len() <= ITEMS_PER_ENTRY);
                let bytes: usize = chunk.iter().map(|(f, r)| f.len() + r.len()).sum();
                assert!(chunk.len() == 1 || bytes <= NAME_BYTES_PER_ENTRY, "{bytes}");
            }
        }
        // 200 rows of 255 bytes: the byte budget splits before 64 items.
        assert!(audit_chunks(&items(200, 255)).len() > 200 / ITEMS_PER_ENTRY + 1);
    }

    #[test]
    fn file_streams_are_counted_per_app_and_given_back() {
        let streams = std::sync::Arc::new(FileStreams::default());
        let first = streams.admit("a", 2).unwrap();
        let _second = streams.admit("a", 2).unwrap();
        let refused = streams.admit("a", 2).unwrap_err();
        assert_eq!(refused.code(), "too_many_streams");
        assert!(refused.to_string().contains("max_file_streams_per_app"));
        let _other_app = streams.admit("b", 2).unwrap();
        drop(first);
        let _third = streams.admit("a", 2).unwrap();
        assert!(streams.admit("a", 2).is_err());
        assert!(
            streams.admit("c", 0).is_err(),
            "a limit of 0 admits nothing"
        );
    }

    /// On a runtime with one worker, a task spawned by a large batch's
    /// task runs while the batch's work blocks: the worker was handed on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn large_work_hands_the_worker_on_while_it_blocks() {
        let batch = tokio::spawn(async {
            let (send, receive) = std::sync::mpsc::channel();
            tokio::spawn(async move { send.send(()).unwrap() });
            // Bounded so that a worker that was not handed on fails the
            // test instead of hanging it.
            blocking_above(BLOCKING_ITEMS, BLOCKING_ITEMS, || {
                receive.recv_timeout(std::time::Duration::from_secs(60))
            })
        });
        assert!(batch.await.unwrap().is_ok());
    }

    /// Small work, and any work on a current-thread runtime (which has
    /// no thread to hand its tasks to), runs in place.
    #[tokio::test]
    async fn work_runs_in_place_on_a_current_thread_runtime() {
        assert_eq!(blocking_above(1, 1000, || 7), 7);
        assert_eq!(blocking_above(BLOCKING_ITEMS, 1, || 8), 8);
    }

    #[test]
    fn a_pattern_ending_in_a_multibyte_character_is_checked_not_a_panic() {
        let policy = |scope: &str| AppPolicy {
            scopes: vec![scope.into()],
            fields: vec!["users.*".into()],
            create_scopes: false,
            operations: Operation::all(),
        };
        assert!(policy("é").check().is_ok());
        assert!(policy("user:é*").check().is_ok());
        assert!(policy("us*é").check().is_err());
    }

    #[test]
    fn operations_default_to_all_and_are_checked() {
        // A policy stored before operations existed allows every one.
        let old: AppPolicy =
            serde_json::from_str(r#"{"scopes":["user:*"],"fields":["*"],"create_scopes":true}"#)
                .unwrap();
        assert_eq!(old.operations, Operation::all());
        let with = |operations: Vec<Operation>| AppPolicy {
            operations,
            ..old.clone()
        };
        assert!(
            with(vec![Operation::Encrypt, Operation::Index])
                .check()
                .is_ok()
        );
        assert!(with(vec![]).check().is_err());
        assert!(
            with(vec![Operation::Decrypt, Operation::Decrypt])
                .check()
                .is_err()
        );
        let text = serde_json::to_string(&with(vec![Operation::Encrypt])).unwrap();
        assert!(text.contains(r#""operations":["encrypt"]"#), "{text}");
    }
}
