//! `GET /status`: a page for operators, rendered on the server. Events per minute by outcome
//! over the last hour (an inline SVG chart), the latest events, the failed ones with their error
//! and a button replaying each, the users counted, the delivery lag, and whether the database
//! and Clerk's API answer. No JavaScript and nothing fetched from elsewhere: one HTML document
//! with its CSS and SVG inline.
//!
//! Off (404) unless `CLERK_SYNC_ADMIN_TOKEN` is set. The token is accepted as a bearer token
//! (scripts) or as the password of HTTP Basic auth with any user name (a browser asks for it).
//! Replaying (`POST /status/replay/{svix_id}`) needs the same, and refuses a request from
//! another origin: its `Origin`, when sent, must name this host, and a browser's form must carry
//! a token derived from the admin token (a cross-site page cannot read it).

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::{AppState, Users};
use crate::sync::Outcome;

/// The challenge a browser answers by asking for a user name and password.
const CHALLENGE: &str = r#"Basic realm="clerk-sync", charset="UTF-8""#;
/// Minutes the chart covers, the current one included.
const CHART_MINUTES: i64 = 60;
/// Events listed.
const LATEST_EVENTS: usize = 20;
/// Events the delivery lag is measured over.
const LAG_SAMPLE: i64 = 100;
/// Failed events listed (the oldest beyond that are counted, not listed).
const FAILED_LISTED: i64 = 50;
/// Failed events are counted up to this many (the page says "10,000+").
const FAILED_COUNTED_UP_TO: u64 = 10_000;
/// Longest text shown of an id or an error (they come from the network).
const MAX_ID_CHARS: usize = 200;
const MAX_ERROR_CHARS: usize = 1_000;
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const FIGURES_TIMEOUT: Duration = Duration::from_secs(5);
const CLERK_TIMEOUT: Duration = Duration::from_secs(3);
/// Clerk's API is asked at most this often, however often the page is loaded.
const CLERK_CHECK_EVERY: Duration = Duration::from_secs(30);
/// What the replay form's token is an HMAC of (keyed with the admin token).
const FORM_TOKEN_PURPOSE: &str = "clerk-sync status page replay form";
/// The page reloads itself this often (a plain `<meta>` refresh).
const REFRESH_SECONDS: u32 = 60;

/// Outcomes in the chart's stacking order, with their colour. `duplicate` is never stored.
const OUTCOMES: [(&str, &str); 9] = [
    ("created", "#2e7d32"),
    ("updated", "#1e88e5"),
    ("unchanged", "#90a4ae"),
    ("stale", "#f9a825"),
    ("tombstoned", "#8e24aa"),
    ("deleted", "#ef6c00"),
    ("not_found", "#8d6e63"),
    ("ignored", "#cfd8dc"),
    ("failed", "#d32f2f"),
];
/// Any outcome a later version might add.
const OTHER: (&str, &str) = ("other", "#546e7a");

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(page))
        .route("/status/replay/{svix_id}", post(replay))
}

// ---------------------------------------------------------------------------------------------
// Access

/// How a request proved it holds the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// `Authorization: Bearer`: a script; browsers never send it on their own.
    Bearer,
    /// HTTP Basic auth: a browser, which sends it with any request to this origin.
    Basic,
}

/// Why a request may not see the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// No admin token is configured: the page does not exist.
    Off,
    /// No token, or the wrong one.
    Unauthorized,
    /// Too many wrong tokens from this address: shut out for this long, right token or not
    /// (answering a right guess with 200 would keep guessing worthwhile).
    RateLimited(Duration),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Off => (
                StatusCode::NOT_FOUND,
                "the status page is off: start clerk-sync with CLERK_SYNC_ADMIN_TOKEN set to open \
                 it here (then send the token as a bearer token, or as the password of HTTP Basic \
                 auth with any user name)\n",
            )
                .into_response(),
            Denied::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, CHALLENGE)],
                "the status page needs the admin token (CLERK_SYNC_ADMIN_TOKEN): as a bearer \
                 token, or as the password of HTTP Basic auth with any user name\n",
            )
                .into_response(),
            Denied::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
                "too many wrong admin tokens from this address: wait and try again\n",
            )
                .into_response(),
        }
    }
}

/// The admin token and how the request proved it has it. Wrong tokens are counted per client
/// address like unverified webhooks (`CLERK_SYNC_RATE_LIMIT_UNVERIFIED` a minute).
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<(Arc<str>, Credential), Denied> {
    let token = state.admin_token.clone().ok_or(Denied::Off)?;
    let client = state.limiters.client_address(peer, headers);
    if let Some(wait) = client.and_then(|c| state.limiters.admin_shut_out(c)) {
        crate::metrics::rate_limited("status_page");
        return Err(Denied::RateLimited(wait));
    }
    check_token(token, headers).ok_or_else(|| {
        match client.and_then(|c| state.limiters.admin_failure(c).err()) {
            Some(wait) => {
                crate::metrics::rate_limited("status_page");
                tracing::warn!(client = ?client, "status page: too many wrong admin tokens, address shut out");
                Denied::RateLimited(wait)
            }
            None => Denied::Unauthorized,
        }
    })
}

/// The admin token and the credential, if the request carries the right one.
fn check_token(token: Arc<str>, headers: &HeaderMap) -> Option<(Arc<str>, Credential)> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .and_then(|(scheme, value)| {
            if scheme.eq_ignore_ascii_case("bearer") {
                Some((value.trim().as_bytes().to_vec(), Credential::Bearer))
            } else if scheme.eq_ignore_ascii_case("basic") {
                let decoded = BASE64.decode(value.trim()).ok()?;
                let colon = decoded.iter().position(|&b| b == b':')?;
                Some((decoded[colon + 1..].to_vec(), Credential::Basic))
            } else {
                None
            }
        });
    match given {
        Some((secret, credential)) if constant_time_eq(&secret, token.as_bytes()) => {
            Some((token, credential))
        }
        _ => None,
    }
}

/// Compares in time that depends on `expected`'s length only, never on where the first
/// difference is, nor on `given`'s length.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// The replay form's hidden token: HMAC-SHA256 of a fixed string, keyed with the admin token.
/// A page on another site cannot read it, so it cannot forge the form.
fn form_token(admin_token: &str) -> String {
    let signature = standardwebhooks::Webhook::from_bytes(admin_token.as_bytes().to_vec())
        .and_then(|hmac| hmac.sign(FORM_TOKEN_PURPOSE, 0, b""))
        .expect("a fixed UTF-8 payload always signs");
    signature
        .split_once(',')
        .map_or(signature.clone(), |(_, mac)| mac.to_owned())
}

/// Whether the request's `Origin`, when it has one, names this host (`Host`, the authority of
/// an HTTP/2 request, or `X-Forwarded-Host` behind a proxy: a cross-site form can set none of
/// them).
fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
        return false; // "null" (sandboxed frames, some redirects) or garbage
    };
    let Some(host) = origin.host_str() else {
        return false;
    };
    let with_port = origin
        .port_or_known_default()
        .map(|port| format!("{host}:{port}"));
    let names_origin = |authority: &str| {
        let authority = authority.trim();
        authority.eq_ignore_ascii_case(host)
            || with_port
                .as_deref()
                .is_some_and(|a| authority.eq_ignore_ascii_case(a))
    };
    let header_value = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).to_owned())
    };
    [
        header_value(header::HOST),
        uri.authority().map(|a| a.as_str().to_owned()),
        header_value(header::HeaderName::from_static("x-forwarded-host")),
    ]
    .iter()
    .flatten()
    .any(|authority| names_origin(authority))
}

// ---------------------------------------------------------------------------------------------
// Replay

async fn replay(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(svix_id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (token, credential) = match authenticate(&state, &headers, peer.map(|p| p.0.0)) {
        Ok(ok) => ok,
        Err(denied) => return denied.into_response(),
    };
    if !same_origin(&headers, &uri) {
        tracing::warn!(svix_id, "status page: cross-origin replay refused");
        return (
            StatusCode::FORBIDDEN,
            "cross-origin request refused: replay from the status page itself\n",
        )
            .into_response();
    }
    if credential == Credential::Basic {
        let given = url::form_urlencoded::parse(&body)
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), form_token(&token).as_bytes()) {
            tracing::warn!(
                svix_id,
                "status page: replay without the form's token refused"
            );
            return (
                StatusCode::FORBIDDEN,
                "the replay form's token is missing or wrong: reload the status page and use \
                 its button\n",
            )
                .into_response();
        }
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

/// The message shown after a replay, from the redirect's query string. Only known results are
/// shown, each with a fixed text; the svix id is escaped like everything else.
fn flash(query: Option<&str>) -> Option<(bool, String)> {
    let query = query?;
    let mut svix_id = None;
    let mut result = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "replayed" => svix_id = Some(value.into_owned()),
            "result" => result = Some(value.into_owned()),
            _ => {}
        }
    }
    let svix_id = svix_id?;
    let short = truncate(&svix_id, MAX_ID_CHARS);
    let id = Esc(&short);
    let text = match result?.as_str() {
        "missing" => (false, format!("No stored event has the svix id {id}.")),
        "error" => (
            false,
            format!("Replaying {id} failed: the database did not answer. The log says why."),
        ),
        "failed" => (
            false,
            format!("Replayed {id}: it failed again (its error is below)."),
        ),
        other => {
            let outcome = Outcome::parse(other)?;
            (true, format!("Replayed {id}: {}.", outcome.as_str()))
        }
    };
    Some(text)
}

// ---------------------------------------------------------------------------------------------
// What the page shows

/// An inbox row as listed.
struct Event {
    svix_id: String,
    event_type: String,
    user_id: Option<String>,
    outcome: String,
    error: Option<String>,
    received_at: NaiveDateTime,
    replayed_at: Option<NaiveDateTime>,
}

/// The figures read from the database.
struct Figures {
    /// `counts[minute][series]`: minute 0 is the oldest, series index into `OUTCOMES`, then
    /// `OTHER`.
    counts: Vec<[u64; OUTCOMES.len() + 1]>,
    latest: Vec<Event>,
    failed: Vec<Event>,
    failed_count: u64,
    /// Delivery lags (ms) of the newest events.
    lags_ms: Vec<i64>,
    live_users: Option<u64>,
    soft_deleted_users: Option<u64>,
    estimated_users: Option<u64>,
}

/// Clerk's API, as last checked.
#[derive(Debug, Clone)]
enum ClerkHealth {
    NotConfigured,
    Checked {
        at: Instant,
        /// Users Clerk has, or why it could not say.
        result: Result<u64, String>,
    },
}

struct PageData {
    now: DateTime<Utc>,
    /// Minutes since the epoch of the chart's first minute.
    first_minute: i64,
    backend: &'static str,
    /// Round trip of `SELECT 1`, or why there was none.
    database: Result<Duration, String>,
    figures: Result<Figures, String>,
    clerk: ClerkHealth,
}

async fn page(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (token, _) = match authenticate(&state, &headers, peer.map(|p| p.0.0)) {
        Ok(ok) => ok,
        Err(denied) => return denied.into_response(),
    };
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
    let html = render(&data, flash(query.as_deref()), &form_token(&token));
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
        html,
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
            macro_rules! event {
                ($e:expr) => {
                    Event {
                        svix_id: $e.svix_id,
                        event_type: $e.event_type,
                        user_id: $e.user_id,
                        outcome: $e.outcome,
                        error: $e.error,
                        received_at: $e.received_at,
                        replayed_at: $e.replayed_at,
                    }
                };
            }
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
            Ok(Figures {
                counts,
                latest: f
                    .latest
                    .into_iter()
                    .take(LATEST_EVENTS)
                    .map(|e| event!(e))
                    .collect(),
                failed: f.failed.into_iter().map(|e| event!(e)).collect(),
                failed_count: f.failed_count,
                lags_ms,
                live_users: f.users.live,
                soft_deleted_users: f.users.soft_deleted,
                estimated_users: f.users.estimated_rows,
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

// ---------------------------------------------------------------------------------------------
// HTML

/// Text escaped for HTML content and quoted attribute values.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}

/// A path segment, percent-encoded (all but unreserved characters).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(ms: i64) -> String {
    let seconds = ms as f64 / 1000.0;
    match ms.unsigned_abs() {
        0..10_000 => format!("{seconds:.1} s"),
        10_000..120_000 => format!("{seconds:.0} s"),
        120_000..7_200_000 => format!("{:.1} min", seconds / 60.0),
        _ => format!("{:.1} h", seconds / 3600.0),
    }
}

fn time_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn minute_text(minute: i64) -> String {
    DateTime::from_timestamp(minute * 60, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default()
}

/// The colour class of an outcome (`c-created`, …, `c-other`).
fn series_class(outcome: &str) -> &'static str {
    OUTCOMES
        .iter()
        .find(|(o, _)| *o == outcome)
        .map_or(OTHER.0, |(o, _)| *o)
}

fn outcome_html(outcome: &str) -> String {
    format!(
        r#"<span class="outcome"><span class="dot c-{}"></span>{}</span>"#,
        series_class(outcome),
        Esc(&truncate(outcome, MAX_ID_CHARS))
    )
}

fn optional_id(id: Option<&str>) -> String {
    match id {
        Some(id) => Esc(&truncate(id, MAX_ID_CHARS)).to_string(),
        None => r#"<span class="muted">—</span>"#.to_owned(),
    }
}

const CSS: &str = r#"
:root{color-scheme:light dark;--bg:#f5f6f8;--fg:#1d2433;--muted:#667085;--card:#fff;--line:#e3e6eb;--ok:#1a7f37;--bad:#d32f2f;--off:#98a2b3}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--fg:#e6e8eb;--muted:#98a2b3;--card:#171b21;--line:#2b313b}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
main{max-width:1180px;margin:0 auto;padding:20px}
header{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap}
h1{font-size:20px;margin:0}
h2{font-size:15px;margin:0 0 10px}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-top:3px solid var(--off);border-radius:8px;padding:10px 14px}
.card.ok{border-top-color:var(--ok)}
.card.bad{border-top-color:var(--bad)}
.card h2{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:0 0 2px}
.card p{margin:2px 0}
.big{font-size:22px;font-weight:650;white-space:nowrap}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px;margin:12px 0}
.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:var(--line);stroke-width:1}
.chart text{fill:var(--muted);font-size:11px}
.legend{list-style:none;padding:0;margin:8px 0 0;display:flex;flex-wrap:wrap;gap:4px 16px}
.legend .zero{opacity:.45}
.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tr:last-child td{border-bottom:0}
th{font-weight:600;color:var(--muted);font-size:12px;white-space:nowrap}
td.time{white-space:nowrap}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;white-space:nowrap}
.outcome{white-space:nowrap}
.error{color:var(--bad);white-space:pre-wrap;word-break:break-word}
.flash{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--ok);border-radius:8px;padding:10px 14px;margin:16px 0 0}
.flash.bad{border-left-color:var(--bad)}
form{margin:0}
button{font:inherit;padding:3px 12px;border-radius:6px;border:1px solid var(--line);background:var(--bg);color:var(--fg);cursor:pointer}
button:hover{border-color:var(--muted)}
footer{margin:16px 0;color:var(--muted);font-size:12px}
"#;

fn render(data: &PageData, flash: Option<(bool, String)>, form_token: &str) -> String {
    let mut html = String::with_capacity(32 * 1024);
    let now_text = data.now.format("%Y-%m-%d %H:%M:%S UTC");
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}; url=status">
<link rel="icon" href="data:,">
<title>clerk-sync status</title>
<style>{CSS}"#
    );
    for (outcome, colour) in OUTCOMES.iter().chain([&OTHER]) {
        let _ = writeln!(html, ".c-{outcome}{{background:{colour}}}");
    }
    let _ = write!(
        html,
        r#"</style>
</head>
<body>
<main>
<header><h1>clerk-sync status</h1><span class="muted">{now_text} · {backend} · reloads every {REFRESH_SECONDS} s</span></header>
"#,
        backend = data.backend
    );
    if let Some((good, message)) = flash {
        let _ = writeln!(
            html,
            r#"<p class="flash{}" role="status" id="flash">{message}</p>"#,
            if good { "" } else { " bad" }
        );
    }
    cards(&mut html, data);
    match &data.figures {
        Ok(figures) => {
            chart(&mut html, figures, data.first_minute);
            failed_events(&mut html, figures, form_token);
            latest_events(&mut html, figures);
        }
        Err(e) => {
            let _ = writeln!(
                html,
                r#"<section class="panel"><h2>Events</h2><p class="error" id="figures-error">The figures could not be read: {}</p></section>"#,
                Esc(e)
            );
        }
    }
    let _ = write!(
        html,
        r#"<footer>Times are UTC. Delivery lag is when an event was received minus the timestamp Svix signed its delivery with. Replaying applies a stored event again by the rules of its first delivery.</footer>
</main>
</body>
</html>
"#
    );
    html
}

fn card(html: &mut String, state: &str, id: &str, title: &str, big: &str, detail: &str) {
    let _ = writeln!(
        html,
        r#"<div class="card {state}"><h2>{title}</h2><p class="big" id="{id}">{big}</p><p class="muted">{detail}</p></div>"#
    );
}

fn cards(html: &mut String, data: &PageData) {
    html.push_str(r#"<section class="cards">"#);
    match &data.database {
        Ok(latency) => card(
            html,
            "ok",
            "database-health",
            "Database",
            "OK",
            &format!("{} answered in {} ms", data.backend, latency.as_millis()),
        ),
        Err(e) => card(
            html,
            "bad",
            "database-health",
            "Database",
            "Down",
            &Esc(e).to_string(),
        ),
    }
    let ago = |at: &Instant| format!("checked {} s ago", at.elapsed().as_secs());
    match &data.clerk {
        ClerkHealth::NotConfigured => card(
            html,
            "",
            "clerk-health",
            "Clerk API",
            "Not configured",
            "set CLERK_SECRET_KEY to check it",
        ),
        ClerkHealth::Checked { at, result: Ok(n) } => card(
            html,
            "ok",
            "clerk-health",
            "Clerk API",
            "OK",
            &format!("{} users at Clerk · {}", thousands(*n), ago(at)),
        ),
        ClerkHealth::Checked { at, result: Err(e) } => card(
            html,
            "bad",
            "clerk-health",
            "Clerk API",
            "Unreachable",
            &format!("{} · {}", Esc(&truncate(e, MAX_ERROR_CHARS)), ago(at)),
        ),
    }
    let Ok(figures) = &data.figures else {
        html.push_str("</section>\n");
        return;
    };
    match (figures.live_users, figures.soft_deleted_users) {
        (Some(live), Some(soft_deleted)) => card(
            html,
            "",
            "users-live",
            "Users",
            &thousands(live),
            &format!(
                r#"live · <span id="users-soft-deleted">{}</span> soft-deleted"#,
                thousands(soft_deleted)
            ),
        ),
        _ => card(
            html,
            "",
            "users-live",
            "Users",
            &figures
                .estimated_users
                .map_or("?".to_owned(), |n| format!("≈ {}", thousands(n))),
            "rows, estimated: counting took too long",
        ),
    }
    let mut lags = figures.lags_ms.clone();
    lags.sort_unstable();
    match (lags.first(), lags.last()) {
        (Some(_), Some(max)) => {
            let middle = lags.len() / 2;
            let median = if lags.len() % 2 == 0 {
                (lags[middle - 1] + lags[middle]) / 2
            } else {
                lags[middle]
            };
            card(
                html,
                "",
                "lag-median",
                "Delivery lag",
                &duration_text(median),
                &format!(
                    r#"median · max <span id="lag-max">{}</span> · last {} events"#,
                    duration_text(*max),
                    lags.len()
                ),
            )
        }
        _ => card(html, "", "lag-median", "Delivery lag", "—", "no events yet"),
    }
    let capped = if figures.failed_count >= FAILED_COUNTED_UP_TO {
        "+"
    } else {
        ""
    };
    card(
        html,
        if figures.failed_count > 0 {
            "bad"
        } else {
            "ok"
        },
        "failed-count",
        "Failed events",
        &format!("{}{capped}", thousands(figures.failed_count)),
        if figures.failed_count > 0 {
            "stored with their error; replay them below"
        } else {
            "none"
        },
    );
    html.push_str("</section>\n");
}

/// Stacked bars: one per minute, one segment per outcome, with a legend.
fn chart(html: &mut String, figures: &Figures, first_minute: i64) {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 40.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 24.0;
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / CHART_MINUTES as f64;
    let totals: Vec<u64> = figures.counts.iter().map(|c| c.iter().sum()).collect();
    let hour_total: u64 = totals.iter().sum();
    let peak = totals.iter().copied().max().unwrap_or(0);
    let step = nice_step(peak);
    let top_value = (peak.div_ceil(step) * step).max(step);
    let y = |value: f64| TOP + plot_height - value / top_value as f64 * plot_height;

    let _ = write!(
        html,
        r#"<section class="panel" id="chart"><h2>Events per minute, last hour <span class="muted">({} in all)</span></h2>
<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Events per minute by outcome over the last hour" xmlns="http://www.w3.org/2000/svg">
"#,
        thousands(hour_total)
    );
    let mut tick = 0;
    while tick <= top_value {
        let ty = y(tick as f64);
        let _ = writeln!(
            html,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{ty:.1}" y2="{ty:.1}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0,
            thousands(tick)
        );
        tick += step;
    }
    for (i, counts) in figures.counts.iter().enumerate() {
        let minute = first_minute + i as i64;
        let x = LEFT + i as f64 * slot + 1.0;
        let mut below = 0u64;
        for ((outcome, colour), &count) in OUTCOMES.iter().chain([&OTHER]).zip(counts) {
            if count == 0 {
                continue;
            }
            let (y_top, y_bottom) = (y((below + count) as f64), y(below as f64));
            let _ = writeln!(
                html,
                r#"<rect class="seg" data-minute="{minute}" data-outcome="{outcome}" data-count="{count}" x="{x:.1}" y="{y_top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} UTC · {outcome}: {count}</title></rect>"#,
                slot - 2.0,
                y_bottom - y_top,
                minute_text(minute)
            );
            below += count;
        }
    }
    for i in [0, 15, 30, 45, CHART_MINUTES - 1] {
        // The last label ends at the plot's right edge rather than overflowing it.
        let (x, anchor) = if i == CHART_MINUTES - 1 {
            (WIDTH - RIGHT, "end")
        } else {
            (LEFT + (i as f64 + 0.5) * slot, "middle")
        };
        let _ = writeln!(
            html,
            r#"<text x="{x:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
            HEIGHT - 6.0,
            minute_text(first_minute + i)
        );
    }
    if hour_total == 0 {
        let _ = writeln!(
            html,
            r#"<text x="{}" y="{}" text-anchor="middle" class="empty">No events in the last hour</text>"#,
            LEFT + plot_width / 2.0,
            TOP + plot_height / 2.0
        );
    }
    html.push_str("</svg>\n<ul class=\"legend\">");
    for (series, (outcome, _)) in OUTCOMES.iter().chain([&OTHER]).enumerate() {
        let total: u64 = figures.counts.iter().map(|c| c[series]).sum();
        if *outcome == OTHER.0 && total == 0 {
            continue;
        }
        let _ = write!(
            html,
            r#"<li class="{}" data-outcome="{outcome}"><span class="dot c-{outcome}"></span>{outcome} <b>{}</b></li>"#,
            if total == 0 { "zero" } else { "" },
            thousands(total)
        );
    }
    html.push_str("</ul>\n</section>\n");
}

/// A round step for about four gridlines up to `peak`: 1, 2 or 5 times a power of ten.
fn nice_step(peak: u64) -> u64 {
    let rough = peak.div_ceil(4).max(1);
    let mut power = 1u64;
    loop {
        for factor in [1, 2, 5] {
            if factor * power >= rough {
                return factor * power;
            }
        }
        power = power.saturating_mul(10);
    }
}

fn failed_events(html: &mut String, figures: &Figures, form_token: &str) {
    let _ = writeln!(
        html,
        r#"<section class="panel" id="failed"><h2>Failed events <span class="muted">({})</span></h2>"#,
        thousands(figures.failed_count)
    );
    if figures.failed.is_empty() {
        html.push_str("<p class=\"muted\">None: every stored event was applied.</p>\n</section>\n");
        return;
    }
    html.push_str(
        r#"<div class="scroll"><table><thead><tr><th>received (UTC)</th><th>svix id</th><th>type</th><th>user id</th><th>error</th><th></th></tr></thead><tbody>
"#,
    );
    for event in &figures.failed {
        let replayed = event.replayed_at.map_or(String::new(), |t| {
            format!(
                r#"<br><span class="muted">last replayed {}</span>"#,
                time_text(t)
            )
        });
        let _ = writeln!(
            html,
            r#"<tr data-svix-id="{id_attr}"><td class="time">{time}</td><td class="mono">{id}</td><td>{event_type}</td><td class="mono">{user}</td><td class="error">{error}{replayed}</td><td><form method="post" action="status/replay/{segment}"><input type="hidden" name="token" value="{form_token}"><button type="submit">Replay</button></form></td></tr>"#,
            id_attr = Esc(&event.svix_id),
            time = time_text(event.received_at),
            id = Esc(&truncate(&event.svix_id, MAX_ID_CHARS)),
            event_type = Esc(&truncate(&event.event_type, MAX_ID_CHARS)),
            user = optional_id(event.user_id.as_deref()),
            error = Esc(&truncate(
                event.error.as_deref().unwrap_or("(no error recorded)"),
                MAX_ERROR_CHARS
            )),
            segment = Esc(&path_segment(&event.svix_id)),
            form_token = Esc(form_token),
        );
    }
    html.push_str("</tbody></table></div>\n");
    if figures.failed_count > figures.failed.len() as u64 {
        let _ = writeln!(
            html,
            r#"<p class="muted">The newest {} are listed; <code>clerk-sync events replay --failed</code> replays them all.</p>"#,
            figures.failed.len()
        );
    }
    html.push_str("</section>\n");
}

fn latest_events(html: &mut String, figures: &Figures) {
    html.push_str(
        r#"<section class="panel" id="latest"><h2>Latest events</h2>
"#,
    );
    if figures.latest.is_empty() {
        html.push_str(
            "<p class=\"muted\">No events yet. Point Clerk's webhook at /api/webhooks/clerk.</p>\n</section>\n",
        );
        return;
    }
    html.push_str(
        r#"<div class="scroll"><table><thead><tr><th>received (UTC)</th><th>svix id</th><th>type</th><th>user id</th><th>outcome</th></tr></thead><tbody>
"#,
    );
    for event in &figures.latest {
        let _ = writeln!(
            html,
            r#"<tr data-svix-id="{id_attr}"><td class="time">{time}</td><td class="mono">{id}</td><td>{event_type}</td><td class="mono">{user}</td><td>{outcome}</td></tr>"#,
            id_attr = Esc(&event.svix_id),
            time = time_text(event.received_at),
            id = Esc(&truncate(&event.svix_id, MAX_ID_CHARS)),
            event_type = Esc(&truncate(&event.event_type, MAX_ID_CHARS)),
            user = optional_id(event.user_id.as_deref()),
            outcome = outcome_html(&event.outcome),
        );
    }
    html.push_str("</tbody></table></div>\n</section>\n");
}
