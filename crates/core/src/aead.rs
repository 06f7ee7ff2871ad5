use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305};

use crate::{AuthError, SecretKey};

/// The AEAD that seals file content blocks and small metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentAlgorithm {
    /// AES-256-GCM, 96-bit random nonce (aws-lc). The default: 13 GB/s on
    /// one core with AES-NI.
    Aes256Gcm,
    /// XChaCha20-Poly1305, 192-bit random nonce, for CPUs without AES
    /// instructions.
    XChaCha20Poly1305,
}

impl ContentAlgorithm {
    /// The byte that names the algorithm in the vault config.
    pub fn id(self) -> u8 {
        match self {
            Self::Aes256Gcm => 1,
            Self::XChaCha20Poly1305 => 2,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Aes256Gcm),
            2 => Some(Self::XChaCha20Poly1305),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "AES-256-GCM",
            Self::XChaCha20Poly1305 => "XChaCha20-Poly1305",
        }
    }

    pub fn nonce_len(self) -> usize {
        match self {
            Self::Aes256Gcm => NONCE_LEN,
            Self::XChaCha20Poly1305 => 24,
        }
    }

    pub const TAG_LEN: usize = 16;

    /// Bytes a sealed message adds to its plaintext: nonce plus tag.
    pub fn overhead(self) -> usize {
        self.nonce_len() + Self::TAG_LEN
    }
}

enum Keyed {
    Aes(LessSafeKey),
    XChaCha(Box<XChaCha20Poly1305>),
}

/// A keyed AEAD. A sealed message is `nonce ‖ ciphertext ‖ tag`, with a
/// fresh random nonce for every seal. Callers derive one key per file (or
/// per purpose) so no key comes near the random-nonce collision bound.
pub struct BlockCipher {
    algorithm: ContentAlgorithm,
    keyed: Keyed,
}

impl BlockCipher {
    pub fn new(algorithm: ContentAlgorithm, key: &SecretKey) -> Self {
        let keyed = match algorithm {
            ContentAlgorithm::Aes256Gcm => Keyed::Aes(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key.expose()).expect("32-byte AES-256 key"),
            )),
            ContentAlgorithm::XChaCha20Poly1305 => Keyed::XChaCha(Box::new(
                XChaCha20Poly1305::new_from_slice(key.expose()).expect("32-byte key"),
            )),
        };
        Self { algorithm, keyed }
    }

    pub fn algorithm(&self) -> ContentAlgorithm {
        self.algorithm
    }

    pub fn overhead(&self) -> usize {
        self.algorithm.overhead()
    }

    /// Seals `plaintext` into `out`, which must be exactly
    /// `plaintext.len() + overhead()` bytes long.
    pub fn seal_to(&self, aad: &[u8], plaintext: &[u8], out: &mut [u8]) {
        let nonce_len = self.algorithm.nonce_len();
        assert_eq!(out.len(), plaintext.len() + self.overhead(), "output size");
        let (nonce, rest) = out.split_at_mut(nonce_len);
        let (body, tag_out) = rest.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        self.seal_parts(aad, nonce, body, tag_out);
    }

    /// Seals `body` in place; its fresh nonce and its tag go to
    /// `nonce_tag` (`nonce ‖ tag`, exactly `overhead()` bytes): the
    /// detached form, for ciphertext that is stored apart from its nonce
    /// and tag (format 2's blocks and their map entries).
    pub fn seal_detached(&self, aad: &[u8], body: &mut [u8], nonce_tag: &mut [u8]) {
        assert_eq!(nonce_tag.len(), self.overhead(), "nonce and tag size");
        let (nonce, tag_out) = nonce_tag.split_at_mut(self.algorithm.nonce_len());
        self.seal_parts(aad, nonce, body, tag_out);
    }

    fn seal_parts(&self, aad: &[u8], nonce: &mut [u8], body: &mut [u8], tag_out: &mut [u8]) {
        crate::fill_nonce(nonce);
        match &self.keyed {
            Keyed::Aes(key) => {
                let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), body)
                    .expect("AES-GCM seal of less than 64 GiB");
                tag_out.copy_from_slice(tag.as_ref());
            }
            Keyed::XChaCha(key) => {
                let nonce = chacha20poly1305::XNonce::try_from(&*nonce).expect("24-byte nonce");
                let tag = key
                    .encrypt_inout_detached(&nonce, aad, body.into())
                    .expect("XChaCha20-Poly1305 seal of less than 256 GiB");
                tag_out.copy_from_slice(&tag);
            }
        }
    }

    /// Opens `body` in place with its detached `nonce_tag` (`nonce ‖
    /// tag`, as [`Self::seal_detached`] wrote it). On failure the
    /// content of `body` is unspecified.
    pub fn open_detached(
        &self,
        aad: &[u8],
        nonce_tag: &[u8],
        body: &mut [u8],
    ) -> Result<(), AuthError> {
        if nonce_tag.len() != self.overhead() {
            return Err(AuthError);
        }
        let (nonce, tag) = nonce_tag.split_at(self.algorithm.nonce_len());
        match &self.keyed {
            Keyed::Aes(key) => {
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError)?;
                key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, body)
                    .map(drop)
                    .map_err(|_| AuthError)
            }
            Keyed::XChaCha(key) => {
                let nonce = chacha20poly1305::XNonce::try_from(nonce).map_err(|_| AuthError)?;
                let tag = chacha20poly1305::Tag::try_from(tag).map_err(|_| AuthError)?;
                key.decrypt_inout_detached(&nonce, aad, body.into(), &tag)
                    .map_err(|_| AuthError)
            }
        }
    }

    /// Seals into a new vector.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; plaintext.len() + self.overhead()];
        self.seal_to(aad, plaintext, &mut out);
        out
    }

    /// Opens a sealed message in place and returns the plaintext, which lies
    /// inside `sealed`. On failure the buffer content is unspecified.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], AuthError> {
        let nonce_len = self.algorithm.nonce_len();
        if sealed.len() < self.overhead() {
            return Err(AuthError);
        }
        let (nonce, rest) = sealed.split_at_mut(nonce_len);
        match &self.keyed {
            Keyed::Aes(key) => {
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError)?;
                key.open_in_place(nonce, Aad::from(aad), rest)
                    .map_err(|_| AuthError)
            }
            Keyed::XChaCha(key) => {
                let nonce = chacha20poly1305::XNonce::try_from(&*nonce).map_err(|_| AuthError)?;
                let body_len = rest.len() - ContentAlgorithm::TAG_LEN;
                let (body, tag) = rest.split_at_mut(body_len);
                let tag = chacha20poly1305::Tag::try_from(&*tag).map_err(|_| AuthError)?;
                key.decrypt_inout_detached(&nonce, aad, (&mut *body).into(), &tag)
                    .map_err(|_| AuthError)?;
                Ok(body)
            }
        }
    }

    /// Opens into a new vector.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut buf = sealed.to_vec();
        let plain = self.open_in_place(aad, &mut buf)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ContentAlgorithm; 2] = [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ];

    #[test]
    fn round_trip_and_tamper() {
        for alg in ALL {
            let cipher = BlockCipher::new(alg, &SecretKey::random());
            for len in [0usize, 1, 15, 16, 4096] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let sealed = cipher.seal(b"ad", &pt);
                assert_eq!(sealed.len(), len + alg.overhead());
                assert_eq!(cipher.open(b"ad", &sealed).unwrap(), pt);
                assert_eq!(cipher.open(b"AD", &sealed), Err(AuthError));
                for i in [0, sealed.len() / 2, sealed.len() - 1] {
                    let mut bad = sealed.clone();
                    bad[i] ^= 1;
                    assert_eq!(cipher.open(b"ad", &bad), Err(AuthError), "{alg:?} byte {i}");
                }
                assert_eq!(
                    cipher.open(b"ad", &sealed[..sealed.len() - 1]),
                    Err(AuthError)
                );
            }
        }
    }

    /// The detached forms are the same AEAD as `seal`/`open`: a message
    /// sealed by one opens with the other, and a change anywhere fails.
    #[test]
    fn detached_forms_agree_with_the_joined_ones() {
        for alg in ALL {
            let cipher = BlockCipher::new(alg, &SecretKey::random());
            let nonce_len = alg.nonce_len();
            let pt: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
            let sealed = cipher.seal(b"ad", &pt);
            let mut nonce_tag = sealed[..nonce_len].to_vec();
            nonce_tag.extend_from_slice(&sealed[nonce_len + pt.len()..]);
            let mut body = sealed[nonce_len..nonce_len + pt.len()].to_vec();
            cipher.open_detached(b"ad", &nonce_tag, &mut body).unwrap();
            assert_eq!(body, pt);

            let mut body = pt.clone();
            let mut nonce_tag = vec![0u8; alg.overhead()];
            cipher.seal_detached(b"ad", &mut body, &mut nonce_tag);
            assert_ne!(body, pt);
            let mut joined = nonce_tag[..nonce_len].to_vec();
            joined.extend_from_slice(&body);
            joined.extend_from_slice(&nonce_tag[nonce_len..]);
            assert_eq!(cipher.open(b"ad", &joined).unwrap(), pt);
            assert_eq!(
                cipher.open_detached(b"AD", &nonce_tag, &mut body.clone()),
                Err(AuthError)
            );
            for i in [0, nonce_len - 1, nonce_len, alg.overhead() - 1] {
                let mut bad = nonce_tag.clone();
                bad[i] ^= 1;
                assert_eq!(
                    cipher.open_detached(b"ad", &bad, &mut body.clone()),
                    Err(AuthError),
                    "{alg:?} nonce or tag byte {i}"
                );
            }
            let mut bad = body.clone();
            bad[4095] ^= 1;
            assert_eq!(
                cipher.open_detached(b"ad", &nonce_tag, &mut bad),
                Err(AuthError)
            );
            assert_eq!(
                cipher.open_detached(b"ad", &nonce_tag[1..], &mut body.clone()),
                Err(AuthError)
            );
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &SecretKey::random());
        assert_ne!(cipher.seal(b"", b"same"), cipher.seal(b"", b"same"));
        // Across many pool refills, no nonce repeats.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let sealed = cipher.seal(b"", b"");
            assert!(seen.insert(sealed[..12].to_vec()), "nonce repeated");
        }
    }

    #[test]
    fn wrong_key_fails() {
        for alg in ALL {
            let a = BlockCipher::new(alg, &SecretKey::random());
            let b = BlockCipher::new(alg, &SecretKey::random());
            assert_eq!(b.open(b"", &a.seal(b"", b"x")), Err(AuthError));
        }
    }
}
