//! [`Cached`]: a store's host records and boot states, and the scoped
//! API's apps and scopes, answered from memory, for a store that only this
//! process writes (SQLite, one keyd per data directory). The authority
//! reads a host and its boot state on every release, and an app and its
//! scope on every scoped request, so that, on a shared store, another
//! replica's revoke, removal or shred is honoured at once; on a store of
//! its own those reads need not reach the disk. A shared store
//! (PostgreSQL) is used bare.
//!
//! Only rows are kept: an app's token hash and policy, a scope's wrapped
//! keys and its bucket's wrapped key (as the database holds them). No
//! unwrapped key is cached here (the scoped API keeps the bucket keys it
//! opened, `crate::scoped`). A scope's shred changes every bucket's
//! wrapped key (a new epoch): every scope is forgotten then.
//!
//! Every write goes to the store first; the entries it touched are then
//! forgotten (or, for boot states, replaced by what was written), so the
//! next read fetches them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use atrest_remote::{HostId, KeyId};

use super::{
    BootState, Held, HeldState, HoldOutcome, HostRecord, HostState, LoginAttempt, LoginCounts,
    PolicyRule, PolicyScope, Storage, StorageError, StoredApp, StoredApprover, StoredBucket,
    StoredGeneration, StoredHeld, StoredScope, StoredSecret, StoredSession, StoredWindow,
};
use crate::secrets_key::SecretsKeyring;

/// Most scopes kept in memory (one per user is common): past it, one is
/// dropped for each read in.
const MAX_SCOPES: usize = 16 * 1024;

/// Most apps kept in memory.
const MAX_APPS: usize = 1024;

#[derive(Default)]
struct Memory {
    hosts: HashMap<HostId, HostRecord>,
    boots: HashMap<HostId, BootState>,
    /// By token hash.
    apps: HashMap<[u8; 32], StoredApp>,
    scopes: HashMap<String, StoredScope>,
    /// Moves on every write: a read that started before a write must not
    /// put what it read (possibly from before the write) in memory after
    /// the write forgot it.
    epoch: u64,
}

/// A [`Storage`] whose host and boot-state reads are served from memory.
/// Correct only while no other process writes the same store.
pub struct Cached<S> {
    inner: S,
    memory: Arc<Mutex<Memory>>,
}

/// A hold of the store under a [`Cached`]: the hosts written through it
/// are forgotten again once it commits (a read between the write and the
/// commit may have cached the row from before).
#[derive(Default)]
pub struct CachedHeld<H> {
    inner: H,
    written: Option<(Arc<Mutex<Memory>>, HostId)>,
}

impl<H: Held> Held for CachedHeld<H> {
    async fn commit(self) -> Result<(), StorageError> {
        let committed = self.inner.commit().await;
        if let Some((memory, id)) = &self.written {
            forget(memory, id);
        }
        committed
    }
}

fn lock(memory: &Mutex<Memory>) -> MutexGuard<'_, Memory> {
    // Plain maps: a panic elsewhere leaves nothing half-done here.
    memory
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget(memory: &Mutex<Memory>, id: &HostId) {
    let mut memory = lock(memory);
    memory.hosts.remove(id);
    memory.boots.remove(id);
    memory.epoch += 1;
}

impl<S: Storage> Cached<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            memory: Arc::default(),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        lock(&self.memory)
    }

    fn epoch(&self) -> u64 {
        self.memory().epoch
    }

    fn forget(&self, id: &HostId) {
        forget(&self.memory, id);
    }

    /// Forgets every app: a write names an app by its name, the memory
    /// keys them by token hash, and apps change seldom.
    fn forget_apps(&self) {
        let mut memory = self.memory();
        memory.apps.clear();
        memory.epoch += 1;
    }

    fn forget_scopes(&self) {
        let mut memory = self.memory();
        memory.scopes.clear();
        memory.epoch += 1;
    }

    fn forget_scope(&self, id: &str) {
        let mut memory = self.memory();
        memory.scopes.remove(id);
        memory.epoch += 1;
    }

    /// `held` around a hold of the inner store that wrote host `id`.
    fn written(&self, inner: S::Held, id: &HostId) -> CachedHeld<S::Held> {
        CachedHeld {
            inner,
            written: Some((self.memory.clone(), id.clone())),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cached<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: Storage> Storage for Cached<S> {
    type Held = CachedHeld<S::Held>;

    async fn insert_token(
        &self,
        token_hash: [u8; 32],
        group: &str,
        expires_at: u64,
    ) -> Result<(), StorageError> {
        self.inner.insert_token(token_hash, group, expires_at).await
    }

    async fn enroll(
        &self,
        token_hash: [u8; 32],
        now: u64,
        host: &HostRecord,
        secret: &[u8; 32],
    ) -> Result<Option<(String, CachedHeld<S::Held>)>, StorageError> {
        let enrolled = self.inner.enroll(token_hash, now, host, secret).await;
        self.forget(&host.id);
        Ok(enrolled?.map(|(group, held)| (group, self.written(held, &host.id))))
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StorageError> {
        self.inner.hosts().await
    }

    async fn host(&self, id: &HostId) -> Result<Option<HostRecord>, StorageError> {
        if let Some(record) = self.memory().hosts.get(id) {
            return Ok(Some(record.clone()));
        }
        let epoch = self.epoch();
        let record = self.inner.host(id).await?;
        let mut memory = self.memory();
        if let Some(record) = &record
            && memory.epoch == epoch
        {
            memory.hosts.insert(id.clone(), record.clone());
        }
        Ok(record)
    }

    async fn host_secrets(&self, id: &HostId) -> Result<Vec<StoredSecret>, StorageError> {
        self.inner.host_secrets(id).await
    }

    /// A release's (shared) hold reads the host from memory and holds
    /// nothing: only this process writes the store.
    async fn hold_host(
        &self,
        id: &HostId,
        exclusive: bool,
    ) -> Result<Option<(HostRecord, CachedHeld<S::Held>)>, StorageError> {
        if !exclusive {
            return Ok(self.host(id).await?.map(|r| (r, CachedHeld::default())));
        }
        let held = self.inner.hold_host(id, exclusive).await?;
        Ok(held.map(|(record, held)| (record, self.written(held, id))))
    }

    async fn set_host_state(
        &self,
        held: &mut CachedHeld<S::Held>,
        id: &HostId,
        state: HostState,
    ) -> Result<bool, StorageError> {
        let changed = self.inner.set_host_state(&mut held.inner, id, state).await;
        self.forget(id);
        if held.written.is_none() {
            held.written = Some((self.memory.clone(), id.clone()));
        }
        changed
    }

    async fn rotate_secret(
        &self,
        id: &HostId,
        key_id: KeyId,
        secret: &[u8; 32],
    ) -> Result<bool, StorageError> {
        let rotated = self.inner.rotate_secret(id, key_id, secret).await;
        self.forget(id);
        rotated
    }

    async fn retire_secrets(&self, id: &HostId, key_ids: &[KeyId]) -> Result<(), StorageError> {
        let retired = self.inner.retire_secrets(id, key_ids).await;
        self.forget(id);
        retired
    }

    async fn set_policy(&self, scope: &PolicyScope, rule: PolicyRule) -> Result<(), StorageError> {
        self.inner.set_policy(scope, rule).await
    }

    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicyRule)>, StorageError> {
        self.inner.policies().await
    }

    async fn boot_states(&self) -> Result<Vec<(HostId, BootState)>, StorageError> {
        self.inner.boot_states().await
    }

    async fn boot_state(&self, id: &HostId) -> Result<Option<BootState>, StorageError> {
        if let Some(state) = self.memory().boots.get(id) {
            return Ok(Some(state.clone()));
        }
        let epoch = self.epoch();
        let state = self.inner.boot_state(id).await?;
        let mut memory = self.memory();
        if let Some(state) = &state
            && memory.epoch == epoch
        {
            memory.boots.insert(id.clone(), state.clone());
        }
        Ok(state)
    }

    async fn save_boot_states(&self, states: &[(HostId, BootState)]) -> Result<(), StorageError> {
        let saved = self.inner.save_boot_states(states).await;
        let mut memory = self.memory();
        memory.epoch += 1;
        for (id, state) in states {
            if saved.is_ok() {
                memory.boots.insert(id.clone(), state.clone());
            } else {
                memory.boots.remove(id);
            }
        }
        saved
    }

    async fn save_unlock_times(
        &self,
        times: &[(HostId, u64)],
    ) -> Result<Vec<HostId>, StorageError> {
        let saved = self.inner.save_unlock_times(times).await;
        let mut memory = self.memory();
        memory.epoch += 1;
        for (id, at) in times {
            match &saved {
                Ok(passed) if !passed.contains(id) => {
                    if let Some(state) = memory.boots.get_mut(id) {
                        state.last_unlock_at = state.last_unlock_at.max(Some(*at));
                    }
                }
                _ => {
                    memory.boots.remove(id);
                }
            }
        }
        saved
    }

    async fn vault_generation(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<Option<StoredGeneration>, StorageError> {
        self.inner.vault_generation(host, vault_id).await
    }

    async fn save_vault_generation(
        &self,
        generation: &StoredGeneration,
    ) -> Result<bool, StorageError> {
        self.inner.save_vault_generation(generation).await
    }

    async fn approve_rollback(
        &self,
        host: &HostId,
        vault_id: [u8; 16],
    ) -> Result<bool, StorageError> {
        self.inner.approve_rollback(host, vault_id).await
    }

    async fn put_approver(
        &self,
        name: &str,
        totp_secret: &[u8],
        now: u64,
    ) -> Result<(), StorageError> {
        self.inner.put_approver(name, totp_secret, now).await
    }

    async fn approver(&self, name: &str) -> Result<Option<StoredApprover>, StorageError> {
        self.inner.approver(name).await
    }

    async fn use_approver_step(&self, name: &str, step: u64) -> Result<bool, StorageError> {
        self.inner.use_approver_step(name, step).await
    }

    async fn spend_nonce(&self, nonce: [u8; 16], keep_until: u64) -> Result<bool, StorageError> {
        self.inner.spend_nonce(nonce, keep_until).await
    }

    async fn remember_nonces(&self, nonces: &[([u8; 16], u64)]) -> Result<(), StorageError> {
        self.inner.remember_nonces(nonces).await
    }

    async fn prune_nonces(&self, now: u64) -> Result<(), StorageError> {
        self.inner.prune_nonces(now).await
    }

    async fn insert_held(&self, held: &StoredHeld, now: u64) -> Result<HoldOutcome, StorageError> {
        self.inner.insert_held(held, now).await
    }

    async fn held(&self, id: &str) -> Result<Option<StoredHeld>, StorageError> {
        self.inner.held(id).await
    }

    async fn waiting_held(&self, now: u64) -> Result<Vec<StoredHeld>, StorageError> {
        self.inner.waiting_held(now).await
    }

    async fn expired_held_ids(&self, now: u64) -> Result<Vec<String>, StorageError> {
        self.inner.expired_held_ids(now).await
    }

    async fn move_held(
        &self,
        id: &str,
        from: HeldState,
        to: HeldState,
        by: Option<&str>,
        expired: Option<(u64, bool)>,
    ) -> Result<bool, StorageError> {
        self.inner.move_held(id, from, to, by, expired).await
    }

    async fn store_held_grant(&self, id: &str, sealed_grant: &[u8]) -> Result<(), StorageError> {
        self.inner.store_held_grant(id, sealed_grant).await
    }

    async fn delete_pending_held(&self, id: &str) -> Result<(), StorageError> {
        self.inner.delete_pending_held(id).await
    }

    async fn prune_held(&self, before: u64) -> Result<(), StorageError> {
        self.inner.prune_held(before).await
    }

    fn records_keyring(&self) -> Arc<SecretsKeyring> {
        self.inner.records_keyring()
    }

    async fn scope_bucket(&self, number: u8) -> Result<StoredBucket, StorageError> {
        self.inner.scope_bucket(number).await
    }

    async fn insert_app(&self, app: &StoredApp) -> Result<bool, StorageError> {
        let inserted = self.inner.insert_app(app).await;
        self.forget_apps();
        inserted
    }

    async fn app_by_token(&self, token_hash: [u8; 32]) -> Result<Option<StoredApp>, StorageError> {
        if let Some(app) = self.memory().apps.get(&token_hash) {
            return Ok(Some(app.clone()));
        }
        // An unknown token is not remembered: anyone can send one.
        let epoch = self.epoch();
        let app = self.inner.app_by_token(token_hash).await?;
        let mut memory = self.memory();
        if let Some(app) = &app
            && memory.epoch == epoch
        {
            if memory.apps.len() >= MAX_APPS {
                memory.apps.clear();
            }
            memory.apps.insert(token_hash, app.clone());
        }
        Ok(app)
    }

    async fn apps(&self) -> Result<Vec<StoredApp>, StorageError> {
        self.inner.apps().await
    }

    async fn delete_app(&self, name: &str) -> Result<bool, StorageError> {
        let deleted = self.inner.delete_app(name).await;
        self.forget_apps();
        deleted
    }

    async fn insert_scope(&self, scope: &StoredScope) -> Result<bool, StorageError> {
        let inserted = self.inner.insert_scope(scope).await;
        self.forget_scope(&scope.id);
        inserted
    }

    async fn scope(&self, id: &str) -> Result<Option<StoredScope>, StorageError> {
        if let Some(scope) = self.memory().scopes.get(id) {
            return Ok(Some(scope.clone()));
        }
        let epoch = self.epoch();
        let scope = self.inner.scope(id).await?;
        let mut memory = self.memory();
        if let Some(scope) = &scope
            && memory.epoch == epoch
        {
            if memory.scopes.len() >= MAX_SCOPES
                && let Some(old) = memory.scopes.keys().next().cloned()
            {
                memory.scopes.remove(&old);
            }
            memory.scopes.insert(id.to_owned(), scope.clone());
        }
        Ok(scope)
    }

    async fn scopes(&self) -> Result<Vec<StoredScope>, StorageError> {
        self.inner.scopes().await
    }

    async fn add_scope_key(
        &self,
        id: &str,
        version: u32,
        wrapped: &[u8],
        bucket: &StoredBucket,
    ) -> Result<bool, StorageError> {
        let written = self.inner.add_scope_key(id, version, wrapped, bucket).await;
        self.forget_scope(id);
        written
    }

    async fn set_scope_minimum(&self, id: &str, minimum: u32) -> Result<bool, StorageError> {
        let written = self.inner.set_scope_minimum(id, minimum).await;
        self.forget_scope(id);
        written
    }

    async fn shred_scope(&self, id: &str) -> Result<bool, StorageError> {
        let written = self.inner.shred_scope(id).await;
        // Every bucket's key is wrapped anew (the epoch moved on), and the
        // shredded scope's bucket has a new key.
        self.forget_scopes();
        written
    }

    async fn set_scope_window(
        &self,
        id: &str,
        window: Option<&StoredWindow>,
    ) -> Result<bool, StorageError> {
        let written = self.inner.set_scope_window(id, window).await;
        self.forget_scope(id);
        written
    }

    async fn insert_session(&self, session: &StoredSession) -> Result<(), StorageError> {
        self.inner.insert_session(session).await
    }

    async fn session(
        &self,
        id_hash: [u8; 32],
        now: u64,
    ) -> Result<Option<StoredSession>, StorageError> {
        self.inner.session(id_hash, now).await
    }

    async fn set_session_flash(
        &self,
        id_hash: [u8; 32],
        flash: Option<&str>,
    ) -> Result<(), StorageError> {
        self.inner.set_session_flash(id_hash, flash).await
    }

    async fn delete_session(&self, id_hash: [u8; 32]) -> Result<(), StorageError> {
        self.inner.delete_session(id_hash).await
    }

    async fn prune_sessions(&self, now: u64) -> Result<(), StorageError> {
        self.inner.prune_sessions(now).await
    }

    async fn take_login(
        &self,
        attempt: &LoginAttempt<'_>,
        allow: fn(&LoginCounts) -> bool,
    ) -> Result<LoginCounts, StorageError> {
        self.inner.take_login(attempt, allow).await
    }

    async fn login_succeeded(
        &self,
        name: &str,
        client: &str,
        untrusted: bool,
        trusted_until: u64,
    ) -> Result<(), StorageError> {
        self.inner
            .login_succeeded(name, client, untrusted, trusted_until)
            .await
    }

    async fn prune_logins(&self, now: u64) -> Result<(), StorageError> {
        self.inner.prune_logins(now).await
    }

    async fn check_writable(&self) -> Result<(), StorageError> {
        self.inner.check_writable().await
    }
}
