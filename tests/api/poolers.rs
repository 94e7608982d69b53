//! Through a real PgBouncer 1.25.1 (`scripts/test` builds it and starts one per mode): the
//! random-history property, rule 6's email and username moves, and the SIGKILL fault test, each
//! in transaction mode with `max_prepared_statements = 200` (what Neon's `-pooler` endpoints
//! run) and `= 0` (every PgBouncer before 1.21), and in session mode, with every delivery
//! answered 2xx the first time. The service is given the pooler's URL as `DATABASE_URL` and
//! nothing else, as a user pasting Neon's pooled string would.

use std::collections::HashMap;

use sqlx::{Connection, Row};

use crate::faults::sigkill_mid_stream_then_restart;
use crate::history::random_histories_converge;
use crate::support::{Pooler, TestApp};
use crate::webhook_rules::unique_values_move_between_users;

/// Fewer histories than the direct test's 64: the rules are the same, the pooler is what is
/// under test, and the suite runs on two cores.
const HISTORIES: u32 = 32;

#[test]
fn random_histories_converge_through_pgbouncer_in_transaction_mode() {
    random_histories_converge(HISTORIES, || {
        TestApp::spawn_via(Pooler::Transaction, |_| {})
    });
}

#[test]
fn random_histories_converge_through_pgbouncer_in_transaction_mode_without_prepared_statements() {
    random_histories_converge(HISTORIES, || {
        TestApp::spawn_via(Pooler::TransactionNoPreparedStatements, |_| {})
    });
}

#[test]
fn random_histories_converge_through_pgbouncer_in_session_mode() {
    random_histories_converge(HISTORIES, || TestApp::spawn_via(Pooler::Session, |_| {}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_6_unique_values_move_between_users_through_pgbouncer_in_transaction_mode() {
    unique_values_move_between_users(&TestApp::spawn_via(Pooler::Transaction, |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_6_unique_values_move_between_users_through_pgbouncer_without_prepared_statements() {
    let app = TestApp::spawn_via(Pooler::TransactionNoPreparedStatements, |_| {}).await;
    unique_values_move_between_users(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_6_unique_values_move_between_users_through_pgbouncer_in_session_mode() {
    unique_values_move_between_users(&TestApp::spawn_via(Pooler::Session, |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_through_pgbouncer_in_transaction_mode_loses_nothing() {
    sigkill_mid_stream_then_restart("SIGKILL twice, PgBouncer transaction mode", |db| {
        db.target_via(Pooler::Transaction)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_through_pgbouncer_without_prepared_statements_loses_nothing() {
    sigkill_mid_stream_then_restart(
        "SIGKILL twice, PgBouncer transaction mode, max_prepared_statements = 0",
        |db| db.target_via(Pooler::TransactionNoPreparedStatements),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_through_pgbouncer_in_session_mode_loses_nothing() {
    sigkill_mid_stream_then_restart("SIGKILL twice, PgBouncer session mode", |db| {
        db.target_via(Pooler::Session)
    })
    .await;
}

/// The tests above prove something only if each URL leads to the PgBouncer it is named after:
/// asked on each one's console.
#[tokio::test]
async fn each_pooler_url_leads_to_pgbouncer_1_25_1_in_the_mode_it_is_named_after() {
    let mut ports = Vec::new();
    for pooler in Pooler::ALL {
        let (mode, prepared) = match pooler {
            Pooler::Transaction => ("transaction", Some("200")),
            Pooler::TransactionNoPreparedStatements => ("transaction", Some("0")),
            Pooler::Session => ("session", None),
        };
        let mut url = url::Url::parse(&pooler.admin_url()).unwrap();
        ports.push(url.port());
        url.set_path("/pgbouncer");
        let mut console = sqlx::PgConnection::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("{pooler:?}: PgBouncer's console at {url}: {e}"));
        // The console speaks the simple query protocol only.
        let version: String = sqlx::raw_sql("SHOW VERSION")
            .fetch_one(&mut console)
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, "PgBouncer 1.25.1", "{pooler:?}");
        let config: HashMap<String, Option<String>> = sqlx::raw_sql("SHOW CONFIG")
            .fetch_all(&mut console)
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get("key"), row.get("value")))
            .collect();
        assert_eq!(config["pool_mode"].as_deref(), Some(mode), "{pooler:?}");
        if let Some(prepared) = prepared {
            let value = config["max_prepared_statements"].as_deref();
            assert_eq!(value, Some(prepared), "{pooler:?}");
        }
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "three poolers, not one under three names");
}
