//! Svix verification: raw body and headers in, a verified delivery out, or the reason why not.
//!
//! The signature is checked on the exact bytes received (never a re-serialized body) by the
//! `standardwebhooks` crate, the library Clerk's own SDK delegates to. That crate reads only the
//! `webhook-*` header names, so the `svix-*` names Clerk sends are mapped onto them first, as
//! Clerk's SDK does. Several secrets may be configured at once, so a secret can be rotated without
//! dropping a delivery.

use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderValue};
use standardwebhooks::{Webhook, WebhookError};

/// How far a delivery's timestamp may be from now, either way (Svix's own tolerance).
const TOLERANCE_SECONDS: i64 = 5 * 60;

/// Longest `svix-id` accepted; real ones are about 30 characters, and the id is a primary key.
const MAX_SVIX_ID_LEN: usize = 255;

/// Header names, Svix's first, then the Standard Webhooks equivalents.
const ID_HEADERS: [&str; 2] = ["svix-id", "webhook-id"];
const TIMESTAMP_HEADERS: [&str; 2] = ["svix-timestamp", "webhook-timestamp"];
const SIGNATURE_HEADERS: [&str; 2] = ["svix-signature", "webhook-signature"];

/// A webhook signing secret (`whsec_` + base64) as Clerk's dashboard shows it.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(redacted)")
    }
}

/// Lenient about `=` padding, which some copy-pastes lose.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl SigningSecret {
    /// Reads one secret: `whsec_` + base64 as Clerk's dashboard shows it (the prefix may be
    /// left out, lost `=` padding is forgiven). The error never contains the secret.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        if encoded.is_empty() {
            return Err("the secret is empty".into());
        }
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| "the part after \"whsec_\" is not base64".to_string())?;
        if key.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(SigningSecret { key })
    }

    /// Parses one or more secrets separated by commas or whitespace.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        let secrets: Vec<&str> = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            return Err("no secret given".into());
        }
        secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                SigningSecret::parse(s)
                    .map_err(|e| format!("secret number {} is invalid: {e}", i + 1))
            })
            .collect()
    }

    /// Makes a new random secret, printed the way Clerk's dashboard shows one.
    pub fn generate() -> (Self, String) {
        let key: [u8; 32] = rand::random();
        let text = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        (SigningSecret { key: key.to_vec() }, text)
    }

    fn webhook(&self) -> Webhook {
        // Infallible: `from_bytes` only wraps the key.
        Webhook::from_bytes(self.key.clone()).expect("from_bytes never fails")
    }

    /// The `svix-signature` value for a message, as Svix computes it.
    pub fn sign(&self, svix_id: &str, timestamp: i64, body: &[u8]) -> Result<String, Rejection> {
        self.webhook()
            .sign(svix_id, timestamp, body)
            .map_err(|_| Rejection::BodyNotUtf8)
    }
}

/// Checks deliveries against every configured secret.
pub struct Verifier {
    webhooks: Vec<Webhook>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({} secrets, redacted)", self.webhooks.len())
    }
}

/// A delivery whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's `svix-id`: the same on every retry of one event, so it identifies
    /// duplicates.
    pub svix_id: String,
    /// Unix seconds of this delivery attempt (not of the event).
    pub timestamp: i64,
}

/// Why a delivery was refused. The text is safe to log: it never holds a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The named header (`svix-id`, `svix-timestamp` or `svix-signature`) is absent, under its
    /// Svix and its Standard Webhooks name alike.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// The named header is present but unreadable: not text, an empty or overlong id, a
    /// timestamp that is not a number.
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    /// Signed more than 5 minutes ago: a replay, or a clock far behind.
    #[error("timestamp is more than 5 minutes old")]
    TimestampTooOld,
    /// Signed more than 5 minutes ahead: a clock far ahead.
    #[error("timestamp is more than 5 minutes in the future")]
    TimestampInFuture,
    /// No `v1` signature verifies under any configured secret: a wrong secret, or a body
    /// changed on the way.
    #[error("no signature matches any configured secret")]
    InvalidSignature,
    /// The body is not UTF-8, which Svix never sends.
    #[error("body is not UTF-8")]
    BodyNotUtf8,
}

impl Rejection {
    /// A short stable label (for logs and metrics).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::MalformedHeader(_) => "malformed_header",
            Rejection::TimestampTooOld => "timestamp_too_old",
            Rejection::TimestampInFuture => "timestamp_in_future",
            Rejection::InvalidSignature => "invalid_signature",
            Rejection::BodyNotUtf8 => "body_not_utf8",
        }
    }
}

fn header<'a>(
    headers: &'a HeaderMap,
    names: [&'static str; 2],
) -> Result<Option<&'a str>, Rejection> {
    let Some(value) = names.iter().find_map(|name| headers.get(*name)) else {
        return Ok(None);
    };
    value
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| Rejection::MalformedHeader(names[0]))
}

impl Verifier {
    /// A verifier accepting deliveries signed with any of `secrets` (more than one while a
    /// secret is rotated). With none, every delivery is refused.
    pub fn new(secrets: &[SigningSecret]) -> Self {
        Verifier {
            webhooks: secrets.iter().map(SigningSecret::webhook).collect(),
        }
    }

    /// Verifies a delivery: headers present, timestamp within ±5 minutes, and at least one `v1`
    /// signature made with one of our secrets over `id.timestamp.body`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, Rejection> {
        let svix_id = header(headers, ID_HEADERS)?.ok_or(Rejection::MissingHeader("svix-id"))?;
        let timestamp = header(headers, TIMESTAMP_HEADERS)?
            .ok_or(Rejection::MissingHeader("svix-timestamp"))?;
        let signature = header(headers, SIGNATURE_HEADERS)?
            .ok_or(Rejection::MissingHeader("svix-signature"))?;
        if svix_id.is_empty() || svix_id.len() > MAX_SVIX_ID_LEN {
            return Err(Rejection::MalformedHeader("svix-id"));
        }
        let parsed_timestamp: i64 = timestamp
            .parse()
            .map_err(|_| Rejection::MalformedHeader("svix-timestamp"))?;
        // Checked here with saturating arithmetic: the library subtracts plainly, which
        // overflows (a panic in debug builds, a skipped check in release) for timestamps near
        // i64::MIN. Found by fuzzing.
        let now = chrono::Utc::now().timestamp();
        if now.saturating_sub(parsed_timestamp) > TOLERANCE_SECONDS {
            return Err(Rejection::TimestampTooOld);
        }
        if parsed_timestamp.saturating_sub(now) > TOLERANCE_SECONDS {
            return Err(Rejection::TimestampInFuture);
        }

        let mut unbranded = HeaderMap::with_capacity(3);
        for (name, value) in [
            (standardwebhooks::HEADER_WEBHOOK_ID, svix_id),
            (standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp),
            (standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature),
        ] {
            // The values came from a HeaderMap as visible ASCII, so they are valid again.
            let value =
                HeaderValue::from_str(value).map_err(|_| Rejection::MalformedHeader(name))?;
            unbranded.insert(name, value);
        }

        let mut rejection = Rejection::InvalidSignature;
        for webhook in &self.webhooks {
            match webhook.verify(body, &unbranded) {
                Ok(()) => {
                    return Ok(Delivery {
                        svix_id: svix_id.to_owned(),
                        timestamp: parsed_timestamp,
                    });
                }
                Err(e) => rejection = rejection_from(e),
            }
            if rejection != Rejection::InvalidSignature {
                // Timestamp and body problems are the same under every secret.
                break;
            }
        }
        Err(rejection)
    }
}

fn rejection_from(error: WebhookError) -> Rejection {
    match error {
        WebhookError::TimestampTooOldError => Rejection::TimestampTooOld,
        WebhookError::FutureTimestampError => Rejection::TimestampInFuture,
        WebhookError::InvalidPayload => Rejection::BodyNotUtf8,
        WebhookError::InvalidTimestamp => Rejection::MalformedHeader("svix-timestamp"),
        WebhookError::MissingHeader(_)
        | WebhookError::InvalidHeader(_)
        | WebhookError::InvalidSignature
        | WebhookError::InvalidSecret(_) => Rejection::InvalidSignature,
    }
}

/// Headers for a signed delivery, as Svix sends them (used by `trigger`, tests and benchmarks).
pub fn signed_headers(
    secret: &SigningSecret,
    svix_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, Rejection> {
    Ok(vec![
        ("svix-id", svix_id.to_owned()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", secret.sign(svix_id, timestamp, body)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn accepts_a_signature_from_any_configured_secret() {
        let (old, _) = SigningSecret::generate();
        let (new, _) = SigningSecret::generate();
        let verifier = Verifier::new(&[old.clone(), new.clone()]);
        let body = br#"{"type":"user.created","data":{}}"#;
        let ts = now();
        for secret in [&old, &new] {
            let h = headers(&signed_headers(secret, "msg_1", ts, body).unwrap());
            assert_eq!(verifier.verify(&h, body).unwrap().svix_id, "msg_1");
        }
        let (other, _) = SigningSecret::generate();
        let h = headers(&signed_headers(&other, "msg_1", ts, body).unwrap());
        assert_eq!(verifier.verify(&h, body), Err(Rejection::InvalidSignature));
    }

    #[test]
    fn reads_webhook_prefixed_headers_too() {
        let (secret, _) = SigningSecret::generate();
        let body = b"{}";
        let ts = now();
        let sig = secret.sign("msg_2", ts, body).unwrap();
        let h = headers(&[
            ("webhook-id", "msg_2".into()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ]);
        assert!(Verifier::new(&[secret]).verify(&h, body).is_ok());
    }

    #[test]
    fn timestamps_near_i64_min_are_too_old_not_a_panic() {
        let (secret, _) = SigningSecret::generate();
        let verifier = Verifier::new(std::slice::from_ref(&secret));
        let body = b"{}";
        for ts in ["-9223372036854775808", "-9223372036854775804"] {
            let h = headers(&[
                ("svix-id", "msg_1".into()),
                ("svix-timestamp", ts.into()),
                ("svix-signature", "v1,AAAA".into()),
            ]);
            assert_eq!(verifier.verify(&h, body), Err(Rejection::TimestampTooOld));
        }
        let sig = secret.sign("msg_1", i64::MIN, body).unwrap();
        let h = headers(&[
            ("svix-id", "msg_1".into()),
            ("svix-timestamp", i64::MIN.to_string()),
            ("svix-signature", sig),
        ]);
        assert_eq!(verifier.verify(&h, body), Err(Rejection::TimestampTooOld));
        let far_future = headers(&[
            ("svix-id", "msg_1".into()),
            ("svix-timestamp", i64::MAX.to_string()),
            ("svix-signature", "v1,AAAA".into()),
        ]);
        assert_eq!(
            verifier.verify(&far_future, body),
            Err(Rejection::TimestampInFuture)
        );
    }

    #[test]
    fn parse_list_splits_on_commas_and_spaces_and_names_the_bad_one() {
        let (_, a) = SigningSecret::generate();
        let (_, b) = SigningSecret::generate();
        assert_eq!(
            SigningSecret::parse_list(&format!("{a}, {b}"))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            SigningSecret::parse_list(&format!("{a} {b}"))
                .unwrap()
                .len(),
            2
        );
        let err = SigningSecret::parse_list(&format!("{a},whsec_!!!")).unwrap_err();
        assert!(err.contains("number 2"), "{err}");
        assert!(SigningSecret::parse("whsec_").is_err());
        assert!(SigningSecret::parse("").is_err());
    }
}
