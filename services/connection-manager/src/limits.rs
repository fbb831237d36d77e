//! The edge's protections: connections per IP, failed authentications per
//! IP and per account and IP (refused past their limits) and per account
//! (slowed down past its limit), registrations per IP, and stanzas per
//! connection.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts open connections: per client network ([`client_network`]) and in
/// all.
#[derive(Default)]
pub struct ConnectionsPerIp {
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    by_network: HashMap<IpAddr, u32>,
    total: u32,
}

/// Why a connection gets no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address (or IPv6 /64) has `connections_per_ip` open.
    PerAddress,
    /// The node has `max_connections` open.
    Total,
}

/// Holds one connection's place; gives it back when dropped.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionsPerIp>,
    network: IpAddr,
}

/// What counts as one client for the per-address limits: an IPv4 address,
/// or the /64 of an IPv6 address (one subscriber's prefix, in which a client
/// can pick any address). An IPv4 address mapped into IPv6 counts as itself.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl ConnectionsPerIp {
    /// A slot for a new connection from `ip`, unless its network has
    /// `per_network` open or the node `total` (0 means no limit).
    pub fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        per_network: u32,
        total: u32,
    ) -> Result<ConnectionSlot, Refused> {
        let network = client_network(ip);
        let mut open = self.open.lock().expect("connections lock");
        if total != 0 && open.total >= total {
            return Err(Refused::Total);
        }
        let count = open.by_network.entry(network).or_insert(0);
        if per_network != 0 && *count >= per_network {
            return Err(Refused::PerAddress);
        }
        *count += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            network,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().expect("connections lock");
        open.total -= 1;
        if let Some(count) = open.by_network.get_mut(&self.network) {
            *count -= 1;
            if *count == 0 {
                open.by_network.remove(&self.network);
            }
        }
    }
}

/// Events per key in fixed windows: "at most `max` per `window`".
pub struct WindowCounter<K> {
    /// Replaced by a configuration reload; counts so far are kept.
    max: AtomicU32,
    window: Duration,
    counts: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Eq + Hash + Clone> WindowCounter<K> {
    /// `max` 0 means unlimited.
    pub fn new(max: u32, window: Duration) -> Self {
        WindowCounter {
            max: AtomicU32::new(max),
            window,
            counts: Mutex::default(),
        }
    }

    /// From now on, at most `max` per window (0: unlimited).
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// Whether `key` has used up its window.
    pub fn exhausted(&self, key: &K) -> bool {
        let max = self.max();
        if max == 0 {
            return false;
        }
        let counts = self.counts.lock().expect("window lock");
        counts
            .get(key)
            .is_some_and(|(start, count)| start.elapsed() < self.window && *count >= max)
    }

    /// How far past `max` the next event of `key` would be in the current
    /// window: 0 while it is within `max`, 1 for the first one beyond.
    pub fn excess(&self, key: &K) -> u32 {
        let max = self.max();
        if max == 0 {
            return 0;
        }
        let counts = self.counts.lock().expect("window lock");
        counts
            .get(key)
            .filter(|(start, _)| start.elapsed() < self.window)
            .map_or(0, |(_, count)| (count + 1).saturating_sub(max))
    }

    /// Counts one event for `key`.
    pub fn record(&self, key: K) {
        if self.max() == 0 {
            return;
        }
        let mut counts = self.counts.lock().expect("window lock");
        // Forget finished windows now and then so the map stays small.
        if counts.len() > 10_000 {
            counts.retain(|_, (start, _)| start.elapsed() < self.window);
        }
        let entry = counts.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The delay before answering an attempt on an account with `excess`
/// failures past its allowance: none within it, then `first`, doubling with
/// each further failure, up to `max`. It slows guessing one account from
/// many addresses without ever refusing the right password.
pub fn failure_delay(excess: u32, first: Duration, max: Duration) -> Duration {
    match excess {
        0 => Duration::ZERO,
        n => first
            .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
            .min(max),
    }
}

/// A token bucket: `rate` stanzas per second sustained, `burst` at once.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled: Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait first if none is left.
    /// A rate of 0 never waits.
    pub fn take(&mut self) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_ip_are_limited_and_released() {
        let limiter = Arc::new(ConnectionsPerIp::default());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let first = limiter.acquire(ip, 2, 0).unwrap();
        let _second = limiter.acquire(ip, 2, 0).unwrap();
        assert_eq!(limiter.acquire(ip, 2, 0).err(), Some(Refused::PerAddress));
        assert!(limiter.acquire("127.0.0.10".parse().unwrap(), 2, 0).is_ok());
        drop(first);
        assert!(limiter.acquire(ip, 2, 0).is_ok());
    }

    /// Every address of an IPv6 /64 counts as one client; the next /64 is
    /// another.
    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let limiter = Arc::new(ConnectionsPerIp::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_prefix: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let next_prefix: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = limiter.acquire(a, 1, 0).unwrap();
        assert_eq!(
            limiter.acquire(same_prefix, 1, 0).err(),
            Some(Refused::PerAddress)
        );
        assert!(limiter.acquire(next_prefix, 1, 0).is_ok());
        assert_eq!(
            client_network(same_prefix),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_network(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_total_is_capped_whatever_the_address() {
        let limiter = Arc::new(ConnectionsPerIp::default());
        let first = limiter.acquire("127.0.0.1".parse().unwrap(), 0, 2).unwrap();
        let _second = limiter.acquire("127.0.0.2".parse().unwrap(), 0, 2).unwrap();
        let third = limiter.acquire("127.0.0.3".parse().unwrap(), 0, 2);
        assert_eq!(third.err(), Some(Refused::Total));
        drop(first);
        assert!(limiter.acquire("127.0.0.3".parse().unwrap(), 0, 2).is_ok());
    }

    #[test]
    fn window_counter_exhausts_then_resets() {
        let counter = WindowCounter::new(2, Duration::from_millis(50));
        counter.record("a");
        assert!(!counter.exhausted(&"a"));
        counter.record("a");
        assert!(counter.exhausted(&"a"));
        assert!(!counter.exhausted(&"b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!counter.exhausted(&"a"));
    }

    #[test]
    fn window_counter_reports_the_excess_over_its_maximum() {
        let counter = WindowCounter::new(2, Duration::from_millis(50));
        assert_eq!(counter.excess(&"a"), 0);
        for expected in [0, 1, 2, 3] {
            counter.record("a");
            assert_eq!(counter.excess(&"a"), expected);
        }
        assert_eq!(counter.excess(&"b"), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(counter.excess(&"a"), 0);
        let unlimited = WindowCounter::new(0, Duration::from_secs(60));
        unlimited.record("a");
        assert_eq!(unlimited.excess(&"a"), 0);
    }

    #[test]
    fn failure_delay_doubles_up_to_its_maximum() {
        let (first, max) = (Duration::from_millis(500), Duration::from_secs(8));
        let delays: Vec<_> = (0..8).map(|n| failure_delay(n, first, max)).collect();
        let ms: Vec<_> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(failure_delay(u32::MAX, first, max), max);
    }

    #[test]
    fn token_bucket_allows_burst_then_paces() {
        let mut bucket = TokenBucket::new(10, 3);
        assert_eq!(bucket.take(), None);
        assert_eq!(bucket.take(), None);
        assert_eq!(bucket.take(), None);
        let wait = bucket.take().expect("must wait after the burst");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::from_millis(50));
        assert_eq!(TokenBucket::new(0, 0).take(), None);
    }
}
