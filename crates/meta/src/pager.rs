//! Reading and writing sealed pages of `atrest.meta`, and choosing where
//! a checkpoint writes them (docs/format.md §16.11, §16.13 step 4).

use std::collections::BTreeSet;

use crate::backing::Backing;
use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;
use crate::page::{self, Expect, FIRST_SEALED_PAGE, OpenPage, PAGE_SIZE, PageHeader, PageRef};

pub const META_FILE: &str = "atrest.meta";

/// Reads and verifies pages through references; seals and writes new ones.
pub struct Pager<'a> {
    pub keys: &'a MetaKeys,
    pub backing: &'a dyn Backing,
}

impl<'a> Pager<'a> {
    pub fn new(keys: &'a MetaKeys, backing: &'a dyn Backing) -> Self {
        Self { keys, backing }
    }

    /// Reads the page `reference` names and opens it as `expect` says.
    pub fn read(&self, reference: &PageRef, expect: Expect) -> Result<OpenPage, MetaError> {
        let number = reference.page().expect("null references are not read");
        let mut sealed = Box::new([0u8; PAGE_SIZE]);
        let location = Location::Page {
            page: number,
            kind: expect.kind,
            owner: expect.owner,
        };
        match self
            .backing
            .read_exact_at(META_FILE, number * PAGE_SIZE as u64, &mut sealed[..])
        {
            Ok(()) => {}
            // A cut file is the same attack as a changed page.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(MetaError::Auth(location));
            }
            Err(e) => return Err(MetaError::io(format!("reading {location}"))(e)),
        }
        page::open(self.keys, reference, &sealed, expect)
    }

    /// Seals `items` as page `number` and writes it; returns its reference.
    pub fn write(
        &self,
        number: u64,
        header: &PageHeader,
        items: &[u8],
    ) -> Result<PageRef, MetaError> {
        let sealed = page::seal(self.keys, number, header, items);
        self.backing
            .write_at(META_FILE, number * PAGE_SIZE as u64, &sealed[..])
            .map_err(MetaError::io(format!(
                "writing page {number} of {META_FILE}"
            )))?;
        Ok(PageRef::to_sealed(number, &sealed))
    }
}

/// Which pages are in use. A checkpoint allocates only pages that the
/// previous checkpoint did not use, so nothing the last durable
/// superblock references is overwritten; pages freed since then become
/// free for the checkpoint after the next.
#[derive(Debug, Clone)]
pub struct Allocator {
    /// In use at the last durable checkpoint (bit per page).
    durable: BTreeSet<u64>,
    /// Allocated since (in use from the next checkpoint on).
    allocated: BTreeSet<u64>,
    /// Released since (still in `durable`).
    released: BTreeSet<u64>,
    /// Below `page_count`, in neither `durable` nor `allocated`: what
    /// `allocate` hands out, lowest first.
    free: BTreeSet<u64>,
    /// Pages in the file: one past the highest page ever allocated.
    page_count: u64,
}

impl Allocator {
    /// A fresh vault: the superblocks only.
    pub fn new() -> Self {
        Self::from_used([0, 1].into_iter().collect(), FIRST_SEALED_PAGE)
    }

    /// The state a checkpoint's bitmap describes.
    pub fn from_used(used: BTreeSet<u64>, page_count: u64) -> Self {
        let free = (FIRST_SEALED_PAGE..page_count)
            .filter(|page| !used.contains(page))
            .collect();
        Self {
            durable: used,
            allocated: BTreeSet::new(),
            released: BTreeSet::new(),
            free,
            page_count,
        }
    }

    /// A page no durable structure uses and nothing allocated since holds:
    /// the lowest such page, which keeps the file compact.
    pub fn allocate(&mut self) -> u64 {
        let page = self.free.pop_first().unwrap_or_else(|| {
            self.page_count += 1;
            self.page_count - 1
        });
        self.allocated.insert(page);
        page
    }

    /// A page the next checkpoint no longer references. One allocated
    /// since the last checkpoint is free again at once; one the durable
    /// checkpoint uses only once the next checkpoint is durable.
    pub fn release(&mut self, page: u64) {
        if self.allocated.remove(&page) {
            self.free.insert(page);
        } else {
            debug_assert!(
                self.durable.contains(&page),
                "release of a free page {page}"
            );
            self.released.insert(page);
        }
    }

    /// The pages in use once the checkpoint being written is durable.
    pub fn in_use_after(&self) -> BTreeSet<u64> {
        self.durable
            .difference(&self.released)
            .chain(&self.allocated)
            .copied()
            .collect()
    }

    /// The pages in use at the last durable checkpoint.
    pub fn durable_pages(&self) -> BTreeSet<u64> {
        self.durable.clone()
    }

    /// A page the durable checkpoint references although its bitmap
    /// marks it free (`fsck --repair`): in use from now on, never handed
    /// out.
    pub fn keep(&mut self, page: u64) {
        if page >= self.page_count {
            self.free.extend(self.page_count..page);
            self.page_count = page + 1;
        }
        self.free.remove(&page);
        self.released.remove(&page);
        self.durable.insert(page);
    }

    pub fn page_count(&self) -> u64 {
        self.page_count
    }

    /// The checkpoint is durable: its pages are now the durable set, and
    /// the pages it released are free.
    pub fn commit(&mut self) {
        self.durable = self.in_use_after();
        self.free.append(&mut self.released);
        self.allocated.clear();
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_the_durable_checkpoint_are_not_reused_before_the_next() {
        let mut a = Allocator::new();
        let (p, q) = (a.allocate(), a.allocate());
        assert_eq!((p, q), (2, 3));
        a.commit();
        a.release(p);
        let r = a.allocate();
        assert_ne!(
            r, p,
            "page {p} is still referenced by the durable checkpoint"
        );
        a.commit();
        assert_eq!(a.allocate(), p);
        assert!(a.in_use_after().contains(&r));
    }

    #[test]
    fn a_page_allocated_and_released_before_a_checkpoint_is_free_at_once() {
        let mut a = Allocator::new();
        let p = a.allocate();
        a.release(p);
        assert_eq!(a.allocate(), p);
    }
}
