//! The HTTP API under `/v1`, over [`Authority`]. One boundary,
//! [`ApiError`], turns every refusal into a status and a stable code.

use atrest_audit::{AuditStore, Clock};
use atrest_remote::{HostPublicKey, SignedUnlockRequest};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::authority::{Authority, AuthorityError, Enrollment, Grant, UnlockOutcome};
use crate::storage::Storage;

/// Largest request body accepted; an unlock request is well under 1 KiB.
pub const MAX_BODY: usize = 16 * 1024;

/// `POST /v1/enroll`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    pub token: String,
    pub host_name: String,
    pub public_key: HostPublicKey,
}

/// `POST /v1/unlock` answer when granted (200) or pending (202).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum UnlockReply {
    Granted {
        response: Box<atrest_remote::BlindedResponse>,
        audit_seq: u64,
        checkpoint: Option<serde_json::Value>,
    },
    Pending {
        request_id: String,
    },
}

/// The error body: `{"error": code, "message": text}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// The one error-to-response boundary.
pub enum ApiError {
    Authority(AuthorityError),
    Body(JsonRejection),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
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
            Self::Authority(e) => {
                let status = match &e {
                    AuthorityError::BadToken
                    | AuthorityError::Request(_)
                    | AuthorityError::BadPublicKey(_) => StatusCode::UNAUTHORIZED,
                    AuthorityError::InvalidField(_) => StatusCode::BAD_REQUEST,
                    AuthorityError::UnknownHost(_) => StatusCode::NOT_FOUND,
                    AuthorityError::ReplayedNonce
                    | AuthorityError::Revoked(_)
                    | AuthorityError::Denied(_) => StatusCode::FORBIDDEN,
                    AuthorityError::Shredded(_) => StatusCode::GONE,
                    AuthorityError::UnknownKey(_) | AuthorityError::HostExists(_) => {
                        StatusCode::CONFLICT
                    }
                    AuthorityError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
                    AuthorityError::Storage(_) | AuthorityError::Exchange(_) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                if status.is_server_error() {
                    tracing::error!(error = %e, "request failed");
                }
                (status, e.code(), e.to_string())
            }
        };
        let body = ErrorBody {
            error: code.to_owned(),
            message,
        };
        (status, Json(body)).into_response()
    }
}

/// The router: `/healthz`, `POST /v1/enroll`, `POST /v1/unlock`.
pub fn router<S: Storage, A: AuditStore, C: Clock>(authority: Authority<S, A, C>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/v1/enroll", post(enroll::<S, A, C>))
        .route("/v1/unlock", post(unlock::<S, A, C>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(authority)
}

async fn enroll<S: Storage, A: AuditStore, C: Clock>(
    State(authority): State<Authority<S, A, C>>,
    body: Result<Json<EnrollBody>, JsonRejection>,
) -> Result<Json<Enrollment>, ApiError> {
    let Json(body) = body?;
    let enrollment = authority
        .enroll(&body.token, &body.host_name, body.public_key)
        .await?;
    Ok(Json(enrollment))
}

async fn unlock<S: Storage, A: AuditStore, C: Clock>(
    State(authority): State<Authority<S, A, C>>,
    body: Result<Json<SignedUnlockRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(signed) = body?;
    Ok(match authority.unlock(&signed).await? {
        UnlockOutcome::Granted(grant) => {
            let Grant {
                response,
                audit_seq,
                checkpoint,
            } = *grant;
            let response = Box::new(response);
            let checkpoint = checkpoint.and_then(|c| serde_json::to_value(c).ok());
            Json(UnlockReply::Granted {
                response,
                audit_seq,
                checkpoint,
            })
            .into_response()
        }
        UnlockOutcome::Pending { request_id } => (
            StatusCode::ACCEPTED,
            Json(UnlockReply::Pending { request_id }),
        )
            .into_response(),
    })
}

/// Serves `router` on `listener` (plain HTTP) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}
