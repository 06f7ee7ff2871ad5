//! Why the authority refuses: one error type with a stable code for each
//! refusal (docs/keyd-api.md).

use atrest_remote::{HostId, KeyId, RequestError};
use atrest_wire::ErrorCode;

use crate::storage::StorageError;

/// Why the authority refused. Each has a stable [`code`](Self::code).
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("the enrollment token is unknown, already used or expired; ask for a new one")]
    BadToken,
    #[error("{0}")]
    InvalidField(#[from] atrest_remote::InvalidField),
    #[error("{0}")]
    BadPublicKey(#[from] atrest_remote::PublicKeyError),
    #[error("no host {0} is enrolled here; enroll it first")]
    UnknownHost(HostId),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("this request's nonce was already used: a replay is refused")]
    ReplayedNonce,
    #[error("host {0} is revoked; an operator can reinstate it")]
    Revoked(HostId),
    #[error("host {0} was shredded: its keyslots can never open again")]
    Shredded(HostId),
    #[error("the request names key {0}, which is not this host's exchange key; re-enroll")]
    UnknownKey(KeyId),
    #[error("host {host} is denied: {reason}")]
    Denied { host: HostId, reason: String },
    #[error("the request waited for an approver until it expired; ask again")]
    Expired,
    #[error("no held request {0}: it was never made, or was decided or expired long ago")]
    UnknownRequest(String),
    #[error(
        "this poll does not carry the poll token the held request's answer gave: only the \
         process that made the request can collect its answer"
    )]
    BadPollToken,
    #[error(
        "host {host} already has {waiting} requests waiting for an approver; retry later \
         (an approver can deny the ones that are not this host's: `atrest keyd requests`)"
    )]
    TooManyPending { host: HostId, waiting: usize },
    #[error("request {id} is already {state}")]
    AlreadyDecided { id: String, state: &'static str },
    #[error("unknown approver or wrong or reused TOTP code")]
    BadApproverCode,
    #[error(
        "host {0}: only the boot the authority last released to can announce its end, with its \
         boot ticket; this notice has neither (a copy of the host's disk?)"
    )]
    UnprovenBoot(HostId),
    #[error("a host named {0} is already enrolled; pick another name")]
    HostExists(HostId),
    #[error(
        "host {host} still has keyslots bound to its previous key {previous}: it re-binds at its \
         next unlock; rotate again after that (`atrest keyd host show {host}`)"
    )]
    RebindPending { host: HostId, previous: KeyId },
    #[error("the audit log cannot record this, so nothing is released: {0}")]
    Audit(#[from] atrest_audit::AppendError),
    #[error(transparent)]
    Storage(StorageError),
    #[error("the host's exchange secret is unusable: {0}")]
    Exchange(#[from] atrest_remote::ExchangeError),
    #[error(
        "host {host} reported vault {vault} at sequence {reported}, older than the generation \
         this authority witnessed (sequence {witnessed}): an earlier copy of the vault is in \
         use; its next unlock is judged by the policy's rollback rule"
    )]
    GenerationRegressed {
        host: HostId,
        vault: String,
        reported: u64,
        witnessed: u64,
    },
    #[error(
        "host {host} reported vault {vault} at sequence {reported}, which does not descend from \
         the generation this authority witnessed (sequence {witnessed}): another copy of the \
         vault was written; its next unlock is judged by the policy's rollback rule"
    )]
    GenerationForked {
        host: HostId,
        vault: String,
        reported: u64,
        witnessed: u64,
    },
}

impl From<StorageError> for AuthorityError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::HostExists(id) => Self::HostExists(id),
            other => Self::Storage(other),
        }
    }
}

impl AuthorityError {
    /// The stable code of this refusal (docs/keyd-api.md).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::BadToken => ErrorCode::BadToken,
            Self::InvalidField(_) => ErrorCode::InvalidField,
            Self::BadPublicKey(_) => ErrorCode::BadPublicKey,
            Self::UnknownHost(_) => ErrorCode::UnknownHost,
            Self::Request(RequestError::BadSignature) => ErrorCode::BadSignature,
            Self::Request(RequestError::Stale { .. }) => ErrorCode::StaleRequest,
            Self::Request(RequestError::FromTheFuture { .. }) => ErrorCode::FutureRequest,
            Self::ReplayedNonce => ErrorCode::ReplayedNonce,
            Self::Revoked(_) => ErrorCode::Revoked,
            Self::Shredded(_) => ErrorCode::Shredded,
            Self::UnknownKey(_) => ErrorCode::UnknownKey,
            Self::Denied { .. } => ErrorCode::Denied,
            Self::Expired => ErrorCode::Expired,
            Self::UnknownRequest(_) => ErrorCode::UnknownRequest,
            Self::BadPollToken => ErrorCode::BadPollToken,
            Self::TooManyPending { .. } => ErrorCode::TooManyPending,
            Self::AlreadyDecided { .. } => ErrorCode::AlreadyDecided,
            Self::BadApproverCode => ErrorCode::BadCode,
            Self::UnprovenBoot(_) => ErrorCode::UnprovenBoot,
            Self::HostExists(_) => ErrorCode::HostExists,
            Self::RebindPending { .. } => ErrorCode::RebindPending,
            Self::Audit(_) => ErrorCode::AuditUnavailable,
            Self::Storage(e) if e.is_unavailable() => ErrorCode::DatabaseUnavailable,
            Self::Storage(_) => ErrorCode::StorageError,
            Self::Exchange(_) => ErrorCode::InternalError,
            Self::GenerationRegressed { .. } => ErrorCode::GenerationRegressed,
            Self::GenerationForked { .. } => ErrorCode::GenerationForked,
        }
    }

    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}
