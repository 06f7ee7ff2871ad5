//! Unpadded base64url (RFC 4648 §5), the one text form of bytes on the
//! wire and in the audit log, shared by atrest-remote and atrest-audit.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes `bytes` as unpadded base64url.
pub fn to_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Encodes `bytes` as unpadded base64url into `out`, which must hold
/// `bytes.len().div_ceil(3) * 4` bytes, and returns the text: no
/// allocation, for answers made on a hot path. `None` if `out` is short.
pub fn to_base64url_in<'a>(bytes: &[u8], out: &'a mut [u8]) -> Option<&'a str> {
    let n = URL_SAFE_NO_PAD.encode_slice(bytes, out).ok()?;
    std::str::from_utf8(&out[..n]).ok()
}

/// Decodes unpadded base64url into exactly `N` bytes. The `base64` engine
/// rejects padding and non-zero trailing bits, so each value has one text
/// form and a signature cannot be replayed under a second spelling.
pub fn from_base64url<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Bound the work before decoding: N bytes take at most 4N/3 + 3 chars.
    if text.len() > N * 4 / 3 + 3 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    bytes.try_into().ok()
}

/// Decodes unpadded base64url of at most `max` bytes (bounded before any
/// decoding work), with the same one-spelling rule as [`from_base64url`].
pub fn from_base64url_bounded(text: &str, max: usize) -> Option<Vec<u8>> {
    if text.len() > max.saturating_mul(4) / 3 + 3 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    (bytes.len() <= max).then_some(bytes)
}

/// Serde for fixed-size byte arrays as unpadded base64url strings
/// (`#[serde(with = "base64url_array")]`).
pub mod base64url_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::to_base64url(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::from_base64url(&text)
            .ok_or_else(|| D::Error::custom(format!("expected {N} bytes in unpadded base64url")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_has_one_spelling() {
        assert_eq!(to_base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(from_base64url::<2>("-_8"), Some([0xfb, 0xff]));
        // Padding, the standard alphabet, non-zero trailing bits and wrong
        // lengths are all refused.
        assert_eq!(from_base64url::<2>("-_8="), None);
        assert_eq!(from_base64url::<2>("+/8"), None);
        assert_eq!(from_base64url::<2>("-_9"), None);
        assert_eq!(from_base64url::<3>("-_8"), None);
    }

    #[test]
    fn encoding_in_place_matches_the_allocating_form() {
        let bytes: Vec<u8> = (0..=200u8).collect();
        for len in 0..bytes.len() {
            let mut out = vec![0; len.div_ceil(3) * 4];
            assert_eq!(
                to_base64url_in(&bytes[..len], &mut out),
                Some(to_base64url(&bytes[..len]).as_str())
            );
        }
        assert_eq!(to_base64url_in(&[1, 2, 3, 4], &mut [0; 5]), None);
    }
}
