//! Clerk webhook payloads, parsed as little as the sync needs and no more.
//!
//! Only the fields we store are read; everything else Clerk sends (today or tomorrow) is ignored,
//! so a new field never breaks delivery. A body that is not an event envelope at all is an
//! [`EnvelopeError`] (the sender made a mistake no retry can fix); an envelope whose `data` we
//! cannot use is an [`EventKind::Unusable`] event, recorded as failed for a later replay.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sync::{
    ClerkMillis, MembershipDeletion, MembershipSnapshot, OrganizationSnapshot, UserSnapshot,
    full_name, valid_millis,
};

/// A verified body that is not a Clerk event envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body does not parse as JSON at all.
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but without a string `type` and a `data` object.
    #[error(
        "body is JSON but not an event envelope (it needs a string \"type\" and a \"data\" object)"
    )]
    NotAnEnvelope,
}

/// One Clerk event, as far as the sync cares.
#[derive(Debug, Clone)]
pub struct ClerkEvent {
    /// Clerk's event type, e.g. `user.created`.
    pub event_type: String,
    /// What the event means for the tables, with the data it carries.
    pub kind: EventKind,
}

/// What an event asks of the tables: a snapshot to apply, a deletion, nothing (a type not
/// synced), or a failure to record (data that cannot be applied).
#[derive(Debug, Clone)]
pub enum EventKind {
    /// `user.created` / `user.updated`: the whole user as Clerk holds it now.
    UserSnapshot(UserSnapshot),
    /// `user.deleted`: only the id survives.
    UserDeleted {
        /// Clerk's user id (`user_…`).
        user_id: String,
    },
    /// `organization.created` / `organization.updated`: the whole organization.
    OrganizationSnapshot(OrganizationSnapshot),
    /// `organization.deleted`: only the id (and slug) survive.
    OrganizationDeleted {
        /// Clerk's organization id (`org_…`).
        organization_id: String,
    },
    /// `organizationMembership.created` / `.updated`: the whole membership and its organization.
    MembershipSnapshot(MembershipSnapshot),
    /// `organizationMembership.deleted`, at the time Clerk sent it.
    MembershipDeleted(MembershipDeletion),
    /// A well-formed event of a type we do not sync (session.*, organization.*, ...).
    Unhandled,
    /// A user event whose `data` we cannot apply; the reason is kept with the stored event.
    Unusable {
        /// The user the event names, when even that much could be read.
        user_id: Option<String>,
        /// What is wrong with `data`, for the operator (stored as the event's error).
        reason: String,
    },
}

impl ClerkEvent {
    /// The Clerk user this event is about, when it names one.
    pub fn user_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::UserSnapshot(s) => Some(&s.id),
            EventKind::UserDeleted { user_id } => Some(user_id),
            EventKind::MembershipSnapshot(m) => Some(&m.user_id),
            EventKind::MembershipDeleted(m) => Some(&m.user_id),
            EventKind::Unusable { user_id, .. } => user_id.as_deref(),
            EventKind::OrganizationSnapshot(_)
            | EventKind::OrganizationDeleted { .. }
            | EventKind::Unhandled => None,
        }
    }

    /// The Clerk organization this event is about, when it names one.
    pub(crate) fn organization_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::OrganizationSnapshot(o) => Some(&o.id),
            EventKind::OrganizationDeleted { organization_id } => Some(organization_id),
            EventKind::MembershipSnapshot(m) => Some(&m.organization.id),
            EventKind::MembershipDeleted(m) => Some(&m.organization_id),
            _ => None,
        }
    }

    /// The Clerk membership this event is about, when it names one.
    pub(crate) fn membership_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::MembershipSnapshot(m) => Some(&m.id),
            EventKind::MembershipDeleted(m) => Some(&m.id),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(borrow)]
    data: &'a RawValue,
    /// When Clerk sent the event; only a membership deletion needs it.
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
}

/// The part of Clerk's User object that ends up in the `users` table.
#[derive(Debug, Deserialize)]
pub struct UserData {
    /// Clerk's user id (`user_…`); a user without one cannot be stored.
    pub id: Option<String>,
    /// Which of `email_addresses` is the primary one (`idn_…`); `None` for a user without
    /// email (phone or username sign-up).
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    /// Every address of the user, verified or not; only the primary one is stored.
    #[serde(default)]
    pub email_addresses: Option<Vec<EmailAddress>>,
    /// Given name, as the user entered it.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name, as the user entered it.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Set only when the instance has usernames turned on.
    #[serde(default)]
    pub username: Option<String>,
    /// The profile image's URL as Clerk serves it (a generated avatar when none was uploaded).
    #[serde(default)]
    pub image_url: Option<String>,
    /// When the user was created in Clerk, in Unix milliseconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// When Clerk last changed the user, in Unix milliseconds: what orders snapshots of the
    /// same user, so one without it cannot be applied.
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// One of a user's email addresses in Clerk's User object.
#[derive(Debug, Deserialize)]
pub struct EmailAddress {
    /// The address's id (`idn_…`), which `primary_email_address_id` refers to.
    pub id: Option<String>,
    /// The address itself.
    pub email_address: Option<String>,
}

#[derive(Deserialize)]
struct DeletedObject {
    id: Option<String>,
}

/// Parses a verified webhook body.
pub fn parse_event(body: &[u8]) -> Result<ClerkEvent, EnvelopeError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(e) if e.is_data() => return Err(EnvelopeError::NotAnEnvelope),
        Err(e) => return Err(EnvelopeError::NotJson(e)),
    };
    if !envelope.data.get().trim_start().starts_with('{') {
        return Err(EnvelopeError::NotAnEnvelope);
    }
    let kind = match envelope.event_type.as_str() {
        "user.created" | "user.updated" => user_snapshot_kind(envelope.data),
        "user.deleted" => match serde_json::from_str::<DeletedObject>(envelope.data.get()) {
            Ok(DeletedObject { id: Some(id) }) if !id.is_empty() => {
                EventKind::UserDeleted { user_id: id }
            }
            Ok(_) => unusable(None, "user.deleted without a user id in data.id"),
            Err(e) => unusable(None, format!("user.deleted data is malformed: {e}")),
        },
        "organization.created" | "organization.updated" => {
            match serde_json::from_str::<OrganizationData>(envelope.data.get()) {
                Ok(data) => match OrganizationSnapshot::from_clerk(data) {
                    Ok(snapshot) => EventKind::OrganizationSnapshot(snapshot),
                    Err(reason) => unusable(None, reason),
                },
                Err(e) => unusable(None, format!("organization data is malformed: {e}")),
            }
        }
        "organization.deleted" => {
            match serde_json::from_str::<DeletedObject>(envelope.data.get()) {
                Ok(DeletedObject { id: Some(id) }) if !id.is_empty() => {
                    EventKind::OrganizationDeleted {
                        organization_id: id,
                    }
                }
                Ok(_) => unusable(None, "organization.deleted without an id in data.id"),
                Err(e) => unusable(None, format!("organization.deleted data is malformed: {e}")),
            }
        }
        "organizationMembership.created"
        | "organizationMembership.updated"
        | "organizationMembership.deleted" => {
            let deleted = envelope.event_type.ends_with(".deleted");
            let sent_at = envelope.timestamp.as_ref().and_then(envelope_millis);
            membership_kind(envelope.data, deleted.then_some(sent_at))
        }
        _ => EventKind::Unhandled,
    };
    Ok(ClerkEvent {
        event_type: envelope.event_type,
        kind,
    })
}

fn unusable(user_id: Option<String>, reason: impl Into<String>) -> EventKind {
    EventKind::Unusable {
        user_id,
        reason: reason.into(),
    }
}

fn user_snapshot_kind(data: &RawValue) -> EventKind {
    let user: UserData = match serde_json::from_str(data.get()) {
        Ok(user) => user,
        Err(e) => {
            // Keep the id when it can be read at all, so the failed event can be found by user.
            let user_id = serde_json::from_str::<DeletedObject>(data.get())
                .ok()
                .and_then(|d| d.id);
            return unusable(user_id, format!("user data is malformed: {e}"));
        }
    };
    match UserSnapshot::from_clerk(user) {
        Ok(snapshot) => EventKind::UserSnapshot(snapshot),
        Err(e) => unusable(e.user_id, e.reason),
    }
}

/// Why a Clerk user object cannot become a snapshot.
#[derive(Debug)]
pub(crate) struct UnusableUser {
    /// The user's id, when the object has one.
    pub user_id: Option<String>,
    /// What is missing or invalid, for the log and the stored event.
    pub reason: String,
}

// The wire-to-domain conversion lives with the wire types, so the sync rules never see Clerk's
// JSON shapes and `sync` depends on nothing in `clerk`.
impl UserSnapshot {
    /// Reads Clerk's user object the way Clerk means it: the primary email is the address whose
    /// id is `primary_email_address_id` (never simply the first one), and there may be none.
    pub(crate) fn from_clerk(user: UserData) -> Result<Self, UnusableUser> {
        let id = match user.id {
            Some(id) if !id.is_empty() => id,
            _ => {
                return Err(UnusableUser {
                    user_id: None,
                    reason: "user data has no id".into(),
                });
            }
        };
        let Some(updated_at) = user.updated_at.filter(|t| valid_millis(*t)) else {
            return Err(UnusableUser {
                user_id: Some(id),
                reason: "user data has no valid updated_at (Unix milliseconds), so it cannot be \
                         ordered against other events"
                    .into(),
            });
        };
        let email = user.primary_email_address_id.and_then(|primary| {
            user.email_addresses
                .unwrap_or_default()
                .into_iter()
                .find(|address| address.id.as_deref() == Some(primary.as_str()))
                .and_then(|address| address.email_address)
                .filter(|email| !email.is_empty())
        });
        let name = full_name(user.first_name.as_deref(), user.last_name.as_deref());
        Ok(UserSnapshot {
            id,
            email,
            name,
            first_name: user.first_name,
            last_name: user.last_name,
            image_url: user.image_url,
            username: user.username.filter(|u| !u.is_empty()),
            created_at: user.created_at.filter(|t| valid_millis(*t)),
            updated_at,
        })
    }
}

/// The part of Clerk's Organization object that ends up in the `organizations` table.
#[derive(Debug, Deserialize)]
pub(crate) struct OrganizationData {
    /// Clerk's organization id (`org_…`); one without it cannot be stored.
    pub id: Option<String>,
    /// Display name; required to store the organization.
    #[serde(default)]
    pub name: Option<String>,
    /// URL-friendly name, unique within the instance; may be absent or empty.
    #[serde(default)]
    pub slug: Option<String>,
    /// The logo's URL.
    #[serde(default)]
    pub image_url: Option<String>,
    /// Id of the user who created the organization (`user_…`).
    #[serde(default)]
    pub created_by: Option<String>,
    /// When the organization was created in Clerk, in Unix milliseconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// When Clerk last changed the organization, in Unix milliseconds: what orders snapshots of
    /// it, so one without it cannot be applied.
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// The part of Clerk's OrganizationMembership object that ends up in
/// `organization_memberships` (and, through the organization it embeds, `organizations`).
#[derive(Debug, Deserialize)]
pub(crate) struct MembershipData {
    /// Clerk's membership id (`orgmem_…`); one without it cannot be stored.
    pub id: Option<String>,
    /// The member's role key: `org:admin`, `org:member` or a custom `org:<key>`.
    #[serde(default)]
    pub role: Option<String>,
    /// The organization, embedded whole; it is stored (or updated) along with the membership.
    #[serde(default)]
    pub organization: Option<OrganizationData>,
    /// Who the member is; only the user id is read.
    #[serde(default)]
    pub public_user_data: Option<PublicUserData>,
    /// When the membership was created in Clerk, in Unix milliseconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// When Clerk last changed the membership, in Unix milliseconds: what orders snapshots of
    /// it. Clerk does not bump it on deletion.
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// The member as a membership describes them (`public_user_data`).
#[derive(Debug, Deserialize)]
pub(crate) struct PublicUserData {
    /// The member's Clerk user id (`user_…`); a membership without it cannot be stored.
    #[serde(default)]
    pub user_id: Option<String>,
}

impl OrganizationSnapshot {
    /// Reads Clerk's organization object; the reason when it cannot be stored.
    pub(crate) fn from_clerk(data: OrganizationData) -> Result<Self, String> {
        let Some(id) = data.id.filter(|id| !id.is_empty()) else {
            return Err("organization data has no id".into());
        };
        let Some(updated_at) = data.updated_at.filter(|t| valid_millis(*t)) else {
            return Err(format!(
                "organization {id} has no valid updated_at (Unix milliseconds), so it cannot be \
                 ordered against other events"
            ));
        };
        let Some(name) = data.name else {
            return Err(format!("organization {id} has no name"));
        };
        Ok(OrganizationSnapshot {
            id,
            name,
            slug: data.slug.filter(|s| !s.is_empty()),
            image_url: data.image_url,
            created_by: data.created_by.filter(|s| !s.is_empty()),
            created_at: data.created_at.filter(|t| valid_millis(*t)),
            updated_at,
        })
    }
}

impl MembershipSnapshot {
    /// Reads Clerk's membership object, the organization it embeds included; the reason when
    /// it cannot be stored.
    pub(crate) fn from_clerk(data: MembershipData) -> Result<Self, String> {
        let Some(id) = data.id.filter(|id| !id.is_empty()) else {
            return Err("membership data has no id".into());
        };
        let Some(organization) = data.organization else {
            return Err(format!("membership {id} has no organization"));
        };
        let organization = OrganizationSnapshot::from_clerk(organization)
            .map_err(|reason| format!("membership {id}: {reason}"))?;
        let Some(user_id) = data
            .public_user_data
            .and_then(|u| u.user_id)
            .filter(|u| !u.is_empty())
        else {
            return Err(format!("membership {id} has no public_user_data.user_id"));
        };
        let Some(updated_at) = data.updated_at.filter(|t| valid_millis(*t)) else {
            return Err(format!(
                "membership {id} has no valid updated_at (Unix milliseconds), so it cannot be \
                 ordered against other events"
            ));
        };
        let Some(role) = data.role.filter(|r| !r.is_empty()) else {
            return Err(format!("membership {id} has no role"));
        };
        Ok(MembershipSnapshot {
            id,
            organization,
            user_id,
            role,
            created_at: data.created_at.filter(|t| valid_millis(*t)),
            updated_at,
        })
    }
}

/// A membership event's kind. `deleted` carries the envelope's time for a deletion.
fn membership_kind(data: &RawValue, deleted: Option<Option<ClerkMillis>>) -> EventKind {
    let parsed = serde_json::from_str::<MembershipData>(data.get())
        .map_err(|e| format!("membership data is malformed: {e}"))
        .and_then(MembershipSnapshot::from_clerk);
    let membership = match parsed {
        Ok(membership) => membership,
        Err(reason) => {
            let user_id = serde_json::from_str::<MembershipData>(data.get())
                .ok()
                .and_then(|m| m.public_user_data)
                .and_then(|u| u.user_id);
            return unusable(user_id, reason);
        }
    };
    match deleted {
        None => EventKind::MembershipSnapshot(membership),
        // Clerk does not bump `updated_at` on deletion, so the deletion is as new as the time
        // it was sent, and never older than the membership it carries.
        Some(sent_at) => EventKind::MembershipDeleted(MembershipDeletion {
            at: sent_at.map_or(membership.updated_at, |t| t.max(membership.updated_at)),
            id: membership.id,
            organization_id: membership.organization.id,
            user_id: membership.user_id,
        }),
    }
}

/// The envelope's `timestamp` in milliseconds. Real payloads carry milliseconds; one published
/// example carries seconds, so a value too small to be a millisecond time of this century is
/// read as seconds.
fn envelope_millis(value: &serde_json::Value) -> Option<ClerkMillis> {
    let t = value.as_i64()?;
    let millis = if (0..100_000_000_000).contains(&t) {
        t.checked_mul(1000)?
    } else {
        t
    };
    valid_millis(millis).then_some(millis)
}
