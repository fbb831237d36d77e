//! Client streams over TCP: RFC 6120 port 5222 (plain, upgraded by
//! STARTTLS) and XEP-0368 port 5223 (TLS from the first byte). The stream's
//! bytes go straight into the incremental parser.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use xmppd_protocol::error::{StreamError, StreamErrorCondition};
use xmppd_protocol::stream::{Limits, StreamEvent, StreamHeader, StreamParser};
use xmppd_protocol::xml::escape_attr;

use crate::edge::Edge;
use crate::limits::Refused;
use crate::listener;
use crate::stream::{ClientStream, StreamEnd, within};

/// A TCP connection before or after its TLS handshake.
pub type Transport = xmppd_tls::MaybeTls<TlsStream<TcpStream>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// RFC 6120 port 5222: plain TCP, upgraded by STARTTLS.
    StartTls,
    /// XEP-0368 port 5223: TLS from the first byte.
    DirectTls,
}

/// Accepts client connections until shutdown.
pub async fn serve(edge: Arc<Edge>, listener: TcpListener, security: Security) {
    listener::accept_loop(&edge, listener, move |edge, tcp, peer| {
        connection(edge, tcp, peer, security)
    })
    .await;
}

async fn connection(edge: Arc<Edge>, tcp: TcpStream, peer: SocketAddr, security: Security) {
    let slot = match listener::admit(&edge, peer) {
        Ok(slot) => slot,
        Err(refused) => {
            let (condition, text) = match refused {
                Refused::PerAddress => (
                    StreamErrorCondition::PolicyViolation,
                    "too many connections from your address",
                ),
                Refused::Total => (
                    StreamErrorCondition::ResourceConstraint,
                    "the server is full; please try later",
                ),
            };
            let transport = Transport::Plain(tcp);
            let settings = edge.settings();
            let mut stream =
                TcpClientStream::new(transport, settings.limits.clone(), settings.write_timeout);
            stream.fail_with(condition, text).await;
            return;
        }
    };
    let transport = match security {
        Security::StartTls => Transport::Plain(tcp),
        Security::DirectTls => {
            // Boxed: the handshake state must not size the connection's task.
            let handshake = Box::pin(edge.tls.acceptor().accept(tcp));
            match tokio::time::timeout(edge.settings().negotiation_timeout, handshake).await {
                Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let settings = edge.settings();
    let stream = TcpClientStream::new(transport, settings.limits.clone(), settings.write_timeout);
    listener::serve_stream(edge, peer, slot, stream).await;
}

/// Room offered to each read, in the parser's own buffer: small while no
/// stanza is half-read, so that a quiet connection holds little, doubled
/// after each read that fills it, up to `READ_MAX`.
const READ_MIN: usize = 512;
const READ_MAX: usize = 8192;

/// Where our stream header is: a stream error needs one before it.
enum OurHeader {
    None,
    /// Answered (`ClientStream::open`), to go out with the next write.
    Pending(Box<str>),
    Sent,
}

pub struct TcpClientStream {
    transport: Transport,
    parser: StreamParser,
    /// When the client last sent anything, whitespace included.
    last_heard: Instant,
    header: OurHeader,
    read_size: usize,
    /// The last read left nothing behind in the transport that a wait for
    /// the socket to become readable could miss (TLS may hold decrypted
    /// bytes that the socket no longer signals).
    drained: bool,
    /// How long a write may wait for the client to read.
    write_timeout: Duration,
}

impl TcpClientStream {
    pub fn new(transport: Transport, limits: Limits, write_timeout: Duration) -> Self {
        // A TLS handshake may have taken the client's first bytes in with it.
        let drained = !transport.is_tls();
        TcpClientStream {
            transport,
            parser: StreamParser::new(limits),
            last_heard: Instant::now(),
            header: OurHeader::None,
            read_size: READ_MIN,
            drained,
            write_timeout,
        }
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), StreamEnd> {
        let write = async {
            self.transport.write_all(data).await?;
            self.transport.flush().await?;
            Ok(())
        };
        within(self.write_timeout, write).await
    }
}

impl ClientStream for TcpClientStream {
    const TRANSPORT: &'static str = "tcp";

    fn is_secure(&self) -> bool {
        self.transport.is_tls()
    }

    fn tls_connection(&self) -> Option<&rustls::ServerConnection> {
        self.transport.server_connection()
    }

    fn can_start_tls(&self) -> bool {
        !self.transport.is_tls()
    }

    /// Bytes the client sent before the handshake are discarded with the
    /// old parser, as the RFC requires.
    async fn start_tls(self, acceptor: &TlsAcceptor) -> Result<TcpClientStream, StreamEnd> {
        let Transport::Plain(tcp) = self.transport else {
            return Err(StreamEnd::Closed);
        };
        let tls = acceptor.accept(tcp).await?;
        Ok(TcpClientStream::new(
            Transport::Tls(Box::new(tls)),
            self.parser.limits().clone(),
            self.write_timeout,
        ))
    }

    fn buffered_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        self.parser.next_event()
    }

    /// Reads once, straight into the parser's buffer: no byte is copied
    /// twice. While nothing is half-read, it gives the buffer back and waits
    /// for the socket to become readable first, so a quiet connection holds
    /// no buffer at all.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamEnd>> {
        if self.parser.buffered() == 0 {
            if self.drained {
                self.parser.release_empty_buffer();
                ready!(self.transport.poll_read_ready(cx))?;
            }
            // Nothing half-read: start small again, whatever the last burst needed.
            self.read_size = READ_MIN;
        }
        let room = self.read_size;
        let buffer = self.parser.read_buffer(room);
        let read = match tokio_util::io::poll_read_buf(Pin::new(&mut self.transport), cx, buffer) {
            Poll::Ready(read) => read?,
            Poll::Pending => {
                self.drained = true;
                return Poll::Pending;
            }
        };
        if read == 0 {
            return Poll::Ready(Err(StreamEnd::Closed));
        }
        // A read that filled its room may have left bytes in the transport
        // (TLS plaintext) that no readiness event will announce.
        self.drained = read < room;
        if read >= room {
            self.read_size = (room * 2).min(READ_MAX);
        }
        self.last_heard = Instant::now();
        Poll::Ready(Ok(()))
    }

    fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The validator's scratch space; not per stanza, where it would be
    /// allocated again for the next one.
    fn shrink(&mut self) {
        self.parser.shrink();
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StreamEnd> {
        match std::mem::replace(&mut self.header, OurHeader::Sent) {
            OurHeader::Pending(header) => {
                let mut out = String::from(header).into_bytes();
                out.extend_from_slice(data);
                self.send(&out).await
            }
            OurHeader::None | OurHeader::Sent => self.send(data).await,
        }
    }

    /// Sent with the next write: the features (or a stream error) always
    /// follow it, and together they take one segment and one TLS record,
    /// not two.
    fn open(&mut self, domain: &str, client: &StreamHeader) {
        let id = format!("{:016x}", rand::random::<u64>());
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='{id}' from='{}' version='1.0' xml:lang='en'",
            escape_attr(domain)
        );
        if let Some(from) = &client.from {
            header.push_str(&format!(" to='{}'", escape_attr(from)));
        }
        header.push('>');
        self.header = OurHeader::Pending(header.into_boxed_str());
    }

    fn restart(&mut self) {
        self.parser.reset();
        self.header = OurHeader::None;
    }

    /// Boxed, as the close below: a stream's task is sized by its largest
    /// wait, and these rare exits would otherwise size every idle one.
    async fn fail(&mut self, error: StreamError) -> StreamEnd {
        Box::pin(async move {
            let mut out = String::new();
            if matches!(self.header, OurHeader::None) {
                out.push_str(
                    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                     xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
                );
            }
            out.push_str(&error.to_xml());
            out.push_str("</stream:stream>");
            let _ = self.write(out.as_bytes()).await;
            let _ = self.transport.shutdown().await;
            StreamEnd::Error(error)
        })
        .await
    }

    async fn close(&mut self) {
        Box::pin(async move {
            let _ = self.write(b"</stream:stream>").await;
            let _ = self.transport.shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A loopback connection: our stream, and the client's end of it.
    async fn connected() -> (TcpClientStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream = TcpClientStream::new(
            Transport::Plain(server),
            Limits::default(),
            Duration::from_secs(1),
        );
        (stream, client)
    }

    async fn read_all(client: &mut TcpStream, stream: TcpClientStream) -> String {
        drop(stream);
        let mut received = String::new();
        tokio::io::AsyncReadExt::read_to_string(client, &mut received)
            .await
            .unwrap();
        received
    }

    #[tokio::test]
    async fn the_header_goes_out_with_the_features() {
        let (mut stream, mut client) = connected().await;
        stream.open("example.org", &StreamHeader::default());
        let mut buffer = [0; 64];
        let early = client.try_read(&mut buffer);
        assert_eq!(
            early.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "the header was sent alone"
        );
        stream.write(b"<stream:features/>").await.unwrap();
        let received = read_all(&mut client, stream).await;
        assert!(received.starts_with("<?xml version='1.0'?><stream:stream "));
        assert!(received.contains(" from='example.org' "), "{received}");
        assert!(received.ends_with("><stream:features/>"), "{received}");
    }

    #[tokio::test]
    async fn a_stream_error_follows_the_header_given_or_a_minimal_one() {
        let (mut answered, mut client) = connected().await;
        answered.open("example.org", &StreamHeader::default());
        answered
            .fail_with(StreamErrorCondition::HostUnknown, "")
            .await;
        let received = read_all(&mut client, answered).await;
        assert_eq!(received.matches("<stream:stream ").count(), 1, "{received}");
        assert!(received.contains(" from='example.org' "), "{received}");
        assert!(received.ends_with("</stream:stream>"), "{received}");

        let (mut unanswered, mut client) = connected().await;
        unanswered
            .fail_with(StreamErrorCondition::BadFormat, "")
            .await;
        let received = read_all(&mut client, unanswered).await;
        assert!(received.starts_with("<?xml version='1.0'?><stream:stream "));
        assert!(received.contains("<bad-format "), "{received}");
    }
}
