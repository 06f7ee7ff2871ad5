//! A simulated disk that loses what was not made durable: the crash and
//! power-loss model of the tests (docs/plans/format-2.md, stage 1).
//!
//! Every file keeps its durable bytes (as of its last `sync`) and what was
//! written since. A [`SimDisk::crash`] keeps a random subset of the
//! unsynced 4 KiB pages, tears some at 512-byte sectors, and drops the
//! rest; a file created or removed since its directory's last
//! `sync_dir` may or may not exist afterwards. That is what ext4 in
//! `data=ordered` mode promises and no more.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Mutex;

use crate::backing::{Backing, not_found, read_from};

const PAGE: usize = 4096;
const SECTOR: usize = 512;

#[derive(Debug, Clone, Default)]
struct File {
    /// What survives a crash for sure; `None` if the file may not.
    durable: Option<Vec<u8>>,
    /// What reads see; `None` once removed.
    current: Option<Vec<u8>>,
    /// Pages written since the last sync.
    dirty: BTreeSet<usize>,
    /// The directory entry is durable as `current` says (created and the
    /// directory synced, or removed and the directory synced).
    entry_durable: bool,
}

/// A small deterministic generator (xorshift64*), so a failing crash is
/// replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The simulated disk.
#[derive(Debug, Default)]
pub struct SimDisk {
    files: Mutex<BTreeMap<String, File>>,
    /// `sync` calls so far, so a test can crash "at the n-th sync".
    syncs: Mutex<u64>,
    /// Changing calls left before the power goes (`None`: no cut set).
    budget: Mutex<Option<u64>>,
    /// Changing calls made so far (writes, syncs, truncates, removes).
    calls: Mutex<u64>,
}

fn parent(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(dir, _)| dir)
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, File>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The power goes after `calls` more changing calls (writes, syncs,
    /// truncates, removes): from then on every one fails, until
    /// [`crash`](Self::crash).
    pub fn cut_power_after(&self, calls: u64) {
        *self.budget.lock().unwrap_or_else(|e| e.into_inner()) = Some(calls);
    }

    /// How many changing calls were made (a test sizes its power cuts
    /// with it).
    pub fn calls(&self) -> u64 {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spend(&self) -> io::Result<()> {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        match budget.as_mut() {
            None => Ok(()),
            Some(0) => Err(io::Error::other("the power is off (simulated)")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }

    /// How many `sync`/`sync_dir` calls completed.
    pub fn sync_count(&self) -> u64 {
        *self.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Power is cut: keep what was durable, and a random part of the
    /// rest. Afterwards everything on the disk is durable.
    pub fn crash(&self, rng: &mut Rng) {
        *self.budget.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut files = self.files();
        let mut after = BTreeMap::new();
        for (name, file) in files.iter() {
            let exists_now = file.current.is_some();
            let exists = if file.entry_durable {
                exists_now
            } else {
                // Created or removed without a directory sync: either.
                rng.below(2) == 0
            };
            if !exists {
                continue;
            }
            let base = file.durable.clone().unwrap_or_default();
            let bytes = match &file.current {
                None => base,
                Some(current) => mix(rng, &base, current, &file.dirty),
            };
            after.insert(
                name.clone(),
                File {
                    durable: Some(bytes.clone()),
                    current: Some(bytes),
                    dirty: BTreeSet::new(),
                    entry_durable: true,
                },
            );
        }
        *files = after;
    }

    /// The host died but its page cache was written back (a `kill -9` of
    /// the mount process only): nothing is lost.
    pub fn flush_all(&self) {
        let mut files = self.files();
        files.retain(|_, f| f.current.is_some());
        for file in files.values_mut() {
            file.durable = file.current.clone();
            file.dirty.clear();
            file.entry_durable = true;
        }
    }

    /// The bytes a reader sees now, for comparisons in tests.
    pub fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        self.files()
            .iter()
            .filter_map(|(n, f)| f.current.clone().map(|c| (n.clone(), c)))
            .collect()
    }
}

/// After a crash: the durable bytes with each unsynced page kept new,
/// kept old, or torn sector by sector; the length is the old one or the
/// new one.
fn mix(rng: &mut Rng, old: &[u8], new: &[u8], dirty: &BTreeSet<usize>) -> Vec<u8> {
    let len = if old.len() == new.len() || rng.below(2) == 0 {
        new.len()
    } else {
        old.len()
    };
    let mut out = old.to_vec();
    out.resize(len, 0);
    for &page in dirty {
        let start = page * PAGE;
        if start >= len {
            continue;
        }
        let end = (start + PAGE).min(len);
        match rng.below(3) {
            0 => {}
            1 => copy_from(&mut out, new, start, end),
            _ => {
                for sector in (start..end).step_by(SECTOR) {
                    if rng.below(2) == 0 {
                        copy_from(&mut out, new, sector, (sector + SECTOR).min(end));
                    }
                }
            }
        }
    }
    out
}

fn copy_from(out: &mut [u8], new: &[u8], start: usize, end: usize) {
    for (i, byte) in out.iter_mut().enumerate().take(end).skip(start) {
        *byte = new.get(i).copied().unwrap_or(0);
    }
}

impl Backing for SimDisk {
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let files = self.files();
        let file = files
            .get(name)
            .and_then(|f| f.current.as_ref())
            .ok_or_else(|| not_found(name))?;
        Ok(read_from(file, offset, buf))
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.spend()?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::FileTooLarge)?;
        let mut files = self.files();
        let file = files.entry(name.to_owned()).or_default();
        if file.current.is_none() {
            // Created (again): the entry is new until its directory syncs.
            file.current = Some(Vec::new());
            file.entry_durable = false;
        }
        let bytes = file.current.as_mut().expect("just made");
        let end = start + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        if !data.is_empty() {
            file.dirty.extend(start / PAGE..=(end - 1) / PAGE);
        }
        Ok(())
    }

    fn len(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self
            .files()
            .get(name)
            .and_then(|f| f.current.as_ref())
            .map(|c| c.len() as u64))
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.spend()?;
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::FileTooLarge)?;
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        let bytes = file.current.as_mut().ok_or_else(|| not_found(name))?;
        let old = bytes.len();
        bytes.resize(len, 0);
        if len > old {
            file.dirty.extend(old / PAGE..=(len - 1) / PAGE);
        } else if len < old && len % PAGE != 0 {
            file.dirty.insert(len / PAGE);
        }
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.spend()?;
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        let current = file.current.clone().ok_or_else(|| not_found(name))?;
        file.durable = Some(current);
        file.dirty.clear();
        drop(files);
        *self.syncs.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.spend()?;
        let mut files = self.files();
        files.retain(|name, f| !(parent(name) == dir && f.current.is_none()));
        for (name, file) in files.iter_mut() {
            if parent(name) == dir {
                file.entry_durable = true;
            }
        }
        drop(files);
        *self.syncs.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(())
    }

    /// `syncfs`: every file's bytes and every directory entry durable.
    fn sync_all(&self) -> io::Result<bool> {
        self.spend()?;
        self.flush_all();
        *self.syncs.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(true)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.spend()?;
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        if file.current.take().is_none() {
            return Err(not_found(name));
        }
        file.entry_durable = false;
        Ok(())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{dir}/");
        Ok(self
            .files()
            .iter()
            .filter(|(_, f)| f.current.is_some())
            .filter_map(|(k, _)| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_data_survives_and_unsynced_may_not() {
        let disk = SimDisk::new();
        disk.write_at("a", 0, &[1; 8192]).unwrap();
        disk.sync("a").unwrap();
        disk.sync_dir("").unwrap();
        disk.write_at("a", 0, &[2; 8192]).unwrap();
        let mut seen_old = false;
        let mut seen_new = false;
        for seed in 1..64 {
            let copy = SimDisk::new();
            copy.write_at("a", 0, &[1; 8192]).unwrap();
            copy.sync("a").unwrap();
            copy.sync_dir("").unwrap();
            copy.write_at("a", 0, &[2; 8192]).unwrap();
            copy.crash(&mut Rng::new(seed));
            let bytes = &copy.contents()["a"];
            assert_eq!(bytes.len(), 8192);
            seen_old |= bytes[..512].iter().all(|&b| b == 1);
            seen_new |= bytes[..512].iter().all(|&b| b == 2);
            // Sector granularity: no sector is half old, half new.
            for sector in bytes.chunks(512) {
                assert!(sector.iter().all(|&b| b == sector[0]));
            }
        }
        assert!(seen_old && seen_new);
        disk.sync("a").unwrap();
        disk.crash(&mut Rng::new(7));
        assert_eq!(disk.contents()["a"], vec![2; 8192]);
    }

    #[test]
    fn a_file_created_without_a_directory_sync_may_vanish() {
        let mut outcomes = BTreeSet::new();
        for seed in 1..32 {
            let disk = SimDisk::new();
            disk.write_at("d/f", 0, b"x").unwrap();
            disk.sync("d/f").unwrap();
            disk.crash(&mut Rng::new(seed));
            outcomes.insert(disk.contents().contains_key("d/f"));
        }
        assert_eq!(outcomes.len(), 2);
        let disk = SimDisk::new();
        disk.write_at("d/f", 0, b"x").unwrap();
        disk.sync("d/f").unwrap();
        disk.sync_dir("d").unwrap();
        disk.crash(&mut Rng::new(3));
        assert_eq!(disk.contents()["d/f"], b"x");
    }
}
