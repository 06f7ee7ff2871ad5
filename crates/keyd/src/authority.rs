//! The authority's rules, with no HTTP: tokens, enrollment, unlock,
//! reboot announcements, rotation, revoke, shred. Every decision is
//! audited; a key is released only after its audit entry is durable.
//! Approvals of held requests are in [`crate::approval`].

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use atrest_audit::{AuditLog, AuditStore, Checkpoint, Clock, EntryKind, NewEntry};
use atrest_remote::{
    BlindedResponse, HostId, HostPublicKey, HostSecret, KeyId, RequestError, SignedRebootNotice,
    SignedUnlockRequest, VerifiedRequest, to_base64url,
};
use atrest_wire::ErrorCode;
use serde::Serialize;

use crate::approval::{PendingRequests, PendingView, PollToken};
use crate::events::{AuditEvent, BindEvent, RebootEvent, UnlockEvent};
use crate::metrics::Metrics;
use crate::state::{Boots, HostEntry, Hosts, Nonces, Policies, RefusalBudget};
use crate::storage::{
    BootState, HostRecord, HostState, Policy, PolicyRule, PolicyScope, Storage, StorageError,
};

/// Called with each request that starts waiting for an approver (the
/// webhook). Must not block.
pub type PendingNotifier = Arc<dyn Fn(&PendingView) + Send + Sync>;

/// Tuning for [`Authority`].
#[derive(Clone)]
pub struct AuthorityOptions {
    /// Largest difference, in seconds, between a request's time and ours.
    pub max_skew: u64,
    /// Rules when neither the host, its group nor the stored default has one.
    pub default_rule: PolicyRule,
    /// How long a held request waits for an approver before it is denied.
    pub approval_timeout: u64,
    /// How long after `atrest reboot --planned` the next boot counts as
    /// accounted for.
    pub planned_reboot_window: u64,
    /// Audit entries about refusals per second before they are summarized.
    pub refusal_entries_per_second: u32,
    pub on_pending: Option<PendingNotifier>,
}

impl Default for AuthorityOptions {
    fn default() -> Self {
        Self {
            max_skew: 300,
            default_rule: PolicyRule::default(),
            approval_timeout: 600,
            planned_reboot_window: 3600,
            refusal_entries_per_second: 50,
            on_pending: None,
        }
    }
}

impl std::fmt::Debug for AuthorityOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityOptions")
            .field("max_skew", &self.max_skew)
            .field("default_rule", &self.default_rule)
            .field("approval_timeout", &self.approval_timeout)
            .field("planned_reboot_window", &self.planned_reboot_window)
            .field("on_pending", &self.on_pending.is_some())
            .finish()
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
    #[error("no pending request {0}: it expired long ago, was never made, or keyd restarted")]
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
            Self::Storage(_) => ErrorCode::StorageError,
            Self::Exchange(_) => ErrorCode::InternalError,
        }
    }

    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}

/// A freshly made enrollment token. Its text is shown once; the authority
/// keeps only its hash.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Token {
    pub token: String,
    pub group: String,
    pub expires_at: u64,
}

pub use atrest_wire::{Enrollment, Rebind};

/// The outcome of an unlock request that was not refused.
#[derive(Clone, Debug)]
pub enum UnlockOutcome {
    Granted(Box<Grant>),
    /// Held for an approver. The poll token goes only to the request that
    /// was held (a poll's "still pending" carries none).
    Pending {
        view: Box<PendingView>,
        poll_token: Option<PollToken>,
    },
}

/// A released answer, with the audit proof the host keeps.
#[derive(Clone, Debug, Serialize)]
pub struct Grant {
    pub response: BlindedResponse,
    pub audit_seq: u64,
    pub checkpoint: Option<Checkpoint>,
    pub rebind: Option<Rebind>,
    /// A new boot's ticket (its first release); the host keeps it in RAM.
    pub boot_ticket: Option<atrest_remote::BootTicket>,
}

/// Where a request came from, for the log and the approver.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext {
    pub source: Option<IpAddr>,
}

impl RequestContext {
    pub(crate) fn source_text(&self) -> String {
        self.source
            .map_or_else(|| "unknown".into(), |s| s.to_string())
    }
}

/// A host as an operator sees it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct HostView {
    #[serde(flatten)]
    pub record: HostRecord,
    #[serde(flatten)]
    pub boot: BootState,
}

/// How this boot relates to the last one the authority released to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BootStatus {
    /// No release since enrollment.
    First,
    /// The boot last released to, proven by its ticket.
    Same,
    /// Announced with `atrest reboot --planned`.
    Planned,
    /// A new boot id nobody announced.
    Unannounced { previous: String },
    /// The last boot's id without its ticket: a copy of the disk claiming
    /// to be the running host, or a host that lost `/run`.
    Unproven,
}

impl BootStatus {
    pub fn of(
        state: &BootState,
        boot_id: &str,
        ticket: Option<&atrest_remote::BootTicket>,
        now: u64,
    ) -> Self {
        match &state.last_boot_id {
            None => Self::First,
            Some(last) if last == boot_id => {
                let proven = matches!(
                    (ticket, &state.ticket_hash),
                    (Some(t), Some(h)) if atrest_core::constant_time_eq(&t.hash(), h)
                );
                if proven { Self::Same } else { Self::Unproven }
            }
            Some(last) => {
                let planned = state.planned_until.is_some_and(|until| until >= now)
                    && state.planned_from.as_deref() != Some(boot_id);
                if planned {
                    Self::Planned
                } else {
                    Self::Unannounced {
                        previous: last.clone(),
                    }
                }
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Same => "same",
            Self::Planned => "planned",
            Self::Unannounced { .. } => "unannounced",
            Self::Unproven => "unproven",
        }
    }
}

/// What the policy says about a verified request.
pub(crate) enum Verdict {
    Release,
    Hold { reason: String },
}

pub(crate) struct Inner<S: Storage, A: AuditStore, C: Clock> {
    pub storage: S,
    pub audit: AuditLog<A>,
    pub clock: C,
    pub options: AuthorityOptions,
    pub hosts: Hosts,
    pub policies: Policies,
    pub boots: Boots,
    pub nonces: Nonces,
    /// Refusals anyone can cause (unknown host, bad signature, a replay of
    /// a captured request): budgeted apart from those of authenticated
    /// hosts, so a flood of the first cannot hide the second.
    pub refusals: RefusalBudget,
    pub refusals_authenticated: RefusalBudget,
    pub pending: PendingRequests,
    pub metrics: Metrics,
    /// Held exclusively across snapshot → audit → storage → memory by
    /// every change to a host or a policy, so two changes never interleave
    /// (a rotate could otherwise write back a state a revoke had just
    /// replaced); held shared by a release from its state check to its
    /// answer, so no change lands between the two.
    pub changes: tokio::sync::RwLock<()>,
}

/// The key authority. Cheap to clone; a background task (flushing boot
/// states, expiring held requests) runs while any clone lives.
pub struct Authority<S: Storage, A: AuditStore, C: Clock> {
    pub(crate) inner: Arc<Inner<S, A, C>>,
}

impl<S: Storage, A: AuditStore, C: Clock> Clone for Authority<S, A, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) const ACTOR: &str = "keyd";

/// How often the background task runs.
const TICK: Duration = Duration::from_millis(250);

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Loads hosts, policies and boot states from `storage`, recent nonces
    /// from the audit log, and starts the background task on the current
    /// tokio runtime.
    pub async fn open(
        storage: S,
        audit: AuditLog<A>,
        clock: C,
        options: AuthorityOptions,
    ) -> Result<Self, AuthorityError> {
        let inner = Inner {
            hosts: Hosts::default(),
            policies: Policies::default(),
            boots: Boots::default(),
            nonces: Nonces::default(),
            refusals: RefusalBudget::new(options.refusal_entries_per_second),
            refusals_authenticated: RefusalBudget::new(options.refusal_entries_per_second),
            pending: PendingRequests::default(),
            metrics: Metrics::default(),
            changes: tokio::sync::RwLock::new(()),
            storage,
            audit,
            clock,
            options,
        };
        for record in inner.storage.hosts().await? {
            let secrets = inner
                .storage
                .host_secrets(&record.id)
                .await?
                .iter()
                .map(|s| HostSecret::from_bytes(&s.secret))
                .collect::<Result<Vec<_>, _>>()?;
            inner.hosts.put(HostEntry { record, secrets });
        }
        for (scope, rule) in inner.storage.policies().await? {
            inner.policies.set(scope, rule);
        }
        inner.boots.load(inner.storage.boot_states().await?);
        let authority = Self {
            inner: Arc::new(inner),
        };
        authority.reload_nonces().await?;
        let weak = Arc::downgrade(&authority.inner);
        tokio::spawn(background(weak));
        Ok(authority)
    }

    pub fn storage(&self) -> &S {
        &self.inner.storage
    }

    pub fn audit(&self) -> &AuditLog<A> {
        &self.inner.audit
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_ms() / 1000
    }

    /// Nonces are in the audit entries of answered requests; after a
    /// restart those still inside the clock window are spent again, so a
    /// captured request cannot be replayed against a fresh process.
    async fn reload_nonces(&self) -> Result<(), AuthorityError> {
        let window = self.inner.options.max_skew.saturating_mul(2);
        let oldest_ms = self
            .inner
            .clock
            .now_ms()
            .saturating_sub(window.saturating_mul(1000));
        let store = self.inner.audit.store();
        let mut end = self.inner.audit.head().seq;
        const CHUNK: u64 = 1000;
        while end > 0 {
            let from = end.saturating_sub(CHUNK - 1).max(1);
            let entries = store
                .read_entries(from, u32::try_from(end - from + 1).unwrap_or(u32::MAX))
                .await
                .map_err(|e| {
                    AuthorityError::Audit(atrest_audit::AppendError::NotDurable(e.to_string()))
                })?;
            let mut older = false;
            for entry in &entries {
                if entry.timestamp_ms < oldest_ms {
                    older = true;
                    continue;
                }
                if let Some(nonce) = AuditEvent::parse(&entry.details).nonce() {
                    self.inner
                        .nonces
                        .spend(nonce, entry.timestamp_ms / 1000 + window);
                }
            }
            if older {
                break;
            }
            end = from - 1;
        }
        Ok(())
    }

    /// Makes a one-time token for `group`, valid `lifetime` seconds
    /// ([`MIN_TOKEN_LIFETIME`] to [`MAX_TOKEN_LIFETIME`]).
    pub async fn create_token(
        &self,
        group: &str,
        lifetime: u64,
        actor: &str,
    ) -> Result<Token, AuthorityError> {
        check_group(group)?;
        check_token_lifetime(lifetime)?;
        let bytes: [u8; 32] = atrest_core::random_array();
        // A fixed prefix: never starts with `-` (which a command line would
        // take for an option), and secret scanners can recognize it.
        let token = format!("atrest_tok_{}", to_base64url(&bytes));
        let expires_at = self.now().saturating_add(lifetime);
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Token, actor)
                    .subject(group)
                    .details(AuditEvent::Token { expires_at }.details()),
            )
            .await?;
        self.inner
            .storage
            .insert_token(atrest_core::sha256(token.as_bytes()), group, expires_at)
            .await?;
        Ok(Token {
            token,
            group: group.to_owned(),
            expires_at,
        })
    }

    /// Spends `token` to enroll a host under `name` with its Ed25519 key,
    /// and makes the host's exchange secret. The host exists only once its
    /// audit entry is durable.
    pub async fn enroll(
        &self,
        token: &str,
        name: &str,
        public_key: HostPublicKey,
        context: RequestContext,
    ) -> Result<Enrollment, AuthorityError> {
        let result = self.enroll_host(token, name, public_key, context).await;
        if let Err(e) = &result
            && !matches!(e, AuthorityError::Audit(_))
        {
            // A spent or stolen token tried again leaves a trace.
            self.refused(EntryKind::Enrollment, name, e, || {
                AuditEvent::EnrollRefused {
                    outcome: e.code().into(),
                    public_key: public_key.to_string(),
                    source: context.source_text(),
                }
            })
            .await;
        }
        result
    }

    async fn enroll_host(
        &self,
        token: &str,
        name: &str,
        public_key: HostPublicKey,
        context: RequestContext,
    ) -> Result<Enrollment, AuthorityError> {
        let id = HostId::new(name)?;
        let secret = HostSecret::generate();
        let now = self.now();
        let record = HostRecord {
            id: id.clone(),
            group: String::new(),
            public_key,
            key_id: secret.key_id(),
            previous_key_id: None,
            state: HostState::Active,
            enrolled_at: now,
        };
        let token_hash = atrest_core::sha256(token.as_bytes());
        if self.inner.hosts.get(&id).is_some() {
            return Err(AuthorityError::HostExists(id));
        }
        // Log first, then enroll: a host never exists without its entry. A
        // crash or a lost race between the two leaves an entry for an
        // enrollment that did not happen (followed by a `not_enrolled`
        // entry when the process lives to write it), never the reverse.
        let group = self
            .inner
            .storage
            .token_group(token_hash, now)
            .await?
            .ok_or(AuthorityError::BadToken)?;
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Enrollment, id.as_str())
                    .subject(id.as_str())
                    .details(
                        AuditEvent::Enrolled {
                            group: group.clone(),
                            public_key: public_key.to_string(),
                            key_id: secret.key_id().to_string(),
                            source: context.source_text(),
                        }
                        .details(),
                    ),
            )
            .await?;
        let enrolled = match self
            .inner
            .storage
            .enroll(token_hash, now, &record, &secret.expose_bytes())
            .await
        {
            Ok(Some(group)) => Ok(group),
            Ok(None) => Err(AuthorityError::BadToken),
            Err(e) => Err(e.into()),
        };
        let group = match enrolled {
            Ok(group) => group,
            Err(e) => {
                let undone = NewEntry::new(EntryKind::Enrollment, ACTOR)
                    .subject(id.as_str())
                    .details(AuditEvent::not_enrolled(e.code()).details());
                if let Err(log) = self.inner.audit.append(undone).await {
                    tracing::warn!(host = %id, error = %log, "could not log a failed enrollment");
                }
                return Err(e);
            }
        };
        let record = HostRecord { group, ..record };
        self.inner.metrics.enrollments.inc();
        self.inner.hosts.put(HostEntry {
            record: record.clone(),
            secrets: vec![secret.clone()],
        });
        Ok(Enrollment {
            host_id: id,
            group: record.group,
            exchange_key: secret.public_key(),
            key_id: secret.key_id(),
            audit_public_key: self.inner.audit.public_key(),
        })
    }

    /// An enrolled host binding another vault: it proves it is the host
    /// and gets its current exchange key (public), so no token is spent.
    pub async fn bind(
        &self,
        signed: &atrest_remote::SignedBindRequest,
        context: RequestContext,
    ) -> Result<Enrollment, AuthorityError> {
        let bind = &signed.bind;
        let details = |outcome: &str| BindEvent {
            outcome: outcome.into(),
            nonce: to_base64url(&bind.nonce.0),
            source: context.source_text(),
            key_id: None,
        };
        let checked = (|| {
            let entry = self.host_entry(&bind.host_id)?;
            atrest_remote::verify_bind(
                signed,
                &entry.record.public_key,
                self.now(),
                self.inner.options.max_skew,
            )?;
            check_state(&entry.record)?;
            self.spend_nonce(bind.nonce.0, bind.timestamp)?;
            Ok::<_, AuthorityError>(entry)
        })();
        let entry = match checked {
            Ok(entry) => entry,
            Err(e) => {
                self.refused(EntryKind::Enrollment, bind.host_id.as_str(), &e, || {
                    AuditEvent::Bind(details(e.code()))
                })
                .await;
                return Err(e);
            }
        };
        let current = entry
            .secrets
            .first()
            .ok_or_else(|| AuthorityError::Shredded(entry.record.id.clone()))?;
        let bound = BindEvent {
            key_id: Some(current.key_id().to_string()),
            ..details("bound")
        };
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Enrollment, entry.record.id.as_str())
                    .subject(entry.record.id.as_str())
                    .details(AuditEvent::Bind(bound).details()),
            )
            .await?;
        Ok(Enrollment {
            host_id: entry.record.id.clone(),
            group: entry.record.group.clone(),
            exchange_key: current.public_key(),
            key_id: current.key_id(),
            audit_public_key: self.inner.audit.public_key(),
        })
    }

    /// Answers a signed unlock request: a grant, a held request, or why not.
    pub async fn unlock(
        &self,
        signed: &SignedUnlockRequest,
        context: RequestContext,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let request = &signed.request;
        let details = |outcome: &str| UnlockEvent {
            outcome: outcome.into(),
            boot_id: request.boot_id.as_str().to_owned(),
            keyslot: request.keyslot,
            vault_id: to_base64url(&request.vault_id),
            key_id: request.key_id.to_string(),
            nonce: to_base64url(&request.nonce.0),
            source: context.source_text(),
            boot: None,
        };
        // Once the boot is judged, the entry says how.
        let judged = |outcome: &str, boot: &BootStatus| {
            AuditEvent::Unlock(UnlockEvent {
                boot: Some(boot.name().into()),
                ..details(outcome)
            })
        };
        let (entry, verified) = match self.verify_request(signed) {
            Ok(pair) => pair,
            Err(e) => {
                self.refused(EntryKind::Decision, request.host_id.as_str(), &e, || {
                    AuditEvent::Unlock(details(e.code()))
                })
                .await;
                return Err(e);
            }
        };
        let boot = BootStatus::of(
            &self.inner.boots.get(&entry.record.id),
            request.boot_id.as_str(),
            signed.boot_ticket.as_ref(),
            self.now(),
        );
        match self.verdict(&entry.record, &boot) {
            Err(e) => {
                self.refused(EntryKind::Decision, request.host_id.as_str(), &e, || {
                    judged(e.code(), &boot)
                })
                .await;
                Err(e)
            }
            Ok(Verdict::Hold { reason }) => {
                match self.hold(&entry, verified, &boot, reason, context).await {
                    Ok((view, poll_token)) => Ok(UnlockOutcome::Pending {
                        view: Box::new(view),
                        poll_token: Some(poll_token),
                    }),
                    Err(e) => {
                        self.refused(EntryKind::Decision, request.host_id.as_str(), &e, || {
                            judged(e.code(), &boot)
                        })
                        .await;
                        Err(e)
                    }
                }
            }
            Ok(Verdict::Release) => {
                let released = judged("released", &boot).details();
                let grant = self.release(&entry, &verified, &boot, released).await?;
                Ok(UnlockOutcome::Granted(Box::new(grant)))
            }
        }
    }

    /// Every check of a request before policy: host, signature, clock,
    /// state, key, nonce.
    fn verify_request(
        &self,
        signed: &SignedUnlockRequest,
    ) -> Result<(Arc<HostEntry>, VerifiedRequest), AuthorityError> {
        let request = &signed.request;
        let entry = self
            .inner
            .hosts
            .get(&request.host_id)
            .ok_or_else(|| AuthorityError::UnknownHost(request.host_id.clone()))?;
        let now = self.now();
        let verified = atrest_remote::verify(
            signed,
            &entry.record.public_key,
            now,
            self.inner.options.max_skew,
        )?;
        check_state(&entry.record)?;
        if entry.secret(&request.key_id).is_none() {
            return Err(AuthorityError::UnknownKey(request.key_id));
        }
        self.spend_nonce(request.nonce.0, request.timestamp)?;
        Ok((entry, verified))
    }

    /// A nonce must be remembered for as long as its timestamp passes.
    fn spend_nonce(&self, nonce: [u8; 16], timestamp: u64) -> Result<(), AuthorityError> {
        let skew = self.inner.options.max_skew;
        let keep_until = timestamp
            .saturating_add(skew)
            .max(self.now().saturating_add(skew));
        if self.inner.nonces.spend(nonce, keep_until) {
            Ok(())
        } else {
            Err(AuthorityError::ReplayedNonce)
        }
    }

    /// The rule for a host: its own, its group's, the stored default, the
    /// configured default.
    pub fn rule_for(&self, record: &HostRecord) -> PolicyRule {
        let policies = &self.inner.policies;
        policies
            .get(&PolicyScope::Host(record.id.clone()))
            .or_else(|| policies.get(&PolicyScope::Group(record.group.clone())))
            .or_else(|| policies.get(&PolicyScope::Default))
            .unwrap_or(self.inner.options.default_rule)
    }

    fn verdict(&self, record: &HostRecord, boot: &BootStatus) -> Result<Verdict, AuthorityError> {
        let rule = self.rule_for(record);
        let deny = |reason: String| AuthorityError::Denied {
            host: record.id.clone(),
            reason,
        };
        let mut hold = None;
        match rule.policy {
            Policy::Deny => return Err(deny("its policy is deny".into())),
            Policy::Approve => hold = Some("its policy requires an approver".to_owned()),
            Policy::Auto => {}
        }
        let why = match boot {
            BootStatus::Unannounced { previous } => Some(format!(
                "unaccounted reboot: the boot id changed from {previous} without \
                 `atrest reboot --planned`"
            )),
            BootStatus::Unproven => Some(
                "the running boot's id without its boot ticket: a copy of this host's disk, \
                 or a host that lost /run"
                    .to_owned(),
            ),
            _ => None,
        };
        if let Some(why) = why {
            match rule.unannounced_reboot {
                Policy::Deny => return Err(deny(why)),
                Policy::Approve => hold = Some(hold.map_or(why.clone(), |h| format!("{h}; {why}"))),
                Policy::Auto => {}
            }
        }
        Ok(match hold {
            Some(reason) => Verdict::Hold { reason },
            None => Verdict::Release,
        })
    }

    /// Writes the release entry, then (only then) computes the answer, and
    /// records the boot. `boot` is how the request's boot was judged.
    pub(crate) async fn release(
        &self,
        entry: &HostEntry,
        verified: &VerifiedRequest,
        boot: &BootStatus,
        details: serde_json::Value,
    ) -> Result<Grant, AuthorityError> {
        let request = verified.request();
        let host = &entry.record.id;
        // Revoke, shred and rotate take this lock exclusively: from the
        // state check below to the answer, none can land in between, so a
        // "released" entry is never followed by a refusal of the same
        // release (nor a release by a shred that logged first).
        let changing = self.inner.changes.read().await;
        let current = self
            .inner
            .hosts
            .get(host)
            .ok_or_else(|| AuthorityError::UnknownHost(host.clone()))?;
        check_state(&current.record)?;
        let secret = current
            .secret(&request.key_id)
            .ok_or(AuthorityError::UnknownKey(request.key_id))?;
        // Fail closed: the entry is durable before the answer exists.
        let receipt = self
            .inner
            .audit
            .append(
                NewEntry::new(EntryKind::Decision, ACTOR)
                    .subject(host.as_str())
                    .details(details),
            )
            .await
            .inspect_err(|_| self.inner.metrics.unlock("audit_unavailable"))?;
        let response = secret.respond(verified)?;
        let now = self.now();
        let boot_id = request.boot_id.as_str().to_owned();
        // A boot that has not proven itself (new, or unproven but released
        // by policy or an approver) gets a fresh ticket; the previous one
        // stops working.
        let boot_ticket = (*boot != BootStatus::Same).then(atrest_remote::BootTicket::random);
        let ticket_hash = boot_ticket.as_ref().map(atrest_remote::BootTicket::hash);
        self.inner.boots.update(host, |state| {
            if state.last_boot_id.as_deref() != Some(&boot_id) {
                state.planned_until = None;
                state.planned_from = None;
            }
            if let Some(hash) = ticket_hash {
                state.ticket_hash = Some(hash);
            }
            state.last_boot_id = Some(boot_id);
            state.last_unlock_at = Some(now);
        });
        drop(changing);
        let rebind = self.after_release(&current, &request.key_id).await;
        self.inner.metrics.unlock("released");
        Ok(Grant {
            response,
            audit_seq: receipt.seq,
            checkpoint: receipt
                .checkpoint
                .or_else(|| self.inner.audit.latest_checkpoint()),
            rebind,
            boot_ticket,
        })
    }

    /// After a rotation: a host still on the previous key is told to
    /// re-bind; a host on the current key has, so the previous goes.
    async fn after_release(&self, entry: &HostEntry, used: &KeyId) -> Option<Rebind> {
        let current = entry.secrets.first()?;
        if current.key_id() != *used {
            return Some(Rebind {
                exchange_key: current.public_key(),
                key_id: current.key_id(),
            });
        }
        if entry.secrets.len() > 1 {
            let retired = self.retire_previous(entry).await;
            if let Err(e) = retired {
                tracing::warn!(host = %entry.record.id, error = %e, "could not retire the previous secret; will retry");
            }
        }
        None
    }

    async fn retire_previous(&self, entry: &HostEntry) -> Result<(), AuthorityError> {
        let _changing = self.inner.changes.write().await;
        let host = &entry.record.id;
        // Exactly the secrets that were previous when the host proved it
        // re-bound; a rotation since then made others previous.
        let retired: Vec<KeyId> = entry.secrets[1..].iter().map(HostSecret::key_id).collect();
        let previous: Vec<String> = retired.iter().map(ToString::to_string).collect();
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Rotation, ACTOR)
                    .subject(host.as_str())
                    .details(
                        AuditEvent::Retired {
                            retired: previous,
                            reason: "host re-bound".into(),
                        }
                        .details(),
                    ),
            )
            .await?;
        self.inner.storage.retire_secrets(host, &retired).await?;
        if let Some(fresh) = self.inner.hosts.get(host) {
            let secrets: Vec<HostSecret> = fresh
                .secrets
                .iter()
                .filter(|s| !retired.contains(&s.key_id()))
                .cloned()
                .collect();
            let previous_key_id = secrets.get(1).map(HostSecret::key_id);
            self.inner.hosts.put(HostEntry {
                record: HostRecord {
                    previous_key_id,
                    ..fresh.record.clone()
                },
                secrets,
            });
        }
        Ok(())
    }

    /// Audits a refusal, within the refusal budget (a flood is summarized).
    /// If the entry cannot be written the refusal stands anyway.
    pub(crate) async fn refused(
        &self,
        kind: EntryKind,
        subject: &str,
        error: &AuthorityError,
        details: impl FnOnce() -> AuditEvent,
    ) {
        let code = error.code();
        self.inner.metrics.unlock(code);
        let anyone = matches!(
            error,
            AuthorityError::UnknownHost(_)
                | AuthorityError::Request(_)
                | AuthorityError::InvalidField(_)
                | AuthorityError::BadPublicKey(_)
                | AuthorityError::BadToken
                | AuthorityError::ReplayedNonce
        );
        let budget = if anyone {
            &self.inner.refusals
        } else {
            &self.inner.refusals_authenticated
        };
        if !budget.admit(code, self.now()) {
            return;
        }
        let mut entry = NewEntry::new(kind, ACTOR).details(details().details());
        if atrest_remote::HostId::new(subject).is_ok() {
            entry = entry.subject(subject);
        }
        if let Err(e) = self.inner.audit.append(entry).await {
            tracing::warn!(error = %e, code, "could not audit a refusal");
        }
    }

    /// A refusal found before any host is known (malformed or oversized
    /// body): audited within the same budget.
    pub async fn refused_input(&self, code: &'static str, context: RequestContext) {
        self.inner.metrics.unlock(code);
        if !self.inner.refusals.admit(code, self.now()) {
            return;
        }
        let entry = NewEntry::new(EntryKind::Request, ACTOR).details(
            AuditEvent::RequestRefused {
                outcome: code.into(),
                source: context.source_text(),
            }
            .details(),
        );
        if let Err(e) = self.inner.audit.append(entry).await {
            tracing::warn!(error = %e, code, "could not audit a refusal");
        }
    }

    /// `atrest reboot --planned`: the host's next boot (a boot id other than
    /// the notice's) is accounted for during the planned-reboot window.
    pub async fn announce_reboot(
        &self,
        signed: &SignedRebootNotice,
        context: RequestContext,
    ) -> Result<(u64, u64), AuthorityError> {
        let notice = &signed.notice;
        let details = |outcome: &str| RebootEvent {
            outcome: outcome.into(),
            boot_id: notice.boot_id.as_str().to_owned(),
            nonce: to_base64url(&notice.nonce.0),
            source: context.source_text(),
            valid_until: None,
        };
        let checked = (|| {
            let entry = self
                .inner
                .hosts
                .get(&notice.host_id)
                .ok_or_else(|| AuthorityError::UnknownHost(notice.host_id.clone()))?;
            atrest_remote::verify_reboot(
                signed,
                &entry.record.public_key,
                self.now(),
                self.inner.options.max_skew,
            )?;
            check_state(&entry.record)?;
            self.spend_nonce(notice.nonce.0, notice.timestamp)?;
            let boot = BootStatus::of(
                &self.inner.boots.get(&entry.record.id),
                notice.boot_id.as_str(),
                signed.boot_ticket.as_ref(),
                self.now(),
            );
            if boot != BootStatus::Same {
                return Err(AuthorityError::UnprovenBoot(entry.record.id.clone()));
            }
            Ok::<_, AuthorityError>(entry)
        })();
        let entry = match checked {
            Ok(entry) => entry,
            Err(e) => {
                self.refused(
                    EntryKind::RebootAnnounced,
                    notice.host_id.as_str(),
                    &e,
                    || AuditEvent::Reboot(details(e.code())),
                )
                .await;
                return Err(e);
            }
        };
        let until = self
            .now()
            .saturating_add(self.inner.options.planned_reboot_window);
        let accepted = RebootEvent {
            valid_until: Some(until),
            ..details("accepted")
        };
        let receipt = self
            .inner
            .audit
            .append(
                NewEntry::new(EntryKind::RebootAnnounced, entry.record.id.as_str())
                    .subject(entry.record.id.as_str())
                    .details(AuditEvent::Reboot(accepted).details()),
            )
            .await?;
        let from = notice.boot_id.as_str().to_owned();
        self.inner.boots.update(&entry.record.id, |state| {
            state.planned_until = Some(until);
            state.planned_from = Some(from);
        });
        self.flush_boots().await?;
        Ok((receipt.seq, until))
    }

    /// A new exchange secret for `host`. Its keyslots keep opening with the
    /// previous one, and re-bind to the new one on their next unlock.
    pub async fn rotate(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        let _changing = self.inner.changes.write().await;
        let entry = self.host_entry(host)?;
        check_state(&entry.record)?;
        if let Some(previous) = entry.record.previous_key_id {
            // A second rotation would delete the key the host's keyslots
            // are still bound to.
            return Err(AuthorityError::RebindPending {
                host: host.clone(),
                previous,
            });
        }
        let secret = HostSecret::generate();
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Rotation, actor)
                    .subject(host.as_str())
                    .details(
                        AuditEvent::Rotated {
                            new_key_id: secret.key_id().to_string(),
                            previous_key_id: entry.record.key_id.to_string(),
                        }
                        .details(),
                    ),
            )
            .await?;
        if !self
            .inner
            .storage
            .rotate_secret(host, secret.key_id(), &secret.expose_bytes())
            .await?
        {
            return Err(AuthorityError::Shredded(host.clone()));
        }
        let mut secrets = vec![secret.clone()];
        secrets.extend(entry.secrets.first().cloned());
        self.inner.hosts.put(HostEntry {
            record: HostRecord {
                key_id: secret.key_id(),
                previous_key_id: Some(entry.record.key_id),
                ..entry.record.clone()
            },
            secrets,
        });
        self.host(host)
    }

    /// Refuses `host` from now on (its secret is kept; see
    /// [`reinstate`](Self::reinstate)).
    pub async fn revoke(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        self.change_state(host, HostState::Revoked, EntryKind::Revoke, actor)
            .await
    }

    /// Undoes a revoke.
    pub async fn reinstate(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        self.change_state(host, HostState::Active, EntryKind::Revoke, actor)
            .await
    }

    /// Destroys every exchange secret of `host`: the vault keys its
    /// keyslots wrap can never be recovered through this authority.
    pub async fn shred(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        self.change_state(host, HostState::Shredded, EntryKind::Shred, actor)
            .await
    }

    async fn change_state(
        &self,
        host: &HostId,
        state: HostState,
        kind: EntryKind,
        actor: &str,
    ) -> Result<HostView, AuthorityError> {
        let _changing = self.inner.changes.write().await;
        let entry = self.host_entry(host)?;
        if entry.record.state == HostState::Shredded {
            return Err(AuthorityError::Shredded(host.clone()));
        }
        self.inner
            .audit
            .append(
                NewEntry::new(kind, actor).subject(host.as_str()).details(
                    AuditEvent::StateChanged {
                        state: state.as_str().into(),
                        was: entry.record.state.as_str().into(),
                    }
                    .details(),
                ),
            )
            .await?;
        if !self.inner.storage.set_host_state(host, state).await? {
            return Err(AuthorityError::Shredded(host.clone()));
        }
        let secrets = if state == HostState::Shredded {
            Vec::new()
        } else {
            entry.secrets.clone()
        };
        self.inner.hosts.put(HostEntry {
            record: HostRecord {
                state,
                ..entry.record.clone()
            },
            secrets,
        });
        // Held requests of a host refused from now on are refused too.
        if state != HostState::Active {
            self.deny_pending_of(host, actor).await;
        }
        self.host(host)
    }

    pub async fn set_policy(
        &self,
        scope: &PolicyScope,
        rule: PolicyRule,
        actor: &str,
    ) -> Result<(), AuthorityError> {
        if let PolicyScope::Group(g) = scope {
            check_group(g)?;
        }
        let _changing = self.inner.changes.write().await;
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::PolicyChange, actor)
                    .subject(scope.to_string())
                    .details(
                        AuditEvent::PolicyChanged {
                            policy: rule.policy.as_str().into(),
                            unannounced_reboot: rule.unannounced_reboot.as_str().into(),
                        }
                        .details(),
                    ),
            )
            .await?;
        self.inner.storage.set_policy(scope, rule).await?;
        self.inner.policies.set(scope.clone(), rule);
        Ok(())
    }

    pub fn policies(&self) -> Vec<(PolicyScope, PolicyRule)> {
        self.inner.policies.all()
    }

    fn host_entry(&self, host: &HostId) -> Result<Arc<HostEntry>, AuthorityError> {
        self.inner
            .hosts
            .get(host)
            .ok_or_else(|| AuthorityError::UnknownHost(host.clone()))
    }

    pub fn host(&self, host: &HostId) -> Result<HostView, AuthorityError> {
        let entry = self.host_entry(host)?;
        Ok(HostView {
            record: entry.record.clone(),
            boot: self.inner.boots.get(host),
        })
    }

    pub fn hosts(&self) -> Vec<HostView> {
        self.inner
            .hosts
            .all()
            .into_iter()
            .map(|e| HostView {
                boot: self.inner.boots.get(&e.record.id),
                record: e.record.clone(),
            })
            .collect()
    }

    pub fn host_count(&self) -> usize {
        self.inner.hosts.len()
    }

    /// Writes changed boot states now (also done every tick).
    pub async fn flush_boots(&self) -> Result<(), AuthorityError> {
        let dirty = self.inner.boots.dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        self.inner.storage.save_boot_states(&dirty).await?;
        self.inner.boots.flushed(&dirty);
        Ok(())
    }

    /// The periodic work: flush boot states, expire held requests, forget
    /// old nonces, summarize suppressed refusals.
    pub async fn maintain(&self) {
        if let Err(e) = self.flush_boots().await {
            tracing::warn!(error = %e, "could not save boot states; will retry");
        }
        self.expire_pending().await;
        self.inner.nonces.prune(self.now());
        let mut suppressed = self.inner.refusals.take_suppressed();
        for (code, n) in self.inner.refusals_authenticated.take_suppressed() {
            *suppressed.entry(code).or_default() += n;
        }
        if !suppressed.is_empty() {
            let entry = NewEntry::new(EntryKind::Request, ACTOR)
                .details(AuditEvent::refusals_summarized(suppressed).details());
            if let Err(e) = self.inner.audit.append(entry).await {
                tracing::warn!(error = %e, "could not audit the refusal summary");
            }
        }
    }
}

fn check_state(record: &HostRecord) -> Result<(), AuthorityError> {
    match record.state {
        HostState::Active => Ok(()),
        HostState::Revoked => Err(AuthorityError::Revoked(record.id.clone())),
        HostState::Shredded => Err(AuthorityError::Shredded(record.id.clone())),
    }
}

/// Group names follow host name rules (they appear in the log and URLs).
fn check_group(group: &str) -> Result<(), AuthorityError> {
    HostId::new(group)?;
    Ok(())
}

/// The shortest token lifetime: less cannot outlast a boot's enrollment.
pub const MIN_TOKEN_LIFETIME: u64 = 60;
/// The longest: a token is a bearer credential for a fleet's group, so a
/// leaked one (user-data, a ticket, a shell history) stops working within a
/// week at most.
pub const MAX_TOKEN_LIFETIME: u64 = 7 * 86_400;

fn check_token_lifetime(lifetime: u64) -> Result<(), AuthorityError> {
    if (MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&lifetime) {
        return Ok(());
    }
    Err(AuthorityError::InvalidField(atrest_remote::InvalidField {
        field: "expires_in",
        rule: "from 60 to 604800 seconds (1 minute to 7 days); \
               make the token for one enrollment and a new one for the next",
    }))
}

async fn background<S: Storage, A: AuditStore, C: Clock>(weak: Weak<Inner<S, A, C>>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        Authority { inner }.maintain().await;
    }
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use atrest_audit::{
        AuditSigningKey, ChainHead, Entry, LogOptions, SqliteStore, StoreError, TreeHead,
    };
    use atrest_remote::{
        BootId, BootTicket, HostIdentity, RemoteBinding, RequestNonce, UnblindingState,
        UnlockRequest, enroll,
    };

    use super::*;
    use crate::approval::{PendingState, PendingView};
    use crate::storage::SqliteStorage;

    #[derive(Clone, Default)]
    struct ManualClock(Arc<AtomicU64>);

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// An audit store that can be made to refuse writes (disk full), or
    /// to stop inside a commit until the test lets it go on.
    struct FlakyStore {
        inner: SqliteStore,
        fail: Arc<AtomicBool>,
        /// Each commit takes a permit; a test holding them all stops it.
        gate: Arc<tokio::sync::Semaphore>,
        /// Signalled when a commit starts.
        entered: Arc<tokio::sync::Notify>,
    }

    const GATE_PERMITS: u32 = 1 << 20;

    impl AuditStore for FlakyStore {
        async fn append(
            &self,
            entries: &[Entry],
            cps: &[Checkpoint],
            heads: &[TreeHead],
        ) -> Result<(), StoreError> {
            self.entered.notify_one();
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| StoreError::Backend(e.into()))?;
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("disk full".into()));
            }
            self.inner.append(entries, cps, heads).await
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
        async fn read_tree_heads(
            &self,
            from: u64,
            limit: u32,
        ) -> Result<Vec<TreeHead>, StoreError> {
            self.inner.read_tree_heads(from, limit).await
        }
        async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
            self.inner.latest_tree_head().await
        }
    }

    type TestAuthority = Authority<SqliteStorage, FlakyStore, ManualClock>;

    struct Fixture {
        authority: TestAuthority,
        clock: ManualClock,
        audit_fails: Arc<AtomicBool>,
        audit_gate: Arc<tokio::sync::Semaphore>,
        audit_entered: Arc<tokio::sync::Notify>,
        audit_seed: [u8; 32],
        dir: tempfile::TempDir,
        /// Boot tickets the hosts got, by (host, boot id): what a host keeps
        /// in /run.
        tickets: std::sync::Mutex<std::collections::HashMap<(String, String), BootTicket>>,
        /// Poll tokens of held requests, by request id: what the process
        /// that made the request holds.
        poll_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    }

    /// Unlocks as a host does: keeps the boot ticket of a grant.
    async fn unlock(
        f: &Fixture,
        signed: &SignedUnlockRequest,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let outcome = f.authority.unlock(signed, CTX).await;
        if let Ok(UnlockOutcome::Pending {
            view,
            poll_token: Some(token),
        }) = &outcome
        {
            f.poll_tokens
                .lock()
                .unwrap()
                .insert(view.id.clone(), token.to_string());
        }
        if let Ok(UnlockOutcome::Granted(grant)) = &outcome
            && let Some(ticket) = &grant.boot_ticket
        {
            f.tickets.lock().unwrap().insert(
                (
                    signed.request.host_id.to_string(),
                    signed.request.boot_id.to_string(),
                ),
                ticket.clone(),
            );
        }
        outcome
    }

    fn ticket(f: &Fixture, host: &HostId, boot: &str) -> Option<BootTicket> {
        f.tickets
            .lock()
            .unwrap()
            .get(&(host.to_string(), boot.to_owned()))
            .cloned()
    }

    const T0: u64 = 1_800_000_000;
    const CTX: RequestContext = RequestContext { source: None };
    const BOOT_A: &str = "0b5c5e4e-8a8d-4f43-9a4b-4d7c3f2a1b00";

    fn rule(policy: Policy) -> PolicyRule {
        PolicyRule {
            policy,
            unannounced_reboot: Policy::Approve,
        }
    }

    async fn fixture() -> Fixture {
        fixture_with(AuthorityOptions::default()).await
    }

    async fn fixture_with(options: AuthorityOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::default();
        clock.0.store(T0 * 1000, Ordering::SeqCst);
        let fail = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Semaphore::new(GATE_PERMITS as usize));
        let entered = Arc::new(tokio::sync::Notify::new());
        let audit_seed = atrest_core::random_array();
        let authority = open_at(&dir, &clock, &fail, &gate, &entered, &audit_seed, options).await;
        Fixture {
            authority,
            clock,
            audit_fails: fail,
            audit_gate: gate,
            audit_entered: entered,
            audit_seed,
            dir,
            tickets: Default::default(),
            poll_tokens: Default::default(),
        }
    }

    async fn open_at(
        dir: &tempfile::TempDir,
        clock: &ManualClock,
        fail: &Arc<AtomicBool>,
        gate: &Arc<tokio::sync::Semaphore>,
        entered: &Arc<tokio::sync::Notify>,
        seed: &[u8; 32],
        options: AuthorityOptions,
    ) -> TestAuthority {
        let store = FlakyStore {
            inner: SqliteStore::open(&dir.path().join("audit.db"))
                .await
                .unwrap(),
            fail: fail.clone(),
            gate: gate.clone(),
            entered: entered.clone(),
        };
        let audit = AuditLog::open(
            store,
            AuditSigningKey::from_seed(seed),
            LogOptions::default(),
            clock.clone(),
        )
        .await
        .unwrap();
        let storage = SqliteStorage::open(&dir.path().join("keyd.db"))
            .await
            .unwrap();
        Authority::open(storage, audit, clock.clone(), options)
            .await
            .unwrap()
    }

    /// Stops the authority (as a restart would) and opens its files again.
    async fn restart(f: Fixture) -> Fixture {
        f.authority.flush_boots().await.unwrap();
        let Fixture {
            authority,
            clock,
            audit_fails,
            audit_gate,
            audit_entered,
            audit_seed,
            dir,
            tickets,
            poll_tokens,
        } = f;
        drop(authority);
        // Let the writer task see the channel close and finish.
        tokio::task::yield_now().await;
        let authority = open_at(
            &dir,
            &clock,
            &audit_fails,
            &audit_gate,
            &audit_entered,
            &audit_seed,
            AuthorityOptions::default(),
        )
        .await;
        Fixture {
            authority,
            clock,
            audit_fails,
            audit_gate,
            audit_entered,
            audit_seed,
            dir,
            tickets,
            poll_tokens,
        }
    }

    async fn entries(f: &Fixture) -> Vec<Entry> {
        f.authority
            .audit()
            .store()
            .read_entries(1, 100_000)
            .await
            .unwrap()
    }

    struct Host {
        identity: HostIdentity,
        id: HostId,
        binding: RemoteBinding,
        key: atrest_core::SecretKey,
    }

    async fn enroll_host(f: &Fixture, name: &str) -> Host {
        let token = f.authority.create_token("web", 3600, "test").await.unwrap();
        let identity = HostIdentity::generate();
        let enrollment = f
            .authority
            .enroll(&token.token, name, identity.public_key(), CTX)
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
        request_at_boot(f, signer, id, binding, BOOT_A)
    }

    fn request_at_boot(
        f: &Fixture,
        signer: &HostIdentity,
        id: &HostId,
        binding: &RemoteBinding,
        boot: &str,
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
            boot_id: BootId::new(boot).unwrap(),
        });
        let signed = SignedUnlockRequest {
            boot_ticket: ticket(f, id, boot),
            ..signed
        };
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
        let grant = granted(unlock(&f, &signed).await.unwrap());
        assert!(grant.audit_seq > 0);
        let key = state.unblind(&grant.response).unwrap();
        assert_eq!(key.expose(), host.key.expose());
    }

    #[tokio::test]
    async fn an_enrolled_host_binds_another_vault_without_a_token() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let bind = |identity: &HostIdentity| {
            identity.sign_bind(atrest_remote::BindRequest {
                host_id: host.id.clone(),
                nonce: RequestNonce::random(),
                timestamp: T0,
            })
        };
        let signed = bind(&host.identity);
        let bound = f.authority.bind(&signed, CTX).await.unwrap();
        assert_eq!(bound.key_id, host.binding.key_id());
        // A second vault on the same exchange key opens on its own.
        let (second, key) = enroll(&bound.exchange_key);
        let (request, state) = request(&f, &host.identity, &host.id, &second);
        let grant = granted(unlock(&f, &request).await.unwrap());
        assert_eq!(
            state.unblind(&grant.response).unwrap().expose(),
            key.expose()
        );
        // Replayed, or signed by someone else: refused.
        assert_eq!(
            f.authority.bind(&signed, CTX).await.unwrap_err().code(),
            "replayed_nonce"
        );
        assert_eq!(
            f.authority
                .bind(&bind(&HostIdentity::generate()), CTX)
                .await
                .unwrap_err()
                .code(),
            "bad_signature"
        );
        // After a rotation it binds to the new key; a revoked host cannot bind.
        let rotated = f.authority.rotate(&host.id, "test").await.unwrap();
        let bound = f.authority.bind(&bind(&host.identity), CTX).await.unwrap();
        assert_eq!(bound.key_id, rotated.record.key_id);
        f.authority.revoke(&host.id, "test").await.unwrap();
        assert_eq!(
            f.authority
                .bind(&bind(&host.identity), CTX)
                .await
                .unwrap_err()
                .code(),
            "revoked"
        );
    }

    #[tokio::test]
    async fn ids_never_look_like_options() {
        let f = fixture().await;
        f.authority
            .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
            .await
            .unwrap();
        let host = enroll_host(&f, "web-1").await;
        for _ in 0..64 {
            let token = f.authority.create_token("web", 60, "test").await.unwrap();
            assert!(token.token.starts_with("atrest_tok_"), "{}", token.token);
            let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
            let view = pending(unlock(&f, &signed).await.unwrap());
            assert!(view.id.starts_with("req_"), "{}", view.id);
            f.authority.decide(&view.id, false, "test").await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_token_works_once_and_not_after_expiry() {
        let f = fixture().await;
        let token = f.authority.create_token("web", 60, "test").await.unwrap();
        let id = HostIdentity::generate().public_key();
        f.authority
            .enroll(&token.token, "a", id, CTX)
            .await
            .unwrap();
        let again = f
            .authority
            .enroll(&token.token, "b", id, CTX)
            .await
            .unwrap_err();
        assert_eq!(again.code(), "bad_token");
        let token = f.authority.create_token("web", 60, "test").await.unwrap();
        f.clock.0.fetch_add(61_000, Ordering::SeqCst);
        let late = f
            .authority
            .enroll(&token.token, "c", id, CTX)
            .await
            .unwrap_err();
        assert_eq!(late.code(), "bad_token");
    }

    #[tokio::test]
    async fn a_replayed_request_is_refused() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &signed).await.unwrap());
        let replay = unlock(&f, &signed).await.unwrap_err();
        assert_eq!(replay.code(), "replayed_nonce");
    }

    #[tokio::test]
    async fn revoked_and_shredded_hosts_are_refused() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority.revoke(&host.id, "test").await.unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "revoked");
        let secret = f.authority.storage().host_secrets(&host.id).await.unwrap();
        let secret = secret[0].secret.clone();
        f.authority.shred(&host.id, "test").await.unwrap();
        // Shredding is for good: no state change brings the secret back.
        assert!(
            !f.authority
                .storage()
                .set_host_state(&host.id, HostState::Active)
                .await
                .unwrap()
        );
        assert_eq!(
            f.authority
                .reinstate(&host.id, "test")
                .await
                .unwrap_err()
                .code(),
            "shredded"
        );
        assert!(
            f.authority
                .storage()
                .host_secrets(&host.id)
                .await
                .unwrap()
                .is_empty()
        );
        // Nor is it anywhere in the database files (secure_delete, WAL
        // truncated).
        for name in ["keyd.db", "keyd.db-wal"] {
            let bytes = std::fs::read(f.dir.path().join(name)).unwrap_or_default();
            assert!(
                !bytes.windows(32).any(|w| w == &secret[..]),
                "{name} still holds the shredded secret"
            );
        }
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "shredded");
    }

    #[tokio::test]
    async fn host_a_cannot_get_host_b_answer() {
        let f = fixture().await;
        let a = enroll_host(&f, "a").await;
        let b = enroll_host(&f, "b").await;
        // A signs a request naming B.
        let (signed, _) = request(&f, &a.identity, &b.id, &b.binding);
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "bad_signature"
        );
        // A asks under its own name for B's keyslot.
        let (signed, _) = request(&f, &a.identity, &a.id, &b.binding);
        assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "unknown_key");
    }

    #[tokio::test]
    async fn stale_requests_and_unknown_hosts_are_refused() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        f.clock.0.fetch_add(301_000, Ordering::SeqCst);
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "stale_request"
        );
        let stranger = HostId::new("nobody").unwrap();
        let (signed, _) = request(&f, &host.identity, &stranger, &host.binding);
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "unknown_host"
        );
    }

    #[tokio::test]
    async fn policies_deny_and_hold() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(
                &PolicyScope::Group("web".into()),
                rule(Policy::Approve),
                "test",
            )
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert!(matches!(
            unlock(&f, &signed).await.unwrap(),
            UnlockOutcome::Pending { .. }
        ));
        // The host's own policy wins over its group's.
        f.authority
            .set_policy(
                &PolicyScope::Host(host.id.clone()),
                rule(Policy::Deny),
                "test",
            )
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "denied");
    }

    #[tokio::test]
    async fn no_release_when_the_audit_cannot_be_written() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.audit_fails.store(true, Ordering::SeqCst);
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "audit_unavailable"
        );
    }

    fn pending(outcome: UnlockOutcome) -> PendingView {
        match outcome {
            UnlockOutcome::Pending { view, .. } => *view,
            UnlockOutcome::Granted(_) => panic!("granted"),
        }
    }

    async fn unlock_boot(
        f: &Fixture,
        host: &Host,
        boot: &str,
    ) -> (Result<UnlockOutcome, AuthorityError>, UnblindingState) {
        let (signed, state) = request_at_boot(f, &host.identity, &host.id, &host.binding, boot);
        (unlock(f, &signed).await, state)
    }

    fn poll_token(f: &Fixture, id: &str) -> String {
        f.poll_tokens
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    async fn poll_now(f: &Fixture, id: &str) -> Result<UnlockOutcome, AuthorityError> {
        f.authority
            .poll(id, &poll_token(f, id), Duration::ZERO)
            .await
    }

    #[tokio::test]
    async fn a_held_request_is_released_once_approved() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(
                &PolicyScope::Host(host.id.clone()),
                rule(Policy::Approve),
                "test",
            )
            .await
            .unwrap();
        let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
        let view = pending(unlock(&f, &signed).await.unwrap());
        assert_eq!(view.state, PendingState::Pending);
        assert!(
            view.reason.contains("requires an approver"),
            "{}",
            view.reason
        );
        assert_eq!(f.authority.pending().len(), 1);
        // Still pending when polled.
        pending(poll_now(&f, &view.id).await.unwrap());
        // A waiting poll is woken by the decision.
        let waiter = {
            let authority = f.authority.clone();
            let id = view.id.clone();
            let token = poll_token(&f, &id);
            tokio::spawn(async move { authority.poll(&id, &token, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        let decided = f.authority.decide(&view.id, true, "alice").await.unwrap();
        assert_eq!(decided.state, PendingState::Approved);
        let grant = granted(waiter.await.unwrap().unwrap());
        assert_eq!(
            state.unblind(&grant.response).unwrap().expose(),
            host.key.expose()
        );
        // Polling again gives the same answer, and one release in the log.
        let again = granted(poll_now(&f, &view.id).await.unwrap());
        assert_eq!(again.audit_seq, grant.audit_seq);
        let log = entries(&f).await;
        let released = log
            .iter()
            .filter(|e| e.details.contains("\"released\"") && e.details.contains(&view.id))
            .count();
        assert_eq!(released, 1);
        assert!(
            log.iter()
                .any(|e| e.kind == EntryKind::Approval && e.actor == "alice")
        );
        // A host cannot pile up held requests.
        for _ in 0..crate::approval::MAX_PENDING_PER_HOST {
            let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
            pending(unlock(&f, &signed).await.unwrap());
        }
        // Asking again is "busy, retry" (429), not a denial: a copy of the
        // host's identity can fill these slots, and the real host must
        // keep asking.
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "too_many_pending"
        );
        // Deciding twice is refused.
        assert_eq!(
            f.authority
                .decide(&view.id, false, "bob")
                .await
                .unwrap_err()
                .code(),
            "already_decided"
        );
    }

    #[tokio::test]
    async fn held_requests_can_be_denied_and_expire_to_deny() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(
                &PolicyScope::Group("web".into()),
                rule(Policy::Approve),
                "test",
            )
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        let denied = pending(unlock(&f, &signed).await.unwrap());
        f.authority
            .decide(&denied.id, false, "alice")
            .await
            .unwrap();
        assert_eq!(poll_now(&f, &denied.id).await.unwrap_err().code(), "denied");

        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        let waiting = pending(unlock(&f, &signed).await.unwrap());
        f.clock.0.fetch_add(601_000, Ordering::SeqCst);
        f.authority.maintain().await;
        assert_eq!(
            poll_now(&f, &waiting.id).await.unwrap_err().code(),
            "expired"
        );
        assert_eq!(
            f.authority
                .decide(&waiting.id, true, "alice")
                .await
                .unwrap_err()
                .code(),
            "already_decided"
        );
        assert!(f.authority.pending().is_empty());
        assert!(
            entries(&f)
                .await
                .iter()
                .any(|e| e.details.contains("\"expired\""))
        );
        assert_eq!(
            poll_now(&f, "no-such-request").await.unwrap_err().code(),
            "unknown_request"
        );
    }

    #[tokio::test]
    async fn revoking_a_host_denies_its_held_requests() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        let view = pending(unlock(&f, &signed).await.unwrap());
        f.authority.revoke(&host.id, "test").await.unwrap();
        assert_eq!(poll_now(&f, &view.id).await.unwrap_err().code(), "denied");
    }

    #[tokio::test]
    async fn an_unannounced_reboot_is_held_and_a_planned_one_is_not() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        // First boot after enrollment, then the same boot again: released.
        granted(unlock_boot(&f, &host, BOOT_A).await.0.unwrap());
        granted(unlock_boot(&f, &host, BOOT_A).await.0.unwrap());
        // A new boot nobody announced: held, and the reason says why.
        let view = pending(unlock_boot(&f, &host, "b00b").await.0.unwrap());
        assert!(
            view.reason.contains("unaccounted reboot"),
            "{}",
            view.reason
        );
        assert_eq!(view.boot, "unannounced");
        f.authority.decide(&view.id, true, "alice").await.unwrap();
        let approved = granted(poll_now(&f, &view.id).await.unwrap());
        let b00b_ticket = approved.boot_ticket.expect("a new boot gets a ticket");
        let notice_from = |boot: &str, ticket: Option<BootTicket>| {
            let signed = host.identity.sign_reboot(atrest_remote::RebootNotice {
                host_id: host.id.clone(),
                boot_id: BootId::new(boot).unwrap(),
                nonce: RequestNonce::random(),
                timestamp: T0,
            });
            atrest_remote::SignedRebootNotice {
                boot_ticket: ticket,
                ..signed
            }
        };
        // A copy of the disk has the identity but not the running boot's
        // ticket: it cannot announce a reboot, under any boot id...
        for (boot, ticket) in [
            ("b00b", None),
            ("made-up", None),
            ("made-up", Some(b00b_ticket.clone())),
            ("b00b", Some(BootTicket::random())),
        ] {
            assert_eq!(
                f.authority
                    .announce_reboot(&notice_from(boot, ticket), CTX)
                    .await
                    .unwrap_err()
                    .code(),
                "unproven_boot"
            );
        }
        // ...nor pass for the running boot: held, with the reason.
        let (signed, _) = request_at_boot(&f, &host.identity, &host.id, &host.binding, "b00b");
        let clone = SignedUnlockRequest {
            boot_ticket: None,
            ..signed
        };
        let held = pending(unlock(&f, &clone).await.unwrap());
        assert_eq!(held.boot, "unproven");
        assert!(held.reason.contains("boot ticket"), "{}", held.reason);
        // The running boot, with its ticket, is itself.
        let (signed, _) = request_at_boot(&f, &host.identity, &host.id, &host.binding, "b00b");
        let signed = SignedUnlockRequest {
            boot_ticket: Some(b00b_ticket.clone()),
            ..signed
        };
        let same = granted(unlock(&f, &signed).await.unwrap());
        assert!(same.boot_ticket.is_none(), "a proven boot keeps its ticket");
        // Announced from boot b00b: the next boot is released at once...
        let notice = notice_from("b00b", Some(b00b_ticket));
        f.authority.announce_reboot(&notice, CTX).await.unwrap();
        // ...and the same notice cannot be replayed.
        assert_eq!(
            f.authority
                .announce_reboot(&notice, CTX)
                .await
                .unwrap_err()
                .code(),
            "replayed_nonce"
        );
        let (outcome, state) = unlock_boot(&f, &host, "c0ffee").await;
        let grant = granted(outcome.unwrap());
        assert_eq!(
            state.unblind(&grant.response).unwrap().expose(),
            host.key.expose()
        );
        // The announcement is used up by that boot.
        pending(unlock_boot(&f, &host, "d00d").await.0.unwrap());
        // A host whose rule denies unannounced reboots is refused outright.
        f.authority
            .set_policy(
                &PolicyScope::Host(host.id.clone()),
                PolicyRule {
                    policy: Policy::Auto,
                    unannounced_reboot: Policy::Deny,
                },
                "test",
            )
            .await
            .unwrap();
        assert_eq!(
            unlock_boot(&f, &host, "e0e0").await.0.unwrap_err().code(),
            "denied"
        );
        // An announcement older than the window no longer counts.
        let notice = notice_from("c0ffee", ticket(&f, &host.id, "c0ffee"));
        f.authority.announce_reboot(&notice, CTX).await.unwrap();
        f.clock.0.fetch_add(3_601_000, Ordering::SeqCst);
        assert_eq!(
            unlock_boot(&f, &host, "f0f0").await.0.unwrap_err().code(),
            "denied"
        );
    }

    #[tokio::test]
    async fn boot_states_survive_a_restart() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &signed).await.unwrap());
        let f = restart(f).await;
        assert_eq!(
            f.authority
                .host(&host.id)
                .unwrap()
                .boot
                .last_boot_id
                .as_deref(),
            Some(BOOT_A)
        );
        let (signed, _) =
            request_at_boot(&f, &host.identity, &host.id, &host.binding, "another-boot");
        pending(unlock(&f, &signed).await.unwrap());
    }

    #[tokio::test]
    async fn a_captured_request_cannot_be_replayed_after_a_restart() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &signed).await.unwrap());
        let f = restart(f).await;
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "replayed_nonce"
        );
        // A fresh request works.
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        granted(unlock(&f, &signed).await.unwrap());
    }

    /// The nonces of bind requests and reboot notices are read back from
    /// the log too.
    #[tokio::test]
    async fn captured_binds_and_notices_cannot_be_replayed_after_a_restart() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let (outcome, _) = unlock_boot(&f, &host, BOOT_A).await;
        let ticket = granted(outcome.unwrap()).boot_ticket;
        let bind = host.identity.sign_bind(atrest_remote::BindRequest {
            host_id: host.id.clone(),
            nonce: RequestNonce::random(),
            timestamp: T0,
        });
        f.authority.bind(&bind, CTX).await.unwrap();
        let notice = atrest_remote::SignedRebootNotice {
            boot_ticket: ticket,
            ..host.identity.sign_reboot(atrest_remote::RebootNotice {
                host_id: host.id.clone(),
                boot_id: BootId::new(BOOT_A).unwrap(),
                nonce: RequestNonce::random(),
                timestamp: T0,
            })
        };
        f.authority.announce_reboot(&notice, CTX).await.unwrap();
        let f = restart(f).await;
        assert_eq!(
            f.authority.bind(&bind, CTX).await.unwrap_err().code(),
            "replayed_nonce"
        );
        assert_eq!(
            f.authority
                .announce_reboot(&notice, CTX)
                .await
                .unwrap_err()
                .code(),
            "replayed_nonce"
        );
    }

    #[tokio::test]
    async fn a_rotated_host_rebinds_and_the_old_secret_goes() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        let old_secret = f.authority.storage().host_secrets(&host.id).await.unwrap()[0]
            .secret
            .clone();
        let view = f.authority.rotate(&host.id, "test").await.unwrap();
        assert_eq!(view.record.previous_key_id, Some(host.binding.key_id()));
        // Not again before the host re-bound: its keyslots use the old key.
        assert_eq!(
            f.authority
                .rotate(&host.id, "test")
                .await
                .unwrap_err()
                .code(),
            "rebind_pending"
        );
        // The old keyslot still opens, and is told the new key.
        let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
        let grant = granted(unlock(&f, &signed).await.unwrap());
        assert_eq!(
            state.unblind(&grant.response).unwrap().expose(),
            host.key.expose()
        );
        let rebind = grant.rebind.expect("a rebind after rotation");
        assert_eq!(rebind.key_id, view.record.key_id);
        // The host re-binds to the new key; its first unlock retires the old.
        let (binding, key) = enroll(&rebind.exchange_key);
        let (signed, state) = request(&f, &host.identity, &host.id, &binding);
        let grant = granted(unlock(&f, &signed).await.unwrap());
        assert!(grant.rebind.is_none());
        assert_eq!(
            state.unblind(&grant.response).unwrap().expose(),
            key.expose()
        );
        assert_eq!(
            f.authority.host(&host.id).unwrap().record.previous_key_id,
            None
        );
        assert_eq!(
            f.authority
                .storage()
                .host_secrets(&host.id)
                .await
                .unwrap()
                .len(),
            1
        );
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "unknown_key");
        // Retired as a shred is: no copy in the database or its WAL.
        for name in ["keyd.db", "keyd.db-wal"] {
            let bytes = std::fs::read(f.dir.path().join(name)).unwrap_or_default();
            assert!(
                !bytes.windows(32).any(|w| w == &old_secret[..]),
                "{name} still holds the retired secret"
            );
        }
    }

    /// Review finding 1: request ids are public (audit log, webhook,
    /// `keyd requests`, the approval page), so a poll by id alone handed
    /// the approved grant and the running boot's ticket to anyone.
    #[tokio::test]
    async fn only_the_requester_collects_a_held_requests_grant() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(
                &PolicyScope::Host(host.id.clone()),
                rule(Policy::Approve),
                "test",
            )
            .await
            .unwrap();
        let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
        let view = pending(unlock(&f, &signed).await.unwrap());
        // The id is in the log for anyone who reads it.
        assert!(
            entries(&f)
                .await
                .iter()
                .any(|e| e.details.contains(&view.id))
        );
        f.authority.decide(&view.id, true, "alice").await.unwrap();
        let other = atrest_core::to_base64url(&atrest_core::random_array::<32>());
        for token in ["", "not-base64url!", other.as_str()] {
            let refused = f
                .authority
                .poll(&view.id, token, Duration::ZERO)
                .await
                .unwrap_err();
            assert_eq!(refused.code(), "bad_poll_token", "token {token:?}");
        }
        // Nothing was released to those polls.
        assert!(
            !entries(&f)
                .await
                .iter()
                .any(|e| e.details.contains("\"released\""))
        );
        let grant = granted(poll_now(&f, &view.id).await.unwrap());
        assert!(grant.boot_ticket.is_some());
        assert_eq!(
            state.unblind(&grant.response).unwrap().expose(),
            host.key.expose()
        );
        // The token did not leak into any view of the request.
        let token = poll_token(&f, &view.id);
        let shown = serde_json::to_string(&f.authority.pending_request(&view.id).unwrap()).unwrap();
        assert!(!shown.contains(&token));
        assert!(!entries(&f).await.iter().any(|e| e.details.contains(&token)));
    }

    /// Review finding 4: two polls of one approved request released twice,
    /// and the second ticket replaced the first.
    #[tokio::test]
    async fn concurrent_polls_of_an_approved_request_release_once() {
        let f = fixture().await;
        let host = enroll_host(&f, "web-1").await;
        f.authority
            .set_policy(
                &PolicyScope::Host(host.id.clone()),
                rule(Policy::Approve),
                "test",
            )
            .await
            .unwrap();
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        let view = pending(unlock(&f, &signed).await.unwrap());
        f.authority.decide(&view.id, true, "alice").await.unwrap();
        let token = poll_token(&f, &view.id);
        let polls: Vec<_> = (0..8)
            .map(|_| {
                let authority = f.authority.clone();
                let (id, token) = (view.id.clone(), token.clone());
                tokio::spawn(async move { authority.poll(&id, &token, Duration::ZERO).await })
            })
            .collect();
        let mut grants = Vec::new();
        for poll in polls {
            grants.push(granted(poll.await.unwrap().unwrap()));
        }
        let first = &grants[0];
        for grant in &grants {
            assert_eq!(grant.audit_seq, first.audit_seq);
            assert_eq!(grant.boot_ticket, first.boot_ticket);
        }
        let released = entries(&f)
            .await
            .iter()
            .filter(|e| e.details.contains("\"released\"") && e.details.contains(&view.id))
            .count();
        assert_eq!(released, 1);
        // The ticket every poll got is the one the authority holds.
        let boot = f.authority.inner.boots.get(&host.id);
        assert_eq!(
            boot.ticket_hash,
            first.boot_ticket.as_ref().map(BootTicket::hash)
        );
    }

    /// Review finding 5: the host was committed before its enrollment was
    /// logged, so a crash in between left a host the log never mentions.
    #[tokio::test]
    async fn no_host_exists_before_its_enrollment_is_logged() {
        let f = fixture().await;
        let token = f.authority.create_token("web", 3600, "test").await.unwrap();
        let identity = HostIdentity::generate();
        let gate = f.audit_gate.clone();
        let permits = gate.acquire_many(GATE_PERMITS).await.unwrap();
        let enrolling = {
            let authority = f.authority.clone();
            let public_key = identity.public_key();
            tokio::spawn(async move {
                authority
                    .enroll(&token.token, "web-1", public_key, CTX)
                    .await
            })
        };
        // The audit writer is inside its commit of the enrollment entry.
        f.audit_entered.notified().await;
        let stored = f.authority.storage().hosts().await.unwrap();
        assert!(
            stored.is_empty(),
            "the host is stored before its entry is durable: {stored:?}"
        );
        drop(permits);
        enrolling.await.unwrap().unwrap();
        assert_eq!(f.authority.storage().hosts().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_enrollment_the_log_cannot_record_does_not_happen() {
        let f = fixture().await;
        let token = f.authority.create_token("web", 3600, "test").await.unwrap();
        let identity = HostIdentity::generate();
        f.audit_fails.store(true, Ordering::SeqCst);
        let err = f
            .authority
            .enroll(&token.token, "web-1", identity.public_key(), CTX)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "audit_unavailable");
        assert!(f.authority.host(&HostId::new("web-1").unwrap()).is_err());
        f.audit_fails.store(false, Ordering::SeqCst);
        // The token was given back; the name is free.
        f.authority
            .enroll(&token.token, "web-1", identity.public_key(), CTX)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_flood_of_refusals_is_summarized() {
        let f = fixture_with(AuthorityOptions {
            refusal_entries_per_second: 3,
            ..AuthorityOptions::default()
        })
        .await;
        let host = enroll_host(&f, "web-1").await;
        let stranger = HostId::new("stranger").unwrap();
        for _ in 0..10 {
            let (signed, _) = request(&f, &host.identity, &stranger, &host.binding);
            assert_eq!(
                unlock(&f, &signed).await.unwrap_err().code(),
                "unknown_host"
            );
        }
        f.authority.maintain().await;
        let log = entries(&f).await;
        let single = log
            .iter()
            .filter(|e| e.details.contains("\"outcome\":\"unknown_host\""))
            .count();
        assert_eq!(single, 3);
        let summary = log
            .iter()
            .find(|e| e.details.contains("refusals_summarized"))
            .expect("a summary entry");
        assert!(
            summary.details.contains("\"unknown_host\":7"),
            "{}",
            summary.details
        );
    }

    #[tokio::test]
    async fn approvers_log_in_with_a_totp_code_once() {
        let f = fixture().await;
        let approver = f.authority.add_approver("alice", "test").await.unwrap();
        assert!(approver.otpauth_uri.starts_with("otpauth://totp/"));
        let code = crate::approval::totp_code(&approver.secret, "alice", T0).unwrap();
        assert_eq!(
            f.authority
                .check_approver("alice", "000000x")
                .await
                .unwrap_err()
                .code(),
            "bad_code"
        );
        f.authority.check_approver("alice", &code).await.unwrap();
        assert_eq!(
            f.authority
                .check_approver("alice", &code)
                .await
                .unwrap_err()
                .code(),
            "bad_code"
        );
        assert_eq!(
            f.authority
                .check_approver("mallory", &code)
                .await
                .unwrap_err()
                .code(),
            "bad_code"
        );
    }
}
