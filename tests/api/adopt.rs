//! `clerk-sync migrate` on a database that already has the design's table: adopted in one
//! transaction without losing a row, said beforehand with `--dry-run`, refused when unknown.

use std::sync::Arc;

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::store::{PoolSettings, Store};
use sqlx::{Connection, Row};

use crate::cli::{clerk_sync, run, text};
use crate::support::{Backend, TestApp, TestDb};

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
    let (db, url) = database_with(r#"CREATE TABLE "users" ("id" TEXT PRIMARY KEY, "email" TEXT NOT NULL, "role" TEXT, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT now(), "updatedAt" TIMESTAMP(3) NOT NULL)"#).await;
    let store = Store::connect(&db.target(), &PoolSettings::default())
        .await
        .unwrap();
    let error = store.migrate().await.unwrap_err().to_string();
    assert!(
        error.contains("\"role\"") && error.contains("Nothing was changed"),
        "{error}"
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
