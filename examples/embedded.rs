//! An app of your own with clerk-sync inside: it keeps its own `/healthz`, mounts clerk-sync's
//! webhook and user routers next to it and uses `SyncedUser` in its own handler, so the handler
//! only runs for a signed-in user whose row is guaranteed to exist (fetched from Clerk if the
//! webhook has not arrived yet).
//!
//! It listens where `clerk-sync serve` would: `CLERK_SYNC_LISTEN`, else `0.0.0.0:$PORT`, else
//! 127.0.0.1:3000. `next dev` takes port 3000 too, so next to a Next.js dev server pick another
//! one, as here:
//!
//! ```sh
//! DATABASE_URL=sqlite://example.db CLERK_SYNC_LISTEN=127.0.0.1:3001 \
//! CLERK_WEBHOOK_SIGNING_SECRET=whsec_... CLERK_SECRET_KEY=sk_test_... \
//! cargo run --example embedded
//! curl -H "Authorization: Bearer $SESSION_TOKEN" http://127.0.0.1:3001/hello
//! ```

use axum::Router;
use axum::routing::get;
use clerk_sync::app::build_state;
use clerk_sync::config::{
    ClerkSettings, DatabaseTarget, ServeConfig, listen_address, secrets_from_env,
};
use clerk_sync::http::{SyncedUser, users_router, webhook_router};
use clerk_sync::store::Store;

/// The app's own handler: the extractor has done the authentication and the sync.
async fn hello(SyncedUser { user, .. }: SyncedUser) -> String {
    let name = user.first_name.as_deref().unwrap_or("there");
    format!("Hello, {name}! You are {} in our users table.\n", user.id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clerk_sync::logging::init();
    let env = |name: &str| std::env::var(name).ok();
    let (database, _) = DatabaseTarget::from_env_value(env("DATABASE_URL").as_deref())?;
    let secrets = secrets_from_env(env("CLERK_WEBHOOK_SIGNING_SECRET").as_deref(), None)?
        .ok_or_else(|| anyhow::anyhow!("set CLERK_WEBHOOK_SIGNING_SECRET (whsec_...)"))?;
    let mut config = ServeConfig::new(database, secrets);
    config.listen = listen_address(env("CLERK_SYNC_LISTEN").as_deref(), env("PORT").as_deref())?;
    // Typed settings: each value is checked as it is given, with `serve`'s messages.
    let mut clerk = ClerkSettings::default();
    if let Some(url) = env("CLERK_API_URL") {
        clerk = clerk.api_url(&url);
    }
    if let Some(key) = env("CLERK_SECRET_KEY") {
        clerk = clerk.secret_key(&key)?;
    }
    if let Some(pem) = env("CLERK_JWT_KEY") {
        clerk = clerk.jwt_key(&pem);
    }
    if let Some(key) = env("CLERK_PUBLISHABLE_KEY") {
        clerk = clerk.publishable_key(&key)?;
    }
    if let Some(origins) = env("CLERK_AUTHORIZED_PARTIES") {
        clerk = clerk.authorized_parties(origins.split(','));
    }
    config.clerk = clerk;

    let store = Store::connect(&config.database, &config.pool).await?;
    store.migrate().await?;
    let state = build_state(&config, store.clone())?;
    let deliveries = state.deliveries.clone();

    // The app keeps its own probe; clerk-sync brings the webhook endpoint and /api/users/me.
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/hello", get(hello))
        .with_state(state.clone())
        .merge(webhook_router(state.clone(), config.max_body_bytes))
        .merge(users_router(state));

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(clerk_sync::app::shutdown_signal())
    .await?;
    // Queued webhook events are written before the writers let go of their connections; the
    // pool can close only after that.
    deliveries.shutdown().await;
    store.close().await;
    Ok(())
}
