//! Apps point their own tables at `users` (Prisma's required relations default to `ON DELETE
//! RESTRICT`). A `user.deleted` that such a foreign key refuses must not be answered 503 for ever:
//! the row stays, for the foreign key's sake, with every personal field erased.

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::sync::DeleteMode;

use crate::support::{TestApp, TestSql, on_both_backends};

const T0: i64 = 1_716_883_200_000;

/// The app's `posts` table, as Prisma creates a required relation to `User`.
const POSTS: &str = r#"CREATE TABLE "posts" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "authorId" TEXT NOT NULL REFERENCES "users"("id") ON DELETE RESTRICT ON UPDATE CASCADE)"#;

async fn execute(app: &TestApp, sql: &str) {
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        TestSql::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The counter's value in the service's `/metrics`.
async fn kept_by_foreign_key(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.body;
    let text = text.as_str().expect("metrics are text");
    text.lines()
        .find_map(|line| line.strip_prefix("clerk_sync_deletes_kept_by_foreign_key_total "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .expect("a number")
}

on_both_backends! {
    async fn hard_delete_refused_by_a_foreign_key_keeps_the_row_with_personal_data_erased(backend) {
        let app = TestApp::spawn(backend).await;
        let author = SampleUser::new("user_author", T0);
        let reader = SampleUser::new("user_reader", T0);
        for user in [&author, &reader] {
            assert_eq!(app.deliver(&sample::user_created(user)).await.outcome(), "created");
        }
        execute(&app, POSTS).await;
        execute(&app, r#"INSERT INTO "posts" ("id", "authorId") VALUES ('post_1', 'user_author')"#).await;
        let before = kept_by_foreign_key(&app).await;

        // Both deletions arrive together, so they may share a transaction: the one the foreign
        // key refuses must not take the other down with it.
        let (author, reader) = (
            sample::user_deleted("user_author", T0 + 1000),
            sample::user_deleted("user_reader", T0 + 1000),
        );
        let (author_deleted, reader_deleted) =
            tokio::join!(app.deliver(&author), app.deliver(&reader));
        assert_eq!((author_deleted.status, author_deleted.outcome()), (200, "deleted"));
        assert_eq!((reader_deleted.status, reader_deleted.outcome()), (200, "deleted"));

        assert!(app.user("user_reader").await.is_none(), "an unreferenced user is removed");
        let row = app.user("user_author").await.expect("the referenced row is kept");
        assert!(row.deleted_at.is_some());
        assert_eq!(
            (row.email, row.first_name, row.last_name, row.name, row.username, row.image_url),
            (None, None, None, None, None, None),
            "nothing personal is left"
        );
        assert!(app.tombstoned("user_author").await);
        assert!(app.inbox().await.iter().all(|e| e.outcome != "failed"));
        assert!(kept_by_foreign_key(&app).await >= before + 1.0);

        // Still deleted for good: a late update does not bring the data back.
        let mut late = SampleUser::new("user_author", T0);
        late.updated_at = T0 + 9000;
        assert_eq!(app.deliver(&sample::user_updated(&late)).await.outcome(), "tombstoned");
        assert_eq!(app.user("user_author").await.unwrap().email, None);
    }

    async fn soft_delete_with_a_foreign_key_keeps_the_row_as_soft_mode_always_does(backend) {
        let app = TestApp::spawn_with(backend, |c| c.delete_mode = DeleteMode::Soft).await;
        let author = SampleUser::new("user_author", T0);
        app.deliver(&sample::user_created(&author)).await;
        execute(&app, POSTS).await;
        execute(&app, r#"INSERT INTO "posts" ("id", "authorId") VALUES ('post_1', 'user_author')"#).await;

        let answer = app.deliver(&sample::user_deleted("user_author", T0 + 1000)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "deleted"));
        let row = app.user("user_author").await.expect("soft mode keeps the row");
        assert!(row.deleted_at.is_some());
        assert_eq!((row.email, row.username), (None, None));
        assert_eq!(row.first_name.as_deref(), Some("Ada"), "soft mode keeps names");
    }
}
