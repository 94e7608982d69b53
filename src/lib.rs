//! clerk-sync keeps an application's `users` table (PostgreSQL, e.g. Neon, or SQLite) in step
//! with Clerk: Svix-signed webhooks in, the newest snapshot of each user out, exactly once.
//!
//! The layout follows the chain: [`clerk`] (Clerk's wire formats), [`webhook`] (Svix
//! verification), [`sync`] (the rules), [`store`] (the database), [`http`] (axum), [`app`]
//! (start-up), [`config`] (environment and flags).
#![forbid(unsafe_code)]

pub mod app;
pub mod clerk;
pub mod config;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod store;
pub mod sync;
pub mod trigger;
pub mod webhook;
