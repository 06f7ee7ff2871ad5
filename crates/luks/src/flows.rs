//! What `atrest luks` does with a key authority: bind, format a scratch
//! device bound, unlock, unbind.

use std::path::Path;

use atrest_agent::{AuthoritySpec, EnrolledAt, StateDir, UnlockOptions};
use atrest_core::SecretKey;
use atrest_vault::{RemoteSlot, ThresholdSlot};

use crate::{Authorities, Binding, Device, Header, LuksError, TOKEN_TYPE};

/// What [`bind`] did.
#[derive(Debug)]
pub struct Bound {
    pub token_id: u32,
    pub keyslot: u32,
    pub enrolled: EnrolledAt,
}

/// Enrolls (or binds) this host with `authorities` (one, or k-of-n with
/// `threshold`) and makes a binding for LUKS keyslot `keyslot` under token
/// `token_id`; returns it with the secret its passphrase comes from.
async fn new_binding(
    state: &StateDir,
    authorities: &[AuthoritySpec],
    threshold: Option<u8>,
    host_name: &str,
    token_id: u32,
    keyslot: u32,
) -> Result<(Binding, SecretKey, EnrolledAt), LuksError> {
    let slot_id = u8::try_from(keyslot)
        .map_err(|_| LuksError::Invalid(format!("keyslot {keyslot} out of range")))?;
    let (members, enrolled) =
        atrest_agent::enroll_members(state, authorities, threshold, host_name).await?;
    let binding_id = atrest_core::random_array();
    let (slot, secret) = match threshold {
        None => {
            let member = members
                .into_iter()
                .next()
                .ok_or_else(|| LuksError::Invalid("give at least one authority".into()))?;
            let remote = RemoteSlot::for_member(&member, &authorities[0].replicas)
                .map_err(LuksError::Invalid)?;
            (Authorities::Remote(Box::new(remote)), member.key)
        }
        Some(k) => {
            let (slot, secret) = ThresholdSlot::create(&binding_id, slot_id, k, &members)
                .map_err(LuksError::Invalid)?;
            (Authorities::Threshold(slot), secret)
        }
    };
    Ok((
        Binding::new(token_id, keyslot, binding_id, slot),
        secret,
        enrolled,
    ))
}

/// Binds `device` to a key authority (or k of n): enrolls (or binds) this
/// host there, adds a LUKS keyslot authorised by the passphrase or key file
/// at `existing_key`, stores the token, and checks the new keyslot opens
/// with the released secret. On a failure after the keyslot was added, the
/// keyslot is destroyed again: the header is left as it was.
pub async fn bind(
    device: &Device,
    existing_key: &Path,
    state: &StateDir,
    authorities: &[AuthoritySpec],
    threshold: Option<u8>,
    host_name: &str,
) -> Result<Bound, LuksError> {
    let header = device.header()?;
    let keyslot = (0..header.max_keyslots)
        .find(|n| !header.keyslots.contains(n))
        .ok_or_else(|| LuksError::NoFreeKeyslot(device.path().to_path_buf()))?;
    let token_id = (0..)
        .find(|n| !header.tokens.iter().any(|(id, _)| id == n))
        .unwrap_or_default();
    let (mut binding, secret, enrolled) =
        new_binding(state, authorities, threshold, host_name, token_id, keyslot).await?;
    let passphrase = binding.passphrase(&secret);
    device.add_key(existing_key, keyslot, passphrase.as_slice())?;
    let stored = device
        .import_token(token_id, &binding.to_json(&header.uuid, &secret))
        .and_then(
            |()| match device.test_key(keyslot, passphrase.as_slice())? {
                true => Ok(()),
                false => Err(LuksError::Cryptsetup(format!(
                    "keyslot {keyslot} does not open with the key just added"
                ))),
            },
        );
    if let Err(e) = stored {
        // Leave the header as it was: no keyslot without its token.
        if let Err(undo) = device.kill_slot(keyslot) {
            tracing::error!(keyslot, error = %undo, "could not remove the keyslot just added");
        }
        return Err(e);
    }
    Ok(Bound {
        token_id,
        keyslot,
        enrolled,
    })
}

/// Formats a blank `device` as LUKS2 bound to one key authority, its only
/// keyslot (0) opened by the authority's key: what `atrest luks scratch`
/// does to a fresh instance store. Refuses a device that carries any
/// signature (a file system, a partition table, LUKS): nothing is ever
/// formatted over data. With `open_as`, the volume is then opened as
/// `/dev/mapper/NAME` with the key just made (no second request).
pub async fn format_bound(
    device: &Device,
    state: &StateDir,
    authorities: &[AuthoritySpec],
    threshold: Option<u8>,
    host_name: &str,
    open_as: Option<&str>,
) -> Result<Bound, LuksError> {
    if let Some(kind) = device.signature()? {
        return Err(LuksError::NotBlank {
            path: device.path().to_path_buf(),
            kind,
        });
    }
    let (token_id, keyslot) = (0, 0);
    let (mut binding, secret, enrolled) =
        new_binding(state, authorities, threshold, host_name, token_id, keyslot).await?;
    let passphrase = binding.passphrase(&secret);
    device.format(keyslot, passphrase.as_slice())?;
    let header = device.header()?;
    device.import_token(token_id, &binding.to_json(&header.uuid, &secret))?;
    if !device.test_key(keyslot, passphrase.as_slice())? {
        return Err(LuksError::Cryptsetup(format!(
            "keyslot {keyslot} does not open with the key just set"
        )));
    }
    if let Some(name) = open_as {
        device.open(name, keyslot, passphrase.as_slice())?;
    }
    Ok(Bound {
        token_id,
        keyslot,
        enrolled,
    })
}

/// The `atrest` tokens of `device`, in token order; a token that does not
/// parse is an error naming it.
pub fn bindings(device: &Device) -> Result<(Header, Vec<Result<Binding, LuksError>>), LuksError> {
    let header = device.header()?;
    let list = header
        .tokens
        .iter()
        .filter_map(|(id, token)| Binding::from_json(*id, token).transpose())
        .collect();
    Ok((header, list))
}

/// What [`unlock`] did.
#[derive(Debug)]
pub struct Unlocked {
    pub token_id: u32,
    pub keyslot: u32,
    /// The authority URLs that released the key (comma-separated).
    pub url: String,
    /// `/dev/mapper/NAME` when a name was given.
    pub mapped: Option<String>,
    /// The authority rotated this host's secret: bind again to follow it.
    pub rotated: bool,
}

/// Asks the authority of each `atrest` binding of `device` in turn for its
/// key, checks the token and the key against the header, and opens
/// `/dev/mapper/NAME` when `name` is given (else only checks the key). A
/// definitive refusal (denied, revoked, shredded) or an audit alarm ends it
/// at once; a transient failure moves to the next binding.
pub async fn unlock(
    device: &Device,
    state: &StateDir,
    options: &UnlockOptions,
    name: Option<&str>,
) -> Result<Unlocked, LuksError> {
    let (header, list) = bindings(device)?;
    if list.is_empty() {
        return Err(LuksError::NotBound(device.path().to_path_buf()));
    }
    let mut first_error = None;
    for binding in list {
        let binding = match binding {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable atrest token");
                first_error.get_or_insert(e);
                continue;
            }
        };
        match unlock_one(device, &header, &binding, state, options, name).await {
            Ok(done) => return Ok(done),
            Err(LuksError::Agent(e)) if !e.is_transient() => return Err(LuksError::Agent(e)),
            Err(e @ (LuksError::NoDeviceMapper | LuksError::TokenTampered { .. })) => {
                return Err(e);
            }
            Err(e) => {
                tracing::debug!(token = binding.token_id, error = %e, "binding did not open");
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| LuksError::NotBound(device.path().to_path_buf())))
}

async fn unlock_one(
    device: &Device,
    header: &Header,
    binding: &Binding,
    state: &StateDir,
    options: &UnlockOptions,
    name: Option<&str>,
) -> Result<Unlocked, LuksError> {
    let slot_id = u8::try_from(binding.keyslot).map_err(|_| LuksError::BadToken {
        token_id: binding.token_id,
        reason: "keyslot out of range".into(),
    })?;
    let released = match &binding.authorities {
        Authorities::Remote(slot) => {
            atrest_agent::release_remote(state, options, binding.binding_id, slot_id, slot).await?
        }
        Authorities::Threshold(slot) => {
            atrest_agent::release_threshold(state, options, binding.binding_id, slot_id, slot)
                .await?
        }
    };
    let url = released.urls.join(", ");
    binding.verify(&header.uuid, &released.key)?;
    let passphrase = binding.passphrase(&released.key);
    if !device.test_key(binding.keyslot, passphrase.as_slice())? {
        return Err(LuksError::WrongKey {
            url,
            keyslot: binding.keyslot,
        });
    }
    let rotated = released.rotated;
    // The key proved right: only now is the authority's checkpoint kept.
    released.confirm(state)?;
    let mapped = match name {
        Some(name) => {
            device.open(name, binding.keyslot, passphrase.as_slice())?;
            Some(format!("/dev/mapper/{name}"))
        }
        None => None,
    };
    Ok(Unlocked {
        token_id: binding.token_id,
        keyslot: binding.keyslot,
        url,
        mapped,
        rotated,
    })
}

/// Removes binding `token_id` (or every `atrest` binding): its keyslot is
/// destroyed, then its token removed. Returns each token removed with the
/// keyslot destroyed along (none for a token too damaged to name one, or
/// whose keyslot was already gone).
pub fn unbind(
    device: &Device,
    token_id: Option<u32>,
) -> Result<Vec<(u32, Option<u32>)>, LuksError> {
    let header = device.header()?;
    let mut removed = Vec::new();
    for (id, token) in &header.tokens {
        if token_id.is_some_and(|t| t != *id) {
            continue;
        }
        if token.get("type").and_then(serde_json::Value::as_str) != Some(TOKEN_TYPE) {
            if token_id.is_some() {
                return Err(LuksError::Invalid(format!(
                    "token {id} of {} is not an atrest token",
                    device.path().display()
                )));
            }
            continue;
        }
        // An unreadable atrest token is removed too (its keyslot, when it
        // names one, with it): that is what unbinding it asks for.
        let keyslot = match Binding::from_json(*id, token) {
            Ok(Some(b)) => Some(b.keyslot),
            _ => None,
        };
        let destroyed = keyslot.filter(|s| header.keyslots.contains(s));
        if let Some(slot) = destroyed {
            device.kill_slot(slot)?;
        }
        device.remove_token(*id)?;
        removed.push((*id, destroyed));
    }
    if removed.is_empty() {
        return Err(match token_id {
            Some(t) => LuksError::Invalid(format!("{} has no token {t}", device.path().display())),
            None => LuksError::NotBound(device.path().to_path_buf()),
        });
    }
    Ok(removed)
}
