//! What a newcomer meets on the way from the first command to production: traps that must say
//! what to do instead of hanging, failing for ever or misleading.

use std::process::Command;
use std::time::{Duration, Instant};

use clerk_sync::webhook::SigningSecret;
use sqlx::Connection;

use crate::cli::{Server, clerk_sync, free_port, text};
use crate::support::TEST_DATABASE_URL_VAR;

/// A TCP server that accepts connections and never says a word, as a firewall, a proxy or a
/// paused compute can look to a client.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    port
}

fn output_of(command: &mut Command) -> (bool, String, Duration) {
    let started = Instant::now();
    let output = command.output().expect("clerk-sync runs");
    (
        output.status.success(),
        format!("{}{}", text(&output.stdout), text(&output.stderr)),
        started.elapsed(),
    )
}

#[tokio::test]
async fn start_up_against_a_database_that_never_answers_times_out_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = silent_server();
    let url = format!("postgres://postgres@127.0.0.1:{port}/app");
    let (_, secret) = SigningSecret::generate();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
        ("CLERK_SYNC_DB_CONNECT_TIMEOUT", "1s"),
    ];
    for args in [&["migrate"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let (ok, output, took) = output_of(clerk_sync(dir.path(), &env).args(args));
        assert!(!ok, "{args:?} must fail: {output}");
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
        assert!(
            output.contains(&format!("127.0.0.1:{port}")) && output.contains("timed out"),
            "{args:?}: {output}"
        );
        assert!(output.contains("CLERK_SYNC_DB_CONNECT_TIMEOUT"), "{output}");
    }
}

#[tokio::test]
async fn migrations_that_cannot_finish_time_out_and_change_nothing() {
    let admin = std::env::var(TEST_DATABASE_URL_VAR)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = crate::support::TestDb::create(crate::support::Backend::Postgres).await;
    let clerk_sync::config::DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    // Another process in the middle of migrating holds the migration lock for good.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x636c_6b73_796e_6301_i64)
        .execute(&mut holder)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_SYNC_MIGRATE_TIMEOUT", "1s"),
    ];
    let (ok, output, took) = output_of(clerk_sync(dir.path(), &env).arg("migrate"));
    assert!(!ok, "{output}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        output.contains("migrating") && output.contains("timed out"),
        "{output}"
    );
    assert!(output.contains("CLERK_SYNC_MIGRATE_TIMEOUT"), "{output}");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'",
    )
    .fetch_one(&mut holder)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was changed");
    drop(admin);
}

#[tokio::test]
async fn secrets_and_urls_that_cannot_work_are_refused_at_start_with_the_mistake_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret) = SigningSecret::generate();
    let quoted = format!("\"{secret}\"");
    for (env, expected) in [
        (
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", "abc")],
            "does not start with whsec_",
        ),
        (
            vec![(
                "CLERK_WEBHOOK_SIGNING_SECRET",
                "sk_test_abcdefghijklmnopqrstuvwxyz",
            )],
            "Clerk secret key",
        ),
        (
            vec![("CLERK_WEBHOOK_SIGNING_SECRET", quoted.as_str())],
            "quotes",
        ),
        (
            vec![
                (
                    "DATABASE_URL",
                    "postgresql://alex:p@ss#word@db.example.com/app",
                ),
                ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
            ],
            "percent-encoded",
        ),
    ] {
        let (ok, output, _) = output_of(clerk_sync(dir.path(), &env).arg("serve"));
        assert!(!ok, "{env:?} must fail");
        assert!(output.contains(expected), "{env:?}: {output}");
        assert!(
            !output.contains("ss#word") && !output.contains("p@ss"),
            "no fragment of a password: {output}"
        );
    }
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let url = format!("sqlite://{}/x.db", missing.display());
    for args in [&["migrate"][..], &["serve", "--dev"][..]] {
        let (ok, output, _) =
            output_of(clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]).args(args));
        assert!(!ok, "{args:?}: {output}");
        assert!(
            output.contains("does not exist") && output.contains("mkdir -p"),
            "{output}"
        );
        assert!(!missing.exists(), "{args:?} created the directory");
    }
}

#[tokio::test]
async fn flags_of_events_work_after_the_subcommand_too() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["events", "list", "--database-url", "sqlite://after.db"][..],
        &[
            "events",
            "--database-url",
            "sqlite://before.db",
            "list",
            "--failed",
        ][..],
    ] {
        let (ok, output, _) = output_of(clerk_sync(dir.path(), &[]).args(args));
        assert!(ok, "{args:?}: {output}");
    }
    assert!(dir.path().join("after.db").exists());
    let (_, help, _) = output_of(clerk_sync(dir.path(), &[]).args(["events", "list", "--help"]));
    assert!(help.contains("--database-url"), "{help}");
}

#[tokio::test]
async fn errors_say_their_cause_once_and_which_address_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (flag, names) in [
        ("--listen", "CLERK_SYNC_LISTEN"),
        ("--metrics-listen", "CLERK_SYNC_METRICS_LISTEN"),
    ] {
        let mut command = clerk_sync(dir.path(), &[]);
        command.args(["serve", flag, &taken]);
        if flag == "--metrics-listen" {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let (ok, output, _) = output_of(&mut command);
        assert!(!ok);
        assert_eq!(
            output.matches("Address already in use").count(),
            1,
            "{output}"
        );
        assert!(
            output.contains(names) && output.contains(&taken),
            "{output}"
        );
    }

    let (ok, output, _) = output_of(clerk_sync(dir.path(), &[]).args(["trigger", "user.foo"]));
    assert!(!ok);
    assert!(
        output.contains("user.created, user.updated, user.deleted")
            && !output.contains("No such file"),
        "{output}"
    );

    // A Backend API that cannot be reached: which URL, and why.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("CLERK_SECRET_KEY", "sk_test_abcdefghijklmnopqrstuvwxyz"),
        ("CLERK_API_URL", closed.as_str()),
        ("DATABASE_URL", "sqlite://jobs.db"),
    ];
    let (ok, output, _) = output_of(clerk_sync(dir.path(), &env).args(["backfill", "--quiet"]));
    assert!(!ok);
    assert!(
        output.contains(&closed) && output.contains("refused"),
        "{output}"
    );
}

#[test]
fn help_answers_what_the_readme_says_it_does() {
    let help = |args: &[&str]| {
        text(
            &Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
                .args(args)
                .output()
                .unwrap()
                .stdout,
        )
    };
    let top = help(&["--help"]);
    for command in [
        "serve",
        "migrate",
        "trigger",
        "backfill",
        "reconcile",
        "events",
    ] {
        assert!(top.contains(command), "--help lacks {command}");
    }
    for variable in ["RUST_LOG", "CLERK_SYNC_LOG_FORMAT", "CLERK_WEBHOOK_SECRET"] {
        assert!(top.contains(variable), "--help lacks {variable}");
        assert!(
            help(&["serve", "--help"]).contains(variable),
            "serve --help lacks {variable}"
        );
    }
    let trigger = help(&["trigger", "--help"]);
    assert!(!trigger.contains("Address to listen on"), "{trigger}");
    assert!(
        trigger.contains("Where the running clerk-sync listens"),
        "{trigger}"
    );
}

#[tokio::test]
async fn an_unconfigured_user_api_answers_without_an_error_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        clerk_sync(dir.path(), &[("CLERK_SYNC_LISTEN", &listen)]),
        &listen,
    )
    .await;
    for _ in 0..3 {
        let response = reqwest::get(format!("http://{listen}/api/users/me"))
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        let body = response.text().await.unwrap();
        assert!(body.contains("CLERK_SECRET_KEY"), "{body}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.stderr().contains("ERROR"), "{}", server.stderr());
    // The banner's hint is a command that works from here.
    assert!(
        server.stdout().contains("trigger user.created"),
        "{}",
        server.stdout()
    );
}
