//! The WebSocket listener's HTTP: one request per connection, read here
//! (httparse) rather than by an HTTP server crate, because it is either the
//! upgrade, after which the connection is the XMPP stream's, or one of two
//! small discovery documents (XEP-0156), after which it is closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::create_response;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use xmppd_runtime::config::Config;

use super::WebSocketClientStream;
use crate::edge::Edge;
use crate::limits::{ConnectionSlot, Refused};
use crate::listener;
use crate::tcp::Transport;

/// A request head larger than this is refused: the upgrade needs a few
/// hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What tungstenite reads into per read. It keeps this buffer for the
/// connection's life (idle included), so it is kept at the size a TCP
/// stream starts its reads with; larger messages grow it as they arrive.
const READ_BUFFER: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: plain, or behind a TLS-terminating proxy.
    Ws,
    /// `wss://`: TLS with the server's certificate.
    Wss,
}

/// The WebSocket listeners' configuration, read once.
#[derive(Clone, Debug)]
pub struct WebSocketSettings {
    pub path: String,
    /// Allowed `Origin` values; empty allows any.
    pub origins: Vec<String>,
    pub consider_secure: bool,
    pub public_url: String,
}

impl WebSocketSettings {
    pub fn from_config(config: &Config) -> Self {
        WebSocketSettings {
            path: config.websocket.path.clone(),
            origins: config.websocket.origins.clone(),
            consider_secure: config.websocket.consider_secure,
            public_url: config.websocket.public_url.clone(),
        }
    }
}

/// What every connection of one listener shares.
struct Listener {
    settings: WebSocketSettings,
    scheme: Scheme,
    /// The server's TLS configuration with HTTP's ALPN instead of XMPP's:
    /// browsers offer `http/1.1`, which the client streams' configuration
    /// would refuse.
    tls: Option<TlsAcceptor>,
}

/// Accepts WebSocket and discovery requests until shutdown.
pub async fn serve(
    edge: Arc<Edge>,
    socket: TcpListener,
    scheme: Scheme,
    settings: WebSocketSettings,
) {
    let tls = (scheme == Scheme::Wss).then(|| {
        let mut config = (*edge.tls.config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    let shared = Arc::new(Listener {
        settings,
        scheme,
        tls,
    });
    listener::accept_loop(&edge, socket, move |edge, tcp, peer| {
        connection(edge, shared.clone(), tcp, peer)
    })
    .await;
}

async fn connection(edge: Arc<Edge>, shared: Arc<Listener>, tcp: TcpStream, peer: SocketAddr) {
    let deadline = tokio::time::Instant::now() + edge.settings().negotiation_timeout;
    // Boxed: the handshake's buffers and TLS state must not size the task
    // that goes on to negotiate the stream.
    let upgrade = Box::pin(upgrade(&edge, &shared, tcp, peer));
    let Ok(Some((socket, slot))) = tokio::time::timeout_at(deadline, upgrade).await else {
        return;
    };
    let secure = shared.scheme == Scheme::Wss || shared.settings.consider_secure;
    let settings = edge.settings();
    let stream = WebSocketClientStream::new(
        socket,
        settings.limits.clone(),
        secure,
        settings.write_timeout,
    );
    listener::serve_stream(edge, peer, slot, stream).await;
}

/// The request, answered: `Some` with the WebSocket once upgraded.
async fn upgrade(
    edge: &Edge,
    shared: &Listener,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(WebSocketStream<Transport>, ConnectionSlot)> {
    let mut transport = match &shared.tls {
        None => Transport::Plain(tcp),
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(tls) => Transport::Tls(Box::new(tls)),
            Err(error) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return None;
            }
        },
    };
    let (request, rest) = match read_request(&mut transport).await {
        Ok(Some(read)) => read,
        Ok(None) => return None,
        Err(status) => {
            respond(&mut transport, status, "text/plain", "").await;
            return None;
        }
    };
    let path = request.uri().path();
    if let Some(document) = discovery(shared, &request) {
        let (content_type, body) = document;
        respond(&mut transport, http::StatusCode::OK, content_type, &body).await;
        return None;
    }
    if path != shared.settings.path {
        respond(
            &mut transport,
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "",
        )
        .await;
        return None;
    }
    let response = match accept(shared, &request) {
        Ok(response) => response,
        Err((status, reason)) => {
            tracing::debug!(%peer, %status, reason, "WebSocket upgrade refused");
            respond(&mut transport, status, "text/plain", reason).await;
            return None;
        }
    };
    // Counted against the per-IP limit before the upgrade, so that a refusal
    // is an HTTP answer a browser understands.
    let slot = match listener::admit(edge, peer) {
        Ok(slot) => slot,
        Err(refused) => {
            let status = match refused {
                Refused::PerAddress => http::StatusCode::TOO_MANY_REQUESTS,
                Refused::Total => http::StatusCode::SERVICE_UNAVAILABLE,
            };
            respond(&mut transport, status, "text/plain", "too many connections").await;
            return None;
        }
    };
    let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in response.headers() {
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap_or_default()
        ));
    }
    head.push_str("Sec-WebSocket-Protocol: xmpp\r\n\r\n");
    if transport.write_all(head.as_bytes()).await.is_err() || transport.flush().await.is_err() {
        return None;
    }
    let max = edge.settings().limits.max_stanza_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let socket =
        WebSocketStream::from_partially_read(transport, rest, Role::Server, Some(config)).await;
    Some((socket, slot))
}

/// Checks an upgrade request: a valid WebSocket handshake, an allowed
/// origin, and the `xmpp` subprotocol.
fn accept(
    shared: &Listener,
    request: &http::Request<()>,
) -> Result<http::Response<()>, (http::StatusCode, &'static str)> {
    let response = create_response(request).map_err(|_| {
        (
            http::StatusCode::BAD_REQUEST,
            "not a WebSocket upgrade request",
        )
    })?;
    let origins = &shared.settings.origins;
    if let Some(origin) = request.headers().get(http::header::ORIGIN)
        && !origins.is_empty()
        && !origins
            .iter()
            .any(|allowed| allowed.as_bytes() == origin.as_bytes())
    {
        return Err((http::StatusCode::FORBIDDEN, "origin not allowed"));
    }
    // RFC 7395: a client asks for `xmpp`; without it the connection would
    // not be an XMPP stream, so it is refused before the upgrade.
    let xmpp = request
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == "xmpp");
    if !xmpp {
        return Err((
            http::StatusCode::BAD_REQUEST,
            "the xmpp subprotocol is required",
        ));
    }
    Ok(response)
}

/// XEP-0156 discovery documents naming the WebSocket endpoint.
fn discovery(shared: &Listener, request: &http::Request<()>) -> Option<(&'static str, String)> {
    let json = match request.uri().path() {
        "/.well-known/host-meta" => false,
        "/.well-known/host-meta.json" => true,
        _ => return None,
    };
    let url = endpoint_url(shared, request);
    let rel = "urn:xmpp:alt-connections:websocket";
    Some(if json {
        let document = serde_json::json!({ "links": [{ "rel": rel, "href": url }] });
        ("application/json", document.to_string())
    } else {
        (
            "application/xrd+xml",
            format!(
                "<?xml version='1.0' encoding='utf-8'?>\n\
                 <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
                 <Link rel='{rel}' href='{}'/>\n</XRD>\n",
                xmppd_protocol::xml::escape_attr(&url)
            ),
        )
    })
}

/// The configured public URL, or one made of this listener's scheme, the
/// request's `Host` and the path.
fn endpoint_url(shared: &Listener, request: &http::Request<()>) -> String {
    if !shared.settings.public_url.is_empty() {
        return shared.settings.public_url.clone();
    }
    let scheme = match shared.scheme {
        Scheme::Ws => "ws",
        Scheme::Wss => "wss",
    };
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}{}", shared.settings.path)
}

/// Reads one request head; `Ok(None)` if the client went away first. The
/// bytes after the head (a client's first frames, if it did not wait for
/// our answer) are returned with it.
async fn read_request(
    transport: &mut Transport,
) -> Result<Option<(http::Request<()>, Vec<u8>)>, http::StatusCode> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if buffer.len() >= MAX_HEAD {
            return Err(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        let mut chunk = [0u8; 1024];
        let read = match transport.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(read) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let end = match parsed.parse(&buffer) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(http::StatusCode::BAD_REQUEST),
        };
        let mut request = http::Request::builder()
            .method(parsed.method.unwrap_or("GET"))
            .uri(parsed.path.unwrap_or("/"))
            .version(match parsed.version {
                Some(0) => http::Version::HTTP_10,
                _ => http::Version::HTTP_11,
            });
        for header in parsed.headers.iter() {
            request = request.header(header.name, header.value);
        }
        let request = request
            .body(())
            .map_err(|_| http::StatusCode::BAD_REQUEST)?;
        if request.method() != http::Method::GET {
            return Err(http::StatusCode::METHOD_NOT_ALLOWED);
        }
        return Ok(Some((request, buffer[end..].to_vec())));
    }
}

/// A complete answer, after which the connection is closed.
async fn respond(
    transport: &mut Transport,
    status: http::StatusCode,
    content_type: &str,
    body: &str,
) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = transport.write_all(head.as_bytes()).await;
    let _ = transport.write_all(body.as_bytes()).await;
    let _ = transport.shutdown().await;
}
