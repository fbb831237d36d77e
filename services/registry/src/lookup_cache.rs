//! The router's cache of [`Registry::resources`](crate::Registry::resources)
//! look-ups, kept decoded (see "Cached look-ups" in the crate
//! documentation), and how Redis' pushes on its connection invalidate it.

use redis::{PushInfo, PushKind, Value};
use std::sync::Arc;

use xmppd_cache::Cache;

use crate::Account;

/// By Redis key (`{prefix}res:{bare}`), as invalidations name them; shared
/// with every reader, so that a hit copies nothing.
pub(crate) type LookupCache = Cache<Arc<Account>>;

/// Applies a push from the cache's Redis connection: an invalidation drops
/// the keys it names (all of them for a flush, which names none), a lost
/// connection drops everything, since the new one tracks nothing yet and
/// invalidations sent meanwhile are lost.
pub(crate) fn apply(cache: &LookupCache, push: &PushInfo) {
    match (&push.kind, push.data.first()) {
        (PushKind::Invalidate, Some(Value::Array(keys))) => {
            cache.invalidate(keys.iter().filter_map(|key| match key {
                Value::BulkString(key) => std::str::from_utf8(key).ok(),
                _ => None,
            }))
        }
        (PushKind::Invalidate, _) | (PushKind::Disconnection, _) => cache.clear(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fetch(cache: &LookupCache, key: &str) {
        let ticket = cache.get(key).expect_err("a miss");
        cache.store(key, ticket, Arc::default());
    }

    #[test]
    fn an_invalidation_drops_the_keys_it_names() {
        let cache = LookupCache::new(10, Duration::from_secs(60));
        fetch(&cache, "res:a@x");
        fetch(&cache, "res:b@x");
        let push = PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(vec![Value::BulkString(b"res:a@x".to_vec())])],
        };
        apply(&cache, &push);
        assert!(cache.get("res:a@x").is_err());
        assert!(cache.get("res:b@x").is_ok());
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
            fetch(&cache, "res:a@x");
            fetch(&cache, "res:b@x");
            apply(&cache, &push);
            assert!(cache.get("res:a@x").is_err() && cache.get("res:b@x").is_err());
        }
    }
}
