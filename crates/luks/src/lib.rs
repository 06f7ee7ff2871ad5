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

//!
//! Without the default `authority` feature only the header and token
//! layers build (no HTTP client): what the fuzz targets need.

pub mod cryptsetup;
#[cfg(feature = "authority")]
mod flows;
pub mod token;

use std::path::PathBuf;

pub use cryptsetup::{Device, Header, device_mapper_available};
#[cfg(feature = "authority")]
pub use flows::{Bound, Unlocked, bind, bindings, format_bound, unbind, unlock};
pub use token::{Authorities, Binding, TOKEN_TYPE, TOKEN_VERSION};

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
    #[cfg(feature = "authority")]
    #[error(transparent)]
    Agent(#[from] atrest_agent::AgentError),
}
