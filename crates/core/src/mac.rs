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
