//! The SQL both backends share, written once. `$n` placeholders work on SQLite too; what
//! differs is where clerk-sync's own tables live (a `clerk_sync` schema on PostgreSQL,
//! `clerk_sync_`-prefixed tables on SQLite), how a list is passed (an array on PostgreSQL, a
//! JSON array on SQLite). PostgreSQL sends them from `postgres/` (pipelined, typed); SQLite
//! runs them through [`Statements`], implemented in `sqlite.rs`.

use std::collections::HashSet;

use chrono::NaiveDateTime;

use super::records::{InboxRecord, StoredEvent, UserRecord};
use super::users_table::UsersTable;
use crate::sync::{Change, Outcome, RowWrites, StoredUser};

/// What an event (or a batch of snapshots) touches: user ids, emails, usernames.
#[derive(Debug, Default, Clone)]
pub(crate) struct StateKeys {
    pub user_ids: Vec<String>,
    pub emails: Vec<String>,
    pub usernames: Vec<String>,
    pub organizations: super::organization_statements::OrganizationKeys,
}

impl StateKeys {
    /// Advisory-lock keys: everything touching a user id, email or username takes these, so
    /// events that could interfere run one after the other while unrelated ones run in
    /// parallel. Sorted: one global order, so two transactions never wait on each other
    /// crosswise.
    pub fn lock_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .user_ids
            .iter()
            .map(|id| format!("user:{id}"))
            .chain(self.emails.iter().map(|e| format!("email:{e}")))
            .chain(self.usernames.iter().map(|u| format!("username:{u}")))
            .chain(self.organizations.lock_keys())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Rows and facts an event's decision needs.
#[derive(Debug, Default)]
pub(crate) struct LoadedState {
    pub users: Vec<StoredUser>,
    pub tombstoned: HashSet<String>,
    /// The deliveries' `svix-id`s that are in the inbox already.
    pub seen: HashSet<String>,
    /// What organization events touch (user tombstones are in `tombstoned`).
    pub organizations: crate::sync::OrganizationState,
}

/// The columns every upsert writes, in this order.
pub(crate) const UPSERT_INTO: &str = r#"INSERT INTO {users} AS t (id, email, "firstName", "lastName", name, "imageUrl", username,
                                     "clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt")"#;

/// Newest wins: the WHERE clause repeats the rule in SQL as a last line of defence (the
/// decision was made under the locks).
pub(crate) const UPSERT_ON_CONFLICT: &str = r#"ON CONFLICT (id) DO UPDATE SET
      email = excluded.email, "firstName" = excluded."firstName",
      "lastName" = excluded."lastName", name = excluded.name,
      "imageUrl" = excluded."imageUrl", username = excluded.username,
      "clerkCreatedAt" = excluded."clerkCreatedAt",
      "clerkUpdatedAt" = excluded."clerkUpdatedAt", "updatedAt" = excluded."updatedAt"
    WHERE t."clerkUpdatedAt" IS NULL OR t."clerkUpdatedAt" <= excluded."clerkUpdatedAt""#;

/// One row's upsert with plain parameters: `$1`…`$9` the row, `$10` the time.
pub(crate) fn upsert_one_sql(users: &UsersTable) -> String {
    users.sql(&format!(
        "{UPSERT_INTO}\n    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)\n    {UPSERT_ON_CONFLICT}"
    ))
}

/// Whether a lookup is for one event (plain parameters, whose plan PostgreSQL caches) or for a
/// batch (lists).
pub(crate) fn is_single(svix_ids: &[String], keys: &StateKeys) -> bool {
    svix_ids.len() <= 1
        && keys.user_ids.len() <= 1
        && keys.emails.len() <= 1
        && keys.usernames.len() <= 1
}

/// The rows holding an event's (or a batch's) user ids, emails and usernames, its tombstones
/// and the `svix-id`s already in the inbox. `$1` svix ids, `$2` user ids, `$3` emails, `$4`
/// usernames: single values, or lists (`in_list` wraps a list parameter into "is in").
///
/// One arm per column, so each uses its index (an OR across columns would make PostgreSQL scan
/// the table); a row found twice is merged by the reader.
pub(crate) fn load_state_sql(
    users: &UsersTable,
    ns: &str,
    (open, close): (&str, &str),
    single: bool,
) -> String {
    let is = |n: u8| {
        if single {
            format!("= ${n}")
        } else {
            format!("{open}${n}{close}")
        }
    };
    users.sql(&format!(
        r#"SELECT 'u' AS kind, id, email, username, "clerkUpdatedAt", "deletedAt" IS NOT NULL AS deleted
           FROM {{users}} WHERE id {id}
           UNION ALL
           SELECT 'u', id, email, username, "clerkUpdatedAt", "deletedAt" IS NOT NULL
           FROM {{users}} WHERE email {email}
           UNION ALL
           SELECT 'u', id, email, username, "clerkUpdatedAt", "deletedAt" IS NOT NULL
           FROM {{users}} WHERE username {username}
           UNION ALL
           SELECT 't', user_id, NULL, NULL, NULL, FALSE FROM {ns}tombstones WHERE user_id {id}
           UNION ALL
           SELECT 'i', svix_id, NULL, NULL, NULL, FALSE FROM {ns}inbox WHERE svix_id {svix}"#,
        id = is(2),
        email = is(3),
        username = is(4),
        svix = is(1),
    ))
}

/// One inbox row, `RETURNING` its `svix-id` unless it was there already.
pub(crate) fn insert_inbox_sql(ns: &str) -> String {
    format!(
        "INSERT INTO {ns}inbox (svix_id, event_type, user_id, outcome, error, payload,
                               svix_timestamp, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (svix_id) DO NOTHING
         RETURNING svix_id"
    )
}

/// A deletion's statement: `$1` the user id, `$2` the time (soft deletes, tombstones).
pub(crate) fn deletion_sql(users: &UsersTable, ns: &str, change: &Change) -> String {
    match change {
        Change::DeleteRow { .. } => users.sql("DELETE FROM {users} WHERE id = $1"),
        Change::SoftDeleteRow { .. } => users.sql(
            r#"UPDATE {users} SET "deletedAt" = $2, email = NULL, username = NULL, "updatedAt" = $2
               WHERE id = $1"#,
        ),
        Change::EraseRow { .. } => users.sql(
            r#"UPDATE {users} SET "deletedAt" = $2, email = NULL, username = NULL,
                   "firstName" = NULL, "lastName" = NULL, name = NULL, "imageUrl" = NULL,
                   "updatedAt" = $2
               WHERE id = $1"#,
        ),
        _ => format!(
            "INSERT INTO {ns}tombstones (user_id, deleted_at) VALUES ($1, $2)
             ON CONFLICT (user_id) DO NOTHING"
        ),
    }
}

/// A user's row and whether its id is tombstoned (`$1` the id), in one statement.
pub(crate) fn user_sql(users: &UsersTable, ns: &str) -> String {
    users.sql(&format!(
        r#"SELECT u.id, u.email, u."firstName", u."lastName", u.name, u."imageUrl", u.username,
                  u."clerkCreatedAt", u."clerkUpdatedAt", u."createdAt", u."updatedAt", u."deletedAt",
                  EXISTS (SELECT 1 FROM {ns}tombstones t WHERE t.user_id = $1) AS tombstoned
           FROM (SELECT 1) AS one LEFT JOIN {{users}} u ON u.id = $1"#
    ))
}

/// An inbox row's columns, in [`stored_event`]'s order.
const INBOX_COLUMNS: &str = "svix_id, event_type, user_id, outcome, error, payload, svix_timestamp, received_at, replayed_at";

pub(crate) fn stored_event_sql(ns: &str) -> String {
    format!("SELECT {INBOX_COLUMNS} FROM {ns}inbox WHERE svix_id = $1")
}

/// The newest events first: `$1` failed ones only, `$2` how many.
pub(crate) fn stored_events_sql(ns: &str) -> String {
    format!(
        "SELECT {INBOX_COLUMNS} FROM {ns}inbox WHERE outcome = 'failed' OR NOT $1
         ORDER BY received_at DESC, svix_id LIMIT $2"
    )
}

pub(crate) fn update_inbox_sql(ns: &str) -> String {
    format!("UPDATE {ns}inbox SET outcome = $2, error = $3, replayed_at = $4 WHERE svix_id = $1")
}

pub(crate) fn get_state_sql(ns: &str) -> String {
    format!("SELECT value FROM {ns}state WHERE key = $1")
}

pub(crate) fn set_state_sql(ns: &str) -> String {
    format!(
        "INSERT INTO {ns}state (key, value, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
    )
}

pub(crate) fn delete_state_sql(ns: &str) -> String {
    format!("DELETE FROM {ns}state WHERE key = $1")
}

/// Takes the lease (`$1` name, `$2` holder, `$3` until) unless another holder's runs at `$4`.
pub(crate) fn acquire_lease_sql(ns: &str) -> String {
    format!(
        "INSERT INTO {ns}leases AS l (name, holder, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE l.expires_at < $4 OR l.holder = $2"
    )
}

pub(crate) fn release_lease_sql(ns: &str) -> String {
    format!("DELETE FROM {ns}leases WHERE name = $1 AND holder = $2")
}

/// The lease `$1`: holder, expiry.
pub(crate) fn lease_sql(ns: &str) -> String {
    format!("SELECT holder, expires_at FROM {ns}leases WHERE name = $1")
}

/// Hands lease `$1` from `$2` to `$3` until `$4`, only while `$2` still holds it.
pub(crate) fn take_over_lease_sql(ns: &str) -> String {
    format!("UPDATE {ns}leases SET holder = $3, expires_at = $4 WHERE name = $1 AND holder = $2")
}

pub(crate) fn failed_count_sql(ns: &str) -> String {
    format!("SELECT count(*) FROM {ns}inbox WHERE outcome = 'failed'")
}

/// Ids of live rows first written before `$1`.
pub(crate) fn live_user_ids_sql(users: &UsersTable) -> String {
    users
        .sql(r#"SELECT id FROM {users} WHERE "deletedAt" IS NULL AND "createdAt" < $1 ORDER BY id"#)
}

/// The statements SQLite runs, one by one on a connection (no network: a statement per row
/// costs little).
pub(crate) trait Statements {
    /// Rows holding any of the ids, emails or usernames, tombstoned ids, and which of the
    /// `svix-id`s were processed before, in one round trip.
    async fn load_state(
        &mut self,
        users: &UsersTable,
        svix_ids: &[String],
        keys: &StateKeys,
    ) -> Result<LoadedState, sqlx::Error>;

    /// Clears changing emails and usernames, then inserts or overwrites the rows.
    async fn write_rows(
        &mut self,
        users: &UsersTable,
        writes: &RowWrites,
        now: NaiveDateTime,
    ) -> Result<(), sqlx::Error>;

    /// Inserts or overwrites one row with plain parameters (see [`upsert_one_sql`]).
    async fn upsert_one(
        &mut self,
        users: &UsersTable,
        user: &crate::sync::UserSnapshot,
        now: NaiveDateTime,
    ) -> Result<(), sqlx::Error>;

    /// A deletion's changes (remove or soft-delete the row, tombstone the id).
    async fn apply_deletion(
        &mut self,
        users: &UsersTable,
        change: &Change,
        now: NaiveDateTime,
    ) -> Result<(), sqlx::Error>;

    /// A user's row and whether its id is tombstoned, in one round trip.
    async fn user(
        &mut self,
        users: &UsersTable,
        id: &str,
    ) -> Result<(Option<UserRecord>, bool), sqlx::Error>;

    /// Returns false when the `svix-id` is already there.
    async fn insert_inbox(&mut self, record: &InboxRecord<'_>) -> Result<bool, sqlx::Error>;

    /// Inserts a batch's inbox rows; returns the `svix-id`s that were not there yet. Row by
    /// row: only SQLite writes batches through this trait (no network, so a statement per row
    /// costs little); PostgreSQL sends one bulk insert in the transaction's second round
    /// (`postgres::Transaction::write`).
    async fn insert_inbox_rows(
        &mut self,
        records: &[InboxRecord<'_>],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let mut inserted = HashSet::new();
        for record in records {
            if self.insert_inbox(record).await? {
                inserted.insert(record.svix_id.to_owned());
            }
        }
        Ok(inserted)
    }

    /// Records the result of replaying a stored event.
    async fn update_inbox(
        &mut self,
        svix_id: &str,
        outcome: Outcome,
        error: Option<&str>,
        now: NaiveDateTime,
    ) -> Result<(), sqlx::Error>;

    async fn stored_event(&mut self, svix_id: &str) -> Result<Option<StoredEvent>, sqlx::Error>;

    async fn stored_events(
        &mut self,
        failed_only: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error>;

    async fn get_state(&mut self, key: &str) -> Result<Option<String>, sqlx::Error>;

    async fn set_state(
        &mut self,
        key: &str,
        value: Option<&str>,
        now: NaiveDateTime,
    ) -> Result<(), sqlx::Error>;

    /// Takes or renews a lease; false when another holder's lease has not expired.
    async fn acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        expires_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Result<bool, sqlx::Error>;

    async fn release_lease(&mut self, name: &str, holder: &str) -> Result<(), sqlx::Error>;

    /// The lease `name`: its holder and when it expires.
    async fn lease(&mut self, name: &str) -> Result<Option<(String, NaiveDateTime)>, sqlx::Error>;

    /// Hands the lease to `new_holder` only while `dead_holder` still holds it: of two
    /// processes taking over the same dead holder's lease, one wins.
    async fn take_over_lease(
        &mut self,
        name: &str,
        dead_holder: &str,
        new_holder: &str,
        expires_at: NaiveDateTime,
    ) -> Result<bool, sqlx::Error>;

    async fn failed_event_count(&mut self) -> Result<i64, sqlx::Error>;

    /// Ids of live rows first written before `before` (candidates for reconciliation's
    /// deletion phase).
    async fn live_user_ids(
        &mut self,
        users: &UsersTable,
        before: NaiveDateTime,
    ) -> Result<Vec<String>, sqlx::Error>;
}

/// Reads the rows of [`load_state_sql`] (same columns on both backends).
pub(crate) fn read_state<R: sqlx::Row>(
    rows: impl IntoIterator<Item = R>,
) -> Result<LoadedState, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<NaiveDateTime>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut state = LoadedState::default();
    let mut found = HashSet::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        let kind: String = row.try_get("kind")?;
        match kind.as_str() {
            "t" => {
                state.tombstoned.insert(id);
            }
            "i" => {
                state.seen.insert(id);
            }
            _ if !found.insert(id.clone()) => {}
            _ => state.users.push(StoredUser {
                id,
                email: row.try_get("email")?,
                username: row.try_get("username")?,
                clerk_updated_at: row
                    .try_get::<Option<NaiveDateTime>, _>("clerkUpdatedAt")?
                    .map(super::records::datetime_to_millis),
                deleted: row.try_get("deleted")?,
            }),
        }
    }
    Ok(state)
}

/// Reads an inbox row (same columns on both backends).
pub(crate) fn stored_event<R: sqlx::Row>(row: &R) -> Result<StoredEvent, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> NaiveDateTime: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::records::stored_event_from!(
        row,
        row.try_get("payload")?
    ))
}
