//! Inbox retention: `clerk-sync events prune` and the retention `serve` applies by itself
//! remove old events' rows, never failed ones unless asked, never anything in the users table,
//! and a redelivery of a removed event changes nothing.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::jobs::events::{self, PruneOptions};
use serde_json::json;

use crate::cli::{clerk_sync, run, text};
use crate::support::{TestApp, on_both_backends};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A cut-off after everything delivered so far (`received_at` is the service's clock, in ms).
fn after_everything() -> NaiveDateTime {
    chrono::Utc::now().naive_utc() + chrono::Duration::seconds(1)
}

/// A well-formed event that cannot be applied (user.deleted without a user id): stored as
/// failed.
fn unusable_event() -> String {
    sample::envelope(
        "user.deleted",
        json!({"object": "user", "deleted": true}),
        now_ms(),
    )
    .to_string()
}

fn svix_ids(inbox: &[crate::support::InboxRow]) -> Vec<&str> {
    inbox.iter().map(|e| e.svix_id.as_str()).collect()
}

on_both_backends! {
    async fn pruning_never_changes_the_users_table_and_a_pruned_redelivery_changes_nothing(backend) {
        let app = TestApp::spawn_with(backend, |c| c.inbox_retention = None).await;
        let t = now_ms();
        let mut kept = SampleUser::new(random_id("user"), t);
        let created = sample::user_created(&kept);
        assert_eq!(app.deliver_as("msg_created", &created).await.outcome(), "created");
        kept.first_name = Some("Grace".into());
        kept.updated_at = t + 1_000;
        assert_eq!(app.deliver(&sample::user_updated(&kept)).await.outcome(), "updated");
        let gone = SampleUser::new(random_id("user"), t);
        let gone_created = sample::user_created(&gone);
        assert_eq!(app.deliver_as("msg_gone_created", &gone_created).await.outcome(), "created");
        let deleted = sample::user_deleted(&gone.id, t + 2_000);
        assert_eq!(app.deliver_as("msg_deleted", &deleted).await.outcome(), "deleted");
        let users_before = app.users().await;
        assert_eq!(app.inbox().await.len(), 4);

        let removed = app.store.prune_events(after_everything(), false, 1_000).await.unwrap();

        assert_eq!(removed, 4);
        assert!(app.inbox().await.is_empty());
        assert_eq!(app.users().await, users_before, "pruning touched the users table");
        assert!(app.tombstoned(&gone.id).await, "tombstones are not the inbox's to prune");

        // Svix delivers the removed events again: no longer duplicates, but the rules find the
        // snapshot older than the row, or the user deleted.
        assert_eq!(app.deliver_as("msg_created", &created).await.outcome(), "stale");
        assert_eq!(app.deliver_as("msg_gone_created", &gone_created).await.outcome(), "tombstoned");
        assert_eq!(app.deliver_as("msg_deleted", &deleted).await.outcome(), "tombstoned");
        assert_eq!(app.users().await, users_before, "a pruned event's redelivery changed a row");
        // Stored again, so a further redelivery is a duplicate once more.
        assert_eq!(app.deliver_as("msg_created", &created).await.outcome(), "duplicate");
    }

    async fn prune_removes_only_events_received_before_the_cutoff_and_keeps_failed_ones(backend) {
        let app = TestApp::spawn_with(backend, |c| c.inbox_retention = None).await;
        let old_user = SampleUser::new(random_id("user"), now_ms());
        app.deliver_as("msg_old", &sample::user_created(&old_user)).await;
        assert_eq!(app.deliver_as("msg_old_failed", &unusable_event()).await.outcome(), "failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cutoff = chrono::Utc::now().naive_utc();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let new_user = SampleUser::new(random_id("user"), now_ms());
        app.deliver_as("msg_new", &sample::user_created(&new_user)).await;
        assert_eq!(app.deliver_as("msg_new_failed", &unusable_event()).await.outcome(), "failed");

        assert_eq!(app.store.prunable_event_count(cutoff, false).await.unwrap(), 1);
        assert_eq!(app.store.prunable_event_count(cutoff, true).await.unwrap(), 2);
        assert_eq!(app.store.prune_events(cutoff, false, 1_000).await.unwrap(), 1);
        assert_eq!(
            svix_ids(&app.inbox().await),
            ["msg_old_failed", "msg_new", "msg_new_failed"]
        );
        assert_eq!(app.store.prune_events(cutoff, true, 1_000).await.unwrap(), 1);
        assert_eq!(svix_ids(&app.inbox().await), ["msg_new", "msg_new_failed"]);
        assert_eq!(app.store.inbox_event_count().await.unwrap(), 2);
        assert_eq!(app.users().await.len(), 2);
    }

    async fn prune_deletes_in_bounded_chunks_oldest_first(backend) {
        let app = TestApp::spawn_with(backend, |c| c.inbox_retention = None).await;
        for i in 0..5 {
            let user = SampleUser::new(random_id("user"), now_ms());
            app.deliver_as(&format!("msg_{i}"), &sample::user_created(&user)).await;
            // Distinct `received_at` values (milliseconds), so "oldest" is well defined.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let cutoff = after_everything();

        assert_eq!(app.store.prune_events(cutoff, false, 2).await.unwrap(), 2);
        assert_eq!(svix_ids(&app.inbox().await), ["msg_2", "msg_3", "msg_4"]);
        assert_eq!(app.store.prune_events(cutoff, false, 2).await.unwrap(), 2);
        assert_eq!(app.store.prune_events(cutoff, false, 2).await.unwrap(), 1);
        assert_eq!(app.store.prune_events(cutoff, false, 2).await.unwrap(), 0);
        assert_eq!(app.users().await.len(), 5);
    }

    async fn several_processes_pruning_at_once_remove_each_event_once(backend) {
        let app = TestApp::spawn_with(backend, |c| c.inbox_retention = None).await;
        for _ in 0..30 {
            let user = SampleUser::new(random_id("user"), now_ms());
            app.deliver(&sample::user_created(&user)).await;
        }
        let cutoff = after_everything();
        let pruner = |store: clerk_sync::store::Store| async move {
            let mut removed = 0;
            loop {
                match store.prune_events(cutoff, false, 3).await.unwrap() {
                    0 => return removed,
                    chunk => removed += chunk,
                }
            }
        };
        let (a, b) = tokio::join!(
            tokio::spawn(pruner(app.store.clone())),
            tokio::spawn(pruner(app.store.clone()))
        );
        assert_eq!(a.unwrap() + b.unwrap(), 30);
        assert!(app.inbox().await.is_empty());
        assert_eq!(app.users().await.len(), 30);
    }

    async fn serve_applies_the_inbox_retention_at_start_and_never_to_failed_events(backend) {
        let first = TestApp::spawn_with(backend, |c| c.inbox_retention = None).await;
        let user = SampleUser::new(random_id("user"), now_ms());
        first.deliver_as("msg_applied", &sample::user_created(&user)).await;
        first.deliver_as("msg_failed", &unusable_event()).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;

        // A second process on the same database, keeping events for one second.
        let second = TestApp::spawn_on(first.db.clone(), backend, |c| {
            c.inbox_retention = Some(Duration::from_secs(1));
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while second.inbox().await.len() > 1 {
            assert!(Instant::now() < deadline, "retention did not run: {:?}", second.inbox().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(svix_ids(&second.inbox().await), ["msg_failed"]);
        assert!(second.user(&user.id).await.is_some());
        // Events younger than the retention stay.
        let fresh = SampleUser::new(random_id("user"), now_ms());
        second.deliver_as("msg_fresh", &sample::user_created(&fresh)).await;
        assert_eq!(svix_ids(&second.inbox().await), ["msg_failed", "msg_fresh"]);
    }

    async fn events_prune_command_counts_in_a_dry_run_and_removes_failed_events_only_when_asked(backend) {
        let app = TestApp::spawn_with(backend, |c| c.inbox_retention = None).await;
        let user = SampleUser::new(random_id("user"), now_ms());
        app.deliver_as("msg_applied", &sample::user_created(&user)).await;
        app.deliver_as("msg_failed", &unusable_event()).await;
        let users_before = app.users().await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let database_url = match app.db.target() {
            DatabaseTarget::Postgres { url } => url,
            DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
        };
        let dir = tempfile::tempdir().unwrap();
        let prune = |extra: &[&str]| {
            let mut command = clerk_sync(dir.path(), &[("DATABASE_URL", database_url.as_str())]);
            command.args(["events", "prune", "--older-than", "1s"]).args(extra);
            let output = run(command);
            assert!(output.status.success(), "{}", text(&output.stderr));
            text(&output.stdout)
        };

        let dry_run = prune(&["--dry-run"]);
        assert!(dry_run.contains("would remove 1 event "), "{dry_run}");
        assert!(dry_run.contains("nothing was changed"), "{dry_run}");
        assert_eq!(svix_ids(&app.inbox().await), ["msg_applied", "msg_failed"]);

        let pruned = prune(&[]);
        assert!(pruned.contains("removed 1 event "), "{pruned}");
        assert!(pruned.contains("--include-failed"), "says how to remove failed ones: {pruned}");
        assert_eq!(svix_ids(&app.inbox().await), ["msg_failed"]);

        let with_failed = prune(&["--include-failed"]);
        assert!(with_failed.contains("removed 1 event "), "{with_failed}");
        assert!(app.inbox().await.is_empty());
        assert_eq!(app.users().await, users_before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prune_refuses_a_duration_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = clerk_sync(dir.path(), &[("DATABASE_URL", "sqlite://events.db")]);
    command.args(["events", "prune", "--older-than", "a month"]);
    let output = run(command);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--older-than") && stderr.contains("30m"),
        "{stderr}"
    );
    assert!(!dir.path().join("events.db").exists(), "nothing was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_inbox_retention_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = clerk_sync(dir.path(), &[("CLERK_SYNC_INBOX_RETENTION", "forever")]);
    command.args(["serve", "--print-config"]);
    let output = run(command);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("CLERK_SYNC_INBOX_RETENTION") || stderr.contains("--inbox-retention"),
        "{stderr}"
    );
    assert!(stderr.contains("off"), "{stderr}");

    let mut command = clerk_sync(dir.path(), &[("CLERK_SYNC_INBOX_RETENTION", "off")]);
    command.args(["serve", "--print-config"]);
    let output = run(command);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("off (every event is kept)"));
}

/// The job removes everything in one call, chunk after chunk, and reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_job_reports_what_it_removed() {
    let app = TestApp::spawn_with(crate::support::Backend::Sqlite, |c| {
        c.inbox_retention = None
    })
    .await;
    for _ in 0..3 {
        let user = SampleUser::new(random_id("user"), now_ms());
        app.deliver(&sample::user_created(&user)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let options = PruneOptions {
        older_than: Duration::from_secs(1),
        include_failed: false,
        dry_run: true,
        quiet: true,
    };
    let report = events::prune(&app.store, &options).await.unwrap();
    assert_eq!(report.removed, 3);
    assert_eq!(app.inbox().await.len(), 3);
    let report = events::prune(
        &app.store,
        &PruneOptions {
            dry_run: false,
            ..options
        },
    )
    .await
    .unwrap();
    assert_eq!(report.removed, 3);
    assert!(
        report
            .to_string()
            .starts_with("removed 3 events received before "),
        "{report}"
    );
    assert!(app.inbox().await.is_empty());
}

/// Counting millions of rows on every scrape would scan the table: above the cap, PostgreSQL's
/// own estimate is reported, never less than what was counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_count_on_postgres_is_exact_up_to_the_cap_and_estimated_above() {
    use crate::support::TestSql;
    use clerk_sync::store::INBOX_EXACT_COUNT_UP_TO;
    let app = TestApp::spawn_with(crate::support::Backend::Postgres, |c| {
        c.inbox_retention = None
    })
    .await;
    let TestSql::Postgres(pool) = app.sql() else {
        unreachable!("a PostgreSQL test app")
    };
    let insert = |from: u64, to: u64| {
        sqlx::query(
            "INSERT INTO clerk_sync.inbox (svix_id, event_type, outcome, payload, svix_timestamp,
                                           received_at)
             SELECT 'msg_' || n, 'user.updated', 'updated', '{}', 0, now()
             FROM generate_series($1::bigint, $2::bigint) AS n",
        )
        .bind(from as i64)
        .bind(to as i64)
        .execute(pool)
    };
    insert(1, INBOX_EXACT_COUNT_UP_TO).await.unwrap();
    assert_eq!(
        app.store.inbox_event_count().await.unwrap(),
        INBOX_EXACT_COUNT_UP_TO
    );

    let total = INBOX_EXACT_COUNT_UP_TO + INBOX_EXACT_COUNT_UP_TO / 5;
    insert(INBOX_EXACT_COUNT_UP_TO + 1, total).await.unwrap();
    // Before an ANALYZE the estimate is unknown or stale: what was counted is the floor.
    assert!(app.store.inbox_event_count().await.unwrap() > INBOX_EXACT_COUNT_UP_TO);
    sqlx::query("ANALYZE clerk_sync.inbox")
        .execute(pool)
        .await
        .unwrap();
    let estimated = app.store.inbox_event_count().await.unwrap();
    assert!(
        estimated.abs_diff(total) <= total / 20,
        "estimate {estimated}, rows {total}"
    );
}
