//! Clerk's users while the stream is built: who they are, how their profiles change, and
//! Clerk's rule that an email or username belongs to one user at a time.

use rand::RngExt;
use rand::rngs::StdRng;

use clerk_sync::clerk::sample::{self, SampleUser};

use crate::model::Kind;
use crate::random::{Bag, pick, seeded_id};

const FIRST_NAMES: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Yasmin", "Mei",
    "Ana", "Liam", "Noah", "Emma", "Ava", "Mia", "Lucas",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Lopez",
    "Schmidt",
    "Nguyen",
    "Kowalski",
    "O'Brien",
    "Andersen",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Kim",
    "Silva",
];
const INTL_FIRST_NAMES: &[&str] = &[
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Chloé",
    "Amélie",
    "Björn",
    "Inés",
    "Jürgen",
    "François",
    "Ångström",
    "Dvořák",
    "Юлия",
    "Дмитрий",
    "美咲",
    "翔太",
    "محمد",
    "Αλέξανδρος",
    "Nguyễn",
    "Şebnem",
];
const INTL_LAST_NAMES: &[&str] = &[
    "Müller",
    "Hernández",
    "Øberg",
    "Novák",
    "García-López",
    "Żółkiewski",
    "Иванова",
    "佐藤",
    "김",
    "Ødegård",
    "Çelik",
    "Papadopoulos",
    "Smith",
];

/// Lower-case ASCII letters and digits of a name, for emails and usernames.
fn slug(s: Option<&str>) -> String {
    let out: String = s
        .unwrap_or("user")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if out.is_empty() { "user".into() } else { out }
}

/// How the stream's users look: the command line's fractions.
#[derive(Clone, Copy)]
pub(crate) struct Profiles {
    pub(crate) no_email: f64,
    pub(crate) non_ascii: f64,
    pub(crate) move_emails: f64,
    /// Keeps a stream's emails and usernames apart from another's (warm-up vs. main run).
    pub(crate) tag: &'static str,
}

/// Clerk's users while the stream is built.
pub(crate) struct UserWorld {
    profiles: Profiles,
    /// Each user's current snapshot (`None` until created).
    snapshots: Vec<Option<SampleUser>>,
    deleted: Vec<bool>,
    /// Users created and not deleted.
    live: Bag<usize>,
    /// Addresses a user gave up (changed or deleted), free for another user to take.
    released_emails: Vec<String>,
    versions: Vec<u32>,
    moved_emails: usize,
}

impl UserWorld {
    pub(crate) fn new(profiles: Profiles, users: usize) -> Self {
        UserWorld {
            profiles,
            snapshots: vec![None; users],
            deleted: vec![false; users],
            live: Bag::default(),
            released_emails: Vec::new(),
            versions: vec![0; users],
            moved_emails: 0,
        }
    }

    /// User `index`'s next event, of `kind`, at `ts`: its body. A deleted user leaves the
    /// live users here; their memberships are the organizations' part.
    pub(crate) fn event(&mut self, rng: &mut StdRng, index: usize, kind: Kind, ts: i64) -> String {
        match kind {
            Kind::Created => {
                let new = self.new_user(rng, index, ts);
                let body = sample::user_created(&new);
                self.snapshots[index] = Some(new);
                self.live.insert(index);
                body
            }
            Kind::Updated => {
                let mut current = self.snapshots[index].take().expect("created first");
                self.mutate(rng, &mut current, index, ts);
                let body = sample::user_updated(&current);
                self.snapshots[index] = Some(current);
                body
            }
            _ => {
                let current = self.snapshots[index].as_ref().expect("created first");
                self.deleted[index] = true;
                if self.profiles.move_emails > 0.0
                    && let Some(email) = &current.email
                {
                    self.released_emails.push(email.clone());
                }
                self.live.remove(index);
                sample::user_deleted(&current.id, ts)
            }
        }
    }

    /// Users created and not deleted.
    pub(crate) fn live(&self) -> &Bag<usize> {
        &self.live
    }

    /// The id of a live user.
    pub(crate) fn id(&self, index: usize) -> &str {
        &self.snapshots[index].as_ref().expect("live").id
    }

    /// Email changes that took an address another user had given up.
    pub(crate) fn moved_emails(&self) -> usize {
        self.moved_emails
    }

    /// Clerk's last snapshot of every user, and who was deleted.
    pub(crate) fn finish(self) -> (Vec<SampleUser>, Vec<bool>) {
        let users = self
            .snapshots
            .into_iter()
            .map(|u| u.expect("every user is created"))
            .collect();
        (users, self.deleted)
    }

    fn new_user(&mut self, rng: &mut StdRng, index: usize, ts: i64) -> SampleUser {
        let tag = self.profiles.tag;
        let id = seeded_id(rng, "user");
        let mut user = SampleUser::new(id, ts);
        let intl = rng.random_bool(self.profiles.non_ascii);
        let (firsts, lasts) = if intl {
            (INTL_FIRST_NAMES, INTL_LAST_NAMES)
        } else {
            (FIRST_NAMES, LAST_NAMES)
        };
        let no_names = rng.random_bool(0.05);
        user.first_name = (!no_names).then(|| pick(rng, firsts).to_owned());
        user.last_name = (!no_names && !rng.random_bool(0.1)).then(|| pick(rng, lasts).to_owned());
        let base = slug(user.first_name.as_deref());
        user.email = (!rng.random_bool(self.profiles.no_email)).then(|| {
            format!(
                "{base}.{}.{tag}{index}@example.com",
                slug(user.last_name.as_deref())
            )
        });
        user.username = (!rng.random_bool(0.2)).then(|| format!("{base}{tag}{index}"));
        let tail = user.id.trim_start_matches("user_").to_owned();
        user.image_url = if rng.random_bool(0.6) {
            format!("https://img.clerk.com/eyJ0eXBlIjoicHJveHkiLCJzcmMiOiJ{tail}v0")
        } else {
            format!("https://img.clerk.com/{tail}/default")
        };
        user
    }

    /// A realistic profile change, as a user.updated reports it.
    fn mutate(&mut self, rng: &mut StdRng, user: &mut SampleUser, index: usize, ts: i64) {
        let tag = self.profiles.tag;
        self.versions[index] += 1;
        let version = self.versions[index];
        user.updated_at = ts;
        match rng.random_range(0..100) {
            // names
            0..25 => {
                if rng.random_bool(0.5) {
                    user.first_name = Some(pick(rng, FIRST_NAMES).to_owned());
                } else if rng.random_bool(0.15) {
                    user.last_name = None;
                } else {
                    user.last_name = Some(pick(rng, INTL_LAST_NAMES).to_owned());
                }
            }
            // image
            25..40 => {
                let tail = user.id.trim_start_matches("user_");
                user.image_url = format!(
                    "https://img.clerk.com/eyJ0eXBlIjoicHJveHkiLCJzcmMiOiJ{tail}v{version}"
                );
            }
            // username: unique per (user, version), sometimes removed
            40..50 => {
                user.username = (!rng.random_bool(0.1))
                    .then(|| format!("{}{tag}{index}v{version}", slug(user.first_name.as_deref())));
            }
            // primary email: a new address, or one another user gave up
            50..65 => {
                let taken = if !self.released_emails.is_empty()
                    && rng.random_bool(self.profiles.move_emails)
                {
                    let i = rng.random_range(0..self.released_emails.len());
                    self.moved_emails += 1;
                    Some(self.released_emails.swap_remove(i))
                } else {
                    None
                };
                let new = taken.unwrap_or_else(|| {
                    format!(
                        "{}.{tag}{index}.v{version}@example.net",
                        slug(user.first_name.as_deref())
                    )
                });
                if let Some(old) = user.email.replace(new)
                    && self.profiles.move_emails > 0.0
                {
                    self.released_emails.push(old);
                }
            }
            // metadata, sign-in: only updated_at changes for the table
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_keep_ascii_letters_and_digits_and_never_come_out_empty() {
        assert_eq!(slug(Some("O'Brien")), "obrien");
        assert_eq!(slug(Some("García-López 2")), "garcalpez2");
        assert_eq!(slug(Some("美咲")), "user");
        assert_eq!(slug(None), "user");
    }
}
