//! The approval page and the pending webhook, against a real keyd on
//! 127.0.0.1: a host's request is held by an `approve` policy, an approver
//! logs in with a TOTP code and decides, and the host's poll gets the
//! answer. The last test drives the page in headless Chromium
//! (tests/browser/approve.py); CI sets `ATREST_REQUIRE_BROWSER=1` so a
//! missing browser fails it instead of skipping it.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atrest_audit::LogOptions;
use atrest_keyd::testing::{Backend, ManualClock, Served, TestAuthority, TestKeyd};
use atrest_keyd::{
    AuthorityOptions, ErrorBody, FAILURE_WINDOW, MAX_FAILURES, MAX_FAILURES_PER_ADDRESS, Policy,
    PolicyRule, PolicyScope, RequestContext, SESSION_LIFETIME, ServerCertificates, UnlockOutcome,
    UnlockReply, totp_code, webhook_notifier,
};
use atrest_remote::{
    BootId, HostId, HostIdentity, RemoteBinding, RequestNonce, SignedUnlockRequest,
    UnblindingState, UnlockRequest, enroll,
};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

const BOOT_ID: &str = "3d3f3b5e-0c1a-4b8e-9f3a-6c2d1e0f9a77";
const REASON: &str = "its policy requires an approver";

struct Keyd {
    authority: TestAuthority,
    clock: ManualClock,
    base: String,
    /// Poll tokens of the held requests made through HTTP, by request id:
    /// what the requesting host keeps.
    poll_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    _served: Served,
    _keyd: TestKeyd,
}

/// keyd over plain HTTP (the cookie store counts loopback as secure).
async fn start(options: AuthorityOptions) -> Keyd {
    start_with(options, None).await
}

/// keyd over HTTPS when given certificates, as approvers reach it. Its
/// clock starts at the real time (session expiry, failure windows and
/// codes are then moved by hand); group `web` needs an approver.
async fn start_with(options: AuthorityOptions, tls: Option<ServerCertificates>) -> Keyd {
    let keyd = TestKeyd::open(ManualClock::now(), options, LogOptions::default()).await;
    approve_group_web(&keyd).await;
    let served = match tls {
        None => keyd.serve(None).await,
        Some(certificates) => keyd.serve_tls(certificates, None).await,
    };
    served_keyd(keyd, served)
}

/// Group `web` needs an approver.
async fn approve_group_web(keyd: &TestKeyd) {
    keyd.authority
        .set_policy(
            &PolicyScope::Group("web".into()),
            PolicyRule {
                policy: Policy::Approve,
                unannounced_reboot: Policy::Approve,
                rollback: Policy::Approve,
            },
            "test",
        )
        .await
        .unwrap();
}

fn served_keyd(keyd: TestKeyd, served: Served) -> Keyd {
    Keyd {
        authority: keyd.authority.clone(),
        clock: keyd.clock.clone(),
        base: served.base.clone(),
        poll_tokens: Default::default(),
        _served: served,
        _keyd: keyd,
    }
}

struct Host {
    identity: HostIdentity,
    id: HostId,
    binding: RemoteBinding,
    key: atrest_core::SecretKey,
}

async fn enroll_host(keyd: &Keyd, name: &str) -> Host {
    let token = keyd
        .authority
        .create_token("web", 600, "test")
        .await
        .unwrap();
    let identity = HostIdentity::generate();
    let enrollment = keyd
        .authority
        .enroll(
            &token.token,
            name,
            identity.public_key(),
            RequestContext { source: None },
        )
        .await
        .unwrap();
    let (binding, key) = enroll(&enrollment.exchange_key);
    Host {
        identity,
        id: enrollment.host_id,
        binding,
        key,
    }
}

fn unlock_request(keyd: &Keyd, host: &Host) -> (SignedUnlockRequest, UnblindingState) {
    let (blinded, state) = host.binding.blind();
    let signed = host.identity.sign(UnlockRequest {
        host_id: host.id.clone(),
        vault_id: [3; 16],
        keyslot: 0,
        key_id: host.binding.key_id(),
        blinded,
        nonce: RequestNonce::random(),
        timestamp: keyd.clock.secs(),
        boot_id: BootId::new(BOOT_ID).unwrap(),
        generation: None,
    });
    (signed, state)
}

/// The host asks over HTTP and is told to wait: (request id, its blinding).
async fn held_request(keyd: &Keyd, host: &Host) -> (String, UnblindingState) {
    let (signed, state) = unlock_request(keyd, host);
    let reply = reqwest::Client::new()
        .post(format!("{}/v1/unlock", keyd.base))
        .json(&signed)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::ACCEPTED);
    let UnlockReply::Pending {
        request_id,
        poll_token: Some(poll_token),
        reason,
        ..
    } = reply.json().await.unwrap()
    else {
        panic!("not held");
    };
    assert_eq!(reason, REASON);
    keyd.poll_tokens
        .lock()
        .unwrap()
        .insert(request_id.clone(), poll_token);
    (request_id, state)
}

/// The host's long poll.
async fn poll(keyd: &Keyd, id: &str) -> reqwest::Response {
    let token = keyd.poll_tokens.lock().unwrap().get(id).cloned();
    reqwest::Client::new()
        .get(format!("{}/v1/requests/{id}?wait=5", keyd.base))
        .header(atrest_keyd::POLL_TOKEN_HEADER, token.unwrap_or_default())
        .send()
        .await
        .unwrap()
}

/// An approver and the secret of their authenticator app.
async fn approver(keyd: &Keyd, name: &str) -> String {
    keyd.authority
        .add_approver(name, "test")
        .await
        .unwrap()
        .secret
}

/// A 6-digit code that is none of those valid around `time`.
fn wrong_code(secret: &str, name: &str, time: u64) -> String {
    let valid: Vec<String> = [time - 30, time, time + 30]
        .iter()
        .map(|t| totp_code(secret, name, *t).unwrap())
        .collect();
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

/// A phone's browser: keeps cookies, shows redirects rather than following
/// them.
struct Phone {
    client: reqwest::Client,
    base: String,
}

impl Phone {
    fn new(keyd: &Keyd) -> Self {
        Self::from_address(keyd, Ipv4Addr::LOCALHOST)
    }

    /// A phone on another network: its connections come from `address`
    /// (any of 127.0.0.0/8 reaches keyd's 127.0.0.1 on Linux).
    fn from_address(keyd: &Keyd, address: Ipv4Addr) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .local_address(IpAddr::V4(address))
                .build()
                .unwrap(),
            base: keyd.base.clone(),
        }
    }

    async fn page(&self) -> (StatusCode, HeaderMap, String) {
        let reply = self
            .client
            .get(format!("{}/approve", self.base))
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let headers = reply.headers().clone();
        (status, headers, reply.text().await.unwrap())
    }

    async fn login(&self, name: &str, code: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/approve/login", self.base))
            .form(&[("name", name), ("code", code)])
            .send()
            .await
            .unwrap()
    }

    async fn decide(&self, id: &str, action: &str, csrf: Option<&str>) -> reqwest::Response {
        let form: Vec<(&str, &str)> = csrf.map(|c| ("csrf", c)).into_iter().collect();
        self.client
            .post(format!("{}/approve/{id}/{action}", self.base))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the session's CSRF token from the list page.
    async fn logged_in(&self, name: &str, code: &str) -> String {
        self.logged_in_with_cookie(name, code).await.1
    }

    /// Logs in: the session cookie's value and the CSRF token.
    async fn logged_in_with_cookie(&self, name: &str, code: &str) -> (String, String) {
        let reply = self.login(name, code).await;
        assert_eq!(reply.status(), StatusCode::SEE_OTHER);
        let cookie = reply.headers()[SET_COOKIE].to_str().unwrap();
        let cookie = cookie.strip_prefix("atrest_approve=").unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let (status, _, html) = self.page().await;
        assert_eq!(status, StatusCode::OK);
        (cookie, csrf(&html))
    }
}

fn csrf(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF token in {html}"))
        + "name=\"csrf\" value=\"".len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_owned()
}

fn is_login_form(html: &str) -> bool {
    html.contains("action=\"/approve/login\"") && !html.contains("section class=\"card\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_logs_in_approves_and_the_host_gets_its_key() {
    let keyd = start(AuthorityOptions::default()).await;
    let host = enroll_host(&keyd, "web-1").await;
    let secret = approver(&keyd, "alice").await;
    let (id, state) = held_request(&keyd, &host).await;
    let phone = Phone::new(&keyd);

    // Not logged in: the login form, phone-sized, locked down.
    let (status, headers, html) = phone.page().await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_login_form(&html), "{html}");
    assert!(html.contains("<meta name=\"viewport\" content=\"width=device-width"));
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // Log in: a 32-byte session id in a locked-down cookie.
    let code = totp_code(&secret, "alice", keyd.clock.secs()).unwrap();
    let reply = phone.login("alice", &code).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], "/approve");
    let cookie = reply.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let value = cookie
        .strip_prefix("atrest_approve=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_eq!(value.len(), 43, "{cookie}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/approve"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }

    // The list shows what the approver needs to judge the request.
    let (status, headers, html) = phone.page().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-store");
    let view = keyd.authority.pending_request(&id).await.unwrap();
    let made = format!("<dd class=\"made\">{}", rfc3339(view.created_at));
    let countdown = format!("data-expires-at=\"{}\">10 min<", view.expires_at);
    let key_id = format!("<dd class=\"key-id\">{}</dd>", host.binding.key_id());
    for shown in [
        "web-1",
        "<dd>web</dd>",
        // The vault ([3; 16]) and keyslot the request is for.
        "<dd class=\"vault\">AwMDAwMDAwMDAwMDAwMDAw, keyslot 0</dd>",
        &key_id,
        BOOT_ID,
        "<dd>first</dd>",
        "none yet (first unlock)",
        "127.0.0.1",
        REASON,
        &made,
        &countdown,
        "<script src=\"/approve/countdown.js\" defer></script>",
        "Logged in as <b>alice</b>",
    ] {
        assert!(html.contains(shown), "{shown} missing from {html}");
    }
    assert!(!html.contains("Unproven boot"), "{html}");
    // The countdown's script, from this origin (the CSP allows no other).
    let script = phone
        .client
        .get(format!("{}/approve/countdown.js", keyd.base))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.unwrap().contains("data-expires-at"));
    assert!(html.contains(&format!("action=\"/approve/{id}/approve\"")));
    assert!(html.contains(&format!("action=\"/approve/{id}/deny\"")));

    // Approve: back to the list with a message, the request gone from it.
    let reply = phone.decide(&id, "approve", Some(&csrf(&html))).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], "/approve");
    let (_, _, html) = phone.page().await;
    assert!(
        html.contains(&format!("Approved web-1 (boot {BOOT_ID})")),
        "{html}"
    );
    assert!(html.contains("No request is waiting"), "{html}");
    // The message is shown once.
    let (_, _, html) = phone.page().await;
    assert!(!html.contains("Approved web-1"), "{html}");

    // The host's poll is granted, and unblinds to its key.
    let reply = poll(&keyd, &id).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let UnlockReply::Granted { response, .. } = reply.json().await.unwrap() else {
        panic!("not granted");
    };
    assert_eq!(
        state.unblind(&response).unwrap().expose(),
        host.key.expose()
    );
    let view = keyd.authority.pending_request(&id).await.unwrap();
    assert_eq!(view.decided_by.as_deref(), Some("web:alice"));

    // Deciding again is refused, with a reason.
    let reply = phone.decide(&id, "deny", Some(&csrf(&html))).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let (_, _, html) = phone.page().await;
    assert!(html.contains("Not recorded:"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_denies_and_the_host_is_refused() {
    let keyd = start(AuthorityOptions::default()).await;
    let host = enroll_host(&keyd, "web-2").await;
    let secret = approver(&keyd, "bob").await;
    let (id, _) = held_request(&keyd, &host).await;
    let phone = Phone::new(&keyd);
    let token = phone
        .logged_in(
            "bob",
            &totp_code(&secret, "bob", keyd.clock.secs()).unwrap(),
        )
        .await;

    let reply = phone.decide(&id, "deny", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let (_, _, html) = phone.page().await;
    assert!(
        html.contains(&format!("Denied web-2 (boot {BOOT_ID})")),
        "{html}"
    );

    let reply = poll(&keyd, &id).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    let body: ErrorBody = reply.json().await.unwrap();
    assert_eq!(body.error, "denied");
    assert!(body.message.contains("web:bob"), "{}", body.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_reused_codes_are_refused_and_guessing_is_limited() {
    let keyd = start(AuthorityOptions::default()).await;
    let secret = approver(&keyd, "carol").await;
    let phone = Phone::new(&keyd);
    let now = keyd.clock.secs();

    // A wrong code: the form again, saying so, with the name kept.
    let reply = phone
        .login("carol", &wrong_code(&secret, "carol", now))
        .await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(reply.headers().get(SET_COOKIE).is_none());
    let html = reply.text().await.unwrap();
    assert!(
        html.contains("That code is wrong or was already used"),
        "{html}"
    );
    assert!(html.contains("value=\"carol\""), "{html}");
    // An unknown approver reads the same.
    let reply = phone.login("mallory", "123456").await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);

    // The right code works once; logging out ends the session.
    let code = totp_code(&secret, "carol", now).unwrap();
    let token = phone.logged_in("carol", &code).await;
    let logout = |csrf: &'static str| {
        phone
            .client
            .post(format!("{}/approve/logout", keyd.base))
            .form(&[("csrf", csrf)])
            .send()
    };
    assert_eq!(
        logout("forged").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(!is_login_form(&phone.page().await.2));
    let reply = phone
        .client
        .post(format!("{}/approve/logout", keyd.base))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert!(is_login_form(&phone.page().await.2));
    let reply = phone.login("carol", &code).await;
    assert_eq!(
        reply.status(),
        StatusCode::UNAUTHORIZED,
        "a code is good once"
    );

    // After MAX_FAILURES wrong codes even the right one is turned away...
    for _ in 1..MAX_FAILURES {
        let reply = phone
            .login("carol", &wrong_code(&secret, "carol", now))
            .await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    }
    let next = totp_code(&secret, "carol", now + 30).unwrap();
    let reply = phone.login("carol", &next).await;
    assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.text().await.unwrap().contains("Too many wrong codes"));
    // ... (other approvers are not affected) ...
    let dave = approver(&keyd, "dave").await;
    Phone::new(&keyd)
        .logged_in("dave", &totp_code(&dave, "dave", now).unwrap())
        .await;
    // ... until the window has passed.
    keyd.clock.advance(FAILURE_WINDOW + 1);
    let code = totp_code(&secret, "carol", keyd.clock.secs()).unwrap();
    phone.logged_in("carol", &code).await;
}

/// The review's attack: 30 bogus logins a minute used to lock every
/// approver out. Now they use up only the attacker's own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_from_one_address_do_not_lock_out_an_approver_elsewhere() {
    let keyd = start(AuthorityOptions::default()).await;
    let secret = approver(&keyd, "alice").await;
    let now = keyd.clock.secs();
    let attacker = Phone::from_address(&keyd, Ipv4Addr::new(127, 0, 0, 66));
    let wrong = wrong_code(&secret, "alice", now);
    let mut refused = 0;
    for attempt in 0..40 {
        let status = attacker.login("alice", &wrong).await.status();
        if attempt < MAX_FAILURES {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "attempt {attempt}");
            refused += 1;
        }
    }
    assert_eq!(refused, 40 - MAX_FAILURES);
    // Other names from the same address: only a few more guesses.
    let mut other_names = 0;
    for n in 0..20 {
        let status = attacker
            .login(&format!("user-{n}"), "123456")
            .await
            .status();
        if status == StatusCode::UNAUTHORIZED {
            other_names += 1;
        }
    }
    assert_eq!(other_names, MAX_FAILURES_PER_ADDRESS - MAX_FAILURES);

    // The real approver, elsewhere, logs in with the right code...
    let phone = Phone::from_address(&keyd, Ipv4Addr::new(127, 0, 0, 2));
    phone
        .logged_in("alice", &totp_code(&secret, "alice", now).unwrap())
        .await;
    // ... while the attacker's address, over its budget, is refused even
    // the right code (the next one, as each code works once).
    let next = totp_code(&secret, "alice", now + 30).unwrap();
    refused_for_the_name(attacker.login("alice", &next).await).await;
}

/// The login form again, 429: this address sent too many wrong codes for
/// the name; no session.
async fn refused_for_the_name(reply: reqwest::Response) {
    assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.headers().get(SET_COOKIE).is_none());
    assert!(
        reply
            .text()
            .await
            .unwrap()
            .contains("Too many wrong codes for this name from your address")
    );
}

/// `2026-12-05T09:10:14Z`, as the page prints times.
fn rfc3339(unix: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A host whose boot `BOOT_ID` got its key (approved by the test), and
/// which now asks again from that boot without its ticket: held as
/// `unproven`. Returns the second request's id.
async fn unproven_request(keyd: &Keyd, host: &Host) -> String {
    let hold = || async {
        let (signed, _) = unlock_request(keyd, host);
        let held = keyd
            .authority
            .unlock(&signed, RequestContext { source: None })
            .await
            .unwrap();
        let UnlockOutcome::Pending {
            view,
            poll_token: Some(token),
        } = held
        else {
            panic!("not held");
        };
        (*view, token.to_string())
    };
    let (first, token) = hold().await;
    assert_eq!(first.boot, "first");
    keyd.authority
        .decide(&first.id, true, "test")
        .await
        .unwrap();
    let granted = keyd.authority.poll(&first.id, &token, Duration::ZERO).await;
    assert!(matches!(granted, Ok(UnlockOutcome::Granted(_))));
    let (second, _) = hold().await;
    assert_eq!(second.boot, "unproven");
    second.id
}

/// Approving an unproven boot hands the running boot's ticket to whoever
/// asked: the page says so and asks again, on its own CSRF-protected form;
/// a single post does not approve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unproven_boot_is_approved_only_after_a_confirmation() {
    let keyd = start(AuthorityOptions::default()).await;
    let host = enroll_host(&keyd, "web-5").await;
    let id = unproven_request(&keyd, &host).await;
    let secret = approver(&keyd, "alice").await;
    let phone = Phone::new(&keyd);
    let token = phone
        .logged_in(
            "alice",
            &totp_code(&secret, "alice", keyd.clock.secs()).unwrap(),
        )
        .await;
    let (_, _, html) = phone.page().await;
    for shown in [
        "Unproven boot",
        "hands the running boot's ticket to the requester",
        "Approve…",
        &format!("<dd class=\"last-boot\">{BOOT_ID} (last unlocked "),
    ] {
        assert!(html.contains(shown), "{shown} missing from {html}");
    }

    // The list's Approve asks first, and decides nothing.
    let reply = phone.decide(&id, "approve", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let confirm = reply.text().await.unwrap();
    assert!(confirm.contains("Approve an unproven boot?"), "{confirm}");
    assert!(
        confirm.contains("name=\"confirm\" value=\"unproven\""),
        "{confirm}"
    );
    assert_eq!(csrf(&confirm), token);
    let pending = async || keyd.authority.pending_request(&id).await.unwrap().state;
    assert_eq!(pending().await, atrest_keyd::PendingState::Pending);
    // The confirmation without the session's token is refused.
    let post = |csrf: &str| {
        phone
            .client
            .post(format!("{}/approve/{id}/approve", keyd.base))
            .form(&[("csrf", csrf), ("confirm", "unproven")])
            .send()
    };
    assert_eq!(
        post("forged").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(pending().await, atrest_keyd::PendingState::Pending);
    // Confirmed: approved.
    let reply = post(&token).await.unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(pending().await, atrest_keyd::PendingState::Approved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_need_a_live_session_and_its_csrf_token() {
    let keyd = start(AuthorityOptions {
        approval_timeout: 3600,
        ..Default::default()
    })
    .await;
    let host = enroll_host(&keyd, "web-3").await;
    let (id, _) = held_request(&keyd, &host).await;
    let alice = approver(&keyd, "alice").await;
    let bob = approver(&keyd, "bob").await;
    let now = keyd.clock.secs();
    let phone = Phone::new(&keyd);
    let token = phone
        .logged_in("alice", &totp_code(&alice, "alice", now).unwrap())
        .await;
    let other = Phone::new(&keyd)
        .logged_in("bob", &totp_code(&bob, "bob", now).unwrap())
        .await;
    assert_ne!(token, other);

    for csrf in [None, Some(""), Some("forged"), Some(other.as_str())] {
        let reply = phone.decide(&id, "approve", csrf).await;
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{csrf:?}");
        assert!(reply.text().await.unwrap().contains("out of date"));
    }
    // Without a session cookie, the token alone is nothing.
    let reply = Phone::new(&keyd).decide(&id, "approve", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(is_login_form(&reply.text().await.unwrap()));
    let reply = phone.decide(&id, "launch", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        keyd.authority.pending_request(&id).await.unwrap().state,
        atrest_keyd::PendingState::Pending
    );

    // A session ends after SESSION_LIFETIME, whatever the approver does.
    keyd.clock.advance(SESSION_LIFETIME + 1);
    assert!(is_login_form(&phone.page().await.2));
    let reply = phone.decide(&id, "approve", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        keyd.authority.pending_request(&id).await.unwrap().state,
        atrest_keyd::PendingState::Pending
    );
}

/// Issue 10: a login is a row of the authority's database, kept by the
/// SHA-256 of its cookie. It outlives a restart of keyd, and the database
/// files never hold the cookie itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_survives_a_restart_and_the_database_keeps_only_its_hash() {
    let options = AuthorityOptions {
        approval_timeout: 3600,
        ..Default::default()
    };
    let test = TestKeyd::open(ManualClock::now(), options, LogOptions::default()).await;
    approve_group_web(&test).await;
    let served = test.serve(None).await;
    let keyd = served_keyd(test, served);
    let host = enroll_host(&keyd, "web-1").await;
    let (id, _) = held_request(&keyd, &host).await;
    let alice = approver(&keyd, "alice").await;
    let phone = Phone::new(&keyd);
    let (cookie, token) = phone
        .logged_in_with_cookie(
            "alice",
            &totp_code(&alice, "alice", keyd.clock.secs()).unwrap(),
        )
        .await;

    let Keyd {
        _keyd: test,
        _served: served,
        poll_tokens,
        ..
    } = keyd;
    drop(served);
    let test = test.restart().await;
    for file in ["keyd.db", "keyd.db-wal"] {
        let bytes = std::fs::read(test.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(cookie.len()).any(|w| w == cookie.as_bytes()),
            "{file} holds the session cookie"
        );
    }
    let served = test.serve(None).await;
    let keyd = Keyd {
        poll_tokens,
        ..served_keyd(test, served)
    };
    let phone = Phone {
        base: keyd.base.clone(),
        ..phone
    };
    let (status, _, html) = phone.page().await;
    assert_eq!(status, StatusCode::OK);
    assert!(!is_login_form(&html), "logged out by the restart");
    assert_eq!(csrf(&html), token);
    let reply = phone.decide(&id, "approve", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        keyd.authority.pending_request(&id).await.unwrap().state,
        atrest_keyd::PendingState::Approved
    );
}

/// Issue 10: an approver logged in through replica A is logged in on
/// replica B (a load balancer without sticky sessions) with the same form
/// token; the session still ends when its time is up, and a logout on B
/// ends it on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_replica_holds_on_the_other() {
    let options = AuthorityOptions {
        approval_timeout: 3600,
        ..Default::default()
    };
    let Some(test) = TestKeyd::open_on(
        Backend::Postgres,
        ManualClock::now(),
        options,
        LogOptions::default(),
    )
    .await
    else {
        return;
    };
    approve_group_web(&test).await;
    let replica = test.replica().await;
    let (served_a, served_b) = (test.serve(None).await, replica.serve(None).await);
    let (a, b) = (served_keyd(test, served_a), served_keyd(replica, served_b));
    let host = enroll_host(&a, "web-1").await;
    let (first, _) = held_request(&a, &host).await;
    let (second, _) = held_request(&a, &host).await;
    let alice = approver(&a, "alice").await;
    let on_a = Phone::new(&a);
    let (cookie, token) = on_a
        .logged_in_with_cookie(
            "alice",
            &totp_code(&alice, "alice", a.clock.secs()).unwrap(),
        )
        .await;
    // The same browser (cookies are per host name, not per port) on B.
    let on_b = Phone {
        client: on_a.client.clone(),
        base: b.base.clone(),
    };
    let (status, _, html) = on_b.page().await;
    assert_eq!(status, StatusCode::OK);
    assert!(!is_login_form(&html), "B does not know A's login: {html}");
    assert_eq!(csrf(&html), token);
    let reply = on_b.decide(&first, "approve", Some(&token)).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    // The decision's message is the session's: shown by whichever
    // replica serves the next page.
    assert!(on_a.page().await.2.contains("Approved web-1"));
    assert_eq!(
        a.authority.pending_request(&first).await.unwrap().state,
        atrest_keyd::PendingState::Approved
    );

    let reply = on_b
        .client
        .post(format!("{}/approve/logout", b.base))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    // The browser dropped the cookie; a copy of it is refused on A too.
    let reply = reqwest::Client::new()
        .post(format!("{}/approve/{second}/approve", a.base))
        .header(reqwest::header::COOKIE, format!("atrest_approve={cookie}"))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);

    // A new login expires on every replica at once. A whole step or more
    // later, so even a code that repeats in the next step is a newer step.
    a.clock.advance(60);
    let token = on_a
        .logged_in(
            "alice",
            &totp_code(&alice, "alice", a.clock.secs()).unwrap(),
        )
        .await;
    assert_eq!(csrf(&on_b.page().await.2), token);
    a.clock.advance(SESSION_LIFETIME + 1);
    assert!(is_login_form(&on_b.page().await.2));
    assert_eq!(
        on_b.decide(&second, "approve", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 10 (the review's item 6 across replicas): the budgets of wrong
/// codes are the authority's, not each replica's. Wrong codes sent to A
/// and B in turn meet one budget; then even the right code is refused
/// (429) by both until the window passes, and then logs in through
/// either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_spread_over_two_replicas_meet_one_budget() {
    let Some(test) = TestKeyd::open_on(
        Backend::Postgres,
        ManualClock::now(),
        AuthorityOptions::default(),
        LogOptions::default(),
    )
    .await
    else {
        return;
    };
    let replica = test.replica().await;
    let (served_a, served_b) = (test.serve(None).await, replica.serve(None).await);
    let (a, b) = (served_keyd(test, served_a), served_keyd(replica, served_b));
    let secret = approver(&a, "alice").await;
    let address = Ipv4Addr::new(127, 0, 0, 66);
    let (on_a, on_b) = (
        Phone::from_address(&a, address),
        Phone::from_address(&b, address),
    );
    let now = a.clock.secs();
    let wrong = wrong_code(&secret, "alice", now);
    for attempt in 0..MAX_FAILURES {
        let phone = if attempt % 2 == 0 { &on_a } else { &on_b };
        let status = phone.login("alice", &wrong).await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let code = totp_code(&secret, "alice", now).unwrap();
    for phone in [&on_a, &on_b] {
        refused_for_the_name(phone.login("alice", &code).await).await;
    }
    a.clock.advance(FAILURE_WINDOW);
    let code = totp_code(&secret, "alice", a.clock.secs()).unwrap();
    on_b.logged_in("alice", &code).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_escaped() {
    let keyd = start(AuthorityOptions::default()).await;
    // Host names are checked at enrollment: markup never gets that far.
    let token = keyd
        .authority
        .create_token("web", 600, "test")
        .await
        .unwrap();
    let refused = keyd
        .authority
        .enroll(
            &token.token,
            "<img src=x onerror=alert(1)>",
            HostIdentity::generate().public_key(),
            RequestContext { source: None },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_field");

    // What the page echoes from the wire: the name typed at login...
    let phone = Phone::new(&keyd);
    let hostile = "\"><script>alert(1)</script>";
    let reply = phone.login(hostile, "123456").await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    let html = reply.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));

    // ... and a request id from the URL, in the error message.
    let secret = approver(&keyd, "erin").await;
    let token = phone
        .logged_in(
            "erin",
            &totp_code(&secret, "erin", keyd.clock.secs()).unwrap(),
        )
        .await;
    let reply = phone
        .decide(
            "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "approve",
            Some(&token),
        )
        .await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let (_, _, html) = phone.page().await;
    assert!(html.contains("Not recorded:"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_posts_each_held_request_and_retries() {
    use axum::extract::State;
    use axum::http::StatusCode as AxumStatus;

    // A receiver that fails the first delivery.
    type Received = tokio::sync::mpsc::UnboundedSender<serde_json::Value>;
    let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU64::new(0));
    let receiver = axum::Router::new()
        .route(
            "/hooks/secret-path",
            axum::routing::post(
                |State((sent, calls)): State<(Received, Arc<AtomicU64>)>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    sent.send(body).unwrap();
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        AxumStatus::SERVICE_UNAVAILABLE
                    } else {
                        AxumStatus::NO_CONTENT
                    }
                },
            ),
        )
        .with_state((sent, calls.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/secret-path",
        listener.local_addr().unwrap()
    );
    let hooks = tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let notifier = webhook_notifier(url, Some("https://keyd.test:8443/".into())).unwrap();
    let keyd = start(AuthorityOptions {
        on_pending: Some(notifier),
        ..Default::default()
    })
    .await;
    let host = enroll_host(&keyd, "web-4").await;
    let (id, _) = held_request(&keyd, &host).await;

    for attempt in 1..=2 {
        let body = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap_or_else(|_| panic!("delivery {attempt} never came"))
            .unwrap();
        assert_eq!(body["event"], "unlock_pending");
        assert_eq!(body["request"]["id"], id.as_str());
        assert_eq!(body["request"]["host_id"], "web-4");
        assert_eq!(body["request"]["boot_id"], BOOT_ID);
        assert_eq!(body["request"]["reason"], REASON);
        assert_eq!(body["approve_url"], "https://keyd.test:8443/approve");
    }
    // Delivered on the second try: no third.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    hooks.abort();
}

/// The interpreter that can import selenium, and chromium and its driver,
/// or what is missing.
fn browser() -> Result<PathBuf, String> {
    for file in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(file).exists() {
            return Err(format!("{file} is missing"));
        }
    }
    // Debian's python3-selenium is in the system interpreter, which a
    // pyenv or venv `python3` earlier in PATH does not see.
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|python| {
            std::process::Command::new(python)
                .args(["-c", "import selenium"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| "no python3 can import selenium".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_in_headless_chromium() {
    let python = match browser() {
        Ok(python) => python,
        Err(missing) if std::env::var_os("ATREST_REQUIRE_BROWSER").is_some_and(|v| v == "1") => {
            panic!(
                "ATREST_REQUIRE_BROWSER=1 but the browser test cannot run: {missing}; \
                 apt-get install chromium chromium-driver python3-selenium"
            );
        }
        Err(missing) => {
            eprintln!(
                "\n*** SKIPPED an_approver_approves_in_headless_chromium: chromium not \
                 installed ({missing}); apt-get install chromium chromium-driver \
                 python3-selenium, or set ATREST_REQUIRE_BROWSER=1 to make this fail ***\n"
            );
            return;
        }
    };

    let certificates = ServerCertificates::generate(&["127.0.0.1".into()]).unwrap();
    let keyd = start_with(AuthorityOptions::default(), Some(certificates)).await;
    let url = keyd.base.clone();

    let host = enroll_host(&keyd, "db-7.example").await;
    let secret = approver(&keyd, "frank").await;
    let (signed, state) = unlock_request(&keyd, &host);
    let source = RequestContext {
        source: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
    };
    let UnlockOutcome::Pending {
        view,
        poll_token: Some(poll_token),
    } = keyd.authority.unlock(&signed, source).await.unwrap()
    else {
        panic!("not held");
    };
    // A second host asks again from the boot that already unlocked, without
    // its ticket: approved only through the confirmation page.
    let copied = enroll_host(&keyd, "db-8.example").await;
    let unproven = unproven_request(&keyd, &copied).await;
    let code = totp_code(&secret, "frank", keyd.clock.secs()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/approve.py");
    let screenshots = std::env::var_os("ATREST_SCREENSHOTS");
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(&python);
        command.arg(script).args([
            url.as_str(),
            "frank",
            &code,
            "db-7.example",
            BOOT_ID,
            REASON,
            "--unproven-host",
            "db-8.example",
        ]);
        if let Some(dir) = screenshots {
            command.arg("--screenshot").arg(dir);
        }
        run_with_timeout(command, Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Approved in the browser: the host's poll is granted.
    let UnlockOutcome::Granted(grant) = keyd
        .authority
        .poll(&view.id, &poll_token.to_string(), Duration::from_secs(5))
        .await
        .unwrap()
    else {
        panic!("still pending after the browser approved");
    };
    assert_eq!(
        state.unblind(&grant.response).unwrap().expose(),
        host.key.expose()
    );
    assert_eq!(
        keyd.authority
            .pending_request(&view.id)
            .await
            .unwrap()
            .decided_by
            .as_deref(),
        Some("web:frank")
    );
    let confirmed = keyd.authority.pending_request(&unproven).await.unwrap();
    assert_eq!(confirmed.state, atrest_keyd::PendingState::Approved);
    assert_eq!(confirmed.decided_by.as_deref(), Some("web:frank"));
}

/// Runs `command`, killing it if it takes longer than `limit` (a hung
/// browser must not hang the suite).
fn run_with_timeout(mut command: std::process::Command, limit: Duration) -> std::process::Output {
    let stdout = tempfile::tempfile().unwrap();
    let stderr = tempfile::tempfile().unwrap();
    let mut child = command
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            eprintln!("approve.py ran over {limit:?}; killing it");
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |mut file: std::fs::File| {
        use std::io::{Read, Seek};
        let mut out = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut out).unwrap();
        out
    };
    std::process::Output {
        status,
        stdout: read(stdout),
        stderr: read(stderr),
    }
}
