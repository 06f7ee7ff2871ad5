//! The key authority's wire formats, as both sides parse them from the
//! network: a signed unlock request (with or without a generation claim),
//! a reboot notice and a generation report (keyd), a threshold
//! share (host), `/v1/info` (doctor), an audit checkpoint and a grant with its audit proof
//! (host: inclusion and consistency checked against a key that signed
//! nothing, which must always fail). Invariants: no panic; a
//! parsed request re-serializes to JSON that parses to the same request;
//! verification of a parsed request under an unrelated key always fails.
#![no_main]

use atrest_remote::{
    HostIdentity, SignedGenerationReport, SignedRebootNotice, SignedUnlockRequest,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stranger = HostIdentity::from_seed(&[7; 32]).public_key();
    if let Ok(signed) = serde_json::from_slice::<SignedUnlockRequest>(data) {
        let again = serde_json::to_vec(&signed).expect("serializes");
        let back: SignedUnlockRequest = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(back, signed);
        let _ = signed.request.signed_bytes();
        assert!(atrest_remote::verify(&signed, &stranger, signed.request.timestamp, 300).is_err());
    }
    if let Ok(signed) = serde_json::from_slice::<SignedRebootNotice>(data) {
        assert!(
            atrest_remote::verify_reboot(&signed, &stranger, signed.notice.timestamp, 300).is_err()
        );
    }
    if let Ok(signed) = serde_json::from_slice::<SignedGenerationReport>(data) {
        let again = serde_json::to_vec(&signed).expect("serializes");
        let back: SignedGenerationReport = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(back, signed);
        assert!(
            atrest_remote::verify_report(&signed, &stranger, signed.report.timestamp, 300)
                .is_err()
        );
    }
    let _ = atrest_remote::Share::from_bytes(data);
    // `GET /v1/info` (atrest doctor reads its audit key).
    if let Ok(info) = serde_json::from_slice::<atrest_wire::Info>(data) {
        let again = serde_json::to_vec(&info).expect("serializes");
        let back: atrest_wire::Info = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(back, info);
    }
    if let Ok(checkpoint) = serde_json::from_slice::<atrest_audit::Checkpoint>(data) {
        let key = atrest_audit::AuditSigningKey::from_seed(&[9; 32]).public_key();
        let _ = checkpoint.verify(&key);
    }
    if let Ok(atrest_wire::UnlockReply::Granted {
        audit: Some(proof), ..
    }) = serde_json::from_slice::<atrest_wire::UnlockReply>(data)
    {
        let key = atrest_audit::AuditSigningKey::from_seed(&[0x5a; 32]).public_key();
        let included =
            atrest_audit::verify_inclusion(&key, &proof.entry, &proof.inclusion, &proof.tree_head);
        assert!(included.is_err(), "a head nobody signed");
        if let Some(consistency) = &proof.consistency {
            let _ = atrest_audit::merkle::verify_consistency_path(
                consistency,
                &proof.tree_head.root_hash,
                &proof.tree_head.root_hash,
            );
        }
    }
});
