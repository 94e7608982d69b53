//! The test harness: a clerk-sync service started the way `serve` starts it, on a random port,
//! over a fresh database (a new PostgreSQL database per test, or a new SQLite file), and a client
//! that signs deliveries like Svix.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::NaiveDateTime;
use clerk_sync::app::App;
use clerk_sync::clerk::sample::random_id;
use clerk_sync::config::{DatabaseTarget, ServeConfig};
use clerk_sync::store::Store;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use sqlx::{Connection, Row};

/// Admin URL of the PostgreSQL server tests may create databases on (set by `scripts/test`).
pub const TEST_DATABASE_URL_VAR: &str = "CLERK_SYNC_TEST_DATABASE_URL";
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A PgBouncer 1.25.1 that `scripts/test` starts in front of the test server (see its header),
/// named after the variable holding its admin URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    /// Transaction mode with `max_prepared_statements = 200`: what Neon's `-pooler` runs.
    Transaction,
    /// Transaction mode with `max_prepared_statements = 0`: every PgBouncer before 1.21.
    TransactionNoPreparedStatements,
    /// Session mode.
    Session,
}

impl Pooler {
    pub const ALL: [Pooler; 3] = [
        Pooler::Transaction,
        Pooler::TransactionNoPreparedStatements,
        Pooler::Session,
    ];

    pub fn url_var(self) -> &'static str {
        match self {
            Pooler::Transaction => "CLERK_SYNC_TEST_PGBOUNCER_TRANSACTION_URL",
            Pooler::TransactionNoPreparedStatements => {
                "CLERK_SYNC_TEST_PGBOUNCER_TRANSACTION_NO_PREPARED_URL"
            }
            Pooler::Session => "CLERK_SYNC_TEST_PGBOUNCER_SESSION_URL",
        }
    }

    /// The pooler's admin URL (database `postgres`; any database name works through it).
    /// Without it the test fails: passing without a pooler would claim what was not tested.
    pub fn admin_url(self) -> String {
        std::env::var(self.url_var()).unwrap_or_else(|_| {
            panic!(
                "{} is not set: run the tests through a real PgBouncer with scripts/test (e.g. \
                 `scripts/test poolers`), which builds PgBouncer and starts one in each mode",
                self.url_var()
            )
        })
    }
}

/// A database that exists for one test and is dropped after it.
pub enum TestDb {
    Postgres { admin_url: String, name: String },
    Sqlite { dir: tempfile::TempDir },
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => {
                let admin_url = std::env::var(TEST_DATABASE_URL_VAR)
                    .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string());
                let name = format!("clerk_sync_test_{}", random_id("db").to_lowercase());
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "cannot reach the test PostgreSQL at {admin_url}: {e}. Run the suite with \
                         scripts/test (it starts a throwaway server), or set {TEST_DATABASE_URL_VAR}"
                    )
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                TestDb::Postgres { admin_url, name }
            }
            Backend::Sqlite => TestDb::Sqlite {
                dir: tempfile::tempdir().expect("a temporary directory"),
            },
        }
    }

    pub fn target(&self) -> DatabaseTarget {
        match self {
            TestDb::Postgres { admin_url, name } => {
                let mut url = url::Url::parse(admin_url).expect("admin URL parses");
                url.set_path(&format!("/{name}"));
                DatabaseTarget::Postgres { url: url.into() }
            }
            TestDb::Sqlite { dir } => DatabaseTarget::Sqlite {
                path: dir.path().join("clerk-sync.db"),
            },
        }
    }
}

impl TestDb {
    /// The same database reached through `pooler`: the URL of [`TestDb::target`] with the
    /// pooler's host and port. The database itself is created and dropped over the direct URL.
    pub fn target_via(&self, pooler: Pooler) -> DatabaseTarget {
        let DatabaseTarget::Postgres { url } = self.target() else {
            panic!("poolers stand in front of PostgreSQL, not SQLite");
        };
        let pooler_url = pooler.admin_url();
        let via = url::Url::parse(&pooler_url)
            .unwrap_or_else(|e| panic!("{} is not a URL ({e}): {pooler_url}", pooler.url_var()));
        let mut url = url::Url::parse(&url).expect("the test database URL parses");
        url.set_host(via.host_str()).expect("a host");
        url.set_port(via.port()).expect("a port");
        DatabaseTarget::Postgres { url: url.into() }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime, which cannot block on itself.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The tests' own way into a database an app uses: a sqlx pool of the test's, opened from the
/// same target (the URL with its query string, e.g. `?sslmode=disable`, or the SQLite file),
/// never the app's pool. Match on it as on the two backends:
/// `match app.sql() { TestSql::Postgres(pool) => ..., TestSql::Sqlite(pool) => ... }`.
#[derive(Debug, Clone)]
pub enum TestSql {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl TestSql {
    /// A pool to `target` that connects on first use (inside a Tokio runtime).
    pub fn lazy(target: &DatabaseTarget) -> TestSql {
        match target {
            DatabaseTarget::Postgres { url } => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url).unwrap_or_else(|e| {
                    panic!("the test database URL {target} is not sqlx's: {e}")
                });
                TestSql::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(4)
                        .connect_lazy_with(options),
                )
            }
            DatabaseTarget::Sqlite { path } => {
                // No journal mode: the app's store has made the file WAL already.
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(10));
                TestSql::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(4)
                        .connect_lazy_with(options),
                )
            }
        }
    }
}

/// A user row as the app would read it.
pub type UserRow = clerk_sync::store::UserRecord;

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    pub svix_id: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub payload: String,
}

const USER_COLUMNS: &str = r#"SELECT id, email, "firstName", "lastName", name, "imageUrl", username,
    "clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt", "deletedAt" FROM users"#;

fn user_row<R: Row>(row: &R) -> UserRow
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> NaiveDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    UserRow {
        id: row.get("id"),
        email: row.get("email"),
        first_name: row.get("firstName"),
        last_name: row.get("lastName"),
        name: row.get("name"),
        image_url: row.get("imageUrl"),
        username: row.get("username"),
        clerk_created_at: row.get("clerkCreatedAt"),
        clerk_updated_at: row.get("clerkUpdatedAt"),
        created_at: row.get("createdAt"),
        updated_at: row.get("updatedAt"),
        deleted_at: row.get("deletedAt"),
    }
}

fn inbox_row<R: Row>(row: &R) -> InboxRow
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    InboxRow {
        svix_id: row.get("svix_id"),
        event_type: row.get("event_type"),
        user_id: row.get("user_id"),
        outcome: row.get("outcome"),
        error: row.get("error"),
        payload: row.get("payload"),
    }
}

/// A running service and what a test needs to talk to it and look at its database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub secret: SigningSecret,
    pub store: Store,
    pub db: Arc<TestDb>,
    pub backend: Backend,
    /// Where [`TestApp::sql`] connects: the app's own target (after `configure`), or the
    /// direct URL of a database the app reaches through a pooler.
    sql_target: DatabaseTarget,
    sql: OnceLock<TestSql>,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn outcome(&self) -> &str {
        self.body["outcome"].as_str().unwrap_or("<none>")
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a service; `configure` adjusts the configuration first.
    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let db = Arc::new(TestDb::create(backend).await);
        Self::spawn_on(db, backend, configure).await
    }

    /// Starts a service on a fresh PostgreSQL database that it reaches through `pooler`, as
    /// `serve` does with a pooler's URL in `DATABASE_URL`; its `store` goes through the pooler.
    pub async fn spawn_via(pooler: Pooler, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let db = Arc::new(TestDb::create(Backend::Postgres).await);
        let target = db.target_via(pooler);
        let mut app = Self::spawn_on(db, Backend::Postgres, move |config| {
            config.database = target;
            configure(config);
        })
        .await;
        // The test reads the same database over the direct URL, not through the pooler.
        app.sql_target = app.db.target();
        app
    }

    /// Starts another service on an existing test database (several processes, one database).
    pub async fn spawn_on(
        db: Arc<TestDb>,
        backend: Backend,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestApp {
        clerk_sync::logging::init();
        let (secret, _) = SigningSecret::generate();
        let mut config = ServeConfig::new(db.target(), vec![secret.clone()]);
        config.listen = "127.0.0.1:0".parse().unwrap();
        configure(&mut config);
        let app = App::build(&config).await.expect("the service starts");
        let address = format!("http://{}", app.local_addr());
        let store = app.store().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        TestApp {
            address,
            client: reqwest::Client::new(),
            secret: config.secrets.first().cloned().unwrap_or(secret),
            store,
            db,
            backend,
            sql_target: config.database.clone(),
            sql: OnceLock::new(),
        }
    }

    /// The test's own connection to the database the app uses (made on first use), for reading
    /// and arranging rows behind the app's back.
    pub fn sql(&self) -> &TestSql {
        self.sql.get_or_init(|| TestSql::lazy(&self.sql_target))
    }

    pub fn webhook_url(&self) -> String {
        format!("{}{}", self.address, clerk_sync::http::WEBHOOK_PATH)
    }

    /// Delivers `body` signed with the app's secret under a fresh svix-id.
    pub async fn deliver(&self, body: &str) -> Answer {
        self.deliver_as(&random_id("msg"), body).await
    }

    /// Delivers `body` signed with the app's secret under `svix_id`.
    pub async fn deliver_as(&self, svix_id: &str, body: &str) -> Answer {
        let timestamp = chrono::Utc::now().timestamp();
        let headers = signed_headers(&self.secret, svix_id, timestamp, body.as_bytes()).unwrap();
        self.post(&headers, body.as_bytes().to_vec()).await
    }

    /// Posts raw headers and body to the webhook endpoint.
    pub async fn post(&self, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut request = self
            .client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("the service answers");
        Answer::read(response).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the service answers");
        Answer::read(response).await
    }

    pub async fn user(&self, id: &str) -> Option<UserRow> {
        let sql = format!("{USER_COLUMNS} WHERE id = $1");
        match self.sql() {
            TestSql::Postgres(pool) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap()
                .map(|r| user_row(&r)),
            TestSql::Sqlite(pool) => sqlx::query(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap()
                .map(|r| user_row(&r)),
        }
    }

    pub async fn users(&self) -> Vec<UserRow> {
        let sql = format!("{USER_COLUMNS} ORDER BY id");
        match self.sql() {
            TestSql::Postgres(pool) => sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(user_row)
                .collect(),
            TestSql::Sqlite(pool) => sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(user_row)
                .collect(),
        }
    }

    fn ns(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "clerk_sync.",
            Backend::Sqlite => "clerk_sync_",
        }
    }

    pub async fn inbox(&self) -> Vec<InboxRow> {
        let sql = format!(
            "SELECT svix_id, event_type, user_id, outcome, error, payload FROM {}inbox ORDER BY received_at, svix_id",
            self.ns()
        );
        match self.sql() {
            TestSql::Postgres(pool) => sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(inbox_row)
                .collect(),
            TestSql::Sqlite(pool) => sqlx::query(&sql)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(inbox_row)
                .collect(),
        }
    }

    pub async fn inbox_entry(&self, svix_id: &str) -> Option<InboxRow> {
        self.inbox()
            .await
            .into_iter()
            .find(|e| e.svix_id == svix_id)
    }

    pub async fn tombstoned(&self, user_id: &str) -> bool {
        let sql = format!(
            "SELECT count(*) FROM {}tombstones WHERE user_id = $1",
            self.ns()
        );
        let count: i64 = match self.sql() {
            TestSql::Postgres(pool) => sqlx::query_scalar(&sql).bind(user_id).fetch_one(pool).await,
            TestSql::Sqlite(pool) => sqlx::query_scalar(&sql).bind(user_id).fetch_one(pool).await,
        }
        .unwrap();
        count > 0
    }
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Answer { status, body }
    }
}

/// Milliseconds to the `TIMESTAMP(3)` value the table holds.
pub fn at(ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .naive_utc()
}

/// Runs each test body once per backend: `mod postgres { ... }` and `mod sqlite { ... }`.
macro_rules! on_both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $backend = $crate::support::Backend::Postgres;
                    $body
                }
            )*
        }
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $backend = $crate::support::Backend::Sqlite;
                    $body
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
