//! What the status page shows: the figures read for it and the chart's series, gathered by
//! `status.rs` and drawn by `html.rs`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::store::{EventSummary, OrganizationCounts};

/// Minutes the chart covers, the current one included.
pub(super) const CHART_MINUTES: i64 = 60;
/// Failed events are counted up to this many (the page says "10,000+").
pub(super) const FAILED_COUNTED_UP_TO: u64 = 10_000;
/// Outcomes in the chart's stacking order, with their colour. `duplicate` is never stored.
pub(super) const OUTCOMES: [(&str, &str); 9] = [
    ("created", "#2e7d32"),
    ("updated", "#1e88e5"),
    ("unchanged", "#90a4ae"),
    ("stale", "#f9a825"),
    ("tombstoned", "#8e24aa"),
    ("deleted", "#ef6c00"),
    ("not_found", "#8d6e63"),
    ("ignored", "#cfd8dc"),
    ("failed", "#d32f2f"),
];
/// Any outcome a later version might add.
pub(super) const OTHER: (&str, &str) = ("other", "#546e7a");

/// The figures read from the database.
pub(super) struct Figures {
    /// `counts[minute][series]`: minute 0 is the oldest, series index into `OUTCOMES`, then
    /// `OTHER`.
    pub(super) counts: Vec<[u64; OUTCOMES.len() + 1]>,
    pub(super) latest: Vec<EventSummary>,
    pub(super) failed: Vec<EventSummary>,
    pub(super) failed_count: u64,
    /// Delivery lags (ms) of the newest events.
    pub(super) lags_ms: Vec<i64>,
    pub(super) live_users: Option<u64>,
    pub(super) soft_deleted_users: Option<u64>,
    pub(super) estimated_users: Option<u64>,
    /// Organizations and memberships, counted or estimated like the users.
    pub(super) organizations: OrganizationCounts,
}

/// Clerk's API, as last checked.
#[derive(Debug, Clone)]
pub(super) enum ClerkHealth {
    NotConfigured,
    Checked {
        at: Instant,
        /// Users Clerk has, or why it could not say.
        result: Result<u64, String>,
    },
}

pub(super) struct PageData {
    pub(super) now: DateTime<Utc>,
    /// Minutes since the epoch of the chart's first minute.
    pub(super) first_minute: i64,
    pub(super) backend: &'static str,
    /// Round trip of `SELECT 1`, or why there was none.
    pub(super) database: Result<Duration, String>,
    pub(super) figures: Result<Figures, String>,
    pub(super) clerk: ClerkHealth,
}
