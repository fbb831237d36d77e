//! A TCP connection before or after its TLS handshake, as one type, so that
//! stream code (the server's edge, the load tool's clients) need not care.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// `T` is the TLS stream: `tokio_rustls::server::TlsStream<TcpStream>` on
/// the server, the client one in clients.
pub enum MaybeTls<T> {
    Plain(TcpStream),
    // Boxed: the TLS state is large, and plain connections should stay small.
    Tls(Box<T>),
}

impl<T> MaybeTls<T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl MaybeTls<tokio_rustls::server::TlsStream<TcpStream>> {
    /// The server side of the TLS session, for channel bindings.
    pub fn server_connection(&self) -> Option<&rustls::ServerConnection> {
        match self {
            MaybeTls::Tls(stream) => Some(stream.get_ref().1),
            MaybeTls::Plain(_) => None,
        }
    }

    /// Polls the socket until it has bytes to read, without reading them.
    /// Under TLS this says nothing of plaintext that rustls already holds:
    /// the caller reads until a read comes back short before it waits here.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            MaybeTls::Plain(stream) => stream.poll_read_ready(cx),
            MaybeTls::Tls(stream) => stream.get_ref().0.poll_read_ready(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
