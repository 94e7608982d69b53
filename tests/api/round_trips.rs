//! README rule 10: a webhook event (of a user, an organization or a membership) costs two round
//! trips to PostgreSQL. A proxy between the
//! service and the server counts the times the client speaks after the server has answered: a
//! third round trip in the hot path fails this test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
use clerk_sync::config::DatabaseTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Backend, TestApp, TestDb};

/// Client turns over every connection through the proxy: a turn starts when the client sends
/// after the server has said something on that connection.
#[derive(Default)]
struct Turns(AtomicUsize);

async fn proxy(server: String, turns: Arc<Turns>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&server).await.unwrap();
            let turns = turns.clone();
            tokio::spawn(relay(client, server, turns));
        }
    });
    port
}

async fn relay(client: TcpStream, server: TcpStream, turns: Arc<Turns>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Whether the server spoke since the client last did.
    let server_spoke = Arc::new(AtomicBool::new(true));
    let heard = server_spoke.clone();
    let upstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if heard.swap(false, Ordering::SeqCst) {
                turns.0.fetch_add(1, Ordering::SeqCst);
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            server_spoke.store(true, Ordering::SeqCst);
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(upstream, downstream);
}

/// Every source of user changes runs the same transaction: a delivery (a single event is a
/// batch of one), a snapshot from Clerk's API (the fallback fetch), a backfill or reconcile
/// page, and a replay all take two round trips.
///
/// On one thread: a round's statements are all queued before the connection's task writes
/// them, as one burst. On several, that task may write the first statement while the rest are
/// still being queued, and the proxy, which sees bytes and not which answer a statement
/// waited for, would count the server's answer in between as a turn.
#[tokio::test(flavor = "current_thread")]
async fn rule_10_every_transaction_costs_two_round_trips() {
    let db = Arc::new(TestDb::create(Backend::Postgres).await);
    let DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    let mut proxied = url::Url::parse(&url).unwrap();
    let server = format!(
        "{}:{}",
        proxied.host_str().unwrap(),
        proxied.port().unwrap_or(5432)
    );
    let turns = Arc::new(Turns::default());
    let port = proxy(server, turns.clone()).await;
    proxied.set_port(Some(port)).unwrap();
    // Plain text, so the proxy sees the protocol's turns rather than TLS records.
    proxied.query_pairs_mut().append_pair("sslmode", "disable");
    let app = TestApp::spawn_on(db, Backend::Postgres, |config| {
        config.database = DatabaseTarget::Postgres {
            url: proxied.to_string(),
        };
        config.writers = Some(1);
    })
    .await;

    // The first event opens the writer's connection and prepares its statements.
    let t = 1_716_883_200_000;
    let warm = SampleUser::new("user_warm", t);
    assert_eq!(
        app.deliver(&sample::user_created(&warm)).await.outcome(),
        "created"
    );

    let organization = SampleOrganization::new("org_counted", t);
    let membership = SampleMembership::new("orgmem_counted", organization.clone(), "user_m", t);
    let mut renamed = organization.clone();
    renamed.updated_at = t + 1000;
    for (n, body) in [
        sample::user_created(&SampleUser::new("user_counted", t)),
        sample::user_updated(&SampleUser::new("user_counted", t + 1000)),
        sample::user_deleted("user_counted", t + 2000),
        // Organization events read and write more tables, in the same two rounds.
        sample::organization_created(&organization),
        sample::membership_created(&membership),
        sample::organization_updated(&renamed),
        sample::membership_deleted(&membership, t + 3000),
        sample::user_deleted("user_m", t + 4000),
        sample::organization_deleted("org_counted", &organization.slug, t + 5000),
    ]
    .iter()
    .enumerate()
    {
        let before = turns.0.load(Ordering::SeqCst);
        let answer = app.deliver(body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let used = turns.0.load(Ordering::SeqCst) - before;
        assert_eq!(
            used,
            2,
            "event {n} ({}) took {used} round trips",
            answer.outcome()
        );
    }

    let counted = |what: &'static str, before: usize| {
        let used = turns.0.load(Ordering::SeqCst) - before;
        assert_eq!(used, 2, "{what} took {used} round trips");
    };
    let snapshot = |id: String| clerk_sync::sync::UserSnapshot {
        email: Some(format!("{id}@example.com")),
        first_name: Some("Zoë".into()),
        last_name: None,
        name: Some("Zoë".into()),
        image_url: None,
        username: None,
        created_at: Some(t),
        updated_at: t,
        id,
    };
    // Outside the writers the pool may open another connection: warm it first, so the
    // connection's start-up is not counted.
    let warm = snapshot("user_warm_store".into());
    app.store
        .apply_snapshot(&warm, clerk_sync::sync::DeleteMode::Hard)
        .await
        .unwrap();
    let fetched = snapshot("user_fetched".into());
    let before = turns.0.load(Ordering::SeqCst);
    app.store
        .apply_snapshot(&fetched, clerk_sync::sync::DeleteMode::Hard)
        .await
        .unwrap();
    counted("a snapshot fetched from Clerk", before);

    let page: Vec<_> = (0..20).map(|i| snapshot(format!("user_page{i}"))).collect();
    let before = turns.0.load(Ordering::SeqCst);
    app.store
        .apply_snapshots(&page, Some(("backfill.cursor", "20")), false)
        .await
        .unwrap();
    counted("a page of 20 with its checkpoint", before);

    let svix_id = clerk_sync::clerk::sample::random_id("msg");
    let body = sample::user_updated(&SampleUser::new("user_warm", t + 5000));
    assert_eq!(app.deliver_as(&svix_id, &body).await.status, 200);
    // A replay reads the stored event first (one statement), then runs the transaction.
    let before = turns.0.load(Ordering::SeqCst);
    app.store
        .replay(&svix_id, clerk_sync::sync::DeleteMode::Hard)
        .await
        .unwrap();
    let used = turns.0.load(Ordering::SeqCst) - before;
    assert_eq!(used, 3, "a replay took {used} round trips");
}
