//! The atrest key authority (`atrest keyd`), as a library: the rules of
//! enrollment and unlock with no HTTP ([`Authority`] over a [`Storage`]
//! and an [`atrest_audit::AuditLog`]), and an axum [`router`] on top.
//!
//! - [`Authority::create_token`] / [`Authority::enroll`]: one-time tokens
//!   with a group and an expiry; a host enrolls with its Ed25519 key and
//!   gets its own exchange key `S`.
//! - [`Authority::unlock`]: checks the host's signature and clock, refuses
//!   replays, revoked and shredded hosts, applies the policy, and releases
//!   the blinded answer only once its audit entry is durable.
//! - [`Authority::revoke`] / [`Authority::shred`].
//! - [`ServerCertificates`] / [`serve_tls`]: a CA and server certificate
//!   made at init (hosts pin the CA's [`fingerprint`]), served with rustls.
//! - [`SqliteStorage`]: the embedded [`Storage`] (WAL, `synchronous=FULL`).
//!
//! Time comes from an injected [`Clock`] (`atrest_audit`'s), so tests
//! control it.

mod authority;
mod http;
mod storage;
mod tls;

pub use atrest_audit::{Clock, SystemClock};
pub use authority::{
    Authority, AuthorityError, AuthorityOptions, Enrollment, Grant, Token, UnlockOutcome,
};
pub use http::{ApiError, EnrollBody, ErrorBody, MAX_BODY, UnlockReply, router, serve};
pub use storage::{
    HostRecord, HostState, Policy, PolicyScope, SqliteStorage, Storage, StorageError,
};
pub use tls::{
    HANDSHAKE_TIMEOUT, ServerCertificates, TlsError, TlsListener, fingerprint, serve_tls,
};
