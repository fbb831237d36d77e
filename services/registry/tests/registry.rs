//! One suite, run against both registries: the all-in-one process and the
//! cluster must behave the same.
//!
//! The Redis half needs a real Redis at `redis://127.0.0.1:6379`, or at
//! `XMPPD_TEST_REDIS_URL`. Each test works under its own key prefix and
//! deletes its keys when done, so tests run in parallel against one Redis.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use xmppd_protocol::JidRef;
use xmppd_registry::{
    AccountPolicy, BoundResource, Caching, Node, RedisRegistry, Registry, ResourceFlags, Role,
    SharedRegistry, Unbound,
};

macro_rules! registry_tests {
    ($($test:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $test() {
                    let registry = xmppd_registry::connect(None, &Default::default(), "", super::Caching::Off).await.unwrap();
                    super::$test(registry).await;
                }
            )*
        }

        mod in_redis {
            $(
                #[tokio::test]
                async fn $test() {
                    let scratch = super::RedisScratch::new();
                    let registry = xmppd_registry::connect(Some(&scratch.url), &Default::default(), &scratch.prefix, super::Caching::Off)
                        .await
                        .unwrap();
                    super::$test(registry).await;
                }
            )*
        }
    };
}

registry_tests!(
    bind_replace_and_unbind,
    stale_unbind_is_ignored,
    unbind_by_connection_zero_or_no_node_is_exact,
    set_presence_needs_the_holding_connection,
    resources_of_a_bare_jid,
    sessions_on_node_counts_and_listing,
    directed_presence,
    directed_presence_stops_at_its_limit,
    unbind_takes_the_directed_presence_with_it,
    a_replacing_bind_takes_the_directed_presence_of_the_replaced,
    expired_heartbeat_makes_a_node_dead,
    live_nodes_by_role,
    concurrent_binds_replace_one_another,
    set_flags_needs_the_holding_connection,
    a_policy_lives_while_the_account_has_resources,
);

/// A key prefix of its own, whose keys are deleted on drop — even when the
/// test panicked, which is why this uses a blocking connection.
struct RedisScratch {
    url: String,
    prefix: String,
}

impl RedisScratch {
    /// In database `db` of the test Redis rather than 0.
    fn in_database(db: u32) -> Self {
        let mut scratch = Self::new();
        scratch.url = format!("{}/{db}", scratch.url.trim_end_matches('/'));
        scratch
    }

    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            url: std::env::var("XMPPD_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
            prefix: format!("xmppd-test:{}:{nanos}:{n}:", std::process::id()),
        }
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url.as_str())?.get_connection()
    }

    fn keys(&self, conn: &mut redis::Connection) -> redis::RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .query(conn)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    fn delete_keys(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection()?;
        let keys = self.keys(&mut conn)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).exec(&mut conn)?;
        }
        Ok(())
    }
}

impl Drop for RedisScratch {
    fn drop(&mut self) {
        if let Err(error) = self.delete_keys() {
            eprintln!("could not delete test keys {}*: {error}", self.prefix);
        }
    }
}

fn bound(full_jid: &str, node_id: &str, conn_id: u64) -> BoundResource {
    BoundResource {
        full_jid: full_jid.to_owned(),
        node_id: node_id.to_owned(),
        conn_id,
        bound_at: 1_700_000_000_000,
        ..BoundResource::default()
    }
}

fn node(id: &str, role: Role, grpc_address: &str) -> Node {
    Node {
        id: id.to_owned(),
        role: role.into(),
        grpc_address: grpc_address.to_owned(),
        ..Default::default()
    }
}

fn jids(sessions: &[BoundResource]) -> Vec<&str> {
    sessions.iter().map(|s| s.full_jid.as_str()).collect()
}

fn ids(nodes: &[Node]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

async fn bind_replace_and_unbind(registry: SharedRegistry) {
    let first = bound("alice@example.org/phone", "cm1", 1);
    assert_eq!(registry.bind(first.clone()).await.unwrap(), None);
    assert_eq!(
        registry.session("alice@example.org/phone").await.unwrap(),
        Some(first.clone())
    );

    // The same full JID from another node replaces the first, which moves.
    let second = bound("alice@example.org/phone", "cm2", 7);
    let replaced = Unbound {
        session: first,
        directed: Vec::new(),
        policy: None,
    };
    assert_eq!(registry.bind(second.clone()).await.unwrap(), Some(replaced));
    assert_eq!(
        registry.session("alice@example.org/phone").await.unwrap(),
        Some(second.clone())
    );
    assert!(registry.resources_on_node("cm1").await.unwrap().is_empty());
    assert_eq!(registry.dead_nodes_with_sessions().await.unwrap(), ["cm2"]);
    assert_eq!(registry.count_sessions().await.unwrap(), 1);

    let removed = registry
        .unbind("alice@example.org/phone", "cm2", 7)
        .await
        .unwrap();
    assert_eq!(removed.map(|unbound| unbound.session), Some(second));
    assert_eq!(
        registry.session("alice@example.org/phone").await.unwrap(),
        None
    );
    assert_eq!(registry.count_sessions().await.unwrap(), 0);
    assert!(every_resource(&registry).await.is_empty());
    assert!(
        registry
            .dead_nodes_with_sessions()
            .await
            .unwrap()
            .is_empty()
    );
}

/// Connection 0 and an empty node id are left out of an entry's encoding,
/// which the Redis unbind recognises its holder by: they must neither remove
/// another connection's entry nor miss their own.
async fn unbind_by_connection_zero_or_no_node_is_exact(registry: SharedRegistry) {
    let held = bound("carol@example.org/tab", "cm1", 5);
    registry.bind(held.clone()).await.unwrap();
    let zero = registry.unbind("carol@example.org/tab", "cm1", 0).await;
    assert_eq!(zero.unwrap(), None);
    let no_node = registry.unbind("carol@example.org/tab", "", 5).await;
    assert_eq!(no_node.unwrap(), None);
    assert_eq!(
        registry.session("carol@example.org/tab").await.unwrap(),
        Some(held)
    );

    let zero_held = bound("carol@example.org/tab", "cm1", 0);
    registry.bind(zero_held.clone()).await.unwrap();
    registry
        .add_directed("carol@example.org/tab", "dan@example.org", 0)
        .await
        .unwrap();
    let removed = registry.unbind("carol@example.org/tab", "cm1", 0).await;
    let expected = Unbound {
        session: zero_held,
        directed: vec!["dan@example.org".into()],
        policy: None,
    };
    assert_eq!(removed.unwrap(), Some(expected));
    assert_eq!(
        registry.session("carol@example.org/tab").await.unwrap(),
        None
    );
}

async fn stale_unbind_is_ignored(registry: SharedRegistry) {
    registry
        .bind(bound("bob@example.org/laptop", "cm1", 1))
        .await
        .unwrap();
    let replacement = bound("bob@example.org/laptop", "cm1", 2);
    registry.bind(replacement.clone()).await.unwrap();

    // The replaced connection closes late; its unbind must miss.
    let late = registry.unbind("bob@example.org/laptop", "cm1", 1).await;
    assert_eq!(late.unwrap(), None);
    // Same conn id, other node: not the holder either.
    let other_node = registry.unbind("bob@example.org/laptop", "cm9", 2).await;
    assert_eq!(other_node.unwrap(), None);
    let unknown = registry.unbind("nobody@example.org/x", "cm1", 2).await;
    assert_eq!(unknown.unwrap(), None);

    assert_eq!(
        registry.session("bob@example.org/laptop").await.unwrap(),
        Some(replacement.clone())
    );
    assert_eq!(
        registry.resources_on_node("cm1").await.unwrap(),
        [replacement]
    );
}

async fn set_presence_needs_the_holding_connection(registry: SharedRegistry) {
    let session = bound("carol@example.org/desk", "cm1", 3);
    registry.bind(session.clone()).await.unwrap();
    let presence = Bytes::from_static(b"<presence><priority>5</priority></presence>");

    let wrong_conn = registry
        .set_presence("carol@example.org/desk", 4, true, 5, presence.clone())
        .await;
    assert!(!wrong_conn.unwrap());
    let not_bound = registry
        .set_presence("carol@example.org/other", 3, true, 5, presence.clone())
        .await;
    assert!(!not_bound.unwrap());
    assert_eq!(
        registry.session("carol@example.org/desk").await.unwrap(),
        Some(session.clone())
    );

    let updated = registry
        .set_presence("carol@example.org/desk", 3, true, -1, presence.clone())
        .await;
    assert!(updated.unwrap());
    let expected = BoundResource {
        available: true,
        priority: -1,
        presence,
        ..session
    };
    assert_eq!(
        registry.session("carol@example.org/desk").await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        registry.resources("carol@example.org").await.unwrap(),
        [expected]
    );
}

async fn set_flags_needs_the_holding_connection(registry: SharedRegistry) {
    let session = bound("fay@example.org/desk", "cm1", 3);
    registry.bind(session.clone()).await.unwrap();
    let flags = ResourceFlags {
        carbons: true,
        blocklist_pushes: false,
    };
    assert!(
        !registry
            .set_flags("fay@example.org/desk", 4, flags)
            .await
            .unwrap()
    );
    assert!(
        !registry
            .set_flags("fay@example.org/other", 3, flags)
            .await
            .unwrap()
    );
    assert_eq!(
        registry.session("fay@example.org/desk").await.unwrap(),
        Some(session.clone())
    );
    assert!(
        registry
            .set_flags("fay@example.org/desk", 3, flags)
            .await
            .unwrap()
    );
    let expected = BoundResource {
        flags: Some(flags),
        ..session
    };
    assert_eq!(
        registry.resources("fay@example.org").await.unwrap(),
        [expected]
    );
}

/// A policy is written only while the account has a resource, is read
/// with its resources, and leaves with the last of them, handed to whoever
/// unbinds it.
async fn a_policy_lives_while_the_account_has_resources(registry: SharedRegistry) {
    let policy = AccountPolicy {
        blocked: vec!["mallory@example.org".into()],
    };
    let offline = registry.set_policy("gus@example.org", &policy).await;
    assert!(!offline.unwrap(), "written for an account with no resource");
    assert_eq!(
        registry.account("gus@example.org").await.unwrap().policy,
        None
    );

    registry
        .bind(bound("gus@example.org/a", "cm1", 1))
        .await
        .unwrap();
    registry
        .bind(bound("gus@example.org/b", "cm1", 2))
        .await
        .unwrap();
    assert!(
        registry
            .set_policy("gus@example.org", &policy)
            .await
            .unwrap()
    );
    let account = registry.account("gus@example.org").await.unwrap();
    assert_eq!(account.policy.as_deref(), Some(&policy));
    assert_eq!(
        jids(&account.resources),
        ["gus@example.org/a", "gus@example.org/b"]
    );
    assert_eq!(every_resource(&registry).await.len(), 2);

    let first = registry
        .unbind("gus@example.org/a", "cm1", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.policy, None, "other resources keep the policy");
    let last = registry
        .unbind("gus@example.org/b", "cm1", 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.policy.as_deref(), Some(&policy));
    assert_eq!(
        *registry.account("gus@example.org").await.unwrap(),
        Default::default(),
        "the policy outlived the account's resources"
    );

    // An empty policy is a policy: written and read back as one.
    registry
        .bind(bound("gus@example.org/a", "cm1", 3))
        .await
        .unwrap();
    let empty = AccountPolicy::default();
    assert!(
        registry
            .set_policy("gus@example.org", &empty)
            .await
            .unwrap()
    );
    let account = registry.account("gus@example.org").await.unwrap();
    assert_eq!(account.policy.as_deref(), Some(&empty));
}

async fn resources_of_a_bare_jid(registry: SharedRegistry) {
    for (full_jid, conn_id) in [
        ("dave@example.org/tablet", 1),
        ("dave@example.org/phone/2", 2),
        ("erin@example.org/phone", 3),
    ] {
        registry
            .bind(bound(full_jid, "cm1", conn_id))
            .await
            .unwrap();
    }
    let bare_of = |jid| JidRef::new(jid).bare().as_str();
    assert_eq!(bare_of("dave@example.org/phone/2"), "dave@example.org");
    assert_eq!(bare_of("dave@example.org"), "dave@example.org");

    let dave = registry.resources("dave@example.org").await.unwrap();
    assert_eq!(
        jids(&dave),
        ["dave@example.org/phone/2", "dave@example.org/tablet"]
    );
    assert!(
        registry
            .resources("nobody@example.org")
            .await
            .unwrap()
            .is_empty()
    );

    registry
        .unbind("dave@example.org/phone/2", "cm1", 2)
        .await
        .unwrap();
    let dave = registry.resources("dave@example.org").await.unwrap();
    assert_eq!(jids(&dave), ["dave@example.org/tablet"]);
}

async fn sessions_on_node_counts_and_listing(registry: SharedRegistry) {
    for (full_jid, node_id, conn_id) in [
        ("u2@example.org/a", "cm1", 1),
        ("u1@example.org/a", "cm1", 2),
        ("u1@example.org/b", "cm2", 1),
        ("u3@example.org/a", "cm2", 2),
    ] {
        registry
            .bind(bound(full_jid, node_id, conn_id))
            .await
            .unwrap();
    }

    let cm1 = registry.resources_on_node("cm1").await.unwrap();
    assert_eq!(jids(&cm1), ["u1@example.org/a", "u2@example.org/a"]);
    assert!(cm1.iter().all(|s| s.node_id == "cm1"));
    assert!(registry.resources_on_node("cm3").await.unwrap().is_empty());
    assert_eq!(registry.count_sessions().await.unwrap(), 4);
    assert_eq!(
        jids(&every_resource(&registry).await),
        [
            "u1@example.org/a",
            "u1@example.org/b",
            "u2@example.org/a",
            "u3@example.org/a"
        ]
    );
}

/// Every bound resource, one account per page, sorted by full JID; each
/// account must come in exactly one page.
async fn every_resource(registry: &SharedRegistry) -> Vec<xmppd_registry::BoundResource> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = registry.resources_page(&cursor, 1).await.unwrap();
        all.extend(page.resources);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    all.sort_by(|a, b| a.full_jid.cmp(&b.full_jid));
    let before = all.len();
    all.dedup_by(|a, b| a.full_jid == b.full_jid);
    assert_eq!(all.len(), before, "an account came in two pages");
    all
}

async fn directed_presence(registry: SharedRegistry) {
    let from = "frank@example.org/home";
    for to in [
        "room@muc.example.org/frank",
        "gina@other.example",
        "gina@other.example",
    ] {
        registry.add_directed(from, to, 0).await.unwrap();
    }
    registry
        .add_directed(from, "hal@example.org", 0)
        .await
        .unwrap();
    registry
        .remove_directed(from, "hal@example.org")
        .await
        .unwrap();
    registry
        .remove_directed("nobody@example.org/x", "hal@example.org")
        .await
        .unwrap();

    assert_eq!(
        registry.take_directed(from).await.unwrap(),
        ["gina@other.example", "room@muc.example.org/frank"]
    );
    assert!(registry.take_directed(from).await.unwrap().is_empty());
}

/// At the limit, a new recipient is refused while the known ones are still
/// accepted; a removal makes room again.
async fn directed_presence_stops_at_its_limit(registry: SharedRegistry) {
    let from = "kim@example.org/home";
    assert!(
        registry
            .add_directed(from, "a@example.org", 2)
            .await
            .unwrap()
    );
    assert!(
        registry
            .add_directed(from, "b@example.org", 2)
            .await
            .unwrap()
    );
    assert!(
        !registry
            .add_directed(from, "c@example.org", 2)
            .await
            .unwrap()
    );
    assert!(
        registry
            .add_directed(from, "a@example.org", 2)
            .await
            .unwrap()
    );
    registry
        .remove_directed(from, "b@example.org")
        .await
        .unwrap();
    assert!(
        registry
            .add_directed(from, "c@example.org", 2)
            .await
            .unwrap()
    );
    assert_eq!(
        registry.take_directed(from).await.unwrap(),
        ["a@example.org", "c@example.org"]
    );
}

/// The end of a session tells whoever got its directed presence, so the
/// unbind takes them; a replaced connection's late unbind must leave them to
/// the replacement.
async fn unbind_takes_the_directed_presence_with_it(registry: SharedRegistry) {
    let full = "ivy@example.org/desk";
    registry.bind(bound(full, "cm1", 1)).await.unwrap();
    let replacement = bound(full, "cm1", 2);
    registry.bind(replacement.clone()).await.unwrap();
    for to in ["room@muc.example.org/ivy", "jay@other.example"] {
        registry.add_directed(full, to, 0).await.unwrap();
    }

    assert_eq!(registry.unbind(full, "cm1", 1).await.unwrap(), None);
    let removed = registry.unbind(full, "cm1", 2).await.unwrap();
    let expected = Unbound {
        session: replacement,
        directed: vec![
            "jay@other.example".into(),
            "room@muc.example.org/ivy".into(),
        ],
        policy: None,
    };
    assert_eq!(removed, Some(expected));
    assert!(registry.take_directed(full).await.unwrap().is_empty());
}

/// The session a bind replaces is over: its directed presence goes with
/// it, to be told so, and the replacement starts with none of its own.
async fn a_replacing_bind_takes_the_directed_presence_of_the_replaced(registry: SharedRegistry) {
    let full = "ivy@example.org/desk";
    let first = bound(full, "cm1", 1);
    registry.bind(first.clone()).await.unwrap();
    registry
        .add_directed(full, "room@muc.example.org/ivy", 0)
        .await
        .unwrap();

    let replaced = registry.bind(bound(full, "cm2", 2)).await.unwrap();
    let expected = Unbound {
        session: first,
        directed: vec!["room@muc.example.org/ivy".into()],
        policy: None,
    };
    assert_eq!(replaced, Some(expected));
    assert!(registry.take_directed(full).await.unwrap().is_empty());
}

async fn expired_heartbeat_makes_a_node_dead(registry: SharedRegistry) {
    let short = node("cm-short", Role::ConnectionManager, "");
    let long = node("cm-long", Role::ConnectionManager, "");
    registry
        .bind(bound("ivy@example.org/a", "cm-short", 1))
        .await
        .unwrap();
    registry
        .bind(bound("ivy@example.org/b", "cm-long", 1))
        .await
        .unwrap();
    // Heartbeats last, so that the short one is still running when checked.
    registry
        .heartbeat(&long, Duration::from_secs(30))
        .await
        .unwrap();
    registry
        .heartbeat(&short, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        registry
            .dead_nodes_with_sessions()
            .await
            .unwrap()
            .is_empty()
    );

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        registry.dead_nodes_with_sessions().await.unwrap(),
        ["cm-short"]
    );
    let live = registry.live_nodes(Role::ConnectionManager).await.unwrap();
    assert_eq!(ids(&live), ["cm-long"]);

    // What the reaper does: unbind what the dead node held.
    for session in registry.resources_on_node("cm-short").await.unwrap() {
        registry
            .unbind(&session.full_jid, &session.node_id, session.conn_id)
            .await
            .unwrap();
    }
    assert!(
        registry
            .dead_nodes_with_sessions()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(registry.count_sessions().await.unwrap(), 1);
}

async fn live_nodes_by_role(registry: SharedRegistry) {
    let ttl = Duration::from_secs(30);
    let nodes = [
        node("router-b", Role::Router, "http://10.0.0.2:50051"),
        node("router-a", Role::Router, "http://10.0.0.1:50051"),
        node("session-a", Role::Session, "http://10.0.0.3:50052"),
        node("cm-a", Role::ConnectionManager, ""),
    ];
    for node in &nodes {
        registry.heartbeat(node, ttl).await.unwrap();
    }
    assert_eq!(
        registry.live_nodes(Role::Router).await.unwrap(),
        [nodes[1].clone(), nodes[0].clone()]
    );
    assert_eq!(
        registry.live_nodes(Role::Session).await.unwrap(),
        [nodes[2].clone()]
    );

    // A heartbeat also refreshes what the node advertises.
    let moved = node("router-b", Role::Router, "http://10.0.0.9:50051");
    registry.heartbeat(&moved, ttl).await.unwrap();
    registry.deregister("router-a").await.unwrap();
    assert_eq!(registry.live_nodes(Role::Router).await.unwrap(), [moved]);
    assert_eq!(
        ids(&registry.live_nodes(Role::ConnectionManager).await.unwrap()),
        ["cm-a"]
    );
}

async fn concurrent_binds_replace_one_another(registry: SharedRegistry) {
    const BINDERS: u64 = 8;
    let binds: Vec<_> = (0..BINDERS)
        .map(|conn_id| {
            let registry = registry.clone();
            let node_id = format!("cm{}", conn_id % 3);
            tokio::spawn(async move {
                let session = bound("jay@example.org/phone", &node_id, conn_id);
                registry.bind(session).await.unwrap()
            })
        })
        .collect();
    let mut replaced = Vec::new();
    for bind in binds {
        replaced.extend(bind.await.unwrap());
    }

    // Every bind but the first replaced exactly one other, and the survivor
    // was replaced by nobody.
    let survivor = registry
        .session("jay@example.org/phone")
        .await
        .unwrap()
        .unwrap();
    let mut conn_ids: Vec<u64> = replaced.iter().map(|old| old.session.conn_id).collect();
    conn_ids.push(survivor.conn_id);
    conn_ids.sort_unstable();
    assert_eq!(conn_ids, (0..BINDERS).collect::<Vec<_>>());
    assert_eq!(registry.count_sessions().await.unwrap(), 1);
    assert_eq!(
        registry.resources_on_node(&survivor.node_id).await.unwrap(),
        [survivor]
    );
}

/// The node sets must shrink with the resource hashes down to nothing, or
/// keys would pile up and the reaper would chase nodes without sessions.
#[tokio::test]
async fn redis_keeps_no_keys_for_unbound_sessions() {
    let scratch = RedisScratch::new();
    let registry = xmppd_registry::connect(
        Some(&scratch.url),
        &Default::default(),
        &scratch.prefix,
        Caching::Off,
    )
    .await
    .unwrap();
    registry
        .bind(bound("kim@example.org/a", "cm1", 1))
        .await
        .unwrap();
    registry
        .bind(bound("kim@example.org/b", "cm2", 1))
        .await
        .unwrap();
    registry
        .bind(bound("kim@example.org/a", "cm2", 2))
        .await
        .unwrap();
    registry
        .set_presence("kim@example.org/a", 2, true, 0, Bytes::new())
        .await
        .unwrap();
    registry
        .unbind("kim@example.org/a", "cm2", 2)
        .await
        .unwrap();
    registry
        .unbind("kim@example.org/b", "cm2", 1)
        .await
        .unwrap();

    let mut conn = scratch.connection().unwrap();
    assert_eq!(scratch.keys(&mut conn).unwrap(), Vec::<String>::new());
}

// The router's cached registry (`Caching::On`): the Redis half only, since the
// memory registry has no cache.

fn caching(ttl: Duration) -> Caching {
    Caching::On {
        entries: NonZeroUsize::new(1000).unwrap(),
        ttl,
    }
}

/// A cached and an uncached registry over the same keys. The cached one is
/// given a URL that asks for RESP2: it must switch to RESP3 by itself (redis-rs
/// refuses a cache on RESP2).
async fn cached_and_uncached(
    scratch: &RedisScratch,
    ttl: Duration,
) -> (RedisRegistry, RedisRegistry) {
    let resp2 = format!("{}/?protocol=resp2", scratch.url.trim_end_matches('/'));
    let cached = RedisRegistry::connect(&resp2, &Default::default(), &scratch.prefix, caching(ttl))
        .await
        .unwrap();
    let uncached = RedisRegistry::connect(
        &scratch.url,
        &Default::default(),
        &scratch.prefix,
        Caching::Off,
    )
    .await
    .unwrap();
    (cached, uncached)
}

/// Polls `cached` until its look-up of `bare` equals the uncached one, for
/// at most `limit`: invalidations are asynchronous pushes.
async fn settles(cached: &RedisRegistry, uncached: &RedisRegistry, bare: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let truth = uncached.resources(bare).await.unwrap();
        let seen = cached.resources(bare).await.unwrap();
        if seen == truth {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cached look-up of {bare} still {seen:?} after {limit:?}, Redis has {truth:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn hgetall_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_hgetall:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn cached_lookups_match_uncached() {
    let scratch = RedisScratch::new();
    let (cached, uncached) = cached_and_uncached(&scratch, Duration::from_secs(3600)).await;
    uncached
        .bind(bound("lea@example.org/phone", "cm1", 1))
        .await
        .unwrap();
    uncached
        .bind(bound("lea@example.org/desk", "cm2", 2))
        .await
        .unwrap();
    uncached
        .set_presence(
            "lea@example.org/desk",
            2,
            true,
            5,
            Bytes::from_static(b"<presence/>"),
        )
        .await
        .unwrap();
    uncached
        .bind(bound("max@example.org/tab", "cm1", 3))
        .await
        .unwrap();

    for bare in ["lea@example.org", "max@example.org", "nobody@example.org"] {
        let truth = uncached.resources(bare).await.unwrap();
        // A miss, then a hit: both must be what Redis holds.
        assert_eq!(cached.resources(bare).await.unwrap(), truth, "{bare}");
        assert_eq!(cached.resources(bare).await.unwrap(), truth, "{bare}");
    }
    assert_eq!(
        jids(&cached.resources("lea@example.org").await.unwrap()),
        ["lea@example.org/desk", "lea@example.org/phone"]
    );
    let stats = cached.cache_statistics().unwrap();
    assert!(stats.hits >= 3, "{stats:?}");
    assert!(uncached.cache_statistics().is_none());
}

/// Another node's bind, presence change and unbind reach the cached look-up
/// through Redis' invalidation pushes. The ttl is an hour, so only an
/// invalidation can refresh an entry here.
#[tokio::test]
async fn cached_lookups_see_other_writers() {
    let scratch = RedisScratch::new();
    let (cached, other) = cached_and_uncached(&scratch, Duration::from_secs(3600)).await;
    let bare = "ned@example.org";
    let limit = Duration::from_secs(1);

    // Cached while empty.
    assert_eq!(cached.resources(bare).await.unwrap(), []);
    assert_eq!(cached.resources(bare).await.unwrap(), []);

    other
        .bind(bound("ned@example.org/phone", "cm1", 1))
        .await
        .unwrap();
    settles(&cached, &other, bare, limit).await;
    assert_eq!(
        jids(&cached.resources(bare).await.unwrap()),
        ["ned@example.org/phone"]
    );

    other
        .set_presence(
            "ned@example.org/phone",
            1,
            true,
            3,
            Bytes::from_static(b"<presence/>"),
        )
        .await
        .unwrap();
    settles(&cached, &other, bare, limit).await;
    let phone = &cached.resources(bare).await.unwrap()[0];
    assert!(phone.available && phone.priority == 3, "{phone:?}");

    other
        .bind(bound("ned@example.org/desk", "cm2", 2))
        .await
        .unwrap();
    settles(&cached, &other, bare, limit).await;
    assert_eq!(
        jids(&cached.resources(bare).await.unwrap()),
        ["ned@example.org/desk", "ned@example.org/phone"]
    );

    // Replaced by another connection on another node.
    other
        .bind(bound("ned@example.org/phone", "cm3", 7))
        .await
        .unwrap();
    settles(&cached, &other, bare, limit).await;

    other
        .unbind("ned@example.org/phone", "cm3", 7)
        .await
        .unwrap();
    other
        .unbind("ned@example.org/desk", "cm2", 2)
        .await
        .unwrap();
    settles(&cached, &other, bare, limit).await;
    assert_eq!(cached.resources(bare).await.unwrap(), []);

    let stats = cached.cache_statistics().unwrap();
    assert!(stats.invalidations >= 5, "{stats:?}");
}

/// Repeated look-ups of an unchanged entry do not reach Redis: counted on the
/// server (`INFO commandstats`, which other tests' look-ups can only raise),
/// with an uncached registry as the control.
#[tokio::test]
async fn repeated_lookups_are_served_from_the_cache() {
    const LOOKUPS: u64 = 200;
    let scratch = RedisScratch::new();
    let (cached, uncached) = cached_and_uncached(&scratch, Duration::from_secs(3600)).await;
    uncached
        .bind(bound("ola@example.org/phone", "cm1", 1))
        .await
        .unwrap();
    let mut stats = scratch.connection().unwrap();

    let before = hgetall_calls(&mut stats);
    for _ in 0..LOOKUPS {
        assert_eq!(
            uncached.resources("ola@example.org").await.unwrap().len(),
            1
        );
    }
    let uncached_calls = hgetall_calls(&mut stats) - before;
    assert!(
        uncached_calls >= LOOKUPS,
        "uncached: {uncached_calls} HVALS"
    );

    let before = hgetall_calls(&mut stats);
    for _ in 0..LOOKUPS {
        assert_eq!(cached.resources("ola@example.org").await.unwrap().len(), 1);
    }
    let cached_calls = hgetall_calls(&mut stats) - before;
    assert!(cached_calls < LOOKUPS / 2, "cached: {cached_calls} HVALS");
    let cache = cached.cache_statistics().unwrap();
    assert!(cache.hits >= LOOKUPS - 1, "{cache:?}");
}

/// A look-up fetched while its key changes is not kept past that change's
/// invalidation (Redis sends one per tracked read, so a value stored after
/// it would stay until the ttl). The ttl is an hour: a reader spinning on
/// the key while another node changes it must agree with Redis within a
/// push's latency after the changes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_racing_a_change_is_not_kept() {
    const TTL: Duration = Duration::from_secs(3600);
    let scratch = RedisScratch::new();
    let (cached, writer) = cached_and_uncached(&scratch, TTL).await;
    let cached = std::sync::Arc::new(cached);
    for round in 0..5 {
        let bare = format!("pia{round}@example.org");
        let full = format!("{bare}/phone");
        writer.bind(bound(&full, "cm1", 1)).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = tokio::spawn({
            let (cached, bare, stop) = (cached.clone(), bare.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    cached.resources(&bare).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        for i in 0..20 {
            writer
                .set_presence(&full, 1, i % 2 == 0, i, Bytes::new())
                .await
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.await.unwrap();
        settles(&cached, &writer, &bare, Duration::from_secs(1)).await;
    }
}

/// A cached registry that loses its connection forgets what it held: the
/// invalidations of the changes made meanwhile went to the dead connection,
/// so an entry kept would be wrong until its ttl (an hour here). Redis'
/// own CLIENT KILL cuts it, as a Redis restart or a network cut would.
#[tokio::test]
async fn a_cache_that_lost_its_connection_forgets_what_it_held() {
    // A database of its own: the tracking connections there are this test's.
    const DATABASE: u32 = 9;
    let scratch = RedisScratch::in_database(DATABASE);
    let (cached, other) = cached_and_uncached(&scratch, Duration::from_secs(3600)).await;
    let bare = "ria@example.org";
    other
        .bind(bound("ria@example.org/phone", "cm1", 1))
        .await
        .unwrap();
    assert_eq!(
        jids(&cached.resources(bare).await.unwrap()),
        ["ria@example.org/phone"]
    );

    let mut admin = scratch.connection().unwrap();
    assert_eq!(kill_tracking_clients(&mut admin, DATABASE), 1);
    other
        .bind(bound("ria@example.org/desk", "cm2", 2))
        .await
        .unwrap();

    // Errors while it reconnects are fine; the old answer for long is not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let truth = other.resources(bare).await.unwrap();
    loop {
        let seen = cached.resources(bare).await;
        if seen.as_ref().is_ok_and(|seen| *seen == truth) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after losing its connection the cache still answers {seen:?}, Redis has {truth:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Tracking again on the new connection: a later change still arrives.
    other
        .unbind("ria@example.org/phone", "cm1", 1)
        .await
        .unwrap();
    settles(&cached, &other, bare, Duration::from_secs(1)).await;
}

/// Kills the connections to database `db` that track keys for a client-side
/// cache; returns how many.
fn kill_tracking_clients(admin: &mut redis::Connection, db: u32) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(admin)
        .unwrap();
    let tracking = clients.lines().filter_map(|line| {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let in_db = field("db") == Some(db.to_string().as_str());
        let tracks = field("flags").is_some_and(|flags| flags.contains('t'));
        (in_db && tracks).then(|| field("id").map(str::to_owned))?
    });
    let ids: Vec<String> = tracking.collect();
    for id in &ids {
        let _killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(admin)
            .unwrap();
    }
    ids.len()
}
