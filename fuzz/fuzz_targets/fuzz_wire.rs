//! The key authority's wire formats, as both sides parse them from the
//! network: a signed unlock request (with or without a generation claim),
//! a reboot notice and a generation report (keyd), a threshold share
//! (host), `/v1/info` (doctor), an audit checkpoint and a grant of either
//! version with its audit proof (host: inclusion and consistency checked
//! against a key that signed nothing, which must always fail; a version 2
//! proof and a path re-serialize to themselves). Invariants: no panic; a
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
    // A grant of either version (docs/format.md §15.3, §15.3.2): a version
    // 2 proof re-serializes to itself, and nothing in it verifies under a
    // key that signed nothing.
    if let Ok(atrest_wire::UnlockReply::Granted {
        version,
        audit,
        proof,
        ..
    }) = serde_json::from_slice::<atrest_wire::UnlockReply>(data)
    {
        if let Some(compact) = &proof {
            let again = serde_json::to_vec(compact).expect("serializes");
            let back: atrest_wire::GrantProof = serde_json::from_slice(&again).expect("round trip");
            assert_eq!(&back, &**compact);
        }
        if let Ok(Some(proof)) = atrest_wire::read_grant_proof(version, audit, proof) {
            let key = atrest_audit::AuditSigningKey::from_seed(&[0x5a; 32]).public_key();
            let included = atrest_audit::verify_inclusion(
                &key,
                &proof.entry,
                &proof.inclusion,
                &proof.tree_head,
            );
            assert!(included.is_err(), "a head nobody signed");
            let nonce = atrest_remote::RequestNonce([0; 16]);
            let host = atrest_remote::HostId::new("h-fuzz").expect("a host id");
            let _ = proof.is_release_of(&host, &nonce);
            if let Some(consistency) = &proof.consistency {
                let _ = atrest_audit::merkle::verify_consistency_path(
                    consistency,
                    &proof.tree_head.root_hash,
                    &proof.tree_head.root_hash,
                );
            }
        }
    }
    if let Ok(path) = serde_json::from_slice::<atrest_wire::HashPath>(data) {
        let again = serde_json::to_vec(&path).expect("serializes");
        let back: atrest_wire::HashPath = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(back, path);
    }
});
