//! What one namespace operation changes, as its `META` log record states
//! it (docs/format.md §16.12): the new heads of the objects it touches
//! (or their slots freed), the directory entries it removes and inserts,
//! and the extra bytes of its op. An operation builds a [`Change`], the
//! store logs it and then applies it; recovery decodes the same record
//! and applies it with the same code, so a replayed store cannot differ
//! from the one that wrote the log.

use crate::directory::valid_name;
use crate::log::{Body, EntryChange};
use crate::record::{HeadChange, ObjectHead, ObjectKind};

/// `META` ops (§16.12).
pub mod op {
    pub const CREATE: u8 = 1;
    pub const MKDIR: u8 = 2;
    pub const MKNOD: u8 = 3;
    pub const SYMLINK: u8 = 4;
    pub const LINK: u8 = 5;
    pub const UNLINK: u8 = 6;
    pub const RMDIR: u8 = 7;
    pub const RENAME: u8 = 8;
    pub const EXCHANGE: u8 = 9;
    pub const SETXATTR: u8 = 10;
    pub const REMOVEXATTR: u8 = 11;
    pub const SETATTR: u8 = 12;
}

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// One entry inserted into or removed from a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub insert: bool,
    pub dir: u64,
    pub id: u64,
    pub kind: ObjectKind,
    pub name: Vec<u8>,
}

/// The effect of one operation. Heads carry new values, one per object,
/// not differences: the record states its whole effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub op: u8,
    pub heads: Vec<HeadChange>,
    pub entries: Vec<Entry>,
    pub extra: Vec<u8>,
}

impl Change {
    pub fn new(op: u8) -> Self {
        Self {
            op,
            heads: Vec::new(),
            entries: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Sets an object's new head, replacing one set before for it.
    pub fn set(&mut self, head: ObjectHead) {
        self.put(HeadChange::Set(head));
    }

    /// Frees an object's slot.
    pub fn free(&mut self, id: u64) {
        self.put(HeadChange::Freed(id));
    }

    fn put(&mut self, change: HeadChange) {
        match self.heads.iter_mut().find(|h| h.id() == change.id()) {
            Some(slot) => *slot = change,
            None => self.heads.push(change),
        }
    }

    /// The head this change already sets for `id`, if any.
    pub fn head(&self, id: u64) -> Option<&ObjectHead> {
        self.heads.iter().find_map(|h| match h {
            HeadChange::Set(head) if head.id == id => Some(head),
            _ => None,
        })
    }

    pub fn insert(&mut self, dir: u64, id: u64, kind: ObjectKind, name: &[u8]) {
        self.entries.push(Entry {
            insert: true,
            dir,
            id,
            kind,
            name: name.to_vec(),
        });
    }

    pub fn remove(&mut self, dir: u64, id: u64, kind: ObjectKind, name: &[u8]) {
        self.entries.push(Entry {
            insert: false,
            dir,
            id,
            kind,
            name: name.to_vec(),
        });
    }

    /// The body of its `META` record.
    pub fn to_body(&self) -> Body {
        Body::Meta {
            op: self.op,
            heads: self.heads.iter().map(HeadChange::encode).collect(),
            entries: self
                .entries
                .iter()
                .map(|e| EntryChange {
                    action: if e.insert { INSERT } else { REMOVE },
                    dir: e.dir,
                    object: e.id,
                    kind: e.kind.id(),
                    name: e.name.clone(),
                })
                .collect(),
            extra: self.extra.clone(),
        }
    }

    /// The change a `META` record states; `Err` says why it cannot be one
    /// (the record authenticated, so that is a bug or a key in other
    /// hands, never a crash).
    pub fn from_body(body: &Body) -> Result<Self, String> {
        let Body::Meta {
            op,
            heads,
            entries,
            extra,
        } = body
        else {
            return Err("not a META record".into());
        };
        if !matches!(*op, 1..=12) {
            return Err(format!("META op {op} is not one this version applies"));
        }
        let mut change = Self::new(*op);
        for bytes in heads {
            let head = HeadChange::decode(bytes)?;
            if change.heads.iter().any(|h| h.id() == head.id()) {
                return Err(format!("object {} has two heads", head.id()));
            }
            change.heads.push(head);
        }
        for e in entries {
            let kind = ObjectKind::from_id(e.kind)
                .ok_or_else(|| format!("entry of unknown kind {}", e.kind))?;
            if !valid_name(&e.name) {
                return Err("entry with an invalid name".into());
            }
            change.entries.push(Entry {
                insert: e.action == INSERT,
                dir: e.dir,
                id: e.object,
                kind,
                name: e.name.clone(),
            });
        }
        change.extra = extra.clone();
        if matches!(*op, op::SETXATTR | op::REMOVEXATTR) {
            // One object's head, no entries, and extra bytes that state
            // the attribute (checked again when applied).
            if change.heads.len() != 1 || !change.entries.is_empty() {
                return Err("an xattr change of other than one object".into());
            }
            crate::xattr::XattrChange::decode(*op, extra)?;
        }
        Ok(change)
    }
}

/// The op of a `create` of `kind`.
pub fn create_op(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Regular => op::CREATE,
        ObjectKind::Directory => op::MKDIR,
        ObjectKind::Symlink => op::SYMLINK,
        _ => op::MKNOD,
    }
}
