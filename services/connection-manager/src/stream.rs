//! One client's XML stream: the transport, the incremental parser over it,
//! and the few things written at the stream level (headers, features,
//! stream errors).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;
use xmppd_protocol::error::{StreamError, StreamErrorCondition};
use xmppd_protocol::stream::{Limits, StreamEvent, StreamHeader, StreamParser};
use xmppd_protocol::xml::escape_attr;

use crate::transport::Transport;

/// Room offered to each read, in the parser's own buffer: small while no
/// stanza is half-read, so that a quiet connection holds little, doubled
/// after each read that fills it, up to `READ_MAX`.
const READ_MIN: usize = 512;
const READ_MAX: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("client closed the connection")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream error sent: {0}")]
    Error(StreamError),
}

/// Where our stream header is: a stream error needs one before it.
enum OurHeader {
    None,
    /// Answered (`XmppStream::open`), to go out with the next write.
    Pending(Box<str>),
    Sent,
}

pub struct XmppStream {
    transport: Transport,
    parser: StreamParser,
    /// When the client last sent anything, whitespace included.
    pub last_heard: Instant,
    header: OurHeader,
    read_size: usize,
    /// The last read left nothing behind in the transport that a wait for
    /// the socket to become readable could miss (TLS may hold decrypted
    /// bytes that the socket no longer signals).
    drained: bool,
}

impl XmppStream {
    pub fn new(transport: Transport, limits: Limits) -> Self {
        // A TLS handshake may have taken the client's first bytes in with it.
        let drained = !transport.is_tls();
        XmppStream {
            transport,
            parser: StreamParser::new(limits),
            last_heard: Instant::now(),
            header: OurHeader::None,
            read_size: READ_MIN,
            drained,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The next event, reading as needed. Cancel-safe: a read that did not
    /// complete leaves nothing behind.
    pub async fn next_event(&mut self) -> Result<StreamEvent, StreamEnd> {
        loop {
            match self.parser.next_event() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => std::future::poll_fn(|cx| self.poll_fill(cx)).await?,
                Err(error) => return Err(self.fail(error).await),
            }
        }
    }

    /// The next event among the bytes already read, without reading. A
    /// parse error is the caller's to send ([`fail`](Self::fail)).
    pub fn buffered_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        self.parser.next_event()
    }

    /// Reads once, straight into the parser's buffer: no byte is copied
    /// twice. While nothing is half-read, it gives the buffer back and waits
    /// for the socket to become readable first, so a quiet connection holds
    /// no buffer at all. Cancel-safe: what was read stays in the parser.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamEnd>> {
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

    /// Releases what the parser grew beyond its stream's needs (the
    /// validator's scratch space), for a client gone quiet; not per stanza,
    /// where it would be allocated again for the next one.
    pub fn shrink(&mut self) {
        self.parser.shrink();
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamEnd> {
        match std::mem::replace(&mut self.header, OurHeader::Sent) {
            OurHeader::Pending(header) => {
                let mut out = String::from(header).into_bytes();
                out.extend_from_slice(data);
                self.send(&out).await
            }
            OurHeader::None | OurHeader::Sent => self.send(data).await,
        }
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), StreamEnd> {
        self.transport.write_all(data).await?;
        self.transport.flush().await?;
        Ok(())
    }

    /// Answers the client's stream header with ours (RFC 6120 §4.2), sent
    /// with the next write: the features (or a stream error) always follow
    /// it, and together they take one segment and one TLS record, not two.
    pub fn open(&mut self, domain: &str, client: &StreamHeader) {
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

    /// Sends a stream error and closes the stream (RFC 6120 §4.9.1.1).
    /// Boxed, as the other rare exits below: a stream's task is sized by
    /// its largest wait, and these would otherwise size every idle one.
    pub async fn fail(&mut self, error: StreamError) -> StreamEnd {
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

    pub async fn fail_with(&mut self, condition: StreamErrorCondition, text: &str) -> StreamEnd {
        let mut error = StreamError::new(condition);
        if !text.is_empty() {
            error = error.with_text(text);
        }
        self.fail(error).await
    }

    /// Closes the stream cleanly from our side.
    pub async fn close(&mut self) {
        Box::pin(async move {
            let _ = self.write(b"</stream:stream>").await;
            let _ = self.transport.shutdown().await;
        })
        .await;
    }

    /// After SASL success: the client opens a new stream over the same
    /// transport (RFC 6120 §6.4.6).
    pub fn restart(&mut self) {
        self.parser.reset();
        self.header = OurHeader::None;
    }

    /// Upgrades a plain transport to TLS after `<proceed/>` was sent
    /// (RFC 6120 §5.4.3.3). Bytes the client sent before the handshake are
    /// discarded with the old parser, as the RFC requires.
    pub async fn start_tls(self, acceptor: &TlsAcceptor) -> Result<XmppStream, StreamEnd> {
        let Transport::Plain(tcp) = self.transport else {
            return Err(StreamEnd::Closed);
        };
        let tls = acceptor.accept(tcp).await?;
        Ok(XmppStream::new(
            Transport::Tls(Box::new(tls)),
            self.parser.limits().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A loopback connection: our stream, and the client's end of it.
    async fn connected() -> (XmppStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream = XmppStream::new(Transport::Plain(server), Limits::default());
        (stream, client)
    }

    async fn read_all(client: &mut TcpStream, stream: XmppStream) -> String {
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
