//! The approval web page: approvers log in with a TOTP code and approve or
//! deny held requests from a phone.
//!
//! - `GET /approve`: the login form, or with a session the pending list:
//!   for each request its host, vault and keyslot, boot, the boot last
//!   released to, when it was made and a countdown to its expiry.
//! - `POST /approve/login`: name + code ([`Authority::check_approver`]) →
//!   a session cookie; wrong codes are rate limited per client address
//!   (see [`crate::approvers`]), on every replica together.
//! - `POST /approve/{id}/approve|deny`: needs the session's CSRF token;
//!   decides as `web:<approver>` and redirects back with a message. An
//!   approval of an `unproven` boot first answers a confirmation page whose
//!   form (with the token again) says `confirm=unproven`.
//! - `POST /approve/logout`.
//! - `GET /approve/countdown.js`: the one script, counting expiries down.
//!
//! Server-rendered HTML: every value printed is escaped, and the
//! Content-Security-Policy allows nothing but inline style, this origin's
//! script file (no inline script) and forms posting back here. The page
//! works without the script. Sessions are rows of the authority's
//! database, by the SHA-256 of the cookie (a login on one replica holds on
//! every replica and across a restart), and so are the counts of wrong
//! codes and the addresses approvers logged in from. Both run on the
//! authority's clock.
//!
//! [`Authority::check_approver`]: crate::Authority::check_approver

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use atrest_audit::{AuditStore, Clock};
use atrest_remote::HostId;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::approvers::{Refusal, client_of};
use crate::authority::AuthorityError;
use crate::held::PendingView;
use crate::http::AppState;
use crate::storage::{Storage, StorageError, StoredSession};
use crate::tls::Peer;

/// Seconds a login lasts, whatever the approver does meanwhile.
pub const SESSION_LIFETIME: u64 = 15 * 60;

const COOKIE: &str = "atrest_approve";

/// `/approve`, on the router's state (see the module docs).
pub fn routes<S: Storage, A: AuditStore, C: Clock>(
    state: Arc<AppState<S, A, C>>,
) -> Router<Arc<AppState<S, A, C>>> {
    let web = Arc::new(Web { app: state });
    Router::new()
        .route("/approve", get(show::<S, A, C>))
        .route("/approve/login", post(login::<S, A, C>))
        .route("/approve/logout", post(logout::<S, A, C>))
        .route("/approve/countdown.js", get(countdown))
        .route("/approve/{id}/{action}", post(decide::<S, A, C>))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

struct Web<S: Storage, A: AuditStore, C: Clock> {
    app: Arc<AppState<S, A, C>>,
}

/// A logged-in approver's session, as the pages use it.
#[derive(Clone)]
struct Session {
    /// The SHA-256 of the cookie's value: the session's key in the store.
    id_hash: [u8; 32],
    approver: String,
    /// Sent back with every decision form; a page from another origin
    /// cannot read it.
    csrf: String,
}

/// A message for the session's next page, shown once.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Flash {
    Done(String),
    Failed(String),
}

impl Flash {
    /// As the store keeps it: `done:` or `failed:`, then the text.
    fn encode(&self) -> String {
        match self {
            Self::Done(text) => format!("done:{text}"),
            Self::Failed(text) => format!("failed:{text}"),
        }
    }

    fn decode(stored: &str) -> Option<Self> {
        if let Some(text) = stored.strip_prefix("done:") {
            Some(Self::Done(text.to_owned()))
        } else {
            stored
                .strip_prefix("failed:")
                .map(|text| Self::Failed(text.to_owned()))
        }
    }
}

impl<S: Storage, A: AuditStore, C: Clock> Web<S, A, C> {
    fn now(&self) -> u64 {
        self.app.authority.now()
    }

    /// The request's session, unless it has none, an unknown one or an
    /// expired one; with the message waiting for its page, taken.
    async fn session(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(Session, Option<Flash>)>, StorageError> {
        let Some(cookie) = session_cookie(headers) else {
            return Ok(None);
        };
        let id_hash = atrest_core::sha256(cookie.as_bytes());
        let storage = self.app.authority.storage();
        let Some(stored) = storage.session(id_hash, self.now()).await? else {
            return Ok(None);
        };
        let flash = stored.flash.as_deref().and_then(Flash::decode);
        if flash.is_some() {
            storage.set_session_flash(id_hash, None).await?;
        }
        let session = Session {
            id_hash,
            approver: stored.approver,
            csrf: stored.csrf,
        };
        Ok(Some((session, flash)))
    }

    /// A new session for `approver`: the cookie's value (only its hash is
    /// stored).
    async fn start_session(&self, approver: &str) -> Result<String, StorageError> {
        let cookie = atrest_remote::to_base64url(&atrest_core::random_array::<32>());
        let session = StoredSession {
            id_hash: atrest_core::sha256(cookie.as_bytes()),
            approver: approver.to_owned(),
            csrf: atrest_remote::to_base64url(&atrest_core::random_array::<32>()),
            expires_at: self.now().saturating_add(SESSION_LIFETIME),
            flash: None,
        };
        self.app
            .authority
            .storage()
            .insert_session(&session)
            .await?;
        Ok(cookie)
    }

    async fn set_flash(&self, session: &Session, flash: &Flash) {
        let stored = self
            .app
            .authority
            .storage()
            .set_session_flash(session.id_hash, Some(&flash.encode()))
            .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "could not keep a message for the approval page");
        }
    }
}

/// The page that says the database cannot be read now.
fn unavailable(e: &StorageError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(message_page(&format!(
            "The key authority's database cannot be read now ({e}); reload in a moment."
        ))),
    )
        .into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn show<S: Storage, A: AuditStore, C: Clock>(
    State(web): State<Arc<Web<S, A, C>>>,
    headers: HeaderMap,
) -> Response {
    let (session, flash) = match web.session(&headers).await {
        Ok(Some(found)) => found,
        Ok(None) => return Html(login_page(None, "")).into_response(),
        Err(e) => return unavailable(&e),
    };
    let pending = match web.app.authority.pending().await {
        Ok(pending) => pending,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(message_page(&format!(
                    "The held requests cannot be read now ({e}); reload in a moment."
                ))),
            )
                .into_response();
        }
    };
    Html(list_page(&session, flash.as_ref(), &pending, web.now())).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    code: String,
}

/// The client's address, when the listener gives one.
fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(peer)| peer.0.ip())
}

async fn login<S: Storage, A: AuditStore, C: Clock>(
    State(web): State<Arc<Web<S, A, C>>>,
    extensions: Extensions,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let refuse = |status: StatusCode, message: &str, name: &str| {
        (status, Html(login_page(Some(message), name))).into_response()
    };
    let Ok(Form(form)) = form else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Enter your approver name and the 6-digit code.",
            "",
        );
    };
    let name = form.name.trim();
    let code = form.code.trim();
    if name.is_empty() || code.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Enter your approver name and the 6-digit code.",
            name,
        );
    }
    let wrong = "That code is wrong or was already used. Wait for the next code in your \
                 authenticator app and try again.";
    // No approver can have a name outside this form; those need no count.
    if HostId::new(name).is_err() {
        return refuse(StatusCode::UNAUTHORIZED, wrong, name);
    }
    let client = client_of(peer_ip(&extensions));
    let unchecked = || {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "keyd could not check the code right now (see its log). Try again shortly.",
            name,
        )
    };
    let attempt = match web.app.authority.take_login(name, client).await {
        Ok(Ok(attempt)) => attempt,
        Err(e) => {
            tracing::error!(error = %e, "could not count an approver login attempt");
            return unchecked();
        }
        Ok(Err(refusal)) => {
            tracing::warn!(
                approver = name,
                ?client,
                ?refusal,
                "approver login refused: too many wrong codes"
            );
            let message = match refusal {
                Refusal::NameFromAddress => {
                    "Too many wrong codes for this name from your address. Wait a minute and \
                     try again."
                }
                Refusal::Address => {
                    "Too many wrong codes from your address. Wait a minute and try again."
                }
                Refusal::Untrusted => {
                    "Too many wrong codes from new addresses right now. Wait a minute and try \
                     again, from a network you logged in from before, or decide on the \
                     authority with `atrest keyd approve`."
                }
            };
            return refuse(StatusCode::TOO_MANY_REQUESTS, message, name);
        }
    };
    match web.app.authority.check_approver(name, code).await {
        Ok(()) => {
            // Not given back, the attempt stays counted until its window
            // is over: the approver is logged in all the same.
            if let Err(e) = web
                .app
                .authority
                .login_succeeded(name, client, attempt)
                .await
            {
                tracing::warn!(error = %e, "could not give back a good login's attempt");
            }
            let id = match web.start_session(name).await {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(error = %e, "could not store an approver's session");
                    return refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "keyd could not log you in right now (its database, see its log). \
                         Try again shortly with the next code.",
                        name,
                    );
                }
            };
            tracing::info!(approver = name, "approver logged in on the web page");
            let cookie = format!(
                "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/approve; \
                 Max-Age={SESSION_LIFETIME}"
            );
            let mut response = redirect();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(AuthorityError::BadApproverCode) => {
            tracing::warn!(approver = name, "wrong approver code on the web page");
            refuse(StatusCode::UNAUTHORIZED, wrong, name)
        }
        Err(e) => {
            tracing::error!(error = %e, "could not check an approver code");
            unchecked()
        }
    }
}

async fn logout<S: Storage, A: AuditStore, C: Clock>(
    State(web): State<Arc<Web<S, A, C>>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    match web.session(&headers).await {
        Ok(Some((session, _))) => {
            if check_csrf(&session, form).is_none() {
                return csrf_refused();
            }
            if let Err(e) = web
                .app
                .authority
                .storage()
                .delete_session(session.id_hash)
                .await
            {
                return unavailable(&e);
            }
        }
        Ok(None) => {}
        Err(e) => return unavailable(&e),
    }
    let mut response = redirect();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "atrest_approve=; HttpOnly; Secure; SameSite=Strict; Path=/approve; Max-Age=0",
        ),
    );
    response
}

/// Every form a session posts carries its token.
#[derive(Default, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
    /// [`CONFIRM_UNPROVEN`] on the confirmation page's approve form.
    #[serde(default)]
    confirm: String,
}

/// What the confirmation page's form says, so that an approval of an
/// unproven boot is never a single tap (nor a forged single post).
const CONFIRM_UNPROVEN: &str = "unproven";

/// The form, if it carries the session's token.
fn check_csrf(session: &Session, form: Result<Form<CsrfForm>, FormRejection>) -> Option<CsrfForm> {
    let form = form.map(|Form(f)| f).unwrap_or_default();
    atrest_core::constant_time_eq(form.csrf.as_bytes(), session.csrf.as_bytes()).then_some(form)
}

fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(message_page(
            "This form is out of date or did not come from this page. \
             Open the list again and decide from there.",
        )),
    )
        .into_response()
}

async fn decide<S: Storage, A: AuditStore, C: Clock>(
    State(web): State<Arc<Web<S, A, C>>>,
    headers: HeaderMap,
    Path((request, action)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let session = match web.session(&headers).await {
        Ok(Some((session, _))) => session,
        Ok(None) => {
            return (
                StatusCode::UNAUTHORIZED,
                Html(login_page(
                    Some("Your session has ended. Log in again."),
                    "",
                )),
            )
                .into_response();
        }
        Err(e) => return unavailable(&e),
    };
    let Some(form) = check_csrf(&session, form) else {
        return csrf_refused();
    };
    let approve = match action.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Html(message_page("No such action: approve or deny.")),
            )
                .into_response();
        }
    };
    if approve
        && form.confirm != CONFIRM_UNPROVEN
        && let Ok(view) = web.app.authority.pending_request(&request).await
        && view.boot == "unproven"
        && view.state == crate::held::PendingState::Pending
    {
        return Html(confirm_page(&session, &view, web.now())).into_response();
    }
    let actor = format!("web:{}", session.approver);
    let flash = match web.app.authority.decide(&request, approve, &actor).await {
        Ok(view) => Flash::Done(format!(
            "{} {} (boot {}).",
            if approve { "Approved" } else { "Denied" },
            view.host_id,
            view.boot_id
        )),
        Err(e) => {
            if matches!(e, AuthorityError::Audit(_) | AuthorityError::Storage(_)) {
                tracing::error!(error = %e, "could not record a decision from the web page");
            }
            Flash::Failed(format!("Not recorded: {e}"))
        }
    };
    web.set_flash(&session, &flash).await;
    redirect()
}

/// 303 to the list, so a reload does not post again.
fn redirect() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/approve")]).into_response()
}

/// Text safe inside HTML elements and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:17px/1.4 system-ui,sans-serif;margin:0;padding:16px;max-width:40em;\
margin-inline:auto;background:#f6f6f4;color:#111}\
h1{font-size:1.4em;margin:.2em 0 .6em}\
label{display:block;margin:.8em 0 .2em;font-weight:600}\
input{box-sizing:border-box;width:100%;font-size:1.2em;padding:12px;border:1px solid #888;\
border-radius:8px}\
button{font-size:1.15em;font-weight:600;padding:14px;border:0;border-radius:10px;width:100%;\
min-height:52px;margin-top:12px;color:#fff;background:#334}\
.row{display:flex;gap:10px}.row form{flex:1}\
.approve{background:#1a7f37}.deny{background:#b3261e}\
.card{background:#fff;border:1px solid #ccc;border-radius:12px;padding:14px;margin:14px 0}\
dl{display:grid;grid-template-columns:auto 1fr;gap:4px 12px;margin:0}\
dt{color:#555}dd{margin:0;overflow-wrap:anywhere}\
.msg{padding:12px;border-radius:8px;margin:12px 0}\
.ok{background:#dff3e3}.err{background:#fbe3e1}.expired{opacity:.5}\
.top{display:flex;justify-content:space-between;align-items:center;gap:10px}\
.top form button{width:auto;min-height:0;padding:8px 12px;margin:0;font-size:.9em;background:#667}\
a{color:#334}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style>\
         <script src=\"/approve/countdown.js\" defer></script></head><body>{body}</body></html>\n",
        escape(title)
    )
}

fn login_page(message: Option<&str>, name: &str) -> String {
    let message = message.map_or_else(String::new, |m| {
        format!("<p class=\"msg err\" role=\"alert\">{}</p>", escape(m))
    });
    page(
        "atrest keyd: log in",
        &format!(
            "<h1>atrest keyd approvals</h1>{message}\
             <form method=\"post\" action=\"/approve/login\">\
             <label for=\"name\">Approver name</label>\
             <input id=\"name\" name=\"name\" value=\"{}\" autocomplete=\"username\" \
             autocapitalize=\"none\" required>\
             <label for=\"code\">Code from your authenticator app</label>\
             <input id=\"code\" name=\"code\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" \
             maxlength=\"6\" autocomplete=\"one-time-code\" required>\
             <button type=\"submit\">Log in</button></form>",
            escape(name)
        ),
    )
}

fn message_page(message: &str) -> String {
    page(
        "atrest keyd",
        &format!(
            "<h1>atrest keyd approvals</h1><p class=\"msg err\" role=\"alert\">{}</p>\
             <p><a href=\"/approve\">Back to the list</a></p>",
            escape(message)
        ),
    )
}

fn expires_in(seconds: u64) -> String {
    if seconds >= 2 * 86_400 {
        return format!("{} d", seconds / 86_400);
    }
    if seconds >= 3600 {
        return match (seconds / 3600, seconds % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        };
    }
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

fn list_page(
    session: &Session,
    flash: Option<&Flash>,
    pending: &[PendingView],
    now: u64,
) -> String {
    let csrf = escape(&session.csrf);
    let mut body = format!(
        "<div class=\"top\" data-now=\"{now}\"><h1>Unlock requests</h1>\
         <form method=\"post\" action=\"/approve/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Log out</button></form></div>\
         <p>Logged in as <b>{}</b>. <a href=\"/approve\">Refresh</a></p>",
        escape(&session.approver)
    );
    match flash {
        Some(Flash::Done(text)) => {
            let _ = write!(
                body,
                "<p class=\"msg ok\" role=\"status\">{}</p>",
                escape(text)
            );
        }
        Some(Flash::Failed(text)) => {
            let _ = write!(
                body,
                "<p class=\"msg err\" role=\"alert\">{}</p>",
                escape(text)
            );
        }
        None => {}
    }
    if pending.is_empty() {
        body.push_str("<p>No request is waiting for an approver.</p>");
    }
    for view in pending {
        let id = escape(&view.id);
        let unproven = view.boot == "unproven";
        let _ = write!(
            body,
            "<section class=\"card\">{}{}<div class=\"row\">\
             <form method=\"post\" action=\"/approve/{id}/approve\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button class=\"approve\" type=\"submit\">{}</button></form>\
             <form method=\"post\" action=\"/approve/{id}/deny\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button class=\"deny\" type=\"submit\">Deny</button></form>\
             </div></section>",
            if unproven { UNPROVEN_WARNING } else { "" },
            request_details(view, now),
            // A second step follows: the confirmation page.
            if unproven { "Approve…" } else { "Approve" },
        );
    }
    page("atrest keyd: unlock requests", &body)
}

const UNPROVEN_WARNING: &str = "<p class=\"msg err unproven\" role=\"alert\"><b>Unproven \
    boot.</b> This request has the boot id of the boot that already unlocked, but not that \
    boot's ticket: it may come from a copy of the host's disk rather than the running host (or \
    the host lost /run). Approving hands the running boot's ticket to the requester.</p>";

/// What an approver judges a request by, as a `<dl>`.
fn request_details(view: &PendingView, now: u64) -> String {
    let last_boot = match (&view.last_boot_id, view.last_unlock_at) {
        (Some(boot), Some(at)) => format!("{} (last unlocked {})", escape(boot), when(at, now)),
        (Some(boot), None) => escape(boot),
        (None, _) => "none yet (first unlock)".to_owned(),
    };
    format!(
        "<dl>\
         <dt>Host</dt><dd class=\"host\">{}</dd>\
         <dt>Group</dt><dd>{}</dd>\
         <dt>Vault</dt><dd class=\"vault\">{}, keyslot {}</dd>\
         <dt>Host key</dt><dd class=\"key-id\">{}</dd>\
         <dt>Boot id</dt><dd class=\"boot-id\">{}</dd>\
         <dt>Boot</dt><dd>{}</dd>\
         <dt>Last boot</dt><dd class=\"last-boot\">{last_boot}</dd>\
         <dt>From</dt><dd>{}</dd>\
         <dt>Why</dt><dd class=\"reason\">{}</dd>\
         <dt>Made</dt><dd class=\"made\">{}</dd>\
         <dt>Expires in</dt><dd class=\"expires\" data-expires-at=\"{}\">{}</dd></dl>",
        escape(view.host_id.as_str()),
        escape(&view.group),
        escape(&view.vault_id),
        view.keyslot,
        escape(&view.key_id),
        escape(&view.boot_id),
        escape(&view.boot),
        escape(&view.source),
        escape(&view.reason),
        when(view.created_at, now),
        view.expires_at,
        expires_in(view.expires_at.saturating_sub(now)),
    )
}

/// The second step before approving an unproven boot.
fn confirm_page(session: &Session, view: &PendingView, now: u64) -> String {
    let csrf = escape(&session.csrf);
    let id = escape(&view.id);
    page(
        "atrest keyd: confirm",
        &format!(
            "<div data-now=\"{now}\"><h1>Approve an unproven boot?</h1></div>{UNPROVEN_WARNING}\
             <p>Approve only if you know the host itself asks (for example, its unlock \
             service was restarted after /run was cleared).</p>\
             <section class=\"card\">{}<div class=\"row\">\
             <form method=\"post\" action=\"/approve/{id}/approve\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"confirm\" value=\"{CONFIRM_UNPROVEN}\">\
             <button class=\"approve confirm\" type=\"submit\">Approve anyway</button></form>\
             <form method=\"post\" action=\"/approve/{id}/deny\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button class=\"deny\" type=\"submit\">Deny</button></form>\
             </div></section><p><a href=\"/approve\">Back to the list</a></p>",
            request_details(view, now)
        ),
    )
}

/// `2026-12-05T09:10:14Z (3 min ago)`: UTC, so approvers in several zones
/// and keyd's log agree.
fn when(unix: u64, now: u64) -> String {
    let utc = i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string());
    let distance = expires_in(unix.abs_diff(now));
    if unix == now {
        format!("{utc} (now)")
    } else if unix > now {
        format!("{utc} (in {distance})")
    } else {
        format!("{utc} ({distance} ago)")
    }
}

/// Counts each `data-expires-at` down from the server's `data-now` (so a
/// phone's wrong clock does not matter), and disables the buttons of an
/// expired request. Served as a file: the CSP allows no inline script.
const COUNTDOWN_JS: &str = r#"(function () {
  "use strict";
  var clock = document.querySelector("[data-now]");
  if (!clock) { return; }
  var skew = Number(clock.getAttribute("data-now")) - Date.now() / 1000;
  function text(seconds) {
    if (seconds <= 0) { return "expired"; }
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m === 0) { return s + " s"; }
    return s === 0 ? m + " min" : m + " min " + s + " s";
  }
  function tick() {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("[data-expires-at]").forEach(function (el) {
      var left = Math.floor(Number(el.getAttribute("data-expires-at")) - now);
      el.textContent = text(left);
      if (left <= 0) {
        var card = el.closest("section");
        if (card) {
          card.classList.add("expired");
          card.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        }
      }
    });
  }
  tick();
  setInterval(tick, 1000);
})();
"#;

async fn countdown() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        COUNTDOWN_JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::held::PendingState;

    fn session() -> Session {
        Session {
            id_hash: [0; 32],
            approver: "alice".into(),
            csrf: "token".into(),
        }
    }

    #[test]
    fn every_printed_value_is_escaped() {
        let hostile = "<script>alert('x')</script>\"&";
        let view = PendingView {
            id: hostile.into(),
            host_id: HostId::new("web-1").unwrap(),
            group: hostile.into(),
            boot_id: hostile.into(),
            boot: "first".into(),
            source: hostile.into(),
            reason: hostile.into(),
            created_at: 0,
            expires_at: 90,
            state: PendingState::Pending,
            decided_by: None,
            vault_id: hostile.into(),
            keyslot: 0,
            key_id: hostile.into(),
            last_boot_id: Some(hostile.into()),
            last_unlock_at: Some(0),
        };
        let mut session = session();
        session.approver = hostile.into();
        session.csrf = hostile.into();
        let html = list_page(
            &session,
            Some(&Flash::Failed(hostile.into())),
            std::slice::from_ref(&view),
            0,
        );
        let login = login_page(Some(hostile), hostile);
        let confirm = confirm_page(&session, &view, 0);
        for html in [html, login, message_page(hostile), confirm] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("'x'"), "{html}");
            assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
        }
    }

    #[test]
    fn expiry_reads_as_minutes_and_seconds() {
        assert_eq!(expires_in(45), "45 s");
        assert_eq!(expires_in(120), "2 min");
        assert_eq!(expires_in(599), "9 min 59 s");
        assert_eq!(expires_in(3 * 3600 + 60), "3 h 1 min");
        assert_eq!(expires_in(3 * 86_400), "3 d");
        assert_eq!(
            when(1_796_461_814, 1_796_461_814 + 180),
            "2026-12-05T09:10:14Z (3 min ago)"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; atrest_approve=xyz"),
        );
        assert_eq!(session_cookie(&headers), Some("xyz"));
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("atrest_approvex=1"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}
