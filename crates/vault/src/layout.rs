//! Offset arithmetic between plaintext and ciphertext, kept apart from the
//! cryptography so it can be tested exhaustively.
//!
//! A non-empty file is a header (`HEADER_LEN` bytes) followed by sealed
//! blocks; block `n` holds plaintext bytes `n*B .. (n+1)*B` and takes
//! `B + overhead` bytes, except the last, which may be shorter.

/// `version (2) ‖ file id (16)`.
pub const HEADER_LEN: u64 = 18;

/// The backing sizes at which a crash can cut a write: page boundaries. A
/// write interrupted by `SIGKILL` stops between pages of the page cache;
/// 4,096 divides every page size Linux has (4, 16 and 64 KiB).
pub const TEAR_ALIGNMENT: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Plaintext bytes per block.
    pub block: u64,
    /// Bytes a sealed block adds (nonce and tag).
    pub overhead: u64,
}

impl Layout {
    pub fn new(block: u32, overhead: usize) -> Self {
        Self {
            block: u64::from(block),
            overhead: overhead as u64,
        }
    }

    pub fn sealed_block(&self) -> u64 {
        self.block + self.overhead
    }

    /// Offset of block `n`'s sealed bytes in the backing file.
    pub fn block_offset(&self, n: u64) -> u64 {
        HEADER_LEN + n * self.sealed_block()
    }

    /// Backing size of a file with `plain` bytes (header always present).
    pub fn ciphertext_size(&self, plain: u64) -> u64 {
        let full = plain / self.block;
        let rest = plain % self.block;
        HEADER_LEN + full * self.sealed_block() + if rest > 0 { rest + self.overhead } else { 0 }
    }

    /// Plaintext size of a backing file of `cipher` bytes, or `None` if no
    /// plaintext has that size (a truncated header or block).
    pub fn plaintext_size(&self, cipher: u64) -> Option<u64> {
        if cipher == 0 {
            return Some(0);
        }
        let body = cipher.checked_sub(HEADER_LEN)?;
        let full = body / self.sealed_block();
        let rest = body % self.sealed_block();
        match rest {
            0 => Some(full * self.block),
            r if r <= self.overhead => None,
            r => Some(full * self.block + r - self.overhead),
        }
    }

    /// Whether a backing file of `cipher` bytes may end in a block that a
    /// crash tore: its size is page-aligned and falls inside a block (format
    /// §6.5). Only then does `ContentFile::torn_tail` read anything.
    pub fn may_end_torn(&self, cipher: u64) -> bool {
        cipher.is_multiple_of(TEAR_ALIGNMENT)
            && cipher
                .checked_sub(HEADER_LEN)
                .is_some_and(|body| !body.is_multiple_of(self.sealed_block()))
    }

    /// Number of blocks holding `plain` bytes.
    pub fn block_count(&self, plain: u64) -> u64 {
        plain.div_ceil(self.block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCM: Layout = Layout {
        block: 4096,
        overhead: 28,
    };

    #[test]
    fn worked_sizes_from_the_format_doc() {
        assert_eq!(GCM.ciphertext_size(0), 18);
        assert_eq!(GCM.ciphertext_size(1), 18 + 29);
        assert_eq!(GCM.ciphertext_size(4096), 18 + 4124);
        assert_eq!(GCM.ciphertext_size(5000), 18 + 4124 + 904 + 28);
        assert_eq!(GCM.ciphertext_size(1 << 20), 18 + 256 * 4124);
    }

    #[test]
    fn sizes_invert_exactly() {
        for layout in [
            GCM,
            Layout {
                block: 4096,
                overhead: 40,
            },
            Layout {
                block: 16,
                overhead: 28,
            },
        ] {
            for plain in (0..3 * layout.block + 3).chain([1 << 30, (1 << 30) + 1]) {
                let c = layout.ciphertext_size(plain);
                assert_eq!(layout.plaintext_size(c), Some(plain), "{layout:?} {plain}");
            }
        }
    }

    #[test]
    fn only_page_aligned_sizes_inside_a_block_may_end_torn() {
        for layout in [
            GCM,
            Layout {
                block: 4096,
                overhead: 40,
            },
        ] {
            assert!(!layout.may_end_torn(0));
            for c in (1..5 * 1024 * 1024)
                .filter(|c: &u64| !c.is_multiple_of(4096))
                .step_by(997)
            {
                assert!(!layout.may_end_torn(c), "{layout:?} {c}");
            }
            // No block of these layouts ends on a page boundary, so every
            // other page boundary falls inside a block.
            for c in (4096..5 * 1024 * 1024).step_by(4096) {
                assert!(layout.may_end_torn(c), "{layout:?} {c}");
            }
        }
        // A layout whose block 0 ends on a page boundary: not torn there.
        let aligned = Layout {
            block: 4078 - 28,
            overhead: 28,
        };
        assert_eq!(aligned.block_offset(1), 4096);
        assert!(!aligned.may_end_torn(4096));
        assert!(aligned.may_end_torn(8192));
    }

    #[test]
    fn impossible_sizes_are_refused() {
        for c in 1..18 {
            assert_eq!(GCM.plaintext_size(c), None);
        }
        for extra in 1..=28 {
            assert_eq!(GCM.plaintext_size(18 + 4124 + extra), None);
        }
        assert_eq!(GCM.plaintext_size(18 + 4124 + 29), Some(4097));
    }
}
