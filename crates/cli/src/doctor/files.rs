//! Secrets on disk with loose modes or owners, config copies others can
//! read, and vaults mounted for every user.

use super::facts::{Facts, FileMode, SecretKind};
use super::{Finding, Severity};

pub fn check(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    for (kind, m) in &f.secrets {
        loose(f, *kind, m, &mut out);
    }
    for m in &f.config_copies {
        if m.mode & 0o044 != 0 {
            out.push(Finding {
                id: "config-copy-readable",
                severity: Severity::Warning,
                found: format!("{} (mode {:04o})", m.path.display(), m.mode),
                why: "a copy of a vault config holds its wrapped keyslots: whoever reads it can guess passphrases offline".into(),
                fix: format!(
                    "chmod 600 {p}  # or remove the copy: rm {p}",
                    p = m.path.display()
                ),
            });
        }
    }
    for m in &f.mounts {
        if m.fstype == "fuse.atrest" && m.options.split(',').any(|o| o == "allow_other") {
            out.push(Finding {
                id: "vault-allow-other",
                severity: Severity::Info,
                found: format!("{} is mounted on {} with allow_other", m.source, m.target.display()),
                why: "every user may enter the mount; only the files' own modes and owners (default_permissions) keep them out".into(),
                fix: format!(
                    "atrest unmount {t} && atrest mount {s} {t}  # remounts without allow_other; or keep it after checking the modes and owners under {t}: find {t} -perm -o+r",
                    t = m.target.display(),
                    s = m.source
                ),
            });
        }
    }
    out
}

fn loose(f: &Facts, kind: SecretKind, m: &FileMode, out: &mut Vec<Finding>) {
    let p = m.path.display();
    let (what, bad_bits, want) = match (kind, m.is_dir) {
        (SecretKind::VaultConfig, _) => ("vault config (keyslots)", 0o077, "600"),
        (_, true) => ("directory", 0o022, "700"),
        (SecretKind::EtcAtrest, false) => ("file under /etc/atrest (key files)", 0o077, "600"),
        (SecretKind::HostState, false) => ("host identity/state file", 0o077, "600"),
        (SecretKind::AuthorityData, false) => ("key authority file", 0o077, "600"),
    };
    // Directories: others may not add or replace files; the authority's and
    // the host's directories are not to be listed either.
    let bad_bits = if m.is_dir && kind != SecretKind::EtcAtrest {
        0o077
    } else {
        bad_bits
    };
    if m.mode & bad_bits != 0 {
        let readable_by_others = m.mode & 0o004 != 0 && !m.is_dir;
        out.push(Finding {
            id: "secret-mode",
            severity: if readable_by_others {
                Severity::Critical
            } else {
                Severity::Warning
            },
            found: format!("{what} {p} has mode {:04o}", m.mode),
            why: "other users of this machine can read or replace what unlocks the vaults".into(),
            fix: format!("chmod {want} {p}"),
        });
    }
    if f.is_root && m.uid != 0 {
        out.push(Finding {
            id: "secret-owner",
            severity: Severity::Warning,
            found: format!("{what} {p} is owned by uid {}", m.uid),
            why: "its owner can read or replace what unlocks the vaults without being root".into(),
            fix: format!("chown root:root {p}"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{mount, plain};
    use super::*;
    use std::path::PathBuf;

    fn fm(path: &str, mode: u32, uid: u32, is_dir: bool) -> FileMode {
        FileMode {
            path: PathBuf::from(path),
            mode,
            uid,
            is_dir,
        }
    }

    #[test]
    fn world_readable_key_file_is_critical_and_fixed_by_chmod_600() {
        let mut f = plain();
        f.is_root = true;
        f.secrets
            .push((SecretKind::EtcAtrest, fm("/etc/atrest", 0o755, 0, true)));
        f.secrets.push((
            SecretKind::EtcAtrest,
            fm("/etc/atrest/boot.key", 0o644, 0, false),
        ));
        let found = check(&f);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Critical);
        assert_eq!(found[0].fix, "chmod 600 /etc/atrest/boot.key");
        f.secrets[1].1.mode = 0o640;
        assert_eq!(check(&f)[0].severity, Severity::Warning);
        f.secrets[1].1.mode = 0o600;
        assert!(check(&f).is_empty());
    }

    #[test]
    fn owners_matter_only_as_root_and_state_dirs_are_private() {
        let mut f = plain();
        f.secrets.push((
            SecretKind::HostState,
            fm("/var/lib/atrest/host", 0o755, 1000, true),
        ));
        assert_eq!(
            check(&f).iter().map(|x| x.id).collect::<Vec<_>>(),
            ["secret-mode"]
        );
        f.is_root = true;
        assert_eq!(
            check(&f).iter().map(|x| x.id).collect::<Vec<_>>(),
            ["secret-mode", "secret-owner"]
        );
    }

    #[test]
    fn readable_config_copies_and_allow_other_mounts() {
        let mut f = plain();
        f.config_copies
            .push(fm("/root/backup/atrest.conf", 0o644, 0, false));
        f.config_copies
            .push(fm("/root/backup2/atrest.conf.bak", 0o600, 0, false));
        f.mounts.push(mount(
            "/srv/d.enc",
            "/srv/d",
            "fuse.atrest",
            "rw,nosuid,rw,user_id=0,allow_other",
        ));
        f.mounts
            .push(mount("/srv/e.enc", "/srv/e", "fuse.atrest", "rw,user_id=0"));
        let ids: Vec<_> = check(&f).into_iter().map(|x| (x.id, x.found)).collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].0, "config-copy-readable");
        assert!(ids[0].1.contains("/root/backup/atrest.conf (mode 0644)"));
        assert_eq!(ids[1].0, "vault-allow-other");
        assert!(ids[1].1.starts_with("/srv/d.enc"));
        assert!(
            check(&f)[1]
                .fix
                .starts_with("atrest unmount /srv/d && atrest mount /srv/d.enc /srv/d  #")
        );
    }
}
