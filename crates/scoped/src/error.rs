//! One error type, with a stable code for each kind so that an HTTP API or
//! an application can branch on it without parsing the message.

/// Why an operation was refused. Authentication failures carry no detail on
/// purpose: whether the key, the context or the bytes were wrong must not be
/// observable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopedError {
    /// The text or bytes are not an envelope of this kind at all.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// An envelope of a version this build does not read.
    #[error("unsupported {what} version {version}; upgrade atrest to read it")]
    UnknownVersion { what: &'static str, version: u32 },
    /// The algorithm byte names no algorithm this build knows.
    #[error("unknown algorithm id {0}")]
    UnknownAlgorithm(u8),
    /// Sealed under a key version this keyring does not hold.
    #[error("key version {version} of scope {scope:?} is not available (shredded, or not loaded)")]
    UnknownKeyVersion { scope: String, version: u32 },
    /// Sealed under a key version older than the scope's minimum.
    #[error(
        "key version {version} of scope {scope:?} is below the minimum decryption version {minimum}; \
         rewrap the data under the current version"
    )]
    KeyVersionRetired {
        scope: String,
        version: u32,
        minimum: u32,
    },
    /// Wrong key, wrong context (row, column, table, scope), or tampered.
    #[error("authentication failed: wrong key or context, or the data was changed")]
    Authentication,
    /// The scope was created with a client share and none was given.
    #[error("scope {0:?} needs the client's share; the request did not carry it")]
    ClientShareRequired(String),
    /// A share was given for a scope created without one.
    #[error("scope {0:?} takes no client share")]
    ClientShareUnexpected(String),
    /// A stream ends before its final chunk: it was cut.
    #[error("encrypted stream is truncated: its final chunk is missing")]
    Truncated,
    /// A name (scope, table, column, row, index) breaks the rules.
    #[error("invalid {what}: {why}")]
    InvalidName { what: &'static str, why: String },
    /// Input larger than this envelope takes.
    #[error("{what} too large: {len} bytes (at most {max})")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// Index definition or normalisation that cannot work.
    #[error("invalid index: {0}")]
    InvalidIndex(String),
    /// The scope's data may be opened only inside its daily window.
    #[error("scope {scope:?} may be decrypted only inside its window {window}")]
    OutsideWindow { scope: String, window: String },
    /// A window that cannot be: a bad time, or start equal to end.
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    /// Reading or writing a stream failed.
    #[error("i/o error: {0}")]
    Io(String),
}

impl ScopedError {
    /// A stable, machine-readable code, the same in every release.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::UnknownAlgorithm(_) => "unknown_algorithm",
            Self::UnknownKeyVersion { .. } => "unknown_key_version",
            Self::KeyVersionRetired { .. } => "key_version_retired",
            Self::Authentication => "authentication_failed",
            Self::ClientShareRequired(_) => "client_share_required",
            Self::ClientShareUnexpected(_) => "client_share_unexpected",
            Self::Truncated => "truncated",
            Self::InvalidName { .. } => "invalid_name",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidIndex(_) => "invalid_index",
            Self::OutsideWindow { .. } => "outside_window",
            Self::InvalidWindow(_) => "invalid_window",
            Self::Io(_) => "io",
        }
    }

    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            why: why.into(),
        }
    }
}

impl From<atrest_core::AuthError> for ScopedError {
    fn from(_: atrest_core::AuthError) -> Self {
        Self::Authentication
    }
}

impl From<std::io::Error> for ScopedError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

pub type Result<T, E = ScopedError> = std::result::Result<T, E>;
