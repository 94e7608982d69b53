//! SQLite, the embedded default: connection options and row-by-row writes (no network, so a
//! statement per row inside one transaction costs little).

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use std::collections::HashSet;

use super::error::DatabaseError;
use super::flow::Writes;
use super::statements::{LoadedState, StateKeys, Statements, statements_impl};
use super::{PoolSettings, StoreError, UsersTable};

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

statements_impl!(
    SqliteConnection,
    ns = "clerk_sync_",
    in_list = ("IN (SELECT value FROM json_each(", "))"),
    list = |values: &[String]| serde_json::to_string(values).expect("strings serialize"),
    {
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
    }
);

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
    ) -> Result<LoadedState, DatabaseError> {
        let connection = self.connection().await?;
        Ok(connection.load_state(users, svix_ids, keys).await?)
    }

    /// Statement by statement: no network, so a statement per row costs little.
    pub(super) async fn write(
        &mut self,
        users: &UsersTable,
        writes: &Writes<'_>,
    ) -> Result<HashSet<String>, DatabaseError> {
        let now = writes.now;
        let connection = self.connection().await?;
        connection.write_rows(users, writes.rows, now).await?;
        for change in writes.deletions {
            connection.apply_deletion(users, change, now).await?;
        }
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
