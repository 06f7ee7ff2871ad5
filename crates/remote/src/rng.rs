//! Randomness: one source (the kernel, through atrest-core), offered to the
//! curve and Shamir code through the `rand_core` traits they take.

use std::convert::Infallible;

use curve25519_dalek::Scalar;
use rand_core::{CryptoRng, TryCryptoRng, TryRng};
use zeroize::Zeroizing;

/// The operating system's CSPRNG (getrandom(2) through aws-lc), the same
/// source as every other key in atrest.
///
/// The `*_with_rng` functions of this crate take any [`CryptoRng`] so that
/// known-answer tests can replay fixed bytes; production code uses the
/// functions without the suffix, which use this.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRng;

impl TryRng for SystemRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_le_bytes(atrest_core::random_array()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_le_bytes(atrest_core::random_array()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        atrest_core::fill_random(dst);
        Ok(())
    }
}

impl TryCryptoRng for SystemRng {}

/// A uniformly random non-zero scalar: 64 bytes reduced modulo the group
/// order (bias below 2^-250), drawn again in the (2^-252) case of zero,
/// which would make a point the identity. The known-answer vectors pin this
/// procedure.
pub(crate) fn random_scalar<R: CryptoRng + ?Sized>(rng: &mut R) -> Scalar {
    loop {
        let mut wide = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(&mut wide[..]);
        let scalar = Scalar::from_bytes_mod_order_wide(&wide);
        if scalar != Scalar::ZERO {
            return scalar;
        }
    }
}
