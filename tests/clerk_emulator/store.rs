//! The emulated instance's users, indexed so that listing 100,000 of them 500 at a time stays
//! cheap: a page is a walk over an ordered index, never a sort of the whole table.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SortField {
    CreatedAt,
    UpdatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ordering {
    pub field: SortField,
    pub descending: bool,
}

impl Ordering {
    /// Clerk's default for `GET /v1/users`: newest first.
    pub const DEFAULT: Ordering = Ordering {
        field: SortField::CreatedAt,
        descending: true,
    };

    /// `created_at`, `+created_at`, `-created_at` and the same for `updated_at`. A bare field
    /// name is ascending, as Clerk's `+` prefix is optional.
    pub fn parse(value: &str) -> Option<Ordering> {
        let (descending, field) = match value.as_bytes().first() {
            Some(b'-') => (true, &value[1..]),
            Some(b'+') => (false, &value[1..]),
            _ => (false, value),
        };
        let field = match field {
            "created_at" => SortField::CreatedAt,
            "updated_at" => SortField::UpdatedAt,
            _ => return None,
        };
        Some(Ordering { field, descending })
    }
}

/// The `user_id` filter: plain or `+` ids are included, `-` ids excluded (reference §d).
#[derive(Debug, Default)]
pub(super) struct IdFilter {
    pub include: Option<HashSet<String>>,
    pub exclude: HashSet<String>,
}

impl IdFilter {
    fn admits(&self, id: &str) -> bool {
        !self.exclude.contains(id) && self.include.as_ref().is_none_or(|ids| ids.contains(id))
    }
}

#[derive(Debug)]
pub(super) struct ListQuery {
    pub limit: usize,
    pub offset: usize,
    pub ordering: Ordering,
    pub starting_after: Option<String>,
    pub filter: IdFilter,
}

/// The cursor names no user of this instance.
#[derive(Debug)]
pub(super) struct UnknownCursor;

struct StoredUser {
    json: Arc<Value>,
    created_at: i64,
    updated_at: i64,
}

impl StoredUser {
    fn sort_value(&self, field: SortField) -> i64 {
        match field {
            SortField::CreatedAt => self.created_at,
            SortField::UpdatedAt => self.updated_at,
        }
    }
}

/// Index keys are `(timestamp, id)`: the id breaks timestamp ties, so every ordering is total
/// and a cursor has exactly one position.
type IndexKey = (i64, String);

#[derive(Default)]
pub(super) struct UserStore {
    users: HashMap<String, StoredUser>,
    by_created: BTreeSet<IndexKey>,
    by_updated: BTreeSet<IndexKey>,
}

impl UserStore {
    /// Replaces any user with the same id. Clerk always sends `created_at` and `updated_at`
    /// (reference §c, both required), so a test object without them gets `now_ms`.
    pub fn insert(&mut self, mut user: Value, now_ms: i64) {
        let object = user
            .as_object_mut()
            .expect("a Clerk User must be a JSON object");
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .expect("a Clerk User needs a string `id`")
            .to_string();
        let created_at = timestamp_or_now(object, "created_at", now_ms);
        let updated_at = timestamp_or_now(object, "updated_at", now_ms);
        self.remove(&id);
        self.by_created.insert((created_at, id.clone()));
        self.by_updated.insert((updated_at, id.clone()));
        self.users.insert(
            id,
            StoredUser {
                json: Arc::new(user),
                created_at,
                updated_at,
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<Arc<Value>> {
        self.users.get(id).map(|user| Arc::clone(&user.json))
    }

    pub fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.users.remove(id) else {
            return false;
        };
        self.by_created.remove(&(old.created_at, id.to_string()));
        self.by_updated.remove(&(old.updated_at, id.to_string()));
        true
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn count(&self, filter: &IdFilter) -> usize {
        match &filter.include {
            Some(ids) => ids
                .iter()
                .filter(|id| self.users.contains_key(*id) && filter.admits(id))
                .count(),
            None => {
                self.users.len()
                    - filter
                        .exclude
                        .iter()
                        .filter(|id| self.users.contains_key(*id))
                        .count()
            }
        }
    }

    pub fn list(&self, query: &ListQuery) -> Result<Vec<Arc<Value>>, UnknownCursor> {
        let field = query.ordering.field;
        let cursor = match &query.starting_after {
            Some(id) => {
                let user = self.users.get(id).ok_or(UnknownCursor)?;
                Some((user.sort_value(field), id.clone()))
            }
            None => None,
        };

        // An include filter names at most 100 ids, so a throwaway index over them is cheaper
        // than walking the whole table.
        let subset: BTreeSet<IndexKey>;
        let index = match (&query.filter.include, field) {
            (Some(ids), _) => {
                subset = ids
                    .iter()
                    .filter_map(|id| {
                        let user = self.users.get(id)?;
                        Some((user.sort_value(field), id.clone()))
                    })
                    .collect();
                &subset
            }
            (None, SortField::CreatedAt) => &self.by_created,
            (None, SortField::UpdatedAt) => &self.by_updated,
        };

        let keys: Box<dyn Iterator<Item = &IndexKey>> = match (cursor, query.ordering.descending) {
            (None, false) => Box::new(index.iter()),
            (None, true) => Box::new(index.iter().rev()),
            (Some(after), false) => {
                Box::new(index.range((Bound::Excluded(after), Bound::Unbounded)))
            }
            (Some(after), true) => Box::new(index.range(..after).rev()),
        };
        Ok(keys
            .filter(|(_, id)| query.filter.admits(id))
            .skip(query.offset)
            .take(query.limit)
            .map(|(_, id)| Arc::clone(&self.users[id].json))
            .collect())
    }

    /// Whether another user already holds `username` (Clerk's usernames are unique per
    /// instance).
    pub fn username_taken(&self, username: &str, except_id: &str) -> bool {
        self.users.iter().any(|(id, user)| {
            id != except_id && user.json.get("username").and_then(Value::as_str) == Some(username)
        })
    }

    /// Applies `change` to the user's object and moves `updated_at` forward: to `now_ms`, or one
    /// past the previous value if that is not later, so every update is visible as newer.
    pub fn update(
        &mut self,
        id: &str,
        now_ms: i64,
        change: impl FnOnce(&mut Map<String, Value>),
    ) -> Option<Arc<Value>> {
        let user = self.users.get_mut(id)?;
        let updated_at = now_ms.max(user.updated_at + 1);
        let object = Arc::make_mut(&mut user.json)
            .as_object_mut()
            .expect("stored users are objects");
        change(object);
        object.insert("updated_at".into(), updated_at.into());
        self.by_updated.remove(&(user.updated_at, id.to_string()));
        self.by_updated.insert((updated_at, id.to_string()));
        user.updated_at = updated_at;
        Some(Arc::clone(&user.json))
    }
}

/// The Unix-milliseconds `field` of a Clerk object; set to `now_ms` when the object has none.
pub(super) fn timestamp_or_now(object: &mut Map<String, Value>, field: &str, now_ms: i64) -> i64 {
    match object.get(field) {
        None => {
            object.insert(field.into(), now_ms.into());
            now_ms
        }
        Some(value) => value
            .as_i64()
            .unwrap_or_else(|| panic!("`{field}` must be Unix milliseconds, got {value}")),
    }
}
