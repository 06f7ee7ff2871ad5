//! `atrest keyd` as operators run it: the real binary serving HTTPS on
//! 127.0.0.1, administered through the CLI, with hosts speaking the wire
//! protocol. Also the faults the issue names: SIGKILL under load, and an
//! audit store on a full disk.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use atrest_remote::{
    BootId, HostId, HostIdentity, RemoteBinding, RequestNonce, UnblindingState, UnlockRequest,
};
use serde_json::{Value, json};

use crate::common::{atrest, ok, run};

/// A keyd data directory and its serving process (killed on drop).
pub struct Keyd {
    pub data: PathBuf,
    pub base: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Keyd {
    /// `keyd init` in a fresh temporary directory, then `serve`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("keyd");
        let mut keyd = Self::init_at(&data, &[]);
        keyd._dir = Some(dir);
        keyd
    }

    pub fn init_at(data: &Path, extra: &[&str]) -> Self {
        Self::init_listening(data, "127.0.0.1:0", extra)
    }

    /// `keyd init` listening on `listen`, then `serve`.
    pub fn init_listening(data: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"keyd", &"init", &"--data-dir", &data, &"--listen", &listen];
        for e in extra {
            args.push(e);
        }
        let out = ok(&args);
        let fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        let mut keyd = Self {
            data: data.to_owned(),
            base: String::new(),
            child: None,
            _dir: None,
        };
        keyd.serve();
        keyd
    }

    /// Starts `keyd serve` and waits for its "listening on" line.
    pub fn serve(&mut self) {
        let mut child = atrest()
            .args(["keyd", "serve", "--data-dir"])
            .arg(&self.data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("keyd serve said {line:?}"))
            .to_owned();
        self.base = address;
        // Admin commands find the server through keyd.json's listen
        // address; with port 0 the real port is only known now.
        let settings_path = self.data.join("keyd.json");
        let mut settings: Value =
            serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
        settings["listen"] = self.base.trim_start_matches("https://").into();
        std::fs::write(&settings_path, settings.to_string()).unwrap();
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "keyd exited with {status}");
        }
    }

    /// Runs `atrest keyd ARGS --data-dir DATA`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = atrest();
        cmd.arg("keyd")
            .args(args)
            .env("ATREST_KEYD_DIR", &self.data);
        cmd.output().unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "atrest keyd {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn token(&self, group: &str) -> String {
        self.cli_ok(&["token", "create", "--group", group])
            .trim()
            .to_owned()
    }

    pub fn client(&self) -> HostClient {
        HostClient::new(&self.base, &self.data.join("tls/ca.pem"))
    }
}

impl Drop for Keyd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A host speaking the wire protocol (what `atrest unlock` does inside).
#[derive(Clone)]
pub struct HostClient {
    pub base: String,
    /// Trusts only the keyd's CA.
    pub http: reqwest::Client,
}

pub struct TestHost {
    pub identity: Arc<HostIdentity>,
    pub id: HostId,
    pub binding: RemoteBinding,
    pub key: atrest_core::SecretKey,
    /// The boot ticket of the last grant, as a host keeps it in /run.
    pub ticket: Arc<std::sync::Mutex<Option<Value>>>,
}

impl HostClient {
    pub fn new(base: &str, ca: &Path) -> Self {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base: base.to_owned(),
            http,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn enroll(&self, token: &str, name: &str) -> Result<TestHost, (u16, Value)> {
        let identity = HostIdentity::generate();
        let (status, body) = self
            .post(
                "/v1/enroll",
                &json!({
                    "token": token,
                    "host_name": name,
                    "public_key": identity.public_key(),
                }),
            )
            .await
            .map_err(|e| (0, json!(e.to_string())))?;
        if status != 200 {
            return Err((status, body));
        }
        let exchange: atrest_remote::ExchangePublicKey =
            serde_json::from_value(body["exchange_key"].clone()).unwrap();
        let (binding, key) = atrest_remote::enroll(&exchange);
        Ok(TestHost {
            identity: Arc::new(identity),
            id: HostId::new(name).unwrap(),
            binding,
            key,
            ticket: Arc::default(),
        })
    }

    /// One unlock request; the status, body and the state to unblind.
    pub async fn unlock(
        &self,
        host: &TestHost,
        boot: &str,
    ) -> Result<(u16, Value, UnblindingState), reqwest::Error> {
        let (blinded, state) = host.binding.blind();
        let signed = host.identity.sign(UnlockRequest {
            host_id: host.id.clone(),
            vault_id: [1; 16],
            keyslot: 1,
            key_id: host.binding.key_id(),
            blinded,
            nonce: RequestNonce::random(),
            timestamp: now(),
            boot_id: BootId::new(boot).unwrap(),
            generation: None,
        });
        let mut body = serde_json::to_value(&signed).unwrap();
        if let Some(ticket) = host.ticket.lock().unwrap().clone() {
            body["boot_ticket"] = ticket;
        }
        let (status, body) = self.post("/v1/unlock", &body).await?;
        if status == 200 && body["boot_ticket"].is_string() {
            *host.ticket.lock().unwrap() = Some(body["boot_ticket"].clone());
        }
        Ok((status, body, state))
    }

    /// Unlocks and checks the answer unblinds to the host's key.
    pub async fn unlock_ok(&self, host: &TestHost, boot: &str) {
        let (status, body, state) = self.unlock(host, boot).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let response: atrest_remote::BlindedResponse =
            serde_json::from_value(body["response"].clone()).unwrap();
        assert_eq!(
            state.unblind(&response).unwrap().expose(),
            host.key.expose()
        );
    }
}

#[allow(clippy::disallowed_methods, reason = "this is the tests' clock")]
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const BOOT: &str = "5d1f3a52-9e1c-4c1e-8f57-0c0e3b1b2a11";

#[test]
fn operators_administer_keyd_from_the_cli() {
    let keyd = Keyd::start();
    let rt = runtime();
    let client = keyd.client();
    assert!(
        keyd.cli_ok(&["host", "list"])
            .contains("no hosts are enrolled")
    );

    let host = rt
        .block_on(client.enroll(&keyd.token("web"), "web-1"))
        .unwrap();
    rt.block_on(client.unlock_ok(&host, BOOT));
    let hosts: Value = serde_json::from_str(&keyd.cli_ok(&["host", "list", "--json"])).unwrap();
    assert_eq!(hosts[0]["id"], "web-1");
    assert_eq!(hosts[0]["group"], "web");
    assert_eq!(hosts[0]["last_boot_id"], BOOT);

    // A held request, approved from the CLI.
    keyd.cli_ok(&["policy", "set", "--group", "web", "approve"]);
    let (status, body, state) = rt.block_on(client.unlock(&host, BOOT)).unwrap();
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap().to_owned();
    let poll_token = body["poll_token"].as_str().unwrap().to_owned();
    let listed = keyd.cli_ok(&["requests"]);
    assert!(listed.contains(&id) && listed.contains("web-1"), "{listed}");
    keyd.cli_ok(&["approve", &id, "--as", "alice"]);
    // Whoever read the id (the log, the list) cannot collect the grant.
    let stranger = rt.block_on(async {
        client
            .http
            .get(format!("{}/v1/requests/{id}?wait=0", client.base))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(stranger.status().as_u16(), 401);
    let reply = rt.block_on(async {
        client
            .http
            .get(format!("{}/v1/requests/{id}?wait=5", client.base))
            .header("x-atrest-poll-token", &poll_token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    assert_eq!(reply["status"], "granted", "{reply}");
    let response: atrest_remote::BlindedResponse =
        serde_json::from_value(reply["response"].clone()).unwrap();
    assert_eq!(
        state.unblind(&response).unwrap().expose(),
        host.key.expose()
    );
    keyd.cli_ok(&["policy", "set", "--group", "web", "auto"]);

    // Revoke refuses; reinstate restores; shred needs --yes and is final.
    keyd.cli_ok(&["host", "revoke", "web-1"]);
    let (status, body, _) = rt.block_on(client.unlock(&host, BOOT)).unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("revoked")));
    keyd.cli_ok(&["host", "reinstate", "web-1"]);
    rt.block_on(client.unlock_ok(&host, BOOT));
    let refused = keyd.cli(&["host", "shred", "web-1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    keyd.cli_ok(&["host", "shred", "web-1", "--yes"]);
    let (status, body, _) = rt.block_on(client.unlock(&host, BOOT)).unwrap();
    assert_eq!((status, body["error"].as_str()), (410, Some("shredded")));
    let again = keyd.cli(&["host", "reinstate", "web-1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("shredded"));

    // Errors name what to do and exit non-zero.
    let unknown = keyd.cli(&["host", "show", "nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_host"));

    // The log has every step, and verifies.
    let tail = keyd.cli_ok(&["audit", "tail", "-n", "1000", "--json"]);
    let kinds: Vec<String> = tail
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in [
        "token",
        "enrollment",
        "decision",
        "approval",
        "revoke",
        "shred",
        "policy_change",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} entry in {kinds:?}"
        );
    }
    assert!(keyd.cli_ok(&["audit", "verify"]).contains("intact"));

    // A second keyd on the same data directory is refused.
    let second = run(&[&"keyd", &"serve", &"--data-dir", &keyd.data]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another keyd"));
}

#[test]
fn admin_commands_say_when_keyd_is_down() {
    let mut keyd = Keyd::start();
    keyd.stop();
    let out = keyd.cli(&["host", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach keyd") && err.contains("keyd serve"),
        "{err}"
    );
    let out = run(&[
        &"keyd",
        &"host",
        &"list",
        &"--data-dir",
        &"/nonexistent/keyd",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("atrest keyd init"));
}

/// Edits the audit database as an attacker with file access would
/// (dropping the append-only triggers first).
fn tamper(db: &Path, sql: &str) {
    let script = format!(
        "import sqlite3,sys\n\
         c=sqlite3.connect(sys.argv[1])\n\
         c.executescript('''DROP TRIGGER IF EXISTS audit_entries_no_update;\n\
         DROP TRIGGER IF EXISTS audit_entries_no_delete;\n{sql}''')\n\
         c.commit()\n"
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .status()
        .expect("python3 (with its sqlite3 module) edits the audit database in this test");
    assert!(status.success());
}

#[test]
fn audit_verify_catches_an_edited_deleted_or_reordered_entry() {
    let mut keyd = Keyd::start();
    let rt = runtime();
    let client = keyd.client();
    let host = rt
        .block_on(client.enroll(&keyd.token("web"), "web-1"))
        .unwrap();
    for _ in 0..3 {
        rt.block_on(client.unlock_ok(&host, BOOT));
    }
    keyd.stop();
    assert!(keyd.cli_ok(&["audit", "verify"]).contains("intact"));
    let db = keyd.data.join("audit.db");
    let pristine = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        for suffix in ["", "-wal", "-shm"] {
            let from = keyd.data.join(format!("audit.db{suffix}"));
            if from.exists() {
                std::fs::copy(&from, to.join(format!("audit.db{suffix}"))).unwrap();
            }
        }
    };
    copy(pristine.path());
    let restore = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(keyd.data.join(format!("audit.db{suffix}")));
            let from = pristine.path().join(format!("audit.db{suffix}"));
            if from.exists() {
                std::fs::copy(&from, keyd.data.join(format!("audit.db{suffix}"))).unwrap();
            }
        }
    };
    let cases = [
        (
            "edited",
            "UPDATE audit_entries SET details = replace(details, 'released', 'refused') \
             WHERE details LIKE '%released%';",
        ),
        ("deleted", "DELETE FROM audit_entries WHERE seq = 4;"),
        (
            "reordered",
            "UPDATE audit_entries SET seq = 1000 WHERE seq = 5; \
             UPDATE audit_entries SET seq = 5 WHERE seq = 6; \
             UPDATE audit_entries SET seq = 6 WHERE seq = 1000;",
        ),
    ];
    for (what, sql) in cases {
        tamper(&db, sql);
        let out = keyd.cli(&["audit", "verify"]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not verify"),
            "{what}"
        );
        restore();
        assert!(keyd.cli_ok(&["audit", "verify"]).contains("intact"));
    }
}

/// What a load client saw acknowledged before the kill.
#[derive(Default)]
struct Acknowledged {
    enrolled: Vec<String>,
    revoked: Vec<String>,
    shredded: Vec<String>,
    released: usize,
    /// Answered releases per host, where the load counts them.
    released_by_host: std::collections::HashMap<String, usize>,
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let mut keyd = Keyd::start();
    let rt = runtime();
    let client = keyd.client();
    let tokens: Vec<String> = (0..60).map(|_| keyd.token("load")).collect();
    let admin =
        atrest_keyd::AdminClient::for_data_dir(&atrest_keyd::DataDir::open(&keyd.data).unwrap())
            .unwrap();
    let admin = Arc::new(admin);
    let acked = Arc::new(std::sync::Mutex::new(Acknowledged::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Workers: enroll, unlock, and revoke or shred every third host, until
    // the server dies under them.
    let workers: Vec<_> = tokens
        .chunks(15)
        .enumerate()
        .map(|(w, chunk)| {
            let (client, admin, acked, stop) =
                (client.clone(), admin.clone(), acked.clone(), stop.clone());
            let chunk = chunk.to_vec();
            rt.spawn(async move {
                for (i, token) in chunk.iter().enumerate() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let name = format!("load-{w}-{i}");
                    let Ok(host) = client.enroll(token, &name).await else {
                        return;
                    };
                    acked.lock().unwrap().enrolled.push(name.clone());
                    for _ in 0..5 {
                        match client.unlock(&host, BOOT).await {
                            Ok((200, _, _)) => acked.lock().unwrap().released += 1,
                            _ => return,
                        }
                    }
                    let action = match i % 3 {
                        0 => "revoke",
                        1 => "shred",
                        _ => continue,
                    };
                    let done: Result<Value, _> = admin
                        .post(&format!("/v1/admin/hosts/{name}/{action}"), &json!({}))
                        .await;
                    if done.is_err() {
                        return;
                    }
                    let mut a = acked.lock().unwrap();
                    if action == "revoke" {
                        a.revoked.push(name);
                    } else {
                        a.shredded.push(name);
                    }
                }
            })
        })
        .collect();
    // Kill once a good amount of work was acknowledged.
    rt.block_on(async {
        for _ in 0..600 {
            if acked.lock().unwrap().enrolled.len() >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    keyd.kill();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        let _ = rt.block_on(w);
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.enrolled.len() >= 20,
        "the load did too little before the kill"
    );

    keyd.serve();
    assert_nothing_acknowledged_was_lost(&keyd, &acked);
}

/// After a crash: every host whose enrollment, revoke or shred was
/// answered is there in that state, each with its audit entries, every
/// answered release is in the log, and the chain verifies.
fn assert_nothing_acknowledged_was_lost(keyd: &Keyd, acked: &Acknowledged) {
    assert!(keyd.cli_ok(&["audit", "verify"]).contains("intact"));
    let hosts: Vec<Value> =
        serde_json::from_str(&keyd.cli_ok(&["host", "list", "--json"])).unwrap();
    let state_of = |name: &str| {
        hosts
            .iter()
            .find(|h| h["id"] == name)
            .map(|h| h["state"].as_str().unwrap().to_owned())
    };
    for name in &acked.enrolled {
        assert!(state_of(name).is_some(), "enrolled host {name} was lost");
    }
    for name in &acked.revoked {
        assert_eq!(state_of(name).as_deref(), Some("revoked"), "{name}");
    }
    for name in &acked.shredded {
        assert_eq!(state_of(name).as_deref(), Some("shredded"), "{name}");
    }
    let tail = keyd.cli_ok(&["audit", "tail", "-n", "100000", "--json"]);
    let entries: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str, subject: &str| {
        entries
            .iter()
            .filter(|e| e["kind"] == kind && e["subject"] == subject)
            .count()
    };
    for name in &acked.enrolled {
        assert_eq!(count("enrollment", name), 1, "{name}");
    }
    for name in &acked.revoked {
        assert!(count("revoke", name) >= 1, "{name}");
    }
    for name in &acked.shredded {
        assert!(count("shred", name) >= 1, "{name}");
    }
    let released = entries
        .iter()
        .filter(|e| e["details"]["outcome"] == "released")
        .count();
    assert!(
        released >= acked.released,
        "{} releases acknowledged, {released} in the log",
        acked.released
    );
    // Per host too: a release logged but never answered (a retry's twin)
    // must not hide an answered one that was lost.
    for (host, answered) in &acked.released_by_host {
        let logged = entries
            .iter()
            .filter(|e| e["details"]["outcome"] == "released" && e["subject"] == host.as_str())
            .count();
        assert!(
            logged >= *answered,
            "{host}: {answered} releases answered, {logged} in the log"
        );
    }
}

#[test]
fn a_full_disk_refuses_releases_until_space_returns() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts a small tmpfs for the audit store: run it as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());

    let data = small.join("keyd");
    let keyd = Keyd::init_at(&data, &[]);
    let rt = runtime();
    let client = keyd.client();
    let host = rt
        .block_on(client.enroll(&keyd.token("web"), "web-1"))
        .unwrap();
    rt.block_on(client.unlock_ok(&host, BOOT));

    // Fill the file system.
    let filler = small.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    // Every answer now is either a release whose entry still fit (SQLite
    // may reuse pages a failed transaction freed) or the refusal; within a
    // few requests the log needs new space and releases are refused. Every
    // release must be in the log (checked below).
    let mut refused = 0;
    let mut released = 1;
    for _ in 0..200 {
        let (status, body, _) = rt.block_on(client.unlock(&host, BOOT)).unwrap();
        match status {
            200 => released += 1,
            503 => {
                assert_eq!(body["error"], "audit_unavailable", "{body}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("nothing is released")
                );
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert_eq!(refused, 5, "a full disk never refused a release");

    std::fs::remove_file(&filler).unwrap();
    rt.block_on(client.unlock_ok(&host, BOOT));
    released += 1;
    let tail = keyd.cli_ok(&["audit", "tail", "-n", "100000", "--json"]);
    let in_log = tail
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["details"]["outcome"] == "released")
        .count();
    // At least: a commit that failed after reaching the disk is in the log
    // although its request was refused.
    assert!(
        in_log >= released,
        "{released} releases answered, {in_log} in the log"
    );
    drop(keyd);
    let out = run(&[&"keyd", &"audit", &"verify", &"--data-dir", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies `files` and the CA and certificate (`tls/`) of a data directory.
fn copy_data_dir(data: &Path, at: &Path, files: &[&str]) {
    std::fs::create_dir_all(at.join("tls")).unwrap();
    for file in files {
        std::fs::copy(data.join(file), at.join(file)).unwrap();
    }
    for entry in std::fs::read_dir(data.join("tls")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), at.join("tls").join(entry.file_name())).unwrap();
    }
}

/// A copy of a keyd data directory for another replica: its keys, CA and
/// settings, listening on a port of its own.
fn replica_of(data: &Path, at: &Path) -> Keyd {
    copy_data_dir(
        data,
        at,
        &[
            "keyd.json",
            "audit.key",
            "records.key",
            "secrets.key",
            "admin.token",
        ],
    );
    let settings_path = at.join("keyd.json");
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
    settings["listen"] = "127.0.0.1:0".into();
    std::fs::write(&settings_path, settings.to_string()).unwrap();
    let mut keyd = Keyd {
        data: at.to_owned(),
        base: String::new(),
        child: None,
        _dir: None,
    };
    keyd.serve();
    keyd
}

/// Issue 10: two `keyd serve` processes on one PostgreSQL database are one
/// authority. A revoke through one is refused through the other, a nonce
/// answered by one is a replay at the other, and their one audit chain
/// verifies from either.
#[test]
fn two_replicas_on_postgresql_are_one_authority() {
    let rt = runtime();
    let Some(url) = rt.block_on(atrest_keyd::testing::fresh_postgres()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Keyd::init_at(&dir.path().join("a"), &["--database", url.as_str()]);
    // A replica copied without records.key would wrap scopes under a key of
    // its own: it refuses to start, naming the file.
    let stray = dir.path().join("stray");
    copy_data_dir(
        &a.data,
        &stray,
        &["keyd.json", "audit.key", "secrets.key", "admin.token"],
    );
    let refused = run(&[
        &"keyd",
        &"serve",
        &"--data-dir",
        &stray,
        &"--listen",
        &"127.0.0.1:0",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("records.key"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Nor does one copied without secrets.key (the key host secrets are
    // wrapped under), which is not in the database's backups.
    let keyless = dir.path().join("keyless");
    copy_data_dir(
        &a.data,
        &keyless,
        &["keyd.json", "audit.key", "records.key", "admin.token"],
    );
    let refused = run(&[
        &"keyd",
        &"serve",
        &"--data-dir",
        &keyless,
        &"--listen",
        &"127.0.0.1:0",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("copy secrets.key from a live replica"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut b = replica_of(&a.data, &dir.path().join("b"));
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(b.data.join("keyd.json")).unwrap()).unwrap();
    assert_eq!(settings["database"], url.as_str());
    assert!(!b.data.join("keyd.db").exists() && !a.data.join("audit.db").exists());
    let (via_a, via_b) = (a.client(), b.client());

    // Enrolled through A, unlocked through B.
    let host = rt.block_on(via_a.enroll(&a.token("web"), "web-1")).unwrap();
    rt.block_on(via_b.unlock_ok(&host, BOOT));

    // Revoked through A: B refuses at once; reinstated through B: A answers.
    a.cli_ok(&["host", "revoke", "web-1"]);
    let (status, body, _) = rt.block_on(via_b.unlock(&host, BOOT)).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("revoked")),
        "{body}"
    );
    b.cli_ok(&["host", "reinstate", "web-1"]);
    rt.block_on(via_a.unlock_ok(&host, BOOT));

    // Held through A, listed and approved through B, collected through B;
    // A gives the same answer to a poll (one release in the log).
    a.cli_ok(&["policy", "set", "--group", "web", "approve"]);
    let (status, body, state) = rt.block_on(via_a.unlock(&host, BOOT)).unwrap();
    assert_eq!(status, 202, "{body}");
    let id = body["request_id"].as_str().unwrap().to_owned();
    let poll_token = body["poll_token"].as_str().unwrap().to_owned();
    let listed = b.cli_ok(&["requests"]);
    assert!(listed.contains(&id) && listed.contains("web-1"), "{listed}");
    b.cli_ok(&["approve", &id, "--as", "alice"]);
    let poll = |client: &HostClient| {
        rt.block_on(async {
            client
                .http
                .get(format!("{}/v1/requests/{id}?wait=5", client.base))
                .header("x-atrest-poll-token", &poll_token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let (from_b, from_a) = (poll(&via_b), poll(&via_a));
    assert_eq!(from_b["status"], "granted", "{from_b}");
    assert_eq!(from_a["audit_seq"], from_b["audit_seq"], "{from_a}");
    let response: atrest_remote::BlindedResponse =
        serde_json::from_value(from_b["response"].clone()).unwrap();
    assert_eq!(
        state.unblind(&response).unwrap().expose(),
        host.key.expose()
    );
    let released = b
        .cli_ok(&["audit", "tail", "-n", "1000", "--json"])
        .lines()
        .filter(|l| l.contains(&id) && l.contains("\"released\""))
        .count();
    assert_eq!(released, 1);
    a.cli_ok(&["policy", "set", "--group", "web", "auto"]);

    // A request answered by A, replayed at B.
    let (blinded, _) = host.binding.blind();
    let signed = host.identity.sign(UnlockRequest {
        host_id: host.id.clone(),
        vault_id: [1; 16],
        keyslot: 1,
        key_id: host.binding.key_id(),
        blinded,
        nonce: RequestNonce::random(),
        timestamp: now(),
        boot_id: BootId::new(BOOT).unwrap(),
        generation: None,
    });
    let mut request = serde_json::to_value(&signed).unwrap();
    request["boot_ticket"] = host.ticket.lock().unwrap().clone().unwrap();
    let (status, body) = rt.block_on(via_a.post("/v1/unlock", &request)).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = rt.block_on(via_b.post("/v1/unlock", &request)).unwrap();
    assert_ne!(status, 200, "{body}");
    assert_eq!(body["error"], "replayed_nonce", "{body}");

    // Shredded through B: A refuses for good.
    b.cli_ok(&["host", "shred", "web-1", "--yes"]);
    let (status, body, _) = rt.block_on(via_a.unlock(&host, BOOT)).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("shredded")),
        "{body}"
    );

    // One chain, written by both, verifies from either data directory.
    for keyd in [&a, &b] {
        assert!(keyd.cli_ok(&["audit", "verify"]).contains("intact"));
    }
    let tail = b.cli_ok(&["audit", "tail", "-n", "1000", "--json"]);
    let started = tail
        .lines()
        .filter(|l| l.contains("\"authority\"") && l.contains("started"))
        .count();
    assert_eq!(started, 2, "both replicas log their start: {tail}");

    // A second `init` on the same database would sign with another key.
    let again = run(&[
        &"keyd",
        &"init",
        &"--data-dir",
        &dir.path().join("c"),
        &"--database",
        &url,
    ]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds a key authority"), "{err}");
    assert!(!dir.path().join("c").exists());

    // A replica pointed at an empty database (a typo in its name) refuses
    // to serve rather than start an authority with no hosts or policies.
    let empty = rt.block_on(atrest_keyd::testing::fresh_postgres()).unwrap();
    b.stop();
    let wrong = run(&[
        &"keyd",
        &"serve",
        &"--data-dir",
        &b.data,
        &"--database",
        &empty,
    ]);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("holds no key authority"), "{err}");
}

/// `--database` values that cannot work are refused before anything is
/// written, each with what to do.
#[test]
fn database_urls_that_cannot_work_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("keyd");
    let init = |database: &str| {
        run(&[
            &"keyd",
            &"init",
            &"--data-dir",
            &data,
            &"--database",
            &database,
        ])
    };
    for (database, says) in [
        (
            "mysql://keyd@db/atrest",
            "postgres://USER@HOST:PORT/DATABASE or sqlite:DIR",
        ),
        (
            "postgres://keyd:hunter2@127.0.0.1:1/atrest",
            "give it in PGPASSWORD or ~/.pgpass",
        ),
        (
            "postgres://keyd@127.0.0.1:1/atrest",
            "cannot reach the PostgreSQL database",
        ),
    ] {
        let out = init(database);
        assert!(!out.status.success(), "{database}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{database}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!data.exists(), "{database} left a data directory behind");
    }
}

/// Issue 10, host side: a vault enrolled with `--authority A --replica B`
/// (two `keyd serve` on one PostgreSQL) unlocks through B once A is killed
/// (-9), also when its request was held by A and approved through B, and a
/// definitive refusal from A is final: B is not asked.
#[test]
fn hosts_fail_over_to_a_replica_but_not_past_a_refusal() {
    use crate::common::{FAST_KDF, success};
    use crate::remote::{BOOT_A, BOOT_B, host};

    let rt = runtime();
    let Some(url) = rt.block_on(atrest_keyd::testing::fresh_postgres()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = Keyd::init_at(&dir.path().join("a"), &["--database", url.as_str()]);
    let mut b = replica_of(&a.data, &dir.path().join("b"));
    let (vault, mnt, pass, state) = (
        dir.path().join("data.enc"),
        dir.path().join("mnt"),
        dir.path().join("pass"),
        dir.path().join("host"),
    );
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(&pass, "correct horse\n").unwrap();
    let mut init: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &vault,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    FAST_KDF.iter().for_each(|x| init.push(x));
    ok(&init);
    let token = a.token("web");
    let fingerprint = a.cli_ok(&["fingerprint"]).trim().to_owned();
    let enroll = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = host(
            &state,
            BOOT_A,
            &[
                &"enroll",
                &vault,
                &"--authority",
                &a.base,
                &"--token",
                &token,
                &"--ca-fingerprint",
                &fingerprint,
                &"--host-name",
                &"web-1",
                &"--passphrase-file",
                &pass,
            ],
        );
        for x in extra {
            cmd.arg(x);
        }
        cmd
    };
    // A replica repeating the authority's URL is refused before enrolling.
    let out = enroll(&[&"--replica", &a.base]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listed twice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    success(enroll(&[&"--replica", &b.base]));
    let status = String::from_utf8(ok(&[&"status", &vault]).stdout).unwrap();
    assert!(status.contains(&b.base), "the replica is shown: {status}");

    // Both up: A answers.
    success(host(&state, BOOT_A, &[&"unlock", &vault, &"--mount", &mnt]));
    std::fs::write(mnt.join("note"), b"kept at rest").unwrap();
    ok(&[&"unmount", &mnt]);

    // Held by A for an approver; A dies while the host waits; approved
    // through B, and the host's poll moves on to B, which answers it.
    a.cli_ok(&["policy", "set", "--group", "web", "approve"]);
    let waiting = host(
        &state,
        BOOT_A,
        &[&"unlock", &vault, &"--mount", &mnt, &"--timeout", &"60"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let held = (0..600)
        .find_map(|_| {
            let listed: Value = serde_json::from_str(&b.cli_ok(&["requests", "--json"])).unwrap();
            let id = listed[0]["id"].as_str().map(str::to_owned);
            if id.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            id
        })
        .expect("the host's request was never held");
    a.kill();
    b.cli_ok(&["approve", &held, "--as", "alice"]);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(mnt.join("note")).unwrap(), b"kept at rest");
    ok(&[&"unmount", &mnt]);
    b.cli_ok(&["policy", "set", "--group", "web", "auto"]);

    // A still down: the host (same boot, so no approval) moves on to B
    // after A's retries.
    success(host(
        &state,
        BOOT_A,
        &[
            &"unlock",
            &vault,
            &"--mount",
            &mnt,
            &"--retries",
            &"1",
            &"--timeout",
            &"30",
        ],
    ));
    assert_eq!(std::fs::read(mnt.join("note")).unwrap(), b"kept at rest");
    ok(&[&"unmount", &mnt]);

    // A planned reboot is announced through B too: the next boot opens
    // (through B) without waiting for approval.
    success(host(
        &state,
        BOOT_A,
        &[&"reboot", &"--planned", &vault, &"--retries", &"1"],
    ));
    success(host(
        &state,
        BOOT_B,
        &[
            &"unlock",
            &vault,
            &"--mount",
            &mnt,
            &"--retries",
            &"1",
            &"--timeout",
            &"30",
        ],
    ));
    ok(&[&"unmount", &mnt]);

    // Revoked (through B); A back, B killed. A's refusal is final: the
    // host says "revoked", not that it cannot reach B.
    b.cli_ok(&["host", "revoke", "web-1"]);
    a.serve();
    b.kill();
    let out = host(
        &state,
        BOOT_B,
        &[
            &"unlock",
            &vault,
            &"--mount",
            &mnt,
            &"--retries",
            &"1",
            &"--timeout",
            &"30",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(!stderr.contains(&b.base), "B was not asked: {stderr}");
}

/// `atrest keyd status` reads one database's state: run against SQLite
/// (the default) and PostgreSQL, with a host enrolled then revoked; and a
/// database that cannot be reached is said so, with a non-zero exit.
#[test]
fn keyd_status_reports_the_database_on_sqlite_and_postgresql() {
    let rt = runtime();
    let check = |keyd: &Keyd, kind: &str| {
        let via = keyd.client();
        let host = rt
            .block_on(via.enroll(&keyd.token("web"), "web-1"))
            .unwrap();
        rt.block_on(via.unlock_ok(&host, BOOT));
        let report: Value = serde_json::from_str(&keyd.cli_ok(&["status", "--json"])).unwrap();
        assert_eq!(report["kind"], kind, "{report}");
        assert_eq!(report["reachable"], true, "{report}");
        assert!(report.get("error").is_none(), "{report}");
        assert!(report["schema_version"].as_i64().unwrap() >= 1, "{report}");
        assert_eq!(report["hosts"]["active"], 1, "{report}");
        let entries = keyd
            .cli_ok(&["audit", "tail", "-n", "100000", "--json"])
            .lines()
            .count() as u64;
        assert_eq!(report["audit_entries"], entries, "{report}");
        assert!(report["audit_last_ms"].as_u64().unwrap() > 0, "{report}");
        keyd.cli_ok(&["host", "revoke", "web-1"]);
        let report: Value = serde_json::from_str(&keyd.cli_ok(&["status", "--json"])).unwrap();
        assert_eq!(report["hosts"]["revoked"], 1, "{report}");
        assert!(report["hosts"].get("active").is_none(), "{report}");
        assert!(
            report["audit_entries"].as_u64().unwrap() > entries,
            "{report}"
        );
        let text = keyd.cli_ok(&["status"]);
        assert!(text.contains("reachable       yes"), "{text}");
        assert!(text.contains("0 active, 1 revoked, 0 shredded"), "{text}");
        report
    };
    let sqlite = Keyd::start();
    let report = check(&sqlite, "sqlite");
    assert!(report["standby"].is_null(), "{report}");

    // Unreachable: said so, non-zero.
    let out = sqlite.cli(&["status", "--database", "postgres://atrest@127.0.0.1:1/none"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the key authority's database"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reachable       no"));

    let Some(url) = rt.block_on(atrest_keyd::testing::fresh_postgres()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pg = Keyd::init_at(&dir.path().join("a"), &["--database", url.as_str()]);
    let report = check(&pg, "postgresql");
    assert_eq!(report["standby"], false, "{report}");
    assert!(report["replay_lag_seconds"].is_null(), "{report}");
    let text = pg.cli_ok(&["status"]);
    assert!(text.contains("standby         no (primary)"), "{text}");
}

/// Issue 10: two replicas on one PostgreSQL under load (enrollments,
/// releases, revokes and shreds from four clients that fail over between
/// them), and one or the other killed with SIGKILL at random points, round
/// after round, each restarted right after: nothing either acknowledged is
/// lost, every answered release is in the one chain, and the chain
/// verifies from both. `KEYD_KILL_ROUNDS` (default 4) sets the rounds; the
/// soak in bench/keyd-replica-soak.sh runs many more.
#[test]
fn killing_either_of_two_replicas_under_load_loses_nothing_acknowledged() {
    let rt = runtime();
    let Some(url) = rt.block_on(atrest_keyd::testing::fresh_postgres()) else {
        return;
    };
    let rounds: usize = std::env::var("KEYD_KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let a = Keyd::init_at(&dir.path().join("a"), &["--database", url.as_str()]);
    let b = replica_of(&a.data, &dir.path().join("b"));

    // The clients and admins of both replicas; a restarted replica keeps
    // its port (its keyd.json names it), so they stay valid.
    let replicas = std::sync::Mutex::new([a, b]);
    let endpoints = |replicas: &[Keyd; 2]| -> Vec<(HostClient, Arc<atrest_keyd::AdminClient>)> {
        replicas
            .iter()
            .map(|r| {
                let admin = atrest_keyd::AdminClient::for_data_dir(
                    &atrest_keyd::DataDir::open(&r.data).unwrap(),
                )
                .unwrap();
                (r.client(), Arc::new(admin))
            })
            .collect()
    };
    let endpoints = Arc::new(endpoints(&replicas.lock().unwrap()));
    let acked = Arc::new(std::sync::Mutex::new(Acknowledged::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Four clients, each until told to stop: a token from a replica's admin
    // API, an enrollment, four releases, then a revoke or a shred of every
    // third host.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (endpoints, acked, stop) = (endpoints.clone(), acked.clone(), stop.clone());
            rt.spawn(async move {
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let name = format!("load-{w}-{i}");
                    // Each call goes to one replica, and to the other if it
                    // cannot be reached (a refusal is final).
                    let first = i % 2;
                    let mut token = None;
                    for k in 0..2 {
                        let made: Result<Value, _> = endpoints[(first + k) % 2]
                            .1
                            .post(
                                "/v1/admin/tokens",
                                &json!({ "group": "load", "expires_in": 3600 }),
                            )
                            .await;
                        if let Ok(made) = made {
                            token = made["token"].as_str().map(str::to_owned);
                            break;
                        }
                    }
                    let Some(token) = token else {
                        continue;
                    };
                    let mut enrolled = None;
                    for k in 0..2 {
                        match endpoints[(first + k) % 2].0.enroll(&token, &name).await {
                            Ok(host) => {
                                enrolled = Some(host);
                                break;
                            }
                            Err((0, _)) => continue,
                            Err(_) => break, // e.g. the token was spent by a killed replica
                        }
                    }
                    let Some(host) = enrolled else {
                        continue;
                    };
                    acked.lock().unwrap().enrolled.push(name.clone());
                    'unlocks: for u in 0..4 {
                        for k in 0..2 {
                            match endpoints[(first + u + k) % 2].0.unlock(&host, BOOT).await {
                                Ok((200, _, _)) => {
                                    let mut a = acked.lock().unwrap();
                                    a.released += 1;
                                    *a.released_by_host.entry(name.clone()).or_default() += 1;
                                    continue 'unlocks;
                                }
                                Ok(_) => break 'unlocks,
                                Err(_) => continue,
                            }
                        }
                        break;
                    }
                    let action = match i % 3 {
                        0 => "revoke",
                        1 => "shred",
                        _ => continue,
                    };
                    for k in 0..2 {
                        let done: Result<Value, _> = endpoints[(first + k) % 2]
                            .1
                            .post(&format!("/v1/admin/hosts/{name}/{action}"), &json!({}))
                            .await;
                        if done.is_ok() {
                            let mut a = acked.lock().unwrap();
                            if action == "revoke" {
                                a.revoked.push(name.clone());
                            } else {
                                a.shredded.push(name.clone());
                            }
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    // Each round: wait for more acknowledged work, then SIGKILL a replica
    // picked at random and serve it again.
    let progress = || {
        let a = acked.lock().unwrap();
        a.enrolled.len() + a.released
    };
    for _ in 0..rounds {
        let before = progress();
        rt.block_on(async {
            for _ in 0..1200 {
                if progress() >= before + 8 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        assert!(
            progress() > before,
            "the load stalled: nothing acknowledged in 30 s"
        );
        let victim = usize::from(atrest_core::random_array::<1>()[0] & 1);
        let mut replicas = replicas.lock().unwrap();
        replicas[victim].kill();
        replicas[victim].serve();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.enrolled.len() >= 8 && !acked.revoked.is_empty() && !acked.shredded.is_empty(),
        "the load did too little: {} enrolled, {} revoked, {} shredded",
        acked.enrolled.len(),
        acked.revoked.len(),
        acked.shredded.len()
    );
    let replicas = replicas.into_inner().unwrap();
    for replica in &replicas {
        assert_nothing_acknowledged_was_lost(replica, &acked);
    }
}
