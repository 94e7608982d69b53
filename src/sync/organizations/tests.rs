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
    assert_eq!(plan.writes.memberships, [m.clone()]);

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
