//! What backfill and reconciliation share: a job run under its lease, the job's requests to
//! Clerk (each renews the lease and waits for the pacer, one pacer for the whole job), and a
//! walk over Clerk's users page by page that keeps the lease, the pacer and the progress in
//! step. What a job does with a page (checkpoint, hold back, note drift) stays in the job. The
//! walks over organizations and memberships are in `organizations.rs`, on the same requests.

use std::future::Future;

use super::{JobError, Lease, Pacer, Progress, Summary, paced};
use crate::clerk::UserData;
use crate::clerk::api::{ClerkApi, ClerkApiError};
use crate::ingest::Applied;
use crate::store::Store;
use crate::sync::UserSnapshot;

/// Runs `job` holding the lease `name`, released afterwards whether the job succeeded or not,
/// so a failed run does not keep the next one waiting for the lease to expire.
pub(super) async fn under_lease<T>(
    store: &Store,
    name: &'static str,
    job: impl AsyncFnOnce(&Lease<'_>) -> Result<T, JobError>,
) -> Result<T, JobError> {
    let lease = Lease::acquire(store, name).await?;
    let result = job(&lease).await;
    lease.release().await?;
    result
}

/// One page of Clerk's users.
pub(super) struct Page {
    pub users: Vec<UserData>,
    /// Id of its last user: where a walk resumed after this page continues.
    pub last_id: String,
}

/// How a job walks Clerk's users: page size, pace, and whether it shows progress.
pub(super) struct Walk {
    /// Users per request (clamped to Clerk's largest page).
    pub page_size: u32,
    pub requests_per_10s: u32,
    pub quiet: bool,
}

/// A job's requests to Clerk. Every request renews the lease first (a job that stalled past
/// the lease's lifetime stops rather than interleave with the process that took over) and waits
/// for the pacer (the job leaves the live fallback fetch its share of Clerk's rate limit). One
/// per job, passed from walk to walk, so the budget holds across users, organizations and
/// memberships.
pub(super) struct Requests<'a> {
    lease: &'a Lease<'a>,
    pacer: Pacer,
}

impl<'a> Requests<'a> {
    pub fn new(lease: &'a Lease<'a>, requests_per_10s: u32) -> Requests<'a> {
        Requests {
            lease,
            pacer: Pacer::new(requests_per_10s),
        }
    }

    /// Renews the lease, then makes the call at the pacer's rate, waiting out long `429`s.
    pub async fn call<T, F, Fut>(&mut self, call: F) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClerkApiError>>,
    {
        self.lease.renew().await?;
        paced(&mut self.pacer, call).await
    }

    /// Renews the lease and waits for the pacer, before a request of the job's own to Clerk.
    pub async fn pace(&mut self) -> Result<(), JobError> {
        self.lease.renew().await?;
        self.pacer.wait().await;
        Ok(())
    }

    /// Renews the lease, during long work without requests to Clerk (deletions).
    pub async fn renew(&self) -> Result<(), JobError> {
        self.lease.renew().await
    }
}

/// Clerk's users in creation order, a page at a time, through the job's [`Requests`].
pub(super) struct Pages<'a> {
    store: &'a Store,
    api: &'a ClerkApi,
    requests: Requests<'a>,
    page_size: u32,
    /// Id of the last user of the last page returned.
    cursor: Option<String>,
    /// The last page was short: Clerk has no more.
    done: bool,
    progress: Progress,
}

impl<'a> Pages<'a> {
    /// Starts after the user `after` (the first user when `None`), with `processed` users
    /// already counted by an earlier run.
    pub async fn start(
        job: &'static str,
        store: &'a Store,
        api: &'a ClerkApi,
        lease: &'a Lease<'a>,
        walk: &Walk,
        after: Option<String>,
        processed: u64,
    ) -> Pages<'a> {
        let total = match api.count_users().await {
            Ok(total) => Some(total),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count Clerk's users; progress shows no total");
                None
            }
        };
        let mut progress = Progress::new(job, total, walk.quiet);
        progress.advance(processed);
        Pages {
            store,
            api,
            requests: Requests::new(lease, walk.requests_per_10s),
            page_size: walk.page_size.clamp(1, super::MAX_PAGE_SIZE),
            cursor: after,
            done: false,
            progress,
        }
    }

    /// The next page, or `None` once Clerk has no more.
    pub async fn next(&mut self) -> Result<Option<Page>, JobError> {
        if self.done {
            return Ok(None);
        }
        let (api, page_size, cursor) = (self.api, self.page_size, self.cursor.as_deref());
        let page = self
            .requests
            .call(|| api.list_users(page_size, cursor))
            .await?;
        let Some(last_id) = page.last().and_then(|u| u.id.clone()) else {
            self.done = true;
            return Ok(None);
        };
        self.done = (page.len() as u32) < self.page_size;
        self.cursor = Some(last_id.clone());
        Ok(Some(Page {
            users: page,
            last_id,
        }))
    }

    /// Walks again from Clerk's first user.
    pub fn restart(&mut self) {
        self.cursor = None;
        self.done = false;
    }

    /// Applies snapshots of a page by the webhook rules in one transaction (dry: plans them),
    /// writing `checkpoint` in the same transaction; counts the outcomes and the progress.
    pub async fn apply(
        &mut self,
        snapshots: &[UserSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
        summary: &mut Summary,
    ) -> Result<Vec<Applied>, JobError> {
        let applied = self
            .store
            .apply_snapshots(snapshots, checkpoint, dry_run)
            .await?;
        for applied in &applied {
            summary.record(applied.outcome);
        }
        self.progress.advance(applied.len() as u64);
        Ok(applied)
    }

    /// Clears the progress bar; the job's requests go on through [`Pages::into_requests`].
    pub fn finish_progress(&self) {
        self.progress.finish();
    }

    /// The job's requests, once the users' walk is over.
    pub fn into_requests(self) -> Requests<'a> {
        self.requests
    }
}
