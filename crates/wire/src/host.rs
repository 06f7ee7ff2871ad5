//! Bodies of the host routes under `/v1`.

use atrest_audit::{AuditPublicKey, Checkpoint, ConsistencyProof, Entry, InclusionProof, TreeHead};
use atrest_remote::{
    BlindedResponse, BootTicket, ExchangePublicKey, Generation, HostId, HostPublicKey, KeyId,
    ReportReason, RequestNonce,
};
use serde::{Deserialize, Serialize};

use crate::grant::GrantProof;

/// The header a host's poll of its held request carries: the poll token
/// from the 202 answer. Request ids are public (audit log, webhook,
/// approval page); the token is not, so only the requester gets the grant
/// and the boot ticket that comes with it.
pub const POLL_TOKEN_HEADER: &str = "x-atrest-poll-token";

/// The header a host's unlock request and poll carry: the size of the
/// audit tree head it kept from this authority (absent or 0: none yet).
/// The grant then carries the proof that the log only grew since. It is
/// not signed: a changed value only makes the proof fail at the host.
pub const KNOWN_TREE_SIZE_HEADER: &str = "x-atrest-audit-tree-size";

/// With every grant: the proof that the release is in the authority's
/// audit log, and that the log extends the one the host saw before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditProof {
    /// The release's own entry (its details name the request's nonce), as
    /// its JSON text in a string: the entry's details must reach the host
    /// byte for byte to hash the same, and a JSON value nested in a tagged
    /// reply would be re-encoded on the way.
    #[serde(with = "entry_text")]
    pub entry: Entry,
    /// The head signed at the end of the entry's batch.
    pub tree_head: TreeHead,
    /// The entry's leaf under `tree_head`.
    pub inclusion: InclusionProof,
    /// From the size the host sent ([`KNOWN_TREE_SIZE_HEADER`]) to
    /// `tree_head`; absent when the host sent none (or the authority cannot
    /// prove it: the log no longer has that many entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyProof>,
}

impl AuditProof {
    /// Whether the entry is the release that answered this host's request
    /// with `nonce`: a proof about another entry (an older release,
    /// another host's) proves nothing about this one.
    pub fn is_release_of(&self, host: &HostId, nonce: &RequestNonce) -> bool {
        #[derive(Deserialize)]
        struct Details {
            outcome: String,
            nonce: String,
        }
        let entry = &self.entry;
        let details: Option<Details> = serde_json::from_str(&entry.details).ok();
        entry.kind == atrest_audit::EntryKind::Decision
            && entry.subject.as_deref() == Some(host.as_str())
            && details.is_some_and(|d| {
                d.outcome == "released" && d.nonce == atrest_remote::to_base64url(&nonce.0)
            })
    }
}

mod entry_text {
    use atrest_audit::Entry;
    use serde::{Deserialize, Deserializer, Serializer, de, ser};

    pub fn serialize<S: Serializer>(entry: &Entry, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(entry).map_err(ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Entry, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(de::Error::custom)
    }
}

/// `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub host_name: String,
    pub public_key: HostPublicKey,
}

/// `GET /v1/info`: the authority's version and the key its audit log's
/// heads are signed with. Unauthenticated beyond the pinned-CA TLS;
/// `atrest doctor` compares the key with the one a keyslot pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub audit_public_key: AuditPublicKey,
}

/// What a host gets back from enrollment (and from `POST /v1/bind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub host_id: HostId,
    pub group: String,
    /// `S`, the public half of the host's exchange secret.
    pub exchange_key: ExchangePublicKey,
    pub key_id: KeyId,
    /// The key that signs the audit log's heads; the host keeps it to
    /// check the heads and proofs it receives.
    pub audit_public_key: AuditPublicKey,
}

/// After a rotation: the key the host should re-bind its keyslot to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebind {
    pub exchange_key: ExchangePublicKey,
    pub key_id: KeyId,
}

/// `POST /v1/unlock` and `GET /v1/requests/{id}`: granted (200) or held
/// for an approver (202).
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived reply per request; boxing buys nothing"
)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum UnlockReply {
    Granted {
        /// The grant's version: absent (1) from an authority from before
        /// version 2, and for a host that did not ask for 2
        /// ([`GRANT_VERSION_HEADER`](crate::GRANT_VERSION_HEADER)); 2 with
        /// the compact proof, `proof`. Read it with
        /// [`read_grant_proof`](crate::read_grant_proof).
        #[serde(
            default = "crate::grant::version_1",
            skip_serializing_if = "crate::grant::is_version_1"
        )]
        version: u32,
        response: BlindedResponse,
        audit_seq: u64,
        checkpoint: Option<Checkpoint>,
        #[serde(default)]
        rebind: Option<Rebind>,
        /// Set on a boot's first release: the host keeps it in RAM and
        /// sends it with later requests and its reboot notice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_ticket: Option<BootTicket>,
        /// Version 1: the release's place in the verifiable log. A host
        /// that once received one refuses a grant without it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit: Option<Box<AuditProof>>,
        /// The generation this authority witnessed for the request's vault
        /// (format.md §16.17.3), when the request carried a claim and one
        /// is stored: the host checks its authenticated state against it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        witnessed: Option<WitnessedGeneration>,
        /// Version 2: the same proof, compact.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Box<GrantProof>>,
    },
    Pending {
        request_id: String,
        /// Only in the answer to the request that was held (never in a
        /// poll's): the secret the poll must carry ([`POLL_TOKEN_HEADER`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        poll_token: Option<String>,
        #[serde(default)]
        reason: String,
        #[serde(default)]
        expires_at: u64,
    },
}

/// `POST /v1/reboot` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebootReply {
    pub audit_seq: u64,
    pub valid_until: u64,
}

/// A vault's generation as the authority witnessed it (format.md §16.17):
/// the answer to `POST /v1/generation`, and in a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessedGeneration {
    pub checkpoint: u64,
    pub seq: u64,
    #[serde(with = "atrest_core::base64url_array")]
    pub chain: [u8; 32],
    pub config_generation: u64,
    /// When the report that set it arrived, Unix milliseconds.
    pub reported_at_ms: u64,
    pub reason: ReportReason,
}

impl WitnessedGeneration {
    pub fn generation(&self) -> Generation {
        Generation {
            checkpoint: self.checkpoint,
            seq: self.seq,
            chain: self.chain,
        }
    }
}

/// `POST /v1/generation` answer: the generation now witnessed (the
/// report's), and the audit entry that logged it, if the report was of a
/// kind that is logged (format.md §16.17.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationReply {
    pub witnessed: WitnessedGeneration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

#[cfg(test)]
mod tests {
    use atrest_audit::{AuditSigningKey, EntryHash, EntryKind, MerkleTree, entry_leaf_hash};

    use super::*;

    /// The entry travels inside the tagged reply and still hashes the same
    /// at the host: its details are not re-encoded on the way.
    #[test]
    fn a_grants_audit_entry_reaches_the_host_byte_for_byte() {
        let mut entry = Entry {
            seq: 1,
            timestamp_ms: 1_800_000_000_000,
            kind: EntryKind::Decision,
            actor: "keyd".into(),
            subject: Some("h-web-1".into()),
            // Not how serde_json would write it: spaces, key order, escapes.
            details: r#"{ "z": 1, "outcome" : "released", "s": "\u00e9" }"#.into(),
            prev_hash: EntryHash::GENESIS,
            hash: EntryHash::GENESIS,
        };
        entry.hash = entry.compute_hash();
        let mut tree = MerkleTree::new();
        tree.push(entry_leaf_hash(&entry));
        let key = AuditSigningKey::from_seed(&[3; 32]);
        let head = key.sign_tree_head(1, tree.root(), 1);
        let reply = UnlockReply::Granted {
            version: 1,
            // The ristretto255 base point.
            response: serde_json::from_value(serde_json::json!(
                "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY"
            ))
            .unwrap(),
            audit_seq: 1,
            checkpoint: None,
            rebind: None,
            boot_ticket: None,
            witnessed: None,
            proof: None,
            audit: Some(Box::new(AuditProof {
                entry: entry.clone(),
                tree_head: head,
                inclusion: tree.inclusion_proof(0, 1).unwrap(),
                consistency: None,
            })),
        };
        let text = serde_json::to_string(&reply).unwrap();
        let UnlockReply::Granted {
            audit: Some(proof), ..
        } = serde_json::from_str(&text).unwrap()
        else {
            panic!("{text}")
        };
        assert_eq!(proof.entry, entry);
        atrest_audit::verify_inclusion(&key.public_key(), &proof.entry, &proof.inclusion, &head)
            .unwrap();
    }
}
