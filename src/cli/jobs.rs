//! `clerk-sync backfill` and `clerk-sync reconcile`: the jobs that read users, organizations
//! and memberships from Clerk's Backend API, with the arguments and set-up they share. Their
//! output keeps the users' lines as they always were (scripts read them) and adds a line each
//! for organizations and memberships.

use std::process::ExitCode;

use clap::Args;

use clerk_sync::clerk::api::{ClerkApi, RetryPolicy, SecretKey};
use clerk_sync::config::ConfigError;
use clerk_sync::jobs::Pacer;
use clerk_sync::jobs::backfill::BackfillOptions;
use clerk_sync::jobs::reconcile::ReconcileOptions;
use clerk_sync::store::Store;
use clerk_sync::sync::DeleteMode;

use super::{ClerkApiArgs, DatabaseArgs, parse_delete_mode};

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
    /// Users, organizations or memberships per page (Clerk's largest is 500).
    #[arg(long, default_value_t = clerk_sync::jobs::MAX_PAGE_SIZE, hide = true)]
    page_size: u32,
    /// No progress output (the summary is still printed).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Start from the first user even if an interrupted run left a checkpoint (in the users,
    /// organizations or memberships).
    #[arg(long)]
    restart: bool,
}

#[derive(Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Print what would change, as a table, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow deleting more than a tenth of a table: users, organizations or memberships
    /// (refused by default: it usually means the secret key belongs to another Clerk instance).
    /// When Clerk lists none of the table's users (or, with no users here, none of its
    /// organizations or memberships), this allows deleting them only if the key's instance is
    /// the one the stored webhooks came from.
    #[arg(long)]
    allow_mass_delete: bool,
    /// What deleting a user or an organization does (as for serve).
    #[arg(long, env = "CLERK_SYNC_DELETE_MODE", default_value = "hard", value_parser = parse_delete_mode)]
    delete_mode: DeleteMode,
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

pub async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
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
    if let Some(resumed) = &report.resumed_in {
        println!(
            "resumed in the {} ({} already processed; the users were done)",
            resumed.list, resumed.processed
        );
    }
    println!("backfill done: {}", report.summary);
    println!("organizations: {}", report.organizations);
    println!("memberships: {}", report.memberships);
    Ok(ExitCode::SUCCESS)
}

pub async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
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
    println!("organizations: {}", report.organizations.summary);
    println!("memberships: {}", report.memberships.summary);
    Ok(ExitCode::SUCCESS)
}
