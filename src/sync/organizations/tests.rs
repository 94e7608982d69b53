use super::*;

fn org(id: &str, slug: Option<&str>, updated_at: ClerkMillis) -> OrganizationSnapshot {
    OrganizationSnapshot {
        id: id.into(),
        name: format!("{id} name"),
        slug: slug.map(Into::into),
        image_url: None,
        created_by: None,
        created_at: Some(1),
        updated_at,
    }
}

fn member(
    id: &str,
    org: OrganizationSnapshot,
    user: &str,
    updated_at: ClerkMillis,
) -> MembershipSnapshot {
    MembershipSnapshot {
        id: id.into(),
        organization: org,
        user_id: user.into(),
        role: "org:member".into(),
        created_at: Some(1),
        updated_at,
    }
}

#[test]
fn a_slug_moves_to_the_newer_organization() {
    let state = OrganizationState {
        organizations: vec![StoredOrganization {
            id: "org_a".into(),
            slug: Some("acme".into()),
            clerk_updated_at: Some(10),
        }],
        ..OrganizationState::default()
    };
    let b = org("org_b", Some("acme"), 20);
    let plan = plan_organizations(&[OrganizationEvent::Organization(&b)], &state);
    assert_eq!(plan.outcomes, [Outcome::Created]);
    assert_eq!(plan.writes.clear_slugs, [("org_a".into(), "acme".into())]);
    assert_eq!(plan.writes.organizations[0].slug.as_deref(), Some("acme"));

    // The older one arriving later goes without it.
    let old = org("org_b", Some("acme"), 5);
    let state = OrganizationState {
        organizations: vec![StoredOrganization {
            id: "org_a".into(),
            slug: Some("acme".into()),
            clerk_updated_at: Some(10),
        }],
        ..OrganizationState::default()
    };
    let plan = plan_organizations(&[OrganizationEvent::Organization(&old)], &state);
    assert_eq!(plan.outcomes, [Outcome::Created]);
    assert!(plan.writes.clear_slugs.is_empty());
    assert_eq!(plan.writes.organizations[0].slug, None);
}

#[test]
fn a_membership_brings_its_organization_and_a_newer_one_replaces_the_pair() {
    let state = OrganizationState {
        memberships: vec![StoredMembership {
            id: "orgmem_old".into(),
            organization_id: "org_a".into(),
            user_id: "user_1".into(),
            role: "org:member".into(),
            clerk_updated_at: Some(5),
        }],
        ..OrganizationState::default()
    };
    let m = member("orgmem_new", org("org_a", Some("a"), 3), "user_1", 7);
    let plan = plan_organizations(&[OrganizationEvent::Membership(&m)], &state);
    assert_eq!(plan.outcomes, [Outcome::Created]);
    assert_eq!(plan.writes.organizations.len(), 1);
    assert_eq!(plan.writes.replaced_memberships, ["orgmem_old"]);
    assert_eq!(plan.writes.memberships, std::slice::from_ref(&m));

    let older = member("orgmem_older", org("org_a", Some("a"), 3), "user_1", 4);
    let plan = plan_organizations(&[OrganizationEvent::Membership(&older)], &state);
    assert_eq!(plan.outcomes, [Outcome::Stale]);
    assert!(plan.writes.memberships.is_empty());
}

#[test]
fn a_membership_deletion_is_ordered_by_the_time_it_was_sent() {
    let deletion = MembershipDeletion {
        id: "orgmem_1".into(),
        organization_id: "org_a".into(),
        user_id: "user_1".into(),
        at: 100,
    };
    let state = OrganizationState {
        membership_tombstones: [("orgmem_1".to_owned(), 100)].into(),
        ..OrganizationState::default()
    };
    let same = member("orgmem_1", org("org_a", None, 3), "user_1", 90);
    let plan = plan_organizations(&[OrganizationEvent::Membership(&same)], &state);
    assert_eq!(plan.outcomes, [Outcome::Tombstoned]);
    let readded = member("orgmem_1", org("org_a", None, 3), "user_1", 101);
    let plan = plan_organizations(&[OrganizationEvent::Membership(&readded)], &state);
    assert_eq!(plan.outcomes, [Outcome::Created]);

    // Deletion and snapshot in one batch: snapshots first, then the deletion.
    let plan = plan_organizations(
        &[
            OrganizationEvent::MembershipDeletion(&deletion),
            OrganizationEvent::Membership(&same),
        ],
        &OrganizationState::default(),
    );
    assert_eq!(plan.outcomes, [Outcome::Deleted, Outcome::Created]);
    assert_eq!(plan.writes.deleted_memberships, ["orgmem_1"]);
}

#[test]
fn deleted_organizations_and_users_keep_their_memberships_out() {
    let state = OrganizationState {
        organization_tombstones: ["org_gone".to_owned()].into(),
        user_tombstones: ["user_gone".to_owned()].into(),
        ..OrganizationState::default()
    };
    let in_gone_org = member("orgmem_1", org("org_gone", None, 3), "user_1", 5);
    let of_gone_user = member("orgmem_2", org("org_a", None, 3), "user_gone", 5);
    let plan = plan_organizations(
        &[
            OrganizationEvent::Membership(&in_gone_org),
            OrganizationEvent::Membership(&of_gone_user),
            OrganizationEvent::OrganizationDeletion("org_gone"),
        ],
        &state,
    );
    assert_eq!(
        plan.outcomes,
        [
            Outcome::Tombstoned,
            Outcome::Tombstoned,
            Outcome::Tombstoned
        ]
    );
    // The organization of the deleted user's membership still lands: it exists in Clerk.
    assert_eq!(plan.writes.organizations.len(), 1);
    assert!(plan.writes.memberships.is_empty());
}

/// A batch plans what its events would do one after the other (snapshots first, then
/// deletions), so group commit and backfill pages obey the rules of single deliveries.
mod batch_equals_one_by_one {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Tables {
        /// id → (name, slug, updated_at)
        organizations: BTreeMap<String, (String, Option<String>, i64)>,
        /// id → (organization, user, role, updated_at)
        memberships: BTreeMap<String, (String, String, String, i64)>,
        organization_tombstones: BTreeSet<String>,
        membership_tombstones: BTreeMap<String, i64>,
    }

    #[derive(Debug, Clone)]
    enum Event {
        Organization(OrganizationSnapshot),
        OrganizationDeletion(String),
        Membership(MembershipSnapshot),
        MembershipDeletion(MembershipDeletion),
    }

    impl Event {
        fn planned(&self) -> OrganizationEvent<'_> {
            match self {
                Event::Organization(o) => OrganizationEvent::Organization(o),
                Event::OrganizationDeletion(id) => OrganizationEvent::OrganizationDeletion(id),
                Event::Membership(m) => OrganizationEvent::Membership(m),
                Event::MembershipDeletion(d) => OrganizationEvent::MembershipDeletion(d),
            }
        }

        fn is_deletion(&self) -> bool {
            matches!(
                self,
                Event::OrganizationDeletion(_) | Event::MembershipDeletion(_)
            )
        }
    }

    const USER_TOMBSTONE: &str = "user_gone";

    fn organization() -> impl Strategy<Value = OrganizationSnapshot> {
        (0..3u8, proptest::option::of(0..3u8), 0..8i64, 0..3u8).prop_map(
            |(id, slug, updated_at, name)| OrganizationSnapshot {
                id: format!("org_{id}"),
                name: format!("name {name}"),
                slug: slug.map(|s| format!("slug-{s}")),
                image_url: None,
                created_by: None,
                created_at: Some(0),
                updated_at,
            },
        )
    }

    fn event() -> impl Strategy<Value = Event> {
        let users = prop_oneof![Just("user_a"), Just("user_b"), Just(USER_TOMBSTONE)];
        prop_oneof![
            3 => organization().prop_map(Event::Organization),
            1 => (0..3u8).prop_map(|id| Event::OrganizationDeletion(format!("org_{id}"))),
            4 => (0..4u8, organization(), users.clone(), 0..2u8, 0..8i64).prop_map(
                |(id, organization, user, role, updated_at)| {
                    Event::Membership(MembershipSnapshot {
                        id: format!("orgmem_{id}"),
                        organization,
                        user_id: user.into(),
                        role: format!("org:role{role}"),
                        created_at: Some(0),
                        updated_at,
                    })
                }
            ),
            2 => (0..4u8, 0..3u8, users, 0..8i64).prop_map(|(id, org, user, at)| {
                Event::MembershipDeletion(MembershipDeletion {
                    id: format!("orgmem_{id}"),
                    organization_id: format!("org_{org}"),
                    user_id: user.into(),
                    at,
                })
            }),
        ]
    }

    fn state(tables: &Tables) -> OrganizationState {
        OrganizationState {
            organizations: tables
                .organizations
                .iter()
                .map(|(id, (_, slug, at))| StoredOrganization {
                    id: id.clone(),
                    slug: slug.clone(),
                    clerk_updated_at: Some(*at),
                })
                .collect(),
            memberships: tables
                .memberships
                .iter()
                .map(|(id, (org, user, role, at))| StoredMembership {
                    id: id.clone(),
                    organization_id: org.clone(),
                    user_id: user.clone(),
                    role: role.clone(),
                    clerk_updated_at: Some(*at),
                })
                .collect(),
            organization_tombstones: tables.organization_tombstones.iter().cloned().collect(),
            membership_tombstones: tables
                .membership_tombstones
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            user_tombstones: [USER_TOMBSTONE.to_owned()].into(),
        }
    }

    /// The writes as the SQL does them (hard delete mode), including its own newest-wins
    /// guard and the foreign key's cascade.
    fn apply(tables: &mut Tables, writes: &OrganizationWrites) {
        for (id, slug) in &writes.clear_slugs {
            if let Some(row) = tables.organizations.get_mut(id)
                && row.1.as_ref() == Some(slug)
            {
                row.1 = None;
            }
        }
        for o in &writes.organizations {
            if tables
                .organizations
                .get(&o.id)
                .is_none_or(|row| row.2 <= o.updated_at)
            {
                tables
                    .organizations
                    .insert(o.id.clone(), (o.name.clone(), o.slug.clone(), o.updated_at));
            }
        }
        for id in &writes.replaced_memberships {
            tables.memberships.remove(id);
        }
        for m in &writes.memberships {
            assert!(
                tables.organizations.contains_key(&m.organization.id),
                "foreign key: {m:?} without its organization"
            );
            if tables
                .memberships
                .get(&m.id)
                .is_none_or(|row| row.3 <= m.updated_at)
            {
                tables.memberships.insert(
                    m.id.clone(),
                    (
                        m.organization.id.clone(),
                        m.user_id.clone(),
                        m.role.clone(),
                        m.updated_at,
                    ),
                );
            }
        }
        for id in &writes.deleted_organizations {
            tables.organizations.remove(id);
            tables.memberships.retain(|_, m| &m.0 != id);
        }
        tables
            .organization_tombstones
            .extend(writes.organization_tombstones.iter().cloned());
        for id in &writes.deleted_memberships {
            tables.memberships.remove(id);
        }
        for t in &writes.membership_tombstones {
            let at = tables
                .membership_tombstones
                .entry(t.id.clone())
                .or_insert(t.at);
            *at = (*at).max(t.at);
        }
        // What the unique indexes would refuse.
        let slugs: Vec<_> = tables
            .organizations
            .values()
            .filter_map(|o| o.1.clone())
            .collect();
        let distinct: BTreeSet<_> = slugs.iter().collect();
        assert_eq!(slugs.len(), distinct.len(), "a slug held twice: {tables:?}");
        let pairs: Vec<_> = tables.memberships.values().map(|m| (&m.0, &m.1)).collect();
        let distinct: BTreeSet<_> = pairs.iter().collect();
        assert_eq!(pairs.len(), distinct.len(), "a pair held twice: {tables:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_batch_ends_where_its_events_one_by_one_end(
            before in proptest::collection::vec(event(), 0..6),
            batch in proptest::collection::vec(event(), 1..8),
        ) {
            // A starting table reached one event at a time.
            let mut start = Tables::default();
            for event in &before {
                let plan = plan_organizations(&[event.planned()], &state(&start));
                apply(&mut start, &plan.writes);
            }

            let planned: Vec<_> = batch.iter().map(Event::planned).collect();
            let plan = plan_organizations(&planned, &state(&start));
            let mut together = start.clone();
            apply(&mut together, &plan.writes);

            // The same events alone, in the order the batch is planned in.
            let order: Vec<usize> = (0..batch.len())
                .filter(|i| !batch[*i].is_deletion())
                .chain((0..batch.len()).filter(|i| batch[*i].is_deletion()))
                .collect();
            let mut alone = start.clone();
            let mut outcomes = vec![Outcome::Ignored; batch.len()];
            for i in order {
                let single = plan_organizations(&[batch[i].planned()], &state(&alone));
                apply(&mut alone, &single.writes);
                outcomes[i] = single.outcomes[0];
            }
            prop_assert_eq!(&together, &alone);
            prop_assert_eq!(plan.outcomes, outcomes);
        }
    }
}
