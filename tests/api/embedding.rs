//! An app of its own with clerk-sync's routers mounted next to its routes: its `/healthz` stays
//! its own, signed webhooks are applied, and the user API and the extractors answer.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use clerk_sync::app::build_state;
use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::config::{ClerkSettings, ServeConfig};
use clerk_sync::http::{SyncedUser, WEBHOOK_PATH, users_router, webhook_router};
use clerk_sync::store::Store;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use serde_json::Value;

use crate::clerk_emulator::{ClerkEmulator, TokenOptions};
use crate::support::{TestDb, on_both_backends};

const ORIGIN: &str = "http://localhost:3000";

async fn hello(SyncedUser { user, .. }: SyncedUser) -> String {
    format!("hello {}", user.id)
}

on_both_backends! {
    async fn an_app_with_its_own_healthz_mounts_the_webhook_and_user_routers(backend) {
        clerk_sync::logging::init();
        let clerk = ClerkEmulator::start().await;
        let db = TestDb::create(backend).await;
        let (secret, _) = SigningSecret::generate();
        let mut config = ServeConfig::new(db.target(), vec![secret.clone()]);
        config.clerk = ClerkSettings::default()
            .api_url(&clerk.base_url())
            .secret_key(&clerk.secret_key())
            .unwrap()
            .publishable_key(&clerk.publishable_key())
            .unwrap()
            .authorized_parties([ORIGIN]);
        let store = Store::connect(&config.database, &config.pool).await.unwrap();
        store.migrate().await.unwrap();
        let state = build_state(&config, store.clone()).unwrap();

        // Merging would panic if clerk-sync brought a /healthz of its own.
        let app = Router::new()
            .route("/healthz", get(|| async { "the app's own" }))
            .route("/hello", get(hello))
            .with_state(state.clone())
            .merge(webhook_router(state.clone(), config.max_body_bytes))
            .merge(users_router(state.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
        });
        let client = reqwest::Client::new();

        let health = client.get(format!("{address}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.text().await.unwrap(), "the app's own");

        let user_id = random_id("user");
        let body = sample::user_created(&SampleUser::new(&user_id, 1_700_000_000_000));
        let now = chrono::Utc::now().timestamp();
        let headers = signed_headers(&secret, &random_id("msg"), now, body.as_bytes()).unwrap();
        let mut delivery = client
            .post(format!("{address}{WEBHOOK_PATH}"))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &headers {
            delivery = delivery.header(*name, value);
        }
        let answer = delivery.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
        let (row, _) = store.user(&user_id).await.unwrap();
        assert_eq!(row.map(|r| r.id), Some(user_id.clone()), "the webhook's user is in the table");

        // Unsigned deliveries are still refused: the router brings its verification along.
        let unsigned = client
            .post(format!("{address}{WEBHOOK_PATH}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unsigned.status(), 400);

        let token = clerk.mint_session_token(&user_id, &TokenOptions::default());
        let me = client
            .get(format!("{address}/api/users/me"))
            .bearer_auth(&token)
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200);
        assert_eq!(
            me.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
            Some(ORIGIN),
            "the user router brings its CORS policy"
        );
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["id"], user_id.as_str());

        let preflight = client
            .request(reqwest::Method::OPTIONS, format!("{address}/api/users/me"))
            .header("origin", ORIGIN)
            .header("access-control-request-method", "PATCH")
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success(), "{}", preflight.status());
        assert_eq!(
            preflight.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
            Some(ORIGIN)
        );

        // The app's own handler, behind the extractor.
        let greeting = client
            .get(format!("{address}/hello"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(greeting.status(), 200);
        assert_eq!(greeting.text().await.unwrap(), format!("hello {user_id}"));

        // The app's 404s stay plain 404s, whichever router was merged last.
        let missing = client.get(format!("{address}/nowhere")).send().await.unwrap();
        assert_eq!(missing.status(), 404);

        state.deliveries.shutdown().await;
        store.close().await;
    }
}
