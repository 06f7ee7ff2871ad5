//! What the authority keeps in memory while it runs: a write-through copy
//! of the hosts and policies (the hot path reads no database), the boot
//! state (flushed in batches), recently used nonces, and a budget for
//! audit entries about refusals.

use std::collections::{HashMap, HashSet};
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

    pub fn put(&self, entry: HostEntry) {
        self.0
            .write()
            .unwrap_or_else(lock_poisoned)
            .insert(entry.record.id.clone(), Arc::new(entry));
    }

    pub fn all(&self) -> Vec<Arc<HostEntry>> {
        let mut all: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(lock_poisoned)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.record.id.as_str().cmp(b.record.id.as_str()));
        all
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(lock_poisoned).len()
    }
}

#[derive(Default)]
pub(crate) struct Policies(RwLock<HashMap<String, (PolicyScope, PolicyRule)>>);

impl Policies {
    pub fn set(&self, scope: PolicyScope, rule: PolicyRule) {
        self.0
            .write()
            .unwrap_or_else(lock_poisoned)
            .insert(scope.to_string(), (scope, rule));
    }

    pub fn get(&self, scope: &PolicyScope) -> Option<PolicyRule> {
        self.0
            .read()
            .unwrap_or_else(lock_poisoned)
            .get(&scope.to_string())
            .map(|(_, rule)| *rule)
    }

    pub fn all(&self) -> Vec<(PolicyScope, PolicyRule)> {
        let mut all: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(lock_poisoned)
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|(scope, _)| scope.to_string());
        all
    }
}

/// Boot states, and which changed since the last flush.
#[derive(Default)]
pub(crate) struct Boots {
    inner: Mutex<(HashMap<HostId, BootState>, HashSet<HostId>)>,
}

impl Boots {
    pub fn load(&self, states: Vec<(HostId, BootState)>) {
        let mut inner = self.inner.lock().unwrap_or_else(lock_poisoned);
        inner.0.extend(states);
    }

    pub fn get(&self, id: &HostId) -> BootState {
        self.inner
            .lock()
            .unwrap_or_else(lock_poisoned)
            .0
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn update(&self, id: &HostId, change: impl FnOnce(&mut BootState)) {
        let mut inner = self.inner.lock().unwrap_or_else(lock_poisoned);
        change(inner.0.entry(id.clone()).or_default());
        inner.1.insert(id.clone());
    }

    /// The changed states, to write; they stay marked until
    /// [`flushed`](Self::flushed) or are taken again after a failure.
    pub fn dirty(&self) -> Vec<(HostId, BootState)> {
        let inner = self.inner.lock().unwrap_or_else(lock_poisoned);
        inner
            .1
            .iter()
            .filter_map(|id| inner.0.get(id).map(|s| (id.clone(), s.clone())))
            .collect()
    }

    pub fn flushed(&self, written: &[(HostId, BootState)]) {
        let mut inner = self.inner.lock().unwrap_or_else(lock_poisoned);
        for (id, state) in written {
            // Changed again since it was taken: keep it dirty.
            if inner.0.get(id) == Some(state) {
                inner.1.remove(id);
            }
        }
    }
}

/// Nonces of recent requests, until their timestamps can no longer pass.
#[derive(Default)]
pub(crate) struct Nonces(Mutex<HashMap<[u8; 16], u64>>);

impl Nonces {
    /// `false` if the nonce was already seen: a replay.
    pub fn spend(&self, nonce: [u8; 16], keep_until: u64) -> bool {
        let mut map = self.0.lock().unwrap_or_else(lock_poisoned);
        match map.entry(nonce) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(keep_until);
                true
            }
        }
    }

    pub fn prune(&self, now: u64) {
        self.0
            .lock()
            .unwrap_or_else(lock_poisoned)
            .retain(|_, until| *until >= now);
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
