//! `clerk-sync migrate`: apply pending migrations, or say what they would change.

use std::process::ExitCode;

use clap::Args;

use super::DatabaseArgs;

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
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
