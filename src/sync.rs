//! The sync rules: what a Clerk snapshot or deletion does to the app's tables.
//!
//! Pure decisions, no I/O: the ingest layer reads the rows an event touches, asks the rules
//! what to change, and writes the answer in the same transaction. The webhook, the fallback
//! fetch, backfill, reconciliation and replay all go through here, so every source of data obeys
//! the same ordering rules:
//!
//! * newest snapshot wins, by Clerk's `updated_at` (ms); an equal one is applied again;
//! * deletes are final: a tombstone outlives the row and blocks any later snapshot;
//! * unique values (email, username, slug) go to the newer snapshot; an older row that still
//!   holds one gives it up (NULL) until its own newer event arrives.
//!
//! Users and organizations each have a module of their own; they share [`Outcome`] and
//! [`ClerkMillis`] and nothing else.

mod organizations;
mod outcome;
mod time;
mod users;

pub use organizations::{MembershipDeletion, MembershipSnapshot, OrganizationSnapshot};
pub(crate) use organizations::{
    OrganizationEvent, OrganizationState, OrganizationWrites, StoredMembership, StoredOrganization,
    plan_organizations,
};
pub use outcome::Outcome;
pub use time::ClerkMillis;
pub(crate) use time::valid_millis;
pub use users::{
    BatchPlan, Change, DeleteMode, Plan, Planned, RowWrites, StoredUser, SyncState, UserSnapshot,
    full_name, plan_batch, plan_deletion, plan_snapshot, plan_snapshots,
};
