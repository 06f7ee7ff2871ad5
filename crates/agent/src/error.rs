use std::path::PathBuf;

/// Why a host-side operation failed. Each message names the authority (its
/// URL) when one is involved, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others (mode {mode:03o}); the host identity must be \
         private: `chmod 600 {path}` (and check who could have copied it)"
    )]
    InsecureIdentity { path: PathBuf, mode: u32 },
    #[error("{path} is not a host identity (expected 32 bytes): {reason}")]
    BadIdentity { path: PathBuf, reason: String },
    #[error(
        "no host identity in {0}; this host was never enrolled (`atrest enroll`), or \
         ATREST_STATE_DIR points elsewhere"
    )]
    NoIdentity(PathBuf),
    #[error("cannot read the boot id: {0}")]
    BootId(String),
    #[error("invalid CA fingerprint {0:?}: expected SHA256: and 64 hex digits")]
    BadFingerprint(String),
    #[error("invalid authority URL {0:?}: expected https://HOST[:PORT]")]
    BadUrl(String),
    #[error("the vault has no remote or threshold keyslot; enroll it first (`atrest enroll`)")]
    NoRemoteSlot,
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot reach the key authority at {url} after {attempts} attempt(s): {reason}; \
         check that it is running and reachable, then retry (--retries, --timeout)"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error(
        "the key authority at {url} presented a certificate that does not chain to the pinned \
         CA (fingerprint {pin}): {reason}; refusing to talk to it"
    )]
    UntrustedServer {
        url: String,
        pin: String,
        reason: String,
    },
    #[error(
        "the unlock request to {url} is still waiting for approval ({reason}) after {waited_secs} s; \
         ask an approver (`atrest keyd approve`) and retry, or raise --timeout"
    )]
    StillPending {
        url: String,
        reason: String,
        waited_secs: u64,
    },
    #[error("the key authority at {url} denied the unlock: {message}")]
    Denied { url: String, message: String },
    #[error(
        "the unlock request to {url} expired before anyone approved it: {message}; retry and \
         ask an approver in time"
    )]
    Expired { url: String, message: String },
    #[error("this host is revoked at the key authority {url}: {message}")]
    Revoked { url: String, message: String },
    #[error(
        "this host was shredded at the key authority {url}: its keyslot can never open again \
         ({message}); use another keyslot (passphrase, recovery key)"
    )]
    Shredded { url: String, message: String },
    #[error("the key authority at {url} refused ({code}): {message}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the key authority at {url} sent an answer this atrest does not understand: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error(
        "AUDIT ROLLBACK at {url}: this host already saw a checkpoint at entry {kept}, but the \
         authority now answers at entry {got}; its audit log was rolled back or forked. \
         Refusing to unlock; investigate the authority"
    )]
    AuditRollback { url: String, kept: u64, got: u64 },
    #[error(
        "AUDIT LOG ALARM for the key authority at {url}: {reason}. This host refuses to unlock \
         through that log until an operator has investigated the authority and acknowledged the \
         alarm (`atrest alarm acknowledge {audit_key}`); the evidence is in {path}"
    )]
    AuditAlarm {
        url: String,
        reason: String,
        path: PathBuf,
        audit_key: String,
    },
    #[error(
        "the key authority at {url} sent an audit proof that does not check out ({reason}); \
         refusing to unlock. Check that the URL and CA fingerprint are the authority's"
    )]
    BadAuditProof { url: String, reason: String },
    #[error(
        "the key authority at {url} sent an audit checkpoint that its audit key (pinned in the \
         keyslot) did not sign; refusing to unlock"
    )]
    BadCheckpoint { url: String },
    #[error(
        "the key authority at {url} answered, but its answer does not open this keyslot: the \
         authority lost or replaced this host's secret, or the keyslot was changed"
    )]
    WrongAnswer { url: String },
    #[error("only {got} of the {needed} authorities this keyslot needs answered:\n  {}", errors.join("\n  "))]
    NotEnough {
        needed: usize,
        got: usize,
        errors: Vec<String>,
    },
    #[error(
        "nothing announced to {url}: this boot has not unlocked a vault through it, so it holds \
         no boot ticket, and only the boot the authority released to can announce its end. The \
         next boot will count as unannounced (its policy may hold it for an approver); to avoid \
         that, unlock once now (`atrest unlock VAULT`), then run `atrest reboot --planned` again"
    )]
    NoBootTicket { url: String },
    #[error(transparent)]
    Vault(#[from] atrest_vault::VaultError),
}

impl AgentError {
    /// The authority's audit log did not check out (rolled back, forked,
    /// a bad proof or checkpoint): the unlock stops at once, whatever other
    /// keyslots or authorities could answer.
    pub fn is_audit_failure(&self) -> bool {
        matches!(
            self,
            Self::AuditAlarm { .. }
                | Self::AuditRollback { .. }
                | Self::BadCheckpoint { .. }
                | Self::BadAuditProof { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::Io { path, source }
    }

    /// True for failures a later attempt may not have: the authority is
    /// down, or answered with a server error (5xx: its audit store or
    /// storage briefly unusable, or a proxy in front of it).
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } => true,
            AgentError::Refused { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }
}
