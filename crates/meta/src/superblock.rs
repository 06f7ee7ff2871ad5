//! The superblock (docs/format.md §16.5): pages 0 and 1 of `atrest.meta`,
//! plaintext and HMAC'd, the root of everything else. Checkpoint `k` is
//! written to page `k mod 2`, so the previous one survives a torn write;
//! the valid one with the higher `k` wins.

use atrest_core::{ContentAlgorithm, labels::domain};

use crate::bytes::{Put, Reader, is_zero};
use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;
use crate::page::{PAGE_SIZE, PageRef};

pub const MAGIC: &[u8; 8] = b"ATRESTSB";
pub const VERSION: u16 = 2;
/// Most recent checkpoints a superblock lists.
pub const MAX_RECENT: usize = 32;
/// Most witness-acknowledged generations a superblock lists.
pub const MAX_ACKNOWLEDGED: usize = 32;
pub const MAX_OBJECT_DEPTH: u8 = 8;
pub const MAX_BITMAP_DEPTH: u8 = 4;
/// Bytes before the lists.
const FIXED_LEN: usize = 284;
const GENERATION_LEN: usize = 48;
const MAC_LEN: usize = 32;

/// One state of the vault as a checkpoint names it: checkpoint `k`, the
/// last log sequence number `S` it includes, and the chain hash `h_S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generation {
    pub checkpoint: u64,
    pub sequence: u64,
    pub chain: [u8; 32],
}

impl Generation {
    pub fn encode(&self) -> [u8; GENERATION_LEN] {
        let mut out = Vec::with_capacity(GENERATION_LEN);
        out.put_u64(self.checkpoint)
            .put_u64(self.sequence)
            .put(&self.chain);
        out.try_into().expect("48 bytes")
    }

    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            checkpoint: r.u64()?,
            sequence: r.u64()?,
            chain: r.array()?,
        })
    }
}

/// Whether the vault was left cleanly (§16.5 byte 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Unmounted after a checkpoint.
    Clean = 1,
    /// Mounted, or the mount crashed.
    Open = 2,
    /// `atrest migrate` is converting a format 1 vault.
    Migrating = 3,
    /// A crash was recovered and no complete `fsck` has run since.
    Recovered = 4,
}

impl State {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            1 => Self::Clean,
            2 => Self::Open,
            3 => Self::Migrating,
            4 => Self::Recovered,
            _ => return None,
        })
    }
}

/// A root of one tree and its depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub reference: PageRef,
    pub depth: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub algorithm: ContentAlgorithm,
    pub state: State,
    pub vault_id: [u8; 16],
    /// The latest generation: checkpoint `k`, sequence `S`, chain `h_S`.
    pub generation: Generation,
    /// Where the `CHECKPOINT` record starting the replay range is.
    pub replay_segment: u64,
    pub replay_offset: u64,
    pub config_generation: u64,
    pub config_hash: [u8; 32],
    pub object_table: Root,
    pub bitmap: Root,
    pub page_count: u64,
    pub next_object_id: u64,
    pub pending: PageRef,
    /// Unix milliseconds when written; informational.
    pub time_ms: u64,
    /// Older checkpoints, newest first, not including this one.
    pub recent: Vec<Generation>,
    /// Generations a witness acknowledged, newest first.
    pub acknowledged: Vec<Generation>,
}

impl Superblock {
    /// This checkpoint's generation, then its `recent` and `acknowledged`
    /// lists (§16.17): every generation the vault descends from that it
    /// can still show.
    pub fn lineage(&self) -> impl Iterator<Item = &Generation> {
        std::iter::once(&self.generation)
            .chain(&self.recent)
            .chain(&self.acknowledged)
    }

    /// The page (0 or 1) checkpoint `k` is written to.
    pub fn page_of(checkpoint: u64) -> u64 {
        checkpoint % 2
    }

    /// The superblock's 4,096 bytes, MAC'd.
    pub fn encode(&self, keys: &MetaKeys) -> Box<[u8; PAGE_SIZE]> {
        assert!(self.recent.len() < MAX_RECENT, "lineage overflow");
        assert!(self.acknowledged.len() <= MAX_ACKNOWLEDGED);
        let mut b = Vec::with_capacity(PAGE_SIZE);
        b.put(MAGIC)
            .put_u16(VERSION)
            .put_u8(self.algorithm.id())
            .put_u8(self.state as u8)
            .put_u32(PAGE_SIZE as u32)
            .put(&self.vault_id)
            .put_u64(self.generation.checkpoint)
            .put_u64(self.generation.sequence)
            .put(&self.generation.chain)
            .put_u64(self.replay_segment)
            .put_u64(self.replay_offset)
            .put_u64(self.config_generation)
            .put(&self.config_hash)
            .put(&self.object_table.reference.encode())
            .put_u8(self.object_table.depth)
            .put(&self.bitmap.reference.encode())
            .put_u8(self.bitmap.depth)
            .put_u64(self.page_count)
            .put_u64(self.next_object_id)
            .put(&self.pending.encode())
            .put_u64(self.time_ms)
            .put_u8(u8::try_from(self.recent.len() + 1).expect("≤ 32"))
            .put_u8(u8::try_from(self.acknowledged.len()).expect("≤ 32"));
        debug_assert_eq!(b.len(), FIXED_LEN);
        b.put(&self.generation.encode());
        for g in self.recent.iter().chain(&self.acknowledged) {
            b.put(&g.encode());
        }
        let mac = keys.superblock().sign(&mac_input(&b));
        b.put(&mac);
        b.resize(PAGE_SIZE, 0);
        b.into_boxed_slice().try_into().expect("4096 bytes")
    }

    /// Reads superblock page `index` (0 or 1): structure, vault id and
    /// algorithm against the config's, then the MAC.
    pub fn open(keys: &MetaKeys, index: u64, bytes: &[u8; PAGE_SIZE]) -> Result<Self, MetaError> {
        let location = Location::Superblock(index);
        let bad = |reason: &str| MetaError::corrupt(location.clone(), reason.to_owned());
        let mut r = Reader::new(bytes);
        if r.take(8) != Some(&MAGIC[..]) {
            return Err(bad("not a superblock (bad magic)"));
        }
        let version = r.u16().expect("in page");
        if version != VERSION {
            return Err(bad(&format!(
                "superblock version {version}; this atrest reads version {VERSION}"
            )));
        }
        // The fixed part is inside the page: the reads below cannot fail.
        let algorithm = r.u8().expect("in page");
        let state = r.u8().expect("in page");
        let page_size = r.u32().expect("in page");
        let vault_id: [u8; 16] = r.array().expect("in page");
        if vault_id != *keys.vault_id() {
            return Err(MetaError::Auth(location.clone()));
        }
        let Some(algorithm) =
            ContentAlgorithm::from_id(algorithm).filter(|a| *a == keys.algorithm())
        else {
            return Err(MetaError::Auth(location.clone()));
        };
        // Past this point everything is checked by the MAC first: an
        // attacker's edits are authentication failures, not parse errors.
        let recent_count = usize::from(bytes[282]);
        let ack_count = usize::from(bytes[283]);
        if !(1..=MAX_RECENT).contains(&recent_count) || ack_count > MAX_ACKNOWLEDGED {
            return Err(MetaError::Auth(location.clone()));
        }
        let mac_at = FIXED_LEN + GENERATION_LEN * (recent_count + ack_count);
        keys.superblock()
            .verify(
                &mac_input(&bytes[..mac_at]),
                &bytes[mac_at..mac_at + MAC_LEN],
            )
            .map_err(|_| MetaError::Auth(location.clone()))?;
        if !is_zero(&bytes[mac_at + MAC_LEN..]) {
            return Err(bad("bytes after the MAC are not zero"));
        }
        let state = State::from_id(state).ok_or_else(|| bad("unknown state"))?;
        if page_size != PAGE_SIZE as u32 {
            return Err(bad("page size is not 4096"));
        }
        let generation = Generation::read(&mut r).expect("in page");
        let replay_segment = r.u64().expect("in page");
        let replay_offset = r.u64().expect("in page");
        let config_generation = r.u64().expect("in page");
        let config_hash = r.array().expect("in page");
        let object_reference = PageRef::read(&mut r).ok_or_else(|| bad("bad object table root"))?;
        let object_depth = r.u8().expect("in page");
        let bitmap_reference = PageRef::read(&mut r).ok_or_else(|| bad("bad bitmap root"))?;
        let bitmap_depth = r.u8().expect("in page");
        let page_count = r.u64().expect("in page");
        let next_object_id = r.u64().expect("in page");
        let pending = PageRef::read(&mut r).ok_or_else(|| bad("bad pending work reference"))?;
        let time_ms = r.u64().expect("in page");
        r.take(2).expect("in page");
        if object_depth > MAX_OBJECT_DEPTH || bitmap_depth > MAX_BITMAP_DEPTH {
            return Err(bad("tree deeper than the format allows"));
        }
        if bitmap_reference.is_null() || page_count < 2 || next_object_id < 2 {
            return Err(bad("no bitmap, or counts below the minimum"));
        }
        let mut lists =
            (0..recent_count + ack_count).map(|_| Generation::read(&mut r).expect("in page"));
        let first = lists.next().expect("at least one");
        if first != generation {
            return Err(bad("the newest recent generation is not this checkpoint's"));
        }
        let recent: Vec<_> = lists.by_ref().take(recent_count - 1).collect();
        let acknowledged: Vec<_> = lists.collect();
        let mut newer = generation;
        for g in &recent {
            if g.checkpoint >= newer.checkpoint || g.sequence > newer.sequence {
                return Err(bad("recent generations are not in order"));
            }
            newer = *g;
        }
        Ok(Self {
            algorithm,
            state,
            vault_id,
            generation,
            replay_segment,
            replay_offset,
            config_generation,
            config_hash,
            object_table: Root {
                reference: object_reference,
                depth: object_depth,
            },
            bitmap: Root {
                reference: bitmap_reference,
                depth: bitmap_depth,
            },
            page_count,
            next_object_id,
            pending,
            time_ms,
            recent,
            acknowledged,
        })
    }

    /// Of the two superblock pages, the valid one with the higher
    /// checkpoint number (§16.5 "Choosing"), and the other's failure if
    /// it had one.
    pub fn choose(
        keys: &MetaKeys,
        page0: &[u8; PAGE_SIZE],
        page1: &[u8; PAGE_SIZE],
    ) -> Result<(Self, Option<MetaError>), MetaError> {
        let a = Self::open(keys, 0, page0).and_then(|s| s.check_page(0));
        let b = Self::open(keys, 1, page1).and_then(|s| s.check_page(1));
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(if a.generation.checkpoint > b.generation.checkpoint {
                (a, None)
            } else {
                (b, None)
            }),
            (Ok(s), Err(e)) | (Err(e), Ok(s)) => Ok((s, Some(e))),
            (Err(a), Err(b)) => Err(MetaError::NoSuperblock(format!("{a}; {b}"))),
        }
    }

    /// Checkpoint `k` belongs in page `k mod 2`: one found in the other
    /// page was copied there.
    fn check_page(self, index: u64) -> Result<Self, MetaError> {
        if Self::page_of(self.generation.checkpoint) == index {
            Ok(self)
        } else {
            Err(MetaError::Auth(Location::Superblock(index)))
        }
    }
}

fn mac_input(bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain::SUPERBLOCK.len() + bytes.len());
    input.put(domain::SUPERBLOCK).put(bytes);
    input
}

#[cfg(test)]
pub(crate) mod tests {
    use atrest_core::SecretKey;

    use super::*;

    pub(crate) fn keys() -> MetaKeys {
        MetaKeys::derive(
            &SecretKey::from_bytes([1; 32]),
            [2; 16],
            ContentAlgorithm::Aes256Gcm,
        )
    }

    pub(crate) fn generation(k: u64) -> Generation {
        Generation {
            checkpoint: k,
            sequence: 10 * k,
            chain: [k as u8; 32],
        }
    }

    pub(crate) fn sample(k: u64) -> Superblock {
        Superblock {
            algorithm: ContentAlgorithm::Aes256Gcm,
            state: State::Open,
            vault_id: [2; 16],
            generation: generation(k),
            replay_segment: k,
            replay_offset: 80,
            config_generation: 3,
            config_hash: [4; 32],
            object_table: Root {
                reference: PageRef::to_sealed(2, &[5; PAGE_SIZE]),
                depth: 1,
            },
            bitmap: Root {
                reference: PageRef::to_sealed(3, &[6; PAGE_SIZE]),
                depth: 0,
            },
            page_count: 4,
            next_object_id: 2,
            pending: PageRef::NULL,
            time_ms: 1_700_000_000_000,
            recent: (1..k).rev().map(generation).take(MAX_RECENT - 1).collect(),
            acknowledged: vec![generation(1)],
        }
    }

    #[test]
    fn round_trips_with_full_lists() {
        let keys = keys();
        for k in [1, 2, 31, 32, 100] {
            let sb = sample(k);
            let bytes = sb.encode(&keys);
            assert_eq!(Superblock::open(&keys, k % 2, &bytes).unwrap(), sb);
        }
    }

    #[test]
    fn every_flipped_byte_before_the_end_of_the_mac_fails() {
        let keys = keys();
        let sb = sample(3);
        let bytes = sb.encode(&keys);
        let used = FIXED_LEN + GENERATION_LEN * (sb.recent.len() + 1 + 1) + MAC_LEN;
        for i in 0..used {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Superblock::open(&keys, 1, &bad).is_err(), "byte {i}");
        }
        let mut bad = bytes.clone();
        bad[PAGE_SIZE - 1] = 1;
        assert!(Superblock::open(&keys, 1, &bad).is_err());
    }

    #[test]
    fn the_newer_valid_superblock_wins_and_a_torn_one_falls_back() {
        let keys = keys();
        let (s4, s5) = (sample(4).encode(&keys), sample(5).encode(&keys));
        let (chosen, other) = Superblock::choose(&keys, &s4, &s5).unwrap();
        assert_eq!(chosen.generation.checkpoint, 5);
        assert!(other.is_none());
        let mut torn = s5.clone();
        torn[300..].fill(0);
        let (chosen, other) = Superblock::choose(&keys, &s4, &torn).unwrap();
        assert_eq!(chosen.generation.checkpoint, 4);
        assert!(other.is_some());
        // A copy of checkpoint 4 in page 1 is not a checkpoint.
        assert!(Superblock::choose(&keys, &torn, &s4).is_err());
    }

    #[test]
    fn another_vaults_superblock_is_refused() {
        let other = MetaKeys::derive(
            &SecretKey::from_bytes([1; 32]),
            [3; 16],
            ContentAlgorithm::Aes256Gcm,
        );
        let bytes = sample(2).encode(&keys());
        assert!(Superblock::open(&other, 0, &bytes).unwrap_err().is_auth());
    }
}
