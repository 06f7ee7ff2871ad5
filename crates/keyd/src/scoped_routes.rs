//! The scoped API over HTTP (docs/keyd-api.md, "Scoped encryption"):
//! app routes under `/v1/scoped/` (`Authorization: Bearer atrapp_…`) and
//! admin routes under `/v1/admin/` (the admin token). Each operation takes
//! a batch of items; the answer's `values` are in the items' order.

use atrest_audit::{AuditStore, Clock};
use axum::Json;
use axum::Router;
use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::authority::RequestContext;
use crate::http::{ADMIN, ApiError, AppState, Shared, Source, body};
use crate::scoped::{
    App, AppPolicy, AppView, CreatedScope, DataKeyItem, DataKeyView, FieldItem, FieldOperation,
    FileItem, FileOperation, FileStreamPermit, IndexItem, NewApp, ScopeView, ScopedApiError,
    WindowView,
};
use crate::storage::Storage;
use atrest_scoped::{STREAM_HEADER_LEN, ScopedError, StreamOpener, StreamWriter};

/// Where the app routes are.
pub const PREFIX: &str = "/v1/scoped/";

/// Largest body of a scoped request (a batch of up to
/// [`crate::MAX_ITEMS`] fields); larger values belong in the library's
/// streams.
pub const MAX_SCOPED_BODY: usize = 1024 * 1024;

/// Where the file routes are (`encrypt`, `decrypt`): their bodies stream
/// through in constant memory, of any size, and are not read ahead.
pub const FILE_PREFIX: &str = "/v1/scoped/file/";

/// The header a file request's client share travels in (a URL's query
/// ends up in proxies' logs).
pub const CLIENT_SHARE_HEADER: &str = "x-atrest-client-share";

/// The longest a file route streams: its policy, share and window were
/// checked at its start, so a stream kept open past this is cut (a client
/// trickling bytes would otherwise keep a scope open after a shred or the
/// end of its window).
pub const MAX_FILE_STREAM: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether `path` is a file route, whose body is a stream.
pub(crate) fn is_stream(path: &str) -> bool {
    path.starts_with(FILE_PREFIX)
}

/// The HTTP status of a scoped refusal.
pub(crate) fn status(error: &ScopedApiError) -> StatusCode {
    match error {
        ScopedApiError::Disabled => StatusCode::SERVICE_UNAVAILABLE,
        ScopedApiError::BadAppToken => StatusCode::UNAUTHORIZED,
        ScopedApiError::NotAllowed { .. } => StatusCode::FORBIDDEN,
        ScopedApiError::UnknownScope(_) | ScopedApiError::UnknownApp(_) => StatusCode::NOT_FOUND,
        ScopedApiError::ScopeShredded(_) => StatusCode::GONE,
        ScopedApiError::ScopeExists(_) | ScopedApiError::AppExists(_) => StatusCode::CONFLICT,
        ScopedApiError::Invalid(_) => StatusCode::BAD_REQUEST,
        ScopedApiError::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
        ScopedApiError::Library { error, .. } => match error.code() {
            "client_share_required" | "client_share_unexpected" | "outside_window" => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::BAD_REQUEST,
        },
        // Turned into `ApiError::Authority` before it gets here.
        ScopedApiError::Authority(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch<T> {
    pub items: Vec<T>,
}

/// `{"values": [...]}`, in the items' order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Values<T> {
    pub values: Vec<T>,
}

/// Creating a scope.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    pub scope: String,
    /// Whether the scope's key also needs the client's share.
    pub client_share: bool,
}

/// Naming a scope (rotate, shred).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeName {
    pub scope: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinimumBody {
    pub scope: String,
    pub minimum_version: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    pub scope: String,
    /// `null` clears the window.
    pub window: Option<WindowView>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    pub name: String,
    #[serde(flatten)]
    pub policy: AppPolicy,
}

pub(crate) fn app_routes<S: Storage, A: AuditStore, C: Clock>() -> Router<Shared<S, A, C>> {
    Router::new()
        .route("/v1/scoped/{operation}", post(fields::<S, A, C>))
        .route("/v1/scoped/index", post(index::<S, A, C>))
        .route("/v1/scoped/datakey", post(data_keys::<S, A, C>))
        .route("/v1/scoped/scopes", post(app_create_scope::<S, A, C>))
        .layer(DefaultBodyLimit::max(MAX_SCOPED_BODY))
        // Read as a stream, never buffered: no body limit applies.
        .route("/v1/scoped/file/{operation}", post(file::<S, A, C>))
}

pub(crate) fn admin_routes<S: Storage, A: AuditStore, C: Clock>() -> Router<Shared<S, A, C>> {
    Router::new()
        .route(
            "/scopes",
            post(create_scope::<S, A, C>).get(list_scopes::<S, A, C>),
        )
        .route("/scope", get(show_scope::<S, A, C>))
        .route("/scope/rotate", post(rotate_scope::<S, A, C>))
        .route("/scope/shred", post(shred_scope::<S, A, C>))
        .route("/scope/minimum", post(set_minimum::<S, A, C>))
        .route("/scope/window", put(set_window::<S, A, C>))
        .route("/apps", post(add_app::<S, A, C>).get(list_apps::<S, A, C>))
        .route("/apps/{name}", delete(remove_app::<S, A, C>))
}

/// The app named by the request's bearer token.
async fn app<S: Storage, A: AuditStore, C: Clock>(
    state: &AppState<S, A, C>,
    headers: &HeaderMap,
    ctx: RequestContext,
) -> Result<App, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        state.authority.refused_input("bad_app_token", ctx).await;
        return Err(ScopedApiError::BadAppToken.into());
    };
    Ok(state.authority.app(token, ctx).await?)
}

/// Authenticates the app, then reads its batch (a bad body from a known
/// app is audited as the app's).
async fn request<T, S: Storage, A: AuditStore, C: Clock>(
    state: &AppState<S, A, C>,
    headers: &HeaderMap,
    ctx: RequestContext,
    json: Result<Json<T>, JsonRejection>,
) -> Result<(App, T), ApiError> {
    let app = app(state, headers, ctx).await?;
    let value = body(state, json, ctx).await?;
    Ok((app, value))
}

/// `POST /v1/scoped/encrypt|decrypt|rewrap`.
async fn fields<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    Path(operation): Path<String>,
    headers: HeaderMap,
    json: Result<Json<Batch<FieldItem>>, JsonRejection>,
) -> Result<Json<Values<Zeroizing<String>>>, ApiError> {
    let operation = match operation.as_str() {
        "encrypt" => FieldOperation::Encrypt,
        "decrypt" => FieldOperation::Decrypt,
        "rewrap" => FieldOperation::Rewrap,
        other => {
            return Err(ApiError::NotFound(format!(
                "no scoped operation {other:?}: encrypt, decrypt, rewrap, index, datakey or \
                 scopes"
            )));
        }
    };
    let (app, batch) = request(&state, &headers, ctx, json).await?;
    let values = state
        .authority
        .scoped_fields(&app, operation, &batch.items, ctx)
        .await?;
    Ok(Json(Values { values }))
}

/// `POST /v1/scoped/datakey`: a new data key per item, in the clear and
/// sealed as the envelope of the item's field.
async fn data_keys<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    headers: HeaderMap,
    json: Result<Json<Batch<DataKeyItem>>, JsonRejection>,
) -> Result<Json<Values<DataKeyView>>, ApiError> {
    let (app, batch) = request(&state, &headers, ctx, json).await?;
    let values = state
        .authority
        .scoped_data_keys(&app, &batch.items, ctx)
        .await?;
    Ok(Json(Values { values }))
}

/// `?scope=…&table=…&object=…` of a file route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    pub scope: String,
    pub table: String,
    pub object: String,
}

/// `POST /v1/scoped/file/encrypt|decrypt`: the body is the file (encrypt)
/// or its stream (decrypt), the answer the other, both passed on chunk by
/// chunk. A stream that fails to open part way (changed, cut, another
/// object's) ends the answer without its last HTTP chunk: the client sees
/// an incomplete transfer, never a clean end (curl: exit 18).
///
/// Nothing of the body is read before the app's policy allows the
/// operation on the scope and the table's files and the app has a place
/// among its open streams ([`Authority::admit_file_stream`]); that place is
/// held until the answer ends.
///
/// [`Authority::admit_file_stream`]: crate::Authority::admit_file_stream
async fn file<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    Path(operation): Path<String>,
    version: axum::http::Version,
    query: Result<Query<FileQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let app = app(&state, &headers, ctx).await?;
    let operation = match operation.as_str() {
        "encrypt" => FileOperation::Encrypt,
        "decrypt" => FileOperation::Decrypt,
        other => {
            return Err(ApiError::NotFound(format!(
                "no file operation {other:?}: encrypt or decrypt"
            )));
        }
    };
    // HTTP/1.0 ends a body of unknown length by closing the connection, so
    // a stream cut part way would reach the client as a whole file: only
    // chunked HTTP/1.1 and HTTP/2 can say "this answer did not end".
    if version < axum::http::Version::HTTP_11 {
        state.authority.refused_input("invalid_request", ctx).await;
        return Err(ScopedApiError::Invalid(
            "file routes need HTTP/1.1 or later (a proxy in front of keyd must speak HTTP/1.1 \
             to it, e.g. nginx's proxy_http_version 1.1)"
                .into(),
        )
        .into());
    }
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => {
            state.authority.refused_input("invalid_request", ctx).await;
            return Err(ScopedApiError::Invalid(format!(
                "a file route takes ?scope=…&table=…&object=… ({e})"
            ))
            .into());
        }
    };
    let client_share = match headers.get(CLIENT_SHARE_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => Some(Zeroizing::new(text.to_owned())),
        Some(Err(_)) => {
            return Err(
                ScopedApiError::Invalid(format!("{CLIENT_SHARE_HEADER} is not text")).into(),
            );
        }
    };
    let item = FileItem {
        scope: query.scope,
        table: query.table,
        object: query.object,
        client_share,
    };
    let permit = state
        .authority
        .admit_file_stream(&app, &item, operation, ctx)
        .await?;
    let stream = match operation {
        FileOperation::Encrypt => {
            let sealer = state.authority.scoped_file_sealer(&app, &item, ctx).await?;
            Body::from_stream(holding(seal_stream(body, sealer), permit))
        }
        FileOperation::Decrypt => {
            let (header, input) = stream_header(body).await?;
            let opener = state
                .authority
                .scoped_file_opener(&app, &item, &header, ctx)
                .await?;
            Body::from_stream(holding(open_stream(input, opener), permit))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], stream).into_response())
}

/// `stream`, giving `permit` back as soon as it has ended (before the
/// answer's last HTTP chunk goes out, so a client that has read a whole
/// answer finds its place free), or when it is dropped part way.
fn holding<T>(
    stream: impl futures::Stream<Item = T>,
    permit: FileStreamPermit,
) -> impl futures::Stream<Item = T> {
    let end = futures::stream::once(async move { drop(permit) })
        .filter_map(|()| futures::future::ready(None));
    stream.chain(end)
}

type Input = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, axum::Error>> + Send>>;

/// The request body, failing once [`MAX_FILE_STREAM`] has passed.
fn limited(body: Body) -> Input {
    let deadline = tokio::time::Instant::now() + MAX_FILE_STREAM;
    Box::pin(
        body.into_data_stream()
            .take_until(tokio::time::sleep_until(deadline))
            .chain(futures::stream::once(async move {
                if tokio::time::Instant::now() >= deadline {
                    Err(axum::Error::new(format!(
                        "the stream took longer than {} s",
                        MAX_FILE_STREAM.as_secs()
                    )))
                } else {
                    Ok(Bytes::new())
                }
            })),
    )
}

fn read_error(e: axum::Error) -> std::io::Error {
    std::io::Error::other(format!("the request body could not be read: {e}"))
}

/// The sealed stream of `body`: the header, then each chunk as it fills.
fn seal_stream(
    body: Body,
    mut sealer: StreamWriter<Vec<u8>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let head = Bytes::from(sealer.take_sealed());
    let input = limited(body);
    let chunks = futures::stream::unfold(Some((input, sealer)), |state| async move {
        let (mut input, mut sealer) = state?;
        loop {
            match input.next().await {
                Some(Ok(bytes)) => {
                    sealer.write_all(&bytes).expect("writing to a Vec");
                    let sealed = sealer.take_sealed();
                    if !sealed.is_empty() {
                        return Some((Ok(Bytes::from(sealed)), Some((input, sealer))));
                    }
                }
                Some(Err(e)) => return Some((Err(read_error(e)), None)),
                None => {
                    let last = sealer
                        .finish()
                        .map(Bytes::from)
                        .map_err(std::io::Error::other);
                    return Some((last, None));
                }
            }
        }
    });
    futures::stream::once(async move { Ok(head) }).chain(chunks)
}

/// The first [`STREAM_HEADER_LEN`] bytes of `body`, and the rest of it.
async fn stream_header(body: Body) -> Result<([u8; STREAM_HEADER_LEN], Input), ApiError> {
    let mut input = limited(body);
    let mut header = Vec::with_capacity(STREAM_HEADER_LEN);
    let mut rest = Bytes::new();
    while header.len() < STREAM_HEADER_LEN {
        match input.next().await {
            Some(Ok(bytes)) => {
                let take = (STREAM_HEADER_LEN - header.len()).min(bytes.len());
                header.extend_from_slice(&bytes[..take]);
                rest = bytes.slice(take..);
            }
            Some(Err(e)) => return Err(ScopedApiError::Invalid(read_error(e).to_string()).into()),
            None => {
                return Err(ScopedApiError::from(ScopedError::Malformed {
                    what: "encrypted stream",
                    why: format!("{} bytes, shorter than its header", header.len()),
                })
                .into());
            }
        }
    }
    let header: [u8; STREAM_HEADER_LEN] = header.try_into().expect("exactly the header's length");
    // keyd seals 64 KiB chunks; larger ones (up to 16 MiB in the format)
    // would only let a client make keyd hold more memory per stream.
    if header[10] > atrest_scoped::DEFAULT_CHUNK_LOG2 {
        return Err(ScopedApiError::from(ScopedError::Malformed {
            what: "encrypted stream",
            why: format!(
                "chunks of 2^{} bytes; keyd opens streams of up to 64 KiB chunks (the \
                 library's StreamReader opens larger ones)",
                header[10]
            ),
        })
        .into());
    }
    let input: Input = Box::pin(futures::stream::once(async move { Ok(rest) }).chain(input));
    Ok((header, input))
}

/// The plaintext of a stream, chunk by chunk as each authenticates; an
/// error ends the answer uncleanly.
fn open_stream(
    input: Input,
    opener: StreamOpener,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::unfold(Some((input, opener)), |state| async move {
        let (mut input, mut opener) = state?;
        loop {
            let mut plain = Vec::new();
            match input.next().await {
                Some(Ok(bytes)) => {
                    if let Err(e) = opener.update(&bytes, &mut plain) {
                        tracing::warn!(error = %e, "a file's stream failed part way; its answer is cut");
                        return Some((Err(std::io::Error::other(e)), None));
                    }
                    if !plain.is_empty() {
                        return Some((Ok(Bytes::from(plain)), Some((input, opener))));
                    }
                }
                Some(Err(e)) => return Some((Err(read_error(e)), None)),
                None => {
                    let last = opener.finish(&mut plain).map(|()| Bytes::from(plain));
                    if let Err(e) = &last {
                        tracing::warn!(error = %e, "a file's stream failed at its end; its answer is cut");
                    }
                    return Some((last.map_err(std::io::Error::other), None));
                }
            }
        }
    })
}

async fn index<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    headers: HeaderMap,
    json: Result<Json<Batch<IndexItem>>, JsonRejection>,
) -> Result<Json<Values<String>>, ApiError> {
    let (app, batch) = request(&state, &headers, ctx, json).await?;
    let values = state
        .authority
        .scoped_index(&app, &batch.items, ctx)
        .await?;
    Ok(Json(Values { values }))
}

async fn app_create_scope<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Source(ctx): Source,
    headers: HeaderMap,
    json: Result<Json<ScopeBody>, JsonRejection>,
) -> Result<Json<CreatedScope>, ApiError> {
    let (app, request) = request(&state, &headers, ctx, json).await?;
    Ok(Json(
        state
            .authority
            .app_create_scope(&app, &request.scope, request.client_share)
            .await?,
    ))
}

async fn create_scope<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<ScopeBody>, JsonRejection>,
) -> Result<Json<CreatedScope>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state
            .authority
            .create_scope(&request.scope, request.client_share, ADMIN)
            .await?,
    ))
}

async fn list_scopes<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Result<Json<Vec<ScopeView>>, ApiError> {
    Ok(Json(state.authority.scope_views().await?))
}

#[derive(Debug, Deserialize)]
struct ScopeQuery {
    id: String,
}

async fn show_scope<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Query(query): Query<ScopeQuery>,
) -> Result<Json<ScopeView>, ApiError> {
    Ok(Json(state.authority.scope_view(&query.id).await?))
}

async fn rotate_scope<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<ScopeName>, JsonRejection>,
) -> Result<Json<ScopeView>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state.authority.rotate_scope(&request.scope, ADMIN).await?,
    ))
}

async fn shred_scope<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<ScopeName>, JsonRejection>,
) -> Result<Json<ScopeView>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state.authority.shred_scope(&request.scope, ADMIN).await?,
    ))
}

async fn set_minimum<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<MinimumBody>, JsonRejection>,
) -> Result<Json<ScopeView>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state
            .authority
            .set_scope_minimum(&request.scope, request.minimum_version, ADMIN)
            .await?,
    ))
}

async fn set_window<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<WindowBody>, JsonRejection>,
) -> Result<Json<ScopeView>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state
            .authority
            .set_scope_window(&request.scope, request.window.as_ref(), ADMIN)
            .await?,
    ))
}

async fn add_app<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    json: Result<Json<AppBody>, JsonRejection>,
) -> Result<Json<NewApp>, ApiError> {
    let Json(request) = json?;
    Ok(Json(
        state
            .authority
            .add_app(&request.name, request.policy, ADMIN)
            .await?,
    ))
}

async fn list_apps<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
) -> Result<Json<Vec<AppView>>, ApiError> {
    Ok(Json(state.authority.apps().await?))
}

async fn remove_app<S: Storage, A: AuditStore, C: Clock>(
    State(state): State<Shared<S, A, C>>,
    Path(name): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    state.authority.remove_app(&name, ADMIN).await?;
    Ok(Json(Removed { removed: name }))
}

/// What `DELETE /v1/admin/apps/{name}` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
}
