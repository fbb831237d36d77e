//! One simulated client: a real XMPP c2s stream over any [`transport`](crate::transport)
//! (TCP with STARTTLS or direct TLS (XEP-0368), or WebSocket), SASL, resource binding, the
//! legacy session IQ when a server still requires it, and in-band registration (XEP-0077).
//!
//! Incoming bytes go through `xmppd-protocol`'s incremental parser, which splits each stanza
//! off one buffer and reads only its start tag; the few stanzas the tool must look inside
//! (stream features, SASL, roster and MUC set-up) get a DOM, messages never do.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::ClientConfig;
use xmppd_protocol::xml::escape_text;
use xmppd_protocol::{Element, Stanza, StreamEvent};

use crate::sasl::{Mechanism, SaslClientError, ScramClient, plain_response};
use crate::transport::{Framing, Transport, Wire};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// How the stream is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP, upgraded with STARTTLS (RFC 6120 §5).
    Starttls,
    /// TLS from the first byte (XEP-0368), usually on port 5223.
    Direct,
    /// Plain TCP throughout; fails if the server requires STARTTLS.
    Plain,
}

/// Where and how every simulated client connects.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The target's addresses, tried in order by each connect:
    /// [`resolve_target`](crate::transport::resolve_target).
    pub addrs: Arc<[SocketAddr]>,
    pub framing: Framing,
    pub domain: String,
    /// For a WebSocket, what its URL says: `Direct` for `wss://`, `Plain` for `ws://`.
    pub tls: TlsMode,
    /// `None`: the strongest mechanism the server offers.
    pub mechanism: Option<Mechanism>,
    pub resource: String,
    /// Limit for each negotiation step (a reply the client waits for).
    pub step_timeout: Duration,
    /// Shared by every simulated client: [`client_tls_config`].
    pub tls_config: Arc<ClientConfig>,
}

/// The TLS of the simulated clients: any certificate is accepted (the tool measures the
/// server, not its certificate chain), and no session is ever resumed. Each simulated user is a device connecting afresh; with
/// rustls' default cache, one per server name for the whole process, each login would resume
/// some other user's session and skip the certificate, its signature and (for TLS 1.2) the key
/// exchange, a cost every server pays in full for a storm of new clients. It would also make
/// servers incomparable: with the default cache, two thirds of the logins to xmppd resumed
/// while it still issued tickets, none to ejabberd or Prosody.
///
/// ALPN names what runs inside: XEP-0368's `xmpp-client` for an XMPP stream, HTTP/1.1 for a
/// WebSocket, whose server would refuse the handshake for an unknown protocol.
pub fn client_tls_config(framing: &Framing) -> Arc<ClientConfig> {
    let mut config = Arc::unwrap_or_clone(xmppd_tls::insecure_client_config());
    config.resumption = rustls::client::Resumption::disabled();
    if let Framing::WebSocket(_) = framing {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Arc::new(config)
}

/// Why a client failed; [`XmppError::kind`] names it for the error counts of a report.
#[derive(Debug, thiserror::Error)]
pub enum XmppError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("tls: {0}")]
    Tls(io::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("stream error: {0}")]
    Stream(String),
    #[error("server closed the stream")]
    Closed,
    #[error("{detail}")]
    WebSocket {
        condition: &'static str,
        detail: String,
    },
    #[error("malformed xml from server: {0}")]
    Xml(String),
    #[error("{0}")]
    Negotiation(&'static str),
    #[error("sasl failure: {0}")]
    Sasl(String),
    #[error("sasl: {0}")]
    SaslClient(#[from] SaslClientError),
    #[error("{step} failed: {condition}")]
    Iq {
        step: &'static str,
        condition: String,
    },
}

impl XmppError {
    /// A short, bounded label: the variant plus the protocol's condition name.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect(e) => format!("connect:{:?}", e.kind()),
            Self::Tls(_) => "tls".into(),
            Self::Io(e) => format!("io:{:?}", e.kind()),
            Self::Timeout(step) => format!("timeout:{step}"),
            Self::Stream(condition) => format!("stream-error:{condition}"),
            Self::Closed => "stream-closed".into(),
            Self::WebSocket { condition, .. } => format!("websocket:{condition}"),
            Self::Xml(_) => "xml".into(),
            Self::Negotiation(what) => format!("negotiation:{what}"),
            Self::Sasl(condition) => format!("sasl:{condition}"),
            Self::SaslClient(_) => "sasl:client-check".into(),
            Self::Iq { step, condition } => format!("{step}:{condition}"),
        }
    }
}

/// The parts of `<stream:features/>` the client acts on.
#[derive(Debug, Default)]
struct Features {
    starttls: bool,
    starttls_required: bool,
    mechanisms: Vec<String>,
    bind: bool,
    /// RFC 3921 session establishment that the server marks mandatory.
    session_required: bool,
}

impl Features {
    fn parse(features: &Element) -> Self {
        let starttls = features.get_child("starttls", NS_TLS);
        let session = features.get_child("session", NS_SESSION);
        Self {
            starttls: starttls.is_some(),
            starttls_required: starttls.is_some_and(|s| s.get_child("required", NS_TLS).is_some()),
            mechanisms: features
                .get_child("mechanisms", NS_SASL)
                .map(|m| m.children().map(|c| c.text_content()).collect())
                .unwrap_or_default(),
            bind: features.get_child("bind", NS_BIND).is_some(),
            session_required: session
                .is_some_and(|s| s.get_child("optional", NS_SESSION).is_none()),
        }
    }
}

/// Result of an in-band registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    Created,
    /// The account was there already (`conflict`): done, for a resumable provisioning.
    Existed,
}

/// An open c2s stream.
pub struct Connection {
    wire: Wire,
    step_timeout: Duration,
    /// The full JID the server bound, once logged in.
    pub jid: String,
}

impl Connection {
    /// Connects, secures the stream as asked and reads the first usable stream features.
    async fn open(opts: &ConnectOptions) -> Result<(Self, Features), XmppError> {
        let mut conn = Self {
            wire: Wire::connect(opts).await?,
            step_timeout: opts.step_timeout,
            jid: String::new(),
        };
        let features = conn.restart(&opts.domain).await?;
        match opts.tls {
            TlsMode::Starttls if !features.starttls => {
                Err(XmppError::Negotiation("starttls-not-offered"))
            }
            TlsMode::Starttls => conn.starttls(opts).await,
            TlsMode::Plain if features.starttls_required => {
                Err(XmppError::Negotiation("server-requires-tls"))
            }
            TlsMode::Plain | TlsMode::Direct => Ok((conn, features)),
        }
    }

    async fn starttls(mut self, opts: &ConnectOptions) -> Result<(Self, Features), XmppError> {
        self.send(format!("<starttls xmlns='{NS_TLS}'/>").as_bytes())
            .await?;
        let reply = self.next_stanza_timed("starttls").await?;
        if reply.name() != "proceed" {
            return Err(XmppError::Negotiation("starttls-refused"));
        }
        self.wire = self.wire.starttls(opts).await?;
        let features = self.restart(&opts.domain).await?;
        Ok((self, features))
    }

    /// Opens a new stream (at start, after TLS, after SASL) and returns its features.
    async fn restart(&mut self, domain: &str) -> Result<Features, XmppError> {
        self.wire.open_stream(domain).await?;
        let features = self.next_stanza_timed("stream-features").await?;
        if features.name() != "features" {
            return Err(XmppError::Negotiation("expected-features"));
        }
        Ok(Features::parse(&dom(&features)?))
    }

    /// Creates `username` by in-band registration (XEP-0077) before authentication.
    pub async fn register(
        opts: &ConnectOptions,
        username: &str,
        password: &str,
    ) -> Result<Registered, XmppError> {
        let (mut conn, _) = Self::open(opts).await?;
        let iq = format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{}</username><password>{}</password></query></iq>",
            escape_text(username),
            escape_text(password)
        );
        let outcome = match conn.iq("register", &iq).await {
            Ok(_) => Ok(Registered::Created),
            Err(XmppError::Iq { condition, .. }) if condition == "conflict" => {
                Ok(Registered::Existed)
            }
            Err(e) => Err(e),
        };
        conn.close().await;
        outcome
    }

    /// Connects and logs in: TLS as configured, SASL, bind, and the session IQ if required.
    pub async fn login(
        opts: &ConnectOptions,
        username: &str,
        password: &str,
    ) -> Result<Self, XmppError> {
        let (mut conn, features) = Self::open(opts).await?;
        let offered = features.mechanisms.iter().map(String::as_str);
        let mechanism = match opts.mechanism {
            Some(m) if offered.clone().any(|o| o == m.name()) => m,
            Some(_) => return Err(XmppError::Negotiation("mechanism-not-offered")),
            None => Mechanism::best_of(offered).ok_or(XmppError::Negotiation("no-mechanism"))?,
        };
        conn.authenticate(mechanism, username, password).await?;
        let features = conn.restart(&opts.domain).await?;
        if !features.bind {
            return Err(XmppError::Negotiation("bind-not-offered"));
        }
        let bind = format!(
            "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
            escape_text(&opts.resource)
        );
        let reply = dom(&conn.iq("bind", &bind).await?)?;
        conn.jid = reply
            .get_child("bind", NS_BIND)
            .and_then(|b| b.children().find(|c| c.name() == "jid"))
            .map(|j| j.text_content())
            .ok_or(XmppError::Negotiation("bind-without-jid"))?;
        if features.session_required {
            let session = format!("<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>");
            conn.iq("session", &session).await?;
        }
        Ok(conn)
    }

    async fn authenticate(
        &mut self,
        mechanism: Mechanism,
        username: &str,
        password: &str,
    ) -> Result<(), XmppError> {
        if mechanism == Mechanism::Plain {
            self.send_auth(mechanism, &plain_response(username, password))
                .await?;
            return self.sasl_reply().await.map(drop);
        }
        let client = ScramClient::new(mechanism, username, password);
        self.send_auth(mechanism, &client.client_first()).await?;
        let challenge = self
            .sasl_reply()
            .await?
            .ok_or(XmppError::Negotiation("scram-success-too-early"))?;
        let first = client.server_first(&challenge)?;
        let fin = if first.needs_pbkdf2() {
            // PBKDF2 takes milliseconds: keep it off the thread that drives the sessions.
            tokio::task::spawn_blocking(move || first.finish())
                .await
                .map_err(|_| XmppError::Negotiation("scram-task-panicked"))?
        } else {
            first.finish()
        };
        let response = format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(&fin.message)
        );
        self.send(response.as_bytes()).await?;
        // The server-final message comes in <success/>, or in one more challenge.
        let server_final = match self.sasl_reply().await? {
            Some(data) => data,
            None => return Err(XmppError::Negotiation("scram-empty-success")),
        };
        fin.verify(&server_final)?;
        Ok(())
    }

    async fn send_auth(&mut self, mechanism: Mechanism, initial: &[u8]) -> Result<(), XmppError> {
        let auth = format!(
            "<auth xmlns='{NS_SASL}' mechanism='{}'>{}</auth>",
            mechanism.name(),
            B64.encode(initial)
        );
        self.send(auth.as_bytes()).await
    }

    /// The next SASL step: `Ok(Some(data))` for a challenge or a success carrying data,
    /// `Ok(None)` for a bare success.
    async fn sasl_reply(&mut self) -> Result<Option<Vec<u8>>, XmppError> {
        let reply = self.next_stanza_timed("sasl").await?;
        let element = dom(&reply)?;
        match reply.name() {
            "challenge" | "success" => {
                let text = element.text_content();
                let text = text.trim();
                if text.is_empty() || text == "=" {
                    return Ok(None);
                }
                let data = B64
                    .decode(text)
                    .map_err(|_| XmppError::Xml("sasl data is not base64".into()))?;
                Ok(Some(data))
            }
            "failure" => Err(XmppError::Sasl(first_child_name(&element, None))),
            _ => Err(XmppError::Negotiation("unexpected-sasl-reply")),
        }
    }

    /// Sends an IQ with `id` taken from `xml` and waits for its reply, skipping other stanzas
    /// (only used while setting up, never on the measured path).
    pub async fn iq(&mut self, step: &'static str, xml: &str) -> Result<Stanza, XmppError> {
        let id = Element::parse(xml.as_bytes(), "jabber:client")
            .ok()
            .and_then(|e| e.get_attr("id").map(str::to_owned))
            .unwrap_or_default();
        self.send(xml.as_bytes()).await?;
        loop {
            let reply = self.next_stanza_timed(step).await?;
            if reply.name() != "iq" || reply.id() != Some(id.as_str()) {
                continue;
            }
            return match reply.stanza_type() {
                Some("result") => Ok(reply),
                _ => Err(XmppError::Iq {
                    step,
                    condition: stanza_error_condition(&reply),
                }),
            };
        }
    }

    /// Sends one top-level element (a WebSocket carries each in a message of its own).
    pub async fn send(&mut self, element: &[u8]) -> Result<(), XmppError> {
        self.wire.send(element).await
    }

    /// The next top-level element. Cancel-safe: it only awaits a read, and what was read is
    /// kept, so it can sit in a `select!` beside a send timer.
    pub async fn next_stanza(&mut self) -> Result<Stanza, XmppError> {
        loop {
            match self.wire.next_event().await? {
                StreamEvent::Stanza(stanza) => {
                    if stanza.name() == "error" && stanza.namespace() == NS_STREAMS {
                        let element = dom(&stanza)?;
                        return Err(XmppError::Stream(first_child_name(
                            &element,
                            Some(NS_STREAM_ERRORS),
                        )));
                    }
                    return Ok(stanza);
                }
                StreamEvent::Open(_) => continue,
                StreamEvent::Close => return Err(XmppError::Closed),
            }
        }
    }

    async fn next_stanza_timed(&mut self, step: &'static str) -> Result<Stanza, XmppError> {
        tokio::time::timeout(self.step_timeout, self.next_stanza())
            .await
            .map_err(|_| XmppError::Timeout(step))?
    }

    /// Closes the stream politely and waits briefly for the server's closing tag, so the
    /// server sees a clean logout rather than a reset.
    pub async fn close(mut self) {
        self.wire.close().await;
    }
}

fn dom(stanza: &Stanza) -> Result<Element, XmppError> {
    stanza.element().map_err(|e| XmppError::Xml(e.to_string()))
}

/// The defined condition of a stanza error (RFC 6120 §8.3), or "unknown".
pub fn stanza_error_condition(stanza: &Stanza) -> String {
    stanza
        .element()
        .ok()
        .and_then(|e| {
            e.children()
                .find(|c| c.name() == "error")
                .map(|error| first_child_name(error, Some(NS_STANZAS)))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The name of the first child (in `ns`, if given) other than `<text/>`: the condition.
fn first_child_name(element: &Element, ns: Option<&str>) -> String {
    element
        .children()
        .find(|c| c.name() != "text" && ns.is_none_or(|ns| c.namespace() == ns))
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    use super::*;

    /// A server that issues tickets and keeps sessions (rustls' defaults, which xmppd turns
    /// off) sees only full handshakes.
    #[tokio::test]
    async fn simulated_clients_never_resume_a_tls_session() {
        let dir = tempfile::tempdir().unwrap();
        let tls = xmppd_tls::ServerTls::load("localhost", None, None, dir.path()).unwrap();
        let mut config = Arc::unwrap_or_clone(tls.config());
        config.send_tls13_tickets = 2;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = TlsConnector::from(client_tls_config(&Framing::Tcp));
        for _ in 0..3 {
            let client = async {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let mut tls = connector.connect(name, tcp).await.unwrap();
                // Reading after the handshake takes in the tickets sent with the first data.
                let mut byte = [0u8];
                tls.read_exact(&mut byte).await.unwrap();
            };
            let server = async {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                tls.write_all(b"x").await.unwrap();
                tls.flush().await.unwrap();
                tls.get_ref().1.handshake_kind()
            };
            let ((), kind) = tokio::join!(client, server);
            assert_eq!(kind, Some(rustls::HandshakeKind::Full));
        }
    }
}
