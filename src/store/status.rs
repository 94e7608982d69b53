//! Figures for the operators' status page (`GET /status`), read in one read-only transaction.
//!
//! Every read is bounded: the inbox by a time window or a LIMIT on `received_at`, the failed
//! events by a LIMIT, and the counts of users, organizations and memberships (the reads that
//! have to look at every row) by a statement timeout on PostgreSQL, past which PostgreSQL's own
//! estimate is shown instead. Payloads are never read here: they can be large, and the page
//! does not show them.
//!
//! Also here: the one read of an organization's row that `clerk-sync trigger` needs.

use std::sync::LazyLock;

use chrono::NaiveDateTime;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::error::{DriverError, StoreError};
use super::handle::{Pool, Store};
use super::postgres::ClosingTransaction;
use super::records::StoredEvent;

/// Longest any one of the page's statements may run on PostgreSQL.
const STATEMENT_TIMEOUT_MS: u32 = 2_000;

/// A statement's parameter on PostgreSQL, with its type.
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// An inbox row read without its payload (see [`StoredEvent`]).
pub(crate) type EventSummary = StoredEvent<()>;

/// Events of one outcome received in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MinuteCount {
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    pub outcome: String,
    pub count: u64,
}

/// Rows of the `users` table: counted, or (when counting takes longer than the statement
/// timeout) PostgreSQL's estimate of all rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserCounts {
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

/// Rows of `organizations` and `organization_memberships`: counted, or (when counting takes
/// longer than the statement timeout) PostgreSQL's estimates of all rows. All `None` when they
/// could not be read at all (e.g. a database not migrated to the organization tables yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OrganizationCounts {
    /// `None` when not counted.
    pub live: Option<u64>,
    pub soft_deleted: Option<u64>,
    pub memberships: Option<u64>,
    /// Counting took too long: the estimates below stand in.
    pub estimated: bool,
    /// PostgreSQL's estimates of all rows when they were not counted (`None` before the table
    /// was first analysed).
    pub estimated_organizations: Option<u64>,
    pub estimated_memberships: Option<u64>,
}

/// Everything the page shows from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusFigures {
    pub per_minute: Vec<MinuteCount>,
    /// Newest first.
    pub latest: Vec<EventSummary>,
    /// Newest first.
    pub failed: Vec<EventSummary>,
    /// Failed events, counted up to the limit asked for.
    pub failed_count: u64,
    pub users: UserCounts,
    pub organizations: OrganizationCounts,
}

/// The statements reading the figures (all but the users count) on one dialect.
struct FigureQueries {
    /// `$1`, `$2`: the window.
    per_minute: String,
    /// `$1`: how many.
    latest: String,
    /// `$1`: how many.
    failed: String,
    /// `$1`: up to how many.
    failed_count: String,
}

impl FigureQueries {
    /// `ns` is the prefix of clerk-sync's tables, `minute` the SQL turning `received_at` into
    /// minutes since the epoch.
    fn new(ns: &str, minute: &str) -> FigureQueries {
        const SUMMARY: &str = "svix_id, event_type, user_id, outcome, error, svix_timestamp, \
                               received_at, replayed_at";
        FigureQueries {
            per_minute: format!(
                "SELECT {minute} AS minute, outcome, count(*) AS n FROM {ns}inbox
                 WHERE received_at >= $1 AND received_at < $2
                 GROUP BY 1, 2"
            ),
            latest: format!(
                "SELECT {SUMMARY} FROM {ns}inbox ORDER BY received_at DESC, svix_id LIMIT $1"
            ),
            failed: format!(
                "SELECT {SUMMARY} FROM {ns}inbox WHERE outcome = 'failed'
                 ORDER BY received_at DESC, svix_id LIMIT $1"
            ),
            failed_count: format!(
                "SELECT count(*) FROM (SELECT 1 FROM {ns}inbox WHERE outcome = 'failed' LIMIT $1) \
                 AS f"
            ),
        }
    }
}

static POSTGRES: LazyLock<FigureQueries> = LazyLock::new(|| {
    FigureQueries::new(
        "clerk_sync.",
        "floor(extract(epoch FROM received_at) / 60)::bigint",
    )
});

static SQLITE: LazyLock<FigureQueries> = LazyLock::new(|| {
    FigureQueries::new(
        "clerk_sync_",
        "CAST(strftime('%s', received_at) AS INTEGER) / 60",
    )
});

/// Reads the figures (but the users count) on one SQLite connection.
async fn read_figures_sqlite(
    conn: &mut SqliteConnection,
    (since, until): (NaiveDateTime, NaiveDateTime),
    (latest, failed, failed_cap): (i64, i64, i64),
) -> Result<StatusFigures, sqlx::Error> {
    let queries = &*SQLITE;
    let per_minute = sqlx::query(&queries.per_minute)
        .bind(since)
        .bind(until)
        .fetch_all(&mut *conn)
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
    let latest = sqlx::query(&queries.latest)
        .bind(latest)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(event_summary)
        .collect::<Result<Vec<_>, _>>()?;
    let failed = sqlx::query(&queries.failed)
        .bind(failed)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(event_summary)
        .collect::<Result<Vec<_>, _>>()?;
    let failed_count: i64 = sqlx::query_scalar(&queries.failed_count)
        .bind(failed_cap)
        .fetch_one(&mut *conn)
        .await?;
    Ok(StatusFigures {
        per_minute,
        latest,
        failed,
        failed_count: failed_count.max(0) as u64,
        users: UserCounts::exact(0, 0),
        organizations: OrganizationCounts::default(),
    })
}

/// Live and soft-deleted rows, in one pass over the table.
const COUNT_USERS: &str =
    r#"SELECT count(*) AS total, count("deletedAt") AS soft_deleted FROM {users}"#;

/// Live and soft-deleted organizations, and memberships.
const COUNT_ORGANIZATIONS: &str = r#"SELECT count(*) AS total, count("deletedAt") AS soft_deleted,
    (SELECT count(*) FROM {memberships}) AS memberships FROM {organizations}"#;

/// PostgreSQL's estimate of a table's rows; `$1` the table's (quoted) name.
const ESTIMATE_ROWS: &str = "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)";

impl Store {
    /// The status page's figures, from one consistent snapshot of the database: events
    /// received in `[since, until)` counted per minute and outcome, the `latest` newest events,
    /// the `failed` newest failed ones, the failed events counted up to `count_failed_up_to`,
    /// and the users.
    pub(crate) async fn status_figures(
        &self,
        since: NaiveDateTime,
        until: NaiveDateTime,
        latest: i64,
        failed: i64,
        count_failed_up_to: i64,
    ) -> Result<StatusFigures, StoreError> {
        let count_users = self.users.sql(COUNT_USERS);
        let count_organizations = self.users.sql(COUNT_ORGANIZATIONS);
        match &self.pool {
            Pool::Postgres(pool) => {
                self.status_figures_postgres(
                    pool,
                    (&count_users, &count_organizations),
                    (since, until),
                    (latest, failed, count_failed_up_to),
                )
                .await
            }
            Pool::Sqlite(pool) => {
                // A deferred transaction reads one snapshot (WAL) and takes no write lock.
                let mut tx = pool.begin().await.map_err(StoreError::unavailable)?;
                let mut figures = read_figures_sqlite(
                    &mut tx,
                    (since, until),
                    (latest, failed, count_failed_up_to),
                )
                .await
                .map_err(StoreError::unavailable)?;
                let row = sqlx::query(&count_users)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::unavailable)?;
                figures.users = exact_counts(&row).map_err(StoreError::unavailable)?;
                // Not knowing them leaves the rest of the page standing.
                figures.organizations = match sqlx::query(&count_organizations)
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|row| exact_organization_counts(&row))
                {
                    Ok(counts) => counts,
                    Err(e) => {
                        tracing::warn!(error = %e, "status page: cannot count organizations");
                        OrganizationCounts::default()
                    }
                };
                Ok(figures)
            }
        }
    }

    async fn status_figures_postgres(
        &self,
        pool: &super::postgres::Pool,
        (count_users, count_organizations): (&str, &str),
        (since, until): (NaiveDateTime, NaiveDateTime),
        (latest, failed, failed_cap): (i64, i64, i64),
    ) -> Result<StatusFigures, StoreError> {
        // SET LOCAL: ends with the transaction, so it works through a transaction-mode pooler
        // and never leaks to another user of the connection.
        let tx = ClosingTransaction::begin(
            pool,
            &format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
                 SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"
            ),
        )
        .await
        .map_err(StoreError::unavailable)?;
        let queries = &*POSTGRES;
        let client = tx.client();
        let window: [Param; 2] = [(&since, Type::TIMESTAMP), (&until, Type::TIMESTAMP)];
        let latest: [Param; 1] = [(&latest, Type::INT8)];
        let failed: [Param; 1] = [(&failed, Type::INT8)];
        let failed_cap: [Param; 1] = [(&failed_cap, Type::INT8)];
        // Sent together in this order (one round trip), answered in order. The counts last: a
        // cancelled statement aborts the transaction (and the statements after it).
        let (per_minute, latest, failed, failed_count, counted_users, counted_organizations) = tokio::join!(
            biased;
            client.query_typed(&queries.per_minute, &window),
            client.query_typed(&queries.latest, &latest),
            client.query_typed(&queries.failed, &failed),
            client.query_typed_one(&queries.failed_count, &failed_cap),
            client.query_typed_one(count_users, &[]),
            client.query_typed_one(count_organizations, &[]),
        );
        let figures = async {
            let per_minute = per_minute?
                .iter()
                .map(|row| {
                    Ok(MinuteCount {
                        minute: row.try_get("minute")?,
                        outcome: row.try_get("outcome")?,
                        count: row.try_get::<_, i64>("n")?.max(0) as u64,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
            let latest = latest?
                .iter()
                .map(event_summary_postgres)
                .collect::<Result<Vec<_>, _>>()?;
            let failed = failed?
                .iter()
                .map(event_summary_postgres)
                .collect::<Result<Vec<_>, _>>()?;
            let failed_count: i64 = failed_count?.try_get(0)?;
            Ok::<_, tokio_postgres::Error>(StatusFigures {
                per_minute,
                latest,
                failed,
                failed_count: failed_count.max(0) as u64,
                users: UserCounts::exact(0, 0),
                organizations: OrganizationCounts::default(),
            })
        };
        let mut figures = figures.await.map_err(StoreError::unavailable)?;
        if counted_users.is_ok() && counted_organizations.is_ok() {
            tx.commit().await.map_err(StoreError::unavailable)?;
        } else {
            // Should the ROLLBACK fail, the connection is closed instead.
            let _ = tx.rollback().await;
        }
        let timed_out = |e: &tokio_postgres::Error| e.code() == Some(&SqlState::QUERY_CANCELED);
        let users_timed_out = counted_users.as_ref().is_err_and(timed_out);
        figures.users = match counted_users {
            Ok(row) => exact_counts_postgres(&row).map_err(StoreError::unavailable)?,
            Err(e) if timed_out(&e) => UserCounts {
                live: None,
                soft_deleted: None,
                estimated_rows: self.estimate_rows(pool, self.users.quoted()).await?,
            },
            Err(e) => return Err(StoreError::unavailable(e)),
        };
        figures.organizations =
            match counted_organizations.and_then(|row| exact_organization_counts_postgres(&row)) {
                Ok(counts) => counts,
                // Timed out itself, or never ran because the users count did.
                Err(e) if timed_out(&e) || users_timed_out => OrganizationCounts {
                    estimated: true,
                    estimated_organizations: self
                        .estimate_rows(pool, &self.users.sql("{organizations}"))
                        .await?,
                    estimated_memberships: self
                        .estimate_rows(pool, &self.users.sql("{memberships}"))
                        .await?,
                    ..OrganizationCounts::default()
                },
                // Not knowing them leaves the rest of the page standing.
                Err(e) => {
                    tracing::warn!(error = %e, "status page: cannot count organizations");
                    OrganizationCounts::default()
                }
            };
        Ok(figures)
    }

    /// PostgreSQL's estimate of the rows of `table` (a quoted name), from its last ANALYZE.
    async fn estimate_rows(
        &self,
        pool: &super::postgres::Pool,
        table: &str,
    ) -> Result<Option<u64>, StoreError> {
        let estimate = async {
            let client = pool.get().await?;
            let row = client
                .query_typed_opt(ESTIMATE_ROWS, &[(&table, Type::TEXT)])
                .await?;
            Ok::<Option<f32>, DriverError>(row.map(|row| row.try_get(0)).transpose()?)
        };
        let rows = estimate.await.map_err(StoreError::unavailable)?;
        Ok(rows.filter(|r| *r >= 0.0).map(|r| r as u64))
    }
}

fn exact_counts(row: &SqliteRow) -> Result<UserCounts, sqlx::Error> {
    let total = row.try_get::<i64, _>("total")?.max(0) as u64;
    let soft_deleted = row.try_get::<i64, _>("soft_deleted")?.max(0) as u64;
    Ok(UserCounts::exact(
        total.saturating_sub(soft_deleted),
        soft_deleted,
    ))
}

fn exact_counts_postgres(row: &tokio_postgres::Row) -> Result<UserCounts, tokio_postgres::Error> {
    let total = row.try_get::<_, i64>("total")?.max(0) as u64;
    let soft_deleted = row.try_get::<_, i64>("soft_deleted")?.max(0) as u64;
    Ok(UserCounts::exact(
        total.saturating_sub(soft_deleted),
        soft_deleted,
    ))
}

fn exact_organization_counts(row: &SqliteRow) -> Result<OrganizationCounts, sqlx::Error> {
    let total = row.try_get::<i64, _>("total")?.max(0) as u64;
    let soft_deleted = row.try_get::<i64, _>("soft_deleted")?.max(0) as u64;
    let memberships = row.try_get::<i64, _>("memberships")?.max(0) as u64;
    Ok(OrganizationCounts {
        live: Some(total.saturating_sub(soft_deleted)),
        soft_deleted: Some(soft_deleted),
        memberships: Some(memberships),
        ..OrganizationCounts::default()
    })
}

fn exact_organization_counts_postgres(
    row: &tokio_postgres::Row,
) -> Result<OrganizationCounts, tokio_postgres::Error> {
    let total = row.try_get::<_, i64>("total")?.max(0) as u64;
    let soft_deleted = row.try_get::<_, i64>("soft_deleted")?.max(0) as u64;
    let memberships = row.try_get::<_, i64>("memberships")?.max(0) as u64;
    Ok(OrganizationCounts {
        live: Some(total.saturating_sub(soft_deleted)),
        soft_deleted: Some(soft_deleted),
        memberships: Some(memberships),
        ..OrganizationCounts::default()
    })
}

fn event_summary(row: &SqliteRow) -> Result<EventSummary, sqlx::Error> {
    Ok(super::records::stored_event_from!(row, ()))
}

fn event_summary_postgres(
    row: &tokio_postgres::Row,
) -> Result<EventSummary, tokio_postgres::Error> {
    Ok(super::records::stored_event_from!(row, ()))
}
