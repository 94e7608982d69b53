//! The fallback fetch: a signed-in user whose webhook has not arrived yet is read from Clerk's
//! API and applied by the same rules as a webhook, once per user however many requests wait
//! for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

use super::error::ApiError;
use crate::clerk::api::{ClerkApi, ClerkApiError};
use crate::clerk::session::SessionVerifier;
use crate::store::Store;
use crate::sync::{DeleteMode, Outcome, UserSnapshot};

/// What the user API needs besides the store.
#[derive(Debug, Default)]
pub(crate) struct Users {
    /// `None` when neither `CLERK_JWT_KEY` nor `CLERK_SECRET_KEY` is set.
    pub sessions: Option<SessionVerifier>,
    /// `None` without `CLERK_SECRET_KEY`: no fallback fetch, no profile updates.
    pub clerk: Option<ClerkApi>,
    fetches: FetchOnce,
}

impl Users {
    pub fn new(sessions: Option<SessionVerifier>, clerk: Option<ClerkApi>) -> Users {
        Users {
            sessions,
            clerk,
            fetches: FetchOnce::default(),
        }
    }

    /// Fetches `user_id` from Clerk and applies it like a webhook, at most once at a time per
    /// user: concurrent callers share the one fetch's result.
    pub(super) async fn fetch(
        &self,
        store: &Store,
        delete_mode: DeleteMode,
        clerk: &ClerkApi,
        user_id: &str,
    ) -> Fetched {
        self.fetches
            .run(user_id, || {
                fetch_and_apply(store, delete_mode, clerk, user_id)
            })
            .await
    }
}

/// The shared result of one fetch.
#[derive(Debug, Clone)]
pub(super) enum Fetched {
    Synced,
    Deleted,
    NotInClerk,
    Failed(FetchError),
}

#[derive(Debug, Clone)]
pub(super) enum FetchError {
    Clerk(ClerkApiError),
    Store(String),
    Unusable(String),
}

impl FetchError {
    pub(super) fn into_api_error(self) -> ApiError {
        match self {
            FetchError::Clerk(ClerkApiError::RateLimited { retry_after }) => {
                ApiError::RateLimited(retry_after)
            }
            FetchError::Clerk(e) => {
                tracing::warn!(error = %e, "fallback fetch from Clerk failed");
                ApiError::Unavailable("cannot reach Clerk to load this user; retry later".into())
            }
            FetchError::Store(e) => {
                tracing::error!(error = %e, "fallback fetch could not be stored");
                ApiError::Unavailable("database unavailable, retry later".into())
            }
            FetchError::Unusable(e) => {
                tracing::error!(error = %e, "Clerk's user data cannot be applied");
                ApiError::Internal
            }
        }
    }
}

async fn fetch_and_apply(
    store: &Store,
    delete_mode: DeleteMode,
    clerk: &ClerkApi,
    user_id: &str,
) -> Fetched {
    let fetched = fetch_and_apply_once(store, delete_mode, clerk, user_id).await;
    crate::metrics::fallback_fetch(match fetched {
        Fetched::Synced => "synced",
        Fetched::Deleted => "deleted",
        Fetched::NotInClerk => "not_in_clerk",
        Fetched::Failed(_) => "failed",
    });
    fetched
}

async fn fetch_and_apply_once(
    store: &Store,
    delete_mode: DeleteMode,
    clerk: &ClerkApi,
    user_id: &str,
) -> Fetched {
    let started = Instant::now();
    let data = match clerk.get_user(user_id).await {
        Ok(Some(data)) => data,
        Ok(None) => return Fetched::NotInClerk,
        Err(e) => return Fetched::Failed(FetchError::Clerk(e)),
    };
    let outcome = match apply_clerk_user(store, delete_mode, data).await {
        Ok(outcome) => outcome,
        Err(e) => return Fetched::Failed(e),
    };
    tracing::info!(
        source = "fallback_fetch",
        user_id,
        outcome = outcome.as_str(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "user fetched from Clerk"
    );
    match outcome {
        Outcome::Tombstoned => Fetched::Deleted,
        _ => Fetched::Synced,
    }
}

/// Applies a user read from Clerk (the fallback fetch, a profile update's answer) like a
/// webhook's snapshot.
pub(super) async fn apply_clerk_user(
    store: &Store,
    delete_mode: DeleteMode,
    data: crate::clerk::UserData,
) -> Result<Outcome, FetchError> {
    let snapshot = UserSnapshot::from_clerk(data).map_err(|e| FetchError::Unusable(e.reason))?;
    store
        .apply_snapshot(&snapshot, delete_mode)
        .await
        .map_err(|e| FetchError::Store(e.to_string()))
}

/// Runs at most one fetch per user at a time; concurrent callers share its result.
#[derive(Debug, Default)]
struct FetchOnce {
    in_flight: Mutex<HashMap<String, Arc<OnceCell<Fetched>>>>,
}

impl FetchOnce {
    async fn run<F, Fut>(&self, user_id: &str, fetch: F) -> Fetched
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Fetched>,
    {
        let cell = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(user_id.to_owned())
            .or_default()
            .clone();
        let result = cell.get_or_init(fetch).await.clone();
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if in_flight
            .get(user_id)
            .is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            in_flight.remove(user_id);
        }
        result
    }
}
