//! Group chat (XEP-0045) steps and scenarios that the all-in-one tests
//! (`muc.rs`) and the cluster tests (`cluster.rs`) share: the occupants
//! may be on any client port.

use std::net::SocketAddr;

use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use super::DOMAIN;
use super::client::{Client, assert_result, error_condition};

pub fn service() -> String {
    format!("conference.{DOMAIN}")
}

pub fn room(name: &str) -> String {
    format!("{name}@{}", service())
}

pub fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// Logged in at `c2s` and available.
pub async fn login(c2s: SocketAddr, user: &str) -> Client {
    let mut client = Client::login_at(c2s, user, &password(user), "desk").await;
    client.available("").await;
    client
}

/// The `<x xmlns='…muc#user'/>` of a stanza.
pub fn user_x(stanza: &Element) -> Option<&Element> {
    stanza.get_child("x", ns::MUC_USER)
}

/// The status codes a room gave a stanza.
pub fn codes(stanza: &Element) -> Vec<u16> {
    user_x(stanza)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", ns::MUC_USER))
                .filter_map(|c| c.get_attr("code")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The `<item/>` of a room's presence.
pub fn item(stanza: &Element) -> &Element {
    user_x(stanza)
        .and_then(|x| x.get_child("item", ns::MUC_USER))
        .unwrap_or_else(|| panic!("no muc#user item: {}", stanza.to_xml(ns::CLIENT)))
}

pub fn is_from(stanza: &Element, name: &str, from: &str) -> bool {
    stanza.name() == name && stanza.get_attr("from") == Some(from)
}

/// Sends a join of `room` as `nick` with `x` inside `<x xmlns='…muc'/>`
/// (`None`: no such element, as a client that does not speak XEP-0045).
pub async fn send_join(client: &mut Client, room: &str, nick: &str, x: Option<&str>) {
    let x = x
        .map(|inner| format!("<x xmlns='http://jabber.org/protocol/muc'>{inner}</x>"))
        .unwrap_or_default();
    client
        .send(&format!("<presence to='{room}/{nick}'>{x}</presence>"))
        .await;
}

/// Joins and waits for the self-presence (status 110) and the subject,
/// the last of a join; returns the self-presence.
pub async fn join(client: &mut Client, room: &str, nick: &str, x: Option<&str>) -> Element {
    send_join(client, room, nick, x).await;
    let me = format!("{room}/{nick}");
    let own = client
        .wait(&format!("its self-presence in {room}"), |s| {
            is_from(s, "presence", &me) && codes(s).contains(&110)
        })
        .await;
    client
        .wait("the room's subject", |s| {
            s.name() == "message" && s.get_child("subject", ns::CLIENT).is_some()
        })
        .await;
    own
}

/// The error answer to a join of `room` as `nick`.
pub async fn join_refused(client: &mut Client, room: &str, nick: &str, x: Option<&str>) -> String {
    send_join(client, room, nick, x).await;
    let me = format!("{room}/{nick}");
    let refusal = client
        .wait(&format!("a refused join of {room}"), |s| {
            is_from(s, "presence", &me) && s.get_attr("type") == Some("error")
        })
        .await;
    error_condition(&refusal)
}

/// Creates `room` as a reserved room and accepts the default configuration
/// (an instant room, §10.1.2), then submits `fields` if any.
pub async fn create(owner: &mut Client, room: &str, nick: &str, fields: &[(&str, &str)]) {
    let own = join(owner, room, nick, Some("")).await;
    assert!(codes(&own).contains(&201), "a new room: {own:?}");
    configure(owner, room, fields).await;
}

pub async fn configure(owner: &mut Client, room: &str, fields: &[(&str, &str)]) {
    let answer = owner.iq("set", Some(room), &config_form(fields)).await;
    assert_result(&answer);
}

pub fn config_form(fields: &[(&str, &str)]) -> String {
    let fields: String = fields
        .iter()
        .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
        .collect();
    format!(
        "<query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></query>"
    )
}

/// Sends a groupchat message to `room`.
pub async fn say(sender: &mut Client, room: &str, id: &str, body: &str) {
    sender
        .send(&format!(
            "<message to='{room}' type='groupchat' id='{id}'><body>{body}</body></message>"
        ))
        .await;
}

/// The groupchat message `id` from the occupant JID `from`, which must
/// carry `body`, the room's stanza id and the sender's occupant id.
pub async fn heard(reader: &mut Client, from: &str, id: &str, body: &str) -> Element {
    let message = reader
        .wait(&format!("groupchat {id} from {from}"), |s| {
            is_from(s, "message", from) && s.get_attr("id") == Some(id)
        })
        .await;
    assert_eq!(message.get_attr("type"), Some("groupchat"));
    let text = message
        .get_child("body", ns::CLIENT)
        .unwrap()
        .text_content();
    assert_eq!(text, body);
    let room = from.split_once('/').unwrap().0;
    let stanza_id = message.get_child("stanza-id", ns::STANZA_ID).unwrap();
    assert_eq!(stanza_id.get_attr("by"), Some(room));
    assert!(
        message.get_child("occupant-id", ns::OCCUPANT_ID).is_some(),
        "{message:?}"
    );
    message
}

/// Alice creates a room, Bob joins it (each from its own client port),
/// they chat, talk in private, and Bob leaves: what both see at each step.
pub async fn chat(alice_at: SocketAddr, bob_at: SocketAddr) {
    let mut alice = login(alice_at, "alice").await;
    let mut bob = login(bob_at, "bob").await;
    let room = room("garden");
    let own = join(&mut alice, &room, "Alice", Some("")).await;
    assert_eq!(codes(&own), vec![110, 201]);
    assert_eq!(item(&own).get_attr("affiliation"), Some("owner"));
    assert_eq!(item(&own).get_attr("role"), Some("moderator"));
    // §10.1.3: locked until its owner configures it.
    assert_eq!(
        join_refused(&mut bob, &room, "Bob", Some("")).await,
        "item-not-found"
    );
    configure(&mut alice, &room, &[]).await;

    let own = join(&mut bob, &room, "Bob", Some("")).await;
    assert_eq!(codes(&own), vec![110]);
    assert_eq!(item(&own).get_attr("role"), Some("participant"));
    // The occupants' presence came before the newcomer's own; a
    // semi-anonymous room shows real JIDs to moderators only.
    let alice_seen = bob
        .wait("Alice's presence", |s| {
            is_from(s, "presence", &format!("{room}/Alice"))
        })
        .await;
    assert_eq!(item(&alice_seen).get_attr("jid"), None);
    assert_eq!(item(&alice_seen).get_attr("affiliation"), Some("owner"));
    let seen = alice
        .wait("Bob's presence", |s| {
            is_from(s, "presence", &format!("{room}/Bob"))
        })
        .await;
    assert!(codes(&seen).is_empty(), "{seen:?}");
    assert_eq!(item(&seen).get_attr("jid"), Some(bob.jid.as_str()));

    say(&mut bob, &room, "m1", "Hello").await;
    let to_bob = heard(&mut bob, &format!("{room}/Bob"), "m1", "Hello").await;
    let to_alice = heard(&mut alice, &format!("{room}/Bob"), "m1", "Hello").await;
    assert_eq!(
        to_bob.get_child("stanza-id", ns::STANZA_ID),
        to_alice.get_child("stanza-id", ns::STANZA_ID),
        "one stanza id for every occupant"
    );

    // §7.5: a private message, from the sender's occupant JID.
    bob.send(&format!(
        "<message to='{room}/Alice' type='chat' id='p1'><body>psst</body></message>"
    ))
    .await;
    let private = alice
        .wait("Bob's private message", |s| {
            is_from(s, "message", &format!("{room}/Bob")) && s.get_attr("id") == Some("p1")
        })
        .await;
    assert_eq!(private.get_attr("type"), Some("chat"));
    assert!(user_x(&private).is_some());

    // §7.14: leaving.
    bob.send(&format!("<presence to='{room}/Bob' type='unavailable'/>"))
        .await;
    let own = bob
        .wait("its own unavailable presence", |s| {
            is_from(s, "presence", &format!("{room}/Bob"))
                && s.get_attr("type") == Some("unavailable")
        })
        .await;
    assert_eq!(codes(&own), vec![110]);
    assert_eq!(item(&own).get_attr("role"), Some("none"));
    alice
        .wait("Bob leaving", |s| {
            is_from(s, "presence", &format!("{room}/Bob"))
                && s.get_attr("type") == Some("unavailable")
        })
        .await;
}
