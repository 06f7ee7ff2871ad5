//! The cost of one operation does not grow with its directory
//! (docs/plans/format-2.md, stage 1 `dirsize.rs`): a create among 100,000
//! entries changes at most 3 directory pages (a leaf and two index
//! levels), among 100 exactly 1, plus the object table path either way;
//! its log record is the same size.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use atrest_core::ContentAlgorithm;
use atrest_meta::page::{self, Expect, PAGE_SIZE, PageKind, PageRef};
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::{Backing, MemBacking, Store};

use crate::common::{CONFIG, at, keys};
use crate::tamper::object;

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// A backing that remembers every write: `(file, offset, length)`.
#[derive(Default)]
struct Recording {
    inner: MemBacking,
    writes: Mutex<Vec<(String, u64, usize)>>,
}

impl Recording {
    fn take(&self) -> Vec<(String, u64, usize)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

impl Backing for Recording {
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(name, offset, buf)
    }
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.writes
            .lock()
            .unwrap()
            .push((name.to_owned(), offset, data.len()));
        self.inner.write_at(name, offset, data)
    }
    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        self.inner.len(name)
    }
    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.inner.set_len(name, len)
    }
    fn sync(&self, name: &str) -> io::Result<()> {
        self.inner.sync(name)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
}

/// What one create in a directory of `entries` names costs: the kinds
/// of the metadata pages the next checkpoint writes, and the bytes of
/// its log record.
fn one_create(entries: usize) -> (BTreeMap<PageKind, usize>, usize) {
    let backing = Arc::new(Recording::default());
    let mut store =
        Store::format(keys(GCM), backing.clone(), CONFIG, (0o755, 0, 0), at(1)).unwrap();
    let dir = store
        .create(ROOT_ID, b"dir", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    for i in 0..entries {
        let name = format!("existing-file-{i:08}");
        store
            .create(
                dir,
                name.as_bytes(),
                object(ObjectKind::Regular, b""),
                at(2),
            )
            .unwrap();
    }
    store.checkpoint(at(3)).unwrap();
    backing.take();
    store
        .create(
            dir,
            b"the-new-file-name.txt",
            object(ObjectKind::Regular, b""),
            at(4),
        )
        .unwrap();
    let record: Vec<usize> = backing
        .take()
        .into_iter()
        .filter(|(name, _, _)| name.starts_with("atrest.log/"))
        .map(|(_, _, len)| len)
        .collect();
    assert_eq!(record.len(), 1, "one log write per create");
    store.checkpoint(at(5)).unwrap();
    let keys = keys(GCM);
    let mut kinds = BTreeMap::new();
    for (name, offset, len) in backing.take() {
        if name != "atrest.meta" || offset < 2 * PAGE_SIZE as u64 {
            continue;
        }
        assert_eq!((offset % PAGE_SIZE as u64, len), (0, PAGE_SIZE));
        let number = offset / PAGE_SIZE as u64;
        let mut sealed = [0u8; PAGE_SIZE];
        backing
            .read_exact_at("atrest.meta", offset, &mut sealed)
            .unwrap();
        let reference = PageRef::to_sealed(number, &sealed);
        let kind = [
            (PageKind::DirLeaf, dir),
            (PageKind::DirIndex, dir),
            (PageKind::ObjectLeaf, 0),
            (PageKind::ObjectIndex, 0),
            (PageKind::BitmapLeaf, 0),
            (PageKind::BitmapIndex, 0),
        ]
        .into_iter()
        .find(|&(kind, owner)| {
            page::open(
                &keys,
                &reference,
                &sealed,
                Expect {
                    kind,
                    owner,
                    level: None,
                },
            )
            .is_ok()
        })
        .map(|(kind, _)| kind)
        .unwrap_or_else(|| panic!("page {number} of no expected kind"));
        *kinds.entry(kind).or_insert(0) += 1;
    }
    (kinds, record[0])
}

#[test]
fn a_create_among_100000_entries_costs_what_it_costs_among_100() {
    let (small, small_record) = one_create(100);
    let (large, large_record) = one_create(100_000);
    let dir_pages = |k: &BTreeMap<PageKind, usize>| {
        k.get(&PageKind::DirLeaf).copied().unwrap_or(0)
            + k.get(&PageKind::DirIndex).copied().unwrap_or(0)
    };
    assert_eq!(dir_pages(&small), 1, "{small:?}");
    assert_eq!(large.get(&PageKind::DirLeaf), Some(&1), "{large:?}");
    assert!(dir_pages(&large) <= 3, "{large:?}");
    // The object table path: the new record's leaf and the directory's,
    // and the index pages above them (one level more for 100,000
    // objects than for 100).
    let object_pages = |k: &BTreeMap<PageKind, usize>| {
        k.get(&PageKind::ObjectLeaf).copied().unwrap_or(0)
            + k.get(&PageKind::ObjectIndex).copied().unwrap_or(0)
    };
    assert_eq!(small.get(&PageKind::ObjectLeaf), Some(&2), "{small:?}");
    assert_eq!(large.get(&PageKind::ObjectLeaf), Some(&2), "{large:?}");
    assert!(
        object_pages(&large) <= object_pages(&small) + 3,
        "{small:?} {large:?}"
    );
    assert_eq!(small_record, large_record, "log record sizes");
}
