//! A bound client stream: stanzas from the client are checked, stamped and
//! sent to the router; deliveries from the cluster are written out; silence
//! is met with a ping, then a timeout.

use std::sync::Arc;

use bytes::Bytes;

use tokio::time::Instant;
use xmppd_grpc::{Envelope, Kind, Stage};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition, StreamErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{Stanza, error_reply};
use xmppd_protocol::stream::StreamEvent;

use crate::cluster::{Delivery, SessionRoute};
use crate::edge::Edge;
use crate::limits::TokenBucket;
use crate::mailbox::Mailbox;
use crate::negotiation::iq_result;
use crate::stream::{StreamEnd, XmppStream};

pub struct Bound {
    pub full: Jid,
    pub route: SessionRoute,
    pub mailbox: Mailbox,
}

pub async fn run(edge: &Arc<Edge>, mut stream: Box<XmppStream>, bound: Bound) {
    edge.metrics.sessions.inc();
    let result = serve(edge, &mut stream, bound).await;
    edge.metrics.sessions.dec();
    match result {
        Err(StreamEnd::Error(error)) => {
            edge.metrics.stream_error(error.condition.name());
            tracing::debug!(%error, "stream closed with an error");
        }
        Err(end) => tracing::debug!(%end, "stream ended"),
        Ok(()) => {}
    }
}

async fn serve(edge: &Arc<Edge>, stream: &mut XmppStream, bound: Bound) -> Result<(), StreamEnd> {
    let Bound {
        full,
        route,
        mut mailbox,
    } = bound;
    let mut shutdown = edge.shutdown.clone();
    let mut bucket = TokenBucket::new(edge.settings.stanzas_per_second, edge.settings.stanza_burst);
    let mut pinged_at: Option<Instant> = None;
    loop {
        let heard = Instant::from_std(stream.last_heard);
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
        tokio::select! {
            biased;
            _ = shutdown.wait() => {
                return Err(stream.fail_with(StreamErrorCondition::SystemShutdown, "server shutting down; please reconnect").await);
            }
            delivery = mailbox.recv() => match delivery {
                Some(Delivery::Stanza(payload)) => {
                    edge.metrics.stanzas_out.inc();
                    stream.write(&payload).await?;
                }
                Some(Delivery::Close { condition, text }) => {
                    return Err(stream.fail_with(condition, &text).await);
                }
                None => return Err(stream.fail_with(StreamErrorCondition::InternalServerError, "").await),
            },
            event = stream.next_event() => match event? {
                StreamEvent::Stanza(stanza) => {
                    if let Some(wait) = bucket.take() {
                        tokio::time::sleep(wait).await;
                    }
                    match from_client(edge, &full, &stanza) {
                        Inbound::Route(envelope) => {
                            if route.send(envelope).await.is_err() {
                                return Err(stream.fail_with(StreamErrorCondition::InternalServerError, "the cluster route of this stream was lost; please reconnect").await);
                            }
                        }
                        Inbound::Answer(reply) => stream.write(&reply).await?,
                        Inbound::Ignore => {}
                        Inbound::Refuse(condition) => return Err(stream.fail_with(condition, "").await),
                    }
                }
                StreamEvent::Close => {
                    stream.close().await;
                    return Ok(());
                }
                StreamEvent::Open(_) => {
                    return Err(stream.fail_with(StreamErrorCondition::BadFormat, "unexpected stream header").await);
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                // Whitespace keepalives are read without yielding an event,
                // so the client may have spoken since `wake` was computed.
                if Instant::from_std(stream.last_heard) > heard {
                    continue;
                }
                if pinged_at.is_some() {
                    return Err(stream.fail_with(StreamErrorCondition::ConnectionTimeout, "").await);
                }
                stream.shrink();
                ping(edge, stream, &full).await?;
                pinged_at = Some(Instant::now());
            }
        }
    }
}

/// XEP-0199: the server checks that a silent client is still there.
async fn ping(edge: &Edge, stream: &mut XmppStream, full: &Jid) -> Result<(), StreamEnd> {
    let ping = format!(
        "<iq type='get' id='keepalive' from='{}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
        edge.settings.domain,
        xmppd_protocol::xml::escape_attr(full.as_str())
    );
    stream.write(ping.as_bytes()).await
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
/// Synchronous, so that the session's task holds no state for it across a
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
        Some(Ok(to)) => to.to_string(),
        Some(Err(_)) => return answer(edge, stanza, StanzaErrorCondition::JidMalformed),
    };
    if is_legacy_session(stanza, &to, &edge.settings.domain) {
        return Inbound::Answer(iq_result(stanza, None).into());
    }
    if stanza.name() == "iq" && stanza.id().is_none_or(str::is_empty) {
        return answer(edge, stanza, StanzaErrorCondition::BadRequest);
    }
    Inbound::Route(Envelope {
        to,
        from: full.to_string(),
        kind: Kind::from_element_name(stanza.name()).unwrap_or(Kind::Unspecified) as i32,
        r#type: stanza.stanza_type().unwrap_or_default().to_string(),
        id: stanza.id().unwrap_or_default().to_string(),
        payload: stanza.with_from(full.as_str()),
        stage: Stage::FromClient as i32,
        trace_context: Default::default(),
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
