//! The server on 127.0.0.1:0, driven as a host would: over HTTP, and
//! over HTTPS under the authority's own CA.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use atrest_audit::LogOptions;
use atrest_keyd::testing::TestKeyd;
use atrest_keyd::{
    AuthorityOptions, Clock, EnrollBody, Enrollment, ErrorBody, ServerCertificates, SystemClock,
    UnlockReply, serve_tls,
};
use atrest_remote::{BootId, HostIdentity, RequestNonce, UnlockRequest, enroll};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_and_unlock_over_http() {
    let keyd = TestKeyd::open(
        SystemClock,
        AuthorityOptions::default(),
        LogOptions::default(),
    )
    .await;
    let token = keyd
        .authority
        .create_token("web", 600, "test")
        .await
        .unwrap();

    let server = keyd.serve(None).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Enroll.
    let identity = HostIdentity::generate();
    let reply = client
        .post(format!("{base}/v1/enroll"))
        .json(&EnrollBody {
            token: token.token.clone(),
            host_name: "web-1".into(),
            public_key: identity.public_key(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let enrollment: Enrollment = reply.json().await.unwrap();
    let (binding, key) = enroll(&enrollment.exchange_key);

    // The token is spent.
    let again = client
        .post(format!("{base}/v1/enroll"))
        .json(&EnrollBody {
            token: token.token,
            host_name: "web-2".into(),
            public_key: identity.public_key(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    assert_eq!(again.json::<ErrorBody>().await.unwrap().error, "bad_token");

    // Unlock.
    let (blinded, state) = binding.blind();
    let now = keyd.clock.now_ms() / 1000;
    let signed = identity.sign(UnlockRequest {
        host_id: enrollment.host_id.clone(),
        vault_id: [1; 16],
        keyslot: 0,
        key_id: binding.key_id(),
        blinded,
        nonce: RequestNonce::random(),
        timestamp: now,
        boot_id: BootId::new("6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10").unwrap(),
        generation: None,
    });
    let reply = client
        .post(format!("{base}/v1/unlock"))
        .json(&signed)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let UnlockReply::Granted { response, .. } = reply.json().await.unwrap() else {
        panic!("not granted");
    };
    assert_eq!(state.unblind(&response).unwrap().expose(), key.expose());

    // The same request again is a replay.
    let replay = client
        .post(format!("{base}/v1/unlock"))
        .json(&signed)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 403);
    assert_eq!(
        replay.json::<ErrorBody>().await.unwrap().error,
        "replayed_nonce"
    );

    // Malformed and oversized bodies get stable codes.
    let malformed = client
        .post(format!("{base}/v1/unlock"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<ErrorBody>().await.unwrap().error,
        "malformed_request"
    );
    let huge = client
        .post(format!("{base}/v1/unlock"))
        .header("content-type", "application/json")
        .body(vec![b' '; atrest_keyd::MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(
        huge.json::<ErrorBody>().await.unwrap().error,
        "body_too_large"
    );

    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_under_its_own_ca() {
    let certificates =
        ServerCertificates::generate(&["127.0.0.1".into(), "localhost".into()]).unwrap();
    let fingerprint = certificates.ca_fingerprint();
    assert!(fingerprint.starts_with("SHA256:"));
    assert_eq!(fingerprint.len(), "SHA256:".len() + 64);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificates.ca.clone()).unwrap();
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { serve_tls(listener, &certificates, router).await });

    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok"), "{reply}");

    // A client that trusts another CA is refused.
    let other = ServerCertificates::generate(&["127.0.0.1".into()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .is_err()
    );
    server.abort();
}
