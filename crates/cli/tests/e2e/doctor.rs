//! `atrest doctor` against conditions built on this machine: each test
//! creates one, asserts doctor reports it, applies the printed fix (or its
//! effect, where the fix is interactive), asserts the finding is gone, and
//! restores the machine's state in a guard that also runs on failure.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Mounted;

/// Doctor's findings, as JSON objects.
fn findings(shell_prefix: &str) -> Vec<serde_json::Value> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{shell_prefix} exec \"$0\" doctor --json"))
        .arg(env!("CARGO_BIN_EXE_atrest"))
        .output()
        .expect("run atrest doctor");
    let code = out.status.code().expect("doctor exited");
    assert!(
        code <= 2,
        "doctor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let worst = list
        .iter()
        .map(|f| match f["severity"].as_str().unwrap() {
            "critical" => 2,
            "warning" => 1,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    assert_eq!(code, worst, "the exit code is the worst severity");
    list
}

/// The finding `id` whose `found` names `what`, if any.
fn finding(list: &[serde_json::Value], id: &str, what: &str) -> Option<serde_json::Value> {
    list.iter()
        .find(|f| f["id"] == id && f["found"].as_str().unwrap().contains(what))
        .cloned()
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "the printed fix failed: {cmd}");
}

/// Runs `undo` on drop.
struct Restore<F: FnMut()>(F);
impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[test]
fn doctor_world_readable_key_file_is_critical_and_its_chmod_fixes_it() {
    let dir = Path::new("/etc/atrest");
    let made_dir = !dir.exists();
    fs::create_dir_all(dir).unwrap();
    let key = dir.join(format!("doctor-e2e-{}.key", std::process::id()));
    let _restore = Restore(|| {
        let _ = fs::remove_file(&key);
        if made_dir {
            let _ = fs::remove_dir(dir);
        }
    });
    fs::write(&key, [7u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let list = findings("");
    let f =
        finding(&list, "secret-mode", &key.display().to_string()).expect("loose key file reported");
    assert_eq!(f["severity"], "critical");
    assert!(f["found"].as_str().unwrap().contains("0644"));
    sh(f["fix"].as_str().unwrap());
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(finding(&findings(""), "secret-mode", &key.display().to_string()).is_none());
}

#[test]
fn doctor_core_pattern_with_open_limit_is_reported_and_the_sysctl_fix_removes_it() {
    const PATTERN: &str = "/proc/sys/kernel/core_pattern";
    const DROPIN: &str = "/etc/sysctl.d/50-atrest-coredump.conf";
    let before = fs::read_to_string(PATTERN).unwrap();
    let dropin_existed = Path::new(DROPIN).exists();
    let _restore = Restore(|| {
        fs::write(PATTERN, before.trim_end()).expect("restore kernel.core_pattern");
        if !dropin_existed {
            let _ = fs::remove_file(DROPIN);
        }
    });
    fs::write(PATTERN, "core").unwrap();
    let list = findings("ulimit -c unlimited;");
    let f = finding(
        &list,
        "core-dumps-enabled",
        "kernel.core_pattern = \"core\"",
    )
    .expect("core dumps reported");
    assert_eq!(f["severity"], "warning");
    assert!(
        finding(&findings("ulimit -c 0;"), "core-dumps-enabled", "").is_none(),
        "limit 0 dumps nothing"
    );
    sh(f["fix"].as_str().unwrap());
    assert_eq!(fs::read_to_string(PATTERN).unwrap().trim(), "|/bin/false");
    assert!(finding(&findings("ulimit -c unlimited;"), "core-dumps-enabled", "").is_none());
}

#[test]
fn doctor_local_unit_data_outside_a_vault_is_reported_until_a_vault_holds_it() {
    // A PostgreSQL-like data dir written by a local unit, on the clear root disk.
    let base = tempfile::Builder::new()
        .prefix("atrest-doctor-e2e-")
        .tempdir_in("/var/lib")
        .unwrap();
    let data = base.path().join("pgdata");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let unit = PathBuf::from(format!(
        "/etc/systemd/system/atrest-doctor-e2e-{}.service",
        std::process::id()
    ));
    let _restore = Restore(|| {
        let _ = fs::remove_file(&unit);
    });
    fs::create_dir_all("/etc/systemd/system").unwrap();
    fs::write(
        &unit,
        format!(
            "[Service]\nExecStart=/bin/true\nWorkingDirectory={}\n",
            data.display()
        ),
    )
    .unwrap();
    let f = finding(
        &findings(""),
        "unit-path-outside-vault",
        &data.display().to_string(),
    )
    .expect("unit data reported");
    assert!(f["fix"].as_str().unwrap().contains("atrest init"));
    // The fix's effect (its `atrest init` asks for a passphrase): a vault
    // mounted on the directory (on the same clear disk as before, not in
    // /tmp, which the unit check leaves to the /tmp check).
    let vault = Mounted::new_in(base.path());
    fs::write(
        &unit,
        format!(
            "[Service]\nExecStart=/bin/true\nWorkingDirectory={}\n",
            vault.mnt.display()
        ),
    )
    .unwrap();
    assert!(
        finding(
            &findings(""),
            "unit-path-outside-vault",
            &unit.file_name().unwrap().to_string_lossy()
        )
        .is_none()
    );
}

#[test]
fn doctor_vault_mounted_with_allow_other_is_reported() {
    let mut m = Mounted::new();
    m.unmount();
    m.mount_with_options("allow_other");
    let f = finding(
        &findings(""),
        "vault-allow-other",
        &m.vault.display().to_string(),
    )
    .expect("allow_other reported");
    assert_eq!(f["severity"], "info");
    m.unmount();
    m.mount();
    assert!(
        finding(
            &findings(""),
            "vault-allow-other",
            &m.vault.display().to_string()
        )
        .is_none()
    );
}

#[test]
fn doctor_swap_file_on_clear_disk_is_critical_until_swapoff() {
    let dir = tempfile::Builder::new()
        .prefix("atrest-doctor-e2e-")
        .tempdir_in("/var/lib")
        .unwrap();
    let swap = dir.path().join("swapfile");
    let _restore = Restore(|| {
        // Already off when the test got that far.
        let _ = Command::new("swapoff")
            .arg(&swap)
            .stderr(std::process::Stdio::null())
            .status();
    });
    sh(&format!(
        "fallocate -l 16M {s} && chmod 600 {s} && mkswap {s} >/dev/null && swapon {s}",
        s = swap.display()
    ));
    let name = swap.display().to_string();
    let f = finding(&findings(""), "swap-unencrypted", &name).expect("swap file reported");
    assert_eq!(f["severity"], "critical");
    let fix = f["fix"].as_str().unwrap();
    // The fix's first command (the rest is /etc/fstab and crypttab advice).
    let first = format!("swapoff {name}");
    assert!(fix.starts_with(&first), "{fix}");
    sh(&first);
    assert!(finding(&findings(""), "swap-unencrypted", &name).is_none());
}
