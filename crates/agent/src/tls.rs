//! HTTPS to a key authority, trusting exactly one CA: the one whose
//! certificate hashes to the fingerprint pinned at enrollment.
//!
//! The authority sends its chain `[leaf, …, CA]`. [`PinnedVerifier`] looks
//! for the presented certificate whose SHA-256 is the pin and verifies the
//! leaf with rustls' WebPKI verifier against that certificate as the only
//! trust anchor (expiry, key usage, host name all checked). No system roots
//! are ever consulted, so no public CA can vouch for an impostor.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::AgentError;
use crate::state::hex;

/// `SHA256:` and 64 hex digits (either case; `:` between bytes allowed), as
/// `atrest keyd init` prints it.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], AgentError> {
    let bad = || AgentError::BadFingerprint(text.to_string());
    let digits = text
        .strip_prefix("SHA256:")
        .or_else(|| text.strip_prefix("sha256:"))
        .ok_or_else(bad)?
        .replace(':', "");
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// The fingerprint as `atrest keyd init` prints it.
pub fn format_fingerprint(fingerprint: &[u8; 32]) -> String {
    format!("SHA256:{}", hex(fingerprint))
}

/// The pinned certificate was not among those the server presented.
#[derive(Debug, thiserror::Error)]
#[error("none of the server's certificates has the pinned SHA-256 fingerprint")]
pub struct PinMismatch {
    /// The SHA-256 of each certificate the server presented, leaf first
    /// (the last is usually its CA): what an operator compares with
    /// `atrest keyd fingerprint` on the authority.
    pub presented: Vec<[u8; 32]>,
}

/// Verifies a server's chain against one pinned CA certificate.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    pub fn new(pin: [u8; 32], provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let anchor = intermediates
            .iter()
            .find(|c| atrest_core::constant_time_eq(&atrest_core::sha256(c.as_ref()), &self.pin))
            .ok_or_else(|| {
                let presented = std::iter::once(end_entity)
                    .chain(intermediates)
                    .map(|c| atrest_core::sha256(c.as_ref()))
                    .collect();
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    PinMismatch { presented },
                ))))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| Error::General(e.to_string()))?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != anchor.as_ref())
            .cloned()
            .collect();
        verifier.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTPS client that trusts only the CA with fingerprint `pin`.
pub fn pinned_client(pin: [u8; 32]) -> Result<reqwest::Client, AgentError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Invalid(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(pin, provider)))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .connect_timeout(Duration::from_secs(5))
        // Redirects could lead a host's signed requests elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| AgentError::Invalid(format!("HTTPS client setup: {e}")))
}

/// Whether `error` or anything it wraps satisfies `test`. An `io::Error`
/// hides the error it wraps from `source()` (it returns that error's own
/// source), so its inner error is visited explicitly.
fn any_cause(
    error: &(dyn std::error::Error + 'static),
    test: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if test(e) {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && any_cause(inner, test)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The pin check's failure, if `error` (or anything it wraps) is one.
pub(crate) fn pin_mismatch(error: &(dyn std::error::Error + 'static)) -> Option<PinMismatch> {
    let found = std::cell::RefCell::new(None);
    any_cause(error, &|e| {
        let mismatch =
            e.downcast_ref::<PinMismatch>()
                .or_else(|| match e.downcast_ref::<Error>() {
                    Some(Error::InvalidCertificate(CertificateError::Other(other))) => {
                        other.0.downcast_ref::<PinMismatch>()
                    }
                    _ => None,
                });
        if let Some(m) = mismatch {
            *found.borrow_mut() = Some(PinMismatch {
                presented: m.presented.clone(),
            });
        }
        mismatch.is_some()
    });
    found.into_inner()
}

/// True if `error` (or anything it wraps) is the pin check failing.
pub(crate) fn is_pin_mismatch(error: &(dyn std::error::Error + 'static)) -> bool {
    pin_mismatch(error).is_some()
}

/// True if the TLS handshake itself failed (certificate, protocol), which
/// retrying will not fix.
pub(crate) fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(error, &|e| e.is::<Error>())
}

/// `error` and its sources, joined.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fingerprints_parse_in_the_printed_form() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{hex64}")).unwrap(),
            [0xab; 32]
        );
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{colons}")).unwrap(),
            [0xab; 32]
        );
        assert_eq!(format_fingerprint(&[0xab; 32]), format!("SHA256:{hex64}"));
        for bad in [hex64.as_str(), "SHA256:ab", "SHA256:", "MD5:ab"] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
        assert!(parse_fingerprint(&format!("SHA256:{}zz", "ab".repeat(31))).is_err());
    }
}
