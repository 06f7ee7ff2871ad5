//! The pending-request webhook: when a request starts waiting for an
//! approver, keyd POSTs
//! `{"event":"unlock_pending","request":PendingView,"approve_url":URL}` to
//! a URL the operator chose, so a chat bot or pager can tell the approvers.
//!
//! ```no_run
//! # fn main() -> Result<(), atrest_keyd::WebhookError> {
//! let options = atrest_keyd::AuthorityOptions {
//!     on_pending: Some(atrest_keyd::webhook_notifier(
//!         "https://chat.example/hooks/T0123".into(),
//!         Some("https://keyd.example:8443".into()),
//!     )?),
//!     ..Default::default()
//! };
//! # Ok(()) }
//! ```
//!
//! Delivery never holds up the request: each notification is its own task
//! with a [`TIMEOUT`] per attempt and up to [`ATTEMPTS`] attempts. The URL
//! is never logged (chat webhook URLs carry their own secret).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::authority::PendingNotifier;
use crate::held::PendingView;

/// Per attempt, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Tries per notification; waits 1 s, then 2 s, between them.
pub const ATTEMPTS: u32 = 3;

/// Deliveries in flight at once; more wait their turn.
const IN_FLIGHT: usize = 16;

/// Why the webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook URL {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("the webhook's HTTPS client could not start: {0}")]
    Client(#[source] reqwest::Error),
}

/// A [`PendingNotifier`] that POSTs each held request to `url`.
/// `public_url` is where approvers reach keyd (e.g.
/// `https://keyd.example:8443`); the payload's `approve_url` is its
/// `/approve` page, or null without one.
pub fn webhook_notifier(
    url: String,
    public_url: Option<String>,
) -> Result<PendingNotifier, WebhookError> {
    let target = reqwest::Url::parse(&url).map_err(|_| WebhookError::BadUrl(redact(&url)))?;
    if !matches!(target.scheme(), "http" | "https") || target.host().is_none() {
        return Err(WebhookError::BadUrl(redact(&url)));
    }
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        // A redirect would turn the POST into a GET or send it elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(WebhookError::Client)?;
    let approve_url = public_url.map(|base| format!("{}/approve", base.trim_end_matches('/')));
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    Ok(Arc::new(move |view: &PendingView| {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(host = %view.host_id, "no runtime to send the pending webhook on");
            return;
        };
        let body = json!({
            "event": "unlock_pending",
            "request": view,
            "approve_url": approve_url,
        });
        let client = client.clone();
        let target = target.clone();
        let limit = limit.clone();
        let host = view.host_id.clone();
        runtime.spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return;
            };
            deliver(&client, target, &body, &host).await;
        });
    }))
}

/// Only the scheme and host of a URL that may hold a secret in its path.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => "(unparsable)".into(),
    }
}

async fn deliver(
    client: &reqwest::Client,
    target: reqwest::Url,
    body: &serde_json::Value,
    host: &atrest_remote::HostId,
) {
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match client.post(target.clone()).json(body).send().await {
            Ok(reply) if reply.status().is_success() => {
                tracing::debug!(%host, attempt, "pending webhook delivered");
                return;
            }
            Ok(reply) if reply.status().is_client_error() => {
                // The receiver refuses this payload; asking again won't help.
                tracing::warn!(%host, status = %reply.status(), "the pending webhook was refused");
                return;
            }
            Ok(reply) => {
                tracing::warn!(%host, attempt, status = %reply.status(), "pending webhook failed");
            }
            Err(e) => {
                tracing::warn!(%host, attempt, error = %e.without_url(), "pending webhook failed");
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    tracing::error!(%host, "gave up on the pending webhook after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_without_echoing_their_path() {
        for url in ["ftp://x/secret", "not a url", "unix:/secret"] {
            let Err(WebhookError::BadUrl(shown)) = webhook_notifier(url.into(), None) else {
                panic!("{url} accepted");
            };
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}
