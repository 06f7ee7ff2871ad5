//! The host side end to end: `atrest enroll`, `atrest unlock --mount` with
//! the key authority alone, `atrest reboot --planned`, the authority down
//! then back, and a revoked host, against a real `atrest keyd serve`.

use std::path::Path;
use std::process::Command;

use crate::common::{FAST_KDF, atrest, ok, success};
use crate::keyd::Keyd;

const BOOT_A: &str = "aaaaaaaa-1111-2222-3333-444444444444";
const BOOT_B: &str = "bbbbbbbb-1111-2222-3333-444444444444";

/// `atrest ARGS` as this host: its own state directory and boot id.
fn host(state: &Path, boot: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = atrest();
    cmd.env("ATREST_STATE_DIR", state)
        .env("ATREST_BOOT_ID", boot);
    for a in args {
        cmd.arg(a);
    }
    cmd
}

#[test]
fn enroll_reboot_unlock_retry_and_revoke() {
    let mut keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
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
    FAST_KDF.iter().for_each(|a| init.push(a));
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
