//! Log set-up: `RUST_LOG` picks the level, `CLERK_SYNC_LOG_FORMAT=json` switches to JSON lines.

use tracing_subscriber::EnvFilter;

/// Default filter: our own lines at info, the libraries only when something is wrong (the
/// drivers log the server's notices, e.g. "schema already exists, skipping", at info).
const DEFAULT_FILTER: &str = "info,sqlx=warn,tokio_postgres=warn,tower_http=warn";

/// Installs the global log subscriber on stderr: the filter from `RUST_LOG` (else our lines at
/// info, the libraries' at warn), JSON lines when `CLERK_SYNC_LOG_FORMAT=json`, colours only on a
/// terminal. A second call, or one in an app that already installed a subscriber, does nothing.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("CLERK_SYNC_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Colours only for a person at a terminal, not for journald or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // try_init: a second call (tests, embedding apps) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
