//! The records of `fsck --repair` (format.md §16.18): entries of lost
//! records dropped, a block set to a hole, an orphan or a lost record
//! freed, an `nlink` or a directory's `size` corrected are logged before
//! they change anything, and a crash before the repair's checkpoint
//! replays them; what is none of these is refused.

use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{Content, MapEntry, ObjectKind, ROOT_ID};
use atrest_meta::sim::{Rng, SimDisk};
use atrest_meta::{FsError, MemBacking, NoContents, Store, XattrMode};

use crate::common::{CONFIG, TestContent, at, keys, new_store, reopen};
use crate::tamper::{listing, object};

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

/// The page of `atrest.meta` holding the record of `lost`, found by
/// changing each page in turn: afterwards that record fails
/// authentication and the root's does not. The clean state is restored
/// unless the page is found.
fn fail_the_record_page_of(backing: &Arc<MemBacking>, lost: u64) {
    let pages = backing.len_of("atrest.meta") / 4096;
    for page in 2..pages {
        let clean = backing.snapshot();
        backing.with_file("atrest.meta", |f| f[page * 4096 + 1000] ^= 0x01);
        let mut store = reopen(backing, GCM);
        let failed = matches!(store.getattr(lost), Err(FsError::Meta(e)) if e.is_auth());
        if failed && store.getattr(ROOT_ID).is_ok() {
            return;
        }
        drop(store);
        backing.restore(clean);
    }
    panic!("no page holds only the record of object {lost}");
}

/// `REPAIR` actions 1, 3 (of a lost record), 4 and 5: the entries naming
/// the objects of a failed object-table page dropped (a directory's counts
/// following), the page freed, a wrong `nlink` and directory `size` set;
/// the power goes before the checkpoint and replay gives the same tree.
#[test]
fn lost_records_and_wrong_counts_are_repaired_and_replayed_after_a_crash() {
    let (mut store, backing) = new_store(GCM);
    let d = store
        .create(ROOT_ID, b"d", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    // Ids 3 ..= 44; the object table holds 15 records a leaf, so one
    // leaf holds only objects of d: 30 a subdirectory, 31 also named /g.
    for i in 3..=44u64 {
        let kind = if i == 30 {
            ObjectKind::Directory
        } else {
            ObjectKind::Regular
        };
        let name = format!("n{i}");
        let id = store
            .create(d, name.as_bytes(), object(kind, b""), at(2))
            .unwrap()
            .id;
        assert_eq!(id, i);
    }
    store.link(31, ROOT_ID, b"g", at(2)).unwrap();
    store.checkpoint(at(3)).unwrap();
    drop(store);
    fail_the_record_page_of(&backing, 31);

    let mut store = reopen(&backing, GCM);
    let lost: Vec<u64> = (3..=44)
        .filter(|&id| matches!(store.getattr(id), Err(FsError::Meta(e)) if e.is_auth()))
        .collect();
    assert!(
        lost.contains(&30) && lost.contains(&31) && lost.len() <= 15,
        "{lost:?}"
    );
    // Refused: the entries of a live object, a record that authenticates,
    // counts below the least a live object has.
    assert!(matches!(
        store.repair_drop_entries(d, 5, at(4)),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        store.repair_free_lost(5, at(4)),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        store.repair_nlink(d, 1, at(4)),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        store.repair_directory_size(5, 0, at(4)),
        Err(FsError::NotDir)
    ));
    for &id in &lost {
        store.repair_drop_entries(d, id, at(4)).unwrap();
    }
    store.repair_drop_entries(ROOT_ID, 31, at(4)).unwrap();
    assert!(matches!(
        store.repair_drop_entries(d, 31, at(4)),
        Err(FsError::NotFound)
    ));
    store.repair_free_lost(lost[0], at(4)).unwrap();
    // A count set (what fsck does to a wrong one).
    store.repair_nlink(5, 3, at(4)).unwrap();
    store
        .repair_directory_size(d, 42 - lost.len() as u64, at(4))
        .unwrap();
    let repaired = listing(&mut store).unwrap();
    let head = store.getattr(d).unwrap();
    assert_eq!(head.size, 42 - lost.len() as u64);
    assert_eq!(head.nlink, 2, "the lost subdirectory no longer counts");
    assert_eq!(store.getattr(ROOT_ID).unwrap().size, 1, "/g dropped");
    assert_eq!(store.getattr(5).unwrap().nlink, 3);
    for &id in &lost {
        assert!(matches!(store.getattr(id), Err(FsError::NotFound)), "{id}");
    }
    store.sync().unwrap();
    drop(store);

    // The power goes before the repair's checkpoint: replay redoes it all.
    let mut store = reopen(&backing, GCM);
    assert_eq!(listing(&mut store).unwrap(), repaired);
    for &id in &lost {
        assert!(matches!(store.getattr(id), Err(FsError::NotFound)), "{id}");
    }
    store.checkpoint(at(5)).unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(listing(&mut store).unwrap(), repaired);
    // New objects take new ids: a dropped page never brings an id back.
    let new = store
        .create(d, b"new", object(ObjectKind::Regular, b""), at(6))
        .unwrap()
        .id;
    assert_eq!(new, 45);
}

/// A store whose last checkpoint's bitmap marks a page used that nothing
/// references (as a leak in the accounting would), on `disk`, holding a
/// tree with a directory, files, a long symlink and an xattr; its
/// listing.
fn leaked(disk: &Arc<SimDisk>) -> (u64, crate::tamper::Listing) {
    let mut store = Store::format(keys(GCM), disk.clone(), CONFIG, (0o755, 0, 0), at(1)).unwrap();
    let d = store
        .create(ROOT_ID, b"d", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    for i in 0..40u32 {
        store
            .create(
                d,
                format!("f{i}").as_bytes(),
                object(ObjectKind::Regular, b""),
                at(2),
            )
            .unwrap();
    }
    store
        .create(
            ROOT_ID,
            b"l",
            object(ObjectKind::Symlink, &[b'x'; 500]),
            at(2),
        )
        .unwrap();
    store
        .set_xattr(d, b"user.k", &[3u8; 2000], XattrMode::Any, at(2))
        .unwrap();
    store.checkpoint(at(3)).unwrap();
    let page = store.danger_leak_page();
    store.close(at(4)).unwrap();
    let listing = listing(&mut store).unwrap();
    drop(store);
    disk.flush_all();
    (page, listing)
}

/// The bitmap's repair (§16.18): the usage read from the disk names the
/// leaked page and nothing else; `repair_page_usage` and the checkpoint
/// after it free it. The power cut after each disk call of the repair
/// leaves the leak or its repair, never anything else, and the tree lists
/// as before.
#[test]
fn a_leaked_page_is_freed_by_the_repair_s_checkpoint_or_not_at_all() {
    let mut rng = Rng::new(17);
    let (mut freed, mut kept) = (0, 0);
    for cut in 0.. {
        let disk = Arc::new(SimDisk::new());
        let (page, before) = leaked(&disk);
        let mut store = Store::open(keys(GCM), disk.clone(), CONFIG, &NoContents).unwrap();
        let usage = store.page_usage().unwrap();
        assert_eq!(usage.leaked(), [page]);
        assert!(usage.free_but_referenced().is_empty());
        assert!(usage.referenced.len() > 6, "{usage:?}");
        disk.cut_power_after(cut);
        let done = store
            .repair_page_usage(&usage)
            .and_then(|()| store.close(at(5)).map(drop));
        drop(store);
        disk.crash(&mut rng);
        let mut store = Store::open(keys(GCM), disk.clone(), CONFIG, &NoContents).unwrap();
        assert_eq!(listing(&mut store).unwrap(), before, "cut {cut}");
        let after = store.page_usage().unwrap();
        assert!(after.free_but_referenced().is_empty(), "cut {cut}");
        match after.leaked().as_slice() {
            [] => freed += 1,
            [p] if *p == page => kept += 1,
            other => panic!("cut {cut}: leaked {other:?}"),
        }
        if done.is_ok() {
            assert!(after.leaked().is_empty(), "a completed repair is durable");
            assert!(!after.marked.contains(&page));
            break;
        }
    }
    assert!(freed > 0 && kept > 0, "{freed} freed, {kept} kept");
}

/// A referenced page the bitmap marks free is named by the usage and
/// kept in use by the repair: the checkpoints after it never write over
/// it, and the tree stays readable.
#[test]
fn a_referenced_page_marked_free_is_kept_by_the_repair() {
    let (mut store, backing) = new_store(GCM);
    let d = store
        .create(ROOT_ID, b"d", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    store
        .create(d, b"f", object(ObjectKind::Regular, b""), at(2))
        .unwrap();
    store.checkpoint(at(3)).unwrap();
    let Content::Tree(root) = store.record(d).unwrap().content else {
        panic!("a directory has a tree");
    };
    let page = root.reference.page().unwrap();
    store.danger_unmark_page(page);
    store.checkpoint(at(4)).unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    let usage = store.page_usage().unwrap();
    assert_eq!(usage.free_but_referenced(), [page]);
    assert!(usage.leaked().is_empty());
    store.repair_page_usage(&usage).unwrap();
    // Checkpoints with changes, each allocating the lowest free pages.
    for i in 0..6i64 {
        store
            .create(
                ROOT_ID,
                format!("n{i}").as_bytes(),
                object(ObjectKind::Regular, b""),
                at(5 + i),
            )
            .unwrap();
        store.checkpoint(at(5 + i)).unwrap();
    }
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(store.lookup(d, b"f").unwrap().kind, ObjectKind::Regular);
    let after = store.page_usage().unwrap();
    assert!(after.free_but_referenced().is_empty() && after.leaked().is_empty());
    assert!(after.marked.contains(&page));
}
