//! `loadgen`: a load generator for Clerk webhook receivers (clerk-sync, or any service that
//! takes Svix-signed `user.*` events at one URL).
//!
//! It builds a realistic Clerk event stream (full Clerk User payloads, Clerk's uniqueness rules;
//! optionally organizations and memberships among them), signs every delivery before the timed
//! phase, sends with C keep-alive connections pulling from
//! one queue, optionally with duplicates, shuffled order and Svix-like retries, reports
//! throughput and latency, and checks the final tables against what Clerk holds.

mod cpu;
mod database;
mod model;
mod organizations;
mod random;
mod report;
mod send;
mod stream;
mod users;
mod verify;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use clerk_sync::webhook::SigningSecret;

use crate::model::Key;
use crate::organizations::OrgOptions;
use crate::report::{Figures, percentile, round1, round3};
use crate::send::{Attempt, Shared};
use crate::stream::{Stream, StreamOptions};
use crate::users::Profiles;

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
    let settings = check_args(&args).await?;
    let seed = args.seed.unwrap_or_else(rand::random);

    // The stream and its delivery order, built and signed before anything is timed.
    let build_started = Instant::now();
    let planned = plan(&args, &settings, seed)?;
    let build_s = build_started.elapsed().as_secs_f64();

    let timeout = Duration::from_secs(args.timeout.max(1));
    let clients = (0..args.concurrency)
        .map(|_| send::client(timeout))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let warmup_failed = warm_up(&args, seed, &planned.options, &clients, &settings).await?;
    let preload = preload_users(&args, &planned.stream, &clients, &settings).await?;

    // Sign everything now: the timed phase only sends.
    let sign_started = Instant::now();
    let queue = send::presign(&settings.secret, &planned.stream.events, &planned.order)?;
    let presign_s = build_s + sign_started.elapsed().as_secs_f64();
    let retries = args.retries.then(|| {
        (
            args.max_retries,
            Duration::from_millis(args.retry_backoff_ms),
        )
    });
    let shared = Shared::new(&settings.url, &settings.secret, retries, queue);

    let timed = timed_phase(clients, &shared, args.server_pid, planned.order.len()).await?;
    let figures = report::figures(&timed.attempts, &planned.order, &planned.stream.events);
    let (table, organization_tables) = match &args.database_url {
        Some(db) => {
            let organizations = args.organizations > 0;
            let (users, orgs) =
                verify::check(db, &args.table, organizations, &planned.stream.model).await?;
            (Some(users), orgs)
        }
        None => (None, None),
    };
    let mismatches = verify::mismatches(table.as_ref(), organization_tables.as_ref());
    let failed_final = figures.failed_final;

    let results = Results {
        seed,
        presign_s,
        warmup_failed,
        preload,
        timed,
        figures,
        table,
        organization_tables,
    };
    let summary = summary(&args, &settings, &planned, &results);
    if args.json {
        println!("{summary}");
    } else {
        report::print_text(&summary, &args.table);
    }
    Ok(if mismatches > 0 {
        ExitCode::from(1)
    } else if failed_final > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// What the arguments come to once checked.
struct Settings {
    url: reqwest::Url,
    secret: SigningSecret,
    mix: (f64, f64, f64),
    org_mix: [f64; 5],
}

/// Refuses what cannot make a run before anything is built or sent.
async fn check_args(args: &Args) -> anyhow::Result<Settings> {
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("--url {:?}", args.url))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("--url must be http:// or https://");
    }
    send::check_loopback(&url).await?;
    let secret =
        SigningSecret::parse(&args.secret).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let mix = stream::parse_mix(&args.mix)?;
    let org_mix = stream::parse_org_mix(&args.org_mix)?;
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
        database::quoted_table(&args.table)?;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres:")
            || db.starts_with("postgresql:"))
        {
            bail!("--database-url must start with postgresql://, postgres:// or sqlite:");
        }
    }
    Ok(Settings {
        url,
        secret,
        mix,
        org_mix,
    })
}

fn check_fraction(name: &str, value: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&value) {
        bail!("{name} must be between 0 and 1");
    }
    Ok(())
}

/// The stream, and the deliveries the timed phase will send.
struct Planned {
    options: StreamOptions,
    stream: Stream,
    /// Indexes into the stream's events, and whether the delivery is a duplicate.
    order: Vec<(usize, bool)>,
    duplicates: usize,
    out_of_order: usize,
    body_bytes: usize,
    non_ascii_events: usize,
}

fn plan(args: &Args, settings: &Settings, seed: u64) -> anyhow::Result<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let options = StreamOptions {
        users: args.users,
        events: args.events,
        mix: settings.mix,
        profiles: Profiles {
            no_email: args.no_email,
            non_ascii: args.non_ascii,
            move_emails: args.move_emails,
            tag: "",
        },
        base_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
        orgs: (args.organizations > 0).then_some(OrgOptions {
            organizations: args.organizations,
            events: args.org_events,
            mix: settings.org_mix,
        }),
    };
    let stream = stream::build_stream(&mut rng, &options)?;
    let (mut order, mut duplicates) = stream::delivery_order(
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
    let out_of_order = stream::out_of_order(&stream.events, &order);
    let body_bytes: usize = order
        .iter()
        .map(|&(i, _)| stream.events[i].body.len())
        .sum();
    let non_ascii_events = stream.events.iter().filter(|e| !e.body.is_ascii()).count();
    Ok(Planned {
        options,
        stream,
        order,
        duplicates,
        out_of_order,
        body_bytes,
        non_ascii_events,
    })
}

/// Untimed warm-up on users of their own (connections, server and database pools). Returns
/// how many of its events were not answered with a 2xx.
async fn warm_up(
    args: &Args,
    seed: u64,
    options: &StreamOptions,
    clients: &[reqwest::Client],
    settings: &Settings,
) -> anyhow::Result<usize> {
    let mut warm_rng = StdRng::seed_from_u64(seed ^ 0x5741_524d);
    let warm = stream::build_stream(
        &mut warm_rng,
        &StreamOptions {
            users: args.warmup,
            events: args.warmup * 3,
            mix: (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0),
            profiles: Profiles {
                tag: "w",
                ..options.profiles
            },
            orgs: None,
            ..*options
        },
    );
    match (args.warmup, warm) {
        (0, _) => Ok(0),
        (_, Ok(warm)) => {
            let users = warm.model.users.len();
            send::each_user_in_order(
                clients,
                &settings.url,
                &settings.secret,
                users,
                &warm.events,
            )
            .await
        }
        (_, Err(e)) => Err(e),
    }
}

/// With --preload-users, the stream's user events, untimed, each user's in order.
async fn preload_users(
    args: &Args,
    stream: &Stream,
    clients: &[reqwest::Client],
    settings: &Settings,
) -> anyhow::Result<Option<Value>> {
    if !args.preload_users {
        return Ok(None);
    }
    let started = Instant::now();
    let users = stream.model.users.len();
    let failed = send::each_user_in_order(
        clients,
        &settings.url,
        &settings.secret,
        users,
        &stream.events,
    )
    .await?;
    let sent = stream
        .events
        .iter()
        .filter(|e| matches!(e.key, Key::User(_)))
        .count();
    Ok(Some(json!({
        "events": sent,
        "non_2xx": failed,
        "elapsed_s": round3(started.elapsed().as_secs_f64()),
    })))
}

/// The timed phase's attempts, how long it took, and who used the CPU meanwhile.
struct Timed {
    attempts: Vec<Attempt>,
    wall: f64,
    cpu: Value,
}

async fn timed_phase(
    clients: Vec<reqwest::Client>,
    shared: &Arc<Shared>,
    server_pid: Option<u32>,
    deliveries: usize,
) -> anyhow::Result<Timed> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_before = cpu::snapshot(server_pid);
    let started = Instant::now();
    let attempts = send::deliver(clients, shared, deliveries).await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = cpu::snapshot(server_pid);
    Ok(Timed {
        attempts,
        wall,
        cpu: cpu::report(&cpu_before, &cpu_after, cores),
    })
}

/// What the run measured and found, beside the plan, for the summary.
struct Results {
    seed: u64,
    presign_s: f64,
    warmup_failed: usize,
    preload: Option<Value>,
    timed: Timed,
    figures: Figures,
    table: Option<Value>,
    organization_tables: Option<Value>,
}

/// The one object `--json` prints and the text report reads.
fn summary(args: &Args, settings: &Settings, planned: &Planned, results: &Results) -> Value {
    let Planned {
        stream,
        order,
        duplicates,
        out_of_order,
        body_bytes,
        non_ascii_events,
        ..
    } = planned;
    let Results {
        seed,
        presign_s,
        warmup_failed,
        preload,
        timed,
        figures,
        table,
        organization_tables,
    } = results;
    let (attempts, wall) = (&timed.attempts, timed.wall);
    let latencies = &figures.latencies;
    let o = stream.orgs;
    json!({
        "url": settings.url.as_str(),
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
        "presign_s": round3(*presign_s),
        "warmup": {"users": args.warmup, "non_2xx": warmup_failed},
        "elapsed_s": round3(wall),
        "events_per_s": round1(order.len() as f64 / wall.max(1e-9)),
        "requests_per_s": round1(attempts.len() as f64 / wall.max(1e-9)),
        "latency_ms": {
            "p50": round3(percentile(latencies, 50.0)),
            "p95": round3(percentile(latencies, 95.0)),
            "p99": round3(percentile(latencies, 99.0)),
            "max": round3(latencies.last().copied().unwrap_or(0.0)),
            "mean": round3(figures.mean),
        },
        "by_family": figures.by_family,
        "requests": attempts.len(),
        "status": figures.statuses,
        "outcomes": figures.outcomes,
        "retries": {
            "enabled": args.retries,
            "resent": figures.resent,
            "still_failing": figures.failed_final,
            "still_failing_by_type": figures.failed_by_type,
        },
        "failure_samples": figures.samples,
        "cpu": timed.cpu,
        "table": table,
        "organization_tables": organization_tables,
    })
}
