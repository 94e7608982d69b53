//! HTTP: one module per resource, merged into the service's router here.

mod admin;
mod body_first;
mod connections;
mod error;
mod fallback;
mod health;
mod limits;
mod log_throttle;
mod metrics;
mod openapi;
mod state;
mod status;
mod users;
mod webhook;

pub(crate) use connections::{ConnectionLimits, bind, serve};
pub use error::ApiError;
pub(crate) use fallback::Users;
pub(crate) use limits::RateLimiters;
pub use limits::{IpNet, LimitSettings};
pub use state::AppState;
pub use users::{ClerkSession, SyncedUser};
pub use webhook::WEBHOOK_PATH;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// Everything `clerk-sync serve` answers on one address, under one set of global layers: the
/// webhook endpoint, the current-user API, `/healthz` and `/readyz`, `/metrics`, `/status` and
/// `/openapi.json`, behind one concurrency ceiling and request tracing.
///
/// This is the whole bundle. An app with routes of its own (its own `/healthz`, say) mounts
/// the pieces it wants instead: [`webhook_router`], [`users_router`], and the operator routes
/// [`health_router`], [`metrics_router`], [`status_router`] and [`openapi_router`]; merging
/// this bundle into a router that already has one of its paths panics.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    routes(state, max_body_bytes, true, &LimitSettings::default())
}

/// The webhook endpoint ([`WEBHOOK_PATH`]) alone, with what guards it: bodies over
/// `max_body_bytes` get 413, bodies are read in full within the default request timeout before
/// the handler runs (a slow sender gets 503, which Svix retries), deliveries that fail
/// verification are rate-limited per client address, and requests run under the default
/// concurrency ceiling ([`LimitSettings::default`]).
///
/// The guards wrap this route only, so the router merges next to an app's own routes without
/// touching them. Per-address limits need the client's address: serve the app with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
/// use clerk_sync::config::{DatabaseTarget, DEFAULT_MAX_BODY_BYTES, ServeConfig};
/// use clerk_sync::http::{users_router, webhook_router};
/// use clerk_sync::store::Store;
/// use clerk_sync::webhook::SigningSecret;
///
/// let dir = tempfile::tempdir()?;
/// let database = DatabaseTarget::Sqlite { path: dir.path().join("app.db") };
/// let (secret, _) = SigningSecret::generate();
/// let config = ServeConfig::new(database, vec![secret]);
/// let store = Store::connect(&config.database, &config.pool).await?;
/// store.migrate().await?;
/// let state = clerk_sync::app::build_state(&config, store.clone())?;
///
/// // The app keeps its own /healthz; clerk-sync adds the webhook and /api/users/me.
/// let app: Router = Router::new()
///     .route("/healthz", get(|| async { "ok" }))
///     .merge(webhook_router(state.clone(), DEFAULT_MAX_BODY_BYTES))
///     .merge(users_router(state.clone()));
/// # drop(app);
/// // On shutdown: stop serving, then let queued events be written, then close the pool.
/// state.deliveries.shutdown().await;
/// store.close().await;
/// # Ok(())
/// # }
/// ```
pub fn webhook_router(state: AppState, max_body_bytes: usize) -> Router {
    let limits = LimitSettings::default();
    let body_first = body_first::BodyFirst {
        state: state.clone(),
        max_body_bytes,
        request_timeout: limits.request_timeout,
    };
    // `route_layer`, not `layer`: an app's fallback (its 404s) must not read bodies or count
    // against the ceiling because this router was merged last. Same order as in `routes`.
    webhook::router()
        .route_layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrency.max(1),
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            body_first,
            body_first::read_body_first,
        ))
        .route_layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn(webhook::count_oversized))
        .with_state(state)
}

/// The current-user API (`GET` and `PATCH /api/users/me`, `GET /api/users/me/organizations`)
/// alone, with its CORS policy: browsers
/// on the authorized parties' origins (`CLERK_AUTHORIZED_PARTIES`) may call it. It answers 503
/// when the configuration verifies no sessions (neither a secret key nor a JWT key). Requests
/// are rate-limited per user and per client address as in `serve`.
///
/// Mounted next to an app's own routes like [`webhook_router`] (see its example for building
/// the state). An app that only needs the signed-in user in its own handlers uses the
/// extractors ([`SyncedUser`], [`ClerkSession`]) and may mount no user routes at all; with a
/// state of its own, it lets them find clerk-sync's through `FromRef`:
///
/// ```
/// use axum::{Router, extract::FromRef, routing::get};
/// use clerk_sync::http::{AppState, SyncedUser, users_router};
///
/// #[derive(Clone)]
/// struct MyState {
///     clerk: AppState,
///     greeting: &'static str,
/// }
///
/// impl FromRef<MyState> for AppState {
///     fn from_ref(state: &MyState) -> AppState {
///         state.clerk.clone()
///     }
/// }
///
/// async fn profile(SyncedUser { user, .. }: SyncedUser) -> String {
///     format!("your id is {}", user.id)
/// }
///
/// fn app(clerk: AppState) -> Router {
///     Router::new()
///         .route("/profile", get(profile))
///         .with_state(MyState { clerk: clerk.clone(), greeting: "hello" })
///         .merge(users_router(clerk))
/// }
/// ```
pub fn users_router(state: AppState) -> Router {
    let cors = cors(&state.cors_origins);
    users::router().route_layer(cors).with_state(state)
}

/// `/healthz` (the process answers) and `/readyz` (the database answers within a few seconds),
/// for an app that has no probes of its own.
pub fn health_router(state: AppState) -> Router {
    health::router().with_state(state)
}

/// The operator's `/status` page and its replay button; off (404) unless the state has an
/// admin token.
pub fn status_router(state: AppState) -> Router {
    status::router().with_state(state)
}

/// `/openapi.json`: the OpenAPI document of the webhook endpoint and the user API.
pub fn openapi_router(state: AppState) -> Router {
    openapi::router().with_state(state)
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

/// `/metrics` alone (Prometheus text; behind the state's bearer token when it has one), for a
/// separate listen address or an app's own operator port.
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
    let body_first = body_first::BodyFirst {
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
            body_first::read_body_first,
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
