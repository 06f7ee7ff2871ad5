//! The key authority protocol of atrest, as math and wire types: no I/O,
//! no clock, no storage. The host (`atrest unlock`) and the authority
//! (`atrest keyd`) both build on it.
//!
//! - **Blinded exchange** ([`HostSecret`], [`enroll`], [`RemoteBinding`],
//!   [`UnblindingState`]): McCallum–Relyea on ristretto255, as in Tang. The
//!   authority holds a per-host secret `s`; a remote keyslot stores only
//!   public points; the authority never sees the keyslot's key.
//! - **Signed requests** ([`HostIdentity`], [`UnlockRequest`], [`verify`],
//!   [`VerifiedRequest`]): every request is signed by the host's Ed25519
//!   key, and only a verified request can be answered. A planned reboot is
//!   announced with a [`SignedRebootNotice`] ([`verify_reboot`]); a
//!   format 2 vault's newest generation with a [`SignedGenerationReport`]
//!   ([`verify_report`]).
//! - **Threshold** ([`split`], [`combine`], [`Share`]): k-of-n authorities,
//!   with authenticated Shamir shares.
//!
//! One unlock, end to end:
//!
//! ```
//! use atrest_remote::*;
//!
//! // Authority, at host registration: a secret for this host.
//! let secret = HostSecret::generate();
//! let host = HostIdentity::generate();
//!
//! // Host, at enrollment: bind a keyslot; wrap the vault key under `key`.
//! let (binding, key) = enroll(&secret.public_key());
//!
//! // Host, at boot: blind, sign, send.
//! let (blinded, state) = binding.blind();
//! let signed = host.sign(UnlockRequest {
//!     host_id: HostId::new("web-1").unwrap(),
//!     vault_id: [7; 16],
//!     keyslot: 2,
//!     key_id: binding.key_id(),
//!     blinded,
//!     nonce: RequestNonce::random(),
//!     timestamp: 1_800_000_000,
//!     boot_id: BootId::new("0b5c5e4e-8a8d-4f43-9a4b-4d7c3f2a1b00").unwrap(),
//!     generation: None,
//! });
//!
//! // Authority: verify (signature, clock skew), apply policy, answer.
//! let verified = verify(&signed, &host.public_key(), 1_800_000_003, 300).unwrap();
//! let response = secret.respond(&verified).unwrap();
//!
//! // Host: unblind to the same key.
//! let unlocked = state.unblind(&response).unwrap();
//! assert_eq!(unlocked.expose(), key.expose());
//! ```
//!
//! With k-of-n authorities, the keyslot's secret is [`split`] and share `i`
//! is wrapped under the key of authority `i`'s exchange; any `k` answers
//! unwrap enough shares to [`combine`].

mod encoding;
mod exchange;
mod generation;
mod identity;
mod request;
mod rng;
mod threshold;

pub use encoding::{from_base64url, to_base64url};
pub use exchange::{
    BindingPoint, BlindedRequest, BlindedResponse, ExchangeError, ExchangePublicKey, HostSecret,
    KeyId, RemoteBinding, UnblindingState, enroll, enroll_with_rng,
};
pub use generation::{
    Generation, GenerationClaim, GenerationReport, Lineage, MAX_LINEAGE, REPORT_VERSION,
    ReportReason, ReportedState, SignedGenerationReport, VerifiedReport, verify_report,
};
pub use identity::{HostIdentity, HostPublicKey, PublicKeyError, RequestSignature};
pub use request::{
    BindRequest, BootId, BootTicket, HostId, InvalidField, REQUEST_VERSION, REQUEST_VERSION_CLAIM,
    RebootNotice, RequestError, RequestNonce, SignedBindRequest, SignedRebootNotice,
    SignedUnlockRequest, UnlockRequest, VerifiedRequest, verify, verify_bind, verify_reboot,
};
pub use rng::SystemRng;
pub use threshold::{SHARE_LEN, SHARE_VERSION, Share, ThresholdError, combine, split};
