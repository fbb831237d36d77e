//! The server side of a client's TLS connection, driven through rustls' unbuffered API so
//! that an idle connection holds no buffer.
//!
//! rustls' buffered `ServerConnection` (what tokio-rustls wraps) keeps a 4 KiB receive
//! buffer for the connection's life once it has read anything: most of what an idle TLS
//! session cost. Here the buffers are ours: ciphertext is read into [`ServerTlsStream`]'s
//! `incoming` only once the socket is readable and the buffer is given back as soon as no
//! record is left half-read, as the plain path does with its parser's buffer; ciphertext to
//! send lives in `outgoing` only until the socket has taken it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::{ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::exporter::{self, EXPORTER_LEN};

/// The first read of a burst: a few stanzas' worth. A record known to be longer gets room
/// for the whole of it.
const READ_SIZE: usize = 4096;
/// TLS record header: type, version, length.
const HEADER_LEN: usize = 5;
/// Plaintext taken by one `poll_write`: a few records, so that `outgoing` stays bounded.
const MAX_WRITE: usize = 64 * 1024;

pub struct ServerTlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed: at most a partial record while the reader
    /// waits, and empty (no allocation) while the connection is quiet.
    incoming: Vec<u8>,
    /// Plaintext decrypted but not yet read: the rest of a record larger than the reader's
    /// buffer, or a record decrypted while writing. `plaintext[read..]` is unread.
    plaintext: Vec<u8>,
    read: usize,
    /// Ciphertext not yet taken by the socket: `outgoing[written..]`.
    outgoing: Vec<u8>,
    written: usize,
    /// The client sent close_notify: reads end once `plaintext` is empty.
    peer_closed: bool,
    /// Our close_notify is in `outgoing` or sent.
    close_sent: bool,
    /// RFC 9266 tls-exporter, for TLS 1.3 connections (see [`crate::exporter`]).
    exporter: Option<[u8; EXPORTER_LEN]>,
}

/// Where processing the records received so far left the connection.
enum Progress {
    /// Every whole record is processed: more ciphertext is needed.
    NeedsData,
    /// Plaintext was delivered (into the reader's buffer or `plaintext`).
    Delivered,
    /// The client closed the connection (close_notify).
    Closed,
}

impl ServerTlsStream {
    /// Performs the server side of the handshake over `tcp`. Records the client sent after
    /// its Finished are kept for the first read.
    pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
        let mut stream = ServerTlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            read: 0,
            outgoing: Vec::new(),
            written: 0,
            peer_closed: false,
            close_sent: false,
            exporter: None,
        };
        poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// The negotiated version, cipher suite, ALPN protocol and so on.
    pub fn connection(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// RFC 9266 tls-exporter: `Some` for TLS 1.3 connections.
    pub fn tls_exporter(&self) -> Option<&[u8]> {
        self.exporter.as_ref().map(<[u8; EXPORTER_LEN]>::as_slice)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (progress, secret) = exporter::capture(|| self.process(None));
            if let (Some(secret), Some(suite)) = (secret, self.conn.negotiated_cipher_suite()) {
                self.exporter = exporter::tls_exporter(suite, &secret);
            }
            let progress = match progress {
                Ok(progress) => progress,
                Err(error) => {
                    self.send_alert();
                    return Poll::Ready(Err(error));
                }
            };
            ready!(self.poll_flush_outgoing(cx))?;
            if !self.conn.is_handshaking() {
                if self.conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
                    self.exporter = None;
                }
                return Poll::Ready(Ok(()));
            }
            match progress {
                Progress::NeedsData => {
                    if ready!(self.poll_fill_incoming(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Progress::Delivered => {}
                Progress::Closed => {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }

    /// Sends the alert rustls queued with a handshake error (say, no common protocol), if the
    /// socket takes it at once: the client learns why, and nothing waits for a peer that
    /// failed.
    fn send_alert(&mut self) {
        // Only a queued message: with nothing to send, rustls would go on to parse input.
        if self.conn.wants_write() {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
                let _ = encode_into(&mut self.outgoing, 0, |out| Ok(encode.encode(out)?));
            }
        }
        let _ = self.tcp.try_write(&self.outgoing[self.written..]);
    }

    /// Polls until a read can make progress without waiting: plaintext or a whole record is
    /// held, or the socket is readable. While it waits the connection holds no buffer.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.read < self.plaintext.len() || self.peer_closed || self.holds_whole_record() {
            return Poll::Ready(Ok(()));
        }
        self.release_empty_buffers();
        self.tcp.poll_read_ready(cx)
    }

    fn holds_whole_record(&self) -> bool {
        record_len(&self.incoming).is_some_and(|len| self.incoming.len() >= len)
    }

    /// Gives back the buffers that hold nothing: called before waiting for the client.
    fn release_empty_buffers(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if self.written == self.outgoing.len() {
            self.outgoing = Vec::new();
            self.written = 0;
        }
    }

    /// Processes received records until one yields plaintext, the client closed, or more
    /// ciphertext is needed; handshake and post-handshake messages to send (KeyUpdate
    /// answers, alerts) go to `outgoing` on the way. Plaintext goes into `buf` as far as it
    /// fits, the rest into `plaintext`.
    fn process(&mut self, mut buf: Option<&mut ReadBuf<'_>>) -> io::Result<Progress> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let progress = match state.map_err(invalid_data)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        let payload = record.payload;
                        let taken = match buf.as_deref_mut() {
                            Some(buf) if self.read == self.plaintext.len() => {
                                let taken = payload.len().min(buf.remaining());
                                buf.put_slice(&payload[..taken]);
                                taken
                            }
                            _ => 0,
                        };
                        self.plaintext.extend_from_slice(&payload[taken..]);
                    }
                    Some(Progress::Delivered)
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, 0, |out| Ok(encode.encode(out)?))?;
                    None
                }
                // `outgoing` carries it to the socket: every wait for the client is preceded
                // by a flush of it.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake => {
                    Some(Progress::NeedsData)
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    Some(Progress::Closed)
                }
                // Early data is never accepted (the configuration allows none).
                other => return Err(invalid_data(format!("unexpected TLS state {other:?}"))),
            };
            self.incoming.drain(..discard);
            if let Some(progress) = progress {
                return Ok(progress);
            }
        }
    }

    /// Runs `write` once the connection may send application data, processing (and keeping)
    /// whatever received records stand before that state.
    fn with_write_traffic(
        &mut self,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut write = Some(write);
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let done = match state.map_err(invalid_data)? {
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(write) = write.take() {
                        write(&mut traffic, &mut self.outgoing)?;
                    }
                    true
                }
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        self.plaintext
                            .extend_from_slice(record.map_err(invalid_data)?.payload);
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, 0, |out| Ok(encode.encode(out)?))?;
                    false
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    false
                }
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                other => return Err(invalid_data(format!("unexpected TLS state {other:?}"))),
            };
            self.incoming.drain(..discard);
            if done {
                return Ok(());
            }
        }
    }

    /// Reads once from the socket into `incoming`: `Ok(0)` at the end of the stream. Waits
    /// for readability with no buffer while nothing is half-read.
    fn poll_fill_incoming(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            if self.incoming.is_empty() {
                self.release_empty_buffers();
                ready!(self.tcp.poll_read_ready(cx))?;
            }
            let room = match record_len(&self.incoming) {
                Some(len) if len > self.incoming.len() => len - self.incoming.len(),
                _ => READ_SIZE,
            };
            self.incoming.reserve_exact(room);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(read) => return Poll::Ready(Ok(read)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if !self.incoming.is_empty() {
                        ready!(self.tcp.poll_read_ready(cx))?;
                    }
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Writes `outgoing` to the socket; keeps its allocation for the next write.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.outgoing.len() {
            let written =
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.outgoing.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// Why rustls wrote nothing into the buffer it was given.
enum NotWritten {
    TooSmall(usize),
    Failed(io::Error),
}

impl From<EncryptError> for NotWritten {
    fn from(error: EncryptError) -> Self {
        match error {
            EncryptError::InsufficientSize(size) => NotWritten::TooSmall(size.required_size),
            other => NotWritten::Failed(io::Error::other(other)),
        }
    }
}

impl From<EncodeError> for NotWritten {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::InsufficientSize(size) => NotWritten::TooSmall(size.required_size),
            other => NotWritten::Failed(io::Error::other(other)),
        }
    }
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(
    out: &mut Vec<u8>,
    estimate: usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, NotWritten>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = estimate;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(len) => {
                out.truncate(start + len);
                return Ok(());
            }
            Err(NotWritten::TooSmall(required)) if required > room => room = required,
            Err(NotWritten::TooSmall(required)) => {
                out.truncate(start);
                return Err(io::Error::other(format!(
                    "rustls asked for {required} bytes and was given {room}"
                )));
            }
            Err(NotWritten::Failed(error)) => {
                out.truncate(start);
                return Err(error);
            }
        }
    }
}

/// The length of the record at the front of `incoming`, header included, once its header
/// is there.
fn record_len(incoming: &[u8]) -> Option<usize> {
    let header = incoming.get(..HEADER_LEN)?;
    Some(HEADER_LEN + usize::from(u16::from_be_bytes([header[3], header[4]])))
}

fn invalid_data(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if this.read < this.plaintext.len() {
                let unread = &this.plaintext[this.read..];
                let taken = unread.len().min(buf.remaining());
                buf.put_slice(&unread[..taken]);
                this.read += taken;
                if this.read == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            match this.process(Some(buf))? {
                // An empty record delivers nothing, which must not read as the end.
                Progress::Delivered if buf.filled().len() == before => continue,
                Progress::Delivered => return Poll::Ready(Ok(())),
                Progress::Closed => continue,
                Progress::NeedsData => {}
            }
            // A KeyUpdate answer or an alert may be owed: it goes out before the wait, or
            // when the socket can take it.
            if let Poll::Ready(Err(error)) = this.poll_flush_outgoing(cx) {
                return Poll::Ready(Err(error));
            }
            if ready!(this.poll_fill_incoming(cx))? == 0 {
                // The client closed TCP without close_notify: the end of the stream all the
                // same (the XML stream says whether it was complete).
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What the socket has not taken yet goes first: that is the back-pressure.
        ready!(this.poll_flush_outgoing(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &buf[..buf.len().min(MAX_WRITE)];
        this.with_write_traffic(|traffic, outgoing| {
            // Room for the records' overhead; rustls says when it needs more (a KeyUpdate
            // queued before the data).
            let estimate = data.len() + (data.len() / 16384 + 1) * 64;
            encode_into(outgoing, estimate, |out| Ok(traffic.encrypt(data, out)?))
        })?;
        // Sent now if the socket takes it; otherwise by the next write or flush.
        if let Poll::Ready(Err(error)) = this.poll_flush_outgoing(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            this.with_write_traffic(|traffic, outgoing| {
                encode_into(outgoing, 64, |out| Ok(traffic.queue_close_notify(out)?))
            })?;
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::*;
    use crate::ServerTls;
    use crate::insecure::insecure_client_config_for;

    /// A loopback TLS connection: our server stream and a rustls client, with `versions`.
    async fn connected(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (ServerTlsStream, TlsStream<TcpStream>) {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls::load("localhost", None, None, dir.path()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tls.accept(tcp).await.unwrap()
        });
        let client = TlsConnector::from(Arc::new(insecure_client_config_for(versions)))
            .connect(
                ServerName::try_from("localhost").unwrap(),
                TcpStream::connect(address).await.unwrap(),
            )
            .await
            .unwrap();
        (server.await.unwrap(), client)
    }

    /// Polls one read with room for `room` bytes: `None` if it would wait.
    async fn try_read(stream: &mut ServerTlsStream, room: usize) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            let mut space = vec![0; room];
            let mut buf = ReadBuf::new(&mut space);
            Poll::Ready(match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(result) => {
                    result.unwrap();
                    Some(buf.filled().to_vec())
                }
                Poll::Pending => None,
            })
        })
        .await
    }

    /// Reads `len` bytes through a reader buffer of `room` bytes.
    async fn read_exactly(stream: &mut ServerTlsStream, len: usize, room: usize) -> Vec<u8> {
        let mut received = Vec::new();
        while received.len() < len {
            let mut space = vec![0; room];
            let read = stream.read(&mut space).await.unwrap();
            assert_ne!(read, 0, "the stream ended after {} bytes", received.len());
            received.extend_from_slice(&space[..read]);
        }
        received
    }

    fn capacities(stream: &ServerTlsStream) -> [usize; 3] {
        [
            stream.incoming.capacity(),
            stream.plaintext.capacity(),
            stream.outgoing.capacity(),
        ]
    }

    #[tokio::test]
    async fn a_quiet_connection_holds_no_buffer() {
        let (mut server, mut client) = connected(&[&rustls::version::TLS13]).await;
        client.write_all(b"<presence/>").await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(read_exactly(&mut server, 11, 512).await, b"<presence/>");
        server.write_all(b"<presence/>").await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(try_read(&mut server, 512).await, None);
        assert_eq!(capacities(&server), [0, 0, 0]);
        let mut echoed = [0; 11];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"<presence/>");
    }

    #[tokio::test]
    async fn records_larger_than_the_readers_buffer_arrive_whole_both_ways() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (mut server, mut client) = connected(&[version]).await;
            let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                client.write_all(&sent).await.unwrap();
                client.flush().await.unwrap();
                client
            });
            assert_eq!(read_exactly(&mut server, data.len(), 700).await, data);
            let mut client = writer.await.unwrap();
            let reader = tokio::spawn(async move {
                let mut received = Vec::new();
                client.read_to_end(&mut received).await.unwrap();
                received
            });
            server.write_all(&data).await.unwrap();
            server.shutdown().await.unwrap();
            // read_to_end succeeds only after a close_notify.
            assert_eq!(reader.await.unwrap(), data);
        }
    }

    #[tokio::test]
    async fn the_clients_close_notify_ends_the_stream_after_its_data() {
        let (mut server, mut client) = connected(&[&rustls::version::TLS13]).await;
        client.write_all(b"</stream:stream>").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_exactly(&mut server, 16, 4).await, b"</stream:stream>");
        assert_eq!(server.read(&mut [0; 16]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_followed_both_ways() {
        let (mut server, mut client) = connected(&[&rustls::version::TLS13]).await;
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"after the update").await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(
            read_exactly(&mut server, 16, 512).await,
            b"after the update"
        );
        // Our answer carries our own KeyUpdate before data under the new key: the client
        // decrypts it only if both came in that order.
        server.write_all(b"answered").await.unwrap();
        server.flush().await.unwrap();
        let mut answer = [0; 8];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answered");
    }

    #[tokio::test]
    async fn a_refused_handshake_tells_the_client_why() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls::load("localhost", None, None, dir.path()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tls.accept(tcp).await.map(|_| ())
        });
        let mut config = insecure_client_config_for(&[&rustls::version::TLS13]);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let refused = TlsConnector::from(Arc::new(config))
            .connect(
                ServerName::try_from("localhost").unwrap(),
                TcpStream::connect(address).await.unwrap(),
            )
            .await
            .unwrap_err();
        assert!(server.await.unwrap().is_err());
        let alert = refused.get_ref().unwrap().to_string();
        assert!(alert.contains("NoApplicationProtocol"), "{alert}");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_record_is_an_error() {
        let (mut server, client) = connected(&[&rustls::version::TLS13]).await;
        let (mut tcp, _) = client.into_inner();
        tcp.write_all(b"<stream:stream xmlns='jabber:client'>")
            .await
            .unwrap();
        let error = server.read(&mut [0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
