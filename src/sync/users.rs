//! The sync rules: what a Clerk user snapshot or deletion does to the `users` table.
//!
//! Pure decisions, no I/O: the store reads the rows an event touches into a [`SyncState`], asks
//! [`plan_snapshot`] or [`plan_deletion`] what to change, and writes the [`Plan`] in the same
//! transaction. The webhook, the fallback fetch, backfill and reconciliation all go through here,
//! so every source of user data obeys the same ordering rules:
//!
//! * newest snapshot wins, by Clerk's `updated_at` (ms); an equal one is applied again;
//! * deletes are final: a tombstone outlives the row and blocks any later snapshot;
//! * unique values (email, username) go to the newer snapshot; an older row that still holds
//!   one gives it up (NULL) until its own newer event arrives.

use super::outcome::Outcome;
use super::time::ClerkMillis;

/// A user as Clerk holds it at `updated_at`, reduced to the columns we keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSnapshot {
    /// Clerk's user id (`user_…`), the row's primary key.
    pub id: String,
    /// The primary email address; `None` when the user has none, or when a newer user holds
    /// it (unique values go to the newer snapshot).
    pub email: Option<String>,
    /// Given name, as entered in Clerk.
    pub first_name: Option<String>,
    /// Family name, as entered in Clerk.
    pub last_name: Option<String>,
    /// First and last name joined by [`full_name`]; `None` when both are empty.
    pub name: Option<String>,
    /// Clerk's URL of the profile image.
    pub image_url: Option<String>,
    /// The username, unique like `email`; `None` when unset or held by a newer user.
    pub username: Option<String>,
    /// When Clerk created the user; `None` when Clerk's value is missing or out of range.
    pub created_at: Option<ClerkMillis>,
    /// The version of this snapshot: of two snapshots of one user, the one with the later
    /// `updated_at` wins.
    pub updated_at: ClerkMillis,
}

/// First and last name joined with a space; NULL when both are empty (the design's rule, without
/// its `"null null"` pitfalls).
pub fn full_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [first, last]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// What `user.deleted` does to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteMode {
    /// Remove the row, as the design does.
    #[default]
    Hard,
    /// Keep the row, set `deletedAt`, free its email and username.
    Soft,
    /// Keep the row but erase everything personal in it (email, names, username, image) and
    /// set `deletedAt`: what `Hard` does when a foreign key of the app's still points at the
    /// user, so the deletion neither fails for ever nor leaves personal data behind. Not a
    /// setting of its own.
    Erase,
}

impl std::str::FromStr for DeleteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hard" | "delete" => Ok(DeleteMode::Hard),
            "soft" => Ok(DeleteMode::Soft),
            other => Err(format!(
                "unknown delete mode {other:?}: use \"hard\" (remove the row) or \"soft\" (set deletedAt)"
            )),
        }
    }
}

/// A row of `users` as far as the rules need to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// Clerk's user id (`user_…`).
    pub id: String,
    /// The email the row holds now (unique among rows).
    pub email: Option<String>,
    /// The username the row holds now (unique among rows).
    pub username: Option<String>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`); `None`
    /// for a row clerk-sync did not write, which any snapshot may overwrite.
    pub clerk_updated_at: Option<ClerkMillis>,
    /// The row is soft-deleted (`deletedAt` is set).
    pub deleted: bool,
}

/// Everything an event can touch: the rows holding its user id, email or username, and whether
/// the user id is tombstoned.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    /// The rows holding the event's user id, email or username (in any order).
    pub users: Vec<StoredUser>,
    /// The event's user id was deleted before: nothing brings it back.
    pub tombstoned: bool,
}

impl SyncState {
    fn user(&self, id: &str) -> Option<&StoredUser> {
        self.users.iter().find(|u| u.id == id)
    }
    fn holder_of(
        &self,
        id: &str,
        field: impl Fn(&StoredUser) -> Option<&str>,
        value: &str,
    ) -> Option<&StoredUser> {
        self.users
            .iter()
            .find(|u| u.id != id && field(u) == Some(value))
    }
}

/// One write the store performs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An older row gives up an email that a newer snapshot holds.
    ReleaseEmail {
        /// The user id of the row that held the email.
        from_user: String,
        /// The email it gives up (cleared only if the row still holds it).
        email: String,
    },
    /// An older row gives up a username that a newer snapshot holds.
    ReleaseUsername {
        /// The user id of the row that held the username.
        from_user: String,
        /// The username it gives up (cleared only if the row still holds it).
        username: String,
    },
    /// Insert the row or overwrite it with this snapshot.
    Upsert(UserSnapshot),
    /// Remove the row ([`DeleteMode::Hard`]).
    DeleteRow {
        /// The deleted user's id.
        user_id: String,
    },
    /// Set `deletedAt` and clear email and username.
    SoftDeleteRow {
        /// The deleted user's id.
        user_id: String,
    },
    /// Set `deletedAt` and clear every personal field (see [`DeleteMode::Erase`]).
    EraseRow {
        /// The deleted user's id.
        user_id: String,
    },
    /// Remember the id as deleted for good, so no later snapshot brings the user back.
    Tombstone {
        /// The deleted user's id.
        user_id: String,
    },
}

/// The changes one event makes, and what to call the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The writes, in the order they are to be made; empty when nothing changes.
    pub changes: Vec<Change>,
    /// What the event did, as stored in the inbox and counted in metrics.
    pub outcome: Outcome,
}

impl Plan {
    fn nothing(outcome: Outcome) -> Plan {
        Plan {
            changes: Vec::new(),
            outcome,
        }
    }
}

/// `user.created` / `user.updated` (or a snapshot fetched from Clerk): newest snapshot wins.
pub fn plan_snapshot(snapshot: &UserSnapshot, state: &SyncState) -> Plan {
    if state.tombstoned {
        return Plan::nothing(Outcome::Tombstoned);
    }
    let existing = state.user(&snapshot.id);
    if let Some(row) = existing {
        if row
            .clerk_updated_at
            .is_some_and(|t| t > snapshot.updated_at)
        {
            return Plan::nothing(Outcome::Stale);
        }
        if row.clerk_updated_at == Some(snapshot.updated_at)
            && row.email == snapshot.email
            && row.username == snapshot.username
        {
            return Plan::nothing(Outcome::Unchanged);
        }
    }

    let mut row = snapshot.clone();
    let mut changes = Vec::new();
    match claim(snapshot, state, snapshot.email.as_deref(), |u| {
        u.email.as_deref()
    }) {
        Claim::Uncontested => {}
        Claim::TakeFrom { holder, value } => changes.push(Change::ReleaseEmail {
            from_user: holder,
            email: value,
        }),
        Claim::GiveUp => row.email = None,
    }
    match claim(snapshot, state, snapshot.username.as_deref(), |u| {
        u.username.as_deref()
    }) {
        Claim::Uncontested => {}
        Claim::TakeFrom { holder, value } => changes.push(Change::ReleaseUsername {
            from_user: holder,
            username: value,
        }),
        Claim::GiveUp => row.username = None,
    }
    changes.push(Change::Upsert(row));
    Plan {
        changes,
        outcome: if existing.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        },
    }
}

/// The rows a batch of snapshots leaves behind, ready to be written in bulk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowWrites {
    /// Existing rows whose email changes, with the email they held when read: cleared first,
    /// so no value is ever held twice while the batch is written; and cleared only if they
    /// still hold it, because the row's own newer event may have moved it meanwhile (its user
    /// is not locked by this transaction, only the value is).
    pub clear_email: Vec<(String, String)>,
    /// Existing rows whose username changes, with the username they held.
    pub clear_username: Vec<(String, String)>,
    /// Rows to insert or overwrite, with their final email and username.
    pub upserts: Vec<UserSnapshot>,
}

impl RowWrites {
    /// Nothing to write: no value moves and no row is inserted or overwritten.
    pub fn is_empty(&self) -> bool {
        self.clear_email.is_empty() && self.clear_username.is_empty() && self.upserts.is_empty()
    }
}

/// What a batch does: one outcome per event, in order, and the writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// One outcome per event, in the order the events were given.
    pub outcomes: Vec<Outcome>,
    /// The snapshots' writes, made first.
    pub writes: RowWrites,
    /// Deletions' changes (row removals, tombstones), written after `writes`.
    pub deletions: Vec<Change>,
}

/// One event of a batch, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub enum Planned<'a> {
    /// `user.created` / `user.updated`, or a snapshot read from Clerk.
    Snapshot(&'a UserSnapshot),
    /// `user.deleted` of this user id.
    Deletion(&'a str),
}

/// Plans snapshots one after the other, as if each were its own event, each seeing the rows the
/// previous ones left: a page of a backfill follows exactly the rules a stream of webhooks
/// does. `users` are the rows holding any of the snapshots' ids, emails or usernames.
pub fn plan_snapshots(
    snapshots: &[UserSnapshot],
    users: Vec<StoredUser>,
    tombstoned: &std::collections::HashSet<String>,
) -> BatchPlan {
    let events: Vec<Planned<'_>> = snapshots.iter().map(Planned::Snapshot).collect();
    plan_batch(&events, users, tombstoned, DeleteMode::Hard)
}

/// Plans events that arrived together (deliveries in flight at the same moment, which Svix
/// may deliver in any order) as if they had arrived one after the other: first the snapshots
/// in their order, then the deletions in theirs. That is an order the sender could have
/// chosen, and it lets the writes go out as one bulk upsert followed by the deletions, with no
/// value ever held twice in between. `users` are the rows holding any of the events' ids,
/// emails or usernames; `tombstoned` the ids among them deleted before.
pub fn plan_batch(
    events: &[Planned<'_>],
    users: Vec<StoredUser>,
    tombstoned: &std::collections::HashSet<String>,
    mode: DeleteMode,
) -> BatchPlan {
    use std::collections::{BTreeMap, HashSet};
    let initial: BTreeMap<String, StoredUser> =
        users.into_iter().map(|u| (u.id.clone(), u)).collect();
    let mut rows = initial.clone();
    let mut upserts: BTreeMap<String, UserSnapshot> = BTreeMap::new();
    let mut outcomes = vec![Outcome::Ignored; events.len()];
    for (i, event) in events.iter().enumerate() {
        let Planned::Snapshot(snapshot) = event else {
            continue;
        };
        let view = SyncState {
            users: rows
                .values()
                .filter(|u| {
                    u.id == snapshot.id
                        || (snapshot.email.is_some() && u.email == snapshot.email)
                        || (snapshot.username.is_some() && u.username == snapshot.username)
                })
                .cloned()
                .collect(),
            tombstoned: tombstoned.contains(&snapshot.id),
        };
        let plan = plan_snapshot(snapshot, &view);
        for change in plan.changes {
            match change {
                Change::ReleaseEmail { from_user, .. } => {
                    if let Some(row) = rows.get_mut(&from_user) {
                        row.email = None;
                    }
                    if let Some(pending) = upserts.get_mut(&from_user) {
                        pending.email = None;
                    }
                }
                Change::ReleaseUsername { from_user, .. } => {
                    if let Some(row) = rows.get_mut(&from_user) {
                        row.username = None;
                    }
                    if let Some(pending) = upserts.get_mut(&from_user) {
                        pending.username = None;
                    }
                }
                Change::Upsert(row) => {
                    rows.insert(
                        row.id.clone(),
                        StoredUser {
                            id: row.id.clone(),
                            email: row.email.clone(),
                            username: row.username.clone(),
                            clerk_updated_at: Some(row.updated_at),
                            deleted: false,
                        },
                    );
                    upserts.insert(row.id.clone(), row);
                }
                Change::DeleteRow { .. }
                | Change::SoftDeleteRow { .. }
                | Change::EraseRow { .. }
                | Change::Tombstone { .. } => {
                    unreachable!("a snapshot never plans a deletion")
                }
            }
        }
        outcomes[i] = plan.outcome;
    }
    let changed = |field: fn(&StoredUser) -> &Option<String>| -> Vec<(String, String)> {
        initial
            .values()
            .filter(|before| rows.get(&before.id).map(field) != Some(field(before)))
            .filter_map(|before| Some((before.id.clone(), field(before).clone()?)))
            .collect()
    };
    let writes = RowWrites {
        clear_email: changed(|u| &u.email),
        clear_username: changed(|u| &u.username),
        upserts: upserts.into_values().collect(),
    };
    let mut deleted: HashSet<&str> = HashSet::new();
    let mut deletions = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let Planned::Deletion(user_id) = *event else {
            continue;
        };
        let view = SyncState {
            users: rows.get(user_id).cloned().into_iter().collect(),
            tombstoned: tombstoned.contains(user_id) || deleted.contains(user_id),
        };
        let plan = plan_deletion(user_id, &view, mode);
        if !plan.changes.is_empty() {
            deleted.insert(user_id);
        }
        deletions.extend(plan.changes);
        outcomes[i] = plan.outcome;
    }
    BatchPlan {
        outcomes,
        writes,
        deletions,
    }
}

/// Who keeps a unique value (email or username) the snapshot carries.
enum Claim {
    /// Nobody else holds it.
    Uncontested,
    /// An older row holds it and gives it up.
    TakeFrom { holder: String, value: String },
    /// A newer row holds it: the snapshot goes without it until its own newer event arrives.
    GiveUp,
}

fn claim(
    snapshot: &UserSnapshot,
    state: &SyncState,
    value: Option<&str>,
    field: impl Fn(&StoredUser) -> Option<&str>,
) -> Claim {
    let Some(value) = value else {
        return Claim::Uncontested;
    };
    match state.holder_of(&snapshot.id, field, value) {
        None => Claim::Uncontested,
        Some(holder) if newer_than(snapshot, holder) => Claim::TakeFrom {
            holder: holder.id.clone(),
            value: value.to_owned(),
        },
        Some(_) => Claim::GiveUp,
    }
}

/// Which of two users saw a unique value last. Clerk never gives one value to two users at the
/// same moment, so equal timestamps only meet in crafted input; the id breaks the tie so every
/// delivery order agrees.
fn newer_than(snapshot: &UserSnapshot, holder: &StoredUser) -> bool {
    match holder.clerk_updated_at {
        None => true,
        Some(t) => (snapshot.updated_at, snapshot.id.as_str()) > (t, holder.id.as_str()),
    }
}

/// `user.deleted`: remove (or soft-delete) the row and remember the id for good.
pub fn plan_deletion(user_id: &str, state: &SyncState, mode: DeleteMode) -> Plan {
    if state.tombstoned {
        return Plan::nothing(Outcome::Tombstoned);
    }
    let tombstone = Change::Tombstone {
        user_id: user_id.to_owned(),
    };
    match state.user(user_id) {
        None => Plan {
            changes: vec![tombstone],
            outcome: Outcome::NotFound,
        },
        Some(_) => {
            let remove = match mode {
                DeleteMode::Hard => Change::DeleteRow {
                    user_id: user_id.to_owned(),
                },
                DeleteMode::Soft => Change::SoftDeleteRow {
                    user_id: user_id.to_owned(),
                },
                DeleteMode::Erase => Change::EraseRow {
                    user_id: user_id.to_owned(),
                },
            };
            Plan {
                changes: vec![remove, tombstone],
                outcome: Outcome::Deleted,
            }
        }
    }
}

#[cfg(test)]
mod tests;
