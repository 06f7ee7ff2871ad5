//! The host's state directory: its Ed25519 identity and what it witnessed
//! of each authority's audit log.
//!
//! ```text
//! /var/lib/atrest/host/            0700   (ATREST_STATE_DIR overrides)
//!   identity                       0600   the 32-byte Ed25519 seed
//!   checkpoints/<audit key hex>.json      newest format-1 checkpoint per audit log
//!   heads/<audit key hex>.json            newest signed tree head (witness.rs)
//!   alarms/<audit key hex>.json           a rollback or fork caught (witness.rs)
//!   boots/<audit key hex>-<host>.json      how each boot was accounted for (boots.rs)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atrest_audit::{AuditPublicKey, Checkpoint};
use atrest_remote::{BootId, HostIdentity};
use zeroize::Zeroizing;

use crate::AgentError;

/// Where the host keeps its state unless `ATREST_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/atrest/host";
/// Overrides [`DEFAULT_STATE_DIR`] (tests, several hosts on one machine).
pub const STATE_DIR_ENV: &str = "ATREST_STATE_DIR";
/// Overrides the kernel's boot id in test builds (they simulate reboots);
/// a release build has no such hook.
#[cfg(feature = "test-hooks")]
pub const BOOT_ID_ENV: &str = "ATREST_BOOT_ID";
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";
const IDENTITY_FILE: &str = "identity";
const CHECKPOINTS: &str = "checkpoints";

/// Where boot tickets live: RAM only, gone with the boot.
pub const RUN_DIR_ENV: &str = "ATREST_RUN_DIR";
pub const DEFAULT_RUN_DIR: &str = "/run/atrest";
const TICKETS: &str = "tickets";

/// The host's state directory, and the runtime directory (tmpfs) for what
/// must not outlive a boot.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    run: PathBuf,
}

/// A boot ticket as kept in the runtime directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptTicket {
    boot_id: BootId,
    ticket: atrest_remote::BootTicket,
}

impl StateDir {
    /// State in `path`, runtime files in `path/run` (tests, the demo).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            run: path.join("run"),
            path,
        }
    }

    /// `ATREST_STATE_DIR`, else [`DEFAULT_STATE_DIR`]; runtime files in
    /// `ATREST_RUN_DIR`, else [`DEFAULT_RUN_DIR`] (`/run` is a tmpfs).
    pub fn from_env() -> Self {
        Self {
            path: std::env::var_os(STATE_DIR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            run: std::env::var_os(RUN_DIR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR)),
        }
    }

    fn ticket_path(&self, fingerprint: &[u8; 32], host: &atrest_remote::HostId) -> PathBuf {
        self.run
            .join(TICKETS)
            .join(format!("{}-{host}", hex(fingerprint)))
    }

    /// The ticket this boot got from an authority, if it got one.
    pub fn boot_ticket(
        &self,
        fingerprint: &[u8; 32],
        host: &atrest_remote::HostId,
        boot: &BootId,
    ) -> Option<atrest_remote::BootTicket> {
        let text = zeroize::Zeroizing::new(fs::read(self.ticket_path(fingerprint, host)).ok()?);
        let kept: KeptTicket = serde_json::from_slice(&text).ok()?;
        (kept.boot_id == *boot).then(|| kept.ticket.clone())
    }

    /// Keeps the ticket an authority gave this boot (mode 0600, replaced
    /// atomically).
    pub fn keep_boot_ticket(
        &self,
        fingerprint: &[u8; 32],
        host: &atrest_remote::HostId,
        boot: &BootId,
        ticket: &atrest_remote::BootTicket,
    ) -> Result<(), AgentError> {
        let dir = self.run.join(TICKETS);
        Self::create_dir(&dir)?;
        let path = self.ticket_path(fingerprint, host);
        let text = zeroize::Zeroizing::new(
            serde_json::to_vec(&KeptTicket {
                boot_id: boot.clone(),
                ticket: ticket.clone(),
            })
            .map_err(|e| AgentError::Invalid(e.to_string()))?,
        );
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            std::io::Write::write_all(&mut file, &text)?;
            fs::rename(&tmp, &path)
        };
        write().map_err(AgentError::io(&path))
    }

    /// One exchange at a time with an authority, per host, across
    /// processes (several vaults unlocking at boot): the second waits for
    /// the first's ticket instead of looking like a copy of this host.
    pub async fn lock_authority(
        &self,
        fingerprint: &[u8; 32],
        host: &atrest_remote::HostId,
    ) -> Result<fs::File, AgentError> {
        let dir = self.run.join(TICKETS);
        Self::create_dir(&dir)?;
        let path = self.ticket_path(fingerprint, host).with_extension("lock");
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(AgentError::io(&path))?;
        tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| AgentError::Invalid(format!("lock task: {e}")))?
            .map_err(AgentError::io(&path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn identity_path(&self) -> PathBuf {
        self.path.join(IDENTITY_FILE)
    }

    pub(crate) fn create_dir(path: &Path) -> Result<(), AgentError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(AgentError::io(path))
    }

    /// The host identity, made (atomically, mode 0600) if there is none.
    pub fn load_or_create_identity(&self) -> Result<HostIdentity, AgentError> {
        match self.load_identity() {
            Err(AgentError::NoIdentity(_)) => {}
            other => return other,
        }
        Self::create_dir(&self.path)?;
        let identity = HostIdentity::generate();
        let target = self.identity_path();
        let tmp = self
            .path
            .join(format!(".{IDENTITY_FILE}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&identity.expose_seed()[..])?;
            f.sync_all()?;
            // A link, not a rename: if another process made an identity
            // meanwhile, keep theirs rather than replace it.
            fs::hard_link(&tmp, &target)?;
            File::open(&self.path)?.sync_all()
        };
        let result = write();
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => Ok(identity),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.load_identity(),
            Err(e) => Err(AgentError::io(&target)(e)),
        }
    }

    /// The host identity; refuses one that others can read.
    pub fn load_identity(&self) -> Result<HostIdentity, AgentError> {
        let path = self.identity_path();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentError::NoIdentity(self.path.clone()));
            }
            Err(e) => return Err(AgentError::io(&path)(e)),
        };
        let meta = file.metadata().map_err(AgentError::io(&path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AgentError::InsecureIdentity { path, mode });
        }
        if !meta.is_file() {
            return Err(AgentError::BadIdentity {
                path,
                reason: "not a regular file".into(),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut extra = [0u8; 1];
        file.read_exact(&mut seed[..])
            .map_err(|e| AgentError::BadIdentity {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if file.read(&mut extra).map_err(AgentError::io(&path))? != 0 || meta.size() != 32 {
            return Err(AgentError::BadIdentity {
                path,
                reason: "longer than 32 bytes".into(),
            });
        }
        Ok(HostIdentity::from_seed(&seed))
    }

    /// Kept per audit log (its public key): several authorities may share
    /// one CA, never one log.
    fn checkpoint_path(&self, audit_key: &[u8; 32]) -> PathBuf {
        self.path
            .join(CHECKPOINTS)
            .join(format!("{}.json", hex(audit_key)))
    }

    /// The newest checkpoint kept for the authority with this CA.
    pub fn kept_checkpoint(&self, audit_key: &[u8; 32]) -> Result<Option<Checkpoint>, AgentError> {
        read_json(&self.checkpoint_path(audit_key))
    }

    /// Checks an authority's answer against what this host saw before:
    /// the checkpoint must be signed by `audit_key` and may not lie before
    /// the kept checkpoint (a rolled-back log); the same entry must have the
    /// same hash (a forked log); once checkpoints came, one must come.
    /// Returns the checkpoint to keep once the unlock has succeeded.
    pub fn check_checkpoint(
        &self,
        url: &str,
        audit_key: &[u8; 32],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Option<Checkpoint>, AgentError> {
        let bad = || AgentError::BadCheckpoint {
            url: url.to_string(),
        };
        let kept = self.kept_checkpoint(audit_key)?;
        // Only the signed checkpoint is compared: entry numbers of answers
        // to several vaults unlocking at once arrive in any order.
        let Some(checkpoint) = checkpoint else {
            // An authority that sent checkpoints before must keep sending
            // them: leaving it out would skip the rollback check.
            return match kept {
                Some(_) => Err(bad()),
                None => Ok(None),
            };
        };
        let key = AuditPublicKey::from_bytes(audit_key).map_err(|_| bad())?;
        checkpoint.verify(&key).map_err(|_| bad())?;
        match &kept {
            Some(kept) if checkpoint.seq < kept.seq => Err(AgentError::AuditRollback {
                url: url.to_string(),
                kept: kept.seq,
                got: checkpoint.seq,
            }),
            Some(kept) if checkpoint.seq == kept.seq && checkpoint.head_hash != kept.head_hash => {
                Err(AgentError::AuditRollback {
                    url: url.to_string(),
                    kept: kept.seq,
                    got: checkpoint.seq,
                })
            }
            Some(kept) if checkpoint.seq == kept.seq => Ok(None),
            _ => Ok(Some(*checkpoint)),
        }
    }

    /// Drops the kept format-1 checkpoint (an operator acknowledged an
    /// alarm about this log).
    pub(crate) fn forget_checkpoint(&self, audit_key: &[u8; 32]) -> Result<(), AgentError> {
        let path = self.checkpoint_path(audit_key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Keeps `checkpoint` as the newest seen from this audit log (never
    /// replacing a newer one another unlock kept meanwhile).
    pub fn keep_checkpoint(
        &self,
        audit_key: &[u8; 32],
        checkpoint: &Checkpoint,
    ) -> Result<(), AgentError> {
        if self
            .kept_checkpoint(audit_key)?
            .is_some_and(|kept| kept.seq >= checkpoint.seq)
        {
            return Ok(());
        }
        write_json(&self.checkpoint_path(audit_key), checkpoint)
    }
}

/// A kept JSON file: `None` if it does not exist.
pub(crate) fn read_json<T: for<'de> serde::Deserialize<'de>>(
    path: &Path,
) -> Result<Option<T>, AgentError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io(path)(e)),
    }
}

/// Writes a kept JSON file atomically (mode 0600, fsynced with its
/// directory), making the directory first.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), AgentError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(AgentError::Invalid(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    StateDir::create_dir(dir)?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| AgentError::Invalid(e.to_string()))?;
    atrest_vault::write_atomic(dir, name, &bytes, 0o600)
        .map_err(|e| AgentError::Invalid(format!("{}: {e}", path.display())))
}

/// The kernel's boot id (in test builds, `ATREST_BOOT_ID` if set).
pub fn boot_id() -> Result<BootId, AgentError> {
    #[cfg(feature = "test-hooks")]
    if let Ok(text) = std::env::var(BOOT_ID_ENV) {
        return BootId::new(text.trim()).map_err(|e| AgentError::BootId(e.to_string()));
    }
    let text = fs::read_to_string(BOOT_ID_FILE)
        .map_err(|e| AgentError::BootId(format!("{BOOT_ID_FILE}: {e}")))?;
    BootId::new(text.trim()).map_err(|e| AgentError::BootId(e.to_string()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use atrest_audit::{AuditSigningKey, EntryHash};

    #[test]
    fn identity_is_made_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("host"));
        assert!(matches!(
            state.load_identity(),
            Err(AgentError::NoIdentity(_))
        ));
        let id = state.load_or_create_identity().unwrap();
        let again = state.load_or_create_identity().unwrap();
        assert_eq!(id.public_key(), again.public_key());
        let path = state.identity_path();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(state.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = state.load_identity().unwrap_err();
        assert!(matches!(
            err,
            AgentError::InsecureIdentity { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, [1u8; 33]).unwrap();
        assert!(matches!(
            state.load_identity(),
            Err(AgentError::BadIdentity { .. })
        ));
    }

    #[test]
    fn checkpoints_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let key = AuditSigningKey::generate();
        let audit = key.public_key().to_bytes();
        let at = |seq, h| key.sign_checkpoint(seq, EntryHash([h; 32]), 1000);
        let url = "https://k";
        let first = state
            .check_checkpoint(url, &audit, Some(&at(10, 1)))
            .unwrap()
            .unwrap();
        state.keep_checkpoint(&audit, &first).unwrap();
        assert_eq!(state.kept_checkpoint(&audit).unwrap(), Some(first));
        // Newer: kept next. Same: nothing new.
        assert!(
            state
                .check_checkpoint(url, &audit, Some(&at(11, 2)))
                .unwrap()
                .is_some()
        );
        assert!(
            state
                .check_checkpoint(url, &audit, Some(&at(10, 1)))
                .unwrap()
                .is_none()
        );
        // Older or forked: rollback. (An answer's entry number alone may lie
        // before the kept checkpoint: vaults unlocking at once.)
        for cp in [at(9, 1), at(10, 9)] {
            assert!(matches!(
                state.check_checkpoint(url, &audit, Some(&cp)),
                Err(AgentError::AuditRollback { kept: 10, .. })
            ));
        }
        assert!(
            state
                .check_checkpoint(url, &audit, Some(&at(10, 1)))
                .is_ok()
        );
        // Once checkpoints came, one must come with every answer.
        assert!(matches!(
            state.check_checkpoint(url, &audit, None),
            Err(AgentError::BadCheckpoint { .. })
        ));
        // Keeping never goes backwards.
        state.keep_checkpoint(&audit, &at(11, 2)).unwrap();
        state.keep_checkpoint(&audit, &first).unwrap();
        assert_eq!(state.kept_checkpoint(&audit).unwrap().unwrap().seq, 11);
        // Signed by another key.
        let other = AuditSigningKey::generate().sign_checkpoint(20, EntryHash([1; 32]), 1);
        assert!(matches!(
            state.check_checkpoint(url, &audit, Some(&other)),
            Err(AgentError::BadCheckpoint { .. })
        ));
    }
}
