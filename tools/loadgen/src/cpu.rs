//! CPU accounting (Linux /proc), for telling who used the machine during the timed phase:
//! loadgen itself, the server, PostgreSQL, or something else.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::report::{round1, round2};

/// Kernel clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_seconds(&stat)
}

/// User plus system CPU seconds of a /proc/PID/stat line. The command name, in parentheses,
/// may hold spaces and parentheses itself: the fields are counted from the last `)`.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// (busy, total) CPU seconds of the whole machine since boot.
fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND))
}

/// CPU seconds of every process named `postgres`, by pid.
fn postgres_cpu() -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        if is_postgres && let Some(cpu) = process_cpu_seconds(&pid) {
            out.insert(pid, cpu);
        }
    }
    out
}

pub(crate) struct Snapshot {
    machine: Option<(f64, f64)>,
    own: Option<f64>,
    server: Option<f64>,
    postgres: HashMap<String, f64>,
}

pub(crate) fn snapshot(server_pid: Option<u32>) -> Snapshot {
    Snapshot {
        machine: machine_cpu_seconds(),
        own: process_cpu_seconds("self"),
        server: server_pid.and_then(|p| process_cpu_seconds(&p.to_string())),
        postgres: postgres_cpu(),
    }
}

/// Who used how much CPU between two snapshots. PostgreSQL processes that started in between
/// count from zero; "other" is what is left of the machine's busy time.
pub(crate) fn report(a: &Snapshot, b: &Snapshot, cores: usize) -> Value {
    let delta = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| round2(y - x));
    let postgres: f64 = b
        .postgres
        .iter()
        .map(|(pid, v)| v - a.postgres.get(pid).copied().unwrap_or(0.0))
        .sum();
    let (busy, total) = match (a.machine, b.machine) {
        (Some((b0, t0)), Some((b1, t1))) => (Some(b1 - b0), Some(t1 - t0)),
        _ => (None, None),
    };
    let own = delta(a.own, b.own);
    let server = delta(a.server, b.server);
    let other = busy.map(|busy| {
        round2((busy - own.unwrap_or(0.0) - server.unwrap_or(0.0) - postgres).max(0.0))
    });
    json!({
        "cores": cores,
        "machine_busy_pct": busy.zip(total).map(|(b, t)| round1(100.0 * b / t.max(1e-9))),
        "loadgen_cpu_s": own,
        "server_cpu_s": server,
        "postgres_cpu_s": round2(postgres),
        "other_cpu_s": other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        // pid (comm) state ppid ... utime stime: the 14th and 15th fields, in ticks.
        let stat = "42 (post gres) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_seconds(stat), Some(3.0));
        assert_eq!(stat_cpu_seconds("42 (short) S 1"), None);
    }

    #[test]
    fn the_report_splits_busy_time_between_loadgen_server_postgres_and_others() {
        let before = Snapshot {
            machine: Some((100.0, 400.0)),
            own: Some(1.0),
            server: Some(2.0),
            postgres: HashMap::from([("10".to_owned(), 5.0)]),
        };
        let after = Snapshot {
            machine: Some((110.0, 420.0)),
            own: Some(3.0),
            server: Some(6.0),
            // pid 11 started during the phase.
            postgres: HashMap::from([("10".to_owned(), 6.0), ("11".to_owned(), 1.5)]),
        };
        let r = report(&before, &after, 2);
        assert_eq!(r["cores"], 2);
        assert_eq!(r["machine_busy_pct"], 50.0);
        assert_eq!(r["loadgen_cpu_s"], 2.0);
        assert_eq!(r["server_cpu_s"], 4.0);
        assert_eq!(r["postgres_cpu_s"], 2.5);
        assert_eq!(r["other_cpu_s"], 1.5);
        let unknown = Snapshot {
            machine: None,
            own: None,
            server: None,
            postgres: HashMap::new(),
        };
        let r = report(&unknown, &unknown, 1);
        assert!(r["machine_busy_pct"].is_null() && r["other_cpu_s"].is_null());
    }
}
