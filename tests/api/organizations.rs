//! Organizations and memberships: one test per rule, named after it, on both backends.

use std::path::Path;

use chrono::NaiveDateTime;
use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
use clerk_sync::clerk::{ClerkEvent, EventKind, parse_event};
use clerk_sync::ingest::DeliveryRecord;
use clerk_sync::sync::{DeleteMode, MembershipSnapshot, Outcome};
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, TestSql, at, on_both_backends};

const T0: i64 = 1_716_883_200_000;

/// An organization row: id, name, slug, deleted.
type OrgRow = (String, String, Option<String>, bool);
/// A membership row: id, organization, user, role.
type MemberRow = (String, String, String, String);

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

/// Every column of an organization row but the id and the app's own timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrgDetail {
    name: String,
    slug: Option<String>,
    image_url: Option<String>,
    created_by: Option<String>,
    clerk_created_at: Option<NaiveDateTime>,
    clerk_updated_at: Option<NaiveDateTime>,
    deleted_at: Option<NaiveDateTime>,
}

type OrgDetailRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

async fn organization(app: &TestApp, id: &str) -> Option<OrgDetail> {
    let sql = r#"SELECT name, slug, "imageUrl", "createdBy", "clerkCreatedAt", "clerkUpdatedAt",
                        "deletedAt" FROM organizations WHERE id = $1"#;
    let row: Option<OrgDetailRow> = match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await,
    }
    .unwrap();
    row.map(
        |(name, slug, image_url, created_by, clerk_created_at, clerk_updated_at, deleted_at)| {
            OrgDetail {
                name,
                slug,
                image_url,
                created_by,
                clerk_created_at,
                clerk_updated_at,
                deleted_at,
            }
        },
    )
}

/// A membership's role and Clerk times (created, updated).
type MemberDetail = (String, Option<NaiveDateTime>, Option<NaiveDateTime>);

async fn membership(app: &TestApp, id: &str) -> Option<MemberDetail> {
    let sql = r#"SELECT role, "clerkCreatedAt", "clerkUpdatedAt" FROM organization_memberships
                 WHERE id = $1"#;
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await,
    }
    .unwrap()
}

/// Where clerk-sync's own tables are.
fn ns(app: &TestApp) -> &'static str {
    match app.backend {
        Backend::Postgres => "clerk_sync.",
        Backend::Sqlite => "clerk_sync_",
    }
}

async fn organization_tombstoned(app: &TestApp, id: &str) -> bool {
    let sql = format!(
        "SELECT count(*) FROM {}organization_tombstones WHERE organization_id = $1",
        ns(app)
    );
    let count: i64 = match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_scalar(&sql).bind(id).fetch_one(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_scalar(&sql).bind(id).fetch_one(pool).await,
    }
    .unwrap();
    count > 0
}

/// The time (ms) a membership's tombstone remembers, if it has one.
async fn membership_tombstone(app: &TestApp, id: &str) -> Option<i64> {
    let sql = format!(
        "SELECT deleted_at_ms FROM {}membership_tombstones WHERE membership_id = $1",
        ns(app)
    );
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query_scalar(&sql).bind(id).fetch_optional(pool).await,
        TestSql::Sqlite(pool) => sqlx::query_scalar(&sql).bind(id).fetch_optional(pool).await,
    }
    .unwrap()
}

async fn execute(app: &TestApp, sql: &str) {
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        TestSql::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Outcomes of the stored events that failed, with their errors.
async fn failed_events(app: &TestApp) -> Vec<(String, Option<String>)> {
    app.inbox()
        .await
        .into_iter()
        .filter(|e| e.outcome == "failed")
        .map(|e| (e.event_type, e.error))
        .collect()
}

/// One of Clerk's published example payloads, as the files hold them.
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clerk")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn org(id: &str, slug: &str, updated_at: i64) -> SampleOrganization {
    let mut o = SampleOrganization::new(id, T0);
    o.slug = slug.into();
    o.updated_at = updated_at;
    o
}

/// `user` as a plain member of `organization`, created and updated at `updated_at`.
fn member(
    id: &str,
    organization: &SampleOrganization,
    user: &str,
    updated_at: i64,
) -> SampleMembership {
    let mut m = SampleMembership::new(id, organization.clone(), user, updated_at);
    m.created_at = updated_at;
    m
}

/// The same membership, updated at `updated_at` with `role`.
fn updated(m: &SampleMembership, role: &str, updated_at: i64) -> SampleMembership {
    let mut m = m.clone().with_role(role);
    m.updated_at = updated_at;
    m
}

fn outcome(answer: &crate::support::Answer) -> String {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The membership a `organizationMembership.created` / `.updated` body carries.
fn snapshot(body: &str) -> MembershipSnapshot {
    match parse_event(body.as_bytes()).unwrap().kind {
        EventKind::MembershipSnapshot(m) => m,
        other => panic!("not a membership snapshot: {other:?}"),
    }
}

/// Every order of `items`.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut order in permutations(&rest) {
            order.insert(0, first.clone());
            all.push(order);
        }
    }
    all
}

on_both_backends! {
    async fn rule_1_newest_organization_snapshot_wins_and_slugs_move(backend) {
        let app = TestApp::spawn(backend).await;
        let a = org("org_a", "acme", T0 + 10);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&a)).await), "created");
        // Another organization takes the slug with a newer snapshot.
        let b = org("org_b", "acme", T0 + 20);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&b)).await), "created");
        // A stale update of the first changes nothing.
        let mut stale = org("org_a", "acme", T0 + 5);
        stale.name = "Old".into();
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&stale)).await), "stale");
        assert_eq!(
            organizations(&app).await,
            [
                ("org_a".into(), a.name.clone(), None, false),
                ("org_b".into(), b.name.clone(), Some("acme".into()), false),
            ]
        );
        // Its own newer event, with a new slug, brings it one back.
        let renamed = org("org_a", "acme-2", T0 + 30);
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&renamed)).await), "updated");
        assert_eq!(organizations(&app).await[0].2.as_deref(), Some("acme-2"));
        assert!(failed_events(&app).await.is_empty());
    }

    async fn rule_1_an_organization_snapshot_applies_only_if_not_older_than_the_row(backend) {
        let app = TestApp::spawn(backend).await;
        // organization.updated for an organization never seen creates it.
        let mut newer = org("org_a", "acme", T0 + 20);
        newer.name = "Newer".into();
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&newer)).await), "created");
        let expected = OrgDetail {
            name: "Newer".into(),
            slug: Some("acme".into()),
            image_url: Some(newer.image_url.clone()),
            created_by: Some(newer.created_by.clone()),
            clerk_created_at: Some(at(T0)),
            clerk_updated_at: Some(at(T0 + 20)),
            deleted_at: None,
        };
        assert_eq!(organization(&app, "org_a").await, Some(expected.clone()));

        // The older snapshot arrives late: stale, nothing written, not even its other slug.
        let mut older = org("org_a", "acme-old", T0 + 10);
        older.name = "Older".into();
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&older)).await), "stale");
        assert_eq!(organization(&app, "org_a").await, Some(expected.clone()));
        // The same snapshot again (a replay under another svix-id) is not older: unchanged.
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&newer)).await), "unchanged");
        assert_eq!(organization(&app, "org_a").await, Some(expected));

        // A newer one overwrites every column.
        let mut newest = org("org_a", "acme-new", T0 + 30);
        newest.name = "Newest".into();
        newest.image_url = "https://img.clerk.com/new".into();
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&newest)).await), "updated");
        assert_eq!(
            organization(&app, "org_a").await,
            Some(OrgDetail {
                name: "Newest".into(),
                slug: Some("acme-new".into()),
                image_url: Some("https://img.clerk.com/new".into()),
                created_by: Some(newest.created_by.clone()),
                clerk_created_at: Some(at(T0)),
                clerk_updated_at: Some(at(T0 + 30)),
                deleted_at: None,
            })
        );
    }

    async fn rule_1_an_older_organization_gives_up_a_slug_a_newer_one_holds(backend) {
        let app = TestApp::spawn(backend).await;
        let holder = org("org_holder", "acme", T0 + 20);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&holder)).await), "created");
        // A newcomer whose snapshot is older than the holder's: created, without the slug.
        let late = org("org_late", "acme", T0 + 10);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&late)).await), "created");
        assert_eq!(
            organizations(&app).await,
            [
                ("org_holder".into(), holder.name.clone(), Some("acme".into()), false),
                ("org_late".into(), late.name.clone(), None, false),
            ]
        );
        // The holder moves on; the slug stays unheld until the newcomer's own newer event.
        let moved = org("org_holder", "acme-moved", T0 + 30);
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&moved)).await), "updated");
        assert_eq!(organization(&app, "org_late").await.unwrap().slug, None);
        let again = org("org_late", "acme", T0 + 40);
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&again)).await), "updated");
        assert_eq!(
            organizations(&app).await,
            [
                ("org_holder".into(), holder.name.clone(), Some("acme-moved".into()), false),
                ("org_late".into(), late.name.clone(), Some("acme".into()), false),
            ]
        );
        assert!(failed_events(&app).await.is_empty());
    }

    async fn rule_1_a_slug_swap_converges_in_every_delivery_order_without_a_failed_event(backend) {
        let app = TestApp::spawn(backend).await;
        // Two organizations created with each other's later slug, then swapped: a takes b's
        // slug at T0+10, b takes a's at T0+20. Every order of the four events (both orders of
        // the swap among them), each order on its own pair of organizations.
        let orders = permutations(&[0usize, 1, 2, 3]);
        for (k, order) in orders.iter().enumerate() {
            let (a, b) = (format!("org_a{k}"), format!("org_b{k}"));
            let (alpha, beta) = (format!("alpha-{k}"), format!("beta-{k}"));
            let events = [
                sample::organization_created(&org(&a, &alpha, T0)),
                sample::organization_created(&org(&b, &beta, T0)),
                sample::organization_updated(&org(&a, &beta, T0 + 10)),
                sample::organization_updated(&org(&b, &alpha, T0 + 20)),
            ];
            for &i in order {
                let answer = app.deliver(&events[i]).await;
                assert_ne!(outcome(&answer), "failed", "order {order:?}, event {i}: {answer:?}");
            }
            assert_eq!(organization(&app, &a).await.unwrap().slug, Some(beta), "order {order:?}");
            assert_eq!(organization(&app, &b).await.unwrap().slug, Some(alpha), "order {order:?}");
        }

        // The swap delivered at the same moment (possibly one transaction): the same result.
        for k in 0..4 {
            let (a, b) = (format!("org_c{k}"), format!("org_d{k}"));
            let (alpha, beta) = (format!("gamma-{k}"), format!("delta-{k}"));
            app.deliver(&sample::organization_created(&org(&a, &alpha, T0))).await;
            app.deliver(&sample::organization_created(&org(&b, &beta, T0))).await;
            let a_takes = sample::organization_updated(&org(&a, &beta, T0 + 10));
            let b_takes = sample::organization_updated(&org(&b, &alpha, T0 + 20));
            let (one, two) = if k % 2 == 0 {
                tokio::join!(app.deliver(&a_takes), app.deliver(&b_takes))
            } else {
                let (two, one) = tokio::join!(app.deliver(&b_takes), app.deliver(&a_takes));
                (one, two)
            };
            assert_eq!((outcome(&one), outcome(&two)), ("updated".into(), "updated".into()));
            assert_eq!(organization(&app, &a).await.unwrap().slug, Some(beta));
            assert_eq!(organization(&app, &b).await.unwrap().slug, Some(alpha));
        }
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_2_organization_deleted_removes_it_and_its_memberships_for_good(backend) {
        let app = TestApp::spawn(backend).await;
        let a = org("org_a", "acme", T0);
        let other = org("org_other", "other", T0);
        for o in [&a, &other] {
            assert_eq!(outcome(&app.deliver(&sample::organization_created(o)).await), "created");
        }
        let m1 = member("orgmem_1", &a, "user_1", T0);
        let m2 = member("orgmem_2", &a, "user_2", T0);
        let kept = member("orgmem_3", &other, "user_1", T0);
        for m in [&m1, &m2, &kept] {
            assert_eq!(outcome(&app.deliver(&sample::membership_created(m)).await), "created");
        }

        let answer = app.deliver(&sample::organization_deleted("org_a", "acme", T0 + 100)).await;
        assert_eq!(outcome(&answer), "deleted");
        assert_eq!(
            organizations(&app).await,
            [("org_other".into(), other.name.clone(), Some("other".into()), false)]
        );
        assert_eq!(
            memberships(&app).await,
            [("orgmem_3".into(), "org_other".into(), "user_1".into(), "org:member".into())]
        );
        assert!(organization_tombstoned(&app, "org_a").await);

        // No later event brings the organization or a membership in it back, however new.
        let mut late = org("org_a", "acme", T0 + 9000);
        late.name = "Back".into();
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&late)).await), "tombstoned");
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&a)).await), "tombstoned");
        let newcomer = member("orgmem_4", &late, "user_4", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&newcomer)).await), "tombstoned");
        let promoted = updated(&m1, "org:admin", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&promoted)).await), "tombstoned");
        // The deletion again (Clerk's replay, another svix-id): nothing more to do.
        let again = app.deliver(&sample::organization_deleted("org_a", "acme", T0 + 100)).await;
        assert_eq!(outcome(&again), "tombstoned");
        assert_eq!(organizations(&app).await.len(), 1);
        assert_eq!(memberships(&app).await.len(), 1);

        // The slug is free for another organization, even with an older snapshot.
        let taker = org("org_taker", "acme", T0 - 1000);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&taker)).await), "created");
        assert_eq!(organization(&app, "org_taker").await.unwrap().slug.as_deref(), Some("acme"));

        // The deletion of an organization never seen: 200, and its late creation stays out.
        let ghost = org("org_ghost", "ghost", T0);
        let answer = app.deliver(&sample::organization_deleted("org_ghost", "ghost", T0 + 100)).await;
        assert_eq!(outcome(&answer), "not_found");
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&ghost)).await), "tombstoned");
        let ghost_member = member("orgmem_5", &ghost, "user_5", T0);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&ghost_member)).await), "tombstoned");
        assert!(organization(&app, "org_ghost").await.is_none());
        assert!(membership(&app, "orgmem_5").await.is_none());
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_2_organization_deleted_in_soft_mode_sets_deleted_at_frees_the_slug_and_removes_memberships(backend) {
        let app = TestApp::spawn_with(backend, |c| c.delete_mode = DeleteMode::Soft).await;
        let a = org("org_a", "acme", T0);
        let other = org("org_other", "other", T0);
        for o in [&a, &other] {
            app.deliver(&sample::organization_created(o)).await;
        }
        for m in [
            member("orgmem_1", &a, "user_1", T0),
            member("orgmem_2", &a, "user_2", T0),
            member("orgmem_3", &other, "user_1", T0),
        ] {
            assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "created");
        }

        let answer = app.deliver(&sample::organization_deleted("org_a", "acme", T0 + 100)).await;
        assert_eq!(outcome(&answer), "deleted");
        let row = organization(&app, "org_a").await.expect("soft mode keeps the row");
        assert!(row.deleted_at.is_some());
        assert_eq!(row.slug, None, "the slug is freed");
        assert_eq!(row.name, a.name, "the rest is kept");
        assert_eq!(row.clerk_updated_at, Some(at(T0)));
        assert_eq!(
            memberships(&app).await,
            [("orgmem_3".into(), "org_other".into(), "user_1".into(), "org:member".into())]
        );
        assert_eq!(organization(&app, "org_other").await.unwrap().deleted_at, None);
        assert!(organization_tombstoned(&app, "org_a").await);

        // Still deleted for good.
        let mut late = org("org_a", "acme", T0 + 9000);
        late.name = "Back".into();
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&late)).await), "tombstoned");
        let newcomer = member("orgmem_4", &late, "user_4", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&newcomer)).await), "tombstoned");
        assert_eq!(organization(&app, "org_a").await, Some(row));
        assert_eq!(memberships(&app).await.len(), 1);

        // The freed slug goes to another organization.
        let taker = org("org_taker", "acme", T0 - 1000);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&taker)).await), "created");
        assert_eq!(organization(&app, "org_taker").await.unwrap().slug.as_deref(), Some("acme"));
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_2_hard_delete_kept_by_an_apps_foreign_key_falls_back_to_soft_delete(backend) {
        let app = TestApp::spawn(backend).await;
        let referenced = org("org_ref", "referenced", T0);
        let free = org("org_free", "free", T0);
        for o in [&referenced, &free] {
            app.deliver(&sample::organization_created(o)).await;
        }
        for m in [
            member("orgmem_1", &referenced, "user_1", T0),
            member("orgmem_2", &referenced, "user_2", T0),
            member("orgmem_3", &free, "user_1", T0),
        ] {
            assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "created");
        }
        // The app's own table points at organizations, as Prisma's required relation does.
        execute(
            &app,
            r#"CREATE TABLE "projects" (
                "id" TEXT NOT NULL PRIMARY KEY,
                "organizationId" TEXT NOT NULL
                    REFERENCES "organizations"("id") ON DELETE RESTRICT ON UPDATE CASCADE)"#,
        )
        .await;
        execute(&app, r#"INSERT INTO "projects" ("id", "organizationId") VALUES ('prj_1', 'org_ref')"#).await;

        // Both deletions at the same moment (possibly one transaction): the refused one must
        // not take the other with it, nor fail.
        let (referenced_deleted, free_deleted) = (
            sample::organization_deleted("org_ref", "referenced", T0 + 100),
            sample::organization_deleted("org_free", "free", T0 + 100),
        );
        let (kept, removed) =
            tokio::join!(app.deliver(&referenced_deleted), app.deliver(&free_deleted));
        assert_eq!(outcome(&kept), "deleted");
        assert_eq!(outcome(&removed), "deleted");
        assert!(organization(&app, "org_free").await.is_none(), "an unreferenced organization goes");
        let row = organization(&app, "org_ref").await.expect("the referenced row is kept");
        assert!(row.deleted_at.is_some());
        assert_eq!(row.slug, None);
        assert!(memberships(&app).await.is_empty(), "the memberships of both go");
        assert!(organization_tombstoned(&app, "org_ref").await);
        assert!(organization_tombstoned(&app, "org_free").await);
        assert_eq!(failed_events(&app).await, []);

        // Deleted for good all the same.
        let late = org("org_ref", "referenced", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::organization_updated(&late)).await), "tombstoned");
        let newcomer = member("orgmem_4", &late, "user_4", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&newcomer)).await), "tombstoned");
        assert_eq!(organization(&app, "org_ref").await, Some(row));
        assert!(memberships(&app).await.is_empty());
    }

    async fn rule_3_a_membership_lands_before_its_organization_and_newest_wins(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let m = SampleMembership::new("orgmem_1", o.clone(), "user_1", T0);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "created");
        assert_eq!(organizations(&app).await.len(), 1);
        let mut admin = m.clone().with_role("org:admin");
        admin.updated_at = T0 + 10;
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&admin)).await), "updated");
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&m)).await), "stale");
        assert_eq!(
            memberships(&app).await,
            [("orgmem_1".into(), "org_a".into(), "user_1".into(), "org:admin".into())]
        );
        // Deleted at a time after the update: gone, and the older snapshot stays out.
        let deleted = sample::membership_deleted(&admin, T0 + 20);
        assert_eq!(outcome(&app.deliver(&deleted).await), "deleted");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "tombstoned");
        assert!(memberships(&app).await.is_empty());
    }

    async fn rule_3_the_embedded_organization_is_applied_by_rule_1(backend) {
        let app = TestApp::spawn(backend).await;
        // Before the organization's own event: the membership brings the whole organization.
        let embedded = org("org_a", "acme", T0 + 10);
        let m1 = member("orgmem_1", &embedded, "user_1", T0 + 10);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m1)).await), "created");
        assert_eq!(
            organization(&app, "org_a").await,
            Some(OrgDetail {
                name: embedded.name.clone(),
                slug: Some("acme".into()),
                image_url: Some(embedded.image_url.clone()),
                created_by: Some(embedded.created_by.clone()),
                clerk_created_at: Some(at(T0)),
                clerk_updated_at: Some(at(T0 + 10)),
                deleted_at: None,
            })
        );
        // The organization's own, older, event arrives late: stale.
        let created = org("org_a", "acme-first", T0);
        assert_eq!(outcome(&app.deliver(&sample::organization_created(&created)).await), "stale");

        // A membership embedding a newer organization updates it...
        let mut renamed = org("org_a", "acme-renamed", T0 + 20);
        renamed.name = "Renamed".into();
        let m2 = member("orgmem_2", &renamed, "user_2", T0 + 20);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m2)).await), "created");
        let row = organization(&app, "org_a").await.unwrap();
        assert_eq!((row.name.as_str(), row.slug.as_deref()), ("Renamed", Some("acme-renamed")));
        assert_eq!(row.clerk_updated_at, Some(at(T0 + 20)));
        // ...one embedding an older organization lands, and leaves the organization alone.
        let mut old = org("org_a", "acme-old", T0 + 15);
        old.name = "Old".into();
        let m3 = member("orgmem_3", &old, "user_3", T0 + 30);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m3)).await), "created");
        assert_eq!(organization(&app, "org_a").await.unwrap(), row);

        // A stale membership snapshot still brings a newer organization it embeds.
        let mut newest = org("org_a", "acme-newest", T0 + 40);
        newest.name = "Newest".into();
        let mut stale = m1.clone();
        stale.organization = newest;
        stale.updated_at = T0 + 5;
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&stale)).await), "stale");
        let row = organization(&app, "org_a").await.unwrap();
        assert_eq!((row.name.as_str(), row.slug.as_deref()), ("Newest", Some("acme-newest")));
        assert_eq!(row.clerk_updated_at, Some(at(T0 + 40)));

        // The embedded organization's slug moves like rule 1 says: a newer one takes it.
        let holder = org("org_b", "beta", T0);
        app.deliver(&sample::organization_created(&holder)).await;
        let taker = org("org_c", "beta", T0 + 50);
        let m4 = member("orgmem_4", &taker, "user_1", T0 + 50);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m4)).await), "created");
        assert_eq!(organization(&app, "org_b").await.unwrap().slug, None);
        assert_eq!(organization(&app, "org_c").await.unwrap().slug.as_deref(), Some("beta"));
        assert_eq!(
            memberships(&app).await,
            [
                ("orgmem_1".into(), "org_a".into(), "user_1".into(), "org:member".into()),
                ("orgmem_2".into(), "org_a".into(), "user_2".into(), "org:member".into()),
                ("orgmem_3".into(), "org_a".into(), "user_3".into(), "org:member".into()),
                ("orgmem_4".into(), "org_c".into(), "user_1".into(), "org:member".into()),
            ]
        );
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_3_membership_snapshots_apply_by_newest_updated_at(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let m = member("orgmem_1", &o, "user_1", T0);
        // organizationMembership.updated for a membership never seen creates it.
        let admin = updated(&m, "org:admin", T0 + 20);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&admin)).await), "created");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "stale");
        let older = updated(&m, "org:billing", T0 + 10);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&older)).await), "stale");
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&admin)).await), "unchanged");
        assert_eq!(membership(&app, "orgmem_1").await, Some(("org:admin".into(), Some(at(T0)), Some(at(T0 + 20)))));
        let custom = updated(&m, "org:custom_role", T0 + 30);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&custom)).await), "updated");
        assert_eq!(membership(&app, "orgmem_1").await, Some(("org:custom_role".into(), Some(at(T0)), Some(at(T0 + 30)))));
    }

    async fn rule_3_a_newer_membership_of_the_same_user_replaces_the_older_which_is_stale_later(backend) {
        let app = TestApp::spawn(backend).await;
        // The newer after the older: it replaces it; the older's late events are stale.
        let a = org("org_a", "acme", T0);
        let old = member("orgmem_old", &a, "user_1", T0 + 10);
        let new = member("orgmem_new", &a, "user_1", T0 + 20).with_role("org:admin");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&old)).await), "created");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&new)).await), "created");
        assert_eq!(
            memberships(&app).await,
            [("orgmem_new".into(), "org_a".into(), "user_1".into(), "org:admin".into())]
        );
        let late = updated(&old, "org:billing", T0 + 15);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&late)).await), "stale");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&old)).await), "stale");

        // The other order, in another organization: the older arriving second is stale.
        let b = org("org_b", "beta", T0);
        let old = member("orgmem_old_b", &b, "user_1", T0 + 10);
        let new = member("orgmem_new_b", &b, "user_1", T0 + 20).with_role("org:admin");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&new)).await), "created");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&old)).await), "stale");

        // Another user of the organization, and the user elsewhere, are not touched.
        let c = org("org_c", "gamma", T0);
        let elsewhere = member("orgmem_c", &c, "user_1", T0);
        let colleague = member("orgmem_colleague", &a, "user_2", T0);
        for m in [&elsewhere, &colleague] {
            assert_eq!(outcome(&app.deliver(&sample::membership_created(m)).await), "created");
        }
        assert_eq!(
            memberships(&app).await,
            [
                ("orgmem_c".into(), "org_c".into(), "user_1".into(), "org:member".into()),
                ("orgmem_colleague".into(), "org_a".into(), "user_2".into(), "org:member".into()),
                ("orgmem_new".into(), "org_a".into(), "user_1".into(), "org:admin".into()),
                ("orgmem_new_b".into(), "org_b".into(), "user_1".into(), "org:admin".into()),
            ]
        );
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_3_a_newer_membership_replaces_one_updated_earlier_in_the_same_transaction(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let old = member("orgmem_old", &o, "user_1", T0 + 10);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&old)).await), "created");
        // One transaction (a page read from Clerk, as the webhook's group commit can also make
        // one) holding the stored membership's update and then its replacement.
        let promoted = snapshot(&sample::membership_updated(&updated(&old, "org:admin", T0 + 15)));
        let new = snapshot(&sample::membership_created(&member("orgmem_new", &o, "user_1", T0 + 20)));
        let outcomes = app
            .store
            .apply_memberships(&[promoted, new], None, false)
            .await
            .expect("the page is applied, not refused");
        assert_eq!(outcomes, [Outcome::Updated, Outcome::Created]);
        assert_eq!(
            memberships(&app).await,
            [("orgmem_new".into(), "org_a".into(), "user_1".into(), "org:member".into())]
        );
    }

    async fn rule_3_a_newer_membership_replaces_one_updated_earlier_in_the_same_batch_of_deliveries(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let old = member("orgmem_old", &o, "user_1", T0 + 10);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&old)).await), "created");
        let bodies = [
            sample::membership_updated(&updated(&old, "org:admin", T0 + 15)),
            sample::membership_created(&member("orgmem_new", &o, "user_1", T0 + 20)),
        ];
        let events: Vec<ClerkEvent> = bodies.iter().map(|b| parse_event(b.as_bytes()).unwrap()).collect();
        let ids = ["msg_batch_1", "msg_batch_2"];
        let deliveries: Vec<(&ClerkEvent, DeliveryRecord<'_>)> = events
            .iter()
            .zip(&bodies)
            .zip(ids)
            .map(|((event, body), svix_id)| {
                (event, DeliveryRecord { svix_id, svix_timestamp: T0 / 1000, payload: body })
            })
            .collect();
        let outcomes: Vec<Outcome> = app
            .store
            .record_deliveries(&deliveries, DeleteMode::Hard)
            .await
            .into_iter()
            .map(|r| r.expect("applied"))
            .collect();
        assert_eq!(outcomes, [Outcome::Updated, Outcome::Created]);
        assert_eq!(
            memberships(&app).await,
            [("orgmem_new".into(), "org_a".into(), "user_1".into(), "org:member".into())]
        );
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_3_a_user_who_leaves_and_rejoins_converges_in_every_delivery_order(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        // The old membership: created at T0+10, promoted at T0+15, deleted at T0+18 (sent as
        // it was); the user rejoins with a new membership id at T0+20.
        for (k, order) in permutations(&[0usize, 1, 2, 3]).iter().enumerate() {
            let user = format!("user_{k}");
            let old = member(&format!("orgmem_old_{k}"), &o, &user, T0 + 10);
            let promoted = updated(&old, "org:admin", T0 + 15);
            let new = member(&format!("orgmem_new_{k}"), &o, &user, T0 + 20).with_role("org:billing");
            let events = [
                sample::membership_created(&old),
                sample::membership_updated(&promoted),
                sample::membership_deleted(&promoted, T0 + 18),
                sample::membership_created(&new),
            ];
            for &i in order {
                let answer = app.deliver(&events[i]).await;
                assert_ne!(outcome(&answer), "failed", "order {order:?}: {answer:?}");
            }
            let rows: Vec<MemberRow> = memberships(&app).await.into_iter().filter(|m| m.2 == user).collect();
            assert_eq!(
                rows,
                [(new.id.clone(), "org_a".into(), user.clone(), "org:billing".into())],
                "order {order:?}"
            );
        }
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_4_a_membership_deletion_is_ordered_by_the_envelope_timestamp(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let m = member("orgmem_1", &o, "user_1", T0);
        let admin = updated(&m, "org:admin", T0 + 10);
        app.deliver(&sample::membership_created(&m)).await;
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&admin)).await), "updated");

        // Clerk sends the membership as it was (updated_at T0+10) at T0+100.
        let deletion = sample::membership_deleted(&admin, T0 + 100);
        assert_eq!(outcome(&app.deliver(&deletion).await), "deleted");
        assert!(membership(&app, "orgmem_1").await.is_none());
        assert_eq!(membership_tombstone(&app, "orgmem_1").await, Some(T0 + 100));
        // The organization stays.
        assert_eq!(organizations(&app).await.len(), 1);

        // Snapshots no newer than the deletion never bring it back, though newer than the row was.
        for t in [T0 + 50, T0 + 100] {
            let late = updated(&m, "org:billing", t);
            assert_eq!(outcome(&app.deliver(&sample::membership_updated(&late)).await), "tombstoned", "at {t}");
        }
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "tombstoned");
        // The same deletion replayed: nothing more.
        assert_eq!(outcome(&app.deliver(&deletion).await), "tombstoned");
        assert!(memberships(&app).await.is_empty());

        // Re-added after the deletion: back.
        let mut readded = member("orgmem_1", &o, "user_1", T0 + 101);
        readded.role = "org:member".into();
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&readded)).await), "created");
        assert_eq!(membership(&app, "orgmem_1").await, Some(("org:member".into(), Some(at(T0 + 101)), Some(at(T0 + 101)))));

        // Deleted again later: the tombstone moves on to the newer time.
        assert_eq!(outcome(&app.deliver(&sample::membership_deleted(&readded, T0 + 200)).await), "deleted");
        assert_eq!(membership_tombstone(&app, "orgmem_1").await, Some(T0 + 200));
        let between = updated(&readded, "org:admin", T0 + 150);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&between)).await), "tombstoned");
        // An older deletion arriving late does not move the tombstone back.
        assert_eq!(outcome(&app.deliver(&deletion).await), "tombstoned");
        assert_eq!(membership_tombstone(&app, "orgmem_1").await, Some(T0 + 200));
        assert!(memberships(&app).await.is_empty());
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_4_created_deleted_and_re_added_converge_in_every_delivery_order(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        // Created at T0, deleted at T0+100 (updated_at not bumped), re-added at T0+200.
        for (k, order) in permutations(&[0usize, 1, 2]).iter().enumerate() {
            let id = format!("orgmem_readded_{k}");
            let m = member(&id, &o, &format!("user_r{k}"), T0);
            let readded = member(&id, &o, &format!("user_r{k}"), T0 + 200);
            let events = [
                sample::membership_created(&m),
                sample::membership_deleted(&m, T0 + 100),
                sample::membership_created(&readded),
            ];
            for &i in order {
                let answer = app.deliver(&events[i]).await;
                assert_ne!(outcome(&answer), "failed", "order {order:?}: {answer:?}");
            }
            assert_eq!(
                membership(&app, &id).await,
                Some(("org:member".into(), Some(at(T0 + 200)), Some(at(T0 + 200)))),
                "order {order:?}: re-added after the deletion, so present"
            );
        }
        // Without the re-adding, both orders end without the membership.
        for (k, order) in permutations(&[0usize, 1]).iter().enumerate() {
            let id = format!("orgmem_gone_{k}");
            let m = member(&id, &o, &format!("user_g{k}"), T0);
            let events = [sample::membership_created(&m), sample::membership_deleted(&m, T0 + 100)];
            for &i in order {
                app.deliver(&events[i]).await;
            }
            assert!(membership(&app, &id).await.is_none(), "order {order:?}");
            assert_eq!(membership_tombstone(&app, &id).await, Some(T0 + 100), "order {order:?}");
        }
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_4_the_published_examples_timestamp_in_seconds_is_read_as_seconds(backend) {
        let app = TestApp::spawn(backend).await;
        // As published: created then deleted, envelope timestamps 1716883200 (seconds).
        assert_eq!(outcome(&app.deliver(&fixture("organizationMembership.created.json")).await), "created");
        assert_eq!(
            memberships(&app).await,
            [(
                "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
                "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
                "user_2h8op3Isl1QR7tKu5FGNfaLKEoU".into(),
                "org:member".into()
            )]
        );
        assert_eq!(outcome(&app.deliver(&fixture("organizationMembership.deleted.json")).await), "deleted");
        assert!(memberships(&app).await.is_empty());
        assert_eq!(membership_tombstone(&app, "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await, Some(1_716_883_200_000));

        // The same envelope, for a membership last updated 100 s before it was sent: only
        // seconds read as seconds order the deletion after a snapshot taken in between.
        let mut created: Value = serde_json::from_str(&fixture("organizationMembership.created.json")).unwrap();
        let mut deleted: Value = serde_json::from_str(&fixture("organizationMembership.deleted.json")).unwrap();
        for event in [&mut created, &mut deleted] {
            event["data"]["id"] = json!("orgmem_seconds");
            event["data"]["public_user_data"]["user_id"] = json!("user_seconds");
            event["data"]["updated_at"] = json!(1_716_883_100_000i64);
        }
        assert_eq!(deleted["timestamp"], json!(1_716_883_200i64));
        assert_eq!(outcome(&app.deliver(&created.to_string()).await), "created");
        assert_eq!(outcome(&app.deliver(&deleted.to_string()).await), "deleted");
        assert_eq!(membership_tombstone(&app, "orgmem_seconds").await, Some(1_716_883_200_000));
        let mut between = created.clone();
        between["type"] = json!("organizationMembership.updated");
        between["data"]["updated_at"] = json!(1_716_883_150_000i64);
        assert_eq!(outcome(&app.deliver(&between.to_string()).await), "tombstoned");
        assert!(memberships(&app).await.is_empty());
    }

    async fn rule_5_user_deleted_removes_the_users_memberships_and_later_ones_are_tombstoned(backend) {
        let app = TestApp::spawn(backend).await;
        assert_eq!(outcome(&app.deliver(&sample::user_created(&SampleUser::new("user_1", T0))).await), "created");
        let a = org("org_a", "acme", T0);
        let b = org("org_b", "beta", T0);
        let in_a = member("orgmem_1a", &a, "user_1", T0);
        let in_b = member("orgmem_1b", &b, "user_1", T0);
        let colleague = member("orgmem_2a", &a, "user_2", T0);
        for m in [&in_a, &in_b, &colleague] {
            assert_eq!(outcome(&app.deliver(&sample::membership_created(m)).await), "created");
        }

        assert_eq!(outcome(&app.deliver(&sample::user_deleted("user_1", T0 + 100)).await), "deleted");
        assert!(app.user("user_1").await.is_none());
        assert_eq!(
            memberships(&app).await,
            [("orgmem_2a".into(), "org_a".into(), "user_2".into(), "org:member".into())]
        );
        assert_eq!(organizations(&app).await.len(), 2, "the organizations stay");

        // Later membership events for the deleted user change nothing, however new.
        let promoted = updated(&in_a, "org:admin", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&promoted)).await), "tombstoned");
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&in_b)).await), "tombstoned");
        let c = org("org_c", "gamma", T0 + 9000);
        let joined = member("orgmem_1c", &c, "user_1", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&joined)).await), "tombstoned");
        assert_eq!(memberships(&app).await.len(), 1);
        assert!(app.tombstoned("user_1").await);
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_5_user_deleted_in_soft_mode_or_before_the_user_synced_removes_memberships(backend) {
        let app = TestApp::spawn_with(backend, |c| c.delete_mode = DeleteMode::Soft).await;
        app.deliver(&sample::user_created(&SampleUser::new("user_1", T0))).await;
        let a = org("org_a", "acme", T0);
        // user_3 never synced: their membership arrived before (or without) them.
        for m in [
            member("orgmem_1", &a, "user_1", T0),
            member("orgmem_2", &a, "user_2", T0),
            member("orgmem_3", &a, "user_3", T0),
        ] {
            assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "created");
        }
        assert_eq!(outcome(&app.deliver(&sample::user_deleted("user_1", T0 + 100)).await), "deleted");
        assert!(app.user("user_1").await.unwrap().deleted_at.is_some());
        assert_eq!(outcome(&app.deliver(&sample::user_deleted("user_3", T0 + 100)).await), "not_found");
        assert_eq!(
            memberships(&app).await,
            [("orgmem_2".into(), "org_a".into(), "user_2".into(), "org:member".into())]
        );
        let back = member("orgmem_3", &a, "user_3", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&back)).await), "tombstoned");
        assert_eq!(memberships(&app).await.len(), 1);
    }

    async fn rule_5_user_deleted_kept_by_an_apps_foreign_key_still_removes_memberships(backend) {
        let app = TestApp::spawn(backend).await;
        app.deliver(&sample::user_created(&SampleUser::new("user_1", T0))).await;
        let a = org("org_a", "acme", T0);
        let m = member("orgmem_1", &a, "user_1", T0);
        assert_eq!(outcome(&app.deliver(&sample::membership_created(&m)).await), "created");
        execute(
            &app,
            r#"CREATE TABLE "posts" (
                "id" TEXT NOT NULL PRIMARY KEY,
                "authorId" TEXT NOT NULL REFERENCES "users"("id") ON DELETE RESTRICT ON UPDATE CASCADE)"#,
        )
        .await;
        execute(&app, r#"INSERT INTO "posts" ("id", "authorId") VALUES ('post_1', 'user_1')"#).await;

        assert_eq!(outcome(&app.deliver(&sample::user_deleted("user_1", T0 + 100)).await), "deleted");
        assert!(app.user("user_1").await.expect("kept for the foreign key").deleted_at.is_some());
        assert!(memberships(&app).await.is_empty());
        let back = updated(&m, "org:admin", T0 + 9000);
        assert_eq!(outcome(&app.deliver(&sample::membership_updated(&back)).await), "tombstoned");
        assert!(memberships(&app).await.is_empty());
        assert_eq!(failed_events(&app).await, []);
    }

    async fn rule_6_other_organization_event_types_are_stored_as_ignored(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        app.deliver(&sample::organization_created(&o)).await;
        let before = organization(&app, "org_a").await;
        let events = [
            ("organizationInvitation.created", json!({"object": "organization_invitation", "id": "orginv_1", "email_address": "new@example.com", "organization_id": "org_a", "role": "org:member", "status": "pending", "public_metadata": {}, "created_at": T0, "updated_at": T0 + 1})),
            ("organizationInvitation.accepted", json!({"object": "organization_invitation", "id": "orginv_1", "email_address": "new@example.com", "organization_id": "org_a", "role": "org:member", "status": "accepted", "created_at": T0, "updated_at": T0 + 2})),
            ("organizationInvitation.revoked", json!({"object": "organization_invitation", "id": "orginv_2", "organization_id": "org_a", "role": "org:admin", "status": "revoked", "created_at": T0, "updated_at": T0 + 3})),
            ("organizationDomain.created", json!({"object": "organization_domain", "id": "orgdmn_1", "organization_id": "org_a", "name": "acme.com", "enrollment_mode": "automatic_invitation", "created_at": T0, "updated_at": T0})),
            ("organizationDomain.updated", json!({"object": "organization_domain", "id": "orgdmn_1", "organization_id": "org_a", "name": "acme.com", "created_at": T0, "updated_at": T0 + 5})),
            ("organizationDomain.deleted", json!({"object": "organization_domain", "id": "orgdmn_1", "deleted": true})),
            ("role.created", json!({"object": "role", "id": "role_1", "key": "org:editor", "name": "Editor", "permissions": [], "created_at": T0, "updated_at": T0})),
            ("role.updated", json!({"object": "role", "id": "role_1", "key": "org:editor", "name": "Editors", "created_at": T0, "updated_at": T0 + 1})),
            ("role.deleted", json!({"object": "role", "id": "role_1", "deleted": true})),
            ("permission.created", json!({"object": "permission", "id": "perm_1", "key": "org:posts:read", "name": "Read posts", "created_at": T0, "updated_at": T0})),
            ("permission.updated", json!({"object": "permission", "id": "perm_1", "key": "org:posts:read", "created_at": T0, "updated_at": T0 + 1})),
            ("permission.deleted", json!({"object": "permission", "id": "perm_1", "deleted": true})),
            ("session.created", json!({"object": "session", "id": "sess_1", "user_id": "user_1", "status": "active"})),
            ("email.created", json!({"object": "email", "id": "ema_1", "to_email_address": "a@example.com"})),
        ];
        for (event_type, data) in &events {
            let body = sample::envelope(event_type, data.clone(), T0).to_string();
            assert_eq!(outcome(&app.deliver(&body).await), "ignored", "{event_type}");
        }
        let inbox = app.inbox().await;
        for (event_type, _) in &events {
            let entry = inbox.iter().find(|e| e.event_type == *event_type).expect("stored");
            assert_eq!((entry.outcome.as_str(), entry.error.as_deref()), ("ignored", None), "{event_type}");
        }
        assert_eq!(organization(&app, "org_a").await, before);
        assert!(memberships(&app).await.is_empty());
        assert!(!organization_tombstoned(&app, "org_a").await);
    }

    async fn fixtures_delivered_verbatim_are_applied(backend) {
        let app = TestApp::spawn(backend).await;
        let org_id = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S";
        assert_eq!(outcome(&app.deliver(&fixture("organization.created.json")).await), "created");
        assert_eq!(
            organization(&app, org_id).await,
            Some(OrgDetail {
                name: "Acme Corp".into(),
                slug: Some("acme-corp".into()),
                image_url: Some("https://img.clerk.com/xxxxxx".into()),
                created_by: Some("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into()),
                clerk_created_at: Some(at(1_716_883_200_000)),
                clerk_updated_at: Some(at(1_716_883_200_000)),
                deleted_at: None,
            })
        );
        assert_eq!(outcome(&app.deliver(&fixture("organizationMembership.created.json")).await), "created");
        assert_eq!(
            memberships(&app).await,
            [(
                "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S".into(),
                org_id.into(),
                "user_2h8op3Isl1QR7tKu5FGNfaLKEoU".into(),
                "org:member".into()
            )]
        );
        assert_eq!(
            membership(&app, "orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await,
            Some(("org:member".into(), Some(at(1_716_883_200_000)), Some(at(1_716_883_200_000))))
        );
        assert_eq!(outcome(&app.deliver(&fixture("organizationMembership.deleted.json")).await), "deleted");
        assert!(memberships(&app).await.is_empty());
        assert_eq!(organizations(&app).await.len(), 1);
        assert_eq!(outcome(&app.deliver(&fixture("organization.deleted.json")).await), "deleted");
        assert!(organizations(&app).await.is_empty());
        assert!(organization_tombstoned(&app, org_id).await);
        let inbox = app.inbox().await;
        assert_eq!(inbox.len(), 4);
        assert!(inbox.iter().all(|e| e.outcome != "failed" && e.error.is_none()), "{inbox:?}");
    }

    async fn redelivered_svix_id_is_a_duplicate_and_changes_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        assert_eq!(outcome(&app.deliver_as("msg_org", &sample::organization_created(&o)).await), "created");
        let m = member("orgmem_1", &o, "user_1", T0);
        assert_eq!(outcome(&app.deliver_as("msg_member", &sample::membership_created(&m)).await), "created");
        let orgs = organizations(&app).await;
        let members = memberships(&app).await;

        // Svix retries under the same ids; even different (newer) bodies change nothing.
        assert_eq!(outcome(&app.deliver_as("msg_org", &sample::organization_created(&o)).await), "duplicate");
        let mut renamed = org("org_a", "acme-2", T0 + 10);
        renamed.name = "Renamed".into();
        assert_eq!(outcome(&app.deliver_as("msg_org", &sample::organization_updated(&renamed)).await), "duplicate");
        assert_eq!(outcome(&app.deliver_as("msg_member", &sample::membership_created(&m)).await), "duplicate");
        let admin = updated(&m, "org:admin", T0 + 10);
        assert_eq!(outcome(&app.deliver_as("msg_member", &sample::membership_updated(&admin)).await), "duplicate");
        assert_eq!(organizations(&app).await, orgs);
        assert_eq!(memberships(&app).await, members);

        // Deletions too: once applied, their redelivery is a duplicate, and a deletion under
        // an id already used changes nothing.
        assert_eq!(outcome(&app.deliver_as("msg_member", &sample::membership_deleted(&m, T0 + 20)).await), "duplicate");
        assert_eq!(outcome(&app.deliver_as("msg_org", &sample::organization_deleted("org_a", "acme", T0 + 20)).await), "duplicate");
        assert_eq!(organizations(&app).await, orgs);
        assert_eq!(memberships(&app).await, members);
        assert!(!organization_tombstoned(&app, "org_a").await);
        assert_eq!(membership_tombstone(&app, "orgmem_1").await, None);

        let deletion = sample::membership_deleted(&m, T0 + 20);
        assert_eq!(outcome(&app.deliver_as("msg_member_deleted", &deletion).await), "deleted");
        assert_eq!(outcome(&app.deliver_as("msg_member_deleted", &deletion).await), "duplicate");
        let deletion = sample::organization_deleted("org_a", "acme", T0 + 30);
        assert_eq!(outcome(&app.deliver_as("msg_org_deleted", &deletion).await), "deleted");
        assert_eq!(outcome(&app.deliver_as("msg_org_deleted", &deletion).await), "duplicate");
        let inbox = app.inbox().await;
        let mut ids: Vec<&str> = inbox.iter().map(|e| e.svix_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["msg_member", "msg_member_deleted", "msg_org", "msg_org_deleted"]);
    }

    async fn unusable_organization_events_are_stored_as_failed_with_a_readable_error(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let m = member("orgmem_1", &o, "user_1", T0);

        let mut no_id = o.to_json();
        no_id.as_object_mut().unwrap().remove("id");
        let mut no_updated_at = o.to_json();
        no_updated_at["updated_at"] = Value::Null;
        let mut no_user_id = m.to_json();
        no_user_id["public_user_data"].as_object_mut().unwrap().remove("user_id");
        let mut no_public_user_data = m.to_json();
        no_public_user_data.as_object_mut().unwrap().remove("public_user_data");
        let mut no_organization = m.to_json();
        no_organization.as_object_mut().unwrap().remove("organization");
        let mut organization_without_updated_at = m.to_json();
        organization_without_updated_at["organization"].as_object_mut().unwrap().remove("updated_at");
        let mut membership_without_updated_at = m.to_json();
        membership_without_updated_at.as_object_mut().unwrap().remove("updated_at");

        // (type, data, words the stored error must contain, user id the inbox row carries)
        let cases: [(&str, Value, &[&str], Option<&str>); 8] = [
            ("organization.created", no_id, &["organization", "no id"], None),
            ("organization.updated", no_updated_at, &["org_a", "updated_at"], None),
            ("organization.deleted", json!({"object": "organization", "slug": "acme", "deleted": true}), &["organization.deleted", "id"], None),
            ("organizationMembership.created", no_user_id, &["orgmem_1", "public_user_data.user_id"], None),
            ("organizationMembership.updated", no_public_user_data, &["orgmem_1", "public_user_data.user_id"], None),
            ("organizationMembership.created", no_organization, &["orgmem_1", "organization"], Some("user_1")),
            ("organizationMembership.deleted", organization_without_updated_at, &["orgmem_1", "org_a", "updated_at"], Some("user_1")),
            ("organizationMembership.updated", membership_without_updated_at, &["orgmem_1", "updated_at"], Some("user_1")),
        ];
        for (i, (event_type, data, words, user_id)) in cases.iter().enumerate() {
            let svix_id = format!("msg_unusable_{i}");
            let body = sample::envelope(event_type, data.clone(), T0).to_string();
            let answer = app.deliver_as(&svix_id, &body).await;
            assert_eq!(outcome(&answer), "failed", "{event_type} #{i}: {answer:?}");
            let entry = app.inbox_entry(&svix_id).await.expect("stored");
            assert_eq!(entry.outcome, "failed");
            assert_eq!(entry.event_type, *event_type);
            assert_eq!(entry.user_id.as_deref(), *user_id, "{event_type} #{i}");
            assert_eq!(entry.payload, body, "the event is kept as it arrived, for a replay");
            let error = entry.error.unwrap_or_default();
            for word in *words {
                assert!(error.contains(word), "{event_type} #{i}: {error:?} should mention {word:?}");
            }
            // Redelivered: a duplicate, not a second failure.
            assert_eq!(outcome(&app.deliver_as(&svix_id, &body).await), "duplicate");
        }
        assert!(organizations(&app).await.is_empty());
        assert!(memberships(&app).await.is_empty());
        assert_eq!(app.inbox().await.len(), cases.len());
    }

    async fn concurrent_membership_deliveries_converge_to_the_newest_state(backend) {
        let app = TestApp::spawn(backend).await;
        // 20 versions of 5 members of one organization, each embedding the organization as it
        // was at that moment, all sent at once in a scrambled order.
        let events: Vec<String> = (0..20)
            .map(|i| (i * 7) % 20)
            .map(|i: i64| {
                let mut o = org("org_a", "acme", T0 + i);
                o.name = format!("Acme v{i}");
                let user = i % 5;
                let m = member(&format!("orgmem_{user}"), &o, &format!("user_{user}"), T0 + i)
                    .with_role(format!("org:role_{i}"));
                if i < 5 {
                    sample::membership_created(&m)
                } else {
                    sample::membership_updated(&m)
                }
            })
            .collect();
        let answers = futures::future::join_all(events.iter().map(|body| app.deliver(body))).await;
        for answer in &answers {
            assert!(
                ["created", "updated", "stale", "unchanged"].contains(&outcome(answer).as_str()),
                "{answer:?}"
            );
        }
        let row = organization(&app, "org_a").await.unwrap();
        assert_eq!(
            (row.name.as_str(), row.slug.as_deref(), row.clerk_updated_at),
            ("Acme v19", Some("acme"), Some(at(T0 + 19)))
        );
        let expected: Vec<MemberRow> = (0..5)
            .map(|u| (format!("orgmem_{u}"), "org_a".into(), format!("user_{u}"), format!("org:role_{}", 15 + u)))
            .collect();
        assert_eq!(memberships(&app).await, expected);
        for u in 0..5 {
            assert_eq!(membership(&app, &format!("orgmem_{u}")).await.unwrap().2, Some(at(T0 + 15 + u)));
        }
        assert_eq!(app.inbox().await.len(), 20);
        assert_eq!(failed_events(&app).await, []);
    }

    async fn concurrent_memberships_of_one_user_in_one_organization_keep_only_the_newest(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        // Ten membership ids for the same user and organization, sent at once.
        let events: Vec<String> = (0..10)
            .map(|i| (i * 3) % 10)
            .map(|i: i64| sample::membership_created(&member(&format!("orgmem_{i}"), &o, "user_1", T0 + i)))
            .collect();
        let answers = futures::future::join_all(events.iter().map(|body| app.deliver(body))).await;
        for answer in &answers {
            assert!(["created", "stale"].contains(&outcome(answer).as_str()), "{answer:?}");
        }
        assert_eq!(
            memberships(&app).await,
            [("orgmem_9".into(), "org_a".into(), "user_1".into(), "org:member".into())]
        );
        assert_eq!(failed_events(&app).await, []);
    }

    async fn inbox_row_of_a_membership_event_carries_the_user_id(backend) {
        let app = TestApp::spawn(backend).await;
        let o = org("org_a", "acme", T0);
        let m = member("orgmem_1", &o, "user_1", T0);
        let cases = [
            ("msg_org", sample::organization_created(&o), None),
            ("msg_created", sample::membership_created(&m), Some("user_1")),
            ("msg_updated", sample::membership_updated(&updated(&m, "org:admin", T0 + 10)), Some("user_1")),
            // Stale, or tombstoned: the row still says whose it is.
            ("msg_stale", sample::membership_updated(&m), Some("user_1")),
            ("msg_deleted", sample::membership_deleted(&m, T0 + 20), Some("user_1")),
            ("msg_tombstoned", sample::membership_created(&m), Some("user_1")),
            ("msg_org_deleted", sample::organization_deleted("org_a", "acme", T0 + 30), None),
        ];
        for (svix_id, body, _) in &cases {
            let answer = app.deliver_as(svix_id, body).await;
            assert_ne!(outcome(&answer), "failed", "{svix_id}");
        }
        for (svix_id, _, user_id) in &cases {
            let entry = app.inbox_entry(svix_id).await.expect("stored");
            assert_eq!(entry.user_id.as_deref(), *user_id, "{svix_id} ({})", entry.outcome);
        }
        let outcomes: Vec<String> = app.inbox().await.into_iter().map(|e| format!("{}={}", e.svix_id, e.outcome)).collect();
        for expected in ["msg_stale=stale", "msg_deleted=deleted", "msg_tombstoned=tombstoned"] {
            assert!(outcomes.iter().any(|o| o == expected), "{outcomes:?}");
        }
    }
}
