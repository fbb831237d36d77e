//! XMPP's own framing over TCP (RFC 6120): one XML stream per connection, restarted in place
//! after STARTTLS and SASL, split into elements by `xmppd-protocol`'s incremental parser.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xmppd_protocol::xml::escape_text;
use xmppd_protocol::{Limits, StreamEvent, StreamParser};

use super::{CLOSE_WAIT, Socket, Transport, connect_tcp, tls_handshake};
use crate::connection::{ConnectOptions, NS_STREAMS, TlsMode, XmppError};

/// Read chunk per connection: small, because thousands of idle sessions each hold one.
const READ_CHUNK: usize = 2048;

pub struct TcpTransport {
    io: Socket,
    parser: StreamParser,
    read_buf: Box<[u8]>,
}

impl TcpTransport {
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, XmppError> {
        let tcp = connect_tcp(opts).await?;
        let io = match opts.tls {
            TlsMode::Direct => tls_handshake(opts, &opts.tls_config, &opts.domain, tcp).await?,
            TlsMode::Starttls | TlsMode::Plain => Socket::Plain(tcp),
        };
        Ok(Self {
            io,
            parser: StreamParser::new(Limits::default()),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
        })
    }
}

impl Transport for TcpTransport {
    async fn open_stream(&mut self, domain: &str) -> Result<(), XmppError> {
        self.parser.reset();
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>",
            escape_text(domain)
        );
        self.send(header.as_bytes()).await
    }

    /// Flushed, since TLS holds records until then.
    async fn send(&mut self, element: &[u8]) -> Result<(), XmppError> {
        self.io.write_all(element).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn next_event(&mut self) -> Result<StreamEvent, XmppError> {
        loop {
            match self.parser.next_event() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(e) => return Err(XmppError::Xml(e.to_string())),
            }
            let n = self.io.read(&mut self.read_buf).await?;
            if n == 0 {
                return Err(XmppError::Closed);
            }
            self.parser.feed(&self.read_buf[..n]);
        }
    }

    async fn starttls(mut self, opts: &ConnectOptions) -> Result<Self, XmppError> {
        let Socket::Plain(tcp) = self.io else {
            return Err(XmppError::Negotiation("starttls-twice"));
        };
        self.io = tls_handshake(opts, &opts.tls_config, &opts.domain, tcp).await?;
        Ok(self)
    }

    async fn close(&mut self) {
        if self.send(b"</stream:stream>").await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, super::drain(self)).await;
        let _ = self.io.shutdown().await;
    }
}
