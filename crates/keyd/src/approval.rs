//! Requests held for a person: the pending table, approve and deny (by the
//! CLI or the web page), expiry (default: deny), long polls by the host,
//! and approvers who log in with a TOTP code.
//!
//! Held requests live in memory: after a restart a waiting host simply
//! asks again (its poll gets `unknown_request`) and a new request is held.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{HostId, VerifiedRequest, to_base64url};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::authority::{
    ACTOR, Authority, AuthorityError, BootStatus, Grant, RequestContext, UnlockOutcome,
};
use crate::events::{ApprovedReleaseEvent, AuditEvent, HeldEvent};
use crate::state::HostEntry;
use crate::storage::Storage;

/// Where a held request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl PendingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }
}

/// A held request as approvers, operators and the host see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingView {
    pub id: String,
    pub host_id: HostId,
    pub group: String,
    pub boot_id: String,
    /// `first`, `same`, `planned` or `unannounced`.
    pub boot: String,
    pub source: String,
    pub reason: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub state: PendingState,
    pub decided_by: Option<String>,
    /// The vault (base64url of its id), keyslot and host key id the request
    /// is for, so an approver sees what would open.
    #[serde(default)]
    pub vault_id: String,
    #[serde(default)]
    pub keyslot: u8,
    #[serde(default)]
    pub key_id: String,
    /// The boot the authority last released to, and when, as the request
    /// was held: what this boot claims to follow.
    #[serde(default)]
    pub last_boot_id: Option<String>,
    #[serde(default)]
    pub last_unlock_at: Option<u64>,
}

struct PendingEntry {
    view: PendingView,
    verified: VerifiedRequest,
    /// How the request's boot was judged when it was held.
    boot: BootStatus,
    /// SHA-256 of the poll token only the requester was given.
    poll_token_hash: [u8; 32],
    /// The grant, made once: concurrent polls wait for the one that makes
    /// it, then all get that answer; the log gets one release and the boot
    /// one ticket.
    grant: Arc<tokio::sync::Mutex<Option<Grant>>>,
    /// A decision is being written to the log: a second decider is told
    /// it was already decided, and the host still sees "pending".
    deciding: bool,
    changed: watch::Sender<PendingState>,
}

#[derive(Default)]
pub(crate) struct PendingRequests(Mutex<HashMap<String, PendingEntry>>);

/// Held requests one host may have waiting at once.
pub const MAX_PENDING_PER_HOST: usize = 8;

/// How long decided requests stay answerable to the host's poll.
const KEEP_DECIDED: u64 = 600;

impl PendingRequests {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, PendingEntry>) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The secret a held request's answer gives its requester, which its polls
/// must carry. Request ids are shown to approvers, operators and webhooks;
/// this is not, so nobody else can collect the grant (and its boot ticket).
#[derive(Clone)]
pub struct PollToken([u8; 32]);

impl PollToken {
    fn random() -> Self {
        Self(atrest_core::random_array())
    }

    fn hash(&self) -> [u8; 32] {
        atrest_core::sha256(&self.0)
    }
}

impl fmt::Display for PollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(&self.0))
    }
}

impl fmt::Debug for PollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PollToken([redacted])")
    }
}

impl Drop for PollToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A new approver's TOTP secret, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewApprover {
    pub name: String,
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    pub otpauth_uri: String,
}

fn totp_for(name: &str, secret: Vec<u8>) -> Result<Totp, AuthorityError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_account_name(name)
        .with_issuer(Some("atrest keyd"))
        .build()
        .map_err(|_| {
            AuthorityError::InvalidField(atrest_remote::InvalidField {
                field: "approver",
                rule: "a name usable in an otpauth URI",
            })
        })
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Holds a verified request for an approver and notifies (webhook).
    pub(crate) async fn hold(
        &self,
        entry: &HostEntry,
        verified: VerifiedRequest,
        boot: &BootStatus,
        reason: String,
        context: RequestContext,
    ) -> Result<(PendingView, PollToken), AuthorityError> {
        let request = verified.request();
        let waiting = self.inner.pending.with(|map| {
            map.values()
                .filter(|e| {
                    e.view.host_id == entry.record.id && e.view.state == PendingState::Pending
                })
                .count()
        });
        if waiting >= MAX_PENDING_PER_HOST {
            // A host cannot fill the approvers' page, the log or memory. Not
            // a denial: whoever holds a copy of the host's identity can fill
            // these slots, and the real host must keep asking (429) rather
            // than give up for good.
            return Err(AuthorityError::TooManyPending {
                host: entry.record.id.clone(),
                waiting,
            });
        }
        // Never starts with `-`, so `atrest keyd approve ID` parses.
        let id = format!("req_{}", to_base64url(&atrest_core::random_array::<16>()));
        let now = self.now();
        let last_boot = self.inner.boots.get(&entry.record.id);
        let view = PendingView {
            id: id.clone(),
            host_id: entry.record.id.clone(),
            group: entry.record.group.clone(),
            boot_id: request.boot_id.as_str().to_owned(),
            boot: boot.name().to_owned(),
            source: context.source_text(),
            reason,
            created_at: now,
            expires_at: now.saturating_add(self.inner.options.approval_timeout),
            state: PendingState::Pending,
            decided_by: None,
            vault_id: to_base64url(&request.vault_id),
            keyslot: request.keyslot,
            key_id: request.key_id.to_string(),
            last_boot_id: last_boot.last_boot_id,
            last_unlock_at: last_boot.last_unlock_at,
        };
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Decision, ACTOR)
                    .subject(entry.record.id.as_str())
                    .details(
                        AuditEvent::Held(HeldEvent {
                            outcome: "pending".into(),
                            request_id: id.clone(),
                            reason: view.reason.clone(),
                            boot: view.boot.clone(),
                            boot_id: view.boot_id.clone(),
                            keyslot: request.keyslot,
                            vault_id: to_base64url(&request.vault_id),
                            key_id: request.key_id.to_string(),
                            nonce: to_base64url(&request.nonce.0),
                            source: view.source.clone(),
                            expires_at: view.expires_at,
                        })
                        .details(),
                    ),
            )
            .await?;
        let (changed, _) = watch::channel(PendingState::Pending);
        let poll_token = PollToken::random();
        self.inner.pending.with(|map| {
            map.insert(
                id,
                PendingEntry {
                    view: view.clone(),
                    verified,
                    boot: boot.clone(),
                    poll_token_hash: poll_token.hash(),
                    grant: Arc::default(),
                    deciding: false,
                    changed,
                },
            )
        });
        self.inner.metrics.unlock("pending");
        if let Some(notify) = &self.inner.options.on_pending {
            notify(&view);
        }
        Ok((view, poll_token))
    }

    /// Requests still waiting, oldest first.
    pub fn pending(&self) -> Vec<PendingView> {
        let now = self.now();
        let mut all: Vec<_> = self.inner.pending.with(|map| {
            map.values()
                .filter(|e| e.view.state == PendingState::Pending && e.view.expires_at > now)
                .map(|e| e.view.clone())
                .collect()
        });
        all.sort_by_key(|v| v.created_at);
        all
    }

    pub fn pending_request(&self, id: &str) -> Result<PendingView, AuthorityError> {
        self.inner
            .pending
            .with(|map| map.get(id).map(|e| e.view.clone()))
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))
    }

    /// An approver's (or operator's) decision on a held request.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
    ) -> Result<PendingView, AuthorityError> {
        // Claim the decision first, so two deciders cannot both be logged.
        let view = self.inner.pending.with(|map| {
            let entry = map
                .get_mut(id)
                .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))?;
            if entry.view.state != PendingState::Pending || entry.deciding {
                let state = if entry.deciding {
                    "being decided"
                } else {
                    entry.view.state.as_str()
                };
                return Err(AuthorityError::AlreadyDecided {
                    id: id.to_owned(),
                    state,
                });
            }
            entry.deciding = true;
            Ok(entry.view.clone())
        })?;
        let unclaim = || {
            self.inner.pending.with(|map| {
                if let Some(entry) = map.get_mut(id) {
                    entry.deciding = false;
                }
            });
        };
        if view.expires_at <= self.now() {
            unclaim();
            self.expire_pending().await;
            return Err(AuthorityError::Expired);
        }
        let state = if approve {
            PendingState::Approved
        } else {
            PendingState::Denied
        };
        let logged = self
            .inner
            .audit
            .append(
                NewEntry::new(EntryKind::Approval, approver)
                    .subject(view.host_id.as_str())
                    .details(
                        AuditEvent::Decided {
                            request_id: id.to_owned(),
                            decision: state.as_str().into(),
                            reason: view.reason.clone(),
                            boot_id: view.boot_id.clone(),
                        }
                        .details(),
                    ),
            )
            .await;
        if let Err(e) = logged {
            unclaim();
            return Err(e.into());
        }
        self.set_pending_state(id, state, Some(approver))
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))
    }

    fn set_pending_state(
        &self,
        id: &str,
        state: PendingState,
        by: Option<&str>,
    ) -> Option<PendingView> {
        self.inner.pending.with(|map| {
            let entry = map.get_mut(id)?;
            if entry.view.state == PendingState::Pending {
                entry.deciding = false;
                entry.view.state = state;
                entry.view.decided_by = by.map(str::to_owned);
                entry.changed.send_replace(state);
            }
            Some(entry.view.clone())
        })
    }

    /// The host's poll: waits up to `wait` for a decision, then answers as
    /// `unlock` would. `poll_token` is the one the held request's answer
    /// gave (base64url); without it nothing is answered.
    pub async fn poll(
        &self,
        id: &str,
        poll_token: &str,
        wait: Duration,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let presented = atrest_remote::from_base64url::<32>(poll_token)
            .map(|t| atrest_core::sha256(&t))
            .unwrap_or_default();
        let mut changed = self
            .inner
            .pending
            .with(|map| {
                map.get(id).map(|e| {
                    atrest_core::constant_time_eq(&presented, &e.poll_token_hash)
                        .then(|| e.changed.subscribe())
                })
            })
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))?
            .ok_or(AuthorityError::BadPollToken)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let view = self.pending_request(id)?;
            match view.state {
                PendingState::Approved => return self.grant_approved(id).await,
                PendingState::Denied => {
                    return Err(AuthorityError::Denied {
                        host: view.host_id,
                        reason: format!(
                            "{} denied the request",
                            view.decided_by.as_deref().unwrap_or("an approver")
                        ),
                    });
                }
                PendingState::Expired => return Err(AuthorityError::Expired),
                PendingState::Pending if view.expires_at <= self.now() => {
                    self.expire_pending().await;
                    return Err(AuthorityError::Expired);
                }
                PendingState::Pending => {}
            }
            let until_expiry = Duration::from_secs(view.expires_at.saturating_sub(self.now()));
            let step = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(until_expiry.max(Duration::from_millis(100)));
            if step.is_zero() {
                return Ok(UnlockOutcome::Pending {
                    view: Box::new(view),
                    poll_token: None,
                });
            }
            // Woken by a decision, or at the deadline to answer "pending".
            let _ = tokio::time::timeout(step, changed.changed()).await;
        }
    }

    async fn grant_approved(&self, id: &str) -> Result<UnlockOutcome, AuthorityError> {
        let (view, verified, boot, grant) = self
            .inner
            .pending
            .with(|map| {
                map.get(id).map(|e| {
                    (
                        e.view.clone(),
                        e.verified.clone(),
                        e.boot.clone(),
                        e.grant.clone(),
                    )
                })
            })
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))?;
        // One release per approved request, however many polls race here:
        // the first makes the grant while holding the slot, the others wait
        // for it and share it (a failed attempt leaves it empty).
        let mut slot = grant.lock().await;
        if let Some(grant) = slot.as_ref() {
            return Ok(UnlockOutcome::Granted(Box::new(grant.clone())));
        }
        let entry = self
            .inner
            .hosts
            .get(&view.host_id)
            .ok_or_else(|| AuthorityError::UnknownHost(view.host_id.clone()))?;
        let request = verified.request();
        let details = AuditEvent::ApprovedRelease(ApprovedReleaseEvent {
            outcome: "released".into(),
            request_id: id.to_owned(),
            approved_by: view.decided_by,
            boot: view.boot,
            boot_id: view.boot_id,
            keyslot: request.keyslot,
            vault_id: to_base64url(&request.vault_id),
            key_id: request.key_id.to_string(),
            source: view.source,
        })
        .details();
        let grant = self.release(&entry, &verified, &boot, details).await?;
        *slot = Some(grant.clone());
        Ok(UnlockOutcome::Granted(Box::new(grant)))
    }

    /// Denies, by expiry, every request that waited too long, and forgets
    /// decided ones after a while.
    pub async fn expire_pending(&self) {
        let now = self.now();
        let expired: Vec<PendingView> = self.inner.pending.with(|map| {
            map.retain(|_, e| {
                e.view.state == PendingState::Pending
                    || e.view.expires_at.saturating_add(KEEP_DECIDED) > now
            });
            map.values()
                .filter(|e| e.view.state == PendingState::Pending && e.view.expires_at <= now)
                .map(|e| e.view.clone())
                .collect()
        });
        for view in expired {
            let logged = self
                .inner
                .audit
                .append(
                    NewEntry::new(EntryKind::Decision, ACTOR)
                        .subject(view.host_id.as_str())
                        .details(
                            AuditEvent::expired(view.id.clone(), view.reason.clone()).details(),
                        ),
                )
                .await;
            if let Err(e) = logged {
                tracing::warn!(error = %e, "could not audit an expiry; will retry");
                continue;
            }
            self.set_pending_state(&view.id, PendingState::Expired, None);
            self.inner.metrics.unlock("expired");
        }
    }

    /// Denies the held requests of a host that was revoked or shredded.
    pub(crate) async fn deny_pending_of(&self, host: &HostId, actor: &str) {
        let ids: Vec<String> = self.inner.pending.with(|map| {
            map.values()
                .filter(|e| &e.view.host_id == host && e.view.state == PendingState::Pending)
                .map(|e| e.view.id.clone())
                .collect()
        });
        for id in ids {
            if let Err(e) = self.decide(&id, false, actor).await {
                tracing::warn!(error = %e, request = id, "could not deny a held request");
            }
        }
    }

    /// Adds (or replaces) an approver with a fresh TOTP secret.
    pub async fn add_approver(
        &self,
        name: &str,
        actor: &str,
    ) -> Result<NewApprover, AuthorityError> {
        HostId::new(name)?;
        let secret: [u8; 20] = atrest_core::random_array();
        let totp = totp_for(name, secret.to_vec())?;
        self.inner
            .audit
            .append(
                NewEntry::new(EntryKind::Authority, actor)
                    .subject(name)
                    .details(AuditEvent::approver_added().details()),
            )
            .await?;
        self.inner
            .storage
            .put_approver(name, &secret, self.now())
            .await?;
        Ok(NewApprover {
            name: name.to_owned(),
            secret: Secret::from(secret.to_vec()).to_base32(),
            otpauth_uri: totp.to_url().map_err(|_| {
                AuthorityError::InvalidField(atrest_remote::InvalidField {
                    field: "approver",
                    rule: "a name usable in an otpauth URI",
                })
            })?,
        })
    }

    /// Checks an approver's TOTP code (this period or the one either side),
    /// each code once.
    pub async fn check_approver(&self, name: &str, code: &str) -> Result<(), AuthorityError> {
        let Some(approver) = self.inner.storage.approver(name).await? else {
            return Err(AuthorityError::BadApproverCode);
        };
        let totp = totp_for(name, approver.totp_secret.to_vec())?;
        let step = totp
            .check(code.trim(), self.now())
            .ok_or(AuthorityError::BadApproverCode)?;
        if step <= approver.last_step || !self.inner.storage.use_approver_step(name, step).await? {
            return Err(AuthorityError::BadApproverCode);
        }
        Ok(())
    }
}

/// Shared so tests and the web page can compute a code.
pub fn totp_code(secret_base32: &str, name: &str, time: u64) -> Option<String> {
    let secret = Secret::try_from_base32(secret_base32).ok()?;
    totp_for(name, secret.as_bytes().to_vec())
        .ok()
        .map(|t| t.generate(time).to_string())
}
