//! The superblock's *migrating* state (format.md §16.5 state 3, §16.19):
//! written by the first checkpoint of a migration and by every one after
//! it, refused by every open but the migration's (whose `MOUNT` record
//! has reason 3), kept through a crash the migration's open recovers,
//! and set to *clean* by the migration's last checkpoint.

use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::log::{BackingSegments, Body, Start, replay};
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::superblock::State;
use atrest_meta::{MemBacking, MetaError, NoContents, Store};

use crate::common::{CONFIG, at, keys};
use crate::tamper::object;

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// The reasons of the `MOUNT` records the log holds after `store`'s
/// superblock.
fn mount_reasons(store: &Store, backing: &MemBacking) -> Vec<u8> {
    let sb = store.superblock();
    let start = Start {
        segment: sb.replay_segment,
        offset: sb.replay_offset,
        next_seq: sb.generation.sequence + 1,
        chain: sb.generation.chain,
    };
    replay(store.keys(), &BackingSegments::new(backing), start)
        .unwrap()
        .records
        .into_iter()
        .filter_map(|r| match r.body {
            Body::Mount { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// The state the newer superblock on the disk says.
fn disk_state(backing: &MemBacking) -> State {
    atrest_meta::status::read_unverified(backing, GCM.overhead())
        .unwrap()
        .state
}

fn open_migrating(backing: &Arc<MemBacking>) -> Store {
    Store::open_migrating(keys(GCM), backing.clone(), CONFIG, &NoContents).unwrap()
}

#[test]
fn only_the_migration_opens_a_vault_its_superblock_says_is_migrating() {
    let backing = Arc::new(MemBacking::new());
    let mut store =
        Store::format(keys(GCM), backing.clone(), CONFIG, (0o755, 0, 0), at(1)).unwrap();
    store.begin_migration(at(2)).unwrap();
    drop(store);
    assert_eq!(disk_state(&backing), State::Migrating);

    let refused = Store::open(keys(GCM), backing.clone(), CONFIG, &NoContents).err();
    assert!(matches!(refused, Some(MetaError::Migrating)), "{refused:?}");
    let message = MetaError::Migrating.to_string();
    assert!(message.contains("run `atrest migrate`"), "{message}");

    // The migration's open: MOUNT reason 3, and its checkpoints say
    // migrating.
    let mut store = open_migrating(&backing);
    assert_eq!(mount_reasons(&store, &backing), [3]);
    store
        .create(ROOT_ID, b"f", object(ObjectKind::Regular, b""), at(3))
        .unwrap();
    store.checkpoint(at(4)).unwrap();
    assert_eq!(disk_state(&backing), State::Migrating);
    // A crash after a change: the migration's open recovers it and stays
    // migrating (not *recovered*: the migration converts again what a
    // crash lost).
    store
        .create(ROOT_ID, b"g", object(ObjectKind::Regular, b""), at(5))
        .unwrap();
    store.sync().unwrap();
    drop(store);
    let mut store = open_migrating(&backing);
    assert!(store.recovery().is_some());
    assert_eq!(
        disk_state(&backing),
        State::Migrating,
        "the recovery's checkpoint"
    );
    assert!(store.lookup(ROOT_ID, b"g").is_ok());
    assert!(matches!(
        Store::open(keys(GCM), backing.clone(), CONFIG, &NoContents),
        Err(MetaError::Migrating)
    ));

    // The last checkpoint: clean, and a mount opens it (MOUNT reason 1).
    store.finish_migration(at(6)).unwrap();
    drop(store);
    assert_eq!(disk_state(&backing), State::Clean);
    let store = Store::open(keys(GCM), backing.clone(), CONFIG, &NoContents).unwrap();
    assert_eq!(mount_reasons(&store, &backing), [1]);
}
