//! One mount at a time: the mount process holds an exclusive `flock` on
//! `atrest.lock` in the vault root for as long as it serves the vault.
//! `atrest fsck --repair` holds the same lock while it changes files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use crate::VaultError;

pub const LOCK_FILE: &str = "atrest.lock";

/// Held while a vault is mounted; released when dropped (or the process dies).
#[derive(Debug)]
pub struct MountLock {
    _file: File,
}

impl MountLock {
    /// Takes the lock and records who holds it (`pid mountpoint`).
    pub fn acquire(root: &Path, holder: &str) -> Result<Self, VaultError> {
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(VaultError::io(&path))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let who = fs::read_to_string(&path).unwrap_or_default();
            return Err(VaultError::Invalid(format!(
                "{} is already mounted ({}); unmount it first with `atrest unmount`",
                root.display(),
                describe(&who)
            )));
        }
        // Who holds it is for messages only; the flock is what excludes a
        // second mount, so a full disk must not stop the mount here.
        if let Err(e) = file
            .set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
        {
            tracing::warn!("cannot record the mount in {}: {e}", path.display());
        }
        Ok(Self { _file: file })
    }

    /// Who holds the lock now, if anyone.
    pub fn holder(root: &Path) -> Option<String> {
        let path = root.join(LOCK_FILE);
        let file = File::open(&path).ok()?;
        if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
            return None;
        }
        Some(
            fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    }
}

fn describe(holder: &str) -> String {
    let mut parts = holder.trim().splitn(2, ' ');
    match (parts.next(), parts.next()) {
        // `atrest fsck --repair` holds it as `pid (atrest fsck --repair)`.
        (Some(pid), Some(what)) if what.starts_with('(') => format!("by process {pid} {what}"),
        (Some(pid), Some(mnt)) => format!("by process {pid} at {mnt}"),
        _ => "by another process".to_string(),
    }
}
