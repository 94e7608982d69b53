//! Clerk's organizations and memberships while the stream is built: what an organization slot
//! of the stream asks for, Clerk's rules (a slug unique at every instant, memberships going
//! with their organization or user) and the events that follow from them.

use std::collections::HashMap;

use rand::RngExt;
use rand::rngs::StdRng;

use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization};

use crate::model::{Key, Kind, Made};
use crate::random::{Bag, pick, seeded_id};
use crate::users::UserWorld;

/// The organization part of a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrgOptions {
    pub(crate) organizations: usize,
    pub(crate) events: usize,
    /// Weights of organization.updated, membership created, updated, deleted,
    /// organization.deleted.
    pub(crate) mix: [f64; 5],
}

/// What the organization part of a stream holds, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OrgCounts {
    pub(crate) created: usize,
    pub(crate) updated: usize,
    /// organization.updated events of a holder giving up its slug to another organization.
    pub(crate) slug_moves: usize,
    pub(crate) deleted: usize,
    pub(crate) members_created: usize,
    /// Joins of a user back into an organization they had left (a new membership id).
    pub(crate) readded: usize,
    pub(crate) role_changes: usize,
    pub(crate) removals: usize,
    /// Memberships that went with their organization or user, and how many of those got an
    /// organizationMembership.deleted of their own.
    pub(crate) removed_with_owner: usize,
    pub(crate) removal_events_for_owner: usize,
}

/// What an organization slot of the stream asks for (fallbacks when it cannot be done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrgStep {
    Create,
    Update,
    Join,
    Role,
    Remove,
    Delete,
}

/// The organization slots of a stream, not yet placed among the users' events: one Create per
/// organization, then `events` minus those drawn from the mix.
pub(crate) fn slots(rng: &mut StdRng, orgs: &OrgOptions) -> Vec<OrgStep> {
    let creates = orgs.organizations.min(orgs.events);
    let mut slots = vec![OrgStep::Create; creates];
    let steps = [
        OrgStep::Update,
        OrgStep::Join,
        OrgStep::Role,
        OrgStep::Remove,
        OrgStep::Delete,
    ];
    let sum: f64 = orgs.mix.iter().sum();
    for _ in creates..orgs.events {
        let mut x = rng.random_range(0.0..sum);
        let mut step = OrgStep::Join;
        for (weight, s) in orgs.mix.iter().zip(steps) {
            if x < *weight {
                step = s;
                break;
            }
            x -= weight;
        }
        slots.push(step);
    }
    slots
}

const ORG_NAMES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Müller & Söhne",
    "Łódź Labs",
    "Ørsted Studio",
    "株式会社さくら",
    "Ωmega",
    "Café Olé",
    "O'Reilly Partners",
];
const ORG_SUFFIXES: &[&str] = &["", " Inc.", " GmbH", " Ltd", " Team", " (EU)"];

fn role(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..10) {
        0..2 => "org:admin",
        2..9 => "org:member",
        _ => "org:billing_manager",
    }
}

/// Clerk's organizations and memberships while the stream is built.
#[derive(Default)]
pub(crate) struct OrgWorld {
    pub(crate) organizations: Vec<SampleOrganization>,
    pub(crate) organization_deleted: Vec<bool>,
    pub(crate) memberships: Vec<SampleMembership>,
    pub(crate) membership_live: Vec<bool>,
    /// (organization, user) of each membership.
    membership_pair: Vec<(usize, usize)>,
    live_orgs: Bag<usize>,
    live_members: Bag<usize>,
    by_pair: HashMap<(usize, usize), usize>,
    /// Pairs whose membership was removed while both stayed: candidates for a re-add.
    removed_pairs: Vec<(usize, usize)>,
    fresh_slugs: usize,
    pub(crate) counts: OrgCounts,
}

impl OrgWorld {
    fn fresh_slug(&mut self, base: &str) -> String {
        self.fresh_slugs += 1;
        let base = base.split("--").next().unwrap_or(base);
        format!("{base}--{}", self.fresh_slugs)
    }

    /// The membership as Clerk sends it now: with its organization as it is now.
    fn current_membership(&self, m: usize) -> SampleMembership {
        let mut membership = self.memberships[m].clone();
        let (org, _) = self.membership_pair[m];
        membership.organization = self.organizations[org].clone();
        membership
    }

    /// Ends membership `m` at `ts`, with an organizationMembership.deleted when `send`.
    fn end_membership(&mut self, m: usize, ts: i64, send: bool, made: &mut Vec<Made>) {
        let (org, user) = self.membership_pair[m];
        let membership = self.current_membership(m);
        self.membership_live[m] = false;
        self.live_members.remove(m);
        self.by_pair.remove(&(org, user));
        if send {
            made.push((
                Key::Org(org),
                Kind::MemberDeleted,
                sample::membership_deleted(&membership, ts),
            ));
        }
    }

    /// One organization slot: `step` if it can be done now, else the first of the fallbacks
    /// that can; nothing if none can. At most `limit` organizations are ever created.
    pub(crate) fn step(
        &mut self,
        rng: &mut StdRng,
        users: &UserWorld,
        step: OrgStep,
        ts: i64,
        limit: usize,
    ) -> Vec<Made> {
        let mut made = Vec::new();
        for step in [step, OrgStep::Join, OrgStep::Create, OrgStep::Update] {
            if self.try_step(rng, users, step, ts, limit, &mut made) {
                break;
            }
        }
        made
    }

    fn try_step(
        &mut self,
        rng: &mut StdRng,
        users: &UserWorld,
        step: OrgStep,
        mut ts: i64,
        limit: usize,
        made: &mut Vec<Made>,
    ) -> bool {
        match step {
            OrgStep::Create => {
                if self.organizations.len() >= limit {
                    return false;
                }
                let index = self.organizations.len();
                let id = seeded_id(rng, "org");
                let mut o = SampleOrganization::new(id, ts);
                o.name = format!("{}{}", pick(rng, ORG_NAMES), pick(rng, ORG_SUFFIXES));
                if let Some(creator) = users.live().pick(rng) {
                    o.created_by = users.id(creator).to_owned();
                }
                made.push((
                    Key::Org(index),
                    Kind::OrgCreated,
                    sample::organization_created(&o),
                ));
                self.organizations.push(o);
                self.organization_deleted.push(false);
                self.live_orgs.insert(index);
                self.counts.created += 1;
                true
            }
            OrgStep::Update => {
                let Some(org) = self.live_orgs.pick(rng) else {
                    return false;
                };
                let choice = rng.random_range(0..100);
                let mut slug = self.organizations[org].slug.clone();
                let mut name = self.organizations[org].name.clone();
                if choice < 30 {
                    // Take another organization's slug: the holder changes slug first.
                    if let Some(holder) = self.live_orgs.pick(rng)
                        && holder != org
                    {
                        let taken = self.organizations[holder].slug.clone();
                        let moved_to = self.fresh_slug(&taken);
                        let h = &mut self.organizations[holder];
                        h.slug = moved_to;
                        h.updated_at = ts;
                        made.push((
                            Key::Org(holder),
                            Kind::OrgUpdated,
                            sample::organization_updated(h),
                        ));
                        self.counts.updated += 1;
                        self.counts.slug_moves += 1;
                        ts += 1;
                        slug = taken;
                    }
                } else if choice < 65 {
                    slug = self.fresh_slug(&slug);
                }
                if choice >= 30 {
                    name = format!("{}{}", pick(rng, ORG_NAMES), pick(rng, ORG_SUFFIXES));
                }
                let o = &mut self.organizations[org];
                o.slug = slug;
                o.name = name;
                o.updated_at = ts;
                made.push((
                    Key::Org(org),
                    Kind::OrgUpdated,
                    sample::organization_updated(o),
                ));
                self.counts.updated += 1;
                true
            }
            OrgStep::Join => {
                // A third of joins bring back a user who left (a new membership id).
                let mut pair = None;
                let mut readd = false;
                if !self.removed_pairs.is_empty() && rng.random_bool(1.0 / 3.0) {
                    let i = rng.random_range(0..self.removed_pairs.len());
                    let candidate = self.removed_pairs.swap_remove(i);
                    if !self.organization_deleted[candidate.0]
                        && users.live().contains(candidate.1)
                        && !self.by_pair.contains_key(&candidate)
                    {
                        pair = Some(candidate);
                        readd = true;
                    }
                }
                for _ in 0..8 {
                    if pair.is_some() {
                        break;
                    }
                    let (Some(org), Some(user)) =
                        (self.live_orgs.pick(rng), users.live().pick(rng))
                    else {
                        return false;
                    };
                    if !self.by_pair.contains_key(&(org, user)) {
                        pair = Some((org, user));
                    }
                }
                let Some((org, user)) = pair else {
                    return false;
                };
                let index = self.memberships.len();
                let id = seeded_id(rng, "orgmem");
                let role = role(rng);
                let m = SampleMembership::new(
                    id,
                    self.organizations[org].clone(),
                    users.id(user).to_owned(),
                    ts,
                )
                .with_role(role);
                made.push((
                    Key::Org(org),
                    Kind::MemberCreated,
                    sample::membership_created(&m),
                ));
                self.memberships.push(m);
                self.membership_live.push(true);
                self.membership_pair.push((org, user));
                self.live_members.insert(index);
                self.by_pair.insert((org, user), index);
                self.counts.members_created += 1;
                self.counts.readded += usize::from(readd);
                true
            }
            OrgStep::Role => {
                let Some(m) = self.live_members.pick(rng) else {
                    return false;
                };
                let mut membership = self.current_membership(m);
                let old = membership.role.clone();
                while membership.role == old {
                    membership.role = role(rng).to_owned();
                }
                membership.updated_at = ts;
                let (org, _) = self.membership_pair[m];
                made.push((
                    Key::Org(org),
                    Kind::MemberUpdated,
                    sample::membership_updated(&membership),
                ));
                self.memberships[m] = membership;
                self.counts.role_changes += 1;
                true
            }
            OrgStep::Remove => {
                let Some(m) = self.live_members.pick(rng) else {
                    return false;
                };
                let pair = self.membership_pair[m];
                self.end_membership(m, ts, true, made);
                self.removed_pairs.push(pair);
                self.counts.removals += 1;
                true
            }
            OrgStep::Delete => {
                // Keep one organization for the joins.
                if self.live_orgs.len() < 2 {
                    return false;
                }
                let Some(org) = self.live_orgs.pick(rng) else {
                    return false;
                };
                let members = self.live_members_where(|(o, _)| o == org);
                let send = rng.random_bool(0.5);
                for m in members {
                    self.end_membership(m, ts, send, made);
                    self.counts.removed_with_owner += 1;
                    self.counts.removal_events_for_owner += usize::from(send);
                    ts += i64::from(send);
                }
                self.organization_deleted[org] = true;
                self.live_orgs.remove(org);
                let o = &self.organizations[org];
                made.push((
                    Key::Org(org),
                    Kind::OrgDeleted,
                    sample::organization_deleted(&o.id, &o.slug, ts),
                ));
                self.counts.deleted += 1;
                true
            }
        }
    }

    /// Live memberships whose (organization, user) passes `keep`, in the bag's order (which
    /// the seed decides, so the events they make come in a seeded order too).
    fn live_members_where(&self, keep: impl Fn((usize, usize)) -> bool) -> Vec<usize> {
        self.live_members
            .items()
            .iter()
            .copied()
            .filter(|m| keep(self.membership_pair[*m]))
            .collect()
    }

    /// A user deleted at `ts`: Clerk removes their memberships (sending, half the time, an
    /// organizationMembership.deleted for each, after the user.deleted).
    pub(crate) fn user_deleted(&mut self, rng: &mut StdRng, user: usize, mut ts: i64) -> Vec<Made> {
        let mut made = Vec::new();
        let members = self.live_members_where(|(_, u)| u == user);
        if members.is_empty() {
            return made;
        }
        let send = rng.random_bool(0.5);
        for m in members {
            ts += i64::from(send);
            self.end_membership(m, ts, send, &mut made);
            self.counts.removed_with_owner += 1;
            self.counts.removal_events_for_owner += usize::from(send);
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn slots_follow_the_mix() {
        let mut rng = StdRng::seed_from_u64(3);
        let options = OrgOptions {
            organizations: 4,
            events: 40,
            // Only removals and role changes after the creates.
            mix: [0.0, 0.0, 1.0, 1.0, 0.0],
        };
        let slots = slots(&mut rng, &options);
        assert_eq!(slots.len(), 40);
        assert!(slots[..4].iter().all(|s| *s == OrgStep::Create));
        assert!(
            slots[4..]
                .iter()
                .all(|s| matches!(s, OrgStep::Role | OrgStep::Remove))
        );
        assert!(slots.contains(&OrgStep::Role) && slots.contains(&OrgStep::Remove));
    }

    #[test]
    fn fresh_slugs_keep_the_base_and_never_repeat() {
        let mut world = OrgWorld::default();
        let first = world.fresh_slug("acme");
        let second = world.fresh_slug(&first);
        assert_eq!(first, "acme--1");
        assert_eq!(second, "acme--2");
    }
}
