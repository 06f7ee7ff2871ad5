use std::fmt;

use crate::page::PageKind;

/// Where in a vault's metadata a failure was found: what `fsck` names and
/// what the mount logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Superblock page 0 or 1 of `atrest.meta`.
    Superblock(u64),
    /// A sealed page of `atrest.meta`, as the structure referring to it
    /// expected it.
    Page {
        page: u64,
        kind: PageKind,
        owner: u64,
    },
    /// The header of log segment `segment`.
    Segment { segment: u64 },
    /// A log record.
    LogRecord { segment: u64, offset: u64, seq: u64 },
    /// Block `block` of the data file of regular file `object`.
    DataFile { object: u64, block: u64 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Superblock(p) => write!(f, "superblock (page {p} of atrest.meta)"),
            Self::Page { page, kind, owner } => {
                write!(f, "{} page {page} of atrest.meta", kind.name())?;
                if *owner != 0 {
                    write!(f, " (object {owner})")?;
                }
                Ok(())
            }
            Self::Segment { segment } => write!(f, "log segment atrest.log/{segment:016x}"),
            Self::LogRecord {
                segment,
                offset,
                seq,
            } => write!(
                f,
                "log record {seq} (atrest.log/{segment:016x} at byte {offset})"
            ),
            Self::DataFile { object, block } => write!(
                f,
                "block {block} of object {object} ({})",
                crate::blocks::data_file_name(*object)
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The bytes at `0` are not what the vault wrote there: changed, cut,
    /// swapped, zeroed or an older copy.
    #[error("{0}: authentication failed (changed, swapped or rolled back on the disk)")]
    Auth(Location),
    /// Authenticated, yet not a valid structure: written by a different
    /// (newer?) version, or by a bug.
    #[error("{location}: {reason}")]
    Corrupt { location: Location, reason: String },
    /// Authenticated structures that disagree with each other (a bug, or
    /// a key in other hands).
    #[error("metadata inconsistent: {0}")]
    Inconsistent(String),
    /// A tree or list would grow past what the format allows.
    #[error("too large: {0}")]
    TooLarge(String),
    /// An earlier write of this store failed, so memory may be ahead of
    /// the disk: it writes nothing more.
    #[error("an earlier write to the vault's metadata failed: open the vault again to recover it")]
    Stopped,
    #[error("no valid superblock in atrest.meta: {0}")]
    NoSuperblock(String),
    /// The superblock says `atrest migrate` is converting the vault
    /// (state *migrating*, §16.5): only the migration opens it.
    #[error(
        "the vault's metadata says `atrest migrate` is converting it to format 2 and has not finished: run `atrest migrate` on this vault to finish (it resumes where it stopped)"
    )]
    Migrating,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl MetaError {
    pub(crate) fn corrupt(location: Location, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            location,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// An authentication failure (as opposed to an I/O error or a
    /// structure this version does not know).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}
