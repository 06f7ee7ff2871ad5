//! What the authority keeps in memory while it runs: each host's parsed
//! exchange secrets (checked against the stored record on every release,
//! so a change made by another replica is seen at once), the policies
//! (re-read every tick), boot states not yet written, and a budget for
//! audit entries about refusals. Nonces live behind the storage seam.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use atrest_remote::{HostId, HostSecret, KeyId};

use crate::storage::{BootState, HostRecord, PolicyRule, PolicyScope};

/// A host as the hot path sees it.
pub(crate) struct HostEntry {
    pub record: HostRecord,
    /// Current first, then the previous one after a rotation. Empty once
    /// shredded.
    pub secrets: Vec<HostSecret>,
}

impl HostEntry {
    pub fn secret(&self, key_id: &KeyId) -> Option<&HostSecret> {
        self.secrets.iter().find(|s| s.key_id() == *key_id)
    }
}

fn lock_poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic while holding one of these locks leaves plain data behind
    // (maps of values); keep serving rather than take the authority down.
    e.into_inner()
}

#[derive(Default)]
pub(crate) struct Hosts(RwLock<HashMap<HostId, Arc<HostEntry>>>);

impl Hosts {
    pub fn get(&self, id: &HostId) -> Option<Arc<HostEntry>> {
        self.0.read().unwrap_or_else(lock_poisoned).get(id).cloned()
    }

    pub fn put(&self, entry: Arc<HostEntry>) {
        self.0
            .write()
            .unwrap_or_else(lock_poisoned)
            .insert(entry.record.id.clone(), entry);
    }

    /// Forgets a host changed here: the next use reads it again.
    pub fn remove(&self, id: &HostId) {
        self.0.write().unwrap_or_else(lock_poisoned).remove(id);
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(lock_poisoned).len()
    }
}

/// The policies, with a version that moves on every change made here, so
/// a re-read that started before the change cannot put the old rule back.
#[derive(Default)]
pub(crate) struct Policies(RwLock<(PolicyMap, u64)>);

/// Each policy by its scope's text.
type PolicyMap = HashMap<String, (PolicyScope, PolicyRule)>;

impl Policies {
    pub fn set(&self, scope: PolicyScope, rule: PolicyRule) {
        let mut policies = self.0.write().unwrap_or_else(lock_poisoned);
        policies.0.insert(scope.to_string(), (scope, rule));
        policies.1 += 1;
    }

    pub fn version(&self) -> u64 {
        self.0.read().unwrap_or_else(lock_poisoned).1
    }

    /// Replaces every policy with those read from storage since `version`,
    /// unless a change was made here meanwhile (the next re-read has it).
    pub fn replace(&self, all: Vec<(PolicyScope, PolicyRule)>, version: u64) {
        let mut policies = self.0.write().unwrap_or_else(lock_poisoned);
        if policies.1 == version {
            policies.0 = all
                .into_iter()
                .map(|(scope, rule)| (scope.to_string(), (scope, rule)))
                .collect();
        }
    }

    pub fn get(&self, scope: &PolicyScope) -> Option<PolicyRule> {
        self.0
            .read()
            .unwrap_or_else(lock_poisoned)
            .0
            .get(&scope.to_string())
            .map(|(_, rule)| *rule)
    }

    pub fn all(&self) -> Vec<(PolicyScope, PolicyRule)> {
        let mut all: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(lock_poisoned)
            .0
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|(scope, _)| scope.to_string());
        all
    }
}

/// Boot states changed here and not yet written, and release times not
/// yet written. A release that changes what the next request is judged by
/// (a new boot, its ticket, the end of a planned window) writes its host's
/// state before it answers (see `Authority::record_boot`); one whose write
/// failed stays here, is read from here, and is written again by the next
/// writer or tick. A release of the boot already known moves only
/// `last_unlock_at`, which no verdict reads (it is shown to operators and
/// approvers): that time waits here and the next tick writes every host's
/// at once, so such a release costs no write of its own.
#[derive(Default)]
pub(crate) struct Boots(Mutex<Unwritten>);

#[derive(Default)]
struct Unwritten {
    states: HashMap<HostId, BootState>,
    /// `last_unlock_at` of hosts with no state in `states`.
    unlock_times: HashMap<HostId, u64>,
}

impl Boots {
    fn map(&self) -> std::sync::MutexGuard<'_, Unwritten> {
        self.0.lock().unwrap_or_else(lock_poisoned)
    }

    pub fn pending(&self, id: &HostId) -> Option<BootState> {
        self.map().states.get(id).cloned()
    }

    /// `stored` (the host's state as the store has it) with the release
    /// time not yet written, if any.
    pub fn with_unlock_time(&self, id: &HostId, mut stored: BootState) -> BootState {
        if let Some(&at) = self.map().unlock_times.get(id) {
            stored.last_unlock_at = stored.last_unlock_at.max(Some(at));
        }
        stored
    }

    /// Changes the host's state: the one pending here, else `stored`.
    /// Whether it must be written before the answer: `false` when only
    /// `last_unlock_at` moved, which is then left for the next tick.
    pub fn update(
        &self,
        id: &HostId,
        stored: BootState,
        change: impl FnOnce(&mut BootState),
    ) -> bool {
        let mut map = self.map();
        if let Some(state) = map.states.get_mut(id) {
            change(state);
            return true;
        }
        let mut next = stored.clone();
        change(&mut next);
        let judged_alike = BootState {
            last_unlock_at: stored.last_unlock_at,
            ..next.clone()
        } == stored;
        if judged_alike {
            if let Some(at) = next.last_unlock_at {
                let time = map.unlock_times.entry(id.clone()).or_insert(at);
                *time = (*time).max(at);
            }
            return false;
        }
        map.unlock_times.remove(id);
        map.states.insert(id.clone(), next);
        true
    }

    /// Every pending state, to write in one transaction.
    pub fn all_pending(&self) -> Vec<(HostId, BootState)> {
        self.map()
            .states
            .iter()
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect()
    }

    /// These were written; those changed again since stay pending.
    pub fn written(&self, written: &[(HostId, BootState)]) {
        let mut map = self.map();
        for (id, state) in written {
            if map.states.get(id) == Some(state) {
                map.states.remove(id);
            }
        }
    }

    /// Every release time not yet written.
    pub fn unlock_times(&self) -> Vec<(HostId, u64)> {
        self.map()
            .unlock_times
            .iter()
            .map(|(id, at)| (id.clone(), *at))
            .collect()
    }

    /// These times were written; later ones stay.
    pub fn unlock_times_written(&self, written: &[(HostId, u64)]) {
        let mut map = self.map();
        for (id, at) in written {
            if map.unlock_times.get(id) == Some(at) {
                map.unlock_times.remove(id);
            }
        }
    }
}

/// At most `per_second` audit entries about refusals each second; the rest
/// are counted and written as one summary entry, so garbage sent by anyone
/// cannot flood the log (or the disk).
pub(crate) struct RefusalBudget {
    per_second: u32,
    inner: Mutex<RefusalWindow>,
}

#[derive(Default)]
struct RefusalWindow {
    second: u64,
    written: u32,
    suppressed: HashMap<&'static str, u64>,
}

impl RefusalBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            inner: Mutex::new(RefusalWindow::default()),
        }
    }

    /// Whether this refusal gets its own entry.
    pub fn admit(&self, code: &'static str, now: u64) -> bool {
        let mut w = self.inner.lock().unwrap_or_else(lock_poisoned);
        if w.second != now {
            w.second = now;
            w.written = 0;
        }
        if w.written < self.per_second {
            w.written += 1;
            true
        } else {
            *w.suppressed.entry(code).or_default() += 1;
            false
        }
    }

    /// The counts of refusals not written one by one since the last call.
    pub fn take_suppressed(&self) -> HashMap<&'static str, u64> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(lock_poisoned).suppressed)
    }
}
