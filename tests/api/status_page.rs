//! The operators' status page (`GET /status`) and its replay button: off without an admin token,
//! behind it otherwise (bearer or HTTP Basic), the figures it shows read from a real database,
//! every value from the network escaped, replay refused across origins; and the page as a real
//! browser (headless Chromium) renders it.
//!
//! The browser test drives the Node project in `tests/browser/` (installed by its `setup.sh`, a
//! no-op once done) and Debian's Chromium (`apt-get install chromium`; another binary with
//! `CHROMIUM=...`). Without Node.js, npm or Chromium it fails, saying so: it never skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use clerk_sync::clerk::api::RetryPolicy;
use clerk_sync::clerk::sample::{
    self, SampleMembership, SampleOrganization, SampleUser, random_id,
};
use clerk_sync::config::ClerkSettings;
use clerk_sync::sync::DeleteMode;
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::clerk_emulator::ClerkEmulator;
use crate::support::{Backend, TestApp, TestSql, on_both_backends};

const TOKEN: &str = "status-page-admin-token";
const CHALLENGE: &str = r#"Basic realm="clerk-sync", charset="UTF-8""#;
/// The error a user event without `updated_at` is stored with.
const NO_UPDATED_AT: &str = "user data has no valid updated_at";

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.admin_token = Some(TOKEN.into())).await
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The HTML between the element with `id` and the next `</section>`.
    fn section(&self, id: &str) -> &str {
        let start = self
            .body
            .find(&format!(r#"id="{id}""#))
            .unwrap_or_else(|| panic!("no #{id} in the page:\n{}", self.body));
        let rest = &self.body[start..];
        &rest[..rest.find("</section>").unwrap_or(rest.len())]
    }

    /// The text of the element with `id` (up to its first tag).
    fn text_of(&self, id: &str) -> &str {
        let marker = format!(r#"id="{id}">"#);
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in the page:\n{}", self.body))
            + marker.len();
        let rest = &self.body[start..];
        &rest[..rest.find('<').unwrap_or(rest.len())]
    }

    /// The replay form of a failed event: its action and its hidden token.
    fn replay_form(&self, escaped_svix_id: &str) -> (String, String) {
        let failed = self.section("failed");
        let row_start = failed
            .find(&format!(r#"data-svix-id="{escaped_svix_id}""#))
            .unwrap_or_else(|| panic!("no failed row for {escaped_svix_id}:\n{failed}"));
        let row = &failed[row_start..failed[row_start..].find("</tr>").unwrap() + row_start];
        (attribute(row, "action"), attribute(row, "value"))
    }
}

/// The first value of `name="..."` in `html`.
fn attribute(html: &str, name: &str) -> String {
    let marker = format!(r#"{name}=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn send(request: RequestBuilder) -> Page {
    let response = request.send().await.expect("the service answers");
    Page {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

fn status_url(app: &TestApp) -> String {
    format!("{}/status", app.address)
}

async fn status_page(app: &TestApp) -> Page {
    let page = send(client().get(status_url(app)).bearer_auth(TOKEN)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    page
}

/// Posts the replay form at `action` (relative to the page) as a browser would, with `origin`
/// as its `Origin` header when given.
fn replay_request(
    app: &TestApp,
    action: &str,
    token: &str,
    origin: Option<&str>,
) -> RequestBuilder {
    let request = client()
        .post(format!("{}/{action}", app.address))
        .basic_auth("operator", Some(TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        ));
    match origin {
        Some(origin) => request.header("origin", origin),
        None => request,
    }
}

/// A `user.created` body Clerk could send but clerk-sync cannot apply (no `updated_at`): stored
/// as failed.
fn unusable_user_created(user_id: &str) -> String {
    let mut data = SampleUser::new(user_id, now_ms()).to_clerk_json();
    data.as_object_mut().unwrap().remove("updated_at");
    sample::envelope("user.created", data, now_ms()).to_string()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn current_minute() -> i64 {
    Utc::now().timestamp().div_euclid(60)
}

fn at_second(unix_seconds: i64) -> NaiveDateTime {
    DateTime::from_timestamp(unix_seconds, 0)
        .unwrap()
        .naive_utc()
}

fn ns(app: &TestApp) -> &'static str {
    match app.backend {
        Backend::Postgres => "clerk_sync.",
        Backend::Sqlite => "clerk_sync_",
    }
}

/// Writes an inbox row directly: received at `received_at`, `lag_s` seconds after Svix signed it.
async fn seed_event(app: &TestApp, svix_id: &str, outcome: &str, received_at: i64, lag_s: i64) {
    let sql = format!(
        "INSERT INTO {}inbox (svix_id, event_type, user_id, outcome, error, payload, svix_timestamp, received_at)
         VALUES ($1, 'user.updated', $2, $3, $4, '{{}}', $5, $6)",
        ns(app)
    );
    let user_id = format!("user_{svix_id}");
    let error = (outcome == "failed").then_some("seeded failure");
    let received = at_second(received_at);
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query(&sql)
            .bind(svix_id)
            .bind(&user_id)
            .bind(outcome)
            .bind(error)
            .bind(received_at - lag_s)
            .bind(received)
            .execute(pool)
            .await
            .map(drop),
        TestSql::Sqlite(pool) => sqlx::query(&sql)
            .bind(svix_id)
            .bind(&user_id)
            .bind(outcome)
            .bind(error)
            .bind(received_at - lag_s)
            .bind(received)
            .execute(pool)
            .await
            .map(drop),
    }
    .expect("seed an inbox row");
}

/// Replaces a stored event's payload (as an upgrade that fixes a bug would make it applicable).
async fn repair_payload(app: &TestApp, svix_id: &str, payload: &str) {
    let sql = format!(
        "UPDATE {}inbox SET payload = $1 WHERE svix_id = $2",
        ns(app)
    );
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query(&sql)
            .bind(payload)
            .bind(svix_id)
            .execute(pool)
            .await
            .map(drop),
        TestSql::Sqlite(pool) => sqlx::query(&sql)
            .bind(payload)
            .bind(svix_id)
            .execute(pool)
            .await
            .map(drop),
    }
    .expect("repair the payload");
}

// ---------------------------------------------------------------------------------------------
// Access

#[tokio::test]
async fn the_page_is_off_without_an_admin_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for request in [
        client().get(status_url(&app)),
        client().get(status_url(&app)).bearer_auth(TOKEN),
        client()
            .post(format!("{}/status/replay/msg_1", app.address))
            .bearer_auth(TOKEN),
    ] {
        let page = send(request).await;
        assert_eq!(page.status, 404, "{}", page.body);
        assert!(
            page.body.contains("CLERK_SYNC_ADMIN_TOKEN"),
            "{}",
            page.body
        );
        assert_eq!(page.header("www-authenticate"), "");
    }
}

#[tokio::test]
async fn the_page_needs_the_admin_token_as_bearer_or_basic_password() {
    let app = spawn(Backend::Sqlite).await;
    let url = status_url(&app);
    let refused = [
        ("no credentials", client().get(&url)),
        ("wrong bearer", client().get(&url).bearer_auth("wrong")),
        (
            "bearer with a suffix",
            client().get(&url).bearer_auth(format!("{TOKEN}x")),
        ),
        ("bearer prefix", client().get(&url).bearer_auth(&TOKEN[..5])),
        (
            "wrong basic password",
            client().get(&url).basic_auth("operator", Some("wrong")),
        ),
        (
            "token as basic user name",
            client().get(&url).basic_auth(TOKEN, None::<&str>),
        ),
        (
            "another scheme",
            client()
                .get(&url)
                .header("authorization", format!("Token {TOKEN}")),
        ),
        (
            "replay without credentials",
            client().post(format!("{}/status/replay/msg_1", app.address)),
        ),
    ];
    for (what, request) in refused {
        let page = send(request).await;
        assert_eq!(page.status, 401, "{what}: {}", page.body);
        assert_eq!(page.header("www-authenticate"), CHALLENGE, "{what}");
        assert!(
            !page.body.contains("<html"),
            "{what}: no page without the token"
        );
    }

    let accepted = [
        ("bearer", client().get(&url).bearer_auth(TOKEN)),
        (
            "bearer, lower-case scheme",
            client()
                .get(&url)
                .header("authorization", format!("bearer {TOKEN}")),
        ),
        (
            "basic, any user",
            client().get(&url).basic_auth("anyone", Some(TOKEN)),
        ),
        (
            "basic, no user",
            client().get(&url).basic_auth("", Some(TOKEN)),
        ),
    ];
    for (what, request) in accepted {
        let page = send(request).await;
        assert_eq!(page.status, 200, "{what}: {}", page.body);
        assert_eq!(
            page.header("content-type"),
            "text/html; charset=utf-8",
            "{what}"
        );
        assert!(page.body.contains("<h1>clerk-sync status</h1>"), "{what}");
        // Nothing runs and nothing loads from elsewhere; nobody frames the page.
        let csp = page.header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(page.header("cache-control"), "no-store");
    }
}

// ---------------------------------------------------------------------------------------------
// What the page shows

on_both_backends! {
    async fn the_page_shows_the_events_the_failures_and_the_users(backend) {
        let app = TestApp::spawn_with(backend, |c| {
            c.admin_token = Some(TOKEN.into());
            c.delete_mode = DeleteMode::Soft;
        })
        .await;
        let empty = status_page(&app).await;
        assert!(empty.body.contains("No events in the last hour"), "{}", empty.body);
        assert!(empty.section("failed").contains("None"));
        assert_eq!(empty.text_of("users-live"), "0");

        let mut delivered = Vec::new();
        for id in ["user_alpha", "user_beta", "user_<script>alert(1)</script>"] {
            let svix_id = random_id("msg");
            let answer = app.deliver_as(&svix_id, &sample::user_created(&SampleUser::new(id, now_ms()))).await;
            assert_eq!(answer.outcome(), "created", "{answer:?}");
            delivered.push(svix_id);
        }
        let answer = app.deliver(&sample::user_deleted("user_beta", now_ms() + 1)).await;
        assert_eq!(answer.outcome(), "deleted", "{answer:?}");
        // A failed event whose svix id and user id are full of markup.
        let nasty_svix_id = r#"msg_<i>"q"</i>&'/x y"#;
        let answer = app
            .deliver_as(nasty_svix_id, &unusable_user_created(r#"user_<img src=x onerror="alert(2)">"#))
            .await;
        assert_eq!(answer.outcome(), "failed", "{answer:?}");

        let page = status_page(&app).await;
        let latest = page.section("latest");
        for svix_id in &delivered {
            assert!(latest.contains(svix_id.as_str()), "{svix_id} listed:\n{latest}");
        }
        assert!(latest.contains("user_alpha") && latest.contains("user.created"));
        assert!(latest.contains("user.deleted") && latest.contains(">deleted</span>"));
        // Values from the network are escaped, never markup.
        assert!(
            latest.contains("user_&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{latest}"
        );
        assert!(!page.body.contains("<script"), "{}", page.body);
        assert!(!page.body.contains("<img"), "{}", page.body);
        assert!(!page.body.contains("<i>"), "{}", page.body);
        let escaped_svix_id = "msg_&lt;i&gt;&quot;q&quot;&lt;/i&gt;&amp;&#39;/x y";
        let failed = page.section("failed");
        assert!(failed.contains(escaped_svix_id), "{failed}");
        assert!(failed.contains(NO_UPDATED_AT), "the error is shown:\n{failed}");
        assert!(failed.contains("user_&lt;img src=x onerror=&quot;alert(2)&quot;&gt;"), "{failed}");
        assert_eq!(failed.matches("<form").count(), 1, "one replay button per failed event");
        let (action, token) = page.replay_form(escaped_svix_id);
        assert_eq!(action, "status/replay/msg_%3Ci%3E%22q%22%3C%2Fi%3E%26%27%2Fx%20y");
        assert!(!token.is_empty() && !token.contains(TOKEN), "derived from the token, not it");
        // The form works for such an id too.
        let replayed = send(replay_request(&app, &action, &token, Some(&app.address))).await;
        assert_eq!(replayed.status, 303, "{}", replayed.body);
        assert!(app.store.stored_event(nasty_svix_id).await.unwrap().unwrap().replayed_at.is_some());
        assert_eq!(page.text_of("failed-count"), "1");

        // The figures.
        assert_eq!(page.text_of("users-live"), "2");
        assert_eq!(page.text_of("users-soft-deleted"), "1");
        assert_eq!(page.text_of("database-health"), "OK");
        assert_eq!(page.text_of("clerk-health"), "Not configured");
        let chart = page.section("chart");
        assert!(chart.contains("<svg"), "{chart}");
        let minute = current_minute();
        let this_minute = |outcome: &str| {
            chart
                .lines()
                .filter(|l| l.contains(&format!(r#"data-outcome="{outcome}""#)))
                .filter(|l| l.contains(&format!(r#"data-minute="{minute}""#)) || l.contains(&format!(r#"data-minute="{}""#, minute - 1)))
                .map(|l| attribute(l, "data-count").parse::<u64>().unwrap())
                .sum::<u64>()
        };
        assert_eq!((this_minute("created"), this_minute("deleted"), this_minute("failed")), (3, 1, 1), "{chart}");
    }

    async fn the_chart_and_the_delivery_lag_come_from_the_inbox(backend) {
        let app = spawn(backend).await;
        let now_minute = current_minute();
        let (ten_ago, thirty_ago) = ((now_minute - 10) * 60, (now_minute - 30) * 60);
        // Lags of 1 to 8 s and one of 60 s: median 5 s, max 60 s.
        for (i, lag) in [1, 2, 3, 4, 60].into_iter().enumerate() {
            seed_event(&app, &format!("msg_created_{i}"), "created", ten_ago + 5 + i as i64, lag).await;
        }
        seed_event(&app, "msg_failed_0", "failed", thirty_ago + 1, 5).await;
        seed_event(&app, "msg_failed_1", "failed", thirty_ago + 59, 6).await;
        seed_event(&app, "msg_future_kind", "someday", thirty_ago + 2, 7).await;
        // Two hours ago: listed among the latest, but outside the chart.
        seed_event(&app, "msg_old", "updated", (now_minute - 120) * 60, 8).await;

        let page = status_page(&app).await;
        let chart = page.section("chart");
        let bar = |minute: i64, outcome: &str, count: u64| {
            format!(r#"data-minute="{minute}" data-outcome="{outcome}" data-count="{count}""#)
        };
        assert!(chart.contains(&bar(now_minute - 10, "created", 5)), "{chart}");
        assert!(chart.contains(&bar(now_minute - 30, "failed", 2)), "{chart}");
        assert!(chart.contains(&bar(now_minute - 30, "other", 1)), "an unknown outcome still counts:\n{chart}");
        assert_eq!(chart.matches("<rect").count(), 3, "{chart}");
        assert!(!chart.contains(r#"data-outcome="updated" data-count"#), "{chart}");
        assert!(chart.contains("(8 in all)"), "{chart}");
        for (outcome, total) in [("created", 5), ("failed", 2), ("updated", 0)] {
            assert!(
                chart.contains(&format!(r#"data-outcome="{outcome}"><span class="dot c-{outcome}"></span>{outcome} <b>{total}</b>"#)),
                "legend {outcome} {total}:\n{chart}"
            );
        }
        assert_eq!(page.text_of("lag-median"), "5.0 s");
        assert_eq!(page.text_of("lag-max"), "60 s");
        assert_eq!(page.text_of("failed-count"), "2");
        assert!(page.section("latest").contains("msg_old"));
        assert!(page.section("failed").contains("seeded failure"));
    }

    async fn the_replay_button_applies_a_repaired_event(backend) {
        let app = spawn(backend).await;
        let svix_id = random_id("msg");
        let user_id = random_id("user");
        let answer = app.deliver_as(&svix_id, &unusable_user_created(&user_id)).await;
        assert_eq!(answer.outcome(), "failed", "{answer:?}");

        let page = status_page(&app).await;
        let (action, token) = page.replay_form(&svix_id);
        assert_eq!(action, format!("status/replay/{svix_id}"));

        // Replayed as it is: still failing, but the replay is recorded.
        let replayed = send(replay_request(&app, &action, &token, Some(&app.address))).await;
        assert_eq!(replayed.status, 303, "{}", replayed.body);
        assert_eq!(replayed.header("location"), format!("../../status?replayed={svix_id}&result=failed"));
        let stored = app.store.stored_event(&svix_id).await.unwrap().unwrap();
        assert_eq!(stored.outcome, "failed");
        assert!(stored.replayed_at.is_some(), "the replay is recorded");
        let page = send(client().get(format!("{}?replayed={svix_id}&result=failed", status_url(&app))).bearer_auth(TOKEN)).await;
        assert!(page.text_of("flash").contains("failed again"), "{}", page.body);
        assert!(page.section("failed").contains("last replayed"));

        // Repaired (as an upgrade would make it applicable), then replayed: applied.
        let mut user = SampleUser::new(&user_id, now_ms());
        user.first_name = Some("Repaired".into());
        repair_payload(&app, &svix_id, &sample::user_created(&user)).await;
        let replayed = send(replay_request(&app, &action, &token, Some(&app.address))).await;
        assert_eq!(replayed.status, 303, "{}", replayed.body);
        assert_eq!(replayed.header("location"), format!("../../status?replayed={svix_id}&result=created"));
        let stored = app.store.stored_event(&svix_id).await.unwrap().unwrap();
        assert_eq!((stored.outcome.as_str(), stored.error), ("created", None));
        assert_eq!(app.user(&user_id).await.unwrap().first_name.as_deref(), Some("Repaired"));

        // Where the redirect leads: the page says so, and the event is no longer failed.
        let page = send(client().get(format!("{}?replayed={svix_id}&result=created", status_url(&app))).basic_auth("operator", Some(TOKEN))).await;
        assert_eq!(page.text_of("flash"), format!("Replayed {svix_id}: created."));
        assert!(!page.section("failed").contains(&svix_id), "{}", page.section("failed"));
        assert_eq!(page.text_of("failed-count"), "0");
    }

    async fn the_page_counts_organizations_and_memberships_and_lists_their_events(backend) {
        let app = TestApp::spawn_with(backend, |c| {
            c.admin_token = Some(TOKEN.into());
            c.delete_mode = DeleteMode::Soft;
        })
        .await;
        let empty = status_page(&app).await;
        assert_eq!(empty.text_of("organizations-live"), "0");
        assert_eq!(empty.text_of("organizations-soft-deleted"), "0");
        assert_eq!(empty.text_of("memberships-count"), "0");

        let t = now_ms();
        let acme = SampleOrganization::new("org_acme", t);
        let globex = SampleOrganization::new("org_globex", t);
        let initech = SampleOrganization::new("org_initech", t);
        let mut delivered = Vec::new();
        for body in [
            sample::organization_created(&acme),
            sample::organization_created(&globex),
            // Brings its organization along.
            sample::membership_created(&SampleMembership::new("orgmem_1", initech.clone(), "user_1", t)),
            sample::membership_created(&SampleMembership::new("orgmem_2", acme.clone(), "user_1", t)),
            sample::membership_created(&SampleMembership::new("orgmem_3", acme.clone(), "user_2", t)),
            sample::membership_created(&SampleMembership::new("orgmem_4", globex.clone(), "user_2", t).with_role("org:admin")),
        ] {
            let svix_id = random_id("msg");
            let answer = app.deliver_as(&svix_id, &body).await;
            assert_eq!(answer.outcome(), "created", "{answer:?}");
            delivered.push(svix_id);
        }
        // Soft mode keeps the organization's row (deletedAt) and removes its memberships.
        let deleted = random_id("msg");
        let answer = app.deliver_as(&deleted, &sample::organization_deleted("org_globex", &globex.slug, t + 1)).await;
        assert_eq!(answer.outcome(), "deleted", "{answer:?}");

        let page = status_page(&app).await;
        assert_eq!(page.text_of("organizations-live"), "2");
        assert_eq!(page.text_of("organizations-soft-deleted"), "1");
        assert_eq!(page.text_of("memberships-count"), "3");
        assert_eq!(page.text_of("users-live"), "0", "memberships are not users");
        // The cards sit together: users, then organizations.
        let users_card = page.body.find(r#"id="users-live""#).unwrap();
        let organizations_card = page.body.find(r#"id="organizations-live""#).unwrap();
        assert!(users_card < organizations_card && organizations_card < page.body.find(r#"id="lag-median""#).unwrap());

        let latest = page.section("latest");
        for svix_id in delivered.iter().chain([&deleted]) {
            assert!(latest.contains(svix_id.as_str()), "{svix_id} listed:\n{latest}");
        }
        for text in ["organization.created", "organizationMembership.created", "organization.deleted", ">created</span>", ">deleted</span>", "user_2"] {
            assert!(latest.contains(text), "{text}:\n{latest}");
        }
        // The chart counts them with the rest.
        assert!(page.section("chart").contains("(7 in all)"), "{}", page.section("chart"));
        assert!(page.section("failed").contains("None"));
    }
}

/// Counting organizations and memberships gives way to estimates on PostgreSQL like the
/// users count, and the users count does not suffer for it.
#[tokio::test]
async fn an_organizations_count_that_takes_too_long_gives_way_to_an_estimate() {
    let app = spawn(Backend::Postgres).await;
    app.deliver(&sample::user_created(&SampleUser::new("user_1", now_ms())))
        .await;
    for (i, id) in ["org_a", "org_b"].into_iter().enumerate() {
        let membership = SampleMembership::new(
            format!("orgmem_{i}"),
            SampleOrganization::new(id, now_ms()),
            "user_1",
            now_ms(),
        );
        let answer = app.deliver(&sample::membership_created(&membership)).await;
        assert_eq!(answer.outcome(), "created", "{answer:?}");
    }
    let TestSql::Postgres(pool) = app.sql() else {
        unreachable!()
    };
    sqlx::query("ANALYZE organizations, organization_memberships")
        .execute(pool)
        .await
        .unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE organization_memberships IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let page = status_page(&app).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page.text_of("organizations-live"), "≈ 2", "{}", page.body);
    assert_eq!(page.text_of("memberships-count"), "≈ 2", "{}", page.body);
    assert!(page.body.contains("counting took too long"));
    assert_eq!(
        page.text_of("users-live"),
        "1",
        "the users are still counted"
    );
    assert!(
        page.section("latest")
            .contains("organizationMembership.created")
    );
    blocker.rollback().await.unwrap();
    let page = status_page(&app).await;
    assert_eq!(page.text_of("organizations-live"), "2");
    assert_eq!(page.text_of("memberships-count"), "2");
}

/// Counting the users is the one read that looks at every row: on PostgreSQL it gives way to
/// the planner's estimate when it takes too long (here: while a migration holds the table).
#[tokio::test]
async fn a_users_count_that_takes_too_long_gives_way_to_an_estimate() {
    let app = spawn(Backend::Postgres).await;
    for _ in 0..2 {
        let user = SampleUser::new(random_id("user"), now_ms());
        app.deliver(&sample::user_created(&user)).await;
    }
    let TestSql::Postgres(pool) = app.sql() else {
        unreachable!()
    };
    sqlx::query("ANALYZE users").execute(pool).await.unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let page = status_page(&app).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page.text_of("users-live"), "≈ 2", "{}", page.body);
    assert!(page.body.contains("estimated"));
    // The organizations' count, after the users' in the same transaction, gives way too.
    assert!(
        page.text_of("organizations-live").starts_with('≈')
            || page.text_of("organizations-live") == "?",
        "{}",
        page.body
    );
    // The rest of the page is there.
    assert_eq!(page.text_of("database-health"), "OK");
    assert!(page.section("latest").contains("user.created"));
    blocker.rollback().await.unwrap();
    assert_eq!(status_page(&app).await.text_of("users-live"), "2");
}

#[tokio::test]
async fn replay_refuses_requests_a_cross_site_page_could_make() {
    let app = spawn(Backend::Sqlite).await;
    let svix_id = random_id("msg");
    app.deliver_as(&svix_id, &unusable_user_created(&random_id("user")))
        .await;
    let page = status_page(&app).await;
    let (action, token) = page.replay_form(&svix_id);
    let own = Some(app.address.as_str());
    let replayed_at = || async {
        app.store
            .stored_event(&svix_id)
            .await
            .unwrap()
            .unwrap()
            .replayed_at
    };

    let refused = [
        (
            "another origin",
            replay_request(&app, &action, &token, Some("https://evil.example")),
        ),
        (
            "another port",
            replay_request(&app, &action, &token, Some("http://127.0.0.1:1")),
        ),
        (
            "an opaque origin",
            replay_request(&app, &action, &token, Some("null")),
        ),
        ("no form token", replay_request(&app, &action, "", own)),
        (
            "a wrong form token",
            replay_request(&app, &action, "AAAA", own),
        ),
        (
            "the admin token as form token",
            replay_request(&app, &action, TOKEN, own),
        ),
        (
            "a bearer script from another origin",
            client()
                .post(format!("{}/{action}", app.address))
                .bearer_auth(TOKEN)
                .header("origin", "https://evil.example"),
        ),
    ];
    for (what, request) in refused {
        let answer = send(request).await;
        assert_eq!(answer.status, 403, "{what}: {}", answer.body);
        assert_eq!(replayed_at().await, None, "{what}: nothing replayed");
    }

    // Without an Origin header (older browsers) the form token suffices...
    let answer = send(replay_request(&app, &action, &token, None)).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert!(replayed_at().await.is_some());
    // ...a script with the bearer token needs none (a browser never sends one by itself)...
    let answer = send(
        client()
            .post(format!("{}/{action}", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    // ...and behind a proxy that rewrites Host, the forwarded host is the page's origin.
    let answer = send(
        replay_request(&app, &action, &token, Some("https://status.example.com"))
            .header("x-forwarded-host", "status.example.com"),
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);

    // An unknown event: said so, nothing else.
    let answer = send(
        client()
            .post(format!("{}/status/replay/msg_nope", app.address))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(
        answer.header("location"),
        "../../status?replayed=msg_nope&result=missing"
    );
    let page = send(
        client()
            .get(format!(
                "{}?replayed=msg_nope&result=missing",
                status_url(&app)
            ))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(
        page.text_of("flash"),
        "No stored event has the svix id msg_nope."
    );
    // A made-up flash shows nothing.
    let page = send(
        client()
            .get(format!(
                "{}?replayed=x&result=%3Cb%3Ehacked",
                status_url(&app)
            ))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(r#"id="flash""#), "{}", page.body);
}

#[tokio::test]
async fn clerk_health_is_checked_cheaply_and_at_most_every_30_seconds() {
    let clerk = ClerkEmulator::start().await;
    for i in 0..3 {
        clerk.insert_user(SampleUser::new(format!("user_{i}"), now_ms()).to_clerk_json());
    }
    let settings = ClerkSettings {
        retry: RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        },
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
        c.admin_token = Some(TOKEN.into());
        c.clerk = settings;
    })
    .await;
    for _ in 0..3 {
        let page = status_page(&app).await;
        assert_eq!(page.text_of("clerk-health"), "OK", "{}", page.body);
        assert!(page.body.contains("3 users at Clerk"), "{}", page.body);
    }
    assert_eq!(
        clerk.request_count("GET", "/v1/users/count"),
        1,
        "one call to Clerk for three page loads"
    );

    // Another service whose Clerk is down: said so, quickly.
    let down = ClerkEmulator::start().await;
    down.fail_next(100, 503);
    let settings = ClerkSettings {
        retry: RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        },
        ..ClerkSettings::from_values(
            Some(&down.base_url()),
            Some(&down.secret_key()),
            None,
            None,
            None,
            false,
        )
        .unwrap()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.admin_token = Some(TOKEN.into());
        c.clerk = settings;
    })
    .await;
    let page = status_page(&app).await;
    assert_eq!(page.text_of("clerk-health"), "Unreachable", "{}", page.body);
    assert!(page.body.contains("503"), "{}", page.body);
}

#[tokio::test]
async fn markup_in_an_event_type_an_error_or_a_link_to_the_page_is_shown_as_text() {
    let app = spawn(Backend::Sqlite).await;
    // An event type and an error as a hostile sender or a confused upstream might make them.
    let sql = format!(
        "INSERT INTO {}inbox (svix_id, event_type, user_id, outcome, error, payload, svix_timestamp, received_at)
         VALUES ('msg_markup', $1, NULL, 'failed', $2, '{{}}', $3, $4)",
        ns(&app)
    );
    let now = Utc::now().timestamp();
    let TestSql::Sqlite(pool) = app.sql() else {
        unreachable!("spawned on SQLite")
    };
    sqlx::query(&sql)
        .bind("user.<script>alert('type')</script>")
        .bind(r#"bad "<svg onload=alert(1)>" & more"#)
        .bind(now - 1)
        .bind(at_second(now))
        .execute(pool)
        .await
        .expect("seed an inbox row");

    let page = status_page(&app).await;
    let failed = page.section("failed");
    assert!(
        failed.contains("user.&lt;script&gt;alert(&#39;type&#39;)&lt;/script&gt;"),
        "{failed}"
    );
    assert!(
        failed.contains("bad &quot;&lt;svg onload=alert(1)&gt;&quot; &amp; more"),
        "{failed}"
    );
    assert!(page.section("latest").contains("user.&lt;script&gt;"));

    // The flash repeats the svix id of a link's query string, which anyone can write: a link to
    // the page sent to an operator must not carry markup into it.
    let page = send(
        client()
            .get(format!(
                "{}?replayed=%3Cscript%3Ealert(1)%3C%2Fscript%3E&result=created",
                status_url(&app)
            ))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(
        page.text_of("flash"),
        "Replayed &lt;script&gt;alert(1)&lt;/script&gt;: created."
    );
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(!page.body.contains("<svg onload"), "{}", page.body);
}

// ---------------------------------------------------------------------------------------------
// In a real browser

fn browser_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where build output goes (`target/`), found from this test binary's own path.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

async fn run(what: &str, command: &mut tokio::process::Command) -> String {
    let output = command
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {what}: {e}. The browser test needs Node.js 20+ and npm (Debian/Ubuntu: \
                 apt-get install nodejs npm) and, for the first install, the npm registry"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}).\n--- stderr ---\n{}\n--- stdout ---\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_page_renders_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: the status page's browser test needs it (Debian/Ubuntu: \
         apt-get install chromium; another binary with CHROMIUM=/path/to/chrome)"
    );
    run(
        "tests/browser/setup.sh (npm ci; needs Node.js 20+, npm and the npm registry the first time)",
        tokio::process::Command::new("bash").arg(browser_project().join("setup.sh")),
    )
    .await;

    let app = spawn(Backend::Sqlite).await;
    // An hour of traffic, so the chart has something to show...
    let now_minute = current_minute();
    let outcomes = [
        "created",
        "updated",
        "updated",
        "unchanged",
        "ignored",
        "stale",
    ];
    let mut seeded = 0u64;
    for minutes_ago in (1..58).step_by(2) {
        for i in 0..(minutes_ago % 5 + 1) {
            let outcome = outcomes[(minutes_ago + i) as usize % outcomes.len()];
            let at = (now_minute - minutes_ago) * 60 + 3 * i;
            seed_event(&app, &format!("msg_seed_{minutes_ago}_{i}"), outcome, at, 1).await;
            seeded += 1;
        }
    }
    // ...and deliveries of now: one with markup in its user id, one that fails.
    let mut delivered = Vec::new();
    for id in [
        random_id("user"),
        "user_<script>window.__pwned=1</script>".into(),
    ] {
        let svix_id = random_id("msg");
        app.deliver_as(
            &svix_id,
            &sample::user_created(&SampleUser::new(id, now_ms())),
        )
        .await;
        delivered.push(svix_id);
    }
    let failed_svix_id = random_id("msg");
    let failed_user_id = random_id("user");
    app.deliver_as(&failed_svix_id, &unusable_user_created(&failed_user_id))
        .await;
    // Repaired before the browser presses its replay button, so the replay applies it.
    let page = status_page(&app).await;
    assert!(page.section("failed").contains(&failed_svix_id));
    repair_payload(
        &app,
        &failed_svix_id,
        &sample::user_created(&SampleUser::new(&failed_user_id, now_ms())),
    )
    .await;

    let screenshot = target_dir().join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let stdout = run(
        "tests/browser/status-page.mjs (headless Chromium)",
        tokio::process::Command::new("node")
            .current_dir(browser_project())
            .arg("status-page.mjs")
            .arg(status_url(&app))
            .arg(TOKEN)
            .arg(&screenshot)
            .arg(&failed_svix_id)
            .env("CHROMIUM", &chromium),
    )
    .await;
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the browser script printed no report ({e}):\n{stdout}"));
    let shown = &report["page"];
    let context = || serde_json::to_string_pretty(&report).unwrap();

    // Without the token the browser is challenged (a person would be asked for it).
    assert_eq!(
        report["withoutCredentials"]["responses"][0],
        json!({"status": 401, "challenge": CHALLENGE}),
        "{}",
        context()
    );
    // With it, the page.
    assert_eq!(report["status"], 200, "{}", context());
    assert_eq!(shown["title"], "clerk-sync status");
    assert_eq!(shown["databaseHealth"], "OK");
    assert_eq!(shown["clerkHealth"], "Not configured");
    assert_eq!(shown["usersLive"], "2", "{}", context());
    assert_eq!(shown["failedCount"], "1");
    assert_eq!(
        shown["cardBorderTop"], "3px",
        "the inline stylesheet applies"
    );

    // The chart: visible, with a visible, coloured bar segment for every seeded minute.
    let chart = &shown["chart"];
    assert!(
        chart["width"].as_f64().unwrap() > 600.0 && chart["height"].as_f64().unwrap() > 150.0,
        "{chart}"
    );
    let bars = shown["bars"].as_array().unwrap();
    assert!(bars.len() >= 29, "{}", context());
    for bar in bars {
        assert!(
            bar["width"].as_f64().unwrap() > 2.0 && bar["height"].as_f64().unwrap() > 0.5,
            "a bar too small to see: {bar}"
        );
        assert!(bar["fill"].as_str().unwrap().starts_with("rgb("), "{bar}");
    }
    let charted: u64 = bars.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(
        charted,
        seeded + 3,
        "every event of the hour is in the chart"
    );
    let legend = shown["legend"].to_string();
    for entry in ["created", "updated", "unchanged", "failed", "not_found"] {
        assert!(legend.contains(entry), "{legend}");
    }

    // The lists, with the markup shown as text and never run.
    let latest = shown["latestRows"].to_string();
    for svix_id in &delivered {
        assert!(latest.contains(svix_id.as_str()), "{latest}");
    }
    assert!(
        latest.contains("user_<script>window.__pwned=1</script>"),
        "{latest}"
    );
    assert_eq!(shown["scriptElements"], 0);
    assert_eq!(shown["injectedScriptRan"], false);
    let failed = shown["failedRows"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{}", context());
    assert_eq!(failed[0][1], failed_svix_id.as_str());
    assert!(
        failed[0][4].as_str().unwrap().contains(NO_UPDATED_AT),
        "{}",
        context()
    );
    assert_eq!(shown["replayButtons"], 1);

    // The replay button, pressed in the browser: through the origin and token checks.
    let after = &report["afterReplay"];
    assert_eq!(
        after["flash"],
        format!("Replayed {failed_svix_id}: created."),
        "{}",
        context()
    );
    assert_eq!(after["failedRows"], json!([]));
    let stored = app
        .store
        .stored_event(&failed_svix_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.outcome, "created");
    assert!(stored.replayed_at.is_some());

    // Nothing fetched from elsewhere, nothing complained about.
    for request in report["requests"].as_array().unwrap() {
        assert!(
            request.as_str().unwrap().starts_with(&app.address),
            "the page fetched {request}"
        );
    }
    assert_eq!(report["consoleErrors"], json!([]), "{}", context());

    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} is not a screenshot of the page",
        screenshot.display()
    );
    eprintln!("screenshot of the status page: {}", screenshot.display());
}
