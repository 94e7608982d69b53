//! Reading the tables back: the rows the receiver left, as the table check compares them
//! with what Clerk holds.

use std::collections::HashMap;

use anyhow::{Context, bail};
use chrono::NaiveDateTime;

/// A row of the users table; `deleted`: "deletedAt" is set.
pub(crate) struct Row {
    pub(crate) email: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) image_url: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) clerk_updated_at: Option<i64>,
    pub(crate) deleted: bool,
}

type RawRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
);

pub(crate) fn quoted_table(table: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = table.split('.').collect();
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
        bail!("--table {table:?}: use letters, digits and underscores, optionally schema.table");
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

pub(crate) async fn fetch_rows(url: &str, table: &str) -> anyhow::Result<HashMap<String, Row>> {
    let table = quoted_table(table)?;
    let columns =
        r#"id, email, "firstName", "lastName", name, "imageUrl", username, "clerkUpdatedAt""#;
    let with_deleted = format!(r#"SELECT {columns}, "deletedAt" IS NOT NULL FROM {table}"#);
    let without = format!("SELECT {columns} FROM {table}");
    let rows: Vec<(RawRow, bool)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url)
            .await
            .with_context(|| "cannot open the SQLite database")?;
        let flagged: Result<Vec<(String, i64)>, _> = sqlx::query_as(&format!(
            r#"SELECT id, "deletedAt" IS NOT NULL FROM {table}"#
        ))
        .fetch_all(&pool)
        .await;
        let flagged: HashMap<String, bool> = flagged
            .map(|v| v.into_iter().map(|(id, d)| (id, d != 0)).collect())
            .unwrap_or_default();
        let raw: Vec<RawRow> = sqlx::query_as(&without).fetch_all(&pool).await?;
        pool.close().await;
        raw.into_iter()
            .map(|r| {
                let deleted = flagged.get(&r.0).copied().unwrap_or(false);
                (r, deleted)
            })
            .collect()
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .with_context(|| "cannot connect to the PostgreSQL database")?;
        type Flagged = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<NaiveDateTime>,
            bool,
        );
        let rows = match sqlx::query_as::<_, Flagged>(&with_deleted)
            .fetch_all(&pool)
            .await
        {
            Ok(rows) => rows
                .into_iter()
                .map(|r| ((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7), r.8))
                .collect(),
            Err(_) => sqlx::query_as::<_, RawRow>(&without)
                .fetch_all(&pool)
                .await
                .with_context(|| format!("cannot read {table}"))?
                .into_iter()
                .map(|r| (r, false))
                .collect(),
        };
        pool.close().await;
        rows
    } else {
        bail!("--database-url must start with postgresql://, postgres:// or sqlite:");
    };
    Ok(rows
        .into_iter()
        .map(
            |((id, email, first, last, name, image, username, updated), deleted)| {
                (
                    id,
                    Row {
                        email,
                        first_name: first,
                        last_name: last,
                        name,
                        image_url: image,
                        username,
                        clerk_updated_at: updated.map(|t| t.and_utc().timestamp_millis()),
                        deleted,
                    },
                )
            },
        )
        .collect())
}

/// A row of `organizations`: name, slug, imageUrl, clerkUpdatedAt (ms), deleted.
pub(crate) type OrgRow = (String, Option<String>, Option<String>, Option<i64>, bool);
/// A row of `organization_memberships`: organizationId, userId, role, clerkUpdatedAt (ms).
pub(crate) type MemberRow = (String, String, String, Option<i64>);

type RawOrgRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);
type RawMemberRow = (String, String, String, String, Option<NaiveDateTime>);

/// The organization tables beside `table` (in its schema, if it names one).
fn organization_tables(table: &str) -> anyhow::Result<(String, String)> {
    let schema = table.rsplit_once('.').map(|(schema, _)| schema);
    let name = |t: &str| quoted_table(&schema.map_or(t.to_owned(), |s| format!("{s}.{t}")));
    Ok((name("organizations")?, name("organization_memberships")?))
}

pub(crate) async fn fetch_organization_rows(
    url: &str,
    table: &str,
) -> anyhow::Result<(HashMap<String, OrgRow>, HashMap<String, MemberRow>)> {
    let (organizations, memberships) = organization_tables(table)?;
    let org_sql = format!(
        r#"SELECT id, name, slug, "imageUrl", "clerkUpdatedAt", "deletedAt" FROM {organizations}"#
    );
    let member_sql = format!(
        r#"SELECT id, "organizationId", "userId", role, "clerkUpdatedAt" FROM {memberships}"#
    );
    let (orgs, members): (Vec<RawOrgRow>, Vec<RawMemberRow>) = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url)
            .await
            .with_context(|| "cannot open the SQLite database")?;
        let orgs = sqlx::query_as(&org_sql).fetch_all(&pool).await;
        let members = sqlx::query_as(&member_sql).fetch_all(&pool).await;
        pool.close().await;
        (
            orgs.with_context(|| format!("cannot read {organizations}"))?,
            members.with_context(|| format!("cannot read {memberships}"))?,
        )
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .with_context(|| "cannot connect to the PostgreSQL database")?;
        let orgs = sqlx::query_as(&org_sql).fetch_all(&pool).await;
        let members = sqlx::query_as(&member_sql).fetch_all(&pool).await;
        pool.close().await;
        (
            orgs.with_context(|| format!("cannot read {organizations}"))?,
            members.with_context(|| format!("cannot read {memberships}"))?,
        )
    };
    let ms = |t: Option<NaiveDateTime>| t.map(|t| t.and_utc().timestamp_millis());
    Ok((
        orgs.into_iter()
            .map(|(id, name, slug, image, updated, deleted)| {
                (id, (name, slug, image, ms(updated), deleted.is_some()))
            })
            .collect(),
        members
            .into_iter()
            .map(|(id, org, user, role, updated)| (id, (org, user, role, ms(updated))))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_or_refused() {
        assert_eq!(quoted_table("users").expect("plain"), r#""users""#);
        assert_eq!(
            quoted_table("app.users_2").expect("with schema"),
            r#""app"."users_2""#
        );
        for bad in ["", "a.b.c", "users;drop", r#"us"ers"#, "app.", ".users"] {
            let e = quoted_table(bad).expect_err(bad).to_string();
            assert!(e.starts_with("--table"), "{e}");
        }
        assert_eq!(
            organization_tables("app.users").expect("with schema"),
            (
                r#""app"."organizations""#.to_owned(),
                r#""app"."organization_memberships""#.to_owned()
            )
        );
        assert_eq!(
            organization_tables("users").expect("plain").0,
            r#""organizations""#
        );
    }
}
