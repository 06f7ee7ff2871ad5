//! Encrypted, deduplicated backups (issue 11): a repository on a
//! [`Backend`] (a local directory, or S3), its master key held in keyslots
//! of its own ([`LockedRepository`]: passphrase, key file, recovery key,
//! or a vault's key, wrapped by the vault's keyslot code), content-defined
//! chunking keyed by the repository key, keyed BLAKE3 blob ids, zstd,
//! sealed packs with sealed trailers, index files, trees and snapshots,
//! `backup`, `restore`, `check`, `prune`, and `shred` (every keyslot
//! destroyed). Formats: docs/format.md §18.

mod backend;
mod chunker;
mod error;
mod fetch;
mod forget;
mod keys;
mod keyslots;
mod lock;
mod locked;
mod mount;
mod pack;
mod readahead;
mod repo;
mod restore;
mod run;
mod s3;
mod tree;

pub use backend::{Backend, LocalBackend, ReadProfile};
pub use chunker::{ChunkSizes, Chunker};
pub use error::{BackupError, Result};
pub use forget::{KeepPolicy, PruneReport, keep};
pub use keys::{BlobId, BlobKind, REPO_ID_LEN, RepoKeys};
pub use keyslots::{KEYSLOT_VERSION, MAX_KEYSLOTS, StoredSlot};
pub use lock::{LOCK_REFRESH, LOCK_STALE, ListedLock, LockInfo};
pub use locked::{LockedRepository, describe as describe_slot};
pub use mount::SnapshotFs;
pub use pack::{Location, PACK_TARGET};
pub use repo::{
    Change, CheckReport, ListedNode, REPO_VERSION, REPO_VERSION_1, Repository, RestoreReport,
    SnapshotMeta,
};
pub use restore::RestoreOptions;
pub use run::{BackupOptions, Parent, Patterns, Progress};
pub use s3::{S3Backend, S3Options};
pub use tree::{Node, NodeKind, SNAPSHOT_VERSION, Snapshot, Summary, Tree, Xattr};
