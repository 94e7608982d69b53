//! A database an earlier clerk-sync wrote keeps working with this one: the rows, the inbox's
//! deduplication, tombstones and failed events all carry over (tests/fixtures/upgrade/ holds
//! what version 0.1.0, schema version 3, left behind). `migrate` adds the organization tables
//! (migration 4) beside them, touching nothing that was there, and refuses, changing nothing, when
//! the app already has a table of those names.

use std::collections::BTreeSet;
use std::sync::Arc;

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::store::{PoolSettings, Store, StoreError};
use sqlx::Connection;

use crate::support::{Backend, TestApp, TestDb, TestSql, on_both_backends};

fn fixture(backend: Backend) -> String {
    let name = match backend {
        Backend::Postgres => "postgres-v3.sql",
        Backend::Sqlite => "sqlite-v3.sql",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A test database holding what the earlier version left.
async fn earlier_database(backend: Backend) -> Arc<TestDb> {
    let db = TestDb::create(backend).await;
    let sql = fixture(backend);
    match db.target() {
        DatabaseTarget::Postgres { url } => {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        }
        DatabaseTarget::Sqlite { path } => {
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        }
    }
    Arc::new(db)
}

/// Everything in a database, as text: each object's definition (tables' columns and
/// constraints, indexes, on PostgreSQL in the `public` and `clerk_sync` schemas) and each table's
/// rows, sorted. Equal snapshots mean nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// One line per object or column: "relation public.users r", "column public.users.email ...".
    schema: BTreeSet<String>,
    /// (table, its rows as text, sorted)
    rows: Vec<(String, Vec<String>)>,
}

impl Snapshot {
    async fn take(sql: &TestSql) -> Snapshot {
        match sql {
            TestSql::Postgres(pool) => {
                let mut schema: Vec<String> = sqlx::query_scalar(
                    "SELECT format('relation %s.%s %s %s', n.nspname, c.relname, c.relkind,
                                   coalesce(pg_get_indexdef(c.oid), ''))
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname IN ('public', 'clerk_sync')
                     UNION ALL
                     SELECT format('column %s.%s.%s %s %s %s', table_schema, table_name,
                                   column_name, data_type, is_nullable, column_default)
                     FROM information_schema.columns
                     WHERE table_schema IN ('public', 'clerk_sync')
                     UNION ALL
                     SELECT format('constraint %s %s %s', conrelid::regclass, conname,
                                   pg_get_constraintdef(c.oid))
                     FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                     WHERE n.nspname IN ('public', 'clerk_sync')",
                )
                .fetch_all(pool)
                .await
                .expect("the catalog");
                schema.sort();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
                     WHERE table_schema IN ('public', 'clerk_sync') ORDER BY 1",
                )
                .fetch_all(pool)
                .await
                .expect("the tables");
                let mut rows = Vec::new();
                for table in tables {
                    let text: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT t::text FROM {table} t ORDER BY 1"))
                            .fetch_all(pool)
                            .await
                            .unwrap_or_else(|e| panic!("rows of {table}: {e}"));
                    rows.push((table, text));
                }
                Snapshot {
                    schema: schema.into_iter().collect(),
                    rows,
                }
            }
            TestSql::Sqlite(pool) => {
                let schema: Vec<String> = sqlx::query_scalar(
                    "SELECT format('%s %s on %s: %s', type, name, tbl_name, coalesce(sql, ''))
                     FROM sqlite_master",
                )
                .fetch_all(pool)
                .await
                .expect("sqlite_master");
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                )
                .fetch_all(pool)
                .await
                .expect("the tables");
                let mut rows = Vec::new();
                for table in tables {
                    let columns: Vec<String> = sqlx::query_scalar(
                        "SELECT format('\"%w\"', name) FROM pragma_table_info($1)",
                    )
                    .bind(&table)
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("columns of {table}: {e}"));
                    let text: Vec<String> = sqlx::query_scalar(&format!(
                        "SELECT json_array({}) FROM \"{table}\" ORDER BY 1",
                        columns.join(", ")
                    ))
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("rows of {table}: {e}"));
                    rows.push((table, text));
                }
                Snapshot {
                    schema: schema.into_iter().collect(),
                    rows,
                }
            }
        }
    }

    fn rows_of(&self, table: &str) -> &[String] {
        self.rows
            .iter()
            .find_map(|(t, rows)| (t == table).then_some(rows.as_slice()))
            .unwrap_or_else(|| panic!("no table {table} in the snapshot"))
    }
}

async fn execute(sql: &TestSql, statement: &str) -> Result<(), String> {
    match sql {
        TestSql::Postgres(pool) => sqlx::raw_sql(statement).execute(pool).await.map(drop),
        TestSql::Sqlite(pool) => sqlx::raw_sql(statement).execute(pool).await.map(drop),
    }
    .map_err(|e| e.to_string())
}

async fn count(sql: &TestSql, query: &str) -> i64 {
    match sql {
        TestSql::Postgres(pool) => sqlx::query_scalar(query).fetch_one(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_scalar(query).fetch_one(pool).await,
    }
    .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// clerk-sync's `migrate` (what `clerk-sync migrate` and `serve` run) on `db`.
async fn migrate(db: &TestDb) -> Result<clerk_sync::store::MigrationReport, StoreError> {
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .expect("the store opens");
    let report = store.migrate().await;
    store.close().await;
    report
}

on_both_backends! {
    async fn a_database_written_by_version_0_1_keeps_working(backend) {
        let db = earlier_database(backend).await;
        let app = TestApp::spawn_on(db, backend, |_| {}).await;

        let ada = app.user("user_2upgradeAda").await.expect("the earlier row is read");
        assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
        assert_eq!(ada.first_name.as_deref(), Some("Augusta"));
        let phone = app.user("user_2upgradePhone").await.unwrap();
        assert_eq!((phone.email, phone.username.as_deref()), (None, Some("phoneonly")));

        // The inbox still deduplicates what was delivered before the upgrade.
        let late = SampleUser::new("user_2upgradeAda", 1_000);
        let answer = app.deliver_as("msg_upgrade_3", &sample::user_updated(&late)).await;
        assert_eq!(answer.outcome(), "duplicate");
        // Tombstones still hold.
        let gone = SampleUser::new("user_2upgradeGone", chrono::Utc::now().timestamp_millis());
        assert_eq!(app.deliver(&sample::user_created(&gone)).await.outcome(), "tombstoned");
        // Failed events are still there to replay.
        let failed = app.store.stored_events(true, 10).await.unwrap();
        assert!(failed.iter().any(|e| e.svix_id == "msg_upgrade_7"), "{failed:?}");

        // And new events apply by the same rules.
        let mut newer = SampleUser::new("user_2upgradeAda", chrono::Utc::now().timestamp_millis());
        newer.email = Some("ada@example.com".into());
        newer.first_name = Some("Ada".into());
        assert_eq!(app.deliver(&sample::user_updated(&newer)).await.outcome(), "updated");
        let after = app.user("user_2upgradeAda").await.unwrap();
        assert_eq!(after.first_name.as_deref(), Some("Ada"));
        assert_eq!(after.created_at, ada.created_at, "the row was updated, not replaced");
        let deleted = sample::user_deleted("user_2upgradePhone", chrono::Utc::now().timestamp_millis());
        assert_eq!(app.deliver(&deleted).await.outcome(), "deleted");
    }

    async fn migrate_adds_the_organization_tables_to_a_version_3_database_and_touches_nothing_else(backend) {
        let db = earlier_database(backend).await;
        let sql = TestSql::lazy(&db.target());
        let before = Snapshot::take(&sql).await;

        let report = migrate(&db).await.expect("migrate");
        assert_eq!(report.applied, [(4, "organizations and memberships")]);
        assert_eq!(report.version, 4);
        let after = Snapshot::take(&sql).await;

        // Every object that was there is there as it was, and every row of every table that was
        // there too (the migrations table gains version 4's row, and only that).
        let gone: Vec<&String> = before.schema.difference(&after.schema).collect();
        assert!(gone.is_empty(), "changed or removed by the migration: {gone:#?}");
        let migrations = match backend {
            Backend::Postgres => "clerk_sync.migrations",
            Backend::Sqlite => "clerk_sync_migrations",
        };
        for (table, rows) in &before.rows {
            if table == migrations {
                let after = after.rows_of(table);
                assert_eq!(&after[..rows.len()], rows.as_slice(), "versions 1 to 3 as they were");
                assert_eq!(after.len(), rows.len() + 1, "one version more: {after:?}");
                assert!(after[rows.len()].contains("organizations and memberships"), "{after:?}");
            } else {
                assert_eq!(after.rows_of(table), rows.as_slice(), "the rows of {table}");
            }
        }
        assert!(
            before.rows.iter().map(|(_, rows)| rows.len()).sum::<usize>() > 10,
            "the fixture has rows to keep: {before:?}"
        );

        // What is new: the two app tables with their indexes, and clerk-sync's two tombstone
        // tables; all empty.
        let new: Vec<&String> = after.schema.difference(&before.schema).collect();
        let new_objects: BTreeSet<String> = new
            .iter()
            .filter_map(|line| match backend {
                Backend::Postgres => line
                    .strip_prefix("relation ")
                    .map(|rest| rest.split(' ').take(2).collect::<Vec<_>>().join(" ")),
                // Named objects only: SQLite's own indexes for the primary keys are
                // sqlite_autoindex_*.
                Backend::Sqlite => Some(line.split(' ').take(2).collect::<Vec<_>>().join(" "))
                    .filter(|name| !name.contains("sqlite_autoindex_")),
            })
            .collect();
        let expected: &[&str] = match backend {
            Backend::Postgres => &[
                "clerk_sync.membership_tombstones r",
                "clerk_sync.membership_tombstones_pkey i",
                "clerk_sync.organization_tombstones r",
                "clerk_sync.organization_tombstones_pkey i",
                "public.organization_memberships r",
                "public.organization_memberships_organizationId_userId_key i",
                "public.organization_memberships_pkey i",
                "public.organization_memberships_userId_idx i",
                "public.organizations r",
                "public.organizations_pkey i",
                "public.organizations_slug_key i",
            ],
            Backend::Sqlite => &[
                "index organization_memberships_organizationId_userId_key",
                "index organization_memberships_userId_idx",
                "index organizations_slug_key",
                "table clerk_sync_membership_tombstones",
                "table clerk_sync_organization_tombstones",
                "table organization_memberships",
                "table organizations",
            ],
        };
        assert_eq!(
            new_objects,
            expected.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            "new objects; all new catalog lines: {new:#?}"
        );
        for (table, rows) in &after.rows {
            if !before.rows.iter().any(|(t, _)| t == table) {
                assert!(rows.is_empty(), "{table} starts empty: {rows:?}");
            }
        }

        // Again: nothing to do.
        let again = migrate(&db).await.expect("migrate again");
        assert_eq!((again.applied.len(), again.version), (0, 4));
        assert_eq!(Snapshot::take(&sql).await, after);

        // The new tables as the organization sync uses them: a membership needs its
        // organization but not its user (no foreign key to users: it may arrive first), and goes
        // with its organization's row. (SQLite enforces it only on connections with
        // PRAGMA foreign_keys on, which sqlx sets on every connection it opens, the tests' as
        // clerk-sync's.)
        if let TestSql::Sqlite(pool) = &sql {
            let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.unwrap();
            assert_eq!(on, 1, "sqlx turns foreign keys on");
        }
        let organizations = r#"INSERT INTO organizations ("id", "name", "slug", "updatedAt") VALUES
            ('org_2upgrade', 'Upgraded', 'upgraded', CURRENT_TIMESTAMP),
            ('org_2other', 'Other', NULL, CURRENT_TIMESTAMP)"#;
        execute(&sql, organizations).await.expect("organizations insert");
        let memberships = r#"INSERT INTO organization_memberships
            ("id", "organizationId", "userId", "role", "updatedAt") VALUES
            ('orgmem_2ada', 'org_2upgrade', 'user_2upgradeAda', 'org:admin', CURRENT_TIMESTAMP),
            ('orgmem_2early', 'org_2upgrade', 'user_2notYetSynced', 'org:member', CURRENT_TIMESTAMP),
            ('orgmem_2adaOther', 'org_2other', 'user_2upgradeAda', 'org:member', CURRENT_TIMESTAMP)"#;
        execute(&sql, memberships).await.expect("memberships insert, one of a user with no row");
        let orphan = r#"INSERT INTO organization_memberships
            ("id", "organizationId", "userId", "role", "updatedAt")
            VALUES ('orgmem_2orphan', 'org_2missing', 'user_2upgradeAda', 'org:member', CURRENT_TIMESTAMP)"#;
        let refused = execute(&sql, orphan).await.expect_err("no membership without its organization");
        assert!(refused.to_lowercase().contains("foreign key"), "{refused}");
        let twice = r#"INSERT INTO organization_memberships
            ("id", "organizationId", "userId", "role", "updatedAt")
            VALUES ('orgmem_2twice', 'org_2upgrade', 'user_2upgradeAda', 'org:member', CURRENT_TIMESTAMP)"#;
        let refused = execute(&sql, twice).await.expect_err("one membership per organization and user");
        assert!(refused.contains("organization_memberships_organizationId_userId_key") || refused.contains("UNIQUE"), "{refused}");

        execute(&sql, "DELETE FROM organizations WHERE id = 'org_2upgrade'").await.unwrap();
        let left: Vec<String> = match &sql {
            TestSql::Postgres(pool) => sqlx::query_scalar("SELECT id FROM organization_memberships ORDER BY id").fetch_all(pool).await,
            TestSql::Sqlite(pool) => sqlx::query_scalar("SELECT id FROM organization_memberships ORDER BY id").fetch_all(pool).await,
        }
        .unwrap();
        assert_eq!(left, ["orgmem_2adaOther"], "the deleted organization's memberships went with it");
        assert_eq!(count(&sql, "SELECT count(*) FROM users WHERE id = 'user_2upgradeAda'").await, 1, "users stay");

        // clerk-sync's bookkeeping takes its rows.
        let ns = match backend {
            Backend::Postgres => "clerk_sync.",
            Backend::Sqlite => "clerk_sync_",
        };
        execute(&sql, &format!(
            "INSERT INTO {ns}organization_tombstones (organization_id, deleted_at) VALUES ('org_2upgrade', CURRENT_TIMESTAMP);
             INSERT INTO {ns}membership_tombstones (membership_id, deleted_at_ms, organization_id, user_id, recorded_at)
             VALUES ('orgmem_2ada', 1716883200123, 'org_2upgrade', 'user_2upgradeAda', CURRENT_TIMESTAMP)"
        )).await.expect("tombstones insert");
        assert_eq!(count(&sql, &format!("SELECT deleted_at_ms FROM {ns}membership_tombstones")).await, 1_716_883_200_123);
    }

    async fn migrate_refuses_an_app_s_own_organization_tables_and_changes_nothing(backend) {
        // The app's own table of each name (SQLite does not tell "Organizations" from
        // "organizations"), and an index of the app's that has the name of one of ours.
        let mut cases = vec![
            ("organizations", r#"CREATE TABLE "organizations" ("id" TEXT PRIMARY KEY, "title" TEXT NOT NULL);
                INSERT INTO "organizations" VALUES ('team_1', 'The app''s own')"#),
            ("organization_memberships", r#"CREATE TABLE "organization_memberships" ("teamId" TEXT, "memberId" TEXT);
                INSERT INTO "organization_memberships" VALUES ('team_1', 'user_2upgradeAda')"#),
        ];
        if backend == Backend::Sqlite {
            cases.push(("Organizations", r#"CREATE TABLE "Organizations" ("id" TEXT PRIMARY KEY)"#));
        }
        for (table, create) in cases {
            let db = earlier_database(backend).await;
            let sql = TestSql::lazy(&db.target());
            execute(&sql, create).await.unwrap();
            let before = Snapshot::take(&sql).await;

            for dry_run in [true, false] {
                let store = Store::connect(&db.target(), &PoolSettings::default()).await.unwrap();
                let result = if dry_run { store.migrate_dry_run().await } else { store.migrate().await };
                store.close().await;
                let Err(StoreError::Setup(message)) = result else {
                    panic!("migrate (dry run: {dry_run}) with the app's {table}: {result:?}");
                };
                assert!(message.contains(&format!("table \"{table}\"")), "names the table: {message}");
                assert!(message.contains("adopting existing organization tables is not supported"), "{message}");
                assert!(message.contains("migration 4 (organizations and memberships)"), "{message}");
                assert!(message.contains("Nothing was changed"), "{message}");
                let other = if table.eq_ignore_ascii_case("organizations") { "organization_memberships" } else { "organizations" };
                assert!(!message.contains(&format!("table \"{other}\"")), "names only the app's: {message}");
            }
            assert_eq!(Snapshot::take(&sql).await, before, "with the app's {table}: nothing changed");
        }

        // An index of the app's named as one of the new ones: migration 4's statement fails, the
        // hint names it, and everything rolls back.
        let db = earlier_database(backend).await;
        let sql = TestSql::lazy(&db.target());
        execute(&sql, r#"CREATE INDEX "organizations_slug_key" ON users ("username")"#).await.unwrap();
        let before = Snapshot::take(&sql).await;
        let result = migrate(&db).await;
        let Err(StoreError::Setup(message)) = result else {
            panic!("migrate with the app's index organizations_slug_key: {result:?}");
        };
        assert!(message.starts_with("migration 4 (organizations and memberships) failed"), "{message}");
        assert!(message.contains("hint: the database already has \"organizations_slug_key\""), "{message}");
        assert!(message.contains("adopting existing organization tables is not supported"), "{message}");
        assert_eq!(Snapshot::take(&sql).await, before, "nothing changed");
    }
}
