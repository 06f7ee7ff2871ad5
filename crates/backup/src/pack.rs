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

/// zstd's default level: what every atrest pack was written with.
const ZSTD_LEVEL: i32 = 3;

/// Builds one pack. Blobs are sealed as they come, each in a buffer of its
/// own, and laid out in a random order when the pack is finished, so the
/// order of blobs in a pack says nothing of their order in the files they
/// came from (restic 0.18's second mitigation against chunk-length
/// fingerprinting). The buffers are never joined: a finished [`Pack`] is
/// written out as they are, so a pack costs its own size in memory once.
pub struct PackWriter<'k> {
    keys: &'k RepoKeys,
    cipher: atrest_core::BlockCipher,
    header: Vec<u8>,
    sealed: Vec<(TrailerEntry, Vec<u8>)>,
    /// One zstd context for every blob of the pack (making one per blob
    /// was a tenth of a run's CPU time).
    zstd: zstd::bulk::Compressor<'static>,
}

impl<'k> PackWriter<'k> {
    pub fn new(keys: &'k RepoKeys) -> Self {
        let salt = atrest_core::random_array::<32>();
        let mut header = Vec::with_capacity(PACK_HEADER_LEN);
        header.extend_from_slice(PACK_MAGIC);
        header.extend_from_slice(&[1, 0, 0, 0]);
        header.extend_from_slice(&salt);
        Self {
            keys,
            cipher: keys.pack_cipher(&salt),
            header,
            sealed: Vec::new(),
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd level 3"),
        }
    }

    /// Compresses (when it helps) and seals one blob.
    pub fn add(&mut self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<()> {
        let packed = self
            .zstd
            .compress(plaintext)
            .map_err(|e| BackupError::damaged("zstd", e.to_string()))?;
        let (body, compressed) = if packed.len() < plaintext.len() {
            (&packed[..], true)
        } else {
            (plaintext, false)
        };
        let aad = self.keys.blob_aad(kind, &id, compressed);
        let mut sealed = vec![0; body.len() + self.cipher.overhead()];
        self.cipher.seal_to(&aad, body, &mut sealed);
        let entry = TrailerEntry {
            kind,
            id,
            // Set when the pack is finished.
            offset: 0,
            sealed_len: sealed.len() as u32,
            raw_len: plaintext.len() as u32,
            compressed,
        };
        self.sealed.push((entry, sealed));
        Ok(())
    }

    /// Lays the blobs out in a random order after the header and seals the
    /// trailer.
    pub fn finish(mut self) -> Pack {
        shuffle(&mut self.sealed);
        let aad = self.keys.file_aad("pack trailer", &self.header);
        let mut pieces = Vec::with_capacity(self.sealed.len() + 3);
        let mut entries = Vec::with_capacity(self.sealed.len());
        let mut trailer = Vec::with_capacity(self.sealed.len() * TRAILER_ENTRY_LEN);
        pieces.push(self.header);
        let mut offset = PACK_HEADER_LEN as u64;
        for (mut entry, sealed) in self.sealed {
            entry.offset = offset;
            offset += sealed.len() as u64;
            entry.encode(&mut trailer);
            entries.push(entry);
            pieces.push(sealed);
        }
        let sealed = self.cipher.seal(&aad, &trailer);
        let sealed_len = (sealed.len() as u32).to_be_bytes().to_vec();
        pieces.extend([sealed, sealed_len]);
        let name = self
            .keys
            .blob_id_of_pieces(pieces.iter().map(Vec::as_slice));
        Pack {
            name,
            pieces,
            entries,
        }
    }
}

/// A finished pack: its bytes as the buffers they were sealed in, in file
/// order (header, each blob, sealed trailer, its length), for
/// [`Backend::put_pieces`](crate::Backend::put_pieces), which writes them
/// without joining them first.
pub struct Pack {
    /// The keyed hash of all its bytes.
    pub name: [u8; 32],
    pub pieces: Vec<Vec<u8>>,
    /// The blobs, in the order they are in the pack.
    pub entries: Vec<TrailerEntry>,
}

/// Fisher-Yates with the system's random generator (a 64-bit draw per
/// position; the modulo bias, below 2^-40 for any pack, does not matter
/// for hiding an order).
fn shuffle<T>(items: &mut [T]) {
    let mut draws = vec![0u8; 8 * items.len()];
    atrest_core::fill_random(&mut draws);
    for (i, draw) in (1..items.len()).rev().zip(draws.chunks_exact(8)) {
        let r = u64::from_le_bytes(draw.try_into().expect("8 bytes"));
        items.swap(i, (r % (i as u64 + 1)) as usize);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blobs_are_laid_out_in_a_random_order_and_each_opens_where_the_trailer_says() {
        let keys = RepoKeys::new(&atrest_core::SecretKey::random(), [7; 16]);
        let blobs: Vec<Vec<u8>> = (0..24u8)
            .map(|i| vec![i; 100 + usize::from(i) * 37])
            .collect();
        let mut writer = PackWriter::new(&keys);
        let ids: Vec<BlobId> = blobs.iter().map(|b| keys.blob_id(b)).collect();
        for (blob, id) in blobs.iter().zip(&ids) {
            writer.add(BlobKind::Data, *id, blob).unwrap();
        }
        let pack = writer.finish();
        let (bytes, name) = (pack.pieces.concat(), pack.name);
        let entries = read_trailer(&keys, "test", &name, &bytes).unwrap();
        assert_eq!(entries, pack.entries);
        // The same blobs, each once, in another order than they came (the
        // chance that 24 shuffle to their own order is 1 in 24!).
        let order: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
        assert_ne!(order, ids);
        let mut sorted = order.clone();
        sorted.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(sorted, expected);
        // Laid end to end after the header, each opening to its blob.
        let mut at = PACK_HEADER_LEN as u64;
        for e in &entries {
            assert_eq!(e.offset, at);
            at += u64::from(e.sealed_len);
            let loc = e.location(name);
            let sealed = &bytes[e.offset as usize..at as usize];
            let plain = open_blob(&keys, &bytes[8..40], &loc, &e.id, sealed).unwrap();
            assert_eq!(keys.blob_id(&plain), e.id);
        }
    }

    /// Takes at most `step` bytes a call, across several pieces when
    /// written vectored, and refuses every third call with `Interrupted`.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl std::io::Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[std::io::IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let start = self.out.len();
            for buf in bufs {
                let room = self.step - (self.out.len() - start);
                if room == 0 {
                    break;
                }
                self.out.extend_from_slice(&buf[..buf.len().min(room)]);
            }
            Ok(self.out.len() - start)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_pack_written_in_pieces_is_byte_for_byte_the_joined_pack_even_in_short_writes() {
        let keys = RepoKeys::new(&atrest_core::SecretKey::random(), [9; 16]);
        let mut writer = PackWriter::new(&keys);
        // Many blobs: empty, tiny, compressible and not.
        for i in 0..300u32 {
            let blob: Vec<u8> = match i % 3 {
                0 => vec![i as u8; (i * 13) as usize],
                1 => (0..i * 29)
                    .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
                _ => i.to_be_bytes().to_vec(),
            };
            writer
                .add(BlobKind::Data, keys.blob_id(&blob), &blob)
                .unwrap();
        }
        let pack = writer.finish();
        assert_eq!(pack.pieces.len(), 300 + 3);
        // What `finish` returned before packs were written in pieces: the
        // pieces joined into one buffer, named by the hash of all of it.
        let joined = pack.pieces.concat();
        assert_eq!(keys.blob_id(&joined), pack.name);
        let entries = read_trailer(&keys, "test", &pack.name, &joined).unwrap();
        assert_eq!(entries, pack.entries);

        for step in [1, 3, 50, 4099, usize::MAX / 2] {
            let mut out = Trickle {
                out: Vec::new(),
                step,
                calls: 0,
            };
            let mut slices: Vec<_> = pack
                .pieces
                .iter()
                .map(|p| std::io::IoSlice::new(p))
                .collect();
            crate::backend::write_all_vectored(&mut out, &mut slices).unwrap();
            assert!(out.out == joined, "{step} bytes a call");
        }

        // Through the local backend's temporary file and rename.
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::LocalBackend::new(dir.path());
        use crate::Backend as _;
        backend.put_pieces("data/pack", pack.pieces).unwrap();
        assert!(std::fs::read(dir.path().join("data/pack")).unwrap() == joined);
    }

    #[test]
    fn a_writer_that_takes_nothing_fails_the_write_instead_of_looping() {
        let mut full: &mut [u8] = &mut [];
        let mut slices = [std::io::IoSlice::new(b""), std::io::IoSlice::new(b"pack")];
        let err = crate::backend::write_all_vectored(&mut full, &mut slices).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WriteZero);
        // Nothing to write: not an error.
        let mut none = [std::io::IoSlice::new(b"")];
        crate::backend::write_all_vectored(&mut full, &mut none).unwrap();
    }
}
