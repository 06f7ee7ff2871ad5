//! Signed tree heads and proofs through the log: every receipt carries a
//! head and an inclusion proof a host can check; consistency proofs join
//! any two heads; the outside review's attack is caught three ways; a log
//! from before tree heads is migrated.

use atrest_audit::*;

use crate::support::*;

#[tokio::test]
async fn every_receipt_carries_a_head_and_a_proof_a_host_accepts() {
    let t = sqlite_log(LogOptions::default()).await;
    let mut receipts = Vec::new();
    for i in 0..20 {
        receipts.push(t.log.append(entry(i)).await.unwrap());
    }
    let stored = t.log.store().read_entries(1, 100).await.unwrap();
    for (r, e) in receipts.iter().zip(&stored) {
        assert_eq!(r.tree_head.tree_size, r.seq, "one batch per append here");
        // What a host is sent, as JSON, and checks without the store.
        let e: Entry = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        let head: TreeHead =
            serde_json::from_str(&serde_json::to_string(&r.tree_head).unwrap()).unwrap();
        let proof: InclusionProof =
            serde_json::from_str(&serde_json::to_string(&r.inclusion).unwrap()).unwrap();
        verify_inclusion(&t.public, &e, &proof, &head).unwrap();
        // The batch's head text, shared by its receipts, is that head.
        let shared = r.tree_head_json.as_ref().expect("the batch's head text");
        assert_eq!(
            serde_json::from_str::<TreeHead>(shared.get()).unwrap(),
            r.tree_head
        );
    }
    // A host that kept the head of its release 3 checks the latest one.
    let latest = t.log.tree_head().unwrap();
    assert_eq!(latest, receipts[19].tree_head);
    for held in &receipts {
        let proof = t
            .log
            .consistency_proof(held.tree_head.tree_size, latest.tree_size)
            .unwrap();
        verify_consistency(&t.public, &held.tree_head, &latest, &proof).unwrap();
    }
    // A fresh inclusion proof of an old entry under the latest head.
    let proof = t.log.inclusion_proof(3, latest.tree_size).unwrap();
    verify_inclusion(&t.public, &stored[2], &proof, &latest).unwrap();
    assert_eq!(
        t.log.consistency_proof(5, 21),
        Err(ProofRequestError::NotSigned {
            size: 21,
            latest: 20
        })
    );
    assert!(t.log.inclusion_proof(0, 20).is_err());
    assert_eq!(t.log.stats().tree_heads, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_are_served_while_batches_commit() {
    let t = sqlite_log(LogOptions::default()).await;
    append_n(&t.log, 5).await;
    let first = t.log.tree_head().unwrap();
    let mut writers = Vec::new();
    for task in 0..16 {
        let log = t.log.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                let r = log.append(entry(task * 25 + i)).await.unwrap();
                assert_eq!(r.inclusion.tree_size, r.tree_head.tree_size);
                assert!(r.seq <= r.tree_head.tree_size);
            }
        }));
    }
    let log = t.log.clone();
    let public = t.public;
    let reader = tokio::spawn(async move {
        let mut checked = 0;
        while checked < 200 {
            let head = log.tree_head().unwrap();
            let proof = log
                .consistency_proof(first.tree_size, head.tree_size)
                .unwrap();
            verify_consistency(&public, &first, &head, &proof).unwrap();
            checked += 1;
            tokio::task::yield_now().await;
        }
    });
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    let report = verify(t.log.store(), &t.public).await.unwrap();
    assert_eq!(report.head.seq, 405);
    assert_eq!(report.latest_tree_head.unwrap().tree_size, 405);
    assert!(
        t.log.stats().batches < 400,
        "no batching: {:?}",
        t.log.stats()
    );
}

/// The outside review: entry 39 edited, the chain recomputed from 39, and
/// the checkpoints (and now tree heads) from 39 on deleted, with the
/// triggers dropped first. Before tree heads, `verify` said intact and a
/// restarted server signed over the forgery.
#[tokio::test]
async fn the_reviews_rewrite_of_entry_39_is_caught() {
    let t = sqlite_log(LogOptions {
        checkpoint_every: 10,
        ..LogOptions::default()
    })
    .await;
    append_n(&t.log, 48).await;
    let witness = t
        .log
        .store()
        .read_tree_heads(47, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(witness.tree_size, 47);

    let mut conn = tamper(&t.path()).await;
    let mut entries = t.log.store().read_entries(1, 100).await.unwrap();
    entries[38].details = r#"{"n":38,"released":false}"#.into();
    for i in 38..entries.len() {
        entries[i].prev_hash = entries[i - 1].hash;
        entries[i].hash = entries[i].compute_hash();
        sqlx::query("UPDATE audit_entries SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(entries[i].details.as_str())
            .bind(&entries[i].prev_hash.0[..])
            .bind(&entries[i].hash.0[..])
            .bind(entries[i].seq as i64)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    exec(&mut conn, "DELETE FROM audit_checkpoints WHERE seq >= 39").await;
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size >= 39",
    )
    .await;

    let err = verify(t.log.store(), &t.public).await.unwrap_err();
    assert!(matches!(err, VerifyError::Unsigned { seq: 39 }), "{err}");
    assert_eq!(err.first_bad_seq(), Some(39));

    let err = verify_with_witnesses(t.log.store(), &t.public, &[witness])
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::Forked { seq: 47 }), "{err}");

    let err = reopen(&t).await.err().unwrap();
    assert!(
        matches!(
            err,
            OpenError::DoesNotMatchSignedHead(VerifyError::Unsigned { seq: 39 })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn witnesses_catch_a_rollback_and_must_be_signed() {
    let t = sqlite_log(LogOptions::default()).await;
    append_n(&t.log, 12).await;
    let held = t.log.tree_head().unwrap();
    let early = t.log.store().read_tree_heads(5, 1).await.unwrap().remove(0);
    verify_with_witnesses(t.log.store(), &t.public, &[early, held])
        .await
        .unwrap();

    let mut forged = held;
    forged.tree_size = 11;
    let err = verify_with_witnesses(t.log.store(), &t.public, &[forged])
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::BadTreeHeadSignature { tree_size: 11 }),
        "{err}"
    );

    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DELETE FROM audit_entries WHERE seq > 8").await;
    exec(
        &mut conn,
        "DELETE FROM audit_tree_heads WHERE tree_size > 8",
    )
    .await;
    verify(t.log.store(), &t.public).await.unwrap();
    let err = verify_with_witnesses(t.log.store(), &t.public, &[early, held])
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::RolledBack { held: 12, head: 8 }),
        "{err}"
    );
}

/// Turns the test's database into what atrest wrote before tree heads:
/// schema version 1, no `audit_tree_heads` table.
async fn make_version_1(t: &TestLog) {
    let mut conn = tamper(&t.path()).await;
    exec(&mut conn, "DROP TABLE audit_tree_heads").await;
    exec(&mut conn, "PRAGMA user_version = 1").await;
}

/// A v1 log: entries and checkpoints written straight to the store, as the
/// old writer did.
async fn v1_log(n: u64) -> TestLog {
    let t = sqlite_log(LogOptions::default()).await;
    let key = AuditSigningKey::from_seed(&t.seed);
    let mut prev = EntryHash::GENESIS;
    for seq in 1..=n {
        let mut e = Entry {
            seq,
            timestamp_ms: 1_700_000_000_000 + seq,
            kind: EntryKind::Decision,
            actor: "keyd".into(),
            subject: Some(format!("web-{}", seq % 3)),
            details: format!(r#"{{"n":{seq}}}"#),
            prev_hash: prev,
            hash: EntryHash::GENESIS,
        };
        e.hash = e.compute_hash();
        prev = e.hash;
        let cp: Vec<Checkpoint> = (seq % 4 == 0)
            .then(|| key.sign_checkpoint(seq, e.hash, e.timestamp_ms))
            .into_iter()
            .collect();
        t.log.store().append(&[e], &cp, &[]).await.unwrap();
    }
    make_version_1(&t).await;
    t
}

#[tokio::test]
async fn a_log_from_before_tree_heads_is_verified_and_gets_its_first_head() {
    let t = v1_log(10).await;
    let log = reopen(&t).await.unwrap();
    let first = log.tree_head().unwrap();
    assert_eq!(first.tree_size, 10);
    first.verify(&t.public).unwrap();
    let report = verify(log.store(), &t.public).await.unwrap();
    assert_eq!((report.checkpoints, report.tree_heads), (2, 1));
    // It goes on with a head per batch, consistent with the first.
    let r = log.append(entry(10)).await.unwrap();
    assert_eq!(r.tree_head.tree_size, 11);
    let proof = log.consistency_proof(10, 11).unwrap();
    verify_consistency(&t.public, &first, &r.tree_head, &proof).unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(log.store().pool())
        .await
        .unwrap();
    assert_eq!(version, 2);
}

#[tokio::test]
async fn a_tampered_log_from_before_tree_heads_is_not_signed_over() {
    let t = v1_log(10).await;
    let mut conn = tamper(&t.path()).await;
    exec(
        &mut conn,
        "UPDATE audit_entries SET actor = 'nobody' WHERE seq = 6",
    )
    .await;
    let err = reopen(&t).await.err().unwrap();
    assert!(
        matches!(
            err,
            OpenError::DoesNotMatchSignedHead(VerifyError::HashMismatch { seq: 6 })
        ),
        "{err}"
    );
    let heads = t.log.store().read_tree_heads(1, 10).await.unwrap();
    assert!(heads.is_empty(), "nothing was signed: {heads:?}");
}

#[tokio::test]
async fn entries_added_past_the_latest_head_are_refused_at_open() {
    let t = sqlite_log(LogOptions::default()).await;
    append_n(&t.log, 5).await;
    // Someone without the key appends a well-chained entry.
    let mut e = t.log.store().read_entries(5, 1).await.unwrap().remove(0);
    e.seq = 6;
    e.prev_hash = e.hash;
    e.hash = e.compute_hash();
    t.log.store().append(&[e], &[], &[]).await.unwrap();
    let err = reopen(&t).await.err().unwrap();
    assert!(
        matches!(
            err,
            OpenError::DoesNotMatchSignedHead(VerifyError::Unsigned { seq: 6 })
        ),
        "{err}"
    );
}

/// A store whose `latest_tree_head` answers what it held before another
/// writer (a replica on the same database) committed more batches: what a
/// replica starting while the other writes reads first.
struct ReadBeforeAnotherWriter {
    inner: SqliteStore,
    stale: Option<TreeHead>,
    /// Hide every head past the stale one (as if those batches' entries
    /// had been added without the key).
    hide_newer: bool,
}

impl AuditStore for ReadBeforeAnotherWriter {
    async fn append(
        &self,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
        tree_heads: &[TreeHead],
    ) -> Result<(), StoreError> {
        self.inner.append(entries, checkpoints, tree_heads).await
    }

    async fn read_entries(&self, from: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        self.inner.read_entries(from, limit).await
    }

    async fn read_checkpoints(&self, from: u64, limit: u32) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.read_checkpoints(from, limit).await
    }

    async fn read_tree_heads(&self, from: u64, limit: u32) -> Result<Vec<TreeHead>, StoreError> {
        let stale = self.stale.map_or(0, |h| h.tree_size);
        let mut heads = self.inner.read_tree_heads(from, limit).await?;
        if self.hide_newer {
            heads.retain(|h| h.tree_size <= stale);
        }
        Ok(heads)
    }

    async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
        Ok(self.stale)
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.inner.head().await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.latest_checkpoint().await
    }
}

/// Found by killing replicas under load (crates/cli/tests/e2e/keyd.rs): a
/// replica starting while the other commits read the latest head, then
/// walked entries committed after that read, and refused to start
/// ("covered by no signed tree head") although every batch was signed.
#[tokio::test]
async fn a_log_opened_while_another_writer_commits_checks_the_newer_heads() {
    let t = sqlite_log(LogOptions::default()).await;
    append_n(&t.log, 3).await;
    let stale = t.log.store().latest_tree_head().await.unwrap();
    append_n(&t.log, 4).await;
    let (path, seed, clock) = (t.path(), t.seed, t.clock.clone());
    let open = |hide_newer| {
        let (path, clock) = (path.clone(), clock.clone());
        async move {
            let store = ReadBeforeAnotherWriter {
                inner: SqliteStore::open(&path).await.unwrap(),
                stale,
                hide_newer,
            };
            let key = AuditSigningKey::from_seed(&seed);
            AuditLog::open(store, key, LogOptions::default(), clock).await
        }
    };
    let log = open(false).await.unwrap();
    assert_eq!(log.head().seq, 7);
    assert_eq!(
        log.tree_head().unwrap().tree_size,
        7,
        "the newest head is served"
    );
    // Without the other writer's heads, its entries are unsigned.
    let err = open(true).await.err().unwrap();
    assert!(
        matches!(
            err,
            OpenError::DoesNotMatchSignedHead(VerifyError::Unsigned { seq: 4 })
        ),
        "{err}"
    );
}
