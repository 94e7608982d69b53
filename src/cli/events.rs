//! `clerk-sync events`: look at the inbox of stored events, replay them, prune old ones.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use clerk_sync::config::{ConfigError, parse_duration};
use clerk_sync::jobs::events;
use clerk_sync::sync::DeleteMode;

use super::{DatabaseArgs, parse_delete_mode};

#[derive(Subcommand)]
enum EventsCommand {
    /// List stored events, newest first, with the user and (for organization.* and
    /// organizationMembership.* events) the organization each is about.
    List {
        /// Only events that failed.
        #[arg(long)]
        failed: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one event with its payload (and the ids it is about).
    Show { svix_id: String },
    /// Apply stored events again, by the same rules as their first delivery.
    Replay {
        /// The event to replay.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        svix_id: Option<String>,
        /// Replay every failed event, oldest first.
        #[arg(long)]
        failed: bool,
        /// What a replayed user.deleted or organization.deleted does (as for serve).
        #[arg(long, env = "CLERK_SYNC_DELETE_MODE", default_value = "hard", value_parser = parse_delete_mode)]
        delete_mode: DeleteMode,
    },
    /// Remove events received before a time from the inbox (the users, organizations and
    /// memberships tables are not touched).
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
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
    #[command(flatten)]
    database: DatabaseArgs,
}

pub async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
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
