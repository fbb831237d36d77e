//! This router's streams to the session replicas, and which replica owns
//! which account.
//!
//! Frames sent to a replica are kept until it acknowledges them. When the
//! stream to a replica breaks, the unacknowledged frames are re-sent to the
//! accounts' new owners (at least once), so a replica's death loses nothing
//! that was in flight. While no replica is reachable at all, frames are
//! parked and flushed when one appears.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use futures::StreamExt;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tonic::Status;
use xmppd_grpc::{Connector, FrameStream, Node, SessionDown, SessionUp, session_up};
use xmppd_registry::membership;

/// Frames buffered towards one replica before senders wait.
const STREAM_BUFFER: usize = 4096;

/// What the router does with frames a replica sends back.
pub trait Downstream: Send + Sync + 'static {
    fn handle(&self, frame: SessionDown) -> impl std::future::Future<Output = ()> + Send;
}

/// A frame on its way to the replica owning `owner` (a bare JID).
#[derive(Clone)]
struct Pending {
    owner: String,
    frame: session_up::Frame,
}

struct Link {
    node: Node,
    stream: AsyncMutex<LinkStream>,
    /// `stream.unacked.len()`, copied at every change under the lock, so that
    /// a scrape reads it without waiting on a lock a full buffer holds.
    unacked_len: AtomicUsize,
}

/// Sequence numbers and the unacknowledged frames move together with the
/// send, under one lock, so that they stay in stream order.
struct LinkStream {
    next_seq: u64,
    unacked: VecDeque<(u64, Pending)>,
    /// `None` once the link is retired. Dropping the sender ends the stream,
    /// which a replica that is stopping waits for: its gRPC server finishes
    /// only when every stream has.
    up: Option<mpsc::Sender<SessionUp>>,
}

pub struct Replicas {
    connector: Arc<dyn Connector>,
    // Std locks, never held across an await.
    links: RwLock<HashMap<String, Arc<Link>>>,
    /// Live replica nodes with an open stream, sorted: the ownership domain.
    owners: RwLock<Vec<Node>>,
    parked: Mutex<Vec<Pending>>,
}

impl Replicas {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Replicas {
            connector,
            links: RwLock::default(),
            owners: RwLock::default(),
            parked: Mutex::default(),
        }
    }

    pub fn count(&self) -> usize {
        self.owners.read().expect("owners lock").len()
    }

    /// Frames sent to replicas and not acknowledged yet: buffered, on the
    /// wire, or being handled.
    pub fn unacked_frames(&self) -> usize {
        let links = self.links.read().expect("links lock");
        links
            .values()
            .map(|link| link.unacked_len.load(Ordering::Relaxed))
            .sum()
    }

    /// Frames held while no replica is reachable.
    pub fn parked_frames(&self) -> usize {
        self.parked.lock().expect("parked lock").len()
    }

    /// Sends `frame` to the replica owning `owner`, or parks it.
    pub async fn send(&self, owner: String, frame: session_up::Frame) {
        let mut pending = Pending { owner, frame };
        loop {
            let Some(link) = self.link_for(&pending.owner) else {
                tracing::warn!(owner = %pending.owner, "no session replica reachable, parking frame");
                self.parked.lock().expect("parked lock").push(pending);
                return;
            };
            match link.send(pending).await {
                Ok(()) => return,
                // The stream closed under us: that link is gone, try the next owner.
                Err(returned) => {
                    Box::pin(self.retire(&link)).await;
                    pending = returned;
                }
            }
        }
    }

    fn link_for(&self, owner: &str) -> Option<Arc<Link>> {
        let owners = self.owners.read().expect("owners lock");
        let node = membership::owner(owner, &owners)?;
        self.links
            .read()
            .expect("links lock")
            .get(&node.id)
            .cloned()
    }

    /// Opens streams to new members and closes those of departed ones.
    pub async fn update_members<D: Downstream>(
        self: &Arc<Self>,
        members: &[Node],
        downstream: &Arc<D>,
    ) {
        let held: Vec<Node> = {
            let links = self.links.read().expect("links lock");
            links.values().map(|link| link.node.clone()).collect()
        };
        let changes = membership::changes(&held, members);
        for id in &changes.left {
            tracing::info!(replica = %id, "session replica left");
            let link = self.links.read().expect("links lock").get(id).cloned();
            if let Some(link) = link {
                self.retire(&link).await;
            }
        }
        for node in changes.joined {
            match self.open(node.clone(), downstream).await {
                Ok(()) => tracing::info!(replica = %node.id, "session replica joined"),
                Err(error) => {
                    tracing::warn!(replica = %node.id, %error, "cannot open session stream")
                }
            }
        }
        self.flush_parked().await;
    }

    async fn open<D: Downstream>(
        self: &Arc<Self>,
        node: Node,
        downstream: &Arc<D>,
    ) -> Result<(), Status> {
        let (up, rx) = mpsc::channel(STREAM_BUFFER);
        let responses = self.connector.process(&node, rx).await?;
        let link = Arc::new(Link {
            node: node.clone(),
            stream: AsyncMutex::new(LinkStream {
                next_seq: 1,
                unacked: VecDeque::new(),
                up: Some(up),
            }),
            unacked_len: AtomicUsize::new(0),
        });
        self.links
            .write()
            .expect("links lock")
            .insert(node.id.clone(), link.clone());
        self.refresh_owners();
        tokio::spawn(read_replica(
            Arc::downgrade(self),
            link,
            responses,
            downstream.clone(),
        ));
        Ok(())
    }

    /// Retires `link` if it is still the current one for its node (a stream
    /// that failed after its node re-joined must not retire the new one),
    /// and hands its unacknowledged frames to their new owners.
    async fn retire(&self, link: &Arc<Link>) {
        let removed = {
            let mut links = self.links.write().expect("links lock");
            let is_current = links
                .get(&link.node.id)
                .is_some_and(|current| Arc::ptr_eq(current, link));
            if is_current {
                links.remove(&link.node.id);
            }
            is_current
        };
        if removed {
            self.refresh_owners();
            self.resend(link.close().await).await;
        }
    }

    fn refresh_owners(&self) {
        let mut nodes: Vec<Node> = self
            .links
            .read()
            .expect("links lock")
            .values()
            .map(|link| link.node.clone())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        *self.owners.write().expect("owners lock") = nodes;
    }

    async fn resend(&self, unacked: Vec<Pending>) {
        for pending in unacked {
            Box::pin(self.send(pending.owner, pending.frame)).await;
        }
    }

    async fn flush_parked(&self) {
        let parked = std::mem::take(&mut *self.parked.lock().expect("parked lock"));
        for pending in parked {
            Box::pin(self.send(pending.owner, pending.frame)).await;
        }
    }
}

impl Link {
    async fn send(&self, pending: Pending) -> Result<(), Pending> {
        let mut stream = self.stream.lock().await;
        let seq = stream.next_seq;
        let frame = SessionUp {
            seq,
            owner: pending.owner.clone(),
            frame: Some(pending.frame.clone()),
        };
        let Some(up) = &stream.up else {
            return Err(pending);
        };
        if up.send(frame).await.is_err() {
            return Err(pending);
        }
        stream.next_seq += 1;
        stream.unacked.push_back((seq, pending));
        self.unacked_len
            .store(stream.unacked.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Ends the stream and takes back what the replica did not acknowledge.
    async fn close(&self) -> Vec<Pending> {
        let mut stream = self.stream.lock().await;
        stream.up = None;
        let unacked: Vec<Pending> = stream
            .unacked
            .drain(..)
            .map(|(_, pending)| pending)
            .collect();
        self.unacked_len.store(0, Ordering::Relaxed);
        if !unacked.is_empty() {
            tracing::warn!(replica = %self.node.id, frames = unacked.len(), "re-routing unacknowledged frames");
        }
        unacked
    }

    async fn acknowledge(&self, up_to: u64) {
        let mut stream = self.stream.lock().await;
        while stream.unacked.front().is_some_and(|(seq, _)| *seq <= up_to) {
            stream.unacked.pop_front();
        }
        self.unacked_len
            .store(stream.unacked.len(), Ordering::Relaxed);
    }
}

async fn read_replica<D: Downstream>(
    replicas: Weak<Replicas>,
    link: Arc<Link>,
    mut responses: FrameStream<SessionDown>,
    downstream: Arc<D>,
) {
    loop {
        match responses.next().await {
            Some(Ok(SessionDown {
                frame: Some(xmppd_grpc::session_down::Frame::Ack(seq)),
            })) => link.acknowledge(seq).await,
            Some(Ok(frame)) => downstream.handle(frame).await,
            None => break,
            Some(Err(status)) => {
                tracing::warn!(replica = %link.node.id, %status, "session stream failed");
                break;
            }
        }
    }
    if let Some(replicas) = replicas.upgrade() {
        replicas.retire(&link).await;
    }
}
