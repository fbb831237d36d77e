//! The cluster's [`Connector`]: dials a node's registered address with mutual TLS, and
//! accepts the node only if its certificate names the role of the call and the id the
//! registry gave (a registry entry is a hint, never a credential).

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::Status;
use tonic::transport::Channel;
use xmppd_grpc::{Connector, Node, Role};

use crate::{ClusterTls, Expected};

/// The [`Connector`] of the cluster roles when `cluster_tls.enabled`.
pub struct MutualTlsConnector {
    /// This node's certificate for the handshake and the CA it checks servers against, as
    /// last reloaded.
    tls: ClusterTls,
}

impl MutualTlsConnector {
    pub fn new(tls: ClusterTls) -> MutualTlsConnector {
        MutualTlsConnector { tls }
    }
}

impl Connector for MutualTlsConnector {
    fn channel(&self, node: &Node, role: Role) -> Result<Channel, Status> {
        let endpoint = xmppd_grpc::endpoint(node)?;
        let tls = self.tls.clone();
        let node_id = node.id.clone();
        // Called for every (re)connection, so a reloaded certificate is used from the next.
        let dial = tower::service_fn(move |uri: Uri| {
            let expected = Expected {
                role,
                node_id: node_id.clone(),
            };
            connect(uri, TlsConnector::from(tls.client_config(expected)))
        });
        Ok(endpoint.connect_with_connector_lazy(dial))
    }
}

async fn connect(
    uri: Uri,
    connector: TlsConnector,
) -> std::io::Result<TokioIo<TlsStream<TcpStream>>> {
    let invalid = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} in {uri}"))
    };
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    // An IPv6 literal comes bracketed.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let socket = TcpStream::connect((host, port)).await?;
    socket.set_nodelay(true)?;
    // Sent as SNI only: the verifier checks the certificate's role and node, not this name.
    let name = ServerName::try_from(host.to_string()).map_err(|_| invalid("a bad host"))?;
    Ok(TokioIo::new(connector.connect(name, socket).await?))
}
