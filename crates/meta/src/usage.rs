//! Which pages of `atrest.meta` the last durable checkpoint references,
//! against the pages its bitmap marks in use (docs/format.md §16.11,
//! §16.18): `fsck`'s bitmap check. Everything is read from the disk,
//! from the superblock down, each page authenticated on the way; nothing
//! in memory is trusted for it.
//!
//! A referenced page marked free is damage: the checkpoint after next
//! may write over it. A page marked used that nothing references is
//! space lost and never read. Neither is something a crash or an offline
//! writer can make (the bitmap is written with the tree it describes and
//! is authenticated like it); both are what a bug in the accounting
//! would leave, and `fsck --repair` corrects both
//! ([`crate::Store::repair_page_usage`]).

use std::collections::BTreeSet;

use crate::bitmap;
use crate::bytes::Reader;
use crate::directory::Directory;
use crate::error::MetaError;
use crate::objects::Slot;
use crate::page::{Expect, PageKind, PageRef};
use crate::pager::Pager;
use crate::radix::{Radix, Visit};
use crate::record::{Content, MapEntry, ObjectKind, ObjectRecord};
use crate::superblock::Superblock;

/// The pages a checkpoint references and the pages its bitmap marks used.
#[derive(Debug, Clone, Default)]
pub struct PageUsage {
    /// Reached from the superblock (the superblock pages included).
    pub referenced: BTreeSet<u64>,
    /// Marked in use by the bitmap.
    pub marked: BTreeSet<u64>,
    /// Pages that failed on the way: what lies under them is not known,
    /// so no page is called leaked (the failures are `fsck`'s findings
    /// of their own).
    pub failed: usize,
}

impl PageUsage {
    /// Referenced pages the bitmap marks free.
    pub fn free_but_referenced(&self) -> Vec<u64> {
        self.referenced.difference(&self.marked).copied().collect()
    }

    /// Pages marked used that nothing references; none when a page
    /// failed on the way.
    pub fn leaked(&self) -> Vec<u64> {
        if self.failed > 0 {
            return Vec::new();
        }
        self.marked.difference(&self.referenced).copied().collect()
    }

    fn reached(&mut self, page: Result<u64, MetaError>) {
        match page {
            Ok(page) => {
                self.referenced.insert(page);
            }
            Err(_) => self.failed += 1,
        }
    }

    fn reached_all(&mut self, pages: Result<Vec<u64>, MetaError>) {
        match pages {
            Ok(pages) => self.referenced.extend(pages),
            Err(_) => self.failed += 1,
        }
    }
}

/// The usage of the checkpoint `superblock` describes.
pub(crate) fn read(pager: &Pager<'_>, superblock: &Superblock) -> Result<PageUsage, MetaError> {
    let loaded = bitmap::read(pager, superblock.bitmap, superblock.page_count)?;
    let mut usage = PageUsage {
        referenced: [0, 1].into_iter().chain(loaded.pages).collect(),
        marked: loaded.used,
        failed: 0,
    };
    usage.reached_all(pending_pages(pager, superblock.pending));
    let algorithm = pager.keys.algorithm();
    Radix::<Slot>::walk(
        pager,
        0,
        algorithm,
        superblock.object_table,
        &mut |visit| match visit {
            Visit::Page(page) => usage.reached(Ok(page)),
            Visit::Failed(e) => usage.reached(Err(e)),
            Visit::Item(Slot(Some(record))) => record_pages(pager, record, &mut usage),
            Visit::Item(Slot(None)) => {}
        },
    );
    Ok(usage)
}

/// The pages one object's record references: its directory tree or block
/// map, its symlink blob, its xattr pages and their value blobs.
fn record_pages(pager: &Pager<'_>, record: &ObjectRecord, usage: &mut PageUsage) {
    let id = record.head.id;
    match (record.head.kind, &record.content) {
        (ObjectKind::Directory, Content::Tree(root)) => {
            Directory::walk_pages(pager, id, *root, &mut |page| usage.reached(page));
        }
        (ObjectKind::Regular, Content::Tree(root)) => {
            Radix::<MapEntry>::walk(pager, id, pager.keys.algorithm(), *root, &mut |visit| {
                match visit {
                    Visit::Page(page) => usage.reached(Ok(page)),
                    Visit::Failed(e) => usage.reached(Err(e)),
                    Visit::Item(_) => {}
                }
            });
        }
        (_, Content::Blob(first)) => {
            usage.reached_all(crate::store::blob_pages(pager, id, *first));
        }
        _ => {}
    }
    if !record.xattrs.is_null() {
        usage.reached_all(crate::xattr::read_chain(pager, id, record.xattrs).map(|(_, p)| p));
    }
}

/// The chain of pending-work pages (§16.11; this build writes none).
fn pending_pages(pager: &Pager<'_>, first: PageRef) -> Result<Vec<u64>, MetaError> {
    let expect = Expect {
        kind: PageKind::Pending,
        owner: 0,
        level: Some(0),
    };
    let mut pages = Vec::new();
    let mut reference = first;
    while let Some(number) = reference.page() {
        let page = pager.read(&reference, expect)?;
        pages.push(number);
        reference = PageRef::read(&mut Reader::new(&page.items))
            .ok_or_else(|| page.corrupt("bad next reference"))?;
    }
    Ok(pages)
}
