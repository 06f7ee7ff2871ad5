//! A real keyd on 127.0.0.1:0 and hosts that talk to it over HTTP, shared
//! by the contract tests (`openapi.rs`) and the hostile-input tests
//! (`bad_input.rs`).

#![allow(dead_code, clippy::unwrap_used)]

use atrest_audit::{AuditStore, LogOptions};
use atrest_keyd::testing::{Served, TestKeyd};
use atrest_keyd::{AuthorityOptions, Clock, EnrollBody, Enrollment, SystemClock};
use atrest_remote::{
    BootId, HostIdentity, RebootNotice, RemoteBinding, RequestNonce, SignedRebootNotice,
    SignedUnlockRequest, UnblindingState, UnlockRequest,
};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const BOOT_ID: &str = "6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10";

pub type TestAuthority = atrest_keyd::testing::TestAuthority<SystemClock>;

/// A keyd serving plain HTTP on a loopback port, with the admin API on,
/// on the real clock (the hosts here sign with it).
pub struct Server {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub authority: TestAuthority,
    pub client: reqwest::Client,
    _served: Served,
    _keyd: TestKeyd<SystemClock>,
}

/// An answer: its status, content type and body (JSON when it parses).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        Self::read_bytes(response).await.0
    }

    /// [`Reply::read`], keeping the body's bytes too (a binary answer:
    /// `text` is then its lossy UTF-8).
    pub async fn read_bytes(response: reqwest::Response) -> (Self, Vec<u8>) {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.unwrap().to_vec();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = Self {
            status,
            content_type,
            text,
            json,
        };
        (reply, bytes)
    }

    /// The stable error code, if this is an error body.
    pub fn code(&self) -> Option<&str> {
        self.json.get("error")?.as_str()
    }

    /// A refusal: exactly `status` and `code`, and nothing that could carry
    /// a key.
    pub fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, Some(code)),
            "expected {status} {code}, got {} {}",
            self.status,
            self.text
        );
        assert!(
            self.json.get("message").is_some_and(Value::is_string),
            "{}",
            self.text
        );
        assert!(self.json.get("response").is_none(), "{}", self.text);
        assert!(!self.text.contains("granted"), "{}", self.text);
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(AuthorityOptions {
            // Tests count refusal entries one by one.
            refusal_entries_per_second: 100_000,
            ..AuthorityOptions::default()
        })
        .await
    }

    pub async fn start_with(options: AuthorityOptions) -> Self {
        let keyd = TestKeyd::open(
            SystemClock,
            options,
            // A checkpoint with every batch, so every grant carries one.
            LogOptions {
                checkpoint_every: 1,
                ..LogOptions::default()
            },
        )
        .await;
        let served = keyd.serve(Some(ADMIN_TOKEN)).await;
        Self {
            base: served.base.clone(),
            addr: served.addr,
            authority: keyd.authority.clone(),
            client: reqwest::Client::new(),
            _served: served,
            _keyd: keyd,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::read(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> Reply {
        Reply::read(
            self.client
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Posts raw bytes as `application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        Reply::read(
            self.client
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// An admin call with the right token.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        Reply::read(request.send().await.unwrap()).await
    }

    /// Enrolls `name` in group `web` over HTTP.
    pub async fn enroll(&self, name: &str) -> Host {
        let token = self
            .authority
            .create_token("web", 600, "test")
            .await
            .unwrap();
        let identity = HostIdentity::generate();
        let reply = self
            .post(
                "/v1/enroll",
                &EnrollBody {
                    token: token.token,
                    host_name: name.into(),
                    public_key: identity.public_key(),
                },
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let enrollment: Enrollment = serde_json::from_value(reply.json).unwrap();
        let (binding, key) = atrest_remote::enroll(&enrollment.exchange_key);
        Host {
            identity,
            enrollment,
            binding,
            key,
        }
    }

    /// The details of every audit entry about `subject`, oldest first.
    pub async fn audit_details(&self, subject: &str) -> Vec<Value> {
        self.authority
            .audit()
            .store()
            .read_entries(1, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.subject.as_deref() == Some(subject))
            .map(|e| e.details_value().unwrap())
            .collect()
    }

    /// How many audit entries (about anyone) have `outcome`.
    pub async fn audited_outcomes(&self, outcome: &str) -> usize {
        self.authority
            .audit()
            .store()
            .read_entries(1, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| {
                e.details_value()
                    .is_ok_and(|d| d.get("outcome").and_then(Value::as_str) == Some(outcome))
            })
            .count()
    }
}

/// An enrolled host: its signing identity and its remote keyslot binding.
pub struct Host {
    pub identity: HostIdentity,
    pub enrollment: Enrollment,
    pub binding: RemoteBinding,
    /// The key the keyslot wraps; a granted answer must unblind to it.
    pub key: atrest_core::SecretKey,
}

impl Host {
    pub fn id(&self) -> &str {
        self.enrollment.host_id.as_str()
    }

    /// An unlock request as the host would make it now, unsigned.
    pub fn request(&self, timestamp: u64) -> (UnlockRequest, UnblindingState) {
        let (blinded, state) = self.binding.blind();
        let request = UnlockRequest {
            host_id: self.enrollment.host_id.clone(),
            vault_id: [1; 16],
            keyslot: 0,
            key_id: self.binding.key_id(),
            blinded,
            nonce: RequestNonce::random(),
            timestamp,
            boot_id: BootId::new(BOOT_ID).unwrap(),
            generation: None,
        };
        (request, state)
    }

    /// A signed unlock request made now, from boot [`BOOT_ID`].
    pub fn unlock(&self) -> (SignedUnlockRequest, UnblindingState) {
        let (request, state) = self.request(now());
        (self.identity.sign(request), state)
    }

    /// A signed generation report of vault `[1; 16]` at sequence `seq`
    /// (chain `[chain; 32]`), descending from `lineage`, from boot
    /// [`BOOT_ID`] (without its ticket: the caller adds it).
    pub fn generation_report(
        &self,
        seq: u64,
        chain: u8,
        lineage: &[atrest_remote::Generation],
        timestamp: u64,
    ) -> atrest_remote::SignedGenerationReport {
        let head = atrest_remote::Generation {
            checkpoint: seq / 10,
            seq,
            chain: [chain; 32],
        };
        let mut all = vec![head];
        all.extend_from_slice(lineage);
        self.identity.sign_report(atrest_remote::GenerationReport {
            host_id: self.enrollment.host_id.clone(),
            vault_id: [1; 16],
            checkpoint: head.checkpoint,
            seq,
            chain: head.chain,
            config_generation: 1,
            reason: atrest_remote::ReportReason::Unmount,
            state: atrest_remote::ReportedState::Clean,
            lineage: atrest_remote::Lineage::new(all).unwrap(),
            boot_id: BootId::new(BOOT_ID).unwrap(),
            nonce: RequestNonce::random(),
            timestamp,
        })
    }

    pub fn reboot_notice(&self, timestamp: u64) -> SignedRebootNotice {
        self.identity.sign_reboot(RebootNotice {
            host_id: self.enrollment.host_id.clone(),
            boot_id: BootId::new(BOOT_ID).unwrap(),
            nonce: RequestNonce::random(),
            timestamp,
        })
    }
}

/// The real time, in seconds: the server's clock.
pub fn now() -> u64 {
    SystemClock.now_ms() / 1000
}

/// `POST path` over a connection of its own, as chunked HTTP/1.1 whose
/// body stays open (none of it is sent): the connection, to finish or drop
/// it, and the answer's head (status line and headers). Bounded, so a
/// server that waits for the body before answering fails the test rather
/// than hanging it.
pub async fn open_chunked_request(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let read_head = async {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut byte).await.unwrap();
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&got));
            got.push(byte[0]);
        }
        String::from_utf8(got).unwrap()
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), read_head)
        .await
        .expect("an answer's head without any of the request's body");
    (conn, answer)
}
