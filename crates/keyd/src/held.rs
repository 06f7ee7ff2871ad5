//! The table of requests held for a person, in memory: each request's
//! view, its verified request, the poll token's hash, the grant made once
//! it is approved, and a channel that wakes its polls. Claiming a decision,
//! settling it, expiry and the per-host limit are methods here; writing the
//! audit entries around them is [`crate::approval`]'s job.
//!
//! Held requests live in memory: after a restart a waiting host simply
//! asks again (its poll gets `unknown_request`) and a new request is held.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use atrest_remote::{HostId, VerifiedRequest, to_base64url};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::AuthorityError;
use crate::policy::BootStatus;
use crate::unlock::Grant;

/// Where a held request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl PendingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }
}

/// A held request as approvers, operators and the host see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingView {
    pub id: String,
    pub host_id: HostId,
    pub group: String,
    pub boot_id: String,
    /// `first`, `same`, `planned` or `unannounced`.
    pub boot: String,
    pub source: String,
    pub reason: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub state: PendingState,
    pub decided_by: Option<String>,
    /// The vault (base64url of its id), keyslot and host key id the request
    /// is for, so an approver sees what would open.
    #[serde(default)]
    pub vault_id: String,
    #[serde(default)]
    pub keyslot: u8,
    #[serde(default)]
    pub key_id: String,
    /// The boot the authority last released to, and when, as the request
    /// was held: what this boot claims to follow.
    #[serde(default)]
    pub last_boot_id: Option<String>,
    #[serde(default)]
    pub last_unlock_at: Option<u64>,
}

struct PendingEntry {
    view: PendingView,
    verified: VerifiedRequest,
    /// How the request's boot was judged when it was held.
    boot: BootStatus,
    /// SHA-256 of the poll token only the requester was given.
    poll_token_hash: [u8; 32],
    /// The grant, made once: concurrent polls wait for the one that makes
    /// it, then all get that answer; the log gets one release and the boot
    /// one ticket.
    grant: Arc<tokio::sync::Mutex<Option<Grant>>>,
    /// A decision is being written to the log: a second decider is told
    /// it was already decided, and the host still sees "pending".
    deciding: bool,
    changed: watch::Sender<PendingState>,
}

/// The held requests, by request id.
#[derive(Default)]
pub(crate) struct HeldRequests(Mutex<HashMap<String, PendingEntry>>);

/// Held requests one host may have waiting at once.
pub const MAX_PENDING_PER_HOST: usize = 8;

/// How long decided requests stay answerable to the host's poll.
const KEEP_DECIDED: u64 = 600;

/// What a poll of an approved request needs to release it.
pub(crate) struct Approved {
    pub view: PendingView,
    pub verified: VerifiedRequest,
    pub boot: BootStatus,
    /// The one grant of this request, made by the first poll that gets it.
    pub grant: Arc<tokio::sync::Mutex<Option<Grant>>>,
}

impl HeldRequests {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, PendingEntry>) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// How many of `host`'s requests are waiting.
    pub fn waiting_for(&self, host: &HostId) -> usize {
        self.with(|map| {
            map.values()
                .filter(|e| &e.view.host_id == host && e.view.state == PendingState::Pending)
                .count()
        })
    }

    /// Holds a request (its view's state is `pending`); returns the poll
    /// token only its requester gets.
    pub fn insert(
        &self,
        view: PendingView,
        verified: VerifiedRequest,
        boot: BootStatus,
    ) -> PollToken {
        let (changed, _) = watch::channel(PendingState::Pending);
        let poll_token = PollToken::random();
        self.with(|map| {
            map.insert(
                view.id.clone(),
                PendingEntry {
                    view,
                    verified,
                    boot,
                    poll_token_hash: poll_token.hash(),
                    grant: Arc::default(),
                    deciding: false,
                    changed,
                },
            )
        });
        poll_token
    }

    /// Requests still waiting at `now`, oldest first.
    pub fn waiting(&self, now: u64) -> Vec<PendingView> {
        let mut all: Vec<_> = self.with(|map| {
            map.values()
                .filter(|e| e.view.state == PendingState::Pending && e.view.expires_at > now)
                .map(|e| e.view.clone())
                .collect()
        });
        all.sort_by_key(|v| v.created_at);
        all
    }

    pub fn view(&self, id: &str) -> Result<PendingView, AuthorityError> {
        self.with(|map| map.get(id).map(|e| e.view.clone()))
            .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))
    }

    /// Claims the decision of a waiting request, so two deciders cannot
    /// both be logged; [`settle`](Self::settle) or
    /// [`unclaim`](Self::unclaim) ends the claim.
    pub fn claim(&self, id: &str) -> Result<PendingView, AuthorityError> {
        self.with(|map| {
            let entry = map
                .get_mut(id)
                .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))?;
            if entry.view.state != PendingState::Pending || entry.deciding {
                let state = if entry.deciding {
                    "being decided"
                } else {
                    entry.view.state.as_str()
                };
                return Err(AuthorityError::AlreadyDecided {
                    id: id.to_owned(),
                    state,
                });
            }
            entry.deciding = true;
            Ok(entry.view.clone())
        })
    }

    /// Gives a claimed decision up (its entry could not be written).
    pub fn unclaim(&self, id: &str) {
        self.with(|map| {
            if let Some(entry) = map.get_mut(id) {
                entry.deciding = false;
            }
        });
    }

    /// Moves a waiting request to `state` and wakes its polls; a request
    /// already decided keeps its state.
    pub fn settle(&self, id: &str, state: PendingState, by: Option<&str>) -> Option<PendingView> {
        self.with(|map| {
            let entry = map.get_mut(id)?;
            if entry.view.state == PendingState::Pending {
                entry.deciding = false;
                entry.view.state = state;
                entry.view.decided_by = by.map(str::to_owned);
                entry.changed.send_replace(state);
            }
            Some(entry.view.clone())
        })
    }

    /// A channel of the request's state changes, for a poll that carries
    /// the request's poll token (base64url).
    pub fn subscribe(
        &self,
        id: &str,
        poll_token: &str,
    ) -> Result<watch::Receiver<PendingState>, AuthorityError> {
        let presented = atrest_remote::from_base64url::<32>(poll_token)
            .map(|t| atrest_core::sha256(&t))
            .unwrap_or_default();
        self.with(|map| {
            map.get(id).map(|e| {
                atrest_core::constant_time_eq(&presented, &e.poll_token_hash)
                    .then(|| e.changed.subscribe())
            })
        })
        .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))?
        .ok_or(AuthorityError::BadPollToken)
    }

    /// What releasing request `id` needs.
    pub fn approved(&self, id: &str) -> Result<Approved, AuthorityError> {
        self.with(|map| {
            map.get(id).map(|e| Approved {
                view: e.view.clone(),
                verified: e.verified.clone(),
                boot: e.boot.clone(),
                grant: e.grant.clone(),
            })
        })
        .ok_or_else(|| AuthorityError::UnknownRequest(id.to_owned()))
    }

    /// Forgets requests decided long enough ago, and returns the waiting
    /// ones whose time is up at `now` (still waiting until settled).
    pub fn sweep(&self, now: u64) -> Vec<PendingView> {
        self.with(|map| {
            map.retain(|_, e| {
                e.view.state == PendingState::Pending
                    || e.view.expires_at.saturating_add(KEEP_DECIDED) > now
            });
            map.values()
                .filter(|e| e.view.state == PendingState::Pending && e.view.expires_at <= now)
                .map(|e| e.view.clone())
                .collect()
        })
    }

    /// The ids of `host`'s waiting requests.
    pub fn waiting_ids_of(&self, host: &HostId) -> Vec<String> {
        self.with(|map| {
            map.values()
                .filter(|e| &e.view.host_id == host && e.view.state == PendingState::Pending)
                .map(|e| e.view.id.clone())
                .collect()
        })
    }
}

/// The secret a held request's answer gives its requester, which its polls
/// must carry. Request ids are shown to approvers, operators and webhooks;
/// this is not, so nobody else can collect the grant (and its boot ticket).
#[derive(Clone)]
pub struct PollToken([u8; 32]);

impl PollToken {
    fn random() -> Self {
        Self(atrest_core::random_array())
    }

    fn hash(&self) -> [u8; 32] {
        atrest_core::sha256(&self.0)
    }
}

impl fmt::Display for PollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(&self.0))
    }
}

impl fmt::Debug for PollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PollToken([redacted])")
    }
}

impl Drop for PollToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}
