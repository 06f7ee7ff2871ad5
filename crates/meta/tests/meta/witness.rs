//! The witness hooks of the store (format.md §16.16 step 4, §16.17.4):
//! the check sees the authenticated superblock before recovery writes
//! anything, and an accepted rollback moves the log past the witnessed
//! sequence.

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::superblock::{Generation, Superblock};
use atrest_meta::{MetaError, NoContents, Store};

use crate::common::{CONFIG, at, keys, new_store, reopen};
use crate::tamper::object;

const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;

/// A log holding records past the last checkpoint (the mount was killed):
/// the check is shown that checkpoint, and its refusal leaves every byte of
/// the backing as it was; accepted, the store recovers as `open` does.
#[test]
fn the_check_sees_the_checkpoint_before_recovery_writes() {
    let (mut store, backing) = new_store(GCM);
    store
        .create(ROOT_ID, b"a", object(ObjectKind::Regular, b""), at(2))
        .unwrap();
    let checkpointed = store.checkpoint(at(3)).unwrap();
    store
        .create(ROOT_ID, b"b", object(ObjectKind::Regular, b""), at(4))
        .unwrap();
    store.sync().unwrap();
    drop(store);
    let before = backing.snapshot();
    let mut seen = None;
    let refused = Store::open_witnessed(
        keys(GCM),
        backing.clone(),
        CONFIG,
        &NoContents,
        |superblock: &Superblock, _: &atrest_meta::MetaKeys| {
            seen = Some(superblock.generation);
            Err::<(), _>(MetaError::Inconsistent("refused by the test".into()))
        },
    );
    assert!(refused.is_err());
    assert_eq!(seen, Some(checkpointed));
    assert!(
        backing.snapshot() == before,
        "a refusal wrote to the backing"
    );
    let mut store = Store::open_witnessed(
        keys(GCM),
        backing.clone(),
        CONFIG,
        &NoContents,
        |_: &Superblock, _: &atrest_meta::MetaKeys| Ok::<(), MetaError>(()),
    )
    .unwrap();
    assert!(
        store.lookup(ROOT_ID, b"b").is_ok(),
        "recovered as open does"
    );
}

/// `accept_rollback` logs `ROLLBACK_ACCEPTED` past the witnessed
/// sequence and checkpoints: every later generation is ahead of the
/// witnessed one, and the vault reopens.
#[test]
fn an_accepted_rollback_jumps_past_the_witnessed_sequence() {
    let (mut store, backing) = new_store(GCM);
    store
        .create(ROOT_ID, b"a", object(ObjectKind::Regular, b""), at(2))
        .unwrap();
    let disk = store.checkpoint(at(3)).unwrap();
    let witnessed = Generation {
        checkpoint: disk.checkpoint + 5,
        sequence: disk.sequence + 100,
        chain: [0xee; 32],
    };
    let accepted = store.accept_rollback(witnessed, 0, at(4)).unwrap();
    assert!(accepted.sequence > witnessed.sequence, "{accepted:?}");
    assert_eq!(accepted.checkpoint, disk.checkpoint + 1);
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(store.superblock().generation, accepted);
    assert!(store.lookup(ROOT_ID, b"a").is_ok());
    store
        .create(ROOT_ID, b"after", object(ObjectKind::Regular, b""), at(5))
        .unwrap();
    let next = store.checkpoint(at(6)).unwrap();
    assert!(next.sequence > accepted.sequence);
    assert_eq!(store.superblock().recent.first(), Some(&accepted));
}
