//! One stream to every live router, followed through the registry, and the
//! route each bound stream is pinned to.
//!
//! Each bound client stream is pinned to one router stream (chosen by
//! rendezvous hash of its full JID), so its stanzas reach the router, and
//! from there their recipients, in the order the client sent them (RFC 6120
//! §10.1). If that router stream breaks, the client streams pinned to it are
//! closed with a stream error: the router may or may not have routed what
//! was in flight, and the client, told so, reconnects and resends rather
//! than losing a stanza silently.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use xmppd_grpc::{EdgeDown, EdgeUp, Envelope, FrameStream, Node, Role, StreamEnded, edge_up};
use xmppd_protocol::error::StreamErrorCondition;
use xmppd_registry::membership;

use super::settlements::Ledger;
use super::{Cluster, ClusterError, Delivery};
use crate::mailbox::Mailbox;
use crate::stream_management::StreamManagement;

/// Frames buffered towards one router before client streams wait.
const ROUTER_BUFFER: usize = 4096;

/// A bound client stream's way into the cluster.
pub struct PinnedRoute {
    pub full_jid: String,
    pub conn_id: u64,
    pub(super) router: Weak<RouterLink>,
    pub(super) cluster: Cluster,
}

impl PinnedRoute {
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

    /// The stream's session ended (`crate::bound_stream::Bound` drops):
    /// forgets its mailbox (and its resumption) and tells the account's
    /// replica, through the same router stream so that it arrives after the
    /// last stanza; then hands back what the client never had: what its
    /// stream management holds unacknowledged, then what waits in `mailbox`.
    pub fn end(&self, mailbox: &mut Mailbox, sm: Option<Box<StreamManagement>>) {
        self.cluster.end_stream(self, mailbox, sm);
    }
}

pub(super) struct RouterLink {
    pub(super) node: Node,
    pub(super) up: mpsc::Sender<EdgeUp>,
    /// The settlements of this router's deliveries, sent up by a task that
    /// holds a sender of `up` until the ledger closes.
    ledger: Arc<Ledger>,
}

impl Drop for RouterLink {
    /// Stops the ledger's task, which ends the stream to the router (with
    /// `up`, the last sender): the router returns whatever was not settled
    /// by then.
    fn drop(&mut self) {
        self.ledger.close();
    }
}

impl Cluster {
    /// Frames waiting in this node's buffers towards its routers; read at
    /// scrape time.
    pub fn queued_router_frames(&self) -> usize {
        let routers = self.inner.routers.read().expect("routers lock");
        routers
            .values()
            .map(|link| link.up.max_capacity() - link.up.capacity())
            .sum()
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

    async fn update_routers(&self, members: &[Node]) {
        let held: Vec<Node> = {
            let routers = self.inner.routers.read().expect("routers lock");
            routers.values().map(|link| link.node.clone()).collect()
        };
        let changes = membership::changes(&held, members);
        for id in &changes.left {
            tracing::info!(router = %id, "router left");
            self.retire(id);
        }
        for node in changes.joined {
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
        let ledger = Arc::new(Ledger::default());
        tokio::spawn(ledger.clone().forward(up.clone()));
        let link = Arc::new(RouterLink {
            node: node.clone(),
            up,
            ledger: ledger.clone(),
        });
        self.inner
            .routers
            .write()
            .expect("routers lock")
            .insert(node.id.clone(), link);
        self.refresh_router_nodes();
        tokio::spawn(self.clone().read_router(node.id, downstream, ledger));
        Ok(())
    }

    async fn read_router(
        self,
        router_id: String,
        mut downstream: FrameStream<EdgeDown>,
        ledger: Arc<Ledger>,
    ) {
        loop {
            match downstream.next().await {
                Some(Ok(EdgeDown {
                    frame: Some(frame),
                    seq,
                })) => self.dispatch(frame, ledger.receipt(seq)),
                Some(Ok(EdgeDown { frame: None, .. })) => {}
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
        let sessions = self.inner.streams.read().expect("streams lock");
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

    pub(super) fn router_for(&self, key: &str) -> Result<Arc<RouterLink>, ClusterError> {
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

    /// Tells the account's replica that a session ended. The pinned router
    /// keeps the order; if it is gone, any other will do, and if none is,
    /// the end waits for the next attached router (the reaper does not help:
    /// this node is alive).
    pub(super) fn report_end(&self, ended: StreamEnded, pinned: &Weak<RouterLink>) {
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
