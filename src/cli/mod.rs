//! The commands of the `clerk-sync` binary, one module each, and the arguments they share.
//! Each module owns its clap arguments, turns them into the library's configuration, and runs;
//! the library knows nothing of flags or of what the command prints.

pub mod events;
pub mod jobs;
pub mod migrate;
pub mod serve;
pub mod tombstones;
pub mod trigger;

use clap::Args;

use clerk_sync::config::{ConfigError, DatabaseTarget, parse_duration};
use clerk_sync::store::{PoolSettings, Store, UsersTable};
use clerk_sync::sync::DeleteMode;

/// Where the users table is. Global: for `events`, the flags may come before or after `list`,
/// `show` or `replay`.
#[derive(Args)]
pub struct DatabaseArgs {
    /// Database URL: postgresql://... (paste Neon's connection string as is) or sqlite://PATH.
    /// Default: the SQLite file clerk-sync.db in the working directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
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
    /// The database to use, and whether it is the default because none was configured (which
    /// is said once, here, so that a user who forgot DATABASE_URL sees where the data went).
    pub fn target(&self) -> Result<(DatabaseTarget, bool), ConfigError> {
        let (target, defaulted) = DatabaseTarget::from_env_value(self.database_url.as_deref())?;
        if defaulted {
            // The binary's lines keep the crate's target, as before the commands had modules.
            tracing::info!(
                target: "clerk_sync",
                "DATABASE_URL is not set: using the SQLite file {} in the working directory",
                clerk_sync::config::DEFAULT_SQLITE_FILE
            );
        }
        Ok((target, defaulted))
    }

    pub fn users_table(&self) -> Result<UsersTable, ConfigError> {
        UsersTable::new(self.users_schema.as_deref(), self.users_table.trim()).map_err(ConfigError)
    }

    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            connect_timeout: self.db_connect_timeout,
            migrate_timeout: self.migrate_timeout,
            ..PoolSettings::default()
        }
    }

    /// Connects to the configured database and checks it answers.
    pub async fn store(&self) -> anyhow::Result<(Store, DatabaseTarget)> {
        let (target, _) = self.target()?;
        let store = Store::connect_with(&target, &self.pool(), self.users_table()?).await?;
        store.check_connection(&target).await?;
        Ok((store, target))
    }
}

#[derive(Args)]
pub struct SecretArgs {
    /// Webhook signing secret(s) from Clerk's dashboard, whsec_...; several (for rotation)
    /// separated by commas or spaces.
    #[arg(
        long = "webhook-signing-secret",
        env = "CLERK_WEBHOOK_SIGNING_SECRET",
        hide_env_values = true
    )]
    pub signing_secret: Option<String>,
    /// The design's older name for the same secret; read when the one above is unset.
    #[arg(
        long = "webhook-secret",
        env = "CLERK_WEBHOOK_SECRET",
        hide_env_values = true,
        hide = true
    )]
    pub legacy_secret: Option<String>,
}

/// Clerk's Backend API.
#[derive(Args)]
pub struct ClerkApiArgs {
    /// Clerk secret key (sk_test_... / sk_live_...), from Clerk's dashboard (API keys).
    /// For serve: enables the fallback fetch of users whose webhook has not arrived, profile
    /// updates, and session keys fetched from Clerk.
    #[arg(long, env = "CLERK_SECRET_KEY", hide_env_values = true)]
    pub clerk_secret_key: Option<String>,
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = clerk_sync::clerk::api::DEFAULT_API_URL)]
    pub clerk_api_url: String,
}

pub fn parse_delete_mode(text: &str) -> Result<DeleteMode, String> {
    text.parse()
}
