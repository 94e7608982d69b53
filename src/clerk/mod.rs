//! Clerk's side of the wire: the webhook event envelope, the user object as Clerk sends it, and
//! realistic sample events (for `trigger`, tests and load generation).

pub mod api;
pub mod event;
pub mod sample;
pub mod session;

pub use event::{ClerkEvent, EnvelopeError, EventKind, UserData, parse_event};
pub(crate) use event::{MembershipData, OrganizationData};
