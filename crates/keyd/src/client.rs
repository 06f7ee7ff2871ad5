//! The admin client `atrest keyd token|host|policy|approve|...` uses: HTTPS
//! to a running keyd, trusting only its CA, with the admin bearer token.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::datadir::{DataDir, DataDirError};
use crate::http::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach keyd at {url}: {reason}; is it running? (`atrest keyd serve --data-dir DIR`)"
    )]
    Unreachable { url: String, reason: String },
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

pub struct AdminClient {
    base: String,
    token: Zeroizing<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// For the keyd serving `dir` on this machine: its listen address, CA
    /// and admin token.
    pub fn for_data_dir(dir: &DataDir) -> Result<Self, ClientError> {
        let settings = dir.settings()?;
        let host = match settings.listen.rsplit_once(':') {
            Some(("0.0.0.0" | "[::]", port)) => format!("127.0.0.1:{port}"),
            _ => settings.listen.clone(),
        };
        Self::new(
            &format!("https://{host}"),
            &dir.ca_file(),
            dir.admin_token()?,
        )
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
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .bearer_auth(self.token.as_str())
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
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
