//! Configuration: environment variables and flags in, a validated configuration out.
//!
//! Every mistake is reported with the variable's name, what is wrong, and an example of a right
//! value. Secrets and passwords never appear in `Debug` output or logs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clerk::api::{DEFAULT_API_URL, RetryPolicy, SecretKey};
use crate::clerk::session::{JWKS_MIN_REFETCH, issuer_from_publishable_key};
use crate::http::LimitSettings;
// The target type belongs to the store (it only says where the database is); reading it from
// `DATABASE_URL` stays here with the rest of the environment, and the re-export keeps
// `config::DatabaseTarget` working for callers.
pub use crate::store::DatabaseTarget;
use crate::store::{PoolSettings, UsersTable};
use crate::sync::DeleteMode;
use crate::webhook::SigningSecret;

/// The SQLite file used when `DATABASE_URL` is not set.
pub const DEFAULT_SQLITE_FILE: &str = "clerk-sync.db";
/// Default body limit; Clerk's events are a few KB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// A configuration mistake, worded for the person who made it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl DatabaseTarget {
    /// Reads `DATABASE_URL`: `postgres://` / `postgresql://` (a Neon connection string exactly as
    /// the console hands it out) or `sqlite://PATH`.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if url.contains('#') {
                return Err(ConfigError(
                    "DATABASE_URL contains a '#', which ends a URL: special characters in the \
                     user name or password must be percent-encoded (# as %23, @ as %40, / as \
                     %2F, ? as %3F, : as %3A, % as %25; a password a#b@c is written a%23b%40c). \
                     Neon's console gives the string encoded already"
                        .into(),
                ));
            }
            check_postgres_url(url)?;
            return Ok(DatabaseTarget::Postgres { url: url.into() });
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(ConfigError(format!(
                    "DATABASE_URL={url:?} names no SQLite file; give a path, e.g. \
                     sqlite://clerk-sync.db or sqlite:///var/lib/clerk-sync/users.db \
                     (an in-memory database would lose every event on restart)"
                )));
            }
            return Ok(DatabaseTarget::Sqlite {
                path: PathBuf::from(path),
            });
        }
        let scheme = url.split(':').next().unwrap_or_default();
        Err(ConfigError(format!(
            "DATABASE_URL has the unsupported scheme {scheme:?}; use \
             postgresql://USER:PASSWORD@HOST/DB?sslmode=require (Neon's connection string works \
             as is) or sqlite://PATH (e.g. sqlite://clerk-sync.db)"
        )))
    }

    /// `DATABASE_URL` if set (and not empty), else the SQLite file in the working directory.
    /// The flag says whether the default was taken.
    pub fn from_env_value(url: Option<&str>) -> Result<(Self, bool), ConfigError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Ok((Self::from_url(url)?, false)),
            None => Ok((
                DatabaseTarget::Sqlite {
                    path: PathBuf::from(DEFAULT_SQLITE_FILE),
                },
                true,
            )),
        }
    }

    /// Where a generated development secret is kept: next to the SQLite file, or in the working
    /// directory for PostgreSQL.
    pub fn dev_secret_path(&self) -> PathBuf {
        match self {
            DatabaseTarget::Sqlite { path } => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".webhook-secret");
                path.with_file_name(name)
            }
            DatabaseTarget::Postgres { .. } => PathBuf::from("clerk-sync.webhook-secret"),
        }
    }
}

/// The URL as a URL (its libpq parameters are read when connecting, see
/// `store::postgres::connect`).
fn check_postgres_url(url: &str) -> Result<(), ConfigError> {
    url::Url::parse(url).map(drop).map_err(|e| {
        ConfigError(format!(
            "DATABASE_URL is not a valid PostgreSQL URL ({e}); expected e.g. \
             postgresql://alex:PASSWORD@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require \
             (percent-encode special characters in the password)"
        ))
    })
}

/// Webhook signing secrets as configured: `CLERK_WEBHOOK_SIGNING_SECRET`, else the design's
/// `CLERK_WEBHOOK_SECRET`. `None` when neither is set. Anything but `whsec_` + base64 is
/// refused here, at start: a secret that cannot be right would answer every real delivery 401.
pub fn secrets_from_env(
    signing_secret: Option<&str>,
    legacy_secret: Option<&str>,
) -> Result<Option<Vec<SigningSecret>>, ConfigError> {
    let (name, value) = match (
        signing_secret.filter(|s| !s.trim().is_empty()),
        legacy_secret.filter(|s| !s.trim().is_empty()),
    ) {
        (Some(v), _) => ("CLERK_WEBHOOK_SIGNING_SECRET", v),
        (None, Some(v)) => ("CLERK_WEBHOOK_SECRET", v),
        (None, None) => return Ok(None),
    };
    let where_to_copy = "Copy the endpoint's Signing Secret from Clerk's dashboard (Webhooks, \
         select the endpoint, Signing Secret); it looks like \
         whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw. Several secrets (for rotation) are separated by \
         commas or spaces.";
    let parts: Vec<&str> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect();
    let several = parts.len() > 1;
    let mut secrets = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let which = if several {
            format!("{name} (secret number {} of {})", i + 1, parts.len())
        } else {
            name.to_owned()
        };
        let secret = secret_mistake(part, several)
            .map_or_else(|| SigningSecret::parse(part), Err)
            .map_err(|e| ConfigError(format!("{which} is invalid: {e}. {where_to_copy}")))?;
        secrets.push(secret);
    }
    Ok(Some(secrets))
}

/// The usual ways a pasted signing secret goes wrong, in words that say which one it was.
fn secret_mistake(part: &str, several: bool) -> Option<String> {
    let unquoted = part.trim_matches(|c| c == '"' || c == '\'');
    if unquoted.len() != part.len() {
        return Some(
            "it is wrapped in quotes, which became part of the value; remove them (in a .env \
             file, a systemd EnvironmentFile or a platform's settings the value goes without \
             quotes)"
                .into(),
        );
    }
    let kind = |prefix: &str| part.starts_with(prefix);
    if kind("sk_test_") || kind("sk_live_") {
        return Some(
            "this is a Clerk secret key (it belongs in CLERK_SECRET_KEY), not the webhook \
             signing secret"
                .into(),
        );
    }
    if kind("pk_test_") || kind("pk_live_") {
        return Some(
            "this is a Clerk publishable key (CLERK_PUBLISHABLE_KEY), not the webhook signing \
             secret"
                .into(),
        );
    }
    if kind("whsk_") || kind("whpk_") {
        return Some(
            "asymmetric (whsk_/whpk_) webhook keys are not supported; Clerk signs with whsec_ \
             secrets"
                .into(),
        );
    }
    if !kind("whsec_") {
        let whitespace = if several {
            " (if this was meant to be one secret, it contains a space or a line break: remove it)"
        } else {
            ""
        };
        return Some(format!("it does not start with whsec_{whitespace}"));
    }
    None
}

/// A generated secret for local development.
#[derive(Debug, Clone)]
pub struct DevSecret {
    /// The file the secret is kept in, to tell the developer where it came from.
    pub path: PathBuf,
    /// `whsec_…`, to print for the developer.
    pub text: String,
    /// The same secret, ready to verify deliveries with.
    pub secret: SigningSecret,
    /// Whether this run created it.
    pub created: bool,
}

impl DevSecret {
    /// Reads the development secret kept at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<DevSecret>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ConfigError(format!(
                    "cannot read the development webhook secret {}: {e}",
                    path.display()
                )));
            }
        };
        let secret = SigningSecret::parse(&text).map_err(|e| {
            ConfigError(format!(
                "the development webhook secret in {} is invalid ({e}); delete the file and a new \
                 one is generated",
                path.display()
            ))
        })?;
        Ok(Some(DevSecret {
            path: path.to_owned(),
            text,
            secret,
            created: false,
        }))
    }

    /// Reads the secret at `path`, or generates one and stores it there (readable by the owner
    /// only).
    pub fn load_or_create(path: &Path) -> Result<DevSecret, ConfigError> {
        if let Some(existing) = Self::load(path)? {
            return Ok(existing);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(ConfigError(format!(
                "the directory {} does not exist (the development webhook secret is kept next \
                 to the database, in {}); create it first (mkdir -p {}) or give another path in \
                 DATABASE_URL, e.g. sqlite://clerk-sync.db for the working directory",
                dir.display(),
                path.display(),
                dir.display()
            )));
        }
        let (secret, text) = SigningSecret::generate();
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(file, "{text}")
        };
        write().map_err(|e| {
            ConfigError(format!(
                "cannot store the development webhook secret in {}: {e}",
                path.display()
            ))
        })?;
        Ok(DevSecret {
            path: path.to_owned(),
            text,
            secret,
            created: true,
        })
    }
}

/// Resolves the listen address: `--listen` / `CLERK_SYNC_LISTEN`, else `0.0.0.0:$PORT` (as
/// platforms such as Heroku, Render or Cloud Run set it), else 127.0.0.1:3000.
pub fn listen_address(listen: Option<&str>, port: Option<&str>) -> Result<SocketAddr, ConfigError> {
    if let Some(listen) = listen.map(str::trim).filter(|l| !l.is_empty()) {
        return parse_socket_addr(listen).ok_or_else(|| {
            ConfigError(format!(
                "CLERK_SYNC_LISTEN (or --listen) = {listen:?} is not an address to listen on; \
                 use HOST:PORT, e.g. 127.0.0.1:3000 or 0.0.0.0:8080"
            ))
        });
    }
    if let Some(port) = port.map(str::trim).filter(|p| !p.is_empty()) {
        let port: u16 = port.parse().map_err(|_| {
            ConfigError(format!(
                "PORT = {port:?} is not a port number; use e.g. PORT=8080"
            ))
        })?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    Ok(DEFAULT_LISTEN.parse().expect("the default address parses"))
}

fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    text.to_socket_addrs().ok()?.next()
}

/// How clerk-sync talks to Clerk: the Backend API (fallback fetch, profile updates, signing
/// keys) and the rules for session tokens.
#[derive(Debug, Clone)]
pub struct ClerkSettings {
    /// `CLERK_API_URL`, default `https://api.clerk.com`.
    pub api_url: String,
    /// `CLERK_SECRET_KEY`; without it there is no fallback fetch and no profile update.
    pub secret_key: Option<SecretKey>,
    /// `CLERK_JWT_KEY`: PEM public key for verifying sessions without network calls.
    pub jwt_key: Option<String>,
    /// Expected `iss`, from `CLERK_PUBLISHABLE_KEY`.
    pub issuer: Option<String>,
    /// `CLERK_AUTHORIZED_PARTIES`: allowed `azp` origins.
    pub authorized_parties: Vec<String>,
    /// `CLERK_SYNC_ALLOW_PENDING_SESSIONS`.
    pub allow_pending_sessions: bool,
    /// Timeouts and retries of calls to the Backend API.
    pub retry: RetryPolicy,
    /// Fewest time between two fetches of Clerk's signing keys.
    pub jwks_min_refetch: Duration,
}

impl Default for ClerkSettings {
    fn default() -> Self {
        ClerkSettings {
            api_url: DEFAULT_API_URL.to_owned(),
            secret_key: None,
            jwt_key: None,
            issuer: None,
            authorized_parties: Vec::new(),
            allow_pending_sessions: false,
            retry: RetryPolicy::default(),
            jwks_min_refetch: JWKS_MIN_REFETCH,
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Typed settings for an embedding app: start from [`ClerkSettings::default`] (no secret key,
/// no session checks beyond the signature) and add what the app has. Each value is checked
/// as it is given, with the message `serve` gives for the same variable.
///
/// ```
/// use clerk_sync::config::ClerkSettings;
///
/// # fn main() -> Result<(), clerk_sync::config::ConfigError> {
/// let clerk = ClerkSettings::default()
///     .secret_key("sk_test_abcdefghijklmnopqrstuvwxyz")?
///     .publishable_key("pk_test_Zm9vLWJhci0xMy5jbGVyay5hY2NvdW50cy5kZXYk")?
///     .authorized_parties(["https://example.com", "https://app.example.com/"]);
/// assert_eq!(clerk.issuer.as_deref(), Some("https://foo-bar-13.clerk.accounts.dev"));
/// assert_eq!(clerk.authorized_parties, ["https://example.com", "https://app.example.com"]);
///
/// // A key pasted into the wrong place is refused, naming the variable it belongs to.
/// let mistake = ClerkSettings::default().secret_key("pk_test_abc").unwrap_err();
/// assert!(mistake.to_string().contains("CLERK_SECRET_KEY"));
/// # Ok(())
/// # }
/// ```
impl ClerkSettings {
    /// Clerk's Backend API at another address (`CLERK_API_URL`), e.g. an emulator in tests.
    pub fn api_url(mut self, url: &str) -> Self {
        self.api_url = url.trim().to_owned();
        self
    }

    /// The secret key (`CLERK_SECRET_KEY`, `sk_test_...` or `sk_live_...`): turns on the
    /// fallback fetch, profile updates and, without a JWT key, session verification with
    /// Clerk's published signing keys.
    pub fn secret_key(mut self, key: &str) -> Result<Self, ConfigError> {
        self.secret_key = Some(SecretKey::parse(key.trim()).map_err(ConfigError)?);
        Ok(self)
    }

    /// The PEM public key (`CLERK_JWT_KEY`, "JWKS Public Key" in Clerk's dashboard): sessions
    /// are verified without calling Clerk.
    pub fn jwt_key(mut self, pem: &str) -> Self {
        self.jwt_key = Some(pem.trim().to_owned());
        self
    }

    /// The publishable key (`CLERK_PUBLISHABLE_KEY`, `pk_test_...` or `pk_live_...`): session
    /// tokens must be issued by its Frontend API.
    pub fn publishable_key(mut self, key: &str) -> Result<Self, ConfigError> {
        let issuer = issuer_from_publishable_key(key.trim()).map_err(|e| {
            ConfigError(format!(
                "CLERK_PUBLISHABLE_KEY is invalid: {e}; copy it from Clerk's dashboard \
                 (API keys), e.g. pk_test_Zm9vLWJhci0xMy5jbGVyay5hY2NvdW50cy5kZXYk"
            ))
        })?;
        self.issuer = Some(issuer);
        Ok(self)
    }

    /// The origins a session token may be minted for (`CLERK_AUTHORIZED_PARTIES`, its `azp`),
    /// e.g. `https://example.com`; a trailing slash is dropped. They are also the origins
    /// browsers may call the user API from. Replaces any list given before.
    pub fn authorized_parties<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.authorized_parties = origins
            .into_iter()
            .map(|origin| origin.as_ref().trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        self
    }

    /// Accept sessions that are still pending (`CLERK_SYNC_ALLOW_PENDING_SESSIONS`), e.g. a
    /// user who has yet to choose an organization.
    pub fn allow_pending_sessions(mut self, allow: bool) -> Self {
        self.allow_pending_sessions = allow;
        self
    }

    /// Reads the Clerk variables as the environment (or flags) gave them: unset or blank ones
    /// are left out, the list of authorized parties is split at commas and spaces. Code that
    /// has the values in hand uses the builder methods instead.
    pub fn from_values(
        api_url: Option<&str>,
        secret_key: Option<&str>,
        jwt_key: Option<&str>,
        publishable_key: Option<&str>,
        authorized_parties: Option<&str>,
        allow_pending_sessions: bool,
    ) -> Result<ClerkSettings, ConfigError> {
        let mut settings = ClerkSettings::default().allow_pending_sessions(allow_pending_sessions);
        if let Some(url) = non_empty(api_url) {
            settings = settings.api_url(url);
        }
        if let Some(key) = non_empty(secret_key) {
            settings = settings.secret_key(key)?;
        }
        if let Some(pem) = non_empty(jwt_key) {
            settings = settings.jwt_key(pem);
        }
        if let Some(key) = non_empty(publishable_key) {
            settings = settings.publishable_key(key)?;
        }
        if let Some(list) = non_empty(authorized_parties) {
            settings =
                settings.authorized_parties(list.split(|c: char| c == ',' || c.is_whitespace()));
        }
        Ok(settings)
    }
}

/// Reads a duration like `90s`, `30m`, `6h`, `1d` or `1h30m` (humantime's syntax; a bare number
/// is seconds). Zero is refused: every duration here is a timeout or an interval, and zero of
/// either would stop the service doing its work.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too large a number of seconds; use e.g. 6h or 30d"))?
    } else {
        humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not a duration ({e}); use e.g. 90s, 30m, 6h, 1d or 1h30m")
        })?
    };
    if duration.is_zero() {
        return Err(format!("{text:?} is zero; use e.g. 6h"));
    }
    Ok(duration)
}

/// Default of [`ServeConfig::inbox_retention`]: a month, well past the day or so Svix keeps
/// retrying a delivery, and long enough to look into what happened last week.
pub(crate) const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Reads `CLERK_SYNC_INBOX_RETENTION`: a duration like `30d`, or `off` (`None`) to keep every
/// event.
pub fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(text)
        .map(Some)
        .map_err(|e| format!("{e}; or off to keep every event"))
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The database holding the users table and clerk-sync's own (`DATABASE_URL`).
    pub database: DatabaseTarget,
    /// Where the service listens (`CLERK_SYNC_LISTEN`, `--listen`, `PORT`).
    pub listen: SocketAddr,
    /// Webhook signing secrets; a delivery signed with any of them is accepted, so a secret
    /// can be rotated (`CLERK_WEBHOOK_SIGNING_SECRET`).
    pub secrets: Vec<SigningSecret>,
    /// Apply pending migrations before serving.
    pub migrate: bool,
    /// What `user.deleted` does to the row (`CLERK_SYNC_DELETE_MODE`).
    pub delete_mode: DeleteMode,
    /// Largest webhook body accepted; larger ones get 413 (`CLERK_SYNC_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Database connections (`CLERK_SYNC_DB_MAX_CONNECTIONS` and its timeouts).
    pub pool: PoolSettings,
    /// Transactions writing webhook events at once (`CLERK_SYNC_WRITERS`); `None`: the
    /// backend's default (on PostgreSQL up to 3, at most one fewer than the pool; 1 on SQLite,
    /// whose writes take the file lock).
    pub writers: Option<usize>,
    /// Clerk's keys and session rules; with none (the default), only webhooks are served.
    pub clerk: ClerkSettings,
    /// Run reconciliation this often (`CLERK_SYNC_RECONCILE_EVERY`); off when `None`.
    pub reconcile_every: Option<Duration>,
    /// Remove events received longer ago than this from the inbox, failed ones excepted
    /// (`CLERK_SYNC_INBOX_RETENTION`); every event is kept when `None`.
    pub inbox_retention: Option<Duration>,
    /// Serve `/metrics` on this address instead of the main one (`CLERK_SYNC_METRICS_LISTEN`).
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token `/metrics` requires (`CLERK_SYNC_METRICS_TOKEN`).
    pub metrics_token: Option<String>,
    /// Opens the `/status` page (`CLERK_SYNC_ADMIN_TOKEN`); the page is off without it.
    pub admin_token: Option<String>,
    /// Rate limits, timeouts and connection caps (`CLERK_SYNC_RATE_LIMIT_*`, `*_TIMEOUT`, ...).
    pub limits: LimitSettings,
    /// Where the app's users table is (`CLERK_SYNC_USERS_TABLE`, `CLERK_SYNC_USERS_SCHEMA`).
    pub users_table: UsersTable,
    /// After SIGTERM, how long requests in flight may take before the process exits anyway.
    pub shutdown_timeout: Duration,
}

impl ServeConfig {
    /// Checks what no single value shows wrong, only the values together. [`crate::app::App::build`]
    /// and [`crate::app::build_state`] call it, so a configuration assembled in code gets the
    /// same checks as `serve`'s flags and environment.
    ///
    /// On PostgreSQL each webhook writer keeps a connection of its own, so the writers
    /// (`CLERK_SYNC_WRITERS`) must be fewer than the pool's connections
    /// (`CLERK_SYNC_DB_MAX_CONNECTIONS`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(writers) = self.writers
            && matches!(self.database, DatabaseTarget::Postgres { .. })
            && writers >= self.pool.max_connections as usize
        {
            return Err(ConfigError(format!(
                "CLERK_SYNC_WRITERS = {writers} leaves none of CLERK_SYNC_DB_MAX_CONNECTIONS = \
                 {} connections for the user API, health checks and jobs: each writer keeps a \
                 connection of its own. Use fewer writers or raise CLERK_SYNC_DB_MAX_CONNECTIONS",
                self.pool.max_connections
            )));
        }
        Ok(())
    }

    /// The effective configuration, one `VARIABLE = value` line each, secrets redacted.
    pub fn describe(&self) -> String {
        let set = |present: bool| {
            if present {
                "(set, redacted)"
            } else {
                "(not set)"
            }
        };
        let seconds = |d: Duration| format!("{}s", d.as_secs_f64());
        let lines = [
            ("DATABASE_URL", self.database.to_string()),
            (
                "CLERK_SYNC_USERS_TABLE / _SCHEMA",
                self.users_table.quoted().to_string(),
            ),
            ("CLERK_SYNC_LISTEN", self.listen.to_string()),
            (
                "CLERK_WEBHOOK_SIGNING_SECRET",
                format!("{} secret(s), redacted", self.secrets.len()),
            ),
            (
                "CLERK_SYNC_DELETE_MODE",
                format!("{:?}", self.delete_mode).to_lowercase(),
            ),
            ("CLERK_SYNC_MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            (
                "CLERK_SYNC_DB_MAX_CONNECTIONS",
                self.pool.max_connections.to_string(),
            ),
            (
                "CLERK_SYNC_WRITERS",
                self.writers
                    .map_or("(3 on PostgreSQL, 1 on SQLite)".into(), |w| w.to_string()),
            ),
            ("migrate at start", self.migrate.to_string()),
            ("CLERK_API_URL", self.clerk.api_url.clone()),
            (
                "CLERK_SECRET_KEY",
                set(self.clerk.secret_key.is_some()).into(),
            ),
            ("CLERK_JWT_KEY", set(self.clerk.jwt_key.is_some()).into()),
            (
                "expected issuer (CLERK_PUBLISHABLE_KEY)",
                self.clerk
                    .issuer
                    .clone()
                    .unwrap_or_else(|| "(not checked)".into()),
            ),
            (
                "CLERK_AUTHORIZED_PARTIES",
                if self.clerk.authorized_parties.is_empty() {
                    "(not checked)".into()
                } else {
                    self.clerk.authorized_parties.join(",")
                },
            ),
            (
                "CLERK_SYNC_ALLOW_PENDING_SESSIONS",
                self.clerk.allow_pending_sessions.to_string(),
            ),
            (
                "CLERK_SYNC_RECONCILE_EVERY",
                self.reconcile_every.map_or("off".into(), seconds),
            ),
            (
                "CLERK_SYNC_INBOX_RETENTION",
                self.inbox_retention
                    .map_or("off (every event is kept)".into(), |d| {
                        if d.as_secs() % 86_400 == 0 {
                            format!("{}d", d.as_secs() / 86_400)
                        } else {
                            seconds(d)
                        }
                    }),
            ),
            (
                "CLERK_SYNC_METRICS_LISTEN",
                self.metrics_listen
                    .map_or("(main address)".into(), |a| a.to_string()),
            ),
            (
                "CLERK_SYNC_METRICS_TOKEN",
                set(self.metrics_token.is_some()).into(),
            ),
            (
                "CLERK_SYNC_ADMIN_TOKEN",
                set(self.admin_token.is_some()).into(),
            ),
            (
                "CLERK_SYNC_RATE_LIMIT_UNVERIFIED",
                format!("{}/min per address", self.limits.unverified_per_minute),
            ),
            (
                "CLERK_SYNC_RATE_LIMIT_USER",
                format!("{}/min per user", self.limits.user_per_minute),
            ),
            (
                "CLERK_SYNC_RATE_LIMIT_ADDRESS",
                format!("{}/min per address", self.limits.address_per_minute),
            ),
            (
                "CLERK_SYNC_TRUSTED_PROXIES",
                format!("{:?}", self.limits.trusted_proxies),
            ),
            (
                "CLERK_SYNC_MAX_CONCURRENCY",
                self.limits.max_concurrency.to_string(),
            ),
            (
                "CLERK_SYNC_REQUEST_TIMEOUT",
                seconds(self.limits.request_timeout),
            ),
            ("CLERK_SYNC_DB_TIMEOUT", seconds(self.limits.db_timeout)),
            (
                "CLERK_SYNC_HEADER_TIMEOUT",
                seconds(self.limits.header_timeout),
            ),
            (
                "CLERK_SYNC_MAX_CONNECTIONS",
                self.limits.max_connections.to_string(),
            ),
            (
                "CLERK_SYNC_MAX_CONNECTIONS_PER_ADDRESS",
                self.limits.max_connections_per_address.to_string(),
            ),
            (
                "CLERK_SYNC_BODY_BUFFER_BYTES",
                self.limits.body_buffer_bytes.to_string(),
            ),
            (
                "CLERK_SYNC_SHUTDOWN_TIMEOUT",
                seconds(self.shutdown_timeout),
            ),
        ];
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        lines
            .iter()
            .map(|(key, value)| format!("{key:<width$}  {value}\n"))
            .collect()
    }

    /// A configuration with defaults for everything but the database and secrets (used by
    /// tests and by apps that embed clerk-sync). The defaults are `serve`'s: migrations at
    /// start, hard deletes, a 1 MiB body limit, 10 database connections, the Clerk API off
    /// until [`ServeConfig::clerk`] is given settings, a month of inbox retention.
    ///
    /// ```
    /// use clerk_sync::config::{ClerkSettings, DatabaseTarget, ServeConfig};
    /// use clerk_sync::webhook::SigningSecret;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let database = DatabaseTarget::from_url("postgresql://app:secret@localhost/app")?;
    /// let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// let mut config = ServeConfig::new(database, vec![secret]);
    /// config.clerk = ClerkSettings::default()
    ///     .secret_key("sk_test_abcdefghijklmnopqrstuvwxyz")?
    ///     .authorized_parties(["https://example.com"]);
    /// config.validate()?;
    ///
    /// // Each writer keeps a PostgreSQL connection: as many writers as connections is refused.
    /// config.writers = Some(config.pool.max_connections as usize);
    /// let refused = config.validate().unwrap_err();
    /// assert!(refused.to_string().contains("CLERK_SYNC_WRITERS"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(database: DatabaseTarget, secrets: Vec<SigningSecret>) -> Self {
        ServeConfig {
            database,
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            secrets,
            migrate: true,
            delete_mode: DeleteMode::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pool: PoolSettings::default(),
            writers: None,
            clerk: ClerkSettings::default(),
            reconcile_every: None,
            inbox_retention: Some(DEFAULT_INBOX_RETENTION),
            metrics_listen: None,
            metrics_token: None,
            admin_token: None,
            limits: LimitSettings::default(),
            users_table: UsersTable::default(),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

#[cfg(test)]
mod tests;
