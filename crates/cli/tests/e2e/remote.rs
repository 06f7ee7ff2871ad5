//! The host side end to end: `atrest enroll`, `atrest unlock --mount` with
//! the key authority alone, `atrest reboot --planned`, the authority down
//! then back, and a revoked host, against a real `atrest keyd serve`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{FAST_KDF, atrest, copy_dir, ok, success};
use crate::keyd::Keyd;

pub const BOOT_A: &str = "aaaaaaaa-1111-2222-3333-444444444444";
pub const BOOT_B: &str = "bbbbbbbb-1111-2222-3333-444444444444";

/// `atrest ARGS` as this host: its own state directory and boot id.
pub fn host(state: &Path, boot: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = atrest();
    cmd.env("ATREST_STATE_DIR", state)
        .env("ATREST_BOOT_ID", boot);
    for a in args {
        cmd.arg(a);
    }
    cmd
}

/// A vault in `dir` with a passphrase slot and a remote slot at `keyd`, the
/// host enrolled as web-1 (state dir `dir/host`, boot A).
pub struct Enrolled {
    pub vault: PathBuf,
    pub mnt: PathBuf,
    pub pass: PathBuf,
    pub state: PathBuf,
}

pub fn enrolled_vault(keyd: &Keyd, dir: &Path) -> Enrolled {
    enrolled_vault_with(keyd, dir, &[])
}

/// [`enrolled_vault`], with `extra` arguments to `atrest init` (`--format
/// 2`).
pub fn enrolled_vault_with(keyd: &Keyd, dir: &Path, extra: &[&str]) -> Enrolled {
    let (vault, mnt, pass, state) = (
        dir.join("data.enc"),
        dir.join("mnt"),
        dir.join("pass"),
        dir.join("host"),
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
    FAST_KDF.iter().for_each(|a| init.push(a));
    extra.iter().for_each(|a| init.push(a));
    ok(&init);

    let token = keyd.token("web");
    let fingerprint = keyd.cli_ok(&["fingerprint"]).trim().to_owned();
    success(host(
        &state,
        BOOT_A,
        &[
            &"enroll",
            &vault,
            &"--authority",
            &keyd.base,
            &"--token",
            &token,
            &"--ca-fingerprint",
            &fingerprint,
            &"--host-name",
            &"web-1",
            &"--passphrase-file",
            &pass,
        ],
    ));
    Enrolled {
        vault,
        mnt,
        pass,
        state,
    }
}

#[test]
fn enroll_reboot_unlock_retry_and_revoke() {
    let mut keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let Enrolled {
        vault,
        mnt,
        pass,
        state,
    } = enrolled_vault(&keyd, dir.path());
    let status = String::from_utf8(ok(&[&"status", &vault]).stdout).unwrap();
    assert!(status.contains("remote"), "{status}");
    assert!(
        status.contains(&format!("{} as web-1", keyd.base)),
        "{status}"
    );

    // Unlock and mount with the authority alone; write a file.
    success(host(&state, BOOT_A, &[&"unlock", &vault, &"--mount", &mnt]));
    std::fs::write(mnt.join("note"), b"kept at rest").unwrap();
    ok(&[&"unmount", &mnt]);

    // A planned reboot: the next boot id opens at once.
    success(host(&state, BOOT_A, &[&"reboot", &"--planned", &vault]));
    success(host(&state, BOOT_B, &[&"unlock", &vault, &"--mount", &mnt]));
    assert_eq!(std::fs::read(mnt.join("note")).unwrap(), b"kept at rest");
    ok(&[&"unmount", &mnt]);

    // The authority is down: a clear error naming it; then down while the
    // host retries, and back: the unlock goes through.
    keyd.kill();
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
            &"5",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the key authority"),
        "{stderr}"
    );
    assert!(stderr.contains(&keyd.base), "{stderr}");
    let waiting = host(
        &state,
        BOOT_B,
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
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    keyd.serve();
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(mnt.join("note")).unwrap(), b"kept at rest");
    ok(&[&"unmount", &mnt]);

    // Revoked: refused, and said so.
    keyd.cli_ok(&["host", "revoke", "web-1"]);
    let out = host(&state, BOOT_B, &[&"unlock", &vault, &"--mount", &mnt])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    // The passphrase still opens it.
    ok(&[
        &"unlock",
        &vault,
        &"--mount",
        &mnt,
        &"--passphrase-file",
        &pass,
    ]);
    ok(&[&"unmount", &mnt]);
}

/// The number of entries in the authority's audit log.
pub fn audit_size(keyd: &Keyd) -> u64 {
    let tail = keyd.cli_ok(&["audit", "tail", "-n", "1", "--json"]);
    let last: serde_json::Value = serde_json::from_str(tail.lines().last().unwrap()).unwrap();
    last["seq"].as_u64().unwrap()
}

/// The size of the audit tree head the host kept.
fn kept_tree_size(state: &Path) -> u64 {
    let heads: Vec<_> = std::fs::read_dir(state.join("heads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&heads[0]).unwrap()).unwrap();
    head["tree_size"].as_u64().unwrap()
}

/// The review's attack on the log: the authority's disk is put back to an
/// earlier copy, and the log grows again past what the host had seen. The
/// host catches the fork, and refuses from then on, however many entries
/// are appended, until an operator acknowledges.
#[test]
fn a_host_never_unlocks_from_a_rolled_back_log_until_acknowledged() {
    let mut keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let Enrolled {
        vault,
        mnt,
        pass: _,
        state,
    } = enrolled_vault(&keyd, dir.path());
    keyd.stop();
    let snapshot = dir.path().join("keyd-snapshot");
    copy_dir(&keyd.data, &snapshot);
    keyd.serve();
    let unlock = || {
        host(
            &state,
            BOOT_A,
            &[&"unlock", &vault, &"--mount", &mnt, &"--timeout", &"20"],
        )
        .output()
        .unwrap()
    };
    for _ in 0..3 {
        let out = unlock();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ok(&[&"unmount", &mnt]);
    }
    let seen = kept_tree_size(&state);

    // The authority's disk goes back to the copy; its log grows again
    // past what the host saw (the host's boot there is unproven: let it be
    // released, so that only the log can stop the host).
    keyd.stop();
    copy_dir(&snapshot, &keyd.data);
    keyd.serve();
    keyd.cli_ok(&[
        "policy",
        "set",
        "--group",
        "web",
        "auto",
        "--unannounced-reboot",
        "auto",
    ]);
    while audit_size(&keyd) <= seen + 2 {
        keyd.token("web");
    }
    let out = unlock();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("AUDIT LOG ALARM"), "{stderr}");
    assert!(stderr.contains("rewritten or forked"), "{stderr}");
    assert!(!mnt.join("note").exists());

    // More entries change nothing, and nothing more is sent.
    for _ in 0..5 {
        keyd.token("web");
    }
    let before = audit_size(&keyd);
    let out = unlock();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        audit_size(&keyd),
        before,
        "a caught authority is not asked again"
    );

    let status = String::from_utf8(
        host(&state, BOOT_A, &[&"status", &vault])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(status.contains("ALARM:"), "{status}");

    // The operator looks, and acknowledges.
    let listed = host(&state, BOOT_A, &[&"alarm", &"list", &"--json"])
        .output()
        .unwrap();
    assert_eq!(listed.status.code(), Some(6));
    let alarm: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(alarm["kept"]["tree_size"].as_u64(), Some(seen));
    assert!(alarm["given"]["tree_size"].as_u64().unwrap() > seen);
    let key = alarm["audit_key"].as_str().unwrap();
    success(host(&state, BOOT_A, &[&"alarm", &"acknowledge", &key]));
    success(host(&state, BOOT_A, &[&"alarm", &"list"]));
    let out = unlock();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&[&"unmount", &mnt]);
    assert!(kept_tree_size(&state) > seen);
    let evidence = std::fs::read_dir(state.join("alarms/acknowledged"))
        .unwrap()
        .count();
    assert_eq!(evidence, 2, "the alarm and the head kept before it");
}
