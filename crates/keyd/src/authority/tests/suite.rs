// The authority's suite, included once per backend by `mod.rs` (which
// defines `BACKEND`): one suite, two databases.

use std::time::Duration;

use atrest_audit::{Entry, EntryKind};
use atrest_remote::{
    BootId, BootTicket, HostId, HostIdentity, RemoteBinding, RequestNonce, SignedUnlockRequest,
    UnblindingState, UnlockRequest, enroll,
};

use crate::authority::*;
use crate::held::{PendingState, PendingView};
use crate::storage::{HostState, Policy, PolicyRule, PolicyScope};
use crate::testing::{Backend, TestKeyd};

/// A [`TestKeyd`] and what its hosts keep: each unlock goes through
/// [`unlock`], which keeps them.
struct Fixture {
    keyd: TestKeyd,
    /// Boot tickets the hosts got, by (host, boot id): what a host keeps
    /// in /run.
    tickets: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), BootTicket>>>,
    /// Poll tokens of held requests, by request id: what the process
    /// that made the request holds.
    poll_tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl std::ops::Deref for Fixture {
    type Target = TestKeyd;

    fn deref(&self) -> &TestKeyd {
        &self.keyd
    }
}

/// Unlocks as a host does: keeps the boot ticket of a grant.
async fn unlock(
    f: &Fixture,
    signed: &SignedUnlockRequest,
) -> Result<UnlockOutcome, AuthorityError> {
    let outcome = f.authority.unlock(signed, CTX).await;
    if let Ok(UnlockOutcome::Pending {
        view,
        poll_token: Some(token),
    }) = &outcome
    {
        f.poll_tokens
            .lock()
            .unwrap()
            .insert(view.id.clone(), token.to_string());
    }
    if let Ok(UnlockOutcome::Granted(grant)) = &outcome
        && let Some(ticket) = &grant.boot_ticket
    {
        f.tickets.lock().unwrap().insert(
            (
                signed.request.host_id.to_string(),
                signed.request.boot_id.to_string(),
            ),
            ticket.clone(),
        );
    }
    outcome
}

fn ticket(f: &Fixture, host: &HostId, boot: &str) -> Option<BootTicket> {
    f.tickets
        .lock()
        .unwrap()
        .get(&(host.to_string(), boot.to_owned()))
        .cloned()
}

const T0: u64 = TestKeyd::T0;
const CTX: RequestContext = RequestContext { source: None };
const BOOT_A: &str = "0b5c5e4e-8a8d-4f43-9a4b-4d7c3f2a1b00";

fn rule(policy: Policy) -> PolicyRule {
    PolicyRule {
        policy,
        unannounced_reboot: Policy::Approve,
        rollback: Policy::Approve,
    }
}

/// A keyd on this suite's backend; `None` skips the test (no PostgreSQL
/// server named, and none required).
async fn fixture() -> Option<Fixture> {
    fixture_with(AuthorityOptions::default()).await
}

async fn fixture_with(options: AuthorityOptions) -> Option<Fixture> {
    Some(Fixture {
        keyd: TestKeyd::start_on(BACKEND, options).await?,
        tickets: Default::default(),
        poll_tokens: Default::default(),
    })
}

/// Stops the authority (as a restart would) and opens its files again.
async fn restart(f: Fixture) -> Fixture {
    Fixture {
        keyd: f.keyd.restart().await,
        ..f
    }
}

async fn entries(f: &Fixture) -> Vec<Entry> {
    f.keyd.entries().await
}

struct Host {
    identity: HostIdentity,
    id: HostId,
    binding: RemoteBinding,
    key: atrest_core::SecretKey,
}

async fn enroll_host(f: &Fixture, name: &str) -> Host {
    let token = f.authority.create_token("web", 3600, "test").await.unwrap();
    let identity = HostIdentity::generate();
    let enrollment = f
        .authority
        .enroll(&token.token, name, identity.public_key(), CTX)
        .await
        .unwrap();
    assert_eq!(enrollment.group, "web");
    let (binding, key) = enroll(&enrollment.exchange_key);
    assert_eq!(binding.key_id(), enrollment.key_id);
    Host {
        identity,
        id: enrollment.host_id,
        binding,
        key,
    }
}

fn request(
    f: &Fixture,
    signer: &HostIdentity,
    id: &HostId,
    binding: &RemoteBinding,
) -> (SignedUnlockRequest, UnblindingState) {
    request_at_boot(f, signer, id, binding, BOOT_A)
}

fn request_at_boot(
    f: &Fixture,
    signer: &HostIdentity,
    id: &HostId,
    binding: &RemoteBinding,
    boot: &str,
) -> (SignedUnlockRequest, UnblindingState) {
    let (blinded, state) = binding.blind();
    let signed = signer.sign(UnlockRequest {
        host_id: id.clone(),
        vault_id: [7; 16],
        keyslot: 1,
        key_id: binding.key_id(),
        blinded,
        nonce: RequestNonce::random(),
        timestamp: f.clock.now_ms() / 1000,
        boot_id: BootId::new(boot).unwrap(),
        generation: None,
    });
    let signed = SignedUnlockRequest {
        boot_ticket: ticket(f, id, boot),
        ..signed
    };
    (signed, state)
}

fn granted(outcome: UnlockOutcome) -> Grant {
    match outcome {
        UnlockOutcome::Granted(grant) => *grant,
        UnlockOutcome::Pending { .. } => panic!("pending"),
    }
}

#[tokio::test]
async fn enroll_then_unlock_gives_the_enrollment_key() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
    let grant = granted(unlock(&f, &signed).await.unwrap());
    assert!(grant.audit_seq > 0);
    let key = state.unblind(&grant.response).unwrap();
    assert_eq!(key.expose(), host.key.expose());
}

#[tokio::test]
async fn an_enrolled_host_binds_another_vault_without_a_token() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let bind = |identity: &HostIdentity| {
        identity.sign_bind(atrest_remote::BindRequest {
            host_id: host.id.clone(),
            nonce: RequestNonce::random(),
            timestamp: T0,
        })
    };
    let signed = bind(&host.identity);
    let bound = f.authority.bind(&signed, CTX).await.unwrap();
    assert_eq!(bound.key_id, host.binding.key_id());
    // A second vault on the same exchange key opens on its own.
    let (second, key) = enroll(&bound.exchange_key);
    let (request, state) = request(&f, &host.identity, &host.id, &second);
    let grant = granted(unlock(&f, &request).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        key.expose()
    );
    // Replayed, or signed by someone else: refused.
    assert_eq!(
        f.authority.bind(&signed, CTX).await.unwrap_err().code(),
        "replayed_nonce"
    );
    assert_eq!(
        f.authority
            .bind(&bind(&HostIdentity::generate()), CTX)
            .await
            .unwrap_err()
            .code(),
        "bad_signature"
    );
    // After a rotation it binds to the new key; a revoked host cannot bind.
    let rotated = f.authority.rotate(&host.id, "test").await.unwrap();
    let bound = f.authority.bind(&bind(&host.identity), CTX).await.unwrap();
    assert_eq!(bound.key_id, rotated.record.key_id);
    f.authority.revoke(&host.id, "test").await.unwrap();
    assert_eq!(
        f.authority
            .bind(&bind(&host.identity), CTX)
            .await
            .unwrap_err()
            .code(),
        "revoked"
    );
}

#[tokio::test]
async fn ids_never_look_like_options() {
    let Some(f) = fixture().await else { return };
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let host = enroll_host(&f, "web-1").await;
    for _ in 0..64 {
        let token = f.authority.create_token("web", 60, "test").await.unwrap();
        assert!(token.token.starts_with("atrest_tok_"), "{}", token.token);
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        let view = pending(unlock(&f, &signed).await.unwrap());
        assert!(view.id.starts_with("req_"), "{}", view.id);
        f.authority.decide(&view.id, false, "test").await.unwrap();
    }
}

#[tokio::test]
async fn a_token_works_once_and_not_after_expiry() {
    let Some(f) = fixture().await else { return };
    let token = f.authority.create_token("web", 60, "test").await.unwrap();
    let id = HostIdentity::generate().public_key();
    f.authority
        .enroll(&token.token, "a", id, CTX)
        .await
        .unwrap();
    let again = f
        .authority
        .enroll(&token.token, "b", id, CTX)
        .await
        .unwrap_err();
    assert_eq!(again.code(), "bad_token");
    let token = f.authority.create_token("web", 60, "test").await.unwrap();
    f.clock.advance_ms(61_000);
    let late = f
        .authority
        .enroll(&token.token, "c", id, CTX)
        .await
        .unwrap_err();
    assert_eq!(late.code(), "bad_token");
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    granted(unlock(&f, &signed).await.unwrap());
    let replay = unlock(&f, &signed).await.unwrap_err();
    assert_eq!(replay.code(), "replayed_nonce");
}

#[tokio::test]
async fn revoked_and_shredded_hosts_are_refused() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority.revoke(&host.id, "test").await.unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "revoked");
    let secret = f.authority.storage().host_secrets(&host.id).await.unwrap();
    let secret = secret[0].secret.clone();
    f.authority.shred(&host.id, "test").await.unwrap();
    // Shredding is for good: no state change brings the secret back.
    assert!(
        !f.authority
            .storage()
            .set_host_state(&mut Default::default(), &host.id, HostState::Active)
            .await
            .unwrap()
    );
    assert_eq!(
        f.authority
            .reinstate(&host.id, "test")
            .await
            .unwrap_err()
            .code(),
        "shredded"
    );
    assert!(
        f.authority
            .storage()
            .host_secrets(&host.id)
            .await
            .unwrap()
            .is_empty()
    );
    // Nor is it anywhere in the database files (secure_delete, WAL
    // truncated).
    for name in ["keyd.db", "keyd.db-wal"] {
        if BACKEND != Backend::Sqlite {
            break;
        }
        let bytes = std::fs::read(f.path().join(name)).unwrap_or_default();
        assert!(
            !bytes.windows(32).any(|w| w == &secret[..]),
            "{name} still holds the shredded secret"
        );
    }
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "shredded");
}

#[tokio::test]
async fn host_a_cannot_get_host_b_answer() {
    let Some(f) = fixture().await else { return };
    let a = enroll_host(&f, "a").await;
    let b = enroll_host(&f, "b").await;
    // A signs a request naming B.
    let (signed, _) = request(&f, &a.identity, &b.id, &b.binding);
    assert_eq!(
        unlock(&f, &signed).await.unwrap_err().code(),
        "bad_signature"
    );
    // A asks under its own name for B's keyslot.
    let (signed, _) = request(&f, &a.identity, &a.id, &b.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "unknown_key");
}

#[tokio::test]
async fn stale_requests_and_unknown_hosts_are_refused() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    f.clock.advance_ms(301_000);
    assert_eq!(
        unlock(&f, &signed).await.unwrap_err().code(),
        "stale_request"
    );
    let stranger = HostId::new("nobody").unwrap();
    let (signed, _) = request(&f, &host.identity, &stranger, &host.binding);
    assert_eq!(
        unlock(&f, &signed).await.unwrap_err().code(),
        "unknown_host"
    );
}

#[tokio::test]
async fn policies_deny_and_hold() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(
            &PolicyScope::Group("web".into()),
            rule(Policy::Approve),
            "test",
        )
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert!(matches!(
        unlock(&f, &signed).await.unwrap(),
        UnlockOutcome::Pending { .. }
    ));
    // The host's own policy wins over its group's.
    f.authority
        .set_policy(
            &PolicyScope::Host(host.id.clone()),
            rule(Policy::Deny),
            "test",
        )
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "denied");
}

#[tokio::test]
async fn no_release_when_the_audit_cannot_be_written() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.faults.fail(true);
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(
        unlock(&f, &signed).await.unwrap_err().code(),
        "audit_unavailable"
    );
}

fn pending(outcome: UnlockOutcome) -> PendingView {
    match outcome {
        UnlockOutcome::Pending { view, .. } => *view,
        UnlockOutcome::Granted(_) => panic!("granted"),
    }
}

async fn unlock_boot(
    f: &Fixture,
    host: &Host,
    boot: &str,
) -> (Result<UnlockOutcome, AuthorityError>, UnblindingState) {
    let (signed, state) = request_at_boot(f, &host.identity, &host.id, &host.binding, boot);
    (unlock(f, &signed).await, state)
}

fn poll_token(f: &Fixture, id: &str) -> String {
    f.poll_tokens
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .unwrap_or_default()
}

async fn poll_now(f: &Fixture, id: &str) -> Result<UnlockOutcome, AuthorityError> {
    f.authority
        .poll(id, &poll_token(f, id), Duration::ZERO)
        .await
}

#[tokio::test]
async fn a_held_request_is_released_once_approved() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(
            &PolicyScope::Host(host.id.clone()),
            rule(Policy::Approve),
            "test",
        )
        .await
        .unwrap();
    let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    assert_eq!(view.state, PendingState::Pending);
    assert!(
        view.reason.contains("requires an approver"),
        "{}",
        view.reason
    );
    assert_eq!(f.authority.pending().await.unwrap().len(), 1);
    // Still pending when polled.
    pending(poll_now(&f, &view.id).await.unwrap());
    // A waiting poll is woken by the decision.
    let waiter = {
        let authority = f.authority.clone();
        let id = view.id.clone();
        let token = poll_token(&f, &id);
        tokio::spawn(async move { authority.poll(&id, &token, Duration::from_secs(30)).await })
    };
    tokio::task::yield_now().await;
    let decided = f.authority.decide(&view.id, true, "alice").await.unwrap();
    assert_eq!(decided.state, PendingState::Approved);
    let grant = granted(waiter.await.unwrap().unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    // Polling again gives the same answer, and one release in the log.
    let again = granted(poll_now(&f, &view.id).await.unwrap());
    assert_eq!(again.audit_seq, grant.audit_seq);
    let log = entries(&f).await;
    let released = log
        .iter()
        .filter(|e| e.details.contains("\"released\"") && e.details.contains(&view.id))
        .count();
    assert_eq!(released, 1);
    assert!(
        log.iter()
            .any(|e| e.kind == EntryKind::Approval && e.actor == "alice")
    );
    // A host cannot pile up held requests.
    for _ in 0..crate::storage::MAX_HELD_PER_HOST {
        let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
        pending(unlock(&f, &signed).await.unwrap());
    }
    // Asking again is "busy, retry" (429), not a denial: a copy of the
    // host's identity can fill these slots, and the real host must
    // keep asking.
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(
        unlock(&f, &signed).await.unwrap_err().code(),
        "too_many_pending"
    );
    // Deciding twice is refused.
    assert_eq!(
        f.authority
            .decide(&view.id, false, "bob")
            .await
            .unwrap_err()
            .code(),
        "already_decided"
    );
}

#[tokio::test]
async fn held_requests_can_be_denied_and_expire_to_deny() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(
            &PolicyScope::Group("web".into()),
            rule(Policy::Approve),
            "test",
        )
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let denied = pending(unlock(&f, &signed).await.unwrap());
    f.authority
        .decide(&denied.id, false, "alice")
        .await
        .unwrap();
    assert_eq!(poll_now(&f, &denied.id).await.unwrap_err().code(), "denied");

    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let waiting = pending(unlock(&f, &signed).await.unwrap());
    f.clock.advance_ms(601_000);
    f.authority.maintain().await;
    assert_eq!(
        poll_now(&f, &waiting.id).await.unwrap_err().code(),
        "expired"
    );
    assert_eq!(
        f.authority
            .decide(&waiting.id, true, "alice")
            .await
            .unwrap_err()
            .code(),
        "already_decided"
    );
    assert!(f.authority.pending().await.unwrap().is_empty());
    assert!(
        entries(&f)
            .await
            .iter()
            .any(|e| e.details.contains("\"expired\""))
    );
    assert_eq!(
        poll_now(&f, "no-such-request").await.unwrap_err().code(),
        "unknown_request"
    );
}

#[tokio::test]
async fn revoking_a_host_denies_its_held_requests() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    f.authority.revoke(&host.id, "test").await.unwrap();
    assert_eq!(poll_now(&f, &view.id).await.unwrap_err().code(), "denied");
}

#[tokio::test]
async fn an_unannounced_reboot_is_held_and_a_planned_one_is_not() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    // First boot after enrollment, then the same boot again: released.
    granted(unlock_boot(&f, &host, BOOT_A).await.0.unwrap());
    granted(unlock_boot(&f, &host, BOOT_A).await.0.unwrap());
    // A new boot nobody announced: held, and the reason says why.
    let view = pending(unlock_boot(&f, &host, "b00b").await.0.unwrap());
    assert!(
        view.reason.contains("unaccounted reboot"),
        "{}",
        view.reason
    );
    assert_eq!(view.boot, "unannounced");
    f.authority.decide(&view.id, true, "alice").await.unwrap();
    let approved = granted(poll_now(&f, &view.id).await.unwrap());
    let b00b_ticket = approved.boot_ticket.expect("a new boot gets a ticket");
    let notice_from = |boot: &str, ticket: Option<BootTicket>| {
        let signed = host.identity.sign_reboot(atrest_remote::RebootNotice {
            host_id: host.id.clone(),
            boot_id: BootId::new(boot).unwrap(),
            nonce: RequestNonce::random(),
            timestamp: T0,
        });
        atrest_remote::SignedRebootNotice {
            boot_ticket: ticket,
            ..signed
        }
    };
    // A copy of the disk has the identity but not the running boot's
    // ticket: it cannot announce a reboot, under any boot id...
    for (boot, ticket) in [
        ("b00b", None),
        ("made-up", None),
        ("made-up", Some(b00b_ticket.clone())),
        ("b00b", Some(BootTicket::random())),
    ] {
        assert_eq!(
            f.authority
                .announce_reboot(&notice_from(boot, ticket), CTX)
                .await
                .unwrap_err()
                .code(),
            "unproven_boot"
        );
    }
    // ...nor pass for the running boot: held, with the reason.
    let (signed, _) = request_at_boot(&f, &host.identity, &host.id, &host.binding, "b00b");
    let clone = SignedUnlockRequest {
        boot_ticket: None,
        ..signed
    };
    let held = pending(unlock(&f, &clone).await.unwrap());
    assert_eq!(held.boot, "unproven");
    assert!(held.reason.contains("boot ticket"), "{}", held.reason);
    // The running boot, with its ticket, is itself.
    let (signed, _) = request_at_boot(&f, &host.identity, &host.id, &host.binding, "b00b");
    let signed = SignedUnlockRequest {
        boot_ticket: Some(b00b_ticket.clone()),
        ..signed
    };
    let same = granted(unlock(&f, &signed).await.unwrap());
    assert!(same.boot_ticket.is_none(), "a proven boot keeps its ticket");
    // Announced from boot b00b: the next boot is released at once...
    let notice = notice_from("b00b", Some(b00b_ticket));
    f.authority.announce_reboot(&notice, CTX).await.unwrap();
    // ...and the same notice cannot be replayed.
    assert_eq!(
        f.authority
            .announce_reboot(&notice, CTX)
            .await
            .unwrap_err()
            .code(),
        "replayed_nonce"
    );
    let (outcome, state) = unlock_boot(&f, &host, "c0ffee").await;
    let grant = granted(outcome.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    // The announcement is used up by that boot.
    pending(unlock_boot(&f, &host, "d00d").await.0.unwrap());
    // A host whose rule denies unannounced reboots is refused outright.
    f.authority
        .set_policy(
            &PolicyScope::Host(host.id.clone()),
            PolicyRule {
                policy: Policy::Auto,
                unannounced_reboot: Policy::Deny,
                rollback: Policy::Approve,
            },
            "test",
        )
        .await
        .unwrap();
    assert_eq!(
        unlock_boot(&f, &host, "e0e0").await.0.unwrap_err().code(),
        "denied"
    );
    // An announcement older than the window no longer counts.
    let notice = notice_from("c0ffee", ticket(&f, &host.id, "c0ffee"));
    f.authority.announce_reboot(&notice, CTX).await.unwrap();
    f.clock.advance_ms(3_601_000);
    assert_eq!(
        unlock_boot(&f, &host, "f0f0").await.0.unwrap_err().code(),
        "denied"
    );
}

/// Issue 10: the boot state a release depends on (the new boot's ticket)
/// is durable before the answer, so a crash right after the answer (no
/// flush) still knows the boot: its next request is the same boot, not a
/// first one.
#[tokio::test]
async fn a_released_boot_is_durable_before_the_answer() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert!(granted(unlock(&f, &signed).await.unwrap()).boot_ticket.is_some());
    let f = Fixture {
        keyd: f.keyd.crash().await,
        ..f
    };
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let again = granted(unlock(&f, &signed).await.unwrap());
    assert!(again.boot_ticket.is_none(), "the boot looked new after a crash");
}

/// A release of the boot already known moves only its host's release
/// time, which the next tick writes rather than the release: the time
/// shows at once, a restart keeps it, and a crash before any tick still
/// knows the boot (its ticket was durable before the first answer).
#[tokio::test]
async fn a_release_of_the_known_boot_shows_its_time_and_a_restart_keeps_it() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert!(granted(unlock(&f, &signed).await.unwrap()).boot_ticket.is_some());
    f.clock.advance_ms(5_000);
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert!(granted(unlock(&f, &signed).await.unwrap()).boot_ticket.is_none());
    let shown = f.authority.host(&host.id).await.unwrap().boot;
    assert_eq!(shown.last_unlock_at, Some(T0 + 5));
    assert_eq!(
        f.authority.hosts().await.unwrap()[0].boot.last_unlock_at,
        Some(T0 + 5)
    );
    let f = restart(f).await;
    let kept = f.authority.host(&host.id).await.unwrap().boot;
    assert_eq!(kept.last_unlock_at, Some(T0 + 5));
    assert_eq!(kept.last_boot_id.as_deref(), Some(BOOT_A));
    f.clock.advance_ms(5_000);
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    granted(unlock(&f, &signed).await.unwrap());
    let f = Fixture {
        keyd: f.keyd.crash().await,
        ..f
    };
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let again = granted(unlock(&f, &signed).await.unwrap());
    assert!(again.boot_ticket.is_none(), "the boot looked new after a crash");
}

#[tokio::test]
async fn boot_states_survive_a_restart() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    granted(unlock(&f, &signed).await.unwrap());
    let f = restart(f).await;
    assert_eq!(
        f.authority
            .host(&host.id)
            .await
            .unwrap()
            .boot
            .last_boot_id
            .as_deref(),
        Some(BOOT_A)
    );
    let (signed, _) = request_at_boot(&f, &host.identity, &host.id, &host.binding, "another-boot");
    pending(unlock(&f, &signed).await.unwrap());
}

#[tokio::test]
async fn a_captured_request_cannot_be_replayed_after_a_restart() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    granted(unlock(&f, &signed).await.unwrap());
    let f = restart(f).await;
    assert_eq!(
        unlock(&f, &signed).await.unwrap_err().code(),
        "replayed_nonce"
    );
    // A fresh request works.
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    granted(unlock(&f, &signed).await.unwrap());
}

/// The nonces of bind requests and reboot notices are read back from
/// the log too.
#[tokio::test]
async fn captured_binds_and_notices_cannot_be_replayed_after_a_restart() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (outcome, _) = unlock_boot(&f, &host, BOOT_A).await;
    let ticket = granted(outcome.unwrap()).boot_ticket;
    let bind = host.identity.sign_bind(atrest_remote::BindRequest {
        host_id: host.id.clone(),
        nonce: RequestNonce::random(),
        timestamp: T0,
    });
    f.authority.bind(&bind, CTX).await.unwrap();
    let notice = atrest_remote::SignedRebootNotice {
        boot_ticket: ticket,
        ..host.identity.sign_reboot(atrest_remote::RebootNotice {
            host_id: host.id.clone(),
            boot_id: BootId::new(BOOT_A).unwrap(),
            nonce: RequestNonce::random(),
            timestamp: T0,
        })
    };
    f.authority.announce_reboot(&notice, CTX).await.unwrap();
    let f = restart(f).await;
    assert_eq!(
        f.authority.bind(&bind, CTX).await.unwrap_err().code(),
        "replayed_nonce"
    );
    assert_eq!(
        f.authority
            .announce_reboot(&notice, CTX)
            .await
            .unwrap_err()
            .code(),
        "replayed_nonce"
    );
}

#[tokio::test]
async fn a_rotated_host_rebinds_and_the_old_secret_goes() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let old_secret = f.authority.storage().host_secrets(&host.id).await.unwrap()[0]
        .secret
        .clone();
    let view = f.authority.rotate(&host.id, "test").await.unwrap();
    assert_eq!(view.record.previous_key_id, Some(host.binding.key_id()));
    // Not again before the host re-bound: its keyslots use the old key.
    assert_eq!(
        f.authority
            .rotate(&host.id, "test")
            .await
            .unwrap_err()
            .code(),
        "rebind_pending"
    );
    // The old keyslot still opens, and is told the new key.
    let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
    let grant = granted(unlock(&f, &signed).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    let rebind = grant.rebind.expect("a rebind after rotation");
    assert_eq!(rebind.key_id, view.record.key_id);
    // The host re-binds to the new key; its first unlock retires the old.
    let (binding, key) = enroll(&rebind.exchange_key);
    let (signed, state) = request(&f, &host.identity, &host.id, &binding);
    let grant = granted(unlock(&f, &signed).await.unwrap());
    assert!(grant.rebind.is_none());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        key.expose()
    );
    assert_eq!(
        f.authority.host(&host.id).await.unwrap().record.previous_key_id,
        None
    );
    assert_eq!(
        f.authority
            .storage()
            .host_secrets(&host.id)
            .await
            .unwrap()
            .len(),
        1
    );
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "unknown_key");
    // Retired as a shred is: no copy in the database or its WAL.
    for name in ["keyd.db", "keyd.db-wal"] {
        if BACKEND != Backend::Sqlite {
            break;
        }
        let bytes = std::fs::read(f.path().join(name)).unwrap_or_default();
        assert!(
            !bytes.windows(32).any(|w| w == &old_secret[..]),
            "{name} still holds the retired secret"
        );
    }
}

/// Review finding 1: request ids are public (audit log, webhook,
/// `keyd requests`, the approval page), so a poll by id alone handed
/// the approved grant and the running boot's ticket to anyone.
#[tokio::test]
async fn only_the_requester_collects_a_held_requests_grant() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(
            &PolicyScope::Host(host.id.clone()),
            rule(Policy::Approve),
            "test",
        )
        .await
        .unwrap();
    let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    // The id is in the log for anyone who reads it.
    assert!(
        entries(&f)
            .await
            .iter()
            .any(|e| e.details.contains(&view.id))
    );
    f.authority.decide(&view.id, true, "alice").await.unwrap();
    let other = atrest_core::to_base64url(&atrest_core::random_array::<32>());
    for token in ["", "not-base64url!", other.as_str()] {
        let refused = f
            .authority
            .poll(&view.id, token, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "bad_poll_token", "token {token:?}");
    }
    // Nothing was released to those polls.
    assert!(
        !entries(&f)
            .await
            .iter()
            .any(|e| e.details.contains("\"released\""))
    );
    let grant = granted(poll_now(&f, &view.id).await.unwrap());
    assert!(grant.boot_ticket.is_some());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    // The token did not leak into any view of the request.
    let token = poll_token(&f, &view.id);
    let shown = serde_json::to_string(&f.authority.pending_request(&view.id).await.unwrap()).unwrap();
    assert!(!shown.contains(&token));
    assert!(!entries(&f).await.iter().any(|e| e.details.contains(&token)));
}

/// Review finding 4: two polls of one approved request released twice,
/// and the second ticket replaced the first.
#[tokio::test]
async fn concurrent_polls_of_an_approved_request_release_once() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(
            &PolicyScope::Host(host.id.clone()),
            rule(Policy::Approve),
            "test",
        )
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    f.authority.decide(&view.id, true, "alice").await.unwrap();
    let token = poll_token(&f, &view.id);
    let polls: Vec<_> = (0..8)
        .map(|_| {
            let authority = f.authority.clone();
            let (id, token) = (view.id.clone(), token.clone());
            tokio::spawn(async move { authority.poll(&id, &token, Duration::ZERO).await })
        })
        .collect();
    let mut grants = Vec::new();
    for poll in polls {
        grants.push(granted(poll.await.unwrap().unwrap()));
    }
    let first = &grants[0];
    for grant in &grants {
        assert_eq!(grant.audit_seq, first.audit_seq);
        assert_eq!(grant.boot_ticket, first.boot_ticket);
    }
    let released = entries(&f)
        .await
        .iter()
        .filter(|e| e.details.contains("\"released\"") && e.details.contains(&view.id))
        .count();
    assert_eq!(released, 1);
    // The ticket every poll got is the one the authority holds.
    let boot = f.authority.boot_state(&host.id).await.unwrap();
    assert_eq!(
        boot.ticket_hash,
        first.boot_ticket.as_ref().map(BootTicket::hash)
    );
}

/// Issue 10: held requests lived in one process's memory, so a restart
/// forgot them and the host's poll found `unknown_request`.
#[tokio::test]
async fn a_restart_keeps_held_requests_and_their_expiry() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let (signed, state) = request(&f, &host.identity, &host.id, &host.binding);
    let kept = pending(unlock(&f, &signed).await.unwrap());
    // Listed oldest first.
    f.clock.advance(1);
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let lapsing = pending(unlock(&f, &signed).await.unwrap());
    let f = restart(f).await;
    let ids: Vec<String> = f
        .authority
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(ids, [kept.id.clone(), lapsing.id.clone()]);
    // Still pending to the host's poll, then approved and released.
    pending(poll_now(&f, &kept.id).await.unwrap());
    f.authority.decide(&kept.id, true, "alice").await.unwrap();
    let grant = granted(poll_now(&f, &kept.id).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    // Another restart: the answer is kept for a poll whose reply was lost.
    let f = restart(f).await;
    let again = granted(poll_now(&f, &kept.id).await.unwrap());
    assert_eq!(again.audit_seq, grant.audit_seq);
    assert_eq!(again.boot_ticket, grant.boot_ticket);
    assert_eq!(
        f.authority.pending_request(&kept.id).await.unwrap().state,
        PendingState::Released
    );
    // The other still expires on time.
    f.clock.advance_ms(601_000);
    f.authority.maintain().await;
    assert_eq!(
        poll_now(&f, &lapsing.id).await.unwrap_err().code(),
        "expired"
    );
    let log = entries(&f).await;
    let released = log
        .iter()
        .filter(|e| e.details.contains("\"released\"") && e.details.contains(&kept.id))
        .count();
    assert_eq!(released, 1);
}

/// The per-host limit is counted by the store in the transaction that
/// inserts: a burst of requests at once holds exactly the limit.
#[tokio::test]
async fn a_burst_of_requests_holds_exactly_the_per_host_limit() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let limit = crate::storage::MAX_HELD_PER_HOST;
    let burst: Vec<_> = (0..limit + 6)
        .map(|_| {
            let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
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
    assert_eq!((held, refused), (limit, 6));
    assert_eq!(f.authority.pending().await.unwrap().len(), limit);
    // A decided request frees its slot.
    let first = f.authority.pending().await.unwrap().remove(0);
    f.authority.decide(&first.id, false, "alice").await.unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    pending(unlock(&f, &signed).await.unwrap());
}

/// Nobody may approve what the log lacks: a hold whose `pending` entry
/// cannot be written leaves no request behind, and a decision that cannot
/// be written leaves the request waiting.
#[tokio::test]
async fn a_hold_or_decision_the_log_cannot_take_changes_nothing() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    f.faults.fail(true);
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let refused = unlock(&f, &signed).await.unwrap_err();
    assert_eq!(refused.code(), "audit_unavailable");
    f.faults.fail(false);
    assert!(f.authority.pending().await.unwrap().is_empty());

    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    f.faults.fail(true);
    let refused = f.authority.decide(&view.id, true, "alice").await.unwrap_err();
    assert_eq!(refused.code(), "audit_unavailable");
    f.faults.fail(false);
    pending(poll_now(&f, &view.id).await.unwrap());
    f.authority.decide(&view.id, true, "alice").await.unwrap();
    granted(poll_now(&f, &view.id).await.unwrap());
}

/// A released request is claimed once in the store: it cannot be released
/// again, and its later polls get the first answer.
#[tokio::test]
async fn a_released_request_is_never_released_again() {
    use crate::storage::{HeldState, Storage};
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    // Approving twice, or approving once released, is refused.
    f.authority.decide(&view.id, true, "alice").await.unwrap();
    let grant = granted(poll_now(&f, &view.id).await.unwrap());
    let claimed_again = f
        .authority
        .storage()
        .move_held(&view.id, HeldState::Approved, HeldState::Released, None, None)
        .await
        .unwrap();
    assert!(!claimed_again, "a released request was claimed again");
    let refused = f.authority.decide(&view.id, true, "bob").await.unwrap_err();
    assert_eq!(refused.code(), "already_decided");
    assert!(refused.to_string().contains("released"), "{refused}");
    let again = granted(poll_now(&f, &view.id).await.unwrap());
    assert_eq!(again.audit_seq, grant.audit_seq);
    let released = entries(&f)
        .await
        .iter()
        .filter(|e| e.details.contains("\"released\"") && e.details.contains(&view.id))
        .count();
    assert_eq!(released, 1);
}

/// What the store keeps of a held request: the host's signed request
/// (checked again at release), never a key, and the answer sealed under
/// the poll token only the host holds.
#[tokio::test]
async fn the_store_keeps_the_signed_request_and_a_sealed_answer_only() {
    use crate::storage::Storage;
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    f.authority
        .set_policy(&PolicyScope::Default, rule(Policy::Approve), "test")
        .await
        .unwrap();
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let view = pending(unlock(&f, &signed).await.unwrap());
    f.authority.decide(&view.id, true, "alice").await.unwrap();
    let grant = granted(poll_now(&f, &view.id).await.unwrap());
    let stored = f.authority.storage().held(&view.id).await.unwrap().unwrap();
    let token = poll_token(&f, &view.id);
    let ticket = atrest_core::to_base64url(&grant.boot_ticket.as_ref().unwrap().0);
    let sealed = stored.sealed_grant.as_deref().unwrap();
    for (what, bytes) in [("request", stored.request.as_slice()), ("answer", sealed)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(&token), "the poll token is in the stored {what}");
        assert!(!text.contains(&ticket), "the boot ticket is in the stored {what}");
    }
    assert!(
        !sealed
            .windows(32)
            .any(|w| w == grant.boot_ticket.as_ref().unwrap().0),
        "the boot ticket is in the stored answer"
    );
}

/// Review finding 5: the host was committed before its enrollment was
/// logged, so a crash in between left a host the log never mentions.
#[tokio::test]
async fn no_host_exists_before_its_enrollment_is_logged() {
    let Some(f) = fixture().await else { return };
    let token = f.authority.create_token("web", 3600, "test").await.unwrap();
    let identity = HostIdentity::generate();
    let permits = f.faults.hold_commits().await;
    let enrolling = {
        let authority = f.authority.clone();
        let public_key = identity.public_key();
        tokio::spawn(async move {
            authority
                .enroll(&token.token, "web-1", public_key, CTX)
                .await
        })
    };
    // The audit writer is inside its commit of the enrollment entry.
    f.faults.commit_started().await;
    let stored = f.authority.storage().hosts().await.unwrap();
    assert!(
        stored.is_empty(),
        "the host is stored before its entry is durable: {stored:?}"
    );
    drop(permits);
    enrolling.await.unwrap().unwrap();
    assert_eq!(f.authority.storage().hosts().await.unwrap().len(), 1);
}

/// Review finding 5: "released" was logged before the host's state was
/// checked again, so a shred landing in between left a release in the log
/// that never happened (or a key handed out after the shred's entry). A
/// release caught inside its audit commit must finish before a shred can
/// start: the log then reads "released" before "shredded", the host got
/// its answer, and nothing is released after.
#[tokio::test]
async fn a_shred_during_a_release_lands_after_it() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let permits = f.faults.hold_commits().await;
    let releasing = {
        let authority = f.authority.clone();
        tokio::spawn(async move { authority.unlock(&signed, CTX).await })
    };
    // The release's entry is inside the audit commit.
    f.faults.commit_started().await;
    let shredding = {
        let authority = f.authority.clone();
        let id = host.id.clone();
        tokio::spawn(async move { authority.shred(&id, "test").await })
    };
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    drop(permits);
    let grant = granted(releasing.await.unwrap().unwrap());
    shredding.await.unwrap().unwrap();
    let log = entries(&f).await;
    let position = |needle: &str| {
        log.iter()
            .position(|e| e.details.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} entry in {log:?}"))
    };
    let released = position("\"released\"");
    let shredded = position("\"state\":\"shredded\"");
    assert!(
        released < shredded,
        "the shred was logged before the release it raced"
    );
    assert_eq!(log[released].seq, grant.audit_seq);
    // After the shred, the same host is refused and nothing more is
    // released.
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "shredded");
    let releases = entries(&f)
        .await
        .iter()
        .filter(|e| e.details.contains("\"released\""))
        .count();
    assert_eq!(releases, 1);
}

/// Review finding 5, the other order: a shred caught inside its audit
/// commit has not yet changed the host's state. A release that checked
/// the state then would log "released" after "shredded" and hand out the
/// key the shred destroys. It must wait for the shred and be refused.
#[tokio::test]
async fn a_release_racing_a_logged_shred_is_refused() {
    let Some(f) = fixture().await else { return };
    let host = enroll_host(&f, "web-1").await;
    let (signed, _) = request(&f, &host.identity, &host.id, &host.binding);
    let permits = f.faults.hold_commits().await;
    let shredding = {
        let authority = f.authority.clone();
        let id = host.id.clone();
        tokio::spawn(async move { authority.shred(&id, "test").await })
    };
    // The shred's entry is inside the audit commit.
    f.faults.commit_started().await;
    let releasing = {
        let authority = f.authority.clone();
        tokio::spawn(async move { authority.unlock(&signed, CTX).await })
    };
    // Give the release every chance to pass its state check.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    drop(permits);
    shredding.await.unwrap().unwrap();
    let refused = releasing.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), "shredded");
    let released = entries(&f)
        .await
        .iter()
        .filter(|e| e.details.contains("\"released\""))
        .count();
    assert_eq!(released, 0, "a release was logged after the shred");
}

#[tokio::test]
async fn an_enrollment_the_log_cannot_record_does_not_happen() {
    let Some(f) = fixture().await else { return };
    let token = f.authority.create_token("web", 3600, "test").await.unwrap();
    let identity = HostIdentity::generate();
    f.faults.fail(true);
    let err = f
        .authority
        .enroll(&token.token, "web-1", identity.public_key(), CTX)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "audit_unavailable");
    assert!(f.authority.host(&HostId::new("web-1").unwrap()).await.is_err());
    f.faults.fail(false);
    // The token was given back; the name is free.
    f.authority
        .enroll(&token.token, "web-1", identity.public_key(), CTX)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_flood_of_refusals_is_summarized() {
    let Some(f) = fixture_with(AuthorityOptions {
        refusal_entries_per_second: 3,
        ..AuthorityOptions::default()
    })
    .await
    else {
        return;
    };
    let host = enroll_host(&f, "web-1").await;
    let stranger = HostId::new("stranger").unwrap();
    for _ in 0..10 {
        let (signed, _) = request(&f, &host.identity, &stranger, &host.binding);
        assert_eq!(
            unlock(&f, &signed).await.unwrap_err().code(),
            "unknown_host"
        );
    }
    f.authority.maintain().await;
    let log = entries(&f).await;
    let single = log
        .iter()
        .filter(|e| e.details.contains("\"outcome\":\"unknown_host\""))
        .count();
    assert_eq!(single, 3);
    // The background tick may summarize part of the flood before the
    // explicit `maintain`: the summaries together count every suppressed one.
    let summarized: u64 = log
        .iter()
        .filter(|e| e.details.contains("refusals_summarized"))
        .map(|e| {
            let details: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            details["counts"]["unknown_host"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(summarized, 7);
}

#[tokio::test]
async fn approvers_log_in_with_a_totp_code_once() {
    let Some(f) = fixture().await else { return };
    let approver = f.authority.add_approver("alice", "test").await.unwrap();
    assert!(approver.otpauth_uri.starts_with("otpauth://totp/"));
    let code = crate::approvers::totp_code(&approver.secret, "alice", T0).unwrap();
    assert_eq!(
        f.authority
            .check_approver("alice", "000000x")
            .await
            .unwrap_err()
            .code(),
        "bad_code"
    );
    f.authority.check_approver("alice", &code).await.unwrap();
    assert_eq!(
        f.authority
            .check_approver("alice", &code)
            .await
            .unwrap_err()
            .code(),
        "bad_code"
    );
    assert_eq!(
        f.authority
            .check_approver("mallory", &code)
            .await
            .unwrap_err()
            .code(),
        "bad_code"
    );
}

/// A login with a right code from `client`: its attempt counted, then
/// given back, and the address trusted.
async fn good_login(f: &Fixture, name: &str, client: crate::approvers::Client) {
    let attempt = f.authority.take_login(name, client).await.unwrap().unwrap();
    f.authority
        .login_succeeded(name, client, attempt)
        .await
        .unwrap();
}

/// The approval page's budgets of wrong codes (crate::approvers), kept in
/// the database: one address's failures lock out neither another address
/// nor, past its own budget, other names from it beyond the per-address
/// one; the windows pass; a restart forgets nothing.
#[tokio::test]
async fn one_address_cannot_lock_out_another() {
    use crate::approvers::{FAILURE_WINDOW, MAX_FAILURES, Refusal, client_of};
    let Some(f) = fixture().await else { return };
    let attacker = client_of(Some("198.51.100.7".parse().unwrap()));
    let approver = client_of(Some("203.0.113.9".parse().unwrap()));
    for _ in 0..MAX_FAILURES {
        let _ = f.authority.take_login("alice", attacker).await.unwrap().unwrap();
    }
    for _ in 0..30 {
        assert_eq!(
            f.authority.take_login("alice", attacker).await.unwrap().unwrap_err(),
            Refusal::NameFromAddress
        );
    }
    for name in ["bob", "carol", "dave", "erin", "frank"] {
        let _ = f.authority.take_login(name, attacker).await.unwrap().unwrap();
    }
    assert_eq!(
        f.authority.take_login("grace", attacker).await.unwrap().unwrap_err(),
        Refusal::Address
    );
    good_login(&f, "alice", approver).await;
    // The counts outlive the process.
    let f = restart(f).await;
    assert_eq!(
        f.authority.take_login("alice", attacker).await.unwrap().unwrap_err(),
        Refusal::NameFromAddress
    );
    // The windows pass.
    f.clock.advance(FAILURE_WINDOW);
    let _ = f.authority.take_login("alice", attacker).await.unwrap().unwrap();
}

#[tokio::test]
async fn many_addresses_share_one_cap_that_trusted_addresses_skip() {
    use crate::approvers::{MAX_FAILURES_UNTRUSTED, Refusal, TRUSTED_FOR, client_of};
    let Some(f) = fixture().await else { return };
    let trusted = client_of(Some("203.0.113.9".parse().unwrap()));
    good_login(&f, "alice", trusted).await;
    f.clock.advance(10);
    let mut guesses = 0;
    for host in 0..=255u8 {
        let client = client_of(Some(std::net::IpAddr::from([198, 51, 100, host])));
        while f.authority.take_login("alice", client).await.unwrap().is_ok() {
            guesses += 1;
        }
    }
    assert_eq!(guesses, MAX_FAILURES_UNTRUSTED);
    let fresh = client_of(Some("192.0.2.1".parse().unwrap()));
    assert_eq!(
        f.authority.take_login("alice", fresh).await.unwrap().unwrap_err(),
        Refusal::Untrusted
    );
    let _ = f.authority.take_login("alice", trusted).await.unwrap().unwrap();
    // Trust lapses.
    f.clock.advance(TRUSTED_FOR - 9);
    let _ = f.authority.take_login("alice", fresh).await.unwrap().unwrap();
}

/// A backup of `f`'s state database as an operator takes one, and where it
/// is restored: SQLite's `VACUUM INTO` (a consistent copy of a live file)
/// into a directory of its own; PostgreSQL's `pg_dump`, loaded with `psql`
/// into a new database on the same server.
async fn backup(f: &Fixture) -> (crate::storage::Database, tempfile::TempDir) {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let database = match &f.database {
        crate::storage::Database::Sqlite(live) => {
            let mut live = sqlx::sqlite::SqliteConnection::connect_with(
                &sqlx::sqlite::SqliteConnectOptions::new().filename(live.join("keyd.db")),
            )
            .await
            .unwrap();
            sqlx::query("VACUUM INTO ?")
                .bind(dir.path().join("keyd.db").to_str().unwrap())
                .execute(&mut live)
                .await
                .unwrap();
            crate::storage::Database::Sqlite(dir.path().to_owned())
        }
        crate::storage::Database::Postgres(live) => {
            let copy = crate::testing::fresh_postgres().await.unwrap();
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(
                    r#"set -euo pipefail
                    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
                    "$bin/pg_dump" --no-owner --dbname="$1" |
                        "$bin/psql" -q -v ON_ERROR_STOP=1 --dbname="$2" >/dev/null"#,
                )
                .arg("backup")
                .arg(live)
                .arg(&copy)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pg_dump | psql: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            crate::storage::Database::Postgres(copy)
        }
    };
    (database, dir)
}

/// Every (host, key id, wrapped secret) row of a backup, read as an
/// attacker holding it would.
async fn backup_rows(database: &crate::storage::Database) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    use sqlx::Connection;
    match database {
        crate::storage::Database::Sqlite(dir) => {
            let mut db = sqlx::sqlite::SqliteConnection::connect_with(
                &sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("keyd.db")),
            )
            .await
            .unwrap();
            sqlx::query_as("SELECT host_id, key_id, secret FROM host_secrets ORDER BY host_id")
                .fetch_all(&mut db)
                .await
                .unwrap()
        }
        crate::storage::Database::Postgres(url) => {
            let mut db = sqlx::postgres::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(
                "SELECT host_id, key_id, secret FROM keyd_host_secrets ORDER BY host_id",
            )
            .fetch_all(&mut db)
            .await
            .unwrap()
        }
    }
}

fn keyring(f: &Fixture) -> Arc<crate::secrets_key::SecretsKeyring> {
    keys(f).secrets
}

/// The keyd's key files as a restarted keyd reads them.
fn keys(f: &Fixture) -> crate::secrets_key::StoreKeys {
    crate::secrets_key::StoreKeys::open(f.secrets_key().parent().unwrap()).unwrap()
}

/// Issue 10: a shredded host stays shredded after the authority's
/// database is restored from a backup taken before the shred. keyd refuses
/// to start on that backup, and no secret in it opens with the key file
/// of now (not even relabelled as the current epoch); a backup taken after
/// the shred starts, and every other host still unlocks.
#[tokio::test]
async fn a_database_restored_from_before_a_shred_is_refused_and_opens_nothing() {
    use crate::secrets_key::UnwrapError;
    let Some(f) = fixture().await else { return };
    let gone = enroll_host(&f, "web-1").await;
    let kept = enroll_host(&f, "web-2").await;
    let (before, _before_dir) = backup(&f).await;
    f.authority.shred(&gone.id, "test").await.unwrap();
    let (after, _after_dir) = backup(&f).await;

    let refused = before.open_storage(keys(&f)).await.err().unwrap();
    let message = refused.to_string();
    assert!(
        message.contains("host secrets are at epoch 0")
            && message.contains("key is at epoch 1")
            && message.contains("restore a backup taken after the last shred"),
        "{message}"
    );
    let key = keyring(&f).current().unwrap();
    assert_eq!(key.epoch(), 1);
    let rows = backup_rows(&before).await;
    assert_eq!(rows.len(), 2, "both hosts' secrets are in the old backup");
    for (host, key_id, mut wrapped) in rows {
        let host = HostId::new(host).unwrap();
        let key_id = atrest_remote::KeyId(key_id.try_into().unwrap());
        assert_eq!(
            key.unwrap(&host, &key_id, &wrapped),
            Err(UnwrapError::Epoch { wrapped: 0, key: 1 })
        );
        wrapped[1..5].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            key.unwrap(&host, &key_id, &wrapped),
            Err(UnwrapError::Authentication),
            "{host}"
        );
    }

    let restored = after.open_storage(keys(&f)).await.unwrap();
    assert!(restored.host_secrets(&gone.id).await.unwrap().is_empty());
    let secret = |s: Vec<crate::storage::StoredSecret>| *s[0].secret;
    assert_eq!(
        secret(restored.host_secrets(&kept.id).await.unwrap()),
        secret(f.authority.storage().host_secrets(&kept.id).await.unwrap())
    );
    let (signed, state) = request(&f, &kept.identity, &kept.id, &kept.binding);
    let grant = granted(unlock(&f, &signed).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        kept.key.expose()
    );
}

/// A keyd killed after a shred's commit and before its key file's rename
/// leaves the database one epoch past the file: the next start ratchets
/// the file forward from the database's epoch (to the very key the shred
/// would have written), and every other host unlocks.
#[tokio::test]
async fn a_key_file_one_shred_behind_the_database_is_ratcheted_at_start() {
    let Some(f) = fixture().await else { return };
    let gone = enroll_host(&f, "web-1").await;
    let kept = enroll_host(&f, "web-2").await;
    let old = std::fs::read(f.secrets_key()).unwrap();
    f.authority.shred(&gone.id, "test").await.unwrap();
    let new = std::fs::read(f.secrets_key()).unwrap();
    assert_ne!(old, new);
    // What the kill leaves: the shred committed, the old file in place.
    std::fs::write(f.secrets_key(), &old).unwrap();
    let f = Fixture {
        keyd: f.keyd.crash().await,
        ..f
    };
    assert_eq!(std::fs::read(f.secrets_key()).unwrap(), new);
    let (signed, state) = request(&f, &kept.identity, &kept.id, &kept.binding);
    let grant = granted(unlock(&f, &signed).await.unwrap());
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        kept.key.expose()
    );
    let (signed, _) = request(&f, &gone.identity, &gone.id, &gone.binding);
    assert_eq!(unlock(&f, &signed).await.unwrap_err().code(), "shredded");
    // A rotation after it wraps under the new epoch, and survives a restart.
    f.authority.rotate(&kept.id, "test").await.unwrap();
    let f = restart(f).await;
    assert_eq!(
        f.authority.storage().host_secrets(&kept.id).await.unwrap().len(),
        2
    );
}
