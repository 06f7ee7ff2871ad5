//! Extended attributes of the store (format.md §16.10): the `user.`
//! namespace only, `XATTR_CREATE` / `XATTR_REPLACE`, the limits, chains
//! of xattr pages and value blobs across checkpoints, replay from the log
//! without one, and their pages freed with their object. Power cuts
//! during xattr changes are in `crash.rs`, changed xattr pages in
//! `tamper.rs` (both through `listing`, which reads every attribute).

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::xattr::{MAX_LIST, MAX_NAME, MAX_TOTAL, MAX_VALUE};
use atrest_meta::{FsError, Store, XattrMode};

use crate::common::{at, new_store, reopen};
use crate::tamper::object;

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;
const XCHACHA: ContentAlgorithm = ContentAlgorithm::XChaCha20Poly1305;

fn all(store: &mut Store, id: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = store.list_xattrs(id).unwrap();
    names
        .into_iter()
        .map(|n| {
            let v = store.get_xattr(id, &n).unwrap();
            (n, v)
        })
        .collect()
}

fn set(store: &mut Store, id: u64, name: &[u8], value: &[u8]) {
    store
        .set_xattr(id, name, value, XattrMode::Any, at(5))
        .unwrap();
}

#[test]
fn set_get_list_remove_with_create_and_replace() {
    let (mut store, backing) = new_store(GCM);
    let f = store
        .create(ROOT_ID, b"f", object(ObjectKind::Regular, b""), at(2))
        .unwrap()
        .id;
    assert!(store.list_xattrs(f).unwrap().is_empty());
    assert!(matches!(
        store.get_xattr(f, b"user.a"),
        Err(FsError::NoData)
    ));
    set(&mut store, f, b"user.b", b"bee");
    set(&mut store, f, b"user.a", b"");
    let ctime = store.getattr(f).unwrap().ctime;
    assert_eq!(ctime, at(5), "an attribute change is a ctime change");
    assert!(matches!(
        store.set_xattr(f, b"user.a", b"x", XattrMode::Create, at(6)),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        store.set_xattr(f, b"user.c", b"x", XattrMode::Replace, at(6)),
        Err(FsError::NoData)
    ));
    store
        .set_xattr(f, b"user.b", b"replaced", XattrMode::Replace, at(6))
        .unwrap();
    store
        .set_xattr(f, b"user.c", b"created", XattrMode::Create, at(6))
        .unwrap();
    store.remove_xattr(f, b"user.c", at(7)).unwrap();
    assert!(matches!(
        store.remove_xattr(f, b"user.c", at(7)),
        Err(FsError::NoData)
    ));
    let expected = vec![
        (b"user.a".to_vec(), b"".to_vec()),
        (b"user.b".to_vec(), b"replaced".to_vec()),
    ];
    assert_eq!(all(&mut store, f), expected);
    // Replayed from the log (synced, no checkpoint) ...
    store.sync().unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(all(&mut store, f), expected);
    // ... and read from pages after a checkpoint.
    store.checkpoint(at(8)).unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(all(&mut store, f), expected);
    // Removing the last one leaves a null reference.
    store.remove_xattr(f, b"user.a", at(9)).unwrap();
    store.remove_xattr(f, b"user.b", at(9)).unwrap();
    store.checkpoint(at(9)).unwrap();
    assert!(store.record(f).unwrap().xattrs.is_null());
}

#[test]
fn names_and_values_outside_the_limits_are_refused() {
    let (mut store, _) = new_store(GCM);
    let f = store
        .create(ROOT_ID, b"f", object(ObjectKind::Fifo, b""), at(2))
        .unwrap()
        .id;
    let refused = |store: &mut Store, name: &[u8], len: usize| {
        store
            .set_xattr(f, name, &vec![1; len], XattrMode::Any, at(3))
            .unwrap_err()
    };
    assert!(matches!(
        refused(&mut store, b"trusted.x", 1),
        FsError::Unsupported(_)
    ));
    assert!(matches!(
        refused(&mut store, b"security.capability", 1),
        FsError::Unsupported(_)
    ));
    assert!(matches!(
        refused(&mut store, b"user.", 1),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        refused(&mut store, b"user.a\0b", 1),
        FsError::Invalid(_)
    ));
    let long = [b"user.".as_slice(), &[b'n'; MAX_NAME - 4]].concat();
    assert!(matches!(refused(&mut store, &long, 1), FsError::Range));
    assert!(matches!(
        refused(&mut store, b"user.v", MAX_VALUE + 1),
        FsError::TooBig
    ));
    // Reads of other namespaces find nothing, never an error.
    assert!(matches!(
        store.get_xattr(f, b"security.capability"),
        Err(FsError::NoData)
    ));
    assert!(matches!(
        store.remove_xattr(f, b"trusted.x", at(3)),
        Err(FsError::NoData)
    ));
    assert!(matches!(
        store.get_xattr(999, b"user.x"),
        Err(FsError::NotFound)
    ));
    // The most that one object holds: 1 MiB of names and values.
    let mut total = 0;
    let mut i = 0;
    loop {
        let name = format!("user.big-{i:02}");
        let result = store.set_xattr(
            f,
            name.as_bytes(),
            &vec![i as u8; MAX_VALUE],
            XattrMode::Any,
            at(4),
        );
        if total + name.len() + MAX_VALUE > MAX_TOTAL {
            assert!(matches!(result, Err(FsError::NoSpace(_))), "{result:?}");
            break;
        }
        result.unwrap();
        total += name.len() + MAX_VALUE;
        i += 1;
    }
    assert_eq!(store.list_xattrs(f).unwrap().len(), 15);
}

#[test]
fn the_longest_names_and_values_and_many_attributes_span_pages() {
    for algorithm in [GCM, XCHACHA] {
        let (mut store, backing) = new_store(algorithm);
        let d = store
            .create(ROOT_ID, b"d", object(ObjectKind::Directory, b""), at(2))
            .unwrap()
            .id;
        let longest = [b"user.".as_slice(), &[b'n'; MAX_NAME - 5]].concat();
        let mut expected = Vec::new();
        // Inline at the bound, a blob just past it, and the largest value.
        for (name, len) in [
            (longest.clone(), MAX_VALUE),
            (b"user.inline-1024".to_vec(), 1024),
            (b"user.blob-1025".to_vec(), 1025),
        ] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            set(&mut store, d, &name, &value);
            expected.push((name, value));
        }
        // Enough names that the list reaches its limit, over many pages.
        let mut list: usize = expected.iter().map(|(n, _)| n.len() + 1).sum();
        let mut i = 0;
        loop {
            let name = format!("user.{i:0>240}").into_bytes();
            if list + name.len() + 1 > MAX_LIST {
                let result = store.set_xattr(d, &name, b"v", XattrMode::Any, at(5));
                assert!(matches!(result, Err(FsError::NoSpace(_))), "{result:?}");
                break;
            }
            set(&mut store, d, &name, &[i as u8; 3]);
            list += name.len() + 1;
            expected.push((name, vec![i as u8; 3]));
            i += 1;
        }
        assert!(i > 200, "{i} names");
        expected.sort();
        assert_eq!(all(&mut store, d), expected);
        store.sync().unwrap();
        drop(store);
        let mut store = reopen(&backing, algorithm);
        assert_eq!(all(&mut store, d), expected, "replayed");
        store.checkpoint(at(6)).unwrap();
        drop(store);
        let mut store = reopen(&backing, algorithm);
        assert_eq!(all(&mut store, d), expected, "from pages");
        // One change rewrites the chain; the rest reads back the same.
        store.remove_xattr(d, &longest, at(7)).unwrap();
        expected.retain(|(n, _)| *n != longest);
        store.checkpoint(at(7)).unwrap();
        drop(store);
        let mut store = reopen(&backing, algorithm);
        assert_eq!(all(&mut store, d), expected, "rewritten");
    }
}

/// Pages of an object's attributes are free again once it is gone: the
/// same work repeated does not grow the metadata file.
#[test]
fn attribute_pages_are_freed_with_their_object() {
    let (mut store, backing) = new_store(GCM);
    let mut page_counts = Vec::new();
    for round in 0..6 {
        let f = store
            .create(ROOT_ID, b"f", object(ObjectKind::Regular, b""), at(2))
            .unwrap()
            .id;
        for i in 0..40 {
            set(
                &mut store,
                f,
                format!("user.{i:03}").as_bytes(),
                &[round as u8; 3000],
            );
        }
        store.checkpoint(at(3)).unwrap();
        assert!(!store.record(f).unwrap().xattrs.is_null());
        store.unlink(ROOT_ID, b"f", at(4)).unwrap();
        store.checkpoint(at(4)).unwrap();
        page_counts.push(store.superblock().page_count);
    }
    assert_eq!(
        page_counts[2..].iter().max(),
        page_counts[2..].iter().min(),
        "pages leak: {page_counts:?}"
    );
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert!(store.lookup(ROOT_ID, b"f").is_err());
}
