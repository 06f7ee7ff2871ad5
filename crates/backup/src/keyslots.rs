//! A repository's keyslots (docs/format.md §18.6): its master key wrapped
//! by the vault's keyslot code ([`atrest_vault::Keyslot`], owner
//! [`SlotOwner::BackupRepository`]), one object `keys/<id>` per slot.
//!
//! ```text
//! object = "ATRK" ‖ u8 1 ‖ repository id (16) ‖ keyslot record (§4.3) ‖ MAC (32)
//! MAC    = HMAC-SHA256(HKDF(M, rid, "atrest v1 backup keyslot mac"), everything before it)
//! ```
//!
//! The wrapped key's AAD binds the repository id, slot id, kind and
//! parameters; the MAC, checked once some slot gave `M`, covers the rest
//! (the label). Destroying every `keys/` object destroys every way to `M`:
//! that is `atrest backup shred`.

use atrest_core::{HeaderMac, MAC_LEN, SecretKey, labels};
use atrest_vault::{Keyslot, SlotOwner};

use crate::backend::Backend;
use crate::error::{BackupError, Result};
use crate::keys::REPO_ID_LEN;

pub const KEYS_DIR: &str = "keys";
const MAGIC: &[u8; 4] = b"ATRK";
/// The version byte of a keyslot object.
pub const KEYSLOT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + REPO_ID_LEN;
/// As many as a vault holds.
pub const MAX_KEYSLOTS: usize = 32;

/// The object that holds slot `id`.
pub fn object_name(id: u8) -> String {
    format!("{KEYS_DIR}/{id:02x}")
}

/// One `keys/` object as read, before any key has checked it.
#[derive(Debug)]
pub struct StoredSlot {
    pub name: String,
    /// The parsed slot, or why it does not parse.
    pub slot: std::result::Result<Keyslot, String>,
    bytes: Vec<u8>,
}

pub(crate) fn mac_key(master: &SecretKey, repo_id: &[u8; REPO_ID_LEN]) -> HeaderMac {
    HeaderMac::new(&master.derive(repo_id, labels::BACKUP_KEYSLOT_MAC))
}

pub(crate) fn encode(repo_id: &[u8; REPO_ID_LEN], slot: &Keyslot, mac: &HeaderMac) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 160 + MAC_LEN);
    out.extend_from_slice(MAGIC);
    out.push(KEYSLOT_VERSION);
    out.extend_from_slice(repo_id);
    slot.encode(&mut out);
    let tag = mac.sign(&out);
    out.extend_from_slice(&tag);
    out
}

fn decode(
    repo_id: &[u8; REPO_ID_LEN],
    name: &str,
    bytes: &[u8],
) -> std::result::Result<Keyslot, String> {
    if bytes.len() < HEADER_LEN + MAC_LEN || &bytes[..4] != MAGIC {
        return Err("not a keyslot object".into());
    }
    if bytes[4] != KEYSLOT_VERSION {
        return Err(format!(
            "keyslot object version {} is not one this atrest reads ({KEYSLOT_VERSION}); upgrade atrest",
            bytes[4]
        ));
    }
    if bytes[5..HEADER_LEN] != repo_id[..] {
        return Err("belongs to another repository".into());
    }
    let slot = Keyslot::decode(
        &SlotOwner::BackupRepository(*repo_id),
        &bytes[HEADER_LEN..bytes.len() - MAC_LEN],
    )?;
    if name != object_name(slot.id) {
        return Err(format!("holds slot {}, not the one its name says", slot.id));
    }
    Ok(slot)
}

/// Every `keys/` object, parsed (structure only).
pub(crate) fn read_all<B: Backend>(
    backend: &B,
    repo_id: &[u8; REPO_ID_LEN],
) -> Result<Vec<StoredSlot>> {
    backend
        .list(KEYS_DIR)?
        .into_iter()
        .map(|name| {
            let bytes = backend.get(&name)?;
            Ok(StoredSlot {
                slot: decode(repo_id, &name, &bytes),
                name,
                bytes,
            })
        })
        .collect()
}

impl StoredSlot {
    /// Checks the object's MAC under the master key a slot gave.
    pub(crate) fn verify(&self, mac: &HeaderMac) -> bool {
        self.slot.is_ok()
            && mac
                .verify(
                    &self.bytes[..self.bytes.len() - MAC_LEN],
                    &self.bytes[self.bytes.len() - MAC_LEN..],
                )
                .is_ok()
    }
}

/// Writes a new slot's object; fails if another command took its id at
/// the same moment (the object read back is not the one written).
pub(crate) fn write<B: Backend>(
    backend: &B,
    repo_id: &[u8; REPO_ID_LEN],
    slot: &Keyslot,
    mac: &HeaderMac,
) -> Result<()> {
    let name = object_name(slot.id);
    let bytes = encode(repo_id, slot, mac);
    backend.put(&name, &bytes)?;
    if backend.get(&name)? != bytes {
        return Err(BackupError::Keyslot(format!(
            "another command wrote keyslot {} at the same time; run this again",
            slot.id
        )));
    }
    Ok(())
}
