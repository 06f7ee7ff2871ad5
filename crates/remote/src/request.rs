//! Signed unlock requests and their verification.
//!
//! A host asks for `Y = s·X` with an [`UnlockRequest`] signed by its
//! [`HostIdentity`](crate::HostIdentity). The authority turns a
//! [`SignedUnlockRequest`] into a [`VerifiedRequest`] with [`verify`], the
//! only way to build one, and only a `VerifiedRequest` can be answered
//! ([`HostSecret::respond`](crate::HostSecret::respond)). Checking freshness
//! of the nonce (replay) needs state and is the server's job: `verify`
//! checks the signature and that the timestamp is within the skew window,
//! which bounds how long the server must remember nonces.
//!
//! A captured request is of no use for the key itself (its `X` can only be
//! unblinded with the host's `e`); replay protection keeps the audit log
//! and approval prompts honest.

use std::fmt;

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::encoding::{Canonical, to_base64url};
use crate::exchange::{BlindedRequest, KeyId};
use crate::generation::GenerationClaim;
use crate::identity::{HostPublicKey, RequestSignature};

/// The version byte in [`UnlockRequest::signed_bytes`]; a change of
/// encoding is a new version, refused by older authorities.
pub const REQUEST_VERSION: u8 = 1;

/// The version byte of an unlock request that carries a
/// [`GenerationClaim`] (format.md §16.17.2): a format 2 vault's.
pub const REQUEST_VERSION_CLAIM: u8 = 2;

/// Builds a string newtype that only holds values matching `$valid`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $max:expr, $valid:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(value: impl Into<String>) -> Result<Self, InvalidField> {
                let value = value.into();
                let valid: fn(u8) -> bool = $valid;
                if value.is_empty() || value.len() > $max || !value.bytes().all(valid) {
                    return Err(InvalidField {
                        field: stringify!($name),
                        rule: $what,
                    });
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidField;
            fn try_from(value: String) -> Result<Self, InvalidField> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

/// A string field outside its allowed form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: must be {rule}")]
pub struct InvalidField {
    pub field: &'static str,
    pub rule: &'static str,
}

checked_string!(
    /// The name the authority knows a host by. Restricted to characters that
    /// are safe in logs, URLs and file names.
    HostId,
    128,
    |b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b),
    "1 to 128 characters from A-Z a-z 0-9 . _ : @ -"
);

checked_string!(
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`, a UUID),
    /// which tells the authority whether this boot was announced.
    BootId,
    64,
    |b| b.is_ascii_alphanumeric() || b == b'-',
    "1 to 64 characters from A-Z a-z 0-9 -"
);

/// 16 random bytes that make each request unique.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestNonce(#[serde(with = "crate::encoding::base64url_array")] pub [u8; 16]);

impl RequestNonce {
    pub fn random() -> Self {
        Self(atrest_core::random_array())
    }
}

impl fmt::Debug for RequestNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestNonce({})", to_base64url(&self.0))
    }
}

/// What a host asks the authority for, and everything its policy looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    pub host_id: HostId,
    /// The vault's 16-byte id (from its config).
    #[serde(with = "crate::encoding::base64url_array")]
    pub vault_id: [u8; 16],
    /// The remote keyslot's number in that vault.
    pub keyslot: u8,
    /// Which of the host's exchange keys answers ([`RemoteBinding::key_id`](crate::RemoteBinding::key_id)).
    pub key_id: KeyId,
    /// `X = C + e·G`.
    pub blinded: BlindedRequest,
    pub nonce: RequestNonce,
    /// Unix time in seconds when the host made the request.
    pub timestamp: u64,
    pub boot_id: BootId,
    /// A format 2 vault's claim about its state on disk; a request with
    /// one is version [`REQUEST_VERSION_CLAIM`], without one version 1,
    /// byte for byte as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationClaim>,
}

impl UnlockRequest {
    /// The bytes the host signs:
    ///
    /// ```text
    /// lp(domain::UNLOCK_REQUEST) ‖ version (1 byte) ‖ lp(host_id) ‖ lp(vault_id)
    ///   ‖ lp(keyslot, 1 byte) ‖ lp(key_id) ‖ lp(X) ‖ lp(nonce)
    ///   ‖ lp(timestamp, u64 big-endian) ‖ lp(boot_id)
    /// ```
    ///
    /// where `lp(x)` is `x`'s length as a big-endian u32 followed by `x`.
    /// With a claim the version byte is 2 and two fields follow
    /// (format.md §16.17.2):
    ///
    /// ```text
    ///   … ‖ lp(claim: k u64be ‖ S u64be ‖ h (32) ‖ config generation u64be)
    ///   ‖ lp(lineage: n × (k ‖ S ‖ h))
    /// ```
    pub fn signed_bytes(&self) -> Vec<u8> {
        let version = if self.generation.is_some() {
            REQUEST_VERSION_CLAIM
        } else {
            REQUEST_VERSION
        };
        let mut out = Canonical::new(atrest_core::labels::domain::UNLOCK_REQUEST, version);
        out.field(self.host_id.as_str().as_bytes())
            .field(&self.vault_id)
            .field(&[self.keyslot])
            .field(&self.key_id.0)
            .field(&self.blinded.to_bytes())
            .field(&self.nonce.0)
            .field(&self.timestamp.to_be_bytes())
            .field(self.boot_id.as_str().as_bytes());
        if let Some(claim) = &self.generation {
            out.field(&claim.claim_bytes())
                .field(&claim.lineage.to_bytes());
        }
        out.into_bytes()
    }
}

/// An unlock request with the host's signature, as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUnlockRequest {
    pub request: UnlockRequest,
    pub signature: RequestSignature,
    /// The ticket the authority gave this boot with its first key, kept by
    /// the host in RAM (`/run`): proof that the sender is the boot it
    /// claims, not a copy of the disk. Not signed: it is a bearer secret
    /// sent over TLS, and the signature already binds everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ticket: Option<BootTicket>,
}

/// 32 random bytes the authority hands a boot with its first released key;
/// the host keeps it in RAM only, so it dies with the boot and is on no disk.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct BootTicket(#[serde(with = "crate::encoding::base64url_array")] pub [u8; 32]);

impl BootTicket {
    pub fn random() -> Self {
        Self(atrest_core::random_array())
    }

    /// What the authority stores: a hash, so a copy of its database holds
    /// no usable ticket.
    pub fn hash(&self) -> [u8; 32] {
        atrest_core::sha256(&self.0)
    }
}

impl fmt::Debug for BootTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootTicket([redacted])")
    }
}

/// Why a request was refused. Each has a stable [`code`](Self::code) for
/// the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request's signature does not verify under the host's public key")]
    BadSignature,
    #[error(
        "the request was made at {timestamp}, more than {max_skew} s before the authority's \
         time {now}; check the host's clock (NTP) and retry"
    )]
    Stale {
        timestamp: u64,
        now: u64,
        max_skew: u64,
    },
    #[error(
        "the request claims time {timestamp}, more than {max_skew} s after the authority's \
         time {now}; check the host's clock (NTP) and retry"
    )]
    FromTheFuture {
        timestamp: u64,
        now: u64,
        max_skew: u64,
    },
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::Stale { .. } => "stale_request",
            Self::FromTheFuture { .. } => "future_request",
        }
    }
}

/// Proof that a request's signature and timestamp were checked: only
/// [`verify`] builds one (its field is private and it has no `Deserialize`).
///
/// ```compile_fail
/// # fn forge(request: atrest_remote::UnlockRequest) {
/// let forged = atrest_remote::VerifiedRequest { request };
/// # }
/// ```
///
/// ```compile_fail
/// fn from_the_wire<T: serde::de::DeserializeOwned>() {}
/// from_the_wire::<atrest_remote::VerifiedRequest>();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRequest {
    request: UnlockRequest,
}

impl VerifiedRequest {
    pub fn request(&self) -> &UnlockRequest {
        &self.request
    }

    pub fn into_request(self) -> UnlockRequest {
        self.request
    }
}

/// Checks `signed` against the host's key and the authority's clock.
///
/// The signature is checked first, so a forger only ever learns
/// `BadSignature`; then the timestamp must lie within `max_skew` seconds of
/// `now` in either direction. Verification is strict (RFC 8032 with
/// canonical `S` and no small-order `R`), so a signature has one valid form
/// and cannot be mauled into a second "fresh" request.
pub fn verify(
    signed: &SignedUnlockRequest,
    key: &HostPublicKey,
    now: u64,
    max_skew: u64,
) -> Result<VerifiedRequest, RequestError> {
    check_signed(
        &signed.request.signed_bytes(),
        &signed.signature,
        signed.request.timestamp,
        key,
        now,
        max_skew,
    )?;
    Ok(VerifiedRequest {
        request: signed.request.clone(),
    })
}

/// A host's announcement that it is about to reboot on purpose
/// (`atrest reboot --planned`), so the authority counts the next boot as
/// accounted for. Signed under its own domain tag: a signed notice can never
/// pass as an unlock request, nor the other way round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootNotice {
    pub host_id: HostId,
    /// The boot id of the boot that is ending: the next one differs.
    pub boot_id: BootId,
    pub nonce: RequestNonce,
    /// Unix time in seconds when the host made the notice.
    pub timestamp: u64,
}

impl RebootNotice {
    /// The bytes the host signs:
    ///
    /// ```text
    /// lp(domain::REBOOT_NOTICE) ‖ version (1 byte) ‖ lp(host_id) ‖ lp(boot_id)
    ///   ‖ lp(nonce) ‖ lp(timestamp, u64 big-endian)
    /// ```
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Canonical::new(atrest_core::labels::domain::REBOOT_NOTICE, REQUEST_VERSION);
        out.field(self.host_id.as_str().as_bytes())
            .field(self.boot_id.as_str().as_bytes())
            .field(&self.nonce.0)
            .field(&self.timestamp.to_be_bytes());
        out.into_bytes()
    }
}

/// A reboot notice with the host's signature, as sent to `POST /v1/reboot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRebootNotice {
    pub notice: RebootNotice,
    pub signature: RequestSignature,
    /// The ending boot's ticket ([`BootTicket`]): only the boot the
    /// authority released to may announce its own end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ticket: Option<BootTicket>,
}

/// Checks a reboot notice as [`verify`] checks an unlock request: strict
/// signature first, then the clock window. Nonce freshness is the server's
/// job, as for requests.
pub fn verify_reboot(
    signed: &SignedRebootNotice,
    key: &HostPublicKey,
    now: u64,
    max_skew: u64,
) -> Result<RebootNotice, RequestError> {
    check_signed(
        &signed.notice.signed_bytes(),
        &signed.signature,
        signed.notice.timestamp,
        key,
        now,
        max_skew,
    )?;
    Ok(signed.notice.clone())
}

/// An enrolled host asking for its current exchange key to bind another
/// vault (`atrest enroll` without a token). Signed under its own domain
/// tag; the answer is public (`S`), so it needs no more than proof that the
/// asker is the enrolled host, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    pub host_id: HostId,
    pub nonce: RequestNonce,
    /// Unix time in seconds when the host made the request.
    pub timestamp: u64,
}

impl BindRequest {
    /// The bytes the host signs:
    ///
    /// ```text
    /// lp(domain::BIND_REQUEST) ‖ version (1 byte) ‖ lp(host_id) ‖ lp(nonce)
    ///   ‖ lp(timestamp, u64 big-endian)
    /// ```
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Canonical::new(atrest_core::labels::domain::BIND_REQUEST, REQUEST_VERSION);
        out.field(self.host_id.as_str().as_bytes())
            .field(&self.nonce.0)
            .field(&self.timestamp.to_be_bytes());
        out.into_bytes()
    }
}

/// A bind request with the host's signature, as sent to `POST /v1/bind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBindRequest {
    pub bind: BindRequest,
    pub signature: RequestSignature,
}

/// Checks a bind request as [`verify`] checks an unlock request.
pub fn verify_bind(
    signed: &SignedBindRequest,
    key: &HostPublicKey,
    now: u64,
    max_skew: u64,
) -> Result<BindRequest, RequestError> {
    check_signed(
        &signed.bind.signed_bytes(),
        &signed.signature,
        signed.bind.timestamp,
        key,
        now,
        max_skew,
    )?;
    Ok(signed.bind.clone())
}

/// The checks [`verify`] and [`verify_reboot`] share.
pub(crate) fn check_signed(
    message: &[u8],
    signature: &RequestSignature,
    timestamp: u64,
    key: &HostPublicKey,
    now: u64,
    max_skew: u64,
) -> Result<(), RequestError> {
    key.0
        .verify_strict(message, &Signature::from_bytes(&signature.0))
        .map_err(|_| RequestError::BadSignature)?;
    if now.saturating_sub(timestamp) > max_skew {
        return Err(RequestError::Stale {
            timestamp,
            now,
            max_skew,
        });
    }
    if timestamp.saturating_sub(now) > max_skew {
        return Err(RequestError::FromTheFuture {
            timestamp,
            now,
            max_skew,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_boot_ids_are_checked() {
        assert!(HostId::new("web-1.example.com").is_ok());
        assert!(HostId::new("").is_err());
        assert!(HostId::new("a b").is_err());
        assert!(HostId::new("x".repeat(129)).is_err());
        assert!(HostId::new("é").is_err());
        assert!(BootId::new("6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10").is_ok());
        assert!(BootId::new("6f1b\n").is_err());
        let err = serde_json::from_str::<HostId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("invalid HostId"), "{err}");
    }

    /// Without a claim a request is version 1, byte for byte as before;
    /// with one, version 2 with the claim and lineage appended
    /// (format.md §16.17.2), all of it signed.
    #[test]
    fn a_claim_makes_version_2_and_is_signed() {
        use crate::{Generation, Lineage};
        let (binding, _) = crate::enroll(&crate::HostSecret::generate().public_key());
        let (blinded, _) = binding.blind();
        let v1 = UnlockRequest {
            host_id: HostId::new("web-1").unwrap(),
            vault_id: [7; 16],
            keyslot: 2,
            key_id: binding.key_id(),
            blinded,
            nonce: RequestNonce([3; 16]),
            timestamp: 1_800_000_000,
            boot_id: BootId::new("b00b").unwrap(),
            generation: None,
        };
        let head = Generation {
            checkpoint: 815,
            seq: 1_204_233,
            chain: [7; 32],
        };
        let v2 = UnlockRequest {
            generation: Some(GenerationClaim {
                checkpoint: 815,
                seq: 1_204_240,
                chain: [8; 32],
                config_generation: 7,
                lineage: Lineage::new(vec![head]).unwrap(),
            }),
            ..v1.clone()
        };
        let one = v1.signed_bytes();
        let two = v2.signed_bytes();
        let tag = atrest_core::labels::domain::UNLOCK_REQUEST.len();
        assert_eq!(one[4 + tag], REQUEST_VERSION);
        assert_eq!(two[4 + tag], REQUEST_VERSION_CLAIM);
        assert_eq!(one[4 + tag + 1..], two[4 + tag + 1..one.len()]);
        let tail = &two[one.len()..];
        assert_eq!(tail.len(), 4 + 56 + 4 + 48);
        assert_eq!(&tail[..4], &56u32.to_be_bytes());
        assert_eq!(&tail[4..12], &815u64.to_be_bytes());
        assert_eq!(&tail[12..20], &1_204_240u64.to_be_bytes());
        assert_eq!(&tail[20..52], &[8; 32]);
        assert_eq!(&tail[52..60], &7u64.to_be_bytes());
        assert_eq!(&tail[60..64], &48u32.to_be_bytes());
        assert_eq!(&tail[64..], &head.to_bytes());
        let json = serde_json::to_value(&v1).unwrap();
        assert!(json.get("generation").is_none(), "{json}");
        let json = serde_json::to_string(&v2).unwrap();
        assert_eq!(serde_json::from_str::<UnlockRequest>(&json).unwrap(), v2);
        // The claim is signed: an edited one fails.
        let host = crate::HostIdentity::generate();
        let signed = host.sign(v2);
        assert!(verify(&signed, &host.public_key(), 1_800_000_000, 300).is_ok());
        let mut edited = signed.clone();
        if let Some(claim) = &mut edited.request.generation {
            claim.seq += 1;
        }
        assert_eq!(
            verify(&edited, &host.public_key(), 1_800_000_000, 300),
            Err(RequestError::BadSignature)
        );
        let mut dropped = signed;
        dropped.request.generation = None;
        assert_eq!(
            verify(&dropped, &host.public_key(), 1_800_000_000, 300),
            Err(RequestError::BadSignature)
        );
    }
}
