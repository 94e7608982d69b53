//! Persistence: the `users` table and clerk-sync's own bookkeeping, on PostgreSQL or SQLite.
//!
//! One event is one transaction: read what the event touches, let [`crate::sync`] decide, write
//! the plan and the inbox row together, so an event's effect and its `svix-id` land atomically
//! (exactly-once effect over at-least-once delivery). The flow lives here once; the two dialect
//! modules only say how to reach their database and where their tables are.

mod migrations;
mod postgres;
mod sqlite;

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::clerk::{ClerkEvent, EventKind};
use crate::config::DatabaseTarget;
use crate::sync::{self, Change, ClerkMillis, DeleteMode, Outcome, SyncState, UserSnapshot};

pub use migrations::MigrationReport;

/// How often a transaction that lost a race (deadlock, serialization failure, busy SQLite file)
/// is tried again before the delivery is answered with 503.
const CONFLICT_RETRIES: u32 = 8;

/// A connection pool to the configured database.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed in a way a later attempt can get past.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database refused the user's data itself (e.g. a NUL character in a name).
    #[error("{0}")]
    Rejected(String),
    /// Configuration or schema problems a person has to fix; the text says how.
    #[error("{0}")]
    Setup(String),
}

/// A Clerk event to apply: from a webhook delivery, or made from a user fetched from Clerk's
/// API (no delivery, nothing recorded in the inbox). Both go through the same rules.
#[derive(Debug, Clone)]
pub struct IncomingEvent<'a> {
    pub event: &'a ClerkEvent,
    pub delivery: Option<DeliveryRecord<'a>>,
}

/// What the inbox keeps of a verified webhook delivery.
#[derive(Debug, Clone)]
pub struct DeliveryRecord<'a> {
    pub svix_id: &'a str,
    pub svix_timestamp: i64,
    /// The raw body, kept for inspection and replay.
    pub payload: &'a str,
}

impl IncomingEvent<'_> {
    fn svix_id(&self) -> Option<&str> {
        self.delivery.as_ref().map(|d| d.svix_id)
    }

    /// Advisory-lock keys: every event touching a user id, email or username takes these, so
    /// events that could interfere run one after the other while unrelated ones run in parallel.
    fn lock_keys(&self) -> Vec<String> {
        let mut keys = match &self.event.kind {
            EventKind::UserSnapshot(s) => {
                let mut keys = vec![format!("user:{}", s.id)];
                keys.extend(s.email.as_ref().map(|e| format!("email:{e}")));
                keys.extend(s.username.as_ref().map(|u| format!("username:{u}")));
                keys
            }
            EventKind::UserDeleted { user_id } => vec![format!("user:{user_id}")],
            EventKind::Unhandled | EventKind::Unusable { .. } => Vec::new(),
        };
        // One global order, so two transactions never wait on each other crosswise.
        keys.sort();
        keys
    }
}

/// A row of the `users` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub image_url: Option<String>,
    pub username: Option<String>,
    pub clerk_created_at: Option<NaiveDateTime>,
    pub clerk_updated_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
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

/// The statements one event needs, written once per dialect (see `event_tx_impl!`).
pub(crate) trait EventTx {
    /// Rows sharing the event's user id, email or username, whether the user is tombstoned,
    /// and whether this `svix-id` was processed before, in one round trip.
    async fn load_state(
        &mut self,
        svix_id: Option<&str>,
        user_id: &str,
        email: Option<&str>,
        username: Option<&str>,
    ) -> Result<(SyncState, bool), sqlx::Error>;

    async fn apply_change(
        &mut self,
        change: &Change,
        now: NaiveDateTime,
    ) -> Result<(), sqlx::Error>;

    /// A user's row and whether its id is tombstoned, in one round trip.
    async fn user(&mut self, id: &str) -> Result<(Option<UserRecord>, bool), sqlx::Error>;

    /// Returns false when the `svix-id` is already there.
    async fn insert_inbox(&mut self, record: &InboxRecord<'_>) -> Result<bool, sqlx::Error>;
}

/// The whole effect of one event, inside the caller's transaction. `Duplicate` means the caller
/// must roll back.
async fn apply_event<T: EventTx>(
    tx: &mut T,
    event: &IncomingEvent<'_>,
    mode: DeleteMode,
) -> Result<Outcome, sqlx::Error> {
    let now = now();
    let mut error = None;
    let outcome = match &event.event.kind {
        EventKind::UserSnapshot(snapshot) => {
            let (state, seen) = tx
                .load_state(
                    event.svix_id(),
                    &snapshot.id,
                    snapshot.email.as_deref(),
                    snapshot.username.as_deref(),
                )
                .await?;
            if seen {
                return Ok(Outcome::Duplicate);
            }
            let plan = sync::plan_snapshot(snapshot, &state);
            for change in &plan.changes {
                tx.apply_change(change, now).await?;
            }
            plan.outcome
        }
        EventKind::UserDeleted { user_id } => {
            let (state, seen) = tx.load_state(event.svix_id(), user_id, None, None).await?;
            if seen {
                return Ok(Outcome::Duplicate);
            }
            let plan = sync::plan_deletion(user_id, &state, mode);
            for change in &plan.changes {
                tx.apply_change(change, now).await?;
            }
            plan.outcome
        }
        EventKind::Unhandled => Outcome::Ignored,
        EventKind::Unusable { reason, .. } => {
            error = Some(reason.as_str());
            Outcome::Failed
        }
    };
    let Some(delivery) = &event.delivery else {
        return Ok(outcome);
    };
    let inserted = tx
        .insert_inbox(&InboxRecord {
            svix_id: delivery.svix_id,
            event_type: &event.event.event_type,
            user_id: event.event.user_id(),
            outcome,
            error,
            payload: delivery.payload,
            svix_timestamp: delivery.svix_timestamp,
            received_at: now,
        })
        .await?;
    Ok(if inserted {
        outcome
    } else {
        Outcome::Duplicate
    })
}

/// Stores an event that could not be applied, with the reason, for a later replay.
async fn record_failure<T: EventTx>(
    tx: &mut T,
    event: &ClerkEvent,
    delivery: &DeliveryRecord<'_>,
    error: &str,
) -> Result<Outcome, sqlx::Error> {
    let inserted = tx
        .insert_inbox(&InboxRecord {
            svix_id: delivery.svix_id,
            event_type: &event.event_type,
            user_id: event.user_id(),
            outcome: Outcome::Failed,
            error: Some(error),
            payload: delivery.payload,
            svix_timestamp: delivery.svix_timestamp,
            received_at: now(),
        })
        .await?;
    Ok(if inserted {
        Outcome::Failed
    } else {
        Outcome::Duplicate
    })
}

impl Store {
    /// Opens a pool. Connections are made on first use, so a server can start (and say it is
    /// not ready) while the database is still away.
    pub async fn connect(
        target: &DatabaseTarget,
        pool: &PoolSettings,
    ) -> Result<Store, StoreError> {
        match target {
            DatabaseTarget::Postgres { url } => postgres::connect(url, pool).map(Store::Postgres),
            DatabaseTarget::Sqlite { path } => sqlite::connect(path, pool).await.map(Store::Sqlite),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending schema migrations (safe to run from several processes at once).
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        match self {
            Store::Postgres(pool) => migrations::run_postgres(pool).await,
            Store::Sqlite(pool) => migrations::run_sqlite(pool).await,
        }
    }

    /// Opens one connection outside the pool, so a failure reports its real cause (refused,
    /// bad password, TLS) rather than the pool's "timed out".
    pub async fn check_connection(&self, target: &DatabaseTarget) -> Result<(), StoreError> {
        use sqlx::Connection;
        let result = match self {
            Store::Postgres(pool) => sqlx::PgConnection::connect_with(&pool.connect_options())
                .await
                .map(drop),
            Store::Sqlite(pool) => sqlx::SqliteConnection::connect_with(&pool.connect_options())
                .await
                .map(drop),
        };
        result.map_err(|e| StoreError::Setup(format!("cannot connect to {target}: {e}")))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let result = match self {
            Store::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Store::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        };
        result.map_err(StoreError::Unavailable)
    }

    /// Applies a user snapshot fetched from Clerk (fallback fetch, profile update, backfill)
    /// through the same rules as a webhook.
    pub async fn apply_snapshot(
        &self,
        snapshot: &UserSnapshot,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let event = ClerkEvent {
            event_type: "user.fetched".into(),
            kind: EventKind::UserSnapshot(snapshot.clone()),
        };
        self.record_event(
            &IncomingEvent {
                event: &event,
                delivery: None,
            },
            mode,
        )
        .await
    }

    /// The user's row (soft-deleted ones included) and whether the id is tombstoned.
    pub async fn user(&self, id: &str) -> Result<(Option<UserRecord>, bool), StoreError> {
        let result = match self {
            Store::Postgres(pool) => postgres::user(pool, id).await,
            Store::Sqlite(pool) => sqlite::user(pool, id).await,
        };
        result.map_err(StoreError::Unavailable)
    }

    /// Applies one verified event exactly once. Races with concurrent events are retried here;
    /// an event the database refuses for its content is stored as failed; anything else is
    /// [`StoreError::Unavailable`], and the sender should try again later.
    pub async fn record_event(
        &self,
        event: &IncomingEvent<'_>,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let mut attempt = 0;
        loop {
            let result = match self {
                Store::Postgres(pool) => postgres::record_event(pool, event, mode).await,
                Store::Sqlite(pool) => sqlite::record_event(pool, event, mode).await,
            };
            let error = match result {
                Ok(outcome) => return Ok(outcome),
                Err(error) => error,
            };
            if is_lost_race(&error) && attempt < CONFLICT_RETRIES {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            if is_rejected_data(&error) {
                let reason = format!("the database refused the event's data: {error}");
                let Some(delivery) = &event.delivery else {
                    return Err(StoreError::Rejected(reason));
                };
                let result = match self {
                    Store::Postgres(pool) => {
                        postgres::record_failure(pool, event.event, delivery, &reason).await
                    }
                    Store::Sqlite(pool) => {
                        sqlite::record_failure(pool, event.event, delivery, &reason).await
                    }
                };
                return result.map_err(StoreError::Unavailable);
            }
            return Err(StoreError::Unavailable(error));
        }
    }
}

/// Short randomized waits: the competing transaction usually finishes within milliseconds.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    Duration::from_millis(base + rand::random_range(0..base))
}

/// A transaction that lost to a concurrent one; trying again gives a different result.
fn is_lost_race(error: &sqlx::Error) -> bool {
    let Some(db) = error.as_database_error() else {
        return false;
    };
    if matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation) {
        return true;
    }
    match db.code().as_deref() {
        // serialization_failure, deadlock_detected, lock_not_available
        Some("40001" | "40P01" | "55P03") => true,
        // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes
        Some(code) => matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6)),
        None => false,
    }
}

/// The database refused the values themselves (PostgreSQL class 22, e.g. a NUL character in a
/// name): no retry can fix that event.
fn is_rejected_data(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("22"))
}

/// The current time at the millisecond precision of `TIMESTAMP(3)`.
fn now() -> NaiveDateTime {
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

/// Implements [`EventTx`] for a dialect's connection type. The SQL is the same on both backends
/// (`$n` placeholders work on SQLite too); only where clerk-sync's own tables live differs:
/// a `clerk_sync` schema on PostgreSQL, `clerk_sync_`-prefixed tables on SQLite.
macro_rules! event_tx_impl {
    ($conn:ty, $ns:literal) => {
        impl $crate::store::EventTx for $conn {
            async fn load_state(
                &mut self,
                svix_id: Option<&str>,
                user_id: &str,
                email: Option<&str>,
                username: Option<&str>,
            ) -> Result<($crate::sync::SyncState, bool), sqlx::Error> {
                use sqlx::Row;
                let rows = sqlx::query(concat!(
                    r#"SELECT 'u' AS kind, id, email, username, "clerkUpdatedAt", "deletedAt" IS NOT NULL AS deleted
                       FROM users WHERE id = $2 OR email = $3 OR username = $4
                       UNION ALL
                       SELECT 't', user_id, NULL, NULL, NULL, FALSE FROM "#, $ns, r#"tombstones WHERE user_id = $2
                       UNION ALL
                       SELECT 'i', svix_id, NULL, NULL, NULL, FALSE FROM "#, $ns, r#"inbox WHERE svix_id = $1"#
                ))
                .bind(svix_id)
                .bind(user_id)
                .bind(email)
                .bind(username)
                .fetch_all(&mut *self)
                .await?;
                let mut state = $crate::sync::SyncState::default();
                let mut seen = false;
                for row in rows {
                    match row.try_get::<&str, _>("kind")? {
                        "t" => state.tombstoned = true,
                        "i" => seen = true,
                        _ => state.users.push($crate::sync::StoredUser {
                            id: row.try_get("id")?,
                            email: row.try_get("email")?,
                            username: row.try_get("username")?,
                            clerk_updated_at: row
                                .try_get::<Option<chrono::NaiveDateTime>, _>("clerkUpdatedAt")?
                                .map($crate::store::datetime_to_millis),
                            deleted: row.try_get("deleted")?,
                        }),
                    }
                }
                Ok((state, seen))
            }

            async fn apply_change(
                &mut self,
                change: &$crate::sync::Change,
                now: chrono::NaiveDateTime,
            ) -> Result<(), sqlx::Error> {
                use $crate::sync::Change;
                let query = match change {
                    Change::ReleaseEmail { from_user, email } => sqlx::query(
                        r#"UPDATE users SET email = NULL, "updatedAt" = $3 WHERE id = $1 AND email = $2"#,
                    )
                    .bind(from_user)
                    .bind(email)
                    .bind(now),
                    Change::ReleaseUsername { from_user, username } => sqlx::query(
                        r#"UPDATE users SET username = NULL, "updatedAt" = $3 WHERE id = $1 AND username = $2"#,
                    )
                    .bind(from_user)
                    .bind(username)
                    .bind(now),
                    // The WHERE clause repeats the newest-wins rule in SQL as a last line of
                    // defence; the decision itself was made under the user's lock.
                    Change::Upsert(user) => sqlx::query(
                        r#"INSERT INTO users (id, email, "firstName", "lastName", name, "imageUrl", username,
                                              "clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt")
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
                           ON CONFLICT (id) DO UPDATE SET
                             email = excluded.email, "firstName" = excluded."firstName",
                             "lastName" = excluded."lastName", name = excluded.name,
                             "imageUrl" = excluded."imageUrl", username = excluded.username,
                             "clerkCreatedAt" = excluded."clerkCreatedAt",
                             "clerkUpdatedAt" = excluded."clerkUpdatedAt", "updatedAt" = excluded."updatedAt"
                           WHERE users."clerkUpdatedAt" IS NULL OR users."clerkUpdatedAt" <= excluded."clerkUpdatedAt""#,
                    )
                    .bind(&user.id)
                    .bind(&user.email)
                    .bind(&user.first_name)
                    .bind(&user.last_name)
                    .bind(&user.name)
                    .bind(&user.image_url)
                    .bind(&user.username)
                    .bind(user.created_at.map($crate::store::millis_to_datetime))
                    .bind($crate::store::millis_to_datetime(user.updated_at))
                    .bind(now),
                    Change::DeleteRow { user_id } => {
                        sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id)
                    }
                    Change::SoftDeleteRow { user_id } => sqlx::query(
                        r#"UPDATE users SET "deletedAt" = $2, email = NULL, username = NULL, "updatedAt" = $2
                           WHERE id = $1"#,
                    )
                    .bind(user_id)
                    .bind(now),
                    Change::Tombstone { user_id } => sqlx::query(concat!(
                        "INSERT INTO ", $ns, "tombstones (user_id, deleted_at) VALUES ($1, $2)
                         ON CONFLICT (user_id) DO NOTHING"
                    ))
                    .bind(user_id)
                    .bind(now),
                };
                query.execute(&mut *self).await.map(drop)
            }

            async fn user(
                &mut self,
                id: &str,
            ) -> Result<(Option<$crate::store::UserRecord>, bool), sqlx::Error> {
                use sqlx::Row;
                let row = sqlx::query(concat!(
                    r#"SELECT u.id, u.email, u."firstName", u."lastName", u.name, u."imageUrl", u.username,
                              u."clerkCreatedAt", u."clerkUpdatedAt", u."createdAt", u."updatedAt", u."deletedAt",
                              EXISTS (SELECT 1 FROM "#, $ns, r#"tombstones t WHERE t.user_id = $1) AS tombstoned
                       FROM (SELECT 1) AS one LEFT JOIN users u ON u.id = $1"#
                ))
                .bind(id)
                .fetch_one(&mut *self)
                .await?;
                let tombstoned: bool = row.try_get("tombstoned")?;
                let Some(id) = row.try_get::<Option<String>, _>("id")? else {
                    return Ok((None, tombstoned));
                };
                let record = $crate::store::UserRecord {
                    id,
                    email: row.try_get("email")?,
                    first_name: row.try_get("firstName")?,
                    last_name: row.try_get("lastName")?,
                    name: row.try_get("name")?,
                    image_url: row.try_get("imageUrl")?,
                    username: row.try_get("username")?,
                    clerk_created_at: row.try_get("clerkCreatedAt")?,
                    clerk_updated_at: row.try_get("clerkUpdatedAt")?,
                    created_at: row.try_get("createdAt")?,
                    updated_at: row.try_get("updatedAt")?,
                    deleted_at: row.try_get("deletedAt")?,
                };
                Ok((Some(record), tombstoned))
            }

            async fn insert_inbox(
                &mut self,
                record: &$crate::store::InboxRecord<'_>,
            ) -> Result<bool, sqlx::Error> {
                let result = sqlx::query(concat!(
                    "INSERT INTO ", $ns, "inbox (svix_id, event_type, user_id, outcome, error, payload,
                                             svix_timestamp, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (svix_id) DO NOTHING"
                ))
                .bind(record.svix_id)
                .bind(record.event_type)
                .bind(record.user_id)
                .bind(record.outcome.as_str())
                .bind(record.error)
                .bind(record.payload)
                .bind(record.svix_timestamp)
                .bind(record.received_at)
                .execute(&mut *self)
                .await?;
                Ok(result.rows_affected() == 1)
            }
        }
    };
}
use event_tx_impl;
