//! Encrypted, deduplicated backups under a vault's keys (issue 11, first
//! slice): a repository on a [`Backend`] (a local directory; S3 next),
//! content-defined chunking keyed by the repository key, keyed BLAKE3 blob
//! ids, zstd, sealed packs with sealed trailers, index files, trees and
//! snapshots, `backup`, `restore` and `check`. Formats: docs/format.md §18.

mod backend;
mod chunker;
mod error;
mod forget;
mod keys;
mod lock;
mod mount;
mod pack;
mod repo;
mod restore;
mod run;
mod s3;
mod tree;

pub use backend::{Backend, LocalBackend};
pub use chunker::{ChunkSizes, Chunker};
pub use error::{BackupError, Result};
pub use forget::{KeepPolicy, PruneReport, keep};
pub use keys::{BlobId, BlobKind, REPO_ID_LEN, RepoKeys};
pub use lock::{LOCK_REFRESH, LOCK_STALE, ListedLock, LockInfo};
pub use mount::SnapshotFs;
pub use pack::{Location, PACK_TARGET};
pub use repo::{
    Change, CheckReport, ListedNode, REPO_VERSION, Repository, RestoreReport, SnapshotMeta,
};
pub use restore::RestoreOptions;
pub use run::{BackupOptions, Parent, Patterns, Progress};
pub use s3::{S3Backend, S3Options};
pub use tree::{Node, NodeKind, SNAPSHOT_VERSION, Snapshot, Summary, Tree, Xattr};
