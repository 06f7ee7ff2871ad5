//! The audit signing key, and format 1 checkpoints: the authority's Ed25519
//! signature over the chain's head. Tree heads ([`crate::TreeHead`]) now
//! cover every batch; checkpoints stay readable because existing databases
//! hold them, and are still signed on request for hosts that only know them.

use std::fmt;

use atrest_core::labels;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encoding::{Canonical, base64url_array, to_base64url};
use crate::entry::EntryHash;

/// The version byte in a checkpoint's signed encoding.
pub const CHECKPOINT_VERSION: u8 = 1;

/// The authority's audit signing key. Zeroized on drop, never printed. Kept
/// apart from TLS and host secrets so it can live elsewhere (an HSM later).
pub struct AuditSigningKey(pub(crate) SigningKey);

impl AuditSigningKey {
    pub fn generate() -> Self {
        Self::from_seed(&Zeroizing::new(atrest_core::random_array()))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The seed to store in the authority's key file.
    pub fn expose_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> AuditPublicKey {
        AuditPublicKey(self.0.verifying_key())
    }

    pub fn sign_checkpoint(&self, seq: u64, head_hash: EntryHash, timestamp_ms: u64) -> Checkpoint {
        let signature = self
            .0
            .sign(&Checkpoint::signed_bytes(seq, &head_hash, timestamp_ms));
        Checkpoint {
            seq,
            head_hash,
            timestamp_ms,
            signature: signature.to_bytes(),
        }
    }
}

impl fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditSigningKey({}, [redacted])", self.public_key())
    }
}

/// The key hosts and auditors check checkpoints against.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuditPublicKey(pub(crate) VerifyingKey);

/// Not an Ed25519 public key fit for checking signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a usable Ed25519 public key (32 bytes, unpadded base64url, not small-order)")]
pub struct InvalidPublicKey;

impl AuditPublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, InvalidPublicKey> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| InvalidPublicKey)?;
        if key.is_weak() {
            return Err(InvalidPublicKey);
        }
        Ok(Self(key))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl fmt::Display for AuditPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(self.0.as_bytes()))
    }
}

impl fmt::Debug for AuditPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditPublicKey({self})")
    }
}

impl TryFrom<String> for AuditPublicKey {
    type Error = InvalidPublicKey;
    fn try_from(text: String) -> Result<Self, InvalidPublicKey> {
        Self::from_bytes(&atrest_core::from_base64url(&text).ok_or(InvalidPublicKey)?)
    }
}

impl From<AuditPublicKey> for String {
    fn from(key: AuditPublicKey) -> String {
        key.to_string()
    }
}

/// "At `timestamp_ms`, entry `seq` of this log had hash `head_hash`",
/// signed by the authority's audit key. Since each hash covers the one
/// before, this fixes every entry up to `seq`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub head_hash: EntryHash,
    pub timestamp_ms: u64,
    #[serde(with = "base64url_array")]
    pub signature: [u8; 64],
}

/// A checkpoint whose signature does not verify under the given key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint at entry {seq} is not signed by this audit key")]
pub struct BadCheckpointSignature {
    pub seq: u64,
}

impl Checkpoint {
    /// `lp(domain::AUDIT_CHECKPOINT) ‖ version ‖ lp(seq) ‖ lp(head_hash) ‖
    /// lp(timestamp_ms)`, integers as u64 big-endian.
    pub fn signed_bytes(seq: u64, head_hash: &EntryHash, timestamp_ms: u64) -> Vec<u8> {
        let mut out = Canonical::new(labels::domain::AUDIT_CHECKPOINT, CHECKPOINT_VERSION);
        out.field(&seq.to_be_bytes())
            .field(&head_hash.0)
            .field(&timestamp_ms.to_be_bytes());
        out.into_bytes()
    }

    /// Strict Ed25519 verification (canonical `S`, no small-order `R`).
    pub fn verify(&self, key: &AuditPublicKey) -> Result<(), BadCheckpointSignature> {
        key.0
            .verify_strict(
                &Self::signed_bytes(self.seq, &self.head_hash, self.timestamp_ms),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| BadCheckpointSignature { seq: self.seq })
    }
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("seq", &self.seq)
            .field("head_hash", &self.head_hash)
            .field("timestamp_ms", &self.timestamp_ms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_as_signed() {
        let key = AuditSigningKey::generate();
        let cp = key.sign_checkpoint(42, EntryHash([5; 32]), 1_000);
        assert_eq!(cp.verify(&key.public_key()), Ok(()));
        let other = AuditSigningKey::generate().public_key();
        assert_eq!(cp.verify(&other), Err(BadCheckpointSignature { seq: 42 }));
        let changes: [fn(&mut Checkpoint); 4] = [
            |c| c.seq += 1,
            |c| c.head_hash.0[31] ^= 1,
            |c| c.timestamp_ms += 1,
            |c| c.signature[0] ^= 1,
        ];
        for change in changes {
            let mut bad = cp;
            change(&mut bad);
            assert!(bad.verify(&key.public_key()).is_err());
        }
    }

    #[test]
    fn checkpoints_and_keys_travel_as_json() {
        let key = AuditSigningKey::generate();
        let cp = key.sign_checkpoint(1, EntryHash([9; 32]), 7);
        let json = serde_json::to_string(&cp).unwrap();
        assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), cp);
        let public = serde_json::to_string(&key.public_key()).unwrap();
        let back: AuditPublicKey = serde_json::from_str(&public).unwrap();
        assert_eq!(back, key.public_key());
        assert!(!format!("{key:?}").contains(&to_base64url(&key.expose_seed()[..])));
    }
}
