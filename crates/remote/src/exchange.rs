//! The blinded exchange (McCallum–Relyea, as in Tang) on ristretto255.
//!
//! ```text
//! authority:  s random, S = s·G                      (HostSecret, ExchangePublicKey)
//! enroll:     c random, C = c·G, K = c·S, forget c   (RemoteBinding holds S and C)
//! unlock:     e random, X = C + e·G  ──X──▶  Y = s·X
//!             K = Y − e·S = s·c·G                    (UnblindingState::unblind)
//! wrap key:   HKDF-SHA256(ikm = encode(K), salt = encode(C) ‖ encode(S),
//!                         info = labels::REMOTE_WRAP)
//! ```
//!
//! The authority only ever sees `X`, which is uniformly distributed whatever
//! `C` is, so it learns neither `K` nor which keyslot (or whether the same
//! one) is being opened; yet without `s` nobody can turn `C` into `K`.
//! Deleting `s` is crypto-erase for every keyslot bound to it.
//!
//! ristretto255 rather than X25519 because the exchange adds points, and a
//! prime-order group with canonical encodings leaves no cofactor or
//! small-subgroup cases to check.

use std::fmt;

use atrest_core::{SecretKey, labels};
use curve25519_dalek::Scalar;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::traits::IsIdentity;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::encoding::{from_base64url, to_base64url};
use crate::request::VerifiedRequest;
use crate::rng::{SystemRng, random_scalar};

/// What can go wrong in the exchange. Kept coarse: none of these depends on
/// a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("not a canonical encoding of a ristretto255 point other than the identity")]
    InvalidPoint,
    #[error("not a canonical, non-zero ristretto255 scalar")]
    InvalidScalar,
    #[error(
        "the request names exchange key {requested}, but this host secret is key {ours}; \
         look the secret up by the request's key id"
    )]
    WrongKey { requested: KeyId, ours: KeyId },
    #[error("the authority's response gives the identity point; the authority is misbehaving")]
    DegenerateResponse,
}

/// A ristretto255 point that is valid and not the identity, with its
/// canonical encoding kept alongside so it is never recomputed differently.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Point {
    point: RistrettoPoint,
    bytes: [u8; 32],
}

impl Point {
    fn new(point: RistrettoPoint) -> Result<Self, ExchangeError> {
        if point.is_identity() {
            return Err(ExchangeError::InvalidPoint);
        }
        Ok(Self {
            point,
            bytes: point.compress().to_bytes(),
        })
    }

    /// Ristretto decoding is canonical by design: each point has exactly one
    /// 32-byte encoding and every other string is refused.
    fn from_bytes(bytes: [u8; 32]) -> Result<Self, ExchangeError> {
        let point = CompressedRistretto(bytes)
            .decompress()
            .ok_or(ExchangeError::InvalidPoint)?;
        Self::new(point)
    }

    fn from_base64url(text: &str) -> Result<Self, ExchangeError> {
        Self::from_bytes(from_base64url(text).ok_or(ExchangeError::InvalidPoint)?)
    }
}

impl fmt::Debug for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(&self.bytes))
    }
}

/// Implements the public point newtypes' byte and JSON forms.
macro_rules! point_type {
    ($name:ident) => {
        impl $name {
            pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, ExchangeError> {
                Point::from_bytes(bytes).map(Self)
            }

            pub fn to_bytes(&self) -> [u8; 32] {
                self.0.bytes
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ExchangeError;
            fn try_from(text: String) -> Result<Self, ExchangeError> {
                Point::from_base64url(&text).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                to_base64url(&value.0.bytes)
            }
        }
    };
}

/// `S = s·G`: the public half of a [`HostSecret`], stored in the host's
/// remote keyslot at enrollment.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExchangePublicKey(Point);
point_type!(ExchangePublicKey);

impl ExchangePublicKey {
    /// The key id a host sends so the authority can pick the right secret
    /// (a host has several while a rotation is under way).
    pub fn key_id(&self) -> KeyId {
        let mut input = labels::domain::EXCHANGE_KEY_ID.to_vec();
        input.extend_from_slice(&self.0.bytes);
        let digest = atrest_core::sha256(&input);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }
}

/// Names an [`ExchangePublicKey`]: the first 16 bytes of
/// `SHA-256(domain::EXCHANGE_KEY_ID ‖ S)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(#[serde(with = "crate::encoding::base64url_array")] pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_base64url(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The authority's per-host secret `s`. Zeroized on drop, never printed.
/// Destroying every copy of it is what `shred` means for a host.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HostSecret {
    scalar: Scalar,
    /// `S` and its id, computed once: `respond` checks the id on every
    /// request.
    #[zeroize(skip)]
    public: ExchangePublicKey,
    #[zeroize(skip)]
    key_id: KeyId,
}

impl HostSecret {
    pub fn generate() -> Self {
        Self::generate_with_rng(&mut SystemRng)
    }

    pub fn generate_with_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_scalar(random_scalar(rng))
    }

    fn from_scalar(scalar: Scalar) -> Self {
        let public = ExchangePublicKey(Self::checked(RistrettoPoint::mul_base(&scalar)));
        Self {
            scalar,
            key_id: public.key_id(),
            public,
        }
    }

    /// Reads a stored secret: the canonical little-endian encoding of a
    /// non-zero scalar (a zero `s` would give every host the same key).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ExchangeError> {
        let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(*bytes))
            .filter(|s| *s != Scalar::ZERO)
            .ok_or(ExchangeError::InvalidScalar)?;
        Ok(Self::from_scalar(scalar))
    }

    /// The bytes to store. Named `expose` so each use stands out in review.
    pub fn expose_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.scalar.to_bytes())
    }

    pub fn public_key(&self) -> ExchangePublicKey {
        self.public
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Answers a verified unlock request with `Y = s·X`. Taking a
    /// [`VerifiedRequest`] rather than a bare point means the authority
    /// cannot answer a request whose signature and timestamp it has not
    /// checked. Refuses a request for another key, which would otherwise
    /// give the host a useless key and hide the server's mistake.
    pub fn respond(&self, request: &VerifiedRequest) -> Result<BlindedResponse, ExchangeError> {
        let ours = self.key_id;
        let requested = request.request().key_id;
        if requested != ours {
            return Err(ExchangeError::WrongKey { requested, ours });
        }
        let y = request.request().blinded.0.point * self.scalar;
        Ok(BlindedResponse(Self::checked(y)))
    }

    /// `s` is non-zero and the group has prime order, so `s·P` is never
    /// the identity for a valid `P`.
    fn checked(point: RistrettoPoint) -> Point {
        Point {
            point,
            bytes: point.compress().to_bytes(),
        }
    }
}

impl fmt::Debug for HostSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostSecret(key {}, [redacted])", self.key_id)
    }
}

/// What a remote keyslot stores: the authority's `S` and the host's
/// `C = c·G`. Public values; without `s` they give nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteBinding {
    pub authority_key: ExchangePublicKey,
    pub point: BindingPoint,
}

/// `C = c·G`, the host's half of a [`RemoteBinding`].
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BindingPoint(Point);
point_type!(BindingPoint);

/// Enrolls a keyslot with an authority: returns the binding to store and
/// the 256-bit wrap key to wrap the keyslot's secret under. `c` and `K` are
/// wiped before this returns.
pub fn enroll(authority_key: &ExchangePublicKey) -> (RemoteBinding, SecretKey) {
    enroll_with_rng(authority_key, &mut SystemRng)
}

/// [`enroll`] with a caller-supplied random source (for known-answer tests).
pub fn enroll_with_rng<R: CryptoRng + ?Sized>(
    authority_key: &ExchangePublicKey,
    rng: &mut R,
) -> (RemoteBinding, SecretKey) {
    let mut c = random_scalar(rng);
    let point = BindingPoint(HostSecret::checked(RistrettoPoint::mul_base(&c)));
    let mut shared = authority_key.0.point * c;
    c.zeroize();
    let binding = RemoteBinding {
        authority_key: *authority_key,
        point,
    };
    let key = binding.derive_wrap_key(&shared);
    shared.zeroize();
    (binding, key)
}

impl RemoteBinding {
    pub fn key_id(&self) -> KeyId {
        self.authority_key.key_id()
    }

    /// `S ‖ C`: the form a keyslot stores.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.authority_key.to_bytes());
        out[32..].copy_from_slice(&self.point.to_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; 64]) -> Result<Self, ExchangeError> {
        let mut s = [0u8; 32];
        let mut c = [0u8; 32];
        s.copy_from_slice(&bytes[..32]);
        c.copy_from_slice(&bytes[32..]);
        Ok(Self {
            authority_key: ExchangePublicKey::from_bytes(s)?,
            point: BindingPoint::from_bytes(c)?,
        })
    }

    /// Starts an unlock: returns `X` to send and the state that turns the
    /// authority's answer into the wrap key. A fresh `e` each time, so two
    /// unlocks of the same keyslot look unrelated to the authority.
    pub fn blind(&self) -> (BlindedRequest, UnblindingState) {
        self.blind_with_rng(&mut SystemRng)
    }

    /// [`Self::blind`] with a caller-supplied random source (for
    /// known-answer tests). Never reuse the bytes of a real unlock.
    pub fn blind_with_rng<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> (BlindedRequest, UnblindingState) {
        loop {
            let blinding = random_scalar(rng);
            // X is the identity only if e = -c, probability 2^-252; draw again
            // rather than send a point the authority must refuse.
            let x = self.point.0.point + RistrettoPoint::mul_base(&blinding);
            if let Ok(x) = Point::new(x) {
                let state = UnblindingState {
                    blinding,
                    binding: *self,
                };
                return (BlindedRequest(x), state);
            }
        }
    }

    fn derive_wrap_key(&self, shared: &RistrettoPoint) -> SecretKey {
        let encoded = Zeroizing::new(shared.compress().to_bytes());
        let ikm = SecretKey::from_bytes(*encoded);
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(&self.point.to_bytes());
        salt[32..].copy_from_slice(&self.authority_key.to_bytes());
        ikm.derive(&salt, labels::REMOTE_WRAP)
    }
}

/// `X = C + e·G`, what the host sends. Uniformly distributed over the group
/// whatever `C` is.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlindedRequest(Point);
point_type!(BlindedRequest);

/// `Y = s·X`, what the authority answers.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlindedResponse(Point);
point_type!(BlindedResponse);

/// The host's blinding scalar `e` between sending `X` and receiving `Y`.
/// Consumed by [`Self::unblind`], so one `e` serves one exchange; not
/// `Clone`, never printed, wiped on drop.
#[derive(ZeroizeOnDrop)]
pub struct UnblindingState {
    blinding: Scalar,
    #[zeroize(skip)]
    binding: RemoteBinding,
}

impl UnblindingState {
    /// `K = Y − e·S`, then the wrap key. A wrong `s` at the authority gives
    /// a different key, which the keyslot's AEAD then refuses: this step
    /// cannot tell, by design (it has nothing to compare against).
    pub fn unblind(self, response: &BlindedResponse) -> Result<SecretKey, ExchangeError> {
        let mut shared = response.0.point - self.binding.authority_key.0.point * self.blinding;
        if shared.is_identity() {
            return Err(ExchangeError::DegenerateResponse);
        }
        let key = self.binding.derive_wrap_key(&shared);
        shared.zeroize();
        Ok(key)
    }
}

impl fmt::Debug for UnblindingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnblindingState([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASEPOINT_BYTES: [u8; 32] = curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED.0;

    #[test]
    fn identity_and_non_canonical_points_are_refused() {
        assert_eq!(
            BlindedRequest::from_bytes([0; 32]),
            Err(ExchangeError::InvalidPoint)
        );
        // The field element p = 2^255 - 19 encodes 0 non-canonically.
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(BlindedRequest::from_bytes(p).is_err());
        // Ristretto refuses "negative" field elements (low bit set).
        let mut odd = BASEPOINT_BYTES;
        odd[0] |= 1;
        assert!(BlindedResponse::from_bytes(odd).is_err());
        assert!(ExchangePublicKey::from_bytes(BASEPOINT_BYTES).is_ok());
    }

    #[test]
    fn zero_and_unreduced_scalars_are_refused() {
        assert!(HostSecret::from_bytes(&[0; 32]).is_err());
        assert!(HostSecret::from_bytes(&[0xff; 32]).is_err());
        let s = HostSecret::generate();
        let again = HostSecret::from_bytes(&s.expose_bytes()).unwrap();
        assert_eq!(s.public_key(), again.public_key());
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = HostSecret::generate();
        assert_eq!(
            format!("{s:?}"),
            format!("HostSecret(key {}, [redacted])", s.key_id())
        );
        let (binding, _) = enroll(&s.public_key());
        let (_, state) = binding.blind();
        assert_eq!(format!("{state:?}"), "UnblindingState([redacted])");
    }

    #[test]
    fn binding_round_trips_through_bytes_and_json() {
        let s = HostSecret::generate();
        let (binding, _) = enroll(&s.public_key());
        assert_eq!(
            RemoteBinding::from_bytes(&binding.to_bytes()).unwrap(),
            binding
        );
        let json = serde_json::to_string(&binding).unwrap();
        assert_eq!(
            serde_json::from_str::<RemoteBinding>(&json).unwrap(),
            binding
        );
        let mut bytes = binding.to_bytes();
        bytes[32..].fill(0);
        assert!(RemoteBinding::from_bytes(&bytes).is_err());
    }
}
