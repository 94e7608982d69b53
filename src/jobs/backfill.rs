//! `clerk-sync backfill`: imports every user Clerk has, oldest first, a page (500 users) per
//! transaction, by the webhook rules, so it never overwrites a newer webhook and never brings
//! back a deleted user. The cursor is stored with each page, so a killed run continues from
//! its last committed page instead of starting over. A secret key of another Clerk instance
//! than the stored webhooks' is refused before anything is written.

use serde::{Deserialize, Serialize};

use super::pages::{Pages, Walk, under_lease};
use super::{JobError, Lease, Summary, snapshots_of};
use crate::clerk::api::ClerkApi;
use crate::store::Store;

/// State key of the checkpoint.
const CHECKPOINT: &str = "backfill";

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Users per request (at most 500, Clerk's largest page).
    pub page_size: u32,
    /// Requests to Clerk per 10 seconds.
    pub requests_per_10s: u32,
    /// Ignore a checkpoint left by an interrupted run and start from the first user.
    pub restart: bool,
    /// No progress output.
    pub quiet: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// Id of the last user of the last committed page.
    cursor: String,
    /// Users processed so far, across resumed runs.
    processed: u64,
}

/// What a backfill did.
#[derive(Debug, Clone, Default)]
pub struct BackfillReport {
    pub summary: Summary,
    /// The cursor the run resumed after, if it continued an interrupted one.
    pub resumed_after: Option<String>,
    pub pages: u64,
}

pub async fn run(
    store: &Store,
    api: &ClerkApi,
    options: &BackfillOptions,
) -> Result<BackfillReport, JobError> {
    under_lease(store, "backfill", async |lease| {
        walk(store, api, options, lease).await
    })
    .await
}

async fn walk(
    store: &Store,
    api: &ClerkApi,
    options: &BackfillOptions,
    lease: &Lease<'_>,
) -> Result<BackfillReport, JobError> {
    super::check_key_instance(store, api).await?;
    let mut report = BackfillReport::default();
    let checkpoint = match store.state(CHECKPOINT).await? {
        Some(_) if options.restart => None,
        Some(text) => serde_json::from_str::<Checkpoint>(&text).ok(),
        None => None,
    };
    let mut processed = checkpoint.as_ref().map_or(0, |c| c.processed);
    if let Some(checkpoint) = &checkpoint {
        tracing::info!(
            "resuming the interrupted backfill after {} ({} users already processed)",
            checkpoint.cursor,
            checkpoint.processed
        );
        report.resumed_after = Some(checkpoint.cursor.clone());
    }

    let walk = Walk {
        page_size: options.page_size,
        requests_per_10s: options.requests_per_10s,
        quiet: options.quiet,
    };
    let after = checkpoint.map(|c| c.cursor);
    let mut pages = Pages::start("backfill", store, api, lease, &walk, after, processed).await;
    while let Some(page) = pages.next().await? {
        let snapshots = snapshots_of(page.users, &mut report.summary);
        processed += snapshots.len() as u64;
        let checkpoint = serde_json::to_string(&Checkpoint {
            cursor: page.last_id,
            processed,
        })
        .expect("a checkpoint serializes");
        pages
            .apply(
                &snapshots,
                Some((CHECKPOINT, &checkpoint)),
                false,
                &mut report.summary,
            )
            .await?;
        report.pages += 1;
    }
    pages.finish_progress();
    store.set_state(CHECKPOINT, None).await?;
    Ok(report)
}
