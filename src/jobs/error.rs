//! Why a job stopped, in words that say what to do.

use std::time::Duration;

use crate::clerk::api::ClerkApiError;
use crate::store::StoreError;

/// Why a job stopped. Pages committed before the error stay committed; a backfill continues
/// from them when run again.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Clerk's API failed (after its retries, and after the job waited out rate limits).
    #[error(transparent)]
    Clerk(#[from] ClerkApiError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another process holds the job's lease (and is alive, or runs elsewhere).
    #[error("{}", super::holder::held_message(.job, .holder, .expires_at, .expires_in))]
    LeaseHeld {
        /// The job's lease name: `backfill` or `reconcile`.
        job: &'static str,
        /// The holder as stored: `host/pid 4242/run_…/…`.
        holder: String,
        /// When the lease runs out unless its holder renews it (UTC).
        expires_at: chrono::DateTime<chrono::Utc>,
        /// Until the lease expires, unless its holder renews it.
        expires_in: Duration,
    },
    /// The job stopped rather than risk a wrong change, and the text says why and what to do:
    /// the lease was lost, Clerk's list kept moving or was incomplete, or the deletions would
    /// empty a large share of a table.
    #[error("{0}")]
    Refused(String),
    /// The secret key belongs to another Clerk instance than the stored webhooks: the job
    /// changed nothing.
    #[error("{}", wrong_instance_message(.key_instance, .environment.as_deref(), .events_instances, .api_url))]
    WrongInstance {
        /// The key's instance id (`ins_…`), as Clerk's API gave it.
        key_instance: String,
        /// The key's environment (`development` or `production`), when Clerk said.
        environment: Option<String>,
        /// The instances the newest stored webhooks came from.
        events_instances: Vec<String>,
        /// `CLERK_API_URL`, for the command that shows a key's instance.
        api_url: String,
    },
}

impl JobError {
    /// Exit code for scripts: 3 when another process holds the job's lease, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            JobError::LeaseHeld { .. } => 3,
            _ => 1,
        }
    }
}

/// What [`JobError::WrongInstance`] says: what is wrong, that nothing changed, how to check.
fn wrong_instance_message(
    key_instance: &str,
    environment: Option<&str>,
    events_instances: &[String],
    api_url: &str,
) -> String {
    let environment = environment.map(|e| format!(" ({e})")).unwrap_or_default();
    format!(
        "CLERK_SECRET_KEY belongs to Clerk instance {key_instance}{environment}, but the \
         webhooks this database received come from {events}: the key is most likely another \
         instance's (development instead of production, or another application). Nothing was \
         changed. To check: `curl -s -H \"Authorization: Bearer $CLERK_SECRET_KEY\" \
         {api_url}/v1/instance` shows the key's instance, `clerk-sync events show SVIX_ID` a \
         stored webhook's instance_id. Use the secret key of the instance whose webhooks reach \
         this endpoint (Clerk's dashboard: Configure, API keys). If this database follows \
         another instance now on purpose, the check passes once a webhook of that instance \
         has arrived.",
        events = events_instances.join(" and ")
    )
}
