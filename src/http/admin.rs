//! Who may use the operator pages: the holder of `CLERK_SYNC_ADMIN_TOKEN`.
//!
//! The token is accepted as a bearer token (scripts) or as the password of HTTP Basic auth with
//! any user name (a browser asks for it). Without a token configured the pages do not exist
//! (404). Wrong tokens are counted per client address like unverified webhooks, and an address
//! that spent its allowance is shut out for a while. A form that changes something must come
//! from this origin and, when a browser sent it (Basic auth, which a browser attaches to any
//! request, cross-site ones included), carry a token derived from the admin token that a page
//! on another site cannot read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::ConstantTimeEq;

use super::state::AppState;

/// The challenge a browser answers by asking for a user name and password.
const CHALLENGE: &str = r#"Basic realm="clerk-sync", charset="UTF-8""#;
/// What the form token is an HMAC of (keyed with the admin token).
const FORM_TOKEN_PURPOSE: &str = "clerk-sync status page replay form";

/// A request that proved it holds the admin token. As an extractor it answers 404, 401 or 429
/// for a request that did not.
#[derive(Debug)]
pub(super) struct Admin {
    token: Arc<str>,
    credential: Credential,
}

/// How a request proved it holds the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// `Authorization: Bearer`: a script; browsers never send it on their own.
    Bearer,
    /// HTTP Basic auth: a browser, which sends it with any request to this origin.
    Basic,
}

/// Why a request may not see the operator pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// No admin token is configured: the pages do not exist.
    Off,
    /// No token, or the wrong one.
    Unauthorized,
    /// Too many wrong tokens from this address: shut out for this long, right token or not
    /// (answering a right guess with 200 would keep guessing worthwhile).
    RateLimited(Duration),
}

/// Why a form post was refused although its sender holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FormRefused {
    /// `Origin` names another site (or is `null`).
    CrossOrigin,
    /// A browser's post without the form token, or with a wrong one.
    NoFormToken,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Denied> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        authenticate(state, &parts.headers, peer)
    }
}

impl Admin {
    /// The hidden field of the operator pages' forms: HMAC-SHA256 of a fixed string, keyed
    /// with the admin token. A page on another site cannot read it, so it cannot forge a form.
    pub(super) fn form_token(&self) -> String {
        let signature = standardwebhooks::Webhook::from_bytes(self.token.as_bytes().to_vec())
            .and_then(|hmac| hmac.sign(FORM_TOKEN_PURPOSE, 0, b""))
            .expect("a fixed UTF-8 payload always signs");
        signature
            .split_once(',')
            .map_or(signature.clone(), |(_, mac)| mac.to_owned())
    }

    /// Whether a form post (`application/x-www-form-urlencoded` `body`) may change something:
    /// it comes from this origin, and a browser's carries the form token as `token`. A bearer
    /// token is proof enough on its own, since no browser sends one unasked.
    pub(super) fn check_form(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        body: &[u8],
    ) -> Result<(), FormRefused> {
        if !same_origin(headers, uri) {
            return Err(FormRefused::CrossOrigin);
        }
        if self.credential == Credential::Basic {
            let given = url::form_urlencoded::parse(body)
                .find(|(name, _)| name == "token")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            if !same_secret(given.as_bytes(), self.form_token().as_bytes()) {
                return Err(FormRefused::NoFormToken);
            }
        }
        Ok(())
    }
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

impl IntoResponse for FormRefused {
    fn into_response(self) -> Response {
        let message = match self {
            FormRefused::CrossOrigin => {
                "cross-origin request refused: replay from the status page itself\n"
            }
            FormRefused::NoFormToken => {
                "the replay form's token is missing or wrong: reload the status page and use \
                 its button\n"
            }
        };
        (StatusCode::FORBIDDEN, message).into_response()
    }
}

/// The admin token and how the request proved it has it, counting wrong tokens per client
/// address (`CLERK_SYNC_RATE_LIMIT_UNVERIFIED` a minute).
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Admin, Denied> {
    let token = state.admin_token.clone().ok_or(Denied::Off)?;
    let client = state.limiters.client_address(peer, headers);
    if let Some(wait) = client.and_then(|c| state.limiters.admin_shut_out(c)) {
        crate::metrics::rate_limited("status_page");
        return Err(Denied::RateLimited(wait));
    }
    match credential(headers) {
        Some((secret, credential)) if same_secret(&secret, token.as_bytes()) => {
            Ok(Admin { token, credential })
        }
        _ => match client.and_then(|c| state.limiters.admin_failure(c).err()) {
            Some(wait) => {
                crate::metrics::rate_limited("status_page");
                tracing::warn!(client = ?client, "status page: too many wrong admin tokens, address shut out");
                Err(Denied::RateLimited(wait))
            }
            None => Err(Denied::Unauthorized),
        },
    }
}

/// The secret an `Authorization` header offers (a bearer token, or the password of Basic auth
/// with any user name), schemes matched case-insensitively as RFC 9110 says.
fn credential(headers: &HeaderMap) -> Option<(Vec<u8>, Credential)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = bearer_token(value) {
        return Some((token.as_bytes().to_vec(), Credential::Bearer));
    }
    let (scheme, value) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(value.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[colon + 1..].to_vec(), Credential::Basic))
}

/// The token of `Authorization: Bearer <token>`; the scheme's name is case-insensitive
/// (RFC 7235), and some scrapers send it in lower case. Shared with `/metrics`.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares in time that depends on `expected`'s length only: `subtle` compares equal lengths
/// without branching on where they differ, and returns at once on different lengths, so
/// `given` is first cut or padded to `expected`'s length (the length is compared apart).
pub(super) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let padded: Vec<u8> = (0..expected.len())
        .map(|i| given.get(i).copied().unwrap_or(0))
        .collect();
    let same_length = (given.len() as u64).ct_eq(&(expected.len() as u64));
    (padded.ct_eq(expected) & same_length).into()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_needs_every_byte_and_the_length() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3creT", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret\0", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
        assert!(same_secret(b"", b""));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn credential_reads_bearer_and_basic_in_any_case() {
        let basic = format!("bAsIc {}", BASE64.encode("anyone:s3cret"));
        for (value, expected) in [
            ("Bearer s3cret", Credential::Bearer),
            ("bearer  s3cret ", Credential::Bearer),
            (basic.as_str(), Credential::Basic),
        ] {
            let given = credential(&headers(&[("authorization", value)]));
            assert_eq!(given, Some((b"s3cret".to_vec(), expected)), "{value}");
        }
        let no_colon = format!("Basic {}", BASE64.encode("s3cret"));
        for value in ["Token s3cret", "Bearer", no_colon.as_str(), "Basic !!"] {
            assert_eq!(
                credential(&headers(&[("authorization", value)])),
                None,
                "{value}"
            );
        }
    }

    #[test]
    fn same_origin_accepts_this_host_only() {
        let uri = Uri::from_static("/status/replay/msg_1");
        let cases = [
            (vec![("host", "app.test:8080")], true),
            (
                vec![
                    ("host", "app.test:8080"),
                    ("origin", "http://app.test:8080"),
                ],
                true,
            ),
            (
                vec![("host", "app.test"), ("origin", "https://app.test")],
                true,
            ),
            (
                vec![
                    ("host", "app.test:8080"),
                    ("origin", "http://evil.test:8080"),
                ],
                false,
            ),
            (vec![("host", "app.test:8080"), ("origin", "null")], false),
            (
                vec![
                    ("host", "internal:9000"),
                    ("x-forwarded-host", "app.test"),
                    ("origin", "https://app.test"),
                ],
                true,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(same_origin(&headers(&pairs), &uri), expected, "{pairs:?}");
        }
    }
}
