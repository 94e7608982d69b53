//! Fuzzes `clerk_sync::clerk::parse_event` on arbitrary (verified) webhook bodies, then runs the
//! sync rules on whatever user it yields.
//!
//! Never panics; a `UserSnapshot` keeps the invariants `UserSnapshot::from_clerk` promises
//! (non-empty id, `updated_at` and `created_at` within Unix ms 0..=end of year 9999, no empty
//! email or username, `name` joined from first and last); the rules in `src/sync.rs` give the
//! outcome their doc comments state for a few states built around the snapshot.
#![no_main]

use std::collections::HashSet;

use clerk_sync::clerk::{EventKind, parse_event};
use clerk_sync::sync::{
    Change, DeleteMode, Outcome, Planned, StoredUser, SyncState, UserSnapshot, full_name,
    plan_batch, plan_deletion, plan_snapshot, plan_snapshots,
};
use libfuzzer_sys::fuzz_target;

/// The end of year 9999 in Unix milliseconds (`MAX_CLERK_MILLIS` in src/sync.rs).
const MAX_CLERK_MILLIS: i64 = 253_402_300_799_999;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = parse_event(data) else {
        return;
    };
    // The user id is the one the kind carries.
    let _ = event.user_id();
    match &event.kind {
        EventKind::UserSnapshot(snapshot) => {
            assert!(
                event.event_type == "user.created" || event.event_type == "user.updated",
                "snapshot from {:?}",
                event.event_type
            );
            check_snapshot(snapshot);
            check_rules(snapshot);
        }
        EventKind::UserDeleted { user_id } => {
            assert_eq!(event.event_type, "user.deleted");
            assert!(!user_id.is_empty(), "user.deleted with an empty id");
            let plan = plan_deletion(user_id, &SyncState::default(), DeleteMode::Hard);
            assert_eq!(plan.outcome, Outcome::NotFound);
            assert_eq!(
                plan.changes,
                vec![Change::Tombstone {
                    user_id: user_id.clone()
                }]
            );
        }
        EventKind::OrganizationSnapshot(o) => {
            assert!(event.event_type.starts_with("organization."));
            assert!(!o.id.is_empty() && valid_millis(o.updated_at));
            assert!(o.slug.as_deref() != Some(""));
        }
        EventKind::OrganizationDeleted { organization_id } => {
            assert_eq!(event.event_type, "organization.deleted");
            assert!(!organization_id.is_empty());
        }
        EventKind::MembershipSnapshot(m) => {
            assert!(event.event_type.starts_with("organizationMembership."));
            assert!(!m.id.is_empty() && !m.user_id.is_empty() && valid_millis(m.updated_at));
            assert!(valid_millis(m.organization.updated_at) && !m.role.is_empty());
        }
        EventKind::MembershipDeleted(d) => {
            assert_eq!(event.event_type, "organizationMembership.deleted");
            assert!(valid_millis(d.at) && !d.id.is_empty());
        }
        EventKind::Unusable { user_id, reason } => {
            assert!(!reason.is_empty());
            let _ = user_id;
        }
        EventKind::Unhandled => {
            assert!(
                !matches!(
                    event.event_type.as_str(),
                    "user.created"
                        | "user.updated"
                        | "user.deleted"
                        | "organization.created"
                        | "organization.updated"
                        | "organization.deleted"
                        | "organizationMembership.created"
                        | "organizationMembership.updated"
                        | "organizationMembership.deleted"
                ),
                "{:?} left unhandled",
                event.event_type
            );
        }
    }
});

fn valid_millis(t: i64) -> bool {
    (0..=MAX_CLERK_MILLIS).contains(&t)
}

fn check_snapshot(s: &UserSnapshot) {
    assert!(!s.id.is_empty(), "snapshot with an empty id");
    assert!(
        valid_millis(s.updated_at),
        "updated_at {} out of range",
        s.updated_at
    );
    if let Some(created_at) = s.created_at {
        assert!(
            valid_millis(created_at),
            "created_at {created_at} out of range"
        );
    }
    assert_ne!(s.email.as_deref(), Some(""), "empty email kept");
    assert_ne!(s.username.as_deref(), Some(""), "empty username kept");
    assert_eq!(
        s.name,
        full_name(s.first_name.as_deref(), s.last_name.as_deref())
    );
    if let Some(name) = &s.name {
        assert!(!name.is_empty() && name.trim() == name, "name {name:?}");
    }
}

fn stored(s: &UserSnapshot, id: &str, updated_at: Option<i64>) -> StoredUser {
    StoredUser {
        id: id.to_owned(),
        email: s.email.clone(),
        username: s.username.clone(),
        clerk_updated_at: updated_at,
        deleted: false,
    }
}

fn check_rules(s: &UserSnapshot) {
    // Nothing stored: the row is created as is.
    let plan = plan_snapshot(s, &SyncState::default());
    assert_eq!(plan.outcome, Outcome::Created);
    assert_eq!(plan.changes, vec![Change::Upsert(s.clone())]);

    // Deletes are final.
    let tombstoned = SyncState {
        users: Vec::new(),
        tombstoned: true,
    };
    let plan = plan_snapshot(s, &tombstoned);
    assert_eq!(plan.outcome, Outcome::Tombstoned);
    assert!(plan.changes.is_empty());

    // The very same version again changes nothing.
    let same = SyncState {
        users: vec![stored(s, &s.id, Some(s.updated_at))],
        tombstoned: false,
    };
    let plan = plan_snapshot(s, &same);
    assert_eq!(plan.outcome, Outcome::Unchanged);
    assert!(plan.changes.is_empty());

    // A newer row wins.
    if s.updated_at < MAX_CLERK_MILLIS {
        let newer = SyncState {
            users: vec![stored(s, &s.id, Some(s.updated_at + 1))],
            tombstoned: false,
        };
        let plan = plan_snapshot(s, &newer);
        assert_eq!(plan.outcome, Outcome::Stale);
        assert!(plan.changes.is_empty());
    }

    // An older row of our own is overwritten.
    let older = SyncState {
        users: vec![StoredUser {
            email: None,
            username: None,
            ..stored(s, &s.id, s.updated_at.checked_sub(1))
        }],
        tombstoned: false,
    };
    let plan = plan_snapshot(s, &older);
    assert_eq!(plan.outcome, Outcome::Updated);
    assert_eq!(plan.changes, vec![Change::Upsert(s.clone())]);

    // Another user who holds the same email and username and was last seen never (no
    // updated_at) gives them up to this snapshot.
    let other_id = format!("{}_other", s.id);
    let holder = SyncState {
        users: vec![stored(s, &other_id, None)],
        tombstoned: false,
    };
    let plan = plan_snapshot(s, &holder);
    assert_eq!(plan.outcome, Outcome::Created);
    let mut expected = Vec::new();
    if let Some(email) = &s.email {
        expected.push(Change::ReleaseEmail {
            from_user: other_id.clone(),
            email: email.clone(),
        });
    }
    if let Some(username) = &s.username {
        expected.push(Change::ReleaseUsername {
            from_user: other_id.clone(),
            username: username.clone(),
        });
    }
    expected.push(Change::Upsert(s.clone()));
    assert_eq!(plan.changes, expected);

    // The same snapshot twice in a batch: created, then unchanged, written once.
    let batch = plan_snapshots(&[s.clone(), s.clone()], Vec::new(), &HashSet::new());
    assert_eq!(batch.outcomes, vec![Outcome::Created, Outcome::Unchanged]);
    assert_eq!(batch.writes.upserts, vec![s.clone()]);
    assert!(batch.writes.clear_email.is_empty() && batch.writes.clear_username.is_empty());

    // Deliveries that arrived together: the snapshots first, then the deletion, which
    // removes the row the batch wrote and tombstones the id once.
    let together = [
        Planned::Snapshot(s),
        Planned::Deletion(&s.id),
        Planned::Snapshot(s),
        Planned::Deletion(&s.id),
    ];
    let batch = plan_batch(&together, Vec::new(), &HashSet::new(), DeleteMode::Soft);
    assert_eq!(
        batch.outcomes,
        vec![
            Outcome::Created,
            Outcome::Deleted,
            Outcome::Unchanged,
            Outcome::Tombstoned
        ]
    );
    assert_eq!(batch.writes.upserts, vec![s.clone()]);
    assert_eq!(
        batch.deletions,
        vec![
            Change::SoftDeleteRow {
                user_id: s.id.clone()
            },
            Change::Tombstone {
                user_id: s.id.clone()
            }
        ]
    );
}
