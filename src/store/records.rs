//! The rows clerk-sync reads and writes as values, and the time conversions between Clerk's
//! milliseconds and `TIMESTAMP(3)`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::sync::{ClerkMillis, Outcome};

/// An event as the inbox holds it: one row of the inbox, whoever reads it.
///
/// `P` is the payload: the raw body (`String`, the default) where a row is read whole, `()`
/// where a query leaves the payload out on purpose (the status page's summaries: it lists
/// up to a hundred rows and shows no payload, and payloads can be large). A row read without
/// its payload therefore cannot be replayed or shown in full by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent<P = String> {
    /// The delivery's `svix-id`, the inbox's key (what `clerk-sync events replay` takes).
    pub svix_id: String,
    /// Clerk's event type, e.g. `user.updated`.
    pub event_type: String,
    /// The Clerk user the event is about (the member, for a membership event), when it names
    /// one.
    pub user_id: Option<String>,
    /// What applying it did, as [`Outcome::as_str`] names it (`created`, `failed`, …).
    pub outcome: String,
    /// Why it failed, when `outcome` is `failed`.
    pub error: Option<String>,
    /// The raw body, or `()` where it was left out (see above).
    pub payload: P,
    /// Unix seconds of the delivery attempt, as Svix signed it.
    pub svix_timestamp: i64,
    /// When clerk-sync stored it (UTC).
    pub received_at: NaiveDateTime,
    /// When a replay last applied it again (UTC); `None` if it never was.
    pub replayed_at: Option<NaiveDateTime>,
}

impl<P> StoredEvent<P> {
    /// `received_at` minus `svix_timestamp`, in milliseconds.
    pub(crate) fn delivery_lag_ms(&self) -> i64 {
        datetime_to_millis(self.received_at) - self.svix_timestamp.saturating_mul(1000)
    }
}

/// A row of the `users` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    /// Clerk's user id (`user_…`), the primary key.
    pub id: String,
    /// The primary email address (unique); `None` when the user has none, when a newer user
    /// holds it, or once the user is deleted.
    pub email: Option<String>,
    /// Given name (`firstName`).
    pub first_name: Option<String>,
    /// Family name (`lastName`).
    pub last_name: Option<String>,
    /// First and last name joined with a space (see [`crate::sync::full_name`]).
    pub name: Option<String>,
    /// Clerk's URL of the profile image (`imageUrl`).
    pub image_url: Option<String>,
    /// The username (unique); `None` as for `email`.
    pub username: Option<String>,
    /// When Clerk created the user (`clerkCreatedAt`, UTC).
    #[serde(serialize_with = "prisma_time::option")]
    pub clerk_created_at: Option<NaiveDateTime>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`, UTC): the
    /// row's version, which only a newer snapshot replaces.
    #[serde(serialize_with = "prisma_time::option")]
    pub clerk_updated_at: Option<NaiveDateTime>,
    /// When the row was first written (`createdAt`, UTC).
    #[serde(serialize_with = "prisma_time::required")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (`updatedAt`, UTC).
    #[serde(serialize_with = "prisma_time::required")]
    pub updated_at: NaiveDateTime,
    /// Set when the user was deleted and the row kept (soft delete, or a foreign key of the
    /// app's kept it); `None` for a live user.
    #[serde(serialize_with = "prisma_time::option")]
    pub deleted_at: Option<NaiveDateTime>,
}

/// Row written to the inbox for every processed event.
pub(crate) struct InboxRecord<'a> {
    pub(crate) svix_id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<&'a str>,
    pub(crate) payload: &'a str,
    pub(crate) svix_timestamp: i64,
    pub(crate) received_at: NaiveDateTime,
}

/// A users-table row from a database row of either driver (by column name), its id read
/// already.
macro_rules! user_record_from {
    ($row:expr, $id:expr) => {
        $crate::store::records::UserRecord {
            id: $id,
            email: $row.try_get("email")?,
            first_name: $row.try_get("firstName")?,
            last_name: $row.try_get("lastName")?,
            name: $row.try_get("name")?,
            image_url: $row.try_get("imageUrl")?,
            username: $row.try_get("username")?,
            clerk_created_at: $row.try_get("clerkCreatedAt")?,
            clerk_updated_at: $row.try_get("clerkUpdatedAt")?,
            created_at: $row.try_get("createdAt")?,
            updated_at: $row.try_get("updatedAt")?,
            deleted_at: $row.try_get("deletedAt")?,
        }
    };
}
pub(crate) use user_record_from;

/// An inbox row from a database row of either driver (both have `try_get` by column name):
/// `$payload` is the payload (read, or `()` where a query leaves it out).
macro_rules! stored_event_from {
    ($row:expr, $payload:expr) => {
        $crate::store::records::StoredEvent {
            svix_id: $row.try_get("svix_id")?,
            event_type: $row.try_get("event_type")?,
            user_id: $row.try_get("user_id")?,
            outcome: $row.try_get("outcome")?,
            error: $row.try_get("error")?,
            payload: $payload,
            svix_timestamp: $row.try_get("svix_timestamp")?,
            received_at: $row.try_get("received_at")?,
            replayed_at: $row.try_get("replayed_at")?,
        }
    };
}
pub(crate) use stored_event_from;

/// The current time at the millisecond precision of `TIMESTAMP(3)`.
pub(crate) fn now() -> NaiveDateTime {
    millis_to_datetime(Utc::now().timestamp_millis())
}

pub(super) fn millis_to_datetime(millis: ClerkMillis) -> NaiveDateTime {
    DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .naive_utc()
}

pub(super) fn datetime_to_millis(t: NaiveDateTime) -> ClerkMillis {
    t.and_utc().timestamp_millis()
}

/// Times as a Prisma client hands them to an app (and as the API answers them): ISO 8601 UTC
/// with milliseconds, like `2026-01-02T03:04:05.678Z`.
pub(crate) mod prisma_time {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    pub(crate) fn required<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.and_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }

    pub(crate) fn option<S: Serializer>(
        t: &Option<NaiveDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => required(t, s),
            None => s.serialize_none(),
        }
    }
}
