//! Requests held for a person, as the authority stores them: the view
//! approvers, operators and the host see ([`PendingView`]), the encoding of
//! what a later release needs ([`HeldRecord`]: the signed request, never a
//! key), the poll token only the requester holds and the answer sealed
//! under it. The rows live behind [`crate::storage::Storage`], so every
//! replica shows, decides and releases the same requests and a restart
//! forgets none; the transitions are claimed in the database
//! ([`crate::approval`] drives them).

use std::fmt;

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey};
use atrest_remote::{
    HostId, HostPublicKey, RequestSignature, SignedUnlockRequest, UnlockRequest, VerifiedRequest,
    to_base64url,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::AuthorityError;
use crate::policy::BootStatus;
use crate::storage::{HeldState, StorageError, StoredHeld};
use crate::unlock::Grant;

/// Where a held request stands, as it is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    Pending,
    Approved,
    Denied,
    Expired,
    /// Approved, and its answer given to the host.
    Released,
}

impl PendingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Released => "released",
        }
    }

    /// A decision being written still waits, as far as anyone can see.
    pub(crate) fn of(state: HeldState) -> Self {
        match state {
            HeldState::Pending | HeldState::Deciding => Self::Pending,
            HeldState::Approved => Self::Approved,
            HeldState::Denied => Self::Denied,
            HeldState::Expired => Self::Expired,
            HeldState::Released => Self::Released,
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

/// The version of [`HeldRecord`]'s encoding in the `request` column.
const RECORD_VERSION: u8 = 1;

/// What the authority stores of a held request besides the columns the
/// store decides on: the view as held, the host's signed request (so a
/// release re-checks its signature and no row written behind the
/// authority's back can be answered) and how its boot was judged. JSON,
/// versioned.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeldRecord {
    version: u8,
    view: PendingView,
    request: UnlockRequest,
    signature: RequestSignature,
    boot: BootStatus,
}

/// A stored held request, decoded.
pub(crate) struct Held {
    pub view: PendingView,
    pub state: HeldState,
    poll_token_hash: [u8; 32],
    signed: SignedUnlockRequest,
    pub boot: BootStatus,
    pub sealed_grant: Option<Vec<u8>>,
}

impl Held {
    /// A new held request (state `Pending`), as stored, and the poll
    /// token only its requester gets.
    pub fn create(
        view: PendingView,
        verified: &VerifiedRequest,
        signature: &RequestSignature,
        boot: &BootStatus,
    ) -> Result<(StoredHeld, PollToken), AuthorityError> {
        let poll_token = PollToken::random();
        let record = HeldRecord {
            version: RECORD_VERSION,
            view: view.clone(),
            request: verified.request().clone(),
            signature: *signature,
            boot: boot.clone(),
        };
        let request = serde_json::to_vec(&record)
            .map_err(|e| StorageError::Corrupt(format!("held request {}: {e}", view.id)))?;
        let stored = StoredHeld {
            id: view.id,
            host_id: view.host_id,
            state: HeldState::Pending,
            decided_by: None,
            created_at: view.created_at,
            expires_at: view.expires_at,
            poll_token_hash: poll_token.hash(),
            request,
            sealed_grant: None,
        };
        Ok((stored, poll_token))
    }

    pub fn decode(stored: StoredHeld) -> Result<Self, AuthorityError> {
        let corrupt =
            |what: String| StorageError::Corrupt(format!("held request {}: {what}", stored.id));
        let record: HeldRecord =
            serde_json::from_slice(&stored.request).map_err(|e| corrupt(e.to_string()))?;
        if record.version != RECORD_VERSION {
            return Err(corrupt(format!("record version {}", record.version)).into());
        }
        if record.view.id != stored.id || record.request.host_id != stored.host_id {
            return Err(corrupt("its record is another request's".into()).into());
        }
        let mut view = record.view;
        view.state = PendingState::of(stored.state);
        view.decided_by = stored.decided_by;
        Ok(Self {
            view,
            state: stored.state,
            poll_token_hash: stored.poll_token_hash,
            signed: SignedUnlockRequest {
                request: record.request,
                signature: record.signature,
                boot_ticket: None,
            },
            boot: record.boot,
            sealed_grant: stored.sealed_grant,
        })
    }

    /// The poll token a poll presented (base64url), if it is this
    /// request's.
    pub fn check_poll_token(&self, presented: &str) -> Result<PollToken, AuthorityError> {
        let token = PollToken::parse(presented).ok_or(AuthorityError::BadPollToken)?;
        if atrest_core::constant_time_eq(&token.hash(), &self.poll_token_hash) {
            Ok(token)
        } else {
            Err(AuthorityError::BadPollToken)
        }
    }

    /// The request verified again, against the host's key and the time it
    /// was held (it has waited for an approver since).
    pub fn verified(
        &self,
        key: &HostPublicKey,
        max_skew: u64,
    ) -> Result<VerifiedRequest, AuthorityError> {
        Ok(atrest_remote::verify(
            &self.signed,
            key,
            self.view.created_at,
            max_skew,
        )?)
    }
}

/// The secret a held request's answer gives its requester, which its polls
/// must carry. Request ids are shown to approvers, operators and webhooks;
/// this is not, so nobody else can collect the grant (and its boot ticket).
/// The database keeps only its hash, and the answer sealed under a key
/// derived from it.
#[derive(Clone)]
pub struct PollToken([u8; 32]);

impl PollToken {
    fn random() -> Self {
        Self(atrest_core::random_array())
    }

    fn parse(text: &str) -> Option<Self> {
        atrest_remote::from_base64url::<32>(text).map(Self)
    }

    fn hash(&self) -> [u8; 32] {
        atrest_core::sha256(&self.0)
    }

    fn grant_cipher(&self, id: &str) -> (BlockCipher, Vec<u8>) {
        let key =
            SecretKey::from_bytes(self.0).derive(id.as_bytes(), atrest_core::labels::HELD_GRANT);
        let aad = [atrest_core::labels::domain::HELD_GRANT, id.as_bytes()].concat();
        (
            BlockCipher::new(ContentAlgorithm::XChaCha20Poly1305, &key),
            aad,
        )
    }

    /// The answer to request `id`, sealed for the database.
    pub(crate) fn seal_grant(&self, id: &str, grant: &Grant) -> Result<Vec<u8>, AuthorityError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(grant)
                .map_err(|e| StorageError::Corrupt(format!("held request {id}: {e}")))?,
        );
        let (cipher, aad) = self.grant_cipher(id);
        Ok(cipher.seal(&aad, &plain))
    }

    /// The answer to request `id` kept by whichever replica released it.
    pub(crate) fn open_grant(&self, id: &str, sealed: &[u8]) -> Result<Grant, AuthorityError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("held request {id}: {what}"));
        let (cipher, aad) = self.grant_cipher(id);
        let plain = Zeroizing::new(
            cipher
                .open(&aad, sealed)
                .map_err(|_| corrupt("its sealed answer does not open"))?,
        );
        Ok(serde_json::from_slice(&plain).map_err(|_| corrupt("its answer does not parse"))?)
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
