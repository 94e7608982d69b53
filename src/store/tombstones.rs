//! The way out of a wrong deletion: listing tombstones and removing one, so the user's next
//! event (or a backfill) applies again. Also which Clerk instances the stored webhooks came
//! from, so jobs reading Clerk can tell a secret key of another instance before it writes.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use serde::Deserialize;
use tokio_postgres::types::{ToSql, Type};

use super::error::{DriverError, StoreError};
use super::handle::{Pool, Store};
use super::postgres::ClosingTransaction;
use super::records::now;
use super::sqlite;

/// A deleted user id, remembered so a late event cannot bring the user back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The deleted user's Clerk id (`user_…`).
    pub user_id: String,
    /// When clerk-sync applied the deletion (UTC).
    pub deleted_at: NaiveDateTime,
}

/// What removing a tombstone did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneRemoval {
    /// There was a tombstone for the id.
    pub removed: bool,
    /// A soft-deleted row of the id is live again (its email and username come back with the
    /// user's next snapshot).
    pub row_restored: bool,
}

/// Only `instance_id` of an envelope is read; anything else (or a body that is not JSON) is
/// no concern here.
#[derive(Deserialize)]
struct Envelope {
    instance_id: Option<String>,
}

impl Store {
    /// clerk-sync's own table `name` on the store's dialect.
    fn own_table(&self, name: &str) -> String {
        match self.pool {
            Pool::Postgres(_) => format!("clerk_sync.{name}"),
            Pool::Sqlite(_) => format!("clerk_sync_{name}"),
        }
    }

    /// The `limit` newest tombstones, and how many there are in all.
    pub async fn tombstones(&self, limit: i64) -> Result<(Vec<Tombstone>, u64), StoreError> {
        let table = self.own_table("tombstones");
        let list = format!(
            "SELECT user_id, deleted_at FROM {table} ORDER BY deleted_at DESC, user_id LIMIT $1"
        );
        let count = format!("SELECT count(*) FROM {table}");
        let read = async {
            let result: (Vec<(String, NaiveDateTime)>, i64) = match &self.pool {
                Pool::Postgres(pool) => {
                    let client = pool.get().await?;
                    let limit: [(&(dyn ToSql + Sync), Type); 1] = [(&limit, Type::INT8)];
                    // Both sent at once: one round trip.
                    let (rows, total) = tokio::join!(
                        biased;
                        client.query_typed(&list, &limit),
                        client.query_typed_one(&count, &[]),
                    );
                    (
                        rows?
                            .iter()
                            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                            .collect::<Result<_, tokio_postgres::Error>>()?,
                        total?.try_get(0)?,
                    )
                }
                Pool::Sqlite(pool) => (
                    sqlx::query_as(&list).bind(limit).fetch_all(pool).await?,
                    sqlx::query_scalar(&count).fetch_one(pool).await?,
                ),
            };
            Ok::<_, DriverError>(result)
        };
        let (rows, total) = read.await.map_err(StoreError::unavailable)?;
        let tombstones = rows
            .into_iter()
            .map(|(user_id, deleted_at)| Tombstone {
                user_id,
                deleted_at,
            })
            .collect();
        Ok((tombstones, total.max(0) as u64))
    }

    /// Forgets that `user_id` was deleted, in one transaction with restoring a soft-deleted
    /// row of it: the user's next event, or a backfill, then applies as for any user.
    pub async fn remove_tombstone(&self, user_id: &str) -> Result<TombstoneRemoval, StoreError> {
        let forget = format!(
            "DELETE FROM {} WHERE user_id = $1",
            self.own_table("tombstones")
        );
        let restore = self.users.sql(
            r#"UPDATE {users} SET "deletedAt" = NULL, "updatedAt" = $2
               WHERE id = $1 AND "deletedAt" IS NOT NULL"#,
        );
        let now = now();
        let write = async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    let tx = ClosingTransaction::begin(pool, "BEGIN").await?;
                    let client = tx.client();
                    let forget_params: [(&(dyn ToSql + Sync), Type); 1] = [(&user_id, Type::TEXT)];
                    let restore_params: [(&(dyn ToSql + Sync), Type); 2] =
                        [(&user_id, Type::TEXT), (&now, Type::TIMESTAMP)];
                    // Both sent at once: one round trip.
                    let (removed, restored) = tokio::join!(
                        biased;
                        client.execute_typed(&forget, &forget_params),
                        client.execute_typed(&restore, &restore_params),
                    );
                    let written = (removed?, restored?);
                    tx.commit().await?;
                    Ok::<_, DriverError>(written)
                }
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin_with(sqlite::BEGIN_WRITE).await?;
                    let removed = sqlx::query(&forget).bind(user_id).execute(&mut *tx).await?;
                    let restored = sqlx::query(&restore)
                        .bind(user_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok((removed.rows_affected(), restored.rows_affected()))
                }
            }
        };
        let (removed, restored) = write.await.map_err(StoreError::unavailable)?;
        Ok(TombstoneRemoval {
            removed: removed > 0,
            row_restored: restored > 0,
        })
    }

    /// The Clerk instance ids the `events` newest stored events carry, newest first, each
    /// once. Empty when no stored event names one.
    pub(crate) async fn recent_instance_ids(&self, events: i64) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT payload FROM {} ORDER BY received_at DESC, svix_id LIMIT $1",
            self.own_table("inbox")
        );
        let payloads: Vec<String> = match &self.pool {
            Pool::Postgres(pool) => {
                async {
                    let client = pool.get().await?;
                    client
                        .query_typed(&sql, &[(&events, Type::INT8)])
                        .await?
                        .iter()
                        .map(|row| row.try_get(0))
                        .collect::<Result<_, _>>()
                        .map_err(DriverError::from)
                }
                .await
            }
            Pool::Sqlite(pool) => sqlx::query_scalar(&sql)
                .bind(events)
                .fetch_all(pool)
                .await
                .map_err(DriverError::from),
        }
        .map_err(StoreError::unavailable)?;
        let mut seen = HashSet::new();
        Ok(payloads
            .iter()
            .filter_map(|payload| serde_json::from_str::<Envelope>(payload).ok()?.instance_id)
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }
}
