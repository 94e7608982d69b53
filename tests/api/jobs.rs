//! Backfill, reconciliation, scheduled reconciliation and replay, against the Clerk emulator
//! and a real database.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clerk_sync::clerk::api::{ClerkApi, RetryPolicy, SecretKey};
use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::{ClerkSettings, DatabaseTarget};
use clerk_sync::jobs::backfill::{self, BackfillOptions};
use clerk_sync::jobs::reconcile::{self, Action, ReconcileOptions};
use clerk_sync::jobs::{JobError, events};
use clerk_sync::store::Store;
use clerk_sync::sync::DeleteMode;
use serde_json::json;

use crate::clerk_emulator::ClerkEmulator;
use crate::cli::{clerk_sync, run, text};
use crate::support::{Backend, TestApp, TestSql, on_both_backends};

const T: i64 = 1_716_883_200_000;
const NAMES: [&str; 5] = ["Ada", "Zoë", "山田", "Łukasz", "Grace"];

pub(crate) fn retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(10),
    }
}

pub(crate) fn api(clerk: &ClerkEmulator) -> ClerkApi {
    ClerkApi::new(
        &clerk.base_url(),
        SecretKey::parse(&clerk.secret_key()).unwrap(),
        retries(),
    )
    .unwrap()
}

/// Users `user_000000`.. created one millisecond apart, some without email, names in several
/// scripts.
fn clerk_users(count: usize, updated_at: i64) -> Vec<SampleUser> {
    (0..count)
        .map(|n| {
            let mut user = SampleUser::new(format!("user_{n:06}"), T - 1_000_000 + n as i64);
            user.updated_at = updated_at;
            user.first_name = Some(NAMES[n % NAMES.len()].to_string());
            if n % 7 == 0 {
                user.email = None;
            }
            user
        })
        .collect()
}

fn seed(clerk: &ClerkEmulator, users: &[SampleUser]) {
    clerk.insert_users(users.iter().map(SampleUser::to_clerk_json));
}

fn backfill_options(page_size: u32) -> BackfillOptions {
    BackfillOptions {
        page_size,
        requests_per_10s: 10_000,
        restart: false,
        quiet: true,
    }
}

fn reconcile_options(dry_run: bool) -> ReconcileOptions {
    ReconcileOptions {
        dry_run,
        allow_mass_delete: false,
        requests_per_10s: 10_000,
        page_size: 100,
        delete_mode: DeleteMode::Hard,
        quiet: true,
    }
}

fn list_cursors(clerk: &ClerkEmulator) -> Vec<Option<String>> {
    clerk
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/users")
        .map(|r| {
            url::form_urlencoded::parse(r.query.as_bytes())
                .find(|(k, _)| k == "starting_after")
                .map(|(_, v)| v.into_owned())
        })
        .collect()
}

on_both_backends! {
    async fn backfill_imports_every_user_into_an_empty_table_and_a_second_run_changes_nothing(backend) {
        let clerk = ClerkEmulator::start().await;
        let users = clerk_users(1203, T);
        seed(&clerk, &users);
        let app = TestApp::spawn(backend).await;

        let report = backfill::run(&app.store, &api(&clerk), &backfill_options(500)).await.unwrap();
        assert_eq!(report.summary.created, 1203, "{}", report.summary);
        assert_eq!(report.pages, 3);
        let rows = app.users().await;
        assert_eq!(rows.len(), 1203);
        let no_email = rows.iter().find(|r| r.id == "user_000007").unwrap();
        assert_eq!(no_email.email, None);
        let intl = rows.iter().find(|r| r.id == "user_000002").unwrap();
        assert_eq!(intl.first_name.as_deref(), Some("山田"));
        assert_eq!(list_cursors(&clerk).len(), 3, "500 at a time, one request per page");

        let before = app.user("user_000500").await.unwrap();
        let again = backfill::run(&app.store, &api(&clerk), &backfill_options(500)).await.unwrap();
        assert_eq!(again.summary.unchanged, 1203, "{}", again.summary);
        assert_eq!(app.user("user_000500").await.unwrap(), before, "not even updatedAt moves");
        assert_eq!(app.store.state("backfill").await.unwrap(), None, "no checkpoint after a complete run");
    }

    async fn backfill_never_overwrites_newer_webhooks_nor_brings_back_deleted_users(backend) {
        let clerk = ClerkEmulator::start().await;
        let users = clerk_users(1000, T);
        seed(&clerk, &users);
        clerk.set_latency(Duration::from_millis(30));
        let app = TestApp::spawn(backend).await;

        let webhooks = async {
            for (n, user) in users.iter().enumerate().take(150) {
                if n < 100 {
                    let mut newer = user.clone();
                    newer.updated_at = T + 5_000;
                    newer.first_name = Some("FromWebhook".into());
                    app.deliver(&sample::user_updated(&newer)).await;
                } else {
                    app.deliver(&sample::user_deleted(&user.id, T + 5_000)).await;
                }
            }
        };
        let (options, client) = (backfill_options(100), api(&clerk));
        let (report, ()) = tokio::join!(backfill::run(&app.store, &client, &options), webhooks);
        report.unwrap();

        let rows = app.users().await;
        assert_eq!(rows.len(), 950);
        for row in &rows {
            let n: usize = row.id[5..].parse().unwrap();
            if n < 100 {
                assert_eq!(row.first_name.as_deref(), Some("FromWebhook"), "{}", row.id);
            } else {
                assert!(n >= 150, "{} was deleted and must stay deleted", row.id);
                assert_eq!(row.first_name.as_deref(), Some(NAMES[n % NAMES.len()]));
            }
        }
    }

    async fn backfill_resumes_after_an_interruption_without_refetching_committed_pages(backend) {
        let clerk = ClerkEmulator::start().await;
        seed(&clerk, &clerk_users(1000, T));
        let app = TestApp::spawn(backend).await;
        // The count and four pages go through; then Clerk fails every attempt at the fifth.
        clerk.pass_next(5);
        clerk.fail_next(retries().attempts as usize, 500);
        let error = backfill::run(&app.store, &api(&clerk), &backfill_options(100)).await.unwrap_err();
        assert!(matches!(error, JobError::Clerk(_)), "{error}");
        assert_eq!(app.users().await.len(), 400, "four committed pages");
        let cursors_before = list_cursors(&clerk).len();

        // Clerk is back; a new run continues after user_000399.
        let report = backfill::run(&app.store, &api(&clerk), &backfill_options(100)).await.unwrap();
        assert_eq!(report.resumed_after.as_deref(), Some("user_000399"));
        assert_eq!(report.summary.created, 600, "{}", report.summary);
        let cursors = list_cursors(&clerk);
        let resumed: Vec<&Option<String>> = cursors[cursors_before..].iter().filter(|c| c.is_some()).collect();
        assert_eq!(resumed.first().map(|c| c.as_deref()), Some(Some("user_000399")), "{cursors:?}");
        assert!(!cursors[cursors_before..].contains(&None), "the first pages are not fetched again: {cursors:?}");
        let ids: HashSet<String> = app.users().await.into_iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 1000, "no user lost or duplicated");
    }

    async fn reconcile_finds_each_kind_of_drift_and_a_dry_run_changes_nothing(backend) {
        let clerk = ClerkEmulator::start().await;
        let users = clerk_users(300, T);
        seed(&clerk, &users);
        let app = TestApp::spawn(backend).await;
        backfill::run(&app.store, &api(&clerk), &backfill_options(500)).await.unwrap();

        // While webhooks were lost: a user signed up, one changed, one was deleted.
        let mut newcomer = SampleUser::new("user_newcomer", T + 10);
        newcomer.updated_at = T + 10;
        clerk.insert_user(newcomer.to_clerk_json());
        let mut changed = users[10].clone();
        changed.updated_at = T + 20;
        changed.last_name = Some("Changed".into());
        clerk.insert_user(changed.to_clerk_json());
        clerk.delete_user(&users[20].id);

        let before = app.users().await;
        let dry = reconcile::run(&app.store, &api(&clerk), &reconcile_options(true)).await.unwrap();
        assert_eq!(app.users().await, before, "a dry run changes nothing");
        let drift: Vec<(Action, &str)> = dry.drift.iter().map(|d| (d.action, d.user_id.as_str())).collect();
        assert!(drift.contains(&(Action::Create, "user_newcomer")), "{drift:?}");
        assert!(drift.contains(&(Action::Update, users[10].id.as_str())), "{drift:?}");
        assert!(drift.contains(&(Action::Delete, users[20].id.as_str())), "{drift:?}");
        assert_eq!(drift.len(), 3, "{drift:?}");
        let table = dry.table();
        assert!(table.contains("ACTION") && table.contains("user_newcomer") && table.contains("no longer exists in Clerk"), "{table}");
        assert_eq!((dry.summary.created, dry.summary.updated, dry.summary.deleted, dry.summary.unchanged), (1, 1, 1, 298));

        let real = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false)).await.unwrap();
        assert_eq!(real.drift, dry.drift, "the run does what the dry run said");
        assert!(app.user("user_newcomer").await.is_some());
        assert_eq!(app.user(&users[10].id).await.unwrap().last_name.as_deref(), Some("Changed"));
        assert!(app.user(&users[20].id).await.is_none());
        assert!(app.tombstoned(&users[20].id).await, "deleted with a tombstone");
        // The deleted user's late webhook cannot bring it back.
        assert_eq!(app.deliver(&sample::user_updated(&users[20])).await.outcome(), "tombstoned");

        let clean = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false)).await.unwrap();
        assert!(clean.drift.is_empty(), "{:?}", clean.drift);
    }

    async fn a_killed_backfill_process_continues_where_it_stopped(backend) {
        let clerk = ClerkEmulator::start().await;
        seed(&clerk, &clerk_users(1500, T));
        clerk.set_latency(Duration::from_millis(60));
        let app = TestApp::spawn(backend).await;
        let url = database_url(&app);
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("CLERK_SECRET_KEY", &clerk.secret_key()),
            ("CLERK_API_URL", &clerk.base_url()),
        ];
        let mut command = clerk_sync(dir.path(), &env);
        command.args(["backfill", "--page-size", "100", "--quiet"]);
        let mut child = command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.users().await.len() < 300 {
            assert!(Instant::now() < deadline, "the backfill made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL: no cleanup, no goodbye
        child.wait().unwrap();
        let committed = app.users().await.len();
        assert!(committed < 1500, "killed before the end ({committed})");
        assert_eq!(committed % 100, 0, "pages land whole: {committed}");
        let checkpoint = app.store.state("backfill").await.unwrap().expect("a checkpoint");
        // The killed run's lease is still there; it expires, or the same command with the
        // lease gone... here we wait for nothing: take it over by clearing the stale lease.
        clear_leases(&app.store).await;

        clerk.set_latency(Duration::ZERO);
        let cursors_before = list_cursors(&clerk).len();
        let mut again = clerk_sync(dir.path(), &env);
        again.args(["backfill", "--page-size", "100", "--quiet"]);
        let output = run(again);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(text(&output.stdout).contains("resumed after"), "{}", text(&output.stdout));
        let cursor: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
        let first_resumed = list_cursors(&clerk)[cursors_before].clone();
        assert_eq!(first_resumed.as_deref(), cursor["cursor"].as_str());
        assert_eq!(app.users().await.len(), 1500, "no user lost");
    }
}

fn database_url(app: &TestApp) -> String {
    match app.db.target() {
        DatabaseTarget::Postgres { url } => url,
        DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
    }
}

async fn clear_leases(store: &Store) {
    // Only tests do this: in production a dead holder's lease expires after two minutes.
    let holder = store.lease_holder("backfill").await.unwrap().unwrap();
    store.release_lease("backfill", &holder).await.unwrap();
}

#[tokio::test]
async fn backfill_rides_out_429_storms_and_keeps_to_its_request_budget() {
    let clerk = ClerkEmulator::start().await;
    seed(&clerk, &clerk_users(400, T));
    let app = TestApp::spawn(Backend::Sqlite).await;
    clerk.pass_next(2);
    clerk.rate_limit_next(4, 1);
    let started = Instant::now();
    let options = BackfillOptions {
        requests_per_10s: 40, // one request every 250 ms
        ..backfill_options(100)
    };
    let report = backfill::run(&app.store, &api(&clerk), &options)
        .await
        .unwrap();
    assert_eq!(report.summary.created, 400, "{}", report.summary);
    let elapsed = started.elapsed();
    // Five list requests at 250 ms spacing, plus the 429 waits.
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    let rate_limited = clerk.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(rate_limited, 4);
}

#[tokio::test]
async fn reconcile_never_deletes_after_an_incomplete_listing() {
    let clerk = ClerkEmulator::start().await;
    let users = clerk_users(300, T);
    seed(&clerk, &users[..100]);
    let app = TestApp::spawn(Backend::Sqlite).await;
    for user in &users {
        app.deliver(&sample::user_created(user)).await;
    }
    // Clerk's listing breaks after the count and the first page: 200 rows look "missing".
    clerk.pass_next(2);
    clerk.fail_next(100, 503);
    let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false))
        .await
        .unwrap_err();
    assert!(matches!(error, JobError::Clerk(_)), "{error}");
    assert_eq!(app.users().await.len(), 300, "nothing deleted");
}

#[tokio::test]
async fn reconcile_refuses_to_empty_the_table_unless_asked() {
    let clerk = ClerkEmulator::start().await;
    let users = clerk_users(40, T);
    seed(&clerk, &users[..2]);
    let app = TestApp::spawn(Backend::Sqlite).await;
    for user in &users {
        app.deliver(&sample::user_created(user)).await;
    }
    let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--allow-mass-delete"), "{error}");
    assert_eq!(app.users().await.len(), 40);
    let options = ReconcileOptions {
        allow_mass_delete: true,
        ..reconcile_options(false)
    };
    let report = reconcile::run(&app.store, &api(&clerk), &options)
        .await
        .unwrap();
    assert_eq!(report.summary.deleted, 38);
    assert_eq!(app.users().await.len(), 2);
}

#[tokio::test]
async fn two_reconcilers_at_once_only_one_works() {
    let clerk = ClerkEmulator::start().await;
    seed(&clerk, &clerk_users(50, T));
    clerk.set_latency(Duration::from_millis(100));
    let app = TestApp::spawn(Backend::Postgres).await;
    let other = Store::connect(&app.db.target(), &Default::default())
        .await
        .unwrap();
    let (options, client) = (reconcile_options(false), api(&clerk));
    let (a, b) = tokio::join!(
        reconcile::run(&app.store, &client, &options),
        reconcile::run(&other, &client, &options),
    );
    let held = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(JobError::LeaseHeld { .. })))
        .count();
    let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!((ok, held), (1, 1), "{a:?} {b:?}");
    // Once the first finished, the lease is free again.
    reconcile::run(&other, &api(&clerk), &reconcile_options(true))
        .await
        .unwrap();
}

#[tokio::test]
async fn serve_runs_reconciliation_on_a_schedule() {
    let clerk = ClerkEmulator::start().await;
    seed(&clerk, &clerk_users(120, T));
    let settings = ClerkSettings {
        retry: retries(),
        ..ClerkSettings::from_values(
            Some(&clerk.base_url()),
            Some(&clerk.secret_key()),
            None,
            None,
            None,
            false,
        )
        .unwrap()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.clerk = settings;
        c.reconcile_every = Some(Duration::from_millis(300));
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.users().await.len() < 120 {
        assert!(
            Instant::now() < deadline,
            "no scheduled reconciliation happened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn replay_applies_stored_events_by_the_same_rules_as_their_first_delivery() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut user = SampleUser::new("user_replay", T);
    user.updated_at = T;
    app.deliver_as("msg_created", &sample::user_created(&user))
        .await;
    let mut newer = user.clone();
    newer.updated_at = T + 100;
    newer.first_name = Some("Newer".into());
    app.deliver_as("msg_newer", &sample::user_updated(&newer))
        .await;

    // An old event replayed is stale, as it would be on a late redelivery.
    assert_eq!(
        app.store
            .replay("msg_created", DeleteMode::Hard)
            .await
            .unwrap(),
        Some(clerk_sync::sync::Outcome::Stale)
    );
    assert_eq!(
        app.user("user_replay").await.unwrap().first_name.as_deref(),
        Some("Newer")
    );

    // A failed event (no updated_at)...
    let mut data = SampleUser::new("user_fixed", T).to_clerk_json();
    data.as_object_mut().unwrap().remove("updated_at");
    app.deliver_as(
        "msg_broken",
        &sample::envelope("user.created", data, T).to_string(),
    )
    .await;
    let (summary, results) = events::replay_failed(&app.store, DeleteMode::Hard)
        .await
        .unwrap();
    assert_eq!(
        (summary.failed, results.len()),
        (1, 1),
        "still failing under the same rules"
    );
    let stored = app.store.stored_event("msg_broken").await.unwrap().unwrap();
    assert!(stored.replayed_at.is_some());
    assert_eq!(stored.outcome, "failed");

    // ...fixed by an upgrade (here: its payload is repaired in place), then replayed: applied.
    let mut fixed = SampleUser::new("user_fixed", T).to_clerk_json();
    fixed["first_name"] = json!("Repaired");
    let payload = sample::envelope("user.created", fixed, T).to_string();
    let TestSql::Sqlite(pool) = app.sql() else {
        unreachable!()
    };
    sqlx::query("UPDATE clerk_sync_inbox SET payload = $1 WHERE svix_id = 'msg_broken'")
        .bind(&payload)
        .execute(pool)
        .await
        .unwrap();
    let (summary, _) = events::replay_failed(&app.store, DeleteMode::Hard)
        .await
        .unwrap();
    assert_eq!(summary.created, 1, "{summary}");
    assert_eq!(
        app.user("user_fixed").await.unwrap().first_name.as_deref(),
        Some("Repaired")
    );
    assert_eq!(
        app.store
            .stored_event("msg_broken")
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "created"
    );
    assert!(
        app.store.stored_events(true, 10).await.unwrap().is_empty(),
        "no failed events left"
    );

    // Replaying it once more is as harmless as a redelivery.
    assert_eq!(
        app.store
            .replay("msg_broken", DeleteMode::Hard)
            .await
            .unwrap(),
        Some(clerk_sync::sync::Outcome::Unchanged)
    );
    assert_eq!(
        app.store
            .replay("msg_nope", DeleteMode::Hard)
            .await
            .unwrap(),
        None
    );
}

/// Multi-threaded: the emulator must answer while the test blocks on the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_commands_explain_themselves_and_use_exit_codes_scripts_can_trust() {
    let clerk = ClerkEmulator::start().await;
    seed(&clerk, &clerk_users(30, T));
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = database_url(&app);
    let dir = tempfile::tempdir().unwrap();
    let (secret, base) = (clerk.secret_key(), clerk.base_url());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SECRET_KEY", secret.as_str()),
        ("CLERK_API_URL", base.as_str()),
    ];

    let without_key = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.arg("backfill");
        c
    });
    assert_eq!(without_key.status.code(), Some(1));
    assert!(
        text(&without_key.stderr).contains("CLERK_SECRET_KEY is not set"),
        "{}",
        text(&without_key.stderr)
    );

    let dry = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.args(["reconcile", "--dry-run"]);
        c
    });
    assert_eq!(
        dry.status.code(),
        Some(0),
        "a dry run that found drift is a success: {}",
        text(&dry.stderr)
    );
    let out = text(&dry.stdout);
    assert!(
        out.contains("ACTION")
            && out.contains("create")
            && out.contains("nothing changed")
            && out.contains("created 30"),
        "{out}"
    );
    assert!(app.users().await.is_empty());

    // Another process holds the reconcile lease: exit code 3 and a message saying so.
    assert!(
        app.store
            .acquire_lease("reconcile", "another-host/pid 1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let held = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.arg("reconcile");
        c
    });
    assert_eq!(held.status.code(), Some(3));
    assert!(
        text(&held.stderr).contains("another-host/pid 1"),
        "{}",
        text(&held.stderr)
    );

    let backfilled = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.args(["backfill", "--quiet"]);
        c
    });
    assert!(backfilled.status.success(), "{}", text(&backfilled.stderr));
    assert!(
        text(&backfilled.stdout).contains("created 30"),
        "{}",
        text(&backfilled.stdout)
    );

    app.deliver_as(
        "msg_cli",
        &sample::envelope("user.created", json!({"first_name": "no id"}), T).to_string(),
    )
    .await;
    let list = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.args(["events", "list", "--failed"]);
        c
    });
    assert!(
        text(&list.stdout).contains("msg_cli") && text(&list.stdout).contains("failed"),
        "{}",
        text(&list.stdout)
    );
    let show = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.args(["events", "show", "msg_cli"]);
        c
    });
    assert!(
        text(&show.stdout).contains("\"first_name\": \"no id\""),
        "{}",
        text(&show.stdout)
    );
    let replay = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.args(["events", "replay", "msg_cli"]);
        c
    });
    assert!(
        text(&replay.stdout).contains("msg_cli: failed -> failed"),
        "{}",
        text(&replay.stdout)
    );
    let missing = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.args(["events", "show", "msg_missing"]);
        c
    });
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("events list"));
}
