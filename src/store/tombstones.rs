//! The way out of a wrong deletion: listing tombstones and removing one, so the user's next
//! event (or a backfill) applies again. Also which Clerk instances the stored webhooks came
//! from, so jobs reading Clerk can tell a secret key of another instance before it writes.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use serde::Deserialize;

use super::{Pool, Store, StoreError, in_transaction, now};

/// A deleted user id, remembered so a late event cannot bring the user back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub user_id: String,
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

/// clerk-sync's own table `name` on the store's dialect.
fn own_table(pool: &Pool, name: &str) -> String {
    match pool {
        Pool::Postgres(_) => format!("clerk_sync.{name}"),
        Pool::Sqlite(_) => format!("clerk_sync_{name}"),
    }
}

impl Store {
    /// The `limit` newest tombstones, and how many there are in all.
    pub async fn tombstones(&self, limit: i64) -> Result<(Vec<Tombstone>, u64), StoreError> {
        let table = own_table(&self.pool, "tombstones");
        let list = format!(
            "SELECT user_id, deleted_at FROM {table} ORDER BY deleted_at DESC, user_id LIMIT $1"
        );
        let count = format!("SELECT count(*) FROM {table}");
        let read = async {
            let result: (Vec<(String, NaiveDateTime)>, i64) = match &self.pool {
                Pool::Postgres(pool) => (
                    sqlx::query_as(&list).bind(limit).fetch_all(pool).await?,
                    sqlx::query_scalar(&count).fetch_one(pool).await?,
                ),
                Pool::Sqlite(pool) => (
                    sqlx::query_as(&list).bind(limit).fetch_all(pool).await?,
                    sqlx::query_scalar(&count).fetch_one(pool).await?,
                ),
            };
            Ok::<_, sqlx::Error>(result)
        };
        let (rows, total) = read.await.map_err(StoreError::Unavailable)?;
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
            own_table(&self.pool, "tombstones")
        );
        let restore = self.users.sql(
            r#"UPDATE {users} SET "deletedAt" = NULL, "updatedAt" = $2
               WHERE id = $1 AND "deletedAt" IS NOT NULL"#,
        );
        let now = now();
        let write = in_transaction!(self, |conn| {
            let removed = sqlx::query(&forget)
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            let restored = sqlx::query(&restore)
                .bind(user_id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            (removed.rows_affected(), restored.rows_affected())
        });
        let (removed, restored) = write.map_err(StoreError::Unavailable)?;
        Ok(TombstoneRemoval {
            removed: removed > 0,
            row_restored: restored > 0,
        })
    }

    /// The Clerk instance ids the `events` newest stored events carry, newest first, each
    /// once. Empty when no stored event names one.
    pub async fn recent_instance_ids(&self, events: i64) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT payload FROM {} ORDER BY received_at DESC, svix_id LIMIT $1",
            own_table(&self.pool, "inbox")
        );
        let payloads: Vec<String> = match &self.pool {
            Pool::Postgres(pool) => sqlx::query_scalar(&sql).bind(events).fetch_all(pool).await,
            Pool::Sqlite(pool) => sqlx::query_scalar(&sql).bind(events).fetch_all(pool).await,
        }
        .map_err(StoreError::Unavailable)?;
        let mut seen = HashSet::new();
        Ok(payloads
            .iter()
            .filter_map(|payload| serde_json::from_str::<Envelope>(payload).ok()?.instance_id)
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }
}
