//! Accepting connections and serving HTTP/1.1 on them, with what `axum::serve` leaves out:
//!
//! * a header timeout: a connection that does not send a request's headers within
//!   `CLERK_SYNC_HEADER_TIMEOUT`, or stays idle that long between requests, is closed (hyper's
//!   timeout needs a timer, which `axum::serve` does not give it);
//! * a cap on connections per client address and in total, the total lowered at start to fit
//!   the open-file limit: a connection over either is closed at once, so one address cannot
//!   hold the descriptors every other client needs;
//! * a cap on the bytes of one request's head, so a half-sent request holds little memory;
//! * graceful shutdown: on the signal, stop accepting, let requests in flight finish, close idle
//!   connections.
//!
//! Each cut is counted in `clerk_sync_connections_cut_total{reason}` and logged at most once
//! per 10 s per reason.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::limits::{IpNet, LimitSettings, client_key};
use super::log_throttle::LogThrottle;

/// Bytes hyper may buffer of one connection: a request's head must fit (Node.js, which served
/// the route clerk-sync replaces, allows 16 KiB of headers too), and a body is read through it
/// in pieces this large.
const MAX_BUFFER_BYTES: usize = 16 * 1024;
/// Descriptors kept for everything but client connections: the database pool, SQLite's files,
/// Clerk's API, the listeners.
const RESERVED_DESCRIPTORS: usize = 128;
const CUT_LOG_EVERY: Duration = Duration::from_secs(10);
/// After a failed `accept` (say, out of descriptors after all), a pause before the next, so the
/// loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

static SLOW_HEADERS_LOG: LogThrottle = LogThrottle::new(CUT_LOG_EVERY);
static TOO_MANY_LOG: LogThrottle = LogThrottle::new(CUT_LOG_EVERY);
static ACCEPT_ERROR_LOG: LogThrottle = LogThrottle::new(CUT_LOG_EVERY);

/// How connections are limited; from [`LimitSettings`].
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    header_timeout: Duration,
    max_connections: usize,
    max_per_address: usize,
    /// Exempt from the per-address cap: behind them, one address is many clients.
    trusted_proxies: Vec<IpNet>,
}

impl ConnectionLimits {
    /// The limits `settings` ask for, the total lowered to what the open-file limit allows
    /// (logged, with how to raise it).
    pub(crate) fn new(settings: &LimitSettings) -> ConnectionLimits {
        let mut max_connections = settings.max_connections.max(1);
        if let Some(open_files) = open_files_limit() {
            let fits = open_files
                .saturating_sub(RESERVED_DESCRIPTORS)
                .max(open_files / 2);
            if fits < max_connections {
                tracing::warn!(
                    open_files,
                    max_connections = fits,
                    "the open-file limit allows {fits} client connections at once, fewer than \
                     CLERK_SYNC_MAX_CONNECTIONS ({}): raise the limit (systemd: LimitNOFILE=65536; \
                     docker run --ulimit nofile=65536:65536; a shell: ulimit -n 65536)",
                    settings.max_connections
                );
                max_connections = fits;
            }
        }
        // One address never holds more than a quarter of the total, whatever the total came to.
        let max_per_address = settings
            .max_connections_per_address
            .min(max_connections / 4)
            .max(1);
        ConnectionLimits {
            header_timeout: settings.header_timeout,
            max_connections,
            max_per_address,
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }
}

/// Connections the kernel may queue before they are accepted (it caps this at
/// `net.core.somaxconn`, 4096 on current Linux). Tokio's default, 1024, overflows under a flood
/// that reconnects in waves, and a dropped SYN costs an honest client a 1 s retransmission.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for [`serve`], with a backlog deep enough for floods.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere or when
/// unlimited.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open connections, in total and per client address.
struct Tracker {
    limits: ConnectionLimits,
    total: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; counted until dropped.
struct Admitted {
    tracker: Arc<Tracker>,
    /// `None` for a trusted proxy, which is not counted per address.
    address: Option<IpAddr>,
}

impl Tracker {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admitted> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let trusted = self.limits.trusted_proxies.iter().any(|n| n.contains(peer));
        let address = (!trusted).then(|| client_key(peer));
        if let Some(address) = address {
            let mut by_address = self
                .by_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let open = by_address.entry(address).or_insert(0);
            if *open >= self.limits.max_per_address {
                drop(by_address);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *open += 1;
        }
        Some(Admitted {
            tracker: Arc::clone(self),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut by_address = self
                .tracker
                .by_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = by_address.get_mut(&address) {
                *open -= 1;
                if *open == 0 {
                    by_address.remove(&address);
                }
            }
        }
        self.tracker.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the open connections to finish their requests (idle ones are closed at once). Handlers see
/// the peer as `ConnectInfo<SocketAddr>`, as with axum's `into_make_service_with_connect_info`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUFFER_BYTES);
    let tracker = Arc::new(Tracker {
        limits,
        total: AtomicUsize::new(0),
        by_address: Mutex::new(HashMap::new()),
    });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let Some(admitted) = tracker.admit(peer.ip()) else {
            drop(stream);
            crate::metrics::connection_cut("too_many_connections");
            if let Some(count) = TOO_MANY_LOG.due() {
                tracing::warn!(
                    count,
                    client = %peer.ip(),
                    "closed connections over CLERK_SYNC_MAX_CONNECTIONS_PER_ADDRESS or \
                     CLERK_SYNC_MAX_CONNECTIONS at once (count since the last such line; latest \
                     client shown)"
                );
            }
            continue;
        };
        // Whether a request came in: a header timeout before the first one is a client that
        // never sent its headers; after one, an idle keep-alive connection closed as usual.
        let served = Arc::new(AtomicBool::new(false));
        let service = {
            let router = router.clone();
            let served = Arc::clone(&served);
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                served.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move { router.oneshot(request).await }
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let result = connection.await;
            if let Err(error) = result {
                let header_timeout = error.is_timeout();
                if header_timeout && !served.load(Ordering::Relaxed) {
                    crate::metrics::connection_cut("slow_headers");
                    if let Some(count) = SLOW_HEADERS_LOG.due() {
                        tracing::warn!(
                            count,
                            client = %peer.ip(),
                            "closed connections that sent no complete request headers within \
                             CLERK_SYNC_HEADER_TIMEOUT (count since the last such line; latest \
                             client shown)"
                        );
                    }
                } else {
                    tracing::debug!(client = %peer.ip(), %error, "connection ended");
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `accept` can fail for a connection already gone (nothing to do) or for want of descriptors
/// or memory (pause, so as not to spin, and say so).
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    if let Some(count) = ACCEPT_ERROR_LOG.due() {
        tracing::error!(
            count,
            %error,
            "cannot accept connections (count since the last such line); if it says too many \
             open files, raise the open-file limit (systemd: LimitNOFILE=65536) or lower \
             CLERK_SYNC_MAX_CONNECTIONS"
        );
    }
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
