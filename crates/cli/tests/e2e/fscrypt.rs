//! The fscrypt backend on a loop-mounted ext4 made with `-O encrypt`:
//! round trip, lock (names encrypted, contents unreadable, nothing in the
//! raw image), unlock, wrong key, lock with an open file, clear errors.

use std::fs;
use std::path::Path;

use crate::common::{FAST_KDF, SmallFs, ok, pattern, run};

const CANARY: &str = "canary-fscrypt-e2e-59d2";

fn init(data: &Path, pass: &Path) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &"--backend",
        &"fscrypt",
        &data,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &FAST_KDF {
        args.push(a);
    }
    ok(&args);
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn lock_unlock_round_trip_on_ext4_with_encrypt() {
    let fs_ = SmallFs::ext4_with(64, &["-O", "encrypt"]);
    let data = fs_.path().join("data");
    let pass = fs_.path().join("pass");
    fs::write(&pass, "fscrypt passphrase\n").unwrap();
    init(&data, &pass);

    fs::create_dir(data.join("plain-dir-name")).unwrap();
    let big = pattern(7, 300_000);
    fs::write(
        data.join("plain-dir-name/canary-file-name"),
        format!("{CANARY}\n").repeat(50),
    )
    .unwrap();
    fs::write(data.join("big"), &big).unwrap();
    let status = ok(&[&"status", &data, &"--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["backend"], "fscrypt");
    assert_eq!(status["fscrypt"]["key"], "unlocked");
    assert_eq!(status["fscrypt"]["contents"], "AES-256-XTS");

    ok(&[&"lock", &data]);
    let names: Vec<String> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.iter().all(|n| n != "big" && n != "plain-dir-name"),
        "names still plain: {names:?}"
    );
    for n in &names {
        let err = fs::read(data.join(n)).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(126) | Some(21)),
            "read while locked: {err}"
        );
    }
    let status = ok(&[&"status", &data, &"--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["fscrypt"]["key"], "locked");

    // At rest: the raw image holds no canary and no plaintext name.
    fs_.unmount();
    let image = fs::read(fs_.image.as_ref().unwrap()).unwrap();
    for needle in [CANARY, "canary-file-name", "plain-dir-name"] {
        assert!(
            !image.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} in the raw image"
        );
    }
    drop(image);
    fs_.mount_again();

    // A wrong passphrase is refused clearly and unlocks nothing.
    let wrong = fs_.path().join("wrong");
    fs::write(&wrong, "not it").unwrap();
    let out = run(&[&"unlock", &data, &"--passphrase-file", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert!(fs::read(data.join("big")).is_err());

    ok(&[&"unlock", &data, &"--passphrase-file", &pass]);
    assert_eq!(fs::read(data.join("big")).unwrap(), big);
    assert!(
        fs::read_to_string(data.join("plain-dir-name/canary-file-name"))
            .unwrap()
            .starts_with(CANARY)
    );
    let again = ok(&[&"unlock", &data, &"--passphrase-file", &pass]);
    assert!(stderr(&again).contains("already unlocked"));

    // Lock with a file open: reported, with the process, and what to do.
    let open = fs::File::open(data.join("big")).unwrap();
    let out = run(&[&"lock", &data]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains("still open") && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    drop(open);
    ok(&[&"lock", &data]);
    assert!(fs::read(data.join("big")).is_err());
}

#[test]
fn clear_errors_for_unusable_directories() {
    // A file system without the encrypt feature: names the tune2fs fix.
    let plain = SmallFs::ext4(32);
    let pass = plain.path().join("pass");
    fs::write(&pass, "p").unwrap();
    let data = plain.path().join("data");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &"--backend",
        &"fscrypt",
        &data,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &FAST_KDF {
        args.push(a);
    }
    let out = run(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tune2fs -O encrypt"),
        "{}",
        stderr(&out)
    );
    // Nothing half made is left behind.
    assert!(!plain.path().join(".data.atrest").exists());

    // A directory that is not empty.
    let fs_ = SmallFs::ext4_with(32, &["-O", "encrypt"]);
    let full = fs_.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let pass = fs_.path().join("pass");
    fs::write(&pass, "p").unwrap();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &"--backend",
        &"fscrypt",
        &full,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &FAST_KDF {
        args.push(a);
    }
    let out = run(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));

    // mount on an fscrypt vault, unlock on a FUSE vault: each says what to use.
    let data = fs_.path().join("data");
    init(&data, &pass);
    let mnt = fs_.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = run(&[&"mount", &data, &mnt, &"--passphrase-file", &pass]);
    assert!(stderr(&out).contains("atrest unlock"), "{}", stderr(&out));
    let out = run(&[&"lock", &fs_.path().join("nothing-here")]);
    assert!(!out.status.success());
}

/// An fscrypt vault opened at boot by the key authority alone.
#[test]
fn the_key_authority_unlocks_an_fscrypt_vault() {
    let keyd = crate::keyd::Keyd::start();
    let fs_ = SmallFs::ext4_with(64, &["-O", "encrypt"]);
    let data = fs_.path().join("data");
    let pass = fs_.path().join("pass");
    let state = fs_.path().join("host-state");
    fs::write(&pass, "fscrypt passphrase\n").unwrap();
    init(&data, &pass);
    ok(&[&"unlock", &data, &"--passphrase-file", &pass]);
    fs::write(data.join("secret.txt"), CANARY).unwrap();
    ok(&[&"lock", &data]);
    assert!(fs::read(data.join("secret.txt")).is_err());

    let token = keyd.token("db");
    let fingerprint = keyd.cli_ok(&["fingerprint"]).trim().to_owned();
    let host = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = crate::common::atrest();
        cmd.env("ATREST_STATE_DIR", &state)
            .env("ATREST_BOOT_ID", "f5c1a0de-0000-4000-8000-000000000001");
        for a in args {
            cmd.arg(a);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    host(&[
        &"enroll",
        &data,
        &"--authority",
        &keyd.base,
        &"--token",
        &token,
        &"--ca-fingerprint",
        &fingerprint,
        &"--host-name",
        &"db-1",
        &"--passphrase-file",
        &pass,
    ]);
    // No passphrase: the authority answers, the kernel gets the key.
    host(&[&"unlock", &data]);
    assert_eq!(fs::read_to_string(data.join("secret.txt")).unwrap(), CANARY);
    ok(&[&"lock", &data]);
    keyd.cli_ok(&["host", "revoke", "db-1"]);
    let out = crate::common::atrest()
        .env("ATREST_STATE_DIR", &state)
        .args(["unlock"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    assert!(fs::read(data.join("secret.txt")).is_err());
}
