//! What every handler shares.

use std::sync::Arc;

use super::fallback::Users;
use super::limits::RateLimiters;
use crate::ingest::DeliveryQueue;
use crate::store::Store;
use crate::sync::DeleteMode;
use crate::webhook::Verifier;

/// What the handlers share. An app embedding clerk-sync keeps one in its own state and
/// implements `FromRef` for it, so the extractors ([`ClerkSession`](super::ClerkSession), [`SyncedUser`](super::SyncedUser)) work in
/// its handlers. On shutdown it stops serving, then calls `deliveries.shutdown()` (see
/// [`DeliveryQueue::shutdown`]) and only then `store.close()`.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database the handlers read and write; closed last on shutdown.
    pub store: Store,
    /// Where the webhook endpoint hands verified events to be written (group commit). Its
    /// writers hold database connections until [`DeliveryQueue::shutdown`] stops them.
    pub deliveries: DeliveryQueue,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) delete_mode: DeleteMode,
    pub(crate) users: Arc<Users>,
    /// Bearer token `/metrics` requires, if any.
    pub(crate) metrics_token: Option<Arc<str>>,
    /// Token that opens `/status` (`CLERK_SYNC_ADMIN_TOKEN`); the page is off without it.
    pub(crate) admin_token: Option<Arc<str>>,
    pub(crate) limiters: Arc<RateLimiters>,
    /// Longest time one database operation may take before the request gets 503.
    pub(crate) db_timeout: std::time::Duration,
    /// Origins a browser may call the user API from (`CLERK_AUTHORIZED_PARTIES`). Shared, not
    /// copied: the state is cloned for every request that extracts it.
    pub(crate) cors_origins: Arc<[String]>,
}
