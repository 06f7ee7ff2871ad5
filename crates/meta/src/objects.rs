//! The object table (docs/format.md §16.7): object records by id, in a
//! radix tree of 15 records per leaf.

use atrest_core::ContentAlgorithm;

use crate::error::MetaError;
use crate::page::PageKind;
use crate::pager::{Allocator, Pager};
use crate::radix::{Radix, RadixItem};
use crate::record::{ObjectRecord, RECORD_LEN};
use crate::superblock::{MAX_OBJECT_DEPTH, Root};

/// One slot of the object table: a record, or free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot(pub Option<ObjectRecord>);

impl RadixItem for Slot {
    const LEAF: PageKind = PageKind::ObjectLeaf;
    const INDEX: PageKind = PageKind::ObjectIndex;

    fn per_leaf(_: ContentAlgorithm) -> u64 {
        15
    }

    fn empty() -> Self {
        Self(None)
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn encode(&self, algorithm: ContentAlgorithm, out: &mut Vec<u8>) {
        match &self.0 {
            Some(record) => out.extend_from_slice(&record.encode(algorithm)),
            None => out.resize(out.len() + RECORD_LEN, 0),
        }
    }

    fn item_len(_: ContentAlgorithm) -> usize {
        RECORD_LEN
    }

    fn decode(algorithm: ContentAlgorithm, bytes: &[u8]) -> Result<Self, String> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().map_err(|_| "short record")?;
        ObjectRecord::decode(algorithm, bytes).map(Self)
    }
}

/// The object table of an open store.
pub struct ObjectTable {
    tree: Radix<Slot>,
}

impl ObjectTable {
    pub fn open(algorithm: ContentAlgorithm, root: Root) -> Self {
        Self {
            tree: Radix::open(0, algorithm, root, MAX_OBJECT_DEPTH),
        }
    }

    pub fn empty(algorithm: ContentAlgorithm) -> Self {
        Self {
            tree: Radix::empty(0, algorithm, MAX_OBJECT_DEPTH),
        }
    }

    /// The record of `id`, `None` if its slot is free. A record in the
    /// wrong slot is corruption.
    pub fn get(&mut self, pager: &Pager<'_>, id: u64) -> Result<Option<ObjectRecord>, MetaError> {
        let Slot(record) = self.tree.get(pager, id)?;
        if let Some(r) = &record
            && r.head.id != id
        {
            return Err(MetaError::Inconsistent(format!(
                "the object table holds object {} in the slot of {id}",
                r.head.id
            )));
        }
        Ok(record)
    }

    pub fn set(&mut self, pager: &Pager<'_>, record: ObjectRecord) -> Result<(), MetaError> {
        let id = record.head.id;
        self.tree.set(pager, id, Slot(Some(record)))
    }

    pub fn free(&mut self, pager: &Pager<'_>, id: u64) -> Result<(), MetaError> {
        self.tree.set(pager, id, Slot(None))
    }

    /// Whether a page on the path to `id`'s record, below the root, fails
    /// authentication.
    pub fn has_failed(&mut self, pager: &Pager<'_>, id: u64) -> bool {
        self.tree.has_failed(pager, id)
    }

    /// The page holding `id`'s record, which fails authentication, becomes
    /// a range of free slots: every record in it is lost with it.
    pub fn drop_failed(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        id: u64,
    ) -> Result<(), MetaError> {
        self.tree.drop_failed(pager, alloc, id)
    }

    pub fn flush(&mut self, pager: &Pager<'_>, alloc: &mut Allocator) -> Result<Root, MetaError> {
        self.tree.flush(pager, alloc)
    }
}
