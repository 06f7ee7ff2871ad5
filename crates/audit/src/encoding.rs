//! Byte encodings: unpadded base64url in JSON, and the length-prefixed
//! canonical form that hashes and signatures cover (the same construction
//! as atrest-remote's, so one description in `docs/format.md` serves both).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn to_base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A domain tag, a version byte, then each field as a big-endian u32
/// length and the bytes: injective, so two different records never hash
/// or sign the same.
pub struct Canonical(Vec<u8>);

impl Canonical {
    pub fn new(domain: &[u8], version: u8) -> Self {
        let mut out = Canonical(Vec::with_capacity(256));
        out.field(domain);
        out.0.push(version);
        out
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        // Fields are bounded (details at 64 KiB), far below 4 GiB.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

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
