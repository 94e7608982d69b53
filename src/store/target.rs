//! Where the `users` table lives, with passwords kept out of logs.
//!
//! Only the type: reading it from `DATABASE_URL` is configuration (`crate::config`), which sits
//! above the store and so may extend it, never the other way round.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the `users` table lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A PostgreSQL server (Neon, Supabase, RDS, a local one, …).
    Postgres {
        /// The connection URL as given (`postgresql://user:password@host/db?sslmode=…`),
        /// password included: shown only through `Display`, which masks it.
        url: String,
    },
    /// A SQLite database file.
    Sqlite {
        /// The file's path; the file is created if missing, its directory must exist.
        path: PathBuf,
    },
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for DatabaseTarget {
    /// The URL with any password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTarget::Postgres { url } => match url::Url::parse(url) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    // After an unencoded '#' in a password comes the rest of the password.
                    parsed.set_fragment(None);
                    let query: Vec<(String, String)> = parsed
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k == "password" {
                                "***".into()
                            } else {
                                v.into_owned()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    if !query.is_empty() {
                        parsed.query_pairs_mut().clear().extend_pairs(query);
                    }
                    write!(f, "{parsed}")
                }
                Err(_) => f.write_str("postgres://(unparseable URL)"),
            },
            DatabaseTarget::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
        }
    }
}

/// How [`Store::connect`](super::Store::connect) reaches the database: pool size and timeouts.
/// `PoolSettings::default()` suits one small server.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Most connections the pool holds at once (`CLERK_SYNC_DB_MAX_CONNECTIONS`); webhook
    /// writers, API requests and jobs share them.
    pub max_connections: u32,
    /// Longest an operation waits for a free connection of the pool before it fails as
    /// unavailable.
    pub acquire_timeout: Duration,
    /// Longest wait for a new connection to answer when checking the database at start
    /// (`CLERK_SYNC_DB_CONNECT_TIMEOUT`): a server behind a firewall or a paused compute may
    /// accept the TCP connection and then say nothing at all.
    pub connect_timeout: Duration,
    /// Longest time migrations may take (`CLERK_SYNC_MIGRATE_TIMEOUT`); generous, since
    /// adopting a large table builds indexes.
    pub migrate_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            migrate_timeout: DEFAULT_MIGRATE_TIMEOUT,
        }
    }
}

/// Default of [`PoolSettings::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`PoolSettings::migrate_timeout`].
const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);
