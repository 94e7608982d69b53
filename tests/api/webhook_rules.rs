//! One test per rule of the webhook sync, named after the rule, on both backends.

use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::sync::DeleteMode;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use serde_json::json;

use crate::support::{TestApp, at, on_both_backends};

const T0: i64 = 1_716_883_200_000;

fn user(id: &str, updated_at: i64) -> SampleUser {
    let mut u = SampleUser::new(id, T0);
    u.updated_at = updated_at;
    u
}

on_both_backends! {
    async fn rule_1_verify_before_anything_rejects_unsigned_and_tampered_deliveries(backend) {
        let app = TestApp::spawn(backend).await;
        let body = sample::user_created(&user("user_a", T0));
        let now = chrono::Utc::now().timestamp();
        let good = signed_headers(&app.secret, "msg_1", now, body.as_bytes()).unwrap();

        // No headers at all.
        let answer = app.post(&[], body.clone().into_bytes()).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        // Each header missing in turn.
        for missing in 0..3 {
            let headers: Vec<_> = good.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, h)| h.clone()).collect();
            assert_eq!(app.post(&headers, body.clone().into_bytes()).await.status, 400);
        }
        // A signature made with another secret.
        let (other, _) = SigningSecret::generate();
        let forged = signed_headers(&other, "msg_1", now, body.as_bytes()).unwrap();
        assert_eq!(app.post(&forged, body.clone().into_bytes()).await.status, 401);
        // The body re-serialized (same JSON, different bytes).
        let reserialized = serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&body).unwrap()).unwrap();
        assert_eq!(app.post(&good, reserialized.into_bytes()).await.status, 401);
        // Stale and future timestamps, correctly signed.
        for skew in [-301, 301] {
            let headers = signed_headers(&app.secret, "msg_1", now + skew, body.as_bytes()).unwrap();
            let answer = app.post(&headers, body.clone().into_bytes()).await;
            assert_eq!(answer.status, 401, "skew {skew}: {answer:?}");
        }
        // A truncated signature.
        let mut partial = good.clone();
        partial[2].1 = "v1,".into();
        assert_eq!(app.post(&partial, body.clone().into_bytes()).await.status, 401);

        assert!(app.users().await.is_empty(), "nothing may be written");
        assert!(app.inbox().await.is_empty(), "nothing may be written");

        // And the genuine delivery still goes through.
        assert_eq!(app.post(&good, body.into_bytes()).await.status, 200);
        assert!(app.user("user_a").await.is_some());
    }

    async fn rule_1_verify_before_anything_accepts_any_matching_signature_and_rotated_secrets(backend) {
        let (old, _) = SigningSecret::generate();
        let (new, _) = SigningSecret::generate();
        let app = TestApp::spawn_with(backend, |c| c.secrets = vec![old.clone(), new.clone()]).await;
        let now = chrono::Utc::now().timestamp();

        // Several signatures in one header (Svix rotating its side): any v1 match is enough.
        let body = sample::user_created(&user("user_a", T0));
        let good = new.sign("msg_a", now, body.as_bytes()).unwrap();
        let headers = vec![
            ("svix-id", "msg_a".to_string()),
            ("svix-timestamp", now.to_string()),
            ("svix-signature", format!("v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldQo= v2,abc {good}")),
        ];
        assert_eq!(app.post(&headers, body.into_bytes()).await.status, 200);

        // Our side rotating: the old secret still works, under the webhook-* names too.
        let body = sample::user_created(&user("user_b", T0));
        let sig = old.sign("msg_b", now, body.as_bytes()).unwrap();
        let headers = vec![
            ("webhook-id", "msg_b".to_string()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", sig),
        ];
        assert_eq!(app.post(&headers, body.into_bytes()).await.status, 200);
        assert_eq!(app.users().await.len(), 2);
    }

    async fn rule_1_verify_before_anything_refuses_oversized_bodies_with_413(backend) {
        let app = TestApp::spawn_with(backend, |c| c.max_body_bytes = 64 * 1024).await;
        let mut u = user("user_big", T0);
        u.first_name = Some("x".repeat(70 * 1024));
        let body = sample::user_created(&u);
        let answer = app.deliver(&body).await;
        assert_eq!(answer.status, 413, "{answer:?}");
        assert!(app.users().await.is_empty());
        assert!(app.inbox().await.is_empty());
    }

    async fn rule_2_redelivered_svix_id_is_answered_2xx_and_changes_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let first = user("user_a", T0 + 10);
        assert_eq!(app.deliver_as("msg_same", &sample::user_created(&first)).await.outcome(), "created");
        let row = app.user("user_a").await.unwrap();

        // Svix retries with the same id (and a fresh timestamp and signature).
        let answer = app.deliver_as("msg_same", &sample::user_created(&first)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "duplicate"));
        // Even a different body under a processed id changes nothing.
        let mut newer = first.clone();
        newer.updated_at += 1000;
        newer.first_name = Some("Changed".into());
        let answer = app.deliver_as("msg_same", &sample::user_updated(&newer)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "duplicate"));

        assert_eq!(app.user("user_a").await.unwrap(), row);
        assert_eq!(app.inbox().await.len(), 1);
    }

    async fn rule_3_newest_snapshot_wins_and_older_ones_change_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let mut newer = user("user_a", T0 + 2000);
        newer.first_name = Some("Newer".into());
        let mut older = user("user_a", T0 + 1000);
        older.first_name = Some("Older".into());

        // user.updated for an unknown user creates it.
        assert_eq!(app.deliver(&sample::user_updated(&newer)).await.outcome(), "created");
        // The older snapshot arrives late.
        let answer = app.deliver(&sample::user_created(&older)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "stale"));
        let row = app.user("user_a").await.unwrap();
        assert_eq!(row.first_name.as_deref(), Some("Newer"));
        assert_eq!(row.clerk_updated_at, Some(at(T0 + 2000)));

        // The same snapshot again under another svix-id (a replay from Clerk's dashboard) is not
        // older: it is already applied, and nothing is written.
        let before = app.user("user_a").await.unwrap();
        assert_eq!(app.deliver(&sample::user_updated(&newer)).await.outcome(), "unchanged");
        assert_eq!(app.user("user_a").await.unwrap(), before);
    }

    async fn rule_4_deletes_are_final_in_hard_mode(backend) {
        let app = TestApp::spawn(backend).await;
        let u = user("user_a", T0 + 1000);
        app.deliver(&sample::user_created(&u)).await;
        let answer = app.deliver(&sample::user_deleted("user_a", T0 + 5000)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "deleted"));
        assert!(app.user("user_a").await.is_none());
        assert!(app.tombstoned("user_a").await);

        // Late events for the deleted user never bring it back, even "newer" ones.
        let mut late = u.clone();
        late.updated_at = T0 + 9000;
        assert_eq!(app.deliver(&sample::user_updated(&late)).await.outcome(), "tombstoned");
        assert_eq!(app.deliver(&sample::user_created(&u)).await.outcome(), "tombstoned");
        assert!(app.user("user_a").await.is_none());

        // A delete for a user never seen: 2xx, no row, and a late create stays out too.
        let answer = app.deliver(&sample::user_deleted("user_ghost", T0)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "not_found"));
        assert_eq!(app.deliver(&sample::user_created(&user("user_ghost", T0))).await.outcome(), "tombstoned");
        assert!(app.user("user_ghost").await.is_none());
    }

    async fn rule_4_deletes_are_final_in_soft_mode_and_free_email_and_username(backend) {
        let app = TestApp::spawn_with(backend, |c| c.delete_mode = DeleteMode::Soft).await;
        let mut a = user("user_a", T0 + 1000);
        a.email = Some("shared@example.com".into());
        a.username = Some("shared".into());
        app.deliver(&sample::user_created(&a)).await;
        assert_eq!(app.deliver(&sample::user_deleted("user_a", T0 + 2000)).await.outcome(), "deleted");

        let row = app.user("user_a").await.expect("soft delete keeps the row");
        assert!(row.deleted_at.is_some());
        assert_eq!((row.email, row.username), (None, None));
        assert_eq!(row.first_name.as_deref(), Some("Ada"));

        // The freed email and username can go to a new user (older snapshot, even).
        let mut b = user("user_b", T0 + 500);
        b.email = Some("shared@example.com".into());
        b.username = Some("shared".into());
        assert_eq!(app.deliver(&sample::user_created(&b)).await.outcome(), "created");
        let row = app.user("user_b").await.unwrap();
        assert_eq!(row.email.as_deref(), Some("shared@example.com"));
        assert_eq!(row.username.as_deref(), Some("shared"));

        // And the deleted user stays deleted.
        let mut late = a.clone();
        late.updated_at = T0 + 9000;
        assert_eq!(app.deliver(&sample::user_updated(&late)).await.outcome(), "tombstoned");
        assert!(app.user("user_a").await.unwrap().deleted_at.is_some());
    }

    async fn rule_5_clerk_data_as_it_really_is(backend) {
        let app = TestApp::spawn(backend).await;
        // The primary email is the one whose id matches, not the first one.
        let mut data = user("user_multi", T0).to_clerk_json();
        data["email_addresses"] = json!([
            {"id": "idn_other", "object": "email_address", "email_address": "old@example.com"},
            {"id": "idn_primary", "object": "email_address", "email_address": "primary@example.com"}
        ]);
        data["primary_email_address_id"] = json!("idn_primary");
        // Fields Clerk may add tomorrow are ignored.
        data["brand_new_field"] = json!({"nested": [1, 2, 3]});
        let body = sample::envelope("user.created", data, T0).to_string();
        assert_eq!(app.deliver(&body).await.outcome(), "created");
        assert_eq!(app.user("user_multi").await.unwrap().email.as_deref(), Some("primary@example.com"));

        // Phone-only sign-up: no email at all; name from one part only.
        let mut data = user("user_phone", T0).to_clerk_json();
        data["email_addresses"] = json!([]);
        data["primary_email_address_id"] = json!(null);
        data["first_name"] = json!(null);
        data["last_name"] = json!("Solo");
        data["username"] = json!(null);
        app.deliver(&sample::envelope("user.created", data, T0).to_string()).await;
        let row = app.user("user_phone").await.unwrap();
        assert_eq!((row.email, row.first_name, row.name.as_deref()), (None, None, Some("Solo")));

        // A primary id pointing at nothing (as in Clerk's own example) is no email, not an error.
        let mut data = user("user_dangling", T0).to_clerk_json();
        data["email_addresses"] = json!([]);
        data["first_name"] = json!("");
        data["last_name"] = json!(null);
        app.deliver(&sample::envelope("user.created", data, T0).to_string()).await;
        let row = app.user("user_dangling").await.unwrap();
        assert_eq!((row.email, row.name), (None, None));

        // Non-ASCII text survives intact.
        let mut intl = user("user_intl", T0);
        intl.first_name = Some("Zoë 🦀".into());
        intl.last_name = Some("Łukasiewicz-Ωμέγα 山田".into());
        intl.email = Some("zoë@exämple.com".into());
        app.deliver(&sample::user_created(&intl)).await;
        let row = app.user("user_intl").await.unwrap();
        assert_eq!(row.name.as_deref(), Some("Zoë 🦀 Łukasiewicz-Ωμέγα 山田"));
        assert_eq!(row.email.as_deref(), Some("zoë@exämple.com"));
        assert_eq!(row.clerk_created_at, Some(at(T0)));
        assert_eq!(row.image_url.as_deref(), Some(intl.image_url.as_str()));
    }

    async fn rule_6_unique_values_move_between_users(backend) {
        unique_values_move_between_users(&TestApp::spawn(backend).await).await;
    }

    async fn rule_7_say_what_a_retry_can_fix(backend) {
        let app = TestApp::spawn(backend).await;
        // Verified but not an event envelope: 400, nothing stored.
        for body in ["not json", "[1,2]", r#"{"data":{}}"#, r#"{"type":"user.created"}"#, r#"{"type":"user.created","data":"x"}"#] {
            let answer = app.deliver(body).await;
            assert_eq!(answer.status, 400, "{body}: {answer:?}");
        }
        assert!(app.inbox().await.is_empty());

        // A well-formed event we cannot apply: stored as failed, 2xx, with the reason.
        let mut data = user("user_x", T0).to_clerk_json();
        data.as_object_mut().unwrap().remove("id");
        let answer = app.deliver_as("msg_noid", &sample::envelope("user.created", data, T0).to_string()).await;
        assert_eq!((answer.status, answer.outcome()), (200, "failed"));
        let entry = app.inbox_entry("msg_noid").await.unwrap();
        assert_eq!(entry.outcome, "failed");
        assert!(entry.error.unwrap().contains("no id"));
        assert!(entry.payload.contains("user.created"), "the payload is kept for replay");

        let mut data = user("user_y", T0).to_clerk_json();
        data["updated_at"] = json!("yesterday");
        let answer = app.deliver(&sample::envelope("user.updated", data, T0).to_string()).await;
        assert_eq!((answer.status, answer.outcome()), (200, "failed"));

        // Unknown event types: recorded as ignored, 2xx.
        let body = sample::envelope("session.created", json!({"id": "sess_1", "user_id": "user_y"}), T0).to_string();
        let answer = app.deliver_as("msg_session", &body).await;
        assert_eq!((answer.status, answer.outcome()), (200, "ignored"));
        assert_eq!(app.inbox_entry("msg_session").await.unwrap().outcome, "ignored");
        assert!(app.users().await.is_empty());
    }

    async fn rule_9_concurrent_events_for_one_user_end_in_the_newest_state(backend) {
        let app = TestApp::spawn(backend).await;
        let mut versions: Vec<SampleUser> = (0..24)
            .map(|i| {
                let mut u = user("user_busy", T0 + i * 10);
                u.first_name = Some(format!("v{i}"));
                u.email = Some(format!("v{}@example.com", i % 3));
                u
            })
            .collect();
        versions.reverse();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, version) in versions.into_iter().enumerate() {
            let body = if i % 2 == 0 { sample::user_updated(&version) } else { sample::user_created(&version) };
            let client = app.client.clone();
            let url = app.webhook_url();
            let secret = app.secret.clone();
            tasks.spawn(async move {
                let id = random_id("msg");
                let now = chrono::Utc::now().timestamp();
                let mut request = client.post(url).body(body.clone());
                for (name, value) in signed_headers(&secret, &id, now, body.as_bytes()).unwrap() {
                    request = request.header(name, value);
                }
                request.send().await.unwrap().status().as_u16()
            });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        let row = app.user("user_busy").await.unwrap();
        assert_eq!(row.first_name.as_deref(), Some("v23"));
        assert_eq!(row.email.as_deref(), Some("v2@example.com"));
        assert_eq!(row.clerk_updated_at, Some(at(T0 + 230)));
    }

    async fn rule_9_several_processes_on_one_database_agree(backend) {
        let first = TestApp::spawn(backend).await;
        let secret = first.secret.clone();
        let second = TestApp::spawn_on(first.db.clone(), backend, |c| c.secrets = vec![secret.clone()]).await;
        // Two users trade an email back and forth; events go to both processes at once.
        let mut events = Vec::new();
        for i in 0..10i64 {
            let (holder, other) = if i % 2 == 0 { ("user_p", "user_q") } else { ("user_q", "user_p") };
            let mut h = user(holder, T0 + i * 100 + 50);
            h.email = Some("ping@example.com".into());
            let mut o = user(other, T0 + i * 100);
            o.email = Some(format!("{other}-{i}@example.com"));
            events.push(sample::user_updated(&o));
            events.push(sample::user_updated(&h));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, body) in events.into_iter().rev().enumerate() {
            let target = if i % 2 == 0 { first.webhook_url() } else { second.webhook_url() };
            let (client, secret) = (first.client.clone(), first.secret.clone());
            tasks.spawn(async move {
                let id = random_id("msg");
                let now = chrono::Utc::now().timestamp();
                let mut request = client.post(target).body(body.clone());
                for (name, value) in signed_headers(&secret, &id, now, body.as_bytes()).unwrap() {
                    request = request.header(name, value);
                }
                request.send().await.unwrap().status().as_u16()
            });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        // Last step (i = 9): user_q holds ping@ at T0+950, user_p moved to user_p-9@ at T0+900.
        let q = first.user("user_q").await.unwrap();
        let p = first.user("user_p").await.unwrap();
        assert_eq!(q.email.as_deref(), Some("ping@example.com"));
        assert_eq!(p.email.as_deref(), Some("user_p-9@example.com"));
    }

    async fn health_and_readiness_answer(backend) {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.get("/healthz").await.status, 200);
        let ready = app.get("/readyz").await;
        assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")));
    }

    async fn migrations_are_idempotent_and_safe_to_run_concurrently(backend) {
        // Two processes starting at once on a database never migrated: each migration is
        // applied exactly once, by one of them, and neither fails.
        let db = crate::support::TestDb::create(backend).await;
        let settings = clerk_sync::store::PoolSettings::default();
        let first = clerk_sync::store::Store::connect(&db.target(), &settings).await.unwrap();
        let second = clerk_sync::store::Store::connect(&db.target(), &settings).await.unwrap();
        let (a, b) = tokio::join!(first.migrate(), second.migrate());
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut applied: Vec<i64> = a.applied.iter().chain(&b.applied).map(|(v, _)| *v).collect();
        applied.sort_unstable();
        assert_eq!(applied, (1..=a.version.max(b.version)).collect::<Vec<_>>());
        assert!(a.version > 0 && a.version == b.version);
        assert!(first.migrate().await.unwrap().applied.is_empty(), "idempotent");
    }
}

/// Rule 6 on a running service: an email and a username move from one user to another while
/// the events arrive out of order. Each delivery's outcome is checked, so each was answered 200
/// the first time.
pub(crate) async fn unique_values_move_between_users(app: &TestApp) {
    // B held x@ and "nick" first.
    let mut b = user("user_b", T0 + 1000);
    b.email = Some("x@example.com".into());
    b.username = Some("nick".into());
    assert_eq!(
        app.deliver(&sample::user_created(&b)).await.outcome(),
        "created"
    );
    // A took them later in Clerk (B's change away from them is still in flight).
    let mut a = user("user_a", T0 + 3000);
    a.email = Some("x@example.com".into());
    a.username = Some("nick".into());
    assert_eq!(
        app.deliver(&sample::user_created(&a)).await.outcome(),
        "created"
    );
    let (row_a, row_b) = (
        app.user("user_a").await.unwrap(),
        app.user("user_b").await.unwrap(),
    );
    assert_eq!(
        (row_a.email.as_deref(), row_a.username.as_deref()),
        (Some("x@example.com"), Some("nick"))
    );
    assert_eq!(
        (row_b.email, row_b.username),
        (None, None),
        "the older row gives the values up"
    );

    // B's own change (older than A's snapshot) arrives: B gets its new email.
    let mut b2 = b.clone();
    b2.updated_at = T0 + 2000;
    b2.email = Some("b-new@example.com".into());
    b2.username = Some("bee".into());
    assert_eq!(
        app.deliver(&sample::user_updated(&b2)).await.outcome(),
        "updated"
    );
    let row_b = app.user("user_b").await.unwrap();
    assert_eq!(
        (row_b.email.as_deref(), row_b.username.as_deref()),
        (Some("b-new@example.com"), Some("bee"))
    );

    // A late, older snapshot that still carries A's values does not take them back.
    let mut c_old = user("user_c", T0 + 500);
    c_old.email = Some("x@example.com".into());
    c_old.username = Some("nick".into());
    assert_eq!(
        app.deliver(&sample::user_created(&c_old)).await.outcome(),
        "created"
    );
    let row_c = app.user("user_c").await.unwrap();
    assert_eq!((row_c.email, row_c.username), (None, None));
    assert_eq!(
        app.user("user_a").await.unwrap().email.as_deref(),
        Some("x@example.com")
    );

    // No event failed on the way.
    assert!(app.inbox().await.iter().all(|e| e.outcome != "failed"));
}

/// Postgres only: a database that is away answers 503 (so Svix retries), and readiness says so.
#[tokio::test]
async fn rule_7_database_unreachable_is_503_so_the_sender_retries() {
    use clerk_sync::config::DatabaseTarget;
    let (secret, _) = SigningSecret::generate();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = clerk_sync::config::ServeConfig::new(
        DatabaseTarget::Postgres {
            url: format!("postgres://postgres@127.0.0.1:{dead_port}/nope"),
        },
        vec![secret.clone()],
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.migrate = false;
    config.pool.acquire_timeout = std::time::Duration::from_millis(500);
    let app = clerk_sync::app::App::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));

    let body = sample::user_created(&user("user_a", T0));
    let now = chrono::Utc::now().timestamp();
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/webhooks/clerk"))
        .body(body.clone());
    for (name, value) in signed_headers(&secret, "msg_1", now, body.as_bytes()).unwrap() {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        503
    );
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// Postgres only: text PostgreSQL cannot store (a NUL character) fails that event, stored for
/// replay, instead of blocking the endpoint with endless retries.
#[tokio::test]
async fn rule_7_data_the_database_refuses_is_stored_as_failed() {
    let app = TestApp::spawn(crate::support::Backend::Postgres).await;
    let mut u = user("user_nul", T0);
    u.first_name = Some("bad\u{0}name".into());
    let answer = app.deliver_as("msg_nul", &sample::user_created(&u)).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "failed"),
        "{answer:?}"
    );
    let entry = app.inbox_entry("msg_nul").await;
    // The payload itself holds the NUL as the JSON escape \u0000, which TEXT can store.
    assert_eq!(entry.map(|e| e.outcome).as_deref(), Some("failed"));
    assert!(app.user("user_nul").await.is_none());
}
