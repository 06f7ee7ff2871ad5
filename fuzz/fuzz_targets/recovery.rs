//! Recovery at open (docs/format.md §16.16) over arbitrary contents of
//! `atrest.meta`, `atrest.log/` and data files: `Store::open` returns an
//! error, or a store whose whole tree, file contents included, can be
//! walked and changed, never a panic. The genuine vault holds files with
//! inline and tree block maps, fresh and journaled writes (`WRITE`
//! payloads), a truncate with a resealed tail, a synced file and extended
//! attributes (xattr pages, a value blob, `META` set and remove records),
//! so the map and xattr pages, `WRITE`/`TRUNCATE` and xattr bodies,
//! payload checks and recovery's block checks (step 3) all parse edited
//! bytes.
//!
//! Input: a first byte choosing the shape, then either
//! - (even) edits of a small genuine vault made once per process (a
//!   checkpoint, a synced batch of operations, an unsynced tail): 7-byte
//!   items `file (1) ‖ offset (u32be) ‖ action (1) ‖ value (1)`, each
//!   flipping, setting, cutting at or inserting a byte of `atrest.meta`,
//!   a log segment or a data file; or
//! - (odd) raw file contents: `meta length (u16be) ‖ atrest.meta ‖
//!   segment 1`.
//!
//! The genuine vault's nonces and file ids are random, so a reproduced
//! crash may need a few runs; its structure (offsets, lengths) is fixed.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use atrest_core::{ContentAlgorithm, SecretKey};
use atrest_meta::log::segment_name;
use atrest_meta::record::{ObjectKind, ROOT_ID, Timestamp};
use atrest_meta::{
    ConfigBinding, MemBacking, MetaKeys, NewObject, RenameMode, Store, XattrMode,
};
use atrest_vault::{ContentFile2, ContentKey2};
use libfuzzer_sys::fuzz_target;

const CONFIG: ConfigBinding = ConfigBinding {
    generation: 1,
    hash: [0xc0; 32],
};
const NOW: Timestamp = Timestamp {
    secs: 1_765_000_000,
    nanos: 0,
};

fn keys() -> MetaKeys {
    MetaKeys::derive(
        &SecretKey::from_bytes([0x42; 32]),
        [0x24; 16],
        ContentAlgorithm::Aes256Gcm,
    )
}

fn content() -> &'static ContentKey2 {
    static CONTENT: OnceLock<ContentKey2> = OnceLock::new();
    CONTENT.get_or_init(|| {
        ContentKey2::derive(
            &SecretKey::from_bytes([0x42; 32]),
            &[0x24; 16],
            ContentAlgorithm::Aes256Gcm,
        )
    })
}

fn object(kind: ObjectKind, target: &[u8]) -> NewObject {
    NewObject {
        kind,
        mode: 0o640,
        uid: 1,
        gid: 2,
        rdev: 0,
        target: target.to_vec(),
    }
}

/// The genuine vault the edits apply to.
fn base() -> &'static BTreeMap<String, Vec<u8>> {
    static BASE: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    BASE.get_or_init(|| {
        let backing = Arc::new(MemBacking::new());
        let mut store =
            Store::format(keys(), backing.clone(), CONFIG, (0o755, 0, 0), NOW).expect("format");
        let dir = store
            .create(ROOT_ID, b"dir", object(ObjectKind::Directory, b""), NOW)
            .expect("mkdir")
            .id;
        for i in 0..20 {
            let name = format!("file-{i}");
            store
                .create(dir, name.as_bytes(), object(ObjectKind::Regular, b""), NOW)
                .expect("create");
        }
        store
            .create(ROOT_ID, b"link", object(ObjectKind::Symlink, &[b'l'; 300]), NOW)
            .expect("symlink");
        let small = store
            .create(ROOT_ID, b"small", object(ObjectKind::Regular, b""), NOW)
            .expect("create")
            .id;
        let big = store
            .create(ROOT_ID, b"big", object(ObjectKind::Regular, b""), NOW)
            .expect("create")
            .id;
        let mut file = ContentFile2::new(&mut store, content(), small);
        file.write_at(0, &[1; 9000], NOW).expect("write");
        let mut file = ContentFile2::new(&mut store, content(), big);
        file.write_at(0, &[2; 8192], NOW).expect("write");
        file.write_at(130 * 4096, b"far", NOW).expect("write");
        // Extended attributes in xattr pages: inline and in a blob.
        store
            .set_xattr(small, b"user.inline", b"value", XattrMode::Any, NOW)
            .expect("setxattr");
        store
            .set_xattr(dir, b"user.blob", &[5; 2000], XattrMode::Any, NOW)
            .expect("setxattr");
        store.checkpoint(NOW).expect("checkpoint");
        // Journaled (blocks of the checkpoint), fresh, a tail resealed.
        let mut file = ContentFile2::new(&mut store, content(), small);
        file.write_at(100, &[3; 5000], NOW).expect("write");
        file.set_len(6000, NOW).expect("truncate");
        file.sync().expect("fsync");
        let mut file = ContentFile2::new(&mut store, content(), big);
        file.write_at(20 * 4096, &[4; 4096], NOW).expect("write");
        store
            .rename(dir, b"file-1", ROOT_ID, b"moved", RenameMode::Replace, NOW)
            .expect("rename");
        store.unlink(dir, b"file-2", NOW).expect("unlink");
        // And in the log: set and remove records.
        store
            .set_xattr(big, b"user.logged", &[6; 1500], XattrMode::Create, NOW)
            .expect("setxattr");
        store
            .remove_xattr(small, b"user.inline", NOW)
            .expect("removexattr");
        store.sync().expect("sync");
        store
            .create(ROOT_ID, b"tail", object(ObjectKind::Fifo, b""), NOW)
            .expect("create");
        backing.snapshot()
    })
}

fn edit(files: &mut BTreeMap<String, Vec<u8>>, items: &[u8]) {
    let names: Vec<String> = files.keys().cloned().collect();
    for item in items.chunks_exact(7) {
        let name = &names[usize::from(item[0]) % names.len()];
        let file = files.get_mut(name).expect("listed");
        let offset = u32::from_be_bytes([item[1], item[2], item[3], item[4]]) as usize;
        let at = offset % (file.len() + 1);
        match item[5] % 4 {
            0 if at < file.len() => file[at] ^= item[6],
            1 if at < file.len() => file[at] = item[6],
            2 => file.truncate(at),
            3 => file.insert(at, item[6]),
            _ => {}
        }
    }
}

/// Walks every directory from the root, reading every record and target.
fn walk(store: &mut Store) {
    let mut seen = BTreeSet::new();
    let mut stack = vec![ROOT_ID];
    while let Some(dir) = stack.pop() {
        if !seen.insert(dir) || seen.len() > 10_000 {
            continue;
        }
        let Ok(entries) = store.readdir(dir, 0, 100_000) else {
            continue;
        };
        for e in entries {
            let Ok(head) = store.lookup(dir, &e.name) else {
                continue;
            };
            if let Ok(names) = store.list_xattrs(head.id) {
                for name in names {
                    let _ = store.get_xattr(head.id, &name);
                }
            }
            let _ = store.set_xattr(head.id, b"user.fuzz", b"f", XattrMode::Any, NOW);
            match head.kind {
                ObjectKind::Directory => stack.push(head.id),
                ObjectKind::Symlink => {
                    let _ = store.readlink(head.id);
                }
                ObjectKind::Regular => {
                    let mut file = ContentFile2::new(store, content(), head.id);
                    let _ = file.read_at(0, 1 << 20);
                    let _ = file.write_at(4000, b"fuzz", NOW);
                }
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let backing = Arc::new(MemBacking::new());
    if shape & 1 == 0 {
        let mut files = base().clone();
        edit(&mut files, rest);
        backing.restore(files);
    } else {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let meta_len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (meta, segment) = rest.split_at(meta_len);
        let mut files = BTreeMap::new();
        files.insert("atrest.meta".to_owned(), meta.to_vec());
        files.insert(segment_name(1), segment.to_vec());
        backing.restore(files);
    }
    if let Ok(mut store) = Store::open(keys(), backing, CONFIG, content()) {
        walk(&mut store);
        // An opened store takes changes and checkpoints.
        let _ = store.create(ROOT_ID, b"fuzz", object(ObjectKind::Regular, b""), NOW);
        let _ = store.sync();
        let _ = store.checkpoint(NOW);
        walk(&mut store);
    }
});
