//! README rule 8: no personal data (emails, names, usernames, image URLs, phone numbers,
//! metadata, event bodies) in clerk-sync's log at any level up to info, slow statements and
//! refused events included; nor in PostgreSQL's server log or `pg_stat_activity` for the
//! statements clerk-sync sends. Ids (user, svix) may appear.
//!
//! Every personal value a test sends carries one random token that no id, timestamp or SQL
//! holds, so a value that shows anywhere, whole or in part (truncated, quoted, escaped), is
//! found by its token.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use serde_json::json;
use sqlx::Connection;

use crate::cli::{Server, clerk_sync, free_port};
use crate::support::{Backend, TestApp, TestDb, TestSql};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The personal data one test sends.
struct Private {
    /// In every text value: `pz` and ten random lowercase letters.
    token: String,
    /// The phone number's digits (a phone number cannot hold the token).
    phone_digits: String,
}

impl Private {
    fn new() -> Private {
        let letters: String = (0..10)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        let digits: String = (0..8)
            .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
            .collect();
        Private {
            token: format!("pz{letters}"),
            phone_digits: format!("555{digits}"),
        }
    }

    /// A user whose every personal field is the test's; `n` tells them apart.
    fn user(&self, n: usize, now_ms: i64) -> SampleUser {
        let mut user = SampleUser::new(random_id("user"), now_ms);
        self.rename(&mut user, n);
        user
    }

    /// New personal values for `user`, one second newer (an update that changes them all).
    fn rename(&self, user: &mut SampleUser, n: usize) {
        let t = &self.token;
        user.email = Some(format!("{t}.mail{n}@example.org"));
        user.first_name = Some(format!("Zeb{t}first{n}"));
        user.last_name = Some(format!("Ulon{t}last{n}"));
        user.username = Some(format!("{t}_name{n}"));
        user.image_url = format!("https://img.example.org/{t}/face{n}.png");
        user.updated_at += 1000;
    }

    /// `user`'s event, with the test's phone number and metadata besides.
    fn event(&self, event_type: &str, user: &SampleUser) -> String {
        let t = &self.token;
        let mut data = user.to_clerk_json();
        data["phone_numbers"] = json!([{
            "id": "idn_phone",
            "object": "phone_number",
            "phone_number": format!("+1{}", self.phone_digits),
        }]);
        data["primary_phone_number_id"] = json!("idn_phone");
        data["private_metadata"] = json!({"note": format!("private {t}")});
        data["public_metadata"] = json!({"plan": format!("public {t}")});
        data["unsafe_metadata"] = json!({"bio": format!("unsafe {t}")});
        sample::envelope(event_type, data, user.updated_at).to_string()
    }

    /// A user whose email holds a NUL, which PostgreSQL's text refuses: the event is failed.
    fn nul_user(&self, now_ms: i64) -> SampleUser {
        let mut user = self.user(999, now_ms);
        user.email = Some(format!("{}.nul\u{0}mail@example.org", self.token));
        user
    }

    /// Panics, showing the line, when `text` holds any of the test's personal data.
    fn assert_none_in(&self, what: &str, text: &str) {
        for needle in [&self.token, &self.phone_digits] {
            if let Some(line) = text.lines().find(|line| line.contains(needle.as_str())) {
                panic!("personal data ({needle}) in {what}:\n{line}");
            }
        }
    }
}

/// clerk-sync's binary serving a database, every library's log at info (the most rule 8
/// covers), its output captured.
struct Served {
    server: Server,
    listen: String,
    secret: SigningSecret,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(database_url: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let (secret, secret_text) = SigningSecret::generate();
        let env = [
            ("DATABASE_URL", database_url),
            ("CLERK_WEBHOOK_SIGNING_SECRET", secret_text.as_str()),
            ("CLERK_SYNC_LISTEN", listen.as_str()),
            ("RUST_LOG", "info"),
        ];
        let server = Server::start(clerk_sync(dir.path(), &env), &listen).await;
        Served {
            server,
            listen,
            secret,
            _dir: dir,
        }
    }

    /// Delivers `body` under `svix_id`: the status and the outcome answered.
    async fn deliver(&self, svix_id: &str, body: &str) -> (u16, String) {
        let timestamp = chrono::Utc::now().timestamp();
        let headers = signed_headers(&self.secret, svix_id, timestamp, body.as_bytes()).unwrap();
        let mut request = reqwest::Client::new()
            .post(format!(
                "http://{}{}",
                self.listen,
                clerk_sync::http::WEBHOOK_PATH
            ))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let outcome = answer["outcome"].as_str().unwrap_or("<none>").to_owned();
        (status, outcome)
    }

    /// Delivers `body` under a fresh svix-id, which it returns, expecting 200 with `outcome`.
    async fn expect(&self, body: &str, outcome: &str) -> String {
        let svix_id = random_id("msg");
        let answer = self.deliver(&svix_id, body).await;
        assert_eq!(answer, (200, outcome.to_owned()), "{body}");
        svix_id
    }

    /// clerk-sync's whole log (stdout and stderr), once it holds the line of each of
    /// `svix_ids`: the sign that everything about those events has been logged.
    async fn log_after(&self, svix_ids: &[String]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = format!("{}\n{}", self.server.stdout(), self.server.stderr());
            if svix_ids.iter().all(|id| log.contains(id.as_str())) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "not every event's line is in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The line clerk-sync logged for `svix_id`.
fn line_of<'a>(log: &'a str, svix_id: &str) -> &'a str {
    log.lines()
        .find(|line| line.contains(svix_id))
        .unwrap_or_else(|| panic!("no line for {svix_id}:\n{log}"))
}

/// (c) clerk-sync's own log at info: the events' lines, a statement held up for two seconds by
/// another session's row lock (the slow statement a database driver would log with its whole
/// text), and events the database refuses: a NUL in an email (refused in a batch with other
/// users' events, which are then applied one by one) and a clash with an index of the app's own
/// (whose error PostgreSQL words with the value: `Key ("lastName")=(...) already exists`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_8_no_personal_data_in_clerk_syncs_log_slow_statements_and_refused_events_included() {
    let db = TestDb::create(Backend::Postgres).await;
    let DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    let served = Served::start(&url).await;
    let private = Private::new();
    let t = now_ms();
    let mut svix_ids = Vec::new();

    let mut user = private.user(0, t);
    svix_ids.push(
        served
            .expect(&private.event("user.created", &user), "created")
            .await,
    );

    // Another session holds the row for two seconds: the update's statements become slow ones.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(&user.id)
        .execute(&mut holder)
        .await
        .unwrap();
    private.rename(&mut user, 1);
    let release = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    };
    let body = private.event("user.updated", &user);
    let (svix_id, ()) = tokio::join!(served.expect(&body, "updated"), release);
    svix_ids.push(svix_id);

    // A NUL among other users' events, delivered together so that they share a batch.
    let nul_body = private.event("user.created", &private.nul_user(t));
    let others: Vec<String> = (10..16)
        .map(|n| private.event("user.created", &private.user(n, t)))
        .collect();
    let (nul_svix_id, created) = tokio::join!(
        served.expect(&nul_body, "failed"),
        futures::future::join_all(others.iter().map(|body| served.expect(body, "created"))),
    );
    svix_ids.push(nul_svix_id.clone());
    svix_ids.extend(created);

    // An index of the app's own: a second user with the first one's last name is refused.
    sqlx::query(r#"CREATE UNIQUE INDEX "users_lastName_key" ON users ("lastName")"#)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut clash = private.user(20, t);
    clash.last_name = user.last_name.clone();
    let clash_svix_id = served
        .expect(&private.event("user.created", &clash), "failed")
        .await;
    svix_ids.push(clash_svix_id.clone());

    let log = served.log_after(&svix_ids).await;
    // The refused events went through the error paths, and were logged as failed.
    for svix_id in [&nul_svix_id, &clash_svix_id] {
        assert!(line_of(&log, svix_id).contains("failed"), "{log}");
    }
    private.assert_none_in("clerk-sync's log", &log);
}

/// (a) `pg_stat_activity`: what a connection of the test's own sees of clerk-sync's sessions,
/// sampled every 2 ms while a stream of deliveries flows: creations, updates (one held up by a
/// row lock, so a writing statement is seen in flight for over a second) and a refused NUL.
/// The text PostgreSQL shows is the first `track_activity_query_size` bytes (1 kB by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_8_no_personal_data_in_pg_stat_activity() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let TestSql::Postgres(pool) = app.sql() else {
        unreachable!()
    };
    let private = Private::new();

    #[derive(Default)]
    struct Sampled {
        polls: usize,
        rows: usize,
        lock_waits: usize,
        texts: HashSet<String>,
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            let mut conn = pool.acquire().await.unwrap();
            let mut sampled = Sampled::default();
            while !stop.load(Ordering::Relaxed) {
                let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT query, wait_event_type FROM pg_stat_activity
                     WHERE application_name = 'clerk-sync' AND datname = current_database()",
                )
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                sampled.polls += 1;
                for (query, wait_event_type) in rows {
                    sampled.rows += 1;
                    if wait_event_type.as_deref() == Some("Lock") {
                        sampled.lock_waits += 1;
                    }
                    sampled.texts.extend(query);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sampled
        }
    });

    let t = now_ms();
    let mut users: Vec<SampleUser> = (0..24).map(|n| private.user(n, t)).collect();
    let bodies: Vec<String> = users
        .iter()
        .map(|user| private.event("user.created", user))
        .collect();
    let created = futures::future::join_all(bodies.iter().map(|body| app.deliver(body))).await;
    for answer in &created {
        assert_eq!(
            (answer.status, answer.outcome()),
            (200, "created"),
            "{answer:?}"
        );
    }

    // Updates, the first one held up by another session's lock on its row; a refused NUL.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(&users[0].id)
        .execute(&mut *holder)
        .await
        .unwrap();
    for (n, user) in users.iter_mut().enumerate() {
        private.rename(user, 100 + n);
    }
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        holder.commit().await.unwrap();
    };
    let bodies: Vec<String> = users
        .iter()
        .map(|user| private.event("user.updated", user))
        .collect();
    let nul_body = private.event("user.created", &private.nul_user(t));
    let (updated, nul, ()) = tokio::join!(
        futures::future::join_all(bodies.iter().map(|body| app.deliver(body))),
        app.deliver(&nul_body),
        release,
    );
    for answer in &updated {
        assert_eq!(
            (answer.status, answer.outcome()),
            (200, "updated"),
            "{answer:?}"
        );
    }
    assert_eq!((nul.status, nul.outcome()), (200, "failed"), "{nul:?}");

    stop.store(true, Ordering::Relaxed);
    let sampled = sampler.await.unwrap();
    println!(
        "{} polls, {} rows, {} waiting on a lock, {} distinct statements",
        sampled.polls,
        sampled.rows,
        sampled.lock_waits,
        sampled.texts.len()
    );
    assert!(
        sampled.rows > 0 && !sampled.texts.is_empty(),
        "no statement of clerk-sync's was seen in pg_stat_activity ({} polls): is its \
         application_name still 'clerk-sync'?",
        sampled.polls
    );
    assert!(
        sampled.lock_waits > 0,
        "the update held up by the row lock was never seen waiting: the sampling missed the \
         statements that write the users"
    );
    let texts: Vec<&str> = sampled.texts.iter().map(String::as_str).collect();
    private.assert_none_in("pg_stat_activity", &texts.join("\n-- next statement --\n"));
}

/// The TLS + SCRAM cluster `scripts/test` starts: its admin URL (no query), its CA's path and
/// its server log's path.
fn tls_cluster() -> (String, String, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run the suite with scripts/test, which starts a TLS + SCRAM \
                 PostgreSQL and says where its CA and its server log are"
            )
        })
    };
    (
        var("CLERK_SYNC_TEST_TLS_DATABASE_URL"),
        var("CLERK_SYNC_TEST_TLS_CA"),
        var("CLERK_SYNC_TEST_TLS_LOG"),
    )
}

/// (b) PostgreSQL's own server log, on a cluster whose log the test can read: what it logs
/// about clerk-sync's statements (an error with the failing statement's text, and a lock wait
/// over `deadlock_timeout` with the waiting statement's) must hold none of the values. (A
/// server told to log statements themselves, `log_statement` or `log_min_duration_statement`,
/// or the parameters of failing ones, `log_parameter_max_length_on_error`, logs values whatever
/// a client does; this database is told none of that.) clerk-sync's own log is checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_8_no_personal_data_in_the_postgresql_server_log() {
    let (admin, ca, log_path) = tls_cluster();
    let verified = |url: &str| format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let mut admin_conn = sqlx::PgConnection::connect(&verified(&admin))
        .await
        .unwrap();
    let name = format!("rule_8_{}", random_id("db").to_lowercase());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin_conn)
        .await
        .unwrap();
    // Whatever the cluster's settings: every error is logged with its statement, and so is a
    // wait for a lock longer than a second.
    for setting in [
        "log_statement = 'none'",
        "log_min_duration_statement = -1",
        "log_min_error_statement = 'error'",
        "log_parameter_max_length_on_error = 0",
        "log_lock_waits = on",
        "deadlock_timeout = '1s'",
    ] {
        sqlx::query(&format!("ALTER DATABASE {name} SET {setting}"))
            .execute(&mut admin_conn)
            .await
            .unwrap();
    }
    let mut base = url::Url::parse(&admin).unwrap();
    base.set_path(&format!("/{name}"));
    let base = verified(base.as_str());
    let log_start = std::fs::metadata(&log_path)
        .unwrap_or_else(|e| panic!("the TLS cluster's log {log_path}: {e}"))
        .len();

    let served = Served::start(&base).await;
    let private = Private::new();
    let t = now_ms();
    let mut svix_ids = Vec::new();

    // A batch of creations with a NUL among them: the NUL is refused by the database.
    let mut users: Vec<SampleUser> = (0..8).map(|n| private.user(n, t)).collect();
    let deliveries: Vec<(String, String)> = users
        .iter()
        .map(|user| (random_id("msg"), private.event("user.created", user)))
        .collect();
    let nul_svix_id = random_id("msg");
    let nul_body = private.event("user.created", &private.nul_user(t));
    let (nul_answer, answers) = tokio::join!(
        served.deliver(&nul_svix_id, &nul_body),
        futures::future::join_all(deliveries.iter().map(|(id, body)| served.deliver(id, body))),
    );
    assert_eq!(nul_answer, (200, "failed".to_owned()), "the NUL is refused");
    for answer in answers {
        assert_eq!(answer, (200, "created".to_owned()));
    }
    svix_ids.push(nul_svix_id);
    svix_ids.extend(deliveries.into_iter().map(|(id, _)| id));

    // The slow statement: another session holds the row for two seconds while its update,
    // with new values, waits.
    let mut holder = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(&users[0].id)
        .execute(&mut holder)
        .await
        .unwrap();
    private.rename(&mut users[0], 100);
    let update_svix_id = random_id("msg");
    let update_body = private.event("user.updated", &users[0]);
    let release = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    };
    let (answer, ()) = tokio::join!(served.deliver(&update_svix_id, &update_body), release);
    assert_eq!(answer, (200, "updated".to_owned()));
    svix_ids.push(update_svix_id);

    let log = served.log_after(&svix_ids).await;
    private.assert_none_in("clerk-sync's log", &log);

    let server_log = std::fs::read(&log_path).unwrap();
    let server_log = String::from_utf8_lossy(&server_log[log_start as usize..]);
    assert!(
        server_log.lines().any(|line| line.contains("ERROR:")),
        "the server logged no error while the NUL was refused: is {log_path} the cluster's log?\n\
         {server_log}"
    );
    assert!(
        server_log.contains("still waiting for"),
        "the server logged no lock wait while the update waited two seconds:\n{server_log}"
    );
    private.assert_none_in("PostgreSQL's server log", &server_log);

    drop(served);
    drop(holder);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin_conn)
        .await;
}
