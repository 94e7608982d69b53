//! A wrong Clerk key must not empty the table: a secret key of another instance than the
//! webhooks' changes nothing, whichever job reads Clerk with it; a listing with none of the
//! table's users deletes nothing, however small the table; and a wrong tombstone can be removed.

use std::time::Duration;

use clerk_sync::clerk::api::EXAMPLE_INSTANCE_ID;
use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::{ClerkSettings, DatabaseTarget};
use clerk_sync::jobs::backfill::{self, BackfillOptions};
use clerk_sync::jobs::reconcile::{self, ReconcileOptions};
use clerk_sync::jobs::{JobError, KeyInstance, check_key_instance};
use clerk_sync::sync::DeleteMode;
use serde_json::{Value, json};

use crate::clerk_emulator::ClerkEmulator;
use crate::cli::{clerk_sync, free_port, run, text};
use crate::jobs::{api, retries};
use crate::support::{Backend, TestApp, on_both_backends};

const T: i64 = 1_716_883_200_000;
/// The instance whose webhooks the table follows.
const INSTANCE_A: &str = "ins_2WrongKeyTestsInstanceA000";
/// Another instance of the same Clerk account (say, development instead of production).
const INSTANCE_B: &str = "ins_2WrongKeyTestsInstanceB000";

fn settings(api_url: &str, secret_key: &str) -> ClerkSettings {
    ClerkSettings {
        retry: retries(),
        ..ClerkSettings::from_values(Some(api_url), Some(secret_key), None, None, None, false)
            .unwrap()
    }
}

fn reconcile_options() -> ReconcileOptions {
    ReconcileOptions {
        dry_run: false,
        allow_mass_delete: false,
        requests_per_10s: 10_000,
        page_size: 100,
        delete_mode: DeleteMode::Hard,
        quiet: true,
    }
}

fn backfill_options() -> BackfillOptions {
    BackfillOptions {
        page_size: 100,
        requests_per_10s: 10_000,
        restart: false,
        quiet: true,
    }
}

fn users(prefix: &str, count: usize) -> Vec<SampleUser> {
    (0..count)
        .map(|n| {
            let mut user = SampleUser::new(format!("user_{prefix}{n:03}"), T + n as i64);
            user.updated_at = T + n as i64;
            user
        })
        .collect()
}

/// A webhook body as `instance` sends it.
fn from_instance(body: String, instance: &str) -> String {
    let mut envelope: Value = serde_json::from_str(&body).unwrap();
    envelope["instance_id"] = json!(instance);
    envelope.to_string()
}

/// The table follows instance A: each user arrived by a `user.created` webhook of A.
async fn synced_from_instance_a(app: &TestApp, users: &[SampleUser]) {
    for user in users {
        let body = from_instance(sample::user_created(user), INSTANCE_A);
        assert_eq!(app.deliver(&body).await.outcome(), "created");
    }
}

/// An emulator that is instance B, with B's own users.
async fn instance_b(users: &[SampleUser]) -> ClerkEmulator {
    let clerk = ClerkEmulator::start().await;
    clerk.set_instance_id(INSTANCE_B);
    clerk.insert_users(users.iter().map(SampleUser::to_clerk_json));
    clerk
}

fn database_url(app: &TestApp) -> String {
    match app.db.target() {
        DatabaseTarget::Postgres { url } => url,
        DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
    }
}

async fn tombstoned_count(app: &TestApp, ids: &[&str]) -> usize {
    let mut count = 0;
    for id in ids {
        count += usize::from(app.tombstoned(id).await);
    }
    count
}

/// Requests that read users (listing, counting, fetching one).
fn user_reads(clerk: &ClerkEmulator) -> usize {
    clerk.request_count("GET", "/v1/users")
}

on_both_backends! {
    async fn reconcile_with_a_key_of_another_instance_changes_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let ours = users("a", 5);
        synced_from_instance_a(&app, &ours).await;
        let before = app.users().await;
        let clerk = instance_b(&users("b", 3)).await;

        let url = database_url(&app);
        let dir = tempfile::tempdir().unwrap();
        let output = run({
            let mut command = clerk_sync(dir.path(), &[
                ("DATABASE_URL", url.as_str()),
                ("CLERK_SECRET_KEY", &clerk.secret_key()),
                ("CLERK_API_URL", &clerk.base_url()),
            ]);
            command.args(["reconcile", "--quiet", "--allow-mass-delete"]);
            command
        });

        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
        let message = text(&output.stderr);
        assert!(
            message.contains(INSTANCE_B) && message.contains(INSTANCE_A)
                && message.contains("another instance") && message.contains("Nothing was changed"),
            "{message}"
        );
        assert_eq!(app.users().await, before, "no deletion, no update, none of B's users");
        let ids: Vec<&str> = ours.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(tombstoned_count(&app, &ids).await, 0, "no tombstones");
        assert_eq!(user_reads(&clerk), 0, "not one of B's users was even read");
    }

    async fn backfill_with_a_key_of_another_instance_writes_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        synced_from_instance_a(&app, &users("a", 5)).await;
        let before = app.users().await;
        let clerk = instance_b(&users("b", 3)).await;

        let error = backfill::run(&app.store, &api(&clerk), &backfill_options())
            .await
            .unwrap_err();

        assert!(matches!(error, JobError::WrongInstance { .. }), "{error}");
        assert!(error.to_string().contains(INSTANCE_B), "{error}");
        assert_eq!(app.users().await, before);
        assert_eq!(app.store.state("backfill").await.unwrap(), None, "no checkpoint either");
        assert_eq!(user_reads(&clerk), 0);
    }

    async fn reconcile_refuses_deletions_when_clerk_lists_none_of_a_small_table(backend) {
        // No webhook says which instance the table follows, so only the listing can tell.
        let app = TestApp::spawn(backend).await;
        let ours = users("a", 3);
        for user in &ours {
            app.deliver(&sample::user_created(user)).await;
        }
        let before = app.users().await;
        let clerk = instance_b(&users("b", 2)).await;
        let ids: Vec<&str> = ours.iter().map(|u| u.id.as_str()).collect();

        for allow_mass_delete in [false, true] {
            let options = ReconcileOptions { allow_mass_delete, ..reconcile_options() };
            let error = reconcile::run(&app.store, &api(&clerk), &options).await.unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, JobError::Refused(_)), "{message}");
            assert!(
                message.contains("none of them among the 3 users")
                    && message.contains("another Clerk instance")
                    && message.contains("/v1/instance"),
                "{message}"
            );
            assert_eq!(app.users().await, before, "nothing deleted and B's users not written");
            assert_eq!(tombstoned_count(&app, &ids).await, 0);
        }

        // Clerk listing nobody at all is refused the same way.
        for user in users("b", 2) {
            clerk.delete_user(&user.id);
        }
        let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Clerk lists no users at all"), "{error}");
        assert_eq!(app.users().await, before);
    }

    async fn a_removed_tombstone_lets_the_users_next_event_apply(backend) {
        let app = TestApp::spawn(backend).await;
        let user = SampleUser::new("user_wrongly_deleted", T);
        app.deliver(&sample::user_created(&user)).await;
        app.deliver(&sample::user_deleted(&user.id, T + 1)).await;
        assert!(app.tombstoned(&user.id).await);
        let url = database_url(&app);
        let dir = tempfile::tempdir().unwrap();
        let tombstones = |args: &[&str]| {
            let mut command = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
            command.arg("tombstones").args(args);
            run(command)
        };

        let list = tombstones(&["list"]);
        assert!(list.status.success(), "{}", text(&list.stderr));
        assert!(text(&list.stdout).contains("user_wrongly_deleted"), "{}", text(&list.stdout));

        let removed = tombstones(&["remove", "user_wrongly_deleted"]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
        assert!(text(&removed.stdout).contains("tombstone removed"), "{}", text(&removed.stdout));
        assert!(!app.tombstoned(&user.id).await);
        let again = tombstones(&["remove", "user_wrongly_deleted"]);
        assert_eq!(again.status.code(), Some(1), "no tombstone left to remove");
        assert!(text(&again.stderr).contains("has no tombstone"), "{}", text(&again.stderr));
        // The database flags are global, after the subcommand as before it.
        let mut command = clerk_sync(dir.path(), &[]);
        command.args(["tombstones", "list", "--database-url", url.as_str()]);
        let empty = run(command);
        assert!(text(&empty.stdout).contains("No tombstones"), "{}", text(&empty.stdout));

        let mut later = user.clone();
        later.updated_at = T + 2;
        assert_eq!(app.deliver(&sample::user_created(&later)).await.outcome(), "created");
        assert!(app.user(&user.id).await.is_some());
    }
}

#[tokio::test]
async fn removing_a_tombstone_brings_a_soft_deleted_row_back_for_its_next_snapshot() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.delete_mode = DeleteMode::Soft).await;
    let user = SampleUser::new("user_soft", T);
    app.deliver(&sample::user_created(&user)).await;
    app.deliver(&sample::user_deleted(&user.id, T + 1)).await;
    assert!(app.user(&user.id).await.unwrap().deleted_at.is_some());

    let removal = app.store.remove_tombstone(&user.id).await.unwrap();
    assert!(removal.removed && removal.row_restored, "{removal:?}");
    let mut later = user.clone();
    later.updated_at = T + 2;
    assert_eq!(
        app.deliver(&sample::user_updated(&later)).await.outcome(),
        "updated"
    );
    let row = app.user(&user.id).await.unwrap();
    assert_eq!(row.deleted_at, None);
    assert_eq!(row.email, user.email, "the snapshot's email is back");
}

#[tokio::test]
async fn reconcile_with_the_webhooks_instance_deletes_only_when_asked_if_clerk_lists_none() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let clerk = ClerkEmulator::start().await;
    let instance = clerk.instance_id().unwrap();
    let ours = users("a", 3);
    for user in &ours {
        let body = from_instance(sample::user_created(user), &instance);
        app.deliver(&body).await;
    }
    assert_eq!(
        check_key_instance(&app.store, &api(&clerk)).await.unwrap(),
        KeyInstance::Confirmed(instance.clone())
    );

    let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--allow-mass-delete"), "{error}");
    assert_eq!(app.users().await.len(), 3);

    let options = ReconcileOptions {
        allow_mass_delete: true,
        ..reconcile_options()
    };
    let report = reconcile::run(&app.store, &api(&clerk), &options)
        .await
        .unwrap();
    assert_eq!(report.summary.deleted, 3, "{}", report.summary);
    assert!(app.users().await.is_empty());
}

#[tokio::test]
async fn events_sent_by_trigger_tie_the_table_to_no_instance() {
    assert_eq!(
        serde_json::from_str::<Value>(&sample::user_created(&SampleUser::new("user_x", T)))
            .unwrap()["instance_id"],
        EXAMPLE_INSTANCE_ID,
        "trigger's events carry Clerk's example instance id"
    );
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ours = users("a", 3);
    for user in &ours {
        app.deliver(&sample::user_created(user)).await;
    }
    let clerk = instance_b(&ours).await;
    assert_eq!(
        check_key_instance(&app.store, &api(&clerk)).await.unwrap(),
        KeyInstance::Unknown
    );
    assert_eq!(
        clerk.request_count("GET", "/v1/instance"),
        0,
        "Clerk is not asked"
    );
    let report = backfill::run(&app.store, &api(&clerk), &backfill_options())
        .await
        .unwrap();
    assert_eq!(report.summary.unchanged, 3, "{}", report.summary);
}

#[tokio::test]
async fn a_clerk_api_without_the_instance_endpoint_leaves_the_other_guards() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ours = users("a", 4);
    synced_from_instance_a(&app, &ours).await;
    let clerk = instance_b(&ours[..3]).await;
    clerk.remove_instance_endpoint();

    assert_eq!(
        check_key_instance(&app.store, &api(&clerk)).await.unwrap(),
        KeyInstance::Unknown
    );
    let report = reconcile::run(&app.store, &api(&clerk), &reconcile_options())
        .await
        .unwrap();
    assert_eq!(report.summary.deleted, 1, "{}", report.summary);
    assert!(app.tombstoned(&ours[3].id).await);

    let stranger = instance_b(&users("b", 2)).await;
    stranger.remove_instance_endpoint();
    let error = reconcile::run(&app.store, &api(&stranger), &reconcile_options())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("none of them"), "{error}");
    assert_eq!(app.users().await.len(), 3);
}

#[tokio::test]
async fn serve_with_a_key_of_another_instance_applies_webhooks_and_reads_nothing_from_clerk() {
    let first = TestApp::spawn(Backend::Sqlite).await;
    synced_from_instance_a(&first, &users("a", 5)).await;
    let clerk = instance_b(&users("b", 3)).await;
    let clerk_settings = settings(&clerk.base_url(), &clerk.secret_key());
    let app = TestApp::spawn_on(first.db.clone(), Backend::Sqlite, move |c| {
        c.clerk = clerk_settings;
        c.reconcile_every = Some(Duration::from_millis(100));
    })
    .await;

    let newcomer = users("n", 1).remove(0);
    let body = from_instance(sample::user_created(&newcomer), INSTANCE_A);
    assert_eq!(app.deliver(&body).await.outcome(), "created");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        user_reads(&clerk),
        0,
        "no scheduled reconciliation with B's key"
    );
    assert_eq!(clerk.request_count("GET", "/v1/instance"), 1);
    assert_eq!(app.users().await.len(), 6);
}

#[tokio::test]
async fn serve_starts_when_clerk_cannot_be_reached_to_check_the_key() {
    let first = TestApp::spawn(Backend::Sqlite).await;
    synced_from_instance_a(&first, &users("a", 2)).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let clerk_settings = settings(&nowhere, "sk_test_unreachable");
    let app = TestApp::spawn_on(first.db.clone(), Backend::Sqlite, move |c| {
        c.clerk = clerk_settings;
    })
    .await;
    let body = from_instance(sample::user_created(&users("n", 1).remove(0)), INSTANCE_A);
    assert_eq!(app.deliver(&body).await.outcome(), "created");
}

#[tokio::test]
async fn a_long_listing_held_back_is_let_go_and_walked_again_once_a_table_user_shows_up() {
    // Thousands of users missing here, older than the table's only one: legitimate drift, but
    // the listing cannot be trusted until that user shows up on its last page.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut ours = SampleUser::new("user_zz_in_the_table", T + 1_000_000);
    ours.updated_at = T + 1_000_000;
    app.deliver(&sample::user_created(&ours)).await;
    let clerk = ClerkEmulator::start().await;
    let missing = users("m", 5_600);
    clerk.insert_users(missing.iter().map(SampleUser::to_clerk_json));
    clerk.insert_user(ours.to_clerk_json());

    let options = ReconcileOptions {
        page_size: 500,
        ..reconcile_options()
    };
    let report = reconcile::run(&app.store, &api(&clerk), &options)
        .await
        .unwrap();

    assert_eq!(
        (report.summary.created, report.summary.unchanged),
        (5_600, 1),
        "{}",
        report.summary
    );
    assert_eq!(app.users().await.len(), 5_601);
    let first_pages = clerk
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/users" && !r.query.contains("starting_after"))
        .count();
    assert_eq!(first_pages, 2, "walked again from the start");
}
