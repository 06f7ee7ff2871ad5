//! File names, symlink targets and extended attributes.
//!
//! Names: AES-SIV with associated data `("atrest name v1", directory id)`,
//! then unpadded base64url. Each backing directory holds its random id in
//! `atrest.dirid`, so equal names in different directories encrypt
//! differently, and a name moved to another directory no longer decrypts.
//! An encrypted name longer than 255 bytes is stored as
//! `atrest.long.<base64url(SHA-256(encrypted name))>`, with the full
//! encrypted name in a side file of the same name plus `.name`.
//!
//! Symlink targets and xattr values are sealed with the metadata key
//! (randomized AEAD); xattr names are deterministic like file names.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

use atrest_core::{BlockCipher, NameCipher, labels::domain};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::ContentError;

pub const DIRID_FILE: &str = "atrest.dirid";
pub const DIRID_VERSION: u16 = 1;
pub const DIRID_LEN: usize = 18;
pub const LONG_PREFIX: &str = "atrest.long.";
pub const LONG_SUFFIX: &str = ".name";
/// Longest backing name we create directly (ext4, xfs, btrfs: 255 bytes).
pub const MAX_BACKING_NAME: usize = 255;
pub const XATTR_PREFIX: &str = "user.atrest.";
/// Symlink targets whose encrypted form does not fit in a symlink (PATH_MAX)
/// are stored in this directory of the vault root, named by the hash of
/// the encrypted target; the backing symlink points to
/// `LONG_LINK_PREFIX + hash`.
pub const LONG_LINK_DIR: &str = "atrest.links";
pub const LONG_LINK_PREFIX: &str = "atrest.symlink.v1.";
/// Length of a long-link marker: 61 is 1 mod 4, a length unpadded base64
/// never has, so the backing `lstat` size alone tells a long link from a
/// short one.
pub const LONG_LINK_MARKER_LEN: u64 = 18 + 43;
/// Longest symlink target the backing file system stores (PATH_MAX - 1).
pub const MAX_BACKING_LINK: usize = 4095;

/// How a backing directory entry is to be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BackingName<'a> {
    /// An encrypted name stored directly.
    Short(&'a str),
    /// A hashed long name; the full encrypted name is in its side file.
    Long(&'a str),
    /// The side file of a long name, the dir id, the config, the lock:
    /// not shown through the mount.
    Control,
    /// Not something atrest wrote.
    Foreign,
}

/// Encrypted names never contain a dot, so every control file does.
pub fn classify(name: &OsStr) -> BackingName<'_> {
    let Some(name) = name.to_str() else {
        return BackingName::Foreign;
    };
    if let Some(rest) = name.strip_prefix(LONG_PREFIX) {
        if rest.ends_with(LONG_SUFFIX) {
            return BackingName::Control;
        }
        return BackingName::Long(name);
    }
    if name.contains('.') {
        return BackingName::Control;
    }
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        BackingName::Short(name)
    } else {
        BackingName::Foreign
    }
}

/// Where a plaintext name lives in the backing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptedName {
    Short(String),
    Long { entry: String, full: String },
}

impl EncryptedName {
    /// The backing directory entry.
    pub fn entry(&self) -> &str {
        match self {
            Self::Short(s) => s,
            Self::Long { entry, .. } => entry,
        }
    }

    /// The side file of a long name.
    pub fn side_file(&self) -> Option<String> {
        match self {
            Self::Short(_) => None,
            Self::Long { entry, .. } => Some(format!("{entry}{LONG_SUFFIX}")),
        }
    }
}

/// The keyed name, symlink and xattr transforms of a vault.
pub struct NameTransform {
    names: NameCipher,
    pub(crate) metadata: BlockCipher,
}

fn corrupt(what: &str) -> ContentError {
    ContentError::Corrupt(what.to_string())
}

impl NameTransform {
    pub fn new(names: NameCipher, metadata: BlockCipher) -> Self {
        Self { names, metadata }
    }

    pub fn encrypt_name(&self, dir_id: &[u8; 16], name: &OsStr) -> EncryptedName {
        let sealed = self
            .names
            .encrypt(&[domain::FILE_NAME, dir_id], name.as_bytes());
        let full = B64.encode(sealed);
        if full.len() <= MAX_BACKING_NAME {
            EncryptedName::Short(full)
        } else {
            let entry = format!(
                "{LONG_PREFIX}{}",
                B64.encode(atrest_core::sha256(full.as_bytes()))
            );
            EncryptedName::Long { entry, full }
        }
    }

    /// Decrypts an encrypted name (the full one, for long names).
    pub fn decrypt_name(
        &self,
        dir_id: &[u8; 16],
        encrypted: &str,
    ) -> Result<OsString, ContentError> {
        let sealed = B64
            .decode(encrypted)
            .map_err(|_| corrupt("name is not base64url"))?;
        let plain = self
            .names
            .decrypt(&[domain::FILE_NAME, dir_id], &sealed)
            .map_err(|_| corrupt("name failed authentication"))?;
        if plain.is_empty()
            || plain == b"."
            || plain == b".."
            || plain.contains(&b'/')
            || plain.contains(&0)
        {
            return Err(corrupt("name decrypts to an impossible file name"));
        }
        Ok(OsString::from_vec(plain))
    }

    /// Reads the entry `backing` of directory `dir` back to its plain name.
    pub fn decrypt_entry(
        &self,
        dir: &Path,
        dir_id: &[u8; 16],
        backing: &OsStr,
    ) -> Result<Option<OsString>, ContentError> {
        self.decrypt_entry_at(CWD, dir, dir_id, backing)
    }

    /// [`Self::decrypt_entry`] for the directory `dir` relative to `base`
    /// (a directory handle; `dir` may be `.`), so that no path grows with
    /// the depth of the tree.
    pub fn decrypt_entry_at(
        &self,
        base: impl AsFd,
        dir: &Path,
        dir_id: &[u8; 16],
        backing: &OsStr,
    ) -> Result<Option<OsString>, ContentError> {
        match classify(backing) {
            BackingName::Short(s) => self.decrypt_name(dir_id, s).map(Some),
            BackingName::Long(entry) => {
                let side = read_at(base, &dir.join(format!("{entry}{LONG_SUFFIX}")))?;
                let full = std::str::from_utf8(&side)
                    .map_err(|_| corrupt("long name side file is not text"))?;
                if B64.encode(atrest_core::sha256(full.as_bytes())) != entry[LONG_PREFIX.len()..] {
                    return Err(corrupt("long name side file does not match its entry"));
                }
                self.decrypt_name(dir_id, full).map(Some)
            }
            BackingName::Control | BackingName::Foreign => Ok(None),
        }
    }

    pub fn encrypt_symlink(&self, target: &OsStr) -> OsString {
        let sealed = self.metadata.seal(domain::SYMLINK, target.as_bytes());
        OsString::from(B64.encode(sealed))
    }

    pub fn decrypt_symlink(&self, stored: &OsStr) -> Result<OsString, ContentError> {
        let sealed = B64
            .decode(stored.as_bytes())
            .map_err(|_| corrupt("symlink target is not base64url"))?;
        self.metadata
            .open(domain::SYMLINK, &sealed)
            .map(OsString::from_vec)
            .map_err(|_| corrupt("symlink target failed authentication"))
    }

    /// Creates the backing symlink `link` for `target`, through a side file
    /// in the vault root when the encrypted target is too long.
    pub fn create_symlink(
        &self,
        root: &Path,
        target: &OsStr,
        link: &Path,
    ) -> Result<(), ContentError> {
        self.create_symlink_at(root, target, CWD, link)
    }

    /// [`Self::create_symlink`] with `link` relative to the directory
    /// handle `base`.
    pub fn create_symlink_at(
        &self,
        root: &Path,
        target: &OsStr,
        base: impl AsFd,
        link: &Path,
    ) -> Result<(), ContentError> {
        let stored = self.encrypt_symlink(target);
        if stored.len() <= MAX_BACKING_LINK {
            rustix::fs::symlinkat(stored.as_os_str(), base, link).map_err(std::io::Error::from)?;
            return Ok(());
        }
        let hash = B64.encode(atrest_core::sha256(stored.as_bytes()));
        let dir = root.join(LONG_LINK_DIR);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
        let side = dir.join(&hash);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&side)?
            .write_all(stored.as_bytes())?;
        if let Err(e) = rustix::fs::symlinkat(format!("{LONG_LINK_PREFIX}{hash}"), base, link) {
            let _ = fs::remove_file(&side);
            return Err(std::io::Error::from(e).into());
        }
        Ok(())
    }

    /// The side file behind a long symlink, if `stored` points to one.
    pub fn long_link_side_file(root: &Path, stored: &OsStr) -> Option<std::path::PathBuf> {
        let hash = stored.to_str()?.strip_prefix(LONG_LINK_PREFIX)?;
        if hash.len() != 43
            || !hash
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        Some(root.join(LONG_LINK_DIR).join(hash))
    }

    /// The plaintext target length of a backing symlink whose own length
    /// (from lstat) is `stored_len`, without reading it: a readlink would
    /// update the link's atime on every stat through the mount. Long links
    /// (rare) are read.
    pub fn symlink_target_len(
        &self,
        root: &Path,
        link: &Path,
        stored_len: u64,
    ) -> Result<u64, ContentError> {
        self.symlink_target_len_at(root, CWD, link, stored_len)
    }

    /// [`Self::symlink_target_len`] with `link` relative to `base`.
    pub fn symlink_target_len_at(
        &self,
        root: &Path,
        base: impl AsFd,
        link: &Path,
        stored_len: u64,
    ) -> Result<u64, ContentError> {
        let stored_len = if stored_len == LONG_LINK_MARKER_LEN {
            let stored = read_link_at(base, link)?;
            let side = Self::long_link_side_file(root, &stored)
                .ok_or_else(|| corrupt("bad long symlink"))?;
            fs::metadata(side)?.len()
        } else {
            stored_len
        };
        // Unpadded base64 of n bytes is ceil(4n/3) characters. (Written so
        // it cannot overflow: the side file's size is attacker-controlled.)
        (stored_len / 4 * 3 + stored_len % 4 * 3 / 4)
            .checked_sub(self.metadata.overhead() as u64)
            .ok_or_else(|| corrupt("symlink target too short"))
    }

    /// Reads and decrypts the target of the backing symlink `link`.
    pub fn read_symlink(&self, root: &Path, link: &Path) -> Result<OsString, ContentError> {
        self.read_symlink_at(root, CWD, link)
    }

    /// [`Self::read_symlink`] with `link` relative to `base`.
    pub fn read_symlink_at(
        &self,
        root: &Path,
        base: impl AsFd,
        link: &Path,
    ) -> Result<OsString, ContentError> {
        let stored = read_link_at(base, link)?;
        match Self::long_link_side_file(root, &stored) {
            Some(side) => {
                let full = fs::read(&side)?;
                if B64.encode(atrest_core::sha256(&full))
                    != stored.to_str().unwrap_or_default()[LONG_LINK_PREFIX.len()..]
                {
                    return Err(corrupt("long symlink side file does not match its link"));
                }
                self.decrypt_symlink(OsStr::from_bytes(&full))
            }
            None => self.decrypt_symlink(&stored),
        }
    }

    pub fn encrypt_xattr_name(&self, name: &OsStr) -> OsString {
        let sealed = self.names.encrypt(&[domain::XATTR_NAME], name.as_bytes());
        OsString::from(format!("{XATTR_PREFIX}{}", B64.encode(sealed)))
    }

    /// `Ok(None)` for backing xattrs that are not ours.
    pub fn decrypt_xattr_name(&self, stored: &OsStr) -> Result<Option<OsString>, ContentError> {
        let Some(b64) = stored.to_str().and_then(|s| s.strip_prefix(XATTR_PREFIX)) else {
            return Ok(None);
        };
        let sealed = B64
            .decode(b64)
            .map_err(|_| corrupt("xattr name is not base64url"))?;
        self.names
            .decrypt(&[domain::XATTR_NAME], &sealed)
            .map(|n| Some(OsString::from_vec(n)))
            .map_err(|_| corrupt("xattr name failed authentication"))
    }

    fn xattr_aad(stored_name: &OsStr) -> Vec<u8> {
        let mut aad = domain::XATTR_VALUE.to_vec();
        aad.extend_from_slice(stored_name.as_bytes());
        aad
    }

    pub fn encrypt_xattr_value(&self, stored_name: &OsStr, value: &[u8]) -> Vec<u8> {
        self.metadata.seal(&Self::xattr_aad(stored_name), value)
    }

    pub fn decrypt_xattr_value(
        &self,
        stored_name: &OsStr,
        sealed: &[u8],
    ) -> Result<Vec<u8>, ContentError> {
        self.metadata
            .open(&Self::xattr_aad(stored_name), sealed)
            .map_err(|_| corrupt("xattr value failed authentication"))
    }
}

/// Parses the contents of an `atrest.dirid` file; never panics.
pub fn parse_dir_id(data: &[u8]) -> Result<[u8; 16], ContentError> {
    if data.len() != DIRID_LEN {
        return Err(corrupt("directory id has the wrong size"));
    }
    if u16::from_be_bytes([data[0], data[1]]) != DIRID_VERSION {
        return Err(corrupt("directory id has an unknown version"));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&data[2..]);
    Ok(id)
}

pub fn read_dir_id(dir: &Path) -> Result<[u8; 16], ContentError> {
    read_dir_id_at(CWD, dir)
}

/// [`read_dir_id`] of the directory `dir` relative to the handle `base`.
pub fn read_dir_id_at(base: impl AsFd, dir: &Path) -> Result<[u8; 16], ContentError> {
    parse_dir_id(&read_at(base, &dir.join(DIRID_FILE))?)
}

/// Gives a new backing directory its id (written and synced before any
/// name in it is created).
pub fn create_dir_id(dir: &Path) -> Result<[u8; 16], ContentError> {
    create_dir_id_at(CWD, dir)
}

/// [`create_dir_id`] of the directory `dir` relative to the handle `base`.
pub fn create_dir_id_at(base: impl AsFd, dir: &Path) -> Result<[u8; 16], ContentError> {
    let id: [u8; 16] = atrest_core::random_array();
    let mut data = DIRID_VERSION.to_be_bytes().to_vec();
    data.extend_from_slice(&id);
    write_new_at(base, &dir.join(DIRID_FILE), &data, 0o444)?;
    Ok(id)
}

/// Creates the file `path` (relative to `base`) with `data`, synced; takes
/// it back if that fails half way.
pub fn write_new_at(base: impl AsFd, path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let fd = rustix::fs::openat(
        base.as_fd(),
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
    )?;
    let mut f = fs::File::from(fd);
    if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()) {
        let _ = rustix::fs::unlinkat(base, path, AtFlags::empty());
        return Err(e);
    }
    Ok(())
}

/// The whole of the file `path` relative to `base` (never through a
/// symlink).
pub fn read_at(base: impl AsFd, path: &Path) -> std::io::Result<Vec<u8>> {
    let fd = rustix::fs::openat(
        base,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    fs::File::from(fd).read_to_end(&mut out)?;
    Ok(out)
}

/// The target of the symlink `path` relative to `base`.
pub fn read_link_at(base: impl AsFd, path: &Path) -> std::io::Result<OsString> {
    let target = rustix::fs::readlinkat(base, path, Vec::new())?;
    Ok(OsString::from_vec(target.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::{ContentAlgorithm, SecretBytes, SecretKey};

    fn transform() -> NameTransform {
        NameTransform::new(
            NameCipher::new(SecretBytes::new(vec![3; 64])),
            BlockCipher::new(ContentAlgorithm::Aes256Gcm, &SecretKey::random()),
        )
    }

    #[test]
    fn short_and_long_names() {
        let t = transform();
        let dir = [1u8; 16];
        for len in [1usize, 10, 175, 176, 255] {
            let name = OsString::from("n".repeat(len));
            let enc = t.encrypt_name(&dir, &name);
            assert!(enc.entry().len() <= 255);
            assert_eq!(
                matches!(enc, EncryptedName::Long { .. }),
                len > 175,
                "{len}"
            );
            let full = match &enc {
                EncryptedName::Short(s) => s.clone(),
                EncryptedName::Long { full, .. } => full.clone(),
            };
            assert_eq!(t.decrypt_name(&dir, &full).unwrap(), name);
            assert!(t.decrypt_name(&[2u8; 16], &full).is_err());
            assert_ne!(classify(OsStr::new(enc.entry())), BackingName::Control);
        }
    }

    #[test]
    fn control_files_are_never_names() {
        for n in [
            DIRID_FILE,
            "atrest.conf",
            "atrest.conf.bak",
            "atrest.lock",
            "atrest.long.abc.name",
        ] {
            assert_eq!(classify(OsStr::new(n)), BackingName::Control, "{n}");
        }
        assert_eq!(
            classify(OsStr::new("atrest.long.abc")),
            BackingName::Long("atrest.long.abc")
        );
        assert_eq!(classify(OsStr::new("has space")), BackingName::Foreign);
    }

    #[test]
    fn symlinks_and_xattrs_round_trip_and_refuse_tampering() {
        let t = transform();
        let target = OsString::from("../some/where");
        let stored = t.encrypt_symlink(&target);
        assert_eq!(t.decrypt_symlink(&stored).unwrap(), target);
        let mut bad = stored.clone().into_vec();
        bad[5] = if bad[5] == b'A' { b'B' } else { b'A' };
        assert!(t.decrypt_symlink(&OsString::from_vec(bad)).is_err());

        let name = t.encrypt_xattr_name(OsStr::new("user.mime"));
        assert_eq!(t.decrypt_xattr_name(&name).unwrap().unwrap(), "user.mime");
        let value = t.encrypt_xattr_value(&name, b"text/plain");
        assert_eq!(t.decrypt_xattr_value(&name, &value).unwrap(), b"text/plain");
        let other = t.encrypt_xattr_name(OsStr::new("user.other"));
        assert!(t.decrypt_xattr_value(&other, &value).is_err());
        assert_eq!(
            t.decrypt_xattr_name(OsStr::new("user.foreign")).unwrap(),
            None
        );
    }
}
