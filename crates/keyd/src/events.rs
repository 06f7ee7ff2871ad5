//! The `details` of every audit entry keyd writes, as one typed value.
//!
//! The field names and shapes are the log's format: hosts, operators and
//! `atrest keyd audit` read them, and keyd reads its own nonces back at
//! start, so a change here is a format change. Each variant serializes to
//! a flat JSON object (no tag), exactly as the entries have always been.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An unlock request's fields that go into the log with its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnlockEvent {
    /// `released`, or the code of the refusal.
    pub outcome: String,
    pub boot_id: String,
    pub keyslot: u8,
    pub vault_id: String,
    /// Absent in entries of the first keyd versions; still read for their
    /// nonces.
    #[serde(default)]
    pub key_id: String,
    pub nonce: String,
    #[serde(default)]
    pub source: String,
    /// How the request's boot was judged (`first`, `same`, ...), once the
    /// request got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// A format 2 vault's claim, judged against the witnessed generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationJudged>,
}

/// A vault's generation in the log (format.md §16.17).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GenerationFields {
    pub k: u64,
    pub seq: u64,
    /// `h_S`, base64url.
    pub chain: String,
    pub config_generation: u64,
    /// A witnessed generation's: when it was reported, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An unlock's claim against the witnessed generation (format.md
/// §16.17.3): `first`, `current`, `older` or `forked`, and both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GenerationJudged {
    pub status: String,
    pub claimed: GenerationFields,
    pub witnessed: Option<GenerationFields>,
}

/// A generation report (`POST /v1/generation`), witnessed or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GenerationEvent {
    /// The report's reason (`mount`, `periodic`, `unmount`, ...): no
    /// other event has this field.
    pub generation_report: String,
    /// `witnessed`, or the code of the refusal.
    pub outcome: String,
    pub vault_id: String,
    pub boot_id: String,
    pub nonce: String,
    pub source: String,
    pub reported: GenerationFields,
    /// The generation witnessed before this report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnessed: Option<GenerationFields>,
}

/// A request held for an approver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldEvent {
    /// Always `pending`.
    pub outcome: String,
    pub request_id: String,
    pub reason: String,
    pub boot: String,
    pub boot_id: String,
    pub keyslot: u8,
    pub vault_id: String,
    pub key_id: String,
    pub nonce: String,
    pub source: String,
    pub expires_at: u64,
    /// A format 2 vault's claim, judged against the witnessed generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationJudged>,
}

/// The release of a held request an approver approved. Its nonce is in
/// the request's `pending` entry too; it is repeated here so that the host
/// that receives this entry with its grant can tell it is its own release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApprovedReleaseEvent {
    /// Always `released`.
    pub outcome: String,
    pub request_id: String,
    /// `null` when nobody is named.
    pub approved_by: Option<String>,
    pub boot: String,
    pub boot_id: String,
    pub keyslot: u8,
    pub vault_id: String,
    pub key_id: String,
    /// Absent in entries written before hosts checked their release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub source: String,
}

/// A reboot notice (`atrest reboot --planned`), accepted or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RebootEvent {
    /// `accepted`, or the code of the refusal.
    pub outcome: String,
    pub boot_id: String,
    pub nonce: String,
    #[serde(default)]
    pub source: String,
    /// Until when the next boot counts as planned (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
}

/// A bind request of an enrolled host, bound or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BindEvent {
    /// `bound`, or the code of the refusal.
    pub outcome: String,
    pub nonce: String,
    #[serde(default)]
    pub source: String,
    /// The exchange key the host was given (bound only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The details of one audit entry. Deserializing tries the variants in
/// order and keeps the first whose fields are all there; the ones that
/// carry a nonce come first, and anything else ends up in [`Self::Other`],
/// so any JSON object reads.
/// One field a scoped request named: `table.column` and the row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScopedItem {
    pub field: String,
    pub row: String,
}

/// A scoped request of an app (issue 12): a decryption, or a refusal of
/// any operation. The scope is the entry's subject; `app:NAME` its actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScopedEvent {
    /// `encrypt`, `decrypt`, `rewrap` or `index`.
    pub scoped: String,
    /// `decrypted`, or the code of the refusal.
    pub outcome: String,
    pub app: String,
    /// Whether the client's share came with the request.
    pub client_share: bool,
    pub items: Vec<ScopedItem>,
    /// Where the request came from.
    pub from: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum AuditEvent {
    /// First: its `scoped` field is in no other event.
    Scoped(ScopedEvent),
    /// `request`: a generation report (before the events whose fields
    /// it also has).
    Generation(GenerationEvent),
    /// A scope or app changed by an operator (or an app creating a scope).
    ScopedChange { scoped_change: String },
    /// `decision`: a request held for an approver.
    Held(HeldEvent),
    /// `decision`: a held request released after its approval (before
    /// `Unlock`, whose fields it has since it names its nonce).
    ApprovedRelease(ApprovedReleaseEvent),
    /// `decision`: an unlock request released or refused.
    Unlock(UnlockEvent),
    /// `reboot_announced`.
    Reboot(RebootEvent),
    /// `enrollment`: a bind request.
    Bind(BindEvent),
    /// `approval`: an approver's (or operator's) decision.
    Decided {
        request_id: String,
        /// `approved` or `denied`.
        decision: String,
        reason: String,
        boot_id: String,
    },
    /// `decision`: a held request nobody decided in time.
    Expired {
        /// Always `expired`.
        outcome: String,
        request_id: String,
        reason: String,
    },
    /// `enrollment`: a host enrolled with a token.
    Enrolled {
        group: String,
        public_key: String,
        key_id: String,
        source: String,
    },
    /// `enrollment`: a refused enrollment (bad token, name taken...).
    EnrollRefused {
        outcome: String,
        public_key: String,
        source: String,
    },
    /// `request`: how many refusals were over the budget, by code.
    RefusalsSummarized {
        /// Always `refusals_summarized`.
        outcome: String,
        counts: BTreeMap<String, u64>,
    },
    /// `enrollment`: logged, then not stored (the enrollment did not
    /// happen). Written by keyd before enrollment became one transaction;
    /// still read in older logs.
    NotEnrolled {
        /// Always `not_enrolled`.
        outcome: String,
        reason: String,
    },
    /// `request`: a request refused before any host was known (malformed,
    /// oversized or slow body).
    RequestRefused { outcome: String, source: String },
    /// `token`: an enrollment token was made.
    Token { expires_at: u64 },
    /// `rotation`: a new exchange secret.
    Rotated {
        new_key_id: String,
        previous_key_id: String,
    },
    /// `rotation`: previous secrets deleted once the host re-bound.
    Retired {
        retired: Vec<String>,
        reason: String,
    },
    /// `revoke` or `shred`: a host's state changed.
    StateChanged { state: String, was: String },
    /// `policy_change`.
    PolicyChanged {
        policy: String,
        unannounced_reboot: String,
        /// Absent in entries written before the witness.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback: Option<String>,
    },
    /// `authority`: the data directory was made.
    Initialized {
        /// Always `initialized`.
        change: String,
        ca_fingerprint: String,
    },
    /// `authority`: a keyd started serving.
    Started {
        /// Always `started`.
        change: String,
        listen: String,
    },
    /// `authority`: an approver added or replaced.
    ApproverAdded {
        /// Always `approver_added`.
        change: String,
    },
    /// Details this version does not write.
    Other(serde_json::Value),
}

impl AuditEvent {
    pub fn expired(request_id: String, reason: String) -> Self {
        Self::Expired {
            outcome: "expired".into(),
            request_id,
            reason,
        }
    }

    pub fn refusals_summarized(counts: impl IntoIterator<Item = (&'static str, u64)>) -> Self {
        Self::RefusalsSummarized {
            outcome: "refusals_summarized".into(),
            counts: counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    pub fn initialized(ca_fingerprint: String) -> Self {
        Self::Initialized {
            change: "initialized".into(),
            ca_fingerprint,
        }
    }

    pub fn started(listen: String) -> Self {
        Self::Started {
            change: "started".into(),
            listen,
        }
    }

    pub fn approver_added() -> Self {
        Self::ApproverAdded {
            change: "approver_added".into(),
        }
    }

    /// The JSON value [`atrest_audit::NewEntry::details`] takes.
    pub fn details(&self) -> serde_json::Value {
        // Plain strings, numbers and string-keyed maps: nothing here can
        // fail to serialize.
        serde_json::to_value(self).expect("audit events serialize")
    }

    /// Reads an entry's details back. Never fails: details of no known
    /// shape (or not JSON) are [`Self::Other`].
    pub fn parse(details: &str) -> Self {
        serde_json::from_str(details)
            .unwrap_or_else(|_| Self::Other(serde_json::Value::String(details.to_owned())))
    }

    /// The request nonce this entry spent, if it records one (base64url of
    /// 16 bytes).
    pub fn nonce(&self) -> Option<[u8; 16]> {
        let text = match self {
            Self::Held(e) => &e.nonce,
            Self::Unlock(e) => &e.nonce,
            Self::Reboot(e) => &e.nonce,
            Self::Bind(e) => &e.nonce,
            Self::Generation(e) => &e.nonce,
            Self::ApprovedRelease(e) => e.nonce.as_ref()?,
            _ => return None,
        };
        atrest_remote::from_base64url::<16>(text)
    }
}

impl From<AuditEvent> for serde_json::Value {
    fn from(event: AuditEvent) -> Self {
        event.details()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NONCE: [u8; 16] = [9; 16];

    fn nonce() -> String {
        atrest_remote::to_base64url(&NONCE)
    }

    fn unlock(outcome: &str, boot: Option<&str>) -> UnlockEvent {
        UnlockEvent {
            outcome: outcome.into(),
            boot_id: "b00b".into(),
            keyslot: 1,
            vault_id: "AAAA".into(),
            key_id: "k1".into(),
            nonce: nonce(),
            source: "192.0.2.1".into(),
            boot: boot.map(str::to_owned),
            generation: None,
        }
    }

    fn held() -> HeldEvent {
        HeldEvent {
            outcome: "pending".into(),
            request_id: "req_1".into(),
            reason: "its policy requires an approver".into(),
            boot: "first".into(),
            boot_id: "b00b".into(),
            keyslot: 1,
            vault_id: "AAAA".into(),
            key_id: "k1".into(),
            nonce: nonce(),
            source: "unknown".into(),
            expires_at: 1_800_000_600,
            generation: None,
        }
    }

    fn reboot(valid_until: Option<u64>) -> RebootEvent {
        RebootEvent {
            outcome: if valid_until.is_some() {
                "accepted"
            } else {
                "replayed_nonce"
            }
            .into(),
            boot_id: "b00b".into(),
            nonce: nonce(),
            source: "unknown".into(),
            valid_until,
        }
    }

    fn generation() -> GenerationEvent {
        GenerationEvent {
            generation_report: "unmount".into(),
            outcome: "witnessed".into(),
            vault_id: "AAAA".into(),
            boot_id: "b00b".into(),
            nonce: nonce(),
            source: "unknown".into(),
            reported: GenerationFields {
                k: 9,
                seq: 120,
                chain: "Ag".into(),
                config_generation: 3,
                reported_at_ms: None,
                reason: None,
            },
            witnessed: Some(GenerationFields {
                k: 8,
                seq: 100,
                chain: "AQ".into(),
                config_generation: 3,
                reported_at_ms: Some(5),
                reason: Some("mount".into()),
            }),
        }
    }

    fn bind(key_id: Option<&str>) -> BindEvent {
        BindEvent {
            outcome: if key_id.is_some() { "bound" } else { "revoked" }.into(),
            nonce: nonce(),
            source: "unknown".into(),
            key_id: key_id.map(str::to_owned),
        }
    }

    /// Every event, with the details the entries have always had (the
    /// `json!` bodies keyd wrote before the events were typed).
    fn every_event() -> Vec<(AuditEvent, serde_json::Value)> {
        let n = nonce();
        vec![
            (
                AuditEvent::Token { expires_at: 60 },
                json!({ "expires_at": 60 }),
            ),
            (
                AuditEvent::EnrollRefused {
                    outcome: "bad_token".into(),
                    public_key: "pk".into(),
                    source: "unknown".into(),
                },
                json!({ "outcome": "bad_token", "public_key": "pk", "source": "unknown" }),
            ),
            (
                AuditEvent::Enrolled {
                    group: "web".into(),
                    public_key: "pk".into(),
                    key_id: "k1".into(),
                    source: "unknown".into(),
                },
                json!({ "group": "web", "public_key": "pk", "key_id": "k1", "source": "unknown" }),
            ),
            (
                AuditEvent::NotEnrolled {
                    outcome: "not_enrolled".into(),
                    reason: "storage_error".into(),
                },
                json!({ "outcome": "not_enrolled", "reason": "storage_error" }),
            ),
            (
                AuditEvent::Bind(bind(None)),
                json!({ "outcome": "revoked", "nonce": n, "source": "unknown" }),
            ),
            (
                AuditEvent::Bind(bind(Some("k1"))),
                json!({ "outcome": "bound", "nonce": n, "source": "unknown", "key_id": "k1" }),
            ),
            (
                AuditEvent::Unlock(unlock("bad_signature", None)),
                json!({
                    "outcome": "bad_signature", "boot_id": "b00b", "keyslot": 1,
                    "vault_id": "AAAA", "key_id": "k1", "nonce": n, "source": "192.0.2.1",
                }),
            ),
            (
                AuditEvent::Unlock(unlock("released", Some("same"))),
                json!({
                    "outcome": "released", "boot_id": "b00b", "keyslot": 1,
                    "vault_id": "AAAA", "key_id": "k1", "nonce": n, "source": "192.0.2.1",
                    "boot": "same",
                }),
            ),
            (
                AuditEvent::Held(held()),
                json!({
                    "outcome": "pending", "request_id": "req_1",
                    "reason": "its policy requires an approver", "boot": "first",
                    "boot_id": "b00b", "keyslot": 1, "vault_id": "AAAA", "key_id": "k1",
                    "nonce": n, "source": "unknown", "expires_at": 1_800_000_600_u64,
                }),
            ),
            (
                AuditEvent::ApprovedRelease(ApprovedReleaseEvent {
                    outcome: "released".into(),
                    request_id: "req_1".into(),
                    approved_by: Some("alice".into()),
                    boot: "unannounced".into(),
                    boot_id: "b00b".into(),
                    keyslot: 1,
                    vault_id: "AAAA".into(),
                    key_id: "k1".into(),
                    nonce: Some(n.clone()),
                    source: "unknown".into(),
                }),
                json!({
                    "outcome": "released", "request_id": "req_1", "approved_by": "alice",
                    "boot": "unannounced", "boot_id": "b00b", "keyslot": 1,
                    "vault_id": "AAAA", "key_id": "k1", "nonce": n, "source": "unknown",
                }),
            ),
            (
                AuditEvent::ApprovedRelease(ApprovedReleaseEvent {
                    outcome: "released".into(),
                    request_id: "req_1".into(),
                    approved_by: None,
                    boot: "first".into(),
                    boot_id: "b00b".into(),
                    keyslot: 0,
                    vault_id: "AAAA".into(),
                    key_id: "k1".into(),
                    // Entries written before hosts checked their release.
                    nonce: None,
                    source: "unknown".into(),
                }),
                json!({
                    "outcome": "released", "request_id": "req_1", "approved_by": null,
                    "boot": "first", "boot_id": "b00b", "keyslot": 0,
                    "vault_id": "AAAA", "key_id": "k1", "source": "unknown",
                }),
            ),
            (
                AuditEvent::Decided {
                    request_id: "req_1".into(),
                    decision: "approved".into(),
                    reason: "r".into(),
                    boot_id: "b00b".into(),
                },
                json!({ "request_id": "req_1", "decision": "approved", "reason": "r", "boot_id": "b00b" }),
            ),
            (
                AuditEvent::expired("req_1".into(), "r".into()),
                json!({ "outcome": "expired", "request_id": "req_1", "reason": "r" }),
            ),
            (
                AuditEvent::RequestRefused {
                    outcome: "body_too_large".into(),
                    source: "unknown".into(),
                },
                json!({ "outcome": "body_too_large", "source": "unknown" }),
            ),
            (
                AuditEvent::refusals_summarized([("unknown_host", 7), ("bad_signature", 2)]),
                json!({
                    "outcome": "refusals_summarized",
                    "counts": { "unknown_host": 7, "bad_signature": 2 },
                }),
            ),
            (
                AuditEvent::Reboot(reboot(None)),
                json!({ "outcome": "replayed_nonce", "boot_id": "b00b", "nonce": n, "source": "unknown" }),
            ),
            (
                AuditEvent::Reboot(reboot(Some(99))),
                json!({
                    "outcome": "accepted", "boot_id": "b00b", "nonce": n, "source": "unknown",
                    "valid_until": 99,
                }),
            ),
            (
                AuditEvent::Rotated {
                    new_key_id: "k2".into(),
                    previous_key_id: "k1".into(),
                },
                json!({ "new_key_id": "k2", "previous_key_id": "k1" }),
            ),
            (
                AuditEvent::Retired {
                    retired: vec!["k1".into()],
                    reason: "host re-bound".into(),
                },
                json!({ "retired": ["k1"], "reason": "host re-bound" }),
            ),
            (
                AuditEvent::StateChanged {
                    state: "revoked".into(),
                    was: "active".into(),
                },
                json!({ "state": "revoked", "was": "active" }),
            ),
            (
                AuditEvent::PolicyChanged {
                    policy: "approve".into(),
                    unannounced_reboot: "deny".into(),
                    rollback: None,
                },
                json!({ "policy": "approve", "unannounced_reboot": "deny" }),
            ),
            (
                AuditEvent::PolicyChanged {
                    policy: "auto".into(),
                    unannounced_reboot: "approve".into(),
                    rollback: Some("deny".into()),
                },
                json!({ "policy": "auto", "unannounced_reboot": "approve", "rollback": "deny" }),
            ),
            (
                AuditEvent::Generation(generation()),
                json!({
                    "generation_report": "unmount", "outcome": "witnessed", "vault_id": "AAAA",
                    "boot_id": "b00b", "nonce": n, "source": "unknown",
                    "reported": { "k": 9, "seq": 120, "chain": "Ag", "config_generation": 3 },
                    "witnessed": { "k": 8, "seq": 100, "chain": "AQ", "config_generation": 3,
                                   "reported_at_ms": 5, "reason": "mount" },
                }),
            ),
            (
                AuditEvent::initialized("ab:cd".into()),
                json!({ "change": "initialized", "ca_fingerprint": "ab:cd" }),
            ),
            (
                AuditEvent::started("127.0.0.1:8443".into()),
                json!({ "change": "started", "listen": "127.0.0.1:8443" }),
            ),
            (
                AuditEvent::approver_added(),
                json!({ "change": "approver_added" }),
            ),
        ]
    }

    #[test]
    fn each_event_has_the_shape_the_log_always_had() {
        for (event, expected) in every_event() {
            assert_eq!(event.details(), expected, "{event:?}");
            // The same bytes as the old bodies: the entry hash covers them.
            assert_eq!(
                serde_json::to_string(&event.details()).unwrap(),
                serde_json::to_string(&expected).unwrap()
            );
        }
    }

    #[test]
    fn each_event_reads_back_as_itself() {
        for (event, _) in every_event() {
            let text = serde_json::to_string(&event.details()).unwrap();
            assert_eq!(AuditEvent::parse(&text), event, "{text}");
        }
    }

    #[test]
    fn nonces_read_back_from_the_entries_that_spent_them() {
        let spending = [
            AuditEvent::Held(held()),
            AuditEvent::Unlock(unlock("released", Some("first"))),
            AuditEvent::Unlock(unlock("replayed_nonce", None)),
            AuditEvent::Reboot(reboot(Some(1))),
            AuditEvent::Reboot(reboot(None)),
            AuditEvent::Bind(bind(Some("k1"))),
            AuditEvent::Bind(bind(None)),
            AuditEvent::Generation(generation()),
        ];
        for event in spending {
            let text = serde_json::to_string(&event.details()).unwrap();
            assert_eq!(AuditEvent::parse(&text).nonce(), Some(NONCE), "{text}");
        }
        // The first keyd versions logged unlocks without key id and source.
        let old = json!({
            "outcome": "released", "boot_id": "b00b", "keyslot": 0,
            "vault_id": "AAAA", "nonce": nonce(),
        });
        assert_eq!(AuditEvent::parse(&old.to_string()).nonce(), Some(NONCE));
        // Entries without a nonce, or with one that is not 16 bytes, spend
        // none; text that is not JSON still reads.
        for text in [
            r#"{"expires_at":60}"#,
            r#"{"outcome":"bound","nonce":"AAAA","source":"unknown"}"#,
            "not json",
        ] {
            assert_eq!(AuditEvent::parse(text).nonce(), None, "{text}");
        }
    }
}
