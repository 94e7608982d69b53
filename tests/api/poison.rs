//! Rule 7 against hostile data: an event whose values the database refuses (too long for an
//! index, a NUL character PostgreSQL text cannot hold, a clash with an app's own unique index)
//! is answered 200 and stored as failed exactly once, with a readable error; it never gets 503
//! for ever, and it holds back no other event. A property test drives hostile values through
//! every field we read, and the `svix-id`, on both backends.

use std::time::{Duration, Instant};

use clerk_sync::clerk::parse_event;
use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::sync::Outcome;
use clerk_sync::webhook::signed_headers;
use proptest::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::batches::{Delivery, record};
use crate::support::{Backend, TestApp, TestSql, on_both_backends};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Letters and digits in no pattern: PostgreSQL compresses a long index entry before it
/// measures it, so `"a".repeat(3000)` would fit where this does not.
fn incompressible(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

async fn execute(app: &TestApp, sql: &str) {
    match app.sql() {
        TestSql::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        TestSql::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Delivers `body` under `svix_id` twice: the first answer must be 200 with `outcome`, the
/// second 200 `duplicate`, and the inbox must hold exactly one row for it.
async fn delivered_once(app: &TestApp, svix_id: &str, body: &str, outcome: &str) {
    let started = Instant::now();
    let first = app.deliver_as(svix_id, body).await;
    assert_eq!((first.status, first.outcome()), (200, outcome), "{first:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered only after {:?}",
        started.elapsed()
    );
    let again = app.deliver_as(svix_id, body).await;
    assert_eq!(
        (again.status, again.outcome()),
        (200, "duplicate"),
        "{again:?}"
    );
    let rows: Vec<_> = app
        .inbox()
        .await
        .into_iter()
        .filter(|row| row.svix_id == svix_id)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, outcome);
    if outcome == "failed" {
        let error = rows[0].error.as_deref().unwrap_or("");
        assert!(
            error.contains("refused the event's data") || error.contains("malformed"),
            "the stored error says why: {error}"
        );
    }
}

/// A fresh, well-formed user goes in: the endpoint is not blocked.
async fn a_good_event_still_lands(app: &TestApp) {
    let user = SampleUser::new(random_id("user"), now_ms());
    let answer = app.deliver(&sample::user_created(&user)).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "created"),
        "{answer:?}"
    );
    assert!(app.user(&user.id).await.is_some());
}

/// An event of `event_type` whose `data` is `user`.
fn event(event_type: &str, user: &SampleUser) -> String {
    sample::envelope(event_type, user.to_clerk_json(), user.updated_at).to_string()
}

on_both_backends! {
    async fn rule_7_poison_events_are_answered_200_stored_as_failed_once_and_block_nothing(backend) {
        let app = TestApp::spawn(backend).await;
        let t = now_ms();
        let user = |edit: fn(&mut SampleUser)| {
            let mut u = SampleUser::new(random_id("user"), t);
            edit(&mut u);
            u
        };
        let long_username = user(|u| u.username = Some(incompressible(3000)));
        let long_email = user(|u| u.email = Some(format!("{}@example.com", incompressible(3000))));
        let long_id = user(|u| u.id = format!("user_{}", incompressible(3000)));
        let nul_id = user(|u| u.id = format!("{}\0x", u.id));
        let lone_surrogate = user(|u| u.first_name = Some("LONE".into()));
        // (what, body, outcome on PostgreSQL, outcome on SQLite, which stores all of it)
        let cases = [
            ("a 3,000-character username", sample::user_created(&long_username), "failed", "created"),
            ("a 3,000-character email", sample::user_created(&long_email), "failed", "created"),
            ("a 3,000-character user id", sample::user_created(&long_id), "failed", "created"),
            (
                "user.deleted with a 3,000-character user id",
                sample::user_deleted(&long_id.id, t),
                "failed",
                "deleted",
            ),
            ("a NUL in data.id", sample::user_created(&nul_id), "failed", "created"),
            (
                "user.deleted with a NUL in data.id",
                sample::user_deleted(&nul_id.id, t),
                "failed",
                "deleted",
            ),
            (
                "a NUL in type",
                event("user.created\0", &user(|_| {})),
                "failed",
                "ignored",
            ),
            (
                "a lone surrogate in first_name",
                sample::user_created(&lone_surrogate).replace("\"LONE\"", r#""\ud800""#),
                "failed",
                "failed",
            ),
        ];
        for (what, body, on_postgres, on_sqlite) in cases {
            let outcome = match backend {
                Backend::Postgres => on_postgres,
                Backend::Sqlite => on_sqlite,
            };
            println!("{what}");
            delivered_once(&app, &random_id("msg"), &body, outcome).await;
        }
        if backend == Backend::Postgres {
            // The inbox holds what it can of the NUL: the type, with U+FFFD, says so.
            let stored = app.inbox().await;
            let nul_type = stored
                .iter()
                .find(|row| row.event_type == "user.created\u{FFFD}")
                .expect("the event with a NUL in its type is stored");
            let error = nul_type.error.as_deref().unwrap_or("");
            assert!(error.contains("NUL replaced by U+FFFD in type"), "{error}");
            // (PostgreSQL cannot even look up an id with a NUL.)
            for id in [&long_username.id, &long_email.id, &long_id.id] {
                assert!(app.user(id).await.is_none(), "{id} was not written");
            }
        }
        a_good_event_still_lands(&app).await;
    }

    async fn rule_7_a_unique_violation_that_recurs_is_stored_as_failed_not_retried_for_ever(backend) {
        let app = TestApp::spawn(backend).await;
        // The app's own rule, which clerk-sync does not manage (it moves emails and usernames
        // between users, nothing else).
        execute(&app, r#"CREATE UNIQUE INDEX "users_firstName_key" ON users ("firstName")"#).await;
        let t = now_ms();
        let mut grace = SampleUser::new(random_id("user"), t);
        grace.first_name = Some("Grace".into());
        let mut other_grace = SampleUser::new(random_id("user"), t);
        other_grace.first_name = Some("Grace".into());
        assert_eq!(app.deliver(&sample::user_created(&grace)).await.outcome(), "created");

        let svix_id = random_id("msg");
        delivered_once(&app, &svix_id, &sample::user_created(&other_grace), "failed").await;
        let stored = app.inbox_entry(&svix_id).await.expect("stored");
        let error = stored.error.unwrap_or_default();
        assert!(
            error.contains("users_firstName_key") || error.contains("users.firstName"),
            "the error names the constraint: {error}"
        );
        assert_eq!(stored.user_id.as_deref(), Some(other_grace.id.as_str()));
        assert!(app.user(&other_grace.id).await.is_none());
        a_good_event_still_lands(&app).await;
    }

    async fn rule_7_the_error_of_a_refused_event_is_readable_in_events_show_and_on_status(backend) {
        let app = TestApp::spawn_with(backend, |c| c.admin_token = Some("poison-admin".into())).await;
        execute(&app, r#"CREATE UNIQUE INDEX "users_lastName_key" ON users ("lastName")"#).await;
        let t = now_ms();
        let first = SampleUser::new(random_id("user"), t);
        let second = SampleUser::new(random_id("user"), t);
        app.deliver(&sample::user_created(&first)).await;
        let svix_id = random_id("msg");
        let answer = app.deliver_as(&svix_id, &sample::user_created(&second)).await;
        assert_eq!((answer.status, answer.outcome()), (200, "failed"), "{answer:?}");

        let page = app
            .client
            .get(format!("{}/status", app.address))
            .bearer_auth("poison-admin")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status().as_u16(), 200);
        let page = page.text().await.unwrap();
        let row = &page[page.find(&svix_id).expect("the failed event is listed")..];
        let row = &row[..row.find("</tr>").unwrap_or(row.len())];
        assert!(row.contains("the database refused the event&#39;s data")
            || row.contains("the database refused the event's data"), "{row}");

        let url = match app.db.target() {
            DatabaseTarget::Postgres { url } => url,
            target => target.to_string(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut show = crate::cli::clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        show.args(["events", "show", &svix_id]);
        let shown = crate::cli::run(show);
        let stdout = crate::cli::text(&shown.stdout);
        assert!(shown.status.success(), "{}", crate::cli::text(&shown.stderr));
        assert!(stdout.contains("outcome:     failed"), "{stdout}");
        assert!(stdout.contains("the database refused the event's data"), "{stdout}");
    }

    async fn rule_7_an_event_the_database_refuses_fails_alone_in_its_batch(backend) {
        for app in apps(backend).await {
            let t = now_ms();
            let mut good = SampleUser::new(random_id("user"), t);
            let mut long_username = SampleUser::new(random_id("user"), t);
            long_username.username = Some(incompressible(3000));
            let mut long_email = SampleUser::new(random_id("user"), t);
            long_email.email = Some(format!("{}@example.com", incompressible(3000)));
            let nul_type = event("user.updated\0", &SampleUser::new(random_id("user"), t));
            let created = sample::user_created(&good);
            good.first_name = Some("Émilie".into());
            good.updated_at = t + 1;
            let batch = [
                delivery(&created),
                delivery(&sample::user_created(&long_username)),
                delivery(&sample::user_created(&long_email)),
                delivery(&nul_type),
                delivery(&sample::user_updated(&good)),
            ];
            let outcomes = record(&app, &batch).await;
            use Outcome::*;
            match backend {
                Backend::Postgres => assert_eq!(outcomes, [Created, Failed, Failed, Failed, Updated]),
                Backend::Sqlite => assert_eq!(outcomes, [Created, Created, Created, Ignored, Updated]),
            }
            let row = app.user(&good.id).await.expect("the good user is there");
            assert_eq!(row.first_name.as_deref(), Some("Émilie"));
            let again = record(&app, &batch).await;
            assert!(again.iter().all(|o| *o == Duplicate), "{again:?}");
            assert_eq!(app.inbox().await.len(), batch.len());
        }
    }

    async fn a_svix_id_the_inbox_cannot_hold_is_stored_changed_and_a_redelivery_is_a_duplicate(backend) {
        // The webhook never lets such ids in (see the next test); a library caller can.
        let app = TestApp::spawn(backend).await;
        let long_id = format!("msg_{}", incompressible(3000));
        let nul_id = format!("msg_{}\0", incompressible(10));
        let t = now_ms();
        for svix_id in [&long_id, &nul_id] {
            let body = sample::user_created(&SampleUser::new(random_id("user"), t));
            let batch = [Delivery {
                event: parse_event(body.as_bytes()).unwrap(),
                svix_id: svix_id.clone(),
                payload: body,
            }];
            let expected = match backend {
                Backend::Postgres => Outcome::Failed,
                Backend::Sqlite => Outcome::Created,
            };
            assert_eq!(record(&app, &batch).await, [expected]);
            assert_eq!(record(&app, &batch).await, [Outcome::Duplicate]);
        }
        let rows = app.inbox().await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        if backend == Backend::Postgres {
            let long = rows.iter().find(|r| r.svix_id.starts_with(&long_id[..500])).unwrap();
            assert!(long.svix_id.len() <= 1024, "{}", long.svix_id.len());
            let error = long.error.as_deref().unwrap_or("");
            assert!(error.contains("svix-id shortened from 3004 bytes"), "{error}");
            let nul = rows.iter().find(|r| r.svix_id == nul_id.replace('\0', "\u{FFFD}"));
            assert!(nul.is_some(), "{rows:?}");
        }
    }

    async fn a_svix_id_with_nul_control_characters_or_over_255_bytes_is_refused_with_400(backend) {
        let app = TestApp::spawn(backend).await;
        let body = sample::user_created(&SampleUser::new(random_id("user"), now_ms()));
        for svix_id in [
            b"msg_\0".to_vec(),
            b"msg_\x01\x7f".to_vec(),
            "msg_é".as_bytes().to_vec(),
            b"msg_\xed\xa0\x80".to_vec(), // a lone surrogate, as WTF-8
            format!("msg_{}", incompressible(3000)).into_bytes(),
        ] {
            let status = post_raw(&app, &svix_id, body.as_bytes()).await;
            assert_eq!(status, 400, "svix-id {:?}", String::from_utf8_lossy(&svix_id));
        }
        assert!(app.inbox().await.is_empty());
        a_good_event_still_lands(&app).await;
    }
}

/// Posts a signed delivery over a plain TCP connection, so the `svix-id` header can hold bytes
/// an HTTP client refuses to send; returns the status code.
async fn post_raw(app: &TestApp, svix_id: &[u8], body: &[u8]) -> u16 {
    let timestamp = chrono::Utc::now().timestamp();
    let id = String::from_utf8_lossy(svix_id);
    let signature = signed_headers(&app.secret, &id, timestamp, body)
        .unwrap()
        .into_iter()
        .find(|(name, _)| *name == "svix-signature")
        .map(|(_, value)| value)
        .unwrap();
    let address = app.address.trim_start_matches("http://");
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nsvix-timestamp: {timestamp}\r\n\
         svix-signature: {signature}\r\nsvix-id: ",
        clerk_sync::http::WEBHOOK_PATH,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(svix_id);
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body);
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    // The server may close as soon as it has answered a request it cannot parse.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn delivery(body: &str) -> Delivery {
    crate::batches::delivery(&random_id("msg"), body)
}

/// The apps a poison test runs on (one: every statement goes out the same way, directly or
/// through a pooler).
async fn apps(backend: Backend) -> Vec<TestApp> {
    vec![TestApp::spawn(backend).await]
}

/// A value a hostile (or buggy) sender could put in a field.
#[derive(Debug, Clone)]
enum Hostile {
    /// Thousands of characters, too many for an index entry.
    Huge(String),
    /// Text with a NUL character.
    Nul(String, usize),
    /// Text with a lone UTF-16 surrogate, which JSON can write (`\ud800`) and Unicode cannot hold.
    LoneSurrogate(String, bool),
    /// Control characters (escaped in the JSON, as JSON requires).
    Control(String),
    /// Any text at all.
    Text(String),
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        "[a-zA-Z0-9]{2800,3200}".prop_map(Hostile::Huge),
        (".{0,12}", any::<usize>()).prop_map(|(s, at)| Hostile::Nul(s, at)),
        (".{0,12}", any::<bool>()).prop_map(|(s, high)| Hostile::LoneSurrogate(s, high)),
        "[\\x00-\\x1f\\x7f a-z]{1,16}".prop_map(Hostile::Control),
        "\\PC{0,40}".prop_map(Hostile::Text),
    ]
}

impl Hostile {
    /// The value as a JSON string literal.
    fn json(&self) -> String {
        match self {
            Hostile::Huge(s) | Hostile::Control(s) | Hostile::Text(s) => json!(s).to_string(),
            Hostile::Nul(s, at) => {
                let mut s = s.clone();
                let mut at = at % (s.len() + 1);
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                s.insert(at, '\0');
                json!(s).to_string()
            }
            Hostile::LoneSurrogate(s, high) => {
                let quoted = json!(s).to_string();
                let surrogate = if *high { r"\ud800" } else { r"\udfff" };
                format!("\"{surrogate}{}", &quoted[1..])
            }
        }
    }

    /// The value as the bytes of an HTTP header.
    fn header_bytes(&self) -> Vec<u8> {
        match self {
            Hostile::LoneSurrogate(s, _) => [b"\xed\xa0\x80".as_slice(), s.as_bytes()].concat(),
            Hostile::Nul(s, _) => [s.as_bytes(), b"\0"].concat(),
            Hostile::Huge(s) | Hostile::Control(s) | Hostile::Text(s) => s.as_bytes().to_vec(),
        }
    }
}

/// A timestamp a hostile sender could put where Clerk puts Unix milliseconds.
fn hostile_time() -> impl Strategy<Value = String> {
    prop_oneof![
        hostile().prop_map(|h| h.json()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("1e308".to_owned()),
        Just(i64::MAX.to_string()),
        Just(i64::MIN.to_string()),
        Just("99999999999999999999999".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("{}".to_owned()),
    ]
}

/// The fields of a user event we read, by their JSON paths.
#[derive(Debug, Clone, Copy)]
enum Field {
    Id,
    Type,
    Email,
    FirstName,
    LastName,
    Username,
    ImageUrl,
    CreatedAt,
    UpdatedAt,
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Id),
        Just(Field::Type),
        Just(Field::Email),
        Just(Field::FirstName),
        Just(Field::LastName),
        Just(Field::Username),
        Just(Field::ImageUrl),
        Just(Field::CreatedAt),
        Just(Field::UpdatedAt),
    ]
}

/// A user event with hostile values in some fields, as JSON text (lone surrogates cannot be
/// built as a `serde_json::Value`, so each value goes in as a placeholder and is replaced).
fn hostile_event(event_type: &str, poisoned: &[(Field, String)]) -> String {
    let user = SampleUser::new(random_id("user"), now_ms());
    let mut data = user.to_clerk_json();
    let mut type_value = json!(event_type);
    for (i, (field, _)) in poisoned.iter().enumerate() {
        let placeholder = json!(format!("@@hostile{i}@@"));
        match field {
            Field::Id => data["id"] = placeholder,
            Field::Type => type_value = placeholder,
            Field::Email => data["email_addresses"][0]["email_address"] = placeholder,
            Field::FirstName => data["first_name"] = placeholder,
            Field::LastName => data["last_name"] = placeholder,
            Field::Username => data["username"] = placeholder,
            Field::ImageUrl => data["image_url"] = placeholder,
            Field::CreatedAt => data["created_at"] = placeholder,
            Field::UpdatedAt => data["updated_at"] = placeholder,
        }
    }
    let mut envelope = sample::envelope(event_type, data, user.updated_at);
    envelope["type"] = type_value;
    let mut body = envelope.to_string();
    for (i, (_, value)) in poisoned.iter().enumerate() {
        body = body.replace(&format!("\"@@hostile{i}@@\""), value);
    }
    body
}

/// What one delivery of hostile values may be answered: 200 (the event applied, ignored or
/// stored as failed), or 400 when the body is not a Clerk event at all (a lone surrogate in
/// `type`, say). Never 5xx: no retry could change the answer.
fn check_answer(answer: &crate::support::Answer, body: &str) -> Result<(), TestCaseError> {
    let refused_as_not_an_event = answer.status == 400
        && answer.body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not a Clerk event"));
    prop_assert!(
        answer.status == 200 || refused_as_not_an_event,
        "answered {answer:?} for {}",
        &body[..body.len().min(600)]
    );
    Ok(())
}

fn hostile_values_never_get_a_5xx(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(TestApp::spawn_with(backend, |c| {
        // Every malformed svix-id counts against the address; none should be limited here.
        c.limits.unverified_per_minute = 100_000;
    }));
    let config = ProptestConfig {
        cases: 40,
        max_shrink_iters: 50,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let event_type = prop_oneof![
        Just("user.created"),
        Just("user.updated"),
        Just("user.deleted")
    ];
    let poisoned = proptest::collection::vec(
        field().prop_flat_map(|f| {
            let value = match f {
                Field::CreatedAt | Field::UpdatedAt => hostile_time().boxed(),
                _ => hostile().prop_map(|h| h.json()).boxed(),
            };
            (Just(f), value)
        }),
        1..4,
    );
    proptest!(config, |(event_type in event_type, poisoned in poisoned, svix_id in proptest::option::of(hostile()))| {
        runtime.block_on(async {
            let body = hostile_event(event_type, &poisoned);
            let svix = random_id("msg");
            let first = app.deliver_as(&svix, &body).await;
            check_answer(&first, &body)?;
            if first.status == 200 {
                // Stored once, whatever it held: a redelivery is a duplicate.
                let again = app.deliver_as(&svix, &body).await;
                prop_assert_eq!((again.status, again.outcome()), (200, "duplicate"), "{:?}", again);
            }
            if let Some(svix_id) = svix_id {
                let status = post_raw(&app, &svix_id.header_bytes(), body.as_bytes()).await;
                // 401: a CR or LF ends the header early, so the signature is over another id.
                prop_assert!(matches!(status, 200 | 400 | 401), "svix-id {:?} answered {}", svix_id, status);
            }
            let user = SampleUser::new(random_id("user"), now_ms());
            let good = app.deliver(&sample::user_created(&user)).await;
            prop_assert_eq!((good.status, good.outcome()), (200, "created"), "{:?}", good);
            Ok(())
        })?;
    });
}

#[test]
fn rule_7_hostile_values_in_every_field_never_get_a_5xx_on_postgres() {
    hostile_values_never_get_a_5xx(Backend::Postgres);
}

#[test]
fn rule_7_hostile_values_in_every_field_never_get_a_5xx_on_sqlite() {
    hostile_values_never_get_a_5xx(Backend::Sqlite);
}
