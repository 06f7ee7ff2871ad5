//! Field envelopes: one encrypted value bound to its scope, table, column,
//! row and key version (docs/format.md §17.3).
//!
//! Bytes: `version (1) ‖ algorithm (1) ‖ key version (4, BE) ‖ nonce (12)
//! ‖ ciphertext ‖ tag (16)`; text: `atrf:` + base64url of those bytes.
//! AAD: `Canonical(SCOPED_FIELD, 1)` over scope, table, column, row and the
//! first six bytes.

use atrest_core::{Canonical, ContentAlgorithm, SecretKey, labels};
use zeroize::Zeroizing;

use crate::encoding;
use crate::error::{Result, ScopedError};
use crate::keys::{Keyring, ScopeKey};
use crate::name::{FieldContext, ScopeId};

/// The envelope version this build writes (and the only one it reads).
pub const FIELD_VERSION: u8 = 1;
/// Text prefix of a field envelope.
pub const FIELD_PREFIX: &str = "atrf:";
/// Largest plaintext a field envelope takes; use a stream above it.
pub const MAX_FIELD_LEN: usize = 1 << 20;
/// Version, algorithm, key version.
pub const FIELD_HEADER_LEN: usize = 6;
/// Bytes an envelope adds to its plaintext (before base64url).
pub const FIELD_OVERHEAD: usize = FIELD_HEADER_LEN + 12 + 16;

const WHAT: &str = "field envelope";

fn aad(scope: &ScopeId, ctx: &FieldContext, header: &[u8]) -> Vec<u8> {
    let mut aad = Canonical::new(labels::domain::SCOPED_FIELD, FIELD_VERSION);
    aad.field(scope.as_bytes())
        .field(ctx.table.as_bytes())
        .field(ctx.column.as_bytes())
        .field(ctx.row.as_bytes())
        .field(header);
    aad.into_bytes()
}

/// The header of an envelope, parsed and checked.
struct Header {
    key_version: u32,
}

fn parse_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < FIELD_OVERHEAD {
        return Err(ScopedError::malformed(
            WHAT,
            format!("{} bytes, at least {FIELD_OVERHEAD}", bytes.len()),
        ));
    }
    if bytes[0] != FIELD_VERSION {
        return Err(ScopedError::UnknownVersion {
            what: WHAT,
            version: bytes[0].into(),
        });
    }
    if ContentAlgorithm::from_id(bytes[1]) != Some(ContentAlgorithm::Aes256Gcm) {
        return Err(ScopedError::UnknownAlgorithm(bytes[1]));
    }
    let key_version = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
    if key_version == 0 {
        return Err(ScopedError::malformed(WHAT, "key version 0"));
    }
    Ok(Header { key_version })
}

impl ScopeKey {
    /// Seals one field value into its binary envelope.
    pub fn encrypt_field_bytes(&self, ctx: &FieldContext, plaintext: &[u8]) -> Result<Vec<u8>> {
        if plaintext.len() > MAX_FIELD_LEN {
            return Err(ScopedError::TooLarge {
                what: "field",
                len: plaintext.len(),
                max: MAX_FIELD_LEN,
            });
        }
        let mut out = vec![0u8; FIELD_OVERHEAD + plaintext.len()];
        out[0] = FIELD_VERSION;
        out[1] = ContentAlgorithm::Aes256Gcm.id();
        out[2..6].copy_from_slice(&self.version().get().to_be_bytes());
        let (header, sealed) = out.split_at_mut(FIELD_HEADER_LEN);
        let aad = aad(self.scope(), ctx, header);
        self.field_cipher().seal_to(&aad, plaintext, sealed);
        Ok(out)
    }

    /// Seals one field value into its text envelope (`atrf:…`).
    pub fn encrypt_field(&self, ctx: &FieldContext, plaintext: &[u8]) -> Result<String> {
        let bytes = self.encrypt_field_bytes(ctx, plaintext)?;
        Ok(format!("{FIELD_PREFIX}{}", encoding::encode(&bytes)))
    }

    /// Opens a binary envelope sealed under exactly this key.
    fn open_field(&self, ctx: &FieldContext, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (header, sealed) = bytes.split_at(FIELD_HEADER_LEN);
        let aad = aad(self.scope(), ctx, header);
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = self.field_cipher().open_in_place(&aad, &mut buf[..])?.len();
        let nonce_len = ContentAlgorithm::Aes256Gcm.nonce_len();
        buf.copy_within(nonce_len..nonce_len + len, 0);
        buf.truncate(len);
        Ok(buf)
    }
}

/// Text prefix of a data key.
pub const DATA_KEY_PREFIX: &str = "atrdk:";

/// A data key (Vault transit's `datakey`, AWS KMS's `GenerateDataKey`): a
/// fresh 256-bit key for an application to seal a large object with
/// itself, and the same key sealed as the field envelope of its (table,
/// column, row). The app keeps only the envelope; opening it is a field's
/// decryption (audited, refused after the scope's shred), and gives the
/// key's text back.
pub struct DataKey {
    /// `atrdk:` + base64url of the 32 bytes: the plaintext of `envelope`.
    pub key: Zeroizing<String>,
    /// `atrf:…`, bound to the scope, table, column, row and key version.
    pub envelope: String,
}

impl DataKey {
    /// The 32 bytes of a data key's text (the plaintext of its envelope).
    pub fn bytes_from_text(text: &str) -> Result<SecretKey> {
        let body = text
            .strip_prefix(DATA_KEY_PREFIX)
            .ok_or_else(|| ScopedError::malformed("data key", "it does not start with atrdk:"))?;
        let bytes = Zeroizing::new(encoding::decode("data key", body)?);
        SecretKey::from_slice(&bytes)
            .ok_or_else(|| ScopedError::malformed("data key", "not 32 bytes"))
    }
}

impl ScopeKey {
    /// A new data key for the field `ctx`, sealed under this key.
    pub fn data_key(&self, ctx: &FieldContext) -> Result<DataKey> {
        let secret = SecretKey::random();
        let key = Zeroizing::new(format!(
            "{DATA_KEY_PREFIX}{}",
            encoding::encode(secret.expose())
        ));
        let envelope = self.encrypt_field(ctx, key.as_bytes())?;
        Ok(DataKey { key, envelope })
    }
}

/// The key version an envelope was sealed under, without opening it
/// (to find rows that still need a rewrap).
pub fn field_key_version(text: &str) -> Result<u32> {
    Ok(parse_header(&decode_text(text)?)?.key_version)
}

fn decode_text(text: &str) -> Result<Vec<u8>> {
    let body = text
        .strip_prefix(FIELD_PREFIX)
        .ok_or_else(|| ScopedError::malformed(WHAT, "it does not start with atrf:"))?;
    if body.len() > (MAX_FIELD_LEN + FIELD_OVERHEAD).div_ceil(3) * 4 {
        return Err(ScopedError::TooLarge {
            what: WHAT,
            len: text.len(),
            max: MAX_FIELD_LEN,
        });
    }
    encoding::decode(WHAT, body)
}

impl Keyring {
    /// Opens a binary envelope with whichever of this scope's key versions
    /// sealed it.
    pub fn decrypt_field_bytes(
        &self,
        ctx: &FieldContext,
        bytes: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let header = parse_header(bytes)?;
        self.get(header.key_version)?.open_field(ctx, bytes)
    }

    /// Opens a text envelope (`atrf:…`).
    pub fn decrypt_field(&self, ctx: &FieldContext, text: &str) -> Result<Zeroizing<Vec<u8>>> {
        self.decrypt_field_bytes(ctx, &decode_text(text)?)
    }

    /// Opens a text envelope and seals it again under the current version,
    /// inside this process: the plaintext never leaves it. An envelope
    /// already under the current version is returned as it is (after it
    /// has been checked).
    pub fn rewrap_field(&self, ctx: &FieldContext, text: &str) -> Result<String> {
        let bytes = decode_text(text)?;
        let header = parse_header(&bytes)?;
        let plain = self.get(header.key_version)?.open_field(ctx, &bytes)?;
        if header.key_version == self.current().version().get() {
            return Ok(text.to_string());
        }
        self.current().encrypt_field(ctx, &plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ClientShare, ScopeSecret};
    use crate::name::KeyVersion;

    fn key(scope: &str, version: u32, secret: &ScopeSecret) -> ScopeKey {
        ScopeKey::new(
            ScopeId::new(scope).unwrap(),
            KeyVersion::new(version).unwrap(),
            secret,
            None,
        )
    }

    fn ctx(row: &str) -> FieldContext {
        FieldContext::new("users", "email", row).unwrap()
    }

    #[test]
    fn a_data_key_opens_as_its_field_and_only_there() {
        let secret = ScopeSecret::random();
        let ring = Keyring::new(key("user:1", 1, &secret));
        let made = ring.current().data_key(&ctx("r1")).unwrap();
        assert!(made.key.starts_with(DATA_KEY_PREFIX));
        assert!(made.envelope.starts_with(FIELD_PREFIX));
        let opened = ring.decrypt_field(&ctx("r1"), &made.envelope).unwrap();
        assert_eq!(&opened[..], made.key.as_bytes());
        let bytes = DataKey::bytes_from_text(&made.key).unwrap();
        assert_eq!(
            format!("{DATA_KEY_PREFIX}{}", encoding::encode(bytes.expose())),
            *made.key
        );
        // Two data keys of one field differ; another row does not open it.
        let other = ring.current().data_key(&ctx("r1")).unwrap();
        assert_ne!(other.key, made.key);
        assert_eq!(
            ring.decrypt_field(&ctx("r2"), &made.envelope)
                .unwrap_err()
                .code(),
            "authentication_failed"
        );
        for bad in ["atrdk:", "atrdk:AAAA", "atrf:AAAA", "atrdk:!!"] {
            assert_eq!(
                DataKey::bytes_from_text(bad).err().map(|e| e.code()),
                Some("malformed"),
                "{bad}"
            );
        }
    }

    #[test]
    fn round_trip_text_and_bytes() {
        let secret = ScopeSecret::random();
        let ring = Keyring::new(key("user:1", 1, &secret));
        for len in [0, 1, 15, 16, 64, 4096] {
            let plain = vec![0xa5u8; len];
            let text = ring.current().encrypt_field(&ctx("r1"), &plain).unwrap();
            assert!(text.starts_with("atrf:"));
            assert_eq!(
                &ring.decrypt_field(&ctx("r1"), &text).unwrap()[..],
                &plain[..]
            );
            let bytes = ring
                .current()
                .encrypt_field_bytes(&ctx("r1"), &plain)
                .unwrap();
            assert_eq!(bytes.len(), plain.len() + FIELD_OVERHEAD);
            assert_eq!(
                &ring.decrypt_field_bytes(&ctx("r1"), &bytes).unwrap()[..],
                &plain[..]
            );
        }
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let ring = Keyring::new(key("user:1", 1, &ScopeSecret::random()));
        let a = ring.current().encrypt_field(&ctx("r1"), b"same").unwrap();
        let b = ring.current().encrypt_field(&ctx("r1"), b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn moved_ciphertext_is_refused() {
        let secret = ScopeSecret::random();
        let ring = Keyring::new(key("user:1", 1, &secret));
        let text = ring
            .current()
            .encrypt_field(&ctx("r1"), b"alice@example.org")
            .unwrap();
        for other in [
            FieldContext::new("users", "email", "r2").unwrap(),
            FieldContext::new("users", "phone", "r1").unwrap(),
            FieldContext::new("admins", "email", "r1").unwrap(),
        ] {
            assert_eq!(
                ring.decrypt_field(&other, &text).unwrap_err(),
                ScopedError::Authentication
            );
        }
        // The same secret under another scope id is another key.
        let elsewhere = Keyring::new(key("user:2", 1, &secret));
        assert_eq!(
            elsewhere.decrypt_field(&ctx("r1"), &text).unwrap_err(),
            ScopedError::Authentication
        );
        // A claimed key version that is not the sealing one.
        let mut ring2 = Keyring::new(key("user:1", 1, &secret));
        ring2.insert(key("user:1", 2, &secret)).unwrap();
        let mut bytes = decode_text(&text).unwrap();
        bytes[5] = 2;
        assert_eq!(
            ring2.decrypt_field_bytes(&ctx("r1"), &bytes).unwrap_err(),
            ScopedError::Authentication
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let ring = Keyring::new(key("user:1", 1, &ScopeSecret::random()));
        let bytes = ring
            .current()
            .encrypt_field_bytes(&ctx("r1"), b"secret")
            .unwrap();
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                ring.decrypt_field_bytes(&ctx("r1"), &bad).is_err(),
                "bit {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                ring.decrypt_field_bytes(&ctx("r1"), &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_text_has_clear_errors() {
        let ring = Keyring::new(key("user:1", 1, &ScopeSecret::random()));
        assert_eq!(
            ring.decrypt_field(&ctx("r"), "plain").unwrap_err().code(),
            "malformed"
        );
        assert_eq!(
            ring.decrypt_field(&ctx("r"), "atrf:!!").unwrap_err().code(),
            "malformed"
        );
        assert_eq!(
            ring.decrypt_field(&ctx("r"), "atrf:AAAA")
                .unwrap_err()
                .code(),
            "malformed"
        );
        let mut bytes = ring.current().encrypt_field_bytes(&ctx("r"), b"x").unwrap();
        bytes[0] = 9;
        assert_eq!(
            ring.decrypt_field_bytes(&ctx("r"), &bytes).unwrap_err(),
            ScopedError::UnknownVersion {
                what: WHAT,
                version: 9
            }
        );
        bytes[0] = 1;
        bytes[1] = 77;
        assert_eq!(
            ring.decrypt_field_bytes(&ctx("r"), &bytes).unwrap_err(),
            ScopedError::UnknownAlgorithm(77)
        );
        let big = vec![0u8; MAX_FIELD_LEN + 1];
        assert_eq!(
            ring.current()
                .encrypt_field(&ctx("r"), &big)
                .unwrap_err()
                .code(),
            "too_large"
        );
    }

    #[test]
    fn rotation_rewraps_and_the_minimum_retires_old_versions() {
        let scope = "org:acme";
        let old = key(scope, 1, &ScopeSecret::random());
        let text = old.encrypt_field(&ctx("r1"), b"v").unwrap();
        let mut ring = Keyring::new(old);
        ring.insert(key(scope, 2, &ScopeSecret::random())).unwrap();
        let new = ring.rewrap_field(&ctx("r1"), &text).unwrap();
        assert_eq!(field_key_version(&text).unwrap(), 1);
        assert_eq!(field_key_version(&new).unwrap(), 2);
        assert_eq!(ring.rewrap_field(&ctx("r1"), &new).unwrap(), new);
        ring.set_minimum(KeyVersion::new(2).unwrap()).unwrap();
        assert_eq!(
            ring.decrypt_field(&ctx("r1"), &text).unwrap_err().code(),
            "key_version_retired"
        );
        assert_eq!(&ring.decrypt_field(&ctx("r1"), &new).unwrap()[..], b"v");
    }

    #[test]
    fn without_the_client_share_the_scope_stays_sealed() {
        let secret = ScopeSecret::random();
        let share = ClientShare::random();
        let id = ScopeId::new("user:7").unwrap();
        let with = ScopeKey::new(id.clone(), KeyVersion::FIRST, &secret, Some(&share));
        let text = with.encrypt_field(&ctx("r1"), b"profile").unwrap();
        let without = Keyring::new(ScopeKey::new(id.clone(), KeyVersion::FIRST, &secret, None));
        assert_eq!(
            without.decrypt_field(&ctx("r1"), &text).unwrap_err(),
            ScopedError::Authentication
        );
        let wrong = Keyring::new(ScopeKey::new(
            id.clone(),
            KeyVersion::FIRST,
            &secret,
            Some(&ClientShare::random()),
        ));
        assert_eq!(
            wrong.decrypt_field(&ctx("r1"), &text).unwrap_err(),
            ScopedError::Authentication
        );
        let right = Keyring::new(ScopeKey::new(id, KeyVersion::FIRST, &secret, Some(&share)));
        assert_eq!(
            &right.decrypt_field(&ctx("r1"), &text).unwrap()[..],
            b"profile"
        );
    }
}
