//! Fuzzes `clerk_sync::clerk::session::SessionVerifier::verify` with a fixed RS256 public key
//! (`tests/fixtures/keys/instance_a.pub.pem`) and the default rules.
//!
//! The input, read as lossy UTF-8, is the token. A fuzzer cannot forge an RS256 signature, so
//! `verify` must never accept, and must never panic. Since random bytes rarely make base64url
//! JSON, an input with two NUL bytes is also read as `header JSON \0 claims JSON \0 signature`
//! and each part base64url-encoded into a second token, so the JSON inside gets fuzzed too.
//!
//! On start, a token really signed with the matching private key is checked to pass (and a
//! tampered copy to fail), so "never accepted" cannot hold just because the key failed to load.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clerk_sync::clerk::session::{KeySource, SessionError, SessionRules, SessionVerifier};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

const PUBLIC_KEY: &str = include_str!("../../tests/fixtures/keys/instance_a.pub.pem");
const PRIVATE_KEY: &str = include_str!("../../tests/fixtures/keys/instance_a.pem");

struct Fixture {
    runtime: Runtime,
    verifier: SessionVerifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("current-thread runtime");
        let verifier =
            SessionVerifier::new(KeySource::Pem(PUBLIC_KEY.into()), SessionRules::default())
                .expect("the fixture public key loads");
        let fixture = Fixture { runtime, verifier };
        self_check(&fixture);
        fixture
    })
}

/// A genuine token passes and a tampered one does not: the harness is not vacuous.
fn self_check(fx: &Fixture) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = serde_json::json!({
        "sub": "user_fuzz",
        "sid": "sess_fuzz",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    let key = EncodingKey::from_rsa_pem(PRIVATE_KEY.as_bytes()).expect("fixture private key");
    let token = encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign");
    let session = fx
        .runtime
        .block_on(fx.verifier.verify(&token))
        .expect("a genuine token must verify");
    assert_eq!(session.user_id, "user_fuzz");
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    let mut bad = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url signature");
    bad[0] ^= 1;
    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bad));
    assert_eq!(
        fx.runtime.block_on(fx.verifier.verify(&tampered)),
        Err(SessionError::BadSignature)
    );
}

fn check(fx: &Fixture, token: &str) {
    match fx.runtime.block_on(fx.verifier.verify(token)) {
        Ok(session) => panic!("forged token accepted: {token:?} -> {session:?}"),
        // A PEM key never needs fetching, nor looks a kid up.
        Err(e @ (SessionError::KeysUnavailable(_) | SessionError::UnknownKey(_))) => {
            panic!("static key source answered {e:?} for {token:?}")
        }
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    check(fx, &String::from_utf8_lossy(data));

    let mut parts = data.splitn(3, |&b| b == 0);
    if let (Some(header), Some(claims), Some(signature)) =
        (parts.next(), parts.next(), parts.next())
    {
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(signature)
        );
        check(fx, &token);
    }
});
