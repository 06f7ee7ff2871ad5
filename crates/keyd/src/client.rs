//! The admin client `atrest keyd token|host|policy|approve|...` uses, with
//! the admin bearer token: on the authority's own machine over its admin
//! socket ([`AdminClient::for_data_dir`], see `crate::socket`), elsewhere
//! over HTTPS trusting only its CA ([`AdminClient::new`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use crate::datadir::{DataDir, DataDirError};
use crate::http::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach keyd at {url}: {reason}; {hint}")]
    Unreachable {
        url: String,
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// The authority refused, with its stable code.
    #[error("keyd refused ({code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("keyd sent an answer this atrest does not understand: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{0}")]
    Setup(String),
}

/// The whole exchange, connection to last byte.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct AdminClient {
    transport: Transport,
    token: Zeroizing<String>,
}

enum Transport {
    /// The local admin socket of a keyd on this machine.
    Socket(PathBuf),
    /// A keyd at `base` (`https://host:port`), trusted by its CA.
    Https { base: String, http: reqwest::Client },
}

impl AdminClient {
    /// For the keyd serving `dir` on this machine: its admin socket
    /// (whatever names its certificate carries) and admin token.
    pub fn for_data_dir(dir: &DataDir) -> Result<Self, ClientError> {
        Ok(Self::unix(dir.admin_socket()?, dir.admin_token()?))
    }

    /// Over the admin socket at `path`.
    pub fn unix(path: PathBuf, token: Zeroizing<String>) -> Self {
        Self {
            transport: Transport::Socket(path),
            token,
        }
    }

    /// For a keyd at `base` (`https://host:port`) whose CA is in `ca_file`.
    pub fn new(base: &str, ca_file: &Path, token: Zeroizing<String>) -> Result<Self, ClientError> {
        let pem = std::fs::read(ca_file)
            .map_err(|e| ClientError::Setup(format!("{}: {e}", ca_file.display())))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| ClientError::Setup(format!("{}: {e}", ca_file.display())))?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .connect_timeout(Duration::from_secs(5))
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self {
            transport: Transport::Https {
                base: base.trim_end_matches('/').to_owned(),
                http,
            },
            token,
        })
    }

    /// `https://host:port`, or `unix:PATH` for the admin socket.
    pub fn base(&self) -> String {
        match &self.transport {
            Transport::Socket(path) => format!("unix:{}", path.display()),
            Transport::Https { base, .. } => base.clone(),
        }
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let (status, bytes) = match &self.transport {
            Transport::Socket(socket) => self.send_socket(socket, method, path, body).await?,
            Transport::Https { base, http } => {
                let mut request = http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(self.token.as_str());
                if let Some(body) = body {
                    request = request
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let unreachable = |e: reqwest::Error| ClientError::Unreachable {
                    url: base.clone(),
                    reason: error_chain(&e),
                    hint: "check that keyd is running there and that its certificate names \
                           that host"
                        .into(),
                };
                let response = request.send().await.map_err(unreachable)?;
                let status = response.status();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
                (status, bytes)
            }
        };
        if !status.is_success() {
            let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
                ClientError::BadAnswer(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ))
            })?;
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: body.error,
                message: body.message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// One HTTP/1 request on a new connection to the admin socket.
    async fn send_socket(
        &self,
        socket: &Path,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let unreachable = |reason: String, hint: &str| ClientError::Unreachable {
            url: format!("unix:{}", socket.display()),
            reason,
            hint: hint.to_owned(),
        };
        let not_serving = "start keyd (`atrest keyd serve --data-dir DIR`); the admin socket \
                           exists while it serves";
        let exchange = async {
            let stream = UnixStream::connect(socket).await.map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        "run this as the user keyd runs as, or as root (the socket is mode 0600)"
                    }
                    _ => not_serving,
                };
                unreachable(e.to_string(), hint)
            })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(error_chain(&e), not_serving))?;
            tokio::spawn(connection);
            let request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, "localhost")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", self.token.as_str()),
                );
            let request = match body {
                Some(body) => request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body))),
                None => request.body(Full::new(Bytes::new())),
            }
            .map_err(|e| ClientError::Setup(e.to_string()))?;
            let response = sender.send_request(request).await.map_err(|e| {
                // keyd closes connections from users other than its own
                // and root before answering.
                unreachable(
                    error_chain(&e),
                    "keyd answers only its own user and root here; run this as one of them",
                )
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::BadAnswer(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
            unreachable(
                format!("no answer within {} s", TIMEOUT.as_secs()),
                "check keyd's log (journalctl -u atrest-keyd)",
            )
        })?
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send::<(), T>(Method::DELETE, path, None).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::PUT, path, Some(body)).await
    }
}

/// "error sending request: connection refused", not just the outer layer.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let s = inner.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = inner.source();
    }
    text
}
