//! HTTP: one module per resource, merged into the service's router here.

mod error;
mod health;
mod limits;
mod metrics;
mod openapi;
mod status;
pub mod users;
mod webhook;

pub use error::ApiError;
pub use limits::{IpNet, LimitSettings, RateLimiters};
pub use users::{ClerkSession, SyncedUser, Users, ensure_user_exists, user_json};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::store::{DeliveryQueue, Store};
use crate::sync::DeleteMode;
use crate::webhook::Verifier;

/// The path Clerk's dashboard is pointed at.
pub const WEBHOOK_PATH: &str = "/api/webhooks/clerk";

/// What the handlers share. An app embedding clerk-sync keeps one in its own state and
/// implements `FromRef` for it, so the extractors ([`ClerkSession`], [`SyncedUser`]) work in
/// its handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    /// Where the webhook endpoint hands verified events to be written (group commit).
    pub deliveries: DeliveryQueue,
    pub verifier: Arc<Verifier>,
    pub delete_mode: DeleteMode,
    pub users: Arc<Users>,
    /// Bearer token `/metrics` requires, if any.
    pub metrics_token: Option<Arc<str>>,
    /// Token that opens `/status` (`CLERK_SYNC_ADMIN_TOKEN`); the page is off without it.
    pub admin_token: Option<Arc<str>>,
    pub limiters: Arc<RateLimiters>,
    /// Longest time one database operation may take before the request gets 503.
    pub db_timeout: std::time::Duration,
    /// Origins a browser may call the user API from (`CLERK_AUTHORIZED_PARTIES`).
    pub cors_origins: Vec<String>,
}

/// The service's routes: the webhook endpoint, the current-user API, the health checks,
/// `/metrics` and the OpenAPI document. An app embedding clerk-sync can merge this into its
/// own router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    routes(state, max_body_bytes, true, &LimitSettings::default())
}

/// Lets browsers on the authorized parties' origins call the user API from another origin
/// (the same origins session tokens are accepted for); none without a list.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::PATCH])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_credentials(true)
        .max_age(std::time::Duration::from_secs(600))
}

/// `/metrics` alone, for a separate listen address.
pub fn metrics_router(state: AppState) -> Router {
    metrics::router().with_state(state)
}

pub(crate) fn routes(
    state: AppState,
    max_body_bytes: usize,
    with_metrics: bool,
    limits: &LimitSettings,
) -> Router {
    let base = if with_metrics {
        metrics::router()
    } else {
        Router::new()
    };
    let cors = cors(&state.cors_origins);
    base.merge(webhook::router())
        .merge(users::router().layer(cors))
        .merge(health::router())
        .merge(openapi::router())
        .merge(status::router())
        // Handlers log their own failures once, with what went wrong; the layer's default would
        // add an ERROR line for every 5xx, e.g. per request to an API that is switched off.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // The body limit is enforced by RequestBodyLimitLayer (413 before reading when the
        // length is declared); axum's own default would cap at 2 MiB regardless.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(axum::middleware::from_fn(webhook::count_oversized))
        // A slow client (or a body sent a byte a second) is cut off with 503, which Svix
        // retries; the ceiling keeps a burst from opening more work than the database takes.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrency.max(1),
        ))
        .with_state(state)
}
