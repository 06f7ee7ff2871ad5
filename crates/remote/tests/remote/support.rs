//! Helpers shared by the test modules.

use atrest_remote::{BlindedRequest, BootId, HostId, KeyId, RequestNonce, UnlockRequest};

/// A well-formed request for `X` at `timestamp`, with a fresh nonce.
pub fn request_for(blinded: BlindedRequest, key_id: KeyId, timestamp: u64) -> UnlockRequest {
    UnlockRequest {
        host_id: HostId::new("db-2").unwrap(),
        vault_id: [9; 16],
        keyslot: 1,
        key_id,
        blinded,
        nonce: RequestNonce::random(),
        timestamp,
        boot_id: BootId::new("6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10").unwrap(),
        generation: None,
    }
}
