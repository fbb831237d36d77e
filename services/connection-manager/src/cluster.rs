//! The connection-manager's side of the cluster: one stream to every live
//! router, the local mailboxes of the bound client streams, and the calls a
//! login makes to the session replicas ([`crate::replicas`]).
//!
//! Each bound client stream is pinned to one router stream (chosen by
//! rendezvous hash of its full JID), so its stanzas reach the router, and
//! from there their recipients, in the order the client sent them (RFC 6120
//! §10.1). If that router stream breaks, the client streams pinned to it are
//! closed with a stream error: the router may or may not have routed what
//! was in flight, and the client, told so, reconnects and resends rather
//! than losing a stanza silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::Status;
use xmppd_grpc::{
    BindRequest, Connector, Credential, CredentialsRequest, EdgeDown, EdgeUp, Envelope,
    FrameStream, Node, RegisterOutcome, RegisterRequest, Role, SessionEnded, bind_reply, edge_down,
    edge_up, login_answer, login_call,
};
use xmppd_protocol::error::StreamErrorCondition;
use xmppd_registry::{SharedRegistry, membership};

use crate::mailbox::{self, Mailbox, MailboxSender};
use crate::replicas::Replicas;

/// Frames buffered towards one router before client streams wait.
const ROUTER_BUFFER: usize = 4096;
/// Stanzas queued for one client stream; a client that falls this far
/// behind is disconnected rather than holding up everyone else. The mailbox
/// only takes memory for what is queued.
const MAILBOX_SIZE: usize = 1024;
/// How long a login step waits for a session replica that keeps its stream
/// open but does not answer (hung, or its store stalled): the client gets
/// `temporary-auth-failure` rather than a stream that never moves.
const LOGIN_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the cluster hands a bound client stream.
#[derive(Debug)]
pub enum Delivery {
    /// A stanza to write to the client as is.
    Stanza(Bytes),
    /// Close the stream with this RFC 6120 §4.9.3 condition. The text is
    /// boxed so that a mailbox slot stays the size of a stanza's `Bytes`.
    Close {
        condition: StreamErrorCondition,
        text: Box<str>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no router is reachable")]
    NoRouter,
    #[error("cluster call failed: {0}")]
    Rpc(#[from] Status),
    #[error("the router stream this session is pinned to is gone")]
    RouteLost,
    #[error("a session replica answered another call than the one made")]
    WrongAnswer,
}

/// A bound client stream's way into the cluster.
pub struct SessionRoute {
    pub full_jid: String,
    pub conn_id: u64,
    router: Weak<RouterLink>,
    cluster: Cluster,
}

impl SessionRoute {
    /// Sends a client stanza on the pinned router stream.
    pub async fn send(&self, envelope: Envelope) -> Result<(), ClusterError> {
        let link = self.router.upgrade().ok_or(ClusterError::RouteLost)?;
        // Room first, frame after: the waiting task holds one envelope, not
        // three copies of it in nested futures.
        let permit = link
            .up
            .reserve()
            .await
            .map_err(|_| ClusterError::RouteLost)?;
        permit.send(EdgeUp {
            frame: Some(edge_up::Frame::Stanza(envelope)),
        });
        Ok(())
    }
}

impl Drop for SessionRoute {
    /// The stream ended: forget the mailbox and tell the account's replica,
    /// through the same router stream so it arrives after the last stanza.
    fn drop(&mut self) {
        self.cluster
            .end_session(&self.full_jid, self.conn_id, &self.router);
    }
}

struct LocalSession {
    conn_id: u64,
    mailbox: MailboxSender,
    router_id: String,
}

struct RouterLink {
    node: Node,
    up: mpsc::Sender<EdgeUp>,
}

/// Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    connector: Arc<dyn Connector>,
    registry: SharedRegistry,
    next_conn_id: AtomicU64,
    // Std locks with short critical sections, never held across an await.
    routers: RwLock<HashMap<String, Arc<RouterLink>>>,
    /// Routers with an open stream, sorted: the pinning domain.
    router_nodes: RwLock<Vec<Node>>,
    replicas: Replicas,
    sessions: RwLock<HashMap<String, LocalSession>>,
    /// Session ends that found no router to report them to (the only router
    /// just went away). Reported once one is attached again; lost, the
    /// account's replica would keep the resource bound and available for as
    /// long as this node lives.
    unreported_ends: Mutex<Vec<SessionEnded>>,
}

impl Cluster {
    pub fn new(node_id: String, connector: Arc<dyn Connector>, registry: SharedRegistry) -> Self {
        let node = Node {
            id: node_id,
            role: Role::ConnectionManager as i32,
            grpc_address: String::new(),
        };
        Cluster {
            inner: Arc::new(Inner {
                node,
                replicas: Replicas::new(connector.clone(), LOGIN_CALL_TIMEOUT),
                connector,
                registry,
                next_conn_id: AtomicU64::new(1),
                routers: RwLock::default(),
                router_nodes: RwLock::default(),
                sessions: RwLock::default(),
                unreported_ends: Mutex::default(),
            }),
        }
    }

    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }

    pub fn next_conn_id(&self) -> u64 {
        self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a client can log in and send: a router to send through,
    /// and a session replica to ask for its credentials and binding.
    pub fn is_ready(&self) -> bool {
        self.router_count() > 0 && self.inner.replicas.count() > 0
    }

    pub fn router_count(&self) -> usize {
        self.inner
            .router_nodes
            .read()
            .expect("router nodes lock")
            .len()
    }

    pub fn session_count(&self) -> usize {
        self.inner.sessions.read().expect("sessions lock").len()
    }

    /// Closes every bound stream on this node with `condition`, through
    /// its mailbox, after what is already queued for it.
    pub fn close_all(&self, condition: StreamErrorCondition, text: &str) {
        for session in self.inner.sessions.read().expect("sessions lock").values() {
            let _ = session.mailbox.try_send(Delivery::Close {
                condition,
                text: text.into(),
            });
        }
    }

    /// Follows the live routers in the registry, attaching to new ones and
    /// re-attaching to those whose stream broke.
    pub async fn follow_routers(self, interval: Duration) {
        let mut members = membership::follow(self.inner.registry.clone(), Role::Router, interval);
        while let Some(nodes) = members.next().await {
            self.update_routers(&nodes).await;
            let unreported = std::mem::take(
                &mut *self
                    .inner
                    .unreported_ends
                    .lock()
                    .expect("unreported ends lock"),
            );
            for ended in unreported {
                self.report_end(ended, &Weak::new());
            }
        }
    }

    /// Follows the live session replicas in the registry.
    pub async fn follow_session_replicas(self, interval: Duration) {
        let mut members = membership::follow(self.inner.registry.clone(), Role::Session, interval);
        while let Some(nodes) = members.next().await {
            self.inner.replicas.update(&nodes).await;
        }
    }

    async fn update_routers(&self, members: &[Node]) {
        let known: Vec<String> = self
            .inner
            .routers
            .read()
            .expect("routers lock")
            .keys()
            .cloned()
            .collect();
        for id in known
            .iter()
            .filter(|id| !members.iter().any(|m| &m.id == *id))
        {
            tracing::info!(router = %id, "router left");
            self.retire(id);
        }
        for node in members.iter().filter(|m| !known.contains(&m.id)) {
            match self.attach(node.clone()).await {
                Ok(()) => tracing::info!(router = %node.id, "attached to router"),
                Err(error) => tracing::warn!(router = %node.id, %error, "cannot attach to router"),
            }
        }
    }

    async fn attach(&self, node: Node) -> Result<(), ClusterError> {
        let (up, rx) = mpsc::channel(ROUTER_BUFFER);
        let hello = EdgeUp {
            frame: Some(edge_up::Frame::Hello(self.inner.node.clone())),
        };
        up.send(hello).await.map_err(|_| ClusterError::NoRouter)?;
        let downstream = self.inner.connector.attach(&node, rx).await?;
        let link = Arc::new(RouterLink {
            node: node.clone(),
            up,
        });
        self.inner
            .routers
            .write()
            .expect("routers lock")
            .insert(node.id.clone(), link);
        self.refresh_router_nodes();
        tokio::spawn(self.clone().read_router(node.id, downstream));
        Ok(())
    }

    async fn read_router(self, router_id: String, mut downstream: FrameStream<EdgeDown>) {
        loop {
            match downstream.next().await {
                Some(Ok(EdgeDown { frame: Some(frame) })) => {
                    if let Some(envelope) = self.dispatch(frame) {
                        self.return_undeliverable(&router_id, envelope);
                    }
                }
                Some(Ok(EdgeDown { frame: None })) => {}
                None => break,
                Some(Err(status)) => {
                    tracing::warn!(router = %router_id, %status, "router stream failed");
                    break;
                }
            }
        }
        self.retire(&router_id);
    }

    /// Forgets a router and closes the client streams pinned to it.
    fn retire(&self, router_id: &str) {
        if self
            .inner
            .routers
            .write()
            .expect("routers lock")
            .remove(router_id)
            .is_none()
        {
            return;
        }
        self.refresh_router_nodes();
        let sessions = self.inner.sessions.read().expect("sessions lock");
        let pinned = sessions.values().filter(|s| s.router_id == router_id);
        let mut closed = 0;
        for session in pinned {
            closed += 1;
            let _ = session.mailbox.try_send(Delivery::Close {
                condition: StreamErrorCondition::InternalServerError,
                text: "the cluster route of this stream was lost; please reconnect".into(),
            });
        }
        tracing::warn!(
            router = router_id,
            sessions = closed,
            "router gone, closing its client streams"
        );
    }

    fn refresh_router_nodes(&self) {
        let mut nodes: Vec<Node> = self
            .inner
            .routers
            .read()
            .expect("routers lock")
            .values()
            .map(|link| link.node.clone())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        *self.inner.router_nodes.write().expect("router nodes lock") = nodes;
    }

    /// A router stream delivered something for a local client stream. A
    /// stanza for a stream that is gone is handed back, for the router to
    /// route again: never dropped here.
    fn dispatch(&self, frame: edge_down::Frame) -> Option<Envelope> {
        let sessions = self.inner.sessions.read().expect("sessions lock");
        let (full_jid, session, delivery) = match frame {
            edge_down::Frame::Stanza(envelope) => {
                let Some(session) = sessions.get(&envelope.to) else {
                    tracing::debug!(full_jid = %envelope.to, "stanza for a stream that is gone");
                    return Some(envelope);
                };
                (envelope.to, session, Delivery::Stanza(envelope.payload))
            }
            edge_down::Frame::Kick(kick) => match sessions.get(&kick.full_jid) {
                Some(session) if session.conn_id == kick.conn_id => {
                    let delivery = Delivery::Close {
                        condition: StreamErrorCondition::from_name(&kick.condition)
                            .unwrap_or(StreamErrorCondition::UndefinedCondition),
                        text: kick.text.into(),
                    };
                    (kick.full_jid, session, delivery)
                }
                _ => return None,
            },
        };
        // The last slot is kept for the stream error, so that a client too
        // slow to keep up is told and disconnected; once that is queued,
        // later stanzas find the mailbox full and go nowhere.
        let delivery = match delivery {
            Delivery::Stanza(_) if session.mailbox.capacity() == 1 => {
                tracing::warn!(%full_jid, "client too slow, its mailbox is full");
                Delivery::Close {
                    condition: StreamErrorCondition::ResourceConstraint,
                    text: "too many stanzas waiting for this client".into(),
                }
            }
            delivery => delivery,
        };
        let _ = session.mailbox.try_send(delivery);
        None
    }

    /// Sends a stanza whose stream is gone back up the router stream it came
    /// down.
    fn return_undeliverable(&self, router_id: &str, envelope: Envelope) {
        let Some(link) = self
            .inner
            .routers
            .read()
            .expect("routers lock")
            .get(router_id)
            .cloned()
        else {
            // Retired while this stanza was on its way: lost with whatever
            // else that router had in flight (docs/failures.md).
            tracing::warn!(router = router_id, to = %envelope.to, "stanza for a stream that is gone, and its router too");
            return;
        };
        let frame = EdgeUp {
            frame: Some(edge_up::Frame::Undeliverable(envelope)),
        };
        send_soon(&link.up, frame);
    }

    fn router_for(&self, key: &str) -> Result<Arc<RouterLink>, ClusterError> {
        let nodes = self.inner.router_nodes.read().expect("router nodes lock");
        let node = membership::owner(key, &nodes).ok_or(ClusterError::NoRouter)?;
        self.inner
            .routers
            .read()
            .expect("routers lock")
            .get(&node.id)
            .cloned()
            .ok_or(ClusterError::NoRouter)
    }

    /// SCRAM credentials of an account; empty when it does not exist.
    pub async fn credentials(&self, bare_jid: &str) -> Result<Vec<Credential>, ClusterError> {
        let request = CredentialsRequest {
            jid: bare_jid.to_string(),
        };
        let call = login_call::Call::Credentials(request);
        let login_answer::Answer::Credentials(reply) =
            self.inner.replicas.call(bare_jid, call).await?
        else {
            return Err(ClusterError::WrongAnswer);
        };
        Ok(reply.credentials)
    }

    /// XEP-0077 account creation with keys derived at the edge.
    pub async fn register(
        &self,
        bare_jid: &str,
        credentials: Vec<Credential>,
    ) -> Result<RegisterOutcome, ClusterError> {
        let request = RegisterRequest {
            jid: bare_jid.to_string(),
            credentials,
        };
        let call = login_call::Call::Register(request);
        let login_answer::Answer::Register(reply) =
            self.inner.replicas.call(bare_jid, call).await?
        else {
            return Err(ClusterError::WrongAnswer);
        };
        Ok(reply.outcome())
    }

    /// Binds a resource (RFC 6120 §7) and opens the stream's mailbox.
    /// `Ok(Err(condition))` is a refusal to report to the client.
    pub async fn bind(
        &self,
        bare_jid: &str,
        resource: Option<&str>,
    ) -> Result<Result<(SessionRoute, Mailbox), String>, ClusterError> {
        let conn_id = self.next_conn_id();
        let request = BindRequest {
            bare_jid: bare_jid.to_string(),
            resource: resource.unwrap_or_default().to_string(),
            node_id: self.inner.node.id.clone(),
            conn_id,
        };
        let call = login_call::Call::Bind(request);
        let login_answer::Answer::Bind(reply) = self.inner.replicas.call(bare_jid, call).await?
        else {
            return Err(ClusterError::WrongAnswer);
        };
        let full_jid = match reply.outcome {
            Some(bind_reply::Outcome::FullJid(full_jid)) => full_jid,
            Some(bind_reply::Outcome::ErrorCondition(condition)) => return Ok(Err(condition)),
            None => return Ok(Err("internal-server-error".into())),
        };
        let router = self.router_for(&full_jid)?;
        let (mailbox, deliveries) = mailbox::channel(MAILBOX_SIZE);
        let previous = self.inner.sessions.write().expect("sessions lock").insert(
            full_jid.clone(),
            LocalSession {
                conn_id,
                mailbox,
                router_id: router.node.id.clone(),
            },
        );
        // The same full JID bound again on this node: the old stream yields.
        if let Some(previous) = previous {
            let _ = previous.mailbox.try_send(Delivery::Close {
                condition: StreamErrorCondition::Conflict,
                text: "replaced by a new session".into(),
            });
        }
        let route = SessionRoute {
            full_jid,
            conn_id,
            router: Arc::downgrade(&router),
            cluster: self.clone(),
        };
        Ok(Ok((route, deliveries)))
    }

    fn end_session(&self, full_jid: &str, conn_id: u64, router: &Weak<RouterLink>) {
        {
            let mut sessions = self.inner.sessions.write().expect("sessions lock");
            if sessions.get(full_jid).is_some_and(|s| s.conn_id == conn_id) {
                sessions.remove(full_jid);
            }
        }
        let ended = SessionEnded {
            full_jid: full_jid.to_string(),
            node_id: self.inner.node.id.clone(),
            conn_id,
        };
        self.report_end(ended, router);
    }

    /// Tells the account's replica that a session ended. The pinned router
    /// keeps the order; if it is gone, any other will do, and if none is,
    /// the end waits for the next attached router (the reaper does not help:
    /// this node is alive).
    fn report_end(&self, ended: SessionEnded, pinned: &Weak<RouterLink>) {
        // A closed stream belongs to a router about to be retired.
        let open = |link: &Arc<RouterLink>| !link.up.is_closed();
        let Some(link) = pinned
            .upgrade()
            .filter(open)
            .or_else(|| self.router_for(&ended.full_jid).ok().filter(open))
        else {
            tracing::warn!(full_jid = %ended.full_jid, "no router to report the end of a session to yet");
            self.inner
                .unreported_ends
                .lock()
                .expect("unreported ends lock")
                .push(ended);
            return;
        };
        let frame = EdgeUp {
            frame: Some(edge_up::Frame::Ended(ended)),
        };
        send_soon(&link.up, frame);
    }
}

/// Queues `frame` on a router stream from code that cannot wait: at once if
/// there is room, else from a task that waits for it.
fn send_soon(up: &mpsc::Sender<EdgeUp>, frame: EdgeUp) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = up.try_send(frame) {
        let up = up.clone();
        tokio::spawn(async move {
            let _ = up.send(frame).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_with_session(full_jid: &str) -> (Cluster, Mailbox) {
        let registry: SharedRegistry = Arc::new(xmppd_registry::MemoryRegistry::default());
        let cluster = Cluster::new(
            "cm-test".into(),
            Arc::new(xmppd_grpc::RemoteConnector),
            registry,
        );
        let (mailbox, deliveries) = mailbox::channel(MAILBOX_SIZE);
        let session = LocalSession {
            conn_id: 7,
            mailbox,
            router_id: "router".into(),
        };
        cluster
            .inner
            .sessions
            .write()
            .unwrap()
            .insert(full_jid.into(), session);
        (cluster, deliveries)
    }

    fn stanza_for(full_jid: &str) -> edge_down::Frame {
        edge_down::Frame::Stanza(Envelope {
            to: full_jid.into(),
            payload: Bytes::from_static(b"<message/>"),
            ..Default::default()
        })
    }

    #[test]
    fn a_client_whose_mailbox_fills_up_is_told_and_closed() {
        let jid = "slow@localhost/r";
        let (cluster, mut deliveries) = cluster_with_session(jid);
        for _ in 0..MAILBOX_SIZE + 10 {
            cluster.dispatch(stanza_for(jid));
        }
        for _ in 0..MAILBOX_SIZE - 1 {
            assert!(matches!(deliveries.try_recv(), Ok(Delivery::Stanza(_))));
        }
        match deliveries.try_recv() {
            Ok(Delivery::Close { condition, .. }) => {
                assert_eq!(condition, StreamErrorCondition::ResourceConstraint)
            }
            other => panic!("expected the stream to be closed, got {other:?}"),
        }
        assert!(deliveries.try_recv().is_err());
    }

    #[test]
    fn a_stanza_for_a_stream_that_is_gone_is_handed_back() {
        let (cluster, mut deliveries) = cluster_with_session("alice@localhost/r");
        let returned = cluster.dispatch(stanza_for("alice@localhost/gone"));
        assert_eq!(
            returned.map(|e| e.to).as_deref(),
            Some("alice@localhost/gone")
        );
        assert!(deliveries.try_recv().is_err());
        assert!(cluster.dispatch(stanza_for("alice@localhost/r")).is_none());
        assert!(matches!(deliveries.try_recv(), Ok(Delivery::Stanza(_))));
    }

    #[test]
    fn a_kick_for_a_replaced_connection_is_ignored() {
        let jid = "alice@localhost/r";
        let (cluster, mut deliveries) = cluster_with_session(jid);
        let kick = |conn_id| {
            edge_down::Frame::Kick(xmppd_grpc::Kick {
                full_jid: jid.into(),
                conn_id,
                condition: "conflict".into(),
                ..Default::default()
            })
        };
        cluster.dispatch(kick(6));
        assert!(deliveries.try_recv().is_err());
        cluster.dispatch(kick(7));
        assert!(matches!(deliveries.try_recv(), Ok(Delivery::Close { .. })));
    }
}
