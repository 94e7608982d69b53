//! `clerk-sync trigger`: sign a realistic Clerk event and send it to a running clerk-sync.

use std::process::ExitCode;

use clap::Args;

use clerk_sync::clerk::sample::SampleUser;
use clerk_sync::config::{
    ConfigError, DatabaseTarget, DevSecret, listen_address, secrets_from_env,
};
use clerk_sync::store::{PoolSettings, Store};
use clerk_sync::trigger::{self, TriggerEvent, UserFields};
use clerk_sync::webhook::SigningSecret;

use super::{DatabaseArgs, SecretArgs};

#[derive(Args)]
pub struct TriggerArgs {
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

pub async fn run(args: TriggerArgs) -> anyhow::Result<ExitCode> {
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
