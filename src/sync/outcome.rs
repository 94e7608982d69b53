//! What applying an event did, the same words for users, organizations and memberships.

use std::fmt;

/// What processing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A snapshot created the row.
    Created,
    /// A snapshot (not older than the row) was written over it.
    Updated,
    /// The row already holds this very snapshot (same `updated_at`, same email and username):
    /// nothing to write. Clerk bumps `updated_at` on every change, so same version, same data.
    Unchanged,
    /// A snapshot older than the row: nothing changed.
    Stale,
    /// The user is deleted: the snapshot (or a repeated deletion) changed nothing.
    Tombstoned,
    /// A deletion removed (or soft-deleted) the row.
    Deleted,
    /// A deletion of a user we never had: only the tombstone was written.
    NotFound,
    /// An event type we do not sync.
    Ignored,
    /// The event could not be applied; it is stored with the error for replay.
    Failed,
    /// The same `svix-id` was processed before: nothing changed.
    Duplicate,
}

impl Outcome {
    /// Every outcome, e.g. to set up one metric series or report line per outcome.
    pub const ALL: [Outcome; 10] = [
        Outcome::Created,
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::Stale,
        Outcome::Tombstoned,
        Outcome::Deleted,
        Outcome::NotFound,
        Outcome::Ignored,
        Outcome::Failed,
        Outcome::Duplicate,
    ];

    /// The name stored in the inbox's `outcome` column and used in logs and metric labels
    /// (`created`, `not_found`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Tombstoned => "tombstoned",
            Outcome::Deleted => "deleted",
            Outcome::NotFound => "not_found",
            Outcome::Ignored => "ignored",
            Outcome::Failed => "failed",
            Outcome::Duplicate => "duplicate",
        }
    }

    /// The outcome [`Outcome::as_str`] names; `None` for any other text.
    pub(crate) fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
