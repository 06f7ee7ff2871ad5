//! The key authority as the witness of a format 2 vault's generation
//! (docs/format.md §16.17), end to end with a real `atrest keyd serve` on
//! 127.0.0.1: the mount reports at mount and unmount, `atrest unlock`
//! sends the vault's claim, an earlier copy of the backing directory put
//! back is refused (exit 5) under `rollback: deny` and held for an approver
//! under `approve`, with audit entries naming both generations; an
//! approved rollback is recorded and reported; kill -9 of the mount after a
//! report is no false alarm, and neither is an authority down while the
//! mount writes past 31 checkpoints (`WITNESSED`).

use std::fs;
use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::common::{copy_dir, detach, is_mount_point, ok, success, wait_for};
use crate::keyd::Keyd;
use crate::remote::{BOOT_A, BOOT_B, Enrolled, enrolled_vault_with, host};

/// The details of every audit entry, oldest first.
fn audit_details(keyd: &Keyd) -> Vec<Value> {
    keyd.cli_ok(&["audit", "tail", "-n", "10000", "--json"])
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            match &entry["details"] {
                Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                other => other.clone(),
            }
        })
        .collect()
}

/// Generation reports of `reason` the authority logged as witnessed,
/// from boot `boot`.
fn witnessed(keyd: &Keyd, reason: &str, boot: &str) -> usize {
    audit_details(keyd)
        .iter()
        .filter(|d| {
            d["generation_report"] == reason && d["outcome"] == "witnessed" && d["boot_id"] == boot
        })
        .count()
}

/// `atrest unlock VAULT --mount DIR` as this host in `boot`.
fn unlock(e: &Enrolled, boot: &str) -> Output {
    host(
        &e.state,
        boot,
        &[&"unlock", &e.vault, &"--mount", &e.mnt, &"--timeout", &"60"],
    )
    .output()
    .unwrap()
}

/// The group's policy: release, unless the vault is an earlier copy or a
/// fork of what the authority witnessed (then `rollback`).
fn rollback_policy(keyd: &Keyd, rollback: &str) {
    keyd.cli_ok(&[
        "policy",
        "set",
        "--group",
        "web",
        "auto",
        "--unannounced-reboot",
        "auto",
        "--rollback",
        rollback,
    ]);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The pid of the process serving the vault (its mount lock names it).
fn mount_pid(e: &Enrolled) -> i32 {
    let holder = fs::read_to_string(e.vault.join("atrest.lock")).unwrap();
    holder.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn an_earlier_copy_is_held_or_refused_by_the_authority_and_kill_9_is_no_false_alarm() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault_with(&keyd, dir.path(), &["--format", "2"]);
    let status = String::from_utf8(
        host(&e.state, BOOT_A, &[&"status", &e.vault])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        status.contains(&format!("witness:    key authority {}", keyd.base)),
        "{status}"
    );

    // Mount (a report), write, unmount (a report); copy; again.
    success(host(
        &e.state,
        BOOT_A,
        &[&"unlock", &e.vault, &"--mount", &e.mnt],
    ));
    fs::write(e.mnt.join("kept"), b"before the copy").unwrap();
    ok(&[&"unmount", &e.mnt]);
    assert_eq!(witnessed(&keyd, "unmount", BOOT_A), 1);
    let saved = dir.path().join("saved");
    copy_dir(&e.vault, &saved);
    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(e.mnt.join("later"), b"after the copy").unwrap();
    ok(&[&"unmount", &e.mnt]);
    assert_eq!(witnessed(&keyd, "unmount", BOOT_A), 2);

    // The earlier copy put back, under `rollback: deny`: refused, exit 5,
    // nothing mounted, and the decision names both generations.
    copy_dir(&saved, &e.vault);
    rollback_policy(&keyd, "deny");
    let out = unlock(&e, BOOT_A);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    assert!(!is_mount_point(&e.mnt));
    let judged = |keyd: &Keyd| {
        audit_details(keyd)
            .into_iter()
            .filter(|d| d["generation"]["status"] == "older")
            .collect::<Vec<_>>()
    };
    let denied = judged(&keyd);
    assert_eq!(denied.len(), 1, "{denied:?}");
    let (claimed, witnessed_w) = (
        &denied[0]["generation"]["claimed"],
        &denied[0]["generation"]["witnessed"],
    );
    assert!(
        claimed["seq"].as_u64().unwrap() < witnessed_w["seq"].as_u64().unwrap(),
        "{}",
        denied[0]
    );
    assert_eq!(witnessed_w["reason"], "unmount", "{}", denied[0]);

    // Under `rollback: approve`: held, with both generations, until an
    // approver releases it; then the mount records the rollback and
    // reports it, and the authority follows the copy.
    rollback_policy(&keyd, "approve");
    let waiting = host(
        &e.state,
        BOOT_A,
        &[&"unlock", &e.vault, &"--mount", &e.mnt, &"--timeout", &"60"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut held = None;
    wait_for(30, "the unlock of the earlier copy to be held", || {
        let listed: Value = serde_json::from_str(&keyd.cli_ok(&["requests", "--json"])).unwrap();
        held = listed[0]["id"]
            .as_str()
            .map(|id| (id.to_owned(), listed[0].clone()));
        held.is_some()
    });
    let (id, request) = held.unwrap();
    assert!(
        request.to_string().contains("older than"),
        "the held request names the rollback: {request}"
    );
    assert_eq!(
        judged(&keyd).len(),
        2,
        "the held entry names both generations"
    );
    keyd.cli_ok(&["approve", &id, "--as", "alice"]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollback accepted (older) by the key authority"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(e.mnt.join("kept")).unwrap(), b"before the copy");
    assert!(!e.mnt.join("later").exists());
    ok(&[&"unmount", &e.mnt]);
    assert_eq!(witnessed(&keyd, "rollback_accepted", BOOT_A), 1);
    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "current again: {}", stderr(&out));
    ok(&[&"unmount", &e.mnt]);

    let judged_before = judged(&keyd).len();

    // kill -9 of the mount after its report (a new boot's first, which is
    // logged): the next unlock is current, no alarm, and fsync'ed data is
    // there.
    success(host(&e.state, BOOT_A, &[&"reboot", &"--planned", &e.vault]));
    let out = unlock(&e, BOOT_B);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(30, "the mount's report of the new boot", || {
        witnessed(&keyd, "mount", BOOT_B) == 1
    });
    let mut file = fs::File::create(e.mnt.join("during")).unwrap();
    file.write_all(b"fsynced").unwrap();
    file.sync_all().unwrap();
    drop(file);
    let pid = rustix::process::Pid::from_raw(mount_pid(&e)).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    wait_for(
        30,
        "the killed mount process to let go of the vault",
        || atrest_vault::MountLock::holder(&e.vault).is_none(),
    );
    detach(&e.mnt).unwrap();
    let out = unlock(&e, BOOT_B);
    assert!(out.status.success(), "no false alarm: {}", stderr(&out));
    assert!(!stderr(&out).contains("rollback"), "{}", stderr(&out));
    assert_eq!(fs::read(e.mnt.join("during")).unwrap(), b"fsynced");
    ok(&[&"unmount", &e.mnt]);
    assert_eq!(
        judged(&keyd).len(),
        judged_before,
        "no later unlock was judged older"
    );
}

/// The authority unreachable while the mount writes past 31 checkpoints
/// (docs/format.md §16.17.4): the generation it witnessed last (the
/// mount's report) was logged as acknowledged (`WITNESSED`), so it is
/// still in the vault's lineage and the next unlock is current, under
/// `rollback: deny`, and no unlock is judged older or forked.
#[test]
fn an_authority_down_for_40_checkpoints_of_writes_is_no_false_alarm() {
    let mut keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault_with(&keyd, dir.path(), &["--format", "2"]);
    rollback_policy(&keyd, "deny");
    let checkpoint = || -> u64 {
        let out = ok(&[&"status", &e.vault, &"--json"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        status["metadata"]["checkpoint"].as_u64().unwrap()
    };
    let out = host(&e.state, BOOT_A, &[&"unlock", &e.vault, &"--mount", &e.mnt])
        .env("ATREST_CHECKPOINT_INTERVAL_MS", "20")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(30, "the mount's report", || {
        witnessed(&keyd, "mount", BOOT_A) == 1
    });
    keyd.stop();
    let first = checkpoint();
    let mut n = 0u64;
    wait_for(300, "40 checkpoints of writes", || {
        n += 1;
        fs::write(e.mnt.join(format!("f{}", n % 8)), n.to_string()).unwrap();
        checkpoint() >= first + 40
    });
    // Its report fails: the authority is still down.
    ok(&[&"unmount", &e.mnt]);
    keyd.serve();
    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "no false alarm: {}", stderr(&out));
    assert!(!stderr(&out).contains("rollback"), "{}", stderr(&out));
    assert!(!fs::read(e.mnt.join("f1")).unwrap().is_empty());
    ok(&[&"unmount", &e.mnt]);
    let judged: Vec<_> = audit_details(&keyd)
        .into_iter()
        .filter(|d| !d["generation"]["status"].is_null())
        .map(|d| d["generation"]["status"].clone())
        .collect();
    assert!(
        judged.iter().all(|s| s == "first" || s == "current"),
        "{judged:?}"
    );
    assert!(judged.iter().any(|s| s == "current"), "{judged:?}");
}

/// `atrest migrate` of a format 1 vault with a remote slot, in a boot its
/// authority released a key to (the ticket): the migration's last
/// generation is reported with reason 7 (`migrate`, audited), and the
/// format 2 vault then unlocks through the authority as current under
/// `rollback: deny`, with its files.
#[test]
fn a_migration_is_reported_to_the_authority_and_the_vault_unlocks_as_current() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault_with(&keyd, dir.path(), &[]);
    rollback_policy(&keyd, "deny");
    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(e.mnt.join("kept"), b"written as format 1").unwrap();
    ok(&[&"unmount", &e.mnt]);

    success(host(
        &e.state,
        BOOT_A,
        &[&"migrate", &e.vault, &"--passphrase-file", &e.pass],
    ));
    assert_eq!(witnessed(&keyd, "migrate", BOOT_A), 1);

    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(e.mnt.join("kept")).unwrap(),
        b"written as format 1"
    );
    ok(&[&"unmount", &e.mnt]);
    assert_eq!(witnessed(&keyd, "unmount", BOOT_A), 1);
}

/// `atrest fsck --repair` ends with a checkpoint: its generation is
/// reported with reason 6 (`repair`, audited) from a boot the authority
/// released a key to, and the vault then unlocks as current under
/// `rollback: deny`.
#[test]
fn a_repair_is_reported_to_the_authority() {
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault_with(&keyd, dir.path(), &["--format", "2"]);
    rollback_policy(&keyd, "deny");
    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(e.mnt.join("kept"), b"before the repair").unwrap();
    ok(&[&"unmount", &e.mnt]);
    // A data file of no object: a note, which the repair removes.
    let planted = e.vault.join("objects/00/0000000000010000");
    fs::write(&planted, [7u8; 4096]).unwrap();

    let out = host(
        &e.state,
        BOOT_A,
        &[
            &"fsck",
            &e.vault,
            &"--repair",
            &"--passphrase-file",
            &e.pass,
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!planted.exists());
    assert_eq!(witnessed(&keyd, "repair", BOOT_A), 1);

    let out = unlock(&e, BOOT_A);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(e.mnt.join("kept")).unwrap(), b"before the repair");
    ok(&[&"unmount", &e.mnt]);
}
