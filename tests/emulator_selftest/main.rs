//! Tests of the Clerk emulator itself, so that a failing clerk-sync test can be trusted to be
//! about clerk-sync. Each one talks to the emulator over real HTTP, as clerk-sync does.

#[path = "../clerk_emulator/mod.rs"]
mod clerk_emulator;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine;
use clerk_emulator::{
    ClerkEmulator, M2M_TOKEN_CATEGORY, SESSION_TOKEN_CATEGORY, SigningKey, TokenOptions,
};
use clerk_sync::clerk::sample::SampleUser;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn call_with(
    emu: &ClerkEmulator,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", emu.base_url()));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("the emulator answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(emu: &ClerkEmulator, path: &str) -> Answer {
    let auth = format!("Bearer {}", emu.secret_key());
    call_with(emu, Method::GET, path, Some(&auth), None).await
}

async fn patch(emu: &ClerkEmulator, path: &str, body: &str) -> Answer {
    let auth = format!("Bearer {}", emu.secret_key());
    call_with(emu, Method::PATCH, path, Some(&auth), Some(body)).await
}

/// Asserts Clerk's error shape and returns the error code.
fn error_code(answer: &Answer) -> String {
    let error = &answer.body["errors"][0];
    for field in ["message", "long_message", "code"] {
        assert!(
            error[field].is_string(),
            "{field} missing in {}",
            answer.body
        );
    }
    assert!(error["meta"].is_object(), "meta missing in {}", answer.body);
    assert!(
        answer.body["clerk_trace_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "clerk_trace_id missing in {}",
        answer.body
    );
    error["code"].as_str().unwrap().to_string()
}

fn ids(users: &Value) -> Vec<String> {
    users
        .as_array()
        .expect("a bare JSON array")
        .iter()
        .map(|user| user["id"].as_str().unwrap().to_string())
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sample(id: &str, created_at: i64) -> Value {
    SampleUser::new(id, created_at).to_clerk_json()
}

/// Seven users with created_at ties, inserted out of order; sorted ascending they are a..g.
fn seven_users(emu: &ClerkEmulator) -> Vec<String> {
    let created = [
        ("user_e", 1_002),
        ("user_a", 1_000),
        ("user_g", 1_003),
        ("user_c", 1_001),
        ("user_f", 1_002),
        ("user_b", 1_000),
        ("user_d", 1_002),
    ];
    for (id, at) in created {
        emu.insert_user(sample(id, 1_700_000_000_000 + at));
    }
    [
        "user_a", "user_b", "user_c", "user_d", "user_e", "user_f", "user_g",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn every_route_needs_the_secret_key() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    assert!(emu.secret_key().starts_with("sk_test_"));

    for path in [
        "/v1/users",
        "/v1/users/user_a",
        "/v1/users/count",
        "/v1/jwks",
        "/v1/instance",
    ] {
        let none = call_with(&emu, Method::GET, path, None, None).await;
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(error_code(&none), "authentication_invalid");

        let wrong = call_with(&emu, Method::GET, path, Some("Bearer sk_test_wrong"), None).await;
        assert_eq!(wrong.status, 401, "{path}");
        assert_eq!(error_code(&wrong), "authentication_invalid");

        let basic = format!("Basic {}", emu.secret_key());
        let basic = call_with(&emu, Method::GET, path, Some(&basic), None).await;
        assert_eq!(basic.status, 401, "{path}");

        assert_eq!(get(&emu, path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn keys_and_urls_look_like_a_development_instance() {
    let emu = ClerkEmulator::start().await;
    assert!(emu.base_url().starts_with("http://127.0.0.1:"));
    let encoded = emu.publishable_key();
    let encoded = encoded.strip_prefix("pk_test_").expect("a pk_test_ key");
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .expect("unpadded base64");
    let host = String::from_utf8(decoded).unwrap();
    let host = host.strip_suffix('$').expect("ends with one $");
    assert!(host.contains('.') && !host.contains('$'));
    assert_eq!(emu.frontend_api_url(), format!("https://{host}"));
    assert!(
        emu.instance_public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
}

#[tokio::test]
async fn instance_names_the_keys_instance_which_a_test_can_change_or_remove() {
    let emu = ClerkEmulator::start().await;
    let instance = get(&emu, "/v1/instance").await;
    assert_eq!(instance.status, 200);
    assert_eq!(instance.body["object"], "instance");
    assert_eq!(instance.body["environment_type"], "development");
    let id = instance.body["id"].as_str().expect("an id").to_string();
    assert!(id.starts_with("ins_"), "{id}");
    assert_eq!(emu.instance_id().as_deref(), Some(id.as_str()));
    assert_eq!(
        emu.current_kid(),
        id,
        "Clerk's JWKS kid is the instance id (before any rotation)"
    );

    emu.set_instance_id("ins_2OtherInstanceForTests0000");
    let other = get(&emu, "/v1/instance").await;
    assert_eq!(other.body["id"], "ins_2OtherInstanceForTests0000");

    let auth = format!("Bearer {}", emu.secret_key());
    let patch = call_with(&emu, Method::PATCH, "/v1/instance", Some(&auth), Some("{}")).await;
    assert_eq!(patch.status, 405);

    emu.remove_instance_endpoint();
    let absent = get(&emu, "/v1/instance").await;
    assert_eq!(absent.status, 404);
    assert_eq!(error_code(&absent), "resource_not_found");
    assert_eq!(emu.instance_id(), None);
}

#[tokio::test]
async fn get_returns_the_user_or_404() {
    let emu = ClerkEmulator::start().await;
    let user = sample("user_a", now_ms());
    emu.insert_user(user.clone());
    assert_eq!(emu.user_count(), 1);

    let found = get(&emu, "/v1/users/user_a").await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body, user);
    assert_eq!(emu.user("user_a"), Some(user));

    let missing = get(&emu, "/v1/users/user_nobody").await;
    assert_eq!(missing.status, 404);
    assert_eq!(error_code(&missing), "resource_not_found");

    emu.delete_user("user_a");
    assert_eq!(get(&emu, "/v1/users/user_a").await.status, 404);
    assert_eq!(emu.user_count(), 0);
    assert_eq!(emu.user("user_a"), None);
}

#[tokio::test]
async fn patch_sets_names_and_moves_updated_at_forward() {
    let emu = ClerkEmulator::start().await;
    let before = now_ms();
    emu.insert_user(sample("user_a", before - 60_000));
    // updated_at ahead of the clock: the next update must still be newer.
    let future = before + 3_600_000;
    let mut ahead = sample("user_b", before);
    ahead["updated_at"] = json!(future);
    emu.insert_user(ahead);

    let answer = patch(
        &emu,
        "/v1/users/user_a",
        r#"{"first_name":"Grace","last_name":null,"username":"grace"}"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    let user = &answer.body;
    assert_eq!(user["first_name"], "Grace");
    assert_eq!(user["last_name"], Value::Null);
    assert_eq!(user["username"], "grace");
    assert!(
        user["email_addresses"].is_array(),
        "the full user comes back"
    );
    assert!(user["updated_at"].as_i64().unwrap() >= before);
    assert_eq!(emu.user("user_a").as_ref(), Some(user));

    let again = patch(&emu, "/v1/users/user_a", r#"{"username":""}"#).await;
    assert_eq!(again.body["username"], Value::Null, "\"\" removes it");
    assert!(again.body["updated_at"].as_i64() > user["updated_at"].as_i64());

    let bumped = patch(&emu, "/v1/users/user_b", r#"{"first_name":"Ada"}"#).await;
    assert_eq!(bumped.body["updated_at"], json!(future + 1));

    let unknown = patch(&emu, "/v1/users/user_nobody", r#"{"first_name":"X"}"#).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(error_code(&unknown), "resource_not_found");
}

#[tokio::test]
async fn patch_rejects_what_clerk_rejects() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    emu.insert_user(sample("user_b", now_ms()));
    let user_a = emu.user("user_a").unwrap();

    for body in ["[1]", "not json", "", r#""x""#] {
        let answer = patch(&emu, "/v1/users/user_a", body).await;
        assert_eq!(answer.status, 422, "{body:?}");
        assert_eq!(error_code(&answer), "form_param_format_invalid");
    }
    let long = json!({"first_name": "é".repeat(257)}).to_string();
    let answer = patch(&emu, "/v1/users/user_a", &long).await;
    assert_eq!(answer.status, 422);
    assert_eq!(error_code(&answer), "form_param_exceeds_allowed_length");
    assert_eq!(answer.body["errors"][0]["meta"]["param_name"], "first_name");

    let answer = patch(&emu, "/v1/users/user_a", r#"{"public_metadata":{}}"#).await;
    assert_eq!(answer.status, 422);
    assert_eq!(error_code(&answer), "form_param_unknown");

    let answer = patch(&emu, "/v1/users/user_a", r#"{"first_name":7}"#).await;
    assert_eq!(error_code(&answer), "form_param_format_invalid");

    let taken = user_a["username"].as_str().unwrap().to_string();
    let answer = patch(
        &emu,
        "/v1/users/user_b",
        &json!({"username": taken}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 422);
    assert_eq!(error_code(&answer), "form_identifier_exists");

    assert_eq!(emu.user("user_a").unwrap(), user_a, "nothing changed");

    let exactly = json!({"first_name": "é".repeat(256)}).to_string();
    assert_eq!(patch(&emu, "/v1/users/user_b", &exactly).await.status, 200);
}

#[tokio::test]
async fn the_eleventh_patch_of_a_user_within_ten_seconds_is_rate_limited() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    emu.insert_user(sample("user_b", now_ms()));
    for n in 0..10 {
        let body = json!({"first_name": format!("n{n}")}).to_string();
        assert_eq!(patch(&emu, "/v1/users/user_a", &body).await.status, 200);
    }
    let limited = patch(&emu, "/v1/users/user_a", r#"{"first_name":"x"}"#).await;
    assert_eq!(limited.status, 429);
    assert_eq!(error_code(&limited), "too_many_requests");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(emu.user("user_a").unwrap()["first_name"], "n9");

    assert_eq!(
        patch(&emu, "/v1/users/user_b", r#"{"first_name":"x"}"#)
            .await
            .status,
        200,
        "the limit is per user"
    );
    assert_eq!(
        get(&emu, "/v1/users/user_a").await.status,
        200,
        "reads are not limited"
    );
}

/// Walks a cursor-paginated listing with limit 2, as a backfill does.
async fn walk(emu: &ClerkEmulator, order_by: Option<&str>) -> (Vec<String>, Vec<usize>) {
    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/users?limit=2".to_string();
        if let Some(order_by) = order_by {
            path.push_str(&format!("&order_by={}", order_by.replace('+', "%2B")));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&starting_after={cursor}"));
        }
        let answer = get(emu, &path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        let page = ids(&answer.body);
        page_sizes.push(page.len());
        seen.extend(page.iter().cloned());
        if page.len() < 2 {
            return (seen, page_sizes);
        }
        cursor = page.last().cloned();
    }
}

#[tokio::test]
async fn cursor_pagination_walks_every_user_once_in_order() {
    let emu = ClerkEmulator::start().await;
    let ascending = seven_users(&emu);
    let descending: Vec<String> = ascending.iter().rev().cloned().collect();

    for order_by in [Some("+created_at"), Some("created_at")] {
        let (seen, sizes) = walk(&emu, order_by).await;
        assert_eq!(seen, ascending, "{order_by:?}");
        assert_eq!(sizes, [2, 2, 2, 1]);
    }
    for order_by in [None, Some("-created_at")] {
        let (seen, sizes) = walk(&emu, order_by).await;
        assert_eq!(seen, descending, "{order_by:?}");
        assert_eq!(sizes, [2, 2, 2, 1]);
    }
    let unique: HashSet<&String> = ascending.iter().collect();
    assert_eq!(unique.len(), 7);
}

#[tokio::test]
async fn listing_defaults_offsets_and_filters() {
    let emu = ClerkEmulator::start().await;
    let ascending = seven_users(&emu);
    for n in 0..12 {
        emu.insert_user(sample(&format!("user_x{n:02}"), 1_600_000_000_000 + n));
    }

    let default = get(&emu, "/v1/users").await;
    assert_eq!(ids(&default.body).len(), 10, "default limit");
    assert_eq!(ids(&default.body)[0], "user_g", "newest first");

    let page = get(&emu, "/v1/users?order_by=%2Bcreated_at&limit=3&offset=12").await;
    assert_eq!(ids(&page.body), ascending[..3]);

    // updated_at order: touching user_c makes it the most recently updated.
    assert_eq!(
        patch(&emu, "/v1/users/user_c", r#"{"first_name":"C"}"#)
            .await
            .status,
        200
    );
    let recent = get(&emu, "/v1/users?order_by=-updated_at&limit=2").await;
    assert_eq!(ids(&recent.body), ["user_c", "user_g"]);
    let oldest = get(&emu, "/v1/users?order_by=updated_at&limit=1&offset=1").await;
    assert_eq!(ids(&oldest.body), ["user_x01"]);

    let only = get(
        &emu,
        "/v1/users?user_id=user_a&user_id=user_c&user_id=user_zz",
    )
    .await;
    assert_eq!(ids(&only.body), ["user_c", "user_a"]);
    let without = get(&emu, "/v1/users?user_id=-user_g&limit=1").await;
    assert_eq!(ids(&without.body), ["user_f"]);
    let filtered_cursor = get(
        &emu,
        "/v1/users?user_id=user_a&user_id=user_c&user_id=user_e&starting_after=user_d",
    )
    .await;
    assert_eq!(ids(&filtered_cursor.body), ["user_c", "user_a"]);

    let beyond = get(&emu, "/v1/users?offset=1000").await;
    assert_eq!(beyond.status, 200);
    assert_eq!(beyond.body, json!([]));
}

#[tokio::test]
async fn listing_rejects_what_clerk_rejects() {
    let emu = ClerkEmulator::start().await;
    seven_users(&emu);
    let cases = [
        ("/v1/users?limit=0", "form_param_value_invalid"),
        ("/v1/users?limit=501", "form_param_value_invalid"),
        ("/v1/users?limit=ten", "form_param_format_invalid"),
        ("/v1/users?offset=-1", "form_param_format_invalid"),
        ("/v1/users?order_by=first_name", "form_param_value_invalid"),
        ("/v1/users?order_by=sideways", "form_param_value_invalid"),
        (
            "/v1/users?order_by=-updated_at&starting_after=user_a",
            "form_param_value_invalid",
        ),
        (
            "/v1/users?offset=2&starting_after=user_a",
            "form_param_value_invalid",
        ),
        (
            "/v1/users?starting_after=user_nobody",
            "form_param_value_invalid",
        ),
        (
            "/v1/users?email_address=a@example.com",
            "form_param_unknown",
        ),
    ];
    for (path, code) in cases {
        let answer = get(&emu, path).await;
        assert_eq!(answer.status, 422, "{path}: {}", answer.body);
        assert_eq!(error_code(&answer), code, "{path}");
    }
    let fine = get(
        &emu,
        "/v1/users?limit=500&offset=0&starting_after=user_a&order_by=-created_at",
    )
    .await;
    assert_eq!(fine.status, 200);
}

#[tokio::test]
async fn count_counts_all_or_filtered_users() {
    let emu = ClerkEmulator::start().await;
    seven_users(&emu);
    let all = get(&emu, "/v1/users/count").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body, json!({"object": "total_count", "total_count": 7}));

    let some = get(
        &emu,
        "/v1/users/count?user_id=user_a&user_id=user_b&user_id=user_zz",
    )
    .await;
    assert_eq!(some.body["total_count"], 2);
    let without = get(&emu, "/v1/users/count?user_id=-user_a").await;
    assert_eq!(without.body["total_count"], 6);

    emu.delete_user("user_a");
    assert_eq!(get(&emu, "/v1/users/count").await.body["total_count"], 6);
}

#[tokio::test]
async fn rate_limit_next_answers_429_with_retry_after_then_recovers() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    emu.rate_limit_next(2, 3);

    for _ in 0..2 {
        let limited = get(&emu, "/v1/users/user_a").await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.headers["retry-after"], "3");
        assert_eq!(error_code(&limited), "too_many_requests");
    }
    assert_eq!(get(&emu, "/v1/users/user_a").await.status, 200);
}

#[tokio::test]
async fn fail_next_fails_the_next_requests_in_order_and_records_them() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    emu.fail_next(2, 503);
    emu.rate_limit_next(1, 7);

    // Outside /v1 nothing is consumed.
    assert_eq!(get(&emu, "/healthz").await.status, 404);
    let first = get(&emu, "/v1/jwks").await;
    assert_eq!(first.status, 503);
    assert_eq!(error_code(&first), "internal_clerk_error");
    let second = call_with(&emu, Method::GET, "/v1/users/user_a", None, None).await;
    assert_eq!(second.status, 503, "faults come before authentication");
    let third = get(&emu, "/v1/users?limit=1").await;
    assert_eq!(third.status, 429);
    assert_eq!(third.headers["retry-after"], "7");
    assert_eq!(get(&emu, "/v1/users/user_a").await.status, 200);

    let recorded: Vec<(String, String, String, u16)> = emu
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.query, r.status))
        .collect();
    let expected = [
        ("GET", "/healthz", "", 404),
        ("GET", "/v1/jwks", "", 503),
        ("GET", "/v1/users/user_a", "", 503),
        ("GET", "/v1/users", "limit=1", 429),
        ("GET", "/v1/users/user_a", "", 200),
    ]
    .map(|(m, p, q, s)| (m.to_string(), p.to_string(), q.to_string(), s));
    assert_eq!(recorded, expected);
    assert_eq!(emu.request_count("GET", "/v1/users"), 3);
    assert_eq!(emu.request_count("get", "/v1/users/user_a"), 2);
    assert_eq!(emu.request_count("PATCH", "/v1"), 0);
}

#[tokio::test]
async fn latency_delays_answers() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    emu.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(get(&emu, "/v1/users/user_a").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn held_answers_wait_for_the_release_and_in_flight_requests_are_visible() {
    let emu = ClerkEmulator::start().await;
    emu.insert_user(sample("user_a", now_ms()));
    let hold = emu.hold_answers("/v1/users/");
    let calls = [0, 1].map(|_| {
        let emu = emu.clone();
        tokio::spawn(async move { get(&emu, "/v1/users/user_a").await.status })
    });
    hold.request_arrived().await;
    hold.request_arrived().await;
    // Paths the hold is not about are answered meanwhile.
    assert_eq!(get(&emu, "/v1/jwks").await.status, 200);
    let in_flight = emu.requests();
    let users: Vec<_> = in_flight
        .iter()
        .filter(|r| r.path == "/v1/users/user_a")
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|r| r.status == 0), "{in_flight:?}");
    hold.release();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert!(emu.requests().iter().all(|r| r.status == 200));
}

async fn jwks(emu: &ClerkEmulator) -> JwkSet {
    let answer = get(emu, "/v1/jwks").await;
    assert_eq!(answer.status, 200);
    let keys = answer.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "only the current key");
    let key = &keys[0];
    assert_eq!(
        (&key["use"], &key["kty"], &key["alg"], &key["e"]),
        (
            &json!("sig"),
            &json!("RSA"),
            &json!("RS256"),
            &json!("AQAB")
        )
    );
    assert!(key["kid"].as_str().unwrap().starts_with("ins_"));
    serde_json::from_value(answer.body).expect("a JWK set")
}

fn validation(emu: &ClerkEmulator) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_issuer(&[emu.frontend_api_url()]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    validation
}

/// Verifies `token` the way a networked verifier would: pick the JWKS key by `kid`.
fn verify(jwks: &JwkSet, token: &str, validation: &Validation) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks
        .find(&kid)
        .ok_or(format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn minted_session_tokens_verify_against_the_served_jwks() {
    let emu = ClerkEmulator::start().await;
    let jwks = jwks(&emu).await;
    let validation = validation(&emu);
    let before = now_secs();
    let token = emu.mint_session_token("user_a", &TokenOptions::default());

    let claims = verify(&jwks, &token, &validation).expect("a valid token");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid, Some(emu.current_kid()));
    assert_eq!(
        header.extras.get::<String>("cat").unwrap().as_deref(),
        Some(SESSION_TOKEN_CATEGORY)
    );
    assert_eq!(claims["sub"], "user_a");
    assert_eq!(claims["iss"], emu.frontend_api_url());
    assert_eq!(claims["azp"], "http://localhost:3000");
    assert_eq!(claims["v"], 2);
    assert_eq!(claims["fva"], json!([0, -1]));
    assert!(claims["sid"].as_str().unwrap().starts_with("sess_"));
    assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()));
    assert!(claims.get("sts").is_none());
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before..=before + 2).contains(&iat));
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 60);
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat - 5);

    // Networkless verification with CLERK_JWT_KEY.
    let pem = DecodingKey::from_rsa_pem(emu.instance_public_key_pem().as_bytes()).unwrap();
    jsonwebtoken::decode::<Value>(&token, &pem, &validation).expect("verifies with the PEM");

    // Another instance's key: not in the JWKS, and no signature match under our kid either.
    let other = TokenOptions {
        key: SigningKey::OtherInstance,
        ..TokenOptions::default()
    };
    let foreign = emu.mint_session_token("user_a", &other);
    assert!(
        verify(&jwks, &foreign, &validation)
            .unwrap_err()
            .contains("not in the JWKS")
    );
    let disguised = TokenOptions {
        kid: Some(emu.current_kid()),
        ..other
    };
    let disguised = emu.mint_session_token("user_a", &disguised);
    assert!(verify(&jwks, &disguised, &validation).is_err());
    assert!(jsonwebtoken::decode::<Value>(&disguised, &pem, &validation).is_err());
}

#[tokio::test]
async fn token_options_shape_the_claims() {
    let emu = ClerkEmulator::start().await;
    let jwks = jwks(&emu).await;
    let claims_of = |options: &TokenOptions| {
        let token = emu.mint_session_token("user_a", options);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&token).unwrap();
        (token, header, claims)
    };
    let now = now_secs();

    let (_, _, claims) = claims_of(&TokenOptions {
        status: Some("pending".into()),
        omit_subject: true,
        azp: None,
        issuer: None,
        session_id: "sess_fixed".into(),
        ..TokenOptions::default()
    });
    assert_eq!(claims["sts"], "pending");
    assert_eq!(claims["sid"], "sess_fixed");
    for absent in ["sub", "azp", "iss"] {
        assert!(claims.get(absent).is_none(), "{absent}: {claims}");
    }

    let (_, header, _) = claims_of(&TokenOptions {
        category: Some(M2M_TOKEN_CATEGORY.into()),
        ..TokenOptions::default()
    });
    assert_eq!(
        header.extras.get::<String>("cat").unwrap().as_deref(),
        Some(M2M_TOKEN_CATEGORY)
    );
    let (_, header, _) = claims_of(&TokenOptions {
        category: None,
        kid: Some("ins_someone_else".into()),
        ..TokenOptions::default()
    });
    assert!(header.extras.get::<String>("cat").unwrap().is_none());
    assert_eq!(header.kid.as_deref(), Some("ins_someone_else"));

    let (future, _, claims) = claims_of(&TokenOptions {
        issued_at_offset: 3600,
        ..TokenOptions::default()
    });
    let iat = claims["iat"].as_i64().unwrap();
    assert!((now + 3600..=now + 3602).contains(&iat));
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat - 5);
    assert!(
        verify(&jwks, &future, &validation(&emu)).is_err(),
        "not yet valid"
    );

    let (_, _, claims) = claims_of(&TokenOptions {
        not_before_offset: Some(100),
        ..TokenOptions::default()
    });
    let nbf = claims["nbf"].as_i64().unwrap();
    assert!((now + 100..=now + 102).contains(&nbf));

    let (expired, _, _) = claims_of(&TokenOptions {
        expires_in: -10,
        ..TokenOptions::default()
    });
    assert!(
        verify(&jwks, &expired, &validation(&emu))
            .unwrap_err()
            .contains("Expired")
    );

    let fresh = TokenOptions::default();
    assert_ne!(fresh.session_id, TokenOptions::default().session_id);
}

#[tokio::test]
async fn rotation_replaces_the_jwks_key() {
    let emu = ClerkEmulator::start().await;
    let validation = validation(&emu);
    let old_jwks = jwks(&emu).await;
    let old_kid = emu.current_kid();
    let old_pem = emu.instance_public_key_pem();
    assert!(old_jwks.find(&old_kid).is_some());
    let before = emu.mint_session_token("user_a", &TokenOptions::default());
    let pre_rotated = emu.mint_session_token(
        "user_a",
        &TokenOptions {
            key: SigningKey::Rotated,
            ..TokenOptions::default()
        },
    );

    emu.rotate_signing_key();
    let new_jwks = jwks(&emu).await;
    let new_kid = emu.current_kid();
    assert_ne!(new_kid, old_kid);
    assert!(new_jwks.find(&new_kid).is_some());
    assert!(new_jwks.find(&old_kid).is_none(), "the old key is gone");
    assert_ne!(emu.instance_public_key_pem(), old_pem);
    let new_pem = DecodingKey::from_rsa_pem(emu.instance_public_key_pem().as_bytes()).unwrap();

    let after = emu.mint_session_token("user_a", &TokenOptions::default());
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid,
        Some(new_kid.clone())
    );
    verify(&new_jwks, &after, &validation).expect("new tokens verify with the new JWKS");
    verify(&new_jwks, &pre_rotated, &validation).expect("Rotated is the same key");
    jsonwebtoken::decode::<Value>(&after, &new_pem, &validation).expect("the new PEM verifies");
    assert!(verify(&new_jwks, &before, &validation).is_err());
    assert!(verify(&old_jwks, &after, &validation).is_err());
}
