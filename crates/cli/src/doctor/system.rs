//! Where the kernel and the system write memory and temporary data: swap,
//! hibernation, core dumps, /tmp, the journal, the fscrypt cipher driver.

use std::path::Path;

use super::facts::Facts;
use super::{Finding, Severity, Storage, storage_of};

pub fn check(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    swap(f, &mut out);
    core_dumps(f, &mut out);
    tmp(f, &mut out);
    journald(f, &mut out);
    crypto(f, &mut out);
    luks(f, &mut out);
    out
}

/// LUKS volumes only a passphrase or key file opens: whoever boots the
/// machine types it, or it sits in a file (often on the same disk).
fn luks(f: &Facts, out: &mut Vec<Finding>) {
    for v in f.luks_volumes.iter().filter(|v| v.bound_to.is_empty()) {
        out.push(Finding {
            id: "luks-passphrase-only",
            severity: Severity::Info,
            found: format!(
                "LUKS volume {} ({}) opens with a passphrase or key file only",
                v.device,
                if v.open { "open" } else { "closed" }
            ),
            why: "its key is typed at each boot or kept in a key file, often on the same machine; \
                  no authority policy, approval or audit log covers it, and shredding a host does not reach it"
                .into(),
            fix: format!(
                "atrest luks bind {} --authority URL --token T --ca-fingerprint SHA256:... \
                 --existing-key-file KEY  # then remove the key file (and the passphrase slot, \
                 if you keep a recovery copy elsewhere)",
                v.device
            ),
        });
    }
}

/// Whether a swap area or resume device keeps its pages in the clear.
fn clear_swap(f: &Facts, name: &str, kind: &str) -> Option<String> {
    if name.starts_with("/dev/zram") || f.encrypted_devices.contains(name) {
        return None;
    }
    if kind == "file" {
        return match storage_of(f, Path::new(name)) {
            Storage::Clear(dev) => Some(format!("swap file {name} on {dev}")),
            _ => None,
        };
    }
    Some(format!("swap {kind} {name}"))
}

fn swap(f: &Facts, out: &mut Vec<Finding>) {
    for (name, kind) in &f.swaps {
        if let Some(found) = clear_swap(f, name, kind) {
            out.push(Finding {
                id: "swap-unencrypted",
                severity: Severity::Critical,
                found,
                why: "pages of a mounted vault's plaintext and of its keys' processes can be written there and stay on disk".into(),
                fix: format!(
                    "swapoff {name}  # then remove it from /etc/fstab; for swap, use a dm-crypt mapping with a random key \
                     (/etc/crypttab: `swap {name} /dev/urandom swap,cipher=aes-xts-plain64,size=512`) or zram (apt install systemd-zram-generator)"
                ),
            });
        }
    }
    if let Some(dev) = &f.resume
        && !f.encrypted_devices.contains(dev)
        && !dev.starts_with("/dev/zram")
    {
        out.push(Finding {
                id: "hibernation-unencrypted",
                severity: Severity::Critical,
                found: format!("hibernation resume target {dev}"),
                why: "hibernating writes all of memory, vault keys included, to that device in the clear".into(),
                fix: "echo 0:0 > /sys/power/resume; remove resume= from the kernel command line and /etc/initramfs-tools/conf.d/resume, \
                      then update-initramfs -u; systemctl mask hibernate.target hybrid-sleep.target"
                    .into(),
            });
    }
}

fn core_dumps(f: &Facts, out: &mut Vec<Finding>) {
    let pattern = f.core_pattern.trim();
    let piped = pattern.starts_with('|');
    let to_systemd = piped && pattern.contains("systemd-coredump");
    let limit_open = f.core_rlimit != Some(0);
    // Where the dumps end up: systemd-coredump's Storage=, else a file.
    let stored = if to_systemd {
        !matches!(f.coredump_storage.as_deref(), Some("none"))
    } else {
        (!pattern.is_empty() && !piped) || (piped && !pattern.contains("/bin/false"))
    };
    if limit_open && stored {
        let (what, fix) = if to_systemd {
            (
                format!(
                    "systemd-coredump stores dumps (Storage={}) and RLIMIT_CORE is {}",
                    f.coredump_storage.as_deref().unwrap_or("external"),
                    rlimit(f.core_rlimit)
                ),
                "mkdir -p /etc/systemd/coredump.conf.d && printf '[Coredump]\\nStorage=none\\nProcessSizeMax=0\\n' > /etc/systemd/coredump.conf.d/atrest.conf"
                    .to_string(),
            )
        } else {
            (
                format!("kernel.core_pattern = {pattern:?} and RLIMIT_CORE is {}", rlimit(f.core_rlimit)),
                "sysctl -q -w kernel.core_pattern='|/bin/false' && echo \"kernel.core_pattern=|/bin/false\" > /etc/sysctl.d/50-atrest-coredump.conf"
                    .to_string(),
            )
        };
        out.push(Finding {
            id: "core-dumps-enabled",
            severity: Severity::Warning,
            found: what,
            why: "a crashing service that reads vault files dumps that plaintext to disk".into(),
            fix,
        });
    }
    if f.suid_dumpable != 0 && stored {
        out.push(Finding {
            id: "suid-dumpable",
            severity: Severity::Warning,
            found: format!("fs.suid_dumpable = {}", f.suid_dumpable),
            why: "processes that changed credentials (and so hold others' secrets) dump core too".into(),
            fix: "sysctl -q -w fs.suid_dumpable=0 && echo fs.suid_dumpable=0 > /etc/sysctl.d/50-atrest-suid-dumpable.conf".into(),
        });
    }
    for (pid, limit) in &f.dumpable_atrest {
        out.push(Finding {
            id: "atrest-process-dumpable",
            severity: Severity::Critical,
            found: format!("atrest process {pid} has a core file size limit of {limit}"),
            why: "a mount process holds a vault key; every current atrest sets its limit to 0 and marks itself non-dumpable".into(),
            fix: format!("unmount its vault and mount it again with the installed atrest (kill {pid} if it serves no mount)"),
        });
    }
    for (pid, uid) in &f.dumpable_user_atrest {
        out.push(Finding {
            id: "atrest-process-dumpable",
            severity: Severity::Critical,
            found: format!(
                "atrest process {pid} of uid {uid} is dumpable (/proc/{pid}/status belongs to uid {uid}, not root)"
            ),
            why: "any other process of that user may ptrace it or read /proc/PID/mem, and so the vault key it holds; \
                  every current atrest marks itself non-dumpable"
                .into(),
            fix: format!(
                "as uid {uid}: unmount its vault and mount it again with the installed atrest (kill {pid} if it serves no mount)"
            ),
        });
    }
}

fn rlimit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

fn tmp(f: &Facts, out: &mut Vec<Finding>) {
    for dir in ["/tmp", "/var/tmp"] {
        if let Storage::Clear(dev) = storage_of(f, Path::new(dir)) {
            // One runnable line: mount now, and keep it so in /etc/fstab.
            let fix = if dir == "/tmp" {
                "mount -t tmpfs -o nosuid,nodev,size=20% tmpfs /tmp && echo 'tmpfs /tmp tmpfs nosuid,nodev,size=20% 0 0' >> /etc/fstab  \
                 # or, under systemd: systemctl enable --now tmp.mount"
                    .to_string()
            } else {
                "mount -t tmpfs -o nosuid,nodev tmpfs /var/tmp && echo 'tmpfs /var/tmp tmpfs nosuid,nodev 0 0' >> /etc/fstab  \
                 # if nothing needs /var/tmp across reboots; else mount a vault on /var/tmp"
                    .to_string()
            };
            out.push(Finding {
                id: "tmp-persistent",
                severity: Severity::Warning,
                found: format!("{dir} is on {dev}"),
                why: "uploads, sort files and editor copies of vault data land there and stay on disk in the clear".into(),
                fix,
            });
        }
    }
}

fn journald(f: &Facts, out: &mut Vec<Finding>) {
    let storage = f.journald_storage.as_deref().unwrap_or("auto");
    let persistent = storage == "persistent" || (storage == "auto" && f.var_log_journal_exists);
    if !persistent {
        return;
    }
    if let Storage::Clear(dev) = storage_of(f, Path::new("/var/log/journal")) {
        out.push(Finding {
            id: "journal-persistent-clear",
            severity: Severity::Warning,
            found: format!("journald keeps logs (Storage={storage}) in /var/log/journal on {dev}"),
            why: "services log queries, mail headers and file names from the vault; the journal keeps them on disk in the clear".into(),
            fix: "mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nStorage=volatile\\n' > /etc/systemd/journald.conf.d/atrest.conf && systemctl restart systemd-journald  # then remove the old logs (rm -r /var/log/journal/*), or keep /var/log in a vault".into(),
        });
    }
}

fn crypto(f: &Facts, out: &mut Vec<Finding>) {
    let Some(driver) = &f.xts_aes_driver else {
        return;
    };
    if driver.contains("generic") {
        out.push(Finding {
            id: "fscrypt-generic-aes",
            severity: if f.has_fscrypt_vault { Severity::Warning } else { Severity::Info },
            found: format!("the kernel's xts(aes) driver is {driver}"),
            why: "fscrypt vaults then encrypt with the slow table-based C AES (also not constant-time)".into(),
            fix: "load the accelerated driver (modprobe aesni_intel on x86, aes_ce_blk on arm64), or use FUSE vaults (atrest init without --backend fscrypt)".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{mount, plain};
    use super::*;

    fn ids(f: &Facts) -> Vec<&'static str> {
        check(f).into_iter().map(|x| x.id).collect()
    }

    fn safe() -> Facts {
        let mut f = plain();
        f.core_pattern = "|/bin/false".into();
        f.core_rlimit = Some(0);
        f.mounts.push(mount("tmpfs", "/tmp", "tmpfs", "rw"));
        f.mounts.push(mount("tmpfs", "/var/tmp", "tmpfs", "rw"));
        f
    }

    #[test]
    fn a_safe_machine_has_no_findings() {
        assert!(ids(&safe()).is_empty(), "{:?}", check(&safe()));
    }

    #[test]
    fn swap_on_clear_disk_is_critical_zram_and_dm_crypt_are_not() {
        let mut f = safe();
        f.swaps.push(("/swapfile".into(), "file".into()));
        let found = check(&f);
        assert_eq!(found[0].id, "swap-unencrypted");
        assert_eq!(found[0].severity, Severity::Critical);
        assert!(found[0].found.contains("/dev/vda1"));
        f.swaps = vec![
            ("/dev/zram0".into(), "partition".into()),
            ("/dev/mapper/swap".into(), "partition".into()),
        ];
        f.encrypted_devices.insert("/dev/mapper/swap".into());
        assert!(ids(&f).is_empty());
        f.swaps.push(("/dev/vda2".into(), "partition".into()));
        assert_eq!(ids(&f), ["swap-unencrypted"]);
    }

    #[test]
    fn resume_target_in_the_clear_is_critical() {
        let mut f = safe();
        f.resume = Some("/dev/vda2".into());
        assert_eq!(ids(&f), ["hibernation-unencrypted"]);
        f.encrypted_devices.insert("/dev/vda2".into());
        assert!(ids(&f).is_empty());
    }

    #[test]
    fn core_dumps_need_a_limit_and_a_destination() {
        let mut f = safe();
        f.core_pattern = "core".into();
        assert!(ids(&f).is_empty(), "limit 0: nothing is dumped");
        f.core_rlimit = None;
        assert_eq!(ids(&f), ["core-dumps-enabled"]);
        assert!(
            check(&f)[0]
                .fix
                .contains("kernel.core_pattern='|/bin/false'")
        );
        f.core_pattern = "|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h".into();
        assert_eq!(ids(&f), ["core-dumps-enabled"]);
        assert!(check(&f)[0].fix.contains("Storage=none"));
        f.coredump_storage = Some("none".into());
        assert!(ids(&f).is_empty());
        f.suid_dumpable = 2;
        assert!(ids(&f).is_empty(), "nothing stored");
        f.core_pattern = "core".into();
        assert_eq!(ids(&f), ["core-dumps-enabled", "suid-dumpable"]);
    }

    #[test]
    fn a_dumpable_atrest_process_is_critical() {
        let mut f = safe();
        f.dumpable_atrest.push((4242, "unlimited".into()));
        let found = check(&f);
        assert_eq!(found[0].id, "atrest-process-dumpable");
        assert_eq!(found[0].severity, Severity::Critical);
        assert!(found[0].found.contains("4242"));
    }

    #[test]
    fn a_dumpable_atrest_process_of_another_user_is_critical() {
        let mut f = safe();
        f.dumpable_user_atrest.push((4243, 1000));
        let found = check(&f);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "atrest-process-dumpable");
        assert_eq!(found[0].severity, Severity::Critical);
        assert!(found[0].found.contains("4243 of uid 1000 is dumpable"));
        assert!(found[0].fix.contains("kill 4243"));
    }

    #[test]
    fn tmp_on_disk_is_reported_per_directory() {
        let mut f = safe();
        f.mounts.retain(|m| m.fstype != "tmpfs");
        let found = check(&f);
        assert_eq!(found.len(), 2);
        assert!(found[0].found.starts_with("/tmp is on /dev/vda1"));
        assert!(found[1].found.starts_with("/var/tmp is on"));
        assert!(
            found[0]
                .fix
                .starts_with("mount -t tmpfs -o nosuid,nodev,size=20% tmpfs /tmp && ")
        );
        assert!(
            found[1]
                .fix
                .starts_with("mount -t tmpfs -o nosuid,nodev tmpfs /var/tmp && ")
        );
        f.mounts
            .push(mount("/srv/t.enc", "/var/tmp", "fuse.atrest", "rw"));
        assert_eq!(check(&f).len(), 1);
    }

    #[test]
    fn persistent_journal_on_clear_disk() {
        let mut f = safe();
        assert!(
            ids(&f).is_empty(),
            "auto without /var/log/journal is volatile"
        );
        f.var_log_journal_exists = true;
        assert_eq!(ids(&f), ["journal-persistent-clear"]);
        f.journald_storage = Some("volatile".into());
        assert!(ids(&f).is_empty());
        f.journald_storage = Some("persistent".into());
        f.var_log_journal_exists = false;
        assert_eq!(ids(&f), ["journal-persistent-clear"]);
    }

    #[test]
    fn generic_aes_is_a_warning_only_with_an_fscrypt_vault() {
        let mut f = safe();
        f.xts_aes_driver = Some("xts-aes-aesni".into());
        assert!(ids(&f).is_empty());
        f.xts_aes_driver = Some("xts(ecb(aes-generic))".into());
        assert_eq!(check(&f)[0].severity, Severity::Info);
        f.has_fscrypt_vault = true;
        assert_eq!(check(&f)[0].severity, Severity::Warning);
    }

    #[test]
    fn luks_volumes_without_an_atrest_binding_are_named() {
        use super::super::facts::LuksVolume;
        let mut f = safe();
        assert!(!ids(&f).contains(&"luks-passphrase-only"));
        f.luks_volumes = vec![
            LuksVolume {
                device: "/dev/nvme1n1".into(),
                open: true,
                bound_to: Vec::new(),
            },
            LuksVolume {
                device: "/dev/vdb".into(),
                open: true,
                bound_to: vec!["https://keys.example:7443".into()],
            },
        ];
        let found: Vec<Finding> = check(&f)
            .into_iter()
            .filter(|x| x.id == "luks-passphrase-only")
            .collect();
        assert_eq!(found.len(), 1, "only the unbound volume");
        assert!(
            found[0].found.contains("/dev/nvme1n1 (open)"),
            "{}",
            found[0].found
        );
        assert!(
            found[0].fix.starts_with("atrest luks bind /dev/nvme1n1"),
            "{}",
            found[0].fix
        );
        assert_eq!(found[0].severity, Severity::Info);
    }
}
