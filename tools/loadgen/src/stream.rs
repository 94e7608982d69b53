//! The stream: Clerk's events in Clerk's order, built from a seed (the users' timelines with
//! the organization slots among them), and the order they are delivered in.

use std::collections::HashMap;

use anyhow::{Context, bail};
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::model::{Event, Key, Kind, Made, Model};
use crate::organizations::{self, OrgCounts, OrgOptions, OrgStep, OrgWorld};
use crate::random::seeded_id;
use crate::users::{Profiles, UserWorld};

#[derive(Clone, Copy)]
pub(crate) struct StreamOptions {
    pub(crate) users: usize,
    pub(crate) events: usize,
    pub(crate) mix: (f64, f64, f64),
    pub(crate) profiles: Profiles,
    pub(crate) base_ms: i64,
    pub(crate) orgs: Option<OrgOptions>,
}

pub(crate) struct Stream {
    pub(crate) events: Vec<Event>,
    pub(crate) model: Model,
    pub(crate) created: usize,
    pub(crate) updated: usize,
    pub(crate) deleted: usize,
    pub(crate) moved_emails: usize,
    pub(crate) orgs: OrgCounts,
}

/// A stream slot: the next event of a user's timeline, or an organization step.
#[derive(Debug, Clone, Copy)]
enum Ticket {
    User(usize),
    Org(OrgStep),
}

pub(crate) fn build_stream(rng: &mut StdRng, options: &StreamOptions) -> anyhow::Result<Stream> {
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
        tickets.extend(
            organizations::slots(rng, &orgs)
                .into_iter()
                .map(Ticket::Org),
        );
    }
    tickets.shuffle(rng);

    let mut users = UserWorld::new(options.profiles, created);
    let mut world = OrgWorld::default();
    let mut position = vec![0usize; created];
    let mut ts = options.base_ms;
    let mut events = Vec::with_capacity(tickets.len());
    for ticket in tickets {
        ts += rng.random_range(50..400); // ms between changes in Clerk
        let made: Vec<Made> = match ticket {
            Ticket::Org(step) => world.step(rng, &users, step, ts, org_limit),
            Ticket::User(user) => {
                let kind = plan[user][position[user]];
                position[user] += 1;
                let body = users.event(rng, user, kind, ts);
                let mut made = vec![(Key::User(user), kind, body)];
                if kind == Kind::Deleted {
                    made.extend(world.user_deleted(rng, user, ts));
                }
                made
            }
        };
        // Steps that send several events take a millisecond each.
        ts += made.len().saturating_sub(1) as i64;
        for (key, kind, body) in made {
            let svix_id = seeded_id(rng, "msg");
            events.push(Event {
                seq: events.len(),
                key,
                kind,
                svix_id,
                body,
            });
        }
    }
    let moved_emails = users.moved_emails();
    let (users, is_deleted) = users.finish();
    Ok(Stream {
        events,
        model: Model {
            users,
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
pub(crate) fn delivery_order(
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

/// Deliveries that come after a later event of the same timeline (a user's, or an
/// organization's with its memberships).
pub(crate) fn out_of_order(events: &[Event], order: &[(usize, bool)]) -> usize {
    let mut newest: HashMap<Key, usize> = HashMap::new();
    let mut count = 0;
    for &(i, _) in order {
        let e = &events[i];
        let last = newest.entry(e.key).or_insert(e.seq);
        if e.seq < *last {
            count += 1;
        }
        *last = (*last).max(e.seq);
    }
    count
}

pub(crate) fn parse_mix(mix: &str) -> anyhow::Result<(f64, f64, f64)> {
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

pub(crate) fn parse_org_mix(mix: &str) -> anyhow::Result<[f64; 5]> {
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;

    use super::*;

    fn options(orgs: bool) -> StreamOptions {
        StreamOptions {
            users: 40,
            events: 200,
            mix: (0.4, 0.5, 0.1),
            profiles: Profiles {
                no_email: 0.1,
                non_ascii: 0.25,
                move_emails: 0.5,
                tag: "",
            },
            base_ms: 1_767_225_600_000,
            orgs: orgs.then_some(OrgOptions {
                organizations: 8,
                events: 200,
                mix: [0.1, 0.44, 0.25, 0.2, 0.01],
            }),
        }
    }

    /// Everything a seed decides: the events, and the delivery order with duplicates and
    /// shuffles.
    fn fingerprint(seed: u64, orgs: bool) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let stream = build_stream(&mut rng, &options(orgs)).expect("room for the mix");
        let (order, _) = delivery_order(&mut rng, &stream.events, 0.1, 20, Some(10));
        let mut out: Vec<String> = stream
            .events
            .iter()
            .map(|e| format!("{:?} {} {}", e.key, e.svix_id, e.body))
            .collect();
        out.push(format!("{order:?}"));
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_stream_and_another_seed_another() {
        for orgs in [false, true] {
            let a = fingerprint(11, orgs);
            assert_eq!(a, fingerprint(11, orgs));
            assert_ne!(a, fingerprint(12, orgs));
        }
    }

    #[test]
    fn every_user_is_created_first_and_deleted_last() {
        let mut rng = StdRng::seed_from_u64(5);
        let stream = build_stream(&mut rng, &options(true)).expect("room for the mix");
        let user_events = stream
            .events
            .iter()
            .filter(|e| matches!(e.key, Key::User(_)))
            .count();
        assert_eq!(user_events, 200);
        assert_eq!(
            stream.created + stream.updated + stream.deleted,
            user_events
        );
        let mut timelines: HashMap<Key, Vec<Kind>> = HashMap::new();
        for (i, e) in stream.events.iter().enumerate() {
            assert_eq!(e.seq, i);
            timelines.entry(e.key).or_default().push(e.kind);
        }
        for (key, kinds) in timelines {
            if let Key::User(_) = key {
                assert_eq!(kinds[0], Kind::Created, "{key:?}");
                let deletes = kinds.iter().filter(|k| **k == Kind::Deleted).count();
                assert!(deletes == 0 || *kinds.last().expect("one") == Kind::Deleted);
            } else {
                assert_eq!(kinds[0], Kind::OrgCreated, "{key:?}");
            }
        }
        let deleted = stream.model.deleted.iter().filter(|d| **d).count();
        assert_eq!(deleted, stream.deleted);
    }

    #[test]
    fn an_email_belongs_to_one_live_user_even_when_emails_move() {
        let mut moved = 0;
        for seed in 0..5 {
            let mut rng = StdRng::seed_from_u64(seed);
            let stream = build_stream(&mut rng, &options(false)).expect("room for the mix");
            moved += stream.moved_emails;
            let model = &stream.model;
            let live_emails: Vec<&str> = model
                .users
                .iter()
                .zip(&model.deleted)
                .filter(|(_, deleted)| !**deleted)
                .filter_map(|(u, _)| u.email.as_deref())
                .collect();
            let distinct: HashSet<&str> = live_emails.iter().copied().collect();
            assert_eq!(distinct.len(), live_emails.len(), "seed {seed}");
        }
        assert!(moved > 0, "some email should have moved");
    }

    #[test]
    fn a_mix_without_room_is_refused() {
        let mut rng = StdRng::seed_from_u64(1);
        let options = StreamOptions {
            users: 10,
            events: 5,
            mix: (1.0, 0.0, 0.9),
            ..options(false)
        };
        let Err(e) = build_stream(&mut rng, &options) else {
            panic!("5 events cannot hold 5 creates and 5 deletes");
        };
        assert!(e.to_string().contains("leave no room"), "{e}");
    }

    fn events(keys: &[Key]) -> Vec<Event> {
        keys.iter()
            .enumerate()
            .map(|(seq, &key)| Event {
                seq,
                key,
                kind: Kind::Updated,
                svix_id: format!("msg_{seq}"),
                body: String::new(),
            })
            .collect()
    }

    #[test]
    fn duplicates_come_after_their_original_within_the_lag() {
        let events = events(&[Key::User(0); 100]);
        let mut rng = StdRng::seed_from_u64(9);
        let (order, count) = delivery_order(&mut rng, &events, 0.25, 5, None);
        assert_eq!(count, 25);
        assert_eq!(order.len(), 125);
        assert_eq!(order.iter().filter(|d| d.1).count(), 25);
        let originals: Vec<usize> = order.iter().filter(|d| !d.1).map(|d| d.0).collect();
        assert_eq!(originals, (0..100).collect::<Vec<_>>());
        for (at, &(event, duplicate)) in order.iter().enumerate() {
            if duplicate {
                let first = order
                    .iter()
                    .position(|d| *d == (event, false))
                    .expect("sent");
                // Counted in original deliveries: 1 to 5 later (fewer only at the stream's
                // end), never before.
                let later = order[first + 1..at].iter().filter(|d| !d.1).count();
                assert!(
                    later <= 5 && (later >= 1 || event == 99),
                    "{event}: {later}"
                );
            }
        }
    }

    #[test]
    fn shuffling_stays_within_its_windows() {
        let events = events(&[Key::User(0); 30]);
        let mut rng = StdRng::seed_from_u64(2);
        let (order, count) = delivery_order(&mut rng, &events, 0.0, 1, Some(10));
        assert_eq!(count, 0);
        for (window, chunk) in order.chunks(10).enumerate() {
            let mut got: Vec<usize> = chunk.iter().map(|d| d.0).collect();
            got.sort_unstable();
            assert_eq!(got, (window * 10..window * 10 + 10).collect::<Vec<_>>());
        }
        assert_ne!(order, (0..30).map(|i| (i, false)).collect::<Vec<_>>());
    }

    #[test]
    fn out_of_order_counts_per_timeline() {
        let events = events(&[Key::User(0), Key::User(1), Key::User(0), Key::Org(0)]);
        // User 1 before user 0's first event is not out of order: another timeline.
        assert_eq!(
            out_of_order(&events, &[(1, false), (0, false), (2, false)]),
            0
        );
        assert_eq!(
            out_of_order(&events, &[(2, false), (0, false), (3, false)]),
            1
        );
        // A duplicate of an older event, after a newer one, counts as well.
        assert_eq!(
            out_of_order(&events, &[(0, false), (2, false), (0, true), (0, true)]),
            2
        );
    }

    #[test]
    fn parse_mix_takes_three_fractions() {
        assert_eq!(parse_mix("0.4, 0.5,0.1").expect("valid"), (0.4, 0.5, 0.1));
        for (bad, why) in [
            ("0.4,0.5", "three numbers"),
            ("0.4,0.5,0.1,0", "three numbers"),
            ("a,b,c", "three numbers"),
            ("", "three numbers"),
            ("0,0.5,0.5", "created above 0"),
            ("1.5,0,0", "between 0 and 1"),
            ("0.5,-0.1,0", "between 0 and 1"),
        ] {
            let e = parse_mix(bad).expect_err(bad).to_string();
            assert!(e.starts_with(&format!("--mix {bad:?}")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn parse_org_mix_takes_five_weights() {
        assert_eq!(
            parse_org_mix("0,0.45,0.3,0.25,0").expect("valid"),
            [0.0, 0.45, 0.3, 0.25, 0.0]
        );
        assert_eq!(
            parse_org_mix("1,2,3,4,5").expect("weights"),
            [1.0, 2.0, 3.0, 4.0, 5.0]
        );
        for (bad, why) in [
            ("0.1,0.2,0.3,0.4", "five weights"),
            ("1,1,1,1,1,1", "five weights"),
            ("1,x,1,1,1", "five weights"),
            ("1,-1,1,1,1", "none negative"),
            ("0,0,0,0,0", "not all zero"),
            ("1,NaN,1,1,1", "none negative"),
            ("1,inf,1,1,1", "none negative"),
        ] {
            let e = format!("{:#}", parse_org_mix(bad).expect_err(bad));
            assert!(e.starts_with(&format!("--org-mix {bad:?}")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
