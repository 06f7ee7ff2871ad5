//! The approval web page (see [`routes`]).

use std::sync::Arc;

use atrest_audit::{AuditStore, Clock};
use axum::Router;

use crate::http::AppState;
use crate::storage::Storage;

/// `/approve`: approvers log in with a TOTP code and approve or deny held
/// requests from a phone.
pub fn routes<S: Storage, A: AuditStore, C: Clock>(
    _state: Arc<AppState<S, A, C>>,
) -> Router<Arc<AppState<S, A, C>>> {
    Router::new()
}
