//! Prometheus metrics: every series `/metrics` exports at start-up, how counters move with each
//! kind of delivery, naming conventions, the bearer token and the separate listen address, and
//! that the alert rules (deploy/prometheus) and the Grafana dashboard (deploy/grafana) name only
//! metrics and label values the service exports. The rules are checked and unit-tested with
//! Prometheus's own `promtool` (scripts/ci-deps installs it; without it those tests fail).
//!
//! The metrics recorder is global to a process, so tests that assert exact values need a
//! process of their own. nextest runs every test in its own process; under `cargo test` such a
//! test runs itself again, alone, in a child process (`in_own_process`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::metrics as m;
use clerk_sync::sync::Outcome;
use clerk_sync::webhook::{SigningSecret, signed_headers};
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts_test.yml";
const DASHBOARD: &str = "deploy/grafana/clerk-sync.json";

/// Every metric src/metrics.rs defines.
const METRICS: [&str; 19] = [
    m::WEBHOOK_REQUESTS,
    m::WEBHOOK_REJECTED,
    m::EVENTS_APPLIED,
    m::EVENT_PROCESSING,
    m::DELIVERY_LAG,
    m::WEBHOOK_BATCH,
    m::DELETES_KEPT_BY_FOREIGN_KEY,
    m::LAST_EVENT,
    m::CLERK_API_REQUESTS,
    m::FALLBACK_FETCHES,
    m::SESSION_FAILURES,
    m::RATE_LIMITED,
    m::INBOX_FAILED,
    m::INBOX_EVENTS,
    m::CONNECTIONS_CUT,
    m::DB_CONNECTIONS,
    m::DB_MAX_CONNECTIONS,
    m::DATABASE_UP,
    m::BUILD_INFO,
];

/// Labels Prometheus adds to every scraped series; expressions may match on them.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// ------------------------------------------------------------------------------------------
// Isolation

const ALONE_VAR: &str = "CLERK_SYNC_METRICS_TEST_ALONE";

/// True when no other test shares this process (always under nextest), so exact metric values
/// can be asserted. Otherwise runs the calling test alone in a child process of this test
/// binary, asserts it passed, and returns false: the caller then returns at once.
fn in_own_process() -> bool {
    if std::env::var_os("NEXTEST").is_some() || std::env::var_os(ALONE_VAR).is_some() {
        return true;
    }
    // libtest names each test's thread after the test; tokio's block_on runs on that thread.
    let test = std::thread::current()
        .name()
        .filter(|n| n.contains("::"))
        .map(str::to_owned)
        .expect("the test thread is named after the test (libtest)");
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE_VAR, "1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(" 1 passed"),
        "{test}, run alone in a child process, failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

// ------------------------------------------------------------------------------------------
// The exposition format

/// A metric name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    (name.to_string(), labels)
}

/// One `/metrics` answer, parsed.
#[derive(Debug)]
struct Scrape {
    values: BTreeMap<Series, f64>,
    /// Family name (as in `# TYPE`) to its type.
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape {
            values: BTreeMap::new(),
            types: BTreeMap::new(),
            helps: BTreeSet::new(),
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                scrape.types.insert(name.into(), kind.trim().into());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                scrape.helps.insert(name.into());
            } else if !line.starts_with('#') {
                let (key, value) = parse_sample(line);
                assert!(
                    scrape.values.insert(key.clone(), value).is_none(),
                    "{key:?} appears twice"
                );
            }
        }
        scrape
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values.get(&series(name, labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in /metrics"))
    }

    /// The family a sample belongs to (a histogram's `_bucket`/`_sum`/`_count` to the histogram).
    fn family_of(&self, sample: &str) -> Option<&str> {
        if let Some((name, _)) = self.types.get_key_value(sample) {
            return Some(name);
        }
        let base = strip_histogram_suffix(sample);
        self.types
            .get_key_value(base)
            .filter(|(_, kind)| *kind == "histogram")
            .map(|(name, _)| name.as_str())
    }

    fn kind(&self, sample: &str) -> Option<&str> {
        self.family_of(sample)
            .and_then(|f| self.types.get(f))
            .map(String::as_str)
    }
}

/// `name{a="b",c="d"} value` (an optional timestamp after the value is ignored).
fn parse_sample(line: &str) -> (Series, f64) {
    let name_end = line.find(['{', ' ']).expect("a sample line");
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let close = loop {
            let (start, c) = chars.next().expect("labels end with }");
            if c == '}' {
                break start;
            }
            if c == ',' {
                continue;
            }
            let eq = inner[start..].find('=').expect("label=\"value\"") + start;
            let label = inner[start..eq].trim().to_string();
            while chars.next_if(|(i, _)| *i <= eq + 1).is_some() {}
            let mut value = String::new();
            loop {
                match chars.next().expect("a closing quote").1 {
                    '"' => break,
                    '\\' => match chars.next().expect("an escaped character").1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((label, value));
        };
        rest = &inner[close + 1..];
    }
    let value = rest.split_whitespace().next().expect("a value");
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("not a number in {line:?}"));
    labels.sort();
    ((name.to_string(), labels), value)
}

fn strip_histogram_suffix(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

async fn scrape_at(client: &reqwest::Client, url: &str) -> Scrape {
    let response = client.get(url).send().await.expect("/metrics answers");
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(&response.text().await.unwrap())
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_at(&app.client, &format!("{}/metrics", app.address)).await
}

// ------------------------------------------------------------------------------------------
// Metric references in PromQL

/// A metric named in an expression, with the `label="value"` / `label=~"regex"` matchers
/// written right after it.
#[derive(Debug)]
struct MetricRef {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Every `clerk_sync_...` name in `expr`.
fn metric_refs(expr: &str) -> Vec<MetricRef> {
    const PREFIX: &str = "clerk_sync_";
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut refs = Vec::new();
    let mut at = 0;
    while let Some(found) = expr[at..].find(PREFIX) {
        let start = at + found;
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        at = end;
        if expr[..start].chars().next_back().is_some_and(is_name_char) {
            continue;
        }
        let mut matchers = Vec::new();
        if let Some(inner) = expr[end..].strip_prefix('{') {
            let close = inner.find('}').expect("matchers end with }");
            for matcher in split_matchers(&inner[..close]) {
                let op_at = matcher.find(['=', '!']).expect("a matcher operator");
                let label = matcher[..op_at].trim().to_string();
                let after = &matcher[op_at..];
                let op = ["=~", "!~", "!=", "="]
                    .into_iter()
                    .find(|op| after.starts_with(op))
                    .expect("a matcher operator");
                let value = after[op.len()..].trim().trim_matches('"').to_string();
                matchers.push((label, op.to_string(), value));
            }
        }
        refs.push(MetricRef {
            name: expr[start..end].to_string(),
            matchers,
        });
    }
    refs
}

/// Splits `a="x", b=~"y|z"` on the commas outside quotes.
fn split_matchers(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut from) = (false, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Whether an exported label value matches one alternative of a simple regex (`a|b|prefix_.*`).
fn alternative_matches(alternative: &str, value: &str) -> bool {
    match alternative.strip_suffix(".*") {
        Some(prefix) => value.starts_with(prefix),
        None => alternative == ".+" || alternative == value,
    }
}

/// Checks that every metric `exprs` name is exported (a histogram by its `_bucket`, `_sum` or
/// `_count` too) and that every label value they match on exists. Returns the problems.
fn unknown_references(exprs: &[(String, String)], scrape: &Scrape) -> Vec<String> {
    let families: BTreeSet<String> = scrape.types.keys().cloned().collect();
    let mut problems = Vec::new();
    for (place, expr) in exprs {
        for r in metric_refs(expr) {
            // The metric, suffixes stripped, is exported...
            if !families.contains(strip_histogram_suffix(&r.name)) && !families.contains(&r.name) {
                problems.push(format!("{place}: {} is not exported", r.name));
                continue;
            }
            // ...and PromQL finds series under the exact name (a histogram has none under its
            // own name, only `_bucket`, `_sum` and `_count`).
            let exported: Vec<&Vec<(String, String)>> = scrape
                .values
                .keys()
                .filter(|(name, _)| *name == r.name)
                .map(|(_, labels)| labels)
                .collect();
            if exported.is_empty() {
                problems.push(format!("{place}: no series is named {}", r.name));
                continue;
            }
            for (label, op, value) in &r.matchers {
                if TARGET_LABELS.contains(&label.as_str()) || value.contains('$') {
                    continue;
                }
                let values: BTreeSet<&str> = exported
                    .iter()
                    .flat_map(|labels| labels.iter())
                    .filter(|(k, _)| k == label)
                    .map(|(_, v)| v.as_str())
                    .collect();
                if values.is_empty() {
                    problems.push(format!("{place}: {} has no label {label}", r.name));
                    continue;
                }
                let alternatives: Vec<&str> = match op.as_str() {
                    "=" | "!=" => vec![value.as_str()],
                    _ => value.split('|').collect(),
                };
                for alternative in alternatives {
                    if !values.iter().any(|v| alternative_matches(alternative, v)) {
                        problems.push(format!(
                            "{place}: {}{{{label}{op}\"{value}\"}}: no exported {label} matches \
                             {alternative:?} (exported: {values:?})",
                            r.name
                        ));
                    }
                }
            }
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// The alert rules

/// One alerting rule of alerts.yml, read line by line (the file's own layout: two-space YAML,
/// `- alert:` items with `expr: |` blocks or one-line expressions).
#[derive(Debug, Default)]
struct AlertRule {
    name: String,
    expr: String,
    text: String,
}

fn alert_rules(yaml: &str) -> Vec<AlertRule> {
    let mut rules: Vec<AlertRule> = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push(AlertRule {
                name: name.trim().to_string(),
                ..AlertRule::default()
            });
        }
        if let Some(rule) = rules.last_mut() {
            rule.text.push_str(line);
            rule.text.push('\n');
            if let Some(value) = trimmed.strip_prefix("expr:") {
                let value = value.trim();
                if value.starts_with('|') || value.starts_with('>') {
                    let own = indent(line);
                    while i + 1 < lines.len()
                        && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > own)
                    {
                        i += 1;
                        rule.expr.push_str(lines[i].trim());
                        rule.expr.push('\n');
                        rule.text.push_str(lines[i]);
                        rule.text.push('\n');
                    }
                } else {
                    rule.expr = value.trim_matches(['"', '\'']).to_string();
                }
            }
        }
        i += 1;
    }
    rules
}

fn run_promtool(args: &[&str]) -> (bool, String) {
    let output = match Command::new("promtool")
        .args(args)
        .current_dir(repo("."))
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run scripts/ci-deps (it installs the Debian package \
             `prometheus`, which provides promtool)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let (ok, output) = run_promtool(&["check", "rules", ALERTS]);
    assert!(ok, "promtool check rules {ALERTS}:\n{output}");
    let rules = alert_rules(&read(ALERTS)).len();
    assert!(
        output.contains(&format!("SUCCESS: {rules} rules found")),
        "{output}"
    );
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let (ok, output) = run_promtool(&["test", "rules", ALERT_TESTS]);
    assert!(ok, "promtool test rules {ALERT_TESTS}:\n{output}");
    assert!(output.contains("SUCCESS"), "{output}");
    // Every alert is exercised by at least one unit test.
    let tests = read(ALERT_TESTS);
    for rule in alert_rules(&read(ALERTS)) {
        assert!(
            tests.contains(&format!("alertname: {}\n", rule.name)),
            "{ALERT_TESTS} has no test for {}",
            rule.name
        );
    }
}

#[test]
fn every_alert_has_a_duration_severity_summary_and_runbook_hint() {
    let yaml = read(ALERTS);
    assert!(
        yaml.contains("\n  - name: clerk-sync\n"),
        "group clerk-sync"
    );
    let rules = alert_rules(&yaml);
    assert!(rules.len() >= 8, "only {} rules", rules.len());
    let mut names = BTreeSet::new();
    for rule in &rules {
        let name = &rule.name;
        assert!(names.insert(name.clone()), "{name} twice");
        assert!(name.starts_with("ClerkSync"), "{name}");
        assert!(!rule.expr.trim().is_empty(), "{name} has no expr");
        assert!(rule.text.contains("\n        for: "), "{name} has no for:");
        assert!(
            ["critical", "warning", "info"]
                .iter()
                .any(|s| rule.text.contains(&format!("severity: {s}\n"))),
            "{name} has no severity"
        );
        let description = rule
            .text
            .split_once("description:")
            .unwrap_or_else(|| panic!("{name} has no description"))
            .1;
        assert!(rule.text.contains("summary:"), "{name} has no summary");
        // A runbook hint: a command or a log to look at.
        assert!(
            description.contains("`clerk-sync ") || description.contains("`journalctl "),
            "{name}: the description names no clerk-sync command or log"
        );
    }
    for required in [
        "clerk_sync_webhook_rejected_total",
        "clerk_sync_inbox_failed_events > 0",
        "time() - ",
        "clerk_sync_database_up == 0",
        "clerk_sync_clerk_api_requests_total",
        "keys_unavailable",
    ] {
        assert!(
            rules.iter().any(|r| r.expr.contains(required)),
            "no alert on {required}"
        );
    }
    // The failed-events alert tells how to inspect and replay them.
    let failed = rules
        .iter()
        .find(|r| r.expr.contains(m::INBOX_FAILED))
        .unwrap();
    assert!(failed.text.contains("clerk-sync events list --failed"));
    assert!(failed.text.contains("clerk-sync events replay --failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_name_only_exported_metrics_and_labels() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let scrape = scrape(&app).await;
    let exprs: Vec<(String, String)> = alert_rules(&read(ALERTS))
        .into_iter()
        .map(|r| (r.name, r.expr))
        .collect();
    let referenced: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| metric_refs(e))
        .map(|r| strip_histogram_suffix(&r.name).to_string())
        .collect();
    assert!(referenced.len() >= 10, "{referenced:?}");
    let problems = unknown_references(&exprs, &scrape);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------------------------------
// The Grafana dashboard

/// Every PromQL string in the dashboard: targets' `expr` and templating queries.
fn dashboard_queries(value: &Value, place: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            let here = map
                .get("title")
                .or_else(|| map.get("name"))
                .and_then(Value::as_str)
                .map_or_else(|| place.to_string(), |t| format!("{place}/{t}"));
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push((here.clone(), expr.clone())),
                    ("query" | "definition", Value::String(q)) if q.contains("clerk_sync_") => {
                        out.push((here.clone(), q.clone()));
                    }
                    _ => dashboard_queries(v, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                dashboard_queries(item, place, out);
            }
        }
        _ => {}
    }
}

fn all_panels(panels: &[Value]) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in panels {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(all_panels(inner));
        }
    }
    all
}

/// Grafana's variables replaced by values Prometheus accepts.
fn without_grafana_variables(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for var in ["job", "instance"] {
        out = out
            .replace(&format!("${{{var}:regex}}"), ".+")
            .replace(&format!("${{{var}}}"), ".+")
            .replace(&format!("${var}"), ".+");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_valid_and_names_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");

    // Importable with a data source chosen at import time.
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        dashboard["id"].is_null(),
        "an exported dashboard has id null"
    );

    let panels = all_panels(dashboard["panels"].as_array().expect("panels"));
    let mut ids = BTreeSet::new();
    let mut with_queries = 0;
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array();
        let targets = targets.unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        with_queries += 1;
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: data source"
        );
        for target in targets {
            assert!(
                target["expr"].as_str().is_some(),
                "{title}: a target without expr"
            );
            assert!(
                target["refId"].as_str().is_some(),
                "{title}: a target without refId"
            );
            if !target["datasource"].is_null() {
                assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            }
        }
    }
    assert!(
        with_queries >= 12,
        "only {with_queries} panels with queries"
    );

    let mut queries = Vec::new();
    dashboard_queries(&dashboard, "dashboard", &mut queries);
    let referenced: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, q)| metric_refs(q))
        .map(|r| strip_histogram_suffix(&r.name).to_string())
        .collect();
    // Every metric the service exports is on the dashboard.
    for metric in METRICS {
        assert!(
            referenced.contains(metric),
            "the dashboard shows nothing of {metric}"
        );
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let problems = unknown_references(&queries, &scrape(&app).await);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Every panel query is valid PromQL: promtool checks them as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (place, query)) in queries.iter().enumerate() {
        if query.trim_start().starts_with("label_values(") {
            continue;
        }
        let expr = without_grafana_variables(query);
        assert!(!expr.contains('$'), "{place}: unknown variable in {query}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, output) = run_promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        ok,
        "dashboard queries are not valid PromQL:\n{output}\n{rules}"
    );
}

// ------------------------------------------------------------------------------------------
// The service's /metrics

/// Every series src/metrics.rs creates at start-up, with the value it has before any traffic
/// (None: set from the database at scrape time, checked separately).
fn start_up_series() -> BTreeMap<Series, Option<f64>> {
    let mut expected = BTreeMap::new();
    let mut zero = |name: &str, labels: &[(&str, &str)]| {
        expected.insert(series(name, labels), Some(0.0));
    };
    for outcome in m::WEBHOOK_OUTCOMES {
        zero(m::WEBHOOK_REQUESTS, &[("outcome", outcome)]);
    }
    for reason in m::REJECTION_REASONS {
        zero(m::WEBHOOK_REJECTED, &[("reason", reason)]);
    }
    for event_type in m::EVENT_TYPES {
        for outcome in Outcome::ALL
            .into_iter()
            .filter(|o| *o != Outcome::Duplicate)
        {
            zero(
                m::EVENTS_APPLIED,
                &[("event_type", event_type), ("result", outcome.as_str())],
            );
        }
    }
    for endpoint in m::CLERK_ENDPOINTS {
        for status in m::CLERK_STATUSES {
            zero(
                m::CLERK_API_REQUESTS,
                &[("endpoint", endpoint), ("status", status)],
            );
        }
    }
    for result in m::FALLBACK_RESULTS {
        zero(m::FALLBACK_FETCHES, &[("result", result)]);
    }
    for reason in m::SESSION_REASONS {
        zero(m::SESSION_FAILURES, &[("reason", reason)]);
    }
    for scope in m::RATE_LIMIT_SCOPES {
        zero(m::RATE_LIMITED, &[("scope", scope)]);
    }
    for histogram in [m::EVENT_PROCESSING, m::DELIVERY_LAG, m::WEBHOOK_BATCH] {
        zero(&format!("{histogram}_sum"), &[]);
        zero(&format!("{histogram}_count"), &[]);
        zero(&format!("{histogram}_bucket"), &[("le", "+Inf")]);
    }
    zero(m::DELETES_KEPT_BY_FOREIGN_KEY, &[]);
    for reason in m::CUT_REASONS {
        zero(m::CONNECTIONS_CUT, &[("reason", reason)]);
    }
    zero(m::LAST_EVENT, &[]);
    zero(m::INBOX_FAILED, &[]);
    zero(m::INBOX_EVENTS, &[]);
    expected.insert(series(m::DB_CONNECTIONS, &[("state", "idle")]), None);
    expected.insert(series(m::DB_CONNECTIONS, &[("state", "in_use")]), None);
    expected.insert(series(m::DB_MAX_CONNECTIONS, &[]), None);
    expected.insert(series(m::DATABASE_UP, &[]), Some(1.0));
    expected.insert(
        series(m::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0),
    );
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_service_exports_every_series_at_zero() {
    if !in_own_process() {
        return;
    }
    let app = TestApp::spawn(Backend::Sqlite).await;
    let scrape = scrape(&app).await;
    let expected = start_up_series();
    let mut problems = Vec::new();
    for (key, value) in &expected {
        match (scrape.values.get(key), value) {
            (None, _) => problems.push(format!("missing: {key:?}")),
            (Some(got), Some(want)) if got != want => {
                problems.push(format!("{key:?} = {got}, expected {want}"));
            }
            _ => {}
        }
    }
    // Nothing else, apart from the histograms' finite buckets.
    for key in scrape.values.keys() {
        let (name, labels) = key;
        let finite_bucket = name.ends_with("_bucket") && labels.iter().any(|(k, _)| k == "le");
        if !expected.contains_key(key) && !finite_bucket {
            problems.push(format!("unexpected series {key:?}"));
        }
        if finite_bucket && scrape.values[key] != 0.0 {
            problems.push(format!("{key:?} is not 0"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Gauges read from the database and the pool when scraped.
    let max = scrape.value(m::DB_MAX_CONNECTIONS, &[]);
    assert!((1.0..=10.0).contains(&max), "pool size {max}");
    let idle = scrape.value(m::DB_CONNECTIONS, &[("state", "idle")]);
    let in_use = scrape.value(m::DB_CONNECTIONS, &[("state", "in_use")]);
    assert!(
        idle >= 0.0 && in_use >= 0.0 && idle + in_use <= max,
        "{idle} + {in_use}"
    );

    // Both histograms have buckets, and the alert thresholds (2.5 s processing, 60 s lag) sit
    // on bucket boundaries so histogram_quantile is exact there.
    for (histogram, boundary) in [(m::EVENT_PROCESSING, "2.5"), (m::DELIVERY_LAG, "60")] {
        let bucket = format!("{histogram}_bucket");
        let les: Vec<f64> = scrape
            .values
            .keys()
            .filter(|(name, _)| *name == bucket)
            .flat_map(|(_, labels)| labels.iter().filter(|(k, _)| k == "le"))
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .collect();
        assert!(les.len() >= 8, "{histogram}: buckets {les:?}");
        let boundary: f64 = boundary.parse().unwrap();
        assert!(
            les.contains(&boundary),
            "{histogram}: no bucket at {boundary}: {les:?}"
        );
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Counter changes between two scrapes: every counter series, and each histogram's `_count`
/// and `+Inf` bucket. Series that did not change are left out.
fn counter_deltas(before: &Scrape, after: &Scrape) -> BTreeMap<Series, f64> {
    let mut deltas = BTreeMap::new();
    for (key, value) in &after.values {
        let (name, labels) = key;
        let counted = match after.kind(name) {
            Some("counter") => true,
            Some("histogram") => {
                name.ends_with("_count") || labels.iter().any(|(k, v)| k == "le" && v == "+Inf")
            }
            _ => false,
        };
        let old = before.values.get(key).copied();
        if let (Some("histogram"), Some(old)) = (after.kind(name), old) {
            assert!(*value >= old, "{key:?} went down: {old} -> {value}");
        }
        if !counted {
            continue;
        }
        let old = old.unwrap_or_else(|| panic!("{key:?} appeared after start-up"));
        if *value != old {
            deltas.insert(key.clone(), value - old);
        }
    }
    deltas
}

async fn check_counter_deltas(app: &TestApp) {
    let before = scrape(app).await;
    assert_eq!(before.value(m::INBOX_FAILED, &[]), 0.0);
    assert_eq!(before.value(m::INBOX_EVENTS, &[]), 0.0);
    let started = chrono::Utc::now().timestamp();

    // A new user.
    let user = SampleUser::new(random_id("user"), now_ms());
    let created = sample::user_created(&user);
    let svix_id = random_id("msg");
    assert_eq!(
        app.deliver_as(&svix_id, &created).await.outcome(),
        "created"
    );
    // The same delivery again.
    assert_eq!(
        app.deliver_as(&svix_id, &created).await.outcome(),
        "duplicate"
    );
    // An event type clerk-sync does not handle.
    let session = sample::envelope(
        "session.created",
        json!({"object": "session", "id": random_id("sess")}),
        now_ms(),
    );
    assert_eq!(app.deliver(&session.to_string()).await.outcome(), "ignored");
    // A well-formed event that cannot be applied: user.deleted without a user id.
    let no_id = sample::envelope(
        "user.deleted",
        json!({"object": "user", "deleted": true}),
        now_ms(),
    );
    assert_eq!(app.deliver(&no_id.to_string()).await.outcome(), "failed");
    // Signed with another secret.
    let (other, _) = SigningSecret::generate();
    let forged = signed_headers(&other, &random_id("msg"), started, created.as_bytes()).unwrap();
    let answer = app.post(&forged, created.clone().into_bytes()).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    // No svix headers at all.
    assert_eq!(
        app.post(&[], created.clone().into_bytes()).await.status,
        400
    );
    // Signed with our secret, 10 minutes ago.
    let old = signed_headers(
        &app.secret,
        &random_id("msg"),
        started - 600,
        created.as_bytes(),
    );
    let answer = app.post(&old.unwrap(), created.clone().into_bytes()).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    // Signed, but not a Clerk event.
    assert_eq!(app.deliver(r#"{"hello": "world"}"#).await.status, 400);

    let after = scrape(app).await;
    let requests = |outcome| series(m::WEBHOOK_REQUESTS, &[("outcome", outcome)]);
    let rejected = |reason| series(m::WEBHOOK_REJECTED, &[("reason", reason)]);
    let applied = |event_type, result| {
        series(
            m::EVENTS_APPLIED,
            &[("event_type", event_type), ("result", result)],
        )
    };
    // Four deliveries were verified and stored (duplicates included): each was timed, its lag
    // recorded, and written in a batch of its own (they came one after the other).
    let mut expected: BTreeMap<Series, f64> = BTreeMap::from([
        (requests("accepted"), 1.0),
        (requests("duplicate"), 1.0),
        (requests("ignored"), 1.0),
        (requests("failed"), 1.0),
        (requests("rejected"), 4.0),
        (rejected("invalid_signature"), 1.0),
        (rejected("missing_header"), 1.0),
        (rejected("timestamp_too_old"), 1.0),
        (rejected("not_an_event"), 1.0),
        (applied("user.created", "created"), 1.0),
        (applied("other", "ignored"), 1.0),
        (applied("user.deleted", "failed"), 1.0),
    ]);
    for histogram in [m::EVENT_PROCESSING, m::DELIVERY_LAG, m::WEBHOOK_BATCH] {
        expected.insert(series(&format!("{histogram}_count"), &[]), 4.0);
        expected.insert(
            series(&format!("{histogram}_bucket"), &[("le", "+Inf")]),
            4.0,
        );
    }
    assert_eq!(counter_deltas(&before, &after), expected);

    // Gauges: the failed event is in the inbox, and the last event is from just now.
    assert_eq!(after.value(m::INBOX_FAILED, &[]), 1.0);
    let last = after.value(m::LAST_EVENT, &[]);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        last >= started as f64 && last <= now + 1.0,
        "last event {last}, test ran {started}..{now}"
    );
    assert_eq!(after.value(m::DATABASE_UP, &[]), 1.0);
    // Processing took some time, and lag is not negative.
    let took = after.value(&format!("{}_sum", m::EVENT_PROCESSING), &[]);
    assert!(took > 0.0 && took < 60.0, "{took}");
    let lag = after.value(&format!("{}_sum", m::DELIVERY_LAG), &[]);
    assert!((0.0..60.0).contains(&lag), "{lag}");

    // Scrapes change no counter.
    assert!(counter_deltas(&after, &scrape(app).await).is_empty());

    // The inbox holds one row per stored delivery (the duplicate added none), until pruned.
    assert_eq!(after.value(m::INBOX_EVENTS, &[]), 3.0);
    let future = chrono::Utc::now().naive_utc() + chrono::Duration::seconds(1);
    assert_eq!(app.store.prune_events(future, false, 100).await.unwrap(), 2);
    let pruned = scrape(app).await;
    assert_eq!(
        pruned.value(m::INBOX_EVENTS, &[]),
        1.0,
        "the failed event is kept"
    );
    assert_eq!(pruned.value(m::INBOX_FAILED, &[]), 1.0);
    assert_eq!(app.store.prune_events(future, true, 100).await.unwrap(), 1);
    assert_eq!(scrape(app).await.value(m::INBOX_EVENTS, &[]), 0.0);
}

on_both_backends! {
    async fn counters_move_by_exactly_what_each_delivery_did(backend) {
        if !in_own_process() {
            return;
        }
        let app = TestApp::spawn(backend).await;
        check_counter_deltas(&app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_names_and_labels_follow_prometheus_conventions() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // Traffic that carries user ids, emails and svix ids, none of which may become a label.
    let user = SampleUser::new(random_id("user"), now_ms());
    assert_eq!(
        app.deliver(&sample::user_created(&user)).await.outcome(),
        "created"
    );
    let deleted = sample::user_deleted(&user.id, now_ms() + 1);
    assert_eq!(app.deliver(&deleted).await.outcome(), "deleted");
    let scrape = scrape(&app).await;

    for metric in METRICS {
        assert!(
            scrape.types.contains_key(metric),
            "{metric} is not exported"
        );
    }
    for (family, kind) in &scrape.types {
        assert!(
            family.starts_with("clerk_sync_"),
            "{family}: no clerk_sync_ prefix"
        );
        assert!(
            family
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{family}: not snake_case"
        );
        assert!(scrape.helps.contains(family), "{family} has no HELP");
        match kind.as_str() {
            "counter" => assert!(
                family.ends_with("_total"),
                "counter {family} without _total"
            ),
            "histogram" => assert!(
                family.ends_with("_seconds") || family.ends_with("_events"),
                "histogram {family}: time in seconds named _seconds, or a count named after \
                 what it counts"
            ),
            "gauge" => assert!(!family.ends_with("_total"), "gauge {family} named _total"),
            other => panic!("{family}: unexpected type {other}"),
        }
        if family.contains("timestamp") || family.contains("lag") || family.contains("time") {
            assert!(family.ends_with("_seconds"), "{family}: time in seconds");
        }
    }
    for (name, labels) in scrape.values.keys() {
        assert!(scrape.family_of(name).is_some(), "{name} has no # TYPE");
        for (label, value) in labels {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}: label {label}"
            );
            assert!(
                !value.starts_with("user_") && !value.contains('@') && !value.starts_with("msg_"),
                "{name}{{{label}=\"{value}\"}}: a user id, email or message id as a label value"
            );
            assert!(
                value.len() <= 32,
                "{name}{{{label}=\"{value}\"}}: too long for a label"
            );
        }
    }
}

const TOKEN: &str = "metrics-token-for-tests-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_is_required_when_set() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.metrics_token = Some(TOKEN.into())).await;
    let url = format!("{}/metrics", app.address);

    let response = app.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body = response.text().await.unwrap();
    assert!(
        !body.contains(TOKEN) && !body.contains("clerk_sync_"),
        "{body}"
    );

    for wrong in [
        format!("Bearer {TOKEN}x"),
        "Bearer ".to_string(),
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
    ] {
        let response = app
            .client
            .get(&url)
            .header("authorization", &wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "Authorization: {wrong}");
    }

    let response = app
        .client
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let scrape = Scrape::parse(&response.text().await.unwrap());
    assert!(scrape.types.contains_key(m::WEBHOOK_REQUESTS));
    // The token guards /metrics only.
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_scheme_is_case_insensitive() {
    // RFC 7235: the scheme's name is case-insensitive, and some scrapers write it in lower case.
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.metrics_token = Some(TOKEN.into())).await;
    let url = format!("{}/metrics", app.address);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = app
            .client
            .get(&url)
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "Authorization: {scheme} <token>");
    }
    let response = app
        .client
        .get(&url)
        .header("authorization", format!("bearer {TOKEN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "a wrong token stays wrong in any case"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_on_their_own_address_only() {
    // A free port: bind, read, release (the service binds it again right away).
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.metrics_listen = Some(address)).await;

    let scrape = scrape_at(&app.client, &format!("http://{address}/metrics")).await;
    assert!(scrape.types.contains_key(m::WEBHOOK_REQUESTS));
    assert_eq!(scrape.value(m::DATABASE_UP, &[]), 1.0);

    // Not on the main address any more; everything else still is.
    assert_eq!(app.get("/metrics").await.status, 404);
    assert_eq!(app.get("/healthz").await.status, 200);
    // And the metrics address serves nothing else.
    for path in ["/healthz", "/api/users/me", "/openapi.json"] {
        let response = app
            .client
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} on the metrics address");
    }
    let body = sample::user_created(&SampleUser::new(random_id("user"), now_ms()));
    let response = app
        .client
        .post(format!(
            "http://{address}{}",
            clerk_sync::http::WEBHOOK_PATH
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "webhooks on the metrics address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_up_turns_zero_when_the_database_goes_away() {
    let app = TestApp::spawn(Backend::Postgres).await;
    assert_eq!(scrape(&app).await.value(m::DATABASE_UP, &[]), 1.0);

    let crate::support::TestDb::Postgres { admin_url, name } = app.db.as_ref() else {
        unreachable!("a PostgreSQL test database")
    };
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();

    // /metrics still answers (that is how the alert learns about it), quickly, with 0.
    let started = std::time::Instant::now();
    let scrape = scrape(&app).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(scrape.value(m::DATABASE_UP, &[]), 0.0);
    assert_eq!(app.get("/readyz").await.status, 503);
}
