//! `clerk-sync tombstones`: the ids of deleted users kept so they never come back; list them,
//! or remove one deleted by mistake.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use clerk_sync::config::ConfigError;
use clerk_sync::store::Tombstone;

use super::DatabaseArgs;

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
pub struct TombstonesArgs {
    #[command(subcommand)]
    command: TombstonesCommand,
    #[command(flatten)]
    database: DatabaseArgs,
}

pub async fn run(args: TombstonesArgs) -> anyhow::Result<ExitCode> {
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
