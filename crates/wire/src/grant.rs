//! Version 2 of a grant's audit proof: the same proof as version 1
//! ([`AuditProof`]), in fewer bytes and cheaper to write
//! (docs/format.md §15.3.2).
//!
//! - The entry's fields, its `details` text as a JSON string, and no
//!   `hash`: the host computes it, and it is what the proof proves.
//! - The signed tree head of the entry's batch, which keyd encodes once
//!   per batch and splices into every answer of it ([`TreeHeadJson`]).
//! - Each path as one unpadded base64url string of its hashes, 32 bytes
//!   each ([`HashPath`]). The inclusion proof's leaf index (`seq - 1`) and
//!   tree size (the head's) are not sent: they are the values a host
//!   requires of a version 1 proof anyway; the consistency proof's new
//!   size is the head's.
//!
//! A host names the newest version it reads in [`GRANT_VERSION_HEADER`];
//! keyd answers in that version or the newest it writes, whichever is
//! older ([`answer_version`]). An authority from before version 2 ignores
//! the header and answers version 1, which hosts keep reading.

use atrest_audit::{
    ConsistencyProof, Entry, EntryHash, EntryKind, InclusionProof, MerkleHash, TreeHead,
    TreeHeadJson,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de, ser};

use crate::AuditProof;

/// The header with the newest grant version a host reads (absent: 1).
pub const GRANT_VERSION_HEADER: &str = "x-atrest-grant-version";

/// The newest grant version: what this crate writes when a host asks for
/// it, and the newest it reads.
pub const GRANT_VERSION: u32 = 2;

/// The most hashes in a path: an RFC 9162 proof in a tree of fewer than
/// 2^64 leaves has at most 64 (inclusion) or 65 (consistency).
pub const MAX_PATH_HASHES: usize = 65;

pub(crate) fn version_1() -> u32 {
    1
}

/// By reference: what serde's `skip_serializing_if` passes.
pub(crate) fn is_version_1(version: &u32) -> bool {
    *version == 1
}

/// The version keyd answers a host whose [`GRANT_VERSION_HEADER`] is
/// `requested`: the newest both read. Absent or unreadable: 1, as an
/// older host expects.
pub fn answer_version(requested: Option<&str>) -> u32 {
    requested
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(1, |v| v.clamp(1, GRANT_VERSION))
}

/// Why a grant's proof cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantFormatError {
    #[error(
        "the authority answered with grant version {0}; this atrest reads versions 1 to \
         {GRANT_VERSION}: upgrade atrest on this host"
    )]
    UnknownVersion(u32),
    #[error("a version {0} grant without its proof, or with one in another version's form")]
    WrongForm(u32),
}

/// A grant's proof, whichever version it came in: version 1's `audit` or
/// version 2's `proof` (the fields of [`crate::UnlockReply::Granted`]).
/// `None`: the grant carries none (an authority from before the
/// verifiable log; a host that kept a head refuses that).
pub fn read_grant_proof(
    version: u32,
    audit: Option<Box<AuditProof>>,
    proof: Option<Box<GrantProof>>,
) -> Result<Option<AuditProof>, GrantFormatError> {
    match (version, audit, proof) {
        (1, audit, None) => Ok(audit.map(|a| *a)),
        (2, None, Some(proof)) => Ok(Some(proof.into_audit_proof())),
        (1 | 2, _, _) => Err(GrantFormatError::WrongForm(version)),
        (other, _, _) => Err(GrantFormatError::UnknownVersion(other)),
    }
}

/// keyd's side of [`read_grant_proof`]: a grant's proof fields (`audit`,
/// `proof`) in `version` (1, or 2 and later: 2). `tree_head_json` is the
/// batch's shared text of `proof.tree_head`, if at hand.
pub fn grant_proof_fields(
    version: u32,
    proof: AuditProof,
    tree_head_json: Option<TreeHeadJson>,
) -> (Option<Box<AuditProof>>, Option<Box<GrantProof>>) {
    if version >= 2 {
        (None, Some(Box::new(GrantProof::new(proof, tree_head_json))))
    } else {
        (Some(Box::new(proof)), None)
    }
}

/// A grant's audit proof in version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantProof {
    /// The release entry, without its hash.
    #[serde(with = "entry_fields")]
    pub entry: Entry,
    /// The head signed at the end of the entry's batch.
    pub tree_head: SharedTreeHead,
    /// The entry's leaf (`seq - 1`) under `tree_head`.
    pub inclusion: HashPath,
    /// From the size the host sent to `tree_head`; absent as in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyPath>,
}

/// A consistency proof to the grant's tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyPath {
    pub old_size: u64,
    pub path: HashPath,
}

impl GrantProof {
    /// keyd: the version 1 proof in version 2's form. `tree_head_json` is
    /// the batch's shared text of `proof.tree_head` (its receipt's), if
    /// at hand.
    pub fn new(proof: AuditProof, tree_head_json: Option<TreeHeadJson>) -> Self {
        Self {
            entry: proof.entry,
            tree_head: SharedTreeHead {
                head: proof.tree_head,
                json: tree_head_json,
            },
            inclusion: HashPath(proof.inclusion.path),
            consistency: proof.consistency.map(|c| ConsistencyPath {
                old_size: c.old_size,
                path: HashPath(c.path),
            }),
        }
    }

    /// The host: the proof spelt out, for the checks of version 1
    /// ([`atrest_audit::verify_inclusion`] and
    /// [`atrest_audit::verify_consistency`]), which then hold by
    /// construction where version 2 leaves a value out (an entry of
    /// sequence number 0 still fails them).
    pub fn into_audit_proof(self) -> AuditProof {
        let head = self.tree_head.head;
        AuditProof {
            inclusion: InclusionProof {
                leaf_index: self.entry.seq.saturating_sub(1),
                tree_size: head.tree_size,
                path: self.inclusion.0,
            },
            consistency: self.consistency.map(|c| ConsistencyProof {
                old_size: c.old_size,
                new_size: head.tree_size,
                path: c.path.0,
            }),
            entry: self.entry,
            tree_head: head,
        }
    }
}

/// A signed tree head, and (at keyd) its JSON text shared by every answer
/// of its batch, which is what is written when present. Compared by the
/// head alone.
#[derive(Debug, Clone)]
pub struct SharedTreeHead {
    pub head: TreeHead,
    pub json: Option<TreeHeadJson>,
}

impl PartialEq for SharedTreeHead {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head
    }
}

impl Eq for SharedTreeHead {}

impl Serialize for SharedTreeHead {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.json {
            Some(json) => json.serialize(serializer),
            None => self.head.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SharedTreeHead {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            head: TreeHead::deserialize(deserializer)?,
            json: None,
        })
    }
}

/// The hashes of a proof's path, in order, as one unpadded base64url
/// string of their concatenation (`""` for none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashPath(pub Vec<MerkleHash>);

const MAX_PATH_BYTES: usize = MAX_PATH_HASHES * 32;

impl Serialize for HashPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // On the stack: keyd writes one or two per answer.
        let mut raw = [0u8; MAX_PATH_BYTES];
        let len = self.0.len() * 32;
        if len > MAX_PATH_BYTES {
            return Err(ser::Error::custom("a path of more than 65 hashes"));
        }
        for (slot, hash) in raw.chunks_exact_mut(32).zip(&self.0) {
            slot.copy_from_slice(&hash.0);
        }
        let mut text = [0u8; MAX_PATH_BYTES.div_ceil(3) * 4];
        let text = atrest_core::to_base64url_in(&raw[..len], &mut text)
            .ok_or_else(|| ser::Error::custom("base64url of a path"))?;
        serializer.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for HashPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = atrest_core::from_base64url_bounded(&text, MAX_PATH_BYTES)
            .filter(|b| b.len().is_multiple_of(32))
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "expected a path of at most {MAX_PATH_HASHES} hashes of 32 bytes \
                     in unpadded base64url"
                ))
            })?;
        Ok(Self(
            bytes
                .chunks_exact(32)
                .map(|chunk| {
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(chunk);
                    MerkleHash(hash)
                })
                .collect(),
        ))
    }
}

/// An entry as its fields, `details` as a JSON string (its exact text:
/// a string reads back byte for byte, wherever it is nested) and without
/// `hash`, which the reader computes.
mod entry_fields {
    use super::*;

    #[derive(Serialize)]
    struct Out<'a> {
        seq: u64,
        timestamp_ms: u64,
        kind: EntryKind,
        actor: &'a str,
        subject: Option<&'a str>,
        details: &'a str,
        prev_hash: EntryHash,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        seq: u64,
        timestamp_ms: u64,
        kind: EntryKind,
        actor: String,
        subject: Option<String>,
        details: String,
        prev_hash: EntryHash,
    }

    pub fn serialize<S: Serializer>(entry: &Entry, serializer: S) -> Result<S::Ok, S::Error> {
        Out {
            seq: entry.seq,
            timestamp_ms: entry.timestamp_ms,
            kind: entry.kind,
            actor: &entry.actor,
            subject: entry.subject.as_deref(),
            details: &entry.details,
            prev_hash: entry.prev_hash,
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Entry, D::Error> {
        let fields = In::deserialize(deserializer)?;
        let mut entry = Entry {
            seq: fields.seq,
            timestamp_ms: fields.timestamp_ms,
            kind: fields.kind,
            actor: fields.actor,
            subject: fields.subject,
            details: fields.details,
            prev_hash: fields.prev_hash,
            hash: EntryHash::GENESIS,
        };
        entry.hash = entry.compute_hash();
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use atrest_audit::{
        AuditSigningKey, MerkleTree, entry_leaf_hash, verify_consistency, verify_inclusion,
    };

    use super::*;
    use crate::UnlockReply;

    /// A release proof from a log of `n` entries, with a consistency proof
    /// from `known`, and the key that signed its heads.
    fn proof(n: u64, known: u64) -> (AuditProof, TreeHead, AuditSigningKey) {
        let key = AuditSigningKey::from_seed(&[4; 32]);
        let mut tree = MerkleTree::new();
        let mut prev = EntryHash::GENESIS;
        let mut last = None;
        for seq in 1..=n {
            let mut entry = Entry {
                seq,
                timestamp_ms: 1_800_000_000_000 + seq,
                kind: EntryKind::Decision,
                actor: "keyd".into(),
                subject: Some("h-web-1".into()),
                // Spacing, order and escapes serde_json would not write.
                details: format!(r#"{{ "outcome" : "released", "n": {seq}, "s": "\u00e9\"" }}"#),
                prev_hash: prev,
                hash: EntryHash::GENESIS,
            };
            entry.hash = entry.compute_hash();
            prev = entry.hash;
            tree.push(entry_leaf_hash(&entry));
            last = Some(entry);
        }
        let entry = last.unwrap();
        let head = key.sign_tree_head(n, tree.root(), 7);
        let old = key.sign_tree_head(known, tree.root_at(known).unwrap(), 6);
        let proof = AuditProof {
            inclusion: tree.inclusion_proof(n - 1, n).unwrap(),
            consistency: Some(tree.consistency_proof(known, n).unwrap()),
            entry,
            tree_head: head,
        };
        (proof, old, key)
    }

    fn granted(version: u32, audit: Option<AuditProof>, proof: Option<GrantProof>) -> UnlockReply {
        reply(version, audit.map(Box::new), proof.map(Box::new))
    }

    fn reply(
        version: u32,
        audit: Option<Box<AuditProof>>,
        proof: Option<Box<GrantProof>>,
    ) -> UnlockReply {
        UnlockReply::Granted {
            version,
            // The ristretto255 base point.
            response: serde_json::from_value(serde_json::json!(
                "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY"
            ))
            .unwrap(),
            audit_seq: 1,
            checkpoint: None,
            rebind: None,
            boot_ticket: None,
            audit,
            proof,
            witnessed: None,
        }
    }

    fn read(text: &str) -> Result<Option<AuditProof>, GrantFormatError> {
        let UnlockReply::Granted {
            version,
            audit,
            proof,
            ..
        } = serde_json::from_str(text).unwrap()
        else {
            panic!("{text}")
        };
        read_grant_proof(version, audit, proof)
    }

    #[test]
    fn a_version_2_grant_reads_back_as_the_proof_it_was_made_from() {
        for (n, known) in [(1, 1), (13, 7), (100, 64), (1000, 999)] {
            let (original, old, key) = proof(n, known);
            let shared = TreeHeadJson::new(&original.tree_head);
            for json in [shared, None] {
                let (audit, proof) = grant_proof_fields(2, original.clone(), json);
                let text = serde_json::to_string(&reply(2, audit, proof)).unwrap();
                assert!(
                    text.starts_with(r#"{"status":"granted","version":2,"#),
                    "{text}"
                );
                let back = read(&text).unwrap().unwrap();
                assert_eq!(back, original);
                let public = key.public_key();
                verify_inclusion(&public, &back.entry, &back.inclusion, &back.tree_head).unwrap();
                let consistency = back.consistency.as_ref().unwrap();
                verify_consistency(&public, &old, &back.tree_head, consistency).unwrap();
            }
            // Version 2 is the smaller answer.
            let v1 = serde_json::to_string(&granted(1, Some(original.clone()), None)).unwrap();
            let v2 =
                serde_json::to_string(&granted(2, None, Some(GrantProof::new(original, None))))
                    .unwrap();
            assert!(v2.len() < v1.len(), "{} >= {}", v2.len(), v1.len());
        }
    }

    #[test]
    fn the_shared_head_text_is_what_encoding_the_head_writes() {
        let (original, _, _) = proof(13, 7);
        let spliced = GrantProof::new(original.clone(), TreeHeadJson::new(&original.tree_head));
        let encoded = GrantProof::new(original, None);
        assert_eq!(
            serde_json::to_string(&spliced).unwrap(),
            serde_json::to_string(&encoded).unwrap()
        );
    }

    #[test]
    fn versions_and_forms_are_checked() {
        let (original, _, _) = proof(13, 7);
        let v2 = GrantProof::new(original.clone(), None);
        let text = |reply: UnlockReply| serde_json::to_string(&reply).unwrap();
        // Version 1, as authorities from before version 2 write it, with
        // and without a proof.
        let v1 = text(granted(1, Some(original.clone()), None));
        assert!(!v1.contains("\"version\""), "{v1}");
        assert_eq!(read(&v1).unwrap(), Some(original.clone()));
        assert_eq!(read(&text(granted(1, None, None))).unwrap(), None);
        // A version 2 grant must carry its own form of proof, and only it.
        for reply in [
            granted(2, None, None),
            granted(2, Some(original.clone()), None),
            granted(2, Some(original.clone()), Some(v2.clone())),
            granted(1, None, Some(v2.clone())),
        ] {
            assert!(matches!(
                read(&text(reply)),
                Err(GrantFormatError::WrongForm(_))
            ));
        }
        assert_eq!(
            read(&text(granted(3, None, Some(v2)))),
            Err(GrantFormatError::UnknownVersion(3))
        );
    }

    #[test]
    fn a_path_is_whole_hashes_in_one_spelling() {
        let path = |text: &str| serde_json::from_value::<HashPath>(serde_json::json!(text));
        assert_eq!(path("").unwrap(), HashPath(vec![]));
        let two = HashPath(vec![MerkleHash([1; 32]), MerkleHash([0xfe; 32])]);
        let text = serde_json::to_value(&two).unwrap();
        assert_eq!(path(text.as_str().unwrap()).unwrap(), two);
        let one = atrest_core::to_base64url(&[7; 32]);
        assert!(path(&one).is_ok());
        for bad in [
            atrest_core::to_base64url(&[7; 31]),
            atrest_core::to_base64url(&[7; 33]),
            format!("{one}="),
            format!("+{}", &one[1..]),
            atrest_core::to_base64url(&[7; 32 * (MAX_PATH_HASHES + 1)]),
        ] {
            assert!(path(&bad).is_err(), "{bad}");
        }
        let long = HashPath(vec![MerkleHash([0; 32]); MAX_PATH_HASHES + 1]);
        assert!(serde_json::to_string(&long).is_err());
        let longest = HashPath(vec![MerkleHash([9; 32]); MAX_PATH_HASHES]);
        let text = serde_json::to_value(&longest).unwrap();
        assert_eq!(path(text.as_str().unwrap()).unwrap(), longest);
    }

    #[test]
    fn the_answer_is_the_newest_version_both_sides_read() {
        for (header, version) in [
            (None, 1),
            (Some("1"), 1),
            (Some("2"), 2),
            (Some(" 2 "), 2),
            (Some("3"), 2),
            (Some("0"), 1),
            (Some("two"), 1),
        ] {
            assert_eq!(answer_version(header), version, "{header:?}");
        }
    }
}
