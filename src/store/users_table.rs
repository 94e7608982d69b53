//! Where the app's users table is, and its name quoted for SQL.

/// Where the app's users table is: `users` by default; apps that named theirs differently set
/// `CLERK_SYNC_USERS_TABLE` (and, on PostgreSQL, `CLERK_SYNC_USERS_SCHEMA`). Index and
/// constraint names follow Prisma's pattern for that name (`<table>_pkey`, `<table>_email_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsersTable {
    schema: Option<String>,
    name: String,
    quoted: String,
}

impl Default for UsersTable {
    fn default() -> Self {
        UsersTable::new(None, "users").expect("the default name is valid")
    }
}

impl UsersTable {
    /// Names are restricted to letters, digits and underscores (quoted as given, so case
    /// counts, as with Prisma's `@@map`).
    pub fn new(schema: Option<&str>, name: &str) -> Result<UsersTable, String> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit())
        };
        if !valid(name) {
            return Err(format!(
                "CLERK_SYNC_USERS_TABLE = {name:?} is not a table name clerk-sync accepts: use \
                 letters, digits and underscores, e.g. users or AppUser"
            ));
        }
        let schema = schema.map(str::trim).filter(|s| !s.is_empty());
        if let Some(schema) = schema
            && !valid(schema)
        {
            return Err(format!(
                "CLERK_SYNC_USERS_SCHEMA = {schema:?} is not a schema name clerk-sync accepts: use \
                 letters, digits and underscores, e.g. app"
            ));
        }
        let quoted = match schema {
            Some(schema) => format!("\"{schema}\".\"{name}\""),
            None => format!("\"{name}\""),
        };
        Ok(UsersTable {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
            quoted,
        })
    }

    /// The table name as configured.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The schema, when one is configured (else the connection's current schema).
    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The quoted, schema-qualified identifier to put in SQL.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// A table of clerk-sync's that lives beside the users table (same schema), quoted.
    fn sibling(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{name}\""),
            None => format!("\"{name}\""),
        }
    }

    /// Fills a statement template: `{users}` is the table, `{table}` its bare name (for
    /// index and constraint names), `{organizations}` and `{memberships}` the organization
    /// tables, which live in the users table's schema under fixed names.
    pub(crate) fn sql(&self, template: &str) -> String {
        template
            .replace("{users}", &self.quoted)
            .replace("{table}", &self.name)
            .replace("{organizations}", &self.sibling("organizations"))
            .replace("{memberships}", &self.sibling("organization_memberships"))
    }
}
