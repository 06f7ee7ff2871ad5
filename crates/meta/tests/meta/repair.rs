//! The records of `fsck --repair` (format.md §16.18): a block set to a
//! hole and an orphan freed are logged before they change anything, and
//! a crash before the repair's checkpoint replays them; what is not a
//! failed block of a file or an orphan is refused.

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{MapEntry, ObjectKind, ROOT_ID};
use atrest_meta::{FsError, Store};

use crate::common::{CONFIG, TestContent, at, keys, new_store};
use crate::tamper::object;

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

#[test]
fn repairs_are_logged_and_replayed_after_a_crash() {
    let (mut store, backing) = new_store(GCM);
    let content = TestContent::new(GCM);
    let f = store
        .create(ROOT_ID, b"f", object(ObjectKind::Regular, b""), at(2))
        .unwrap()
        .id;
    content
        .write(&mut store, f, 0, &[9u8; 5 * 4096], 3)
        .unwrap();
    let orphan = store
        .create(ROOT_ID, b"o", object(ObjectKind::Regular, b""), at(2))
        .unwrap()
        .id;
    store.set_open(orphan, true, at(3)).unwrap();
    store.unlink(ROOT_ID, b"o", at(3)).unwrap();
    store.checkpoint(at(4)).unwrap();
    // What fsck --repair refuses: a block past the end, a named object.
    assert!(matches!(
        store.repair_block_hole(f, 5, at(5)),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        store.repair_free_orphan(f, at(5)),
        Err(FsError::Invalid(_))
    ));
    drop(store);
    // A new process: the orphan is no longer open.
    let mut store = Store::open(keys(GCM), backing.clone(), CONFIG, &content).unwrap();
    store.repair_block_hole(f, 3, at(6)).unwrap();
    store.repair_free_orphan(orphan, at(6)).unwrap();
    store.sync().unwrap();
    drop(store);
    // The power goes before the checkpoint: replay redoes both.
    let mut store = Store::open(keys(GCM), backing, CONFIG, &content).unwrap();
    assert_eq!(store.map_entry(f, 3).unwrap(), MapEntry::Hole);
    assert!(matches!(
        store.map_entry(f, 2).unwrap(),
        MapEntry::Sealed(_)
    ));
    assert!(matches!(store.getattr(orphan), Err(FsError::NotFound)));
    let data = content.read(&mut store, f).unwrap();
    assert_eq!(data.len(), 5 * 4096, "the size is kept");
    assert!(data[3 * 4096..4 * 4096].iter().all(|&b| b == 0));
    assert!(data[4 * 4096..].iter().all(|&b| b == 9));
}
