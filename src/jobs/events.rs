//! `clerk-sync events`: the inbox as a person reads it, and replay of stored events through
//! the same rules as their first delivery.

use std::fmt::Write as _;

use super::{JobError, Summary};
use crate::store::{Store, StoredEvent};
use crate::sync::{DeleteMode, Outcome};

fn time(t: &chrono::NaiveDateTime) -> String {
    t.and_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Events as a table, newest first.
pub fn table(events: &[StoredEvent]) -> String {
    if events.is_empty() {
        return "No events.\n".into();
    }
    let id_width = events
        .iter()
        .map(|e| e.svix_id.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let type_width = events
        .iter()
        .map(|e| e.event_type.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let user_width = events
        .iter()
        .map(|e| e.user_id.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<24}  {:<id_width$}  {:<type_width$}  {:<user_width$}  {:<10}  ERROR\n",
        "RECEIVED", "SVIX ID", "TYPE", "USER", "OUTCOME"
    );
    for e in events {
        let error: String = e.error.as_deref().unwrap_or("").chars().take(80).collect();
        let _ = writeln!(
            out,
            "{:<24}  {:<id_width$}  {:<type_width$}  {:<user_width$}  {:<10}  {error}",
            time(&e.received_at),
            e.svix_id,
            e.event_type,
            e.user_id.as_deref().unwrap_or("-"),
            e.outcome,
        );
    }
    out
}

/// One event in full, with its payload pretty-printed.
pub fn details(event: &StoredEvent) -> String {
    let payload = serde_json::from_str::<serde_json::Value>(&event.payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| event.payload.clone());
    format!(
        "svix-id:     {}\ntype:        {}\nuser:        {}\noutcome:     {}\nerror:       {}\nreceived:    {}\nreplayed:    {}\nsvix time:   {}\npayload:\n{payload}\n",
        event.svix_id,
        event.event_type,
        event.user_id.as_deref().unwrap_or("-"),
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
