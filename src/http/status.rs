//! `GET /status`: a server-rendered page for operators (being built).

use axum::Router;

use super::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
}
