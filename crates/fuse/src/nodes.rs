//! The inode table: which backing directory entry each FUSE inode number
//! stands for, and how many kernel references it has.
//!
//! FUSE inode numbers are the backing file system's, so hard links share
//! one inode, as they must. The backing root is swapped with inode 1, the
//! number FUSE reserves for the root.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use fuser::{Errno, INodeNo};

/// One name of an inode: parent inode and the *backing* (encrypted) name.
pub type Link = (u64, OsString);

#[derive(Debug, Default)]
struct Node {
    links: Vec<Link>,
    lookups: u64,
}

#[derive(Debug)]
pub struct NodeTable {
    root_backing_ino: u64,
    nodes: HashMap<u64, Node>,
}

/// Directories deeper than this are refused rather than walked forever if
/// the table were ever to hold a cycle.
const MAX_DEPTH: usize = 4096;

impl NodeTable {
    pub fn new(root_backing_ino: u64) -> Self {
        Self {
            root_backing_ino,
            nodes: HashMap::new(),
        }
    }

    /// FUSE inode number of a backing inode number.
    pub fn fuse_ino(&self, backing: u64) -> u64 {
        if backing == self.root_backing_ino {
            INodeNo::ROOT.0
        } else if backing == INodeNo::ROOT.0 {
            self.root_backing_ino
        } else {
            backing
        }
    }

    /// Records a kernel reference to `ino` reached through `link`.
    pub fn remember(&mut self, ino: u64, link: Link) {
        if ino == INodeNo::ROOT.0 {
            return;
        }
        let node = self.nodes.entry(ino).or_default();
        node.lookups += 1;
        if let Some(pos) = node.links.iter().position(|l| *l == link) {
            // Most recently used name first: it is the one most likely valid.
            node.links.swap(0, pos);
        } else {
            node.links.insert(0, link);
        }
    }

    /// Drops `count` kernel references; true if none is left.
    pub fn forget(&mut self, ino: u64, count: u64) -> bool {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if node.lookups == 0 {
                self.nodes.remove(&ino);
                return true;
            }
        }
        false
    }

    /// A name went away (unlink, rmdir, rename source or victim).
    pub fn unlink(&mut self, ino: u64, link: &Link) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links.retain(|l| l != link);
        }
    }

    /// A name moved (rename).
    pub fn relink(&mut self, ino: u64, from: &Link, to: Link) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links.retain(|l| l != from && *l != to);
            node.links.insert(0, to);
        }
    }

    /// The parent and backing name through which `ino` is reached now
    /// (not for the root, which has none in the vault).
    pub fn link(&self, ino: u64) -> Result<&Link, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ESTALE)?;
        // An inode all of whose names were removed while still open.
        node.links.first().ok_or(Errno::ENOENT)
    }

    /// Backing path of `ino` below `root`: for messages only, since a
    /// joined path may exceed PATH_MAX (see `dirs`).
    pub fn path(&self, root: &Path, ino: u64) -> Result<PathBuf, Errno> {
        let mut names: Vec<&OsString> = Vec::new();
        let mut cur = ino;
        while cur != INodeNo::ROOT.0 {
            let node = self.nodes.get(&cur).ok_or(Errno::ESTALE)?;
            // An inode all of whose names were removed while still open.
            let (parent, name) = node.links.first().ok_or(Errno::ENOENT)?;
            names.push(name);
            cur = *parent;
            if names.len() > MAX_DEPTH {
                return Err(Errno::ELOOP);
            }
        }
        let mut path = root.to_path_buf();
        for name in names.iter().rev() {
            path.push(name);
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_parents_and_renames() {
        let mut t = NodeTable::new(500);
        assert_eq!(t.fuse_ino(500), 1);
        assert_eq!(t.fuse_ino(1), 500);
        t.remember(10, (1, "a".into()));
        t.remember(11, (10, "b".into()));
        assert_eq!(t.path(Path::new("/r"), 11).unwrap(), Path::new("/r/a/b"));
        t.relink(10, &(1, "a".into()), (1, "c".into()));
        assert_eq!(t.path(Path::new("/r"), 11).unwrap(), Path::new("/r/c/b"));
        t.remember(11, (1, "hard".into()));
        t.unlink(11, &(1, "hard".into()));
        assert_eq!(t.path(Path::new("/r"), 11).unwrap(), Path::new("/r/c/b"));
        assert_eq!(t.link(11).unwrap(), &(10, "b".into()));
        assert!(!t.forget(11, 1));
        assert!(t.forget(11, 1));
        assert_eq!(t.path(Path::new("/r"), 11), Err(Errno::ESTALE));
        assert_eq!(t.link(11), Err(Errno::ESTALE));
        t.remember(12, (1, "gone".into()));
        t.unlink(12, &(1, "gone".into()));
        assert_eq!(t.link(12), Err(Errno::ENOENT));
    }
}
