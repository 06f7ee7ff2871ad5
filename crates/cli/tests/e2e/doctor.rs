//! `atrest doctor` against conditions built on this machine: each test
//! creates one, asserts doctor reports it, applies the printed fix (or its
//! effect, where the fix is interactive), asserts the finding is gone, and
//! restores the machine's state in a guard that also runs on failure.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Mounted, ok, success};
use crate::keyd::Keyd;
use crate::remote::{BOOT_A, BOOT_B, audit_size, enrolled_vault, host};

/// Doctor's findings, as JSON objects.
fn findings(shell_prefix: &str) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{shell_prefix} exec \"$0\" doctor --json"))
        .arg(env!("CARGO_BIN_EXE_atrest"));
    doctor_json(cmd)
}

/// The findings of `atrest doctor --json --vault VAULT` as host `state`
/// at boot `boot` (the e2e hosts' state dirs and simulated boot ids).
fn findings_of_host(vault: &Path, state: &Path, boot: &str) -> Vec<serde_json::Value> {
    let mut cmd = crate::common::atrest();
    cmd.args(["doctor", "--json", "--vault"])
        .arg(vault)
        .env("ATREST_STATE_DIR", state)
        .env("ATREST_BOOT_ID", boot);
    doctor_json(cmd)
}

/// Runs a doctor command; its findings, checked to be one JSON object per
/// line and to match the exit code.
fn doctor_json(mut cmd: Command) -> Vec<serde_json::Value> {
    let out = cmd.output().expect("run atrest doctor");
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

/// Runs a data move as printed ("stop the service; COMMANDS ; start the
/// service, ..."): its COMMANDS, with `pass` given to the `atrest init`
/// and `atrest mount` in them instead of the terminal they would ask on.
/// The caller unmounts `dir` (the vault is mounted there).
fn run_move_fix(fix: &str, pass: &Path) {
    let commands = fix
        .strip_prefix("stop the service; ")
        .and_then(|rest| rest.split(" ; start the service").next())
        .unwrap_or_else(|| panic!("the fix's shape changed: {fix}"));
    run_with_passphrase(commands, pass);
}

/// Runs printed `commands` with `pass` given to each `atrest init` and
/// `atrest mount` in them.
fn run_with_passphrase(commands: &str, pass: &Path) {
    let with_pass = format!("--passphrase-file {}", pass.display());
    let commands = commands
        .replace(
            "atrest init ",
            &format!(
                "\"$ATREST\" init {with_pass} --no-recovery-key {} ",
                crate::common::FAST_KDF.join(" ")
            ),
        )
        .replace("atrest mount ", &format!("\"$ATREST\" mount {with_pass} "))
        .replace("atrest unmount ", "\"$ATREST\" unmount ");
    let st = Command::new("sh")
        .arg("-c")
        .arg(&commands)
        .env("ATREST", env!("CARGO_BIN_EXE_atrest"))
        .status()
        .unwrap();
    assert!(st.success(), "the printed fix failed: {commands}");
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

/// The core-dump settings (kernel.core_pattern, fs.suid_dumpable) are the
/// machine's: the tests that change them take turns.
static CORE_SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn core_settings() -> std::sync::MutexGuard<'static, ()> {
    CORE_SETTINGS.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn doctor_core_pattern_with_open_limit_is_reported_and_the_sysctl_fix_removes_it() {
    const PATTERN: &str = "/proc/sys/kernel/core_pattern";
    const DROPIN: &str = "/etc/sysctl.d/50-atrest-coredump.conf";
    let _turn = core_settings();
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
fn doctor_local_unit_data_outside_a_vault_is_reported_until_the_printed_move() {
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
    let fix = f["fix"].as_str().unwrap();
    assert!(!fix.contains("allow_other"), "root's directory: {fix}");
    // The printed move, on the same clear disk as before (not in /tmp,
    // which the unit check leaves to the /tmp check).
    let pass = base.path().join("pass");
    fs::write(&pass, "unit vault passphrase\n").unwrap();
    let _unmount = Restore(|| {
        let _ = crate::common::run(&[&"unmount", &"--lazy", &data]);
    });
    run_move_fix(fix, &pass);
    assert!(crate::common::is_mount_point(&data));
    assert_eq!(fs::read_to_string(data.join("PG_VERSION")).unwrap(), "15\n");
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
fn doctor_vault_mounted_with_allow_other_is_reported_until_the_printed_remount() {
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
    let fix = f["fix"].as_str().unwrap();
    assert!(fix.starts_with("atrest unmount "), "{fix}");
    run_with_passphrase(fix, &m.pass);
    assert!(
        !fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(" {} ", m.mnt.display())) && l.contains("allow_other")),
        "mounted again without allow_other"
    );
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
    // The fix as printed: swapoff, the /etc/fstab and crypttab advice a comment.
    assert!(fix.starts_with(&format!("swapoff {name}  # ")), "{fix}");
    sh(fix);
    assert!(finding(&findings(""), "swap-unencrypted", &name).is_none());
}

/// A vault's remote keyslot against a real `atrest keyd serve`: nothing
/// while it answers with the pinned CA; a warning while it is down, gone
/// once it serves again; critical when another authority (its own CA)
/// holds the address, gone once the vault is enrolled there with the new
/// pin and the old keyslot removed, as the fix says.
#[test]
fn doctor_remote_keyslot_authority_down_or_replaced_is_reported_until_fixed() {
    let mut keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault(&keyd, dir.path());
    let vault = e.vault.display().to_string();
    let check = || findings_of_host(&e.vault, &e.state, BOOT_A);
    let logged = audit_size(&keyd);
    let list = check();
    for id in ["remote-keyslot-unreachable", "remote-keyslot-ca-changed"] {
        assert!(finding(&list, id, &vault).is_none(), "{list:?}");
    }
    assert_eq!(
        audit_size(&keyd),
        logged,
        "doctor's probe leaves nothing in the authority's log"
    );

    keyd.stop();
    let list = check();
    let f = finding(&list, "remote-keyslot-unreachable", &vault).expect("a stopped authority");
    assert_eq!(f["severity"], "warning");
    assert!(f["found"].as_str().unwrap().contains(&keyd.base), "{f}");
    assert!(
        f["fix"].as_str().unwrap().contains("start the authority"),
        "{f}"
    );
    keyd.serve();
    assert!(finding(&check(), "remote-keyslot-unreachable", &vault).is_none());

    // Another authority, with a CA of its own, on the same address.
    keyd.stop();
    let address = keyd.base.trim_start_matches("https://").to_owned();
    let other = Keyd::init_listening(&dir.path().join("other-keyd"), &address, &[]);
    assert_eq!(other.base, keyd.base);
    let new_pin = other.cli_ok(&["fingerprint"]).trim().to_owned();
    let list = check();
    let f = finding(&list, "remote-keyslot-ca-changed", &vault).expect("a replaced CA");
    assert_eq!(f["severity"], "critical");
    assert!(f["found"].as_str().unwrap().contains(&new_pin), "{f}");
    assert!(
        finding(&list, "remote-keyslot-unreachable", &vault).is_none(),
        "it does answer"
    );

    // The fix, for a CA replaced on purpose: enroll with the new pin, then
    // remove the keyslot it names.
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("--ca-fingerprint {new_pin}")),
        "{fix}"
    );
    let remove: Vec<&str> = fix
        .split("atrest keyslot remove ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the fix names the keyslot to remove")
        .split_whitespace()
        .collect();
    assert_eq!(remove.len(), 2, "{fix}");
    assert_eq!(remove[0], vault);
    let token = other.token("web");
    success(host(
        &e.state,
        BOOT_A,
        &[
            &"enroll",
            &e.vault,
            &"--authority",
            &other.base,
            &"--token",
            &token,
            &"--ca-fingerprint",
            &new_pin,
            &"--host-name",
            &"web-1",
            &"--passphrase-file",
            &e.pass,
        ],
    ));
    ok(&[
        &"keyslot",
        &"remove",
        &e.vault,
        &remove[1],
        &"--passphrase-file",
        &e.pass,
    ]);
    let list = check();
    for id in ["remote-keyslot-unreachable", "remote-keyslot-ca-changed"] {
        assert!(finding(&list, id, &vault).is_none(), "{list:?}");
    }
}

/// A reboot nobody announced, let through by the authority's policy, is
/// what the host kept from the release entry: doctor warns about it while
/// that boot runs. The fix (announce the next reboot) makes the next boot
/// planned; the old one is then listed as info.
#[test]
fn doctor_unaccounted_reboot_is_reported_until_a_planned_reboot() {
    const BOOT_C: &str = "cccccccc-1111-2222-3333-444444444444";
    let keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault(&keyd, dir.path());
    keyd.cli_ok(&[
        "policy",
        "set",
        "--group",
        "web",
        "auto",
        "--unannounced-reboot",
        "auto",
    ]);
    let unlock = |boot: &str| {
        success(host(
            &e.state,
            boot,
            &[&"unlock", &e.vault, &"--mount", &e.mnt],
        ));
        ok(&[&"unmount", &e.mnt]);
    };
    unlock(BOOT_A);
    let list = findings_of_host(&e.vault, &e.state, BOOT_A);
    assert!(
        finding(&list, "unaccounted-reboots", "").is_none(),
        "a first boot is accounted for: {list:?}"
    );

    unlock(BOOT_B);
    let list = findings_of_host(&e.vault, &e.state, BOOT_B);
    let f = finding(&list, "unaccounted-reboots", BOOT_B).expect("the unannounced boot");
    assert_eq!(f["severity"], "warning");
    let found = f["found"].as_str().unwrap();
    assert!(found.starts_with("this boot"), "{found}");
    assert!(found.contains("unannounced reboot"), "{found}");
    assert!(found.contains(&keyd.base), "{found}");
    let fix = f["fix"].as_str().unwrap();
    assert!(fix.contains("atrest reboot --planned"), "{fix}");

    // The fix: announce, reboot (boot C), unlock.
    success(host(&e.state, BOOT_B, &[&"reboot", &"--planned", &e.vault]));
    unlock(BOOT_C);
    let list = findings_of_host(&e.vault, &e.state, BOOT_C);
    let f = finding(&list, "unaccounted-reboots", BOOT_B).expect("still listed");
    assert_eq!(f["severity"], "info", "{f}");
    assert!(
        f["found"]
            .as_str()
            .unwrap()
            .starts_with("1 earlier boot(s)"),
        "{f}"
    );
}

/// A vault mounted by another user: its real mount process is not
/// dumpable, and /proc shows that the way doctor reads it (its files
/// belong to root, the directory to the user). A dumpable process of
/// that user named atrest (as an old binary would be) is critical until
/// the printed `kill` ends it.
#[test]
fn doctor_dumpable_atrest_process_of_another_user_is_critical_until_killed() {
    use std::os::unix::fs::MetadataExt;
    const NOBODY: u32 = 65534;
    let dir = tempfile::Builder::new()
        .prefix("atrest-doctor-user-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let (real, fake) = (dir.path().join("real"), dir.path().join("fake"));
    for d in [&real, &fake] {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = real.join("atrest");
    fs::copy(env!("CARGO_BIN_EXE_atrest"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |script: &str| {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "sh", "-c", script])
            .output()
            .expect("runuser (util-linux)");
        assert!(
            out.status.success(),
            "as nobody: {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (d, b) = (dir.path().display(), bin.display());
    as_nobody(&format!(
        "set -e; cd {d}; printf 'pw\\n' > pass; \
         {b} init v --passphrase-file pass --no-recovery-key --argon2-memory 8 --argon2-iterations 1; \
         mkdir m; {b} mount v m --passphrase-file pass"
    ));
    let _unmount = Restore(|| {
        let _ = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&bin)
            .arg("unmount")
            .arg(dir.path().join("m"))
            .status();
    });
    let holder = fs::read_to_string(dir.path().join("v").join(atrest_vault::LOCK_FILE)).unwrap();
    let mount_pid: u32 = holder.split_whitespace().next().unwrap().parse().unwrap();
    let proc_dir = format!("/proc/{mount_pid}");
    assert_eq!(fs::metadata(&proc_dir).unwrap().uid(), NOBODY);
    assert_eq!(
        fs::metadata(format!("{proc_dir}/status")).unwrap().uid(),
        0,
        "a non-dumpable process's /proc files belong to root"
    );
    let list = findings("");
    assert!(
        finding(&list, "atrest-process-dumpable", &mount_pid.to_string()).is_none(),
        "{list:?}"
    );

    // A dumpable process of nobody named atrest (a copy of sleep), its
    // core limit 0 so that only its dumpable state can be reported.
    let sleep = fake.join("atrest");
    fs::copy("/bin/sleep", &sleep).unwrap();
    fs::set_permissions(&sleep, fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            "ulimit -c 0; exec \"$0\" 600",
        ])
        .arg(&sleep)
        .spawn()
        .expect("setpriv (util-linux)");
    let pid = child.id();
    let _kill = Restore(|| {
        // Already gone when the test got that far.
        let _ = Command::new("kill")
            .arg(pid.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    });
    // Until sh has exec'd it, the process is not yet named atrest.
    while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "atrest\n" {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process as nobody ended: {status}");
        }
        std::thread::yield_now();
    }
    let what = format!("{pid} of uid {NOBODY} is dumpable");
    let list = findings("");
    let f = finding(&list, "atrest-process-dumpable", &what).expect("the dumpable process");
    assert_eq!(f["severity"], "critical");
    let fix = f["fix"].as_str().unwrap();
    let kill = format!("kill {pid}");
    assert!(fix.contains(&kill), "{fix}");
    sh(&kill);
    child.wait().unwrap();
    assert!(finding(&findings(""), "atrest-process-dumpable", &what).is_none());
}

#[test]
fn doctor_suid_dumpable_is_reported_while_dumps_are_stored_and_its_sysctl_fixes_it() {
    const PATTERN: &str = "/proc/sys/kernel/core_pattern";
    const SUID: &str = "/proc/sys/fs/suid_dumpable";
    const DROPIN: &str = "/etc/sysctl.d/50-atrest-suid-dumpable.conf";
    let _turn = core_settings();
    let (pattern, suid) = (
        fs::read_to_string(PATTERN).unwrap(),
        fs::read_to_string(SUID).unwrap(),
    );
    let dropin_existed = Path::new(DROPIN).exists();
    let _restore = Restore(|| {
        fs::write(PATTERN, pattern.trim_end()).expect("restore kernel.core_pattern");
        fs::write(SUID, suid.trim_end()).expect("restore fs.suid_dumpable");
        if !dropin_existed {
            let _ = fs::remove_file(DROPIN);
        }
    });
    // Dumps stored as files (an absolute pattern, as fs.suid_dumpable=2
    // wants), and credential-changing processes allowed to dump.
    fs::write(PATTERN, "/var/crash/core.%p").unwrap();
    fs::write(SUID, "2").unwrap();
    let f = finding(&findings(""), "suid-dumpable", "fs.suid_dumpable = 2")
        .expect("suid_dumpable reported");
    assert_eq!(f["severity"], "warning");
    // Nothing stored (dumps piped to /bin/false): nothing to report.
    fs::write(PATTERN, "|/bin/false").unwrap();
    assert!(finding(&findings(""), "suid-dumpable", "").is_none());
    fs::write(PATTERN, "/var/crash/core.%p").unwrap();
    sh(f["fix"].as_str().unwrap());
    assert_eq!(fs::read_to_string(SUID).unwrap().trim(), "0");
    assert_eq!(
        fs::read_to_string(DROPIN).unwrap().trim(),
        "fs.suid_dumpable=0",
        "the setting survives a reboot"
    );
    assert!(finding(&findings(""), "suid-dumpable", "").is_none());
}

#[test]
fn doctor_key_file_owned_by_another_user_is_reported_until_the_printed_chown() {
    const NOBODY: u32 = 65534;
    let dir = Path::new("/etc/atrest");
    let made_dir = !dir.exists();
    fs::create_dir_all(dir).unwrap();
    let key = dir.join(format!("doctor-e2e-owner-{}.key", std::process::id()));
    let _restore = Restore(|| {
        let _ = fs::remove_file(&key);
        if made_dir {
            let _ = fs::remove_dir(dir);
        }
    });
    fs::write(&key, [7u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).unwrap();
    let name = key.display().to_string();
    let list = findings("");
    let f = finding(&list, "secret-owner", &name).expect("a key file owned by nobody");
    assert_eq!(f["severity"], "warning");
    assert!(
        f["found"]
            .as_str()
            .unwrap()
            .ends_with(&format!("is owned by uid {NOBODY}")),
        "{f}"
    );
    assert!(
        finding(&list, "secret-mode", &name).is_none(),
        "its mode is fine"
    );
    sh(f["fix"].as_str().unwrap());
    {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&key).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
    assert!(finding(&findings(""), "secret-owner", &name).is_none());
}

#[test]
fn doctor_readable_copy_of_a_vault_config_is_reported_until_the_printed_chmod() {
    // A real vault's config, copied as an operator would before an edit.
    let vault_dir = tempfile::tempdir().unwrap();
    let vault = vault_dir.path().join("v");
    let pass = vault_dir.path().join("pass");
    fs::write(&pass, "pw\n").unwrap();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &vault,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &crate::common::FAST_KDF {
        args.push(a);
    }
    ok(&args);
    let copies = tempfile::Builder::new()
        .prefix("atrest-doctor-e2e-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let copy = copies.path().join("atrest.conf.bak");
    fs::copy(vault.join(atrest_vault::CONFIG_FILE), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
    let name = copy.display().to_string();
    let f = finding(&findings(""), "config-copy-readable", &name).expect("the readable copy");
    assert_eq!(f["severity"], "warning");
    assert!(f["found"].as_str().unwrap().contains("(mode 0644)"), "{f}");
    sh(f["fix"].as_str().unwrap());
    assert_eq!(
        fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(finding(&findings(""), "config-copy-readable", &name).is_none());
}

/// journald's Storage=auto keeps the journal on disk when /var/log/journal
/// exists; this machine's /var/log is on its clear root disk. The printed
/// fix's drop-in makes it volatile; its `systemctl restart` goes to a
/// stand-in that records the call (PID 1 here is not systemd).
#[test]
fn doctor_persistent_journal_on_clear_disk_is_reported_until_the_volatile_dropin() {
    const JOURNAL: &str = "/var/log/journal";
    const DROPINS: &str = "/etc/systemd/journald.conf.d";
    const DROPIN: &str = "/etc/systemd/journald.conf.d/atrest.conf";
    let made_journal = !Path::new(JOURNAL).exists();
    let made_dropins = !Path::new(DROPINS).exists();
    let old_dropin = fs::read(DROPIN).ok();
    let _restore = Restore(|| {
        match &old_dropin {
            Some(text) => fs::write(DROPIN, text).expect("restore the journald drop-in"),
            None => {
                let _ = fs::remove_file(DROPIN);
            }
        }
        if made_dropins {
            let _ = fs::remove_dir(DROPINS);
        }
        if made_journal {
            let _ = fs::remove_dir(JOURNAL);
        }
    });
    let _ = fs::remove_file(DROPIN);
    fs::create_dir_all(JOURNAL).unwrap();
    let list = findings("");
    let Some(f) = finding(&list, "journal-persistent-clear", JOURNAL) else {
        // Another drop-in or journald.conf already says volatile/none.
        panic!("this machine's journald settings hide the condition: {list:?}");
    };
    assert_eq!(f["severity"], "warning");
    assert!(f["found"].as_str().unwrap().contains("/dev/"), "{f}");
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    fs::write(
        bin.path().join("systemctl"),
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    fs::set_permissions(
        bin.path().join("systemctl"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    sh(&format!(
        "PATH={}:$PATH; {}",
        bin.path().display(),
        f["fix"].as_str().unwrap()
    ));
    assert_eq!(
        fs::read_to_string(&calls).unwrap(),
        "restart systemd-journald\n"
    );
    assert!(finding(&findings(""), "journal-persistent-clear", "").is_none());
}

/// A real PostgreSQL cluster (Debian's binaries, run as nobody) whose
/// postgresql.conf, in a cluster directory of its own under
/// /etc/postgresql/VERSION/ (removed by a guard), names a data directory on
/// the clear root disk. Doctor reports it; the printed fix, run as printed
/// but for the passphrase file its `atrest init` and `atrest mount` are
/// given, moves the data into a vault mounted in its place, and the server
/// then starts from the vault.
#[test]
fn doctor_postgresql_data_directory_outside_a_vault_is_reported_until_the_printed_move() {
    const NOBODY: u32 = 65534;
    let bin = crate::common::postgres_bin();
    let version = bin.parent().unwrap().file_name().unwrap().to_owned();
    let base = tempfile::Builder::new()
        .prefix("atrest-doctor-pg-")
        .tempdir_in("/var/lib")
        .unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (data, run) = (base.path().join("pgdata"), base.path().join("run"));
    for d in [&data, &run] {
        fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    let as_nobody = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .args(args)
            .output()
            .expect("runuser (util-linux)");
        assert!(
            out.status.success(),
            "as nobody: {}: {}{}",
            Path::new(args[0].as_ref()).display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    as_nobody(&[
        &bin.join("initdb"),
        &"-D",
        &data,
        &"-U",
        &"atrest",
        &"--auth=trust",
        &"-E",
        &"UTF8",
        &"--no-sync",
    ]);

    let etc = Path::new("/etc/postgresql").join(&version);
    let made_etc = !etc.exists();
    let cluster = etc.join(format!("atrest-doctor-e2e-{}", std::process::id()));
    let _cluster = Restore(|| {
        let _ = fs::remove_dir_all(&cluster);
        if made_etc {
            let _ = fs::remove_dir(&etc);
            let _ = fs::remove_dir("/etc/postgresql");
        }
    });
    fs::create_dir_all(&cluster).unwrap();
    let conf = cluster.join("postgresql.conf");
    fs::write(
        &conf,
        format!(
            "data_directory = '{}'\t\t# use data in another directory\nport = 5432\n",
            data.display()
        ),
    )
    .unwrap();

    let name = data.display().to_string();
    let f = finding(&findings(""), "service-data-outside-vault", &name)
        .expect("the cluster's data directory");
    assert_eq!(f["severity"], "warning");
    let found = f["found"].as_str().unwrap();
    assert!(
        found.starts_with(&format!("PostgreSQL ({})", conf.display())),
        "{found}"
    );
    assert!(found.contains(" on /dev/"), "{found}");
    let fix = f["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("atrest mount -o allow_other {name}.enc {name}")),
        "the data belongs to the server's user, who must reach the mount: {fix}"
    );

    let pass = base.path().join("pass");
    fs::write(&pass, "pg vault passphrase\n").unwrap();
    let _unmount = Restore(|| {
        let _ = crate::common::run(&[&"unmount", &"--lazy", &data]);
    });
    run_move_fix(fix, &pass);
    assert!(crate::common::is_mount_point(&data));
    assert!(data.join("PG_VERSION").exists());

    // "start the service": the cluster runs from the vault.
    let _stop = Restore(|| {
        let _ = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    });
    as_nobody(&[
        &bin.join("pg_ctl"),
        &"-D",
        &data,
        &"-l",
        &run.join("server.log"),
        &"-w",
        &"-o",
        &format!("-c listen_addresses='' -k {}", run.display()),
        &"start",
    ]);
    assert!(finding(&findings(""), "service-data-outside-vault", &name).is_none());
}

/// Runs `script` (with `$0` the atrest binary and `env`) in a mount
/// namespace of its own, where /tmp and /var/tmp are first taken back to
/// the disk below them; its last command is `exec "$0" doctor --json`.
fn findings_in_own_mount_namespace(script: &str, env: &[(&str, &Path)]) -> Vec<serde_json::Value> {
    // The binary may live under /tmp (a checkout there), which the printed
    // fixes cover with a tmpfs: run a copy kept under /var/lib instead.
    let bin_dir = tempfile::Builder::new()
        .prefix("atrest-doctor-e2e-bin-")
        .tempdir_in("/var/lib")
        .unwrap();
    let bin = bin_dir.path().join("atrest");
    fs::copy(env!("CARGO_BIN_EXE_atrest"), &bin).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "set -e; for d in /tmp /var/tmp; do while mountpoint -q $d; do umount -l $d; done; done; {script}"
        ))
        .arg(&bin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    doctor_json(cmd)
}

/// /tmp and /var/tmp on the clear root disk (this machine's own layout,
/// built in a private mount namespace if they are tmpfs here). The printed
/// fixes run as printed in that namespace, /etc/fstab bind-mounted from a
/// copy so that the machine's stays as it was, and nothing else on the
/// machine sees the new mounts.
#[test]
fn doctor_tmp_on_clear_disk_is_reported_until_the_printed_tmpfs_mounts() {
    let list = findings_in_own_mount_namespace("exec \"$0\" doctor --json", &[]);
    let tmp = finding(&list, "tmp-persistent", "/tmp is on /dev/").expect("/tmp on disk");
    let var_tmp =
        finding(&list, "tmp-persistent", "/var/tmp is on /dev/").expect("/var/tmp on disk");
    assert_eq!(tmp["severity"], "warning");
    let dir = tempfile::Builder::new()
        .prefix("atrest-doctor-e2e-")
        .tempdir_in("/var/lib")
        .unwrap();
    let fstab = dir.path().join("fstab");
    fs::copy("/etc/fstab", &fstab).unwrap();
    let (fix_tmp, fix_var_tmp) = (dir.path().join("fix-tmp"), dir.path().join("fix-var-tmp"));
    fs::write(&fix_tmp, tmp["fix"].as_str().unwrap()).unwrap();
    fs::write(&fix_var_tmp, var_tmp["fix"].as_str().unwrap()).unwrap();
    let list = findings_in_own_mount_namespace(
        "mount --bind \"$FSTAB\" /etc/fstab; sh \"$FIX_TMP\"; sh \"$FIX_VAR_TMP\"; \
         exec \"$0\" doctor --json",
        &[
            ("FSTAB", &fstab),
            ("FIX_TMP", &fix_tmp),
            ("FIX_VAR_TMP", &fix_var_tmp),
        ],
    );
    assert!(finding(&list, "tmp-persistent", "").is_none(), "{list:?}");
    let kept = fs::read_to_string(&fstab).unwrap();
    assert!(
        kept.ends_with(
            "tmpfs /tmp tmpfs nosuid,nodev,size=20% 0 0\ntmpfs /var/tmp tmpfs nosuid,nodev 0 0\n"
        ),
        "{kept}"
    );
}

/// An atrest process of root whose core limit is not 0 (as an old binary
/// would run: here a copy of sleep named atrest) is critical until the
/// printed `kill` ends it; a real mount process (limit 0) is not reported.
#[test]
fn doctor_atrest_process_with_a_core_limit_is_critical_until_killed() {
    let m = Mounted::new();
    let holder = fs::read_to_string(m.vault.join(atrest_vault::LOCK_FILE)).unwrap();
    let mount_pid = holder.split_whitespace().next().unwrap().to_owned();
    let list = findings("");
    assert!(
        finding(
            &list,
            "atrest-process-dumpable",
            &format!("process {mount_pid} ")
        )
        .is_none(),
        "{list:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("atrest");
    fs::copy("/bin/sleep", &fake).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -c unlimited; exec \"$0\" 600"])
        .arg(&fake)
        .spawn()
        .unwrap();
    let pid = child.id();
    let _kill = Restore(|| {
        // Already gone when the test got that far.
        let _ = Command::new("kill")
            .arg(pid.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    });
    while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "atrest\n" {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process ended: {status}");
        }
        std::thread::yield_now();
    }
    let what = format!("atrest process {pid} has a core file size limit of unlimited");
    let f = finding(&findings(""), "atrest-process-dumpable", &what).expect("the process");
    assert_eq!(f["severity"], "critical");
    let fix = f["fix"].as_str().unwrap();
    let kill = format!("kill {pid}");
    assert!(fix.contains(&kill), "{fix}");
    sh(&kill);
    child.wait().unwrap();
    assert!(finding(&findings(""), "atrest-process-dumpable", &what).is_none());
}

/// Dumps piped to systemd-coredump, which stores them by default: reported
/// while the core limit is open; the printed drop-in (Storage=none) ends it.
#[test]
fn doctor_systemd_coredump_storing_dumps_is_reported_until_the_storage_none_dropin() {
    const PATTERN: &str = "/proc/sys/kernel/core_pattern";
    const DROPINS: &str = "/etc/systemd/coredump.conf.d";
    const DROPIN: &str = "/etc/systemd/coredump.conf.d/atrest.conf";
    let _turn = core_settings();
    let before = fs::read_to_string(PATTERN).unwrap();
    let made_dropins = !Path::new(DROPINS).exists();
    let old_dropin = fs::read(DROPIN).ok();
    let _restore = Restore(|| {
        fs::write(PATTERN, before.trim_end()).expect("restore kernel.core_pattern");
        match &old_dropin {
            Some(text) => fs::write(DROPIN, text).expect("restore the coredump drop-in"),
            None => {
                let _ = fs::remove_file(DROPIN);
            }
        }
        if made_dropins {
            let _ = fs::remove_dir(DROPINS);
        }
    });
    let _ = fs::remove_file(DROPIN);
    fs::write(
        PATTERN,
        "|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h",
    )
    .unwrap();
    let list = findings("ulimit -c unlimited;");
    let f = finding(&list, "core-dumps-enabled", "systemd-coredump stores dumps")
        .unwrap_or_else(|| panic!("this machine's coredump.conf hides the condition: {list:?}"));
    assert_eq!(f["severity"], "warning");
    sh(f["fix"].as_str().unwrap());
    assert!(
        fs::read_to_string(DROPIN)
            .unwrap()
            .contains("Storage=none\n")
    );
    assert!(finding(&findings("ulimit -c unlimited;"), "core-dumps-enabled", "").is_none());
}

/// The authority at the keyslot's address, with the CA pinned, but a new
/// audit key (its data dir's audit key and log replaced, as a data dir
/// initialised again would have them): critical, with both keys named,
/// until the vault is enrolled again there and the old keyslot removed,
/// as the fix says.
#[test]
fn doctor_remote_keyslot_audit_key_changed_is_critical_until_enrolled_again() {
    let mut keyd = Keyd::start();
    let dir = tempfile::tempdir().unwrap();
    let e = enrolled_vault(&keyd, dir.path());
    let vault = e.vault.display().to_string();
    let check = || findings_of_host(&e.vault, &e.state, BOOT_A);
    let id = "remote-keyslot-audit-key-changed";
    assert!(finding(&check(), id, &vault).is_none());
    let pinned = atrest_audit::AuditSigningKey::from_seed(
        fs::read(keyd.data.join("audit.key"))
            .unwrap()
            .as_slice()
            .try_into()
            .unwrap(),
    )
    .public_key()
    .to_string();

    // The same CA and hosts, another audit key and log: the audit key and
    // log of a second authority (serve refuses an empty audit log, so the
    // new one must have its genesis entry).
    keyd.stop();
    let other = dir.path().join("other-keyd");
    ok(&[
        &"keyd",
        &"init",
        &"--data-dir",
        &other,
        &"--listen",
        &"127.0.0.1:0",
    ]);
    for e in fs::read_dir(&keyd.data).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("audit.db") {
            fs::remove_file(e.path()).unwrap();
        }
    }
    for e in fs::read_dir(&other).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit.db") || name == "audit.key" {
            fs::copy(e.path(), keyd.data.join(&name)).unwrap();
        }
    }
    keyd.serve();
    let seed: [u8; 32] = fs::read(other.join("audit.key"))
        .unwrap()
        .as_slice()
        .try_into()
        .unwrap();
    let now = atrest_audit::AuditSigningKey::from_seed(&seed)
        .public_key()
        .to_string();
    let list = check();
    let f = finding(&list, id, &vault).expect("a changed audit key");
    assert_eq!(f["severity"], "critical");
    let found = f["found"].as_str().unwrap();
    assert!(
        found.contains(&format!("names the audit key {now}")),
        "{found}"
    );
    assert!(found.contains(&format!("pinned {pinned}")), "{found}");
    for other in ["remote-keyslot-unreachable", "remote-keyslot-ca-changed"] {
        assert!(finding(&list, other, &vault).is_none(), "{list:?}");
    }

    // What the finding warns of: the keyslot does not unlock through it.
    let refused = crate::common::failure(host(
        &e.state,
        BOOT_A,
        &[&"unlock", &e.vault, &"--mount", &e.mnt],
    ));
    assert!(
        refused.contains("is not signed by this audit key"),
        "{refused}"
    );

    // The fix, for a change made on purpose.
    let fix = f["fix"].as_str().unwrap();
    let pin = keyd.cli_ok(&["fingerprint"]).trim().to_owned();
    assert!(fix.contains(&format!("--ca-fingerprint {pin}")), "{fix}");
    let remove: Vec<&str> = fix
        .split("atrest keyslot remove ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the fix names the keyslot to remove")
        .split_whitespace()
        .collect();
    assert_eq!(remove.len(), 2, "{fix}");
    assert_eq!(remove[0], vault);
    let token = keyd.token("web");
    success(host(
        &e.state,
        BOOT_A,
        &[
            &"enroll",
            &e.vault,
            &"--authority",
            &keyd.base,
            &"--token",
            &token,
            &"--ca-fingerprint",
            &pin,
            &"--host-name",
            &"web-2",
            &"--passphrase-file",
            &e.pass,
        ],
    ));
    ok(&[
        &"keyslot",
        &"remove",
        &e.vault,
        &remove[1],
        &"--passphrase-file",
        &e.pass,
    ]);
    assert!(finding(&check(), id, &vault).is_none());
    // And the vault unlocks through the authority again.
    success(host(
        &e.state,
        BOOT_A,
        &[&"unlock", &e.vault, &"--mount", &e.mnt],
    ));
    ok(&[&"unmount", &e.mnt]);
}

/// The other services' data directories: MySQL/MariaDB's datadir named
/// by a my.cnf fragment (in /etc/mysql/conf.d, removed by a guard), and
/// the fixed directories this machine does not have (Redis, Docker,
/// containerd, virtual mail: made for the test and removed after). Each,
/// with a file in it on the clear root disk, is reported, and the printed
/// move puts it into a vault. Directories the machine has are left alone.
#[test]
fn doctor_other_service_data_dirs_are_reported_until_the_printed_move() {
    let base = tempfile::Builder::new()
        .prefix("atrest-doctor-svc-")
        .tempdir_in("/var/lib")
        .unwrap();
    let mysql_data = base.path().join("mysql");
    let mysql_conf = Path::new("/etc/mysql/conf.d")
        .join(format!("zz-atrest-doctor-e2e-{}.cnf", std::process::id()));
    let made_etc_mysql = !Path::new("/etc/mysql").exists();
    let mut dirs: Vec<(&str, PathBuf)> = vec![("MySQL/MariaDB", mysql_data.clone())];
    for (service, dir) in [
        ("Redis", "/var/lib/redis"),
        ("Docker", "/var/lib/docker"),
        ("containerd", "/var/lib/containerd"),
        ("virtual mail", "/var/vmail"),
    ] {
        let made = [dir.to_owned(), format!("{dir}.old"), format!("{dir}.enc")];
        if made.iter().all(|p| !Path::new(p).exists()) {
            dirs.push((service, PathBuf::from(dir)));
        }
    }
    let _restore = Restore(|| {
        for (_, dir) in &dirs {
            let _ = crate::common::run(&[&"unmount", &"--lazy", dir]);
            if !dir.starts_with(base.path()) {
                for suffix in ["", ".old", ".enc"] {
                    let _ = fs::remove_dir_all(format!("{}{suffix}", dir.display()));
                }
            }
        }
        let _ = fs::remove_file(&mysql_conf);
        if made_etc_mysql {
            let _ = fs::remove_dir_all("/etc/mysql");
        }
    });
    fs::create_dir_all(mysql_conf.parent().unwrap()).unwrap();
    fs::write(
        &mysql_conf,
        format!("[mysqld]\ndatadir = {}\n", mysql_data.display()),
    )
    .unwrap();
    for (_, dir) in &dirs {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("data"), "rows in the clear\n").unwrap();
    }
    let list = findings("");
    let pass = base.path().join("pass");
    fs::write(&pass, "service vault passphrase\n").unwrap();
    for (service, dir) in &dirs {
        let what = format!("{service} data in {} on /dev/", dir.display());
        let f = finding(&list, "service-data-outside-vault", &what)
            .unwrap_or_else(|| panic!("{what}: {list:?}"));
        assert_eq!(f["severity"], "warning");
        run_move_fix(f["fix"].as_str().unwrap(), &pass);
        assert!(crate::common::is_mount_point(dir));
        assert_eq!(
            fs::read_to_string(dir.join("data")).unwrap(),
            "rows in the clear\n"
        );
    }
    let list = findings("");
    for (service, dir) in &dirs {
        let what = format!("{service} data in {} ", dir.display());
        assert!(
            finding(&list, "service-data-outside-vault", &what).is_none(),
            "{what}"
        );
    }
}

/// The other secrets doctor reads: a vault's config (given with --vault),
/// the host state dir (ATREST_STATE_DIR) and a file in the key authority's
/// data dir, each left readable by others, until the printed chmod.
#[test]
fn doctor_readable_vault_config_host_state_and_authority_file_are_reported_until_the_printed_chmod()
{
    let dir = tempfile::tempdir().unwrap();
    let (vault, pass, state) = (
        dir.path().join("v"),
        dir.path().join("pass"),
        dir.path().join("host"),
    );
    fs::write(&pass, "pw\n").unwrap();
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"init",
        &vault,
        &"--passphrase-file",
        &pass,
        &"--no-recovery-key",
    ];
    for a in &crate::common::FAST_KDF {
        args.push(a);
    }
    ok(&args);
    let config = vault.join(atrest_vault::CONFIG_FILE);
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    let identity = state.join("identity");
    fs::write(&identity, [1u8; 32]).unwrap();
    fs::set_permissions(&identity, fs::Permissions::from_mode(0o640)).unwrap();
    // The key authority's data dir: made private for the test where the
    // machine has none (removed after), a file of the test's own in it.
    let keyd = Path::new("/var/lib/atrest/keyd");
    let made: Vec<&Path> = [Path::new("/var/lib/atrest"), keyd]
        .into_iter()
        .filter(|d| !d.exists())
        .collect();
    let seed = keyd.join(format!("doctor-e2e-{}.key", std::process::id()));
    let _restore = Restore(|| {
        let _ = fs::remove_file(&seed);
        for d in made.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    });
    for d in &made {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    fs::write(&seed, [2u8; 32]).unwrap();
    fs::set_permissions(&seed, fs::Permissions::from_mode(0o644)).unwrap();
    let list = findings_of_host(&vault, &state, BOOT_A);
    for (path, severity, mode) in [
        (&config, "critical", "0644"),
        (&state, "warning", "0755"),
        (&identity, "warning", "0640"),
        (&seed, "critical", "0644"),
    ] {
        let name = format!("{} has mode {mode}", path.display());
        let f = finding(&list, "secret-mode", &name).unwrap_or_else(|| panic!("{name}: {list:?}"));
        assert_eq!(f["severity"], severity, "{f}");
        sh(f["fix"].as_str().unwrap());
    }
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let list = findings_of_host(&vault, &state, BOOT_A);
    for path in [&config, &state, &identity, &seed] {
        assert!(
            finding(&list, "secret-mode", &format!("{} ", path.display())).is_none(),
            "{list:?}"
        );
    }
}
