//! Rate limits, so a flood cannot crowd out real work:
//!
//! * webhook requests that fail verification are limited per client address, while properly
//!   signed deliveries are never refused (Svix sends bursts from a handful of addresses, and a
//!   flood of junk may come from the same ones);
//! * the user API is limited per address before the session is checked, and per user after;
//! * a global concurrency ceiling and timeouts protect the database (see `router`).
//!
//! Behind a reverse proxy, `X-Forwarded-For` names the client; it is believed only when the
//! connection comes from a configured trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Requests handled at once; more wait for a slot.
    pub max_concurrency: usize,
    /// Longest time for one request, body included: a slow client is cut off.
    pub request_timeout: Duration,
    /// Longest time for one database operation.
    pub db_timeout: Duration,
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
        }
    }
}

/// An address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{text:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

/// The limiters the handlers share.
pub struct RateLimiters {
    unverified: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
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
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
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
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("proxy").is_err());
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
