//! The instance signing keys and Clerk-shaped session tokens (reference §e).

use std::sync::LazyLock;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use super::{SigningKey, TokenOptions};

/// One RSA-2048 key pair from `tests/fixtures/keys/`, with the `kid` Clerk would give it.
pub(super) struct InstanceKey {
    /// Clerk's JWKS `kid` is the instance id (`ins_` + 27 characters), so each fixture key gets a
    /// fixed one: tests can compare kids across runs.
    pub kid: &'static str,
    pub public_pem: &'static str,
    encoding: EncodingKey,
    /// Base64url modulus and exponent, as served in the JWKS.
    n: String,
    e: String,
}

impl InstanceKey {
    fn load(kid: &'static str, private_pem: &'static str, public_pem: &'static str) -> Self {
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .unwrap_or_else(|e| panic!("fixture key for {kid} is not an RSA PEM: {e}"));
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .unwrap_or_else(|e| panic!("fixture key for {kid} has no public components: {e}"));
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            panic!("fixture key for {kid} is not RSA");
        };
        InstanceKey {
            kid,
            public_pem,
            encoding,
            n: rsa.n,
            e: rsa.e,
        }
    }

    /// The key as `GET /v1/jwks` lists it, field for field like Clerk's JWKS.
    pub fn jwk(&self) -> Value {
        json!({"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256", "n": self.n, "e": self.e})
    }
}

pub(super) static INSTANCE_A: LazyLock<InstanceKey> = LazyLock::new(|| {
    InstanceKey::load(
        "ins_2EmuInstA0CurrentKey7Qx3Lp9",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/instance_a.pem"
        )),
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/instance_a.pub.pem"
        )),
    )
});

pub(super) static INSTANCE_A_ROTATED: LazyLock<InstanceKey> = LazyLock::new(|| {
    InstanceKey::load(
        "ins_2EmuInstA1RotatedKey4Vn8Wz2",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/instance_a_rotated.pem"
        )),
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/instance_a_rotated.pub.pem"
        )),
    )
});

pub(super) static OTHER_INSTANCE: LazyLock<InstanceKey> = LazyLock::new(|| {
    InstanceKey::load(
        "ins_2EmuOtherInstanceKey6Rt1Hy5",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/other_instance.pem"
        )),
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/other_instance.pub.pem"
        )),
    )
});

/// The key that signs for `choice`, given whether the instance has rotated.
pub(super) fn key_for(choice: SigningKey, rotated: bool) -> &'static InstanceKey {
    match choice {
        SigningKey::Current if rotated => &INSTANCE_A_ROTATED,
        SigningKey::Current => &INSTANCE_A,
        SigningKey::Rotated => &INSTANCE_A_ROTATED,
        SigningKey::OtherInstance => &OTHER_INSTANCE,
    }
}

/// An RS256 session token with Clerk's v2 claims (reference §e "Claims, version 2").
pub(super) fn mint(key: &InstanceKey, user_id: &str, options: &TokenOptions, now: i64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(options.kid.clone().unwrap_or_else(|| key.kid.to_string()));
    if let Some(category) = &options.category {
        header.extras.insert("cat", category);
    }

    let iat = now + options.issued_at_offset;
    // Clerk sets nbf a clock-skew allowance (5 s) before iat (reference §e "Lifetime").
    let nbf = options
        .not_before_offset
        .map_or(iat - 5, |offset| now + offset);
    let mut claims = Map::new();
    if let Some(azp) = &options.azp {
        claims.insert("azp".into(), azp.clone().into());
    }
    claims.insert("exp".into(), (now + options.expires_in).into());
    claims.insert("fva".into(), json!([0, -1]));
    claims.insert("iat".into(), iat.into());
    if let Some(iss) = &options.issuer {
        claims.insert("iss".into(), iss.clone().into());
    }
    claims.insert("jti".into(), super::random_chars(20, super::HEX).into());
    claims.insert("nbf".into(), nbf.into());
    claims.insert("sid".into(), options.session_id.clone().into());
    if let Some(status) = &options.status {
        claims.insert("sts".into(), status.clone().into());
    }
    if !options.omit_subject {
        claims.insert("sub".into(), user_id.into());
    }
    claims.insert("v".into(), 2.into());

    jsonwebtoken::encode(&header, &claims, &key.encoding).expect("RS256 signing with a fixture key")
}
