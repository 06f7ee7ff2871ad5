//! The store on a real backing directory (`DirBacking`): what it writes
//! reopens from a fresh descriptor, and a byte changed in the file on disk
//! is detected as on the in-memory backing.

use atrest_meta::NoContents;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::{DirBacking, Store};

use crate::common::{CONFIG, at, keys};
use crate::tamper::{is_detected, listing, object};

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

#[test]
fn a_store_on_a_directory_reopens_and_detects_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let backing = Arc::new(DirBacking::open(dir.path()).unwrap());
    let mut store = Store::format(keys(GCM), backing, CONFIG, (0o700, 0, 0), at(1)).unwrap();
    let sub = store
        .create(ROOT_ID, b"sub", object(ObjectKind::Directory, b""), at(2))
        .unwrap()
        .id;
    for i in 0..300 {
        store
            .create(
                sub,
                format!("f{i}").as_bytes(),
                object(ObjectKind::Regular, b""),
                at(2),
            )
            .unwrap();
    }
    store
        .create(
            ROOT_ID,
            b"link",
            object(ObjectKind::Symlink, &[b'x'; 300]),
            at(2),
        )
        .unwrap();
    store.checkpoint(at(3)).unwrap();
    let expected = listing(&mut store).unwrap();
    drop(store);

    let reopen = || {
        let backing = Arc::new(DirBacking::open(dir.path()).unwrap());
        Store::open(keys(GCM), backing, CONFIG, &NoContents)
            .map_err(Into::into)
            .and_then(|mut s| listing(&mut s))
    };
    assert_eq!(reopen().unwrap(), expected);

    // One byte of each sealed page changed on the disk in turn: a page
    // the tree uses is an authentication failure, a free one changes
    // nothing; never a different listing.
    let path = dir.path().join("atrest.meta");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let pages = file.metadata().unwrap().len() / 4096;
    let mut detected = 0;
    for page in 2..pages {
        let offset = page * 4096 + 100;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, offset).unwrap();
        file.write_all_at(&[byte[0] ^ 0x01], offset).unwrap();
        match reopen() {
            Ok(found) => assert!(
                found == expected,
                "page {page} changed: a different listing"
            ),
            result => {
                assert!(is_detected(&result), "page {page}: {:?}", result.err());
                detected += 1;
            }
        }
        file.write_all_at(&byte, offset).unwrap();
    }
    assert!(
        detected >= 3,
        "only {detected} of {} pages detected as changed",
        pages - 2
    );
    assert_eq!(reopen().unwrap(), expected);
}

/// The log on a real directory: operations synced but never
/// checkpointed come back from `atrest.log/` after a reopen, and a
/// checkpoint retires the segments it covers.
#[test]
fn a_store_on_a_directory_replays_its_log() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let backing = Arc::new(DirBacking::open(dir.path()).unwrap());
        Store::open(keys(GCM), backing, CONFIG, &NoContents).unwrap()
    };
    let backing = Arc::new(DirBacking::open(dir.path()).unwrap());
    let mut store = Store::format(keys(GCM), backing, CONFIG, (0o700, 0, 0), at(1)).unwrap();
    for i in 0..50 {
        store
            .create(
                ROOT_ID,
                format!("f{i}").as_bytes(),
                object(ObjectKind::Regular, b""),
                at(2),
            )
            .unwrap();
    }
    store.sync().unwrap();
    let expected = listing(&mut store).unwrap();
    drop(store);
    let segments = |dir: &tempfile::TempDir| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("atrest.log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(segments(&dir), ["0000000000000001"]);
    let log_dir = std::fs::metadata(dir.path().join("atrest.log")).unwrap();
    assert_eq!(log_dir.permissions().mode() & 0o777, 0o700);
    let mut store = open();
    assert_eq!(listing(&mut store).unwrap(), expected);
    // The recovery checkpointed: segment 1 is retired.
    assert_eq!(segments(&dir), ["0000000000000002"]);
    let segment = std::fs::metadata(dir.path().join("atrest.log/0000000000000002")).unwrap();
    assert_eq!(segment.permissions().mode() & 0o777, 0o600);
    drop(store);
    assert_eq!(listing(&mut open()).unwrap(), expected);
}
