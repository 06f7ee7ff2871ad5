//! Content-defined chunking whose cut points depend on a secret: FastCDC
//! (Xia et al., 2020: gear hash, normalised chunking with two masks, two
//! bytes per step) over a gear table derived from the repository key.
//!
//! The `fastcdc` crate's seed only XORs 64 bits into its public table,
//! which three known chunks reveal (Truong et al., "Breaking and Fixing
//! Content-Defined Chunking", 2025); with a table of 256 secret 64-bit
//! words, chunk lengths no longer fingerprint a known file to a reader of
//! the repository who lacks the key. The algorithm is a plain loop over
//! that table, not a cryptographic primitive.

use crate::keys::RepoKeys;

/// Chunk size limits: 512 KiB / 1 MiB / 8 MiB, as restic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl ChunkSizes {
    pub const DEFAULT: ChunkSizes = ChunkSizes {
        min: 512 << 10,
        avg: 1 << 20,
        max: 8 << 20,
    };

    pub fn valid(&self) -> bool {
        self.min >= 64
            && self.avg.is_power_of_two()
            && self.min < self.avg
            && self.avg < self.max
            && self.max <= 64 << 20
    }
}

pub struct Chunker {
    gear: [u64; 256],
    gear_ls: [u64; 256],
    sizes: ChunkSizes,
    mask_s: u64,
    mask_l: u64,
}

/// `n` one bits just below the top bit (a gear hash's high bits depend on
/// its last 63 bytes). Not the top bit itself: the two-bytes-per-step loop
/// tests even positions with the mask shifted left by one, which must not
/// lose a bit, or even and odd positions would test different masks and a
/// one-byte insert would move cut points far beyond it.
fn mask(n: u32) -> u64 {
    (!0u64 << (64 - n)) >> 1
}

impl Chunker {
    pub fn new(keys: &RepoKeys, sizes: ChunkSizes) -> Self {
        let seed = keys.gear_seed.expose();
        let mut gear = [0u64; 256];
        let mut gear_ls = [0u64; 256];
        for (i, g) in gear.iter_mut().enumerate() {
            *g = u64::from_le_bytes(seed[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            gear_ls[i] = *g << 1;
        }
        let bits = sizes.avg.trailing_zeros();
        // Normalisation level 1: harder to cut before the average, easier after.
        Self {
            gear,
            gear_ls,
            sizes,
            mask_s: mask(bits + 1),
            mask_l: mask(bits - 1),
        }
    }

    pub fn sizes(&self) -> ChunkSizes {
        self.sizes
    }

    /// The length of the chunk at the start of `data`. `data` must hold at
    /// least `max` bytes unless it is the end of the input.
    pub fn cut(&self, data: &[u8]) -> usize {
        let ChunkSizes { min, avg, max } = self.sizes;
        let mut remaining = data.len();
        if remaining <= min {
            return remaining;
        }
        let mut center = avg;
        if remaining > max {
            remaining = max;
        } else if remaining < center {
            center = remaining;
        }
        let (mask_s_ls, mask_l_ls) = (self.mask_s << 1, self.mask_l << 1);
        let mut index = min / 2;
        let mut hash = 0u64;
        while index < center / 2 {
            let a = index * 2;
            hash = (hash << 2).wrapping_add(self.gear_ls[usize::from(data[a])]);
            if hash & mask_s_ls == 0 {
                return a;
            }
            hash = hash.wrapping_add(self.gear[usize::from(data[a + 1])]);
            if hash & self.mask_s == 0 {
                return a + 1;
            }
            index += 1;
        }
        while index < remaining / 2 {
            let a = index * 2;
            hash = (hash << 2).wrapping_add(self.gear_ls[usize::from(data[a])]);
            if hash & mask_l_ls == 0 {
                return a;
            }
            hash = hash.wrapping_add(self.gear[usize::from(data[a + 1])]);
            if hash & self.mask_l == 0 {
                return a + 1;
            }
            index += 1;
        }
        remaining
    }
}

#[cfg(test)]
mod tests {
    use atrest_core::SecretKey;

    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(c: &Chunker, d: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < d.len() {
            let n = c.cut(&d[pos..]);
            assert!(n > 0);
            out.push(n);
            pos += n;
        }
        out
    }

    const SMALL: ChunkSizes = ChunkSizes {
        min: 2048,
        avg: 8192,
        max: 65536,
    };

    #[test]
    fn chunks_respect_the_limits_and_average_near_the_target() {
        let keys = RepoKeys::new(&SecretKey::random(), [1; 16]);
        let c = Chunker::new(&keys, SMALL);
        let d = data(4 << 20, 7);
        let lens = chunks(&c, &d);
        assert_eq!(lens.iter().sum::<usize>(), d.len());
        for n in &lens[..lens.len() - 1] {
            assert!((SMALL.min..=SMALL.max).contains(n), "{n}");
        }
        let mean = d.len() / lens.len();
        assert!(
            (SMALL.avg / 2..SMALL.avg * 2).contains(&mean),
            "mean {mean}"
        );
    }

    #[test]
    fn an_insert_moves_only_nearby_cut_points() {
        // A fixed key: with a random one, about 1 run in 1,000 loses a second
        // cut point (the hash restarts at each chunk's minimum and the mask
        // changes at its centre, so the first cut can move and take a few
        // chunks to fall back in step).
        let keys = RepoKeys::new(&SecretKey::from_bytes([3; 32]), [1; 16]);
        let c = Chunker::new(&keys, SMALL);
        let d = data(2 << 20, 9);
        let mut shifted = vec![0x42u8];
        shifted.extend_from_slice(&d);
        let ends = |lens: Vec<usize>, skew: usize| -> std::collections::BTreeSet<usize> {
            lens.iter()
                .scan(0, |p, n| {
                    *p += n;
                    Some(*p - skew)
                })
                .collect()
        };
        let a = ends(chunks(&c, &d), 0);
        let b = ends(chunks(&c, &shifted), 1);
        let shared = a.intersection(&b).count();
        // True for every key: once both streams cut at the same place, the
        // same bytes follow, so every later cut point is shared.
        let first = a.intersection(&b).next().expect("the streams meet again");
        assert!(a.range(first..).all(|p| b.contains(p)));
        // For this key, only the first cut point moves.
        assert!(
            shared + 1 >= a.len(),
            "{shared} of {} cut points kept",
            a.len()
        );
    }

    #[test]
    fn the_key_moves_the_cut_points() {
        let d = data(1 << 20, 3);
        let a = chunks(
            &Chunker::new(&RepoKeys::new(&SecretKey::random(), [1; 16]), SMALL),
            &d,
        );
        let b = chunks(
            &Chunker::new(&RepoKeys::new(&SecretKey::random(), [1; 16]), SMALL),
            &d,
        );
        assert_ne!(a, b);
    }
}
