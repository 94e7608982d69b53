//! SQLite, the embedded default: connection options and row-by-row writes (no network, so a
//! statement per row inside one transaction costs little).

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::statements::statements_impl;
use super::{PoolSettings, StoreError};

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
        /// `BEGIN IMMEDIATE` already serializes every writer.
        async fn lock_keys(&mut self, _keys: &[String]) -> Result<(), sqlx::Error> {
            Ok(())
        }

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
