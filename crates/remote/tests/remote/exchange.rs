//! The blinded exchange: the unblinded key is the enrollment key, only the
//! right `s` gives it, and the authority's view changes with every unlock.

use std::collections::HashSet;

use atrest_remote::{
    BlindedRequest, BlindedResponse, ExchangeError, HostIdentity, HostSecret, RemoteBinding,
    enroll, enroll_with_rng,
};
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::{RistrettoPoint, Scalar};
use proptest::prelude::*;

use crate::replay_rng::ReplayRng;
use crate::support::request_for;

const NOW: u64 = 1_900_000_000;

/// Runs a whole unlock: sign, verify, respond, unblind.
fn unlock(secret: &HostSecret, binding: &RemoteBinding, rng: Option<&[u8]>) -> [u8; 32] {
    let (blinded, state) = match rng {
        Some(bytes) => binding.blind_with_rng(&mut ReplayRng::new(bytes)),
        None => binding.blind(),
    };
    let host = HostIdentity::generate();
    let signed = host.sign(request_for(blinded, binding.key_id(), NOW));
    let verified = atrest_remote::verify(&signed, &host.public_key(), NOW, 60).unwrap();
    let response = secret.respond(&verified).unwrap();
    *state.unblind(&response).unwrap().expose()
}

fn bytes64() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn unblinded_key_equals_enrollment_key(s in bytes64(), c in bytes64(), e in bytes64()) {
        let secret = HostSecret::generate_with_rng(&mut ReplayRng::new(&s));
        let (binding, key) = enroll_with_rng(&secret.public_key(), &mut ReplayRng::new(&c));
        prop_assert_eq!(unlock(&secret, &binding, Some(&e)), *key.expose());
    }

    /// An answer made with any other `s` (a wrong, stale or impostor
    /// authority) unblinds to a different key.
    #[test]
    fn another_secret_gives_another_key(s in bytes64(), other in bytes64(), c in bytes64()) {
        let secret = HostSecret::generate_with_rng(&mut ReplayRng::new(&s));
        let wrong = HostSecret::generate_with_rng(&mut ReplayRng::new(&other));
        prop_assume!(secret.public_key() != wrong.public_key());
        let (binding, key) = enroll_with_rng(&secret.public_key(), &mut ReplayRng::new(&c));
        let (blinded, state) = binding.blind();
        let scalar = Scalar::from_canonical_bytes(*wrong.expose_bytes()).unwrap();
        let x = CompressedRistretto(blinded.to_bytes()).decompress().unwrap();
        let y = BlindedResponse::from_bytes((x * scalar).compress().to_bytes()).unwrap();
        prop_assert_ne!(*state.unblind(&y).unwrap().expose(), *key.expose());
    }
}

#[test]
fn the_authority_refuses_a_request_for_another_key() {
    let secret = HostSecret::generate();
    let other = HostSecret::generate();
    let (binding, _) = enroll(&secret.public_key());
    let (blinded, _) = binding.blind();
    let host = HostIdentity::generate();
    let signed = host.sign(request_for(blinded, binding.key_id(), NOW));
    let verified = atrest_remote::verify(&signed, &host.public_key(), NOW, 60).unwrap();
    assert_eq!(
        other.respond(&verified).unwrap_err(),
        ExchangeError::WrongKey {
            requested: secret.public_key().key_id(),
            ours: other.public_key().key_id(),
        }
    );
}

#[test]
fn keyslots_enrolled_with_one_secret_get_independent_keys() {
    let secret = HostSecret::generate();
    let (a, key_a) = enroll(&secret.public_key());
    let (b, key_b) = enroll(&secret.public_key());
    assert_ne!(a.point, b.point);
    assert_ne!(key_a.expose(), key_b.expose());
    assert_eq!(unlock(&secret, &a, None), *key_a.expose());
    assert_eq!(unlock(&secret, &b, None), *key_b.expose());
}

/// The authority's whole view of an unlock is `X`. `X = C + e·G` with a
/// uniform `e` is a uniform group element independent of `C`; what a test
/// can check is that it is fresh every time and never `C` itself, so two
/// unlocks of one keyslot cannot be linked or told from two keyslots.
#[test]
fn every_unlock_sends_a_fresh_blinded_point() {
    let secret = HostSecret::generate();
    let (binding, key) = enroll(&secret.public_key());
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let (blinded, _) = binding.blind();
        assert_ne!(blinded.to_bytes(), binding.point.to_bytes());
        assert!(seen.insert(blinded.to_bytes()), "an X repeated");
    }
    // And blinding does not change the outcome.
    assert_eq!(unlock(&secret, &binding, None), *key.expose());
    assert_eq!(unlock(&secret, &binding, None), *key.expose());
}

/// With a fixed `e`, `X − C = e·G` is the same for two different keyslots:
/// the blinding alone is what hides `C`, so `e` must never be reused.
#[test]
fn the_blinding_is_exactly_e_times_g() {
    let secret = HostSecret::generate();
    let e = [7u8; 64];
    let point = |b: [u8; 32]| CompressedRistretto(b).decompress().unwrap();
    let mut offsets = Vec::new();
    for _ in 0..2 {
        let (binding, _) = enroll(&secret.public_key());
        let (blinded, _) = binding.blind_with_rng(&mut ReplayRng::new(&e));
        offsets.push(point(blinded.to_bytes()) - point(binding.point.to_bytes()));
    }
    let expected = RistrettoPoint::mul_base(&Scalar::from_bytes_mod_order_wide(&e));
    assert_eq!(offsets, [expected, expected]);
}

#[test]
fn points_travel_as_unpadded_base64url() {
    let secret = HostSecret::generate();
    let (binding, _) = enroll(&secret.public_key());
    let (blinded, _) = binding.blind();
    let json = serde_json::to_string(&blinded).unwrap();
    assert_eq!(json.len(), 2 + 43, "{json}");
    assert_eq!(
        serde_json::from_str::<BlindedRequest>(&json).unwrap(),
        blinded
    );
    let identity = format!("\"{}\"", atrest_remote::to_base64url(&[0; 32]));
    let err = serde_json::from_str::<BlindedRequest>(&identity).unwrap_err();
    assert!(err.to_string().contains("identity"), "{err}");
    let json = serde_json::to_value(binding).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["authority_key", "point"]
    );
}
