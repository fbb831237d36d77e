//! Cluster membership seen from one node: which nodes of a role are alive,
//! and which of them owns an account.
//!
//! Ownership is rendezvous hashing (highest random weight) of the bare JID
//! over the live replicas: every node computes the same owner from the same
//! member list, and when a replica joins or leaves only the accounts it
//! gains or loses move.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use xmppd_grpc::{Node, Role};

use crate::SharedRegistry;

/// The live node whose id wins the rendezvous for `key` (a bare JID).
pub fn owner<'a>(key: &str, nodes: &'a [Node]) -> Option<&'a Node> {
    nodes.iter().max_by_key(|node| rank(node, key))
}

/// The nodes in the order they would own `key` as members leave: the owner
/// first, then the owner once it has gone, and so on.
pub fn ranked<'a>(key: &str, nodes: &'a [Node]) -> Vec<&'a Node> {
    let mut ranked: Vec<&Node> = nodes.iter().collect();
    ranked.sort_by_cached_key(|node| std::cmp::Reverse(rank(node, key)));
    ranked
}

fn rank<'a>(node: &'a Node, key: &str) -> (u64, &'a str) {
    (rendezvous_weight(&node.id, key), &node.id)
}

/// A stable 64-bit weight of (node, key): FNV-1a over both, then a
/// SplitMix64 finaliser so that similar ids still spread evenly. Stable
/// across processes and versions, unlike `std`'s hasher.
fn rendezvous_weight(node_id: &str, key: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    for byte in node_id.bytes().chain([0xff]).chain(key.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// How the live members of a role differ from the nodes a follower holds
/// connections to. A member is the whole registration: one that came back
/// under the same id at another address is a member that left and one that
/// joined, so its old connection is closed and a new one opened. The load a
/// node reports with each heartbeat (`stanzas_per_second`) is not part of
/// it.
#[derive(Debug, PartialEq)]
pub struct Changes<'a> {
    /// Ids of the held nodes that are no longer live members.
    pub left: Vec<String>,
    /// Live members no connection is held to.
    pub joined: Vec<&'a Node>,
}

/// The one comparison every follower of membership makes (the router's
/// streams to session replicas, a connection-manager's router streams and
/// its login streams): `held` against `live`.
pub fn changes<'a, 'h>(held: impl IntoIterator<Item = &'h Node>, live: &'a [Node]) -> Changes<'a> {
    let held: Vec<&Node> = held.into_iter().collect();
    let same =
        |a: &Node, b: &Node| a.id == b.id && a.role == b.role && a.grpc_address == b.grpc_address;
    Changes {
        left: held
            .iter()
            .filter(|node| !live.iter().any(|member| same(node, member)))
            .map(|node| node.id.clone())
            .collect(),
        joined: live
            .iter()
            .filter(|member| !held.iter().any(|node| same(node, member)))
            .collect(),
    }
}

/// Polls the registry for the live nodes of `role` every `interval` and
/// publishes the list whenever it changes. The task ends when every receiver
/// is gone.
pub fn watch_members(
    registry: SharedRegistry,
    role: Role,
    interval: Duration,
) -> watch::Receiver<Vec<Node>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tx.closed() => return,
            }
            match registry.live_nodes(role).await {
                Ok(nodes) => {
                    tx.send_if_modified(|current| {
                        let changed = *current != nodes;
                        if changed {
                            *current = nodes;
                        }
                        changed
                    });
                }
                Err(error) => tracing::warn!(%error, ?role, "cannot list live nodes"),
            }
        }
    });
    rx
}

/// The live members of a role, as a node that keeps connections to them
/// follows them: handed out whenever they change, and at least every
/// interval, so that the follower also retries a member whose connection
/// broke while its registration stayed the same (restarted in place within
/// its heartbeat TTL, or a network cut).
pub struct Members {
    watch: watch::Receiver<Vec<Node>>,
    retry: tokio::time::Interval,
}

impl Members {
    /// The members to reconcile with; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Vec<Node>> {
        tokio::select! {
            changed = self.watch.changed() => changed.ok()?,
            _ = self.retry.tick() => {}
        }
        Some(self.watch.borrow_and_update().clone())
    }
}

/// Follows the live nodes of `role` (see [`Members`]).
pub fn follow(registry: SharedRegistry, role: Role, interval: Duration) -> Members {
    let mut retry = tokio::time::interval(interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Members {
        watch: watch_members(registry, role, interval),
        retry,
    }
}

/// Keeps `node` registered in the registry: a heartbeat every `interval`,
/// each valid for `ttl`, until `shutdown` resolves; then deregisters it so
/// that peers stop using it at once instead of waiting for the TTL. Each
/// heartbeat carries the rate of `delivered` (a count of stanzas that only
/// grows) since the one before, as `stanzas_per_second`.
pub async fn keep_registered(
    registry: SharedRegistry,
    mut node: Node,
    interval: Duration,
    ttl: Duration,
    delivered: impl Fn() -> u64,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut last = (Instant::now(), delivered());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = (Instant::now(), delivered());
                let seconds = now.0.duration_since(last.0).as_secs_f64();
                if seconds > 0.0 {
                    node.stanzas_per_second = now.1.saturating_sub(last.1) as f64 / seconds;
                }
                last = now;
                if let Err(error) = registry.heartbeat(&node, ttl).await {
                    tracing::warn!(%error, node = %node.id, "heartbeat failed");
                }
            }
            _ = &mut shutdown => break,
        }
    }
    if let Err(error) = registry.deregister(&node.id).await {
        tracing::warn!(%error, node = %node.id, "deregistration failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<Node> {
        ids.iter()
            .map(|id| Node {
                id: id.to_string(),
                role: Role::Session as i32,
                grpc_address: String::new(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn changes_are_the_members_that_left_and_joined() {
        let held = nodes(&["a", "b"]);
        let mut live = nodes(&["b", "c"]);
        let changes = changes(&held, &live);
        assert_eq!(changes.left, ["a"]);
        assert_eq!(changes.joined, [&live[1]]);
        live[0].grpc_address = "elsewhere:1".into();
        let moved = super::changes(&held, &live);
        assert_eq!(moved.left, ["a", "b"]);
        assert_eq!(moved.joined, [&live[0], &live[1]]);
    }

    #[test]
    fn a_node_reporting_a_new_load_is_the_same_member() {
        let held = nodes(&["a"]);
        let mut live = nodes(&["a"]);
        live[0].stanzas_per_second = 1234.5;
        let changes = changes(&held, &live);
        assert!(
            changes.left.is_empty() && changes.joined.is_empty(),
            "{changes:?}"
        );
    }

    #[test]
    fn no_nodes_no_owner() {
        assert!(owner("a@b", &[]).is_none());
    }

    #[test]
    fn owner_does_not_depend_on_list_order() {
        let forward = nodes(&["s1", "s2", "s3"]);
        let backward = nodes(&["s3", "s2", "s1"]);
        for i in 0..100 {
            let key = format!("user{i}@example.org");
            assert_eq!(
                owner(&key, &forward).unwrap().id,
                owner(&key, &backward).unwrap().id
            );
        }
    }

    #[test]
    fn the_ranking_is_the_succession_of_owners() {
        let three = nodes(&["s1", "s2", "s3"]);
        for i in 0..100 {
            let key = format!("user{i}@example.org");
            let ranked = ranked(&key, &three);
            assert_eq!(ranked.len(), 3);
            assert_eq!(ranked[0].id, owner(&key, &three).unwrap().id);
            let rest: Vec<Node> = three
                .iter()
                .filter(|node| node.id != ranked[0].id)
                .cloned()
                .collect();
            assert_eq!(ranked[1].id, owner(&key, &rest).unwrap().id);
        }
    }

    #[test]
    fn accounts_spread_and_only_the_leavers_move() {
        let three = nodes(&["s1", "s2", "s3"]);
        let two = nodes(&["s1", "s2"]);
        let mut per_node = std::collections::HashMap::new();
        for i in 0..3000 {
            let key = format!("user{i}@example.org");
            let before = &owner(&key, &three).unwrap().id;
            *per_node.entry(before.clone()).or_insert(0) += 1;
            let after = &owner(&key, &two).unwrap().id;
            if before != "s3" {
                assert_eq!(before, after, "{key} moved without its owner leaving");
            }
        }
        for count in per_node.values() {
            assert!((800..1200).contains(count), "uneven spread: {per_node:?}");
        }
    }
}
