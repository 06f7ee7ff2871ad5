//! Directory trees and snapshots, as JSON inside sealed blobs and files
//! (docs/format.md §18.4). Names and symlink targets are raw bytes
//! (base64url), so non-UTF-8 names survive.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    #[serde(with = "b64")]
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Status change time and inode number (snapshot version 2): with size
    /// and mtime, what tells the next run a file is unchanged without
    /// reading it. Version 1 nodes have none (0).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ctime_sec: i64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ctime_nsec: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default)]
    pub size: u64,
    /// Data blob ids (hex), in order: files only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<String>,
    /// Tree blob id (hex): directories only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<String>,
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<u8>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Files with several names: the same number for every name of one
    /// inode in a snapshot; restore makes them hard links again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

/// One extended attribute, name and value as raw bytes (base64url).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xattr {
    #[serde(with = "b64")]
    pub name: Vec<u8>,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The snapshot version this build writes; it reads 1 and 2.
pub const SNAPSHOT_VERSION: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// What a `run` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    pub new_blobs: u64,
    pub new_bytes: u64,
    pub packs: u64,
    /// Files whose blobs came from the parent snapshot without reading them.
    #[serde(default)]
    pub unchanged_files: u64,
    /// Files whose size, mtime or ctime changed while they were read (or
    /// that read to another length than their size): the snapshot holds
    /// the bytes read, which may mix old and new contents. Reported as a
    /// warning; the next run reads them again (their recorded times are
    /// from before the read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_while_read: Vec<String>,
    /// Source entries that could not be read (reported, skipped).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// One snapshot: when, where from, and its root tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub time_ms: u64,
    pub hostname: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Root tree id (hex): one node per backed-up path.
    pub tree: String,
    /// The snapshot whose unchanged files this one reused (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub summary: Summary,
}
