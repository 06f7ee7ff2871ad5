//! The repository's keys, all derived from its master key (a vault's
//! backup key, or a key held in the repository's own keyslots) and the
//! repository id.

use atrest_core::{BlockCipher, Canonical, ContentAlgorithm, KeyedHash, SecretKey, labels};

use crate::error::{BackupError, Result};

pub const REPO_ID_LEN: usize = 16;

/// What an object is: part of every blob's and file's AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlobKind {
    Data = 1,
    Tree = 2,
}

impl BlobKind {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Data),
            2 => Some(Self::Tree),
            _ => None,
        }
    }
}

/// A blob's id: the keyed BLAKE3 hash of its plaintext.
pub type BlobId = [u8; 32];

pub struct RepoKeys {
    pub(crate) repo_id: [u8; REPO_ID_LEN],
    ids: KeyedHash,
    object: SecretKey,
    files: BlockCipher,
    pub(crate) gear_seed: atrest_core::SecretBytes,
}

impl RepoKeys {
    pub fn new(master: &SecretKey, repo_id: [u8; REPO_ID_LEN]) -> Self {
        let object = master.derive(&repo_id, labels::BACKUP_OBJECT_KEY);
        Self {
            repo_id,
            ids: KeyedHash::new(&master.derive(&repo_id, labels::BACKUP_ID_KEY)),
            files: BlockCipher::new(ContentAlgorithm::Aes256Gcm, &object),
            object,
            gear_seed: master.derive_bytes(&repo_id, labels::BACKUP_CHUNKER_KEY, 256 * 8),
        }
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        self.ids.hash(plaintext)
    }

    /// [`blob_id`](Self::blob_id) of the concatenation of `pieces` (a
    /// pack's name, from the buffers it is written in).
    pub(crate) fn blob_id_of_pieces<'a>(
        &self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> BlobId {
        self.ids.hash_pieces(pieces)
    }

    /// The key of one pack, from its random salt.
    pub(crate) fn pack_cipher(&self, salt: &[u8]) -> BlockCipher {
        BlockCipher::new(
            ContentAlgorithm::Aes256Gcm,
            &self.object.derive(salt, labels::BACKUP_PACK_KEY),
        )
    }

    pub(crate) fn blob_aad(&self, kind: BlobKind, id: &BlobId, compressed: bool) -> Vec<u8> {
        let mut aad = Canonical::new(labels::domain::BACKUP_BLOB, 1);
        aad.field(&self.repo_id)
            .field(&[kind as u8])
            .field(id)
            .field(&[u8::from(compressed)]);
        aad.into_bytes()
    }

    pub(crate) fn file_aad(&self, what: &str, extra: &[u8]) -> Vec<u8> {
        let mut aad = Canonical::new(labels::domain::BACKUP_FILE, 1);
        aad.field(&self.repo_id).field(what.as_bytes()).field(extra);
        aad.into_bytes()
    }

    /// Seals a repository file (config, index, snapshot).
    pub(crate) fn seal_file(&self, what: &str, plaintext: &[u8]) -> Vec<u8> {
        self.files.seal(&self.file_aad(what, b""), plaintext)
    }

    pub(crate) fn open_file(&self, what: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.files
            .open(&self.file_aad(what, b""), sealed)
            .map_err(|_| {
                BackupError::damaged(
                    name,
                    "authentication failed (changed, cut, or not from this repository)",
                )
            })
    }

    /// The content-derived name of a repository file.
    pub(crate) fn file_name(&self, bytes: &[u8]) -> String {
        crate::backend::hex(&self.ids.hash(bytes))
    }
}
