//! Faults a deployment meets, against the built binary: clerk-sync killed with SIGKILL in the
//! middle of a stream, several clerk-sync processes on one database, PostgreSQL restarted under
//! a running service.
//!
//! Each test plays a random Clerk history (users signing up, editing their profiles, emails and
//! usernames moving between users, deletions) and hands its events to a Svix-like sender: every
//! event keeps its svix-id, and a delivery that gets no 2xx answer (another status, or no answer
//! at all) is tried again after a short backoff with a fresh timestamp and signature, until it is
//! accepted or a deadline passes. At the end the table must equal the history's final state, and
//! every event must have been applied exactly once: one inbox row per svix-id, with an outcome
//! that only a first application gives, and no effect in the tables without its inbox row.
//!
//! A last test checks the checks: each kind of damage a fault could do is reported.
//!
//! A failing run prints its seed; `CLERK_SYNC_FAULTS_SEED=<seed>` plays the same history again.
//! `--no-capture` shows one summary line per run (attempts, refusals, outcomes, time).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::sync::full_name;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use sqlx::{Connection, PgConnection, Row};

use crate::cli::clerk_sync;
use crate::support::{Backend, TestApp, TestDb, at};

/// The endpoint's signing secret, the same for every process and across restarts.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Users in a history, and events it has at least.
const USERS: usize = 30;
const EVENTS: usize = 300;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 8;
/// How long the sender keeps trying, and how long one attempt may take (Svix gives up on an
/// attempt after 15 s).
const SENDER_DEADLINE: Duration = Duration::from_secs(45);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
const T0: i64 = 1_750_000_000_000;
const FIRST_NAMES: [&str; 6] = ["Ada", "Zoë", "Łukasz", "山田", "Ωμέγα", "O'Brien"];
const LAST_NAMES: [&str; 4] = ["Lovelace", "Hopper", "D'Arcy", "Nakamura"];

fn seed() -> u64 {
    std::env::var("CLERK_SYNC_FAULTS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random)
}

// ---------------------------------------------------------------------------------------------
// Clerk's side: a history and its final state.

#[derive(Debug, Clone)]
enum Kind {
    Snapshot(SampleUser),
    Delete { user_id: String },
}

#[derive(Debug, Clone)]
struct Event {
    svix_id: String,
    event_type: &'static str,
    body: String,
    kind: Kind,
}

impl Event {
    fn user_id(&self) -> &str {
        match &self.kind {
            Kind::Snapshot(user) => &user.id,
            Kind::Delete { user_id } => user_id,
        }
    }
}

struct History {
    seed: u64,
    /// In the order Clerk emitted them.
    events: Vec<Event>,
    /// Final state of every user still alive.
    live: BTreeMap<String, SampleUser>,
    deleted: BTreeSet<String>,
    by_svix_id: HashMap<String, usize>,
    /// The event that carried each snapshot, by user id and `updated_at`.
    by_snapshot: HashMap<(String, i64), usize>,
}

impl History {
    /// Plays random steps until there are `events` events. Emails and usernames come from a
    /// small shared pool, so they move between users; Clerk keeps them unique at every instant
    /// (a user taking a value makes its holder give it up, which is itself an event). Every event
    /// gets its own `updated_at`, as Clerk bumps it on every change.
    fn generate(seed: u64, users: usize, events: usize) -> History {
        let mut rng = StdRng::seed_from_u64(seed);
        let values = users / 2;
        let id = |u: usize| format!("user_fault{u:02}");
        let email = |v: usize| format!("e{v}@example.com");
        let username = |v: usize| format!("name{v}");
        let mut live: BTreeMap<usize, SampleUser> = BTreeMap::new();
        let mut deleted: BTreeSet<usize> = BTreeSet::new();
        let mut out: Vec<Event> = Vec::new();
        let mut clock = T0;
        let svix_id = |rng: &mut StdRng, n: usize| {
            format!("msg_fault{n:04}x{:012x}", rng.random_range(0..1u64 << 48))
        };
        while out.len() < events {
            let user = rng.random_range(0..users);
            if deleted.contains(&user) {
                continue;
            }
            if live.contains_key(&user) && live.len() > users / 2 && rng.random_ratio(1, 12) {
                live.remove(&user);
                deleted.insert(user);
                clock += 1;
                out.push(Event {
                    svix_id: svix_id(&mut rng, out.len()),
                    event_type: "user.deleted",
                    body: sample::user_deleted(&id(user), clock),
                    kind: Kind::Delete { user_id: id(user) },
                });
                continue;
            }
            let wanted_email = rng
                .random_ratio(5, 6)
                .then(|| email(rng.random_range(0..values)));
            let wanted_username = rng
                .random_ratio(2, 3)
                .then(|| username(rng.random_range(0..values)));
            let holders: Vec<usize> = live
                .iter()
                .filter(|(other, u)| {
                    **other != user
                        && ((wanted_email.is_some() && u.email == wanted_email)
                            || (wanted_username.is_some() && u.username == wanted_username))
                })
                .map(|(other, _)| *other)
                .collect();
            for other in holders {
                let holder = live.get_mut(&other).expect("a live holder");
                if holder.email.is_some() && holder.email == wanted_email {
                    holder.email = None;
                }
                if holder.username.is_some() && holder.username == wanted_username {
                    holder.username = None;
                }
                clock += 1;
                holder.updated_at = clock;
                out.push(Event {
                    svix_id: svix_id(&mut rng, out.len()),
                    event_type: "user.updated",
                    body: sample::user_updated(holder),
                    kind: Kind::Snapshot(holder.clone()),
                });
            }
            clock += 1;
            let created = !live.contains_key(&user);
            let entry = live
                .entry(user)
                .or_insert_with(|| SampleUser::new(id(user), clock));
            entry.email = wanted_email;
            entry.username = wanted_username;
            entry.first_name = Some(FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())].into());
            entry.last_name = rng
                .random_ratio(3, 4)
                .then(|| LAST_NAMES[rng.random_range(0..LAST_NAMES.len())].into());
            entry.updated_at = clock;
            let (event_type, body) = if created {
                ("user.created", sample::user_created(entry))
            } else {
                ("user.updated", sample::user_updated(entry))
            };
            out.push(Event {
                svix_id: svix_id(&mut rng, out.len()),
                event_type,
                body,
                kind: Kind::Snapshot(entry.clone()),
            });
        }
        let by_svix_id = out
            .iter()
            .enumerate()
            .map(|(i, e)| (e.svix_id.clone(), i))
            .collect();
        let by_snapshot = out
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.kind {
                Kind::Snapshot(u) => Some(((u.id.clone(), u.updated_at), i)),
                Kind::Delete { .. } => None,
            })
            .collect();
        History {
            seed,
            events: out,
            live: live.into_values().map(|u| (u.id.clone(), u)).collect(),
            deleted: deleted.into_iter().map(id).collect(),
            by_svix_id,
            by_snapshot,
        }
    }

    /// Svix's side: every event once, one in `duplicate_one_in` twice (same svix-id, the second
    /// copy anywhere in the stream), shuffled: each delivery moves up to `spread` places from
    /// where Clerk emitted its event (`None`: anywhere).
    fn deliveries(&self, duplicate_one_in: u32, spread: Option<usize>) -> Vec<Delivery> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5eed);
        let n = self.events.len();
        let spread = spread.unwrap_or(n).max(1);
        let mut keyed: Vec<(usize, Delivery)> = Vec::new();
        for (i, event) in self.events.iter().enumerate() {
            let delivery = Delivery {
                svix_id: event.svix_id.clone(),
                body: event.body.clone(),
            };
            if rng.random_ratio(1, duplicate_one_in) {
                keyed.push((rng.random_range(0..n + spread), delivery.clone()));
            }
            keyed.push((i + rng.random_range(0..spread), delivery));
        }
        keyed.shuffle(&mut rng);
        keyed.sort_by_key(|(key, _)| *key);
        keyed.into_iter().map(|(_, d)| d).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Svix's side: a sender that retries until each delivery is accepted.

#[derive(Debug, Clone)]
struct Delivery {
    svix_id: String,
    body: String,
}

/// What the sender saw.
#[derive(Debug, Default)]
struct Tally {
    attempts: usize,
    /// Answers other than 2xx, by status.
    refused: BTreeMap<u16, usize>,
    /// When each attempt answered with something other than 2xx was sent, and the status.
    refused_at: Vec<(Instant, u16)>,
    /// Attempts that got no answer (refused or cut connection, timeout).
    connection_errors: usize,
    /// The `outcome` of every 2xx answer, by svix-id.
    answers: BTreeMap<String, Vec<String>>,
    /// 2xx answers per endpoint.
    accepted_by: Vec<usize>,
    /// The first few failed attempts, for diagnosis.
    samples: Vec<String>,
    /// Deliveries still not accepted at the deadline.
    undelivered: Vec<String>,
}

struct Sender {
    client: reqwest::Client,
    endpoints: Vec<String>,
    secret: SigningSecret,
    deadline: Instant,
    /// Round-robin over the endpoints, attempt by attempt.
    next: AtomicUsize,
    accepted: AtomicUsize,
    /// Attempts sent and not yet answered.
    in_flight: AtomicUsize,
    tally: Mutex<Tally>,
}

enum Failure {
    Status(u16, String),
    Connection(String),
}

impl Sender {
    fn new(endpoints: Vec<String>) -> Arc<Sender> {
        Arc::new(Sender {
            client: reqwest::Client::new(),
            secret: SigningSecret::parse(SECRET).expect("a valid secret"),
            deadline: Instant::now() + SENDER_DEADLINE,
            next: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            tally: Mutex::new(Tally {
                accepted_by: vec![0; endpoints.len()],
                ..Tally::default()
            }),
            endpoints,
        })
    }

    /// Delivers everything, `concurrency` deliveries at a time, each retried until accepted.
    async fn run(self: Arc<Self>, deliveries: Vec<Delivery>, concurrency: usize) -> Tally {
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for delivery in deliveries {
            let permit = limit.clone().acquire_owned().await.unwrap();
            let sender = self.clone();
            tasks.spawn(async move {
                sender.deliver(delivery).await;
                drop(permit);
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a delivery task panicked");
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }

    async fn deliver(&self, delivery: Delivery) {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let endpoint = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
            let sent_at = Instant::now();
            let timestamp = chrono::Utc::now().timestamp();
            let mut request = self
                .client
                .post(&self.endpoints[endpoint])
                .timeout(ATTEMPT_TIMEOUT)
                .header("content-type", "application/json")
                .body(delivery.body.clone());
            for (name, value) in signed_headers(
                &self.secret,
                &delivery.svix_id,
                timestamp,
                delivery.body.as_bytes(),
            )
            .unwrap()
            {
                request = request.header(name, value);
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let answer = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.text().await.map(|text| (status, text))
                }
                Err(e) => Err(e),
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let failure = match answer {
                Ok((status, text)) if status.is_success() => {
                    let outcome = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["outcome"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| format!("<no outcome: {text}>"));
                    let mut tally = self.tally.lock().unwrap();
                    tally.attempts += 1;
                    tally.accepted_by[endpoint] += 1;
                    tally
                        .answers
                        .entry(delivery.svix_id.clone())
                        .or_default()
                        .push(outcome);
                    drop(tally);
                    self.accepted.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok((status, text)) => Failure::Status(status.as_u16(), text),
                Err(e) => Failure::Connection(format!("{e:?}")),
            };
            {
                let mut tally = self.tally.lock().unwrap();
                tally.attempts += 1;
                let what = match failure {
                    Failure::Status(status, text) => {
                        *tally.refused.entry(status).or_default() += 1;
                        tally.refused_at.push((sent_at, status));
                        format!("{status} {text}")
                    }
                    Failure::Connection(error) => {
                        tally.connection_errors += 1;
                        error
                    }
                };
                if tally.samples.len() < 10 {
                    tally.samples.push(format!(
                        "{} attempt {attempt} to endpoint {endpoint}: {what}",
                        delivery.svix_id
                    ));
                }
                if Instant::now() >= self.deadline {
                    tally.undelivered.push(delivery.svix_id);
                    return;
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn refused(&self, status: u16) -> usize {
        self.tally
            .lock()
            .unwrap()
            .refused
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `count` deliveries were accepted.
    async fn wait_accepted(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.accepted() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} deliveries accepted in 30 s: {:?}",
                self.accepted(),
                self.tally.lock().unwrap().samples
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until an answer with `status` was seen.
    async fn wait_refused(&self, status: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.refused(status) == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Short randomized waits, doubling up to about half a second.
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(4);
    Duration::from_millis(base + rand::random_range(0..base))
}

// ---------------------------------------------------------------------------------------------
// The service: `clerk-sync serve`, the real binary.

/// A `clerk-sync serve` process on a fixed address, its output appended to a log file (a
/// restarted process adds to the same one). Killed with SIGKILL when dropped.
struct Service {
    child: Child,
    listen: String,
    log: PathBuf,
}

impl Service {
    async fn start(dir: &Path, database_url: &str, port: u16, extra: &[(&str, &str)]) -> Service {
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join(format!("clerk-sync-{port}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("a log file");
        let mut env = vec![
            ("DATABASE_URL", database_url),
            ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
            ("CLERK_SYNC_LISTEN", listen.as_str()),
        ];
        env.extend_from_slice(extra);
        let mut command = clerk_sync(dir, &env);
        command
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file);
        let child = command.spawn().expect("clerk-sync starts");
        let mut service = Service { child, listen, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            service.assert_running();
            if let Ok(response) = reqwest::get(format!("http://{}/readyz", service.listen)).await
                && response.status().is_success()
            {
                return service;
            }
            assert!(
                Instant::now() < deadline,
                "clerk-sync on {} not ready after 30 s:\n{}",
                service.listen,
                tail(&service.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn webhook_url(&self) -> String {
        format!("http://{}{}", self.listen, clerk_sync::http::WEBHOOK_PATH)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "clerk-sync on {} exited ({status}):\n{}",
                self.listen,
                tail(&self.log, 40)
            );
        }
    }

    /// SIGKILL: no graceful shutdown; whatever the process had in flight is cut where it was.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Distinct ports nothing listens on (all held open until all are chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The status of a GET, or None without an answer.
async fn status_of(url: &str) -> Option<u16> {
    let client = reqwest::Client::new();
    let request = client.get(url).timeout(Duration::from_secs(10));
    request.send().await.map(|r| r.status().as_u16()).ok()
}

fn postgres_url(db: &TestDb) -> String {
    match db.target() {
        DatabaseTarget::Postgres { url } => url,
        DatabaseTarget::Sqlite { .. } => unreachable!("a PostgreSQL test database"),
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

#[derive(Debug, Clone, PartialEq, Eq)]
struct UserRow {
    id: String,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    image_url: Option<String>,
    username: Option<String>,
    clerk_created_at: Option<NaiveDateTime>,
    clerk_updated_at: Option<NaiveDateTime>,
    deleted_at: Option<NaiveDateTime>,
}

/// The row a snapshot makes.
fn row_of(user: &SampleUser) -> UserRow {
    UserRow {
        id: user.id.clone(),
        email: user.email.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        name: full_name(user.first_name.as_deref(), user.last_name.as_deref()),
        image_url: Some(user.image_url.clone()),
        username: user.username.clone(),
        clerk_created_at: Some(at(user.created_at)),
        clerk_updated_at: Some(at(user.updated_at)),
        deleted_at: None,
    }
}

#[derive(Debug)]
struct InboxRow {
    svix_id: String,
    event_type: String,
    user_id: Option<String>,
    outcome: String,
    payload: String,
}

/// The tables, read in one snapshot.
struct Tables {
    users: Vec<UserRow>,
    inbox: Vec<InboxRow>,
    /// Inbox rows per svix-id.
    inbox_rows: BTreeMap<String, i64>,
    /// Tombstones per user id.
    tombstones: BTreeMap<String, i64>,
}

async fn read_tables(url: &str) -> Tables {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("the test reaches its database");
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let tables = read_tables_on(&mut tx).await;
    tx.rollback().await.unwrap();
    tables
}

/// The tables as `conn` sees them.
async fn read_tables_on(tx: &mut PgConnection) -> Tables {
    let users = sqlx::query(
        r#"SELECT id, email, "firstName", "lastName", name, "imageUrl", username,
                  "clerkCreatedAt", "clerkUpdatedAt", "deletedAt" FROM users ORDER BY id"#,
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap()
    .iter()
    .map(|r| UserRow {
        id: r.get("id"),
        email: r.get("email"),
        first_name: r.get("firstName"),
        last_name: r.get("lastName"),
        name: r.get("name"),
        image_url: r.get("imageUrl"),
        username: r.get("username"),
        clerk_created_at: r.get("clerkCreatedAt"),
        clerk_updated_at: r.get("clerkUpdatedAt"),
        deleted_at: r.get("deletedAt"),
    })
    .collect();
    let inbox = sqlx::query(
        "SELECT svix_id, event_type, user_id, outcome, payload FROM clerk_sync.inbox ORDER BY svix_id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap()
    .iter()
    .map(|r| InboxRow {
        svix_id: r.get("svix_id"),
        event_type: r.get("event_type"),
        user_id: r.get("user_id"),
        outcome: r.get("outcome"),
        payload: r.get("payload"),
    })
    .collect();
    let counts = |rows: Vec<sqlx::postgres::PgRow>| -> BTreeMap<String, i64> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let inbox_rows = counts(
        sqlx::query("SELECT svix_id, count(*) FROM clerk_sync.inbox GROUP BY svix_id")
            .fetch_all(&mut *tx)
            .await
            .unwrap(),
    );
    let tombstones = counts(
        sqlx::query("SELECT user_id, count(*) FROM clerk_sync.tombstones GROUP BY user_id")
            .fetch_all(&mut *tx)
            .await
            .unwrap(),
    );
    Tables {
        users,
        inbox,
        inbox_rows,
        tombstones,
    }
}

const APPLIED: [&str; 2] = ["created", "updated"];

/// What holds at any instant, mid-stream included: every event is in the tables whole or not at
/// all, and none twice.
///
/// * one inbox row per svix-id, of an event that was sent, with its body byte for byte;
/// * its outcome is one only a first application gives: a snapshot applied again would be
///   `unchanged` (every snapshot has its own `updated_at`), a deletion applied again
///   `tombstoned`; `failed`, `ignored` and `duplicate` have no business there;
/// * no effect without its inbox row, no inbox row without its effect: every user row is a
///   snapshot that was sent (an email or username it lacks was taken by a newer applied
///   snapshot of another user) whose event is in the inbox as applied; every tombstone is a
///   deletion in the inbox; every applied event's effect is in the tables;
/// * at most one `created` per user.
fn consistency_problems(history: &History, tables: &Tables) -> Vec<String> {
    let mut problems = Vec::new();
    for (svix_id, rows) in &tables.inbox_rows {
        if *rows != 1 {
            problems.push(format!("{rows} inbox rows for {svix_id}"));
        }
    }
    let rows: HashMap<&str, &UserRow> = tables.users.iter().map(|r| (r.id.as_str(), r)).collect();
    let inbox: HashMap<&str, &InboxRow> = tables
        .inbox
        .iter()
        .map(|r| (r.svix_id.as_str(), r))
        .collect();
    // Applied snapshots holding each email and username: (user id, updated_at).
    let mut email_claims: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    let mut username_claims: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    let mut created: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &tables.inbox {
        let Some(&index) = history.by_svix_id.get(&row.svix_id) else {
            problems.push(format!("inbox row for a svix-id never sent: {row:?}"));
            continue;
        };
        let event = &history.events[index];
        if row.payload != event.body {
            problems.push(format!(
                "{}: stored payload differs from the body sent",
                row.svix_id
            ));
        }
        if row.event_type != event.event_type || row.user_id.as_deref() != Some(event.user_id()) {
            problems.push(format!(
                "{}: stored as {} of {:?}, sent as {} of {}",
                row.svix_id,
                row.event_type,
                row.user_id,
                event.event_type,
                event.user_id()
            ));
        }
        if row.outcome == "created" {
            *created.entry(event.user_id()).or_default() += 1;
        }
        match &event.kind {
            Kind::Snapshot(user) => {
                if !["created", "updated", "stale", "tombstoned"].contains(&row.outcome.as_str()) {
                    problems.push(format!(
                        "{} ({} of {} at {}) has outcome {}: not a first application",
                        row.svix_id, event.event_type, user.id, user.updated_at, row.outcome
                    ));
                }
                if APPLIED.contains(&row.outcome.as_str()) {
                    if let Some(email) = &user.email {
                        email_claims
                            .entry(email)
                            .or_default()
                            .push((&user.id, user.updated_at));
                    }
                    if let Some(username) = &user.username {
                        username_claims
                            .entry(username)
                            .or_default()
                            .push((&user.id, user.updated_at));
                    }
                    let in_table = rows.get(user.id.as_str()).is_some_and(|r| {
                        r.clerk_updated_at
                            .is_some_and(|t| t.and_utc().timestamp_millis() >= user.updated_at)
                    });
                    if !in_table && !tables.tombstones.contains_key(&user.id) {
                        problems.push(format!(
                            "{} applied ({}) but {} holds no snapshot at least as new as {} and \
                             is not tombstoned",
                            row.svix_id, row.outcome, user.id, user.updated_at
                        ));
                    }
                }
            }
            Kind::Delete { user_id } => {
                if !["deleted", "not_found"].contains(&row.outcome.as_str()) {
                    problems.push(format!(
                        "{} (user.deleted of {user_id}) has outcome {}: not a first application",
                        row.svix_id, row.outcome
                    ));
                }
                if !tables.tombstones.contains_key(user_id) {
                    problems.push(format!(
                        "{} applied but {user_id} has no tombstone",
                        row.svix_id
                    ));
                }
                if rows.contains_key(user_id.as_str()) {
                    problems.push(format!(
                        "{} applied but {user_id} still has a row",
                        row.svix_id
                    ));
                }
            }
        }
    }
    for (user_id, count) in created {
        if count > 1 {
            problems.push(format!("{user_id} was created {count} times"));
        }
    }
    let taken_later = |claims: &HashMap<&str, Vec<(&str, i64)>>, value: &str, user: &SampleUser| {
        claims.get(value).is_some_and(|holders| {
            holders
                .iter()
                .any(|(other, t)| *other != user.id && *t > user.updated_at)
        })
    };
    for row in &tables.users {
        let Some(updated_at) = row.clerk_updated_at.map(|t| t.and_utc().timestamp_millis()) else {
            problems.push(format!("row without clerkUpdatedAt: {row:?}"));
            continue;
        };
        let Some(&index) = history.by_snapshot.get(&(row.id.clone(), updated_at)) else {
            problems.push(format!("row matches no snapshot that was sent: {row:?}"));
            continue;
        };
        let event = &history.events[index];
        let Kind::Snapshot(user) = &event.kind else {
            unreachable!("snapshots index snapshots")
        };
        let mut expected = row_of(user);
        if row.email.is_none()
            && let Some(email) = &user.email
            && taken_later(&email_claims, email, user)
        {
            expected.email = None;
        }
        if row.username.is_none()
            && let Some(username) = &user.username
            && taken_later(&username_claims, username, user)
        {
            expected.username = None;
        }
        if *row != expected {
            problems.push(format!(
                "row differs from the snapshot sent (and what newer snapshots took from it):\n  \
                 row  {row:?}\n  sent {expected:?}"
            ));
        }
        match inbox.get(event.svix_id.as_str()) {
            Some(stored) if APPLIED.contains(&stored.outcome.as_str()) => {}
            other => problems.push(format!(
                "row of {} is snapshot {} but its event {} is in the inbox as {:?}",
                row.id,
                updated_at,
                event.svix_id,
                other.map(|r| &r.outcome)
            )),
        }
    }
    for (user_id, count) in &tables.tombstones {
        if *count != 1 {
            problems.push(format!("{count} tombstones for {user_id}"));
        }
        let deletion = history
            .events
            .iter()
            .find(|e| matches!(&e.kind, Kind::Delete { user_id: u } if u == user_id));
        match deletion {
            Some(event) if inbox.contains_key(event.svix_id.as_str()) => {}
            Some(event) => problems.push(format!(
                "{user_id} is tombstoned but its deletion {} is not in the inbox",
                event.svix_id
            )),
            None => problems.push(format!("{user_id} is tombstoned but was never deleted")),
        }
    }
    problems
}

/// At the end: everything consistent, every event in the inbox exactly once, the table equal to
/// the history's final state, and the sender's answers agreeing (at most one answer per svix-id
/// says it applied the event, with the outcome stored).
fn final_problems(history: &History, tables: &Tables, tally: &Tally) -> Vec<String> {
    let mut problems = consistency_problems(history, tables);
    if !tally.undelivered.is_empty() {
        problems.push(format!(
            "{} deliveries never accepted, e.g. {:?}",
            tally.undelivered.len(),
            &tally.undelivered[..tally.undelivered.len().min(5)]
        ));
    }
    let stored: BTreeSet<&str> = tables.inbox.iter().map(|r| r.svix_id.as_str()).collect();
    let sent: BTreeSet<&str> = history.events.iter().map(|e| e.svix_id.as_str()).collect();
    let missing: Vec<&&str> = sent.difference(&stored).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} events missing from the inbox, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    let expected: Vec<UserRow> = history.live.values().map(row_of).collect();
    let actual = &tables.users;
    if *actual != expected {
        let actual_by_id: BTreeMap<&str, &UserRow> =
            actual.iter().map(|r| (r.id.as_str(), r)).collect();
        let expected_by_id: BTreeMap<&str, &UserRow> =
            expected.iter().map(|r| (r.id.as_str(), r)).collect();
        for id in actual_by_id.keys().chain(expected_by_id.keys()) {
            let (a, e) = (actual_by_id.get(id), expected_by_id.get(id));
            if a != e {
                problems.push(format!(
                    "table differs from Clerk's final state for {id}:\n  table {a:?}\n  clerk {e:?}"
                ));
            }
        }
    }
    let tombstoned: BTreeSet<&str> = tables.tombstones.keys().map(String::as_str).collect();
    let deleted: BTreeSet<&str> = history.deleted.iter().map(String::as_str).collect();
    if tombstoned != deleted {
        problems.push(format!(
            "tombstones {tombstoned:?} differ from the deleted users {deleted:?}"
        ));
    }
    for user_id in history.live.keys() {
        let created = tables
            .inbox
            .iter()
            .filter(|r| r.outcome == "created" && r.user_id.as_deref() == Some(user_id))
            .count();
        if created != 1 {
            problems.push(format!(
                "{user_id} is alive but was created {created} times"
            ));
        }
    }
    let outcomes: HashMap<&str, &str> = tables
        .inbox
        .iter()
        .map(|r| (r.svix_id.as_str(), r.outcome.as_str()))
        .collect();
    for (svix_id, answers) in &tally.answers {
        let first: Vec<&String> = answers.iter().filter(|a| *a != "duplicate").collect();
        match (first.as_slice(), outcomes.get(svix_id.as_str())) {
            ([], _) => {}
            ([answer], Some(stored)) if answer.as_str() == *stored => {}
            _ => problems.push(format!(
                "{svix_id}: answers {answers:?}, stored outcome {:?}",
                outcomes.get(svix_id.as_str())
            )),
        }
    }
    problems
}

/// One line about a run, shown with `--no-capture` (and on failure).
fn summary(what: &str, history: &History, tables: &Tables, tally: &Tally, started: Instant) {
    let answers: usize = tally.answers.values().map(Vec::len).sum();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &tables.inbox {
        *outcomes.entry(row.outcome.as_str()).or_default() += 1;
    }
    eprintln!("{what}: stored outcomes {outcomes:?}");
    eprintln!(
        "{what}: seed {}, {} events ({} deleted users), {answers} accepted deliveries in {} \
         attempts, refused {:?}, {} connection errors, per endpoint {:?}, {:.1?}",
        history.seed,
        history.events.len(),
        history.deleted.len(),
        tally.attempts,
        tally.refused,
        tally.connection_errors,
        tally.accepted_by,
        started.elapsed()
    );
}

/// Fails the test with the problems, the seed, and what the sender and the services saw.
fn assert_no_problems(
    what: &str,
    history: &History,
    problems: &[String],
    tally: Option<&Tally>,
    logs: &[&Path],
) {
    if problems.is_empty() {
        return;
    }
    let mut message = format!(
        "{what}: {} problems (seed {}; CLERK_SYNC_FAULTS_SEED={} replays it):\n",
        problems.len(),
        history.seed,
        history.seed
    );
    for problem in problems.iter().take(30) {
        message.push_str(&format!("- {problem}\n"));
    }
    if let Some(tally) = tally {
        message.push_str(&format!(
            "sender: {} attempts, refused {:?}, {} connection errors, accepted per endpoint {:?}, \
             first failures {:#?}\n",
            tally.attempts,
            tally.refused,
            tally.connection_errors,
            tally.accepted_by,
            tally.samples
        ));
    }
    for log in logs {
        message.push_str(&format!("--- {}:\n{}\n", log.display(), tail(log, 30)));
    }
    panic!("{message}");
}

// ---------------------------------------------------------------------------------------------
// A private PostgreSQL cluster that a test may stop and start.

/// A throwaway PostgreSQL cluster in a temporary directory (trust auth, 127.0.0.1, fsync off),
/// for a test that restarts its server: the shared server other tests use must stay up. Run as
/// the `postgres` user when the tests run as root (PostgreSQL refuses root). Stopped and
/// removed when dropped, also when the test fails.
struct Cluster {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    async fn create() -> Cluster {
        let bindir = pg_bindir().expect(
            "PostgreSQL's server binaries (initdb, pg_ctl) are needed to restart a private \
             server; install PostgreSQL (Debian: apt-get install postgresql)",
        );
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("clerk-sync-faults-pg.")
            .tempdir()
            .expect("a temporary directory");
        if as_postgres {
            let chowned = std::process::Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                chowned.success(),
                "cannot hand the cluster's directory to the postgres user"
            );
        }
        let mut cluster = Cluster {
            bindir,
            dir,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        let initdb = tokio::process::Command::from(cluster.command("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .await
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        cluster.configure(&format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n",
            cluster.dir.path().display()
        ));
        // Something else may take the chosen port before the server binds it: try another.
        for _ in 0..3 {
            cluster.port = free_ports(1)[0];
            cluster.configure(&format!("port = {}\n", cluster.port));
            if cluster.start().await {
                return cluster;
            }
        }
        panic!(
            "could not start a private PostgreSQL cluster:\n{}",
            cluster.log()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Later settings win, so appending is enough.
    fn configure(&self, settings: &str) {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .expect("postgresql.conf is writable");
    }

    /// One of PostgreSQL's programs, as the user that owns the cluster, from its directory (that
    /// user may not be able to read ours).
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bindir.join(program);
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    async fn pg_ctl(&self, args: &[&str]) -> bool {
        tokio::process::Command::from(self.command("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(args)
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    async fn start(&self) -> bool {
        let log = self.dir.path().join("postgres.log");
        self.pg_ctl(&["-l", &log.to_string_lossy(), "-w", "-t", "60", "start"])
            .await
    }

    /// `pg_ctl -m fast stop`: sessions are cut, open transactions rolled back, then a clean
    /// shutdown.
    async fn stop_fast(&self) {
        assert!(
            self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]).await,
            "pg_ctl stop failed:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        tail(&self.dir.path().join("postgres.log"), 30)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .status();
        }
        // The TempDir removes the directory next.
    }
}

/// Where initdb and pg_ctl are: pg_config's bindir, else the newest /usr/lib/postgresql/*/bin,
/// else next to an initdb on PATH.
fn pg_bindir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && usable(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| usable(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .find(|dir| usable(dir))
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("initdb"))
                .find(|p| p.is_file())
                .and_then(|p| std::fs::canonicalize(p).ok())
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|dir| usable(dir))
        })
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// clerk-sync is killed with SIGKILL twice while a stream is being delivered (at about a third
/// and two thirds of it) and started again on the same port each time; the sender keeps
/// retrying. Right after each kill the tables hold only whole events; at the end nothing is lost
/// and nothing was applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing_and_applies_nothing_twice() {
    sigkill_mid_stream_then_restart("SIGKILL twice", TestDb::target).await;
}

/// The SIGKILL test with the service's `DATABASE_URL` made by `service_target` from the test's
/// database (e.g. through a pooler); the checks read the tables over the direct URL. Beyond the
/// connections the kills cut, every attempt must be answered 2xx the first time. `what` names
/// the run in its summary.
pub(crate) async fn sigkill_mid_stream_then_restart(
    what: &str,
    service_target: impl FnOnce(&TestDb) -> DatabaseTarget,
) {
    let started = Instant::now();
    let history = History::generate(seed(), USERS, EVENTS);
    let deliveries = history.deliveries(5, Some(40));
    let total = deliveries.len();
    let db = TestDb::create(Backend::Postgres).await;
    let url = postgres_url(&db);
    let service_url = match service_target(&db) {
        DatabaseTarget::Postgres { url } => url,
        DatabaseTarget::Sqlite { .. } => unreachable!("a PostgreSQL URL for the service"),
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1)[0];
    let mut service = Service::start(dir.path(), &service_url, port, &[]).await;
    let log = service.log.clone();
    let sender = Sender::new(vec![service.webhook_url()]);
    let stream = tokio::spawn(sender.clone().run(deliveries, CONCURRENCY));

    let mut stored_at_kill = Vec::new();
    let mut cut = Vec::new();
    for third in [1, 2] {
        sender.wait_accepted(total * third / 3).await;
        cut.push(sender.in_flight());
        service.kill();
        let tables = read_tables(&url).await;
        stored_at_kill.push(tables.inbox.len());
        let problems = consistency_problems(&history, &tables);
        assert_no_problems(
            &format!("{what}: right after kill {third}"),
            &history,
            &problems,
            None,
            &[&log],
        );
        // Let the sender meet a closed port for a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        service = Service::start(dir.path(), &service_url, port, &[]).await;
    }
    let tally = stream.await.unwrap();
    let tables = read_tables(&url).await;
    let problems = final_problems(&history, &tables, &tally);
    summary(what, &history, &tables, &tally, started);
    assert_no_problems(
        &format!("{what}: after the stream"),
        &history,
        &problems,
        Some(&tally),
        &[&log],
    );
    assert!(
        stored_at_kill[0] < history.events.len() && stored_at_kill[1] < history.events.len(),
        "the kills came mid-stream: {stored_at_kill:?} of {} events stored",
        history.events.len()
    );
    eprintln!("requests in flight at the kills: {cut:?}");
    assert!(
        cut.iter().sum::<usize>() > 0 && tally.connection_errors > 0,
        "the kills cut requests in flight ({cut:?}) and the sender met the dead process: \
         {tally:?}"
    );
    assert!(
        tally.refused.is_empty(),
        "only connection errors, no error answers: {:?} {:#?}",
        tally.refused,
        tally.samples
    );
    drop(service);
}

/// `n` clerk-sync processes, started at the same moment on one new database (their migrations
/// race), behind a sender that spreads its attempts over them round-robin, with duplicates and
/// the events shuffled.
async fn several_processes_on_one_database(n: usize) {
    let started = Instant::now();
    let history = History::generate(seed(), USERS, EVENTS);
    let deliveries = history.deliveries(3, None);
    let duplicates = deliveries.len() - history.events.len();
    let db = TestDb::create(Backend::Postgres).await;
    let url = postgres_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let services = futures::future::join_all(
        free_ports(n)
            .into_iter()
            .map(|port| Service::start(dir.path(), &url, port, &[])),
    )
    .await;
    let logs: Vec<PathBuf> = services.iter().map(|s| s.log.clone()).collect();
    let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let sender = Sender::new(services.iter().map(Service::webhook_url).collect());
    let tally = sender.run(deliveries, CONCURRENCY).await;
    let tables = read_tables(&url).await;
    let problems = final_problems(&history, &tables, &tally);
    summary(
        &format!("{n} processes"),
        &history,
        &tables,
        &tally,
        started,
    );
    assert_no_problems(
        &format!("{n} processes"),
        &history,
        &problems,
        Some(&tally),
        &logs,
    );
    assert!(
        tally.accepted_by.iter().all(|count| *count > 0),
        "every process took deliveries: {:?}",
        tally.accepted_by
    );
    let duplicate_answers = tally
        .answers
        .values()
        .flatten()
        .filter(|a| *a == "duplicate")
        .count();
    assert!(
        duplicate_answers >= duplicates,
        "each second delivery is answered as a duplicate: {duplicate_answers} of {duplicates}"
    );
    assert!(
        tally.refused.is_empty() && tally.connection_errors == 0,
        "with every process and the database up, every attempt is accepted: refused {:?}, {} \
         connection errors, {:#?}",
        tally.refused,
        tally.connection_errors,
        tally.samples
    );
    drop(services);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_apply_a_shuffled_duplicated_stream_exactly_once() {
    several_processes_on_one_database(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_database_apply_a_shuffled_duplicated_stream_exactly_once() {
    several_processes_on_one_database(3).await;
}

/// PostgreSQL (a private cluster) is stopped with `pg_ctl -m fast stop` in the middle of a
/// stream and started again on the same port once the service has answered 503 (and at least a
/// second later). While it is away the service answers 503 and says it is not ready, yet stays
/// alive; once it is back the service recovers by itself, and every event ends applied exactly
/// once. `CLERK_SYNC_DB_TIMEOUT=2s` makes the 503 come sooner than the default 10 s would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_stream_means_503_then_recovery_and_every_event_once() {
    let started = Instant::now();
    let history = History::generate(seed(), USERS, EVENTS);
    let deliveries = history.deliveries(5, Some(40));
    let total = deliveries.len();
    let cluster = Cluster::create().await;
    let cluster_ready = started.elapsed();
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1)[0];
    let mut service =
        Service::start(dir.path(), &url, port, &[("CLERK_SYNC_DB_TIMEOUT", "2s")]).await;
    let log = service.log.clone();
    let sender = Sender::new(vec![service.webhook_url()]);
    let stream = tokio::spawn(sender.clone().run(deliveries, CONCURRENCY));

    sender.wait_accepted(total / 3).await;
    cluster.stop_fast().await;
    let stopped = Instant::now();
    let accepted_at_stop = sender.accepted();
    let (readyz, healthz) = (service.url("/readyz"), service.url("/healthz"));
    let (saw_503, ready, alive) = tokio::join!(
        sender.wait_refused(503, Duration::from_secs(20)),
        status_of(&readyz),
        status_of(&healthz),
    );
    let outage_503s = sender.refused(503);
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(stopped.elapsed())).await;
    service.assert_running();
    assert!(
        cluster.start().await,
        "PostgreSQL starts again on port {}:\n{}",
        cluster.port,
        cluster.log()
    );
    let outage = stopped.elapsed();
    let back = Instant::now();

    let tally = stream.await.unwrap();
    service.assert_running();
    let tables = read_tables(&url).await;
    let problems = final_problems(&history, &tables, &tally);
    summary("PostgreSQL restarted", &history, &tables, &tally, started);
    let refused_once_back: Vec<Duration> = tally
        .refused_at
        .iter()
        .filter(|(sent, _)| *sent > back)
        .map(|(sent, _)| *sent - back)
        .collect();
    eprintln!(
        "PostgreSQL away for {outage:.1?}; {outage_503s} answers 503 by then; cluster ready after \
         {cluster_ready:.1?}; refused attempts sent after it was back: {refused_once_back:?}"
    );
    assert_no_problems(
        "after the restart of PostgreSQL",
        &history,
        &problems,
        Some(&tally),
        &[&log],
    );
    assert!(
        saw_503 && outage_503s > 0,
        "the service answered 503 while PostgreSQL was away ({outage:?}): {tally:?}"
    );
    assert!(
        accepted_at_stop < total,
        "PostgreSQL stopped mid-stream ({accepted_at_stop} of {total} accepted)"
    );
    assert!(
        refused_once_back.is_empty(),
        "attempts sent after PostgreSQL was back are accepted: refused {refused_once_back:?} after"
    );
    assert_eq!(ready, Some(503), "/readyz while PostgreSQL is away");
    assert_eq!(alive, Some(200), "/healthz while PostgreSQL is away");
    assert_eq!(
        status_of(&readyz).await,
        Some(200),
        "/readyz once PostgreSQL is back"
    );
    assert!(
        tally.refused.keys().all(|status| *status == 503) && tally.connection_errors == 0,
        "503 and nothing else while PostgreSQL was away: refused {:?}, {} connection errors, {:#?}",
        tally.refused,
        tally.connection_errors,
        tally.samples
    );
    drop(service);
    drop(cluster);
}

/// The checks themselves: a clean run passes them, and each kind of damage a fault could do (an
/// effect without its inbox row, an event applied twice, a half-written, lost or foreign event,
/// an answer claiming a second application) is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_lost_doubled_and_half_written_events() {
    let history = History::generate(seed(), 12, 100);
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.secrets = vec![SigningSecret::parse(SECRET).unwrap()]
    })
    .await;
    let url = postgres_url(&app.db);
    let tally = Sender::new(vec![app.webhook_url()])
        .run(history.deliveries(3, Some(20)), CONCURRENCY)
        .await;
    let clean = read_tables(&url).await;
    let problems = final_problems(&history, &clean, &tally);
    assert_no_problems("a clean run", &history, &problems, Some(&tally), &[]);

    let user = history
        .live
        .values()
        .find(|u| u.email.is_some())
        .expect("a live user with an email");
    let last = &history.events[history.by_snapshot[&(user.id.clone(), user.updated_at)]];
    let mut damages = vec![
        (
            "an effect without its inbox row",
            format!(
                "DELETE FROM clerk_sync.inbox WHERE svix_id = '{}'",
                last.svix_id
            ),
        ),
        (
            "a snapshot applied twice",
            format!(
                "UPDATE clerk_sync.inbox SET outcome = 'unchanged' WHERE svix_id = '{}'",
                last.svix_id
            ),
        ),
        (
            "a half-written row",
            format!(
                r#"UPDATE users SET "firstName" = 'Half' WHERE id = '{}'"#,
                user.id
            ),
        ),
        (
            "a lost email",
            format!("UPDATE users SET email = NULL WHERE id = '{}'", user.id),
        ),
        (
            "a lost row",
            format!("DELETE FROM users WHERE id = '{}'", user.id),
        ),
        (
            "an event never sent",
            "INSERT INTO clerk_sync.inbox (svix_id, event_type, user_id, outcome, payload, \
             svix_timestamp, received_at) VALUES ('msg_stranger', 'user.updated', 'user_x', \
             'updated', '{}', 0, now())"
                .to_string(),
        ),
    ];
    if let Some(named) = history.live.values().find(|u| u.username.is_some()) {
        damages.push((
            "a lost username",
            format!("UPDATE users SET username = NULL WHERE id = '{}'", named.id),
        ));
    }
    if let Some(deletion) = history
        .events
        .iter()
        .find(|e| matches!(e.kind, Kind::Delete { .. }))
    {
        damages.push((
            "a lost tombstone",
            format!(
                "DELETE FROM clerk_sync.tombstones WHERE user_id = '{}'",
                deletion.user_id()
            ),
        ));
        damages.push((
            "a deletion applied twice",
            format!(
                "UPDATE clerk_sync.inbox SET outcome = 'tombstoned' WHERE svix_id = '{}'",
                deletion.svix_id
            ),
        ));
    }
    let mut conn = PgConnection::connect(&url).await.unwrap();
    for (damage, sql) in damages {
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(&sql).execute(&mut *tx).await.unwrap();
        let tables = read_tables_on(&mut tx).await;
        tx.rollback().await.unwrap();
        assert!(
            !consistency_problems(&history, &tables).is_empty(),
            "{damage} goes unnoticed mid-stream"
        );
        assert!(
            !final_problems(&history, &tables, &tally).is_empty(),
            "{damage} goes unnoticed at the end"
        );
    }
    let mut answers = tally.answers.clone();
    answers
        .entry(last.svix_id.clone())
        .or_default()
        .push("updated".into());
    let doubled = Tally {
        answers,
        ..Tally::default()
    };
    assert!(
        !final_problems(&history, &clean, &doubled).is_empty(),
        "two answers saying the event was applied go unnoticed"
    );
}
