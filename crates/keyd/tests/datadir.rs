//! The data directory as `atrest keyd init` and `serve` use it: generated
//! or given certificates, one server per directory, refused key files, and
//! the admin socket the CLI on the same machine uses.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use atrest_keyd::{
    AdminClient, AuthorityOptions, ClientError, DataDir, HostView, InitOptions, Settings, Token,
    serve_data_dir,
};
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
    assert_eq!(mode("records.key"), 0o600);
    assert_eq!(mode("secrets.key"), 0o600);
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

/// `serve` on `data` in the background: its HTTPS address, and what stops it.
async fn serve_in_background(
    data: &std::path::Path,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), atrest_keyd::DataDirError>>,
) {
    let dir_handle = DataDir::open_exclusive(data).unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_data_dir(
            &dir_handle,
            None,
            AuthorityOptions::default(),
            async {
                let _ = stop_rx.await;
            },
            |address, _| {
                let _ = ready_tx.send(address);
            },
        )
        .await
    });
    (ready_rx.await.unwrap(), stop_tx, server)
}

/// The README's set-up: a certificate for `keys.example` only, listening on
/// every address. Admin commands used to go to https://127.0.0.1, which the
/// certificate does not name; now they use the admin socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_whatever_names_the_certificate_carries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyd");
    DataDir::init(
        &data,
        InitOptions {
            settings: Settings {
                listen: "0.0.0.0:0".into(),
                names: vec!["keys.example".into()],
                ..Settings::default()
            },
            ..InitOptions::default()
        },
    )
    .await
    .unwrap();
    // A socket left by a keyd that was killed.
    drop(std::os::unix::net::UnixListener::bind(data.join("admin.sock")).unwrap());

    let (_, stop, server) = serve_in_background(&data).await;
    let socket = data.join("admin.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());

    let admin = AdminClient::for_data_dir(&DataDir::open(&data).unwrap()).unwrap();
    assert_eq!(admin.base(), format!("unix:{}", socket.display()));
    let token: Token = admin
        .post(
            "/v1/admin/tokens",
            &serde_json::json!({ "group": "web", "expires_in": 600 }),
        )
        .await
        .unwrap();
    assert_eq!(token.group, "web");
    let hosts: Vec<HostView> = admin.get("/v1/admin/hosts").await.unwrap();
    assert!(hosts.is_empty());
    // The token is still asked for.
    let wrong = AdminClient::unix(socket.clone(), zeroize::Zeroizing::new("wrong".into()));
    let refused = wrong
        .get::<Vec<HostView>>("/v1/admin/hosts")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ClientError::Refused { status: 401, .. }),
        "{refused}"
    );

    // A live socket is not taken over (a second data directory given the
    // same path).
    let taken = atrest_keyd::AdminSocket::bind(&socket).err().unwrap();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse, "{taken}");
    let _: Vec<HostView> = admin.get("/v1/admin/hosts").await.unwrap();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket outlived keyd");
    // Stopped: the error says which socket and what to do.
    let down = admin
        .get::<Vec<HostView>>("/v1/admin/hosts")
        .await
        .unwrap_err()
        .to_string();
    assert!(down.contains(&socket.display().to_string()), "{down}");
    assert!(down.contains("atrest keyd serve"), "{down}");
}

/// Only keyd's user and root may use the admin socket: the file is 0600,
/// and a connection from another user is closed unanswered (`SO_PEERCRED`)
/// even when the file is opened to everyone. The second needs root (to act
/// as another user); as another user only the mode is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_answers_only_keyds_user_and_root() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyd");
    // Given elsewhere than the data directory (0700), as under /run.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for open in [dir.path(), run.as_path()] {
        std::fs::set_permissions(open, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = run.join("keyd-admin.sock");
    DataDir::init(
        &data,
        InitOptions {
            settings: Settings {
                admin_socket: Some(socket.clone()),
                ..Settings::default()
            },
            ..InitOptions::default()
        },
    )
    .await
    .unwrap();
    let (_, stop, server) = serve_in_background(&data).await;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let admin = AdminClient::for_data_dir(&DataDir::open(&data).unwrap()).unwrap();
    let _: Vec<HostView> = admin.get("/v1/admin/hosts").await.unwrap();

    let python = std::path::Path::new("/usr/bin/python3");
    if rustix::process::geteuid().is_root() && python.exists() {
        // What `nobody` gets: the answer's first bytes, or the error.
        let as_nobody = |socket: &std::path::Path| {
            use std::os::unix::process::CommandExt;
            let output = std::process::Command::new(python)
                .uid(65534)
                .gid(65534)
                .args([
                    "-c",
                    "import socket, sys\n\
                     s = socket.socket(socket.AF_UNIX)\n\
                     try:\n    s.connect(sys.argv[1])\n\
                     except OSError as e:\n    print(type(e).__name__); sys.exit()\n\
                     try:\n    s.sendall(b'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n    \
                     answer = s.recv(100)\n\
                     except (BrokenPipeError, ConnectionResetError):\n    answer = b''\n\
                     print(repr(answer))",
                ])
                .arg(socket)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            assert!(
                output.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        };
        assert_eq!(as_nobody(&socket), "PermissionError");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(as_nobody(&socket), "b''", "another user was answered");
        // Root still is.
        let _: Vec<HostView> = admin.get("/v1/admin/hosts").await.unwrap();
    } else {
        eprintln!("not root: only the socket's mode is checked");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The records key: made at init, and a directory whose records key is not
/// the one the database's scopes are wrapped under refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_key_other_than_the_databases_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyd");
    DataDir::init(&data, InitOptions::default()).await.unwrap();
    let records = data.join("records.key");
    let first = std::fs::read(&records).unwrap();
    // The records epoch file (decision 0020): magic, version, epoch 0, key.
    assert_eq!(first.len(), atrest_keyd::secrets_key::FILE_LEN);
    assert_eq!(&first[..9], b"ATRK\x01\0\0\0\0");
    let opened = DataDir::open(&data).unwrap();
    drop(opened.authority(AuthorityOptions::default()).await.unwrap());

    // Another key in its place (a replica given the wrong file; here the
    // bare 32-byte form of before 0020, read as its epoch 0).
    std::fs::remove_file(&records).unwrap();
    std::fs::write(&records, [7u8; 32]).unwrap();
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = DataDir::open(&data)
        .unwrap()
        .authority(AuthorityOptions::default())
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("records.key"), "{refused}");

    // Readable by others: refused, with what to do.
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = DataDir::open(&data)
        .unwrap()
        .authority(AuthorityOptions::default())
        .await
        .err()
        .unwrap();
    assert!(loose.to_string().contains("chmod 600"), "{loose}");

    // The right key back: it starts again.
    std::fs::remove_file(&records).unwrap();
    std::fs::write(&records, &first).unwrap();
    std::fs::set_permissions(&records, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(
        DataDir::open(&data)
            .unwrap()
            .authority(AuthorityOptions::default())
            .await
            .unwrap(),
    );
}

/// A copy of `data` (settings, keys, certificates) beside its databases,
/// with `keyd.db` from `state` and `audit.db` from `audit`: a data
/// directory restored from backups.
fn restored_dir(
    data: &std::path::Path,
    to: &std::path::Path,
    state: &std::path::Path,
    audit: &std::path::Path,
) {
    std::fs::create_dir(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(to.join("tls")).unwrap();
    for name in [
        "keyd.json",
        "admin.token",
        "audit.key",
        "records.key",
        "secrets.key",
        "tls/ca.pem",
        "tls/server.pem",
        "tls/server.key",
    ] {
        std::fs::copy(data.join(name), to.join(name)).unwrap();
    }
    std::fs::copy(state, to.join("keyd.db")).unwrap();
    std::fs::copy(audit, to.join("audit.db")).unwrap();
}

/// SQLite's online copy of a live database (`VACUUM INTO`), as an
/// operator's backup.
async fn sqlite_backup(live: &std::path::Path, to: &std::path::Path) {
    use sqlx::Connection;
    let mut db = sqlx::sqlite::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(live),
    )
    .await
    .unwrap();
    sqlx::query("VACUUM INTO ?")
        .bind(to.to_str().unwrap())
        .execute(&mut db)
        .await
        .unwrap();
}

/// Issue 10 through `serve`'s own start path: a data directory whose
/// databases are put back to a backup taken before a shred refuses to
/// start, saying what to do; one taken after the shred starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyd_refuses_to_start_on_a_database_from_before_a_shred() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyd");
    DataDir::init(&data, InitOptions::default()).await.unwrap();
    let authority = DataDir::open(&data)
        .unwrap()
        .authority(AuthorityOptions::default())
        .await
        .unwrap();
    for name in ["web-1", "web-2"] {
        let token = authority.create_token("web", 3600, "test").await.unwrap();
        authority
            .enroll(
                &token.token,
                name,
                atrest_remote::HostIdentity::generate().public_key(),
                atrest_keyd::RequestContext::default(),
            )
            .await
            .unwrap();
    }
    let backup = |name: &str| dir.path().join(name);
    sqlite_backup(&data.join("keyd.db"), &backup("state-before.db")).await;
    sqlite_backup(&data.join("audit.db"), &backup("audit-before.db")).await;
    let shredded = atrest_remote::HostId::new("web-1").unwrap();
    authority.shred(&shredded, "test").await.unwrap();
    sqlite_backup(&data.join("keyd.db"), &backup("state-after.db")).await;
    sqlite_backup(&data.join("audit.db"), &backup("audit-after.db")).await;

    let before = dir.path().join("restored-before");
    restored_dir(
        &data,
        &before,
        &backup("state-before.db"),
        &backup("audit-before.db"),
    );
    let refused = DataDir::open(&before)
        .unwrap()
        .authority(AuthorityOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains(
            "this database's host secrets are at epoch 0; this data directory's key is at epoch 1"
        ) && refused.contains("restore a backup taken after the last shred"),
        "{refused}"
    );

    // secrets.key readable by others: refused, with what to do.
    let key = data.join("secrets.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = DataDir::open(&data)
        .unwrap()
        .authority(AuthorityOptions::default())
        .await
        .err()
        .unwrap();
    assert!(loose.to_string().contains("chmod 600"), "{loose}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let after = dir.path().join("restored-after");
    restored_dir(
        &data,
        &after,
        &backup("state-after.db"),
        &backup("audit-after.db"),
    );
    let restored = DataDir::open(&after)
        .unwrap()
        .authority(AuthorityOptions::default())
        .await
        .unwrap();
    let hosts = restored.hosts().await.unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(
        restored
            .host(&shredded)
            .await
            .unwrap()
            .record
            .state
            .as_str(),
        "shredded"
    );
}
