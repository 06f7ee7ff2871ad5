//! The policy verdict: what a host's rule says about a request, given how
//! its boot relates to the last one released to. Pure (no clock, no
//! state), so every combination is tested below.

use serde::{Deserialize, Serialize};

use crate::storage::{BootState, Policy, PolicyRule};

/// How this boot relates to the last one the authority released to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Release,
    Hold { reason: String },
    Deny { reason: String },
}

/// The verdict of `rule` on a request from a boot judged `boot`: the
/// rule's own policy first, then, for a boot nobody accounted for
/// (unannounced or unproven), its `unannounced_reboot` policy, then, for
/// a vault older than or forked from its witnessed generation (`rollback`
/// says how, format.md §16.17.3), its `rollback` policy. Deny wins, then
/// hold (every reason given), then release.
pub(crate) fn verdict(rule: PolicyRule, boot: &BootStatus, rollback: Option<&str>) -> Verdict {
    let mut hold = None;
    match rule.policy {
        Policy::Deny => {
            return Verdict::Deny {
                reason: "its policy is deny".into(),
            };
        }
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
    for (why, policy) in [
        (why, rule.unannounced_reboot),
        (rollback.map(str::to_owned), rule.rollback),
    ] {
        let Some(why) = why else { continue };
        match policy {
            Policy::Deny => return Verdict::Deny { reason: why },
            Policy::Approve => hold = Some(hold.map_or(why.clone(), |h| format!("{h}; {why}"))),
            Policy::Auto => {}
        }
    }
    match hold {
        Some(reason) => Verdict::Hold { reason },
        None => Verdict::Release,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY_DENY: &str = "its policy is deny";
    const APPROVER: &str = "its policy requires an approver";
    const UNANNOUNCED: &str = "unaccounted reboot: the boot id changed from b00b without \
                               `atrest reboot --planned`";
    const UNPROVEN: &str = "the running boot's id without its boot ticket: a copy of this \
                            host's disk, or a host that lost /run";

    fn release() -> Verdict {
        Verdict::Release
    }

    fn hold(reasons: &[&str]) -> Verdict {
        Verdict::Hold {
            reason: reasons.join("; "),
        }
    }

    fn deny(reason: &str) -> Verdict {
        Verdict::Deny {
            reason: reason.into(),
        }
    }

    /// Every rule (policy × unannounced-reboot policy) against every boot
    /// status.
    #[test]
    fn every_rule_and_boot_status() {
        use Policy::{Approve, Auto, Deny};
        let first = BootStatus::First;
        let same = BootStatus::Same;
        let planned = BootStatus::Planned;
        let unannounced = BootStatus::Unannounced {
            previous: "b00b".into(),
        };
        let unproven = BootStatus::Unproven;
        #[rustfmt::skip]
        let table: Vec<(Policy, Policy, &BootStatus, Verdict)> = vec![
            // Policy auto: only an unaccounted boot can hold or deny.
            (Auto, Auto, &first, release()),
            (Auto, Auto, &same, release()),
            (Auto, Auto, &planned, release()),
            (Auto, Auto, &unannounced, release()),
            (Auto, Auto, &unproven, release()),
            (Auto, Approve, &first, release()),
            (Auto, Approve, &same, release()),
            (Auto, Approve, &planned, release()),
            (Auto, Approve, &unannounced, hold(&[UNANNOUNCED])),
            (Auto, Approve, &unproven, hold(&[UNPROVEN])),
            (Auto, Deny, &first, release()),
            (Auto, Deny, &same, release()),
            (Auto, Deny, &planned, release()),
            (Auto, Deny, &unannounced, deny(UNANNOUNCED)),
            (Auto, Deny, &unproven, deny(UNPROVEN)),
            // Policy approve: always held; an unaccounted boot adds its
            // reason, or denies.
            (Approve, Auto, &first, hold(&[APPROVER])),
            (Approve, Auto, &same, hold(&[APPROVER])),
            (Approve, Auto, &planned, hold(&[APPROVER])),
            (Approve, Auto, &unannounced, hold(&[APPROVER])),
            (Approve, Auto, &unproven, hold(&[APPROVER])),
            (Approve, Approve, &first, hold(&[APPROVER])),
            (Approve, Approve, &same, hold(&[APPROVER])),
            (Approve, Approve, &planned, hold(&[APPROVER])),
            (Approve, Approve, &unannounced, hold(&[APPROVER, UNANNOUNCED])),
            (Approve, Approve, &unproven, hold(&[APPROVER, UNPROVEN])),
            (Approve, Deny, &first, hold(&[APPROVER])),
            (Approve, Deny, &same, hold(&[APPROVER])),
            (Approve, Deny, &planned, hold(&[APPROVER])),
            (Approve, Deny, &unannounced, deny(UNANNOUNCED)),
            (Approve, Deny, &unproven, deny(UNPROVEN)),
            // Policy deny: denied whatever the boot.
            (Deny, Auto, &first, deny(POLICY_DENY)),
            (Deny, Auto, &same, deny(POLICY_DENY)),
            (Deny, Auto, &planned, deny(POLICY_DENY)),
            (Deny, Auto, &unannounced, deny(POLICY_DENY)),
            (Deny, Auto, &unproven, deny(POLICY_DENY)),
            (Deny, Approve, &first, deny(POLICY_DENY)),
            (Deny, Approve, &same, deny(POLICY_DENY)),
            (Deny, Approve, &planned, deny(POLICY_DENY)),
            (Deny, Approve, &unannounced, deny(POLICY_DENY)),
            (Deny, Approve, &unproven, deny(POLICY_DENY)),
            (Deny, Deny, &first, deny(POLICY_DENY)),
            (Deny, Deny, &same, deny(POLICY_DENY)),
            (Deny, Deny, &planned, deny(POLICY_DENY)),
            (Deny, Deny, &unannounced, deny(POLICY_DENY)),
            (Deny, Deny, &unproven, deny(POLICY_DENY)),
        ];
        assert_eq!(table.len(), 3 * 3 * 5, "every combination, once");
        for (policy, unannounced_reboot, boot, expected) in table {
            let rule = PolicyRule {
                policy,
                unannounced_reboot,
                rollback: Policy::Deny,
            };
            assert_eq!(
                verdict(rule, boot, None),
                expected,
                "policy {policy:?}, unannounced reboot {unannounced_reboot:?}, boot {boot:?}"
            );
        }
    }

    /// The `rollback` rule applies only to a vault judged older or forked,
    /// after the others: deny wins over any hold, holds add their reasons.
    #[test]
    fn the_rollback_rule_applies_to_a_rolled_back_vault_only() {
        use Policy::{Approve, Auto, Deny};
        const ROLLBACK: &str = "vault older than witnessed";
        let unannounced = BootStatus::Unannounced {
            previous: "b00b".into(),
        };
        #[rustfmt::skip]
        // policy, unannounced reboot, rollback, boot, rollback reason.
        type Row<'a> = (Policy, Policy, Policy, &'a BootStatus, Option<&'a str>, Verdict);
        let table: [Row; 10] = [
            (Auto, Auto, Deny, &BootStatus::Same, None, release()),
            (
                Auto,
                Auto,
                Auto,
                &BootStatus::Same,
                Some(ROLLBACK),
                release(),
            ),
            (
                Auto,
                Auto,
                Approve,
                &BootStatus::Same,
                Some(ROLLBACK),
                hold(&[ROLLBACK]),
            ),
            (
                Auto,
                Auto,
                Deny,
                &BootStatus::Same,
                Some(ROLLBACK),
                deny(ROLLBACK),
            ),
            (
                Approve,
                Auto,
                Approve,
                &BootStatus::Same,
                Some(ROLLBACK),
                hold(&[APPROVER, ROLLBACK]),
            ),
            (
                Approve,
                Auto,
                Deny,
                &BootStatus::Same,
                Some(ROLLBACK),
                deny(ROLLBACK),
            ),
            (
                Auto,
                Approve,
                Approve,
                &unannounced,
                Some(ROLLBACK),
                hold(&[UNANNOUNCED, ROLLBACK]),
            ),
            (
                Auto,
                Deny,
                Approve,
                &unannounced,
                Some(ROLLBACK),
                deny(UNANNOUNCED),
            ),
            (
                Auto,
                Approve,
                Deny,
                &unannounced,
                Some(ROLLBACK),
                deny(ROLLBACK),
            ),
            (
                Deny,
                Auto,
                Auto,
                &BootStatus::Same,
                Some(ROLLBACK),
                deny(POLICY_DENY),
            ),
        ];
        for (policy, unannounced_reboot, rollback, boot, why, expected) in table {
            let rule = PolicyRule {
                policy,
                unannounced_reboot,
                rollback,
            };
            assert_eq!(
                verdict(rule, boot, why),
                expected,
                "{rule:?} {boot:?} {why:?}"
            );
        }
    }

    /// How a boot is judged from the stored state, the request's boot id
    /// and ticket, and the time.
    #[test]
    fn boot_status_of_every_state() {
        let ticket = atrest_remote::BootTicket::random();
        let other = atrest_remote::BootTicket::random();
        let state = |last: Option<&str>, planned: Option<(u64, &str)>| BootState {
            last_boot_id: last.map(str::to_owned),
            ticket_hash: Some(ticket.hash()),
            planned_until: planned.map(|(until, _)| until),
            planned_from: planned.map(|(_, from)| from.to_owned()),
            ..BootState::default()
        };
        let unannounced = BootStatus::Unannounced {
            previous: "a".into(),
        };
        let cases = [
            (state(None, None), "a", None, BootStatus::First),
            (state(Some("a"), None), "a", Some(&ticket), BootStatus::Same),
            (
                state(Some("a"), None),
                "a",
                Some(&other),
                BootStatus::Unproven,
            ),
            (state(Some("a"), None), "a", None, BootStatus::Unproven),
            (state(Some("a"), None), "b", None, unannounced.clone()),
            (
                state(Some("a"), Some((100, "a"))),
                "b",
                None,
                BootStatus::Planned,
            ),
            // Announced, but the window is over...
            (
                state(Some("a"), Some((99, "a"))),
                "b",
                None,
                unannounced.clone(),
            ),
            // ...or the boot is the one that announced.
            (
                state(Some("c"), Some((100, "b"))),
                "b",
                None,
                BootStatus::Unannounced {
                    previous: "c".into(),
                },
            ),
        ];
        for (state, boot_id, ticket, expected) in cases {
            assert_eq!(
                BootStatus::of(&state, boot_id, ticket, 100),
                expected,
                "{state:?} {boot_id}"
            );
        }
    }
}
