//! The committed repositories of format 1 (testdata/backup-v1/) and
//! format 2 (testdata/backup-v2/, with keyslots) open with their keys,
//! check clean with every blob read, and restore exactly what
//! vectors.json lists. tests/differential/check_backup.py reads the same
//! repositories without atrest code.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use atrest_backup::{BackupError, LocalBackend, LockedRepository, Repository};
use atrest_core::SecretKey;
use atrest_vault::Unlocker;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors(name: &str) -> (std::path::PathBuf, serde_json::Value) {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    let v = serde_json::from_str(&fs::read_to_string(base.join("vectors.json")).unwrap()).unwrap();
    (base, v)
}

fn key(v: &serde_json::Value, name: &str) -> SecretKey {
    SecretKey::from_slice(&unhex(v[name].as_str().unwrap())).unwrap()
}

fn bound_vault(v: &serde_json::Value) -> [u8; 16] {
    unhex(v["bound_vault"].as_str().unwrap())
        .try_into()
        .unwrap()
}

#[test]
fn the_format_1_repository_restores_what_its_vectors_list() {
    let (base, v) = vectors("backup-v1");
    let master = key(&v, "master_key");
    let repo = Repository::open(LocalBackend::new(base.join("repo")), &master).unwrap();
    assert_eq!(repo.version(), 1);
    assert_eq!(repo.binding(), Some(bound_vault(&v)));
    assert_eq!(repo.bound_vaults(), [bound_vault(&v)]);
    restores_what_its_vectors_list(&repo, &v);
    // The wrong key does not open it.
    assert!(Repository::open(LocalBackend::new(base.join("repo")), &SecretKey::random()).is_err());
    // Its vault's backup key opens it; another vault's, or any other
    // kind of secret, is refused with a message saying what opens it.
    let locked = || LockedRepository::read(LocalBackend::new(base.join("repo"))).unwrap();
    let vault = |vault_id| Unlocker::Vault {
        vault_id,
        key: master.clone(),
    };
    assert_eq!(
        locked().unlock(&vault(bound_vault(&v))).unwrap().version(),
        1
    );
    match locked().unlock(&vault([9; 16])) {
        Err(e @ BackupError::Format1(_)) => assert!(e.to_string().contains("bound to vault 2424")),
        other => panic!("{:?}", other.err()),
    }
    assert!(matches!(
        locked().unlock(&Unlocker::KeyFile(master.clone())),
        Err(BackupError::Format1(_))
    ));
    assert!(matches!(locked().shred(), Err(BackupError::Format1(_))));
}

#[test]
fn the_format_2_repository_opens_by_each_slot_and_restores_its_vectors() {
    let (base, v) = vectors("backup-v2");
    let locked = || LockedRepository::read(LocalBackend::new(base.join("repo"))).unwrap();
    let by_file = locked()
        .unlock(&Unlocker::KeyFile(key(&v, "key_file")))
        .unwrap();
    assert_eq!(by_file.version(), 2);
    assert_eq!(by_file.opened_slot(), Some(0));
    assert_eq!(by_file.keyslots().len(), 3);
    assert_eq!(by_file.bound_vaults(), [bound_vault(&v)]);
    assert_eq!(by_file.binding(), None);
    restores_what_its_vectors_list(&by_file, &v);
    let by_vault = locked()
        .unlock(&Unlocker::Vault {
            vault_id: bound_vault(&v),
            key: key(&v, "vault_backup_key"),
        })
        .unwrap();
    assert_eq!(by_vault.opened_slot(), Some(1));
    // Slot 2: a remote slot, opened by the exchange key an authority's
    // answer unblinds to; its parameters name the authority.
    let by_authority = locked()
        .unlock(&Unlocker::Remote(key(&v, "remote_exchange_key")))
        .unwrap();
    assert_eq!(
        by_authority.opened_slot(),
        v["remote_slot"].as_u64().and_then(|s| u8::try_from(s).ok())
    );
    let remote = by_authority
        .keyslots()
        .iter()
        .find(|s| Some(s.id) == by_authority.opened_slot())
        .unwrap();
    match &remote.kind {
        atrest_vault::SlotKind::Remote(slot) => {
            assert_eq!(slot.authority.url, "https://keys.example:7443");
            assert_eq!(slot.authority.host_id.as_str(), "backup-vectors");
        }
        other => panic!("slot 2 is {}", other.name()),
    }
    let by_master = Repository::open(LocalBackend::new(base.join("repo")), &key(&v, "master_key"));
    assert_eq!(by_master.unwrap().opened_slot(), None);
    assert!(matches!(
        locked().unlock(&Unlocker::KeyFile(key(&v, "master_key"))),
        Err(BackupError::NoMatchingSlot { .. })
    ));
}

fn restores_what_its_vectors_list(repo: &Repository<LocalBackend>, v: &serde_json::Value) {
    let check = repo.check(true).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    let target = tempfile::tempdir().unwrap();
    let report = repo
        .restore(v["snapshot"].as_str().unwrap(), target.path())
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let root = target.path().join(v["root"].as_str().unwrap());
    for e in v["entries"].as_array().unwrap() {
        let p = root.join(e["path"].as_str().unwrap());
        let md = fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            u64::from(md.mode() & 0o7777),
            e["mode"].as_u64().unwrap(),
            "{p:?}"
        );
        assert_eq!(md.mtime(), e["mtime_sec"].as_i64().unwrap(), "{p:?}");
        assert_eq!(md.mtime_nsec(), e["mtime_nsec"].as_i64().unwrap(), "{p:?}");
        match e["kind"].as_str().unwrap() {
            "file" => assert_eq!(
                atrest_core::sha256(&fs::read(&p).unwrap()).to_vec(),
                unhex(e["sha256"].as_str().unwrap())
            ),
            "symlink" => assert_eq!(
                fs::read_link(&p).unwrap().to_str().unwrap(),
                e["target"].as_str().unwrap()
            ),
            "dir" => assert!(md.is_dir()),
            other => panic!("kind {other}"),
        }
    }
}
