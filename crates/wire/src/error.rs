//! The error body every refusal carries, and its stable codes.

use serde::{Deserialize, Serialize};

/// `{"error": code, "message": text}`: the code is for programs, the
/// message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The code, or [`ErrorCode::Unknown`] for one a newer authority added.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::parse(&self.error)
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// Stable error codes. Their text never changes; new ones are added.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code this build does not know (a newer authority).
            Unknown,
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown => "unknown",
                }
            }

            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    _ => Self::Unknown,
                }
            }
        }
    };
}

codes! {
    /// The enrollment token is unknown, used or expired.
    BadToken = "bad_token",
    InvalidField = "invalid_field",
    BadPublicKey = "bad_public_key",
    UnknownHost = "unknown_host",
    BadSignature = "bad_signature",
    StaleRequest = "stale_request",
    FutureRequest = "future_request",
    ReplayedNonce = "replayed_nonce",
    Revoked = "revoked",
    Shredded = "shredded",
    UnknownKey = "unknown_key",
    Denied = "denied",
    Expired = "expired",
    UnknownRequest = "unknown_request",
    /// A poll of a held request without the poll token its requester got.
    BadPollToken = "bad_poll_token",
    /// The host already has as many requests waiting for an approver as
    /// it may: retry later (429).
    TooManyPending = "too_many_pending",
    AlreadyDecided = "already_decided",
    BadCode = "bad_code",
    UnprovenBoot = "unproven_boot",
    HostExists = "host_exists",
    RebindPending = "rebind_pending",
    AuditUnavailable = "audit_unavailable",
    /// The authority's database is unreachable or read-only: nothing is
    /// released until it is back (503; ask again, or another replica).
    DatabaseUnavailable = "database_unavailable",
    StorageError = "storage_error",
    InternalError = "internal_error",
    MalformedRequest = "malformed_request",
    BodyTooLarge = "body_too_large",
    RequestTimeout = "request_timeout",
    Unauthorized = "unauthorized",
    NotFound = "not_found",
    /// A generation report older than the one the authority witnessed
    /// for that vault (409): the vault was put back to an earlier copy.
    GenerationRegressed = "generation_regressed",
    /// A generation report whose lineage lacks the witnessed generation
    /// (409): another copy of the vault was written meanwhile.
    GenerationForked = "generation_forked",
}

impl ErrorCode {
    /// The authority refused for good: asking again cannot help (a host's
    /// unit stops retrying on these).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Denied | Self::Revoked | Self::Shredded | Self::Expired
        )
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert_eq!(ErrorCode::parse(code.as_str()), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(ErrorCode::parse("made_up_later"), ErrorCode::Unknown);
    }
}
