//! The rules for organizations and memberships: the same promises as for users (newest
//! snapshot wins, deletes are final, unique values move to the newer snapshot) applied to
//! Clerk's organization graph.
//!
//! * An organization snapshot is applied only if its `updated_at` is not older than the row's;
//!   a slug moves to the newer organization like an email between users.
//! * `organization.deleted` removes the organization and its memberships for good (tombstone).
//! * A membership snapshot first applies the organization it embeds (so a membership that
//!   arrives before its organization's own event still lands), then itself by newest
//!   `updated_at`; a newer membership of the same user in the same organization (another id)
//!   replaces the older one.
//! * A membership deletion is ordered by the time Clerk sent it (its `updated_at` is not bumped
//!   on deletion): a tombstone keeps that time, and only a snapshot newer than it brings the
//!   membership back.
//! * A deleted user's memberships go, and later membership events for that user change nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::outcome::Outcome;
use super::time::ClerkMillis;

/// An organization as Clerk holds it at `updated_at`, reduced to the columns we keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationSnapshot {
    /// Clerk's organization id (`org_…`), the row's primary key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The URL-friendly name, unique among organizations; `None` when unset or held by a newer
    /// organization (it moves to the newer one, like an email between users).
    pub slug: Option<String>,
    /// Clerk's URL of the organization's logo.
    pub image_url: Option<String>,
    /// Id of the user who created it (`user_…`).
    pub created_by: Option<String>,
    /// When Clerk created the organization; `None` when Clerk's value is missing or out of
    /// range.
    pub created_at: Option<ClerkMillis>,
    /// The version of this snapshot: of two snapshots of one organization, the one with the
    /// later `updated_at` wins.
    pub updated_at: ClerkMillis,
}

/// A membership as Clerk holds it at `updated_at`, with the organization it embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSnapshot {
    /// Clerk's membership id (`orgmem_…`), the row's primary key.
    pub id: String,
    /// The organization, as embedded in the membership; it is applied first, by its own
    /// `updated_at`.
    pub organization: OrganizationSnapshot,
    /// The member's Clerk user id (`user_…`).
    pub user_id: String,
    /// Clerk's role key, e.g. `org:admin`.
    pub role: String,
    /// When the user joined the organization; `None` when Clerk's value is missing or out of
    /// range.
    pub created_at: Option<ClerkMillis>,
    /// The version of this snapshot: of two snapshots of one membership, the one with the
    /// later `updated_at` wins.
    pub updated_at: ClerkMillis,
}

/// A membership removed at `at` (Clerk's time of the deletion, in ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipDeletion {
    /// Clerk's membership id (`orgmem_…`).
    pub id: String,
    /// The organization the user left (`org_…`).
    pub organization_id: String,
    /// The user who left it (`user_…`).
    pub user_id: String,
    /// When Clerk sent the deletion (never before the membership's last `updated_at`): only a
    /// snapshot newer than this brings the membership back.
    pub at: ClerkMillis,
}

/// A row of `organizations` as far as the rules need to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredOrganization {
    pub id: String,
    pub slug: Option<String>,
    pub clerk_updated_at: Option<ClerkMillis>,
}

/// A row of `organization_memberships` as far as the rules need to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMembership {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub role: String,
    pub clerk_updated_at: Option<ClerkMillis>,
}

/// Everything organization events can touch: the rows holding their ids, slugs and (organization,
/// user) pairs, and the tombstones of organizations, memberships and users among them.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrganizationState {
    pub organizations: Vec<StoredOrganization>,
    pub memberships: Vec<StoredMembership>,
    pub organization_tombstones: HashSet<String>,
    /// Membership id → the newest time it was deleted at (ms).
    pub membership_tombstones: HashMap<String, ClerkMillis>,
    /// Deleted users among the memberships' users.
    pub user_tombstones: HashSet<String>,
}

/// One organization event of a transaction, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OrganizationEvent<'a> {
    Organization(&'a OrganizationSnapshot),
    OrganizationDeletion(&'a str),
    Membership(&'a MembershipSnapshot),
    MembershipDeletion(&'a MembershipDeletion),
}

/// What a batch of organization events writes, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrganizationWrites {
    /// Existing organizations that give up their slug, with the slug they held when read
    /// (cleared only if they still hold it).
    pub clear_slugs: Vec<(String, String)>,
    /// Organizations to insert or overwrite, with their final slug.
    pub organizations: Vec<OrganizationSnapshot>,
    /// Memberships replaced by a newer one of the same user in the same organization.
    pub replaced_memberships: Vec<String>,
    /// Memberships to insert or overwrite.
    pub memberships: Vec<MembershipSnapshot>,
    /// Organizations to remove (or, in soft mode, mark deleted), with their memberships.
    pub deleted_organizations: Vec<String>,
    pub organization_tombstones: Vec<String>,
    pub deleted_memberships: Vec<String>,
    /// New or newer membership tombstones.
    pub membership_tombstones: Vec<MembershipDeletion>,
}

/// Outcomes per event, in order, and the writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrganizationPlan {
    pub outcomes: Vec<Outcome>,
    pub writes: OrganizationWrites,
}

/// The working copy of the rows while a batch is planned.
struct Planner<'s> {
    state: &'s OrganizationState,
    initial_slugs: HashMap<String, Option<String>>,
    organizations: BTreeMap<String, StoredOrganization>,
    memberships: BTreeMap<String, StoredMembership>,
    organization_upserts: BTreeMap<String, OrganizationSnapshot>,
    membership_upserts: BTreeMap<String, MembershipSnapshot>,
    replaced: Vec<String>,
    organization_tombstones: HashSet<String>,
    membership_tombstones: HashMap<String, ClerkMillis>,
}

/// Plans organization events as if applied one after the other: first the snapshots in their
/// order, then the deletions in theirs (an order Svix could have delivered them in, as for
/// users; see [`super::plan_batch`]). `deleted_users` are users deleted earlier in the same
/// batch's order: their memberships are removed by the user deletion itself.
pub(crate) fn plan_organizations(
    events: &[OrganizationEvent<'_>],
    state: &OrganizationState,
) -> OrganizationPlan {
    let mut planner = Planner {
        state,
        initial_slugs: state
            .organizations
            .iter()
            .map(|o| (o.id.clone(), o.slug.clone()))
            .collect(),
        organizations: state
            .organizations
            .iter()
            .map(|o| (o.id.clone(), o.clone()))
            .collect(),
        memberships: state
            .memberships
            .iter()
            .map(|m| (m.id.clone(), m.clone()))
            .collect(),
        organization_upserts: BTreeMap::new(),
        membership_upserts: BTreeMap::new(),
        replaced: Vec::new(),
        organization_tombstones: state.organization_tombstones.clone(),
        membership_tombstones: state.membership_tombstones.clone(),
    };
    let mut outcomes = vec![Outcome::Ignored; events.len()];
    for (i, event) in events.iter().enumerate() {
        outcomes[i] = match *event {
            OrganizationEvent::Organization(snapshot) => planner.organization(snapshot),
            OrganizationEvent::Membership(snapshot) => planner.membership(snapshot),
            _ => continue,
        };
    }
    let mut writes = OrganizationWrites::default();
    for (i, event) in events.iter().enumerate() {
        outcomes[i] = match *event {
            OrganizationEvent::OrganizationDeletion(id) => {
                planner.delete_organization(id, &mut writes)
            }
            OrganizationEvent::MembershipDeletion(deletion) => {
                planner.delete_membership(deletion, &mut writes)
            }
            _ => continue,
        };
    }
    writes.clear_slugs = planner
        .initial_slugs
        .iter()
        .filter_map(|(id, before)| {
            let before = before.as_ref()?;
            let after = planner.organizations.get(id).and_then(|o| o.slug.as_ref());
            (after != Some(before)).then(|| (id.clone(), before.clone()))
        })
        .collect();
    writes.clear_slugs.sort();
    writes.organizations = planner.organization_upserts.into_values().collect();
    writes.replaced_memberships = planner.replaced;
    writes.memberships = planner.membership_upserts.into_values().collect();
    OrganizationPlan { outcomes, writes }
}

impl Planner<'_> {
    fn organization(&mut self, snapshot: &OrganizationSnapshot) -> Outcome {
        if self.organization_tombstones.contains(&snapshot.id) {
            return Outcome::Tombstoned;
        }
        let existing = self.organizations.get(&snapshot.id);
        if let Some(row) = existing {
            if row
                .clerk_updated_at
                .is_some_and(|t| t > snapshot.updated_at)
            {
                return Outcome::Stale;
            }
            if row.clerk_updated_at == Some(snapshot.updated_at) && row.slug == snapshot.slug {
                return Outcome::Unchanged;
            }
        }
        let outcome = if existing.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        let mut row = snapshot.clone();
        if let Some(slug) = &snapshot.slug {
            let holder = self
                .organizations
                .values()
                .find(|o| o.id != snapshot.id && o.slug.as_ref() == Some(slug))
                .map(|o| (o.id.clone(), o.clerk_updated_at));
            if let Some((holder, held_at)) = holder {
                // Clerk never gives one slug to two organizations at the same moment; the id
                // breaks a tie only crafted input can make, so every order agrees.
                let newer = held_at.is_none_or(|t| {
                    (snapshot.updated_at, snapshot.id.as_str()) > (t, holder.as_str())
                });
                if newer {
                    if let Some(o) = self.organizations.get_mut(&holder) {
                        o.slug = None;
                    }
                    if let Some(pending) = self.organization_upserts.get_mut(&holder) {
                        pending.slug = None;
                    }
                } else {
                    row.slug = None;
                }
            }
        }
        self.organizations.insert(
            row.id.clone(),
            StoredOrganization {
                id: row.id.clone(),
                slug: row.slug.clone(),
                clerk_updated_at: Some(row.updated_at),
            },
        );
        self.organization_upserts.insert(row.id.clone(), row);
        outcome
    }

    fn membership(&mut self, snapshot: &MembershipSnapshot) -> Outcome {
        // The organization first: a membership may arrive before its organization's own event.
        self.organization(&snapshot.organization);
        if self
            .organization_tombstones
            .contains(&snapshot.organization.id)
            || self.state.user_tombstones.contains(&snapshot.user_id)
            || self
                .membership_tombstones
                .get(&snapshot.id)
                .is_some_and(|at| *at >= snapshot.updated_at)
        {
            return Outcome::Tombstoned;
        }
        let existing = self.memberships.get(&snapshot.id);
        if let Some(row) = existing {
            if row
                .clerk_updated_at
                .is_some_and(|t| t > snapshot.updated_at)
            {
                return Outcome::Stale;
            }
            if row.clerk_updated_at == Some(snapshot.updated_at)
                && row.role == snapshot.role
                && row.organization_id == snapshot.organization.id
                && row.user_id == snapshot.user_id
            {
                return Outcome::Unchanged;
            }
        }
        let outcome = if existing.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        let holder = self
            .memberships
            .values()
            .find(|m| {
                m.id != snapshot.id
                    && m.organization_id == snapshot.organization.id
                    && m.user_id == snapshot.user_id
            })
            .map(|m| (m.id.clone(), m.clerk_updated_at));
        if let Some((holder, held_at)) = holder {
            let newer = held_at
                .is_none_or(|t| (snapshot.updated_at, snapshot.id.as_str()) > (t, holder.as_str()));
            if !newer {
                return Outcome::Stale;
            }
            self.memberships.remove(&holder);
            self.membership_upserts.remove(&holder);
            // Its row goes if it was there before this transaction, even when an earlier
            // event of the same transaction updated it.
            if self.state.memberships.iter().any(|m| m.id == holder) {
                self.replaced.push(holder);
            }
        }
        self.memberships.insert(
            snapshot.id.clone(),
            StoredMembership {
                id: snapshot.id.clone(),
                organization_id: snapshot.organization.id.clone(),
                user_id: snapshot.user_id.clone(),
                role: snapshot.role.clone(),
                clerk_updated_at: Some(snapshot.updated_at),
            },
        );
        self.membership_upserts
            .insert(snapshot.id.clone(), snapshot.clone());
        outcome
    }

    fn delete_organization(&mut self, id: &str, writes: &mut OrganizationWrites) -> Outcome {
        if !self.organization_tombstones.insert(id.to_owned()) {
            return Outcome::Tombstoned;
        }
        writes.organization_tombstones.push(id.to_owned());
        self.memberships.retain(|_, m| m.organization_id != id);
        if self.organizations.remove(id).is_none() {
            return Outcome::NotFound;
        }
        writes.deleted_organizations.push(id.to_owned());
        Outcome::Deleted
    }

    fn delete_membership(
        &mut self,
        deletion: &MembershipDeletion,
        writes: &mut OrganizationWrites,
    ) -> Outcome {
        if self
            .membership_tombstones
            .get(&deletion.id)
            .is_some_and(|at| *at >= deletion.at)
        {
            return Outcome::Tombstoned;
        }
        self.membership_tombstones
            .insert(deletion.id.clone(), deletion.at);
        writes.membership_tombstones.push(deletion.clone());
        match self.memberships.get(&deletion.id) {
            None => Outcome::NotFound,
            // Re-added (or updated) after this deletion was sent: the row is newer.
            Some(row) if row.clerk_updated_at.is_some_and(|t| t > deletion.at) => Outcome::Stale,
            Some(_) => {
                self.memberships.remove(&deletion.id);
                writes.deleted_memberships.push(deletion.id.clone());
                Outcome::Deleted
            }
        }
    }
}

#[cfg(test)]
mod tests;
