//! Property: random histories of Clerk organizations and memberships mixed with users
//! (organizations created, renamed and moving slugs between them; members joining, changing
//! role, leaving and joining again under a new membership id; organizations and users deleted,
//! with or without an `organizationMembership.deleted` per membership that goes with them),
//! turned into events and delivered with duplicates, shuffled and concurrently, to one service
//! or to two on one database, always leave `organizations`, `organization_memberships` and
//! `users` equal to the history's final state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::NaiveDateTime;
use clerk_sync::clerk::sample::{
    self, SampleMembership, SampleOrganization, SampleUser, random_id,
};
use clerk_sync::webhook::signed_headers;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::support::{Backend, TestApp, TestSql};

const ORGS: usize = 3;
const USERS: usize = 3;
/// Slugs organizations ask for; a holder that must give one up moves to a free one of these,
/// or to a slug never used before when none is free.
const SLUGS: usize = 3;
const NAMES: [&str; 4] = ["Acme", "Ωmega Labs", "Zoë & Łukasz", "O'Brien Ltd"];
const ROLES: [&str; 3] = ["org:admin", "org:member", "org:billing_manager"];
/// Range of the index a step picks a membership (or a former one) with, counting round.
const PICKS: usize = 4;
const FIRST_NAMES: [&str; 3] = ["Ada", "山田", "Ωμέγα"];
const T0: i64 = 1_750_000_000_000;
/// Histories per run of the property, and the most steps one has (exclusive).
const CASES: u32 = 64;
const MAX_STEPS: usize = 48;

/// What Clerk sends for the memberships that go with an organization or a user: whether it
/// sends `organizationMembership.deleted` for them is not documented, so every way is played.
#[derive(Debug, Clone, Copy)]
enum Removals {
    /// No membership event: only the organization's or user's own deletion.
    Silent,
    /// One `organizationMembership.deleted` per membership, before the deletion.
    EventsFirst,
    /// One per membership, after the deletion.
    EventsAfter,
}

#[derive(Debug, Clone)]
enum Step {
    /// The organization is created, or renamed and given `slug` (its holder, if any, moving
    /// to another slug first).
    Organization {
        org: usize,
        name: usize,
        slug: usize,
    },
    DeleteOrganization {
        org: usize,
        removals: Removals,
    },
    /// The user (signed up first if needed) joins the organization with a role: a new
    /// membership id each time, also when the user was a member before.
    Join {
        org: usize,
        user: usize,
        role: usize,
    },
    /// The `member`-th live membership (in (organization, user) order, counting round) is
    /// given a role (possibly the one it has: still an update with a newer `updated_at`).
    Role {
        member: usize,
        role: usize,
    },
    /// The `member`-th live membership ends: the user leaves or is removed.
    Leave {
        member: usize,
    },
    /// The `pair`-th (organization, user) that had a membership and has none now, both still
    /// there, joins again: a new membership id, as Clerk gives.
    Rejoin {
        pair: usize,
        role: usize,
    },
    /// The user signs up or edits the profile.
    User {
        user: usize,
        first_name: usize,
    },
    DeleteUser {
        user: usize,
        removals: Removals,
    },
}

fn removals() -> impl Strategy<Value = Removals> {
    prop_oneof![
        Just(Removals::Silent),
        Just(Removals::EventsFirst),
        Just(Removals::EventsAfter),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..ORGS, 0..NAMES.len(), 0..SLUGS)
            .prop_map(|(org, name, slug)| Step::Organization { org, name, slug }),
        1 => (0..ORGS, removals())
            .prop_map(|(org, removals)| Step::DeleteOrganization { org, removals }),
        4 => (0..ORGS, 0..USERS, 0..ROLES.len())
            .prop_map(|(org, user, role)| Step::Join { org, user, role }),
        2 => (0..PICKS, 0..ROLES.len()).prop_map(|(member, role)| Step::Role { member, role }),
        2 => (0..PICKS).prop_map(|member| Step::Leave { member }),
        2 => (0..PICKS, 0..ROLES.len()).prop_map(|(pair, role)| Step::Rejoin { pair, role }),
        1 => (0..USERS, 0..FIRST_NAMES.len())
            .prop_map(|(user, first_name)| Step::User { user, first_name }),
        1 => (0..USERS, removals()).prop_map(|(user, removals)| Step::DeleteUser { user, removals }),
    ]
}

/// A live organization: name, slug, `clerkUpdatedAt` (ms).
type OrgState = (String, Option<String>, i64);
/// A live membership: organization, user, role, `clerkUpdatedAt` (ms).
type MemberState = (String, String, String, i64);
/// A live user: first name, `clerkUpdatedAt` (ms).
type UserState = (Option<String>, i64);

/// What the tables must hold at the end, keyed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Final {
    organizations: BTreeMap<String, OrgState>,
    memberships: BTreeMap<String, MemberState>,
    users: BTreeMap<String, UserState>,
}

/// Clerk's side of one history.
struct Clerk {
    case: usize,
    clock: i64,
    organizations: BTreeMap<usize, SampleOrganization>,
    deleted_organizations: BTreeSet<usize>,
    users: BTreeMap<usize, SampleUser>,
    deleted_users: BTreeSet<usize>,
    /// Live memberships by (organization, user).
    memberships: BTreeMap<(usize, usize), SampleMembership>,
    next_membership: usize,
    next_fresh_slug: usize,
    /// The events in the order Clerk sent them, and one readable line each.
    events: Vec<String>,
    log: Vec<String>,
    /// (organization, user) pairs that ever had a membership, and what the history did.
    ever_members: BTreeSet<(usize, usize)>,
    coverage: Coverage,
}

/// How often a history did each of the things the property is about.
#[derive(Debug, Clone, Copy, Default)]
struct Coverage {
    slug_moves: usize,
    role_changes: usize,
    removals: usize,
    readds: usize,
    /// Organization or user deletions that took memberships with them, by [`Removals`].
    deletions_with_members: [usize; 3],
}

impl Clerk {
    fn new(case: usize) -> Clerk {
        Clerk {
            case,
            clock: T0,
            organizations: BTreeMap::new(),
            deleted_organizations: BTreeSet::new(),
            users: BTreeMap::new(),
            deleted_users: BTreeSet::new(),
            memberships: BTreeMap::new(),
            next_membership: 0,
            next_fresh_slug: 0,
            events: Vec::new(),
            log: Vec::new(),
            ever_members: BTreeSet::new(),
            coverage: Coverage::default(),
        }
    }

    fn org_id(&self, org: usize) -> String {
        format!("org_c{}o{org}", self.case)
    }

    fn user_id(&self, user: usize) -> String {
        format!("user_c{}u{user}", self.case)
    }

    fn slug(&self, slug: usize) -> String {
        format!("s{slug}-c{}", self.case)
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn emit(&mut self, body: String, line: String) {
        self.log.push(format!("t+{} {line}", self.clock - T0));
        self.events.push(body);
    }

    /// A slug no live organization holds, other than `unwanted`.
    fn free_slug(&mut self, unwanted: &str) -> String {
        for v in 0..SLUGS {
            let candidate = self.slug(v);
            if candidate != unwanted && !self.organizations.values().any(|o| o.slug == candidate) {
                return candidate;
            }
        }
        self.next_fresh_slug += 1;
        format!("x{}-c{}", self.next_fresh_slug, self.case)
    }

    fn organization(&mut self, org: usize, name: usize, slug: usize) {
        if self.deleted_organizations.contains(&org) {
            return;
        }
        let wanted = self.slug(slug);
        // Clerk keeps slugs unique at every instant: the holder changes slug first.
        let holder = self
            .organizations
            .iter()
            .find(|(o, held)| **o != org && held.slug == wanted)
            .map(|(o, _)| *o);
        if let Some(holder) = holder {
            self.coverage.slug_moves += 1;
            let moved_to = self.free_slug(&wanted);
            let at = self.tick();
            let h = self.organizations.get_mut(&holder).unwrap();
            h.slug = moved_to;
            h.updated_at = at;
            let (body, line) = (
                sample::organization_updated(h),
                format!(
                    "organization.updated {} slug {} (gives up {wanted})",
                    h.id, h.slug
                ),
            );
            self.emit(body, line);
        }
        let at = self.tick();
        let id = self.org_id(org);
        let created = !self.organizations.contains_key(&org);
        let o = self
            .organizations
            .entry(org)
            .or_insert_with(|| SampleOrganization::new(id, at));
        o.name = NAMES[name].to_owned();
        o.slug = wanted;
        o.updated_at = at;
        let kind = if created {
            "organization.created"
        } else {
            "organization.updated"
        };
        let body = if created {
            sample::organization_created(o)
        } else {
            sample::organization_updated(o)
        };
        let line = format!("{kind} {} name {:?} slug {}", o.id, o.name, o.slug);
        self.emit(body, line);
    }

    /// The membership as Clerk sends it now: with its organization as it is now.
    fn current(&self, (org, user): (usize, usize), mut m: SampleMembership) -> SampleMembership {
        if let Some(o) = self.organizations.get(&org) {
            m.organization = o.clone();
        }
        debug_assert_eq!(m.user_id, self.user_id(user));
        m
    }

    fn membership_deleted(&mut self, key: (usize, usize), m: SampleMembership) {
        let m = self.current(key, m);
        let at = self.tick();
        let line = format!(
            "organizationMembership.deleted {} ({} in {}, updated t+{})",
            m.id,
            m.user_id,
            m.organization.id,
            m.updated_at - T0
        );
        self.emit(sample::membership_deleted(&m, at), line);
    }

    fn user(&mut self, user: usize, first_name: Option<usize>) {
        if self.deleted_users.contains(&user) {
            return;
        }
        let at = self.tick();
        let id = self.user_id(user);
        let created = !self.users.contains_key(&user);
        let u = self
            .users
            .entry(user)
            .or_insert_with(|| SampleUser::new(id, at));
        if let Some(first_name) = first_name {
            u.first_name = Some(FIRST_NAMES[first_name].to_owned());
        }
        u.updated_at = at;
        let (body, kind) = if created {
            (sample::user_created(u), "user.created")
        } else {
            (sample::user_updated(u), "user.updated")
        };
        let line = format!("{kind} {} first name {:?}", u.id, u.first_name);
        self.emit(body, line);
    }

    fn join(&mut self, org: usize, user: usize, role: usize) {
        if !self.organizations.contains_key(&org)
            || self.deleted_users.contains(&user)
            || self.memberships.contains_key(&(org, user))
        {
            return;
        }
        if !self.users.contains_key(&user) {
            self.user(user, None);
        }
        if !self.ever_members.insert((org, user)) {
            self.coverage.readds += 1;
        }
        let at = self.tick();
        self.next_membership += 1;
        let m = SampleMembership::new(
            format!("orgmem_c{}m{}", self.case, self.next_membership),
            self.organizations[&org].clone(),
            self.user_id(user),
            at,
        )
        .with_role(ROLES[role]);
        let line = format!(
            "organizationMembership.created {} ({} in {} as {})",
            m.id, m.user_id, m.organization.id, m.role
        );
        self.emit(sample::membership_created(&m), line);
        self.memberships.insert((org, user), m);
    }

    /// The `n`-th live membership's (organization, user), counting round.
    fn member(&self, n: usize) -> Option<(usize, usize)> {
        let count = self.memberships.len();
        (count > 0).then(|| *self.memberships.keys().nth(n % count).unwrap())
    }

    fn role(&mut self, member: usize, role: usize) {
        let Some((org, user)) = self.member(member) else {
            return;
        };
        let m = self.memberships[&(org, user)].clone();
        self.coverage.role_changes += 1;
        let mut m = self.current((org, user), m);
        m.role = ROLES[role].to_owned();
        m.updated_at = self.tick();
        let line = format!("organizationMembership.updated {} role {}", m.id, m.role);
        self.emit(sample::membership_updated(&m), line);
        self.memberships.insert((org, user), m);
    }

    fn leave(&mut self, member: usize) {
        let Some(key) = self.member(member) else {
            return;
        };
        let m = self.memberships.remove(&key).unwrap();
        self.coverage.removals += 1;
        self.membership_deleted(key, m);
    }

    fn rejoin(&mut self, pair: usize, role: usize) {
        let former: Vec<(usize, usize)> = self
            .ever_members
            .iter()
            .copied()
            .filter(|(org, user)| {
                self.organizations.contains_key(org)
                    && !self.deleted_users.contains(user)
                    && !self.memberships.contains_key(&(*org, *user))
            })
            .collect();
        if !former.is_empty() {
            let (org, user) = former[pair % former.len()];
            self.join(org, user, role);
        }
    }

    /// Removes the memberships `gone` selects, with their events when `removals` says so,
    /// around `deletion` (which emits the organization's or user's own deletion).
    fn delete_with_memberships(
        &mut self,
        removals: Removals,
        gone: impl Fn(&(usize, usize)) -> bool,
        deletion: impl FnOnce(&mut Clerk),
    ) {
        let keys: Vec<(usize, usize)> = self.memberships.keys().copied().filter(gone).collect();
        if !keys.is_empty() {
            self.coverage.deletions_with_members[removals as usize] += 1;
        }
        // Their last state, embedding the organization as it was before the deletion.
        let removed: Vec<((usize, usize), SampleMembership)> = keys
            .iter()
            .map(|key| {
                let m = self.memberships.remove(key).unwrap();
                (*key, self.current(*key, m))
            })
            .collect();
        if let Removals::EventsFirst = removals {
            for (key, m) in removed.iter().cloned() {
                self.membership_deleted(key, m);
            }
        }
        deletion(self);
        if let Removals::EventsAfter = removals {
            for (key, m) in removed {
                self.membership_deleted(key, m);
            }
        }
    }

    fn delete_organization(&mut self, org: usize, removals: Removals) {
        if !self.organizations.contains_key(&org) {
            return;
        }
        self.delete_with_memberships(
            removals,
            |(o, _)| *o == org,
            |clerk| {
                let o = clerk.organizations.remove(&org).unwrap();
                clerk.deleted_organizations.insert(org);
                let at = clerk.tick();
                let line = format!("organization.deleted {} (slug {})", o.id, o.slug);
                clerk.emit(sample::organization_deleted(&o.id, &o.slug, at), line);
            },
        );
    }

    fn delete_user(&mut self, user: usize, removals: Removals) {
        if !self.users.contains_key(&user) {
            return;
        }
        self.delete_with_memberships(
            removals,
            |(_, u)| *u == user,
            |clerk| {
                let u = clerk.users.remove(&user).unwrap();
                clerk.deleted_users.insert(user);
                let at = clerk.tick();
                clerk.emit(
                    sample::user_deleted(&u.id, at),
                    format!("user.deleted {}", u.id),
                );
            },
        );
    }

    fn final_state(&self) -> Final {
        Final {
            organizations: self
                .organizations
                .values()
                .map(|o| {
                    (
                        o.id.clone(),
                        (o.name.clone(), Some(o.slug.clone()), o.updated_at),
                    )
                })
                .collect(),
            memberships: self
                .memberships
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        (
                            m.organization.id.clone(),
                            m.user_id.clone(),
                            m.role.clone(),
                            m.updated_at,
                        ),
                    )
                })
                .collect(),
            users: self
                .users
                .values()
                .map(|u| (u.id.clone(), (u.first_name.clone(), u.updated_at)))
                .collect(),
        }
    }
}

/// A history as Clerk played it.
struct Played {
    /// The events in the order Clerk sent them (`updated_at`, and a deletion's timestamp,
    /// increasing), and one readable line each.
    events: Vec<String>,
    log: Vec<String>,
    expected: Final,
    coverage: Coverage,
}

/// Clerk's side: plays the steps.
fn play(case: usize, steps: &[Step]) -> Played {
    let mut clerk = Clerk::new(case);
    for step in steps {
        match *step {
            Step::Organization { org, name, slug } => clerk.organization(org, name, slug),
            Step::DeleteOrganization { org, removals } => clerk.delete_organization(org, removals),
            Step::Join { org, user, role } => clerk.join(org, user, role),
            Step::Role { member, role } => clerk.role(member, role),
            Step::Leave { member } => clerk.leave(member),
            Step::Rejoin { pair, role } => clerk.rejoin(pair, role),
            Step::User { user, first_name } => clerk.user(user, Some(first_name)),
            Step::DeleteUser { user, removals } => clerk.delete_user(user, removals),
        }
    }
    Played {
        expected: clerk.final_state(),
        events: clerk.events,
        log: clerk.log,
        coverage: clerk.coverage,
    }
}

/// Svix's side: every event gets an id, some are delivered twice, the order is shuffled,
/// several deliveries are in flight at once, and each goes to one of `apps` (a duplicate may
/// go to another).
async fn deliver_all(apps: &[TestApp], events: Vec<String>, duplicate_every: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut deliveries: Vec<(usize, String, String)> = Vec::new();
    for (i, body) in events.into_iter().enumerate() {
        let svix_id = random_id("msg");
        if duplicate_every > 0 && i % duplicate_every == 0 {
            let app = rng.random_range(0..apps.len());
            deliveries.push((app, svix_id.clone(), body.clone()));
        }
        let app = rng.random_range(0..apps.len());
        deliveries.push((app, svix_id, body));
    }
    deliveries.shuffle(&mut rng);
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for (app, svix_id, body) in deliveries {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let app = &apps[app];
        let (client, url, secret) = (app.client.clone(), app.webhook_url(), app.secret.clone());
        tasks.spawn(async move {
            let now = chrono::Utc::now().timestamp();
            let mut request = client.post(url).body(body.clone());
            for (name, value) in signed_headers(&secret, &svix_id, now, body.as_bytes()).unwrap() {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            drop(permit);
            (status, text)
        });
    }
    while let Some(answer) = tasks.join_next().await {
        let (status, text) = answer.unwrap();
        assert_eq!(status, 200, "every delivery is accepted: {text}");
    }
}

type OrgRow = (String, String, Option<String>, bool, Option<NaiveDateTime>);
type MemberRow = (String, String, String, String, Option<NaiveDateTime>);
type UserRow = (String, Option<String>, Option<NaiveDateTime>);

const ORG_ROWS: &str = r#"SELECT id, name, slug, "deletedAt" IS NOT NULL AS deleted, "clerkUpdatedAt"
    FROM organizations WHERE id LIKE 'org!_c%' ESCAPE '!'"#;
const MEMBER_ROWS: &str = r#"SELECT id, "organizationId", "userId", role, "clerkUpdatedAt"
    FROM organization_memberships WHERE id LIKE 'orgmem!_c%' ESCAPE '!'"#;
const USER_ROWS: &str =
    r#"SELECT id, "firstName", "clerkUpdatedAt" FROM users WHERE id LIKE 'user!_c%' ESCAPE '!'"#;

/// The rows of `case` in the three tables.
async fn tables(app: &TestApp, case: usize) -> Final {
    let (orgs, members, users): (Vec<OrgRow>, Vec<MemberRow>, Vec<UserRow>) = match app.sql() {
        TestSql::Postgres(pool) => (
            sqlx::query_as(ORG_ROWS).fetch_all(pool).await.unwrap(),
            sqlx::query_as(MEMBER_ROWS).fetch_all(pool).await.unwrap(),
            sqlx::query_as(USER_ROWS).fetch_all(pool).await.unwrap(),
        ),
        TestSql::Sqlite(pool) => (
            sqlx::query_as(ORG_ROWS).fetch_all(pool).await.unwrap(),
            sqlx::query_as(MEMBER_ROWS).fetch_all(pool).await.unwrap(),
            sqlx::query_as(USER_ROWS).fetch_all(pool).await.unwrap(),
        ),
    };
    let ms = |at: Option<NaiveDateTime>| {
        at.expect("synced rows have clerkUpdatedAt")
            .and_utc()
            .timestamp_millis()
    };
    let (org, member, user) = (
        format!("org_c{case}o"),
        format!("orgmem_c{case}m"),
        format!("user_c{case}u"),
    );
    Final {
        organizations: orgs
            .into_iter()
            .filter(|row| row.0.starts_with(&org))
            .map(|(id, name, slug, deleted, at)| {
                assert!(!deleted, "hard mode keeps no deleted organization: {id}");
                (id, (name, slug, ms(at)))
            })
            .collect(),
        memberships: members
            .into_iter()
            .filter(|row| row.0.starts_with(&member))
            .map(|(id, org, user, role, at)| (id, (org, user, role, ms(at))))
            .collect(),
        users: users
            .into_iter()
            .filter(|row| row.0.starts_with(&user))
            .map(|(id, first_name, at)| (id, (first_name, ms(at))))
            .collect(),
    }
}

/// The property, `cases` random histories long, against the services `spawn` starts (in the
/// property's own runtime; several share one database). Every delivery must be answered 200
/// at once: nothing retries here.
fn random_histories_converge<F: Future<Output = Vec<TestApp>>>(
    cases: u32,
    spawn: impl FnOnce() -> F,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let apps = runtime.block_on(spawn());
    let case_numbers = AtomicUsize::new(0);
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..MAX_STEPS), duplicate_every in 0usize..4, seed: u64)| {
        let case = case_numbers.fetch_add(1, Ordering::SeqCst);
        let Played { events, log, expected, .. } = play(case, &steps);
        runtime.block_on(async {
            deliver_all(&apps, events, duplicate_every, seed).await;
            let actual = tables(&apps[0], case).await;
            assert!(
                actual == expected,
                "the tables differ from Clerk's final state\n\
                 steps: {steps:#?}\nClerk sent, in this order:\n  {}\n\
                 expected: {expected:#?}\nactual: {actual:#?}",
                log.join("\n  "),
            );
        });
    });
}

fn one_service(
    cases: u32,
    backend: Backend,
    configure: impl FnOnce(&mut clerk_sync::config::ServeConfig),
) {
    random_histories_converge(cases, || async move {
        vec![TestApp::spawn_with(backend, configure).await]
    });
}

/// Delivered shuffled, duplicated and concurrently to one service.
#[test]
fn random_organization_histories_converge_on_postgres() {
    one_service(CASES, Backend::Postgres, |_| {});
}

#[test]
fn random_organization_histories_converge_on_sqlite() {
    one_service(CASES, Backend::Sqlite, |_| {});
}

/// One writer: concurrent deliveries queue up and are committed in batches (a membership and
/// its organization's or user's deletion in one transaction). Half the histories: the rules
/// are the same, the batching is what is under test.
#[test]
fn random_organization_histories_converge_when_written_in_batches_by_one_writer() {
    one_service(CASES / 2, Backend::Postgres, |config| {
        config.writers = Some(1)
    });
}

/// Two services on one database, each delivery (and a duplicate's second delivery) going to
/// either: the advisory locks must serialize what one process would. Half the histories, as
/// above.
#[test]
fn random_organization_histories_converge_across_two_services_on_one_database() {
    random_histories_converge(CASES / 2, || async {
        let first = TestApp::spawn(Backend::Postgres).await;
        let second = TestApp::spawn_on(first.db.clone(), Backend::Postgres, |_| {}).await;
        vec![first, second]
    });
}

/// The histories reach what the property is about: in a run's worth of them, slugs move, roles
/// change, members leave and come back under a new id, and organizations and users are deleted
/// with members, in each of the three ways Clerk might report it.
#[test]
fn random_organization_histories_reach_every_case() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let histories = proptest::collection::vec(step(), 1..MAX_STEPS);
    let mut reached = [0usize; 8];
    let mut events = 0;
    for case in 0..CASES as usize {
        let steps = histories.new_tree(&mut runner).unwrap().current();
        let played = play(case, &steps);
        events += played.events.len();
        let c = played.coverage;
        let [silent, first, after] = c.deletions_with_members;
        for (n, count) in [
            c.slug_moves,
            c.role_changes,
            c.removals,
            c.readds,
            silent,
            first,
            after,
        ]
        .into_iter()
        .enumerate()
        {
            reached[n] += usize::from(count > 0);
        }
        reached[7] += usize::from(!played.expected.memberships.is_empty());
    }
    eprintln!(
        "{CASES} histories, {events} events; histories with slug moves, role changes, removals, \
         re-adds, deletions taking members (silent, events first, events after), members at the \
         end: {reached:?}"
    );
    assert!(reached.iter().all(|n| *n >= 3), "{reached:?}");
}
