//! `clerk-sync migrate` on a database that already has the design's table: adopted in one
//! transaction without losing a row, said beforehand with `--dry-run`, refused when unknown.

use std::sync::Arc;

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::{DatabaseTarget, ServeConfig};
use clerk_sync::store::{PoolSettings, Store};
use clerk_sync::sync::DeleteMode;
use sqlx::{Connection, Row};

use crate::cli::{clerk_sync, run, text};
use crate::support::{Backend, TestApp, TestDb, TestSql};

/// The design's recommended model, as Prisma creates it (email required, no deletedAt).
const RECOMMENDED: &str = r#"
CREATE TABLE "users" (
    "id" TEXT NOT NULL, "email" TEXT NOT NULL, "firstName" TEXT, "lastName" TEXT, "name" TEXT,
    "imageUrl" TEXT, "username" TEXT, "clerkCreatedAt" TIMESTAMP(3), "clerkUpdatedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "users_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "users_email_key" ON "users"("email");
CREATE INDEX "users_email_idx" ON "users"("email");
CREATE UNIQUE INDEX "users_username_key" ON "users"("username");
CREATE INDEX "users_username_idx" ON "users"("username");
INSERT INTO "users" ("id", "email", "firstName", "name", "clerkUpdatedAt", "updatedAt")
VALUES ('user_old1', 'one@example.com', 'One', 'One', '2024-05-28 08:00:00', now()),
       ('user_old2', 'two@example.com', 'Two', 'Two', '2024-05-28 08:00:00', now());
"#;

/// The design's older model: Prisma's default table name "User", fewer columns.
const OLDER: &str = r#"
CREATE TABLE "User" (
    "id" TEXT NOT NULL, "email" TEXT NOT NULL, "name" TEXT, "imageUrl" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
    CONSTRAINT "User_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE INDEX "User_email_idx" ON "User"("email");
INSERT INTO "User" ("id", "email", "name", "updatedAt")
VALUES ('user_000001', 'a@example.com', 'Ada Lovelace', now()), ('user_000002', 'b@example.com', 'Bo', now());
"#;

async fn database_with(ddl: &str) -> (Arc<TestDb>, String) {
    let db = Arc::new(TestDb::create(Backend::Postgres).await);
    let DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(ddl).execute(&mut conn).await.unwrap();
    (db, url)
}

async fn email_nullable(url: &str, table: &str) -> Option<bool> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT is_nullable = 'YES' AS n FROM information_schema.columns WHERE table_name = $1 AND column_name = 'email'")
        .bind(table)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .map(|r| r.get("n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_designs_users_table_is_adopted_after_a_dry_run_that_changes_nothing() {
    let (db, url) = database_with(RECOMMENDED).await;
    let dir = tempfile::tempdir().unwrap();
    let dry = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.args(["migrate", "--dry-run"]);
        c
    });
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let out = text(&dry.stdout);
    assert!(
        out.contains("allow NULL in \"email\"")
            && out.contains("add column \"deletedAt\"")
            && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(
        email_nullable(&url, "users").await,
        Some(false),
        "the dry run changed nothing"
    );

    let migrated = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.arg("migrate");
        c
    });
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    assert_eq!(email_nullable(&url, "users").await, Some(true));

    // The service runs on it: old rows are there, a phone-only user can now be stored, and a
    // newer snapshot updates an old row.
    let app = TestApp::spawn_on(db, Backend::Postgres, |_| {}).await;
    assert_eq!(app.users().await.len(), 2);
    let mut phone_only = SampleUser::new("user_phone", 1_716_883_200_000);
    phone_only.email = None;
    assert_eq!(
        app.deliver(&sample::user_created(&phone_only))
            .await
            .outcome(),
        "created"
    );
    let mut newer = SampleUser::new("user_old1", 1_716_883_200_000);
    newer.email = Some("one@example.com".into());
    newer.updated_at = 1_800_000_000_000;
    assert_eq!(
        app.deliver(&sample::user_updated(&newer)).await.outcome(),
        "updated"
    );
    assert_eq!(
        app.user("user_old1").await.unwrap().last_name.as_deref(),
        Some("Lovelace")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_designs_older_user_table_is_moved_to_users_and_backfill_fills_it() {
    use crate::clerk_emulator::ClerkEmulator;
    let (db, url) = database_with(OLDER).await;
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .unwrap();
    let report = store.migrate().await.unwrap();
    assert!(
        report
            .adopted
            .iter()
            .any(|c| c.contains("rename table \"User\" to \"users\"")),
        "{:?}",
        report.adopted
    );
    assert_eq!(
        email_nullable(&url, "User").await,
        None,
        "no User table left"
    );

    let app = TestApp::spawn_on(db, Backend::Postgres, |_| {}).await;
    let rows = app.users().await;
    assert_eq!(rows.len(), 2, "no row lost");
    assert_eq!(rows[0].name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(rows[0].first_name, None);

    // Backfill fills first and last names and usernames from Clerk.
    let clerk = ClerkEmulator::start().await;
    for id in ["user_000001", "user_000002"] {
        let mut user = SampleUser::new(id, 1_716_883_200_000);
        user.email = Some(
            if id.ends_with('1') {
                "a@example.com"
            } else {
                "b@example.com"
            }
            .into(),
        );
        clerk.insert_user(user.to_clerk_json());
    }
    let api = clerk_sync::clerk::api::ClerkApi::new(
        &clerk.base_url(),
        clerk_sync::clerk::api::SecretKey::parse(&clerk.secret_key()).unwrap(),
        Default::default(),
    )
    .unwrap();
    let options = clerk_sync::jobs::backfill::BackfillOptions {
        page_size: 500,
        requests_per_10s: 10_000,
        restart: false,
        quiet: true,
    };
    let report = clerk_sync::jobs::backfill::run(&app.store, &api, &options)
        .await
        .unwrap();
    assert_eq!(report.summary.updated, 2, "{}", report.summary);
    let row = app.user("user_000001").await.unwrap();
    assert_eq!(
        (row.first_name.as_deref(), row.last_name.as_deref()),
        (Some("Ada"), Some("Lovelace"))
    );
    assert!(row.username.is_some());
}

#[tokio::test]
async fn a_table_clerk_sync_does_not_understand_is_refused_untouched() {
    let (db, url) = database_with(r#"CREATE TABLE "users" ("id" INTEGER PRIMARY KEY, "email" TEXT NOT NULL, "role" TEXT, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT now(), "updatedAt" TIMESTAMP(3) NOT NULL)"#).await;
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .unwrap();
    let error = store.migrate().await.unwrap_err().to_string();
    assert!(
        error.contains("column \"id\" is integer, the model has text")
            && error.contains("Nothing was changed"),
        "{error}"
    );
    assert!(
        !error.contains("\"role\""),
        "a nullable column of the app's own is no problem: {error}"
    );
    assert_eq!(email_nullable(&url, "users").await, Some(false));
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let ours: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'clerk_sync'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(ours, 0, "the refused migration left nothing behind");
}

#[tokio::test]
async fn a_differently_named_table_in_another_schema_works_end_to_end() {
    use clerk_sync::store::UsersTable;
    let table = UsersTable::new(Some("app"), "AppUser").unwrap();
    let app = TestApp::spawn_with(Backend::Postgres, move |c| c.users_table = table).await;
    let mut user = SampleUser::new("user_named", 1_716_883_200_000);
    user.email = Some("named@example.com".into());
    assert_eq!(
        app.deliver(&sample::user_created(&user)).await.outcome(),
        "created"
    );
    let (row, _) = app.store.user("user_named").await.unwrap();
    assert_eq!(row.unwrap().email.as_deref(), Some("named@example.com"));

    let DatabaseTarget::Postgres { url } = app.db.target() else {
        unreachable!()
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let indexes: Vec<String> = sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'app' AND tablename = 'AppUser' ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        indexes,
        [
            "AppUser_email_idx",
            "AppUser_email_key",
            "AppUser_pkey",
            "AppUser_username_idx",
            "AppUser_username_key"
        ]
    );
    let public: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(public, 0, "nothing in the default schema");
    // Deletes and the fallback paths use the same table.
    assert_eq!(
        app.deliver(&sample::user_deleted("user_named", 1_716_883_300_000))
            .await
            .outcome(),
        "deleted"
    );
    let left: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "app"."AppUser""#)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_differently_named_sqlite_table_works_and_a_schema_is_refused() {
    use clerk_sync::store::UsersTable;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.users_table = UsersTable::new(None, "members").unwrap()
    })
    .await;
    assert_eq!(
        app.deliver(&sample::user_created(&SampleUser::new(
            "user_m",
            1_716_883_200_000
        )))
        .await
        .outcome(),
        "created"
    );
    assert!(app.store.user("user_m").await.unwrap().0.is_some());
    let db = TestDb::create(Backend::Sqlite).await;
    let error = Store::connect_with(
        &db.target(),
        &PoolSettings::default(),
        UsersTable::new(Some("app"), "members").unwrap(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("SQLite has no schemas"), "{error}");
    assert!(UsersTable::new(None, "users; DROP TABLE x").is_err());
}

/// Columns an app added for itself, with values for the first old row.
const APP_COLUMNS: &str = r#"
ALTER TABLE "users" ADD COLUMN "role" TEXT, ADD COLUMN "plan" TEXT NOT NULL DEFAULT 'free';
UPDATE "users" SET "role" = 'admin', "plan" = 'pro' WHERE "id" = 'user_old1';
UPDATE "users" SET "role" = 'editor' WHERE "id" = 'user_old2';
"#;

/// A column of the app's own, read as text (`None` for NULL; panics when there is no row).
async fn app_value(sql: &TestSql, id: &str, column: &str) -> Option<String> {
    let query = format!(r#"SELECT "{column}" FROM users WHERE id = $1"#);
    match sql {
        TestSql::Postgres(pool) => sqlx::query_scalar(&query).bind(id).fetch_one(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_scalar(&query).bind(id).fetch_one(pool).await,
    }
    .unwrap_or_else(|e| panic!("reading {column} of {id}: {e}"))
}

async fn roles_and_plans(sql: &TestSql, ids: &[&str]) -> Vec<(Option<String>, Option<String>)> {
    let mut values = Vec::new();
    for id in ids {
        values.push((
            app_value(sql, id, "role").await,
            app_value(sql, id, "plan").await,
        ));
    }
    values
}

fn some(value: &str) -> Option<String> {
    Some(value.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_columns_that_allow_null_or_have_a_default_are_adopted_and_never_written() {
    let (db, url) = database_with(&format!("{RECOMMENDED}{APP_COLUMNS}")).await;
    let dir = tempfile::tempdir().unwrap();
    let dry = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.args(["migrate", "--dry-run"]);
        c
    });
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let out = text(&dry.stdout);
    assert!(
        out.contains("keep column \"role\" as the app's own")
            && out.contains("keep column \"plan\" as the app's own")
            && out.contains("add column \"deletedAt\""),
        "{out}"
    );
    let migrated = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.arg("migrate");
        c
    });
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));

    let app = TestApp::spawn_on(db, Backend::Postgres, |_| {}).await;
    let mut newer = SampleUser::new("user_old1", 1_716_883_200_000);
    newer.email = Some("one@example.com".into());
    newer.updated_at = 1_800_000_000_000;
    assert_eq!(
        app.deliver(&sample::user_updated(&newer)).await.outcome(),
        "updated"
    );
    assert_eq!(
        app.user("user_old1").await.unwrap().last_name.as_deref(),
        Some("Lovelace"),
        "the model's columns were written"
    );
    let new = SampleUser::new("user_new", 1_800_000_000_000);
    assert_eq!(
        app.deliver(&sample::user_created(&new)).await.outcome(),
        "created"
    );
    assert_eq!(
        roles_and_plans(app.sql(), &["user_old1", "user_old2", "user_new"]).await,
        [
            (some("admin"), some("pro")),
            (some("editor"), some("free")),
            (None, some("free")),
        ],
        "the app's values are untouched; a new user gets NULL and the default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_columns_keep_their_values_through_backfill_and_reconcile() {
    use crate::clerk_emulator::ClerkEmulator;
    use clerk_sync::clerk::api::{ClerkApi, SecretKey};
    use clerk_sync::jobs::{backfill, reconcile};

    let (db, _) = database_with(&format!("{RECOMMENDED}{APP_COLUMNS}")).await;
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let clerk = ClerkEmulator::start().await;
    let clerk_user = |id: &str, email: &str, updated_at: i64| {
        let mut user = SampleUser::new(id, 1_716_883_200_000);
        user.email = Some(email.into());
        user.updated_at = updated_at;
        user
    };
    // Both newer than the rows, so backfill writes them in one multi-row upsert.
    clerk.insert_users([
        clerk_user("user_old1", "one@example.com", 1_800_000_000_000).to_clerk_json(),
        clerk_user("user_old2", "two@example.com", 1_800_000_000_000).to_clerk_json(),
    ]);
    let api = ClerkApi::new(
        &clerk.base_url(),
        SecretKey::parse(&clerk.secret_key()).unwrap(),
        Default::default(),
    )
    .unwrap();
    let options = backfill::BackfillOptions {
        page_size: 500,
        requests_per_10s: 10_000,
        restart: false,
        quiet: true,
    };
    let report = backfill::run(&store, &api, &options).await.unwrap();
    assert_eq!(report.summary.updated, 2, "{}", report.summary);
    let sql = TestSql::lazy(&db.target());
    assert_eq!(
        roles_and_plans(&sql, &["user_old1", "user_old2"]).await,
        [(some("admin"), some("pro")), (some("editor"), some("free"))],
        "backfill kept the app's values"
    );

    // Lost webhooks: one user changed, the other was deleted. Soft-delete mode keeps the row.
    let mut changed = clerk_user("user_old1", "one@example.com", 1_800_000_100_000);
    changed.last_name = Some("Changed".into());
    clerk.insert_user(changed.to_clerk_json());
    clerk.delete_user("user_old2");
    let options = reconcile::ReconcileOptions {
        dry_run: false,
        allow_mass_delete: true,
        requests_per_10s: 10_000,
        page_size: 100,
        delete_mode: DeleteMode::Soft,
        quiet: true,
    };
    let report = reconcile::run(&store, &api, &options).await.unwrap();
    assert_eq!(
        (report.summary.updated, report.summary.deleted),
        (1, 1),
        "{}",
        report.summary
    );
    let (row, _) = store.user("user_old1").await.unwrap();
    assert_eq!(row.unwrap().last_name.as_deref(), Some("Changed"));
    let (row, _) = store.user("user_old2").await.unwrap();
    assert!(row.unwrap().deleted_at.is_some(), "soft-deleted");
    assert_eq!(
        roles_and_plans(&sql, &["user_old1", "user_old2"]).await,
        [(some("admin"), some("pro")), (some("editor"), some("free"))],
        "reconcile kept the app's values"
    );
}

/// What a failed `clerk-sync migrate` says about a column nothing fills: its name and the fix.
fn names_the_column_and_the_fix(message: &str, column: &str) {
    for needle in [
        format!("\"{column}\" is NOT NULL without a default"),
        format!(r#"ALTER TABLE "users" ALTER COLUMN "{column}" SET DEFAULT"#),
        format!(r#"ALTER TABLE "users" ALTER COLUMN "{column}" DROP NOT NULL"#),
        "then run `clerk-sync migrate` again".into(),
        "Nothing was changed".into(),
    ] {
        assert!(
            message.contains(&needle),
            "{needle:?} missing from: {message}"
        );
    }
}

#[tokio::test]
async fn a_not_null_extra_column_without_a_default_is_refused_naming_it_and_the_fix() {
    let (_db, url) = database_with(&format!(
        r#"{RECOMMENDED}
        ALTER TABLE "users" ADD COLUMN "role" TEXT NOT NULL DEFAULT 'member';
        ALTER TABLE "users" ALTER COLUMN "role" DROP DEFAULT;"#
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let migrate = || {
        run({
            let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
            c.arg("migrate");
            c
        })
    };
    let refused = migrate();
    assert!(!refused.status.success());
    names_the_column_and_the_fix(&text(&refused.stderr), "role");
    assert_eq!(
        email_nullable(&url, "users").await,
        Some(false),
        "the table is untouched"
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let ours: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'clerk_sync'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(ours, 0, "the refused migration left nothing behind");

    // The fix the message gives is enough.
    sqlx::query(r#"ALTER TABLE "users" ALTER COLUMN "role" SET DEFAULT 'member'"#)
        .execute(&mut conn)
        .await
        .unwrap();
    let adopted = migrate();
    assert!(adopted.status.success(), "{}", text(&adopted.stderr));
    assert!(
        text(&adopted.stdout).contains("keep column \"role\""),
        "{}",
        text(&adopted.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_null_column_the_app_adds_later_without_a_default_stops_migrate_and_serve() {
    let db = Arc::new(TestDb::create(Backend::Postgres).await);
    let DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // Columns that fill themselves are fine, however NOT NULL they are.
    sqlx::raw_sql(
        r#"ALTER TABLE users ADD COLUMN tier TEXT NOT NULL DEFAULT 'x';
           ALTER TABLE users ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;"#,
    )
    .execute(&mut conn)
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let app = TestApp::spawn_on(db.clone(), Backend::Postgres, |_| {}).await;
    let user = SampleUser::new("user_tiered", 1_716_883_200_000);
    assert_eq!(
        app.deliver(&sample::user_created(&user)).await.outcome(),
        "created"
    );
    assert_eq!(app_value(app.sql(), "user_tiered", "tier").await, some("x"));

    // A default given for the rows already there, then dropped: new users would fail.
    sqlx::raw_sql(
        r#"ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
           ALTER TABLE users ALTER COLUMN role DROP DEFAULT;"#,
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let error = store.migrate().await.unwrap_err().to_string();
    names_the_column_and_the_fix(&error, "role");
    assert!(!error.contains("tier") && !error.contains("seq"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let refused = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.arg("migrate");
        c
    });
    assert!(!refused.status.success());
    names_the_column_and_the_fix(&text(&refused.stderr), "role");
    let (secret, _) = clerk_sync::webhook::SigningSecret::generate();
    let serve = clerk_sync::app::App::build(&ServeConfig::new(db.target(), vec![secret])).await;
    names_the_column_and_the_fix(&serve.err().expect("serve refuses").to_string(), "role");

    sqlx::query("ALTER TABLE users ALTER COLUMN role DROP NOT NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    store.migrate().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_nullable_column_on_a_sqlite_table_survives_user_updated() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut user = SampleUser::new("user_lite", 1_716_883_200_000);
    assert_eq!(
        app.deliver(&sample::user_created(&user)).await.outcome(),
        "created"
    );
    let TestSql::Sqlite(pool) = app.sql() else {
        unreachable!()
    };
    sqlx::raw_sql(
        r#"ALTER TABLE users ADD COLUMN role TEXT;
           ALTER TABLE users ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';
           UPDATE users SET role = 'admin', plan = 'pro' WHERE id = 'user_lite';"#,
    )
    .execute(pool)
    .await
    .unwrap();
    app.store.migrate().await.unwrap();
    user.updated_at += 1_000;
    user.last_name = Some("Byron".into());
    assert_eq!(
        app.deliver(&sample::user_updated(&user)).await.outcome(),
        "updated"
    );
    assert_eq!(
        app.user("user_lite").await.unwrap().last_name.as_deref(),
        Some("Byron")
    );
    let other = SampleUser::new("user_other", 1_716_883_200_000);
    assert_eq!(
        app.deliver(&sample::user_created(&other)).await.outcome(),
        "created"
    );
    assert_eq!(
        roles_and_plans(app.sql(), &["user_lite", "user_other"]).await,
        [(some("admin"), some("pro")), (None, some("free"))]
    );
}

#[tokio::test]
async fn a_sqlite_table_rebuilt_with_a_not_null_column_without_a_default_stops_migrate() {
    let db = TestDb::create(Backend::Sqlite).await;
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let TestSql::Sqlite(pool) = TestSql::lazy(&db.target()) else {
        unreachable!()
    };
    // How Prisma Migrate changes a SQLite table: a new table, the rows copied, a rename.
    sqlx::raw_sql(
        r#"CREATE TABLE "new_users" (
               "id" TEXT NOT NULL PRIMARY KEY, "email" TEXT, "firstName" TEXT, "lastName" TEXT,
               "name" TEXT, "imageUrl" TEXT, "username" TEXT, "clerkCreatedAt" DATETIME,
               "clerkUpdatedAt" DATETIME, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
               "updatedAt" DATETIME NOT NULL, "deletedAt" DATETIME, "role" TEXT NOT NULL);
           DROP TABLE "users";
           ALTER TABLE "new_users" RENAME TO "users";"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let error = store.migrate().await.unwrap_err().to_string();
    names_the_column_and_the_fix(&error, "role");
}
