//! Extended attributes of backing files, by path, without following
//! symlinks (the `l*xattr` calls).
//!
//! Linux has no `*xattrat` call before 6.13, so an entry reached through a
//! directory handle is named by [`path_at`]: `/proc/self/fd/N/name`, a
//! short path however deep the directory lies.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// A path to the entry `name` of the directory handle `dir` that stays
/// short at any depth. Valid while `dir` is open.
pub fn path_at(dir: impl AsFd, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    path.push(name);
    path
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

/// Names of all xattrs of `path`.
pub fn list(path: &Path) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 4096];
    loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| OsString::from_vec(s.to_vec()))
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(errno(e)),
        }
    }
}

/// The value of one xattr.
pub fn get(path: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(errno(e)),
        }
    }
}

pub fn set(
    path: &Path,
    name: &OsStr,
    value: &[u8],
    flags: rustix::fs::XattrFlags,
) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, flags).map_err(errno)
}

pub fn remove(path: &Path, name: &OsStr) -> io::Result<()> {
    rustix::fs::lremovexattr(path, name).map_err(errno)
}
