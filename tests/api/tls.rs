//! Neon-style connections against a PostgreSQL that only speaks TLS with SCRAM-SHA-256 (a
//! throwaway cluster `scripts/test` starts): the console's connection string as is,
//! `verify-full` with a CA, channel binding enforced, and clear errors for what must fail.
//! Everything here is on loopback.

use std::sync::Arc;

use clerk_sync::clerk::sample::{self, SampleUser};
use clerk_sync::config::DatabaseTarget;
use clerk_sync::store::{PoolSettings, Store};
use sqlx::Connection;

use crate::cli::{clerk_sync, run, text};
use crate::support::{Backend, TEST_DATABASE_URL_VAR, TestApp, TestDb};

/// A host name the TLS cluster's certificate does not hold (it holds localhost and 127.0.0.1).
/// `.invalid` never resolves; URLs with it carry `hostaddr=127.0.0.1`, so no lookup is made and
/// the connection goes to loopback while the certificate is checked against this name.
const NAME_NOT_IN_CERTIFICATE: &str = "not-in-the-certificate.invalid";

/// A password given where the server never asks for one: it must not show either.
const UNUSED_PASSWORD: &str = "Unus3dS3cr3tPassw0rd";

fn tls_server() -> (String, String) {
    let url = std::env::var("CLERK_SYNC_TEST_TLS_DATABASE_URL").expect(
        "CLERK_SYNC_TEST_TLS_DATABASE_URL is not set: run the suite with scripts/test, which starts a TLS + SCRAM PostgreSQL for these tests",
    );
    let ca = std::env::var("CLERK_SYNC_TEST_TLS_CA").expect("CLERK_SYNC_TEST_TLS_CA is not set");
    (url, ca)
}

/// The TLS cluster's password (decoded).
fn tls_password() -> String {
    let (admin, _) = tls_server();
    let url = url::Url::parse(&admin).unwrap();
    let password = url
        .password()
        .expect("the TLS cluster's URL has a password");
    url::form_urlencoded::parse(format!("p={password}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned()
}

/// A connection of the test's own to the TLS cluster, checking its certificate.
async fn own_connection(url: &str) -> sqlx::PgConnection {
    let (_, ca) = tls_server();
    let mut url = url::Url::parse(url).unwrap();
    url.set_query(None);
    url.query_pairs_mut()
        .append_pair("sslmode", "verify-full")
        .append_pair("sslrootcert", &ca);
    sqlx::PgConnection::connect(url.as_str()).await.unwrap()
}

/// A fresh database on the TLS server; its URL without query.
async fn fresh_database() -> String {
    let (admin, _) = tls_server();
    let mut conn = own_connection(&admin).await;
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

/// `base` (a URL without query) reached by a name its certificate does not hold.
fn by_other_name(base: &str) -> String {
    let mut url = url::Url::parse(base).unwrap();
    url.set_host(Some(NAME_NOT_IN_CERTIFICATE)).unwrap();
    url.into()
}

/// Whether clerk-sync's tables are there: `migrate` did its work.
async fn migrated(base: &str) -> bool {
    let mut conn = own_connection(base).await;
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'users')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// `clerk-sync migrate --database-url URL`: whether it succeeded, and stdout + stderr.
fn migrate(url: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = run({
        let mut command = clerk_sync(dir.path(), &[]);
        command.args(["migrate", "--database-url", url]);
        command
    });
    (
        output.status.success(),
        format!("{}{}", text(&output.stdout), text(&output.stderr)),
    )
}

/// No part of `password` (no 6 characters of it in a row) is in `output`.
fn assert_no_password(output: &str, password: &str) {
    let chars: Vec<char> = password.chars().collect();
    for fragment in chars.windows(6.min(chars.len())) {
        let fragment: String = fragment.iter().collect();
        assert!(
            !output.contains(&fragment),
            "a fragment of the password ({fragment}) is shown: {output}"
        );
    }
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
    store.ping().await.unwrap();
    // The store's connections, as the server sees them (from a connection of the test's own
    // to another database).
    let (admin, _) = tls_server();
    let mut own = own_connection(&admin).await;
    let name = base.rsplit('/').next().unwrap();
    let (connections, encrypted): (i64, Option<bool>) = sqlx::query_as(
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = $1",
    )
    .bind(name)
    .fetch_one(&mut own)
    .await
    .unwrap();
    assert!(connections >= 1, "the pool keeps a connection open");
    assert_eq!(encrypted, Some(true), "the connections must be TLS");

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
    assert_no_password(&error, &tls_password());
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
    assert_no_password(&error, &tls_password());

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
async fn channel_binding_required_of_a_server_without_scram_is_refused_saying_what_to_change() {
    let admin = std::env::var(TEST_DATABASE_URL_VAR)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if url::Url::parse(&admin).unwrap().password().is_some() {
        // Such a server may well do SCRAM-SHA-256-PLUS: nothing to refuse.
        eprintln!("{TEST_DATABASE_URL_VAR} has a password: skipped (needs a trust-auth server)");
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let DatabaseTarget::Postgres { url } = db.target() else {
        unreachable!()
    };
    let mut url = url::Url::parse(&url).unwrap();
    // Trust authentication never asks for it.
    url.set_password(Some(UNUSED_PASSWORD)).unwrap();
    // TLS if the server has it (`prefer`): the login is what channel binding is about.
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("channel_binding", "require");
    let url = url.to_string();
    let (ok, output) = migrate(&url);
    assert!(!ok, "no SCRAM, no channel binding: must fail: {output}");
    assert!(output.contains("channel binding"), "named: {output}");
    assert!(
        output.contains("channel_binding=prefer") && output.contains("sslmode=require"),
        "what to change: {output}"
    );
    assert!(
        !output.contains("NOT enforced"),
        "it is enforced now: {output}"
    );
    assert_no_password(&output, UNUSED_PASSWORD);
}

#[tokio::test]
async fn channel_binding_required_over_tls_and_scram_works() {
    let base = fresh_database().await;
    let (ok, output) = migrate(&format!("{base}?sslmode=require&channel_binding=require"));
    assert!(ok, "{output}");
    assert!(!output.contains("NOT enforced"), "{output}");
    assert!(migrated(&base).await, "migrate created the tables");
    assert_no_password(&output, &tls_password());
}

#[tokio::test]
async fn verify_ca_accepts_a_certificate_for_another_name_and_verify_full_does_not() {
    let (_, ca) = tls_server();
    let base = fresh_database().await;
    let other = by_other_name(&base);
    let password = tls_password();

    let (ok, output) = migrate(&format!(
        "{other}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
    ));
    assert!(
        !ok,
        "the certificate is not for {NAME_NOT_IN_CERTIFICATE}: {output}"
    );
    assert!(
        output.contains("certificate") && output.contains(NAME_NOT_IN_CERTIFICATE),
        "the certificate and the host are named: {output}"
    );
    assert!(
        output.contains("verify-ca"),
        "the way out is named: {output}"
    );
    assert_no_password(&output, &password);
    assert!(!migrated(&base).await, "nothing was done");

    // The chain is still checked: the same CA signed it.
    let (ok, output) = migrate(&format!(
        "{other}?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"
    ));
    assert!(ok, "{output}");
    assert!(migrated(&base).await, "migrate created the tables");
    assert_no_password(&output, &password);

    // And both with a name the certificate holds.
    let base = fresh_database().await;
    let mut localhost = url::Url::parse(&base).unwrap();
    localhost.set_host(Some("localhost")).unwrap();
    let (ok, output) = migrate(&format!(
        "{localhost}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}&channel_binding=require"
    ));
    assert!(ok, "{output}");
    assert!(migrated(&base).await);
}

#[tokio::test]
async fn verify_full_without_a_ca_names_sslrootcert() {
    let base = fresh_database().await;
    let (ok, output) = migrate(&format!("{base}?sslmode=verify-full"));
    assert!(!ok, "the test CA is no public root: {output}");
    assert!(
        output.to_lowercase().contains("certificate") && output.contains("sslrootcert="),
        "{output}"
    );
    assert_no_password(&output, &tls_password());

    // A CA file that is not there is named, before any connection.
    let (ok, output) = migrate(&format!(
        "{base}?sslmode=verify-full&sslrootcert=no-such-dir/ca.pem"
    ));
    assert!(!ok, "{output}");
    assert!(
        output.contains("no-such-dir/ca.pem") && output.contains("working directory"),
        "{output}"
    );
    assert_no_password(&output, &tls_password());
}

#[tokio::test]
async fn channel_binding_without_tls_is_refused_before_connecting() {
    // Something listening where the URL points, to see that nothing connects.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!(
        "postgresql://postgres:{UNUSED_PASSWORD}@127.0.0.1:{port}/app?sslmode=disable&channel_binding=require"
    );
    let (ok, output) = migrate(&url);
    assert!(!ok, "{output}");
    assert!(
        output.contains("channel_binding=require") && output.contains("sslmode=disable"),
        "says why: {output}"
    );
    assert!(
        output.contains("sslmode=require"),
        "says what to change: {output}"
    );
    assert_no_password(&output, UNUSED_PASSWORD);
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(_) => panic!("clerk-sync connected before refusing: {output}"),
        Err(e) => panic!("{e}"),
    }

    // The same through DATABASE_URL.
    let dir = tempfile::tempdir().unwrap();
    let output = run({
        let mut command = clerk_sync(dir.path(), &[("DATABASE_URL", url.as_str())]);
        command.arg("migrate");
        command
    });
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("channel_binding=require"), "{stderr}");
    assert_no_password(&stderr, UNUSED_PASSWORD);
}
