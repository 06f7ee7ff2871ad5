//! Changes made directly in the SQLite file: `verify` names the first bad
//! entry or head, a restarted server refuses the log, and a held checkpoint
//! or tree head catches what the log alone cannot.

use atrest_audit::*;
use sqlx::sqlite::SqliteConnection;

use crate::support::*;

/// 30 entries, one batch each (so tree heads at every size), with
/// checkpoints at 10, 20 and 30.
async fn log30() -> TestLog {
    let t = sqlite_log(LogOptions {
        checkpoint_every: 10,
        ..LogOptions::default()
    })
    .await;
    append_n(&t.log, 30).await;
    assert_eq!(t.log.latest_checkpoint().unwrap().seq, 30);
    t
}

async fn first_bad(t: &TestLog) -> (u64, VerifyError) {
    let err = verify(t.log.store(), &t.public).await.unwrap_err();
    (err.first_bad_seq().unwrap(), err)
}

/// Rewrites entries `from..` so each matches its hash and links to the one
/// before: what an attacker without the audit key can do at best.
async fn rehash_from(t: &TestLog, conn: &mut SqliteConnection, from: u64) {
    let mut entries = t.log.store().read_entries(1, 1000).await.unwrap();
    for i in (from as usize - 1)..entries.len() {
        if i > 0 {
            entries[i].prev_hash = entries[i - 1].hash;
        }
        entries[i].hash = entries[i].compute_hash();
        sqlx::query("UPDATE audit_entries SET prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&entries[i].prev_hash.0[..])
            .bind(&entries[i].hash.0[..])
            .bind(entries[i].seq as i64)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_edited_entry_is_named() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET details = '{\"n\":999}' WHERE seq = 12",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert_eq!(seq, 12);
    assert!(
        matches!(err, VerifyError::HashMismatch { seq: 12 }),
        "{err}"
    );
}

#[tokio::test]
async fn an_edited_and_rehashed_entry_breaks_the_next_link() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET actor = 'nobody' WHERE seq = 12",
    )
    .await;
    let mut e = t.log.store().read_entries(12, 1).await.unwrap().remove(0);
    e.hash = e.compute_hash();
    sqlx::query("UPDATE audit_entries SET hash = ? WHERE seq = 12")
        .bind(&e.hash.0[..])
        .execute(&mut conn)
        .await
        .unwrap();
    // The head over entry 12 names the old root...
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::TreeHeadMismatch { tree_size: 12 }),
        "{err}"
    );
    assert_eq!(seq, 12);
    // ...and without the heads, the chain still breaks at the next entry.
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size >= 12",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(matches!(err, VerifyError::BrokenLink { seq: 13 }), "{err}");
    assert_eq!(seq, 13);
    assert!(err.to_string().contains("entry 12"), "{err}");
}

#[tokio::test]
async fn a_rewritten_chain_contradicts_its_signed_head() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET actor = 'nobody' WHERE seq = 12",
    )
    .await;
    rehash_from(&t, &mut conn, 12).await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::TreeHeadMismatch { tree_size: 12 }),
        "{err}"
    );
    assert_eq!(seq, 12);
}

#[tokio::test]
async fn a_rewritten_chain_without_heads_contradicts_the_next_checkpoint() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET actor = 'nobody' WHERE seq = 12",
    )
    .await;
    rehash_from(&t, &mut conn, 12).await;
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size >= 12",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::CheckpointMismatch { seq: 20 }),
        "{err}"
    );
    assert_eq!(seq, 20);
}

#[tokio::test]
async fn a_deleted_entry_is_named() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DELETE FROM audit_entries WHERE seq = 7").await;
    let (seq, err) = first_bad(&t).await;
    assert!(matches!(err, VerifyError::MissingEntry { seq: 7 }), "{err}");
    assert_eq!(seq, 7);
}

#[tokio::test]
async fn deleting_the_first_entry_is_caught() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DELETE FROM audit_entries WHERE seq = 1").await;
    assert_eq!(first_bad(&t).await.0, 1);
}

#[tokio::test]
async fn swapped_entries_are_named() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET seq = 1000 WHERE seq = 5",
    )
    .await;
    exec(&mut conn, "UPDATE audit_entries SET seq = 5 WHERE seq = 6").await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET seq = 6 WHERE seq = 1000",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(matches!(err, VerifyError::HashMismatch { seq: 5 }), "{err}");
    assert_eq!(seq, 5);
}

#[tokio::test]
async fn an_entry_moved_to_the_end_is_caught() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "UPDATE audit_entries SET seq = 31 WHERE seq = 3").await;
    assert_eq!(first_bad(&t).await.0, 3);
}

#[tokio::test]
async fn a_forged_checkpoint_is_named() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_checkpoints SET timestamp_ms = timestamp_ms + 1 WHERE seq = 20",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::BadCheckpointSignature { seq: 20 }),
        "{err}"
    );
    assert_eq!(seq, 20);
}

#[tokio::test]
async fn another_audit_key_fails_at_the_first_head() {
    let t = log30().await;
    let other = AuditSigningKey::generate().public_key();
    let err = verify(t.log.store(), &other).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::BadTreeHeadSignature { tree_size: 1 }),
        "{err}"
    );
}

#[tokio::test]
async fn a_forged_tree_head_is_named() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_tree_heads SET timestamp_ms = timestamp_ms + 1 WHERE tree_size = 17",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::BadTreeHeadSignature { tree_size: 17 }),
        "{err}"
    );
    assert_eq!(seq, 17);
}

#[tokio::test]
async fn a_truncated_tail_under_a_checkpoint_is_caught() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DELETE FROM audit_entries WHERE seq > 25").await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(
            err,
            VerifyError::TreeHeadBeyondHead {
                tree_size: 26,
                head: 25
            }
        ),
        "{err}"
    );
    assert_eq!(seq, 26);
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size > 25",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::CheckpointBeyondHead { seq: 30, head: 25 }),
        "{err}"
    );
    assert_eq!(seq, 30);
}

#[tokio::test]
async fn a_rollback_passes_alone_but_not_against_a_held_checkpoint() {
    let t = log30().await;
    let held = t.log.latest_checkpoint().unwrap();
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DELETE FROM audit_entries WHERE seq > 15").await;
    exec(&mut conn, "DELETE FROM audit_checkpoints WHERE seq > 10").await;
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size > 15",
    )
    .await;
    // The rolled-back log is self-consistent...
    let report = verify(t.log.store(), &t.public).await.unwrap();
    assert_eq!(report.head.seq, 15);
    // ...but not with what a host was given.
    let err = verify_against(t.log.store(), &t.public, &held)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::RolledBack { held: 30, head: 15 }),
        "{err}"
    );
    assert_eq!(err.first_bad_seq(), Some(16));
}

#[tokio::test]
async fn a_rewritten_log_without_checkpoints_forks_from_a_held_one() {
    let t = log30().await;
    let held = t.log.latest_checkpoint().unwrap();
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DELETE FROM audit_checkpoints").await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET subject = 'someone-else' WHERE seq = 4",
    )
    .await;
    rehash_from(&t, &mut conn, 4).await;
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size >= 4",
    )
    .await;
    // Alone, the log shows entries no head covers...
    let err = verify(t.log.store(), &t.public).await.unwrap_err();
    assert!(matches!(err, VerifyError::Unsigned { seq: 4 }), "{err}");
    // ...and against the held checkpoint, where it forked.
    let err = verify_against(t.log.store(), &t.public, &held)
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::Forked { seq: 30 }), "{err}");
}

#[tokio::test]
async fn a_held_checkpoint_must_itself_be_signed() {
    let t = log30().await;
    let mut held = t.log.latest_checkpoint().unwrap();
    held.seq = 25;
    let err = verify_against(t.log.store(), &t.public, &held)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::BadCheckpointSignature { seq: 25 }),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreadable_row_is_named() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET kind = 'bogus' WHERE seq = 4",
    )
    .await;
    let (seq, err) = first_bad(&t).await;
    assert!(
        matches!(err, VerifyError::Unreadable { seq: 4, .. }),
        "{err}"
    );
    assert_eq!(seq, 4);
}

#[tokio::test]
async fn a_log_with_a_tampered_head_is_not_reopened() {
    let t = log30().await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET actor = 'x' WHERE seq = 30",
    )
    .await;
    let err = reopen(&t).await.err().unwrap();
    assert!(
        matches!(
            err,
            OpenError::DoesNotMatchSignedHead(VerifyError::HashMismatch { seq: 30 })
        ),
        "{err}"
    );
}
