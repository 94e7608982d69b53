//! What round two of a transaction writes, decided above under the transaction's locks and
//! handed to either backend as it is.

use chrono::NaiveDateTime;

use super::records::InboxRecord;
use crate::sync::{Change, OrganizationWrites, Outcome, RowWrites};

/// A replayed event's new outcome, for its inbox row.
pub(crate) struct InboxUpdate<'a> {
    pub svix_id: &'a str,
    pub outcome: Outcome,
    pub error: Option<&'a str>,
}

/// What a transaction writes, decided under its locks, in the order written.
pub(crate) struct Writes<'a> {
    pub rows: &'a RowWrites,
    pub deletions: &'a [Change],
    pub organizations: &'a OrganizationWrites,
    /// Users deleted by this transaction: their memberships go too.
    pub deleted_users: &'a [&'a str],
    /// Whether a deleted organization's row stays (soft delete) or goes.
    pub keep_organization_rows: bool,
    /// One row per delivery not seen before.
    pub inbox: &'a [InboxRecord<'a>],
    pub replays: &'a [InboxUpdate<'a>],
    /// A job's state key, written with the page it follows.
    pub checkpoint: Option<(&'a str, &'a str)>,
    pub now: NaiveDateTime,
}
