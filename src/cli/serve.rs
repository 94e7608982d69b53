//! `clerk-sync serve`: its flags and environment, turned into a [`ServeConfig`], and the run.

use std::process::ExitCode;

use clap::Args;

use clerk_sync::app::{App, shutdown_signal};
use clerk_sync::config::{
    ClerkSettings, ConfigError, DEFAULT_MAX_BODY_BYTES, DatabaseTarget, DevSecret, ServeConfig,
    listen_address, parse_duration, parse_retention, secrets_from_env,
};
use clerk_sync::http::{IpNet, LimitSettings};
use clerk_sync::store::PoolSettings;
use clerk_sync::sync::DeleteMode;
use clerk_sync::webhook::SigningSecret;

use super::{ClerkApiArgs, DatabaseArgs, SecretArgs, parse_delete_mode};

#[derive(Args)]
struct ListenArgs {
    /// Address to listen on. Default: 0.0.0.0:$PORT when PORT is set, else 127.0.0.1:3000.
    #[arg(long, env = "CLERK_SYNC_LISTEN")]
    listen: Option<String>,
    #[arg(long, env = "PORT", hide = true)]
    port: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    listen: ListenArgs,
    /// Development mode: without a configured secret, generate one, store it next to the
    /// database and print it. Implied when neither DATABASE_URL nor a secret is set.
    #[arg(long)]
    dev: bool,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    no_migrate: bool,
    /// What user.deleted does: "hard" removes the row, "soft" sets deletedAt and frees the
    /// email and username. Either way the id is remembered so the user never comes back.
    #[arg(long, env = "CLERK_SYNC_DELETE_MODE", default_value = "hard", value_parser = parse_delete_mode)]
    delete_mode: DeleteMode,
    /// Largest accepted request body in bytes; larger ones get 413.
    #[arg(long, env = "CLERK_SYNC_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest number of database connections.
    #[arg(long, env = "CLERK_SYNC_DB_MAX_CONNECTIONS", default_value_t = 10)]
    db_max_connections: u32,
    /// Transactions writing webhook events at the same time (default: 3 on PostgreSQL, 1 on
    /// SQLite). Events that arrive while every writer is busy are committed together in one
    /// transaction, so a burst costs far fewer commits. Each PostgreSQL writer keeps a
    /// connection: fewer than CLERK_SYNC_DB_MAX_CONNECTIONS.
    #[arg(long, env = "CLERK_SYNC_WRITERS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    writers: Option<u32>,
    #[command(flatten)]
    clerk: ClerkApiArgs,
    #[command(flatten)]
    sessions: SessionArgs,
    /// Run reconciliation this often (e.g. 6h, 30m, 1d); off by default. Needs
    /// CLERK_SECRET_KEY. With several processes on one database, one at a time runs it.
    #[arg(long, env = "CLERK_SYNC_RECONCILE_EVERY", value_parser = parse_duration)]
    reconcile_every: Option<std::time::Duration>,
    /// Remove events received longer ago than this from the inbox (e.g. 30d, 12h), at start
    /// and every hour; off keeps every event. Failed events are kept until replayed or
    /// removed with `clerk-sync events prune --include-failed`.
    #[arg(long, env = "CLERK_SYNC_INBOX_RETENTION", default_value = "30d", value_parser = parse_retention)]
    inbox_retention: InboxRetention,
    /// Serve /metrics on this address instead of the main one (e.g. 127.0.0.1:9100).
    #[arg(long, env = "CLERK_SYNC_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Require this bearer token for /metrics (open by default, as Prometheus expects).
    #[arg(long, env = "CLERK_SYNC_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Token that opens the /status page (as a Bearer token, or as the password of HTTP Basic
    /// authentication in a browser). The page is off without it.
    #[arg(long, env = "CLERK_SYNC_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Webhook requests that fail verification allowed per client address per minute
    /// (signed deliveries are never limited).
    #[arg(long, env = "CLERK_SYNC_RATE_LIMIT_UNVERIFIED", default_value_t = 60)]
    rate_limit_unverified: u32,
    /// User API requests allowed per signed-in user per minute.
    #[arg(long, env = "CLERK_SYNC_RATE_LIMIT_USER", default_value_t = 120)]
    rate_limit_user: u32,
    /// User API requests allowed per client address per minute.
    #[arg(long, env = "CLERK_SYNC_RATE_LIMIT_ADDRESS", default_value_t = 600)]
    rate_limit_address: u32,
    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For
    /// names the client, e.g. 10.0.0.0/8.
    #[arg(long, env = "CLERK_SYNC_TRUSTED_PROXIES")]
    trusted_proxies: Option<String>,
    /// Requests handled at once; more wait for a slot.
    #[arg(long, env = "CLERK_SYNC_MAX_CONCURRENCY", default_value_t = 512)]
    max_concurrency: usize,
    /// Longest time for one request, body included (e.g. 10s); a slow client gets 503.
    #[arg(long, env = "CLERK_SYNC_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    request_timeout: std::time::Duration,
    /// Longest time for one database operation (e.g. 10s) before the request gets 503.
    #[arg(long, env = "CLERK_SYNC_DB_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    db_timeout: std::time::Duration,
    /// Longest time a connection may take to send a request's headers, or stay idle between
    /// requests (e.g. 10s); then it is closed.
    #[arg(long, env = "CLERK_SYNC_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// Connections open at once (lowered at start to fit the open-file limit); more are closed
    /// at once.
    #[arg(long, env = "CLERK_SYNC_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64 counts as one; trusted
    /// proxies are exempt); more are closed at once.
    #[arg(
        long,
        env = "CLERK_SYNC_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    max_connections_per_address: usize,
    /// Bytes of request bodies held at once while they arrive, before they are verified; one
    /// client address may hold a quarter. Bodies over it get 503 with Retry-After.
    #[arg(long, env = "CLERK_SYNC_BODY_BUFFER_BYTES", default_value_t = 32 * 1024 * 1024)]
    body_buffer_bytes: usize,
    /// After SIGTERM, how long requests in flight may run before the process exits anyway.
    #[arg(long, env = "CLERK_SYNC_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    shutdown_timeout: std::time::Duration,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

/// Session tokens (for /api/users/me).
#[derive(Args)]
struct SessionArgs {
    /// PEM public key ("JWKS Public Key" in Clerk's dashboard) to verify sessions without
    /// calling Clerk.
    #[arg(long, env = "CLERK_JWT_KEY", hide_env_values = true)]
    clerk_jwt_key: Option<String>,
    /// Publishable key (pk_test_... / pk_live_...): tokens must be issued by its Frontend API.
    /// NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY is read too.
    #[arg(long, env = "CLERK_PUBLISHABLE_KEY")]
    clerk_publishable_key: Option<String>,
    #[arg(long, env = "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY", hide = true)]
    next_public_clerk_publishable_key: Option<String>,
    /// Origins allowed as a token's azp, comma-separated (e.g. https://example.com). Strongly
    /// recommended: without it a token minted for any origin is accepted.
    #[arg(long, env = "CLERK_AUTHORIZED_PARTIES")]
    clerk_authorized_parties: Option<String>,
    /// Accept sessions that are still pending (sts: pending, e.g. an organization to choose).
    #[arg(long, env = "CLERK_SYNC_ALLOW_PENDING_SESSIONS")]
    allow_pending_sessions: bool,
}

/// A retention, or none ("off"). An alias, not `Option<Duration>` written out: clap would take
/// that for an optional flag and hand the parser's `None` nowhere.
type InboxRetention = Option<std::time::Duration>;

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let print_config = args.print_config;
    let config = ServeConfig::try_from(args)?;
    if print_config {
        print!("{}", config.describe());
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(target: "clerk_sync", database = %config.database, "starting clerk-sync {}", env!("CARGO_PKG_VERSION"));
    let app = App::build(&config).await?;
    tracing::info!(
        target: "clerk_sync",
        "listening on http://{} (Clerk webhook: POST {})",
        app.local_addr(),
        clerk_sync::http::WEBHOOK_PATH
    );
    app.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, Self::Error> {
        let (database, database_defaulted) = args.database.target()?;
        let secrets = signing_secrets(&args, &database, database_defaulted)?;
        let config = ServeConfig {
            listen: listen_address(args.listen.listen.as_deref(), args.listen.port.as_deref())?,
            migrate: !args.no_migrate,
            delete_mode: args.delete_mode,
            max_body_bytes: args.max_body_bytes,
            pool: PoolSettings {
                max_connections: args.db_max_connections.max(1),
                ..args.database.pool()
            },
            writers: args.writers.map(|w| w as usize),
            clerk: ClerkSettings::from_values(
                Some(&args.clerk.clerk_api_url),
                args.clerk.clerk_secret_key.as_deref(),
                args.sessions.clerk_jwt_key.as_deref(),
                args.sessions
                    .clerk_publishable_key
                    .as_deref()
                    .or(args.sessions.next_public_clerk_publishable_key.as_deref()),
                args.sessions.clerk_authorized_parties.as_deref(),
                args.sessions.allow_pending_sessions,
            )?,
            reconcile_every: args.reconcile_every,
            inbox_retention: args.inbox_retention,
            metrics_listen: args
                .metrics_listen
                .as_deref()
                .filter(|a| !a.trim().is_empty())
                .map(|addr| {
                    listen_address(Some(addr), None).map_err(|_| {
                        ConfigError(format!(
                            "CLERK_SYNC_METRICS_LISTEN = {addr:?} is not an address to listen \
                             on; use HOST:PORT, e.g. 127.0.0.1:9100"
                        ))
                    })
                })
                .transpose()?,
            metrics_token: args.metrics_token.filter(|t| !t.trim().is_empty()),
            admin_token: args.admin_token.filter(|t| !t.trim().is_empty()),
            limits: LimitSettings {
                unverified_per_minute: args.rate_limit_unverified,
                user_per_minute: args.rate_limit_user,
                address_per_minute: args.rate_limit_address,
                trusted_proxies: args
                    .trusted_proxies
                    .as_deref()
                    .unwrap_or_default()
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .map(IpNet::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| ConfigError(format!("CLERK_SYNC_TRUSTED_PROXIES: {e}")))?,
                max_concurrency: args.max_concurrency,
                request_timeout: args.request_timeout,
                db_timeout: args.db_timeout,
                header_timeout: args.header_timeout,
                max_connections: args.max_connections,
                max_connections_per_address: args.max_connections_per_address,
                body_buffer_bytes: args.body_buffer_bytes,
            },
            shutdown_timeout: args.shutdown_timeout,
            users_table: args.database.users_table()?,
            ..ServeConfig::new(database, secrets)
        };
        config.validate()?;
        Ok(config)
    }
}

/// The configured signing secrets or, in development mode, the one kept next to the database
/// (generated the first time). Development mode prints it: the developer needs it to sign test
/// events, and `trigger` finds it there by itself.
fn signing_secrets(
    args: &ServeArgs,
    database: &DatabaseTarget,
    database_defaulted: bool,
) -> Result<Vec<SigningSecret>, ConfigError> {
    let configured = secrets_from_env(
        args.secrets.signing_secret.as_deref(),
        args.secrets.legacy_secret.as_deref(),
    )?;
    match configured {
        Some(secrets) => Ok(secrets),
        None if args.dev || database_defaulted => {
            let dev = DevSecret::load_or_create(&database.dev_secret_path())?;
            if !args.print_config {
                println!(
                    "Development mode: webhooks must be signed with {} ({} {}).\n\
                 Send a test event with: {} trigger user.created",
                    dev.text,
                    if dev.created {
                        "generated and stored in"
                    } else {
                        "read from"
                    },
                    dev.path.display(),
                    this_command()
                );
            }
            Ok(vec![dev.secret])
        }
        None => Err(ConfigError(
            "no webhook signing secret: set CLERK_WEBHOOK_SIGNING_SECRET to the Signing \
             Secret of your endpoint in Clerk's dashboard (Webhooks, select the endpoint), \
             e.g. CLERK_WEBHOOK_SIGNING_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw; \
             or pass --dev to run locally with a generated secret"
                .into(),
        )),
    }
}

/// How the person who started this process runs it again: through cargo (which sets `CARGO`
/// for what `cargo run` starts), or as they invoked it; `clerk-sync` is not on every PATH.
fn this_command() -> String {
    if std::env::var_os("CARGO").is_some() {
        return "cargo run --release --".into();
    }
    std::env::args()
        .next()
        .filter(|arg0| arg0.contains('/'))
        .unwrap_or_else(|| "clerk-sync".into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    const POSTGRES: &str = "postgres://u@localhost/db";

    /// `serve` with a signing secret, so that no development secret is written, and `flags`.
    fn serve(database_url: &str, flags: &[&str]) -> Result<ServeConfig, ConfigError> {
        let secret = [
            "--webhook-signing-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ];
        let argv = ["serve", "--database-url", database_url]
            .into_iter()
            .chain(secret)
            .chain(flags.iter().copied());
        ServeConfig::try_from(Serve::parse_from(argv).args)
    }

    #[test]
    fn writers_must_leave_postgres_connections_for_everything_else() {
        let refused = serve(POSTGRES, &["--writers", "4", "--db-max-connections", "4"])
            .expect_err("as many writers as connections is refused");
        assert!(refused.0.contains("CLERK_SYNC_WRITERS = 4"), "{refused}");
        let accepted = serve(POSTGRES, &["--writers", "3", "--db-max-connections", "4"])
            .expect("fewer writers than connections is accepted");
        assert_eq!(accepted.writers, Some(3));
    }

    #[test]
    fn sqlite_writers_are_not_counted_against_the_pool() {
        let accepted = serve(
            "sqlite://serve-args.db",
            &["--writers", "4", "--db-max-connections", "1"],
        )
        .expect("SQLite writers take no connection of their own from the pool");
        assert_eq!(accepted.writers, Some(4));
    }

    #[test]
    fn trusted_proxies_are_read_as_addresses_or_blocks() {
        let accepted = serve(POSTGRES, &["--trusted-proxies", "10.0.0.0/8, 192.0.2.7"])
            .expect("a block and an address are accepted");
        assert_eq!(accepted.limits.trusted_proxies.len(), 2);
        let refused =
            serve(POSTGRES, &["--trusted-proxies", "nope"]).expect_err("a word is refused");
        assert!(
            refused.0.starts_with("CLERK_SYNC_TRUSTED_PROXIES: "),
            "{refused}"
        );
    }
}
