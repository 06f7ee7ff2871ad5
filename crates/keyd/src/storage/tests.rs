//! The stores' schema migrations: a database written by an earlier
//! schema version opens, keeps its rows and gains the held requests, the
//! scoped tables and the web sessions.

#![allow(clippy::unwrap_used)]

use atrest_remote::{HostId, HostIdentity, KeyId};

use super::*;

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

/// The scoped tables work: an app, a scope with a key, a rotation, a
/// window, a shred, and the records-key check.
async fn check_scoped(storage: &impl Storage) {
    assert!(storage.check_records_key([1; 32]).await.unwrap());
    assert!(storage.check_records_key([1; 32]).await.unwrap());
    assert!(!storage.check_records_key([2; 32]).await.unwrap());
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
    assert!(storage.add_scope_key("user:1", 2, &[4, 5]).await.unwrap());
    assert_eq!(
        storage.scope("user:1").await.unwrap().unwrap().keys.len(),
        2
    );
    assert!(!storage.add_scope_key("user:1", 2, &[6]).await.unwrap());
    assert!(!storage.add_scope_key("user:none", 1, &[6]).await.unwrap());
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
    assert_eq!(storage.scopes().await.unwrap(), vec![stored]);
    assert!(storage.shred_scope("user:1").await.unwrap());
    assert!(!storage.shred_scope("user:1").await.unwrap());
    let shredded = storage.scope("user:1").await.unwrap().unwrap();
    assert!(shredded.shredded && shredded.keys.is_empty() && shredded.window.is_none());
    assert!(!storage.add_scope_key("user:1", 3, &[7]).await.unwrap());
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

/// The cached store over SQLite (how `keyd serve` runs it) answers every
/// scoped read after a write as the database does.
#[tokio::test]
async fn a_cached_store_forgets_the_apps_and_scopes_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Cached::new(
        SqliteStorage::open(&dir.path().join("keyd.db"))
            .await
            .unwrap(),
    );
    check_scoped(&storage).await;
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
async fn a_sqlite_database_of_schema_1_2_or_3_is_migrated() {
    for from in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyd.db");
        // Version 3 is version 4 without web sessions, version 2 also
        // without held requests; version 1 also lacks the boot ticket.
        let (pool, host) = {
            let storage = SqliteStorage::open(&path).await.unwrap();
            let host = enroll_host(&storage, "web-1").await;
            (storage.pool().clone(), host)
        };
        // Version 3 is version 4 without the scoped tables and web sessions.
        for table in [
            "scope_keys",
            "scopes",
            "scoped_apps",
            "scoped_records_key",
            "web_sessions",
        ] {
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

        let storage = SqliteStorage::open(&path).await.unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(storage.pool())
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION, "from {from}");
        check_migrated(&storage, &host).await;
        check_scoped(&storage).await;
    }
}

#[tokio::test]
async fn a_postgresql_database_of_schema_1_or_2_is_migrated() {
    for from in [1, 2] {
        a_postgresql_database_is_migrated_from(from).await;
    }
}

async fn a_postgresql_database_is_migrated_from(from: i64) {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let host = {
        let storage = PgStorage::open(&url).await.unwrap();
        let host = enroll_host(&storage, "web-1").await;
        // Version 2 is version 3 without the scoped tables and web sessions;
        // version 1 also lacks held requests.
        for table in [
            "keyd_scope_keys",
            "keyd_scopes",
            "keyd_scoped_apps",
            "keyd_scoped_records_key",
            "keyd_web_sessions",
        ] {
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
    let (a, b) = tokio::join!(PgStorage::open(&url), PgStorage::open(&url));
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
    let storage = std::sync::Arc::new(PgStorage::open(&url).await.unwrap());
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
