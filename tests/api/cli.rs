//! The built binary, driven the way users and scripts drive it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clerk_sync::config::DatabaseTarget;
use clerk_sync::webhook::SigningSecret;
use sqlx::Connection;

use crate::support::{TestDb, TestSql, on_both_backends};

const BIN: &str = env!("CARGO_BIN_EXE_clerk-sync");

/// Every variable clerk-sync reads, so the developer's own environment cannot leak in.
const OUR_VARS: [&str; 13] = [
    "DATABASE_URL",
    "CLERK_SECRET_KEY",
    "CLERK_API_URL",
    "CLERK_SYNC_INBOX_RETENTION",
    "CLERK_SYNC_DB_CONNECT_TIMEOUT",
    "CLERK_SYNC_MIGRATE_TIMEOUT",
    "CLERK_WEBHOOK_SIGNING_SECRET",
    "CLERK_WEBHOOK_SECRET",
    "CLERK_SYNC_LISTEN",
    "PORT",
    "CLERK_SYNC_DELETE_MODE",
    "CLERK_SYNC_LOG_FORMAT",
    "RUST_LOG",
];

pub(crate) fn clerk_sync(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    for var in OUR_VARS {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `clerk-sync serve` process; killed when dropped.
pub(crate) struct Server {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub(crate) async fn start(mut command: Command, listen: &str) -> Server {
        command
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("clerk-sync starts");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        let server = Server {
            child,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(format!("http://{listen}/readyz")).await
                && response.status().is_success()
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready; stderr: {:?}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run(mut command: Command) -> Output {
    command.output().expect("clerk-sync runs")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn serve_with_no_configuration_uses_sqlite_and_a_dev_secret_that_trigger_finds() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [("CLERK_SYNC_LISTEN", listen.as_str())];
    let server = Server::start(clerk_sync(dir.path(), &env), &listen).await;
    assert!(
        server.stdout().contains("whsec_"),
        "the dev secret is printed: {}",
        server.stdout()
    );
    assert!(
        server.stderr().contains("DATABASE_URL is not set"),
        "{}",
        server.stderr()
    );
    assert!(dir.path().join("clerk-sync.db").exists());
    assert!(dir.path().join("clerk-sync.db.webhook-secret").exists());

    let mut trigger = clerk_sync(dir.path(), &env);
    trigger.args([
        "trigger",
        "user.created",
        "--user-id",
        "user_cli",
        "--first-name",
        "Zoë",
    ]);
    let output = run(trigger);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("\"created\""),
        "{}",
        text(&output.stdout)
    );

    // An update changes what it names and nothing else: Clerk never changes created_at.
    let url = format!("sqlite://{}", dir.path().join("clerk-sync.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    async fn read(
        db: &mut sqlx::SqliteConnection,
    ) -> (String, Option<String>, Option<String>, String) {
        sqlx::query_as(
            r#"SELECT "clerkCreatedAt", "firstName", email, "clerkUpdatedAt" FROM users WHERE id = 'user_cli'"#,
        )
        .fetch_one(db)
        .await
        .unwrap()
    }
    let before = read(&mut db).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut update = clerk_sync(dir.path(), &env);
    update.args([
        "trigger",
        "user.updated",
        "--user-id",
        "user_cli",
        "--last-name",
        "Hopper",
    ]);
    let output = run(update);
    assert!(
        text(&output.stdout).contains("\"updated\""),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let after = read(&mut db).await;
    assert_eq!(after.0, before.0, "clerkCreatedAt is kept");
    assert_eq!(
        (&after.1, &after.2),
        (&before.1, &before.2),
        "first name and email are kept"
    );
    assert!(after.3 > before.3, "clerkUpdatedAt moves on");

    // Redelivery of the same svix-id is a duplicate; trigger still exits 0 (2xx).
    let mut again = clerk_sync(dir.path(), &env);
    again.args([
        "trigger",
        "user.deleted",
        "--user-id",
        "user_cli",
        "--svix-id",
        "msg_fixed",
    ]);
    assert!(text(&run(again).stdout).contains("\"deleted\""));
    let mut again = clerk_sync(dir.path(), &env);
    again.args([
        "trigger",
        "user.deleted",
        "--user-id",
        "user_cli",
        "--svix-id",
        "msg_fixed",
    ]);
    assert!(text(&run(again).stdout).contains("\"duplicate\""));

    let tombstones: i64 =
        sqlx::query_scalar("SELECT count(*) FROM clerk_sync_tombstones WHERE user_id = 'user_cli'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(tombstones, 1);
    drop(server);
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_secret_when_a_database_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let output = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", "sqlite://x.db")]);
        c.arg("serve");
        c
    });
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("CLERK_WEBHOOK_SIGNING_SECRET") && stderr.contains("--dev"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("x.db.webhook-secret").exists(),
        "no secret is generated"
    );
}

#[tokio::test]
async fn bad_configuration_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret) = SigningSecret::generate();
    for (env, expected) in [
        (
            vec![
                ("DATABASE_URL", "mysql://localhost/db"),
                ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
            ],
            "sqlite://",
        ),
        (
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_not*base64!")],
            "CLERK_WEBHOOK_SIGNING_SECRET is invalid",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1/db?sslmode=bogus"),
                ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
            ],
            "use one of disable, allow, prefer, require, verify-ca or verify-full",
        ),
        (vec![("CLERK_SYNC_LISTEN", "nowhere")], "CLERK_SYNC_LISTEN"),
        (vec![("PORT", "eighty")], "PORT"),
        (vec![("CLERK_SYNC_DELETE_MODE", "sometimes")], "soft"),
        (vec![("CLERK_SYNC_WRITERS", "0")], "--writers"),
        (
            vec![
                ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
                ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
                ("CLERK_SYNC_WRITERS", "4"),
                ("CLERK_SYNC_DB_MAX_CONNECTIONS", "4"),
            ],
            "leaves none of CLERK_SYNC_DB_MAX_CONNECTIONS = 4",
        ),
    ] {
        let mut command = clerk_sync(dir.path(), &env);
        command.args(["serve", "--dev"]);
        let output = run(command);
        assert!(!output.status.success(), "{env:?} must fail");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(
            !stderr.contains("error with configuration: error with configuration"),
            "a cause said twice: {stderr}"
        );
    }
}

#[tokio::test]
async fn trigger_without_a_secret_says_where_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = clerk_sync(dir.path(), &[]);
    command.args(["trigger", "user.created"]);
    let output = run(command);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("clerk-sync serve"),
        "{}",
        text(&output.stderr)
    );

    let (_, secret) = SigningSecret::generate();
    let mut command = clerk_sync(dir.path(), &[("CLERK_WEBHOOK_SIGNING_SECRET", &secret)]);
    command.args(["trigger", "user.updated"]);
    let output = run(command);
    assert!(
        text(&output.stderr).contains("--user-id"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn every_sync_operation_is_logged_as_one_line_without_emails() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_, secret) = SigningSecret::generate();
    let env = [
        ("CLERK_SYNC_LISTEN", listen.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
        ("DATABASE_URL", "sqlite://events.db"),
        ("CLERK_SYNC_LOG_FORMAT", "json"),
    ];
    let server = Server::start(clerk_sync(dir.path(), &env), &listen).await;
    let mut trigger = clerk_sync(dir.path(), &env);
    trigger.args([
        "trigger",
        "user.created",
        "--user-id",
        "user_logged",
        "--email",
        "private@example.com",
        "--svix-id",
        "msg_logged",
    ]);
    assert!(run(trigger).status.success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let logs = server.stderr();
        if let Some(line) = logs.lines().find(|l| l.contains("msg_logged")) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the event: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
    assert_eq!(entry["svix_id"], "msg_logged");
    assert_eq!(entry["event_type"], "user.created");
    assert_eq!(entry["user_id"], "user_logged");
    assert_eq!(entry["outcome"], "created");
    assert!(entry["duration_ms"].as_f64().is_some(), "{line}");
    assert!(
        !server.stderr().contains("private@example.com"),
        "no emails in logs"
    );
    assert!(
        !server.stderr().contains(&secret[6..]),
        "no secrets in logs"
    );
}

#[tokio::test]
async fn migrate_applies_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", "sqlite://data/app.db")];
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let first = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.arg("migrate");
        c
    });
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("applied migration 1"),
        "{}",
        text(&first.stdout)
    );
    let second = run({
        let mut c = clerk_sync(dir.path(), &env);
        c.arg("migrate");
        c
    });
    assert!(
        text(&second.stdout).contains("up to date"),
        "{}",
        text(&second.stdout)
    );
}

#[test]
fn help_names_the_commands_and_variables() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = text(&output.stdout);
    for needle in [
        "DATABASE_URL",
        "CLERK_WEBHOOK_SIGNING_SECRET",
        "CLERK_SYNC_LISTEN",
        "--dev",
        "--no-migrate",
        "CLERK_SYNC_DELETE_MODE",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle}:\n{help}"
        );
    }
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = text(&output.stdout);
    for needle in ["serve", "migrate", "trigger"] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

/// The part of `trigger`'s line between `for ` and ` (svix-id`: what the event is about.
fn about(stdout: &str) -> &str {
    let start = stdout
        .find(" for ")
        .expect("the line says what the event is about")
        + 5;
    &stdout[start..start + stdout[start..].find(" (svix-id").unwrap()]
}

/// An organization's row: id, name, slug, creator, Clerk's created_at and updated_at.
type OrganizationRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<chrono::NaiveDateTime>,
    Option<chrono::NaiveDateTime>,
);
/// A membership's row: id, organization, user, role, Clerk's created_at and updated_at.
type MembershipRow = (
    String,
    String,
    String,
    String,
    Option<chrono::NaiveDateTime>,
    Option<chrono::NaiveDateTime>,
);

async fn organization_rows(sql: &TestSql) -> Vec<OrganizationRow> {
    let query = r#"SELECT id, name, slug, "createdBy", "clerkCreatedAt", "clerkUpdatedAt"
                   FROM organizations ORDER BY id"#;
    match sql {
        TestSql::Postgres(pool) => sqlx::query_as(query).fetch_all(pool).await.unwrap(),
        TestSql::Sqlite(pool) => sqlx::query_as(query).fetch_all(pool).await.unwrap(),
    }
}

async fn membership_rows(sql: &TestSql) -> Vec<MembershipRow> {
    let query = r#"SELECT id, "organizationId", "userId", role, "clerkCreatedAt", "clerkUpdatedAt"
                   FROM organization_memberships ORDER BY id"#;
    match sql {
        TestSql::Postgres(pool) => sqlx::query_as(query).fetch_all(pool).await.unwrap(),
        TestSql::Sqlite(pool) => sqlx::query_as(query).fetch_all(pool).await.unwrap(),
    }
}

on_both_backends! {
    async fn trigger_sends_organization_and_membership_events_that_land_in_the_tables(backend) {
        let db = TestDb::create(backend).await;
        let database_url = match db.target() {
            DatabaseTarget::Postgres { url } => url,
            DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
        };
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let (_, secret) = SigningSecret::generate();
        let env = [
            ("CLERK_SYNC_LISTEN", listen.as_str()),
            ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
            ("DATABASE_URL", database_url.as_str()),
        ];
        let server = Server::start(clerk_sync(dir.path(), &env), &listen).await;
        let sql = TestSql::lazy(&db.target());
        // Runs `clerk-sync trigger ARGS`, which must succeed with `outcome`; its stdout.
        let trigger = |args: &[&str], outcome: &str| {
            let mut command = clerk_sync(dir.path(), &env);
            command.arg("trigger").args(args);
            let output = run(command);
            let stdout = text(&output.stdout);
            assert!(output.status.success(), "{args:?}: {stdout}{}", text(&output.stderr));
            assert!(stdout.contains(&format!(r#"{{"outcome":"{outcome}"}}"#)), "{args:?}: {stdout}{}", text(&output.stderr));
            stdout
        };
        // Clerk's times are milliseconds: successive triggers must not share one.
        let tick = || std::thread::sleep(Duration::from_millis(5));

        trigger(&["user.created", "--user-id", "user_member"], "created");
        let created = trigger(
            &["organization.created", "--org-id", "org_cli", "--slug", "cli-co", "--user-id", "user_member", "--svix-id", "msg_org_created"],
            "created",
        );
        assert!(created.starts_with("organization.created for org_cli (svix-id msg_org_created)"), "{created}");
        let [first] = organization_rows(&sql).await.try_into().unwrap();
        assert_eq!((&first.0[..], first.2.as_deref(), first.3.as_deref()), ("org_cli", Some("cli-co"), Some("user_member")));

        // An update starts from the row: the slug given at creation stays, Clerk's created_at
        // too, and updated_at moves on.
        tick();
        trigger(&["organization.updated", "--org-id", "org_cli"], "updated");
        let [updated] = organization_rows(&sql).await.try_into().unwrap();
        assert_eq!((&updated.1, &updated.2, &updated.3, updated.4), (&first.1, &first.2, &first.3, first.4));
        assert!(updated.5 > first.5, "clerkUpdatedAt moves on: {updated:?} after {first:?}");
        tick();
        trigger(&["organization.updated", "--org-id", "org_cli", "--slug", "cli-renamed"], "updated");
        let [renamed] = organization_rows(&sql).await.try_into().unwrap();
        assert_eq!(renamed.2.as_deref(), Some("cli-renamed"));

        // A membership: `admin` means org:admin; the organization it carries is the row as it is.
        let joined = trigger(
            &["organizationMembership.created", "--org-id", "org_cli", "--user-id", "user_member", "--role", "admin", "--svix-id", "msg_joined"],
            "created",
        );
        let [member] = membership_rows(&sql).await.try_into().unwrap();
        assert!(member.0.starts_with("orgmem_"), "{member:?}");
        assert_eq!(about(&joined), format!("{} (user_member in org_cli)", member.0));
        assert_eq!((&member.1[..], &member.2[..], &member.3[..]), ("org_cli", "user_member", "org:admin"));
        assert_eq!(organization_rows(&sql).await, std::slice::from_ref(&renamed), "the organization is untouched");

        // Updates find the membership by its organization and user, and keep what they do not name.
        tick();
        trigger(&["organizationMembership.updated", "--org-id", "org_cli", "--user-id", "user_member", "--role", "org:member"], "updated");
        let [demoted] = membership_rows(&sql).await.try_into().unwrap();
        assert_eq!((&demoted.0, &demoted.3[..], demoted.4), (&member.0, "org:member", member.4));
        assert!(demoted.5 > member.5, "clerkUpdatedAt moves on: {demoted:?} after {member:?}");
        tick();
        trigger(&["organizationMembership.updated", "--org-id", "org_cli", "--user-id", "user_member"], "updated");
        let [touched] = membership_rows(&sql).await.try_into().unwrap();
        assert_eq!((&touched.0, &touched.3[..]), (&demoted.0, "org:member"));
        assert!(touched.5 > demoted.5);
        assert_eq!(organization_rows(&sql).await, std::slice::from_ref(&renamed), "the organization is untouched");

        // Without flags: a new organization and a new user, named in the line.
        let made_up = trigger(&["organizationMembership.created"], "created");
        let (membership_id, rest) = about(&made_up).split_once(" (").unwrap();
        let (user_id, organization_id) = rest.trim_end_matches(')').split_once(" in ").unwrap();
        assert!(user_id.starts_with("user_") && organization_id.starts_with("org_"), "{made_up}");
        assert!(membership_rows(&sql).await.iter().any(|m| (&m.0[..], &m.1[..], &m.2[..]) == (membership_id, organization_id, user_id)));
        let made_up_org = trigger(&["organization.created"], "created");
        assert!(about(&made_up_org).starts_with("org_"), "{made_up_org}");
        assert_eq!(organization_rows(&sql).await.len(), 3);

        tick();
        trigger(&["organizationMembership.deleted", "--org-id", "org_cli", "--user-id", "user_member", "--svix-id", "msg_left"], "deleted");
        assert!(membership_rows(&sql).await.iter().all(|m| m.1 != "org_cli"));
        trigger(&["organization.deleted", "--org-id", "org_cli", "--svix-id", "msg_org_deleted"], "deleted");
        assert!(organization_rows(&sql).await.iter().all(|o| o.0 != "org_cli"));

        // The inbox shows who each event is about, and replays them like any other.
        let events = |args: &[&str]| {
            let mut command = clerk_sync(dir.path(), &[("DATABASE_URL", database_url.as_str())]);
            command.arg("events").args(args);
            let output = run(command);
            assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
            text(&output.stdout)
        };
        let list = events(&["list"]);
        assert!(list.lines().next().unwrap().contains("USER") && list.contains("ORGANIZATION"), "{list}");
        let line = |svix_id: &str| list.lines().find(|l| l.contains(svix_id)).unwrap_or_else(|| panic!("no {svix_id}:\n{list}")).split_whitespace().collect::<Vec<_>>();
        assert_eq!(line("msg_org_created")[2..6], ["organization.created", "-", "org_cli", "created"]);
        assert_eq!(line("msg_joined")[2..6], ["organizationMembership.created", "user_member", "org_cli", "created"]);
        assert_eq!(line("msg_left")[2..6], ["organizationMembership.deleted", "user_member", "org_cli", "deleted"]);
        let shown = events(&["show", "msg_joined"]);
        assert!(shown.contains("user:        user_member\norg:         org_cli\n"), "{shown}");
        assert!(shown.contains(&format!("membership:  {}\n", member.0)), "{shown}");
        let shown = events(&["show", "msg_org_deleted"]);
        assert!(shown.contains("org:         org_cli\n") && !shown.contains("membership:"), "{shown}");
        // Replayed after its deletion, the organization stays deleted.
        let replayed = events(&["replay", "msg_org_created"]);
        assert!(replayed.contains("msg_org_created: created -> tombstoned"), "{replayed}");
        assert!(organization_rows(&sql).await.iter().all(|o| o.0 != "org_cli"));

        // An update of a membership the database does not have says so, and still sends one.
        let mut command = clerk_sync(dir.path(), &env);
        command.args(["trigger", "organizationMembership.updated", "--org-id", "org_none", "--user-id", "user_none"]);
        let output = run(command);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(text(&output.stderr).contains("no membership of user_none in org_none"), "{}", text(&output.stderr));
        drop(server);
    }
}

#[test]
fn trigger_refuses_flags_that_do_not_fit_the_event_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret) = SigningSecret::generate();
    // Nothing listens there: an event sent would fail with "could not reach".
    let url = format!("http://127.0.0.1:{}/api/webhooks/clerk", free_port());
    for (args, expected) in [
        (&["organization.updated"][..], "add --org-id org_..."),
        (&["organization.deleted"], "add --org-id org_..."),
        (
            &["organizationMembership.updated", "--org-id", "org_a"],
            "--org-id org_... --user-id user_...",
        ),
        (
            &["organizationMembership.deleted", "--user-id", "user_a"],
            "--org-id org_... --user-id user_...",
        ),
        (
            &["organization.created", "--role", "admin"],
            "--role is a member's role",
        ),
        (
            &["organizationMembership.created", "--slug", "acme"],
            "organization.updated --org-id org_... --slug",
        ),
        (
            &["organizationMembership.created", "--role", "org admin"],
            "is not a role",
        ),
        (
            &[
                "organizationMembership.deleted",
                "--org-id",
                "org_a",
                "--user-id",
                "user_a",
                "--role",
                "org:admin",
            ],
            "--role goes with organizationMembership.created or .updated",
        ),
        (
            &["organization.created", "--org-id", "user_a"],
            "is not an organization id",
        ),
        (
            &["organizationMembership.created", "--user-id", "org_a"],
            "an organization goes in --org-id",
        ),
        (
            &["organization.created", "--email", "ada@example.com"],
            "--email describes a user",
        ),
        (
            &[
                "organization.updated",
                "--org-id",
                "org_a",
                "--user-id",
                "user_a",
            ],
            "organization.updated names no user",
        ),
        (
            &["user.created", "--org-id", "org_a"],
            "--org-id is for organization.* and organizationMembership.* events",
        ),
        (
            &["organizationmembership.created"],
            "organizationMembership.created",
        ),
        (
            &["./payload.json", "--org-id", "org_a"],
            "a file is sent as it is",
        ),
        (
            &[
                "user.deleted",
                "--user-id",
                "user_a",
                "--email",
                "a@example.com",
            ],
            "user.deleted sends the user's id alone",
        ),
    ] {
        let mut command = clerk_sync(dir.path(), &[("CLERK_WEBHOOK_SIGNING_SECRET", &secret)]);
        command.arg("trigger").args(args).args(["--url", &url]);
        let output = run(command);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("could not reach"),
            "{args:?} sent: {stderr}"
        );
        assert!(text(&output.stdout).is_empty(), "{args:?}");
    }

    // --help explains the new events and their flags.
    let mut command = clerk_sync(dir.path(), &[]);
    command.args(["trigger", "--help"]);
    let help = text(&run(command).stdout);
    for needle in [
        "organization.created",
        "organizationMembership.deleted",
        "--org-id",
        "--role",
        "--slug",
        "org:admin",
        "clerk-sync trigger organizationMembership.created --org-id",
    ] {
        assert!(
            help.contains(needle),
            "trigger --help lacks {needle}:\n{help}"
        );
    }
}
