//! What backfill and reconciliation share for organizations and memberships: a walk over one of
//! Clerk's offset-paged lists (`GET /v1/organizations`, `GET /v1/organization_memberships`,
//! oldest first, 500 at a time), on the job's [`Requests`] (the lease renewed, the pacer
//! waited for, the same budget as the users').
//!
//! Offsets move under the walk: a new item lands at the end (the lists are ordered by
//! `created_at`, and nothing is created in the past), but a deletion of an item already read
//! moves every later one a place back, so the next page would begin one item late and the
//! item at its border would be skipped. The walk therefore asks for each page a few items
//! ([`OVERLAP`]) before where the last one ended and finds its place by the ids of the last
//! items it read (anchors): what follows the newest anchor in the page is new; what precedes
//! it, or is an anchor, was read already and is left out. A page without any anchor means the
//! list moved back further than the overlap (or the anchors were deleted): the walk steps back
//! a page at a time until it finds one, and after a few steps reads again from the first item.
//! Items are never skipped, only, in that case, read again (which the webhook rules make
//! harmless: the same snapshot is `unchanged`).
//!
//! The walk ends with a short page, or a page that reaches the `total_count` Clerk sent with it;
//! an empty list costs one request. Reconciliation also checks that it read at least as many
//! distinct items as the list's last `total_count`: every item that still exists was read.

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::pages::Requests;
use super::{JobError, Progress, Summary};
use crate::clerk::api::{ClerkApi, ClerkApiError, Page};
use crate::clerk::{MembershipData, OrganizationData};
use crate::store::{Store, StoreError};
use crate::sync::{ClerkMillis, MembershipSnapshot, OrganizationSnapshot, Outcome};

/// How many items before the end of the last page the next page starts: a deletion of up to
/// this many read items between two requests costs no extra request.
const OVERLAP: u64 = 5;
/// Ids of the last items read that the walk keeps to find its place again.
const ANCHORS: usize = 20;
/// Steps back (a page each) before the walk reads the list again from the first item.
const MAX_STEPS_BACK: u32 = 3;
/// Times a walk may start over from the first item before it gives up.
const MAX_REWALKS: u32 = 3;

/// An item of one of Clerk's offset-paged lists: how to ask for a page, and how to apply it.
pub(super) trait Listed: Sized + Send {
    /// What the table keeps of an item.
    type Snapshot: Send + Sync;
    /// `organizations`, `memberships`: for progress, messages and reports.
    const NOUN: &'static str;

    fn id(&self) -> Option<&str>;

    /// The page of `limit` items from `offset`, oldest first.
    fn fetch(
        api: &ClerkApi,
        limit: u32,
        offset: u64,
    ) -> impl Future<Output = Result<Page<Self>, ClerkApiError>> + Send;

    /// The item as the rules take it; the reason when it cannot be stored.
    fn snapshot(self) -> Result<Self::Snapshot, String>;

    fn snapshot_id(snapshot: &Self::Snapshot) -> &str;

    /// Clerk's `updated_at` of the snapshot (ms).
    fn updated_at(snapshot: &Self::Snapshot) -> ClerkMillis;

    /// What reconciliation says about the item besides its id (the membership's user and
    /// organization).
    fn describe(_snapshot: &Self::Snapshot) -> Option<String> {
        None
    }

    /// Applies a page by the webhook rules in one transaction, with the checkpoint (dry: plans).
    fn apply(
        store: &Store,
        snapshots: &[Self::Snapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;

    /// Ids of the table's live rows first written before `before`.
    fn table_ids(
        store: &Store,
        before: NaiveDateTime,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

impl Listed for OrganizationData {
    type Snapshot = OrganizationSnapshot;
    const NOUN: &'static str = "organizations";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn fetch(
        api: &ClerkApi,
        limit: u32,
        offset: u64,
    ) -> impl Future<Output = Result<Page<Self>, ClerkApiError>> + Send {
        api.list_organizations(limit, offset)
    }

    fn snapshot(self) -> Result<OrganizationSnapshot, String> {
        OrganizationSnapshot::from_clerk(self)
    }

    fn snapshot_id(snapshot: &OrganizationSnapshot) -> &str {
        &snapshot.id
    }

    fn updated_at(snapshot: &OrganizationSnapshot) -> ClerkMillis {
        snapshot.updated_at
    }

    fn apply(
        store: &Store,
        snapshots: &[OrganizationSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send {
        store.apply_organizations(snapshots, checkpoint, dry_run)
    }

    fn table_ids(
        store: &Store,
        before: NaiveDateTime,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        store.live_organization_ids(before)
    }
}

impl Listed for MembershipData {
    type Snapshot = MembershipSnapshot;
    const NOUN: &'static str = "memberships";

    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn fetch(
        api: &ClerkApi,
        limit: u32,
        offset: u64,
    ) -> impl Future<Output = Result<Page<Self>, ClerkApiError>> + Send {
        api.list_memberships(limit, offset)
    }

    fn snapshot(self) -> Result<MembershipSnapshot, String> {
        MembershipSnapshot::from_clerk(self)
    }

    fn snapshot_id(snapshot: &MembershipSnapshot) -> &str {
        &snapshot.id
    }

    fn updated_at(snapshot: &MembershipSnapshot) -> ClerkMillis {
        snapshot.updated_at
    }

    fn describe(snapshot: &MembershipSnapshot) -> Option<String> {
        Some(membership_of(&snapshot.user_id, &snapshot.organization.id))
    }

    fn apply(
        store: &Store,
        snapshots: &[MembershipSnapshot],
        checkpoint: Option<(&str, &str)>,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send {
        store.apply_memberships(snapshots, checkpoint, dry_run)
    }

    async fn table_ids(store: &Store, before: NaiveDateTime) -> Result<Vec<String>, StoreError> {
        let memberships = store.live_memberships(before).await?;
        Ok(memberships.into_iter().map(|(id, _, _)| id).collect())
    }
}

/// `user_x in org_y`, how reports name what a membership joins.
pub(super) fn membership_of(user_id: &str, organization_id: &str) -> String {
    format!("{user_id} in {organization_id}")
}

/// The page's items as snapshots; an item Clerk sent that cannot be applied is logged and
/// counted as failed.
pub(super) fn snapshots_of<T: Listed>(items: Vec<T>, summary: &mut Summary) -> Vec<T::Snapshot> {
    let mut snapshots = Vec::with_capacity(items.len());
    for item in items {
        match item.snapshot() {
            Ok(snapshot) => snapshots.push(snapshot),
            Err(reason) => {
                tracing::warn!(list = T::NOUN, error = %reason, "item from Clerk cannot be applied");
                summary.failed += 1;
            }
        }
    }
    snapshots
}

/// Where a walk stands: the offset it asks for next and the ids of the last items it read, by
/// which it finds its place again. Backfill stores it with each page (its checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Position {
    /// Offset of the next request.
    pub offset: u64,
    /// Ids of the last items read, oldest first (at most [`ANCHORS`]).
    pub anchors: Vec<String>,
    /// Items read so far, across resumed runs (for progress).
    pub processed: u64,
}

/// A walk over one of Clerk's offset-paged lists, oldest first.
pub(super) struct OffsetWalk<T> {
    job: &'static str,
    page_size: u32,
    position: Position,
    done: bool,
    steps_back: u32,
    rewalks: u32,
    /// The `total_count` of the last page.
    total: Option<u64>,
    quiet: bool,
    progress: Option<Progress>,
    _items: PhantomData<fn() -> T>,
}

impl<T: Listed> OffsetWalk<T> {
    /// A walk from `position` (the start when `None`), `page_size` items per request (2 to
    /// 500: a page must reach past the overlap).
    pub fn new(
        job: &'static str,
        page_size: u32,
        position: Option<Position>,
        quiet: bool,
    ) -> OffsetWalk<T> {
        OffsetWalk {
            job,
            page_size: page_size.clamp(2, super::MAX_PAGE_SIZE),
            position: position.unwrap_or_default(),
            done: false,
            steps_back: 0,
            rewalks: 0,
            total: None,
            quiet,
            progress: None,
            _items: PhantomData,
        }
    }

    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Walks again from the first item.
    pub fn restart(&mut self) {
        self.position = Position::default();
        self.done = false;
        self.steps_back = 0;
        if let Some(progress) = self.progress.take() {
            progress.finish();
        }
    }

    fn overlap(&self) -> u64 {
        OVERLAP.min(u64::from(self.page_size) / 2).max(1)
    }

    /// The items not read before, a page at a time (possibly none, when a page held only items
    /// read already); `None` once the list is read to its end.
    pub async fn next(
        &mut self,
        api: &ClerkApi,
        requests: &mut Requests<'_>,
    ) -> Result<Option<Vec<T>>, JobError> {
        let limit = u64::from(self.page_size);
        loop {
            if self.done {
                if let Some(progress) = &self.progress {
                    progress.finish();
                }
                return Ok(None);
            }
            let (offset, page_size) = (self.position.offset, self.page_size);
            let page = requests.call(|| T::fetch(api, page_size, offset)).await?;
            let len = page.data.len() as u64;
            self.total = Some(page.total_count);
            let anchors = &self.position.anchors;
            let is_anchor = |item: &T| item.id().is_some_and(|id| anchors.iter().any(|a| a == id));
            // After the newest anchor in the page; the whole page when there is nothing to find
            // (a fresh walk) or nowhere further back to look.
            let start = if anchors.is_empty() {
                Some(0)
            } else {
                page.data.iter().rposition(is_anchor).map(|i| i + 1)
            };
            let start = match start {
                Some(start) => start,
                None if offset == 0 => 0,
                None => {
                    self.step_back()?;
                    continue;
                }
            };
            self.steps_back = 0;
            if len < limit || offset + len >= page.total_count {
                self.done = true;
            } else {
                self.position.offset = offset + len - self.overlap();
            }
            let new: Vec<T> = page
                .data
                .into_iter()
                .skip(start)
                .filter(|item| !is_anchor(item))
                .collect();
            let anchors = &mut self.position.anchors;
            anchors.extend(new.iter().filter_map(|item| item.id().map(str::to_owned)));
            let surplus = anchors.len().saturating_sub(ANCHORS);
            anchors.drain(..surplus);
            self.position.processed += new.len() as u64;
            let (job, quiet, processed) = (self.job, self.quiet, self.position.processed);
            let progress = self.progress.get_or_insert_with(|| {
                let mut progress = Progress::of(job, T::NOUN, None, quiet);
                progress.advance(processed - new.len() as u64);
                progress
            });
            progress.set_total(page.total_count);
            progress.advance(new.len() as u64);
            return Ok(Some(new));
        }
    }

    /// No anchor in the page: the list moved back past the overlap. Look a page further back,
    /// and after a few pages from the first item.
    fn step_back(&mut self) -> Result<(), JobError> {
        self.steps_back += 1;
        if self.steps_back <= MAX_STEPS_BACK {
            let back = u64::from(self.page_size) - 1;
            self.position.offset = self.position.offset.saturating_sub(back);
            tracing::debug!(
                list = T::NOUN,
                offset = self.position.offset,
                "Clerk's list moved back while it was read; looking for the last items read"
            );
            return Ok(());
        }
        self.rewalks += 1;
        if self.rewalks > MAX_REWALKS {
            return Err(JobError::Refused(format!(
                "Clerk's {} kept moving while they were read (many deleted meanwhile?); run the \
                 job again later",
                T::NOUN
            )));
        }
        tracing::info!(
            list = T::NOUN,
            "Clerk's list moved back further than a few pages while it was read; reading it \
             again from the first (what was read already is unchanged)"
        );
        self.position.offset = 0;
        self.steps_back = 0;
        Ok(())
    }

    /// After a walk to the end: whether `read` distinct items can be all of them. Every item
    /// that existed when the last page was read was read (items created since land after it),
    /// so fewer than that page's `total_count` means one was skipped.
    pub fn check_complete(&self, read: usize) -> Result<(), JobError> {
        match self.total {
            Some(total) if (read as u64) < total => Err(JobError::Refused(format!(
                "Clerk counts {total} {noun} but the walk read only {read}: the listing was \
                 incomplete, so no {noun} were deleted. Run again.",
                noun = T::NOUN
            ))),
            _ => Ok(()),
        }
    }
}

/// Reads the whole list into its ids, and the items among `wanted` (read again to confirm what
/// reconciliation would delete), checked complete.
pub(super) async fn read_ids<T: Listed>(
    api: &ClerkApi,
    requests: &mut Requests<'_>,
    page_size: u32,
    wanted: &HashSet<&str>,
) -> Result<(HashSet<String>, Vec<T>), JobError> {
    let mut walk = OffsetWalk::<T>::new("reconcile", page_size, None, true);
    let mut ids = HashSet::new();
    let mut found = Vec::new();
    while let Some(items) = walk.next(api, requests).await? {
        for item in items {
            let Some(id) = item.id() else { continue };
            if ids.insert(id.to_owned()) && wanted.contains(id) {
                found.push(item);
            }
        }
    }
    walk.check_complete(ids.len())?;
    Ok((ids, found))
}
