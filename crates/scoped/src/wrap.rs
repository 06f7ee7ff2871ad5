//! Scope secrets at rest: wrapped under the records key (held by the key
//! authority, or by a vault keyslot), and group secrets wrapped for each
//! member (docs/format.md §17.2).
//!
//! Both are `version (1) ‖ algorithm (1) ‖ key version (4, BE) ‖ flags (1)
//! ‖ nonce (12) ‖ sealed secret (32) ‖ tag (16)`, 67 bytes; text `atrw:` +
//! base64url. A scope wrap's AAD is `Canonical(SCOPE_KEY_WRAP, 1)` over the
//! scope id and the 7 header bytes; its key is HKDF of the records key with
//! the scope id as salt. A group wrap's AAD is `Canonical(GROUP_KEY_WRAP,
//! 1)` over the group id, the member id, the member's key version and the
//! header; its key is HKDF of the member's scope key with the group id as
//! salt, so a member whose scope needs a client share opens the group only
//! during that member's request.

use atrest_core::{BlockCipher, Canonical, ContentAlgorithm, SecretKey, labels};
use zeroize::Zeroizing;

use crate::encoding;
use crate::error::{Result, ScopedError};
use crate::keys::{ClientShare, ScopeKey, ScopeSecret, UnwrappedScope};
use crate::name::{KeyVersion, ScopeId};

pub const WRAP_VERSION: u8 = 1;
pub const WRAP_PREFIX: &str = "atrw:";
pub const WRAP_HEADER_LEN: usize = 7;
pub const WRAPPED_LEN: usize = WRAP_HEADER_LEN + 12 + 32 + 16;
/// Flag: the scope's effective key also needs the client's share.
pub const FLAG_CLIENT_SHARE: u8 = 1;

const WHAT: &str = "wrapped scope key";

/// The key that wraps scope secrets: the vault's or authority's records key
/// (HKDF subkey `atrest v1 records key` of a master key).
pub struct RecordsKey(SecretKey);

impl RecordsKey {
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    /// The records key of a vault or authority master key.
    pub fn from_master(master: &SecretKey) -> Self {
        Self(master.derive(b"", labels::RECORDS_KEY))
    }
}

impl std::fmt::Debug for RecordsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordsKey([redacted])")
    }
}

/// A scope secret sealed for storage, with what it is for in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    bytes: [u8; WRAPPED_LEN],
}

impl Wrapped {
    pub fn key_version(&self) -> KeyVersion {
        KeyVersion::new(u32::from_be_bytes(
            self.bytes[2..6].try_into().expect("4 bytes"),
        ))
        .expect("checked when parsed or built")
    }

    /// Whether the scope's key needs the client's share as well.
    pub fn needs_client_share(&self) -> bool {
        self.bytes[6] & FLAG_CLIENT_SHARE != 0
    }

    pub fn as_bytes(&self) -> &[u8; WRAPPED_LEN] {
        &self.bytes
    }

    pub fn to_text(&self) -> String {
        format!("{WRAP_PREFIX}{}", encoding::encode(&self.bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; WRAPPED_LEN] = bytes.try_into().map_err(|_| {
            ScopedError::malformed(WHAT, format!("{} bytes, not {WRAPPED_LEN}", bytes.len()))
        })?;
        if bytes[0] != WRAP_VERSION {
            return Err(ScopedError::UnknownVersion {
                what: WHAT,
                version: bytes[0].into(),
            });
        }
        if ContentAlgorithm::from_id(bytes[1]) != Some(ContentAlgorithm::Aes256Gcm) {
            return Err(ScopedError::UnknownAlgorithm(bytes[1]));
        }
        if u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes")) == 0 {
            return Err(ScopedError::malformed(WHAT, "key version 0"));
        }
        if bytes[6] & !FLAG_CLIENT_SHARE != 0 {
            return Err(ScopedError::malformed(
                WHAT,
                format!("unknown flags {:#04x}", bytes[6]),
            ));
        }
        Ok(Self { bytes })
    }

    pub fn from_text(text: &str) -> Result<Self> {
        let body = text
            .strip_prefix(WRAP_PREFIX)
            .ok_or_else(|| ScopedError::malformed(WHAT, "it does not start with atrw:"))?;
        if body.len() > 2 * WRAPPED_LEN {
            return Err(ScopedError::malformed(WHAT, "too long"));
        }
        Self::from_bytes(&encoding::decode(WHAT, body)?)
    }

    fn seal(
        kek: &SecretKey,
        aad_of: impl Fn(&[u8]) -> Vec<u8>,
        version: KeyVersion,
        flags: u8,
        secret: &ScopeSecret,
    ) -> Self {
        let mut bytes = [0u8; WRAPPED_LEN];
        bytes[0] = WRAP_VERSION;
        bytes[1] = ContentAlgorithm::Aes256Gcm.id();
        bytes[2..6].copy_from_slice(&version.get().to_be_bytes());
        bytes[6] = flags;
        let (header, sealed) = bytes.split_at_mut(WRAP_HEADER_LEN);
        let aad = aad_of(header);
        BlockCipher::new(ContentAlgorithm::Aes256Gcm, kek).seal_to(&aad, secret.0.expose(), sealed);
        Self { bytes }
    }

    fn open(&self, kek: &SecretKey, aad_of: impl Fn(&[u8]) -> Vec<u8>) -> Result<ScopeSecret> {
        let (header, sealed) = self.bytes.split_at(WRAP_HEADER_LEN);
        let aad = aad_of(header);
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain =
            BlockCipher::new(ContentAlgorithm::Aes256Gcm, kek).open_in_place(&aad, &mut buf[..])?;
        let key = SecretKey::from_slice(plain).ok_or(ScopedError::Authentication)?;
        Ok(ScopeSecret(key))
    }
}

fn scope_aad(scope: &ScopeId) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |header| {
        let mut aad = Canonical::new(labels::domain::SCOPE_KEY_WRAP, WRAP_VERSION);
        aad.field(scope.as_bytes()).field(header);
        aad.into_bytes()
    }
}

fn group_aad<'a>(group: &'a ScopeId, member: &'a ScopeKey) -> impl Fn(&[u8]) -> Vec<u8> + 'a {
    move |header| {
        let mut aad = Canonical::new(labels::domain::GROUP_KEY_WRAP, WRAP_VERSION);
        aad.field(group.as_bytes())
            .field(member.scope().as_bytes())
            .field(&member.version().get().to_be_bytes())
            .field(header);
        aad.into_bytes()
    }
}

impl RecordsKey {
    fn kek(&self, scope: &ScopeId) -> SecretKey {
        self.0.derive(scope.as_bytes(), labels::SCOPE_WRAP)
    }

    /// Wraps `secret` as `scope`'s key at `version`.
    pub fn wrap_scope(
        &self,
        scope: &ScopeId,
        version: KeyVersion,
        needs_client_share: bool,
        secret: &ScopeSecret,
    ) -> Wrapped {
        let flags = if needs_client_share {
            FLAG_CLIENT_SHARE
        } else {
            0
        };
        Wrapped::seal(&self.kek(scope), scope_aad(scope), version, flags, secret)
    }

    /// Unwraps `scope`'s secret. A wrap made for another scope, or changed,
    /// fails to authenticate.
    pub fn unwrap_scope(&self, scope: &ScopeId, wrapped: &Wrapped) -> Result<UnwrappedScope> {
        let secret = wrapped.open(&self.kek(scope), scope_aad(scope))?;
        Ok(UnwrappedScope {
            scope: scope.clone(),
            version: wrapped.key_version(),
            needs_share: wrapped.needs_client_share(),
            secret,
        })
    }

    /// Opens `scope`'s wrapped key and wraps the same secret under `to`,
    /// with the same key version and flags (keyd moving a scope to a new
    /// bucket key, decision 0020). Fails, changing nothing, if it does not
    /// open.
    pub fn rewrap_scope(
        &self,
        to: &RecordsKey,
        scope: &ScopeId,
        wrapped: &Wrapped,
    ) -> Result<Wrapped> {
        let unwrapped = self.unwrap_scope(scope, wrapped)?;
        Ok(to.wrap_scope(
            scope,
            unwrapped.version,
            unwrapped.needs_share,
            &unwrapped.secret,
        ))
    }

    /// Creates a scope: a fresh secret, wrapped, and the client's share
    /// when the scope takes one (hand it to the client; it is not kept).
    pub fn create_scope(
        &self,
        scope: &ScopeId,
        needs_client_share: bool,
    ) -> (Wrapped, Option<ClientShare>) {
        let wrapped = self.wrap_scope(
            scope,
            KeyVersion::FIRST,
            needs_client_share,
            &ScopeSecret::random(),
        );
        (wrapped, needs_client_share.then(ClientShare::random))
    }
}

impl ScopeKey {
    /// Wraps a group scope's secret for this member.
    pub fn wrap_group(&self, group: &UnwrappedScope) -> Wrapped {
        let kek = self.derive(group.scope.as_bytes(), labels::GROUP_WRAP);
        Wrapped::seal(
            &kek,
            group_aad(&group.scope, self),
            group.version,
            0,
            &group.secret,
        )
    }

    /// Opens a group scope's secret wrapped for this member (open it with
    /// [`ScopeKey::open`] and no share: the member's share already gated it).
    pub fn unwrap_group(&self, group: &ScopeId, wrapped: &Wrapped) -> Result<UnwrappedScope> {
        let kek = self.derive(group.as_bytes(), labels::GROUP_WRAP);
        let secret = wrapped.open(&kek, group_aad(group, self))?;
        Ok(UnwrappedScope {
            scope: group.clone(),
            version: wrapped.key_version(),
            needs_share: false,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keyring;
    use crate::name::FieldContext;

    fn id(s: &str) -> ScopeId {
        ScopeId::new(s).unwrap()
    }

    #[test]
    fn wrap_round_trips_and_is_bound_to_its_scope() {
        let records = RecordsKey::from_master(&SecretKey::random());
        let secret = ScopeSecret::random();
        let w = records.wrap_scope(&id("user:1"), KeyVersion::FIRST, true, &secret);
        assert!(w.needs_client_share());
        let back = Wrapped::from_text(&w.to_text()).unwrap();
        assert_eq!(back, w);
        assert_eq!(
            records
                .unwrap_scope(&id("user:1"), &back)
                .unwrap()
                .secret
                .0
                .expose(),
            secret.0.expose()
        );
        assert_eq!(
            records.unwrap_scope(&id("user:2"), &back).unwrap_err(),
            ScopedError::Authentication
        );
        let other = RecordsKey::from_master(&SecretKey::random());
        assert_eq!(
            other.unwrap_scope(&id("user:1"), &back).unwrap_err(),
            ScopedError::Authentication
        );
        // Dropping the client-share flag, or claiming another version, is
        // detected: the header is in the AAD.
        for (i, v) in [(6usize, 0u8), (5, 2)] {
            let mut bytes = *w.as_bytes();
            bytes[i] = v;
            let forged = Wrapped::from_bytes(&bytes).unwrap();
            assert_eq!(
                records.unwrap_scope(&id("user:1"), &forged).unwrap_err(),
                ScopedError::Authentication
            );
        }
    }

    #[test]
    fn a_rewrap_keeps_secret_version_and_flags_under_the_new_key_only() {
        let (from, to) = (
            RecordsKey::new(SecretKey::random()),
            RecordsKey::new(SecretKey::random()),
        );
        let secret = ScopeSecret::random();
        let version = KeyVersion::new(3).unwrap();
        let w = from.wrap_scope(&id("user:1"), version, true, &secret);
        let moved = from.rewrap_scope(&to, &id("user:1"), &w).unwrap();
        assert_ne!(moved, w);
        assert_eq!(moved.key_version(), version);
        assert!(moved.needs_client_share());
        let back = to.unwrap_scope(&id("user:1"), &moved).unwrap();
        assert_eq!(back.secret.0.expose(), secret.0.expose());
        assert_eq!(
            from.unwrap_scope(&id("user:1"), &moved).unwrap_err(),
            ScopedError::Authentication
        );
        // A wrap for another scope is refused, not moved.
        assert_eq!(
            from.rewrap_scope(&to, &id("user:2"), &w).unwrap_err(),
            ScopedError::Authentication
        );
    }

    #[test]
    fn malformed_wraps_have_clear_errors() {
        assert_eq!(Wrapped::from_text("nope").unwrap_err().code(), "malformed");
        assert_eq!(
            Wrapped::from_text("atrw:AAAA").unwrap_err().code(),
            "malformed"
        );
        let records = RecordsKey::new(SecretKey::random());
        let w = records.wrap_scope(&id("s"), KeyVersion::FIRST, false, &ScopeSecret::random());
        let mut bytes = *w.as_bytes();
        bytes[0] = 2;
        assert_eq!(
            Wrapped::from_bytes(&bytes).unwrap_err().code(),
            "unknown_version"
        );
        let mut bytes = *w.as_bytes();
        bytes[6] = 0x80;
        assert_eq!(Wrapped::from_bytes(&bytes).unwrap_err().code(), "malformed");
        let mut bytes = *w.as_bytes();
        bytes[2..6].copy_from_slice(&[0; 4]);
        assert_eq!(Wrapped::from_bytes(&bytes).unwrap_err().code(), "malformed");
    }

    #[test]
    fn group_members_open_the_group_and_others_do_not() {
        let records = RecordsKey::from_master(&SecretKey::random());
        let (group_wrap, none) = records.create_scope(&id("group:finance"), false);
        assert!(none.is_none());
        let group = records
            .unwrap_scope(&id("group:finance"), &group_wrap)
            .unwrap();
        let (alice_wrap, share) = records.create_scope(&id("user:alice"), true);
        let share = share.unwrap();
        let alice_scope = records
            .unwrap_scope(&id("user:alice"), &alice_wrap)
            .unwrap();
        assert!(alice_scope.needs_client_share());
        assert_eq!(
            ScopeKey::open(&alice_scope, None).unwrap_err().code(),
            "client_share_required"
        );
        let alice = ScopeKey::open(&alice_scope, Some(&share)).unwrap();
        let (bob_wrap, _) = records.create_scope(&id("user:bob"), false);
        let bob_scope = records.unwrap_scope(&id("user:bob"), &bob_wrap).unwrap();
        assert_eq!(
            ScopeKey::open(&bob_scope, Some(&share)).unwrap_err().code(),
            "client_share_unexpected"
        );
        let bob = ScopeKey::open(&bob_scope, None).unwrap();

        let for_alice = alice.wrap_group(&group);
        let for_bob = bob.wrap_group(
            &alice
                .unwrap_group(&id("group:finance"), &for_alice)
                .unwrap(),
        );
        let ctx = FieldContext::new("ledger", "amount", "row-9").unwrap();
        let as_alice = ScopeKey::open(
            &alice
                .unwrap_group(&id("group:finance"), &for_alice)
                .unwrap(),
            None,
        )
        .unwrap();
        let sealed = as_alice.encrypt_field(&ctx, b"42").unwrap();
        let bob_view = Keyring::new(
            ScopeKey::open(
                &bob.unwrap_group(&id("group:finance"), &for_bob).unwrap(),
                None,
            )
            .unwrap(),
        );
        assert_eq!(&bob_view.decrypt_field(&ctx, &sealed).unwrap()[..], b"42");
        // Bob's wrap does not open for alice; without her share alice's key
        // (built by hand, bypassing `open`) does not open hers; another
        // group id does not open it.
        assert_eq!(
            alice
                .unwrap_group(&id("group:finance"), &for_bob)
                .unwrap_err(),
            ScopedError::Authentication
        );
        let alice_no_share = ScopeKey::new(
            id("user:alice"),
            KeyVersion::FIRST,
            &alice_scope.secret,
            None,
        );
        assert_eq!(
            alice_no_share
                .unwrap_group(&id("group:finance"), &for_alice)
                .unwrap_err(),
            ScopedError::Authentication
        );
        assert_eq!(
            alice
                .unwrap_group(&id("group:other"), &for_alice)
                .unwrap_err(),
            ScopedError::Authentication
        );
    }
}
