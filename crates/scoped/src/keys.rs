//! Scope keys: the random secret kept only wrapped under the records key,
//! the client share that may be mixed into it, the effective key of one
//! version, and the keyring of a scope's versions.

use std::collections::BTreeMap;
use std::fmt;

use atrest_core::{BlockCipher, Canonical, ContentAlgorithm, SecretKey, labels};

use crate::encoding;
use crate::error::{Result, ScopedError};
use crate::name::{KeyVersion, ScopeId};

/// A scope's random 256-bit secret for one key version. It exists in clear
/// only while a request uses it; at rest it is always wrapped
/// ([`crate::WrappedScopeKey`]).
#[derive(Clone)]
pub struct ScopeSecret(pub(crate) SecretKey);

impl ScopeSecret {
    pub fn random() -> Self {
        Self(SecretKey::random())
    }

    /// For known-answer tests and for keys unwrapped elsewhere.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretKey::from_bytes(bytes))
    }
}

impl fmt::Debug for ScopeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScopeSecret([redacted])")
    }
}

/// The half of a scope's key that only the client holds (a cookie or a
/// token): the server cannot open the scope without it. Never stored by
/// the server; text form `atrcs:` + base64url of 32 bytes.
#[derive(Clone)]
pub struct ClientShare(pub(crate) SecretKey);

/// Text prefix of a client share.
pub const CLIENT_SHARE_PREFIX: &str = "atrcs:";

impl ClientShare {
    pub fn random() -> Self {
        Self(SecretKey::random())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretKey::from_bytes(bytes))
    }

    /// The text to hand to the client (set as a cookie, for example).
    pub fn to_text(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!(
            "{CLIENT_SHARE_PREFIX}{}",
            encoding::encode(self.0.expose())
        ))
    }

    pub fn from_text(text: &str) -> Result<Self> {
        let body = text.strip_prefix(CLIENT_SHARE_PREFIX).ok_or_else(|| {
            ScopedError::malformed("client share", "it does not start with atrcs:")
        })?;
        let bytes = zeroize::Zeroizing::new(encoding::decode("client share", body)?);
        SecretKey::from_slice(&bytes)
            .map(Self)
            .ok_or_else(|| ScopedError::malformed("client share", "not 32 bytes"))
    }
}

impl fmt::Debug for ClientShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientShare([redacted])")
    }
}

/// The key that seals one scope's data under one version: the scope secret,
/// combined with the client share when the scope has one. Every per-purpose
/// key (fields, indexes, streams, group wraps) derives from it.
pub struct ScopeKey {
    scope: ScopeId,
    version: KeyVersion,
    root: SecretKey,
    field: BlockCipher,
}

impl ScopeKey {
    /// Opens an unwrapped scope for this request. A scope created with a
    /// client share refuses to open without one (`client_share_required`),
    /// and one created without refuses a share (`client_share_unexpected`),
    /// so no caller can seal a share scope's data under the server's half
    /// alone.
    pub fn open(unwrapped: &UnwrappedScope, share: Option<&ClientShare>) -> Result<Self> {
        match (unwrapped.needs_share, share) {
            (true, None) => Err(ScopedError::ClientShareRequired(
                unwrapped.scope.to_string(),
            )),
            (false, Some(_)) => Err(ScopedError::ClientShareUnexpected(
                unwrapped.scope.to_string(),
            )),
            _ => Ok(Self::new(
                unwrapped.scope.clone(),
                unwrapped.version,
                &unwrapped.secret,
                share,
            )),
        }
    }

    /// The effective key of `scope` at `version` from a raw secret: for
    /// known-answer tests and callers that keep secrets themselves;
    /// applications go through [`ScopeKey::open`]. Always HKDF of the
    /// secret (and the share, when given) with the scope, the version and
    /// whether a share is used, so neither a version nor the share flag can
    /// be changed without changing every key.
    pub fn new(
        scope: ScopeId,
        version: KeyVersion,
        secret: &ScopeSecret,
        share: Option<&ClientShare>,
    ) -> Self {
        let mut salt = Canonical::new(labels::domain::SCOPE_SESSION, 1);
        salt.field(scope.as_bytes())
            .field(&version.get().to_be_bytes())
            .field(&[u8::from(share.is_some())]);
        let salt = salt.into_bytes();
        let root = match share {
            None => secret.0.derive(&salt, labels::SCOPE_SESSION),
            Some(share) => secret.0.combine(&share.0, &salt, labels::SCOPE_SESSION),
        };
        let field_key = root.derive(scope.as_bytes(), labels::SCOPE_FIELD_KEY);
        let field = BlockCipher::new(ContentAlgorithm::Aes256Gcm, &field_key);
        Self {
            scope,
            version,
            root,
            field,
        }
    }

    pub fn scope(&self) -> &ScopeId {
        &self.scope
    }

    pub fn version(&self) -> KeyVersion {
        self.version
    }

    pub(crate) fn field_cipher(&self) -> &BlockCipher {
        &self.field
    }

    pub(crate) fn derive(&self, salt: &[u8], label: &[u8]) -> SecretKey {
        self.root.derive(salt, label)
    }
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeKey")
            .field("scope", &self.scope)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A scope's secret as unwrapped from storage, with what its wrap says
/// about it (authenticated): its version and whether it needs a client
/// share. Only [`ScopeKey::open`] turns it into a key.
pub struct UnwrappedScope {
    pub(crate) scope: ScopeId,
    pub(crate) version: KeyVersion,
    pub(crate) needs_share: bool,
    pub(crate) secret: ScopeSecret,
}

impl UnwrappedScope {
    /// From a raw secret: for known-answer vectors and callers that keep
    /// secrets themselves. Applications get it from
    /// [`crate::RecordsKey::unwrap_scope`].
    pub fn from_secret(
        scope: ScopeId,
        version: KeyVersion,
        needs_share: bool,
        secret: ScopeSecret,
    ) -> Self {
        Self {
            scope,
            version,
            needs_share,
            secret,
        }
    }

    pub fn scope(&self) -> &ScopeId {
        &self.scope
    }

    pub fn version(&self) -> KeyVersion {
        self.version
    }

    pub fn needs_client_share(&self) -> bool {
        self.needs_share
    }
}

impl fmt::Debug for UnwrappedScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrappedScope")
            .field("scope", &self.scope)
            .field("version", &self.version)
            .field("needs_share", &self.needs_share)
            .finish_non_exhaustive()
    }
}

/// Every loaded version of one scope's key, the current one (which seals),
/// and the minimum version that may still be opened (older data must be
/// rewrapped first; raising the minimum is how a rotation completes).
pub struct Keyring {
    scope: ScopeId,
    keys: BTreeMap<KeyVersion, ScopeKey>,
    minimum: KeyVersion,
}

impl Keyring {
    /// A keyring holding one key, which is current.
    pub fn new(key: ScopeKey) -> Self {
        let mut keys = BTreeMap::new();
        let scope = key.scope.clone();
        keys.insert(key.version, key);
        Self {
            scope,
            keys,
            minimum: KeyVersion::FIRST,
        }
    }

    /// Adds a version. The newest version is the current one.
    pub fn insert(&mut self, key: ScopeKey) -> Result<()> {
        if key.scope != self.scope {
            return Err(ScopedError::InvalidName {
                what: "scope id",
                why: format!(
                    "a key of {} cannot join the keyring of {}",
                    key.scope, self.scope
                ),
            });
        }
        if self.keys.contains_key(&key.version) {
            return Err(ScopedError::InvalidName {
                what: "key version",
                why: format!(
                    "{} of {} is already in the keyring",
                    key.version, self.scope
                ),
            });
        }
        self.keys.insert(key.version, key);
        Ok(())
    }

    /// Versions below `minimum` are refused from now on. The minimum only
    /// rises, and never above the current version (whose data would then
    /// be unreadable).
    pub fn set_minimum(&mut self, minimum: KeyVersion) -> Result<()> {
        let current = self.current().version();
        if minimum > current || minimum < self.minimum {
            return Err(ScopedError::InvalidName {
                what: "minimum key version",
                why: format!("{minimum} is outside {}..={current}", self.minimum),
            });
        }
        self.minimum = minimum;
        Ok(())
    }

    pub fn minimum(&self) -> KeyVersion {
        self.minimum
    }

    pub fn scope(&self) -> &ScopeId {
        &self.scope
    }

    /// The newest version: the one that seals.
    pub fn current(&self) -> &ScopeKey {
        self.keys
            .values()
            .next_back()
            .expect("a keyring holds at least one key")
    }

    /// The key for `version`, if it may be used to open data.
    pub fn get(&self, version: u32) -> Result<&ScopeKey> {
        if version < self.minimum.get() {
            return Err(ScopedError::KeyVersionRetired {
                scope: self.scope.to_string(),
                version,
                minimum: self.minimum.get(),
            });
        }
        KeyVersion::new(version)
            .ok()
            .and_then(|v| self.keys.get(&v))
            .ok_or_else(|| ScopedError::UnknownKeyVersion {
                scope: self.scope.to_string(),
                version,
            })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("scope", &self.scope)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .field("minimum", &self.minimum)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_share_text_round_trips_and_rejects_garbage() {
        let share = ClientShare::from_bytes([7; 32]);
        let text = share.to_text();
        assert!(text.starts_with("atrcs:"));
        let back = ClientShare::from_text(&text).unwrap();
        assert_eq!(back.0.expose(), share.0.expose());
        assert_eq!(
            ClientShare::from_text("atrcs:AAAA").unwrap_err().code(),
            "malformed"
        );
        assert_eq!(
            ClientShare::from_text("nope").unwrap_err().code(),
            "malformed"
        );
    }

    #[test]
    fn the_share_changes_the_key() {
        let scope = ScopeId::new("user:1").unwrap();
        let secret = ScopeSecret::from_bytes([1; 32]);
        let plain = ScopeKey::new(scope.clone(), KeyVersion::FIRST, &secret, None);
        let shared = ScopeKey::new(
            scope.clone(),
            KeyVersion::FIRST,
            &secret,
            Some(&ClientShare::from_bytes([2; 32])),
        );
        let other = ScopeKey::new(
            scope,
            KeyVersion::FIRST,
            &secret,
            Some(&ClientShare::from_bytes([3; 32])),
        );
        assert_ne!(plain.root.expose(), shared.root.expose());
        assert_ne!(shared.root.expose(), other.root.expose());
    }

    #[test]
    fn keyring_refuses_retired_and_unknown_versions() {
        let scope = ScopeId::new("org:acme").unwrap();
        let v = |n| KeyVersion::new(n).unwrap();
        let mut ring = Keyring::new(ScopeKey::new(
            scope.clone(),
            v(1),
            &ScopeSecret::random(),
            None,
        ));
        ring.insert(ScopeKey::new(
            scope.clone(),
            v(2),
            &ScopeSecret::random(),
            None,
        ))
        .unwrap();
        assert_eq!(ring.current().version(), v(2));
        assert!(ring.get(1).is_ok());
        ring.set_minimum(v(2)).unwrap();
        assert!(ring.set_minimum(v(1)).is_err());
        assert!(ring.set_minimum(v(3)).is_err());
        assert_eq!(ring.get(1).unwrap_err().code(), "key_version_retired");
        assert_eq!(ring.get(3).unwrap_err().code(), "unknown_key_version");
        let stranger = ScopeKey::new(
            ScopeId::new("org:other").unwrap(),
            v(3),
            &ScopeSecret::random(),
            None,
        );
        assert_eq!(ring.insert(stranger).unwrap_err().code(), "invalid_name");
        let again = ScopeKey::new(scope, v(2), &ScopeSecret::random(), None);
        assert_eq!(ring.insert(again).unwrap_err().code(), "invalid_name");
    }
}
