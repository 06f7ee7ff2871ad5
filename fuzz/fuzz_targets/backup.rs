//! The backup repository's parsers (docs/format.md §18) on arbitrary bytes:
//! a config (opened with and without a key), a keyslot object (read, then
//! tried with a key file: it never opens), and a pack and an index file
//! named correctly (by keyed hash, so the bytes reach the parsers behind
//! the name check) in an otherwise valid repository, then `check
//! --read-data`; a lock file and a snapshot file, then listing them. Errors only, never a panic; nothing forged authenticates.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Mutex;

use atrest_backup::{Backend, ChunkSizes, LockedRepository, Repository, RepoKeys, Result};
use atrest_core::SecretKey;
use atrest_vault::Unlocker;
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Mem(Mutex<BTreeMap<String, Vec<u8>>>);

impl Backend for Mem {
    fn location(&self) -> String {
        "mem".into()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.0.lock().expect("lock").entry(name.into()).or_insert_with(|| data.to_vec());
        Ok(())
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.0.lock().expect("lock").get(name).cloned().ok_or_else(|| atrest_backup::BackupError::Storage {
            path: name.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let all = self.get(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
        Ok(all[start..(start.saturating_add(len)).min(all.len())].to_vec())
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = format!("{dir}/");
        Ok(self.0.lock().expect("lock").keys().filter(|k| k.starts_with(&prefix)).cloned().collect())
    }
    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.0.lock().expect("lock").contains_key(name))
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.0.lock().expect("lock").remove(name);
        Ok(())
    }
    fn destroy(&self, name: &str) -> Result<()> {
        self.delete(name)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // Not the key of testdata/backup-v1 (whose config is a corpus seed).
    let master = SecretKey::from_bytes([0x17; 32]);
    let sizes = ChunkSizes { min: 1024, avg: 4096, max: 16384 };
    if selector % 4 == 0 {
        let mem = Mem::default();
        mem.put("config", rest).expect("put");
        if let Ok(locked) = LockedRepository::read(mem) {
            let _ = locked.binding();
            assert!(locked.open(&master).is_err());
        }
        return;
    }
    let repo = Repository::init(Mem::default(), &master, sizes).expect("init");
    if selector % 4 == 2 {
        // A forged keyslot object in a valid repository: parsed or
        // refused, never opened by a key file it was not made for.
        let mem = Mem::default();
        mem.put("config", &repo.backend().get("config").expect("config")).expect("put");
        mem.put("keys/00", rest).expect("put");
        let locked = LockedRepository::read(mem).expect("read");
        assert_eq!(locked.keyslots().len(), 1);
        assert!(locked.unlock(&Unlocker::KeyFile(SecretKey::from_bytes([0x18; 32]))).is_err());
        return;
    }
    let keys = RepoKeys::new(&master, repo.repo_id());
    let name = hex(&keys.blob_id(rest));
    let mem = Mem::default();
    mem.put("config", &repo.backend().get("config").expect("config")).expect("put");
    if selector % 4 == 3 {
        // A forged lock file and snapshot: neither opens, neither panics.
        mem.put(&format!("locks/{name}"), rest).expect("put");
        mem.put(&format!("snapshots/{name}"), rest).expect("put");
        let repo = Repository::open(mem, &master).expect("open");
        assert!(repo.locks().expect("list").iter().all(|l| l.info.is_err()));
        assert!(repo.snapshots().is_err());
        return;
    }
    let target = if selector % 4 == 1 { format!("data/{}/{name}", &name[..2]) } else { format!("index/{name}") };
    mem.put(&target, rest).expect("put");
    // A forged index fails to open; a forged pack opens (no index names
    // it) and `check` must report it.
    if let Ok(repo) = Repository::open(mem, &master) {
        let report = repo.check(true).expect("check runs");
        assert!(!report.problems.is_empty());
    }
});
