//! `atrest backup` through the real binary: a repository bound to a vault,
//! run / snapshots / restore / check / status, a tampered pack caught by
//! `check` (exit 4) and never restored (exit 3), a wrong vault, a wrong
//! passphrase and a directory that is no repository refused with messages
//! that say what to do, and nothing of the source in the repository; a
//! repository's own keyslots (passphrase, key file, recovery key) added and
//! removed, and `shred` leaving every snapshot unreadable, locally and on
//! S3.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{
    FAST_KDF, atrest, detach, failure, is_mount_point, ok, pattern, run, success, wait_for,
};

struct Setup {
    dir: tempfile::TempDir,
    vault: PathBuf,
    pass: PathBuf,
    repo: PathBuf,
}

fn vault_in(dir: &Path, name: &str, pass: &Path) -> PathBuf {
    let vault = dir.join(name);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &vault,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &FAST_KDF {
        args.push(a);
    }
    ok(&args);
    vault
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    fs::write(&pass, "backup passphrase\n").unwrap();
    let vault = vault_in(dir.path(), "vault", &pass);
    let repo = dir.path().join("repo");
    Setup {
        dir,
        vault,
        pass,
        repo,
    }
}

impl Setup {
    fn backup(&self, sub: &str) -> std::process::Command {
        let mut cmd = atrest();
        cmd.args(["backup", sub, "--repo"])
            .arg(&self.repo)
            .arg("--vault")
            .arg(&self.vault);
        cmd.arg("--passphrase-file").arg(&self.pass);
        cmd
    }
}

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("data-7c1e");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(
        src.join("docs/report-9f.txt"),
        b"CANARY-e2e-5521 quarterly numbers",
    )
    .unwrap();
    fs::write(src.join("big.bin"), pattern(3, 3 << 20)).unwrap();
    fs::set_permissions(src.join("big.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("docs/report-9f.txt", src.join("latest")).unwrap();
    src
}

#[test]
fn run_restore_check_round_trip() {
    let s = setup();
    let src = source(s.dir.path());
    let out = success(s.backup("init"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 vault") && text.contains("whoever unlocks it can back up and restore"),
        "{text}"
    );
    assert!(text.contains("Recovery key (shown once"), "{text}");
    let out = success(s.backup("status"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bound to:   vault") && text.contains("(opened with)"),
        "{text}"
    );

    let mut cmd = s.backup("run");
    cmd.arg(&src).args(["--tag", "nightly", "--json"]);
    let out = success(cmd);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["summary"]["files"], 2);
    let id = summary["snapshot"].as_str().unwrap().to_string();

    // A second run stores nothing new.
    let mut cmd = s.backup("run");
    cmd.arg(&src).arg("--json");
    let again: serde_json::Value = serde_json::from_slice(&success(cmd).stdout).unwrap();
    assert_eq!(again["summary"]["new_bytes"], 0);
    // ... and reads neither file again: both come from the parent.
    assert_eq!(again["summary"]["unchanged_files"], 2);

    let mut cmd = s.backup("snapshots");
    cmd.arg("--json");
    let list: serde_json::Value = serde_json::from_slice(&success(cmd).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["snapshot"]["tags"][0], "nightly");

    let target = s.dir.path().join("restored");
    let mut cmd = atrest();
    cmd.args(["backup", "restore", &id[..10]]).arg(&target);
    cmd.arg("--repo")
        .arg(&s.repo)
        .arg("--vault")
        .arg(&s.vault)
        .arg("--passphrase-file")
        .arg(&s.pass);
    success(cmd);
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(back.join("big.bin")).unwrap(), pattern(3, 3 << 20));
    assert_eq!(
        fs::metadata(back.join("big.bin")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::read_link(back.join("latest")).unwrap(),
        Path::new("docs/report-9f.txt")
    );
    assert_eq!(
        fs::metadata(back.join("big.bin")).unwrap().mtime_nsec(),
        fs::metadata(src.join("big.bin")).unwrap().mtime_nsec()
    );

    // --include: only the docs directory (and the directories to it).
    let partial = s.dir.path().join("partial");
    let mut cmd = atrest();
    cmd.args(["backup", "restore", "latest"]).arg(&partial);
    cmd.arg("--include")
        .arg(src.join("docs"))
        .arg("--repo")
        .arg(&s.repo)
        .arg("--vault")
        .arg(&s.vault)
        .arg("--passphrase-file")
        .arg(&s.pass);
    success(cmd);
    let back = partial.join(src.strip_prefix("/").unwrap());
    assert!(back.join("docs/report-9f.txt").is_file());
    assert!(!back.join("big.bin").exists());
    let mut cmd = atrest();
    cmd.args(["backup", "restore", "latest"]).arg(&partial);
    cmd.args(["--include", "[unclosed"]);
    cmd.arg("--repo").arg(&s.repo).arg("--vault").arg(&s.vault);
    let err = failure(cmd);
    assert!(
        err.contains("--include [unclosed: not a valid pattern"),
        "{err}"
    );

    let mut cmd = s.backup("check");
    cmd.arg("--read-data");
    let out = success(cmd);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no errors"));
    let mut cmd = s.backup("check");
    cmd.args(["--read-data-subset", "50%"]);
    let out = success(cmd);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("packs and"),
        "{out:?}"
    );
    let mut cmd = s.backup("check");
    cmd.args(["--read-data-subset", "150%"]);
    let err = failure(cmd);
    assert!(err.contains("from 1% to 100%"), "{err}");
    let out = success(s.backup("status"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("snapshots:  2"));

    // ls and diff.
    let mut cmd = s.backup("ls");
    cmd.arg(&id[..8]);
    let listing = String::from_utf8_lossy(&success(cmd).stdout).into_owned();
    assert!(
        listing.contains("docs/report-9f.txt") && listing.contains("big.bin"),
        "{listing}"
    );
    fs::write(src.join("docs/report-9f.txt"), b"changed").unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let mut cmd = s.backup("run");
    cmd.arg(&src);
    success(cmd);
    let mut cmd = s.backup("diff");
    cmd.arg(&id[..8]).arg("latest");
    let changes = String::from_utf8_lossy(&success(cmd).stdout).into_owned();
    assert!(
        changes
            .lines()
            .any(|l| l.starts_with("M") && l.ends_with("docs/report-9f.txt")),
        "{changes}"
    );
    assert!(
        changes
            .lines()
            .any(|l| l.starts_with("+") && l.ends_with("new.txt")),
        "{changes}"
    );
    assert!(!changes.contains("big.bin"), "{changes}");

    // forget --keep-last 1 --prune: one snapshot left, still whole.
    let mut cmd = s.backup("forget");
    cmd.args(["--keep-last", "1", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&success(cmd).stdout)
            .contains("2 of 3 snapshots would be forgotten")
    );
    let mut cmd = s.backup("forget");
    cmd.args(["--keep-last", "1", "--prune"]);
    let out = success(cmd);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pruned:"));
    let mut cmd = s.backup("snapshots");
    cmd.arg("--json");
    let list: serde_json::Value = serde_json::from_slice(&success(cmd).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_ne!(list[0]["id"], id.as_str());
    let mut cmd = s.backup("check");
    cmd.arg("--read-data");
    assert!(String::from_utf8_lossy(&success(cmd).stdout).contains("no errors"));
    let cmd = s.backup("forget");
    let err = failure(cmd);
    assert!(err.contains("--keep-"), "{err}");

    // Nothing of the source in the repository, by name or content.
    let mut stack = vec![s.repo.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            assert!(
                !p.to_string_lossy().contains("report-9f")
                    && !p.to_string_lossy().contains("data-7c1e")
            );
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = fs::read(&p).unwrap();
                for needle in [&b"CANARY-e2e-5521"[..], b"report-9f", b"data-7c1e"] {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "{needle:?} in {p:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn damage_is_reported_and_never_restored() {
    let s = setup();
    let src = s.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("only"), pattern(9, 100_000)).unwrap();
    success(s.backup("init"));
    let mut cmd = s.backup("run");
    cmd.arg(&src);
    success(cmd);
    // Packers run in parallel, so the file's one 100,000-byte blob and the
    // two trees of a few hundred bytes may be in one pack or in several:
    // the largest pack holds the file's blob, and whatever the (random)
    // order of the blobs in it, its middle byte is the file's.
    let pack = fs::read_dir(s.repo.join("data"))
        .unwrap()
        .flat_map(|dir| fs::read_dir(dir.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    assert!(bytes.len() > 100_000, "no pack holds the file's blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();

    let mut cmd = s.backup("check");
    cmd.arg("--read-data");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains("damaged") && text.contains(&name), "{text}");

    let target = s.dir.path().join("restored");
    let mut cmd = atrest();
    cmd.args(["backup", "restore", "latest"]).arg(&target);
    cmd.arg("--repo")
        .arg(&s.repo)
        .arg("--vault")
        .arg(&s.vault)
        .arg("--passphrase-file")
        .arg(&s.pass);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not restored"));
    assert!(
        !target
            .join(src.strip_prefix("/").unwrap())
            .join("only")
            .exists()
    );
}

#[test]
fn wrong_vault_wrong_passphrase_and_no_repository_are_refused_clearly() {
    let s = setup();
    success(s.backup("init"));
    // Another vault: named as the wrong one, not "wrong key".
    let other = vault_in(s.dir.path(), "other", &s.pass);
    let mut cmd = atrest();
    cmd.args(["backup", "snapshots", "--repo"])
        .arg(&s.repo)
        .arg("--vault")
        .arg(&other);
    cmd.arg("--passphrase-file").arg(&s.pass);
    let err = failure(cmd);
    assert!(
        err.contains("is bound to vault") && err.contains("give the vault"),
        "{err}"
    );
    // The right vault with a wrong passphrase.
    let bad = s.dir.path().join("bad");
    fs::write(&bad, "not it\n").unwrap();
    let mut cmd = atrest();
    cmd.args(["backup", "snapshots", "--repo"])
        .arg(&s.repo)
        .arg("--vault")
        .arg(&s.vault);
    cmd.arg("--passphrase-file").arg(&bad);
    let err = failure(cmd);
    assert!(
        err.to_lowercase().contains("passphrase") || err.contains("keyslot"),
        "{err}"
    );
    // Not a repository.
    let empty = s.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = run(&[
        &"backup",
        &"snapshots",
        &"--repo",
        &empty,
        &"--vault",
        &s.vault,
        &"--passphrase-file",
        &s.pass,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("atrest backup init"));
    // init refuses a non-empty directory.
    fs::write(empty.join("file"), b"x").unwrap();
    let out = run(&[
        &"backup",
        &"init",
        &"--repo",
        &empty,
        &"--vault",
        &s.vault,
        &"--passphrase-file",
        &s.pass,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

/// The mission's crypto-erase, end to end: a repository bound to a vault
/// whose only keyslot left is at the key authority is backed up and
/// restored through the authority; once the authority shreds the host, the
/// repository does not open with anything that remains on the host.
#[test]
fn shredding_the_host_at_the_authority_makes_every_snapshot_unreadable() {
    use crate::keyd::Keyd;
    use crate::remote::{BOOT_A, enrolled_vault, host};

    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault(&keyd, dir.path());
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("customer.db"), pattern(4, 200_000)).unwrap();

    // No secret given: the vault's remote keyslot asks the authority.
    let by_authority = |sub: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = host(&e.state, BOOT_A, &[&"backup", &sub]);
        for a in extra {
            cmd.arg(a);
        }
        cmd.arg("--repo").arg(&repo).arg("--vault").arg(&e.vault);
        cmd
    };
    // No recovery key: the vault's keys are the only way in.
    success(by_authority("init", &[&"--no-recovery-key"]));
    success(by_authority("run", &[&src]));
    let target = dir.path().join("restored");
    success(by_authority("restore", &[&"latest", &target]));
    assert_eq!(
        fs::read(
            target
                .join(src.strip_prefix("/").unwrap())
                .join("customer.db")
        )
        .unwrap(),
        pattern(4, 200_000)
    );

    // Leave the authority as the vault's only keyslot, then shred the host.
    ok(&[
        &"keyslot",
        &"remove",
        &e.vault,
        &"0",
        &"--passphrase-file",
        &e.pass,
    ]);
    keyd.cli_ok(&["host", "shred", "web-1", "--yes"]);

    let again = dir.path().join("again");
    let err = failure(by_authority("restore", &[&"latest", &again]));
    assert!(err.contains("shred"), "{err}");
    let mut cmd = by_authority("restore", &[&"latest", &again]);
    cmd.arg("--passphrase-file").arg(&e.pass);
    let err = failure(cmd);
    assert!(!err.is_empty());
    assert!(!again.exists() || fs::read_dir(&again).unwrap().next().is_none());
}

/// A repository's own keyslot at the key authority (`backup enroll`), with
/// no vault involved: commands given no secret ask the authority, the
/// slot shows where it points, and once the authority shreds the host and
/// the key file's slot is gone, nothing on the host opens the repository.
#[test]
fn a_repository_enrolled_at_the_authority_opens_through_it_until_the_host_is_shredded() {
    use crate::keyd::Keyd;
    use crate::remote::{BOOT_A, host};

    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let (repo, key, state) = (
        dir.path().join("repo"),
        dir.path().join("repo.key"),
        dir.path().join("host"),
    );
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ledger.db"), pattern(6, 300_000)).unwrap();
    let on_host = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = host(&state, BOOT_A, &[&"backup"]);
        for a in args {
            cmd.arg(a);
        }
        cmd.arg("--repo").arg(&repo);
        cmd
    };
    success(on_host(&[
        &"init",
        &"--key-file",
        &key,
        &"--no-recovery-key",
    ]));

    // Without a remote slot, no secret is an error naming the key file.
    let err = failure(on_host(&[&"snapshots"]));
    assert!(err.contains("--key-file"), "{err}");

    let token = keyd.token("backups");
    let fingerprint = keyd.cli_ok(&["fingerprint"]).trim().to_owned();
    success(on_host(&[
        &"enroll",
        &"--key-file",
        &key,
        &"--authority",
        &keyd.base,
        &"--token",
        &token,
        &"--ca-fingerprint",
        &fingerprint,
        &"--host-name",
        &"backup-1",
        &"--label",
        &"nightly",
    ]));
    let listed: serde_json::Value =
        serde_json::from_slice(&success(on_host(&[&"keyslot", &"list", &"--json"])).stdout)
            .unwrap();
    let remote = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "remote")
        .unwrap_or_else(|| panic!("no remote slot in {listed}"));
    assert_eq!(remote["label"], "nightly");
    assert_eq!(
        remote["authorities"]["members"][0]["url"],
        keyd.base.as_str()
    );
    assert_eq!(remote["authorities"]["members"][0]["host_id"], "backup-1");

    // No secret given: the authority releases the key.
    success(on_host(&[&"run", &src]));
    let target = dir.path().join("restored");
    success(on_host(&[&"restore", &"latest", &target]));
    let restored = target
        .join(src.strip_prefix("/").unwrap())
        .join("ledger.db");
    assert_eq!(fs::read(&restored).unwrap(), pattern(6, 300_000));
    // Every release is in the authority's audit log, naming the host.
    let audit = keyd.cli_ok(&["audit", "tail", "-n", "1000", "--json"]);
    assert!(
        audit.contains("released") && audit.contains("backup-1"),
        "{audit}"
    );

    // Leave the authority as the only way in (the key-file slot, 0, is
    // removed through the authority), then shred the host there.
    success(on_host(&[&"keyslot", &"remove", &"0"]));
    keyd.cli_ok(&["host", "shred", "backup-1", "--yes"]);
    let again = dir.path().join("again");
    let err = failure(on_host(&[&"restore", &"latest", &again]));
    assert!(err.contains("shred"), "{err}");
    let err = failure(on_host(&[
        &"restore",
        &"latest",
        &again,
        &"--key-file",
        &key,
    ]));
    assert!(err.contains("no keyslot"), "{err}");
    assert!(!again.exists() || fs::read_dir(&again).unwrap().next().is_none());
}

/// The same commands against a real S3-compatible server (moto's, started
/// here on 127.0.0.1; CI sets ATREST_TEST_MOTO and ATREST_REQUIRE_S3=1).
#[test]
fn an_s3_repository_round_trips_through_the_cli() {
    let bin = match std::env::var("ATREST_TEST_MOTO") {
        Ok(b) => b,
        Err(_) if Path::new("/opt/moto/bin/moto_server").exists() => {
            "/opt/moto/bin/moto_server".into()
        }
        Err(_) => {
            assert!(
                std::env::var_os("ATREST_REQUIRE_S3").is_none(),
                "ATREST_REQUIRE_S3 set but no moto_server"
            );
            eprintln!("skipping: no moto_server");
            return;
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut server);
    let endpoint = format!("http://127.0.0.1:{port}");
    crate::common::wait_for(30, "moto_server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        std::process::Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/nightly")])
            .status()
            .unwrap()
            .success()
    );

    let s = setup();
    let src = source(s.dir.path());
    let s3 = |sub: &[&str]| {
        let mut cmd = atrest();
        cmd.arg("backup").args(sub).args([
            "--repo",
            "s3://nightly/web-1",
            "--s3-endpoint",
            &endpoint,
            "--vault",
        ]);
        cmd.arg(&s.vault).arg("--passphrase-file").arg(&s.pass);
        cmd.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1");
        cmd
    };
    success(s3(&["init"]));
    // A key-file slot of the repository's own, used from here on.
    let key_file = s.dir.path().join("repo.key");
    let key_path = key_file.to_str().unwrap();
    success(s3(&[
        "keyslot",
        "add",
        "--kind",
        "key-file",
        "--new-key-file",
        key_path,
    ]));
    let by_file = |sub: &str| {
        let mut cmd = atrest();
        cmd.args([
            "backup",
            sub,
            "--repo",
            "s3://nightly/web-1",
            "--s3-endpoint",
            &endpoint,
        ])
        .arg("--key-file")
        .arg(&key_file)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
        cmd
    };
    let mut cmd = s3(&["run"]);
    cmd.arg(&src);
    success(cmd);
    let target = s.dir.path().join("from-s3");
    let mut cmd = s3(&["restore"]);
    cmd.arg("latest").arg(&target);
    success(cmd);
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(back.join("big.bin")).unwrap(), pattern(3, 3 << 20));
    let mut cmd = s3(&["check"]);
    cmd.arg("--read-data");
    assert!(String::from_utf8_lossy(&success(cmd).stdout).contains("no errors"));
    // A second init on the same prefix is refused.
    let err = failure(s3(&["init"]));
    assert!(err.contains("already holds a backup repository"), "{err}");

    // Shred: every key object gone from the bucket, every data object
    // still there, and nothing opens the repository.
    let list = |prefix: &str| -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-sf",
                &format!("{endpoint}/nightly?list-type=2&prefix=web-1/{prefix}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(list("keys/").contains("<Key>web-1/keys/01</Key>"));
    let data_before = list("data/").matches("<Key>").count();
    assert!(data_before > 0);
    let mut cmd = by_file("shred");
    cmd.arg("--yes");
    let out = success(cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("destroyed keys/00") && text.contains("destroyed keys/01"),
        "{text}"
    );
    assert!(!list("keys/").contains("<Key>"), "{}", list("keys/"));
    assert_eq!(list("data/").matches("<Key>").count(), data_before);
    let gone = s.dir.path().join("after-shred");
    for mut cmd in [by_file("restore"), s3(&["restore"])] {
        cmd.arg("latest").arg(&gone);
        let err = failure(cmd);
        assert!(err.contains("no keyslot left"), "{err}");
    }
    assert!(!gone.exists());
}

fn files_under(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// A repository with keyslots of its own: init with a passphrase, back up,
/// add a key-file slot, remove the passphrase slot, restore with the key
/// file, then shred: the recovery key and key file open nothing, every
/// data object is still there.
#[test]
fn a_repository_of_its_own_keyslots_lives_until_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    fs::write(&pass, "repository passphrase\n").unwrap();
    let (repo, key_file, recovery) = (
        dir.path().join("repo"),
        dir.path().join("repo.key"),
        dir.path().join("recovery.txt"),
    );
    let src = source(dir.path());
    let backup = |sub: &[&str], secret: (&str, &Path)| {
        let mut cmd = atrest();
        cmd.arg("backup")
            .args(sub)
            .arg("--repo")
            .arg(&repo)
            .arg(secret.0)
            .arg(secret.1);
        cmd
    };
    let mut init = backup(&["init"], ("--passphrase-file", &pass));
    init.arg("--recovery-key-out").arg(&recovery).args(FAST_KDF);
    let out = success(init);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 passphrase"));

    // No secret and no terminal: the error names what opens it.
    let mut cmd = atrest();
    cmd.args(["backup", "snapshots", "--repo"]).arg(&repo);
    let err = failure(cmd);
    assert!(
        err.contains("--passphrase-file FILE, or --recovery-key-file FILE"),
        "{err}"
    );

    let mut run = backup(&["run"], ("--passphrase-file", &pass));
    run.arg(&src);
    success(run);
    let mut add = backup(
        &["keyslot", "add", "--kind", "key-file"],
        ("--passphrase-file", &pass),
    );
    add.arg("--new-key-file")
        .arg(&key_file)
        .args(["--label", "ops"]);
    success(add);
    let mut list = atrest();
    list.args(["backup", "keyslot", "list", "--repo"])
        .arg(&repo);
    let text = String::from_utf8_lossy(&success(list).stdout).into_owned();
    assert!(
        text.contains("0 passphrase")
            && text.contains("1 recovery-key")
            && text.contains("2 key-file \"ops\""),
        "{text}"
    );
    success(backup(
        &["keyslot", "remove", "0"],
        ("--key-file", &key_file),
    ));
    let err = failure(backup(&["snapshots"], ("--passphrase-file", &pass)));
    assert!(
        err.contains("no keyslot of this backup repository opens with the passphrase"),
        "{err}"
    );
    let target = dir.path().join("restored");
    let mut restore = backup(&["restore", "latest"], ("--key-file", &key_file));
    restore.arg(&target);
    success(restore);
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(back.join("big.bin")).unwrap(), pattern(3, 3 << 20));
    let out = success(backup(&["status"], ("--recovery-key-file", &recovery)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 recovery-key") && text.contains("(opened with)"),
        "{text}"
    );
    assert!(text.contains("no vault"), "{text}");

    // Without --yes: what would be lost, exit 2, nothing changed.
    let out = backup(&["shred"], ("--key-file", &key_file))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreadable") && err.contains("--yes"), "{err}");
    assert_eq!(fs::read_dir(repo.join("keys")).unwrap().count(), 2);

    let count = |d: &str| files_under(&repo.join(d));
    let (data, index, snapshots) = (count("data"), count("index"), count("snapshots"));
    let out = success(backup(&["shred", "--yes"], ("--key-file", &key_file)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("destroyed keys/01")
            && text.contains("destroyed keys/02")
            && text.contains("no longer does"),
        "{text}"
    );
    assert_eq!(fs::read_dir(repo.join("keys")).unwrap().count(), 0);
    assert_eq!(
        (count("data"), count("index"), count("snapshots")),
        (data, index, snapshots)
    );
    let gone = dir.path().join("gone");
    for secret in [
        ("--key-file", key_file.as_path()),
        ("--recovery-key-file", &recovery),
    ] {
        let mut restore = backup(&["restore", "latest"], secret);
        restore.arg(&gone);
        let err = failure(restore);
        assert!(
            err.contains("no keyslot left") && err.contains("unreadable"),
            "{err}"
        );
    }
    assert!(!gone.exists());
}

/// kill -9 of `atrest backup run` at random points, many times: the
/// repository always checks clean (every byte read), no snapshot is ever
/// half there, and the next run completes, reusing what was uploaded.
#[test]
fn kill_9_during_run_never_damages_the_repository() {
    let s = setup();
    let src = s.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("part{i}")), pattern(100 + i, 9 << 20)).unwrap();
    }
    success(s.backup("init"));
    let mut seed = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    for round in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut cmd = s.backup("run");
        cmd.arg(&src)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50 + seed % 1500));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let mut check = s.backup("check");
        check.arg("--read-data");
        let out = check.output().unwrap();
        assert!(
            out.status.success(),
            "round {round} (run {status}): {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every snapshot that exists restores whole.
        let mut list = s.backup("snapshots");
        list.arg("--json");
        let snaps: serde_json::Value = serde_json::from_slice(&success(list).stdout).unwrap();
        for snap in snaps.as_array().unwrap() {
            assert_eq!(
                snap["snapshot"]["summary"]["files"], 4,
                "round {round}: a partial snapshot"
            );
        }
    }
    let mut cmd = s.backup("run");
    cmd.arg(&src).arg("--json");
    success(cmd);
    let target = s.dir.path().join("restored");
    let mut cmd = atrest();
    cmd.args(["backup", "restore", "latest"]).arg(&target);
    cmd.arg("--repo")
        .arg(&s.repo)
        .arg("--vault")
        .arg(&s.vault)
        .arg("--passphrase-file")
        .arg(&s.pass);
    success(cmd);
    for i in 0..4 {
        let got = fs::read(
            target
                .join(src.strip_prefix("/").unwrap())
                .join(format!("part{i}")),
        )
        .unwrap();
        assert!(got == pattern(100 + i, 9 << 20), "part{i} differs");
    }
}

#[test]
fn kill_9_during_prune_never_loses_a_kept_snapshot() {
    let s = setup();
    let src = s.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("part{i}")), pattern(200 + i, 6 << 20)).unwrap();
    }
    success(s.backup("init"));
    let mut seed = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let restore_matches = |round: usize| {
        let target = s.dir.path().join(format!("restored-{round}"));
        let mut cmd = atrest();
        cmd.args(["backup", "restore", "latest"]).arg(&target);
        cmd.arg("--repo")
            .arg(&s.repo)
            .arg("--vault")
            .arg(&s.vault)
            .arg("--passphrase-file")
            .arg(&s.pass);
        success(cmd);
        for i in 0..4 {
            let name = format!("part{i}");
            let got = fs::read(target.join(src.strip_prefix("/").unwrap()).join(&name)).unwrap();
            assert!(
                got == fs::read(src.join(&name)).unwrap(),
                "round {round}: {name} differs"
            );
        }
        fs::remove_dir_all(&target).unwrap();
    };
    for round in 0..6 {
        // A new snapshot with one file changed, the older ones forgotten:
        // the next prune has packs to delete and packs to rewrite.
        fs::write(
            src.join(format!("part{}", round % 4)),
            pattern(300 + round as u64, 6 << 20),
        )
        .unwrap();
        let mut run = s.backup("run");
        run.arg(&src);
        success(run);
        let mut forget = s.backup("forget");
        forget.args(["--keep-last", "1"]);
        success(forget);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut cmd = s.backup("prune");
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + seed % 900));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let mut check = s.backup("check");
        check.arg("--read-data");
        let out = check.output().unwrap();
        assert!(
            out.status.success(),
            "round {round} (prune {status}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        restore_matches(round);
    }
    // The killed prunes' locks are stale (their processes are gone): a
    // full prune runs, and `unlock` leaves no lock behind.
    success(s.backup("prune"));
    let out = success(s.backup("unlock"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stale lock"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fs::read_dir(s.repo.join("locks")).unwrap().count(), 0);
    let mut check = s.backup("check");
    check.arg("--read-data");
    assert!(String::from_utf8_lossy(&success(check).stdout).contains("no errors"));
    restore_matches(99);
}

/// A progress bar on a terminal (here a pseudo-terminal made by util-linux
/// `script`), and none when standard error is a pipe.
#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let s = setup();
    let src = s.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("part{i}")), pattern(400 + i, 8 << 20)).unwrap();
    }
    success(s.backup("init"));
    // Piped: no bar, no terminal escapes, only the summary.
    let mut cmd = s.backup("run");
    cmd.arg(&src);
    let out = success(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}') && !err.contains("files,"), "{err}");
    // On a terminal: the bar names the files and the time left.
    let line = format!(
        "{} backup run --force {} --repo {} --vault {} --passphrase-file {}",
        env!("CARGO_BIN_EXE_atrest"),
        src.display(),
        s.repo.display(),
        s.vault.display(),
        s.pass.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .output()
        .expect("util-linux script (bsdutils) must be installed");
    assert!(out.status.success(), "{out:?}");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        tty.contains("backup") && tty.contains("/6 files") && tty.contains("snapshot"),
        "{tty}"
    );
}

/// `backup mount`: every snapshot read-only, by time and by id, contents,
/// modes, symlinks and xattrs as saved; writes refused; `umount` and
/// SIGTERM both end it cleanly.
#[test]
fn mount_shows_every_snapshot_read_only() {
    let s = setup();
    let src = source(s.dir.path());
    rustix::fs::setxattr(
        src.join("big.bin"),
        "user.origin",
        b"e2e",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    success(s.backup("init"));
    let mut cmd = s.backup("run");
    cmd.arg(&src).arg("--json");
    let first: serde_json::Value = serde_json::from_slice(&success(cmd).stdout).unwrap();
    let first = first["snapshot"].as_str().unwrap().to_string();
    fs::write(src.join("docs/report-9f.txt"), b"second version").unwrap();
    let mut cmd = s.backup("run");
    cmd.arg(&src);
    success(cmd);

    let mnt = fs::canonicalize(s.dir.path()).unwrap().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let start = || {
        let mut cmd = s.backup("mount");
        cmd.arg(&mnt)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        wait_for(30, "the backup mount", || is_mount_point(&mnt));
        child
    };
    let mut child = start();
    let result = std::panic::catch_unwind(|| {
        let mut times: Vec<_> = fs::read_dir(mnt.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        times.sort();
        assert_eq!(times.len(), 3, "{times:?}"); // two snapshots and latest
        assert!(times.contains(&"latest".to_string()));
        let base = src.file_name().unwrap();
        let latest = mnt.join("snapshots/latest").join(base);
        assert_eq!(
            fs::read(latest.join("docs/report-9f.txt")).unwrap(),
            b"second version"
        );
        let old = mnt.join("ids").join(&first[..8]).join(base);
        assert_eq!(
            fs::read(old.join("docs/report-9f.txt")).unwrap(),
            b"CANARY-e2e-5521 quarterly numbers"
        );
        assert_eq!(
            fs::read(latest.join("big.bin")).unwrap(),
            pattern(3, 3 << 20)
        );
        let md = fs::metadata(latest.join("big.bin")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(
            md.mtime_nsec(),
            fs::metadata(src.join("big.bin")).unwrap().mtime_nsec()
        );
        assert_eq!(
            fs::read_link(latest.join("latest")).unwrap(),
            Path::new("docs/report-9f.txt")
        );
        let mut value = [0u8; 16];
        let n = rustix::fs::getxattr(latest.join("big.bin"), "user.origin", &mut value).unwrap();
        assert_eq!(&value[..n], b"e2e");
        // A range in the middle of the file (crossing chunk boundaries).
        let f = fs::File::open(latest.join("big.bin")).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 1_234_567).unwrap();
        assert_eq!(buf, pattern(3, 3 << 20)[1_234_567..1_234_567 + (1 << 20)]);
        // Read-only.
        let err = fs::write(latest.join("new"), b"x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::ROFS.raw_os_error())
        );
        assert!(
            fs::OpenOptions::new()
                .write(true)
                .open(latest.join("big.bin"))
                .is_err()
        );
    });
    // `umount` ends the command with exit 0.
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let status = child.wait().unwrap();
    if let Err(panic) = result {
        let _ = detach(&mnt);
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "{status}");
    assert!(!is_mount_point(&mnt));
    // SIGTERM unmounts too.
    let mut child = start();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let _ = detach(&mnt);
    assert!(status.success(), "{status}");
    assert!(!is_mount_point(&mnt));
}
