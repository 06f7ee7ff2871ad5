//! Requests held for a person: holding one (audited, webhook), approve and
//! deny (by the CLI or the web page), expiry (default: deny) and long polls
//! by the host, whose approved grant is made once. The table itself is
//! [`crate::held`].

use std::time::Duration;

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{HostId, VerifiedRequest, to_base64url};

use crate::authority::{ACTOR, Authority, RequestContext, UnlockOutcome};
use crate::error::AuthorityError;
use crate::events::{ApprovedReleaseEvent, AuditEvent, HeldEvent};
use crate::held::{MAX_PENDING_PER_HOST, PendingState, PendingView, PollToken};
use crate::policy::BootStatus;
use crate::state::HostEntry;
use crate::storage::Storage;

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
        let waiting = self.held().waiting_for(&entry.record.id);
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
        let last_boot = self.boot_state(&entry.record.id).await?;
        let view = PendingView {
            id: id.clone(),
            host_id: entry.record.id.clone(),
            group: entry.record.group.clone(),
            boot_id: request.boot_id.as_str().to_owned(),
            boot: boot.name().to_owned(),
            source: context.source_text(),
            reason,
            created_at: now,
            expires_at: now.saturating_add(self.options().approval_timeout),
            state: PendingState::Pending,
            decided_by: None,
            vault_id: to_base64url(&request.vault_id),
            keyslot: request.keyslot,
            key_id: request.key_id.to_string(),
            last_boot_id: last_boot.last_boot_id,
            last_unlock_at: last_boot.last_unlock_at,
        };
        self.audit()
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
        let poll_token = self.held().insert(view.clone(), verified, boot.clone());
        self.metrics().unlock("pending");
        if let Some(notify) = &self.options().on_pending {
            notify(&view);
        }
        Ok((view, poll_token))
    }

    /// Requests still waiting, oldest first.
    pub fn pending(&self) -> Vec<PendingView> {
        self.held().waiting(self.now())
    }

    pub fn pending_request(&self, id: &str) -> Result<PendingView, AuthorityError> {
        self.held().view(id)
    }

    /// An approver's (or operator's) decision on a held request.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
    ) -> Result<PendingView, AuthorityError> {
        // Claim the decision first, so two deciders cannot both be logged.
        let view = self.held().claim(id)?;
        let unclaim = || self.held().unclaim(id);
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
            .audit()
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
        self.held()
            .settle(id, state, Some(approver))
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))
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
        let mut changed = self.held().subscribe(id, poll_token)?;
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
        let crate::held::Approved {
            view,
            verified,
            boot,
            grant,
        } = self.held().approved(id)?;
        // One release per approved request, however many polls race here:
        // the first makes the grant while holding the slot, the others wait
        // for it and share it (a failed attempt leaves it empty).
        let mut slot = grant.lock().await;
        if let Some(grant) = slot.as_ref() {
            return Ok(UnlockOutcome::Granted(Box::new(grant.clone())));
        }
        let entry = self.known_host(&view.host_id).await?;
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
            nonce: Some(to_base64url(&request.nonce.0)),
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
        let expired = self.held().sweep(now);
        for view in expired {
            let logged = self
                .audit()
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
            self.held().settle(&view.id, PendingState::Expired, None);
            self.metrics().unlock("expired");
        }
    }

    /// Denies the held requests of a host that was revoked or shredded.
    pub(crate) async fn deny_pending_of(&self, host: &HostId, actor: &str) {
        let ids = self.held().waiting_ids_of(host);
        for id in ids {
            if let Err(e) = self.decide(&id, false, actor).await {
                tracing::warn!(error = %e, request = id, "could not deny a held request");
            }
        }
    }
}
