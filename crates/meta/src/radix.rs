//! Radix trees of sealed pages, by a 64-bit key: the object table (by
//! object id, §16.7) and each regular file's block map (by block number,
//! §16.9). Leaves hold a fixed number of fixed-size items, index pages 101
//! references; a null reference is a range of empty items; the tree gains
//! a root level when a key does not fit.
//!
//! Pages are read on first use and kept decoded; a change marks its node
//! and the nodes above it dirty, and [`Radix::flush`] writes every dirty
//! node to a new page, bottom up (copy-on-write: the pages read stay as
//! they were until the checkpoint that no longer needs them).

use atrest_core::ContentAlgorithm;

use crate::bytes::{Put, Reader};
use crate::error::MetaError;
use crate::page::{Expect, PageHeader, PageKind, PageRef, REF_LEN, item_space};
use crate::pager::{Allocator, Pager};
use crate::superblock::Root;

/// References per index page.
pub const FANOUT: u64 = 101;

/// An item of a radix tree's leaves.
pub trait RadixItem: Clone + PartialEq + std::fmt::Debug {
    const LEAF: PageKind;
    const INDEX: PageKind;
    /// Items per leaf for `algorithm`.
    fn per_leaf(algorithm: ContentAlgorithm) -> u64;
    fn empty() -> Self;
    fn is_empty(&self) -> bool;
    fn encode(&self, algorithm: ContentAlgorithm, out: &mut Vec<u8>);
    fn item_len(algorithm: ContentAlgorithm) -> usize;
    fn decode(algorithm: ContentAlgorithm, bytes: &[u8]) -> Result<Self, String>;
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Null,
    Disk(PageRef),
    Mem(usize),
}

#[derive(Debug)]
enum Body<I> {
    Leaf(Vec<I>),
    Index(Vec<Link>),
}

#[derive(Debug)]
struct Node<I> {
    body: Body<I>,
    /// The page it was read from or last written to; `None` when new.
    reference: Option<PageRef>,
    dirty: bool,
}

/// What [`Radix::walk`] shows, in tree order.
pub enum Visit<'a, I> {
    /// A page of the tree, read and authenticated.
    Page(u64),
    /// A non-empty item of a leaf.
    Item(&'a I),
    /// A page that failed: nothing under it is shown.
    Failed(MetaError),
}

/// One radix tree: the object table, or one file's block map.
#[derive(Debug)]
pub struct Radix<I> {
    owner: u64,
    algorithm: ContentAlgorithm,
    root: Link,
    depth: u8,
    max_depth: u8,
    nodes: Vec<Node<I>>,
}

impl<I: RadixItem> Radix<I> {
    /// The tree whose root a superblock or a record names. `owner` goes
    /// into every page's AAD (0 for the object table, the file's object id
    /// for a block map).
    pub fn open(owner: u64, algorithm: ContentAlgorithm, root: Root, max_depth: u8) -> Self {
        Self {
            owner,
            algorithm,
            root: if root.reference.is_null() {
                Link::Null
            } else {
                Link::Disk(root.reference)
            },
            depth: root.depth,
            max_depth,
            nodes: Vec::new(),
        }
    }

    pub fn empty(owner: u64, algorithm: ContentAlgorithm, max_depth: u8) -> Self {
        Self::open(
            owner,
            algorithm,
            Root {
                reference: PageRef::NULL,
                depth: 0,
            },
            max_depth,
        )
    }

    /// Reads the whole tree `root` names from the disk, page by page,
    /// each checked as a lookup checks it, keeping no more than one path
    /// of it in memory: `fsck`'s account of the pages in use (§16.18).
    pub fn walk(
        pager: &Pager<'_>,
        owner: u64,
        algorithm: ContentAlgorithm,
        root: Root,
        visit: &mut dyn FnMut(Visit<'_, I>),
    ) {
        let mut tree = Self::open(owner, algorithm, root, root.depth);
        let (link, depth) = (tree.root, tree.depth);
        tree.walk_link(pager, link, depth, visit);
    }

    fn walk_link(
        &mut self,
        pager: &Pager<'_>,
        link: Link,
        level: u8,
        visit: &mut dyn FnMut(Visit<'_, I>),
    ) {
        let id = match self.load(pager, link, level) {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(e) => return visit(Visit::Failed(e)),
        };
        if let Some(page) = self.nodes[id].reference.and_then(|r| r.page()) {
            visit(Visit::Page(page));
        }
        match &self.nodes[id].body {
            Body::Leaf(items) => {
                for item in items.iter().filter(|i| !i.is_empty()) {
                    visit(Visit::Item(item));
                }
            }
            Body::Index(children) => {
                for child in children.clone() {
                    self.walk_link(pager, child, level - 1, visit);
                }
            }
        }
        // Its children were dropped as they were done; now itself.
        self.nodes.truncate(id);
    }

    /// Keys below this fit the tree at its current depth.
    pub fn capacity(&self) -> u64 {
        span(I::per_leaf(self.algorithm), self.depth)
    }

    fn expect(&self, level: u8) -> Expect {
        Expect {
            kind: if level == 0 { I::LEAF } else { I::INDEX },
            owner: self.owner,
            level: Some(level),
        }
    }

    /// Turns a disk link into a node in memory.
    fn load(
        &mut self,
        pager: &Pager<'_>,
        link: Link,
        level: u8,
    ) -> Result<Option<usize>, MetaError> {
        let reference = match link {
            Link::Null => return Ok(None),
            Link::Mem(id) => return Ok(Some(id)),
            Link::Disk(reference) => reference,
        };
        let page = pager.read(&reference, self.expect(level))?;
        let count = usize::from(page.header.count);
        let mut r = Reader::new(&page.items);
        let body = if level == 0 {
            let per_leaf = I::per_leaf(self.algorithm);
            if count as u64 != per_leaf {
                return Err(page.corrupt(format!("leaf of {count} items, not {per_leaf}")));
            }
            let len = I::item_len(self.algorithm);
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let bytes = r
                    .take(len)
                    .ok_or_else(|| page.corrupt("items overflow the page"))?;
                items.push(I::decode(self.algorithm, bytes).map_err(|e| page.corrupt(e))?);
            }
            Body::Leaf(items)
        } else {
            if count as u64 != FANOUT {
                return Err(page.corrupt(format!("index of {count} references, not {FANOUT}")));
            }
            let mut children = Vec::with_capacity(count);
            for _ in 0..count {
                let reference =
                    PageRef::read(&mut r).ok_or_else(|| page.corrupt("bad reference"))?;
                children.push(if reference.is_null() {
                    Link::Null
                } else {
                    Link::Disk(reference)
                });
            }
            Body::Index(children)
        };
        page.check_zero_after(r.position())?;
        self.nodes.push(Node {
            body,
            reference: Some(reference),
            dirty: false,
        });
        Ok(Some(self.nodes.len() - 1))
    }

    fn new_node(&mut self, level: u8) -> usize {
        let body = if level == 0 {
            Body::Leaf(vec![I::empty(); I::per_leaf(self.algorithm) as usize])
        } else {
            Body::Index(vec![Link::Null; FANOUT as usize])
        };
        self.nodes.push(Node {
            body,
            reference: None,
            dirty: true,
        });
        self.nodes.len() - 1
    }

    /// The item at `key` (empty where nothing was ever set).
    pub fn get(&mut self, pager: &Pager<'_>, key: u64) -> Result<I, MetaError> {
        if key >= self.capacity() {
            return Ok(I::empty());
        }
        let per_leaf = I::per_leaf(self.algorithm);
        let mut level = self.depth;
        let mut rest = key;
        let Some(mut id) = self.load(pager, self.root, level)? else {
            return Ok(I::empty());
        };
        self.root = Link::Mem(id);
        while level > 0 {
            let child_span = span(per_leaf, level - 1);
            let slot = (rest / child_span) as usize;
            rest %= child_span;
            let Body::Index(children) = &self.nodes[id].body else {
                unreachable!("levels above 0 are index nodes");
            };
            let link = children[slot];
            let Some(child) = self.load(pager, link, level - 1)? else {
                return Ok(I::empty());
            };
            if let Body::Index(children) = &mut self.nodes[id].body {
                children[slot] = Link::Mem(child);
            }
            id = child;
            level -= 1;
        }
        let Body::Leaf(items) = &self.nodes[id].body else {
            unreachable!("level 0 is a leaf");
        };
        Ok(items[rest as usize].clone())
    }

    /// Sets the item at `key`, growing the tree if needed.
    pub fn set(&mut self, pager: &Pager<'_>, key: u64, item: I) -> Result<(), MetaError> {
        if key >= self.capacity() && item.is_empty() {
            return Ok(());
        }
        while key >= self.capacity() {
            if self.depth >= self.max_depth {
                return Err(MetaError::TooLarge(format!(
                    "key {key} beyond the deepest tree"
                )));
            }
            let root = self.new_node(self.depth + 1);
            if let Body::Index(children) = &mut self.nodes[root].body {
                children[0] = self.root;
            }
            self.root = Link::Mem(root);
            self.depth += 1;
        }
        let per_leaf = I::per_leaf(self.algorithm);
        let mut level = self.depth;
        let mut rest = key;
        let id = match self.load(pager, self.root, level)? {
            Some(id) => id,
            None => self.new_node(level),
        };
        self.root = Link::Mem(id);
        let mut id = id;
        self.nodes[id].dirty = true;
        while level > 0 {
            let child_span = span(per_leaf, level - 1);
            let slot = (rest / child_span) as usize;
            rest %= child_span;
            let Body::Index(children) = &self.nodes[id].body else {
                unreachable!("levels above 0 are index nodes");
            };
            let link = children[slot];
            let child = match self.load(pager, link, level - 1)? {
                Some(child) => child,
                None => self.new_node(level - 1),
            };
            if let Body::Index(children) = &mut self.nodes[id].body {
                children[slot] = Link::Mem(child);
            }
            id = child;
            self.nodes[id].dirty = true;
            level -= 1;
        }
        let Body::Leaf(items) = &mut self.nodes[id].body else {
            unreachable!("level 0 is a leaf");
        };
        items[rest as usize] = item;
        Ok(())
    }

    /// The page on the path to `key` that fails authentication, below
    /// the root: the nodes from the root to its parent, and its slot in the
    /// parent. An error if the path to `key` reads without failing, if the
    /// root fails, or if anything other than an authentication failure
    /// stops it.
    fn failed_link(
        &mut self,
        pager: &Pager<'_>,
        key: u64,
    ) -> Result<(Vec<usize>, usize), MetaError> {
        let nothing_fails =
            || MetaError::Inconsistent(format!("the path to item {key} authenticates"));
        if key >= self.capacity() {
            return Err(nothing_fails());
        }
        let per_leaf = I::per_leaf(self.algorithm);
        let mut level = self.depth;
        let mut rest = key;
        let Some(mut id) = self.load(pager, self.root, level)? else {
            return Err(nothing_fails());
        };
        self.root = Link::Mem(id);
        let mut path = vec![id];
        while level > 0 {
            let child_span = span(per_leaf, level - 1);
            let slot = (rest / child_span) as usize;
            rest %= child_span;
            let Body::Index(children) = &self.nodes[id].body else {
                unreachable!("levels above 0 are index nodes");
            };
            let child = match self.load(pager, children[slot], level - 1) {
                Ok(Some(child)) => child,
                Ok(None) => return Err(nothing_fails()),
                Err(e) if e.is_auth() => return Ok((path, slot)),
                Err(e) => return Err(e),
            };
            if let Body::Index(children) = &mut self.nodes[id].body {
                children[slot] = Link::Mem(child);
            }
            id = child;
            path.push(id);
            level -= 1;
        }
        Err(nothing_fails())
    }

    /// Whether [`Self::drop_failed`] would drop a page for `key`.
    pub fn has_failed(&mut self, pager: &Pager<'_>, key: u64) -> bool {
        self.failed_link(pager, key).is_ok()
    }

    /// The page on the path to `key` that fails authentication (below the
    /// root, which is never dropped) becomes a null reference, a range of
    /// empty items, and its page is released: what `fsck --repair` does
    /// to records no key can read any more (docs/format.md §16.18).
    pub fn drop_failed(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        key: u64,
    ) -> Result<(), MetaError> {
        let (path, slot) = self.failed_link(pager, key)?;
        let parent = *path.last().expect("the root at least");
        let Body::Index(children) = &mut self.nodes[parent].body else {
            unreachable!("parents are index nodes");
        };
        if let Link::Disk(reference) = children[slot]
            && let Some(page) = reference.page()
        {
            alloc.release(page);
        }
        children[slot] = Link::Null;
        // The nodes that hold the new reference, to be written again.
        for node in path {
            self.nodes[node].dirty = true;
        }
        Ok(())
    }

    /// Empties every key from `from` on, releasing the pages of subtrees
    /// that held only such keys (a shrinking truncate; 0 frees the tree).
    pub fn clear_from(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        from: u64,
    ) -> Result<(), MetaError> {
        let root = self.root;
        let depth = self.depth;
        self.root = self.clear_link(pager, alloc, root, depth, 0, from)?;
        Ok(())
    }

    /// Clears keys ≥ `from` in the subtree at `link` covering keys
    /// `[start, start + span)`; returns the link to keep in its place.
    fn clear_link(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        link: Link,
        level: u8,
        start: u64,
        from: u64,
    ) -> Result<Link, MetaError> {
        let per_leaf = I::per_leaf(self.algorithm);
        let end = start.saturating_add(span(per_leaf, level));
        if end <= from || matches!(link, Link::Null) {
            return Ok(link);
        }
        if start >= from {
            self.release_subtree(pager, alloc, link, level)?;
            return Ok(Link::Null);
        }
        let id = self.load(pager, link, level)?.expect("not null");
        self.nodes[id].dirty = true;
        if level == 0 {
            if let Body::Leaf(items) = &mut self.nodes[id].body {
                for item in &mut items[(from - start) as usize..] {
                    *item = I::empty();
                }
            }
            return Ok(Link::Mem(id));
        }
        let child_span = span(per_leaf, level - 1);
        for slot in 0..FANOUT as usize {
            let child_start = start + slot as u64 * child_span;
            let Body::Index(children) = &self.nodes[id].body else {
                unreachable!()
            };
            let child = children[slot];
            let kept = self.clear_link(pager, alloc, child, level - 1, child_start, from)?;
            if let Body::Index(children) = &mut self.nodes[id].body {
                children[slot] = kept;
            }
        }
        Ok(Link::Mem(id))
    }

    /// Releases every page under `link`, reading disk pages to find them.
    fn release_subtree(
        &mut self,
        pager: &Pager<'_>,
        alloc: &mut Allocator,
        link: Link,
        level: u8,
    ) -> Result<(), MetaError> {
        let Some(id) = self.load(pager, link, level)? else {
            return Ok(());
        };
        if let Body::Index(children) = &self.nodes[id].body {
            let children = children.clone();
            for child in children {
                self.release_subtree(pager, alloc, child, level - 1)?;
            }
        }
        if let Some(reference) = self.nodes[id].reference.take() {
            alloc.release(reference.page().expect("written pages are not null"));
        }
        // The node stays in the arena, unreachable.
        self.nodes[id].dirty = false;
        Ok(())
    }

    /// Writes every dirty node to a new page (children before parents) and
    /// returns the new root. Empty leaves and indexes become null.
    pub fn flush(&mut self, pager: &Pager<'_>, alloc: &mut Allocator) -> Result<Root, MetaError> {
        let root = self.root;
        let reference = self.flush_link(pager, alloc, root, self.depth)?;
        self.root = match (reference.is_null(), root) {
            (true, _) => Link::Null,
            (false, Link::Mem(id)) => Link::Mem(id),
            (false, other) => other,
        };
        Ok(Root {
            reference,
            depth: self.depth,
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
        let mut items = Vec::with_capacity(item_space(pager.keys));
        let (count, empty) = match &self.nodes[id].body {
            Body::Leaf(leaf) => {
                for item in leaf {
                    item.encode(self.algorithm, &mut items);
                }
                (leaf.len(), leaf.iter().all(I::is_empty))
            }
            Body::Index(children) => {
                let children = children.clone();
                let mut all_null = true;
                for (slot, child) in children.into_iter().enumerate() {
                    let reference = self.flush_link(pager, alloc, child, level - 1)?;
                    all_null &= reference.is_null();
                    items.put(&reference.encode());
                    if reference.is_null()
                        && let Body::Index(c) = &mut self.nodes[id].body
                    {
                        c[slot] = Link::Null;
                    }
                }
                (FANOUT as usize, all_null)
            }
        };
        if let Some(old) = self.nodes[id].reference.take() {
            alloc.release(old.page().expect("written pages are not null"));
        }
        self.nodes[id].dirty = false;
        if empty {
            return Ok(PageRef::NULL);
        }
        let number = alloc.allocate();
        let header = PageHeader {
            kind: if level == 0 { I::LEAF } else { I::INDEX },
            level,
            count: u16::try_from(count).expect("items per page fit u16"),
            owner: self.owner,
        };
        let reference = pager.write(number, &header, &items)?;
        self.nodes[id].reference = Some(reference);
        Ok(reference)
    }
}

/// Keys under a subtree of `level`: `per_leaf · 101^level`, saturating.
fn span(per_leaf: u64, level: u8) -> u64 {
    (0..level).fold(per_leaf, |s, _| s.saturating_mul(FANOUT))
}

// REF_LEN is what each index item takes.
const _: () = assert!(REF_LEN == 40);
