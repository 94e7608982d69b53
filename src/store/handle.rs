//! The [`Store`]: a pool on either backend, where the users table is, and what every operation
//! shares (timeouts, retries of lost races). Reads and writes of particular tables add their
//! own `impl Store` blocks in the modules about them.

use std::future::Future;
use std::time::Duration;

use chrono::NaiveDateTime;

use super::error::{DriverError, Refusal, StoreError};
use super::migrations::{self, MigrationReport};
use super::postgres;
use super::records::{StoredEvent, UserRecord, now};
use super::sqlite;
use super::statements::Statements;
use super::target::{DatabaseTarget, PoolSettings};
use super::users_table::UsersTable;

/// How often a transaction that lost a race (deadlock, serialization failure, busy SQLite file)
/// is tried again before the delivery is answered with 503.
const CONFLICT_RETRIES: u32 = 8;

/// How often a unique violation is taken for a lost race before it counts as the event's data
/// (see [`retrying`]).
const UNIQUE_VIOLATION_RETRIES: u32 = 2;

/// The configured database: a connection pool and where the app's users table is.
#[derive(Clone, Debug)]
pub struct Store {
    pub(super) pool: Pool,
    /// The PostgreSQL statements for this users table.
    pub(super) texts: std::sync::Arc<postgres::Texts>,
    pub(super) users: UsersTable,
    /// The database as people may see it (password masked), for messages.
    pub(super) database: String,
    pub(super) connect_timeout: Duration,
    pub(super) migrate_timeout: Duration,
}

/// A connection pool to one of the two backends: PostgreSQL through tokio-postgres, SQLite
/// through sqlx.
#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(postgres::Pool),
    Sqlite(sqlx::SqlitePool),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pool::Postgres(_) => "Pool::Postgres",
            Pool::Sqlite(_) => "Pool::Sqlite",
        })
    }
}

/// Runs a read (or a single statement) on a pooled connection: `$pg` with a tokio-postgres
/// client on PostgreSQL, `$lite` with an sqlx connection (`Statements`) on SQLite.
#[allow(clippy::crate_in_macro_def)]
macro_rules! on_connection {
    ($store:expr, |$client:ident| $pg:expr, |$conn:ident| $lite:expr) => {
        async {
            match &$store.pool {
                crate::store::handle::Pool::Postgres(pool) => {
                    let object = pool.get().await?;
                    let $client: &tokio_postgres::Client = &object;
                    Ok::<_, crate::store::error::DriverError>($pg.await?)
                }
                crate::store::handle::Pool::Sqlite(pool) => {
                    let mut connection = pool.acquire().await?;
                    let $conn = &mut *connection;
                    Ok($lite.await?)
                }
            }
        }
        .await
        .map_err(crate::store::error::StoreError::unavailable)
    };
}
pub(crate) use on_connection;

impl Store {
    /// Opens a pool. Connections are made on first use, so a server can start (and say it is
    /// not ready) while the database is still away.
    pub async fn connect(
        target: &DatabaseTarget,
        pool: &PoolSettings,
    ) -> Result<Store, StoreError> {
        Self::connect_with(target, pool, UsersTable::default()).await
    }

    /// As [`Store::connect`], for a users table named differently.
    pub async fn connect_with(
        target: &DatabaseTarget,
        settings: &PoolSettings,
        users: UsersTable,
    ) -> Result<Store, StoreError> {
        let pool = match target {
            DatabaseTarget::Postgres { url } => Pool::Postgres(postgres::pool(url, settings)?),
            DatabaseTarget::Sqlite { path } => {
                if users.schema().is_some() {
                    return Err(StoreError::Setup(
                        "CLERK_SYNC_USERS_SCHEMA is for PostgreSQL; SQLite has no schemas".into(),
                    ));
                }
                sqlite::connect(path, settings).await.map(Pool::Sqlite)?
            }
        };
        Ok(Store {
            pool,
            texts: std::sync::Arc::new(postgres::Texts::new(&users)),
            users,
            database: target.to_string(),
            connect_timeout: settings.connect_timeout,
            migrate_timeout: settings.migrate_timeout,
        })
    }

    /// Where the users table is.
    pub fn users_table(&self) -> &UsersTable {
        &self.users
    }

    /// Which database this is: `postgres` or `sqlite`.
    pub(crate) fn backend(&self) -> &'static str {
        match &self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending schema migrations (safe to run from several processes at once),
    /// adopting an existing users table first if there is one.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.migrate_with(false).await
    }

    /// What `migrate` would do, changing nothing.
    pub async fn migrate_dry_run(&self) -> Result<MigrationReport, StoreError> {
        self.migrate_with(true).await
    }

    async fn migrate_with(&self, dry_run: bool) -> Result<MigrationReport, StoreError> {
        let run = async {
            match &self.pool {
                Pool::Postgres(pool) => migrations::run_postgres(pool, &self.users, dry_run).await,
                Pool::Sqlite(pool) => migrations::run_sqlite(pool, &self.users, dry_run).await,
            }
        };
        // Dropping the run rolls its transaction back: a timeout changes nothing.
        tokio::time::timeout(self.migrate_timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Setup(format!(
                    "migrating {} timed out: not done within {} (CLERK_SYNC_MIGRATE_TIMEOUT). \
                     Either the database stopped answering, or another process holds the \
                     migration lock (a `clerk-sync migrate` or `serve` starting elsewhere). \
                     Nothing was changed; try again, or raise CLERK_SYNC_MIGRATE_TIMEOUT",
                    self.database,
                    humanize(self.migrate_timeout)
                )))
            })
    }

    /// Opens one connection outside the pool, so a failure reports its real cause (refused,
    /// bad password, TLS, channel binding) rather than the pool's "timed out".
    pub async fn check_connection(&self, target: &DatabaseTarget) -> Result<(), StoreError> {
        use sqlx::Connection;
        let settings = PoolSettings {
            connect_timeout: self.connect_timeout,
            ..PoolSettings::default()
        };
        let connect = async {
            match (target, &self.pool) {
                (DatabaseTarget::Postgres { url }, _) => postgres::check(url, &settings).await,
                (_, Pool::Sqlite(pool)) => {
                    sqlx::SqliteConnection::connect_with(&pool.connect_options())
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                (_, Pool::Postgres(_)) => unreachable!("a SQLite target has a SQLite pool"),
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => {
                result.map_err(|e| StoreError::Setup(format!("cannot connect to {target}: {e}")))
            }
            Err(_) => Err(StoreError::Setup(format!(
                "cannot connect to {target}: connecting timed out, no answer within {} \
                 (CLERK_SYNC_DB_CONNECT_TIMEOUT). Something accepted the connection but did not \
                 answer as PostgreSQL does: check the host and port, a firewall or proxy in \
                 between, or a paused database; raise CLERK_SYNC_DB_CONNECT_TIMEOUT if it is \
                 only slow",
                humanize(self.connect_timeout)
            ))),
        }
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all.
    pub async fn close(&self) {
        match &self.pool {
            // Connections in use close when handed back.
            Pool::Postgres(pool) => pool.close(),
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_connection!(
            self,
            |client| client.batch_execute("SELECT 1"),
            |conn| async { sqlx::query("SELECT 1").execute(&mut *conn).await.map(drop) }
        )
    }

    /// The user's row (soft-deleted ones included) and whether the id is tombstoned.
    pub async fn user(&self, id: &str) -> Result<(Option<UserRecord>, bool), StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::user(client, &self.users, id),
            |conn| conn.user(&self.users, id)
        )
    }

    /// The inbox row of `svix_id`, payload included; `None` when there is none.
    pub async fn stored_event(&self, svix_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::stored_event_by_id(client, svix_id),
            |conn| conn.stored_event(svix_id)
        )
    }

    /// Up to `limit` stored events, the newest first; only those whose outcome is `failed`
    /// when `failed_only`.
    pub async fn stored_events(
        &self,
        failed_only: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::stored_events(client, failed_only, limit),
            |conn| conn.stored_events(failed_only, limit)
        )
    }

    /// The value clerk-sync keeps under `key` in its state table (e.g. a backfill's
    /// checkpoint); `None` when unset.
    pub async fn state(&self, key: &str) -> Result<Option<String>, StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::get_state(client, key),
            |conn| conn.get_state(key)
        )
    }

    /// Sets the state `key` to `value`, or removes it (`None`).
    pub(crate) async fn set_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let now = now();
        on_connection!(
            self,
            |client| postgres::queries::set_state(client, key, value, now),
            |conn| conn.set_state(key, value, now)
        )
    }

    /// Takes (or renews, for the same holder) the lease `name` for `ttl`; false while another
    /// holder's lease runs.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now();
        let expires_at =
            now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
        on_connection!(
            self,
            |client| postgres::queries::acquire_lease(client, name, holder, expires_at, now),
            |conn| conn.acquire_lease(name, holder, expires_at, now)
        )
    }

    /// Gives the lease `name` up, if `holder` holds it, so another process can take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::release_lease(client, name, holder),
            |conn| conn.release_lease(name, holder)
        )
    }

    /// Stored events whose outcome is `failed`.
    pub(crate) async fn failed_event_count(&self) -> Result<u64, StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::failed_event_count(client),
            |conn| conn.failed_event_count()
        )
        .map(|n| n.max(0) as u64)
    }

    /// Connections in the pool: (idle, in use, limit).
    pub(crate) fn pool_stats(&self) -> (u32, u32, u32) {
        let (size, idle, max) = match &self.pool {
            Pool::Postgres(pool) => {
                let status = pool.status();
                (
                    status.size as u32,
                    status.available as u32,
                    status.max_size as u32,
                )
            }
            Pool::Sqlite(pool) => (
                pool.size(),
                pool.num_idle() as u32,
                pool.options().get_max_connections(),
            ),
        };
        (idle, size.saturating_sub(idle), max)
    }

    /// Who holds the lease `name` (expired or not).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lease(name).await?.map(|(holder, _)| holder))
    }

    /// The lease `name` (expired or not): its holder and when it expires (UTC).
    pub async fn lease(&self, name: &str) -> Result<Option<(String, NaiveDateTime)>, StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::lease(client, name),
            |conn| conn.lease(name)
        )
    }

    /// Takes the lease `name` from `dead_holder`, a process known to be gone, for `ttl`.
    /// Compare-and-swap: false if the lease has meanwhile passed to anyone else (another
    /// process taking it over at the same moment, say), so only one can win.
    pub async fn take_over_lease(
        &self,
        name: &str,
        dead_holder: &str,
        new_holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let expires_at =
            now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
        on_connection!(
            self,
            |client| postgres::queries::take_over_lease(
                client,
                name,
                dead_holder,
                new_holder,
                expires_at
            ),
            |conn| conn.take_over_lease(name, dead_holder, new_holder, expires_at)
        )
    }

    /// Ids of live rows first written before `before`.
    pub(crate) async fn live_user_ids(
        &self,
        before: NaiveDateTime,
    ) -> Result<Vec<String>, StoreError> {
        on_connection!(
            self,
            |client| postgres::queries::live_user_ids(client, &self.users, before),
            |conn| conn.live_user_ids(&self.users, before)
        )
    }
}

/// A duration as people write it: `10s`, `1.5s`, `5m`.
fn humanize(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{}s", d.as_secs_f64()),
    }
}

/// Runs a transaction again when it lost a race with a concurrent one. A unique violation can
/// be such a race (another transaction inserted the value first), but one that recurs is the
/// event's data against a constraint clerk-sync does not manage (an app's own unique index,
/// say): it is tried again only [`UNIQUE_VIOLATION_RETRIES`] times, then counts as data.
pub(crate) async fn retrying<T, F, Fut>(mut transaction: F) -> Result<T, DriverError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DriverError>>,
{
    let (mut races, mut unique_violations) = (0, 0);
    loop {
        let error = match transaction().await {
            Err(error) => error,
            result => return result,
        };
        let attempt = match error.refusal() {
            Refusal::LostRace if races < CONFLICT_RETRIES => {
                races += 1;
                races
            }
            Refusal::UniqueViolation if unique_violations < UNIQUE_VIOLATION_RETRIES => {
                unique_violations += 1;
                unique_violations
            }
            _ => return Err(error),
        };
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// Short randomized waits: the competing transaction usually finishes within milliseconds.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    Duration::from_millis(base + rand::random_range(0..base))
}
