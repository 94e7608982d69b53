//! Clerk session tokens: which requests come from a signed-in user, and which user.
//!
//! Clerk's rules (its SDK and docs): RS256 only, the key picked by the header's `kid`, `exp` and
//! `nbf` with 5 s of clock skew, `iat` not in the future, a `sub`, `azp` among the authorized
//! parties when those are configured, `iss` equal to the instance's Frontend API URL when the
//! publishable key is known, only the session-token category (`cat`), and no pending sessions
//! unless allowed. Keys come from `CLERK_JWT_KEY` (no network) or from the Backend API's JWKS,
//! cached for an hour and refetched when an unknown `kid` shows up (Clerk rotated its key), but at
//! most once every 10 seconds, so junk tokens cannot make us hammer Clerk.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::clerk::api::{ClerkApi, ClerkApiError};

/// Clock skew allowed on `exp`, `nbf` and `iat`, as Clerk's SDK allows.
pub(crate) const CLOCK_SKEW_SECONDS: u64 = 5;
/// How long fetched keys are trusted before they are fetched again.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// Fewest seconds between two JWKS fetches, whatever the tokens say.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
/// Clerk's `cat` header value for session tokens; other categories (machine-to-machine, JWT
/// templates) are signed with the same key but must not pass as sessions.
const SESSION_TOKEN_CATEGORY: &str = "cl_B7d4PD111AAA";

/// A verified Clerk session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The signed-in user (`sub`).
    pub user_id: String,
    /// `sid`.
    pub session_id: Option<String>,
    /// `azp`: the origin the token was minted for.
    pub authorized_party: Option<String>,
    /// All claims, for apps that need more (organization, plan, ...).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Why a token was refused. Logged; never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Neither an `Authorization` header nor a `__session` cookie carried a token.
    #[error("no session token (Authorization: Bearer or __session cookie)")]
    Missing,
    /// Not a readable JWT: not three base64url parts, or a header or claims that are not the
    /// JSON expected.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// The header's `alg` (given) is not RS256, the only algorithm Clerk signs with.
    #[error("algorithm {0} is not accepted (RS256 only)")]
    UnsupportedAlgorithm(String),
    /// The header's `cat` (given) marks another kind of Clerk token (machine-to-machine, JWT
    /// template), signed with the same key.
    #[error("token category {0} is not a session token")]
    NotASessionToken(String),
    /// The header names no `kid` (given, if any), or none of Clerk's fetched keys has it (they
    /// are refetched for it at most every [`SessionRules::jwks_min_refetch`]).
    #[error("no signing key with kid {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not match the token under its key: forged or altered.
    #[error("signature does not verify")]
    BadSignature,
    /// Past `exp`, beyond the allowed clock skew.
    #[error("token expired")]
    Expired,
    /// Before `nbf`, beyond the allowed clock skew.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// `iat` lies in the future, beyond the allowed clock skew.
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    /// No `sub`, so no user to speak of.
    #[error("token has no subject (sub)")]
    MissingSubject,
    /// The token's `azp` (given, if any) is not among [`SessionRules::authorized_parties`].
    #[error("authorized party {0:?} is not allowed")]
    UnauthorizedParty(Option<String>),
    /// The token's `iss` (given, if any) is not [`SessionRules::issuer`].
    #[error("issuer {0:?} is not this Clerk instance")]
    WrongIssuer(Option<String>),
    /// The session's status is `pending` (e.g. an organization still to choose) and
    /// [`SessionRules::allow_pending`] is off.
    #[error("session is pending")]
    PendingSession,
    /// The signing keys cannot be fetched: not the client's fault.
    #[error("Clerk's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl SessionError {
    /// A short stable label (for logs and metrics).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SessionError::Missing => "missing",
            SessionError::Malformed => "malformed",
            SessionError::UnsupportedAlgorithm(_) => "algorithm",
            SessionError::NotASessionToken(_) => "category",
            SessionError::UnknownKey(_) => "unknown_key",
            SessionError::BadSignature => "signature",
            SessionError::Expired => "expired",
            SessionError::NotYetValid => "not_yet_valid",
            SessionError::IssuedInFuture => "issued_in_future",
            SessionError::MissingSubject => "no_subject",
            SessionError::UnauthorizedParty(_) => "authorized_party",
            SessionError::WrongIssuer(_) => "issuer",
            SessionError::PendingSession => "pending",
            SessionError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// The Frontend API URL (the `iss` of the instance's tokens) encoded in a publishable key:
/// `pk_test_` / `pk_live_` + base64 of `<host>$`.
pub(crate) fn issuer_from_publishable_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let encoded = key
        .strip_prefix("pk_test_")
        .or_else(|| key.strip_prefix("pk_live_"))
        .ok_or("it must start with pk_test_ or pk_live_")?;
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')))
        .or_else(|_| {
            STANDARD.decode(format!(
                "{encoded}{}",
                "=".repeat((4 - encoded.len() % 4) % 4)
            ))
        })
        .map_err(|_| "the part after the prefix is not base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "it does not decode to text")?;
    let host = text
        .strip_suffix('$')
        .filter(|h| !h.contains('$') && h.contains('.'))
        .ok_or("it does not encode a Frontend API host")?;
    Ok(format!("https://{host}"))
}

/// How session tokens are checked, besides the key.
#[derive(Debug, Clone)]
pub struct SessionRules {
    /// Allowed `azp` origins; empty: not checked.
    pub authorized_parties: Vec<String>,
    /// Required `iss`; `None`: not checked.
    pub issuer: Option<String>,
    /// Accept sessions with `sts: pending`.
    pub allow_pending: bool,
    /// Fewest time between two JWKS fetches ([`JWKS_MIN_REFETCH`]).
    pub jwks_min_refetch: Duration,
}

impl Default for SessionRules {
    fn default() -> Self {
        SessionRules {
            authorized_parties: Vec::new(),
            issuer: None,
            allow_pending: false,
            jwks_min_refetch: JWKS_MIN_REFETCH,
        }
    }
}

/// Where the signing keys come from.
pub enum KeySource {
    /// `CLERK_JWT_KEY`: one PEM public key, no network.
    Pem(String),
    /// The Backend API's `/v1/jwks`.
    Jwks(ClerkApi),
}

enum Keys {
    Static(DecodingKey),
    Remote(Box<JwksCache>),
}

struct JwksCache {
    api: ClerkApi,
    min_refetch: Duration,
    keys: RwLock<CachedKeys>,
    /// When a fetch was last started; guards Clerk against floods of unknown kids.
    last_fetch: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct CachedKeys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

impl CachedKeys {
    fn fresh(&self) -> bool {
        self.fetched_at.is_some_and(|t| t.elapsed() < JWKS_TTL)
    }
}

/// Verifies Clerk session tokens.
pub struct SessionVerifier {
    keys: Keys,
    rules: SessionRules,
}

impl std::fmt::Debug for SessionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.keys {
            Keys::Static(_) => "CLERK_JWT_KEY",
            Keys::Remote(_) => "JWKS",
        };
        f.debug_struct("SessionVerifier")
            .field("keys", &source)
            .field("rules", &self.rules)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    cat: Option<String>,
}

#[derive(Deserialize)]
struct CheckedClaims {
    sub: Option<String>,
    iat: Option<i64>,
    azp: Option<String>,
    sid: Option<String>,
    sts: Option<String>,
    iss: Option<String>,
}

impl SessionVerifier {
    /// A verifier that takes its keys from `source` and applies `rules`. A PEM key is parsed
    /// here (the error says what to copy from Clerk's dashboard); JWKS keys are fetched on the
    /// first token.
    pub fn new(source: KeySource, rules: SessionRules) -> Result<SessionVerifier, String> {
        let keys = match source {
            KeySource::Pem(pem) => {
                // Environment variables often carry the PEM's line breaks as "\n".
                let pem = pem.replace("\\n", "\n");
                let key = DecodingKey::from_rsa_pem(pem.trim().as_bytes()).map_err(|e| {
                    format!(
                        "CLERK_JWT_KEY is not an RSA public key in PEM form ({e}); copy the \"JWKS \
                         Public Key\" from Clerk's dashboard (API keys), starting with \
                         -----BEGIN PUBLIC KEY-----"
                    )
                })?;
                Keys::Static(key)
            }
            KeySource::Jwks(api) => Keys::Remote(Box::new(JwksCache {
                api,
                min_refetch: rules.jwks_min_refetch,
                keys: RwLock::new(CachedKeys::default()),
                last_fetch: Mutex::new(None),
            })),
        };
        Ok(SessionVerifier { keys, rules })
    }

    /// Checks a token and returns the session it proves.
    pub async fn verify(&self, token: &str) -> Result<Session, SessionError> {
        let token = token.trim();
        let header = read_header(token)?;
        if header.alg != "RS256" {
            return Err(SessionError::UnsupportedAlgorithm(header.alg));
        }
        if let Some(category) = header.cat.filter(|c| c != SESSION_TOKEN_CATEGORY) {
            return Err(SessionError::NotASessionToken(category));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let claims = match &self.keys {
            Keys::Static(key) => decode(token, key, &validation)?,
            Keys::Remote(cache) => {
                let key = cache.key(header.kid.as_deref()).await?;
                decode(token, &key, &validation)?
            }
        };
        self.check_claims(claims)
    }

    fn check_claims(
        &self,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Session, SessionError> {
        let checked: CheckedClaims =
            serde_json::from_value(serde_json::Value::Object(claims.clone()))
                .map_err(|_| SessionError::Malformed)?;
        let now = chrono::Utc::now().timestamp();
        if checked
            .iat
            .is_some_and(|iat| iat > now + CLOCK_SKEW_SECONDS as i64)
        {
            return Err(SessionError::IssuedInFuture);
        }
        let user_id = checked
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(SessionError::MissingSubject)?;
        if let Some(issuer) = &self.rules.issuer
            && checked.iss.as_deref().map(|i| i.trim_end_matches('/'))
                != Some(issuer.trim_end_matches('/'))
        {
            return Err(SessionError::WrongIssuer(checked.iss));
        }
        // As Clerk's SDK: with a list configured, a token without `azp` is refused too.
        if !self.rules.authorized_parties.is_empty()
            && !checked
                .azp
                .as_ref()
                .is_some_and(|azp| self.rules.authorized_parties.iter().any(|p| p == azp))
        {
            return Err(SessionError::UnauthorizedParty(checked.azp));
        }
        if checked.sts.as_deref() == Some("pending") && !self.rules.allow_pending {
            return Err(SessionError::PendingSession);
        }
        Ok(Session {
            user_id,
            session_id: checked.sid,
            authorized_party: checked.azp,
            claims,
        })
    }
}

fn read_header(token: &str) -> Result<RawHeader, SessionError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SessionError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| SessionError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| SessionError::Malformed)
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<serde_json::Map<String, serde_json::Value>, SessionError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => SessionError::Expired,
            ErrorKind::ImmatureSignature => SessionError::NotYetValid,
            ErrorKind::InvalidSignature => SessionError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                SessionError::UnsupportedAlgorithm("other".into())
            }
            _ => SessionError::Malformed,
        })
}

impl JwksCache {
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, SessionError> {
        let Some(kid) = kid else {
            return Err(SessionError::UnknownKey(None));
        };
        {
            let cached = self.keys.read().await;
            if cached.fresh()
                && let Some(key) = cached.by_kid.get(kid)
            {
                return Ok(key.clone());
            }
        }
        // One fetch at a time; the others wait and then find the new keys.
        let mut last_fetch = self.last_fetch.lock().await;
        {
            let cached = self.keys.read().await;
            if cached.fresh()
                && let Some(key) = cached.by_kid.get(kid)
            {
                return Ok(key.clone());
            }
            if last_fetch.is_some_and(|t| t.elapsed() < self.min_refetch) {
                // Fetched moments ago: an unknown kid now is not a rotation, and a stale key
                // is better than none while Clerk is unreachable.
                return match cached.by_kid.get(kid) {
                    Some(key) => Ok(key.clone()),
                    None if cached.fetched_at.is_some() => {
                        Err(SessionError::UnknownKey(Some(kid.to_owned())))
                    }
                    None => Err(SessionError::KeysUnavailable(
                        "the last fetch failed moments ago".into(),
                    )),
                };
            }
        }
        *last_fetch = Some(Instant::now());
        match self.api.jwks().await {
            Ok(set) => {
                let by_kid: HashMap<String, DecodingKey> = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
                    })
                    .collect();
                tracing::info!(keys = by_kid.len(), "fetched Clerk's session signing keys");
                let found = by_kid.get(kid).cloned();
                *self.keys.write().await = CachedKeys {
                    by_kid,
                    fetched_at: Some(Instant::now()),
                };
                found.ok_or_else(|| SessionError::UnknownKey(Some(kid.to_owned())))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch Clerk's session signing keys");
                let cached = self.keys.read().await;
                match cached.by_kid.get(kid) {
                    Some(key) => Ok(key.clone()),
                    None => Err(match e {
                        ClerkApiError::Api { status, .. } if status < 500 => {
                            SessionError::KeysUnavailable(format!(
                                "{e} (is CLERK_SECRET_KEY right?)"
                            ))
                        }
                        _ => SessionError::KeysUnavailable(e.to_string()),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishable_keys_name_their_frontend_api() {
        assert_eq!(
            issuer_from_publishable_key("pk_test_Zm9vLWJhci0xMy5jbGVyay5hY2NvdW50cy5kZXYk")
                .unwrap(),
            "https://foo-bar-13.clerk.accounts.dev"
        );
        assert_eq!(
            issuer_from_publishable_key("pk_live_ZmFrZS1jbGVyay10ZXN0LmNsZXJrLmFjY291bnRzLmRldiQ")
                .unwrap(),
            "https://fake-clerk-test.clerk.accounts.dev"
        );
        assert_eq!(
            issuer_from_publishable_key("pk_test_Y2xlcmsuY2xlcmsuZGV2JA==").unwrap(),
            "https://clerk.clerk.dev"
        );
        assert!(
            issuer_from_publishable_key(
                "pk_live_ZmFrZS1jbGVyay1tYWxmb3JtZWQuY2xlcmsuYWNjb3VudHMuZGV2JGV4dHJh"
            )
            .is_err()
        );
        assert!(issuer_from_publishable_key("pk_live_aW52YWxpZGtleSQ=").is_err());
        assert!(issuer_from_publishable_key("sk_live_abc").is_err());
    }

    #[test]
    fn headers_that_are_not_jwts_are_malformed() {
        assert!(matches!(read_header("abc"), Err(SessionError::Malformed)));
        assert!(matches!(
            read_header("a.b.c.d"),
            Err(SessionError::Malformed)
        ));
        assert!(matches!(
            read_header("!!.b.c"),
            Err(SessionError::Malformed)
        ));
    }
}
