//! `atrest luks` on LUKS2 images in files, against a real `atrest keyd
//! serve` on 127.0.0.1. This machine has no device-mapper, so the tests
//! stop at the key check (`cryptsetup open --test-passphrase`), which is
//! the step before the mapping; `atrest luks open --name` is tested to say
//! so and exit non-zero after checking the key (docs/operations.md §11
//! says which test covers which step).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{failure, ok, success};
use crate::keyd::Keyd;
use crate::remote::{BOOT_A, BOOT_B, host};

fn cryptsetup(args: &[&dyn AsRef<std::ffi::OsStr>], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cryptsetup is installed (scripts/test-all.sh installs cryptsetup-bin)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A 32 MiB LUKS2 image with passphrase `pw` in keyslot 0, and that
/// passphrase in a file.
fn luks_image(dir: &Path) -> (PathBuf, PathBuf) {
    let image = dir.join("disk.img");
    let pass = dir.join("existing.key");
    std::fs::write(&pass, b"pw").unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let out = cryptsetup(
        &[
            &"luksFormat",
            &"--type",
            &"luks2",
            &"--batch-mode",
            &"--pbkdf",
            &"pbkdf2",
            &"--pbkdf-force-iterations",
            &"1000",
            &"--key-file",
            &pass,
            &image,
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (image, pass)
}

fn list(image: &Path) -> Value {
    serde_json::from_slice(&ok(&[&"luks", &"list", &image, &"--json"]).stdout).unwrap()
}

fn bind(keyd: &Keyd, state: &Path, image: &Path, pass: &Path, token: Option<&str>) {
    let fingerprint = keyd.cli_ok(&["fingerprint"]).trim().to_owned();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"luks",
        &"bind",
        &image,
        &"--authority",
        &keyd.base,
        &"--ca-fingerprint",
        &fingerprint,
        &"--existing-key-file",
        &pass,
        &"--host-name",
        &"db-1",
    ];
    if let Some(token) = &token {
        args.push(&"--token");
        args.push(token);
    }
    success(host(state, BOOT_A, &args));
}

#[test]
fn bind_check_unbind_and_erase_a_luks_image() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let (image, pass) = luks_image(dir.path());
    let token = keyd.token("db");
    bind(&keyd, &state, &image, &pass, Some(&token));

    // The binding is in the header: a token of type atrest naming the new
    // keyslot, which cryptsetup itself exports.
    let listed = list(&image);
    assert_eq!(listed["keyslots"], serde_json::json!([0, 1]), "{listed}");
    assert_eq!(listed["bindings"][0]["keyslot"], 1, "{listed}");
    assert_eq!(listed["bindings"][0]["authority"], keyd.base.as_str());
    assert_eq!(listed["bindings"][0]["host_id"], "db-1");
    assert_eq!(listed["other_keyslots"], serde_json::json!([0]));
    let status = String::from_utf8(ok(&[&"status", &image]).stdout).unwrap();
    assert!(status.contains("keyslot  1  atrest token 0"), "{status}");
    assert!(
        status.contains("keyslot  0  passphrase or key file"),
        "{status}"
    );
    let exported = cryptsetup(&[&"token", &"export", &"--token-id", &"0", &image], b"");
    assert!(exported.status.success());
    let exported: Value = serde_json::from_slice(&exported.stdout).unwrap();
    assert_eq!(exported["type"], "atrest");
    assert_eq!(exported["keyslots"], serde_json::json!(["1"]));

    // The authority releases the key; it passes cryptsetup's key check.
    let out = success(host(
        &state,
        BOOT_A,
        &[&"luks", &"open", &image, &"--check-only"],
    ));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("opens keyslot 1"), "{said}");
    let released = keyd.cli_ok(&["audit", "tail", "-n", "1", "--json"]);
    assert!(released.contains("released"), "{released}");

    // Without device-mapper, opening says so after the key check and
    // exits non-zero: never pretends the volume is open.
    if !atrest_luks::device_mapper_available() {
        let err = failure(host(
            &state,
            BOOT_A,
            &[&"luks", &"open", &image, &"--name", &"atrest-test"],
        ));
        assert!(err.contains("no device-mapper"), "{err}");
        assert!(err.contains("NOT open"), "{err}");
        // `atrest lock /dev/mapper/NAME` is `luks close NAME`.
        let err = failure(ok_cmd(&[&"lock", &"/dev/mapper/atrest-test"]));
        assert!(err.contains("no device-mapper"), "{err}");
    }

    // A token changed in the header (here: its keyslot renamed to the
    // passphrase's) fails closed once the key is released.
    let mut forged = exported.clone();
    forged["keyslots"] = serde_json::json!(["0"]);
    let forged_image = dir.path().join("forged.img");
    std::fs::copy(&image, &forged_image).unwrap();
    assert!(
        cryptsetup(
            &[&"token", &"remove", &"--token-id", &"0", &forged_image],
            b""
        )
        .status
        .success()
    );
    let out = cryptsetup(
        &[
            &"token",
            &"import",
            &"--json-file",
            &"-",
            &"--token-id",
            &"0",
            &forged_image,
        ],
        forged.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = failure(host(
        &state,
        BOOT_A,
        &[&"luks", &"open", &forged_image, &"--check-only"],
    ));
    assert!(err.contains("was changed or copied"), "{err}");

    // Unbind: keyslot 1 and the token are gone; the passphrase still opens.
    let out = ok(&[&"luks", &"unbind", &image]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("destroyed keyslot 1 and removed atrest token 0"),
        "{said}"
    );
    let listed = list(&image);
    assert_eq!(listed["keyslots"], serde_json::json!([0]), "{listed}");
    assert_eq!(listed["bindings"], serde_json::json!([]));
    let err = failure(host(
        &state,
        BOOT_A,
        &[&"luks", &"open", &image, &"--check-only"],
    ));
    assert!(err.contains("no atrest binding"), "{err}");
    assert!(
        cryptsetup(
            &[&"open", &"--test-passphrase", &"--key-file=-", &image],
            b"pw"
        )
        .status
        .success()
    );

    // Erase: refused without --yes (saying what is lost), then every
    // keyslot is gone and the passphrase opens nothing.
    let err = failure(ok_cmd(&[&"luks", &"erase", &image]));
    assert!(err.contains("--yes"), "{err}");
    assert!(
        cryptsetup(
            &[&"open", &"--test-passphrase", &"--key-file=-", &image],
            b"pw"
        )
        .status
        .success()
    );
    ok(&[&"luks", &"erase", &image, &"--yes"]);
    assert_eq!(list(&image)["keyslots"], serde_json::json!([]));
    assert!(
        !cryptsetup(
            &[&"open", &"--test-passphrase", &"--key-file=-", &image],
            b"pw"
        )
        .status
        .success()
    );
}

fn ok_cmd(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = crate::common::atrest();
    for a in args {
        cmd.arg(a);
    }
    cmd
}

#[test]
fn luks_releases_follow_the_authority_policy_revoke_and_shred() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let (image, pass) = luks_image(dir.path());
    bind(&keyd, &state, &image, &pass, Some(&keyd.token("db")));
    success(host(
        &state,
        BOOT_A,
        &[&"luks", &"open", &image, &"--check-only"],
    ));

    // An unannounced reboot is held for approval, as for a vault.
    let mut waiting = host(
        &state,
        BOOT_B,
        &[
            &"luks",
            &"open",
            &image,
            &"--check-only",
            &"--timeout",
            &"60",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let id = loop {
        let listed: Value = serde_json::from_str(&keyd.cli_ok(&["requests", "--json"])).unwrap();
        if let Some(id) = listed[0]["id"].as_str() {
            assert_eq!(listed[0]["host_id"], "db-1");
            assert_eq!(listed[0]["boot_id"], BOOT_B);
            break id.to_owned();
        }
        assert!(
            waiting.try_wait().unwrap().is_none(),
            "the host stopped waiting before an approval"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    keyd.cli_ok(&["approve", &id, "--as", "alice"]);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second volume binds to the same enrollment without a token.
    let second = dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let (image2, pass2) = luks_image(&second);
    bind(&keyd, &state, &image2, &pass2, None);
    success(host(
        &state,
        BOOT_B,
        &[&"luks", &"open", &image2, &"--check-only"],
    ));

    // Revoked: refused for good, exit 5 as `atrest unlock`.
    keyd.cli_ok(&["host", "revoke", "db-1"]);
    let out = host(&state, BOOT_B, &[&"luks", &"open", &image, &"--check-only"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));

    // Shredded: refused for good, for every volume bound to the host; the
    // volume's own passphrase still opens it (shred erases what the
    // authority holds, not the header).
    keyd.cli_ok(&["host", "shred", "db-1", "--yes"]);
    for img in [&image, &image2] {
        let out = host(&state, BOOT_B, &[&"luks", &"open", img, &"--check-only"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        cryptsetup(
            &[&"open", &"--test-passphrase", &"--key-file=-", &image],
            b"pw"
        )
        .status
        .success()
    );
}

#[test]
fn scratch_formats_a_blank_device_once_then_only_unlocks_it() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let image = dir.path().join("nvme.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let fingerprint = keyd.cli_ok(&["fingerprint"]).trim().to_owned();
    let mnt = dir.path().join("scratch");
    let token = keyd.token("db");
    let scratch_of = |image: &Path, token: Option<&str>| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"luks",
            &"scratch",
            &image,
            &"--mount",
            &mnt,
            &"--authority",
            &keyd.base,
            &"--ca-fingerprint",
            &fingerprint,
            &"--host-name",
            &"db-1",
            &"--name",
            &"atrest-e2e-scratch",
        ];
        if let Some(token) = &token {
            args.push(&"--token");
            args.push(token);
        }
        host(&state, BOOT_A, &args).output().unwrap()
    };
    let scratch = |token: Option<&str>| scratch_of(&image, token);
    let dm = atrest_luks::device_mapper_available();

    // Blank: formatted as LUKS2, bound (keyslot 0, the only one).
    let out = scratch(Some(&token));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("formatted"), "{said}");
    if !dm {
        assert!(!out.status.success());
        assert!(said.contains("no device-mapper"), "{said}");
    }
    let listed = list(&image);
    assert_eq!(listed["keyslots"], serde_json::json!([0]), "{listed}");
    assert_eq!(listed["bindings"][0]["keyslot"], 0, "{listed}");
    let released_before = crate::remote::audit_size(&keyd);

    // Bound: straight to unlock, nothing formatted, no token needed.
    let uuid = listed["uuid"].clone();
    let out = scratch(None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("bound to a key authority: unlocking"),
        "{said}"
    );
    assert!(!said.contains("formatted"), "{said}");
    if !dm {
        assert!(!out.status.success());
        assert!(said.contains("no device-mapper"), "{said}");
    }
    assert_eq!(
        list(&image)["uuid"],
        uuid,
        "the device was not formatted again"
    );
    assert!(
        crate::remote::audit_size(&keyd) > released_before,
        "a release was logged"
    );

    // A device holding anything else is never formatted.
    let other = dir.path().join("ext4.img");
    std::fs::File::create(&other)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&other)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let out = scratch_of(&other, None);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("holds ext4"), "{said}");
    assert!(said.contains("wipefs"), "{said}");
}

/// A loop device over an image, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Self {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// `atrest doctor --json`'s luks-passphrase-only findings naming `device`.
fn passphrase_only(state: &Path, device: &str) -> Vec<Value> {
    let out = host(state, BOOT_A, &[&"doctor", &"--json"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|f| {
            f["id"] == "luks-passphrase-only"
                && f["found"].as_str().unwrap().contains(&format!("{device} "))
        })
        .collect()
}

#[test]
fn doctor_names_a_luks_volume_opened_by_passphrase_only_until_bound() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let (image, pass) = luks_image(dir.path());
    let device = Loop::attach(&image);
    let found = passphrase_only(&state, &device.0);
    assert_eq!(found.len(), 1, "{found:?}");
    let fix = found[0]["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!("atrest luks bind {}", device.0)),
        "{fix}"
    );

    // The fix, with this authority's values: the finding is gone.
    bind(
        &keyd,
        &state,
        Path::new(&device.0),
        &pass,
        Some(&keyd.token("db")),
    );
    assert_eq!(passphrase_only(&state, &device.0), Vec::<Value>::new());
}

#[test]
fn a_two_of_three_binding_opens_with_one_authority_down() {
    let keyds = [Keyd::start(), Keyd::start(), Keyd::start()];
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let (image, pass) = luks_image(dir.path());
    let fingerprints: Vec<String> = keyds
        .iter()
        .map(|k| k.cli_ok(&["fingerprint"]).trim().to_owned())
        .collect();
    let tokens: Vec<String> = keyds.iter().map(|k| k.token("db")).collect();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"luks",
        &"bind",
        &image,
        &"--existing-key-file",
        &pass,
        &"--host-name",
        &"db-1",
        &"--threshold",
        &"2",
    ];
    for ((k, fp), t) in keyds.iter().zip(&fingerprints).zip(&tokens) {
        args.extend([
            &"--authority" as &dyn AsRef<std::ffi::OsStr>,
            &k.base,
            &"--ca-fingerprint",
            fp,
            &"--token",
            t,
        ]);
    }
    success(host(&state, BOOT_A, &args));
    let listed = list(&image);
    assert_eq!(listed["bindings"][0]["threshold"], 2, "{listed}");
    assert_eq!(
        listed["bindings"][0]["authorities"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let status = String::from_utf8(ok(&[&"status", &image]).stdout).unwrap();
    assert!(status.contains("2-of-3"), "{status}");

    success(host(
        &state,
        BOOT_A,
        &[&"luks", &"open", &image, &"--check-only"],
    ));
    let [mut a, b, c] = keyds;
    a.kill();
    let out = success(host(
        &state,
        BOOT_A,
        &[
            &"luks",
            &"open",
            &image,
            &"--check-only",
            &"--retries",
            &"0",
        ],
    ));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("opens keyslot 1"), "{said}");
    assert!(said.contains(&b.base) && said.contains(&c.base), "{said}");

    // Two of three down: not enough shares, exit 1 naming the shortfall.
    drop(b);
    let err = failure(host(
        &state,
        BOOT_A,
        &[
            &"luks",
            &"open",
            &image,
            &"--check-only",
            &"--retries",
            &"0",
            &"--timeout",
            &"10",
        ],
    ));
    assert!(err.contains("only 1 of the 2 authorities"), "{err}");
    drop(c);
}
