//! Prometheus metrics: the names of the series `/metrics` shows and the values their labels
//! take, for dashboards and alerts; the recorder itself is internal. Every series is created at
//! start-up with a zero value for each of its known labels, so dashboards and alerts work
//! before the first event. Labels are small closed sets; never a user id or an email.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::sync::Outcome;

/// Counter: webhook requests, labelled `outcome` (one of [`WEBHOOK_OUTCOMES`]).
pub const WEBHOOK_REQUESTS: &str = "clerk_sync_webhook_requests_total";
/// Counter: webhook requests refused before processing (e.g. a bad signature or a stale
/// timestamp), labelled `reason` (one of [`REJECTION_REASONS`]).
pub const WEBHOOK_REJECTED: &str = "clerk_sync_webhook_rejected_total";
/// Counter: verified events processed, labelled `event_type` (one of [`EVENT_TYPES`]) and `result`
/// (an [`Outcome`] other than `duplicate`).
pub const EVENTS_APPLIED: &str = "clerk_sync_events_applied_total";
/// Histogram (seconds): time to verify, apply and store one delivery.
pub const EVENT_PROCESSING: &str = "clerk_sync_event_processing_seconds";
/// Histogram (seconds): how long after Svix signed a delivery it was stored (now minus
/// `svix-timestamp`); grows when Svix retries after an outage.
pub const DELIVERY_LAG: &str = "clerk_sync_delivery_lag_seconds";
/// Histogram: deliveries committed together in one transaction (group commit).
pub const WEBHOOK_BATCH: &str = "clerk_sync_webhook_batch_events";
/// Counter: hard deletions a foreign key of the app's refused; the row was kept with its
/// personal data erased and `deletedAt` set.
pub const DELETES_KEPT_BY_FOREIGN_KEY: &str = "clerk_sync_deletes_kept_by_foreign_key_total";
/// Gauge: Unix time (seconds) of the last event stored; 0 before the first.
pub const LAST_EVENT: &str = "clerk_sync_last_event_timestamp_seconds";
/// Counter: calls to Clerk's Backend API, labelled `endpoint` (one of [`CLERK_ENDPOINTS`]) and
/// `status` (one of [`CLERK_STATUSES`]).
pub const CLERK_API_REQUESTS: &str = "clerk_sync_clerk_api_requests_total";
/// Counter: users fetched from Clerk because a signed-in user had no row yet, labelled
/// `result` (one of [`FALLBACK_RESULTS`]).
pub const FALLBACK_FETCHES: &str = "clerk_sync_fallback_fetches_total";
/// Counter: session tokens refused, labelled `reason` (one of [`SESSION_REASONS`]).
pub const SESSION_FAILURES: &str = "clerk_sync_session_verification_failures_total";
/// Counter: requests clerk-sync answered with 429, labelled `scope` (one of
/// [`RATE_LIMIT_SCOPES`]).
pub const RATE_LIMITED: &str = "clerk_sync_rate_limited_total";
/// Gauge: stored events whose outcome is `failed`, i.e. waiting to be replayed.
pub const INBOX_FAILED: &str = "clerk_sync_inbox_failed_events";
/// Gauge: stored events in the inbox, all outcomes, as of the last scrape; on PostgreSQL an
/// estimate above [`INBOX_EXACT_COUNT_UP_TO`](crate::store::INBOX_EXACT_COUNT_UP_TO) rows.
pub const INBOX_EVENTS: &str = "clerk_sync_inbox_events";
/// Counter: client connections or requests cut before they were complete, labelled `reason`
/// (one of [`CUT_REASONS`]).
pub const CONNECTIONS_CUT: &str = "clerk_sync_connections_cut_total";
/// Gauge: database pool connections, labelled `state` (`idle` or `in_use`).
pub const DB_CONNECTIONS: &str = "clerk_sync_db_pool_connections";
/// Gauge: the database pool's size limit (`CLERK_SYNC_DB_MAX_CONNECTIONS`).
pub const DB_MAX_CONNECTIONS: &str = "clerk_sync_db_pool_max_connections";
/// Gauge: 1 when the database answered the last check, else 0.
pub const DATABASE_UP: &str = "clerk_sync_database_up";
/// Gauge: always 1; its `version` label says which clerk-sync version runs.
pub const BUILD_INFO: &str = "clerk_sync_build_info";

/// Values of [`WEBHOOK_REQUESTS`]' `outcome` label: `accepted` (applied), `duplicate` (that
/// `svix-id` was stored before), `ignored` (an event type not synced), `failed` (stored as
/// failed, for replay), `rejected` (see [`WEBHOOK_REJECTED`]), `unavailable` (answered 503 so
/// Svix retries, e.g. the database was away).
pub const WEBHOOK_OUTCOMES: [&str; 6] = [
    "accepted",
    "duplicate",
    "ignored",
    "failed",
    "rejected",
    "unavailable",
];
/// Values of [`WEBHOOK_REJECTED`]' `reason` label: why a webhook request was refused.
pub const REJECTION_REASONS: [&str; 8] = [
    "missing_header",
    "malformed_header",
    "timestamp_too_old",
    "timestamp_in_future",
    "invalid_signature",
    "body_not_utf8",
    "not_an_event",
    "too_large",
];
/// Values of [`EVENTS_APPLIED`]' `event_type` label: the Clerk event types clerk-sync syncs;
/// any other type is counted as `other`.
pub const EVENT_TYPES: [&str; 10] = [
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
    "other",
];
/// Values of [`CLERK_API_REQUESTS`]' `endpoint` label: which Backend API call was made.
pub const CLERK_ENDPOINTS: [&str; 8] = [
    "get_user",
    "update_user",
    "list_users",
    "count_users",
    "list_organizations",
    "list_memberships",
    "jwks",
    "get_instance",
];
/// Values of [`CLERK_API_REQUESTS`]' `status` label: the HTTP status class of Clerk's answer, or
/// `network` when none came.
pub const CLERK_STATUSES: [&str; 6] = ["2xx", "404", "429", "4xx", "5xx", "network"];
/// Values of [`FALLBACK_FETCHES`]' `result` label: `synced` (the row was written), `deleted`
/// (the user is tombstoned), `not_in_clerk` (Clerk has no such user), `failed`.
pub const FALLBACK_RESULTS: [&str; 4] = ["synced", "deleted", "not_in_clerk", "failed"];
/// Values of [`SESSION_FAILURES`]' `reason` label: why a session token was refused.
pub const SESSION_REASONS: [&str; 14] = [
    "missing",
    "malformed",
    "algorithm",
    "category",
    "unknown_key",
    "signature",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "no_subject",
    "authorized_party",
    "issuer",
    "pending",
    "keys_unavailable",
];
/// Values of [`CONNECTIONS_CUT`]' `reason` label: why the server closed a client's connection
/// or request before it was complete.
pub const CUT_REASONS: [&str; 4] = [
    "slow_headers",
    "slow_body",
    "too_many_connections",
    "body_budget",
];
/// Values of [`RATE_LIMITED`]' `scope` label: which limit refused the request.
pub const RATE_LIMIT_SCOPES: [&str; 5] = [
    "webhook_unverified",
    "user",
    "address",
    "concurrency",
    "status_page",
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process and creates every series; returns the handle that
/// renders `/metrics`.
pub(crate) fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(EVENT_PROCESSING.into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_LAG.into()),
                        &[
                            0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0, 86400.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(WEBHOOK_BATCH.into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // An app embedding clerk-sync may have installed its own recorder: then our
            // series go to it, and /metrics here stays empty, rather than the start failing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder is installed: clerk-sync's metrics go to it, and \
                     its own /metrics shows none"
                );
            }
            describe();
            zero();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(WEBHOOK_REQUESTS, "Webhook requests by outcome");
    describe_counter!(
        WEBHOOK_REJECTED,
        "Webhook requests refused before processing, by reason"
    );
    describe_counter!(
        EVENTS_APPLIED,
        "Verified events processed, by event type and result"
    );
    describe_histogram!(
        EVENT_PROCESSING,
        Unit::Seconds,
        "Time to verify, apply and store one delivery"
    );
    describe_histogram!(
        WEBHOOK_BATCH,
        "Deliveries committed together in one transaction (group commit)"
    );
    describe_histogram!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Now minus the delivery's svix-timestamp"
    );
    describe_gauge!(
        LAST_EVENT,
        Unit::Seconds,
        "Unix time of the last event stored (0 before the first)"
    );
    describe_counter!(
        CLERK_API_REQUESTS,
        "Calls to Clerk's Backend API, by endpoint and status class"
    );
    describe_counter!(
        FALLBACK_FETCHES,
        "Users fetched from Clerk because their row was missing, by result"
    );
    describe_counter!(SESSION_FAILURES, "Session tokens refused, by reason");
    describe_counter!(
        DELETES_KEPT_BY_FOREIGN_KEY,
        "Hard deletions a foreign key of the app's refused: the row was kept, personal data erased"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused with 429 by clerk-sync, by scope"
    );
    describe_gauge!(
        INBOX_FAILED,
        "Stored events whose outcome is failed (replayable)"
    );
    describe_gauge!(
        INBOX_EVENTS,
        "Stored events in the inbox (all outcomes), as of the last scrape; on PostgreSQL, above 100000 rows, PostgreSQL's estimate (pg_class.reltuples)"
    );
    describe_counter!(
        CONNECTIONS_CUT,
        "Client connections or requests cut before they were complete, by reason"
    );
    describe_gauge!(DB_CONNECTIONS, "Database pool connections, by state");
    describe_gauge!(DB_MAX_CONNECTIONS, "Database pool size limit");
    describe_gauge!(DATABASE_UP, "1 when the database answered the last check");
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which clerk-sync runs"
    );
}

fn zero() {
    for outcome in WEBHOOK_OUTCOMES {
        counter!(WEBHOOK_REQUESTS, "outcome" => outcome).increment(0);
    }
    for reason in REJECTION_REASONS {
        counter!(WEBHOOK_REJECTED, "reason" => reason).increment(0);
    }
    for event_type in EVENT_TYPES {
        for outcome in Outcome::ALL
            .into_iter()
            .filter(|o| *o != Outcome::Duplicate)
        {
            counter!(EVENTS_APPLIED, "event_type" => event_type, "result" => outcome.as_str())
                .increment(0);
        }
    }
    for endpoint in CLERK_ENDPOINTS {
        for status in CLERK_STATUSES {
            counter!(CLERK_API_REQUESTS, "endpoint" => endpoint, "status" => status).increment(0);
        }
    }
    for result in FALLBACK_RESULTS {
        counter!(FALLBACK_FETCHES, "result" => result).increment(0);
    }
    for reason in SESSION_REASONS {
        counter!(SESSION_FAILURES, "reason" => reason).increment(0);
    }
    for scope in RATE_LIMIT_SCOPES {
        counter!(RATE_LIMITED, "scope" => scope).increment(0);
    }
    counter!(DELETES_KEPT_BY_FOREIGN_KEY).increment(0);
    let _ = histogram!(EVENT_PROCESSING);
    let _ = histogram!(DELIVERY_LAG);
    let _ = histogram!(WEBHOOK_BATCH);
    gauge!(LAST_EVENT).set(0.0);
    gauge!(INBOX_FAILED).set(0.0);
    gauge!(INBOX_EVENTS).set(0.0);
    for reason in CUT_REASONS {
        counter!(CONNECTIONS_CUT, "reason" => reason).increment(0);
    }
    gauge!(DB_CONNECTIONS, "state" => "idle").set(0.0);
    gauge!(DB_CONNECTIONS, "state" => "in_use").set(0.0);
    gauge!(DB_MAX_CONNECTIONS).set(0.0);
    gauge!(DATABASE_UP).set(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

fn event_type_label(event_type: &str) -> &'static str {
    EVENT_TYPES
        .into_iter()
        .find(|t| *t == event_type)
        .unwrap_or("other")
}

pub(crate) fn webhook_request(outcome: &'static str) {
    counter!(WEBHOOK_REQUESTS, "outcome" => outcome).increment(1);
}

pub(crate) fn webhook_rejected(reason: &'static str) {
    webhook_request("rejected");
    counter!(WEBHOOK_REJECTED, "reason" => reason).increment(1);
}

/// A verified delivery was processed.
pub(crate) fn event_processed(
    event_type: &str,
    outcome: Outcome,
    took: Duration,
    svix_timestamp: i64,
) {
    let request_outcome = match outcome {
        Outcome::Duplicate => "duplicate",
        Outcome::Ignored => "ignored",
        Outcome::Failed => "failed",
        _ => "accepted",
    };
    webhook_request(request_outcome);
    if outcome != Outcome::Duplicate {
        counter!(EVENTS_APPLIED, "event_type" => event_type_label(event_type), "result" => outcome.as_str())
            .increment(1);
    }
    histogram!(EVENT_PROCESSING).record(took.as_secs_f64());
    let now = chrono::Utc::now();
    let lag = (now.timestamp_millis() as f64 / 1000.0 - svix_timestamp as f64).max(0.0);
    histogram!(DELIVERY_LAG).record(lag);
    gauge!(LAST_EVENT).set(now.timestamp_millis() as f64 / 1000.0);
}

/// One transaction wrote `events` deliveries.
pub(crate) fn webhook_batch(events: usize) {
    histogram!(WEBHOOK_BATCH).record(events as f64);
}

/// A call to Clerk's API ended with `status` (None: no answer).
pub(crate) fn clerk_api_call(endpoint: &'static str, status: Option<u16>) {
    let class = match status {
        None => "network",
        Some(404) => "404",
        Some(429) => "429",
        Some(200..=299) => "2xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
    };
    counter!(CLERK_API_REQUESTS, "endpoint" => endpoint, "status" => class).increment(1);
}

pub(crate) fn delete_kept_by_foreign_key() {
    counter!(DELETES_KEPT_BY_FOREIGN_KEY).increment(1);
}

pub(crate) fn connection_cut(reason: &'static str) {
    counter!(CONNECTIONS_CUT, "reason" => reason).increment(1);
}

pub(crate) fn set_inbox_events(events: u64) {
    gauge!(INBOX_EVENTS).set(events as f64);
}

pub(crate) fn fallback_fetch(result: &'static str) {
    counter!(FALLBACK_FETCHES, "result" => result).increment(1);
}

pub(crate) fn session_failure(reason: &'static str) {
    counter!(SESSION_FAILURES, "reason" => reason).increment(1);
}

pub(crate) fn rate_limited(scope: &'static str) {
    counter!(RATE_LIMITED, "scope" => scope).increment(1);
}

/// Gauges read from the database and the pool when `/metrics` is scraped.
pub(crate) fn set_database(up: bool, failed_events: Option<u64>, idle: u32, in_use: u32, max: u32) {
    gauge!(DATABASE_UP).set(if up { 1.0 } else { 0.0 });
    if let Some(failed) = failed_events {
        gauge!(INBOX_FAILED).set(failed as f64);
    }
    gauge!(DB_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    gauge!(DB_CONNECTIONS, "state" => "in_use").set(f64::from(in_use));
    gauge!(DB_MAX_CONNECTIONS).set(f64::from(max));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo-nextest runs each test in a process of its own, so this one can install a global
    /// recorder first, as an app embedding clerk-sync might.
    #[test]
    fn another_recorder_installed_first_is_not_a_crash() {
        static OTHER: metrics::NoopRecorder = metrics::NoopRecorder;
        if metrics::set_global_recorder(&OTHER).is_err() {
            // Not alone in this process (plain `cargo test`): nothing to show here.
            return;
        }
        let handle = install();
        webhook_batch(3);
        assert!(
            !handle.render().contains(WEBHOOK_BATCH),
            "the series went to the other recorder"
        );
    }
}
