//! `clerk-sync reconcile`: compares the tables with Clerk and fixes drift that lost webhooks
//! left: users, organizations and memberships missing here, rows older than Clerk's, and rows
//! whose user, organization or membership Clerk no longer has.
//!
//! Deleting is the dangerous part, so it happens only after complete walks of Clerk's users,
//! organizations and memberships (an error mid-walk skips every deletion), only for rows that
//! existed before their walk began, each confirmed with Clerk (a user by asking Clerk for it;
//! organizations and memberships, which Clerk lists by offset, by a second complete walk of
//! their list), and never for a large share of a table unless asked: every table's share is
//! checked before anything is deleted. A walk of organizations or memberships counts as
//! complete only if it read at least as many distinct ones as Clerk's `total_count` at its end.
//! A secret key of the wrong instance must not empty the tables, nor fill them with another
//! instance's data: a key whose instance is not the stored webhooks' is refused up front, and
//! a listing that holds none of the table's users writes nothing at all (its pages are held
//! back until one of the table's users shows up); the same holds for organizations and
//! memberships when the users cannot vouch for the instance (an empty users table).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime};

use super::organizations::{
    Listed, OffsetWalk, membership_of, read_ids, snapshots_of as list_snapshots,
};
use super::pages::{Page, Pages, Requests, Walk, under_lease};
use super::{JobError, KeyInstance, Lease, Summary, check_key_instance, snapshots_of};
use crate::clerk::api::ClerkApi;
use crate::clerk::{MembershipData, OrganizationData, UserData};
use crate::store::Store;
use crate::sync::{DeleteMode, MembershipDeletion, Outcome, UserSnapshot};

/// Users of a listing held back while none of the table's users has shown up; past this, they
/// are let go and, once one shows up, the walk starts over (memory stays bounded whatever the
/// size of the other instance).
const MAX_HELD_USERS: usize = 5_000;

/// How a reconciliation runs (`clerk-sync reconcile`'s flags; `serve`'s scheduled runs use
/// their own).
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// Allow deleting more than a tenth of a table (users, organizations, memberships); and
    /// all of it, when Clerk lists none of the table's rows, if the key's instance is the
    /// stored webhooks'.
    pub allow_mass_delete: bool,
    /// Requests to Clerk per 10 seconds (see [`crate::jobs::Pacer::default_budget`]).
    pub requests_per_10s: u32,
    /// Users, organizations or memberships per request (at most 500, Clerk's largest page).
    pub page_size: u32,
    /// What deleting a row Clerk no longer has does to it (the webhook's `user.deleted` rule).
    pub delete_mode: DeleteMode,
    /// No progress output.
    pub quiet: bool,
}

/// What reconciliation does to one user, organization or membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Missing from the table: written from Clerk's snapshot.
    Create,
    /// Older in the table than in Clerk: overwritten with Clerk's snapshot.
    Update,
    /// In the table but no longer in Clerk (confirmed): deleted.
    Delete,
    /// Deleted here (tombstoned) but still listed by Clerk: left alone, never brought back.
    Skip,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
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
    /// What reconciliation does (in a dry run: would do) about it.
    pub action: Action,
    /// Clerk's user id (`user_…`).
    pub user_id: String,
    /// The difference in words, e.g. which `updated_at` the table and Clerk have.
    pub detail: String,
}

/// One difference between the organizations' or memberships' table and Clerk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDrift {
    /// What reconciliation does (in a dry run: would do) about it.
    pub action: Action,
    /// The organization's or membership's id.
    pub id: String,
    /// The difference in words, naming the organization or membership.
    pub detail: String,
}

/// What reconciliation found and did for organizations, or for memberships.
#[derive(Debug, Clone, Default)]
pub struct ListReport {
    /// What became of each one read, counted.
    pub summary: Summary,
    /// Each difference found, in the order found.
    pub drift: Vec<ItemDrift>,
}

/// What a reconciliation found and did; [`ReconcileReport::table`] shows it to a person.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    /// What became of the users read from Clerk, and of the table's users it no longer has.
    pub summary: Summary,
    /// The users' drift.
    pub drift: Vec<Drift>,
    /// The run changed nothing: the summary and drift say what it would have done.
    pub dry_run: bool,
    /// The organizations' summary and drift.
    pub organizations: ListReport,
    /// The memberships' summary and drift.
    pub memberships: ListReport,
}

impl ReconcileReport {
    /// The drift as tables a person can read: the users', then the organizations' and the
    /// memberships' (each only when it has drift).
    pub fn table(&self) -> String {
        let lists = [
            ("ORGANIZATION", &self.organizations.drift),
            ("MEMBERSHIP", &self.memberships.drift),
        ];
        if self.drift.is_empty() && lists.iter().all(|(_, drift)| drift.is_empty()) {
            return "No drift: the table matches Clerk.\n".into();
        }
        let mut out = String::new();
        if !self.drift.is_empty() {
            let rows: Vec<(Action, &str, &str)> = self
                .drift
                .iter()
                .map(|d| (d.action, d.user_id.as_str(), d.detail.as_str()))
                .collect();
            write_table(&mut out, "USER", &rows);
        }
        for (heading, drift) in lists {
            if drift.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            let rows: Vec<(Action, &str, &str)> = drift
                .iter()
                .map(|d| (d.action, d.id.as_str(), d.detail.as_str()))
                .collect();
            write_table(&mut out, heading, &rows);
        }
        out
    }
}

fn write_table(out: &mut String, heading: &str, rows: &[(Action, &str, &str)]) {
    let width = rows
        .iter()
        .map(|(_, id, _)| id.len())
        .max()
        .unwrap_or(4)
        .max(heading.len());
    let _ = writeln!(out, "{:<6}  {:<width$}  DETAIL", "ACTION", heading);
    for (action, id, detail) in rows {
        let _ = writeln!(out, "{:<6}  {:<width$}  {}", action.as_str(), id, detail);
    }
}

fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Runs a reconciliation under the `reconcile` lease: walks Clerk's users, organizations and
/// memberships, applies what the tables lack or hold older, and deletes what Clerk no longer
/// has, within the safeguards this module describes. [`JobError::LeaseHeld`] while another
/// process reconciles.
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

    let mut requests = pages.into_requests();

    // Phase 1 for organizations, then memberships: every one Clerk has, applied (or, dry,
    // planned) by the webhook rules. A table of users that Clerk listed vouches for the
    // instance; without users, each list needs one of its table's rows in it (as above).
    let mut trusted = !table.is_empty();
    let organizations = walk_list::<OrganizationData>(
        store,
        api,
        &mut requests,
        options,
        &instance,
        &mut trusted,
        &mut report.organizations,
    )
    .await?;
    let memberships = walk_list::<MembershipData>(
        store,
        api,
        &mut requests,
        options,
        &instance,
        &mut trusted,
        &mut report.memberships,
    )
    .await?;

    // Phase 2: rows whose user, organization or membership Clerk no longer lists. Only rows
    // written before their walk began count (one created meanwhile may be missing from the
    // pages already read). Every table's share is checked before anything is deleted.
    let live_ids = store.live_user_ids(walk_started).await?;
    let live = live_ids.len();
    let candidates: Vec<String> = live_ids
        .into_iter()
        .filter(|id| !in_clerk.contains(id))
        .collect();
    mass_deletion_guard("users", candidates.len(), live, options)?;
    let live_memberships = store.live_memberships(memberships.started).await?;
    // An organization whose membership Clerk listed (each embeds its organization) exists,
    // whatever the organizations' list said: it is not deleted (for good, a tombstone).
    let vouched_by_members: HashSet<&str> = live_memberships
        .iter()
        .filter(|(id, _, _)| memberships.listed.contains(id))
        .map(|(_, organization, _)| organization.as_str())
        .collect();
    let live_organizations = store.live_organization_ids(organizations.started).await?;
    let live = live_organizations.len();
    let organization_candidates: Vec<String> = live_organizations
        .into_iter()
        .filter(|id| !organizations.listed.contains(id))
        .filter(|id| {
            let listed = vouched_by_members.contains(id.as_str());
            if listed {
                tracing::warn!(
                    organization_id = %id,
                    "Clerk lists a membership of this organization but not the organization; \
                     not deleting it"
                );
            }
            !listed
        })
        .collect();
    mass_deletion_guard(
        "organizations",
        organization_candidates.len(),
        live,
        options,
    )?;
    let live = live_memberships.len();
    let membership_candidates: Vec<(String, String, String)> = live_memberships
        .iter()
        .filter(|(id, _, _)| !memberships.listed.contains(id))
        .cloned()
        .collect();
    // Memberships that go with a deleted organization or user are judged with it.
    let going: HashSet<&str> = organization_candidates
        .iter()
        .chain(&candidates)
        .map(String::as_str)
        .collect();
    let on_their_own = membership_candidates
        .iter()
        .filter(|(_, organization, user)| {
            !going.contains(organization.as_str()) && !going.contains(user.as_str())
        })
        .count();
    mass_deletion_guard("memberships", on_their_own, live, options)?;

    // Confirmed by a second complete walk (Clerk has no lookup of one membership, and a walk
    // of the lists confirms any number at once); one listed again is applied instead.
    let membership_candidates = confirm::<MembershipData, _>(
        store,
        api,
        &mut requests,
        options,
        membership_candidates,
        |(id, _, _)| id,
        &mut report.memberships,
    )
    .await?;
    let organization_candidates = confirm::<OrganizationData, _>(
        store,
        api,
        &mut requests,
        options,
        organization_candidates,
        |id| id,
        &mut report.organizations,
    )
    .await?;

    // A membership's deletion is dated when its walk began: a snapshot not newer than that
    // (one read before) cannot bring it back, a newer one (it changed since) keeps it.
    let at = memberships.started.and_utc().timestamp_millis();
    for (n, (id, organization_id, user_id)) in membership_candidates.into_iter().enumerate() {
        if n % 100 == 99 {
            requests.renew().await?;
        }
        let detail = format!(
            "{}: no longer exists in Clerk",
            membership_of(&user_id, &organization_id)
        );
        let outcome = if options.dry_run {
            Outcome::Deleted
        } else {
            let deletion = MembershipDeletion {
                id: id.clone(),
                organization_id,
                user_id,
                at,
            };
            store
                .apply_membership_deletion(&deletion, options.delete_mode)
                .await?
        };
        record_deletion(&mut report.memberships, id, detail, outcome);
    }
    for (n, id) in organization_candidates.into_iter().enumerate() {
        if n % 100 == 99 {
            requests.renew().await?;
        }
        let outcome = if options.dry_run {
            Outcome::Deleted
        } else {
            store
                .apply_organization_deletion(&id, options.delete_mode)
                .await?
        };
        let detail = "no longer exists in Clerk".to_string();
        record_deletion(&mut report.organizations, id, detail, outcome);
    }

    for user_id in candidates {
        requests.pace().await?;
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

/// Refuses deleting more than a tenth of a table (and more than ten rows) unless asked.
fn mass_deletion_guard(
    noun: &str,
    candidates: usize,
    live: usize,
    options: &ReconcileOptions,
) -> Result<(), JobError> {
    if candidates > 10 && candidates * 10 > live && !options.allow_mass_delete {
        return Err(JobError::Refused(format!(
            "refusing to delete {candidates} of {live} {noun} that Clerk does not list: that is \
             more than a tenth of the table, which usually means CLERK_SECRET_KEY belongs to \
             another Clerk instance (development vs production). Check the key; if the \
             deletions are really wanted, run again with --allow-mass-delete. Nothing was \
             deleted."
        )));
    }
    Ok(())
}

/// A deletion's outcome, counted, and as drift unless the row turned out newer than the walk
/// (changed by a webhook meanwhile) or was deleted already.
fn record_deletion(report: &mut ListReport, id: String, detail: String, outcome: Outcome) {
    report.summary.record(outcome);
    if matches!(outcome, Outcome::Deleted | Outcome::NotFound) {
        report.drift.push(ItemDrift {
            action: Action::Delete,
            id,
            detail,
        });
    }
}

/// A list's walk: the ids Clerk listed and when the walk began.
struct Listing {
    listed: HashSet<String>,
    started: NaiveDateTime,
}

/// Phase 1 for one of the offset-paged lists: every item Clerk lists, applied (or, dry,
/// planned) by the webhook rules, and their ids; the walk checked complete. Unless `trusted`
/// (the instance is vouched for), pages are applied only once one of the table's rows shows
/// up (then the walk starts over from the first item, to apply those passed by); a listing
/// with none of them changes nothing and is refused. Such a row vouches for later lists too.
async fn walk_list<T: Listed>(
    store: &Store,
    api: &ClerkApi,
    requests: &mut Requests<'_>,
    options: &ReconcileOptions,
    instance: &KeyInstance,
    trusted: &mut bool,
    report: &mut ListReport,
) -> Result<Listing, JobError> {
    let started = chrono::Utc::now().naive_utc();
    let table: HashSet<String> = T::table_ids(store, started).await?.into_iter().collect();
    let mut vouched = *trusted
        || table.is_empty()
        || (options.allow_mass_delete && matches!(instance, KeyInstance::Confirmed(_)));
    let mut passed_by = false;
    let mut listed = HashSet::new();
    let mut walk = OffsetWalk::<T>::new("reconcile", options.page_size, None, options.quiet);
    while let Some(items) = walk.next(api, requests).await? {
        listed.extend(items.iter().filter_map(|item| item.id().map(str::to_owned)));
        if !vouched
            && items
                .iter()
                .any(|item| item.id().is_some_and(|id| table.contains(id)))
        {
            vouched = true;
            *trusted = true;
            if passed_by {
                listed.clear();
                walk.restart();
                passed_by = false;
                continue;
            }
        }
        if vouched {
            apply_list_page(store, items, options, report).await?;
        } else {
            passed_by = true;
        }
    }
    if !vouched {
        return Err(JobError::Refused(none_listed_list_message(
            T::NOUN,
            table.len(),
            listed.len(),
            instance,
        )));
    }
    walk.check_complete(listed.len())?;
    Ok(Listing { listed, started })
}

/// Applies (or, dry, plans) a page of organizations or memberships and notes the drift.
async fn apply_list_page<T: Listed>(
    store: &Store,
    items: Vec<T>,
    options: &ReconcileOptions,
    report: &mut ListReport,
) -> Result<(), JobError> {
    let snapshots = list_snapshots(items, &mut report.summary);
    if snapshots.is_empty() {
        return Ok(());
    }
    let outcomes = T::apply(store, &snapshots, None, options.dry_run).await?;
    for (snapshot, outcome) in snapshots.iter().zip(outcomes) {
        report.summary.record(outcome);
        let (action, detail) = match outcome {
            Outcome::Created => (Action::Create, "missing from the table".to_string()),
            Outcome::Updated => (
                Action::Update,
                format!(
                    "table is older than Clerk's, of {}",
                    iso(T::updated_at(snapshot))
                ),
            ),
            Outcome::Tombstoned => (
                Action::Skip,
                "deleted here, still listed by Clerk".to_string(),
            ),
            _ => continue,
        };
        report.drift.push(ItemDrift {
            action,
            id: T::snapshot_id(snapshot).to_owned(),
            detail: match T::describe(snapshot) {
                Some(what) => format!("{what}: {detail}"),
                None => detail,
            },
        });
    }
    Ok(())
}

/// The candidates (ids by `id_of`) still missing from a second complete walk of the list; one
/// listed again is applied (or, dry, planned) instead. No request when there is none.
async fn confirm<T: Listed, C>(
    store: &Store,
    api: &ClerkApi,
    requests: &mut Requests<'_>,
    options: &ReconcileOptions,
    candidates: Vec<C>,
    id_of: impl Fn(&C) -> &String,
    report: &mut ListReport,
) -> Result<Vec<C>, JobError> {
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let wanted: HashSet<&str> = candidates.iter().map(|c| id_of(c).as_str()).collect();
    let (listed, found) = read_ids::<T>(api, requests, options.page_size, &wanted).await?;
    drop(wanted);
    if !found.is_empty() {
        apply_list_page(store, found, options, report).await?;
    }
    Ok(candidates
        .into_iter()
        .filter(|c| !listed.contains(id_of(c)))
        .collect())
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

/// Why a listing of organizations or memberships with none of the table's changed nothing.
fn none_listed_list_message(
    noun: &str,
    table: usize,
    listed: usize,
    instance: &KeyInstance,
) -> String {
    let listing = if listed == 0 {
        format!("Clerk lists no {noun} at all")
    } else {
        format!("Clerk lists {listed} {noun}, none of them")
    };
    let way_out = match instance {
        KeyInstance::Confirmed(id) => format!(
            "CLERK_SECRET_KEY belongs to instance {id}, which sent the stored webhooks; if these \
             {noun} were really deleted in Clerk, run again with --allow-mass-delete to delete \
             them here"
        ),
        KeyInstance::Unknown => "that usually means CLERK_SECRET_KEY belongs to another Clerk \
             instance; the users table, empty, cannot vouch for it, and --allow-mass-delete does \
             not override this while the key's instance is unconfirmed (see the users' message \
             for how to check)"
            .to_string(),
    };
    format!(
        "refusing to reconcile {noun}: {listing} among the {table} {noun} in the table, and {way_out}. \
         The {noun} were not changed."
    )
}

/// Runs reconciliation every `every` inside `serve`. Several processes may run this; the lease
/// lets one at a time work, the others skip that round.
pub(crate) async fn schedule(
    store: Store,
    api: ClerkApi,
    every: Duration,
    options: ReconcileOptions,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run(&store, &api, &options).await {
            Ok(report) => {
                tracing::info!(
                    summary = %report.summary,
                    organizations = %report.organizations.summary,
                    memberships = %report.memberships.summary,
                    "scheduled reconciliation finished"
                )
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
