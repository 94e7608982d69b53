//! Fuzzes `clerk_sync::webhook::Verifier::verify` (Svix signature check on raw headers + body).
//!
//! Input layout: one flags byte, then up to four fields separated by `\n`:
//! `svix-id \n svix-timestamp \n svix-signature \n body` (the body is the rest and may hold `\n`).
//! A field that is absent means the header is not sent.
//!
//! Flags:
//! * bit 0, 1, 2: send the id / timestamp / signature as `webhook-*` instead of `svix-*`.
//! * bit 3: also send the other name of each header with a decoy value (in signed mode only
//!   under the name that loses, `webhook-*`, since `svix-*` wins).
//! * bit 4: signed mode: ignore the signature field and sign the body correctly (with the
//!   verifier's secret, at the current time); verification must then succeed.
//! * bit 5 (signed): verify with two secrets configured, ours second (a rotation).
//! * bit 6 (signed): the signature field (made printable) goes before the correct signature, as
//!   extra space-separated entries.
//! * bit 7 (signed): the timestamp field is an offset in seconds from now; within ±295 s it must
//!   be accepted, beyond ±305 s refused with the matching reason.
//!
//! Raw mode (bit 4 clear): anything may be refused, nothing may panic, and an accepted delivery
//! must carry one of the signatures we would compute ourselves.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use clerk_sync::webhook::{Rejection, SigningSecret, Verifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The secret the fuzzed deliveries are checked against (Svix's published test secret).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another secret, configured before ours for the rotation case.
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

const MAX_SVIX_ID_LEN: usize = 255;
/// Seconds of the ±5 minute window that must certainly pass, and beyond which it must fail.
const SURELY_FRESH: i64 = 295;
const SURELY_STALE: i64 = 305;

struct Fixture {
    secret: SigningSecret,
    other: SigningSecret,
    single: Verifier,
    rotating: Verifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let secret = SigningSecret::parse(SECRET).expect("fixed secret parses");
        let other = SigningSecret::parse(OTHER_SECRET).expect("other secret parses");
        Fixture {
            single: Verifier::new(std::slice::from_ref(&secret)),
            rotating: Verifier::new(&[other.clone(), secret.clone()]),
            secret,
            other,
        }
    })
}

#[derive(Clone, Copy)]
struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

fn names(flags: u8) -> (Names, Names) {
    let pick = |bit: u8, svix: &'static str, webhook: &'static str| {
        if flags & (1 << bit) == 0 {
            (svix, webhook)
        } else {
            (webhook, svix)
        }
    };
    let (id, id_other) = pick(0, "svix-id", "webhook-id");
    let (ts, ts_other) = pick(1, "svix-timestamp", "webhook-timestamp");
    let (sig, sig_other) = pick(2, "svix-signature", "webhook-signature");
    (
        Names {
            id,
            timestamp: ts,
            signature: sig,
        },
        Names {
            id: id_other,
            timestamp: ts_other,
            signature: sig_other,
        },
    )
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    // A value no HTTP stack would deliver is simply not sent.
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.append(HeaderName::from_static(name), value);
    }
}

/// Keeps the printable ASCII (what a real Svix id or signature list is made of), trimmed.
fn printable(bytes: &[u8]) -> String {
    let kept: String = bytes
        .iter()
        .filter(|b| (0x20..=0x7e).contains(*b))
        .map(|&b| b as char)
        .collect();
    kept.trim().to_owned()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.splitn(4, |&b| b == b'\n');
    let id = fields.next();
    let timestamp = fields.next();
    let signature = fields.next();
    let body = fields.next();
    if flags & 0x10 == 0 {
        raw(flags, id, timestamp, signature, body.unwrap_or_default());
    } else {
        signed(
            flags,
            id.unwrap_or_default(),
            timestamp.unwrap_or_default(),
            signature.unwrap_or_default(),
            body.unwrap_or_default(),
        );
    }
});

/// Headers exactly as fuzzed: must never panic; an accepted one must really be signed by us.
fn raw(
    flags: u8,
    id: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    body: &[u8],
) {
    let fx = fixture();
    let (primary, other) = names(flags);
    let mut headers = HeaderMap::new();
    for (name, other_name, value) in [
        (primary.id, other.id, id),
        (primary.timestamp, other.timestamp, timestamp),
        (primary.signature, other.signature, signature),
    ] {
        if let Some(value) = value {
            insert(&mut headers, name, value);
            if flags & 0x08 != 0 {
                insert(&mut headers, other_name, b"decoy");
            }
        }
    }
    let verifier = if flags & 0x20 == 0 {
        &fx.single
    } else {
        &fx.rotating
    };
    if let Ok(delivery) = verifier.verify(&headers, body) {
        // Only reachable with a real signature; check it is one we would have made.
        let sent_signature = headers
            .get("svix-signature")
            .or_else(|| headers.get("webhook-signature"))
            .and_then(|v| v.to_str().ok())
            .expect("accepted without a readable signature header");
        let mut secrets = vec![&fx.secret];
        if flags & 0x20 != 0 {
            secrets.push(&fx.other);
        }
        let expected: Vec<String> = secrets
            .iter()
            .map(|secret| {
                secret
                    .sign(&delivery.svix_id, delivery.timestamp, body)
                    .expect("accepted a body that cannot be signed")
            })
            .collect();
        assert!(
            sent_signature
                .split(' ')
                .any(|s| expected.iter().any(|e| e == s)),
            "accepted {delivery:?} but no entry of {sent_signature:?} is one of {expected:?}"
        );
        assert!(!delivery.svix_id.is_empty() && delivery.svix_id.len() <= MAX_SVIX_ID_LEN);
    }
}

/// A delivery signed the way Svix signs it: must be accepted (or refused for its timestamp).
fn signed(flags: u8, id: &[u8], timestamp: &[u8], signature: &[u8], body: &[u8]) {
    let fx = fixture();
    let mut id = printable(id);
    id.truncate(MAX_SVIX_ID_LEN);
    // Header values have no surrounding whitespace (HTTP parsers strip it).
    id.truncate(id.trim_end().len());
    if id.is_empty() {
        id = "msg_fuzz".to_owned();
    }
    let offset = if flags & 0x80 != 0 {
        std::str::from_utf8(timestamp)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let ts = now().saturating_add(offset);
    let verifier = if flags & 0x20 == 0 {
        &fx.single
    } else {
        &fx.rotating
    };
    let (primary, other) = names(flags);

    let correct = match fx.secret.sign(&id, ts, body) {
        Ok(sig) => Some(sig),
        Err(e) => {
            assert_eq!(e, Rejection::BodyNotUtf8);
            assert!(
                std::str::from_utf8(body).is_err(),
                "sign refused a UTF-8 body"
            );
            None
        }
    };
    let mut signature_header = correct.clone().unwrap_or_else(|| "v1,AAAA".to_owned());
    if flags & 0x40 != 0 {
        let extra = printable(signature);
        if !extra.is_empty() {
            signature_header = format!("{extra} {signature_header}");
        }
    }

    let mut headers = HeaderMap::new();
    insert(&mut headers, primary.id, id.as_bytes());
    insert(&mut headers, primary.timestamp, ts.to_string().as_bytes());
    insert(&mut headers, primary.signature, signature_header.as_bytes());
    if flags & 0x08 != 0 {
        // Decoys only under the names that lose to the real ones.
        for (name, decoy_name) in [
            (primary.id, other.id),
            (primary.timestamp, other.timestamp),
            (primary.signature, other.signature),
        ] {
            if name.starts_with("svix-") {
                insert(&mut headers, decoy_name, b"decoy");
            }
        }
    }

    let result = verifier.verify(&headers, body);
    if offset < -SURELY_STALE {
        assert_eq!(result, Err(Rejection::TimestampTooOld), "offset {offset}");
    } else if offset > SURELY_STALE {
        assert_eq!(result, Err(Rejection::TimestampInFuture), "offset {offset}");
    } else if offset.unsigned_abs() <= SURELY_FRESH.unsigned_abs() {
        match correct {
            Some(_) => {
                let delivery = result.unwrap_or_else(|e| {
                    panic!(
                        "a correctly signed delivery was refused ({e}): id {id:?}, ts {ts}, \
                         signature header {signature_header:?}, body {:?}",
                        String::from_utf8_lossy(body)
                    )
                });
                assert_eq!(delivery.svix_id, id);
                assert_eq!(delivery.timestamp, ts);
            }
            None => assert_eq!(result, Err(Rejection::BodyNotUtf8)),
        }
    }
}
