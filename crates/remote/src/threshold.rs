//! k-of-n threshold splitting of a 256-bit key: Shamir's secret sharing over
//! GF(2^8) (vsss-rs, constant-time field arithmetic), with every share
//! authenticated.
//!
//! Shamir alone has no integrity: a changed share, or too few shares,
//! silently interpolate to a wrong secret. So each share carries
//! `HMAC-SHA256(HKDF(secret, salt = split id, labels::SHARE_MAC), share)`.
//! Only the right secret gives a key under which the shares verify, so
//! [`combine`] returns the secret or an error, never a wrong key. Given
//! more than `k` shares it searches for `k` that verify and names the
//! others, so one bad authority cannot stop an unlock that others can serve.
//!
//! The tags are a deterministic function of the secret, so shares are
//! secret only computationally (256-bit), not information-theoretically as
//! bare Shamir would be.

use std::fmt;

use atrest_core::{HeaderMac, MAC_LEN, SecretKey, labels};
use serde::{Deserialize, Serialize};
use vsss_rs::Gf256;
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{Canonical, from_base64url, to_base64url};
use crate::rng::SystemRng;

/// The version byte of a share's encoding and MAC input.
pub const SHARE_VERSION: u8 = 1;

/// Length of [`Share::to_bytes`]: version, split id, k, n, index, value, tag.
pub const SHARE_LEN: usize = 1 + 16 + 1 + 1 + 1 + 32 + MAC_LEN;

/// Upper bound on the subsets of `k` shares [`combine`] tries when some
/// shares are bad, so hostile input cannot make it spin: far above any
/// real deployment (3-of-5 has 10 subsets).
const MAX_SUBSETS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("a k-of-n split needs 2 <= k <= n <= 255, not {threshold}-of-{count}")]
    InvalidParameters { threshold: u8, count: u8 },
    #[error("no shares were given")]
    NoShares,
    #[error("the shares come from different splits (or disagree on k or n)")]
    MixedSplits,
    #[error("{given} distinct shares were given, and this {needed}-of-n split needs {needed}")]
    NotEnoughShares { needed: u8, given: usize },
    #[error(
        "share authentication failed{}: a share was changed or does not belong to this split",
        if indices.is_empty() { String::new() } else { format!(" for share(s) {indices:?}") }
    )]
    Tampered { indices: Vec<u8> },
    #[error("not a threshold share (wrong length, version or header)")]
    Malformed,
}

/// One share of a split: share `index` of `count`, `threshold` of which
/// rebuild the secret. The value is wiped on drop and never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Share {
    split_id: [u8; 16],
    threshold: u8,
    count: u8,
    index: u8,
    value: Zeroizing<[u8; 32]>,
    tag: [u8; MAC_LEN],
}

impl Share {
    pub fn index(&self) -> u8 {
        self.index
    }

    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    pub fn count(&self) -> u8 {
        self.count
    }

    /// Random, shared by all shares of one split, so shares of two splits
    /// are never mixed.
    pub fn split_id(&self) -> [u8; 16] {
        self.split_id
    }

    /// `version ‖ split_id ‖ k ‖ n ‖ index ‖ value ‖ tag` ([`SHARE_LEN`] bytes).
    pub fn to_bytes(&self) -> Zeroizing<[u8; SHARE_LEN]> {
        let mut out = Zeroizing::new([0u8; SHARE_LEN]);
        out[0] = SHARE_VERSION;
        out[1..17].copy_from_slice(&self.split_id);
        out[17] = self.threshold;
        out[18] = self.count;
        out[19] = self.index;
        out[20..52].copy_from_slice(&self.value[..]);
        out[52..].copy_from_slice(&self.tag);
        out
    }

    /// Parses a share and checks its header (`2 <= k <= n`,
    /// `1 <= index <= n`); the tag is checked by [`combine`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ThresholdError> {
        let bytes: &[u8; SHARE_LEN] = bytes.try_into().map_err(|_| ThresholdError::Malformed)?;
        let (threshold, count, index) = (bytes[17], bytes[18], bytes[19]);
        if bytes[0] != SHARE_VERSION
            || threshold < 2
            || threshold > count
            || index == 0
            || index > count
        {
            return Err(ThresholdError::Malformed);
        }
        let mut split_id = [0u8; 16];
        split_id.copy_from_slice(&bytes[1..17]);
        let mut value = Zeroizing::new([0u8; 32]);
        value.copy_from_slice(&bytes[20..52]);
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&bytes[52..]);
        Ok(Self {
            split_id,
            threshold,
            count,
            index,
            value,
            tag,
        })
    }

    fn mac_input(&self) -> Vec<u8> {
        let mut out = Canonical::new(labels::domain::THRESHOLD_SHARE, SHARE_VERSION);
        out.field(&self.split_id)
            .field(&[self.threshold, self.count, self.index])
            .field(&self.value[..]);
        out.into_bytes()
    }

    fn same_split(&self, other: &Share) -> bool {
        self.split_id == other.split_id
            && self.threshold == other.threshold
            && self.count == other.count
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Share({} of {}, {}-of-n, split {}, [redacted])",
            self.index,
            self.count,
            self.threshold,
            to_base64url(&self.split_id)
        )
    }
}

impl TryFrom<String> for Share {
    type Error = ThresholdError;
    fn try_from(text: String) -> Result<Self, ThresholdError> {
        let bytes =
            Zeroizing::new(from_base64url::<SHARE_LEN>(&text).ok_or(ThresholdError::Malformed)?);
        Self::from_bytes(&bytes[..])
    }
}

impl From<Share> for String {
    fn from(share: Share) -> String {
        to_base64url(&share.to_bytes()[..])
    }
}

fn share_mac(secret: &SecretKey, split_id: &[u8; 16]) -> HeaderMac {
    HeaderMac::new(&secret.derive(split_id, labels::SHARE_MAC))
}

/// Splits `secret` into `count` shares, any `threshold` of which rebuild it.
pub fn split(secret: &SecretKey, threshold: u8, count: u8) -> Result<Vec<Share>, ThresholdError> {
    if threshold < 2 || threshold > count {
        return Err(ThresholdError::InvalidParameters { threshold, count });
    }
    // Each raw share is `x ‖ f(x)` byte by byte, with x = 1..=count.
    let raw = Gf256::split_bytes(
        usize::from(threshold),
        usize::from(count),
        secret.expose(),
        SystemRng,
    )
    .map_err(|_| ThresholdError::InvalidParameters { threshold, count })?;
    let raw: Vec<Zeroizing<Vec<u8>>> = raw.into_iter().map(Zeroizing::new).collect();
    let split_id = atrest_core::random_array();
    let mac = share_mac(secret, &split_id);
    raw.iter()
        .map(|bytes| {
            let (&index, value) = bytes.split_first().ok_or(ThresholdError::Malformed)?;
            let mut share = Share {
                split_id,
                threshold,
                count,
                index,
                value: Zeroizing::new(value.try_into().map_err(|_| ThresholdError::Malformed)?),
                tag: [0; MAC_LEN],
            };
            share.tag = mac.sign(&share.mac_input());
            Ok(share)
        })
        .collect()
}

/// Rebuilds the secret from at least `threshold` shares of one split.
///
/// Errors rather than returning a wrong key: with too few shares
/// (`NotEnoughShares`), shares of different splits (`MixedSplits`), or any
/// given share that does not authenticate (`Tampered`, naming the bad
/// shares when enough good ones were there to tell).
pub fn combine(shares: &[Share]) -> Result<SecretKey, ThresholdError> {
    let first = shares.first().ok_or(ThresholdError::NoShares)?;
    if !shares.iter().all(|s| s.same_split(first)) {
        return Err(ThresholdError::MixedSplits);
    }
    // One share per index: a repeated index (a share given twice) adds no
    // information. A conflicting repeat is caught by the final tag check.
    let mut distinct: Vec<&Share> = Vec::with_capacity(shares.len());
    for share in shares {
        if !distinct.iter().any(|d| d.index == share.index) {
            distinct.push(share);
        }
    }
    let needed = usize::from(first.threshold);
    if distinct.len() < needed {
        return Err(ThresholdError::NotEnoughShares {
            needed: first.threshold,
            given: distinct.len(),
        });
    }
    let secret = find_authentic_subset(&distinct, needed)?;
    let mac = share_mac(&secret, &first.split_id);
    let bad: Vec<u8> = shares
        .iter()
        .filter(|s| mac.verify(&s.mac_input(), &s.tag).is_err())
        .map(|s| s.index)
        .collect();
    if bad.is_empty() {
        Ok(secret)
    } else {
        Err(ThresholdError::Tampered { indices: bad })
    }
}

/// Interpolates subsets of `needed` shares until one gives a secret under
/// which all of that subset's tags verify.
fn find_authentic_subset(shares: &[&Share], needed: usize) -> Result<SecretKey, ThresholdError> {
    let mut subset: Vec<usize> = (0..needed).collect();
    for _ in 0..MAX_SUBSETS {
        // vsss-rs takes plain vectors of `x ‖ f(x)`; wipe them once the
        // interpolation is done.
        let mut raw: Vec<Vec<u8>> = subset
            .iter()
            .map(|&i| {
                let mut bytes = Vec::with_capacity(33);
                bytes.push(shares[i].index);
                bytes.extend_from_slice(&shares[i].value[..]);
                bytes
            })
            .collect();
        let combined = Gf256::combine_bytes(&raw).map(Zeroizing::new);
        raw.iter_mut().for_each(Zeroize::zeroize);
        if let Some(candidate) = combined.ok().and_then(|c| SecretKey::from_slice(&c)) {
            let mac = share_mac(&candidate, &shares[0].split_id);
            if subset
                .iter()
                .all(|&i| mac.verify(&shares[i].mac_input(), &shares[i].tag).is_ok())
            {
                return Ok(candidate);
            }
        }
        if !next_combination(&mut subset, shares.len()) {
            break;
        }
    }
    Err(ThresholdError::Tampered {
        indices: Vec::new(),
    })
}

/// Advances `subset` (strictly increasing indices below `n`) to the next
/// combination in lexicographic order; false after the last.
fn next_combination(subset: &mut [usize], n: usize) -> bool {
    let k = subset.len();
    for i in (0..k).rev() {
        if subset[i] < n - k + i {
            subset[i] += 1;
            for j in i + 1..k {
                subset[j] = subset[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_enumerated_once() {
        let mut subset = vec![0, 1];
        let mut seen = vec![subset.clone()];
        while next_combination(&mut subset, 4) {
            seen.push(subset.clone());
        }
        assert_eq!(
            seen,
            [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]].map(|c| c.to_vec())
        );
    }

    #[test]
    fn header_is_checked_on_parse() {
        let secret = SecretKey::random();
        let share = split(&secret, 2, 3).unwrap().remove(0);
        let good = share.to_bytes();
        assert!(Share::from_bytes(&good[..]).is_ok());
        for (offset, value) in [(0, 2), (17, 1), (17, 4), (19, 0), (19, 4)] {
            let mut bad = good.clone();
            bad[offset] = value;
            assert_eq!(
                Share::from_bytes(&bad[..]).unwrap_err(),
                ThresholdError::Malformed
            );
        }
        assert!(Share::from_bytes(&good[1..]).is_err());
    }

    #[test]
    fn debug_hides_the_value() {
        let secret = SecretKey::from_bytes([0xab; 32]);
        let share = split(&secret, 2, 2).unwrap().remove(0);
        let shown = format!("{share:?}");
        assert!(
            shown.contains("redacted") && shown.contains("1 of 2"),
            "{shown}"
        );
    }
}
