//! The registry of the all-in-one process: plain maps behind std locks, which
//! are never held across an await (no method of this registry awaits).

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use xmppd_grpc::{BoundSession, Node, Role};

use crate::rules::{self, Change};
use crate::{Registry, RegistryError, Unbound, sort_by_jid, split_full};

#[derive(Default)]
pub struct MemoryRegistry {
    /// Read for every routed stanza, so readers must not wait for each other.
    sessions: RwLock<Sessions>,
    /// Full JID → recipients of its directed presence.
    directed: RwLock<HashMap<String, HashSet<String>>>,
    /// Node id → the node and when its heartbeat expires.
    nodes: RwLock<HashMap<String, (Node, Instant)>>,
}

#[derive(Default)]
struct Sessions {
    /// Bare JID → its bound resources, so that `resources()` is one lookup.
    /// A list, not a map: an account has one or a few resources, and a map
    /// would cost each idle session a table of several buckets.
    by_bare: HashMap<String, Vec<BoundSession>>,
    /// Node id → sessions bound there; a node leaves with its last session,
    /// so the keys are exactly the nodes that own sessions.
    per_node: HashMap<String, usize>,
}

impl Sessions {
    fn get(&self, full_jid: &str) -> Option<&BoundSession> {
        let (bare, _) = split_full(full_jid);
        self.by_bare
            .get(bare)?
            .iter()
            .find(|session| session.full_jid == full_jid)
    }

    fn insert(&mut self, session: BoundSession) {
        // Removing first keeps `per_node` right when the JID moves between nodes.
        self.remove(&session.full_jid);
        *self.per_node.entry(session.node_id.clone()).or_default() += 1;
        let (bare, _) = split_full(&session.full_jid);
        let resources = self.by_bare.entry(bare.to_owned()).or_default();
        resources.reserve_exact(1);
        resources.push(session);
    }

    fn remove(&mut self, full_jid: &str) {
        let (bare, _) = split_full(full_jid);
        let Some(resources) = self.by_bare.get_mut(bare) else {
            return;
        };
        let Some(index) = resources.iter().position(|s| s.full_jid == full_jid) else {
            return;
        };
        let removed = resources.swap_remove(index);
        if resources.is_empty() {
            self.by_bare.remove(bare);
        }
        if let Some(count) = self.per_node.get_mut(&removed.node_id) {
            *count -= 1;
            if *count == 0 {
                self.per_node.remove(&removed.node_id);
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &BoundSession> {
        self.by_bare.values().flatten()
    }

    fn apply<T>(
        &mut self,
        full_jid: &str,
        decide: impl FnOnce(Option<&BoundSession>) -> Change<T>,
    ) -> T {
        match decide(self.get(full_jid)) {
            Change::Keep(outcome) => outcome,
            Change::Put(session, outcome) => {
                self.insert(session);
                outcome
            }
            Change::Delete(outcome) => {
                self.remove(full_jid);
                outcome
            }
        }
    }
}

// No critical section below can panic halfway through an update, so a
// poisoned lock still guards consistent data.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryRegistry {
    /// The recipients of `full_jid`'s directed presence, sorted, forgotten.
    fn forget_directed(&self, full_jid: &str) -> Vec<String> {
        let taken = write(&self.directed).remove(full_jid).unwrap_or_default();
        let mut taken: Vec<String> = taken.into_iter().collect();
        taken.sort_unstable();
        taken
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn bind(&self, session: BoundSession) -> Result<Option<Unbound>, RegistryError> {
        let full_jid = session.full_jid.clone();
        // Locked until the replaced session's directed presence is taken, as in `unbind`.
        let mut sessions = write(&self.sessions);
        let Some(replaced) = sessions.apply(&full_jid, |current| rules::bind(&session, current))
        else {
            return Ok(None);
        };
        let directed = self.forget_directed(&full_jid);
        Ok(Some(Unbound {
            session: replaced,
            directed,
        }))
    }

    async fn unbind(
        &self,
        full_jid: &str,
        node_id: &str,
        conn_id: u64,
    ) -> Result<Option<Unbound>, RegistryError> {
        // The sessions stay locked until the directed presence is taken too, so
        // that a new session of this full JID cannot add to it in between.
        let mut sessions = write(&self.sessions);
        let Some(session) =
            sessions.apply(full_jid, |current| rules::unbind(node_id, conn_id, current))
        else {
            return Ok(None);
        };
        let directed = self.forget_directed(full_jid);
        Ok(Some(Unbound { session, directed }))
    }

    async fn set_presence(
        &self,
        full_jid: &str,
        conn_id: u64,
        available: bool,
        priority: i32,
        presence: Bytes,
    ) -> Result<bool, RegistryError> {
        Ok(write(&self.sessions).apply(full_jid, |current| {
            rules::set_presence(conn_id, available, priority, &presence, current)
        }))
    }

    async fn session(&self, full_jid: &str) -> Result<Option<BoundSession>, RegistryError> {
        Ok(read(&self.sessions).get(full_jid).cloned())
    }

    async fn resources(&self, bare_jid: &str) -> Result<Vec<BoundSession>, RegistryError> {
        let sessions = read(&self.sessions);
        let found = sessions
            .by_bare
            .get(bare_jid)
            .map(|resources| resources.to_vec())
            .unwrap_or_default();
        Ok(sort_by_jid(found))
    }

    async fn sessions_on_node(&self, node_id: &str) -> Result<Vec<BoundSession>, RegistryError> {
        // A scan: it runs once per dead node, while an index by node would
        // cost every session.
        let found = read(&self.sessions)
            .all()
            .filter(|session| session.node_id == node_id)
            .cloned()
            .collect();
        Ok(sort_by_jid(found))
    }

    async fn all_sessions(&self) -> Result<Vec<BoundSession>, RegistryError> {
        let all = read(&self.sessions).all().cloned().collect();
        Ok(sort_by_jid(all))
    }

    async fn count_sessions(&self) -> Result<u64, RegistryError> {
        Ok(read(&self.sessions).per_node.values().sum::<usize>() as u64)
    }

    async fn add_directed(&self, full_jid: &str, to: &str) -> Result<(), RegistryError> {
        write(&self.directed)
            .entry(full_jid.to_owned())
            .or_default()
            .insert(to.to_owned());
        Ok(())
    }

    async fn remove_directed(&self, full_jid: &str, to: &str) -> Result<(), RegistryError> {
        let mut directed = write(&self.directed);
        if let Some(recipients) = directed.get_mut(full_jid) {
            recipients.remove(to);
            if recipients.is_empty() {
                directed.remove(full_jid);
            }
        }
        Ok(())
    }

    async fn take_directed(&self, full_jid: &str) -> Result<Vec<String>, RegistryError> {
        Ok(self.forget_directed(full_jid))
    }

    async fn heartbeat(&self, node: &Node, ttl: Duration) -> Result<(), RegistryError> {
        let expires = Instant::now() + ttl.max(Duration::from_millis(1));
        write(&self.nodes).insert(node.id.clone(), (node.clone(), expires));
        Ok(())
    }

    async fn deregister(&self, node_id: &str) -> Result<(), RegistryError> {
        write(&self.nodes).remove(node_id);
        Ok(())
    }

    async fn live_nodes(&self, role: Role) -> Result<Vec<Node>, RegistryError> {
        let now = Instant::now();
        let mut nodes = write(&self.nodes);
        // Pruning here keeps the map from growing with every node that ever ran.
        nodes.retain(|_, (_, expires)| *expires > now);
        let mut live: Vec<Node> = nodes
            .values()
            .filter(|(node, _)| node.role() == role)
            .map(|(node, _)| node.clone())
            .collect();
        live.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    async fn dead_nodes_with_sessions(&self) -> Result<Vec<String>, RegistryError> {
        let owners: Vec<String> = read(&self.sessions).per_node.keys().cloned().collect();
        let now = Instant::now();
        let nodes = read(&self.nodes);
        let mut dead: Vec<String> = owners
            .into_iter()
            .filter(|id| nodes.get(id).is_none_or(|(_, expires)| *expires <= now))
            .collect();
        dead.sort_unstable();
        Ok(dead)
    }
}
