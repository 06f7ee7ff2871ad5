//! The atrest key authority (`atrest keyd`), as a library: the rules of
//! enrollment and unlock with no HTTP ([`Authority`] over a [`Storage`]
//! and an [`atrest_audit::AuditLog`]), an axum [`router`] on top, and the
//! data directory a running keyd keeps ([`DataDir`]).
//!
//! - [`Authority::create_token`] / [`Authority::enroll`]: one-time tokens
//!   with a group and an expiry; a host enrolls with its Ed25519 key and
//!   gets its own exchange key `S`.
//! - [`Authority::unlock`]: checks the host's signature and clock, refuses
//!   replays, revoked and shredded hosts, applies the policy (auto,
//!   approve, deny; an unannounced reboot can escalate), and releases the
//!   blinded answer only once its audit entry is durable.
//! - Held requests: [`Authority::pending`], [`Authority::decide`],
//!   [`Authority::poll`], expiry; approvers with TOTP codes.
//! - [`Authority::report_generation`]: the witness of each format 2
//!   vault's latest generation; an unlock whose claim is older than it (or
//!   forked from it) is judged by the policy's `rollback` rule.
//! - [`Authority::announce_reboot`], [`Authority::rotate`],
//!   [`Authority::revoke`], [`Authority::shred`].
//! - Scoped encryption for applications (issue 12): [`Authority::app`]
//!   checks an app's token, [`Authority::scoped_fields`] and
//!   [`Authority::scoped_index`] serve its batches under its
//!   [`AppPolicy`], audited; scopes and apps are managed with
//!   [`Authority::create_scope`], [`Authority::rotate_scope`],
//!   [`Authority::shred_scope`], [`Authority::set_scope_window`] and
//!   [`Authority::add_app`]. Scope keys are wrapped under bucket keys,
//!   those under `records.key`, which each scope shred ratchets forward
//!   (decision 0020).
//! - [`ServerCertificates`] / [`serve_tls`]: a CA and server certificate
//!   made at init (hosts pin the CA's [`fingerprint`]), served with rustls.
//! - [`Database`]: where the state and the audit log are (`--database`):
//!   [`SqliteStorage`], the embedded [`Storage`] (WAL, `synchronous=FULL`),
//!   or [`PgStorage`] on PostgreSQL, which several replicas share.
//!
//! Time comes from an injected [`Clock`] (`atrest_audit`'s), so tests
//! control it.

mod approval;
mod approvers;
mod authority;
mod client;
mod datadir;
mod enroll;
mod error;
mod events;
mod held;
mod http;
mod metrics;
mod operator;
mod policy;
mod scoped;
mod scoped_routes;
pub mod secrets_key;
mod socket;
mod state;
mod status;
mod storage;
#[cfg(any(test, feature = "test-hooks"))]
pub mod testing;
mod tls;
mod unlock;
mod web;
mod webhook;
mod witness;

pub use approvers::{
    FAILURE_WINDOW, MAX_FAILURES, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_UNTRUSTED, NewApprover,
    TRUSTED_FOR, totp_code,
};
pub use atrest_audit::{Clock, SystemClock};
pub use atrest_wire::{ErrorCode, POLL_TOKEN_HEADER};
pub use authority::{
    Authority, AuthorityError, AuthorityOptions, DEFAULT_FILE_STREAMS_PER_APP, Enrollment, Grant,
    HostView, MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME, PendingNotifier, Rebind, RequestContext,
    Token, UnlockOutcome,
};
pub use client::{AdminClient, ClientError};
pub use datadir::{
    DataDir, DataDirError, InitOptions, Initialized, KeydAuthority, SETTINGS_VERSION, Settings,
    serve as serve_data_dir,
};
pub use held::{PendingState, PendingView, PollToken};
#[cfg(feature = "test-hooks")]
pub use http::serve;
pub use http::{
    ApiError, AppState, ApproverBody, BODY_TIMEOUT, DecideBody, EnrollBody, ErrorBody,
    GRANT_VERSION_HEADER, MAX_BODY, MAX_WAIT, PolicyBody, PolicyView, RebootReply, TokenBody,
    UnlockReply, router,
};
pub use metrics::{Metrics, Snapshot};
pub use scoped::{
    APP_TOKEN_PREFIX, App, AppPolicy, AppView, CreatedScope, FILE_COLUMN, FieldItem,
    FieldOperation, FileItem, FileOperation, FileStreamPermit, IndexItem, MAX_ITEMS, NewApp,
    Operation, ScopeView, ScopedApiError, WindowView,
};
pub use scoped_routes::{
    AppBody, Batch, MAX_SCOPED_BODY, MinimumBody, Removed, ScopeBody, ScopeName, Values, WindowBody,
};
pub use socket::{ADMIN_SOCKET, AdminSocket};
pub use status::{DatabaseStatus, database_status};
pub use storage::{
    BootState, Cached, CachedHeld, Database, DatabaseError, Held, HostRecord, HostState,
    KeydAuditStore, KeydHeld, KeydStorage, PG_SCHEMA_VERSION, PgHeld, PgStorage, Policy,
    PolicyRule, PolicyScope, ReleaseHold, SCHEMA_VERSION, SqliteHeld, SqliteStorage, Storage,
    StorageError,
};
pub use tls::{
    CA_FILE, CERT_FILE, Connection, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, KEY_FILE, MAX_CONNECTIONS,
    Peer, ServerCertificates, TlsError, TlsListener, fingerprint, serve_tls, serve_tls_until,
};
pub use web::SESSION_LIFETIME;
pub use webhook::{WebhookError, webhook_notifier};
