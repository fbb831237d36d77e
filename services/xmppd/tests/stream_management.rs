//! XEP-0198 Stream Management against a real all-in-one process, spoken as
//! raw XML over TCP: enabling it, acks and their counts both ways, resuming
//! a session after its connection dropped (nothing lost, nothing twice, in
//! order), the resumptions refused, and what becomes of the stanzas a
//! client never acknowledged when its session is not resumed.

mod support;

use std::time::Duration;

use support::client::{Client, befriend, is_presence, start};
use support::{RawClient, attribute};

const TIMEOUT: Duration = Duration::from_secs(10);
const SM: &str = "urn:xmpp:sm:3";
/// Acks asked for by count only, so that the counts a test expects are not
/// moved by a timer.
const NO_TIMED_REQUESTS: &str = "[stream_management]\nack_request_after_ms = 600000\n";

async fn next(client: &mut RawClient) -> String {
    match client.next_stanza(TIMEOUT).await {
        Some(element) => element,
        None => panic!("nothing more arrived; pending: {:?}", client.pending()),
    }
}

/// The next stanza, skipping XEP-0198 ack requests.
async fn next_stanza(client: &mut RawClient) -> String {
    loop {
        let element = next(client).await;
        if !element.starts_with("<r ") {
            return element;
        }
    }
}

async fn bind(client: &mut RawClient, resource: &str) {
    client
        .send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
    let bound = next(client).await;
    assert!(bound.contains("<jid>"), "{bound}");
}

/// Binds `resource` and enables stream management with resumption; returns
/// the session id.
async fn resumable(client: &mut RawClient, resource: &str) -> String {
    bind(client, resource).await;
    client
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = next(client).await;
    assert!(enabled.starts_with("<enabled "), "{enabled}");
    assert_eq!(attribute(&enabled, "resume").as_deref(), Some("true"));
    attribute(&enabled, "id").expect("a session id")
}

async fn chat(client: &mut RawClient, to: &str, id: &str) {
    client
        .send(&format!(
            "<message to='{to}' id='{id}' type='chat'><body>{id}</body></message>"
        ))
        .await;
}

/// The ids of the next `count` messages.
async fn message_ids(client: &mut RawClient, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let stanza = next_stanza(client).await;
        if stanza.starts_with("<message") {
            ids.push(attribute(&stanza, "id").unwrap_or_default());
        }
    }
    ids
}

/// Asserts that no message arrives for a while.
async fn no_more_messages(client: &mut RawClient) {
    while let Some(stanza) = client.next_stanza(Duration::from_millis(700)).await {
        assert!(!stanza.starts_with("<message"), "unexpected {stanza}");
    }
}

#[tokio::test]
async fn stream_management_is_enabled_after_bind_and_acks_count_both_ways() {
    let (_dir, server) = start(NO_TIMED_REQUESTS).await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (mut alice, features) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    assert!(
        features.contains("<sm xmlns='urn:xmpp:sm:3'/>"),
        "{features}"
    );

    // XEP-0198 §3: not before a resource is bound, and only once.
    alice.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = next(&mut alice).await;
    assert!(
        failed.starts_with("<failed xmlns='urn:xmpp:sm:3'>"),
        "{failed}"
    );
    assert!(failed.contains("<unexpected-request "), "{failed}");
    let id = resumable(&mut alice, "phone").await;
    assert!(id.len() >= 32, "{id}");
    alice.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = next(&mut alice).await;
    assert!(failed.contains("<unexpected-request "), "{failed}");

    // The server counts the client's stanzas.
    alice.send(&format!("<r xmlns='{SM}'/>")).await;
    assert_eq!(next(&mut alice).await, "<a xmlns='urn:xmpp:sm:3' h='0'/>");
    alice
        .send("<iq type='get' id='ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(next(&mut alice).await.starts_with("<iq "));
    alice.send(&format!("<r xmlns='{SM}'/>")).await;
    assert_eq!(next(&mut alice).await, "<a xmlns='urn:xmpp:sm:3' h='1'/>");

    // And asks for acks of its own every five stanzas: the ping's answer
    // and four messages.
    let mut bob = RawClient::login(server.c2s, "bob", "pw-b", "pc").await;
    for n in 1..=4 {
        chat(&mut bob, "alice@localhost/phone", &format!("m{n}")).await;
    }
    for n in 1..=4 {
        let message = next(&mut alice).await;
        assert_eq!(
            attribute(&message, "id"),
            Some(format!("m{n}")),
            "{message}"
        );
    }
    assert_eq!(next(&mut alice).await, "<r xmlns='urn:xmpp:sm:3'/>");
    alice.send(&format!("<a xmlns='{SM}' h='5'/>")).await;

    // Acknowledging more than was sent ends the stream (XEP-0198 §5).
    alice.send(&format!("<a xmlns='{SM}' h='7'/>")).await;
    let error = next(&mut alice).await;
    assert!(
        error.starts_with("<stream:error><undefined-condition "),
        "{error}"
    );
    assert!(
        error.contains("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='7' send-count='5'/>"),
        "{error}"
    );
}

#[tokio::test]
async fn a_session_resumed_after_its_connection_dropped_loses_and_doubles_nothing() {
    let (_dir, server) = start(NO_TIMED_REQUESTS).await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (mut alice, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    let id = resumable(&mut alice, "phone").await;
    let mut bob = RawClient::login(server.c2s, "bob", "pw-b", "pc").await;

    chat(&mut alice, "bob@localhost/pc", "a1").await;
    assert_eq!(message_ids(&mut bob, 1).await, ["a1"]);
    // Alice reads b1 only: b2 and b3 are lost with her connection.
    for id in ["b1", "b2", "b3"] {
        chat(&mut bob, "alice@localhost/phone", id).await;
    }
    assert_eq!(message_ids(&mut alice, 1).await, ["b1"]);
    chat(&mut alice, "bob@localhost/pc", "a2").await;
    drop(alice);
    // Her resource stays bound meanwhile: what comes for it waits.
    chat(&mut bob, "alice@localhost/phone", "b4").await;

    let (mut alice, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    alice
        .send(&format!("<resume xmlns='{SM}' previd='{id}' h='1'/>"))
        .await;
    let resumed = next(&mut alice).await;
    assert!(resumed.starts_with("<resumed "), "{resumed}");
    assert_eq!(attribute(&resumed, "previd").as_deref(), Some(id.as_str()));
    // What the server did not handle of hers, she sends again.
    let handled: u32 = attribute(&resumed, "h").unwrap().parse().unwrap();
    assert!(handled <= 2, "{resumed}");
    if handled < 2 {
        chat(&mut alice, "bob@localhost/pc", "a2").await;
    }
    assert_eq!(message_ids(&mut alice, 3).await, ["b2", "b3", "b4"]);
    chat(&mut alice, "bob@localhost/pc", "a3").await;
    chat(&mut bob, "alice@localhost/phone", "b5").await;
    assert_eq!(message_ids(&mut alice, 1).await, ["b5"]);

    // The same full JID, every message once and in order.
    let mut from_alice = Vec::new();
    while from_alice.len() < 2 {
        let stanza = next_stanza(&mut bob).await;
        if stanza.starts_with("<message") {
            assert_eq!(
                attribute(&stanza, "from").as_deref(),
                Some("alice@localhost/phone")
            );
            from_alice.push(attribute(&stanza, "id").unwrap());
        }
    }
    assert_eq!(from_alice, ["a2", "a3"]);
    no_more_messages(&mut bob).await;
    no_more_messages(&mut alice).await;
}

#[tokio::test]
async fn resumption_is_refused_for_unknown_ended_or_foreign_sessions() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (mut alice, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    let id = resumable(&mut alice, "phone").await;

    let refused = |failed: &str| {
        failed.starts_with("<failed xmlns='urn:xmpp:sm:3'>") && failed.contains("<item-not-found ")
    };
    // Another account cannot take alice's session, and can bind after.
    let (mut bob, _) = RawClient::authenticate(server.c2s, "bob", "pw-b").await;
    bob.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let failed = next(&mut bob).await;
    assert!(refused(&failed), "{failed}");
    // An id nobody was given.
    bob.send(&format!(
        "<resume xmlns='{SM}' previd='00000000000000000000000000000000.Y20' h='0'/>"
    ))
    .await;
    let failed = next(&mut bob).await;
    assert!(refused(&failed), "{failed}");
    bind(&mut bob, "pc").await;

    // Alice's session is still hers to resume: her connection drops, she resumes.
    drop(alice);
    let (mut alice, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    alice
        .send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let resumed = next(&mut alice).await;
    assert!(resumed.starts_with("<resumed "), "{resumed}");

    // A session its client closed cleanly ends: nothing to resume.
    alice.send("</stream:stream>").await;
    assert!(alice.closed().await);
    let (mut again, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    again
        .send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let failed = next(&mut again).await;
    assert!(refused(&failed), "{failed}");
}

#[tokio::test]
async fn a_resumption_while_the_old_stream_is_open_takes_the_session_over() {
    let (_dir, server) = start(NO_TIMED_REQUESTS).await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (mut old, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    let id = resumable(&mut old, "phone").await;
    let mut bob = RawClient::login(server.c2s, "bob", "pw-b", "pc").await;
    chat(&mut bob, "alice@localhost/phone", "b1").await;
    chat(&mut bob, "alice@localhost/phone", "b2").await;
    assert_eq!(message_ids(&mut old, 2).await, ["b1", "b2"]);

    // The client saw its stream break before the server did; it has b1.
    let (mut new, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    new.send(&format!("<resume xmlns='{SM}' previd='{id}' h='1'/>"))
        .await;
    old.expect_stream_error("conflict").await;
    let resumed = next(&mut new).await;
    assert!(resumed.starts_with("<resumed "), "{resumed}");
    assert_eq!(message_ids(&mut new, 1).await, ["b2"]);
    chat(&mut new, "bob@localhost/pc", "a1").await;
    let from_alice = next_stanza(&mut bob).await;
    assert_eq!(
        attribute(&from_alice, "from").as_deref(),
        Some("alice@localhost/phone")
    );
    no_more_messages(&mut new).await;
}

#[tokio::test]
async fn contacts_see_a_broken_stream_go_offline_when_its_session_times_out_not_before() {
    let (_dir, server) = start("[stream_management]\nresume_timeout_secs = 3\n").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone")
        .await
        .acknowledging_pushes();
    let mut bob = Client::login(&server, "bob", "pw-b", "pc")
        .await
        .acknowledging_pushes();
    alice.available("").await;
    bob.available("").await;
    befriend(&mut alice, &mut bob).await;
    alice
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    alice.wait("<enabled/>", |s| s.name() == "enabled").await;
    drop(alice);
    let dropped = tokio::time::Instant::now();

    let gone =
        |s: &xmppd_protocol::xml::Element| is_presence(s, "alice@localhost/phone", "unavailable");
    let early = tokio::time::timeout(Duration::from_millis(1500), bob.wait("", gone)).await;
    assert!(early.is_err(), "unavailable before the timeout: {early:?}");
    bob.wait("alice's unavailable presence", gone).await;
    assert!(
        dropped.elapsed() >= Duration::from_secs(3),
        "{:?}",
        dropped.elapsed()
    );
}

/// A message alice received and never acknowledged, on a stream with
/// resumption (left to time out) or without (closed): it reaches offline
/// storage once the session ends, and her next login, once.
async fn an_unacknowledged_message_goes_offline_when_the_session_ends(resume: bool) {
    let (_dir, server) = start("[stream_management]\nresume_timeout_secs = 1\n").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (mut alice, _) = RawClient::authenticate(server.c2s, "alice", "pw-a").await;
    bind(&mut alice, "phone").await;
    let enable = if resume { " resume='true'" } else { "" };
    alice.send(&format!("<enable xmlns='{SM}'{enable}/>")).await;
    let enabled = next(&mut alice).await;
    assert!(enabled.starts_with("<enabled "), "{enabled}");
    if resume {
        assert_eq!(attribute(&enabled, "max").as_deref(), Some("1"));
    }
    let mut bob = RawClient::login(server.c2s, "bob", "pw-b", "pc").await;
    chat(&mut bob, "alice@localhost/phone", "lost").await;
    assert_eq!(message_ids(&mut alice, 1).await, ["lost"]);
    if resume {
        drop(alice);
        tokio::time::sleep(Duration::from_millis(2500)).await;
    } else {
        alice.send("</stream:stream>").await;
        assert!(alice.closed().await);
    }

    let mut alice = RawClient::login(server.c2s, "alice", "pw-a", "laptop").await;
    alice.send("<presence/>").await;
    let mut offline = Vec::new();
    while let Some(stanza) = alice.next_stanza(Duration::from_millis(1500)).await {
        if stanza.starts_with("<message") {
            assert!(stanza.contains("<delay "), "{stanza}");
            offline.push(attribute(&stanza, "id").unwrap());
        }
    }
    assert_eq!(offline, ["lost"]);
}

#[tokio::test]
async fn an_unresumed_session_ends_at_its_timeout_and_its_unacknowledged_message_goes_offline() {
    an_unacknowledged_message_goes_offline_when_the_session_ends(true).await;
}

#[tokio::test]
async fn a_closed_stream_hands_its_unacknowledged_message_to_offline_storage() {
    an_unacknowledged_message_goes_offline_when_the_session_ends(false).await;
}
