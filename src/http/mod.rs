//! HTTP: one module per resource, merged into the service's router here.

mod admin;
mod connections;
mod error;
mod health;
mod limits;
mod metrics;
mod openapi;
mod status;
pub mod users;
mod webhook;

pub(crate) use connections::{ConnectionLimits, bind, serve};
pub use error::ApiError;
pub use limits::{IpNet, LimitSettings, RateLimiters};
pub use users::{ClerkSession, SyncedUser, Users, ensure_user_exists, user_json};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::store::{DeliveryQueue, Store};
use crate::sync::DeleteMode;
use crate::webhook::Verifier;

/// The path Clerk's dashboard is pointed at.
pub const WEBHOOK_PATH: &str = "/api/webhooks/clerk";

/// What the handlers share. An app embedding clerk-sync keeps one in its own state and
/// implements `FromRef` for it, so the extractors ([`ClerkSession`], [`SyncedUser`]) work in
/// its handlers. On shutdown it stops serving, then calls `deliveries.shutdown()` (see
/// [`DeliveryQueue::shutdown`]) and only then `store.close()`.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    /// Where the webhook endpoint hands verified events to be written (group commit). Its
    /// writers hold database connections until [`DeliveryQueue::shutdown`] stops them.
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
    let body_first = limits::BodyFirst {
        state: state.clone(),
        max_body_bytes,
        request_timeout: limits.request_timeout,
    };
    base.merge(webhook::router())
        .merge(users::router().layer(cors))
        .merge(openapi::router())
        .merge(status::router())
        // The ceiling keeps a burst from opening more work than the database takes. Bodies are
        // read before it (below), so a slow sender holds no slot.
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrency.max(1),
        ))
        // Probes answer even when every slot is taken: a full ceiling is load, not a dead process.
        .merge(health::router())
        // A body sent a byte a second is cut off with 503, which Svix retries; the body limit
        // (413) is enforced there too; axum's own default would cap at 2 MiB regardless.
        .layer(axum::middleware::from_fn_with_state(
            body_first,
            limits::read_body_first,
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(webhook::count_oversized))
        // Handlers log their own failures once, with what went wrong; the layer's default would
        // add an ERROR line for every 5xx, e.g. per request to an API that is switched off.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}
