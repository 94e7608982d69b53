//! Figures for the operators' status page (`GET /status`), read in one read-only transaction.
//!
//! Every read is bounded: the inbox by a time window or a LIMIT on `received_at`, the failed
//! events by a LIMIT, and the users count (the one read that has to look at every row) by a
//! statement timeout on PostgreSQL, past which PostgreSQL's own estimate is shown instead.
//! Payloads are never read here: they can be large, and the page does not show them.

use chrono::NaiveDateTime;
use sqlx::Row;

use super::{Pool, Store, StoreError, StoredEvent};

/// Longest any one of the page's statements may run on PostgreSQL.
const STATEMENT_TIMEOUT_MS: u32 = 2_000;

/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// An inbox row read without its payload (see [`StoredEvent`]).
pub type EventSummary = StoredEvent<()>;

/// Events of one outcome received in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    pub outcome: String,
    pub count: u64,
}

/// Rows of the `users` table: counted, or (when counting takes longer than the statement
/// timeout) PostgreSQL's estimate of all rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCounts {
    /// `None` when not counted.
    pub live: Option<u64>,
    pub soft_deleted: Option<u64>,
    /// PostgreSQL's estimate of all rows when they were not counted (`None` before the table
    /// was first analysed).
    pub estimated_rows: Option<u64>,
}

impl UserCounts {
    fn exact(live: u64, soft_deleted: u64) -> UserCounts {
        UserCounts {
            live: Some(live),
            soft_deleted: Some(soft_deleted),
            estimated_rows: None,
        }
    }
}

/// Everything the page shows from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFigures {
    pub per_minute: Vec<MinuteCount>,
    /// Newest first.
    pub latest: Vec<EventSummary>,
    /// Newest first.
    pub failed: Vec<EventSummary>,
    /// Failed events, counted up to the limit asked for.
    pub failed_count: u64,
    pub users: UserCounts,
}

/// Reads the figures on one connection of either dialect. `$ns` is the prefix of clerk-sync's
/// tables, `$minute` the SQL turning `received_at` into minutes since the epoch.
macro_rules! read_figures {
    ($conn:expr, $window:expr, $limits:expr, ns = $ns:literal, minute = $minute:literal) => {
        async {
            let (since, until): (NaiveDateTime, NaiveDateTime) = $window;
            let (latest, failed, failed_cap): (i64, i64, i64) = $limits;
            let per_minute = sqlx::query(concat!(
                "SELECT ", $minute, " AS minute, outcome, count(*) AS n FROM ", $ns, "inbox
                 WHERE received_at >= $1 AND received_at < $2
                 GROUP BY 1, 2"
            ))
            .bind(since)
            .bind(until)
            .fetch_all(&mut *$conn)
            .await?
            .iter()
            .map(|row| {
                Ok(MinuteCount {
                    minute: row.try_get("minute")?,
                    outcome: row.try_get("outcome")?,
                    count: row.try_get::<i64, _>("n")?.max(0) as u64,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let latest = sqlx::query(concat!(
                "SELECT svix_id, event_type, user_id, outcome, error, svix_timestamp, received_at,
                        replayed_at
                 FROM ", $ns, "inbox ORDER BY received_at DESC, svix_id LIMIT $1"
            ))
            .bind(latest)
            .fetch_all(&mut *$conn)
            .await?
            .iter()
            .map(event_summary)
            .collect::<Result<Vec<_>, _>>()?;
            let failed = sqlx::query(concat!(
                "SELECT svix_id, event_type, user_id, outcome, error, svix_timestamp, received_at,
                        replayed_at
                 FROM ", $ns, "inbox WHERE outcome = 'failed'
                 ORDER BY received_at DESC, svix_id LIMIT $1"
            ))
            .bind(failed)
            .fetch_all(&mut *$conn)
            .await?
            .iter()
            .map(event_summary)
            .collect::<Result<Vec<_>, _>>()?;
            let failed_count: i64 = sqlx::query_scalar(concat!(
                "SELECT count(*) FROM (SELECT 1 FROM ", $ns, "inbox WHERE outcome = 'failed' LIMIT $1) AS f"
            ))
            .bind(failed_cap)
            .fetch_one(&mut *$conn)
            .await?;
            Ok::<_, sqlx::Error>(StatusFigures {
                per_minute,
                latest,
                failed,
                failed_count: failed_count.max(0) as u64,
                users: UserCounts::exact(0, 0),
            })
        }
    };
}

/// Live and soft-deleted rows, in one pass over the table.
const COUNT_USERS: &str =
    r#"SELECT count(*) AS total, count("deletedAt") AS soft_deleted FROM {users}"#;

impl Store {
    /// The status page's figures, from one consistent snapshot of the database: events
    /// received in `[since, until)` counted per minute and outcome, the `latest` newest events,
    /// the `failed` newest failed ones, the failed events counted up to `count_failed_up_to`,
    /// and the users.
    pub async fn status_figures(
        &self,
        since: NaiveDateTime,
        until: NaiveDateTime,
        latest: i64,
        failed: i64,
        count_failed_up_to: i64,
    ) -> Result<StatusFigures, StoreError> {
        let count_users = self.users.sql(COUNT_USERS);
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
                    .map_err(StoreError::Unavailable)?;
                // SET LOCAL: ends with the transaction, so it works through a
                // transaction-mode pooler and never leaks to another user of the connection.
                sqlx::query(&format!(
                    "SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"
                ))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Unavailable)?;
                let mut figures = read_figures!(
                    tx,
                    (since, until),
                    (latest, failed, count_failed_up_to),
                    ns = "clerk_sync.",
                    minute = "floor(extract(epoch FROM received_at) / 60)::bigint"
                )
                .await
                .map_err(StoreError::Unavailable)?;
                // Last: a cancelled statement aborts the transaction.
                let counted = sqlx::query(&count_users).fetch_one(&mut *tx).await;
                figures.users = match counted {
                    Ok(row) => exact_counts(&row).map_err(StoreError::Unavailable)?,
                    Err(e)
                        if e.as_database_error().and_then(|d| d.code()).as_deref()
                            == Some(QUERY_CANCELED) =>
                    {
                        drop(tx);
                        let rows: Option<f32> = sqlx::query_scalar(
                            "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)",
                        )
                        .bind(self.users.quoted())
                        .fetch_optional(pool)
                        .await
                        .map_err(StoreError::Unavailable)?;
                        UserCounts {
                            live: None,
                            soft_deleted: None,
                            estimated_rows: rows.filter(|r| *r >= 0.0).map(|r| r as u64),
                        }
                    }
                    Err(e) => return Err(StoreError::Unavailable(e)),
                };
                Ok(figures)
            }
            Pool::Sqlite(pool) => {
                // A deferred transaction reads one snapshot (WAL) and takes no write lock.
                let mut tx = pool.begin().await.map_err(StoreError::Unavailable)?;
                let mut figures = read_figures!(
                    tx,
                    (since, until),
                    (latest, failed, count_failed_up_to),
                    ns = "clerk_sync_",
                    minute = "CAST(strftime('%s', received_at) AS INTEGER) / 60"
                )
                .await
                .map_err(StoreError::Unavailable)?;
                let row = sqlx::query(&count_users)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::Unavailable)?;
                figures.users = exact_counts(&row).map_err(StoreError::Unavailable)?;
                Ok(figures)
            }
        }
    }
}

fn exact_counts<R: Row>(row: &R) -> Result<UserCounts, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let total = row.try_get::<i64, _>("total")?.max(0) as u64;
    let soft_deleted = row.try_get::<i64, _>("soft_deleted")?.max(0) as u64;
    Ok(UserCounts::exact(
        total.saturating_sub(soft_deleted),
        soft_deleted,
    ))
}

fn event_summary<R: Row>(row: &R) -> Result<EventSummary, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> NaiveDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EventSummary {
        svix_id: row.try_get("svix_id")?,
        event_type: row.try_get("event_type")?,
        user_id: row.try_get("user_id")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        payload: (),
        svix_timestamp: row.try_get("svix_timestamp")?,
        received_at: row.try_get("received_at")?,
        replayed_at: row.try_get("replayed_at")?,
    })
}
