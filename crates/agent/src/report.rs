//! Generation reports (docs/format.md §16.17.1): a mounted format 2 vault
//! tells every authority of its remote and threshold slots the newest
//! durable generation, signed by the host's identity and sent with the
//! boot's ticket, so that an earlier copy of the vault put back is held or
//! refused at the next unlock.
//!
//! [`Reporter`] sends from a thread of its own, with its own runtime: the
//! mount hands it generations ([`Reporter::report`], which never waits)
//! and it sends the mount's and a rollback's at once, a checkpoint's at
//! most every `interval`, a heartbeat after [`HEARTBEAT`] without one,
//! retrying an authority it cannot reach with backoff. Only
//! [`Reporter::finish`], at unmount, waits for the network: at most
//! [`FINISH_TIMEOUT`], plus a round already under way. A refusal (`generation_regressed`,
//! `generation_forked`: the disk does not continue what the authority
//! witnessed) is logged as an error; it is not retried. What an authority
//! accepted is handed back to the mount ([`Reporter::take_acknowledged`])
//! to be logged as acknowledged (`WITNESSED`).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atrest_remote::{BootId, GenerationReport, HostIdentity, ReportReason, RequestNonce};
use atrest_vault::{Acknowledgement, AuthorityRef, DurableGeneration, VaultConfig};

use crate::client::AuthorityClient;
use crate::remote::{remote_authorities, replica_urls, unix_now};
use crate::{AgentError, StateDir, boot_id};

/// Least time between two reports of new checkpoints
/// (`--witness-interval` of §16.17.1).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// A heartbeat (the same generation again) after this long without a
/// report.
pub const HEARTBEAT: Duration = Duration::from_secs(15 * 60);

/// How long [`Reporter::finish`] tries before giving up.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one report waits for an answer: a report is small, and the
/// unmount's must fit in [`FINISH_TIMEOUT`].
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// First delay after an authority could not be reached; doubled per
/// failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

enum Message {
    Generation(DurableGeneration, ReportReason),
    /// The last report; answered on the channel once sent or given up.
    Finish(DurableGeneration, ReportReason, mpsc::Sender<()>),
}

/// The reporting thread of one mounted vault.
#[derive(Debug)]
pub struct Reporter {
    messages: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    acknowledged: Arc<Mutex<Vec<Acknowledgement>>>,
}

impl Reporter {
    /// Starts reporting for the vault of `config` to the authorities of its
    /// remote and threshold slots; `None` when it has none. Fails when the
    /// host has no identity or boot id.
    pub fn start(
        config: &VaultConfig,
        state: StateDir,
        interval: Duration,
    ) -> Result<Option<Self>, AgentError> {
        let authorities = remote_authorities(config);
        if authorities.is_empty() {
            return Ok(None);
        }
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let sender = Reports {
            acknowledged: acknowledged.clone(),
            identity: state.load_identity()?,
            boot: boot_id()?,
            targets: authorities
                .into_iter()
                .map(|authority| Target {
                    urls: replica_urls(config, &authority),
                    authority,
                    warned: false,
                })
                .collect(),
            state,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                AgentError::Invalid(format!("cannot start the reporter's runtime: {e}"))
            })?;
        let (messages, received) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("atrest-reporter".into())
            .spawn(move || run(&received, sender, &runtime, interval))
            .map_err(AgentError::io("the reporter thread"))?;
        Ok(Some(Self {
            messages,
            thread: Mutex::new(Some(thread)),
            acknowledged,
        }))
    }

    /// The generations authorities accepted since the last call, oldest
    /// first; never waits for the network.
    pub fn take_acknowledged(&self) -> Vec<Acknowledgement> {
        std::mem::take(&mut *self.acknowledged.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands over a durable generation to report; never waits.
    pub fn report(&self, generation: DurableGeneration, reason: ReportReason) {
        // Gone only after `finish`.
        let _ = self.messages.send(Message::Generation(generation, reason));
    }

    /// Sends the last report (an unmount's) and stops: waits until it
    /// was delivered or [`FINISH_TIMEOUT`] passed.
    pub fn finish(&self, generation: DurableGeneration, reason: ReportReason) {
        let (done, finished) = mpsc::channel();
        let sent = self
            .messages
            .send(Message::Finish(generation, reason, done))
            .is_ok();
        // A round already under way when the last report was handed over
        // may take up to one answer's timeout per URL; past that the
        // thread is left to end with the process.
        let limit = FINISH_TIMEOUT + 2 * ANSWER_TIMEOUT;
        if sent && finished.recv_timeout(limit).is_ok() {
            let thread = self.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }
}

/// One authority: its slot's reference and its URLs, replicas after.
struct Target {
    authority: AuthorityRef,
    urls: Vec<String>,
    /// Said once that this boot holds no ticket for it.
    warned: bool,
}

/// What the reporting thread holds.
struct Reports {
    /// What the authorities accepted, for the mount to log.
    acknowledged: Arc<Mutex<Vec<Acknowledgement>>>,
    identity: HostIdentity,
    boot: BootId,
    targets: Vec<Target>,
    state: StateDir,
}

/// How one round of reports to every authority went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Each authority answered (witnessed, or refused for good).
    Done,
    /// One could not be reached: send again later.
    Again,
}

/// A reason that must reach the authority as such wins over a periodic
/// one: a rollback's report is the only one an authority accepts from a
/// vault that does not descend from what it witnessed.
fn merge(pending: Option<ReportReason>, new: ReportReason) -> ReportReason {
    match (pending, new) {
        (Some(ReportReason::RollbackAccepted), _) => ReportReason::RollbackAccepted,
        (Some(ReportReason::Mount), ReportReason::Periodic) => ReportReason::Mount,
        (_, new) => new,
    }
}

fn run(
    messages: &mpsc::Receiver<Message>,
    mut sender: Reports,
    runtime: &tokio::runtime::Runtime,
    interval: Duration,
) {
    let mut pending: Option<(DurableGeneration, ReportReason)> = None;
    let mut delivered: Option<DurableGeneration> = None;
    let mut last_sent: Option<Instant> = None;
    let mut not_before = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let now = Instant::now();
        let wake_at = match &pending {
            Some(_) => not_before,
            None => last_sent.unwrap_or(now) + HEARTBEAT,
        };
        match messages.recv_timeout(wake_at.saturating_duration_since(now)) {
            Ok(Message::Generation(generation, reason)) => {
                let reason = merge(pending.as_ref().map(|(_, r)| *r), reason);
                if reason == ReportReason::Periodic
                    && let Some(sent) = last_sent
                {
                    not_before = not_before.max(sent + interval);
                }
                pending = Some((generation, reason));
            }
            Ok(Message::Finish(generation, reason, done)) => {
                let reason = merge(pending.as_ref().map(|(_, r)| *r), reason);
                runtime.block_on(sender.send_until(
                    &generation,
                    reason,
                    Instant::now() + FINISH_TIMEOUT,
                ));
                let _ = done.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let (generation, reason) = match pending.take() {
                    Some(p) => p,
                    None => match &delivered {
                        Some(g) => (g.clone(), ReportReason::Heartbeat),
                        None => {
                            last_sent = Some(now);
                            continue;
                        }
                    },
                };
                match runtime.block_on(sender.send_round(&generation, reason)) {
                    Round::Done => {
                        last_sent = Some(Instant::now());
                        delivered = Some(generation);
                        backoff = FIRST_BACKOFF;
                    }
                    Round::Again => {
                        pending = Some((generation, reason));
                        not_before = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Reports {
    /// Rounds until every authority answered or `deadline` passed.
    async fn send_until(
        &mut self,
        generation: &DurableGeneration,
        reason: ReportReason,
        deadline: Instant,
    ) {
        let mut delay = FIRST_BACKOFF;
        loop {
            if self.send_round(generation, reason).await == Round::Done {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= delay {
                tracing::warn!(
                    checkpoint = generation.generation.checkpoint,
                    ?reason,
                    "the generation report did not reach every key authority; each still \
                     witnesses an earlier generation of this vault, which it descends from"
                );
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One report to every authority (each through its replicas in turn).
    async fn send_round(&mut self, generation: &DurableGeneration, reason: ReportReason) -> Round {
        let mut round = Round::Done;
        for target in &mut self.targets {
            let authority = &target.authority;
            let Some(ticket) =
                self.state
                    .boot_ticket(&authority.ca_fingerprint, &authority.host_id, &self.boot)
            else {
                // Only the boot the authority released to may report: a
                // vault opened by passphrase in a boot that never
                // unlocked through it has nothing to show.
                if !target.warned {
                    target.warned = true;
                    tracing::warn!(
                        authority = %authority.url,
                        "no generation reports to this key authority: this boot did not unlock \
                         through it (no boot ticket), so it still witnesses the generation it \
                         saw last; unlock through it (`atrest unlock`) to have it follow"
                    );
                }
                continue;
            };
            let mut signed = self.identity.sign_report(GenerationReport {
                host_id: authority.host_id.clone(),
                vault_id: generation.vault_id,
                checkpoint: generation.generation.checkpoint,
                seq: generation.generation.seq,
                chain: generation.generation.chain,
                config_generation: generation.config_generation,
                reason,
                state: generation.state,
                lineage: generation.lineage.clone(),
                boot_id: self.boot.clone(),
                nonce: RequestNonce::random(),
                timestamp: unix_now(),
            });
            signed.boot_ticket = Some(ticket);
            let mut result = Err(AgentError::NoRemoteSlot);
            for url in &target.urls {
                result = match AuthorityClient::new(url, authority.ca_fingerprint) {
                    Ok(client) => client.generation(&signed, ANSWER_TIMEOUT).await,
                    Err(e) => Err(e),
                };
                match &result {
                    Err(e) if e.is_transient() => {}
                    _ => break,
                }
            }
            match result {
                Ok(reply) => {
                    tracing::info!(
                        authority = %authority.url,
                        ?reason,
                        checkpoint = reply.witnessed.checkpoint,
                        sequence = reply.witnessed.seq,
                        "generation witnessed"
                    );
                    // Only the generation this host reported, which the
                    // disk holds, is ever logged as acknowledged.
                    if reply.witnessed.generation() == generation.generation {
                        self.acknowledged
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Acknowledgement {
                                generation: generation.generation,
                                audit_key: authority.audit_public_key,
                            });
                    } else {
                        tracing::warn!(
                            authority = %authority.url,
                            "the key authority's answer names another generation than the one \
                             reported; not logged as acknowledged"
                        );
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(authority = %authority.url, error = %e, "generation report not delivered; retrying later");
                    round = Round::Again;
                }
                Err(AgentError::Refused { code, message, .. })
                    if code == "generation_regressed" || code == "generation_forked" =>
                {
                    tracing::error!(
                        authority = %authority.url,
                        %code,
                        checkpoint = generation.generation.checkpoint,
                        sequence = generation.generation.seq,
                        "THE KEY AUTHORITY REFUSED THIS VAULT'S GENERATION: the vault on disk \
                         does not continue the generation it witnessed (an earlier copy was put \
                         back, or another copy was written meanwhile); its next unlock is held \
                         or refused by the authority's rollback policy. {message}"
                    );
                }
                Err(e) => tracing::error!(
                    authority = %authority.url,
                    error = %e,
                    "the key authority refused this vault's generation report"
                ),
            }
        }
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report not yet delivered is replaced by the newer generation,
    /// but a rollback's reason stays (the authority takes the copy it
    /// approved only from such a report), and so does a mount's over a
    /// periodic one.
    #[test]
    fn a_pending_rollback_keeps_its_reason_until_delivered() {
        use ReportReason::*;
        assert_eq!(merge(None, Periodic), Periodic);
        assert_eq!(merge(Some(Periodic), Periodic), Periodic);
        assert_eq!(merge(Some(RollbackAccepted), Periodic), RollbackAccepted);
        assert_eq!(merge(Some(RollbackAccepted), Unmount), RollbackAccepted);
        assert_eq!(merge(Some(Mount), Periodic), Mount);
        assert_eq!(merge(Some(Mount), Unmount), Unmount);
        assert_eq!(merge(Some(Heartbeat), Unmount), Unmount);
    }
}
