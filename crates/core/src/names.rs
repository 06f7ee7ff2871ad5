use aes_siv::{KeyInit, siv::Aes256Siv};

use crate::{AuthError, SecretBytes};

/// AES-SIV (RFC 5297) with a 512-bit key: 256 bits for S2V/CMAC, 256 for CTR.
pub const NAME_KEY_LEN: usize = 64;

/// Deterministic authenticated encryption of names. The same name in the
/// same context (a directory id) always gives the same ciphertext, which is
/// what lets a lookup find a file without listing the directory; the context
/// goes into the associated data, so equal names in different directories
/// differ.
pub struct NameCipher {
    key: SecretBytes,
}

impl NameCipher {
    pub fn new(key: SecretBytes) -> Self {
        assert_eq!(key.len(), NAME_KEY_LEN, "AES-SIV-512 key");
        Self { key }
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new_from_slice(self.key.expose()).expect("64-byte key")
    }

    /// `SIV (16 bytes) ‖ ciphertext`. The associated data is a list of
    /// components, each authenticated separately (S2V vector input).
    pub fn encrypt(&self, associated: &[&[u8]], name: &[u8]) -> Vec<u8> {
        self.siv()
            .encrypt(associated, name)
            .expect("at most 126 associated-data components")
    }

    pub fn decrypt(&self, associated: &[&[u8]], ciphertext: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.siv()
            .decrypt(associated, ciphertext)
            .map_err(|_| AuthError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5297 appendix A.1 uses AES-SIV-256 (two AES-128 keys); A.1's
    /// construction at 512 bits is checked by the vector files under
    /// `testdata/`. Here: the RFC's A.1 vector run through the 128-bit
    /// variant proves we call S2V the same way the RFC does.
    #[test]
    fn rfc5297_a1_deterministic_mode() {
        use aes_siv::siv::Aes128Siv;
        let key = unhex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
        let ad = unhex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
        let pt = unhex("11223344 55667788 99aabbcc ddee");
        let expected = unhex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c");
        let mut siv = Aes128Siv::new_from_slice(&key).unwrap();
        assert_eq!(siv.encrypt([&ad], &pt).unwrap(), expected);
    }

    #[test]
    fn deterministic_and_context_bound() {
        let cipher = NameCipher::new(SecretBytes::new(vec![9; 64]));
        let a = cipher.encrypt(&[b"dir1"], b"report.pdf");
        assert_eq!(a, cipher.encrypt(&[b"dir1"], b"report.pdf"));
        assert_ne!(a, cipher.encrypt(&[b"dir2"], b"report.pdf"));
        assert_eq!(cipher.decrypt(&[b"dir1"], &a).unwrap(), b"report.pdf");
        assert_eq!(cipher.decrypt(&[b"dir2"], &a), Err(AuthError));
        let mut bad = a.clone();
        bad[3] ^= 0x40;
        assert_eq!(cipher.decrypt(&[b"dir1"], &bad), Err(AuthError));
    }
}
