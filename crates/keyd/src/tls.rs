//! HTTPS: the authority's own CA and server certificate, made at init,
//! and a TLS listener for [`axum::serve`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake that takes longer than this is dropped (slow clients).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not make the authority's certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("bad TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// A CA made for this authority and a server certificate it signed (or
/// certificates an operator gave).
pub struct ServerCertificates {
    /// The CA certificate hosts pin (by [`ca_fingerprint`](Self::ca_fingerprint)).
    pub ca: CertificateDer<'static>,
    pub server: CertificateDer<'static>,
    /// Intermediates between `server` and `ca`, if any.
    pub intermediates: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

/// File names inside the TLS directory of a data dir.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "server.pem";
pub const KEY_FILE: &str = "server.key";

impl std::fmt::Debug for ServerCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificates")
            .field("ca_fingerprint", &self.ca_fingerprint())
            .field("server_key", &"[redacted]")
            .finish()
    }
}

impl ServerCertificates {
    /// Makes a CA and a server certificate for `names` (DNS names or IP
    /// addresses). The CA's key is not kept: it signs this one certificate.
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "atrest keyd CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "atrest keyd");
        let server = params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca: ca.der().clone(),
            server: server.der().clone(),
            intermediates: Vec::new(),
            server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        })
    }

    /// Reads an operator's certificates: `chain` is the server certificate
    /// then any intermediates (PEM), `key` its private key (PEM), `ca` the
    /// root hosts pin (PEM; the last certificate of `chain` when absent).
    pub fn from_pem_files(chain: &Path, key: &Path, ca: Option<&Path>) -> Result<Self, TlsError> {
        let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_error(path, &e.to_string()))?;
            if certs.is_empty() {
                return Err(file_error(path, "holds no PEM certificate"));
            }
            Ok(certs)
        };
        let mut certs = read_certs(chain)?;
        let server = certs.remove(0);
        let ca = match ca {
            Some(path) => read_certs(path)?.remove(0),
            None => certs.pop().ok_or_else(|| {
                file_error(chain, "give the CA with --ca, or append it to the chain")
            })?,
        };
        let server_key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| file_error(key, &format!("not a PEM private key: {e}")))?;
        let certificates = Self {
            ca,
            server,
            intermediates: certs,
            server_key,
        };
        // Fail now rather than at the first handshake.
        certificates.acceptor()?;
        Ok(certificates)
    }

    /// Writes `ca.pem`, `server.pem` (server and intermediates) and
    /// `server.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let pem_of = |ders: &[&CertificateDer<'_>]| -> String {
            ders.iter()
                .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.as_ref().to_vec())))
                .collect()
        };
        let mut chain = vec![&self.server];
        chain.extend(self.intermediates.iter());
        write_file(&dir.join(CA_FILE), pem_of(&[&self.ca]).as_bytes(), 0o644)?;
        write_file(&dir.join(CERT_FILE), pem_of(&chain).as_bytes(), 0o644)?;
        let tag = match &self.server_key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        let key = zeroize::Zeroizing::new(pem::encode(&pem::Pem::new(
            tag,
            self.server_key.secret_der().to_vec(),
        )));
        write_file(&dir.join(KEY_FILE), key.as_bytes(), 0o600)?;
        Ok(())
    }

    /// Reads what [`save`](Self::save) wrote.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        Self::from_pem_files(
            &dir.join(CERT_FILE),
            &dir.join(KEY_FILE),
            Some(&dir.join(CA_FILE)),
        )
    }

    /// `SHA256:` and the CA certificate's hash in hex, as hosts are told.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca)
    }

    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            std::iter::once(self.server.clone())
                .chain(self.intermediates.iter().cloned())
                .chain(std::iter::once(self.ca.clone()))
                .collect(),
            self.server_key.clone_key(),
        )?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn file_error(path: &Path, message: &str) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_owned(),
    }
}

/// Creates `path` with `mode` (never more open, whatever the umask).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    write_new_file(path, data, mode).map_err(|e| file_error(path, &e.to_string()))
}

/// Writes a file that must not exist yet, with `mode` (never more open,
/// whatever the umask), and syncs it: every file of a data directory.
pub(crate) fn write_new_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(data).and_then(|()| file.sync_all())
}

/// `SHA256:` and the hex SHA-256 of a DER certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let hash = atrest_core::sha256(cert.as_ref());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

/// Connections open at once; past this, new ones wait in the kernel's
/// backlog. A fleet booting at once (10,000 hosts) fits.
pub const MAX_CONNECTIONS: usize = 16_384;

/// A connection that neither sends nor receives for this long is closed
/// (a client that never sends its headers; longer than the longest poll).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An accepted connection: TLS, an idle timeout, and its place among the
/// [`MAX_CONNECTIONS`].
pub struct Connection {
    stream: std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<TlsStream<TcpStream>>>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_shutdown(cx)
    }
}

/// A TCP listener whose connections have finished a TLS handshake. The
/// handshakes run in their own tasks, so a slow client holds up no one.
pub struct TlsListener {
    accepted: mpsc::Receiver<(Connection, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` (on the current tokio runtime).
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(256);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                // At the cap, stop accepting until a connection closes.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: wait, then retry.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                // Answers are written as several TLS records; without this,
                // Nagle's algorithm meets the client's delayed ACK and a
                // request waits 40 ms.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
                }
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let mut stream = tokio_io_timeout::TimeoutStream::new(tls);
                            stream.set_read_timeout(Some(IDLE_TIMEOUT));
                            stream.set_write_timeout(Some(IDLE_TIMEOUT));
                            let connection = Connection {
                                stream: Box::pin(stream),
                                _slot: slot,
                            };
                            let _ = sender.send((connection, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            accepted,
            local_addr,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(pair) => pair,
            // The accept task only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Serves `router` over HTTPS on `listener`.
pub async fn serve_tls(
    listener: TcpListener,
    certificates: &ServerCertificates,
    router: axum::Router,
) -> Result<(), TlsError> {
    serve_tls_until(listener, certificates, router, std::future::pending()).await
}

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve_tls_until(
    listener: TcpListener,
    certificates: &ServerCertificates,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), TlsError> {
    let listener = TlsListener::new(listener, certificates.acceptor()?)?;
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// The client's address, as `ConnectInfo` for both listeners.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}
