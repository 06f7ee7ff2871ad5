//! One key authority's `/v1` host API over pinned HTTPS
//! (`docs/keyd-api.md`): enroll, unlock, poll, reboot, generation reports. The bodies are
//! atrest-wire's, shared with the server, so the two cannot drift.

use std::time::Duration;

use atrest_remote::{
    HostPublicKey, SignedGenerationReport, SignedRebootNotice, SignedUnlockRequest,
};
use atrest_wire::ErrorCode;
use serde::de::DeserializeOwned;

use crate::AgentError;
use crate::tls::{
    error_chain, format_fingerprint, is_pin_mismatch, is_tls_failure, pin_mismatch, pinned_client,
};

/// Largest answer read from an authority.
const MAX_ANSWER: usize = 64 * 1024;

pub use atrest_wire::{
    Enrollment as EnrollReply, GenerationReply, Rebind, RebootReply, UnlockReply,
};

/// What one short request to an authority found ([`AuthorityClient::probe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It answered over TLS that chains to the pinned CA. `audit_key`:
    /// the audit public key its `/v1/info` names, if the answer held one.
    Reachable { audit_key: Option<[u8; 32]> },
    /// Nothing answered within the timeout, or the connection failed.
    Unreachable { reason: String },
    /// Something answered with certificates none of which is the pinned
    /// CA: the authority's CA was replaced, or another server holds the
    /// address. `presented`: the SHA-256 of each certificate, leaf first.
    CaChanged { presented: Vec<[u8; 32]> },
    /// The chain holds the pinned CA but does not verify (an expired or
    /// misnamed server certificate), or the TLS handshake failed otherwise.
    TlsFailure { reason: String },
}

/// A client for one authority.
#[derive(Clone, Debug)]
pub struct AuthorityClient {
    url: String,
    pin: [u8; 32],
    http: reqwest::Client,
}

impl AuthorityClient {
    /// `url` is `https://HOST[:PORT]`; `pin` the SHA-256 of its CA's DER.
    pub fn new(url: &str, pin: [u8; 32]) -> Result<Self, AgentError> {
        let trimmed = url.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .ok_or_else(|| AgentError::BadUrl(url.to_string()))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || trimmed.len() > 255 {
            return Err(AgentError::BadUrl(url.to_string()));
        }
        Ok(Self {
            url: trimmed.to_string(),
            pin,
            http: pinned_client(pin)?,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn enroll(
        &self,
        token: &str,
        host_name: &str,
        public_key: HostPublicKey,
    ) -> Result<EnrollReply, AgentError> {
        let body = atrest_wire::EnrollRequest {
            token: token.to_owned(),
            host_name: host_name.to_owned(),
            public_key,
        };
        let request = self
            .http
            .post(format!("{}/v1/enroll", self.url))
            .json(&body);
        self.send(request, Duration::from_secs(30))
            .await
            .map(|(_, r)| r)
    }

    /// One unlock request; 200 granted or 202 pending. `known_tree_size`
    /// is the size of the audit tree head this host kept (0: none), so that
    /// a grant carries the proof that the log only grew since. Asks for
    /// the newest grant version; an older authority answers version 1.
    pub async fn unlock(
        &self,
        signed: &SignedUnlockRequest,
        known_tree_size: u64,
        timeout: Duration,
    ) -> Result<UnlockReply, AgentError> {
        let request = self
            .http
            .post(format!("{}/v1/unlock", self.url))
            .header(atrest_wire::KNOWN_TREE_SIZE_HEADER, known_tree_size)
            .header(
                atrest_wire::GRANT_VERSION_HEADER,
                atrest_wire::GRANT_VERSION,
            )
            .json(signed);
        self.send(request, timeout).await.map(|(_, r)| r)
    }

    /// Long poll of a held request: waits up to `wait` at the authority.
    /// `poll_token` is the one the held request's answer carried.
    pub async fn poll(
        &self,
        request_id: &str,
        poll_token: &str,
        known_tree_size: u64,
        wait: Duration,
    ) -> Result<UnlockReply, AgentError> {
        // The id is the authority's (base64url); anything else is refused
        // rather than spliced into a path.
        if request_id.is_empty()
            || !request_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AgentError::BadAnswer {
                url: self.url.clone(),
                reason: "a request id that is not base64url".into(),
            });
        }
        let request = self
            .http
            .get(format!(
                "{}/v1/requests/{request_id}?wait={}",
                self.url,
                wait.as_secs()
            ))
            .header(atrest_wire::POLL_TOKEN_HEADER, poll_token)
            .header(atrest_wire::KNOWN_TREE_SIZE_HEADER, known_tree_size)
            .header(
                atrest_wire::GRANT_VERSION_HEADER,
                atrest_wire::GRANT_VERSION,
            );
        self.send(request, wait + Duration::from_secs(15))
            .await
            .map(|(_, r)| r)
    }

    /// `POST /v1/bind`: an enrolled host's current exchange key, for
    /// another vault, without a token.
    pub async fn bind(
        &self,
        signed: &atrest_remote::SignedBindRequest,
    ) -> Result<EnrollReply, AgentError> {
        let request = self.http.post(format!("{}/v1/bind", self.url)).json(signed);
        self.send(request, Duration::from_secs(30))
            .await
            .map(|(_, r)| r)
    }

    pub async fn reboot(&self, signed: &SignedRebootNotice) -> Result<RebootReply, AgentError> {
        let request = self
            .http
            .post(format!("{}/v1/reboot", self.url))
            .json(signed);
        self.send(request, Duration::from_secs(30))
            .await
            .map(|(_, r)| r)
    }

    /// `POST /v1/generation`: a format 2 vault's signed generation report
    /// (docs/format.md §16.17.1), answered within `timeout`.
    pub async fn generation(
        &self,
        signed: &SignedGenerationReport,
        timeout: Duration,
    ) -> Result<GenerationReply, AgentError> {
        let request = self
            .http
            .post(format!("{}/v1/generation", self.url))
            .json(signed);
        self.send(request, timeout).await.map(|(_, r)| r)
    }

    /// `GET /v1/info` within `timeout`: whether the authority answers and
    /// presents the pinned CA, and the audit key it names. Sends nothing
    /// signed and changes nothing.
    pub async fn probe(&self, timeout: Duration) -> Probe {
        let request = self
            .http
            .get(format!("{}/v1/info", self.url))
            .timeout(timeout);
        match request.send().await {
            // Any HTTP answer came over TLS the pin checked.
            Ok(response) => Probe::Reachable {
                audit_key: read_limited(response)
                    .await
                    .ok()
                    .and_then(|body| info_audit_key(&body)),
            },
            Err(e) => {
                if let Some(mismatch) = pin_mismatch(&e) {
                    Probe::CaChanged {
                        presented: mismatch.presented,
                    }
                } else if is_tls_failure(&e) {
                    Probe::TlsFailure {
                        reason: error_chain(&e),
                    }
                } else {
                    Probe::Unreachable {
                        reason: error_chain(&e),
                    }
                }
            }
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(u16, T), AgentError> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        let bytes = read_limited(response)
            .await
            .map_err(|e| self.transport_error(&e))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map(|v| (status, v))
                .map_err(|e| AgentError::BadAnswer {
                    url: self.url.clone(),
                    reason: e.to_string(),
                });
        }
        let Ok(body) = serde_json::from_slice::<atrest_wire::ErrorBody>(&bytes) else {
            return Err(AgentError::Refused {
                url: self.url.clone(),
                status,
                code: format!("http_{status}"),
                message: "no error body".into(),
            });
        };
        let code = body.code();
        let (url, message) = (self.url.clone(), body.message);
        Err(match code {
            ErrorCode::Denied => AgentError::Denied { url, message },
            ErrorCode::Expired => AgentError::Expired { url, message },
            ErrorCode::Revoked => AgentError::Revoked { url, message },
            ErrorCode::Shredded => AgentError::Shredded { url, message },
            _ => AgentError::Refused {
                url,
                status,
                code: body.error,
                message,
            },
        })
    }

    fn transport_error(&self, error: &reqwest::Error) -> AgentError {
        let reason = error_chain(error);
        if is_pin_mismatch(error) || is_tls_failure(error) {
            return AgentError::UntrustedServer {
                url: self.url.clone(),
                pin: format_fingerprint(&self.pin),
                reason,
            };
        }
        AgentError::Unreachable {
            url: self.url.clone(),
            attempts: 1,
            reason,
        }
    }
}

/// The `audit_public_key` of a `/v1/info` answer (docs/keyd-api.md).
fn info_audit_key(body: &[u8]) -> Option<[u8; 32]> {
    serde_json::from_slice::<atrest_wire::Info>(body)
        .ok()
        .map(|info| info.audit_public_key.to_bytes())
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_ANSWER {
            out.truncate(MAX_ANSWER);
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_answer_names_an_audit_key_or_nothing() {
        let key = atrest_audit::AuditSigningKey::from_seed(&[3; 32]).public_key();
        let body = format!(r#"{{"version":"0.1.0","audit_public_key":"{key}"}}"#);
        assert_eq!(info_audit_key(body.as_bytes()), Some(key.to_bytes()));
        for bad in [
            &b"not json"[..],
            br#"{"version":"0.1.0"}"#,
            br#"{"version":"0.1.0","audit_public_key":"AAAA"}"#,
            // The identity point: small-order, never a signing key.
            br#"{"version":"0.1.0","audit_public_key":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        ] {
            assert_eq!(info_audit_key(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
