//! Per-client-IP protection: how many connections one address may hold open and how fast it may
//! send requests (a token bucket), shared by the HTTP and HTTPS listeners.
//!
//! The maps are sharded so that the listeners' tasks rarely wait on each other, and bounded: a
//! shard that grows past its share forgets the buckets that have refilled (they hold no state
//! worth keeping), so a flood of spoofed-looking addresses cannot grow memory without end.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const SHARDS: usize = 16;
/// Buckets one shard keeps before it forgets the full ones.
const MAX_BUCKETS_PER_SHARD: usize = 4096;

/// The limits; `0` turns one off.
#[derive(Clone, Copy, Debug)]
pub struct ClientLimitsConfig {
    pub max_connections: usize,
    pub requests_per_sec: u32,
    pub burst: u32,
}

impl Default for ClientLimitsConfig {
    fn default() -> Self {
        Self { max_connections: 256, requests_per_sec: 1000, burst: 2000 }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Shard {
    connections: HashMap<IpAddr, usize>,
    buckets: HashMap<IpAddr, Bucket>,
}

/// Connection counts and request buckets per client address. Clones share them.
#[derive(Clone)]
pub struct ClientLimits {
    config: ClientLimitsConfig,
    hasher: RandomState,
    shards: Arc<[Mutex<Shard>; SHARDS]>,
}

impl std::fmt::Debug for ClientLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimits").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Holds one of a client's connection slots; dropping it gives the slot back.
#[must_use]
pub struct ConnectionSlot {
    limits: ClientLimits,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.limits.config.max_connections == 0 {
            return;
        }
        let mut shard = self.limits.shard(self.ip);
        if let Some(n) = shard.connections.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                shard.connections.remove(&self.ip);
            }
        }
    }
}

/// The unit a client is counted by: an IPv4 address, or an IPv6 /64 (one subscriber's usual
/// allocation: counting single v6 addresses would give each client 2^64 budgets).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl ClientLimits {
    pub fn new(config: ClientLimitsConfig) -> Self {
        Self { config, hasher: RandomState::new(), shards: Arc::new(std::array::from_fn(|_| Mutex::default())) }
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection slot for `ip`, or `None` if it already holds as many as it may.
    pub fn connect(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = client_key(ip);
        if self.config.max_connections > 0 {
            let mut shard = self.shard(ip);
            let open = shard.connections.entry(ip).or_insert(0);
            if *open >= self.config.max_connections {
                return None;
            }
            *open += 1;
        }
        Some(ConnectionSlot { limits: self.clone(), ip })
    }

    /// Takes one request token for `ip`; if there is none, how long until there is.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        let ip = client_key(ip);
        let ClientLimitsConfig { requests_per_sec, burst, .. } = self.config;
        if requests_per_sec == 0 {
            return Ok(());
        }
        let (rate, burst) = (f64::from(requests_per_sec), f64::from(burst.max(1)));
        let now = Instant::now();
        let mut shard = self.shard(ip);
        if shard.buckets.len() >= MAX_BUCKETS_PER_SHARD && !shard.buckets.contains_key(&ip) {
            shard.buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = shard.buckets.entry(ip).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn connections_are_counted_per_address_and_given_back() {
        let limits = ClientLimits::new(ClientLimitsConfig { max_connections: 2, ..Default::default() });
        let first = limits.connect(A).unwrap();
        let _second = limits.connect(A).unwrap();
        assert!(limits.connect(A).is_none());
        let _other = limits.connect(B).expect("another address has its own count");
        drop(first);
        assert!(limits.connect(A).is_some());
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_applies() {
        let limits = ClientLimits::new(ClientLimitsConfig { max_connections: 0, requests_per_sec: 10, burst: 3 });
        for _ in 0..3 {
            limits.admit(A).unwrap();
        }
        let wait = limits.admit(A).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        limits.admit(B).expect("another address has its own bucket");
    }

    #[test]
    fn an_ipv6_64_counts_as_one_client() {
        let limits = ClientLimits::new(ClientLimitsConfig { max_connections: 1, ..Default::default() });
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _slot = limits.connect(one).unwrap();
        assert!(limits.connect(same_64).is_none());
        let _other = limits.connect(other_64).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _mapped = limits.connect(mapped).unwrap();
        assert!(limits.connect(A).is_none(), "an IPv4-mapped address is its IPv4 address");
    }

    #[test]
    fn zero_turns_the_limits_off() {
        let limits = ClientLimits::new(ClientLimitsConfig { max_connections: 0, requests_per_sec: 0, burst: 0 });
        let slots: Vec<_> = (0..1000).map(|_| limits.connect(A).unwrap()).collect();
        assert_eq!(slots.len(), 1000);
        assert!((0..10_000).all(|_| limits.admit(A).is_ok()));
    }
}
