//! Objects open through the mount outlive their last name as `ORPHAN`s
//! (format.md §16.14) and are freed, by a logged record, when closed.

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::{FsError, RenameMode};

use crate::common::{at, new_store, reopen};
use crate::tamper::object;

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

#[test]
fn an_open_file_outlives_its_last_name_until_closed() {
    let (mut store, backing) = new_store(GCM);
    let id = store
        .create(ROOT_ID, b"f", object(ObjectKind::Regular, b""), at(2))
        .unwrap()
        .id;
    let victim = store
        .create(ROOT_ID, b"v", object(ObjectKind::Regular, b""), at(2))
        .unwrap()
        .id;
    store.set_open(id, true, at(3)).unwrap();
    store.set_open(victim, true, at(3)).unwrap();
    let (_, freed) = store.unlink(ROOT_ID, b"f", at(4)).unwrap();
    assert!(!freed);
    // Renamed over while open: an orphan too.
    store
        .create(ROOT_ID, b"new", object(ObjectKind::Regular, b""), at(5))
        .unwrap();
    store
        .rename(ROOT_ID, b"new", ROOT_ID, b"v", RenameMode::Replace, at(5))
        .unwrap();
    for orphan in [id, victim] {
        let head = store.getattr(orphan).unwrap();
        assert!(head.orphan && head.nlink == 0, "{head:?}");
    }
    assert!(matches!(
        store.lookup(ROOT_ID, b"f"),
        Err(FsError::NotFound)
    ));
    store.sync().unwrap();
    // Replayed as it was logged.
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert!(store.getattr(id).unwrap().orphan);
    store.set_open(id, true, at(6)).unwrap();
    store.set_open(id, false, at(7)).unwrap();
    assert!(matches!(store.getattr(id), Err(FsError::NotFound)));
    // The record that frees it replays.
    store.sync().unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert!(matches!(store.getattr(id), Err(FsError::NotFound)));
    assert!(store.getattr(victim).unwrap().orphan);
    store.checkpoint(at(8)).unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert!(matches!(store.getattr(id), Err(FsError::NotFound)));
    // A closed file that still has a name stays.
    let kept = store
        .create(ROOT_ID, b"kept", object(ObjectKind::Regular, b""), at(9))
        .unwrap()
        .id;
    store.set_open(kept, true, at(9)).unwrap();
    store.set_open(kept, false, at(10)).unwrap();
    assert_eq!(store.getattr(kept).unwrap().nlink, 1);
}
