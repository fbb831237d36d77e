//! Account features end to end, written once and run against the
//! all-in-one process (`tests/features.rs`) and against the cluster with
//! the users on different connection-managers (`tests/cluster.rs`).
//! Each takes users that exist with the password `pw-<user>` and are
//! strangers to each other, and the client port each logs in at.

use std::net::SocketAddr;

use serde_json::json;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use super::DOMAIN;
use super::admin::AdminApi;
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

/// The roster a client gets (RFC 6121 §2.1.3), sent with `ver` when given
/// (XEP-0237): its query, or `None` for an empty result (the cached
/// version is current).
async fn roster_get(client: &mut Client, ver: Option<&str>) -> Option<Element> {
    let ver = ver.map(|ver| format!(" ver='{ver}'")).unwrap_or_default();
    let answer = client
        .iq(
            "get",
            None,
            &format!("<query xmlns='jabber:iq:roster'{ver}/>"),
        )
        .await;
    assert_result(&answer);
    answer.get_child("query", ns::ROSTER).cloned()
}

/// The contacts of a roster query, with their subscription and groups.
fn roster_contacts(query: &Element) -> Vec<(String, String, Vec<String>)> {
    query
        .children()
        .filter(|item| item.is("item", ns::ROSTER))
        .map(|item| {
            assert_eq!(item.get_attr("ask"), None, "{item:?}");
            let groups = item
                .children()
                .filter(|group| group.is("group", ns::ROSTER))
                .map(Element::text_content)
                .collect();
            (
                item.get_attr("jid").unwrap().to_string(),
                item.get_attr("subscription").unwrap().to_string(),
                groups,
            )
        })
        .collect()
}

/// Shared roster groups, made through the admin `api` (an administrator's):
/// `a` and `b`, members of one group, see each other in their rosters and
/// get each other's presence without subscribing; `a` cannot remove `b`;
/// `a`, online, gets roster pushes and presence as `c` joins and leaves
/// (when `c`'s presence still reaches it through a subscription made
/// meanwhile), and `b` as the group is deleted. The three are strangers, `a` logs in at
/// `c2s_a`, the others at `c2s_b`.
pub async fn shared_groups(
    c2s_a: SocketAddr,
    c2s_b: SocketAddr,
    api: &AdminApi,
    [a, b, c]: [&str; 3],
) {
    let bare = |user: &str| format!("{user}@{DOMAIN}");
    let staff = "/api/v1/groups/Staff";
    let member = |user: &str| format!("{staff}/members/{}", bare(user).replace('@', "%40"));
    let made = api.post("/api/v1/groups", json!({"name": "Staff"})).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    for user in [a, b] {
        assert_eq!(api.put(&member(user), json!({})).await.status, 204);
    }
    let staff_item = |user: &str| (bare(user), "both".to_string(), vec!["Staff".to_string()]);

    // In each other's rosters, and each other's presence, unasked.
    let mut alice = Client::login_at(c2s_a, a, &format!("pw-{a}"), "desk").await;
    let roster = roster_get(&mut alice, None).await.unwrap();
    assert_eq!(roster_contacts(&roster), [staff_item(b)]);
    let version = roster.get_attr("ver").unwrap().to_string();
    assert!(roster_get(&mut alice, Some(&version)).await.is_none());
    alice.available("").await;
    let mut bob = login(c2s_b, b, "laptop").await;
    let (alice_full, bob_full) = (alice.jid.clone(), bob.jid.clone());
    alice
        .wait("the group-mate's presence", |s| {
            is_presence(s, &bob_full, "")
        })
        .await;
    bob.wait("the answer to its probe", |s| {
        is_presence(s, &alice_full, "")
    })
    .await;

    // A group-mate stays in the roster.
    let remove = format!(
        "<query xmlns='jabber:iq:roster'><item jid='{}' subscription='remove'/></query>",
        bare(b)
    );
    let refused = alice.iq("set", None, &remove).await;
    assert_eq!(error_condition(&refused), "not-acceptable");

    // A newcomer appears at once, both ways, with its presence.
    let mut carol = login(c2s_b, c, "phone").await;
    let carol_full = carol.jid.clone();
    assert_eq!(api.put(&member(c), json!({})).await.status, 204);
    let pushed = alice.roster_push(&bare(c)).await;
    assert_eq!(pushed.get_attr("subscription"), Some("both"));
    for user in [a, b] {
        carol.roster_push(&bare(user)).await;
    }
    alice
        .wait("the newcomer's presence", |s| {
            is_presence(s, &carol_full, "")
        })
        .await;
    carol
        .wait("the members' presence", |s| is_presence(s, &alice_full, ""))
        .await;
    // The cached roster is no longer current.
    let roster = roster_get(&mut alice, Some(&version)).await.unwrap();
    assert_eq!(roster_contacts(&roster), [staff_item(b), staff_item(c)]);
    assert_ne!(roster.get_attr("ver"), Some(version.as_str()));

    // A subscription between members is theirs, and shows no change.
    alice
        .send(&format!("<presence to='{}' type='subscribe'/>", bare(c)))
        .await;
    carol
        .wait("the subscription request", |s| {
            is_presence(s, &bare(a), "subscribe")
        })
        .await;
    carol
        .send(&format!("<presence to='{}' type='subscribed'/>", bare(a)))
        .await;
    alice
        .wait("the approval", |s| is_presence(s, &bare(c), "subscribed"))
        .await;

    // As it leaves, only what the subscription carries stays: the group
    // leaves the items, and alice's presence stops reaching carol.
    assert_eq!(api.delete(&member(c)).await.status, 204);
    let pushed = alice.roster_push(&bare(c)).await;
    assert_eq!(pushed.get_attr("subscription"), Some("to"));
    assert!(
        pushed.get_child("group", ns::ROSTER).is_none(),
        "{pushed:?}"
    );
    let pushed = carol.roster_push(&bare(a)).await;
    assert_eq!(pushed.get_attr("subscription"), Some("from"));
    carol
        .wait(
            "the unavailable presence of a mate it no longer sees",
            |s| is_presence(s, &alice_full, "unavailable"),
        )
        .await;
    carol
        .send("<presence><status>still here</status></presence>")
        .await;
    alice
        .wait("the subscribed contact's new presence", |s| {
            is_presence(s, &carol_full, "") && s.get_child("status", ns::CLIENT).is_some()
        })
        .await;
    assert!(!alice.received(|s| is_presence(s, &carol_full, "unavailable")));

    // The group's end ends the rest.
    assert_eq!(api.delete(staff).await.status, 204);
    let pushed = bob.roster_push(&bare(a)).await;
    assert_eq!(pushed.get_attr("subscription"), Some("remove"));
    bob.wait("the unavailable presence of the last mate", |s| {
        is_presence(s, &alice_full, "unavailable")
    })
    .await;
    let roster = roster_get(&mut bob, None).await.unwrap();
    assert_eq!(roster_contacts(&roster), []);
}
