//! Who holds a job's lease: a process named by host, pid, start time, pid namespace and boot,
//! and whether such a process of this machine is gone, read from `/proc`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The text of [`JobError::LeaseHeld`](super::JobError::LeaseHeld).
pub(super) fn held_message(
    job: &str,
    holder: &str,
    expires_at: &DateTime<Utc>,
    expires_in: &Duration,
) -> String {
    let who = match Holder::parse(holder) {
        Some(h) => format!("pid {} on host {} (lease holder `{holder}`)", h.pid, h.host),
        None => format!("`{holder}`"),
    };
    format!(
        "another clerk-sync process is running the {job} job: {who} holds its lease, which \
         expires at {} UTC, in {} s unless renewed. Try again once that process has finished; \
         if it was stopped on another host without releasing the lease, try again after then",
        expires_at.format("%Y-%m-%d %H:%M:%S"),
        expires_in.as_secs() + u64::from(expires_in.subsec_nanos() > 0),
    )
}

/// A lease holder as written in the leases table:
/// `host/pid 4242/run_x/started 123456/pidns 4026531836/boot 3f1b…`. Holders written by
/// older versions (`host/pid 4242/run_x`) lack the start time and are waited out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    host: String,
    pid: u32,
    run: Option<String>,
    /// Start time of the process, in clock ticks after boot (`/proc/<pid>/stat`, field 22):
    /// tells the holder from a later process that got the same pid.
    started: Option<u64>,
    /// The pid namespace the pid is counted in (each container has its own).
    pid_ns: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`: pids and start times restart with every boot.
    boot: Option<String>,
}

impl Holder {
    pub(super) fn parse(text: &str) -> Option<Holder> {
        let mut parts = text.split('/');
        let host = parts.next().filter(|h| !h.is_empty())?.to_owned();
        let pid = parts.next()?.strip_prefix("pid ")?.parse().ok()?;
        let mut holder = Holder {
            host,
            pid,
            run: None,
            started: None,
            pid_ns: None,
            boot: None,
        };
        for part in parts {
            if let Some(started) = part.strip_prefix("started ") {
                holder.started = Some(started.parse().ok()?);
            } else if let Some(ns) = part.strip_prefix("pidns ") {
                holder.pid_ns = Some(ns.parse().ok()?);
            } else if let Some(boot) = part.strip_prefix("boot ") {
                holder.boot = Some(boot.to_owned());
            } else {
                holder.run = Some(part.to_owned());
            }
        }
        Some(holder)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/pid {}", self.host, self.pid)?;
        if let Some(run) = &self.run {
            write!(f, "/{run}")?;
        }
        if let Some(started) = self.started {
            write!(f, "/started {started}")?;
        }
        if let Some(ns) = self.pid_ns {
            write!(f, "/pidns {ns}")?;
        }
        if let Some(boot) = &self.boot {
            write!(f, "/boot {boot}")?;
        }
        Ok(())
    }
}

/// What this process knows of where it runs, read from `/proc` (Linux); elsewhere only host
/// and pid, and no lease is ever taken over.
#[derive(Debug, Clone)]
pub(super) struct ThisProcess {
    host: String,
    pid: u32,
    started: Option<u64>,
    pid_ns: Option<u64>,
    boot: Option<String>,
    /// Whether `/proc` lists every process of our pid namespace. With `hidepid` (systemd's
    /// `ProtectProc=invisible`) other users' processes are hidden, so a missing pid proves
    /// nothing.
    sees_all_processes: bool,
}

impl ThisProcess {
    pub(super) fn inspect() -> ThisProcess {
        let pid = std::process::id();
        ThisProcess {
            host: hostname(),
            pid,
            started: match read_stat(pid) {
                Stat::Running { started, .. } => Some(started),
                Stat::Missing | Stat::Unknown => None,
            },
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .and_then(|link| namespace_inode(&link.to_string_lossy())),
            boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty() && !id.contains('/')),
            sees_all_processes: sees_all_processes(pid),
        }
    }

    pub(super) fn holder(&self, run: &str) -> Holder {
        Holder {
            host: self.host.clone(),
            pid: self.pid,
            run: Some(run.to_owned()),
            started: self.started,
            pid_ns: self.pid_ns,
            boot: self.boot.clone(),
        }
    }

    /// True only when `holder` ran in this very process table (same host, boot and pid
    /// namespace) and no process with its pid and start time is alive there any more.
    pub(super) fn outlived(&self, holder: &Holder) -> bool {
        let same_table = holder.host == self.host
            && holder.pid_ns.is_some()
            && holder.pid_ns == self.pid_ns
            // Same host name, another boot id: a rebooted host or a second machine of the
            // same name; only the first would be safe to take over.
            && (holder.boot.is_none() || self.boot.is_none() || holder.boot == self.boot);
        let Some(started) = holder.started else {
            return false;
        };
        if !same_table || !self.sees_all_processes {
            return false;
        }
        match read_stat(holder.pid) {
            Stat::Missing => true,
            // A zombie has let go of everything but its entry; a different start time is a
            // later process that was given the same pid.
            Stat::Running {
                started: now_started,
                state,
            } => now_started != started || matches!(state, 'Z' | 'X'),
            Stat::Unknown => false,
        }
    }
}

enum Stat {
    Missing,
    Running {
        state: char,
        started: u64,
    },
    /// Unreadable (permissions, no `/proc`) or in a form we do not know.
    Unknown,
}

fn read_stat(pid: u32) -> Stat {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map_or(Stat::Unknown, |(state, started)| Stat::Running {
            state,
            started,
        }),
        // ESRCH: the process went away while the file was being read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => {
            if std::path::Path::new("/proc/self/stat").exists() {
                Stat::Missing
            } else {
                Stat::Unknown
            }
        }
        Err(_) => Stat::Unknown,
    }
}

/// State (field 3) and start time (field 22) from `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may itself hold spaces and parentheses: fields are counted after
/// the last `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let started = fields.get(19)?.parse().ok()?;
    Some((state, started))
}

/// `pid:[4026531836]` -> 4026531836.
fn namespace_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// Whether `/proc` is this pid namespace's and hides no one's processes.
fn sees_all_processes(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self")
        .ok()
        .is_some_and(|link| link.to_string_lossy() == pid.to_string());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let proc_mount = mounts.lines().find(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.get(4) == Some(&"/proc") && line.contains(" - proc ")
    });
    ours && proc_mount.is_some_and(|line| {
        line.split([' ', ','])
            .filter_map(|option| option.strip_prefix("hidepid="))
            .all(|value| matches!(value, "0" | "off"))
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.replace('/', "-"))
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> ThisProcess {
        let here = ThisProcess::inspect();
        assert!(
            here.started.is_some() && here.pid_ns.is_some() && here.sees_all_processes,
            "these tests need Linux's /proc: {here:?}"
        );
        here
    }

    /// A pid that belonged to a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn holders_read_back_as_written() {
        let holder = here().holder("run_abc");
        assert_eq!(Holder::parse(&holder.to_string()), Some(holder.clone()));
        assert!(holder.to_string().starts_with(&format!(
            "{}/pid {}/run_abc/started ",
            holder.host, holder.pid
        )));
        let old = Holder::parse("web-1/pid 42/run_x").unwrap();
        assert_eq!(
            (old.host.as_str(), old.pid, old.started),
            ("web-1", 42, None)
        );
        assert_eq!(Holder::parse("not a holder"), None);
    }

    #[test]
    fn a_lease_of_a_process_of_this_host_that_is_gone_is_taken_over() {
        let here = here();
        let mut holder = here.holder("run_dead");
        holder.pid = dead_pid();
        assert!(here.outlived(&holder), "{holder}");
    }

    #[test]
    fn a_reused_pid_does_not_keep_a_dead_holders_lease() {
        let here = here();
        let mut holder = here.holder("run_reused");
        // Our own pid, alive, but not the process that took the lease.
        holder.started = holder.started.map(|s| s + 1);
        assert!(here.outlived(&holder), "{holder}");
    }

    #[test]
    fn a_live_holders_lease_is_not_taken_over() {
        let here = here();
        assert!(!here.outlived(&here.holder("run_live")));
    }

    #[test]
    fn a_lease_of_another_host_is_waited_out() {
        let here = here();
        let mut holder = here.holder("run_elsewhere");
        holder.pid = dead_pid();
        holder.host = format!("not-{}", here.host);
        assert!(!here.outlived(&holder));
        // Same name, but another boot or another container's pids: not ours to judge.
        let mut rebooted = here.holder("run_rebooted");
        rebooted.pid = dead_pid();
        rebooted.boot = Some("another-boot".into());
        assert!(!here.outlived(&rebooted));
        let mut container = here.holder("run_container");
        container.pid = dead_pid();
        container.pid_ns = here.pid_ns.map(|ns| ns + 1);
        assert!(!here.outlived(&container));
        let mut older = here.holder("run_old");
        older.pid = dead_pid();
        older.started = None;
        assert!(
            !here.outlived(&older),
            "no start time: cannot rule out pid reuse"
        );
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "77 (a) b (c) S 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
        assert_eq!(parse_stat("77 (x"), None);
    }

    #[test]
    fn the_message_says_who_holds_the_lease_and_when_it_expires() {
        let at = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = held_message(
            "backfill",
            "web-1/pid 4242/run_x",
            &at,
            &Duration::from_millis(96_500),
        );
        assert!(text.contains("pid 4242 on host web-1"), "{text}");
        assert!(text.contains("2026-05-01 12:00:00 UTC, in 97 s"), "{text}");
    }
}
