//! Cancelling presence subscriptions (RFC 6121 §3.2, §3.3), end to end
//! against a real all-in-one process with raw XML clients: whoever stops
//! receiving a contact's presence must first be told that every one of the
//! contact's available resources is unavailable, or its client keeps
//! showing them online.

mod support;

use support::Server;
use support::client::{Client, is_presence};
use xmppd_protocol::ns;

fn password(user: &str) -> String {
    format!("{user}-password")
}

async fn start(users: &[&str]) -> (tempfile::TempDir, Server) {
    let (dir, server) = support::client::start("").await;
    for user in users {
        server.add_user(user, &password(user));
    }
    (dir, server)
}

/// Logged in and available, acknowledging every roster push: these tests
/// follow subscription states through several pushes and wait for some only.
async fn login(server: &Server, user: &str, resource: &str) -> Client {
    let mut client = Client::login(server, user, &password(user), resource)
        .await
        .acknowledging_pushes();
    client.available("").await;
    client
}

/// `subscriber` subscribes to the account of `contacts` (its first client
/// approves), and ends up seeing all of them available; `mutual` when the
/// contact is already subscribed to the subscriber.
async fn subscribe(subscriber: &mut Client, contacts: &mut [Client], mutual: bool) {
    let (user, other) = (
        subscriber.bare().to_string(),
        contacts[0].bare().to_string(),
    );
    subscriber
        .send(&format!("<presence to='{other}' type='subscribe'/>"))
        .await;
    contacts[0]
        .wait("the subscription request", |s| {
            is_presence(s, &user, "subscribe")
        })
        .await;
    contacts[0]
        .send(&format!("<presence to='{user}' type='subscribed'/>"))
        .await;
    let state = if mutual { "both" } else { "to" };
    subscriber.pushed(&other, state).await;
    for contact in contacts.iter() {
        let full = contact.jid.clone();
        subscriber
            .wait(&format!("{full}'s presence"), |s| is_presence(s, &full, ""))
            .await;
    }
}

async fn assert_all_unavailable(user: &mut Client, contacts: &[Client]) {
    for contact in contacts {
        let full = contact.jid.clone();
        user.wait(&format!("unavailable presence from {full}"), |s| {
            is_presence(s, &full, "unavailable")
        })
        .await;
    }
}

/// §3.3.3: the contact's server answers an unsubscribe with unavailable
/// presence from each of the contact's available resources.
#[tokio::test]
async fn unsubscribing_delivers_unavailable_from_each_contact_resource() {
    let (_dir, server) = start(&["alice", "bob"]).await;
    let mut alice = login(&server, "alice", "phone").await;
    let mut bob = [
        login(&server, "bob", "desk").await,
        login(&server, "bob", "laptop").await,
    ];
    subscribe(&mut alice, &mut bob, false).await;

    alice
        .send("<presence to='bob@localhost' type='unsubscribe'/>")
        .await;
    alice.pushed("bob@localhost", "none").await;
    for resource in bob.iter_mut() {
        resource
            .wait("the unsubscribe", |s| {
                is_presence(s, "alice@localhost", "unsubscribe")
            })
            .await;
        resource.pushed("alice@localhost", "none").await;
    }
    assert_all_unavailable(&mut alice, &bob).await;
}

/// §3.2.2: the contact cancelling the user's subscription (`unsubscribed`)
/// has the same effect from the other side.
#[tokio::test]
async fn cancelling_a_subscription_delivers_unavailable_from_each_contact_resource() {
    let (_dir, server) = start(&["alice", "bob"]).await;
    let mut alice = login(&server, "alice", "phone").await;
    let mut bob = [
        login(&server, "bob", "desk").await,
        login(&server, "bob", "laptop").await,
    ];
    subscribe(&mut alice, &mut bob, false).await;

    bob[0]
        .send("<presence to='alice@localhost' type='unsubscribed'/>")
        .await;
    alice
        .wait("the cancellation", |s| {
            is_presence(s, "bob@localhost", "unsubscribed")
        })
        .await;
    alice.pushed("bob@localhost", "none").await;
    assert_all_unavailable(&mut alice, &bob).await;
}

/// §2.5.2: removing a contact from the roster unsubscribes from it, with
/// the same unavailable presence as an explicit unsubscribe.
#[tokio::test]
async fn removing_the_contact_from_the_roster_delivers_its_unavailable_presence() {
    let (_dir, server) = start(&["alice", "bob"]).await;
    let mut alice = login(&server, "alice", "phone").await;
    let mut bob = [login(&server, "bob", "desk").await];
    subscribe(&mut alice, &mut bob, false).await;

    alice
        .send(
            "<iq type='set' id='remove'><query xmlns='jabber:iq:roster'>\
             <item jid='bob@localhost' subscription='remove'/></query></iq>",
        )
        .await;
    alice.pushed("bob@localhost", "remove").await;
    assert_all_unavailable(&mut alice, &bob).await;
}

/// Unsubscribing from one side of a mutual subscription leaves the other
/// side's subscription, and what it sees, untouched.
#[tokio::test]
async fn unsubscribing_from_a_mutual_subscription_keeps_the_other_direction() {
    let (_dir, server) = start(&["alice", "bob"]).await;
    let mut alice = [login(&server, "alice", "phone").await];
    let mut bob = [login(&server, "bob", "desk").await];
    subscribe(&mut alice[0], &mut bob, false).await;
    subscribe(&mut bob[0], &mut alice, true).await;

    alice[0]
        .send("<presence to='bob@localhost' type='unsubscribe'/>")
        .await;
    alice[0].pushed("bob@localhost", "from").await;
    bob[0].pushed("alice@localhost", "to").await;
    assert_all_unavailable(&mut alice[0], &bob).await;
    // Bob still sees alice's presence changes.
    alice[0]
        .send("<presence><show>away</show></presence>")
        .await;
    bob[0]
        .wait("alice's update", |s| {
            is_presence(s, "alice@localhost/phone", "") && s.get_child("show", ns::CLIENT).is_some()
        })
        .await;
}
