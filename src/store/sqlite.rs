//! SQLite, the embedded default: connection options and row-by-row writes (no network, so a
//! statement per row inside one transaction costs little).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::error::{DriverError, StoreError};
use super::organization_statements::{self, OrganizationTexts, Value};
use super::statements::{self, LoadedState, StateKeys, Statements};
use super::target::PoolSettings;
use super::users_table::UsersTable;
use super::writes::Writes;

/// Writers take the file lock up front (`BEGIN IMMEDIATE`): a deferred transaction that reads
/// first and then wants to write can fail with SQLITE_BUSY where waiting would have worked.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

pub(super) async fn connect(
    path: &Path,
    settings: &PoolSettings,
) -> Result<SqlitePool, StoreError> {
    // A mistyped path must not create directories (at the root, even): the file is created,
    // its directory must exist.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(StoreError::Setup(format!(
            "cannot open the SQLite database {}: the directory {} does not exist; create it \
             first (mkdir -p {}) or give another path in DATABASE_URL, e.g. \
             sqlite://clerk-sync.db for the working directory",
            path.display(),
            dir.display(),
            dir.display()
        )));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL lets readers (health checks, the app) run while an event is written.
        .journal_mode(SqliteJournalMode::Wal)
        // A 2xx promises the event is stored; FULL keeps that promise across a power cut.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(settings.max_connections.min(4))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| {
            StoreError::Setup(format!(
                "cannot open the SQLite database {}: {e}",
                path.display()
            ))
        })
}

/// clerk-sync's own tables are `clerk_sync_`-prefixed (SQLite has no schemas).
const NS: &str = "clerk_sync_";

/// "Is in this list", for a list bound as a JSON array.
const IN_LIST: (&str, &str) = ("IN (SELECT value FROM json_each(", "))");

impl Statements for SqliteConnection {
    async fn write_rows(
        &mut self,
        users: &UsersTable,
        writes: &crate::sync::RowWrites,
        now: chrono::NaiveDateTime,
    ) -> Result<(), sqlx::Error> {
        for (column, cleared) in [
            ("email", &writes.clear_email),
            ("username", &writes.clear_username),
        ] {
            let sql = users.sql(&format!(
                    r#"UPDATE {{users}} SET {column} = NULL, "updatedAt" = $3 WHERE id = $1 AND {column} = $2"#
                ));
            for (id, value) in cleared {
                sqlx::query(&sql)
                    .bind(id)
                    .bind(value)
                    .bind(now)
                    .execute(&mut *self)
                    .await?;
            }
        }
        for user in &writes.upserts {
            self.upsert_one(users, user, now).await?;
        }
        Ok(())
    }

    async fn load_state(
        &mut self,
        users: &UsersTable,
        svix_ids: &[String],
        keys: &statements::StateKeys,
    ) -> Result<statements::LoadedState, sqlx::Error> {
        // A single event (the webhook hot path) binds plain parameters, so PostgreSQL
        // can reuse a generic plan instead of planning array arguments each time.
        let single = statements::is_single(svix_ids, keys);
        let sql = statements::load_state_sql(users, NS, IN_LIST, single);
        let rows = if single {
            sqlx::query(&sql)
                .bind(svix_ids.first())
                .bind(keys.user_ids.first())
                .bind(keys.emails.first())
                .bind(keys.usernames.first())
                .fetch_all(&mut *self)
                .await?
        } else {
            let list =
                |values: &[String]| serde_json::to_string(values).expect("strings serialize");
            sqlx::query(&sql)
                .bind(list(svix_ids))
                .bind(list(&keys.user_ids))
                .bind(list(&keys.emails))
                .bind(list(&keys.usernames))
                .fetch_all(&mut *self)
                .await?
        };
        statements::read_state(rows)
    }

    async fn upsert_one(
        &mut self,
        users: &UsersTable,
        user: &crate::sync::UserSnapshot,
        now: chrono::NaiveDateTime,
    ) -> Result<(), sqlx::Error> {
        let sql = statements::upsert_one_sql(users);
        sqlx::query(&sql)
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.first_name)
            .bind(&user.last_name)
            .bind(&user.name)
            .bind(&user.image_url)
            .bind(&user.username)
            .bind(user.created_at.map(super::records::millis_to_datetime))
            .bind(super::records::millis_to_datetime(user.updated_at))
            .bind(now)
            .execute(&mut *self)
            .await
            .map(drop)
    }

    async fn apply_deletion(
        &mut self,
        users: &UsersTable,
        change: &crate::sync::Change,
        now: chrono::NaiveDateTime,
    ) -> Result<(), sqlx::Error> {
        use crate::sync::Change;
        let sql = statements::deletion_sql(users, NS, change);
        let query = match change {
            Change::DeleteRow { user_id } => sqlx::query(&sql).bind(user_id),
            Change::SoftDeleteRow { user_id }
            | Change::EraseRow { user_id }
            | Change::Tombstone { user_id } => sqlx::query(&sql).bind(user_id).bind(now),
            Change::ReleaseEmail { .. } | Change::ReleaseUsername { .. } | Change::Upsert(_) => {
                unreachable!("snapshot changes are written by write_rows")
            }
        };
        query.execute(&mut *self).await.map(drop)
    }

    async fn user(
        &mut self,
        users: &UsersTable,
        id: &str,
    ) -> Result<(Option<super::records::UserRecord>, bool), sqlx::Error> {
        use sqlx::Row;
        let sql = statements::user_sql(users, NS);
        let row = sqlx::query(&sql).bind(id).fetch_one(&mut *self).await?;
        let tombstoned: bool = row.try_get("tombstoned")?;
        let Some(id) = row.try_get::<Option<String>, _>("id")? else {
            return Ok((None, tombstoned));
        };
        let record = super::records::user_record_from!(row, id);
        Ok((Some(record), tombstoned))
    }

    async fn insert_inbox(
        &mut self,
        record: &super::records::InboxRecord<'_>,
    ) -> Result<bool, sqlx::Error> {
        let sql = statements::insert_inbox_sql(NS);
        let result = sqlx::query(&sql)
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

    async fn update_inbox(
        &mut self,
        svix_id: &str,
        outcome: crate::sync::Outcome,
        error: Option<&str>,
        now: chrono::NaiveDateTime,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&statements::update_inbox_sql(NS))
            .bind(svix_id)
            .bind(outcome.as_str())
            .bind(error)
            .bind(now)
            .execute(&mut *self)
            .await
            .map(drop)
    }

    async fn stored_event(
        &mut self,
        svix_id: &str,
    ) -> Result<Option<super::records::StoredEvent>, sqlx::Error> {
        let row = sqlx::query(&statements::stored_event_sql(NS))
            .bind(svix_id)
            .fetch_optional(&mut *self)
            .await?;
        row.map(|r| statements::stored_event(&r)).transpose()
    }

    async fn stored_events(
        &mut self,
        failed_only: bool,
        limit: i64,
    ) -> Result<Vec<super::records::StoredEvent>, sqlx::Error> {
        let rows = sqlx::query(&statements::stored_events_sql(NS))
            .bind(failed_only)
            .bind(limit)
            .fetch_all(&mut *self)
            .await?;
        rows.iter().map(statements::stored_event).collect()
    }

    async fn get_state(&mut self, key: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(&statements::get_state_sql(NS))
            .bind(key)
            .fetch_optional(&mut *self)
            .await
    }

    async fn set_state(
        &mut self,
        key: &str,
        value: Option<&str>,
        now: chrono::NaiveDateTime,
    ) -> Result<(), sqlx::Error> {
        let (set_sql, delete_sql) = (
            statements::set_state_sql(NS),
            statements::delete_state_sql(NS),
        );
        let query = match value {
            Some(value) => sqlx::query(&set_sql).bind(key).bind(value).bind(now),
            None => sqlx::query(&delete_sql).bind(key),
        };
        query.execute(&mut *self).await.map(drop)
    }

    async fn acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        expires_at: chrono::NaiveDateTime,
        now: chrono::NaiveDateTime,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(&statements::acquire_lease_sql(NS))
            .bind(name)
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *self)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_lease(&mut self, name: &str, holder: &str) -> Result<(), sqlx::Error> {
        sqlx::query(&statements::release_lease_sql(NS))
            .bind(name)
            .bind(holder)
            .execute(&mut *self)
            .await
            .map(drop)
    }

    async fn failed_event_count(&mut self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(&statements::failed_count_sql(NS))
            .fetch_one(&mut *self)
            .await
    }

    async fn lease(
        &mut self,
        name: &str,
    ) -> Result<Option<(String, chrono::NaiveDateTime)>, sqlx::Error> {
        sqlx::query_as(&statements::lease_sql(NS))
            .bind(name)
            .fetch_optional(&mut *self)
            .await
    }

    async fn take_over_lease(
        &mut self,
        name: &str,
        dead_holder: &str,
        new_holder: &str,
        expires_at: chrono::NaiveDateTime,
    ) -> Result<bool, sqlx::Error> {
        let result = sqlx::query(&statements::take_over_lease_sql(NS))
            .bind(name)
            .bind(dead_holder)
            .bind(new_holder)
            .bind(expires_at)
            .execute(&mut *self)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn live_user_ids(
        &mut self,
        users: &UsersTable,
        before: chrono::NaiveDateTime,
    ) -> Result<Vec<String>, sqlx::Error> {
        let sql = statements::live_user_ids_sql(users);
        sqlx::query_scalar(&sql)
            .bind(before)
            .fetch_all(&mut *self)
            .await
    }
}

/// A write transaction (`BEGIN IMMEDIATE`), begun at its first statement.
pub(crate) struct Transaction {
    pool: SqlitePool,
    tx: Option<sqlx::Transaction<'static, sqlx::Sqlite>>,
}

impl Transaction {
    pub(super) fn begin(pool: &SqlitePool) -> Transaction {
        Transaction {
            pool: pool.clone(),
            tx: None,
        }
    }

    async fn connection(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        if self.tx.is_none() {
            self.tx = Some(self.pool.begin_with(BEGIN_WRITE).await?);
        }
        let Some(tx) = self.tx.as_mut() else {
            unreachable!("begun just above")
        };
        Ok(&mut **tx)
    }

    pub(super) async fn read(
        &mut self,
        users: &UsersTable,
        svix_ids: &[String],
        keys: &StateKeys,
    ) -> Result<LoadedState, DriverError> {
        let connection = self.connection().await?;
        let mut state = connection.load_state(users, svix_ids, keys).await?;
        if !keys.organizations.is_empty() {
            use sqlx::Row;
            let texts = OrganizationTexts::new(users, NS, IN_LIST);
            let mut query = sqlx::query(&texts.lookup);
            for list in keys.organizations.lists() {
                query = query.bind(serde_json::to_string(list).expect("strings serialize"));
            }
            let rows = query
                .fetch_all(&mut *connection)
                .await?
                .iter()
                .map(|row| Ok(organization_statements::lookup_row_from!(row)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            state.organizations = organization_statements::organization_state(rows);
        }
        Ok(state)
    }

    /// Statement by statement: no network, so a statement per row costs little.
    pub(super) async fn write(
        &mut self,
        users: &UsersTable,
        writes: &Writes<'_>,
    ) -> Result<HashSet<String>, DriverError> {
        let now = writes.now;
        let organization_texts = OrganizationTexts::new(users, NS, IN_LIST);
        let connection = self.connection().await?;
        connection.write_rows(users, writes.rows, now).await?;
        run(
            connection,
            organization_texts.upserts(writes.organizations, now),
        )
        .await?;
        for change in writes.deletions {
            connection.apply_deletion(users, change, now).await?;
        }
        run(
            connection,
            organization_texts.deletions(
                writes.organizations,
                writes.deleted_users,
                writes.keep_organization_rows,
                now,
            ),
        )
        .await?;
        let inserted = connection.insert_inbox_rows(writes.inbox).await?;
        for replay in writes.replays {
            connection
                .update_inbox(replay.svix_id, replay.outcome, replay.error, now)
                .await?;
        }
        if let Some((key, value)) = writes.checkpoint {
            connection.set_state(key, Some(value), now).await?;
        }
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        Ok(inserted)
    }

    pub(super) async fn rollback(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.rollback().await;
        }
    }
}

/// Runs the organization statements (`organization_statements`) one by one.
async fn run(
    connection: &mut SqliteConnection,
    statements: Vec<organization_statements::Statement<'_>>,
) -> Result<(), sqlx::Error> {
    for statement in statements {
        let mut query = sqlx::query(statement.sql);
        for value in statement.values {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Time(time) => query.bind(time),
                Value::Int(int) => query.bind(int),
            };
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}
