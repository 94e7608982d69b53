//! The `clerk-sync` command line: parse the arguments, hand them to their command in `cli`,
//! and report how it ended (the error with its causes, and the exit code).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use clerk_sync::jobs::JobError;

use cli::events::EventsArgs;
use cli::jobs::{BackfillArgs, ReconcileArgs};
use cli::migrate::MigrateArgs;
use cli::serve::ServeArgs;
use cli::tombstones::TombstonesArgs;
use cli::trigger::TriggerArgs;

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
        Endpoints: POST /api/webhooks/clerk, GET|PATCH /api/users/me, \
        GET /api/users/me/organizations, GET /healthz, GET /readyz, \
        GET /openapi.json, GET /metrics, GET /status\n\n\
        Also read: RUST_LOG (log filter, default info), CLERK_SYNC_LOG_FORMAT (text or json), \
        CLERK_WEBHOOK_SECRET (older name of CLERK_WEBHOOK_SIGNING_SECRET, read when it is unset)")]
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit; adopts an existing users table (organization
    /// tables are created, never adopted).
    #[command(after_help = "Examples:\n  \
        DATABASE_URL=postgres://... clerk-sync migrate --dry-run   # say what would change\n  \
        DATABASE_URL=postgres://... clerk-sync migrate\n\n\
        An existing table is adopted, in one transaction, without losing a row: the design's\n\
        recommended users table (email becomes optional, deletedAt is added) or its older\n\
        User table (renamed to users, new columns added; run `clerk-sync backfill` afterwards\n\
        to fill names and usernames from Clerk). Columns of the app's own are kept and never\n\
        written when they allow NULL or have a default; a NOT NULL one without a default is\n\
        refused with the ALTER TABLE that fixes it. Anything else is refused, untouched.")]
    Migrate(MigrateArgs),
    /// Send a realistic, signed Clerk event to a running clerk-sync.
    #[command(after_help = "Examples:\n  \
        clerk-sync trigger user.created\n  \
        clerk-sync trigger user.created --no-email --username ada\n  \
        clerk-sync trigger user.updated --user-id user_2abc --first-name Grace\n  \
        clerk-sync trigger user.deleted --user-id user_2abc\n  \
        clerk-sync trigger organizationMembership.created --org-id org_2xyz --user-id user_2abc --role admin\n  \
        clerk-sync trigger ./payload.json                 # any JSON file, sent byte for byte\n\n\
        The signing secret is CLERK_WEBHOOK_SIGNING_SECRET if set, else the development secret \
        that `clerk-sync serve` generated next to the database.")]
    Trigger(Box<TriggerArgs>),
    /// Import every user, organization and membership from Clerk (resumable; never overwrites
    /// newer webhook data).
    #[command(after_help = "Examples:\n  \
        CLERK_SECRET_KEY=sk_live_... DATABASE_URL=postgres://... clerk-sync backfill\n  \
        clerk-sync backfill --restart                    # ignore an interrupted run's checkpoint\n  \
        clerk-sync backfill --max-requests-per-10s 100   # gentler on Clerk's rate limit\n\n\
        A killed run continues from its last committed page when started again.\n\
        A key of another Clerk instance than the webhooks this database received is refused\n\
        before anything is written.\n\
        Exit codes: 0 done, 1 error, 3 another process is running a backfill.")]
    Backfill(BackfillArgs),
    /// Compare the tables with Clerk and fix drift (missing, outdated and deleted users,
    /// organizations and memberships).
    #[command(after_help = "Examples:\n  \
        clerk-sync reconcile --dry-run    # print what would change, change nothing\n  \
        clerk-sync reconcile\n\n\
        Deletions happen only after complete walks of Clerk's users, organizations and\n\
        memberships, each confirmed with Clerk (users one by one, organizations and memberships\n\
        by a second walk); more than a tenth of any table is refused unless --allow-mass-delete.\n\
        A key of another Clerk instance than the webhooks this database received changes\n\
        nothing, and neither does a listing with none of the table's users (whatever the\n\
        table's size; --allow-mass-delete overrides that only when the key's instance is the\n\
        webhooks'). `clerk-sync tombstones` undoes a wrong deletion of a user.\n\
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

#[tokio::main]
async fn main() -> ExitCode {
    clerk_sync::logging::init();
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::Serve(args) => cli::serve::run(*args).await,
        Command::Migrate(args) => cli::migrate::run(args).await,
        Command::Trigger(args) => cli::trigger::run(*args).await,
        Command::Backfill(args) => cli::jobs::backfill(args).await,
        Command::Reconcile(args) => cli::jobs::reconcile(args).await,
        Command::Events(args) => cli::events::run(args).await,
        Command::Tombstones(args) => cli::tombstones::run(args).await,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// clap checks the definition (duplicate flags, conflicts naming unknown arguments) only
    /// when asked, or when a user happens to reach the broken part.
    #[test]
    fn the_command_line_is_defined_consistently() {
        Cli::command().debug_assert();
    }
}
