//! Jobs that read users, organizations and memberships from Clerk's API rather than from
//! webhooks (backfill, reconciliation) and that re-apply stored events (replay). Other sources
//! of snapshots, same rules: every snapshot goes through the store's one flow.

pub mod backfill;
mod error;
pub mod events;
mod holder;
mod instance;
mod lease;
mod organizations;
mod pages;
pub mod reconcile;

pub use error::JobError;
pub(crate) use instance::key_fits_stored_events;
pub use instance::{KeyInstance, check_key_instance};
pub use lease::Lease;

use std::fmt;
use std::future::Future;
use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use indicatif::{ProgressBar, ProgressStyle};

use crate::clerk::UserData;
use crate::clerk::api::{ClerkApi, ClerkApiError};
use crate::sync::Outcome;

/// Clerk's largest page.
pub const MAX_PAGE_SIZE: u32 = 500;
/// How many long rate-limit waits a job sits out before giving up.
const MAX_RATE_LIMIT_WAITS: u32 = 20;

/// What a job did, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows that were missing and were written (in a dry run: would be).
    pub created: u64,
    /// Rows older than the snapshot, written over.
    pub updated: u64,
    /// Snapshots that changed nothing: the row was as new or newer, or the event a duplicate.
    pub unchanged: u64,
    /// Deletions: rows removed (or soft-deleted), and users we never had, now tombstoned.
    pub deleted: u64,
    /// Users skipped because they are deleted here (tombstoned), or events not for us.
    pub skipped: u64,
    /// Items that could not be applied (logged each, with the reason).
    pub failed: u64,
}

impl Summary {
    pub(crate) fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged | Outcome::Stale | Outcome::Duplicate => self.unchanged += 1,
            Outcome::Deleted | Outcome::NotFound => self.deleted += 1,
            Outcome::Tombstoned | Outcome::Ignored => self.skipped += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    /// Every item the job went through, whatever became of it.
    pub fn total(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.deleted + self.skipped + self.failed
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created {}, updated {}, unchanged {}, deleted {}, skipped {}, failed {}",
            self.created, self.updated, self.unchanged, self.deleted, self.skipped, self.failed
        )
    }
}

/// Spaces requests to Clerk so a job stays within its share of the instance's rate limit
/// (1000 requests / 10 s in production, 100 in development) and leaves the rest to the live
/// fallback fetch. A burst of one: an idle job saves up no requests, so a job that resumes
/// after a slow page does not spend the fallback fetch's share in a rush.
#[derive(Debug)]
pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
}

impl Pacer {
    /// A pacer letting through `requests_per_10s` requests per 10 seconds, evenly spaced (at
    /// least one).
    pub fn new(requests_per_10s: u32) -> Pacer {
        let interval = Duration::from_secs(10) / requests_per_10s.max(1);
        let quota = Quota::with_period(interval)
            .expect("ten seconds over a u32 is at least two nanoseconds")
            .allow_burst(NonZeroU32::MIN);
        Pacer {
            limiter: RateLimiter::direct(quota),
        }
    }

    /// Half the instance's limit, judged by the key: `sk_live_` production, else development.
    pub fn default_budget(api: &ClerkApi) -> u32 {
        if api.is_production() { 500 } else { 50 }
    }

    /// Waits until the next request may go.
    pub async fn wait(&mut self) {
        self.limiter.until_ready().await;
    }
}

/// One page of users in creation order, after `cursor`, at the pacer's rate. The client
/// already waits out short `429`s; long ones are waited out here, as often as it takes within
/// reason, since a job has time.
pub async fn fetch_page(
    api: &ClerkApi,
    pacer: &mut Pacer,
    page_size: u32,
    cursor: Option<&str>,
) -> Result<Vec<UserData>, JobError> {
    paced(pacer, || api.list_users(page_size, cursor)).await
}

/// Makes one request to Clerk at the pacer's rate, waiting out long `429`s (see
/// [`fetch_page`]).
async fn paced<T, F, Fut>(pacer: &mut Pacer, mut call: F) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClerkApiError>>,
{
    let mut waits = 0;
    loop {
        pacer.wait().await;
        match call().await {
            Err(ClerkApiError::RateLimited { retry_after }) if waits < MAX_RATE_LIMIT_WAITS => {
                waits += 1;
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                tracing::info!(
                    wait_s = wait.as_secs(),
                    "Clerk's rate limit reached; waiting"
                );
                tokio::time::sleep(wait).await;
            }
            result => return result.map_err(JobError::from),
        }
    }
}

/// The page's users as snapshots; a user Clerk sent that cannot be applied is logged and
/// counted as failed.
fn snapshots_of(page: Vec<UserData>, summary: &mut Summary) -> Vec<crate::sync::UserSnapshot> {
    let mut snapshots = Vec::with_capacity(page.len());
    for user in page {
        match crate::sync::UserSnapshot::from_clerk(user) {
            Ok(snapshot) => snapshots.push(snapshot),
            Err(e) => {
                tracing::warn!(
                    user_id = e.user_id.as_deref().unwrap_or("-"),
                    error = %e.reason,
                    "user from Clerk cannot be applied"
                );
                summary.failed += 1;
            }
        }
    }
    snapshots
}

/// Progress of a long job: a bar with count, rate and ETA on a terminal, a log line per page
/// otherwise (and when quiet, nothing).
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    job: &'static str,
    /// What is counted: `users`, `organizations`, `memberships`.
    unit: &'static str,
    done: u64,
    total: Option<u64>,
    started: Instant,
}

impl Progress {
    /// Progress counted in users.
    pub fn new(job: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        Progress::of(job, "users", total, quiet)
    }

    /// Progress counted in `unit` (a plural: `organizations`).
    pub fn of(job: &'static str, unit: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{bar:40}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"
                ))
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(job);
            bar
        });
        Progress {
            bar,
            quiet,
            job,
            unit,
            done: 0,
            total,
            started: Instant::now(),
        }
    }

    /// The total, once known (offset-paged lists tell it with each page).
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(self.done));
        }
    }

    pub fn advance(&mut self, items: u64) {
        self.done += items;
        if let Some(bar) = &self.bar {
            if self.total.is_some_and(|t| self.done > t) {
                bar.set_length(self.done);
            }
            bar.set_position(self.done);
        } else if !self.quiet {
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let (job, done, unit) = (self.job, self.done, self.unit);
            match self.total {
                Some(total) => tracing::info!("{job}: {done}/{total} {unit} ({rate:.0}/s)"),
                None => tracing::info!("{job}: {done} {unit} ({rate:.0}/s)"),
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pacer_spaces_requests_evenly_and_saves_none_up() {
        let mut pacer = Pacer::new(100); // one request every 100 ms
        let started = Instant::now();
        pacer.wait().await;
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "the first goes at once"
        );
        pacer.wait().await;
        pacer.wait().await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");

        // Idle for a while: the next request may go at once, the one after still waits.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let resumed = Instant::now();
        pacer.wait().await;
        pacer.wait().await;
        let elapsed = resumed.elapsed();
        assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
    }
}
