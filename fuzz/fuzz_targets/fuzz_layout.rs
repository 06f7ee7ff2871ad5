//! Size arithmetic: `plaintext_size(ciphertext_size(p)) == Some(p)` for
//! plaintext sizes below 2^56, and `plaintext_size` never panics on any
//! u64, for both content algorithms and for arbitrary (small) layouts.
#![no_main]

use atrest_core::ContentAlgorithm;
use atrest_vault::BLOCK_SIZE;
use atrest_vault::layout::{HEADER_LEN, Layout};
use libfuzzer_sys::fuzz_target;

const PLAIN_BOUND: u64 = 1 << 56;

fn word(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = data.get(i * 8..) {
        let n = src.len().min(8);
        b[..n].copy_from_slice(&src[..n]);
    }
    u64::from_le_bytes(b)
}

fn check(layout: Layout, plain: u64, cipher: u64) {
    // Round trip below the bound.
    let p = plain % PLAIN_BOUND;
    let c = layout.ciphertext_size(p);
    assert_eq!(layout.plaintext_size(c), Some(p), "{layout:?} p={p} c={c}");
    assert!(c >= p + HEADER_LEN);
    if p > 0 {
        assert!(
            layout.ciphertext_size(p - 1) < c,
            "{layout:?} not increasing at {p}"
        );
        assert!(c - layout.ciphertext_size(p - 1) <= 1 + layout.overhead);
    }
    assert!(layout.block_count(p) * layout.block >= p);

    // Any backing size.
    match layout.plaintext_size(cipher) {
        // An empty backing file (no header yet: a crash between create and
        // the header write) reads as empty, like the 18-byte header alone.
        Some(0) if cipher == 0 => {}
        Some(q) => {
            assert!(q <= cipher);
            assert_eq!(
                layout.ciphertext_size(q),
                cipher,
                "{layout:?} c={cipher} -> {q}"
            );
        }
        None => {
            // Only a truncated header or a block no longer than its overhead.
            assert!(cipher != 0);
            if cipher >= HEADER_LEN {
                let body = cipher - HEADER_LEN;
                let rest = body % layout.sealed_block();
                assert!(
                    rest > 0 && rest <= layout.overhead,
                    "{layout:?} c={cipher} refused"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (plain, cipher, shape) = (word(data, 0), word(data, 1), word(data, 2));
    for algorithm in [
        ContentAlgorithm::Aes256Gcm,
        ContentAlgorithm::XChaCha20Poly1305,
    ] {
        check(Layout::new(BLOCK_SIZE, algorithm.overhead()), plain, cipher);
    }
    // Other shapes: blocks of 1 byte .. 1 MiB, 0..=64 bytes of overhead.
    let block = 1 + (shape as u32 % (1 << 20));
    let overhead = ((shape >> 32) % 65) as usize;
    check(Layout::new(block, overhead), plain, cipher);
});
