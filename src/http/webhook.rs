//! `POST /api/webhooks/clerk`: verify, parse, apply, and answer with a status that tells Svix
//! whether a retry can help (2xx: never resend; 4xx: the request itself is wrong; 503: try later).

use std::time::{Duration, Instant};

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::log_throttle::LogThrottle;
use super::state::AppState;
use crate::clerk::{EventKind, parse_event};
use crate::ingest::Delivery;
use crate::store::StoreError;
use crate::sync::Outcome;
use crate::webhook::Rejection;

/// The path Clerk's dashboard is pointed at.
pub const WEBHOOK_PATH: &str = "/api/webhooks/clerk";

pub(super) fn router() -> Router<AppState> {
    Router::new().route(WEBHOOK_PATH, post(receive))
}

/// Bodies over the limit are refused by the body-limit layer, often before any handler runs;
/// this middleware sits outside that layer to count them.
pub(super) async fn count_oversized(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let webhook = request.uri().path() == WEBHOOK_PATH;
    let response = next.run(request).await;
    if webhook && response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        crate::metrics::webhook_rejected("too_large");
    }
    response
}

async fn receive(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let delivery = match state.verifier.verify(&headers, &body) {
        Ok(delivery) => delivery,
        Err(rejection) => {
            let client = state.limiters.client_address(peer.map(|p| p.0.0), &headers);
            return refuse(&state, client, rejection);
        }
    };
    let event = match parse_event(&body) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(svix_id = %delivery.svix_id, reason = "not_an_event", "webhook rejected: {e}");
            crate::metrics::webhook_rejected("not_an_event");
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not a Clerk event: {e}")})),
            )
                .into_response();
        }
    };
    // Verification already required UTF-8 (the signature is computed over text).
    let payload = String::from_utf8_lossy(&body).into_owned();
    let svix_id = delivery.svix_id.clone();
    let event_type = event.event_type.clone();
    let user_id = event.user_id().unwrap_or("-").to_owned();
    let organization_id = event.organization_id().unwrap_or("-").to_owned();
    let membership_id = event.membership_id().unwrap_or("-").to_owned();
    let unusable = match &event.kind {
        EventKind::Unusable { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    let recorded = tokio::time::timeout(
        state.db_timeout,
        state.deliveries.record(Delivery {
            event,
            svix_id: delivery.svix_id,
            svix_timestamp: delivery.timestamp,
            payload,
        }),
    )
    .await
    .unwrap_or_else(|_| Err(StoreError::TimedOut(state.db_timeout)));
    match recorded {
        Ok(outcome) => {
            crate::metrics::event_processed(
                &event_type,
                outcome,
                started.elapsed(),
                delivery.timestamp,
            );
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            match (outcome, unusable) {
                (Outcome::Failed, Some(reason)) => tracing::warn!(
                    %svix_id, %event_type, user_id, organization_id, membership_id,
                    outcome = outcome.as_str(), duration_ms, error = %reason,
                    "event stored as failed"
                ),
                _ => tracing::info!(
                    %svix_id, %event_type, user_id, organization_id, membership_id,
                    outcome = outcome.as_str(), duration_ms,
                    "event processed"
                ),
            }
            (StatusCode::OK, Json(json!({"outcome": outcome.as_str()}))).into_response()
        }
        Err(e) => {
            crate::metrics::webhook_request("unavailable");
            tracing::error!(
                %svix_id, %event_type, user_id, organization_id, membership_id, error = %e,
                "event not stored; the sender will retry"
            );
            super::error::retry_later("database unavailable, retry later")
        }
    }
}

/// Refuses a request on its headers alone when they cannot belong to a delivery (missing,
/// malformed, or a timestamp out of tolerance), before its body is read: the body can change
/// nothing about those, and a junk sender should not get to make us wait for it.
pub(super) fn refuse_on_headers(
    state: &AppState,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Option<Response> {
    // Verification checks the headers before the signature; over an empty body it costs one
    // HMAC of a few bytes per secret.
    match state.verifier.verify(headers, &[]) {
        Err(
            rejection @ (Rejection::MissingHeader(_)
            | Rejection::MalformedHeader(_)
            | Rejection::TimestampTooOld
            | Rejection::TimestampInFuture),
        ) => Some(refuse(state, client, rejection)),
        _ => None,
    }
}

/// Lines about one address's rejections once it is over its limit: a flood would otherwise
/// write one per request.
static RATE_LIMITED_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

fn refuse(state: &AppState, client: Option<IpAddr>, rejection: Rejection) -> Response {
    // Only requests that fail verification count against their address: a flood of junk from
    // Svix's own addresses must not starve its signed deliveries.
    if let Some(wait) = client.and_then(|c| state.limiters.unverified(c).err()) {
        crate::metrics::rate_limited("webhook_unverified");
        if let Some(count) = RATE_LIMITED_LOG.due() {
            tracing::warn!(reason = rejection.reason(), client = ?client, count, "webhook rejected and rate limited: {rejection} (count since the last such line)");
        }
        return ApiError::RateLimited(Some(wait)).into_response();
    }
    tracing::warn!(reason = rejection.reason(), client = ?client, "webhook rejected: {rejection}");
    crate::metrics::webhook_rejected(rejection.reason());
    rejected(rejection)
}

fn rejected(rejection: Rejection) -> Response {
    let status = match rejection {
        Rejection::MissingHeader(_) | Rejection::MalformedHeader(_) | Rejection::BodyNotUtf8 => {
            StatusCode::BAD_REQUEST
        }
        Rejection::TimestampTooOld | Rejection::TimestampInFuture | Rejection::InvalidSignature => {
            StatusCode::UNAUTHORIZED
        }
    };
    (
        status,
        Json(json!({"error": rejection.to_string(), "reason": rejection.reason()})),
    )
        .into_response()
}
