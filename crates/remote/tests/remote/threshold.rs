//! Threshold shares: any k of n rebuild the key, fewer give an error (never
//! a wrong key), and a changed share is caught.

use atrest_core::SecretKey;
use atrest_remote::{SHARE_LEN, Share, ThresholdError, combine, split};
use proptest::prelude::*;

/// Every subset of `shares`, as index lists.
fn subsets(n: usize) -> impl Iterator<Item = Vec<usize>> {
    (0u32..1 << n).map(move |mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
}

fn pick(shares: &[Share], indices: &[usize]) -> Vec<Share> {
    indices.iter().map(|&i| shares[i].clone()).collect()
}

#[test]
fn every_subset_of_at_least_k_rebuilds_and_smaller_ones_refuse() {
    for (k, n) in [(2u8, 2u8), (2, 3), (3, 5), (4, 7)] {
        let secret = SecretKey::random();
        let shares = split(&secret, k, n).unwrap();
        assert_eq!(shares.len(), usize::from(n));
        for subset in subsets(usize::from(n)) {
            let result = combine(&pick(&shares, &subset));
            if subset.len() >= usize::from(k) {
                assert_eq!(
                    result.unwrap().expose(),
                    secret.expose(),
                    "{k}-of-{n} {subset:?}"
                );
            } else if subset.is_empty() {
                assert_eq!(result.unwrap_err(), ThresholdError::NoShares);
            } else {
                assert_eq!(
                    result.unwrap_err(),
                    ThresholdError::NotEnoughShares {
                        needed: k,
                        given: subset.len()
                    }
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_k_shares_rebuild(
        bytes in any::<[u8; 32]>(),
        (k, n, order) in (2u8..=12).prop_flat_map(|n| (2..=n, Just(n), Just((0..n).collect::<Vec<u8>>()).prop_shuffle())),
    ) {
        let secret = SecretKey::from_bytes(bytes);
        let shares = split(&secret, k, n).unwrap();
        let chosen: Vec<usize> = order.iter().take(usize::from(k)).map(|&i| usize::from(i)).collect();
        let rebuilt = combine(&pick(&shares, &chosen)).unwrap();
        prop_assert_eq!(rebuilt.expose(), secret.expose());
        let fewer = &chosen[..usize::from(k) - 1];
        let is_not_enough = matches!(
            combine(&pick(&shares, fewer)),
            Err(ThresholdError::NotEnoughShares { .. })
        );
        prop_assert!(is_not_enough);
    }
}

/// Lying about k in every share, so that k-1 shares look like enough,
/// gives an authentication error rather than the interpolated wrong key.
#[test]
fn too_few_shares_posing_as_enough_are_refused() {
    let secret = SecretKey::random();
    let shares = split(&secret, 3, 5).unwrap();
    let lied: Vec<Share> = shares[..2]
        .iter()
        .map(|s| {
            let mut bytes = s.to_bytes();
            bytes[17] = 2;
            Share::from_bytes(&bytes[..]).unwrap()
        })
        .collect();
    assert!(matches!(
        combine(&lied),
        Err(ThresholdError::Tampered { .. })
    ));
}

#[test]
fn a_changed_byte_anywhere_in_a_share_is_caught() {
    let secret = SecretKey::random();
    let shares = split(&secret, 2, 3).unwrap();
    for offset in 1..SHARE_LEN {
        let mut bytes = shares[1].to_bytes();
        bytes[offset] ^= 0x01;
        let Ok(bad) = Share::from_bytes(&bytes[..]) else {
            continue; // a header that no longer parses is caught earlier
        };
        // With exactly k shares the bad one cannot be singled out.
        let result = combine(&[shares[0].clone(), bad.clone()]);
        assert!(
            matches!(
                result,
                Err(ThresholdError::Tampered { .. }
                    | ThresholdError::MixedSplits
                    | ThresholdError::NotEnoughShares { .. })
            ),
            "offset {offset}: {result:?}"
        );
        // With a spare good share it is named.
        if let Ok(parsed) = Share::from_bytes(&bytes[..])
            && parsed.index() == 2
            && parsed.split_id() == shares[0].split_id()
            && parsed.threshold() == 2
            && parsed.count() == 3
        {
            let result = combine(&[shares[0].clone(), bad, shares[2].clone()]);
            assert_eq!(
                result.unwrap_err(),
                ThresholdError::Tampered { indices: vec![2] },
                "offset {offset}"
            );
        }
    }
}

#[test]
fn a_bad_share_among_enough_good_ones_is_named() {
    let secret = SecretKey::random();
    let shares = split(&secret, 3, 5).unwrap();
    let mut bytes = shares[0].to_bytes();
    bytes[30] ^= 0x80;
    let bad = Share::from_bytes(&bytes[..]).unwrap();
    let given = [bad, shares[1].clone(), shares[2].clone(), shares[4].clone()];
    assert_eq!(
        combine(&given).unwrap_err(),
        ThresholdError::Tampered { indices: vec![1] }
    );
    // Without it, the rest are enough.
    assert_eq!(combine(&given[1..]).unwrap().expose(), secret.expose());
}

#[test]
fn shares_of_two_splits_do_not_mix() {
    let secret = SecretKey::random();
    let a = split(&secret, 2, 3).unwrap();
    let b = split(&secret, 2, 3).unwrap();
    assert_ne!(a[0].split_id(), b[0].split_id());
    assert_eq!(
        combine(&[a[0].clone(), b[1].clone()]).unwrap_err(),
        ThresholdError::MixedSplits
    );
}

#[test]
fn a_repeated_share_counts_once() {
    let secret = SecretKey::random();
    let shares = split(&secret, 2, 3).unwrap();
    assert_eq!(
        combine(&[shares[0].clone(), shares[0].clone()]).unwrap_err(),
        ThresholdError::NotEnoughShares {
            needed: 2,
            given: 1
        }
    );
    let with_repeat = [shares[0].clone(), shares[0].clone(), shares[2].clone()];
    assert_eq!(combine(&with_repeat).unwrap().expose(), secret.expose());
}

#[test]
fn parameters_are_checked() {
    let secret = SecretKey::random();
    for (k, n) in [(0, 3), (1, 3), (4, 3), (2, 0)] {
        assert_eq!(
            split(&secret, k, n).unwrap_err(),
            ThresholdError::InvalidParameters {
                threshold: k,
                count: n
            }
        );
    }
    let shares = split(&secret, 255, 255).unwrap();
    assert_eq!(combine(&shares).unwrap().expose(), secret.expose());
}

#[test]
fn shares_travel_as_base64url() {
    let secret = SecretKey::random();
    let share = split(&secret, 2, 2).unwrap().remove(1);
    let json = serde_json::to_string(&share).unwrap();
    assert_eq!(json.len(), 2 + SHARE_LEN.div_ceil(3) * 4);
    let back: Share = serde_json::from_str(&json).unwrap();
    assert_eq!(back.to_bytes(), share.to_bytes());
    assert!(serde_json::from_str::<Share>("\"AAAA\"").is_err());
}
