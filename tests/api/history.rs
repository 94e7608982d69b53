//! Property: random histories of Clerk users (creates, profile edits, emails and usernames moving
//! between users, deletes), turned into events and delivered with duplicates, shuffled and
//! concurrently, always leave the table equal to the history's final state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::webhook::signed_headers;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::support::{Backend, TestApp, at};

const USERS: usize = 4;
const VALUES: usize = 3;
const FIRST_NAMES: [&str; 6] = ["Ada", "Zoë", "Łukasz", "山田", "Ωμέγα", "O'Brien"];
const T0: i64 = 1_750_000_000_000;

#[derive(Debug, Clone)]
enum Step {
    /// The user signs up or edits the profile: email and username are picked from a small
    /// shared pool so that they move between users.
    Change {
        user: usize,
        email: Option<usize>,
        username: Option<usize>,
        first_name: usize,
    },
    Delete {
        user: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..USERS, proptest::option::of(0..VALUES), proptest::option::of(0..VALUES), 0..FIRST_NAMES.len())
            .prop_map(|(user, email, username, first_name)| Step::Change { user, email, username, first_name }),
        1 => (0..USERS).prop_map(|user| Step::Delete { user }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    email: Option<String>,
    username: Option<String>,
    first_name: Option<String>,
    updated_at: i64,
}

/// Clerk's side: plays the steps, keeping emails and usernames unique at every instant (a user
/// taking a value first makes its holder give it up, which is itself an event), and returns the
/// events in the order Clerk emitted them plus the final state of every live user.
fn play(case: usize, steps: &[Step]) -> (Vec<String>, BTreeMap<String, Expected>) {
    let id = |u: usize| format!("user_c{case}u{u}");
    let email = |v: usize| format!("e{v}-c{case}@example.com");
    let username = |v: usize| format!("n{v}c{case}");
    let mut live: BTreeMap<usize, SampleUser> = BTreeMap::new();
    let mut deleted = [false; USERS];
    let mut events = Vec::new();
    let mut clock = T0;
    for step in steps {
        match step {
            Step::Change {
                user,
                email: e,
                username: n,
                first_name,
            } => {
                if deleted[*user] {
                    continue;
                }
                let wanted_email = e.map(email);
                let wanted_username = n.map(username);
                let holders: Vec<usize> = live
                    .iter()
                    .filter(|(other, u)| {
                        **other != *user
                            && ((wanted_email.is_some() && u.email == wanted_email)
                                || (wanted_username.is_some() && u.username == wanted_username))
                    })
                    .map(|(other, _)| *other)
                    .collect();
                for other in holders {
                    let holder = live.get_mut(&other).unwrap();
                    if holder.email == wanted_email {
                        holder.email = None;
                    }
                    if holder.username == wanted_username {
                        holder.username = None;
                    }
                    clock += 1;
                    holder.updated_at = clock;
                    events.push(sample::user_updated(holder));
                }
                clock += 1;
                let created = !live.contains_key(user);
                let entry = live
                    .entry(*user)
                    .or_insert_with(|| SampleUser::new(id(*user), clock));
                entry.email = wanted_email;
                entry.username = wanted_username;
                entry.first_name = Some(FIRST_NAMES[*first_name].to_string());
                entry.updated_at = clock;
                events.push(if created {
                    sample::user_created(entry)
                } else {
                    sample::user_updated(entry)
                });
            }
            Step::Delete { user } => {
                if live.remove(user).is_some() {
                    deleted[*user] = true;
                    clock += 1;
                    events.push(sample::user_deleted(&id(*user), clock));
                }
            }
        }
    }
    let expected = live
        .values()
        .map(|u| {
            (
                u.id.clone(),
                Expected {
                    email: u.email.clone(),
                    username: u.username.clone(),
                    first_name: u.first_name.clone(),
                    updated_at: u.updated_at,
                },
            )
        })
        .collect();
    (events, expected)
}

/// Svix's side: every event gets an id, some are delivered twice, the order is shuffled, and
/// several deliveries are in flight at once.
async fn deliver_all(app: &TestApp, events: Vec<String>, duplicate_every: usize, seed: u64) {
    let mut deliveries: Vec<(String, String)> = Vec::new();
    for (i, body) in events.into_iter().enumerate() {
        let svix_id = random_id("msg");
        if duplicate_every > 0 && i % duplicate_every == 0 {
            deliveries.push((svix_id.clone(), body.clone()));
        }
        deliveries.push((svix_id, body));
    }
    deliveries.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for (svix_id, body) in deliveries {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (client, url, secret) = (app.client.clone(), app.webhook_url(), app.secret.clone());
        tasks.spawn(async move {
            let now = chrono::Utc::now().timestamp();
            let mut request = client.post(url).body(body.clone());
            for (name, value) in signed_headers(&secret, &svix_id, now, body.as_bytes()).unwrap() {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            drop(permit);
            (status, text)
        });
    }
    while let Some(answer) = tasks.join_next().await {
        let (status, text) = answer.unwrap();
        assert_eq!(status, 200, "every delivery is accepted: {text}");
    }
}

fn converges_on(backend: Backend) {
    converges_with(backend, |_| {});
}

fn converges_with(backend: Backend, configure: impl FnOnce(&mut clerk_sync::config::ServeConfig)) {
    random_histories_converge(64, || TestApp::spawn_with(backend, configure));
}

/// The property, `cases` random histories long, against the service `spawn` starts (in the
/// property's own runtime). Every delivery must be answered 200 at once: nothing retries here.
pub(crate) fn random_histories_converge<F: Future<Output = TestApp>>(
    cases: u32,
    spawn: impl FnOnce() -> F,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn());
    let case_numbers = AtomicUsize::new(0);
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..32), duplicate_every in 0usize..4, seed: u64)| {
        let case = case_numbers.fetch_add(1, Ordering::SeqCst);
        let (events, expected) = play(case, &steps);
        runtime.block_on(async {
            deliver_all(&app, events, duplicate_every, seed).await;
            let prefix = format!("user_c{case}u");
            let actual: BTreeMap<String, Expected> = app
                .users()
                .await
                .into_iter()
                .filter(|row| row.id.starts_with(&prefix))
                .map(|row| {
                    let updated_at = row.clerk_updated_at.expect("synced rows have clerkUpdatedAt");
                    (row.id, Expected {
                        email: row.email,
                        username: row.username,
                        first_name: row.first_name,
                        updated_at: updated_at.and_utc().timestamp_millis(),
                    })
                })
                .collect();
            assert_eq!(actual, expected, "table differs from Clerk's final state for steps {steps:?}");
            for row in app.users().await.iter().filter(|r| r.id.starts_with(&prefix)) {
                assert_eq!(row.clerk_updated_at, Some(at(expected[&row.id].updated_at)));
            }
        });
    });
}

#[test]
fn random_histories_delivered_shuffled_duplicated_and_concurrently_converge_on_postgres() {
    converges_on(Backend::Postgres);
}

/// One writer: concurrent deliveries queue up and are committed in batches (several events of
/// one user in one transaction, deletions among them).
#[test]
fn random_histories_converge_when_written_in_batches_by_one_writer() {
    converges_with(Backend::Postgres, |config| {
        config.writers = Some(1);
    });
}

#[test]
fn random_histories_delivered_shuffled_duplicated_and_concurrently_converge_on_sqlite() {
    converges_on(Backend::Sqlite);
}
