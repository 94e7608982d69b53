//! A database an earlier clerk-sync wrote keeps working with this one: the rows, the inbox's
//! deduplication, tombstones and failed events all carry over (tests/fixtures/upgrade/ holds
//! what version 0.1.0, schema version 3, left behind).

use std::sync::Arc;

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use sqlx::Connection;

use crate::support::{Backend, TestApp, TestDb, on_both_backends};

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
}
