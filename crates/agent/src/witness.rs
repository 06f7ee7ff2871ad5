//! The host as a witness of each authority's audit log: it keeps the
//! newest signed tree head it saw, checks that every release it receives is
//! in the log and that the log only grew since, and remembers durably when
//! it did not.
//!
//! ```text
//! <state dir>/heads/<audit key hex>.json    newest signed tree head seen
//! <state dir>/alarms/<audit key hex>.json   a rollback or fork was seen
//! <state dir>/alarms/acknowledged/          alarms an operator cleared
//! ```
//!
//! An alarm is raised only on proof of misbehaviour: a signed head smaller
//! than a signed head kept before (rolled back), or two signed heads no
//! consistency proof joins (rewritten or forked). From then on the host
//! refuses every unlock through that log, before sending anything, until
//! an operator runs `atrest alarm acknowledge`: appending entries to the
//! log (each refused attempt does) never clears it. Answers that are merely
//! wrong (a bad signature, a proof of the wrong shape, a missing proof) are
//! refused each time without an alarm: a man in the middle cannot forge a
//! signed head, so they prove nothing about the authority.

use std::fs;
use std::path::PathBuf;

use atrest_audit::{
    AuditPublicKey, ConsistencyError, TreeHead, verify_consistency_between, verify_inclusion_under,
};
use atrest_remote::{HostId, RequestNonce};
use atrest_wire::AuditProof;
use serde::{Deserialize, Serialize};

use crate::state::{hex, read_json, write_json};
use crate::{AgentError, StateDir};

const HEADS: &str = "heads";
const ALARMS: &str = "alarms";
const ACKNOWLEDGED: &str = "acknowledged";

/// What a host kept when it caught an authority's log rolled back or
/// forked: both signed heads (the evidence) and what it concluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The authority's URL when it was caught.
    pub url: String,
    /// The audit key (base64url) whose log misbehaved.
    pub audit_key: String,
    /// Unix seconds.
    pub detected_at: u64,
    pub reason: String,
    /// The head the host had kept.
    pub kept: Option<TreeHead>,
    /// The head the authority answered with.
    pub given: Option<TreeHead>,
}

/// A raised alarm and where it is kept.
#[derive(Clone, Debug)]
pub struct KeptAlarm {
    pub path: PathBuf,
    pub alarm: Alarm,
}

/// What the host's request was: the release entry must be about it.
pub(crate) struct Expected<'a> {
    pub url: &'a str,
    pub audit_key: &'a [u8; 32],
    pub host: &'a HostId,
    pub nonce: &'a RequestNonce,
}

impl StateDir {
    fn head_path(&self, audit_key: &[u8; 32]) -> PathBuf {
        self.path()
            .join(HEADS)
            .join(format!("{}.json", hex(audit_key)))
    }

    fn alarm_path(&self, audit_key: &[u8; 32]) -> PathBuf {
        self.path()
            .join(ALARMS)
            .join(format!("{}.json", hex(audit_key)))
    }

    /// The newest signed tree head kept from this audit log.
    pub fn kept_head(&self, audit_key: &[u8; 32]) -> Result<Option<TreeHead>, AgentError> {
        read_json(&self.head_path(audit_key))
    }

    /// The alarm raised for this audit log, if any.
    pub fn alarm(&self, audit_key: &[u8; 32]) -> Result<Option<KeptAlarm>, AgentError> {
        let path = self.alarm_path(audit_key);
        Ok(read_json(&path)?.map(|alarm| KeptAlarm { path, alarm }))
    }

    /// Every raised, unacknowledged alarm.
    pub fn alarms(&self) -> Result<Vec<KeptAlarm>, AgentError> {
        let dir = self.path().join(ALARMS);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AgentError::io(&dir)(e)),
        };
        let mut alarms = Vec::new();
        for entry in entries {
            let path = entry.map_err(AgentError::io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(alarm) = read_json(&path)?
            {
                alarms.push(KeptAlarm { path, alarm });
            }
        }
        alarms.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(alarms)
    }

    /// Clears the alarm of the audit log whose key (base64url, as
    /// `atrest alarm list` shows it) is `audit_key`: the alarm and the head
    /// kept before it move to `alarms/acknowledged/` as evidence, and the
    /// next unlock trusts the log as the authority now serves it.
    pub fn acknowledge_alarm(&self, audit_key: &str) -> Result<KeptAlarm, AgentError> {
        let key = AuditPublicKey::try_from(audit_key.to_owned()).map_err(|_| {
            AgentError::Invalid(format!(
                "{audit_key:?} is not an audit key; copy it from `atrest alarm list`"
            ))
        })?;
        let raw = key.to_bytes();
        let Some(kept) = self.alarm(&raw)? else {
            return Err(AgentError::Invalid(format!(
                "no alarm is raised for the audit log {audit_key} (`atrest alarm list` shows them)"
            )));
        };
        let dir = self.path().join(ALARMS).join(ACKNOWLEDGED);
        StateDir::create_dir(&dir)?;
        let stamp = format!("{}-{}", hex(&raw), kept.alarm.detected_at);
        let moved = dir.join(format!("{stamp}.json"));
        fs::rename(&kept.path, &moved).map_err(AgentError::io(&kept.path))?;
        let head = self.head_path(&raw);
        match fs::rename(&head, dir.join(format!("{stamp}.head.json"))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io(&head)(e)),
        }
        self.forget_checkpoint(&raw)?;
        Ok(KeptAlarm {
            path: moved,
            alarm: kept.alarm,
        })
    }

    /// Refuses at once while an alarm is raised for this log: nothing is
    /// sent to an authority that was caught.
    pub(crate) fn refuse_if_alarmed(
        &self,
        url: &str,
        audit_key: &[u8; 32],
    ) -> Result<(), AgentError> {
        match self.alarm(audit_key)? {
            Some(kept) => Err(alarm_error(url, &kept)),
            None => Ok(()),
        }
    }

    /// Checks a grant's audit proof (inclusion of this host's own release,
    /// consistency with `kept`, the head this host kept, read with the
    /// alarm check before the request was sent) and keeps its head. Called
    /// under the per-authority lock, so the check and the keep are one
    /// step for this host. Returns whether a tree head is now kept.
    pub(crate) fn witness(
        &self,
        expected: &Expected<'_>,
        kept: Option<TreeHead>,
        proof: Option<&AuditProof>,
    ) -> Result<bool, AgentError> {
        let url = expected.url;
        let Some(proof) = proof else {
            return match kept {
                // Leaving the proof out would skip every check below.
                Some(_) => Err(bad(url, "no audit proof, though it sent them before")),
                None => Ok(false),
            };
        };
        let key = AuditPublicKey::from_bytes(expected.audit_key)
            .map_err(|_| bad(url, "the keyslot's audit key is not a key"))?;
        // The head's signature is checked once, here; the inclusion and
        // consistency checks below take the verified head.
        let verified = proof
            .tree_head
            .verified(&key)
            .map_err(|e| bad(url, &e.to_string()))?;
        verify_inclusion_under(verified, &proof.entry, &proof.inclusion)
            .map_err(|e| bad(url, &e.to_string()))?;
        check_entry_is_ours(expected, proof)?;
        let head = proof.tree_head;
        if let Some(kept) = kept {
            let result = if head.tree_size < kept.tree_size {
                // Evidence: the smaller head's signature verified above.
                Err(ConsistencyError::RolledBack {
                    held: kept.tree_size,
                    given: head.tree_size,
                })
            } else {
                let consistency = proof
                    .consistency
                    .as_ref()
                    .ok_or_else(|| bad(url, "no proof that its log extends the one seen before"))?;
                // The kept head's signature is checked again: the file
                // could have been changed since it was kept.
                kept.verified(&key)
                    .map_err(ConsistencyError::from)
                    .and_then(|kept| verify_consistency_between(kept, verified, consistency))
            };
            match result {
                Ok(()) => {}
                Err(
                    e @ (ConsistencyError::RolledBack { .. }
                    | ConsistencyError::Inconsistent { .. }),
                ) => {
                    return Err(self.raise_alarm(url, &key, Some(kept), Some(head), e.to_string()));
                }
                Err(e) => return Err(bad(url, &e.to_string())),
            }
            if head.tree_size == kept.tree_size {
                return Ok(true);
            }
        }
        self.keep_head(expected.audit_key, &head)?;
        Ok(true)
    }

    /// Keeps the alarm durably (the first one stays: it holds the earliest
    /// evidence) and returns the error that refuses the unlock.
    pub(crate) fn raise_alarm(
        &self,
        url: &str,
        key: &AuditPublicKey,
        kept: Option<TreeHead>,
        given: Option<TreeHead>,
        reason: String,
    ) -> AgentError {
        let raw = key.to_bytes();
        if let Ok(Some(existing)) = self.alarm(&raw) {
            return alarm_error(url, &existing);
        }
        let alarm = Alarm {
            url: url.to_owned(),
            audit_key: key.to_string(),
            detected_at: crate::remote::unix_now(),
            reason,
            kept,
            given,
        };
        let path = self.alarm_path(&raw);
        tracing::error!(authority = %url, reason = %alarm.reason, "audit log alarm raised");
        if let Err(e) = write_json(&path, &alarm) {
            // Still refused now; the next attempt checks again and finds
            // the same misbehaviour.
            tracing::error!(error = %e, "could not keep the audit alarm");
        }
        alarm_error(url, &KeptAlarm { path, alarm })
    }

    fn keep_head(&self, audit_key: &[u8; 32], head: &TreeHead) -> Result<(), AgentError> {
        write_json(&self.head_path(audit_key), head)
    }
}

/// The release entry must be this request's: a proof about another entry
/// (an older release, another host's) proves nothing about this one.
fn check_entry_is_ours(expected: &Expected<'_>, proof: &AuditProof) -> Result<(), AgentError> {
    if proof.is_release_of(expected.host, expected.nonce) {
        Ok(())
    } else {
        Err(bad(
            expected.url,
            &format!(
                "audit entry {} is not the release of this request",
                proof.entry.seq
            ),
        ))
    }
}

fn bad(url: &str, reason: &str) -> AgentError {
    AgentError::BadAuditProof {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

fn alarm_error(url: &str, kept: &KeptAlarm) -> AgentError {
    AgentError::AuditAlarm {
        url: url.to_owned(),
        reason: kept.alarm.reason.clone(),
        path: kept.path.clone(),
        audit_key: kept.alarm.audit_key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use atrest_audit::{AuditSigningKey, Entry, EntryHash, EntryKind, MerkleTree, entry_leaf_hash};

    use super::*;

    const URL: &str = "https://keys.example:7443";

    /// A log as an authority keeps it: entries, their tree, its key.
    struct Log {
        key: AuditSigningKey,
        entries: Vec<Entry>,
        tree: MerkleTree,
    }

    impl Log {
        /// A log of `n` entries about other hosts (the same `n` entries
        /// whenever it is made: two logs share their common prefix).
        fn new(n: u64) -> Self {
            Self {
                key: AuditSigningKey::from_seed(&[9; 32]),
                entries: Vec::new(),
                tree: MerkleTree::new(),
            }
            .grow(n)
        }

        fn push(&mut self, subject: &str, details: String) -> &Entry {
            let prev = self.entries.last().map_or(EntryHash::GENESIS, |e| e.hash);
            let mut e = Entry {
                seq: self.entries.len() as u64 + 1,
                timestamp_ms: 1_800_000_000_000 + self.entries.len() as u64,
                kind: EntryKind::Decision,
                actor: "keyd".into(),
                subject: Some(subject.into()),
                details,
                prev_hash: prev,
                hash: EntryHash::GENESIS,
            };
            e.hash = e.compute_hash();
            self.tree.push(entry_leaf_hash(&e));
            self.entries.push(e);
            self.entries.last().unwrap()
        }

        /// `n` entries about others.
        fn grow(mut self, n: u64) -> Self {
            for i in 0..n {
                self.push("other", format!(r#"{{"outcome":"denied","n":{i}}}"#));
            }
            self
        }

        fn head(&self) -> TreeHead {
            let size = self.tree.size();
            self.key
                .sign_tree_head(size, self.tree.root(), 1_800_000_000_000 + size)
        }

        /// Releases to `host` for `nonce`, and answers as keyd does for a
        /// host that kept a head of `known` entries.
        fn release(&mut self, host: &HostId, nonce: &RequestNonce, known: u64) -> AuditProof {
            let details = format!(
                r#"{{"outcome":"released","nonce":"{}"}}"#,
                atrest_core::to_base64url(&nonce.0)
            );
            let entry = self.push(host.as_str(), details).clone();
            let head = self.head();
            AuditProof {
                inclusion: self
                    .tree
                    .inclusion_proof(entry.seq - 1, head.tree_size)
                    .unwrap(),
                consistency: (known > 0 && known <= head.tree_size)
                    .then(|| self.tree.consistency_proof(known, head.tree_size).unwrap()),
                entry,
                tree_head: head,
            }
        }
    }

    /// A grant carrying `proof` in `version`, as keyd writes it (version
    /// 2 with the head's shared text spliced in).
    fn granted(version: u32, proof: AuditProof) -> atrest_wire::UnlockReply {
        let json = atrest_audit::TreeHeadJson::new(&proof.tree_head);
        let (audit, proof) = atrest_wire::grant_proof_fields(version, proof, json);
        atrest_wire::UnlockReply::Granted {
            version,
            // The ristretto255 base point.
            response: serde_json::from_value(serde_json::json!(
                "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY"
            ))
            .unwrap(),
            audit_seq: 0,
            checkpoint: None,
            rebind: None,
            boot_ticket: None,
            audit,
            proof,
            witnessed: None,
        }
    }

    struct Host {
        state: StateDir,
        id: HostId,
        audit_key: [u8; 32],
        _dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Self {
                state: StateDir::new(dir.path().join("host")),
                id: HostId::new("h-web-1").unwrap(),
                audit_key: AuditSigningKey::from_seed(&[9; 32]).public_key().to_bytes(),
                _dir: dir,
            }
        }

        fn known(&self) -> u64 {
            self.state
                .kept_head(&self.audit_key)
                .unwrap()
                .map_or(0, |h| h.tree_size)
        }

        /// One unlock against `log`, answered in grant version 2: the
        /// grant's proof read from the answer and checked as `request_key`
        /// does.
        fn unlock(&self, log: &mut Log) -> Result<bool, AgentError> {
            self.unlock_in(log, 2, |_| {})
        }

        /// One unlock answered in `version`, the answer's JSON text
        /// changed by `tamper` on the way.
        fn unlock_in(
            &self,
            log: &mut Log,
            version: u32,
            tamper: impl FnOnce(&mut serde_json::Value),
        ) -> Result<bool, AgentError> {
            let nonce = RequestNonce::random();
            self.state.refuse_if_alarmed(URL, &self.audit_key)?;
            let kept = self.state.kept_head(&self.audit_key).unwrap();
            let proof = log.release(&self.id, &nonce, self.known());
            let mut answer = serde_json::to_value(granted(version, proof)).unwrap();
            tamper(&mut answer);
            let reply = serde_json::from_value(answer)
                .map_err(|e| bad(URL, &format!("unreadable: {e}")))?;
            let parts = crate::remote::granted_parts(URL, reply)?.unwrap();
            self.state
                .witness(&self.expected(&nonce), kept, parts.audit.as_ref())
        }

        fn expected<'a>(&'a self, nonce: &'a RequestNonce) -> Expected<'a> {
            Expected {
                url: URL,
                audit_key: &self.audit_key,
                host: &self.id,
                nonce,
            }
        }
    }

    #[test]
    fn a_growing_log_is_followed_and_its_head_kept() {
        let host = Host::new();
        let mut log = Log::new(5);
        assert!(host.unlock(&mut log).unwrap());
        assert_eq!(host.known(), 6);
        log = log.grow(20);
        assert!(host.unlock(&mut log).unwrap());
        assert_eq!(host.known(), 27);
        assert!(host.state.alarms().unwrap().is_empty());
    }

    #[test]
    fn a_rolled_back_log_raises_an_alarm_that_growth_never_clears() {
        let host = Host::new();
        let mut log = Log::new(40);
        host.unlock(&mut log).unwrap();
        assert_eq!(host.known(), 41);
        // The authority's disk is put back to 30 entries.
        let mut old = Log::new(30);
        let err = host.unlock(&mut old).unwrap_err();
        assert!(matches!(err, AgentError::AuditAlarm { .. }), "{err:?}");
        assert!(err.to_string().contains("rolled back"), "{err}");
        let alarms = host.state.alarms().unwrap();
        assert_eq!(alarms.len(), 1);
        assert_eq!(alarms[0].alarm.kept.unwrap().tree_size, 41);
        assert_eq!(alarms[0].alarm.given.unwrap().tree_size, 31);
        // However far the old log grows past what the host saw, and even
        // through the honest log again: refused, before any request.
        old = old.grow(100);
        let again = host.unlock(&mut old).unwrap_err();
        assert!(matches!(again, AgentError::AuditAlarm { .. }), "{again:?}");
        let honest = host.unlock(&mut log).unwrap_err();
        assert!(
            matches!(honest, AgentError::AuditAlarm { .. }),
            "{honest:?}"
        );
        assert_eq!(host.known(), 41, "nothing kept while alarmed");
    }

    #[test]
    fn a_forked_log_larger_than_the_kept_head_raises_an_alarm() {
        let host = Host::new();
        let mut log = Log::new(47);
        host.unlock(&mut log).unwrap();
        // Entries after 44 deleted, then the log grew to 60 again: the
        // review's attack. Sizes alone would accept it.
        let mut forked = Log::new(44).grow(16);
        let err = host.unlock(&mut forked).unwrap_err();
        assert!(matches!(err, AgentError::AuditAlarm { .. }), "{err:?}");
        assert!(err.to_string().contains("rewritten or forked"), "{err}");
        assert!(
            err.to_string().contains("atrest alarm acknowledge"),
            "{err}"
        );
    }

    #[test]
    fn an_acknowledged_alarm_keeps_its_evidence_and_trusts_the_log_as_served() {
        let host = Host::new();
        let mut log = Log::new(10);
        host.unlock(&mut log).unwrap();
        let mut forked = Log::new(3).grow(20);
        host.unlock(&mut forked).unwrap_err();
        let key = AuditSigningKey::from_seed(&[9; 32])
            .public_key()
            .to_string();
        assert!(host.state.acknowledge_alarm("not a key").is_err());
        let acknowledged = host.state.acknowledge_alarm(&key).unwrap();
        assert!(
            acknowledged
                .path
                .starts_with(host.state.path().join("alarms/acknowledged"))
        );
        assert!(acknowledged.path.exists());
        assert!(host.state.alarms().unwrap().is_empty());
        assert!(host.state.acknowledge_alarm(&key).is_err(), "only once");
        host.unlock(&mut forked).unwrap();
        assert_eq!(host.known(), forked.tree.size());
    }

    #[test]
    fn proofs_that_do_not_check_out_are_refused_without_an_alarm() {
        let host = Host::new();
        let mut log = Log::new(5);
        host.unlock(&mut log).unwrap();
        let nonce = RequestNonce::random();
        let refused = |proof: Option<&AuditProof>, nonce: &RequestNonce| {
            let kept = host.state.kept_head(&host.audit_key).unwrap();
            let err = host
                .state
                .witness(&host.expected(nonce), kept, proof)
                .unwrap_err();
            assert!(matches!(err, AgentError::BadAuditProof { .. }), "{err:?}");
        };
        // Someone else's release, an older release, a missing proof.
        let theirs = log.release(&HostId::new("h-db-1").unwrap(), &nonce, host.known());
        refused(Some(&theirs), &nonce);
        let other = log.release(&host.id, &RequestNonce::random(), host.known());
        refused(Some(&other), &nonce);
        refused(None, &nonce);
        // A tampered entry, a head signed by another key, no consistency
        // proof.
        let mut proof = log.release(&host.id, &nonce, host.known());
        proof.entry.actor = "someone".into();
        refused(Some(&proof), &nonce);
        let mut proof = log.release(&host.id, &nonce, host.known());
        proof.tree_head = AuditSigningKey::from_seed(&[1; 32]).sign_tree_head(
            proof.tree_head.tree_size,
            proof.tree_head.root_hash,
            1,
        );
        refused(Some(&proof), &nonce);
        let mut proof = log.release(&host.id, &nonce, host.known());
        proof.consistency = None;
        refused(Some(&proof), &nonce);
        assert!(host.state.alarms().unwrap().is_empty());
        assert_eq!(host.known(), 6);
    }

    #[test]
    fn a_version_1_answer_is_still_read_and_checked() {
        // An authority from before grant version 2 ignores the host's
        // header: its answers are checked just the same, in either order.
        let host = Host::new();
        let mut log = Log::new(5);
        assert!(host.unlock_in(&mut log, 1, |_| {}).unwrap());
        log = log.grow(3);
        assert!(host.unlock(&mut log).unwrap());
        log = log.grow(3);
        assert!(host.unlock_in(&mut log, 1, |_| {}).unwrap());
        assert_eq!(host.known(), 14);
        let mut forked = Log::new(4).grow(20);
        let err = host.unlock_in(&mut forked, 1, |_| {}).unwrap_err();
        assert!(matches!(err, AgentError::AuditAlarm { .. }), "{err:?}");
    }

    #[test]
    fn a_tampered_version_2_answer_is_refused() {
        /// Flips one base64url character of the string at `pointer`.
        fn flip(pointer: &'static str) -> impl FnOnce(&mut serde_json::Value) {
            move |answer| {
                let text = answer.pointer_mut(pointer).unwrap();
                let mut s = text.as_str().unwrap().to_owned();
                let c = if s.starts_with('A') { "B" } else { "A" };
                s.replace_range(0..1, c);
                *text = s.into();
            }
        }
        let host = Host::new();
        let mut log = Log::new(9);
        host.unlock(&mut log).unwrap();
        let kept = host.known();
        let refused = |tamper: Box<dyn FnOnce(&mut serde_json::Value)>, log: &mut Log| {
            let err = host.unlock_in(log, 2, tamper).unwrap_err();
            assert!(
                matches!(
                    err,
                    AgentError::BadAuditProof { .. } | AgentError::BadAnswer { .. }
                ),
                "{err:?}"
            );
        };
        refused(Box::new(flip("/proof/inclusion")), &mut log);
        refused(Box::new(flip("/proof/tree_head/signature")), &mut log);
        refused(Box::new(flip("/proof/tree_head/root_hash")), &mut log);
        refused(Box::new(flip("/proof/entry/prev_hash")), &mut log);
        refused(
            Box::new(|a| a["proof"]["entry"]["details"] = r#"{"outcome":"released"}"#.into()),
            &mut log,
        );
        refused(
            Box::new(|a| a["proof"]["entry"]["timestamp_ms"] = 1.into()),
            &mut log,
        );
        refused(
            Box::new(|a| a["proof"]["entry"]["seq"] = 0.into()),
            &mut log,
        );
        // A path cut short, a hash that is not whole, no consistency proof,
        // an unknown field, a version 1 proof in a version 2 answer, a
        // version this host does not read.
        refused(
            Box::new(|a| {
                let path = a["proof"]["inclusion"].as_str().unwrap();
                a["proof"]["inclusion"] = path[..path.len() - 43].to_owned().into();
            }),
            &mut log,
        );
        refused(
            Box::new(|a| {
                let path = a["proof"]["inclusion"].as_str().unwrap();
                a["proof"]["inclusion"] = path[..path.len() - 4].to_owned().into();
            }),
            &mut log,
        );
        refused(
            Box::new(|a| {
                a["proof"].as_object_mut().unwrap().remove("consistency");
            }),
            &mut log,
        );
        refused(Box::new(|a| a["proof"]["hash"] = "x".into()), &mut log);
        refused(Box::new(|a| a["version"] = 1.into()), &mut log);
        refused(Box::new(|a| a["version"] = 3.into()), &mut log);
        assert!(host.state.alarms().unwrap().is_empty());
        assert_eq!(host.known(), kept, "nothing kept from a refused answer");
        // A consistency path changed between two signed heads is proof of
        // a fork, as in version 1.
        let err = host
            .unlock_in(&mut log, 2, flip("/proof/consistency/path"))
            .unwrap_err();
        assert!(matches!(err, AgentError::AuditAlarm { .. }), "{err:?}");
    }

    /// `testdata/grant/`: whole answers of both versions, each read and
    /// checked as `request_key` does, against what the vector says the
    /// host concludes. Walks every file; an unknown `expect` or a field
    /// never read fails.
    #[test]
    fn the_grant_vectors_hold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/grant");
        let mut checked = 0;
        for file in fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.file_name().unwrap() == "README.md" {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let mut fields = std::collections::BTreeMap::new();
            for line in fs::read_to_string(&path).unwrap().lines() {
                let (key, value) = line.split_once(':').unwrap();
                let value = value.strip_prefix(' ').unwrap_or(value);
                assert!(
                    fields.insert(key.to_owned(), value.to_owned()).is_none(),
                    "{name}: {key} twice"
                );
            }
            let mut take = |key: &str| {
                fields
                    .remove(key)
                    .unwrap_or_else(|| panic!("{name}: no {key}"))
            };
            assert_eq!(take("kind"), "grant", "{name}");
            assert!(!take("comment").is_empty(), "{name}");
            let expect = take("expect");
            let hex32 = |text: &str| -> [u8; 32] {
                let bytes: Vec<u8> = (0..text.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                    .collect();
                bytes.try_into().unwrap()
            };
            let nonce_hex = take("nonce");
            let mut nonce = [0u8; 16];
            for (i, byte) in nonce.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&nonce_hex[2 * i..2 * i + 2], 16).unwrap();
            }
            let mut host = Host::new();
            host.audit_key = hex32(&take("audit_public_key"));
            host.id = HostId::new(take("host_id")).unwrap();
            let kept_text = take("kept_head");
            let kept: Option<TreeHead> =
                (!kept_text.is_empty()).then(|| serde_json::from_str(&kept_text).unwrap());
            if let Some(kept) = &kept {
                host.state.keep_head(&host.audit_key, kept).unwrap();
            }
            let answer = take("answer");
            let nonce = RequestNonce(nonce);
            let result = serde_json::from_str::<atrest_wire::UnlockReply>(&answer)
                .map_err(|e| bad(URL, &e.to_string()))
                .and_then(|reply| crate::remote::granted_parts(URL, reply))
                .and_then(|parts| {
                    let audit = parts.unwrap().audit;
                    host.state
                        .witness(&host.expected(&nonce), kept, audit.as_ref())
                        .map(|_| audit)
                });
            match (expect.as_str(), result) {
                ("success", Ok(Some(proof))) => {
                    assert_eq!(proof.entry.hash.0, hex32(&take("entry_hash")), "{name}");
                    let size: u64 = take("tree_size").parse().unwrap();
                    assert_eq!(proof.tree_head.tree_size, size, "{name}");
                    assert_eq!(host.known(), size, "{name}: the head is kept");
                }
                (
                    "refused",
                    Err(AgentError::BadAuditProof { .. } | AgentError::BadAnswer { .. }),
                )
                | ("alarm", Err(AgentError::AuditAlarm { .. })) => {
                    assert_eq!(host.known(), kept.map_or(0, |h| h.tree_size), "{name}");
                }
                (expect, result) => panic!("{name}: expected {expect}, got {result:?}"),
            }
            assert!(fields.is_empty(), "{name}: unread {:?}", fields.keys());
            checked += 1;
        }
        assert!(
            checked >= 20,
            "only {checked} grant vectors in {}",
            dir.display()
        );
    }

    #[test]
    fn a_host_that_never_saw_a_head_accepts_a_grant_without_one() {
        let host = Host::new();
        let nonce = RequestNonce::random();
        assert!(
            !host
                .state
                .witness(&host.expected(&nonce), None, None)
                .unwrap()
        );
    }
}
