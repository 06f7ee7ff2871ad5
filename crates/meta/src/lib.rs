//! The metadata of a format 2 vault (docs/format.md §16): everything but
//! the block contents of regular files, whose map entries (nonce and tag
//! of each block) it keeps and whose ciphertext it places (§16.9, §16.14).
//!
//! Every structure is reached from a MAC'd [`superblock`] through SHA-256
//! [`page`] references, so a change to any byte, or an older copy of any
//! page, is an authentication failure naming that page; every change is
//! first a record in the hash-chained [`log`]. The crate knows nothing of
//! FUSE or of file contents, and names no algorithm: it seals and MACs
//! through atrest-core with the keys of [`MetaKeys`].
//!
//! Everything reads and writes through a [`Backing`], so all of it runs
//! against an in-memory [`MemBacking`] in tests.

pub mod backing;
mod bitmap;
pub mod blocks;
mod bytes;
mod change;
mod dir;
pub mod directory;
mod error;
mod file;
mod keys;
pub mod log;
pub mod notes;
mod objects;
pub mod page;
pub mod pager;
pub mod radix;
pub mod record;
mod recovery;
pub mod repair;
pub mod sim;
pub mod status;
mod store;
pub mod superblock;
mod usage;
pub mod witness;
pub mod xattr;

pub use backing::{Backing, MemBacking};
pub use blocks::{BlockVerifier, NoContents, SealedBlock, data_file_name};
pub use dir::DirBacking;
pub use error::{Location, MetaError};
pub use file::{BlockPlan, FileSync, FlushAhead, SYNCFS_ABOVE, Synced};
pub use keys::MetaKeys;
pub use store::{ConfigBinding, FsError, NewObject, Recovery, RenameMode, SetAttr, Store};
pub use usage::PageUsage;
pub use xattr::XattrMode;
