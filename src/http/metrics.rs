//! `GET /metrics`: Prometheus text format. Open by default (as scrapers expect); a bearer token
//! (`CLERK_SYNC_METRICS_TOKEN`) can close it, and `CLERK_SYNC_METRICS_LISTEN` moves it to a
//! separate address. Database gauges are read at scrape time, so they are never stale.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::admin::{bearer_token, same_secret};
use super::state::AppState;

/// A scrape must not hang on a database that is away.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        // Constant time: how long a wrong guess takes tells nothing of the right token.
        if !given.is_some_and(|g| same_secret(g.as_bytes(), expected.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics need the bearer token set in CLERK_SYNC_METRICS_TOKEN\n",
            )
                .into_response();
        }
    }
    let (failed, inbox) = tokio::join!(
        tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.store.failed_event_count()),
        tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.store.inbox_event_count()),
    );
    let (up, failed) = match failed {
        Ok(Ok(count)) => (true, Some(count)),
        _ => (false, None),
    };
    // Unanswered: the gauge keeps its last value, as the failed-events one does.
    if let Ok(Ok(events)) = inbox {
        crate::metrics::set_inbox_events(events);
    }
    let (idle, in_use, max) = state.store.pool_stats();
    crate::metrics::set_database(up, failed, idle, in_use, max);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::install().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("BEARER  s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
    }
}
