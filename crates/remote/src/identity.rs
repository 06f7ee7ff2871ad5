//! Host identities: the Ed25519 key a host creates at enrollment and signs
//! every unlock request with. The authority keeps only the public half.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encoding::{from_base64url, to_base64url};
use crate::request::{RebootNotice, SignedRebootNotice, SignedUnlockRequest, UnlockRequest};

/// A host's Ed25519 signing key. Zeroized on drop (ed25519-dalek's
/// `zeroize` feature), never printed.
pub struct HostIdentity(SigningKey);

impl HostIdentity {
    pub fn generate() -> Self {
        Self::from_seed(&Zeroizing::new(atrest_core::random_array()))
    }

    /// Every 32-byte seed is a valid key (RFC 8032 §5.1.5).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The seed to store in the host's root-only identity file.
    pub fn expose_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> HostPublicKey {
        HostPublicKey(self.0.verifying_key())
    }

    /// Signs the request's canonical encoding
    /// ([`UnlockRequest::signed_bytes`]).
    pub fn sign(&self, request: UnlockRequest) -> SignedUnlockRequest {
        let signature = self.0.sign(&request.signed_bytes());
        SignedUnlockRequest {
            request,
            signature: RequestSignature(signature.to_bytes()),
            boot_ticket: None,
        }
    }

    /// Signs a bind request's canonical encoding
    /// ([`crate::BindRequest::signed_bytes`]).
    pub fn sign_bind(&self, bind: crate::BindRequest) -> crate::SignedBindRequest {
        let signature = self.0.sign(&bind.signed_bytes());
        crate::SignedBindRequest {
            bind,
            signature: RequestSignature(signature.to_bytes()),
        }
    }

    /// Signs a generation report's canonical encoding
    /// ([`crate::GenerationReport::signed_bytes`]).
    pub fn sign_report(&self, report: crate::GenerationReport) -> crate::SignedGenerationReport {
        let signature = self.0.sign(&report.signed_bytes());
        crate::SignedGenerationReport {
            report,
            signature: RequestSignature(signature.to_bytes()),
            boot_ticket: None,
        }
    }

    /// Signs a reboot notice's canonical encoding
    /// ([`RebootNotice::signed_bytes`]).
    pub fn sign_reboot(&self, notice: RebootNotice) -> SignedRebootNotice {
        let signature = self.0.sign(&notice.signed_bytes());
        SignedRebootNotice {
            notice,
            signature: RequestSignature(signature.to_bytes()),
            boot_ticket: None,
        }
    }
}

impl fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostIdentity({}, [redacted])", self.public_key())
    }
}

/// Why a public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("not an Ed25519 public key (32 bytes, unpadded base64url)")]
    Malformed,
    #[error("a weak (small-order) Ed25519 public key, for which signatures prove nothing")]
    Weak,
}

/// A host's Ed25519 public key, as the authority stores it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPublicKey(pub(crate) VerifyingKey);

impl HostPublicKey {
    /// Refuses encodings that are not points and the small-order points,
    /// under which any message "verifies" for some signatures.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PublicKeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| PublicKeyError::Malformed)?;
        if key.is_weak() {
            return Err(PublicKeyError::Weak);
        }
        Ok(Self(key))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl fmt::Display for HostPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(self.0.as_bytes()))
    }
}

impl fmt::Debug for HostPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPublicKey({self})")
    }
}

impl TryFrom<String> for HostPublicKey {
    type Error = PublicKeyError;
    fn try_from(text: String) -> Result<Self, PublicKeyError> {
        Self::from_bytes(&from_base64url(&text).ok_or(PublicKeyError::Malformed)?)
    }
}

impl From<HostPublicKey> for String {
    fn from(key: HostPublicKey) -> String {
        key.to_string()
    }
}

/// An Ed25519 signature over an unlock request or reboot notice (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSignature(#[serde(with = "crate::encoding::base64url_array")] pub [u8; 64]);

impl fmt::Debug for RequestSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestSignature({})", to_base64url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_malformed_keys_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            HostPublicKey::from_bytes(&identity),
            Err(PublicKeyError::Weak)
        );
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            HostPublicKey::from_bytes(&off_curve),
            Err(PublicKeyError::Malformed)
        );
    }

    #[test]
    fn identity_round_trips_and_hides_its_seed() {
        let id = HostIdentity::generate();
        let again = HostIdentity::from_seed(&id.expose_seed());
        assert_eq!(id.public_key(), again.public_key());
        let shown = format!("{id:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&to_base64url(&id.expose_seed()[..])));
        let json = serde_json::to_string(&id.public_key()).unwrap();
        let key: HostPublicKey = serde_json::from_str(&json).unwrap();
        assert_eq!(key, id.public_key());
    }
}
