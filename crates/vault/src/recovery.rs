//! Recovery keys: 256 random bits shown to a human once, as eleven groups of
//! five Crockford base32 characters. The last 16 bits are a checksum, so a
//! typo is caught before any unlock is tried.
//!
//! ```
//! use atrest_vault::RecoveryKey;
//! let key = RecoveryKey::generate();
//! let shown = key.display();
//! assert_eq!(RecoveryKey::parse(&shown).unwrap().secret().expose(), key.secret().expose());
//! ```

use atrest_core::{SecretKey, sha256};
use zeroize::Zeroizing;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RAW_LEN: usize = 34;
const CHARS: usize = 55;

pub struct RecoveryKey(SecretKey);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryKeyError {
    #[error("a recovery key has 55 characters (11 groups of 5); this one has {0}")]
    Length(usize),
    #[error("'{0}' is not a recovery key character (digits and letters except I, L, O, U)")]
    Character(char),
    #[error("the recovery key's checksum does not match: check it for a typo")]
    Checksum,
}

impl RecoveryKey {
    pub fn generate() -> Self {
        Self(SecretKey::random())
    }

    pub fn from_secret(key: SecretKey) -> Self {
        Self(key)
    }

    pub fn secret(&self) -> &SecretKey {
        &self.0
    }

    fn checksum(key: &[u8; 32]) -> [u8; 2] {
        let mut input = Zeroizing::new(atrest_core::labels::domain::RECOVERY_CHECKSUM.to_vec());
        input.extend_from_slice(key);
        let digest = sha256(&input);
        [digest[0], digest[1]]
    }

    /// `XXXXX-XXXXX-...` (eleven groups).
    pub fn display(&self) -> String {
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        raw[..32].copy_from_slice(self.0.expose());
        raw[32..].copy_from_slice(&Self::checksum(self.0.expose()));
        let mut chars = String::with_capacity(CHARS + 10);
        let mut acc: u32 = 0;
        let mut bits = 0;
        let mut count = 0;
        let mut push = |v: u32, chars: &mut String| {
            if count > 0 && count % 5 == 0 {
                chars.push('-');
            }
            chars.push(ALPHABET[v as usize] as char);
            count += 1;
        };
        for &byte in raw.iter() {
            acc = (acc << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                push((acc >> bits) & 31, &mut chars);
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            push((acc << (5 - bits)) & 31, &mut chars);
        }
        chars
    }

    /// Accepts any case, spaces and dashes anywhere, and the Crockford
    /// look-alikes (I and L read as 1, O as 0).
    pub fn parse(text: &str) -> Result<Self, RecoveryKeyError> {
        let mut values = Zeroizing::new(Vec::with_capacity(CHARS));
        for c in text.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let c = match c.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                other => other,
            };
            let v = ALPHABET
                .iter()
                .position(|&a| a as char == c)
                .ok_or(RecoveryKeyError::Character(c))?;
            values.push(v as u32);
        }
        if values.len() != CHARS {
            return Err(RecoveryKeyError::Length(values.len()));
        }
        let mut raw = Zeroizing::new([0u8; RAW_LEN]);
        let (mut acc, mut bits, mut n) = (0u32, 0, 0);
        for &v in values.iter() {
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if n < RAW_LEN {
                    raw[n] = (acc >> bits) as u8;
                }
                n += 1;
                acc &= (1 << bits) - 1;
            }
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        let key = SecretKey::from_bytes(key);
        // The 3 padding bits (275 - 272) must be zero, or two spellings would exist.
        if acc != 0 || !atrest_core::constant_time_eq(&Self::checksum(key.expose()), &raw[32..]) {
            return Err(RecoveryKeyError::Checksum);
        }
        Ok(Self(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        for _ in 0..50 {
            let key = RecoveryKey::generate();
            let shown = key.display();
            assert_eq!(shown.len(), 65);
            assert_eq!(shown.split('-').count(), 11);
            let back = RecoveryKey::parse(&shown.to_lowercase().replace('-', " ")).unwrap();
            assert_eq!(back.secret().expose(), key.secret().expose());
        }
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let key = RecoveryKey::from_secret(SecretKey::from_bytes([0x5a; 32]));
        let shown: Vec<char> = key.display().chars().collect();
        for i in (0..shown.len()).filter(|&i| shown[i] != '-') {
            for &replacement in ALPHABET.iter() {
                let replacement = replacement as char;
                if replacement == shown[i] {
                    continue;
                }
                let mut typo = shown.clone();
                typo[i] = replacement;
                let typo: String = typo.into_iter().collect();
                assert!(RecoveryKey::parse(&typo).is_err(), "typo at {i} accepted");
            }
        }
    }

    #[test]
    fn wrong_length_and_characters() {
        assert_eq!(
            RecoveryKey::parse("ABC").err(),
            Some(RecoveryKeyError::Length(3))
        );
        assert_eq!(
            RecoveryKey::parse("U").err(),
            Some(RecoveryKeyError::Character('U'))
        );
    }
}
