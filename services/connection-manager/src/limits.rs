//! The edge's protections: connections per IP, failed authentications per
//! IP and per account and IP (refused past their limits) and per account
//! (slowed down past its limit), registrations per IP, and stanzas per
//! connection.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts open connections per client IP.
#[derive(Default)]
pub struct ConnectionsPerIp {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// Holds one connection's place; gives it back when dropped.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    /// A slot for a new connection from `ip`, unless `max` are open
    /// (`max` 0 means no limit).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().expect("connections lock");
        let count = open.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().expect("connections lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
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
        let first = limiter.acquire(ip, 2).unwrap();
        let _second = limiter.acquire(ip, 2).unwrap();
        assert!(limiter.acquire(ip, 2).is_none());
        assert!(limiter.acquire("127.0.0.10".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(limiter.acquire(ip, 2).is_some());
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
