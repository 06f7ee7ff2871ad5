//! Master key identifiers and what the kernel says about a key.

use std::fmt;
use std::str::FromStr;

/// The 16-byte identifier the kernel derives from a v2 master key
/// (HKDF-SHA512 of the key). Public: it is stored in every encrypted
/// directory's policy and names the key in the file system's keyring.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyIdentifier([u8; 16]);

impl KeyIdentifier {
    pub const LEN: usize = 16;

    pub fn from_bytes(bytes: [u8; 16]) -> KeyIdentifier {
        KeyIdentifier(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Lowercase hex, as `fscryptctl` prints it.
impl fmt::Display for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for KeyIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyIdentifier({self})")
    }
}

/// The text was not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key identifier is 32 hex digits")]
pub struct ParseKeyIdentifierError;

impl FromStr for KeyIdentifier {
    type Err = ParseKeyIdentifierError;

    fn from_str(text: &str) -> Result<KeyIdentifier, ParseKeyIdentifierError> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return Err(ParseKeyIdentifierError);
        }
        let digit = |c: u8| (c as char).to_digit(16).ok_or(ParseKeyIdentifierError);
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            // Two hex digits make at most 0xff.
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(KeyIdentifier(bytes))
    }
}

/// What `FS_IOC_REMOVE_ENCRYPTION_KEY` reported. Both flags describe a
/// removal that did not (yet) lock everything; neither is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoveStatus {
    /// Some files using the key were still open. The key's secret is gone,
    /// but those files stay readable until closed; the key is now
    /// [`KeyStatus::IncompletelyRemoved`]. Close them and remove again to
    /// finish.
    pub files_busy: bool,
    /// Only this user's claim was removed; other users had also added the key,
    /// so it stays present. Removing for all users (root) removes it.
    pub other_users: bool,
}

/// Whether a key is in a file system's keyring (`FS_IOC_GET_ENCRYPTION_KEY_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Not added, or fully removed: the directories it protects are locked.
    Absent,
    /// Added: the directories it protects are unlocked.
    Present {
        /// How many users have added the key.
        user_count: u32,
        /// Whether the calling user is one of them (and so may remove it
        /// without `all_users`).
        added_by_self: bool,
    },
    /// Removed while files were open: new files cannot be opened, the open
    /// ones still work. Removing again, once they are closed, finishes.
    IncompletelyRemoved,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_hex_round_trips() {
        let identifier = KeyIdentifier::from_bytes([
            0x00, 0x01, 0x7f, 0x80, 0xff, 0xab, 0xcd, 0xef, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
            0x70, 0x90,
        ]);
        let text = identifier.to_string();
        assert_eq!(text, "00017f80ffabcdef1020304050607090");
        assert_eq!(text.parse(), Ok(identifier));
        assert_eq!(text.to_uppercase().parse(), Ok(identifier));
        assert_eq!(format!("{identifier:?}"), format!("KeyIdentifier({text})"));
    }

    #[test]
    fn identifier_parse_refuses_bad_text() {
        for bad in [
            "",
            "00",
            &"0".repeat(31),
            &"0".repeat(33),
            &format!("{}g", "0".repeat(31)),
            "+0000000000000000000000000000000",
        ] {
            assert_eq!(
                bad.parse::<KeyIdentifier>(),
                Err(ParseKeyIdentifierError),
                "{bad:?}"
            );
        }
        // Multi-byte characters must not be split into "digits".
        assert!("é".repeat(16).parse::<KeyIdentifier>().is_err());
    }
}
