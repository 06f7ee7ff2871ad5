//! Keyslots: the vault master key wrapped under a key-encryption key that
//! one kind of secret (a passphrase, a recovery key, a key file, a key
//! authority's answer, `k` of `n` authorities' answers) yields.
//!
//! A wrapped key is AES-256-GCM (`nonce ‖ ciphertext ‖ tag`) under
//! `HKDF-SHA256(slot secret, salt = vault id, info = "atrest v1 keyslot wrap" ‖ kind)`,
//! with the vault id, slot id, kind and parameters as associated data: a slot
//! cannot be moved to another vault or slot, and its Argon2 parameters cannot
//! be lowered without the unwrap failing.

use atrest_core::{
    Argon2Params, BlockCipher, ContentAlgorithm, SecretBytes, SecretKey, derive_from_passphrase,
    labels,
};

use crate::remote::{RemoteSlot, ThresholdSlot};
use crate::wire::{Reader, Truncated};

/// What kind of secret opens a slot. The numbers are the on-disk kind byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotKind {
    Passphrase {
        params: Argon2Params,
        salt: [u8; 16],
    },
    RecoveryKey,
    KeyFile,
    // Boxed: an authority record is some 200 bytes, the other kinds a few.
    Remote(Box<RemoteSlot>),
    Threshold(ThresholdSlot),
}

impl SlotKind {
    pub fn id(&self) -> u8 {
        match self {
            Self::Passphrase { .. } => 1,
            Self::RecoveryKey => 2,
            Self::KeyFile => 3,
            Self::Remote(_) => 4,
            Self::Threshold(_) => 5,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Passphrase { .. } => "passphrase",
            Self::RecoveryKey => "recovery-key",
            Self::KeyFile => "key-file",
            Self::Remote(_) => "remote",
            Self::Threshold(_) => "threshold",
        }
    }

    pub(crate) fn encode_params(&self) -> Vec<u8> {
        match self {
            Self::Passphrase { params, salt } => {
                let mut out = Vec::with_capacity(28);
                out.extend_from_slice(&params.memory_kib.to_be_bytes());
                out.extend_from_slice(&params.iterations.to_be_bytes());
                out.extend_from_slice(&params.parallelism.to_be_bytes());
                out.extend_from_slice(salt);
                out
            }
            Self::RecoveryKey | Self::KeyFile => Vec::new(),
            Self::Remote(slot) => slot.encode(),
            Self::Threshold(slot) => slot.encode(),
        }
    }

    pub(crate) fn decode(kind: u8, params: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(params, "keyslot parameters");
        let kind = match kind {
            1 => {
                let params = Argon2Params {
                    memory_kib: r.u32().map_err(trunc)?,
                    iterations: r.u32().map_err(trunc)?,
                    parallelism: r.u32().map_err(trunc)?,
                };
                params.validate().map_err(|e| e.to_string())?;
                Self::Passphrase {
                    params,
                    salt: r.array().map_err(trunc)?,
                }
            }
            2 => Self::RecoveryKey,
            3 => Self::KeyFile,
            // These parse their whole parameters themselves.
            4 => return RemoteSlot::decode(params).map(|r| Self::Remote(Box::new(r))),
            5 => return ThresholdSlot::decode(params).map(Self::Threshold),
            other => {
                return Err(format!(
                    "unknown keyslot kind {other}; a newer atrest may know it"
                ));
            }
        };
        if !r.is_empty() {
            return Err("keyslot parameters have trailing bytes".into());
        }
        Ok(kind)
    }
}

fn trunc(t: Truncated) -> String {
    format!("{} truncated", t.0)
}

/// A secret offered to open a vault.
pub enum Unlocker {
    Passphrase(SecretBytes),
    RecoveryKey(SecretKey),
    KeyFile(SecretKey),
    /// The exchange key `K` a key authority's answer unblinded to.
    Remote(SecretKey),
    /// A threshold slot's secret, combined from `k` opened shares
    /// ([`ThresholdSlot::open_share`], [`atrest_remote::combine`]).
    Threshold(SecretKey),
}

impl Unlocker {
    fn matches(&self, kind: &SlotKind) -> bool {
        matches!(
            (self, kind),
            (Unlocker::Passphrase(_), SlotKind::Passphrase { .. })
                | (Unlocker::RecoveryKey(_), SlotKind::RecoveryKey)
                | (Unlocker::KeyFile(_), SlotKind::KeyFile)
                | (Unlocker::Remote(_), SlotKind::Remote(_))
                | (Unlocker::Threshold(_), SlotKind::Threshold(_))
        )
    }

    /// The kind a new slot for this secret gets. Remote and threshold
    /// slots are made from their authorities instead
    /// ([`Vault::add_remote_slot`](crate::Vault::add_remote_slot),
    /// [`Vault::add_threshold_slot`](crate::Vault::add_threshold_slot)).
    pub fn new_slot_kind(&self, params: Argon2Params) -> Result<SlotKind, crate::VaultError> {
        Ok(match self {
            Unlocker::Passphrase(_) => SlotKind::Passphrase {
                params,
                salt: atrest_core::random_array(),
            },
            Unlocker::RecoveryKey(_) => SlotKind::RecoveryKey,
            Unlocker::KeyFile(_) => SlotKind::KeyFile,
            Unlocker::Remote(_) | Unlocker::Threshold(_) => {
                return Err(crate::VaultError::Invalid(
                    "remote and threshold keyslots are made by enrolling with a key authority \
                     (`atrest enroll`)"
                        .into(),
                ));
            }
        })
    }
}

/// One keyslot as stored in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyslot {
    pub id: u8,
    pub kind: SlotKind,
    /// Free text for people (`--label`), at most 64 bytes of UTF-8.
    pub label: String,
    pub(crate) wrapped: Vec<u8>,
}

pub(crate) const WRAPPED_LEN: usize = 32 + 28;
pub const MAX_LABEL: usize = 64;

impl Keyslot {
    fn associated_data(vault_id: &[u8; 16], id: u8, kind: &SlotKind) -> Vec<u8> {
        let mut ad = labels::domain::KEYSLOT.to_vec();
        ad.extend_from_slice(vault_id);
        ad.push(id);
        ad.push(kind.id());
        ad.extend_from_slice(&kind.encode_params());
        ad
    }

    fn key_encryption_key(
        vault_id: &[u8; 16],
        kind: &SlotKind,
        unlocker: &Unlocker,
    ) -> Result<SecretKey, crate::VaultError> {
        let ikm = match (unlocker, kind) {
            (Unlocker::Passphrase(pw), SlotKind::Passphrase { params, salt }) => {
                derive_from_passphrase(pw.expose(), salt, *params)
                    .map_err(|e| crate::VaultError::Corrupt(e.to_string()))?
            }
            (Unlocker::RecoveryKey(k), SlotKind::RecoveryKey)
            | (Unlocker::KeyFile(k), SlotKind::KeyFile)
            | (Unlocker::Remote(k), SlotKind::Remote(_))
            | (Unlocker::Threshold(k), SlotKind::Threshold(_)) => k.clone(),
            _ => return Err(crate::VaultError::WrongKey),
        };
        let mut info = labels::KEYSLOT_WRAP.to_vec();
        info.push(kind.id());
        Ok(ikm.derive(vault_id, &info))
    }

    /// Wraps `master` for a new slot.
    pub(crate) fn wrap(
        vault_id: &[u8; 16],
        id: u8,
        kind: SlotKind,
        label: String,
        unlocker: &Unlocker,
        master: &SecretKey,
    ) -> Result<Self, crate::VaultError> {
        if label.len() > MAX_LABEL {
            return Err(crate::VaultError::Invalid(format!(
                "keyslot labels are at most {MAX_LABEL} bytes"
            )));
        }
        let kek = Self::key_encryption_key(vault_id, &kind, unlocker)?;
        let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &kek);
        let wrapped = cipher.seal(&Self::associated_data(vault_id, id, &kind), master.expose());
        Ok(Self {
            id,
            kind,
            label,
            wrapped,
        })
    }

    /// Tries this slot; `None` if the secret is of another kind or wrong.
    pub(crate) fn unwrap(&self, vault_id: &[u8; 16], unlocker: &Unlocker) -> Option<SecretKey> {
        if !unlocker.matches(&self.kind) {
            return None;
        }
        let kek = Self::key_encryption_key(vault_id, &self.kind, unlocker).ok()?;
        let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &kek);
        let ad = Self::associated_data(vault_id, self.id, &self.kind);
        let mut buf = zeroize::Zeroizing::new(self.wrapped.clone());
        let plain = cipher.open_in_place(&ad, &mut buf).ok()?;
        SecretKey::from_slice(plain)
    }
}
