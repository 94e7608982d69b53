//! Slow and junk clients must not delay signed deliveries: stalled bodies, half-sent requests,
//! too many connections from one address, bodies over the buffer budget, guessed admin tokens.
//! The hostile side connects from 127.0.0.1, the honest side from 127.0.0.2 (both loopback).
//! Figures under real floods are in benches/flood.rs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::webhook::signed_headers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Backend, TestApp};

const HOSTILE: [u8; 4] = [127, 0, 0, 1];
const HONEST: [u8; 4] = [127, 0, 0, 2];

fn server(app: &TestApp) -> SocketAddr {
    app.address.trim_start_matches("http://").parse().unwrap()
}

/// A connection to the service from `from` (a loopback address).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    socket.connect(to).await
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()
        .unwrap()
}

/// Webhook headers that look like a delivery (fresh timestamp, a well-formed signature) and
/// a declared body far longer than what is sent.
fn stalled_webhook_head(to: SocketAddr, declared: usize) -> String {
    let timestamp = chrono::Utc::now().timestamp();
    format!(
        "POST /api/webhooks/clerk HTTP/1.1\r\nHost: {to}\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\nsvix-id: msg_stall\r\nsvix-timestamp: {timestamp}\r\n\
         svix-signature: v1,c3RhbGxlZCBib2R5IHN0YWxsZWQgYm9keSBzdGFsbGVkIGJvZHk=\r\n\r\n"
    )
}

/// Until `stop`, keeps `count` connections from `from` each sending a webhook head and 10 bytes
/// of its body, then stalling; a connection the server cuts is opened again.
fn flood_with_stalled_bodies(
    count: usize,
    from: [u8; 4],
    to: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = connect_from(from, to).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let head = stalled_webhook_head(to, 100_000);
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(b"{\"data\":{}").await.is_err()
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    // Wait for the server to answer or cut; then open again.
                    let mut sink = Vec::new();
                    let read = stream.read_to_end(&mut sink);
                    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
                    // A refused connection is closed at once: do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

async fn signed_delivery_from(app: &TestApp, from: [u8; 4], user_id: &str) -> (u16, Duration) {
    let body = sample::user_created(&SampleUser::new(user_id, 1_716_883_200_000));
    let headers = signed_headers(
        &app.secret,
        &format!("msg_{user_id}"),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
    .unwrap();
    let mut request = client_from(from)
        .post(app.webhook_url())
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let started = Instant::now();
    let status = request
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

async fn healthz_from(app: &TestApp, from: [u8; 4]) -> (u16, Duration) {
    let started = Instant::now();
    let status = client_from(from)
        .get(format!("{}/healthz", app.address))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

/// `clerk_sync_connections_cut_total{reason}` as `/metrics` shows it.
async fn cut(app: &TestApp, reason: &str) -> f64 {
    let text = client_from(HONEST)
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("clerk_sync_connections_cut_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

/// Polls `cut(reason)` until it is above zero, for up to `within`.
async fn cut_moves(app: &TestApp, reason: &str, within: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let value = cut(app, reason).await;
        if value > 0.0 || started.elapsed() > within {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_from_one_address_delay_neither_signed_deliveries_nor_healthz() {
    // A small ceiling, so that the stalled bodies would fill it if they held slots.
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_concurrency = 50;
        c.limits.request_timeout = Duration::from_secs(3);
    })
    .await;
    let to = server(&app);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = flood_with_stalled_bodies(300, HOSTILE, to, stop.clone());
    // Let the flood take hold: every slot would be taken by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for i in 0..3 {
        let (status, took) = signed_delivery_from(&app, HONEST, &format!("user_honest{i}")).await;
        assert_eq!(status, 200, "a signed delivery under the flood");
        assert!(
            took < Duration::from_secs(2),
            "signed delivery took {took:?}"
        );
        let (status, took) = healthz_from(&app, HONEST).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }
    // The flood is cut (the request timeout) and the cuts are counted; its connections over
    // the per-address cap (256) are refused.
    assert!(cut_moves(&app, "slow_body", Duration::from_secs(8)).await > 0.0);
    assert!(cut(&app, "too_many_connections").await > 0.0);
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.abort();
    }
    assert_eq!(app.users().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_headers_are_refused_before_the_body_arrives_and_count_against_the_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.limits.unverified_per_minute = 3).await;
    let to = server(&app);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(HOSTILE, to).await.unwrap();
        // A stale timestamp, and none of the 100,000 bytes announced.
        let head = stalled_webhook_head(to, 100_000).replace(
            &format!("svix-timestamp: {}", chrono::Utc::now().timestamp()),
            "svix-timestamp: 1",
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        statuses.push(String::from_utf8_lossy(&answer[..n]).to_string());
    }
    assert!(
        statuses[..3].iter().all(|s| s.starts_with("HTTP/1.1 401")),
        "{statuses:?}"
    );
    assert!(statuses[3].starts_with("HTTP/1.1 429"), "{statuses:?}");
    // Signed deliveries from that address are never limited.
    let (status, _) = signed_delivery_from(&app, HOSTILE, "user_after_junk").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_connections_are_closed_within_the_header_timeout() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.header_timeout = Duration::from_secs(1);
    })
    .await;
    let to = server(&app);
    let mut half_sent = connect_from(HOSTILE, to).await.unwrap();
    half_sent.write_all(b"POST /api/webhooks/cl").await.unwrap();
    let mut silent = connect_from(HOSTILE, to).await.unwrap();
    let started = Instant::now();
    for stream in [&mut half_sent, &mut silent] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .expect("the server closes the connection");
        // Closed (EOF or reset), perhaps after a 408; never a request answered.
        if let Ok(n) = read {
            let answer = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(cut(&app, "slow_headers").await >= 2.0);

    // A client that sends its request in time is served as before.
    let (status, _) = signed_delivery_from(&app, HOSTILE, "user_in_time").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_connections_per_address = 5;
    })
    .await;
    let to = server(&app);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(HOSTILE, to).await.unwrap());
    }
    // The sixth from the same address is closed without being read.
    let mut sixth = connect_from(HOSTILE, to).await.unwrap();
    let _ = sixth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sixth.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    assert!(
        read.is_err() || buf.is_empty(),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    assert!(cut(&app, "too_many_connections").await >= 1.0);

    // Another address is not affected.
    let (status, _) = healthz_from(&app, HONEST).await;
    assert_eq!(status, 200);
    // A freed connection frees its place.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let (status, _) = healthz_from(&app, HOSTILE).await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_not_capped_per_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_connections_per_address = 2;
        c.limits.trusted_proxies = vec![clerk_sync::http::IpNet::parse("127.0.0.1").unwrap()];
    })
    .await;
    let to = server(&app);
    // Many clients behind one proxy: more connections than the per-address cap, all served.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(HOSTILE, to).await.unwrap());
    }
    for stream in &mut held {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_buffer_budget_get_503_with_retry_after() {
    // 256 KiB in all, so one address may hold 64 KiB (the body limit here too).
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.max_body_bytes = 64 * 1024;
        c.limits.body_buffer_bytes = 256 * 1024;
    })
    .await;
    let to = server(&app);
    let chunk = vec![b' '; 40 * 1024];
    let mut first = connect_from(HOSTILE, to).await.unwrap();
    first
        .write_all(stalled_webhook_head(to, 60 * 1024).as_bytes())
        .await
        .unwrap();
    first.write_all(&chunk).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = connect_from(HOSTILE, to).await.unwrap();
    second
        .write_all(stalled_webhook_head(to, 60 * 1024).as_bytes())
        .await
        .unwrap();
    second.write_all(&chunk).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after:"), "{answer}");
    assert!(cut(&app, "body_budget").await >= 1.0);

    // Another address still has its share.
    let (status, _) = signed_delivery_from(&app, HONEST, "user_within_budget").await;
    assert_eq!(status, 200);
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_status_tokens_are_rate_limited_per_address() {
    const TOKEN: &str = "the-admin-token-for-this-test";
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.admin_token = Some(TOKEN.into());
        c.limits.unverified_per_minute = 3;
    })
    .await;
    let status_from = |from: [u8; 4], token: &'static str| {
        let request = client_from(from)
            .get(format!("{}/status", app.address))
            .bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            )
        }
    };
    for _ in 0..3 {
        assert_eq!(status_from(HOSTILE, "guess").await.0, 401);
    }
    assert_eq!(status_from(HOSTILE, "guess").await, (429, true));
    // Shut out, right token or not: a right guess must not stand out.
    assert_eq!(status_from(HOSTILE, TOKEN).await, (429, true));
    // Another address is not.
    assert_eq!(status_from(HONEST, TOKEN).await.0, 200);
}
