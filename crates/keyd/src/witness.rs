//! The authority as the witness of each format 2 vault's latest
//! generation (docs/format.md §16.17): what the disk alone cannot prove,
//! that it is not an earlier copy of itself.
//!
//! - [`Authority::report_generation`] (`POST /v1/generation`): a host's
//!   signed report, from the boot the authority released to (its boot
//!   ticket), moves the witnessed generation `W` of (host, vault) forward;
//!   one that goes back (`generation_regressed`) or does not descend from
//!   `W` (`generation_forked`) is refused and logged.
//! - [`GenerationStatus::judge`]: the table of §16.17.3, for an unlock's
//!   claim (the `rollback` rule of [`crate::policy::verdict`]) and for a
//!   report alike.
//! - A release of an older or forked copy (approved, or an `auto` rule)
//!   is remembered: the host's next report with reason
//!   `rollback_accepted` is taken once, whatever its lineage.

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{
    Generation, GenerationClaim, HostId, Lineage, ReportReason, SignedGenerationReport,
    to_base64url,
};
use atrest_wire::GenerationReply;
use serde::Serialize;

use crate::authority::{ACTOR, Authority, RequestContext, check_state};
use crate::error::AuthorityError;
use crate::events::{AuditEvent, GenerationEvent, GenerationFields, GenerationJudged};
use crate::policy::BootStatus;
use crate::storage::{Storage, StoredGeneration};

/// How a vault's state stands against the witnessed generation `W`
/// (format.md §16.17.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationStatus {
    /// Nothing witnessed yet for this vault.
    First,
    /// `W` is the vault's generation or in its lineage, and its config is
    /// not older than `W`'s.
    Current,
    /// Behind `W`: a lower sequence number, or an older config. An
    /// earlier copy was put back.
    Older,
    /// Not behind `W`, yet not descended from it: another copy of the
    /// vault was written meanwhile.
    Forked,
}

impl GenerationStatus {
    /// Judges a vault at `generation` (descending from `lineage`, config
    /// generation `config`) against `witnessed`.
    pub fn judge(
        generation: &Generation,
        config: u64,
        lineage: &Lineage,
        witnessed: Option<&StoredGeneration>,
    ) -> Self {
        let Some(w) = witnessed else {
            return Self::First;
        };
        let config_older = config < w.config_generation;
        let same = generation.seq == w.generation.seq && generation.chain == w.generation.chain;
        if (same || lineage.contains(&w.generation))
            && generation.seq >= w.generation.seq
            && !config_older
        {
            Self::Current
        } else if generation.seq < w.generation.seq || config_older {
            Self::Older
        } else {
            Self::Forked
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Current => "current",
            Self::Older => "older",
            Self::Forked => "forked",
        }
    }

    /// Older or forked: what the `rollback` rule is for.
    pub fn is_rollback(self) -> bool {
        matches!(self, Self::Older | Self::Forked)
    }
}

/// An unlock request's claim, judged: what the verdict and the log see.
pub(crate) struct JudgedClaim {
    pub status: GenerationStatus,
    pub claimed: GenerationFields,
    pub witnessed: Option<StoredGeneration>,
}

impl JudgedClaim {
    /// The reason the `rollback` rule is asked about, naming both
    /// generations; `None` unless older or forked.
    pub fn rollback_reason(&self) -> Option<String> {
        let w = self
            .witnessed
            .as_ref()
            .filter(|_| self.status.is_rollback())?;
        let what = match self.status {
            GenerationStatus::Older => "is older than",
            _ => "does not descend from",
        };
        Some(format!(
            "the vault on disk {what} the generation this authority witnessed: disk checkpoint \
             {} (sequence {}, config generation {}), witnessed checkpoint {} (sequence {}, \
             config generation {}, reported at {} ms by a {} report)",
            self.claimed.k,
            self.claimed.seq,
            self.claimed.config_generation,
            w.generation.checkpoint,
            w.generation.seq,
            w.config_generation,
            w.reported_at_ms,
            reason_name(w.reason),
        ))
    }

    /// The `generation` of the decision's audit entry.
    pub fn audit(&self) -> GenerationJudged {
        GenerationJudged {
            status: self.status.name().into(),
            claimed: self.claimed.clone(),
            witnessed: self.witnessed.as_ref().map(GenerationFields::witnessed),
        }
    }
}

/// The reason's name on the wire and in the log (`mount`, `unmount`, …).
pub(crate) fn reason_name(reason: ReportReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl GenerationFields {
    pub(crate) fn of(generation: &Generation, config_generation: u64) -> Self {
        Self {
            k: generation.checkpoint,
            seq: generation.seq,
            chain: to_base64url(&generation.chain),
            config_generation,
            reported_at_ms: None,
            reason: None,
        }
    }

    pub(crate) fn witnessed(w: &StoredGeneration) -> Self {
        Self {
            reported_at_ms: Some(w.reported_at_ms),
            reason: Some(reason_name(w.reason)),
            ..Self::of(&w.generation, w.config_generation)
        }
    }
}

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Judges an unlock request's claim about `vault_id` of `host`.
    pub(crate) async fn judge_claim(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
        claim: &GenerationClaim,
    ) -> Result<JudgedClaim, AuthorityError> {
        let witnessed = self.storage().vault_generation(host, vault_id).await?;
        let status = GenerationStatus::judge(
            &claim.generation(),
            claim.config_generation,
            &claim.lineage,
            witnessed.as_ref(),
        );
        Ok(JudgedClaim {
            status,
            claimed: GenerationFields::of(&claim.generation(), claim.config_generation),
            witnessed,
        })
    }

    /// At a release of a request that carried a claim: remembers an
    /// older or forked copy as an approved rollback (the release is its
    /// approval: by a person, or by an `auto` rule), and returns the
    /// generation witnessed, for the grant.
    pub(crate) async fn witnessed_at_release(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
        claim: &GenerationClaim,
    ) -> Result<Option<atrest_wire::WitnessedGeneration>, AuthorityError> {
        let judged = self.judge_claim(host, vault_id, claim).await?;
        if judged.status.is_rollback() {
            self.storage().approve_rollback(host, vault_id).await?;
        }
        Ok(judged.witnessed.as_ref().map(StoredGeneration::witnessed))
    }

    /// `POST /v1/generation`: checks a host's signed report (host,
    /// signature, clock, state, nonce, the current boot's ticket), judges
    /// it against the stored generation and, if it moves forward (or
    /// repeats it), stores it durably before answering. Refusals are
    /// logged; of accepted reports, the first of each boot and those at
    /// mount, unmount, lock, repair, migrate and an accepted rollback are
    /// logged, periodic ones and heartbeats only stored.
    pub async fn report_generation(
        &self,
        signed: &SignedGenerationReport,
        context: RequestContext,
    ) -> Result<GenerationReply, AuthorityError> {
        let report = &signed.report;
        let event = |outcome: &str, previous: Option<&StoredGeneration>| {
            AuditEvent::Generation(GenerationEvent {
                generation_report: reason_name(report.reason),
                outcome: outcome.into(),
                vault_id: to_base64url(&report.vault_id),
                boot_id: report.boot_id.as_str().to_owned(),
                nonce: to_base64url(&report.nonce.0),
                source: context.source_text(),
                reported: GenerationFields::of(&report.generation(), report.config_generation),
                witnessed: previous.map(GenerationFields::witnessed),
            })
        };
        let checked = async {
            let entry = self.current_host(&report.host_id).await?;
            let verified = atrest_remote::verify_report(
                signed,
                &entry.record.public_key,
                self.now(),
                self.options().max_skew,
            )?;
            check_state(&entry.record)?;
            self.spend_nonce(report.nonce.0, report.timestamp).await?;
            // Only the boot the authority released to reports: a copy of
            // the disk (or of the identity) has no ticket.
            let boot = BootStatus::of(
                &self.boot_state(&entry.record.id).await?,
                report.boot_id.as_str(),
                signed.boot_ticket.as_ref(),
                self.now(),
            );
            if boot != BootStatus::Same {
                return Err(AuthorityError::UnprovenBoot(entry.record.id.clone()));
            }
            let previous = self
                .storage()
                .vault_generation(&entry.record.id, report.vault_id)
                .await?;
            Ok::<_, AuthorityError>((verified, previous))
        }
        .await;
        let (verified, previous) = match checked {
            Ok(pair) => pair,
            Err(e) => {
                self.refused(EntryKind::Request, report.host_id.as_str(), &e, || {
                    event(e.code(), None)
                })
                .await;
                return Err(e);
            }
        };
        let report = verified.report();
        let judged = self.judge_report(report, previous.as_ref());
        let stored = match judged {
            Ok(stored) => stored,
            Err(e) => {
                self.refused(EntryKind::Request, report.host_id.as_str(), &e, || {
                    event(e.code(), previous.as_ref())
                })
                .await;
                return Err(e);
            }
        };
        if !self.storage().save_vault_generation(&stored).await? {
            // Another replica stored a later report meanwhile.
            let e = self.regressed(report, previous.as_ref());
            self.refused(EntryKind::Request, report.host_id.as_str(), &e, || {
                event(e.code(), previous.as_ref())
            })
            .await;
            return Err(e);
        }
        let first_of_boot = previous
            .as_ref()
            .is_none_or(|p| p.boot_id != report.boot_id.as_str());
        let routine = matches!(
            report.reason,
            ReportReason::Periodic | ReportReason::Heartbeat
        );
        let audit_seq = if first_of_boot || !routine {
            // Stored first: the host's disk is at this generation whether
            // or not the log takes the entry; if it does not, the host is
            // told so (and reports again).
            let receipt = self
                .audit()
                .append(
                    NewEntry::new(EntryKind::Request, ACTOR)
                        .subject(report.host_id.as_str())
                        .details(event("witnessed", previous.as_ref()).details()),
                )
                .await?;
            Some(receipt.seq)
        } else {
            None
        };
        Ok(GenerationReply {
            witnessed: stored.witnessed(),
            audit_seq,
        })
    }

    /// The generation to store for `report`, or why it is refused.
    fn judge_report(
        &self,
        report: &atrest_remote::GenerationReport,
        previous: Option<&StoredGeneration>,
    ) -> Result<StoredGeneration, AuthorityError> {
        let status = GenerationStatus::judge(
            &report.generation(),
            report.config_generation,
            &report.lineage,
            previous,
        );
        let rollback_accepted = report.reason == ReportReason::RollbackAccepted
            && previous.is_some_and(|p| p.rollback_approved && report.seq > p.generation.seq);
        match status {
            GenerationStatus::First | GenerationStatus::Current => {}
            _ if rollback_accepted => {}
            GenerationStatus::Older => return Err(self.regressed(report, previous)),
            GenerationStatus::Forked => {
                return Err(AuthorityError::GenerationForked {
                    host: report.host_id.clone(),
                    vault: to_base64url(&report.vault_id),
                    reported: report.seq,
                    witnessed: previous.map_or(0, |p| p.generation.seq),
                });
            }
        }
        Ok(StoredGeneration {
            host_id: report.host_id.clone(),
            vault_id: report.vault_id,
            generation: report.generation(),
            config_generation: report.config_generation,
            reported_at_ms: self.now_ms(),
            boot_id: report.boot_id.as_str().to_owned(),
            reason: report.reason,
            // Until the host's report of the accepted rollback.
            rollback_approved: previous.is_some_and(|p| p.rollback_approved)
                && report.reason != ReportReason::RollbackAccepted,
        })
    }

    fn regressed(
        &self,
        report: &atrest_remote::GenerationReport,
        previous: Option<&StoredGeneration>,
    ) -> AuthorityError {
        AuthorityError::GenerationRegressed {
            host: report.host_id.clone(),
            vault: to_base64url(&report.vault_id),
            reported: report.seq,
            witnessed: previous.map_or(0, |p| p.generation.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(seq: u64, chain: u8) -> Generation {
        Generation {
            checkpoint: seq / 10,
            seq,
            chain: [chain; 32],
        }
    }

    fn witnessed(seq: u64, chain: u8, config: u64) -> StoredGeneration {
        StoredGeneration {
            host_id: HostId::new("web-1").unwrap(),
            vault_id: [7; 16],
            generation: generation(seq, chain),
            config_generation: config,
            reported_at_ms: 1,
            boot_id: "b00b".into(),
            reason: ReportReason::Unmount,
            rollback_approved: false,
        }
    }

    /// Every row of format.md §16.17.3's table.
    #[test]
    fn judges_by_the_table() {
        use GenerationStatus::*;
        let w = witnessed(100, 1, 3);
        let lineage = |gs: &[Generation]| Lineage::new(gs.to_vec()).unwrap();
        let cases = [
            // (generation, config, lineage, witnessed, expected)
            (
                generation(100, 1),
                3,
                lineage(&[generation(100, 1)]),
                None,
                First,
            ),
            (
                generation(100, 1),
                3,
                lineage(&[generation(100, 1)]),
                Some(&w),
                Current,
            ),
            (
                generation(120, 2),
                3,
                lineage(&[generation(120, 2), generation(100, 1)]),
                Some(&w),
                Current,
            ),
            (
                generation(120, 2),
                4,
                lineage(&[generation(120, 2), generation(100, 1)]),
                Some(&w),
                Current,
            ),
            // Behind W, or its config is.
            (
                generation(90, 9),
                3,
                lineage(&[generation(90, 9)]),
                Some(&w),
                Older,
            ),
            (
                generation(120, 2),
                2,
                lineage(&[generation(120, 2), generation(100, 1)]),
                Some(&w),
                Older,
            ),
            // W in the lineage of a claim behind it (an edited lineage).
            (
                generation(90, 9),
                3,
                lineage(&[generation(100, 1)]),
                Some(&w),
                Older,
            ),
            // Not behind, not descended.
            (
                generation(120, 2),
                3,
                lineage(&[generation(120, 2), generation(100, 5)]),
                Some(&w),
                Forked,
            ),
            (
                generation(100, 5),
                3,
                lineage(&[generation(100, 5)]),
                Some(&w),
                Forked,
            ),
        ];
        for (g, config, lineage, witnessed, expected) in cases {
            assert_eq!(
                GenerationStatus::judge(&g, config, &lineage, witnessed),
                expected,
                "{g:?} config {config}"
            );
        }
    }
}
