//! PostgreSQL (Neon in production): connection options and the per-event transaction.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::{
    DeliveryRecord, IncomingEvent, PoolSettings, StoreError, UserRecord, apply_event, event_tx_impl,
};
use crate::clerk::ClerkEvent;
use crate::store::EventTx;
use crate::sync::{DeleteMode, Outcome};

event_tx_impl!(PgConnection, "clerk_sync.");

pub(super) fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Setup(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))?
        .application_name("clerk-sync")
        // PgBouncer (Neon's `-pooler` endpoint) rejects this startup parameter.
        .extra_float_digits(None);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

/// Transaction-scoped advisory locks: they work through a transaction-mode pooler (session
/// locks do not) and are released by COMMIT or ROLLBACK, even if the client vanishes.
async fn lock_keys(tx: &mut Transaction<'_, Postgres>, keys: &[String]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k")
        .bind(keys)
        .execute(&mut **tx)
        .await
        .map(drop)
}

pub(super) async fn record_event(
    pool: &PgPool,
    event: &IncomingEvent<'_>,
    mode: DeleteMode,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_keys(&mut tx, &event.lock_keys()).await?;
    let outcome = apply_event(&mut *tx, event, mode).await?;
    if outcome == Outcome::Duplicate {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(outcome)
}

pub(super) async fn record_failure(
    pool: &PgPool,
    event: &ClerkEvent,
    delivery: &DeliveryRecord<'_>,
    error: &str,
) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let outcome = super::record_failure(&mut *tx, event, delivery, error).await?;
    tx.commit().await?;
    Ok(outcome)
}

pub(super) async fn user(
    pool: &PgPool,
    id: &str,
) -> Result<(Option<UserRecord>, bool), sqlx::Error> {
    pool.acquire().await?.user(id).await
}
