//! Audit entries and the hash chain that links them.

use std::fmt;
use std::str::FromStr;

use atrest_core::labels;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::encoding::{Canonical, base64url_array, to_base64url};

/// The version byte in an entry's hashed encoding.
pub const ENTRY_VERSION: u8 = 1;

/// Longest `actor` or `subject`, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Longest `details` JSON text, in bytes: an audit entry records a decision,
/// not a payload.
pub const MAX_DETAILS_LEN: usize = 64 * 1024;

/// A SHA-256 hash of an entry; the chain's head names the whole log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryHash(#[serde(with = "base64url_array")] pub [u8; 32]);

impl EntryHash {
    /// The `prev_hash` of the first entry.
    pub const GENESIS: EntryHash = EntryHash([0; 32]);
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(&self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

/// What happened. The string forms are stored and hashed, so a variant's
/// name never changes; new kinds are added at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A host registered, with or without a token.
    Enrollment,
    /// A host asked for a key.
    Request,
    /// The authority released or refused a key.
    Decision,
    /// A person approved or denied a pending request.
    Approval,
    /// A host was revoked.
    Revoke,
    /// A host secret (or vault) was destroyed.
    Shred,
    /// A policy was changed.
    PolicyChange,
    /// An enrollment token was created or used up.
    Token,
    /// A host secret was rotated.
    Rotation,
    /// A host announced its next boot (`atrest reboot --planned`).
    RebootAnnounced,
    /// The authority started, stopped or changed its own configuration.
    Authority,
}

impl EntryKind {
    pub const ALL: [EntryKind; 11] = [
        Self::Enrollment,
        Self::Request,
        Self::Decision,
        Self::Approval,
        Self::Revoke,
        Self::Shred,
        Self::PolicyChange,
        Self::Token,
        Self::Rotation,
        Self::RebootAnnounced,
        Self::Authority,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrollment => "enrollment",
            Self::Request => "request",
            Self::Decision => "decision",
            Self::Approval => "approval",
            Self::Revoke => "revoke",
            Self::Shred => "shred",
            Self::PolicyChange => "policy_change",
            Self::Token => "token",
            Self::Rotation => "rotation",
            Self::RebootAnnounced => "reboot_announced",
            Self::Authority => "authority",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry kind this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit entry kind {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for EntryKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// What a caller records; the log adds the sequence number, time and
/// hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub kind: EntryKind,
    /// Who acted: a host id, an approver, `keyd`, `cli:root`...
    pub actor: String,
    /// Whom it concerns, usually a host id.
    pub subject: Option<String>,
    /// Anything else worth keeping (decision reason, boot id, source
    /// address, policy). Never key material.
    pub details: serde_json::Value,
}

impl NewEntry {
    pub fn new(kind: EntryKind, actor: impl Into<String>) -> Self {
        Self {
            kind,
            actor: actor.into(),
            subject: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// One entry of the log, as stored. Its fields are plain data: read from a
/// store, nothing about them is trusted until [`crate::verify`] has walked
/// the chain, or a host has checked it with [`crate::verify_inclusion`].
///
/// As JSON, `details` is embedded as the exact JSON text that was hashed
/// (not re-encoded), and read back byte for byte, so an entry sent to a
/// host still hashes the same there. Deserialize it from the JSON text
/// itself, not through a `serde_json::Value`, which would re-encode it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1, 2, 3... with no gaps.
    pub seq: u64,
    /// Unix time in milliseconds, never decreasing along the chain.
    pub timestamp_ms: u64,
    pub kind: EntryKind,
    pub actor: String,
    pub subject: Option<String>,
    /// The details as JSON text, exactly the bytes that were hashed (so
    /// no JSON canonicalization is ever needed).
    #[serde(
        serialize_with = "details_as_json",
        deserialize_with = "details_from_json"
    )]
    pub details: String,
    pub prev_hash: EntryHash,
    pub hash: EntryHash,
}

impl Entry {
    /// `SHA-256(lp(domain::AUDIT_ENTRY) ‖ version ‖ lp(seq) ‖ lp(timestamp_ms)
    /// ‖ lp(kind) ‖ lp(actor) ‖ lp(subject) ‖ lp(details) ‖ lp(prev_hash))`,
    /// integers as u64 big-endian, `subject` as `0x00` when absent and
    /// `0x01 ‖ bytes` when present. Covers the sequence number so that
    /// moving an entry changes its hash.
    pub fn compute_hash(&self) -> EntryHash {
        let subject = match &self.subject {
            None => vec![0],
            Some(s) => [&[1u8][..], s.as_bytes()].concat(),
        };
        let mut out = Canonical::new(labels::domain::AUDIT_ENTRY, ENTRY_VERSION);
        out.field(&self.seq.to_be_bytes())
            .field(&self.timestamp_ms.to_be_bytes())
            .field(self.kind.as_str().as_bytes())
            .field(self.actor.as_bytes())
            .field(&subject)
            .field(self.details.as_bytes())
            .field(&self.prev_hash.0);
        EntryHash(atrest_core::sha256(&out.into_bytes()))
    }

    /// The details parsed back into JSON.
    pub fn details_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.details)
    }
}

/// Writes the details as their own JSON text, verbatim, so they show as a
/// JSON value in `tail --json` and a reader gets the hashed bytes back. Text
/// that is not JSON (a damaged row) is written as a JSON string so it stays
/// visible; it does not read back identically, and did not hash right
/// anyway.
fn details_as_json<S: Serializer>(details: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match RawValue::from_string(details.to_owned()) {
        Ok(raw) if raw.get() == details => raw.serialize(serializer),
        _ => serializer.serialize_str(details),
    }
}

/// The exact JSON text of `details`, as [`details_as_json`] wrote it.
fn details_from_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    Ok(raw.get().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut e = Entry {
            seq: 7,
            timestamp_ms: 1_800_000_000_000,
            kind: EntryKind::Decision,
            actor: "keyd".into(),
            subject: Some("web-1".into()),
            details: r#"{"released":true}"#.into(),
            prev_hash: EntryHash([3; 32]),
            hash: EntryHash::GENESIS,
        };
        e.hash = e.compute_hash();
        e
    }

    #[test]
    fn every_field_is_hashed() {
        let base = entry();
        let changes: [fn(&mut Entry); 8] = [
            |e| e.seq += 1,
            |e| e.timestamp_ms += 1,
            |e| e.kind = EntryKind::Request,
            |e| e.actor.push('x'),
            |e| e.subject = None,
            |e| e.subject = Some(String::new()),
            |e| e.details = r#"{"released":false}"#.into(),
            |e| e.prev_hash.0[0] ^= 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut e = base.clone();
            change(&mut e);
            assert_ne!(e.compute_hash(), base.hash, "change {i}");
        }
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EntryKind::ALL {
            assert_eq!(kind.as_str().parse::<EntryKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("approve".parse::<EntryKind>().is_err());
    }

    #[test]
    fn json_shows_details_as_an_object() {
        let json = serde_json::to_value(entry()).unwrap();
        assert_eq!(json["details"]["released"], true);
        assert_eq!(json["kind"], "decision");
    }

    #[test]
    fn an_entry_reads_back_from_json_with_the_hashed_details() {
        let mut e = entry();
        // Not what serde_json would write: spacing, key order, escapes.
        e.details = r#"{ "z": 1,  "a": "\u00e9t\u00e9", "n": 1.50 }"#.into();
        e.hash = e.compute_hash();
        for json in [
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string_pretty(&e).unwrap(),
        ] {
            let back: Entry = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e);
            assert_eq!(back.compute_hash(), e.hash);
        }
    }
}
