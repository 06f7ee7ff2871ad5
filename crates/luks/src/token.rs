//! The `atrest` LUKS2 token: what a host needs to ask its key authority
//! for a volume's passphrase, kept in the volume's own header as clevis
//! keeps its JWE (docs/format.md §19).
//!
//! ```json
//! { "type": "atrest", "keyslots": ["3"], "atrest_version": 1,
//!   "binding_id": "<16 bytes>", "remote": "<remote slot parameters>",
//!   "mac": "<32 bytes>" }
//! ```
//!
//! Byte fields are unpadded base64url. `remote` holds exactly the bytes of
//! a vault's remote keyslot parameters (format.md §4.3: authority URL, CA
//! fingerprint, host id, audit key, replicas, binding); a k-of-n binding has
//! `threshold` instead, a vault's threshold keyslot parameters (§4.4, the
//! shares sealed for (binding_id, keyslot)). The passphrase of LUKS keyslot
//! `keyslots[0]` and the MAC key both come from the secret `S` the
//! authorities release: the exchange key `K` of a remote binding, the
//! combined shares of a threshold one:
//!
//! - passphrase = HKDF-SHA256(S, salt = binding_id, "atrest v1 luks passphrase"), 32 bytes
//! - mac = HMAC-SHA256(HKDF(S, binding_id, "atrest v1 luks token mac"),
//!   "atrest luks token v1" ‖ u16 version ‖ binding_id ‖ u32 keyslot ‖
//!   u8 len ‖ volume UUID ‖ u8 kind (1 remote, 2 threshold) ‖ parameters)
//!
//! The header is not secret and anyone who can write it can change the
//! token; the MAC makes any change (another authority, another keyslot, a
//! token copied from another volume) fail closed once the key is released,
//! before anything trusts the token's audit key.

use atrest_core::{HeaderMac, SecretKey, from_base64url, from_base64url_bounded, labels};
use atrest_vault::{RemoteSlot, ThresholdSlot};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::LuksError;

/// The token's `type`.
pub const TOKEN_TYPE: &str = "atrest";
/// The one token version this build writes and reads.
pub const TOKEN_VERSION: u16 = 1;
/// Bound on the `remote` and `threshold` fields (a remote slot with 8
/// replicas is ~2.4 KiB, a threshold slot of 8 members ~5 KiB).
const MAX_PARAMS_LEN: usize = 8192;

/// Who releases a binding's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorities {
    /// One authority (and its replicas).
    Remote(Box<RemoteSlot>),
    /// Any k of n authorities.
    Threshold(ThresholdSlot),
}

impl Authorities {
    fn kind(&self) -> u8 {
        match self {
            Authorities::Remote(_) => 1,
            Authorities::Threshold(_) => 2,
        }
    }

    fn field(&self) -> &'static str {
        match self {
            Authorities::Remote(_) => "remote",
            Authorities::Threshold(_) => "threshold",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Authorities::Remote(slot) => slot.encode(),
            Authorities::Threshold(slot) => slot.encode(),
        }
    }

    /// Each authority's URL (a remote binding's replicas after its URL).
    pub fn urls(&self) -> Vec<&str> {
        match self {
            Authorities::Remote(slot) => slot.urls().collect(),
            Authorities::Threshold(slot) => slot
                .members
                .iter()
                .map(|m| m.authority.url.as_str())
                .collect(),
        }
    }

    /// Each authority's URL and the host id this host has there.
    pub fn hosts(&self) -> Vec<(&str, &str)> {
        match self {
            Authorities::Remote(slot) => {
                vec![(slot.authority.url.as_str(), slot.authority.host_id.as_str())]
            }
            Authorities::Threshold(slot) => slot
                .members
                .iter()
                .map(|m| (m.authority.url.as_str(), m.authority.host_id.as_str()))
                .collect(),
        }
    }
}

/// One parsed `atrest` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The LUKS2 token id it is stored under.
    pub token_id: u32,
    /// The LUKS keyslot whose passphrase the authority releases.
    pub keyslot: u32,
    /// Random; names the binding in unlock requests and the audit log.
    pub binding_id: [u8; 16],
    pub authorities: Authorities,
    mac: [u8; 32],
}

impl Binding {
    /// A new binding; [`Binding::to_json`] seals it with the released key.
    pub fn new(
        token_id: u32,
        keyslot: u32,
        binding_id: [u8; 16],
        authorities: Authorities,
    ) -> Self {
        Self {
            token_id,
            keyslot,
            binding_id,
            authorities,
            mac: [0; 32],
        }
    }

    /// The passphrase of the binding's LUKS keyslot.
    pub fn passphrase(&self, key: &SecretKey) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(
            *key.derive(&self.binding_id, labels::LUKS_PASSPHRASE)
                .expose(),
        )
    }

    fn mac_input(&self, uuid: &str) -> Vec<u8> {
        let params = self.authorities.encode();
        let mut out = Vec::with_capacity(64 + uuid.len() + params.len());
        out.extend_from_slice(labels::domain::LUKS_TOKEN);
        out.extend_from_slice(&TOKEN_VERSION.to_be_bytes());
        out.extend_from_slice(&self.binding_id);
        out.extend_from_slice(&self.keyslot.to_be_bytes());
        out.push(uuid.len() as u8);
        out.extend_from_slice(uuid.as_bytes());
        out.push(self.authorities.kind());
        out.extend_from_slice(&params);
        out
    }

    fn mac_key(&self, key: &SecretKey) -> HeaderMac {
        HeaderMac::new(&key.derive(&self.binding_id, labels::LUKS_TOKEN_MAC))
    }

    /// The token's JSON, sealed for the volume `uuid` with `key`.
    pub fn to_json(&mut self, uuid: &str, key: &SecretKey) -> Value {
        self.mac = self.mac_key(key).sign(&self.mac_input(uuid));
        let mut token = json!({
            "type": TOKEN_TYPE,
            "keyslots": [self.keyslot.to_string()],
            "atrest_version": TOKEN_VERSION,
            "binding_id": atrest_core::to_base64url(&self.binding_id),
            "mac": atrest_core::to_base64url(&self.mac),
        });
        token[self.authorities.field()] =
            atrest_core::to_base64url(&self.authorities.encode()).into();
        token
    }

    /// Checks the MAC with the released key: `Err` if anything in the
    /// token, or the volume it sits on, differs from what was bound.
    pub fn verify(&self, uuid: &str, key: &SecretKey) -> Result<(), LuksError> {
        self.mac_key(key)
            .verify(&self.mac_input(uuid), &self.mac)
            .map_err(|_| LuksError::TokenTampered {
                token_id: self.token_id,
            })
    }

    /// Parses token `token_id`'s JSON. `Ok(None)`: another tool's token.
    pub fn from_json(token_id: u32, token: &Value) -> Result<Option<Self>, LuksError> {
        if token.get("type").and_then(Value::as_str) != Some(TOKEN_TYPE) {
            return Ok(None);
        }
        let bad = |why: &str| LuksError::BadToken {
            token_id,
            reason: why.to_string(),
        };
        let text = |field: &str| {
            token
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("no {field}")))
        };
        match token.get("atrest_version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(TOKEN_VERSION) => {}
            Some(v) => return Err(bad(&format!("version {v}; upgrade atrest"))),
            None => return Err(bad("no atrest_version")),
        }
        let keyslot = match token.get("keyslots").and_then(Value::as_array) {
            Some(slots) if slots.len() == 1 => slots[0]
                .as_str()
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|n| n.to_string() == slots[0].as_str().unwrap_or_default())
                .ok_or_else(|| bad("keyslots is not one keyslot number"))?,
            _ => return Err(bad("keyslots must name exactly one keyslot")),
        };
        let binding_id =
            from_base64url::<16>(text("binding_id")?).ok_or_else(|| bad("bad binding_id"))?;
        let params = |field: &str| {
            from_base64url_bounded(text(field)?, MAX_PARAMS_LEN)
                .ok_or_else(|| bad(&format!("bad {field}")))
        };
        let authorities = match (token.get("remote"), token.get("threshold")) {
            (Some(_), None) => Authorities::Remote(Box::new(
                RemoteSlot::decode(&params("remote")?).map_err(|e| bad(&e))?,
            )),
            (None, Some(_)) => Authorities::Threshold(
                ThresholdSlot::decode(&params("threshold")?).map_err(|e| bad(&e))?,
            ),
            _ => return Err(bad("needs exactly one of remote and threshold")),
        };
        let mac = from_base64url::<32>(text("mac")?).ok_or_else(|| bad("bad mac"))?;
        Ok(Some(Self {
            token_id,
            keyslot,
            binding_id,
            authorities,
            mac,
        }))
    }
}
