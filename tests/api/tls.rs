//! Neon-style connections against a PostgreSQL that only speaks TLS with SCRAM-SHA-256 (a
//! throwaway cluster `scripts/test` starts): the console's connection string as is,
//! `verify-full` with a CA, and clear errors for what must fail.

use std::sync::Arc;

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::store::{Pool, PoolSettings, Store};
use sqlx::Connection;

use crate::cli::{clerk_sync, run, text};
use crate::support::{Backend, TestApp, TestDb};

fn tls_server() -> (String, String) {
    let url = std::env::var("CLERK_SYNC_TEST_TLS_DATABASE_URL").expect(
        "CLERK_SYNC_TEST_TLS_DATABASE_URL is not set: run the suite with scripts/test, which starts a TLS + SCRAM PostgreSQL for these tests",
    );
    let ca = std::env::var("CLERK_SYNC_TEST_TLS_CA").expect("CLERK_SYNC_TEST_TLS_CA is not set");
    (url, ca)
}

/// A fresh database on the TLS server; its URL without query.
async fn fresh_database() -> String {
    let (admin, ca) = tls_server();
    let mut conn =
        sqlx::PgConnection::connect(&format!("{admin}?sslmode=verify-full&sslrootcert={ca}"))
            .await
            .unwrap();
    let name = format!(
        "tls_{}",
        clerk_sync::clerk::sample::random_id("db").to_lowercase()
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neon_style_connection_string_works_as_is_over_tls_and_scram() {
    let base = fresh_database().await;
    // Exactly the shape Neon's console hands out.
    let target =
        DatabaseTarget::from_url(&format!("{base}?sslmode=require&channel_binding=require"))
            .unwrap();
    let store = Store::connect(&target, &PoolSettings::default())
        .await
        .unwrap();
    store.check_connection(&target).await.unwrap();
    store.migrate().await.unwrap();
    let Pool::Postgres(pool) = store.pool() else {
        unreachable!()
    };
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(encrypted, "the connection must be TLS");

    let db = Arc::new(TestDb::create(Backend::Postgres).await);
    let app = TestApp::spawn_on(db, Backend::Postgres, move |c| c.database = target).await;
    let answer = app
        .deliver(&sample::user_created(&SampleUser::new(
            "user_tls",
            1_716_883_200_000,
        )))
        .await;
    assert_eq!((answer.status, answer.outcome()), (200, "created"));
    assert!(app.user("user_tls").await.is_some());
}

#[tokio::test]
async fn verify_full_checks_the_certificate_against_the_given_ca() {
    let (_, ca) = tls_server();
    let base = fresh_database().await;
    let trusted =
        DatabaseTarget::from_url(&format!("{base}?sslmode=verify-full&sslrootcert={ca}")).unwrap();
    let store = Store::connect(&trusted, &PoolSettings::default())
        .await
        .unwrap();
    store.check_connection(&trusted).await.unwrap();

    // Without the CA, the test certificate is not trusted: refused, and the error says why.
    let untrusted = DatabaseTarget::from_url(&format!("{base}?sslmode=verify-full")).unwrap();
    let store = Store::connect(&untrusted, &PoolSettings::default())
        .await
        .unwrap();
    let error = store
        .check_connection(&untrusted)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot connect") && error.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert!(error.contains("sslrootcert="), "the fix is named: {error}");
}

#[tokio::test]
async fn plaintext_and_wrong_passwords_are_refused_with_clear_errors() {
    let base = fresh_database().await;
    let plaintext = DatabaseTarget::from_url(&format!("{base}?sslmode=disable")).unwrap();
    let store = Store::connect(&plaintext, &PoolSettings::default())
        .await
        .unwrap();
    let error = store
        .check_connection(&plaintext)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pg_hba.conf") || error.contains("encryption"),
        "{error}"
    );

    let mut wrong = url::Url::parse(&base).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    let target = DatabaseTarget::from_url(&format!("{wrong}?sslmode=require")).unwrap();
    let store = Store::connect(&target, &PoolSettings::default())
        .await
        .unwrap();
    let error = store
        .check_connection(&target)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(
        !error.contains("not-the-password"),
        "the password must not be echoed: {error}"
    );
}

#[tokio::test]
async fn channel_binding_is_reported_as_not_enforced() {
    let base = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{base}?sslmode=require&channel_binding=require");
    let output = run({
        let mut c = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        c.arg("migrate");
        c
    });
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("channel binding is NOT enforced"),
        "{stderr}"
    );
}
