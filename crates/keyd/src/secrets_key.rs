//! Host exchange secrets at rest: wrapped under a key that ratchets
//! forward at every shred (decision 0018, docs/format.md "Key authority:
//! host secrets at rest").
//!
//! - [`EpochKey`]: the secrets key `K_e` of one epoch `e`; wraps and
//!   unwraps a host's secret, and takes the one-way step to `K_{e+1}`.
//! - [`SecretsKeyring`]: `DATA_DIR/secrets.key`, the epoch key this
//!   process holds; moved forward (never back) when the database is at a
//!   later epoch, written atomically.
//!
//! The database keeps its epoch and a check value of `K_e`; a database at
//! an earlier epoch than the file is one restored from before a shred, and
//! nothing in it opens: each shred since erased the key it is wrapped
//! under.
//!
//! ```
//! use atrest_keyd::secrets_key::EpochKey;
//! use atrest_remote::{HostId, KeyId};
//!
//! let key = EpochKey::generate();
//! let host = HostId::new("web-1").unwrap();
//! let wrapped = key.wrap(&host, &KeyId([1; 16]), &[7; 32]);
//! assert_eq!(*key.unwrap(&host, &KeyId([1; 16]), &wrapped).unwrap(), [7; 32]);
//! // After a shred's step, the old wrap no longer opens.
//! assert!(key.next().unwrap().unwrap(&host, &KeyId([1; 16]), &wrapped).is_err());
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use atrest_core::{BlockCipher, Canonical, ContentAlgorithm, SecretKey, labels};
use atrest_remote::{HostId, KeyId};
use zeroize::Zeroizing;

/// First byte of a wrapped secret.
pub const WRAP_VERSION: u8 = 1;
/// `version (1) ‖ epoch (4, big-endian)`.
pub const WRAP_HEADER_LEN: usize = 5;
/// Header, nonce (12), sealed secret (32), tag (16).
pub const WRAPPED_LEN: usize = WRAP_HEADER_LEN + 12 + 32 + 16;

/// `secrets.key`: `magic (4) ‖ version (1) ‖ epoch (4, big-endian) ‖ K_e (32)`.
pub const FILE_MAGIC: &[u8; 4] = b"ATSK";
pub const FILE_VERSION: u8 = 1;
pub const FILE_LEN: usize = 4 + 1 + 4 + 32;

/// Steps a replica ratchets at once before calling the database's epoch
/// corrupt (one per shred: far more than any authority makes).
const MAX_STEPS: u32 = 1_000_000;

/// Why a wrapped secret did not open. Authentication failures carry no
/// detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    #[error("a wrapped host secret is {0} bytes, not {WRAPPED_LEN}")]
    Length(usize),
    #[error("a wrapped host secret has version {0}; this keyd knows version {WRAP_VERSION}")]
    UnknownVersion(u8),
    #[error("a host secret wrapped at epoch {wrapped} does not open with the key of epoch {key}")]
    Epoch { wrapped: u32, key: u32 },
    #[error("a wrapped host secret failed to authenticate")]
    Authentication,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "this database's host secrets are at epoch {database}; this data directory's key is at \
         epoch {file}: each shred since erased the key they are wrapped under; restore a backup \
         taken after the last shred"
    )]
    RestoredDatabase { database: u32, file: u32 },
    #[error(
        "this database's host secrets are wrapped (epoch {database}) but {path} does not exist: \
         copy secrets.key from a live replica's data directory (it is not in the database's \
         backups)"
    )]
    Missing { database: u32, path: String },
    #[error(
        "{path} is not the key this database's host secrets are wrapped under (epoch \
         {epoch}): copy secrets.key from a live replica of this authority"
    )]
    WrongKey { epoch: u32, path: String },
    #[error(
        "this database holds host secrets in the clear (from before secrets were wrapped), \
         but {path} is at epoch {file}: it is a backup from before the upgrade and {file} \
         shred(s) since; restore a backup taken after the last shred"
    )]
    PlaintextBackup { file: u32, path: String },
    #[error(
        "the database's secrets epoch {database} is {steps} steps past {file}; refused as corrupt"
    )]
    TooFar {
        database: u32,
        file: u32,
        steps: u64,
    },
    #[error("the secrets epoch cannot go past {0}")]
    Exhausted(u32),
    #[error(transparent)]
    Unwrap(#[from] UnwrapError),
}

/// The secrets key of one epoch. Zeroized on drop; never printed.
pub struct EpochKey {
    epoch: u32,
    key: SecretKey,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey({}, [redacted])", self.epoch)
    }
}

impl EpochKey {
    pub fn new(epoch: u32, key: SecretKey) -> Self {
        Self { epoch, key }
    }

    /// A fresh `K_0`.
    pub fn generate() -> Self {
        Self::new(0, SecretKey::random())
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The raw `K_e`, for the key file and the vectors.
    pub fn expose(&self) -> &[u8; 32] {
        self.key.expose()
    }

    /// `K_{e+1} = HKDF-SHA256(K_e, salt = e + 1, "atrest v1 keyd secrets
    /// ratchet")`: one way, so `K_e` cannot be had back from it.
    pub fn next(&self) -> Result<Self, SecretsKeyError> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(SecretsKeyError::Exhausted(self.epoch))?;
        Ok(Self::new(
            epoch,
            self.key
                .derive(&epoch.to_be_bytes(), labels::KEYD_SECRETS_RATCHET),
        ))
    }

    /// What the database keeps to recognise this key (a one-way value).
    pub fn check(&self) -> [u8; 32] {
        *self
            .key
            .derive(&self.epoch.to_be_bytes(), labels::KEYD_SECRETS_CHECK)
            .expose()
    }

    fn cipher(&self) -> BlockCipher {
        let key = self
            .key
            .derive(&self.epoch.to_be_bytes(), labels::KEYD_SECRETS_WRAP);
        BlockCipher::new(ContentAlgorithm::Aes256Gcm, &key)
    }

    /// Wraps `host`'s secret `key_id` at this epoch.
    pub fn wrap(&self, host: &HostId, key_id: &KeyId, secret: &[u8; 32]) -> Vec<u8> {
        let mut out = vec![0u8; WRAPPED_LEN];
        out[0] = WRAP_VERSION;
        out[1..WRAP_HEADER_LEN].copy_from_slice(&self.epoch.to_be_bytes());
        let (header, sealed) = out.split_at_mut(WRAP_HEADER_LEN);
        self.cipher()
            .seal_to(&aad(host, key_id, header), secret, sealed);
        out
    }

    /// Opens a secret [`wrap`](Self::wrap)ped for `host` and `key_id` at
    /// this epoch.
    pub fn unwrap(
        &self,
        host: &HostId,
        key_id: &KeyId,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, UnwrapError> {
        let epoch = wrapped_epoch(wrapped)?;
        if epoch != self.epoch {
            return Err(UnwrapError::Epoch {
                wrapped: epoch,
                key: self.epoch,
            });
        }
        let (header, sealed) = wrapped.split_at(WRAP_HEADER_LEN);
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .cipher()
            .open_in_place(&aad(host, key_id, header), &mut buf[..])
            .map_err(|_| UnwrapError::Authentication)?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(plain);
        Ok(out)
    }

    fn to_file(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(FILE_LEN));
        out.extend_from_slice(FILE_MAGIC);
        out.push(FILE_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.key.expose());
        out
    }

    /// Parses `secrets.key`'s bytes.
    pub fn from_file(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != FILE_LEN || &bytes[..4] != FILE_MAGIC {
            return Err(format!(
                "not a keyd secrets key ({} bytes; one is {FILE_LEN}, starting ATSK)",
                bytes.len()
            ));
        }
        if bytes[4] != FILE_VERSION {
            return Err(format!(
                "secrets key file version {}; this keyd reads version {FILE_VERSION}: use the \
                 atrest keyd that wrote it",
                bytes[4]
            ));
        }
        let epoch = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes"));
        let key = SecretKey::from_slice(&bytes[9..]).expect("32 bytes");
        Ok(Self::new(epoch, key))
    }
}

/// The epoch a wrapped secret was made at, from its header.
pub fn wrapped_epoch(wrapped: &[u8]) -> Result<u32, UnwrapError> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(UnwrapError::Length(wrapped.len()));
    }
    if wrapped[0] != WRAP_VERSION {
        return Err(UnwrapError::UnknownVersion(wrapped[0]));
    }
    Ok(u32::from_be_bytes(
        wrapped[1..WRAP_HEADER_LEN].try_into().expect("4 bytes"),
    ))
}

/// `Canonical("atrest keyd host secret v1", 1)` over the host id, the key
/// id and the header (version and epoch).
fn aad(host: &HostId, key_id: &KeyId, header: &[u8]) -> Vec<u8> {
    let mut aad = Canonical::new(labels::domain::KEYD_HOST_SECRET, WRAP_VERSION);
    aad.field(host.as_str().as_bytes())
        .field(&key_id.0)
        .field(header);
    aad.into_bytes()
}

/// What the database says of its secrets' key, read at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEpoch {
    pub epoch: u32,
    pub check: Vec<u8>,
}

/// The epoch key this process holds, and the file it lives in. Shared by
/// the store (one per process).
#[derive(Debug)]
pub struct SecretsKeyring {
    /// `None`: in memory only (tests of a store alone).
    path: Option<PathBuf>,
    /// Opened only to see that the database answers (`init` on a shared
    /// database): never wraps, never settles the epoch.
    probe: bool,
    current: Mutex<Option<Arc<EpochKey>>>,
}

impl SecretsKeyring {
    /// `secrets.key` at `path`, read if it exists; made when a database
    /// with no epoch yet first needs one.
    pub fn open(path: &Path) -> Result<Self, SecretsKeyError> {
        // Its mode is checked by the data directory, as every key file's.
        let current = if path.exists() {
            let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| file_error(path, e))?);
            Some(Arc::new(
                EpochKey::from_file(&bytes).map_err(|e| file_error(path, e))?,
            ))
        } else {
            None
        };
        Ok(Self {
            path: Some(path.to_owned()),
            probe: false,
            current: Mutex::new(current),
        })
    }

    /// A key kept in memory only: for tests of a store alone.
    pub fn in_memory() -> Self {
        Self {
            path: None,
            probe: false,
            current: Mutex::new(None),
        }
    }

    /// For a store opened only to check the database answers: it settles
    /// nothing and wraps nothing.
    pub fn probe() -> Self {
        Self {
            path: None,
            probe: true,
            current: Mutex::new(None),
        }
    }

    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<EpochKey>>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key held now, if any.
    pub fn current(&self) -> Option<Arc<EpochKey>> {
        self.lock().clone()
    }

    fn path_text(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "the secrets key".into(), |p| p.display().to_string())
    }

    /// At open, with no epoch in the database yet: the key held, or a new
    /// `K_0` (written first). A key file past epoch 0 beside a database
    /// with no epoch is a backup from before secrets were wrapped.
    pub(crate) fn for_new_epoch(&self) -> Result<Arc<EpochKey>, SecretsKeyError> {
        let mut current = self.lock();
        if let Some(key) = &*current {
            if key.epoch() > 0 {
                return Err(SecretsKeyError::PlaintextBackup {
                    file: key.epoch(),
                    path: self.path_text(),
                });
            }
            return Ok(key.clone());
        }
        let key = Arc::new(EpochKey::generate());
        self.save(&key)?;
        *current = Some(key.clone());
        Ok(key)
    }

    /// At open: the database is at `stored`. Ratchets the file forward if
    /// it is behind (a replica down during a shred, or killed between a
    /// shred's commit and its file's rename); refuses a database behind
    /// the file (restored from before a shred) or another authority's key.
    pub(crate) fn settle(&self, stored: &StoredEpoch) -> Result<Arc<EpochKey>, SecretsKeyError> {
        if self.lock().is_none() {
            return Err(SecretsKeyError::Missing {
                database: stored.epoch,
                path: self.path_text(),
            });
        }
        let key = self.key_at(stored.epoch)?;
        if !atrest_core::constant_time_eq(&key.check(), &stored.check) {
            return Err(SecretsKeyError::WrongKey {
                epoch: stored.epoch,
                path: self.path_text(),
            });
        }
        Ok(key)
    }

    /// The key of `epoch`: the one held, or one ratcheted forward to it
    /// (the file written first). A key already past `epoch` is refused:
    /// it cannot go back.
    pub(crate) fn key_at(&self, epoch: u32) -> Result<Arc<EpochKey>, SecretsKeyError> {
        let mut current = self.lock();
        let Some(held) = current.clone() else {
            return Err(SecretsKeyError::Missing {
                database: epoch,
                path: self.path_text(),
            });
        };
        if held.epoch() == epoch {
            return Ok(held);
        }
        if held.epoch() > epoch {
            return Err(SecretsKeyError::RestoredDatabase {
                database: epoch,
                file: held.epoch(),
            });
        }
        let steps = u64::from(epoch - held.epoch());
        if steps > u64::from(MAX_STEPS) {
            return Err(SecretsKeyError::TooFar {
                database: epoch,
                file: held.epoch(),
                steps,
            });
        }
        let mut key = held.next()?;
        while key.epoch() < epoch {
            key = key.next()?;
        }
        let key = Arc::new(key);
        self.save(&key)?;
        tracing::info!(
            from = held.epoch(),
            to = epoch,
            "secrets key ratcheted forward to the database's epoch"
        );
        *current = Some(key.clone());
        Ok(key)
    }

    /// Follows the database forward when it is past the key held (what a
    /// replica sees after a shred on another); nothing otherwise.
    pub(crate) fn follow(&self, epoch: u32) -> Result<(), SecretsKeyError> {
        match self.current() {
            Some(held) if held.epoch() < epoch => self.key_at(epoch).map(drop),
            _ => Ok(()),
        }
    }

    /// Replaces the file with `key`: temp file, fsync, rename, fsync the
    /// directory, so a crash leaves the old key or the new one.
    fn save(&self, key: &EpochKey) -> Result<(), SecretsKeyError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = path.with_extension("key.tmp");
        let write = || -> std::io::Result<()> {
            // A temp file a crash left behind holds an old key: gone first.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&key.to_file())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            file_error(
                path,
                format!(
                    "cannot replace the secrets key ({e}); keyd ratchets it forward from the \
                     database's epoch at its next start"
                ),
            )
        })
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> SecretsKeyError {
    SecretsKeyError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn host(name: &str) -> HostId {
        HostId::new(name).unwrap()
    }

    #[test]
    fn wrap_round_trips_and_is_bound_to_host_key_id_and_epoch() {
        let key = EpochKey::generate();
        let (a, id) = (host("web-1"), KeyId([3; 16]));
        let wrapped = key.wrap(&a, &id, &[9; 32]);
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(*key.unwrap(&a, &id, &wrapped).unwrap(), [9; 32]);
        assert_eq!(
            key.unwrap(&host("web-2"), &id, &wrapped),
            Err(UnwrapError::Authentication)
        );
        assert_eq!(
            key.unwrap(&a, &KeyId([4; 16]), &wrapped),
            Err(UnwrapError::Authentication)
        );
        for i in [0, 1, 4, 5, 20, WRAPPED_LEN - 1] {
            let mut bad = wrapped.clone();
            bad[i] ^= 1;
            assert!(key.unwrap(&a, &id, &bad).is_err(), "byte {i}");
        }
        assert_eq!(
            key.unwrap(&a, &id, &wrapped[1..]),
            Err(UnwrapError::Length(WRAPPED_LEN - 1))
        );
    }

    #[test]
    fn the_next_epoch_opens_nothing_of_the_last() {
        let key = EpochKey::generate();
        let next = key.next().unwrap();
        assert_eq!(next.epoch(), 1);
        assert_ne!(next.expose(), key.expose());
        assert_ne!(next.check(), key.check());
        let (a, id) = (host("web-1"), KeyId([3; 16]));
        let mut wrapped = key.wrap(&a, &id, &[9; 32]);
        assert_eq!(
            next.unwrap(&a, &id, &wrapped),
            Err(UnwrapError::Epoch { wrapped: 0, key: 1 })
        );
        // Relabelled as the new epoch: still does not authenticate.
        wrapped[1..5].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            next.unwrap(&a, &id, &wrapped),
            Err(UnwrapError::Authentication)
        );
        // Deterministic: two ratchets of the same key agree.
        assert_eq!(key.next().unwrap().expose(), next.expose());
    }

    #[test]
    fn the_file_ratchets_forward_only_and_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let ring = SecretsKeyring::open(&path).unwrap();
        assert!(ring.current().is_none());
        let first = ring.for_new_epoch().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let stored = |key: &EpochKey| StoredEpoch {
            epoch: key.epoch(),
            check: key.check().to_vec(),
        };
        let third = first.next().unwrap().next().unwrap();
        // Reopened, it ratchets two steps to the database's epoch.
        let ring = SecretsKeyring::open(&path).unwrap();
        let settled = ring.settle(&stored(&third)).unwrap();
        assert_eq!(settled.expose(), third.expose());
        let reread = std::fs::read(&path).unwrap();
        assert_eq!(&reread[5..9], &2u32.to_be_bytes());
        assert!(!reread.windows(32).any(|w| w == first.expose()));
        assert!(!dir.path().join("secrets.key.tmp").exists());
        // A database behind the file: refused, with what to do.
        let error = SecretsKeyring::open(&path)
            .unwrap()
            .settle(&stored(&first))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("restore a backup taken after the last shred")
        );
        // Another authority's key at the same epoch: refused.
        let other = EpochKey::new(2, SecretKey::random());
        let error = SecretsKeyring::open(&path)
            .unwrap()
            .settle(&stored(&other))
            .unwrap_err();
        assert!(matches!(error, SecretsKeyError::WrongKey { .. }), "{error}");
        // A damaged file, or one of a later version: refused.
        std::fs::write(&path, &reread[..40]).unwrap();
        assert!(SecretsKeyring::open(&path).is_err());
        let mut newer = reread.clone();
        newer[4] = 2;
        std::fs::write(&path, &newer).unwrap();
        let error = SecretsKeyring::open(&path).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }

    #[test]
    fn a_missing_file_beside_a_wrapped_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = SecretsKeyring::open(&dir.path().join("secrets.key")).unwrap();
        let error = ring
            .settle(&StoredEpoch {
                epoch: 3,
                check: vec![0; 32],
            })
            .unwrap_err();
        assert!(error.to_string().contains("copy secrets.key"), "{error}");
    }
}
