//! Job leases of processes that are gone: a `backfill` killed with SIGKILL leaves its lease
//! behind, and the next run on the same host takes it over at once; a live holder's lease, or
//! another host's, is refused with who holds it and when it expires.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clerk_sync::clerk::sample::SampleUser;
use clerk_sync::config::DatabaseTarget;
use clerk_sync::jobs::{JobError, Lease};
use clerk_sync::store::Store;

use crate::clerk_emulator::ClerkEmulator;
use crate::cli::{clerk_sync, text};
use crate::support::{Backend, TestApp, on_both_backends};

const T: i64 = 1_716_883_200_000;

fn seeded_clerk(clerk: &ClerkEmulator, count: usize) {
    clerk.insert_users(
        (0..count).map(|n| SampleUser::new(format!("user_{n:06}"), T + n as i64).to_clerk_json()),
    );
}

fn database_url(app: &TestApp) -> String {
    match app.db.target() {
        DatabaseTarget::Postgres { url } => url,
        DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
    }
}

/// `clerk-sync backfill` against the test's database and Clerk emulator, run from a directory
/// of its own.
struct BackfillJob {
    dir: tempfile::TempDir,
    env: [(&'static str, String); 3],
}

impl BackfillJob {
    fn new(app: &TestApp, clerk: &ClerkEmulator) -> BackfillJob {
        BackfillJob {
            dir: tempfile::tempdir().unwrap(),
            env: [
                ("DATABASE_URL", database_url(app)),
                ("CLERK_SECRET_KEY", clerk.secret_key()),
                ("CLERK_API_URL", clerk.base_url()),
            ],
        }
    }

    fn command(&self) -> Command {
        let env = self
            .env
            .each_ref()
            .map(|(name, value)| (*name, value.as_str()));
        let mut command = clerk_sync(self.dir.path(), &env);
        command.args(["backfill", "--page-size", "100", "--quiet"]);
        command
    }
}

/// Runs the binary off the runtime's threads: the in-process service keeps working meanwhile
/// (a stalled task could sit on SQLite's write lock).
async fn run(command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || crate::cli::run(command))
        .await
        .unwrap()
}

/// A pid that belonged to a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A holder exactly as clerk-sync writes it (this process's), with another pid.
async fn real_holder_with_pid(store: &Store, pid: u32) -> String {
    let lease = Lease::acquire(store, "backfill").await.unwrap();
    let ours = lease.holder().to_owned();
    lease.release().await.unwrap();
    let own_pid = format!("/pid {}/", std::process::id());
    assert!(ours.contains(&own_pid), "{ours}");
    ours.replace(&own_pid, &format!("/pid {pid}/"))
}

on_both_backends! {
    async fn a_killed_backfills_lease_is_taken_over_at_once(backend) {
        let clerk = ClerkEmulator::start().await;
        seeded_clerk(&clerk, 600);
        clerk.set_latency(Duration::from_millis(150));
        let app = TestApp::spawn(backend).await;
        let job = BackfillJob::new(&app, &clerk);
        let mut first = job.command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.users().await.len() < 100 {
            assert!(Instant::now() < deadline, "the backfill made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.kill().unwrap(); // SIGKILL: the lease is not released
        first.wait().unwrap();
        let (holder, _) = app.store.lease("backfill").await.unwrap().expect("the lease is left");
        assert!(holder.contains(&format!("/pid {}/", first.id())), "{holder}");
        assert!(app.users().await.len() < 600, "killed before the end");

        clerk.set_latency(Duration::ZERO);
        let started = Instant::now();
        let output = run(job.command()).await;
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(text(&output.stderr).contains("took over"), "{}", text(&output.stderr));
        assert!(started.elapsed() < Duration::from_secs(30), "not waited out");
        assert_eq!(app.users().await.len(), 600, "the second run completed");
        assert_eq!(app.store.lease("backfill").await.unwrap(), None, "and released the lease");
    }

    async fn a_live_processes_lease_is_refused_saying_who_holds_it_and_until_when(backend) {
        let clerk = ClerkEmulator::start().await;
        seeded_clerk(&clerk, 10);
        let app = TestApp::spawn(backend).await;
        let job = BackfillJob::new(&app, &clerk);
        // This test process holds it, and is alive.
        let lease = Lease::acquire(&app.store, "backfill").await.unwrap();
        let output = run(job.command()).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        let host = lease.holder().split('/').next().unwrap().to_owned();
        assert!(
            stderr.contains(&format!("pid {} on host {host}", std::process::id())),
            "{stderr}"
        );
        assert!(stderr.contains(" UTC, in 1") && stderr.contains(" s unless renewed"), "{stderr}");
        assert!(app.users().await.is_empty(), "the refused run did nothing");
        lease.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_pid_now_belongs_to_another_process_is_taken_over() {
    let clerk = ClerkEmulator::start().await;
    seeded_clerk(&clerk, 10);
    let app = TestApp::spawn(Backend::Sqlite).await;
    // A live process that is not the holder: the holder's pid went to it after the holder died.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let holder = real_holder_with_pid(&app.store, other.id()).await;
    assert!(
        app.store
            .acquire_lease("backfill", &holder, Duration::from_secs(120))
            .await
            .unwrap()
    );
    let job = BackfillJob::new(&app, &clerk);
    let output = run(job.command()).await;
    let _ = other.kill();
    let _ = other.wait();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(app.users().await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_another_host_is_waited_out_even_if_its_pid_is_free_here() {
    let clerk = ClerkEmulator::start().await;
    seeded_clerk(&clerk, 10);
    let app = TestApp::spawn(Backend::Sqlite).await;
    let holder = real_holder_with_pid(&app.store, dead_pid()).await;
    let (host, rest) = holder.split_once('/').unwrap();
    let elsewhere = format!("not-{host}/{rest}");
    assert!(
        app.store
            .acquire_lease("backfill", &elsewhere, Duration::from_secs(120))
            .await
            .unwrap()
    );
    let job = BackfillJob::new(&app, &clerk);
    let output = run(job.command()).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("on host not-{host}")), "{stderr}");
    assert!(stderr.contains("expires at "), "{stderr}");
    assert_eq!(
        app.store.lease_holder("backfill").await.unwrap().as_deref(),
        Some(elsewhere.as_str()),
        "left to its holder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_taking_over_the_same_dead_lease_cannot_both_win() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let other = Store::connect(&app.db.target(), &Default::default())
        .await
        .unwrap();
    for round in 0..5 {
        let dead = real_holder_with_pid(&app.store, dead_pid()).await;
        assert!(
            app.store
                .acquire_lease("backfill", &dead, Duration::from_secs(120))
                .await
                .unwrap()
        );
        let (a, b) = tokio::join!(
            Lease::acquire(&app.store, "backfill"),
            Lease::acquire(&other, "backfill"),
        );
        let held = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(JobError::LeaseHeld { .. })))
            .count();
        let won: Vec<&Lease<'_>> = [&a, &b].into_iter().flatten().collect();
        assert_eq!((won.len(), held), (1, 1), "round {round}");
        let (stored, _) = app.store.lease("backfill").await.unwrap().unwrap();
        assert_eq!(stored, won[0].holder(), "round {round}");
        app.store.release_lease("backfill", &stored).await.unwrap();
    }
    // The statement itself: only while the dead holder still holds it.
    let dead = real_holder_with_pid(&app.store, dead_pid()).await;
    let ttl = Duration::from_secs(120);
    assert!(
        app.store
            .acquire_lease("backfill", &dead, ttl)
            .await
            .unwrap()
    );
    assert!(
        app.store
            .take_over_lease("backfill", &dead, "first", ttl)
            .await
            .unwrap()
    );
    assert!(
        !other
            .take_over_lease("backfill", &dead, "second", ttl)
            .await
            .unwrap()
    );
    assert_eq!(
        app.store.lease_holder("backfill").await.unwrap().as_deref(),
        Some("first")
    );
}
