//! Accept loops for the client listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use xmppd_protocol::error::StreamErrorCondition;

use crate::edge::Edge;
use crate::limits::ConnectionSlot;
use crate::negotiation;
use crate::session::{self, Session};
use crate::stream::XmppStream;
use crate::transport::Transport;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// RFC 6120 port 5222: plain TCP, upgraded by STARTTLS.
    StartTls,
    /// XEP-0368 port 5223: TLS from the first byte.
    DirectTls,
}

/// Accepts client connections until shutdown.
pub async fn serve(edge: Arc<Edge>, listener: TcpListener, security: Security) {
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
        tokio::spawn(connection(edge.clone(), tcp, peer, security));
    }
}

async fn connection(
    edge: Arc<Edge>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    security: Security,
) {
    let Some(slot) = edge
        .connections
        .acquire(peer.ip(), edge.settings.connections_per_ip)
    else {
        tracing::info!(%peer, "too many connections from this address");
        edge.metrics.stream_error("policy-violation");
        let mut stream = XmppStream::new(Transport::Plain(tcp), edge.settings.limits.clone());
        stream
            .fail_with(
                StreamErrorCondition::PolicyViolation,
                "too many connections from your address",
            )
            .await;
        return;
    };
    let transport = match security {
        Security::StartTls => Transport::Plain(tcp),
        Security::DirectTls => {
            // Boxed: the handshake state must not size the connection's task.
            let handshake = Box::pin(edge.tls.acceptor().accept(tcp));
            match tokio::time::timeout(edge.settings.negotiation_timeout, handshake).await {
                Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    edge.metrics.connections.inc();
    let open = Open {
        edge: edge.clone(),
        _slot: slot,
    };
    if let Some((stream, bound)) = negotiation::serve(&edge, transport, peer).await {
        // A task of its own, sized for a bound session alone: an idle
        // connection holds that, not the negotiation's larger task, which
        // ends here.
        let session = Box::new(Session {
            stream,
            bound,
            open,
        });
        tokio::spawn(session::run(edge, session));
    }
}

/// An accepted connection, counted until its stream ends.
pub struct Open {
    edge: Arc<Edge>,
    _slot: ConnectionSlot,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.edge.metrics.connections.dec();
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))
}
