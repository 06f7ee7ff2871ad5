//! Requests held for a person: holding one (audited, webhook), approve and
//! deny (by the CLI or the web page), expiry (default: deny) and long polls
//! by the host, whose approved grant is made once. The requests are rows
//! of the store ([`crate::held`] encodes them), so any replica shows,
//! decides and releases them and a restart forgets none. Every transition
//! is claimed by one conditional update, so two processes never log the
//! same decision or release the same request twice.

use std::time::Duration;

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{HostId, RequestSignature, VerifiedRequest, to_base64url};

use crate::authority::{ACTOR, Authority, RequestContext, UnlockOutcome};
use crate::error::AuthorityError;
use crate::events::{ApprovedReleaseEvent, AuditEvent, HeldEvent};
use crate::held::{Held, PendingState, PendingView, PollToken};
use crate::policy::BootStatus;
use crate::state::HostEntry;
use crate::storage::{HeldState, HoldOutcome, Storage};

/// How often a waiting poll re-reads its request, for a decision made by
/// another replica (one made by this process wakes it at once).
const RECHECK: Duration = Duration::from_millis(250);

/// How long a poll waits for the answer another poll (on any replica) is
/// making for the same approved request before it gives up.
const GRANT_WAIT: Duration = Duration::from_secs(30);

/// How long decided requests stay answerable to the host's poll.
const KEEP_DECIDED: u64 = 600;

/// Why a request is held: the policy's reason, and the vault's claim
/// judged against its witnessed generation (format 2), for the log.
pub(crate) struct HoldReason {
    pub reason: String,
    pub generation: Option<crate::events::GenerationJudged>,
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Holds a verified request for an approver and notifies (webhook).
    pub(crate) async fn hold(
        &self,
        entry: &HostEntry,
        verified: &VerifiedRequest,
        signature: &RequestSignature,
        boot: &BootStatus,
        why: HoldReason,
        context: RequestContext,
    ) -> Result<(PendingView, PollToken), AuthorityError> {
        let HoldReason { reason, generation } = why;
        let request = verified.request();
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
        let (stored, poll_token) = Held::create(view.clone(), verified, signature, boot)?;
        // The store counts the host's waiting requests and inserts in one
        // transaction: a burst on several replicas cannot pass the limit.
        if let HoldOutcome::Full { waiting } = self.storage().insert_held(&stored, now).await? {
            // A host cannot fill the approvers' page, the log or the
            // database. Not a denial: whoever holds a copy of the host's
            // identity can fill these slots, and the real host must keep
            // asking (429) rather than give up for good.
            return Err(AuthorityError::TooManyPending {
                host: entry.record.id.clone(),
                waiting,
            });
        }
        let logged = self
            .audit()
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
                            generation,
                        })
                        .details(),
                    ),
            )
            .await;
        if let Err(e) = logged {
            // Not held after all: nobody may approve what the log lacks.
            if let Err(forget) = self.storage().delete_pending_held(&id).await {
                tracing::warn!(error = %forget, request = id, "could not drop an unaudited held request; it expires");
            }
            return Err(e.into());
        }
        self.metrics().unlock("pending");
        if let Some(notify) = &self.options().on_pending {
            notify(&view);
        }
        Ok((view, poll_token))
    }

    async fn load_held(&self, id: &str) -> Result<Held, AuthorityError> {
        let stored = self
            .storage()
            .held(id)
            .await?
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))?;
        Held::decode(stored)
    }

    /// Requests still waiting, oldest first, whichever replica holds them.
    pub async fn pending(&self) -> Result<Vec<PendingView>, AuthorityError> {
        self.storage()
            .waiting_held(self.now())
            .await?
            .into_iter()
            .map(|stored| Held::decode(stored).map(|held| held.view))
            .collect()
    }

    pub async fn pending_request(&self, id: &str) -> Result<PendingView, AuthorityError> {
        Ok(self.load_held(id).await?.view)
    }

    /// An approver's (or operator's) decision on a held request.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
    ) -> Result<PendingView, AuthorityError> {
        let held = self.load_held(id).await?;
        let now = self.now();
        // Claim the decision first, so two deciders (on any replica)
        // cannot both be logged.
        let claimed = self
            .storage()
            .move_held(
                id,
                HeldState::Pending,
                HeldState::Deciding,
                None,
                Some((now, false)),
            )
            .await?;
        if !claimed {
            if held.state == HeldState::Pending && held.view.expires_at <= now {
                self.expire_pending().await;
                return Err(AuthorityError::Expired);
            }
            let state = match self.load_held(id).await?.state {
                HeldState::Pending | HeldState::Deciding => "being decided",
                other => PendingState::of(other).as_str(),
            };
            return Err(AuthorityError::AlreadyDecided {
                id: id.to_owned(),
                state,
            });
        }
        let (state, stored) = if approve {
            (PendingState::Approved, HeldState::Approved)
        } else {
            (PendingState::Denied, HeldState::Denied)
        };
        let view = held.view;
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
            self.unclaim(id, HeldState::Deciding, HeldState::Pending)
                .await;
            return Err(e.into());
        }
        self.storage()
            .move_held(id, HeldState::Deciding, stored, Some(approver), None)
            .await?;
        self.held_changed().notify_waiters();
        Ok(PendingView {
            state,
            decided_by: Some(approver.to_owned()),
            ..view
        })
    }

    /// Gives a claim up (what it was for could not be written); the
    /// request is as it was before.
    async fn unclaim(&self, id: &str, claimed: HeldState, back: HeldState) {
        if let Err(e) = self
            .storage()
            .move_held(id, claimed, back, None, None)
            .await
        {
            tracing::warn!(error = %e, request = id, "could not give up a claim on a held request");
        }
        self.held_changed().notify_waiters();
    }

    /// The host's poll: waits up to `wait` for a decision, then answers as
    /// `unlock` would. `poll_token` is the one the held request's answer
    /// gave (base64url); without it nothing is answered. Any replica
    /// answers it.
    pub async fn poll(
        &self,
        id: &str,
        poll_token: &str,
        wait: Duration,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Listening before the read: a decision made here after it
            // still wakes this poll.
            let changed = self.held_changed().notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let held = self.load_held(id).await?;
            let token = held.check_poll_token(poll_token)?;
            match held.state {
                HeldState::Approved | HeldState::Released => {
                    return self.grant_approved(held, &token).await;
                }
                HeldState::Denied => {
                    return Err(AuthorityError::Denied {
                        host: held.view.host_id,
                        reason: format!(
                            "{} denied the request",
                            held.view.decided_by.as_deref().unwrap_or("an approver")
                        ),
                    });
                }
                HeldState::Expired => return Err(AuthorityError::Expired),
                HeldState::Pending | HeldState::Deciding if held.view.expires_at <= self.now() => {
                    self.expire_pending().await;
                    return Err(AuthorityError::Expired);
                }
                HeldState::Pending | HeldState::Deciding => {}
            }
            let until_expiry = Duration::from_secs(held.view.expires_at.saturating_sub(self.now()));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(UnlockOutcome::Pending {
                    view: Box::new(held.view),
                    poll_token: None,
                });
            }
            let step = left
                .min(until_expiry.max(Duration::from_millis(100)))
                .min(RECHECK);
            // Woken by a decision here, or to look again.
            let _ = tokio::time::timeout(step, changed).await;
        }
    }

    /// The answer to an approved request: made once, by the poll that
    /// claims its release in the store; every other poll, on any replica,
    /// gets the same answer, sealed in the store under the poll token.
    async fn grant_approved(
        &self,
        mut held: Held,
        token: &PollToken,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let id = held.view.id.clone();
        let give_up = tokio::time::Instant::now() + GRANT_WAIT;
        loop {
            let changed = self.held_changed().notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(sealed) = &held.sealed_grant {
                let grant = token.open_grant(&id, sealed)?;
                return Ok(UnlockOutcome::Granted(Box::new(grant)));
            }
            if held.state == HeldState::Approved
                && self
                    .storage()
                    .move_held(&id, HeldState::Approved, HeldState::Released, None, None)
                    .await?
            {
                return self.release_held(&held, token).await;
            }
            if !matches!(held.state, HeldState::Approved | HeldState::Released)
                || tokio::time::Instant::now() >= give_up
            {
                // Released by a poll whose answer never reached the store
                // (its process died): nothing more is released for this
                // request, the host asks again.
                return Err(AuthorityError::AlreadyDecided {
                    id,
                    state: "released, and its answer was lost; ask again",
                });
            }
            // Another poll, here or on another replica, is making the
            // answer: woken when it is kept here, else look again.
            let _ = tokio::time::timeout(RECHECK, changed).await;
            held = self.load_held(&id).await?;
        }
    }

    /// Releases an approved request whose release this poll claimed, and
    /// keeps the answer (sealed) for the request's other polls.
    async fn release_held(
        &self,
        held: &Held,
        token: &PollToken,
    ) -> Result<UnlockOutcome, AuthorityError> {
        let view = &held.view;
        let made = async {
            let entry = self.known_host(&view.host_id).await?;
            // Verified again: only what the host signed is answered,
            // whatever the row says.
            let verified = held.verified(&entry.record.public_key, self.options().max_skew)?;
            let request = verified.request();
            let details = AuditEvent::ApprovedRelease(ApprovedReleaseEvent {
                outcome: "released".into(),
                request_id: view.id.clone(),
                approved_by: view.decided_by.clone(),
                boot: view.boot.clone(),
                boot_id: view.boot_id.clone(),
                keyslot: request.keyslot,
                vault_id: to_base64url(&request.vault_id),
                key_id: request.key_id.to_string(),
                nonce: Some(to_base64url(&request.nonce.0)),
                source: view.source.clone(),
            })
            .details();
            // Its nonce was spent when it was held.
            let hold = self.hold_release(entry, None).await?;
            self.release(hold, &verified, &held.boot, details).await
        }
        .await;
        let grant = match made {
            Ok(grant) => grant,
            Err(e) => {
                // Nothing was answered: the next poll may try again.
                self.unclaim(&view.id, HeldState::Released, HeldState::Approved)
                    .await;
                return Err(e);
            }
        };
        let kept = match token.seal_grant(&view.id, &grant) {
            Ok(sealed) => self
                .storage()
                .store_held_grant(&view.id, &sealed)
                .await
                .map_err(AuthorityError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, request = view.id, "could not keep a released answer for later polls");
        }
        self.held_changed().notify_waiters();
        Ok(UnlockOutcome::Granted(Box::new(grant)))
    }

    /// Denies, by expiry, every request that waited too long (each by one
    /// replica), and forgets decided ones after a while.
    pub async fn expire_pending(&self) {
        let now = self.now();
        let expired = match self.storage().expired_held_ids(now).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not read held requests to expire; will retry");
                Vec::new()
            }
        };
        for id in expired {
            if let Err(e) = self.expire(&id, now).await {
                tracing::warn!(error = %e, request = id, "could not expire a held request; will retry");
            }
        }
        if let Err(e) = self
            .storage()
            .prune_held(now.saturating_sub(KEEP_DECIDED))
            .await
        {
            tracing::warn!(error = %e, "could not forget old held requests; will retry");
        }
    }

    async fn expire(&self, id: &str, now: u64) -> Result<(), AuthorityError> {
        let held = self.load_held(id).await?;
        let claimed = self
            .storage()
            .move_held(
                id,
                HeldState::Pending,
                HeldState::Deciding,
                None,
                Some((now, true)),
            )
            .await?;
        if !claimed {
            // Decided, or expired by another replica, meanwhile.
            return Ok(());
        }
        let logged = self
            .audit()
            .append(
                NewEntry::new(EntryKind::Decision, ACTOR)
                    .subject(held.view.host_id.as_str())
                    .details(AuditEvent::expired(id.to_owned(), held.view.reason).details()),
            )
            .await;
        if let Err(e) = logged {
            self.unclaim(id, HeldState::Deciding, HeldState::Pending)
                .await;
            return Err(e.into());
        }
        self.storage()
            .move_held(id, HeldState::Deciding, HeldState::Expired, None, None)
            .await?;
        self.held_changed().notify_waiters();
        self.metrics().unlock("expired");
        Ok(())
    }

    /// Denies the held requests of a host that was revoked or shredded.
    pub(crate) async fn deny_pending_of(&self, host: &HostId, actor: &str) {
        let waiting = match self.pending().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, host = %host, "could not read the held requests to deny");
                return;
            }
        };
        for view in waiting.into_iter().filter(|v| &v.host_id == host) {
            if let Err(e) = self.decide(&view.id, false, actor).await {
                tracing::warn!(error = %e, request = view.id, "could not deny a held request");
            }
        }
    }
}
