//! A "random" source that replays fixed bytes, for known-answer vectors.
//! Shared by the vector generator (`examples/make_vectors.rs`) and the
//! tests; never for real keys.

use std::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};

pub struct ReplayRng {
    bytes: Vec<u8>,
    position: usize,
}

impl ReplayRng {
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            position: 0,
        }
    }

    /// Every byte was consumed: the code under test drew exactly what the
    /// vector specifies.
    #[allow(dead_code, reason = "used by the tests, not by the vector generator")]
    pub fn is_exhausted(&self) -> bool {
        self.position == self.bytes.len()
    }
}

impl TryRng for ReplayRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let end = self.position + dst.len();
        assert!(end <= self.bytes.len(), "ReplayRng ran out of bytes");
        dst.copy_from_slice(&self.bytes[self.position..end]);
        self.position = end;
        Ok(())
    }
}

impl TryCryptoRng for ReplayRng {}
