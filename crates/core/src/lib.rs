//! The cryptographic core of atrest: the only crate that names algorithms.
//!
//! Everything above it asks for a *purpose* (seal a content block, wrap a
//! master key, encrypt a file name) and gets the one construction the format
//! specifies for it. The key types are [`SecretKey`] (32 bytes, zeroized on
//! drop, `Debug` prints `[redacted]`), [`BlockCipher`] (a keyed AEAD for
//! content blocks and small metadata), and [`NameCipher`] (deterministic
//! AES-SIV for file names). Every HKDF `info` string lives in [`labels`].
//!
//! ```
//! use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey, labels};
//!
//! let master = SecretKey::random();
//! let key = master.derive(b"", labels::CONTENT_KEY);
//! let cipher = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &key);
//! let mut block = b"hello".to_vec();
//! let sealed = cipher.seal(b"aad", &block);
//! let opened = cipher.open(b"aad", &sealed).unwrap();
//! assert_eq!(opened, block);
//! block.clear();
//! ```

mod aead;
mod canonical;
mod encoding;
#[allow(unsafe_code)]
mod fork;
mod kdf;
pub mod labels;
mod mac;
mod names;
mod secret;

pub use aead::{BlockCipher, ContentAlgorithm};
pub use canonical::Canonical;
pub use encoding::{
    base64url_array, from_base64url, from_base64url_bounded, to_base64url, to_base64url_in,
};
pub use kdf::{Argon2Params, ParamsError, derive_from_passphrase};
pub use mac::{HeaderMac, KeyedHash, MAC_LEN};
pub use names::{NAME_KEY_LEN, NameCipher};
pub use secret::{SecretBuffer, SecretBytes, SecretKey};

/// Authentication failed: the ciphertext, its associated data or the key is
/// wrong. Deliberately carries no detail, so callers cannot build an oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// Fills `out` from the operating system's CSPRNG (through aws-lc).
pub fn fill_random(out: &mut [u8]) {
    // aws-lc's RNG reads getrandom(2); it only fails if the kernel cannot
    // provide entropy, and then nothing in atrest may go on.
    aws_lc_rs::rand::fill(out).expect("the kernel random number generator failed");
}

/// Fills a nonce from a per-thread buffer of CSPRNG output, refilled 4 KiB
/// at a time: one RNG call per ~340 seals instead of one per seal (which
/// cost as much as sealing the 4 KiB block). Nonces are public, so holding
/// unused ones in memory exposes nothing. The buffer is discarded in a
/// forked child (its fork generation differs, [`fork::generation`]: one
/// atomic load, where a `getpid` per seal cost a system call), so parent
/// and child never share one.
pub(crate) fn fill_nonce(out: &mut [u8]) {
    use std::cell::RefCell;
    const POOL: usize = 4096;
    struct Pool {
        generation: u64,
        used: usize,
        bytes: [u8; POOL],
    }
    thread_local! {
        static NONCES: RefCell<Pool> = const { RefCell::new(Pool { generation: 0, used: POOL, bytes: [0; POOL] }) };
    }
    NONCES.with_borrow_mut(|pool| {
        let generation = fork::generation();
        if pool.generation != generation || pool.used + out.len() > POOL {
            fill_random(&mut pool.bytes);
            pool.used = 0;
            pool.generation = generation;
        }
        out.copy_from_slice(&pool.bytes[pool.used..pool.used + out.len()]);
        // Never hand out the same bytes twice.
        pool.bytes[pool.used..pool.used + out.len()].fill(0);
        pool.used += out.len();
    });
}

/// Returns `N` random bytes.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// SHA-256 of `data`, for content addressing of public values (long names).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// SHA-256 of the concatenation of `parts`, without copying them together.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Compares two byte strings in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
