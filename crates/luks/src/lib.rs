//! LUKS2 volumes opened by atrest's key authority.
//!
//! `bind` adds a LUKS keyslot whose passphrase only the authority can
//! release (derived from the exchange key of a fresh remote binding, the
//! same blinded exchange a vault's remote keyslot uses: the authority never
//! sees the passphrase) and stores what the host needs to ask for it as an
//! `atrest` token in the header ([`token`]). `unlock` asks the authority
//! exactly as a vault's unlock does (signed request, policy, approval, boot
//! accounting, the release checked in the authority's audit log), checks the
//! token's MAC and the key against the header, and opens the mapping.
//!
//! The header work goes through Debian's `cryptsetup` with every secret on
//! its standard input ([`cryptsetup`]).

pub mod cryptsetup;
pub mod token;

use std::path::{Path, PathBuf};

use atrest_agent::{AgentError, AuthoritySpec, EnrolledAt, StateDir, UnlockOptions};
use atrest_vault::RemoteSlot;

pub use cryptsetup::{Device, Header, device_mapper_available};
pub use token::{Binding, TOKEN_TYPE, TOKEN_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("cannot run cryptsetup ({0}): install it (`apt-get install cryptsetup-bin`)")]
    NoCryptsetup(String),
    #[error("{0}")]
    Cryptsetup(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{}: not a LUKS2 volume (`cryptsetup luksFormat --type luks2` makes one)", .0.display())]
    NotLuks(PathBuf),
    #[error(
        "{}: the existing passphrase or key file does not open any keyslot; give one that does \
         (`--existing-key-file`)", .0.display()
    )]
    WrongExistingKey(PathBuf),
    #[error(
        "{}: holds {kind}, not a blank device: refusing to format over it (if its contents are \
         yours to lose, `wipefs -a` it first)", path.display()
    )]
    NotBlank { path: PathBuf, kind: String },
    #[error("{}: no atrest binding (`atrest luks bind` adds one)", .0.display())]
    NotBound(PathBuf),
    #[error("{}: no free LUKS keyslot (LUKS2 has 32); remove one with `cryptsetup luksKillSlot`", .0.display())]
    NoFreeKeyslot(PathBuf),
    #[error(
        "atrest token {token_id} is unreadable ({reason}); `atrest luks unbind --token {token_id}` removes it"
    )]
    BadToken { token_id: u32, reason: String },
    #[error(
        "atrest token {token_id} was changed or copied from another volume (its MAC does not \
         verify): refusing to use it"
    )]
    TokenTampered { token_id: u32 },
    #[error(
        "the key {url} released does not open LUKS keyslot {keyslot}: the keyslot was replaced \
         or the authority answered for another binding"
    )]
    WrongKey { url: String, keyslot: u32 },
    #[error(
        "the key was released and checked against the header, but this kernel has no \
         device-mapper (dm_mod), so the volume cannot be opened here; the volume is NOT open"
    )]
    NoDeviceMapper,
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// What [`bind`] did.
#[derive(Debug)]
pub struct Bound {
    pub token_id: u32,
    pub keyslot: u32,
    pub enrolled: EnrolledAt,
}

/// Binds `device` to one key authority: enrolls (or binds) this host there,
/// adds a LUKS keyslot authorised by the passphrase or key file at
/// `existing_key`, stores the token, and checks the new keyslot opens with
/// the released key. On a failure after the keyslot was added, the keyslot
/// is destroyed again: the header is left as it was.
pub async fn bind(
    device: &Device,
    existing_key: &Path,
    state: &StateDir,
    spec: AuthoritySpec,
    host_name: &str,
) -> Result<Bound, LuksError> {
    let header = device.header()?;
    let keyslot = (0..header.max_keyslots)
        .find(|n| !header.keyslots.contains(n))
        .ok_or_else(|| LuksError::NoFreeKeyslot(device.path().to_path_buf()))?;
    let token_id = (0..)
        .find(|n| !header.tokens.iter().any(|(id, _)| id == n))
        .unwrap_or_default();
    let replicas = spec.replicas.clone();
    let (mut members, enrolled) =
        atrest_agent::enroll_members(state, std::slice::from_ref(&spec), None, host_name).await?;
    let member = members.remove(0);
    let remote = RemoteSlot {
        authority: member.authority.clone(),
        replicas,
        binding: member.binding,
    };
    remote.validate().map_err(LuksError::Invalid)?;
    let mut binding = Binding::new(token_id, keyslot, remote);
    let passphrase = binding.passphrase(&member.key);
    device.add_key(existing_key, keyslot, passphrase.as_slice())?;
    let stored = device
        .import_token(token_id, &binding.to_json(&header.uuid, &member.key))
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
    spec: AuthoritySpec,
    host_name: &str,
    open_as: Option<&str>,
) -> Result<Bound, LuksError> {
    if let Some(kind) = device.signature()? {
        return Err(LuksError::NotBlank {
            path: device.path().to_path_buf(),
            kind,
        });
    }
    let replicas = spec.replicas.clone();
    let (mut members, enrolled) =
        atrest_agent::enroll_members(state, std::slice::from_ref(&spec), None, host_name).await?;
    let member = members.remove(0);
    let remote = RemoteSlot {
        authority: member.authority.clone(),
        replicas,
        binding: member.binding,
    };
    remote.validate().map_err(LuksError::Invalid)?;
    let (token_id, keyslot) = (0, 0);
    let mut binding = Binding::new(token_id, keyslot, remote);
    let passphrase = binding.passphrase(&member.key);
    device.format(keyslot, passphrase.as_slice())?;
    let header = device.header()?;
    device.import_token(token_id, &binding.to_json(&header.uuid, &member.key))?;
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
    /// The authority URL that released the key.
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
    let released =
        atrest_agent::release_remote(state, options, binding.binding_id, slot_id, &binding.remote)
            .await?;
    binding.verify(&header.uuid, &released.key)?;
    let passphrase = binding.passphrase(&released.key);
    if !device.test_key(binding.keyslot, passphrase.as_slice())? {
        return Err(LuksError::WrongKey {
            url: released.url.clone(),
            keyslot: binding.keyslot,
        });
    }
    let url = released.url.clone();
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
/// destroyed, then its token removed. Returns what was removed.
pub fn unbind(device: &Device, token_id: Option<u32>) -> Result<Vec<(u32, u32)>, LuksError> {
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
        if let Some(slot) = keyslot.filter(|s| header.keyslots.contains(s)) {
            device.kill_slot(slot)?;
        }
        device.remove_token(*id)?;
        removed.push((*id, keyslot.unwrap_or(u32::MAX)));
    }
    if removed.is_empty() {
        return Err(match token_id {
            Some(t) => LuksError::Invalid(format!("{} has no token {t}", device.path().display())),
            None => LuksError::NotBound(device.path().to_path_buf()),
        });
    }
    Ok(removed)
}
