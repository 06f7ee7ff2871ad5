//! Errors of backup repositories. Every variant names the object it is
//! about, so `check` and `restore` can say what is damaged.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The directory or bucket prefix holds no repository.
    #[error(
        "{0} is not an atrest backup repository (no config); create one with `atrest backup init`"
    )]
    NotARepository(String),
    /// A repository already exists where `init` was asked to make one.
    #[error("{0} already holds a backup repository")]
    AlreadyExists(String),
    /// The key does not open the repository's config.
    #[error("wrong key for this backup repository")]
    WrongKey,
    /// No keyslot opens with the secret given.
    #[error(
        "no keyslot of this backup repository opens with the {offered} given (its keyslots: {slots}); check it, or give another secret"
    )]
    NoMatchingSlot { offered: String, slots: String },
    /// Every keyslot is gone (`atrest backup shred`): nothing opens it.
    #[error(
        "{0} has no keyslot left (shredded?): no secret can open it, its snapshots are unreadable"
    )]
    NoKeyslots(String),
    /// A format 1 repository is opened by its vault's key alone.
    #[error("{0}")]
    Format1(String),
    /// A keyslot cannot be added, removed or read as asked.
    #[error("keyslot: {0}")]
    Keyslot(String),
    /// The repository was written by a newer atrest.
    #[error(
        "backup repository format version {0} is newer than this atrest reads (1 and 2); upgrade atrest"
    )]
    UnsupportedVersion(u8),
    /// A snapshot was written by a newer atrest.
    #[error(
        "snapshot {name} has version {version}, newer than this atrest reads (1 and 2); upgrade atrest"
    )]
    UnsupportedSnapshot { name: String, version: u64 },
    /// Another command holds a conflicting lock.
    #[error(
        "the repository is in use: {0}; wait for it to finish, or if that process is gone, remove stale locks with `atrest backup unlock`"
    )]
    Locked(String),
    /// A packer thread stopped (its own error is reported instead).
    #[error("a worker thread stopped")]
    WorkerStopped,
    /// An object failed authentication, is cut, or does not parse.
    #[error("damaged repository object {object}: {why}")]
    Damaged { object: String, why: String },
    /// `prune` could not copy a blob a snapshot still uses out of a pack
    /// it rewrites; it stopped before deleting anything.
    #[error(
        "prune stopped before deleting anything: blob {blob}, which a snapshot still uses, cannot be copied: {why}; if it is damaged, `atrest backup check --read-data` names every damaged object: forget the snapshots that use them, then prune again"
    )]
    PruneStopped { blob: String, why: String },
    /// A blob the snapshot needs is in no index.
    #[error("blob {0} is missing from the repository")]
    MissingBlob(String),
    /// No snapshot matches.
    #[error("no snapshot {0} in this repository (list them with `atrest backup snapshots`)")]
    NoSuchSnapshot(String),
    /// Reading or writing the repository's storage failed.
    #[error("repository storage: {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    /// Reading a source file or writing a restored one failed.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BackupError {
    pub(crate) fn damaged(object: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Damaged {
            object: object.into(),
            why: why.into(),
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::File { path, source }
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
