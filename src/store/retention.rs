//! Inbox retention: removing old events' rows, and counting the inbox.
//!
//! An inbox row is what makes a redelivery a `duplicate`; once it is gone, a redelivery of that
//! event is applied again by the sync rules, which find it stale (the row holds that snapshot
//! or a newer one) or tombstoned (the user was deleted). So removing old rows never changes the
//! users table, and it never touches the users table itself. Failed events stay unless asked
//! for: they are the ones a person still has to look at and replay.
//!
//! Removal goes in bounded chunks, each its own short transaction, so a large inbox never holds
//! a long lock against deliveries; chunks are idempotent, so several processes may prune one
//! database at once.

use chrono::NaiveDateTime;
use tokio_postgres::types::Type;

use super::error::{DriverError, StoreError};
use super::handle::{Pool, Store, retrying};
use super::sqlite;

/// On PostgreSQL the inbox is counted exactly up to this many rows, and above it PostgreSQL's
/// own estimate (`pg_class.reltuples`, kept up to date by autovacuum) is reported: counting
/// millions of rows on every scrape would scan the whole table.
pub const INBOX_EXACT_COUNT_UP_TO: u64 = 100_000;

/// The oldest removable rows, at most `$3` of them: received before `$1`, failed ones only when
/// `$2`. Oldest first, along the `received_at` index.
const PRUNE_POSTGRES: &str = "DELETE FROM clerk_sync.inbox WHERE svix_id IN (
        SELECT svix_id FROM clerk_sync.inbox
        WHERE received_at < $1 AND (outcome <> 'failed' OR $2)
        ORDER BY received_at LIMIT $3
        -- Rows another process is pruning (or a replay is updating) are left to it, so
        -- concurrent prunes neither wait for nor block each other.
        FOR UPDATE SKIP LOCKED)";

const PRUNE_SQLITE: &str = "DELETE FROM clerk_sync_inbox WHERE svix_id IN (
        SELECT svix_id FROM clerk_sync_inbox
        WHERE received_at < $1 AND (outcome <> 'failed' OR $2)
        ORDER BY received_at LIMIT $3)";

impl Store {
    /// Removes at most `limit` events received before `before`, oldest first, in one short
    /// transaction; failed events only when `include_failed`. Returns how many it removed:
    /// fewer than `limit` means nothing removable is left (or another process is removing it).
    pub async fn prune_events(
        &self,
        before: NaiveDateTime,
        include_failed: bool,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let limit = i64::from(limit.max(1));
        retrying(|| async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    let client = pool.get().await?;
                    Ok(client
                        .execute_typed(
                            PRUNE_POSTGRES,
                            &[
                                (&before, Type::TIMESTAMP),
                                (&include_failed, Type::BOOL),
                                (&limit, Type::INT8),
                            ],
                        )
                        .await?)
                }
                Pool::Sqlite(pool) => {
                    // Takes the write lock at BEGIN: a deferred transaction that found the
                    // file changed when it came to write would fail instead of waiting.
                    let mut tx = pool.begin_with(sqlite::BEGIN_WRITE).await?;
                    let removed = sqlx::query(PRUNE_SQLITE)
                        .bind(before)
                        .bind(include_failed)
                        .bind(limit)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    tx.commit().await?;
                    Ok::<_, DriverError>(removed)
                }
            }
        })
        .await
        .map_err(StoreError::unavailable)
    }

    /// How many events [`Store::prune_events`] would remove, chunk after chunk, for the same
    /// `before` and `include_failed`.
    pub async fn prunable_event_count(
        &self,
        before: NaiveDateTime,
        include_failed: bool,
    ) -> Result<u64, StoreError> {
        let count: Result<i64, DriverError> = match &self.pool {
            Pool::Postgres(pool) => {
                async {
                    let client = pool.get().await?;
                    let row = client
                        .query_typed_one(
                            "SELECT count(*) FROM clerk_sync.inbox
                             WHERE received_at < $1 AND (outcome <> 'failed' OR $2)",
                            &[(&before, Type::TIMESTAMP), (&include_failed, Type::BOOL)],
                        )
                        .await?;
                    Ok(row.try_get(0)?)
                }
                .await
            }
            Pool::Sqlite(pool) => sqlx::query_scalar(
                "SELECT count(*) FROM clerk_sync_inbox
                 WHERE received_at < $1 AND (outcome <> 'failed' OR $2)",
            )
            .bind(before)
            .bind(include_failed)
            .fetch_one(pool)
            .await
            .map_err(DriverError::from),
        };
        count
            .map(|n| n.max(0) as u64)
            .map_err(StoreError::unavailable)
    }

    /// Events in the inbox, all outcomes: counted exactly on SQLite, and on PostgreSQL up to
    /// [`INBOX_EXACT_COUNT_UP_TO`], above which PostgreSQL's estimate is returned.
    pub async fn inbox_event_count(&self) -> Result<u64, StoreError> {
        let count = match &self.pool {
            Pool::Postgres(pool) => {
                let cap = INBOX_EXACT_COUNT_UP_TO as i64;
                let count = async {
                    let client = pool.get().await?;
                    // A scan that stops after cap + 1 rows: exact below the cap, bounded above.
                    let counted: i64 = client
                        .query_typed_one(
                            "SELECT count(*) FROM (SELECT 1 FROM clerk_sync.inbox LIMIT $1) AS capped",
                            &[(&(cap + 1), Type::INT8)],
                        )
                        .await?
                        .try_get(0)?;
                    if counted <= cap {
                        return Ok(counted);
                    }
                    let estimate: Option<f32> = client
                        .query_typed_opt(
                            "SELECT reltuples FROM pg_class WHERE oid = to_regclass('clerk_sync.inbox')",
                            &[],
                        )
                        .await?
                        .map(|row| row.try_get(0))
                        .transpose()?;
                    // Never below what was just counted (the estimate may predate growth, and
                    // is -1 before the table was first analysed).
                    Ok::<_, DriverError>(estimate.map_or(counted, |e| (e as i64).max(counted)))
                };
                count.await.map_err(StoreError::unavailable)?
            }
            Pool::Sqlite(pool) => sqlx::query_scalar("SELECT count(*) FROM clerk_sync_inbox")
                .fetch_one(pool)
                .await
                .map_err(StoreError::unavailable)?,
        };
        Ok(count.max(0) as u64)
    }
}
