//! Floods the release `clerk-sync serve` binary (SQLite, default settings) with slow and junk
//! clients and prints how long a properly signed delivery and `/healthz` take meanwhile (from
//! another address, a new connection each time), the most descriptors the server held, its
//! memory (idle, peak as VmHWM, after the flood) and what it cut. A benchmark, not a test: it
//! prints figures and asserts nothing but that the server started.
//!
//! ```sh
//! cargo bench --bench flood                            # every scenario, 20 s of flood each
//! CLERK_SYNC_BENCH_FLOOD_SECONDS=40 cargo bench --bench flood
//! cargo bench --bench flood -- half                    # only scenarios whose name has "half"
//! CLERK_SYNC_BENCH_BINARY=/path/to/clerk-sync cargo bench --bench flood   # another build
//! ```
//!
//! Hostile clients connect from 127.0.0.1 (and 127.0.0.3-10 where a scenario spreads them);
//! the honest one from 127.0.0.2. Needs about 2,500 open files for itself (`ulimit -n`), Linux
//! (`/proc/<pid>/status`), and a loopback that accepts every 127.0.0.0/8 address.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clerk_sync::clerk::sample::{self, SampleUser, random_id};
use clerk_sync::webhook::{SigningSecret, signed_headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HONEST: [u8; 4] = [127, 0, 0, 2];
const ONE_ADDRESS: &[[u8; 4]] = &[[127, 0, 0, 1]];
const EIGHT_ADDRESSES: &[[u8; 4]] = &[
    [127, 0, 0, 3],
    [127, 0, 0, 4],
    [127, 0, 0, 5],
    [127, 0, 0, 6],
    [127, 0, 0, 7],
    [127, 0, 0, 8],
    [127, 0, 0, 9],
    [127, 0, 0, 10],
];
/// Just under the default body limit (1 MiB).
const NEAR_ONE_MIB: usize = 1_048_000;

/// What each hostile connection does.
#[derive(Clone, Copy)]
enum Attack {
    /// A webhook head that looks like a delivery (fresh timestamp, a well-formed signature),
    /// `declared` bytes of body announced, `sent` of them sent, then nothing.
    StalledBody { declared: usize, sent: usize },
    /// The same with junk svix headers (`svix-timestamp: 1`), as a careless flood sends.
    JunkHeaders { declared: usize, sent: usize },
    /// Part of a request line, then nothing.
    HalfSentRequest,
}

struct Scenario {
    name: &'static str,
    connections: usize,
    from: &'static [[u8; 4]],
    attack: Attack,
    /// Open a connection again when the server closes it.
    reopen: bool,
    /// `ulimit -n` for the server, when lowered.
    open_files: Option<u32>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "1,100 stalled bodies, 1 address",
        connections: 1_100,
        from: ONE_ADDRESS,
        attack: Attack::StalledBody {
            declared: 100_000,
            sent: 10,
        },
        reopen: true,
        open_files: None,
    },
    Scenario {
        name: "1,100 junk-header stalled bodies, 1 address",
        connections: 1_100,
        from: ONE_ADDRESS,
        attack: Attack::JunkHeaders {
            declared: 100_000,
            sent: 10,
        },
        reopen: true,
        open_files: None,
    },
    Scenario {
        name: "1,100 stalled bodies, 8 addresses",
        connections: 1_100,
        from: EIGHT_ADDRESSES,
        attack: Attack::StalledBody {
            declared: 100_000,
            sent: 10,
        },
        reopen: true,
        open_files: None,
    },
    Scenario {
        name: "2,000 half-sent requests, 1 address",
        connections: 2_000,
        from: ONE_ADDRESS,
        attack: Attack::HalfSentRequest,
        reopen: true,
        open_files: None,
    },
    Scenario {
        name: "2,000 half-sent requests, 8 addresses",
        connections: 2_000,
        from: EIGHT_ADDRESSES,
        attack: Attack::HalfSentRequest,
        reopen: true,
        open_files: None,
    },
    Scenario {
        name: "300 half-sent requests, 1 address, server ulimit -n 256",
        connections: 300,
        from: ONE_ADDRESS,
        attack: Attack::HalfSentRequest,
        reopen: true,
        open_files: Some(256),
    },
    Scenario {
        name: "512 stalled near-1-MiB bodies, 1 address",
        connections: 512,
        from: ONE_ADDRESS,
        attack: Attack::StalledBody {
            declared: NEAR_ONE_MIB,
            sent: NEAR_ONE_MIB - 10,
        },
        reopen: false,
        open_files: None,
    },
    Scenario {
        name: "512 stalled near-1-MiB bodies, 8 addresses",
        connections: 512,
        from: EIGHT_ADDRESSES,
        attack: Attack::StalledBody {
            declared: NEAR_ONE_MIB,
            sent: NEAR_ONE_MIB - 10,
        },
        reopen: false,
        open_files: None,
    },
];

fn main() {
    let seconds: u64 = std::env::var("CLERK_SYNC_BENCH_FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "flood benchmark: release clerk-sync serve on SQLite, default settings, {seconds} s of \
         flood per scenario;\nsigned delivery and /healthz from another address, a new \
         connection each, once a second (median / max)\n"
    );
    println!(
        "{:<56} {:>6} {:>17} {:>17} {:>9} {:>9} {:>9}  cut (headers / body / conns / budget)",
        "scenario", "fds", "signed delivery", "/healthz", "RSS idle", "peak RSS", "RSS after"
    );
    runtime.block_on(async {
        for scenario in SCENARIOS {
            if !filter.is_empty() && !filter.iter().any(|f| scenario.name.contains(f.as_str())) {
                continue;
            }
            run(scenario, Duration::from_secs(seconds)).await;
        }
    });
}

/// A `clerk-sync serve` process of its own, on a fresh SQLite file.
struct Server {
    child: Child,
    address: SocketAddr,
    secret: SigningSecret,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(open_files: Option<u32>) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (secret, secret_text) = SigningSecret::generate();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        // Another build (say, an older version's) to compare with.
        let binary = std::env::var("CLERK_SYNC_BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_clerk-sync").to_owned());
        let mut command = match open_files {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" serve"),
                    &binary,
                ]);
                sh
            }
            None => {
                let mut c = Command::new(&binary);
                c.arg("serve");
                c
            }
        };
        let child = command
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("flood.db").display()),
            )
            .env("CLERK_WEBHOOK_SIGNING_SECRET", secret_text)
            .env("CLERK_SYNC_LISTEN", address.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clerk-sync starts");
        let server = Server {
            child,
            address,
            secret,
            _dir: dir,
        };
        let started = Instant::now();
        while healthz(&server).await.0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "clerk-sync did not answer /healthz within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// (VmRSS, VmHWM) in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// Descriptors the server has open (its client connections, mostly).
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn honest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(HONEST))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

/// Status (0: no answer) and time taken.
async fn healthz(server: &Server) -> (u16, Duration) {
    let started = Instant::now();
    let status = honest_client()
        .get(format!("http://{}/healthz", server.address))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

async fn signed_delivery(server: &Server) -> (u16, Duration) {
    let user = SampleUser::new(random_id("user"), chrono::Utc::now().timestamp_millis());
    let body = sample::user_created(&user);
    let headers = signed_headers(
        &server.secret,
        &random_id("msg"),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
    .expect("signs");
    let mut request = honest_client()
        .post(format!("http://{}/api/webhooks/clerk", server.address))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let started = Instant::now();
    let status = request.send().await.map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

async fn cuts(server: &Server) -> [u64; 4] {
    let text = match honest_client()
        .get(format!("http://{}/metrics", server.address))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    clerk_sync::metrics::CUT_REASONS.map(|reason| {
        let prefix = format!("clerk_sync_connections_cut_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    })
}

async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    socket.connect(to).await
}

fn head(attack: Attack, to: SocketAddr) -> Vec<u8> {
    let now = chrono::Utc::now().timestamp();
    let (declared, timestamp, signature) = match attack {
        Attack::HalfSentRequest => return b"POST /api/webhooks/clerk HTTP/1.1\r\nHost: x".to_vec(),
        Attack::StalledBody { declared, .. } => (
            declared,
            now.to_string(),
            "v1,c3RhbGxlZCBib2R5IHN0YWxsZWQgYm9keSBzdGFsbGVkIGJvZHk=",
        ),
        Attack::JunkHeaders { declared, .. } => (declared, "1".to_string(), "junk"),
    };
    format!(
        "POST /api/webhooks/clerk HTTP/1.1\r\nHost: {to}\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\nsvix-id: msg_flood\r\nsvix-timestamp: {timestamp}\r\n\
         svix-signature: {signature}\r\n\r\n"
    )
    .into_bytes()
}

/// One hostile connection after another, until `stop`.
async fn attacker(
    scenario: &'static Scenario,
    from: [u8; 4],
    to: SocketAddr,
    stop: Arc<AtomicBool>,
) {
    let body_bytes = match scenario.attack {
        Attack::StalledBody { sent, .. } | Attack::JunkHeaders { sent, .. } => vec![b' '; sent],
        Attack::HalfSentRequest => Vec::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = connect_from(from, to).await {
            let sent = async {
                stream.write_all(&head(scenario.attack, to)).await?;
                stream.write_all(&body_bytes).await
            };
            if sent.await.is_ok() {
                let mut sink = Vec::new();
                let answered = stream.read_to_end(&mut sink);
                let stopped = async {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    _ = answered => {}
                    () = stopped => {}
                }
            }
        }
        if !scenario.reopen {
            // Hold nothing more, but stay until the end like the others.
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median_and_max(samples: &mut [(u16, Duration)]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let failed = samples.iter().filter(|(s, _)| *s != 200).count();
    samples.sort_by_key(|(_, d)| *d);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let text = format!(
        "{:.0} / {:.0} ms",
        ms(samples[samples.len() / 2].1),
        ms(samples[samples.len() - 1].1)
    );
    if failed > 0 {
        format!("{text} ({failed} failed)")
    } else {
        text
    }
}

async fn run(scenario: &'static Scenario, flood_for: Duration) {
    let server = Server::start(scenario.open_files).await;
    let (idle_rss, _) = server.memory();
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..scenario.connections)
        .map(|n| {
            let from = scenario.from[n % scenario.from.len()];
            tokio::spawn(attacker(scenario, from, server.address, stop.clone()))
        })
        .collect();
    let mut deliveries = Vec::new();
    let mut probes = Vec::new();
    let mut open_files = 0;
    let started = Instant::now();
    // Let the flood take hold first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while started.elapsed() < flood_for {
        deliveries.push(signed_delivery(&server).await);
        probes.push(healthz(&server).await);
        open_files = open_files.max(server.open_files());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cut = cuts(&server).await;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        let _ = attacker.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after_rss, peak_rss) = server.memory();
    println!(
        "{:<56} {:>6} {:>17} {:>17} {:>6.0} MiB {:>5.0} MiB {:>5.0} MiB  {} / {} / {} / {}",
        scenario.name,
        open_files,
        median_and_max(&mut deliveries),
        median_and_max(&mut probes),
        idle_rss,
        peak_rss,
        after_rss,
        cut[0],
        cut[1],
        cut[2],
        cut[3],
    );
}
