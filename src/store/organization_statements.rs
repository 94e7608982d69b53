//! The organization tables' side of the one transaction: what organization and membership
//! events read (round one) and write (round two), written once for both backends as statements
//! with their values; each backend sends them its own way (pipelined on PostgreSQL, one by one
//! on SQLite).

use std::collections::HashSet;

use chrono::NaiveDateTime;

use super::records::{datetime_to_millis, millis_to_datetime};
use super::users_table::UsersTable;
use crate::sync::{
    MembershipSnapshot, OrganizationSnapshot, OrganizationState, OrganizationWrites,
    StoredMembership, StoredOrganization,
};

/// What organization events touch: organization ids, slugs, membership ids, and the
/// (organization, user) pairs of memberships.
#[derive(Debug, Default, Clone)]
pub(crate) struct OrganizationKeys {
    pub organization_ids: Vec<String>,
    pub slugs: Vec<String>,
    pub membership_ids: Vec<String>,
    /// The pairs' organizations and users, as two lists: the lookup reads memberships of any
    /// of these organizations held by any of these users (a superset of the pairs, which the
    /// rules match exactly).
    pub pair_organizations: Vec<String>,
    pub pair_users: Vec<String>,
}

impl OrganizationKeys {
    pub fn is_empty(&self) -> bool {
        self.organization_ids.is_empty() && self.membership_ids.is_empty()
    }

    pub fn add_organization(&mut self, organization: &OrganizationSnapshot) {
        self.organization_ids.push(organization.id.clone());
        self.slugs.extend(organization.slug.clone());
    }

    pub fn add_membership(&mut self, id: &str, organization_id: &str, user_id: &str) {
        self.membership_ids.push(id.to_owned());
        self.pair_organizations.push(organization_id.to_owned());
        self.pair_users.push(user_id.to_owned());
    }

    pub fn normalize(&mut self) {
        for list in [
            &mut self.organization_ids,
            &mut self.slugs,
            &mut self.membership_ids,
            &mut self.pair_organizations,
            &mut self.pair_users,
        ] {
            list.sort();
            list.dedup();
        }
    }

    /// Advisory-lock keys, beside the users' (see `StateKeys::lock_keys`).
    pub fn lock_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.organization_ids
            .iter()
            .map(|id| format!("org:{id}"))
            .chain(self.slugs.iter().map(|s| format!("slug:{s}")))
            .chain(
                self.membership_ids
                    .iter()
                    .map(|m| format!("membership:{m}")),
            )
    }

    /// The lookup's parameters, in order (`$1`…`$5`).
    pub fn lists(&self) -> [&Vec<String>; 5] {
        [
            &self.organization_ids,
            &self.slugs,
            &self.membership_ids,
            &self.pair_organizations,
            &self.pair_users,
        ]
    }
}

/// One row of the lookup, as either driver reads it.
pub(crate) struct LookupRow {
    pub kind: String,
    pub id: String,
    pub a: Option<String>,
    pub b: Option<String>,
    pub c: Option<String>,
    pub at: Option<NaiveDateTime>,
    pub ms: Option<i64>,
}

/// Reads a lookup row by column name (both drivers have `try_get`).
macro_rules! lookup_row_from {
    ($row:expr) => {
        $crate::store::organization_statements::LookupRow {
            kind: $row.try_get("kind")?,
            id: $row.try_get("id")?,
            a: $row.try_get("a")?,
            b: $row.try_get("b")?,
            c: $row.try_get("c")?,
            at: $row.try_get("at")?,
            ms: $row.try_get("ms")?,
        }
    };
}
pub(crate) use lookup_row_from;

/// The rows and tombstones the lookup found. User tombstones come from the users' lookup.
pub(crate) fn organization_state(rows: impl IntoIterator<Item = LookupRow>) -> OrganizationState {
    let mut state = OrganizationState::default();
    let mut organizations = HashSet::new();
    let mut memberships = HashSet::new();
    for row in rows {
        match row.kind.as_str() {
            "o" if organizations.insert(row.id.clone()) => {
                state.organizations.push(StoredOrganization {
                    id: row.id,
                    slug: row.a,
                    clerk_updated_at: row.at.map(datetime_to_millis),
                })
            }
            "m" if memberships.insert(row.id.clone()) => state.memberships.push(StoredMembership {
                id: row.id,
                organization_id: row.a.unwrap_or_default(),
                user_id: row.b.unwrap_or_default(),
                role: row.c.unwrap_or_default(),
                clerk_updated_at: row.at.map(datetime_to_millis),
            }),
            "ot" => {
                state.organization_tombstones.insert(row.id);
            }
            "mt" => {
                state
                    .membership_tombstones
                    .insert(row.id, row.ms.unwrap_or(i64::MAX));
            }
            _ => {}
        }
    }
    state
}

/// A value bound to a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(Option<&'a str>),
    Time(Option<NaiveDateTime>),
    Int(i64),
}

/// A statement and its values.
#[derive(Debug)]
pub(crate) struct Statement<'a> {
    pub sql: &'a str,
    pub values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    /// A statement whose values are an id and, for soft deletes and tombstones, the time.
    fn by_id(sql: &'a str, id: &'a str, now: Option<NaiveDateTime>) -> Self {
        let mut values = vec![Value::Text(Some(id))];
        values.extend(now.map(|now| Value::Time(Some(now))));
        Statement { sql, values }
    }
}

/// The statement texts of the organization tables, made once per store and dialect.
#[derive(Debug)]
pub(crate) struct OrganizationTexts {
    pub lookup: String,
    clear_slug: String,
    upsert_organization: String,
    delete_membership: String,
    upsert_membership: String,
    delete_organization: String,
    soft_delete_organization: String,
    memberships_of_organization: String,
    organization_tombstone: String,
    membership_tombstone: String,
    memberships_of_user: String,
}

impl OrganizationTexts {
    /// `ns` is where clerk-sync's own tables are (`clerk_sync.` or `clerk_sync_`); `(open,
    /// close)` wrap a list parameter into "is in".
    pub fn new(users: &UsersTable, ns: &str, (open, close): (&str, &str)) -> Self {
        let is_in = |n: u8| format!("{open}${n}{close}");
        OrganizationTexts {
            // One arm per key, so each uses its index; a row found twice is merged by the reader.
            lookup: users.sql(&format!(
                r#"SELECT 'o' AS kind, id, slug AS a, CAST(NULL AS TEXT) AS b, CAST(NULL AS TEXT) AS c,
                          "clerkUpdatedAt" AS at, CAST(NULL AS BIGINT) AS ms
                   FROM {{organizations}} WHERE id {orgs}
                   UNION ALL
                   SELECT 'o', id, slug, NULL, NULL, "clerkUpdatedAt", NULL
                   FROM {{organizations}} WHERE slug {slugs}
                   UNION ALL
                   SELECT 'm', id, "organizationId", "userId", role, "clerkUpdatedAt", NULL
                   FROM {{memberships}} WHERE id {memberships}
                   UNION ALL
                   SELECT 'm', id, "organizationId", "userId", role, "clerkUpdatedAt", NULL
                   FROM {{memberships}} WHERE "organizationId" {pair_orgs} AND "userId" {pair_users}
                   UNION ALL
                   SELECT 'ot', organization_id, NULL, NULL, NULL, NULL, NULL
                   FROM {ns}organization_tombstones WHERE organization_id {orgs}
                   UNION ALL
                   SELECT 'mt', membership_id, NULL, NULL, NULL, NULL, deleted_at_ms
                   FROM {ns}membership_tombstones WHERE membership_id {memberships}"#,
                orgs = is_in(1),
                slugs = is_in(2),
                memberships = is_in(3),
                pair_orgs = is_in(4),
                pair_users = is_in(5),
            )),
            clear_slug: users.sql(
                r#"UPDATE {organizations} SET slug = NULL, "updatedAt" = $3
                   WHERE id = $1 AND slug = $2"#,
            ),
            // Newest wins, repeated in SQL as a last line of defence (the decision was made
            // under the locks).
            upsert_organization: users.sql(
                r#"INSERT INTO {organizations} AS t (id, name, slug, "imageUrl", "createdBy",
                                                    "clerkCreatedAt", "clerkUpdatedAt",
                                                    "createdAt", "updatedAt")
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                   ON CONFLICT (id) DO UPDATE SET
                       name = excluded.name, slug = excluded.slug,
                       "imageUrl" = excluded."imageUrl", "createdBy" = excluded."createdBy",
                       "clerkCreatedAt" = excluded."clerkCreatedAt",
                       "clerkUpdatedAt" = excluded."clerkUpdatedAt",
                       "updatedAt" = excluded."updatedAt"
                   WHERE t."clerkUpdatedAt" IS NULL OR t."clerkUpdatedAt" <= excluded."clerkUpdatedAt""#,
            ),
            delete_membership: users.sql("DELETE FROM {memberships} WHERE id = $1"),
            upsert_membership: users.sql(
                r#"INSERT INTO {memberships} AS t (id, "organizationId", "userId", role,
                                                  "clerkCreatedAt", "clerkUpdatedAt",
                                                  "createdAt", "updatedAt")
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                   ON CONFLICT (id) DO UPDATE SET
                       "organizationId" = excluded."organizationId", "userId" = excluded."userId",
                       role = excluded.role, "clerkCreatedAt" = excluded."clerkCreatedAt",
                       "clerkUpdatedAt" = excluded."clerkUpdatedAt",
                       "updatedAt" = excluded."updatedAt"
                   WHERE t."clerkUpdatedAt" IS NULL OR t."clerkUpdatedAt" <= excluded."clerkUpdatedAt""#,
            ),
            // Its memberships go by the foreign key's ON DELETE CASCADE.
            delete_organization: users.sql("DELETE FROM {organizations} WHERE id = $1"),
            soft_delete_organization: users.sql(
                r#"UPDATE {organizations} SET "deletedAt" = $2, slug = NULL, "updatedAt" = $2
                   WHERE id = $1"#,
            ),
            memberships_of_organization: users
                .sql(r#"DELETE FROM {memberships} WHERE "organizationId" = $1"#),
            organization_tombstone: format!(
                "INSERT INTO {ns}organization_tombstones (organization_id, deleted_at)
                 VALUES ($1, $2) ON CONFLICT (organization_id) DO NOTHING"
            ),
            // A tombstone keeps the newest deletion's time.
            membership_tombstone: format!(
                "INSERT INTO {ns}membership_tombstones AS t
                     (membership_id, deleted_at_ms, organization_id, user_id, recorded_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (membership_id) DO UPDATE SET
                     deleted_at_ms = excluded.deleted_at_ms, recorded_at = excluded.recorded_at
                 WHERE t.deleted_at_ms < excluded.deleted_at_ms"
            ),
            memberships_of_user: users.sql(r#"DELETE FROM {memberships} WHERE "userId" = $1"#),
        }
    }

    /// The writes before the users' deletions: slugs given up, organizations, replaced
    /// memberships, memberships (organizations first: a membership's foreign key needs its
    /// organization).
    pub fn upserts<'a>(
        &'a self,
        writes: &'a OrganizationWrites,
        now: NaiveDateTime,
    ) -> Vec<Statement<'a>> {
        let mut statements = Vec::new();
        for (id, slug) in &writes.clear_slugs {
            statements.push(Statement {
                sql: &self.clear_slug,
                values: vec![
                    Value::Text(Some(id)),
                    Value::Text(Some(slug)),
                    Value::Time(Some(now)),
                ],
            });
        }
        for organization in &writes.organizations {
            statements.push(self.upsert_organization(organization, now));
        }
        for id in &writes.replaced_memberships {
            statements.push(Statement::by_id(&self.delete_membership, id, None));
        }
        for membership in &writes.memberships {
            statements.push(self.upsert_membership(membership, now));
        }
        statements
    }

    fn upsert_organization<'a>(
        &'a self,
        o: &'a OrganizationSnapshot,
        now: NaiveDateTime,
    ) -> Statement<'a> {
        Statement {
            sql: &self.upsert_organization,
            values: vec![
                Value::Text(Some(&o.id)),
                Value::Text(Some(&o.name)),
                Value::Text(o.slug.as_deref()),
                Value::Text(o.image_url.as_deref()),
                Value::Text(o.created_by.as_deref()),
                Value::Time(o.created_at.map(millis_to_datetime)),
                Value::Time(Some(millis_to_datetime(o.updated_at))),
                Value::Time(Some(now)),
            ],
        }
    }

    fn upsert_membership<'a>(
        &'a self,
        m: &'a MembershipSnapshot,
        now: NaiveDateTime,
    ) -> Statement<'a> {
        Statement {
            sql: &self.upsert_membership,
            values: vec![
                Value::Text(Some(&m.id)),
                Value::Text(Some(&m.organization.id)),
                Value::Text(Some(&m.user_id)),
                Value::Text(Some(&m.role)),
                Value::Time(m.created_at.map(millis_to_datetime)),
                Value::Time(Some(millis_to_datetime(m.updated_at))),
                Value::Time(Some(now)),
            ],
        }
    }

    /// The deletions, after the users' own: memberships of deleted users, deleted
    /// organizations (removed, or kept with `deletedAt` when `keep_rows`) and memberships, and
    /// their tombstones.
    pub fn deletions<'a>(
        &'a self,
        writes: &'a OrganizationWrites,
        deleted_users: &[&'a str],
        keep_rows: bool,
        now: NaiveDateTime,
    ) -> Vec<Statement<'a>> {
        let mut statements = Vec::new();
        for user_id in deleted_users {
            statements.push(Statement::by_id(&self.memberships_of_user, user_id, None));
        }
        for id in &writes.deleted_organizations {
            if keep_rows {
                statements.push(Statement::by_id(
                    &self.soft_delete_organization,
                    id,
                    Some(now),
                ));
                statements.push(Statement::by_id(
                    &self.memberships_of_organization,
                    id,
                    None,
                ));
            } else {
                statements.push(Statement::by_id(&self.delete_organization, id, None));
            }
        }
        for id in &writes.organization_tombstones {
            statements.push(Statement::by_id(
                &self.organization_tombstone,
                id,
                Some(now),
            ));
        }
        for id in &writes.deleted_memberships {
            statements.push(Statement::by_id(&self.delete_membership, id, None));
        }
        for tombstone in &writes.membership_tombstones {
            statements.push(Statement {
                sql: &self.membership_tombstone,
                values: vec![
                    Value::Text(Some(&tombstone.id)),
                    Value::Int(tombstone.at),
                    Value::Text(Some(&tombstone.organization_id)),
                    Value::Text(Some(&tombstone.user_id)),
                    Value::Time(Some(now)),
                ],
            });
        }
        statements
    }
}
