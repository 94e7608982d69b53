//! Rate limits, timeouts, graceful shutdown and lost connections, over real HTTP.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::webhook::SigningSecret;

use crate::cli::{clerk_sync, run, text};
use crate::support::{Backend, TestApp, TestSql};

fn user(id: &str) -> SampleUser {
    SampleUser::new(id, 1_716_883_200_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_is_rate_limited_per_address_but_signed_deliveries_from_it_never_are() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.limits.unverified_per_minute = 5).await;
    let (other, _) = SigningSecret::generate();
    let body = sample::user_created(&user("user_flood"));
    let mut statuses = Vec::new();
    for i in 0..12 {
        let forged = clerk_sync::webhook::signed_headers(
            &other,
            &format!("msg_{i}"),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        )
        .unwrap();
        statuses.push(app.post(&forged, body.clone().into_bytes()).await.status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // The same address keeps delivering properly signed events.
    for i in 0..10 {
        let answer = app
            .deliver(&sample::user_created(&user(&format!("user_real{i}"))))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(app.users().await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_without_delaying_signed_deliveries() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.request_timeout = Duration::from_millis(800)
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_string();
    let slow = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        // A fresh timestamp: with a stale one the headers alone get 401, before any body.
        let now = chrono::Utc::now().timestamp();
        let head = format!(
            "POST /api/webhooks/clerk HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\ncontent-length: 200\r\nsvix-id: msg_slow\r\nsvix-timestamp: {now}\r\nsvix-signature: v1,x\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        for _ in 0..30 {
            if stream.write_all(b"{").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let mut buf = [0u8; 512];
            if let Ok(n) = stream.read(&mut buf)
                && n > 0
            {
                return (
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                    started.elapsed(),
                );
            }
        }
        (String::new(), started.elapsed())
    });
    // Meanwhile, real deliveries go through promptly.
    for i in 0..5 {
        let started = Instant::now();
        let answer = app
            .deliver(&sample::user_created(&user(&format!("user_fast{i}"))))
            .await;
        assert_eq!(answer.status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    let (answer, took) = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closed_are_replaced_without_failing_events() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(
        app.deliver(&sample::user_created(&user("user_before")))
            .await
            .status,
        200
    );
    // What Neon does when it suspends a compute: every connection is terminated.
    let TestSql::Postgres(pool) = app.sql() else {
        unreachable!()
    };
    let admin = std::env::var("CLERK_SYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'clerk-sync') t",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(terminated > 0);
    for i in 0..5 {
        let answer = app
            .deliver(&sample::user_created(&user(&format!("user_after{i}"))))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(app.users().await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_within_the_grace_period() {
    use clerk_sync::app::App;
    use clerk_sync::config::{DatabaseTarget, ServeConfig};
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = SigningSecret::generate();
    let mut config = ServeConfig::new(
        DatabaseTarget::Sqlite {
            path: dir.path().join("s.db"),
        },
        vec![secret.clone()],
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.shutdown_timeout = Duration::from_millis(500);
    let app = App::build(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    // A request whose body is still arriving when the signal comes: it is finished.
    let body = sample::user_created(&user("user_inflight"));
    let headers = clerk_sync::webhook::signed_headers(
        &secret,
        "msg_inflight",
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
    .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut head = format!(
        "POST /api/webhooks/clerk HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let half = body.len() / 2;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..half]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&body.as_bytes()[half..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let started = Instant::now();
    server.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn print_config_shows_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret) = SigningSecret::generate();
    let output = run({
        let mut c = clerk_sync(
            dir.path(),
            &[
                ("CLERK_WEBHOOK_SIGNING_SECRET", secret.as_str()),
                (
                    "DATABASE_URL",
                    "postgresql://alex:hunter2@db.example.com/app?sslmode=require",
                ),
                ("CLERK_SYNC_ADMIN_TOKEN", "admin-token-value"),
            ],
        );
        c.args(["serve", "--print-config"]);
        c
    });
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    for needle in [
        "DATABASE_URL",
        "alex:***@db.example.com",
        "CLERK_SYNC_RATE_LIMIT_UNVERIFIED",
        "CLERK_SYNC_ADMIN_TOKEN",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    for secret_text in [&secret[6..], "hunter2", "admin-token-value"] {
        assert!(!out.contains(secret_text), "a secret leaked:\n{out}");
    }
}

#[tokio::test]
async fn the_user_api_is_limited_per_user_and_per_address() {
    use crate::clerk_emulator::{ClerkEmulator, TokenOptions};
    let clerk = ClerkEmulator::start().await;
    let settings = clerk_sync::config::ClerkSettings::from_values(
        None,
        None,
        Some(&clerk.instance_public_key_pem()),
        None,
        None,
        false,
    )
    .unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, move |c| {
        c.clerk = settings;
        c.limits.user_per_minute = 3;
        c.limits.address_per_minute = 8;
    })
    .await;
    for id in ["user_a", "user_b"] {
        app.deliver(&sample::user_created(&user(id))).await;
    }
    let get = |id: &'static str| {
        let token = clerk.mint_session_token(id, &TokenOptions::default());
        let request = app
            .client
            .get(format!("{}/api/users/me", app.address))
            .bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            )
        }
    };
    let a: Vec<(u16, bool)> = futures::future::join_all((0..4).map(|_| get("user_a"))).await;
    assert_eq!(a.iter().filter(|(s, _)| *s == 200).count(), 3, "{a:?}");
    assert!(a.contains(&(429, true)), "{a:?}");
    // Another user from the same address still gets through, until the address limit.
    let b: Vec<(u16, bool)> = futures::future::join_all((0..6).map(|_| get("user_b"))).await;
    assert_eq!(b.iter().filter(|(s, _)| *s == 200).count(), 3, "{b:?}");
    let after: Vec<(u16, bool)> = futures::future::join_all((0..2).map(|_| get("user_b"))).await;
    assert!(
        after.iter().all(|(s, _)| *s == 429),
        "the address limit (8) is spent: {after:?}"
    );
}
