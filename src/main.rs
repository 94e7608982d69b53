//! The `clerk-sync` command line: parse arguments, build from configuration, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use clerk_sync::app::{App, shutdown_signal};
use clerk_sync::config::{
    ClerkSettings, ConfigError, DEFAULT_MAX_BODY_BYTES, DatabaseTarget, DevSecret, ServeConfig,
    listen_address, secrets_from_env,
};
use clerk_sync::store::{PoolSettings, Store};
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
        CLERK_WEBHOOK_SIGNING_SECRET=whsec_... clerk-sync serve --listen 0.0.0.0:3000"
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
        GET /openapi.json")]
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    #[command(after_help = "Example:\n  DATABASE_URL=postgres://... clerk-sync migrate")]
    Migrate(DatabaseArgs),
    /// Send a realistic, signed Clerk event to a running clerk-sync.
    #[command(after_help = "Examples:\n  \
        clerk-sync trigger user.created\n  \
        clerk-sync trigger user.created --no-email --username ada\n  \
        clerk-sync trigger user.updated --user-id user_2abc --first-name Grace\n  \
        clerk-sync trigger user.deleted --user-id user_2abc\n  \
        clerk-sync trigger ./payload.json                 # any JSON file, sent byte for byte\n\n\
        The signing secret is CLERK_WEBHOOK_SIGNING_SECRET if set, else the development secret \
        that `clerk-sync serve` generated next to the database.")]
    Trigger(TriggerArgs),
}

#[derive(Args)]
struct DatabaseArgs {
    /// Database URL: postgresql://... (paste Neon's connection string as is) or sqlite://PATH.
    /// Default: the SQLite file clerk-sync.db in the working directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
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
    #[command(flatten)]
    clerk: ClerkArgs,
}

/// Clerk's Backend API and session tokens (for /api/users/me).
#[derive(Args)]
struct ClerkArgs {
    /// Clerk secret key (sk_test_... / sk_live_...): enables the fallback fetch of users whose
    /// webhook has not arrived, profile updates, and session keys fetched from Clerk.
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true)]
    clerk_secret_key: Option<String>,
    /// PEM public key ("JWKS Public Key" in Clerk's dashboard) to verify sessions without
    /// calling Clerk.
    #[arg(long, env = "CLERK_JWT_KEY", hide_env_values = true)]
    clerk_jwt_key: Option<String>,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = clerk_sync::clerk::api::DEFAULT_API_URL)]
    clerk_api_url: String,
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
    #[command(flatten)]
    listen: ListenArgs,
}

fn parse_delete_mode(text: &str) -> Result<DeleteMode, String> {
    text.parse()
}

#[tokio::main]
async fn main() -> ExitCode {
    clerk_sync::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Trigger(args) => trigger(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
            println!(
                "Development mode: webhooks must be signed with {} ({} {}).\n\
                 Send a test event with: clerk-sync trigger user.created",
                dev.text,
                if dev.created {
                    "generated and stored in"
                } else {
                    "read from"
                },
                dev.path.display()
            );
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
            ..PoolSettings::default()
        },
        clerk: ClerkSettings::from_values(
            Some(&args.clerk.clerk_api_url),
            args.clerk.clerk_secret_key.as_deref(),
            args.clerk.clerk_jwt_key.as_deref(),
            args.clerk
                .clerk_publishable_key
                .as_deref()
                .or(args.clerk.next_public_clerk_publishable_key.as_deref()),
            args.clerk.clerk_authorized_parties.as_deref(),
            args.clerk.allow_pending_sessions,
        )?,
        ..ServeConfig::new(database, secrets)
    };
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

async fn migrate(args: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let (database, _) = database(&args)?;
    let store = Store::connect(&database, &PoolSettings::default()).await?;
    store.check_connection(&database).await?;
    let report = store.migrate().await?;
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
            args.listen.listen.as_deref(),
            args.listen.port.as_deref(),
        )?),
    };
    let fields = UserFields {
        user_id: args.user_id,
        email: args.email,
        no_email: args.no_email,
        first_name: args.first_name,
        last_name: args.last_name,
        username: args.username,
    };
    let event = TriggerEvent::parse(&args.event);
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
