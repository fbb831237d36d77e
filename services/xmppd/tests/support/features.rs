//! Account features end to end, written once and run against the
//! all-in-one process (`tests/features.rs`) and against the cluster with
//! the two users on different connection-managers (`tests/cluster.rs`).
//! Each takes two users that exist with the password `pw-<user>` and are
//! strangers to each other, and the client port each logs in at.

use std::net::SocketAddr;

use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use super::DOMAIN;
use super::client::{Client, assert_result, befriend, error_condition, is_message, is_presence};

async fn login(c2s: SocketAddr, user: &str, resource: &str) -> Client {
    let mut client = Client::login_at(c2s, user, &format!("pw-{user}"), resource).await;
    client.available("").await;
    client
}

/// The items of a blocklist, a block or an unblock.
fn blocked_jids(command: &Element) -> Vec<String> {
    command
        .children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|c| c.get_attr("jid").unwrap().to_string())
        .collect()
}

async fn blocklist(client: &mut Client) -> Vec<String> {
    let answer = client
        .iq("get", None, "<blocklist xmlns='urn:xmpp:blocking'/>")
        .await;
    assert_result(&answer);
    blocked_jids(answer.get_child("blocklist", ns::BLOCKING).unwrap())
}

/// A blocklist push of `command` with these items, answered.
async fn blocking_push(client: &mut Client, command: &str, items: &[&str]) {
    let push = client
        .wait(&format!("a {command} push"), |s| {
            s.name() == "iq"
                && s.get_attr("type") == Some("set")
                && s.get_child(command, ns::BLOCKING).is_some()
        })
        .await;
    assert_eq!(
        blocked_jids(push.get_child(command, ns::BLOCKING).unwrap()),
        items
    );
    let id = push.get_attr("id").unwrap().to_string();
    client.send(&format!("<iq type='result' id='{id}'/>")).await;
}

/// Everything the server sent `client` before this has arrived: a ping to
/// the server is answered after it.
async fn settle(client: &mut Client) {
    assert_result(
        &client
            .iq("get", Some(DOMAIN), "<ping xmlns='urn:xmpp:ping'/>")
            .await,
    );
}

async fn chat(from: &mut Client, to: &str, id: &str) {
    from.send(&format!(
        "<message to='{to}' id='{id}' type='chat'><body>{id}</body></message>"
    ))
    .await;
}

/// The error that answers message `id`.
async fn bounced(client: &mut Client, id: &str) -> Element {
    client
        .wait(&format!("the error for {id}"), |s| {
            is_message(s, id) && s.get_attr("type") == Some("error")
        })
        .await
}

/// XEP-0191: alice blocks bob and unblocks him; what each side sees, and
/// what stays blocked while alice is offline.
pub async fn blocking(alice_at: SocketAddr, bob_at: SocketAddr, alice: &str, bob: &str) {
    let mut phone = login(alice_at, alice, "phone").await;
    let mut tablet = login(alice_at, alice, "tablet").await;
    let mut laptop = login(bob_at, bob, "laptop").await;
    befriend(&mut phone, &mut laptop).await;
    let (alice_bare, bob_bare) = (phone.bare().to_string(), laptop.bare().to_string());
    for client in [&mut phone, &mut tablet, &mut laptop] {
        settle(client).await;
        client.backlog.clear();
    }
    assert!(blocklist(&mut phone).await.is_empty());
    assert!(blocklist(&mut tablet).await.is_empty());

    // Bad commands change nothing.
    let empty = phone
        .iq("set", None, "<block xmlns='urn:xmpp:blocking'/>")
        .await;
    assert_eq!(error_condition(&empty), "bad-request");
    let malformed = phone
        .iq(
            "set",
            None,
            "<block xmlns='urn:xmpp:blocking'><item jid='@@'/></block>",
        )
        .await;
    assert_eq!(error_condition(&malformed), "jid-malformed");

    let block = format!("<block xmlns='urn:xmpp:blocking'><item jid='{bob_bare}'/></block>");
    assert_result(&phone.iq("set", None, &block).await);
    for resource in [&mut phone, &mut tablet] {
        blocking_push(resource, "block", &[&bob_bare]).await;
        // The user sees the blocked contact go offline.
        resource
            .wait("bob going unavailable", |s| {
                is_presence(s, &laptop.jid, "unavailable")
            })
            .await;
    }
    // The blocked contact sees every resource of the user go offline.
    for resource in [&phone.jid, &tablet.jid] {
        laptop
            .wait("alice going unavailable", |s| {
                is_presence(s, resource, "unavailable")
            })
            .await;
    }

    // Inbound: bob finds alice unavailable, whatever he sends.
    chat(&mut laptop, &alice_bare, "to-blocker").await;
    let error = bounced(&mut laptop, "to-blocker").await;
    assert_eq!(error_condition(&error), "service-unavailable");
    let ping = laptop
        .iq("get", Some(&phone.jid), "<ping xmlns='urn:xmpp:ping'/>")
        .await;
    assert_eq!(error_condition(&ping), "service-unavailable");
    laptop.send("<presence><show>dnd</show></presence>").await;
    // Outbound: alice is told bob is blocked.
    chat(&mut phone, &bob_bare, "to-blocked").await;
    let error = bounced(&mut phone, "to-blocked").await;
    assert_eq!(error_condition(&error), "not-acceptable");
    let blocked = error.get_child("error", ns::CLIENT).unwrap();
    assert!(blocked.get_child("blocked", ns::BLOCKING_ERRORS).is_some());
    settle(&mut phone).await;
    settle(&mut laptop).await;
    assert!(!phone.received(|s| is_message(s, "to-blocker")));
    assert!(!phone.received(|s| is_presence(s, &laptop.jid, "")));
    assert!(!laptop.received(|s| is_message(s, "to-blocked")));

    // Offline, the block holds: bob's message is refused, not stored.
    drop(tablet);
    drop(phone);
    chat(&mut laptop, &alice_bare, "while-away").await;
    let error = bounced(&mut laptop, "while-away").await;
    assert_eq!(error_condition(&error), "service-unavailable");

    // It is kept across sessions, and unblocking restores both ways.
    let mut phone = login(alice_at, alice, "phone").await;
    assert_eq!(blocklist(&mut phone).await, std::slice::from_ref(&bob_bare));
    settle(&mut phone).await;
    assert!(!phone.received(|s| is_message(s, "while-away")));
    let unblock = format!("<unblock xmlns='urn:xmpp:blocking'><item jid='{bob_bare}'/></unblock>");
    assert_result(&phone.iq("set", None, &unblock).await);
    blocking_push(&mut phone, "unblock", &[&bob_bare]).await;
    laptop
        .wait("alice's presence again", |s| is_presence(s, &phone.jid, ""))
        .await;
    phone
        .wait("bob's presence again", |s| is_presence(s, &laptop.jid, ""))
        .await;
    chat(&mut laptop, &alice_bare, "welcome-back").await;
    phone
        .wait("bob's message", |s| is_message(s, "welcome-back"))
        .await;

    // Unblock all.
    let domain_block = "<block xmlns='urn:xmpp:blocking'><item jid='spam.example'/></block>";
    assert_result(&phone.iq("set", None, domain_block).await);
    blocking_push(&mut phone, "block", &["spam.example"]).await;
    assert_result(
        &phone
            .iq("set", None, "<unblock xmlns='urn:xmpp:blocking'/>")
            .await,
    );
    blocking_push(&mut phone, "unblock", &[]).await;
    assert!(blocklist(&mut phone).await.is_empty());
}

/// XEP-0280: copies of alice's conversations reach her resources that
/// enabled carbons, and only those, as the XEP's rules say.
pub async fn carbons(alice_at: SocketAddr, bob_at: SocketAddr, alice: &str, bob: &str) {
    let mut phone = login(alice_at, alice, "phone").await;
    let mut tablet = login(alice_at, alice, "tablet").await;
    let mut desktop = login(alice_at, alice, "desktop").await;
    let mut laptop = login(bob_at, bob, "laptop").await;
    let (alice_bare, bob_bare) = (phone.bare().to_string(), laptop.bare().to_string());
    for resource in [&mut phone, &mut tablet] {
        let enable = resource
            .iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>")
            .await;
        assert_result(&enable);
    }

    // Sent: the other enabled resource gets a copy, the sender none.
    chat(&mut phone, &bob_bare, "sent-1").await;
    laptop
        .wait("the message", |s| is_message(s, "sent-1"))
        .await;
    let copy = tablet
        .wait("a sent carbon", |s| carbon(s, "sent", "sent-1"))
        .await;
    assert_eq!(copy.get_attr("from"), Some(alice_bare.as_str()));
    let original = forwarded(&copy, "sent");
    assert_eq!(original.get_attr("from"), Some(phone.jid.as_str()));
    assert_eq!(original.get_attr("to"), Some(bob_bare.as_str()));

    // Received: a message to one full JID is copied to the other.
    let to_phone = format!(
        "<message to='{}' id='received-1' type='chat'><body>hi</body></message>",
        phone.jid
    );
    laptop.send(&to_phone).await;
    phone
        .wait("the message", |s| is_message(s, "received-1"))
        .await;
    let copy = tablet
        .wait("a received carbon", |s| carbon(s, "received", "received-1"))
        .await;
    assert_eq!(
        forwarded(&copy, "received").get_attr("from"),
        Some(laptop.jid.as_str())
    );

    // Private, no-copy, headline and groupchat messages are not copied.
    for (id, children, kind) in [
        ("private", "<private xmlns='urn:xmpp:carbons:2'/>", "chat"),
        ("no-copy", "<no-copy xmlns='urn:xmpp:hints'/>", "chat"),
        ("headline", "", "headline"),
    ] {
        phone
            .send(&format!(
                "<message to='{bob_bare}' id='{id}' type='{kind}'><body>x</body>{children}</message>"
            ))
            .await;
        let delivered = laptop.wait(id, |s| is_message(s, id)).await;
        // XEP-0280 §7: the sending server removes the hint.
        assert!(delivered.get_child("private", ns::CARBONS).is_none());
    }
    // A resource that disabled carbons gets none; one that never enabled
    // them got none all along.
    let disable = tablet
        .iq("set", None, "<disable xmlns='urn:xmpp:carbons:2'/>")
        .await;
    assert_result(&disable);
    chat(&mut phone, &bob_bare, "after-disable").await;
    laptop
        .wait("the message", |s| is_message(s, "after-disable"))
        .await;
    // The sender's later copy to itself is the fence for what came before.
    let enable = desktop
        .iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>")
        .await;
    assert_result(&enable);
    chat(&mut phone, &bob_bare, "fence").await;
    desktop
        .wait("a sent carbon", |s| carbon(s, "sent", "fence"))
        .await;
    settle(&mut tablet).await;
    for id in ["private", "no-copy", "headline", "after-disable"] {
        assert!(!tablet.received(|s| carbon(s, "sent", id)), "{id} copied");
        assert!(!desktop.received(|s| carbon(s, "sent", id)), "{id} copied");
    }
    assert!(!desktop.received(|s| carbon(s, "sent", "sent-1")));
    settle(&mut phone).await;
    assert!(!phone.received(|s| s.get_child("sent", ns::CARBONS).is_some()));
}

/// Whether `stanza` is a carbon of message `id` of this direction.
fn carbon(stanza: &Element, direction: &str, id: &str) -> bool {
    stanza.name() == "message"
        && stanza
            .get_child(direction, ns::CARBONS)
            .and_then(|wrapper| wrapper.get_child("forwarded", ns::FORWARD))
            .and_then(|forwarded| forwarded.get_child("message", ns::CLIENT))
            .is_some_and(|message| message.get_attr("id") == Some(id))
}

fn forwarded<'a>(copy: &'a Element, direction: &str) -> &'a Element {
    copy.get_child(direction, ns::CARBONS)
        .and_then(|wrapper| wrapper.get_child("forwarded", ns::FORWARD))
        .and_then(|forwarded| forwarded.get_child("message", ns::CLIENT))
        .unwrap()
}
