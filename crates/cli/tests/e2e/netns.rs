//! The whole key-authority story across two network namespaces, "host"
//! and "authority", joined by a veth pair: the host reaches the authority
//! only over the wire. Then k-of-n: 2-of-3 authorities, one down unlocks,
//! two down does not. Needs root (CI runs as root) and `ip`/`nsenter`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::{FAST_KDF, failure, success};

const BOOT_1: &str = "11111111-aaaa-4bbb-8ccc-000000000001";
const BOOT_2: &str = "11111111-aaaa-4bbb-8ccc-000000000002";
const BOOT_3: &str = "11111111-aaaa-4bbb-8ccc-000000000003";

fn sh(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

/// Two namespaces and the link between them, removed on drop.
struct Network {
    host: String,
    authority: String,
    authority_ip: String,
}

impl Network {
    fn new(tag: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the network-namespace tests need root (CI runs as root)"
        );
        let id = std::process::id() % 200 + u32::from(tag.as_bytes()[0] % 50);
        let host = format!("atrest-h{tag}{id}");
        let authority = format!("atrest-a{tag}{id}");
        let (veth_h, veth_a) = (format!("vh{tag}{id}"), format!("va{tag}{id}"));
        let subnet = format!("10.{}.{}", 200 + (id % 50), tag.as_bytes()[0]);
        let network = Self {
            host: host.clone(),
            authority: authority.clone(),
            authority_ip: format!("{subnet}.1"),
        };
        sh("ip", &["netns", "add", &host]);
        sh("ip", &["netns", "add", &authority]);
        sh(
            "ip",
            &[
                "link", "add", &veth_h, "type", "veth", "peer", "name", &veth_a,
            ],
        );
        sh("ip", &["link", "set", &veth_h, "netns", &host]);
        sh("ip", &["link", "set", &veth_a, "netns", &authority]);
        for (ns, dev, ip) in [
            (&host, &veth_h, format!("{subnet}.2/24")),
            (&authority, &veth_a, format!("{subnet}.1/24")),
        ] {
            sh("ip", &["-n", ns, "addr", "add", &ip, "dev", dev]);
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        network
    }

    /// `atrest ARGS` inside namespace `ns` (network only: mounts made by
    /// the host are visible to this test).
    fn atrest(&self, ns: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .arg(env!("CARGO_BIN_EXE_atrest"));
        for a in args {
            cmd.arg(a);
        }
        cmd
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in [&self.host, &self.authority] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A keyd serving inside the authority namespace.
struct Authority<'a> {
    net: &'a Network,
    data: PathBuf,
    url: String,
    fingerprint: String,
    child: Option<Child>,
}

impl<'a> Authority<'a> {
    fn new(net: &'a Network, data: PathBuf, port: u16) -> Self {
        let listen = format!("{}:{port}", net.authority_ip);
        let out = success(net.atrest(
            &net.authority,
            &[
                &"keyd",
                &"init",
                &"--data-dir",
                &data,
                &"--listen",
                &listen,
                &"--name",
                &net.authority_ip,
            ],
        ));
        let fingerprint = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mut authority = Self {
            net,
            data,
            url: format!("https://{listen}"),
            fingerprint,
            child: None,
        };
        authority.start();
        authority
    }

    fn start(&mut self) {
        let mut child = self
            .net
            .atrest(
                &self.net.authority,
                &[&"keyd", &"serve", &"--data-dir", &self.data],
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on"), "keyd serve: {line:?}");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `atrest keyd ARGS` (admin commands reach keyd over the authority
    /// namespace's network).
    fn admin(&self, args: &[&str]) -> String {
        let mut cmd = self.net.atrest(&self.net.authority, &[&"keyd"]);
        cmd.args(args).arg("--data-dir").arg(&self.data);
        String::from_utf8(success(cmd).stdout).unwrap()
    }

    fn token(&self) -> String {
        self.admin(&["token", "create", "--group", "web"])
            .trim()
            .to_owned()
    }
}

impl Drop for Authority<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `atrest ARGS` on the host, with its state directory and boot id.
fn on_host(
    net: &Network,
    state: &Path,
    boot: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
) -> Command {
    let mut cmd = net.atrest(&net.host, args);
    cmd.env("ATREST_STATE_DIR", state)
        .env("ATREST_BOOT_ID", boot);
    cmd
}

fn new_vault(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (vault, mnt, pass) = (
        dir.join(format!("{name}.enc")),
        dir.join(name),
        dir.join(format!("{name}.pass")),
    );
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(&pass, "correct horse\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrest"));
    cmd.arg("init")
        .arg(&vault)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--no-recovery-key")
        .args(FAST_KDF);
    success(cmd);
    (vault, mnt, pass)
}

fn unmount(mnt: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrest"));
    cmd.arg("unmount").arg(mnt);
    success(cmd);
}

#[test]
fn a_host_and_its_authority_in_two_network_namespaces() {
    let net = Network::new("s");
    let dir = tempfile::tempdir().unwrap();
    let mut authority = Authority::new(&net, dir.path().join("keyd"), 7443);
    let state = dir.path().join("host-state");
    let (vault, mnt, pass) = new_vault(dir.path(), "data");

    // The host cannot reach the authority's loopback: only the wire.
    let enroll = |state: &Path, vault: &Path, pass: &Path, name: &str| {
        success(on_host(
            &net,
            state,
            BOOT_1,
            &[
                &"enroll",
                &vault,
                &"--authority",
                &authority.url,
                &"--token",
                &authority.token(),
                &"--ca-fingerprint",
                &authority.fingerprint,
                &"--host-name",
                &name,
                &"--passphrase-file",
                &pass,
            ],
        ));
    };
    enroll(&state, &vault, &pass, "web-1");

    // First boot: unlock with the authority alone, mount, write.
    success(on_host(
        &net,
        &state,
        BOOT_1,
        &[&"unlock", &vault, &"--mount", &mnt],
    ));
    std::fs::write(mnt.join("ledger.csv"), b"account,balance\n").unwrap();
    unmount(&mnt);

    // A second vault of the same host binds to its enrollment: no token.
    let (uploads, uploads_mnt, uploads_pass) = new_vault(dir.path(), "uploads");
    let bind = |state: &Path| {
        on_host(
            &net,
            state,
            BOOT_1,
            &[
                &"enroll",
                &uploads,
                &"--authority",
                &authority.url,
                &"--ca-fingerprint",
                &authority.fingerprint,
                &"--host-name",
                &"web-1",
                &"--passphrase-file",
                &uploads_pass,
            ],
        )
    };
    success(bind(&state));
    success(on_host(
        &net,
        &state,
        BOOT_1,
        &[&"unlock", &uploads, &"--mount", &uploads_mnt],
    ));
    unmount(&uploads_mnt);
    // Without the host's identity, no token means no enrollment.
    let err = failure(bind(&dir.path().join("stranger-state")));
    assert!(
        err.contains("not enrolled") && err.contains("--token"),
        "{err}"
    );

    // A simulated reboot, announced: the new boot id unlocks at once and
    // the data is there.
    success(on_host(
        &net,
        &state,
        BOOT_1,
        &[&"reboot", &"--planned", &vault],
    ));
    success(on_host(
        &net,
        &state,
        BOOT_2,
        &[&"unlock", &vault, &"--mount", &mnt, &"-o", &"allow_other"],
    ));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(mnt.to_str().unwrap()))
        .expect("the vault is mounted");
    assert!(line.contains("allow_other"), "{line}");
    assert_eq!(
        std::fs::read(mnt.join("ledger.csv")).unwrap(),
        b"account,balance\n"
    );
    unmount(&mnt);

    // An unannounced reboot is held; the host waits until an operator
    // approves from the CLI.
    let mut waiting = on_host(
        &net,
        &state,
        BOOT_3,
        &[&"unlock", &vault, &"--mount", &mnt, &"--timeout", &"60"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let id = loop {
        let listed = authority.admin(&["requests", "--json"]);
        let pending: serde_json::Value = serde_json::from_str(&listed).unwrap();
        if let Some(id) = pending[0]["id"].as_str() {
            assert_eq!(pending[0]["host_id"], "web-1");
            assert_eq!(pending[0]["boot_id"], BOOT_3);
            assert!(
                pending[0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("unaccounted reboot")
            );
            break id.to_owned();
        }
        assert!(
            waiting.try_wait().unwrap().is_none(),
            "the host stopped waiting before an approval"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    authority.admin(&["approve", &id, "--as", "alice"]);
    let status = waiting.wait().unwrap();
    assert!(status.success(), "the approved host did not unlock");
    assert!(mnt.join("ledger.csv").exists());
    unmount(&mnt);

    // Host B, enrolled with its own identity, cannot open host A's vault.
    let state_b = dir.path().join("host-b-state");
    let (vault_b, _, pass_b) = new_vault(dir.path(), "other");
    enroll(&state_b, &vault_b, &pass_b, "web-2");
    let err = failure(on_host(
        &net,
        &state_b,
        BOOT_3,
        &[&"unlock", &vault, &"--mount", &mnt, &"--retries", &"0"],
    ));
    assert!(err.contains("signature"), "{err}");

    // The authority down, then back: the host retries until it answers.
    authority.stop();
    let waiting = on_host(
        &net,
        &state,
        BOOT_3,
        &[
            &"unlock",
            &vault,
            &"--mount",
            &mnt,
            &"--retries",
            &"100",
            &"--timeout",
            &"60",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    authority.start();
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mnt.join("ledger.csv").exists());
    unmount(&mnt);

    // Revoked: refused. Shredded: refused for good.
    authority.admin(&["host", "revoke", "web-1"]);
    let out = on_host(&net, &state, BOOT_3, &[&"unlock", &vault, &"--mount", &mnt])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "a final refusal exits 5");
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    authority.admin(&["host", "shred", "web-1", "--yes"]);
    let err = failure(on_host(
        &net,
        &state,
        BOOT_3,
        &[&"unlock", &vault, &"--mount", &mnt],
    ));
    assert!(err.contains("shredded") && err.contains("never"), "{err}");
    authority.admin(&["host", "show", "web-2"]);

    // Every step is in the log, and it verifies.
    assert!(authority.admin(&["audit", "verify"]).contains("intact"));
    let tail = authority.admin(&["audit", "tail", "-n", "200"]);
    for word in [
        "enrollment",
        "reboot_announced",
        "approval",
        "revoke",
        "shred",
    ] {
        assert!(tail.contains(word), "no {word} in the log:\n{tail}");
    }
}

#[test]
fn two_of_three_authorities() {
    let net = Network::new("t");
    let dir = tempfile::tempdir().unwrap();
    let mut authorities: Vec<Authority> = (0..3)
        .map(|i| Authority::new(&net, dir.path().join(format!("keyd{i}")), 7443 + i))
        .collect();
    let state = dir.path().join("host-state");
    let (vault, mnt, pass) = new_vault(dir.path(), "data");
    let tokens: Vec<String> = authorities.iter().map(Authority::token).collect();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"enroll", &vault];
    for (a, token) in authorities.iter().zip(&tokens) {
        args.extend([
            &"--authority" as &dyn AsRef<std::ffi::OsStr>,
            &a.url,
            &"--token",
            token,
            &"--ca-fingerprint",
            &a.fingerprint,
        ]);
    }
    args.extend([
        &"--threshold" as &dyn AsRef<std::ffi::OsStr>,
        &"2",
        &"--host-name",
        &"db-1",
        &"--passphrase-file",
        &pass,
    ]);
    success(on_host(&net, &state, BOOT_1, &args));

    // All up, then one down: unlocks.
    success(on_host(
        &net,
        &state,
        BOOT_1,
        &[&"unlock", &vault, &"--mount", &mnt],
    ));
    std::fs::write(mnt.join("x"), b"2-of-3").unwrap();
    unmount(&mnt);
    authorities[1].stop();
    success(on_host(
        &net,
        &state,
        BOOT_1,
        &[&"unlock", &vault, &"--mount", &mnt, &"--retries", &"0"],
    ));
    assert_eq!(std::fs::read(mnt.join("x")).unwrap(), b"2-of-3");
    unmount(&mnt);
    // Two down: not enough shares.
    authorities[2].stop();
    let err = failure(on_host(
        &net,
        &state,
        BOOT_1,
        &[
            &"unlock",
            &vault,
            &"--mount",
            &mnt,
            &"--retries",
            &"0",
            &"--timeout",
            &"10",
        ],
    ));
    assert!(err.contains('2'), "{err}");
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}
