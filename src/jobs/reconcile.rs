//! `clerk-sync reconcile`: compares the table with Clerk and fixes drift that lost webhooks
//! left: users missing here, rows older than Clerk's, and rows whose user Clerk no longer has.
//!
//! Deleting is the dangerous part, so it happens only after a complete walk of Clerk's users
//! (an error mid-walk skips it), only for rows that existed before the walk began, each
//! confirmed by asking Clerk for that user, and never for a large share of the table unless
//! asked. A secret key of the wrong instance must not empty the table, nor fill it with another
//! instance's users: a key whose instance is not the stored webhooks' is refused up front, and
//! a listing that holds none of the table's users writes nothing at all (its pages are held
//! back until one of the table's users shows up).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::DateTime;

use super::pages::{Page, Pages, Walk, under_lease};
use super::{JobError, KeyInstance, Lease, Summary, check_key_instance, snapshots_of};
use crate::clerk::UserData;
use crate::clerk::api::ClerkApi;
use crate::store::Store;
use crate::sync::{DeleteMode, Outcome, UserSnapshot};

/// Users of a listing held back while none of the table's users has shown up; past this, they
/// are let go and, once one shows up, the walk starts over (memory stays bounded whatever the
/// size of the other instance).
const MAX_HELD_USERS: usize = 5_000;

#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// Allow deleting more than a tenth of the table; and all of it, when Clerk lists none of
    /// the table's users, if the key's instance is the stored webhooks'.
    pub allow_mass_delete: bool,
    pub requests_per_10s: u32,
    pub page_size: u32,
    pub delete_mode: DeleteMode,
    pub quiet: bool,
}

/// What reconciliation does to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Skip,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Skip => "skip",
        }
    }
}

/// One difference between the table and Clerk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub action: Action,
    pub user_id: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub summary: Summary,
    pub drift: Vec<Drift>,
    pub dry_run: bool,
}

impl ReconcileReport {
    /// The drift as a table a person can read.
    pub fn table(&self) -> String {
        if self.drift.is_empty() {
            return "No drift: the table matches Clerk.\n".into();
        }
        let width = self
            .drift
            .iter()
            .map(|d| d.user_id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!("{:<6}  {:<width$}  DETAIL\n", "ACTION", "USER");
        for drift in &self.drift {
            let _ = writeln!(
                out,
                "{:<6}  {:<width$}  {}",
                drift.action.as_str(),
                drift.user_id,
                drift.detail
            );
        }
        out
    }
}

fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub async fn run(
    store: &Store,
    api: &ClerkApi,
    options: &ReconcileOptions,
) -> Result<ReconcileReport, JobError> {
    under_lease(store, "reconcile", async |lease| {
        reconcile(store, api, options, lease).await
    })
    .await
}

async fn reconcile(
    store: &Store,
    api: &ClerkApi,
    options: &ReconcileOptions,
    lease: &Lease<'_>,
) -> Result<ReconcileReport, JobError> {
    let instance = check_key_instance(store, api).await?;
    let mut report = ReconcileReport {
        dry_run: options.dry_run,
        ..ReconcileReport::default()
    };
    let walk_started = chrono::Utc::now().naive_utc();
    let table: HashSet<String> = store
        .live_user_ids(walk_started)
        .await?
        .into_iter()
        .collect();
    let walk = Walk {
        page_size: options.page_size,
        requests_per_10s: options.requests_per_10s,
        quiet: options.quiet,
    };
    let mut pages = Pages::start("reconcile", store, api, lease, &walk, None, 0).await;
    let mut in_clerk: HashSet<String> = HashSet::new();
    // Whether the listing is known to be of the table's instance: one of the table's users is
    // in it, or the table is empty, or --allow-mass-delete vouches for an instance the stored
    // webhooks confirmed. Until then pages are held back, not applied.
    let mut vouched = table.is_empty()
        || (options.allow_mass_delete && matches!(instance, KeyInstance::Confirmed(_)));
    let mut held: Vec<Vec<UserData>> = Vec::new();
    let mut held_users = 0;
    let mut let_go = false;

    // Phase 1: every user Clerk has, applied (or, dry, planned) by the webhook rules.
    while let Some(Page { users: page, .. }) = pages.next().await? {
        in_clerk.extend(page.iter().filter_map(|user| user.id.clone()));
        if !vouched
            && page
                .iter()
                .any(|user| user.id.as_ref().is_some_and(|id| table.contains(id)))
        {
            vouched = true;
            // The pages let go of are needed now: walk again from the first.
            if let_go {
                in_clerk.clear();
                pages.restart();
                let_go = false;
                continue;
            }
        }
        if vouched {
            for page in held.drain(..) {
                apply_page(&mut pages, page, options, &mut report).await?;
            }
            apply_page(&mut pages, page, options, &mut report).await?;
        } else if !let_go {
            held_users += page.len();
            held.push(page);
            if held_users > MAX_HELD_USERS {
                held = Vec::new();
                let_go = true;
            }
        }
    }
    pages.finish_progress();
    if !vouched {
        return Err(JobError::Refused(none_listed_message(
            table.len(),
            in_clerk.len(),
            &instance,
            api.base_url(),
        )));
    }

    // Phase 2: rows whose user Clerk no longer lists. Only rows written before the walk began
    // count (a user created meanwhile may be missing from the pages already read).
    let live_ids = store.live_user_ids(walk_started).await?;
    let live = live_ids.len();
    let candidates: Vec<String> = live_ids
        .into_iter()
        .filter(|id| !in_clerk.contains(id))
        .collect();
    if candidates.len() > 10 && candidates.len() * 10 > live && !options.allow_mass_delete {
        return Err(JobError::Refused(format!(
            "refusing to delete {} of {live} users that Clerk does not list: that is more than a \
             tenth of the table, which usually means CLERK_SECRET_KEY belongs to another Clerk \
             instance (development vs production). Check the key; if the deletions are really \
             wanted, run again with --allow-mass-delete. Nothing was deleted.",
            candidates.len()
        )));
    }
    for user_id in candidates {
        pages.pace().await?;
        // Confirm with Clerk: the listing is a moving picture, a single lookup is not.
        match api.get_user(&user_id).await? {
            Some(data) => {
                if let Ok(snapshot) = UserSnapshot::from_clerk(data) {
                    let outcome = if options.dry_run {
                        Outcome::Unchanged
                    } else {
                        store.apply_snapshot(&snapshot, options.delete_mode).await?
                    };
                    report.summary.record(outcome);
                }
            }
            None => {
                let outcome = if options.dry_run {
                    Outcome::Deleted
                } else {
                    store.apply_deletion(&user_id, options.delete_mode).await?
                };
                report.summary.record(outcome);
                report.drift.push(Drift {
                    action: Action::Delete,
                    user_id,
                    detail: "no longer exists in Clerk".into(),
                });
            }
        }
    }
    Ok(report)
}

/// Applies (or, dry, plans) one page of Clerk's users and notes the drift it shows.
async fn apply_page(
    pages: &mut Pages<'_>,
    page: Vec<UserData>,
    options: &ReconcileOptions,
    report: &mut ReconcileReport,
) -> Result<(), JobError> {
    let snapshots = snapshots_of(page, &mut report.summary);
    let applied = pages
        .apply(&snapshots, None, options.dry_run, &mut report.summary)
        .await?;
    for applied in &applied {
        let (action, detail) = match applied.outcome {
            Outcome::Created => (Action::Create, "missing from the table".to_string()),
            Outcome::Updated => (
                Action::Update,
                format!(
                    "table has {}, Clerk has {}",
                    applied.previous.map_or("no version".into(), iso),
                    iso(applied.clerk_updated_at)
                ),
            ),
            Outcome::Tombstoned => (
                Action::Skip,
                "deleted here, still listed by Clerk".to_string(),
            ),
            _ => continue,
        };
        report.drift.push(Drift {
            action,
            user_id: applied.user_id.clone(),
            detail,
        });
    }
    Ok(())
}

/// Why a listing with none of the table's users changed nothing, and the way out.
fn none_listed_message(
    table: usize,
    listed: usize,
    instance: &KeyInstance,
    api_url: &str,
) -> String {
    let listing = if listed == 0 {
        "Clerk lists no users at all".to_string()
    } else {
        format!("Clerk lists {listed} users, none of them")
    };
    match instance {
        KeyInstance::Confirmed(id) => format!(
            "refusing to reconcile: {listing} among the {table} users in the table, although \
             CLERK_SECRET_KEY belongs to instance {id}, which sent the stored webhooks. Nothing \
             was changed. If these users were really deleted in Clerk, run again with \
             --allow-mass-delete to delete them here."
        ),
        KeyInstance::Unknown => format!(
            "refusing to reconcile: {listing} among the {table} users in the table. That \
             usually means CLERK_SECRET_KEY belongs to another Clerk instance (development \
             instead of production, or another application). Nothing was changed. To check: \
             `curl -s -H \"Authorization: Bearer $CLERK_SECRET_KEY\" {api_url}/v1/instance` \
             shows the key's instance; compare it with the instance_id of a webhook this \
             endpoint received (`clerk-sync events show SVIX_ID`) or with the instance in \
             Clerk's dashboard. --allow-mass-delete does not override this while the key's \
             instance is unconfirmed: it is confirmed once a webhook of that instance has been \
             received here."
        ),
    }
}

/// Runs reconciliation every `every` inside `serve`. Several processes may run this; the lease
/// lets one at a time work, the others skip that round.
pub async fn schedule(store: Store, api: ClerkApi, every: Duration, options: ReconcileOptions) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run(&store, &api, &options).await {
            Ok(report) => {
                tracing::info!(summary = %report.summary, "scheduled reconciliation finished")
            }
            Err(JobError::LeaseHeld { holder, .. }) => {
                tracing::debug!(
                    holder,
                    "scheduled reconciliation skipped: another process runs it"
                )
            }
            Err(e) => tracing::error!(error = %e, "scheduled reconciliation failed"),
        }
    }
}
