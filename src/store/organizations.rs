//! The organization tables as the app reads them: their rows as values, and the reads of the
//! current-user API, `clerk-sync trigger` and reconciliation.

use chrono::NaiveDateTime;
use serde::Serialize;

use super::error::StoreError;
use super::handle::{Store, on_connection};
use super::records::prisma_time;
use super::users_table::UsersTable;

/// A row of `organizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
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
    #[serde(serialize_with = "prisma_time::option")]
    pub clerk_created_at: Option<NaiveDateTime>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`, UTC): the
    /// row's version, which only a newer snapshot replaces.
    #[serde(serialize_with = "prisma_time::option")]
    pub clerk_updated_at: Option<NaiveDateTime>,
    /// When the row was first written (`createdAt`, UTC).
    #[serde(serialize_with = "prisma_time::required")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (`updatedAt`, UTC).
    #[serde(serialize_with = "prisma_time::required")]
    pub updated_at: NaiveDateTime,
    /// Set when the organization was deleted but a foreign key of the app's kept its row (or
    /// soft delete is configured); `None` for a live organization.
    #[serde(serialize_with = "prisma_time::option")]
    pub deleted_at: Option<NaiveDateTime>,
}

/// A row of `organization_memberships` with its organization's row, as a Prisma `include`
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
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
    #[serde(serialize_with = "prisma_time::option")]
    pub clerk_created_at: Option<NaiveDateTime>,
    /// `updated_at` of the snapshot the row was last written from (`clerkUpdatedAt`, UTC): the
    /// row's version, which only a newer snapshot replaces.
    #[serde(serialize_with = "prisma_time::option")]
    pub clerk_updated_at: Option<NaiveDateTime>,
    /// When the row was first written (`createdAt`, UTC).
    #[serde(serialize_with = "prisma_time::required")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (`updatedAt`, UTC).
    #[serde(serialize_with = "prisma_time::required")]
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
