//! The organization tables' side of the one transaction: what organization and membership
//! events read (round one) and write (round two), written once for both backends as statements
//! with their values; each backend sends them its own way (pipelined on PostgreSQL, one by one
//! on SQLite).

use std::collections::HashSet;

use chrono::NaiveDateTime;

use super::{UsersTable, datetime_to_millis, millis_to_datetime};
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
        $crate::store::organizations::LookupRow {
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

/// A row of `organizations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationRecord {
    /// Clerk's organization id (`org_…`), the primary key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The URL-friendly name (unique); `None` when unset, when a newer organization holds it,
    /// or once the organization is deleted.
    pub slug: Option<String>,
    /// Clerk's URL of the organization's logo (`imageUrl`).
    pub image_url: Option<String>,
    /// Id of the user who created it (`createdBy`, `user_…`).
    pub created_by: Option<String>,
    /// When Clerk created the organization (`clerkCreatedAt`, UTC).
    pub clerk_created_at: Option<NaiveDateTime>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`, UTC): the
    /// row's version, which only a newer snapshot replaces.
    pub clerk_updated_at: Option<NaiveDateTime>,
    /// When the row was first written (`createdAt`, UTC).
    pub created_at: NaiveDateTime,
    /// When the row was last written (`updatedAt`, UTC).
    pub updated_at: NaiveDateTime,
    /// Set when the organization was deleted but a foreign key of the app's kept its row (or
    /// soft delete is configured); `None` for a live organization.
    pub deleted_at: Option<NaiveDateTime>,
}

/// A row of `organization_memberships` with its organization's row, as a Prisma `include`
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRecord {
    /// Clerk's membership id (`orgmem_…`), the primary key.
    pub id: String,
    /// The organization's id (`organizationId`, `org_…`).
    pub organization_id: String,
    /// The member's user id (`userId`, `user_…`).
    pub user_id: String,
    /// Clerk's role key, e.g. `org:admin`.
    pub role: String,
    /// When the user joined the organization in Clerk (`clerkCreatedAt`, UTC).
    pub clerk_created_at: Option<NaiveDateTime>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`, UTC): the
    /// row's version, which only a newer snapshot replaces.
    pub clerk_updated_at: Option<NaiveDateTime>,
    /// When the row was first written (`createdAt`, UTC).
    pub created_at: NaiveDateTime,
    /// When the row was last written (`updatedAt`, UTC).
    pub updated_at: NaiveDateTime,
    /// The organization's row, as a Prisma `include` nests it.
    pub organization: OrganizationRecord,
}

/// An organization's row from a database row of either driver: `$id` names the id column and
/// `$p` prefixes the others (`""` for the table's own columns, `"o_"` where a join aliases them).
macro_rules! organization_record_from {
    ($row:expr, $id:literal, $p:literal) => {
        OrganizationRecord {
            id: $row.try_get($id)?,
            name: $row.try_get(concat!($p, "name"))?,
            slug: $row.try_get(concat!($p, "slug"))?,
            image_url: $row.try_get(concat!($p, "imageUrl"))?,
            created_by: $row.try_get(concat!($p, "createdBy"))?,
            clerk_created_at: $row.try_get(concat!($p, "clerkCreatedAt"))?,
            clerk_updated_at: $row.try_get(concat!($p, "clerkUpdatedAt"))?,
            created_at: $row.try_get(concat!($p, "createdAt"))?,
            updated_at: $row.try_get(concat!($p, "updatedAt"))?,
            deleted_at: $row.try_get(concat!($p, "deletedAt"))?,
        }
    };
}

/// A membership with its organization, from a row of [`user_memberships_sql`].
macro_rules! membership_record_from {
    ($row:expr) => {
        MembershipRecord {
            id: $row.try_get("id")?,
            organization_id: $row.try_get("organizationId")?,
            user_id: $row.try_get("userId")?,
            role: $row.try_get("role")?,
            clerk_created_at: $row.try_get("clerkCreatedAt")?,
            clerk_updated_at: $row.try_get("clerkUpdatedAt")?,
            created_at: $row.try_get("createdAt")?,
            updated_at: $row.try_get("updatedAt")?,
            organization: organization_record_from!($row, "organizationId", "o_"),
        }
    };
}

/// One organization's row (soft-deleted or not); `$1` its id.
const ORGANIZATION: &str = r#"SELECT id, name, slug, "imageUrl", "createdBy", "clerkCreatedAt",
    "clerkUpdatedAt", "createdAt", "updatedAt", "deletedAt" FROM {organizations} WHERE id = $1"#;

/// A user's memberships (`$1` the user id) with their organizations, newest first.
fn user_memberships_sql(users: &UsersTable) -> String {
    users.sql(
        r#"SELECT m.id, m."organizationId", m."userId", m.role, m."clerkCreatedAt",
                  m."clerkUpdatedAt", m."createdAt", m."updatedAt",
                  o.name AS o_name, o.slug AS o_slug, o."imageUrl" AS "o_imageUrl",
                  o."createdBy" AS "o_createdBy", o."clerkCreatedAt" AS "o_clerkCreatedAt",
                  o."clerkUpdatedAt" AS "o_clerkUpdatedAt", o."createdAt" AS "o_createdAt",
                  o."updatedAt" AS "o_updatedAt", o."deletedAt" AS "o_deletedAt"
           FROM {memberships} m JOIN {organizations} o ON o.id = m."organizationId"
           WHERE m."userId" = $1
           ORDER BY m."clerkCreatedAt" DESC NULLS LAST, m.id DESC"#,
    )
}

/// Ids of live organizations first written before `$1`.
fn live_organization_ids_sql(users: &UsersTable) -> String {
    users.sql(
        r#"SELECT id FROM {organizations} WHERE "deletedAt" IS NULL AND "createdAt" < $1 ORDER BY id"#,
    )
}

/// Memberships first written before `$1`: id, organization, user.
fn live_memberships_sql(users: &UsersTable) -> String {
    users.sql(
        r#"SELECT id, "organizationId", "userId" FROM {memberships} WHERE "createdAt" < $1 ORDER BY id"#,
    )
}

use super::{Store, StoreError, on_connection};

impl Store {
    /// An organization's row (soft-deleted or not), for `clerk-sync trigger`: an
    /// `organization.updated` it makes up starts from what the row holds.
    pub async fn organization(&self, id: &str) -> Result<Option<OrganizationRecord>, StoreError> {
        let sql = self.users.sql(ORGANIZATION);
        on_connection!(
            self,
            |client| async {
                client
                    .query_typed_opt(&sql, &[(&id, tokio_postgres::types::Type::TEXT)])
                    .await?
                    .map(|row| Ok(organization_record_from!(row, "id", "")))
                    .transpose()
                    .map_err(|e: tokio_postgres::Error| e)
            },
            |conn| async {
                use sqlx::Row;
                sqlx::query(&sql)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .map(|row| Ok(organization_record_from!(row, "id", "")))
                    .transpose()
                    .map_err(|e: sqlx::Error| e)
            }
        )
    }

    /// A user's memberships, each with its organization, newest first.
    pub async fn user_memberships(
        &self,
        user_id: &str,
    ) -> Result<Vec<MembershipRecord>, StoreError> {
        let sql = user_memberships_sql(&self.users);
        on_connection!(
            self,
            |client| async {
                client
                    .query_typed(&sql, &[(&user_id, tokio_postgres::types::Type::TEXT)])
                    .await?
                    .iter()
                    .map(|row| Ok(membership_record_from!(row)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            },
            |conn| async {
                use sqlx::Row;
                sqlx::query(&sql)
                    .bind(user_id)
                    .fetch_all(&mut *conn)
                    .await?
                    .iter()
                    .map(|row| Ok(membership_record_from!(row)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            }
        )
    }

    /// Ids of live organizations first written before `before` (candidates for
    /// reconciliation's deletion phase).
    pub(crate) async fn live_organization_ids(
        &self,
        before: NaiveDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let sql = live_organization_ids_sql(&self.users);
        on_connection!(
            self,
            |client| async {
                client
                    .query_typed(&sql, &[(&before, tokio_postgres::types::Type::TIMESTAMP)])
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<Vec<String>, tokio_postgres::Error>>()
            },
            |conn| sqlx::query_scalar(&sql).bind(before).fetch_all(&mut *conn)
        )
    }

    /// Memberships first written before `before`, as (id, organization id, user id).
    pub(crate) async fn live_memberships(
        &self,
        before: NaiveDateTime,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let sql = live_memberships_sql(&self.users);
        on_connection!(
            self,
            |client| async {
                client
                    .query_typed(&sql, &[(&before, tokio_postgres::types::Type::TIMESTAMP)])
                    .await?
                    .iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            },
            |conn| sqlx::query_as(&sql).bind(before).fetch_all(&mut *conn)
        )
    }
}
