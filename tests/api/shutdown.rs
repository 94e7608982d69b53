//! SIGTERM against the built binary: every configuration (each backend, `/metrics` on the main
//! address or its own) exits with code 0 within `CLERK_SYNC_SHUTDOWN_TIMEOUT`, after its
//! webhook writers have taken database connections of their own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clerk_sync::app::build_state;
use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::config::{DatabaseTarget, ServeConfig};
use clerk_sync::store::Store;
use clerk_sync::webhook::{SigningSecret, signed_headers};

use crate::cli::{clerk_sync, free_port};
use crate::support::{Backend, TestDb, on_both_backends};

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

on_both_backends! {
    async fn sigterm_exits_within_the_shutdown_timeout(backend) {
        answer_a_delivery_then_sigterm(backend, false).await;
    }

    async fn sigterm_exits_within_the_shutdown_timeout_with_metrics_on_their_own_address(backend) {
        answer_a_delivery_then_sigterm(backend, true).await;
    }

    async fn an_embedding_app_stops_the_webhook_writers_before_closing_the_store(backend) {
        let db = TestDb::create(backend).await;
        let (secret, _) = SigningSecret::generate();
        let config = ServeConfig::new(db.target(), vec![secret.clone()]);
        let store = Store::connect(&config.database, &config.pool).await.unwrap();
        store.migrate().await.unwrap();
        let state = build_state(&config, store.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // The app's own router keeps a clone of the state (and so of the queue) while it serves.
        let app = clerk_sync::http::router(state.clone(), 1 << 20);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let deliver = || {
            let body = sample::user_created(&SampleUser::new(random_id("user"), 1_716_883_200_000));
            let headers =
                signed_headers(&secret, &random_id("msg"), chrono::Utc::now().timestamp(), body.as_bytes())
                    .unwrap();
            let mut request = client
                .post(format!("http://{address}{}", clerk_sync::http::WEBHOOK_PATH))
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            request.send()
        };
        for answer in futures::future::join_all((0..12).map(|_| deliver())).await {
            assert_eq!(answer.unwrap().status(), 200);
        }

        tokio::time::timeout(Duration::from_secs(5), state.deliveries.shutdown())
            .await
            .expect("the writers stop");
        assert_eq!(
            deliver().await.unwrap().status(),
            503,
            "a delivery after shutdown is refused so that Svix retries it"
        );
        tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .expect("the writers' connections are released, so the pool closes");
        // Again: waits for the same end, returns at once.
        tokio::time::timeout(Duration::from_secs(1), state.deliveries.shutdown())
            .await
            .unwrap();
    }
}

async fn answer_a_delivery_then_sigterm(backend: Backend, separate_metrics: bool) {
    let db = TestDb::create(backend).await;
    let database_url = match db.target() {
        DatabaseTarget::Postgres { url } => url,
        DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
    };
    let dir = tempfile::tempdir().unwrap();
    let (secret, secret_text) = SigningSecret::generate();
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics_listen = format!("127.0.0.1:{}", free_port());
    let timeout = format!("{}s", SHUTDOWN_TIMEOUT.as_secs());
    let mut env = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret_text.as_str()),
        ("CLERK_SYNC_LISTEN", listen.as_str()),
        ("CLERK_SYNC_SHUTDOWN_TIMEOUT", timeout.as_str()),
    ];
    if separate_metrics {
        env.push(("CLERK_SYNC_METRICS_LISTEN", metrics_listen.as_str()));
    }
    let log = dir.path().join("stderr.log");
    let mut command = clerk_sync(dir.path(), &env);
    command
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut service = Service(command.spawn().expect("clerk-sync starts"));
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("http://{listen}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready; stderr:\n{}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Several at once, so that every writer takes a connection of its own.
    let deliveries = (0..12).map(|_| {
        let body = sample::user_created(&SampleUser::new(random_id("user"), 1_716_883_200_000));
        let headers = signed_headers(
            &secret,
            &random_id("msg"),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        )
        .unwrap();
        let mut request = client
            .post(format!("http://{listen}{}", clerk_sync::http::WEBHOOK_PATH))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        request.send()
    });
    for answer in futures::future::join_all(deliveries).await {
        assert_eq!(answer.unwrap().status(), 200, "stderr:\n{}", stderr());
    }
    let metrics_at = if separate_metrics {
        &metrics_listen
    } else {
        &listen
    };
    let metrics = client
        .get(format!("http://{metrics_at}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &service.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = service.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < SHUTDOWN_TIMEOUT,
            "still running {SHUTDOWN_TIMEOUT:?} after SIGTERM; stderr:\n{}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "stderr:\n{}", stderr());
    assert!(
        !stderr().contains("grace period"),
        "nothing was left to cut short: {}",
        stderr()
    );
}

/// Killed if a test fails before it exits by itself.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
