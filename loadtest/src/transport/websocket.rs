//! XMPP over WebSocket (RFC 7395): the `xmpp` subprotocol, one complete element per text
//! message, `<open/>` and `<close/>` in place of the stream's own tags, and a new `<open/>`
//! for each stream restart (after SASL).
//!
//! Each message is fed to the same incremental parser as TCP's stream, behind a stream
//! header of our own that binds `jabber:client` and the `stream` prefix: stanzas that a
//! server leaves unqualified then read as they would over TCP, and the elements come out
//! as `xmppd-protocol` stanzas like any other. Pings are answered by tungstenite, on the
//! read that follows them.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use xmppd_protocol::xml::escape_attr;
use xmppd_protocol::{Limits, Stanza, StreamEvent, StreamHeader, StreamParser};

use super::{CLOSE_WAIT, Socket, Transport, connect_tcp, drain, tls_handshake};
use crate::connection::{ConnectOptions, XmppError};

pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// The stream every message is parsed in. RFC 7395 has no stream element; this one only
/// gives the messages the namespace context a TCP stream would.
const PARSE_CONTEXT: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// tungstenite's read buffer, allocated per connection: small, as TCP's, because thousands
/// of idle sessions each hold one (its default is 128 KiB).
const READ_BUFFER: usize = 2048;

/// A `ws://` or `wss://` target.
#[derive(Clone, Debug)]
pub struct WebSocketUrl {
    /// As given: its authority and path make the upgrade request.
    uri: Uri,
    /// `wss://`: TLS from the first byte.
    pub secure: bool,
    /// Without IPv6 brackets, for the TLS server name.
    host: String,
    port: u16,
}

impl WebSocketUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            other => {
                return Err(format!(
                    "scheme {:?} is neither ws nor wss",
                    other.unwrap_or_default()
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Ok(Self {
            uri,
            secure,
            host,
            port,
        })
    }

    /// For the resolver, which wants IPv6 addresses in brackets.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub struct WebSocketTransport {
    ws: WebSocketStream<Socket>,
    parser: StreamParser,
}

impl WebSocketTransport {
    /// Connects, secures `wss://` with the tool's TLS settings, and upgrades to the `xmpp`
    /// subprotocol; tungstenite refuses a server that does not select it.
    pub async fn connect(opts: &ConnectOptions, url: &WebSocketUrl) -> Result<Self, XmppError> {
        let tcp = connect_tcp(opts).await?;
        let socket = if url.secure {
            tls_handshake(opts, &opts.tls_config, &url.host, tcp).await?
        } else {
            Socket::Plain(tcp)
        };
        let mut request = url.uri.clone().into_client_request().map_err(ws_error)?;
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("xmpp"));
        let limits = Limits::default();
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            // Each stanza is flushed as it is sent, as over TCP.
            .write_buffer_size(0)
            .max_message_size(Some(limits.max_stanza_bytes))
            .max_frame_size(Some(limits.max_stanza_bytes));
        let upgrade = tokio_tungstenite::client_async_with_config(request, socket, Some(config));
        let (ws, _) = tokio::time::timeout(opts.step_timeout, upgrade)
            .await
            .map_err(|_| XmppError::Timeout("websocket-upgrade"))?
            .map_err(ws_error)?;
        Ok(Self {
            ws,
            parser: StreamParser::new(limits),
        })
    }

    async fn send_text(&mut self, text: String) -> Result<(), XmppError> {
        self.ws.send(Message::text(text)).await.map_err(ws_error)
    }
}

impl Transport for WebSocketTransport {
    async fn open_stream(&mut self, domain: &str) -> Result<(), XmppError> {
        self.parser.reset();
        self.parser.feed(PARSE_CONTEXT.as_bytes());
        let open = format!(
            "<open xmlns='{NS_FRAMING}' to='{}' version='1.0'/>",
            escape_attr(domain)
        );
        self.send_text(open).await
    }

    async fn send(&mut self, element: &[u8]) -> Result<(), XmppError> {
        let text = std::str::from_utf8(element)
            .map_err(|_| XmppError::Xml("outgoing element is not utf-8".into()))?;
        self.send_text(qualified(text)).await
    }

    async fn next_event(&mut self) -> Result<StreamEvent, XmppError> {
        loop {
            match self.parser.next_event() {
                Ok(Some(StreamEvent::Stanza(element))) => return Ok(framing_event(element)),
                // Our own parse context, or its end, which is never fed.
                Ok(Some(StreamEvent::Open(_) | StreamEvent::Close)) => continue,
                Ok(None) => {}
                Err(e) => return Err(XmppError::Xml(e.to_string())),
            }
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => self.parser.feed(text.as_bytes()),
                Some(Ok(Message::Binary(_))) => {
                    return Err(XmppError::WebSocket {
                        condition: "binary-message",
                        detail: "RFC 7395 carries XMPP in text messages only".into(),
                    });
                }
                // tungstenite queued the pong; the next read sends it.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Err(XmppError::Closed),
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
    }

    async fn starttls(self, _: &ConnectOptions) -> Result<Self, XmppError> {
        // RFC 7395 §3.7: TLS is the WebSocket's (wss://), never negotiated in the stream.
        Err(XmppError::Negotiation("starttls-over-websocket"))
    }

    async fn close(&mut self) {
        if self
            .send_text(format!("<close xmlns='{NS_FRAMING}'/>"))
            .await
            .is_err()
        {
            return;
        }
        let closing = async {
            drain(self).await;
            if self.ws.close(None).await.is_ok() {
                // The server answers with its own close frame, then ends the connection.
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
    }
}

/// `<open/>` and `<close/>` as the stream events they stand for; anything else is content.
fn framing_event(element: Stanza) -> StreamEvent {
    if element.namespace() != NS_FRAMING {
        return StreamEvent::Stanza(element);
    }
    match element.name() {
        "close" => StreamEvent::Close,
        "open" => StreamEvent::Open(StreamHeader {
            from: element.from().map(str::to_owned),
            id: element.id().map(str::to_owned),
            default_ns: "jabber:client".into(),
            ..StreamHeader::default()
        }),
        _ => StreamEvent::Stanza(element),
    }
}

/// `element` with `xmlns='jabber:client'` on its start tag if it has no namespace of its
/// own: over TCP a stanza inherits it from the stream element, and a WebSocket message is a
/// document of its own (RFC 7395 §3.4).
fn qualified(element: &str) -> String {
    match xmppd_protocol::stanza::in_client_namespace(element.as_bytes()) {
        Some(bytes) => String::from_utf8(bytes).unwrap_or_else(|_| element.to_owned()),
        None => element.to_owned(),
    }
}

fn ws_error(error: tungstenite::Error) -> XmppError {
    use tungstenite::Error;
    use tungstenite::error::ProtocolError;
    let condition = match &error {
        Error::Io(_) => {
            let Error::Io(io) = error else { unreachable!() };
            return XmppError::Io(io);
        }
        Error::ConnectionClosed | Error::AlreadyClosed => return XmppError::Closed,
        Error::Http(response) => {
            return XmppError::WebSocket {
                condition: http_condition(response.status().as_u16()),
                detail: error.to_string(),
            };
        }
        Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => "no-xmpp-subprotocol",
        Error::Protocol(_) => "protocol",
        Error::Capacity(_) => "too-large",
        Error::Utf8(_) => "utf8",
        _ => "other",
    };
    XmppError::WebSocket {
        condition,
        detail: error.to_string(),
    }
}

/// A bounded label for the status a server refused the upgrade with.
fn http_condition(status: u16) -> &'static str {
    match status {
        400 => "http-400",
        401 | 403 => "http-forbidden",
        404 => "http-404",
        426 => "http-426",
        500..=599 => "http-5xx",
        _ => "http-other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_security() {
        let url = WebSocketUrl::parse("ws://127.0.0.1:5280/xmpp-websocket").unwrap();
        assert_eq!(
            (url.host_port(), url.secure),
            ("127.0.0.1:5280".into(), false)
        );
        let url = WebSocketUrl::parse("wss://localhost/ws").unwrap();
        assert_eq!(
            (url.host_port(), url.secure),
            ("localhost:443".into(), true)
        );
        let url = WebSocketUrl::parse("ws://[::1]:5280/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.host_port()),
            ("::1", "[::1]:5280".into())
        );
        assert!(WebSocketUrl::parse("http://127.0.0.1:5280/").is_err());
        assert!(WebSocketUrl::parse("ws:///path").is_err());
    }

    #[test]
    fn unqualified_stanzas_get_the_client_namespace() {
        assert_eq!(
            qualified("<message to='a@b'><body>hi</body></message>"),
            "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>"
        );
        assert_eq!(
            qualified("<presence/>"),
            "<presence xmlns='jabber:client'/>"
        );
        let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth>";
        assert_eq!(qualified(auth), auth);
    }
}
