//! Stream negotiation up to a bound resource (RFC 6120 §4-§7): stream
//! headers, STARTTLS, SASL (and XEP-0077 registration before it), then
//! resource binding. Anything else a client sends before it is bound ends
//! the stream with `<not-authorized/>`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;
use xmppd_grpc::Origin;
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition, StreamErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{Stanza, error_reply};
use xmppd_protocol::stream::{StreamEvent, StreamHeader};
use xmppd_protocol::xml::{Element, escape_text};
use xmppd_runtime::traced_span;

use crate::auth::{self, Outcome};
use crate::bound_stream::{Bound, attribute, fail_too_high, sm_failed};
use crate::edge::Edge;
use crate::limits::client_network;
use crate::registration;
use crate::stream::{ClientStream, StreamEnd};

/// Failed SASL attempts allowed on one stream (RFC 6120 §6.4.5 asks for
/// between 2 and 5).
const MAX_AUTH_ATTEMPTS: u32 = 5;

/// Takes one client connection from its first byte to a bound resource;
/// `None` if its stream ended before.
pub async fn serve<S: ClientStream>(
    edge: &Arc<Edge>,
    stream: S,
    peer: SocketAddr,
) -> Option<(S, Bound)> {
    let started = Instant::now();
    let deadline = started + edge.settings().negotiation_timeout;
    // Boxed, so that its large state (SASL, registration, binding) does not
    // size the connection's task. One trace per login: its calls to the
    // session replicas are children of this span.
    let login = traced_span!(parent: None, "login");
    match Box::pin(negotiate(edge, stream, peer, deadline).instrument(login)).await {
        Ok(negotiated) => {
            edge.metrics
                .login
                .total
                .observe(started.elapsed().as_secs_f64());
            return Some(negotiated);
        }
        Err(StreamEnd::Error(error)) => {
            edge.metrics.stream_error(error.condition.name());
            tracing::debug!(%peer, %error, "stream failed during negotiation");
        }
        Err(end) => tracing::debug!(%peer, %end, "stream ended during negotiation"),
    }
    None
}

/// Reads the next event, or fails the stream with `connection-timeout`
/// once the negotiation deadline has passed.
async fn next_event<S: ClientStream>(
    stream: &mut S,
    deadline: Instant,
) -> Result<StreamEvent, StreamEnd> {
    match tokio::time::timeout_at(deadline, stream.next_event()).await {
        Ok(event) => event,
        Err(_) => Err(stream
            .fail_with(
                StreamErrorCondition::ConnectionTimeout,
                "negotiation took too long",
            )
            .await),
    }
}

async fn negotiate<S: ClientStream>(
    edge: &Arc<Edge>,
    mut stream: S,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<(S, Bound), StreamEnd> {
    let mut failed_attempts = 0;
    let mut user: Option<Jid> = None;
    loop {
        open_stream(edge, &mut stream, deadline).await?;
        let Some(account) = &user else {
            match authenticate(edge, &mut stream, peer, deadline, &mut failed_attempts).await? {
                Step::StartTls => {
                    // The handshake counts against the negotiation's
                    // deadline too. Past it, the connection just closes: no
                    // stream error can be sent in the middle of a handshake
                    // (RFC 6120 §5.4.3.2).
                    let acceptor = edge.tls.acceptor();
                    let handshake = stream.start_tls(&acceptor);
                    stream = tokio::time::timeout_at(deadline, handshake)
                        .await
                        .map_err(|_| StreamEnd::Closed)??;
                }
                Step::Authenticated(jid) => {
                    stream.restart();
                    user = Some(jid);
                }
            }
            continue;
        };
        let bound = bind(edge, &mut stream, account, peer, deadline).await?;
        return Ok((stream, bound));
    }
}

/// Reads the client's stream header and answers it (RFC 6120 §4.2, §4.7).
async fn open_stream<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    deadline: Instant,
) -> Result<StreamHeader, StreamEnd> {
    let header = match next_event(stream, deadline).await? {
        StreamEvent::Open(header) => header,
        _ => {
            return Err(stream
                .fail_with(StreamErrorCondition::BadFormat, "expected a stream header")
                .await);
        }
    };
    let to_us = header
        .to
        .as_deref()
        .and_then(|to| Jid::parse(to).ok())
        .is_some_and(|to| to.as_str() == edge.domain);
    if !to_us {
        return Err(stream
            .fail_with(StreamErrorCondition::HostUnknown, "")
            .await);
    }
    if header.version.as_deref() != Some("1.0") {
        let major = header
            .version
            .as_deref()
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
        if major != Some(1) {
            return Err(stream
                .fail_with(StreamErrorCondition::UnsupportedVersion, "")
                .await);
        }
    }
    if header.default_ns != ns::CLIENT {
        return Err(stream
            .fail_with(StreamErrorCondition::InvalidNamespace, "")
            .await);
    }
    stream.open(&edge.domain, &header);
    Ok(header)
}

/// The next top-level element of a negotiated stream; the client closing
/// the stream ends negotiation, a second header is a format error.
async fn next_stanza<S: ClientStream>(
    stream: &mut S,
    deadline: Instant,
) -> Result<Stanza, StreamEnd> {
    match next_event(stream, deadline).await? {
        StreamEvent::Stanza(stanza) => Ok(stanza),
        StreamEvent::Close => {
            stream.close().await;
            Err(StreamEnd::Closed)
        }
        StreamEvent::Open(_) => Err(stream
            .fail_with(StreamErrorCondition::BadFormat, "unexpected stream header")
            .await),
    }
}

enum Step {
    StartTls,
    Authenticated(Jid),
}

/// The pre-authentication stream: STARTTLS, SASL, registration.
async fn authenticate<S: ClientStream>(
    edge: &Arc<Edge>,
    stream: &mut S,
    peer: SocketAddr,
    deadline: Instant,
    failed_attempts: &mut u32,
) -> Result<Step, StreamEnd> {
    let secure = stream.is_secure();
    let start_tls = stream.can_start_tls();
    let may_authenticate = secure || !edge.settings().require_tls;
    let bindings = stream
        .tls_connection()
        .map(|connection| edge.tls.channel_bindings(connection))
        .unwrap_or_default();
    let mechanisms = auth::offered(&edge.settings(), secure, !bindings.is_empty());
    let features = features_before_auth(edge, start_tls, may_authenticate, &mechanisms, &bindings);
    stream.write(features.as_bytes()).await?;
    loop {
        let stanza = next_stanza(stream, deadline).await?;
        match (stanza.namespace(), stanza.name()) {
            (ns::TLS, "starttls") if start_tls => {
                stream
                    .write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                    .await?;
                return Ok(Step::StartTls);
            }
            (ns::SASL, "auth") if may_authenticate => {
                match auth::authenticate(
                    edge,
                    stream,
                    &stanza,
                    client_network(peer.ip()),
                    &mechanisms,
                    bindings.clone(),
                    deadline,
                )
                .await?
                {
                    Outcome::Authenticated(jid) => return Ok(Step::Authenticated(jid)),
                    Outcome::Failed => {
                        *failed_attempts += 1;
                        if *failed_attempts >= MAX_AUTH_ATTEMPTS {
                            return Err(stream
                                .fail_with(
                                    StreamErrorCondition::PolicyViolation,
                                    "too many failed authentication attempts",
                                )
                                .await);
                        }
                    }
                }
            }
            (ns::SASL, "abort") => {
                stream
                    .write(
                        b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>",
                    )
                    .await?;
            }
            (ns::CLIENT, "iq") if may_authenticate && registration::is_registration(&stanza) => {
                registration::handle(edge, stream, &stanza, client_network(peer.ip())).await?;
            }
            _ if !secure && edge.settings().require_tls => {
                let text = if start_tls {
                    "STARTTLS is required first"
                } else {
                    "this server requires TLS"
                };
                return Err(stream
                    .fail_with(StreamErrorCondition::PolicyViolation, text)
                    .await);
            }
            _ => {
                return Err(stream
                    .fail_with(StreamErrorCondition::NotAuthorized, "")
                    .await);
            }
        }
    }
}

fn features_before_auth(
    edge: &Edge,
    start_tls: bool,
    may_authenticate: bool,
    mechanisms: &[xmppd_sasl::Mechanism],
    bindings: &[xmppd_sasl::ChannelBinding],
) -> String {
    let mut features = String::from("<stream:features>");
    if start_tls {
        features.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
        if edge.settings().require_tls {
            features.push_str("<required/>");
        }
        features.push_str("</starttls>");
    }
    if may_authenticate {
        features.push_str("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
        for mechanism in mechanisms {
            features.push_str(&format!("<mechanism>{}</mechanism>", mechanism.name()));
        }
        features.push_str("</mechanisms>");
        // XEP-0440: which channel bindings this connection supports.
        if !bindings.is_empty() {
            features.push_str("<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>");
            for binding in bindings {
                features.push_str(&format!(
                    "<channel-binding type='{}'/>",
                    binding.kind.name()
                ));
            }
            features.push_str("</sasl-channel-binding>");
        }
        if edge.settings().registration {
            features.push_str("<register xmlns='http://jabber.org/features/iq-register'/>");
        }
    }
    features.push_str("</stream:features>");
    features
}

/// Resource binding (RFC 6120 §7), or the resumption of a session
/// (XEP-0198 §5) instead; the legacy session IQ is answered too.
async fn bind<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    account: &Jid,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<Bound, StreamEnd> {
    let sm_enabled = edge.settings().stream_management.enabled;
    let features = format!(
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
         <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>\
         <ver xmlns='urn:xmpp:features:rosterver'/>{}</stream:features>",
        if sm_enabled {
            "<sm xmlns='urn:xmpp:sm:3'/>"
        } else {
            ""
        }
    );
    stream.write(features.as_bytes()).await?;
    loop {
        let stanza = next_stanza(stream, deadline).await?;
        if sm_enabled && stanza.namespace() == ns::SM {
            match stanza.name() {
                // XEP-0198 §3: only a bound resource's stream can enable it.
                "enable" => {
                    stream.write(&sm_failed("unexpected-request")).await?;
                    continue;
                }
                "resume" => {
                    if let Some(bound) = resume(edge, stream, account, &stanza).await? {
                        return Ok(bound);
                    }
                    continue;
                }
                _ => {}
            }
        }
        let request = (stanza.name() == "iq" && stanza.stanza_type() == Some("set"))
            .then(|| stanza.element().ok())
            .flatten();
        let Some(iq) = request else {
            return Err(stream
                .fail_with(StreamErrorCondition::NotAuthorized, "bind a resource first")
                .await);
        };
        if iq.get_child("session", ns::SESSION).is_some() {
            stream.write(&iq_result(&stanza, None)).await?;
            continue;
        }
        let Some(request) = iq.get_child("bind", ns::BIND) else {
            return Err(stream
                .fail_with(StreamErrorCondition::NotAuthorized, "bind a resource first")
                .await);
        };
        let resource = request
            .get_child("resource", ns::BIND)
            .map(Element::text_content)
            .filter(|resource| !resource.is_empty());
        if let Some(resource) = &resource
            && account.with_resource(resource).is_err()
        {
            stream
                .write(&error_reply(
                    &stanza,
                    &StanzaError::new(StanzaErrorCondition::BadRequest),
                    &edge.domain,
                ))
                .await?;
            continue;
        }
        let started = std::time::Instant::now();
        let bound = edge
            .cluster
            .bind(account.as_str(), resource.as_deref(), origin::<S>(peer))
            .await;
        edge.metrics
            .login
            .bind
            .observe(started.elapsed().as_secs_f64());
        match bound {
            Ok(Ok((route, mailbox))) => {
                let full =
                    Jid::parse(&route.full_jid).expect("the session service returns a valid JID");
                let answer = format!(
                    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{}</jid></bind>",
                    escape_text(full.as_str())
                );
                // Made before the answer is written: if that fails, its
                // drop ends the session.
                let bound = Bound {
                    full,
                    route,
                    mailbox,
                    sm: None,
                };
                stream.write(&iq_result(&stanza, Some(&answer))).await?;
                return Ok(bound);
            }
            Ok(Err(condition)) => {
                let condition = StanzaErrorCondition::from_name(&condition)
                    .unwrap_or(StanzaErrorCondition::InternalServerError);
                stream
                    .write(&error_reply(
                        &stanza,
                        &StanzaError::new(condition),
                        &edge.domain,
                    ))
                    .await?;
            }
            Err(error) => {
                tracing::warn!(%error, "bind failed");
                let error = StanzaError::new(StanzaErrorCondition::InternalServerError);
                stream
                    .write(&error_reply(&stanza, &error, &edge.domain))
                    .await?;
            }
        }
    }
}

/// `<resume previd h/>` (XEP-0198 §5): the session `previd` of this account,
/// taken over from the task holding it, with what its client acknowledges
/// in `h` let go; the bound stream writes `<resumed/>` and the rest. `None`
/// (after `<failed/>`) when there is no such session: the client may bind.
async fn resume<S: ClientStream>(
    edge: &Edge,
    stream: &mut S,
    account: &Jid,
    stanza: &Stanza,
) -> Result<Option<Bound>, StreamEnd> {
    let request = stanza.element().ok();
    let previd = request
        .as_ref()
        .and_then(|resume| resume.get_attr("previd"));
    let h = request
        .as_ref()
        .and_then(|resume| attribute::<u32>(resume, "h"));
    let (Some(previd), Some(h)) = (previd, h) else {
        stream.write(&sm_failed("bad-request")).await?;
        return Ok(None);
    };
    let resumptions = edge.cluster.resumptions();
    let Some(mut bound) = resumptions.take(previd, account.as_str()).await else {
        edge.metrics.stream_management("resume_failed");
        stream.write(&sm_failed("item-not-found")).await?;
        return Ok(None);
    };
    let sm = bound
        .sm
        .as_deref_mut()
        .expect("a resumable session has stream management");
    if let Err(too_high) = sm.acknowledge(h) {
        return Err(fail_too_high(stream, too_high).await);
    }
    sm.takeover = Some(resumptions.register(previd, account.as_str()));
    sm.resumed = true;
    edge.metrics.stream_management("resumed");
    Ok(Some(bound))
}

/// `<iq type='result'/>` answering `request`, with an optional payload.
pub fn iq_result(request: &Stanza, payload: Option<&str>) -> Vec<u8> {
    let mut out = String::from("<iq type='result'");
    if let Some(id) = request.id() {
        out.push_str(&format!(" id='{}'", xmppd_protocol::xml::escape_attr(id)));
    }
    match payload {
        Some(payload) => {
            out.push('>');
            out.push_str(payload);
            out.push_str("</iq>");
        }
        None => out.push_str("/>"),
    }
    out.into_bytes()
}

/// What administrators see of where a bound stream comes from.
fn origin<S: ClientStream>(peer: SocketAddr) -> Origin {
    Origin {
        transport: S::TRANSPORT.to_string(),
        address: peer.ip().to_string(),
    }
}
