//! Offset arithmetic of format 2 files (docs/format.md §16.9), kept apart
//! from the cryptography so it is tested on its own: every block is a
//! full 4,096 plaintext bytes sealed into 4,096 ciphertext bytes in the
//! data file (nonce and tag live in the map entry), so plaintext offset
//! and data file offset are the same number.

use atrest_core::ContentAlgorithm;

/// Plaintext bytes of a block, and ciphertext bytes of it in the data
/// file.
pub const BLOCK: u64 = 4096;

/// Block holding plaintext byte `offset`.
pub fn block_of(offset: u64) -> u64 {
    offset / BLOCK
}

/// Blocks covering a file of `size` bytes (the map's length).
pub fn blocks_for(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// Bytes of the data file of a file of `size` bytes without holes.
pub fn data_file_len(size: u64) -> u64 {
    blocks_for(size) * BLOCK
}

/// Map entries kept in the object record (`INLINE`): 3 (GCM) or 2.
pub fn inline_blocks(algorithm: ContentAlgorithm) -> u64 {
    atrest_meta::record::inline_blocks(algorithm)
}

/// Entries per block map leaf: 126 (GCM) or 84.
pub fn entries_per_leaf(algorithm: ContentAlgorithm) -> u64 {
    atrest_meta::blocks::entries_per_leaf(algorithm)
}

/// References per block map index page.
pub const MAP_FANOUT: u64 = 101;

/// Metadata pages of the block map of a file of `size` bytes with every
/// block sealed: 0 while the map is inline, else its leaves and the
/// index pages above them.
pub fn map_pages(size: u64, algorithm: ContentAlgorithm) -> u64 {
    let blocks = blocks_for(size);
    if blocks <= inline_blocks(algorithm) {
        return 0;
    }
    let per_leaf = entries_per_leaf(algorithm);
    let mut level = blocks.div_ceil(per_leaf);
    let mut pages = level;
    let mut span = per_leaf;
    while span < blocks {
        span = span.saturating_mul(MAP_FANOUT);
        level = level.div_ceil(MAP_FANOUT);
        pages += level;
    }
    pages
}

/// The blocks a write of `len` bytes at `offset` touches, and which of
/// them it only partly covers (those are read, changed and resealed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    /// One past the last block.
    pub end: u64,
    /// The first block is covered only in part.
    pub partial_first: bool,
    /// The last block is covered only in part (the first, if only one).
    pub partial_last: bool,
}

impl Span {
    /// `None` for an empty write.
    pub fn of(offset: u64, len: u64) -> Option<Self> {
        if len == 0 {
            return None;
        }
        let end_byte = offset.checked_add(len)?;
        let first = block_of(offset);
        let end = blocks_for(end_byte);
        Some(Self {
            first,
            end,
            partial_first: !offset.is_multiple_of(BLOCK) || end_byte < (first + 1) * BLOCK,
            partial_last: !end_byte.is_multiple_of(BLOCK) || offset > (end - 1) * BLOCK,
        })
    }

    /// Whether block `n` of the span is covered only in part.
    pub fn partial(&self, n: u64) -> bool {
        (n == self.first && self.partial_first) || (n + 1 == self.end && self.partial_last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM: ContentAlgorithm = ContentAlgorithm::Aes256Gcm;
    const XCHACHA: ContentAlgorithm = ContentAlgorithm::XChaCha20Poly1305;

    /// The worked sizes of format.md §16.9.
    #[test]
    fn worked_sizes_of_the_format() {
        let rows: [(u64, u64, u64, u64); 8] = [
            (0, 0, 0, 0),
            (1, 4096, 0, 0),
            (4096, 4096, 0, 0),
            (5000, 8192, 0, 0),
            (12_288, 12_288, 0, 1),
            (12_289, 16_384, 1, 1),
            (1 << 20, 1 << 20, 4, 5),
            (1 << 30, 1 << 30, 2103, 3153),
        ];
        for (size, data, gcm, xchacha) in rows {
            assert_eq!(data_file_len(size), data, "data file of {size}");
            assert_eq!(map_pages(size, GCM), gcm, "GCM map pages of {size}");
            assert_eq!(
                map_pages(size, XCHACHA),
                xchacha,
                "XChaCha map pages of {size}"
            );
        }
        // 8.2 MiB of map for 1 GiB: 0.80 % (GCM), 1.20 % (XChaCha).
        assert_eq!(map_pages(1 << 30, GCM) * 4096 * 10_000 / (1 << 30), 80);
        assert_eq!(map_pages(1 << 30, XCHACHA) * 4096 * 10_000 / (1 << 30), 120);
        assert_eq!(inline_blocks(GCM), 3);
        assert_eq!(inline_blocks(XCHACHA), 2);
        assert_eq!(entries_per_leaf(GCM), 126);
        assert_eq!(entries_per_leaf(XCHACHA), 84);
    }

    #[test]
    fn spans_mark_partial_blocks() {
        assert_eq!(Span::of(0, 0), None);
        let s = Span::of(0, 4096).unwrap();
        assert_eq!(
            (s.first, s.end, s.partial_first, s.partial_last),
            (0, 1, false, false)
        );
        let s = Span::of(10, 5).unwrap();
        assert_eq!((s.first, s.end, s.partial(0)), (0, 1, true));
        let s = Span::of(4000, 8192).unwrap();
        assert_eq!((s.first, s.end), (0, 3));
        assert!(s.partial(0) && !s.partial(1) && s.partial(2));
        let s = Span::of(8192, 4096 * 2).unwrap();
        assert!(!s.partial(2) && !s.partial(3));
        assert_eq!(Span::of(u64::MAX, 2), None);
    }

    /// Every offset and length in a small range: the span covers exactly
    /// the blocks that hold a written byte, and a block is partial exactly
    /// when some of its bytes are not written.
    #[test]
    fn spans_agree_with_byte_by_byte_counting() {
        for offset in (0..3 * BLOCK).step_by(512) {
            for len in (1..3 * BLOCK).step_by(511) {
                let s = Span::of(offset, len).unwrap();
                for n in 0..8 {
                    let lo = (n * BLOCK).max(offset);
                    let hi = ((n + 1) * BLOCK).min(offset + len);
                    let written = hi.saturating_sub(lo);
                    assert_eq!(written > 0, (s.first..s.end).contains(&n));
                    if written > 0 {
                        assert_eq!(s.partial(n), written < BLOCK, "{offset} {len} {n}");
                    }
                }
            }
        }
    }
}
