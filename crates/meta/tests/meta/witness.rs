//! The witness hooks of the store (format.md §16.16 step 4, §16.17.4):
//! the check sees the authenticated superblock before recovery writes
//! anything, an accepted rollback moves the log past the witnessed
//! sequence, and an acknowledged generation (`WITNESSED`) stays in the
//! lineage however many checkpoints follow.

use std::sync::Arc;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::sim::{Rng, SimDisk};
use atrest_meta::superblock::{Generation, Superblock};
use atrest_meta::witness::{LocalWitness, Standing, Witness, judge};
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

const VAULT: [u8; 16] = [0x17; 16];

/// `w` as a witness that saw it, for `judge`.
fn witnessed(w: Generation) -> LocalWitness {
    LocalWitness {
        vault_id: VAULT,
        generation: w,
        config_generation: CONFIG.generation,
        time_ms: 0,
    }
}

/// `n` checkpoints, each after a change, as a mount under writes.
fn checkpoints(store: &mut Store, n: u32, t: i64) {
    for i in 0..n {
        let name = format!("f{t}-{i}");
        store
            .create(
                ROOT_ID,
                name.as_bytes(),
                object(ObjectKind::Regular, b""),
                at(t),
            )
            .unwrap();
        store.checkpoint(at(t)).unwrap();
    }
}

const AUTHORITY: Witness = Witness::Authority([0xa1; 32]);

/// The false alarm `WITNESSED` closes (§16.17.4): a `W` acknowledged, then
/// more checkpoints than `recent` holds without another report; the
/// vault is still current against it (in the store, after a reopen), and
/// still forked against a `W` it never acknowledged and older than a
/// later one. The same without the acknowledgement is forked.
#[test]
fn an_acknowledged_generation_stays_in_the_lineage_past_31_checkpoints() {
    let (mut store, backing) = new_store(GCM);
    let (mut control, _) = new_store(GCM);
    checkpoints(&mut store, 1, 2);
    checkpoints(&mut control, 1, 2);
    let w = store.superblock().generation;
    let w_control = control.superblock().generation;
    assert!(store.acknowledge(w, AUTHORITY, at(3)).unwrap());
    assert!(
        !store.acknowledge(w, AUTHORITY, at(3)).unwrap(),
        "the same acknowledgement again (a heartbeat) writes nothing"
    );
    assert_eq!(store.acknowledged(), &[w]);
    checkpoints(&mut store, 40, 4);
    checkpoints(&mut control, 40, 4);
    let never = store.superblock().recent.last().copied().unwrap();
    drop(store);
    let store = reopen(&backing, GCM);
    let sb = store.superblock();
    assert!(!sb.recent.contains(&w), "out of recent: {sb:?}");
    assert_eq!(sb.acknowledged, vec![w]);
    assert_eq!(judge(sb, &witnessed(w)), Standing::Current);
    assert_eq!(
        judge(control.superblock(), &witnessed(w_control)),
        Standing::Forked,
        "without WITNESSED, the false alarm"
    );
    // A generation between W and the oldest recent one, never
    // acknowledged: out of the lineage, so forked.
    let gone = Generation {
        checkpoint: never.checkpoint - 1,
        sequence: never.sequence - 2,
        chain: [0x5a; 32],
    };
    assert_eq!(judge(sb, &witnessed(gone)), Standing::Forked);
    let mut other = w;
    other.chain[0] ^= 1;
    assert_eq!(judge(sb, &witnessed(other)), Standing::Forked);
    // A witness that saw more than the disk holds: older.
    let later = Generation {
        checkpoint: sb.generation.checkpoint + 1,
        sequence: sb.generation.sequence + 1,
        chain: [0x77; 32],
    };
    assert_eq!(judge(sb, &witnessed(later)), Standing::Older);
}

/// A witness that acknowledges a newer generation drops its older one,
/// unless another witness holds it too; the list keeps the newest first,
/// and a replay of the log rebuilds it as it was written.
#[test]
fn a_newer_acknowledgement_replaces_the_witness_s_older_one() {
    let other = Witness::Authority([0xb2; 32]);
    let (mut store, backing) = new_store(GCM);
    checkpoints(&mut store, 1, 2);
    let w1 = store.superblock().generation;
    store.acknowledge(w1, AUTHORITY, at(3)).unwrap();
    store.acknowledge(w1, other, at(3)).unwrap();
    checkpoints(&mut store, 1, 4);
    let w2 = store.superblock().generation;
    store.acknowledge(w2, AUTHORITY, at(5)).unwrap();
    assert_eq!(store.acknowledged(), &[w2, w1], "w1 is the other's still");
    store.acknowledge(w2, other, at(5)).unwrap();
    assert_eq!(store.acknowledged(), &[w2]);
    store.acknowledge(w1, Witness::Local, at(5)).unwrap();
    assert_eq!(store.acknowledged(), &[w1, w2]);
    let expected = store.acknowledged().to_vec();
    // Killed before a checkpoint: the replayed records list the same.
    store.sync().unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(store.acknowledged(), &expected[..]);
    store.checkpoint(at(6)).unwrap();
    assert_eq!(store.superblock().acknowledged, expected);
}

/// The power cut anywhere between the check and the record, the record and
/// its sync, or during the checkpoint after it: the vault always opens
/// current against `W` (the superblock the check judged is unchanged until
/// a checkpoint, which makes the record durable first); where the record
/// survived it is listed from then on, and where it did not, the mount
/// that opens the vault next logs it again from the authority's answer.
#[test]
fn a_power_cut_around_the_record_never_makes_w_a_fork() {
    let mut rng = Rng::new(9);
    let mut survived = 0;
    let mut lost = 0;
    for cut in 0..24 {
        let disk = Arc::new(SimDisk::new());
        let mut store =
            Store::format(keys(GCM), disk.clone(), CONFIG, (0o700, 0, 0), at(1)).unwrap();
        checkpoints(&mut store, 1, 2);
        let w = store.superblock().generation;
        disk.cut_power_after(cut);
        let _ = store
            .acknowledge(w, AUTHORITY, at(3))
            .and_then(|_| store.sync())
            .and_then(|()| store.checkpoint(at(4)).map(drop));
        drop(store);
        disk.crash(&mut rng);
        let mut store = Store::open(keys(GCM), disk.clone(), CONFIG, &NoContents).unwrap();
        assert_eq!(
            judge(store.superblock(), &witnessed(w)),
            Standing::Current,
            "cut {cut}"
        );
        if store.acknowledged().contains(&w) {
            survived += 1;
        } else {
            lost += 1;
            // The next mount's check passes and logs it again.
            store.acknowledge(w, AUTHORITY, at(5)).unwrap();
        }
        checkpoints(&mut store, 40, 6);
        assert_eq!(
            judge(store.superblock(), &witnessed(w)),
            Standing::Current,
            "cut {cut}, 40 checkpoints later"
        );
    }
    assert!(survived > 0 && lost > 0, "{survived} survived, {lost} lost");
}

/// The unmount's report is accepted after the last checkpoint: its
/// record, logged and synced after it, is replayed by the next open (no
/// recovery: nothing of the tree changed) and listed by its first
/// checkpoint.
#[test]
fn an_acknowledgement_after_the_last_checkpoint_is_listed_next_time() {
    let (mut store, backing) = new_store(GCM);
    checkpoints(&mut store, 1, 2);
    let last = store.close(at(3)).unwrap();
    store.acknowledge(last, AUTHORITY, at(4)).unwrap();
    store.sync().unwrap();
    drop(store);
    let mut store = reopen(&backing, GCM);
    assert_eq!(store.recovery(), None);
    assert_eq!(store.acknowledged(), &[last]);
    checkpoints(&mut store, 40, 5);
    assert_eq!(store.superblock().acknowledged, vec![last]);
    assert_eq!(
        judge(store.superblock(), &witnessed(last)),
        Standing::Current
    );
}
