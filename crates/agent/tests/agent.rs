//! The host side against the real key authority: keyd's router served
//! in-process over TLS on 127.0.0.1, a real vault on disk.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atrest_agent::{
    AgentError, AuthorityClient, AuthoritySpec, Probe, StateDir, UnlockOptions, announce_reboot,
    enroll, unlock,
};
use atrest_audit::{AuditLog, AuditSigningKey, EntryHash, LogOptions, SqliteStore};
use atrest_core::{Argon2Params, SecretBytes};
use atrest_keyd::{
    Authority, AuthorityOptions, Policy, PolicyRule, PolicyScope, ServerCertificates,
    SqliteStorage, SystemClock, router, serve_tls,
};
use atrest_remote::{BootId, HostId};
use atrest_vault::{CreateOptions, LockedVault, SlotKind, Unlocker, Vault};
use tokio::task::JoinHandle;

type Keyd = Authority<SqliteStorage, SqliteStore, SystemClock>;

/// One authority: its domain object (for admin actions), its certificates
/// and the server task.
struct TestAuthority {
    authority: Keyd,
    certificates: Arc<ServerCertificates>,
    audit_seed: [u8; 32],
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestAuthority {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Each authority its own audit log and key, as `keyd init` makes:
        // a host keeps one head per audit key.
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let audit_seed = [NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 32];
        let audit = AuditLog::open(
            SqliteStore::open(&dir.path().join("audit.db"))
                .await
                .unwrap(),
            AuditSigningKey::from_seed(&audit_seed),
            // A checkpoint with every entry, so each grant carries one.
            LogOptions {
                checkpoint_every: 1,
                ..LogOptions::default()
            },
            SystemClock,
        )
        .await
        .unwrap();
        let keys = atrest_keyd::secrets_key::StoreKeys::open(dir.path()).unwrap();
        let storage = SqliteStorage::open(&dir.path().join("keyd.db"), keys)
            .await
            .unwrap();
        let authority = Authority::open(storage, audit, SystemClock, AuthorityOptions::default())
            .await
            .unwrap();
        let certificates = Arc::new(ServerCertificates::generate(&["127.0.0.1".into()]).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut this = Self {
            authority,
            certificates,
            audit_seed,
            addr,
            server: None,
            _dir: dir,
        };
        this.serve(listener);
        this
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let certificates = self.certificates.clone();
        let app = router(self.authority.clone(), None);
        self.server = Some(tokio::spawn(async move {
            let _ = serve_tls(listener, &certificates, app).await;
        }));
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn fingerprint(&self) -> [u8; 32] {
        atrest_core::sha256(self.certificates.ca.as_ref())
    }

    async fn token(&self) -> String {
        self.authority
            .create_token("web", 600, "test")
            .await
            .unwrap()
            .token
    }

    fn audit_key(&self) -> [u8; 32] {
        AuditSigningKey::from_seed(&self.audit_seed)
            .public_key()
            .to_bytes()
    }

    async fn spec(&self) -> AuthoritySpec {
        AuthoritySpec {
            url: self.url(),
            token: Some(self.token().await.into()),
            ca_fingerprint: self.fingerprint(),
            replicas: Vec::new(),
        }
    }

    /// Stops serving and frees the port.
    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        // The accept loop notices the server is gone at its next
        // connection, then drops the listening socket.
        let _ = tokio::net::TcpStream::connect(self.addr).await;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the old listener did not go away");
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

struct Host {
    state: StateDir,
    root: std::path::PathBuf,
    master: [u8; 32],
    _dir: tempfile::TempDir,
}

fn passphrase() -> Unlocker {
    Unlocker::Passphrase(SecretBytes::new(b"admin passphrase".to_vec()))
}

fn new_host() -> (Host, Vault) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data.enc");
    let options = CreateOptions {
        argon2: Argon2Params::INSECURE_FAST,
        recovery_key: false,
        ..CreateOptions::default()
    };
    let (vault, _) = Vault::create(&root, options, &passphrase(), "admin").unwrap();
    let host = Host {
        state: StateDir::new(dir.path().join("state")),
        root,
        master: *vault.master_key().expose(),
        _dir: dir,
    };
    (host, vault)
}

fn options(timeout_secs: u64) -> UnlockOptions {
    UnlockOptions {
        retries: 50,
        timeout: Duration::from_secs(timeout_secs),
        backoff: Duration::from_millis(100),
        poll_wait: Duration::from_secs(1),
        boot_id: Some(BootId::new("6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10").unwrap()),
    }
}

impl Host {
    async fn unlock(&self, options: &UnlockOptions) -> Result<atrest_agent::Unlocked, AgentError> {
        unlock(LockedVault::open(&self.root).unwrap(), &self.state, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_then_unlock_with_the_authority_alone() {
    let keyd = TestAuthority::start().await;
    let (host, mut vault) = new_host();
    let enrolled = enroll(
        &mut vault,
        &host.state,
        &[keyd.spec().await],
        None,
        "web-1",
        "keys",
    )
    .await
    .unwrap();
    assert_eq!(enrolled.threshold, None);
    assert_eq!(enrolled.authorities[0].1, "web-1");
    let slot = vault
        .config()
        .keyslots
        .iter()
        .find(|s| s.id == enrolled.slot_id)
        .unwrap();
    let SlotKind::Remote(remote) = &slot.kind else {
        panic!("not a remote slot");
    };
    assert_eq!(remote.authority.url, keyd.url());
    drop(vault);

    let unlocked = host.unlock(&options(10)).await.unwrap();
    assert_eq!(unlocked.vault.master_key().expose(), &host.master);
    assert_eq!(unlocked.slot_id, enrolled.slot_id);
    // The newest checkpoint is kept, and only moves forward.
    let first = host
        .state
        .kept_checkpoint(&keyd.audit_key())
        .unwrap()
        .unwrap();
    host.unlock(&options(10)).await.unwrap();
    let second = host
        .state
        .kept_checkpoint(&keyd.audit_key())
        .unwrap()
        .unwrap();
    assert!(second.seq > first.seq);

    // A planned reboot is announced; the next boot id then opens at once.
    let announced = announce_reboot(
        LockedVault::open(&host.root).unwrap().config(),
        &host.state,
        &options(10),
    )
    .await
    .unwrap();
    assert_eq!(announced.len(), 1);
    assert!(announced[0].result.as_ref().unwrap().valid_until > 0);
    let mut next_boot = options(10);
    next_boot.boot_id = Some(BootId::new("00000000-1111-2222-3333-444444444444").unwrap());
    host.unlock(&next_boot).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fingerprint_is_refused() {
    let keyd = TestAuthority::start().await;
    let other = ServerCertificates::generate(&["127.0.0.1".into()]).unwrap();
    let (host, mut vault) = new_host();
    let mut spec = keyd.spec().await;
    spec.ca_fingerprint = atrest_core::sha256(other.ca.as_ref());
    let err = enroll(&mut vault, &host.state, &[spec], None, "web-1", "")
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::UntrustedServer { .. }), "{err:?}");
    assert!(err.to_string().contains("pinned CA"), "{err}");
    // The token was not spent on an impostor: the right pin still enrolls.
    let spec = keyd.spec().await;
    enroll(&mut vault, &host.state, &[spec], None, "web-1", "")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_retries_until_the_authority_is_back() {
    let mut keyd = TestAuthority::start().await;
    let (host, mut vault) = new_host();
    enroll(
        &mut vault,
        &host.state,
        &[keyd.spec().await],
        None,
        "web-1",
        "",
    )
    .await
    .unwrap();
    keyd.stop().await;

    // Down, with few retries: a clear error naming the URL.
    let mut few = options(2);
    few.retries = 2;
    let err = host.unlock(&few).await.unwrap_err();
    match &err {
        AgentError::Unreachable { url, attempts, .. } => {
            assert_eq!(url, &keyd.url());
            assert_eq!(*attempts, 3);
        }
        other => panic!("{other:?}"),
    }

    // Down, then back within the timeout: the retries get through.
    let state = host.state.clone();
    let root = host.root.clone();
    let waiting = tokio::spawn(async move {
        unlock(LockedVault::open(&root).unwrap(), &state, &options(20)).await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    keyd.restart().await;
    let unlocked = waiting.await.unwrap().unwrap();
    assert_eq!(unlocked.vault.master_key().expose(), &host.master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_opens_with_one_authority_down_not_with_two() {
    let mut authorities = vec![
        TestAuthority::start().await,
        TestAuthority::start().await,
        TestAuthority::start().await,
    ];
    let (host, mut vault) = new_host();
    let mut specs = Vec::new();
    for a in &authorities {
        specs.push(a.spec().await);
    }
    let enrolled = enroll(&mut vault, &host.state, &specs, Some(2), "web-1", "quorum")
        .await
        .unwrap();
    assert_eq!(enrolled.threshold, Some(2));
    drop(vault);
    host.unlock(&options(10)).await.unwrap();

    authorities[1].stop().await;
    let unlocked = host.unlock(&options(10)).await.unwrap();
    assert_eq!(unlocked.vault.master_key().expose(), &host.master);

    authorities[2].stop().await;
    // Few retries so the two down authorities give up fast; a timeout that
    // leaves the live one time for a real unlock on a loaded machine.
    let mut short = options(10);
    short.retries = 3;
    let err = host.unlock(&short).await.unwrap_err();
    match &err {
        AgentError::NotEnough {
            needed: 2,
            got: 1,
            errors,
        } => assert_eq!(errors.len(), 2, "{errors:?}"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&authorities[2].url()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_audit_log_fails_closed() {
    let keyd = TestAuthority::start().await;
    let (host, mut vault) = new_host();
    enroll(
        &mut vault,
        &host.state,
        &[keyd.spec().await],
        None,
        "web-1",
        "",
    )
    .await
    .unwrap();
    host.unlock(&options(10)).await.unwrap();
    // The grant carried its entry and proofs; the host keeps the head, and
    // the next grant proves the log grew from it.
    let first = host.state.kept_head(&keyd.audit_key()).unwrap().unwrap();
    host.unlock(&options(10)).await.unwrap();
    let second = host.state.kept_head(&keyd.audit_key()).unwrap().unwrap();
    assert!(second.tree_size > first.tree_size, "{first:?} {second:?}");
    // The host once saw the log much further along than the authority now
    // answers: its log was restored from an old backup.
    let kept = host
        .state
        .kept_checkpoint(&keyd.audit_key())
        .unwrap()
        .unwrap();
    let later = AuditSigningKey::from_seed(&keyd.audit_seed).sign_checkpoint(
        kept.seq + 1000,
        EntryHash([1; 32]),
        kept.timestamp_ms + 1,
    );
    host.state
        .keep_checkpoint(&keyd.audit_key(), &later)
        .unwrap();
    let err = host.unlock(&options(10)).await.unwrap_err();
    assert!(matches!(err, AgentError::AuditAlarm { .. }), "{err:?}");
    assert!(err.to_string().contains("ROLLBACK"), "{err}");
    // Kept: the next unlock is refused before anything is sent.
    assert_eq!(host.state.alarms().unwrap().len(), 1);
    let again = host.unlock(&options(10)).await.unwrap_err();
    assert!(matches!(again, AgentError::AuditAlarm { .. }), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_shredded_and_held_requests_say_so() {
    let keyd = TestAuthority::start().await;
    let (host, mut vault) = new_host();
    enroll(
        &mut vault,
        &host.state,
        &[keyd.spec().await],
        None,
        "web-1",
        "",
    )
    .await
    .unwrap();
    let id = HostId::new("web-1").unwrap();

    // Held for approval until the timeout.
    keyd.authority
        .set_policy(
            &PolicyScope::Host(id.clone()),
            PolicyRule {
                policy: Policy::Approve,
                unannounced_reboot: Policy::Approve,
                rollback: Policy::Approve,
            },
            "test",
        )
        .await
        .unwrap();
    let err = host.unlock(&options(3)).await.unwrap_err();
    assert!(matches!(err, AgentError::StillPending { .. }), "{err:?}");

    // Approved while the host waits.
    let earlier: Vec<String> = keyd
        .authority
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    let state = host.state.clone();
    let root = host.root.clone();
    let waiting = tokio::spawn(async move {
        unlock(LockedVault::open(&root).unwrap(), &state, &options(20)).await
    });
    let request = loop {
        if let Some(p) = keyd
            .authority
            .pending()
            .await
            .unwrap()
            .into_iter()
            .find(|p| {
                p.state == atrest_keyd::PendingState::Pending
                    && p.host_id == id
                    && !earlier.contains(&p.id)
            })
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    keyd.authority
        .decide(&request.id, true, "alice")
        .await
        .unwrap();
    waiting.await.unwrap().unwrap();

    // Denied by policy.
    keyd.authority
        .set_policy(
            &PolicyScope::Host(id.clone()),
            PolicyRule {
                policy: Policy::Deny,
                unannounced_reboot: Policy::Deny,
                rollback: Policy::Approve,
            },
            "test",
        )
        .await
        .unwrap();
    let err = host.unlock(&options(5)).await.unwrap_err();
    assert!(matches!(err, AgentError::Denied { .. }), "{err:?}");
    keyd.authority
        .set_policy(
            &PolicyScope::Host(id.clone()),
            PolicyRule::default(),
            "test",
        )
        .await
        .unwrap();

    keyd.authority.revoke(&id, "test").await.unwrap();
    let err = host.unlock(&options(5)).await.unwrap_err();
    assert!(matches!(err, AgentError::Revoked { .. }), "{err:?}");
    keyd.authority.shred(&id, "test").await.unwrap();
    let err = host.unlock(&options(5)).await.unwrap_err();
    assert!(matches!(err, AgentError::Shredded { .. }), "{err:?}");
    // The passphrase slot still opens the vault.
    LockedVault::open(&host.root)
        .unwrap()
        .unlock(&passphrase())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_the_slot_is_rebound() {
    let keyd = TestAuthority::start().await;
    let (host, mut vault) = new_host();
    let enrolled = enroll(
        &mut vault,
        &host.state,
        &[keyd.spec().await],
        None,
        "web-1",
        "",
    )
    .await
    .unwrap();
    let binding = |root: &std::path::Path| {
        let locked = LockedVault::open(root).unwrap();
        let slot = locked
            .config()
            .keyslots
            .iter()
            .find(|s| s.id == enrolled.slot_id)
            .unwrap()
            .clone();
        match slot.kind {
            SlotKind::Remote(r) => r.binding,
            _ => panic!("not remote"),
        }
    };
    let before = binding(&host.root);
    keyd.authority
        .rotate(&HostId::new("web-1").unwrap(), "test")
        .await
        .unwrap();
    let unlocked = host.unlock(&options(10)).await.unwrap();
    assert_eq!(unlocked.rebound, vec![keyd.url()]);
    assert!(unlocked.warnings.is_empty());
    drop(unlocked);
    let after = binding(&host.root);
    assert_ne!(before.authority_key, after.authority_key);
    // And the new binding opens it.
    let again = host.unlock(&options(10)).await.unwrap();
    assert!(again.rebound.is_empty());
    assert_eq!(again.vault.master_key().expose(), &host.master);
}

/// `atrest doctor`'s probe: answered with the pinned CA, answered by a
/// server with another CA, nothing listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_tells_reachable_from_another_ca_from_down() {
    let mut keyd = TestAuthority::start().await;
    let timeout = Duration::from_secs(5);
    let pinned = AuthorityClient::new(&keyd.url(), keyd.fingerprint()).unwrap();
    assert_eq!(
        pinned.probe(timeout).await,
        Probe::Reachable {
            audit_key: Some(
                AuditSigningKey::from_seed(&keyd.audit_seed)
                    .public_key()
                    .to_bytes()
            )
        },
        "it answers with the CA pinned and names its audit key"
    );

    let other = ServerCertificates::generate(&["127.0.0.1".into()]).unwrap();
    let wrong = AuthorityClient::new(&keyd.url(), atrest_core::sha256(other.ca.as_ref())).unwrap();
    match wrong.probe(timeout).await {
        Probe::CaChanged { presented } => {
            assert_eq!(presented.last(), Some(&keyd.fingerprint()), "{presented:?}");
        }
        other => panic!("{other:?}"),
    }

    keyd.stop().await;
    // A new client, as each `atrest doctor` run is: the first one's pooled
    // connection outlives the listener.
    let fresh = AuthorityClient::new(&keyd.url(), keyd.fingerprint()).unwrap();
    let probe = fresh.probe(timeout).await;
    assert!(
        matches!(probe, Probe::Unreachable { .. }),
        "nothing listens: {probe:?}"
    );
}

/// Each boot's first release is kept with the authority's word for it: a
/// first boot, an unannounced reboot a person approved, a planned one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_how_each_boot_was_accounted_for() {
    let keyd = TestAuthority::start().await;
    let (host, mut vault) = new_host();
    enroll(
        &mut vault,
        &host.state,
        &[keyd.spec().await],
        None,
        "web-1",
        "",
    )
    .await
    .unwrap();
    drop(vault);
    let boot = |id: &str| {
        let mut o = options(20);
        o.boot_id = Some(BootId::new(id).unwrap());
        o
    };
    host.unlock(&boot("b1")).await.unwrap();
    host.unlock(&boot("b1")).await.unwrap();
    let kept = host.state.released_boots().unwrap();
    assert_eq!(kept.len(), 1, "the same boot once: {kept:?}");
    assert_eq!(
        (kept[0].boot_id.as_str(), kept[0].boot.as_str()),
        ("b1", "first")
    );
    assert_eq!(kept[0].url, keyd.url());
    assert!(!kept[0].is_unaccounted());

    // Boot b2 nobody announced: held (the default policy) until alice
    // approves.
    let state = host.state.clone();
    let root = host.root.clone();
    let b2 = boot("b2");
    let waiting =
        tokio::spawn(async move { unlock(LockedVault::open(&root).unwrap(), &state, &b2).await });
    let request = loop {
        if let Some(p) = keyd.authority.pending().await.unwrap().into_iter().next() {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    keyd.authority
        .decide(&request.id, true, "alice")
        .await
        .unwrap();
    waiting.await.unwrap().unwrap();
    let kept = host.state.released_boots().unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[1].boot_id, "b2");
    assert_eq!(kept[1].boot, "unannounced");
    assert_eq!(kept[1].approved_by.as_deref(), Some("alice"));
    assert!(kept[1].is_unaccounted());

    // Announced, then b3: planned.
    announce_reboot(
        LockedVault::open(&host.root).unwrap().config(),
        &host.state,
        &boot("b2"),
    )
    .await
    .unwrap();
    host.unlock(&boot("b3")).await.unwrap();
    let kept = host.state.released_boots().unwrap();
    assert_eq!(
        kept.iter()
            .map(|b| (b.boot_id.as_str(), b.boot.as_str()))
            .collect::<Vec<_>>(),
        [("b1", "first"), ("b2", "unannounced"), ("b3", "planned")]
    );
}
