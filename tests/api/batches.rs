//! Deliveries that arrive together share one transaction (group commit). Driven through
//! `Store::record_deliveries`, the call the webhook writers make, so every batch here is
//! exactly the batch named: each delivery gets the outcome it would have had alone, and one
//! the database refuses does not fail the others.

use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::clerk::{ClerkEvent, parse_event};
use clerk_sync::ingest::DeliveryRecord;
use clerk_sync::sync::{DeleteMode, Outcome};
use serde_json::json;

use crate::support::{Backend, TestApp, on_both_backends};

pub(crate) struct Delivery {
    pub(crate) event: ClerkEvent,
    pub(crate) svix_id: String,
    pub(crate) payload: String,
}

pub(crate) fn delivery(svix_id: &str, body: &str) -> Delivery {
    Delivery {
        event: parse_event(body.as_bytes()).expect("a Clerk event"),
        svix_id: svix_id.to_owned(),
        payload: body.to_owned(),
    }
}

/// Through `Store::record_deliveries`, the call the webhook writers make, as one batch.
pub(crate) async fn record(app: &TestApp, batch: &[Delivery]) -> Vec<Outcome> {
    let records: Vec<(&ClerkEvent, DeliveryRecord<'_>)> = batch
        .iter()
        .map(|d| {
            (
                &d.event,
                DeliveryRecord {
                    svix_id: &d.svix_id,
                    svix_timestamp: chrono::Utc::now().timestamp(),
                    payload: &d.payload,
                },
            )
        })
        .collect();
    app.store
        .record_deliveries(&records, DeleteMode::Hard)
        .await
        .into_iter()
        .map(|result| result.expect("the batch is stored"))
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The apps a batch test runs on (one: every statement goes out the same way, directly or
/// through a pooler).
async fn apps(backend: Backend) -> Vec<TestApp> {
    vec![TestApp::spawn(backend).await]
}

on_both_backends! {
    async fn one_batch_gives_each_delivery_the_outcome_it_would_have_had_alone(backend) {
        for app in apps(backend).await {
            let t = now_ms();
            // h holds an email that a newer snapshot of a takes in the batch.
            let mut h = SampleUser::new(random_id("user"), t - 10_000);
            let mut a = SampleUser::new(random_id("user"), t);
            a.email = h.email.clone();
            assert_eq!(app.deliver(&sample::user_created(&h)).await.outcome(), "created");
            let b = SampleUser::new(random_id("user"), t);
            let unknown = random_id("user");
            let a_id = random_id("msg");
            let batch = [
                delivery(&a_id, &sample::user_created(&a)),
                delivery(&a_id, &sample::user_created(&a)),
                delivery(&random_id("msg"), &sample::user_created(&b)),
                delivery(&random_id("msg"), &sample::user_deleted(&b.id, t + 1)),
                delivery(&random_id("msg"), &sample::user_deleted(&unknown, t)),
                delivery(
                    &random_id("msg"),
                    &sample::envelope("session.created", json!({"object": "session", "id": random_id("sess")}), t)
                        .to_string(),
                ),
                delivery(
                    &random_id("msg"),
                    &sample::envelope("user.deleted", json!({"object": "user", "deleted": true}), t)
                        .to_string(),
                ),
            ];
            assert_eq!(
                record(&app, &batch).await,
                [
                    Outcome::Created,
                    Outcome::Duplicate,
                    Outcome::Created,
                    Outcome::Deleted,
                    Outcome::NotFound,
                    Outcome::Ignored,
                    Outcome::Failed,
                ]
            );
            h.email = None;
            let h_row = app.user(&h.id).await.expect("h is kept");
            assert_eq!(h_row.email, None, "the newer snapshot took h's email");
            assert_eq!(app.user(&a.id).await.expect("a is there").email, a.email);
            assert!(app.user(&b.id).await.is_none(), "b was created and deleted");
            assert!(app.tombstoned(&b.id).await && app.tombstoned(&unknown).await);
            // One inbox row per delivery, the repeated one once, each with its outcome.
            let inbox = app.inbox().await;
            let outcome_of = |svix_id: &str| {
                inbox.iter().filter(|r| r.svix_id == svix_id).map(|r| r.outcome.clone()).collect::<Vec<_>>()
            };
            assert_eq!(outcome_of(&a_id), ["created"]);
            assert_eq!(inbox.len(), 1 + 6, "h's delivery and the batch's six");
            // The same batch again is all duplicates and changes nothing.
            let again = record(&app, &batch).await;
            assert!(again.iter().all(|o| *o == Outcome::Duplicate), "{again:?}");
            assert_eq!(app.inbox().await.len(), 7);
        }
    }

    async fn an_event_the_database_refuses_fails_alone_and_the_rest_of_its_batch_lands(backend) {
        for app in apps(backend).await {
            let t = now_ms();
            let mut e = SampleUser::new(random_id("user"), t);
            let mut nul = SampleUser::new(random_id("user"), t);
            nul.first_name = Some("Zo\u{0}ë".into());
            let created = sample::user_created(&e);
            e.first_name = Some("Émilie".into());
            e.updated_at = t + 1;
            let batch = [
                delivery(&random_id("msg"), &created),
                delivery(&random_id("msg"), &sample::user_created(&nul)),
                delivery(&random_id("msg"), &sample::user_updated(&e)),
            ];
            let outcomes = record(&app, &batch).await;
            match backend {
                // PostgreSQL text cannot hold NUL: that event is stored as failed.
                Backend::Postgres => {
                    assert_eq!(outcomes, [Outcome::Created, Outcome::Failed, Outcome::Updated]);
                    let failed = app.inbox_entry(&batch[1].svix_id).await.expect("stored");
                    assert_eq!(failed.outcome, "failed");
                    assert!(
                        failed.error.as_deref().is_some_and(|e| e.contains("refused")),
                        "{failed:?}"
                    );
                    assert!(app.user(&nul.id).await.is_none());
                }
                // SQLite can.
                Backend::Sqlite => {
                    assert_eq!(outcomes, [Outcome::Created, Outcome::Created, Outcome::Updated]);
                }
            }
            let row = app.user(&e.id).await.expect("e is there");
            assert_eq!(row.first_name.as_deref(), Some("Émilie"));
        }
    }
}

/// A batch stuck in the database (here: waiting for a lock someone else holds) is abandoned
/// after `CLERK_SYNC_DB_TIMEOUT`: its delivery gets 503, the writer carries on with a fresh
/// connection, nothing of the abandoned transaction lands, and the retry applies the event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stuck_in_the_database_is_abandoned_and_the_retry_applies_it_once() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.limits.db_timeout = std::time::Duration::from_secs(1);
        c.writers = Some(1);
    })
    .await;
    let clerk_sync::config::DatabaseTarget::Postgres { url } = app.db.target() else {
        unreachable!("a PostgreSQL test database")
    };
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let stuck = SampleUser::new(random_id("user"), now_ms());
    let lock = format!("user:{}", stuck.id);
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&lock)
        .execute(&mut other)
        .await
        .unwrap();

    let svix_id = random_id("msg");
    let body = sample::user_created(&stuck);
    let started = std::time::Instant::now();
    let answer = app.deliver_as(&svix_id, &body).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The one writer is free again: another user's event goes through.
    let free = SampleUser::new(random_id("user"), now_ms());
    assert_eq!(
        app.deliver(&sample::user_created(&free)).await.outcome(),
        "created"
    );

    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&lock)
        .execute(&mut other)
        .await
        .unwrap();
    assert_eq!(app.deliver_as(&svix_id, &body).await.outcome(), "created");
    assert_eq!(app.deliver_as(&svix_id, &body).await.outcome(), "duplicate");
    let rows = app.inbox().await;
    assert_eq!(rows.iter().filter(|r| r.svix_id == svix_id).count(), 1);
    assert!(app.user(&stuck.id).await.is_some());
}
