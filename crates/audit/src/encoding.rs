//! Byte encodings: unpadded base64url in JSON, and (re-exported from
//! atrest-core, shared with atrest-remote) the length-prefixed canonical
//! form that hashes and signatures cover.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn to_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub use atrest_core::Canonical;

/// Serde for fixed-size byte arrays as unpadded base64url strings.
pub mod base64url_array {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
        let too_long = text.len() > N * 4 / 3 + 3;
        (!too_long)
            .then(|| URL_SAFE_NO_PAD.decode(text.as_bytes()).ok())
            .flatten()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| D::Error::custom(format!("expected {N} bytes in unpadded base64url")))
    }
}
