//! Tests of the Clerk emulator itself, so that a failing clerk-sync test can be trusted to be
//! about clerk-sync. Each one talks to the emulator over real HTTP, as clerk-sync does.

#[path = "../clerk_emulator/mod.rs"]
mod clerk_emulator;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use base64::Engine;
use clerk_emulator::{
    ClerkEmulator, M2M_TOKEN_CATEGORY, SESSION_TOKEN_CATEGORY, SigningKey, TokenOptions,
};
use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
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
    let org = SampleOrganization::new("org_a", now_ms());
    emu.insert_organization(org.to_json());
    emu.insert_membership(SampleMembership::new("orgmem_a", org, "user_a", now_ms()).to_json());
    assert!(emu.secret_key().starts_with("sk_test_"));

    for path in [
        "/v1/users",
        "/v1/users/user_a",
        "/v1/users/count",
        "/v1/jwks",
        "/v1/instance",
        "/v1/organizations",
        "/v1/organizations/org_a",
        "/v1/organizations/org_a/memberships",
        "/v1/organization_memberships",
        "/v1/users/user_a/organization_memberships",
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

// Organizations and memberships (reference §i).

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/clerk/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(object: &Value) -> HashSet<String> {
    object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"))
        .keys()
        .cloned()
        .collect()
}

/// Asserts that `served` carries every field `example` has (recursively into the embedded
/// organization and user data), with values of the same JSON type.
fn assert_carries(served: &Value, example: &Value, what: &str) {
    for (field, value) in example.as_object().expect("an example object") {
        let got = served
            .get(field)
            .unwrap_or_else(|| panic!("{what}: no {field} in {served}"));
        assert_eq!(
            std::mem::discriminant(got),
            std::mem::discriminant(value),
            "{what}.{field}: {got} where Clerk's example has {value}"
        );
        if value.is_object() && !value.as_object().unwrap().is_empty() {
            assert_carries(got, value, &format!("{what}.{field}"));
        }
    }
}

/// The `data` of a list answer, checked for Clerk's list shape and `total_count`.
fn page(answer: &Answer, total_count: usize) -> Vec<String> {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        keys(&answer.body),
        keys(&json!({"data": 0, "total_count": 0}))
    );
    assert_eq!(answer.body["total_count"], total_count, "{}", answer.body);
    ids(&answer.body["data"])
}

/// Walks a list with offset paging, `limit` at a time.
async fn walk_offsets(emu: &ClerkEmulator, path: &str, limit: usize, total: usize) -> Vec<String> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut seen = Vec::new();
    loop {
        let paged = format!("{path}{separator}limit={limit}&offset={}", seen.len());
        let items = page(&get(emu, &paged).await, total);
        let done = items.len() < limit;
        seen.extend(items);
        if done {
            return seen;
        }
    }
}

fn org(id: &str, name: &str, created_at: i64) -> SampleOrganization {
    SampleOrganization {
        name: name.into(),
        ..SampleOrganization::new(id, 1_700_000_000_000 + created_at)
    }
}

/// Five organizations with created_at ties, names out of id order and 3, 0, 1, 0, 2 members;
/// each membership is created at its organization's time plus the member's number.
fn five_organizations(emu: &ClerkEmulator) -> Vec<SampleOrganization> {
    let orgs = vec![
        org("org_a", "Delta", 1),
        org("org_b", "alpha", 1),
        org("org_c", "Charlie", 0),
        org("org_d", "Bravo", 2),
        org("org_e", "Bravo", 3),
    ];
    emu.insert_organizations(orgs.iter().rev().map(SampleOrganization::to_json));
    let members = [("org_a", 3), ("org_c", 1), ("org_e", 2)];
    for (org_id, count) in members {
        let org = orgs.iter().find(|o| o.id == org_id).unwrap();
        emu.insert_memberships((0..count).map(|n| {
            SampleMembership::new(
                format!("orgmem_{}{n}", &org_id[4..]),
                org.clone(),
                format!("user_{n}"),
                org.created_at + n as i64,
            )
            .to_json()
        }));
    }
    orgs
}

#[test]
fn sample_builders_give_every_field_of_clerks_examples() {
    let org_example = fixture("organization.created.json");
    let org = SampleOrganization::new("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", 1_716_883_200_000);
    assert_eq!(keys(&org.to_json()), keys(&org_example["data"]));
    assert_carries(&org.to_json(), &org_example["data"], "organization");
    assert_eq!(org.to_json()["slug"], "acme-2g7np7hrk0sn6kj5edmldaknl0s");

    let membership_example = fixture("organizationMembership.created.json");
    let membership = SampleMembership::new("orgmem_1", org.clone(), "user_1", 1_716_883_200_000);
    let json = membership.to_json();
    assert_carries(&json, &membership_example["data"], "membership");
    assert_eq!(keys(&json), keys(&membership_example["data"]));
    assert_eq!(json["organization"], org.to_json());
    assert_eq!(
        (&json["role"], &json["role_name"], &json["permissions"]),
        (
            &json!("org:member"),
            &json!("Member"),
            &json!(["org:sys_memberships:read"])
        )
    );
    assert_eq!(json["public_user_data"]["user_id"], "user_1");
    let admin = membership.with_role("org:admin").to_json();
    assert_eq!(admin["role_name"], "Admin");
    assert!(admin["permissions"].as_array().unwrap().len() > 1);

    let member = SampleMembership::new("orgmem_1", org.clone(), "user_1", 1);
    let events = [
        (
            sample::organization_created(&org),
            "organization.created",
            "organization.created.json",
        ),
        (
            sample::organization_updated(&org),
            "organization.updated",
            "organization.created.json",
        ),
        (
            sample::organization_deleted(&org.id, &org.slug, 1),
            "organization.deleted",
            "organization.deleted.json",
        ),
        (
            sample::membership_created(&member),
            "organizationMembership.created",
            "organizationMembership.created.json",
        ),
        (
            sample::membership_updated(&member),
            "organizationMembership.updated",
            "organizationMembership.created.json",
        ),
        (
            sample::membership_deleted(&member, 7),
            "organizationMembership.deleted",
            "organizationMembership.deleted.json",
        ),
    ];
    for (body, event_type, example) in events {
        let event: Value = serde_json::from_str(&body).unwrap();
        let example = fixture(example);
        assert_eq!(event["type"], event_type);
        assert_eq!(keys(&event), keys(&example), "{event_type}");
        assert_carries(&event, &example, event_type);
    }
    let deleted: Value = serde_json::from_str(&sample::membership_deleted(&member, 7)).unwrap();
    assert_eq!(
        (&deleted["timestamp"], &deleted["data"]["updated_at"]),
        (&json!(7), &json!(1)),
        "the deletion's moment is the envelope's, not updated_at"
    );
}

#[tokio::test]
async fn organizations_and_memberships_carry_every_field_of_clerks_examples() {
    let emu = ClerkEmulator::start().await;
    // Clerk's own examples, inserted verbatim.
    let org_example = fixture("organization.created.json")["data"].clone();
    let membership_example = fixture("organizationMembership.created.json")["data"].clone();
    emu.insert_organization(org_example.clone());
    emu.insert_membership(membership_example.clone());
    let org_id = org_example["id"].as_str().unwrap();
    let user_id = membership_example["public_user_data"]["user_id"]
        .as_str()
        .unwrap();

    let full = "include_members_count=true&include_missing_member_with_elevated_permissions=true";
    let one = get(&emu, &format!("/v1/organizations/{org_id}?{full}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(
        one.body, org_example,
        "served as inserted, members_count 1 counted"
    );
    let list = get(&emu, &format!("/v1/organizations?{full}")).await;
    assert_eq!(page(&list, 1), [org_id]);
    assert_eq!(list.body["data"][0], org_example);
    assert_eq!(emu.organization(org_id), Some(org_example.clone()));

    // The example membership's organization says 2 members; the emulator holds one.
    let mut expected = membership_example.clone();
    expected["organization"] = org_example.clone();
    for path in [
        "/v1/organization_memberships".to_string(),
        format!("/v1/organizations/{org_id}/memberships"),
        format!("/v1/users/{user_id}/organization_memberships"),
    ] {
        let answer = get(&emu, &path).await;
        assert_eq!(
            page(&answer, 1),
            [membership_example["id"].as_str().unwrap()],
            "{path}"
        );
        assert_eq!(answer.body["data"][0], expected, "{path}");
        assert_carries(&answer.body["data"][0], &membership_example, &path);
    }
    let id = membership_example["id"].as_str().unwrap();
    assert_eq!(emu.membership(id), Some(expected));

    // Sample builders' objects come back with every field too.
    let org = SampleOrganization::new("org_sample", now_ms());
    emu.insert_organization(org.to_json());
    emu.insert_membership(
        SampleMembership::new("orgmem_sample", org, "user_s", now_ms()).to_json(),
    );
    let served = get(&emu, "/v1/users/user_s/organization_memberships").await;
    assert_carries(
        &served.body["data"][0],
        &membership_example,
        "sample membership",
    );
}

#[tokio::test]
async fn counts_are_included_only_when_asked_for() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    let plain = get(&emu, "/v1/organizations/org_a").await;
    assert_eq!(plain.status, 200);
    for absent in [
        "members_count",
        "pending_invitations_count",
        "missing_member_with_elevated_permissions",
    ] {
        assert!(plain.body.get(absent).is_none(), "{absent}: {}", plain.body);
    }
    assert_eq!(plain.body["slug"], "acme-a");

    let counted = get(&emu, "/v1/organizations/org_a?include_members_count=true").await;
    assert_eq!(
        counted.body["members_count"], 3,
        "counted, not the sample's 1"
    );
    assert_eq!(counted.body["pending_invitations_count"], 0);
    assert!(
        counted
            .body
            .get("missing_member_with_elevated_permissions")
            .is_none()
    );
    let listed = get(
        &emu,
        "/v1/organizations?include_members_count=true&limit=500",
    )
    .await;
    for org in listed.body["data"].as_array().unwrap() {
        assert!(org["members_count"].is_u64(), "{org}");
    }
    let not_listed = get(&emu, "/v1/organizations?include_members_count=false").await;
    assert!(not_listed.body["data"][0].get("members_count").is_none());

    let elevated = get(
        &emu,
        "/v1/organizations/org_a?include_missing_member_with_elevated_permissions=true",
    )
    .await;
    assert_eq!(
        elevated.body["missing_member_with_elevated_permissions"],
        false
    );
    assert!(elevated.body.get("members_count").is_none());

    // Embedded organizations always carry the count.
    let memberships = get(&emu, "/v1/organizations/org_e/memberships").await;
    assert_eq!(
        memberships.body["data"][0]["organization"]["members_count"],
        2
    );
}

#[tokio::test]
async fn get_organization_by_id_or_slug_or_404() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    let by_id = get(&emu, "/v1/organizations/org_c").await;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.body["name"], "Charlie");
    assert_eq!(by_id.body["object"], "organization");
    let by_slug = get(&emu, "/v1/organizations/acme-c").await;
    assert_eq!(by_slug.body, by_id.body);

    for path in [
        "/v1/organizations/org_nobody",
        "/v1/organizations/org_nobody/memberships",
        "/v1/organizations/acme-c/memberships",
    ] {
        let missing = get(&emu, path).await;
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(error_code(&missing), "resource_not_found");
    }
    let nobody = get(&emu, "/v1/users/user_nobody/organization_memberships").await;
    assert_eq!(page(&nobody, 0), Vec::<String>::new());

    emu.delete_organization("org_c");
    assert_eq!(get(&emu, "/v1/organizations/org_c").await.status, 404);
    assert_eq!(get(&emu, "/v1/organizations/acme-c").await.status, 404);
    assert_eq!(emu.organization("org_c"), None);
}

#[tokio::test]
async fn organizations_page_by_offset_in_every_order() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    let newest_first = ["org_e", "org_d", "org_b", "org_a", "org_c"];

    let default = get(&emu, "/v1/organizations").await;
    assert_eq!(page(&default, 5), newest_first, "-created_at, ties by id");
    assert_eq!(
        walk_offsets(&emu, "/v1/organizations", 2, 5).await,
        newest_first
    );

    let cases: [(&str, [&str; 5]); 8] = [
        ("-created_at", newest_first),
        (
            "%2Bcreated_at",
            ["org_c", "org_a", "org_b", "org_d", "org_e"],
        ),
        ("created_at", ["org_c", "org_a", "org_b", "org_d", "org_e"]),
        // Bytes: upper case before lower case; the two "Bravo" by id.
        ("name", ["org_d", "org_e", "org_c", "org_a", "org_b"]),
        ("-name", ["org_b", "org_a", "org_c", "org_e", "org_d"]),
        (
            "members_count",
            ["org_b", "org_d", "org_c", "org_e", "org_a"],
        ),
        (
            "-members_count",
            ["org_a", "org_e", "org_c", "org_d", "org_b"],
        ),
        (
            "%2Bmembers_count",
            ["org_b", "org_d", "org_c", "org_e", "org_a"],
        ),
    ];
    for (order_by, expected) in cases {
        let path = format!("/v1/organizations?order_by={order_by}");
        let seen = walk_offsets(&emu, &path, 2, 5).await;
        assert_eq!(seen, expected, "{order_by}");
    }

    // Memberships count live: emptying org_a moves it.
    for n in 0..3 {
        emu.delete_membership(&format!("orgmem_a{n}"));
    }
    let fewest = get(&emu, "/v1/organizations?order_by=members_count&limit=3").await;
    assert_eq!(page(&fewest, 5), ["org_a", "org_b", "org_d"]);

    let beyond = get(&emu, "/v1/organizations?offset=5").await;
    assert_eq!(page(&beyond, 5), Vec::<String>::new());
}

#[tokio::test]
async fn organization_lists_default_to_ten_and_cap_at_five_hundred() {
    let emu = ClerkEmulator::start().await;
    let t = now_ms();
    emu.insert_organizations(
        (0..12).map(|n| SampleOrganization::new(format!("org_{n:02}"), t + n).to_json()),
    );
    assert_eq!(emu.organization_count(), 12);
    let default = get(&emu, "/v1/organizations").await;
    assert_eq!(page(&default, 12).len(), 10);
    assert_eq!(ids(&default.body["data"])[0], "org_11");
    let all = get(&emu, "/v1/organizations?limit=500").await;
    assert_eq!(page(&all, 12).len(), 12);
}

#[tokio::test]
async fn membership_lists_page_by_offset_and_filter_by_organization_or_user() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    assert_eq!(emu.membership_count(), 6);
    // Created: c0 = 0; a0 = 1; a1 = 2; a2 = 3; e0 = 3; e1 = 4 (a2 and e0 tie, broken by id).
    let oldest_first = [
        "orgmem_c0",
        "orgmem_a0",
        "orgmem_a1",
        "orgmem_a2",
        "orgmem_e0",
        "orgmem_e1",
    ];
    let newest_first: Vec<&str> = oldest_first.iter().rev().copied().collect();

    let default = get(&emu, "/v1/organization_memberships").await;
    assert_eq!(page(&default, 6), newest_first);
    for order_by in ["-created_at", "created_at", "%2Bcreated_at"] {
        let expected: Vec<&str> = if order_by.starts_with('-') {
            newest_first.clone()
        } else {
            oldest_first.to_vec()
        };
        let path = format!("/v1/organization_memberships?order_by={order_by}");
        assert_eq!(
            walk_offsets(&emu, &path, 4, 6).await,
            expected,
            "{order_by}"
        );
        assert_eq!(
            walk_offsets(&emu, &path, 1, 6).await,
            expected,
            "{order_by}"
        );
    }

    let of_a = walk_offsets(&emu, "/v1/organizations/org_a/memberships", 2, 3).await;
    assert_eq!(of_a, ["orgmem_a2", "orgmem_a1", "orgmem_a0"]);
    let of_a_ascending = walk_offsets(
        &emu,
        "/v1/organizations/org_a/memberships?order_by=created_at",
        2,
        3,
    )
    .await;
    assert_eq!(of_a_ascending, ["orgmem_a0", "orgmem_a1", "orgmem_a2"]);
    let of_b = get(&emu, "/v1/organizations/org_b/memberships").await;
    assert_eq!(page(&of_b, 0), Vec::<String>::new());

    // user_0 is in org_a, org_c and org_e; user_2 only in org_a.
    let user_0 = walk_offsets(&emu, "/v1/users/user_0/organization_memberships", 2, 3).await;
    assert_eq!(user_0, ["orgmem_e0", "orgmem_a0", "orgmem_c0"]);
    let user_2 = get(&emu, "/v1/users/user_2/organization_memberships").await;
    assert_eq!(page(&user_2, 1), ["orgmem_a2"]);
    let membership = &user_2.body["data"][0];
    assert_eq!(membership["object"], "organization_membership");
    assert_eq!(membership["organization"]["id"], "org_a");
    assert_eq!(membership["public_user_data"]["user_id"], "user_2");
}

#[tokio::test]
async fn memberships_embed_their_organization_as_it_is_now() {
    let emu = ClerkEmulator::start().await;
    let orgs = five_organizations(&emu);
    let renamed = SampleOrganization {
        name: "Delta Renamed".into(),
        slug: "delta-renamed".into(),
        updated_at: orgs[0].updated_at + 1,
        ..orgs[0].clone()
    };
    emu.insert_organization(renamed.to_json());
    assert_eq!(
        emu.membership_count(),
        6,
        "replacing an organization keeps its memberships"
    );
    let answer = get(&emu, "/v1/organizations/org_a/memberships?limit=1").await;
    let embedded = &answer.body["data"][0]["organization"];
    assert_eq!(embedded["name"], "Delta Renamed");
    assert_eq!(embedded["slug"], "delta-renamed");
    assert_eq!(embedded["members_count"], 3);
    assert_eq!(
        get(&emu, "/v1/organizations/delta-renamed").await.status,
        200
    );
    assert_eq!(
        get(&emu, "/v1/organizations/acme-a").await.status,
        404,
        "the old slug is free"
    );

    // Replacing a membership (same id) changes its role, not the count.
    let promoted = SampleMembership::new("orgmem_a1", renamed, "user_1", orgs[0].created_at + 1)
        .with_role("org:admin");
    emu.insert_membership(promoted.to_json());
    assert_eq!(emu.membership("orgmem_a1").unwrap()["role"], "org:admin");
    assert_eq!(emu.organization("org_a").unwrap()["members_count"], 3);
}

#[tokio::test]
async fn deleting_an_organization_or_a_user_deletes_their_memberships() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    emu.insert_user(sample("user_0", now_ms()));

    emu.delete_organization("org_a");
    assert_eq!((emu.organization_count(), emu.membership_count()), (4, 3));
    let all = get(&emu, "/v1/organization_memberships").await;
    assert_eq!(page(&all, 3), ["orgmem_e1", "orgmem_e0", "orgmem_c0"]);
    assert_eq!(
        get(&emu, "/v1/organizations/org_a/memberships")
            .await
            .status,
        404
    );
    let user_1 = get(&emu, "/v1/users/user_1/organization_memberships").await;
    assert_eq!(page(&user_1, 1), ["orgmem_e1"]);

    let auth = format!("Bearer {}", emu.secret_key());
    let deleted = call_with(&emu, Method::DELETE, "/v1/users/user_0", Some(&auth), None).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(emu.membership_count(), 1);
    let user_0 = get(&emu, "/v1/users/user_0/organization_memberships").await;
    assert_eq!(page(&user_0, 0), Vec::<String>::new());
    let org_e = get(&emu, "/v1/organizations/org_e?include_members_count=true").await;
    assert_eq!(org_e.body["members_count"], 1);

    // The test's own deletion of a user (not among the emulator's users) does the same.
    emu.delete_user("user_1");
    assert_eq!(emu.membership_count(), 0);
    assert_eq!(emu.membership("orgmem_e1"), None);
}

#[tokio::test]
async fn organization_lists_reject_what_the_user_list_rejects() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    let lists = [
        "/v1/organizations",
        "/v1/organization_memberships",
        "/v1/organizations/org_a/memberships",
        "/v1/users/user_0/organization_memberships",
    ];
    for list in lists {
        let cases = [
            ("limit=0", "form_param_value_invalid"),
            ("limit=501", "form_param_value_invalid"),
            ("limit=ten", "form_param_format_invalid"),
            ("offset=-1", "form_param_format_invalid"),
            ("order_by=sideways", "form_param_value_invalid"),
            ("order_by=updated_at", "form_param_value_invalid"),
            ("query=acme", "form_param_unknown"),
            ("user_id=user_0", "form_param_unknown"),
        ];
        for (query, code) in cases {
            let path = format!("{list}?{query}");
            let answer = get(&emu, &path).await;
            assert_eq!(answer.status, 422, "{path}: {}", answer.body);
            assert_eq!(error_code(&answer), code, "{path}");
        }
        let fine = get(
            &emu,
            &format!("{list}?limit=500&offset=0&order_by=-created_at"),
        )
        .await;
        assert_eq!(fine.status, 200, "{list}");
    }
    for path in [
        "/v1/organizations?organization_id=org_a",
        "/v1/organization_memberships?order_by=first_name",
        "/v1/organizations/org_a/memberships?order_by=members_count",
        "/v1/organizations/org_a/memberships?include_members_count=true",
        "/v1/organizations?include_members_count=yes",
        "/v1/organizations/org_a?limit=1",
    ] {
        let answer = get(&emu, path).await;
        assert_eq!(answer.status, 422, "{path}: {}", answer.body);
        let code = error_code(&answer);
        assert!(code.starts_with("form_param_"), "{path}: {code}");
        assert!(
            answer.body["errors"][0]["meta"]["param_name"].is_string(),
            "{path}"
        );
    }

    let auth = format!("Bearer {}", emu.secret_key());
    for (method, path) in [
        (Method::POST, "/v1/organizations"),
        (Method::PATCH, "/v1/organizations/org_a"),
        (Method::DELETE, "/v1/organizations/org_a"),
        (Method::POST, "/v1/organizations/org_a/memberships"),
        (Method::POST, "/v1/organization_memberships"),
        (Method::DELETE, "/v1/users/user_0/organization_memberships"),
    ] {
        let answer = call_with(&emu, method.clone(), path, Some(&auth), Some("{}")).await;
        assert_eq!(answer.status, 405, "{method} {path}");
    }
    assert_eq!(emu.organization_count(), 5, "nothing was written");
}

#[tokio::test]
async fn faults_apply_to_organization_routes_too() {
    let emu = ClerkEmulator::start().await;
    five_organizations(&emu);
    emu.fail_next(1, 500);
    emu.rate_limit_next(1, 2);
    let failed = get(&emu, "/v1/organizations").await;
    assert_eq!(failed.status, 500);
    assert_eq!(error_code(&failed), "internal_clerk_error");
    let limited = get(&emu, "/v1/organization_memberships").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "2");
    assert_eq!(get(&emu, "/v1/organization_memberships").await.status, 200);
    assert_eq!(emu.request_count("GET", "/v1/organization"), 3);
}

#[tokio::test]
async fn inconsistent_inserts_panic_and_change_nothing() {
    let emu = ClerkEmulator::start().await;
    let orgs = five_organizations(&emu);
    let before = (emu.organization_count(), emu.membership_count());
    let panics = |insert: &dyn Fn()| catch_unwind(AssertUnwindSafe(insert)).is_err();

    let same_slug = SampleOrganization {
        slug: orgs[1].slug.clone(),
        ..SampleOrganization::new("org_z", now_ms())
    };
    assert!(
        panics(&|| emu.insert_organization(same_slug.to_json())),
        "a taken slug"
    );
    let orphan =
        SampleMembership::new("orgmem_z", SampleOrganization::new("org_z", 0), "user_0", 0);
    assert!(
        panics(&|| emu.insert_membership(orphan.to_json())),
        "an unknown organization"
    );
    let twice = SampleMembership::new("orgmem_z", orgs[0].clone(), "user_0", 0);
    assert!(
        panics(&|| emu.insert_membership(twice.to_json())),
        "a second membership"
    );
    assert!(
        panics(&|| emu.insert_organization(json!({"name": "no id"}))),
        "no id"
    );

    assert_eq!((emu.organization_count(), emu.membership_count()), before);
    assert_eq!(emu.organization("org_z"), None);
    // The emulator still answers after a panic under its lock.
    assert_eq!(page(&get(&emu, "/v1/organizations").await, 5).len(), 5);
    // Re-inserting an organization with its own slug is no clash.
    emu.insert_organization(orgs[1].to_json());
    assert_eq!(emu.organization_count(), 5);
}
