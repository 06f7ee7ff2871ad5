use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kdf;

/// A 256-bit secret key. Zeroized on drop; never printed.
///
/// The bytes live in a heap box so moving the key does not leave copies on
/// the stack, and so the page can be locked in memory by the caller.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Box<[u8; 32]>);

impl SecretKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = bytes;
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// Copies a key out of a slice; `None` unless it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Box::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(Self(key))
    }

    pub fn random() -> Self {
        let mut key = Box::new([0u8; 32]);
        crate::fill_random(&mut key[..]);
        Self(key)
    }

    /// The raw bytes. Named so every use stands out in review.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// HKDF-SHA256 subkey of this key with the given salt and `info` label.
    pub fn derive(&self, salt: &[u8], label: &[u8]) -> SecretKey {
        let mut out = Box::new([0u8; 32]);
        kdf::hkdf_sha256(&self.0[..], salt, label, &mut out[..]);
        SecretKey(out)
    }

    /// HKDF-SHA256 subkey of this key and a second secret together (IKM:
    /// `self ‖ other`): neither alone gives the result. Used to combine a
    /// server-held scope key with a client's share.
    pub fn combine(&self, other: &SecretKey, salt: &[u8], label: &[u8]) -> SecretKey {
        let mut ikm = zeroize::Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(&self.0[..]);
        ikm[32..].copy_from_slice(&other.0[..]);
        let mut out = Box::new([0u8; 32]);
        kdf::hkdf_sha256(&ikm[..], salt, label, &mut out[..]);
        SecretKey(out)
    }

    /// HKDF-SHA256 output of arbitrary length (for example the 64-byte
    /// AES-SIV key).
    pub fn derive_bytes(&self, salt: &[u8], label: &[u8], len: usize) -> SecretBytes {
        let mut out = SecretBytes::zeroed(len);
        kdf::hkdf_sha256(&self.0[..], salt, label, out.expose_mut());
        out
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Secret bytes of any length (passphrases, derived key material).
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn zeroed(len: usize) -> Self {
        Self(Zeroizing::new(vec![0u8; len]))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

/// A growable buffer of plaintext (file contents on their way to a
/// reader), wiped when dropped.
///
/// `Zeroizing<Vec<u8>>` wipes a vector one volatile byte write at a
/// time (zeroize wipes a `Vec`'s elements one by one); on a 128 KiB read
/// that is 131,072 stores after every reply. This buffer wipes its whole
/// allocation with one fill behind zeroize's optimization barrier, which
/// the compiler cannot drop either. As with any `Vec`, growing it may
/// leave an earlier allocation unwiped: size it once.
#[derive(Default)]
pub struct SecretBuffer(Vec<u8>);

impl SecretBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        Self(vec![0u8; len])
    }
}

impl std::ops::Deref for SecretBuffer {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for SecretBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for SecretBuffer {
    fn drop(&mut self) {
        // Every byte of the allocation is spare capacity once cleared.
        self.0.clear();
        self.0.spare_capacity_mut().zeroize();
    }
}

impl fmt::Debug for SecretBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBuffer([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SecretKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert!(shown.contains("redacted"));
        let bytes = SecretBytes::new(b"hunter2".to_vec());
        assert!(!format!("{bytes:?}").contains("hunter2"));
        let mut buffer = SecretBuffer::new();
        buffer.extend_from_slice(b"hunter2");
        assert!(!format!("{buffer:?}").contains("hunter2"));
    }

    #[test]
    fn derive_separates_labels_and_salts() {
        let key = SecretKey::from_bytes([7; 32]);
        let a = key.derive(b"salt", b"label a");
        let b = key.derive(b"salt", b"label b");
        let c = key.derive(b"other", b"label a");
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
        assert_eq!(a.expose(), key.derive(b"salt", b"label a").expose());
    }
}
