//! Signed reboot notices: verified like unlock requests, and never
//! interchangeable with them.

use atrest_remote::{
    BootId, HostId, HostIdentity, HostSecret, RebootNotice, RequestError, RequestNonce,
    SignedRebootNotice, enroll, verify, verify_reboot,
};

use crate::support::request_for;

const NOW: u64 = 1_900_000_000;
const SKEW: u64 = 120;

fn notice(timestamp: u64) -> RebootNotice {
    RebootNotice {
        host_id: HostId::new("web-1").unwrap(),
        boot_id: BootId::new("6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10").unwrap(),
        nonce: RequestNonce::random(),
        timestamp,
    }
}

#[test]
fn a_signed_notice_verifies() {
    let host = HostIdentity::generate();
    let signed = host.sign_reboot(notice(NOW));
    let checked = verify_reboot(&signed, &host.public_key(), NOW, SKEW).unwrap();
    assert_eq!(checked, signed.notice);
}

#[test]
fn a_change_to_any_field_breaks_the_signature() {
    let host = HostIdentity::generate();
    let original = host.sign_reboot(notice(NOW));
    type Change = fn(&mut RebootNotice);
    let changes: [(&str, Change); 4] = [
        ("host_id", |n| n.host_id = HostId::new("db-3").unwrap()),
        ("boot_id", |n| n.boot_id = BootId::new("ffff").unwrap()),
        ("nonce", |n| n.nonce = RequestNonce::random()),
        ("timestamp", |n| n.timestamp += 1),
    ];
    for (field, change) in changes {
        let mut tampered = original.clone();
        change(&mut tampered.notice);
        assert_ne!(tampered, original, "{field} did not change");
        assert_eq!(
            verify_reboot(&tampered, &host.public_key(), NOW, SKEW).unwrap_err(),
            RequestError::BadSignature,
            "{field}"
        );
    }
    let mut bad_signature = original.clone();
    bad_signature.signature.0[0] ^= 1;
    assert_eq!(
        verify_reboot(&bad_signature, &host.public_key(), NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
}

#[test]
fn another_hosts_key_does_not_verify() {
    let host = HostIdentity::generate();
    let signed = host.sign_reboot(notice(NOW));
    let other = HostIdentity::generate().public_key();
    assert_eq!(
        verify_reboot(&signed, &other, NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
}

#[test]
fn stale_and_future_notices_are_refused() {
    let host = HostIdentity::generate();
    let key = host.public_key();
    for offset in [0, SKEW] {
        assert!(verify_reboot(&host.sign_reboot(notice(NOW - offset)), &key, NOW, SKEW).is_ok());
        assert!(verify_reboot(&host.sign_reboot(notice(NOW + offset)), &key, NOW, SKEW).is_ok());
    }
    let stale = verify_reboot(&host.sign_reboot(notice(NOW - SKEW - 1)), &key, NOW, SKEW);
    assert_eq!(stale.unwrap_err().code(), "stale_request");
    let future = verify_reboot(&host.sign_reboot(notice(NOW + SKEW + 1)), &key, NOW, SKEW);
    assert_eq!(future.unwrap_err().code(), "future_request");
    // A forgery is a bad signature whatever its time.
    let mut forged = host.sign_reboot(notice(NOW - 10 * SKEW));
    forged.notice.timestamp = NOW;
    assert_eq!(
        verify_reboot(&forged, &key, NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
}

/// A notice's signature never verifies as an unlock request's, and the
/// other way round: the domain tags differ.
#[test]
fn notices_and_requests_do_not_cross() {
    let host = HostIdentity::generate();
    let (binding, _) = enroll(&HostSecret::generate().public_key());
    let (blinded, _) = binding.blind();
    let request = host.sign(request_for(blinded, binding.key_id(), NOW));
    let notice = host.sign_reboot(RebootNotice {
        host_id: request.request.host_id.clone(),
        boot_id: request.request.boot_id.clone(),
        nonce: request.request.nonce,
        timestamp: NOW,
    });
    let mut as_request = request.clone();
    as_request.signature = notice.signature;
    assert_eq!(
        verify(&as_request, &host.public_key(), NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
    let mut as_notice = notice.clone();
    as_notice.signature = request.signature;
    assert_eq!(
        verify_reboot(&as_notice, &host.public_key(), NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
}

#[test]
fn the_wire_form_is_strict() {
    let host = HostIdentity::generate();
    let signed = host.sign_reboot(notice(NOW));
    let json = serde_json::to_value(&signed).unwrap();
    let top: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(top, ["notice", "signature"]);
    let fields: Vec<_> = json["notice"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(fields, ["boot_id", "host_id", "nonce", "timestamp"]);
    let back: SignedRebootNotice = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, signed);
    let mut extra = json;
    extra["notice"]["keyslot"] = 1.into();
    assert!(serde_json::from_value::<SignedRebootNotice>(extra).is_err());
}

#[test]
fn the_signed_bytes_are_canonical() {
    let n = RebootNotice {
        host_id: HostId::new("h").unwrap(),
        boot_id: BootId::new("b").unwrap(),
        nonce: RequestNonce([9; 16]),
        timestamp: 0x0102,
    };
    let mut expected = Vec::new();
    expected.extend_from_slice(&23u32.to_be_bytes());
    expected.extend_from_slice(b"atrest reboot notice v1");
    expected.push(1);
    for field in [&b"h"[..], b"b", &[9; 16], &0x0102u64.to_be_bytes()] {
        expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
        expected.extend_from_slice(field);
    }
    assert_eq!(n.signed_bytes(), expected);
}

fn bind(timestamp: u64) -> atrest_remote::BindRequest {
    atrest_remote::BindRequest {
        host_id: HostId::new("web-1").unwrap(),
        nonce: RequestNonce::random(),
        timestamp,
    }
}

#[test]
fn a_bind_request_verifies_and_nothing_else_passes_as_one() {
    use atrest_remote::{SignedBindRequest, verify_bind};
    let host = HostIdentity::generate();
    let signed = host.sign_bind(bind(NOW));
    assert_eq!(
        verify_bind(&signed, &host.public_key(), NOW, SKEW).unwrap(),
        signed.bind
    );
    // Any changed field, another key, a stale time: refused.
    let mut tampered = signed.clone();
    tampered.bind.host_id = HostId::new("db-3").unwrap();
    assert_eq!(
        verify_bind(&tampered, &host.public_key(), NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
    let mut tampered = signed.clone();
    tampered.bind.timestamp += 1;
    assert!(verify_bind(&tampered, &host.public_key(), NOW, SKEW).is_err());
    let other = HostIdentity::generate();
    assert!(verify_bind(&signed, &other.public_key(), NOW, SKEW).is_err());
    assert!(verify_bind(&signed, &host.public_key(), NOW + SKEW + 1, SKEW).is_err());
    // A reboot notice's signature over the same host, nonce and time is not
    // a bind request's (domain separation).
    let notice = host.sign_reboot(RebootNotice {
        host_id: signed.bind.host_id.clone(),
        boot_id: BootId::new("0").unwrap(),
        nonce: signed.bind.nonce,
        timestamp: NOW,
    });
    let forged = SignedBindRequest {
        bind: signed.bind.clone(),
        signature: notice.signature,
    };
    assert_eq!(
        verify_bind(&forged, &host.public_key(), NOW, SKEW).unwrap_err(),
        RequestError::BadSignature
    );
}
