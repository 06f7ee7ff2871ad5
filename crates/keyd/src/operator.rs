//! What operators do to hosts and policies: revoke, reinstate, shred,
//! rotate a host's exchange secret (and retire the previous one once the
//! host re-bound), set and read policies.

use std::sync::Arc;

use atrest_audit::{AuditStore, Clock, EntryKind, NewEntry};
use atrest_remote::{HostId, HostSecret, KeyId};

use crate::authority::{ACTOR, Authority, HostView, check_state};
use crate::enroll::check_group;
use crate::error::AuthorityError;
use crate::events::AuditEvent;
use crate::state::HostEntry;
use crate::storage::{Held, HostRecord, HostState, PolicyRule, PolicyScope, Storage};

impl<S: Storage, A: AuditStore, C: Clock> Authority<S, A, C> {
    /// A new exchange secret for `host`. Its keyslots keep opening with the
    /// previous one, and re-bind to the new one on their next unlock.
    pub async fn rotate(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        let _changing = self.changes().write().await;
        let entry = self.current_host(host).await?;
        check_state(&entry.record)?;
        if let Some(previous) = entry.record.previous_key_id {
            // A second rotation would delete the key the host's keyslots
            // are still bound to.
            return Err(AuthorityError::RebindPending {
                host: host.clone(),
                previous,
            });
        }
        let secret = HostSecret::generate();
        self.audit()
            .append(
                NewEntry::new(EntryKind::Rotation, actor)
                    .subject(host.as_str())
                    .details(
                        AuditEvent::Rotated {
                            new_key_id: secret.key_id().to_string(),
                            previous_key_id: entry.record.key_id.to_string(),
                        }
                        .details(),
                    ),
            )
            .await?;
        if !self
            .storage()
            .rotate_secret(host, secret.key_id(), &secret.expose_bytes())
            .await?
        {
            return Err(AuthorityError::Shredded(host.clone()));
        }
        let mut secrets = vec![secret.clone()];
        secrets.extend(entry.secrets.first().cloned());
        self.host_table().put(Arc::new(HostEntry {
            record: HostRecord {
                key_id: secret.key_id(),
                previous_key_id: Some(entry.record.key_id),
                ..entry.record.clone()
            },
            secrets,
        }));
        self.host(host).await
    }

    /// The second half of a rotation: once the host proved it re-bound
    /// (an unlock with the new key), the secrets that were previous then
    /// are deleted.
    pub(crate) async fn retire_previous(&self, entry: &HostEntry) -> Result<(), AuthorityError> {
        let _changing = self.changes().write().await;
        let host = &entry.record.id;
        // Exactly the secrets that were previous when the host proved it
        // re-bound; a rotation since then made others previous.
        let retired: Vec<KeyId> = entry.secrets[1..].iter().map(HostSecret::key_id).collect();
        let previous: Vec<String> = retired.iter().map(ToString::to_string).collect();
        self.audit()
            .append(
                NewEntry::new(EntryKind::Rotation, ACTOR)
                    .subject(host.as_str())
                    .details(
                        AuditEvent::Retired {
                            retired: previous,
                            reason: "host re-bound".into(),
                        }
                        .details(),
                    ),
            )
            .await?;
        self.storage().retire_secrets(host, &retired).await?;
        // Read again on next use.
        self.host_table().remove(host);
        Ok(())
    }

    /// Refuses `host` from now on (its secret is kept; see
    /// [`reinstate`](Self::reinstate)).
    pub async fn revoke(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        self.change_state(host, HostState::Revoked, EntryKind::Revoke, actor)
            .await
    }

    /// Undoes a revoke.
    pub async fn reinstate(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        self.change_state(host, HostState::Active, EntryKind::Revoke, actor)
            .await
    }

    /// Destroys every exchange secret of `host`: the vault keys its
    /// keyslots wrap can never be recovered through this authority.
    pub async fn shred(&self, host: &HostId, actor: &str) -> Result<HostView, AuthorityError> {
        self.change_state(host, HostState::Shredded, EntryKind::Shred, actor)
            .await
    }

    async fn change_state(
        &self,
        host: &HostId,
        state: HostState,
        kind: EntryKind,
        actor: &str,
    ) -> Result<HostView, AuthorityError> {
        let _changing = self.changes().write().await;
        // Held from the check to the commit: a release on another replica
        // is logged before this change, or sees it (see `release`).
        let (entry, mut held) = self.held_host(host).await?;
        if entry.record.state == HostState::Shredded {
            return Err(AuthorityError::Shredded(host.clone()));
        }
        self.audit()
            .append(
                NewEntry::new(kind, actor).subject(host.as_str()).details(
                    AuditEvent::StateChanged {
                        state: state.as_str().into(),
                        was: entry.record.state.as_str().into(),
                    }
                    .details(),
                ),
            )
            .await?;
        if !self
            .storage()
            .set_host_state(&mut held, host, state)
            .await?
        {
            return Err(AuthorityError::Shredded(host.clone()));
        }
        held.commit().await?;
        // Read again on next use (a shredded host's secrets go now).
        self.host_table().remove(host);
        // Held requests of a host refused from now on are refused too.
        if state != HostState::Active {
            self.deny_pending_of(host, actor).await;
        }
        self.host(host).await
    }

    pub async fn set_policy(
        &self,
        scope: &PolicyScope,
        rule: PolicyRule,
        actor: &str,
    ) -> Result<(), AuthorityError> {
        if let PolicyScope::Group(g) = scope {
            check_group(g)?;
        }
        let _changing = self.changes().write().await;
        self.audit()
            .append(
                NewEntry::new(EntryKind::PolicyChange, actor)
                    .subject(scope.to_string())
                    .details(
                        AuditEvent::PolicyChanged {
                            policy: rule.policy.as_str().into(),
                            unannounced_reboot: rule.unannounced_reboot.as_str().into(),
                            rollback: Some(rule.rollback.as_str().into()),
                        }
                        .details(),
                    ),
            )
            .await?;
        self.storage().set_policy(scope, rule).await?;
        self.policy_table().set(scope.clone(), rule);
        Ok(())
    }

    pub fn policies(&self) -> Vec<(PolicyScope, PolicyRule)> {
        self.policy_table().all()
    }

    /// The rule for a host: its own, its group's, the stored default, the
    /// configured default.
    pub fn rule_for(&self, record: &HostRecord) -> PolicyRule {
        let policies = &self.policy_table();
        policies
            .get(&PolicyScope::Host(record.id.clone()))
            .or_else(|| policies.get(&PolicyScope::Group(record.group.clone())))
            .or_else(|| policies.get(&PolicyScope::Default))
            .unwrap_or(self.options().default_rule)
    }
}
