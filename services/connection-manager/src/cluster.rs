//! The connection-manager's side of the cluster, in four parts:
//!
//! - `router_links`: one stream to every live router, and the route each
//!   bound stream is pinned to ([`PinnedRoute`]);
//! - `directory`: the bound streams of this node by full JID, each with its
//!   mailbox, which deliveries from the routers are dispatched to;
//! - `settlements`: what tells a router that its client has a delivery, or
//!   never will;
//! - `logins`: the calls a login makes to the session replicas (over
//!   [`crate::replicas`]), binding last, which opens the stream's mailbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Status;
use xmppd_grpc::{Connector, Node, Role, StreamEnded};
use xmppd_protocol::error::StreamErrorCondition;
use xmppd_registry::SharedRegistry;

use crate::replicas::Replicas;
use crate::stream_management::Resumptions;

mod directory;
mod logins;
mod router_links;
mod settlements;

pub use router_links::PinnedRoute;
pub use settlements::Receipt;

/// How long a login step waits for a session replica that keeps its stream
/// open but does not answer (hung, or its store stalled): the client gets
/// `temporary-auth-failure` rather than a stream that never moves.
const LOGIN_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the cluster hands a bound client stream.
#[derive(Debug)]
pub enum Delivery {
    /// A stanza to write to the client as is; the router's claim on it,
    /// settled once the client has it (dropped, the router routes its copy
    /// again); and when it was queued, which times its wait in the mailbox
    /// and its write (`xmppd_edge_stanza_outbound_seconds`).
    Stanza {
        payload: Bytes,
        receipt: Receipt,
        queued_at: Instant,
    },
    /// Close the stream with this RFC 6120 §4.9.3 condition. The text is
    /// boxed so that a mailbox slot stays the size of a stanza's delivery.
    Close {
        condition: StreamErrorCondition,
        text: Box<str>,
    },
}

impl Delivery {
    /// The bytes it holds in a queue.
    pub fn queued_bytes(&self) -> usize {
        match self {
            Delivery::Stanza { payload, .. } => payload.len(),
            Delivery::Close { .. } => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no router is reachable")]
    NoRouter,
    #[error("cluster call failed: {0}")]
    Rpc(#[from] Status),
    #[error("the router stream this bound stream is pinned to is gone")]
    RouteLost,
    #[error("a session replica answered another call than the one made")]
    WrongAnswer,
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
    routers: RwLock<HashMap<String, Arc<router_links::RouterLink>>>,
    /// Routers with an open stream, sorted: the pinning domain.
    router_nodes: RwLock<Vec<Node>>,
    replicas: Replicas,
    streams: RwLock<HashMap<String, directory::LocalStream>>,
    /// Sessions of this node that a new stream may resume (XEP-0198).
    resumptions: Resumptions,
    /// Session ends that found no router to report them to (the only router
    /// just went away). Reported once one is attached again; lost, the
    /// account's replica would keep the resource bound and available for as
    /// long as this node lives.
    unreported_ends: Mutex<Vec<StreamEnded>>,
}

impl Cluster {
    pub fn new(node_id: String, connector: Arc<dyn Connector>, registry: SharedRegistry) -> Self {
        let node = Node {
            id: node_id,
            role: Role::ConnectionManager as i32,
            grpc_address: String::new(),
            ..Default::default()
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
                streams: RwLock::default(),
                resumptions: Resumptions::default(),
                unreported_ends: Mutex::default(),
            }),
        }
    }

    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    pub fn resumptions(&self) -> &Resumptions {
        &self.inner.resumptions
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

    /// Session replicas with an open login stream.
    pub fn session_replica_count(&self) -> usize {
        self.inner.replicas.count()
    }

    pub fn bound_stream_count(&self) -> usize {
        self.inner.streams.read().expect("streams lock").len()
    }

    /// Deliveries waiting in the mailboxes of this node's bound streams; read
    /// at scrape time, one short lock per mailbox.
    pub fn queued_deliveries(&self) -> usize {
        let streams = self.inner.streams.read().expect("streams lock");
        streams.values().map(|stream| stream.mailbox.queued()).sum()
    }

    /// Closes every bound stream on this node with `condition`, through
    /// its mailbox, after what is already queued for it.
    pub fn close_all(&self, condition: StreamErrorCondition, text: &str) {
        for stream in self.inner.streams.read().expect("streams lock").values() {
            let _ = stream.mailbox.try_send(Delivery::Close {
                condition,
                text: text.into(),
            });
        }
    }
}
