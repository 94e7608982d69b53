//! Integration tests over real HTTP against a real PostgreSQL and a real SQLite file. One binary,
//! so the suite compiles once.

mod support;

#[path = "../clerk_emulator/mod.rs"]
mod clerk_emulator;

mod adopt;
mod batches;
mod cli;
mod embedding;
mod faults;
mod first_hour;
mod fixtures;
mod foreign_keys;
mod hardening;
mod history;
mod hostile_clients;
mod jobs;
mod layers;
mod leases;
mod metrics;
mod organization_history;
mod organization_jobs;
mod organizations;
mod poison;
mod poolers;
mod prisma_client;
mod privacy;
mod retention;
mod round_trips;
mod shutdown;
mod signatures;
mod status_page;
mod tls;
mod upgrade;
mod users_api;
mod webhook_rules;
mod wrong_key;
