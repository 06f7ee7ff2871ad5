//! A keyd's data directory: what `atrest keyd init` writes and
//! `atrest keyd serve` reads.
//!
//! ```text
//! DATA_DIR/            0700
//!   keyd.json          settings (listen address, names, timeouts, webhook)
//!   admin.token        0600  bearer token of the admin API
//!   audit.key          0600  Ed25519 seed that signs audit checkpoints
//!   records.key        0600  the key scope bucket keys are wrapped under
//!                            (every scope key is wrapped under its
//!                            bucket's), at the database's records epoch:
//!                            each scope shred replaces it with the next
//!                            (decision 0020); not backed up with the
//!                            database
//!   secrets.key        0600  the key host secrets are wrapped under, at
//!                            the database's epoch: each shred replaces it
//!                            with the next (decision 0018); not backed up
//!                            with the database
//!   tls/ca.pem               the CA hosts pin (its fingerprint)
//!   tls/server.pem           server certificate (+ intermediates)
//!   tls/server.key     0600  its private key
//!   keyd.db                  hosts, secrets, tokens, policies (SQLite)
//!   audit.db                 the hash-chained audit log (SQLite)
//!   keyd.lock                held by the one keyd serving this directory
//!   admin.sock         0600  the admin API for the CLI on this machine,
//!                            while keyd serves (keyd.json can move it)
//! ```
//!
//! With `--database postgres://…` (kept in keyd.json) the two databases
//! are tables of one PostgreSQL database instead, and several replicas,
//! each with a copy of this directory, serve one authority.

use std::fs::File;
use std::future::IntoFuture;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atrest_audit::{
    AuditLog, AuditSigningKey, AuditStore, EntryKind, LogOptions, NewEntry, SystemClock,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::authority::{Authority, AuthorityOptions};
use crate::events::AuditEvent;
use crate::secrets_key::{SecretsKeyError, StoreKeys};
use crate::storage::{Database, DatabaseError, KeydAuditStore, KeydStorage, PolicyRule};
use crate::tls::ServerCertificates;

/// The authority as `atrest keyd serve` runs it, on SQLite or PostgreSQL.
pub type KeydAuthority = Authority<KeydStorage, KeydAuditStore, SystemClock>;

/// `keyd.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Format version of this file.
    pub version: u32,
    /// `ADDRESS:PORT` to serve HTTPS on.
    pub listen: String,
    /// Names and addresses in the generated server certificate.
    pub names: Vec<String>,
    /// Seconds a held request waits for an approver (then denied).
    pub approval_timeout: u64,
    /// Seconds after `atrest reboot --planned` that a new boot is accounted for.
    pub planned_reboot_window: u64,
    /// Largest clock difference accepted from a host, in seconds.
    pub max_skew: u64,
    /// POSTed a JSON notice when a request is held.
    #[serde(default)]
    pub webhook: Option<String>,
    /// How approvers reach this keyd (`https://keys.example:7443`), for the
    /// link in the webhook notice.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The admin socket, if not `DATA_DIR/admin.sock` (a path under /run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
    /// Where hosts, secrets and the audit log are (`postgres://…` or
    /// `sqlite:DIR`, never with a password); absent: SQLite files in the
    /// data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// File streams one app may have open at once (absent:
    /// [`crate::DEFAULT_FILE_STREAMS_PER_APP`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_streams_per_app: Option<usize>,
}

pub const SETTINGS_VERSION: u32 = 1;

impl Default for Settings {
    fn default() -> Self {
        Self {
            version: SETTINGS_VERSION,
            listen: "127.0.0.1:7443".into(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            approval_timeout: 600,
            planned_reboot_window: 3600,
            max_skew: 300,
            webhook: None,
            public_url: None,
            admin_socket: None,
            database: None,
            max_file_streams_per_app: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "{0} is not a keyd data directory (no keyd.json); run `atrest keyd init --data-dir {0}` first"
    )]
    NotInitialized(PathBuf),
    #[error("{0} already holds a keyd (keyd.json exists); pick an empty directory")]
    AlreadyInitialized(PathBuf),
    #[error(
        "another keyd is serving {0} (keyd.lock is held); stop it first, or use another data dir"
    )]
    Busy(PathBuf),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(
        "{database} already holds a key authority ({entries} audit entries): a replica does not \
         run init; copy the first replica's data directory (keyd.json, audit.key, records.key, \
         secrets.key, admin.token, tls/) to this machine and run `atrest keyd serve` there"
    )]
    DatabaseInUse { database: String, entries: u64 },
    #[error(
        "{0} holds no key authority (its audit log is empty): check --database (or keyd.json's \
         database), or make one with `atrest keyd init --database URL`"
    )]
    NoAuthority(String),
    #[error("audit log: {0}")]
    AuditStore(#[from] atrest_audit::StoreError),
    #[error("audit log: {0}")]
    AuditOpen(#[from] atrest_audit::OpenError),
    #[error(transparent)]
    Authority(#[from] crate::authority::AuthorityError),
    #[error(transparent)]
    SecretsKey(#[from] SecretsKeyError),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> DataDirError {
    DataDirError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// How to set up a new data directory.
#[derive(Debug, Default)]
pub struct InitOptions {
    pub settings: Settings,
    /// An operator's `(chain, key, ca)` PEM files instead of a generated CA.
    pub certificates: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// The default rule written as the `default` policy.
    pub default_rule: PolicyRule,
    /// Where the databases go (kept in keyd.json); `None`: SQLite files
    /// in the data directory.
    pub database: Option<Database>,
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialized {
    pub ca_fingerprint: String,
    pub admin_token_file: PathBuf,
}

pub struct DataDir {
    path: PathBuf,
    /// `--database`, over keyd.json's.
    database: Option<Database>,
    _lock: Option<File>,
}

impl DataDir {
    pub const SETTINGS: &'static str = "keyd.json";
    pub const ADMIN_TOKEN: &'static str = "admin.token";
    pub const AUDIT_KEY: &'static str = "audit.key";
    pub const RECORDS_KEY: &'static str = "records.key";
    pub const SECRETS_KEY: &'static str = "secrets.key";
    pub const TLS_DIR: &'static str = "tls";
    pub const STATE_DB: &'static str = "keyd.db";
    pub const AUDIT_DB: &'static str = "audit.db";
    pub const LOCK: &'static str = "keyd.lock";

    /// A data directory made by `init`, for reading (not locked).
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        if !path.join(Self::SETTINGS).exists() {
            return Err(DataDirError::NotInitialized(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
            database: None,
            _lock: None,
        })
    }

    /// Uses `database` (`--database`) instead of the one keyd.json names.
    #[must_use]
    pub fn with_database(mut self, database: Option<Database>) -> Self {
        if database.is_some() {
            self.database = database;
        }
        self
    }

    /// Where this keyd's databases are: `--database`, else keyd.json's,
    /// else SQLite files in the directory.
    pub fn database(&self) -> Result<Database, DataDirError> {
        if let Some(database) = &self.database {
            return Ok(database.clone());
        }
        Ok(match self.settings()?.database {
            Some(url) => url.parse()?,
            None => Database::in_data_dir(&self.path),
        })
    }

    /// Opens and takes the directory's lock: one keyd per data directory
    /// (its admin socket; on SQLite, the audit chain's one writer).
    pub fn open_exclusive(path: &Path) -> Result<Self, DataDirError> {
        let mut dir = Self::open(path)?;
        let lock_path = path.join(Self::LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| file_error(&lock_path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| DataDirError::Busy(path.to_owned()))?;
        dir._lock = Some(file);
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates keys, certificates and databases in `path` (created 0700 if
    /// absent; must not already hold a keyd).
    pub async fn init(path: &Path, options: InitOptions) -> Result<Initialized, DataDirError> {
        if path.join(Self::SETTINGS).exists() {
            return Err(DataDirError::AlreadyInitialized(path.to_owned()));
        }
        let database = options
            .database
            .clone()
            .unwrap_or_else(|| Database::in_data_dir(path));
        if database.has_password() {
            return Err(DatabaseError::PasswordInUrl(database.to_string()).into());
        }
        if database.is_shared() {
            // Refused before anything is written: a second init on a
            // shared database would sign its entries with another key.
            // (The state store first: it gives up on an unreachable
            // server sooner; as a probe, it writes no secrets epoch.)
            database.open_storage(StoreKeys::probe()).await?;
            let entries = database.open_audit().await?.head().await?.seq;
            if entries > 0 {
                return Err(DataDirError::DatabaseInUse {
                    database: database.to_string(),
                    entries,
                });
            }
        }
        // Checked before anything is written, so a bad --cert leaves nothing.
        let certificates = match &options.certificates {
            Some((chain, key, ca)) => {
                ServerCertificates::from_pem_files(chain, key, ca.as_deref())?
            }
            None => ServerCertificates::generate(&options.settings.names)?,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| file_error(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| file_error(path, e))?;
        let tls = path.join(Self::TLS_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tls)
            .map_err(|e| file_error(&tls, e))?;
        certificates.save(&tls)?;
        let signing = AuditSigningKey::generate();
        write_secret(&path.join(Self::AUDIT_KEY), &signing.expose_seed()[..])?;
        let token = Zeroizing::new(atrest_remote::to_base64url(
            &atrest_core::random_array::<32>(),
        ));
        write_secret(
            &path.join(Self::ADMIN_TOKEN),
            format!("{}\n", token.as_str()).as_bytes(),
        )?;
        // The databases and the first entries: who made this authority and
        // its default policy are the start of the chain.
        let authority = Self::authority_at(
            &database,
            signing,
            Self::store_keys(path)?,
            AuthorityOptions {
                scoped: true,
                ..AuthorityOptions::default()
            },
        )
        .await?;
        authority
            .audit()
            .append(
                NewEntry::new(EntryKind::Authority, "init")
                    .details(AuditEvent::initialized(certificates.ca_fingerprint()).details()),
            )
            .await
            .map_err(crate::authority::AuthorityError::from)?;
        authority
            .set_policy(
                &crate::storage::PolicyScope::Default,
                options.default_rule,
                "init",
            )
            .await?;
        // Settings last: their presence marks a complete data directory.
        let settings = Settings {
            database: options.database.as_ref().map(ToString::to_string),
            ..options.settings
        };
        let settings_path = path.join(Self::SETTINGS);
        let text =
            serde_json::to_string_pretty(&settings).map_err(|e| file_error(&settings_path, e))?;
        write_file(&settings_path, format!("{text}\n").as_bytes(), 0o644)?;
        Ok(Initialized {
            ca_fingerprint: certificates.ca_fingerprint(),
            admin_token_file: path.join(Self::ADMIN_TOKEN),
        })
    }

    pub fn settings(&self) -> Result<Settings, DataDirError> {
        let path = self.path.join(Self::SETTINGS);
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
        let settings: Settings = serde_json::from_str(&text).map_err(|e| file_error(&path, e))?;
        if settings.version != SETTINGS_VERSION {
            return Err(file_error(
                &path,
                format!(
                    "settings version {} is not {SETTINGS_VERSION}; use the atrest that wrote it",
                    settings.version
                ),
            ));
        }
        Ok(settings)
    }

    pub fn admin_token(&self) -> Result<Zeroizing<String>, DataDirError> {
        let path = self.path.join(Self::ADMIN_TOKEN);
        let text =
            Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?);
        Ok(Zeroizing::new(text.trim().to_owned()))
    }

    pub fn certificates(&self) -> Result<ServerCertificates, DataDirError> {
        Ok(ServerCertificates::load(&self.path.join(Self::TLS_DIR))?)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.path.join(Self::TLS_DIR).join(crate::tls::CA_FILE)
    }

    /// Where `serve` puts the admin socket and the CLI looks for it.
    pub fn admin_socket(&self) -> Result<PathBuf, DataDirError> {
        Ok(self
            .settings()?
            .admin_socket
            .unwrap_or_else(|| self.path.join(crate::socket::ADMIN_SOCKET)))
    }

    fn signing_key(path: &Path) -> Result<AuditSigningKey, DataDirError> {
        let key_path = path.join(Self::AUDIT_KEY);
        check_private(&key_path)?;
        let bytes = Zeroizing::new(std::fs::read(&key_path).map_err(|e| file_error(&key_path, e))?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| file_error(&key_path, "an audit key is 32 bytes"))?,
        );
        Ok(AuditSigningKey::from_seed(&seed))
    }

    /// `secrets.key` and `records.key`, each read if it exists (made by
    /// the store when the database has no epoch of its own yet: at init, or
    /// the first start of a directory from before the keys were wrapped
    /// under an epoch key). A `records.key` of before decision 0020 (the
    /// bare 32-byte master) is read as its epoch 0, and replaced at the
    /// first scope shred.
    fn store_keys(path: &Path) -> Result<StoreKeys, DataDirError> {
        for name in [Self::SECRETS_KEY, Self::RECORDS_KEY] {
            let key_path = path.join(name);
            if key_path.exists() {
                check_private(&key_path)?;
            }
        }
        Ok(StoreKeys::open(path)?)
    }

    /// The audit store, for reading (`audit verify`, `audit tail`).
    pub async fn audit_store(&self) -> Result<KeydAuditStore, DataDirError> {
        Ok(self.database()?.open_audit().await?)
    }

    /// The public key that checkpoints verify under.
    pub fn audit_public_key(&self) -> Result<atrest_audit::AuditPublicKey, DataDirError> {
        Ok(Self::signing_key(&self.path)?.public_key())
    }

    async fn authority_at(
        database: &Database,
        signing: AuditSigningKey,
        keys: StoreKeys,
        options: AuthorityOptions,
    ) -> Result<KeydAuthority, DataDirError> {
        // The state store first: it gives up on an unreachable server sooner.
        let storage = database.open_storage(keys).await?;
        let store = database.open_audit().await?;
        // Every batch gets a signed tree head, which hosts check. Format-1
        // checkpoints are only for hosts from before tree heads: they are
        // sent the latest one (never older than one they kept), so one per
        // 1,000 entries is enough and saves a signature per batch.
        let audit = AuditLog::open(store, signing, LogOptions::default(), SystemClock).await?;
        Ok(Authority::open(storage, audit, SystemClock, options).await?)
    }

    /// The running authority over this directory's databases. A database
    /// with no audit entry was never initialized (an empty database, a
    /// typo in its name): refused, rather than served with no policies.
    pub async fn authority(
        &self,
        options: AuthorityOptions,
    ) -> Result<KeydAuthority, DataDirError> {
        let signing = Self::signing_key(&self.path)?;
        let database = self.database()?;
        let options = AuthorityOptions {
            scoped: true,
            ..options
        };
        if database.is_shared() {
            // Checked before the secrets key meets the database: an empty
            // database (a typo in its name) is not a backup from before
            // the secrets were wrapped. (The state store as a probe first:
            // it gives up on an unreachable server sooner.)
            database.open_storage(StoreKeys::probe()).await?;
            if database.open_audit().await?.head().await?.seq == 0 {
                return Err(DataDirError::NoAuthority(database.to_string()));
            }
        }
        let authority =
            Self::authority_at(&database, signing, Self::store_keys(&self.path)?, options).await?;
        if authority.audit().head().seq == 0 {
            return Err(DataDirError::NoAuthority(database.to_string()));
        }
        Ok(authority)
    }
}

/// Refuses a key file others can read.
fn check_private(path: &Path) -> Result<(), DataDirError> {
    let meta = std::fs::metadata(path).map_err(|e| file_error(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(file_error(
            path,
            format!(
                "is readable by others (mode {:o}); run `chmod 600 {}`",
                meta.permissions().mode() & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

fn write_secret(path: &Path, data: &[u8]) -> Result<(), DataDirError> {
    write_file(path, data, 0o600)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), DataDirError> {
    crate::tls::write_new_file(path, data, mode).map_err(|e| file_error(path, e))
}

/// Serves the authority of `dir` over HTTPS, and to this machine's admin
/// CLI on [`DataDir::admin_socket`], until `shutdown` resolves, then writes
/// what is still in memory (boot states). `on_listening` gets the bound
/// address (for `--listen 127.0.0.1:0`).
pub async fn serve(
    dir: &DataDir,
    listen: Option<&str>,
    options: AuthorityOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(std::net::SocketAddr, &str),
) -> Result<(), DataDirError> {
    let settings = dir.settings()?;
    let certificates = dir.certificates()?;
    let token = dir.admin_token()?;
    let authority = dir.authority(options).await?;
    let address = listen.unwrap_or(&settings.listen);
    let listener = bind_listener(address)
        .await
        .map_err(|e| file_error(Path::new(address), format!("cannot listen there: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| file_error(Path::new(address), e))?;
    let socket_path = dir.admin_socket()?;
    let socket = crate::socket::AdminSocket::bind(&socket_path).map_err(|e| {
        file_error(
            &socket_path,
            format!("cannot serve the admin socket there: {e}"),
        )
    })?;
    tracing::info!(socket = %socket_path.display(), "admin API for this machine's CLI");
    authority
        .audit()
        .append(
            NewEntry::new(EntryKind::Authority, "keyd")
                .details(AuditEvent::started(local.to_string()).details()),
        )
        .await
        .map_err(crate::authority::AuthorityError::from)?;
    on_listening(local, &certificates.ca_fingerprint());
    let router = crate::http::router(authority.clone(), Some(token.as_str()));
    drop(token);
    // One shutdown for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let local_admin = tokio::spawn(
        axum::serve(socket, router.clone().into_make_service())
            .with_graceful_shutdown(until_stopped(stopped.clone()))
            .into_future(),
    );
    let served =
        crate::tls::serve_tls_until(listener, &certificates, router, until_stopped(stopped)).await;
    if served.is_err() {
        local_admin.abort();
    }
    // Its requests in flight finish; its file goes with it.
    let _ = local_admin.await;
    stopper.abort();
    authority.flush_boots().await?;
    served?;
    Ok(())
}

/// Connections the kernel queues before keyd accepts them: a fleet booting
/// at once arrives in one burst (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default).
pub const LISTEN_BACKLOG: u32 = 8192;

async fn bind_listener(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        )
    }))
}
