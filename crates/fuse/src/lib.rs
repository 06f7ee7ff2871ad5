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
}

/// What [`mount`] found before it reported ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    /// The local witness check of a format 2 vault (`None` without a
    /// witness, and for format 1).
    pub witness: Option<atrest_vault::WitnessCheck>,
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
        let (contents, check) = match &config.witness {
            Some(witness) => {
                let (contents, check) = vault
                    .open_format_2_witnessed(witness, config.accept_rollback)
                    .map_err(io::Error::other)?;
                (contents, Some(check))
            }
            None => (vault.open_format_2().map_err(io::Error::other)?, None),
        };
        if let Some(atrest_vault::WitnessCheck::RollbackAccepted {
            standing,
            witnessed,
            disk,
        }) = check
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
        let fs = VaultFs2::new(contents, vault.root(), config.ttl, config.witness.clone());
        drop(vault);
        return serve(fs, mountpoint, config, || ready(&Ready { witness: check }));
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
