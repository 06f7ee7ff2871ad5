//! A minimal client of keyd's scoped-encryption API (docs/keyd-api.md,
//! "Scoped encryption"): the app's token, keyd's CA, and four calls. It
//! holds no key; keyd answers envelopes (`atrf:…`) and index values.

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// keyd refused, with its stable code (`authentication_failed`,
    /// `scope_shredded`, `not_allowed`, …).
    #[error("keyd refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot talk to keyd: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// keyd's code, if keyd refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field to seal or open: bound to scope, table, column and row.
#[derive(Serialize)]
pub struct Field<'a> {
    pub scope: &'a str,
    pub table: &'a str,
    pub column: &'a str,
    pub row: &'a str,
    /// Plaintext to seal, or the envelope to open.
    pub value: &'a str,
}

/// One blind-index value to compute.
#[derive(Serialize)]
pub struct Index<'a> {
    pub scope: &'a str,
    pub table: &'a str,
    pub index: &'a str,
    pub columns: &'a [&'a str],
    pub bits: u16,
    pub normalize: &'a [&'a str],
    pub values: Vec<&'a str>,
}

/// The app's side of keyd. Not `Debug`: it holds the app's token.
pub struct Keyd {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Keyd {
    /// `base` is `https://HOST:PORT`; `ca_pem` keyd's `tls/ca.pem`, the
    /// only root trusted.
    pub fn new(base: &str, token: &str, ca_pem: &[u8]) -> Result<Self> {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem)?])
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// Creates a scope without a client share (a service's scope); an
    /// existing one is left as it is.
    pub async fn ensure_scope(&self, scope: &str) -> Result<()> {
        match self
            .post(
                "/v1/scoped/scopes",
                &json!({ "scope": scope, "client_share": false }),
            )
            .await
        {
            Err(e) if e.code() == Some("scope_exists") => Ok(()),
            other => other.map(drop),
        }
    }

    pub async fn encrypt(&self, items: &[Field<'_>]) -> Result<Vec<String>> {
        self.values("/v1/scoped/encrypt", items).await
    }

    /// Audited by keyd before it answers.
    pub async fn decrypt(&self, items: &[Field<'_>]) -> Result<Vec<String>> {
        self.values("/v1/scoped/decrypt", items).await
    }

    pub async fn index(&self, items: &[Index<'_>]) -> Result<Vec<String>> {
        self.values("/v1/scoped/index", items).await
    }

    async fn values<T: Serialize>(&self, path: &str, items: &[T]) -> Result<Vec<String>> {
        let answer = self.post(path, &json!({ "items": items })).await?;
        serde_json::from_value(answer["values"].clone()).map_err(|e| Error::Refused {
            status: 200,
            code: "unexpected_answer".into(),
            message: e.to_string(),
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await?;
        if status != 200 {
            return Err(Error::Refused {
                status,
                code: answer["error"].as_str().unwrap_or("unknown").to_owned(),
                message: answer["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(answer)
    }
}
