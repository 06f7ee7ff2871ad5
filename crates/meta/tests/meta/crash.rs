//! Power cuts at every point of a checkpoint: the store opens after each,
//! at the previous checkpoint or the new one, never anything else.

use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::sim::{Rng, SimDisk};
use atrest_meta::{NewObject, Store};

use crate::common::{CONFIG, at, keys};

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// name path → object kind, over the whole tree.
fn tree(store: &mut Store) -> BTreeMap<Vec<u8>, u8> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(ROOT_ID, Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        for e in store.readdir(dir, 0, usize::MAX).unwrap() {
            let mut full = path.clone();
            full.push(b'/');
            full.extend_from_slice(&e.name);
            if e.kind == ObjectKind::Directory {
                stack.push((e.id, full.clone()));
            }
            let head = store.lookup(dir, &e.name).unwrap();
            out.insert(full, head.kind.id());
        }
    }
    out
}

fn change(store: &mut Store, round: u32, rng: &mut Rng) {
    let kinds = [
        ObjectKind::Regular,
        ObjectKind::Directory,
        ObjectKind::Symlink,
    ];
    for i in 0..(20 + rng.below(200) as u32) {
        let kind = kinds[rng.below(3) as usize];
        let target = if rng.below(4) == 0 {
            vec![b'z'; 300]
        } else {
            b"t".to_vec()
        };
        let new = NewObject {
            kind,
            mode: 0o600,
            uid: 0,
            gid: 0,
            rdev: 0,
            target,
        };
        let name = format!("r{round}-{i}");
        store.create(ROOT_ID, name.as_bytes(), new, at(5)).unwrap();
        if rng.below(3) == 0 {
            let victim = format!("r{}-{}", round.saturating_sub(1), rng.below(20));
            let _ = store.unlink(ROOT_ID, victim.as_bytes(), at(5));
        }
    }
}

#[test]
fn a_power_cut_anywhere_in_a_checkpoint_leaves_the_old_or_the_new_state() {
    let mut rng = Rng::new(0x5eed);
    for trial in 0..200u32 {
        let disk = Arc::new(SimDisk::new());
        let mut store =
            Store::format(keys(GCM), disk.clone(), CONFIG, (0o700, 0, 0), at(1)).unwrap();
        let mut before = tree(&mut store);
        for round in 0..(1 + rng.below(4) as u32) {
            change(&mut store, round, &mut rng);
            store.checkpoint(at(6)).unwrap();
            before = tree(&mut store);
        }
        change(&mut store, 99, &mut rng);
        let after = tree(&mut store);
        disk.cut_power_after(rng.below(40));
        let completed = store.checkpoint(at(7)).is_ok();
        drop(store);
        disk.crash(&mut rng);
        let mut reopened = Store::open(keys(GCM), disk.clone(), CONFIG).unwrap_or_else(|e| {
            panic!("trial {trial}: the store does not open after the crash: {e}")
        });
        let found = tree(&mut reopened);
        if completed {
            assert_eq!(
                found, after,
                "trial {trial}: a completed checkpoint was lost"
            );
        } else {
            assert!(
                found == before || found == after,
                "trial {trial}: a state that never was"
            );
        }
        // And the store goes on from there.
        change(&mut reopened, 100, &mut rng);
        reopened.checkpoint(at(8)).unwrap();
    }
}
