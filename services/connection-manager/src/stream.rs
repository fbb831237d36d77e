//! The client-stream abstraction: what negotiation, the limits and the
//! bound session need from one client's XML stream, whatever carries it.
//!
//! Each transport is one implementation: [`crate::tcp`] (TCP with STARTTLS,
//! and direct TLS) and [`crate::websocket`] (RFC 7395). They differ in how
//! bytes become stream events and how our elements are framed on the wire;
//! everything above (`negotiation.rs`, `auth.rs`, `registration.rs`,
//! `session.rs`) is written once, generic over [`ClientStream`], so each
//! transport gets its own monomorphised code and its own task layout: no
//! indirection on the hot path, and a TCP session is no larger for the
//! existence of WebSocket.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_rustls::TlsAcceptor;
use xmppd_protocol::error::{StreamError, StreamErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::stream::{StreamEvent, StreamHeader};

#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("client closed the connection")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream error sent: {0}")]
    Error(StreamError),
}

/// Awaits `write`, giving up after `limit` (`limits.write_timeout_secs`):
/// a client that stopped reading would hold the server's buffers and its
/// deliveries until its connection is closed. Most writes complete at once,
/// so the timer is only set for one that has to wait.
pub async fn within<F>(limit: Duration, write: F) -> Result<(), StreamEnd>
where
    F: Future<Output = Result<(), StreamEnd>>,
{
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(written) = futures::poll!(write.as_mut()) {
        return written;
    }
    tokio::time::timeout(limit, write).await.map_err(|_| {
        StreamEnd::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read what was written to it in time",
        ))
    })?
}

/// One client's XML stream over some transport.
///
/// Reading is split in two, as the bound session's wait needs it: events
/// already read come from [`buffered_event`](Self::buffered_event) without
/// waiting, and [`poll_fill`](Self::poll_fill) reads more (cancel-safe, so
/// that it can sit in a `select!` beside the mailbox and a timer). Writing
/// takes one top-level element per call; the transport frames it.
pub trait ClientStream: Send + Sized + 'static {
    /// The `transport` label of this stream's metrics.
    const TRANSPORT: &'static str;

    /// Whether what the client sends is protected from eavesdroppers: TLS
    /// ends here, or the configuration says a proxy in front terminated it.
    /// Authentication is only offered on secure streams unless
    /// `auth.require_tls` is off, and PLAIN only on secure ones.
    fn is_secure(&self) -> bool;

    /// The TLS session ending here, if any: channel bindings come from it.
    fn tls_connection(&self) -> Option<&rustls::ServerConnection>;

    /// Whether STARTTLS can be offered on this stream now.
    fn can_start_tls(&self) -> bool {
        false
    }

    /// Upgrades the stream to TLS after `<proceed/>` was sent (RFC 6120
    /// §5.4.3.3). Only called when [`can_start_tls`](Self::can_start_tls).
    fn start_tls(
        self,
        _acceptor: &TlsAcceptor,
    ) -> impl Future<Output = Result<Self, StreamEnd>> + Send {
        async { Err(StreamEnd::Closed) }
    }

    /// The next event among what was already read, without reading. A parse
    /// error is the caller's to send ([`fail`](Self::fail)).
    fn buffered_event(&mut self) -> Result<Option<StreamEvent>, StreamError>;

    /// Reads once. A quiet stream holds as little as its transport allows
    /// while it waits here. Cancel-safe: what was read is kept.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamEnd>>;

    /// When the client last sent anything, keepalives included.
    fn last_heard(&self) -> Instant;

    /// Gives back what reading grew beyond a quiet stream's needs; called
    /// when a client goes quiet, not per stanza.
    fn shrink(&mut self);

    /// Writes one top-level element (a stanza, features, a SASL element).
    fn write(&mut self, element: &[u8]) -> impl Future<Output = Result<(), StreamEnd>> + Send;

    /// Answers the client's stream header with ours (RFC 6120 §4.2), to go
    /// out before the next write.
    fn open(&mut self, domain: &str, client: &StreamHeader);

    /// After SASL success: the client opens a new stream over the same
    /// connection (RFC 6120 §6.4.6).
    fn restart(&mut self);

    /// Sends a stream error and closes the stream (RFC 6120 §4.9.1.1).
    fn fail(&mut self, error: StreamError) -> impl Future<Output = StreamEnd> + Send;

    /// Closes the stream cleanly from our side.
    fn close(&mut self) -> impl Future<Output = ()> + Send;

    /// Checks that a silent client is still there; whatever it answers
    /// counts as heard. By default a XEP-0199 ping, which every client
    /// answers.
    fn keepalive(
        &mut self,
        domain: &str,
        full: &Jid,
    ) -> impl Future<Output = Result<(), StreamEnd>> + Send {
        let ping = format!(
            "<iq type='get' id='keepalive' from='{}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            xmppd_protocol::xml::escape_attr(domain),
            xmppd_protocol::xml::escape_attr(full.as_str())
        );
        async move { self.write(ping.as_bytes()).await }
    }

    /// The next event, reading as needed; a parse error is sent and ends the
    /// stream. Cancel-safe.
    fn next_event(&mut self) -> impl Future<Output = Result<StreamEvent, StreamEnd>> + Send {
        async move {
            loop {
                match self.buffered_event() {
                    Ok(Some(event)) => return Ok(event),
                    Ok(None) => std::future::poll_fn(|cx| self.poll_fill(cx)).await?,
                    Err(error) => return Err(self.fail(error).await),
                }
            }
        }
    }

    fn fail_with(
        &mut self,
        condition: StreamErrorCondition,
        text: &str,
    ) -> impl Future<Output = StreamEnd> + Send {
        let mut error = StreamError::new(condition);
        if !text.is_empty() {
            error = error.with_text(text);
        }
        self.fail(error)
    }
}
