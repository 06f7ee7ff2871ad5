//! The key authority's `/v1` host API as types: what a host sends, what
//! `atrest keyd` answers, and the stable error codes (docs/keyd-api.md,
//! docs/openapi.json). One home for both sides, so the server and the host
//! cannot drift apart (they once did: the audit key was a string on one
//! side and a key on the other).
//!
//! - [`UnlockReply`]: `POST /v1/unlock` and `GET /v1/requests/{id}`:
//!   granted (200) or held for an approver (202, with the poll token only
//!   the requester has). A grant's audit proof comes in version 1
//!   ([`AuditProof`]) or, when the host asks for it
//!   ([`GRANT_VERSION_HEADER`]), the compact version 2 ([`GrantProof`]);
//!   [`read_grant_proof`] reads either.
//! - [`Enrollment`]: `POST /v1/enroll` and `POST /v1/bind`.
//! - [`GenerationReply`]: `POST /v1/generation`, the generation a format 2
//!   vault's authority now witnesses ([`WitnessedGeneration`]).
//! - [`ErrorBody`] and [`ErrorCode`]: every refusal.
//!
//! ```
//! use atrest_wire::{ErrorBody, ErrorCode};
//! let body: ErrorBody = serde_json::from_str(r#"{"error":"revoked","message":"..."}"#).unwrap();
//! assert_eq!(body.code(), ErrorCode::Revoked);
//! assert!(body.code().is_final());
//! ```

#![forbid(unsafe_code)]

mod error;
mod grant;
mod host;

pub use error::{ErrorBody, ErrorCode};
pub use grant::{
    ConsistencyPath, GRANT_VERSION, GRANT_VERSION_HEADER, GrantFormatError, GrantProof, HashPath,
    MAX_PATH_HASHES, SharedTreeHead, answer_version, grant_proof_fields, read_grant_proof,
};
pub use host::{
    AuditProof, EnrollRequest, Enrollment, GenerationReply, Info, KNOWN_TREE_SIZE_HEADER,
    POLL_TOKEN_HEADER, Rebind, RebootReply, UnlockReply, WitnessedGeneration,
};
