//! The plaintext mode and owner of a FUSE vault's root directory.
//!
//! The backing root stays `0700` and owned by whoever created the vault, so
//! that nobody reads ciphertext file names or sizes through it; the mount
//! root shows what [`RootAttr`] says instead, set with `chmod`/`chown`
//! through the mount. The record lives in `atrest.root` in the backing
//! root, sealed with the metadata key (docs/format.md §10.1):
//!
//! ```text
//! file = version (u16 BE, 1) ‖ Seal_{K_meta}("atrest root attributes v1" ‖ version,
//!                                            mode (u32 BE) ‖ uid (u32 BE) ‖ gid (u32 BE))
//! ```
//!
//! No file means: the backing root's own mode and owner, as before the
//! record existed.
//!
//! ```
//! # use atrest_core::{BlockCipher, ContentAlgorithm, NameCipher, SecretBytes, SecretKey};
//! # let names = atrest_vault::NameTransform::new(
//! #     NameCipher::new(SecretBytes::new(vec![3; 64])),
//! #     BlockCipher::new(ContentAlgorithm::Aes256Gcm, &SecretKey::random()),
//! # );
//! use atrest_vault::root_attr::RootAttr;
//! let attr = RootAttr { mode: 0o755, uid: 0, gid: 0 };
//! let stored = names.encrypt_root_attr(&attr);
//! assert_eq!(names.decrypt_root_attr(&stored).unwrap(), attr);
//! ```

use std::path::Path;

use atrest_core::labels::domain;

use crate::{ContentError, NameTransform, VaultError};

pub const ROOT_ATTR_FILE: &str = "atrest.root";
pub const ROOT_ATTR_VERSION: u16 = 1;
/// Plaintext body: mode, uid, gid.
const BODY_LEN: usize = 12;

/// Mode (permission bits, `0o7777` at most), owner and group of the
/// plaintext root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootAttr {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

fn corrupt(what: &str) -> ContentError {
    ContentError::Corrupt(what.to_string())
}

fn aad(version: u16) -> Vec<u8> {
    let mut aad = domain::ROOT_ATTR.to_vec();
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

impl NameTransform {
    pub fn encrypt_root_attr(&self, attr: &RootAttr) -> Vec<u8> {
        let mut body = [0u8; BODY_LEN];
        body[..4].copy_from_slice(&(attr.mode & 0o7777).to_be_bytes());
        body[4..8].copy_from_slice(&attr.uid.to_be_bytes());
        body[8..].copy_from_slice(&attr.gid.to_be_bytes());
        let mut out = ROOT_ATTR_VERSION.to_be_bytes().to_vec();
        out.extend_from_slice(&self.metadata.seal(&aad(ROOT_ATTR_VERSION), &body));
        out
    }

    /// Parses and authenticates a stored record; never panics.
    pub fn decrypt_root_attr(&self, stored: &[u8]) -> Result<RootAttr, ContentError> {
        let (version, sealed) = stored
            .split_first_chunk::<2>()
            .ok_or_else(|| corrupt("root attributes are truncated"))?;
        let version = u16::from_be_bytes(*version);
        if version != ROOT_ATTR_VERSION {
            return Err(corrupt("root attributes have an unknown version"));
        }
        let body = self
            .metadata
            .open(&aad(version), sealed)
            .map_err(|_| corrupt("root attributes failed authentication"))?;
        let field = |i: usize| -> Result<u32, ContentError> {
            body.get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| corrupt("root attributes have the wrong size"))
        };
        if body.len() != BODY_LEN {
            return Err(corrupt("root attributes have the wrong size"));
        }
        let mode = field(0)?;
        if mode & !0o7777 != 0 {
            return Err(corrupt("root attributes hold an impossible mode"));
        }
        Ok(RootAttr {
            mode,
            uid: field(1)?,
            gid: field(2)?,
        })
    }

    /// The record of the vault at `root`; `None` if it has none.
    pub fn read_root_attr(&self, root: &Path) -> Result<Option<RootAttr>, ContentError> {
        match std::fs::read(root.join(ROOT_ATTR_FILE)) {
            Ok(stored) => self.decrypt_root_attr(&stored).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the record atomically (written, synced, renamed).
    pub fn write_root_attr(&self, root: &Path, attr: &RootAttr) -> Result<(), VaultError> {
        crate::write_atomic(root, ROOT_ATTR_FILE, &self.encrypt_root_attr(attr), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::{BlockCipher, ContentAlgorithm, NameCipher, SecretBytes, SecretKey};

    fn transform() -> NameTransform {
        NameTransform::new(
            NameCipher::new(SecretBytes::new(vec![3; 64])),
            BlockCipher::new(ContentAlgorithm::Aes256Gcm, &SecretKey::random()),
        )
    }

    #[test]
    fn round_trips_and_refuses_tampering() {
        let t = transform();
        let attr = RootAttr {
            mode: 0o2775,
            uid: 1000,
            gid: 70,
        };
        let stored = t.encrypt_root_attr(&attr);
        assert_eq!(stored.len(), 2 + BODY_LEN + 28);
        assert_eq!(t.decrypt_root_attr(&stored).unwrap(), attr);
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 1;
            assert!(t.decrypt_root_attr(&bad).is_err(), "byte {i}");
        }
        assert!(t.decrypt_root_attr(&stored[..stored.len() - 1]).is_err());
        assert!(t.decrypt_root_attr(&[]).is_err());
        assert!(
            transform().decrypt_root_attr(&stored).is_err(),
            "another vault's key"
        );
    }

    #[test]
    fn absent_is_none_and_written_is_read() {
        let t = transform();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(t.read_root_attr(dir.path()).unwrap(), None);
        let attr = RootAttr {
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        t.write_root_attr(dir.path(), &attr).unwrap();
        assert_eq!(t.read_root_attr(dir.path()).unwrap(), Some(attr));
        std::fs::write(dir.path().join(ROOT_ATTR_FILE), b"\x00\x01junk").unwrap();
        assert!(t.read_root_attr(dir.path()).is_err());
    }
}
