//! README rule 8: no personal data in clerk-sync's log, slow statements included.

use std::time::{Duration, Instant};

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use serde_json::json;
use sqlx::Connection;

use crate::cli::{Server, clerk_sync, free_port};
use crate::support::{Backend, TestDb};

const EMAIL: &str = "zebulon.private@example.com";
const FIRST_NAME: &str = "Zebulonius";
const PHONE: &str = "+15555550123";
const SECRET_NOTE: &str = "private-note-4242";

async fn deliver(listen: &str, secret: &SigningSecret, body: &str) -> u16 {
    let svix_id = sample::random_id("msg");
    let headers = signed_headers(
        secret,
        &svix_id,
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
    .unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("http://{listen}{}", clerk_sync::http::WEBHOOK_PATH))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_8_a_slow_transaction_logs_no_personal_data() {
    let db = TestDb::create(Backend::Postgres).await;
    let DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (secret, secret_text) = SigningSecret::generate();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", secret_text.as_str()),
        ("CLERK_SYNC_LISTEN", listen.as_str()),
    ];
    let server = Server::start(clerk_sync(dir.path(), &env), &listen).await;

    let mut user = SampleUser::new("user_private", 1_716_883_200_000);
    assert_eq!(
        deliver(&listen, &secret, &sample::user_created(&user)).await,
        200
    );

    // Another session holds the row for two seconds: the update's statements become slow ones,
    // which the database driver would log with their whole text.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT id FROM users WHERE id = 'user_private' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    user.updated_at += 1000;
    user.email = Some(EMAIL.into());
    user.first_name = Some(FIRST_NAME.into());
    let mut data = user.to_clerk_json();
    data["phone_numbers"] = json!([{"id": "idn_phone", "phone_number": PHONE}]);
    data["private_metadata"] = json!({"note": SECRET_NOTE});
    let body = sample::envelope("user.updated", data, user.updated_at).to_string();
    let update = tokio::spawn({
        let listen = listen.clone();
        async move { deliver(&listen, &secret, &body).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    assert_eq!(update.await.unwrap(), 200);

    // The event's own log line is the sign that everything about it has been logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("\"updated\"") && !server.stderr().contains("outcome=updated") {
        assert!(
            Instant::now() < deadline,
            "no log line: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = format!("{}\n{}", server.stdout(), server.stderr());
    for private in [EMAIL, FIRST_NAME, PHONE, SECRET_NOTE] {
        assert!(!logs.contains(private), "{private} is in the log:\n{logs}");
    }
}
