//! Bodies of the host routes under `/v1`.

use atrest_audit::{AuditPublicKey, Checkpoint};
use atrest_remote::{BlindedResponse, BootTicket, ExchangePublicKey, HostId, HostPublicKey, KeyId};
use serde::{Deserialize, Serialize};

/// The header a host's poll of its held request carries: the poll token
/// from the 202 answer. Request ids are public (audit log, webhook,
/// approval page); the token is not, so only the requester gets the grant
/// and the boot ticket that comes with it.
pub const POLL_TOKEN_HEADER: &str = "x-atrest-poll-token";

/// `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub host_name: String,
    pub public_key: HostPublicKey,
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
        response: BlindedResponse,
        audit_seq: u64,
        checkpoint: Option<Checkpoint>,
        #[serde(default)]
        rebind: Option<Rebind>,
        /// Set on a boot's first release: the host keeps it in RAM and
        /// sends it with later requests and its reboot notice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_ticket: Option<BootTicket>,
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
