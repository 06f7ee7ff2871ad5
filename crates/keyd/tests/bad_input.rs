//! Hostile and broken input against a real keyd on 127.0.0.1:0: every kind
//! gets its documented 4xx and stable code (docs/keyd-api.md), never a 5xx
//! and never a released key, and refusals that name a host are audited.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use atrest_keyd::{BODY_TIMEOUT, MAX_BODY};
use atrest_remote::{HostIdentity, SignedRebootNotice, SignedUnlockRequest};
use common::{Host, Reply, Server, now};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The host routes that take a body.
const BODY_ROUTES: [&str; 3] = ["/v1/enroll", "/v1/unlock", "/v1/reboot"];

/// `refusal` is in the audit log as an entry about `host` with that
/// outcome.
async fn assert_audited(server: &Server, host: &str, outcome: &str) {
    let details = server.audit_details(host).await;
    assert!(
        details.iter().any(|d| d["outcome"] == outcome),
        "no audit entry about {host} with outcome {outcome}: {details:?}"
    );
}

/// A valid signed unlock body as JSON, to break.
fn unlock_json(host: &Host) -> Value {
    serde_json::to_value(host.unlock().0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_refused_and_audited() {
    let server = Server::start().await;
    let host = server.enroll("web-1").await;
    let valid = unlock_json(&host);
    let mut wrong_types = valid.clone();
    wrong_types["request"]["keyslot"] = json!("zero");
    let mut negative = valid.clone();
    negative["request"]["timestamp"] = json!(-1);
    let mut keyslot_too_big = valid.clone();
    keyslot_too_big["request"]["keyslot"] = json!(256);
    let mut unknown_top = valid.clone();
    unknown_top["extra"] = json!(1);
    let mut unknown_inner = valid.clone();
    unknown_inner["request"]["extra"] = json!(1);
    let mut missing = valid.clone();
    missing["request"].as_object_mut().unwrap().remove("nonce");
    let mut short_signature = valid.clone();
    short_signature["signature"] = json!("AAAA");
    let mut padded_nonce = valid.clone();
    padded_nonce["request"]["nonce"] = json!("AAAAAAAAAAAAAAAAAAAAAA==");
    let mut bad_host_id = valid.clone();
    bad_host_id["request"]["host_id"] = json!("../etc/passwd");
    let mut not_a_point = valid.clone();
    not_a_point["request"]["blinded"] = json!("A".repeat(43));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("a JSON string", b"\"unlock\"".to_vec()),
        ("an array", b"[]".to_vec()),
        (
            "deeply nested",
            [b"[".repeat(5000), b"]".repeat(5000)].concat(),
        ),
        ("invalid UTF-8", b"{\"request\": \"\xff\xfe\"}".to_vec()),
        ("a string keyslot", wrong_types.to_string().into_bytes()),
        ("a negative timestamp", negative.to_string().into_bytes()),
        ("keyslot 256", keyslot_too_big.to_string().into_bytes()),
        ("an unknown field", unknown_top.to_string().into_bytes()),
        (
            "an unknown inner field",
            unknown_inner.to_string().into_bytes(),
        ),
        ("a missing field", missing.to_string().into_bytes()),
        (
            "a short signature",
            short_signature.to_string().into_bytes(),
        ),
        ("padded base64", padded_nonce.to_string().into_bytes()),
        ("a bad host id", bad_host_id.to_string().into_bytes()),
        ("the identity point", not_a_point.to_string().into_bytes()),
    ];
    let before = server.audited_outcomes("malformed_request").await;
    let mut refused = 0;
    for route in BODY_ROUTES {
        for (what, body) in &bodies {
            let reply = server.post_raw(route, body.clone()).await;
            assert_eq!(
                (reply.status, reply.code()),
                (400, Some("malformed_request")),
                "{what} to {route}: {}",
                reply.text
            );
            reply.assert_refused(400, "malformed_request");
            refused += 1;
        }
    }
    // Without a JSON content type.
    let reply = common::Reply::read(
        server
            .client
            .post(server.url("/v1/unlock"))
            .body(valid.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_refused(400, "malformed_request");
    refused += 1;
    // Each was audited (no host is known yet, so no subject).
    let after = server.audited_outcomes("malformed_request").await;
    assert_eq!(after - before, refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_enrollment_fields_are_refused() {
    let server = Server::start().await;
    let token = server
        .authority
        .create_token("web", 600, "test")
        .await
        .unwrap();
    let key = HostIdentity::generate().public_key().to_string();
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let weak = atrest_remote::to_base64url(&identity_point);
    let cases = [
        (
            json!({ "token": token.token, "host_name": "a", "public_key": "AAAA" }),
            400,
            "malformed_request",
        ),
        // A small-order point is not a key that signatures prove anything for.
        (
            json!({ "token": token.token, "host_name": "a", "public_key": weak }),
            400,
            "malformed_request",
        ),
        (
            json!({ "token": token.token, "host_name": "a b", "public_key": key }),
            400,
            "invalid_field",
        ),
        (
            json!({ "token": token.token, "host_name": "", "public_key": key }),
            400,
            "invalid_field",
        ),
        (
            json!({ "token": "guess", "host_name": "a", "public_key": key }),
            401,
            "bad_token",
        ),
        (
            json!({ "token": token.token, "host_name": "a", "public_key": key, "group": "admin" }),
            400,
            "malformed_request",
        ),
    ];
    for (body, status, code) in cases {
        server
            .post("/v1/enroll", &body)
            .await
            .assert_refused(status, code);
    }
    // None of that spent the token.
    let reply = server
        .post(
            "/v1/enroll",
            &json!({ "token": token.token, "host_name": "a", "public_key": key }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let server = Server::start().await;
    let host = server.enroll("web-1").await;
    // Valid JSON padded past the limit, a limit-and-one body, and one far
    // over it; with and without a Content-Length.
    let mut padded = unlock_json(&host).to_string().into_bytes();
    padded.extend(std::iter::repeat_n(b' ', MAX_BODY));
    for route in BODY_ROUTES {
        for body in [
            padded.clone(),
            vec![b' '; MAX_BODY + 1],
            vec![b'['; 4 * MAX_BODY],
        ] {
            server
                .post_raw(route, body)
                .await
                .assert_refused(413, "body_too_large");
        }
        // Chunked, so no Content-Length warns the server.
        let mut request = format!(
            "POST {route} HTTP/1.1\r\nHost: keyd\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..20 {
            request.extend_from_slice(b"400\r\n");
            request.extend(std::iter::repeat_n(b' ', 1024));
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let answer = raw_exchange(&server, &request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("\"body_too_large\""), "{answer}");
    }
}

/// Writes `request` on a fresh connection and reads until the server
/// closes it (or stops writing for a while).
async fn raw_exchange(server: &Server, request: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The issue asks that an oversized body be audited like other bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_audited() {
    let server = Server::start().await;
    let before = server.audited_outcomes("body_too_large").await;
    server
        .post_raw("/v1/unlock", vec![b' '; 2 * MAX_BODY])
        .await
        .assert_refused(413, "body_too_large");
    assert_eq!(server.audited_outcomes("body_too_large").await, before + 1);
}

/// Sends headers promising a body, then a trickle of it; the answer.
async fn slow_request(server: &Server) -> String {
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(
            b"POST /v1/unlock HTTP/1.1\r\nHost: keyd\r\nContent-Type: application/json\r\n\
              Content-Length: 500\r\n\r\n{\"request\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    // Generous: the server must answer at BODY_TIMEOUT, long before this.
    tokio::time::timeout(
        BODY_TIMEOUT + Duration::from_secs(20),
        socket.read_to_end(&mut answer),
    )
    .await
    .expect("no answer to a slow body")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408() {
    let server = Server::start().await;
    let answer = slow_request(&server).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "slow_request", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_audited() {
    let server = Server::start().await;
    let answer = slow_request(&server).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(server.audited_outcomes("slow_request").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_replayed_requests_are_refused_and_audited() {
    let server = Server::start().await;
    let host = server.enroll("web-1").await;
    let id = host.id().to_owned();

    // A flipped signature bit; another key's signature.
    let (signed, _) = host.unlock();
    let mut forged = signed.clone();
    forged.signature.0[10] ^= 1;
    server
        .post("/v1/unlock", &forged)
        .await
        .assert_refused(401, "bad_signature");
    let stranger = HostIdentity::generate();
    let (request, _) = host.request(now());
    server
        .post("/v1/unlock", &stranger.sign(request))
        .await
        .assert_refused(401, "bad_signature");
    // A field changed after signing.
    let mut altered = signed.clone();
    altered.request.keyslot = 1;
    server
        .post("/v1/unlock", &altered)
        .await
        .assert_refused(401, "bad_signature");
    assert_audited(&server, &id, "bad_signature").await;

    // Outside the clock window, either way.
    let (stale, _) = host.request(now() - 3600);
    server
        .post("/v1/unlock", &host.identity.sign(stale))
        .await
        .assert_refused(401, "stale_request");
    assert_audited(&server, &id, "stale_request").await;
    let (future, _) = host.request(now() + 3600);
    server
        .post("/v1/unlock", &host.identity.sign(future))
        .await
        .assert_refused(401, "future_request");
    assert_audited(&server, &id, "future_request").await;

    // The real one works once.
    let reply = server.post("/v1/unlock", &signed).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    server
        .post("/v1/unlock", &signed)
        .await
        .assert_refused(403, "replayed_nonce");
    assert_audited(&server, &id, "replayed_nonce").await;
    // A granted request's nonce stays spent under any other valid
    // signature.
    let mut renamed = signed.clone();
    renamed.request.vault_id = [9; 16];
    server
        .post("/v1/unlock", &host.identity.sign(renamed.request))
        .await
        .assert_refused(403, "replayed_nonce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_revoked_shredded_hosts_and_wrong_keys_are_refused_and_audited() {
    let server = Server::start().await;
    let host = server.enroll("web-1").await;
    let other = server.enroll("web-2").await;
    let id = host.id().to_owned();

    // A host nobody enrolled.
    let (mut request, _) = host.request(now());
    request.host_id = atrest_remote::HostId::new("nobody").unwrap();
    server
        .post("/v1/unlock", &host.identity.sign(request))
        .await
        .assert_refused(404, "unknown_host");
    assert_audited(&server, "nobody", "unknown_host").await;

    // Its own name, another host's key id.
    let (mut request, _) = host.request(now());
    request.key_id = other.binding.key_id();
    server
        .post("/v1/unlock", &host.identity.sign(request))
        .await
        .assert_refused(409, "unknown_key");
    assert_audited(&server, &id, "unknown_key").await;

    // Another host's name, its own key: the signature gives it away.
    let (mut request, _) = host.request(now());
    request.host_id = other.enrollment.host_id.clone();
    server
        .post("/v1/unlock", &host.identity.sign(request))
        .await
        .assert_refused(401, "bad_signature");

    let admin = |action: &str| format!("/v1/admin/hosts/{id}/{action}");
    assert_eq!(
        server
            .admin(Method::POST, &admin("revoke"), None)
            .await
            .status,
        200
    );
    server
        .post("/v1/unlock", &host.unlock().0)
        .await
        .assert_refused(403, "revoked");
    assert_audited(&server, &id, "revoked").await;
    server
        .post("/v1/reboot", &host.reboot_notice(now()))
        .await
        .assert_refused(403, "revoked");

    assert_eq!(
        server
            .admin(Method::POST, &admin("shred"), None)
            .await
            .status,
        200
    );
    server
        .post("/v1/unlock", &host.unlock().0)
        .await
        .assert_refused(410, "shredded");
    assert_audited(&server, &id, "shredded").await;
    server
        .post("/v1/reboot", &host.reboot_notice(now()))
        .await
        .assert_refused(410, "shredded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reboot_notices_are_refused_and_audited() {
    let server = Server::start().await;
    let host = server.enroll("web-1").await;
    let id = host.id().to_owned();
    // Only the boot that got a key (and its ticket) may announce its end.
    server
        .post("/v1/reboot", &host.reboot_notice(now()))
        .await
        .assert_refused(403, "unproven_boot");
    assert_audited(&server, &id, "unproven_boot").await;
    let granted = server.post("/v1/unlock", &host.unlock().0).await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    let ticket: atrest_remote::BootTicket =
        serde_json::from_value(granted.json["boot_ticket"].clone()).unwrap();
    let notice = SignedRebootNotice {
        boot_ticket: Some(ticket),
        ..host.reboot_notice(now())
    };
    let mut forged = notice.clone();
    forged.signature.0[0] ^= 0x80;
    server
        .post("/v1/reboot", &forged)
        .await
        .assert_refused(401, "bad_signature");
    assert_audited(&server, &id, "bad_signature").await;
    server
        .post("/v1/reboot", &host.reboot_notice(now() - 3600))
        .await
        .assert_refused(401, "stale_request");
    server
        .post("/v1/reboot", &host.reboot_notice(now() + 3600))
        .await
        .assert_refused(401, "future_request");
    assert_audited(&server, &id, "future_request").await;
    assert_eq!(server.post("/v1/reboot", &notice).await.status, 200);
    server
        .post("/v1/reboot", &notice)
        .await
        .assert_refused(403, "replayed_nonce");
    assert_audited(&server, &id, "replayed_nonce").await;
    // An unlock request's signature is no reboot notice's, and back.
    let (signed, _) = host.unlock();
    let crossed = json!({
        "notice": {
            "host_id": id,
            "boot_id": signed.request.boot_id,
            "nonce": signed.request.nonce,
            "timestamp": signed.request.timestamp,
        },
        "signature": signed.signature,
    });
    server
        .post("/v1/reboot", &crossed)
        .await
        .assert_refused(401, "bad_signature");
    let mut stranger = host.reboot_notice(now());
    stranger.notice.host_id = atrest_remote::HostId::new("nobody").unwrap();
    server
        .post("/v1/reboot", &stranger)
        .await
        .assert_refused(404, "unknown_host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_the_token() {
    let server = Server::start().await;
    let routes = [
        (Method::POST, "/v1/admin/tokens"),
        (Method::GET, "/v1/admin/hosts"),
        (Method::GET, "/v1/admin/hosts/web-1"),
        (Method::POST, "/v1/admin/hosts/web-1/shred"),
        (Method::GET, "/v1/admin/policy"),
        (Method::PUT, "/v1/admin/policy"),
        (Method::GET, "/v1/admin/requests"),
        (Method::POST, "/v1/admin/requests/x/approve"),
        (Method::POST, "/v1/admin/approvers"),
    ];
    let basic = format!("Basic {}", common::ADMIN_TOKEN);
    let glued = format!("Bearer{}", common::ADMIN_TOKEN);
    let prefixed = format!("Bearer x{}", common::ADMIN_TOKEN);
    let wrong = [
        None,
        Some("Bearer not-the-token"),
        Some("Bearer "),
        Some(basic.as_str()),
        Some(glued.as_str()),
        Some(prefixed.as_str()),
    ];
    for (method, path) in routes {
        for authorization in wrong {
            let mut request = server.client.request(method.clone(), server.url(path));
            if let Some(value) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let reply = Reply::read(request.json(&json!({})).send().await.unwrap()).await;
            reply.assert_refused(401, "unauthorized");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_of_unknown_requests_are_refused() {
    let server = Server::start().await;
    for id in ["nope", "AAAAAAAAAAAAAAAAAAAAAA", &"x".repeat(4000)] {
        server
            .get(&format!("/v1/requests/{id}?wait=0"))
            .await
            .assert_refused(404, "unknown_request");
    }
}

/// docs/keyd-api.md: "Every error is {"error": CODE, "message": TEXT}".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_json_error_body() {
    let server = Server::start().await;
    let probes = [
        (Method::GET, "/v1/requests/x?wait=soon"),
        (Method::GET, "/v1/requests/x?wait=-1"),
        (Method::GET, "/v1/requests/%FF"),
        (Method::GET, "/v1/admin/hosts/%FF"),
        (Method::GET, "/v1/unlock"),
        (Method::DELETE, "/v1/admin/hosts"),
    ];
    let mut bare = Vec::new();
    for (method, path) in probes {
        let request = server
            .client
            .request(method.clone(), server.url(path))
            .bearer_auth(common::ADMIN_TOKEN);
        let reply = Reply::read(request.send().await.unwrap()).await;
        assert!((400..500).contains(&reply.status), "{method} {path}");
        if reply.code().is_none() {
            bare.push(format!(
                "{method} {path} -> {} {:?}",
                reply.status, reply.text
            ));
        }
    }
    assert!(
        bare.is_empty(),
        "errors without a JSON body:\n{}",
        bare.join("\n")
    );
}

/// A tiny deterministic generator (xorshift64*): the failures it finds
/// reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

/// One random change to `body`.
fn mutate(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    const JSON_BYTES: &[u8] = b"{}[]\":,0123456789aZ_- \\";
    let mut out = body.to_vec();
    if out.is_empty() {
        return vec![JSON_BYTES[rng.below(JSON_BYTES.len())]];
    }
    let at = rng.below(out.len());
    match rng.below(7) {
        0 => out[at] ^= 1 << rng.below(8),
        1 => out[at] = JSON_BYTES[rng.below(JSON_BYTES.len())],
        2 => out.truncate(at),
        3 => {
            out.remove(at);
        }
        4 => out.insert(at, u8::try_from(rng.below(256)).unwrap()),
        5 => {
            let end = (at + rng.below(16)).min(out.len());
            let piece = out[at..end].to_vec();
            out.splice(at..at, piece);
        }
        _ => {
            let other = rng.below(out.len());
            out.swap(at, other);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_unlock_bodies_never_unlock_or_fail() {
    let server = Server::start().await;
    let host = server.enroll("web-1").await;
    let seed = now() | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let mut sent = 0;
    while sent < 200 {
        let (signed, _) = host.unlock();
        let body = serde_json::to_vec(&signed).unwrap();
        let mut mutated = mutate(&mut rng, &body);
        for _ in 0..rng.below(3) {
            mutated = mutate(&mut rng, &mutated);
        }
        // A change that leaves the same request (say, whitespace) is no
        // mutation: the authority is right to answer it.
        if serde_json::from_slice::<SignedUnlockRequest>(&mutated).is_ok_and(|m| m == signed) {
            continue;
        }
        let reply = server.post_raw("/v1/unlock", mutated.clone()).await;
        assert!(
            (400..500).contains(&reply.status) && reply.code().is_some(),
            "seed {seed}: {} answered {} {}",
            String::from_utf8_lossy(&mutated),
            reply.status,
            reply.text
        );
        assert!(reply.json.get("response").is_none(), "seed {seed}");
        sent += 1;
    }
    // The server still serves the real thing.
    let (signed, state) = host.unlock();
    let reply = server.post("/v1/unlock", &signed).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let granted: atrest_keyd::UnlockReply = serde_json::from_value(reply.json).unwrap();
    let atrest_keyd::UnlockReply::Granted { response, .. } = granted else {
        panic!("not granted");
    };
    assert_eq!(
        state.unblind(&response).unwrap().expose(),
        host.key.expose()
    );
}
