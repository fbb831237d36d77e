//! The registry of the all-in-one process: plain maps behind std locks, which
//! are never held across an await (no method of this registry awaits).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use xmppd_grpc::{AccountPolicy, BoundResource, Node, ResourceFlags, Role};

use crate::rules::{self, Change};
use crate::{Account, Registry, RegistryError, ResourcePage, Unbound, sort_by_jid, split_full};

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
    /// Bare JID → its bound resources (sorted) and policy, so that a look-up
    /// is one hash probe and a reference count: routing reads an account
    /// for every stanza, and changes copy it. A list, not a map: an account
    /// has one or a few resources, and a map would cost each idle session a
    /// table of several buckets.
    by_bare: HashMap<String, Arc<Account>>,
    /// Node id → sessions bound there; a node leaves with its last session,
    /// so the keys are exactly the nodes that own sessions.
    per_node: HashMap<String, usize>,
}

impl Sessions {
    fn get(&self, full_jid: &str) -> Option<&BoundResource> {
        let (bare, _) = split_full(full_jid);
        self.by_bare
            .get(bare)?
            .resources
            .iter()
            .find(|session| session.full_jid == full_jid)
    }

    fn insert(&mut self, session: BoundResource) {
        // Removing first keeps `per_node` right when the JID moves between nodes.
        self.remove(&session.full_jid);
        *self.per_node.entry(session.node_id.clone()).or_default() += 1;
        let (bare, _) = split_full(&session.full_jid);
        let account = self.by_bare.entry(bare.to_owned()).or_default();
        let resources = &mut Arc::make_mut(account).resources;
        let at = resources.partition_point(|s| s.full_jid < session.full_jid);
        resources.reserve_exact(1);
        resources.insert(at, session);
    }

    /// Removes a resource; returns the account's policy if it was the last.
    fn remove(&mut self, full_jid: &str) -> Option<Arc<AccountPolicy>> {
        let (bare, _) = split_full(full_jid);
        let account = self.by_bare.get_mut(bare)?;
        let index = account
            .resources
            .iter()
            .position(|s| s.full_jid == full_jid)?;
        let removed = Arc::make_mut(account).resources.remove(index);
        let mut policy = None;
        if account.resources.is_empty() {
            policy = self
                .by_bare
                .remove(bare)
                .and_then(|gone| gone.policy.clone());
        }
        if let Some(count) = self.per_node.get_mut(&removed.node_id) {
            *count -= 1;
            if *count == 0 {
                self.per_node.remove(&removed.node_id);
            }
        }
        policy
    }

    fn all(&self) -> impl Iterator<Item = &BoundResource> {
        self.by_bare.values().flat_map(|account| &account.resources)
    }

    /// Applies a decision; returns its outcome, and the account's policy if
    /// the decision deleted its last resource.
    fn apply<T>(
        &mut self,
        full_jid: &str,
        decide: impl FnOnce(Option<&BoundResource>) -> Change<T>,
    ) -> (T, Option<Arc<AccountPolicy>>) {
        match decide(self.get(full_jid)) {
            Change::Keep(outcome) => (outcome, None),
            Change::Put(session, outcome) => {
                self.insert(session);
                (outcome, None)
            }
            Change::Delete(outcome) => {
                let policy = self.remove(full_jid);
                (outcome, policy)
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
    async fn bind(&self, session: BoundResource) -> Result<Option<Unbound>, RegistryError> {
        let full_jid = session.full_jid.clone();
        // Locked until the replaced session's directed presence is taken, as in `unbind`.
        let mut sessions = write(&self.sessions);
        let (Some(replaced), _) =
            sessions.apply(&full_jid, |current| rules::bind(&session, current))
        else {
            return Ok(None);
        };
        let directed = self.forget_directed(&full_jid);
        Ok(Some(Unbound {
            session: replaced,
            directed,
            policy: None,
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
        let (Some(session), policy) =
            sessions.apply(full_jid, |current| rules::unbind(node_id, conn_id, current))
        else {
            return Ok(None);
        };
        let directed = self.forget_directed(full_jid);
        Ok(Some(Unbound {
            session,
            directed,
            policy,
        }))
    }

    async fn set_presence(
        &self,
        full_jid: &str,
        conn_id: u64,
        available: bool,
        priority: i32,
        presence: Bytes,
    ) -> Result<bool, RegistryError> {
        Ok(write(&self.sessions)
            .apply(full_jid, |current| {
                rules::set_presence(conn_id, available, priority, &presence, current)
            })
            .0)
    }

    async fn set_flags(
        &self,
        full_jid: &str,
        conn_id: u64,
        flags: ResourceFlags,
    ) -> Result<bool, RegistryError> {
        Ok(write(&self.sessions)
            .apply(full_jid, |current| {
                rules::set_flags(conn_id, flags, current)
            })
            .0)
    }

    async fn set_policy(
        &self,
        bare_jid: &str,
        policy: &AccountPolicy,
    ) -> Result<bool, RegistryError> {
        let mut sessions = write(&self.sessions);
        let Some(account) = sessions.by_bare.get_mut(bare_jid) else {
            return Ok(false);
        };
        Arc::make_mut(account).policy = Some(Arc::new(policy.clone()));
        Ok(true)
    }

    async fn session(&self, full_jid: &str) -> Result<Option<BoundResource>, RegistryError> {
        Ok(read(&self.sessions).get(full_jid).cloned())
    }

    async fn account(&self, bare_jid: &str) -> Result<Arc<Account>, RegistryError> {
        let sessions = read(&self.sessions);
        Ok(sessions.by_bare.get(bare_jid).cloned().unwrap_or_default())
    }

    async fn resources_on_node(&self, node_id: &str) -> Result<Vec<BoundResource>, RegistryError> {
        // A scan: it runs once per dead node, while an index by node would
        // cost every session.
        let found = read(&self.sessions)
            .all()
            .filter(|session| session.node_id == node_id)
            .cloned()
            .collect();
        Ok(sort_by_jid(found))
    }

    /// The cursor is the last bare JID of the previous page: accounts come
    /// in the order of their bare JIDs.
    async fn resources_page(
        &self,
        cursor: &str,
        limit: usize,
    ) -> Result<ResourcePage, RegistryError> {
        let sessions = read(&self.sessions);
        // The `limit` first accounts after the cursor, without sorting (or
        // copying) every key: a bounded max-heap of the smallest seen.
        let mut smallest = std::collections::BinaryHeap::with_capacity(limit + 1);
        for bare in sessions.by_bare.keys() {
            if bare.as_str() > cursor {
                smallest.push(bare.as_str());
                if smallest.len() > limit.max(1) {
                    smallest.pop();
                }
            }
        }
        let page = smallest.into_sorted_vec();
        let more = page
            .last()
            .is_some_and(|last| sessions.by_bare.keys().any(|bare| bare.as_str() > *last));
        Ok(ResourcePage {
            resources: page
                .iter()
                .flat_map(|bare| sessions.by_bare[*bare].resources.iter().cloned())
                .collect(),
            next: more
                .then(|| page.last().map(|last| last.to_string()))
                .flatten(),
        })
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
