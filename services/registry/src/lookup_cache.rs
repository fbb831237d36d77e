//! The router's cache of [`Registry::resources`](crate::Registry::resources)
//! look-ups, kept decoded, and emptied by Redis' invalidation pushes (see
//! "Cached look-ups" in the crate documentation).
//!
//! A look-up that missed is stored only if no invalidation arrived while it
//! was on its way: Redis sends one invalidation per tracked read, so a value
//! fetched before a change and stored after that change's invalidation would
//! otherwise stay until its ttl. Any invalidation counts, not only the
//! key's: it keeps the check to one counter, and under heavy churn it only
//! costs a few more misses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use xmppd_grpc::BoundSession;

/// Hits, misses and invalidations since the registry connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStatistics {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped because Redis said their key changed (or that the
    /// connection, and with it the tracking, was lost).
    pub invalidations: u64,
}

pub(crate) struct LookupCache {
    capacity: usize,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By Redis key (`{prefix}res:{bare}`), as invalidations name them.
    entries: HashMap<Box<str>, Entry>,
    /// Invalidations received so far: a look-up is stored only if this did
    /// not move while it was fetched.
    generation: u64,
    /// When the expired entries were last dropped.
    swept: Option<Instant>,
    statistics: CacheStatistics,
}

struct Entry {
    sessions: Vec<BoundSession>,
    fetched: Instant,
}

/// What a miss hands back to [`LookupCache::store`] with the fetched value.
pub(crate) struct Ticket(u64);

impl LookupCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            state: Mutex::default(),
        }
    }

    /// The cached look-up of `key`, if it is younger than the ttl; otherwise
    /// the ticket to store the one about to be fetched.
    pub(crate) fn get(&self, key: &str) -> Result<Vec<BoundSession>, Ticket> {
        let mut state = self.state.lock().expect("lookup cache lock");
        match state.entries.get(key) {
            Some(entry) if entry.fetched.elapsed() < self.ttl => {
                let sessions = entry.sessions.clone();
                state.statistics.hits += 1;
                Ok(sessions)
            }
            _ => {
                state.statistics.misses += 1;
                Err(Ticket(state.generation))
            }
        }
    }

    /// Keeps a fetched look-up, unless an invalidation arrived since the
    /// miss that issued `ticket`, or the cache is full of live entries.
    pub(crate) fn store(&self, key: &str, ticket: Ticket, sessions: &[BoundSession]) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("lookup cache lock");
        if state.generation != ticket.0 {
            return;
        }
        // At most one sweep per ttl: sooner, few entries could have expired,
        // and a full cache would otherwise be swept on every miss.
        if state.swept.is_none_or(|swept| now - swept >= self.ttl) {
            self.sweep(&mut state, now);
        }
        if state.entries.len() < self.capacity || state.entries.contains_key(key) {
            let entry = Entry {
                sessions: sessions.to_vec(),
                fetched: now,
            };
            state.entries.insert(key.into(), entry);
        }
    }

    /// Applies a push from the cache's Redis connection: an invalidation
    /// drops the keys it names (all of them for a flush, which names none),
    /// a lost connection drops everything, since the new one tracks nothing
    /// yet and invalidations sent meanwhile are lost.
    pub(crate) fn apply(&self, push: &PushInfo) {
        let mut state = self.state.lock().expect("lookup cache lock");
        match (&push.kind, push.data.first()) {
            (PushKind::Invalidate, Some(Value::Array(keys))) => {
                state.generation += 1;
                for key in keys {
                    let removed = match key {
                        Value::BulkString(key) => std::str::from_utf8(key)
                            .is_ok_and(|key| state.entries.remove(key).is_some()),
                        _ => false,
                    };
                    state.statistics.invalidations += u64::from(removed);
                }
            }
            (PushKind::Invalidate, _) | (PushKind::Disconnection, _) => {
                state.generation += 1;
                state.statistics.invalidations += state.entries.len() as u64;
                state.entries.clear();
            }
            _ => {}
        }
    }

    pub(crate) fn statistics(&self) -> CacheStatistics {
        self.state.lock().expect("lookup cache lock").statistics
    }

    /// Drops the entries older than the ttl: an idle account's look-up is
    /// of no use once expired, and would otherwise stay until it is read.
    fn sweep(&self, state: &mut State, now: Instant) {
        state
            .entries
            .retain(|_, entry| now - entry.fetched < self.ttl);
        state.swept = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(full_jid: &str) -> BoundSession {
        BoundSession {
            full_jid: full_jid.into(),
            ..Default::default()
        }
    }

    fn invalidate(keys: &[&str]) -> PushInfo {
        let keys = keys
            .iter()
            .map(|key| Value::BulkString(key.as_bytes().to_vec()))
            .collect();
        PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(keys)],
        }
    }

    fn fetch(cache: &LookupCache, key: &str, sessions: &[BoundSession]) {
        let ticket = cache.get(key).expect_err("a miss");
        cache.store(key, ticket, sessions);
    }

    #[test]
    fn a_stored_lookup_is_served_until_invalidated() {
        let cache = LookupCache::new(10, Duration::from_secs(60));
        let phone = [session("a@x/phone")];
        fetch(&cache, "res:a@x", &phone);
        assert_eq!(cache.get("res:a@x").ok(), Some(phone.to_vec()));
        cache.apply(&invalidate(&["res:a@x"]));
        assert!(cache.get("res:a@x").is_err());
        let statistics = cache.statistics();
        assert_eq!(
            (statistics.hits, statistics.misses, statistics.invalidations),
            (1, 2, 1)
        );
    }

    #[test]
    fn a_lookup_overtaken_by_an_invalidation_is_not_stored() {
        let cache = LookupCache::new(10, Duration::from_secs(60));
        let ticket = cache.get("res:a@x").expect_err("a miss");
        cache.apply(&invalidate(&["res:a@x"]));
        cache.store("res:a@x", ticket, &[session("a@x/old")]);
        assert!(cache.get("res:a@x").is_err());
    }

    #[test]
    fn a_flush_or_a_lost_connection_drops_everything() {
        let cache = LookupCache::new(10, Duration::from_secs(60));
        for push in [
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        ] {
            fetch(&cache, "res:a@x", &[]);
            fetch(&cache, "res:b@x", &[]);
            cache.apply(&push);
            assert!(cache.get("res:a@x").is_err() && cache.get("res:b@x").is_err());
        }
    }

    #[test]
    fn entries_expire_and_are_swept() {
        let ttl = Duration::from_millis(20);
        let cache = LookupCache::new(2, ttl);
        fetch(&cache, "res:a@x", &[]);
        fetch(&cache, "res:b@x", &[]);
        // Full of live entries: a third look-up is not kept.
        fetch(&cache, "res:c@x", &[]);
        assert!(cache.get("res:c@x").is_err());
        std::thread::sleep(ttl);
        assert!(cache.get("res:a@x").is_err(), "expired");
        // The first store a ttl after the last sweep sweeps the expired
        // ones, making room.
        fetch(&cache, "res:c@x", &[]);
        assert!(cache.get("res:c@x").is_ok());
        let entries = cache.state.lock().unwrap().entries.len();
        assert_eq!(entries, 1);
    }
}
