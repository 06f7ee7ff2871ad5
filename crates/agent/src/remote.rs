//! Enroll, unlock and announce reboots for a vault's remote and threshold
//! keyslots.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atrest_audit::Checkpoint;
use atrest_core::SecretKey;
use atrest_remote::{
    BootId, GenerationClaim, HostIdentity, RebootNotice, RemoteBinding, RequestNonce, Share,
    UnlockRequest,
};
use atrest_vault::{
    AuthorityRef, AuthorityWitness, LockedVault, RemoteMember, RemoteSlot, SlotKind, ThresholdSlot,
    Unlocker, Vault, VaultConfig, VaultError,
};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::boots::ReleasedBoot;
use crate::client::{AuthorityClient, Rebind, RebootReply, UnlockReply};
use crate::witness::Expected;
use crate::{AgentError, StateDir, boot_id};

/// One authority to enroll with.
pub struct AuthoritySpec {
    /// `https://HOST[:PORT]`.
    pub url: String,
    /// The one-time enrollment token (`atrest keyd token create`); `None`
    /// binds another vault of a host already enrolled there (no token
    /// spent: the host signs a bind request with its identity).
    pub token: Option<Zeroizing<String>>,
    /// SHA-256 of the authority's CA certificate (DER).
    pub ca_fingerprint: [u8; 32],
    /// Other URLs of the same authority (replicas on one database), stored
    /// in the remote slot and tried in order at unlock when `url` cannot be
    /// reached. Enrollment itself goes to `url` only (a token is spent
    /// once). Only for a single authority, not a threshold member.
    pub replicas: Vec<String>,
}

/// What [`enroll`] did.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub slot_id: u8,
    /// k of a threshold slot; `None` for a remote slot.
    pub threshold: Option<u8>,
    /// Per authority: URL, the host id it gave, the group it put the host in.
    pub authorities: Vec<(String, String, String)>,
}

/// Enrolls this host with `authorities` and adds one slot to `vault`: a
/// remote slot for one authority, or a `threshold`-of-n slot for several.
/// The host identity in `state` is created if there is none.
///
/// Enrollment spends each token; if a later authority fails, the earlier
/// ones already know the host (run again with new tokens for all).
pub async fn enroll(
    vault: &mut Vault,
    state: &StateDir,
    authorities: &[AuthoritySpec],
    threshold: Option<u8>,
    host_name: &str,
    label: &str,
) -> Result<Enrolled, AgentError> {
    let (members, summary) = enroll_members(state, authorities, threshold, host_name).await?;
    let slot_id = match threshold {
        None => vault.add_remote_slot(&members[0], &authorities[0].replicas, label)?,
        Some(k) => vault.add_threshold_slot(k, &members, label)?,
    };
    Ok(Enrolled {
        slot_id,
        threshold,
        authorities: summary,
    })
}

/// Per authority: URL, the host id it gave, the group it put the host in.
pub type EnrolledAt = Vec<(String, String, String)>;

/// Enrolls (or binds) this host with each of `authorities` and returns one
/// fresh binding and exchange key per authority, in order, for whatever the
/// caller protects with them (a vault keyslot, a LUKS volume's token). The
/// host identity in `state` is created if there is none.
pub async fn enroll_members(
    state: &StateDir,
    authorities: &[AuthoritySpec],
    threshold: Option<u8>,
    host_name: &str,
) -> Result<(Vec<RemoteMember>, EnrolledAt), AgentError> {
    match (authorities.len(), threshold) {
        (0, _) => return Err(AgentError::Invalid("give at least one authority".into())),
        (1, Some(_)) => {
            return Err(AgentError::Invalid(
                "a threshold needs at least two authorities".into(),
            ));
        }
        (n, Some(k)) if k < 2 || usize::from(k) > n => {
            return Err(AgentError::Invalid(format!(
                "the threshold must be between 2 and the number of authorities ({n}), not {k}"
            )));
        }
        (n, None) if n > 1 => {
            return Err(AgentError::Invalid(format!(
                "{n} authorities need a threshold: how many of them must answer (--threshold K)"
            )));
        }
        (n, _) if n > atrest_vault::MAX_THRESHOLD_MEMBERS => {
            return Err(AgentError::Invalid(format!(
                "at most {} authorities per keyslot",
                atrest_vault::MAX_THRESHOLD_MEMBERS
            )));
        }
        _ => {}
    }
    if threshold.is_some() && authorities.iter().any(|a| !a.replicas.is_empty()) {
        return Err(AgentError::Invalid(
            "replica URLs are for a single authority's remote slot, not a threshold slot's members"
                .into(),
        ));
    }
    if let Some(first) = authorities.first() {
        atrest_vault::validate_replicas(&first.url, &first.replicas)
            .map_err(AgentError::Invalid)?;
    }
    let identity = state.load_or_create_identity()?;
    let mut members = Vec::with_capacity(authorities.len());
    let mut summary = Vec::with_capacity(authorities.len());
    for spec in authorities {
        let client = AuthorityClient::new(&spec.url, spec.ca_fingerprint)?;
        let reply = match &spec.token {
            Some(token) => {
                client
                    .enroll(token, host_name, identity.public_key())
                    .await?
            }
            None => {
                let signed = identity.sign_bind(atrest_remote::BindRequest {
                    host_id: atrest_remote::HostId::new(host_name)
                        .map_err(|e| AgentError::Invalid(e.to_string()))?,
                    nonce: atrest_remote::RequestNonce::random(),
                    timestamp: unix_now(),
                });
                client.bind(&signed).await.map_err(|e| match e {
                    AgentError::Refused { code, url, .. }
                        if code == "unknown_host" || code == "bad_signature" =>
                    {
                        AgentError::Invalid(format!(
                            "this host is not enrolled at {url} as {host_name:?} (with this \
                             identity): enroll it once with a token (`--token`), or give the \
                             name it enrolled under (`--host-name`)"
                        ))
                    }
                    other => other,
                })?
            }
        };
        let bad = |reason: &str| AgentError::BadAnswer {
            url: client.url().to_string(),
            reason: reason.to_string(),
        };
        let audit_public_key = reply.audit_public_key.to_bytes();
        let (binding, key) = atrest_remote::enroll(&reply.exchange_key);
        if binding.key_id() != reply.key_id {
            return Err(bad("key_id does not name exchange_key"));
        }
        summary.push((
            client.url().to_string(),
            reply.host_id.to_string(),
            reply.group.clone(),
        ));
        members.push(RemoteMember {
            authority: AuthorityRef {
                url: client.url().to_string(),
                ca_fingerprint: spec.ca_fingerprint,
                host_id: reply.host_id,
                audit_public_key,
            },
            binding,
            key,
        });
    }
    Ok((members, summary))
}

/// How hard [`unlock`] and [`announce_reboot`] try.
#[derive(Debug, Clone)]
pub struct UnlockOptions {
    /// Further attempts per authority after a connection failure or a
    /// server error (5xx), with exponential backoff.
    pub retries: u32,
    /// Overall limit, including time spent waiting for approval.
    pub timeout: Duration,
    /// First backoff delay; doubled per attempt up to 5 s.
    pub backoff: Duration,
    /// How long each long poll of a held request waits at the authority.
    pub poll_wait: Duration,
    /// The boot id sent; `None` reads it ([`boot_id`]).
    pub boot_id: Option<BootId>,
}

impl Default for UnlockOptions {
    fn default() -> Self {
        Self {
            retries: 5,
            timeout: Duration::from_secs(120),
            backoff: Duration::from_millis(250),
            poll_wait: Duration::from_secs(25),
            boot_id: None,
        }
    }
}

/// An unlocked vault and how it was opened.
#[derive(Debug)]
pub struct Unlocked {
    pub vault: Vault,
    pub slot_id: u8,
    /// Authorities the slot was re-bound to after a secret rotation.
    pub rebound: Vec<String>,
    /// Re-binds that failed (the vault is open; the next unlock retries).
    pub warnings: Vec<String>,
    /// What each answering authority had witnessed of a format 2 vault,
    /// with the claim it judged (docs/format.md §16.17.4): the mount
    /// checks the vault against these before it serves it.
    pub witnessed: Vec<AuthorityWitness>,
}

/// Opens `locked` through its first remote or threshold keyslot that
/// answers (slots in config order). An audit rollback or a bad checkpoint
/// stops at once: the host fails closed.
pub async fn unlock(
    locked: LockedVault,
    state: &StateDir,
    options: &UnlockOptions,
) -> Result<Unlocked, AgentError> {
    let config = locked.config().clone();
    let root = locked.root().to_path_buf();
    let slots: Vec<(u8, &SlotKind)> = config
        .keyslots
        .iter()
        .filter(|s| matches!(s.kind, SlotKind::Remote(_) | SlotKind::Threshold(_)))
        .map(|s| (s.id, &s.kind))
        .collect();
    if slots.is_empty() {
        return Err(AgentError::NoRemoteSlot);
    }
    let mut ctx = Context::new(state, options, config.vault_id)?;
    // Read before any key exists (§16.17.2): the authority judges it.
    ctx.claim = locked.claim();
    let mut locked = Some(locked);
    let mut first_error = None;
    for (slot_id, kind) in slots {
        let locked = match locked.take() {
            Some(l) => l,
            None => LockedVault::open(&root)?,
        };
        let result = match kind {
            SlotKind::Remote(slot) => unlock_remote(&ctx, locked, slot_id, slot).await,
            SlotKind::Threshold(slot) => unlock_threshold(&ctx, locked, slot_id, slot).await,
            _ => continue,
        };
        match result {
            Ok(unlocked) => return Ok(unlocked),
            Err(e) if e.is_audit_failure() => return Err(e),
            Err(e) => {
                tracing::debug!(slot = slot_id, error = %e, "remote keyslot did not open");
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(AgentError::NoRemoteSlot))
}

/// What every request of one unlock shares.
#[derive(Clone)]
struct Context {
    identity: Arc<HostIdentity>,
    vault_id: [u8; 16],
    boot: BootId,
    options: UnlockOptions,
    deadline: Instant,
    state: StateDir,
    /// A format 2 vault's claim about its state on disk, sent with each
    /// request (to an authority that takes it).
    claim: Option<GenerationClaim>,
}

impl Context {
    fn new(
        state: &StateDir,
        options: &UnlockOptions,
        vault_id: [u8; 16],
    ) -> Result<Self, AgentError> {
        let identity = Arc::new(state.load_identity()?);
        let boot = match &options.boot_id {
            Some(b) => b.clone(),
            None => boot_id()?,
        };
        Ok(Self {
            identity,
            vault_id,
            boot,
            options: options.clone(),
            deadline: Instant::now() + options.timeout,
            state: state.clone(),
            claim: None,
        })
    }
}

/// The secret a remote or threshold slot's authorities released, each
/// answer checked against its audit log, for a caller that protects
/// something other than a vault with it (a LUKS volume). Call
/// [`Release::confirm`] once the secret has opened what it protects: only
/// then are the authorities' checkpoints kept.
pub struct Release {
    /// A remote slot: the exchange key `K` the answer unblinded to. A
    /// threshold slot: the secret its opened shares combine to.
    pub key: SecretKey,
    /// The URLs that answered.
    pub urls: Vec<String>,
    /// An authority rotated this host's secret: the caller should bind
    /// again (this release still opens what the old key protects).
    pub rotated: bool,
    keep: Vec<([u8; 32], Checkpoint)>,
}

impl Release {
    fn new(key: SecretKey, released: Vec<Released>) -> Self {
        Self {
            key,
            urls: released.iter().map(|r| r.url.clone()).collect(),
            rotated: released.iter().any(|r| r.rebind.is_some()),
            keep: released
                .into_iter()
                .filter_map(|r| Some((r.audit_key, r.keep?)))
                .collect(),
        }
    }

    /// Keeps the authorities' checkpoints now that the secret proved right.
    pub fn confirm(self, state: &StateDir) -> Result<(), AgentError> {
        for (audit_key, cp) in &self.keep {
            state.keep_checkpoint(audit_key, cp)?;
        }
        Ok(())
    }
}

/// Asks `slot`'s authority (then its replicas) for the key of `slot`, as
/// [`unlock`] does for a vault: `target_id` and `slot_id` name what is
/// being opened in the signed request and the audit entry.
pub async fn release_remote(
    state: &StateDir,
    options: &UnlockOptions,
    target_id: [u8; 16],
    slot_id: u8,
    slot: &RemoteSlot,
) -> Result<Release, AgentError> {
    let ctx = Context::new(state, options, target_id)?;
    let released = request_key_from_replicas(&ctx, slot, slot_id).await?;
    Ok(Release::new(released.key.clone(), vec![released]))
}

/// Asks every authority of a threshold `slot` at once and combines the
/// first `k` shares that open, as [`unlock`] does for a vault.
pub async fn release_threshold(
    state: &StateDir,
    options: &UnlockOptions,
    target_id: [u8; 16],
    slot_id: u8,
    slot: &ThresholdSlot,
) -> Result<Release, AgentError> {
    let ctx = Context::new(state, options, target_id)?;
    let (secret, opened) = collect_threshold(&ctx, slot_id, slot).await?;
    Ok(Release::new(
        secret,
        opened
            .into_iter()
            .map(|(_, _, released)| released)
            .collect(),
    ))
}

/// An authority's released key, and what to do once the vault is open.
struct Released {
    key: SecretKey,
    url: String,
    /// The audit log the kept checkpoint belongs to.
    audit_key: [u8; 32],
    keep: Option<Checkpoint>,
    rebind: Option<Rebind>,
    /// What the authority had witnessed, with the claim it judged.
    witnessed: Option<AuthorityWitness>,
}

#[allow(clippy::disallowed_methods, reason = "this is the host's clock")]
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A grant's fields, its audit proof read whichever version it came in.
pub(crate) struct GrantedParts {
    response: atrest_remote::BlindedResponse,
    audit_seq: u64,
    witnessed: Option<atrest_wire::WitnessedGeneration>,
    checkpoint: Option<Checkpoint>,
    rebind: Option<Rebind>,
    boot_ticket: Option<atrest_remote::BootTicket>,
    pub(crate) audit: Option<atrest_wire::AuditProof>,
}

pub(crate) fn granted_parts(
    url: &str,
    reply: UnlockReply,
) -> Result<Option<GrantedParts>, AgentError> {
    match reply {
        UnlockReply::Granted {
            version,
            response,
            audit_seq,
            checkpoint,
            rebind,
            boot_ticket,
            audit,
            proof,
            witnessed,
        } => Ok(Some(GrantedParts {
            response,
            audit_seq,
            witnessed,
            checkpoint,
            rebind,
            boot_ticket,
            audit: atrest_wire::read_grant_proof(version, audit, proof).map_err(|e| {
                AgentError::BadAnswer {
                    url: url.to_owned(),
                    reason: e.to_string(),
                }
            })?,
        })),
        UnlockReply::Pending { .. } => Ok(None),
    }
}

/// The format-1 checkpoint check, kept while authorities still send
/// checkpoints: a rollback it catches is an alarm too.
fn check_checkpoint(
    ctx: &Context,
    url: &str,
    authority: &AuthorityRef,
    checkpoint: Option<&Checkpoint>,
) -> Result<Option<Checkpoint>, AgentError> {
    let audit_key = &authority.audit_public_key;
    match ctx.state.check_checkpoint(url, audit_key, checkpoint) {
        Err(e @ AgentError::AuditRollback { .. }) => {
            let key = atrest_audit::AuditPublicKey::from_bytes(audit_key).map_err(|_| {
                AgentError::BadCheckpoint {
                    url: url.to_owned(),
                }
            })?;
            Err(ctx.state.raise_alarm(url, &key, None, None, e.to_string()))
        }
        other => other,
    }
}

/// A held request as its requester polls it.
struct Poll<'a> {
    id: &'a str,
    token: &'a str,
    known_tree_size: u64,
}

/// Asks one authority for the key of `binding`, retrying transient
/// failures with backoff and waiting out approval, all within the deadline.
/// `replicas`: the other URLs of the same authority, which a held
/// request's polls move to when this one cannot be reached (every replica
/// answers for every held request).
async fn request_key(
    ctx: &Context,
    authority: &AuthorityRef,
    replicas: &[&str],
    binding: &RemoteBinding,
    slot_id: u8,
) -> Result<Released, AgentError> {
    let client = AuthorityClient::new(&authority.url, authority.ca_fingerprint)?;
    let url = client.url().to_string();
    let (fingerprint, host) = (&authority.ca_fingerprint, &authority.host_id);
    let _one_at_a_time = ctx.state.lock_authority(fingerprint, host).await?;
    // Nothing goes to an authority whose log this host caught misbehaving.
    ctx.state
        .refuse_if_alarmed(&url, &authority.audit_public_key)?;
    let kept_head = ctx.state.kept_head(&authority.audit_public_key)?;
    let known_tree_size = kept_head.map_or(0, |h| h.tree_size);
    let mut delay = ctx.options.backoff;
    let mut attempt = 0u32;
    // Dropped for an authority from before claims, which refuses them.
    let mut claim = ctx.claim.clone();
    loop {
        attempt += 1;
        // A fresh blinding, nonce and time per attempt: a request that did
        // reach the authority before the connection broke is never replayed.
        let (blinded, unblinding) = binding.blind();
        let mut signed = ctx.identity.sign(UnlockRequest {
            host_id: authority.host_id.clone(),
            vault_id: ctx.vault_id,
            keyslot: slot_id,
            key_id: binding.key_id(),
            blinded,
            nonce: RequestNonce::random(),
            timestamp: unix_now(),
            boot_id: ctx.boot.clone(),
            generation: claim.clone(),
        });
        signed.boot_ticket = ctx.state.boot_ticket(fingerprint, host, &ctx.boot);
        let left = remaining(ctx.deadline);
        let result = if left.is_zero() {
            Err(AgentError::Unreachable {
                url: url.clone(),
                attempts: attempt - 1,
                reason: "the timeout passed".into(),
            })
        } else {
            match client
                .unlock(&signed, known_tree_size, left.min(Duration::from_secs(30)))
                .await
            {
                Ok(UnlockReply::Pending {
                    request_id,
                    poll_token: Some(poll_token),
                    reason,
                    ..
                }) => {
                    tracing::info!(authority = %url, %reason, "unlock request held for approval");
                    let poll_token = Zeroizing::new(poll_token);
                    let poll = Poll {
                        id: &request_id,
                        token: &poll_token,
                        known_tree_size,
                    };
                    let mut pollers = vec![client.clone()];
                    for replica in replicas {
                        pollers.push(AuthorityClient::new(replica, authority.ca_fingerprint)?);
                    }
                    wait_for_decision(ctx, &pollers, &poll, reason).await
                }
                Ok(UnlockReply::Pending {
                    poll_token: None, ..
                }) => Err(AgentError::BadAnswer {
                    url: url.clone(),
                    reason: "a held request without the token to poll it".into(),
                }),
                other => other,
            }
        };
        match result.and_then(|reply| granted_parts(&url, reply)) {
            Ok(Some(granted)) => {
                // Nothing of the answer is kept before it checks out: the
                // release in the log and the log's heads, then the key.
                let expected = Expected {
                    url: &url,
                    audit_key: &authority.audit_public_key,
                    host,
                    nonce: &signed.request.nonce,
                };
                ctx.state
                    .witness(&expected, kept_head, granted.audit.as_ref())?;
                let keep = check_checkpoint(ctx, &url, authority, granted.checkpoint.as_ref())?;
                let GrantedParts {
                    response,
                    rebind,
                    boot_ticket,
                    audit,
                    audit_seq,
                    witnessed,
                    ..
                } = granted;
                let key = unblinding
                    .unblind(&response)
                    .map_err(|e| AgentError::BadAnswer {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                if let Some(ticket) = &boot_ticket {
                    ctx.state
                        .keep_boot_ticket(fingerprint, host, &ctx.boot, ticket)?;
                }
                // How the authority accounted for this boot, from the entry
                // just checked (`atrest doctor` reads it). A note: failing
                // to keep it does not undo the unlock.
                if let Some(boot) = audit
                    .as_ref()
                    .and_then(|a| ReleasedBoot::from_entry(&url, host, &a.entry))
                    && let Err(e) = ctx.state.record_boot(&authority.audit_public_key, boot)
                {
                    tracing::warn!(authority = %url, error = %e, "could not keep the boot record");
                }
                let witnessed = witnessed.zip(claim).map(|(w, claim)| AuthorityWitness {
                    url: url.clone(),
                    witnessed: w.generation(),
                    config_generation: w.config_generation,
                    reported_at_ms: w.reported_at_ms,
                    claim,
                    approval: audit_seq,
                    audit_key: authority.audit_public_key,
                });
                return Ok(Released {
                    key,
                    url,
                    audit_key: authority.audit_public_key,
                    keep,
                    rebind,
                    witnessed,
                });
            }
            Ok(None) => {
                return Err(AgentError::BadAnswer {
                    url,
                    reason: "pending after the wait ended".into(),
                });
            }
            // An authority from before claims refuses the field it does
            // not know (`malformed_request`), a later one a version it
            // does not take (`unsupported_version`): ask again without it
            // (format.md §16.17.2). Such an authority cannot witness.
            Err(AgentError::Refused { code, .. })
                if claim.is_some()
                    && (code == "malformed_request" || code == "unsupported_version") =>
            {
                tracing::warn!(
                    authority = %url,
                    %code,
                    "this key authority does not take a vault's generation claim, so it cannot \
                     witness whether this vault was rolled back; asking without the claim"
                );
                claim = None;
                attempt -= 1;
            }
            Err(e) if e.is_transient() && attempt <= ctx.options.retries => {
                let left = remaining(ctx.deadline);
                if left.is_zero() {
                    return Err(with_attempts(e, attempt));
                }
                tracing::info!(authority = %url, attempt, error = %e, "retrying");
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(with_attempts(e, attempt)),
        }
    }
}

fn with_attempts(error: AgentError, attempts: u32) -> AgentError {
    match error {
        AgentError::Unreachable { url, reason, .. } => AgentError::Unreachable {
            url,
            attempts,
            reason,
        },
        other => other,
    }
}

/// Long-polls a held request until it is decided or the deadline passes.
/// Connection failures while waiting are retried, on the next of
/// `clients` (the replica that held the request, then the authority's
/// other replicas, in turn): the request stays held, in the authority's
/// database.
async fn wait_for_decision(
    ctx: &Context,
    clients: &[AuthorityClient],
    poll: &Poll<'_>,
    mut reason: String,
) -> Result<UnlockReply, AgentError> {
    let started = Instant::now();
    let mut delay = ctx.options.backoff;
    let mut turn = 0;
    loop {
        let client = &clients[turn % clients.len()];
        let left = remaining(ctx.deadline);
        if left < Duration::from_secs(1) {
            return Err(AgentError::StillPending {
                url: client.url().to_string(),
                reason,
                waited_secs: started.elapsed().as_secs(),
            });
        }
        let wait = ctx
            .options
            .poll_wait
            .min(left - Duration::from_secs(1))
            .max(Duration::from_secs(1));
        match client
            .poll(poll.id, poll.token, poll.known_tree_size, wait)
            .await
        {
            Ok(reply @ UnlockReply::Granted { .. }) => return Ok(reply),
            Ok(UnlockReply::Pending { reason: r, .. }) => {
                reason = r;
                delay = ctx.options.backoff;
            }
            Err(e) if e.is_transient() => {
                turn += 1;
                if clients.len() > 1 {
                    let next = clients[turn % clients.len()].url();
                    tracing::warn!(authority = %client.url(), %next, error = %e, "polling the held request through the next replica");
                }
                tokio::time::sleep(delay.min(remaining(ctx.deadline))).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn wrong_answer(url: &str) -> impl FnOnce(VaultError) -> AgentError + '_ {
    move |e| match e {
        VaultError::WrongKey => AgentError::WrongAnswer {
            url: url.to_string(),
        },
        other => AgentError::Vault(other),
    }
}

/// Asks the slot's authority at its URL, then at each replica in order: a
/// replica is tried only when the one before could not be reached or
/// failed with a server error (5xx) after its retries. A definitive answer
/// (denied, revoked, shredded, a bad answer, an audit alarm) ends it.
async fn request_key_from_replicas(
    ctx: &Context,
    slot: &RemoteSlot,
    slot_id: u8,
) -> Result<Released, AgentError> {
    let urls: Vec<&str> = slot.urls().collect();
    let mut last = None;
    for (i, url) in urls.iter().enumerate() {
        let authority = AuthorityRef {
            url: (*url).to_string(),
            ..slot.authority.clone()
        };
        let others: Vec<&str> = urls.iter().copied().filter(|other| other != url).collect();
        match request_key(ctx, &authority, &others, &slot.binding, slot_id).await {
            Err(e) if e.is_transient() && i + 1 < urls.len() => {
                tracing::warn!(
                    authority = %url,
                    next = %urls[i + 1],
                    error = %e,
                    "key authority replica failed; trying the next one"
                );
                last = Some(e);
            }
            other => return other,
        }
    }
    Err(last.unwrap_or(AgentError::NoRemoteSlot))
}

async fn unlock_remote(
    ctx: &Context,
    locked: LockedVault,
    slot_id: u8,
    slot: &RemoteSlot,
) -> Result<Unlocked, AgentError> {
    let released = request_key_from_replicas(ctx, slot, slot_id).await?;
    let mut vault = locked
        .unlock(&Unlocker::Remote(released.key.clone()))
        .map_err(wrong_answer(&released.url))?;
    // The slot's parameters (audit key included) are authentic now.
    if let Some(cp) = &released.keep {
        ctx.state.keep_checkpoint(&released.audit_key, cp)?;
    }
    let mut rebound = Vec::new();
    let mut warnings = Vec::new();
    if let Some(rebind) = &released.rebind {
        let result = rebind_binding(rebind, &released.url)
            .and_then(|(b, k)| vault.rebind_remote_slot(slot_id, b, &k).map_err(Into::into));
        note_rebind(&mut rebound, &mut warnings, &released.url, result);
    }
    Ok(Unlocked {
        vault,
        slot_id,
        rebound,
        warnings,
        witnessed: released.witnessed.into_iter().collect(),
    })
}

fn rebind_binding(rebind: &Rebind, url: &str) -> Result<(RemoteBinding, SecretKey), AgentError> {
    let (binding, key) = atrest_remote::enroll(&rebind.exchange_key);
    if binding.key_id() != rebind.key_id {
        return Err(AgentError::BadAnswer {
            url: url.to_string(),
            reason: "rebind key_id does not name its exchange_key".into(),
        });
    }
    Ok((binding, key))
}

fn note_rebind(
    rebound: &mut Vec<String>,
    warnings: &mut Vec<String>,
    url: &str,
    result: Result<(), AgentError>,
) {
    match result {
        Ok(()) => rebound.push(url.to_string()),
        Err(e) => {
            tracing::warn!(authority = %url, error = %e, "could not re-bind the keyslot");
            warnings.push(format!(
                "could not re-bind the keyslot to {url}'s new key ({e}); the next unlock tries again"
            ));
        }
    }
}

/// How long a threshold unlock waits, once it has enough shares, for the
/// other members' answers already in flight.
const THRESHOLD_GRACE: Duration = Duration::from_millis(500);

/// Each opened share with the answer that opened it.
type OpenedShares = Vec<(u8, Share, Released)>;

/// Asks every member of `slot` at once; the secret the first `k` shares
/// that open combine to, and those shares.
async fn collect_threshold(
    ctx: &Context,
    slot_id: u8,
    slot: &ThresholdSlot,
) -> Result<(SecretKey, OpenedShares), AgentError> {
    let needed = usize::from(slot.threshold);
    let mut tasks = JoinSet::new();
    for (position, member) in slot.members.iter().enumerate() {
        let ctx = ctx.clone();
        let authority = member.authority.clone();
        let binding = member.binding;
        let index = (position + 1) as u8;
        tasks.spawn(async move {
            (
                index,
                request_key(&ctx, &authority, &[], &binding, slot_id).await,
            )
        });
    }
    let mut opened: Vec<(u8, Share, Released)> = Vec::new();
    let mut errors = Vec::new();
    let mut combined = None;
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, result)) = joined else {
            errors.push("a request task failed".to_string());
            continue;
        };
        match result {
            Ok(released) => match slot.open_share(&ctx.vault_id, slot_id, index, &released.key) {
                Some(share) => opened.push((index, share, released)),
                None => errors.push(
                    AgentError::WrongAnswer {
                        url: released.url.clone(),
                    }
                    .to_string(),
                ),
            },
            // Fail closed: one authority's rolled-back log stops the unlock.
            Err(e) if e.is_audit_failure() => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
        if opened.len() >= needed {
            let shares: Vec<Share> = opened.iter().map(|(_, s, _)| s.clone()).collect();
            match atrest_remote::combine(&shares) {
                Ok(secret) => {
                    combined = Some(secret);
                    break;
                }
                Err(e) => errors.push(format!("shares do not combine: {e}")),
            }
        }
    }
    // The others: answers already on their way still arrive (each keeps
    // its boot ticket, or the next unlock of this boot would look like a
    // copy of the host to that authority); then stop asking.
    if combined.is_some() {
        let _ = tokio::time::timeout(THRESHOLD_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    tasks.abort_all();
    let Some(secret) = combined else {
        return Err(AgentError::NotEnough {
            needed,
            got: opened.len(),
            errors,
        });
    };
    Ok((secret, opened))
}

async fn unlock_threshold(
    ctx: &Context,
    locked: LockedVault,
    slot_id: u8,
    slot: &ThresholdSlot,
) -> Result<Unlocked, AgentError> {
    let needed = usize::from(slot.threshold);
    let (secret, opened) = collect_threshold(ctx, slot_id, slot).await?;
    let mut vault = locked
        .unlock(&Unlocker::Threshold(secret.clone()))
        .map_err(|e| match e {
            VaultError::WrongKey => AgentError::NotEnough {
                needed,
                got: 0,
                errors: vec!["the combined shares do not open the keyslot".into()],
            },
            other => AgentError::Vault(other),
        })?;
    let mut rebound = Vec::new();
    let mut warnings = Vec::new();
    for (index, share, released) in &opened {
        if let Some(cp) = &released.keep {
            ctx.state.keep_checkpoint(&released.audit_key, cp)?;
        }
        if let Some(rebind) = &released.rebind {
            let result = rebind_binding(rebind, &released.url).and_then(|(b, k)| {
                vault
                    .rebind_threshold_member(slot_id, *index, b, &k, share, &secret)
                    .map_err(Into::into)
            });
            note_rebind(&mut rebound, &mut warnings, &released.url, result);
        }
    }
    let witnessed = opened
        .into_iter()
        .filter_map(|(_, _, released)| released.witnessed)
        .collect();
    Ok(Unlocked {
        vault,
        slot_id,
        rebound,
        warnings,
        witnessed,
    })
}

/// Every authority a vault's remote and threshold slots name, once each
/// (by URL and host id). Read from the unauthenticated config: fine for
/// announcing a reboot, which releases nothing.
pub fn remote_authorities(config: &VaultConfig) -> Vec<AuthorityRef> {
    let mut out: Vec<AuthorityRef> = Vec::new();
    let mut add = |a: &AuthorityRef| {
        if !out.iter().any(|o| o.url == a.url && o.host_id == a.host_id) {
            out.push(a.clone());
        }
    };
    for slot in &config.keyslots {
        match &slot.kind {
            SlotKind::Remote(r) => add(&r.authority),
            SlotKind::Threshold(t) => t.members.iter().for_each(|m| add(&m.authority)),
            _ => {}
        }
    }
    out
}

/// One authority's answer to a reboot notice.
#[derive(Debug)]
pub struct RebootAnnounced {
    pub url: String,
    pub result: Result<RebootReply, AgentError>,
}

/// Tells every authority of `config` that this boot will end on purpose,
/// so the next boot counts as announced. Each gets its own signed notice,
/// with the same retries as [`unlock`].
pub async fn announce_reboot(
    config: &VaultConfig,
    state: &StateDir,
    options: &UnlockOptions,
) -> Result<Vec<RebootAnnounced>, AgentError> {
    let authorities = remote_authorities(config);
    if authorities.is_empty() {
        return Err(AgentError::NoRemoteSlot);
    }
    let identity = state.load_identity()?;
    let boot = match &options.boot_id {
        Some(b) => b.clone(),
        None => boot_id()?,
    };
    let deadline = Instant::now() + options.timeout;
    let mut out = Vec::with_capacity(authorities.len());
    for authority in authorities {
        let ticket = state.boot_ticket(&authority.ca_fingerprint, &authority.host_id, &boot);
        // The authority's URL, then its replicas (remote slots that list
        // them), moving on only after a transient failure, as unlock does.
        let urls = replica_urls(config, &authority);
        let mut result = Err(AgentError::NoRemoteSlot);
        for (i, url) in urls.iter().enumerate() {
            let authority = AuthorityRef {
                url: url.clone(),
                ..authority.clone()
            };
            result = announce_one(
                &identity,
                &authority,
                ticket.clone(),
                &boot,
                options,
                deadline,
            )
            .await;
            match &result {
                Err(e) if e.is_transient() && i + 1 < urls.len() => {
                    tracing::warn!(authority = %url, error = %e, "key authority replica failed; trying the next one");
                }
                _ => break,
            }
        }
        out.push(RebootAnnounced {
            url: authority.url.clone(),
            result,
        });
    }
    Ok(out)
}

/// `authority`'s URL and the replicas a remote slot of `config` lists for it.
pub(crate) fn replica_urls(config: &VaultConfig, authority: &AuthorityRef) -> Vec<String> {
    let mut urls = vec![authority.url.clone()];
    for slot in &config.keyslots {
        if let SlotKind::Remote(r) = &slot.kind
            && r.authority.url == authority.url
            && r.authority.host_id == authority.host_id
        {
            for url in &r.replicas {
                if !urls.contains(url) {
                    urls.push(url.clone());
                }
            }
        }
    }
    urls
}

/// One reboot notice to one URL, with retries.
async fn announce_one(
    identity: &HostIdentity,
    authority: &AuthorityRef,
    ticket: Option<atrest_remote::BootTicket>,
    boot: &BootId,
    options: &UnlockOptions,
    deadline: Instant,
) -> Result<RebootReply, AgentError> {
    // Only the boot the authority released to can announce its end,
    // with the ticket it got; without one the notice would only be
    // refused (and logged as a refusal), so it is not sent.
    let Some(ticket) = ticket else {
        return Err(AgentError::NoBootTicket {
            url: authority.url.clone(),
        });
    };
    let client = AuthorityClient::new(&authority.url, authority.ca_fingerprint)?;
    let mut delay = options.backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut signed = identity.sign_reboot(RebootNotice {
            host_id: authority.host_id.clone(),
            boot_id: boot.clone(),
            nonce: RequestNonce::random(),
            timestamp: unix_now(),
        });
        signed.boot_ticket = Some(ticket.clone());
        match client.reboot(&signed).await {
            Ok(reply) => return Ok(reply),
            Err(e) if e.is_transient() && attempt <= options.retries => {
                let left = remaining(deadline);
                if left.is_zero() {
                    return Err(with_attempts(e, attempt));
                }
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(with_attempts(e, attempt)),
        }
    }
}
