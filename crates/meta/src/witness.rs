//! The local witness (docs/format.md §16.17.5): the newest generation of
//! a vault this host made durable, kept outside the vault (in the host's
//! state directory) and MAC'd with `K_witness`, and the judgement of a
//! vault's superblock against it (§16.17.3's table, which an authority
//! applies to a claim and the host to what it authenticated).
//!
//! ```
//! # use atrest_core::{ContentAlgorithm, SecretKey};
//! # use atrest_meta::MetaKeys;
//! # use atrest_meta::superblock::Generation;
//! use atrest_meta::witness::LocalWitness;
//! let keys = MetaKeys::derive(&SecretKey::from_bytes([7; 32]), [1; 16], ContentAlgorithm::Aes256Gcm);
//! let kept = LocalWitness {
//!     vault_id: [1; 16],
//!     generation: Generation { checkpoint: 3, sequence: 40, chain: [9; 32] },
//!     config_generation: 1,
//!     time_ms: 1_800_000_000_000,
//! };
//! let bytes = kept.encode(&keys);
//! assert_eq!(LocalWitness::decode(&bytes, &keys).unwrap(), kept);
//! ```

use std::collections::HashMap;
use std::fmt;

use atrest_core::labels::domain;

use crate::bytes::{Put, Reader};
use crate::error::MetaError;
use crate::keys::MetaKeys;
use crate::log::{BackingSegments, Body};
use crate::record::Timestamp;
use crate::store::{Store, nanos};
use crate::superblock::{Generation, MAX_ACKNOWLEDGED, Superblock};

pub const MAGIC: &[u8; 8] = b"ATRESTWT";
pub const VERSION: u16 = 1;
/// Bytes before the MAC.
const BODY_LEN: usize = 90;
/// The whole file.
pub const LEN: usize = BODY_LEN + 32;

/// What the local witness file holds: the generation of a durable
/// checkpoint of vault `vault_id`, with its config generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalWitness {
    pub vault_id: [u8; 16],
    pub generation: Generation,
    pub config_generation: u64,
    /// Unix milliseconds when written; informational.
    pub time_ms: u64,
}

/// Why a local witness file was not accepted. Coarse on purpose: the file
/// is either exactly what this host wrote for this vault or it is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("it is {0} bytes long, not {LEN}")]
    Length(usize),
    #[error("it is not a local witness file (wrong magic)")]
    Magic,
    #[error("it has version {0}, which this atrest does not know")]
    Version(u16),
    #[error("it is the witness of another vault")]
    OtherVault,
    #[error("its MAC does not verify (changed, or written with another key)")]
    Mac,
}

impl LocalWitness {
    /// The witness of the checkpoint `superblock` records.
    pub fn of(superblock: &Superblock) -> Self {
        Self {
            vault_id: superblock.vault_id,
            generation: superblock.generation,
            config_generation: superblock.config_generation,
            time_ms: superblock.time_ms,
        }
    }

    /// The file's 122 bytes, MAC'd with `keys`' `K_witness`.
    pub fn encode(&self, keys: &MetaKeys) -> [u8; LEN] {
        let mut out = Vec::with_capacity(LEN);
        out.put(MAGIC)
            .put_u16(VERSION)
            .put(&self.vault_id)
            .put(&self.generation.encode())
            .put_u64(self.config_generation)
            .put_u64(self.time_ms);
        debug_assert_eq!(out.len(), BODY_LEN);
        let mac = keys.witness().sign(&mac_input(&out));
        out.put(&mac);
        out.try_into().expect("122 bytes")
    }

    /// Reads a witness file of the vault `keys` belong to; anything but
    /// exactly what [`Self::encode`] wrote with these keys is refused.
    pub fn decode(bytes: &[u8], keys: &MetaKeys) -> Result<Self, WitnessError> {
        if bytes.len() != LEN {
            return Err(WitnessError::Length(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        if r.array::<8>() != Some(*MAGIC) {
            return Err(WitnessError::Magic);
        }
        let version = r.u16().expect("length checked");
        if version != VERSION {
            return Err(WitnessError::Version(version));
        }
        keys.witness()
            .verify(&mac_input(&bytes[..BODY_LEN]), &bytes[BODY_LEN..])
            .map_err(|_| WitnessError::Mac)?;
        let vault_id: [u8; 16] = r.array().expect("length checked");
        if vault_id != *keys.vault_id() {
            return Err(WitnessError::OtherVault);
        }
        Ok(Self {
            vault_id,
            generation: Generation {
                checkpoint: r.u64().expect("length checked"),
                sequence: r.u64().expect("length checked"),
                chain: r.array().expect("length checked"),
            },
            config_generation: r.u64().expect("length checked"),
            time_ms: r.u64().expect("length checked"),
        })
    }
}

fn mac_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain::LOCAL_WITNESS.len() + body.len());
    input.extend_from_slice(domain::LOCAL_WITNESS);
    input.extend_from_slice(body);
    input
}

/// How a vault's state stands against a witnessed generation `W`
/// (§16.17.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// `W` is the vault's generation or in its lineage, and the config is
    /// not older than `W`'s.
    Current,
    /// The vault is behind `W`: a lower sequence number, or an older
    /// config. An earlier copy was put back.
    Older,
    /// The vault is not behind `W` yet does not descend from it: another
    /// copy of the vault was written meanwhile.
    Forked,
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Current => "current",
            Self::Older => "older",
            Self::Forked => "forked",
        })
    }
}

/// Judges the authenticated `superblock` against the witnessed `W`.
pub fn judge(superblock: &Superblock, witnessed: &LocalWitness) -> Standing {
    let w = &witnessed.generation;
    let config_older = superblock.config_generation < witnessed.config_generation;
    if superblock.lineage().any(|g| g == w) && !config_older {
        Standing::Current
    } else if superblock.generation.sequence < w.sequence || config_older {
        Standing::Older
    } else {
        Standing::Forked
    }
}

/// Who acknowledged a generation (the `witness` and audit key fields of a
/// `WITNESSED` record, §16.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Witness {
    /// A key authority, by its audit log key.
    Authority([u8; 32]),
    /// This host's local witness file (§16.17.5).
    Local,
}

impl Witness {
    /// The record's fields: the witness byte and the audit key.
    fn fields(self) -> (u8, [u8; 32]) {
        match self {
            Self::Authority(key) => (1, key),
            Self::Local => (2, [0; 32]),
        }
    }

    /// The witness a genuine record names (the body's checks let only
    /// 1 and 2, a local one without a key, through).
    fn of_record(witness: u8, audit_key: [u8; 32]) -> Self {
        if witness == 1 {
            Self::Authority(audit_key)
        } else {
            Self::Local
        }
    }
}

/// The acknowledged generations the next checkpoint lists (§16.5, §16.17):
/// newest first, at most [`MAX_ACKNOWLEDGED`]. A witness that acknowledges
/// a newer generation no longer needs its older one, which leaves the list
/// unless another witness holds it too; the witnesses are known for what
/// was acknowledged since the store opened (this process, or the log it
/// replayed), since the superblock does not name them. Live operation and
/// replay run the same [`Self::add`], so a replay rebuilds the list the
/// records were written from, but for an older one of a witness that
/// acknowledged it before the replayed range: kept, a true ancestor still.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acknowledged {
    list: Vec<Generation>,
    by: HashMap<Witness, Generation>,
}

impl Acknowledged {
    /// The list a superblock holds.
    pub(crate) fn new(list: &[Generation]) -> Self {
        Self {
            list: list.to_vec(),
            by: HashMap::new(),
        }
    }

    pub(crate) fn list(&self) -> &[Generation] {
        &self.list
    }

    /// Whether `witness` acknowledging `w` changes anything (a heartbeat's
    /// acknowledgement of the same generation does not). What was
    /// acknowledged since the store opened stays ahead of what the
    /// superblock listed before, so it need not move to the front again.
    fn is_news(&self, witness: Witness, w: Generation) -> bool {
        self.by.get(&witness) != Some(&w) || !self.list.contains(&w)
    }

    /// `w` first, `witness`'s older acknowledgement dropped.
    fn add(&mut self, witness: Witness, w: Generation) {
        if let Some(old) = self.by.insert(witness, w)
            && old != w
            && !self.by.values().any(|g| *g == old)
        {
            self.list.retain(|g| *g != old);
        }
        self.list.retain(|g| *g != w);
        self.list.insert(0, w);
        self.list.truncate(MAX_ACKNOWLEDGED);
    }

    /// A replayed `WITNESSED` record.
    pub(crate) fn replay(&mut self, body: &Body) {
        if let Body::Witnessed {
            k,
            s,
            h,
            witness,
            audit_key,
        } = body
        {
            let w = Generation {
                checkpoint: *k,
                sequence: *s,
                chain: *h,
            };
            self.add(Witness::of_record(*witness, *audit_key), w);
        }
    }
}

impl Store {
    /// `witness` acknowledged `witnessed`, a generation this vault descends
    /// from (§16.17.4: an authority's `W` the mount's check found in the
    /// lineage, or a report it accepted; the local witness's file while it
    /// cannot be rewritten): a `WITNESSED` record, so that every later
    /// superblock lists it as acknowledged, however many checkpoints pass.
    /// Durable with the next sync or checkpoint; until then the
    /// superblock the check judged is unchanged, so a crash loses nothing
    /// of the standing. Returns whether a record was written (not for an
    /// acknowledgement this witness already made since the store opened
    /// and the list still holds).
    pub fn acknowledge(
        &mut self,
        witnessed: Generation,
        witness: Witness,
        now: Timestamp,
    ) -> Result<bool, MetaError> {
        self.usable()?;
        if !self.acknowledged.is_news(witness, witnessed) {
            return Ok(false);
        }
        let (id, audit_key) = witness.fields();
        let body = Body::Witnessed {
            k: witnessed.checkpoint,
            s: witnessed.sequence,
            h: witnessed.chain,
            witness: id,
            audit_key,
        };
        let mut segments = BackingSegments::new(self.backing.as_ref());
        let appended = self
            .log
            .append(&self.keys, &mut segments, nanos(now), &body, &[])
            .and_then(|_| self.log.write_out(&mut segments));
        if appended.is_err() {
            self.failed = true;
        }
        appended?;
        self.acknowledged.add(witness, witnessed);
        Ok(true)
    }

    /// The generations the next checkpoint lists as acknowledged.
    pub fn acknowledged(&self) -> &[Generation] {
        self.acknowledged.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::superblock::tests::{generation, keys, sample};
    use atrest_core::{ContentAlgorithm, SecretKey};

    /// The vault of `superblock::tests::keys` and `sample`.
    const VAULT: [u8; 16] = [2; 16];

    fn witness(k: u64, config: u64) -> LocalWitness {
        LocalWitness {
            vault_id: VAULT,
            generation: generation(k),
            config_generation: config,
            time_ms: 5,
        }
    }

    #[test]
    fn round_trips_and_refuses_any_other_bytes() {
        let ours = keys();
        let w = witness(4, 2);
        let bytes = w.encode(&ours);
        assert_eq!(bytes.len(), LEN);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(LocalWitness::decode(&bytes, &ours), Ok(w));
        for i in 0..LEN {
            let mut flipped = bytes;
            flipped[i] ^= 1;
            assert!(LocalWitness::decode(&flipped, &ours).is_err(), "byte {i}");
        }
        assert_eq!(
            LocalWitness::decode(&bytes[..LEN - 1], &ours),
            Err(WitnessError::Length(LEN - 1))
        );
        // Another vault's keys: the MAC fails first.
        let theirs = MetaKeys::derive(
            &SecretKey::from_bytes([1; 32]),
            [3; 16],
            ContentAlgorithm::Aes256Gcm,
        );
        assert_eq!(
            LocalWitness::decode(&bytes, &theirs),
            Err(WitnessError::Mac)
        );
        let mut version = bytes;
        version[9] = 2;
        assert_eq!(
            LocalWitness::decode(&version, &ours),
            Err(WitnessError::Version(2))
        );
    }

    fn superblock(k: u64, recent: &[u64], acknowledged: &[u64], config: u64) -> Superblock {
        let mut sb = sample(k);
        sb.recent = recent.iter().map(|&k| generation(k)).collect();
        sb.acknowledged = acknowledged.iter().map(|&k| generation(k)).collect();
        sb.config_generation = config;
        sb
    }

    #[test]
    fn judges_current_older_and_forked() {
        let w = witness(5, 2);
        assert_eq!(judge(&superblock(5, &[4], &[], 2), &w), Standing::Current);
        assert_eq!(
            judge(&superblock(7, &[6, 5], &[], 2), &w),
            Standing::Current
        );
        assert_eq!(
            judge(&superblock(40, &[39], &[5], 3), &w),
            Standing::Current
        );
        // An earlier copy put back.
        assert_eq!(judge(&superblock(4, &[3], &[], 2), &w), Standing::Older);
        // The same metadata with an older config.
        assert_eq!(judge(&superblock(5, &[4], &[], 1), &w), Standing::Older);
        // Ahead, but not descended from W: another copy went on.
        assert_eq!(judge(&superblock(7, &[6], &[], 2), &w), Standing::Forked);
        let mut other = superblock(5, &[4], &[], 2);
        other.generation.chain = [0xee; 32];
        assert_eq!(judge(&other, &w), Standing::Forked);
    }
}
