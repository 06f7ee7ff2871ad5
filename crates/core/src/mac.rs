use aws_lc_rs::hmac;

use crate::{AuthError, SecretKey};

pub const MAC_LEN: usize = 32;

/// HMAC-SHA256 with a 256-bit key. Signs the vault config (keyed from the
/// vault master key, so nobody without it can splice in a keyslot or change
/// a parameter), and computes blind indexes. The key's pads are computed
/// once, so each `sign` costs two SHA-256 compressions for short inputs.
pub struct HeaderMac(hmac::Key);

impl HeaderMac {
    pub fn new(key: &SecretKey) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.expose()))
    }

    pub fn sign(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let tag = hmac::sign(&self.0, data);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time check.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        hmac::verify(&self.0, data, tag).map_err(|_| AuthError)
    }
}

/// BLAKE3 in keyed mode: content ids that only the key holder can compute,
/// so a reader of a backup repository cannot confirm that a known file is
/// in it (which a plain hash of the content would allow).
pub struct KeyedHash(blake3::Hasher);

impl KeyedHash {
    pub fn new(key: &SecretKey) -> Self {
        Self(blake3::Hasher::new_keyed(key.expose()))
    }

    /// The 32-byte keyed hash of `data`.
    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        self.hash_pieces([data])
    }

    /// The keyed hash of the concatenation of `pieces`, without joining
    /// them first (a backup pack is hashed as the pieces it is written in).
    pub fn hash_pieces<'a>(&self, pieces: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
        let mut hasher = self.0.clone();
        for piece in pieces {
            hasher.update(piece);
        }
        *hasher.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hash_matches_the_blake3_reference_and_depends_on_the_key() {
        // BLAKE3's official test vector: key "whats the Elvish word for
        // friend", input of length 0.
        let key = SecretKey::from_slice(b"whats the Elvish word for friend").unwrap();
        let got = KeyedHash::new(&key).hash(b"");
        let want = "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26";
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
        assert_ne!(KeyedHash::new(&SecretKey::random()).hash(b""), got);
    }

    #[test]
    fn hashing_pieces_equals_hashing_their_concatenation_wherever_it_is_cut() {
        let hash = KeyedHash::new(&SecretKey::random());
        // Over several of BLAKE3's 1 KiB chunks, so cuts fall inside and
        // on chunk boundaries.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = hash.hash(&data);
        for cuts in [
            vec![0, 5000],
            vec![1, 1024, 1025, 4999],
            vec![0, 0, 2048, 2048, 3000],
            (0..5000).step_by(7).collect(),
        ] {
            let mut pieces = Vec::new();
            let mut at = 0;
            for cut in cuts {
                pieces.push(&data[at..cut]);
                at = cut;
            }
            pieces.push(&data[at..]);
            assert_eq!(hash.hash_pieces(pieces), whole);
        }
        assert_ne!(hash.hash_pieces([&data[..4999]]), whole);
    }
}
