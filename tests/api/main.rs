//! Integration tests over real HTTP against a real PostgreSQL and a real SQLite file. One binary,
//! so the suite compiles once.

mod support;

mod cli;
mod fixtures;
mod history;
mod signatures;
mod webhook_rules;
