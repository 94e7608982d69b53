//! Ingest: what happens to a Clerk event, in order, whatever its source. A webhook delivery
//! is queued (`deliveries`: group commit by writer tasks), every source (webhook deliveries,
//! the fallback fetch, backfill and reconcile pages, replays) becomes `flow` items, and
//! `flow::run` is the one transaction: lock and read what the events touch, let
//! [`crate::sync`] decide, write the decision with the inbox rows and commit. Races are tried
//! again here; what the database refuses for its content is stored as failed.
//!
//! `crate::store` below is persistence only (connections, statements, migrations); it sees
//! domain values, never Clerk's wire types.

mod deliveries;
mod flow;

use crate::clerk::{ClerkEvent, EventKind, parse_event};
use crate::store::{DatabaseError, DriverError, Store, StoreError, retrying};
use crate::sync::{
    ClerkMillis, DeleteMode, MembershipDeletion, MembershipSnapshot, OrganizationSnapshot, Outcome,
    UserSnapshot,
};
pub use deliveries::DeliveryQueue;
pub(crate) use deliveries::{Delivery, WriterSettings};
pub use flow::DeliveryRecord;
use flow::{Effect, Item, Source};

/// What applying one snapshot of a page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The snapshot's user id.
    pub user_id: String,
    /// What applying it did (in a dry run: would do).
    pub outcome: Outcome,
    /// The row's `clerkUpdatedAt` before (ms), if there was a row.
    pub previous: Option<ClerkMillis>,
    /// The snapshot's `updated_at` (ms).
    pub clerk_updated_at: ClerkMillis,
}

impl Store {
    /// Runs the one flow (`flow::run`) for `items`, trying again after a lost race.
    async fn run(
        &self,
        items: &[Item<'_>],
        mode: DeleteMode,
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<flow::Done, DriverError> {
        retrying(|| flow::run(self, items, mode, checkpoint, dry_run)).await
    }

    /// Applies one item exactly once. Races with concurrent events are retried; an event the
    /// database refuses for its content is stored as failed; anything else is
    /// [`StoreError::Unavailable`], and the sender should try again later.
    async fn record_item(&self, item: &Item<'_>, mode: DeleteMode) -> Result<Outcome, StoreError> {
        let items = std::slice::from_ref(item);
        let mut result = self.run(items, mode, None, false).await;
        if let (Err(error), flow::Effect::OrganizationDeletion(organization_id), DeleteMode::Hard) =
            (&result, item.effect, mode)
            && error.is_foreign_key_violation()
        {
            // As for users below: an app's table points at the organization, so its row stays,
            // marked deleted (memberships removed, slug freed).
            tracing::warn!(
                organization_id = %organization_id,
                constraint = error.constraint().unwrap_or("(not named by SQLite)"),
                table = error.table().unwrap_or("(not named by SQLite)"),
                "organization.deleted: a foreign key keeps the organization's row, so it was \
                 kept with deletedAt set; choose ON DELETE CASCADE or SET NULL for that \
                 reference to delete such rows"
            );
            crate::metrics::delete_kept_by_foreign_key();
            result = self.run(items, DeleteMode::Soft, None, false).await;
        }
        if let (Err(error), flow::Effect::Deletion(user_id), DeleteMode::Hard) =
            (&result, item.effect, mode)
            && error.is_foreign_key_violation()
        {
            // The app's own table still points at the user (e.g. Prisma's default ON DELETE
            // RESTRICT): no retry can delete the row, so its personal data goes instead.
            tracing::warn!(
                user_id = %user_id,
                constraint = error.constraint().unwrap_or("(not named by SQLite)"),
                table = error.table().unwrap_or("(not named by SQLite)"),
                "user.deleted: a foreign key keeps the user's row, so it was kept with its \
                 personal data erased and deletedAt set; choose ON DELETE CASCADE or SET NULL \
                 for that reference to delete such rows (docs/migrating-from-nextjs.md)"
            );
            crate::metrics::delete_kept_by_foreign_key();
            result = self.run(items, DeleteMode::Erase, None, false).await;
        }
        match result {
            Ok(done) => Ok(done.outcomes[0]),
            Err(error) if error.is_rejected_data() => {
                let refusal = error.refusal_reason();
                if matches!(item.source, Source::Clerk) {
                    return Err(StoreError::Rejected(refusal));
                }
                let reason = match item.effect {
                    flow::Effect::Failed(reason) => format!("{reason}; then {refusal}"),
                    _ => refusal,
                };
                self.record_refused(item, &reason).await
            }
            Err(error) => Err(StoreError::unavailable(error)),
        }
    }

    /// Stores an event the database refused as failed, in a transaction of its own (the
    /// refused one rolled back), so it is answered 200 and a redelivery is a duplicate. Values
    /// the inbox itself cannot hold are stored in a form it can (see `flow::record_refused`).
    async fn record_refused(&self, item: &Item<'_>, reason: &str) -> Result<Outcome, StoreError> {
        match retrying(|| flow::record_refused(self, item, reason)).await {
            Ok(Outcome::Duplicate) => Ok(Outcome::Duplicate),
            Ok(outcome) => {
                tracing::warn!(error = %reason, "event stored as failed");
                Ok(outcome)
            }
            Err(error) => {
                tracing::error!(
                    error = %error, refused = %reason,
                    "the database refused an event, and then storing it as failed"
                );
                Err(StoreError::unavailable(error))
            }
        }
    }

    /// Applies deliveries that arrived together in one transaction, one result each. When the
    /// database refuses the batch for something one event carries, each event is applied on
    /// its own, so one bad event cannot hold back the others; when the database is away,
    /// every event gets that error.
    pub async fn record_deliveries(
        &self,
        deliveries: &[(&ClerkEvent, DeliveryRecord<'_>)],
        mode: DeleteMode,
    ) -> Vec<Result<Outcome, StoreError>> {
        let items: Vec<Item<'_>> = deliveries
            .iter()
            .map(|(event, delivery)| Item::delivery(event, *delivery))
            .collect();
        match self.run(&items, mode, None, false).await {
            Ok(done) => return done.outcomes.into_iter().map(Ok).collect(),
            Err(error) if error.is_refusal_by_database() => {
                tracing::debug!(%error, "batch refused; applying its events one by one");
            }
            Err(error) => {
                let error = std::sync::Arc::new(DatabaseError::new(error));
                return items
                    .iter()
                    .map(|_| Err(StoreError::UnavailableForBatch(error.clone())))
                    .collect();
            }
        }
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            results.push(self.record_item(item, mode).await);
        }
        results
    }

    /// Applies a user snapshot read from Clerk (fallback fetch, profile update) through the
    /// same rules as a webhook.
    pub async fn apply_snapshot(
        &self,
        snapshot: &UserSnapshot,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        self.record_item(&Item::snapshot(snapshot), mode).await
    }

    /// Deletes a user Clerk no longer has (reconciliation), by the rules of `user.deleted`.
    pub(crate) async fn apply_deletion(
        &self,
        user_id: &str,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let item = Item {
            event_type: "user.deleted",
            user_id: Some(user_id),
            effect: flow::Effect::Deletion(user_id),
            source: Source::Clerk,
        };
        self.record_item(&item, mode).await
    }

    /// Applies a page of snapshots in one transaction, snapshot by snapshot by the webhook
    /// rules. With a checkpoint, its state key is written in the same transaction, so a
    /// resumed run starts exactly after the last page that landed. A dry run decides and
    /// writes nothing.
    pub async fn apply_snapshots(
        &self,
        snapshots: &[UserSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<Vec<Applied>, StoreError> {
        let items: Vec<Item<'_>> = snapshots.iter().map(Item::snapshot).collect();
        let done = self
            .apply_page(&items, "a user's", checkpoint, dry_run)
            .await?;
        Ok(snapshots
            .iter()
            .zip(done.outcomes)
            .map(|(snapshot, outcome)| Applied {
                user_id: snapshot.id.clone(),
                outcome,
                previous: done.previous.get(&snapshot.id).copied().flatten(),
                clerk_updated_at: snapshot.updated_at,
            })
            .collect())
    }

    /// A page read from Clerk's API in one transaction (see [`Store::apply_snapshots`]);
    /// `what` names whose data the database refused, for the message.
    async fn apply_page(
        &self,
        items: &[Item<'_>],
        what: &str,
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<flow::Done, StoreError> {
        self.run(items, DeleteMode::Hard, checkpoint, dry_run)
            .await
            .map_err(|e| {
                if e.is_rejected_data() {
                    StoreError::Rejected(format!("the database refused {what} data: {e}"))
                } else {
                    StoreError::unavailable(e)
                }
            })
    }

    /// Re-applies a stored event by the same rules as its first delivery; `None` when there
    /// is no such event.
    pub async fn replay(
        &self,
        svix_id: &str,
        mode: DeleteMode,
    ) -> Result<Option<Outcome>, StoreError> {
        let Some(stored) = self.stored_event(svix_id).await? else {
            return Ok(None);
        };
        let event = match parse_event(stored.payload.as_bytes()) {
            Ok(event) => event,
            Err(e) => ClerkEvent {
                event_type: stored.event_type.clone(),
                kind: EventKind::Unusable {
                    user_id: stored.user_id.clone(),
                    reason: e.to_string(),
                },
            },
        };
        self.record_item(&Item::event(&event, Source::Replay { svix_id }), mode)
            .await
            .map(Some)
    }

    /// Applies a page of organizations read from Clerk in one transaction, by the webhook
    /// rules, with the job's checkpoint (see [`Store::apply_snapshots`]).
    pub(crate) async fn apply_organizations(
        &self,
        organizations: &[OrganizationSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<Vec<Outcome>, StoreError> {
        let items: Vec<Item<'_>> = organizations.iter().map(Item::organization).collect();
        let done = self
            .apply_page(&items, "an organization's", checkpoint, dry_run)
            .await?;
        Ok(done.outcomes)
    }

    /// Applies a page of memberships read from Clerk (each with its organization) in one
    /// transaction, by the webhook rules, with the job's checkpoint.
    pub async fn apply_memberships(
        &self,
        memberships: &[MembershipSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<Vec<Outcome>, StoreError> {
        let items: Vec<Item<'_>> = memberships.iter().map(Item::membership).collect();
        let done = self
            .apply_page(&items, "a membership's", checkpoint, dry_run)
            .await?;
        Ok(done.outcomes)
    }

    /// Deletes an organization Clerk no longer has (reconciliation), by the rules of
    /// `organization.deleted`.
    pub(crate) async fn apply_organization_deletion(
        &self,
        organization_id: &str,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let item = Item::reconciled(Effect::OrganizationDeletion(organization_id));
        self.record_item(&item, mode).await
    }

    /// Deletes a membership Clerk no longer has (reconciliation), by the rules of
    /// `organizationMembership.deleted`.
    pub(crate) async fn apply_membership_deletion(
        &self,
        deletion: &MembershipDeletion,
        mode: DeleteMode,
    ) -> Result<Outcome, StoreError> {
        let item = Item::reconciled(Effect::MembershipDeletion(deletion));
        self.record_item(&item, mode).await
    }
}
