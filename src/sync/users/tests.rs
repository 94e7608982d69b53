use super::*;

fn snapshot(id: &str, updated_at: i64, email: Option<&str>) -> UserSnapshot {
    UserSnapshot {
        id: id.into(),
        email: email.map(Into::into),
        first_name: None,
        last_name: None,
        name: None,
        image_url: None,
        username: None,
        created_at: Some(1),
        updated_at,
    }
}

fn stored(id: &str, updated_at: i64, email: Option<&str>) -> StoredUser {
    StoredUser {
        id: id.into(),
        email: email.map(Into::into),
        username: None,
        clerk_updated_at: Some(updated_at),
        deleted: false,
    }
}

#[test]
fn full_name_skips_missing_and_blank_parts() {
    assert_eq!(
        full_name(Some("Ada"), Some("Lovelace")).as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(full_name(None, Some("Лавлейс")).as_deref(), Some("Лавлейс"));
    assert_eq!(full_name(Some(""), Some("  ")), None);
    assert_eq!(full_name(None, None), None);
}

#[test]
fn older_snapshot_is_stale() {
    let state = SyncState {
        users: vec![stored("u1", 20, None)],
        tombstoned: false,
    };
    assert_eq!(
        plan_snapshot(&snapshot("u1", 10, None), &state).outcome,
        Outcome::Stale
    );
    assert_eq!(
        plan_snapshot(&snapshot("u1", 21, None), &state).outcome,
        Outcome::Updated
    );
}

#[test]
fn newer_snapshot_takes_an_email_from_an_older_row() {
    let state = SyncState {
        users: vec![stored("b", 10, Some("x@example.com"))],
        tombstoned: false,
    };
    let plan = plan_snapshot(&snapshot("a", 20, Some("x@example.com")), &state);
    assert_eq!(
        plan.changes[0],
        Change::ReleaseEmail {
            from_user: "b".into(),
            email: "x@example.com".into()
        }
    );
    assert_eq!(plan.outcome, Outcome::Created);
}

#[test]
fn older_snapshot_leaves_an_email_with_a_newer_row() {
    let state = SyncState {
        users: vec![stored("b", 30, Some("x@example.com"))],
        tombstoned: false,
    };
    let plan = plan_snapshot(&snapshot("a", 20, Some("x@example.com")), &state);
    assert_eq!(plan.changes.len(), 1);
    let Change::Upsert(row) = &plan.changes[0] else {
        panic!("expected an upsert, got {plan:?}")
    };
    assert_eq!(row.email, None);
}

#[test]
fn the_same_version_again_is_unchanged_unless_it_lost_a_value_meanwhile() {
    let state = SyncState {
        users: vec![stored("u1", 20, Some("x@example.com"))],
        tombstoned: false,
    };
    let same = snapshot("u1", 20, Some("x@example.com"));
    assert_eq!(plan_snapshot(&same, &state).outcome, Outcome::Unchanged);
    let released = SyncState {
        users: vec![stored("u1", 20, None)],
        tombstoned: false,
    };
    assert_eq!(plan_snapshot(&same, &released).outcome, Outcome::Updated);
}

#[test]
fn a_batch_plans_each_snapshot_against_what_the_previous_ones_left() {
    // b holds x; a (newer) takes it; then c (newer still) takes it from a, in one batch.
    let users = vec![stored("b", 10, Some("x@example.com"))];
    let batch = [
        snapshot("a", 20, Some("x@example.com")),
        snapshot("c", 30, Some("x@example.com")),
        snapshot("a", 15, Some("x@example.com")),
    ];
    let plan = plan_snapshots(&batch, users, &Default::default());
    assert_eq!(
        plan.outcomes,
        vec![Outcome::Created, Outcome::Created, Outcome::Stale]
    );
    assert_eq!(
        plan.writes.clear_email,
        vec![("b".to_string(), "x@example.com".to_string())]
    );
    let emails: Vec<(&str, Option<&str>)> = plan
        .writes
        .upserts
        .iter()
        .map(|u| (u.id.as_str(), u.email.as_deref()))
        .collect();
    assert_eq!(emails, vec![("a", None), ("c", Some("x@example.com"))]);
}

#[test]
fn a_batch_plans_its_deletions_after_its_snapshots() {
    // d holds x and is deleted; n (older than d) asks for x in the same batch; a user
    // created and deleted within the batch; a second deletion of d.
    let users = vec![stored("d", 50, Some("x@example.com"))];
    let n = snapshot("n", 10, Some("x@example.com"));
    let t = snapshot("t", 10, None);
    let events = [
        Planned::Deletion("d"),
        Planned::Snapshot(&n),
        Planned::Snapshot(&t),
        Planned::Deletion("t"),
        Planned::Deletion("d"),
    ];
    let plan = plan_batch(&events, users, &Default::default(), DeleteMode::Hard);
    assert_eq!(
        plan.outcomes,
        vec![
            Outcome::Deleted,
            Outcome::Created,
            Outcome::Created,
            Outcome::Deleted,
            Outcome::Tombstoned
        ]
    );
    // The snapshots ran first, so n (older than d) went without x, as it would have if it
    // had arrived before the deletion.
    let emails: Vec<(&str, Option<&str>)> = plan
        .writes
        .upserts
        .iter()
        .map(|u| (u.id.as_str(), u.email.as_deref()))
        .collect();
    assert_eq!(emails, vec![("n", None), ("t", None)]);
    assert!(plan.writes.clear_email.is_empty());
    let ids = |u: &str| u.to_string();
    assert_eq!(
        plan.deletions,
        vec![
            Change::DeleteRow { user_id: ids("d") },
            Change::Tombstone { user_id: ids("d") },
            Change::DeleteRow { user_id: ids("t") },
            Change::Tombstone { user_id: ids("t") },
        ]
    );
}

#[test]
fn tombstone_blocks_snapshots_and_repeated_deletes() {
    let state = SyncState {
        users: vec![],
        tombstoned: true,
    };
    assert_eq!(
        plan_snapshot(&snapshot("u", 99, None), &state).outcome,
        Outcome::Tombstoned
    );
    assert_eq!(
        plan_deletion("u", &state, DeleteMode::Hard).outcome,
        Outcome::Tombstoned
    );
}

#[test]
fn deleting_an_unknown_user_still_leaves_a_tombstone() {
    let plan = plan_deletion("u", &SyncState::default(), DeleteMode::Hard);
    assert_eq!(plan.outcome, Outcome::NotFound);
    assert_eq!(
        plan.changes,
        vec![Change::Tombstone {
            user_id: "u".into()
        }]
    );
}

/// Batches against one by one: an in-memory table, the rules' changes applied to it.
mod batch_equals_one_by_one {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use proptest::prelude::*;

    use super::super::*;

    type Table = BTreeMap<String, StoredUser>;

    #[derive(Debug, Clone)]
    enum Event {
        Snapshot(UserSnapshot),
        Deletion(String),
    }

    fn pick(options: &[&'static str]) -> impl Strategy<Value = Option<String>> + use<> {
        prop::sample::select(options.to_vec()).prop_map(|v| (!v.is_empty()).then(|| v.into()))
    }

    fn id() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["u1", "u2", "u3", "u4"]).prop_map(String::from)
    }

    fn snapshot() -> impl Strategy<Value = UserSnapshot> {
        (
            id(),
            pick(&["", "a@x", "b@x", "c@x"]),
            pick(&["", "a", "b"]),
            1i64..12,
        )
            .prop_map(|(id, email, username, updated_at)| UserSnapshot {
                id,
                email,
                first_name: None,
                last_name: None,
                name: None,
                image_url: None,
                username,
                created_at: Some(0),
                updated_at,
            })
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => snapshot().prop_map(Event::Snapshot),
            1 => id().prop_map(Event::Deletion),
        ]
    }

    /// Rows as earlier events could have left them: each email and username held once.
    fn table() -> impl Strategy<Value = (Table, BTreeSet<String>)> {
        (
            prop::collection::vec(snapshot(), 0..4),
            prop::collection::btree_set(id(), 0..2),
        )
            .prop_map(|(rows, tombstones)| {
                let mut table = Table::new();
                for s in rows {
                    if tombstones.contains(&s.id) {
                        continue;
                    }
                    let taken = |f: fn(&StoredUser) -> &Option<String>, v: &Option<String>| {
                        v.is_some() && table.values().any(|u| u.id != s.id && f(u) == v)
                    };
                    let email = if taken(|u| &u.email, &s.email) {
                        None
                    } else {
                        s.email.clone()
                    };
                    let username = if taken(|u| &u.username, &s.username) {
                        None
                    } else {
                        s.username.clone()
                    };
                    table.insert(
                        s.id.clone(),
                        StoredUser {
                            id: s.id.clone(),
                            email,
                            username,
                            clerk_updated_at: Some(s.updated_at),
                            deleted: false,
                        },
                    );
                }
                (table, tombstones)
            })
    }

    fn apply(table: &mut Table, tombstones: &mut BTreeSet<String>, change: &Change) {
        match change {
            Change::ReleaseEmail { from_user, email } => {
                if let Some(row) = table.get_mut(from_user)
                    && row.email.as_ref() == Some(email)
                {
                    row.email = None;
                }
            }
            Change::ReleaseUsername {
                from_user,
                username,
            } => {
                if let Some(row) = table.get_mut(from_user)
                    && row.username.as_ref() == Some(username)
                {
                    row.username = None;
                }
            }
            Change::Upsert(s) => {
                table.insert(
                    s.id.clone(),
                    StoredUser {
                        id: s.id.clone(),
                        email: s.email.clone(),
                        username: s.username.clone(),
                        clerk_updated_at: Some(s.updated_at),
                        deleted: false,
                    },
                );
            }
            Change::DeleteRow { user_id } => {
                table.remove(user_id);
            }
            Change::SoftDeleteRow { user_id } | Change::EraseRow { user_id } => {
                if let Some(row) = table.get_mut(user_id) {
                    row.deleted = true;
                    row.email = None;
                    row.username = None;
                }
            }
            Change::Tombstone { user_id } => {
                tombstones.insert(user_id.clone());
            }
        }
    }

    /// Each event alone, seeing what the ones before it left, in the order a batch
    /// promises: snapshots first, then deletions.
    fn one_by_one(
        events: &[Event],
        mut table: Table,
        mut tombstones: BTreeSet<String>,
        mode: DeleteMode,
    ) -> (Vec<Outcome>, Table, BTreeSet<String>) {
        let mut outcomes = vec![Outcome::Ignored; events.len()];
        let snapshots_first = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::Snapshot(_)))
            .chain(
                events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| matches!(e, Event::Deletion(_))),
            );
        for (i, event) in snapshots_first {
            let id = match event {
                Event::Snapshot(s) => &s.id,
                Event::Deletion(id) => id,
            };
            let state = SyncState {
                users: table.values().cloned().collect(),
                tombstoned: tombstones.contains(id),
            };
            let plan = match event {
                Event::Snapshot(s) => plan_snapshot(s, &state),
                Event::Deletion(id) => plan_deletion(id, &state, mode),
            };
            for change in &plan.changes {
                apply(&mut table, &mut tombstones, change);
            }
            outcomes[i] = plan.outcome;
        }
        (outcomes, table, tombstones)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_batch_ends_where_its_events_one_by_one_end(
            (table, tombstones) in table(),
            events in prop::collection::vec(event(), 1..8),
            soft in any::<bool>(),
        ) {
            let mode = if soft { DeleteMode::Soft } else { DeleteMode::Hard };
            let (outcomes, expected, expected_tombstones) =
                one_by_one(&events, table.clone(), tombstones.clone(), mode);

            let planned: Vec<Planned<'_>> = events
                .iter()
                .map(|e| match e {
                    Event::Snapshot(s) => Planned::Snapshot(s),
                    Event::Deletion(id) => Planned::Deletion(id),
                })
                .collect();
            let known: HashSet<String> = tombstones.iter().cloned().collect();
            let plan = plan_batch(&planned, table.values().cloned().collect(), &known, mode);
            let (mut rows, mut gone) = (table, tombstones);
            for (id, email) in &plan.writes.clear_email {
                apply(&mut rows, &mut gone, &Change::ReleaseEmail {
                    from_user: id.clone(),
                    email: email.clone(),
                });
            }
            for (id, username) in &plan.writes.clear_username {
                apply(&mut rows, &mut gone, &Change::ReleaseUsername {
                    from_user: id.clone(),
                    username: username.clone(),
                });
            }
            for upsert in &plan.writes.upserts {
                apply(&mut rows, &mut gone, &Change::Upsert(upsert.clone()));
            }
            for change in &plan.deletions {
                apply(&mut rows, &mut gone, change);
            }
            prop_assert_eq!(plan.outcomes, outcomes);
            prop_assert_eq!(rows, expected);
            prop_assert_eq!(gone, expected_tombstones);
        }
    }
}
