//! Remote and threshold keyslots: what a vault stores to be opened by one
//! key authority, or by any `k` of `n`.
//!
//! A remote slot (kind 4) holds the authority it belongs to
//! ([`AuthorityRef`]) and the blinded exchange's [`RemoteBinding`] (`S ‖ C`).
//! Its slot secret is the exchange key `K` that the authority's answer
//! unblinds to (`atrest_remote`); nothing secret is stored.
//!
//! A threshold slot (kind 5) holds `n` members, each an authority, a binding
//! and a sealed share. The slot secret is random; it is split `k`-of-`n`
//! with authenticated Shamir shares ([`atrest_remote::split`]), and share
//! `i` is sealed under member `i`'s exchange key:
//!
//! ```text
//! share key_i = HKDF(K_i, salt = vault_id, "atrest v1 threshold share" ‖ u8 i)
//! AAD_i       = "atrest threshold member v1" ‖ vault_id ‖ u8 slot_id ‖ u8 i
//! sealed_i    = AES-256-GCM-Seal(share key_i, AAD_i, share_i)   (112 bytes)
//! ```
//!
//! Every byte of the parameters is also in the slot's AAD (as for every
//! kind), so once the VMK unwraps, the authority, pinned CA, audit key and
//! bindings the host used are proven to be the ones the vault's owner put
//! there. Before that they are untrusted: a changed URL or binding can only
//! make the unlock fail.

use atrest_core::{BlockCipher, ContentAlgorithm, SecretKey, labels};
use atrest_remote::{HostId, RemoteBinding, SHARE_LEN, Share};

use crate::wire::{Reader, Truncated};

/// The version byte that starts remote and threshold parameters.
pub const REMOTE_PARAMS_VERSION: u8 = 1;
/// The version byte of remote parameters that list the authority's
/// replicas (other URLs of the same authority, tried in order).
pub const REMOTE_PARAMS_VERSION_REPLICAS: u8 = 2;
/// Most replica URLs a remote slot lists besides its authority's URL.
pub const MAX_REPLICAS: usize = 8;
/// Longest authority URL, in bytes.
pub const MAX_URL_LEN: usize = 255;
/// Most members of a threshold slot: keeps the parameters far below the
/// 64 KiB config limit and unlock bounded.
pub const MAX_THRESHOLD_MEMBERS: usize = 16;
/// A sealed share: nonce (12) ‖ AES-256-GCM(share) ‖ tag (16).
pub const SEALED_SHARE_LEN: usize = 12 + SHARE_LEN + 16;

/// Which key authority a slot (or threshold member) asks, and how the host
/// recognises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityRef {
    /// `https://host:port`, at most [`MAX_URL_LEN`] bytes.
    pub url: String,
    /// SHA-256 of the DER of the authority's CA certificate: the one trust
    /// anchor for its TLS certificate.
    pub ca_fingerprint: [u8; 32],
    /// The name the authority knows this host by.
    pub host_id: HostId,
    /// The authority's audit log key (Ed25519), to verify its checkpoints.
    pub audit_public_key: [u8; 32],
}

impl AuthorityRef {
    /// Checks what the parser would refuse, so nothing unreadable is written.
    pub fn validate(&self) -> Result<(), String> {
        validate_url(&self.url)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        encode_url(&self.url, out);
        out.extend_from_slice(&self.ca_fingerprint);
        let host = self.host_id.as_str().as_bytes();
        out.push(host.len() as u8);
        out.extend_from_slice(host);
        out.extend_from_slice(&self.audit_public_key);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, String> {
        let url = decode_url(r)?;
        let ca_fingerprint = r.array().map_err(trunc)?;
        let host_len = usize::from(r.u8().map_err(trunc)?);
        let host = std::str::from_utf8(r.bytes(host_len).map_err(trunc)?)
            .map_err(|_| "host id is not UTF-8".to_string())?;
        let host_id = HostId::new(host).map_err(|e| e.to_string())?;
        let audit_public_key = r.array().map_err(trunc)?;
        let authority = Self {
            url,
            ca_fingerprint,
            host_id,
            audit_public_key,
        };
        authority.validate()?;
        Ok(authority)
    }
}

/// Checks a URL as the parser would (authority or replica).
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(format!(
            "authority URL must be 1 to {MAX_URL_LEN} bytes, not {}",
            url.len()
        ));
    }
    if url.bytes().any(|b| b.is_ascii_control()) {
        return Err("authority URL contains control characters".into());
    }
    Ok(())
}

fn encode_url(url: &str, out: &mut Vec<u8>) {
    out.push(url.len() as u8);
    out.extend_from_slice(url.as_bytes());
}

fn decode_url(r: &mut Reader<'_>) -> Result<String, String> {
    let url_len = usize::from(r.u8().map_err(trunc)?);
    Ok(std::str::from_utf8(r.bytes(url_len).map_err(trunc)?)
        .map_err(|_| "authority URL is not UTF-8".to_string())?
        .to_string())
}

fn trunc(t: Truncated) -> String {
    format!("{} truncated", t.0)
}

fn decode_binding(r: &mut Reader<'_>) -> Result<RemoteBinding, String> {
    RemoteBinding::from_bytes(&r.array().map_err(trunc)?)
        .map_err(|e| format!("remote binding: {e}"))
}

/// A slot opened by one key authority (kind 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSlot {
    pub authority: AuthorityRef,
    /// Other URLs of the same authority (replicas sharing its database,
    /// CA, host records and audit log), tried in order after
    /// `authority.url` when it cannot be reached. Empty: version 1.
    pub replicas: Vec<String>,
    pub binding: RemoteBinding,
}

impl RemoteSlot {
    /// The slot for `member`'s enrollment, asking `replicas` after its
    /// authority; checked as the parser would check it.
    pub fn for_member(member: &RemoteMember, replicas: &[String]) -> Result<Self, String> {
        let slot = Self {
            authority: member.authority.clone(),
            replicas: replicas.to_vec(),
            binding: member.binding,
        };
        slot.validate()?;
        Ok(slot)
    }

    /// Checks what the parser would refuse, so nothing unreadable is written.
    pub fn validate(&self) -> Result<(), String> {
        self.authority.validate()?;
        validate_replicas(&self.authority.url, &self.replicas)
    }

    /// Every URL of the authority, in the order a host tries them.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.authority.url.as_str()).chain(self.replicas.iter().map(String::as_str))
    }

    /// Version 1: `1 ‖ AuthorityRef ‖ binding (64)`; with replicas,
    /// version 2: `2 ‖ AuthorityRef ‖ u8 R ‖ R × (u8 len ‖ URL) ‖ binding (64)`.
    /// The same bytes are a LUKS volume's binding in its `atrest` token.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 1 + self.authority.url.len() + 64 + 160);
        if self.replicas.is_empty() {
            out.push(REMOTE_PARAMS_VERSION);
            self.authority.encode(&mut out);
        } else {
            out.push(REMOTE_PARAMS_VERSION_REPLICAS);
            self.authority.encode(&mut out);
            out.push(self.replicas.len() as u8);
            for url in &self.replicas {
                encode_url(url, &mut out);
            }
        }
        out.extend_from_slice(&self.binding.to_bytes());
        out
    }

    /// Parses [`RemoteSlot::encode`]'s bytes, refusing anything else.
    pub fn decode(params: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(params, "remote keyslot parameters");
        let version = r.u8().map_err(trunc)?;
        let with_replicas = match version {
            REMOTE_PARAMS_VERSION => false,
            REMOTE_PARAMS_VERSION_REPLICAS => true,
            other => {
                return Err(format!(
                    "remote keyslot parameters have version {other}; upgrade atrest"
                ));
            }
        };
        let authority = AuthorityRef::decode(&mut r)?;
        let mut replicas = Vec::new();
        if with_replicas {
            let count = usize::from(r.u8().map_err(trunc)?);
            if count == 0 {
                return Err("remote keyslot version 2 lists no replica".into());
            }
            if count > MAX_REPLICAS {
                return Err(format!(
                    "remote keyslot lists {count} replicas, at most {MAX_REPLICAS}"
                ));
            }
            for _ in 0..count {
                replicas.push(decode_url(&mut r)?);
            }
            validate_replicas(&authority.url, &replicas)?;
        }
        let binding = decode_binding(&mut r)?;
        no_trailing(&r)?;
        Ok(Self {
            authority,
            replicas,
            binding,
        })
    }
}

/// Replica URLs: each a valid URL, at most [`MAX_REPLICAS`], none repeated
/// (nor the authority's own URL).
pub fn validate_replicas(primary: &str, replicas: &[String]) -> Result<(), String> {
    if replicas.len() > MAX_REPLICAS {
        return Err(format!(
            "at most {MAX_REPLICAS} replica URLs per authority, not {}",
            replicas.len()
        ));
    }
    for (i, url) in replicas.iter().enumerate() {
        validate_url(url)?;
        if url == primary || replicas[..i].contains(url) {
            return Err(format!("replica URL {url} is listed twice"));
        }
    }
    Ok(())
}

fn check_version(r: &mut Reader<'_>) -> Result<(), String> {
    match r.u8().map_err(trunc)? {
        REMOTE_PARAMS_VERSION => Ok(()),
        other => Err(format!(
            "remote keyslot parameters have version {other}; upgrade atrest"
        )),
    }
}

fn no_trailing(r: &Reader<'_>) -> Result<(), String> {
    if r.is_empty() {
        Ok(())
    } else {
        Err("keyslot parameters have trailing bytes".into())
    }
}

/// One authority of a threshold slot, with its sealed share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdMember {
    pub authority: AuthorityRef,
    pub binding: RemoteBinding,
    pub(crate) sealed_share: Vec<u8>,
}

impl ThresholdMember {
    /// The sealed share as stored: nonce ‖ ciphertext ‖ tag
    /// ([`SEALED_SHARE_LEN`] bytes).
    pub fn sealed_share(&self) -> &[u8] {
        &self.sealed_share
    }
}

/// A slot opened by any `threshold` of its members (kind 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdSlot {
    pub threshold: u8,
    /// Member `i` (1-based, as the share index) is `members[i - 1]`.
    pub members: Vec<ThresholdMember>,
}

/// An authority's part in a new remote or threshold slot: where it is and
/// the exchange key its enrollment gave ([`atrest_remote::enroll`]).
pub struct RemoteMember {
    pub authority: AuthorityRef,
    pub binding: RemoteBinding,
    pub key: SecretKey,
}

fn share_key(key: &SecretKey, vault_id: &[u8; 16], index: u8) -> SecretKey {
    let mut info = labels::THRESHOLD_SHARE_KEY.to_vec();
    info.push(index);
    key.derive(vault_id, &info)
}

fn share_aad(vault_id: &[u8; 16], slot_id: u8, index: u8) -> Vec<u8> {
    let mut ad = labels::domain::THRESHOLD_MEMBER.to_vec();
    ad.extend_from_slice(vault_id);
    ad.push(slot_id);
    ad.push(index);
    ad
}

pub(crate) fn seal_share(
    vault_id: &[u8; 16],
    slot_id: u8,
    key: &SecretKey,
    share: &Share,
) -> Vec<u8> {
    let index = share.index();
    let cipher = BlockCipher::new(
        ContentAlgorithm::Aes256Gcm,
        &share_key(key, vault_id, index),
    );
    cipher.seal(&share_aad(vault_id, slot_id, index), &share.to_bytes()[..])
}

impl ThresholdSlot {
    /// Splits a fresh slot secret among `members` for slot `slot_id`;
    /// returns the slot and the secret the VMK is wrapped under (or, for a
    /// LUKS binding, the secret its passphrase is derived from).
    pub fn create(
        vault_id: &[u8; 16],
        slot_id: u8,
        threshold: u8,
        members: &[RemoteMember],
    ) -> Result<(Self, SecretKey), String> {
        if members.len() > MAX_THRESHOLD_MEMBERS {
            return Err(format!(
                "a threshold slot has at most {MAX_THRESHOLD_MEMBERS} authorities"
            ));
        }
        for m in members {
            m.authority.validate()?;
        }
        let secret = SecretKey::random();
        let count = members.len() as u8;
        let shares = atrest_remote::split(&secret, threshold, count).map_err(|e| e.to_string())?;
        let members = members
            .iter()
            .zip(&shares)
            .map(|(m, share)| ThresholdMember {
                authority: m.authority.clone(),
                binding: m.binding,
                sealed_share: seal_share(vault_id, slot_id, &m.key, share),
            })
            .collect();
        Ok((Self { threshold, members }, secret))
    }

    /// Opens member `index`'s share with the exchange key its authority's
    /// answer gave. `None` if the key is wrong or the share is not one of
    /// this slot's (index, k or n disagree).
    pub fn open_share(
        &self,
        vault_id: &[u8; 16],
        slot_id: u8,
        index: u8,
        key: &SecretKey,
    ) -> Option<Share> {
        let member = self.members.get(usize::from(index).checked_sub(1)?)?;
        let cipher = BlockCipher::new(
            ContentAlgorithm::Aes256Gcm,
            &share_key(key, vault_id, index),
        );
        let mut buf = zeroize::Zeroizing::new(member.sealed_share.clone());
        let plain = cipher
            .open_in_place(&share_aad(vault_id, slot_id, index), &mut buf)
            .ok()?;
        let share = Share::from_bytes(plain).ok()?;
        (share.index() == index
            && share.threshold() == self.threshold
            && usize::from(share.count()) == self.members.len())
        .then_some(share)
    }

    /// `version ‖ k ‖ n ‖ n × (AuthorityRef ‖ binding (64) ‖ sealed share (112))`.
    /// The same bytes are a LUKS volume's threshold binding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.members.len() * 400);
        out.push(REMOTE_PARAMS_VERSION);
        out.push(self.threshold);
        out.push(self.members.len() as u8);
        for m in &self.members {
            m.authority.encode(&mut out);
            out.extend_from_slice(&m.binding.to_bytes());
            out.extend_from_slice(&m.sealed_share);
        }
        out
    }

    /// Parses [`ThresholdSlot::encode`]'s bytes, refusing anything else.
    pub fn decode(params: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(params, "threshold keyslot parameters");
        check_version(&mut r)?;
        let threshold = r.u8().map_err(trunc)?;
        let count = r.u8().map_err(trunc)?;
        if threshold < 2 || threshold > count || usize::from(count) > MAX_THRESHOLD_MEMBERS {
            return Err(format!(
                "a threshold slot needs 2 <= k <= n <= {MAX_THRESHOLD_MEMBERS}, not {threshold}-of-{count}"
            ));
        }
        let mut members = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let authority = AuthorityRef::decode(&mut r)?;
            let binding = decode_binding(&mut r)?;
            let sealed_share = r.bytes(SEALED_SHARE_LEN).map_err(trunc)?.to_vec();
            members.push(ThresholdMember {
                authority,
                binding,
                sealed_share,
            });
        }
        no_trailing(&r)?;
        Ok(Self { threshold, members })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_remote::{HostSecret, enroll};

    fn authority(n: u8) -> AuthorityRef {
        AuthorityRef {
            url: format!("https://keys{n}.example:7443"),
            ca_fingerprint: [n; 32],
            host_id: HostId::new(format!("web-{n}")).unwrap(),
            audit_public_key: [n ^ 0xff; 32],
        }
    }

    fn members(n: u8) -> (Vec<RemoteMember>, Vec<SecretKey>) {
        let mut out = Vec::new();
        let mut keys = Vec::new();
        for i in 1..=n {
            let (binding, key) = enroll(&HostSecret::generate().public_key());
            keys.push(key.clone());
            out.push(RemoteMember {
                authority: authority(i),
                binding,
                key,
            });
        }
        (out, keys)
    }

    #[test]
    fn remote_params_round_trip_and_are_strict() {
        let (binding, _) = enroll(&HostSecret::generate().public_key());
        let slot = RemoteSlot {
            authority: authority(1),
            replicas: Vec::new(),
            binding,
        };
        let bytes = slot.encode();
        assert_eq!(
            bytes.len(),
            1 + 1 + slot.authority.url.len() + 32 + 1 + 5 + 32 + 64
        );
        assert_eq!(RemoteSlot::decode(&bytes).unwrap(), slot);
        for n in 0..bytes.len() {
            assert!(RemoteSlot::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(RemoteSlot::decode(&long).is_err());
        let mut version = bytes.clone();
        version[0] = 3;
        assert!(
            RemoteSlot::decode(&version)
                .unwrap_err()
                .contains("upgrade")
        );
        // A host id outside HostId's alphabet, and an invalid point.
        let mut bad_host = bytes.clone();
        let host_at = 1 + 1 + slot.authority.url.len() + 32 + 1;
        bad_host[host_at] = b'/';
        assert!(RemoteSlot::decode(&bad_host).is_err());
        let mut bad_point = bytes.clone();
        let end = bad_point.len();
        bad_point[end - 32..].fill(0);
        assert!(RemoteSlot::decode(&bad_point).is_err());
        let mut empty_url = vec![1, 0];
        empty_url.extend_from_slice(&bytes[2 + slot.authority.url.len()..]);
        assert!(RemoteSlot::decode(&empty_url).is_err());
    }

    #[test]
    fn remote_params_with_replicas_are_version_2_and_strict() {
        let (binding, _) = enroll(&HostSecret::generate().public_key());
        let mut slot = RemoteSlot {
            authority: authority(1),
            replicas: vec!["https://b.example:7443".into(), "https://c.example".into()],
            binding,
        };
        let bytes = slot.encode();
        assert_eq!(bytes[0], 2);
        let decoded = RemoteSlot::decode(&bytes).unwrap();
        assert_eq!(decoded, slot);
        assert_eq!(
            decoded.urls().collect::<Vec<_>>(),
            [
                "https://keys1.example:7443",
                "https://b.example:7443",
                "https://c.example"
            ]
        );
        for n in 0..bytes.len() {
            assert!(RemoteSlot::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        // The replica count follows the authority record.
        let count_at = 1 + 1 + slot.authority.url.len() + 32 + 1 + 5 + 32;
        assert_eq!(bytes[count_at], 2);
        for bad_count in [0u8, 9] {
            let mut bad = bytes.clone();
            bad[count_at] = bad_count;
            assert!(RemoteSlot::decode(&bad).is_err(), "count {bad_count}");
        }
        // A version-1 reader's view: version 2 is refused with "upgrade".
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert!(RemoteSlot::decode(&v1).is_err());
        // Duplicates are refused on both sides.
        slot.replicas = vec![slot.authority.url.clone()];
        assert!(slot.validate().is_err());
        assert!(RemoteSlot::decode(&slot.encode()).is_err());
        slot.replicas = vec!["https://b.example".into(), "https://b.example".into()];
        assert!(slot.validate().is_err());
        slot.replicas = vec![String::new()];
        assert!(slot.validate().is_err());
    }

    #[test]
    fn threshold_shares_open_only_with_their_key_slot_and_index() {
        let vault_id = [3; 16];
        let (m, keys) = members(3);
        let (slot, secret) = ThresholdSlot::create(&vault_id, 4, 2, &m).unwrap();
        let shares: Vec<Share> = (1..=3)
            .map(|i| {
                slot.open_share(&vault_id, 4, i, &keys[usize::from(i) - 1])
                    .unwrap()
            })
            .collect();
        let combined = atrest_remote::combine(&shares[1..]).unwrap();
        assert_eq!(combined.expose(), secret.expose());
        // Wrong key, wrong index, wrong slot, wrong vault.
        assert!(slot.open_share(&vault_id, 4, 1, &keys[1]).is_none());
        assert!(slot.open_share(&vault_id, 4, 2, &keys[0]).is_none());
        assert!(slot.open_share(&vault_id, 5, 1, &keys[0]).is_none());
        assert!(slot.open_share(&[0; 16], 4, 1, &keys[0]).is_none());
        assert!(slot.open_share(&vault_id, 4, 0, &keys[0]).is_none());
        assert!(slot.open_share(&vault_id, 4, 4, &keys[0]).is_none());
        // Round trip of the parameters.
        let bytes = slot.encode();
        assert_eq!(ThresholdSlot::decode(&bytes).unwrap(), slot);
        for n in 0..bytes.len() {
            assert!(ThresholdSlot::decode(&bytes[..n]).is_err());
        }
        for (at, value) in [(1, 1), (1, 4), (2, 1), (2, 17)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            assert!(ThresholdSlot::decode(&bad).is_err(), "byte {at} = {value}");
        }
    }

    #[test]
    fn invalid_threshold_parameters_are_refused_at_creation() {
        let (m, _) = members(2);
        assert!(ThresholdSlot::create(&[0; 16], 0, 3, &m).is_err());
        assert!(ThresholdSlot::create(&[0; 16], 0, 1, &m).is_err());
        let (m, _) = members(1);
        assert!(ThresholdSlot::create(&[0; 16], 0, 1, &m).is_err());
    }
}
