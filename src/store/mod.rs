//! Persistence: the app's tables (`users`, `organizations`, `organization_memberships`) and
//! clerk-sync's own bookkeeping, on PostgreSQL or SQLite: connections, migrations, statements,
//! and the two-round transaction (`transaction`) that [`crate::ingest`] drives. What an event
//! does is decided above (in `ingest` and [`crate::sync`]); this module sees domain values
//! only, never Clerk's wire types. The SQL both backends share is in `statements` and
//! `organizations`; the dialect modules say how to reach their database and write what each
//! writes its own way.

mod adopt;
mod error;
mod migrations;
mod organizations;
mod postgres;
mod retention;
mod sqlite;
mod statements;
mod status;
mod target;
mod tombstones;
mod transaction;
mod users_table;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::sync::{ClerkMillis, Outcome};

use error::Refusal;
pub use error::{DatabaseError, StoreError};
pub use migrations::MigrationReport;
pub use organizations::{MembershipRecord, OrganizationRecord};
pub use retention::INBOX_EXACT_COUNT_UP_TO;
pub(crate) use statements::StateKeys;
use statements::Statements;
pub(crate) use status::{EventSummary, OrganizationCounts};
pub use target::DatabaseTarget;
pub use tombstones::{Tombstone, TombstoneRemoval};
pub(crate) use transaction::{InboxUpdate, Transaction, Writes};
pub use users_table::UsersTable;

/// How often a transaction that lost a race (deadlock, serialization failure, busy SQLite file)
/// is tried again before the delivery is answered with 503.
const CONFLICT_RETRIES: u32 = 8;

/// How often a unique violation is taken for a lost race before it counts as the event's data
/// (see [`retrying`]).
const UNIQUE_VIOLATION_RETRIES: u32 = 2;

/// The configured database: a connection pool and where the app's users table is.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The PostgreSQL statements for this users table.
    texts: std::sync::Arc<postgres::Texts>,
    users: UsersTable,
    /// The database as people may see it (password masked), for messages.
    database: String,
    connect_timeout: Duration,
    migrate_timeout: Duration,
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

/// How [`Store::connect`] reaches the database: pool size and timeouts.
/// `PoolSettings::default()` suits one small server.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Most connections the pool holds at once (`CLERK_SYNC_DB_MAX_CONNECTIONS`); webhook
    /// writers, API requests and jobs share them.
    pub max_connections: u32,
    /// Longest an operation waits for a free connection of the pool before it fails as
    /// unavailable.
    pub acquire_timeout: Duration,
    /// Longest wait for a new connection to answer when checking the database at start
    /// (`CLERK_SYNC_DB_CONNECT_TIMEOUT`): a server behind a firewall or a paused compute may
    /// accept the TCP connection and then say nothing at all.
    pub connect_timeout: Duration,
    /// Longest time migrations may take (`CLERK_SYNC_MIGRATE_TIMEOUT`); generous, since
    /// adopting a large table builds indexes.
    pub migrate_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            migrate_timeout: DEFAULT_MIGRATE_TIMEOUT,
        }
    }
}

/// Default of [`PoolSettings::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`PoolSettings::migrate_timeout`].
const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);

/// An event as the inbox holds it: one row of the inbox, whoever reads it.
///
/// `P` is the payload: the raw body (`String`, the default) where a row is read whole, `()`
/// where a query leaves the payload out on purpose (the status page's summaries: it lists
/// up to a hundred rows and shows no payload, and payloads can be large). A row read without
/// its payload therefore cannot be replayed or shown in full by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent<P = String> {
    /// The delivery's `svix-id`, the inbox's key (what `clerk-sync events replay` takes).
    pub svix_id: String,
    /// Clerk's event type, e.g. `user.updated`.
    pub event_type: String,
    /// The Clerk user the event is about (the member, for a membership event), when it names
    /// one.
    pub user_id: Option<String>,
    /// What applying it did, as [`Outcome::as_str`] names it (`created`, `failed`, …).
    pub outcome: String,
    /// Why it failed, when `outcome` is `failed`.
    pub error: Option<String>,
    /// The raw body, or `()` where it was left out (see above).
    pub payload: P,
    /// Unix seconds of the delivery attempt, as Svix signed it.
    pub svix_timestamp: i64,
    /// When clerk-sync stored it (UTC).
    pub received_at: NaiveDateTime,
    /// When a replay last applied it again (UTC); `None` if it never was.
    pub replayed_at: Option<NaiveDateTime>,
}

impl<P> StoredEvent<P> {
    /// `received_at` minus `svix_timestamp`, in milliseconds.
    pub(crate) fn delivery_lag_ms(&self) -> i64 {
        datetime_to_millis(self.received_at) - self.svix_timestamp.saturating_mul(1000)
    }
}

/// A row of the `users` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Clerk's user id (`user_…`), the primary key.
    pub id: String,
    /// The primary email address (unique); `None` when the user has none, when a newer user
    /// holds it, or once the user is deleted.
    pub email: Option<String>,
    /// Given name (`firstName`).
    pub first_name: Option<String>,
    /// Family name (`lastName`).
    pub last_name: Option<String>,
    /// First and last name joined with a space (see [`crate::sync::full_name`]).
    pub name: Option<String>,
    /// Clerk's URL of the profile image (`imageUrl`).
    pub image_url: Option<String>,
    /// The username (unique); `None` as for `email`.
    pub username: Option<String>,
    /// When Clerk created the user (`clerkCreatedAt`, UTC).
    pub clerk_created_at: Option<NaiveDateTime>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`, UTC): the
    /// row's version, which only a newer snapshot replaces.
    pub clerk_updated_at: Option<NaiveDateTime>,
    /// When the row was first written (`createdAt`, UTC).
    pub created_at: NaiveDateTime,
    /// When the row was last written (`updatedAt`, UTC).
    pub updated_at: NaiveDateTime,
    /// Set when the user was deleted and the row kept (soft delete, or a foreign key of the
    /// app's kept it); `None` for a live user.
    pub deleted_at: Option<NaiveDateTime>,
}

/// Row written to the inbox for every processed event.
pub(crate) struct InboxRecord<'a> {
    pub(crate) svix_id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<&'a str>,
    pub(crate) payload: &'a str,
    pub(crate) svix_timestamp: i64,
    pub(crate) received_at: NaiveDateTime,
}

/// A users-table row from a database row of either driver (by column name), its id read
/// already.
macro_rules! user_record_from {
    ($row:expr, $id:expr) => {
        $crate::store::UserRecord {
            id: $id,
            email: $row.try_get("email")?,
            first_name: $row.try_get("firstName")?,
            last_name: $row.try_get("lastName")?,
            name: $row.try_get("name")?,
            image_url: $row.try_get("imageUrl")?,
            username: $row.try_get("username")?,
            clerk_created_at: $row.try_get("clerkCreatedAt")?,
            clerk_updated_at: $row.try_get("clerkUpdatedAt")?,
            created_at: $row.try_get("createdAt")?,
            updated_at: $row.try_get("updatedAt")?,
            deleted_at: $row.try_get("deletedAt")?,
        }
    };
}
pub(crate) use user_record_from;

/// An inbox row from a database row of either driver (both have `try_get` by column name):
/// `$payload` is the payload (read, or `()` where a query leaves it out).
macro_rules! stored_event_from {
    ($row:expr, $payload:expr) => {
        $crate::store::StoredEvent {
            svix_id: $row.try_get("svix_id")?,
            event_type: $row.try_get("event_type")?,
            user_id: $row.try_get("user_id")?,
            outcome: $row.try_get("outcome")?,
            error: $row.try_get("error")?,
            payload: $payload,
            svix_timestamp: $row.try_get("svix_timestamp")?,
            received_at: $row.try_get("received_at")?,
            replayed_at: $row.try_get("replayed_at")?,
        }
    };
}
pub(crate) use stored_event_from;

/// Runs a read (or a single statement) on a pooled connection: `$pg` with a tokio-postgres
/// client on PostgreSQL, `$lite` with an sqlx connection (`Statements`) on SQLite.
#[allow(clippy::crate_in_macro_def)]
macro_rules! on_connection {
    ($store:expr, |$client:ident| $pg:expr, |$conn:ident| $lite:expr) => {
        async {
            match &$store.pool {
                crate::store::Pool::Postgres(pool) => {
                    let object = pool.get().await?;
                    let $client: &tokio_postgres::Client = &object;
                    Ok::<_, crate::store::DatabaseError>($pg.await?)
                }
                crate::store::Pool::Sqlite(pool) => {
                    let mut connection = pool.acquire().await?;
                    let $conn = &mut *connection;
                    Ok($lite.await?)
                }
            }
        }
        .await
        .map_err(crate::store::StoreError::Unavailable)
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
pub(crate) async fn retrying<T, F, Fut>(mut transaction: F) -> Result<T, DatabaseError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DatabaseError>>,
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

/// The current time at the millisecond precision of `TIMESTAMP(3)`.
pub(crate) fn now() -> NaiveDateTime {
    millis_to_datetime(Utc::now().timestamp_millis())
}

fn millis_to_datetime(millis: ClerkMillis) -> NaiveDateTime {
    DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .naive_utc()
}

fn datetime_to_millis(t: NaiveDateTime) -> ClerkMillis {
    t.and_utc().timestamp_millis()
}
