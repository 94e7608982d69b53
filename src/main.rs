//! The `clerk-sync` command line: parse arguments, build from configuration, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use clerk_sync::app::{App, shutdown_signal};
use clerk_sync::clerk::api::{ClerkApi, RetryPolicy, SecretKey};
use clerk_sync::clerk::sample::SampleUser;
use clerk_sync::config::{
    ClerkSettings, ConfigError, DEFAULT_MAX_BODY_BYTES, DatabaseTarget, DevSecret, ServeConfig,
    listen_address, parse_duration, parse_retention, secrets_from_env,
};
use clerk_sync::http::{IpNet, LimitSettings};
use clerk_sync::jobs::backfill::BackfillOptions;
use clerk_sync::jobs::reconcile::ReconcileOptions;
use clerk_sync::jobs::{JobError, Pacer, events};
use clerk_sync::store::{PoolSettings, Store, Tombstone, UsersTable};
use clerk_sync::sync::DeleteMode;
use clerk_sync::trigger::{self, TriggerEvent, UserFields};
use clerk_sync::webhook::SigningSecret;

#[derive(Parser)]
#[command(
    name = "clerk-sync",
    version,
    about = "Keeps your PostgreSQL (Neon) or SQLite `users` table in step with Clerk.",
    long_about = "Keeps your PostgreSQL (Neon) or SQLite `users` table in step with Clerk.\n\n\
        Clerk sends Svix-signed webhooks to POST /api/webhooks/clerk; clerk-sync verifies them, \
        applies user.created / user.updated / user.deleted exactly once, newest snapshot wins.",
    after_help = "Try it locally, no configuration needed:\n  \
        clerk-sync serve                    # SQLite file ./clerk-sync.db, generated dev secret\n  \
        clerk-sync trigger user.created     # in another terminal\n\n\
        Production (Neon):\n  \
        DATABASE_URL='postgresql://USER:PASSWORD@ep-xxx.REGION.aws.neon.tech/neondb?sslmode=require&channel_binding=require' \\\n  \
        CLERK_WEBHOOK_SIGNING_SECRET=whsec_... clerk-sync serve --listen 0.0.0.0:3000\n\n\
        Each command's --help lists its settings with their environment variables. Read by \
        every command too:\n  \
        RUST_LOG                  log filter, default info (e.g. debug, clerk_sync=debug,sqlx=warn)\n  \
        CLERK_SYNC_LOG_FORMAT     text (default) or json, one object per line\n  \
        CLERK_WEBHOOK_SECRET      the design's older name of CLERK_WEBHOOK_SIGNING_SECRET, read \
        when that one is unset"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook service (applies pending migrations first).
    #[command(after_help = "Examples:\n  \
        clerk-sync serve                                  # dev: SQLite + generated secret\n  \
        DATABASE_URL=postgres://... CLERK_WEBHOOK_SIGNING_SECRET=whsec_... clerk-sync serve\n  \
        CLERK_WEBHOOK_SIGNING_SECRET='whsec_old,whsec_new' clerk-sync serve   # rotating secrets\n\n\
        Endpoints: POST /api/webhooks/clerk, GET|PATCH /api/users/me, GET /healthz, GET /readyz, \
        GET /openapi.json, GET /metrics, GET /status\n\n\
        Also read: RUST_LOG (log filter, default info), CLERK_SYNC_LOG_FORMAT (text or json), \
        CLERK_WEBHOOK_SECRET (older name of CLERK_WEBHOOK_SIGNING_SECRET, read when it is unset)")]
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit; adopts an existing users table.
    #[command(after_help = "Examples:\n  \
        DATABASE_URL=postgres://... clerk-sync migrate --dry-run   # say what would change\n  \
        DATABASE_URL=postgres://... clerk-sync migrate\n\n\
        An existing table is adopted, in one transaction, without losing a row: the design's\n\
        recommended users table (email becomes optional, deletedAt is added) or its older\n\
        User table (renamed to users, new columns added; run `clerk-sync backfill` afterwards\n\
        to fill names and usernames from Clerk). Anything else is refused, untouched.")]
    Migrate(MigrateArgs),
    /// Send a realistic, signed Clerk event to a running clerk-sync.
    #[command(after_help = "Examples:\n  \
        clerk-sync trigger user.created\n  \
        clerk-sync trigger user.created --no-email --username ada\n  \
        clerk-sync trigger user.updated --user-id user_2abc --first-name Grace\n  \
        clerk-sync trigger user.deleted --user-id user_2abc\n  \
        clerk-sync trigger ./payload.json                 # any JSON file, sent byte for byte\n\n\
        The signing secret is CLERK_WEBHOOK_SIGNING_SECRET if set, else the development secret \
        that `clerk-sync serve` generated next to the database.")]
    Trigger(Box<TriggerArgs>),
    /// Import every user from Clerk (resumable; never overwrites newer webhook data).
    #[command(after_help = "Examples:\n  \
        CLERK_SECRET_KEY=sk_live_... DATABASE_URL=postgres://... clerk-sync backfill\n  \
        clerk-sync backfill --restart                    # ignore an interrupted run's checkpoint\n  \
        clerk-sync backfill --max-requests-per-10s 100   # gentler on Clerk's rate limit\n\n\
        A killed run continues from its last committed page when started again.\n\
        A key of another Clerk instance than the webhooks this database received is refused\n\
        before anything is written.\n\
        Exit codes: 0 done, 1 error, 3 another process is running a backfill.")]
    Backfill(BackfillArgs),
    /// Compare the table with Clerk and fix drift (missing, outdated and deleted users).
    #[command(after_help = "Examples:\n  \
        clerk-sync reconcile --dry-run    # print what would change, change nothing\n  \
        clerk-sync reconcile\n\n\
        Deletions happen only after a complete walk of Clerk's users, each confirmed with Clerk;\n\
        more than a tenth of the table is refused unless --allow-mass-delete.\n\
        A key of another Clerk instance than the webhooks this database received changes\n\
        nothing, and neither does a listing with none of the table's users (whatever the\n\
        table's size; --allow-mass-delete overrides that only when the key's instance is the\n\
        webhooks'). `clerk-sync tombstones` undoes a wrong deletion.\n\
        Exit codes: 0 done (a dry run that found drift included), 1 error, 3 another process\n\
        is reconciling.")]
    Reconcile(ReconcileArgs),
    /// Look at stored events and replay them.
    #[command(after_help = "Examples:\n  \
        clerk-sync events list --failed\n  \
        clerk-sync events show msg_2abc...\n  \
        clerk-sync events replay msg_2abc...\n  \
        clerk-sync events replay --failed     # after upgrading past a bug that made them fail\n  \
        clerk-sync events prune --older-than 30d --dry-run")]
    Events(EventsArgs),
    /// List the ids of deleted users kept so they never come back, or remove one deleted by
    /// mistake.
    #[command(after_help = "Examples:\n  \
        clerk-sync tombstones list\n  \
        clerk-sync tombstones remove user_2abc...   # its next event or a backfill applies again\n\n\
        A deleted user's id is kept (a tombstone) so that a late user.created / user.updated \
        cannot bring the user back. When a deletion was a mistake (say, a reconcile run with \
        another instance's secret key), removing the tombstone lets the user's next event, \
        `clerk-sync backfill` or `clerk-sync reconcile` write the user again; a soft-deleted \
        row is made live at once.")]
    Tombstones(TombstonesArgs),
}

/// Where the users table is. Global: for `events`, the flags may come before or after `list`,
/// `show` or `replay`.
#[derive(Args)]
struct DatabaseArgs {
    /// Database URL: postgresql://... (paste Neon's connection string as is) or sqlite://PATH.
    /// Default: the SQLite file clerk-sync.db in the working directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// Name of the app's users table, for apps that named theirs differently (set it before
    /// the first migrate).
    #[arg(
        long,
        env = "CLERK_SYNC_USERS_TABLE",
        default_value = "users",
        global = true
    )]
    users_table: String,
    /// PostgreSQL schema of the users table (default: the connection's current schema,
    /// usually public).
    #[arg(long, env = "CLERK_SYNC_USERS_SCHEMA", global = true)]
    users_schema: Option<String>,
    /// Longest wait for the database to answer a new connection at start (e.g. 10s); a host
    /// that accepts connections but never answers (firewall, proxy, paused compute) is then
    /// reported instead of waited for.
    #[arg(
        long,
        env = "CLERK_SYNC_DB_CONNECT_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration,
        global = true
    )]
    db_connect_timeout: std::time::Duration,
    /// Longest time migrations may take (e.g. 5m); they run in one transaction, so a timeout
    /// changes nothing.
    #[arg(
        long,
        env = "CLERK_SYNC_MIGRATE_TIMEOUT",
        default_value = "5m",
        value_parser = parse_duration,
        global = true
    )]
    migrate_timeout: std::time::Duration,
}

impl DatabaseArgs {
    fn users_table(&self) -> Result<UsersTable, ConfigError> {
        UsersTable::new(self.users_schema.as_deref(), self.users_table.trim()).map_err(ConfigError)
    }

    fn pool(&self) -> PoolSettings {
        PoolSettings {
            connect_timeout: self.db_connect_timeout,
            migrate_timeout: self.migrate_timeout,
            ..PoolSettings::default()
        }
    }

    /// Connects to the configured database and checks it answers.
    async fn store(&self) -> anyhow::Result<(Store, DatabaseTarget)> {
        let (target, _) = database(self)?;
        let store = Store::connect_with(&target, &self.pool(), self.users_table()?).await?;
        store.check_connection(&target).await?;
        Ok((store, target))
    }
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct SecretArgs {
    /// Webhook signing secret(s) from Clerk's dashboard, whsec_...; several (for rotation)
    /// separated by commas or spaces.
    #[arg(
        long = "webhook-signing-secret",
        env = "CLERK_WEBHOOK_SIGNING_SECRET",
        hide_env_values = true
    )]
    signing_secret: Option<String>,
    /// The design's older name for the same secret; read when the one above is unset.
    #[arg(
        long = "webhook-secret",
        env = "CLERK_WEBHOOK_SECRET",
        hide_env_values = true,
        hide = true
    )]
    legacy_secret: Option<String>,
}

#[derive(Args)]
struct ListenArgs {
    /// Address to listen on. Default: 0.0.0.0:$PORT when PORT is set, else 127.0.0.1:3000.
    #[arg(long, env = "CLERK_SYNC_LISTEN")]
    listen: Option<String>,
    #[arg(long, env = "PORT", hide = true)]
    port: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
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

#[derive(Args)]
struct JobArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    clerk: ClerkApiArgs,
    /// Requests to Clerk per 10 seconds. Default: half of Clerk's limit for the key's
    /// instance (500 for sk_live_, 50 for sk_test_), leaving the rest to the live service.
    #[arg(long, env = "CLERK_SYNC_REQUESTS_PER_10S")]
    max_requests_per_10s: Option<u32>,
    /// Users per page (Clerk's largest is 500).
    #[arg(long, default_value_t = clerk_sync::jobs::MAX_PAGE_SIZE, hide = true)]
    page_size: u32,
    /// No progress output (the summary is still printed).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct BackfillArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Start from the first user even if an interrupted run left a checkpoint.
    #[arg(long)]
    restart: bool,
}

#[derive(Args)]
struct ReconcileArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Print what would change, as a table, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow deleting more than a tenth of the table (refused by default: it usually means
    /// the secret key belongs to another Clerk instance). When Clerk lists none of the table's
    /// users, this allows deleting them only if the key's instance is the one the stored
    /// webhooks came from.
    #[arg(long)]
    allow_mass_delete: bool,
    /// What deleting a user does (as for serve).
    #[arg(long, env = "CLERK_SYNC_DELETE_MODE", default_value = "hard", value_parser = parse_delete_mode)]
    delete_mode: DeleteMode,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List stored events, newest first.
    List {
        /// Only events that failed.
        #[arg(long)]
        failed: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one event with its payload.
    Show { svix_id: String },
    /// Apply stored events again, by the same rules as their first delivery.
    Replay {
        /// The event to replay.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        svix_id: Option<String>,
        /// Replay every failed event, oldest first.
        #[arg(long)]
        failed: bool,
        /// What a replayed user.deleted does (as for serve).
        #[arg(long, env = "CLERK_SYNC_DELETE_MODE", default_value = "hard", value_parser = parse_delete_mode)]
        delete_mode: DeleteMode,
    },
    /// Remove events received before a time from the inbox (the users table is not touched).
    #[command(after_help = "Examples:\n  \
        clerk-sync events prune --older-than 30d --dry-run   # count, change nothing\n  \
        clerk-sync events prune --older-than 12h --include-failed\n\n\
        A redelivery of a removed event changes nothing: the sync rules find it stale or its \
        user deleted. `serve` applies CLERK_SYNC_INBOX_RETENTION (default 30d) by itself.")]
    Prune {
        /// Remove events received longer ago than this (e.g. 30d, 12h, 90m).
        #[arg(long, value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// Print how many events would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove failed events too (kept by default, to be replayed).
        #[arg(long)]
        include_failed: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Args)]
struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Subcommand)]
enum TombstonesCommand {
    /// List tombstoned user ids, newest deletion first.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Forget that a user was deleted, so the user's next event (or a backfill) applies again.
    Remove { user_id: String },
}

#[derive(Args)]
struct TombstonesArgs {
    #[command(subcommand)]
    command: TombstonesCommand,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Clerk's Backend API.
#[derive(Args)]
struct ClerkApiArgs {
    /// Clerk secret key (sk_test_... / sk_live_...), from Clerk's dashboard (API keys).
    /// For serve: enables the fallback fetch of users whose webhook has not arrived, profile
    /// updates, and session keys fetched from Clerk.
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true)]
    clerk_secret_key: Option<String>,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = clerk_sync::clerk::api::DEFAULT_API_URL)]
    clerk_api_url: String,
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

#[derive(Args)]
struct TriggerArgs {
    /// user.created, user.updated, user.deleted, or the path of a JSON file to send.
    event: String,
    /// Webhook URL. Default: this machine at CLERK_SYNC_LISTEN / PORT / 127.0.0.1:3000.
    #[arg(long)]
    url: Option<String>,
    /// The user's Clerk id (default for user.created: a new random id).
    #[arg(long)]
    user_id: Option<String>,
    /// Primary email address.
    #[arg(long)]
    email: Option<String>,
    /// Send a user without any email address (phone or username sign-up).
    #[arg(long, conflicts_with = "email")]
    no_email: bool,
    #[arg(long)]
    first_name: Option<String>,
    #[arg(long)]
    last_name: Option<String>,
    #[arg(long)]
    username: Option<String>,
    /// Reuse a svix-id, e.g. to see a redelivery answered as a duplicate.
    #[arg(long)]
    svix_id: Option<String>,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    /// Where the running clerk-sync listens, to send the event there (as its CLERK_SYNC_LISTEN;
    /// a wildcard address means this machine). Default: 127.0.0.1:$PORT when PORT is set, else
    /// 127.0.0.1:3000. --url overrides it.
    #[arg(long, env = "CLERK_SYNC_LISTEN")]
    listen: Option<String>,
    #[arg(long, env = "PORT", hide = true)]
    port: Option<String>,
}

fn parse_delete_mode(text: &str) -> Result<DeleteMode, String> {
    text.parse()
}

/// A retention, or none ("off"). An alias, not `Option<Duration>` written out: clap would take
/// that for an optional flag and hand the parser's `None` nowhere.
type InboxRetention = Option<std::time::Duration>;

#[tokio::main]
async fn main() -> ExitCode {
    clerk_sync::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Trigger(args) => trigger(*args).await,
        Command::Backfill(args) => backfill(args).await,
        Command::Reconcile(args) => reconcile(args).await,
        Command::Events(args) => events(args).await,
        Command::Tombstones(args) => tombstones(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", with_causes(&e));
            let code = e.downcast_ref::<JobError>().map_or(1, JobError::exit_code);
            ExitCode::from(code)
        }
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

/// The error and its causes, each said once: many errors already repeat their cause's words in
/// their own, and `{:#}` would print those twice.
fn with_causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn database(args: &DatabaseArgs) -> Result<(DatabaseTarget, bool), ConfigError> {
    let (target, defaulted) = DatabaseTarget::from_env_value(args.database_url.as_deref())?;
    if defaulted {
        tracing::info!(
            "DATABASE_URL is not set: using the SQLite file {} in the working directory",
            clerk_sync::config::DEFAULT_SQLITE_FILE
        );
    }
    Ok((target, defaulted))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (database, database_defaulted) = database(&args.database)?;
    let configured = secrets_from_env(
        args.secrets.signing_secret.as_deref(),
        args.secrets.legacy_secret.as_deref(),
    )?;
    let secrets = match configured {
        Some(secrets) => secrets,
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
            vec![dev.secret]
        }
        None => {
            return Err(ConfigError(
                "no webhook signing secret: set CLERK_WEBHOOK_SIGNING_SECRET to the Signing \
                 Secret of your endpoint in Clerk's dashboard (Webhooks, select the endpoint), \
                 e.g. CLERK_WEBHOOK_SIGNING_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw; \
                 or pass --dev to run locally with a generated secret"
                    .into(),
            )
            .into());
        }
    };
    let config = ServeConfig {
        listen: listen_address(args.listen.listen.as_deref(), args.listen.port.as_deref())?,
        migrate: !args.no_migrate,
        delete_mode: args.delete_mode,
        max_body_bytes: args.max_body_bytes,
        pool: PoolSettings {
            max_connections: args.db_max_connections.max(1),
            ..args.database.pool()
        },
        writers: match args.writers {
            Some(w)
                if w >= args.db_max_connections
                    && matches!(database, DatabaseTarget::Postgres { .. }) =>
            {
                return Err(ConfigError(format!(
                    "CLERK_SYNC_WRITERS = {w} leaves none of CLERK_SYNC_DB_MAX_CONNECTIONS = {} \
                     connections for the user API, health checks and jobs: each writer keeps a \
                     connection of its own. Use fewer writers or raise \
                     CLERK_SYNC_DB_MAX_CONNECTIONS",
                    args.db_max_connections
                ))
                .into());
            }
            w => w.map(|w| w as usize),
        },
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
                        "CLERK_SYNC_METRICS_LISTEN = {addr:?} is not an address to listen on; use \
                         HOST:PORT, e.g. 127.0.0.1:9100"
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
    if args.print_config {
        print!("{}", config.describe());
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(database = %config.database, "starting clerk-sync {}", env!("CARGO_PKG_VERSION"));
    let app = App::build(&config).await?;
    tracing::info!(
        "listening on http://{} (Clerk webhook: POST {})",
        app.local_addr(),
        clerk_sync::http::WEBHOOK_PATH
    );
    app.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let (store, database) = args.database.store().await?;
    if args.dry_run {
        let report = store.migrate_dry_run().await?;
        if report.adopted.is_empty() && report.applied.is_empty() {
            println!(
                "{database}: schema is up to date (version {}); nothing to do",
                report.version
            );
        }
        if !report.adopted.is_empty() {
            println!("{database}: would adopt the existing users table:");
            for change in &report.adopted {
                println!("  - {change}");
            }
        }
        for (version, description) in &report.applied {
            println!("{database}: would apply migration {version} ({description})");
        }
        println!("dry run: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    let report = store.migrate().await?;
    for change in &report.adopted {
        println!("{database}: adopted the existing users table: {change}");
    }
    if report.applied.is_empty() {
        println!(
            "{database}: schema is up to date (version {})",
            report.version
        );
    } else {
        for (version, description) in &report.applied {
            println!("{database}: applied migration {version} ({description})");
        }
        println!("{database}: schema is now at version {}", report.version);
    }
    Ok(ExitCode::SUCCESS)
}

async fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let event = TriggerEvent::parse(&args.event)?;
    let secret = match secrets_from_env(
        args.secrets.signing_secret.as_deref(),
        args.secrets.legacy_secret.as_deref(),
    )? {
        Some(mut secrets) => secrets.swap_remove(0),
        None => dev_secret_for_trigger(&args.database)?,
    };
    let url = match args.url {
        Some(url) => url,
        None => trigger::local_webhook_url(listen_address(
            args.listen.as_deref(),
            args.port.as_deref(),
        )?),
    };
    // An update starts from the user as the database has it: Clerk's snapshots carry every
    // field, and one made up from scratch would overwrite what the user has (created_at,
    // email, names) with sample values.
    let current = match (&event, &args.user_id) {
        (TriggerEvent::Updated, Some(id)) => current_user(&args.database, id).await,
        _ => None,
    };
    let fields = UserFields {
        user_id: args.user_id,
        email: args.email,
        no_email: args.no_email,
        first_name: args.first_name,
        last_name: args.last_name,
        username: args.username,
        current,
    };
    let signed = trigger::build(&event, &fields, &secret, args.svix_id)?;
    let delivered = trigger::send(&url, &signed).await?;
    println!(
        "{} {}(svix-id {}) -> {url}: HTTP {} {}",
        args.event,
        signed
            .user_id
            .as_deref()
            .map(|id| format!("for {id} "))
            .unwrap_or_default(),
        signed.svix_id,
        delivered.status,
        delivered.body
    );
    Ok(if (200..300).contains(&delivered.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The user's row as `trigger` finds it in the configured database, if it can; `None` (and the
/// sample values) when there is no such row or no database to read here.
async fn current_user(database: &DatabaseArgs, user_id: &str) -> Option<SampleUser> {
    let (target, _) = DatabaseTarget::from_env_value(database.database_url.as_deref()).ok()?;
    if let DatabaseTarget::Sqlite { path } = &target
        && !path.exists()
    {
        return None;
    }
    let settings = PoolSettings {
        acquire_timeout: std::time::Duration::from_secs(3),
        ..database.pool()
    };
    let store = Store::connect_with(&target, &settings, database.users_table().ok()?)
        .await
        .ok()?;
    let read = tokio::time::timeout(settings.acquire_timeout, store.user(user_id));
    let (row, _) = read.await.ok()?.ok()?;
    store.close().await;
    let row = row?;
    let millis = |t: chrono::NaiveDateTime| t.and_utc().timestamp_millis();
    Some(SampleUser {
        id: row.id,
        email: row.email,
        first_name: row.first_name,
        last_name: row.last_name,
        username: row.username,
        image_url: row.image_url.unwrap_or_default(),
        created_at: row.clerk_created_at.map_or(0, millis),
        updated_at: row.clerk_updated_at.map_or(0, millis),
    })
}

/// A migrated store and a Clerk client for a job, or an error saying what to set.
async fn job_setup(args: &JobArgs) -> anyhow::Result<(Store, ClerkApi, u32)> {
    let Some(key) = args
        .clerk
        .clerk_secret_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
    else {
        return Err(ConfigError(
            "CLERK_SECRET_KEY is not set: this command reads users from Clerk's Backend API. \
             Copy the secret key from Clerk's dashboard (Configure, API keys), e.g. \
             CLERK_SECRET_KEY=sk_live_..."
                .into(),
        )
        .into());
    };
    let key = SecretKey::parse(key).map_err(ConfigError)?;
    let api = ClerkApi::new(&args.clerk.clerk_api_url, key, RetryPolicy::default())
        .map_err(ConfigError)?;
    let (store, _) = args.database.store().await?;
    store.migrate().await?;
    let budget = args
        .max_requests_per_10s
        .unwrap_or_else(|| Pacer::default_budget(&api))
        .max(1);
    Ok((store, api, budget))
}

async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let (store, api, budget) = job_setup(&args.job).await?;
    let report = clerk_sync::jobs::backfill::run(
        &store,
        &api,
        &BackfillOptions {
            page_size: args.job.page_size,
            requests_per_10s: budget,
            restart: args.restart,
            quiet: args.job.quiet,
        },
    )
    .await?;
    if let Some(cursor) = &report.resumed_after {
        println!("resumed after {cursor}");
    }
    println!("backfill done: {}", report.summary);
    Ok(ExitCode::SUCCESS)
}

async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (store, api, budget) = job_setup(&args.job).await?;
    let report = clerk_sync::jobs::reconcile::run(
        &store,
        &api,
        &ReconcileOptions {
            dry_run: args.dry_run,
            allow_mass_delete: args.allow_mass_delete,
            requests_per_10s: budget,
            page_size: args.job.page_size,
            delete_mode: args.delete_mode,
            quiet: args.job.quiet,
        },
    )
    .await?;
    print!("{}", report.table());
    let verb = if report.dry_run {
        "reconcile (dry run, nothing changed)"
    } else {
        "reconcile done"
    };
    println!("{verb}: {}", report.summary);
    Ok(ExitCode::SUCCESS)
}

async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = args.database.store().await?;
    store.migrate().await?;
    match args.command {
        EventsCommand::List { failed, limit } => {
            print!(
                "{}",
                events::table(&store.stored_events(failed, limit.max(1)).await?)
            );
        }
        EventsCommand::Show { svix_id } => match store.stored_event(&svix_id).await? {
            Some(event) => print!("{}", events::details(&event)),
            None => {
                return Err(ConfigError(format!(
                    "no stored event has svix-id {svix_id}; `clerk-sync events list` shows them"
                ))
                .into());
            }
        },
        EventsCommand::Replay {
            svix_id: Some(svix_id),
            delete_mode,
            ..
        } => {
            let before = store.stored_event(&svix_id).await?;
            match store.replay(&svix_id, delete_mode).await? {
                Some(outcome) => println!(
                    "{svix_id}: {} -> {outcome}",
                    before.map_or_else(|| "?".into(), |e| e.outcome)
                ),
                None => {
                    return Err(ConfigError(format!(
                        "no stored event has svix-id {svix_id}; `clerk-sync events list` shows them"
                    ))
                    .into());
                }
            }
        }
        EventsCommand::Replay {
            svix_id: None,
            delete_mode,
            ..
        } => {
            let (summary, results) = events::replay_failed(&store, delete_mode).await?;
            for (svix_id, outcome) in &results {
                println!("{svix_id}: failed -> {outcome}");
            }
            println!("replayed {} failed events: {summary}", results.len());
        }
        EventsCommand::Prune {
            older_than,
            dry_run,
            include_failed,
            quiet,
        } => {
            let report = events::prune(
                &store,
                &events::PruneOptions {
                    older_than,
                    include_failed,
                    dry_run,
                    quiet,
                },
            )
            .await?;
            println!("{report}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tombstones(args: TombstonesArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = args.database.store().await?;
    store.migrate().await?;
    match args.command {
        TombstonesCommand::List { limit } => {
            let (tombstones, total) = store.tombstones(limit.max(1)).await?;
            print!("{}", tombstone_table(&tombstones, total));
        }
        TombstonesCommand::Remove { user_id } => {
            let removal = store.remove_tombstone(&user_id).await?;
            if !removal.removed {
                return Err(ConfigError(format!(
                    "{user_id} has no tombstone; `clerk-sync tombstones list` shows them"
                ))
                .into());
            }
            println!(
                "{user_id}: tombstone removed{}; the user's next event, `clerk-sync backfill` or \
                 `clerk-sync reconcile` writes the user again",
                if removal.row_restored {
                    ", and its soft-deleted row is live again"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Tombstones as a table, newest first, with how many there are in all.
fn tombstone_table(tombstones: &[Tombstone], total: u64) -> String {
    if tombstones.is_empty() {
        return "No tombstones: no deleted user is kept from coming back.\n".into();
    }
    let width = tombstones
        .iter()
        .map(|t| t.user_id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<width$}  DELETED\n", "USER");
    for tombstone in tombstones {
        out.push_str(&format!(
            "{:<width$}  {}\n",
            tombstone.user_id,
            tombstone
                .deleted_at
                .and_utc()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ));
    }
    if total > tombstones.len() as u64 {
        out.push_str(&format!(
            "{} of {total} tombstones shown (--limit shows more)\n",
            tombstones.len()
        ));
    }
    out
}

fn dev_secret_for_trigger(database: &DatabaseArgs) -> anyhow::Result<SigningSecret> {
    let (target, _) = DatabaseTarget::from_env_value(database.database_url.as_deref())?;
    let path = target.dev_secret_path();
    match DevSecret::load(&path)? {
        Some(dev) => Ok(dev.secret),
        None => Err(ConfigError(format!(
            "no webhook signing secret: set CLERK_WEBHOOK_SIGNING_SECRET to the secret the server \
             uses, or start `clerk-sync serve` in development mode first (it writes {})",
            path.display()
        ))
        .into()),
    }
}
