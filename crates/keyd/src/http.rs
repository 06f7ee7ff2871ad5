//! The HTTP API under `/v1` (docs/keyd-api.md, docs/openapi.json), over
//! [`Authority`]. One boundary, [`ApiError`], turns every refusal into a
//! status and a stable code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_audit::{AuditStore, Clock};
use atrest_remote::{HostId, SignedRebootNotice, SignedUnlockRequest};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::approvers::NewApprover;
use crate::authority::{
    Authority, AuthorityError, Enrollment, Grant, HostView, RequestContext, Token, UnlockOutcome,
};
use crate::held::PendingView;
use crate::metrics::Snapshot;
use crate::storage::{Policy, PolicyRule, PolicyScope, Storage};

/// Largest request body accepted; an unlock request is well under 1 KiB.
pub const MAX_BODY: usize = 16 * 1024;

/// A request body must arrive within this time (slow clients).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest long poll.
pub const MAX_WAIT: u64 = 60;

pub use atrest_wire::{
    EnrollRequest as EnrollBody, ErrorBody, GRANT_VERSION_HEADER, KNOWN_TREE_SIZE_HEADER,
    POLL_TOKEN_HEADER, RebootReply, UnlockReply,
};

/// The one error-to-response boundary.
pub enum ApiError {
    Authority(AuthorityError),
    Body(JsonRejection),
    Unauthorized,
    NotFound(String),
    Scoped(crate::scoped::ScopedApiError),
}

impl From<crate::scoped::ScopedApiError> for ApiError {
    fn from(e: crate::scoped::ScopedApiError) -> Self {
        match e {
            crate::scoped::ScopedApiError::Authority(e) => Self::Authority(e),
            other => Self::Scoped(other),
        }
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        Self::Authority(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::Body(e)
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::Body(rejection) => {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("request bodies are limited to {MAX_BODY} bytes"),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "malformed_request",
                        rejection.body_text(),
                    )
                }
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this needs the admin token (Authorization: Bearer, from DATA_DIR/admin.token)"
                    .into(),
            ),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", what.clone()),
            Self::Scoped(e) => (crate::scoped_routes::status(e), e.code(), e.to_string()),
            Self::Authority(e) => {
                let status = match e {
                    AuthorityError::BadToken
                    | AuthorityError::Request(_)
                    | AuthorityError::BadPublicKey(_)
                    | AuthorityError::BadApproverCode
                    | AuthorityError::BadPollToken => StatusCode::UNAUTHORIZED,
                    AuthorityError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
                    AuthorityError::InvalidField(_) => StatusCode::BAD_REQUEST,
                    AuthorityError::UnknownHost(_) | AuthorityError::UnknownRequest(_) => {
                        StatusCode::NOT_FOUND
                    }
                    AuthorityError::ReplayedNonce
                    | AuthorityError::Revoked(_)
                    | AuthorityError::Denied { .. }
                    | AuthorityError::UnprovenBoot(_)
                    | AuthorityError::Expired => StatusCode::FORBIDDEN,
                    AuthorityError::Shredded(_) => StatusCode::GONE,
                    AuthorityError::UnknownKey(_)
                    | AuthorityError::RebindPending { .. }
                    | AuthorityError::HostExists(_)
                    | AuthorityError::AlreadyDecided { .. }
                    | AuthorityError::GenerationRegressed { .. }
                    | AuthorityError::GenerationForked { .. } => StatusCode::CONFLICT,
                    AuthorityError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
                    AuthorityError::Storage(e) if e.is_unavailable() => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    AuthorityError::Storage(_) | AuthorityError::Exchange(_) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                (status, e.code(), e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(code, %message, "request failed");
        }
        let body = ErrorBody {
            error: code.to_owned(),
            message,
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (status, [(header::RETRY_AFTER, "15")], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

/// What the routes share.
pub struct AppState<S: Storage, A: AuditStore, C: Clock> {
    pub authority: Authority<S, A, C>,
    /// SHA-256 of the admin token; `None` turns the admin API off.
    pub admin_token_hash: Option<[u8; 32]>,
}

pub(crate) type Shared<S, A, C> = Arc<AppState<S, A, C>>;

/// The router: host routes, admin routes, `/healthz`, `/metrics`, and the
/// approval web page.
pub fn router<S: Storage, A: AuditStore, C: Clock>(
    authority: Authority<S, A, C>,
    admin_token: Option<&str>,
) -> Router {
    let state = Arc::new(AppState {
        authority,
        admin_token_hash: admin_token.map(|t| atrest_core::sha256(t.as_bytes())),
    });
    let admin = Router::new()
        .route("/tokens", post(create_token::<S, A, C>))
        .route("/hosts", get(list_hosts::<S, A, C>))
        .route("/hosts/{id}", get(show_host::<S, A, C>))
        .route("/hosts/{id}/{action}", post(host_action::<S, A, C>))
        .route(
            "/policy",
            put(set_policy::<S, A, C>).get(list_policies::<S, A, C>),
        )
        .route("/requests", get(list_pending::<S, A, C>))
        .route("/requests/{id}/{action}", post(decide::<S, A, C>))
        .route("/approvers", post(add_approver::<S, A, C>))
        .merge(crate::scoped_routes::admin_routes::<S, A, C>())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin::<S, A, C>,
        ));
    Router::new()
        .route("/healthz", get(health::<S, A, C>))
        .route("/metrics", get(metrics::<S, A, C>))
        .route("/v1/info", get(info::<S, A, C>))
        .route("/v1/enroll", post(enroll::<S, A, C>))
        .route("/v1/unlock", post(unlock::<S, A, C>))
        .route("/v1/requests/{id}", get(poll::<S, A, C>))
        .route("/v1/reboot", post(reboot::<S, A, C>))
        .route("/v1/generation", post(generation::<S, A, C>))
        .route("/v1/bind", post(bind::<S, A, C>))
        .nest("/v1/admin", admin)
        .merge(crate::web::routes(state.clone()))
        .merge(crate::scoped_routes::app_routes::<S, A, C>())
        .fallback(|| async { ApiError::NotFound("no such endpoint; see docs/keyd-api.md".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::<S, A, C>,
        ))
        .with_state(state)
}

/// Reads the whole body within [`BODY_TIMEOUT`], times the request, and
/// makes every error a JSON [`ErrorBody`] (axum's own rejections of a bad
/// path, query or method are plain text).
async fn observe<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_name(request.uri().path());
    if crate::scoped_routes::is_stream(request.uri().path()) {
        // A file's body streams through its handler in constant memory and
        // is not read here; each read is bounded by the connection's idle
        // timeout instead of BODY_TIMEOUT.
        let response = json_errors(next.run(request).await).await;
        state
            .authority
            .metrics()
            .observe(route, started.elapsed().as_secs_f64());
        return response;
    }
    let (parts, body) = request.into_parts();
    let limit = body_limit(parts.uri.path());
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(body, limit.saturating_add(1)),
    )
    .await;
    let response = match read {
        Ok(Ok(bytes)) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            if route == "web" {
                response
            } else {
                json_errors(response).await
            }
        }
        Ok(Err(_)) => {
            let error = ErrorBody {
                error: "body_too_large".into(),
                message: format!("request bodies here are limited to {limit} bytes"),
            };
            state.authority.refused_input("body_too_large", ctx).await;
            (StatusCode::PAYLOAD_TOO_LARGE, Json(error)).into_response()
        }
        Err(_) => {
            let error = ErrorBody {
                error: "slow_request".into(),
                message: format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            };
            state.authority.refused_input("slow_request", ctx).await;
            (StatusCode::REQUEST_TIMEOUT, Json(error)).into_response()
        }
    };
    state
        .authority
        .metrics()
        .observe(route, started.elapsed().as_secs_f64());
    response
}

/// An error response that is not JSON (an extractor's rejection, a wrong
/// method) becomes `{"error", "message"}` with a code for its status.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        s if s.is_server_error() => "internal_error",
        _ => "malformed_request",
    };
    let text = axum::body::to_bytes(response.into_body(), MAX_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    let body = ErrorBody {
        error: code.to_owned(),
        message,
    };
    (status, Json(body)).into_response()
}

/// The largest body a path takes: scoped batches are larger than any
/// other request.
fn body_limit(path: &str) -> usize {
    if path.starts_with(crate::scoped_routes::PREFIX) {
        crate::scoped_routes::MAX_SCOPED_BODY
    } else {
        MAX_BODY
    }
}

fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/unlock" => "unlock",
        "/v1/enroll" => "enroll",
        "/v1/reboot" => "reboot",
        "/v1/generation" => "generation",
        "/v1/bind" => "bind",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        "/v1/info" => "info",
        p if p.starts_with("/v1/requests/") => "poll",
        p if p.starts_with(crate::scoped_routes::PREFIX) => "scoped",
        p if p.starts_with("/v1/admin/") => "admin",
        p if p.starts_with("/approve") => "web",
        _ => "other",
    }
}

async fn require_admin<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| atrest_core::sha256(t.trim().as_bytes()));
    match (state.admin_token_hash, presented) {
        (Some(expected), Some(presented))
            if atrest_core::constant_time_eq(&expected, &presented) =>
        {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// The client's address, when the listener provides it.
pub struct Source(pub(crate) RequestContext);

impl<T: Send + Sync> axum::extract::FromRequestParts<T> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &T,
    ) -> Result<Self, Self::Rejection> {
        let source = parts
            .extensions
            .get::<ConnectInfo<crate::tls::Peer>>()
            .map(|ConnectInfo(peer)| peer.0.ip());
        Ok(Self(RequestContext { source }))
    }
}

/// Turns a bad body into an audited refusal.
pub(crate) async fn body<T, S: Storage, A: AuditStore, C: Clock>(
    state: &AppState<S, A, C>,
    body: Result<Json<T>, JsonRejection>,
    ctx: RequestContext,
) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) => {
            let error = ApiError::Body(rejection);
            state.authority.refused_input(error.parts().1, ctx).await;
            Err(error)
        }
    }
}

/// 200 while the database answers and takes writes; else 503 with
/// `database_unavailable`, so a load balancer sends hosts to another
/// replica (this one refuses releases meanwhile, and recovers by itself).
async fn health<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Response {
    match state.authority.health().await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => ApiError::Authority(e).into_response(),
    }
}

async fn metrics<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Response {
    let authority = &state.authority;
    let text = authority.metrics().render(Snapshot {
        hosts: authority.host_count(),
        // A database that cannot be read shows in `database_up`.
        pending: authority.pending().await.map_or(0, |p| p.len()),
        audit: authority.audit().stats(),
        audit_queue: authority.audit().queue_len(),
        database_up: authority.health().await.is_ok(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn info<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Json<atrest_wire::Info> {
    Json(atrest_wire::Info {
        version: env!("CARGO_PKG_VERSION").into(),
        audit_public_key: state.authority.audit().public_key(),
    })
}

async fn enroll<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    json: Result<Json<EnrollBody>, JsonRejection>,
) -> Result<Json<Enrollment>, ApiError> {
    let request = body(&state, json, ctx).await?;
    let enrollment = state
        .authority
        .enroll(&request.token, &request.host_name, request.public_key, ctx)
        .await?;
    Ok(Json(enrollment))
}

/// What the host's headers ask of a grant: the size of the tree head it
/// kept ([`KNOWN_TREE_SIZE_HEADER`]) and the newest grant version it reads
/// ([`GRANT_VERSION_HEADER`]).
#[derive(Clone, Copy, Debug)]
struct Asked {
    known_tree_size: u64,
    version: u32,
}

impl Asked {
    fn of(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            known_tree_size: text(KNOWN_TREE_SIZE_HEADER)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            version: atrest_wire::answer_version(text(GRANT_VERSION_HEADER)),
        }
    }
}

/// Room for a whole grant: written once, never regrown.
const GRANT_CAPACITY: usize = 4096;

fn reply<S: Storage, A: AuditStore, C: Clock>(
    authority: &Authority<S, A, C>,
    outcome: UnlockOutcome,
    asked: Asked,
) -> Response {
    match outcome {
        UnlockOutcome::Granted(grant) => {
            let Grant {
                response,
                audit_seq,
                checkpoint,
                rebind,
                boot_ticket,
                mut audit,
                witnessed,
                tree_head_json,
            } = *grant;
            audit.consistency =
                authority.consistency_since(asked.known_tree_size, &audit.tree_head);
            let (audit, proof) =
                atrest_wire::grant_proof_fields(asked.version, audit, tree_head_json);
            let reply = UnlockReply::Granted {
                version: asked.version,
                response,
                audit_seq,
                checkpoint,
                rebind,
                boot_ticket,
                audit,
                proof,
                witnessed,
            };
            let mut body = Vec::with_capacity(GRANT_CAPACITY);
            match serde_json::to_writer(&mut body, &reply) {
                Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
                // Nothing in a grant fails to encode; if it did, the key
                // is not sent half-written.
                Err(e) => {
                    tracing::error!(error = %e, "could not encode a grant");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        UnlockOutcome::Pending { view, poll_token } => (
            StatusCode::ACCEPTED,
            Json(UnlockReply::Pending {
                request_id: view.id,
                poll_token: poll_token.map(|t| t.to_string()),
                reason: view.reason,
                expires_at: view.expires_at,
            }),
        )
            .into_response(),
    }
}

async fn unlock<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    headers: HeaderMap,
    json: Result<Json<SignedUnlockRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let signed = body(&state, json, ctx).await?;
    let outcome = state.authority.unlock(&signed, ctx).await?;
    Ok(reply(&state.authority, outcome, Asked::of(&headers)))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn poll<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT));
    let token = headers
        .get(POLL_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match state.authority.poll(&id, token, wait).await {
        Ok(outcome) => Ok(reply(&state.authority, outcome, Asked::of(&headers))),
        Err(e @ AuthorityError::BadPollToken) => {
            state.authority.refused_input(e.code(), ctx).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn bind<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    json: Result<Json<atrest_remote::SignedBindRequest>, JsonRejection>,
) -> Result<Json<Enrollment>, ApiError> {
    let signed = body(&state, json, ctx).await?;
    Ok(Json(state.authority.bind(&signed, ctx).await?))
}

async fn reboot<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    json: Result<Json<SignedRebootNotice>, JsonRejection>,
) -> Result<Json<RebootReply>, ApiError> {
    let notice = body(&state, json, ctx).await?;
    let (audit_seq, valid_until) = state.authority.announce_reboot(&notice, ctx).await?;
    Ok(Json(RebootReply {
        audit_seq,
        valid_until,
    }))
}

async fn generation<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    json: Result<Json<atrest_remote::SignedGenerationReport>, JsonRejection>,
) -> Result<Json<atrest_wire::GenerationReply>, ApiError> {
    let report = body(&state, json, ctx).await?;
    Ok(Json(state.authority.report_generation(&report, ctx).await?))
}

/// Who did an admin action, for the log.
pub(crate) const ADMIN: &str = "admin";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    pub group: String,
    /// Seconds.
    pub expires_in: u64,
}

async fn create_token<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<TokenBody>, JsonRejection>,
) -> Result<Json<Token>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state
            .authority
            .create_token(&request.group, request.expires_in, ADMIN)
            .await?,
    ))
}

async fn list_hosts<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Result<Json<Vec<HostView>>, ApiError> {
    Ok(Json(state.authority.hosts().await?))
}

fn host_id(id: &str) -> Result<HostId, ApiError> {
    HostId::new(id).map_err(|e| ApiError::Authority(e.into()))
}

async fn show_host<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Path(id): Path<String>,
) -> Result<Json<HostView>, ApiError> {
    Ok(Json(state.authority.host(&host_id(&id)?).await?))
}

async fn host_action<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<HostView>, ApiError> {
    let id = host_id(&id)?;
    let authority = &state.authority;
    let view = match action.as_str() {
        "revoke" => authority.revoke(&id, ADMIN).await?,
        "reinstate" => authority.reinstate(&id, ADMIN).await?,
        "shred" => authority.shred(&id, ADMIN).await?,
        "rotate" => authority.rotate(&id, ADMIN).await?,
        other => {
            return Err(ApiError::NotFound(format!(
                "no host action {other:?}: revoke, reinstate, shred or rotate"
            )));
        }
    };
    Ok(Json(view))
}

/// `PUT /v1/admin/policy`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// `default`, `group` or `host`.
    pub scope: String,
    #[serde(default)]
    pub name: Option<String>,
    pub policy: Policy,
    #[serde(default)]
    pub unannounced_reboot: Option<Policy>,
    #[serde(default)]
    pub rollback: Option<Policy>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PolicyView {
    pub scope: PolicyScope,
    #[serde(flatten)]
    pub rule: PolicyRule,
}

impl PolicyView {
    /// `default`, `group:NAME` or `host:NAME`.
    pub fn scope_text(&self) -> String {
        self.scope.to_string()
    }
}

async fn set_policy<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<PolicyBody>, JsonRejection>,
) -> Result<Json<PolicyView>, ApiError> {
    let Json(request) = json?;
    let missing = || {
        ApiError::Authority(AuthorityError::InvalidField(atrest_remote::InvalidField {
            field: "name",
            rule: "given for a group or host scope",
        }))
    };
    let scope = match request.scope.as_str() {
        "default" => PolicyScope::Default,
        "group" => PolicyScope::Group(request.name.ok_or_else(missing)?),
        "host" => PolicyScope::Host(host_id(&request.name.ok_or_else(missing)?)?),
        _ => {
            return Err(ApiError::Authority(AuthorityError::InvalidField(
                atrest_remote::InvalidField {
                    field: "scope",
                    rule: "default, group or host",
                },
            )));
        }
    };
    let rule = PolicyRule {
        policy: request.policy,
        unannounced_reboot: request
            .unannounced_reboot
            .unwrap_or(PolicyRule::default().unannounced_reboot),
        rollback: request.rollback.unwrap_or(PolicyRule::default().rollback),
    };
    state.authority.set_policy(&scope, rule, ADMIN).await?;
    Ok(Json(PolicyView { scope, rule }))
}

async fn list_policies<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Json<Vec<PolicyView>> {
    Json(
        state
            .authority
            .policies()
            .into_iter()
            .map(|(scope, rule)| PolicyView { scope, rule })
            .collect(),
    )
}

async fn list_pending<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Result<Json<Vec<PendingView>>, ApiError> {
    Ok(Json(state.authority.pending().await?))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub approver: String,
}

async fn decide<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Path((id, action)): Path<(String, String)>,
    json: Result<Json<DecideBody>, JsonRejection>,
) -> Result<Json<PendingView>, ApiError> {
    let Json(request) = json?;
    let approve = match action.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ApiError::NotFound(format!(
                "no request action {other:?}: approve or deny"
            )));
        }
    };
    let actor = format!("cli:{}", request.approver);
    Ok(Json(state.authority.decide(&id, approve, &actor).await?))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverBody {
    pub name: String,
}

async fn add_approver<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<ApproverBody>, JsonRejection>,
) -> Result<Json<NewApprover>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state.authority.add_approver(&request.name, ADMIN).await?,
    ))
}

/// Serves `router` on `listener` in plain HTTP until the task is dropped:
/// for tests only (feature `test-hooks`); keyd serves TLS alone.
#[cfg(feature = "test-hooks")]
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<crate::tls::Peer>(),
    )
    .await
}
