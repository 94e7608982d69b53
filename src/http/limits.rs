//! Rate limits, so a flood cannot crowd out real work:
//!
//! * webhook requests that fail verification are limited per client address, while properly
//!   signed deliveries are never refused (Svix sends bursts from a handful of addresses, and a
//!   flood of junk may come from the same ones);
//! * the user API is limited per address before the session is checked, and per user after;
//! * a global concurrency ceiling and timeouts protect the database (see `router`);
//! * request bodies are read in full before a request takes a slot under that ceiling, within
//!   the request's deadline and a global budget of buffered bytes of which one address may hold
//!   a quarter ([`read_body_first`]), so clients that send slowly hold neither slots nor much
//!   memory;
//! * wrong `/status` tokens are limited per address, and an address over its limit is shut out
//!   of the page until the limit refills (else the right guess would still show as a 200).
//!
//! Connections themselves (per-address and total caps, the header timeout) are limited where
//! they are accepted, in `connections`.
//!
//! Behind a reverse proxy, `X-Forwarded-For` names the client; it is believed only when the
//! connection comes from a configured trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Limits, per minute.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Webhook requests failing verification, per client address.
    pub unverified_per_minute: u32,
    /// User API requests per signed-in user.
    pub user_per_minute: u32,
    /// User API requests per client address.
    pub address_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Requests handled at once; more wait for a slot. Bodies are read before a slot is taken.
    pub max_concurrency: usize,
    /// Longest time for one request, body included: a slow client is cut off.
    pub request_timeout: Duration,
    /// Longest time for one database operation.
    pub db_timeout: Duration,
    /// Longest time a connection may take to send a request's headers, or stay idle between
    /// requests.
    pub header_timeout: Duration,
    /// Connections open at once, in total (lowered at start to fit the open-file limit).
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64 counts as one); trusted
    /// proxies are exempt, being many clients' one address.
    pub max_connections_per_address: usize,
    /// Bytes of request bodies buffered at once before they are verified or handled; one
    /// client address may hold a quarter of it.
    pub body_buffer_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            unverified_per_minute: 60,
            user_per_minute: 120,
            address_per_minute: 600,
            trusted_proxies: Vec::new(),
            max_concurrency: 512,
            request_timeout: Duration::from_secs(10),
            db_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 256,
            body_buffer_bytes: 32 * 1024 * 1024,
        }
    }
}

/// An address or a CIDR block, as `CLERK_SYNC_TRUSTED_PROXIES` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// Reads `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of one (/32 or /128),
    /// since a single proxy is the common case. The error says what was wrong, for the
    /// operator.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let trimmed = text.trim();
        if let Ok(addr) = trimmed.parse::<IpAddr>() {
            return Ok(IpNet(addr.into()));
        }
        trimmed
            .parse::<ipnet::IpNet>()
            .map(IpNet)
            .map_err(|_| match trimmed.split_once('/') {
                Some((addr, _)) if addr.parse::<IpAddr>().is_ok() => format!(
                    "{text:?} has an invalid prefix length: at most 32 for IPv4, 128 for IPv6 \
                     (e.g. 10.0.0.0/8)"
                ),
                _ => format!(
                    "{text:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8, \
                     2001:db8::/32 or 192.0.2.7)"
                ),
            })
    }

    /// An IPv4 block never contains an IPv6 address, nor the reverse.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl From<ipnet::IpNet> for IpNet {
    fn from(net: ipnet::IpNet) -> IpNet {
        IpNet(net)
    }
}

/// The limiters the handlers share.
pub(crate) struct RateLimiters {
    unverified: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    admin_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that spent their `/status` failures, and until when they are shut out.
    admin_shut_out: Mutex<HashMap<IpAddr, Instant>>,
    pub(super) bodies: Arc<BodyBudget>,
    trusted_proxies: Vec<IpNet>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiters")
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"))
}

impl RateLimiters {
    pub fn new(settings: &LimitSettings) -> RateLimiters {
        RateLimiters {
            unverified: RateLimiter::keyed(per_minute(settings.unverified_per_minute)),
            per_user: RateLimiter::keyed(per_minute(settings.user_per_minute)),
            per_address: RateLimiter::keyed(per_minute(settings.address_per_minute)),
            admin_failures: RateLimiter::keyed(per_minute(settings.unverified_per_minute)),
            admin_shut_out: Mutex::new(HashMap::new()),
            bodies: Arc::new(BodyBudget::new(settings.body_buffer_bytes)),
            trusted_proxies: settings.trusted_proxies.clone(),
            checks: AtomicU64::new(0),
        }
    }

    /// The client's address: the peer, or the address a trusted proxy forwarded for. `None`
    /// when the server does not record peers (a router mounted without connect info).
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        Some(self.forwarded_client(peer?.ip(), headers))
    }

    /// The peer recorded for a request.
    pub fn peer(parts: &Parts) -> Option<SocketAddr> {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    }

    fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        // The right-most address not of a trusted proxy is the one that reached our proxies.
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.trusted(*ip))
            .unwrap_or(peer)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// Counts a failed verification from `address`; `Err(wait)` once it is over its limit.
    pub fn unverified(&self, address: IpAddr) -> Result<(), Duration> {
        self.check(&self.unverified, &address)
    }

    pub fn user(&self, user_id: &str) -> Result<(), Duration> {
        self.check(&self.per_user, &user_id.to_owned())
    }

    pub fn address(&self, address: IpAddr) -> Result<(), Duration> {
        self.check(&self.per_address, &address)
    }

    /// How long `address` is still shut out of `/status` after spending its failures, if it is.
    pub(crate) fn admin_shut_out(&self, address: IpAddr) -> Option<Duration> {
        let shut_out = self
            .admin_shut_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let until = *shut_out.get(&address)?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a wrong `/status` token from `address`; `Err(wait)` once it is over its limit,
    /// and the address is then shut out for that long, right token or not.
    pub(crate) fn admin_failure(&self, address: IpAddr) -> Result<(), Duration> {
        let wait = self.check(&self.admin_failures, &address).err();
        let Some(wait) = wait else { return Ok(()) };
        let now = Instant::now();
        let mut shut_out = self
            .admin_shut_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shut_out.len() >= 4096 {
            shut_out.retain(|_, until| *until > now);
        }
        shut_out.insert(address, now + wait);
        Err(wait)
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), Duration> {
        // Forget idle keys now and then, so a scan from many addresses cannot grow memory.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.unverified.retain_recent();
            self.per_user.retain_recent();
            self.per_address.retain_recent();
            self.admin_failures.retain_recent();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The key one client is counted under: its address, or its /64 for IPv6, where one
/// subscriber is routinely given a whole /64 to pick addresses from.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Bytes of request bodies held in memory before their requests are verified or handled, in
/// total and per client: what a flood of large bodies sent slowly can make the process hold.
pub(crate) struct BodyBudget {
    total: usize,
    state: Mutex<BudgetState>,
}

#[derive(Default)]
struct BudgetState {
    used: usize,
    by_client: HashMap<Option<IpAddr>, usize>,
}

/// Bytes taken from a [`BodyBudget`], given back when dropped (after the request was answered).
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    client: Option<IpAddr>,
    bytes: usize,
}

impl BodyBudget {
    fn new(total: usize) -> BodyBudget {
        BodyBudget {
            total,
            state: Mutex::new(BudgetState::default()),
        }
    }

    /// An empty reservation for `client` (keyed by [`client_key`]), to grow chunk by chunk.
    pub(crate) fn reservation(self: &Arc<Self>, client: Option<IpAddr>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            client: client.map(client_key),
            bytes: 0,
        }
    }
}

impl Reservation {
    /// Takes `bytes` more, unless that would take the total over the budget or this client over
    /// its quarter of it. `max_body_bytes` is a floor for both: a body the limit allows must fit.
    pub(crate) fn grow(&mut self, bytes: usize, max_body_bytes: usize) -> bool {
        let total = self.budget.total.max(max_body_bytes);
        let per_client = (self.budget.total / 4).max(max_body_bytes);
        let mut state = self
            .budget
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let client_used = state.by_client.get(&self.client).copied().unwrap_or(0);
        if state.used + bytes > total || client_used + bytes > per_client {
            return false;
        }
        state.used += bytes;
        *state.by_client.entry(self.client).or_insert(0) += bytes;
        self.bytes += bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut state = self
            .budget
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.used -= self.bytes;
        if let Some(used) = state.by_client.get_mut(&self.client) {
            *used -= self.bytes;
            if *used == 0 {
                state.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_contain_what_they_should() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("::1")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            IpNet::parse(" 192.0.2.7 ")
                .unwrap()
                .contains("192.0.2.7".parse().unwrap())
        );
        assert!(
            !IpNet::parse("192.0.2.7")
                .unwrap()
                .contains("192.0.2.8".parse().unwrap())
        );
        assert!(
            IpNet::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8:1::9".parse().unwrap())
        );
        assert!(
            !IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("::1".parse().unwrap()),
            "IPv4 blocks hold no IPv6 addresses"
        );
        let too_long = IpNet::parse("10.0.0.0/33").unwrap_err();
        assert!(
            too_long.contains("prefix length") && too_long.contains("10.0.0.0/8"),
            "{too_long}"
        );
        assert!(IpNet::parse("::/129").unwrap_err().contains("128"));
        for nonsense in ["proxy", "", "10.0.0/8", "10.0.0.0/", "10.0.0.0/8/8"] {
            let refused = IpNet::parse(nonsense).unwrap_err();
            assert!(refused.contains("e.g."), "{nonsense:?}: {refused}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let limiters = RateLimiters::new(&LimitSettings {
            trusted_proxies: vec![IpNet::parse("10.0.0.0/8").unwrap()],
            ..LimitSettings::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 10.0.0.9".parse().unwrap());
        let from_proxy = limiters.forwarded_client("10.0.0.1".parse().unwrap(), &headers);
        assert_eq!(from_proxy, "198.51.100.7".parse::<IpAddr>().unwrap());
        let direct = limiters.forwarded_client("203.0.113.5".parse().unwrap(), &headers);
        assert_eq!(direct, "203.0.113.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn one_client_holds_at_most_a_quarter_of_the_body_budget_until_it_lets_go() {
        let budget = Arc::new(BodyBudget::new(400));
        let a = Some("192.0.2.1".parse().unwrap());
        let mut first = budget.reservation(a);
        assert!(first.grow(60, 10));
        assert!(first.grow(40, 10));
        assert!(!first.grow(1, 10), "a quarter of 400 is 100");
        let mut other = budget.reservation(Some("192.0.2.2".parse().unwrap()));
        assert!(other.grow(100, 10));
        drop(first);
        assert!(
            budget.reservation(a).grow(100, 10),
            "given back when dropped"
        );
        // The body limit is a floor: a body it allows always fits an idle budget.
        assert!(budget.reservation(None).grow(300, 300));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_key_over_its_limit_waits_while_others_pass() {
        let limiters = RateLimiters::new(&LimitSettings {
            unverified_per_minute: 2,
            ..LimitSettings::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiters.unverified(a).is_ok());
        assert!(limiters.unverified(a).is_ok());
        assert!(limiters.unverified(a).is_err());
        assert!(limiters.unverified(b).is_ok());
    }
}
