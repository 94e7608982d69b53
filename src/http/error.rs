//! Errors of the user API, mapped to status codes that tell the client whether to retry, with
//! JSON bodies that never leak internals (the detail goes to the log).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client is asked to wait when a dependency (the database, Clerk) is away.
const RETRY_AFTER_SECONDS: u64 = 5;

/// `503 Service Unavailable` with `Retry-After`: a dependency is away and a retry soon can
/// work. The user API and the webhook answer alike, so a sender sees one shape from both.
pub(crate) fn retry_later(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS))],
        Json(json!({"error": message})),
    )
        .into_response()
}

/// Why the user API or an extractor ([`super::SyncedUser`], [`super::ClerkSession`]) refused a
/// request; as a response, a status code and a JSON `{"error": ...}` body safe to show the
/// client.
#[derive(Debug)]
pub enum ApiError {
    /// No session token at all.
    SignInRequired,
    /// A token that does not prove a session (the reason is logged, not told).
    InvalidSession,
    /// `404`: the user is deleted, or not in the table and cannot be fetched; the text says
    /// which.
    NotFound(String),
    /// Input that fails validation; names the field.
    Invalid {
        /// The field at fault (e.g. `firstName`), or `body` when the body as a whole is wrong.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Clerk refused the change for a reason of its own.
    Rejected(String),
    /// `429`: over the per-user or per-address limit, or Clerk's; `Retry-After` says how long
    /// to wait (one second when unknown).
    RateLimited(Option<Duration>),
    /// A dependency (database, Clerk) is away; retrying later can work.
    Unavailable(String),
    /// The server lacks the configuration for this; the message says what to set.
    NotConfigured(String),
    /// `500`: what should not happen (e.g. Clerk sent a user that cannot be stored); the
    /// detail is only logged.
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::SignInRequired => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "sign-in required"}),
            ),
            ApiError::InvalidSession => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid session"}),
            ),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, json!({"error": message})),
            ApiError::Invalid { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": message, "field": field}),
            ),
            ApiError::Rejected(message) => {
                (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": message}))
            }
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "too many requests"}),
            ),
            ApiError::Unavailable(message) => return retry_later(message),
            ApiError::NotConfigured(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({"error": message}))
            }
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error"}),
            ),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::SignInRequired => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidSession => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            ApiError::RateLimited(retry_after) => {
                let seconds = retry_after.map_or(1, |d| d.as_secs().max(1));
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ => {}
        }
        response
    }
}
