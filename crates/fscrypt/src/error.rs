//! Errors, and the one place an errno from an fscrypt ioctl becomes one.

use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::key::KeyIdentifier;

/// The operation that failed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    SetPolicy,
    GetPolicy,
    AddKey,
    RemoveKey,
    RemoveKeyAllUsers,
    KeyStatus,
}

impl Operation {
    fn describe(self) -> &'static str {
        match self {
            Operation::SetPolicy => "set the encryption policy of",
            Operation::GetPolicy => "read the encryption policy of",
            Operation::AddKey => "add an encryption key to the file system of",
            Operation::RemoveKey => "remove an encryption key from the file system of",
            Operation::RemoveKeyAllUsers => {
                "remove an encryption key for all users from the file system of"
            }
            Operation::KeyStatus => "read the status of an encryption key on the file system of",
        }
    }

    fn permission_hint(self) -> &'static str {
        match self {
            Operation::SetPolicy => "only the directory's owner (or root) can encrypt it",
            Operation::RemoveKeyAllUsers => {
                "removing a key for all users needs root (CAP_SYS_ADMIN)"
            }
            _ => "run as root, or as the owner of the files",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why an fscrypt operation failed, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("{} is on a file system made without the `encrypt` feature; {fix}", path.display())]
    EncryptionNotEnabled { path: PathBuf, fix: String },

    #[error(
        "cannot {operation} {}: the kernel or this file system does not support fscrypt v2 \
         (it needs Linux 5.4 or later and ext4, f2fs, ubifs or ceph)",
        path.display()
    )]
    Unsupported { operation: Operation, path: PathBuf },

    #[error(
        "cannot {operation} {}: the kernel refused the request; it is older than Linux 5.4 \
         (no v2 policies) or does not support these settings on this file system \
         (`dmesg` names the reason)",
        path.display()
    )]
    Rejected { operation: Operation, path: PathBuf },

    #[error("invalid encryption policy: {reason}")]
    InvalidPolicy { reason: &'static str },

    #[error("{} is not empty; only an empty directory can be encrypted: create a new one and move the files in", path.display())]
    NotEmpty { path: PathBuf },

    #[error("{} is not a directory; only directories take an encryption policy", path.display())]
    NotADirectory { path: PathBuf },

    #[error(
        "{} is already encrypted with a different policy (another key or other modes); \
         use an empty, unencrypted directory",
        path.display()
    )]
    PolicyConflict { path: PathBuf },

    #[error(
        "{} is encrypted with a policy atrest does not manage ({detail}); leave it to the tool \
         that made it",
        path.display()
    )]
    ForeignPolicy { path: PathBuf, detail: String },

    #[error(
        "cannot encrypt {} with key {identifier}: the key is not in the file system's keyring; \
         add it first",
        path.display()
    )]
    KeyNotAdded {
        path: PathBuf,
        identifier: KeyIdentifier,
    },

    #[error(
        "key {identifier} is not in the keyring of the file system of {}: it was never added, \
         is already removed, or was added by another user (then remove it for all users, as root)",
        path.display()
    )]
    KeyNotFound {
        path: PathBuf,
        identifier: KeyIdentifier,
    },

    #[error("an fscrypt master key is 64 bytes, not {len}")]
    KeyLength { len: usize },

    #[error(
        "cannot add a key on {}: this user has reached its quota of fscrypt keys \
         (the `keys` quota of the kernel keyring); remove unused keys or run as root",
        path.display()
    )]
    KeyQuota { path: PathBuf },

    #[error("cannot {operation} {}: permission denied; {}", path.display(), operation.permission_hint())]
    PermissionDenied { operation: Operation, path: PathBuf },

    #[error("cannot {operation} {}: the file system is mounted read-only", path.display())]
    ReadOnly { operation: Operation, path: PathBuf },

    #[error("cannot {operation} {}: {source}", path.display())]
    Io {
        operation: Operation,
        path: PathBuf,
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an errno from an fscrypt ioctl on `path`. `identifier` is the key
    /// the call was about, if any.
    pub(crate) fn from_ioctl(
        operation: Operation,
        path: &Path,
        identifier: Option<KeyIdentifier>,
        errno: Errno,
    ) -> Error {
        let path_buf = path.to_path_buf();
        match (operation, identifier, errno) {
            // ext4 and f2fs answer every fscrypt ioctl with EOPNOTSUPP when
            // the superblock lacks the feature.
            (_, _, Errno::OPNOTSUPP) => Error::EncryptionNotEnabled {
                fix: encrypt_feature_fix(path),
                path: path_buf,
            },
            (_, _, Errno::NOTTY) => Error::Unsupported {
                operation,
                path: path_buf,
            },
            (Operation::SetPolicy, _, Errno::NOTEMPTY) => Error::NotEmpty { path: path_buf },
            (Operation::SetPolicy, _, Errno::NOTDIR) => Error::NotADirectory { path: path_buf },
            (Operation::SetPolicy, _, Errno::EXIST) => Error::PolicyConflict { path: path_buf },
            (Operation::SetPolicy, Some(identifier), Errno::NOKEY) => Error::KeyNotAdded {
                path: path_buf,
                identifier,
            },
            (Operation::SetPolicy | Operation::AddKey, _, Errno::INVAL) => Error::Rejected {
                operation,
                path: path_buf,
            },
            (
                Operation::RemoveKey | Operation::RemoveKeyAllUsers,
                Some(identifier),
                Errno::NOKEY,
            ) => Error::KeyNotFound {
                path: path_buf,
                identifier,
            },
            (Operation::AddKey, _, Errno::DQUOT) => Error::KeyQuota { path: path_buf },
            (_, _, Errno::ACCESS | Errno::PERM) => Error::PermissionDenied {
                operation,
                path: path_buf,
            },
            (_, _, Errno::ROFS) => Error::ReadOnly {
                operation,
                path: path_buf,
            },
            (_, _, errno) => Error::Io {
                operation,
                path: path_buf,
                source: errno.into(),
            },
        }
    }
}

/// The command that enables encryption on the file system holding `path`,
/// naming its device (or, for a loop device, the image file behind it).
fn encrypt_feature_fix(path: &Path) -> String {
    let Some(mount) = mount_of(path) else {
        return "enable it: for ext4, unmount and run `tune2fs -O encrypt /dev/DEVICE`".into();
    };
    let device = loop_backing_file(&mount.source).unwrap_or(mount.source);
    match mount.fstype.as_str() {
        "ext4" => format!("unmount it and run `tune2fs -O encrypt {device}`, then mount it again"),
        "f2fs" => {
            format!("unmount it and run `fsck.f2fs -O encrypt {device}`, then mount it again")
        }
        other => format!(
            "{other} on {device} has no encryption enabled (for ext4: `tune2fs -O encrypt /dev/DEVICE`)"
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Mount {
    fstype: String,
    source: String,
}

fn mount_of(path: &Path) -> Option<Mount> {
    let stat = rustix::fs::stat(path).ok()?;
    let device = (
        rustix::fs::major(stat.st_dev),
        rustix::fs::minor(stat.st_dev),
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_mount(&mountinfo, device)
}

/// Finds the mount of device `major:minor` in `/proc/self/mountinfo` text:
/// `ID PARENT MAJOR:MINOR ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`.
fn find_mount(mountinfo: &str, (major, minor): (u32, u32)) -> Option<Mount> {
    let wanted = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.nth(2)? != wanted {
            return None;
        }
        let mut after_separator = fields.skip_while(|field| *field != "-").skip(1);
        let fstype = after_separator.next()?.to_string();
        let source = after_separator.next()?.replace("\\040", " ");
        Some(Mount { fstype, source })
    })
}

/// `/dev/loopN` → the file it is backed by, when the kernel says.
fn loop_backing_file(source: &str) -> Option<String> {
    let name = source.strip_prefix("/dev/")?;
    if !name.starts_with("loop") {
        return None;
    }
    let file = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(file.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:32 / /proc rw,nosuid - proc proc rw
97 22 7:3 / /mnt/my\\040image rw,relatime shared:50 master:3 - ext4 /dev/loop3 rw
98 22 259:2 / /data rw - f2fs /dev/nvme0n1p2 rw
";

    #[test]
    fn finds_the_mount_of_a_device() {
        let mount = find_mount(MOUNTINFO, (7, 3)).unwrap();
        assert_eq!(
            mount,
            Mount {
                fstype: "ext4".into(),
                source: "/dev/loop3".into()
            }
        );
        let mount = find_mount(MOUNTINFO, (259, 2)).unwrap();
        assert_eq!(mount.fstype, "f2fs");
        assert_eq!(find_mount(MOUNTINFO, (8, 2)), None);
        assert_eq!(find_mount("garbage\n\n1 2", (8, 1)), None);
    }

    #[test]
    fn errno_mapping_names_the_fix() {
        let path = Path::new("/nonexistent/dir");
        let error = Error::from_ioctl(Operation::SetPolicy, path, None, Errno::OPNOTSUPP);
        assert!(error.to_string().contains("tune2fs -O encrypt"), "{error}");
        let error = Error::from_ioctl(Operation::SetPolicy, path, None, Errno::NOTEMPTY);
        assert!(matches!(error, Error::NotEmpty { .. }));
        let error = Error::from_ioctl(Operation::SetPolicy, path, None, Errno::EXIST);
        assert!(matches!(error, Error::PolicyConflict { .. }));
        let error = Error::from_ioctl(Operation::AddKey, path, None, Errno::NOTTY);
        assert!(error.to_string().contains("Linux 5.4"), "{error}");
        let error = Error::from_ioctl(Operation::RemoveKeyAllUsers, path, None, Errno::ACCESS);
        assert!(error.to_string().contains("CAP_SYS_ADMIN"), "{error}");
        let identifier = KeyIdentifier::from_bytes([7; 16]);
        let error = Error::from_ioctl(Operation::RemoveKey, path, Some(identifier), Errno::NOKEY);
        assert!(matches!(error, Error::KeyNotFound { .. }));
        let error = Error::from_ioctl(Operation::KeyStatus, path, Some(identifier), Errno::IO);
        assert_eq!(
            match error {
                Error::Io { source, .. } => source.raw_os_error(),
                _ => None,
            },
            Some(Errno::IO.raw_os_error())
        );
    }
}
