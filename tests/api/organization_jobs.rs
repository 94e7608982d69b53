//! Backfill and reconciliation of organizations and memberships, against the Clerk emulator and
//! a real database: offset paging (resumable, never skipping what Clerk moves back mid-walk),
//! the webhook rules, and reconciliation's safety rails.

use std::collections::HashSet;

use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
use clerk_sync::jobs::JobError;
use clerk_sync::jobs::backfill::{self, BackfillOptions, Resumed};
use clerk_sync::jobs::reconcile::{self, Action, ReconcileOptions};
use clerk_sync::sync::DeleteMode;

use crate::clerk_emulator::ClerkEmulator;
use crate::cli::{clerk_sync, run, text};
use crate::jobs::{api, retries};
use crate::support::{Backend, TestApp, TestSql, on_both_backends};

const T: i64 = 1_716_883_200_000;

/// An organization row: id, name, slug, deleted.
type OrgRow = (String, String, Option<String>, bool);
/// A membership row: id, organization, user, role.
type MemberRow = (String, String, String, String);

/// Users `user_000000`.., organizations `org_0000`.. created in that order, each with two
/// members (`orgmem_0000_0`, `orgmem_0000_1`) created in that order after every organization.
struct Fixture {
    users: Vec<SampleUser>,
    organizations: Vec<SampleOrganization>,
    memberships: Vec<SampleMembership>,
}

fn fixture(organizations: usize, users: usize) -> Fixture {
    let users: Vec<SampleUser> = (0..users)
        .map(|n| SampleUser::new(format!("user_{n:06}"), T - 1_000_000 + n as i64))
        .collect();
    let organizations: Vec<SampleOrganization> = (0..organizations)
        .map(|n| SampleOrganization::new(format!("org_{n:04}"), T - 500_000 + 10 * n as i64))
        .collect();
    let memberships = organizations
        .iter()
        .enumerate()
        .flat_map(|(n, organization)| {
            let users = &users;
            (0..2).map(move |k| {
                SampleMembership::new(
                    format!("orgmem_{n:04}_{k}"),
                    organization.clone(),
                    users[(n + k) % users.len()].id.clone(),
                    T - 400_000 + (2 * n + k) as i64,
                )
            })
        })
        .collect();
    Fixture {
        users,
        organizations,
        memberships,
    }
}

fn seed(clerk: &ClerkEmulator, fixture: &Fixture) {
    clerk.insert_users(fixture.users.iter().map(SampleUser::to_clerk_json));
    clerk.insert_organizations(
        fixture
            .organizations
            .iter()
            .map(SampleOrganization::to_json),
    );
    clerk.insert_memberships(fixture.memberships.iter().map(SampleMembership::to_json));
}

fn org_row(o: &SampleOrganization) -> OrgRow {
    (o.id.clone(), o.name.clone(), Some(o.slug.clone()), false)
}

fn member_row(m: &SampleMembership) -> MemberRow {
    (
        m.id.clone(),
        m.organization.id.clone(),
        m.user_id.clone(),
        m.role.clone(),
    )
}

fn backfill_options(page_size: u32) -> BackfillOptions {
    BackfillOptions {
        page_size,
        requests_per_10s: 10_000,
        restart: false,
        quiet: true,
    }
}

fn reconcile_options(dry_run: bool, page_size: u32) -> ReconcileOptions {
    ReconcileOptions {
        dry_run,
        allow_mass_delete: false,
        requests_per_10s: 10_000,
        page_size,
        delete_mode: DeleteMode::Hard,
        quiet: true,
    }
}

async fn organizations(app: &TestApp) -> Vec<OrgRow> {
    let sql = r#"SELECT id, name, slug, "deletedAt" IS NOT NULL AS deleted FROM organizations ORDER BY id"#;
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        TestSql::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    }
}

async fn memberships(app: &TestApp) -> Vec<MemberRow> {
    let sql =
        r#"SELECT id, "organizationId", "userId", role FROM organization_memberships ORDER BY id"#;
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        TestSql::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    }
}

fn ns(app: &TestApp) -> &'static str {
    match app.backend {
        Backend::Postgres => "clerk_sync.",
        Backend::Sqlite => "clerk_sync_",
    }
}

async fn count(app: &TestApp, sql: &str, id: &str) -> i64 {
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_scalar(sql).bind(id).fetch_one(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_scalar(sql).bind(id).fetch_one(pool).await,
    }
    .unwrap()
}

async fn organization_tombstoned(app: &TestApp, id: &str) -> bool {
    let sql = format!(
        "SELECT count(*) FROM {}organization_tombstones WHERE organization_id = $1",
        ns(app)
    );
    count(app, &sql, id).await > 0
}

async fn membership_tombstoned(app: &TestApp, id: &str) -> bool {
    let sql = format!(
        "SELECT count(*) FROM {}membership_tombstones WHERE membership_id = $1",
        ns(app)
    );
    count(app, &sql, id).await > 0
}

/// The `offset` of each request to `path`, from `from` on in the emulator's log.
fn offsets(clerk: &ClerkEmulator, path: &str, from: usize) -> Vec<u64> {
    clerk.requests()[from..]
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| {
            url::form_urlencoded::parse(r.query.as_bytes())
                .find(|(k, _)| k == "offset")
                .map_or(0, |(_, v)| v.parse().unwrap())
        })
        .collect()
}

/// Lets `pages` answers to `path` through, then fails the next request (every retry of it)
/// with a 500: the job stops after `pages` pages of that list. Runs beside the job.
async fn stop_after(clerk: &ClerkEmulator, path: &str, pages: usize) {
    let mut hold = clerk.hold_answers(path);
    for _ in 1..pages {
        hold.request_arrived().await;
        let next = clerk.hold_answers(path);
        hold.release();
        hold = next;
    }
    hold.request_arrived().await;
    clerk.fail_next(retries().attempts as usize, 500);
    hold.release();
}

/// Lets the first answer to `path` through, then runs `meanwhile` while the second request
/// waits: what Clerk changes between two pages of a walk.
async fn between_pages(clerk: &ClerkEmulator, path: &str, meanwhile: impl FnOnce()) {
    let first = clerk.hold_answers(path);
    first.request_arrived().await;
    let second = clerk.hold_answers(path);
    first.release();
    second.request_arrived().await;
    meanwhile();
    second.release();
}

on_both_backends! {
    async fn backfill_imports_organizations_and_memberships_page_by_page_after_the_users(backend) {
        let clerk = ClerkEmulator::start().await;
        let f = fixture(7, 5);
        seed(&clerk, &f);
        let app = TestApp::spawn(backend).await;

        let report = backfill::run(&app.store, &api(&clerk), &backfill_options(3)).await.unwrap();
        assert_eq!(report.summary.created, 5, "users: {}", report.summary);
        assert_eq!(report.organizations.created, 7, "{}", report.organizations);
        assert_eq!(report.memberships.created, 14, "{}", report.memberships);
        assert_eq!(report.organizations.total(), 7, "each read once: {}", report.organizations);
        assert_eq!(report.memberships.total(), 14, "each read once: {}", report.memberships);
        assert_eq!((report.organization_pages, report.membership_pages), (3, 7));
        assert_eq!(organizations(&app).await, f.organizations.iter().map(org_row).collect::<Vec<_>>());
        assert_eq!(memberships(&app).await, f.memberships.iter().map(member_row).collect::<Vec<_>>());
        // Three at a time, each page starting on the last item of the one before (to notice a
        // shift), ending on the page that reaches total_count.
        assert_eq!(offsets(&clerk, "/v1/organizations", 0), [0, 2, 4]);
        assert_eq!(offsets(&clerk, "/v1/organization_memberships", 0), [0, 2, 4, 6, 8, 10, 12]);
        let first_org_request = clerk.requests().iter().position(|r| r.path == "/v1/organizations").unwrap();
        let last_user_request = clerk.requests().iter().rposition(|r| r.path.starts_with("/v1/users")).unwrap();
        assert!(last_user_request < first_org_request, "the users first");
        assert_eq!(app.store.state("backfill").await.unwrap(), None, "no checkpoint after a complete run");

        let again = backfill::run(&app.store, &api(&clerk), &backfill_options(500)).await.unwrap();
        assert_eq!((again.organizations.unchanged, again.memberships.unchanged), (7, 14));
        assert_eq!(again.organizations.total() + again.memberships.total(), 21, "{} / {}", again.organizations, again.memberships);
    }

    async fn backfill_resumes_organizations_and_memberships_after_an_interruption(backend) {
        let clerk = ClerkEmulator::start().await;
        let f = fixture(10, 4);
        seed(&clerk, &f);
        let app = TestApp::spawn(backend).await;
        let client = api(&clerk);
        let options = backfill_options(4);

        // Clerk fails at the third page of organizations: two pages (six) landed.
        let (result, ()) = tokio::join!(
            backfill::run(&app.store, &client, &options),
            stop_after(&clerk, "/v1/organizations", 2),
        );
        let error = result.unwrap_err();
        assert!(matches!(error, JobError::Clerk(_)), "{error}");
        assert_eq!(app.users().await.len(), 4);
        assert_eq!(organizations(&app).await.len(), 6, "two committed pages");
        assert!(memberships(&app).await.is_empty());
        let checkpoint = app.store.state("backfill").await.unwrap().expect("a checkpoint");
        assert!(checkpoint.contains("\"organizations\""), "{checkpoint}");

        // The next run continues in the organizations, then fails at the fourth page of
        // memberships.
        let before = clerk.requests().len();
        let (result, ()) = tokio::join!(
            backfill::run(&app.store, &client, &options),
            stop_after(&clerk, "/v1/organization_memberships", 3),
        );
        assert!(matches!(result, Err(JobError::Clerk(_))), "{result:?}");
        assert_eq!(organizations(&app).await.len(), 10);
        assert_eq!(memberships(&app).await.len(), 8, "three committed pages");
        let resumed = offsets(&clerk, "/v1/organizations", before);
        assert_eq!(resumed.first(), Some(&4), "after the last committed page: {resumed:?}");
        assert!(!resumed.contains(&0), "the first pages are not fetched again: {resumed:?}");
        assert!(
            !clerk.requests()[before..].iter().any(|r| r.path.starts_with("/v1/users")),
            "the users were done"
        );

        let before = clerk.requests().len();
        let report = backfill::run(&app.store, &client, &options).await.unwrap();
        assert_eq!(report.resumed_in, Some(Resumed { list: "memberships", processed: 8 }));
        assert_eq!(report.resumed_after, None);
        assert_eq!(report.memberships.created, 12, "{}", report.memberships);
        assert_eq!(report.organizations.total(), 0, "the organizations were done");
        assert!(offsets(&clerk, "/v1/organizations", before).is_empty());
        assert!(!offsets(&clerk, "/v1/organization_memberships", before).contains(&0));
        assert_eq!(organizations(&app).await, f.organizations.iter().map(org_row).collect::<Vec<_>>());
        assert_eq!(memberships(&app).await, f.memberships.iter().map(member_row).collect::<Vec<_>>());
        assert_eq!(app.store.state("backfill").await.unwrap(), None);
    }

    async fn backfill_never_overwrites_newer_webhooks_nor_brings_back_deleted_organizations(backend) {
        let clerk = ClerkEmulator::start().await;
        let f = fixture(4, 3);
        seed(&clerk, &f);
        let app = TestApp::spawn(backend).await;
        for user in &f.users {
            app.deliver(&sample::user_created(user)).await;
        }
        // Webhooks newer than what Clerk's lists will say (their lists are read later, but
        // these changes reached us first and carry later times).
        let mut renamed = f.organizations[0].clone();
        renamed.name = "FromWebhook".into();
        renamed.updated_at = T + 5_000;
        assert_eq!(app.deliver(&sample::organization_updated(&renamed)).await.outcome(), "created");
        let gone = &f.organizations[1];
        assert_eq!(app.deliver(&sample::organization_deleted(&gone.id, &gone.slug, T + 5_000)).await.outcome(), "not_found");
        let mut admin = f.memberships[4].clone().with_role("org:admin");
        admin.updated_at = T + 5_000;
        assert_eq!(app.deliver(&sample::membership_updated(&admin)).await.outcome(), "created");
        let left = &f.memberships[6];
        app.deliver(&sample::membership_deleted(left, T + 5_000)).await;

        let report = backfill::run(&app.store, &api(&clerk), &backfill_options(2)).await.unwrap();
        let rows = organizations(&app).await;
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].1, "FromWebhook", "the newer webhook stays");
        assert!(rows.iter().all(|r| r.0 != gone.id), "deleted stays deleted: {rows:?}");
        assert!(organization_tombstoned(&app, &gone.id).await);
        assert_eq!(report.organizations.skipped, 1, "{}", report.organizations);
        let members = memberships(&app).await;
        let expected: Vec<MemberRow> = f
            .memberships
            .iter()
            .filter(|m| m.organization.id != gone.id && m.id != left.id)
            .map(|m| if m.id == admin.id { member_row(&admin) } else { member_row(m) })
            .collect();
        assert_eq!(members, expected, "no membership of the deleted organization, nor the deleted one; the newer role stays");
        assert_eq!(report.memberships.skipped, 3, "{}", report.memberships);
    }

    async fn reconcile_fixes_missing_stale_and_deleted_organizations_and_memberships(backend) {
        let clerk = ClerkEmulator::start().await;
        let f = fixture(6, 4);
        seed(&clerk, &f);
        let app = TestApp::spawn(backend).await;
        backfill::run(&app.store, &api(&clerk), &backfill_options(500)).await.unwrap();

        // While webhooks were lost: an organization was created with a member, one renamed,
        // one deleted (its memberships with it), a member made admin, another removed.
        let newcomer = SampleOrganization::new("org_new", T + 10);
        clerk.insert_organization(newcomer.to_json());
        let joined = SampleMembership::new("orgmem_new", newcomer.clone(), f.users[0].id.clone(), T + 10);
        clerk.insert_membership(joined.to_json());
        let mut renamed = f.organizations[1].clone();
        renamed.name = "Renamed".into();
        renamed.updated_at = T + 20;
        clerk.insert_organization(renamed.to_json());
        clerk.delete_organization(&f.organizations[3].id);
        let mut promoted = f.memberships[4].clone().with_role("org:admin");
        promoted.updated_at = T + 20;
        clerk.insert_membership(promoted.to_json());
        let removed = f.memberships[9].clone();
        clerk.delete_membership(&removed.id);

        let (orgs_before, members_before) = (organizations(&app).await, memberships(&app).await);
        let dry = reconcile::run(&app.store, &api(&clerk), &reconcile_options(true, 4)).await.unwrap();
        assert_eq!(organizations(&app).await, orgs_before, "a dry run changes nothing");
        assert_eq!(memberships(&app).await, members_before, "a dry run changes nothing");
        let drift = |d: &[reconcile::ItemDrift]| -> HashSet<(Action, String)> {
            d.iter().map(|d| (d.action, d.id.clone())).collect()
        };
        assert_eq!(
            drift(&dry.organizations.drift),
            HashSet::from([
                (Action::Create, "org_new".to_string()),
                (Action::Update, "org_0001".to_string()),
                (Action::Delete, "org_0003".to_string()),
            ])
        );
        assert_eq!(
            drift(&dry.memberships.drift),
            HashSet::from([
                (Action::Create, "orgmem_new".to_string()),
                (Action::Update, "orgmem_0002_0".to_string()),
                (Action::Delete, "orgmem_0003_0".to_string()),
                (Action::Delete, "orgmem_0003_1".to_string()),
                (Action::Delete, "orgmem_0004_1".to_string()),
            ])
        );
        let o = &dry.organizations.summary;
        assert_eq!((o.created, o.updated, o.deleted, o.unchanged), (1, 1, 1, 4), "{o}");
        let m = &dry.memberships.summary;
        assert_eq!((m.created, m.updated, m.deleted, m.unchanged), (1, 1, 3, 8), "{m}");
        assert!(dry.drift.is_empty(), "the users match: {:?}", dry.drift);
        let table = dry.table();
        assert!(table.contains("ORGANIZATION") && table.contains("MEMBERSHIP") && !table.contains("USER "), "{table}");
        assert!(table.contains("user_000001 in org_0004: no longer exists in Clerk"), "{table}");

        let real = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false, 4)).await.unwrap();
        assert_eq!(real.organizations.drift, dry.organizations.drift, "the run does what the dry run said");
        assert_eq!(real.memberships.drift, dry.memberships.drift, "the run does what the dry run said");
        let mut expected_orgs: Vec<OrgRow> = f
            .organizations
            .iter()
            .filter(|o| o.id != "org_0003")
            .map(|o| if o.id == renamed.id { org_row(&renamed) } else { org_row(o) })
            .collect();
        expected_orgs.push(org_row(&newcomer));
        assert_eq!(organizations(&app).await, expected_orgs);
        let mut expected_members: Vec<MemberRow> = f
            .memberships
            .iter()
            .filter(|m| m.organization.id != "org_0003" && m.id != removed.id)
            .map(|m| if m.id == promoted.id { member_row(&promoted) } else { member_row(m) })
            .collect();
        expected_members.push(member_row(&joined));
        assert_eq!(memberships(&app).await, expected_members);
        assert!(organization_tombstoned(&app, "org_0003").await);
        assert!(membership_tombstoned(&app, &removed.id).await);

        // Late webhooks of what is gone bring nothing back.
        let late = sample::organization_updated(&f.organizations[3]);
        assert_eq!(app.deliver(&late).await.outcome(), "tombstoned");
        assert_eq!(app.deliver(&sample::membership_updated(&removed)).await.outcome(), "tombstoned");

        let clean = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false, 4)).await.unwrap();
        assert!(clean.organizations.drift.is_empty(), "{:?}", clean.organizations.drift);
        assert!(clean.memberships.drift.is_empty(), "{:?}", clean.memberships.drift);
        assert_eq!(clean.table(), "No drift: the table matches Clerk.\n");
    }

    async fn offset_paging_skips_nothing_when_clerk_deletes_during_the_walk(backend) {
        let clerk = ClerkEmulator::start().await;
        let f = fixture(16, 3);
        seed(&clerk, &f);
        let app = TestApp::spawn(backend).await;
        let client = api(&clerk);
        let ids = |range: std::ops::Range<usize>| -> Vec<String> {
            f.organizations[range].iter().map(|o| o.id.clone()).collect()
        };

        // Backfill: three organizations already read are deleted after the first page (more
        // than the overlap), so every later one moves back three places; org_0004 lands where
        // the second page would have begun and must not be skipped.
        let options = backfill_options(4);
        let (report, ()) = tokio::join!(
            backfill::run(&app.store, &client, &options),
            between_pages(&clerk, "/v1/organizations", || {
                for o in &f.organizations[..3] {
                    clerk.delete_organization(&o.id);
                }
            }),
        );
        report.unwrap();
        let rows: Vec<String> = organizations(&app).await.into_iter().map(|r| r.0).collect();
        assert_eq!(rows, ids(0..16), "nothing skipped");
        assert_eq!(offsets(&clerk, "/v1/organizations", 0)[..3], [0, 2, 0], "stepped back to find its place");

        // Reconcile: the same shift mid-walk (org_0007 at the border this time) costs nothing
        // Clerk still has; what was read before its deletion goes next time.
        let before = clerk.requests().len();
        let options = reconcile_options(false, 4);
        let (report, ()) = tokio::join!(
            reconcile::run(&app.store, &client, &options),
            between_pages(&clerk, "/v1/organizations", || {
                for o in &f.organizations[3..6] {
                    clerk.delete_organization(&o.id);
                }
            }),
        );
        let report = report.unwrap();
        let walk = offsets(&clerk, "/v1/organizations", before);
        assert_eq!(walk[..3], [0, 2, 0], "{walk:?}");
        let deleted: Vec<String> = report.organizations.drift.iter().filter(|d| d.action == Action::Delete).map(|d| d.id.clone()).collect();
        assert_eq!(deleted, ids(0..3), "deleted in Clerk before the walk");
        let rows: Vec<String> = organizations(&app).await.into_iter().map(|r| r.0).collect();
        assert_eq!(rows, ids(3..16));
        let next = reconcile::run(&app.store, &client, &options).await.unwrap();
        let deleted: Vec<String> = next.organizations.drift.iter().map(|d| d.id.clone()).collect();
        assert_eq!(deleted, ids(3..6));
        let rows: Vec<String> = organizations(&app).await.into_iter().map(|r| r.0).collect();
        assert_eq!(rows, ids(6..16));
    }
}

#[tokio::test]
async fn an_instance_without_organizations_costs_one_request_per_list() {
    let clerk = ClerkEmulator::start().await;
    let f = fixture(0, 3);
    clerk.insert_users(f.users.iter().map(SampleUser::to_clerk_json));
    let app = TestApp::spawn(Backend::Sqlite).await;

    let report = backfill::run(&app.store, &api(&clerk), &backfill_options(500))
        .await
        .unwrap();
    assert_eq!(report.summary.created, 3);
    assert_eq!(report.organizations.total() + report.memberships.total(), 0);
    assert_eq!(clerk.request_count("GET", "/v1/organizations"), 1);
    assert_eq!(
        clerk.request_count("GET", "/v1/organization_memberships"),
        1
    );

    let report = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false, 500))
        .await
        .unwrap();
    assert_eq!(report.table(), "No drift: the table matches Clerk.\n");
    assert_eq!(clerk.request_count("GET", "/v1/organizations"), 2);
    assert_eq!(
        clerk.request_count("GET", "/v1/organization_memberships"),
        2
    );
}

#[tokio::test]
async fn reconcile_refuses_mass_deletion_of_organizations_or_memberships_unless_asked() {
    let clerk = ClerkEmulator::start().await;
    let f = fixture(24, 4);
    seed(&clerk, &f);
    let app = TestApp::spawn(Backend::Sqlite).await;
    backfill::run(&app.store, &api(&clerk), &backfill_options(500))
        .await
        .unwrap();

    // Fifteen of 24 organizations gone, and their 30 memberships with them.
    for o in &f.organizations[..15] {
        clerk.delete_organization(&o.id);
    }
    for dry_run in [true, false] {
        let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options(dry_run, 500))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("refusing to delete 15 of 24 organizations")
                && text.contains("--allow-mass-delete")
                && text.contains("Nothing was deleted"),
            "{text}"
        );
    }
    assert_eq!(organizations(&app).await.len(), 24, "nothing deleted");
    assert_eq!(memberships(&app).await.len(), 48, "nothing deleted");

    let allowed = ReconcileOptions {
        allow_mass_delete: true,
        ..reconcile_options(false, 500)
    };
    let report = reconcile::run(&app.store, &api(&clerk), &allowed)
        .await
        .unwrap();
    assert_eq!(report.organizations.summary.deleted, 15);
    assert_eq!(report.memberships.summary.deleted, 30);
    assert_eq!(organizations(&app).await.len(), 9);
    assert_eq!(memberships(&app).await.len(), 18);

    // Twelve of the 18 remaining memberships gone, their organizations still there.
    for m in &f.memberships[30..42] {
        clerk.delete_membership(&m.id);
    }
    let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false, 500))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("refusing to delete 12 of 18 memberships"),
        "{error}"
    );
    assert_eq!(memberships(&app).await.len(), 18, "nothing deleted");
}

#[tokio::test]
async fn reconcile_never_deletes_organizations_after_an_incomplete_listing() {
    let clerk = ClerkEmulator::start().await;
    let f = fixture(10, 3);
    seed(&clerk, &f);
    let app = TestApp::spawn(Backend::Sqlite).await;
    backfill::run(&app.store, &api(&clerk), &backfill_options(500))
        .await
        .unwrap();
    clerk.delete_organization("org_0000");
    let client = api(&clerk);
    // The listing breaks after the first page: seven organizations look "missing".
    let options = reconcile_options(false, 4);
    let (result, ()) = tokio::join!(
        reconcile::run(&app.store, &client, &options),
        stop_after(&clerk, "/v1/organizations", 1),
    );
    assert!(matches!(result, Err(JobError::Clerk(_))), "{result:?}");
    assert_eq!(organizations(&app).await.len(), 10, "nothing deleted");
    assert_eq!(memberships(&app).await.len(), 20, "nothing deleted");
}

#[tokio::test]
async fn reconcile_without_users_here_needs_one_of_the_tables_organizations_listed() {
    // The users table is empty, so it cannot vouch for the key's instance; the key lists
    // organizations, none of them ours: nothing is written or deleted.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ours: Vec<SampleOrganization> = (0..3)
        .map(|n| SampleOrganization::new(format!("org_ours{n}"), T + n))
        .collect();
    for o in &ours {
        app.deliver(&sample::organization_created(o)).await;
    }
    let clerk = ClerkEmulator::start().await;
    let theirs = fixture(2, 1);
    clerk.insert_organizations(theirs.organizations.iter().map(SampleOrganization::to_json));

    let error = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false, 500))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("refusing to reconcile organizations")
            && text.contains("none of them among the 3 organizations"),
        "{text}"
    );
    let ids: Vec<String> = organizations(&app).await.into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["org_ours0", "org_ours1", "org_ours2"]);

    // Once one of ours is listed, the listing is ours: the others are written too.
    clerk.insert_organization(ours[0].to_json());
    let report = reconcile::run(&app.store, &api(&clerk), &reconcile_options(false, 2))
        .await
        .unwrap();
    assert_eq!(
        report.organizations.summary.created, 2,
        "{:?}",
        report.organizations
    );
    assert_eq!(
        organizations(&app).await.len(),
        3,
        "two deleted, two created"
    );
}

/// Multi-threaded: the emulator must answer while the test blocks on the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_commands_report_organizations_and_memberships_beside_the_users() {
    let clerk = ClerkEmulator::start().await;
    let f = fixture(2, 3);
    seed(&clerk, &f);
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = match app.db.target() {
        clerk_sync::config::DatabaseTarget::Sqlite { path } => {
            format!("sqlite://{}", path.display())
        }
        other => panic!("{other:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (secret, base) = (clerk.secret_key(), clerk.base_url());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SECRET_KEY", secret.as_str()),
        ("CLERK_API_URL", base.as_str()),
    ];

    let dry = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.args(["reconcile", "--dry-run"]);
        c
    });
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let out = text(&dry.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(
            &"reconcile (dry run, nothing changed): created 3, updated 0, unchanged 0, deleted 0, skipped 0, failed 0"
        ),
        "the users' line as before: {out}"
    );
    assert!(
        lines.contains(
            &"organizations: created 2, updated 0, unchanged 0, deleted 0, skipped 0, failed 0"
        ) && lines.contains(
            &"memberships: created 4, updated 0, unchanged 0, deleted 0, skipped 0, failed 0"
        ),
        "{out}"
    );
    assert!(
        out.contains("ACTION  USER")
            && out.contains("ACTION  ORGANIZATION")
            && out.contains("ACTION  MEMBERSHIP"),
        "{out}"
    );
    assert!(organizations(&app).await.is_empty());

    let backfilled = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.args(["backfill", "--quiet"]);
        c
    });
    assert!(backfilled.status.success(), "{}", text(&backfilled.stderr));
    let out = text(&backfilled.stdout);
    assert_eq!(
        out,
        "backfill done: created 3, updated 0, unchanged 0, deleted 0, skipped 0, failed 0\n\
         organizations: created 2, updated 0, unchanged 0, deleted 0, skipped 0, failed 0\n\
         memberships: created 4, updated 0, unchanged 0, deleted 0, skipped 0, failed 0\n"
    );

    let help = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.args(["reconcile", "--help"]);
        c
    });
    assert!(
        text(&help.stdout).contains("organizations or memberships"),
        "{}",
        text(&help.stdout)
    );
}
