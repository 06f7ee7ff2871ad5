//! Format 2 before its FUSE backend (docs/plans/format-2.md, stage 2):
//! the hidden `atrest init --format 2` makes one, `status` says so, and
//! `mount` and `fsck` refuse it with a message that says why, exit
//! non-zero, before asking for a passphrase.

use std::fs;

use crate::common::{FAST_KDF, atrest, failure, ok};

#[test]
fn init_format_2_then_status_shows_it_and_mount_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let pass = dir.path().join("pass");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    fs::write(&pass, "test passphrase\n").unwrap();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &vault,
        &"--format",
        &"2",
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &FAST_KDF {
        args.push(a);
    }
    let out = ok(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("format 2"));
    for made in [
        "atrest.conf",
        "atrest.conf.bak",
        "atrest.meta",
        "atrest.log",
        "objects/ab",
    ] {
        assert!(vault.join(made).exists(), "{made}");
    }

    let status = ok(&[&"status", &vault, &"--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["format_version"], 2);
    let text = ok(&[&"status", &vault]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("atrest vault v2"));

    let mut mount = atrest();
    mount
        .arg("mount")
        .arg(&vault)
        .arg(&mnt)
        .arg("--passphrase-file")
        .arg(&pass);
    let err = failure(mount);
    assert!(
        err.contains("format 2 vaults cannot be mounted by this build yet"),
        "{err}"
    );
    let mut fsck = atrest();
    fsck.arg("fsck")
        .arg(&vault)
        .arg("--passphrase-file")
        .arg(&pass);
    let err = failure(fsck);
    assert!(err.contains("format 2 vaults cannot be checked"), "{err}");

    // Format 1 stays the default, and --format is hidden from --help.
    let help = ok(&[&"init", &"--help"]);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--format"));
    let mut bad = atrest();
    bad.arg("init")
        .arg(dir.path().join("v3"))
        .arg("--format")
        .arg("3");
    assert!(failure(bad).contains("3"));
}
