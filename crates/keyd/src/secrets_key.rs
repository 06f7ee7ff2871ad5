//! Keys at rest in keyd's database, wrapped under a key that ratchets
//! forward at every shred: host exchange secrets (decision 0018,
//! docs/format.md "Key authority: host secrets at rest") and the bucket
//! keys scope keys are wrapped under (decision 0020).
//!
//! - [`Purpose`]: which of the two an epoch key is for ([`SECRETS`],
//!   `secrets.key`; [`RECORDS`], `records.key`): its file, labels and
//!   domain. The machinery below is the same for both.
//! - [`EpochKey`]: the key `K_e` of one epoch `e`; wraps and unwraps a
//!   host's secret (or a bucket key), and takes the one-way step to
//!   `K_{e+1}`.
//! - [`SecretsKeyring`]: the key file, the epoch key this process holds;
//!   moved forward (never back) when the database is at a later epoch,
//!   written atomically.
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

/// What an epoch key protects: its file in the data directory, its HKDF
/// labels and AAD domain (all from atrest-core), and its words for
/// messages. The two are [`SECRETS`] and [`RECORDS`].
#[derive(Debug, PartialEq, Eq)]
pub struct Purpose {
    /// The key file's name in the data directory.
    pub file: &'static str,
    magic: &'static [u8; 4],
    /// What the database keeps under it, for messages.
    pub what: &'static str,
    wrap: &'static [u8],
    ratchet: &'static [u8],
    check: &'static [u8],
    domain: &'static [u8],
    /// A 32-byte file from before the key ratcheted (`records.key` before
    /// decision 0020): `K_0` is derived from it with this label.
    origin: Option<&'static [u8]>,
}

/// Host exchange secrets under `secrets.key` (decision 0018).
pub static SECRETS: Purpose = Purpose {
    file: "secrets.key",
    magic: b"ATSK",
    what: "host secrets",
    wrap: labels::KEYD_SECRETS_WRAP,
    ratchet: labels::KEYD_SECRETS_RATCHET,
    check: labels::KEYD_SECRETS_CHECK,
    domain: labels::domain::KEYD_HOST_SECRET,
    origin: None,
};

/// Scope bucket keys under `records.key` (decision 0020).
pub static RECORDS: Purpose = Purpose {
    file: "records.key",
    magic: b"ATRK",
    what: "scope keys",
    wrap: labels::KEYD_RECORDS_WRAP,
    ratchet: labels::KEYD_RECORDS_RATCHET,
    check: labels::KEYD_RECORDS_CHECK,
    domain: labels::domain::KEYD_SCOPE_BUCKET,
    origin: Some(labels::KEYD_RECORDS_ORIGIN),
};

/// Length of a key file from before its key ratcheted: the bare key.
pub const LEGACY_FILE_LEN: usize = 32;

/// First byte of a wrapped secret.
pub const WRAP_VERSION: u8 = 1;
/// `version (1) ‖ epoch (4, big-endian)`.
pub const WRAP_HEADER_LEN: usize = 5;
/// Header, nonce (12), sealed secret (32), tag (16).
pub const WRAPPED_LEN: usize = WRAP_HEADER_LEN + 12 + 32 + 16;

/// The key file: `magic (4) ‖ version (1) ‖ epoch (4, big-endian) ‖ K_e
/// (32)`; the magic is `ATSK` for `secrets.key`, `ATRK` for `records.key`.
pub const FILE_MAGIC: &[u8; 4] = b"ATSK";
pub const FILE_VERSION: u8 = 1;
pub const FILE_LEN: usize = 4 + 1 + 4 + 32;

/// Steps a replica ratchets at once before calling the database's epoch
/// corrupt (one per shred: far more than any authority makes).
const MAX_STEPS: u32 = 1_000_000;

/// Why a wrapped secret (or bucket key) did not open. Authentication
/// failures carry no detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    #[error("a wrapped key at rest is {0} bytes, not {WRAPPED_LEN}")]
    Length(usize),
    #[error("a wrapped key at rest has version {0}; this keyd knows version {WRAP_VERSION}")]
    UnknownVersion(u8),
    #[error("a key wrapped at epoch {wrapped} does not open with the key of epoch {key}")]
    Epoch { wrapped: u32, key: u32 },
    #[error("a wrapped key at rest failed to authenticate")]
    Authentication,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "this database's {what} are at epoch {database}; this data directory's key is at \
         epoch {file}: each shred since erased the key they are wrapped under; restore a backup \
         taken after the last shred"
    )]
    RestoredDatabase {
        what: &'static str,
        database: u32,
        file: u32,
    },
    #[error(
        "this database's {what} are wrapped (epoch {database}) but {path} does not exist: \
         copy {name} from a live replica's data directory (it is not in the database's \
         backups)"
    )]
    Missing {
        what: &'static str,
        name: &'static str,
        database: u32,
        path: String,
    },
    #[error(
        "{path} is not the key this database's {what} are wrapped under (epoch \
         {epoch}): copy {name} from a live replica of this authority"
    )]
    WrongKey {
        what: &'static str,
        name: &'static str,
        epoch: u32,
        path: String,
    },
    #[error(
        "this database holds {what} from before they were wrapped under an epoch key, \
         but {path} is at epoch {file}: it is a backup from before the upgrade and {file} \
         shred(s) since; restore a backup taken after the last shred"
    )]
    PlaintextBackup {
        what: &'static str,
        file: u32,
        path: String,
    },
    #[error(
        "the database's epoch of {what} {database} is {steps} steps past {file}; refused as \
         corrupt"
    )]
    TooFar {
        what: &'static str,
        database: u32,
        file: u32,
        steps: u64,
    },
    #[error("the secrets epoch cannot go past {0}")]
    Exhausted(u32),
    #[error(transparent)]
    Unwrap(#[from] UnwrapError),
}

/// The key of one epoch of one [`Purpose`]. Zeroized on drop; never
/// printed.
pub struct EpochKey {
    purpose: &'static Purpose,
    epoch: u32,
    key: SecretKey,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EpochKey({}, {}, [redacted])",
            self.purpose.file, self.epoch
        )
    }
}

impl EpochKey {
    /// A secrets key ([`SECRETS`]).
    pub fn new(epoch: u32, key: SecretKey) -> Self {
        Self::of(&SECRETS, epoch, key)
    }

    pub fn of(purpose: &'static Purpose, epoch: u32, key: SecretKey) -> Self {
        Self {
            purpose,
            epoch,
            key,
        }
    }

    /// A fresh secrets key `K_0`.
    pub fn generate() -> Self {
        Self::generate_for(&SECRETS)
    }

    /// A fresh `K_0` for `purpose`.
    pub fn generate_for(purpose: &'static Purpose) -> Self {
        Self::of(purpose, 0, SecretKey::random())
    }

    /// `K_0` of a key file from before the key ratcheted (the bare 32-byte
    /// key `legacy`), for a purpose that had one.
    pub fn from_legacy(purpose: &'static Purpose, legacy: &SecretKey) -> Option<Self> {
        let label = purpose.origin?;
        Some(Self::of(purpose, 0, legacy.derive(b"", label)))
    }

    pub fn purpose(&self) -> &'static Purpose {
        self.purpose
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The raw `K_e`, for the key file and the vectors.
    pub fn expose(&self) -> &[u8; 32] {
        self.key.expose()
    }

    /// `K_{e+1} = HKDF-SHA256(K_e, salt = e + 1, ratchet label)` (`"atrest
    /// v1 keyd secrets ratchet"` for secrets): one way, so `K_e` cannot be
    /// had back from it.
    pub fn next(&self) -> Result<Self, SecretsKeyError> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(SecretsKeyError::Exhausted(self.epoch))?;
        Ok(Self::of(
            self.purpose,
            epoch,
            self.key.derive(&epoch.to_be_bytes(), self.purpose.ratchet),
        ))
    }

    /// What the database keeps to recognise this key (a one-way value).
    pub fn check(&self) -> [u8; 32] {
        *self
            .key
            .derive(&self.epoch.to_be_bytes(), self.purpose.check)
            .expose()
    }

    fn cipher(&self) -> BlockCipher {
        let key = self
            .key
            .derive(&self.epoch.to_be_bytes(), self.purpose.wrap);
        BlockCipher::new(ContentAlgorithm::Aes256Gcm, &key)
    }

    /// Seals a 32-byte key at this epoch, bound to `bound` (the AAD's
    /// fields after the purpose's domain, before the header).
    fn seal(&self, bound: &[&[u8]], secret: &[u8; 32]) -> Vec<u8> {
        let mut out = vec![0u8; WRAPPED_LEN];
        out[0] = WRAP_VERSION;
        out[1..WRAP_HEADER_LEN].copy_from_slice(&self.epoch.to_be_bytes());
        let (header, sealed) = out.split_at_mut(WRAP_HEADER_LEN);
        self.cipher()
            .seal_to(&aad(self.purpose, bound, header), secret, sealed);
        out
    }

    /// Opens what [`seal`](Self::seal) made with the same `bound`.
    fn open(&self, bound: &[&[u8]], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, UnwrapError> {
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
            .open_in_place(&aad(self.purpose, bound, header), &mut buf[..])
            .map_err(|_| UnwrapError::Authentication)?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(plain);
        Ok(out)
    }

    /// Wraps `host`'s secret `key_id` at this epoch.
    pub fn wrap(&self, host: &HostId, key_id: &KeyId, secret: &[u8; 32]) -> Vec<u8> {
        self.seal(&[host.as_str().as_bytes(), &key_id.0], secret)
    }

    /// Opens a secret [`wrap`](Self::wrap)ped for `host` and `key_id` at
    /// this epoch.
    pub fn unwrap(
        &self,
        host: &HostId,
        key_id: &KeyId,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, UnwrapError> {
        self.open(&[host.as_str().as_bytes(), &key_id.0], wrapped)
    }

    /// Wraps the key of scope bucket `bucket` at this epoch (a records
    /// key's use; the same 65-byte form as a host secret's, its AAD bound
    /// to the bucket number).
    pub fn wrap_bucket(&self, bucket: u8, key: &[u8; 32]) -> Vec<u8> {
        self.seal(&[&[bucket]], key)
    }

    /// Opens a bucket key [`wrap_bucket`](Self::wrap_bucket)ped at this
    /// epoch.
    pub fn unwrap_bucket(
        &self,
        bucket: u8,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, UnwrapError> {
        self.open(&[&[bucket]], wrapped)
    }

    fn to_file(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(FILE_LEN));
        out.extend_from_slice(self.purpose.magic);
        out.push(FILE_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.key.expose());
        out
    }

    /// Parses `secrets.key`'s bytes.
    pub fn from_file(bytes: &[u8]) -> Result<Self, String> {
        Self::from_file_for(&SECRETS, bytes)
    }

    /// Parses a key file of `purpose`.
    pub fn from_file_for(purpose: &'static Purpose, bytes: &[u8]) -> Result<Self, String> {
        let magic = String::from_utf8_lossy(purpose.magic);
        if bytes.len() != FILE_LEN || &bytes[..4] != purpose.magic {
            return Err(format!(
                "not a keyd {} file ({} bytes; one is {FILE_LEN}, starting {magic})",
                purpose.file,
                bytes.len()
            ));
        }
        if bytes[4] != FILE_VERSION {
            return Err(format!(
                "{} file version {}; this keyd reads version {FILE_VERSION}: use the atrest \
                 keyd that wrote it",
                purpose.file, bytes[4]
            ));
        }
        let epoch = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes"));
        let key = SecretKey::from_slice(&bytes[9..]).expect("32 bytes");
        Ok(Self::of(purpose, epoch, key))
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

/// `Canonical(domain, 1)` over the bound fields and the header (version
/// and epoch): for a host secret the domain is `"atrest keyd host secret
/// v1"` and the fields the host id and the key id; for a bucket key
/// `"atrest keyd scope bucket v1"` and the bucket number (one byte).
fn aad(purpose: &Purpose, bound: &[&[u8]], header: &[u8]) -> Vec<u8> {
    let mut aad = Canonical::new(purpose.domain, WRAP_VERSION);
    for field in bound {
        aad.field(field);
    }
    aad.field(header);
    aad.into_bytes()
}

/// What the database says of its secrets' key, read at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEpoch {
    pub epoch: u32,
    pub check: Vec<u8>,
}

/// The epoch key this process holds, and the file it lives in. Shared by
/// the store (one per process and purpose).
#[derive(Debug)]
pub struct SecretsKeyring {
    purpose: &'static Purpose,
    /// `None`: in memory only (tests of a store alone).
    path: Option<PathBuf>,
    /// Opened only to see that the database answers (`init` on a shared
    /// database): never wraps, never settles the epoch.
    probe: bool,
    /// The file is still the bare key of before the key ratcheted (a
    /// `records.key` from before decision 0020): that key, which opens
    /// what a database not yet migrated holds. The file is replaced by the
    /// epoch file at the first ratchet, and the key forgotten.
    legacy: Mutex<Option<SecretKey>>,
    current: Mutex<Option<Arc<EpochKey>>>,
}

impl SecretsKeyring {
    /// `secrets.key` at `path`, read if it exists; made when a database
    /// with no epoch yet first needs one.
    pub fn open(path: &Path) -> Result<Self, SecretsKeyError> {
        Self::open_as(&SECRETS, path)
    }

    /// The key file of `purpose` at `path`, read if it exists. A 32-byte
    /// file of a purpose that had one before it ratcheted (`records.key`)
    /// is read as that purpose's `K_0` (and kept, to migrate a database
    /// wrapped under it); it is replaced by the epoch file at the first
    /// ratchet (a shred), as a backup from before the upgrade stays usable
    /// until then, like any backup.
    pub fn open_as(purpose: &'static Purpose, path: &Path) -> Result<Self, SecretsKeyError> {
        // Its mode is checked by the data directory, as every key file's.
        let mut legacy = None;
        let current = if path.exists() {
            let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| file_error(path, e))?);
            let old = SecretKey::from_slice(&bytes).filter(|_| bytes.len() == LEGACY_FILE_LEN);
            let key = match old
                .as_ref()
                .and_then(|old| EpochKey::from_legacy(purpose, old))
            {
                Some(key) => {
                    legacy = old;
                    key
                }
                None => {
                    EpochKey::from_file_for(purpose, &bytes).map_err(|e| file_error(path, e))?
                }
            };
            Some(Arc::new(key))
        } else {
            None
        };
        Ok(Self {
            purpose,
            path: Some(path.to_owned()),
            probe: false,
            legacy: Mutex::new(legacy),
            current: Mutex::new(current),
        })
    }

    /// A secrets key kept in memory only: for tests of a store alone.
    pub fn in_memory() -> Self {
        Self::in_memory_as(&SECRETS)
    }

    /// A key of `purpose` kept in memory only.
    pub fn in_memory_as(purpose: &'static Purpose) -> Self {
        Self {
            purpose,
            path: None,
            probe: false,
            legacy: Mutex::new(None),
            current: Mutex::new(None),
        }
    }

    /// For a store opened only to check the database answers: it settles
    /// nothing and wraps nothing.
    pub fn probe() -> Self {
        Self::probe_as(&SECRETS)
    }

    /// [`probe`](Self::probe) for `purpose`.
    pub fn probe_as(purpose: &'static Purpose) -> Self {
        Self {
            probe: true,
            ..Self::in_memory_as(purpose)
        }
    }

    pub fn purpose(&self) -> &'static Purpose {
        self.purpose
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
            .map_or_else(|| self.purpose.file.into(), |p| p.display().to_string())
    }

    /// The file is not the key the database's keys are wrapped under (at
    /// `epoch`).
    pub(crate) fn wrong_key(&self, epoch: u32) -> SecretsKeyError {
        SecretsKeyError::WrongKey {
            what: self.purpose.what,
            name: self.purpose.file,
            epoch,
            path: self.path_text(),
        }
    }

    fn missing(&self, database: u32) -> SecretsKeyError {
        SecretsKeyError::Missing {
            what: self.purpose.what,
            name: self.purpose.file,
            database,
            path: self.path_text(),
        }
    }

    fn legacy(&self) -> MutexGuard<'_, Option<SecretKey>> {
        self.legacy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the file is still the bare key of before the key ratcheted.
    pub fn is_legacy(&self) -> bool {
        self.legacy().is_some()
    }

    /// That bare key, while the file holds it: what a database not yet
    /// migrated is wrapped under.
    pub(crate) fn legacy_key(&self) -> Option<SecretKey> {
        self.legacy().clone()
    }

    /// At open, with no epoch in the database yet: the key held, or a new
    /// `K_0` (written first). A key file past epoch 0 beside a database
    /// with no epoch is a backup from before the migration. A legacy file
    /// is left as it is until the first ratchet.
    pub(crate) fn for_new_epoch(&self) -> Result<Arc<EpochKey>, SecretsKeyError> {
        let mut current = self.lock();
        if let Some(key) = &*current {
            if key.epoch() > 0 {
                return Err(SecretsKeyError::PlaintextBackup {
                    what: self.purpose.what,
                    file: key.epoch(),
                    path: self.path_text(),
                });
            }
            return Ok(key.clone());
        }
        let key = Arc::new(EpochKey::generate_for(self.purpose));
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
            return Err(self.missing(stored.epoch));
        }
        let key = self.key_at(stored.epoch)?;
        if !atrest_core::constant_time_eq(&key.check(), &stored.check) {
            return Err(self.wrong_key(stored.epoch));
        }
        Ok(key)
    }

    /// The key of `epoch`: the one held, or one ratcheted forward to it
    /// (the file written first). A key already past `epoch` is refused:
    /// it cannot go back.
    pub(crate) fn key_at(&self, epoch: u32) -> Result<Arc<EpochKey>, SecretsKeyError> {
        let mut current = self.lock();
        let Some(held) = current.clone() else {
            return Err(self.missing(epoch));
        };
        if held.epoch() == epoch {
            return Ok(held);
        }
        if held.epoch() > epoch {
            return Err(SecretsKeyError::RestoredDatabase {
                what: self.purpose.what,
                database: epoch,
                file: held.epoch(),
            });
        }
        let steps = u64::from(epoch - held.epoch());
        if steps > u64::from(MAX_STEPS) {
            return Err(SecretsKeyError::TooFar {
                what: self.purpose.what,
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
        // The bare key of before is overwritten: gone from memory too.
        *self.legacy() = None;
        tracing::info!(
            file = self.purpose.file,
            from = held.epoch(),
            to = epoch,
            "epoch key ratcheted forward to the database's epoch"
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
                    "cannot replace {} ({e}); keyd ratchets it forward from the database's epoch \
                     at its next start",
                    self.purpose.file
                ),
            )
        })
    }
}

/// The two keyrings a store wraps keys under: host secrets
/// (`secrets.key`) and scope bucket keys (`records.key`).
#[derive(Debug, Clone)]
pub struct StoreKeys {
    pub secrets: Arc<SecretsKeyring>,
    pub records: Arc<SecretsKeyring>,
}

impl StoreKeys {
    /// `secrets.key` and `records.key` in `dir` (each read if it exists).
    pub fn open(dir: &Path) -> Result<Self, SecretsKeyError> {
        Ok(Self {
            secrets: Arc::new(SecretsKeyring::open_as(&SECRETS, &dir.join(SECRETS.file))?),
            records: Arc::new(SecretsKeyring::open_as(&RECORDS, &dir.join(RECORDS.file))?),
        })
    }

    /// Both in memory only: for tests of a store alone.
    pub fn in_memory() -> Self {
        Self {
            secrets: Arc::new(SecretsKeyring::in_memory_as(&SECRETS)),
            records: Arc::new(SecretsKeyring::in_memory_as(&RECORDS)),
        }
    }

    /// For a store opened only to check the database answers.
    pub fn probe() -> Self {
        Self {
            secrets: Arc::new(SecretsKeyring::probe_as(&SECRETS)),
            records: Arc::new(SecretsKeyring::probe_as(&RECORDS)),
        }
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
    fn bucket_keys_are_bound_to_their_bucket_epoch_and_purpose() {
        let key = EpochKey::generate_for(&RECORDS);
        let wrapped = key.wrap_bucket(7, &[5; 32]);
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(*key.unwrap_bucket(7, &wrapped).unwrap(), [5; 32]);
        assert_eq!(
            key.unwrap_bucket(8, &wrapped),
            Err(UnwrapError::Authentication)
        );
        assert_eq!(
            key.next().unwrap().unwrap_bucket(7, &wrapped),
            Err(UnwrapError::Epoch { wrapped: 0, key: 1 })
        );
        // The same bytes as a secrets key: other labels, other domain.
        let as_secrets = EpochKey::new(0, SecretKey::from_bytes(*key.expose()));
        assert_eq!(
            as_secrets.unwrap_bucket(7, &wrapped),
            Err(UnwrapError::Authentication)
        );
        assert_ne!(as_secrets.check(), key.check());
        assert_ne!(
            as_secrets.next().unwrap().expose(),
            key.next().unwrap().expose()
        );
    }

    #[test]
    fn a_legacy_records_key_is_k0_until_the_first_ratchet_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.key");
        let master = [0x42u8; 32];
        std::fs::write(&path, master).unwrap();
        let ring = SecretsKeyring::open_as(&RECORDS, &path).unwrap();
        assert!(ring.is_legacy());
        let k0 = EpochKey::from_legacy(&RECORDS, &SecretKey::from_bytes(master)).unwrap();
        assert_eq!(ring.current().unwrap().expose(), k0.expose());
        // A migration takes K_0 and leaves the file alone until it commits.
        assert_eq!(ring.for_new_epoch().unwrap().expose(), k0.expose());
        assert_eq!(std::fs::read(&path).unwrap(), master);
        // Settled at epoch 0: the file stays (a backup from before the
        // upgrade is usable until the first shred, as any backup is).
        let stored = StoredEpoch {
            epoch: 0,
            check: k0.check().to_vec(),
        };
        ring.settle(&stored).unwrap();
        assert!(ring.is_legacy());
        assert_eq!(
            ring.legacy_key().unwrap().expose(),
            SecretKey::from_bytes(master).expose()
        );
        assert_eq!(std::fs::read(&path).unwrap(), master);
        // The first ratchet replaces it: the master is gone.
        let k1 = ring.key_at(1).unwrap();
        assert!(!ring.is_legacy());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        assert_eq!(&bytes[..4], b"ATRK");
        assert!(!bytes.windows(32).any(|w| w == master || w == k0.expose()));
        let reopened = SecretsKeyring::open_as(&RECORDS, &path).unwrap();
        assert!(!reopened.is_legacy());
        let stored = StoredEpoch {
            epoch: 1,
            check: k1.check().to_vec(),
        };
        assert_eq!(reopened.settle(&stored).unwrap().expose(), k1.expose());
        // A records file is not a secrets file, nor the other way round.
        assert!(SecretsKeyring::open(&path).is_err());
        // Secrets never had a legacy form: 32 bytes are refused.
        std::fs::write(dir.path().join("secrets.key"), master).unwrap();
        assert!(SecretsKeyring::open(&dir.path().join("secrets.key")).is_err());
    }

    #[test]
    fn a_legacy_records_key_behind_a_shredded_database_ratchets_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.key");
        let master = [0x17u8; 32];
        std::fs::write(&path, master).unwrap();
        let k0 = EpochKey::from_legacy(&RECORDS, &SecretKey::from_bytes(master)).unwrap();
        let k2 = k0.next().unwrap().next().unwrap();
        let ring = SecretsKeyring::open_as(&RECORDS, &path).unwrap();
        let settled = ring
            .settle(&StoredEpoch {
                epoch: 2,
                check: k2.check().to_vec(),
            })
            .unwrap();
        assert_eq!(settled.expose(), k2.expose());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[5..9], &2u32.to_be_bytes());
        assert!(!bytes.windows(32).any(|w| w == master || w == k0.expose()));
        // Another authority's master: refused, naming records.key.
        std::fs::write(&path, [0x18u8; 32]).unwrap();
        let error = SecretsKeyring::open_as(&RECORDS, &path)
            .unwrap()
            .settle(&StoredEpoch {
                epoch: 2,
                check: k2.check().to_vec(),
            })
            .unwrap_err();
        assert!(error.to_string().contains("copy records.key"), "{error}");
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
