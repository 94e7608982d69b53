//! Persistence: the `users` table and clerk-sync's own bookkeeping, on PostgreSQL or SQLite.
//!
//! One event is one transaction: read what the event touches, let [`crate::sync`] decide, write
//! the decision and the inbox row together, so an event's effect and its `svix-id` land
//! atomically (exactly-once effect over at-least-once delivery). The flows live in `flow` once;
//! the SQL both backends share in `statements`; the dialect modules say how to reach their
//! database and write what each writes its own way.

mod adopt;
mod deliveries;
mod error;
mod flow;
mod migrations;
mod organizations;
mod postgres;
mod retention;
mod sqlite;
mod statements;
mod status;
mod target;
mod tombstones;
mod users_table;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::clerk::{ClerkEvent, EventKind, parse_event};
use crate::sync::{ClerkMillis, DeleteMode, Outcome, UserSnapshot};
use flow::Item;

pub use deliveries::DeliveryQueue;
pub(crate) use deliveries::{Delivery, WriterSettings};
use error::Refusal;
pub use error::{DatabaseError, StoreError};
pub use migrations::MigrationReport;
pub use organizations::{MembershipRecord, OrganizationRecord};
pub use retention::INBOX_EXACT_COUNT_UP_TO;
use statements::Statements;
pub(crate) use status::{EventSummary, OrganizationCounts};
pub use target::DatabaseTarget;
pub use tombstones::{Tombstone, TombstoneRemoval};
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

/// A Clerk event to apply, and where it came from ([`Store::record_event`]). Every source goes
/// through the same rules.
#[derive(Debug, Clone)]
pub struct IncomingEvent<'a> {
    /// The event, as [`crate::clerk::parse_event`] read it.
    pub event: &'a ClerkEvent,
    /// Where it came from: decides whether it is deduplicated and kept in the inbox.
    pub source: Source<'a>,
}

/// Where an event came from, which decides what the inbox keeps of it.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// A verified webhook delivery: deduplicated by `svix-id` and stored in the inbox.
    Delivery(DeliveryRecord<'a>),
    /// A stored event applied again: its inbox row gets the new outcome.
    Replay {
        /// The stored event's `svix-id`.
        svix_id: &'a str,
    },
    /// Read from Clerk's API (fallback fetch, profile update, reconciliation): not stored.
    Clerk,
}

/// What the inbox keeps of a verified webhook delivery.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRecord<'a> {
    /// The `svix-id` header: the same for every attempt of one message, so a redelivery is
    /// recognised as a duplicate.
    pub svix_id: &'a str,
    /// The `svix-timestamp` header: Unix seconds when Svix signed this attempt.
    pub svix_timestamp: i64,
    /// The raw body, kept for inspection and replay.
    pub payload: &'a str,
}

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

/// What applying one snapshot of a page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The snapshot's user id.
    pub user_id: String,
    /// What applying it did (in a dry run: would do).
    pub outcome: Outcome,
    /// The row's `clerkUpdatedAt` before (ms), if there was a row.
    pub previous: Option<ClerkMillis>,
    /// The snapshot's `updated_at` (ms).
    pub clerk_updated_at: ClerkMillis,
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
    svix_id: &'a str,
    event_type: &'a str,
    user_id: Option<&'a str>,
    outcome: Outcome,
    error: Option<&'a str>,
    payload: &'a str,
    svix_timestamp: i64,
    received_at: NaiveDateTime,
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

    /// Runs the one flow (`flow::run`) for `items`, trying again after a lost race.
    async fn run(
        &self,
        items: &[Item<'_>],
        mode: DeleteMode,
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<flow::Done, DatabaseError> {
        retrying(|| flow::run(self, items, mode, checkpoint, dry_run)).await
    }

    /// Applies one event exactly once. Races with concurrent events are retried here; an
    /// event the database refuses for its content is stored as failed; anything else is
    /// [`StoreError::Unavailable`], and the sender should try again later.
    pub async fn record_event(
        &self,
        event: &IncomingEvent<'_>,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        self.record_item(&Item::event(event.event, event.source.clone()), mode)
            .await
    }

    pub(super) async fn record_item(
        &self,
        item: &Item<'_>,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let items = std::slice::from_ref(item);
        let mut result = self.run(items, mode, None, false).await;
        if let (Err(error), flow::Effect::OrganizationDeletion(organization_id), DeleteMode::Hard) =
            (&result, item.effect, mode)
            && error.is_foreign_key_violation()
        {
            // As for users below: an app's table points at the organization, so its row stays,
            // marked deleted (memberships removed, slug freed).
            tracing::warn!(
                organization_id = %organization_id,
                constraint = error.constraint().unwrap_or("(not named by SQLite)"),
                table = error.table().unwrap_or("(not named by SQLite)"),
                "organization.deleted: a foreign key keeps the organization's row, so it was \
                 kept with deletedAt set; choose ON DELETE CASCADE or SET NULL for that \
                 reference to delete such rows"
            );
            crate::metrics::delete_kept_by_foreign_key();
            result = self.run(items, DeleteMode::Soft, None, false).await;
        }
        if let (Err(error), flow::Effect::Deletion(user_id), DeleteMode::Hard) =
            (&result, item.effect, mode)
            && error.is_foreign_key_violation()
        {
            // The app's own table still points at the user (e.g. Prisma's default ON DELETE
            // RESTRICT): no retry can delete the row, so its personal data goes instead.
            tracing::warn!(
                user_id = %user_id,
                constraint = error.constraint().unwrap_or("(not named by SQLite)"),
                table = error.table().unwrap_or("(not named by SQLite)"),
                "user.deleted: a foreign key keeps the user's row, so it was kept with its \
                 personal data erased and deletedAt set; choose ON DELETE CASCADE or SET NULL \
                 for that reference to delete such rows (docs/migrating-from-nextjs.md)"
            );
            crate::metrics::delete_kept_by_foreign_key();
            result = self.run(items, DeleteMode::Erase, None, false).await;
        }
        match result {
            Ok(done) => Ok(done.outcomes[0]),
            Err(error) if error.is_rejected_data() => {
                let refusal = error.refusal_reason();
                if matches!(item.source, Source::Clerk) {
                    return Err(StoreError::Rejected(refusal));
                }
                let reason = match item.effect {
                    flow::Effect::Failed(reason) => format!("{reason}; then {refusal}"),
                    _ => refusal,
                };
                self.record_refused(item, &reason).await
            }
            Err(error) => Err(StoreError::Unavailable(error)),
        }
    }

    /// Stores an event the database refused as failed, in a transaction of its own (the
    /// refused one rolled back), so it is answered 200 and a redelivery is a duplicate. Values
    /// the inbox itself cannot hold are stored in a form it can (see `flow::record_refused`).
    async fn record_refused(&self, item: &Item<'_>, reason: &str) -> Result<Outcome, StoreError> {
        match retrying(|| flow::record_refused(self, item, reason)).await {
            Ok(Outcome::Duplicate) => Ok(Outcome::Duplicate),
            Ok(outcome) => {
                tracing::warn!(error = %reason, "event stored as failed");
                Ok(outcome)
            }
            Err(error) => {
                tracing::error!(
                    error = %error, refused = %reason,
                    "the database refused an event, and then storing it as failed"
                );
                Err(StoreError::Unavailable(error))
            }
        }
    }

    /// Applies deliveries that arrived together in one transaction, one result each. When the
    /// database refuses the batch for something one event carries, each event is applied on
    /// its own, so one bad event cannot hold back the others; when the database is away,
    /// every event gets that error.
    pub async fn record_deliveries(
        &self,
        deliveries: &[(&ClerkEvent, DeliveryRecord<'_>)],
        mode: DeleteMode,
    ) -> Vec<Result<Outcome, StoreError>> {
        let items: Vec<Item<'_>> = deliveries
            .iter()
            .map(|(event, delivery)| Item::delivery(event, *delivery))
            .collect();
        match self.run(&items, mode, None, false).await {
            Ok(done) => return done.outcomes.into_iter().map(Ok).collect(),
            Err(error) if error.is_refusal_by_database() => {
                tracing::debug!(%error, "batch refused; applying its events one by one");
            }
            Err(error) => {
                let error = std::sync::Arc::new(error);
                return items
                    .iter()
                    .map(|_| Err(StoreError::UnavailableForBatch(error.clone())))
                    .collect();
            }
        }
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            results.push(self.record_item(item, mode).await);
        }
        results
    }

    /// Applies a user snapshot read from Clerk (fallback fetch, profile update) through the
    /// same rules as a webhook.
    pub async fn apply_snapshot(
        &self,
        snapshot: &UserSnapshot,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        self.record_item(&Item::snapshot(snapshot), mode).await
    }

    /// Deletes a user Clerk no longer has (reconciliation), by the rules of `user.deleted`.
    pub(crate) async fn apply_deletion(
        &self,
        user_id: &str,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let item = Item {
            event_type: "user.deleted",
            user_id: Some(user_id),
            effect: flow::Effect::Deletion(user_id),
            source: Source::Clerk,
        };
        self.record_item(&item, mode).await
    }

    /// Applies a page of snapshots in one transaction, snapshot by snapshot by the webhook
    /// rules. With a checkpoint, its state key is written in the same transaction, so a
    /// resumed run starts exactly after the last page that landed. A dry run decides and
    /// writes nothing.
    pub async fn apply_snapshots(
        &self,
        snapshots: &[UserSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<Vec<Applied>, StoreError> {
        let items: Vec<Item<'_>> = snapshots.iter().map(Item::snapshot).collect();
        let done = self
            .apply_page(&items, "a user's", checkpoint, dry_run)
            .await?;
        Ok(snapshots
            .iter()
            .zip(done.outcomes)
            .map(|(snapshot, outcome)| Applied {
                user_id: snapshot.id.clone(),
                outcome,
                previous: done.previous.get(&snapshot.id).copied().flatten(),
                clerk_updated_at: snapshot.updated_at,
            })
            .collect())
    }

    /// A page read from Clerk's API in one transaction (see [`Store::apply_snapshots`]);
    /// `what` names whose data the database refused, for the message.
    pub(super) async fn apply_page(
        &self,
        items: &[Item<'_>],
        what: &str,
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<flow::Done, StoreError> {
        self.run(items, DeleteMode::Hard, checkpoint, dry_run)
            .await
            .map_err(|e| {
                if e.is_rejected_data() {
                    StoreError::Rejected(format!("the database refused {what} data: {e}"))
                } else {
                    StoreError::Unavailable(e)
                }
            })
    }

    /// Re-applies a stored event by the same rules as its first delivery; `None` when there
    /// is no such event.
    pub async fn replay(
        &self,
        svix_id: &str,
        mode: DeleteMode,
    ) -> Result<Option<Outcome>, StoreError> {
        let Some(stored) = self.stored_event(svix_id).await? else {
            return Ok(None);
        };
        let event = match parse_event(stored.payload.as_bytes()) {
            Ok(event) => event,
            Err(e) => ClerkEvent {
                event_type: stored.event_type.clone(),
                kind: EventKind::Unusable {
                    user_id: stored.user_id.clone(),
                    reason: e.to_string(),
                },
            },
        };
        self.record_item(&Item::event(&event, Source::Replay { svix_id }), mode)
            .await
            .map(Some)
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
async fn retrying<T, F, Fut>(mut transaction: F) -> Result<T, DatabaseError>
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
