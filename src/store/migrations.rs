//! Schema migrations, plain SQL per dialect, applied in one transaction.
//!
//! A small runner of our own rather than sqlx's: its bookkeeping table must live with
//! clerk-sync's other tables (the `clerk_sync` schema, or the `clerk_sync_` prefix), never in the
//! app's schema, and several processes starting at once must not trip over each other.

use sqlx::{Sqlite, SqlitePool};
use tokio_postgres::types::Type;

use super::error::{DriverError, StoreError};
use super::postgres::{self, ClosingTransaction};
use super::users_table::UsersTable;

struct Migration {
    version: i64,
    description: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

/// Every migration, oldest first, with its SQL in each dialect: one list, so no version can
/// exist in one dialect only.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "users table, event inbox, tombstones, state",
        postgres: include_str!("migrations/postgres/0001_initial.sql"),
        sqlite: include_str!("migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "job leases, replay time of stored events",
        postgres: include_str!("migrations/postgres/0002_leases_and_replay.sql"),
        sqlite: include_str!("migrations/sqlite/0002_leases_and_replay.sql"),
    },
    Migration {
        version: 3,
        description: "inbox index by time received",
        postgres: include_str!("migrations/postgres/0003_inbox_received_at.sql"),
        sqlite: include_str!("migrations/sqlite/0003_inbox_received_at.sql"),
    },
    Migration {
        version: ORGANIZATIONS_VERSION,
        description: "organizations and memberships",
        postgres: include_str!("migrations/postgres/0004_organizations.sql"),
        sqlite: include_str!("migrations/sqlite/0004_organizations.sql"),
    },
];

/// The migration that creates the organization tables beside the users table.
const ORGANIZATIONS_VERSION: i64 = 4;

/// The app tables [`ORGANIZATIONS_VERSION`] creates, under these fixed names, in the users
/// table's schema (`{organizations}` and `{memberships}` in its SQL).
const ORGANIZATION_TABLES: [&str; 2] = ["organizations", "organization_memberships"];

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

fn failed(migration: &Migration, error: impl Into<DriverError>) -> StoreError {
    let error = error.into();
    let mut message = format!(
        "migration {} ({}) failed: {error}",
        migration.version, migration.description
    );
    if let Some(name) = already_existing(&error.to_string()) {
        if migration.version == ORGANIZATIONS_VERSION {
            message.push_str(&format!(
                "\nhint: the database already has \"{name}\", a name clerk-sync's organization \
                 tables (\"organizations\", \"organization_memberships\" and their indexes) \
                 need; adopting existing organization tables is not supported. Rename the \
                 app's \"{name}\", or point DATABASE_URL at a database without it."
            ));
        } else {
            message.push_str(&format!(
                "\nhint: the database already has \"{name}\", which clerk-sync wants to \
                 create. Point DATABASE_URL at a database without it."
            ));
        }
    }
    StoreError::Setup(message)
}

/// The name in a database's "... already exists" error: PostgreSQL's `relation "x" already
/// exists`, SQLite's `table "x" already exists` or `index x already exists`.
fn already_existing(error: &str) -> Option<&str> {
    let before = error.split_once(" already exists")?.0.trim_end();
    let name = match before.strip_suffix('"') {
        Some(quoted) => quoted.rsplit_once('"')?.1,
        None => before.rsplit(char::is_whitespace).next()?,
    };
    Some(name).filter(|n| !n.is_empty())
}

/// Migration 4 creates the organization tables, and adopts none: an app's own table of either
/// name (any relation, on SQLite in any letter case, which SQLite does not tell apart) is
/// refused before anything runs.
fn existing_organization_tables(users: &UsersTable, found: &[(String, String)]) -> StoreError {
    let named: Vec<String> = found
        .iter()
        .map(|(name, kind)| {
            let quoted = match users.schema() {
                Some(schema) => format!("\"{schema}\".\"{name}\""),
                None => format!("\"{name}\""),
            };
            format!("{kind} {quoted}")
        })
        .collect();
    StoreError::Setup(format!(
        "migration {ORGANIZATIONS_VERSION} (organizations and memberships) cannot run: the \
         database already has a {} that clerk-sync did not create. clerk-sync creates and writes \
         \"organizations\" and \"organization_memberships\" itself, beside the users table; \
         adopting existing organization tables is not supported. {} and migrate again. \
         Nothing was changed.",
        named.join(" and a "),
        match found {
            [(_, kind)] =>
                format!("Rename the app's {kind} (or point DATABASE_URL at a database without it)"),
            _ => "Rename both (or point DATABASE_URL at a database without them)".to_string(),
        }
    ))
}

/// One dialect's migration transaction, begun, locked and with its bookkeeping table: what
/// differs between the dialects within a run; [`run`] holds the rest, the same on both.
trait MigrationTransaction {
    /// A migration's SQL in this dialect.
    fn sql(migration: &'static Migration) -> &'static str;

    /// The versions the bookkeeping table has.
    async fn applied(&mut self) -> Result<Vec<i64>, DriverError>;

    /// Checks the users table before anything runs; `managed` once migration 1 has created
    /// (or adopted) it.
    async fn check_users_table(
        &mut self,
        users: &UsersTable,
        managed: bool,
    ) -> Result<(), StoreError>;

    /// The relations of the app's named as [`ORGANIZATION_TABLES`], with their kinds.
    async fn organization_tables(
        &mut self,
        users: &UsersTable,
    ) -> Result<Vec<(String, String)>, DriverError>;

    /// Takes over a users table the app already has, before migration 1 (dry: only plans
    /// it), and says what that changes. By default there is none: `check_users_table`
    /// refused it.
    async fn adopt(
        &mut self,
        _users: &UsersTable,
        _dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// Readies the database for `migration`, and gives the part of its SQL to run: by
    /// default all of it, with nothing to ready.
    async fn prepare(
        &mut self,
        migration: &'static Migration,
        _users: &UsersTable,
    ) -> Result<&'static str, DriverError> {
        Ok(Self::sql(migration))
    }

    async fn execute(&mut self, sql: &str) -> Result<(), DriverError>;

    async fn record(&mut self, migration: &Migration) -> Result<(), DriverError>;

    async fn commit(self) -> Result<(), DriverError>;

    async fn rollback(self) -> Result<(), DriverError>;
}

/// A migration run on either dialect: the pending migrations, or (dry) only their report.
async fn run<T: MigrationTransaction>(
    mut tx: T,
    users: &UsersTable,
    dry_run: bool,
) -> Result<MigrationReport, StoreError> {
    let applied = tx.applied().await.map_err(StoreError::unavailable)?;
    let pending = pending(MIGRATIONS, &applied)?;
    let mut report = MigrationReport {
        version: applied.iter().copied().max().unwrap_or(0),
        dry_run,
        ..MigrationReport::default()
    };
    let managed = applied.contains(&1);
    tx.check_users_table(users, managed).await?;
    if pending.iter().any(|m| m.version == ORGANIZATIONS_VERSION) {
        let found = tx
            .organization_tables(users)
            .await
            .map_err(StoreError::unavailable)?;
        if !found.is_empty() {
            return Err(existing_organization_tables(users, &found));
        }
    }
    // After the organization tables' refusal, which is what a database with both an
    // unadoptable users table and an organization table of its own is told first.
    if !managed {
        report.adopted = tx.adopt(users, dry_run).await?;
    }
    for migration in pending {
        report
            .applied
            .push((migration.version, migration.description));
        report.version = migration.version;
        if dry_run {
            continue;
        }
        let sql = tx
            .prepare(migration, users)
            .await
            .map_err(|e| failed(migration, e))?;
        tx.execute(&users.sql(sql))
            .await
            .map_err(|e| failed(migration, e))?;
        tx.record(migration)
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

struct PostgresMigration {
    tx: ClosingTransaction,
    /// The app's users table was adopted: migration 1 leaves it out.
    adopted: bool,
}

impl PostgresMigration {
    async fn begin(pool: &postgres::Pool) -> Result<PostgresMigration, DriverError> {
        // Without the server's NOTICEs ("schema \"clerk_sync\" already exists, skipping" on
        // every run): tokio-postgres logs each at info.
        let tx = ClosingTransaction::begin(pool, "BEGIN; SET LOCAL client_min_messages = warning")
            .await?;
        let client = tx.client();
        // A transaction-scoped lock, so it also works through a transaction-mode pooler.
        client
            .execute_typed(
                "SELECT pg_advisory_xact_lock($1)",
                &[(&MIGRATION_LOCK_KEY, Type::INT8)],
            )
            .await?;
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS clerk_sync;
                 CREATE TABLE IF NOT EXISTS clerk_sync.migrations (
                     version BIGINT PRIMARY KEY,
                     description TEXT NOT NULL,
                     applied_at TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
                 );",
            )
            .await?;
        Ok(PostgresMigration { tx, adopted: false })
    }
}

impl MigrationTransaction for PostgresMigration {
    fn sql(migration: &'static Migration) -> &'static str {
        migration.postgres
    }

    async fn applied(&mut self) -> Result<Vec<i64>, DriverError> {
        Ok(self
            .tx
            .client()
            .query_typed("SELECT version FROM clerk_sync.migrations", &[])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    async fn check_users_table(
        &mut self,
        users: &UsersTable,
        managed: bool,
    ) -> Result<(), StoreError> {
        if managed {
            // The app may have added a column since; one nothing fills would fail every new
            // user's insert, so it is better refused here, once, than on each event.
            super::adopt::check_app_columns(self.tx.client(), users).await?;
        }
        // An app's own table is for `adopt`.
        Ok(())
    }

    async fn organization_tables(
        &mut self,
        users: &UsersTable,
    ) -> Result<Vec<(String, String)>, DriverError> {
        Ok(self
            .tx
            .client()
            .query_typed(
                "SELECT c.relname::text,
                        CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table'
                                       WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                       WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence'
                                       WHEN 'i' THEN 'index' WHEN 'I' THEN 'index'
                                       ELSE 'relation' END
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = coalesce($1, current_schema()) AND c.relname IN ($2, $3)
                 ORDER BY c.relname DESC",
                &[
                    (&users.schema(), Type::TEXT),
                    (&ORGANIZATION_TABLES[0], Type::TEXT),
                    (&ORGANIZATION_TABLES[1], Type::TEXT),
                ],
            )
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    async fn adopt(
        &mut self,
        users: &UsersTable,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.tx.client();
        let Some(adoption) = super::adopt::plan(client, users).await? else {
            return Ok(Vec::new());
        };
        if !dry_run {
            super::adopt::apply(client, &adoption).await?;
        }
        self.adopted = true;
        Ok(adoption.changes)
    }

    async fn prepare(
        &mut self,
        migration: &'static Migration,
        users: &UsersTable,
    ) -> Result<&'static str, DriverError> {
        if let (Some(schema), false) = (users.schema(), self.adopted)
            && migration.version == 1
        {
            self.tx
                .client()
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await?;
        }
        // The marker is a comment line; what follows its line is clerk-sync's own tables.
        Ok(match migration.postgres.split_once(END_OF_USERS_TABLE) {
            Some((_, rest)) if self.adopted => rest.split_once('\n').map_or("", |(_, after)| after),
            _ => migration.postgres,
        })
    }

    async fn execute(&mut self, sql: &str) -> Result<(), DriverError> {
        Ok(self.tx.client().batch_execute(sql).await?)
    }

    async fn record(&mut self, migration: &Migration) -> Result<(), DriverError> {
        self.tx
            .client()
            .execute_typed(
                "INSERT INTO clerk_sync.migrations (version, description) VALUES ($1, $2)",
                &[
                    (&migration.version, Type::INT8),
                    (&migration.description, Type::TEXT),
                ],
            )
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), DriverError> {
        self.tx.commit().await
    }

    async fn rollback(self) -> Result<(), DriverError> {
        self.tx.rollback().await
    }
}

struct SqliteMigration(sqlx::Transaction<'static, Sqlite>);

impl SqliteMigration {
    async fn begin(pool: &SqlitePool) -> Result<SqliteMigration, sqlx::Error> {
        // IMMEDIATE takes the write lock first: a second process waits instead of racing.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS clerk_sync_migrations (
                 version INTEGER PRIMARY KEY,
                 description TEXT NOT NULL,
                 applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
             );",
        )
        .execute(&mut *tx)
        .await?;
        Ok(SqliteMigration(tx))
    }
}

impl MigrationTransaction for SqliteMigration {
    fn sql(migration: &'static Migration) -> &'static str {
        migration.sqlite
    }

    async fn applied(&mut self) -> Result<Vec<i64>, DriverError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM clerk_sync_migrations")
                .fetch_all(&mut *self.0)
                .await?,
        )
    }

    async fn check_users_table(
        &mut self,
        users: &UsersTable,
        managed: bool,
    ) -> Result<(), StoreError> {
        if managed {
            return super::adopt::check_app_columns_sqlite(&mut self.0, users).await;
        }
        let existing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'User')",
        )
        .fetch_one(&mut *self.0)
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
        Ok(())
    }

    async fn organization_tables(
        &mut self,
        _users: &UsersTable,
    ) -> Result<Vec<(String, String)>, DriverError> {
        Ok(sqlx::query_as(
            "SELECT name, type FROM sqlite_master
             WHERE name COLLATE NOCASE IN ($1, $2) AND type IN ('table', 'view', 'index')
             ORDER BY name COLLATE NOCASE DESC",
        )
        .bind(ORGANIZATION_TABLES[0])
        .bind(ORGANIZATION_TABLES[1])
        .fetch_all(&mut *self.0)
        .await?)
    }

    async fn execute(&mut self, sql: &str) -> Result<(), DriverError> {
        sqlx::raw_sql(sql).execute(&mut *self.0).await?;
        Ok(())
    }

    async fn record(&mut self, migration: &Migration) -> Result<(), DriverError> {
        sqlx::query("INSERT INTO clerk_sync_migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), DriverError> {
        Ok(self.0.commit().await?)
    }

    async fn rollback(self) -> Result<(), DriverError> {
        Ok(self.0.rollback().await?)
    }
}

pub(super) async fn run_postgres(
    pool: &postgres::Pool,
    users: &UsersTable,
    dry_run: bool,
) -> Result<MigrationReport, StoreError> {
    let tx = PostgresMigration::begin(pool)
        .await
        .map_err(StoreError::unavailable)?;
    run(tx, users, dry_run).await
}

pub(super) async fn run_sqlite(
    pool: &SqlitePool,
    users: &UsersTable,
    dry_run: bool,
) -> Result<MigrationReport, StoreError> {
    let tx = SqliteMigration::begin(pool)
        .await
        .map_err(StoreError::unavailable)?;
    run(tx, users, dry_run).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_in_an_already_exists_error_is_found_in_either_dialect() {
        for (error, name) in [
            (
                "ERROR: relation \"organizations\" already exists (SQLSTATE 42P07)",
                Some("organizations"),
            ),
            (
                "error returned from database: (code: 1) table \"organization_memberships\" \
                 already exists",
                Some("organization_memberships"),
            ),
            (
                "error returned from database: (code: 1) index organizations_slug_key already \
                 exists",
                Some("organizations_slug_key"),
            ),
            (
                "ERROR: syntax error at or near \"x\" (SQLSTATE 42601)",
                None,
            ),
        ] {
            assert_eq!(already_existing(error), name, "{error}");
        }
    }

    #[test]
    fn the_hint_names_the_table_that_exists() {
        let organizations = &MIGRATIONS[3];
        assert_eq!(organizations.version, ORGANIZATIONS_VERSION);
        let error = DriverError::pool(
            "ERROR: relation \"organizations_slug_key\" already exists (SQLSTATE 42P07)",
        );
        let message = failed(organizations, error).to_string();
        assert!(
            message.contains("hint: the database already has \"organizations_slug_key\""),
            "{message}"
        );
        assert!(
            message.contains("adopting existing organization tables is not supported"),
            "{message}"
        );

        let error =
            DriverError::pool("ERROR: relation \"AppUser\" already exists (SQLSTATE 42P07)");
        let message = failed(&MIGRATIONS[0], error).to_string();
        assert!(
            message.contains("hint: the database already has \"AppUser\", which clerk-sync"),
            "{message}"
        );
        assert!(!message.contains("organization"), "{message}");
    }

    #[test]
    fn every_migration_has_sql_in_both_dialects_and_versions_only_grow() {
        for migration in MIGRATIONS {
            for sql in [migration.postgres, migration.sqlite] {
                assert!(sql.contains("CREATE"), "migration {}", migration.version);
            }
        }
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        let last = MIGRATIONS.last().map(|m| (m.version, m.description));
        assert_eq!(
            last,
            Some((ORGANIZATIONS_VERSION, "organizations and memberships"))
        );
    }

    /// clerk-sync's own SQLite connections (not only the tests'): a membership goes with its
    /// organization's row only where `PRAGMA foreign_keys` is on, as sqlx sets it by default.
    #[tokio::test]
    async fn clerk_sync_s_sqlite_connections_cascade_an_organization_s_deletion_to_memberships() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pool = super::super::sqlite::connect(
            &dir.path().join("clerk-sync.db"),
            &super::super::PoolSettings::default(),
        )
        .await
        .expect("the store's pool");
        let report = run_sqlite(&pool, &UsersTable::default(), false)
            .await
            .expect("migrations");
        assert_eq!(report.version, ORGANIZATIONS_VERSION);
        // Every connection of the pool, not just the first one.
        let mut connections = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            let mut conn = pool.acquire().await.expect("a connection");
            let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *conn)
                .await
                .expect("PRAGMA foreign_keys");
            assert_eq!(
                on, 1,
                "foreign keys are enforced on clerk-sync's connections"
            );
            connections.push(conn);
        }
        drop(connections);

        sqlx::raw_sql(
            r#"INSERT INTO "organizations" ("id", "name", "updatedAt")
                   VALUES ('org_1', 'One', CURRENT_TIMESTAMP), ('org_2', 'Two', CURRENT_TIMESTAMP);
               INSERT INTO "organization_memberships" ("id", "organizationId", "userId", "role", "updatedAt")
                   VALUES ('orgmem_1', 'org_1', 'user_without_a_row', 'org:admin', CURRENT_TIMESTAMP),
                          ('orgmem_2', 'org_2', 'user_without_a_row', 'org:member', CURRENT_TIMESTAMP);
               DELETE FROM "organizations" WHERE "id" = 'org_1';"#,
        )
        .execute(&pool)
        .await
        .expect("rows, and a deletion");
        let left: Vec<String> =
            sqlx::query_scalar(r#"SELECT "id" FROM "organization_memberships" ORDER BY "id""#)
                .fetch_all(&pool)
                .await
                .expect("memberships");
        assert_eq!(left, ["orgmem_2"]);
        let refused = sqlx::raw_sql(
            r#"INSERT INTO "organization_memberships" ("id", "organizationId", "userId", "role", "updatedAt")
                   VALUES ('orgmem_3', 'org_missing', 'user_1', 'org:member', CURRENT_TIMESTAMP)"#,
        )
        .execute(&pool)
        .await
        .expect_err("no membership without its organization");
        assert!(
            refused
                .to_string()
                .contains("FOREIGN KEY constraint failed"),
            "{refused}"
        );
        pool.close().await;
    }
}
