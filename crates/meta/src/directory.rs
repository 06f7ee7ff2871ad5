//! Directories (docs/format.md §16.8): a tree of sealed pages per
//! directory, keyed by a keyed hash of the name, so a lookup reads one
//! leaf and its index pages whatever the directory's size, and `readdir`
//! offsets (the hashes) stay valid across inserts and splits.

use crate::bytes::{Put, Reader};
use crate::error::MetaError;
use crate::keys::MetaKeys;
use crate::page::{Expect, OpenPage, PageHeader, PageKind, PageRef, item_space};
use crate::pager::{Allocator, Pager};
use crate::record::{MAX_TREE_DEPTH, ObjectKind};
use crate::superblock::Root;

/// Bytes of an index item: low hash ‖ reference.
const INDEX_ITEM: usize = 8 + 40;
/// Bytes of an entry before its name.
const ENTRY_HEAD: usize = 18;
pub const MAX_NAME: usize = 255;

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub hash: u64,
    pub id: u64,
    pub kind: ObjectKind,
    pub name: Vec<u8>,
}

impl DirEntry {
    fn len(&self) -> usize {
        ENTRY_HEAD + self.name.len()
    }

    fn order(&self) -> (u64, &[u8]) {
        (self.hash, &self.name)
    }
}

/// Whether `name` may name an entry: 1 to 255 bytes, no `/` or NUL, not
/// `.` or `..`.
pub fn valid_name(name: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Null,
    Disk(PageRef),
    Mem(usize),
}

#[derive(Debug)]
enum Body {
    Leaf(Vec<DirEntry>),
    Index(Vec<(u64, Link)>),
}

#[derive(Debug)]
struct Node {
    body: Body,
    reference: Option<PageRef>,
    dirty: bool,
}

/// The entry tree of one directory.
#[derive(Debug)]
pub struct Directory {
    id: u64,
    root: Link,
    depth: u8,
    nodes: Vec<Node>,
}

/// A node's place: its id, and the (node, slot) path from the root.
type Path = Vec<(usize, usize)>;

/// The hashes a subtree holds: `[low, high)`, `high` up to 2⁶⁴.
type Range = (u64, u128);
const ALL: Range = (0, 1 << 64);

/// The range of child `slot` of an index whose own range is `range`. An
/// index's first low hash is 0 and stands for the start of its range.
fn child_range(items: &[(u64, Link)], slot: usize, range: Range) -> Range {
    let low = if slot == 0 { range.0 } else { items[slot].0 };
    let high = items.get(slot + 1).map_or(range.1, |(l, _)| u128::from(*l));
    (low, high)
}

impl Directory {
    pub fn open(id: u64, root: Root) -> Self {
        Self {
            id,
            root: if root.reference.is_null() {
                Link::Null
            } else {
                Link::Disk(root.reference)
            },
            depth: root.depth,
            nodes: Vec::new(),
        }
    }

    pub fn empty(id: u64) -> Self {
        Self::open(
            id,
            Root {
                reference: PageRef::NULL,
                depth: 0,
            },
        )
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    fn load(
        &mut self,
        pager: &Pager<'_>,
        link: Link,
        level: u8,
        range: Range,
    ) -> Result<Option<usize>, MetaError> {
        let reference = match link {
            Link::Null => return Ok(None),
            Link::Mem(id) => return Ok(Some(id)),
            Link::Disk(reference) => reference,
        };
        let expect = Expect {
            kind: if level == 0 {
                PageKind::DirLeaf
            } else {
                PageKind::DirIndex
            },
            owner: self.id,
            level: Some(level),
        };
        let page = pager.read(&reference, expect)?;
        let body = if level == 0 {
            Body::Leaf(decode_leaf(pager.keys, self.id, &page, range)?)
        } else {
            Body::Index(decode_index(&page, range)?)
        };
        self.nodes.push(Node {
            body,
            reference: Some(reference),
            dirty: false,
        });
        Ok(Some(self.nodes.len() - 1))
    }

    /// Walks to the leaf that holds `hash`, loading pages on the way.
    /// `None` for an empty directory.
    fn descend(
        &mut self,
        pager: &Pager<'_>,
        hash: u64,
    ) -> Result<Option<(usize, Path)>, MetaError> {
        let Some(mut id) = self.load(pager, self.root, self.depth, ALL)? else {
            return Ok(None);
        };
        self.root = Link::Mem(id);
        let mut path = Vec::new();
        let mut level = self.depth;
        let mut range = ALL;
        while level > 0 {
            let Body::Index(items) = &self.nodes[id].body else {
                unreachable!("levels above 0 are index nodes");
            };
            let slot = items.partition_point(|(low, _)| *low <= hash) - 1;
            range = child_range(items, slot, range);
            let link = items[slot].1;
            let child = self
                .load(pager, link, level - 1, range)?
                .expect("index children are not null");
            if let Body::Index(items) = &mut self.nodes[id].body {
                items[slot].1 = Link::Mem(child);
            }
            path.push((id, slot));
            id = child;
            level -= 1;
        }
        Ok(Some((id, path)))
    }

    pub fn lookup(
        &mut self,
        pager: &Pager<'_>,
        name: &[u8],
    ) -> Result<Option<DirEntry>, MetaError> {
        let hash = pager.keys.entry_hash(self.id, name);
        let Some((leaf, _)) = self.descend(pager, hash)? else {
            return Ok(None);
        };
        let Body::Leaf(entries) = &self.nodes[leaf].body else {
            unreachable!("level 0 is a leaf");
        };
        Ok(entries
            .iter()
            .find(|e| e.hash == hash && e.name == name)
            .cloned())
    }

    /// Adds an entry; the caller has checked that the name is free.
    pub fn insert(
        &mut self,
        pager: &Pager<'_>,
        id: u64,
        kind: ObjectKind,
        name: &[u8],
    ) -> Result<DirEntry, MetaError> {
        debug_assert!(valid_name(name));
        let entry = DirEntry {
            hash: pager.keys.entry_hash(self.id, name),
            id,
            kind,
            name: name.to_vec(),
        };
        let (leaf, path) = match self.descend(pager, entry.hash)? {
            Some(found) => found,
            None => {
                self.nodes.push(Node {
                    body: Body::Leaf(Vec::new()),
                    reference: None,
                    dirty: true,
                });
                let id = self.nodes.len() - 1;
                self.root = Link::Mem(id);
                self.depth = 0;
                (id, Vec::new())
            }
        };
        self.mark_dirty(leaf, &path);
        let Body::Leaf(entries) = &mut self.nodes[leaf].body else {
            unreachable!("level 0 is a leaf");
        };
        let at = entries.partition_point(|e| e.order() < entry.order());
        entries.insert(at, entry.clone());
        self.split_if_full(pager, leaf, path)?;
        Ok(entry)
    }

    fn mark_dirty(&mut self, node: usize, path: &Path) {
        self.nodes[node].dirty = true;
        for (id, _) in path {
            self.nodes[*id].dirty = true;
        }
    }

    /// Splits an overfull node, then its parent if that overflows, up to
    /// a new root level.
    fn split_if_full(
        &mut self,
        pager: &Pager<'_>,
        mut node: usize,
        mut path: Path,
    ) -> Result<(), MetaError> {
        let space = item_space(pager.keys);
        loop {
            let split = match &mut self.nodes[node].body {
                Body::Leaf(entries) => {
                    let used: usize = entries.iter().map(DirEntry::len).sum();
                    if used <= space {
                        return Ok(());
                    }
                    let at = leaf_split_point(entries).ok_or_else(|| {
                        MetaError::TooLarge(
                            "one directory leaf cannot hold all names of one hash".into(),
                        )
                    })?;
                    let right = entries.split_off(at);
                    (right[0].hash, Body::Leaf(right))
                }
                Body::Index(items) => {
                    if items.len() * INDEX_ITEM <= space {
                        return Ok(());
                    }
                    let mut right = items.split_off(items.len() / 2);
                    let low = std::mem::replace(&mut right[0].0, 0);
                    (low, Body::Index(right))
                }
            };
            let (low, body) = split;
            self.nodes.push(Node {
                body,
                reference: None,
                dirty: true,
            });
            let right = self.nodes.len() - 1;
            match path.pop() {
                Some((parent, slot)) => {
                    if let Body::Index(items) = &mut self.nodes[parent].body {
                        items.insert(slot + 1, (low, Link::Mem(right)));
                    }
                    node = parent;
                }
                None => {
                    if self.depth >= MAX_TREE_DEPTH {
                        return Err(MetaError::TooLarge(
                            "directory tree deeper than 6 levels".into(),
                        ));
                    }
                    self.nodes.push(Node {
                        body: Body::Index(vec![(0, Link::Mem(node)), (low, Link::Mem(right))]),
                        reference: None,
                        dirty: true,
                    });
                    self.root = Link::Mem(self.nodes.len() - 1);
                    self.depth += 1;
                    return Ok(());
                }
            }
        }
    }

    /// Removes the entry `name`; returns it, or `None` if there is none.
    pub fn remove(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        name: &[u8],
    ) -> Result<Option<DirEntry>, MetaError> {
        let hash = pager.keys.entry_hash(self.id, name);
        let Some((leaf, mut path)) = self.descend(pager, hash)? else {
            return Ok(None);
        };
        let Body::Leaf(entries) = &mut self.nodes[leaf].body else {
            unreachable!("level 0 is a leaf");
        };
        let Some(at) = entries
            .iter()
            .position(|e| e.hash == hash && e.name == name)
        else {
            return Ok(None);
        };
        let removed = entries.remove(at);
        let mut emptied = entries.is_empty();
        self.mark_dirty(leaf, &path);
        let mut node = leaf;
        // An emptied node leaves its parent; the root leaf or index
        // emptied makes the directory's root null.
        while emptied {
            self.release(alloc, node);
            match path.pop() {
                Some((parent, slot)) => {
                    let Body::Index(items) = &mut self.nodes[parent].body else {
                        unreachable!("parents are index nodes");
                    };
                    items.remove(slot);
                    if let Some(first) = items.first_mut() {
                        first.0 = 0;
                    }
                    emptied = items.is_empty();
                    node = parent;
                }
                None => {
                    self.root = Link::Null;
                    self.depth = 0;
                    emptied = false;
                }
            }
        }
        Ok(Some(removed))
    }

    fn release(&mut self, alloc: &mut Allocator, node: usize) {
        if let Some(reference) = self.nodes[node].reference.take() {
            alloc.release(reference.page().expect("written pages are not null"));
        }
        self.nodes[node].dirty = false;
    }

    /// Entries with a hash greater than `after`, in hash order, until
    /// `limit` entries; a run of equal hashes is never cut (so the last
    /// hash returned is a valid offset to resume from).
    pub fn read_from(
        &mut self,
        pager: &Pager<'_>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>, MetaError> {
        let mut out = Vec::new();
        if let Some(root) = self.load(pager, self.root, self.depth, ALL)? {
            self.root = Link::Mem(root);
            self.collect(pager, root, self.depth, ALL, after, limit, &mut out)?;
        }
        Ok(out)
    }

    /// Appends the entries of loaded node `id` after `after`; true once
    /// `limit` is reached.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &mut self,
        pager: &Pager<'_>,
        id: usize,
        level: u8,
        range: Range,
        after: u64,
        limit: usize,
        out: &mut Vec<DirEntry>,
    ) -> Result<bool, MetaError> {
        let items = match &self.nodes[id].body {
            Body::Leaf(entries) => {
                for e in entries.iter().filter(|e| e.hash > after) {
                    if out.len() >= limit && out.last().is_some_and(|l| l.hash != e.hash) {
                        return Ok(true);
                    }
                    out.push(e.clone());
                }
                return Ok(false);
            }
            Body::Index(items) => items.clone(),
        };
        for slot in 0..items.len() {
            let child_range = child_range(&items, slot, range);
            if child_range.1 <= u128::from(after) + 1 {
                continue;
            }
            let child = self
                .load(pager, items[slot].1, level - 1, child_range)?
                .expect("index children are not null");
            if let Body::Index(items) = &mut self.nodes[id].body {
                items[slot].1 = Link::Mem(child);
            }
            if self.collect(pager, child, level - 1, child_range, after, limit, out)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the directory has no entries.
    pub fn is_empty(&self) -> bool {
        matches!(self.root, Link::Null)
    }

    /// Every page of directory `id`'s tree `root` on the disk, each read
    /// and checked as a lookup checks it, one path in memory at a time:
    /// `visit` gets each page, or the error that stops a subtree.
    pub fn walk_pages(
        pager: &Pager<'_>,
        id: u64,
        root: Root,
        visit: &mut dyn FnMut(Result<u64, MetaError>),
    ) {
        let mut dir = Self::open(id, root);
        let (link, depth) = (dir.root, dir.depth);
        dir.walk_link(pager, link, depth, ALL, visit);
    }

    fn walk_link(
        &mut self,
        pager: &Pager<'_>,
        link: Link,
        level: u8,
        range: Range,
        visit: &mut dyn FnMut(Result<u64, MetaError>),
    ) {
        let node = match self.load(pager, link, level, range) {
            Ok(Some(node)) => node,
            Ok(None) => return,
            Err(e) => return visit(Err(e)),
        };
        if let Some(page) = self.nodes[node].reference.and_then(|r| r.page()) {
            visit(Ok(page));
        }
        if let Body::Index(items) = &self.nodes[node].body {
            let items = items.clone();
            for slot in 0..items.len() {
                let child_range = child_range(&items, slot, range);
                self.walk_link(pager, items[slot].1, level - 1, child_range, visit);
            }
        }
        self.nodes.truncate(node);
    }

    /// Releases every page of the tree (the directory was removed).
    pub fn release_all(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
    ) -> Result<(), MetaError> {
        let root = self.root;
        self.release_subtree(pager, alloc, root, self.depth, ALL)?;
        self.root = Link::Null;
        self.depth = 0;
        Ok(())
    }

    fn release_subtree(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        link: Link,
        level: u8,
        range: Range,
    ) -> Result<(), MetaError> {
        let Some(id) = self.load(pager, link, level, range)? else {
            return Ok(());
        };
        if let Body::Index(items) = &self.nodes[id].body {
            let items = items.clone();
            for slot in 0..items.len() {
                let child_range = child_range(&items, slot, range);
                self.release_subtree(pager, alloc, items[slot].1, level - 1, child_range)?;
            }
        }
        self.release(alloc, id);
        Ok(())
    }

    /// Writes dirty pages (children first) and returns the new root.
    pub fn flush(&mut self, pager: &Pager<'_>, alloc: &mut Allocator) -> Result<Root, MetaError> {
        let root = self.root;
        let reference = self.flush_link(pager, alloc, root, self.depth)?;
        Ok(Root {
            reference,
            depth: if reference.is_null() { 0 } else { self.depth },
        })
    }

    fn flush_link(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        link: Link,
        level: u8,
    ) -> Result<PageRef, MetaError> {
        let id = match link {
            Link::Null => return Ok(PageRef::NULL),
            Link::Disk(reference) => return Ok(reference),
            Link::Mem(id) => id,
        };
        if !self.nodes[id].dirty {
            return Ok(self.nodes[id]
                .reference
                .expect("a clean node was read or written"));
        }
        let mut bytes = Vec::with_capacity(item_space(pager.keys));
        let count = match &self.nodes[id].body {
            Body::Leaf(entries) => {
                for e in entries {
                    bytes
                        .put_u64(e.hash)
                        .put_u64(e.id)
                        .put_u8(e.kind.id())
                        .put_u8(u8::try_from(e.name.len()).expect("names ≤ 255 bytes"))
                        .put(&e.name);
                }
                entries.len()
            }
            Body::Index(items) => {
                let items = items.clone();
                for (low, child) in &items {
                    let reference = self.flush_link(pager, alloc, *child, level - 1)?;
                    bytes.put_u64(*low).put(&reference.encode());
                }
                items.len()
            }
        };
        if let Some(old) = self.nodes[id].reference.take() {
            alloc.release(old.page().expect("written pages are not null"));
        }
        let number = alloc.allocate();
        let header = PageHeader {
            kind: if level == 0 {
                PageKind::DirLeaf
            } else {
                PageKind::DirIndex
            },
            level,
            count: u16::try_from(count).expect("items per page fit u16"),
            owner: self.id,
        };
        let reference = pager.write(number, &header, &bytes)?;
        self.nodes[id].reference = Some(reference);
        self.nodes[id].dirty = false;
        Ok(reference)
    }
}

/// Where to split an overfull leaf: the hash boundary nearest the middle
/// by bytes. `None` when every entry has one hash.
fn leaf_split_point(entries: &[DirEntry]) -> Option<usize> {
    let total: usize = entries.iter().map(DirEntry::len).sum();
    let mut before = 0;
    let mut best: Option<(usize, usize)> = None;
    for i in 1..entries.len() {
        before += entries[i - 1].len();
        if entries[i - 1].hash == entries[i].hash {
            continue;
        }
        let distance = before.abs_diff(total - before);
        if best.is_none_or(|(_, d)| distance < d) {
            best = Some((i, distance));
        }
    }
    best.map(|(i, _)| i)
}

fn decode_leaf(
    keys: &MetaKeys,
    dir: u64,
    page: &OpenPage,
    range: Range,
) -> Result<Vec<DirEntry>, MetaError> {
    let mut r = Reader::new(&page.items);
    let mut entries: Vec<DirEntry> = Vec::with_capacity(usize::from(page.header.count));
    for _ in 0..page.header.count {
        let bad = || page.corrupt("a directory entry overflows the page");
        let hash = r.u64().ok_or_else(bad)?;
        let id = r.u64().ok_or_else(bad)?;
        let kind = r.u8().ok_or_else(bad)?;
        let len = r.u8().ok_or_else(bad)?;
        let name = r.take(usize::from(len)).ok_or_else(bad)?.to_vec();
        let kind =
            ObjectKind::from_id(kind).ok_or_else(|| page.corrupt("entry of unknown kind"))?;
        if !valid_name(&name) || id < 1 {
            return Err(page.corrupt("invalid entry name or object id"));
        }
        if keys.entry_hash(dir, &name) != hash {
            return Err(page.corrupt("an entry's hash does not match its name"));
        }
        if hash < range.0 || u128::from(hash) >= range.1 {
            return Err(page.corrupt("an entry outside its leaf's hash range"));
        }
        let entry = DirEntry {
            hash,
            id,
            kind,
            name,
        };
        if entries
            .last()
            .is_some_and(|last| last.order() >= entry.order())
        {
            return Err(page.corrupt("entries out of order or repeated"));
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(page.corrupt("an empty directory leaf"));
    }
    page.check_zero_after(r.position())?;
    Ok(entries)
}

fn decode_index(page: &OpenPage, range: Range) -> Result<Vec<(u64, Link)>, MetaError> {
    let mut r = Reader::new(&page.items);
    let mut items: Vec<(u64, Link)> = Vec::with_capacity(usize::from(page.header.count));
    for _ in 0..page.header.count {
        let bad = || page.corrupt("an index item overflows the page");
        let low = r.u64().ok_or_else(bad)?;
        let reference = PageRef::read(&mut r).ok_or_else(bad)?;
        if reference.is_null() {
            return Err(page.corrupt("a null child in a directory index"));
        }
        let in_order = match items.last() {
            None => low == 0,
            Some((last, _)) => low > *last && low > range.0 && u128::from(low) < range.1,
        };
        if !in_order {
            return Err(page.corrupt("index low hashes out of order or range"));
        }
        items.push((low, Link::Disk(reference)));
    }
    if items.is_empty() {
        return Err(page.corrupt("an empty directory index"));
    }
    page.check_zero_after(r.position())?;
    Ok(items)
}
