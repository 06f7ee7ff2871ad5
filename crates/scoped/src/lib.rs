//! Scoped encryption for applications (issue 12): each user's, company's or
//! group's records and files sealed under that scope's own key, openable
//! only while a request of that scope is served when the scope takes a
//! client share, searchable through blind indexes, and erasable by
//! destroying one wrapped key.
//!
//! This crate builds every envelope and nothing else: no storage, no
//! network. It names no algorithm itself; [`atrest_core`] does. The formats
//! are in docs/format.md §17 and the choices in decision 0014.
//!
//! ```
//! use atrest_scoped::{ClientShare, FieldContext, Keyring, RecordsKey, ScopeId, ScopeKey};
//! use atrest_core::SecretKey;
//!
//! let records = RecordsKey::from_master(&SecretKey::random());
//! let scope = ScopeId::new("user:42")?;
//! // Once, at sign-up: store `wrapped` (67 bytes); give `share` to the
//! // client (a cookie) and keep no copy.
//! let (wrapped, share) = records.create_scope(&scope, true);
//! let share_text = share.unwrap().to_text();
//! // Per request: unwrap, open with the client's share, seal and open
//! // fields bound to their row.
//! let unwrapped = records.unwrap_scope(&scope, &wrapped)?;
//! let share = ClientShare::from_text(&share_text)?;
//! let ring = Keyring::new(ScopeKey::open(&unwrapped, Some(&share))?);
//! let ctx = FieldContext::new("users", "email", "3f2a9c")?;
//! let text = ring.current().encrypt_field(&ctx, b"alice@example.org")?;
//! assert_eq!(&ring.decrypt_field(&ctx, &text)?[..], b"alice@example.org");
//! // Without the share, the scope does not open.
//! assert_eq!(ScopeKey::open(&unwrapped, None).unwrap_err().code(), "client_share_required");
//! # Ok::<(), atrest_scoped::ScopedError>(())
//! ```

mod encoding;
mod error;
mod field;
mod index;
mod keys;
mod name;
mod stream;
mod window;
mod wrap;

pub use error::{Result, ScopedError};
pub use field::{
    DATA_KEY_PREFIX, DataKey, FIELD_OVERHEAD, FIELD_PREFIX, FIELD_VERSION, MAX_FIELD_LEN,
    field_key_version,
};
pub use index::{BlindIndex, IndexDefinition, IndexValue, MAX_INDEX_COLUMNS, Normalize};
pub use keys::{CLIENT_SHARE_PREFIX, ClientShare, Keyring, ScopeKey, ScopeSecret, UnwrappedScope};
pub use name::{Column, FieldContext, KeyVersion, MAX_NAME_LEN, RowId, ScopeId, Table};
pub use stream::{
    CHUNK_OVERHEAD, DEFAULT_CHUNK_LOG2, STREAM_HEADER_LEN, STREAM_VERSION, StreamContext,
    StreamOpener, StreamReader, StreamWriter,
};
pub use window::{DailyWindow, TimeOfDay};
pub use wrap::{RecordsKey, WRAP_PREFIX, WRAPPED_LEN, Wrapped};
