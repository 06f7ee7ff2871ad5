//! Creating and opening a repository (docs/format.md §18.1, §18.6):
//! [`LockedRepository`] is what can be read without a key (format version,
//! id, keyslots); a secret that opens one of its keyslots, or the master
//! key itself, turns it into a [`Repository`]. Adding and removing
//! keyslots, and `shred`, which destroys all of them.
//!
//! ```
//! use atrest_backup::{ChunkSizes, LocalBackend, LockedRepository, Repository};
//! use atrest_core::{Argon2Params, SecretKey};
//! use atrest_vault::Unlocker;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let key_file = Unlocker::KeyFile(SecretKey::random());
//! let (repo, ids) = Repository::create(
//!     LocalBackend::new(dir.path()),
//!     ChunkSizes::DEFAULT,
//!     &[(&key_file, "ops")],
//!     Argon2Params::INSECURE_FAST,
//! )
//! .unwrap();
//! assert_eq!(ids, [0]);
//! drop(repo);
//! let locked = LockedRepository::read(LocalBackend::new(dir.path())).unwrap();
//! let repo = locked.unlock(&key_file).unwrap();
//! assert_eq!(repo.opened_slot(), Some(0));
//! ```

use atrest_core::{Argon2Params, SecretKey};
use atrest_vault::{
    Keyslot, RemoteMember, RemoteSlot, SlotKind, SlotOwner, ThresholdSlot, Unlocker,
};

use crate::backend::{Backend, hex};
use crate::chunker::ChunkSizes;
use crate::error::{BackupError, Result};
use crate::keys::{REPO_ID_LEN, RepoKeys};
use crate::keyslots::{self, KEYS_DIR, MAX_KEYSLOTS, StoredSlot};
use crate::repo::{Config, REPO_MAGIC, REPO_VERSION, REPO_VERSION_1, Repository};

/// Bytes before the sealed part of `config`: magic, version, repository
/// id and, in format 1, the vault id it is bound to.
fn header_len(version: u8) -> usize {
    4 + 1 + REPO_ID_LEN + if version == REPO_VERSION_1 { 16 } else { 0 }
}

/// A repository read from storage, not yet opened.
pub struct LockedRepository<B: Backend> {
    backend: B,
    version: u8,
    repo_id: [u8; REPO_ID_LEN],
    binding: Option<[u8; 16]>,
    config: Vec<u8>,
    slots: Vec<StoredSlot>,
}

impl<B: Backend> LockedRepository<B> {
    /// Reads `config` and every keyslot; checks the structure only.
    pub fn read(backend: B) -> Result<Self> {
        if !backend.exists("config")? {
            return Err(BackupError::NotARepository(backend.location()));
        }
        let config = backend.get("config")?;
        if config.len() < 5 || &config[..4] != REPO_MAGIC {
            return Err(BackupError::NotARepository(backend.location()));
        }
        let version = config[4];
        if version != REPO_VERSION && version != REPO_VERSION_1 {
            return Err(BackupError::UnsupportedVersion(version));
        }
        if config.len() < header_len(version) {
            return Err(BackupError::NotARepository(backend.location()));
        }
        let repo_id: [u8; REPO_ID_LEN] = config[5..5 + REPO_ID_LEN].try_into().expect("16");
        let binding = (version == REPO_VERSION_1)
            .then(|| <[u8; 16]>::try_from(&config[5 + REPO_ID_LEN..header_len(version)]))
            .and_then(|id| id.ok())
            .filter(|id| *id != [0; 16]);
        let slots = if version == REPO_VERSION_1 {
            Vec::new()
        } else {
            keyslots::read_all(&backend, &repo_id)?
        };
        Ok(Self {
            backend,
            version,
            repo_id,
            binding,
            config,
            slots,
        })
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    pub fn repo_id(&self) -> [u8; REPO_ID_LEN] {
        self.repo_id
    }

    /// Format 1: the vault whose backup key opens it (not yet authenticated).
    pub fn binding(&self) -> Option<[u8; 16]> {
        self.binding
    }

    /// Every `keys/` object, not yet authenticated (format 2).
    pub fn keyslots(&self) -> &[StoredSlot] {
        &self.slots
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Opens the repository with its master key itself.
    pub fn open(self, master: &SecretKey) -> Result<Repository<B>> {
        let header = header_len(self.version);
        let keys = RepoKeys::new(master, self.repo_id);
        let plain = keys
            .open_file("config", "config", &self.config[header..])
            .map_err(|_| BackupError::WrongKey)?;
        if plain.len() < header || plain[..header] != self.config[..header] {
            return Err(BackupError::damaged(
                "config",
                "header does not match its sealed copy",
            ));
        }
        let config: Config = serde_json::from_slice(&plain[header..])
            .map_err(|e| BackupError::damaged("config", e.to_string()))?;
        let sizes = ChunkSizes {
            min: config.chunk_min,
            avg: config.chunk_avg,
            max: config.chunk_max,
        };
        if !sizes.valid() {
            return Err(BackupError::damaged("config", "chunk sizes out of range"));
        }
        let mut repo = Repository::assemble(
            self.backend,
            master,
            self.version,
            self.repo_id,
            sizes,
            self.binding,
        )?;
        let mac = keyslots::mac_key(master, &self.repo_id);
        for stored in self.slots {
            match stored.slot {
                Ok(slot) if stored.verify(&mac) => repo.keyslots.push(slot),
                Ok(_) => repo
                    .keyslot_problems
                    .push(format!("keyslot {}: its MAC does not verify", stored.name)),
                Err(why) => repo
                    .keyslot_problems
                    .push(format!("keyslot {}: {why}", stored.name)),
            }
        }
        Ok(repo)
    }

    /// Opens the repository with a secret: one of its keyslots' (format
    /// 2), or, for format 1, the backup key of the vault it is bound to.
    pub fn unlock(self, secret: &Unlocker) -> Result<Repository<B>> {
        if self.version == REPO_VERSION_1 {
            return match secret {
                Unlocker::Vault { vault_id, key } if Some(*vault_id) == self.binding => {
                    self.open(key)
                }
                Unlocker::Vault { vault_id, .. } => Err(BackupError::Format1(format!(
                    "this repository (format 1) is bound to vault {}, not to vault {}; give the vault it was created with",
                    self.binding.map(|b| hex(&b)).unwrap_or_default(),
                    hex(vault_id)
                ))),
                _ => Err(BackupError::Format1(
                    "this repository (format 1) has no keyslots of its own: only the vault it is bound to opens it (--vault)".into(),
                )),
            };
        }
        if self.slots.is_empty() {
            return Err(BackupError::NoKeyslots(self.backend.location()));
        }
        let owner = SlotOwner::BackupRepository(self.repo_id);
        let opened = self.slots.iter().find_map(|stored| {
            let slot = stored.slot.as_ref().ok()?;
            Some((stored, slot.id, slot.unwrap_for(owner, secret)?))
        });
        let Some((stored, id, master)) = opened else {
            return Err(BackupError::NoMatchingSlot {
                offered: offered(secret).into(),
                slots: self.describe_slots(),
            });
        };
        if !stored.verify(&keyslots::mac_key(&master, &self.repo_id)) {
            return Err(BackupError::damaged(
                &stored.name,
                "the key it holds opened, but its MAC does not verify",
            ));
        }
        let mut repo = self.open(&master)?;
        repo.opened_slot = Some(id);
        Ok(repo)
    }

    /// `0 passphrase, 1 recovery-key, 2 vault 0123…` (unauthenticated).
    fn describe_slots(&self) -> String {
        self.slots
            .iter()
            .map(|s| match &s.slot {
                Ok(slot) => describe(slot),
                Err(_) => format!("{} (unreadable)", s.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Refuses a format 1 repository, which has no keyslots to list, add,
    /// remove or destroy.
    pub fn require_keyslots(&self) -> Result<()> {
        require_keyslots(self.version, self.binding)
    }

    /// Destroys every keyslot object (overwritten where the store allows,
    /// then deleted) and checks that none is left: afterwards no secret
    /// opens the repository, and its snapshots are unreadable although
    /// every pack, index and snapshot object is still there. Returns the
    /// objects destroyed.
    pub fn shred(&self) -> Result<Vec<String>> {
        self.require_keyslots()?;
        let names = self.backend.list(KEYS_DIR)?;
        for name in &names {
            self.backend.destroy(name)?;
        }
        let left = self.backend.list(KEYS_DIR)?;
        if !left.is_empty() {
            return Err(BackupError::Keyslot(format!(
                "{} still listed after being deleted: {}",
                left.len(),
                left.join(", ")
            )));
        }
        Ok(names)
    }
}

fn require_keyslots(version: u8, binding: Option<[u8; 16]>) -> Result<()> {
    if version == REPO_VERSION_1 {
        return Err(BackupError::Format1(format!(
            "this repository (format 1) has no keyslots of its own: its key is the backup key of vault {}. Destroy that vault's keys (`atrest keyd host shred`, or its keyslots) to make it unreadable; make a new repository (`atrest backup init`) to have keyslots",
            binding.map(|b| hex(&b)).unwrap_or_default()
        )));
    }
    Ok(())
}

/// What kind of secret was offered, for messages.
fn offered(secret: &Unlocker) -> &'static str {
    match secret {
        Unlocker::Passphrase(_) => "passphrase",
        Unlocker::RecoveryKey(_) => "recovery key",
        Unlocker::KeyFile(_) => "key file",
        Unlocker::Vault { .. } => "vault's key",
        Unlocker::Remote(_) | Unlocker::Threshold(_) => "key authority's answer",
    }
}

/// `2 vault 0123456789abcdef…` or `0 passphrase`.
pub fn describe(slot: &Keyslot) -> String {
    match &slot.kind {
        SlotKind::Vault { vault_id } => format!("{} vault {}", slot.id, hex(vault_id)),
        kind => format!("{} {}", slot.id, kind.name()),
    }
}

impl<B: Backend> Repository<B> {
    /// Creates a repository with a new random master key, wrapped in one
    /// keyslot per secret (ids 0, 1, ... in order), each with its label.
    /// Passphrase slots use `argon2`. Returns the slot ids.
    pub fn create(
        backend: B,
        sizes: ChunkSizes,
        secrets: &[(&Unlocker, &str)],
        argon2: Argon2Params,
    ) -> Result<(Self, Vec<u8>)> {
        if secrets.is_empty() {
            return Err(BackupError::Keyslot(
                "a repository needs at least one keyslot".into(),
            ));
        }
        Self::write_new(backend, &SecretKey::random(), sizes, secrets, argon2)
    }

    /// Creates a repository keyed by `master`, with no keyslot: only
    /// [`LockedRepository::open`] with the same key opens it (a caller
    /// that keeps the key elsewhere; tests).
    pub fn init(backend: B, master: &SecretKey, sizes: ChunkSizes) -> Result<Self> {
        Self::write_new(backend, master, sizes, &[], Argon2Params::INSECURE_FAST).map(|(r, _)| r)
    }

    /// Keyslots first, `config` last: a repository exists once its config
    /// does, and then every slot it was created with is there.
    fn write_new(
        backend: B,
        master: &SecretKey,
        sizes: ChunkSizes,
        secrets: &[(&Unlocker, &str)],
        argon2: Argon2Params,
    ) -> Result<(Self, Vec<u8>)> {
        if backend.exists("config")? || !backend.list(KEYS_DIR)?.is_empty() {
            return Err(BackupError::AlreadyExists(backend.location()));
        }
        assert!(sizes.valid(), "chunk sizes");
        let repo_id = atrest_core::random_array::<REPO_ID_LEN>();
        let mac = keyslots::mac_key(master, &repo_id);
        let mut slots = Vec::with_capacity(secrets.len());
        for (id, (secret, label)) in (0u8..).zip(secrets) {
            let kind = new_slot_kind(secret, argon2)?;
            let slot = new_slot(repo_id, id, kind, secret, label, master)?;
            keyslots::write(&backend, &repo_id, &slot, &mac)?;
            slots.push(slot);
        }
        let keys = RepoKeys::new(master, repo_id);
        let config = Config {
            chunk_min: sizes.min,
            chunk_avg: sizes.avg,
            chunk_max: sizes.max,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(REPO_MAGIC);
        bytes.push(REPO_VERSION);
        bytes.extend_from_slice(&repo_id);
        let sealed = keys.seal_file(
            "config",
            &[&bytes[..], &serde_json::to_vec(&config).expect("json")].concat(),
        );
        bytes.extend_from_slice(&sealed);
        backend.put("config", &bytes)?;
        let ids = slots.iter().map(|s| s.id).collect();
        let mut repo = Self::assemble(backend, master, REPO_VERSION, repo_id, sizes, None)?;
        repo.keyslots = slots;
        Ok((repo, ids))
    }

    /// Opens the repository with its master key itself
    /// ([`LockedRepository::open`]).
    pub fn open(backend: B, master: &SecretKey) -> Result<Self> {
        LockedRepository::read(backend)?.open(master)
    }

    /// Every keyslot whose MAC verified (format 2; none in format 1).
    pub fn keyslots(&self) -> &[Keyslot] {
        &self.keyslots
    }

    /// `keys/` objects that did not parse or verify, with why.
    pub fn keyslot_problems(&self) -> &[String] {
        &self.keyslot_problems
    }

    /// The keyslot whose secret opened the repository.
    pub fn opened_slot(&self) -> Option<u8> {
        self.opened_slot
    }

    /// Vaults whose keys open this repository: its format 1 binding, or
    /// its vault keyslots.
    pub fn bound_vaults(&self) -> Vec<[u8; 16]> {
        self.binding()
            .into_iter()
            .chain(self.keyslots.iter().filter_map(|s| match s.kind {
                SlotKind::Vault { vault_id } => Some(vault_id),
                _ => None,
            }))
            .collect()
    }

    fn require_keyslots(&self) -> Result<()> {
        require_keyslots(self.version, self.binding())
    }

    /// Adds a keyslot for `secret` under the lowest free id.
    pub fn add_slot(&mut self, secret: &Unlocker, label: &str, argon2: Argon2Params) -> Result<u8> {
        let kind = new_slot_kind(secret, argon2)?;
        let id = self.free_slot_id()?;
        self.push_slot(id, kind, label, secret)
    }

    /// Adds a remote slot (kind 4) that `member`'s key authority opens
    /// (then its `replicas`), as a vault's
    /// ([`atrest_vault::Vault::add_remote_slot`]): the repository's own
    /// binding at the authority, so `atrest keyd host shred` there makes
    /// this slot useless. Returns the slot id.
    pub fn add_remote_slot(
        &mut self,
        member: &RemoteMember,
        replicas: &[String],
        label: &str,
    ) -> Result<u8> {
        let slot = RemoteSlot::for_member(member, replicas).map_err(BackupError::Keyslot)?;
        let id = self.free_slot_id()?;
        let unlocker = Unlocker::Remote(member.key.clone());
        self.push_slot(id, SlotKind::Remote(Box::new(slot)), label, &unlocker)
    }

    /// Adds a threshold slot (kind 5) that any `threshold` of `members`
    /// open, its shares bound to this repository's id. Returns the slot id.
    pub fn add_threshold_slot(
        &mut self,
        threshold: u8,
        members: &[RemoteMember],
        label: &str,
    ) -> Result<u8> {
        let id = self.free_slot_id()?;
        let (slot, secret) = ThresholdSlot::create(&self.repo_id(), id, threshold, members)
            .map_err(BackupError::Keyslot)?;
        self.push_slot(
            id,
            SlotKind::Threshold(slot),
            label,
            &Unlocker::Threshold(secret),
        )
    }

    /// The lowest id no `keys/` object has (ids of unreadable objects are
    /// taken too: never write over them).
    fn free_slot_id(&self) -> Result<u8> {
        self.require_keyslots()?;
        let taken: Vec<String> = self.backend().list(KEYS_DIR)?;
        (0..MAX_KEYSLOTS as u8)
            .find(|id| !taken.contains(&keyslots::object_name(*id)))
            .ok_or_else(|| {
                BackupError::Keyslot(format!(
                    "the repository has {MAX_KEYSLOTS} keyslots already; remove one first"
                ))
            })
    }

    /// Wraps the master key in a new slot `id` and writes its object.
    fn push_slot(&mut self, id: u8, kind: SlotKind, label: &str, secret: &Unlocker) -> Result<u8> {
        let repo_id = self.repo_id();
        let slot = new_slot(repo_id, id, kind, secret, label, &self.master)?;
        let mac = keyslots::mac_key(&self.master, &repo_id);
        keyslots::write(self.backend(), &repo_id, &slot, &mac)?;
        self.keyslots.push(slot);
        Ok(id)
    }

    /// Destroys keyslot `id`; refuses the last one (that is `shred`).
    pub fn remove_slot(&mut self, id: u8) -> Result<()> {
        self.require_keyslots()?;
        let Some(index) = self.keyslots.iter().position(|s| s.id == id) else {
            return Err(BackupError::Keyslot(format!(
                "the repository has no keyslot {id} (list them with `atrest backup keyslot list`)"
            )));
        };
        if self.keyslots.len() == 1 {
            return Err(BackupError::Keyslot(format!(
                "keyslot {id} is the last one: removing it would make every snapshot unreadable; add another first, or use `atrest backup shred` to destroy the repository"
            )));
        }
        self.backend().destroy(&keyslots::object_name(id))?;
        self.keyslots.remove(index);
        Ok(())
    }
}

fn new_slot_kind(secret: &Unlocker, argon2: Argon2Params) -> Result<SlotKind> {
    secret
        .new_slot_kind(argon2)
        .map_err(|e| BackupError::Keyslot(e.to_string()))
}

fn new_slot(
    repo_id: [u8; REPO_ID_LEN],
    id: u8,
    kind: SlotKind,
    secret: &Unlocker,
    label: &str,
    master: &SecretKey,
) -> Result<Keyslot> {
    Keyslot::wrap_for(
        SlotOwner::BackupRepository(repo_id),
        id,
        kind,
        label.to_string(),
        secret,
        master,
    )
    .map_err(|e| BackupError::Keyslot(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use atrest_core::SecretBytes;

    use super::*;
    use crate::backend::LocalBackend;

    const SIZES: ChunkSizes = ChunkSizes {
        min: 1024,
        avg: 4096,
        max: 16384,
    };
    const FAST: Argon2Params = Argon2Params::INSECURE_FAST;

    fn locked(root: &Path) -> LockedRepository<LocalBackend> {
        LockedRepository::read(LocalBackend::new(root)).unwrap()
    }

    fn passphrase(text: &str) -> Unlocker {
        Unlocker::Passphrase(SecretBytes::new(text.as_bytes().to_vec()))
    }

    fn vault(vault_id: [u8; 16], key: &SecretKey) -> Unlocker {
        Unlocker::Vault {
            vault_id,
            key: key.clone(),
        }
    }

    fn refused(result: Result<Repository<LocalBackend>>) -> BackupError {
        match result {
            Ok(_) => panic!("opened"),
            Err(e) => e,
        }
    }

    fn members(n: u8) -> Vec<RemoteMember> {
        (1..=n)
            .map(|i| {
                let host = atrest_remote::HostSecret::generate();
                let (binding, key) = atrest_remote::enroll(&host.public_key());
                RemoteMember {
                    authority: atrest_vault::AuthorityRef {
                        url: format!("https://keys{i}.example:7443"),
                        ca_fingerprint: [i; 32],
                        host_id: atrest_remote::HostId::new(format!("backup-{i}")).unwrap(),
                        audit_public_key: [i ^ 0xff; 32],
                    },
                    binding,
                    key,
                }
            })
            .collect()
    }

    #[test]
    fn remote_and_threshold_slots_open_with_their_authorities_answers_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = Unlocker::KeyFile(SecretKey::random());
        let (mut repo, _) = Repository::create(
            LocalBackend::new(dir.path()),
            SIZES,
            &[(&file, "first")],
            FAST,
        )
        .unwrap();
        let one = members(1);
        let remote = repo
            .add_remote_slot(
                &one[0],
                &["https://keys1b.example:7443".into()],
                "authority",
            )
            .unwrap();
        let three = members(3);
        let threshold = repo.add_threshold_slot(2, &three, "2 of 3").unwrap();
        let repo_id = repo.repo_id();
        drop(repo);

        // The remote slot opens with the exchange key its authority's
        // answer unblinds to, and reads back its parameters.
        let opened = locked(dir.path())
            .unlock(&Unlocker::Remote(one[0].key.clone()))
            .unwrap();
        assert_eq!(opened.opened_slot(), Some(remote));
        assert!(matches!(
            &opened.keyslots().iter().find(|s| s.id == remote).unwrap().kind,
            SlotKind::Remote(slot) if slot.replicas == ["https://keys1b.example:7443"]
        ));
        // The threshold slot: any two shares, opened under this
        // repository's id and the slot's id, combine to its secret.
        let SlotKind::Threshold(slot) = &opened
            .keyslots()
            .iter()
            .find(|s| s.id == threshold)
            .unwrap()
            .kind
        else {
            panic!("slot {threshold} is not a threshold slot");
        };
        let share = |i: u8| {
            slot.open_share(&repo_id, threshold, i, &three[usize::from(i) - 1].key)
                .unwrap()
        };
        let secret = atrest_remote::combine(&[share(1), share(3)]).unwrap();
        assert_eq!(
            locked(dir.path())
                .unlock(&Unlocker::Threshold(secret))
                .unwrap()
                .opened_slot(),
            Some(threshold)
        );
        // A share is bound to the repository: under another id it does
        // not open.
        assert!(
            slot.open_share(&[0; 16], threshold, 1, &three[0].key)
                .is_none()
        );
        // Another host's answer, or one share alone, opens nothing.
        let other = members(1);
        assert!(matches!(
            refused(locked(dir.path()).unlock(&Unlocker::Remote(other[0].key.clone()))),
            BackupError::NoMatchingSlot { .. }
        ));
        let lone = atrest_remote::combine(&[share(2)]);
        if let Ok(lone) = lone {
            assert!(
                locked(dir.path())
                    .unlock(&Unlocker::Threshold(lone))
                    .is_err()
            );
        }
    }

    #[test]
    fn every_kind_opens_its_own_slot_and_no_other_secret_does() {
        let dir = tempfile::tempdir().unwrap();
        let (file, recovery, vault_key) = (
            SecretKey::random(),
            SecretKey::random(),
            SecretKey::random(),
        );
        let secrets = [
            passphrase("correct horse"),
            Unlocker::KeyFile(file.clone()),
            Unlocker::RecoveryKey(recovery.clone()),
            vault([5; 16], &vault_key),
        ];
        let labelled: Vec<(&Unlocker, &str)> = secrets.iter().map(|s| (s, "x")).collect();
        let (repo, ids) =
            Repository::create(LocalBackend::new(dir.path()), SIZES, &labelled, FAST).unwrap();
        assert_eq!(ids, [0, 1, 2, 3]);
        let master = repo.master.clone();
        drop(repo);
        for (id, secret) in (0u8..).zip(&secrets) {
            let repo = locked(dir.path()).unlock(secret).unwrap();
            assert_eq!(repo.opened_slot(), Some(id));
            assert_eq!(repo.master.expose(), master.expose());
            assert_eq!(repo.keyslots().len(), 4);
            assert!(repo.keyslot_problems().is_empty());
        }
        assert_eq!(
            locked(dir.path())
                .unlock(&secrets[3])
                .unwrap()
                .bound_vaults(),
            [[5; 16]]
        );
        // The same bytes offered as another kind, a wrong passphrase,
        // another vault: refused, naming the slots there are.
        for wrong in [
            passphrase("wrong horse"),
            Unlocker::KeyFile(recovery.clone()),
            Unlocker::RecoveryKey(file.clone()),
            Unlocker::KeyFile(vault_key.clone()),
            vault([6; 16], &vault_key),
            vault([5; 16], &file),
        ] {
            let e = refused(locked(dir.path()).unlock(&wrong));
            assert!(matches!(e, BackupError::NoMatchingSlot { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains("0 passphrase, 1 key-file, 2 recovery-key, 3 vault 0505"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_tampered_slot_never_opens() {
        let dir = tempfile::tempdir().unwrap();
        let file = Unlocker::KeyFile(SecretKey::random());
        drop(
            Repository::create(
                LocalBackend::new(dir.path()),
                SIZES,
                &[(&file, "ops")],
                FAST,
            )
            .unwrap(),
        );
        let path = dir.path().join("keys/00");
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(locked(dir.path()).unlock(&file).is_err(), "byte {i}");
        }
        for n in 0..good.len() {
            std::fs::write(&path, &good[..n]).unwrap();
            assert!(locked(dir.path()).unlock(&file).is_err(), "cut to {n}");
        }
        // A changed label: the key unwraps, the MAC catches it.
        let mut relabelled = good.clone();
        let label_at = 4 + 1 + 16 + 5;
        relabelled[label_at] = b'x';
        std::fs::write(&path, &relabelled).unwrap();
        assert!(matches!(
            refused(locked(dir.path()).unlock(&file)),
            BackupError::Damaged { .. }
        ));
        std::fs::write(&path, &good).unwrap();
        assert!(locked(dir.path()).unlock(&file).is_ok());
    }

    #[test]
    fn a_slot_moved_to_another_repository_or_id_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let file = Unlocker::KeyFile(SecretKey::random());
        let other = Unlocker::KeyFile(SecretKey::random());
        drop(Repository::create(LocalBackend::new(&a), SIZES, &[(&file, "")], FAST).unwrap());
        let (repo_b, _) =
            Repository::create(LocalBackend::new(&b), SIZES, &[(&other, "")], FAST).unwrap();
        let rid_b = repo_b.repo_id();
        drop(repo_b);
        let moved = std::fs::read(a.join("keys/00")).unwrap();
        std::fs::write(b.join("keys/01"), &moved).unwrap();
        let mut rebadged = moved.clone();
        rebadged[5..21].copy_from_slice(&rid_b);
        rebadged[21] = 1;
        std::fs::write(b.join("keys/01"), &rebadged).unwrap();
        // Its repository id and slot id are in the AAD and the KEK.
        assert!(matches!(
            refused(locked(&b).unlock(&file)),
            BackupError::NoMatchingSlot { .. }
        ));
        // Renamed within its own repository, it is refused as well.
        std::fs::rename(a.join("keys/00"), a.join("keys/07")).unwrap();
        assert!(locked(&a).unlock(&file).is_err());
        // And B's own slot still opens B, reporting the foreign object.
        let repo = locked(&b).unlock(&other).unwrap();
        assert_eq!(repo.keyslots().len(), 1);
        assert_eq!(repo.keyslot_problems().len(), 1);
    }

    #[test]
    fn slots_are_added_and_removed_but_never_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let pass = passphrase("first");
        let file = Unlocker::KeyFile(SecretKey::random());
        let (mut repo, _) =
            Repository::create(LocalBackend::new(dir.path()), SIZES, &[(&pass, "")], FAST).unwrap();
        assert_eq!(repo.add_slot(&file, "ops", FAST).unwrap(), 1);
        repo.remove_slot(0).unwrap();
        assert!(!dir.path().join("keys/00").exists());
        assert!(matches!(
            refused(locked(dir.path()).unlock(&pass)),
            BackupError::NoMatchingSlot { .. }
        ));
        let mut repo = locked(dir.path()).unlock(&file).unwrap();
        let e = repo.remove_slot(1).unwrap_err();
        assert!(e.to_string().contains("last one"), "{e}");
        assert!(matches!(repo.remove_slot(4), Err(BackupError::Keyslot(_))));
        // The lowest free id is taken again.
        assert_eq!(repo.add_slot(&pass, "again", FAST).unwrap(), 0);
        assert!(matches!(
            repo.add_slot(&file, &"x".repeat(65), FAST),
            Err(BackupError::Keyslot(_))
        ));
        assert_eq!(
            locked(dir.path()).unlock(&pass).unwrap().opened_slot(),
            Some(0)
        );
    }

    #[test]
    fn shred_leaves_no_slot_and_every_data_object() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a"), b"some data").unwrap();
        let root = dir.path().join("repo");
        let file = Unlocker::KeyFile(SecretKey::random());
        let recovery = Unlocker::RecoveryKey(SecretKey::random());
        let (mut repo, _) = Repository::create(
            LocalBackend::new(&root),
            SIZES,
            &[(&file, ""), (&recovery, "")],
            FAST,
        )
        .unwrap();
        repo.backup(std::slice::from_ref(&src), &crate::SnapshotMeta::default())
            .unwrap();
        let master = repo.master.clone();
        drop(repo);
        let backend = LocalBackend::new(&root);
        let before: Vec<String> = ["data", "index", "snapshots"]
            .iter()
            .flat_map(|d| backend.list(d).unwrap())
            .collect();
        let destroyed = locked(&root).shred().unwrap();
        assert_eq!(destroyed, ["keys/00", "keys/01"]);
        assert!(backend.list(KEYS_DIR).unwrap().is_empty());
        for secret in [&file, &recovery] {
            assert!(matches!(
                refused(locked(&root).unlock(secret)),
                BackupError::NoKeyslots(_)
            ));
        }
        let after: Vec<String> = ["data", "index", "snapshots"]
            .iter()
            .flat_map(|d| backend.list(d).unwrap())
            .collect();
        assert_eq!(before, after, "shred deletes nothing but keyslots");
        assert!(before.len() >= 3 && backend.exists("config").unwrap());
        // What was lost is the key alone: with it, everything is there.
        let repo = Repository::open(LocalBackend::new(&root), &master).unwrap();
        assert_eq!(repo.snapshots().unwrap().len(), 1);
    }
}
