//! XMPP over WebSocket (RFC 7395): a client stream whose elements travel one
//! per WebSocket text message, opened by `<open/>` and ended by `<close/>`
//! of the framing namespace instead of `<stream:stream>`.
//!
//! The listener ([`http`]) speaks just enough HTTP/1.1 for the upgrade and
//! for XEP-0156 discovery on the same port. Each message is fed to the same
//! incremental parser, and so under the same limits, as a TCP stream's
//! bytes, behind a stream header the parser is given at every (re)start:
//! a message must then yield exactly one element and nothing else.

pub mod http;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{SinkExt, Stream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use xmppd_protocol::error::{StreamError, StreamErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{self, Stanza};
use xmppd_protocol::stream::{Limits, StreamEvent, StreamHeader, StreamParser};
use xmppd_protocol::xml::escape_attr;

use crate::stream::{ClientStream, StreamEnd, within};
use crate::tcp::Transport;

pub use http::{Scheme, WebSocketSettings, serve};

/// The namespace of RFC 7395's `<open/>` and `<close/>`.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// What the parser is given before the client's first message and after
/// each restart: messages are then parsed as top-level elements of a
/// `jabber:client` stream, which is what RFC 7395 makes each of
/// them (a stanza that declares `jabber:client` again is still fine).
const INNER_HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams'>";

/// Where our `<open/>` is: a stream error needs one before it.
enum OurOpen {
    None,
    Pending(Box<str>),
    Sent,
}

pub struct WebSocketClientStream {
    socket: WebSocketStream<Transport>,
    parser: StreamParser,
    /// The event (or the error) the last message made, for `buffered_event`.
    ready: Option<Result<StreamEvent, StreamError>>,
    our_open: OurOpen,
    /// TLS ends here, or `websocket.consider_secure` says a proxy ended it.
    secure: bool,
    last_heard: Instant,
    /// How long a write may wait for the client to read.
    write_timeout: Duration,
}

impl WebSocketClientStream {
    pub fn new(
        socket: WebSocketStream<Transport>,
        limits: Limits,
        secure: bool,
        write_timeout: Duration,
    ) -> Self {
        let mut stream = WebSocketClientStream {
            socket,
            parser: StreamParser::new(limits),
            ready: None,
            our_open: OurOpen::None,
            secure,
            last_heard: Instant::now(),
            write_timeout,
        };
        stream.start_parser();
        stream
    }

    fn start_parser(&mut self) {
        self.parser.reset();
        self.parser.feed(INNER_HEADER);
        let opened = self.parser.next_event();
        debug_assert!(matches!(opened, Ok(Some(StreamEvent::Open(_)))));
        self.parser.release_empty_buffer();
    }

    /// One text message from the client: at most one event, or an error.
    fn message(&mut self, text: &[u8]) -> Option<Result<StreamEvent, StreamError>> {
        self.parser.feed(text);
        let first = self.parser.next_event();
        let rest = self.parser.next_event();
        let leftover = self.parser.buffered();
        self.parser.release_empty_buffer();
        let stanza = match first {
            Err(error) => return Some(Err(error)),
            // Whitespace only: a keepalive, as between stanzas on TCP.
            Ok(None) if leftover == 0 => return None,
            Ok(None) => return Some(Err(not_well_formed("incomplete element in a message"))),
            Ok(Some(StreamEvent::Stanza(stanza))) => stanza,
            Ok(Some(_)) => return Some(Err(bad_format("stream tags are not framed this way"))),
        };
        if !matches!(rest, Ok(None)) || leftover != 0 {
            return Some(Err(bad_format("one element per WebSocket message")));
        }
        Some(Ok(framed_event(stanza)))
    }

    /// Sends one element in a message of its own, after our `<open/>` if it
    /// is due, within the write timeout.
    async fn send(&mut self, element: &[u8]) -> Result<(), StreamEnd> {
        within(self.write_timeout, self.send_message(element)).await
    }

    async fn send_message(&mut self, element: &[u8]) -> Result<(), StreamEnd> {
        if let OurOpen::Pending(open) = std::mem::replace(&mut self.our_open, OurOpen::Sent) {
            let open = Utf8Bytes::from(String::from(open));
            self.socket
                .feed(Message::Text(open))
                .await
                .map_err(io_error)?;
        }
        let text = match standalone(element) {
            Some(rewritten) => Utf8Bytes::from(rewritten),
            None => Utf8Bytes::try_from(element.to_vec()).map_err(|_| {
                StreamEnd::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "an element to send is not UTF-8",
                ))
            })?,
        };
        self.socket
            .send(Message::Text(text))
            .await
            .map_err(io_error)
    }

    async fn close_socket(&mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// `<open/>` and `<close/>` become the stream's own events; anything else
/// is an element of the stream, left for negotiation or the session to
/// judge (a stanza before `<open/>` is refused there as on TCP).
fn framed_event(stanza: Stanza) -> StreamEvent {
    if stanza.namespace() != FRAMING {
        return StreamEvent::Stanza(stanza);
    }
    match stanza.name() {
        "open" => {
            let attribute = |element: &xmppd_protocol::xml::Element, name: &str| {
                element.get_attr(name).map(str::to_owned)
            };
            let header = match stanza.element() {
                Ok(open) => StreamHeader {
                    to: attribute(&open, "to"),
                    from: attribute(&open, "from"),
                    version: attribute(&open, "version"),
                    lang: attribute(&open, "xml:lang"),
                    id: attribute(&open, "id"),
                    default_ns: ns::CLIENT.to_owned(),
                },
                Err(_) => StreamHeader::default(),
            };
            StreamEvent::Open(header)
        }
        "close" => StreamEvent::Close,
        _ => StreamEvent::Stanza(stanza),
    }
}

/// `element` as a document of its own, as RFC 7395 wants each message: a `stream:`
/// element declares its prefix, and one without a default namespace gets
/// `jabber:client`, which a TCP stream's header would have given it.
/// `None` when it already is one, as stanzas from WebSocket clients are.
fn standalone(element: &[u8]) -> Option<String> {
    let bytes = if element.starts_with(b"<stream:") {
        let name_end = element
            .iter()
            .position(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'>'))?;
        let start_tag_end = element.iter().position(|&b| b == b'>')?;
        if memchr::memmem::find(&element[..start_tag_end], b"xmlns:stream=").is_some() {
            return None;
        }
        [
            &element[..name_end],
            b" xmlns:stream='http://etherx.jabber.org/streams'",
            &element[name_end..],
        ]
        .concat()
    } else {
        stanza::in_client_namespace(element)?
    };
    String::from_utf8(bytes).ok()
}

fn not_well_formed(text: &str) -> StreamError {
    StreamError::new(StreamErrorCondition::NotWellFormed).with_text(text)
}

fn bad_format(text: &str) -> StreamError {
    StreamError::new(StreamErrorCondition::BadFormat).with_text(text)
}

fn io_error(error: tungstenite::Error) -> StreamEnd {
    match error {
        tungstenite::Error::Io(error) => StreamEnd::Io(error),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            StreamEnd::Closed
        }
        other => StreamEnd::Io(std::io::Error::other(other)),
    }
}

impl ClientStream for WebSocketClientStream {
    const TRANSPORT: &'static str = "websocket";

    fn is_secure(&self) -> bool {
        self.secure
    }

    fn tls_connection(&self) -> Option<&rustls::ServerConnection> {
        self.socket.get_ref().server_connection()
    }

    fn buffered_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        self.ready.take().transpose()
    }

    /// Reads one WebSocket message. What tungstenite holds while idle is
    /// its read buffer, sized by `read_buffer_size` (see [`http`]).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamEnd>> {
        if self.ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        let message = match std::task::ready!(Pin::new(&mut self.socket).poll_next(cx)) {
            None => return Poll::Ready(Err(StreamEnd::Closed)),
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(error))) => {
                // RFC 6120 §4.9.3.14, as for an oversized stanza on TCP.
                let error = StreamError::new(StreamErrorCondition::PolicyViolation)
                    .with_text(format!("message too large: {error}"));
                self.ready = Some(Err(error));
                return Poll::Ready(Ok(()));
            }
            Some(Err(tungstenite::Error::Utf8(_))) => {
                self.ready = Some(Err(not_well_formed("a text message that is not UTF-8")));
                return Poll::Ready(Ok(()));
            }
            Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
        };
        self.last_heard = Instant::now();
        match message {
            Message::Text(text) => self.ready = self.message(text.as_bytes()),
            // RFC 7395 carries XMPP in text messages only; RFC 6120's
            // condition for a stream not in UTF-8.
            Message::Binary(_) => {
                self.ready = Some(Err(StreamError::new(
                    StreamErrorCondition::UnsupportedEncoding,
                )
                .with_text("XMPP over WebSocket is carried in text messages")));
            }
            // tungstenite answers pings itself; a pong answers our keepalive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => return Poll::Ready(Err(StreamEnd::Closed)),
        }
        Poll::Ready(Ok(()))
    }

    fn last_heard(&self) -> Instant {
        self.last_heard
    }

    fn shrink(&mut self) {
        self.parser.shrink();
    }

    async fn write(&mut self, element: &[u8]) -> Result<(), StreamEnd> {
        self.send(element).await
    }

    /// The answer is an `<open/>` of its own, not a header left open.
    fn open(&mut self, domain: &str, client: &StreamHeader) {
        let id = format!("{:016x}", rand::random::<u64>());
        let mut open = format!(
            "<open xmlns='{FRAMING}' id='{id}' from='{}' version='1.0' xml:lang='en'",
            escape_attr(domain)
        );
        if let Some(from) = &client.from {
            open.push_str(&format!(" to='{}'", escape_attr(from)));
        }
        open.push_str("/>");
        self.our_open = OurOpen::Pending(open.into_boxed_str());
    }

    /// The client sends a new `<open/>`; nothing it sent before is kept.
    fn restart(&mut self) {
        self.start_parser();
        self.ready = None;
        self.our_open = OurOpen::None;
    }

    /// The stream error, `<close/>`, then the WebSocket closing handshake
    /// (RFC 7395's order). Boxed, as on TCP, so that it does not size an
    /// idle session's task.
    async fn fail(&mut self, error: StreamError) -> StreamEnd {
        Box::pin(async move {
            if matches!(self.our_open, OurOpen::None) {
                self.our_open =
                    OurOpen::Pending(format!("<open xmlns='{FRAMING}' version='1.0'/>").into());
            }
            let _ = self.send(error.to_xml().as_bytes()).await;
            let _ = self
                .send(format!("<close xmlns='{FRAMING}'/>").as_bytes())
                .await;
            self.close_socket().await;
            StreamEnd::Error(error)
        })
        .await
    }

    async fn close(&mut self) {
        Box::pin(async move {
            let _ = self
                .send(format!("<close xmlns='{FRAMING}'/>").as_bytes())
                .await;
            self.close_socket().await;
        })
        .await;
    }

    /// A WebSocket ping: every WebSocket client answers it below the XMPP
    /// layer, and it costs the client no stanza.
    async fn keepalive(&mut self, _domain: &str, _full: &Jid) -> Result<(), StreamEnd> {
        self.socket
            .send(Message::Ping(Default::default()))
            .await
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_are_given_the_client_namespace_and_stream_elements_their_prefix() {
        let rewritten = standalone(b"<message to='a@b' id='x>y'><body>hi</body></message>");
        assert_eq!(
            rewritten.as_deref(),
            Some("<message xmlns='jabber:client' to='a@b' id='x>y'><body>hi</body></message>")
        );
        assert_eq!(
            standalone(b"<iq/>").as_deref(),
            Some("<iq xmlns='jabber:client'/>")
        );
        assert_eq!(
            standalone(b"<stream:features><bind/></stream:features>").as_deref(),
            Some(
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
                 <bind/></stream:features>"
            )
        );
    }

    #[test]
    fn elements_that_declare_their_namespace_are_sent_as_they_are() {
        assert_eq!(standalone(b"<message xmlns='jabber:client'/>"), None);
        assert_eq!(
            standalone(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
            None
        );
        // A child's declaration is not the element's own.
        assert_eq!(
            standalone(b"<iq id='1'><query xmlns='jabber:iq:roster'/></iq>").as_deref(),
            Some("<iq xmlns='jabber:client' id='1'><query xmlns='jabber:iq:roster'/></iq>")
        );
    }
}
