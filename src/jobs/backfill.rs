//! `clerk-sync backfill`: imports every user Clerk has, then every organization, then every
//! membership, oldest first, a page (500) per transaction, by the webhook rules, so it never
//! overwrites a newer webhook and never brings back a deleted user, organization or
//! membership. Where the walk stands is stored with each page, so a killed run continues from
//! its last committed page instead of starting over (the users' cursor; for organizations and
//! memberships an offset and the last ids read, see `organizations.rs`). A secret key of
//! another Clerk instance than the stored webhooks' is refused before anything is written.

use serde::{Deserialize, Serialize};

use super::organizations::{Listed, OffsetWalk, Position, snapshots_of as list_snapshots};
use super::pages::{Pages, Requests, Walk, under_lease};
use super::{JobError, Lease, Summary, snapshots_of};
use crate::clerk::api::ClerkApi;
use crate::clerk::{MembershipData, OrganizationData};
use crate::store::Store;

/// State key of the checkpoint.
const CHECKPOINT: &str = "backfill";

/// How a backfill runs (`clerk-sync backfill`'s flags).
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Users, organizations or memberships per request (at most 500, Clerk's largest page;
    /// organizations and memberships at least 2).
    pub page_size: u32,
    /// Requests to Clerk per 10 seconds.
    pub requests_per_10s: u32,
    /// Ignore a checkpoint left by an interrupted run and start from the first user.
    pub restart: bool,
    /// No progress output.
    pub quiet: bool,
}

/// Where an interrupted backfill stands. While it walks the users, only `cursor` and
/// `processed` (the form older versions wrote and read); once the users are done, the position
/// in the organizations, then in the memberships.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Id of the last user of the last committed page, while the users are walked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    /// Users processed so far, across resumed runs.
    #[serde(default)]
    processed: u64,
    /// Set once the users are done: where the organizations' walk stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    organizations: Option<Position>,
    /// Set once the organizations are done: where the memberships' walk stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memberships: Option<Position>,
}

impl Checkpoint {
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint serializes")
    }
}

/// Where a run continued an interrupted one that had finished the users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// `organizations` or `memberships`.
    pub list: &'static str,
    /// How many of them the interrupted runs had processed.
    pub processed: u64,
}

/// What a backfill did.
#[derive(Debug, Clone, Default)]
pub struct BackfillReport {
    /// What became of the users this run read.
    pub summary: Summary,
    /// The user cursor the run resumed after, if it continued an interrupted one in the users.
    pub resumed_after: Option<String>,
    /// Pages of users.
    pub pages: u64,
    /// The organizations this run read (a resumed run counts only those after its checkpoint).
    pub organizations: Summary,
    /// The memberships, counted like the organizations.
    pub memberships: Summary,
    /// Pages of organizations that held something new.
    pub organization_pages: u64,
    /// Pages of memberships that held something new.
    pub membership_pages: u64,
    /// Set when the run continued an interrupted one past the users.
    pub resumed_in: Option<Resumed>,
}

/// Runs a backfill under the `backfill` lease: users, then organizations, then memberships,
/// continuing an interrupted run unless [`BackfillOptions::restart`] says otherwise. Refused
/// ([`JobError::WrongInstance`]) when the key belongs to another instance than the stored
/// webhooks, and [`JobError::LeaseHeld`] while another process runs a backfill.
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
    let mut checkpoint = match store.state(CHECKPOINT).await? {
        Some(_) if options.restart => Checkpoint::default(),
        Some(text) => serde_json::from_str::<Checkpoint>(&text).unwrap_or_default(),
        None => Checkpoint::default(),
    };
    let users_done = checkpoint.organizations.is_some() || checkpoint.memberships.is_some();
    if let Some(position) = &checkpoint.memberships {
        report.resumed_in = Some(Resumed {
            list: "memberships",
            processed: position.processed,
        });
    } else if let Some(position) = &checkpoint.organizations {
        report.resumed_in = Some(Resumed {
            list: "organizations",
            processed: position.processed,
        });
    } else if let Some(cursor) = &checkpoint.cursor {
        tracing::info!(
            "resuming the interrupted backfill after {} ({} users already processed)",
            cursor,
            checkpoint.processed
        );
        report.resumed_after = Some(cursor.clone());
    }
    if let Some(resumed) = &report.resumed_in {
        tracing::info!(
            "resuming the interrupted backfill in the {} ({} already processed; the users are \
             done)",
            resumed.list,
            resumed.processed
        );
    }

    let mut requests = if users_done {
        Requests::new(lease, options.requests_per_10s)
    } else {
        walk_users(store, api, options, lease, &mut checkpoint, &mut report).await?
    };
    // The memberships' checkpoints keep the organizations' final position: its presence says
    // the organizations are done.
    if checkpoint.memberships.is_none() {
        report.organization_pages = walk_list::<OrganizationData>(
            store,
            api,
            options,
            &mut requests,
            &mut checkpoint,
            |c| &mut c.organizations,
            &mut report.organizations,
        )
        .await?;
    }
    report.membership_pages = walk_list::<MembershipData>(
        store,
        api,
        options,
        &mut requests,
        &mut checkpoint,
        |c| &mut c.memberships,
        &mut report.memberships,
    )
    .await?;
    store.set_state(CHECKPOINT, None).await?;
    Ok(report)
}

/// The users, after the checkpoint's cursor; returns the job's requests for the lists that
/// follow.
async fn walk_users<'a>(
    store: &'a Store,
    api: &'a ClerkApi,
    options: &BackfillOptions,
    lease: &'a Lease<'a>,
    checkpoint: &mut Checkpoint,
    report: &mut BackfillReport,
) -> Result<Requests<'a>, JobError> {
    let walk = Walk {
        page_size: options.page_size,
        requests_per_10s: options.requests_per_10s,
        quiet: options.quiet,
    };
    let mut processed = checkpoint.processed;
    let after = checkpoint.cursor.take();
    let mut pages = Pages::start("backfill", store, api, lease, &walk, after, processed).await;
    while let Some(page) = pages.next().await? {
        let snapshots = snapshots_of(page.users, &mut report.summary);
        processed += snapshots.len() as u64;
        let checkpoint = Checkpoint {
            cursor: Some(page.last_id),
            processed,
            ..Checkpoint::default()
        }
        .to_json();
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
    checkpoint.processed = processed;
    Ok(pages.into_requests())
}

/// One of the offset-paged lists, from where `slot` of the checkpoint says (the start when
/// unset), each page with the checkpoint that resumes after it; leaves the walk's final
/// position in `slot`. Returns how many pages held something new.
async fn walk_list<T: Listed>(
    store: &Store,
    api: &ClerkApi,
    options: &BackfillOptions,
    requests: &mut Requests<'_>,
    checkpoint: &mut Checkpoint,
    slot: fn(&mut Checkpoint) -> &mut Option<Position>,
    summary: &mut Summary,
) -> Result<u64, JobError> {
    let position = slot(checkpoint).clone();
    let mut walk = OffsetWalk::<T>::new("backfill", options.page_size, position, options.quiet);
    let mut pages = 0;
    while let Some(items) = walk.next(api, requests).await? {
        if items.is_empty() {
            continue;
        }
        let snapshots = list_snapshots(items, summary);
        *slot(checkpoint) = Some(walk.position().clone());
        let state = checkpoint.to_json();
        if snapshots.is_empty() {
            // None of them could be applied (counted as failed): the position still moves on.
            store.set_state(CHECKPOINT, Some(&state)).await?;
            continue;
        }
        let outcomes = T::apply(store, &snapshots, Some((CHECKPOINT, &state)), false).await?;
        for outcome in outcomes {
            summary.record(outcome);
        }
        pages += 1;
    }
    *slot(checkpoint) = Some(walk.position().clone());
    Ok(pages)
}
