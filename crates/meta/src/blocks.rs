//! What the store knows of file contents (docs/format.md §16.9): block
//! map entries (a block's nonce and tag), the data files that hold the
//! ciphertext, and the one question it must ask the content layer,
//! through [`BlockVerifier`]: does this ciphertext open with this entry?
//! The store never holds a file key; the content layer (atrest-vault's
//! `content2`) seals and opens.

use atrest_core::ContentAlgorithm;

use crate::page::{PageKind, item_space_for};
use crate::radix::RadixItem;
use crate::record::{BLOCK_SIZE, MapEntry};

/// Plaintext (and ciphertext) bytes of one block, as a `u64`.
pub const BLOCK: u64 = BLOCK_SIZE as u64;

/// Entries per block map leaf: 126 (GCM) or 84 (XChaCha20-Poly1305).
pub fn entries_per_leaf(algorithm: ContentAlgorithm) -> u64 {
    (item_space_for(algorithm) / MapEntry::len(algorithm)) as u64
}

/// The data file of object `id` (§16.1): `objects/<hh>/<16 hex digits>`,
/// `hh` the id's last two hex digits.
pub fn data_file_name(id: u64) -> String {
    format!("objects/{:02x}/{id:016x}", id & 0xff)
}

/// The directory holding [`data_file_name`]`(id)`.
pub fn data_dir_name(id: u64) -> String {
    format!("objects/{:02x}", id & 0xff)
}

/// One sealed block as the content layer hands it over: the map entry
/// (nonce and tag) and the 4,096 ciphertext bytes that go to the data
/// file or into a log record's payload.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlock {
    /// The block's nonce ‖ tag, as in [`MapEntry::Sealed`].
    pub nonce_tag: [u8; 40],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlock({:?})", MapEntry::Sealed(self.nonce_tag))
    }
}

impl SealedBlock {
    pub fn entry(&self) -> MapEntry {
        MapEntry::Sealed(self.nonce_tag)
    }
}

/// The content layer's answer to "is `ciphertext` block `block` of the
/// file `file_id`, sealed with the nonce and tag of `entry`?". Recovery
/// asks it for every journaled payload block (§16.12 (c)) and every fresh
/// block not covered by a `SYNC` (§16.16 step 3).
pub trait BlockVerifier {
    fn verify(
        &self,
        file_id: &[u8; 16],
        block: u64,
        nonce_tag: &[u8; 40],
        ciphertext: &[u8],
    ) -> bool;
}

/// A verifier for stores that hold no file contents (tests of the
/// namespace alone): every block fails, so a log that holds contents is
/// refused rather than read without its check.
pub struct NoContents;

impl BlockVerifier for NoContents {
    fn verify(&self, _: &[u8; 16], _: u64, _: &[u8; 40], _: &[u8]) -> bool {
        false
    }
}

impl RadixItem for MapEntry {
    const LEAF: PageKind = PageKind::MapLeaf;
    const INDEX: PageKind = PageKind::MapIndex;

    fn per_leaf(algorithm: ContentAlgorithm) -> u64 {
        entries_per_leaf(algorithm)
    }

    fn empty() -> Self {
        Self::Hole
    }

    fn is_empty(&self) -> bool {
        *self == Self::Hole
    }

    fn encode(&self, algorithm: ContentAlgorithm, out: &mut Vec<u8>) {
        MapEntry::encode(self, algorithm, out);
    }

    fn item_len(algorithm: ContentAlgorithm) -> usize {
        MapEntry::len(algorithm)
    }

    fn decode(algorithm: ContentAlgorithm, bytes: &[u8]) -> Result<Self, String> {
        MapEntry::decode(algorithm, bytes).ok_or_else(|| "bad block map entry".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_sizes_and_names_are_the_formats() {
        assert_eq!(entries_per_leaf(ContentAlgorithm::Aes256Gcm), 126);
        assert_eq!(entries_per_leaf(ContentAlgorithm::XChaCha20Poly1305), 84);
        assert_eq!(data_file_name(0x2a), "objects/2a/000000000000002a");
        assert_eq!(data_file_name(0x1234), "objects/34/0000000000001234");
        assert_eq!(data_dir_name(0x1234), "objects/34");
    }
}
