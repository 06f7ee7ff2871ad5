//! The kernel's native file encryption, fscrypt, with v2 policies, on ext4
//! and f2fs: the backend that encrypts a directory in the kernel rather than
//! through FUSE.
//!
//! A directory is encrypted by giving it a [`Policy`] while it is empty; the
//! policy names a master key by its [`KeyIdentifier`]. The directory is
//! unlocked while the key is in the file system's keyring ([`add_key`]) and
//! locked again by [`remove_key`]; [`key_status`] says which. While locked,
//! names read as ciphertext and opening a file fails with `ENOKEY`.
//! [`driver_for`] says whether the kernel's cipher for a [`Mode`] is
//! accelerated. Errors are one [`Error`] enum whose messages say what to do.
//!
//! ```no_run
//! use atrest_core::SecretBytes;
//! use atrest_fscrypt::{KeyStatus, Policy};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), atrest_fscrypt::Error> {
//! let dir = Path::new("/mnt/data/private"); // empty, on ext4 with `-O encrypt`
//! let key = SecretBytes::new(vec![0x42; 64]); // in atrest: derived from the vault master key
//! let identifier = atrest_fscrypt::add_key(dir, &key)?;
//! atrest_fscrypt::set_policy(dir, &Policy::new(identifier))?;
//! std::fs::write(dir.join("notes.txt"), "encrypted by the kernel").unwrap();
//!
//! let status = atrest_fscrypt::remove_key(dir, identifier, false)?;
//! assert!(!status.files_busy);
//! assert_eq!(atrest_fscrypt::key_status(dir, identifier)?, KeyStatus::Absent);
//! # Ok(())
//! # }
//! ```
//!
//! # Policies
//!
//! A v2 policy (Linux 5.4+) holds the two modes, a flags byte and the 16-byte
//! key identifier; the kernel derives every file's keys from the master key
//! with HKDF-SHA512. [`Policy::new`] is AES-256-XTS for contents and
//! AES-256-CTS for names; [`Policy::adiantum`] uses Adiantum for both, which
//! is faster on CPUs without AES instructions (the kernel needs
//! `CONFIG_CRYPTO_ADIANTUM`).
//!
//! The flags byte:
//!
//! | Bits | Flag | In this crate |
//! |---|---|---|
//! | `0x03` | `FSCRYPT_POLICY_FLAGS_PAD_4/8/16/32`: encrypted names are NUL-padded to a multiple of 4, 8, 16 or 32 bytes, hiding exact name lengths | [`Padding`], default [`Padding::Pad32`] |
//! | `0x04` | `FSCRYPT_POLICY_FLAG_DIRECT_KEY`: one key per mode for all files, the file nonce in the IV; Adiantum only | [`KeyDerivation::DirectKey`] |
//! | `0x08` | `FSCRYPT_POLICY_FLAG_IV_INO_LBLK_64`: one key per mode, IV = inode and block number; for inline-encryption hardware, needs `stable_inodes` | [`KeyDerivation::InodeBlock64`] |
//! | `0x10` | `FSCRYPT_POLICY_FLAG_IV_INO_LBLK_32`: the same with 32-bit IVs (eMMC) | [`KeyDerivation::InodeBlock32`] |
//!
//! The last three are mutually exclusive, so they are one enum; the default,
//! [`KeyDerivation::PerFile`], sets none of them. A policy is immutable once
//! set, and every file and directory created below inherits it.
//!
//! # Keys
//!
//! Master keys are 64 bytes (the largest fscrypt accepts; AES-256-XTS uses
//! 64-byte keys). The kernel computes the identifier from the key, so a wrong
//! key cannot pose as the right one: it gets another identifier and the
//! directory stays locked. Keys are per file system, not per directory, and
//! per user: each user who adds a key holds a claim on it, and it stays
//! present until every claim is removed. Adding a key that is already present
//! succeeds and returns the same identifier. The key bytes are copied only
//! into the ioctl argument, which is wiped after the call.
//!
//! # Safety
//!
//! The ioctls are the only `unsafe` code in atrest besides atrest-core's
//! fork check (decision 0019); they live in one private module with a
//! `// SAFETY:` comment on every block.

#![deny(unsafe_code)]

mod driver;
mod error;
mod key;
mod policy;
#[allow(unsafe_code)]
mod sys;

use std::os::fd::OwnedFd;
use std::path::Path;

use atrest_core::SecretBytes;
use rustix::fs::{Mode as FileMode, OFlags};

pub use driver::{DriverInfo, driver_for};
pub use error::{Error, Operation, Result};
pub use key::{KeyIdentifier, KeyStatus, ParseKeyIdentifierError, RemoveStatus};
pub use policy::{KeyDerivation, Mode, Padding, Policy};

/// Length in bytes of the master keys this crate adds.
pub const KEY_LEN: usize = sys::RAW_KEY_LEN;

/// The policy of an encrypted file or directory; `None` if it is not encrypted.
pub fn get_policy(path: &Path) -> Result<Option<Policy>> {
    let fd = open(path, OFlags::empty())?;
    match sys::get_policy(&fd) {
        Ok(sys::RawPolicy::V2(raw)) => {
            Policy::from_raw(&raw)
                .map(Some)
                .map_err(|detail| Error::ForeignPolicy {
                    path: path.to_path_buf(),
                    detail,
                })
        }
        Ok(sys::RawPolicy::Other { version }) => Err(Error::ForeignPolicy {
            path: path.to_path_buf(),
            // v1's version byte is 0 (`FSCRYPT_POLICY_V1`).
            detail: match version {
                0 => "a v1 policy".to_string(),
                other => format!("policy version {other}"),
            },
        }),
        Err(rustix::io::Errno::NODATA) => Ok(None),
        // A policy too large for the v2 buffer: some future version.
        Err(rustix::io::Errno::OVERFLOW) => Err(Error::ForeignPolicy {
            path: path.to_path_buf(),
            detail: "a policy newer than v2".to_string(),
        }),
        Err(errno) => Err(Error::from_ioctl(Operation::GetPolicy, path, None, errno)),
    }
}

/// Encrypts the empty directory `dir` with `policy`.
///
/// The key must have been added first (root may skip that: the kernel lets
/// `CAP_FOWNER` set a policy for an absent key). Setting the policy a
/// directory already has succeeds; a different one fails with
/// [`Error::PolicyConflict`].
pub fn set_policy(dir: &Path, policy: &Policy) -> Result<()> {
    policy
        .check()
        .map_err(|reason| Error::InvalidPolicy { reason })?;
    let fd = open(dir, OFlags::DIRECTORY)?;
    sys::set_policy(&fd, policy.to_raw()).map_err(|errno| {
        Error::from_ioctl(Operation::SetPolicy, dir, Some(policy.identifier), errno)
    })
}

/// Adds a 64-byte master key to the keyring of the file system holding
/// `path` (any file or directory on it, the mount point included), unlocking
/// every directory whose policy names it. Returns the key's identifier.
pub fn add_key(path: &Path, key: &SecretBytes) -> Result<KeyIdentifier> {
    let key: &[u8; KEY_LEN] = key
        .expose()
        .try_into()
        .map_err(|_| Error::KeyLength { len: key.len() })?;
    let fd = open(path, OFlags::empty())?;
    sys::add_key(&fd, key)
        .map(KeyIdentifier::from_bytes)
        .map_err(|errno| Error::from_ioctl(Operation::AddKey, path, None, errno))
}

/// Removes this user's claim to a key from the file system holding `path`,
/// or every user's with `all_users` (root only). Files not in use are locked
/// at once: the kernel evicts their inodes and wipes their keys. See
/// [`RemoveStatus`] for the partial outcomes.
///
/// Pass a path outside the encrypted tree, such as the mount point: the
/// descriptor this opens on `path` keeps that inode in use during the call, so
/// the encrypted directory itself would always report `files_busy`.
pub fn remove_key(path: &Path, identifier: KeyIdentifier, all_users: bool) -> Result<RemoveStatus> {
    let operation = if all_users {
        Operation::RemoveKeyAllUsers
    } else {
        Operation::RemoveKey
    };
    let fd = open(path, OFlags::empty())?;
    let flags = sys::remove_key(&fd, *identifier.as_bytes(), all_users)
        .map_err(|errno| Error::from_ioctl(operation, path, Some(identifier), errno))?;
    Ok(RemoveStatus {
        files_busy: flags & linux_raw_sys::general::FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0,
        other_users: flags & linux_raw_sys::general::FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS
            != 0,
    })
}

/// Whether the key is in the keyring of the file system holding `path`.
pub fn key_status(path: &Path, identifier: KeyIdentifier) -> Result<KeyStatus> {
    use linux_raw_sys::general as uapi;

    let fd = open(path, OFlags::empty())?;
    let raw = sys::key_status(&fd, *identifier.as_bytes())
        .map_err(|errno| Error::from_ioctl(Operation::KeyStatus, path, Some(identifier), errno))?;
    match raw.status {
        uapi::FSCRYPT_KEY_STATUS_PRESENT => Ok(KeyStatus::Present {
            user_count: raw.user_count,
            added_by_self: raw.status_flags & uapi::FSCRYPT_KEY_STATUS_FLAG_ADDED_BY_SELF != 0,
        }),
        uapi::FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED => Ok(KeyStatus::IncompletelyRemoved),
        uapi::FSCRYPT_KEY_STATUS_ABSENT => Ok(KeyStatus::Absent),
        other => Err(Error::Io {
            operation: Operation::KeyStatus,
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "the kernel returned unknown key status {other}"
            )),
        }),
    }
}

/// Opens `path` read-only for an ioctl. Read-only is enough for every fscrypt
/// ioctl, setting a policy included.
fn open(path: &Path, extra: OFlags) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK | extra;
    rustix::fs::open(path, flags, FileMode::empty()).map_err(|errno| match errno {
        rustix::io::Errno::NOTDIR if extra.contains(OFlags::DIRECTORY) => Error::NotADirectory {
            path: path.to_path_buf(),
        },
        errno => Error::Open {
            path: path.to_path_buf(),
            source: errno.into(),
        },
    })
}
