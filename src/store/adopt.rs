//! Adopting the table an existing app already has, so moving the webhook work to clerk-sync
//! loses no row: the design's recommended `users` table as Prisma created it (email required,
//! no `deletedAt`), or the design's older `User` table (fewer columns, Prisma's default
//! name). Each is altered into the contract of `prisma/schema.prisma`, in the migration's
//! transaction; anything clerk-sync does not understand is refused, untouched.
//!
//! Columns the app added for itself (a `role`, a `plan`) are kept and never written: every
//! statement names the model's columns. So a new user's row gets their default or NULL, and one
//! that is NOT NULL without a default would make every insert fail; such a column is refused
//! here, and on every later migration run (the app may add it after clerk-sync created the
//! table), with the statement that fixes it.

use sqlx::SqliteConnection;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::error::{DriverError, StoreError};
use super::users_table::UsersTable;

/// A column of the contract: name, SQL type, type as `information_schema` reports it.
const CONTRACT: [(&str, &str, &str); 12] = [
    ("id", "TEXT", "text"),
    ("email", "TEXT", "text"),
    ("firstName", "TEXT", "text"),
    ("lastName", "TEXT", "text"),
    ("name", "TEXT", "text"),
    ("imageUrl", "TEXT", "text"),
    ("username", "TEXT", "text"),
    (
        "clerkCreatedAt",
        "TIMESTAMP(3)",
        "timestamp(3) without time zone",
    ),
    (
        "clerkUpdatedAt",
        "TIMESTAMP(3)",
        "timestamp(3) without time zone",
    ),
    (
        "createdAt",
        "TIMESTAMP(3)",
        "timestamp(3) without time zone",
    ),
    (
        "updatedAt",
        "TIMESTAMP(3)",
        "timestamp(3) without time zone",
    ),
    (
        "deletedAt",
        "TIMESTAMP(3)",
        "timestamp(3) without time zone",
    ),
];

/// What adopting an existing table does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adoption {
    /// One line per change, and per column of the app's own kept as it is, for people.
    pub changes: Vec<String>,
    statements: Vec<String>,
}

struct Column {
    name: String,
    data_type: String,
    nullable: bool,
}

async fn columns(
    client: &Client,
    schema: Option<&str>,
    table: &str,
) -> Result<Vec<Column>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT column_name::text AS name,
                CASE WHEN data_type = 'timestamp without time zone'
                     THEN format('timestamp(%s) without time zone', datetime_precision)
                     ELSE data_type::text END AS data_type,
                is_nullable = 'YES' AS nullable
         FROM information_schema.columns
         WHERE table_schema = coalesce($2, current_schema()) AND table_name = $1
         ORDER BY ordinal_position",
            &[(&table, Type::TEXT), (&schema, Type::TEXT)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Column {
                name: r.try_get("name")?,
                data_type: r.try_get("data_type")?,
                nullable: r.try_get("nullable")?,
            })
        })
        .collect()
}

async fn indexes(
    client: &Client,
    schema: Option<&str>,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    client
        .query_typed(
            "SELECT indexname::text FROM pg_indexes
             WHERE schemaname = coalesce($2, current_schema()) AND tablename = $1",
            &[(&table, Type::TEXT), (&schema, Type::TEXT)],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

fn is_model_column(name: &str) -> bool {
    CONTRACT.iter().any(|(column, _, _)| *column == name)
}

/// The app's own columns that an insert naming only the model's columns cannot fill: NOT NULL
/// (on the column or through its domain) with no default, identity or generated value.
async fn unfilled_app_columns(
    client: &Client,
    schema: Option<&str>,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let model: Vec<&str> = CONTRACT.iter().map(|(name, _, _)| *name).collect();
    client
        .query_typed(
            "SELECT a.attname::text
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_type t ON t.oid = a.atttypid
         WHERE n.nspname = coalesce($2, current_schema()) AND c.relname = $1
           AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL($3)
           AND (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull))
           AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
           AND NOT (t.typtype = 'd' AND t.typdefault IS NOT NULL)
         ORDER BY a.attnum",
            &[
                (&table, Type::TEXT),
                (&schema, Type::TEXT),
                (&model, Type::TEXT_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

/// What is wrong with such columns, and the statements that fix it.
fn unfilled_problem(quoted: &str, columns: &[String]) -> (String, String) {
    let names = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (problem, them) = match columns {
        [_] => (
            format!("column {names} is NOT NULL without a default"),
            "it",
        ),
        _ => (
            format!("columns {names} are NOT NULL without a default"),
            "each",
        ),
    };
    let fixes = columns
        .iter()
        .map(|c| {
            format!(
                "`ALTER TABLE {quoted} ALTER COLUMN \"{c}\" SET DEFAULT <value>` (or `ALTER TABLE \
                 {quoted} ALTER COLUMN \"{c}\" DROP NOT NULL`)"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let fix = format!(
        "clerk-sync never writes the app's own columns, so inserting a new user would fail and \
         Clerk would keep redelivering that user's event. Give {them} a default or allow \
         NULL: {fixes}, then run `clerk-sync migrate` again."
    );
    (problem, fix)
}

/// Refuses a users table clerk-sync already manages that has such columns.
fn refuse_unfilled(target: &UsersTable, columns: &[String]) -> Result<(), StoreError> {
    if columns.is_empty() {
        return Ok(());
    }
    let quoted = target.quoted();
    let (problem, fix) = unfilled_problem(quoted, columns);
    Err(StoreError::Setup(format!(
        "the {quoted} table's {problem}: {fix} Nothing was changed."
    )))
}

/// Refuses a users table clerk-sync already manages when the app has since added a column
/// that nothing fills (see [`unfilled_app_columns`]); a missing table passes.
pub(super) async fn check_app_columns(
    client: &Client,
    target: &UsersTable,
) -> Result<(), StoreError> {
    let unfilled = unfilled_app_columns(client, target.schema(), target.name())
        .await
        .map_err(StoreError::unavailable)?;
    refuse_unfilled(target, &unfilled)
}

/// [`check_app_columns`] on SQLite. Its `ALTER TABLE` cannot add such a column, but a table
/// rebuilt by a tool (Prisma Migrate redefines SQLite tables that way) can have one.
pub(super) async fn check_app_columns_sqlite(
    conn: &mut SqliteConnection,
    target: &UsersTable,
) -> Result<(), StoreError> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM pragma_table_info($1) WHERE \"notnull\" AND dflt_value IS NULL",
    )
    .bind(target.name())
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::unavailable)?;
    let unfilled: Vec<String> = columns
        .into_iter()
        .filter(|c| !is_model_column(c))
        .collect();
    refuse_unfilled(target, &unfilled)
}

/// Why an existing table is not adopted, and what to do about it.
fn refusal(
    table: &str,
    quoted: &str,
    mut problems: Vec<String>,
    unfilled: &[String],
) -> StoreError {
    let mut advice = Vec::new();
    if !problems.is_empty() {
        advice.push(
            "It adopts the design's recommended users table and its older User table (see \
             prisma/schema.prisma), plus columns of the app's own that allow NULL or have a \
             default. Adjust the table, or point DATABASE_URL at a database without it."
                .to_string(),
        );
    }
    if !unfilled.is_empty() {
        let (problem, fix) = unfilled_problem(quoted, unfilled);
        problems.push(problem);
        advice.push(fix);
    }
    StoreError::Setup(format!(
        "the existing \"{table}\" table is not one clerk-sync knows how to adopt: {}. {} Nothing \
         was changed.",
        problems.join("; "),
        advice.join(" ")
    ))
}

/// Looks at what the database has. `None`: there is no table to adopt (create it). An error:
/// there is something clerk-sync does not understand, described so a person can decide.
pub(super) async fn plan(
    client: &Client,
    target: &UsersTable,
) -> Result<Option<Adoption>, StoreError> {
    let unavailable = |e: tokio_postgres::Error| StoreError::unavailable(e);
    let schema = target.schema();
    let name = target.name();
    let users = columns(client, schema, name).await.map_err(unavailable)?;
    // The design's older model is Prisma's default table name for model User.
    let legacy = if name == "users" {
        columns(client, schema, "User").await.map_err(unavailable)?
    } else {
        Vec::new()
    };
    let (table, existing) = match (users.is_empty(), legacy.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {
            return Err(StoreError::Setup(
                "the database has both a \"users\" and a \"User\" table; clerk-sync cannot tell \
                 which one the app uses. Merge or drop one of them, then run `clerk-sync migrate` \
                 again. Nothing was changed."
                    .into(),
            ));
        }
        (false, true) => (name, users),
        (true, false) => ("User", legacy),
    };
    let quoted = target.quoted();
    let qualify = |name: &str| match schema {
        Some(schema) => format!("\"{schema}\".\"{name}\""),
        None => format!("\"{name}\""),
    };

    let mut problems = Vec::new();
    let mut app_columns = Vec::new();
    for column in &existing {
        match CONTRACT.iter().find(|(name, _, _)| *name == column.name) {
            None => app_columns.push(&column.name),
            Some((_, _, expected)) if *expected != column.data_type => problems.push(format!(
                "column \"{}\" is {}, the model has {expected}",
                column.name, column.data_type
            )),
            Some(_) => {}
        }
    }
    if existing.iter().any(|c| c.name == "id" && c.nullable) {
        problems.push("column \"id\" allows NULL".into());
    }
    if !existing.iter().any(|c| c.name == "id") {
        problems.push("there is no \"id\" column".into());
    }
    let unfilled = unfilled_app_columns(client, schema, table)
        .await
        .map_err(unavailable)?;
    if !problems.is_empty() || !unfilled.is_empty() {
        return Err(refusal(table, &qualify(table), problems, &unfilled));
    }

    let mut adoption = Adoption::default();
    let mut change = |description: String, statement: String| {
        adoption.changes.push(description);
        adoption.statements.push(statement);
    };
    if table == "User" {
        change(
            "rename table \"User\" to \"users\" (the recommended model's @@map(\"users\"))".into(),
            format!(r#"ALTER TABLE {} RENAME TO "users""#, qualify("User")),
        );
        let have = indexes(client, schema, "User").await.map_err(unavailable)?;
        for (old, new) in [
            ("User_pkey", "users_pkey"),
            ("User_email_key", "users_email_key"),
            ("User_email_idx", "users_email_idx"),
        ] {
            if have.iter().any(|i| i == old) {
                change(
                    format!("rename index \"{old}\" to \"{new}\""),
                    format!(r#"ALTER INDEX {} RENAME TO "{new}""#, qualify(old)),
                );
            }
        }
    }
    for (column, sql_type, _) in CONTRACT {
        if !existing.iter().any(|c| c.name == column) {
            change(
                format!("add column \"{column}\" {sql_type}"),
                format!(r#"ALTER TABLE {quoted} ADD COLUMN "{column}" {sql_type}"#),
            );
        }
    }
    if existing.iter().any(|c| c.name == "email" && !c.nullable) {
        change(
            "allow NULL in \"email\" (users who signed up with a phone number, a username or a wallet have none)".into(),
            format!(r#"ALTER TABLE {quoted} ALTER COLUMN "email" DROP NOT NULL"#),
        );
    }
    let have = indexes(client, schema, table).await.map_err(unavailable)?;
    for (suffix, unique, column) in [
        ("email_key", "UNIQUE ", "email"),
        ("email_idx", "", "email"),
        ("username_key", "UNIQUE ", "username"),
        ("username_idx", "", "username"),
    ] {
        let index = format!("{name}_{suffix}");
        let legacy_index = format!("User_{suffix}");
        if !have.iter().any(|i| *i == index || *i == legacy_index) {
            change(
                format!("create index \"{index}\""),
                format!(r#"CREATE {unique}INDEX "{index}" ON {quoted}("{column}")"#),
            );
        }
    }
    // Said, not done: nothing to run, but a person reading the plan should see them.
    for column in app_columns {
        adoption.changes.push(format!(
            "keep column \"{column}\" as the app's own (clerk-sync never writes it)"
        ));
    }
    Ok(Some(adoption))
}

/// Applies an adoption inside the caller's transaction. The statements are DDL without
/// values (names only), sent as they are.
pub(super) async fn apply(client: &Client, adoption: &Adoption) -> Result<(), StoreError> {
    for statement in &adoption.statements {
        client.batch_execute(statement).await.map_err(|e| {
            StoreError::Setup(format!(
                "adopting the existing table failed at `{statement}`: {}",
                DriverError::from(e)
            ))
        })?;
    }
    Ok(())
}
