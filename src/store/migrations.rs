//! Schema migrations, plain SQL per dialect, applied in one transaction.
//!
//! A small runner of our own rather than sqlx's: its bookkeeping table must live with
//! clerk-sync's other tables (the `clerk_sync` schema, or the `clerk_sync_` prefix), never in the
//! app's schema, and several processes starting at once must not trip over each other.

use sqlx::{PgPool, Row, SqlitePool};

use super::StoreError;

struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        description: "users table, event inbox, tombstones, state",
        sql: include_str!("migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "job leases, replay time of stored events",
        sql: include_str!("migrations/postgres/0002_leases_and_replay.sql"),
    },
];

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        description: "users table, event inbox, tombstones, state",
        sql: include_str!("migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "job leases, replay time of stored events",
        sql: include_str!("migrations/sqlite/0002_leases_and_replay.sql"),
    },
];

/// Arbitrary constant naming the migration lock among advisory locks.
const MIGRATION_LOCK_KEY: i64 = 0x636c_6b73_796e_6301;

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions and descriptions applied by this run.
    pub applied: Vec<(i64, &'static str)>,
    /// The schema version after the run.
    pub version: i64,
}

fn pending(
    known: &'static [Migration],
    applied: &[i64],
) -> Result<Vec<&'static Migration>, StoreError> {
    let latest_known = known.last().map_or(0, |m| m.version);
    if let Some(newer) = applied.iter().find(|v| **v > latest_known) {
        return Err(StoreError::Setup(format!(
            "the database is at schema version {newer}, written by a newer clerk-sync than this \
             one (which knows up to version {latest_known}); run the newer clerk-sync"
        )));
    }
    Ok(known
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

fn failed(migration: &Migration, error: sqlx::Error) -> StoreError {
    let mut message = format!(
        "migration {} ({}) failed: {error}",
        migration.version, migration.description
    );
    if error.to_string().contains("already exists") {
        message.push_str(
            "\nhint: the database already has a table clerk-sync wants to create (usually \
             \"users\"). Point DATABASE_URL at a database without it.",
        );
    }
    StoreError::Setup(message)
}

pub(super) async fn run_postgres(pool: &PgPool) -> Result<MigrationReport, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::Unavailable)?;
    // A transaction-scoped lock, so it also works through a transaction-mode pooler.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Unavailable)?;
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS clerk_sync;
         CREATE TABLE IF NOT EXISTS clerk_sync.migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
         );",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::Unavailable)?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM clerk_sync.migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::Unavailable)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut report = MigrationReport {
        applied: Vec::new(),
        version: applied.iter().copied().max().unwrap_or(0),
    };
    for migration in pending(POSTGRES, &applied)? {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(migration, e))?;
        sqlx::query("INSERT INTO clerk_sync.migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Unavailable)?;
        report
            .applied
            .push((migration.version, migration.description));
        report.version = migration.version;
    }
    tx.commit().await.map_err(StoreError::Unavailable)?;
    Ok(report)
}

pub(super) async fn run_sqlite(pool: &SqlitePool) -> Result<MigrationReport, StoreError> {
    // IMMEDIATE takes the write lock first: a second process waits instead of racing.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::Unavailable)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS clerk_sync_migrations (
             version INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
         );",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::Unavailable)?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM clerk_sync_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::Unavailable)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut report = MigrationReport {
        applied: Vec::new(),
        version: applied.iter().copied().max().unwrap_or(0),
    };
    for migration in pending(SQLITE, &applied)? {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(migration, e))?;
        sqlx::query("INSERT INTO clerk_sync_migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Unavailable)?;
        report
            .applied
            .push((migration.version, migration.description));
        report.version = migration.version;
    }
    tx.commit().await.map_err(StoreError::Unavailable)?;
    Ok(report)
}
