//! Signed unlock requests: any change after signing, another key, or a
//! timestamp outside the window is refused.

use atrest_remote::{
    BootId, HostId, HostIdentity, HostSecret, RequestError, RequestNonce, SignedUnlockRequest,
    UnlockRequest, enroll, verify,
};

use crate::support::request_for;

const NOW: u64 = 1_900_000_000;
const SKEW: u64 = 120;

fn signed(host: &HostIdentity, timestamp: u64) -> SignedUnlockRequest {
    let (binding, _) = enroll(&HostSecret::generate().public_key());
    let (blinded, _) = binding.blind();
    host.sign(request_for(blinded, binding.key_id(), timestamp))
}

#[test]
fn a_signed_request_verifies() {
    let host = HostIdentity::generate();
    let request = signed(&host, NOW);
    let verified = verify(&request, &host.public_key(), NOW, SKEW).unwrap();
    assert_eq!(verified.request(), &request.request);
    assert_eq!(verified.into_request(), request.request);
}

/// Every field is covered by the signature.
#[test]
fn a_change_to_any_field_breaks_the_signature() {
    let host = HostIdentity::generate();
    let original = signed(&host, NOW);
    let other = signed(&host, NOW);
    type Change = fn(&mut UnlockRequest, &UnlockRequest);
    let changes: [(&str, Change); 8] = [
        ("host_id", |r, _| r.host_id = HostId::new("db-3").unwrap()),
        ("vault_id", |r, _| r.vault_id[15] ^= 1),
        ("keyslot", |r, _| r.keyslot += 1),
        ("key_id", |r, o| r.key_id = o.key_id),
        ("blinded", |r, o| r.blinded = o.blinded),
        ("nonce", |r, _| r.nonce = RequestNonce::random()),
        ("timestamp", |r, _| r.timestamp += 1),
        ("boot_id", |r, _| r.boot_id = BootId::new("ffff").unwrap()),
    ];
    for (field, change) in changes {
        let mut tampered = original.clone();
        change(&mut tampered.request, &other.request);
        assert_ne!(tampered, original, "{field} did not change");
        assert_eq!(
            verify(&tampered, &host.public_key(), NOW, SKEW).unwrap_err(),
            RequestError::BadSignature,
            "{field}"
        );
    }
}

#[test]
fn another_hosts_key_does_not_verify() {
    let host = HostIdentity::generate();
    let other = HostIdentity::generate();
    let request = signed(&host, NOW);
    let err = verify(&request, &other.public_key(), NOW, SKEW).unwrap_err();
    assert_eq!(err, RequestError::BadSignature);
    assert_eq!(err.code(), "bad_signature");
}

#[test]
fn the_timestamp_window_is_inclusive_and_symmetric() {
    let host = HostIdentity::generate();
    let key = host.public_key();
    for offset in [0, 1, SKEW] {
        assert!(verify(&signed(&host, NOW - offset), &key, NOW, SKEW).is_ok());
        assert!(verify(&signed(&host, NOW + offset), &key, NOW, SKEW).is_ok());
    }
    let stale = verify(&signed(&host, NOW - SKEW - 1), &key, NOW, SKEW).unwrap_err();
    assert_eq!(stale.code(), "stale_request");
    assert!(stale.to_string().contains("clock"), "{stale}");
    let future = verify(&signed(&host, NOW + SKEW + 1), &key, NOW, SKEW).unwrap_err();
    assert_eq!(future.code(), "future_request");
    // Extremes do not overflow.
    assert!(verify(&signed(&host, u64::MAX), &key, 0, SKEW).is_err());
    assert!(verify(&signed(&host, 0), &key, u64::MAX, SKEW).is_err());
}

/// A forged request with a stale timestamp is reported as a bad signature:
/// the signature is checked first, so forgers learn nothing else.
#[test]
fn a_forgery_is_a_bad_signature_whatever_its_time() {
    let host = HostIdentity::generate();
    let mut forged = signed(&host, NOW - 10 * SKEW);
    forged.request.keyslot ^= 1;
    let err = verify(&forged, &host.public_key(), NOW, SKEW).unwrap_err();
    assert_eq!(err, RequestError::BadSignature);
}

#[test]
fn the_wire_form_names_every_field() {
    let host = HostIdentity::generate();
    let request = signed(&host, NOW);
    let json = serde_json::to_value(&request).unwrap();
    let top: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(top, ["request", "signature"]);
    let fields: Vec<_> = json["request"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        fields,
        [
            "blinded",
            "boot_id",
            "host_id",
            "key_id",
            "keyslot",
            "nonce",
            "timestamp",
            "vault_id"
        ]
    );
    let back: SignedUnlockRequest = serde_json::from_value(json).unwrap();
    assert_eq!(back, request);
    assert!(verify(&back, &host.public_key(), NOW, SKEW).is_ok());
}
