//! Persistence: the app's tables (`users`, `organizations`, `organization_memberships`) and
//! clerk-sync's own bookkeeping, on PostgreSQL or SQLite: connections, migrations, statements,
//! and the two-round transaction (`transaction`) that [`crate::ingest`] drives. What an event
//! does is decided above (in `ingest` and [`crate::sync`]); this module sees domain values
//! only, never Clerk's wire types. The SQL both backends share is in `statements` and
//! `organization_statements`; the dialect modules say how to reach their database and write
//! what each writes its own way. The `Store` handle is in `handle`; the modules about a table's
//! reads add their own `impl Store` blocks.

mod adopt;
mod error;
mod handle;
mod migrations;
mod organization_statements;
mod organizations;
mod postgres;
mod records;
mod retention;
mod sqlite;
mod statements;
mod status;
mod target;
mod tombstones;
mod transaction;
mod users_table;
mod writes;

pub(crate) use error::DriverError;
pub use error::{DatabaseError, StoreError};
pub use handle::Store;
pub(crate) use handle::retrying;
pub use migrations::MigrationReport;
pub use organizations::{MembershipRecord, OrganizationRecord};
pub(crate) use records::{InboxRecord, now};
pub use records::{StoredEvent, UserRecord};
pub use retention::INBOX_EXACT_COUNT_UP_TO;
pub(crate) use statements::StateKeys;
pub(crate) use status::{EventSummary, OrganizationCounts};
pub use target::{DatabaseTarget, PoolSettings};
pub use tombstones::{Tombstone, TombstoneRemoval};
pub(crate) use transaction::Transaction;
pub use users_table::UsersTable;
pub(crate) use writes::{InboxUpdate, Writes};
