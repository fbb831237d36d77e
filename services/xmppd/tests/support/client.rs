//! A logged-in client for tests that check whole stanzas, and the
//! instant-messaging steps several test files share (subscriptions, roster
//! pushes, errors).

use std::net::SocketAddr;
use std::time::Duration;

use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use super::{DOMAIN, RawClient, Server};

pub const STANZA_TIMEOUT: Duration = Duration::from_secs(15);

/// A logged-in client that reads whole stanzas and keeps the ones a test did
/// not wait for yet, so that nothing the server sent is lost between checks.
pub struct Client {
    pub raw: RawClient,
    pub jid: String,
    pub backlog: Vec<Element>,
    pub next_id: u32,
    /// Whether every roster push is acknowledged as it arrives (see
    /// [`Client::acknowledging_pushes`]); otherwise [`Client::roster_push`]
    /// acknowledges the one it waits for.
    pub acknowledge_pushes: bool,
}

impl Client {
    /// A client over a stream already opened as `jid` (empty before
    /// authentication).
    pub fn new(raw: RawClient, jid: String) -> Client {
        Client {
            raw,
            jid,
            backlog: Vec::new(),
            next_id: 0,
            acknowledge_pushes: false,
        }
    }

    pub async fn login(server: &Server, user: &str, password: &str, resource: &str) -> Client {
        Client::login_at(server.c2s, user, password, resource).await
    }

    /// Logged in at the client port `c2s` (of one connection-manager).
    pub async fn login_at(c2s: SocketAddr, user: &str, password: &str, resource: &str) -> Client {
        let raw = RawClient::login(c2s, user, password, resource).await;
        Client::new(raw, format!("{user}@{DOMAIN}/{resource}"))
    }

    /// Acknowledges every roster push (RFC 6121 §2.1.6) as soon as it is
    /// read, whether or not the test waits for it: for tests that follow
    /// subscription states through several pushes and look only at some.
    pub fn acknowledging_pushes(mut self) -> Client {
        self.acknowledge_pushes = true;
        self
    }

    pub fn bare(&self) -> &str {
        self.jid.split_once('/').unwrap().0
    }

    pub async fn send(&mut self, xml: &str) {
        self.raw.send(xml).await;
    }

    /// One complete top-level element from the socket, or `None` when
    /// nothing complete arrives in time.
    pub async fn read(&mut self) -> Option<Element> {
        let mut text = String::new();
        let mut depth = 0usize;
        loop {
            let chunk = self.raw.wait_for(">", STANZA_TIMEOUT).await?;
            let tag = &chunk[chunk.rfind('<').expect("a tag ends every chunk")..];
            text.push_str(&chunk);
            if tag.starts_with("</") {
                assert!(depth > 0, "stream closed by the server: {text}");
                depth -= 1;
            } else if !tag.ends_with("/>") {
                depth += 1;
            }
            if depth == 0 {
                break;
            }
        }
        let text = text.trim_start();
        assert!(
            !text.starts_with("<stream:"),
            "unexpected stream element: {text}"
        );
        let stanza = Element::parse(text.as_bytes(), ns::CLIENT)
            .unwrap_or_else(|e| panic!("unparsable stanza {text:?}: {e}"));
        if self.acknowledge_pushes && is_roster_push(&stanza) {
            self.acknowledge(&stanza).await;
        }
        Some(stanza)
    }

    async fn acknowledge(&mut self, push: &Element) {
        let id = push.get_attr("id").unwrap_or_default().to_string();
        self.send(&format!("<iq type='result' id='{id}'/>")).await;
    }

    /// The first stanza (already received or still to come) that `matches`.
    pub async fn wait(&mut self, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
        if let Some(at) = self.backlog.iter().position(&matches) {
            return self.backlog.remove(at);
        }
        loop {
            match self.read().await {
                Some(stanza) if matches(&stanza) => return stanza,
                Some(stanza) => self.backlog.push(stanza),
                None => panic!(
                    "{} did not receive {what}; received meanwhile:\n{}",
                    self.jid,
                    self.backlog
                        .iter()
                        .map(|s| s.to_xml(ns::CLIENT))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Whether a stanza that `matches` was received (and not yet waited for).
    pub fn received(&self, matches: impl Fn(&Element) -> bool) -> bool {
        self.backlog.iter().any(matches)
    }

    /// Sends an IQ with a fresh id and returns its answer.
    pub async fn iq(&mut self, iq_type: &str, to: Option<&str>, payload: &str) -> Element {
        self.next_id += 1;
        let id = format!("q{}", self.next_id);
        let to = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
        self.send(&format!(
            "<iq type='{iq_type}' id='{id}'{to}>{payload}</iq>"
        ))
        .await;
        self.wait(&format!("the answer to IQ {id}"), |s| {
            s.name() == "iq"
                && s.get_attr("id") == Some(&id)
                && matches!(s.get_attr("type"), Some("result" | "error"))
        })
        .await
    }

    /// Sends available presence with `children` and waits for the server's
    /// echo of it to this resource, which comes after it was stored.
    pub async fn available(&mut self, children: &str) {
        self.send(&format!("<presence>{children}</presence>")).await;
        let me = self.jid.clone();
        self.wait("the echo of its own presence", |s| is_presence(s, &me, ""))
            .await;
    }

    /// A roster push for `contact`, acknowledged as RFC 6121 §2.1.6 asks.
    pub async fn roster_push(&mut self, contact: &str) -> Element {
        let push = self
            .wait(&format!("a roster push for {contact}"), |s| {
                s.name() == "iq"
                    && s.get_attr("type") == Some("set")
                    && roster_item(s, contact).is_some()
            })
            .await;
        let from = push.get_attr("from");
        assert!(
            from.is_none() || from == Some(self.bare()),
            "roster push from a stranger: {push:?}"
        );
        if !self.acknowledge_pushes {
            self.acknowledge(&push).await;
        }
        roster_item(&push, contact).unwrap().clone()
    }

    /// Waits for a roster push giving `contact` the subscription `state`
    /// with no request pending, past any pushes of other states.
    pub async fn pushed(&mut self, contact: &str, state: &str) {
        self.wait(&format!("a roster push of {contact} as {state:?}"), |s| {
            is_roster_push(s)
                && roster_item(s, contact).is_some_and(|item| {
                    item.get_attr("subscription") == Some(state) && item.get_attr("ask").is_none()
                })
        })
        .await;
    }
}

pub async fn start(extra: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), extra);
    server.ready().await;
    (dir, server)
}

pub fn is_presence(stanza: &Element, from: &str, presence_type: &str) -> bool {
    stanza.name() == "presence"
        && stanza.get_attr("from") == Some(from)
        && stanza.get_attr("type").unwrap_or("") == presence_type
}

pub fn is_message(stanza: &Element, id: &str) -> bool {
    stanza.name() == "message" && stanza.get_attr("id") == Some(id)
}

/// A roster push (RFC 6121 §2.1.6): an IQ set carrying a roster query.
pub fn is_roster_push(stanza: &Element) -> bool {
    stanza.name() == "iq"
        && stanza.get_attr("type") == Some("set")
        && stanza.get_child("query", ns::ROSTER).is_some()
}

pub fn roster_item<'a>(iq: &'a Element, contact: &str) -> Option<&'a Element> {
    iq.get_child("query", ns::ROSTER)?
        .children()
        .find(|item| item.is("item", ns::ROSTER) && item.get_attr("jid") == Some(contact))
}

pub fn assert_result(iq: &Element) {
    assert_eq!(
        iq.get_attr("type"),
        Some("result"),
        "{}",
        iq.to_xml(ns::CLIENT)
    );
}

/// The defined condition of a stanza error (RFC 6120 §8.3).
pub fn error_condition(stanza: &Element) -> String {
    assert_eq!(
        stanza.get_attr("type"),
        Some("error"),
        "{}",
        stanza.to_xml(ns::CLIENT)
    );
    let error = stanza
        .get_child("error", ns::CLIENT)
        .unwrap_or_else(|| panic!("no <error/>: {stanza:?}"));
    error
        .children()
        .find(|child| child.namespace() == ns::STANZAS && child.name() != "text")
        .map(|condition| condition.name().to_string())
        .unwrap_or_else(|| panic!("no defined condition: {stanza:?}"))
}

pub fn subscription_of(item: &Element) -> (&str, Option<&str>) {
    (item.get_attr("subscription").unwrap(), item.get_attr("ask"))
}

/// `subscriber` subscribes to `contact`, who approves (RFC 6121 §3.1),
/// checking every roster push and presence on the way.
pub async fn subscribe(subscriber: &mut Client, contact: &mut Client, mutual_after: bool) {
    let (user, other) = (subscriber.bare().to_string(), contact.bare().to_string());
    subscriber
        .send(&format!("<presence to='{other}' type='subscribe'/>"))
        .await;
    let item = subscriber.roster_push(&other).await;
    let before = if mutual_after { "from" } else { "none" };
    assert_eq!(subscription_of(&item), (before, Some("subscribe")));
    contact
        .wait("the subscription request", |s| {
            is_presence(s, &user, "subscribe")
        })
        .await;

    contact
        .send(&format!("<presence to='{user}' type='subscribed'/>"))
        .await;
    let item = contact.roster_push(&user).await;
    let after = if mutual_after { "both" } else { "from" };
    assert_eq!(subscription_of(&item), (after, None));
    let item = subscriber.roster_push(&other).await;
    let after = if mutual_after { "both" } else { "to" };
    assert_eq!(subscription_of(&item), (after, None));
    subscriber
        .wait("the approval", |s| is_presence(s, &other, "subscribed"))
        .await;
    // §3.1.5: the new subscriber gets the contact's current presence.
    let contact_full = contact.jid.clone();
    subscriber
        .wait("the contact's presence", |s| {
            is_presence(s, &contact_full, "")
        })
        .await;
}

/// Mutual subscription between two available clients.
pub async fn befriend(a: &mut Client, b: &mut Client) {
    subscribe(a, b, false).await;
    subscribe(b, a, true).await;
}
