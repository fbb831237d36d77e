//! The gRPC server's listener: accepts TCP connections, runs each TLS handshake in a task of
//! its own (a slow or silent peer holds up nobody), and hands tonic the connections that
//! proved a certificate from the cluster CA. tonic reads the peer's certificates from the
//! stream, so each request carries them (see [`crate::authorize`]).

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::ClusterTls;

/// How long a peer gets to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Established connections waiting for tonic to take them.
const BACKLOG: usize = 64;

/// The connections accepted on `listener`, their handshakes done, for
/// `Server::serve_with_incoming_shutdown`. Accepting stops when tonic drops the stream.
pub fn incoming(
    listener: TcpListener,
    tls: ClusterTls,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (established, connections) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = established.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (socket, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a cluster connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.server_config());
            let established = established.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => {
                        let _ = established.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, %error, "cluster connection refused: tls handshake failed");
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "cluster connection refused: no tls handshake in time")
                    }
                }
            });
        }
    });
    ReceiverStream::new(connections)
}
