//! The command line's definitions (clap derive), and how a process's
//! arguments are parsed.
//!
//! Every subcommand enum is `#[command(defer = true)]`: a start builds the
//! names and descriptions of all commands but the arguments only of the
//! command given (clap builds a deferred command when parsing reaches it,
//! and all of them for `generate-files`). Built eagerly, the whole tree
//! cost every `atrest` start about 2 M instructions (docs/performance.md).
//! Deferred, the arguments are added after the variant's description, so
//! an `Args` struct must not carry a `///` doc comment: clap would make it
//! the description of every command that flattens the struct (eagerly, the
//! variant's own text was applied last and won). Their comments are plain
//! `//` ones for that reason. The e2e test `help` compares every command's
//! help and usage errors with the copies in testdata/cli-help/.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Keep a server's data encrypted at rest.
#[derive(Debug, Parser)]
#[command(name = "atrest", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The flag that makes `atrest mount` the mount process of another
/// `atrest` (`commands::mount`): it reads the unlocked key from stdin.
pub const MOUNT_CHILD_FLAG: &str = "--master-key-stdin";

impl Cli {
    /// Parses this process's arguments; on a usage error, `--help` or
    /// `--version`, prints as clap does and exits.
    pub fn parse_args() -> Self {
        let args: Vec<OsString> = std::env::args_os().collect();
        if let Some(cli) = Self::parse_mount_child(&args) {
            return cli;
        }
        Self::parse_from(args)
    }

    /// The mount process that `atrest mount` and `atrest unlock --mount`
    /// start, `atrest mount VAULT MOUNTPOINT --master-key-stdin ...`,
    /// parsed by a root command that holds `mount` alone: the same
    /// `MountArgs`, so the same arguments, values and checks, without the
    /// descriptions of every other command. Anything else (no such flag,
    /// any error, `--help`, `--version`, an argument this command would
    /// refuse) gives `None`, and the whole tree parses the arguments again
    /// and prints exactly what it always did.
    pub(crate) fn parse_mount_child(args: &[OsString]) -> Option<Self> {
        let is_mount = args.get(1).map(OsString::as_os_str) == Some(OsStr::new("mount"));
        let has_flag = args
            .iter()
            .skip(2)
            .any(|a| a.as_os_str() == OsStr::new(MOUNT_CHILD_FLAG));
        if !is_mount || !has_flag {
            return None;
        }
        let root = clap::Command::new("atrest")
            .subcommand_required(true)
            .subcommand(MountArgs::augment_args(clap::Command::new("mount")));
        let mut matches = root.try_get_matches_from(args).ok()?;
        let cli = Self::from_arg_matches_mut(&mut matches).ok()?;
        match &cli.command {
            Command::Mount(mount) if mount.master_key_stdin => Some(cli),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Create a vault in an empty (or new) directory.
    Init(InitArgs),
    /// Unlock a vault and mount its plaintext view.
    Mount(MountArgs),
    /// Unmount a vault and wait for its mount process to finish.
    #[command(alias = "umount")]
    Unmount(UnmountArgs),
    /// Unlock a vault: an fscrypt vault's key goes to the kernel; a FUSE
    /// vault is mounted (--mount). With no passphrase, recovery key or key
    /// file given, a remote or threshold keyslot asks its key authority.
    Unlock(UnlockCmdArgs),
    /// Lock an fscrypt vault: remove its key from the kernel. Given
    /// /dev/mapper/NAME, close that LUKS mapping (`atrest luks close`).
    Lock(LockArgs),
    /// Show a vault's format, keyslots and where it is mounted or whether it is unlocked.
    Status(StatusArgs),
    /// List, add or remove keyslots.
    #[command(subcommand)]
    Keyslot(KeyslotCommand),
    /// Change the passphrase of a passphrase keyslot.
    Passwd(PasswdArgs),
    /// Authenticate every block and name of a vault; list what is corrupt.
    ///
    /// Each finding is a line: `corrupt:` (damage or tampering) or `torn:`
    /// (a last block torn by a crash, which --repair cuts). Exit 0 when
    /// nothing is wrong (after --repair: nothing left), 4 when something
    /// is, 1 when the check could not run.
    Fsck(FsckArgs),
    /// Convert a format 1 FUSE vault to format 2 in place (unmounted).
    ///
    /// Every block is decrypted, checked and sealed again as format 2,
    /// batch by batch; the format 1 files of a batch are removed only once
    /// the batch is durable, so a crash or `kill -9` loses nothing and
    /// running the command again resumes. Exit 0 when the vault is format
    /// 2, 4 when a format 1 file that fails authentication stopped it
    /// (named; see --drop-corrupt), 1 when it could not run or stopped for
    /// another reason (mounted, xattrs, no space: the message says what to
    /// do).
    Migrate(MigrateArgs),
    /// Show what atrest does, on a temporary vault, with embedded defaults.
    Demo,
    /// The key authority: serve it, and administer hosts, policies,
    /// approvals and its audit log.
    #[command(subcommand)]
    Keyd(crate::commands::keyd::KeydCommand),
    /// Scopes of scoped encryption on the running key authority: create,
    /// list, show, rotate, shred, and daily windows.
    #[command(subcommand)]
    Scope(crate::commands::scope::ScopeCommand),
    /// Applications that may use scoped encryption, each with its token
    /// and the scopes and fields it may use.
    #[command(subcommand)]
    App(crate::commands::scope::AppCommand),
    /// Enroll this host with one key authority (a remote keyslot) or
    /// several (a k-of-n threshold keyslot).
    Enroll(EnrollArgs),
    /// Tell the key authorities of vaults that the next boot is planned.
    Reboot(RebootArgs),
    /// Audit-log alarms this host raised: a key authority's log caught
    /// rolled back or forked. Unlocks through that log stop until an
    /// operator acknowledges the alarm.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Check this machine for data and secrets left in the clear around
    /// the vaults (swap, core dumps, /tmp, services' data, key file modes,
    /// ...); each finding names its fix. Exit 0 none, 1 warnings, 2 critical.
    Doctor(DoctorArgs),
    /// Encrypted, deduplicated backups whose key is held in keyslots like a
    /// vault's: a passphrase, a key file, a recovery key, or a vault
    /// (whoever unlocks the vault, by any of its keyslots or its key
    /// authority, can back up and restore). `backup shred` destroys every
    /// keyslot: every snapshot becomes unreadable at once.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// LUKS2 volumes opened by a key authority: a keyslot whose passphrase
    /// only the authority releases, its binding kept as an `atrest` token
    /// in the volume's header (as clevis keeps its own).
    #[command(subcommand)]
    Luks(LuksCommand),
    /// Write man pages (DIR/man/man1, one per subcommand) and bash, zsh and
    /// fish completions (DIR/completions) generated from these definitions;
    /// scripts/build-deb.sh packages them.
    #[command(hide = true)]
    GenerateFiles { dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object per finding, one per line.
    #[arg(long)]
    pub json: bool,
    /// A vault to check besides those in /etc/atrest/vaults and the
    /// mounted ones; repeat for several.
    #[arg(long = "vault", value_name = "V")]
    pub vaults: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum AlarmCommand {
    /// Show every raised alarm (exit 6 if there is one).
    List {
        /// One JSON object per alarm, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Clear the alarm of one audit log after investigating the authority:
    /// the evidence moves to alarms/acknowledged/ and the next unlock
    /// trusts the log as the authority serves it now.
    Acknowledge {
        /// The audit key, as `atrest alarm list` shows it.
        audit_key: String,
    },
}

// How hard to try a key authority.
#[derive(Debug, Args, Clone)]
pub struct AuthorityRetryArgs {
    /// Further attempts per authority while it is unreachable or failing (5xx).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub retries: u32,
    /// Give up after this many seconds, including time waiting for approval.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
}

// The key authority (or k of n) a new keyslot or binding asks.
#[derive(Debug, Args)]
pub struct AuthorityArgs {
    /// Key authority URL (https://HOST:PORT); repeat for k-of-n.
    #[arg(long = "authority", value_name = "URL", required = true)]
    pub authorities: Vec<String>,
    /// One-time enrollment token, one per --authority, in the same order.
    /// Without any, this host must already be enrolled at each authority
    /// (it binds to its existing enrollment; no token spent).
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<String>,
    /// The authority's CA fingerprint (SHA256:HEX, from `atrest keyd init`),
    /// one per --authority, in the same order.
    #[arg(long = "ca-fingerprint", value_name = "SHA256:HEX", required = true)]
    pub ca_fingerprints: Vec<String>,
    /// Another URL of the same (single) authority: a replica sharing its
    /// database (`keyd serve --database postgres://...`). Repeat for more
    /// (up to 8), in the order unlock tries them after --authority when it
    /// cannot be reached or answers 5xx. Enrollment goes to --authority.
    #[arg(long = "replica", value_name = "URL")]
    pub replicas: Vec<String>,
    /// With several authorities: how many must answer to unlock.
    #[arg(long, value_name = "K")]
    pub threshold: Option<u8>,
    /// The name this host enrolls under (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    pub vault: PathBuf,
    #[command(flatten)]
    pub authority: AuthorityArgs,
    /// Label of the new keyslot.
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub label: String,
    /// How to open the vault to add the slot.
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

#[derive(Debug, Args)]
pub struct RebootArgs {
    /// Announce the reboot as planned (required: the only kind there is).
    #[arg(long, required = true)]
    pub planned: bool,
    /// Vaults whose authorities to tell (default: those listed in
    /// /etc/atrest/vaults, one path per line).
    pub vaults: Vec<PathBuf>,
    #[command(flatten)]
    pub retry: AuthorityRetryArgs,
}

// How to open an existing vault. With none given, the passphrase is asked
// on the terminal.
#[derive(Debug, Args, Clone, Default)]
pub struct UnlockArgs {
    /// Read the passphrase from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", group = "unlock")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the recovery key (as printed by `atrest init`) from this file.
    #[arg(long, value_name = "FILE", group = "unlock")]
    pub recovery_key_file: Option<PathBuf>,
    /// Use this 32-byte key file.
    #[arg(long, value_name = "FILE", group = "unlock")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Cipher {
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    #[value(name = "xchacha20-poly1305")]
    XChaCha20Poly1305,
}

#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Argon2id memory in MiB for passphrase slots.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub argon2_memory: u32,
    /// Argon2id passes for passphrase slots.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub argon2_iterations: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Encrypted by atrest, mounted through FUSE (works anywhere).
    Fuse,
    /// Encrypted by the kernel (fscrypt v2) on ext4/f2fs: native speed.
    Fscrypt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FscryptModeArg {
    /// AES-256-XTS contents, AES-256-CTS names.
    Aes,
    /// Adiantum, for CPUs without AES instructions.
    Adiantum,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to hold the encrypted files (fuse: the ciphertext; fscrypt:
    /// an empty directory on ext4/f2fs that the kernel encrypts).
    pub vault: PathBuf,
    /// Who encrypts: atrest through FUSE, or the kernel's fscrypt.
    #[arg(long, value_enum, default_value = "fuse")]
    pub backend: BackendArg,
    /// fscrypt modes.
    #[arg(long, value_enum, default_value = "aes")]
    pub fscrypt_mode: FscryptModeArg,
    /// Read the new passphrase from this file instead of asking twice.
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    pub passphrase_file: Option<PathBuf>,
    /// Protect the vault with this 32-byte key file (created if missing).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Content cipher.
    #[arg(long, value_enum, default_value = "aes-256-gcm")]
    pub cipher: Cipher,
    /// Do not create a recovery-key slot.
    #[arg(long)]
    pub no_recovery_key: bool,
    /// Write the recovery key to this new file (read-only, mode 0400) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub recovery_key_out: Option<PathBuf>,
    /// Vault format: 1, or 2 (experimental, docs/format.md §16: FUSE only;
    /// it mounts and `fsck` checks and repairs it, but has no witness
    /// yet).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=2), hide = true)]
    pub format: u16,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub vault: PathBuf,
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Stay in the foreground (for systemd) instead of returning once mounted.
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: allow_other (other users may use the mount), suid and
    /// dev (off by default: modes in the backing directory are not authenticated).
    #[arg(short = 'o', value_name = "OPTIONS", value_delimiter = ',')]
    pub options: Vec<String>,
    /// Threads serving file system requests.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Seconds the kernel may cache attributes and names.
    #[arg(long, default_value_t = 1.0)]
    pub cache_seconds: f64,
    /// Append the mount process's log to this file.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Internal: read the unlocked master key from standard input.
    #[arg(long, hide = true)]
    pub master_key_stdin: bool,
    /// Mount a format 2 vault although it does not descend from the state
    /// this host last saw (an earlier copy put back, or another copy
    /// written meanwhile); what was written after that state is lost. The
    /// vault's log records it, and the host's witness follows this copy.
    #[arg(long)]
    pub accept_rollback: bool,
}

#[derive(Debug, Args)]
pub struct UnlockCmdArgs {
    pub vault: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// A FUSE vault: mount its plaintext view here.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// With --mount: mount options, as for `atrest mount -o` (allow_other so
    /// that service users such as postgres can use the mount).
    #[arg(
        short = 'o',
        value_name = "OPTIONS",
        value_delimiter = ',',
        requires = "mount"
    )]
    pub options: Vec<String>,
    #[command(flatten)]
    pub retry: AuthorityRetryArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// An fscrypt vault, or /dev/mapper/NAME of a LUKS volume opened with
    /// `atrest luks open` (closed as `atrest luks close NAME`).
    pub vault: PathBuf,
    /// Remove the key for every user who added it (needs root).
    #[arg(long)]
    pub all_users: bool,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    pub mountpoint: PathBuf,
    /// Detach now even if files are open (the kernel finishes later).
    #[arg(long)]
    pub lazy: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A vault, or a LUKS2 volume (its keyslots and atrest bindings).
    pub vault: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SlotKindArg {
    Passphrase,
    RecoveryKey,
    KeyFile,
}

// The new slot of `keyslot add` and `backup keyslot add`.
#[derive(Debug, Args)]
pub struct NewSlotArgs {
    /// Kind of the new slot.
    #[arg(long, value_enum)]
    pub kind: SlotKindArg,
    /// New passphrase from this file (else asked twice).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Key file for the new slot (created with a random key if missing).
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// Write a new recovery key to this new file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub recovery_key_out: Option<PathBuf>,
    /// A note for people, shown by `keyslot list`.
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum KeyslotCommand {
    /// List the keyslots (no unlock needed).
    List {
        vault: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Add a keyslot; unlock with an existing one.
    Add {
        vault: PathBuf,
        #[command(flatten)]
        new: NewSlotArgs,
        #[command(flatten)]
        unlock: UnlockArgs,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a keyslot; unlock with any slot (refuses the last one).
    Remove {
        vault: PathBuf,
        slot: u8,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    pub vault: PathBuf,
    /// The current passphrase (else asked).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The new passphrase (else asked twice).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    pub vault: PathBuf,
    /// Print the report as JSON: `problems` and `repaired`, each finding
    /// with `backing`, `plain`, `kind` (`corrupt`, `torn`, or `note` for format 2
    /// findings that are not damage) and `what`.
    #[arg(long)]
    pub json: bool,
    /// Cut every last block that a crash tore back to the last complete
    /// block (each printed as `repaired:`); nothing else is changed. Needs
    /// the vault unmounted. Format 2 vaults (docs/format.md §16.18): blocks
    /// that fail become holes, entries whose object's record fails (or names
    /// no object) are dropped and that page of records freed, wrong `nlink`s
    /// and directory sizes corrected, orphans of a crash freed, data files
    /// of no object removed and bytes past a file's last block cut, a
    /// free-page bitmap that disagrees with the pages in use corrected, a
    /// config copy's temporary file left by a crash removed; the repair is
    /// reported to the vault's key authorities. Other damage is left, and
    /// named (files in the backing directory atrest did not write are never
    /// removed: move them out).
    #[arg(long)]
    pub repair: bool,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    pub vault: PathBuf,
    /// Leave out what fails authentication instead of stopping: a block
    /// becomes a hole (zeros), a name or symlink target the entry not
    /// made. Each is printed as `dropped:` and recorded in the vault's log
    /// as a MIGRATE record.
    #[arg(long)]
    pub drop_corrupt: bool,
    /// Objects per batch (checkpoint, then the batch's format 1 files
    /// removed); tests make it small so that kills land between batches.
    #[arg(long, hide = true, default_value_t = 4096, value_name = "N")]
    pub batch_objects: u64,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum BackupCommand {
    /// Create a repository (an empty or new directory, or an unused
    /// s3://BUCKET/PREFIX) with a new random key in keyslots of its own:
    /// with --vault, one that the vault's keys open; else a passphrase
    /// (--passphrase-file, or asked twice) or a key file (--key-file,
    /// created if missing); and
    /// a recovery key printed once (--no-recovery-key: none).
    Init(BackupInitArgs),
    /// Back up files and directories into a new snapshot. Exit 3 when some
    /// source entries could not be read (the snapshot holds the rest).
    Run(BackupRunArgs),
    /// List the repository's snapshots, oldest first.
    Snapshots(BackupListArgs),
    /// Restore a snapshot (id, unique id prefix, or `latest`) under TARGET.
    /// Exit 3 when some entries could not be restored; damaged data is
    /// never written.
    Restore(BackupRestoreArgs),
    /// Check every snapshot, tree and index (and with --read-data every
    /// pack and blob). Exit 4 naming each damaged or missing object.
    Check(BackupCheckArgs),
    /// The repository's format, keyslots (and so which vaults' keys open
    /// it), snapshots and size.
    Status(BackupListArgs),
    /// Delete snapshots: those named, or all but those a --keep-* policy
    /// keeps; with --prune, also the data no remaining snapshot uses.
    Forget(BackupForgetArgs),
    /// Delete the data no snapshot uses (packs rewritten or removed).
    Prune(BackupListArgs),
    /// List a snapshot's entries (mode, owner, size, time, path).
    Ls(BackupLsArgs),
    /// What changed between two snapshots: + added, - removed, M contents,
    /// U metadata only.
    Diff(BackupDiffArgs),
    /// List the repository's locks and remove the stale ones (left by a
    /// killed command: older than 30 minutes, or of this host with its
    /// process gone); --remove-all removes every lock.
    Unlock(BackupUnlockArgs),
    /// Serve every snapshot read-only under DIR (snapshots/<time>/,
    /// snapshots/latest, ids/<id>) until unmounted (`umount DIR`) or
    /// interrupted.
    Mount(BackupMountArgs),
    /// List, add or remove the repository's keyslots.
    #[command(subcommand)]
    Keyslot(BackupKeyslotCommand),
    /// Give the repository a keyslot of its own at a key authority (or
    /// k-of-n of them): this host enrolls (or binds to its enrollment)
    /// and the repository's key is wrapped under the key the authority
    /// releases, as `atrest enroll` does for a vault. Open the repository
    /// with an existing slot to add it. Afterwards commands given no
    /// secret ask the authority; `atrest keyd host shred` there makes the
    /// slot useless.
    Enroll(BackupEnrollArgs),
    /// Crypto-erase the repository: destroy every keyslot (each key object
    /// overwritten, then deleted), then check that the secret given no
    /// longer opens it. Every snapshot becomes unreadable; no data object
    /// is deleted. Without --yes, says what would be lost and exits 2.
    Shred(BackupShredArgs),
}

#[derive(Debug, Args)]
pub struct BackupEnrollArgs {
    /// How to open the repository to add the slot.
    #[command(flatten)]
    pub key: BackupKeyArgs,
    #[command(flatten)]
    pub authority: AuthorityArgs,
    /// Label of the new keyslot.
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub label: String,
}

#[derive(Debug, Args)]
pub struct BackupInitArgs {
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Make no recovery-key slot.
    #[arg(long)]
    pub no_recovery_key: bool,
    /// Write the recovery key to this new file (mode 0400) instead of the
    /// terminal.
    #[arg(long, value_name = "FILE", conflicts_with = "no_recovery_key")]
    pub recovery_key_out: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum BackupKeyslotCommand {
    /// List the keyslots (no secret needed; their labels are authenticated
    /// only once a secret opens the repository).
    List {
        #[command(flatten)]
        at: BackupRepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Add a keyslot; open the repository with an existing one.
    Add {
        #[command(flatten)]
        key: BackupKeyArgs,
        #[command(flatten)]
        new: NewSlotArgs,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a keyslot (its object overwritten, then deleted); open the
    /// repository with any slot. Refuses the last one (`backup shred`
    /// destroys them all).
    Remove {
        slot: u8,
        #[command(flatten)]
        key: BackupKeyArgs,
    },
}

#[derive(Debug, Args)]
pub struct BackupShredArgs {
    /// Optional: a secret that opens the repository now. It is checked
    /// before anything is destroyed, and checked to fail afterwards.
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Destroy the keyslots (without it, nothing is changed).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct BackupMountArgs {
    /// An empty directory to mount on.
    pub dir: PathBuf,
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Let other users read the mount (as their modes allow).
    #[arg(long)]
    pub allow_other: bool,
}

#[derive(Debug, Args)]
pub struct BackupUnlockArgs {
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Remove every lock, even those of running commands.
    #[arg(long)]
    pub remove_all: bool,
}

#[derive(Debug, Args)]
pub struct BackupLsArgs {
    /// Snapshot id, a unique prefix of one, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// One JSON object per entry, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupDiffArgs {
    pub from: String,
    pub to: String,
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// One JSON object per change, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupForgetArgs {
    /// Snapshot ids (or unique prefixes) to delete.
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: usize,
    /// Keep the newest snapshot of each of the newest N hours (UTC).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: usize,
    /// ... of each of the newest N days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: usize,
    /// ... of each of the newest N weeks (Monday to Sunday).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: usize,
    /// ... of each of the newest N months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: usize,
    /// ... of each of the newest N years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: usize,
    /// Then prune.
    #[arg(long)]
    pub prune: bool,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

// Where a repository is.
#[derive(Debug, Args)]
pub struct BackupRepoArgs {
    /// The repository: a local directory, or s3://BUCKET/PREFIX on AWS or
    /// any S3-compatible store (credentials from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, as the AWS tools read them).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub repo: PathBuf,
    /// Endpoint of an S3-compatible store (path-style; http:// allowed).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
}

// Where a repository is, and the secret that opens it.
#[derive(Debug, Args)]
pub struct BackupKeyArgs {
    #[command(flatten)]
    pub at: BackupRepoArgs,
    /// Open the repository through this vault: its vault keyslot opens
    /// with the vault's keys. --passphrase-file, --recovery-key-file and
    /// --key-file then unlock the vault; with none of them, a vault with a
    /// remote keyslot asks its key authority.
    #[arg(long, value_name = "VAULT")]
    pub vault: Option<PathBuf>,
    /// Without --vault: a secret of one of the repository's own keyslots
    /// (at `init`: the new passphrase or key file). With none given, a
    /// repository with a keyslot at a key authority (`backup enroll`) asks
    /// that authority.
    #[command(flatten)]
    pub unlock: UnlockArgs,
    #[command(flatten)]
    pub retry: AuthorityRetryArgs,
}

#[derive(Debug, Args)]
pub struct BackupRunArgs {
    /// Files and directories to back up (absolute paths are stored as given).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// A tag for the snapshot; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Leave out entries matching PATTERN: without a `/` it matches names
    /// (`*.tmp`, `cache`), with one whole paths (`/srv/data/**/tmp`);
    /// repeat for several.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Do not cross into other file systems below each path.
    #[arg(long)]
    pub one_file_system: bool,
    /// Read everything and say what would be stored; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compare files with this snapshot (id, prefix or `latest`) instead of
    /// the latest one of this host and these paths; files whose size,
    /// mtime, ctime and inode are unchanged are not read again.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupListArgs {
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupRestoreArgs {
    /// Snapshot id, a unique prefix of one, or `latest`.
    pub snapshot: String,
    /// Directory to restore into (each backed-up path lands below it).
    pub target: PathBuf,
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Restore only entries matching PATTERN (with everything below a
    /// matching directory); patterns as for `run --exclude`, matched
    /// against the paths as backed up; repeat for several.
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Leave out entries matching PATTERN and everything below them.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BackupCheckArgs {
    #[command(flatten)]
    pub key: BackupKeyArgs,
    /// Also read every pack and open every blob.
    #[arg(long)]
    pub read_data: bool,
    /// Also read a random N% of the packs (e.g. `5%` daily reads every pack
    /// within a few weeks).
    #[arg(long, value_name = "N%", value_parser = parse_percent, conflicts_with = "read_data")]
    pub read_data_subset: Option<u8>,
}

/// `N%` or `N`, 1 to 100.
fn parse_percent(text: &str) -> Result<u8, String> {
    let n: u8 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text}: give a percentage such as 5%"))?;
    if (1..=100).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{text}: give a percentage from 1% to 100%"))
    }
}

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum LuksCommand {
    /// Add a keyslot the key authority releases, and store the binding as
    /// an `atrest` token in the header. Enrolls this host (with --token)
    /// or binds to its existing enrollment (without).
    Bind(LuksBindArgs),
    /// Ask the key authority for the volume's key (policy, approval, boot
    /// accounting and audit as for a vault), check it against the header,
    /// and open /dev/mapper/NAME. Exit 5 when the authority refused for
    /// good, 6 on an audit-log alarm.
    Open(LuksOpenArgs),
    /// Close /dev/mapper/NAME.
    Close { name: String },
    /// A scratch disk (an instance store) at every boot: a blank device is
    /// formatted as LUKS2 bound to the authority, opened, given a file
    /// system and mounted; a device already bound is opened and mounted.
    /// Never formats a device that holds anything.
    Scratch(LuksScratchArgs),
    /// List the volume's keyslots and which are bound to an authority.
    List(LuksListArgs),
    /// Remove atrest bindings: each one's keyslot is destroyed, then its
    /// token removed.
    Unbind(LuksUnbindArgs),
    /// Wipe every keyslot of the header (as `cryptsetup erase`): nothing
    /// opens the volume any more, with any passphrase, key file or token.
    Erase(LuksEraseArgs),
}

#[derive(Debug, Args)]
pub struct LuksBindArgs {
    /// The LUKS2 device or image file.
    pub device: PathBuf,
    #[command(flatten)]
    pub authority: AuthorityArgs,
    /// A passphrase or key file that opens an existing keyslot (its exact
    /// bytes, as `cryptsetup --key-file` reads them), to authorise the new
    /// keyslot.
    #[arg(long, value_name = "FILE")]
    pub existing_key_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct LuksScratchArgs {
    /// The block device (e.g. /dev/nvme1n1).
    pub device: PathBuf,
    /// Where to mount its file system (created if missing).
    #[arg(long, value_name = "DIR")]
    pub mount: PathBuf,
    /// The file system made on a freshly formatted device.
    #[arg(long = "fs", default_value = "ext4", value_parser = ["ext4", "xfs"])]
    pub fs: String,
    /// The mapping's name (/dev/mapper/NAME).
    #[arg(long, default_value = "atrest-scratch", value_name = "NAME")]
    pub name: String,
    /// The authority a blank device is bound to (a token, if given, is
    /// not spent when the device is already bound).
    #[command(flatten)]
    pub authority: AuthorityArgs,
    #[command(flatten)]
    pub retry: AuthorityRetryArgs,
}

#[derive(Debug, Args)]
pub struct LuksOpenArgs {
    /// The LUKS2 device or image file.
    pub device: PathBuf,
    /// Open the mapping /dev/mapper/NAME.
    #[arg(long, value_name = "NAME", required_unless_present = "check_only")]
    pub name: Option<String>,
    /// Only fetch the key and check it opens the atrest keyslot; map nothing.
    #[arg(long, conflicts_with = "name")]
    pub check_only: bool,
    #[command(flatten)]
    pub retry: AuthorityRetryArgs,
}

#[derive(Debug, Args)]
pub struct LuksListArgs {
    /// The LUKS2 device or image file.
    pub device: PathBuf,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LuksUnbindArgs {
    /// The LUKS2 device or image file.
    pub device: PathBuf,
    /// Only this token (`atrest luks list` shows them); default: every
    /// atrest binding.
    #[arg(long = "token", value_name = "ID")]
    pub token_id: Option<u32>,
}

#[derive(Debug, Args)]
pub struct LuksEraseArgs {
    /// The LUKS2 device or image file.
    pub device: PathBuf,
    /// Really erase: without it, say what would be lost and do nothing.
    #[arg(long)]
    pub yes: bool,
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::{Cli, Command};

    fn child(args: &[&str]) -> Option<Cli> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        Cli::parse_mount_child(&argv)
    }

    /// `atrest mount v m --master-key-stdin`, then `extra`.
    fn mount_child(extra: &[&str]) -> Option<Cli> {
        let mut args = vec!["atrest", "mount", "v", "m", "--master-key-stdin"];
        args.extend_from_slice(extra);
        child(&args)
    }

    #[test]
    fn the_mount_process_is_parsed_without_the_whole_tree() {
        let cli = mount_child(&["--threads", "2"]).expect("a mount process's arguments");
        let Command::Mount(mount) = cli.command else {
            panic!("not a mount: {:?}", cli.command)
        };
        assert!(mount.master_key_stdin);
        assert_eq!(mount.threads, 2);
    }

    /// Everything but a well-formed mount process goes to the whole tree,
    /// which prints the help, version or error it always printed.
    #[test]
    fn anything_else_falls_back_to_the_whole_tree() {
        for extra in [
            &["--help"][..],
            &["-h"],
            &["--version"],
            &["--bogus"],
            &["--threads", "x"],
            &["extra"],
            &["--key-file", "k", "--passphrase-file", "p"],
        ] {
            assert!(
                mount_child(extra).is_none(),
                "{extra:?} after a mount process's arguments was accepted"
            );
        }
        for args in [
            &["atrest", "mount", "v", "m"][..],
            &["atrest", "status", "--master-key-stdin"],
            &["atrest", "mount", "v", "--master-key-stdin"],
            // The flag as the value of another option is not the flag.
            &[
                "atrest",
                "mount",
                "--log-file",
                "--master-key-stdin",
                "v",
                "m",
            ],
            &["atrest", "--master-key-stdin", "mount", "v", "m"],
            &["atrest"],
        ] {
            assert!(
                child(args).is_none(),
                "{args:?} was taken as a mount process"
            );
        }
    }

    /// clap's own checks of the definitions (conflicting names, groups
    /// naming missing arguments), over every deferred command.
    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
