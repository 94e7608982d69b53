//! Sending: the loopback check, signing, the keep-alive connections, the workers of the timed
//! phase (with Svix-like retries) and the untimed sends of the warm-up and the preload.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::mpsc;

use clerk_sync::webhook::{SigningSecret, signed_headers};

use crate::model::{Event, Key};

pub(crate) async fn check_loopback(url: &reqwest::Url) -> anyhow::Result<()> {
    let host = url.host_str().context("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() || !addresses.iter().all(IpAddr::is_loopback) {
        bail!("refusing {host}: loadgen only sends to loopback addresses (127.0.0.0/8, ::1)");
    }
    Ok(())
}

/// A delivery ready to send: signed headers and the body.
pub(crate) struct Job {
    index: usize,
    svix_id: &'static str,
    body: &'static str,
    headers: HeaderMap,
    signed_at: i64,
    attempt: u32,
}

fn sign(secret: &SigningSecret, svix_id: &str, body: &str) -> anyhow::Result<(HeaderMap, i64)> {
    let ts = chrono::Utc::now().timestamp();
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signed = signed_headers(secret, svix_id, ts, body.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    for (name, value) in signed {
        headers.insert(HeaderName::from_static(name), HeaderValue::try_from(value)?);
    }
    Ok((headers, ts))
}

/// Every delivery of the timed phase, signed, waiting in the queue the workers pull from.
pub(crate) struct Queue {
    sender: mpsc::UnboundedSender<Job>,
    receiver: mpsc::UnboundedReceiver<Job>,
    len: usize,
}

/// Signs every delivery of `order` (indexes into `events`) so that the timed phase only sends.
pub(crate) fn presign(
    secret: &SigningSecret,
    events: &[Event],
    order: &[(usize, bool)],
) -> anyhow::Result<Queue> {
    // Leaked: the bodies live as long as the run, and retries re-send them from other tasks.
    let leaked: Vec<(&'static str, &'static str)> = events
        .iter()
        .map(|e| {
            let id: &'static str = Box::leak(e.svix_id.clone().into_boxed_str());
            let body: &'static str = Box::leak(e.body.clone().into_boxed_str());
            (id, body)
        })
        .collect();
    let (sender, receiver) = mpsc::unbounded_channel();
    for (index, &(event, _)) in order.iter().enumerate() {
        let (svix_id, body) = leaked[event];
        let (headers, signed_at) = sign(secret, svix_id, body)?;
        sender
            .send(Job {
                index,
                svix_id,
                body,
                headers,
                signed_at,
                attempt: 0,
            })
            .ok()
            .context("queue closed")?;
    }
    Ok(Queue {
        sender,
        receiver,
        len: order.len(),
    })
}

/// What one attempt got.
pub(crate) struct Attempt {
    /// The delivery's place in the delivery order.
    pub(crate) index: usize,
    /// 0 for a connection error.
    pub(crate) status: u16,
    pub(crate) latency: Duration,
    pub(crate) outcome: Option<String>,
    pub(crate) error: Option<String>,
    /// No retry follows: the delivery's final answer.
    pub(crate) final_attempt: bool,
}

/// What the workers share: where to send, how to re-sign and retry, and the queue.
pub(crate) struct Shared {
    url: reqwest::Url,
    secret: SigningSecret,
    retries: Option<(u32, Duration)>,
    remaining: AtomicUsize,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    sender: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

impl Shared {
    /// `retries`: the most retries of one delivery and the first backoff (doubled at each).
    pub(crate) fn new(
        url: &reqwest::Url,
        secret: &SigningSecret,
        retries: Option<(u32, Duration)>,
        queue: Queue,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            url: url.clone(),
            secret: secret.clone(),
            retries,
            remaining: AtomicUsize::new(queue.len),
            queue: tokio::sync::Mutex::new(queue.receiver),
            sender: Mutex::new((queue.len > 0).then_some(queue.sender)),
        })
    }

    fn resolved(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Every delivery has its final answer: close the queue, the workers stop.
            self.sender.lock().expect("not poisoned").take();
        }
    }
}

/// The timed phase: one worker per client until every delivery has its final answer.
pub(crate) async fn deliver(
    clients: Vec<reqwest::Client>,
    shared: &Arc<Shared>,
    deliveries: usize,
) -> anyhow::Result<Vec<Attempt>> {
    let workers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(worker(c, Arc::clone(shared))))
        .collect();
    let mut attempts = Vec::with_capacity(deliveries);
    for w in workers {
        attempts.extend(w.await?);
    }
    Ok(attempts)
}

async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    job: &Job,
) -> (u16, Vec<u8>, Option<String>) {
    let request = client
        .post(url.clone())
        .headers(job.headers.clone())
        .body(job.body);
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => (status, bytes.to_vec(), None),
                Err(e) => (0, Vec::new(), Some(e.to_string())),
            }
        }
        Err(e) => (0, Vec::new(), Some(error_chain(&e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn worker(client: reqwest::Client, shared: Arc<Shared>) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    loop {
        let job = { shared.queue.lock().await.recv().await };
        let Some(mut job) = job else { break };
        // Svix accepts timestamps up to 5 minutes old: re-sign what waited that long.
        if chrono::Utc::now().timestamp() - job.signed_at > 240
            && let Ok((headers, ts)) = sign(&shared.secret, job.svix_id, job.body)
        {
            job.headers = headers;
            job.signed_at = ts;
        }
        let started = Instant::now();
        let (status, body, error) = send(&client, &shared.url, &job).await;
        let latency = started.elapsed();
        let ok = (200..300).contains(&status);
        let outcome = if ok {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("outcome").and_then(Value::as_str).map(str::to_owned))
        } else {
            None
        };
        let error = error.or_else(|| {
            (!ok).then(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
        });
        let retry = match shared.retries {
            Some((max, backoff)) if !ok && job.attempt < max => {
                Some(backoff * 2u32.pow(job.attempt))
            }
            _ => None,
        };
        attempts.push(Attempt {
            index: job.index,
            status,
            latency,
            outcome,
            error,
            final_attempt: retry.is_none(),
        });
        match retry {
            Some(wait) => {
                let sender = shared.sender.lock().expect("not poisoned").clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    // Same svix-id, fresh timestamp and signature, as Svix retries.
                    if let Ok((headers, ts)) = sign(&shared.secret, job.svix_id, job.body) {
                        job.headers = headers;
                        job.signed_at = ts;
                    }
                    job.attempt += 1;
                    match sender {
                        Some(sender) if sender.send(job).is_ok() => {}
                        _ => shared.resolved(),
                    }
                });
            }
            None => shared.resolved(),
        }
    }
    attempts
}

pub(crate) fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(None::<Duration>)
        .timeout(timeout)
        .build()?)
}

/// Sends each user's events of `events` in order (untimed), one user per connection at a time
/// (the warm-up, and the user events with --preload-users). Other events are left out.
/// Returns how many were not answered with a 2xx.
pub(crate) async fn each_user_in_order(
    clients: &[reqwest::Client],
    url: &reqwest::Url,
    secret: &SigningSecret,
    users: usize,
    events: &[Event],
) -> anyhow::Result<usize> {
    let mut per_user: Vec<Vec<&Event>> = vec![Vec::new(); users];
    for event in events {
        if let Key::User(user) = event.key {
            per_user[user].push(event);
        }
    }
    let per_user = Arc::new(
        per_user
            .into_iter()
            .map(|events| {
                events
                    .into_iter()
                    .map(|e| (e.svix_id.clone(), e.body.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>(),
    );
    let mut tasks = Vec::new();
    for (k, client) in clients.iter().enumerate() {
        let (client, url, secret, per_user) = (
            client.clone(),
            url.clone(),
            secret.clone(),
            Arc::clone(&per_user),
        );
        let step = clients.len();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0usize;
            for user in per_user.iter().skip(k).step_by(step) {
                for (svix_id, body) in user {
                    let (headers, _) = sign(&secret, svix_id, body)?;
                    let response = client
                        .post(url.clone())
                        .headers(headers)
                        .body(body.clone())
                        .send()
                        .await
                        .with_context(|| format!("cannot reach {url}"))?;
                    if !response.status().is_success() {
                        failed += 1;
                    }
                    response.bytes().await?;
                }
            }
            anyhow::Ok(failed)
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await??;
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:3000/x",
            "http://127.9.9.9/x",
            "http://[::1]:3000/x",
        ] {
            let url = reqwest::Url::parse(ok).expect("url");
            check_loopback(&url).await.expect(ok);
        }
        for refused in [
            "http://10.0.0.1/x",
            "http://[2001:db8::1]/x",
            "http://192.0.2.1/x",
        ] {
            let url = reqwest::Url::parse(refused).expect("url");
            let e = check_loopback(&url).await.expect_err(refused).to_string();
            assert!(e.contains("only sends to loopback"), "{e}");
        }
    }

    #[test]
    fn error_chain_names_every_cause() {
        // reqwest's own message alone ("error sending request") hides why it failed.
        let outer = OuterError(std::io::Error::other("connection refused"));
        assert_eq!(
            error_chain(&outer),
            "error sending request: connection refused"
        );
    }

    #[derive(Debug)]
    struct OuterError(std::io::Error);

    impl std::fmt::Display for OuterError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for OuterError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
