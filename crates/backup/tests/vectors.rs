//! The committed format 1 repository (testdata/backup-v1/) opens with its
//! key, checks clean with every blob read, and restores exactly what
//! vectors.json lists. tests/differential/check_backup.py reads the same
//! repository without atrest code.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use atrest_backup::{LocalBackend, Repository};
use atrest_core::SecretKey;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_format_1_repository_restores_what_its_vectors_list() {
    let base = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/backup-v1"
    ));
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(base.join("vectors.json")).unwrap()).unwrap();
    let key = SecretKey::from_slice(&unhex(v["master_key"].as_str().unwrap())).unwrap();
    let repo = Repository::open(LocalBackend::new(base.join("repo")), &key).unwrap();
    assert_eq!(
        repo.binding().map(|b| b.to_vec()),
        Some(unhex(v["bound_vault"].as_str().unwrap()))
    );
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
    // The wrong key does not open it.
    assert!(Repository::open(LocalBackend::new(base.join("repo")), &SecretKey::random()).is_err());
}
