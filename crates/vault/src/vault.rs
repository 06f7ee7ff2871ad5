//! Opening, creating and changing a vault: [`LockedVault`] is a vault whose
//! config has been read; only a keyslot turns it into a [`Vault`], which
//! holds the master key and the subkeys every backend needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use atrest_core::{
    Argon2Params, BlockCipher, ContentAlgorithm, HeaderMac, NAME_KEY_LEN, NameCipher, SecretKey,
    labels,
};

use crate::VaultError;
use crate::config::{
    BACKUP_FILE, Backend, CONFIG_FILE, MAX_CONFIG_LEN, MAX_SLOTS, VERSION, VERSION_2, VaultConfig,
    write_atomic,
};
use crate::content::ContentKey;
use crate::content2::ContentKey2;
use crate::keyslot::{Keyslot, SlotKind, Unlocker};
use crate::names::{NameTransform, create_dir_id};
use crate::recovery::RecoveryKey;
use crate::remote::{RemoteMember, RemoteSlot, ThresholdSlot, seal_share};
use crate::witness::{AuthorityWitness, LocalWitnessFile, WitnessCheck, Witnessed};

/// Choices made once, at `atrest init`.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    pub algorithm: ContentAlgorithm,
    pub backend: Backend,
    pub argon2: Argon2Params,
    /// Add a recovery-key slot and return the key (shown once).
    pub recovery_key: bool,
    /// The vault format: [`VERSION`] 1, or 2 (docs/format.md §16,
    /// experimental, made by the hidden `atrest init --format 2`; FUSE only).
    pub format: u16,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            algorithm: ContentAlgorithm::Aes256Gcm,
            backend: Backend::Fuse,
            argon2: Argon2Params::DEFAULT,
            recovery_key: true,
            format: VERSION,
        }
    }
}

/// The keys of a format 2 vault (§16.2), derived when asked for: the
/// metadata store's and the content key its files' keys derive from.
pub struct VaultKeys2 {
    pub meta: atrest_meta::MetaKeys,
    pub content: ContentKey2,
}

/// An opened and recovered format 2 vault ([`Vault::open_format_2`]):
/// the metadata store and the content key of its files
/// ([`crate::ContentFile2`] reads and writes through both).
pub struct Contents2 {
    pub store: atrest_meta::Store,
    pub content: ContentKey2,
}

/// Subdirectories of `objects/` in a format 2 vault: one per last two hex
/// digits of an object id (§16.1).
const OBJECT_DIRS: u16 = 256;

/// The subkeys a backend needs; derived once at unlock.
pub struct VaultKeys {
    pub content: ContentKey,
    pub names: NameTransform,
}

impl VaultKeys {
    fn derive(master: &SecretKey, config: &VaultConfig) -> Self {
        let salt = &config.vault_id;
        let content = ContentKey::new(
            master.derive(salt, labels::CONTENT_KEY),
            config.algorithm,
            config.block_size,
        );
        let names = NameTransform::new(
            NameCipher::new(master.derive_bytes(salt, labels::NAME_KEY, NAME_KEY_LEN)),
            BlockCipher::new(config.algorithm, &master.derive(salt, labels::METADATA_KEY)),
        );
        Self { content, names }
    }
}

fn config_mac(master: &SecretKey, vault_id: &[u8; 16]) -> HeaderMac {
    HeaderMac::new(&master.derive(vault_id, labels::CONFIG_MAC))
}

fn read_config(path: &Path) -> Result<VaultConfig, VaultError> {
    let len = fs::metadata(path).map_err(VaultError::io(path))?.len();
    if len > MAX_CONFIG_LEN as u64 {
        return Err(VaultError::Corrupt(format!(
            "{} is larger than any config",
            path.display()
        )));
    }
    VaultConfig::decode(&fs::read(path).map_err(VaultError::io(path))?)
}

/// A vault whose config has been read but not yet unlocked.
pub struct LockedVault {
    root: PathBuf,
    primary: Result<VaultConfig, VaultError>,
    backup: Result<VaultConfig, VaultError>,
}

impl LockedVault {
    /// Reads both config copies; fails only if neither is usable.
    pub fn open(root: &Path) -> Result<Self, VaultError> {
        let meta = fs::metadata(root).map_err(VaultError::io(root))?;
        if !meta.is_dir() {
            return Err(VaultError::NotAVault(root.to_path_buf()));
        }
        let primary_path = root.join(CONFIG_FILE);
        let backup_path = root.join(BACKUP_FILE);
        if !primary_path.exists() && !backup_path.exists() {
            return Err(VaultError::NotAVault(root.to_path_buf()));
        }
        let primary = read_config(&primary_path);
        let backup = read_config(&backup_path);
        // A copy written by a newer atrest (an upgrade that was interrupted)
        // must not be "repaired" back to the old format from the other one.
        for copy in [&primary, &backup] {
            if let Err(VaultError::UnknownVersion(v)) = copy {
                return Err(VaultError::UnknownVersion(*v));
            }
        }
        if let (Err(e), Err(_)) = (&primary, &backup) {
            return Err(match e {
                VaultError::UnknownVersion(v) => VaultError::UnknownVersion(*v),
                VaultError::Corrupt(m) => {
                    VaultError::Corrupt(format!("{m} (and the backup copy is unusable too)"))
                }
                other => {
                    VaultError::Corrupt(format!("{other} (and the backup copy is unusable too)"))
                }
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            primary,
            backup,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What a format 2 vault's metadata says before unlock, for `atrest
    /// status` (unauthenticated, docs/format.md §16.5): `None` for format 1,
    /// or when no superblock parses.
    pub fn metadata_state(&self) -> Option<atrest_meta::status::Unverified> {
        let config = self.config();
        if config.format != VERSION_2 {
            return None;
        }
        let backing = atrest_meta::DirBacking::open(&self.root).ok()?;
        atrest_meta::status::read_unverified(&backing, config.algorithm.overhead())
    }

    /// What an unlock request of a format 2 vault claims about it
    /// (docs/format.md §16.17.2), read before any key exists
    /// (unauthenticated: the authority judges it, and the mount checks it
    /// against what authenticates, [`crate::witness::AuthorityWitness`]).
    /// `None` for format 1, or when no superblock parses.
    pub fn claim(&self) -> Option<atrest_remote::GenerationClaim> {
        let config = self.config();
        if config.format != VERSION_2 {
            return None;
        }
        let backing = atrest_meta::DirBacking::open(&self.root).ok()?;
        let claim = atrest_meta::status::read_claim(&backing, config.algorithm.overhead())?;
        Some(atrest_remote::GenerationClaim {
            checkpoint: claim.checkpoint,
            seq: claim.sequence,
            chain: claim.chain,
            config_generation: claim.config_generation,
            lineage: atrest_remote::Lineage::new(
                claim
                    .lineage
                    .iter()
                    .map(crate::witness::to_remote)
                    .collect(),
            )
            .ok()?,
        })
    }

    /// The config to describe the vault by (unauthenticated until unlock).
    pub fn config(&self) -> &VaultConfig {
        match (&self.primary, &self.backup) {
            (Ok(c), _) | (Err(_), Ok(c)) => c,
            (Err(_), Err(_)) => unreachable!("open() refuses a vault with no usable config"),
        }
    }

    /// Problems with either config copy, for `status` and `fsck`.
    pub fn config_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = &self.primary {
            out.push(format!("{CONFIG_FILE}: {e}"));
        }
        if let Err(e) = &self.backup {
            out.push(format!("{BACKUP_FILE}: {e}"));
        }
        if let (Ok(a), Ok(b)) = (&self.primary, &self.backup)
            && a != b
        {
            out.push(format!("{CONFIG_FILE} and {BACKUP_FILE} differ"));
        }
        out
    }

    /// Tries every slot of each config copy until one unwraps the master
    /// key, then opens the vault from the newest copy that key
    /// authenticates.
    pub fn unlock(self, unlocker: &Unlocker) -> Result<Vault, VaultError> {
        let mut tried: Vec<&VaultConfig> = Vec::new();
        let mut tampered = false;
        for config in [&self.primary, &self.backup].into_iter().flatten() {
            if tried.contains(&config) {
                continue;
            }
            tried.push(config);
            for slot in &config.keyslots {
                let Some(master) = slot.unwrap(&config.vault_id, unlocker) else {
                    continue;
                };
                match self.select(master) {
                    Ok(vault) => return Ok(vault),
                    Err(VaultError::Tampered) => tampered = true,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(if tampered {
            VaultError::Tampered
        } else {
            VaultError::WrongKey
        })
    }

    /// Opens the vault from the newest copy `master` authenticates, and
    /// rewrites both copies from it if they are not already identical.
    fn select(&self, master: SecretKey) -> Result<Vault, VaultError> {
        let verified = [&self.primary, &self.backup]
            .into_iter()
            .flatten()
            .filter(|c| c.verify(&config_mac(&master, &c.vault_id)).is_ok())
            // The primary wins a tie: it is written first.
            .reduce(|best, c| {
                if c.generation > best.generation {
                    c
                } else {
                    best
                }
            })
            .ok_or(VaultError::Tampered)?;
        // A copy of a later format that does not authenticate is never
        // "repaired" back to the older format from the other copy: once a
        // vault is format 2 (or migrating to it), format 1 would read a
        // tree that is no longer there.
        let newest = [&self.primary, &self.backup]
            .into_iter()
            .flatten()
            .map(|c| c.format)
            .max()
            .unwrap_or(verified.format);
        if newest > verified.format {
            return Err(VaultError::Corrupt(format!(
                "one config copy says vault format {newest}, but only the format {} copy authenticates; \
                 refusing to go back to the older format (restore the newer copy from a backup)",
                verified.format
            )));
        }
        let in_sync = self.primary.as_ref().ok() == Some(verified)
            && self.backup.as_ref().ok() == Some(verified);
        let mut vault = Vault {
            root: self.root.clone(),
            keys: VaultKeys::derive(&master, verified),
            config: verified.clone(),
            master,
        };
        if !in_sync {
            tracing::warn!(vault = %self.root.display(), "a config copy was damaged or stale; rewriting both");
            // Best effort: a read-only backing store still opens.
            if let Err(e) = vault.save() {
                tracing::warn!(vault = %self.root.display(), "could not repair the config: {e}");
            }
        }
        Ok(vault)
    }
}

/// An unlocked vault: the master key and its subkeys. Zeroized on drop.
pub struct Vault {
    root: PathBuf,
    config: VaultConfig,
    master: SecretKey,
    keys: VaultKeys,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Makes `root` (absent or empty) a vault with one slot for `first`,
    /// plus a recovery-key slot if asked. Returns the recovery key.
    pub fn create(
        root: &Path,
        options: CreateOptions,
        first: &Unlocker,
        label: &str,
    ) -> Result<(Vault, Option<RecoveryKey>), VaultError> {
        match options.format {
            VERSION => {}
            VERSION_2 if options.backend == Backend::Fuse => {}
            VERSION_2 => {
                return Err(VaultError::Invalid(
                    "format 2 is for FUSE vaults only; fscrypt vaults keep format 1".into(),
                ));
            }
            other => {
                return Err(VaultError::Invalid(format!(
                    "there is no vault format {other}: choose 1 or 2"
                )));
            }
        }
        match fs::read_dir(root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(VaultError::NotEmpty(root.to_path_buf()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(VaultError::io(root))?;
            }
            Err(e) => return Err(VaultError::io(root)(e)),
        }
        #[allow(clippy::disallowed_methods, reason = "the vault's creation time, once")]
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut config = VaultConfig::new(options.algorithm, options.backend, now);
        config.format = options.format;
        let master = SecretKey::random();
        config.keyslots.push(Keyslot::wrap(
            &config.vault_id,
            0,
            first.new_slot_kind(options.argon2)?,
            label.to_string(),
            first,
            &master,
        )?);
        let recovery = if options.recovery_key {
            let key = RecoveryKey::generate();
            let unlocker = Unlocker::RecoveryKey(key.secret().clone());
            config.keyslots.push(Keyslot::wrap(
                &config.vault_id,
                1,
                unlocker.new_slot_kind(options.argon2)?,
                "recovery".into(),
                &unlocker,
                &master,
            )?);
            Some(key)
        } else {
            None
        };
        if options.backend == Backend::Fuse && options.format == VERSION {
            create_dir_id(root)
                .map_err(|e| VaultError::Invalid(format!("{}: {e}", root.display())))?;
        }
        let mut vault = Vault {
            root: root.to_path_buf(),
            keys: VaultKeys::derive(&master, &config),
            config,
            master,
        };
        vault.save()?;
        if options.format == VERSION_2 {
            vault.create_format_2(now)?;
        }
        Ok((vault, recovery))
    }

    /// The skeleton of a format 2 vault after its config (§16.1):
    /// `objects/` and its 256 subdirectories, `atrest.meta` with
    /// checkpoint 1 of an empty root directory (owned by whoever creates
    /// the vault, mode 0755) bound to the config just written, and
    /// `atrest.log/`.
    fn create_format_2(&self, now: u64) -> Result<(), VaultError> {
        use std::os::unix::fs::DirBuilderExt;
        let objects = self.root.join("objects");
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        builder.create(&objects).map_err(VaultError::io(&objects))?;
        for hh in 0..OBJECT_DIRS {
            let dir = objects.join(format!("{hh:02x}"));
            builder.create(&dir).map_err(VaultError::io(&dir))?;
        }
        fs::File::open(&objects)
            .and_then(|d| d.sync_all())
            .map_err(VaultError::io(&objects))?;
        let backing =
            atrest_meta::DirBacking::open(&self.root).map_err(VaultError::io(&self.root))?;
        let owner = (
            0o755,
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let time = atrest_meta::record::Timestamp {
            secs: i64::try_from(now).unwrap_or(0),
            nanos: 0,
        };
        atrest_meta::Store::format(
            self.keys2().meta,
            std::sync::Arc::new(backing),
            self.config_binding(),
            owner,
            time,
        )
        .map_err(|e| VaultError::Invalid(format!("{}: {e}", self.root.display())))?;
        Ok(())
    }

    /// The keys of a format 2 vault (§16.2).
    pub fn keys2(&self) -> VaultKeys2 {
        let id = self.config.vault_id;
        VaultKeys2 {
            meta: atrest_meta::MetaKeys::derive(&self.master, id, self.config.algorithm),
            content: ContentKey2::derive(&self.master, &id, self.config.algorithm),
        }
    }

    /// Opens the contents of a format 2 vault for serving: its metadata
    /// store with recovery (§16.16) run to the end, so that a mount
    /// reports ready only once the vault is consistent, and the content
    /// key its files' keys derive from.
    pub fn open_format_2(&self) -> Result<Contents2, VaultError> {
        let (keys, backing) = self.format_2_parts()?;
        let store =
            atrest_meta::Store::open(keys.meta, backing, self.config_binding(), &keys.content)
                .map_err(VaultError::Metadata)?;
        Ok(Contents2 {
            store,
            content: keys.content,
        })
    }

    /// [`Self::open_format_2`] with the host's local witness checked before
    /// recovery writes anything and written again afterwards
    /// (docs/format.md §16.17.5): a vault that does not descend from what
    /// `witness` saw last is refused ([`VaultError::Witness`]) unless
    /// `accept_rollback`.
    pub fn open_format_2_witnessed(
        &self,
        witness: &LocalWitnessFile,
        accept_rollback: bool,
    ) -> Result<(Contents2, WitnessCheck), VaultError> {
        self.open_format_2_witnessed_by(witness, accept_rollback, &[])
            .map(|(contents, witnessed)| (contents, witnessed.local))
    }

    /// [`Self::open_format_2_witnessed`] with what the key authorities
    /// that released the key had witnessed (docs/format.md §16.17.4)
    /// checked at the same point: a vault that does not descend from an
    /// authority's `W` is refused, unless the claim that authority judged
    /// is this disk's (then it released the key for a rollback, which is
    /// recorded, and the local witness follows).
    pub fn open_format_2_witnessed_by(
        &self,
        witness: &LocalWitnessFile,
        accept_rollback: bool,
        authorities: &[AuthorityWitness],
    ) -> Result<(Contents2, Witnessed), VaultError> {
        let (keys, backing) = self.format_2_parts()?;
        let (store, witnessed) = crate::witness::open_store(
            witness,
            accept_rollback,
            authorities,
            keys.meta,
            backing,
            self.config_binding(),
            &keys.content,
        )?;
        let contents = Contents2 {
            store,
            content: keys.content,
        };
        Ok((contents, witnessed))
    }

    /// The keys and backing directory of a format 2 vault.
    fn format_2_parts(
        &self,
    ) -> Result<(VaultKeys2, std::sync::Arc<dyn atrest_meta::Backing>), VaultError> {
        if self.config.format != VERSION_2 {
            return Err(VaultError::Invalid(format!(
                "{} is a format {} vault, not format 2",
                self.root.display(),
                self.config.format
            )));
        }
        if self.config.migrating {
            // Part of the tree may still be format 1 files: what the store
            // holds is not the whole vault yet (§16.3).
            return Err(VaultError::Invalid(format!(
                "{}: `atrest migrate` has not finished converting this vault to format 2; run `atrest migrate {}` to finish (it resumes where it stopped)",
                self.root.display(),
                self.root.display()
            )));
        }
        Ok((self.keys2(), self.backing2()?))
    }

    /// The backing directory of a format 2 vault, as the store reaches it.
    fn backing2(&self) -> Result<std::sync::Arc<dyn atrest_meta::Backing>, VaultError> {
        let backing: std::sync::Arc<dyn atrest_meta::Backing> = std::sync::Arc::new(
            atrest_meta::DirBacking::open(&self.root).map_err(VaultError::io(&self.root))?,
        );
        Ok(backing)
    }

    /// What the checkpoints of a format 2 vault record of its config
    /// (§16.3): its generation and the SHA-256 of its body.
    pub fn config_binding(&self) -> atrest_meta::ConfigBinding {
        atrest_meta::ConfigBinding {
            generation: self.config.generation,
            hash: self.config.body_hash(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    pub fn keys(&self) -> &VaultKeys {
        &self.keys
    }

    /// The 64-byte key handed to the kernel for an fscrypt vault (the
    /// kernel derives per-file keys from it).
    pub fn fscrypt_key(&self) -> atrest_core::SecretBytes {
        self.master
            .derive_bytes(&self.config.vault_id, labels::FSCRYPT_KEY, 64)
    }

    /// The raw master key, for handing to a mount process over a pipe.
    pub fn master_key(&self) -> &SecretKey {
        &self.master
    }

    /// What opens a backup repository bound to this vault: the slot secret
    /// of the repository's vault slot (docs/format.md §18.6), and, for a
    /// format 1 repository, its master key. `HKDF(VMK, vault id, "atrest
    /// v1 backup key")`.
    pub fn backup_key(&self) -> Unlocker {
        let vault_id = self.config.vault_id;
        Unlocker::Vault {
            vault_id,
            key: self
                .master
                .derive(&vault_id, atrest_core::labels::BACKUP_KEY),
        }
    }

    /// Opens a vault with its master key directly (a mount process that
    /// received the key from the parent that unlocked it).
    pub fn from_master_key(locked: LockedVault, master: SecretKey) -> Result<Vault, VaultError> {
        locked.select(master)
    }

    /// Writes the config as `format`, with or without `MIGRATING`: the
    /// commit points of `atrest migrate` (§16.19).
    pub(crate) fn set_format(&mut self, format: u16, migrating: bool) -> Result<(), VaultError> {
        self.config.format = format;
        self.config.migrating = migrating;
        self.save()
    }

    /// Signs and writes both config copies, primary first.
    fn save(&mut self) -> Result<(), VaultError> {
        self.config.generation += 1;
        let mac = config_mac(&self.master, &self.config.vault_id);
        let bytes = self.config.encode(&mac);
        write_atomic(&self.root, CONFIG_FILE, &bytes, 0o400)?;
        write_atomic(&self.root, BACKUP_FILE, &bytes, 0o400)
    }

    fn next_slot_id(&self) -> Result<u8, VaultError> {
        if self.config.keyslots.len() >= MAX_SLOTS {
            return Err(VaultError::TooManySlots(MAX_SLOTS));
        }
        (0..=u8::MAX)
            .find(|id| self.config.keyslots.iter().all(|s| s.id != *id))
            .ok_or(VaultError::TooManySlots(MAX_SLOTS))
    }

    /// Adds a slot for `unlocker`; returns its id.
    pub fn add_slot(
        &mut self,
        unlocker: &Unlocker,
        label: &str,
        argon2: Argon2Params,
    ) -> Result<u8, VaultError> {
        let id = self.next_slot_id()?;
        let slot = Keyslot::wrap(
            &self.config.vault_id,
            id,
            unlocker.new_slot_kind(argon2)?,
            label.to_string(),
            unlocker,
            &self.master,
        )?;
        self.config.keyslots.push(slot);
        self.save()?;
        Ok(id)
    }

    /// Removes a slot; refuses to remove the last one.
    pub fn remove_slot(&mut self, id: u8) -> Result<(), VaultError> {
        let index = self
            .config
            .keyslots
            .iter()
            .position(|s| s.id == id)
            .ok_or(VaultError::NoSuchSlot(id))?;
        if self.config.keyslots.len() == 1 {
            return Err(VaultError::LastSlot);
        }
        self.config.keyslots.remove(index);
        self.save()
    }

    /// Replaces slot `id` with one for `unlocker`, in one config write (a
    /// crash leaves either the old or the new secret working).
    pub fn replace_slot(
        &mut self,
        id: u8,
        unlocker: &Unlocker,
        argon2: Argon2Params,
    ) -> Result<(), VaultError> {
        let index = self
            .config
            .keyslots
            .iter()
            .position(|s| s.id == id)
            .ok_or(VaultError::NoSuchSlot(id))?;
        let label = self.config.keyslots[index].label.clone();
        self.config.keyslots[index] = Keyslot::wrap(
            &self.config.vault_id,
            id,
            unlocker.new_slot_kind(argon2)?,
            label,
            unlocker,
            &self.master,
        )?;
        self.save()
    }

    /// Adds a remote slot (kind 4) for one authority; `member.key` is the
    /// exchange key [`atrest_remote::enroll`] gave with `member.binding`.
    /// `replicas` are other URLs of the same authority, tried in order
    /// when its URL cannot be reached (stored as remote parameters version
    /// 2; none keeps version 1). Returns the slot id.
    pub fn add_remote_slot(
        &mut self,
        member: &RemoteMember,
        replicas: &[String],
        label: &str,
    ) -> Result<u8, VaultError> {
        let slot = RemoteSlot::for_member(member, replicas).map_err(VaultError::Invalid)?;
        let id = self.next_slot_id()?;
        let kind = SlotKind::Remote(Box::new(slot));
        let unlocker = Unlocker::Remote(member.key.clone());
        self.push_slot(id, kind, label, &unlocker)?;
        Ok(id)
    }

    /// Adds a threshold slot (kind 5) that any `threshold` of `members`
    /// open. Returns the slot id.
    pub fn add_threshold_slot(
        &mut self,
        threshold: u8,
        members: &[RemoteMember],
        label: &str,
    ) -> Result<u8, VaultError> {
        let id = self.next_slot_id()?;
        let (slot, secret) = ThresholdSlot::create(&self.config.vault_id, id, threshold, members)
            .map_err(VaultError::Invalid)?;
        self.push_slot(
            id,
            SlotKind::Threshold(slot),
            label,
            &Unlocker::Threshold(secret),
        )?;
        Ok(id)
    }

    fn push_slot(
        &mut self,
        id: u8,
        kind: SlotKind,
        label: &str,
        unlocker: &Unlocker,
    ) -> Result<(), VaultError> {
        let slot = Keyslot::wrap(
            &self.config.vault_id,
            id,
            kind,
            label.to_string(),
            unlocker,
            &self.master,
        )?;
        self.config.keyslots.push(slot);
        self.save()
    }

    fn slot_index(&self, id: u8) -> Result<usize, VaultError> {
        self.config
            .keyslots
            .iter()
            .position(|s| s.id == id)
            .ok_or(VaultError::NoSuchSlot(id))
    }

    /// Re-binds remote slot `id` to an authority's new exchange key (after
    /// the authority rotated this host's secret): same authority and label,
    /// new binding, the VMK wrapped again; one config write.
    pub fn rebind_remote_slot(
        &mut self,
        id: u8,
        binding: atrest_remote::RemoteBinding,
        key: &SecretKey,
    ) -> Result<(), VaultError> {
        let index = self.slot_index(id)?;
        let old = &self.config.keyslots[index];
        let SlotKind::Remote(slot) = &old.kind else {
            return Err(VaultError::Invalid(format!(
                "keyslot {id} is not a remote slot"
            )));
        };
        let kind = SlotKind::Remote(Box::new(RemoteSlot {
            authority: slot.authority.clone(),
            replicas: slot.replicas.clone(),
            binding,
        }));
        self.config.keyslots[index] = Keyslot::wrap(
            &self.config.vault_id,
            id,
            kind,
            old.label.clone(),
            &Unlocker::Remote(key.clone()),
            &self.master,
        )?;
        self.save()
    }

    /// Re-binds member `member` (1-based) of threshold slot `id` to its
    /// authority's new exchange key: its share (as opened at this unlock) is
    /// sealed again under `key`, and the VMK wrapped again under the slot's
    /// `combined` secret, which must be the one this slot was made with.
    pub fn rebind_threshold_member(
        &mut self,
        id: u8,
        member: u8,
        binding: atrest_remote::RemoteBinding,
        key: &SecretKey,
        share: &atrest_remote::Share,
        combined: &SecretKey,
    ) -> Result<(), VaultError> {
        let index = self.slot_index(id)?;
        let vault_id = self.config.vault_id;
        let old = &self.config.keyslots[index];
        let combined = Unlocker::Threshold(combined.clone());
        let SlotKind::Threshold(slot) = &old.kind else {
            return Err(VaultError::Invalid(format!(
                "keyslot {id} is not a threshold slot"
            )));
        };
        if old.unwrap(&vault_id, &combined).is_none() {
            return Err(VaultError::WrongKey);
        }
        let position = usize::from(member)
            .checked_sub(1)
            .filter(|p| *p < slot.members.len())
            .ok_or_else(|| VaultError::Invalid(format!("keyslot {id} has no member {member}")))?;
        if share.index() != member
            || share.threshold() != slot.threshold
            || usize::from(share.count()) != slot.members.len()
        {
            return Err(VaultError::Invalid(format!(
                "that share is not member {member}'s share of keyslot {id}"
            )));
        }
        let mut slot = slot.clone();
        slot.members[position].binding = binding;
        slot.members[position].sealed_share = seal_share(&vault_id, id, key, share);
        self.config.keyslots[index] = Keyslot::wrap(
            &vault_id,
            id,
            SlotKind::Threshold(slot),
            old.label.clone(),
            &combined,
            &self.master,
        )?;
        self.save()
    }

    /// The slot that `unlocker` opens, if any (for `passwd`).
    pub fn slot_for(&self, unlocker: &Unlocker) -> Option<u8> {
        self.config
            .keyslots
            .iter()
            .find(|s| s.unwrap(&self.config.vault_id, unlocker).is_some())
            .map(|s| s.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::SecretBytes;

    fn fast() -> CreateOptions {
        CreateOptions {
            argon2: Argon2Params::INSECURE_FAST,
            ..Default::default()
        }
    }

    fn pw(s: &str) -> Unlocker {
        Unlocker::Passphrase(SecretBytes::new(s.as_bytes().to_vec()))
    }

    fn fast_format_2() -> CreateOptions {
        CreateOptions {
            format: VERSION_2,
            ..fast()
        }
    }

    /// An empty regular file, mode 0600, owned by root.
    fn regular_file() -> atrest_meta::NewObject {
        atrest_meta::NewObject {
            kind: atrest_meta::record::ObjectKind::Regular,
            mode: 0o600,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: Vec::new(),
        }
    }

    /// `Vault::create` of format 2: a version 2 config, the skeleton of
    /// §16.1 and checkpoint 1 bound to the config; the store opens after
    /// unlock, holds an empty root, takes a file, and still opens after a
    /// keyslot change raised the config's generation.
    #[test]
    fn format_2_vaults_are_created_with_their_skeleton() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v2");
        let (mut vault, _) = Vault::create(&root, fast_format_2(), &pw("p"), "admin").unwrap();
        assert_eq!(vault.config().format, VERSION_2);
        assert!(root.join("atrest.meta").is_file());
        assert!(root.join("atrest.log").is_dir());
        assert!(root.join("objects/00").is_dir() && root.join("objects/ff").is_dir());
        assert!(!root.join("atrest.dirid").exists(), "no format 1 files");
        vault
            .add_slot(&pw("q"), "second", Argon2Params::INSECURE_FAST)
            .unwrap();
        drop(vault);
        let vault = LockedVault::open(&root).unwrap().unlock(&pw("q")).unwrap();
        assert_eq!(vault.config().format, VERSION_2);
        let Contents2 {
            mut store, content, ..
        } = vault.open_format_2().unwrap();
        assert!(
            store
                .readdir(atrest_meta::record::ROOT_ID, 0, 10)
                .unwrap()
                .is_empty()
        );
        let now = atrest_meta::record::Timestamp { secs: 5, nanos: 0 };
        let id = store
            .create(atrest_meta::record::ROOT_ID, b"f", regular_file(), now)
            .unwrap()
            .id;
        let mut file = crate::ContentFile2::new(&mut store, &content, id);
        file.write_at(0, b"format 2", now).unwrap();
        file.sync().unwrap();
        assert!(root.join(atrest_meta::data_file_name(id)).is_file());
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// Every file of the vault's metadata and log, with its bytes.
    fn metadata_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = vec![(
            root.join("atrest.meta"),
            fs::read(root.join("atrest.meta")).unwrap(),
        )];
        let mut log: Vec<_> = fs::read_dir(root.join("atrest.log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        log.sort();
        out.extend(log.into_iter().map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        }));
        out
    }

    /// A new format 2 vault in `dir` and its local witness file there.
    fn witnessed_vault(dir: &Path) -> (PathBuf, Vault, LocalWitnessFile) {
        let root = dir.join("v");
        let (vault, _) = Vault::create(&root, fast_format_2(), &pw("p"), "").unwrap();
        let witness = LocalWitnessFile::in_state_dir(&dir.join("state"), &vault.config().vault_id);
        (root, vault, witness)
    }

    /// The local witness (§16.17.5): the first open writes it, a later open
    /// of the same vault is current; the backing directory put back from an
    /// earlier copy is refused with nothing on the disk changed, as is a
    /// copy that went on without this host (a fork) and a damaged witness
    /// file; `accept_rollback` takes the copy, past the witnessed sequence,
    /// and the witness follows it.
    #[test]
    fn the_local_witness_refuses_an_earlier_copy_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (root, vault, witness) = witnessed_vault(dir.path());
        let now = atrest_meta::record::Timestamp { secs: 5, nanos: 0 };
        let create = |store: &mut atrest_meta::Store, name: &[u8]| {
            store
                .create(atrest_meta::record::ROOT_ID, name, regular_file(), now)
                .unwrap();
            store.checkpoint(now).unwrap();
        };
        let open = |accept| vault.open_format_2_witnessed(&witness, accept);
        let (mut c, check) = open(false).unwrap();
        assert_eq!(check, WitnessCheck::First);
        assert!(witness.path().is_file());
        create(&mut c.store, b"a");
        witness.record(&c.store).unwrap();
        drop(c);
        let saved = dir.path().join("saved");
        copy_dir(&root, &saved);
        let (mut c, check) = open(false).unwrap();
        assert_eq!(check, WitnessCheck::Current);
        create(&mut c.store, b"b");
        witness.record(&c.store).unwrap();
        let witnessed = c.store.superblock().generation;
        drop(c);

        // The earlier copy put back: refused, and nothing written.
        let newer = dir.path().join("newer");
        fs::rename(&root, &newer).unwrap();
        copy_dir(&saved, &root);
        let before = metadata_files(&root);
        let err = open(false).err().expect("refused");
        assert!(matches!(err, VaultError::Witness(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("older") && text.contains("--accept-rollback"),
            "{text}"
        );
        assert!(
            text.contains(&format!("witnessed: checkpoint {}", witnessed.checkpoint)),
            "{text}"
        );
        assert!(metadata_files(&root) == before, "the disk was written");

        // A copy that went on without this host: a fork.
        let forked = vault.open_format_2().unwrap();
        let mut store = forked.store;
        for name in [&b"x"[..], b"y", b"z", b"w"] {
            create(&mut store, name);
        }
        assert!(store.superblock().generation.sequence > witnessed.sequence);
        drop(store);
        let err = open(false).err().expect("refused");
        assert!(err.to_string().contains("fork"), "{err}");

        // Accepted: the log jumps past the witnessed sequence.
        let (mut c, check) = open(true).unwrap();
        let WitnessCheck::RollbackAccepted {
            standing,
            witnessed: Some(w),
            ..
        } = check
        else {
            panic!("{check:?}");
        };
        assert_eq!(
            (standing, w),
            (atrest_meta::witness::Standing::Forked, witnessed)
        );
        assert!(c.store.superblock().generation.sequence > witnessed.sequence);
        assert!(c.store.lookup(atrest_meta::record::ROOT_ID, b"b").is_err());
        assert!(c.store.lookup(atrest_meta::record::ROOT_ID, b"x").is_ok());
        drop(c);
        assert_eq!(open(false).unwrap().1, WitnessCheck::Current);

        // A damaged witness file: refused, then replaced when accepted.
        let mut bytes = fs::read(witness.path()).unwrap();
        bytes[40] ^= 1;
        fs::write(witness.path(), &bytes).unwrap();
        let err = open(false).err().expect("refused");
        assert!(err.to_string().contains("damaged"), "{err}");
        let (_, check) = open(true).unwrap();
        assert!(matches!(
            check,
            WitnessCheck::RollbackAccepted {
                witnessed: None,
                ..
            }
        ));
        assert_eq!(open(false).unwrap().1, WitnessCheck::Current);
    }

    /// For the tests of the authority's witness: what an authority that
    /// witnessed `w` and released the key for `claim` hands the mount; the
    /// claim `atrest unlock` would send now; an open with authorities.
    #[allow(clippy::type_complexity, reason = "three closures over one test vault")]
    fn authority_harness<'a>(
        root: &'a Path,
        vault: &'a Vault,
        witness: &'a LocalWitnessFile,
    ) -> (
        impl Fn(atrest_meta::superblock::Generation, atrest_remote::GenerationClaim) -> AuthorityWitness
        + 'a,
        impl Fn() -> atrest_remote::GenerationClaim + 'a,
        impl Fn(&[AuthorityWitness]) -> Result<(Contents2, crate::witness::Witnessed), VaultError> + 'a,
    ) {
        let authority = move |w: atrest_meta::superblock::Generation,
                              claim: atrest_remote::GenerationClaim| {
            AuthorityWitness {
                url: "https://keys.example".into(),
                witnessed: crate::witness::to_remote(&w),
                config_generation: vault.config().generation,
                reported_at_ms: 1,
                claim,
                approval: 77,
                audit_key: [0xa7; 32],
            }
        };
        let claim = move || LockedVault::open(root).unwrap().claim().unwrap();
        let open = move |authorities: &[AuthorityWitness]| {
            vault.open_format_2_witnessed_by(witness, false, authorities)
        };
        (authority, claim, open)
    }

    /// The key authority's witness (§16.17.4): a vault that descends from
    /// `W` opens; an earlier copy whose honest claim the authority judged
    /// and released anyway (an approved rollback) opens, recorded past
    /// `W`, with the local witness following; an earlier copy released
    /// against a claim that was not its own (edited) is refused with
    /// nothing on the disk changed.
    #[test]
    fn an_authority_witness_refuses_an_edited_claim_and_records_an_approved_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let (root, vault, witness) = witnessed_vault(dir.path());
        let now = atrest_meta::record::Timestamp { secs: 5, nanos: 0 };
        let (authority, claim, open) = authority_harness(&root, &vault, &witness);
        let (mut c, _) = open(&[]).unwrap();
        c.store
            .create(atrest_meta::record::ROOT_ID, b"a", regular_file(), now)
            .unwrap();
        let first = c.store.checkpoint(now).unwrap();
        witness.record(&c.store).unwrap();
        drop(c);
        let saved = dir.path().join("saved");
        copy_dir(&root, &saved);
        let (mut c, witnessed) = open(&[authority(first, claim())]).unwrap();
        assert_eq!(witnessed.authority_rollback, None, "current");
        c.store
            .create(atrest_meta::record::ROOT_ID, b"b", regular_file(), now)
            .unwrap();
        let second = c.store.close(now).unwrap();
        witness.record(&c.store).unwrap();
        drop(c);
        let newer_claim = claim();
        assert!(
            newer_claim
                .lineage
                .contains(&crate::witness::to_remote(&second))
        );

        // The earlier copy put back, released against the newer copy's
        // claim: refused, nothing written.
        let newer = dir.path().join("newer");
        fs::rename(&root, &newer).unwrap();
        copy_dir(&saved, &root);
        let before = metadata_files(&root);
        let err = open(&[authority(second, newer_claim)])
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(matches!(err, VaultError::Witness(_)), "{text}");
        assert!(
            text.contains("older than its key authority witnessed")
                && text.contains("https://keys.example")
                && text.contains(&format!("checkpoint {}", second.checkpoint)),
            "{text}"
        );
        assert!(metadata_files(&root) == before, "the disk was written");

        // Released against its own claim: an approved rollback, past W;
        // the local witness (which saw the newer copy) follows.
        let (mut c, witnessed) = open(&[authority(second, claim())]).unwrap();
        let rollback = witnessed.authority_rollback.expect("an approved rollback");
        assert_eq!(rollback.standing, atrest_meta::witness::Standing::Older);
        assert_eq!(rollback.witnessed, second);
        assert!(c.store.superblock().generation.sequence > second.sequence);
        assert!(c.store.lookup(atrest_meta::record::ROOT_ID, b"b").is_err());
        drop(c);
        assert_eq!(open(&[]).unwrap().1.local, WitnessCheck::Current);
    }

    /// The false alarm `WITNESSED` records close (§16.17.4): an authority
    /// witnessed `W`, the mount's check found it current and logged it,
    /// then more checkpoints than `recent` holds passed without a report.
    /// The claim the next unlock sends still names `W` (the authority
    /// judges it current), and so does the superblock the host checks: no
    /// rollback recorded. A `W` the vault never had is still refused.
    #[test]
    fn an_authority_s_w_stays_current_past_31_unreported_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (root, vault, witness) = witnessed_vault(dir.path());
        let now = atrest_meta::record::Timestamp { secs: 5, nanos: 0 };
        let (authority, claim, open) = authority_harness(&root, &vault, &witness);
        let (mut c, _) = open(&[]).unwrap();
        let w = c.store.close(now).unwrap();
        drop(c);
        let (mut c, witnessed) = open(&[authority(w, claim())]).unwrap();
        assert_eq!(witnessed.authority_rollback, None, "current");
        assert_eq!(c.store.acknowledged().first(), Some(&w), "logged");
        for i in 0..40 {
            let name = format!("f{i}");
            c.store
                .create(
                    atrest_meta::record::ROOT_ID,
                    name.as_bytes(),
                    regular_file(),
                    now,
                )
                .unwrap();
            c.store.checkpoint(now).unwrap();
        }
        c.store.close(now).unwrap();
        witness.record(&c.store).unwrap();
        assert!(!c.store.superblock().recent.contains(&w));
        drop(c);
        let later_claim = claim();
        assert!(
            later_claim.lineage.contains(&crate::witness::to_remote(&w)),
            "the authority judges the claim current"
        );
        let (c, witnessed) = open(&[authority(w, later_claim.clone())]).unwrap();
        assert_eq!(witnessed.authority_rollback, None, "no false alarm");
        drop(c);
        // A W this vault never descended from, the claim not this disk's.
        let mut forged = w;
        forged.chain[0] ^= 1;
        let mut edited = later_claim;
        edited.checkpoint += 1;
        let err = open(&[authority(forged, edited)]).err().expect("refused");
        assert!(matches!(err, VaultError::Witness(_)), "{err}");
    }

    /// `open_format_2` is for format 2 only, and a changed superblock of
    /// `atrest.meta` is a metadata error naming it, never a store.
    #[test]
    fn open_format_2_refuses_format_1_and_changed_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("v1");
        let (vault, _) = Vault::create(&v1, fast(), &pw("p"), "").unwrap();
        assert!(matches!(vault.open_format_2(), Err(VaultError::Invalid(_))));
        let root = dir.path().join("v2");
        let (vault, _) = Vault::create(&root, fast_format_2(), &pw("p"), "").unwrap();
        let meta = root.join("atrest.meta");
        let mut bytes = fs::read(&meta).unwrap();
        for b in &mut bytes[..2 * 4096] {
            *b ^= 0x40;
        }
        fs::write(&meta, bytes).unwrap();
        let err = vault.open_format_2().err().expect("refused");
        assert!(matches!(err, VaultError::Metadata(_)), "{err}");
        assert!(err.to_string().contains("superblock"), "{err}");
    }

    /// A format 2 copy of the config that does not authenticate beside a
    /// valid format 1 copy (the format-1 build's `version-2-primary-only`
    /// vector, now that this build reads version 2): refused, and
    /// neither copy rewritten.
    #[test]
    fn an_unauthentic_format_2_copy_is_never_repaired_back_to_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let (vault, _) = Vault::create(&root, fast(), &pw("p"), "").unwrap();
        drop(vault);
        let mut primary = fs::read(root.join(CONFIG_FILE)).unwrap();
        primary[9] = 2;
        let write = |name: &str, bytes: &[u8]| {
            use std::os::unix::fs::PermissionsExt;
            let path = root.join(name);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(&path, bytes).unwrap();
        };
        write(CONFIG_FILE, &primary);
        let backup = fs::read(root.join(BACKUP_FILE)).unwrap();
        let err = LockedVault::open(&root)
            .unwrap()
            .unlock(&pw("p"))
            .unwrap_err();
        assert!(
            matches!(err, VaultError::Corrupt(ref m) if m.contains("older format")),
            "{err}"
        );
        assert_eq!(fs::read(root.join(CONFIG_FILE)).unwrap(), primary);
        assert_eq!(fs::read(root.join(BACKUP_FILE)).unwrap(), backup);
    }

    #[test]
    fn format_2_is_for_fuse_only_and_other_formats_do_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        for (backend, format) in [(Backend::Fscrypt, VERSION_2), (Backend::Fuse, 3)] {
            let options = CreateOptions {
                backend,
                format,
                ..fast()
            };
            let result = Vault::create(&dir.path().join("v"), options, &pw("p"), "");
            assert!(matches!(result, Err(VaultError::Invalid(_))));
            assert!(!dir.path().join("v").exists(), "nothing made");
        }
    }

    #[test]
    fn create_unlock_with_each_slot_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let (mut vault, recovery) =
            Vault::create(&root, fast(), &pw("correct horse"), "admin").unwrap();
        let keyfile = SecretKey::random();
        vault
            .add_slot(
                &Unlocker::KeyFile(keyfile.clone()),
                "boot",
                Argon2Params::INSECURE_FAST,
            )
            .unwrap();
        let master = *vault.master_key().expose();

        for unlocker in [
            pw("correct horse"),
            Unlocker::RecoveryKey(recovery.as_ref().unwrap().secret().clone()),
            Unlocker::KeyFile(keyfile.clone()),
        ] {
            let v = LockedVault::open(&root).unwrap().unlock(&unlocker).unwrap();
            assert_eq!(v.master_key().expose(), &master);
        }
        assert!(matches!(
            LockedVault::open(&root).unwrap().unlock(&pw("wrong")),
            Err(VaultError::WrongKey)
        ));
        assert!(matches!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&Unlocker::KeyFile(SecretKey::random())),
            Err(VaultError::WrongKey)
        ));
    }

    #[test]
    fn refuses_non_empty_dir_and_non_vault() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x"), b"x").unwrap();
        assert!(matches!(
            Vault::create(dir.path(), fast(), &pw("p"), ""),
            Err(VaultError::NotEmpty(_))
        ));
        assert!(matches!(
            LockedVault::open(dir.path()),
            Err(VaultError::NotAVault(_))
        ));
    }

    #[test]
    fn one_damaged_copy_is_survived_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        Vault::create(&root, fast(), &pw("p"), "").unwrap();
        let primary = root.join(CONFIG_FILE);
        let good = fs::read(&primary).unwrap();
        let mut bad = good.clone();
        bad[20] ^= 0xff;
        fs::set_permissions(
            &primary,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        fs::write(&primary, &bad).unwrap();
        LockedVault::open(&root).unwrap().unlock(&pw("p")).unwrap();
        let repaired = fs::read(&primary).unwrap();
        assert_eq!(repaired, fs::read(root.join(BACKUP_FILE)).unwrap());
        let repaired = VaultConfig::decode(&repaired).unwrap();
        assert_eq!(
            repaired.generation,
            VaultConfig::decode(&good).unwrap().generation + 1
        );
        assert!(
            LockedVault::open(&root)
                .unwrap()
                .config_problems()
                .is_empty()
        );
    }

    #[test]
    fn interrupted_passphrase_change_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let (mut vault, _) = Vault::create(&root, fast(), &pw("old"), "").unwrap();
        let before = fs::read(root.join(CONFIG_FILE)).unwrap();
        vault
            .replace_slot(0, &pw("new"), Argon2Params::INSECURE_FAST)
            .unwrap();
        // A crash after the primary was written: the backup is the old config.
        fs::set_permissions(
            root.join(BACKUP_FILE),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        fs::write(root.join(BACKUP_FILE), &before).unwrap();
        // The old passphrase still opens the stale backup's slot, but the
        // newer primary (same master key) is what the vault is opened from.
        let v = LockedVault::open(&root)
            .unwrap()
            .unlock(&pw("old"))
            .unwrap();
        assert!(v.slot_for(&pw("new")).is_some());
        assert!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&pw("old"))
                .is_err()
        );
        LockedVault::open(&root)
            .unwrap()
            .unlock(&pw("new"))
            .unwrap();
    }

    #[test]
    fn spliced_slot_is_detected() {
        // A slot from another vault, with the right passphrase, cannot be
        // spliced in: its AAD names the other vault id.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        Vault::create(&a, fast(), &pw("p"), "").unwrap();
        Vault::create(&b, fast(), &pw("attacker"), "").unwrap();
        let mut cfg_a = VaultConfig::decode(&fs::read(a.join(CONFIG_FILE)).unwrap()).unwrap();
        let cfg_b = VaultConfig::decode(&fs::read(b.join(CONFIG_FILE)).unwrap()).unwrap();
        let mut foreign = cfg_b.keyslots[0].clone();
        foreign.id = 9;
        cfg_a.keyslots.push(foreign);
        let bytes = cfg_a.encode(&HeaderMac::new(&SecretKey::random()));
        for f in [CONFIG_FILE, BACKUP_FILE] {
            fs::set_permissions(
                a.join(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            fs::write(a.join(f), &bytes).unwrap();
        }
        assert!(
            LockedVault::open(&a)
                .unwrap()
                .unlock(&pw("attacker"))
                .is_err()
        );
        // The owner's own passphrase unwraps, but the MAC shows the splice.
        assert!(matches!(
            LockedVault::open(&a).unwrap().unlock(&pw("p")),
            Err(VaultError::Tampered)
        ));
    }

    fn authority(n: u8) -> crate::AuthorityRef {
        crate::AuthorityRef {
            url: format!("https://127.0.0.1:{}", 7000 + u16::from(n)),
            ca_fingerprint: [n; 32],
            host_id: atrest_remote::HostId::new("web-1").unwrap(),
            audit_public_key: [n; 32],
        }
    }

    fn member(n: u8) -> (RemoteMember, atrest_remote::HostSecret) {
        let secret = atrest_remote::HostSecret::generate();
        let (binding, key) = atrest_remote::enroll(&secret.public_key());
        let member = RemoteMember {
            authority: authority(n),
            binding,
            key,
        };
        (member, secret)
    }

    #[test]
    fn remote_slot_opens_with_its_exchange_key_and_rebinds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let (mut vault, _) = Vault::create(&root, fast(), &pw("p"), "").unwrap();
        let (m, _) = member(1);
        let id = vault.add_remote_slot(&m, &[], "keys").unwrap();
        assert!(
            vault
                .add_slot(
                    &Unlocker::Remote(SecretKey::random()),
                    "",
                    Argon2Params::INSECURE_FAST
                )
                .is_err()
        );
        let locked = LockedVault::open(&root).unwrap();
        let slot = locked
            .config()
            .keyslots
            .iter()
            .find(|s| s.id == id)
            .unwrap();
        let SlotKind::Remote(remote) = &slot.kind else {
            panic!("not remote")
        };
        assert_eq!(remote.authority, m.authority);
        assert_eq!(remote.binding, m.binding);
        let opened = locked.unlock(&Unlocker::Remote(m.key.clone())).unwrap();
        assert_eq!(opened.master_key().expose(), vault.master_key().expose());
        assert!(matches!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&Unlocker::Remote(SecretKey::random())),
            Err(VaultError::WrongKey)
        ));
        // The same key does not open it as a key file (another kind byte).
        assert!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&Unlocker::KeyFile(m.key.clone()))
                .is_err()
        );

        let (new, _) = member(1);
        vault.rebind_remote_slot(id, new.binding, &new.key).unwrap();
        assert!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&Unlocker::Remote(m.key.clone()))
                .is_err()
        );
        LockedVault::open(&root)
            .unwrap()
            .unlock(&Unlocker::Remote(new.key.clone()))
            .unwrap();
        assert!(vault.rebind_remote_slot(0, new.binding, &new.key).is_err());
    }

    #[test]
    fn threshold_slot_opens_with_any_k_shares_and_rebinds_a_member() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let (mut vault, _) = Vault::create(&root, fast(), &pw("p"), "").unwrap();
        let members: Vec<RemoteMember> = (1..=3).map(|n| member(n).0).collect();
        let id = vault.add_threshold_slot(2, &members, "quorum").unwrap();
        assert!(vault.add_threshold_slot(4, &members, "").is_err());
        let open = |keys: &[(u8, &SecretKey)]| -> Result<(Vault, Vec<atrest_remote::Share>, SecretKey), VaultError> {
            let locked = LockedVault::open(&root)?;
            let config = locked.config().clone();
            let slot = config.keyslots.iter().find(|s| s.id == id).unwrap();
            let SlotKind::Threshold(t) = &slot.kind else { panic!("not threshold") };
            let shares: Vec<_> = keys
                .iter()
                .filter_map(|(i, k)| t.open_share(&config.vault_id, id, *i, k))
                .collect();
            let combined = atrest_remote::combine(&shares).map_err(|e| VaultError::Invalid(e.to_string()))?;
            let vault = locked.unlock(&Unlocker::Threshold(combined.clone()))?;
            Ok((vault, shares, combined))
        };
        for pair in [[1u8, 2], [1, 3], [2, 3]] {
            let keys: Vec<_> = pair
                .iter()
                .map(|i| (*i, &members[usize::from(*i) - 1].key))
                .collect();
            let (v, _, _) = open(&keys).unwrap();
            assert_eq!(v.master_key().expose(), vault.master_key().expose());
        }
        assert!(open(&[(1, &members[0].key)]).is_err());
        // Member 2's key given as member 1's: its share does not open.
        assert!(open(&[(1, &members[1].key), (3, &members[2].key)]).is_err());

        // Member 2's authority rotated: re-bind it, keep the others.
        let (_, shares, combined) = open(&[(2, &members[1].key), (3, &members[2].key)]).unwrap();
        let (new, _) = member(2);
        assert!(
            vault
                .rebind_threshold_member(
                    id,
                    2,
                    new.binding,
                    &new.key,
                    &shares[0],
                    &SecretKey::random()
                )
                .is_err()
        );
        assert!(
            vault
                .rebind_threshold_member(id, 3, new.binding, &new.key, &shares[0], &combined)
                .is_err()
        );
        vault
            .rebind_threshold_member(id, 2, new.binding, &new.key, &shares[0], &combined)
            .unwrap();
        assert!(open(&[(2, &members[1].key), (3, &members[2].key)]).is_err());
        open(&[(2, &new.key), (3, &members[2].key)]).unwrap();
        open(&[(1, &members[0].key), (2, &new.key)]).unwrap();
        open(&[(1, &members[0].key), (3, &members[2].key)]).unwrap();
    }

    #[test]
    fn slots_add_remove_replace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        let opts = CreateOptions {
            recovery_key: false,
            ..fast()
        };
        let (mut vault, none) = Vault::create(&root, opts, &pw("one"), "").unwrap();
        assert!(none.is_none());
        assert!(matches!(vault.remove_slot(0), Err(VaultError::LastSlot)));
        let id = vault
            .add_slot(&pw("two"), "", Argon2Params::INSECURE_FAST)
            .unwrap();
        vault
            .replace_slot(0, &pw("three"), Argon2Params::INSECURE_FAST)
            .unwrap();
        assert!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&pw("one"))
                .is_err()
        );
        LockedVault::open(&root)
            .unwrap()
            .unlock(&pw("three"))
            .unwrap();
        vault.remove_slot(id).unwrap();
        assert!(
            LockedVault::open(&root)
                .unwrap()
                .unlock(&pw("two"))
                .is_err()
        );
        assert!(matches!(
            vault.remove_slot(42),
            Err(VaultError::NoSuchSlot(42))
        ));
    }
}
