//! What one transaction does, the same for every source of changes (webhook deliveries,
//! a single event or a batch; the fallback fetch; a backfill or reconcile page; a replay) and
//! on both backends: lock what the events touch and read it (round trip one), let
//! [`crate::sync`] decide, then write the decision, the inbox rows and any checkpoint and
//! commit (round trip two). An event's effect and its `svix-id` land atomically.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::clerk::{ClerkEvent, EventKind};
use crate::store::{
    DriverError, InboxRecord, InboxUpdate, StateKeys, Store, Transaction, Writes, now,
};
use crate::sync::{
    self, Change, ClerkMillis, DeleteMode, MembershipDeletion, MembershipSnapshot,
    OrganizationEvent, OrganizationSnapshot, OrganizationWrites, Outcome, Planned, RowWrites,
    UserSnapshot,
};

/// Where an event came from, which decides what the inbox keeps of it.
#[derive(Debug, Clone)]
pub(crate) enum Source<'a> {
    /// A verified webhook delivery: deduplicated by `svix-id` and stored in the inbox.
    Delivery(DeliveryRecord<'a>),
    /// A stored event applied again: its inbox row gets the new outcome.
    Replay {
        /// The stored event's `svix-id`.
        svix_id: &'a str,
    },
    /// Read from Clerk's API (fallback fetch, profile update, reconciliation): not stored.
    Clerk,
}

/// What the inbox keeps of a verified webhook delivery.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRecord<'a> {
    /// The `svix-id` header: the same for every attempt of one message, so a redelivery is
    /// recognised as a duplicate.
    pub svix_id: &'a str,
    /// The `svix-timestamp` header: Unix seconds when Svix signed this attempt.
    pub svix_timestamp: i64,
    /// The raw body, kept for inspection and replay.
    pub payload: &'a str,
}

/// One event of a transaction: what the rules see, and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    pub event_type: &'a str,
    pub user_id: Option<&'a str>,
    pub effect: Effect<'a>,
    pub source: Source<'a>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Effect<'a> {
    Snapshot(&'a UserSnapshot),
    Deletion(&'a str),
    Organization(&'a OrganizationSnapshot),
    OrganizationDeletion(&'a str),
    Membership(&'a MembershipSnapshot),
    MembershipDeletion(&'a MembershipDeletion),
    /// A type clerk-sync does not act on: stored, changes nothing.
    Ignored,
    /// Verified but unusable: stored as failed with the reason.
    Failed(&'a str),
}

impl<'a> Item<'a> {
    pub fn event(event: &'a ClerkEvent, source: Source<'a>) -> Item<'a> {
        let effect = match &event.kind {
            EventKind::UserSnapshot(snapshot) => Effect::Snapshot(snapshot),
            EventKind::UserDeleted { user_id } => Effect::Deletion(user_id),
            EventKind::OrganizationSnapshot(o) => Effect::Organization(o),
            EventKind::OrganizationDeleted { organization_id } => {
                Effect::OrganizationDeletion(organization_id)
            }
            EventKind::MembershipSnapshot(m) => Effect::Membership(m),
            EventKind::MembershipDeleted(m) => Effect::MembershipDeletion(m),
            EventKind::Unhandled => Effect::Ignored,
            EventKind::Unusable { reason, .. } => Effect::Failed(reason),
        };
        Item {
            event_type: &event.event_type,
            user_id: event.user_id(),
            effect,
            source,
        }
    }

    pub fn delivery(event: &'a ClerkEvent, delivery: DeliveryRecord<'a>) -> Item<'a> {
        Item::event(event, Source::Delivery(delivery))
    }

    /// Why a verified event is unusable, stored with it.
    fn error(&self) -> Option<&'a str> {
        match self.effect {
            Effect::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// A snapshot read from Clerk's API (backfill, reconciliation, fallback fetch).
    pub fn snapshot(snapshot: &'a UserSnapshot) -> Item<'a> {
        Item {
            event_type: "user.fetched",
            user_id: Some(&snapshot.id),
            effect: Effect::Snapshot(snapshot),
            source: Source::Clerk,
        }
    }

    /// An organization read from Clerk's API (backfill, reconciliation).
    pub fn organization(organization: &'a OrganizationSnapshot) -> Item<'a> {
        Item {
            event_type: "organization.fetched",
            user_id: None,
            effect: Effect::Organization(organization),
            source: Source::Clerk,
        }
    }

    /// A membership read from Clerk's API (backfill, reconciliation).
    pub fn membership(membership: &'a MembershipSnapshot) -> Item<'a> {
        Item {
            event_type: "organizationMembership.fetched",
            user_id: Some(&membership.user_id),
            effect: Effect::Membership(membership),
            source: Source::Clerk,
        }
    }

    /// A deletion decided by reconciliation (the thing is gone from Clerk).
    pub fn reconciled(effect: Effect<'a>) -> Item<'a> {
        Item {
            event_type: "reconcile",
            user_id: None,
            effect,
            source: Source::Clerk,
        }
    }
}

/// What a transaction did: one outcome per item, and the rows' `clerkUpdatedAt` before (ms)
/// for those that had a row.
pub(crate) struct Done {
    pub outcomes: Vec<Outcome>,
    pub previous: HashMap<String, Option<ClerkMillis>>,
}

/// The one flow. Events are planned as if applied one after the other (snapshots in order,
/// then deletions: an order Svix could have used; see `sync::plan_batch`). A delivery whose
/// `svix-id` is in the inbox already, or twice in the batch, changes nothing. A dry run reads
/// without locks, decides, and writes nothing.
pub(crate) async fn run(
    store: &Store,
    items: &[Item<'_>],
    mode: DeleteMode,
    checkpoint: Option<(&str, &str)>,
    dry_run: bool,
) -> Result<Done, DriverError> {
    let mut keys = StateKeys::default();
    let mut svix_ids = Vec::new();
    for item in items {
        match item.effect {
            Effect::Snapshot(snapshot) => {
                keys.user_ids.push(snapshot.id.clone());
                keys.emails.extend(snapshot.email.clone());
                keys.usernames.extend(snapshot.username.clone());
            }
            Effect::Deletion(user_id) => keys.user_ids.push(user_id.to_owned()),
            Effect::Organization(o) => keys.organizations.add_organization(o),
            Effect::OrganizationDeletion(id) => {
                keys.organizations.organization_ids.push(id.to_owned())
            }
            Effect::Membership(m) => {
                keys.organizations.add_organization(&m.organization);
                keys.organizations
                    .add_membership(&m.id, &m.organization.id, &m.user_id);
                // The user's lock and tombstone: a deleted user's memberships stay gone.
                keys.user_ids.push(m.user_id.clone());
            }
            Effect::MembershipDeletion(m) => {
                keys.organizations
                    .organization_ids
                    .push(m.organization_id.clone());
                keys.organizations
                    .add_membership(&m.id, &m.organization_id, &m.user_id);
                keys.user_ids.push(m.user_id.clone());
            }
            Effect::Ignored | Effect::Failed(_) => {}
        }
        if let Source::Delivery(delivery) = &item.source {
            svix_ids.push(delivery.svix_id.to_owned());
        }
    }
    for list in [&mut keys.user_ids, &mut keys.emails, &mut keys.usernames] {
        list.sort();
        list.dedup();
    }
    keys.organizations.normalize();
    let locks = if dry_run {
        Vec::new()
    } else {
        keys.lock_keys()
    };

    let mut tx = Transaction::begin(store).await?;
    let state = tx.read(store, &locks, &svix_ids, &keys).await?;
    let now = now();
    let previous = state
        .users
        .iter()
        .map(|u| (u.id.clone(), u.clerk_updated_at))
        .collect();

    let mut seen = state.seen;
    let fresh: Vec<bool> = items
        .iter()
        .map(|item| match &item.source {
            Source::Delivery(delivery) => seen.insert(delivery.svix_id.to_owned()),
            Source::Replay { .. } | Source::Clerk => true,
        })
        .collect();
    let (indices, events): (Vec<usize>, Vec<Planned<'_>>) = items
        .iter()
        .enumerate()
        .filter(|(i, _)| fresh[*i])
        .filter_map(|(i, item)| match item.effect {
            Effect::Snapshot(snapshot) => Some((i, Planned::Snapshot(snapshot))),
            Effect::Deletion(user_id) => Some((i, Planned::Deletion(user_id))),
            _ => None,
        })
        .unzip();
    let (organization_indices, organization_events): (Vec<usize>, Vec<OrganizationEvent<'_>>) =
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| fresh[*i])
            .filter_map(|(i, item)| match item.effect {
                Effect::Organization(o) => Some((i, OrganizationEvent::Organization(o))),
                Effect::OrganizationDeletion(id) => {
                    Some((i, OrganizationEvent::OrganizationDeletion(id)))
                }
                Effect::Membership(m) => Some((i, OrganizationEvent::Membership(m))),
                Effect::MembershipDeletion(m) => {
                    Some((i, OrganizationEvent::MembershipDeletion(m)))
                }
                _ => None,
            })
            .unzip();
    let mut organization_state = state.organizations;
    organization_state.user_tombstones = state.tombstoned.clone();
    let organization_plan = sync::plan_organizations(&organization_events, &organization_state);
    let plan = sync::plan_batch(&events, state.users, &state.tombstoned, mode);
    let mut outcomes: Vec<Outcome> = items
        .iter()
        .map(|item| match item.effect {
            Effect::Failed(_) => Outcome::Failed,
            _ => Outcome::Ignored,
        })
        .collect();
    for (i, outcome) in indices.into_iter().zip(plan.outcomes).chain(
        organization_indices
            .into_iter()
            .zip(organization_plan.outcomes),
    ) {
        outcomes[i] = outcome;
    }
    if dry_run {
        tx.rollback().await;
        return Ok(Done { outcomes, previous });
    }

    let mut inbox = Vec::new();
    let mut replays = Vec::new();
    for ((item, outcome), fresh) in items.iter().zip(&outcomes).zip(&fresh) {
        match &item.source {
            Source::Delivery(delivery) if *fresh => inbox.push(InboxRecord {
                svix_id: delivery.svix_id,
                event_type: item.event_type,
                user_id: item.user_id,
                outcome: *outcome,
                error: item.error(),
                payload: delivery.payload,
                svix_timestamp: delivery.svix_timestamp,
                received_at: now,
            }),
            Source::Replay { svix_id } => replays.push(InboxUpdate {
                svix_id,
                outcome: *outcome,
                error: item.error(),
            }),
            Source::Delivery(_) | Source::Clerk => {}
        }
    }
    // A user deletion that changed anything takes the user's memberships with it.
    let deleted_users: Vec<&str> = plan
        .deletions
        .iter()
        .filter_map(|change| match change {
            Change::Tombstone { user_id } => Some(user_id.as_str()),
            _ => None,
        })
        .collect();
    let inserted = tx
        .write(
            store,
            &Writes {
                rows: &plan.writes,
                deletions: &plan.deletions,
                organizations: &organization_plan.writes,
                deleted_users: &deleted_users,
                keep_organization_rows: mode != DeleteMode::Hard,
                inbox: &inbox,
                replays: &replays,
                checkpoint,
                now,
            },
        )
        .await?;
    for ((item, outcome), fresh) in items.iter().zip(outcomes.iter_mut()).zip(fresh) {
        if let Source::Delivery(delivery) = &item.source
            && !(fresh && inserted.contains(delivery.svix_id))
        {
            *outcome = Outcome::Duplicate;
        }
    }
    Ok(Done { outcomes, previous })
}

/// Records an event the database refused as failed, with the reason (`Duplicate` when its
/// `svix-id` is stored already), in a transaction of its own. The inbox row holds what
/// arrived, except where that is what the database refuses: NUL characters (PostgreSQL text
/// cannot hold them) become U+FFFD, and ids too long for an index are shortened (see
/// [`storable_key`]). Both changes are the same for every delivery of the event, so a
/// redelivery meets this row and is a duplicate; the stored error says what was changed.
pub(crate) async fn record_refused(
    store: &Store,
    item: &Item<'_>,
    reason: &str,
) -> Result<Outcome, DriverError> {
    let mut changes = Vec::new();
    let now = now();
    let nothing = RowWrites::default();
    let no_organizations = OrganizationWrites::default();
    let mut writes = Writes {
        rows: &nothing,
        deletions: &[],
        organizations: &no_organizations,
        deleted_users: &[],
        keep_organization_rows: false,
        inbox: &[],
        replays: &[],
        checkpoint: None,
        now,
    };
    match &item.source {
        Source::Clerk => Ok(Outcome::Failed),
        Source::Replay { svix_id } => {
            let error = storable_text("the error", reason, &mut changes);
            let replays = [InboxUpdate {
                svix_id,
                outcome: Outcome::Failed,
                error: Some(&error),
            }];
            writes.replays = &replays;
            Transaction::begin(store)
                .await?
                .write(store, &writes)
                .await?;
            Ok(Outcome::Failed)
        }
        Source::Delivery(delivery) => {
            let svix_id = storable_key("svix-id", delivery.svix_id, &mut changes);
            let event_type = storable_key("type", item.event_type, &mut changes);
            let user_id = item
                .user_id
                .map(|id| storable_key("user id", id, &mut changes));
            let payload = storable_text("payload", delivery.payload, &mut changes);
            let mut error = storable_text("the error", reason, &mut changes).into_owned();
            if !changes.is_empty() {
                error.push_str("; stored with ");
                error.push_str(&changes.join(", "));
            }
            let inbox = [InboxRecord {
                svix_id: &svix_id,
                event_type: &event_type,
                user_id: user_id.as_deref(),
                outcome: Outcome::Failed,
                error: Some(&error),
                payload: &payload,
                svix_timestamp: delivery.svix_timestamp,
                received_at: now,
            }];
            writes.inbox = &inbox;
            let inserted = Transaction::begin(store)
                .await?
                .write(store, &writes)
                .await?;
            Ok(if inserted.contains(svix_id.as_ref()) {
                Outcome::Failed
            } else {
                Outcome::Duplicate
            })
        }
    }
}

/// Longest id (or event type) the inbox stores unchanged. PostgreSQL's btree indexes refuse
/// entries over about 2,700 bytes (SQLSTATE 54000), and the `svix-id` is the inbox's key;
/// real ids are some 30 bytes, and the webhook refuses `svix-id`s over 255.
const MAX_STORED_KEY_BYTES: usize = 1024;

/// `value` as the inbox can store it. One that is too long keeps its first bytes and gains a
/// fingerprint of the whole, so two long ids stay two rows and the same one is the same row.
fn storable_key<'v>(what: &str, value: &'v str, changes: &mut Vec<String>) -> Cow<'v, str> {
    let text = storable_text(what, value, changes);
    if text.len() <= MAX_STORED_KEY_BYTES {
        return text;
    }
    let suffix = format!("…{:016x}", fingerprint(value.as_bytes()));
    let mut end = MAX_STORED_KEY_BYTES - suffix.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    changes.push(format!("{what} shortened from {} bytes", value.len()));
    Cow::Owned(format!("{}{suffix}", &text[..end]))
}

/// `value` without NUL characters, which PostgreSQL text cannot hold (SQLSTATE 22021).
fn storable_text<'v>(what: &str, value: &'v str, changes: &mut Vec<String>) -> Cow<'v, str> {
    if !value.contains('\0') {
        return Cow::Borrowed(value);
    }
    changes.push(format!("NUL replaced by U+FFFD in {what}"));
    Cow::Owned(value.replace('\0', "\u{FFFD}"))
}

/// FNV-1a: stable across builds and platforms, which a shortened `svix-id` must be for a
/// redelivery to find its row; not a defence against anyone (whoever can sign can also send
/// any id they like).
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_the_inbox_cannot_hold_are_stored_in_a_form_it_can() {
        let mut changes = Vec::new();
        assert_eq!(storable_key("svix-id", "msg_1", &mut changes), "msg_1");
        assert!(changes.is_empty());

        assert_eq!(
            storable_text("type", "user.\0x", &mut changes),
            "user.\u{FFFD}x"
        );
        assert_eq!(changes, ["NUL replaced by U+FFFD in type"]);

        // Multi-byte characters at the cut: still valid UTF-8, within the limit.
        let long = "é".repeat(3000);
        let mut changes = Vec::new();
        let stored = storable_key("user id", &long, &mut changes);
        assert!(stored.len() <= MAX_STORED_KEY_BYTES, "{}", stored.len());
        assert!(stored.starts_with("éé"));
        assert_eq!(changes, ["user id shortened from 6000 bytes"]);
        // The same value is always stored the same way; another long value differently.
        assert_eq!(stored, storable_key("user id", &long, &mut Vec::new()));
        let other = format!("{}x", "é".repeat(3000));
        assert_ne!(stored, storable_key("user id", &other, &mut Vec::new()));
    }
}
