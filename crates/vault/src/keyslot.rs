//! Keyslots: the vault master key wrapped under a key-encryption key that
//! one kind of secret (a passphrase, a recovery key, a key file, a key
//! authority's answer, `k` of `n` authorities' answers) yields.
//!
//! A wrapped key is AES-256-GCM (`nonce ‖ ciphertext ‖ tag`) under
//! `HKDF-SHA256(slot secret, salt = vault id, info = "atrest v1 keyslot wrap" ‖ kind)`,
//! with the vault id, slot id, kind and parameters as associated data: a slot
//! cannot be moved to another vault or slot, and its Argon2 parameters cannot
//! be lowered without the unwrap failing.
//!
//! The same slots hold a backup repository's master key (`atrest-backup`,
//! docs/format.md §18.6): [`SlotOwner`] says whose key a slot wraps, which
//! picks the AAD tag and KEK label (so a vault's slot never opens as a
//! repository's, even under the same id) and the kinds allowed.

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
    /// A backup repository's slot opened by whoever unlocks the vault with
    /// this id (repositories only): its secret is the vault's backup key,
    /// [`Vault::backup_key`](crate::Vault::backup_key).
    Vault {
        vault_id: [u8; 16],
    },
}

/// Whose master key a keyslot wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOwner {
    /// A vault's, by vault id (docs/format.md §4.3).
    Vault([u8; 16]),
    /// A backup repository's, by repository id (§18.6).
    BackupRepository([u8; 16]),
}

impl SlotOwner {
    fn id(&self) -> &[u8; 16] {
        match self {
            Self::Vault(id) | Self::BackupRepository(id) => id,
        }
    }

    fn aad_tag(&self) -> &'static [u8] {
        match self {
            Self::Vault(_) => labels::domain::KEYSLOT,
            Self::BackupRepository(_) => labels::domain::BACKUP_KEYSLOT,
        }
    }

    fn wrap_label(&self) -> &'static [u8] {
        match self {
            Self::Vault(_) => labels::KEYSLOT_WRAP,
            Self::BackupRepository(_) => labels::BACKUP_KEYSLOT_WRAP,
        }
    }

    /// Refuses a kind this owner cannot hold: a vault slot opened by a
    /// vault.
    fn allows(&self, kind: &SlotKind) -> Result<(), String> {
        match (self, kind) {
            (Self::Vault(_), SlotKind::Vault { .. }) => {
                Err("a vault's backup key opens backup repositories, not a vault".into())
            }
            _ => Ok(()),
        }
    }
}

impl SlotKind {
    pub fn id(&self) -> u8 {
        match self {
            Self::Passphrase { .. } => 1,
            Self::RecoveryKey => 2,
            Self::KeyFile => 3,
            Self::Remote(_) => 4,
            Self::Threshold(_) => 5,
            Self::Vault { .. } => 6,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Passphrase { .. } => "passphrase",
            Self::RecoveryKey => "recovery-key",
            Self::KeyFile => "key-file",
            Self::Remote(_) => "remote",
            Self::Threshold(_) => "threshold",
            Self::Vault { .. } => "vault",
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
            Self::Vault { vault_id } => vault_id.to_vec(),
        }
    }

    pub(crate) fn decode(owner: &SlotOwner, kind: u8, params: &[u8]) -> Result<Self, String> {
        if matches!(owner, SlotOwner::Vault(_)) && kind == 6 {
            // What vault configs have always said of kind 6.
            return Err("unknown keyslot kind 6; a newer atrest may know it".into());
        }
        let kind = Self::decode_any(kind, params)?;
        owner.allows(&kind)?;
        Ok(kind)
    }

    fn decode_any(kind: u8, params: &[u8]) -> Result<Self, String> {
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
            6 => Self::Vault {
                vault_id: r.array().map_err(trunc)?,
            },
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
    /// A vault's backup key, for a backup repository's vault slot
    /// ([`Vault::backup_key`](crate::Vault::backup_key)).
    Vault {
        vault_id: [u8; 16],
        key: SecretKey,
    },
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
        ) || matches!(
            (self, kind),
            (Unlocker::Vault { vault_id: a, .. }, SlotKind::Vault { vault_id: b }) if a == b
        )
    }

    /// The kind a new slot for this secret gets (a repository's vault slot
    /// for a vault's backup key). Remote and threshold slots are made from
    /// their authorities instead
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
            Unlocker::Vault { vault_id, .. } => SlotKind::Vault {
                vault_id: *vault_id,
            },
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
    fn associated_data(owner: &SlotOwner, id: u8, kind: &SlotKind) -> Vec<u8> {
        let mut ad = owner.aad_tag().to_vec();
        ad.extend_from_slice(owner.id());
        ad.push(id);
        ad.push(kind.id());
        ad.extend_from_slice(&kind.encode_params());
        ad
    }

    fn key_encryption_key(
        owner: &SlotOwner,
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
            | (Unlocker::Threshold(k), SlotKind::Threshold(_))
            | (Unlocker::Vault { key: k, .. }, SlotKind::Vault { .. }) => k.clone(),
            _ => return Err(crate::VaultError::WrongKey),
        };
        let mut info = owner.wrap_label().to_vec();
        info.push(kind.id());
        Ok(ikm.derive(owner.id(), &info))
    }

    /// Wraps a vault's `master` for a new slot.
    pub(crate) fn wrap(
        vault_id: &[u8; 16],
        id: u8,
        kind: SlotKind,
        label: String,
        unlocker: &Unlocker,
        master: &SecretKey,
    ) -> Result<Self, crate::VaultError> {
        Self::wrap_for(
            SlotOwner::Vault(*vault_id),
            id,
            kind,
            label,
            unlocker,
            master,
        )
    }

    /// Wraps `master`, the key of `owner`, for a new slot.
    pub fn wrap_for(
        owner: SlotOwner,
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
        owner.allows(&kind).map_err(crate::VaultError::Invalid)?;
        let kek = Self::key_encryption_key(&owner, &kind, unlocker)?;
        let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &kek);
        let wrapped = cipher.seal(&Self::associated_data(&owner, id, &kind), master.expose());
        Ok(Self {
            id,
            kind,
            label,
            wrapped,
        })
    }

    /// Tries this slot of a vault; `None` if the secret is of another kind or wrong.
    pub(crate) fn unwrap(&self, vault_id: &[u8; 16], unlocker: &Unlocker) -> Option<SecretKey> {
        self.unwrap_for(SlotOwner::Vault(*vault_id), unlocker)
    }

    /// Tries this slot of `owner`; `None` if the secret is of another kind or wrong.
    pub fn unwrap_for(&self, owner: SlotOwner, unlocker: &Unlocker) -> Option<SecretKey> {
        if !unlocker.matches(&self.kind) {
            return None;
        }
        let kek = Self::key_encryption_key(&owner, &self.kind, unlocker).ok()?;
        let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &kek);
        let ad = Self::associated_data(&owner, self.id, &self.kind);
        let mut buf = zeroize::Zeroizing::new(self.wrapped.clone());
        let plain = cipher.open_in_place(&ad, &mut buf).ok()?;
        SecretKey::from_slice(plain)
    }

    /// The record of §4.3: `id ‖ kind ‖ u16be P ‖ params ‖ u8 T ‖ label ‖
    /// u16be 60 ‖ wrapped`, as a vault config and a repository keyslot
    /// object store it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.id);
        out.push(self.kind.id());
        let params = self.kind.encode_params();
        out.extend_from_slice(&(params.len() as u16).to_be_bytes());
        out.extend_from_slice(&params);
        out.push(self.label.len() as u8);
        out.extend_from_slice(self.label.as_bytes());
        out.extend_from_slice(&(self.wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped);
    }

    /// Parses one record of `owner` that fills `bytes` exactly; never panics.
    pub fn decode(owner: &SlotOwner, bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes, "keyslot");
        let slot = Self::read(owner, &mut r)?;
        if !r.is_empty() {
            return Err("trailing bytes after the keyslot".into());
        }
        Ok(slot)
    }

    pub(crate) fn read(owner: &SlotOwner, r: &mut Reader<'_>) -> Result<Self, String> {
        let id = r.u8().map_err(trunc)?;
        let kind_id = r.u8().map_err(trunc)?;
        let params_len = usize::from(r.u16().map_err(trunc)?);
        let kind = SlotKind::decode(owner, kind_id, r.bytes(params_len).map_err(trunc)?)?;
        let label_len = usize::from(r.u8().map_err(trunc)?);
        if label_len > MAX_LABEL {
            return Err("keyslot label too long".into());
        }
        let label = std::str::from_utf8(r.bytes(label_len).map_err(trunc)?)
            .map_err(|_| "keyslot label is not UTF-8".to_string())?
            .to_string();
        let wrapped_len = usize::from(r.u16().map_err(trunc)?);
        if wrapped_len != WRAPPED_LEN {
            return Err("wrapped key has the wrong size".into());
        }
        let wrapped = r.bytes(wrapped_len).map_err(trunc)?.to_vec();
        Ok(Self {
            id,
            kind,
            label,
            wrapped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_slot_does_not_open_as_a_repository_slot_nor_back() {
        let (id, master) = ([3u8; 16], SecretKey::random());
        let secret = Unlocker::KeyFile(SecretKey::random());
        for (owner, other) in [
            (SlotOwner::Vault(id), SlotOwner::BackupRepository(id)),
            (SlotOwner::BackupRepository(id), SlotOwner::Vault(id)),
        ] {
            let slot =
                Keyslot::wrap_for(owner, 0, SlotKind::KeyFile, String::new(), &secret, &master)
                    .unwrap();
            assert!(slot.unwrap_for(owner, &secret).is_some());
            assert!(slot.unwrap_for(other, &secret).is_none());
            let mut record = Vec::new();
            slot.encode(&mut record);
            assert_eq!(Keyslot::decode(&owner, &record).unwrap(), slot);
        }
    }

    #[test]
    fn vault_slots_belong_to_repositories_only() {
        let (id, master) = ([3u8; 16], SecretKey::random());
        let secret = Unlocker::Vault {
            vault_id: [4; 16],
            key: SecretKey::random(),
        };
        let kind = secret.new_slot_kind(Argon2Params::INSECURE_FAST).unwrap();
        assert!(
            Keyslot::wrap_for(
                SlotOwner::Vault(id),
                0,
                kind.clone(),
                String::new(),
                &secret,
                &master
            )
            .is_err()
        );
        let slot = Keyslot::wrap_for(
            SlotOwner::BackupRepository(id),
            0,
            kind,
            String::new(),
            &secret,
            &master,
        )
        .unwrap();
        let mut record = Vec::new();
        slot.encode(&mut record);
        assert_eq!(
            Keyslot::decode(&SlotOwner::Vault(id), &record).unwrap_err(),
            "unknown keyslot kind 6; a newer atrest may know it"
        );
        assert!(Keyslot::decode(&SlotOwner::BackupRepository(id), &record).is_ok());
    }
}
