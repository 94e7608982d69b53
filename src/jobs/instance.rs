//! Which Clerk instance a secret key belongs to, against the instance the stored webhooks came
//! from. A key of another instance (development instead of production, another application)
//! lists other users: a backfill would write them into the table, and reconciliation would
//! delete and tombstone the table's own users, whose later webhooks the tombstones then block.
//! So every job that reads Clerk asks first, and such a key changes nothing.

use std::time::Duration;

use super::error::JobError;
use crate::clerk::api::{ClerkApi, EXAMPLE_INSTANCE_ID};
use crate::store::Store;

/// How many of the newest stored events say which instance the table follows: enough to see
/// past a few test events, few enough that an instance the database was moved to counts as soon
/// as its webhooks arrive.
const EVIDENCE_EVENTS: i64 = 100;

/// What is known of the key's instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyInstance {
    /// The key's instance sent (some of) the newest stored webhooks.
    Confirmed(String),
    /// No stored webhook names an instance, or Clerk's API does not say the key's.
    Unknown,
}

/// Compares the key's instance (`GET /v1/instance`) with the `instance_id` of the newest stored
/// webhooks. [`JobError::WrongInstance`] when they differ; Clerk is not asked when no stored
/// webhook names an instance.
pub async fn check_key_instance(store: &Store, api: &ClerkApi) -> Result<KeyInstance, JobError> {
    let events_instances: Vec<String> = store
        .recent_instance_ids(EVIDENCE_EVENTS)
        .await?
        .into_iter()
        // `clerk-sync trigger` and Clerk's examples carry this one: no application's instance.
        .filter(|id| id != EXAMPLE_INSTANCE_ID)
        .collect();
    if events_instances.is_empty() {
        return Ok(KeyInstance::Unknown);
    }
    let Some(instance) = api.instance().await? else {
        tracing::warn!(
            "Clerk's API does not say which instance CLERK_SECRET_KEY belongs to (GET \
             /v1/instance answered 404), so it cannot be compared with the instance of the \
             stored webhooks"
        );
        return Ok(KeyInstance::Unknown);
    };
    if events_instances.contains(&instance.id) {
        Ok(KeyInstance::Confirmed(instance.id))
    } else {
        Err(JobError::WrongInstance {
            key_instance: instance.id,
            environment: instance.environment_type,
            events_instances,
            api_url: api.base_url().to_owned(),
        })
    }
}

/// For `serve` at start: false when the key is shown to belong to another instance than the
/// stored webhooks (logged as an error that says what is off). A Clerk that does not answer
/// within `wait`, or answers with an error, leaves the key in use: start-up never waits on
/// Clerk, and each scheduled reconciliation checks again before it reads anything.
pub(crate) async fn key_fits_stored_events(store: &Store, api: &ClerkApi, wait: Duration) -> bool {
    match tokio::time::timeout(wait, check_key_instance(store, api)).await {
        Ok(Ok(KeyInstance::Confirmed(instance))) => {
            tracing::info!(
                instance,
                "CLERK_SECRET_KEY belongs to the instance the stored webhooks came from"
            );
            true
        }
        Ok(Ok(KeyInstance::Unknown)) => true,
        Ok(Err(error @ JobError::WrongInstance { .. })) => {
            tracing::error!(
                "{error} Until the key is fixed and clerk-sync restarted, it is not used: no \
                 fallback fetch, no profile updates, no session keys fetched with it, no \
                 scheduled reconciliation. Webhooks are applied as usual."
            );
            false
        }
        Ok(Err(error)) => {
            tracing::warn!(
                error = %error,
                "cannot check which Clerk instance CLERK_SECRET_KEY belongs to; using it"
            );
            true
        }
        Err(_) => {
            tracing::warn!(
                wait_s = wait.as_secs_f64(),
                "Clerk did not say in time which instance CLERK_SECRET_KEY belongs to; using \
                 it (scheduled reconciliations check again before each run)"
            );
            true
        }
    }
}
