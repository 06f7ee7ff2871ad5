//! The atrest vault format: a directory whose file contents, names, symlink
//! targets and xattrs are encrypted, opened through keyslots.
//!
//! Key types: [`LockedVault`] (a vault read from disk, not yet opened),
//! [`Vault`] (unlocked: holds the master key and [`VaultKeys`]),
//! [`ContentFile`] (random-access plaintext I/O on one backing file), and
//! [`NameTransform`] (names, symlinks, xattrs); for format 2 vaults
//! (docs/format.md §16, experimental), [`Vault::open_format_2`] opens and
//! recovers the vault's `atrest_meta::Store` ([`Contents2`]), and
//! [`ContentFile2`] reads and writes files through it. Backends (FUSE, fscrypt)
//! build on these and never see an algorithm.
//!
//! ```
//! use atrest_core::{Argon2Params, SecretBytes};
//! use atrest_vault::{CreateOptions, LockedVault, Unlocker, Vault};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = dir.path().join("data.enc");
//! let pass = Unlocker::Passphrase(SecretBytes::new(b"correct horse".to_vec()));
//! let options = CreateOptions { argon2: Argon2Params::INSECURE_FAST, ..Default::default() };
//! let (_vault, recovery) = Vault::create(&root, options, &pass, "admin").unwrap();
//! assert!(recovery.is_some());
//! let vault = LockedVault::open(&root).unwrap().unlock(&pass).unwrap();
//! assert_eq!(vault.config().keyslots.len(), 2);
//! ```

mod config;
mod content;
mod content2;
mod error;
pub mod fsck;
pub mod fsck2;
mod keyslot;
pub mod layout;
pub mod layout2;
mod location;
mod lock;
pub mod migrate;
pub mod names;
mod recovery;
mod remote;
pub mod root_attr;
mod vault;
mod wire;
pub mod witness;
pub mod xattr;

pub use atrest_meta::status::Unverified as MetadataState;
pub use atrest_meta::superblock::State as MetadataStateKind;
pub use config::{
    BACKUP_FILE, BLOCK_SIZE, Backend, CONFIG_FILE, MAGIC, VERSION, VERSION_2, VaultConfig,
    write_atomic,
};
pub use content::{
    ContentFile, ContentKey, FILE_FORMAT_VERSION, FileCipher, TornTail, parse_header,
};
pub use content2::{ContentFile2, ContentKey2, FileCipher2, PlannedRead, SealedWrite, WriteEdges};
pub use error::{ContentError, VaultError};
pub use keyslot::{Keyslot, MAX_LABEL, SlotKind, SlotOwner, Unlocker};
pub use location::{Location, fscrypt_config_dir, locate};
pub use lock::{LOCK_FILE, MountLock};
pub use names::{EncryptedName, NameTransform};
pub use recovery::{RecoveryKey, RecoveryKeyError};
pub use remote::{
    AuthorityRef, MAX_REPLICAS, MAX_THRESHOLD_MEMBERS, MAX_URL_LEN, REMOTE_PARAMS_VERSION,
    RemoteMember, RemoteSlot, SEALED_SHARE_LEN, ThresholdMember, ThresholdSlot, validate_replicas,
};
pub use vault::{Contents2, CreateOptions, LockedVault, Vault, VaultKeys, VaultKeys2};
pub use witness::{
    Acknowledgement, AuthorityRollback, AuthorityWitness, DurableGeneration, LocalWitnessFile,
    WitnessCheck, Witnessed,
};
