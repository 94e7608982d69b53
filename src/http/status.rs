//! `GET /status`: a page for operators, rendered on the server. Events per minute by outcome
//! over the last hour (an inline SVG chart), the latest events (users', organizations' and
//! memberships'), the failed ones with their error and a button replaying each, the users,
//! organizations and memberships counted, the delivery lag, and whether the database and
//! Clerk's API answer. No JavaScript and nothing fetched from elsewhere: one HTML document
//! with its CSS and SVG inline.
//!
//! Who may see it and press its buttons is [`super::admin`]'s business; how it looks is
//! [`html`]'s. This module reads what the page shows and answers the replay button.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};

use super::admin::{Admin, FormRefused};
use super::fallback::Users;
use super::state::AppState;

mod html;
mod page;

use html::{flash, render};
use page::{CHART_MINUTES, ClerkHealth, FAILED_COUNTED_UP_TO, Figures, OUTCOMES, PageData};

/// Events listed.
const LATEST_EVENTS: usize = 20;
/// Events the delivery lag is measured over.
const LAG_SAMPLE: i64 = 100;
/// Failed events listed (the oldest beyond that are counted, not listed).
const FAILED_LISTED: i64 = 50;
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const FIGURES_TIMEOUT: Duration = Duration::from_secs(5);
const CLERK_TIMEOUT: Duration = Duration::from_secs(3);
/// Clerk's API is asked at most this often, however often the page is loaded.
const CLERK_CHECK_EVERY: Duration = Duration::from_secs(30);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(page))
        .route("/status/replay/{svix_id}", post(replay))
}

// ---------------------------------------------------------------------------------------------
// Replay

async fn replay(
    admin: Admin,
    State(state): State<AppState>,
    Path(svix_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Err(refused) = admin.check_form(&headers, &uri, &body) {
        match refused {
            FormRefused::CrossOrigin => {
                tracing::warn!(svix_id, "status page: cross-origin replay refused");
            }
            FormRefused::NoFormToken => tracing::warn!(
                svix_id,
                "status page: replay without the form's token refused"
            ),
        }
        return refused.into_response();
    }
    let result = match state.store.replay(&svix_id, state.delete_mode).await {
        Ok(Some(outcome)) => {
            tracing::info!(
                svix_id,
                outcome = outcome.as_str(),
                "status page: event replayed"
            );
            outcome.as_str()
        }
        Ok(None) => "missing",
        Err(e) => {
            tracing::warn!(svix_id, error = %e, "status page: replay failed");
            "error"
        }
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("replayed", &svix_id)
        .append_pair("result", result)
        .finish();
    // Relative, so the page also works behind a proxy that mounts it under a path prefix:
    // from /status/replay/{id}, ../../status is /status.
    let location = format!("../../status?{query}");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// What the page shows

async fn page(admin: Admin, State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let now = Utc::now();
    let current_minute = now.timestamp().div_euclid(60);
    let first_minute = current_minute - (CHART_MINUTES - 1);
    let ((database, figures), clerk) = tokio::join!(
        read_database(&state, first_minute, current_minute),
        clerk_health(&state.users)
    );
    let data = PageData {
        now,
        first_minute,
        backend: state.store.backend(),
        database,
        figures,
        clerk,
    };
    let html = render(&data, flash(query.as_deref()), &admin.form_token());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing but the inline CSS may load or run; nobody may frame the page.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Not `no-referrer`: with it, a browser sends `Origin: null` with the replay form.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html.into_string(),
    )
        .into_response()
}

/// Pings the database, then (if it answered) reads the figures, each with a time limit.
async fn read_database(
    state: &AppState,
    first_minute: i64,
    current_minute: i64,
) -> (Result<Duration, String>, Result<Figures, String>) {
    let started = Instant::now();
    let database = match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PING_TIMEOUT.as_secs())),
    };
    if database.is_err() {
        return (
            database,
            Err("not read: the database does not answer".into()),
        );
    }
    let at_minute = |minute: i64| {
        DateTime::from_timestamp(minute * 60, 0)
            .unwrap_or_default()
            .naive_utc()
    };
    let read = state.store.status_figures(
        at_minute(first_minute),
        at_minute(current_minute + 1),
        LAG_SAMPLE.max(LATEST_EVENTS as i64),
        FAILED_LISTED,
        FAILED_COUNTED_UP_TO as i64,
    );
    let figures = match tokio::time::timeout(FIGURES_TIMEOUT, read).await {
        Ok(Ok(f)) => {
            let mut counts = vec![[0u64; OUTCOMES.len() + 1]; CHART_MINUTES as usize];
            for m in &f.per_minute {
                let Some(slot) = usize::try_from(m.minute - first_minute)
                    .ok()
                    .and_then(|i| counts.get_mut(i))
                else {
                    continue;
                };
                let series = OUTCOMES
                    .iter()
                    .position(|(o, _)| *o == m.outcome)
                    .unwrap_or(OUTCOMES.len());
                slot[series] += m.count;
            }
            let lags_ms = f.latest.iter().map(|e| e.delivery_lag_ms()).collect();
            let organizations = f.organizations;
            Ok(Figures {
                counts,
                latest: f.latest.into_iter().take(LATEST_EVENTS).collect(),
                failed: f.failed,
                failed_count: f.failed_count,
                lags_ms,
                live_users: f.users.live,
                soft_deleted_users: f.users.soft_deleted,
                estimated_users: f.users.estimated_rows,
                organizations,
            })
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("not read within {} s", FIGURES_TIMEOUT.as_secs())),
    };
    (database, figures)
}

/// One cached check per service (per [`Users`]): page loads share it, and only one of them
/// asks Clerk when it is out of date.
type ClerkSlot = Arc<tokio::sync::Mutex<Option<(Instant, Result<u64, String>)>>>;
static CLERK_CHECKS: Mutex<Vec<(Weak<Users>, ClerkSlot)>> = Mutex::new(Vec::new());

/// Whether Clerk's API answers (`GET /v1/users/count`, cheap), asked at most every
/// [`CLERK_CHECK_EVERY`] and waited for at most [`CLERK_TIMEOUT`].
async fn clerk_health(users: &Arc<Users>) -> ClerkHealth {
    let Some(api) = &users.clerk else {
        return ClerkHealth::NotConfigured;
    };
    let slot = {
        let mut checks = CLERK_CHECKS.lock().unwrap_or_else(PoisonError::into_inner);
        checks.retain(|(owner, _)| owner.strong_count() > 0);
        match checks
            .iter()
            .find(|(owner, _)| std::ptr::eq(owner.as_ptr(), Arc::as_ptr(users)))
        {
            Some((_, slot)) => slot.clone(),
            None => {
                let slot = ClerkSlot::default();
                checks.push((Arc::downgrade(users), slot.clone()));
                slot
            }
        }
    };
    let mut cached = slot.lock().await;
    if let Some((at, result)) = cached
        .as_ref()
        .filter(|(at, _)| at.elapsed() < CLERK_CHECK_EVERY)
    {
        return ClerkHealth::Checked {
            at: *at,
            result: result.clone(),
        };
    }
    let result = match tokio::time::timeout(CLERK_TIMEOUT, api.count_users()).await {
        Ok(Ok(count)) => Ok(count),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CLERK_TIMEOUT.as_secs())),
    };
    if let Err(e) = &result {
        tracing::warn!(error = %e, "status page: Clerk's API check failed");
    }
    let at = Instant::now();
    *cached = Some((at, result.clone()));
    ClerkHealth::Checked { at, result }
}
