//! PostgreSQL (Neon in production): connection options, advisory locks, and bulk writes.

use std::str::FromStr;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use super::statements::statements_impl;
use super::{PoolSettings, StoreError, millis_to_datetime};

pub(super) fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Setup(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))?
        .application_name("clerk-sync")
        // PgBouncer (Neon's `-pooler` endpoint) rejects this startup parameter.
        .extra_float_digits(None);
    Ok(PgPoolOptions::new()
        // No ping before each use: it costs a round trip per event, and a connection the
        // server closed fails the transaction with an I/O error, which is retried on a fresh
        // connection (see `is_lost_race`).
        .test_before_acquire(false)
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

statements_impl!(
    PgConnection,
    ns = "clerk_sync.",
    in_list = ("= ANY(", ")"),
    list = |values: &[String]| values.to_vec(),
    {
        /// Transaction-scoped advisory locks: they work through a transaction-mode pooler
        /// (session locks do not) and are released by COMMIT or ROLLBACK, even if the client
        /// vanishes.
        async fn lock_keys(&mut self, keys: &[String]) -> Result<(), sqlx::Error> {
            if keys.is_empty() {
                return Ok(());
            }
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
            )
            .bind(keys)
            .execute(&mut *self)
            .await
            .map(drop)
        }

        /// One `INSERT … SELECT FROM unnest(…)` for the whole batch.
        async fn insert_inbox_rows(
            &mut self,
            records: &[crate::store::InboxRecord<'_>],
        ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
            let texts = |f: fn(&crate::store::InboxRecord<'_>) -> Option<String>| -> Vec<Option<String>> {
                records.iter().map(f).collect()
            };
            sqlx::query_scalar(
                "INSERT INTO clerk_sync.inbox (svix_id, event_type, user_id, outcome, error, payload,
                                               svix_timestamp, received_at)
                 SELECT svix_id, event_type, user_id, outcome, error, payload, svix_timestamp, $8
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::int8[])
                      AS r(svix_id, event_type, user_id, outcome, error, payload, svix_timestamp)
                 ON CONFLICT (svix_id) DO NOTHING
                 RETURNING svix_id",
            )
            .bind(texts(|r| Some(r.svix_id.to_owned())))
            .bind(texts(|r| Some(r.event_type.to_owned())))
            .bind(texts(|r| r.user_id.map(str::to_owned)))
            .bind(texts(|r| Some(r.outcome.as_str().to_owned())))
            .bind(texts(|r| r.error.map(str::to_owned)))
            .bind(texts(|r| Some(r.payload.to_owned())))
            .bind(records.iter().map(|r| r.svix_timestamp).collect::<Vec<i64>>())
            .bind(records.first().map(|r| r.received_at))
            .fetch_all(&mut *self)
            .await
            .map(|ids| ids.into_iter().collect())
        }

        /// Two statements whatever the batch size: clear the values that move, then one
        /// `INSERT … SELECT FROM unnest(…)` upsert. The WHERE clause repeats the newest-wins
        /// rule in SQL as a last line of defence; the decision was made under the locks.
        async fn write_rows(
            &mut self,
            users: &crate::store::UsersTable,
            writes: &crate::sync::RowWrites,
            now: chrono::NaiveDateTime,
        ) -> Result<(), sqlx::Error> {
            for (column, cleared) in [
                ("email", &writes.clear_email),
                ("username", &writes.clear_username),
            ] {
                if cleared.is_empty() {
                    continue;
                }
                let (ids, values): (Vec<&str>, Vec<&str>) = cleared
                    .iter()
                    .map(|(id, value)| (id.as_str(), value.as_str()))
                    .unzip();
                let sql = users.sql(&format!(
                    r#"UPDATE {{users}} AS u SET {column} = NULL, "updatedAt" = $3
                       FROM unnest($1::text[], $2::text[]) AS c(id, value)
                       WHERE u.id = c.id AND u.{column} = c.value"#
                ));
                sqlx::query(&sql)
                    .bind(ids)
                    .bind(values)
                    .bind(now)
                    .execute(&mut *self)
                    .await?;
            }
            if writes.upserts.is_empty() {
                return Ok(());
            }
            if let [user] = writes.upserts.as_slice() {
                // A single event: plain parameters, so the plan is cached (see load_state).
                return self.upsert_one(users, user, now).await;
            }
            let rows = &writes.upserts;
            let column =
                |f: fn(&crate::sync::UserSnapshot) -> Option<String>| -> Vec<Option<String>> {
                    rows.iter().map(f).collect()
                };
            let sql = users.sql(
                r#"INSERT INTO {users} AS t (id, email, "firstName", "lastName", name, "imageUrl", username,
                                      "clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt")
                   SELECT id, email, first_name, last_name, name, image_url, username,
                          clerk_created_at, clerk_updated_at, $10, $10
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                               $7::text[], $8::timestamp[], $9::timestamp[])
                        AS u(id, email, first_name, last_name, name, image_url, username,
                             clerk_created_at, clerk_updated_at)
                   ON CONFLICT (id) DO UPDATE SET
                     email = excluded.email, "firstName" = excluded."firstName",
                     "lastName" = excluded."lastName", name = excluded.name,
                     "imageUrl" = excluded."imageUrl", username = excluded.username,
                     "clerkCreatedAt" = excluded."clerkCreatedAt",
                     "clerkUpdatedAt" = excluded."clerkUpdatedAt", "updatedAt" = excluded."updatedAt"
                   WHERE t."clerkUpdatedAt" IS NULL OR t."clerkUpdatedAt" <= excluded."clerkUpdatedAt""#,
            );
            sqlx::query(&sql)
                .bind(rows.iter().map(|u| u.id.clone()).collect::<Vec<String>>())
                .bind(column(|u| u.email.clone()))
                .bind(column(|u| u.first_name.clone()))
                .bind(column(|u| u.last_name.clone()))
                .bind(column(|u| u.name.clone()))
                .bind(column(|u| u.image_url.clone()))
                .bind(column(|u| u.username.clone()))
                .bind(
                    rows.iter()
                        .map(|u| u.created_at.map(millis_to_datetime))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    rows.iter()
                        .map(|u| millis_to_datetime(u.updated_at))
                        .collect::<Vec<_>>(),
                )
                .bind(now)
                .execute(&mut *self)
                .await
                .map(drop)
        }
    }
);
