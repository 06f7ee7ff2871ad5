//! Repository locks (docs/format.md §18.5), as restic's: a lock is a
//! sealed file `locks/<random>` naming the host, process and time. `run`,
//! `restore` and `check` take a shared lock, `forget` and `prune` an
//! exclusive one; any number of shared locks coexist (several hosts can
//! back up into one repository at once: every object is write-once and
//! named by its content), an exclusive one coexists with nothing, so
//! `prune` never deletes what a running `run` still references.
//!
//! Taking a lock: list the locks; refuse if one conflicts; write ours; list
//! again and, if a conflicting lock appeared meanwhile, remove ours and
//! refuse (two racing takers both back off rather than both proceed).
//! A held lock is rewritten every [`LOCK_REFRESH`] while its command makes
//! progress; a lock not refreshed for [`LOCK_STALE`] (its process was
//! killed, or its host went away), or one of this host whose process is
//! gone, is stale: ignored by takers, removed by `atrest backup unlock`.
//! The times are the writers' clocks: hosts must keep them within minutes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, hex};
use crate::error::{BackupError, Result};
use crate::repo::Repository;

/// How often a held lock is rewritten while its command runs.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock older than this is stale.
pub const LOCK_STALE: Duration = Duration::from_secs(30 * 60);

/// What a lock file says (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    pub exclusive: bool,
    pub hostname: String,
    pub pid: u32,
    /// When it was taken or last refreshed (ms since the epoch).
    pub time_ms: u64,
}

impl LockInfo {
    /// Whether takers may ignore it: too old, or of this host and its
    /// process gone.
    pub fn is_stale(&self, now_ms: u64, hostname: &str) -> bool {
        now_ms.saturating_sub(self.time_ms) > LOCK_STALE.as_millis() as u64
            || (self.hostname == hostname && !owner_may_live(self.pid, self.time_ms))
    }

    fn describe(&self) -> String {
        format!(
            "{} lock of process {} on {}, {} s old",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.pid,
            self.hostname,
            now_ms().saturating_sub(self.time_ms) / 1000
        )
    }
}

/// Whether process `pid` of this host can still be the one that wrote a
/// lock at `time_ms`: a process (not a thread: /proc/TID exists for every
/// thread too) with that id, started no later than the lock was written.
/// Process ids are reused (32,768 of them by default, shared with thread
/// ids), so a bare existence check would keep a dead command's lock alive
/// whenever its id is taken again. Unknown: assume it lives (fail closed).
fn owner_may_live(pid: u32, time_ms: u64) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if tgid != Some(pid) {
        return false;
    }
    match process_start_ms(pid) {
        // btime has a resolution of one second.
        Some(started) => started <= time_ms + 1000,
        None => true,
    }
}

/// When process `pid` started (ms since the epoch), from its start time in
/// clock ticks since boot (/proc/PID/stat field 22) and the boot time
/// (/proc/stat `btime`).
fn process_start_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after the last ')' are numbered from 3.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    Some(btime * 1000 + ticks * 1000 / hz.max(1))
}

fn now_ms() -> u64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "lock times are wall-clock by design: other hosts compare them; tests give is_stale its time"
    )]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The lock this process holds on a repository.
pub(crate) struct Held {
    name: String,
    info: LockInfo,
    refreshed: Instant,
}

/// A repository's lock slot (inside [`Repository`]).
#[derive(Default)]
pub(crate) struct LockSlot(Mutex<Option<Held>>);

/// One lock file as listed.
#[derive(Debug)]
pub struct ListedLock {
    pub name: String,
    /// The lock, or why it could not be read (a lock that does not open is
    /// treated as held: fail closed).
    pub info: Result<LockInfo>,
}

impl<B: Backend> Repository<B> {
    /// Every lock file of the repository.
    pub fn locks(&self) -> Result<Vec<ListedLock>> {
        let mut out = Vec::new();
        for name in self.backend().list("locks")? {
            let info = self.backend().get(&name).and_then(|sealed| {
                let plain = self.keys().open_file("lock", &name, &sealed)?;
                serde_json::from_slice(&plain)
                    .map_err(|e| BackupError::damaged(&name, e.to_string()))
            });
            out.push(ListedLock { name, info });
        }
        Ok(out)
    }

    /// The first lock (other than `own`) that conflicts with taking one
    /// (`exclusive` or shared) on host `hostname`.
    fn conflict(
        &self,
        exclusive: bool,
        hostname: &str,
        own: Option<&str>,
    ) -> Result<Option<String>> {
        let now = now_ms();
        for lock in self.locks()? {
            if Some(lock.name.as_str()) == own {
                continue;
            }
            match &lock.info {
                Ok(info) if info.is_stale(now, hostname) => {}
                Ok(info) if exclusive || info.exclusive => {
                    return Ok(Some(format!("{} ({})", info.describe(), lock.name)));
                }
                Ok(_) => {}
                Err(e) => return Ok(Some(format!("an unreadable lock ({e})"))),
            }
        }
        Ok(None)
    }

    /// Takes a shared or exclusive lock for this process, held until
    /// [`Repository::unlock`] or until the repository is dropped, then
    /// re-reads the index (a `prune` may have finished since it was read).
    pub fn lock(&mut self, exclusive: bool, hostname: &str) -> Result<()> {
        if let Some(by) = self.conflict(exclusive, hostname, None)? {
            return Err(BackupError::Locked(by));
        }
        let info = LockInfo {
            exclusive,
            hostname: hostname.to_string(),
            pid: std::process::id(),
            time_ms: now_ms(),
        };
        let name = self.write_lock(&info)?;
        if let Some(by) = self.conflict(exclusive, hostname, Some(&name))? {
            let _ = self.backend().delete(&name);
            return Err(BackupError::Locked(by));
        }
        *self.lock_slot().0.lock().expect("lock slot") = Some(Held {
            name,
            info,
            refreshed: Instant::now(),
        });
        self.load_index()
    }

    fn write_lock(&self, info: &LockInfo) -> Result<String> {
        let name = format!("locks/{}", hex(&atrest_core::random_array::<16>()));
        let sealed = self
            .keys()
            .seal_file("lock", &serde_json::to_vec(info).expect("json"));
        self.backend().put(&name, &sealed)?;
        Ok(name)
    }

    /// Rewrites the held lock if [`LOCK_REFRESH`] has passed; called as a
    /// long command makes progress. A failed refresh is retried at the next
    /// call (the lock stays valid for [`LOCK_STALE`]).
    pub(crate) fn keep_lock(&self) {
        let mut slot = self.lock_slot().0.lock().expect("lock slot");
        let Some(held) = slot.as_mut() else { return };
        if held.refreshed.elapsed() < LOCK_REFRESH {
            return;
        }
        let mut info = held.info.clone();
        info.time_ms = now_ms();
        if let Ok(name) = self.write_lock(&info) {
            let _ = self.backend().delete(&held.name);
            *held = Held {
                name,
                info,
                refreshed: Instant::now(),
            };
        }
    }

    /// Removes this process's lock.
    pub fn unlock(&self) -> Result<()> {
        let held = self.lock_slot().0.lock().expect("lock slot").take();
        match held {
            Some(held) => self.backend().delete(&held.name),
            None => Ok(()),
        }
    }

    /// Removes stale locks (or, with `all`, every lock); returns how many.
    pub fn remove_locks(&self, all: bool, hostname: &str) -> Result<usize> {
        let now = now_ms();
        let mut removed = 0;
        for lock in self.locks()? {
            let stale = match &lock.info {
                Ok(info) => info.is_stale(now, hostname),
                Err(_) => false,
            };
            if all || stale {
                self.backend().delete(&lock.name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::LocalBackend;
    use crate::chunker::ChunkSizes;
    use atrest_core::SecretKey;

    const SIZES: ChunkSizes = ChunkSizes {
        min: 1024,
        avg: 4096,
        max: 16384,
    };

    fn locked(r: Result<()>) -> String {
        match r {
            Err(e @ BackupError::Locked(_)) => e.to_string(),
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_coexist_with_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::random();
        drop(Repository::init(LocalBackend::new(dir.path()), &key, SIZES).unwrap());
        let open = || Repository::open(LocalBackend::new(dir.path()), &key).unwrap();
        let (mut a, mut b, mut c) = (open(), open(), open());
        a.lock(false, "host-a").unwrap();
        b.lock(false, "host-b").unwrap();
        assert_eq!(a.locks().unwrap().len(), 2);
        // A prune waits for both runs.
        let why = locked(c.lock(true, "host-c"));
        assert!(
            why.contains("a shared lock of process") && why.contains("atrest backup unlock"),
            "{why}"
        );
        assert_eq!(
            c.locks().unwrap().len(),
            2,
            "a refused taker leaves nothing"
        );
        a.unlock().unwrap();
        drop(b); // dropping the repository releases its lock
        c.lock(true, "host-c").unwrap();
        // Nothing else while the prune holds its lock.
        let mut d = open();
        assert!(locked(d.lock(false, "host-d")).contains("an exclusive lock"));
        assert!(locked(d.lock(true, "host-d")).contains("an exclusive lock"));
        c.unlock().unwrap();
        d.lock(false, "host-d").unwrap();
    }

    #[test]
    fn stale_locks_are_ignored_and_removed_by_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::random();
        let mut repo = Repository::init(LocalBackend::new(dir.path()), &key, SIZES).unwrap();
        let now = now_ms();
        // Killed 31 minutes ago on another host, without a refresh since.
        let old = LockInfo {
            exclusive: true,
            hostname: "elsewhere".into(),
            pid: 1,
            time_ms: now - 31 * 60 * 1000,
        };
        // Of this host, fresh, but its process is gone (pids stop below
        // 2^22 on Linux).
        let dead = LockInfo {
            exclusive: true,
            hostname: "here".into(),
            pid: u32::MAX - 7,
            time_ms: now,
        };
        // Fresh, of another host: honoured.
        let live = LockInfo {
            exclusive: true,
            hostname: "elsewhere".into(),
            pid: 1,
            time_ms: now,
        };
        assert!(old.is_stale(now, "here") && dead.is_stale(now, "here"));
        // A live process that started after the lock was written (its id
        // reused), and a thread id: neither is the owner.
        let reused = LockInfo {
            exclusive: true,
            hostname: "here".into(),
            pid: std::process::id(),
            time_ms: process_start_ms(std::process::id()).unwrap() - 5_000,
        };
        assert!(reused.is_stale(now, "here"));
        let mine = LockInfo {
            time_ms: now,
            ..reused.clone()
        };
        assert!(!mine.is_stale(now, "here"), "this process wrote it now");
        // This test runs on a thread of its own: its id is a thread id.
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        if tid != std::process::id() {
            let thread = LockInfo { pid: tid, ..mine };
            assert!(
                thread.is_stale(now, "here"),
                "a thread id is never a lock's owner"
            );
        }
        assert!(!live.is_stale(now, "here") && !dead.is_stale(now, "elsewhere"));
        repo.write_lock(&old).unwrap();
        repo.write_lock(&dead).unwrap();
        repo.lock(false, "here").unwrap();
        repo.unlock().unwrap();
        let live_name = repo.write_lock(&live).unwrap();
        assert!(locked(repo.lock(false, "here")).contains("on elsewhere"));
        assert_eq!(repo.remove_locks(false, "here").unwrap(), 2);
        assert_eq!(repo.locks().unwrap().len(), 1);
        assert_eq!(repo.locks().unwrap()[0].name, live_name);
        assert_eq!(repo.remove_locks(true, "here").unwrap(), 1);
        repo.lock(true, "here").unwrap();
    }

    #[test]
    fn a_lock_that_does_not_open_is_held_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::random();
        let mut repo = Repository::init(LocalBackend::new(dir.path()), &key, SIZES).unwrap();
        repo.backend()
            .put("locks/00ff", b"not a sealed lock")
            .unwrap();
        assert!(locked(repo.lock(false, "here")).contains("unreadable lock"));
        assert_eq!(repo.remove_locks(false, "here").unwrap(), 0);
        assert_eq!(repo.remove_locks(true, "here").unwrap(), 1);
        repo.lock(false, "here").unwrap();
    }
}
