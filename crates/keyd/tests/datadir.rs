//! The data directory as `atrest keyd init` and `serve` use it: generated
//! or given certificates, one server per directory, refused key files.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use atrest_keyd::{AuthorityOptions, DataDir, InitOptions, serve_data_dir};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA and a server certificate for 127.0.0.1, as PEM files an operator
/// would bring.
fn operator_certificates(dir: &std::path::Path) -> (String, [std::path::PathBuf; 3]) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Example Corp internal CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = [
        dir.join("chain.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    ];
    std::fs::write(&paths[0], leaf.pem()).unwrap();
    std::fs::write(&paths[1], key.serialize_pem()).unwrap();
    std::fs::write(&paths[2], ca.pem()).unwrap();
    (atrest_keyd::fingerprint(ca.der()), paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_certificates_are_served_and_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let (fingerprint, [chain, key, ca]) = operator_certificates(dir.path());
    let data = dir.path().join("keyd");
    let made = DataDir::init(
        &data,
        InitOptions {
            certificates: Some((chain, key, Some(ca.clone()))),
            ..InitOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(made.ca_fingerprint, fingerprint);
    let mode = |p: &str| {
        std::fs::metadata(data.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("admin.token"), 0o600);
    assert_eq!(mode("audit.key"), 0o600);
    assert_eq!(mode("tls/server.key"), 0o600);

    let dir_handle = DataDir::open_exclusive(&data).unwrap();
    // One server per data directory.
    let busy = DataDir::open_exclusive(&data).err().unwrap();
    assert!(busy.to_string().contains("another keyd"), "{busy}");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_data_dir(
            &dir_handle,
            Some("127.0.0.1:0"),
            AuthorityOptions::default(),
            async {
                let _ = stop_rx.await;
            },
            |address, fingerprint| {
                let _ = ready_tx.send((address, fingerprint.to_owned()));
            },
        )
        .await
    });
    let (address, served_fingerprint) = ready_rx.await.unwrap();
    assert_eq!(served_fingerprint, fingerprint);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let health = client
        .get(format!("https://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn init_refuses_a_used_directory_and_serve_a_readable_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyd");
    DataDir::init(&data, InitOptions::default()).await.unwrap();
    let again = DataDir::init(&data, InitOptions::default())
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("already holds a keyd"),
        "{again}"
    );

    let missing = DataDir::open(&dir.path().join("nope")).err().unwrap();
    assert!(
        missing.to_string().contains("atrest keyd init"),
        "{missing}"
    );

    std::fs::set_permissions(
        data.join("audit.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let opened = DataDir::open(&data).unwrap();
    let refused = opened.audit_public_key().err().unwrap();
    assert!(refused.to_string().contains("chmod 600"), "{refused}");
}

#[tokio::test]
async fn a_chain_without_a_ca_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (_, [chain, key, _]) = operator_certificates(dir.path());
    let data = dir.path().join("keyd");
    let err = DataDir::init(
        &data,
        InitOptions {
            certificates: Some((chain, key, None)),
            ..InitOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("--ca"), "{err}");
    // Nothing was made: init can simply be run again.
    assert!(!data.exists());
    DataDir::init(&data, InitOptions::default()).await.unwrap();
}
