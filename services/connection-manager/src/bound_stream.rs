//! A bound client stream: stanzas from the client are checked, stamped and
//! sent to the router; deliveries from the cluster are written out; silence
//! is met with a ping, then a timeout. With XEP-0198 (`stream_management`)
//! both sides count and acknowledge stanzas, and a broken stream's session
//! can be resumed.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

use tokio::time::{Instant, Sleep};
use tracing::Instrument;
use xmppd_grpc::{Envelope, Kind, Stage};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition, StreamErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{Stanza, error_reply};
use xmppd_protocol::stream::StreamEvent;
use xmppd_protocol::xml::{Element, escape_attr};
use xmppd_runtime::{stanza_span, traces};

use crate::cluster::{Delivery, PinnedRoute, Receipt};
use crate::edge::Edge;
use crate::hints;
use crate::limits::TokenBucket;
use crate::listener::Open;
use crate::mailbox::Mailbox;
use crate::negotiation::iq_result;
use crate::registration;
use crate::stream::{ClientStream, StreamEnd};
use crate::stream_management::{
    self as sm, HandledCountTooHigh, REQUEST, Resumptions, StreamManagement, Takeover,
};

/// What a client is told when the server stops (RFC 6120 §4.9.3.20).
pub const SHUTDOWN_TEXT: &str = "server shutting down; please reconnect";

/// How long the old stream of a session resumed elsewhere gets to be told.
const TAKEN_OVER_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A client's session on this node: its resource, the route its stanzas
/// take, its deliveries, and its stream management. It outlives its stream
/// while it waits to be resumed, and moves to the stream that resumes it;
/// dropped, the session ends (`PinnedRoute::end`).
pub struct Bound {
    pub full: Jid,
    pub route: PinnedRoute,
    pub mailbox: Mailbox,
    /// XEP-0198, once the client enabled it.
    pub sm: Option<Box<StreamManagement>>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.route.end(&mut self.mailbox, self.sm.take());
    }
}

/// How a bound stream's serving ended without an error.
enum Finish {
    /// The client closed its stream: the session ends.
    Closed,
    /// A new stream resumed the session: it goes there.
    TakenOver(Takeover),
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
    let BoundStream {
        stream,
        bound,
        open,
    } = *bound_stream;
    drop((stream, open));
    let end = match result {
        Ok(Finish::Closed) => return,
        Ok(Finish::TakenOver(reply)) => {
            // Refused (the resuming stream gave up): the session ends.
            let _ = reply.send(bound);
            return;
        }
        Err(end) => end,
    };
    let broken = broke(&edge, end);
    let resumable = bound
        .sm
        .as_deref()
        .is_some_and(|sm| sm.id.is_some() && sm.takeover.is_some());
    if broken && resumable {
        // Boxed, as rare waits are here: it would otherwise size every
        // bound stream's task.
        Box::pin(sm::keep_for_resumption(&edge, bound)).await;
    }
}

/// Whether a stream that ended so broke (its session may be resumed) rather
/// than being closed by the server with a stream error; counted and logged.
fn broke(edge: &Edge, end: StreamEnd) -> bool {
    match end {
        StreamEnd::Error(error) => {
            edge.metrics.stream_error(error.condition.name());
            tracing::debug!(%error, "stream closed with an error");
            // The client went silent: a network that vanished, what
            // resumption is for.
            error.condition == StreamErrorCondition::ConnectionTimeout
        }
        end => {
            tracing::debug!(%end, "stream ended");
            true
        }
    }
}

async fn serve<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    bound: &mut Bound,
) -> Result<Finish, StreamEnd> {
    // A shutdown that began before this stream was bound found no mailbox
    // to tell (`Edge::close_bound_streams`).
    if edge.shutdown.is_stopping() {
        return Err(stream
            .fail_with(StreamErrorCondition::SystemShutdown, SHUTDOWN_TEXT)
            .await);
    }
    if let Some(sm) = bound.sm.as_deref_mut().filter(|sm| sm.resumed) {
        resend(stream, sm).await?;
    }
    // The settings in force when the stream was bound stay its own (a reload applies to
    // the streams bound after it).
    let settings = edge.settings();
    let mut bucket = TokenBucket::new(settings.stanzas_per_second, settings.stanza_burst);
    let mut pinged_at: Option<Instant> = None;
    // One timer for the bound stream's life, moved as the client speaks: moving
    // a deadline later leaves the timer where it is until it fires, while a
    // new one per wait would be registered and removed for every stanza.
    let silence = tokio::time::sleep(settings.ping_after);
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
                return Ok(Finish::Closed);
            }
        }
        let heard = Instant::from_std(stream.last_heard());
        if pinged_at.is_some_and(|pinged| heard > pinged) {
            pinged_at = None;
        }
        let wake = match pinged_at {
            Some(pinged) => pinged + settings.idle_timeout.saturating_sub(settings.ping_after),
            None => heard + settings.ping_after,
        };
        let ack_due = bound
            .sm
            .as_deref()
            .and_then(|sm| sm.request_due(&settings.stream_management));
        silence
            .as_mut()
            .reset(ack_due.map_or(wake, |due| due.min(wake)));
        let waited = wait(
            stream,
            &mut bound.mailbox,
            bound.sm.as_deref_mut(),
            silence.as_mut(),
        );
        match waited.await {
            Wake::Delivery(Some(Delivery::Stanza {
                payload,
                receipt,
                queued_at,
            })) => {
                edge.metrics.stanzas_out.inc();
                write_stanza(edge, stream, bound.sm.as_deref_mut(), payload, receipt).await?;
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
            Wake::TakenOver(Some(reply)) => {
                // The client resumed on a new stream before this one broke
                // for us: what was written here and not acknowledged is
                // written there again.
                let told = stream.fail_with(
                    StreamErrorCondition::Conflict,
                    "the session was resumed on another stream",
                );
                let _ = tokio::time::timeout(TAKEN_OVER_WRITE_TIMEOUT, told).await;
                return Ok(Finish::TakenOver(reply));
            }
            Wake::TakenOver(None) => {
                if let Some(sm) = bound.sm.as_deref_mut() {
                    sm.takeover = None;
                }
            }
            Wake::Silence => {
                if let Some(sm) = bound.sm.as_deref_mut()
                    && sm
                        .request_due(&settings.stream_management)
                        .is_some_and(|due| due <= Instant::now())
                {
                    sm.requested();
                    stream.write(REQUEST).await?;
                    continue;
                }
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
                match bound.sm.as_deref_mut() {
                    // An ack request, which every client with stream
                    // management answers, is not a stanza to count.
                    Some(sm) => {
                        sm.requested();
                        stream.write(REQUEST).await?;
                    }
                    None => stream.keepalive(&edge.domain, &bound.full).await?,
                }
                pinged_at = Some(Instant::now());
            }
        }
    }
}

/// A resumed session's first words: `<resumed/>` with the count of the
/// client's stanzas handled, then every stanza the client did not
/// acknowledge, in order (XEP-0198 §5).
async fn resend<S: ClientStream>(
    stream: &mut S,
    sm: &mut StreamManagement,
) -> Result<(), StreamEnd> {
    let id = sm.id.as_deref().unwrap_or_default();
    let resumed = format!(
        "<resumed xmlns='urn:xmpp:sm:3' previd='{}' h='{}'/>",
        escape_attr(id),
        sm.handled()
    );
    stream.write(resumed.as_bytes()).await?;
    for payload in sm.unacked() {
        stream.write(payload).await?;
    }
    sm.resumed = false;
    sm.requested();
    stream.write(REQUEST).await
}

/// Writes a stanza to the client. Without stream management its delivery
/// is settled once written (a write that fails drops the receipt, which
/// returns it); with it, the stanza and its receipt are kept until the client
/// acknowledges them: kept before it is written, so that a write that fails
/// loses nothing.
async fn write_stanza<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    sm: Option<&mut StreamManagement>,
    payload: Bytes,
    receipt: Receipt,
) -> Result<(), StreamEnd> {
    let Some(sm) = sm else {
        stream.write(&payload).await?;
        receipt.delivered();
        return Ok(());
    };
    let ask = sm.sent(payload.clone(), receipt, &edge.settings().stream_management);
    stream.write(&payload).await?;
    if sm.over_limit() {
        return Err(stream
            .fail_with(
                StreamErrorCondition::ResourceConstraint,
                "too many stanzas not acknowledged by this client",
            )
            .await);
    }
    if ask {
        sm.requested();
        stream.write(REQUEST).await?;
    }
    Ok(())
}

/// What ended a bound stream's wait. Shutdown is a delivery too: the edge
/// closes every mailbox (`Edge::close_bound_streams`), so that idle bound streams need
/// not each watch for it.
enum Wake {
    Delivery(Option<Delivery>),
    /// Bytes were read into the parser (or the read failed).
    Read(Result<(), StreamEnd>),
    /// A new stream resumed the session (or, `None`, can no longer).
    TakenOver(Option<Takeover>),
    /// Nothing heard from the client until the deadline, or an ack is due.
    Silence,
}

/// Waits for whichever comes first. This is where an idle bound stream spends
/// its life, so it holds little: no read buffer (see
/// [`ClientStream::poll_fill`]) and no handler state, which only exists while
/// an event is handled.
async fn wait<S: ClientStream>(
    stream: &mut S,
    mailbox: &mut Mailbox,
    mut sm: Option<&mut StreamManagement>,
    silence: Pin<&mut Sleep>,
) -> Wake {
    let taken_over =
        std::future::poll_fn(
            |cx| match sm.as_deref_mut().and_then(|sm| sm.takeover.as_mut()) {
                Some(takeover) => Pin::new(takeover).poll(cx).map(Result::ok),
                None => Poll::Pending,
            },
        );
    tokio::select! {
        biased;
        delivery = mailbox.recv() => Wake::Delivery(delivery),
        read = std::future::poll_fn(|cx| stream.poll_fill(cx)) => Wake::Read(read),
        taken = taken_over => Wake::TakenOver(taken),
        _ = silence => Wake::Silence,
    }
}

/// One event the client sent; `Break` once the client closed its stream.
async fn handle_event<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    bound: &mut Bound,
    bucket: &mut TokenBucket,
    event: StreamEvent,
) -> Result<ControlFlow<()>, StreamEnd> {
    let stanza = match event {
        StreamEvent::Stanza(stanza)
            if stanza.namespace() == ns::SM && edge.settings().stream_management.enabled =>
        {
            stream_management(edge, stream, bound, &stanza).await?;
            return Ok(ControlFlow::Continue(()));
        }
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
        Inbound::Answer(reply) => {
            write_stanza(edge, stream, bound.sm.as_deref_mut(), reply, Receipt::NONE).await?
        }
        Inbound::ChangePassword => {
            let reply = registration::change_password(edge, &bound.full, &stanza).await;
            write_stanza(edge, stream, bound.sm.as_deref_mut(), reply, Receipt::NONE).await?
        }
        Inbound::Ignore => {}
        Inbound::Refuse(condition) => return Err(stream.fail_with(condition, "").await),
    }
    if let Some(sm) = bound.sm.as_deref_mut() {
        sm.handled_one();
    }
    Ok(ControlFlow::Continue(()))
}

/// A XEP-0198 element from the client.
async fn stream_management<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    bound: &mut Bound,
    element: &Stanza,
) -> Result<(), StreamEnd> {
    match (element.name(), bound.sm.as_deref_mut()) {
        ("r", Some(sm)) => stream.write(sm.ack().as_bytes()).await,
        ("a", Some(sm)) => {
            let h = element
                .element()
                .ok()
                .and_then(|a| attribute::<u32>(&a, "h"));
            let Some(h) = h else {
                return Err(stream
                    .fail_with(StreamErrorCondition::BadFormat, "an ack needs a count")
                    .await);
            };
            match sm.acknowledge(h) {
                Ok(()) => Ok(()),
                Err(too_high) => Err(fail_too_high(stream, too_high).await),
            }
        }
        ("enable", None) => enable(edge, stream, bound, element).await,
        ("enable", Some(_)) => stream.write(&sm_failed("unexpected-request")).await,
        _ => Err(stream
            .fail_with(StreamErrorCondition::UnsupportedStanzaType, "")
            .await),
    }
}

/// `<enable/>` (XEP-0198 §3), with `resume` a session this node keeps for
/// the client to resume if the stream breaks.
async fn enable<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    bound: &mut Bound,
    element: &Stanza,
) -> Result<(), StreamEnd> {
    let settings = &edge.settings().stream_management;
    let request = element.element().ok();
    let resume = request
        .as_ref()
        .and_then(|enable| enable.get_attr("resume"))
        .is_some_and(|resume| resume == "true" || resume == "1");
    let max = request
        .as_ref()
        .and_then(|enable| attribute::<u64>(enable, "max"));
    let timeout = settings.resume_timeout(max);
    edge.metrics.stream_management("enabled");
    if !resume {
        bound.sm = Some(Box::new(StreamManagement::new(None, timeout)));
        return stream.write(b"<enabled xmlns='urn:xmpp:sm:3'/>").await;
    }
    edge.metrics.stream_management("resumable");
    let id = Resumptions::new_id(&edge.cluster.node().id);
    let mut sm = StreamManagement::new(Some(id.clone()), timeout);
    sm.takeover = Some(
        edge.cluster
            .resumptions()
            .register(&id, bound.full.bare().as_str()),
    );
    bound.sm = Some(Box::new(sm));
    let enabled = format!(
        "<enabled xmlns='urn:xmpp:sm:3' id='{}' resume='true' max='{}'/>",
        escape_attr(&id),
        timeout.as_secs()
    );
    stream.write(enabled.as_bytes()).await
}

/// An unsigned attribute of a XEP-0198 element.
pub(crate) fn attribute<T: std::str::FromStr>(element: &Element, name: &str) -> Option<T> {
    element.get_attr(name)?.parse().ok()
}

/// `<failed/>` with a stanza error condition (XEP-0198 §3, §5).
pub(crate) fn sm_failed(condition: &str) -> Vec<u8> {
    format!(
        "<failed xmlns='urn:xmpp:sm:3'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
    .into_bytes()
}

pub(crate) async fn fail_too_high<S: ClientStream>(
    stream: &mut S,
    too_high: HandledCountTooHigh,
) -> StreamEnd {
    stream.fail(too_high.stream_error()).await
}

/// What becomes of one stanza from the client.
enum Inbound {
    /// Checked and stamped: on to the router.
    Route(Envelope),
    /// Answered by the edge itself.
    Answer(Bytes),
    /// A XEP-0077 password change, answered by the edge after a wait.
    ChangePassword,
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
    if is_legacy_session(stanza, &to, &edge.domain) {
        return Inbound::Answer(iq_result(stanza, None).into());
    }
    if stanza.name() == "iq" && stanza.id().is_none_or(str::is_empty) {
        return answer(edge, stanza, StanzaErrorCondition::BadRequest);
    }
    if stanza.name() == "presence" && stanza.raw().len() > edge.settings().max_presence_bytes {
        return answer(edge, stanza, StanzaErrorCondition::PolicyViolation);
    }
    if registration::is_password_change(stanza, &to, full, &edge.settings().domain) {
        return Inbound::ChangePassword;
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
        &edge.domain,
    ))
}
