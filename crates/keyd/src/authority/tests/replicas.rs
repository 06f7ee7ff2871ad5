// Two authorities on one PostgreSQL database, as two `atrest keyd serve`
// replicas behind one name are (issue 10): what one replica does, the
// other honours at once. Included in `mod postgres` after the suite, whose
// helpers it uses.

/// Another replica of `f`'s authority; the hosts' memory (boot tickets,
/// poll tokens) is shared, as a host talks to either.
async fn replica(f: &Fixture) -> Fixture {
    Fixture {
        keyd: f.keyd.replica().await,
        tickets: f.tickets.clone(),
        poll_tokens: f.poll_tokens.clone(),
    }
}

#[tokio::test]
async fn a_host_enrolled_on_one_replica_unlocks_on_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    let (signed, state) = request(&b, &host.identity, &host.id, &host.binding);
    let grant = granted(unlock(&b, &signed).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    assert_eq!(b.authority.hosts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_revoke_or_shred_on_one_replica_is_refused_on_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    // B has read the host (and parsed its secret) before the revoke.
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    granted(unlock(&b, &signed).await.unwrap());

    a.authority.revoke(&host.id, "test").await.unwrap();
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&b, &signed).await.unwrap_err().code(), "revoked");
    a.authority.reinstate(&host.id, "test").await.unwrap();
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    granted(unlock(&b, &signed).await.unwrap());

    b.authority.shred(&host.id, "test").await.unwrap();
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&a, &signed).await.unwrap_err().code(), "shredded");
    assert_eq!(
        a.authority
            .reinstate(&host.id, "test")
            .await
            .unwrap_err()
            .code(),
        "shredded"
    );
    // The database itself keeps it shredded, whatever writes to it.
    let PgStorageRef(pool) = pg_pool(&a);
    let revived = sqlx::query("UPDATE keyd_hosts SET state = 'active' WHERE id = $1")
        .bind(host.id.as_str())
        .execute(&pool)
        .await;
    assert!(revived.is_err(), "a shredded host was made active again");
}

/// Waits until `task` is done (`true`) or a session on `f`'s database
/// waits for a row lock (`false`): whichever comes first, with no guess at
/// how long either takes.
async fn done_or_waiting_on_a_lock<T>(f: &Fixture, task: &tokio::task::JoinHandle<T>) -> bool {
    let PgStorageRef(pool) = pg_pool(f);
    loop {
        if task.is_finished() {
            return true;
        }
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE NOT l.granted AND a.datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 10: a release in flight on B (its state checked, its entry
/// inside the audit commit) and a revoke on A at that moment. Either the
/// revoke waits until B's release is logged, or B sees the revoke: B
/// never answers after A acknowledged the revoke, and the log never
/// shows a release after the revoke. Without the host's row held across
/// the release's audit append, A acknowledged at once and B released.
#[tokio::test]
async fn a_release_in_flight_on_one_replica_is_never_answered_after_a_revoke_on_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    let permits = b.faults.hold_commits().await;
    let releasing = {
        let authority = b.authority.clone();
        tokio::spawn(async move { authority.unlock(&signed, CTX).await })
    };
    b.faults.commit_started().await;
    let revoking = {
        let authority = a.authority.clone();
        let id = host.id.clone();
        tokio::spawn(async move { authority.revoke(&id, "test").await })
    };
    let acknowledged = done_or_waiting_on_a_lock(&a, &revoking).await;
    drop(permits);
    let released = releasing.await.unwrap();
    revoking.await.unwrap().unwrap();
    assert!(
        !(acknowledged && released.is_ok()),
        "B answered a release after A acknowledged the revoke"
    );
    let log = entries(&a).await;
    let revoked_at = log.iter().find(|e| e.kind == EntryKind::Revoke).unwrap().seq;
    let released_at = log
        .iter()
        .filter(|e| e.details.contains("\"released\""))
        .map(|e| e.seq)
        .collect::<Vec<_>>();
    assert!(
        released_at.iter().all(|&seq| seq < revoked_at),
        "a release logged after the revoke: {released_at:?} after {revoked_at}"
    );
    // Once A has answered, B refuses at once (no wait, no tick).
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&b, &signed).await.unwrap_err().code(), "revoked");
}

/// Issue 10: enrollment is one transaction (token spent, host and secret
/// written) that commits after its audit entry. B spending the same token
/// while A's enrollment is being logged waits, then finds it spent: one
/// host, one `enrolled` entry. Before, both logged `enrolled`, B stored
/// its host, and A had to log a compensating `not_enrolled`.
#[tokio::test]
async fn a_token_spent_on_two_replicas_at_once_enrolls_one_host_and_logs_one() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let token = a.authority.create_token("web", 3600, "test").await.unwrap();
    let enroll = |f: &Fixture, name: &'static str| {
        let authority = f.authority.clone();
        let token = token.token.clone();
        let public_key = HostIdentity::generate().public_key();
        tokio::spawn(async move { authority.enroll(&token, name, public_key, CTX).await })
    };
    let permits = a.faults.hold_commits().await;
    let first = enroll(&a, "web-1");
    a.faults.commit_started().await;
    let second = enroll(&b, "web-2");
    done_or_waiting_on_a_lock(&b, &second).await;
    drop(permits);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.unwrap().host_id.as_str(), "web-1");
    assert_eq!(second.unwrap_err().code(), "bad_token");
    let hosts = a.authority.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    let log = entries(&a).await;
    let enrolled: Vec<_> = log
        .iter()
        .filter(|e| e.kind == EntryKind::Enrollment && e.details.contains("\"group\""))
        .map(|e| e.subject.clone().unwrap_or_default())
        .collect();
    assert_eq!(enrolled, ["web-1"], "{log:#?}");
    assert!(
        !log.iter().any(|e| e.details.contains("not_enrolled")),
        "a compensating entry was logged"
    );
}

#[tokio::test]
async fn a_nonce_spent_on_one_replica_is_a_replay_on_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    granted(unlock(&a, &signed).await.unwrap());
    assert_eq!(
        unlock(&b, &signed).await.unwrap_err().code(),
        "replayed_nonce"
    );
    // Also when both see it at once: exactly one is answered.
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    let (first, second) = tokio::join!(
        a.authority.unlock(&signed, CTX),
        b.authority.unlock(&signed, CTX)
    );
    let codes: Vec<&str> = [&first, &second]
        .iter()
        .map(|r| r.as_ref().map_or_else(AuthorityError::code, |_| "released"))
        .collect();
    assert!(
        codes == ["released", "replayed_nonce"] || codes == ["replayed_nonce", "released"],
        "{codes:?}"
    );
}

/// A release spends its nonce in the transaction that holds the host's
/// row until the release is logged. The same request at B while A's
/// release is inside its audit commit waits for A's transaction, then is
/// a replay; A answers. Exactly one release is logged.
#[tokio::test]
async fn a_nonce_in_a_release_being_logged_on_one_replica_is_a_replay_on_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    let unlock_on = |f: &Fixture| {
        let (authority, signed) = (f.authority.clone(), signed.clone());
        tokio::spawn(async move { authority.unlock(&signed, CTX).await })
    };
    let permits = a.faults.hold_commits().await;
    let first = unlock_on(&a);
    a.faults.commit_started().await;
    let second = unlock_on(&b);
    done_or_waiting_on_a_lock(&b, &second).await;
    drop(permits);
    granted(first.await.unwrap().unwrap());
    assert_eq!(
        second.await.unwrap().unwrap_err().code(),
        "replayed_nonce"
    );
    let nonce = atrest_core::to_base64url(&signed.request.nonce.0);
    let released = entries(&a)
        .await
        .into_iter()
        .filter(|e| e.details.contains("\"released\"") && e.details.contains(&nonce))
        .count();
    assert_eq!(released, 1);
}

/// B parsed the host's secrets before A rotated them. B's hold finds the
/// record changed, lets the row go (and with it the nonce it spent in
/// the hold's transaction), reads the host again and holds it again: the
/// request is answered with a rebind, its own nonce not taken for a
/// replay, and spent for both replicas afterwards.
#[tokio::test]
async fn a_rotation_on_one_replica_is_read_again_by_the_other_and_answered() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    granted(unlock(&b, &signed).await.unwrap());
    let rotated = a.authority.rotate(&host.id, "test").await.unwrap();
    let (signed, state) = request(&b, &host.identity, &host.id, &host.binding);
    let grant = granted(unlock(&b, &signed).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    assert_eq!(grant.rebind.unwrap().key_id, rotated.record.key_id);
    for f in [&a, &b] {
        assert_eq!(
            unlock(f, &signed).await.unwrap_err().code(),
            "replayed_nonce"
        );
    }
}

#[tokio::test]
async fn a_boot_released_by_one_replica_is_the_same_boot_on_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    let first = granted(unlock(&a, &signed).await.unwrap());
    assert!(first.boot_ticket.is_some());
    // B judges the boot from the stored state A wrote before answering:
    // the same boot, proven by its ticket, so no new ticket and no hold.
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    assert!(signed.boot_ticket.is_some());
    let again = granted(unlock(&b, &signed).await.unwrap());
    assert!(again.boot_ticket.is_none(), "B took the boot for a new one");
    // Another boot, unannounced, is held on either.
    let (signed, _) = request_at_boot(&b, &host.identity, &host.id, &host.binding, "boot-2");
    pending(unlock(&b, &signed).await.unwrap());
}

#[tokio::test]
async fn a_policy_set_on_one_replica_applies_on_the_other_after_a_tick() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    a.authority
        .set_policy(&PolicyScope::Group("web".into()), rule(Policy::Deny), "test")
        .await
        .unwrap();
    // What every tick (250 ms) does, run now.
    b.authority.maintain().await;
    let (signed, _) = request(&b, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&b, &signed).await.unwrap_err().code(), "denied");
}

#[tokio::test]
async fn two_replicas_releasing_at_once_write_one_chain_that_verifies() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    // Every request releases, whatever the boot: this is about the log.
    let always = PolicyRule {
        policy: Policy::Auto,
        unannounced_reboot: Policy::Auto,
        rollback: Policy::Approve,
    };
    a.authority
        .set_policy(&PolicyScope::Group("web".into()), always, "test")
        .await
        .unwrap();
    b.authority.maintain().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let f = if i % 2 == 0 { &a } else { &b };
        let (signed, _) = request(f, &host.identity, &host.id, &host.binding);
        let authority = f.authority.clone();
        tasks.push(tokio::spawn(async move {
            authority.unlock(&signed, CTX).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let log = entries(&a).await;
    for (n, entry) in log.iter().enumerate() {
        assert_eq!(entry.seq, n as u64 + 1, "a gap or a fork in the chain");
    }
    let released = log
        .iter()
        .filter(|e| e.details.contains("\"released\""))
        .count();
    assert_eq!(released, 40);
    let public = a.authority.audit().public_key();
    atrest_audit::verify(b.authority.audit().store(), &public)
        .await
        .unwrap();
}

/// Issue 10: a request held by one replica could only be seen, approved
/// and collected through that replica.
#[tokio::test]
async fn a_request_held_on_one_replica_is_approved_and_released_through_the_other() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    a.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    b.authority.maintain().await;
    let (signed, state) = request(&a, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&a, &signed).await.unwrap());
    // B lists and shows it; the host's poll through B sees it waiting.
    let listed: Vec<String> = b
        .authority
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&view.id));
    assert_eq!(
        b.authority.pending_request(&view.id).await.unwrap().reason,
        view.reason
    );
    pending(poll_now(&b, &view.id).await.unwrap());
    // A poll waiting on A is answered once B decides.
    let waiting = {
        let authority = a.authority.clone();
        let (id, token) = (view.id.clone(), poll_token(&a, &view.id));
        tokio::spawn(async move { authority.poll(&id, &token, Duration::from_secs(30)).await })
    };
    b.authority.decide(&view.id, true, "alice").await.unwrap();
    // Deciding again on either replica is refused.
    for f in [&a, &b] {
        let again = f.authority.decide(&view.id, false, "bob").await.unwrap_err();
        assert_eq!(again.code(), "already_decided");
    }
    // Polled on both at once: one release, one answer.
    let through_b = poll_now(&b, &view.id);
    let (from_a, from_b) = tokio::join!(waiting, through_b);
    let (from_a, from_b) = (granted(from_a.unwrap().unwrap()), granted(from_b.unwrap()));
    assert_eq!(from_a.audit_seq, from_b.audit_seq);
    assert_eq!(from_a.boot_ticket, from_b.boot_ticket);
    assert_eq!(
        state.unblind(&from_b.response).unwrap().expose(),
        host.key.expose()
    );
    let log = entries(&a).await;
    let count = |needle: &str| {
        log.iter()
            .filter(|e| e.details.contains(needle) && e.details.contains(&view.id))
            .count()
    };
    assert_eq!(count("\"released\""), 1);
    assert_eq!(count("\"approved\""), 1);
}

#[tokio::test]
async fn two_replicas_deciding_at_once_decide_once() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    a.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&a, &signed).await.unwrap());
    let (approve, deny) = tokio::join!(
        a.authority.decide(&view.id, true, "alice"),
        b.authority.decide(&view.id, false, "bob")
    );
    let decided = [&approve, &deny]
        .iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(decided, 1, "{approve:?} {deny:?}");
    let refused = approve.err().or(deny.err()).unwrap();
    assert_eq!(refused.code(), "already_decided");
    let decisions = entries(&a)
        .await
        .iter()
        .filter(|e| e.kind == EntryKind::Approval)
        .count();
    assert_eq!(decisions, 1);
}

/// The per-host limit is the authority's, not each replica's: a burst
/// across both holds exactly the limit.
#[tokio::test]
async fn a_burst_across_two_replicas_holds_exactly_the_per_host_limit() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    a.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    b.authority.maintain().await;
    let limit = crate::storage::MAX_HELD_PER_HOST;
    let burst: Vec<_> = (0..2 * limit)
        .map(|i| {
            let f = if i % 2 == 0 { &a } else { &b };
            let (signed, _) = request(f, &host.identity, &host.id, &host.binding);
            let authority = f.authority.clone();
            tokio::spawn(async move { authority.unlock(&signed, CTX).await })
        })
        .collect();
    let (mut held, mut refused) = (0, 0);
    for answer in burst {
        match answer.await.unwrap() {
            Ok(UnlockOutcome::Pending { .. }) => held += 1,
            Err(e) if e.code() == "too_many_pending" => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((held, refused), (limit, limit));
    assert_eq!(a.authority.pending().await.unwrap().len(), limit);
    assert_eq!(b.authority.pending().await.unwrap().len(), limit);
}

/// Expiry runs on every replica's tick; each request is expired (and
/// logged) once.
#[tokio::test]
async fn a_request_expires_once_whichever_replica_sees_it_first() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let host = enroll_host(&a, "web-1").await;
    a.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let (signed, _) = request(&a, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&a, &signed).await.unwrap());
    a.clock.advance_ms(601_000);
    tokio::join!(a.authority.maintain(), b.authority.maintain());
    assert_eq!(poll_now(&b, &view.id).await.unwrap_err().code(), "expired");
    let expired = entries(&a)
        .await
        .iter()
        .filter(|e| e.details.contains("\"expired\"") && e.details.contains(&view.id))
        .count();
    assert_eq!(expired, 1);
}

struct PgStorageRef(sqlx::PgPool);

/// The pool of a PostgreSQL fixture's storage, to write to the database
/// behind the authority's back.
fn pg_pool(f: &Fixture) -> PgStorageRef {
    match f.authority.storage() {
        crate::storage::KeydStorage::Postgres(pg) => PgStorageRef(pg.pool().clone()),
        crate::storage::KeydStorage::Sqlite(_) => panic!("not a PostgreSQL fixture"),
    }
}

/// Ends every other session on the fixture's database, as a restart of
/// PostgreSQL does: pooled connections find out at their next query.
async fn drop_sessions(admin: &mut sqlx::PgConnection) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(admin)
    .await
    .unwrap();
}

/// Asks until the authority reports healthy: each failed ask discards one
/// dead pooled connection, so a bounded number of asks is enough.
async fn until_healthy(f: &Fixture) {
    for _ in 0..64 {
        if f.authority.health().await.is_ok() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "still unhealthy: {}",
        f.authority.health().await.unwrap_err()
    );
}

#[tokio::test]
async fn a_read_only_database_refuses_releases_until_it_takes_writes_again() {
    use sqlx::Connection;
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let crate::storage::Database::Postgres(url) = &f.keyd.database else {
        unreachable!()
    };
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let set = |on: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = {}",
            if on { "on" } else { "off" }
        ))
    };
    let count = "SELECT count(*) FROM audit_entries";
    let before: i64 = sqlx::query_scalar(count).fetch_one(&mut admin).await.unwrap();
    sqlx::query(set(true)).execute(&mut admin).await.unwrap();
    drop_sessions(&mut admin).await;

    // Refused with the stable code, health says so, nothing released.
    for _ in 0..3 {
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        let refused = unlock(&f, &signed).await.unwrap_err();
        assert_eq!(refused.code(), "database_unavailable", "{refused}");
    }
    let health = f.authority.health().await.unwrap_err();
    assert_eq!(health.code(), "database_unavailable", "{health}");
    // A login attempt that cannot be counted is refused (the page answers
    // 503), never let through uncounted.
    let client = crate::approvers::client_of(Some("192.0.2.1".parse().unwrap()));
    let uncounted = f.authority.take_login("alice", client).await.unwrap_err();
    assert!(uncounted.is_unavailable(), "{uncounted}");
    let after: i64 = sqlx::query_scalar(count).fetch_one(&mut admin).await.unwrap();
    assert_eq!(after, before, "an entry was written read-only");

    // Writable again: the same authority answers, with no restart.
    sqlx::query(set(false)).execute(&mut admin).await.unwrap();
    drop_sessions(&mut admin).await;
    until_healthy(&f).await;
    // The audit writer's pooled connections were ended too: its first
    // batches may fail (audit_unavailable) until it has reconnected.
    let mut answered = None;
    for _ in 0..16 {
        let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
        match unlock(&f, &signed).await {
            Ok(outcome) => {
                answered = Some((granted(outcome), state));
                break;
            }
            Err(e) if e.code() == "audit_unavailable" || e.code() == "database_unavailable" => {}
            Err(e) => panic!("{e}"),
        }
    }
    let (grant, state) = answered.expect("no release after the database took writes again");
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    let public = f.authority.audit().public_key();
    atrest_audit::verify(f.authority.audit().store(), &public)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_database_of_another_schema_version_is_refused() {
    let Some(url) = crate::testing::fresh_postgres().await else {
        return;
    };
    let keys = crate::secrets_key::StoreKeys::in_memory();
    let storage = crate::storage::PgStorage::open(&url, keys.clone())
        .await
        .unwrap();
    for (version, says) in [(99, "run the newer atrest keyd"), (0, "run the atrest keyd release")] {
        sqlx::query("UPDATE keyd_schema SET version = $1")
            .bind(version)
            .execute(storage.pool())
            .await
            .unwrap();
        let error = crate::storage::PgStorage::open(&url, keys.clone())
            .await
            .unwrap_err();
        assert!(error.to_string().contains(says), "{version}: {error}");
    }
}

/// Issue 10: the PostgreSQL server stopped and started again (a real
/// restart, of a server of the test's own) while hosts ask for releases.
/// While it is down every release is refused with a stable code; each
/// release answered has its `released` entry in the log; the same
/// authority answers again once the server is back, with no restart of
/// keyd; the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_refuses_releases_then_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(server) = crate::testing::PostgresServer::start().await else {
        return;
    };
    let keyd = crate::testing::TestKeyd::open_at(
        crate::storage::Database::Postgres(server.url.clone()),
        crate::testing::ManualClock::at(T0),
        AuthorityOptions::default(),
        atrest_audit::LogOptions::default(),
    )
    .await;
    let f = Arc::new(Fixture {
        keyd,
        tickets: Default::default(),
        poll_tokens: Default::default(),
    });
    let host = Arc::new(enroll_host(&f, "web-1").await);
    // The boot's first release (its ticket), so that every release under
    // load is of the same, proven boot.
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    granted(unlock(&f, &signed).await.unwrap());
    let granted_seqs = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let refusals = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (f, host) = (f.clone(), host.clone());
            let (granted_seqs, refusals, stop) =
                (granted_seqs.clone(), refusals.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
                    match unlock(&f, &signed).await {
                        Ok(outcome) => {
                            let grant = granted(outcome);
                            assert_eq!(
                                state.unblind(&grant.response).unwrap().expose(),
                                host.key.expose()
                            );
                            granted_seqs.lock().unwrap().push(grant.audit_seq);
                        }
                        Err(e) => refusals.lock().unwrap().push(e.code().to_owned()),
                    }
                }
            })
        })
        .collect();
    let granted_count = || granted_seqs.lock().unwrap().len();
    let refused_count = || refusals.lock().unwrap().len();
    until(|| granted_count() >= 10).await;
    server.stop();
    let before_down = refused_count();
    until(|| refused_count() >= before_down + 4).await;
    let granted_while_down = granted_count();
    server.start_again();
    until(|| granted_count() >= granted_while_down + 10).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let refusals = refusals.lock().unwrap().clone();
    assert!(
        refusals
            .iter()
            .all(|code| code == "database_unavailable" || code == "audit_unavailable"),
        "{refusals:?}"
    );
    let log = entries(&f).await;
    for seq in granted_seqs.lock().unwrap().iter() {
        let entry = log.iter().find(|e| e.seq == *seq).unwrap();
        assert!(entry.details.contains("\"released\""), "{entry:?}");
    }
    let public = f.authority.audit().public_key();
    atrest_audit::verify(f.authority.audit().store(), &public)
        .await
        .unwrap();
}

/// Waits, polling (no guessed duration), until `done` holds.
async fn until(done: impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Issue 10, decision 0018: a shred through replica A advances the
/// secrets epoch; replica B, whose key file is still at the old epoch,
/// ratchets it forward on its next release (the epoch comes with the host
/// row it reads anyway), answers every other host, and its file no longer
/// holds the old key.
#[tokio::test]
async fn a_shred_on_one_replica_moves_the_others_key_file_forward() {
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let gone = enroll_host(&a, "web-1").await;
    let kept = enroll_host(&a, "web-2").await;
    let (signed, _) = request(&b, &kept.identity, &kept.id, &kept.binding);
    granted(unlock(&b, &signed).await.unwrap());
    let old = std::fs::read(b.secrets_key()).unwrap();
    assert_eq!(old, std::fs::read(a.secrets_key()).unwrap());

    a.authority.shred(&gone.id, "test").await.unwrap();
    let new = std::fs::read(a.secrets_key()).unwrap();
    assert_ne!(old, new);
    assert_eq!(std::fs::read(b.secrets_key()).unwrap(), old, "B not yet asked");

    let (signed, state) = request(&b, &kept.identity, &kept.id, &kept.binding);
    let grant = granted(unlock(&b, &signed).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        kept.key.expose()
    );
    let moved = std::fs::read(b.secrets_key()).unwrap();
    assert_eq!(moved, new);
    assert!(!moved.windows(32).any(|w| w == &old[9..]), "B's file still holds K_0");
    let (signed, _) = request(&b, &gone.identity, &gone.id, &gone.binding);
    assert_eq!(unlock(&b, &signed).await.unwrap_err().code(), "shredded");
    // B, restarted on its moved file, reads every remaining secret.
    let b = Fixture {
        keyd: b.keyd.restart().await,
        ..b
    };
    assert_eq!(
        b.authority.storage().host_secrets(&kept.id).await.unwrap().len(),
        1
    );
}

/// The approval page's budgets of wrong codes are the authority's, not
/// each replica's (before, R replicas allowed R times the guesses): wrong
/// codes spread over both meet one budget, the refusal holds on both
/// until the window passes, and an address trusted by a good login on one
/// is trusted on the other.
#[tokio::test]
async fn wrong_codes_spread_over_two_replicas_meet_one_budget() {
    use crate::approvers::{FAILURE_WINDOW, MAX_FAILURES, Refusal, client_of};
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let attacker = client_of(Some("198.51.100.7".parse().unwrap()));
    for i in 0..MAX_FAILURES {
        let f = if i % 2 == 0 { &a } else { &b };
        let _ = f.authority.take_login("alice", attacker).await.unwrap().unwrap();
    }
    for f in [&a, &b] {
        assert_eq!(
            f.authority.take_login("alice", attacker).await.unwrap().unwrap_err(),
            Refusal::NameFromAddress
        );
    }
    a.clock.advance(FAILURE_WINDOW);
    let _ = b.authority.take_login("alice", attacker).await.unwrap().unwrap();

    // Trust made on A holds on B: B counts its attempts in no untrusted
    // budget (shown by a full one).
    let phone = client_of(Some("203.0.113.9".parse().unwrap()));
    good_login(&a, "alice", phone).await;
    let PgStorageRef(pool) = pg_pool(&a);
    sqlx::query(
        "UPDATE keyd_login_failures SET failures = $1 WHERE kind = 'untrusted'",
    )
    .bind(i64::from(crate::approvers::MAX_FAILURES_UNTRUSTED))
    .execute(&pool)
    .await
    .unwrap();
    let stranger = client_of(Some("192.0.2.1".parse().unwrap()));
    assert_eq!(
        b.authority.take_login("bob", stranger).await.unwrap().unwrap_err(),
        Refusal::Untrusted
    );
    let _ = b.authority.take_login("bob", phone).await.unwrap().unwrap();
}

/// Attempts sent at once to both replicas (as a load balancer spreads an
/// attacker's parallel guesses) are counted one at a time: exactly the
/// budget gets through, the rest are refused.
#[tokio::test]
async fn a_burst_of_wrong_codes_across_two_replicas_gets_exactly_the_budget() {
    use crate::approvers::{MAX_FAILURES, Refusal, client_of};
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let attacker = client_of(Some("198.51.100.7".parse().unwrap()));
    let burst: Vec<_> = (0..4 * MAX_FAILURES)
        .map(|i| {
            let f = if i % 2 == 0 { &a } else { &b };
            let authority = f.authority.clone();
            tokio::spawn(async move { authority.take_login("alice", attacker).await.unwrap() })
        })
        .collect();
    let (mut taken, mut refused) = (0, 0);
    for answer in burst {
        match answer.await.unwrap() {
            Ok(_) => taken += 1,
            Err(Refusal::NameFromAddress) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((taken, refused), (MAX_FAILURES, 3 * MAX_FAILURES));
}

/// Either replica's tick forgets the windows that are over, and the
/// trust that ran out.
#[tokio::test]
async fn the_tick_forgets_login_counts_whose_windows_are_over() {
    use crate::approvers::{FAILURE_WINDOW, TRUSTED_FOR, client_of};
    let Some(a) = fixture().await else { return };
    let b = replica(&a).await;
    let client = client_of(Some("198.51.100.7".parse().unwrap()));
    let _ = a.authority.take_login("alice", client).await.unwrap().unwrap();
    good_login(&a, "bob", client).await;
    let PgStorageRef(pool) = pg_pool(&a);
    let rows = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT count(*) FROM keyd_login_failures),
                (SELECT count(*) FROM keyd_login_trusted)",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // alice's window, the address's and the untrusted one; the address.
    assert_eq!(rows().await, (3, 1));
    b.authority.maintain().await;
    assert_eq!(rows().await, (3, 1));
    a.clock.advance(FAILURE_WINDOW);
    b.authority.maintain().await;
    assert_eq!(rows().await, (0, 1));
    a.clock.advance(TRUSTED_FOR - FAILURE_WINDOW);
    b.authority.maintain().await;
    assert_eq!(rows().await, (0, 0));
}
