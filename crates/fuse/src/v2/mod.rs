//! The file system of format 2 vaults (docs/format.md §16): every
//! operation goes to the vault's [`atrest_meta::Store`], whose object ids
//! are the inode numbers; contents go through
//! [`atrest_vault::ContentFile2`]. Nothing here reads a backing path: the
//! store knows where each object's bytes are.
//!
//! This slice (stage 3 of docs/plans/format-2.md) holds one lock around
//! the store for every request's metadata work; reads, sealing and
//! flushes run outside it under per-inode locks (see `fs.rs`), and
//! [`checkpoints`] decides when the log is cut.

mod checkpoints;
mod errors;
mod fs;

pub use fs::VaultFs2;
