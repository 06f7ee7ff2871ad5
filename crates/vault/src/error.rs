use std::io;
use std::path::PathBuf;

/// Errors of opening, unlocking and changing a vault. Each message says what
/// went wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0} is not an atrest vault (no atrest.conf); create one with `atrest init`, or check the path"
    )]
    NotAVault(PathBuf),
    #[error("{0} already holds files; `atrest init` needs an empty directory")]
    NotEmpty(PathBuf),
    #[error("the vault config is damaged: {0}")]
    Corrupt(String),
    #[error(
        "the vault config has format version {0}, which this atrest does not know; upgrade atrest"
    )]
    UnknownVersion(u16),
    #[error("no keyslot accepted the given key: wrong passphrase, recovery key or key file")]
    WrongKey,
    #[error(
        "both copies of the vault config failed their integrity check after unlocking: the config was tampered with or damaged"
    )]
    Tampered,
    #[error("keyslot {0} does not exist; `atrest keyslot list` shows the slots")]
    NoSuchSlot(u8),
    #[error("refusing to remove the last keyslot: the vault could never be opened again")]
    LastSlot,
    #[error("the vault has the maximum of {0} keyslots; remove one first")]
    TooManySlots(usize),
    #[error("{0}")]
    Invalid(String),
    /// The metadata of a format 2 vault (`atrest.meta`, `atrest.log/`)
    /// could not be opened or recovered: changed, cut or rolled back on
    /// the disk, or unreadable. Nothing was written.
    #[error(
        "the vault's metadata cannot be opened: {0}; restore the vault directory from a backup (format 2 vaults have no `atrest fsck` yet)"
    )]
    Metadata(#[from] atrest_meta::MetaError),
    /// A format 2 vault that does not descend from the generation its
    /// witness saw last (rolled back or forked), or whose witness is
    /// damaged: refused before anything on the disk changed. The message
    /// names both generations and what to do.
    #[error("{0}")]
    Witness(String),
}

impl VaultError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> VaultError {
        let path = path.into();
        move |source| VaultError::Io { path, source }
    }
}

/// Errors of reading or writing encrypted content.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A block, header or name failed authentication or has an impossible
    /// size. Never turned into plaintext.
    #[error("corrupt or tampered: {0}")]
    Corrupt(String),
}
