//! Extended attributes (docs/format.md §16.10): only the `user.`
//! namespace, kept as a chain of xattr pages (kind 7) that the object's
//! record references, values over 1,024 bytes in blob pages of their own.
//!
//! Setting or removing one is a `META` record (ops 10 and 11, §16.12)
//! whose extra bytes state it, logged before it changes anything and
//! replayed by recovery; the chain is rewritten by the next checkpoint.
//! An object's attributes are read whole on first use (every page
//! authenticated on the way) and kept in memory until that checkpoint.

use std::collections::BTreeMap;

use crate::bytes::{Put, Reader};
use crate::change::{self, Change};
use crate::error::MetaError;
use crate::page::{Expect, PageHeader, PageKind, PageRef, REF_LEN, item_space};
use crate::pager::{Allocator, Pager};
use crate::record::Timestamp;
use crate::store::{FsError, Store, read_blob, write_blob};

/// The only namespace a vault stores (as format 1, §9).
pub const NAMESPACE: &[u8] = b"user.";
/// Longest name, `user.` included (the kernel's `XATTR_NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest value (the kernel's `XATTR_SIZE_MAX`).
pub const MAX_VALUE: usize = 65_536;
/// Longest value kept inside its xattr page; longer ones go to a blob.
pub const INLINE_VALUE: usize = 1_024;
/// Most bytes `listxattr` returns for one object (names, each with its
/// NUL): the kernel's `XATTR_LIST_MAX`, so a list always fits its buffer.
pub const MAX_LIST: usize = 65_536;
/// Most name and value bytes of one object's attributes together, so
/// that reading one object's attributes stays bounded in memory.
pub const MAX_TOTAL: usize = 1 << 20;

/// Attributes by name.
type Items = BTreeMap<Vec<u8>, Vec<u8>>;

/// Bytes of an item before its name: name length, value length, form.
const ITEM_HEADER: usize = 6;
const FORM_INLINE: u8 = 0;
const FORM_BLOB: u8 = 1;

/// What `setxattr` does with an existing or missing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Any,
    /// `XATTR_CREATE`: `Exists` if the name is there.
    Create,
    /// `XATTR_REPLACE`: `NoData` if it is not.
    Replace,
}

/// One object's attributes in memory, and the pages of its durable
/// chain (xattr and value blob pages), released when it is rewritten.
#[derive(Debug, Clone, Default)]
pub(crate) struct Xattrs {
    items: Items,
    pages: Vec<u64>,
    dirty: bool,
}

impl Xattrs {
    fn list_len(&self) -> usize {
        self.items.keys().map(|n| n.len() + 1).sum()
    }

    fn total(&self) -> usize {
        self.items.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

/// A name a vault can hold: in `user.`, with something after it, no
/// NUL, at most 255 bytes.
pub fn valid_name(name: &[u8]) -> bool {
    name.len() > NAMESPACE.len()
        && name.len() <= MAX_NAME
        && name.starts_with(NAMESPACE)
        && !name.contains(&0)
}

fn check_name(name: &[u8]) -> Result<(), FsError> {
    if !name.starts_with(NAMESPACE) {
        return Err(FsError::Unsupported("only user. attributes are stored"));
    }
    if name.len() > MAX_NAME {
        return Err(FsError::Range);
    }
    if !valid_name(name) {
        return Err(FsError::Invalid(
            "an attribute name must not be empty or hold NUL",
        ));
    }
    Ok(())
}

/// The setting or removal a `META` record of op 10 or 11 states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XattrChange {
    Set { name: Vec<u8>, value: Vec<u8> },
    Remove { name: Vec<u8> },
}

impl XattrChange {
    /// The record's extra bytes: `n ‖ name ‖ v (u32be) ‖ value` or
    /// `n ‖ name`.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Set { name, value } => {
                out.put_u8(name.len() as u8)
                    .put(name)
                    .put_u32(value.len() as u32)
                    .put(value);
            }
            Self::Remove { name } => {
                out.put_u8(name.len() as u8).put(name);
            }
        }
        out
    }

    /// Decodes the extra bytes of a `META` record of `op`; `Err` says why
    /// they are not one.
    pub(crate) fn decode(op: u8, extra: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(extra);
        let n = r.u8().ok_or("short xattr change")?;
        let name = r.take(usize::from(n)).ok_or("short xattr name")?.to_vec();
        if !valid_name(&name) {
            return Err("an xattr name outside user. or invalid".into());
        }
        let change = match op {
            change::op::SETXATTR => {
                let v = r.u32().ok_or("short xattr value length")? as usize;
                if v > MAX_VALUE {
                    return Err(format!("an xattr value of {v} bytes"));
                }
                let value = r.take(v).ok_or("short xattr value")?.to_vec();
                Self::Set { name, value }
            }
            change::op::REMOVEXATTR => Self::Remove { name },
            _ => return Err(format!("op {op} is not an xattr op")),
        };
        if !r.remaining().is_empty() {
            return Err("bytes after an xattr change".into());
        }
        Ok(change)
    }
}

fn xattr_expect(owner: u64) -> Expect {
    Expect {
        kind: PageKind::Xattr,
        owner,
        level: Some(0),
    }
}

/// Reads the chain of object `owner` from `first`: its attributes and
/// every page it uses (xattr pages and value blobs). Each page is
/// authenticated through its reference; names must be valid and strictly
/// ascending across the chain, values in their canonical form.
pub(crate) fn read_chain(
    pager: &Pager<'_>,
    owner: u64,
    first: PageRef,
) -> Result<(Items, Vec<u64>), MetaError> {
    let mut items = BTreeMap::new();
    let mut pages = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let mut reference = first;
    while let Some(number) = reference.page() {
        let page = pager.read(&reference, xattr_expect(owner))?;
        pages.push(number);
        let mut r = Reader::new(&page.items);
        let next = PageRef::read(&mut r).ok_or_else(|| page.corrupt("bad next reference"))?;
        if page.header.count == 0 {
            return Err(page.corrupt("an xattr page without items"));
        }
        for _ in 0..page.header.count {
            let bad = |why: &str| page.corrupt(format!("xattr item: {why}"));
            let n = usize::from(r.u8().ok_or_else(|| bad("short"))?);
            let v = r.u32().ok_or_else(|| bad("short"))? as usize;
            let form = r.u8().ok_or_else(|| bad("short"))?;
            let name = r.take(n).ok_or_else(|| bad("name past the page"))?.to_vec();
            if !valid_name(&name) {
                return Err(bad("invalid name"));
            }
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(bad("names out of order"));
            }
            if v > MAX_VALUE {
                return Err(bad("value too long"));
            }
            let value = match form {
                FORM_INLINE if v <= INLINE_VALUE => r
                    .take(v)
                    .ok_or_else(|| bad("value past the page"))?
                    .to_vec(),
                FORM_BLOB if v > INLINE_VALUE => {
                    let blob = PageRef::read(&mut r)
                        .filter(|b| !b.is_null())
                        .ok_or_else(|| bad("bad blob reference"))?;
                    let (value, blob_pages) = read_blob(pager, owner, blob, v as u64)?;
                    pages.extend(blob_pages);
                    value
                }
                _ => return Err(bad("value not in its canonical form")),
            };
            last = Some(name.clone());
            items.insert(name, value);
        }
        page.check_zero_after(r.position())?;
        reference = next;
    }
    Ok((items, pages))
}

/// Writes `items` as a chain of xattr pages of `owner`, packed in name
/// order, last page first so each knows the next; returns the first.
fn write_chain(
    pager: &Pager<'_>,
    alloc: &mut Allocator,
    owner: u64,
    items: &Items,
) -> Result<PageRef, MetaError> {
    let capacity = item_space(pager.keys) - REF_LEN;
    // Each page's encoded items and their count.
    let mut pages: Vec<(Vec<u8>, u16)> = Vec::new();
    for (name, value) in items {
        let mut item = Vec::with_capacity(ITEM_HEADER + name.len() + INLINE_VALUE);
        item.put_u8(name.len() as u8).put_u32(value.len() as u32);
        if value.len() <= INLINE_VALUE {
            item.put_u8(FORM_INLINE).put(name).put(value);
        } else {
            let blob = write_blob(pager, alloc, owner, value)?;
            item.put_u8(FORM_BLOB).put(name).put(&blob.encode());
        }
        let fits = pages
            .last()
            .is_some_and(|(bytes, _)| bytes.len() + item.len() <= capacity);
        match pages.last_mut() {
            Some((bytes, count)) if fits => {
                bytes.put(&item);
                *count += 1;
            }
            _ => {
                pages.push((item, 1));
            }
        }
    }
    let mut next = PageRef::NULL;
    for (bytes, count) in pages.into_iter().rev() {
        let mut body = Vec::with_capacity(REF_LEN + bytes.len());
        body.put(&next.encode()).put(&bytes);
        next = pager.write(
            alloc.allocate(),
            &PageHeader {
                kind: PageKind::Xattr,
                level: 0,
                count,
                owner,
            },
            &body,
        )?;
    }
    Ok(next)
}

impl Store {
    /// The attributes of `id`, read on first use.
    fn xattrs_of(&mut self, id: u64) -> Result<&mut Xattrs, FsError> {
        if !self.xattrs.contains_key(&id) {
            let record = self.record(id)?;
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            let (items, pages) = read_chain(&pager, id, record.xattrs)?;
            self.xattrs.insert(
                id,
                Xattrs {
                    items,
                    pages,
                    dirty: false,
                },
            );
        }
        Ok(self.xattrs.get_mut(&id).expect("just loaded"))
    }

    /// The value of attribute `name` of object `id`; `NoData` when it has
    /// none of that name.
    pub fn get_xattr(&mut self, id: u64, name: &[u8]) -> Result<Vec<u8>, FsError> {
        if !name.starts_with(NAMESPACE) || !valid_name(name) {
            // Nothing outside user. is ever stored.
            self.record(id)?;
            return Err(FsError::NoData);
        }
        self.xattrs_of(id)?
            .items
            .get(name)
            .cloned()
            .ok_or(FsError::NoData)
    }

    /// The names of object `id`'s attributes, in byte order.
    pub fn list_xattrs(&mut self, id: u64) -> Result<Vec<Vec<u8>>, FsError> {
        Ok(self.xattrs_of(id)?.items.keys().cloned().collect())
    }

    /// Sets attribute `name` of object `id` (`XATTR_CREATE` and
    /// `XATTR_REPLACE` as `mode` says); ctime becomes `now`. Logged as a
    /// `META` record before it changes anything.
    pub fn set_xattr(
        &mut self,
        id: u64,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        now: Timestamp,
    ) -> Result<(), FsError> {
        check_name(name)?;
        if value.len() > MAX_VALUE {
            return Err(FsError::TooBig);
        }
        let set = self.xattrs_of(id)?;
        let old = set.items.get(name);
        match (mode, old) {
            (XattrMode::Create, Some(_)) => return Err(FsError::Exists),
            (XattrMode::Replace, None) => return Err(FsError::NoData),
            _ => {}
        }
        let (list, total) = match old {
            Some(old) => (set.list_len(), set.total() - old.len() + value.len()),
            None => (
                set.list_len() + name.len() + 1,
                set.total() + name.len() + value.len(),
            ),
        };
        if list > MAX_LIST {
            return Err(FsError::NoSpace(
                "the attribute names of one object fill 64 KiB",
            ));
        }
        if total > MAX_TOTAL {
            return Err(FsError::NoSpace("the attributes of one object fill 1 MiB"));
        }
        let xattr = XattrChange::Set {
            name: name.to_vec(),
            value: value.to_vec(),
        };
        self.log_xattr(id, change::op::SETXATTR, &xattr, now)
    }

    /// Removes attribute `name` of object `id`; `NoData` when it has none
    /// of that name. ctime becomes `now`.
    pub fn remove_xattr(&mut self, id: u64, name: &[u8], now: Timestamp) -> Result<(), FsError> {
        if !name.starts_with(NAMESPACE) || !valid_name(name) {
            self.record(id)?;
            return Err(FsError::NoData);
        }
        if !self.xattrs_of(id)?.items.contains_key(name) {
            return Err(FsError::NoData);
        }
        let xattr = XattrChange::Remove {
            name: name.to_vec(),
        };
        self.log_xattr(id, change::op::REMOVEXATTR, &xattr, now)
    }

    fn log_xattr(
        &mut self,
        id: u64,
        op: u8,
        xattr: &XattrChange,
        now: Timestamp,
    ) -> Result<(), FsError> {
        let mut head = self.getattr(id)?;
        head.ctime = now;
        let mut change = Change::new(op);
        change.set(head);
        change.extra = xattr.encode();
        self.log_and_apply(&change, now)?;
        Ok(())
    }

    /// Applies the xattr part of a logged `META` record of op 10 or 11
    /// (its head is applied with the others).
    pub(crate) fn apply_xattr(&mut self, change: &Change, seq: u64) -> Result<(), MetaError> {
        let inconsistent =
            |why: String| MetaError::Inconsistent(format!("log record {seq}: {why}"));
        let xattr = XattrChange::decode(change.op, &change.extra).map_err(inconsistent)?;
        let [head] = change.heads.as_slice() else {
            return Err(inconsistent(
                "an xattr change of other than one object".into(),
            ));
        };
        let id = head.id();
        let set = self.xattrs_of(id).map_err(|e| match e {
            FsError::Meta(m) => m,
            other => inconsistent(format!("object {id}: {other}")),
        })?;
        match xattr {
            XattrChange::Set { name, value } => {
                set.items.insert(name, value);
            }
            XattrChange::Remove { name } => {
                if set.items.remove(&name).is_none() {
                    return Err(inconsistent(format!(
                        "removes an attribute object {id} does not have"
                    )));
                }
            }
        }
        set.dirty = true;
        Ok(())
    }

    /// Releases the attribute pages of an object being freed.
    pub(crate) fn free_xattrs(&mut self, id: u64, first: PageRef) -> Result<(), MetaError> {
        let pages = match self.xattrs.remove(&id) {
            Some(set) => set.pages,
            None if first.is_null() => Vec::new(),
            None => {
                let pager = Pager::new(&self.keys, self.backing.as_ref());
                read_chain(&pager, id, first)?.1
            }
        };
        for page in pages {
            self.alloc.release(page);
        }
        Ok(())
    }

    /// Checkpoint step 4 for attributes: every changed chain rewritten
    /// (its old pages released) and its record pointed at the new one.
    /// Every object's attributes are then dropped from memory.
    pub(crate) fn checkpoint_xattrs(&mut self) -> Result<(), MetaError> {
        let mut dirty: Vec<(u64, Xattrs)> =
            self.xattrs.drain().filter(|(_, set)| set.dirty).collect();
        dirty.sort_by_key(|(id, _)| *id);
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        for (id, set) in dirty {
            for page in set.pages {
                self.alloc.release(page);
            }
            let first = write_chain(&pager, &mut self.alloc, id, &set.items)?;
            let mut record = self.objects.get(&pager, id)?.ok_or_else(|| {
                MetaError::Inconsistent(format!("attributes of a freed object {id}"))
            })?;
            record.xattrs = first;
            self.objects.set(&pager, record)?;
        }
        Ok(())
    }
}
