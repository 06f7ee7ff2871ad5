//! Unlock: every check of a signed request before policy, the verdict
//! applied, the release (audit entry first, then the answer), rebinding
//! after a rotation, and reboot notices.

use std::sync::Arc;

use atrest_audit::{
    AuditStore, Checkpoint, Clock, ConsistencyProof, EntryKind, NewEntry, TreeHead, TreeHeadJson,
};
use atrest_remote::{
    BlindedResponse, KeyId, SignedRebootNotice, SignedUnlockRequest, VerifiedRequest, to_base64url,
};
use atrest_wire::{AuditProof, Rebind};
use serde::{Deserialize, Serialize};

use crate::approval::HoldReason;
use crate::authority::{ACTOR, Authority, HeldRelease, RequestContext, UnlockOutcome, check_state};
use crate::error::AuthorityError;
use crate::events::{AuditEvent, RebootEvent, UnlockEvent};
use crate::policy::{BootStatus, Verdict, verdict};
use crate::state::HostEntry;
use crate::storage::{Held, Storage};
use crate::witness::JudgedClaim;

/// A released answer, with the audit proof the host keeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grant {
    pub response: BlindedResponse,
    pub audit_seq: u64,
    pub checkpoint: Option<Checkpoint>,
    pub rebind: Option<Rebind>,
    /// A new boot's ticket (its first release); the host keeps it in RAM.
    pub boot_ticket: Option<atrest_remote::BootTicket>,
    /// The release entry, its batch's signed head and its inclusion proof.
    /// The consistency proof depends on what the asking host kept, so it is
    /// added per answer ([`Authority::consistency_since`]).
    pub audit: AuditProof,
    /// The generation witnessed for the request's vault, when the request
    /// carried a claim (format.md §16.17.3).
    #[serde(default)]
    pub witnessed: Option<atrest_wire::WitnessedGeneration>,
    /// The JSON text of `audit.tree_head`, shared by every grant of its
    /// batch (a version 2 answer splices it in). Not kept with a held
    /// request's grant: an answer read back encodes the head itself.
    #[serde(skip)]
    pub tree_head_json: Option<TreeHeadJson>,
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
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
            generation: None,
        };
        let checked = async {
            let (known, verified) = self.verify_signature(signed).await?;
            // A format 2 vault's claim, against the generation witnessed:
            // judged before the hold, which keeps a connection of the pool
            // (the claim's read takes another).
            let claim = match &request.generation {
                Some(claim) => Some(
                    self.judge_claim(&request.host_id, request.vault_id, claim)
                        .await?,
                ),
                None => None,
            };
            let (hold, verified) = self.hold_request(signed, known, verified).await?;
            Ok::<_, AuthorityError>((hold, verified, claim))
        }
        .await;
        let (hold, verified, claim) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                self.refused(EntryKind::Decision, request.host_id.as_str(), &e, || {
                    AuditEvent::Unlock(details(e.code()))
                })
                .await;
                return Err(e);
            }
        };
        let entry = hold.entry.clone();
        let boot = BootStatus::of(
            &hold.boot,
            request.boot_id.as_str(),
            signed.boot_ticket.as_ref(),
            self.now(),
        );
        let generation = claim.as_ref().map(JudgedClaim::audit);
        // Once the boot (and the claim) are judged, the entry says how.
        let judged = |outcome: &str, boot: &BootStatus| {
            AuditEvent::Unlock(UnlockEvent {
                boot: Some(boot.name().into()),
                generation: generation.clone(),
                ..details(outcome)
            })
        };
        let rollback = claim.as_ref().and_then(JudgedClaim::rollback_reason);
        match verdict(self.rule_for(&entry.record), &boot, rollback.as_deref()) {
            Verdict::Release => {
                let released = judged("released", &boot).details();
                let grant = self.release(hold, &verified, &boot, released).await?;
                Ok(UnlockOutcome::Granted(Box::new(grant)))
            }
            // Not released: the row is let go with the nonce spent (a
            // denied or held request is not answered twice either).
            Verdict::Deny { reason } => {
                hold.commit().await?;
                let e = AuthorityError::Denied {
                    host: entry.record.id.clone(),
                    reason,
                };
                self.refused(EntryKind::Decision, request.host_id.as_str(), &e, || {
                    judged(e.code(), &boot)
                })
                .await;
                Err(e)
            }
            Verdict::Hold { reason } => {
                hold.commit().await?;
                match self
                    .hold(
                        &entry,
                        &verified,
                        &signed.signature,
                        &boot,
                        HoldReason {
                            reason,
                            generation: generation.clone(),
                        },
                        context,
                    )
                    .await
                {
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
        }
    }

    /// The first checks of a request: the host is known and signed it, at
    /// a time within the clock's skew. The signature is checked with the
    /// public key this process read before (a host's key never changes),
    /// so garbage costs no database read.
    async fn verify_signature(
        &self,
        signed: &SignedUnlockRequest,
    ) -> Result<(Arc<HostEntry>, VerifiedRequest), AuthorityError> {
        let known = self.known_host(&signed.request.host_id).await?;
        let verified = atrest_remote::verify(
            signed,
            &known.record.public_key,
            self.now(),
            self.options().max_skew,
        )?;
        Ok((known, verified))
    }

    /// The checks of a verified request on what may change (state, key,
    /// nonce), read under the release's hold in one round trip with the
    /// nonce spent ([`Authority::hold_release`]).
    async fn hold_request(
        &self,
        signed: &SignedUnlockRequest,
        known: Arc<HostEntry>,
        verified: VerifiedRequest,
    ) -> Result<(HeldRelease<'_, S::Held>, VerifiedRequest), AuthorityError> {
        let request = &signed.request;
        let hold = self
            .hold_release(known.clone(), Some((request.nonce.0, request.timestamp)))
            .await?;
        // Only a database restored under a running keyd could change it.
        let verified = if hold.entry.record.public_key == known.record.public_key {
            verified
        } else {
            atrest_remote::verify(
                signed,
                &hold.entry.record.public_key,
                self.now(),
                self.options().max_skew,
            )?
        };
        check_state(&hold.entry.record)?;
        if hold.entry.secret(&request.key_id).is_none() {
            return Err(AuthorityError::UnknownKey(request.key_id));
        }
        if !hold.nonce_fresh {
            return Err(AuthorityError::ReplayedNonce);
        }
        Ok((hold, verified))
    }

    /// Writes the release entry, then (only then) computes the answer, and
    /// records the boot. `boot` is how the request's boot was judged;
    /// `hold`, what the checks read (the host's row and this process's
    /// `changes` lock, both held shared).
    pub(crate) async fn release(
        &self,
        hold: HeldRelease<'_, S::Held>,
        verified: &VerifiedRequest,
        boot: &BootStatus,
        details: serde_json::Value,
    ) -> Result<Grant, AuthorityError> {
        let request = verified.request();
        // Revoke, shred and rotate take the `changes` lock exclusively:
        // from the state check below to the answer, none of this process
        // can land in between, so a "released" entry is never followed by
        // a refusal of the same release (nor a release by a shred that
        // logged first). Another replica's revoke or shred is kept out by
        // the host's row, held (shared) from the state check until the
        // release entry is durable: it commits after this release is
        // logged, or this release saw it.
        let HeldRelease {
            entry: current,
            boot: read_boot,
            held,
            changing,
            ..
        } = hold;
        let host = &current.record.id;
        check_state(&current.record)?;
        let secret = current
            .secret(&request.key_id)
            .ok_or(AuthorityError::UnknownKey(request.key_id))?;
        // Fail closed: the entry is durable before the answer exists.
        let receipt = self
            .audit()
            .append(
                NewEntry::new(EntryKind::Decision, ACTOR)
                    .subject(host.as_str())
                    .details(details),
            )
            .await
            .inspect_err(|_| self.metrics().unlock("audit_unavailable"))?;
        held.commit().await?;
        // Released: an older or forked copy is now an approved rollback,
        // remembered before the answer exists.
        let witnessed = match &request.generation {
            Some(claim) => {
                self.witnessed_at_release(host, request.vault_id, claim)
                    .await?
            }
            None => None,
        };
        let response = secret.respond(verified)?;
        let now = self.now();
        let boot_id = request.boot_id.as_str().to_owned();
        // A boot that has not proven itself (new, or unproven but released
        // by policy or an approver) gets a fresh ticket; the previous one
        // stops working.
        let boot_ticket = (*boot != BootStatus::Same).then(atrest_remote::BootTicket::random);
        let ticket_hash = boot_ticket.as_ref().map(atrest_remote::BootTicket::hash);
        // Durable before the answer: a crash after it must not make this
        // boot's next request look like a first (or unproven) one. The
        // state read under the hold is the stored one: another replica's
        // write of it (a row lock) waited for the hold's commit.
        self.record_boot(host, read_boot, |state| {
            if state.last_boot_id.as_deref() != Some(&boot_id) {
                state.planned_until = None;
                state.planned_from = None;
            }
            if let Some(hash) = ticket_hash {
                state.ticket_hash = Some(hash);
            }
            state.last_boot_id = Some(boot_id);
            state.last_unlock_at = Some(now);
        })
        .await?;
        drop(changing);
        let rebind = self.after_release(&current, &request.key_id).await;
        self.metrics().unlock("released");
        Ok(Grant {
            response,
            audit_seq: receipt.seq,
            checkpoint: receipt
                .checkpoint
                .or_else(|| self.audit().latest_checkpoint()),
            rebind,
            boot_ticket,
            audit: AuditProof {
                entry: receipt.entry,
                tree_head: receipt.tree_head,
                inclusion: receipt.inclusion,
                consistency: None,
            },
            witnessed,
            tree_head_json: receipt.tree_head_json,
        })
    }

    /// The proof that the log of `known` entries (the head a host kept)
    /// is a prefix of the one `head` signs. `None` when the host kept
    /// nothing, or when the log no longer has `known` entries: the host
    /// then finds its head larger than this one and raises a rollback.
    pub fn consistency_since(&self, known: u64, head: &TreeHead) -> Option<ConsistencyProof> {
        if known == 0 || known > head.tree_size {
            return None;
        }
        self.audit()
            .consistency_proof(known, head.tree_size)
            .inspect_err(|e| tracing::warn!(known, error = %e, "no consistency proof"))
            .ok()
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
        let checked = async {
            let entry = self.current_host(&notice.host_id).await?;
            atrest_remote::verify_reboot(
                signed,
                &entry.record.public_key,
                self.now(),
                self.options().max_skew,
            )?;
            check_state(&entry.record)?;
            self.spend_nonce(notice.nonce.0, notice.timestamp).await?;
            let boot = BootStatus::of(
                &self.boot_state(&entry.record.id).await?,
                notice.boot_id.as_str(),
                signed.boot_ticket.as_ref(),
                self.now(),
            );
            if boot != BootStatus::Same {
                return Err(AuthorityError::UnprovenBoot(entry.record.id.clone()));
            }
            Ok::<_, AuthorityError>(entry)
        }
        .await;
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
            .saturating_add(self.options().planned_reboot_window);
        let accepted = RebootEvent {
            valid_until: Some(until),
            ..details("accepted")
        };
        let receipt = self
            .audit()
            .append(
                NewEntry::new(EntryKind::RebootAnnounced, entry.record.id.as_str())
                    .subject(entry.record.id.as_str())
                    .details(AuditEvent::Reboot(accepted).details()),
            )
            .await?;
        let from = notice.boot_id.as_str().to_owned();
        let stored = self.boot_state(&entry.record.id).await?;
        self.record_boot(&entry.record.id, stored, |state| {
            state.planned_until = Some(until);
            state.planned_from = Some(from);
        })
        .await?;
        Ok((receipt.seq, until))
    }
}
