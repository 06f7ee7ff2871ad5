//! How each authority accounted for the boots it released keys to, as
//! this host saw it: the boot status in each checked release entry.
//!
//! ```text
//! <state dir>/boots/<audit key hex>-<host id>.json   the last 32 boots released to
//! ```
//!
//! The authority classifies every boot that asks for a key (`first`,
//! `same`, `planned`, `unannounced`, `unproven`) and writes the status into
//! the release entry of its audit log. The host checks that entry's
//! inclusion under a signed tree head before it uses the key
//! (`witness.rs`), then keeps the status here, once per boot (`same`
//! releases are not kept), so that `atrest doctor` can say, without asking
//! the authority, that this boot or an earlier one was an unaccounted
//! reboot. The record is the host's note, not evidence: the evidence is the
//! entry `seq` in the authority's log (`atrest keyd audit tail`).

use std::fs;

use atrest_audit::Entry;
use atrest_remote::HostId;
use serde::{Deserialize, Serialize};

use crate::state::{hex, read_json, write_json};
use crate::{AgentError, StateDir};

const BOOTS: &str = "boots";
/// Boots kept per authority and host: the newest win.
pub const KEPT_BOOTS: usize = 32;
/// The version of the kept file.
const BOOTS_VERSION: u32 = 1;

/// One boot as the authority accounted for it when it released a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedBoot {
    /// The authority's URL.
    pub url: String,
    /// The name the authority knows this host by.
    pub host_id: String,
    /// The boot id the release went to.
    pub boot_id: String,
    /// `first`, `planned`, `unannounced` or `unproven` (the authority's
    /// words; `same` is not kept).
    pub boot: String,
    /// The release entry in the authority's audit log.
    pub seq: u64,
    pub timestamp_ms: u64,
    /// Who approved the release, when a person did.
    pub approved_by: Option<String>,
}

impl ReleasedBoot {
    /// A reboot nobody announced, or a boot id without its ticket (a copy
    /// of the disk, or a host that lost /run).
    pub fn is_unaccounted(&self) -> bool {
        matches!(self.boot.as_str(), "unannounced" | "unproven")
    }

    /// The boot status in a checked release entry: `None` for entries from
    /// before the authority wrote it, and for `same` (nothing new).
    pub(crate) fn from_entry(url: &str, host: &HostId, entry: &Entry) -> Option<Self> {
        #[derive(Deserialize)]
        struct Details {
            boot: Option<String>,
            boot_id: Option<String>,
            approved_by: Option<String>,
        }
        let details: Details = serde_json::from_str(&entry.details).ok()?;
        let boot = details.boot?;
        if boot == "same" {
            return None;
        }
        Some(Self {
            url: url.to_owned(),
            host_id: host.as_str().to_owned(),
            boot_id: details.boot_id?,
            boot,
            seq: entry.seq,
            timestamp_ms: entry.timestamp_ms,
            approved_by: details.approved_by,
        })
    }
}

/// The kept file.
#[derive(Serialize, Deserialize)]
struct Kept {
    version: u32,
    boots: Vec<ReleasedBoot>,
}

impl StateDir {
    fn boots_path(&self, audit_key: &[u8; 32], host: &str) -> std::path::PathBuf {
        self.path()
            .join(BOOTS)
            .join(format!("{}-{host}.json", hex(audit_key)))
    }

    /// Keeps `boot` as the newest released to this host by the log
    /// `audit_key` (the oldest beyond [`KEPT_BOOTS`] are dropped). Called
    /// under the per-authority lock.
    pub(crate) fn record_boot(
        &self,
        audit_key: &[u8; 32],
        boot: ReleasedBoot,
    ) -> Result<(), AgentError> {
        let path = self.boots_path(audit_key, &boot.host_id);
        let mut boots = match read_json::<Kept>(&path) {
            Ok(Some(kept)) if kept.version == BOOTS_VERSION => kept.boots,
            // Unreadable or another version: start again rather than
            // refuse an unlock over a note.
            _ => Vec::new(),
        };
        if boots.iter().any(|b| b.seq == boot.seq) {
            return Ok(());
        }
        boots.push(boot);
        boots.sort_by_key(|b| b.seq);
        let excess = boots.len().saturating_sub(KEPT_BOOTS);
        boots.drain(..excess);
        write_json(
            &path,
            &Kept {
                version: BOOTS_VERSION,
                boots,
            },
        )
    }

    /// Every kept boot, of every authority, oldest first. Files that do
    /// not parse are reported by path.
    pub fn released_boots(&self) -> Result<Vec<ReleasedBoot>, AgentError> {
        let dir = self.path().join(BOOTS);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AgentError::io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(AgentError::io(&dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match read_json::<Kept>(&path)? {
                Some(kept) if kept.version == BOOTS_VERSION => out.extend(kept.boots),
                Some(kept) => {
                    return Err(AgentError::Invalid(format!(
                        "{}: version {} of the boot record; this atrest reads version {BOOTS_VERSION}",
                        path.display(),
                        kept.version
                    )));
                }
                None => {}
            }
        }
        out.sort_by_key(|b| (b.timestamp_ms, b.seq));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use atrest_audit::{EntryHash, EntryKind};

    use super::*;

    fn entry(seq: u64, details: &str) -> Entry {
        Entry {
            seq,
            timestamp_ms: 1_800_000_000_000 + seq,
            kind: EntryKind::Decision,
            actor: "keyd".into(),
            subject: Some("web-1".into()),
            details: details.into(),
            prev_hash: EntryHash::GENESIS,
            hash: EntryHash::GENESIS,
        }
    }

    #[test]
    fn release_entries_give_the_boot_status_once_per_boot() {
        let host = HostId::new("web-1").unwrap();
        let unannounced = entry(
            7,
            r#"{"outcome":"released","request_id":"r","approved_by":"alice","boot":"unannounced","boot_id":"b2","nonce":"n"}"#,
        );
        let boot = ReleasedBoot::from_entry("https://k", &host, &unannounced).unwrap();
        assert_eq!(boot.boot_id, "b2");
        assert_eq!(boot.seq, 7);
        assert_eq!(boot.approved_by.as_deref(), Some("alice"));
        assert!(boot.is_unaccounted());
        let same = entry(8, r#"{"outcome":"released","boot":"same","boot_id":"b2"}"#);
        assert_eq!(ReleasedBoot::from_entry("https://k", &host, &same), None);
        // Entries from before the boot status was logged.
        let old = entry(9, r#"{"outcome":"released","nonce":"n"}"#);
        assert_eq!(ReleasedBoot::from_entry("https://k", &host, &old), None);
        let planned = entry(
            10,
            r#"{"outcome":"released","boot":"planned","boot_id":"b3"}"#,
        );
        assert!(
            !ReleasedBoot::from_entry("https://k", &host, &planned)
                .unwrap()
                .is_unaccounted()
        );
    }

    #[test]
    fn the_newest_boots_are_kept_per_log_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let host = HostId::new("web-1").unwrap();
        let boot = |seq: u64| {
            ReleasedBoot::from_entry(
                "https://k",
                &host,
                &entry(
                    seq,
                    &format!(r#"{{"outcome":"released","boot":"planned","boot_id":"b{seq}"}}"#),
                ),
            )
            .unwrap()
        };
        assert!(state.released_boots().unwrap().is_empty());
        for seq in 1..=40 {
            state.record_boot(&[1; 32], boot(seq)).unwrap();
        }
        state.record_boot(&[1; 32], boot(40)).unwrap();
        state.record_boot(&[2; 32], boot(100)).unwrap();
        let kept = state.released_boots().unwrap();
        assert_eq!(kept.len(), KEPT_BOOTS + 1);
        assert_eq!(kept[0].seq, 40 - KEPT_BOOTS as u64 + 1);
        assert_eq!(kept.last().unwrap().seq, 100);
        // A file of another version is named, not misread.
        fs::write(
            state.path().join("boots/x.json"),
            r#"{"version":2,"boots":[]}"#,
        )
        .unwrap();
        let err = state.released_boots().unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
