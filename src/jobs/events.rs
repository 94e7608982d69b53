//! `clerk-sync events`: the inbox as a person reads it, replay of stored events through the
//! same rules as their first delivery, and pruning of old events (by hand, and the retention
//! `serve` applies by itself).

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::time::Duration;

use chrono::NaiveDateTime;
use indicatif::{ProgressBar, ProgressStyle};

use super::{JobError, Summary};
use crate::store::{Store, StoredEvent};
use crate::sync::{DeleteMode, Outcome};

fn time(t: &chrono::NaiveDateTime) -> String {
    t.and_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The organization and membership an event is about, read from its payload: the
/// organization of `organization.*` events, the organization and the membership of
/// `organizationMembership.*` ones (`None` for other events, or what a payload does not say).
/// Read from the JSON alone, so events that failed to apply show them too.
pub(crate) fn organization_ids(
    event_type: &str,
    payload: &str,
) -> (Option<String>, Option<String>) {
    let family = event_type.split_once('.').map(|(family, _)| family);
    if !matches!(family, Some("organization" | "organizationMembership")) {
        return (None, None);
    }
    let Ok(event) = serde_json::from_str::<serde_json::Value>(payload) else {
        return (None, None);
    };
    let data = &event["data"];
    let id = |value: &serde_json::Value| {
        value
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    };
    match family {
        Some("organization") => (id(&data["id"]), None),
        _ => (id(&data["organization"]["id"]), id(&data["id"])),
    }
}

/// Events as a table, newest first: who each is about (the user, and the organization of
/// organization and membership events), and what became of it.
pub fn table(events: &[StoredEvent]) -> String {
    if events.is_empty() {
        return "No events.\n".into();
    }
    let organizations: Vec<Option<String>> = events
        .iter()
        .map(|e| organization_ids(&e.event_type, &e.payload).0)
        .collect();
    let id_width = column_width("SVIX ID", events.iter().map(|e| e.svix_id.len()));
    let type_width = column_width("TYPE", events.iter().map(|e| e.event_type.len()));
    let user_width = column_width(
        "USER",
        events
            .iter()
            .map(|e| e.user_id.as_deref().map_or(1, str::len)),
    );
    let org_width = column_width(
        "ORGANIZATION",
        organizations
            .iter()
            .map(|o| o.as_deref().map_or(1, str::len)),
    );
    let mut out = format!(
        "{:<24}  {:<id_width$}  {:<type_width$}  {:<user_width$}  {:<org_width$}  {:<10}  ERROR\n",
        "RECEIVED", "SVIX ID", "TYPE", "USER", "ORGANIZATION", "OUTCOME"
    );
    for (e, organization) in events.iter().zip(&organizations) {
        let error: String = e.error.as_deref().unwrap_or("").chars().take(80).collect();
        let _ = writeln!(
            out,
            "{:<24}  {:<id_width$}  {:<type_width$}  {:<user_width$}  {:<org_width$}  {:<10}  {error}",
            time(&e.received_at),
            e.svix_id,
            e.event_type,
            e.user_id.as_deref().unwrap_or("-"),
            organization.as_deref().unwrap_or("-"),
            e.outcome,
        );
    }
    out
}

/// The widest of a column's values, and at least its header.
fn column_width(header: &str, values: impl Iterator<Item = usize>) -> usize {
    values.max().unwrap_or(0).max(header.len())
}

/// One event in full, with its payload pretty-printed.
pub fn details(event: &StoredEvent) -> String {
    let payload = serde_json::from_str::<serde_json::Value>(&event.payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| event.payload.clone());
    let mut about = format!("user:        {}\n", event.user_id.as_deref().unwrap_or("-"));
    if event.event_type.starts_with("organization") {
        let (organization, membership) = organization_ids(&event.event_type, &event.payload);
        let _ = writeln!(
            about,
            "org:         {}",
            organization.as_deref().unwrap_or("-")
        );
        if event.event_type.starts_with("organizationMembership.") {
            let _ = writeln!(
                about,
                "membership:  {}",
                membership.as_deref().unwrap_or("-")
            );
        }
    }
    format!(
        "svix-id:     {}\ntype:        {}\n{about}outcome:     {}\nerror:       {}\nreceived:    {}\nreplayed:    {}\nsvix time:   {}\npayload:\n{payload}\n",
        event.svix_id,
        event.event_type,
        event.outcome,
        event.error.as_deref().unwrap_or("-"),
        time(&event.received_at),
        event.replayed_at.as_ref().map_or("never".into(), time),
        event.svix_timestamp,
    )
}

/// Re-applies every failed event, oldest first.
pub async fn replay_failed(
    store: &Store,
    mode: DeleteMode,
) -> Result<(Summary, Vec<(String, Outcome)>), JobError> {
    let mut failed = store.stored_events(true, i64::MAX).await?;
    failed.reverse();
    let mut summary = Summary::default();
    let mut results = Vec::with_capacity(failed.len());
    for event in failed {
        if let Some(outcome) = store.replay(&event.svix_id, mode).await? {
            summary.record(outcome);
            results.push((event.svix_id, outcome));
        }
    }
    Ok((summary, results))
}

/// Rows removed per statement: each chunk is one short transaction, so deliveries waiting for
/// the same tables (SQLite has one writer) wait a fraction of a second, not minutes.
pub(crate) const PRUNE_CHUNK_ROWS: u32 = 5_000;
/// A breath between chunks, in which waiting deliveries take their turn.
const PAUSE_BETWEEN_CHUNKS: Duration = Duration::from_millis(20);
/// How often `serve` applies its inbox retention.
pub(crate) const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What `clerk-sync events prune` removes.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Events received longer ago than this.
    pub older_than: Duration,
    /// Failed events too (kept by default: they still wait for a replay).
    pub include_failed: bool,
    /// Count what would be removed, remove nothing.
    pub dry_run: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Events received before this time (UTC) were removed.
    pub cutoff: NaiveDateTime,
    /// Events removed; in a dry run, how many would be.
    pub removed: u64,
    /// Nothing was removed ([`PruneOptions::dry_run`]).
    pub dry_run: bool,
    /// Failed events were removed too ([`PruneOptions::include_failed`]).
    pub include_failed: bool,
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, plural) = (
            if self.dry_run {
                "would remove"
            } else {
                "removed"
            },
            if self.removed == 1 { "" } else { "s" },
        );
        write!(
            f,
            "{verb} {} event{plural} received before {}",
            self.removed,
            time(&self.cutoff)
        )?;
        if !self.include_failed {
            f.write_str(" (failed events kept; --include-failed removes them too)")?;
        }
        if self.dry_run {
            f.write_str("; dry run: nothing was changed")?;
        }
        Ok(())
    }
}

/// Removes the events `options` describes, chunk by chunk, with a progress bar on a terminal.
pub async fn prune(store: &Store, options: &PruneOptions) -> Result<PruneReport, JobError> {
    let cutoff = cutoff(options.older_than);
    let prunable = store
        .prunable_event_count(cutoff, options.include_failed)
        .await?;
    let mut report = PruneReport {
        cutoff,
        removed: 0,
        dry_run: options.dry_run,
        include_failed: options.include_failed,
    };
    if options.dry_run {
        report.removed = prunable;
        return Ok(report);
    }
    let bar = (!options.quiet
        && prunable > u64::from(PRUNE_CHUNK_ROWS)
        && std::io::stderr().is_terminal())
    .then(|| {
        let bar = ProgressBar::new(prunable);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix("prune");
        bar
    });
    report.removed = remove_in_chunks(store, cutoff, options.include_failed, |removed| {
        if let Some(bar) = &bar {
            bar.inc(removed);
        }
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

/// `serve`'s inbox retention: removes events older than `retention` at start and then every
/// [`RETENTION_EVERY`], failed ones never. Every process on a database may run it: the chunks
/// are idempotent and skip rows another process is removing.
pub(crate) async fn apply_retention(store: Store, retention: Duration) {
    let mut ticker = tokio::time::interval(RETENTION_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let cutoff = cutoff(retention);
        match remove_in_chunks(&store, cutoff, false, |_| {}).await {
            Ok(0) => tracing::debug!("inbox retention: nothing to remove"),
            Ok(removed) => tracing::info!(
                removed,
                cutoff = %time(&cutoff),
                "inbox retention: removed events older than the retention"
            ),
            Err(e) => tracing::warn!(error = %e, "inbox retention failed; trying again later"),
        }
    }
}

/// Received before this time: `older_than` ago.
fn cutoff(older_than: Duration) -> NaiveDateTime {
    chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| crate::store::now().checked_sub_signed(d))
        .unwrap_or(NaiveDateTime::MIN)
}

/// Chunks until one comes back short; `progress` hears each chunk's count.
async fn remove_in_chunks(
    store: &Store,
    cutoff: NaiveDateTime,
    include_failed: bool,
    mut progress: impl FnMut(u64),
) -> Result<u64, JobError> {
    let mut removed = 0;
    loop {
        let chunk = store
            .prune_events(cutoff, include_failed, PRUNE_CHUNK_ROWS)
            .await?;
        removed += chunk;
        progress(chunk);
        if chunk < u64::from(PRUNE_CHUNK_ROWS) {
            return Ok(removed);
        }
        tokio::time::sleep(PAUSE_BETWEEN_CHUNKS).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};

    #[test]
    fn organization_ids_come_from_the_payload_of_organization_events_only() {
        let organization = SampleOrganization::new("org_a", 1_000);
        let membership = SampleMembership::new("orgmem_1", organization.clone(), "user_1", 1_000);
        let id = |s: &str| Some(s.to_owned());
        for (event_type, payload, expected) in [
            (
                "organization.created",
                sample::organization_created(&organization),
                (id("org_a"), None),
            ),
            (
                "organization.deleted",
                sample::organization_deleted("org_a", "acme", 2_000),
                (id("org_a"), None),
            ),
            (
                "organizationMembership.deleted",
                sample::membership_deleted(&membership, 2_000),
                (id("org_a"), id("orgmem_1")),
            ),
            (
                "user.created",
                sample::user_created(&SampleUser::new("user_1", 1_000)),
                (None, None),
            ),
            ("organization.updated", "not json".to_owned(), (None, None)),
        ] {
            assert_eq!(
                organization_ids(event_type, &payload),
                expected,
                "{event_type}"
            );
        }
    }
}
