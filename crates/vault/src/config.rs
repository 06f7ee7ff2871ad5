//! The vault config ("header"): format version, vault id, content
//! algorithm, keyslots, authenticated as a whole by an HMAC under a key
//! derived from the vault master key.
//!
//! Two copies live in the vault root (`atrest.conf`, `atrest.conf.bak`), as
//! LUKS keeps a header backup: one damaged sector does not lose the vault.
//! Byte layout: `docs/format.md`.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use atrest_core::{ContentAlgorithm, HeaderMac, MAC_LEN};

use crate::VaultError;
use crate::keyslot::{Keyslot, SlotOwner};
use crate::wire::Reader;

pub const MAGIC: &[u8; 8] = b"ATRESTVC";
/// Config version of format 1 vaults (§4).
pub const VERSION: u16 = 1;
/// Config version of format 2 vaults (§16.3): the same body, FUSE only,
/// flags bit 0 `MIGRATING`. Format 1 builds refuse it (they accept
/// [`VERSION`] alone), which keeps them off a format 2 vault.
pub const VERSION_2: u16 = 2;
/// Flags bit 0 of a version 2 config: `atrest migrate` has not finished.
const FLAG_MIGRATING: u16 = 1;
pub const CONFIG_FILE: &str = "atrest.conf";
pub const BACKUP_FILE: &str = "atrest.conf.bak";
pub const BLOCK_SIZE: u32 = 4096;
pub const MAX_SLOTS: usize = 32;
/// Magic, version and body length before the body.
const HEADER_LEN: usize = 14;
/// Anything larger is not a config this version wrote.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Which backend serves the vault's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Contents and names encrypted by atrest, served through FUSE; the
    /// config lives in the vault directory itself.
    Fuse,
    /// Contents and names encrypted by the kernel (fscrypt v2 policy on the
    /// directory); the config lives beside it, in `.NAME.atrest/`.
    Fscrypt,
}

impl Backend {
    fn id(self) -> u8 {
        match self {
            Self::Fuse => 1,
            Self::Fscrypt => 2,
        }
    }

    fn from_id(id: u8) -> Result<Self, String> {
        match id {
            1 => Ok(Self::Fuse),
            2 => Ok(Self::Fscrypt),
            other => Err(format!("unknown backend {other}")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Fuse => "fuse",
            Self::Fscrypt => "fscrypt",
        }
    }
}

/// The parsed config. Parsing checks structure only; [`VaultConfig::verify`]
/// checks the MAC once a keyslot has given the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    pub vault_id: [u8; 16],
    pub created_unix: u64,
    /// Incremented by every write; when the two copies differ, the newer
    /// one that authenticates wins (a crash between the two writes must not
    /// undo a passphrase change).
    pub generation: u64,
    pub algorithm: ContentAlgorithm,
    pub block_size: u32,
    pub backend: Backend,
    /// The vault format: [`VERSION`] 1 or [`VERSION_2`] (the config's
    /// version field, which says how everything else is stored).
    pub format: u16,
    /// Format 2 only: a migration from format 1 has started and not
    /// finished (§16.3).
    pub migrating: bool,
    pub keyslots: Vec<Keyslot>,
    /// The MAC as read from disk (all zero before the first signing).
    pub(crate) mac: [u8; MAC_LEN],
}

impl VaultConfig {
    pub(crate) fn new(algorithm: ContentAlgorithm, backend: Backend, created_unix: u64) -> Self {
        Self {
            vault_id: atrest_core::random_array(),
            created_unix,
            generation: 0,
            algorithm,
            block_size: BLOCK_SIZE,
            backend,
            format: VERSION,
            migrating: false,
            keyslots: Vec::new(),
            mac: [0; MAC_LEN],
        }
    }

    /// The body the checkpoints of a format 2 vault bind (§16.3, §16.5):
    /// its SHA-256, with the generation it carries.
    pub fn body_hash(&self) -> [u8; 32] {
        atrest_core::sha256(&self.signed_bytes()[HEADER_LEN..])
    }

    /// Everything the MAC covers: magic, version, length and body.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(&self.vault_id);
        body.extend_from_slice(&self.created_unix.to_be_bytes());
        body.extend_from_slice(&self.generation.to_be_bytes());
        body.push(self.algorithm.id());
        body.extend_from_slice(&self.block_size.to_be_bytes());
        body.push(self.backend.id());
        let flags = if self.migrating { FLAG_MIGRATING } else { 0 };
        body.extend_from_slice(&flags.to_be_bytes());
        body.push(self.keyslots.len() as u8);
        for slot in &self.keyslots {
            slot.encode(&mut body);
        }
        let mut out = Vec::with_capacity(body.len() + HEADER_LEN + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.format.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Signs with the config MAC key and returns the bytes to store.
    pub(crate) fn encode(&mut self, mac: &HeaderMac) -> Vec<u8> {
        let mut out = self.signed_bytes();
        self.mac = mac.sign(&out);
        out.extend_from_slice(&self.mac);
        out
    }

    pub fn verify(&self, mac: &HeaderMac) -> Result<(), VaultError> {
        mac.verify(&self.signed_bytes(), &self.mac)
            .map_err(|_| VaultError::Tampered)
    }

    /// Parses a config; never panics on any input.
    pub fn decode(data: &[u8]) -> Result<Self, VaultError> {
        let corrupt = |m: &str| VaultError::Corrupt(m.to_string());
        let trunc = |t: crate::wire::Truncated| VaultError::Corrupt(format!("{} truncated", t.0));
        if data.len() > MAX_CONFIG_LEN {
            return Err(corrupt("config larger than 64 KiB"));
        }
        let mut r = Reader::new(data, "config");
        if r.bytes(8).map_err(trunc)? != MAGIC {
            return Err(corrupt("bad magic: not an atrest vault config"));
        }
        let version = r.u16().map_err(trunc)?;
        if version != VERSION && version != VERSION_2 {
            return Err(VaultError::UnknownVersion(version));
        }
        let body_len = r.u32().map_err(trunc)? as usize;
        let body = r.bytes(body_len).map_err(trunc)?;
        let mac: [u8; MAC_LEN] = r.array().map_err(trunc)?;
        if !r.is_empty() {
            return Err(corrupt("trailing bytes after the config MAC"));
        }

        let mut b = Reader::new(body, "config body");
        let vault_id = b.array().map_err(trunc)?;
        let created_unix = b.u64().map_err(trunc)?;
        let generation = b.u64().map_err(trunc)?;
        let algorithm = ContentAlgorithm::from_id(b.u8().map_err(trunc)?)
            .ok_or_else(|| corrupt("unknown content algorithm"))?;
        let block_size = b.u32().map_err(trunc)?;
        if block_size != BLOCK_SIZE {
            return Err(corrupt("unsupported block size"));
        }
        let backend = Backend::from_id(b.u8().map_err(trunc)?).map_err(VaultError::Corrupt)?;
        if version == VERSION_2 && backend != Backend::Fuse {
            return Err(corrupt("a format 2 config of a backend other than FUSE"));
        }
        let flags = b.u16().map_err(trunc)?;
        let known = if version == VERSION_2 {
            FLAG_MIGRATING
        } else {
            0
        };
        if flags & !known != 0 {
            return Err(corrupt("unknown feature flags; upgrade atrest"));
        }
        let count = b.u8().map_err(trunc)? as usize;
        if count == 0 || count > MAX_SLOTS {
            return Err(corrupt("keyslot count out of range"));
        }
        let mut keyslots: Vec<Keyslot> = Vec::with_capacity(count);
        let owner = SlotOwner::Vault(vault_id);
        for _ in 0..count {
            let slot = Keyslot::read(&owner, &mut b).map_err(VaultError::Corrupt)?;
            if keyslots.iter().any(|s| s.id == slot.id) {
                return Err(corrupt("duplicate keyslot id"));
            }
            keyslots.push(slot);
        }
        if !b.is_empty() {
            return Err(corrupt("trailing bytes in the config body"));
        }
        Ok(Self {
            vault_id,
            created_unix,
            generation,
            algorithm,
            block_size,
            backend,
            format: version,
            migrating: flags & FLAG_MIGRATING != 0,
            keyslots,
            mac,
        })
    }
}

/// Writes `data` to `dir/name` atomically: temp file, fsync, rename, fsync
/// the directory. A crash leaves either the old or the new file.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<(), VaultError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let target = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        VaultError::io(&target)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyslot::{SlotKind, Unlocker};
    use atrest_core::SecretKey;

    fn sample() -> (VaultConfig, HeaderMac, Vec<u8>) {
        let master = SecretKey::random();
        let mut cfg = VaultConfig::new(ContentAlgorithm::Aes256Gcm, Backend::Fuse, 1_700_000_000);
        let unlocker = Unlocker::KeyFile(SecretKey::random());
        cfg.keyslots.push(
            Keyslot::wrap(
                &cfg.vault_id,
                0,
                SlotKind::KeyFile,
                "ops".into(),
                &unlocker,
                &master,
            )
            .unwrap(),
        );
        let mac = HeaderMac::new(&master.derive(&cfg.vault_id, atrest_core::labels::CONFIG_MAC));
        let bytes = cfg.encode(&mac);
        (cfg, mac, bytes)
    }

    #[test]
    fn round_trip() {
        let (cfg, mac, bytes) = sample();
        let back = VaultConfig::decode(&bytes).unwrap();
        assert_eq!(back, cfg);
        back.verify(&mac).unwrap();
    }

    #[test]
    fn every_flipped_bit_is_refused_or_fails_the_mac() {
        let (_, mac, bytes) = sample();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                if let Ok(cfg) = VaultConfig::decode(&bad) {
                    assert!(cfg.verify(&mac).is_err(), "byte {i} bit {bit:#x} accepted");
                }
            }
        }
    }

    /// A config with a remote and a 2-of-3 threshold slot: every bit of
    /// their parameters is parsed strictly or covered by the MAC.
    fn remote_sample() -> (HeaderMac, Vec<u8>) {
        let master = SecretKey::random();
        let mut cfg = VaultConfig::new(ContentAlgorithm::Aes256Gcm, Backend::Fuse, 1_700_000_000);
        let members: Vec<crate::RemoteMember> = (1..=3u8)
            .map(|n| {
                let (binding, key) =
                    atrest_remote::enroll(&atrest_remote::HostSecret::generate().public_key());
                crate::RemoteMember {
                    authority: crate::AuthorityRef {
                        url: format!("https://k{n}.example"),
                        ca_fingerprint: [n; 32],
                        host_id: atrest_remote::HostId::new("h").unwrap(),
                        audit_public_key: [n; 32],
                    },
                    binding,
                    key,
                }
            })
            .collect();
        let remote = SlotKind::Remote(Box::new(crate::RemoteSlot {
            authority: members[0].authority.clone(),
            replicas: vec!["https://k1b.example".into()],
            binding: members[0].binding,
        }));
        cfg.keyslots.push(
            Keyslot::wrap(
                &cfg.vault_id,
                0,
                remote,
                String::new(),
                &Unlocker::Remote(members[0].key.clone()),
                &master,
            )
            .unwrap(),
        );
        let (slot, secret) = crate::ThresholdSlot::create(&cfg.vault_id, 1, 2, &members).unwrap();
        cfg.keyslots.push(
            Keyslot::wrap(
                &cfg.vault_id,
                1,
                SlotKind::Threshold(slot),
                "q".into(),
                &Unlocker::Threshold(secret),
                &master,
            )
            .unwrap(),
        );
        let mac = HeaderMac::new(&master.derive(&cfg.vault_id, atrest_core::labels::CONFIG_MAC));
        let bytes = cfg.encode(&mac);
        assert_eq!(VaultConfig::decode(&bytes).unwrap(), cfg);
        (mac, bytes)
    }

    #[test]
    fn remote_slots_flipped_bits_and_truncations_are_refused() {
        let (mac, bytes) = remote_sample();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            if let Ok(cfg) = VaultConfig::decode(&bad) {
                assert!(cfg.verify(&mac).is_err(), "byte {i} accepted");
            }
        }
        for n in 0..bytes.len() {
            assert!(VaultConfig::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn truncations_never_panic() {
        let (_, _, bytes) = sample();
        for n in 0..bytes.len() {
            assert!(VaultConfig::decode(&bytes[..n]).is_err());
        }
    }

    /// A format 2 config: version 2, the same body, `MIGRATING` in its
    /// flags; round trips, its MAC covers the version, and the rules of
    /// §16.3 hold.
    #[test]
    fn format_2_configs_round_trip_and_keep_their_rules() {
        let (mut cfg, mac, _) = sample();
        cfg.format = VERSION_2;
        cfg.migrating = true;
        let bytes = cfg.encode(&mac);
        // The version field format 1 builds check, and refuse unless 1
        // (the keyslot-version-* vectors they were written with).
        assert_eq!(&bytes[8..10], &[0, 2]);
        assert_eq!(&bytes[14 + 16 + 8 + 8 + 1 + 4 + 1..][..2], &[0, 1], "flags");
        let back = VaultConfig::decode(&bytes).unwrap();
        assert_eq!(back, cfg);
        back.verify(&mac).unwrap();
        let mut as_v1 = bytes.clone();
        as_v1[9] = 1;
        assert!(
            VaultConfig::decode(&as_v1).is_err(),
            "MIGRATING is no flag of version 1"
        );
        cfg.migrating = false;
        let mut bytes = cfg.encode(&mac);
        bytes[9] = 1;
        // Relabelled as version 1, the MAC no longer holds.
        assert!(VaultConfig::decode(&bytes).unwrap().verify(&mac).is_err());
        let mut fscrypt = cfg.clone();
        fscrypt.backend = Backend::Fscrypt;
        assert!(matches!(
            VaultConfig::decode(&fscrypt.encode(&mac)),
            Err(VaultError::Corrupt(_))
        ));
        let mut flags = cfg.encode(&mac);
        flags[14 + 16 + 8 + 8 + 1 + 4 + 1 + 1] = 2;
        assert!(VaultConfig::decode(&flags).is_err(), "flag bit 1");
    }

    #[test]
    fn unknown_version_is_named() {
        let (_, _, mut bytes) = sample();
        bytes[9] = 9;
        assert!(matches!(
            VaultConfig::decode(&bytes),
            Err(VaultError::UnknownVersion(9))
        ));
    }
}
