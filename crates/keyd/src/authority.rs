//! The key authority's facade: [`Authority`] and what it keeps in memory,
//! opening it (nonces reloaded from the log), host views, audited
//! refusals and the periodic work. Its rules live one job per module, each
//! an `impl Authority` block that reaches the state through the accessors
//! here (the fields of `Inner` are private to this file):
//!
//! - [`crate::enroll`]: tokens, enrollment, bind;
//! - [`crate::unlock`]: verifying a request, release, reboot notices;
//! - [`crate::policy`]: the pure verdict (rule × boot status);
//! - [`crate::approval`]: holding requests for a person, decisions, polls,
//!   over the table in [`crate::held`];
//! - [`crate::approvers`]: approvers, their TOTP codes and login budgets;
//! - [`crate::operator`]: revoke, reinstate, shred, rotate and retire,
//!   policies;
//! - [`crate::witness`]: the generation witnessed for each format 2 vault,
//!   its reports and the claims of unlock requests.
//!
//! Every decision is audited; a key is released only after its audit entry
//! is durable.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use atrest_audit::{AuditLog, AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{HostId, HostSecret};
use serde::Serialize;

pub use crate::enroll::{MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME, Token};
pub use crate::error::AuthorityError;
use crate::events::AuditEvent;
use crate::held::{PendingView, PollToken};
use crate::metrics::Metrics;
use crate::state::{Boots, HostEntry, Hosts, Policies, RefusalBudget};
use crate::storage::{BootState, Held, HostRecord, HostState, PolicyRule, Storage, StorageError};
pub use crate::unlock::Grant;

/// Called with each request that starts waiting for an approver (the
/// webhook). Must not block.
pub type PendingNotifier = Arc<dyn Fn(&PendingView) + Send + Sync>;

/// [`AuthorityOptions::max_file_streams_per_app`] unless set.
pub const DEFAULT_FILE_STREAMS_PER_APP: usize = 16;

/// Tuning for [`Authority`].
#[derive(Clone)]
pub struct AuthorityOptions {
    /// Largest difference, in seconds, between a request's time and ours.
    pub max_skew: u64,
    /// Rules when neither the host, its group nor the stored default has one.
    pub default_rule: PolicyRule,
    /// How long a held request waits for an approver before it is denied.
    pub approval_timeout: u64,
    /// How long after `atrest reboot --planned` the next boot counts as
    /// accounted for.
    pub planned_reboot_window: u64,
    /// Audit entries about refusals per second before they are summarized.
    pub refusal_entries_per_second: u32,
    pub on_pending: Option<PendingNotifier>,
    /// Whether the scoped API is on; its keys are wrapped under the
    /// store's records keyring (`records.key`, decision 0020). Off, it
    /// answers `scoped_disabled`.
    pub scoped: bool,
    /// File streams (`/v1/scoped/file/…`) one app may have open at once;
    /// past it, `too_many_streams` (429).
    pub max_file_streams_per_app: usize,
}

impl Default for AuthorityOptions {
    fn default() -> Self {
        Self {
            max_skew: 300,
            default_rule: PolicyRule::default(),
            approval_timeout: 600,
            planned_reboot_window: 3600,
            refusal_entries_per_second: 50,
            on_pending: None,
            scoped: false,
            max_file_streams_per_app: DEFAULT_FILE_STREAMS_PER_APP,
        }
    }
}

impl std::fmt::Debug for AuthorityOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityOptions")
            .field("max_skew", &self.max_skew)
            .field("default_rule", &self.default_rule)
            .field("approval_timeout", &self.approval_timeout)
            .field("planned_reboot_window", &self.planned_reboot_window)
            .field("on_pending", &self.on_pending.is_some())
            .field("scoped", &self.scoped)
            .field("max_file_streams_per_app", &self.max_file_streams_per_app)
            .finish()
    }
}

pub use atrest_wire::{Enrollment, Rebind};

/// The outcome of an unlock request that was not refused.
#[derive(Clone, Debug)]
pub enum UnlockOutcome {
    Granted(Box<Grant>),
    /// Held for an approver. The poll token goes only to the request that
    /// was held (a poll's "still pending" carries none).
    Pending {
        view: Box<PendingView>,
        poll_token: Option<PollToken>,
    },
}

/// Where a request came from, for the log and the approver.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext {
    pub source: Option<IpAddr>,
}

impl RequestContext {
    pub(crate) fn source_text(&self) -> String {
        self.source
            .map_or_else(|| "unknown".into(), |s| s.to_string())
    }
}

/// A host as an operator sees it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct HostView {
    #[serde(flatten)]
    pub record: HostRecord,
    #[serde(flatten)]
    pub boot: BootState,
}

/// A release's checks as read under its hold ([`Authority::hold_release`]):
/// the host's row and this process's `changes` lock stay held (shared)
/// until `held` commits and `changing` drops.
pub(crate) struct HeldRelease<'a, H> {
    pub entry: Arc<HostEntry>,
    /// The boot state pending here, else the one read under the hold.
    pub boot: BootState,
    pub nonce_fresh: bool,
    pub held: H,
    pub changing: tokio::sync::RwLockReadGuard<'a, ()>,
}

impl<H: Held> HeldRelease<'_, H> {
    /// Ends the hold without a release: the nonce stays spent (a request
    /// held for an approver, or denied, is not answered twice either).
    pub async fn commit(self) -> Result<(), StorageError> {
        self.held.commit().await
    }
}

/// What a running authority holds; its fields are reached only through
/// [`Authority`]'s accessors.
pub(crate) struct Inner<S: Storage, A: AuditStore, C: Clock> {
    storage: S,
    audit: AuditLog<A>,
    clock: C,
    options: AuthorityOptions,
    hosts: Hosts,
    policies: Policies,
    boots: Boots,
    /// One boot-state write at a time; the releases waiting for it are
    /// written together by the next (group commit).
    boot_writer: tokio::sync::Mutex<()>,
    /// Refusals anyone can cause (unknown host, bad signature, a replay of
    /// a captured request): budgeted apart from those of authenticated
    /// hosts, so a flood of the first cannot hide the second.
    refusals: RefusalBudget,
    refusals_authenticated: RefusalBudget,
    /// Woken when this process changes a held request, so its waiting
    /// polls look at once (those on other replicas look every 250 ms).
    held_changed: tokio::sync::Notify,
    metrics: Metrics,
    /// Held exclusively across snapshot → audit → storage → memory by
    /// every change to a host or a policy, so two changes never interleave
    /// (a rotate could otherwise write back a state a revoke had just
    /// replaced); held shared by a release from its state check to its
    /// answer, so no change lands between the two. It orders the changes
    /// and releases of this process only: on a shared database a release
    /// reads the host's state with its row held (see
    /// [`Authority::hold_release`]).
    changes: tokio::sync::RwLock<()>,
    /// The records key of scoped encryption, if configured.
    scoped: Option<crate::scoped::ScopedKeys>,
    /// The file streams each app has open.
    file_streams: Arc<crate::scoped::FileStreams>,
}

/// The key authority. Cheap to clone; a background task (flushing boot
/// states, expiring held requests) runs while any clone lives.
pub struct Authority<S: Storage, A: AuditStore, C: Clock> {
    inner: Arc<Inner<S, A, C>>,
}

impl<S: Storage, A: AuditStore, C: Clock> Clone for Authority<S, A, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) const ACTOR: &str = "keyd";

/// Reads of a host's row, by [`Authority::hold_same`], before giving up
/// on a row that changes at every read.
const HOLD_ATTEMPTS: usize = 4;

/// How often the background task runs.
const TICK: Duration = Duration::from_millis(250);

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// Loads hosts, policies and boot states from `storage`, recent nonces
    /// from the audit log, and starts the background task on the current
    /// tokio runtime.
    pub async fn open(
        storage: S,
        audit: AuditLog<A>,
        clock: C,
        options: AuthorityOptions,
    ) -> Result<Self, AuthorityError> {
        // The store checked its records keyring against the database's
        // records epoch when it opened.
        let scoped = options
            .scoped
            .then(|| crate::scoped::ScopedKeys::new(storage.records_keyring()));
        let inner = Inner {
            scoped,
            file_streams: Arc::default(),
            hosts: Hosts::default(),
            policies: Policies::default(),
            boots: Boots::default(),
            boot_writer: tokio::sync::Mutex::default(),
            refusals: RefusalBudget::new(options.refusal_entries_per_second),
            refusals_authenticated: RefusalBudget::new(options.refusal_entries_per_second),
            held_changed: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
            changes: tokio::sync::RwLock::new(()),
            storage,
            audit,
            clock,
            options,
        };
        for record in inner.storage.hosts().await? {
            let secrets = inner
                .storage
                .host_secrets(&record.id)
                .await?
                .iter()
                .map(|s| HostSecret::from_bytes(&s.secret))
                .collect::<Result<Vec<_>, _>>()?;
            inner.hosts.put(Arc::new(HostEntry { record, secrets }));
        }
        let version = inner.policies.version();
        inner
            .policies
            .replace(inner.storage.policies().await?, version);
        let authority = Self {
            inner: Arc::new(inner),
        };
        authority.reload_nonces().await?;
        let weak = Arc::downgrade(&authority.inner);
        tokio::spawn(background(weak));
        Ok(authority)
    }

    pub fn storage(&self) -> &S {
        &self.inner.storage
    }

    pub fn audit(&self) -> &AuditLog<A> {
        &self.inner.audit
    }

    pub(crate) fn scoped(&self) -> Option<&crate::scoped::ScopedKeys> {
        self.inner.scoped.as_ref()
    }

    pub(crate) fn file_streams(&self) -> &Arc<crate::scoped::FileStreams> {
        &self.inner.file_streams
    }

    /// Whether a refusal of an authenticated caller gets its own entry.
    pub(crate) fn admit_authenticated_refusal(&self, code: &'static str) -> bool {
        self.inner.refusals_authenticated.admit(code, self.now())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_ms() / 1000
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn options(&self) -> &AuthorityOptions {
        &self.inner.options
    }

    /// Hosts and their parsed secrets, as this process last read them.
    pub(crate) fn host_table(&self) -> &Hosts {
        &self.inner.hosts
    }

    pub(crate) fn policy_table(&self) -> &Policies {
        &self.inner.policies
    }

    pub(crate) fn held_changed(&self) -> &tokio::sync::Notify {
        &self.inner.held_changed
    }

    /// See `Inner::changes`: exclusive for a change to a host or a policy,
    /// shared by a release.
    pub(crate) fn changes(&self) -> &tokio::sync::RwLock<()> {
        &self.inner.changes
    }

    /// Nonces are in the audit entries of answered requests; after a
    /// restart those still inside the clock window are spent again, so a
    /// captured request cannot be replayed against a fresh process.
    async fn reload_nonces(&self) -> Result<(), AuthorityError> {
        let window = self.inner.options.max_skew.saturating_mul(2);
        let oldest_ms = self
            .inner
            .clock
            .now_ms()
            .saturating_sub(window.saturating_mul(1000));
        let store = self.inner.audit.store();
        let mut end = self.inner.audit.head().seq;
        let mut spent = Vec::new();
        const CHUNK: u64 = 1000;
        while end > 0 {
            let from = end.saturating_sub(CHUNK - 1).max(1);
            let entries = store
                .read_entries(from, u32::try_from(end - from + 1).unwrap_or(u32::MAX))
                .await
                .map_err(|e| {
                    AuthorityError::Audit(atrest_audit::AppendError::NotDurable(e.to_string()))
                })?;
            let mut older = false;
            for entry in &entries {
                if entry.timestamp_ms < oldest_ms {
                    older = true;
                    continue;
                }
                if let Some(nonce) = AuditEvent::parse(&entry.details).nonce() {
                    spent.push((nonce, entry.timestamp_ms / 1000 + window));
                }
            }
            if older {
                break;
            }
            end = from - 1;
        }
        self.inner.storage.remember_nonces(&spent).await?;
        Ok(())
    }

    /// A nonce must be remembered for as long as its timestamp passes; the
    /// store refuses it on every replica that shares it.
    pub(crate) async fn spend_nonce(
        &self,
        nonce: [u8; 16],
        timestamp: u64,
    ) -> Result<(), AuthorityError> {
        let keep_until = self.nonce_kept_until(timestamp);
        if self.inner.storage.spend_nonce(nonce, keep_until).await? {
            Ok(())
        } else {
            Err(AuthorityError::ReplayedNonce)
        }
    }

    /// Until when a nonce of a request made at `timestamp` is kept: as
    /// long as the request would pass the clock check.
    fn nonce_kept_until(&self, timestamp: u64) -> u64 {
        let skew = self.inner.options.max_skew;
        timestamp
            .saturating_add(skew)
            .max(self.now().saturating_add(skew))
    }

    /// Audits a refusal, within the refusal budget (a flood is summarized).
    /// If the entry cannot be written the refusal stands anyway.
    pub(crate) async fn refused(
        &self,
        kind: EntryKind,
        subject: &str,
        error: &AuthorityError,
        details: impl FnOnce() -> AuditEvent,
    ) {
        let code = error.code();
        self.inner.metrics.unlock(code);
        let anyone = matches!(
            error,
            AuthorityError::UnknownHost(_)
                | AuthorityError::Request(_)
                | AuthorityError::InvalidField(_)
                | AuthorityError::BadPublicKey(_)
                | AuthorityError::BadToken
                | AuthorityError::ReplayedNonce
        );
        let budget = if anyone {
            &self.inner.refusals
        } else {
            &self.inner.refusals_authenticated
        };
        if !budget.admit(code, self.now()) {
            return;
        }
        let mut entry = NewEntry::new(kind, ACTOR).details(details().details());
        if atrest_remote::HostId::new(subject).is_ok() {
            entry = entry.subject(subject);
        }
        if let Err(e) = self.inner.audit.append(entry).await {
            tracing::warn!(error = %e, code, "could not audit a refusal");
        }
    }

    /// A refusal found before any host is known (malformed or oversized
    /// body): audited within the same budget.
    pub async fn refused_input(&self, code: &'static str, context: RequestContext) {
        self.inner.metrics.unlock(code);
        if !self.inner.refusals.admit(code, self.now()) {
            return;
        }
        let entry = NewEntry::new(EntryKind::Request, ACTOR).details(
            AuditEvent::RequestRefused {
                outcome: code.into(),
                source: context.source_text(),
            }
            .details(),
        );
        if let Err(e) = self.inner.audit.append(entry).await {
            tracing::warn!(error = %e, code, "could not audit a refusal");
        }
    }

    /// The host as stored now, with its secrets parsed: what every change
    /// to a host checks (a release checks the record its hold read, see
    /// [`hold_release`](Self::hold_release)), so a revoke, shred or
    /// rotation made by another replica is honoured at once. The parsed secrets are kept
    /// while the stored record stays the same (on SQLite the record itself
    /// comes from memory: see [`crate::storage::Cached`]).
    pub(crate) async fn current_host(
        &self,
        host: &HostId,
    ) -> Result<Arc<HostEntry>, AuthorityError> {
        let record = self
            .inner
            .storage
            .host(host)
            .await?
            .ok_or_else(|| AuthorityError::UnknownHost(host.clone()))?;
        if let Some(entry) = self.inner.hosts.get(host)
            && entry.record == record
        {
            return Ok(entry);
        }
        let secrets = if record.state == HostState::Shredded {
            Vec::new()
        } else {
            self.inner
                .storage
                .host_secrets(host)
                .await?
                .iter()
                .map(|s| HostSecret::from_bytes(&s.secret))
                .collect::<Result<Vec<_>, _>>()?
        };
        let entry = Arc::new(HostEntry { record, secrets });
        self.inner.hosts.put(entry.clone());
        Ok(entry)
    }

    /// The host as stored now, its row held exclusively by the store until
    /// the hold is committed or dropped ([`Storage::hold_host`]): what a
    /// change of the host's state holds across its audit append, so that
    /// on a shared database a release on another replica (which holds the
    /// row shared, [`hold_release`](Self::hold_release)) is logged before
    /// the change commits, or sees it. The parsed secrets are
    /// [`current_host`](Self::current_host)'s for the same record.
    pub(crate) async fn held_host(
        &self,
        host: &HostId,
    ) -> Result<(Arc<HostEntry>, S::Held), AuthorityError> {
        let entry = self.known_host(host).await?;
        let storage = &self.inner.storage;
        self.hold_same(entry, move |_| async move {
            storage.hold_host(host, true).await
        })
        .await
    }

    /// What a release checks, read with the host's row held shared
    /// ([`Storage::hold_release`]) and this process's `changes` lock held
    /// shared, both until the release is logged: the host as stored now
    /// (with its secrets parsed: `known`'s, if the record is the same),
    /// its boot state, and `nonce` (with its request's timestamp) spent.
    /// On a shared database this is the release's one read before its
    /// audit entry: whatever another replica changed (a revoke, shred,
    /// rotation, the host's last boot, a nonce) is seen here.
    pub(crate) async fn hold_release(
        &self,
        known: Arc<HostEntry>,
        nonce: Option<([u8; 16], u64)>,
    ) -> Result<HeldRelease<'_, S::Held>, AuthorityError> {
        let changing = self.inner.changes.read().await;
        let nonce = nonce.map(|(nonce, timestamp)| (nonce, self.nonce_kept_until(timestamp)));
        let storage = &self.inner.storage;
        let (entry, (boot, nonce_fresh, held)) = self
            .hold_same(known, move |parsed| async move {
                let hold = storage.hold_release(&parsed.record, nonce).await?;
                Ok::<_, StorageError>(hold.map(|h| (h.record, (h.boot, h.nonce_fresh, h.held))))
            })
            .await?;
        Ok(HeldRelease {
            boot: self.inner.boots.pending(&entry.record.id).unwrap_or(boot),
            entry,
            nonce_fresh,
            held,
            changing,
        })
    }

    /// Holds `entry`'s row through `hold` until the record held is the one
    /// whose secrets `entry` parsed: a changed record is read again (with
    /// the row let go meanwhile: the read takes another connection), up to
    /// [`HOLD_ATTEMPTS`] times.
    async fn hold_same<T, F>(
        &self,
        mut entry: Arc<HostEntry>,
        hold: impl Fn(Arc<HostEntry>) -> F,
    ) -> Result<(Arc<HostEntry>, T), AuthorityError>
    where
        F: Future<Output = Result<Option<(HostRecord, T)>, StorageError>>,
    {
        let host = entry.record.id.clone();
        for _ in 0..HOLD_ATTEMPTS {
            let (record, held) = hold(entry.clone())
                .await?
                .ok_or_else(|| AuthorityError::UnknownHost(host.clone()))?;
            if record == entry.record {
                return Ok((entry, held));
            }
            drop(held);
            entry = self.current_host(&host).await?;
        }
        Err(StorageError::Contended(host).into())
    }

    /// The host as this process last read it, read now if it never did
    /// (enrolled through another replica): enough for the checks before a
    /// release (its public key never changes), which reads the host again
    /// under its hold.
    pub(crate) async fn known_host(&self, host: &HostId) -> Result<Arc<HostEntry>, AuthorityError> {
        match self.inner.hosts.get(host) {
            Some(entry) => Ok(entry),
            None => self.current_host(host).await,
        }
    }

    pub async fn host(&self, host: &HostId) -> Result<HostView, AuthorityError> {
        let record = self
            .inner
            .storage
            .host(host)
            .await?
            .ok_or_else(|| AuthorityError::UnknownHost(host.clone()))?;
        Ok(HostView {
            record,
            boot: self.boot_state(host).await?,
        })
    }

    /// Every enrolled host, as stored now.
    pub async fn hosts(&self) -> Result<Vec<HostView>, AuthorityError> {
        let records = self.inner.storage.hosts().await?;
        let mut boots: std::collections::HashMap<HostId, BootState> = self
            .inner
            .storage
            .boot_states()
            .await?
            .into_iter()
            .collect();
        Ok(records
            .into_iter()
            .map(|record| HostView {
                boot: self.inner.boots.pending(&record.id).unwrap_or_else(|| {
                    let stored = boots.remove(&record.id).unwrap_or_default();
                    self.inner.boots.with_unlock_time(&record.id, stored)
                }),
                record,
            })
            .collect())
    }

    /// Hosts this process has read (a metric; other replicas' new hosts
    /// count once they are used here).
    pub fn host_count(&self) -> usize {
        self.inner.hosts.len()
    }

    /// The host's boot state: one not yet written here, else the stored one
    /// (with its last release's time, if not yet written).
    pub(crate) async fn boot_state(&self, host: &HostId) -> Result<BootState, AuthorityError> {
        if let Some(pending) = self.inner.boots.pending(host) {
            return Ok(pending);
        }
        let stored = self
            .inner
            .storage
            .boot_state(host)
            .await?
            .unwrap_or_default();
        Ok(self.inner.boots.with_unlock_time(host, stored))
    }

    /// Changes the host's boot state, `read` (by
    /// [`boot_state`](Self::boot_state), or under a release's hold) unless
    /// one is pending here, and returns once what the host's next request
    /// is judged by is durable: a release answers only after the state it
    /// depends on (the new boot's ticket) would survive a crash. A change
    /// of `last_unlock_at` alone (a release of the boot already known) is
    /// written by the next tick instead, with every other host's: a crash
    /// loses at most that time.
    pub(crate) async fn record_boot(
        &self,
        host: &HostId,
        read: BootState,
        change: impl FnOnce(&mut BootState),
    ) -> Result<(), AuthorityError> {
        if self.inner.boots.update(host, read, change) {
            self.write_boots(Some(host)).await?;
        }
        Ok(())
    }

    /// Whether this authority can release now: its database answers and
    /// takes writes (`/healthz`).
    pub async fn health(&self) -> Result<(), AuthorityError> {
        self.inner
            .storage
            .check_writable()
            .await
            .map_err(AuthorityError::from)
    }

    /// Writes the boot states a failed write left and the release times
    /// not yet written (done every tick and when `serve` stops).
    pub async fn flush_boots(&self) -> Result<(), AuthorityError> {
        self.write_boots(None).await?;
        let times = self.inner.boots.unlock_times();
        if times.is_empty() {
            return Ok(());
        }
        let passed = self.inner.storage.save_unlock_times(&times).await?;
        let written: Vec<_> = times
            .into_iter()
            .filter(|(id, _)| !passed.contains(id))
            .collect();
        self.inner.boots.unlock_times_written(&written);
        Ok(())
    }

    /// One writer at a time writes every pending state in one transaction;
    /// a release whose state a previous writer's batch already took
    /// returns as soon as it may.
    async fn write_boots(&self, host: Option<&HostId>) -> Result<(), AuthorityError> {
        let _writer = self.inner.boot_writer.lock().await;
        if let Some(host) = host
            && self.inner.boots.pending(host).is_none()
        {
            return Ok(());
        }
        let batch = self.inner.boots.all_pending();
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.storage.save_boot_states(&batch).await?;
        self.inner.boots.written(&batch);
        Ok(())
    }

    /// The periodic work: write boot states a failed write left and the
    /// release times not yet written, re-read the policies (another replica
    /// may have changed them), expire held requests, forget old nonces,
    /// ended web sessions and login counts whose windows are over,
    /// summarize suppressed refusals.
    pub async fn maintain(&self) {
        if let Err(e) = self.flush_boots().await {
            tracing::warn!(error = %e, "could not save boot states; will retry");
        }
        let version = self.inner.policies.version();
        match self.inner.storage.policies().await {
            Ok(all) => self.inner.policies.replace(all, version),
            Err(e) => tracing::warn!(error = %e, "could not re-read the policies; will retry"),
        }
        self.expire_pending().await;
        if let Err(e) = self.inner.storage.prune_nonces(self.now()).await {
            tracing::warn!(error = %e, "could not forget old nonces; will retry");
        }
        if let Err(e) = self.inner.storage.prune_sessions(self.now()).await {
            tracing::warn!(error = %e, "could not forget ended web sessions; will retry");
        }
        if let Err(e) = self.inner.storage.prune_logins(self.now()).await {
            tracing::warn!(error = %e, "could not forget old login counts; will retry");
        }
        let mut suppressed = self.inner.refusals.take_suppressed();
        for (code, n) in self.inner.refusals_authenticated.take_suppressed() {
            *suppressed.entry(code).or_default() += n;
        }
        if !suppressed.is_empty() {
            let entry = NewEntry::new(EntryKind::Request, ACTOR)
                .details(AuditEvent::refusals_summarized(suppressed).details());
            if let Err(e) = self.inner.audit.append(entry).await {
                tracing::warn!(error = %e, "could not audit the refusal summary");
            }
        }
    }
}

/// Revoked and shredded hosts are refused.
pub(crate) fn check_state(record: &HostRecord) -> Result<(), AuthorityError> {
    match record.state {
        HostState::Active => Ok(()),
        HostState::Revoked => Err(AuthorityError::Revoked(record.id.clone())),
        HostState::Shredded => Err(AuthorityError::Shredded(record.id.clone())),
    }
}

async fn background<S: Storage, A: AuditStore, C: Clock>(weak: Weak<Inner<S, A, C>>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        Authority { inner }.maintain().await;
    }
}

#[cfg(test)]
mod tests;
