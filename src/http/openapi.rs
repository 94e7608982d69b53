//! `GET /openapi.json`: the HTTP API described for client generators. The document is written
//! by hand next to the code; a test checks it against the routes and the JSON they answer.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::state::AppState;

/// The OpenAPI 3.1 document of clerk-sync's HTTP API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
