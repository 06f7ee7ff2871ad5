//! The stores' schema migrations: a database written by an earlier
//! schema version opens, keeps its rows and gains the held requests, the
//! scoped tables, the web sessions, the witness (the witnessed
//! generations and each policy's `rollback` rule) and the approval page's
//! login counts; and the login counts themselves, on both backends.

#![allow(clippy::unwrap_used)]

use atrest_remote::{HostId, HostIdentity, KeyId};

use super::*;
use crate::secrets_key::StoreKeys;

/// What turns a database of this schema into one of the previous (SQLite
/// 7, PostgreSQL 6): no scope buckets, no records epoch.
const SQLITE_WITHOUT_BUCKETS: &[&str] = &[
    "DROP TABLE scope_buckets",
    "DROP TABLE records_epoch",
    "DROP INDEX scopes_by_bucket",
    "ALTER TABLE scopes DROP COLUMN bucket",
];
const PG_WITHOUT_BUCKETS: &[&str] = &[
    "DROP TABLE keyd_scope_buckets",
    "DROP TABLE keyd_records_epoch",
    "ALTER TABLE keyd_scopes DROP COLUMN bucket",
];

/// A host enrolled in `storage`, as an older keyd would have left it.
async fn enroll_host(storage: &impl Storage, name: &str) -> HostRecord {
    enroll_host_with_token(storage, name, [9; 32]).await
}

async fn enroll_host_with_token(storage: &impl Storage, name: &str, token: [u8; 32]) -> HostRecord {
    let host = HostRecord {
        id: HostId::new(name).unwrap(),
        group: "web".into(),
        public_key: HostIdentity::generate().public_key(),
        key_id: KeyId([1; 16]),
        previous_key_id: None,
        state: HostState::Active,
        enrolled_at: 1,
    };
    storage.insert_token(token, "web", 100).await.unwrap();
    let (_, held) = storage
        .enroll(token, 2, &host, &[3; 32])
        .await
        .unwrap()
        .unwrap();
    held.commit().await.unwrap();
    host
}

fn held(id: &str, host: &HostId) -> StoredHeld {
    StoredHeld {
        id: id.into(),
        host_id: host.clone(),
        state: HeldState::Pending,
        decided_by: None,
        created_at: 10,
        expires_at: 610,
        poll_token_hash: [4; 32],
        request: b"{}".to_vec(),
        sealed_grant: None,
    }
}

/// The scoped tables work: an app, a scope with a key under its bucket's
/// key, a rotation, a window, a shred (which replaces the bucket's key:
/// a write under the old one is refused).
async fn check_scoped(storage: &impl Storage) {
    let bucket = storage.scope_bucket(7).await.unwrap();
    assert_eq!(bucket.wrapped.len(), crate::secrets_key::WRAPPED_LEN);
    let app = StoredApp {
        name: "web".into(),
        token_hash: [5; 32],
        policy: "{}".into(),
        created_at: 7,
    };
    assert!(storage.insert_app(&app).await.unwrap());
    assert!(!storage.insert_app(&app).await.unwrap());
    assert_eq!(
        storage.app_by_token([5; 32]).await.unwrap(),
        Some(app.clone())
    );
    assert_eq!(storage.apps().await.unwrap(), vec![app.clone()]);
    let scope = StoredScope {
        id: "user:1".into(),
        needs_client_share: true,
        minimum_version: 1,
        shredded: false,
        created_at: 8,
        keys: vec![(1, vec![1, 2, 3])],
        window: None,
        bucket: Some(bucket.clone()),
    };
    assert_eq!(storage.scope("user:1").await.unwrap(), None);
    assert!(storage.insert_scope(&scope).await.unwrap());
    // Each read below comes after a write that changed the row (a cached
    // store must answer the new row, not what it read before).
    assert_eq!(
        storage.scope("user:1").await.unwrap().as_ref(),
        Some(&scope)
    );
    assert!(!storage.insert_scope(&scope).await.unwrap());
    let stale = StoredBucket {
        number: 7,
        wrapped: vec![0; crate::secrets_key::WRAPPED_LEN],
    };
    assert!(
        !storage
            .add_scope_key("user:1", 2, &[4, 5], &stale)
            .await
            .unwrap()
    );
    assert!(
        storage
            .add_scope_key("user:1", 2, &[4, 5], &bucket)
            .await
            .unwrap()
    );
    assert_eq!(
        storage.scope("user:1").await.unwrap().unwrap().keys.len(),
        2
    );
    assert!(
        !storage
            .add_scope_key("user:1", 2, &[6], &bucket)
            .await
            .unwrap()
    );
    assert!(
        !storage
            .add_scope_key("user:none", 1, &[6], &bucket)
            .await
            .unwrap()
    );
    assert!(storage.set_scope_minimum("user:1", 2).await.unwrap());
    assert_eq!(
        storage
            .scope("user:1")
            .await
            .unwrap()
            .unwrap()
            .minimum_version,
        2
    );
    let window = StoredWindow {
        start: 120,
        end: 180,
        fields: "[\"users.email\"]".into(),
    };
    assert!(
        storage
            .set_scope_window("user:1", Some(&window))
            .await
            .unwrap()
    );
    let stored = storage.scope("user:1").await.unwrap().unwrap();
    assert_eq!(stored.keys, vec![(1, vec![1, 2, 3]), (2, vec![4, 5])]);
    assert_eq!(stored.minimum_version, 2);
    assert_eq!(stored.window, Some(window));
    assert_eq!(stored.bucket, Some(bucket.clone()));
    assert_eq!(
        storage.scopes().await.unwrap(),
        vec![StoredScope {
            bucket: None,
            ..stored
        }]
    );
    assert!(storage.shred_scope("user:1").await.unwrap());
    assert!(!storage.shred_scope("user:1").await.unwrap());
    let shredded = storage.scope("user:1").await.unwrap().unwrap();
    assert!(shredded.shredded && shredded.keys.is_empty() && shredded.window.is_none());
    assert_eq!(shredded.bucket, None);
    assert!(
        !storage
            .add_scope_key("user:1", 3, &[7], &bucket)
            .await
            .unwrap()
    );
    // The bucket's key was replaced: a scope wrapped under the old one is
    // refused, under the new one stored.
    let now = storage.scope_bucket(7).await.unwrap();
    assert_ne!(now, bucket);
    let late = StoredScope {
        id: "user:2".into(),
        ..scope.clone()
    };
    assert!(!storage.insert_scope(&late).await.unwrap());
    assert_eq!(storage.scope("user:2").await.unwrap(), None);
    let fresh = StoredScope {
        bucket: Some(now),
        ..late
    };
    assert!(storage.insert_scope(&fresh).await.unwrap());
    assert!(storage.delete_app("web").await.unwrap());
    assert_eq!(storage.app_by_token([5; 32]).await.unwrap(), None);
    // An app added again under the same token is found with its new policy.
    let again = StoredApp {
        policy: "{\"again\":1}".into(),
        ..app
    };
    assert!(storage.insert_app(&again).await.unwrap());
    assert_eq!(storage.app_by_token([5; 32]).await.unwrap(), Some(again));
    assert!(storage.delete_app("web").await.unwrap());
}

/// A store on a fresh PostgreSQL database; `None` skips the test (see
/// [`crate::testing::fresh_postgres`]).
async fn fresh_pg_storage() -> Option<PgStorage> {
    let url = crate::testing::fresh_postgres().await?;
    Some(PgStorage::open(&url, StoreKeys::in_memory()).await.unwrap())
}

/// Two replicas' stores on the PostgreSQL database `url` (one key file).
async fn two_pg_replicas(url: &str) -> (PgStorage, PgStorage) {
    let keys = StoreKeys::in_memory();
    let a = PgStorage::open(url, keys.clone()).await.unwrap();
    let b = PgStorage::open(url, keys).await.unwrap();
    (a, b)
}

/// The cached store over SQLite in `dir`, as `keyd serve` runs it.
async fn cached_sqlite(dir: &std::path::Path) -> Cached<SqliteStorage> {
    Cached::new(
        SqliteStorage::open(&dir.join("keyd.db"), StoreKeys::in_memory())
            .await
            .unwrap(),
    )
}

/// The cached store over SQLite (how `keyd serve` runs it) answers every
/// scoped read after a write as the database does.
#[tokio::test]
async fn a_cached_store_forgets_the_apps_and_scopes_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = cached_sqlite(dir.path()).await;
    check_scoped(&storage).await;
}

/// A policy as a keyd before the witness stored it (no `rollback`).
const OLD_POLICY: PolicyRule = PolicyRule {
    policy: Policy::Approve,
    unannounced_reboot: Policy::Deny,
    rollback: Policy::Deny,
};

/// After the migration: the old policy reads with `rollback: approve`, and
/// the witnessed generations are stored, moved only forward, and marked.
async fn check_witness(storage: &impl Storage, host: &HostRecord) {
    let policies = storage.policies().await.unwrap();
    assert_eq!(
        policies,
        vec![(
            PolicyScope::Group("web".into()),
            PolicyRule {
                rollback: Policy::Approve,
                ..OLD_POLICY
            }
        )]
    );
    storage
        .set_policy(&PolicyScope::Default, OLD_POLICY)
        .await
        .unwrap();
    assert!(
        storage
            .policies()
            .await
            .unwrap()
            .contains(&(PolicyScope::Default, OLD_POLICY))
    );
    let at = |seq: u64| StoredGeneration {
        host_id: host.id.clone(),
        vault_id: [7; 16],
        generation: atrest_remote::Generation {
            checkpoint: seq / 10,
            seq,
            chain: [seq as u8; 32],
        },
        config_generation: 2,
        reported_at_ms: 1_800_000_000_000,
        boot_id: "b00b".into(),
        reason: atrest_remote::ReportReason::Unmount,
        rollback_approved: false,
    };
    assert_eq!(
        storage.vault_generation(&host.id, [7; 16]).await.unwrap(),
        None
    );
    assert!(!storage.approve_rollback(&host.id, [7; 16]).await.unwrap());
    assert!(storage.save_vault_generation(&at(100)).await.unwrap());
    assert!(storage.save_vault_generation(&at(120)).await.unwrap());
    // A report judged against an older row loses to the newer one.
    assert!(!storage.save_vault_generation(&at(110)).await.unwrap());
    assert_eq!(
        storage.vault_generation(&host.id, [7; 16]).await.unwrap(),
        Some(at(120))
    );
    assert!(storage.approve_rollback(&host.id, [7; 16]).await.unwrap());
    let marked = storage
        .vault_generation(&host.id, [7; 16])
        .await
        .unwrap()
        .unwrap();
    assert!(marked.rollback_approved);
    assert_eq!(
        storage.vault_generation(&host.id, [8; 16]).await.unwrap(),
        None
    );
}

/// The host is still there, a request can be held for it and a web
/// session kept.
async fn check_migrated(storage: &impl Storage, host: &HostRecord) {
    let session = StoredSession {
        id_hash: [5; 32],
        approver: "alice".into(),
        csrf: "c".into(),
        expires_at: 100,
        flash: None,
    };
    storage.insert_session(&session).await.unwrap();
    assert_eq!(storage.session([5; 32], 99).await.unwrap(), Some(session));
    // The login counts' tables are there.
    assert_eq!(
        storage
            .take_login(&login_at("alice", "192.0.2.1", 10), COUNT)
            .await
            .unwrap(),
        counts(0, 0, Some(0))
    );
    assert_eq!(
        storage.session([5; 32], 100).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(storage.host(&host.id).await.unwrap().as_ref(), Some(host));
    let stored = held("req_1", &host.id);
    assert_eq!(
        storage.insert_held(&stored, 10).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(storage.held("req_1").await.unwrap(), Some(stored));
}

#[tokio::test]
async fn a_sqlite_database_of_schema_1_to_7_is_migrated() {
    for from in [1, 2, 3, 4, 6, 7] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyd.db");
        let keys = StoreKeys::in_memory();
        // Version 3 is version 4 without web sessions, version 2 also
        // without held requests; version 1 also lacks the boot ticket.
        let (pool, host) = {
            let storage = SqliteStorage::open(&path, keys.clone()).await.unwrap();
            let host = enroll_host(&storage, "web-1").await;
            storage
                .set_policy(&PolicyScope::Group("web".into()), OLD_POLICY)
                .await
                .unwrap();
            (storage.pool().clone(), host)
        };
        // Version 7 is version 8 without the scope buckets.
        for &statement in SQLITE_WITHOUT_BUCKETS {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        // Version 6 is version 7 without the login counts.
        for table in ["login_failures", "login_trusted"]
            .into_iter()
            .filter(|_| from < 7)
        {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
                .execute(&pool)
                .await
                .unwrap();
        }
        // Version 4 is version 6 without the witness.
        for statement in [
            "DROP TABLE vault_generations",
            "ALTER TABLE policies DROP COLUMN rollback",
        ]
        .into_iter()
        .filter(|_| from < 6)
        {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        // Version 3 is version 4 without the scoped tables and web sessions.
        for table in [
            "scope_keys",
            "scopes",
            "scoped_apps",
            "scoped_records_key",
            "web_sessions",
        ]
        .into_iter()
        .filter(|_| from < 4)
        {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
                .execute(&pool)
                .await
                .unwrap();
        }
        if from < 3 {
            sqlx::query("DROP TABLE held_requests")
                .execute(&pool)
                .await
                .unwrap();
        }
        if from == 1 {
            sqlx::query("ALTER TABLE hosts DROP COLUMN ticket_hash")
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {from}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let storage = SqliteStorage::open(&path, keys).await.unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(storage.pool())
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION, "from {from}");
        check_migrated(&storage, &host).await;
        check_scoped(&storage).await;
        if from < 6 {
            check_witness(&storage, &host).await;
        }
    }
}

#[tokio::test]
async fn a_postgresql_database_of_schema_1_to_6_is_migrated() {
    for from in [1, 2, 3, 5, 6] {
        a_postgresql_database_is_migrated_from(from).await;
    }
}

async fn a_postgresql_database_is_migrated_from(from: i64) {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let keys = StoreKeys::in_memory();
    let host = {
        let storage = PgStorage::open(&url, keys.clone()).await.unwrap();
        let host = enroll_host(&storage, "web-1").await;
        storage
            .set_policy(&PolicyScope::Group("web".into()), OLD_POLICY)
            .await
            .unwrap();
        // Version 6 is version 7 without the scope buckets; version 5 is
        // version 6 without the login counts; version 3 is version 5
        // without the witness.
        for statement in PG_WITHOUT_BUCKETS
            .iter()
            .copied()
            .chain(
                [
                    "DROP TABLE keyd_login_failures",
                    "DROP TABLE keyd_login_trusted",
                ]
                .into_iter()
                .filter(|_| from < 6),
            )
            .chain(
                [
                    "DROP TABLE keyd_vault_generations",
                    "ALTER TABLE keyd_policies DROP COLUMN rollback",
                ]
                .into_iter()
                .filter(|_| from < 5),
            )
        {
            sqlx::query(statement)
                .execute(storage.pool())
                .await
                .unwrap();
        }
        // Version 2 is version 3 without the scoped tables and web sessions;
        // version 1 also lacks held requests.
        for table in [
            "keyd_scope_keys",
            "keyd_scopes",
            "keyd_scoped_apps",
            "keyd_scoped_records_key",
            "keyd_web_sessions",
        ]
        .into_iter()
        .filter(|_| from < 3)
        {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
                .execute(storage.pool())
                .await
                .unwrap();
        }
        if from == 1 {
            sqlx::query("DROP TABLE keyd_held_requests")
                .execute(storage.pool())
                .await
                .unwrap();
        }
        sqlx::query("UPDATE keyd_schema SET version = $1")
            .bind(from)
            .execute(storage.pool())
            .await
            .unwrap();
        storage.close().await;
        host
    };
    // Two replicas starting at once: one migrates, the other waits.
    let (a, b) = tokio::join!(
        PgStorage::open(&url, keys.clone()),
        PgStorage::open(&url, keys.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let version: i64 = sqlx::query_scalar("SELECT version FROM keyd_schema")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(version, PG_SCHEMA_VERSION, "from {from}");
    check_migrated(&a, &host).await;
    assert!(b.held("req_1").await.unwrap().is_some());
    assert!(b.session([5; 32], 99).await.unwrap().is_some());
    check_scoped(&a).await;
    if from < 5 {
        check_witness(&b, &host).await;
    }
}

/// A release's hold ([`Storage::hold_release`]): the host and its boot
/// state as stored, and the nonce spent once the hold commits. A hold of
/// a record other than the caller's (the caller drops it and asks again),
/// or of an unknown host, leaves the nonce unspent on every store.
async fn check_release_hold(storage: &impl Storage, host: &HostRecord) {
    let boot = BootState {
        last_boot_id: Some("boot-1".into()),
        last_unlock_at: Some(5),
        planned_until: Some(6),
        planned_from: Some("boot-0".into()),
        ticket_hash: Some([6; 32]),
    };
    storage
        .save_boot_states(&[(host.id.clone(), boot.clone())])
        .await
        .unwrap();
    let hold = storage
        .hold_release(host, Some(([1; 16], 100)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hold.record, *host);
    assert_eq!(hold.boot, boot);
    assert_eq!(hold.boot.ticket_hash, Some([6; 32]));
    assert!(hold.nonce_fresh);
    hold.held.commit().await.unwrap();
    let replay = storage
        .hold_release(host, Some(([1; 16], 100)))
        .await
        .unwrap()
        .unwrap();
    assert!(!replay.nonce_fresh, "a nonce spent by a committed hold");
    drop(replay);
    assert!(!storage.spend_nonce([1; 16], 100).await.unwrap());
    // An approved request's nonce was spent when it was held.
    let approved = storage.hold_release(host, None).await.unwrap().unwrap();
    assert!(approved.nonce_fresh);
    approved.held.commit().await.unwrap();

    let stale = HostRecord {
        key_id: KeyId([2; 16]),
        ..host.clone()
    };
    let changed = storage
        .hold_release(&stale, Some(([2; 16], 100)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.record, *host);
    drop(changed);
    let again = storage
        .hold_release(host, Some(([2; 16], 100)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        again.nonce_fresh,
        "the dropped hold of a changed record spent the nonce"
    );
    drop(again);

    let nobody = HostRecord {
        id: HostId::new("nobody").unwrap(),
        ..host.clone()
    };
    assert!(
        storage
            .hold_release(&nobody, Some(([3; 16], 100)))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage.spend_nonce([3; 16], 100).await.unwrap(),
        "an unknown host's hold spent the nonce"
    );
}

#[tokio::test]
async fn a_release_hold_reads_the_boot_and_spends_the_nonce_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let storage = cached_sqlite(dir.path()).await;
    let host = enroll_host(&storage, "web-1").await;
    check_release_hold(&storage, &host).await;
}

#[tokio::test]
async fn a_release_hold_reads_the_boot_and_spends_the_nonce_on_postgresql() {
    let Some(storage) = fresh_pg_storage().await else {
        return;
    };
    let host = enroll_host(&storage, "web-1").await;
    check_release_hold(&storage, &host).await;
    // A hold dropped (a release that failed before its commit) spends
    // nothing: a later request with the nonce is not taken for a replay.
    let dropped = storage
        .hold_release(&host, Some(([4; 16], 100)))
        .await
        .unwrap()
        .unwrap();
    assert!(dropped.nonce_fresh);
    drop(dropped);
    assert!(storage.spend_nonce([4; 16], 100).await.unwrap());
    storage.close().await;
}

/// Releases at once share one transaction (decision 0012, eighth slice):
/// 25 holds asked together take two batches (the first ask's, run in its
/// caller's task, then every ask queued meanwhile, handed to a task of
/// their own), each reads its own host, a nonce asked twice in one batch
/// is fresh once, an unknown host's ask holds nothing, and once the
/// shares commit (together: each waits for the batch's commit, which a
/// task runs) the kept nonces are spent for everyone while those of a
/// dropped share and of the unknown host are not.
#[tokio::test]
async fn holds_asked_together_share_one_transaction_on_postgresql() {
    let Some(storage) = fresh_pg_storage().await else {
        return;
    };
    let mut hosts = Vec::new();
    for i in 0..8u8 {
        hosts.push(enroll_host_with_token(&storage, &format!("web-{i}"), [20 + i; 32]).await);
    }
    let nobody = HostRecord {
        id: HostId::new("nobody").unwrap(),
        ..hosts[0].clone()
    };
    let nonce = |i: usize| {
        [
            0xb0,
            u8::try_from(i).unwrap(),
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]
    };
    // Three asks per host; ask 23 repeats ask 22's nonce; ask 24 is
    // nobody's. (Fewer than 31: `join_all` then polls them in order, so
    // ask 0 is the first batch's only one.)
    let asks: Vec<(&HostRecord, [u8; 16])> = (0..25)
        .map(|i| match i {
            23 => (&hosts[i % 8], nonce(22)),
            24 => (&nobody, nonce(24)),
            _ => (&hosts[i % 8], nonce(i)),
        })
        .collect();
    let counts = storage.hold_counts();
    let before = (
        counts.batches(),
        counts.handed_off(),
        counts.commits_handed_off(),
    );
    let mut holds = futures::future::join_all(
        asks.iter()
            .map(|(host, n)| storage.hold_release(host, Some((*n, 100)))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect::<Vec<_>>();
    assert_eq!(
        counts.batches() - before.0,
        2,
        "asks at once, one batch each"
    );
    assert_eq!(
        counts.handed_off() - before.1,
        24,
        "the asks that came while the first ran"
    );
    assert!(holds.pop().unwrap().is_none(), "nobody's ask held a row");
    let holds: Vec<_> = holds.into_iter().map(Option::unwrap).collect();
    for (i, hold) in holds.iter().enumerate() {
        assert_eq!(hold.record, *asks[i].0);
        assert_eq!(hold.nonce_fresh, i != 23, "ask {i}");
    }
    // Ask 5 is dropped (a refusal): its nonce is given back at the commit.
    let commits = holds
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, hold)| hold.held.commit());
    for committed in futures::future::join_all(commits).await {
        committed.unwrap();
    }
    assert_eq!(
        counts.commits_handed_off() - before.2,
        1,
        "the batch of 24's commit (the lone ask's ran in its caller's task)"
    );
    assert!(!storage.spend_nonce(nonce(6), 100).await.unwrap());
    assert!(!storage.spend_nonce(nonce(22), 100).await.unwrap());
    assert!(
        storage.spend_nonce(nonce(5), 100).await.unwrap(),
        "a dropped share's nonce stayed spent"
    );
    assert!(
        storage.spend_nonce(nonce(24), 100).await.unwrap(),
        "an unknown host's nonce stayed spent"
    );
    storage.close().await;
}

/// Releases one after another (one client, decision 0012, ninth slice):
/// each finds the batcher idle, so its hold and its commit run in the
/// caller's task with no hand-off, each in a transaction of its own that
/// spends its nonce; a hold dropped gives its nonce back as before.
#[tokio::test]
async fn a_lone_release_holds_and_commits_in_its_callers_task_on_postgresql() {
    let Some(storage) = fresh_pg_storage().await else {
        return;
    };
    let host = enroll_host(&storage, "web-1").await;
    let counts = storage.hold_counts();
    let before = (
        counts.batches(),
        counts.handed_off(),
        counts.commits_handed_off(),
    );
    for i in 0..6u8 {
        let hold = storage
            .hold_release(
                &host,
                Some(([0xd0, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 100)),
            )
            .await
            .unwrap()
            .unwrap();
        assert!(hold.nonce_fresh, "release {i}");
        if i == 3 {
            drop(hold);
        } else {
            hold.held.commit().await.unwrap();
        }
    }
    assert_eq!(counts.batches() - before.0, 6, "a batch of one each");
    assert_eq!(counts.handed_off() - before.1, 0, "a hold handed off");
    assert_eq!(
        counts.commits_handed_off() - before.2,
        0,
        "a commit handed off"
    );
    for i in 0..6u8 {
        let nonce = [0xd0, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            storage.spend_nonce(nonce, 100).await.unwrap(),
            i == 3,
            "nonce {i}: only the dropped hold's is unspent"
        );
    }
    storage.close().await;
}

/// Another replica's hold spent a nonce and has not committed yet: a
/// batch that asks the same nonce waits for that commit, then refuses
/// only that ask (a replay); the other ask of its batch is answered as if
/// the replay were not there, and its nonce is spent.
#[tokio::test]
async fn a_replay_in_a_batch_waits_for_the_other_replica_and_refuses_only_itself() {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let (a, b) = two_pg_replicas(&url).await;
    let b = Arc::new(b);
    let mut hosts = Vec::new();
    for i in 0..3u8 {
        hosts.push(enroll_host_with_token(&a, &format!("web-{i}"), [30 + i; 32]).await);
    }
    let on_a = a
        .hold_release(&hosts[0], Some(([0xc0; 16], 100)))
        .await
        .unwrap()
        .unwrap();
    assert!(on_a.nonce_fresh);
    // Three asks at once on B: the first is a batch of its own, the
    // replay and a fresh one the next.
    let asking = {
        let (b, hosts) = (b.clone(), hosts.clone());
        tokio::spawn(async move {
            let asks = [
                (&hosts[2], [0xc2; 16]),
                (&hosts[0], [0xc0; 16]),
                (&hosts[1], [0xc1; 16]),
            ];
            let holds: Vec<_> = futures::future::join_all(
                asks.iter()
                    .map(|(host, n)| b.hold_release(host, Some((*n, 100)))),
            )
            .await
            .into_iter()
            .map(|hold| hold.unwrap().unwrap())
            .collect();
            let fresh: Vec<bool> = holds.iter().map(|hold| hold.nonce_fresh).collect();
            let commits = holds.into_iter().map(|hold| hold.held.commit());
            for committed in futures::future::join_all(commits).await {
                committed.unwrap();
            }
            fresh
        })
    };
    // B's second batch waits for A's transaction (the nonce's row).
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
             WHERE NOT l.granted AND s.datname = current_database()",
        )
        .fetch_one(a.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(!asking.is_finished(), "B did not wait for A's nonce");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    on_a.held.commit().await.unwrap();
    assert_eq!(asking.await.unwrap(), [true, false, true]);
    for nonce in [[0xc0; 16], [0xc1; 16], [0xc2; 16]] {
        assert!(!a.spend_nonce(nonce, 100).await.unwrap());
    }
    a.close().await;
    b.close().await;
}

/// Found by bench/keyd-pg.sh with two replicas: boot-state batches of the
/// same hosts written at once, each listing them in its own order,
/// deadlocked (PostgreSQL aborted one; its release answered 500). Rows are
/// now locked in the hosts' order.
#[tokio::test]
async fn boot_state_batches_in_opposite_orders_do_not_deadlock() {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let storage = Arc::new(PgStorage::open(&url, StoreKeys::in_memory()).await.unwrap());
    let mut ids = Vec::new();
    for i in 0..8u8 {
        ids.push(
            enroll_host_with_token(&*storage, &format!("web-{i}"), [i; 32])
                .await
                .id,
        );
    }
    let writer = |reverse: bool| {
        let (storage, mut ids) = (storage.clone(), ids.clone());
        if reverse {
            ids.reverse();
        }
        tokio::spawn(async move {
            for round in 0..40u64 {
                let batch: Vec<(HostId, BootState)> = ids
                    .iter()
                    .map(|id| {
                        let state = BootState {
                            last_boot_id: Some(format!("boot-{round}")),
                            last_unlock_at: Some(round),
                            ..BootState::default()
                        };
                        (id.clone(), state)
                    })
                    .collect();
                storage.save_boot_states(&batch).await?;
            }
            Ok::<(), StorageError>(())
        })
    };
    let (a, b) = (writer(false), writer(true));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

/// Schema 4 (SQLite) kept host secrets in the clear. The first start of
/// schema 5 wraps them under a new `K_0` (written to `secrets.key`) in one
/// transaction, and no byte of the clear secret stays in the file or its
/// write-ahead log.
#[tokio::test]
async fn sqlite_secrets_in_the_clear_are_wrapped_at_the_first_start_of_schema_5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyd.db");
    let clear = [0x5a; 32];
    let host = {
        let storage = SqliteStorage::open(&path, StoreKeys::in_memory())
            .await
            .unwrap();
        let host = enroll_host(&storage, "web-1").await;
        for statement in SQLITE_WITHOUT_BUCKETS.iter().copied().chain([
            // Version 4 had neither the secrets epoch nor what version 6
            // added (the witness's table and the policies' rollback rule).
            "DROP TABLE secrets_epoch",
            "DROP TABLE vault_generations",
            "ALTER TABLE policies DROP COLUMN rollback",
            "UPDATE host_secrets SET secret = X'5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a'",
            "PRAGMA user_version = 4",
        ]) {
            sqlx::query(statement)
                .execute(storage.pool())
                .await
                .unwrap();
        }
        storage.pool().close().await;
        host
    };
    let key_path = dir.path().join("secrets.key");
    let keys = StoreKeys::open(dir.path()).unwrap();
    let secrets = keys.secrets.clone();
    let storage = SqliteStorage::open(&path, keys).await.unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(secrets.current().unwrap().epoch(), 0);
    assert!(key_path.exists());
    let read = storage.host_secrets(&host.id).await.unwrap();
    assert_eq!(*read[0].secret, clear);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM host_secrets")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), crate::secrets_key::WRAPPED_LEN);
    for name in ["keyd.db", "keyd.db-wal"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
        assert!(
            !bytes.windows(32).any(|w| w == clear),
            "{name} still holds the secret in the clear"
        );
    }
    storage.pool().close().await;
    // Started again: the same key, nothing wrapped twice.
    let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        *storage.host_secrets(&host.id).await.unwrap()[0].secret,
        clear
    );
}

/// The same for PostgreSQL, schema 3 to 4: the old length check on the
/// secret column goes, and the secrets are wrapped.
#[tokio::test]
async fn postgresql_secrets_in_the_clear_are_wrapped_at_the_first_start_of_schema_4() {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let host = {
        let storage = PgStorage::open(&url, StoreKeys::in_memory()).await.unwrap();
        let host = enroll_host(&storage, "web-1").await;
        for statement in PG_WITHOUT_BUCKETS.iter().copied().chain([
            "DROP TABLE keyd_secrets_epoch",
            "UPDATE keyd_host_secrets SET secret = decode(repeat('5a', 32), 'hex')",
            "ALTER TABLE keyd_host_secrets ADD CONSTRAINT keyd_host_secrets_secret_check
                CHECK (length(secret) = 32)",
            "UPDATE keyd_schema SET version = 3",
        ]) {
            sqlx::query(statement)
                .execute(storage.pool())
                .await
                .unwrap();
        }
        storage.close().await;
        host
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = PgStorage::open(&url, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("SELECT version FROM keyd_schema")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(version, PG_SCHEMA_VERSION);
    assert_eq!(
        *storage.host_secrets(&host.id).await.unwrap()[0].secret,
        [0x5a; 32]
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM keyd_host_secrets")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), crate::secrets_key::WRAPPED_LEN);
    // A replica given no secrets.key is refused, with what to do.
    let other = tempfile::tempdir().unwrap();
    let error = PgStorage::open(&url, StoreKeys::open(other.path()).unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("copy secrets.key"), "{error}");
}

/// A release time written by the tick moves `last_unlock_at` forward
/// only, and leaves the boot it belongs to (id, ticket, planned window)
/// as it is; a host that is gone is passed over.
async fn check_unlock_times(storage: &impl Storage) {
    let host = enroll_host(storage, "web-1").await;
    let boot = BootState {
        last_boot_id: Some("b00b".into()),
        last_unlock_at: Some(10),
        planned_until: Some(50),
        planned_from: Some("b00a".into()),
        ticket_hash: Some([7; 32]),
    };
    storage
        .save_boot_states(&[(host.id.clone(), boot.clone())])
        .await
        .unwrap();
    assert_eq!(
        storage.boot_state(&host.id).await.unwrap(),
        Some(boot.clone())
    );
    let gone = HostId::new("web-2").unwrap();
    storage
        .save_unlock_times(&[(host.id.clone(), 20), (gone.clone(), 30)])
        .await
        .unwrap();
    let later = BootState {
        last_unlock_at: Some(20),
        ..boot
    };
    assert_eq!(
        storage.boot_state(&host.id).await.unwrap(),
        Some(later.clone())
    );
    assert_eq!(storage.boot_state(&gone).await.unwrap(), None);
    assert!(
        storage
            .save_unlock_times(&[(host.id.clone(), 15)])
            .await
            .unwrap()
            .is_empty(),
        "nothing holds the row: nothing passed over"
    );
    assert_eq!(storage.boot_state(&host.id).await.unwrap(), Some(later));
}

#[tokio::test]
async fn unlock_times_move_forward_and_leave_the_boot_alone_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let keys = StoreKeys::in_memory();
    let open = || async {
        SqliteStorage::open(&dir.path().join("keyd.db"), keys.clone())
            .await
            .unwrap()
    };
    // Through the cache (how `keyd serve` runs it), then as stored.
    check_unlock_times(&Cached::new(open().await)).await;
    let stored = open().await;
    let host = HostId::new("web-1").unwrap();
    assert_eq!(
        stored
            .boot_state(&host)
            .await
            .unwrap()
            .unwrap()
            .last_unlock_at,
        Some(20)
    );
}

#[tokio::test]
async fn unlock_times_move_forward_and_leave_the_boot_alone_on_postgresql() {
    let Some(storage) = fresh_pg_storage().await else {
        return;
    };
    check_unlock_times(&storage).await;
    // A row a release holds is passed over, not waited for, and written
    // by a later call once it is let go.
    let host = enroll_host_with_token(&storage, "web-3", [11; 32]).await;
    let hold = storage.hold_release(&host, None).await.unwrap().unwrap();
    let passed = storage
        .save_unlock_times(&[(host.id.clone(), 40)])
        .await
        .unwrap();
    assert_eq!(passed, std::slice::from_ref(&host.id));
    assert_eq!(
        storage
            .boot_state(&host.id)
            .await
            .unwrap()
            .unwrap()
            .last_unlock_at,
        None
    );
    hold.held.commit().await.unwrap();
    assert!(
        storage
            .save_unlock_times(&[(host.id.clone(), 40)])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        storage
            .boot_state(&host.id)
            .await
            .unwrap()
            .unwrap()
            .last_unlock_at,
        Some(40)
    );
    storage.close().await;
}

/// An attempt at `now` whose window, if it opens one, lasts 60 s.
fn login_at<'a>(name: &'a str, client: &'a str, now: u64) -> LoginAttempt<'a> {
    LoginAttempt {
        name,
        client,
        now,
        window_end: now + 60,
    }
}

fn counts(name_from_address: u32, address: u32, untrusted: Option<u32>) -> LoginCounts {
    LoginCounts {
        name_from_address,
        address,
        untrusted,
    }
}

const COUNT: fn(&LoginCounts) -> bool = |_| true;
const REFUSE: fn(&LoginCounts) -> bool = |_| false;

/// The approval page's login counts as stored (storage/logins.rs): a
/// count per window that starts again once over, nothing counted when
/// the attempt is refused, the untrusted count only for untrusted
/// addresses, a good login forgiving, giving back and trusting, and the
/// maintenance forgetting what is over. `rows` reads the number of
/// (failures, trusted) rows.
async fn check_logins<S, F, R>(storage: &S, rows: F)
where
    S: Storage,
    F: Fn() -> R,
    R: Future<Output = (i64, i64)>,
{
    let (c1, c2) = ("192.0.2.1", "198.51.100.7");
    let take = |name, client, now, allow| async move {
        storage
            .take_login(&login_at(name, client, now), allow)
            .await
            .unwrap()
    };
    assert_eq!(take("alice", c1, 100, COUNT).await, counts(0, 0, Some(0)));
    assert_eq!(take("bob", c1, 110, COUNT).await, counts(0, 1, Some(1)));
    assert_eq!(take("alice", c1, 120, REFUSE).await, counts(1, 2, Some(2)));
    assert_eq!(take("alice", c1, 120, COUNT).await, counts(1, 2, Some(2)));
    storage
        .login_succeeded("alice", c1, true, 1000)
        .await
        .unwrap();
    assert_eq!(take("alice", c1, 130, REFUSE).await, counts(0, 2, None));
    assert_eq!(take("alice", c2, 130, REFUSE).await, counts(0, 0, Some(2)));
    // The address's window (opened at 100) is over at 160, bob's (110)
    // not yet; a trusted address leaves the untrusted count alone.
    assert_eq!(take("bob", c1, 160, COUNT).await, counts(1, 0, None));
    assert_eq!(take("carol", c2, 161, COUNT).await, counts(0, 0, Some(0)));
    // A good login of a trusted address gives back to its own count only.
    storage
        .login_succeeded("dave", c2, false, 500)
        .await
        .unwrap();
    assert_eq!(take("carol", c2, 162, REFUSE).await, counts(1, 0, None));
    assert_eq!(rows().await, (5, 2));
    // Windows over at 220 and before: bob's (170) and c1's (220).
    storage.prune_logins(220).await.unwrap();
    assert_eq!(rows().await, (3, 2));
    storage.prune_logins(500).await.unwrap();
    assert_eq!(rows().await, (0, 1));
    assert_eq!(take("alice", c2, 500, REFUSE).await, counts(0, 0, Some(0)));
    assert_eq!(take("alice", c1, 500, REFUSE).await, counts(0, 0, None));
    storage.prune_logins(1000).await.unwrap();
    assert_eq!(rows().await, (0, 0));
}

#[tokio::test]
async fn login_counts_are_kept_and_forgotten_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let bare = SqliteStorage::open(&dir.path().join("keyd.db"), StoreKeys::in_memory())
        .await
        .unwrap();
    let pool = bare.pool().clone();
    // Through the cache, as `keyd serve` runs it.
    let storage = Cached::new(bare);
    check_logins(&storage, || async {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM login_failures), (SELECT count(*) FROM login_trusted)",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    })
    .await;
}

#[tokio::test]
async fn login_counts_are_kept_and_forgotten_on_postgresql() {
    let Some(storage) = fresh_pg_storage().await else {
        return;
    };
    check_logins(&storage, || async {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM keyd_login_failures),
                (SELECT count(*) FROM keyd_login_trusted)",
        )
        .fetch_one(storage.pool())
        .await
        .unwrap()
    })
    .await;
    storage.close().await;
}

/// Two replicas on one PostgreSQL database, each sending a burst of
/// attempts at once for one name from one address: together they count
/// exactly the budget, as one replica would.
#[tokio::test]
async fn a_burst_of_logins_on_two_replicas_counts_one_budget() {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let (a, b) = two_pg_replicas(&url).await;
    const BUDGET: fn(&LoginCounts) -> bool = |c| c.name_from_address < 5;
    let burst = |storage: PgStorage| {
        (0..20)
            .map(|_| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    let counts = storage
                        .take_login(&login_at("alice", "192.0.2.1", 100), BUDGET)
                        .await
                        .unwrap();
                    BUDGET(&counts)
                })
            })
            .collect::<Vec<_>>()
    };
    let tasks = burst(a.clone()).into_iter().chain(burst(b.clone()));
    let mut counted = 0;
    for task in tasks.collect::<Vec<_>>() {
        counted += u32::from(task.await.unwrap());
    }
    assert_eq!(counted, 5);
    let after = b
        .take_login(&login_at("alice", "192.0.2.1", 101), REFUSE)
        .await
        .unwrap();
    assert_eq!(after, counts(5, 5, Some(5)));
    a.close().await;
    b.close().await;
}

/// A scope as a keyd before decision 0020 left it: its key wrapped under
/// the bare records key, no bucket.
struct LegacyScope {
    id: &'static str,
    secret: atrest_scoped::ScopeSecret,
}

fn legacy_scopes() -> Vec<LegacyScope> {
    ["user:a", "user:b", "user:c"]
        .into_iter()
        .map(|id| LegacyScope {
            id,
            secret: atrest_scoped::ScopeSecret::random(),
        })
        .collect()
}

/// The scope's secret (version 1), opened as the scoped API opens it: the
/// bucket's key with the records keyring at the bucket's epoch, then the
/// scope's key with that.
async fn open_scope(
    storage: &impl Storage,
    id: &str,
) -> Result<atrest_scoped::UnwrappedScope, StorageError> {
    let stored = storage.scope(id).await?.unwrap();
    let bucket = stored.bucket.unwrap();
    let epoch = crate::secrets_key::wrapped_epoch(&bucket.wrapped).unwrap();
    let raw = storage
        .records_keyring()
        .key_at(epoch)?
        .unwrap_bucket(bucket.number, &bucket.wrapped)
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
    buckets::records_key(&raw)
        .unwrap_scope(
            &atrest_scoped::ScopeId::new(id).unwrap(),
            &atrest_scoped::Wrapped::from_bytes(&stored.keys[0].1).unwrap(),
        )
        .map_err(|e| StorageError::Corrupt(e.to_string()))
}

fn same_secret(opened: &atrest_scoped::UnwrappedScope, scope: &LegacyScope) -> bool {
    // Two keys of one scope and version agree on what they seal.
    let ctx = atrest_scoped::FieldContext::new("t", "c", "r").unwrap();
    let a = atrest_scoped::ScopeKey::open(opened, None).unwrap();
    let b = atrest_scoped::ScopeKey::open(
        &atrest_scoped::UnwrappedScope::from_secret(
            opened.scope().clone(),
            opened.version(),
            false,
            scope.secret.clone(),
        ),
        None,
    )
    .unwrap();
    let sealed = a.encrypt_field(&ctx, b"x").unwrap();
    atrest_scoped::Keyring::new(b)
        .decrypt_field(&ctx, &sealed)
        .is_ok()
}

/// Decision 0020 on SQLite: a database of schema 7 (scope keys wrapped
/// under the bare 32-byte `records.key`) is migrated at its first start of
/// schema 8: every scope gets a bucket, every scope key opens under its
/// bucket's key, and the old fingerprint goes; `records.key` stays the bare
/// key (a backup from before the upgrade is usable until the first shred)
/// until a shred replaces it. After that shred, the copy of the database
/// from before the upgrade is refused, and so is a copy from after the
/// upgrade but before the shred: the shredded scope opens in neither.
#[tokio::test]
async fn sqlite_scope_keys_move_under_buckets_and_a_shred_survives_restoring_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyd.db");
    let master = atrest_core::SecretKey::random();
    std::fs::write(dir.path().join("records.key"), master.expose()).unwrap();
    let legacy = atrest_scoped::RecordsKey::from_master(&master);
    let scopes = legacy_scopes();
    {
        let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
            .await
            .unwrap();
        for statement in SQLITE_WITHOUT_BUCKETS.iter().copied().chain([
            "INSERT INTO scoped_records_key (only_row, fingerprint) VALUES (1, zeroblob(32))",
        ]) {
            sqlx::query(statement)
                .execute(storage.pool())
                .await
                .unwrap();
        }
        for scope in &scopes {
            let id = atrest_scoped::ScopeId::new(scope.id).unwrap();
            let wrapped =
                legacy.wrap_scope(&id, atrest_scoped::KeyVersion::FIRST, false, &scope.secret);
            sqlx::query(
                "INSERT INTO scopes (id, needs_share, minimum, created_at) VALUES (?, 0, 1, 5)",
            )
            .bind(scope.id)
            .execute(storage.pool())
            .await
            .unwrap();
            sqlx::query("INSERT INTO scope_keys (scope_id, version, wrapped) VALUES (?, 1, ?)")
                .bind(scope.id)
                .bind(&wrapped.as_bytes()[..])
                .execute(storage.pool())
                .await
                .unwrap();
        }
        sqlx::query("PRAGMA user_version = 7")
            .execute(storage.pool())
            .await
            .unwrap();
        storage.pool().close().await;
    }
    let before_upgrade = dir.path().join("before-upgrade.db");
    std::fs::copy(&path, &before_upgrade).unwrap();

    let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    for scope in &scopes {
        let opened = open_scope(&storage, scope.id).await.unwrap();
        assert!(same_secret(&opened, scope), "{}", scope.id);
        // No longer under the bare key.
        let stored = storage.scope(scope.id).await.unwrap().unwrap();
        let wrapped = atrest_scoped::Wrapped::from_bytes(&stored.keys[0].1).unwrap();
        let id = atrest_scoped::ScopeId::new(scope.id).unwrap();
        assert!(legacy.unwrap_scope(&id, &wrapped).is_err());
    }
    let fingerprints: i64 = sqlx::query_scalar("SELECT count(*) FROM scoped_records_key")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(fingerprints, 0);
    let buckets: i64 = sqlx::query_scalar("SELECT count(*) FROM scope_buckets")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(buckets, buckets::BUCKETS as i64);
    assert_eq!(
        std::fs::read(dir.path().join("records.key")).unwrap(),
        master.expose()
    );
    // Started again: nothing moved twice.
    storage.pool().close().await;
    let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    assert!(same_secret(
        &open_scope(&storage, "user:a").await.unwrap(),
        &scopes[0]
    ));
    storage.pool().close().await;
    let before_shred = dir.path().join("before-shred.db");
    std::fs::copy(&path, &before_shred).unwrap();

    let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    assert!(storage.shred_scope("user:b").await.unwrap());
    let file = std::fs::read(dir.path().join("records.key")).unwrap();
    assert_eq!(&file[..9], b"ATRK\x01\0\0\0\x01");
    assert!(!file.windows(32).any(|w| w == master.expose()));
    for scope in [&scopes[0], &scopes[2]] {
        assert!(same_secret(
            &open_scope(&storage, scope.id).await.unwrap(),
            scope
        ));
    }
    storage.pool().close().await;

    // The copy from before the shred, restored: refused at start, with
    // what to do; and even read by hand, its bucket keys do not open with
    // the live key file, the shredded scope's included.
    let restored = dir.path().join("restored.db");
    std::fs::copy(&before_shred, &restored).unwrap();
    let error = SqliteStorage::open(&restored, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("restore a backup taken after the last shred"),
        "{error}"
    );
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", before_shred.display()))
        .await
        .unwrap();
    let old: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT bucket, wrapped FROM scope_buckets")
        .fetch_all(&pool)
        .await
        .unwrap();
    let live = StoreKeys::open(dir.path()).unwrap().records;
    let k1 = live.current().unwrap();
    assert_eq!(k1.epoch(), 1);
    for (number, wrapped) in old {
        assert!(k1.unwrap_bucket(number as u8, &wrapped).is_err());
    }
    pool.close().await;

    // The copy from before the upgrade: refused too (its scope keys are
    // under the bare key, which the shred overwrote).
    let error = SqliteStorage::open(&before_upgrade, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("before the upgrade"), "{error}");
}

/// A shred's cost does not grow with the number of scopes: it rewrites the
/// shredded scope's bucket's other scope keys and the 256 bucket keys,
/// nothing else. And a crash between its commit and the key file's
/// replacement (the file one epoch behind the database) is recovered at
/// the next start: every remaining scope opens.
#[tokio::test]
async fn a_shred_rewrites_one_bucket_and_the_bucket_keys_and_survives_a_crash_before_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyd.db");
    let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    const SCOPES: usize = 1024;
    for i in 0..SCOPES {
        let bucket = storage.scope_bucket(random_bucket()).await.unwrap();
        let raw = storage
            .records_keyring()
            .current()
            .unwrap()
            .unwrap_bucket(bucket.number, &bucket.wrapped)
            .unwrap();
        let id = format!("user:{i}");
        let (wrapped, _) = buckets::records_key(&raw)
            .create_scope(&atrest_scoped::ScopeId::new(&id).unwrap(), false);
        let scope = StoredScope {
            id,
            needs_client_share: false,
            minimum_version: 1,
            shredded: false,
            created_at: 1,
            keys: vec![(1, wrapped.as_bytes().to_vec())],
            window: None,
            bucket: Some(bucket),
        };
        assert!(storage.insert_scope(&scope).await.unwrap());
    }
    let snapshot = |pool: sqlx::SqlitePool| async move {
        let keys: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT scope_id, wrapped FROM scope_keys ORDER BY scope_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let buckets: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT bucket, wrapped FROM scope_buckets ORDER BY bucket")
                .fetch_all(&pool)
                .await
                .unwrap();
        (keys, buckets)
    };
    let (keys_before, buckets_before) = snapshot(storage.pool().clone()).await;
    let victim = storage.scope("user:7").await.unwrap().unwrap();
    let victim_bucket = victim.bucket.unwrap().number;
    let in_bucket: i64 = sqlx::query_scalar("SELECT count(*) FROM scopes WHERE bucket = ?")
        .bind(i64::from(victim_bucket))
        .fetch_one(storage.pool())
        .await
        .unwrap();
    // Keep the file as it was before the shred: the state a crash between
    // the commit and the rename leaves.
    let file_before = std::fs::read(dir.path().join("records.key")).unwrap();
    assert!(storage.shred_scope("user:7").await.unwrap());
    let (keys_after, buckets_after) = snapshot(storage.pool().clone()).await;
    assert_eq!(keys_after.len(), SCOPES - 1);
    let before: std::collections::HashMap<String, Vec<u8>> = keys_before.into_iter().collect();
    let changed = keys_after
        .iter()
        .filter(|(id, wrapped)| before.get(id) != Some(wrapped))
        .count();
    // Every other scope of the shredded one's bucket, and no other scope.
    assert_eq!(changed as i64, in_bucket - 1);
    assert!(changed < SCOPES / 16, "{changed} of {SCOPES} rewritten");
    assert_eq!(buckets_after.len(), buckets::BUCKETS);
    assert!(
        buckets_before
            .iter()
            .zip(&buckets_after)
            .all(|(a, b)| a.0 == b.0 && a.1 != b.1)
    );
    storage.pool().close().await;

    std::fs::write(dir.path().join("records.key"), &file_before).unwrap();
    let storage = SqliteStorage::open(&path, StoreKeys::open(dir.path()).unwrap())
        .await
        .unwrap();
    let file = std::fs::read(dir.path().join("records.key")).unwrap();
    assert_eq!(&file[5..9], &1u32.to_be_bytes(), "ratcheted at start");
    for i in [0, 1, 8, SCOPES - 1] {
        assert!(
            open_scope(&storage, &format!("user:{i}")).await.is_ok(),
            "user:{i}"
        );
    }
    assert!(storage.scope("user:7").await.unwrap().unwrap().shredded);
}

/// Decision 0020 on PostgreSQL: a database of schema 6 is migrated by one
/// of two replicas starting at once; a shred through one moves its key
/// file, the other follows when it next opens a bucket key; a copy of the
/// tables from before the shred, put back, is refused at start and its
/// bucket keys do not open with the live key file.
#[tokio::test]
async fn postgresql_scope_keys_move_under_buckets_and_replicas_follow_a_shred() {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = atrest_core::SecretKey::random();
    std::fs::write(dir_a.path().join("records.key"), master.expose()).unwrap();
    let legacy = atrest_scoped::RecordsKey::from_master(&master);
    let scopes = legacy_scopes();
    {
        let storage = PgStorage::open(&url, StoreKeys::open(dir_a.path()).unwrap())
            .await
            .unwrap();
        for &statement in PG_WITHOUT_BUCKETS {
            sqlx::query(statement)
                .execute(storage.pool())
                .await
                .unwrap();
        }
        for scope in &scopes {
            let id = atrest_scoped::ScopeId::new(scope.id).unwrap();
            let wrapped =
                legacy.wrap_scope(&id, atrest_scoped::KeyVersion::FIRST, false, &scope.secret);
            sqlx::query(
                "INSERT INTO keyd_scopes (id, needs_share, minimum, created_at)
                 VALUES ($1, FALSE, 1, 5)",
            )
            .bind(scope.id)
            .execute(storage.pool())
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO keyd_scope_keys (scope_id, version, wrapped) VALUES ($1, 1, $2)",
            )
            .bind(scope.id)
            .bind(&wrapped.as_bytes()[..])
            .execute(storage.pool())
            .await
            .unwrap();
        }
        sqlx::query("UPDATE keyd_schema SET version = 6")
            .execute(storage.pool())
            .await
            .unwrap();
        storage.close().await;
    }
    // Replica b has a copy of a's data directory (the bare records.key and
    // secrets.key).
    for name in ["records.key", "secrets.key"] {
        std::fs::copy(dir_a.path().join(name), dir_b.path().join(name)).unwrap();
    }
    let (a, b) = tokio::join!(
        PgStorage::open(&url, StoreKeys::open(dir_a.path()).unwrap()),
        PgStorage::open(&url, StoreKeys::open(dir_b.path()).unwrap())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for scope in &scopes {
        assert!(same_secret(&open_scope(&a, scope.id).await.unwrap(), scope));
        assert!(same_secret(&open_scope(&b, scope.id).await.unwrap(), scope));
    }
    // A copy of the tables as a pg_dump would keep them, before the shred.
    for table in [
        "keyd_scopes",
        "keyd_scope_keys",
        "keyd_scope_buckets",
        "keyd_records_epoch",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE backup_{table} AS SELECT * FROM {table}"
        )))
        .execute(a.pool())
        .await
        .unwrap();
    }
    assert!(a.shred_scope("user:b").await.unwrap());
    let file_a = std::fs::read(dir_a.path().join("records.key")).unwrap();
    assert_eq!(&file_a[..9], b"ATRK\x01\0\0\0\x01");
    // b still holds the bare key until it opens a bucket key again.
    assert_eq!(
        std::fs::read(dir_b.path().join("records.key")).unwrap(),
        master.expose()
    );
    assert!(same_secret(
        &open_scope(&b, "user:a").await.unwrap(),
        &scopes[0]
    ));
    assert_eq!(
        std::fs::read(dir_b.path().join("records.key")).unwrap(),
        file_a
    );
    assert!(b.scope("user:b").await.unwrap().unwrap().shredded);
    a.close().await;
    b.close().await;

    // The tables from before the shred, put back (a restore): refused at
    // start, and the shredded scope's bucket key does not open.
    let restore = PgStorage::open(&url, StoreKeys::probe()).await.unwrap();
    for table in [
        "keyd_scope_keys",
        "keyd_scope_buckets",
        "keyd_records_epoch",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(restore.pool())
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM keyd_scopes")
        .execute(restore.pool())
        .await
        .unwrap();
    for table in [
        "keyd_scopes",
        "keyd_scope_keys",
        "keyd_scope_buckets",
        "keyd_records_epoch",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} SELECT * FROM backup_{table}"
        )))
        .execute(restore.pool())
        .await
        .unwrap();
    }
    let (bucket, wrapped): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT b.bucket, b.wrapped FROM keyd_scope_buckets b
         JOIN keyd_scopes s ON s.bucket = b.bucket WHERE s.id = 'user:b'",
    )
    .fetch_one(restore.pool())
    .await
    .unwrap();
    restore.close().await;
    let error = PgStorage::open(&url, StoreKeys::open(dir_a.path()).unwrap())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("restore a backup taken after the last shred"),
        "{error}"
    );
    let live = StoreKeys::open(dir_b.path()).unwrap().records;
    assert!(
        live.current()
            .unwrap()
            .unwrap_bucket(bucket as u8, &wrapped)
            .is_err()
    );
}
