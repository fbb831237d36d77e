//! How a simulated client's stanzas reach the server: one implementation per transport
//! behind [`Transport`], so that stream negotiation and the scenarios never ask which one
//! carries them.
//!
//! - [`tcp`]: XMPP's own framing over TCP (RFC 6120): one XML stream, restarted in place,
//!   secured by STARTTLS or from the first byte (XEP-0368).
//! - [`websocket`]: XMPP over WebSocket (RFC 7395): one element per text message,
//!   `<open/>` and `<close/>` for the stream, TLS from the first byte for `wss://`.
//!
//! `--target` picks the transport: `host:port` is TCP, a `ws://` or `wss://` URL is
//! WebSocket. Either way the name is resolved once and must be on loopback unless the
//! operator allows otherwise.

pub mod tcp;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use xmppd_protocol::StreamEvent;

use crate::connection::{ConnectOptions, XmppError};

pub use websocket::WebSocketUrl;

/// TCP or TLS under either transport.
pub type Socket = xmppd_tls::MaybeTls<TlsStream<TcpStream>>;

/// Which transport `--target` names.
#[derive(Clone, Debug)]
pub enum Framing {
    /// `host:port`: an XMPP stream over TCP.
    Tcp,
    /// A `ws://` or `wss://` URL.
    WebSocket(Arc<WebSocketUrl>),
}

impl Framing {
    /// Whether TLS starts with the connection: `wss://` says so by itself, where a TCP target
    /// has `--tls` to say it.
    pub fn tls_from_url(&self) -> Option<bool> {
        match self {
            Self::Tcp => None,
            Self::WebSocket(url) => Some(url.secure),
        }
    }
}

/// `--target` once resolved.
#[derive(Clone, Debug)]
pub struct Target {
    /// Tried in order by each connect.
    pub addrs: Vec<SocketAddr>,
    pub framing: Framing,
}

/// Resolves `--target` once, so that a storm of connects is not a storm of DNS queries, and
/// keeps the load on loopback unless the operator says the target is theirs: a mistyped
/// address or URL must not load somebody else's server.
pub async fn resolve_target(target: &str, allow_remote: bool) -> Result<Target, String> {
    let (host_port, framing) = if target.contains("://") {
        let url = WebSocketUrl::parse(target).map_err(|e| format!("--target {target}: {e}"))?;
        (url.host_port(), Framing::WebSocket(Arc::new(url)))
    } else {
        (target.to_owned(), Framing::Tcp)
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
        .await
        .map_err(|e| {
            format!(
                "--target {target}: {e} (expected host:port, e.g. 127.0.0.1:5222, or a \
                 ws:// or wss:// URL)"
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--target {target}: the name has no address"));
    }
    match addrs.iter().find(|addr| !addr.ip().is_loopback()) {
        Some(remote) if !allow_remote => Err(format!(
            "--target {target}: {} is not a loopback address; pass --allow-remote to load a \
             server you operate",
            remote.ip()
        )),
        _ => Ok(Target { addrs, framing }),
    }
}

/// What stream negotiation needs from a transport. Every method that reads is cancel-safe:
/// what arrived stays buffered, so a read can sit in a `select!` beside a send timer.
pub trait Transport {
    /// Opens a stream: at start, after STARTTLS and after SASL success. Bytes buffered from
    /// the previous stream are dropped.
    async fn open_stream(&mut self, domain: &str) -> Result<(), XmppError>;
    /// Sends one top-level element, flushed.
    async fn send(&mut self, element: &[u8]) -> Result<(), XmppError>;
    /// The server's next stream header, element or stream end.
    async fn next_event(&mut self) -> Result<StreamEvent, XmppError>;
    /// Secures the connection after the server's `<proceed/>`.
    async fn starttls(self, opts: &ConnectOptions) -> Result<Self, XmppError>
    where
        Self: Sized;
    /// Closes the stream, waits briefly for the server's own close, then the connection.
    async fn close(&mut self);
}

/// The transport of one connection, picked by [`Framing`].
///
/// Both boxed: they differ in size by a few hundred bytes, and a connection is allocated once.
pub enum Wire {
    Tcp(Box<tcp::TcpTransport>),
    WebSocket(Box<websocket::WebSocketTransport>),
}

impl Wire {
    /// Connects, and for direct TLS or `wss://`, completes the TLS handshake (and the
    /// WebSocket upgrade); the XMPP stream is not opened yet.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, XmppError> {
        Ok(match &opts.framing {
            Framing::Tcp => Self::Tcp(Box::new(tcp::TcpTransport::connect(opts).await?)),
            Framing::WebSocket(url) => Self::WebSocket(Box::new(
                websocket::WebSocketTransport::connect(opts, url).await?,
            )),
        })
    }
}

impl Transport for Wire {
    async fn open_stream(&mut self, domain: &str) -> Result<(), XmppError> {
        match self {
            Self::Tcp(t) => t.open_stream(domain).await,
            Self::WebSocket(t) => t.open_stream(domain).await,
        }
    }

    async fn send(&mut self, element: &[u8]) -> Result<(), XmppError> {
        match self {
            Self::Tcp(t) => t.send(element).await,
            Self::WebSocket(t) => t.send(element).await,
        }
    }

    async fn next_event(&mut self) -> Result<StreamEvent, XmppError> {
        match self {
            Self::Tcp(t) => t.next_event().await,
            Self::WebSocket(t) => t.next_event().await,
        }
    }

    async fn starttls(self, opts: &ConnectOptions) -> Result<Self, XmppError> {
        Ok(match self {
            Self::Tcp(t) => Self::Tcp(Box::new((*t).starttls(opts).await?)),
            Self::WebSocket(t) => Self::WebSocket(Box::new((*t).starttls(opts).await?)),
        })
    }

    async fn close(&mut self) {
        match self {
            Self::Tcp(t) => t.close().await,
            Self::WebSocket(t) => t.close().await,
        }
    }
}

/// How long a closing client waits for the server's own close, so that the server sees a
/// clean logout rather than a reset, without a dead server holding up a ramp-down.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads until the server ends the stream, or fails.
async fn drain(transport: &mut impl Transport) {
    while let Ok(event) = transport.next_event().await {
        if matches!(event, StreamEvent::Close) {
            return;
        }
    }
}

/// Connects to the first of the target's addresses that answers, within the step timeout.
async fn connect_tcp(opts: &ConnectOptions) -> Result<TcpStream, XmppError> {
    let tcp = tokio::time::timeout(opts.step_timeout, TcpStream::connect(&opts.addrs[..]))
        .await
        .map_err(|_| XmppError::Timeout("connect"))?
        .map_err(XmppError::Connect)?;
    // Stanzas are small and latency is measured: never wait for Nagle.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn tls_handshake(
    opts: &ConnectOptions,
    config: &Arc<ClientConfig>,
    name: &str,
    tcp: TcpStream,
) -> Result<Socket, XmppError> {
    let name = ServerName::try_from(name.to_owned())
        .map_err(|_| XmppError::Negotiation("not-a-tls-server-name"))?;
    let connector = TlsConnector::from(config.clone());
    let tls = tokio::time::timeout(opts.step_timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| XmppError::Timeout("tls-handshake"))?
        .map_err(XmppError::Tls)?;
    Ok(Socket::Tls(Box::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_stay_on_loopback_unless_allowed() {
        let local: SocketAddr = "127.0.0.2:5222".parse().unwrap();
        let target = resolve_target("127.0.0.2:5222", false).await.unwrap();
        assert_eq!(target.addrs, vec![local]);
        assert!(matches!(target.framing, Framing::Tcp));
        assert!(resolve_target("[::1]:5222", false).await.is_ok());
        assert!(resolve_target("localhost:5222", false).await.is_ok());
        let refused = resolve_target("10.0.0.1:5222", false).await.unwrap_err();
        assert!(
            refused.contains("10.0.0.1 is not a loopback address"),
            "{refused}"
        );
        assert!(resolve_target("10.0.0.1:5222", true).await.is_ok());
        let malformed = resolve_target("127.0.0.1", false).await.unwrap_err();
        assert!(malformed.contains("expected host:port"), "{malformed}");
    }

    #[tokio::test]
    async fn websocket_urls_stay_on_loopback_unless_allowed() {
        let target = resolve_target("ws://127.0.0.1:5280/xmpp-websocket", false)
            .await
            .unwrap();
        assert_eq!(target.addrs, vec!["127.0.0.1:5280".parse().unwrap()]);
        assert_eq!(target.framing.tls_from_url(), Some(false));
        let target = resolve_target("wss://[::1]/ws", false).await.unwrap();
        assert_eq!(target.addrs, vec!["[::1]:443".parse().unwrap()]);
        assert_eq!(target.framing.tls_from_url(), Some(true));
        for remote in ["ws://10.0.0.1:5280/ws", "wss://10.0.0.1/ws"] {
            let refused = resolve_target(remote, false).await.unwrap_err();
            assert!(
                refused.contains("10.0.0.1 is not a loopback address"),
                "{refused}"
            );
            assert!(resolve_target(remote, true).await.is_ok());
        }
        let scheme = resolve_target("http://127.0.0.1:5280/", false)
            .await
            .unwrap_err();
        assert!(scheme.contains("neither ws nor wss"), "{scheme}");
    }
}
