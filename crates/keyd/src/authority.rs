//! The authority's rules, with no HTTP: tokens, enrollment, unlock,
//! revoke, shred. Every decision is audited; a key is released only after
//! its audit entry is durable.

use std::sync::Arc;

use atrest_audit::{AuditLog, AuditStore, Checkpoint, Clock, EntryKind, NewEntry};
use atrest_remote::{
    BlindedResponse, ExchangePublicKey, HostId, HostPublicKey, HostSecret, KeyId, RequestError,
    SignedUnlockRequest, VerifiedRequest, to_base64url,
};
use serde::Serialize;
use serde_json::json;

use crate::storage::{HostRecord, HostState, Policy, PolicyScope, Storage, StorageError};

/// Tuning for [`Authority`].
#[derive(Clone, Debug)]
pub struct AuthorityOptions {
    /// Largest difference, in seconds, between a request's time and ours.
    pub max_skew: u64,
    /// Policy when neither the host nor its group has one.
    pub default_policy: Policy,
}

impl Default for AuthorityOptions {
    fn default() -> Self {
        Self {
            max_skew: 300,
            default_policy: Policy::Auto,
        }
    }
}

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
    #[error("host {0} is revoked")]
    Revoked(HostId),
    #[error("host {0} was shredded: its keyslots can never open again")]
    Shredded(HostId),
    #[error("the request names key {0}, which is not this host's exchange key; re-enroll")]
    UnknownKey(KeyId),
    #[error("the policy for host {0} denies unlocking")]
    Denied(HostId),
    #[error("a host named {0} is already enrolled; pick another name or shred the old one")]
    HostExists(HostId),
    #[error("{0}")]
    Audit(#[from] atrest_audit::AppendError),
    #[error(transparent)]
    Storage(StorageError),
    #[error("the host's exchange secret is unusable: {0}")]
    Exchange(#[from] atrest_remote::ExchangeError),
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
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadToken => "bad_token",
            Self::InvalidField(_) => "invalid_field",
            Self::BadPublicKey(_) => "bad_public_key",
            Self::UnknownHost(_) => "unknown_host",
            Self::Request(e) => e.code(),
            Self::ReplayedNonce => "replayed_nonce",
            Self::Revoked(_) => "revoked",
            Self::Shredded(_) => "shredded",
            Self::UnknownKey(_) => "unknown_key",
            Self::Denied(_) => "denied",
            Self::HostExists(_) => "host_exists",
            Self::Audit(_) => "audit_unavailable",
            Self::Storage(_) => "storage_error",
            Self::Exchange(_) => "internal_error",
        }
    }
}

/// A freshly made enrollment token. Its text is shown once; the authority
/// keeps only its hash.
#[derive(Clone, Debug, Serialize)]
pub struct Token {
    pub token: String,
    pub group: String,
    pub expires_at: u64,
}

/// What a host gets back from enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Enrollment {
    pub host_id: HostId,
    pub group: String,
    /// `S`, the public half of the host's exchange secret.
    pub exchange_key: ExchangePublicKey,
    pub key_id: KeyId,
}

/// The outcome of an unlock request that was not refused.
#[derive(Clone, Debug)]
pub enum UnlockOutcome {
    Granted(Box<Grant>),
    /// Held for an approver (approval itself is not implemented yet).
    Pending {
        request_id: String,
    },
}

/// A released answer, with the audit proof the host keeps.
#[derive(Clone, Debug, Serialize)]
pub struct Grant {
    pub response: BlindedResponse,
    pub audit_seq: u64,
    pub checkpoint: Option<Checkpoint>,
}

/// The key authority. Cheap to clone.
pub struct Authority<S: Storage, A: AuditStore, C: Clock> {
    storage: Arc<S>,
    audit: AuditLog<A>,
    clock: Arc<C>,
    options: AuthorityOptions,
}

impl<S: Storage, A: AuditStore, C: Clock> Clone for Authority<S, A, C> {
    fn clone(&self) -> Self {
        Self {
            storage: self.storage.clone(),
            audit: self.audit.clone(),
            clock: self.clock.clone(),
            options: self.options.clone(),
        }
    }
}

const ACTOR: &str = "keyd";

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    pub fn new(storage: S, audit: AuditLog<A>, clock: C, options: AuthorityOptions) -> Self {
        Self {
            storage: Arc::new(storage),
            audit,
            clock: Arc::new(clock),
            options,
        }
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn audit(&self) -> &AuditLog<A> {
        &self.audit
    }

    fn now(&self) -> u64 {
        self.clock.now_ms() / 1000
    }

    /// Makes a one-time token for `group`, valid `lifetime` seconds.
    pub async fn create_token(&self, group: &str, lifetime: u64) -> Result<Token, AuthorityError> {
        let bytes: [u8; 32] = atrest_core::random_array();
        let token = to_base64url(&bytes);
        let expires_at = self.now().saturating_add(lifetime);
        self.audit
            .append(
                NewEntry::new(EntryKind::Token, ACTOR)
                    .subject(group)
                    .details(json!({ "expires_at": expires_at })),
            )
            .await?;
        self.storage
            .insert_token(atrest_core::sha256(token.as_bytes()), group, expires_at)
            .await?;
        Ok(Token {
            token,
            group: group.to_owned(),
            expires_at,
        })
    }

    /// Spends `token` to enroll a host under `name` with its Ed25519 key,
    /// and makes the host's exchange secret.
    pub async fn enroll(
        &self,
        token: &str,
        name: &str,
        public_key: HostPublicKey,
    ) -> Result<Enrollment, AuthorityError> {
        let id = HostId::new(name)?;
        let secret = HostSecret::generate();
        let now = self.now();
        let record = HostRecord {
            id: id.clone(),
            group: String::new(),
            public_key,
            key_id: secret.key_id(),
            state: HostState::Active,
            enrolled_at: now,
        };
        let group = self
            .storage
            .enroll(
                atrest_core::sha256(token.as_bytes()),
                now,
                &record,
                &secret.expose_bytes(),
            )
            .await?
            .ok_or(AuthorityError::BadToken)?;
        self.audit
            .append(
                NewEntry::new(EntryKind::Enrollment, ACTOR)
                    .subject(id.as_str())
                    .details(json!({
                        "group": group,
                        "public_key": public_key.to_string(),
                        "key_id": secret.key_id().to_string(),
                    })),
            )
            .await?;
        Ok(Enrollment {
            host_id: id,
            group,
            exchange_key: secret.public_key(),
            key_id: secret.key_id(),
        })
    }

    /// Answers a signed unlock request, or says why not.
    pub async fn unlock(
        &self,
        signed: &SignedUnlockRequest,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let result = self.decide(signed).await;
        let request = &signed.request;
        let details = |outcome: &str| {
            json!({
                "outcome": outcome,
                "boot_id": request.boot_id.as_str(),
                "keyslot": request.keyslot,
                "vault_id": to_base64url(&request.vault_id),
                "nonce": to_base64url(&request.nonce.0),
            })
        };
        let host = request.host_id.as_str();
        match result {
            Err(e) => {
                // The refusal is logged too; if that fails the refusal stands.
                let _ = self
                    .audit
                    .append(
                        NewEntry::new(EntryKind::Decision, ACTOR)
                            .subject(host)
                            .details(details(e.code())),
                    )
                    .await;
                Err(e)
            }
            Ok((Policy::Approve, _)) => {
                let request_id = to_base64url(&atrest_core::random_array::<16>());
                self.audit
                    .append(
                        NewEntry::new(EntryKind::Decision, ACTOR)
                            .subject(host)
                            .details(details("pending")),
                    )
                    .await?;
                Ok(UnlockOutcome::Pending { request_id })
            }
            Ok((_, verified)) => {
                // Fail closed: the entry is durable before the answer exists.
                let receipt = self
                    .audit
                    .append(
                        NewEntry::new(EntryKind::Decision, ACTOR)
                            .subject(host)
                            .details(details("released")),
                    )
                    .await?;
                let secret = self
                    .storage
                    .host_secret(&request.host_id)
                    .await?
                    .ok_or_else(|| AuthorityError::Shredded(request.host_id.clone()))?;
                let secret = HostSecret::from_bytes(&secret)?;
                let response = secret.respond(&verified)?;
                Ok(UnlockOutcome::Granted(Box::new(Grant {
                    response,
                    audit_seq: receipt.seq,
                    checkpoint: receipt.checkpoint,
                })))
            }
        }
    }

    /// Every check but the audit; returns the policy that applies.
    async fn decide(
        &self,
        signed: &SignedUnlockRequest,
    ) -> Result<(Policy, VerifiedRequest), AuthorityError> {
        let request = &signed.request;
        let record = self
            .storage
            .host(&request.host_id)
            .await?
            .ok_or_else(|| AuthorityError::UnknownHost(request.host_id.clone()))?;
        let now = self.now();
        let verified =
            atrest_remote::verify(signed, &record.public_key, now, self.options.max_skew)?;
        match record.state {
            HostState::Active => {}
            HostState::Revoked => return Err(AuthorityError::Revoked(record.id)),
            HostState::Shredded => return Err(AuthorityError::Shredded(record.id)),
        }
        if verified.request().key_id != record.key_id {
            return Err(AuthorityError::UnknownKey(verified.request().key_id));
        }
        // A nonce must be remembered for as long as its timestamp passes.
        let keep_until = request
            .timestamp
            .saturating_add(self.options.max_skew)
            .max(now.saturating_add(self.options.max_skew));
        if !self
            .storage
            .record_nonce(&record.id, &request.nonce.0, now, keep_until)
            .await?
        {
            return Err(AuthorityError::ReplayedNonce);
        }
        let policy = match self
            .storage
            .policy(&PolicyScope::Host(record.id.clone()))
            .await?
        {
            Some(p) => p,
            None => self
                .storage
                .policy(&PolicyScope::Group(record.group.clone()))
                .await?
                .unwrap_or(self.options.default_policy),
        };
        if policy == Policy::Deny {
            return Err(AuthorityError::Denied(record.id));
        }
        Ok((policy, verified))
    }

    /// Refuses `host` from now on.
    pub async fn revoke(&self, host: &HostId) -> Result<(), AuthorityError> {
        if self.storage.host(host).await?.is_none() {
            return Err(AuthorityError::UnknownHost(host.clone()));
        }
        self.audit
            .append(NewEntry::new(EntryKind::Revoke, ACTOR).subject(host.as_str()))
            .await?;
        if !self
            .storage
            .set_host_state(host, HostState::Revoked)
            .await?
        {
            return Err(AuthorityError::UnknownHost(host.clone()));
        }
        Ok(())
    }

    /// Destroys `host`'s exchange secret for good.
    pub async fn shred(&self, host: &HostId) -> Result<(), AuthorityError> {
        if self.storage.host(host).await?.is_none() {
            return Err(AuthorityError::UnknownHost(host.clone()));
        }
        self.audit
            .append(NewEntry::new(EntryKind::Shred, ACTOR).subject(host.as_str()))
            .await?;
        self.storage
            .set_host_state(host, HostState::Shredded)
            .await?;
        Ok(())
    }

    pub async fn set_policy(
        &self,
        scope: &PolicyScope,
        policy: Policy,
    ) -> Result<(), AuthorityError> {
        self.audit
            .append(
                NewEntry::new(EntryKind::PolicyChange, ACTOR)
                    .details(json!({ "scope": scope, "policy": policy })),
            )
            .await?;
        self.storage.set_policy(scope, policy).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use atrest_audit::{AuditSigningKey, ChainHead, Entry, LogOptions, SqliteStore, StoreError};
    use atrest_remote::{
        BootId, HostIdentity, RemoteBinding, RequestNonce, UnblindingState, UnlockRequest, enroll,
    };

    use super::*;
    use crate::storage::SqliteStorage;

    #[derive(Clone, Default)]
    struct ManualClock(Arc<AtomicU64>);

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// An audit store that can be made to refuse writes (disk full).
    struct FlakyStore {
        inner: SqliteStore,
        fail: Arc<AtomicBool>,
    }

    impl AuditStore for FlakyStore {
        async fn append(&self, entries: &[Entry], cps: &[Checkpoint]) -> Result<(), StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("disk full".into()));
            }
            self.inner.append(entries, cps).await
        }
        async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
            self.inner.read_entries(from, limit).await
        }
        async fn read_checkpoints(
            &self,
            from: u64,
            limit: u32,
        ) -> Result<Vec<Checkpoint>, StoreError> {
            self.inner.read_checkpoints(from, limit).await
        }
        async fn head(&self) -> Result<ChainHead, StoreError> {
            self.inner.head().await
        }
        async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
            self.inner.latest_checkpoint().await
        }
    }

    type TestAuthority = Authority<SqliteStorage, FlakyStore, ManualClock>;

    struct Fixture {
        authority: TestAuthority,
        clock: ManualClock,
        audit_fails: Arc<AtomicBool>,
        _dir: tempfile::TempDir,
    }

    const T0: u64 = 1_800_000_000;

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::default();
        clock.0.store(T0 * 1000, Ordering::SeqCst);
        let fail = Arc::new(AtomicBool::new(false));
        let store = FlakyStore {
            inner: SqliteStore::open(&dir.path().join("audit.db"))
                .await
                .unwrap(),
            fail: fail.clone(),
        };
        let audit = AuditLog::open(
            store,
            AuditSigningKey::generate(),
            LogOptions::default(),
            clock.clone(),
        )
        .await
        .unwrap();
        let storage = SqliteStorage::open(&dir.path().join("keyd.db"))
            .await
            .unwrap();
        Fixture {
            authority: Authority::new(storage, audit, clock.clone(), AuthorityOptions::default()),
            clock,
            audit_fails: fail,
            _dir: dir,
        }
    }

    struct Host {
        identity: HostIdentity,
        id: HostId,
        binding: RemoteBinding,
        key: atrest_core::SecretKey,
    }

    async fn enroll_host(f: &Fixture, name: &str) -> Host {
        let token = f.authority.create_token("web", 3600).await.unwrap();
        let identity = HostIdentity::generate();
        let enrollment = f
            .authority
            .enroll(&token.token, name, identity.public_key())
            .await
            .unwrap();
        assert_eq!(enrollment.group, "web");
        let (binding, key) = enroll(&enrollment.exchange_key);
        assert_eq!(binding.key_id(), enrollment.key_id);
        Host {
            identity,
            id: enrollment.host_id,
            binding,
            key,
        }
    }

    fn request(
        f: &Fixture,
        signer: &HostIdentity,
        id: &HostId,
        binding: &RemoteBinding,
    ) -> (SignedUnlockRequest, UnblindingState) {
        let (blinded, state) = binding.blind();
        let signed = signer.sign(UnlockRequest {
            host_id: id.clone(),
            vault_id: [7; 16],
            keyslot: 1,
            key_id: binding.key_id(),
            blinded,
            nonce: RequestNonce::random(),
            timestamp: f.clock.now_ms() / 1000,
            boot_id: BootId::new("0b5c5e4e-8a8d-4f43-9a4b-4d7c3f2a1b00").unwrap(),
        });
        (signed, state)
    }

    fn granted(outcome: UnlockOutcome) -> Grant {
        match outcome {
            UnlockOutcome::Granted(grant) => *grant,
            UnlockOutcome::Pending { .. } => panic!("pending"),
        }
    }

    #[tokio::test]
    async fn enroll_then_unlock_gives_the_enrollment_key() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
        let grant = granted(f.authority.unlock(&signed).await.unwrap());
        assert!(grant.audit_seq > 0);
        let key = state.unblind(&grant.response).unwrap();
        assert_eq!(key.expose(), host.key.expose());
    }

    #[tokio::test]
    async fn a_token_works_once_and_not_after_expiry() {
        let f = fixture().await;
        let token = f.authority.create_token("web", 60).await.unwrap();
        let id = HostIdentity::generate().public_key();
        f.authority.enroll(&token.token, "a", id).await.unwrap();
        let again = f.authority.enroll(&token.token, "b", id).await.unwrap_err();
        assert_eq!(again.code(), "bad_token");
        let token = f.authority.create_token("web", 60).await.unwrap();
        f.clock.0.fetch_add(61_000, Ordering::SeqCst);
        let late = f.authority.enroll(&token.token, "c", id).await.unwrap_err();
        assert_eq!(late.code(), "bad_token");
    }

    #[tokio::test]
    async fn a_replayed_request_is_refused() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(f.authority.unlock(&signed).await.unwrap());
        let replay = f.authority.unlock(&signed).await.unwrap_err();
        assert_eq!(replay.code(), "replayed_nonce");
    }

    #[tokio::test]
    async fn revoked_and_shredded_hosts_are_refused() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority.revoke(&host.id).await.unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "revoked"
        );
        f.authority.shred(&host.id).await.unwrap();
        // Shredding is for good: no state change brings the secret back.
        f.authority
            .storage()
            .set_host_state(&host.id, HostState::Active)
            .await
            .unwrap();
        assert!(
            f.authority
                .storage()
                .host_secret(&host.id)
                .await
                .unwrap()
                .is_none()
        );
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "shredded"
        );
    }

    #[tokio::test]
    async fn host_a_cannot_get_host_b_answer() {
        let f = fixture().await;
        let a = enroll_host(&f, "a").await;
        let b = enroll_host(&f, "b").await;
        // A signs a request naming B.
        let (signed, _) = request(&f, &a.identity, &b.id, &b.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "bad_signature"
        );
        // A asks under its own name for B's keyslot.
        let (signed, _) = request(&f, &a.identity, &a.id, &b.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "unknown_key"
        );
    }

    #[tokio::test]
    async fn stale_requests_and_unknown_hosts_are_refused() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        f.clock.0.fetch_add(301_000, Ordering::SeqCst);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "stale_request"
        );
        let stranger = HostId::new("nobody").unwrap();
        let (signed, _) = request(&f, &host.identity, &stranger, &host.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "unknown_host"
        );
    }

    #[tokio::test]
    async fn policies_deny_and_hold() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(&PolicyScope::Group("web".into()), Policy::Approve)
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert!(matches!(
            f.authority.unlock(&signed).await.unwrap(),
            UnlockOutcome::Pending { .. }
        ));
        // The host's own policy wins over its group's.
        f.authority
            .set_policy(&PolicyScope::Host(host.id.clone()), Policy::Deny)
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "denied"
        );
    }

    #[tokio::test]
    async fn no_release_when_the_audit_cannot_be_written() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.audit_fails.store(true, Ordering::SeqCst);
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(
            f.authority.unlock(&signed).await.unwrap_err().code(),
            "audit_unavailable"
        );
    }
}
