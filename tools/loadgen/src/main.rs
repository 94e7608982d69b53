//! `loadgen`: a load generator for Clerk webhook receivers (clerk-sync, or any service that
//! takes Svix-signed `user.*` events at one URL).
//!
//! It builds a realistic Clerk event stream (full Clerk User payloads, Clerk's uniqueness rules;
//! optionally organizations and memberships among them), signs every delivery before the timed
//! phase, sends with C keep-alive connections pulling from
//! one queue, optionally with duplicates, shuffled order and Svix-like retries, reports
//! throughput and latency, and checks the final tables against what Clerk holds.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::NaiveDateTime;
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use clerk_sync::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
use clerk_sync::webhook::{SigningSecret, signed_headers};

const EXAMPLES: &str = "\
Examples:
  # clerk-sync on PostgreSQL, the stream of the peer comparison, then check the table:
  loadgen --url http://127.0.0.1:3000/api/webhooks/clerk --secret whsec_... \\
      --events 5000 --users 2000 --concurrency 8 \\
      --database-url postgresql://postgres@127.0.0.1:5432/clerk_sync

  # at-least-once and out-of-order delivery, with Svix-like retries, one JSON object out:
  loadgen --url http://127.0.0.1:3000/api/webhooks/clerk --secret whsec_... \\
      --events 5000 --users 2000 -c 32 --duplicates 0.1 --shuffle --retries --seed 7 --json

  # organizations and memberships among the user events, all three tables checked:
  loadgen --url http://127.0.0.1:3000/api/webhooks/clerk --secret whsec_... \\
      --events 5000 --users 2000 --organizations 200 --org-events 5000 -c 8 \\
      --database-url postgresql://postgres@127.0.0.1:5432/clerk_sync

  # membership events alone timed (users sent first, untimed; no user deletions):
  loadgen ... --events 2000 --users 2000 --mix 1,0,0 --organizations 200 --org-events 5000 \\
      --org-mix 0,0.45,0.3,0.25,0 --preload-users -c 8

The stream: every user gets one user.created, user.updated events are spread over the users at
random, the chosen deleted users get a user.deleted as their last event, and the users'
timelines are interleaved at random (each user's own order kept). Payloads are full Clerk User
objects; about a quarter of users have non-ASCII names, --no-email of them no email, a fifth no
username; updates change names, image, username or primary email (or only updated_at). An email
or username belongs to one user at a time; --move-emails lets addresses given up by one user be
taken by another.

Organizations (--organizations N, --org-events M): N organization.created and M - N more
organization and membership events in the --org-mix, interleaved at random with the user
events: organizations renamed or moving slugs (Clerk keeps a slug unique at every instant: the
holder changes slug first, an organization.updated of its own), live users joining live
organizations (membership.created, a third of them re-adds: a user back in an organization they
left, under a new membership id), role changes, removals (membership.deleted, its timestamp the
time of removal), organizations deleted. Deleting an organization or a user removes its
memberships; for half of them the stream also sends an organizationMembership.deleted per
membership. Membership events embed their organization as it is at that moment. With
--preload-users the user events are sent, untimed and each user's in order, before the timed
phase, which then times the organization and membership events alone.

Timing: all deliveries are built and signed before the timed phase; C workers, each with its
own keep-alive connection, take deliveries from one queue; latency is request sent -> response
read. A retried delivery keeps its svix-id and gets a fresh timestamp and signature.

Table check (--database-url, PostgreSQL or sqlite://PATH): every user of the stream must be
absent if deleted (else: zombie) and present otherwise (else: missing) with id, email,
firstName, lastName, name, imageUrl, username and clerkUpdatedAt as Clerk last had them (an
older clerkUpdatedAt: stale; any other difference: field mismatch). Rows of other users are
counted as unknown, not as mismatches. A row with \"deletedAt\" set counts as absent. With
--organizations, the organizations and organization_memberships tables (in --table's schema)
are checked the same way: organizations by name, slug, imageUrl and clerkUpdatedAt;
memberships by organizationId, userId, role and clerkUpdatedAt, and none left of a removed
membership, a deleted organization or a deleted user.

Exit status: 0 all good; 1 the table does not match; 3 some deliveries never got a 2xx;
2 the run could not be made (bad arguments, unreachable server or database).

Only loopback targets are accepted.";

/// Sends a realistic stream of Svix-signed Clerk user events to a webhook endpoint and
/// measures events/s and latency; optionally checks the resulting users table.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, after_help = EXAMPLES)]
struct Args {
    /// Webhook endpoint (loopback addresses only).
    #[arg(long, default_value = "http://127.0.0.1:3000/api/webhooks/clerk")]
    url: String,
    /// The endpoint's signing secret, whsec_... (as Clerk's dashboard shows it).
    #[arg(long, env = "CLERK_WEBHOOK_SIGNING_SECRET", hide_env_values = true)]
    secret: String,
    /// Events in Clerk's stream (before duplicates).
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Users in the stream (at most this many user.created events).
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Keep-alive connections sending at once, pulling from one queue.
    #[arg(long, short = 'c', default_value_t = 8)]
    concurrency: usize,
    /// Fractions of user.created, user.updated, user.deleted.
    #[arg(long, default_value = "0.4,0.5,0.1")]
    mix: String,
    /// Fraction of events delivered a second time (same svix-id and body), 1..--dup-max-lag
    /// deliveries after the first.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Largest distance, in deliveries, between an event and its duplicate.
    #[arg(long, default_value_t = 200)]
    dup_max_lag: usize,
    /// Shuffle the delivery order within consecutive windows of --shuffle-window deliveries.
    #[arg(long)]
    shuffle: bool,
    /// Window of --shuffle (0: the whole stream).
    #[arg(long, default_value_t = 50)]
    shuffle_window: usize,
    /// Retry like Svix: a non-2xx answer or a connection error is sent again, same svix-id,
    /// fresh timestamp and signature, after a short backoff, up to --max-retries times.
    #[arg(long)]
    retries: bool,
    /// Most retries of one delivery (with --retries).
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    /// First retry backoff in milliseconds; doubled at each further retry.
    #[arg(long, default_value_t = 50)]
    retry_backoff_ms: u64,
    /// Random seed: the same seed gives the same stream, ids and bodies (default: random,
    /// printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction of users without any email (phone or username sign-ups).
    #[arg(long, default_value_t = 0.1)]
    no_email: f64,
    /// Fraction of users with non-ASCII names.
    #[arg(long, default_value_t = 0.25)]
    non_ascii: f64,
    /// Fraction of email changes that take an address another user gave up earlier (emails
    /// moving between users).
    #[arg(long, default_value_t = 0.0)]
    move_emails: f64,
    /// Organizations in the stream (0: user events only).
    #[arg(long, default_value_t = 0)]
    organizations: usize,
    /// Organization and membership events in the stream (with --organizations), beside the
    /// --events user events; deletions' membership.deleted events come on top.
    #[arg(long, default_value_t = 5000)]
    org_events: usize,
    /// Weights (normalized) of the organization events after the creates:
    /// organization.updated, organizationMembership.created, .updated (role), .deleted,
    /// organization.deleted.
    #[arg(long, default_value = "0.1,0.44,0.25,0.2,0.01")]
    org_mix: String,
    /// Send the user events before the timed phase (untimed, each user's in order), so that
    /// only the organization and membership events are timed.
    #[arg(long)]
    preload_users: bool,
    /// Warm-up users before timing (created, updated, deleted each; leave no rows).
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Longest time for one request, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Check the final table in this database (postgresql://... or sqlite://PATH).
    #[arg(long)]
    database_url: Option<String>,
    /// Table to check (schema.table allowed).
    #[arg(long, default_value = "users")]
    table: String,
    /// Also report this process's CPU time during the timed phase (the server's PID; Linux).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object with all figures instead of text.
    #[arg(long)]
    json: bool,
}

// ------------------------------------------------------------------------------------------
// The stream: what Clerk holds for each user and the events it sends.
// ------------------------------------------------------------------------------------------

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

/// Clerk-like id: prefix, `_`, 27 alphanumerics (as `sample::random_id`, but seeded).
fn seeded_id(rng: &mut StdRng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..27)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

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

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Updated,
    Deleted,
    OrgCreated,
    OrgUpdated,
    OrgDeleted,
    MemberCreated,
    MemberUpdated,
    MemberDeleted,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "user.created",
            Kind::Updated => "user.updated",
            Kind::Deleted => "user.deleted",
            Kind::OrgCreated => "organization.created",
            Kind::OrgUpdated => "organization.updated",
            Kind::OrgDeleted => "organization.deleted",
            Kind::MemberCreated => "organizationMembership.created",
            Kind::MemberUpdated => "organizationMembership.updated",
            Kind::MemberDeleted => "organizationMembership.deleted",
        }
    }

    /// Whose events these are: `user`, `organization` or `membership`.
    fn family(self) -> &'static str {
        match self {
            Kind::Created | Kind::Updated | Kind::Deleted => "user",
            Kind::OrgCreated | Kind::OrgUpdated | Kind::OrgDeleted => "organization",
            Kind::MemberCreated | Kind::MemberUpdated | Kind::MemberDeleted => "membership",
        }
    }
}

/// Whose timeline an event belongs to (for counting deliveries out of order): a user's, or an
/// organization's (its memberships' events included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    User(usize),
    Org(usize),
}

/// One event in Clerk's order.
#[derive(Debug, Clone)]
struct Event {
    seq: usize,
    key: Key,
    kind: Kind,
    svix_id: String,
    body: String,
}

/// Clerk's end state: the last snapshot of every user, and who was deleted; the same for
/// organizations and memberships (empty without --organizations).
struct Model {
    users: Vec<SampleUser>,
    deleted: Vec<bool>,
    organizations: Vec<SampleOrganization>,
    organization_deleted: Vec<bool>,
    memberships: Vec<SampleMembership>,
    membership_live: Vec<bool>,
}

/// The organization part of a stream.
#[derive(Debug, Clone, Copy)]
struct OrgOptions {
    organizations: usize,
    events: usize,
    /// Weights of organization.updated, membership created, updated, deleted,
    /// organization.deleted.
    mix: [f64; 5],
}

#[derive(Clone, Copy)]
struct StreamOptions {
    users: usize,
    events: usize,
    mix: (f64, f64, f64),
    no_email: f64,
    non_ascii: f64,
    move_emails: f64,
    /// Keeps a stream's emails and usernames apart from another's (warm-up vs. main run).
    tag: &'static str,
    base_ms: i64,
    orgs: Option<OrgOptions>,
}

/// What the organization part of a stream holds, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct OrgCounts {
    created: usize,
    updated: usize,
    /// organization.updated events of a holder giving up its slug to another organization.
    slug_moves: usize,
    deleted: usize,
    members_created: usize,
    /// Joins of a user back into an organization they had left (a new membership id).
    readded: usize,
    role_changes: usize,
    removals: usize,
    /// Memberships that went with their organization or user, and how many of those got an
    /// organizationMembership.deleted of their own.
    removed_with_owner: usize,
    removal_events_for_owner: usize,
}

struct Stream {
    events: Vec<Event>,
    model: Model,
    created: usize,
    updated: usize,
    deleted: usize,
    moved_emails: usize,
    orgs: OrgCounts,
}

/// Items with O(1) insert, remove and uniform pick.
#[derive(Default)]
struct Bag<T> {
    items: Vec<T>,
    index: HashMap<T, usize>,
}

impl<T: Copy + Eq + Hash> Bag<T> {
    fn insert(&mut self, item: T) {
        if !self.index.contains_key(&item) {
            self.index.insert(item, self.items.len());
            self.items.push(item);
        }
    }

    fn remove(&mut self, item: T) {
        if let Some(i) = self.index.remove(&item) {
            self.items.swap_remove(i);
            if let Some(moved) = self.items.get(i) {
                self.index.insert(*moved, i);
            }
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Option<T> {
        (!self.items.is_empty()).then(|| self.items[rng.random_range(0..self.items.len())])
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// What an organization slot of the stream asks for (fallbacks when it cannot be done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrgStep {
    Create,
    Update,
    Join,
    Role,
    Remove,
    Delete,
}

const ORG_NAMES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Müller & Söhne",
    "Łódź Labs",
    "Ørsted Studio",
    "株式会社さくら",
    "Ωmega",
    "Café Olé",
    "O'Reilly Partners",
];
const ORG_SUFFIXES: &[&str] = &["", " Inc.", " GmbH", " Ltd", " Team", " (EU)"];

/// Clerk's organizations and memberships while the stream is built.
#[derive(Default)]
struct OrgWorld {
    organizations: Vec<SampleOrganization>,
    organization_deleted: Vec<bool>,
    memberships: Vec<SampleMembership>,
    membership_live: Vec<bool>,
    /// (organization, user) of each membership.
    membership_pair: Vec<(usize, usize)>,
    live_orgs: Bag<usize>,
    live_members: Bag<usize>,
    by_pair: HashMap<(usize, usize), usize>,
    /// Pairs whose membership was removed while both stayed: candidates for a re-add.
    removed_pairs: Vec<(usize, usize)>,
    fresh_slugs: usize,
    counts: OrgCounts,
}

/// An event a step made: whose timeline, what, the body.
type Made = (Key, Kind, String);

struct Builder<'a> {
    rng: &'a mut StdRng,
    options: &'a StreamOptions,
    /// Addresses a user gave up (changed or deleted), free for another user to take.
    released_emails: Vec<String>,
    versions: Vec<u32>,
    moved_emails: usize,
    /// Users created and not deleted, and their current snapshots.
    live_users: Bag<usize>,
    world: OrgWorld,
}

impl Builder<'_> {
    fn new_user(&mut self, index: usize, ts: i64) -> SampleUser {
        let rng = &mut *self.rng;
        let tag = self.options.tag;
        let id = seeded_id(rng, "user");
        let mut user = SampleUser::new(id, ts);
        let intl = rng.random_bool(self.options.non_ascii);
        let (firsts, lasts) = if intl {
            (INTL_FIRST_NAMES, INTL_LAST_NAMES)
        } else {
            (FIRST_NAMES, LAST_NAMES)
        };
        let no_names = rng.random_bool(0.05);
        user.first_name = (!no_names).then(|| pick(rng, firsts).to_owned());
        user.last_name = (!no_names && !rng.random_bool(0.1)).then(|| pick(rng, lasts).to_owned());
        let base = slug(user.first_name.as_deref());
        user.email = (!rng.random_bool(self.options.no_email)).then(|| {
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
    fn mutate(&mut self, user: &mut SampleUser, index: usize, ts: i64) {
        let tag = self.options.tag;
        self.versions[index] += 1;
        let version = self.versions[index];
        user.updated_at = ts;
        let rng = &mut *self.rng;
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
                    && rng.random_bool(self.options.move_emails)
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
                    && self.options.move_emails > 0.0
                {
                    self.released_emails.push(old);
                }
            }
            // metadata, sign-in: only updated_at changes for the table
            _ => {}
        }
    }
}

impl Builder<'_> {
    fn role(&mut self) -> &'static str {
        match self.rng.random_range(0..10) {
            0..2 => "org:admin",
            2..9 => "org:member",
            _ => "org:billing_manager",
        }
    }

    fn fresh_slug(&mut self, base: &str) -> String {
        self.world.fresh_slugs += 1;
        let base = base.split("--").next().unwrap_or(base);
        format!("{base}--{}", self.world.fresh_slugs)
    }

    /// The membership as Clerk sends it now: with its organization as it is now.
    fn current_membership(&self, m: usize) -> SampleMembership {
        let mut membership = self.world.memberships[m].clone();
        let (org, _) = self.world.membership_pair[m];
        membership.organization = self.world.organizations[org].clone();
        membership
    }

    /// Ends membership `m` at `ts`, with an organizationMembership.deleted when `send`.
    fn end_membership(&mut self, m: usize, ts: i64, send: bool, made: &mut Vec<Made>) {
        let (org, user) = self.world.membership_pair[m];
        let membership = self.current_membership(m);
        self.world.membership_live[m] = false;
        self.world.live_members.remove(m);
        self.world.by_pair.remove(&(org, user));
        if send {
            made.push((
                Key::Org(org),
                Kind::MemberDeleted,
                sample::membership_deleted(&membership, ts),
            ));
        }
    }

    /// One organization slot: `step` if it can be done now, else the first of the fallbacks
    /// that can; nothing if none can.
    fn org_step(
        &mut self,
        step: OrgStep,
        ts: i64,
        users: &[Option<SampleUser>],
        limit: usize,
    ) -> Vec<Made> {
        let mut made = Vec::new();
        for step in [step, OrgStep::Join, OrgStep::Create, OrgStep::Update] {
            if self.try_org_step(step, ts, users, limit, &mut made) {
                break;
            }
        }
        made
    }

    fn try_org_step(
        &mut self,
        step: OrgStep,
        mut ts: i64,
        users: &[Option<SampleUser>],
        limit: usize,
        made: &mut Vec<Made>,
    ) -> bool {
        match step {
            OrgStep::Create => {
                if self.world.organizations.len() >= limit {
                    return false;
                }
                let index = self.world.organizations.len();
                let id = seeded_id(self.rng, "org");
                let mut o = SampleOrganization::new(id, ts);
                o.name = format!(
                    "{}{}",
                    pick(self.rng, ORG_NAMES),
                    pick(self.rng, ORG_SUFFIXES)
                );
                if let Some(creator) = self.live_users.pick(self.rng) {
                    o.created_by = users[creator].as_ref().expect("live").id.clone();
                }
                made.push((
                    Key::Org(index),
                    Kind::OrgCreated,
                    sample::organization_created(&o),
                ));
                self.world.organizations.push(o);
                self.world.organization_deleted.push(false);
                self.world.live_orgs.insert(index);
                self.world.counts.created += 1;
                true
            }
            OrgStep::Update => {
                let Some(org) = self.world.live_orgs.pick(self.rng) else {
                    return false;
                };
                let choice = self.rng.random_range(0..100);
                let mut slug = self.world.organizations[org].slug.clone();
                let mut name = self.world.organizations[org].name.clone();
                if choice < 30 {
                    // Take another organization's slug: the holder changes slug first.
                    if let Some(holder) = self.world.live_orgs.pick(self.rng)
                        && holder != org
                    {
                        let taken = self.world.organizations[holder].slug.clone();
                        let moved_to = self.fresh_slug(&taken);
                        let h = &mut self.world.organizations[holder];
                        h.slug = moved_to;
                        h.updated_at = ts;
                        made.push((
                            Key::Org(holder),
                            Kind::OrgUpdated,
                            sample::organization_updated(h),
                        ));
                        self.world.counts.updated += 1;
                        self.world.counts.slug_moves += 1;
                        ts += 1;
                        slug = taken;
                    }
                } else if choice < 65 {
                    slug = self.fresh_slug(&slug);
                }
                if choice >= 30 {
                    name = format!(
                        "{}{}",
                        pick(self.rng, ORG_NAMES),
                        pick(self.rng, ORG_SUFFIXES)
                    );
                }
                let o = &mut self.world.organizations[org];
                o.slug = slug;
                o.name = name;
                o.updated_at = ts;
                made.push((
                    Key::Org(org),
                    Kind::OrgUpdated,
                    sample::organization_updated(o),
                ));
                self.world.counts.updated += 1;
                true
            }
            OrgStep::Join => {
                // A third of joins bring back a user who left (a new membership id).
                let mut pair = None;
                let mut readd = false;
                if !self.world.removed_pairs.is_empty() && self.rng.random_bool(1.0 / 3.0) {
                    let i = self.rng.random_range(0..self.world.removed_pairs.len());
                    let candidate = self.world.removed_pairs.swap_remove(i);
                    if !self.world.organization_deleted[candidate.0]
                        && self.live_users.index.contains_key(&candidate.1)
                        && !self.world.by_pair.contains_key(&candidate)
                    {
                        pair = Some(candidate);
                        readd = true;
                    }
                }
                for _ in 0..8 {
                    if pair.is_some() {
                        break;
                    }
                    let (Some(org), Some(user)) = (
                        self.world.live_orgs.pick(self.rng),
                        self.live_users.pick(self.rng),
                    ) else {
                        return false;
                    };
                    if !self.world.by_pair.contains_key(&(org, user)) {
                        pair = Some((org, user));
                    }
                }
                let Some((org, user)) = pair else {
                    return false;
                };
                let index = self.world.memberships.len();
                let id = seeded_id(self.rng, "orgmem");
                let role = self.role();
                let m = SampleMembership::new(
                    id,
                    self.world.organizations[org].clone(),
                    users[user].as_ref().expect("live").id.clone(),
                    ts,
                )
                .with_role(role);
                made.push((
                    Key::Org(org),
                    Kind::MemberCreated,
                    sample::membership_created(&m),
                ));
                self.world.memberships.push(m);
                self.world.membership_live.push(true);
                self.world.membership_pair.push((org, user));
                self.world.live_members.insert(index);
                self.world.by_pair.insert((org, user), index);
                self.world.counts.members_created += 1;
                self.world.counts.readded += usize::from(readd);
                true
            }
            OrgStep::Role => {
                let Some(m) = self.world.live_members.pick(self.rng) else {
                    return false;
                };
                let mut membership = self.current_membership(m);
                let old = membership.role.clone();
                while membership.role == old {
                    membership.role = self.role().to_owned();
                }
                membership.updated_at = ts;
                let (org, _) = self.world.membership_pair[m];
                made.push((
                    Key::Org(org),
                    Kind::MemberUpdated,
                    sample::membership_updated(&membership),
                ));
                self.world.memberships[m] = membership;
                self.world.counts.role_changes += 1;
                true
            }
            OrgStep::Remove => {
                let Some(m) = self.world.live_members.pick(self.rng) else {
                    return false;
                };
                let pair = self.world.membership_pair[m];
                self.end_membership(m, ts, true, made);
                self.world.removed_pairs.push(pair);
                self.world.counts.removals += 1;
                true
            }
            OrgStep::Delete => {
                // Keep one organization for the joins.
                if self.world.live_orgs.len() < 2 {
                    return false;
                }
                let Some(org) = self.world.live_orgs.pick(self.rng) else {
                    return false;
                };
                let members: Vec<usize> = self
                    .world
                    .live_members
                    .items
                    .iter()
                    .copied()
                    .filter(|m| self.world.membership_pair[*m].0 == org)
                    .collect();
                let send = self.rng.random_bool(0.5);
                for m in members {
                    self.end_membership(m, ts, send, made);
                    self.world.counts.removed_with_owner += 1;
                    self.world.counts.removal_events_for_owner += usize::from(send);
                    ts += i64::from(send);
                }
                self.world.organization_deleted[org] = true;
                self.world.live_orgs.remove(org);
                let o = &self.world.organizations[org];
                made.push((
                    Key::Org(org),
                    Kind::OrgDeleted,
                    sample::organization_deleted(&o.id, &o.slug, ts),
                ));
                self.world.counts.deleted += 1;
                true
            }
        }
    }

    /// A user deleted at `ts`: Clerk removes their memberships (sending, half the time, an
    /// organizationMembership.deleted for each, after the user.deleted).
    fn user_deleted(&mut self, user: usize, mut ts: i64) -> Vec<Made> {
        self.live_users.remove(user);
        let mut made = Vec::new();
        let members: Vec<usize> = self
            .world
            .live_members
            .items
            .iter()
            .copied()
            .filter(|m| self.world.membership_pair[*m].1 == user)
            .collect();
        if members.is_empty() {
            return made;
        }
        let send = self.rng.random_bool(0.5);
        for m in members {
            ts += i64::from(send);
            self.end_membership(m, ts, send, &mut made);
            self.world.counts.removed_with_owner += 1;
            self.world.counts.removal_events_for_owner += usize::from(send);
        }
        made
    }
}

/// A stream slot: the next event of a user's timeline, or an organization step.
#[derive(Debug, Clone, Copy)]
enum Ticket {
    User(usize),
    Org(OrgStep),
}

fn build_stream(rng: &mut StdRng, options: &StreamOptions) -> anyhow::Result<Stream> {
    let (pc, _, pd) = options.mix;
    let total = options.events;
    let created = options
        .users
        .min((total as f64 * pc).round() as usize)
        .max(usize::from(total > 0));
    let deleted = created.min((total as f64 * pd).round() as usize);
    let Some(updated) = total.checked_sub(created + deleted) else {
        bail!("--mix, --users and --events leave no room for the created and deleted events");
    };
    // Per-user timelines: created, some updates, maybe deleted (always last).
    let mut plan: Vec<Vec<Kind>> = vec![vec![Kind::Created]; created];
    for _ in 0..updated {
        let user = rng.random_range(0..created);
        plan[user].push(Kind::Updated);
    }
    let mut order: Vec<usize> = (0..created).collect();
    order.shuffle(rng);
    for &user in &order[..deleted] {
        plan[user].push(Kind::Deleted);
    }
    // A uniformly random interleaving that keeps each user's own order, with the
    // organization slots among them.
    let mut tickets: Vec<Ticket> = plan
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(Ticket::User(i), p.len()))
        .collect();
    let org_limit = options.orgs.map_or(0, |o| o.organizations);
    if let Some(orgs) = options.orgs {
        let creates = orgs.organizations.min(orgs.events);
        tickets.extend(std::iter::repeat_n(Ticket::Org(OrgStep::Create), creates));
        let steps = [
            OrgStep::Update,
            OrgStep::Join,
            OrgStep::Role,
            OrgStep::Remove,
            OrgStep::Delete,
        ];
        let sum: f64 = orgs.mix.iter().sum();
        for _ in creates..orgs.events {
            let mut x = rng.random_range(0.0..sum);
            let mut step = OrgStep::Join;
            for (weight, s) in orgs.mix.iter().zip(steps) {
                if x < *weight {
                    step = s;
                    break;
                }
                x -= weight;
            }
            tickets.push(Ticket::Org(step));
        }
    }
    tickets.shuffle(rng);

    let mut builder = Builder {
        rng,
        options,
        released_emails: Vec::new(),
        versions: vec![0; created],
        moved_emails: 0,
        live_users: Bag::default(),
        world: OrgWorld::default(),
    };
    let mut users: Vec<Option<SampleUser>> = vec![None; created];
    let mut is_deleted = vec![false; created];
    let mut position = vec![0usize; created];
    let mut ts = options.base_ms;
    let mut events = Vec::with_capacity(tickets.len());
    for ticket in tickets {
        ts += builder.rng.random_range(50..400); // ms between changes in Clerk
        let made: Vec<Made> = match ticket {
            Ticket::Org(step) => builder.org_step(step, ts, &users, org_limit),
            Ticket::User(user) => {
                let kind = plan[user][position[user]];
                position[user] += 1;
                let mut made = Vec::new();
                let body = match kind {
                    Kind::Created => {
                        let new = builder.new_user(user, ts);
                        let body = sample::user_created(&new);
                        users[user] = Some(new);
                        builder.live_users.insert(user);
                        body
                    }
                    Kind::Updated => {
                        let mut current = users[user].take().expect("created first");
                        builder.mutate(&mut current, user, ts);
                        let body = sample::user_updated(&current);
                        users[user] = Some(current);
                        body
                    }
                    _ => {
                        let current = users[user].as_ref().expect("created first");
                        is_deleted[user] = true;
                        if options.move_emails > 0.0
                            && let Some(email) = &current.email
                        {
                            builder.released_emails.push(email.clone());
                        }
                        sample::user_deleted(&current.id, ts)
                    }
                };
                made.push((Key::User(user), kind, body));
                if kind == Kind::Deleted {
                    made.extend(builder.user_deleted(user, ts));
                }
                made
            }
        };
        // Steps that send several events take a millisecond each.
        ts += made.len().saturating_sub(1) as i64;
        for (key, kind, body) in made {
            let svix_id = seeded_id(builder.rng, "msg");
            events.push(Event {
                seq: events.len(),
                key,
                kind,
                svix_id,
                body,
            });
        }
    }
    let moved_emails = builder.moved_emails;
    let world = builder.world;
    Ok(Stream {
        events,
        model: Model {
            users: users
                .into_iter()
                .map(|u| u.expect("every user is created"))
                .collect(),
            deleted: is_deleted,
            organizations: world.organizations,
            organization_deleted: world.organization_deleted,
            memberships: world.memberships,
            membership_live: world.membership_live,
        },
        created,
        updated,
        deleted,
        moved_emails,
        orgs: world.counts,
    })
}

/// Delivery order: duplicates inserted 1..max_lag deliveries after their original, then
/// shuffled within windows. Returns the deliveries and how many are duplicates.
fn delivery_order(
    rng: &mut StdRng,
    events: &[Event],
    duplicates: f64,
    max_lag: usize,
    shuffle_window: Option<usize>,
) -> (Vec<(usize, bool)>, usize) {
    let mut delivery: Vec<(usize, bool)> = (0..events.len()).map(|i| (i, false)).collect();
    let count = ((events.len() as f64) * duplicates.clamp(0.0, 1.0)).round() as usize;
    if count > 0 {
        let mut picks: Vec<usize> = (0..events.len()).collect();
        picks.shuffle(rng);
        let mut inserts: Vec<(usize, u64, usize)> = picks[..count]
            .iter()
            .map(|&p| (p + rng.random_range(1..=max_lag.max(1)), rng.random(), p))
            .collect();
        inserts.sort_unstable();
        let mut out = Vec::with_capacity(events.len() + count);
        let mut next = inserts.iter().peekable();
        for i in 0..events.len() {
            out.push((i, false));
            while let Some(&&(at, _, p)) = next.peek() {
                if at > i {
                    break;
                }
                out.push((p, true));
                next.next();
            }
        }
        out.extend(next.map(|&(_, _, p)| (p, true)));
        delivery = out;
    }
    if let Some(window) = shuffle_window {
        let window = if window == 0 { delivery.len() } else { window };
        for chunk in delivery.chunks_mut(window.max(1)) {
            chunk.shuffle(rng);
        }
    }
    (delivery, count)
}

// ------------------------------------------------------------------------------------------
// Sending
// ------------------------------------------------------------------------------------------

/// A delivery ready to send: signed headers and the body.
struct Job {
    index: usize,
    svix_id: &'static str,
    body: &'static str,
    headers: HeaderMap,
    signed_at: i64,
    attempt: u32,
}

fn sign(secret: &SigningSecret, svix_id: &str, body: &str) -> anyhow::Result<(HeaderMap, i64)> {
    let ts = chrono::Utc::now().timestamp();
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signed = signed_headers(secret, svix_id, ts, body.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    for (name, value) in signed {
        headers.insert(HeaderName::from_static(name), HeaderValue::try_from(value)?);
    }
    Ok((headers, ts))
}

/// What one attempt got.
struct Attempt {
    index: usize,
    status: u16,
    latency: Duration,
    outcome: Option<String>,
    error: Option<String>,
    final_attempt: bool,
}

struct Shared {
    url: reqwest::Url,
    secret: SigningSecret,
    retries: Option<(u32, Duration)>,
    remaining: AtomicUsize,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    sender: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

impl Shared {
    fn resolved(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Every delivery has its final answer: close the queue, the workers stop.
            self.sender.lock().expect("not poisoned").take();
        }
    }
}

async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    job: &Job,
) -> (u16, Vec<u8>, Option<String>) {
    let request = client
        .post(url.clone())
        .headers(job.headers.clone())
        .body(job.body);
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => (status, bytes.to_vec(), None),
                Err(e) => (0, Vec::new(), Some(e.to_string())),
            }
        }
        Err(e) => (0, Vec::new(), Some(error_chain(&e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn worker(client: reqwest::Client, shared: Arc<Shared>) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    loop {
        let job = { shared.queue.lock().await.recv().await };
        let Some(mut job) = job else { break };
        // Svix accepts timestamps up to 5 minutes old: re-sign what waited that long.
        if chrono::Utc::now().timestamp() - job.signed_at > 240
            && let Ok((headers, ts)) = sign(&shared.secret, job.svix_id, job.body)
        {
            job.headers = headers;
            job.signed_at = ts;
        }
        let started = Instant::now();
        let (status, body, error) = send(&client, &shared.url, &job).await;
        let latency = started.elapsed();
        let ok = (200..300).contains(&status);
        let outcome = if ok {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("outcome").and_then(Value::as_str).map(str::to_owned))
        } else {
            None
        };
        let error = error.or_else(|| {
            (!ok).then(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
        });
        let retry = match shared.retries {
            Some((max, backoff)) if !ok && job.attempt < max => {
                Some(backoff * 2u32.pow(job.attempt))
            }
            _ => None,
        };
        attempts.push(Attempt {
            index: job.index,
            status,
            latency,
            outcome,
            error,
            final_attempt: retry.is_none(),
        });
        match retry {
            Some(wait) => {
                let sender = shared.sender.lock().expect("not poisoned").clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    // Same svix-id, fresh timestamp and signature, as Svix retries.
                    if let Ok((headers, ts)) = sign(&shared.secret, job.svix_id, job.body) {
                        job.headers = headers;
                        job.signed_at = ts;
                    }
                    job.attempt += 1;
                    match sender {
                        Some(sender) if sender.send(job).is_ok() => {}
                        _ => shared.resolved(),
                    }
                });
            }
            None => shared.resolved(),
        }
    }
    attempts
}

fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(None::<Duration>)
        .timeout(timeout)
        .build()?)
}

/// Sends each user's events of `events` in order (untimed), one user per connection at a time
/// (the warm-up, and the user events with --preload-users). Other events are left out.
async fn warm_up(
    clients: &[reqwest::Client],
    url: &reqwest::Url,
    secret: &SigningSecret,
    users: usize,
    events: &[Event],
) -> anyhow::Result<usize> {
    let mut per_user: Vec<Vec<&Event>> = vec![Vec::new(); users];
    for event in events {
        if let Key::User(user) = event.key {
            per_user[user].push(event);
        }
    }
    let per_user = Arc::new(
        per_user
            .into_iter()
            .map(|events| {
                events
                    .into_iter()
                    .map(|e| (e.svix_id.clone(), e.body.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>(),
    );
    let mut tasks = Vec::new();
    for (k, client) in clients.iter().enumerate() {
        let (client, url, secret, per_user) = (
            client.clone(),
            url.clone(),
            secret.clone(),
            Arc::clone(&per_user),
        );
        let step = clients.len();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0usize;
            for user in per_user.iter().skip(k).step_by(step) {
                for (svix_id, body) in user {
                    let (headers, _) = sign(&secret, svix_id, body)?;
                    let response = client
                        .post(url.clone())
                        .headers(headers)
                        .body(body.clone())
                        .send()
                        .await
                        .with_context(|| format!("cannot reach {url}"))?;
                    if !response.status().is_success() {
                        failed += 1;
                    }
                    response.bytes().await?;
                }
            }
            anyhow::Ok(failed)
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await??;
    }
    Ok(failed)
}

// ------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc), for telling who used the machine during the timed phase.
// ------------------------------------------------------------------------------------------

/// Kernel clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// (busy, total) CPU seconds of the whole machine since boot.
fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND))
}

/// CPU seconds of every process named `postgres`, by pid.
fn postgres_cpu() -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        if is_postgres && let Some(cpu) = process_cpu_seconds(&pid) {
            out.insert(pid, cpu);
        }
    }
    out
}

struct CpuSnapshot {
    machine: Option<(f64, f64)>,
    own: Option<f64>,
    server: Option<f64>,
    postgres: HashMap<String, f64>,
}

fn cpu_snapshot(server_pid: Option<u32>) -> CpuSnapshot {
    CpuSnapshot {
        machine: machine_cpu_seconds(),
        own: process_cpu_seconds("self"),
        server: server_pid.and_then(|p| process_cpu_seconds(&p.to_string())),
        postgres: postgres_cpu(),
    }
}

fn cpu_report(a: &CpuSnapshot, b: &CpuSnapshot, cores: usize) -> Value {
    let delta = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| round2(y - x));
    let postgres: f64 = b
        .postgres
        .iter()
        .map(|(pid, v)| v - a.postgres.get(pid).copied().unwrap_or(0.0))
        .sum();
    let (busy, total) = match (a.machine, b.machine) {
        (Some((b0, t0)), Some((b1, t1))) => (Some(b1 - b0), Some(t1 - t0)),
        _ => (None, None),
    };
    let own = delta(a.own, b.own);
    let server = delta(a.server, b.server);
    let other = busy.map(|busy| {
        round2((busy - own.unwrap_or(0.0) - server.unwrap_or(0.0) - postgres).max(0.0))
    });
    json!({
        "cores": cores,
        "machine_busy_pct": busy.zip(total).map(|(b, t)| round1(100.0 * b / t.max(1e-9))),
        "loadgen_cpu_s": own,
        "server_cpu_s": server,
        "postgres_cpu_s": round2(postgres),
        "other_cpu_s": other,
    })
}

// ------------------------------------------------------------------------------------------
// Table check
// ------------------------------------------------------------------------------------------

struct Row {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    image_url: Option<String>,
    username: Option<String>,
    clerk_updated_at: Option<i64>,
    deleted: bool,
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

fn quoted_table(table: &str) -> anyhow::Result<String> {
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

async fn fetch_rows(url: &str, table: &str) -> anyhow::Result<HashMap<String, Row>> {
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

fn full_name(user: &SampleUser) -> Option<String> {
    let parts: Vec<&str> = [&user.first_name, &user.last_name]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn verify(model: &Model, rows: &HashMap<String, Row>) -> Value {
    let (mut missing, mut zombies, mut stale, mut mismatched) = (vec![], vec![], vec![], vec![]);
    let mut fields: BTreeMap<&str, usize> = BTreeMap::new();
    for (user, &deleted) in model.users.iter().zip(&model.deleted) {
        let row = rows.get(&user.id).filter(|r| !r.deleted);
        let Some(row) = row else {
            if !deleted {
                missing.push(user.id.clone());
            }
            continue;
        };
        if deleted {
            zombies.push(user.id.clone());
            continue;
        }
        let checks: [(&str, bool); 7] = [
            ("email", row.email == user.email),
            ("firstName", row.first_name == user.first_name),
            ("lastName", row.last_name == user.last_name),
            ("name", row.name == full_name(user)),
            (
                "imageUrl",
                row.image_url.as_deref() == Some(user.image_url.as_str()),
            ),
            ("username", row.username == user.username),
            (
                "clerkUpdatedAt",
                row.clerk_updated_at == Some(user.updated_at),
            ),
        ];
        let wrong: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        if wrong.is_empty() {
            continue;
        }
        for field in &wrong {
            *fields.entry(*field).or_default() += 1;
        }
        if row.clerk_updated_at.is_some_and(|t| t < user.updated_at) {
            stale.push(user.id.clone());
        } else {
            mismatched.push(format!("{} ({})", user.id, wrong.join(", ")));
        }
    }
    let known: std::collections::HashSet<&str> =
        model.users.iter().map(|u| u.id.as_str()).collect();
    let unknown = rows
        .iter()
        .filter(|(id, r)| !r.deleted && !known.contains(id.as_str()))
        .count();
    let expected = model.deleted.iter().filter(|d| !**d).count();
    let live = rows.values().filter(|r| !r.deleted).count();
    json!({
        "rows_in_table": live,
        "expected_rows": expected,
        "missing": missing.len(),
        "zombies": zombies.len(),
        "stale": stale.len(),
        "field_mismatches": mismatched.len(),
        "mismatches": missing.len() + zombies.len() + stale.len() + mismatched.len(),
        "unknown_rows": unknown,
        "mismatched_fields": fields,
        "examples": {
            "missing": &missing[..missing.len().min(3)],
            "zombies": &zombies[..zombies.len().min(3)],
            "stale": &stale[..stale.len().min(3)],
            "field_mismatches": &mismatched[..mismatched.len().min(3)],
        },
    })
}

/// A row of `organizations`: name, slug, imageUrl, clerkUpdatedAt (ms), deleted.
type OrgRow = (String, Option<String>, Option<String>, Option<i64>, bool);
/// A row of `organization_memberships`: organizationId, userId, role, clerkUpdatedAt (ms).
type MemberRow = (String, String, String, Option<i64>);

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

async fn fetch_organization_rows(
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

/// The verdict on rows against a model: what is missing, left over (zombie), older than
/// Clerk's (stale), or different otherwise, with up to three examples each.
#[derive(Default)]
struct Verdict {
    missing: Vec<String>,
    zombies: Vec<String>,
    stale: Vec<String>,
    mismatched: Vec<String>,
    fields: BTreeMap<&'static str, usize>,
}

impl Verdict {
    /// One thing Clerk holds (`live`) or held, against its row (`None`: absent).
    fn check(
        &mut self,
        id: &str,
        live: bool,
        row_updated: Option<Option<i64>>,
        updated_at: i64,
        checks: &[(&'static str, bool)],
    ) {
        let Some(row_updated) = row_updated else {
            if live {
                self.missing.push(id.to_owned());
            }
            return;
        };
        if !live {
            self.zombies.push(id.to_owned());
            return;
        }
        let wrong: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        if wrong.is_empty() {
            return;
        }
        for field in &wrong {
            *self.fields.entry(field).or_default() += 1;
        }
        if row_updated.is_some_and(|t| t < updated_at) {
            self.stale.push(id.to_owned());
        } else {
            self.mismatched.push(format!("{id} ({})", wrong.join(", ")));
        }
    }

    fn report(self, rows: usize, expected: usize, unknown: usize) -> Value {
        let first = |v: &Vec<String>| v[..v.len().min(3)].to_vec();
        json!({
            "rows_in_table": rows,
            "expected_rows": expected,
            "missing": self.missing.len(),
            "zombies": self.zombies.len(),
            "stale": self.stale.len(),
            "field_mismatches": self.mismatched.len(),
            "mismatches": self.missing.len() + self.zombies.len() + self.stale.len()
                + self.mismatched.len(),
            "unknown_rows": unknown,
            "mismatched_fields": self.fields,
            "examples": {
                "missing": first(&self.missing),
                "zombies": first(&self.zombies),
                "stale": first(&self.stale),
                "field_mismatches": first(&self.mismatched),
            },
        })
    }
}

/// Organizations and memberships against Clerk's final state. A deleted organization's row
/// (soft mode: "deletedAt" set) counts as absent; memberships are never kept once gone.
fn verify_organizations(
    model: &Model,
    orgs: &HashMap<String, OrgRow>,
    members: &HashMap<String, MemberRow>,
) -> Value {
    let mut verdict = Verdict::default();
    for (o, &deleted) in model.organizations.iter().zip(&model.organization_deleted) {
        let row = orgs.get(&o.id).filter(|r| !r.4);
        verdict.check(
            &o.id,
            !deleted,
            row.map(|r| r.3),
            o.updated_at,
            &row.map_or(Vec::new(), |r| {
                vec![
                    ("name", r.0 == o.name),
                    ("slug", r.1.as_deref() == Some(o.slug.as_str())),
                    ("imageUrl", r.2.as_deref() == Some(o.image_url.as_str())),
                    ("clerkUpdatedAt", r.3 == Some(o.updated_at)),
                ]
            }),
        );
    }
    let known: std::collections::HashSet<&str> =
        model.organizations.iter().map(|o| o.id.as_str()).collect();
    let organizations = verdict.report(
        orgs.values().filter(|r| !r.4).count(),
        model.organization_deleted.iter().filter(|d| !**d).count(),
        orgs.iter()
            .filter(|(id, r)| !r.4 && !known.contains(id.as_str()))
            .count(),
    );

    let mut verdict = Verdict::default();
    for (m, &live) in model.memberships.iter().zip(&model.membership_live) {
        let row = members.get(&m.id);
        verdict.check(
            &m.id,
            live,
            row.map(|r| r.3),
            m.updated_at,
            &row.map_or(Vec::new(), |r| {
                vec![
                    ("organizationId", r.0 == m.organization.id),
                    ("userId", r.1 == m.user_id),
                    ("role", r.2 == m.role),
                    ("clerkUpdatedAt", r.3 == Some(m.updated_at)),
                ]
            }),
        );
    }
    let known: std::collections::HashSet<&str> =
        model.memberships.iter().map(|m| m.id.as_str()).collect();
    let memberships = verdict.report(
        members.len(),
        model.membership_live.iter().filter(|l| **l).count(),
        members
            .keys()
            .filter(|id| !known.contains(id.as_str()))
            .count(),
    );
    json!({"organizations": organizations, "memberships": memberships})
}

// ------------------------------------------------------------------------------------------
// Figures
// ------------------------------------------------------------------------------------------

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn check_loopback(url: &reqwest::Url) -> anyhow::Result<()> {
    let host = url.host_str().context("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() || !addresses.iter().all(IpAddr::is_loopback) {
        bail!("refusing {host}: loadgen only sends to loopback addresses (127.0.0.0/8, ::1)");
    }
    Ok(())
}

fn parse_org_mix(mix: &str) -> anyhow::Result<[f64; 5]> {
    let usage = || {
        format!(
            "--org-mix {mix:?}: five weights (organization.updated, membership created, updated, \
             deleted, organization.deleted), e.g. 0.1,0.44,0.25,0.2,0.01"
        )
    };
    let parts: Vec<f64> = mix
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(usage)?;
    let Ok(weights) = <[f64; 5]>::try_from(parts) else {
        bail!(usage());
    };
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
        bail!("{}: none negative, not all zero", usage());
    }
    Ok(weights)
}

fn parse_mix(mix: &str) -> anyhow::Result<(f64, f64, f64)> {
    let parts: Vec<f64> = mix
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--mix {mix:?}: three numbers, e.g. 0.4,0.5,0.1"))?;
    let [c, u, d] = parts[..] else {
        bail!("--mix {mix:?}: three numbers, e.g. 0.4,0.5,0.1");
    };
    if [c, u, d].iter().any(|x| !(0.0..=1.0).contains(x)) || c <= 0.0 {
        bail!("--mix {mix:?}: fractions between 0 and 1, created above 0");
    }
    Ok((c, u, d))
}

fn check_fraction(name: &str, value: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&value) {
        bail!("{name} must be between 0 and 1");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("--url {:?}", args.url))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("--url must be http:// or https://");
    }
    check_loopback(&url).await?;
    let secret =
        SigningSecret::parse(&args.secret).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let mix = parse_mix(&args.mix)?;
    let org_mix = parse_org_mix(&args.org_mix)?;
    if args.preload_users && args.organizations == 0 {
        bail!("--preload-users times the organization events alone: give --organizations");
    }
    for (name, value) in [
        ("--duplicates", args.duplicates),
        ("--no-email", args.no_email),
        ("--non-ascii", args.non_ascii),
        ("--move-emails", args.move_emails),
    ] {
        check_fraction(name, value)?;
    }
    if args.concurrency == 0 || args.users == 0 {
        bail!("--concurrency and --users must be at least 1");
    }
    if let Some(db) = &args.database_url {
        quoted_table(&args.table)?;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres:")
            || db.starts_with("postgresql:"))
        {
            bail!("--database-url must start with postgresql://, postgres:// or sqlite:");
        }
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);

    // The stream and its delivery order, built and signed before anything is timed.
    let build_started = Instant::now();
    let options = StreamOptions {
        users: args.users,
        events: args.events,
        mix,
        no_email: args.no_email,
        non_ascii: args.non_ascii,
        move_emails: args.move_emails,
        tag: "",
        base_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
        orgs: (args.organizations > 0).then_some(OrgOptions {
            organizations: args.organizations,
            events: args.org_events,
            mix: org_mix,
        }),
    };
    let stream = build_stream(&mut rng, &options)?;
    let (mut order, mut duplicates) = delivery_order(
        &mut rng,
        &stream.events,
        args.duplicates,
        args.dup_max_lag,
        args.shuffle.then_some(args.shuffle_window),
    );
    if args.preload_users {
        // The user events go before the timed phase; only the others are timed.
        order.retain(|&(i, _)| !matches!(stream.events[i].key, Key::User(_)));
        duplicates = order.iter().filter(|d| d.1).count();
    }
    let out_of_order = {
        let mut newest: HashMap<Key, usize> = HashMap::new();
        let mut count = 0;
        for &(i, _) in &order {
            let e = &stream.events[i];
            let last = newest.entry(e.key).or_insert(e.seq);
            if e.seq < *last {
                count += 1;
            }
            *last = (*last).max(e.seq);
        }
        count
    };
    let body_bytes: usize = order
        .iter()
        .map(|&(i, _)| stream.events[i].body.len())
        .sum();
    let non_ascii_events = stream.events.iter().filter(|e| !e.body.is_ascii()).count();
    let build_s = build_started.elapsed().as_secs_f64();

    let timeout = Duration::from_secs(args.timeout.max(1));
    let clients = (0..args.concurrency)
        .map(|_| client(timeout))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Untimed warm-up on users of their own (connections, server and database pools).
    let mut warm_rng = StdRng::seed_from_u64(seed ^ 0x5741_524d);
    let warm = build_stream(
        &mut warm_rng,
        &StreamOptions {
            users: args.warmup,
            events: args.warmup * 3,
            mix: (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0),
            tag: "w",
            orgs: None,
            ..options
        },
    );
    let warmup_failed = match (args.warmup, warm) {
        (0, _) => 0,
        (_, Ok(warm)) => {
            warm_up(
                &clients,
                &url,
                &secret,
                warm.model.users.len(),
                &warm.events,
            )
            .await?
        }
        (_, Err(e)) => return Err(e),
    };
    // With --preload-users, the stream's user events, untimed, each user's in order.
    let preload = if args.preload_users {
        let started = Instant::now();
        let users = stream.model.users.len();
        let failed = warm_up(&clients, &url, &secret, users, &stream.events).await?;
        let sent = stream
            .events
            .iter()
            .filter(|e| matches!(e.key, Key::User(_)))
            .count();
        Some(json!({
            "events": sent,
            "non_2xx": failed,
            "elapsed_s": round3(started.elapsed().as_secs_f64()),
        }))
    } else {
        None
    };

    // Sign everything now: the timed phase only sends.
    let sign_started = Instant::now();
    let leaked: Vec<(&'static str, &'static str)> = stream
        .events
        .iter()
        .map(|e| {
            let id: &'static str = Box::leak(e.svix_id.clone().into_boxed_str());
            let body: &'static str = Box::leak(e.body.clone().into_boxed_str());
            (id, body)
        })
        .collect();
    let (sender, receiver) = mpsc::unbounded_channel();
    for (index, &(event, _)) in order.iter().enumerate() {
        let (svix_id, body) = leaked[event];
        let (headers, signed_at) = sign(&secret, svix_id, body)?;
        sender
            .send(Job {
                index,
                svix_id,
                body,
                headers,
                signed_at,
                attempt: 0,
            })
            .ok()
            .context("queue closed")?;
    }
    let presign_s = build_s + sign_started.elapsed().as_secs_f64();
    let shared = Arc::new(Shared {
        url: url.clone(),
        secret: secret.clone(),
        retries: args.retries.then(|| {
            (
                args.max_retries,
                Duration::from_millis(args.retry_backoff_ms),
            )
        }),
        remaining: AtomicUsize::new(order.len()),
        queue: tokio::sync::Mutex::new(receiver),
        sender: Mutex::new((!order.is_empty()).then_some(sender)),
    });

    // The timed phase.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_before = cpu_snapshot(args.server_pid);
    let started = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(worker(c, Arc::clone(&shared))))
        .collect();
    let mut attempts = Vec::with_capacity(order.len());
    for w in workers {
        attempts.extend(w.await?);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(args.server_pid);

    // Figures.
    let mut latencies: Vec<f64> = attempts
        .iter()
        .map(|a| a.latency.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed_by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut samples: Vec<String> = Vec::new();
    // Per family (user, organization, membership): latencies and outcomes.
    let mut family_latencies: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut family_outcomes: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for a in &attempts {
        let family = stream.events[order[a.index].0].kind.family();
        family_latencies
            .entry(family)
            .or_default()
            .push(a.latency.as_secs_f64() * 1000.0);
        if let Some(outcome) = &a.outcome {
            *family_outcomes
                .entry(family)
                .or_default()
                .entry(outcome.clone())
                .or_default() += 1;
        }
        let status = if a.status == 0 {
            "connection error".to_owned()
        } else {
            a.status.to_string()
        };
        *statuses.entry(status).or_default() += 1;
        if let Some(outcome) = &a.outcome {
            *outcomes.entry(outcome.clone()).or_default() += 1;
        }
        let (event, duplicate) = order[a.index];
        if !(200..300).contains(&a.status) {
            if samples.len() < 5 {
                samples.push(format!(
                    "{} {}: {}",
                    stream.events[event].kind.as_str(),
                    a.status,
                    a.error.as_deref().unwrap_or("").trim()
                ));
            }
            if a.final_attempt {
                let key = format!(
                    "{}{}",
                    stream.events[event].kind.as_str(),
                    if duplicate { " (duplicate)" } else { "" }
                );
                *failed_by_type.entry(key).or_default() += 1;
            }
        }
    }
    let failed_final: usize = failed_by_type.values().sum();
    let resent = attempts.len() - order.len();
    let mut by_family = serde_json::Map::new();
    for (family, mut latencies) in family_latencies {
        latencies.sort_by(f64::total_cmp);
        let deliveries = order
            .iter()
            .filter(|&&(i, _)| stream.events[i].kind.family() == family)
            .count();
        by_family.insert(
            family.to_owned(),
            json!({
                "deliveries": deliveries,
                "share": round3(deliveries as f64 / order.len().max(1) as f64),
                "latency_ms": {
                    "p50": round3(percentile(&latencies, 50.0)),
                    "p95": round3(percentile(&latencies, 95.0)),
                    "p99": round3(percentile(&latencies, 99.0)),
                },
                "outcomes": family_outcomes.remove(family).unwrap_or_default(),
            }),
        );
    }

    let (verification, org_verification) = match &args.database_url {
        Some(db) => {
            let rows = fetch_rows(db, &args.table).await?;
            let orgs = if args.organizations > 0 {
                let (orgs, members) = fetch_organization_rows(db, &args.table).await?;
                Some(verify_organizations(&stream.model, &orgs, &members))
            } else {
                None
            };
            (Some(verify(&stream.model, &rows)), orgs)
        }
        None => (None, None),
    };
    let mismatches = verification
        .as_ref()
        .and_then(|v| v["mismatches"].as_u64())
        .unwrap_or(0)
        + org_verification.as_ref().map_or(0, |v| {
            v["organizations"]["mismatches"].as_u64().unwrap_or(0)
                + v["memberships"]["mismatches"].as_u64().unwrap_or(0)
        });
    let o = stream.orgs;

    let summary = json!({
        "url": url.as_str(),
        "seed": seed,
        "concurrency": args.concurrency,
        "stream": {
            "users": stream.created,
            "events": stream.events.len(),
            "created": stream.created,
            "updated": stream.updated,
            "deleted": stream.deleted,
            "duplicates": duplicates,
            "shuffled_window": args.shuffle.then_some(args.shuffle_window),
            "deliveries": order.len(),
            "out_of_order_deliveries": out_of_order,
            "moved_emails": stream.moved_emails,
            "events_with_non_ascii": non_ascii_events,
            "mean_body_bytes": body_bytes / order.len().max(1),
            "organizations": (args.organizations > 0).then(|| json!({
                "created": o.created,
                "updated": o.updated,
                "slug_moves": o.slug_moves,
                "deleted": o.deleted,
                "memberships_created": o.members_created,
                "readded": o.readded,
                "role_changes": o.role_changes,
                "removals": o.removals,
                "removed_with_organization_or_user": o.removed_with_owner,
                "membership_deleted_events_for_those": o.removal_events_for_owner,
            })),
            "preloaded_users": preload,
        },
        "presign_s": round3(presign_s),
        "warmup": {"users": args.warmup, "non_2xx": warmup_failed},
        "elapsed_s": round3(wall),
        "events_per_s": round1(order.len() as f64 / wall.max(1e-9)),
        "requests_per_s": round1(attempts.len() as f64 / wall.max(1e-9)),
        "latency_ms": {
            "p50": round3(percentile(&latencies, 50.0)),
            "p95": round3(percentile(&latencies, 95.0)),
            "p99": round3(percentile(&latencies, 99.0)),
            "max": round3(latencies.last().copied().unwrap_or(0.0)),
            "mean": round3(mean),
        },
        "by_family": by_family,
        "requests": attempts.len(),
        "status": statuses,
        "outcomes": outcomes,
        "retries": {
            "enabled": args.retries,
            "resent": resent,
            "still_failing": failed_final,
            "still_failing_by_type": failed_by_type,
        },
        "failure_samples": samples,
        "cpu": cpu_report(&cpu_before, &cpu_after, cores),
        "table": verification,
        "organization_tables": org_verification,
    });

    if args.json {
        println!("{summary}");
    } else {
        print_text(&summary, &args.table);
    }
    Ok(if mismatches > 0 {
        ExitCode::from(1)
    } else if failed_final > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn counts(map: &Value) -> String {
    map.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn print_text(s: &Value, table: &str) {
    let st = &s["stream"];
    println!(
        "loadgen -> {} (seed {}, concurrency {})",
        s["url"].as_str().unwrap_or(""),
        s["seed"],
        s["concurrency"]
    );
    println!(
        "  stream      {} events for {} users ({} created, {} updated, {} deleted), {} duplicates, \
         {} deliveries, {} out of order, {} with non-ASCII text, {} moved emails, ~{} B per body",
        st["events"],
        st["users"],
        st["created"],
        st["updated"],
        st["deleted"],
        st["duplicates"],
        st["deliveries"],
        st["out_of_order_deliveries"],
        st["events_with_non_ascii"],
        st["moved_emails"],
        st["mean_body_bytes"],
    );
    let o = &st["organizations"];
    if !o.is_null() {
        println!(
            "  orgs        {} organizations created, {} updated ({} slug moves), {} deleted; \
             {} memberships created ({} re-adds), {} role changes, {} removals, {} removed with \
             their organization or user ({} with an event of their own)",
            o["created"],
            o["updated"],
            o["slug_moves"],
            o["deleted"],
            o["memberships_created"],
            o["readded"],
            o["role_changes"],
            o["removals"],
            o["removed_with_organization_or_user"],
            o["membership_deleted_events_for_those"],
        );
    }
    let p = &st["preloaded_users"];
    if !p.is_null() {
        println!(
            "  preloaded   {} user events before the timed phase, in {} s ({} not 2xx)",
            p["events"], p["elapsed_s"], p["non_2xx"]
        );
    }
    println!(
        "  throughput  {} events/s ({} deliveries in {} s; built and signed in {} s)",
        s["events_per_s"], st["deliveries"], s["elapsed_s"], s["presign_s"]
    );
    let l = &s["latency_ms"];
    println!(
        "  latency ms  p50 {}  p95 {}  p99 {}  max {}  mean {}",
        l["p50"], l["p95"], l["p99"], l["max"], l["mean"]
    );
    if let Some(families) = s["by_family"].as_object()
        && families.len() > 1
    {
        for (family, f) in families {
            let l = &f["latency_ms"];
            println!(
                "  {family:<11} {} deliveries ({} %), latency ms p50 {}  p95 {}  p99 {}; {}",
                f["deliveries"],
                round1(f["share"].as_f64().unwrap_or(0.0) * 100.0),
                l["p50"],
                l["p95"],
                l["p99"],
                counts(&f["outcomes"])
            );
        }
    }
    println!("  answers     {} (per request)", counts(&s["status"]));
    println!("  outcomes    {}", counts(&s["outcomes"]));
    let r = &s["retries"];
    if r["enabled"].as_bool() == Some(true) {
        println!(
            "  retries     {} resent, {} still failing ({})",
            r["resent"],
            r["still_failing"],
            counts(&r["still_failing_by_type"])
        );
    } else if r["still_failing"].as_u64() != Some(0) {
        println!(
            "  failed      {} ({})",
            r["still_failing"],
            counts(&r["still_failing_by_type"])
        );
    }
    for sample in s["failure_samples"].as_array().into_iter().flatten() {
        println!("    e.g. {}", sample.as_str().unwrap_or(""));
    }
    let c = &s["cpu"];
    println!(
        "  cpu         machine {} % busy of {} cores; loadgen {} s, server {} s, postgres {} s, other {} s",
        c["machine_busy_pct"],
        c["cores"],
        c["loadgen_cpu_s"],
        c["server_cpu_s"],
        c["postgres_cpu_s"],
        c["other_cpu_s"]
    );
    let t = &s["table"];
    if !t.is_null() {
        println!(
            "  table {table}: {} rows, {} expected; missing {}, zombie {}, stale {}, field mismatch {} \
             ({} rows of other users)",
            t["rows_in_table"],
            t["expected_rows"],
            t["missing"],
            t["zombies"],
            t["stale"],
            t["field_mismatches"],
            t["unknown_rows"],
        );
        if t["mismatches"].as_u64() != Some(0) {
            println!("    fields: {}", counts(&t["mismatched_fields"]));
            println!("    examples: {}", t["examples"]);
        }
    }
    let o = &s["organization_tables"];
    for name in ["organizations", "memberships"] {
        let t = &o[name];
        if t.is_null() {
            continue;
        }
        println!(
            "  {name}: {} rows, {} expected; missing {}, zombie {}, stale {}, field mismatch {} \
             ({} rows of others)",
            t["rows_in_table"],
            t["expected_rows"],
            t["missing"],
            t["zombies"],
            t["stale"],
            t["field_mismatches"],
            t["unknown_rows"],
        );
        if t["mismatches"].as_u64() != Some(0) {
            println!("    fields: {}", counts(&t["mismatched_fields"]));
            println!("    examples: {}", t["examples"]);
        }
    }
}
