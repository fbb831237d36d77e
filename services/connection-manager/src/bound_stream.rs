//! A bound client stream: stanzas from the client are checked, stamped and
//! sent to the router; deliveries from the cluster are written out; silence
//! is met with a ping, then a timeout.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use tokio::time::{Instant, Sleep};
use tracing::Instrument;
use xmppd_grpc::{Envelope, Kind, Stage};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition, StreamErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{Stanza, error_reply};
use xmppd_protocol::stream::StreamEvent;
use xmppd_runtime::{stanza_span, traces};

use crate::cluster::{Delivery, PinnedRoute};
use crate::edge::Edge;
use crate::hints;
use crate::limits::TokenBucket;
use crate::listener::Open;
use crate::mailbox::Mailbox;
use crate::negotiation::iq_result;
use crate::stream::{ClientStream, StreamEnd};

/// What a client is told when the server stops (RFC 6120 §4.9.3.20).
pub const SHUTDOWN_TEXT: &str = "server shutting down; please reconnect";

pub struct Bound {
    pub full: Jid,
    pub route: PinnedRoute,
    pub mailbox: Mailbox,
}

/// A bound client stream and everything that lives as long as it: `open` is
/// its connection's accounting, released with it.
pub struct BoundStream<S: ClientStream> {
    pub stream: S,
    pub bound: Bound,
    pub open: Open<S>,
}

/// Serves a bound stream until it ends. Spawned as a task of its own with
/// the bound stream boxed as one: each layer of an async call keeps its own copy
/// of what it was given by value for as long as it runs, so an idle
/// bound stream's task holds pointers only.
pub async fn run<S: ClientStream>(edge: Arc<Edge>, mut bound_stream: Box<BoundStream<S>>) {
    edge.metrics.stream_bound(S::TRANSPORT);
    let result = serve(&edge, &mut bound_stream.stream, &mut bound_stream.bound).await;
    edge.metrics.stream_ended(S::TRANSPORT);
    match result {
        Err(StreamEnd::Error(error)) => {
            edge.metrics.stream_error(error.condition.name());
            tracing::debug!(%error, "stream closed with an error");
        }
        Err(end) => tracing::debug!(%end, "stream ended"),
        Ok(()) => {}
    }
}

async fn serve<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    bound: &mut Bound,
) -> Result<(), StreamEnd> {
    // A shutdown that began before this stream was bound found no mailbox
    // to tell (`Edge::close_bound_streams`).
    if edge.shutdown.is_stopping() {
        return Err(stream
            .fail_with(StreamErrorCondition::SystemShutdown, SHUTDOWN_TEXT)
            .await);
    }
    let mut bucket = TokenBucket::new(edge.settings.stanzas_per_second, edge.settings.stanza_burst);
    let mut pinged_at: Option<Instant> = None;
    // One timer for the bound stream's life, moved as the client speaks: moving
    // a deadline later leaves the timer where it is until it fires, while a
    // new one per wait would be registered and removed for every stanza.
    let silence = tokio::time::sleep(edge.settings.ping_after);
    tokio::pin!(silence);
    loop {
        // Everything already read is handled before the next wait.
        loop {
            let event = match stream.buffered_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(error) => return Err(stream.fail(error).await),
            };
            // Boxed: handling a stanza (stamping, waiting for room on the
            // router stream, writing an answer) is the largest state a
            // session has, and would otherwise size every idle bound stream's task.
            let handled = Box::pin(handle_event(edge, stream, bound, &mut bucket, event));
            if handled.await?.is_break() {
                return Ok(());
            }
        }
        let heard = Instant::from_std(stream.last_heard());
        if pinged_at.is_some_and(|pinged| heard > pinged) {
            pinged_at = None;
        }
        let wake = match pinged_at {
            Some(pinged) => {
                pinged
                    + edge
                        .settings
                        .idle_timeout
                        .saturating_sub(edge.settings.ping_after)
            }
            None => heard + edge.settings.ping_after,
        };
        silence.as_mut().reset(wake);
        match wait(stream, &mut bound.mailbox, silence.as_mut()).await {
            Wake::Delivery(Some(Delivery::Stanza { payload, queued_at })) => {
                edge.metrics.stanzas_out.inc();
                stream.write(&payload).await?;
                edge.metrics
                    .outbound
                    .observe(queued_at.elapsed().as_secs_f64());
            }
            Wake::Delivery(Some(Delivery::Close { condition, text })) => {
                return Err(stream.fail_with(condition, &text).await);
            }
            Wake::Delivery(None) => {
                return Err(stream
                    .fail_with(StreamErrorCondition::InternalServerError, "")
                    .await);
            }
            Wake::Read(read) => read?,
            Wake::Silence => {
                // Whitespace keepalives are read without yielding an event,
                // so the client may have spoken since `wake` was computed.
                if Instant::from_std(stream.last_heard()) > heard {
                    continue;
                }
                if pinged_at.is_some() {
                    return Err(stream
                        .fail_with(StreamErrorCondition::ConnectionTimeout, "")
                        .await);
                }
                stream.shrink();
                stream.keepalive(&edge.settings.domain, &bound.full).await?;
                pinged_at = Some(Instant::now());
            }
        }
    }
}

/// What ended a bound stream's wait. Shutdown is a delivery too: the edge
/// closes every mailbox (`Edge::close_bound_streams`), so that idle bound streams need
/// not each watch for it.
enum Wake {
    Delivery(Option<Delivery>),
    /// Bytes were read into the parser (or the read failed).
    Read(Result<(), StreamEnd>),
    /// Nothing heard from the client until the deadline.
    Silence,
}

/// Waits for whichever comes first. This is where an idle bound stream spends
/// its life, so it holds little: no read buffer (see
/// [`ClientStream::poll_fill`]) and no handler state, which only exists while
/// an event is handled.
async fn wait<S: ClientStream>(
    stream: &mut S,
    mailbox: &mut Mailbox,
    silence: Pin<&mut Sleep>,
) -> Wake {
    tokio::select! {
        biased;
        delivery = mailbox.recv() => Wake::Delivery(delivery),
        read = std::future::poll_fn(|cx| stream.poll_fill(cx)) => Wake::Read(read),
        _ = silence => Wake::Silence,
    }
}

/// One event the client sent; `Break` once the client closed its stream.
async fn handle_event<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    bound: &Bound,
    bucket: &mut TokenBucket,
    event: StreamEvent,
) -> Result<ControlFlow<()>, StreamEnd> {
    let stanza = match event {
        StreamEvent::Stanza(stanza) => stanza,
        StreamEvent::Close => {
            stream.close().await;
            return Ok(ControlFlow::Break(()));
        }
        StreamEvent::Open(_) => {
            return Err(stream
                .fail_with(StreamErrorCondition::BadFormat, "unexpected stream header")
                .await);
        }
    };
    if let Some(wait) = bucket.take() {
        tokio::time::sleep(wait).await;
    }
    // From here, not from the read: the rate limit's wait is the client's
    // own doing.
    let started = std::time::Instant::now();
    match from_client(edge, &bound.full, &stanza) {
        Inbound::Route(mut envelope) => {
            let span = stanza_span!("receive", envelope);
            traces::hop(&span, &mut envelope.trace_context);
            let sent = bound.route.send(envelope).instrument(span).await;
            edge.metrics
                .inbound
                .observe(started.elapsed().as_secs_f64());
            if sent.is_err() {
                return Err(stream
                    .fail_with(
                        StreamErrorCondition::InternalServerError,
                        "the cluster route of this stream was lost; please reconnect",
                    )
                    .await);
            }
        }
        Inbound::Answer(reply) => stream.write(&reply).await?,
        Inbound::Ignore => {}
        Inbound::Refuse(condition) => return Err(stream.fail_with(condition, "").await),
    }
    Ok(ControlFlow::Continue(()))
}

/// What becomes of one stanza from the client.
enum Inbound {
    /// Checked and stamped: on to the router.
    Route(Envelope),
    /// Answered by the edge itself.
    Answer(Bytes),
    /// An error stanza the edge refuses: errors are not answered.
    Ignore,
    /// Ends the stream with this stream error.
    Refuse(StreamErrorCondition),
}

/// One stanza from the client: checked and stamped with its full JID.
/// Synchronous, so that the bound stream's task holds no state for it across a
/// wait: only the send to the router is awaited.
fn from_client(edge: &Edge, full: &Jid, stanza: &Stanza) -> Inbound {
    if !stanza.is_stanza() {
        return Inbound::Refuse(StreamErrorCondition::UnsupportedStanzaType);
    }
    edge.metrics.stanzas_in.inc();
    // RFC 6120 §8.1.2.1: a client may only speak for itself.
    if let Some(from) = stanza.from() {
        let claimed = Jid::parse(from).ok();
        if claimed.as_ref() != Some(full) && claimed.as_ref() != Some(&full.bare()) {
            return Inbound::Refuse(StreamErrorCondition::InvalidFrom);
        }
    }
    let to = match stanza.to().map(Jid::parse) {
        None => String::new(),
        Some(Ok(to)) => to.into_string(),
        Some(Err(_)) => return answer(edge, stanza, StanzaErrorCondition::JidMalformed),
    };
    if is_legacy_session(stanza, &to, &edge.settings.domain) {
        return Inbound::Answer(iq_result(stanza, None).into());
    }
    if stanza.name() == "iq" && stanza.id().is_none_or(str::is_empty) {
        return answer(edge, stanza, StanzaErrorCondition::BadRequest);
    }
    let hints = hints::read(stanza);
    let mut payload = stanza.with_from(full.as_str());
    if hints.as_ref().is_some_and(|hints| hints.private) {
        payload = hints::without_private(payload);
    }
    Inbound::Route(Envelope {
        to,
        from: full.as_str().to_owned(),
        kind: Kind::from_element_name(stanza.name()).unwrap_or(Kind::Unspecified) as i32,
        r#type: stanza.stanza_type().unwrap_or_default().to_owned(),
        id: stanza.id().unwrap_or_default().to_owned(),
        payload,
        stage: Stage::FromClient as i32,
        trace_context: Default::default(),
        hints,
    })
}

/// RFC 3921's session IQ, still sent by some clients: nothing to do.
fn is_legacy_session(stanza: &Stanza, to: &str, domain: &str) -> bool {
    stanza.name() == "iq"
        && stanza.stanza_type() == Some("set")
        && (to.is_empty() || to == domain)
        && stanza
            .element()
            .is_ok_and(|iq| iq.get_child("session", ns::SESSION).is_some())
}

/// Answers a stanza the edge refuses, unless it is itself an error.
fn answer(edge: &Edge, stanza: &Stanza, condition: StanzaErrorCondition) -> Inbound {
    if stanza.stanza_type() == Some("error") {
        return Inbound::Ignore;
    }
    Inbound::Answer(error_reply(
        stanza,
        &StanzaError::new(condition),
        &edge.settings.domain,
    ))
}
