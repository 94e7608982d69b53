//! The figures of a run: what the timed phase's attempts add up to, rounding and
//! percentiles, and the text form of the summary (`--json` prints the summary itself).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::Event;
use crate::send::Attempt;

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the timed phase's attempts add up to.
pub(crate) struct Figures {
    /// Milliseconds, every attempt's, sorted.
    pub(crate) latencies: Vec<f64>,
    pub(crate) mean: f64,
    /// Attempts by HTTP status ("connection error" without one).
    pub(crate) statuses: BTreeMap<String, usize>,
    /// Attempts by the receiver's `outcome` field, for 2xx answers that have one.
    pub(crate) outcomes: BTreeMap<String, usize>,
    /// Deliveries whose final attempt was not a 2xx, by event type (duplicates apart).
    pub(crate) failed_by_type: BTreeMap<String, usize>,
    pub(crate) failed_final: usize,
    /// The first few non-2xx answers, for the reader to see why.
    pub(crate) samples: Vec<String>,
    /// Per family (user, organization, membership): deliveries, latencies and outcomes.
    pub(crate) by_family: serde_json::Map<String, Value>,
    /// Attempts beyond one per delivery.
    pub(crate) resent: usize,
}

/// `order` is the delivery order (indexes into `events`, duplicate or not) the attempts'
/// indexes refer to.
pub(crate) fn figures(attempts: &[Attempt], order: &[(usize, bool)], events: &[Event]) -> Figures {
    let mut latencies: Vec<f64> = attempts
        .iter()
        .map(|a| a.latency.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed_by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut samples: Vec<String> = Vec::new();
    let mut family_latencies: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut family_outcomes: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for a in attempts {
        let family = events[order[a.index].0].kind.family();
        family_latencies
            .entry(family)
            .or_default()
            .push(a.latency.as_secs_f64() * 1000.0);
        if let Some(outcome) = &a.outcome {
            *family_outcomes
                .entry(family)
                .or_default()
                .entry(outcome.clone())
                .or_default() += 1;
        }
        let status = if a.status == 0 {
            "connection error".to_owned()
        } else {
            a.status.to_string()
        };
        *statuses.entry(status).or_default() += 1;
        if let Some(outcome) = &a.outcome {
            *outcomes.entry(outcome.clone()).or_default() += 1;
        }
        let (event, duplicate) = order[a.index];
        if !(200..300).contains(&a.status) {
            if samples.len() < 5 {
                samples.push(format!(
                    "{} {}: {}",
                    events[event].kind.as_str(),
                    a.status,
                    a.error.as_deref().unwrap_or("").trim()
                ));
            }
            if a.final_attempt {
                let key = format!(
                    "{}{}",
                    events[event].kind.as_str(),
                    if duplicate { " (duplicate)" } else { "" }
                );
                *failed_by_type.entry(key).or_default() += 1;
            }
        }
    }
    let failed_final: usize = failed_by_type.values().sum();
    let resent = attempts.len() - order.len();
    let mut by_family = serde_json::Map::new();
    for (family, mut latencies) in family_latencies {
        latencies.sort_by(f64::total_cmp);
        let deliveries = order
            .iter()
            .filter(|&&(i, _)| events[i].kind.family() == family)
            .count();
        by_family.insert(
            family.to_owned(),
            json!({
                "deliveries": deliveries,
                "share": round3(deliveries as f64 / order.len().max(1) as f64),
                "latency_ms": {
                    "p50": round3(percentile(&latencies, 50.0)),
                    "p95": round3(percentile(&latencies, 95.0)),
                    "p99": round3(percentile(&latencies, 99.0)),
                },
                "outcomes": family_outcomes.remove(family).unwrap_or_default(),
            }),
        );
    }
    Figures {
        latencies,
        mean,
        statuses,
        outcomes,
        failed_by_type,
        failed_final,
        samples,
        by_family,
        resent,
    }
}

fn counts(map: &Value) -> String {
    map.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// The summary as text; `table` names the users table in its line.
pub(crate) fn print_text(s: &Value, table: &str) {
    let st = &s["stream"];
    println!(
        "loadgen -> {} (seed {}, concurrency {})",
        s["url"].as_str().unwrap_or(""),
        s["seed"],
        s["concurrency"]
    );
    println!(
        "  stream      {} events for {} users ({} created, {} updated, {} deleted), {} duplicates, \
         {} deliveries, {} out of order, {} with non-ASCII text, {} moved emails, ~{} B per body",
        st["events"],
        st["users"],
        st["created"],
        st["updated"],
        st["deleted"],
        st["duplicates"],
        st["deliveries"],
        st["out_of_order_deliveries"],
        st["events_with_non_ascii"],
        st["moved_emails"],
        st["mean_body_bytes"],
    );
    let o = &st["organizations"];
    if !o.is_null() {
        println!(
            "  orgs        {} organizations created, {} updated ({} slug moves), {} deleted; \
             {} memberships created ({} re-adds), {} role changes, {} removals, {} removed with \
             their organization or user ({} with an event of their own)",
            o["created"],
            o["updated"],
            o["slug_moves"],
            o["deleted"],
            o["memberships_created"],
            o["readded"],
            o["role_changes"],
            o["removals"],
            o["removed_with_organization_or_user"],
            o["membership_deleted_events_for_those"],
        );
    }
    let p = &st["preloaded_users"];
    if !p.is_null() {
        println!(
            "  preloaded   {} user events before the timed phase, in {} s ({} not 2xx)",
            p["events"], p["elapsed_s"], p["non_2xx"]
        );
    }
    println!(
        "  throughput  {} events/s ({} deliveries in {} s; built and signed in {} s)",
        s["events_per_s"], st["deliveries"], s["elapsed_s"], s["presign_s"]
    );
    let l = &s["latency_ms"];
    println!(
        "  latency ms  p50 {}  p95 {}  p99 {}  max {}  mean {}",
        l["p50"], l["p95"], l["p99"], l["max"], l["mean"]
    );
    if let Some(families) = s["by_family"].as_object()
        && families.len() > 1
    {
        for (family, f) in families {
            let l = &f["latency_ms"];
            println!(
                "  {family:<11} {} deliveries ({} %), latency ms p50 {}  p95 {}  p99 {}; {}",
                f["deliveries"],
                round1(f["share"].as_f64().unwrap_or(0.0) * 100.0),
                l["p50"],
                l["p95"],
                l["p99"],
                counts(&f["outcomes"])
            );
        }
    }
    println!("  answers     {} (per request)", counts(&s["status"]));
    println!("  outcomes    {}", counts(&s["outcomes"]));
    let r = &s["retries"];
    if r["enabled"].as_bool() == Some(true) {
        println!(
            "  retries     {} resent, {} still failing ({})",
            r["resent"],
            r["still_failing"],
            counts(&r["still_failing_by_type"])
        );
    } else if r["still_failing"].as_u64() != Some(0) {
        println!(
            "  failed      {} ({})",
            r["still_failing"],
            counts(&r["still_failing_by_type"])
        );
    }
    for sample in s["failure_samples"].as_array().into_iter().flatten() {
        println!("    e.g. {}", sample.as_str().unwrap_or(""));
    }
    let c = &s["cpu"];
    println!(
        "  cpu         machine {} % busy of {} cores; loadgen {} s, server {} s, postgres {} s, other {} s",
        c["machine_busy_pct"],
        c["cores"],
        c["loadgen_cpu_s"],
        c["server_cpu_s"],
        c["postgres_cpu_s"],
        c["other_cpu_s"]
    );
    let t = &s["table"];
    if !t.is_null() {
        println!(
            "  table {table}: {} rows, {} expected; missing {}, zombie {}, stale {}, field mismatch {} \
             ({} rows of other users)",
            t["rows_in_table"],
            t["expected_rows"],
            t["missing"],
            t["zombies"],
            t["stale"],
            t["field_mismatches"],
            t["unknown_rows"],
        );
        if t["mismatches"].as_u64() != Some(0) {
            println!("    fields: {}", counts(&t["mismatched_fields"]));
            println!("    examples: {}", t["examples"]);
        }
    }
    let o = &s["organization_tables"];
    for name in ["organizations", "memberships"] {
        let t = &o[name];
        if t.is_null() {
            continue;
        }
        println!(
            "  {name}: {} rows, {} expected; missing {}, zombie {}, stale {}, field mismatch {} \
             ({} rows of others)",
            t["rows_in_table"],
            t["expected_rows"],
            t["missing"],
            t["zombies"],
            t["stale"],
            t["field_mismatches"],
            t["unknown_rows"],
        );
        if t["mismatches"].as_u64() != Some(0) {
            println!("    fields: {}", counts(&t["mismatched_fields"]));
            println!("    examples: {}", t["examples"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Key, Kind};

    #[test]
    fn percentile_is_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 5.0);
        assert_eq!(percentile(&sorted, 51.0), 6.0);
        assert_eq!(percentile(&sorted, 95.0), 10.0);
        assert_eq!(percentile(&sorted, 10.0), 1.0);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 100.0), 10.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn rounding_keeps_the_given_decimals() {
        assert_eq!(round1(12.345), 12.3);
        assert_eq!(round2(12.345_1), 12.35);
        assert_eq!(round3(0.000_4), 0.0);
        assert_eq!(round3(1.234_56), 1.235);
    }

    #[test]
    fn counts_reads_as_a_list_or_a_dash() {
        assert_eq!(counts(&json!({"200": 3, "500": 1})), "200: 3, 500: 1");
        assert_eq!(counts(&json!({})), "-");
        assert_eq!(counts(&Value::Null), "-");
    }

    fn attempt(index: usize, status: u16, ms: u64, final_attempt: bool) -> Attempt {
        let ok = (200..300).contains(&status);
        Attempt {
            index,
            status,
            latency: Duration::from_millis(ms),
            outcome: ok.then(|| "applied".to_owned()),
            error: (!ok).then(|| " busy\n".to_owned()),
            final_attempt,
        }
    }

    #[test]
    fn figures_count_retries_and_final_failures_by_type() {
        let events: Vec<Event> = [
            (Key::User(0), Kind::Created),
            (Key::Org(0), Kind::OrgCreated),
        ]
        .into_iter()
        .enumerate()
        .map(|(seq, (key, kind))| Event {
            seq,
            key,
            kind,
            svix_id: format!("msg_{seq}"),
            body: String::new(),
        })
        .collect();
        // The user event, then the organization event twice (a duplicate).
        let order = [(0, false), (1, false), (1, true)];
        let attempts = [
            attempt(0, 503, 4, false),
            attempt(0, 200, 2, true),
            attempt(1, 200, 1, true),
            attempt(2, 0, 3, true),
        ];
        let f = figures(&attempts, &order, &events);
        assert_eq!(f.latencies, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(f.mean, 2.5);
        assert_eq!(f.resent, 1);
        assert_eq!(f.failed_final, 1);
        assert_eq!(
            f.failed_by_type,
            BTreeMap::from([("organization.created (duplicate)".to_owned(), 1)])
        );
        assert_eq!(
            f.statuses,
            BTreeMap::from([
                ("200".to_owned(), 2),
                ("503".to_owned(), 1),
                ("connection error".to_owned(), 1)
            ])
        );
        assert_eq!(f.outcomes, BTreeMap::from([("applied".to_owned(), 2)]));
        assert_eq!(
            f.samples,
            ["user.created 503: busy", "organization.created 0: busy"]
        );
        let user = &f.by_family["user"];
        assert_eq!(user["deliveries"], 1);
        assert_eq!(user["share"], 0.333);
        assert_eq!(user["latency_ms"]["p99"], 4.0);
        assert_eq!(f.by_family["organization"]["deliveries"], 2);
    }
}
