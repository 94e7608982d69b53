//! What store operations fail with, and what a database said when it refused or failed, in one
//! type for both backends, with what that means for the event (try again, store it as failed, or
//! give up for now).
//!
//! Displayed without the values a statement carried: PostgreSQL's `DETAIL` repeats them
//! ("Key (email)=(…) already exists"), and they are personal data (README rule 8).

use std::fmt;
use std::time::Duration;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed in a way a later attempt can get past.
    #[error("database unavailable: {0}")]
    Unavailable(DatabaseError),
    /// The database was away for a batch of webhook events: each event of the batch carries
    /// the same error.
    #[error("database unavailable: {0}")]
    UnavailableForBatch(std::sync::Arc<DatabaseError>),
    /// An operation took longer than the configured database timeout.
    #[error("database did not answer within {0:?}")]
    TimedOut(Duration),
    /// The database refused the user's data itself (e.g. a NUL character in a name).
    #[error("{0}")]
    Rejected(String),
    /// Configuration or schema problems a person has to fix; the text says how.
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    /// For `map_err`: the database could not do what was asked.
    pub(crate) fn unavailable(error: impl Into<DriverError>) -> StoreError {
        StoreError::Unavailable(DatabaseError::new(error.into()))
    }

    /// The configuration is wrong: `message` says what and how to fix it.
    pub(crate) fn setup(message: impl Into<String>) -> StoreError {
        StoreError::Setup(message.into())
    }
}

/// What the database or its driver said when an operation failed, displayed without the
/// values the statement carried. Opaque: its text is for people, and the driver behind it is
/// clerk-sync's business.
#[derive(Debug)]
pub struct DatabaseError(DriverError);

impl DatabaseError {
    pub(crate) fn new(driver: DriverError) -> DatabaseError {
        DatabaseError(driver)
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DatabaseError {}

/// An error from the database or its driver, as the crate handles it: converted from each
/// driver's error by `?`, so those conversions stay inside the crate rather than on
/// [`DatabaseError`].
#[derive(Debug)]
pub(crate) struct DriverError(Inner);

#[derive(Debug)]
enum Inner {
    Postgres(tokio_postgres::Error),
    /// No connection could be had from the pool (its wait timed out, or it is closed).
    Pool(String),
    /// SQLite (and, until every PostgreSQL statement moves to tokio-postgres, sqlx's PostgreSQL).
    Sqlx(sqlx::Error),
}

/// What a database error says about the event and about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Lost to a concurrent transaction, or ran on a connection the server had closed (Neon
    /// suspends idle computes and closes their connections): another attempt, on another
    /// connection, gives a different result.
    LostRace,
    /// A unique index refused a value: a lost race once, the event's data when it recurs.
    UniqueViolation,
    /// The values themselves (NUL in text, out of range, too long for an index, against a
    /// constraint): no attempt can succeed, so the event is stored as failed and answered 200.
    Data,
    /// Anything else: the database is away or not as expected; the sender should try later.
    Unavailable,
}

impl DriverError {
    pub(crate) fn pool(message: impl Into<String>) -> DriverError {
        DriverError(Inner::Pool(message.into()))
    }

    /// What this error means for the event (see [`Refusal`]).
    pub(crate) fn refusal(&self) -> Refusal {
        match &self.0 {
            Inner::Postgres(error) => match error.code() {
                Some(code) => postgres_refusal(code.code()),
                // The connection broke or was closed under the transaction.
                None if error.is_closed() || io_error(error) => Refusal::LostRace,
                None => Refusal::Unavailable,
            },
            Inner::Pool(_) => Refusal::Unavailable,
            Inner::Sqlx(sqlx::Error::Io(_)) => Refusal::LostRace,
            Inner::Sqlx(error) => match error.as_database_error() {
                // SQLite's codes are numbers (its extended result codes); only for SQLite:
                // some SQLSTATEs are digits too.
                Some(db) if is_sqlite(db) => db
                    .code()
                    .and_then(|code| code.parse().ok())
                    .map_or(Refusal::Unavailable, sqlite_refusal),
                Some(db) => postgres_refusal(&db.code().unwrap_or_default()),
                None => Refusal::Unavailable,
            },
        }
    }

    /// The database answered and refused the statement (as opposed to being unreachable).
    pub(crate) fn is_refusal_by_database(&self) -> bool {
        match &self.0 {
            Inner::Postgres(error) => error.as_db_error().is_some(),
            Inner::Pool(_) => false,
            Inner::Sqlx(error) => error.as_database_error().is_some(),
        }
    }

    /// After retrying: the database refused the values themselves, so no retry can fix that
    /// event.
    pub(crate) fn is_rejected_data(&self) -> bool {
        matches!(self.refusal(), Refusal::Data | Refusal::UniqueViolation)
    }

    /// A foreign key refused the statement. SQLite reports `ON DELETE RESTRICT` as a trigger
    /// constraint (extended code 1811), not as a foreign key one, but in the same words.
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        match &self.0 {
            Inner::Postgres(error) => error
                .code()
                .is_some_and(|c| *c == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
            Inner::Pool(_) => false,
            Inner::Sqlx(error) => error.as_database_error().is_some_and(|db| {
                matches!(db.kind(), sqlx::error::ErrorKind::ForeignKeyViolation)
                    || db.message().contains("FOREIGN KEY constraint failed")
            }),
        }
    }

    /// The SQLSTATE (PostgreSQL) or extended result code (SQLite).
    pub(crate) fn code(&self) -> Option<String> {
        match &self.0 {
            Inner::Postgres(error) => error.code().map(|c| c.code().to_owned()),
            Inner::Pool(_) => None,
            Inner::Sqlx(error) => error
                .as_database_error()
                .and_then(|db| db.code())
                .map(|c| c.into_owned()),
        }
    }

    /// The constraint that refused the statement, when the database names it.
    pub(crate) fn constraint(&self) -> Option<&str> {
        match &self.0 {
            Inner::Postgres(error) => error.as_db_error().and_then(|db| db.constraint()),
            Inner::Pool(_) => None,
            Inner::Sqlx(error) => error.as_database_error().and_then(|db| db.constraint()),
        }
    }

    /// The table the refused statement was about, when the database names it.
    pub(crate) fn table(&self) -> Option<&str> {
        match &self.0 {
            Inner::Postgres(error) => error.as_db_error().and_then(|db| db.table()),
            Inner::Pool(_) => None,
            Inner::Sqlx(error) => error.as_database_error().and_then(|db| db.table()),
        }
    }

    /// Why the database refused an event, for people: its words, and which constraint and
    /// code. Never the values (they are personal data, or the very thing refused).
    pub(crate) fn refusal_reason(&self) -> String {
        let code = match (&self.0, self.code()) {
            (_, None) => return format!("the database refused the event's data: {self}"),
            (Inner::Sqlx(error), Some(code))
                if error.as_database_error().is_some_and(is_sqlite) =>
            {
                format!("SQLite code {code}")
            }
            (_, Some(code)) => format!("SQLSTATE {code}"),
        };
        let message = match &self.0 {
            Inner::Postgres(error) => error
                .as_db_error()
                .map_or_else(|| error.to_string(), |db| db.message().to_owned()),
            Inner::Sqlx(error) => error
                .as_database_error()
                .map_or_else(|| error.to_string(), |db| db.message().to_owned()),
            Inner::Pool(message) => message.clone(),
        };
        match self.constraint() {
            Some(constraint) => format!(
                "the database refused the event's data: {message} (constraint {constraint}, {code})"
            ),
            None => format!("the database refused the event's data: {message} ({code})"),
        }
    }
}

fn is_sqlite(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
}

fn io_error(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Postgres(error) => match error.as_db_error() {
                // Severity, message and code; never DETAIL, which quotes the values.
                Some(db) => {
                    write!(
                        f,
                        "{}: {} (SQLSTATE {}",
                        db.severity(),
                        db.message(),
                        db.code().code()
                    )?;
                    if let Some(constraint) = db.constraint() {
                        write!(f, ", constraint {constraint}")?;
                    }
                    f.write_str(")")
                }
                // tokio-postgres leaves the cause out of its own text.
                None => {
                    write!(f, "{error}")?;
                    let mut source = std::error::Error::source(error);
                    while let Some(cause) = source {
                        write!(f, ": {cause}")?;
                        source = cause.source();
                    }
                    Ok(())
                }
            },
            Inner::Pool(message) => f.write_str(message),
            Inner::Sqlx(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for DriverError {}

impl From<tokio_postgres::Error> for DriverError {
    fn from(error: tokio_postgres::Error) -> Self {
        DriverError(Inner::Postgres(error))
    }
}

impl From<sqlx::Error> for DriverError {
    fn from(error: sqlx::Error) -> Self {
        DriverError(Inner::Sqlx(error))
    }
}

impl From<deadpool_postgres::PoolError> for DriverError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match error {
            PoolError::Backend(error) => DriverError(Inner::Postgres(error)),
            PoolError::Timeout(_) => DriverError::pool(
                "no database connection became free in time: all of the pool's connections are \
                 in use (raise CLERK_SYNC_DB_MAX_CONNECTIONS if the database allows more)",
            ),
            other => DriverError::pool(format!("no database connection: {other}")),
        }
    }
}

/// PostgreSQL's SQLSTATE: classes 22 (data exception, e.g. 22021 for a NUL character), 23
/// (integrity constraint violation) and 54 (program limit exceeded, e.g. 54000 for a value too
/// long for a btree index) are about the data.
pub(crate) fn postgres_refusal(sqlstate: &str) -> Refusal {
    match sqlstate {
        // serialization_failure, deadlock_detected, lock_not_available, and the server
        // terminating the connection (admin_shutdown, e.g. a compute suspended)
        "40001" | "40P01" | "55P03" | "57P01" => Refusal::LostRace,
        "23505" => Refusal::UniqueViolation,
        _ if ["22", "23", "54"]
            .iter()
            .any(|class| sqlstate.starts_with(class)) =>
        {
            Refusal::Data
        }
        _ => Refusal::Unavailable,
    }
}

/// SQLite's extended result code: its low byte is the primary code.
pub(crate) fn sqlite_refusal(code: i32) -> Refusal {
    match code {
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
        2067 | 1555 => Refusal::UniqueViolation,
        _ => match code & 0xff {
            // SQLITE_BUSY, SQLITE_LOCKED
            5 | 6 => Refusal::LostRace,
            // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH
            18..=20 => Refusal::Data,
            _ => Refusal::Unavailable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_about_the_data_are_told_from_a_database_away_or_a_lost_race() {
        for (sqlstate, refusal) in [
            ("22021", Refusal::Data), // NUL in text
            ("22008", Refusal::Data), // timestamp out of range
            ("23514", Refusal::Data), // an app's CHECK constraint
            ("23503", Refusal::Data), // foreign key
            ("54000", Refusal::Data), // index row size exceeds btree maximum
            ("23505", Refusal::UniqueViolation),
            ("40001", Refusal::LostRace),
            ("40P01", Refusal::LostRace),
            ("55P03", Refusal::LostRace),
            ("57P01", Refusal::LostRace),
            ("57P03", Refusal::Unavailable), // cannot_connect_now
            ("53300", Refusal::Unavailable), // too_many_connections
            ("42P01", Refusal::Unavailable), // undefined_table: a person has to fix it
            ("XX000", Refusal::Unavailable),
        ] {
            assert_eq!(postgres_refusal(sqlstate), refusal, "SQLSTATE {sqlstate}");
        }
        for (code, refusal) in [
            (2067, Refusal::UniqueViolation), // SQLITE_CONSTRAINT_UNIQUE
            (1555, Refusal::UniqueViolation), // SQLITE_CONSTRAINT_PRIMARYKEY
            (275, Refusal::Data),             // SQLITE_CONSTRAINT_CHECK
            (787, Refusal::Data),             // SQLITE_CONSTRAINT_FOREIGNKEY
            (18, Refusal::Data),              // SQLITE_TOOBIG
            (20, Refusal::Data),              // SQLITE_MISMATCH
            (5, Refusal::LostRace),           // SQLITE_BUSY
            (517, Refusal::LostRace),         // SQLITE_BUSY_SNAPSHOT
            (6, Refusal::LostRace),           // SQLITE_LOCKED
            (10, Refusal::Unavailable),       // SQLITE_IOERR
            (13, Refusal::Unavailable),       // SQLITE_FULL
        ] {
            assert_eq!(sqlite_refusal(code), refusal, "SQLite code {code}");
        }
    }
}
