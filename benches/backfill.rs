//! Backfills 100,000 users from the Clerk emulator into PostgreSQL and SQLite and prints users
//! per second. A benchmark, not a test: it prints figures and asserts only that every user
//! arrived.
//!
//! ```sh
//! cargo bench --bench backfill                       # both backends
//! CLERK_SYNC_BENCH_USERS=20000 cargo bench --bench backfill
//! ```
//! PostgreSQL: `CLERK_SYNC_TEST_DATABASE_URL` (an admin URL; a scratch database is created and
//! dropped), default `postgres://postgres@127.0.0.1:5432/postgres`.

#[path = "../tests/clerk_emulator/mod.rs"]
mod clerk_emulator;

use std::time::{Duration, Instant};

use clerk_emulator::ClerkEmulator;
use clerk_sync::clerk::api::{ClerkApi, RetryPolicy, SecretKey};
use clerk_sync::clerk::sample::SampleUser;
use clerk_sync::config::DatabaseTarget;
use clerk_sync::jobs::backfill::{self, BackfillOptions};
use clerk_sync::store::{PoolSettings, Store};
use sqlx::Connection;

const NAMES: [&str; 5] = ["Ada", "Zoë", "山田", "Łukasz", "Grace"];

fn main() {
    let users: usize = std::env::var("CLERK_SYNC_BENCH_USERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let clerk = ClerkEmulator::start().await;
        let now = chrono::Utc::now().timestamp_millis();
        clerk.insert_users((0..users).map(|n| {
            let mut user = SampleUser::new(format!("user_{n:07}"), now - users as i64 + n as i64);
            user.first_name = Some(NAMES[n % NAMES.len()].to_string());
            if n % 7 == 0 {
                user.email = None;
            }
            user.to_clerk_json()
        }));
        println!("backfill benchmark: {users} users from the Clerk emulator, 500 per page\n");
        println!("{:<10} {:>12} {:>12} {:>16}", "backend", "first run", "users/s", "second (no-op)");
        let sqlite_dir = tempfile::tempdir().expect("a temporary directory");
        let sqlite = DatabaseTarget::Sqlite {
            path: sqlite_dir.path().join("bench.db"),
        };
        run(&clerk, "sqlite", &sqlite, users).await;
        let admin = std::env::var("CLERK_SYNC_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match sqlx::PgConnection::connect(&admin).await {
            Ok(mut connection) => {
                let name = format!("clerk_sync_bench_{}", std::process::id());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut connection)
                    .await
                    .expect("create the scratch database");
                let mut url = url::Url::parse(&admin).expect("the admin URL parses");
                url.set_path(&format!("/{name}"));
                run(&clerk, "postgres", &DatabaseTarget::Postgres { url: url.into() }, users).await;
                let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .execute(&mut connection)
                    .await;
            }
            Err(e) => println!("postgres   skipped: cannot reach {admin}: {e}"),
        }
        println!(
            "\nWith Clerk's real limits the request budget decides: {} pages at 500 requests / 10 s \
             (the default for a production key) take {:.1} s, at 50 / 10 s (development) {:.1} s.",
            users.div_ceil(500),
            users.div_ceil(500) as f64 / 50.0,
            users.div_ceil(500) as f64 / 5.0
        );
    });
}

async fn run(clerk: &ClerkEmulator, label: &str, target: &DatabaseTarget, users: usize) {
    let store = Store::connect(target, &PoolSettings::default())
        .await
        .expect("the database opens");
    store.migrate().await.expect("migrations apply");
    let api = ClerkApi::new(
        &clerk.base_url(),
        SecretKey::parse(&clerk.secret_key()).expect("the emulator's key parses"),
        RetryPolicy {
            timeout: Duration::from_secs(60),
            ..RetryPolicy::default()
        },
    )
    .expect("a client");
    let options = BackfillOptions {
        page_size: 500,
        requests_per_10s: 1_000_000,
        restart: false,
        quiet: true,
    };
    let started = Instant::now();
    let report = backfill::run(&store, &api, &options)
        .await
        .expect("the backfill runs");
    let first = started.elapsed();
    assert_eq!(report.summary.created as usize, users, "{}", report.summary);
    let started = Instant::now();
    let again = backfill::run(&store, &api, &options)
        .await
        .expect("the backfill runs");
    let second = started.elapsed();
    assert_eq!(again.summary.unchanged as usize, users, "{}", again.summary);
    println!(
        "{label:<10} {:>10.2} s {:>12.0} {:>14.2} s",
        first.as_secs_f64(),
        users as f64 / first.as_secs_f64(),
        second.as_secs_f64()
    );
}
