//! Changed, swapped and rolled-back pages of `atrest.meta`: every one is
//! an authentication error naming the page, never a wrong answer.

use atrest_meta::NoContents;
use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::{FsError, MemBacking, MetaError, NewObject, Store, XattrMode};

use crate::common::{CONFIG, at, keys, new_store};

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// Everything the store shows: path → (kind, mode, nlink, size, target,
/// extended attributes).
pub(crate) type Listing = BTreeMap<Vec<u8>, (u8, u16, u32, u64, Vec<u8>, Xattrs)>;

/// An object's extended attributes, by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

pub(crate) fn listing(store: &mut Store) -> Result<Listing, FsError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(ROOT_ID, b"".to_vec())];
    while let Some((dir, path)) = stack.pop() {
        for e in store.readdir(dir, 0, usize::MAX)? {
            let head = store.lookup(dir, &e.name)?;
            let mut full = path.clone();
            full.push(b'/');
            full.extend_from_slice(&e.name);
            let target = if head.kind == ObjectKind::Symlink {
                store.readlink(head.id)?
            } else {
                vec![]
            };
            if head.kind == ObjectKind::Directory {
                stack.push((head.id, full.clone()));
            }
            let mut xattrs = Vec::new();
            for name in store.list_xattrs(head.id)? {
                let value = store.get_xattr(head.id, &name)?;
                xattrs.push((name, value));
            }
            out.insert(
                full,
                (
                    head.kind.id(),
                    head.mode,
                    head.nlink,
                    head.size,
                    target,
                    xattrs,
                ),
            );
        }
    }
    Ok(out)
}

pub(crate) fn object(kind: ObjectKind, target: &[u8]) -> NewObject {
    NewObject {
        kind,
        mode: 0o640,
        uid: 7,
        gid: 8,
        rdev: 0,
        target: target.to_vec(),
    }
}

/// A small tree with every page kind stage 1 writes: object table leaves
/// and an index, directory leaves and an index, blobs, the bitmap.
fn populated() -> (Arc<MemBacking>, Listing) {
    let (mut store, backing) = new_store(GCM);
    let sub = store
        .create(ROOT_ID, b"sub", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    for i in 0..400 {
        let name = format!("entry-number-{i:04}");
        store
            .create(
                sub,
                name.as_bytes(),
                object(ObjectKind::Regular, b""),
                at(2),
            )
            .unwrap();
    }
    store
        .create(
            ROOT_ID,
            b"long-link",
            object(ObjectKind::Symlink, &[b'L'; 4095]),
            at(2),
        )
        .unwrap();
    store
        .create(
            ROOT_ID,
            b"short-link",
            object(ObjectKind::Symlink, b"sub"),
            at(2),
        )
        .unwrap();
    // Extended attributes: a chain of several xattr pages on the
    // directory, and a value in blob pages on a link.
    for i in 0..60 {
        let name = format!("user.attribute-number-{i:03}");
        store
            .set_xattr(sub, name.as_bytes(), &[i as u8; 200], XattrMode::Any, at(2))
            .unwrap();
    }
    let link = store.lookup(ROOT_ID, b"short-link").unwrap().id;
    store
        .set_xattr(link, b"user.big", &[0xb1; 9000], XattrMode::Any, at(2))
        .unwrap();
    store.checkpoint(at(3)).unwrap();
    let expected = listing(&mut store).unwrap();
    (backing, expected)
}

fn open_and_list(backing: &Arc<MemBacking>) -> Result<Listing, FsError> {
    let mut store = Store::open(keys(GCM), backing.clone(), CONFIG, &NoContents)?;
    listing(&mut store)
}

pub(crate) fn is_detected(result: &Result<Listing, FsError>) -> bool {
    matches!(
        result,
        Err(FsError::Meta(
            MetaError::Auth(_) | MetaError::NoSuperblock(_)
        ))
    )
}

#[test]
fn every_changed_byte_of_a_used_page_is_detected() {
    let (backing, expected) = populated();
    let len = backing.len_of("atrest.meta");
    let pages = len / 4096;
    let mut detected = 0;
    for page in 2..pages {
        for offset in [0, 17, 2000, 4095] {
            let clean = backing.snapshot();
            backing.with_file("atrest.meta", |f| f[page * 4096 + offset] ^= 0x01);
            let result = open_and_list(&backing);
            backing.restore(clean);
            match &result {
                Ok(listing) => assert_eq!(
                    listing, &expected,
                    "page {page} byte {offset}: a wrong answer"
                ),
                _ if is_detected(&result) => detected += 1,
                Err(e) => panic!("page {page} byte {offset}: not an authentication error: {e}"),
            }
        }
    }
    // Every used page is read by the walk, so each is caught at least at
    // one offset; free pages are never read.
    assert!(
        detected >= 4 * 20,
        "only {detected} changes detected over {pages} pages"
    );
}

#[test]
fn pages_swapped_with_each_other_are_detected() {
    let (backing, expected) = populated();
    let pages = backing.len_of("atrest.meta") / 4096;
    for a in 2..pages {
        for b in (a + 1)..pages.min(a + 4) {
            let clean = backing.snapshot();
            backing.with_file("atrest.meta", |f| {
                let pa: Vec<u8> = f[a * 4096..(a + 1) * 4096].to_vec();
                let pb: Vec<u8> = f[b * 4096..(b + 1) * 4096].to_vec();
                f[a * 4096..(a + 1) * 4096].copy_from_slice(&pb);
                f[b * 4096..(b + 1) * 4096].copy_from_slice(&pa);
            });
            let result = open_and_list(&backing);
            backing.restore(clean);
            assert!(
                result.as_ref().is_ok_and(|l| l == &expected) || is_detected(&result),
                "pages {a} and {b} swapped: {result:?}"
            );
        }
    }
}

#[test]
fn an_older_page_under_a_newer_tree_is_detected() {
    let (mut store, backing) = new_store(GCM);
    let sub = store
        .create(ROOT_ID, b"sub", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    store
        .create(sub, b"one", object(ObjectKind::Regular, b""), at(2))
        .unwrap();
    store.checkpoint(at(3)).unwrap();
    let older = backing.snapshot();
    // Enough checkpoints that page numbers are reused.
    for i in 0..4 {
        store
            .create(
                sub,
                format!("more-{i}").as_bytes(),
                object(ObjectKind::Regular, b""),
                at(4),
            )
            .unwrap();
        store.checkpoint(at(5)).unwrap();
    }
    let expected = listing(&mut store).unwrap();
    let newer = backing.snapshot();
    let meta_old = &older["atrest.meta"];
    let meta_new = &newer["atrest.meta"];
    let mut rolled_back = 0;
    for page in 2..meta_old.len() / 4096 {
        let range = page * 4096..(page + 1) * 4096;
        if meta_old[range.clone()] == meta_new[range.clone()] {
            continue;
        }
        backing.with_file("atrest.meta", |f| {
            f[range.clone()].copy_from_slice(&meta_old[range.clone()])
        });
        let result = open_and_list(&backing);
        backing.restore(newer.clone());
        assert!(
            result.as_ref().is_ok_and(|l| l == &expected) || is_detected(&result),
            "page {page} rolled back: {result:?}"
        );
        rolled_back += usize::from(result.is_err());
    }
    assert!(rolled_back > 0, "no rolled-back page was read");
}

#[test]
fn a_cut_metadata_file_is_detected() {
    let (backing, _) = populated();
    let len = backing.len_of("atrest.meta");
    backing.with_file("atrest.meta", |f| f.truncate(len - 4096));
    assert!(is_detected(&open_and_list(&backing)));
    backing.with_file("atrest.meta", |f| f.truncate(4096));
    assert!(is_detected(&open_and_list(&backing)));
}

/// A store opened with a newer config records it at its next checkpoint
/// (§16.3), so the older config put back is refused from then on, and a
/// different config of the same generation too.
#[test]
fn a_config_older_than_the_last_checkpoint_is_refused() {
    let (backing, _) = populated();
    let newer = atrest_meta::ConfigBinding {
        generation: CONFIG.generation + 1,
        hash: [0xc1; 32],
    };
    let mut store = Store::open(keys(GCM), backing.clone(), newer, &NoContents).unwrap();
    store.checkpoint(at(50)).unwrap();
    drop(store);
    let refused = Store::open(keys(GCM), backing.clone(), CONFIG, &NoContents).err();
    assert!(
        matches!(&refused, Some(atrest_meta::MetaError::Inconsistent(m)) if m.contains("older")),
        "{refused:?}"
    );
    let other = atrest_meta::ConfigBinding {
        hash: [0xc2; 32],
        ..newer
    };
    assert!(Store::open(keys(GCM), backing.clone(), other, &NoContents).is_err());
    Store::open(keys(GCM), backing, newer, &NoContents).unwrap();
}
