//! The current-user API: session verification by Clerk's rules, the fallback fetch, and profile
//! updates written through to Clerk, against the Clerk emulator and a real database.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clerk_sync::clerk::api::{RetryPolicy, SecretKey};
use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
use clerk_sync::config::ClerkSettings;
use clerk_sync::sync::DeleteMode;
use serde_json::{Value, json};

use crate::clerk_emulator::{ClerkEmulator, SigningKey, TokenOptions};
use crate::support::{Backend, TestApp, on_both_backends};

const ORIGIN: &str = "http://localhost:3000";

/// Retries short enough for tests, same logic as in production.
fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    }
}

/// Settings pointing at the emulator: secret key (JWKS + fallback), publishable key (issuer
/// check) and authorized parties.
fn clerk_settings(clerk: &ClerkEmulator) -> ClerkSettings {
    ClerkSettings {
        retry: fast_retries(),
        jwks_min_refetch: Duration::from_millis(400),
        ..ClerkSettings::from_values(
            Some(&clerk.base_url()),
            Some(&clerk.secret_key()),
            None,
            Some(&clerk.publishable_key()),
            Some(ORIGIN),
            false,
        )
        .unwrap()
    }
}

async fn spawn(backend: Backend, clerk: &ClerkEmulator) -> TestApp {
    let settings = clerk_settings(clerk);
    TestApp::spawn_with(backend, move |c| c.clerk = settings).await
}

fn clerk_user(id: &str, updated_at: i64) -> SampleUser {
    let mut user = SampleUser::new(id, 1_700_000_000_000);
    user.updated_at = updated_at;
    user
}

struct Call {
    status: u16,
    body: Value,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    token: Option<&str>,
    body: Option<Value>,
) -> Call {
    call_path(app, method, "/api/users/me", token, body).await
}

async fn call_path(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Call {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (www_authenticate, retry_after) = (header("www-authenticate"), header("retry-after"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    Call {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        www_authenticate,
        retry_after,
    }
}

async fn get_me(app: &TestApp, token: &str) -> Call {
    call(app, reqwest::Method::GET, Some(token), None).await
}

async fn patch_me(app: &TestApp, token: &str, body: Value) -> Call {
    call(app, reqwest::Method::PATCH, Some(token), Some(body)).await
}

const MY_ORGANIZATIONS: &str = "/api/users/me/organizations";

async fn get_my_organizations(app: &TestApp, token: Option<&str>) -> Call {
    call_path(app, reqwest::Method::GET, MY_ORGANIZATIONS, token, None).await
}

/// An organization created at `created_at` (ms), with a slug of its own.
fn organization(id: &str, created_at: i64) -> SampleOrganization {
    let mut organization = SampleOrganization::new(id, created_at);
    organization.slug = format!("{}-slug", id.replace('_', "-"));
    organization
}

/// `user_id` joins `organization` as `role` at `created_at` (ms); the answer must be 2xx.
async fn join(
    app: &TestApp,
    membership_id: &str,
    organization: &SampleOrganization,
    user_id: &str,
    role: &str,
    created_at: i64,
) -> SampleMembership {
    let membership =
        SampleMembership::new(membership_id, organization.clone(), user_id, created_at)
            .with_role(role);
    let answer = app.deliver(&sample::membership_created(&membership)).await;
    assert_eq!(answer.outcome(), "created", "{answer:?}");
    membership
}

fn token(clerk: &ClerkEmulator, user_id: &str) -> String {
    clerk.mint_session_token(user_id, &TokenOptions::default())
}

fn user_requests(clerk: &ClerkEmulator, user_id: &str) -> usize {
    clerk.request_count("GET", &format!("/v1/users/{user_id}"))
}

on_both_backends! {
    async fn me_returns_the_row_as_a_prisma_client_would(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        let mut user = clerk_user("user_me", 1_716_883_200_123);
        user.last_name = Some("Łukasiewicz".into());
        app.deliver(&sample::user_created(&user)).await;

        let answer = get_me(&app, &token(&clerk, "user_me")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let body = answer.body;
        assert_eq!(body["id"], "user_me");
        assert_eq!(body["email"], user.email.clone().unwrap());
        assert_eq!(body["name"], "Ada Łukasiewicz");
        assert_eq!(body["clerkUpdatedAt"], "2024-05-28T08:00:00.123Z");
        assert_eq!(body["clerkCreatedAt"], "2023-11-14T22:13:20.000Z");
        assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(body["deletedAt"], Value::Null);
        assert_eq!(user_requests(&clerk, "user_me"), 0, "a synced user needs no fetch");
    }

    async fn fallback_fetch_creates_the_row_when_the_webhook_is_late(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        let mut user = clerk_user("user_late", 1_716_883_200_000);
        user.first_name = Some("Fetched".into());
        clerk.insert_user(user.to_clerk_json());

        let answer = get_me(&app, &token(&clerk, "user_late")).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["firstName"], "Fetched");
        assert!(app.user("user_late").await.is_some());

        // The webhook that was late carries the same snapshot: already applied.
        assert_eq!(app.deliver(&sample::user_created(&user)).await.outcome(), "unchanged");
        let mut older = user.clone();
        older.updated_at -= 1;
        assert_eq!(app.deliver(&sample::user_created(&older)).await.outcome(), "stale");
        assert_eq!(user_requests(&clerk, "user_late"), 1);
    }

    async fn concurrent_requests_for_a_missing_user_cause_one_fetch(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        clerk.insert_user(clerk_user("user_popular", 1_716_883_200_000).to_clerk_json());
        clerk.set_latency(Duration::from_millis(300));
        let token = token(&clerk, "user_popular");
        let calls = (0..12).map(|_| get_me(&app, &token));
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
        assert_eq!(user_requests(&clerk, "user_popular"), 1);
    }

    async fn a_fetch_and_a_webhook_racing_converge_on_the_newest_snapshot(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        // Clerk answers the fetch with an older snapshot while a newer webhook lands meanwhile.
        let mut old = clerk_user("user_race", 1_716_883_200_000);
        old.first_name = Some("Old".into());
        clerk.insert_user(old.to_clerk_json());
        let mut new = old.clone();
        new.updated_at += 5_000;
        new.first_name = Some("New".into());
        let token = token(&clerk, "user_race");
        // The fetch is held at Clerk until the webhook has landed: the race happens every time.
        let hold = clerk.hold_answers("/v1/users/");
        let fetch = get_me(&app, &token);
        let webhook = async {
            hold.request_arrived().await;
            let delivered = app.deliver(&sample::user_updated(&new)).await;
            hold.release();
            delivered
        };
        let (fetched, delivered) = tokio::join!(fetch, webhook);
        assert_eq!(user_requests(&clerk, "user_race"), 1, "the fetch did go to Clerk");
        assert_eq!(delivered.status, 200);
        assert_eq!(fetched.status, 200);
        assert_eq!(app.user("user_race").await.unwrap().first_name.as_deref(), Some("New"));
        assert_eq!(get_me(&app, &token).await.body["firstName"], "New");
    }

    async fn a_deleted_user_is_never_fetched_back(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        clerk.insert_user(clerk_user("user_gone", 1_716_883_200_000).to_clerk_json());
        app.deliver(&sample::user_deleted("user_gone", 1_716_883_300_000)).await;
        let answer = get_me(&app, &token(&clerk, "user_gone")).await;
        assert_eq!(answer.status, 404, "{:?}", answer.body);
        assert_eq!(user_requests(&clerk, "user_gone"), 0);
        assert!(app.user("user_gone").await.is_none());
        let answer = patch_me(&app, &token(&clerk, "user_gone"), json!({"firstName": "Back"})).await;
        assert_eq!(answer.status, 404);
        assert_eq!(clerk.request_count("PATCH", "/v1/users/"), 0);
    }

    async fn a_soft_deleted_user_is_404(backend) {
        let clerk = ClerkEmulator::start().await;
        let settings = clerk_settings(&clerk);
        let app = TestApp::spawn_with(backend, move |c| { c.clerk = settings; c.delete_mode = DeleteMode::Soft; }).await;
        let user = clerk_user("user_soft", 1_716_883_200_000);
        app.deliver(&sample::user_created(&user)).await;
        app.deliver(&sample::user_deleted("user_soft", 1_716_883_300_000)).await;
        assert_eq!(get_me(&app, &token(&clerk, "user_soft")).await.status, 404);
    }

    async fn patch_writes_through_to_clerk_and_a_late_webhook_does_not_undo_it(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        let user = clerk_user("user_edit", 1_716_883_200_000);
        clerk.insert_user(user.to_clerk_json());
        app.deliver(&sample::user_created(&user)).await;

        let answer = patch_me(&app, &token(&clerk, "user_edit"), json!({"firstName": "  Grace ", "lastName": "Hopper"})).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["firstName"], "Grace");
        assert_eq!(answer.body["name"], "Grace Hopper");
        assert_eq!(clerk.user("user_edit").unwrap()["first_name"], "Grace", "Clerk holds the change");
        let clerk_updated_at = clerk.user("user_edit").unwrap()["updated_at"].as_i64().unwrap();
        assert!(clerk_updated_at > user.updated_at);

        // The webhook for the pre-edit snapshot arrives late: it is older, the edit stays.
        assert_eq!(app.deliver(&sample::user_updated(&user)).await.outcome(), "stale");
        assert_eq!(app.user("user_edit").await.unwrap().first_name.as_deref(), Some("Grace"));
    }

    async fn patch_validates_input_and_names_the_field(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        clerk.insert_user(clerk_user("user_v", 1_716_883_200_000).to_clerk_json());
        let token = token(&clerk, "user_v");
        for (body, field) in [
            (json!({"firstName": 42}), "firstName"),
            (json!({"lastName": "x".repeat(300)}), "lastName"),
            (json!({"email": "new@example.com"}), "email"),
            (json!({}), "body"),
            (json!(["firstName"]), "body"),
        ] {
            let answer = patch_me(&app, &token, body.clone()).await;
            assert_eq!(answer.status, 422, "{body}: {:?}", answer.body);
            assert_eq!(answer.body["field"], field, "{body}");
        }
        assert_eq!(clerk.request_count("PATCH", "/v1/users/"), 0);
    }

    async fn my_organizations_are_the_memberships_newest_first_with_their_organization(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        const T0: i64 = 1_716_883_200_000;
        for id in ["user_orgs", "user_other"] {
            app.deliver(&sample::user_created(&clerk_user(id, T0))).await;
        }
        let acme = organization("org_acme", T0);
        let globex = organization("org_globex", T0 + 500);
        assert_eq!(app.deliver(&sample::organization_created(&acme)).await.outcome(), "created");
        // Joined acme first, globex (an organization only its membership event brought) later;
        // the events arrive the other way round, and the ids sort the other way too: the list
        // goes by when Clerk says each began.
        join(&app, "orgmem_1_globex", &globex, "user_orgs", "org:member", T0 + 2_123).await;
        join(&app, "orgmem_2_acme", &acme, "user_orgs", "org:admin", T0 + 1_000).await;
        // Someone else's membership is not listed.
        join(&app, "orgmem_other", &acme, "user_other", "org:member", T0 + 3_000).await;

        let answer = get_my_organizations(&app, Some(&token(&clerk, "user_orgs"))).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let listed = answer.body.as_array().expect("an array");
        let ids: Vec<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["orgmem_1_globex", "orgmem_2_acme"], "newest first");

        // The membership row with its organization row included, as Prisma returns them.
        let newest = &listed[0];
        assert_eq!(newest["organizationId"], "org_globex");
        assert_eq!(newest["userId"], "user_orgs");
        assert_eq!(newest["role"], "org:member");
        assert_eq!(newest["clerkCreatedAt"], "2024-05-28T08:00:02.123Z");
        assert_eq!(newest["clerkUpdatedAt"], "2024-05-28T08:00:02.123Z");
        for field in ["createdAt", "updatedAt"] {
            let at = newest[field].as_str().unwrap();
            assert!(at.ends_with('Z') && at.len() == 24, "{field}: {at}");
        }
        let mut keys: Vec<&str> = newest.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, [
            "clerkCreatedAt", "clerkUpdatedAt", "createdAt", "id", "organization",
            "organizationId", "role", "updatedAt", "userId",
        ]);
        let included = &newest["organization"];
        assert_eq!(included["id"], "org_globex");
        assert_eq!(included["name"], globex.name.as_str());
        assert_eq!(included["slug"], "org-globex-slug");
        assert_eq!(included["imageUrl"], globex.image_url.as_str());
        assert_eq!(included["createdBy"], globex.created_by.as_str());
        assert_eq!(included["clerkCreatedAt"], "2024-05-28T08:00:00.500Z");
        assert_eq!(included["deletedAt"], Value::Null);
        let oldest = &listed[1];
        assert_eq!((&oldest["role"], &oldest["organization"]["slug"]), (&json!("org:admin"), &json!("org-acme-slug")));

        // A membership that ends is gone from the list.
        let ended = sample::membership_deleted(
            &SampleMembership::new("orgmem_1_globex", globex.clone(), "user_orgs", T0 + 2_123),
            T0 + 10_000,
        );
        assert_eq!(app.deliver(&ended).await.outcome(), "deleted");
        let answer = get_my_organizations(&app, Some(&token(&clerk, "user_orgs"))).await;
        let ids: Vec<&str> = answer.body.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["orgmem_2_acme"]);
    }

    async fn my_organizations_are_empty_without_memberships_and_follow_me_for_other_users(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        // A synced user without memberships.
        app.deliver(&sample::user_created(&clerk_user("user_alone", 1_716_883_200_000))).await;
        let answer = get_my_organizations(&app, Some(&token(&clerk, "user_alone"))).await;
        assert_eq!((answer.status, &answer.body), (200, &json!([])), "{:?}", answer.body);

        // A user whose webhook has not arrived: fetched from Clerk like /api/users/me, and []
        // (memberships are never fetched; their own webhooks bring them).
        clerk.insert_user(clerk_user("user_new", 1_716_883_200_000).to_clerk_json());
        let answer = get_my_organizations(&app, Some(&token(&clerk, "user_new"))).await;
        assert_eq!((answer.status, &answer.body), (200, &json!([])), "{:?}", answer.body);
        assert!(app.user("user_new").await.is_some(), "the user was fetched and written");
        assert_eq!(user_requests(&clerk, "user_new"), 1);
        assert_eq!(get_me(&app, &token(&clerk, "user_new")).await.status, 200);
        assert_eq!(user_requests(&clerk, "user_new"), 1, "one fetch for both endpoints");

        // The same errors as /api/users/me: a deleted user, a user Clerk does not know.
        clerk.insert_user(clerk_user("user_gone", 1_716_883_200_000).to_clerk_json());
        app.deliver(&sample::user_deleted("user_gone", 1_716_883_300_000)).await;
        let answer = get_my_organizations(&app, Some(&token(&clerk, "user_gone"))).await;
        assert_eq!(answer.status, 404, "{:?}", answer.body);
        assert_eq!(user_requests(&clerk, "user_gone"), 0);
        let answer = get_my_organizations(&app, Some(&token(&clerk, "user_unknown"))).await;
        assert_eq!(answer.status, 404, "{:?}", answer.body);

        // No session, or an invalid one: 401 as for /api/users/me, nothing leaked.
        let anonymous = get_my_organizations(&app, None).await;
        assert_eq!((anonymous.status, &anonymous.body), (401, &json!({"error": "sign-in required"})));
        assert_eq!(anonymous.www_authenticate.as_deref(), Some("Bearer"));
        let forged = get_my_organizations(&app, Some("not-a-jwt")).await;
        assert_eq!((forged.status, &forged.body), (401, &json!({"error": "invalid session"})));
        assert_eq!(forged.www_authenticate.as_deref(), Some(r#"Bearer error="invalid_token""#));
    }

    async fn patch_when_clerk_is_down_is_503_and_leaves_the_table_untouched(backend) {
        let clerk = ClerkEmulator::start().await;
        let app = spawn(backend, &clerk).await;
        let user = clerk_user("user_down", 1_716_883_200_000);
        clerk.insert_user(user.to_clerk_json());
        app.deliver(&sample::user_created(&user)).await;
        let before = app.user("user_down").await.unwrap();
        let token = token(&clerk, "user_down");
        get_me(&app, &token).await; // warm the key cache so only the PATCH meets the outage
        clerk.fail_next(10, 503);
        let answer = patch_me(&app, &token, json!({"firstName": "Lost"})).await;
        assert_eq!(answer.status, 503, "{:?}", answer.body);
        assert!(answer.retry_after.is_some());
        assert_eq!(app.user("user_down").await.unwrap(), before);
    }
}

#[tokio::test]
async fn every_malformed_or_foreign_token_is_401_with_www_authenticate_and_no_detail() {
    let clerk = ClerkEmulator::start().await;
    let app = spawn(Backend::Sqlite, &clerk).await;
    clerk.insert_user(clerk_user("user_t", 1_716_883_200_000).to_clerk_json());
    let good = token(&clerk, "user_t");
    assert_eq!(get_me(&app, &good).await.status, 200);

    let payload = good.split('.').nth(1).unwrap().to_owned();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&payload).unwrap()).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let alg_none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    // HS256 keyed with the instance's public key: the classic algorithm-confusion attack.
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("whatever".into());
        let key =
            jsonwebtoken::EncodingKey::from_secret(clerk.instance_public_key_pem().as_bytes());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let tampered = {
        let mut c = claims.clone();
        c["sub"] = json!("user_someone_else");
        let parts: Vec<&str> = good.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&c), parts[2])
    };
    let with = |options: TokenOptions| clerk.mint_session_token("user_t", &options);
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not-a-jwt".into()),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("tampered claims", tampered),
        (
            "another Clerk instance",
            with(TokenOptions {
                key: SigningKey::OtherInstance,
                ..TokenOptions::default()
            }),
        ),
        (
            "unknown kid",
            with(TokenOptions {
                kid: Some("ins_unknown".into()),
                ..TokenOptions::default()
            }),
        ),
        (
            "expired",
            with(TokenOptions {
                expires_in: -30,
                ..TokenOptions::default()
            }),
        ),
        (
            "not yet valid",
            with(TokenOptions {
                not_before_offset: Some(120),
                ..TokenOptions::default()
            }),
        ),
        (
            "issued in the future",
            with(TokenOptions {
                issued_at_offset: 3600,
                expires_in: 7200,
                ..TokenOptions::default()
            }),
        ),
        (
            "no subject",
            with(TokenOptions {
                omit_subject: true,
                ..TokenOptions::default()
            }),
        ),
        (
            "foreign origin",
            with(TokenOptions {
                azp: Some("https://evil.example".into()),
                ..TokenOptions::default()
            }),
        ),
        (
            "no azp while parties are configured",
            with(TokenOptions {
                azp: None,
                ..TokenOptions::default()
            }),
        ),
        (
            "wrong issuer",
            with(TokenOptions {
                issuer: Some("https://other.clerk.accounts.dev".into()),
                ..TokenOptions::default()
            }),
        ),
        (
            "machine-to-machine token",
            with(TokenOptions {
                category: Some("cl_B7d4PD333AAA".into()),
                ..TokenOptions::default()
            }),
        ),
        (
            "JWT template token",
            with(TokenOptions {
                category: Some("cl_B7d4PD222AAA".into()),
                ..TokenOptions::default()
            }),
        ),
        (
            "pending session",
            with(TokenOptions {
                status: Some("pending".into()),
                ..TokenOptions::default()
            }),
        ),
    ];
    for (case, token) in cases {
        let answer = get_me(&app, &token).await;
        assert_eq!(answer.status, 401, "{case}: {:?}", answer.body);
        assert_eq!(
            answer.www_authenticate.as_deref(),
            Some(r#"Bearer error="invalid_token""#),
            "{case}"
        );
        assert_eq!(
            answer.body,
            json!({"error": "invalid session"}),
            "{case}: no detail for the client"
        );
    }
    // Within the skew allowance: 3 s expired still passes, as Clerk's SDK allows 5 s.
    let skewed = with(TokenOptions {
        expires_in: -3,
        ..TokenOptions::default()
    });
    assert_eq!(get_me(&app, &skewed).await.status, 200);

    let anonymous = call(&app, reqwest::Method::GET, None, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.www_authenticate.as_deref(), Some("Bearer"));
}

#[tokio::test]
async fn the_session_cookie_works_like_the_bearer_header() {
    let clerk = ClerkEmulator::start().await;
    let app = spawn(Backend::Sqlite, &clerk).await;
    clerk.insert_user(clerk_user("user_cookie", 1_716_883_200_000).to_clerk_json());
    let response = app
        .client
        .get(format!("{}/api/users/me", app.address))
        .header(
            "cookie",
            format!(
                "theme=dark; __session={}; other=1",
                token(&clerk, "user_cookie")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn pending_sessions_pass_when_allowed() {
    let clerk = ClerkEmulator::start().await;
    let mut settings = clerk_settings(&clerk);
    settings.allow_pending_sessions = true;
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| c.clerk = settings).await;
    clerk.insert_user(clerk_user("user_p", 1_716_883_200_000).to_clerk_json());
    let token = clerk.mint_session_token(
        "user_p",
        &TokenOptions {
            status: Some("pending".into()),
            ..TokenOptions::default()
        },
    );
    assert_eq!(get_me(&app, &token).await.status, 200);
}

#[tokio::test]
async fn clerk_jwt_key_verifies_without_calling_clerk_and_without_a_secret_key_the_fallback_is_off()
{
    let clerk = ClerkEmulator::start().await;
    let settings = ClerkSettings::from_values(
        None,
        None,
        Some(&clerk.instance_public_key_pem().replace('\n', "\\n")),
        None,
        None,
        false,
    )
    .unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| c.clerk = settings).await;
    app.deliver(&sample::user_created(&clerk_user(
        "user_synced",
        1_716_883_200_000,
    )))
    .await;
    assert_eq!(
        get_me(&app, &token(&clerk, "user_synced")).await.status,
        200
    );

    let answer = get_me(&app, &token(&clerk, "user_not_synced")).await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("CLERK_SECRET_KEY"),
        "{:?}",
        answer.body
    );
    assert!(
        clerk.requests().is_empty(),
        "no call to Clerk at all: {:?}",
        clerk.requests().len()
    );

    let answer = patch_me(
        &app,
        &token(&clerk, "user_synced"),
        json!({"firstName": "X"}),
    )
    .await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("CLERK_SECRET_KEY")
    );
}

#[tokio::test]
async fn signing_keys_are_cached_refetched_on_rotation_and_junk_kids_cannot_hammer_clerk() {
    let clerk = ClerkEmulator::start().await;
    let app = spawn(Backend::Sqlite, &clerk).await;
    for id in ["user_k1", "user_k2"] {
        clerk.insert_user(clerk_user(id, 1_716_883_200_000).to_clerk_json());
    }
    assert_eq!(get_me(&app, &token(&clerk, "user_k1")).await.status, 200);
    assert_eq!(get_me(&app, &token(&clerk, "user_k2")).await.status, 200);
    assert_eq!(clerk.request_count("GET", "/v1/jwks"), 1, "keys are cached");

    // A flood of unknown kids: at most one fetch per refetch interval (400 ms in this test).
    let junk = |i: usize| {
        clerk.mint_session_token(
            "user_k1",
            &TokenOptions {
                kid: Some(format!("ins_junk{i}")),
                ..TokenOptions::default()
            },
        )
    };
    let started = std::time::Instant::now();
    for i in 0..40 {
        assert_eq!(get_me(&app, &junk(i)).await.status, 401);
    }
    let intervals = (started.elapsed().as_millis() / 400) as usize + 1;
    assert!(
        clerk.request_count("GET", "/v1/jwks") <= 1 + intervals,
        "{} fetches",
        clerk.request_count("GET", "/v1/jwks")
    );

    // Clerk rotates its key: once the interval has passed, the new kid triggers one refetch.
    clerk.rotate_signing_key();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let before = clerk.request_count("GET", "/v1/jwks");
    assert_eq!(get_me(&app, &token(&clerk, "user_k1")).await.status, 200);
    assert_eq!(clerk.request_count("GET", "/v1/jwks"), before + 1);
}

#[tokio::test]
async fn clerk_errors_are_retried_rate_limits_honoured_and_the_rest_explained() {
    let clerk = ClerkEmulator::start().await;
    let app = spawn(Backend::Sqlite, &clerk).await;
    for id in ["user_e1", "user_e2", "user_e3"] {
        clerk.insert_user(clerk_user(id, 1_716_883_200_000).to_clerk_json());
    }
    get_me(&app, &token(&clerk, "user_nobody")).await; // warms the key cache

    // Two 5xx, then success: the client retries (3 attempts in this test).
    clerk.fail_next(2, 502);
    assert_eq!(get_me(&app, &token(&clerk, "user_e1")).await.status, 200);

    // A short 429: waited out as Retry-After says.
    clerk.rate_limit_next(1, 1);
    let started = std::time::Instant::now();
    assert_eq!(get_me(&app, &token(&clerk, "user_e2")).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A long 429: passed on to the caller with Retry-After.
    clerk.rate_limit_next(1, 60);
    let answer = get_me(&app, &token(&clerk, "user_e3")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.retry_after.as_deref(), Some("60"));

    // Clerk down beyond the retries: 503, row not created.
    clerk.fail_next(5, 500);
    let answer = get_me(&app, &token(&clerk, "user_e3")).await;
    assert_eq!(answer.status, 503);
    assert!(app.user("user_e3").await.is_none());

    // A user Clerk does not know.
    assert_eq!(
        get_me(&app, &token(&clerk, "user_unknown")).await.status,
        404
    );
}

#[tokio::test]
async fn a_wrong_secret_key_turns_into_a_readable_error() {
    let clerk = ClerkEmulator::start().await;
    let mut settings = clerk_settings(&clerk);
    settings.secret_key = Some(SecretKey::parse("sk_test_wrong").unwrap());
    settings.jwt_key = Some(clerk.instance_public_key_pem());
    let api = clerk_sync::clerk::api::ClerkApi::new(
        &clerk.base_url(),
        SecretKey::parse("sk_test_wrong").unwrap(),
        fast_retries(),
    )
    .unwrap();
    let error = api.get_user("user_x").await.unwrap_err().to_string();
    assert!(
        error.contains("401") && error.contains("authentication_invalid"),
        "{error}"
    );
    assert!(error.contains("trace id"), "{error}");
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_json_they_answer() {
    let clerk = ClerkEmulator::start().await;
    let app = spawn(Backend::Sqlite, &clerk).await;
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    let doc = doc.body;
    for (path, method) in [
        ("/api/webhooks/clerk", "post"),
        ("/api/users/me", "get"),
        ("/api/users/me", "patch"),
        ("/api/users/me/organizations", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        // And the route really exists (anything but 404/405 means it is mounted).
        let status = app
            .client
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{path}", app.address),
            )
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(status != 404 && status != 405, "{method} {path}: {status}");
    }
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        6,
        "every documented path is checked above"
    );

    // Every field an answer holds is documented and required, and nothing else is.
    let matches_schema = |answer: &Value, schema: &str| {
        let schema = &doc["components"]["schemas"][schema];
        let mut returned: Vec<&str> = answer
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut documented: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        returned.sort();
        documented.sort();
        required.sort();
        assert_eq!(returned, documented);
        assert_eq!(returned, required);
    };
    clerk.insert_user(clerk_user("user_doc", 1_716_883_200_000).to_clerk_json());
    let me = get_me(&app, &token(&clerk, "user_doc")).await.body;
    matches_schema(&me, "User");

    let organization = SampleOrganization::new("org_doc", 1_716_883_200_000);
    join(
        &app,
        "orgmem_doc",
        &organization,
        "user_doc",
        "org:admin",
        1_716_883_200_000,
    )
    .await;
    let path = &doc["paths"][MY_ORGANIZATIONS]["get"];
    assert_eq!(
        path["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"],
        "#/components/schemas/Membership"
    );
    assert_eq!(
        doc["components"]["schemas"]["Membership"]["properties"]["organization"]["$ref"],
        "#/components/schemas/Organization"
    );
    let memberships = get_my_organizations(&app, Some(&token(&clerk, "user_doc")))
        .await
        .body;
    let [membership] = memberships.as_array().unwrap().as_slice() else {
        panic!("one membership: {memberships}");
    };
    matches_schema(membership, "Membership");
    matches_schema(&membership["organization"], "Organization");
    // Documented like /api/users/me: the same security and error answers.
    let me_doc = &doc["paths"]["/api/users/me"]["get"];
    assert_eq!(path["security"], me_doc["security"]);
    for status in ["401", "404", "429", "503"] {
        assert_eq!(
            path["responses"][status], me_doc["responses"][status],
            "{status}"
        );
    }
    let outcomes: Vec<&str> =
        doc["components"]["schemas"]["WebhookOutcome"]["properties"]["outcome"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
    let ours: Vec<&str> = clerk_sync::sync::Outcome::ALL
        .iter()
        .map(|o| o.as_str())
        .collect();
    assert_eq!(outcomes, ours);
}

#[tokio::test]
async fn browsers_on_the_authorized_origins_may_call_the_api_and_others_may_not() {
    let clerk = ClerkEmulator::start().await;
    let app = spawn(Backend::Sqlite, &clerk).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/users/me", app.address),
            )
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight(ORIGIN).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        ORIGIN
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
