//! Data of known services, and of local units, kept outside every vault.

use std::path::Path;

use super::facts::Facts;
use super::{Finding, Severity, Storage, storage_of};

/// Paths a unit may name that are not data: the root, kernel and runtime
/// file systems.
fn not_data(p: &Path) -> bool {
    p == Path::new("/")
        || ["/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp"]
            .iter()
            .any(|r| p.starts_with(r))
}

pub fn check(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    for (service, dir) in &f.service_dirs {
        if let Storage::Clear(dev) = storage_of(f, dir) {
            out.push(Finding {
                id: "service-data-outside-vault",
                severity: Severity::Warning,
                found: format!("{service} data in {} on {dev}", dir.display()),
                why: "this service's data lies on disk in the clear, whatever the vaults hold"
                    .into(),
                fix: move_fix(dir, f.dir_owners.get(dir).copied()),
            });
        }
    }
    for (unit, dir) in &f.unit_paths {
        if not_data(dir) {
            continue;
        }
        if let Storage::Clear(dev) = storage_of(f, dir) {
            out.push(Finding {
                id: "unit-path-outside-vault",
                severity: Severity::Warning,
                found: format!("{unit} writes to {} on {dev}", dir.display()),
                why: "a local service's ReadWritePaths/WorkingDirectory is where it keeps data, and it is not in a vault".into(),
                fix: move_fix(dir, f.dir_owners.get(dir).copied()),
            });
        }
    }
    out
}

/// Moving a directory into a new vault mounted in its place. A directory
/// owned by another user than root belongs to a service running as that
/// user: root's mount must then let other users in (`-o allow_other`; the
/// files' own modes and owners still apply, default_permissions).
fn move_fix(dir: &Path, owner: Option<u32>) -> String {
    let d = dir.display();
    let options = if owner.is_some_and(|u| u != 0) {
        "-o allow_other "
    } else {
        ""
    };
    format!(
        "stop the service; mv {d} {d}.old && mkdir {d} && atrest init {d}.enc && atrest mount {options}{d}.enc {d} && cp -a {d}.old/. {d}/ ; \
         start the service, then shred and remove {d}.old"
    )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{mount, plain};
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn service_dirs_outside_vaults_are_reported_inside_are_not() {
        let mut f = plain();
        f.service_dirs = vec![
            (
                "PostgreSQL (/etc/postgresql/15/main/postgresql.conf)".into(),
                "/var/lib/postgresql/15/main".into(),
            ),
            ("/srv".into(), "/srv/data".into()),
        ];
        f.mounts
            .push(mount("/srv/data.enc", "/srv/data", "fuse.atrest", "rw"));
        let found = check(&f);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "service-data-outside-vault");
        assert!(
            found[0]
                .found
                .contains("/var/lib/postgresql/15/main on /dev/vda1")
        );
        assert!(
            found[0].fix.contains(
                "mkdir /var/lib/postgresql/15/main && atrest init /var/lib/postgresql/15/main.enc \
                 && atrest mount /var/lib/postgresql/15/main.enc /var/lib/postgresql/15/main"
            ),
            "{}",
            found[0].fix
        );
        // Owned by the postgres user: the service runs as that user, and
        // root's mount must let it in.
        f.dir_owners
            .insert("/var/lib/postgresql/15/main".into(), 108);
        assert!(check(&f)[0].fix.contains(
            "atrest mount -o allow_other /var/lib/postgresql/15/main.enc /var/lib/postgresql/15/main"
        ));
        f.dir_owners.insert("/var/lib/postgresql/15/main".into(), 0);
        assert!(!check(&f)[0].fix.contains("allow_other"));
    }

    #[test]
    fn unit_paths_skip_runtime_dirs() {
        let mut f = plain();
        f.unit_paths = vec![
            ("app.service".into(), PathBuf::from("/opt/app")),
            ("app.service".into(), PathBuf::from("/run/app")),
            ("x.service".into(), PathBuf::from("/")),
        ];
        let found = check(&f);
        assert_eq!(found.len(), 1);
        assert!(found[0].found.starts_with("app.service writes to /opt/app"));
        f.vault_roots.push("/opt".into());
        assert!(check(&f).is_empty());
    }
}
