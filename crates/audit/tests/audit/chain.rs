//! Appending, checkpoints and verification of an untouched log.

use atrest_audit::*;
use serde_json::json;

use crate::support::*;

fn every(n: u64) -> LogOptions {
    LogOptions {
        checkpoint_every: n,
        ..LogOptions::default()
    }
}

#[tokio::test]
async fn appended_entries_read_back_and_verify() {
    let t = sqlite_log(every(10)).await;
    let mut receipts = Vec::new();
    for i in 0..25 {
        receipts.push(t.log.append(entry(i)).await.unwrap());
    }
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );

    let stored = t.log.store().read_entries(1, 100).await.unwrap();
    assert_eq!(stored.len(), 25);
    for (i, (e, r)) in stored.iter().zip(&receipts).enumerate() {
        assert_eq!(
            (e.seq, e.hash, e.timestamp_ms),
            (r.seq, r.hash, r.timestamp_ms)
        );
        assert_eq!(e.kind, EntryKind::Request);
        assert_eq!(
            e.subject.as_deref(),
            Some(format!("web-{}", i % 7).as_str())
        );
        assert_eq!(e.details_value().unwrap()["n"], json!(i));
    }

    let report = verify(t.log.store(), &t.public).await.unwrap();
    assert_eq!(report.head, t.log.head());
    assert_eq!(report.head.seq, 25);
    assert_eq!(report.checkpoints, 2, "checkpoints at 10 and 20");
    assert_eq!(report.latest_checkpoint.unwrap().seq, 20);
    assert_eq!(report.unsealed, 5);
    // ...but every entry is under a signed tree head, one per batch.
    assert_eq!(report.tree_heads, 25);
    assert_eq!(report.latest_tree_head, t.log.tree_head());
    assert_eq!(report.latest_tree_head.unwrap().tree_size, 25);
    // Each receipt carries the checkpoint current when it committed.
    assert_eq!(receipts[9].checkpoint.unwrap().seq, 10);
    assert_eq!(receipts[24].checkpoint.unwrap().seq, 20);
    verify_against(t.log.store(), &t.public, &receipts[24].checkpoint.unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn checkpoints_on_demand() {
    let t = sqlite_log(every(1000)).await;
    assert_eq!(t.log.checkpoint().await.unwrap_err(), AppendError::EmptyLog);
    append_n(&t.log, 3).await;
    let cp = t.log.checkpoint().await.unwrap();
    assert_eq!((cp.seq, cp.head_hash), (3, t.log.head().hash));
    cp.verify(&t.public).unwrap();
    // Nothing new: the same checkpoint, and no second row.
    assert_eq!(t.log.checkpoint().await.unwrap(), cp);
    assert_eq!(t.log.store().read_checkpoints(1, 10).await.unwrap(), [cp]);
    assert_eq!(t.log.latest_checkpoint(), Some(cp));
    assert_eq!(t.log.stats().checkpoints, 1);
}

#[tokio::test]
async fn a_reopened_log_continues_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuditSigningKey::generate();
    let seed = key.expose_seed();
    let path = db_path(dir.path());
    let log = AuditLog::open(
        SqliteStore::open(&path).await.unwrap(),
        key,
        every(4),
        SystemClock,
    )
    .await
    .unwrap();
    append_n(&log, 6).await;
    let head = log.head();
    drop(log);

    let key = AuditSigningKey::from_seed(&seed);
    let public = key.public_key();
    let log = AuditLog::open(
        SqliteStore::open(&path).await.unwrap(),
        key,
        every(4),
        SystemClock,
    )
    .await
    .unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.latest_checkpoint().unwrap().seq, 4);
    let receipt = log.append(entry(6)).await.unwrap();
    assert_eq!(receipt.seq, 7);
    assert_eq!(verify(log.store(), &public).await.unwrap().head.seq, 7);
}

#[tokio::test]
async fn a_log_signed_by_another_key_is_not_extended() {
    let t = sqlite_log(every(2)).await;
    append_n(&t.log, 3).await;
    let store = SqliteStore::open(&t.path()).await.unwrap();
    let err = AuditLog::open(store, AuditSigningKey::generate(), every(2), SystemClock)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::ForeignTreeHead(_)), "{err}");
}

#[tokio::test]
async fn time_never_goes_backwards_along_the_chain() {
    let t = sqlite_log(every(1000)).await;
    t.log.append(entry(0)).await.unwrap();
    t.clock.set(1_000);
    let second = t.log.append(entry(1)).await.unwrap();
    assert_eq!(second.timestamp_ms, 1_800_000_000_000);
    t.clock.set(1_900_000_000_000);
    let third = t.log.append(entry(2)).await.unwrap();
    assert_eq!(third.timestamp_ms, 1_900_000_000_000);
    verify(t.log.store(), &t.public).await.unwrap();
}

#[tokio::test]
async fn malformed_entries_are_refused_before_the_queue() {
    let t = sqlite_log(every(1000)).await;
    let bad = [
        NewEntry::new(EntryKind::Revoke, ""),
        NewEntry::new(EntryKind::Revoke, "a\nb"),
        NewEntry::new(EntryKind::Revoke, "x".repeat(MAX_NAME_LEN + 1)),
        NewEntry::new(EntryKind::Revoke, "cli").subject("\u{7}"),
        NewEntry::new(EntryKind::Revoke, "cli").details(json!("y".repeat(MAX_DETAILS_LEN))),
    ];
    for entry in bad {
        assert!(matches!(
            t.log.append(entry).await,
            Err(AppendError::Invalid(_))
        ));
    }
    assert_eq!(t.log.head().seq, 0);
    assert_eq!(t.log.stats().batches, 0);
}

#[tokio::test]
async fn the_database_refuses_updates_and_deletes() {
    let t = sqlite_log(every(2)).await;
    append_n(&t.log, 2).await;
    let pool = t.log.store().pool();
    for sql in [
        "UPDATE audit_entries SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 2",
        "UPDATE audit_checkpoints SET timestamp_ms = 0",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_tree_heads SET timestamp_ms = 0",
        "DELETE FROM audit_tree_heads",
    ] {
        let err = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    verify(t.log.store(), &t.public).await.unwrap();
}

#[tokio::test]
async fn entries_show_as_json_for_tail() {
    let t = sqlite_log(every(1000)).await;
    t.log
        .append(
            NewEntry::new(EntryKind::Approval, "alice")
                .subject("db-2")
                .details(json!({"approved": true, "request": "r-17"})),
        )
        .await
        .unwrap();
    let entries = t.log.store().read_entries(1, 1).await.unwrap();
    let json = serde_json::to_value(&entries[0]).unwrap();
    assert_eq!(json["kind"], "approval");
    assert_eq!(json["actor"], "alice");
    assert_eq!(json["details"]["request"], "r-17");
    assert_eq!(json["prev_hash"], "A".repeat(43));
}
