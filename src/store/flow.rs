//! What one transaction does, the same on both backends: lock what an event touches, read it,
//! let [`crate::sync`] decide, write the decision and the inbox row together.

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
