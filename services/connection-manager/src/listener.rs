//! What every client transport's listener shares: the accept loop, the
//! connection limits (per address and in all), and taking an accepted stream through
//! negotiation to a bound stream of its own.
//!
//! A transport's module accepts its connections with [`accept_loop`], asks
//! [`admit`] for a slot (refusing in its own protocol when there is none),
//! builds its [`ClientStream`] and hands it to [`serve_stream`].

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::bound_stream::{self, BoundStream};
use crate::edge::Edge;
use crate::limits::{ConnectionSlot, Refused};
use crate::negotiation;
use crate::proxy_protocol;
use crate::stream::ClientStream;

/// Accepts connections until shutdown, spawning `connection` for each,
/// with the client's address: the connection's own, or the one its PROXY
/// protocol header names (`listen.proxy_protocol`).
pub async fn accept_loop<F, C>(edge: &Arc<Edge>, listener: TcpListener, connection: C)
where
    C: Fn(Arc<Edge>, TcpStream, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = edge.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let _ = tcp.set_nodelay(true);
        if !edge.settings().proxy_protocol {
            tokio::spawn(connection(edge.clone(), tcp, peer));
            continue;
        }
        let (edge, connection) = (edge.clone(), connection.clone());
        tokio::spawn(async move {
            if let Some((tcp, client)) = behind_proxy(&edge, tcp, peer).await {
                connection(edge, tcp, client).await;
            }
        });
    }
}

/// The connection and its client's address from its PROXY header; `None`
/// (the connection is dropped) without a valid header in time.
async fn behind_proxy(
    edge: &Edge,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, SocketAddr)> {
    let timeout = edge.settings().negotiation_timeout;
    match proxy_protocol::read_header(&mut tcp, timeout).await {
        Ok(client) => Some((tcp, client.unwrap_or(peer))),
        Err(error) => {
            tracing::info!(%peer, %error, "connection without a valid PROXY header closed");
            None
        }
    }
}

/// A slot under the connection limits, or why there is none: the caller
/// refuses the connection in its protocol.
pub fn admit(edge: &Edge, peer: SocketAddr) -> Result<ConnectionSlot, Refused> {
    let settings = edge.settings();
    let slot = edge.connections.acquire(
        peer.ip(),
        settings.connections_per_ip,
        settings.max_connections,
    );
    match slot {
        Err(Refused::PerAddress) => {
            tracing::info!(%peer, "too many connections from this address");
            edge.metrics.stream_error("policy-violation");
        }
        Err(Refused::Total) => {
            tracing::warn!(%peer, "connection refused: limits.max_connections reached");
            edge.metrics.stream_error("resource-constraint");
        }
        Ok(_) => {}
    }
    slot
}

/// Negotiates an accepted stream and, once bound, serves it.
pub async fn serve_stream<S: ClientStream>(
    edge: Arc<Edge>,
    peer: SocketAddr,
    slot: ConnectionSlot,
    stream: S,
) {
    let open = Open::<S>::new(edge.clone(), slot);
    if let Some((stream, bound)) = negotiation::serve(&edge, stream, peer).await {
        // A task of its own, sized for a bound stream alone: an idle
        // connection holds that, not the negotiation's larger task, which
        // ends here.
        let bound_stream = Box::new(BoundStream {
            stream,
            bound,
            open,
        });
        tokio::spawn(bound_stream::run(edge, bound_stream));
    }
}

/// An accepted connection, counted until its stream ends. Its transport is
/// a type, not a field, so that it costs a bound stream nothing.
pub struct Open<S: ClientStream> {
    edge: Arc<Edge>,
    _slot: ConnectionSlot,
    _transport: PhantomData<fn() -> S>,
}

impl<S: ClientStream> Open<S> {
    fn new(edge: Arc<Edge>, slot: ConnectionSlot) -> Self {
        edge.metrics.connection_opened(S::TRANSPORT);
        Open {
            edge,
            _slot: slot,
            _transport: PhantomData,
        }
    }
}

impl<S: ClientStream> Drop for Open<S> {
    fn drop(&mut self) {
        self.edge.metrics.connection_closed(S::TRANSPORT);
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))
}
