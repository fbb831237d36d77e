//! An in-process cache of values whose owner (Redis, Postgres) tells us when
//! they change: the router's look-ups of bound resources, and a session
//! replica's SCRAM credentials. Whoever owns the cache feeds it the
//! invalidations; this crate keeps the rules they share.
//!
//! - A value is stored only if no invalidation arrived while it was being
//!   fetched. The owner sends one invalidation per change, so a value read
//!   before a change and stored after that change's invalidation would
//!   otherwise stay until its ttl. Any invalidation counts, not only the
//!   key's: it keeps the check to one counter, and under heavy churn it
//!   only costs a few more misses.
//! - Entries live at most `ttl`, which bounds one whose invalidation never
//!   came, and are swept once expired. At most `capacity` are kept; while
//!   that many live ones are held, further values are not kept.
//! - While the invalidations cannot be heard (their connection is down),
//!   the cache is [suspended](Cache::suspend): it holds nothing and stores
//!   nothing, so every read goes to the owner.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hits, misses and invalidations since the cache was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStatistics {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped because their owner said they changed (or because
    /// the invalidations stopped being heard).
    pub invalidations: u64,
}

pub struct Cache<V> {
    capacity: usize,
    ttl: Duration,
    state: Mutex<State<V>>,
}

struct State<V> {
    entries: HashMap<Box<str>, Entry<V>>,
    /// Invalidations so far: a fetched value is stored only if this did not
    /// move while it was fetched.
    generation: u64,
    suspended: bool,
    /// When the expired entries were last dropped.
    swept: Option<Instant>,
    statistics: CacheStatistics,
}

struct Entry<V> {
    value: V,
    fetched: Instant,
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What a miss hands back to [`Cache::store`] with the fetched value.
#[derive(Debug)]
#[must_use = "a miss's ticket is what lets the fetched value be stored"]
pub struct Ticket(u64);

impl<V: Clone> Cache<V> {
    /// An empty cache, storing from the start.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Cache {
            capacity,
            ttl,
            state: Mutex::new(State {
                entries: HashMap::new(),
                generation: 0,
                suspended: false,
                swept: None,
                statistics: CacheStatistics::default(),
            }),
        }
    }

    /// The cached value of `key`, if it is younger than the ttl; otherwise
    /// the ticket to store the one about to be fetched.
    pub fn get(&self, key: &str) -> Result<V, Ticket> {
        let mut state = self.lock();
        match state.entries.get(key) {
            Some(entry) if entry.fetched.elapsed() < self.ttl => {
                let value = entry.value.clone();
                state.statistics.hits += 1;
                Ok(value)
            }
            _ => {
                state.statistics.misses += 1;
                Err(Ticket(state.generation))
            }
        }
    }

    /// Keeps a fetched value, unless an invalidation arrived since the miss
    /// that issued `ticket`, the cache is suspended, or it is full of live
    /// entries.
    pub fn store(&self, key: &str, ticket: Ticket, value: V) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.generation != ticket.0 || state.suspended {
            return;
        }
        // At most one sweep per ttl: sooner, few entries could have expired,
        // and a full cache would otherwise be swept on every miss.
        if state.swept.is_none_or(|swept| now - swept >= self.ttl) {
            let ttl = self.ttl;
            state.entries.retain(|_, entry| now - entry.fetched < ttl);
            state.swept = Some(now);
        }
        if state.entries.len() < self.capacity || state.entries.contains_key(key) {
            let entry = Entry {
                value,
                fetched: now,
            };
            state.entries.insert(key.into(), entry);
        }
    }

    /// The owner says these keys changed.
    pub fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        let mut state = self.lock();
        state.generation += 1;
        for key in keys {
            let removed = state.entries.remove(key).is_some();
            state.statistics.invalidations += u64::from(removed);
        }
    }

    /// The owner says anything may have changed (a flush, or invalidations
    /// lost with a connection that is back).
    pub fn clear(&self) {
        let mut state = self.lock();
        Self::drop_all(&mut state);
    }

    /// Invalidations cannot be heard for now: drops everything and stores
    /// nothing until [`Cache::resume`].
    pub fn suspend(&self) {
        let mut state = self.lock();
        state.suspended = true;
        Self::drop_all(&mut state);
    }

    /// Invalidations are heard again, from now on: values fetched before
    /// this are not stored (their tickets are older).
    pub fn resume(&self) {
        let mut state = self.lock();
        state.suspended = false;
        state.generation += 1;
    }

    pub fn statistics(&self) -> CacheStatistics {
        self.lock().statistics
    }

    fn drop_all(state: &mut State<V>) {
        state.generation += 1;
        state.statistics.invalidations += state.entries.len() as u64;
        state.entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.state.lock().expect("cache lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(cache: &Cache<&'static str>, key: &str, value: &'static str) {
        let ticket = cache.get(key).expect_err("a miss");
        cache.store(key, ticket, value);
    }

    #[test]
    fn a_stored_value_is_served_until_invalidated() {
        let cache = Cache::new(10, Duration::from_secs(60));
        fetch(&cache, "a", "phone");
        assert_eq!(cache.get("a").ok(), Some("phone"));
        cache.invalidate(["a"]);
        assert!(cache.get("a").is_err());
        let statistics = cache.statistics();
        assert_eq!(
            (statistics.hits, statistics.misses, statistics.invalidations),
            (1, 2, 1)
        );
    }

    #[test]
    fn a_value_overtaken_by_an_invalidation_is_not_stored() {
        let cache = Cache::new(10, Duration::from_secs(60));
        let ticket = cache.get("a").expect_err("a miss");
        cache.invalidate(["b"]);
        cache.store("a", ticket, "old");
        assert!(cache.get("a").is_err());
    }

    #[test]
    fn clearing_drops_everything() {
        let cache = Cache::new(10, Duration::from_secs(60));
        fetch(&cache, "a", "1");
        fetch(&cache, "b", "2");
        cache.clear();
        assert!(cache.get("a").is_err() && cache.get("b").is_err());
        assert_eq!(cache.statistics().invalidations, 2);
    }

    #[test]
    fn a_suspended_cache_stores_nothing_until_resumed() {
        let cache = Cache::new(10, Duration::from_secs(60));
        fetch(&cache, "a", "1");
        cache.suspend();
        assert!(cache.get("a").is_err(), "dropped when suspended");
        fetch(&cache, "a", "1");
        assert!(cache.get("a").is_err(), "not stored while suspended");
        // Fetched while suspended, stored after the resume: the value may
        // predate a change whose invalidation was never heard.
        let ticket = cache.get("a").expect_err("a miss");
        cache.resume();
        cache.store("a", ticket, "1");
        assert!(cache.get("a").is_err());
        fetch(&cache, "a", "1");
        assert_eq!(cache.get("a").ok(), Some("1"));
    }

    #[test]
    fn entries_expire_and_are_swept() {
        let ttl = Duration::from_millis(20);
        let cache = Cache::new(2, ttl);
        fetch(&cache, "a", "1");
        fetch(&cache, "b", "2");
        // Full of live entries: a third value is not kept.
        fetch(&cache, "c", "3");
        assert!(cache.get("c").is_err());
        std::thread::sleep(ttl);
        assert!(cache.get("a").is_err(), "expired");
        // The first store a ttl after the last sweep sweeps the expired
        // ones, making room.
        fetch(&cache, "c", "3");
        assert_eq!(cache.get("c").ok(), Some("3"));
        assert_eq!(cache.lock().entries.len(), 1);
    }
}
