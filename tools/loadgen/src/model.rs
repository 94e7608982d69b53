//! What Clerk sends and what it holds in the end: the event kinds, the events in Clerk's
//! order, and the final state the tables are checked against.

use clerk_sync::clerk::sample::{SampleMembership, SampleOrganization, SampleUser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Created,
    Updated,
    Deleted,
    OrgCreated,
    OrgUpdated,
    OrgDeleted,
    MemberCreated,
    MemberUpdated,
    MemberDeleted,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "user.created",
            Kind::Updated => "user.updated",
            Kind::Deleted => "user.deleted",
            Kind::OrgCreated => "organization.created",
            Kind::OrgUpdated => "organization.updated",
            Kind::OrgDeleted => "organization.deleted",
            Kind::MemberCreated => "organizationMembership.created",
            Kind::MemberUpdated => "organizationMembership.updated",
            Kind::MemberDeleted => "organizationMembership.deleted",
        }
    }

    /// Whose events these are: `user`, `organization` or `membership`.
    pub(crate) fn family(self) -> &'static str {
        match self {
            Kind::Created | Kind::Updated | Kind::Deleted => "user",
            Kind::OrgCreated | Kind::OrgUpdated | Kind::OrgDeleted => "organization",
            Kind::MemberCreated | Kind::MemberUpdated | Kind::MemberDeleted => "membership",
        }
    }
}

/// Whose timeline an event belongs to (for counting deliveries out of order): a user's, or an
/// organization's (its memberships' events included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    User(usize),
    Org(usize),
}

/// One event in Clerk's order.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) seq: usize,
    pub(crate) key: Key,
    pub(crate) kind: Kind,
    pub(crate) svix_id: String,
    pub(crate) body: String,
}

/// An event as a change makes it, before it gets its place in the stream and its svix-id:
/// whose timeline, what, the body.
pub(crate) type Made = (Key, Kind, String);

/// Clerk's end state: the last snapshot of every user, and who was deleted; the same for
/// organizations and memberships (empty without --organizations).
pub(crate) struct Model {
    pub(crate) users: Vec<SampleUser>,
    pub(crate) deleted: Vec<bool>,
    pub(crate) organizations: Vec<SampleOrganization>,
    pub(crate) organization_deleted: Vec<bool>,
    pub(crate) memberships: Vec<SampleMembership>,
    pub(crate) membership_live: Vec<bool>,
}
