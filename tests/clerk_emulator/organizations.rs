//! The emulated instance's organizations and their memberships (reference §i), kept consistent the
//! way Clerk keeps them: a membership belongs to an organization that exists, a user is a member
//! of an organization at most once, slugs are unique, and an organization's memberships go with
//! it. Each membership is indexed by creation, by organization and by user, so a page of any of
//! the three membership lists is a walk over an ordered index; organizations are few in any test,
//! so their list is sorted per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::store::timestamp_or_now;

/// A membership's `created_at` and the id that breaks ties: the order is total, so offset paging
/// over an unchanged store neither skips nor repeats. Organizations are ordered the same way.
type IndexKey = (i64, String);

/// What `GET /v1/organizations` can order by (reference §i).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OrganizationField {
    CreatedAt,
    Name,
    MembersCount,
}

impl OrganizationField {
    pub const ALL: &[(&str, OrganizationField)] = &[
        ("created_at", OrganizationField::CreatedAt),
        ("name", OrganizationField::Name),
        ("members_count", OrganizationField::MembersCount),
    ];
}

/// `field`, `+field` or `-field` out of `fields`; a bare name is ascending, as Clerk's `+` is
/// optional. Returns the field and whether the order is descending.
pub(super) fn parse_order_by<F: Copy>(value: &str, fields: &[(&str, F)]) -> Option<(F, bool)> {
    let (descending, name) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    fields
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, field)| (*field, descending))
}

/// Which of the fields Clerk computes on request an organization carries (reference §i,
/// `include_members_count`; `include_missing_member_with_elevated_permissions` likewise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OrganizationView {
    /// `members_count` and `pending_invitations_count`.
    pub counts: bool,
    /// `missing_member_with_elevated_permissions`.
    pub elevated: bool,
}

impl OrganizationView {
    /// Everything, as webhook payloads and embedded organizations carry it.
    pub const FULL: OrganizationView = OrganizationView {
        counts: true,
        elevated: true,
    };
}

/// Which memberships a list is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum MembershipScope<'a> {
    Instance,
    Organization(&'a str),
    User(&'a str),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    pub limit: usize,
    pub offset: usize,
}

/// One page of a list, and how many items the whole list has.
#[derive(Debug)]
pub(super) struct Listing {
    pub data: Vec<Value>,
    pub total_count: usize,
}

struct StoredOrganization {
    json: Arc<Value>,
    created_at: i64,
    slug: Option<String>,
}

struct StoredMembership {
    json: Arc<Value>,
    organization_id: String,
    user_id: String,
    created_at: i64,
}

#[derive(Default)]
pub(super) struct OrganizationStore {
    organizations: HashMap<String, StoredOrganization>,
    /// Slug -> organization id.
    slugs: HashMap<String, String>,
    memberships: HashMap<String, StoredMembership>,
    memberships_by_created: BTreeSet<IndexKey>,
    by_organization: HashMap<String, BTreeSet<IndexKey>>,
    by_user: HashMap<String, BTreeSet<IndexKey>>,
    /// (organization id, user id) -> membership id.
    members: HashMap<(String, String), String>,
}

impl OrganizationStore {
    /// Stores a Clerk Organization object, replacing any organization with that id (its
    /// memberships stay). Panics, changing nothing, when another organization holds the slug.
    /// Without `created_at`/`updated_at` the object gets `now_ms`, as for users.
    pub fn insert_organization(&mut self, mut organization: Value, now_ms: i64) {
        let object = organization
            .as_object_mut()
            .expect("a Clerk Organization must be a JSON object");
        let id = required_str(object, "id", "Organization").to_string();
        let slug = object
            .get("slug")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(slug) = &slug
            && let Some(holder) = self.slugs.get(slug).filter(|holder| **holder != id)
        {
            panic!(
                "organization {id}: slug {slug:?} is already {holder}'s, and Clerk's slugs are \
                 unique within an instance"
            );
        }
        let created_at = timestamp_or_now(object, "created_at", now_ms);
        timestamp_or_now(object, "updated_at", now_ms);
        self.unlink_organization(&id);
        if let Some(slug) = &slug {
            self.slugs.insert(slug.clone(), id.clone());
        }
        self.organizations.insert(
            id,
            StoredOrganization {
                json: Arc::new(organization),
                created_at,
                slug,
            },
        );
    }

    /// The organization with this id, or else with this slug (Clerk's `GET
    /// /organizations/{organization_id}` takes either).
    pub fn find_organization(&self, id_or_slug: &str) -> Option<&str> {
        if let Some((id, _)) = self.organizations.get_key_value(id_or_slug) {
            return Some(id);
        }
        self.slugs.get(id_or_slug).map(String::as_str)
    }

    pub fn contains_organization(&self, id: &str) -> bool {
        self.organizations.contains_key(id)
    }

    /// The organization as `view` shows it, with `members_count` counted from its memberships.
    pub fn organization(&self, id: &str, view: OrganizationView) -> Option<Value> {
        let stored = self.organizations.get(id)?;
        let mut json = (*stored.json).clone();
        let object = json
            .as_object_mut()
            .expect("stored organizations are objects");
        if view.counts {
            object.insert("members_count".into(), self.members_count(id).into());
        } else {
            object.remove("members_count");
            object.remove("pending_invitations_count");
        }
        if !view.elevated {
            object.remove("missing_member_with_elevated_permissions");
        }
        Some(json)
    }

    /// Removes the organization and every membership of it.
    pub fn remove_organization(&mut self, id: &str) -> bool {
        let memberships: Vec<String> = self
            .by_organization
            .get(id)
            .map(|index| index.iter().map(|(_, id)| id.clone()).collect())
            .unwrap_or_default();
        for membership in memberships {
            self.remove_membership(&membership);
        }
        self.unlink_organization(id)
    }

    pub fn organization_count(&self) -> usize {
        self.organizations.len()
    }

    pub fn members_count(&self, organization_id: &str) -> usize {
        self.by_organization
            .get(organization_id)
            .map_or(0, BTreeSet::len)
    }

    /// Stores a Clerk OrganizationMembership object, replacing any membership with that id. Its
    /// organization is `organization.id` and its user `public_user_data.user_id`. Panics,
    /// changing nothing, when the organization is not stored or when another membership already
    /// makes that user a member of it.
    pub fn insert_membership(&mut self, mut membership: Value, now_ms: i64) {
        let object = membership
            .as_object_mut()
            .expect("a Clerk OrganizationMembership must be a JSON object");
        let id = required_str(object, "id", "OrganizationMembership").to_string();
        let organization_id = object
            .get("organization")
            .and_then(|organization| organization.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("membership {id} needs a string `organization.id`"))
            .to_string();
        let user_id = object
            .get("public_user_data")
            .and_then(|user| user.get("user_id"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("membership {id} needs a string `public_user_data.user_id`"))
            .to_string();
        assert!(
            self.organizations.contains_key(&organization_id),
            "membership {id}: organization {organization_id} is not in the emulator; insert it \
             first (a Clerk membership always belongs to an existing organization)"
        );
        let pair = (organization_id, user_id);
        if let Some(other) = self.members.get(&pair).filter(|other| **other != id) {
            panic!(
                "membership {id}: {} is already a member of {} through {other}, and Clerk makes a \
                 user a member of an organization at most once",
                pair.1, pair.0
            );
        }
        let created_at = timestamp_or_now(object, "created_at", now_ms);
        timestamp_or_now(object, "updated_at", now_ms);
        self.remove_membership(&id);
        let (organization_id, user_id) = pair;
        let key = (created_at, id.clone());
        self.memberships_by_created.insert(key.clone());
        self.by_organization
            .entry(organization_id.clone())
            .or_default()
            .insert(key.clone());
        self.by_user.entry(user_id.clone()).or_default().insert(key);
        self.members
            .insert((organization_id.clone(), user_id.clone()), id.clone());
        self.memberships.insert(
            id,
            StoredMembership {
                json: Arc::new(membership),
                organization_id,
                user_id,
                created_at,
            },
        );
    }

    /// The membership with its organization as it is now (full, counted), not as inserted.
    pub fn membership(&self, id: &str) -> Option<Value> {
        let stored = self.memberships.get(id)?;
        let mut json = (*stored.json).clone();
        let organization = self
            .organization(&stored.organization_id, OrganizationView::FULL)
            .expect("a stored membership's organization is stored");
        json.as_object_mut()
            .expect("stored memberships are objects")
            .insert("organization".into(), organization);
        Some(json)
    }

    pub fn remove_membership(&mut self, id: &str) -> bool {
        let Some(old) = self.memberships.remove(id) else {
            return false;
        };
        let key = (old.created_at, id.to_string());
        self.memberships_by_created.remove(&key);
        remove_from(&mut self.by_organization, &old.organization_id, &key);
        remove_from(&mut self.by_user, &old.user_id, &key);
        self.members.remove(&(old.organization_id, old.user_id));
        true
    }

    /// Removes every membership of the user (whose account is gone); returns how many.
    pub fn remove_memberships_of_user(&mut self, user_id: &str) -> usize {
        let memberships: Vec<String> = self
            .by_user
            .get(user_id)
            .map(|index| index.iter().map(|(_, id)| id.clone()).collect())
            .unwrap_or_default();
        for membership in &memberships {
            self.remove_membership(membership);
        }
        memberships.len()
    }

    pub fn membership_count(&self) -> usize {
        self.memberships.len()
    }

    pub fn list_organizations(
        &self,
        (field, descending): (OrganizationField, bool),
        page: Page,
        view: OrganizationView,
    ) -> Listing {
        let mut ids: Vec<&str> = self.organizations.keys().map(String::as_str).collect();
        let name = |id: &str| {
            self.organizations[id]
                .json
                .get("name")
                .and_then(Value::as_str)
        };
        match field {
            OrganizationField::CreatedAt => {
                ids.sort_unstable_by_key(|id| (self.organizations[*id].created_at, *id));
            }
            OrganizationField::Name => ids.sort_unstable_by_key(|id| (name(id), *id)),
            OrganizationField::MembersCount => {
                ids.sort_unstable_by_key(|id| (self.members_count(id), *id));
            }
        }
        if descending {
            ids.reverse();
        }
        Listing {
            data: ids
                .into_iter()
                .skip(page.offset)
                .take(page.limit)
                .map(|id| {
                    self.organization(id, view)
                        .expect("listed organizations are stored")
                })
                .collect(),
            total_count: self.organizations.len(),
        }
    }

    /// Memberships in `scope` by `created_at` (ties by id), each with its current organization.
    pub fn list_memberships(
        &self,
        scope: MembershipScope<'_>,
        descending: bool,
        page: Page,
    ) -> Listing {
        let index = match scope {
            MembershipScope::Instance => Some(&self.memberships_by_created),
            MembershipScope::Organization(id) => self.by_organization.get(id),
            MembershipScope::User(id) => self.by_user.get(id),
        };
        let Some(index) = index else {
            return Listing {
                data: Vec::new(),
                total_count: 0,
            };
        };
        let keys: Box<dyn Iterator<Item = &IndexKey>> = if descending {
            Box::new(index.iter().rev())
        } else {
            Box::new(index.iter())
        };
        Listing {
            data: keys
                .skip(page.offset)
                .take(page.limit)
                .map(|(_, id)| self.membership(id).expect("indexed memberships are stored"))
                .collect(),
            total_count: index.len(),
        }
    }

    /// Forgets the organization itself (not its memberships) and its slug.
    fn unlink_organization(&mut self, id: &str) -> bool {
        let Some(old) = self.organizations.remove(id) else {
            return false;
        };
        if let Some(slug) = old.slug {
            self.slugs.remove(&slug);
        }
        true
    }
}

fn required_str<'a>(object: &'a Map<String, Value>, field: &str, what: &str) -> &'a str {
    object
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("a Clerk {what} needs a string `{field}`"))
}

/// Removes `key` from the index under `owner`, dropping the index once it is empty.
fn remove_from(indexes: &mut HashMap<String, BTreeSet<IndexKey>>, owner: &str, key: &IndexKey) {
    if let Some(index) = indexes.get_mut(owner) {
        index.remove(key);
        if index.is_empty() {
            indexes.remove(owner);
        }
    }
}
