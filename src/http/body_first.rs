//! Bodies read in full, within the request's deadline and the body budget, before a request
//! reaches the concurrency ceiling and its handler.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;

use super::error::retry_later;
use super::log_throttle::LogThrottle;
use super::state::AppState;
use super::webhook::{WEBHOOK_PATH, refuse_on_headers};

/// How often a line about requests cut for being slow or over the budget is logged at most.
const CUT_LOG_EVERY: Duration = Duration::from_secs(10);
static SLOW_BODY_LOG: LogThrottle = LogThrottle::new(CUT_LOG_EVERY);
static BODY_BUDGET_LOG: LogThrottle = LogThrottle::new(CUT_LOG_EVERY);

/// What [`read_body_first`] needs besides the handlers' state.
#[derive(Clone)]
pub(crate) struct BodyFirst {
    pub(crate) state: AppState,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
}

/// Reads a request's body in full before the request goes on to the concurrency ceiling and its
/// handler, all within the request's deadline (`CLERK_SYNC_REQUEST_TIMEOUT`), so that clients
/// sending slowly wait here, holding neither a slot nor more than the body budget allows:
///
/// * a declared length over the limit gets 413 before anything is read (a streamed body, once
///   it passes the limit);
/// * a webhook whose headers alone condemn it (missing, malformed, stale timestamp) is refused
///   before its body is read, and counted against its address like any failed verification;
/// * a body not complete by the deadline gets 503 and its connection is closed (`slow_body`);
/// * a body that would take the buffered bytes over the budget, or its client over its share,
///   gets 503 with `Retry-After` (`body_budget`).
///
/// Requests cut before their webhook was verified are charged to their address's limit of
/// unverified requests.
pub(crate) async fn read_body_first(
    State(first): State<BodyFirst>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + first.request_timeout;
    let limiters = &first.state.limiters;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = limiters.client_address(peer, request.headers());
    let webhook = request.uri().path() == WEBHOOK_PATH;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > first.max_body_bytes as u64) {
        return too_large(first.max_body_bytes);
    }
    if webhook && let Some(refused) = refuse_on_headers(&first.state, client, request.headers()) {
        return refused;
    }
    let (parts, mut body) = request.into_parts();
    let mut reservation = limiters.bodies.reservation(client);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    if !axum::body::HttpBody::is_end_stream(&body) {
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    // The client went away or sent a malformed chunk; it is not listening.
                    tracing::debug!(error = %e, "request body unreadable");
                    return (
                        StatusCode::BAD_REQUEST,
                        [(header::CONNECTION, "close")],
                        axum::Json(json!({"error": "the request body could not be read"})),
                    )
                        .into_response();
                }
                Err(_) => {
                    cut_slow_body(&first, client, webhook, received);
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::CONNECTION, "close")],
                        axum::Json(json!({
                            "error": "the request body did not arrive within the request timeout"
                        })),
                    )
                        .into_response();
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            received += data.len();
            if received > first.max_body_bytes {
                return too_large(first.max_body_bytes);
            }
            if !reservation.grow(data.len(), first.max_body_bytes) {
                cut_over_budget(&first, client, webhook, received);
                let mut response =
                    retry_later("too many request bodies are arriving at once, retry later");
                // The rest of this body is not read: the connection cannot carry another request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
            chunks.push(data);
        }
    }
    let body = match chunks.len() {
        0 => Body::empty(),
        1 => Body::from(chunks.pop().unwrap_or_default()),
        _ => Body::from(chunks.concat()),
    };
    let request = Request::from_parts(parts, body);
    // The rest of the deadline covers the wait for a slot and the handler; a handler cut short
    // rolls its transaction back, and 503 tells Svix to deliver again.
    let response = tokio::time::timeout_at(deadline, next.run(request))
        .await
        .unwrap_or_else(|_| retry_later("the request took too long, retry later"));
    drop(reservation);
    response
}

fn too_large(max_body_bytes: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(json!({
            "error": format!("the request body is over the limit of {max_body_bytes} bytes \
                              (CLERK_SYNC_MAX_BODY_BYTES)")
        })),
    )
        .into_response()
}

fn cut_slow_body(first: &BodyFirst, client: Option<IpAddr>, webhook: bool, received: usize) {
    crate::metrics::connection_cut("slow_body");
    if webhook && let Some(client) = client {
        let _ = first.state.limiters.unverified(client);
    }
    if let Some(count) = SLOW_BODY_LOG.due() {
        tracing::warn!(
            count,
            client = ?client,
            received,
            timeout_s = first.request_timeout.as_secs_f64(),
            "cut requests whose body did not arrive within CLERK_SYNC_REQUEST_TIMEOUT \
             (count since the last such line; latest client shown)"
        );
    }
}

fn cut_over_budget(first: &BodyFirst, client: Option<IpAddr>, webhook: bool, received: usize) {
    crate::metrics::connection_cut("body_budget");
    if webhook && let Some(client) = client {
        let _ = first.state.limiters.unverified(client);
    }
    if let Some(count) = BODY_BUDGET_LOG.due() {
        tracing::warn!(
            count,
            client = ?client,
            received,
            "refused request bodies over the budget of buffered bytes \
             (CLERK_SYNC_BODY_BUFFER_BYTES, a quarter per address) with 503 \
             (count since the last such line; latest client shown)"
        );
    }
}
