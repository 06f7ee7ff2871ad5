//! The one conversion from the store's and the content layer's errors to
//! what a FUSE reply carries. Authentication failures and corruption are
//! logged with the object they concern and become `EIO`; nothing about
//! them reaches the application but the errno.

use atrest_meta::{FsError, MetaError};
use atrest_vault::ContentError;
use fuser::Errno;

pub fn fs_errno(object: u64, e: FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::Exists => Errno::EEXIST,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::NotEmpty => Errno::ENOTEMPTY,
        FsError::NameTooLong => Errno::ENAMETOOLONG,
        FsError::Invalid(_) => Errno::EINVAL,
        FsError::NotPermitted(_) => Errno::EPERM,
        FsError::NoData => Errno::NO_XATTR,
        FsError::Range => Errno::ERANGE,
        FsError::TooBig => Errno::E2BIG,
        FsError::NoSpace(_) => Errno::ENOSPC,
        FsError::Unsupported(_) => Errno::EOPNOTSUPP,
        FsError::Meta(e) => meta_errno(object, e),
    }
}

pub fn meta_errno(object: u64, e: MetaError) -> Errno {
    match e {
        MetaError::Io { what, source } => {
            tracing::warn!(object, "{what}: {source}");
            Errno::from(source)
        }
        MetaError::TooLarge(what) => {
            tracing::warn!(object, "too large: {what}");
            Errno::EFBIG
        }
        other => {
            tracing::error!(
                object,
                "{other}; returning EIO (the vault's files were changed on the disk, or a write failed: \
                 unmount and mount again to recover)"
            );
            Errno::EIO
        }
    }
}

pub fn content_errno(object: u64, e: ContentError) -> Errno {
    match e {
        ContentError::Io(e) => {
            if e.raw_os_error().is_none() {
                tracing::warn!(object, "{e}");
            }
            Errno::from(e)
        }
        ContentError::Corrupt(what) => {
            tracing::error!(
                object,
                "{what} (object {object}, {}); returning EIO (the vault's files were changed on the disk)",
                atrest_meta::data_file_name(object)
            );
            Errno::EIO
        }
    }
}
