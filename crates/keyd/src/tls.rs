//! HTTPS: the authority's own CA and server certificate, made at init,
//! and a TLS listener for [`axum::serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
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
}

/// A CA made for this authority and a server certificate it signed.
pub struct ServerCertificates {
    /// The CA certificate hosts pin (by [`ca_fingerprint`](Self::ca_fingerprint)).
    pub ca: CertificateDer<'static>,
    pub server: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

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
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
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
            vec![self.server.clone(), self.ca.clone()],
            PrivateKeyDer::Pkcs8(self.server_key.clone_key()),
        )?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// `SHA256:` and the hex SHA-256 of a DER certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let hash = atrest_core::sha256(cert.as_ref());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

/// A TCP listener whose connections have finished a TLS handshake. The
/// handshakes run in their own tasks, so a slow client holds up no one.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` (on the current tokio runtime).
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
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
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, addr)).await;
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
    type Io = TlsStream<TcpStream>;
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
    let listener = TlsListener::new(listener, certificates.acceptor()?)?;
    axum::serve(listener, router).await?;
    Ok(())
}
