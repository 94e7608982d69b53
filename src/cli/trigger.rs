//! `clerk-sync trigger`: sign a realistic Clerk event and send it to a running clerk-sync.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use clerk_sync::clerk::sample::SampleUser;
use clerk_sync::config::{
    ConfigError, DatabaseTarget, DevSecret, listen_address, secrets_from_env,
};
use clerk_sync::store::{PoolSettings, Store, UserRecord};
use clerk_sync::trigger::{self, Action, EventFields, TriggerEvent};
use clerk_sync::webhook::SigningSecret;

use super::{DatabaseArgs, SecretArgs};

// `--help` shows this instead of the shorter examples `-h` shows (main.rs).
#[derive(Args)]
#[command(after_long_help = "Examples:\n  \
    clerk-sync trigger user.created\n  \
    clerk-sync trigger user.created --no-email --username ada\n  \
    clerk-sync trigger user.updated --user-id user_2abc --first-name Grace\n  \
    clerk-sync trigger user.deleted --user-id user_2abc\n  \
    clerk-sync trigger organization.created --org-id org_acme --slug acme --user-id user_2abc\n  \
    clerk-sync trigger organization.updated --org-id org_acme --slug acme-inc\n  \
    clerk-sync trigger organizationMembership.created --org-id org_acme --user-id user_2abc --role admin\n  \
    clerk-sync trigger organizationMembership.updated --org-id org_acme --user-id user_2abc --role org:member\n  \
    clerk-sync trigger organizationMembership.deleted --org-id org_acme --user-id user_2abc\n  \
    clerk-sync trigger organization.deleted --org-id org_acme   # its memberships go with it\n  \
    clerk-sync trigger ./payload.json                 # any JSON file, sent byte for byte\n\n\
    Flags that do not fit the event (--role on a user event, --email on an organization's) are \
    refused, not ignored. The signing secret is CLERK_WEBHOOK_SIGNING_SECRET if set, else the \
    development secret that `clerk-sync serve` generated next to the database.")]
pub struct TriggerArgs {
    /// The event: user.created, user.updated, user.deleted, organization.created,
    /// organization.updated, organization.deleted, organizationMembership.created,
    /// organizationMembership.updated, organizationMembership.deleted, or the path of a JSON
    /// file to send as it is.
    ///
    /// A *.created event makes up the ids it is not given (and prints them, to name in later
    /// events). A *.updated or *.deleted event starts from the row the database (DATABASE_URL)
    /// holds, so that only what the flags name changes and its updated_at moves past the
    /// row's; a membership event carries its organization as the row has it.
    event: String,
    /// Webhook URL. Default: this machine at CLERK_SYNC_LISTEN / PORT / 127.0.0.1:3000.
    #[arg(long)]
    url: Option<String>,
    /// The user's Clerk id: the user of user.* and organizationMembership.* events (needed by
    /// user.updated, user.deleted, organizationMembership.updated and .deleted; default for
    /// user.created and organizationMembership.created: a new random id), or the creator of
    /// organization.created.
    #[arg(long)]
    user_id: Option<String>,
    /// The organization's Clerk id, org_... (needed by organization.updated,
    /// organization.deleted, organizationMembership.updated and .deleted; default for
    /// organization.created and organizationMembership.created: a new random id).
    #[arg(long)]
    org_id: Option<String>,
    /// organizationMembership.created / .updated: the member's role, org:admin, org:member or
    /// a custom org:<key> (admin alone means org:admin). Default: org:member for a new
    /// membership, else the role the database holds.
    #[arg(long)]
    role: Option<String>,
    /// organization.*: the organization's slug. Default: made up from the id for a new
    /// organization, else the slug the database holds.
    #[arg(long)]
    slug: Option<String>,
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
    let mut fields = EventFields {
        user_id: args.user_id,
        email: args.email,
        no_email: args.no_email,
        first_name: args.first_name,
        last_name: args.last_name,
        username: args.username,
        org_id: args.org_id,
        role: args.role,
        slug: args.slug,
        ..EventFields::default()
    };
    // Wrong flags are said before anything is read or sent.
    trigger::check_flags(&event, &fields)?;
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
    // An update starts from the row as the database has it: Clerk's snapshots carry every
    // field, and one made up from scratch would overwrite what the row holds (created_at,
    // email, names, an organization's name and slug) with sample values.
    read_current(&event, &mut fields, &args.database).await;
    if let (TriggerEvent::Membership(Action::Updated | Action::Deleted), None) =
        (&event, &fields.current_membership)
    {
        eprintln!(
            "note: no membership of {} in {} found in the database; sending one with a new id",
            fields.user_id.as_deref().unwrap_or_default(),
            fields.org_id.as_deref().unwrap_or_default()
        );
    }
    let signed = trigger::build(&event, &fields, &secret, args.svix_id)?;
    let delivered = trigger::send(&url, &signed).await?;
    println!(
        "{} {}(svix-id {}) -> {url}: HTTP {} {}",
        event.event_type().unwrap_or(&args.event),
        signed
            .about()
            .map(|about| format!("for {about} "))
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

/// Fills in the rows the event starts from, as far as the configured database has them.
async fn read_current(event: &TriggerEvent, fields: &mut EventFields, database: &DatabaseArgs) {
    let org_id = fields.org_id.clone();
    let user_id = fields.user_id.clone();
    let (user, organization, membership) = match event {
        TriggerEvent::User(Action::Updated) => (user_id, None, false),
        TriggerEvent::Organization(Action::Updated | Action::Deleted) => (None, org_id, false),
        TriggerEvent::Membership(Action::Created) => (None, org_id, false),
        TriggerEvent::Membership(_) => (None, org_id, true),
        _ => (None, None, false),
    };
    if user.is_none() && organization.is_none() {
        return;
    }
    let Some((store, timeout)) = open_store(database).await else {
        return;
    };
    if let Some(user_id) = &user {
        fields.current = read(timeout, store.user(user_id))
            .await
            .and_then(|(row, _)| row)
            .map(|row| sample_user(&row));
    }
    if let Some(org_id) = &organization {
        fields.current_organization = read(timeout, store.organization(org_id))
            .await
            .flatten()
            .map(|row| trigger::sample_organization(&row));
        if let (true, Some(user_id)) = (membership, &fields.user_id) {
            fields.current_membership = read(timeout, store.user_memberships(user_id))
                .await
                .unwrap_or_default()
                .iter()
                .find(|m| m.organization_id == *org_id)
                .map(trigger::sample_membership);
        }
    }
    store.close().await;
}

/// The configured database, if there is one to read here.
async fn open_store(database: &DatabaseArgs) -> Option<(Store, Duration)> {
    let (target, _) = DatabaseTarget::from_env_value(database.database_url.as_deref()).ok()?;
    if let DatabaseTarget::Sqlite { path } = &target
        && !path.exists()
    {
        return None;
    }
    let settings = PoolSettings {
        acquire_timeout: Duration::from_secs(3),
        ..database.pool()
    };
    let store = Store::connect_with(&target, &settings, database.users_table().ok()?)
        .await
        .ok()?;
    Some((store, settings.acquire_timeout))
}

/// A read's result, or `None` when it fails or takes longer than `timeout` (the event is then
/// made up from sample values).
async fn read<T, E>(timeout: Duration, read: impl Future<Output = Result<T, E>>) -> Option<T> {
    tokio::time::timeout(timeout, read).await.ok()?.ok()
}

/// The user's row, as a sample user describing it as it is.
fn sample_user(row: &UserRecord) -> SampleUser {
    let millis = |t: chrono::NaiveDateTime| t.and_utc().timestamp_millis();
    SampleUser {
        id: row.id.clone(),
        email: row.email.clone(),
        first_name: row.first_name.clone(),
        last_name: row.last_name.clone(),
        username: row.username.clone(),
        image_url: row.image_url.clone().unwrap_or_default(),
        created_at: row.clerk_created_at.map_or(0, millis),
        updated_at: row.clerk_updated_at.map_or(0, millis),
    }
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
