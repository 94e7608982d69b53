//! clerk-sync keeps an application's `users` table, and its `organizations` and
//! `organization_memberships` tables (PostgreSQL, e.g. Neon, or SQLite), in step with Clerk:
//! Svix-signed webhooks in, the newest snapshot of each user, organization and membership out,
//! exactly once.
//!
//! The layout follows the chain: [`clerk`] (Clerk's wire formats), [`webhook`] (Svix
//! verification), [`sync`] (the rules), [`ingest`] (what happens to an event, from any
//! source), [`store`] (the database), [`http`] (axum), [`app`] (start-up), [`config`]
//! (environment and flags).
//!
//! # In an app of your own
//!
//! The `clerk-sync` binary serves everything on one address. An axum app embeds the pieces
//! instead, next to its own routes:
//!
//! 1. Configuration: [`config::ServeConfig::new`] with the database and the webhook signing
//!    secrets, and [`config::ClerkSettings`]' builder methods for the Clerk keys
//!    (`ClerkSettings::default().secret_key(..)?.authorized_parties([..])`).
//! 2. State: [`store::Store::connect`], `migrate`, then [`app::build_state`], which checks the
//!    configuration ([`config::ServeConfig::validate`]) and starts the webhook writers.
//! 3. Routes: [`http::webhook_router`] (the endpoint Clerk's dashboard points at) and
//!    [`http::users_router`] (`/api/users/me`); the operator routes
//!    ([`http::health_router`], [`http::metrics_router`], [`http::status_router`],
//!    [`http::openapi_router`]) only where the app has none of its own. [`http::router`] is
//!    the whole bundle `serve` uses.
//! 4. Handlers: the extractors [`http::SyncedUser`] (a signed-in user whose row exists) and
//!    [`http::ClerkSession`] (a verified session token).
//! 5. Shutdown: stop serving, then [`ingest::DeliveryQueue::shutdown`], then
//!    [`store::Store::close`].
//!
//! [`http::webhook_router`] shows steps 1 to 3 and 5 running against SQLite;
//! `examples/embedded.rs` is a complete app.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod clerk;
pub mod config;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod store;
pub mod sync;
pub mod trigger;
pub mod webhook;
