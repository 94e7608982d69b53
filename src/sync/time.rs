//! Clerk's timestamps as the rules compare them.

/// Milliseconds since the Unix epoch, as Clerk stamps `created_at` / `updated_at`.
pub type ClerkMillis = i64;

/// Latest instant a Clerk timestamp may name (the end of year 9999), so it always fits a
/// `TIMESTAMP(3)` column.
const MAX_CLERK_MILLIS: ClerkMillis = 253_402_300_799_999;

/// Whether a Clerk timestamp can be stored: not before the epoch and within `TIMESTAMP(3)`.
pub(crate) fn valid_millis(t: ClerkMillis) -> bool {
    (0..=MAX_CLERK_MILLIS).contains(&t)
}
