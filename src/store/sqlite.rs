//! SQLite, the embedded default: connection options and the per-event transaction.

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    DeliveryRecord, IncomingEvent, PoolSettings, StoreError, UserRecord, apply_event, event_tx_impl,
};
use crate::clerk::ClerkEvent;
use crate::store::EventTx;
use crate::sync::{DeleteMode, Outcome};

event_tx_impl!(SqliteConnection, "clerk_sync_");

/// Writers take the file lock up front (`BEGIN IMMEDIATE`): a deferred transaction that reads
/// first and then wants to write can fail with SQLITE_BUSY where waiting would have worked.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

pub(super) async fn connect(
    path: &Path,
    settings: &PoolSettings,
) -> Result<SqlitePool, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Setup(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL lets readers (health checks, the app) run while an event is written.
        .journal_mode(SqliteJournalMode::Wal)
        // A 2xx promises the event is stored; FULL keeps that promise across a power cut.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections.min(4))
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| {
            StoreError::Setup(format!(
                "cannot open the SQLite database {}: {e}",
                path.display()
            ))
        })?;
    Ok(pool)
}

pub(super) async fn record_event(
    pool: &SqlitePool,
    event: &IncomingEvent<'_>,
    mode: DeleteMode,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let outcome = apply_event(&mut *tx, event, mode).await?;
    if outcome == Outcome::Duplicate {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(outcome)
}

pub(super) async fn record_failure(
    pool: &SqlitePool,
    event: &ClerkEvent,
    delivery: &DeliveryRecord<'_>,
    error: &str,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let outcome = super::record_failure(&mut *tx, event, delivery, error).await?;
    tx.commit().await?;
    Ok(outcome)
}

pub(super) async fn user(
    pool: &SqlitePool,
    id: &str,
) -> Result<(Option<UserRecord>, bool), sqlx::Error> {
    pool.acquire().await?.user(id).await
}
