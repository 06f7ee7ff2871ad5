//! The free-page bitmap (docs/format.md §16.11): bit `p` is 1 when page
//! `p` of `atrest.meta` is in use. It is written whole at every
//! checkpoint (one leaf covers 32,416 pages, 127 MiB of metadata), into
//! pages it marks as used itself.

use std::collections::BTreeSet;

use crate::bytes::Put;
use crate::error::MetaError;
use crate::page::{Expect, PageHeader, PageKind, PageRef, item_space};
use crate::pager::{Allocator, Pager};
use crate::radix::FANOUT;
use crate::superblock::{MAX_BITMAP_DEPTH, Root};

/// Pages one leaf covers.
pub fn bits_per_leaf(pager: &Pager<'_>) -> u64 {
    item_space(pager.keys) as u64 * 8
}

/// What a checkpoint's bitmap says, and the pages it sits in.
pub struct Loaded {
    pub used: BTreeSet<u64>,
    pub pages: Vec<u64>,
}

/// Reads the whole bitmap under `root`; `page_count` bounds it.
pub fn read(pager: &Pager<'_>, root: Root, page_count: u64) -> Result<Loaded, MetaError> {
    let mut loaded = Loaded {
        used: BTreeSet::new(),
        pages: Vec::new(),
    };
    read_node(
        pager,
        &root.reference,
        root.depth,
        0,
        page_count,
        &mut loaded,
    )?;
    for p in [0, 1] {
        if !loaded.used.contains(&p) {
            return Err(MetaError::NoSuperblock(
                "the bitmap marks a superblock page free".into(),
            ));
        }
    }
    for p in &loaded.pages {
        if !loaded.used.contains(p) {
            return Err(MetaError::NoSuperblock(format!(
                "the bitmap marks its own page {p} free"
            )));
        }
    }
    Ok(loaded)
}

fn read_node(
    pager: &Pager<'_>,
    reference: &PageRef,
    level: u8,
    first: u64,
    page_count: u64,
    loaded: &mut Loaded,
) -> Result<(), MetaError> {
    if reference.is_null() {
        return Ok(());
    }
    let expect = Expect {
        kind: if level == 0 {
            PageKind::BitmapLeaf
        } else {
            PageKind::BitmapIndex
        },
        owner: 0,
        level: Some(level),
    };
    let page = pager.read(reference, expect)?;
    loaded.pages.push(page.page);
    let per_leaf = bits_per_leaf(pager);
    if level == 0 {
        let bytes = page.items.len() as u64;
        if u64::from(page.header.count) != 0 {
            return Err(page.corrupt("a bitmap leaf with an item count"));
        }
        for byte in 0..bytes {
            let b = page.items[byte as usize];
            for bit in 0..8 {
                if b & (0x80 >> bit) != 0 {
                    let p = first + byte * 8 + bit;
                    if p >= page_count {
                        return Err(page
                            .corrupt(format!("page {p} marked used past the end of atrest.meta")));
                    }
                    loaded.used.insert(p);
                }
            }
        }
        return Ok(());
    }
    if u64::from(page.header.count) != FANOUT {
        return Err(page.corrupt("a bitmap index of the wrong size"));
    }
    let child_span = span(per_leaf, level - 1);
    let mut r = crate::bytes::Reader::new(&page.items);
    for slot in 0..FANOUT {
        let child = PageRef::read(&mut r).ok_or_else(|| page.corrupt("bad reference"))?;
        read_node(
            pager,
            &child,
            level - 1,
            first + slot * child_span,
            page_count,
            loaded,
        )?;
    }
    page.check_zero_after(r.position())
}

fn span(per_leaf: u64, level: u8) -> u64 {
    (0..level).fold(per_leaf, |s, _| s.saturating_mul(FANOUT))
}

/// Writes a new bitmap of what is in use once this checkpoint is durable,
/// after releasing the old bitmap's pages. Every other structure must be
/// flushed first: nothing may allocate after this.
pub fn write(
    pager: &Pager<'_>,
    alloc: &mut Allocator,
    old_pages: &[u64],
) -> Result<(Root, Vec<u64>), MetaError> {
    for p in old_pages {
        alloc.release(*p);
    }
    let per_leaf = bits_per_leaf(pager);
    // Allocate the bitmap's own pages until their number covers the file.
    let mut pages: Vec<u64> = Vec::new();
    let (depth, needed) = loop {
        let (depth, needed) = shape(per_leaf, alloc.page_count())?;
        if pages.len() >= needed {
            break (depth, needed);
        }
        pages.push(alloc.allocate());
    };
    // More pages than needed (the count grew twice): give the rest back.
    for p in pages.split_off(needed) {
        alloc.release(p);
    }
    let used = alloc.in_use_after();
    let page_count = alloc.page_count();
    let mut next = pages.iter().copied();
    let reference = write_node(pager, &used, page_count, depth, 0, per_leaf, &mut next)?;
    Ok((Root { reference, depth }, pages))
}

/// The depth and page count of a bitmap covering `page_count` pages.
fn shape(per_leaf: u64, page_count: u64) -> Result<(u8, usize), MetaError> {
    let mut depth = 0u8;
    while span(per_leaf, depth) < page_count {
        depth += 1;
        if depth > MAX_BITMAP_DEPTH {
            return Err(MetaError::TooLarge(
                "atrest.meta has more pages than a bitmap covers".into(),
            ));
        }
    }
    let mut pages = 0u64;
    let mut nodes = page_count.div_ceil(per_leaf);
    for _ in 0..=depth {
        pages += nodes;
        nodes = nodes.div_ceil(FANOUT);
    }
    Ok((depth, usize::try_from(pages).expect("bounded by the depth")))
}

fn write_node(
    pager: &Pager<'_>,
    used: &BTreeSet<u64>,
    page_count: u64,
    level: u8,
    first: u64,
    per_leaf: u64,
    next: &mut impl Iterator<Item = u64>,
) -> Result<PageRef, MetaError> {
    if first >= page_count {
        return Ok(PageRef::NULL);
    }
    let mut items = Vec::with_capacity(item_space(pager.keys));
    let count = if level == 0 {
        items.resize(item_space(pager.keys), 0);
        for p in used.range(first..first + per_leaf) {
            let bit = p - first;
            items[(bit / 8) as usize] |= 0x80 >> (bit % 8);
        }
        0
    } else {
        let child_span = span(per_leaf, level - 1);
        for slot in 0..FANOUT {
            let child = write_node(
                pager,
                used,
                page_count,
                level - 1,
                first + slot * child_span,
                per_leaf,
                next,
            )?;
            items.put(&child.encode());
        }
        FANOUT as u16
    };
    let number = next.next().expect("pages allocated for every node");
    pager.write(
        number,
        &PageHeader {
            kind: if level == 0 {
                PageKind::BitmapLeaf
            } else {
                PageKind::BitmapIndex
            },
            level,
            count,
            owner: 0,
        },
        &items,
    )
}
