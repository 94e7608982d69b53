//! Schema migrations, plain SQL per dialect, applied in one transaction.
//!
//! A small runner of our own rather than sqlx's: its bookkeeping table must live with
//! clerk-sync's other tables (the `clerk_sync` schema, or the `clerk_sync_` prefix), never in the
//! app's schema, and several processes starting at once must not trip over each other.

use deadpool_postgres::Object;
use sqlx::{Row, SqlitePool};
use tokio_postgres::types::Type;

use super::error::DatabaseError;
use super::{StoreError, UsersTable, postgres};

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
    Migration {
        version: 3,
        description: "inbox index by time received",
        sql: include_str!("migrations/postgres/0003_inbox_received_at.sql"),
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
    Migration {
        version: 3,
        description: "inbox index by time received",
        sql: include_str!("migrations/sqlite/0003_inbox_received_at.sql"),
    },
];

/// Arbitrary constant naming the migration lock among advisory locks.
const MIGRATION_LOCK_KEY: i64 = 0x636c_6b73_796e_6301;

/// What a migration run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Versions and descriptions applied by this run.
    pub applied: Vec<(i64, &'static str)>,
    /// The schema version after the run.
    pub version: i64,
    /// Changes made to adopt an existing users table, one line each.
    pub adopted: Vec<String>,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Where the users table ends in the first migration: an adopted table skips that part.
const END_OF_USERS_TABLE: &str = "-- clerk-sync: end of the users table";

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

fn failed(migration: &Migration, error: impl Into<DatabaseError>) -> StoreError {
    let error = error.into();
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

/// A transaction on a pooled PostgreSQL connection (`BEGIN` and the rest through the simple
/// protocol, no values). Dropped before [`ClosingTransaction::commit`] or
/// [`ClosingTransaction::rollback`] ended it (its future dropped at a timeout, an error on the
/// way), the connection is closed rather than handed back to the pool: the server rolls the
/// transaction back, and nobody else gets a connection inside it, or behind a statement still
/// waiting for a lock.
pub(super) struct ClosingTransaction {
    client: Option<Object>,
}

impl ClosingTransaction {
    /// Takes a connection and starts the transaction with `begin` (`BEGIN`, or `BEGIN` with
    /// options and `SET LOCAL`s after it).
    pub(super) async fn begin(
        pool: &postgres::Pool,
        begin: &str,
    ) -> Result<ClosingTransaction, DatabaseError> {
        let transaction = ClosingTransaction {
            client: Some(pool.get().await?),
        };
        transaction.client().batch_execute(begin).await?;
        Ok(transaction)
    }

    pub(super) fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("a transaction keeps its client until it ends")
    }

    pub(super) async fn commit(self) -> Result<(), DatabaseError> {
        self.end("COMMIT").await
    }

    pub(super) async fn rollback(self) -> Result<(), DatabaseError> {
        self.end("ROLLBACK").await
    }

    /// Ends the transaction and hands the connection, idle again, back to the pool.
    async fn end(mut self, sql: &str) -> Result<(), DatabaseError> {
        self.client().batch_execute(sql).await?;
        self.client.take();
        Ok(())
    }
}

impl Drop for ClosingTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Out of the pool: dropping the client closes the connection.
            drop(Object::take(client));
        }
    }
}

pub(super) async fn run_postgres(
    pool: &postgres::Pool,
    users: &UsersTable,
    dry_run: bool,
) -> Result<MigrationReport, StoreError> {
    // Without the server's NOTICEs ("schema \"clerk_sync\" already exists, skipping" on every
    // run): tokio-postgres logs each at info.
    let tx = ClosingTransaction::begin(pool, "BEGIN; SET LOCAL client_min_messages = warning")
        .await
        .map_err(StoreError::unavailable)?;
    let client = tx.client();
    // A transaction-scoped lock, so it also works through a transaction-mode pooler.
    client
        .execute_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&MIGRATION_LOCK_KEY, Type::INT8)],
        )
        .await
        .map_err(StoreError::unavailable)?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS clerk_sync;
             CREATE TABLE IF NOT EXISTS clerk_sync.migrations (
                 version BIGINT PRIMARY KEY,
                 description TEXT NOT NULL,
                 applied_at TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
             );",
        )
        .await
        .map_err(StoreError::unavailable)?;
    let applied: Vec<i64> = client
        .query_typed("SELECT version FROM clerk_sync.migrations", &[])
        .await
        .map_err(StoreError::unavailable)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(StoreError::unavailable)?;
    let mut report = MigrationReport {
        version: applied.iter().copied().max().unwrap_or(0),
        dry_run,
        ..MigrationReport::default()
    };
    if applied.contains(&1) {
        // The app may have added a column since; one nothing fills would fail every new
        // user's insert, so it is better refused here, once, than on each event.
        super::adopt::check_app_columns(client, users).await?;
    }
    let mut adopted = false;
    if !applied.contains(&1)
        && let Some(adoption) = super::adopt::plan(client, users).await?
    {
        if !dry_run {
            super::adopt::apply(client, &adoption).await?;
        }
        report.adopted = adoption.changes;
        adopted = true;
    }
    for migration in pending(POSTGRES, &applied)? {
        report
            .applied
            .push((migration.version, migration.description));
        report.version = migration.version;
        if dry_run {
            continue;
        }
        // The marker is a comment line; what follows its line is clerk-sync's own tables.
        let sql = match migration.sql.split_once(END_OF_USERS_TABLE) {
            Some((_, rest)) if adopted => rest.split_once('\n').map_or("", |(_, after)| after),
            _ => migration.sql,
        };
        if let (Some(schema), false) = (users.schema(), adopted)
            && migration.version == 1
        {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await
                .map_err(|e| failed(migration, e))?;
        }
        let sql = users.sql(sql);
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| failed(migration, e))?;
        client
            .execute_typed(
                "INSERT INTO clerk_sync.migrations (version, description) VALUES ($1, $2)",
                &[
                    (&migration.version, Type::INT8),
                    (&migration.description, Type::TEXT),
                ],
            )
            .await
            .map_err(StoreError::unavailable)?;
    }
    if dry_run {
        tx.rollback().await.map_err(StoreError::unavailable)?;
    } else {
        tx.commit().await.map_err(StoreError::unavailable)?;
    }
    Ok(report)
}

pub(super) async fn run_sqlite(
    pool: &SqlitePool,
    users: &UsersTable,
    dry_run: bool,
) -> Result<MigrationReport, StoreError> {
    // IMMEDIATE takes the write lock first: a second process waits instead of racing.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::unavailable)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS clerk_sync_migrations (
             version INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
         );",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::unavailable)?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM clerk_sync_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::unavailable)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut report = MigrationReport {
        version: applied.iter().copied().max().unwrap_or(0),
        dry_run,
        ..MigrationReport::default()
    };
    if applied.contains(&1) {
        super::adopt::check_app_columns_sqlite(&mut tx, users).await?;
    } else {
        let existing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'User')",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::unavailable)?;
        if existing > 0 {
            return Err(StoreError::Setup(
                "this SQLite database already has a users table that clerk-sync did not create; \
                 adopting an existing table is supported on PostgreSQL. Use a new SQLite file. \
                 Nothing was changed."
                    .into(),
            ));
        }
    }
    for migration in pending(SQLITE, &applied)? {
        report
            .applied
            .push((migration.version, migration.description));
        report.version = migration.version;
        if dry_run {
            continue;
        }
        let sql = users.sql(migration.sql);
        sqlx::raw_sql(&sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(migration, e))?;
        sqlx::query("INSERT INTO clerk_sync_migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::unavailable)?;
    }
    if dry_run {
        tx.rollback().await.map_err(StoreError::unavailable)?;
    } else {
        tx.commit().await.map_err(StoreError::unavailable)?;
    }
    Ok(report)
}
