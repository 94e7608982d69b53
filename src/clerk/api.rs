//! Clerk's Backend API, the few calls clerk-sync makes: get, update and list users, count them,
//! fetch the instance's signing keys, and ask which instance a secret key belongs to.
//!
//! Every call has a timeout; network errors and 5xx answers are retried with exponential
//! backoff and jitter; `429` waits for `Retry-After` (Clerk's limit is per instance, 1000
//! requests / 10 s in production, 100 in development); Clerk's error body becomes a readable
//! error with its code and trace id.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::clerk::event::{MembershipData, OrganizationData, UserData};

/// One page of a Clerk list answered as `{"data": [...], "total_count": n}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    pub data: Vec<T>,
    pub total_count: u64,
}

/// Where Clerk's Backend API lives unless `CLERK_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com";

/// A Clerk secret key (`sk_test_…` / `sk_live_…`); never printed.
#[derive(Clone)]
pub struct SecretKey(String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

impl SecretKey {
    /// Checks the key's form (`sk_test_` or `sk_live_`, surrounding whitespace dropped); the
    /// error says where to copy a right one from. Whether Clerk accepts it shows on first use.
    pub fn parse(key: &str) -> Result<SecretKey, String> {
        let key = key.trim();
        if key.starts_with("sk_test_") || key.starts_with("sk_live_") {
            Ok(SecretKey(key.to_owned()))
        } else {
            Err(
                "CLERK_SECRET_KEY must start with sk_test_ or sk_live_; copy it from Clerk's \
                 dashboard (Configure, API keys, Secret keys)"
                    .into(),
            )
        }
    }
}

/// How failed calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Backoff before the first retry; doubled for each one after it, with random jitter.
    pub base_delay: Duration,
    /// Longest backoff between two attempts, however many there were.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the caller gets
    /// [`ClerkApiError::RateLimited`] and decides.
    pub max_retry_after: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a call to Clerk's Backend API failed, after the retries [`RetryPolicy`] allows.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClerkApiError {
    /// Clerk answered with an error of its own (4xx other than 429, or 5xx after retries).
    #[error("Clerk answered {status}: {message} (code {code}{trace})", trace = trace_id.as_ref().map(|t| format!(", trace id {t}")).unwrap_or_default())]
    Api {
        /// The HTTP status Clerk answered with.
        status: u16,
        /// Clerk's error code (e.g. `resource_not_found`); `unknown` when the body had none.
        code: String,
        /// Clerk's explanation (its `long_message` when given), or the start of the body.
        message: String,
        /// Clerk's trace id (else Cloudflare's `cf-ray`), to quote to Clerk's support.
        trace_id: Option<String>,
    },
    /// `429` with a `Retry-After` longer than the policy waits for, or on the last attempt.
    #[error("Clerk's rate limit is reached; retry after {} s", retry_after.map_or(1, |d| d.as_secs().max(1)))]
    RateLimited {
        /// How long Clerk asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// No answer: the network failed or every attempt timed out. The text names
    /// `CLERK_API_URL` and the underlying cause (refused connection, DNS, TLS).
    #[error("Clerk's API cannot be reached: {0}")]
    Unavailable(String),
    /// Clerk answered with success but a body that is not what the call expects.
    #[error("Clerk's answer could not be read: {0}")]
    Decode(String),
}

impl ClerkApiError {
    /// The HTTP status Clerk answered with (`429` when rate-limited); `None` when there was no
    /// usable answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClerkApiError::Api { status, .. } => Some(*status),
            ClerkApiError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ClerkErrors {
    #[serde(default)]
    errors: Vec<ClerkErrorItem>,
    clerk_trace_id: Option<String>,
}

#[derive(Deserialize)]
struct ClerkErrorItem {
    #[serde(default)]
    message: String,
    long_message: Option<String>,
    #[serde(default)]
    code: String,
}

/// The profile fields clerk-sync writes through to Clerk.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct UserUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

#[derive(Deserialize)]
struct TotalCount {
    total_count: u64,
}

/// The instance id in Clerk's published example events, which `clerk-sync trigger` sends too:
/// no application's real instance, so a stored event carrying it says nothing about which
/// instance the table belongs to.
pub const EXAMPLE_INSTANCE_ID: &str = "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S";

/// The Clerk instance a secret key belongs to (`GET /v1/instance`); webhook envelopes carry
/// the same id as `instance_id`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Instance {
    pub id: String,
    /// `development` or `production`.
    #[serde(default)]
    pub environment_type: Option<String>,
}

/// A client for one Clerk instance.
#[derive(Clone, Debug)]
pub struct ClerkApi {
    http: reqwest::Client,
    base: String,
    secret_key: SecretKey,
    retry: RetryPolicy,
}

impl ClerkApi {
    /// A client for the Backend API at `base_url` (normally [`DEFAULT_API_URL`]) with the
    /// instance's secret key. Nothing is sent yet; the error says what is wrong with the URL.
    pub fn new(
        base_url: &str,
        secret_key: SecretKey,
        retry: RetryPolicy,
    ) -> Result<ClerkApi, String> {
        let parsed = url::Url::parse(base_url).map_err(|e| {
            format!(
                "CLERK_API_URL = {base_url:?} is not a URL ({e}); the default is {DEFAULT_API_URL}"
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "CLERK_API_URL = {base_url:?} must be an http(s) URL, e.g. {DEFAULT_API_URL}"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(retry.timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("clerk-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ClerkApi {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            secret_key,
            retry,
        })
    }

    /// `CLERK_API_URL` as configured (without a trailing slash), for messages.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether the key is a production one (`sk_live_`); Clerk's rate limits differ.
    pub(crate) fn is_production(&self) -> bool {
        self.secret_key.0.starts_with("sk_live_")
    }

    fn url(&self, segments: &[&str]) -> String {
        let mut url = format!("{}/v1", self.base);
        for segment in segments {
            url.push('/');
            url.extend(url::form_urlencoded::byte_serialize(segment.as_bytes()));
        }
        url
    }

    /// `GET /v1/users/{id}`; `None` when Clerk has no such user.
    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserData>, ClerkApiError> {
        let url = self.url(&["users", user_id]);
        match self
            .call("get_user", || self.http.request(Method::GET, &url))
            .await
        {
            Ok(response) => decode(response).await.map(Some),
            Err(ClerkApiError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PATCH /v1/users/{id}`: Clerk answers with the updated user.
    pub(crate) async fn update_user(
        &self,
        user_id: &str,
        update: &UserUpdate,
    ) -> Result<UserData, ClerkApiError> {
        let url = self.url(&["users", user_id]);
        let response = self
            .call("update_user", || {
                self.http.request(Method::PATCH, &url).json(update)
            })
            .await?;
        decode(response).await
    }

    /// `GET /v1/users` in creation order (oldest first), `limit` at a time after the cursor.
    pub(crate) async fn list_users(
        &self,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<Vec<UserData>, ClerkApiError> {
        let url = self.url(&["users"]);
        let limit = limit.clamp(1, 500).to_string();
        let response = self
            .call("list_users", || {
                let mut request = self
                    .http
                    .request(Method::GET, &url)
                    .query(&[("limit", limit.as_str()), ("order_by", "+created_at")]);
                if let Some(cursor) = starting_after {
                    request = request.query(&[("starting_after", cursor)]);
                }
                request
            })
            .await?;
        decode(response).await
    }

    /// `GET /v1/organizations`, oldest first, `limit` at a time from `offset`, with Clerk's
    /// total count. Offset paging is all Clerk offers for organizations.
    pub(crate) async fn list_organizations(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<Page<OrganizationData>, ClerkApiError> {
        self.list_page("list_organizations", "organizations", limit, offset)
            .await
    }

    /// `GET /v1/organization_memberships`: every membership of the instance, each with its
    /// organization, oldest first, `limit` at a time from `offset`.
    pub(crate) async fn list_memberships(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<Page<MembershipData>, ClerkApiError> {
        self.list_page(
            "list_memberships",
            "organization_memberships",
            limit,
            offset,
        )
        .await
    }

    async fn list_page<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
        limit: u32,
        offset: u64,
    ) -> Result<Page<T>, ClerkApiError> {
        let url = self.url(&[path]);
        let limit = limit.clamp(1, 500).to_string();
        let offset = offset.to_string();
        let response = self
            .call(endpoint, || {
                self.http.request(Method::GET, &url).query(&[
                    ("limit", limit.as_str()),
                    ("offset", offset.as_str()),
                    ("order_by", "+created_at"),
                ])
            })
            .await?;
        decode(response).await
    }

    /// `GET /v1/users/count`.
    pub(crate) async fn count_users(&self) -> Result<u64, ClerkApiError> {
        let url = self.url(&["users", "count"]);
        let response = self
            .call("count_users", || self.http.request(Method::GET, &url))
            .await?;
        decode::<TotalCount>(response).await.map(|c| c.total_count)
    }

    /// `GET /v1/instance`: the instance this key belongs to; `None` when the API does not
    /// answer that question (404), so callers treat the instance as unknown.
    pub(crate) async fn instance(&self) -> Result<Option<Instance>, ClerkApiError> {
        let url = self.url(&["instance"]);
        match self
            .call("get_instance", || self.http.request(Method::GET, &url))
            .await
        {
            Ok(response) => decode(response).await.map(Some),
            Err(ClerkApiError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/jwks`: the keys Clerk signs session tokens with.
    pub(crate) async fn jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet, ClerkApiError> {
        let url = self.url(&["jwks"]);
        let response = self
            .call("jwks", || self.http.request(Method::GET, &url))
            .await?;
        decode(response).await
    }

    /// Sends a request, retrying what a retry can fix. Returns the successful response, or the
    /// error Clerk (or the network) gave last.
    async fn call(
        &self,
        endpoint: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ClerkApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.retry.attempts;
            let result = build().bearer_auth(&self.secret_key.0).send().await;
            crate::metrics::clerk_api_call(
                endpoint,
                result.as_ref().ok().map(|r| r.status().as_u16()),
            );
            let response = match result {
                Ok(response) => response,
                Err(e) if last => {
                    return Err(ClerkApiError::Unavailable(format!(
                        "{} (CLERK_API_URL): {}",
                        self.base,
                        with_causes(e.without_url())
                    )));
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e.without_url(), "Clerk API call failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = retry_after(&response);
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                if last || wait > self.retry.max_retry_after {
                    return Err(ClerkApiError::RateLimited { retry_after });
                }
                tracing::info!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "Clerk rate limit reached; waiting as Retry-After says"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() && !last {
                tracing::debug!(
                    attempt,
                    status = status.as_u16(),
                    "Clerk API error; retrying"
                );
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            return Err(api_error(response).await);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self.retry.base_delay.saturating_mul(1 << attempt.min(10));
        let capped = exponential.min(self.retry.max_delay);
        // Full jitter: spreads the retries of many clients over the whole window.
        capped.mul_f64(rand::random_range(0.5..1.0))
    }
}

fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

async fn api_error(response: Response) -> ClerkApiError {
    let status = response.status().as_u16();
    let ray = response
        .headers()
        .get("cf-ray")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ClerkErrors>(&body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let first = &errors.errors[0];
            ClerkApiError::Api {
                status,
                code: first.code.clone(),
                message: first
                    .long_message
                    .clone()
                    .unwrap_or_else(|| first.message.clone()),
                trace_id: errors.clerk_trace_id.or(ray),
            }
        }
        _ => ClerkApiError::Api {
            status,
            code: "unknown".into(),
            message: body.chars().take(200).collect(),
            trace_id: ray,
        },
    }
}

/// reqwest's own words ("error sending request") and what lies under them ("Connection
/// refused", "dns error"), which is what a person needs to fix it.
fn with_causes(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

async fn decode<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, ClerkApiError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClerkApiError::Unavailable(e.without_url().to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| ClerkApiError::Decode(e.to_string()))
}
