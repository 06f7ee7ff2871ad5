//! Pack files: many sealed blobs, then a sealed trailer listing them
//! (docs/format.md §18.3).
//!
//! `"ATRP" ‖ u8 1 ‖ 3 zero bytes ‖ salt (32)`, then each blob `nonce ‖
//! ciphertext ‖ tag` under the pack key (HKDF of the object key with the
//! salt) with AAD over repository id, kind, id and the compression flag,
//! then the trailer sealed under the same key with AAD over the header,
//! then `u32be` length of the sealed trailer. The file's name is the keyed
//! hash of all its bytes.

use crate::error::{BackupError, Result};
use crate::keys::{BlobId, BlobKind, RepoKeys};

pub const PACK_MAGIC: &[u8; 4] = b"ATRP";
pub const PACK_HEADER_LEN: usize = 40;
/// kind (1) ‖ id (32) ‖ offset (8) ‖ sealed length (4) ‖ raw length (4) ‖ compressed (1)
pub const TRAILER_ENTRY_LEN: usize = 50;
/// A pack is closed once it holds this much.
pub const PACK_TARGET: usize = 16 << 20;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: [u8; 32],
    pub kind: BlobKind,
    pub offset: u64,
    pub sealed_len: u32,
    pub raw_len: u32,
    pub compressed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u64,
    pub sealed_len: u32,
    pub raw_len: u32,
    pub compressed: bool,
}

impl TrailerEntry {
    /// Where this entry's blob lives, in pack `pack`.
    pub fn location(&self, pack: [u8; 32]) -> Location {
        Location {
            pack,
            kind: self.kind,
            offset: self.offset,
            sealed_len: self.sealed_len,
            raw_len: self.raw_len,
            compressed: self.compressed,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.sealed_len.to_be_bytes());
        out.extend_from_slice(&self.raw_len.to_be_bytes());
        out.push(u8::from(self.compressed));
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != TRAILER_ENTRY_LEN || b[49] > 1 {
            return None;
        }
        Some(Self {
            kind: BlobKind::from_byte(b[0])?,
            id: b[1..33].try_into().ok()?,
            offset: u64::from_be_bytes(b[33..41].try_into().ok()?),
            sealed_len: u32::from_be_bytes(b[41..45].try_into().ok()?),
            raw_len: u32::from_be_bytes(b[45..49].try_into().ok()?),
            compressed: b[49] == 1,
        })
    }
}

pub struct PackWriter<'k> {
    keys: &'k RepoKeys,
    cipher: atrest_core::BlockCipher,
    bytes: Vec<u8>,
    entries: Vec<TrailerEntry>,
}

impl<'k> PackWriter<'k> {
    pub fn new(keys: &'k RepoKeys) -> Self {
        let salt = atrest_core::random_array::<32>();
        let mut bytes = Vec::with_capacity(PACK_TARGET + (1 << 20));
        bytes.extend_from_slice(PACK_MAGIC);
        bytes.extend_from_slice(&[1, 0, 0, 0]);
        bytes.extend_from_slice(&salt);
        Self {
            keys,
            cipher: keys.pack_cipher(&salt),
            bytes,
            entries: Vec::new(),
        }
    }

    /// Compresses (when it helps) and seals one blob.
    pub fn add(&mut self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<()> {
        let packed = zstd::bulk::compress(plaintext, 3)
            .map_err(|e| BackupError::damaged("zstd", e.to_string()))?;
        let (body, compressed) = if packed.len() < plaintext.len() {
            (&packed[..], true)
        } else {
            (plaintext, false)
        };
        let aad = self.keys.blob_aad(kind, &id, compressed);
        let offset = self.bytes.len();
        let sealed_len = body.len() + self.cipher.overhead();
        self.bytes.resize(offset + sealed_len, 0);
        self.cipher.seal_to(&aad, body, &mut self.bytes[offset..]);
        self.entries.push(TrailerEntry {
            kind,
            id,
            offset: offset as u64,
            sealed_len: sealed_len as u32,
            raw_len: plaintext.len() as u32,
            compressed,
        });
        Ok(())
    }

    /// Seals the trailer; returns the pack's bytes, its name and entries.
    pub fn finish(mut self) -> (Vec<u8>, [u8; 32], Vec<TrailerEntry>) {
        let mut trailer = Vec::with_capacity(self.entries.len() * TRAILER_ENTRY_LEN);
        for e in &self.entries {
            e.encode(&mut trailer);
        }
        let aad = self
            .keys
            .file_aad("pack trailer", &self.bytes[..PACK_HEADER_LEN]);
        let sealed = self.cipher.seal(&aad, &trailer);
        self.bytes.extend_from_slice(&sealed);
        self.bytes
            .extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        let name = self.keys.blob_id(&self.bytes);
        (self.bytes, name, self.entries)
    }
}

/// Reads a whole pack: checks its name, header and trailer.
pub fn read_trailer(
    keys: &RepoKeys,
    name: &str,
    expect: &[u8; 32],
    bytes: &[u8],
) -> Result<Vec<TrailerEntry>> {
    let bad = |why: &str| BackupError::damaged(format!("pack {name}"), why);
    if &keys.blob_id(bytes) != expect {
        return Err(bad("its content does not match its name"));
    }
    if bytes.len() < PACK_HEADER_LEN + 4 || &bytes[..4] != PACK_MAGIC {
        return Err(bad("not a pack"));
    }
    if bytes[4] != 1 {
        return Err(BackupError::UnsupportedVersion(bytes[4]));
    }
    let tlen = u32::from_be_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes")) as usize;
    let tstart = bytes
        .len()
        .checked_sub(4 + tlen)
        .filter(|s| *s >= PACK_HEADER_LEN)
        .ok_or_else(|| bad("cut"))?;
    let cipher = keys.pack_cipher(&bytes[8..40]);
    let aad = keys.file_aad("pack trailer", &bytes[..PACK_HEADER_LEN]);
    let trailer = cipher
        .open(&aad, &bytes[tstart..bytes.len() - 4])
        .map_err(|_| bad("trailer authentication failed"))?;
    if trailer.len() % TRAILER_ENTRY_LEN != 0 {
        return Err(bad("trailer length"));
    }
    trailer
        .chunks(TRAILER_ENTRY_LEN)
        .map(|c| {
            TrailerEntry::decode(c)
                .filter(|e| {
                    e.offset as usize >= PACK_HEADER_LEN
                        && e.offset as usize + e.sealed_len as usize <= tstart
                })
                .ok_or_else(|| bad("trailer entry"))
        })
        .collect()
}

/// Opens one sealed blob (`sealed` = its bytes in the pack) and checks that
/// its plaintext hashes to `id`.
pub fn open_blob(
    keys: &RepoKeys,
    pack_salt: &[u8],
    loc: &Location,
    id: &BlobId,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let name = || {
        format!(
            "blob {} in pack {}",
            crate::backend::hex(id),
            crate::backend::hex(&loc.pack)
        )
    };
    let cipher = keys.pack_cipher(pack_salt);
    let body = cipher
        .open(&keys.blob_aad(loc.kind, id, loc.compressed), sealed)
        .map_err(|_| BackupError::damaged(name(), "authentication failed"))?;
    let plain = if loc.compressed {
        zstd::bulk::decompress(&body, loc.raw_len as usize)
            .map_err(|e| BackupError::damaged(name(), e.to_string()))?
    } else {
        body
    };
    if plain.len() != loc.raw_len as usize || &keys.blob_id(&plain) != id {
        return Err(BackupError::damaged(
            name(),
            "content does not match its id",
        ));
    }
    Ok(plain)
}
