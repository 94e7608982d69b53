//! What one transaction does, the same on both backends: lock what an event touches, read it,
//! let [`crate::sync`] decide, write the decision and the inbox row together.

use std::borrow::Cow;

use chrono::NaiveDateTime;

use super::statements::{LoadedState, StateKeys, Statements};
use super::{Applied, DeliveryRecord, InboxRecord, IncomingEvent, Source, UsersTable, now};
use crate::clerk::{ClerkEvent, EventKind};
use crate::sync::{self, DeleteMode, Outcome, Planned, SyncState, UserSnapshot};

fn keys_of(snapshots: &[&UserSnapshot]) -> StateKeys {
    StateKeys {
        user_ids: snapshots.iter().map(|s| s.id.clone()).collect(),
        emails: snapshots.iter().filter_map(|s| s.email.clone()).collect(),
        usernames: snapshots
            .iter()
            .filter_map(|s| s.username.clone())
            .collect(),
    }
}

/// The whole effect of one event. `Duplicate` means nothing was written.
pub(super) async fn apply_event<T: Statements>(
    tx: &mut T,
    users: &UsersTable,
    event: &IncomingEvent<'_>,
    mode: DeleteMode,
) -> Result<Outcome, sqlx::Error> {
    let now = now();
    let dedupe_ids: Vec<String> = match &event.source {
        Source::Delivery(delivery) => vec![delivery.svix_id.to_owned()],
        Source::Replay { .. } | Source::Clerk => Vec::new(),
    };
    let mut error = None;
    let outcome = match &event.event.kind {
        EventKind::UserSnapshot(snapshot) => {
            let keys = keys_of(&[snapshot]);
            tx.lock_keys(&keys.lock_keys()).await?;
            let state = tx.load_state(users, &dedupe_ids, &keys).await?;
            if !state.seen.is_empty() {
                return Ok(Outcome::Duplicate);
            }
            let plan = sync::plan_snapshots(
                std::slice::from_ref(snapshot),
                state.users,
                &state.tombstoned,
            );
            tx.write_rows(users, &plan.writes, now).await?;
            plan.outcomes[0]
        }
        EventKind::UserDeleted { user_id } => {
            let keys = StateKeys {
                user_ids: vec![user_id.clone()],
                ..StateKeys::default()
            };
            tx.lock_keys(&keys.lock_keys()).await?;
            let state = tx.load_state(users, &dedupe_ids, &keys).await?;
            if !state.seen.is_empty() {
                return Ok(Outcome::Duplicate);
            }
            let view = SyncState {
                tombstoned: state.tombstoned.contains(user_id),
                users: state.users,
            };
            let plan = sync::plan_deletion(user_id, &view, mode);
            for change in &plan.changes {
                tx.apply_deletion(users, change, now).await?;
            }
            plan.outcome
        }
        EventKind::Unhandled => Outcome::Ignored,
        EventKind::Unusable { reason, .. } => {
            error = Some(reason.as_str());
            Outcome::Failed
        }
    };
    finish(tx, event.event, &event.source, outcome, error, now).await
}

/// Deliveries that arrived together, in one transaction: one set of locks for everything they
/// touch, one read, the rules applied event by event (`sync::plan_batch`), one bulk write and
/// one inbox row each. Same effect as applying them one by one in some order.
pub(super) async fn apply_deliveries<T: Statements>(
    tx: &mut T,
    users: &UsersTable,
    deliveries: &[(&ClerkEvent, DeliveryRecord<'_>)],
    mode: DeleteMode,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let batch = DeliveryBatch::new(deliveries);
    tx.lock_keys(&batch.keys.lock_keys()).await?;
    let state = tx.load_state(users, &batch.svix_ids, &batch.keys).await?;
    let decision = batch.decide(state, mode, now());
    tx.write_rows(users, &decision.writes, decision.now).await?;
    for change in &decision.deletions {
        tx.apply_deletion(users, change, decision.now).await?;
    }
    let inserted = tx.insert_inbox_rows(&decision.inbox).await?;
    Ok(decision.outcomes(&inserted))
}

/// A batch of deliveries before the read: what it must lock and look up.
pub(super) struct DeliveryBatch<'a> {
    deliveries: &'a [(&'a ClerkEvent, DeliveryRecord<'a>)],
    pub keys: StateKeys,
    pub svix_ids: Vec<String>,
    planned: Vec<(usize, Planned<'a>)>,
    errors: Vec<Option<&'a str>>,
}

/// What a batch writes, decided under its locks, and what each delivery's answer will be.
pub(super) struct Decision<'a> {
    pub writes: sync::RowWrites,
    pub deletions: Vec<sync::Change>,
    /// One row per delivery not seen before.
    pub inbox: Vec<InboxRecord<'a>>,
    pub now: chrono::NaiveDateTime,
    svix_ids: Vec<String>,
    fresh: Vec<bool>,
    outcomes: Vec<Outcome>,
}

impl<'a> DeliveryBatch<'a> {
    pub fn new(deliveries: &'a [(&'a ClerkEvent, DeliveryRecord<'a>)]) -> Self {
        let mut keys = StateKeys::default();
        let mut planned = Vec::with_capacity(deliveries.len());
        let mut errors = vec![None; deliveries.len()];
        for (i, (event, _)) in deliveries.iter().enumerate() {
            match &event.kind {
                EventKind::UserSnapshot(snapshot) => {
                    keys.user_ids.push(snapshot.id.clone());
                    keys.emails.extend(snapshot.email.clone());
                    keys.usernames.extend(snapshot.username.clone());
                    planned.push((i, Planned::Snapshot(snapshot)));
                }
                EventKind::UserDeleted { user_id } => {
                    keys.user_ids.push(user_id.clone());
                    planned.push((i, Planned::Deletion(user_id)));
                }
                EventKind::Unhandled => {}
                EventKind::Unusable { reason, .. } => errors[i] = Some(reason.as_str()),
            }
        }
        for list in [&mut keys.user_ids, &mut keys.emails, &mut keys.usernames] {
            list.sort();
            list.dedup();
        }
        DeliveryBatch {
            deliveries,
            keys,
            svix_ids: deliveries
                .iter()
                .map(|(_, d)| d.svix_id.to_owned())
                .collect(),
            planned,
            errors,
        }
    }

    /// Applies the rules to the state read under the locks.
    pub fn decide(
        self,
        state: LoadedState,
        mode: DeleteMode,
        now: chrono::NaiveDateTime,
    ) -> Decision<'a> {
        // A delivery seen before, or twice in this batch (a retry racing its original), changes
        // nothing the second time.
        let mut seen = state.seen;
        let fresh: Vec<bool> = self
            .svix_ids
            .iter()
            .map(|id| seen.insert(id.clone()))
            .collect();
        let (indices, events): (Vec<usize>, Vec<Planned<'_>>) =
            self.planned.into_iter().filter(|(i, _)| fresh[*i]).unzip();
        let plan = sync::plan_batch(&events, state.users, &state.tombstoned, mode);
        let mut outcomes: Vec<Outcome> = self
            .errors
            .iter()
            .map(|error| {
                if error.is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Ignored
                }
            })
            .collect();
        for (i, outcome) in indices.into_iter().zip(plan.outcomes) {
            outcomes[i] = outcome;
        }
        let inbox = self
            .deliveries
            .iter()
            .enumerate()
            .filter(|(i, _)| fresh[*i])
            .map(|(i, (event, delivery))| InboxRecord {
                svix_id: delivery.svix_id,
                event_type: &event.event_type,
                user_id: event.user_id(),
                outcome: outcomes[i],
                error: self.errors[i],
                payload: delivery.payload,
                svix_timestamp: delivery.svix_timestamp,
                received_at: now,
            })
            .collect();
        Decision {
            writes: plan.writes,
            deletions: plan.deletions,
            inbox,
            now,
            svix_ids: self.svix_ids,
            fresh,
            outcomes,
        }
    }
}

impl Decision<'_> {
    /// Each delivery's outcome, given the inbox rows the write actually inserted (a row
    /// already there means another process got the same delivery first).
    pub fn outcomes(self, inserted: &std::collections::HashSet<String>) -> Vec<Outcome> {
        self.svix_ids
            .iter()
            .zip(self.fresh)
            .zip(self.outcomes)
            .map(|((id, fresh), outcome)| {
                if fresh && inserted.contains(id) {
                    outcome
                } else {
                    Outcome::Duplicate
                }
            })
            .collect()
    }
}

/// Records what happened to a delivered or replayed event.
pub(super) async fn finish<T: Statements>(
    tx: &mut T,
    event: &ClerkEvent,
    source: &Source<'_>,
    outcome: Outcome,
    error: Option<&str>,
    now: NaiveDateTime,
) -> Result<Outcome, sqlx::Error> {
    match source {
        Source::Clerk => Ok(outcome),
        Source::Replay { svix_id } => {
            tx.update_inbox(svix_id, outcome, error, now).await?;
            Ok(outcome)
        }
        Source::Delivery(delivery) => {
            let inserted = tx
                .insert_inbox(&InboxRecord {
                    svix_id: delivery.svix_id,
                    event_type: &event.event_type,
                    user_id: event.user_id(),
                    outcome,
                    error,
                    payload: delivery.payload,
                    svix_timestamp: delivery.svix_timestamp,
                    received_at: now,
                })
                .await?;
            Ok(if inserted {
                outcome
            } else {
                Outcome::Duplicate
            })
        }
    }
}

/// Records an event the database refused as failed, with the reason (`Duplicate` when its
/// `svix-id` is stored already). The inbox row holds what arrived, except where that is what
/// the database refuses: NUL characters (PostgreSQL text cannot hold them) become U+FFFD, and
/// ids too long for an index are shortened (see [`storable_key`]). Both changes are the same
/// for every delivery of the event, so a redelivery meets this row and is a duplicate; the
/// stored error says what was changed.
pub(super) async fn record_refused<T: Statements>(
    tx: &mut T,
    event: &ClerkEvent,
    source: &Source<'_>,
    reason: &str,
    now: NaiveDateTime,
) -> Result<Outcome, sqlx::Error> {
    let mut changes = Vec::new();
    match source {
        Source::Clerk => Ok(Outcome::Failed),
        Source::Replay { svix_id } => {
            let error = storable_text("the error", reason, &mut changes);
            tx.update_inbox(svix_id, Outcome::Failed, Some(&error), now)
                .await?;
            Ok(Outcome::Failed)
        }
        Source::Delivery(delivery) => {
            let svix_id = storable_key("svix-id", delivery.svix_id, &mut changes);
            let event_type = storable_key("type", &event.event_type, &mut changes);
            let user_id = event
                .user_id()
                .map(|id| storable_key("user id", id, &mut changes));
            let payload = storable_text("payload", delivery.payload, &mut changes);
            let mut error = storable_text("the error", reason, &mut changes).into_owned();
            if !changes.is_empty() {
                error.push_str("; stored with ");
                error.push_str(&changes.join(", "));
            }
            let inserted = tx
                .insert_inbox(&InboxRecord {
                    svix_id: &svix_id,
                    event_type: &event_type,
                    user_id: user_id.as_deref(),
                    outcome: Outcome::Failed,
                    error: Some(&error),
                    payload: &payload,
                    svix_timestamp: delivery.svix_timestamp,
                    received_at: now,
                })
                .await?;
            Ok(if inserted {
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

/// A page of snapshots from Clerk (backfill, reconciliation): one transaction, one set of
/// locks, one read, one bulk write, planned snapshot by snapshot by the webhook rules. With a
/// checkpoint, its state key is written in the same transaction, so a resumed run starts
/// exactly after the last page that landed. A dry run decides and writes nothing.
pub(super) async fn apply_snapshots<T: Statements>(
    tx: &mut T,
    users: &UsersTable,
    snapshots: &[UserSnapshot],
    checkpoint: Option<(&str, &str)>,
    dry_run: bool,
) -> Result<Vec<Applied>, sqlx::Error> {
    let now = now();
    let refs: Vec<&UserSnapshot> = snapshots.iter().collect();
    let keys = keys_of(&refs);
    if !dry_run {
        tx.lock_keys(&keys.lock_keys()).await?;
    }
    let state = tx.load_state(users, &[], &keys).await?;
    let previous: std::collections::HashMap<String, Option<i64>> = state
        .users
        .iter()
        .map(|u| (u.id.clone(), u.clerk_updated_at))
        .collect();
    let plan = sync::plan_snapshots(snapshots, state.users, &state.tombstoned);
    if !dry_run {
        tx.write_rows(users, &plan.writes, now).await?;
        if let Some((key, value)) = checkpoint {
            tx.set_state(key, Some(value), now).await?;
        }
    }
    Ok(snapshots
        .iter()
        .zip(plan.outcomes)
        .map(|(snapshot, outcome)| Applied {
            user_id: snapshot.id.clone(),
            outcome,
            previous: previous.get(&snapshot.id).copied().flatten(),
            clerk_updated_at: snapshot.updated_at,
        })
        .collect())
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
