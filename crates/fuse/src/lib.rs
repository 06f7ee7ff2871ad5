//! Serves an unlocked atrest vault as a FUSE file system: applications see
//! plaintext under the mount point; the backing directory holds only
//! ciphertext.
//!
//! Key types: [`MountConfig`] (options) and [`mount`], which runs the FUSE
//! session on the calling thread until the file system is unmounted. The
//! operations themselves live in [`VaultFs`] for format 1 vaults and in
//! [`VaultFs2`] for format 2 (docs/format.md §16, experimental), chosen
//! by the vault's config version.
//!
//! ```no_run
//! # fn run(vault: atrest_vault::Vault) -> std::io::Result<()> {
//! let config = atrest_fuse::MountConfig::default();
//! atrest_fuse::mount(vault, std::path::Path::new("/srv/data"), &config, |_| println!("ready"))
//! # }
//! ```

mod ciphers;
mod dirs;
mod fs;
mod nodes;
mod v2;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

pub use fs::VaultFs;
pub use v2::VaultFs2;

#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let other users (PostgreSQL's, a web server's) use the mount.
    pub allow_other: bool,
    /// Threads serving requests.
    pub threads: usize,
    /// How long the kernel may cache attributes and names. We are the only
    /// writer of the backing directory, so longer is safe; the vault lock
    /// keeps a second mount out.
    pub ttl: Duration,
    /// Shown as the source in /proc/mounts.
    pub fsname: String,
    /// Honour set-user-id bits and device nodes. Off by default: modes and
    /// owners in the backing directory are not authenticated, so whoever
    /// can write it offline could plant a set-user-id root shell.
    pub suid: bool,
    pub dev: bool,
    /// The host's local witness of a format 2 vault (docs/format.md
    /// §16.17.5): checked before the vault is recovered, written after
    /// every checkpoint. `None` keeps no witness.
    pub witness: Option<atrest_vault::LocalWitnessFile>,
    /// Mount a format 2 vault that does not descend from its witness
    /// (rolled back or forked), marking it so in its log.
    pub accept_rollback: bool,
    /// What the key authorities that released the key had witnessed
    /// (docs/format.md §16.17.4), checked with the local witness.
    pub authorities: Vec<atrest_vault::AuthorityWitness>,
    /// Where a format 2 mount reports its durable generations (§16.17.1).
    pub reporter: Option<Arc<dyn GenerationReporter>>,
    /// How long a logged change of a format 2 vault waits at most for its
    /// checkpoint; `None`: 30 s. Shorter only in tests, which need many
    /// checkpoints quickly.
    pub checkpoint_interval: Option<Duration>,
}

/// Where a format 2 mount tells its vault's durable generations: the key
/// authorities' reporter (docs/format.md §16.17.1). Every call names a
/// checkpoint whose superblock is already durable, so nothing reported is
/// a generation the disk lacks.
pub trait GenerationReporter: Send + Sync + std::fmt::Debug {
    /// The vault was opened and recovered, before the mount is ready;
    /// `rollback_accepted`: a rollback an authority approved was recorded.
    /// Must not block.
    fn opened(&self, generation: atrest_vault::DurableGeneration, rollback_accepted: bool);
    /// A checkpoint while mounted. Called under the store's lock, which
    /// every request waits for: must not block.
    fn checkpointed(&self, generation: atrest_vault::DurableGeneration);
    /// The last checkpoint, at unmount. The process ends after it, so it
    /// may wait, for a bounded time, until the report is delivered.
    fn unmounted(&self, generation: atrest_vault::DurableGeneration);
    /// The generations the authorities accepted since the last call,
    /// oldest first, which the mount logs as acknowledged before its next
    /// checkpoint. Called under the store's lock: must not block.
    fn take_acknowledged(&self) -> Vec<atrest_vault::Acknowledgement>;
}

/// What [`mount`] found before it reported ready.
#[derive(Debug, Clone, Default)]
pub struct Ready {
    /// The local witness check of a format 2 vault (`None` without a
    /// witness, and for format 1).
    pub witness: Option<atrest_vault::WitnessCheck>,
    /// A rollback a key authority released the key for, now recorded.
    pub authority_rollback: Option<atrest_vault::AuthorityRollback>,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            allow_other: false,
            threads: 4,
            ttl: Duration::from_secs(1),
            fsname: "atrest".into(),
            suid: false,
            dev: false,
            witness: None,
            accept_rollback: false,
            authorities: Vec::new(),
            reporter: None,
            checkpoint_interval: None,
        }
    }
}

/// Mounts `vault` at `mountpoint`, calls `ready` once the kernel has
/// accepted the mount, and serves requests until it is unmounted. A
/// format 2 vault is opened, and recovered if it needs it, before the
/// mount: `ready` means it is consistent.
pub fn mount(
    vault: atrest_vault::Vault,
    mountpoint: &Path,
    config: &MountConfig,
    ready: impl FnOnce(&Ready),
) -> io::Result<()> {
    if vault.config().format == atrest_vault::VERSION_2 {
        let (contents, check, authority_rollback) = match &config.witness {
            Some(witness) => {
                let (contents, witnessed) = vault
                    .open_format_2_witnessed_by(
                        witness,
                        config.accept_rollback,
                        &config.authorities,
                    )
                    .map_err(io::Error::other)?;
                (
                    contents,
                    Some(witnessed.local),
                    witnessed.authority_rollback,
                )
            }
            None if !config.authorities.is_empty() => {
                return Err(io::Error::other(
                    "a key authority's witness is checked only with the local witness",
                ));
            }
            None => (vault.open_format_2().map_err(io::Error::other)?, None, None),
        };
        if let Some(atrest_vault::WitnessCheck::RollbackAccepted {
            standing,
            witnessed,
            disk,
        }) = check
            && authority_rollback.is_none()
        {
            tracing::warn!(
                %standing,
                witnessed_checkpoint = witnessed.map(|g| g.checkpoint),
                witnessed_sequence = witnessed.map(|g| g.sequence),
                disk_checkpoint = disk.checkpoint,
                disk_sequence = disk.sequence,
                "rollback accepted (--accept-rollback): the vault did not descend from its witness"
            );
        }
        if let Some(rollback) = &authority_rollback {
            tracing::warn!(
                authority = %rollback.url,
                standing = %rollback.standing,
                witnessed_checkpoint = rollback.witnessed.checkpoint,
                witnessed_sequence = rollback.witnessed.sequence,
                disk_checkpoint = rollback.disk.checkpoint,
                disk_sequence = rollback.disk.sequence,
                "rollback accepted: the key authority released the key for a vault that did not \
                 descend from the generation it witnessed"
            );
        }
        if let Some(reporter) = &config.reporter {
            reporter.opened(
                atrest_vault::DurableGeneration::of(contents.store.superblock()),
                authority_rollback.is_some(),
            );
        }
        let fs = VaultFs2::new(
            contents,
            vault.root(),
            config.ttl,
            config.witness.clone(),
            config.reporter.clone(),
            config.checkpoint_interval,
        );
        drop(vault);
        let ready_state = Ready {
            witness: check,
            authority_rollback,
        };
        return serve(fs, mountpoint, config, || ready(&ready_state));
    }
    let fs = VaultFs::new(vault, config.ttl)?;
    serve(fs, mountpoint, config, || ready(&Ready::default()))
}

fn serve(
    fs: impl fuser::Filesystem + 'static,
    mountpoint: &Path,
    config: &MountConfig,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let mut options = Config::default();
    options.mount_options = vec![
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("atrest".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if rustix::process::geteuid().is_root() {
        // Device nodes in a vault are root's business, as on any mount.
        options
            .mount_options
            .retain(|o| *o != MountOption::NoDev && *o != MountOption::NoSuid);
    }
    options.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    options.n_threads = Some(config.threads.max(1));
    options.clone_fd = true;
    // Files are created with exactly the mode the application asked for.
    rustix::process::umask(rustix::fs::Mode::empty());
    let session = fuser::Session::new(fs, mountpoint, &options)?;
    ready();
    session.run()
}
