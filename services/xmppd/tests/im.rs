//! RFC 6121 instant messaging and presence, and the server's own IQs, end to
//! end against a real all-in-one process, spoken as raw XML so that every
//! element and error condition can be checked exactly.

mod support;

use base64::Engine;
use support::client::*;
use support::{DOMAIN, RawClient, Server, ServerOptions};
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

#[tokio::test]
async fn roster_get_set_push_remove_and_versioning() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    let mut phone = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut laptop = Client::login(&server, "alice", "pw-a", "laptop").await;

    let empty = phone
        .iq("get", None, "<query xmlns='jabber:iq:roster'/>")
        .await;
    assert_result(&empty);
    let query = empty.get_child("query", ns::ROSTER).expect("roster query");
    assert_eq!(query.children().count(), 0);
    let v0 = query.get_attr("ver").expect("XEP-0237 ver").to_string();
    // XEP-0237 §3: an up-to-date cache gets an empty result.
    let cached = phone
        .iq(
            "get",
            None,
            &format!("<query xmlns='jabber:iq:roster' ver='{v0}'/>"),
        )
        .await;
    assert_result(&cached);
    assert_eq!(cached.children().count(), 0, "{cached:?}");

    let set = phone
        .iq(
            "set",
            None,
            "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'>\
             <group>Friends</group></item></query>",
        )
        .await;
    assert_result(&set);
    for resource in [&mut phone, &mut laptop] {
        let item = resource.roster_push("bob@localhost").await;
        assert_eq!(subscription_of(&item), ("none", None));
        assert_eq!(item.get_attr("name"), Some("Bob"));
        let groups: Vec<_> = item.children().map(Element::text_content).collect();
        assert_eq!(groups, ["Friends"]);
    }

    // An outdated cache gets the whole roster and the new version.
    let full = laptop
        .iq(
            "get",
            None,
            &format!("<query xmlns='jabber:iq:roster' ver='{v0}'/>"),
        )
        .await;
    let query = full.get_child("query", ns::ROSTER).expect("full roster");
    let v1 = query.get_attr("ver").unwrap().to_string();
    assert_ne!(v1, v0);
    assert_eq!(query.children().count(), 1);
    assert_eq!(
        roster_item(&full, "bob@localhost")
            .unwrap()
            .get_attr("name"),
        Some("Bob")
    );
    let cached = laptop
        .iq(
            "get",
            None,
            &format!("<query xmlns='jabber:iq:roster' ver='{v1}'/>"),
        )
        .await;
    assert_eq!(cached.children().count(), 0, "{cached:?}");

    let remove = laptop
        .iq("set", None, "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query>")
        .await;
    assert_result(&remove);
    for resource in [&mut phone, &mut laptop] {
        let item = resource.roster_push("bob@localhost").await;
        assert_eq!(item.get_attr("subscription"), Some("remove"));
    }
    let after = phone
        .iq("get", None, "<query xmlns='jabber:iq:roster'/>")
        .await;
    assert_eq!(
        after
            .get_child("query", ns::ROSTER)
            .unwrap()
            .children()
            .count(),
        0
    );

    // §2.5.3: removing an item that is not there.
    let missing = phone
        .iq("set", None, "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query>")
        .await;
    assert_eq!(error_condition(&missing), "item-not-found");
    // §2.3.3: a set with two items is a bad request.
    let two = phone
        .iq("set", None, "<query xmlns='jabber:iq:roster'><item jid='a@localhost'/><item jid='b@localhost'/></query>")
        .await;
    assert_eq!(error_condition(&two), "bad-request");
}

#[tokio::test]
async fn subscription_handshake_then_presence_flows_both_ways() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut bob = Client::login(&server, "bob", "pw-b", "desk").await;
    alice.available("").await;
    bob.available("").await;

    // A request from someone not in the roster is not a roster item yet.
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let item = alice.roster_push("bob@localhost").await;
    assert_eq!(subscription_of(&item), ("none", Some("subscribe")));
    bob.wait("the request", |s| {
        is_presence(s, "alice@localhost", "subscribe")
    })
    .await;
    let roster = bob
        .iq("get", None, "<query xmlns='jabber:iq:roster'/>")
        .await;
    assert_eq!(
        roster
            .get_child("query", ns::ROSTER)
            .unwrap()
            .children()
            .count(),
        0,
        "{roster:?}"
    );
    // The contact approves: pushes on both sides, and alice sees bob.
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    assert_eq!(
        subscription_of(&bob.roster_push("alice@localhost").await),
        ("from", None)
    );
    assert_eq!(
        subscription_of(&alice.roster_push("bob@localhost").await),
        ("to", None)
    );
    alice
        .wait("the approval", |s| {
            is_presence(s, "bob@localhost", "subscribed")
        })
        .await;
    alice
        .wait("bob's presence", |s| {
            is_presence(s, "bob@localhost/desk", "")
        })
        .await;

    subscribe(&mut bob, &mut alice, true).await;
    for (client, contact) in [(&mut alice, "bob@localhost"), (&mut bob, "alice@localhost")] {
        let roster = client
            .iq("get", None, "<query xmlns='jabber:iq:roster'/>")
            .await;
        let item = roster_item(&roster, contact).expect("contact in roster");
        assert_eq!(subscription_of(item), ("both", None));
    }

    alice
        .send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    let seen = bob
        .wait("alice's update", |s| {
            is_presence(s, "alice@localhost/phone", "") && s.get_child("show", ns::CLIENT).is_some()
        })
        .await;
    assert_eq!(
        seen.get_child("status", ns::CLIENT).unwrap().text_content(),
        "lunch"
    );
    bob.send("<presence><show>dnd</show></presence>").await;
    let seen = alice
        .wait("bob's update", |s| {
            is_presence(s, "bob@localhost/desk", "") && s.get_child("show", ns::CLIENT).is_some()
        })
        .await;
    assert_eq!(
        seen.get_child("show", ns::CLIENT).unwrap().text_content(),
        "dnd"
    );
    // Presence broadcasts carry no `to` (delivered to the bare JID's resources).
    assert_eq!(seen.get_attr("to"), None);
}

#[tokio::test]
async fn probes_on_login_unavailable_on_disconnect_and_last_activity() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut bob = Client::login(&server, "bob", "pw-b", "desk").await;
    alice.available("").await;
    bob.available("").await;
    befriend(&mut alice, &mut bob).await;

    // A contact online reports no idle time.
    let last = alice
        .iq(
            "get",
            Some("bob@localhost"),
            "<query xmlns='jabber:iq:last'/>",
        )
        .await;
    assert_eq!(
        last.get_child("query", ns::LAST)
            .unwrap()
            .get_attr("seconds"),
        Some("0")
    );

    // Unavailable with a status, then the stream goes away.
    bob.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        .await;
    alice
        .wait("bob's unavailable", |s| {
            is_presence(s, "bob@localhost/desk", "unavailable")
        })
        .await;
    drop(bob);
    let last = alice
        .iq(
            "get",
            Some("bob@localhost"),
            "<query xmlns='jabber:iq:last'/>",
        )
        .await;
    assert_result(&last);
    let query = last.get_child("query", ns::LAST).unwrap();
    let seconds: u64 = query.get_attr("seconds").unwrap().parse().unwrap();
    assert!(seconds < 3600, "{seconds}");
    assert_eq!(query.text_content(), "gone fishing");

    // Bob logs in later: his probe brings alice's current presence.
    alice
        .send("<presence><status>busy</status></presence>")
        .await;
    let mut bob = Client::login(&server, "bob", "pw-b", "tablet").await;
    bob.send("<presence/>").await;
    let current = bob
        .wait("alice's current presence", |s| {
            is_presence(s, "alice@localhost/phone", "")
        })
        .await;
    assert_eq!(
        current
            .get_child("status", ns::CLIENT)
            .unwrap()
            .text_content(),
        "busy"
    );
    alice
        .wait("bob back", |s| is_presence(s, "bob@localhost/tablet", ""))
        .await;

    // The stream closing without a goodbye still tells the contacts.
    drop(bob);
    alice
        .wait("bob's unavailable on disconnect", |s| {
            is_presence(s, "bob@localhost/tablet", "unavailable")
        })
        .await;
}

#[tokio::test]
async fn directed_presence_and_its_unavailable_on_disconnect() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("carol", "pw-c");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut carol = Client::login(&server, "carol", "pw-c", "desk").await;
    alice.available("").await;
    carol.available("").await;

    alice
        .send("<presence to='carol@localhost/desk'><status>hello you</status></presence>")
        .await;
    let directed = carol
        .wait("directed presence", |s| {
            is_presence(s, "alice@localhost/phone", "")
        })
        .await;
    assert_eq!(
        directed
            .get_child("status", ns::CLIENT)
            .unwrap()
            .text_content(),
        "hello you"
    );
    drop(alice);
    carol
        .wait("unavailable after the sender left", |s| {
            is_presence(s, "alice@localhost/phone", "unavailable")
        })
        .await;
}

/// RFC 6120 §7.7.2.2: a login that takes a session's full JID ends that
/// session, and whoever saw it available, by roster or directed presence,
/// is told so before the new one says anything.
#[tokio::test]
async fn a_replaced_session_goes_unavailable_to_contacts_and_directed_recipients() {
    let (_dir, server) = start("").await;
    for (user, password) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(user, password);
    }
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut bob = Client::login(&server, "bob", "pw-b", "desk").await;
    let mut carol = Client::login(&server, "carol", "pw-c", "desk").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.available("").await;
    }
    befriend(&mut alice, &mut bob).await;
    alice.send("<presence to='carol@localhost/desk'/>").await;
    carol
        .wait("directed presence", |s| {
            is_presence(s, "alice@localhost/phone", "")
        })
        .await;

    let mut again = Client::login(&server, "alice", "pw-a", "phone").await;
    for (client, what) in [(&mut bob, "the contact"), (&mut carol, "the recipient")] {
        client
            .wait(what, |s| {
                is_presence(s, "alice@localhost/phone", "unavailable")
            })
            .await;
    }
    again.available("").await;
    bob.wait("the new session's presence", |s| {
        is_presence(s, "alice@localhost/phone", "")
    })
    .await;
    drop(alice);
}

#[tokio::test]
async fn messages_follow_the_delivery_rules_of_priority_and_resource() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut high = Client::login(&server, "bob", "pw-b", "high").await;
    let mut low = Client::login(&server, "bob", "pw-b", "low").await;
    let mut negative = Client::login(&server, "bob", "pw-b", "negative").await;
    high.available("<priority>5</priority>").await;
    low.available("<priority>1</priority>").await;
    negative.available("<priority>-1</priority>").await;

    let message = |to: &str, id: &str| {
        format!("<message to='{to}' type='chat' id='{id}'><body>{id}</body></message>")
    };
    // Stanzas of one stream stay in order: once a resource has the marker
    // sent to it by full JID, anything sent to it before has arrived too.
    async fn has_before_marker(
        client: &mut Client,
        alice: &mut Client,
        marker: &str,
        id: &str,
    ) -> bool {
        let to = client.jid.clone();
        alice
            .send(&format!(
                "<message to='{to}' type='chat' id='{marker}'><body>m</body></message>"
            ))
            .await;
        client.wait(marker, |s| is_message(s, marker)).await;
        client.received(|s| is_message(s, id))
    }

    // Bare JID: the highest priority only; never a negative one.
    alice.send(&message("bob@localhost", "bare1")).await;
    let got = high.wait("bare1", |s| is_message(s, "bare1")).await;
    assert_eq!(got.get_attr("from"), Some("alice@localhost/phone"));
    assert_eq!(
        got.get_child("body", ns::CLIENT).unwrap().text_content(),
        "bare1"
    );
    assert!(!has_before_marker(&mut low, &mut alice, "mark-low-1", "bare1").await);
    // Full JID: that resource, even of negative priority (the marker itself).
    assert!(!has_before_marker(&mut negative, &mut alice, "mark-neg-1", "bare1").await);

    // An unknown resource: a chat message follows the bare JID rules.
    alice.send(&message("bob@localhost/nowhere", "lost1")).await;
    high.wait("lost1", |s| is_message(s, "lost1")).await;
    assert!(!has_before_marker(&mut low, &mut alice, "mark-low-2", "lost1").await);

    // A tie at the top: every resource of that priority.
    low.available("<priority>5</priority>").await;
    alice.send(&message("bob@localhost", "tie1")).await;
    high.wait("tie1", |s| is_message(s, "tie1")).await;
    low.wait("tie1", |s| is_message(s, "tie1")).await;
    assert!(!has_before_marker(&mut negative, &mut alice, "mark-neg-2", "tie1").await);

    // IQs to a full JID reach that resource, and its answer comes back.
    alice
        .send(
            "<iq type='get' id='v1' to='bob@localhost/low'><query xmlns='jabber:iq:version'/></iq>",
        )
        .await;
    let request = low
        .wait("the IQ", |s| {
            s.name() == "iq" && s.get_attr("id") == Some("v1")
        })
        .await;
    assert_eq!(request.get_attr("from"), Some("alice@localhost/phone"));
    low.send("<iq type='result' id='v1' to='alice@localhost/phone'><query xmlns='jabber:iq:version'><name>raw</name></query></iq>")
        .await;
    let answer = alice
        .wait("the IQ answer", |s| {
            s.name() == "iq" && s.get_attr("id") == Some("v1")
        })
        .await;
    assert_result(&answer);
    assert_eq!(answer.get_attr("from"), Some("bob@localhost/low"));
    // An IQ to an unknown resource is not delivered elsewhere (§8.5.3.2.1).
    let unknown = alice
        .iq(
            "get",
            Some("bob@localhost/nowhere"),
            "<query xmlns='jabber:iq:version'/>",
        )
        .await;
    assert_eq!(error_condition(&unknown), "service-unavailable");
}

#[tokio::test]
async fn unknown_accounts_get_service_unavailable() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    alice.available("").await;

    alice
        .send("<message to='nobody@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let bounce = alice.wait("the bounce", |s| is_message(s, "m1")).await;
    assert_eq!(error_condition(&bounce), "service-unavailable");
    assert_eq!(bounce.get_attr("from"), Some("nobody@localhost"));
    for payload in [
        "<query xmlns='jabber:iq:version'/>",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        "<query xmlns='jabber:iq:last'/>",
        "<ping xmlns='urn:xmpp:ping'/>",
    ] {
        let answer = alice.iq("get", Some("nobody@localhost"), payload).await;
        assert_eq!(error_condition(&answer), "service-unavailable", "{payload}");
    }
    // A set in an unknown namespace to the server itself.
    let answer = alice
        .iq("set", Some(DOMAIN), "<query xmlns='urn:example:nothing'/>")
        .await;
    assert_eq!(error_condition(&answer), "service-unavailable");
}

#[tokio::test]
async fn offline_messages_arrive_at_next_presence_with_a_delay_stamp() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    for id in ["off1", "off2", "off3"] {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='{id}'><body>{id}</body></message>"
            ))
            .await;
    }
    // A headline is not stored (XEP-0160 §3).
    alice
        .send("<message to='bob@localhost' type='headline' id='news'><body>n</body></message>")
        .await;
    // Once the account's replica answered an IQ sent after them, the
    // messages have been stored.
    let barrier = alice
        .iq(
            "get",
            Some("bob@localhost"),
            "<query xmlns='jabber:iq:last'/>",
        )
        .await;
    assert_eq!(error_condition(&barrier), "forbidden");

    // Bound but not yet available: still nothing delivered.
    let mut bob = Client::login(&server, "bob", "pw-b", "desk").await;
    let ping = bob
        .iq("get", Some(DOMAIN), "<ping xmlns='urn:xmpp:ping'/>")
        .await;
    assert_result(&ping);
    assert!(
        !bob.received(|s| s.name() == "message"),
        "{:?}",
        bob.backlog
    );
    bob.send("<presence/>").await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let message = bob
            .wait("an offline message", |s| s.name() == "message")
            .await;
        assert_eq!(message.get_attr("from"), Some("alice@localhost/phone"));
        let delay = message
            .get_child("delay", ns::DELAY)
            .expect("XEP-0203 delay");
        assert_eq!(delay.get_attr("from"), Some(DOMAIN));
        let stamp = delay.get_attr("stamp").unwrap();
        assert!(
            stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
        order.push(message.get_attr("id").unwrap().to_string());
    }
    assert_eq!(order, ["off1", "off2", "off3"]);
    // Handed out once: a later resource gets none.
    let mut again = Client::login(&server, "bob", "pw-b", "other").await;
    again.available("").await;
    let ping = again
        .iq("get", Some(DOMAIN), "<ping xmlns='urn:xmpp:ping'/>")
        .await;
    assert_result(&ping);
    assert!(
        !again.received(|s| s.name() == "message"),
        "{:?}",
        again.backlog
    );
    assert!(!bob.received(|s| is_message(s, "news")));
}

#[tokio::test]
async fn disco_info_lists_exactly_the_implemented_features() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;

    let info = alice
        .iq(
            "get",
            Some(DOMAIN),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert_result(&info);
    assert_eq!(info.get_attr("from"), Some(DOMAIN));
    let query = info.get_child("query", ns::DISCO_INFO).unwrap();
    let identities: Vec<_> = query
        .children()
        .filter(|c| c.name() == "identity")
        .map(|c| (c.get_attr("category").unwrap(), c.get_attr("type").unwrap()))
        .collect();
    assert_eq!(identities, [("server", "im")]);
    let mut features: Vec<_> = query
        .children()
        .filter(|c| c.name() == "feature")
        .map(|c| c.get_attr("var").unwrap())
        .collect();
    features.sort_unstable();
    let mut expected = vec![
        "http://jabber.org/protocol/commands",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "jabber:iq:last",
        "jabber:iq:register",
        "jabber:iq:version",
        "msgoffline",
        "urn:xmpp:blocking",
        "urn:xmpp:carbons:2",
        "urn:xmpp:features:rosterver",
        "urn:xmpp:ping",
        "urn:xmpp:time",
    ];
    expected.sort_unstable();
    assert_eq!(features, expected);

    let items = alice
        .iq(
            "get",
            Some(DOMAIN),
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        )
        .await;
    assert_result(&items);
    // The server's one item is its chat service (XEP-0045 §6.1).
    let listed: Vec<_> = items
        .get_child("query", ns::DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|item| item.get_attr("jid"))
        .collect();
    assert_eq!(listed, [format!("conference.{DOMAIN}")]);
    // A node the server does not serve is not found (XEP-0030 §3.1, §4.1).
    for namespace in [ns::DISCO_INFO, ns::DISCO_ITEMS] {
        let node = alice
            .iq(
                "get",
                Some(DOMAIN),
                &format!("<query xmlns='{namespace}' node='nope'/>"),
            )
            .await;
        assert_eq!(error_condition(&node), "item-not-found");
    }
    // An account answers for itself with the account identity.
    let own = alice
        .iq(
            "get",
            Some("alice@localhost"),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    let identity = own
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        (identity.get_attr("category"), identity.get_attr("type")),
        (Some("account"), Some("registered"))
    );
}

#[tokio::test]
async fn a_disabled_module_is_neither_advertised_nor_answered() {
    let (_dir, server) = start("[modules.carbons]\nenabled = false\n").await;
    server.add_user("alice", "pw-a");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let info = alice
        .iq(
            "get",
            Some(DOMAIN),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    let query = info.get_child("query", ns::DISCO_INFO).unwrap();
    let advertised = |var: &str| {
        query
            .children()
            .any(|c| c.name() == "feature" && c.get_attr("var") == Some(var))
    };
    assert!(!advertised(ns::CARBONS));
    assert!(advertised(ns::BLOCKING));
    let enable = alice
        .iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>")
        .await;
    assert_eq!(error_condition(&enable), "service-unavailable");
}

#[tokio::test]
async fn a_module_section_no_module_reads_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xmppd.toml");
    let toml = format!(
        "[server]\ndata_dir = {:?}\n[listen]\nc2s = \"\"\nc2s_tls = \"\"\n\
         [observability]\nhttp = \"\"\n[modules.carbonz]\nenabled = false\n",
        dir.path().display().to_string()
    );
    std::fs::write(&config, toml).unwrap();
    let output = support::xmppd()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[modules.carbonz]: no such module"),
        "{stderr}"
    );
}

#[tokio::test]
async fn server_version_time_last_and_ping() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;

    let version = alice
        .iq("get", Some(DOMAIN), "<query xmlns='jabber:iq:version'/>")
        .await;
    assert_result(&version);
    let query = version.get_child("query", ns::VERSION).unwrap();
    assert_eq!(
        query.get_child("name", ns::VERSION).unwrap().text_content(),
        "xmppd"
    );
    assert!(
        !query
            .get_child("version", ns::VERSION)
            .unwrap()
            .text_content()
            .is_empty()
    );

    let time = alice
        .iq("get", Some(DOMAIN), "<time xmlns='urn:xmpp:time'/>")
        .await;
    assert_result(&time);
    let time = time.get_child("time", ns::TIME).unwrap();
    assert_eq!(
        time.get_child("tzo", ns::TIME).unwrap().text_content(),
        "+00:00"
    );
    let utc = time.get_child("utc", ns::TIME).unwrap().text_content();
    let bytes = utc.as_bytes();
    assert!(
        utc.len() >= 20
            && bytes[4] == b'-'
            && bytes[10] == b'T'
            && bytes[13] == b':'
            && utc.ends_with('Z'),
        "{utc}"
    );

    // XEP-0012 §5: the server's uptime.
    let last = alice
        .iq("get", Some(DOMAIN), "<query xmlns='jabber:iq:last'/>")
        .await;
    assert_result(&last);
    let seconds: u64 = last
        .get_child("query", ns::LAST)
        .unwrap()
        .get_attr("seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds < 3600, "{seconds}");

    let ping = alice
        .iq("get", Some(DOMAIN), "<ping xmlns='urn:xmpp:ping'/>")
        .await;
    assert_result(&ping);
    assert_eq!(ping.get_attr("from"), Some(DOMAIN));
    assert_eq!(ping.children().count(), 0);
}

/// A fresh stream that tries PLAIN: `true` on `<success/>`, `false` on a
/// `<not-authorized/>` failure.
async fn plain_login_succeeds(server: &Server, user: &str, password: &str) -> bool {
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    client
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
    let answer = client.expect("/>").await;
    if answer.contains("<success") {
        return true;
    }
    assert!(
        answer.contains("<failure") && answer.contains("<not-authorized"),
        "{answer}"
    );
    false
}

/// A stream that has not authenticated, up to its features.
async fn unauthenticated(server: &Server) -> (Client, String) {
    let mut raw = RawClient::connect(server.c2s).await;
    raw.send(&format!(
        "<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    ))
    .await;
    let features = raw.expect("</stream:features>").await;
    let client = Client::new(raw, String::new());
    (client, features)
}

#[tokio::test]
async fn in_band_registration_before_authentication() {
    let (_dir, server) = start("").await;
    server.add_user("taken", "pw");
    let (mut client, features) = unauthenticated(&server).await;
    assert!(
        features.contains("<register xmlns='http://jabber.org/features/iq-register'/>"),
        "{features}"
    );

    let form = client
        .iq("get", None, "<query xmlns='jabber:iq:register'/>")
        .await;
    assert_result(&form);
    let query = form.get_child("query", ns::REGISTER).unwrap();
    assert!(
        query.get_child("username", ns::REGISTER).is_some()
            && query.get_child("password", ns::REGISTER).is_some()
    );

    let taken = client.iq("set", None,
        "<query xmlns='jabber:iq:register'><username>taken</username><password>x</password></query>",
    )
    .await;
    assert_eq!(error_condition(&taken), "conflict");
    let created = client.iq("set", None,
        "<query xmlns='jabber:iq:register'><username>newbie</username><password>fresh-pw</password></query>",
    )
    .await;
    assert_result(&created);

    let mut newbie = Client::login(&server, "newbie", "fresh-pw", "first").await;
    newbie.available("").await;
    assert!(!plain_login_succeeds(&server, "newbie", "wrong").await);
}

#[tokio::test]
async fn registration_disabled_is_not_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions {
        role: "run",
        data_dir: dir.path(),
        extra: "[auth]\nrequire_tls = false\nregistration = false\n",
        env: Vec::new(),
    });
    server.ready().await;
    let (mut client, features) = unauthenticated(&server).await;
    assert!(!features.contains("iq-register"), "{features}");
    let refused = client.iq("set", None,
        "<query xmlns='jabber:iq:register'><username>newbie</username><password>pw</password></query>",
    )
    .await;
    assert_eq!(error_condition(&refused), "not-allowed");
    assert!(!plain_login_succeeds(&server, "newbie", "pw").await);
}

#[tokio::test]
async fn password_change_then_only_the_new_password_works() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "old-pw");
    let mut alice = Client::login(&server, "alice", "old-pw", "phone").await;
    let form = alice
        .iq("get", Some(DOMAIN), "<query xmlns='jabber:iq:register'/>")
        .await;
    let query = form.get_child("query", ns::REGISTER).unwrap();
    assert!(query.get_child("registered", ns::REGISTER).is_some());
    assert_eq!(
        query
            .get_child("username", ns::REGISTER)
            .unwrap()
            .text_content(),
        "alice"
    );

    // Someone else's username is refused.
    let wrong = alice
        .iq(
            "set",
            Some(DOMAIN),
            "<query xmlns='jabber:iq:register'><username>mallory</username><password>x</password></query>",
        )
        .await;
    assert_eq!(error_condition(&wrong), "not-authorized");
    let changed = alice
        .iq(
            "set",
            Some(DOMAIN),
            "<query xmlns='jabber:iq:register'><username>alice</username><password>new-pw</password></query>",
        )
        .await;
    assert_result(&changed);
    assert!(plain_login_succeeds(&server, "alice", "new-pw").await);
    assert!(!plain_login_succeeds(&server, "alice", "old-pw").await);
    // The edge derived the new keys with the configured count.
    assert_eq!(stored_iterations(&server, "alice").await, 10_000);

    let empty = alice
        .iq(
            "set",
            None,
            "<query xmlns='jabber:iq:register'><username>alice</username><password/></query>",
        )
        .await;
    assert_eq!(error_condition(&empty), "bad-request");
    // A password that is no RFC 8265 OpaqueString (a control character).
    let control = alice
        .iq(
            "set",
            None,
            "<query xmlns='jabber:iq:register'><username>alice</username><password>a&#x85;b</password></query>",
        )
        .await;
    assert_eq!(error_condition(&control), "not-acceptable");
    assert!(plain_login_succeeds(&server, "alice", "new-pw").await);
}

/// Keys stored with fewer iterations than configured (by an older release)
/// are replaced by the first PLAIN login, the only kind that shows the
/// server the password (a SCRAM login proves it without sending it).
#[tokio::test]
async fn plain_login_upgrades_keys_stored_with_fewer_iterations() {
    let (_dir, server) = start("").await;
    let added = support::xmppd()
        .arg("--config")
        .arg(&server.config)
        .args(["user", "add", "old@localhost"])
        .env("XMPPD_PASSWORD", "old-pw")
        .env("XMPPD_AUTH__SCRAM_ITERATIONS", "4096")
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    assert_eq!(stored_iterations(&server, "old").await, 4096);
    assert!(!plain_login_succeeds(&server, "old", "wrong").await);
    assert_eq!(stored_iterations(&server, "old").await, 4096);
    assert!(plain_login_succeeds(&server, "old", "old-pw").await);
    assert_eq!(stored_iterations(&server, "old").await, 10_000);
    // The upgraded keys are for the same password.
    Client::login(&server, "old", "old-pw", "again").await;
    assert!(!plain_login_succeeds(&server, "old", "wrong").await);
}

/// The iteration count the server's SCRAM-SHA-256 challenge names for
/// `user`: that of its stored keys.
async fn stored_iterations(server: &Server, user: &str) -> u32 {
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    let client_first = format!("n,,n={user},r=cdefghijklmnopqrstuv");
    let b64 = base64::engine::general_purpose::STANDARD;
    client
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            b64.encode(client_first)
        ))
        .await;
    let challenge = client.expect("</challenge>").await;
    let encoded = challenge
        .rsplit_once("'>")
        .and_then(|(_, rest)| rest.strip_suffix("</challenge>"))
        .unwrap_or_else(|| panic!("no challenge: {challenge}"));
    let server_first = String::from_utf8(b64.decode(encoded).unwrap()).unwrap();
    server_first
        .split(',')
        .find_map(|part| part.strip_prefix("i="))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no iteration count: {server_first}"))
}

#[tokio::test]
async fn account_removal_closes_the_stream_and_the_account() {
    let (_dir, server) = start("").await;
    server.add_user("alice", "pw-a");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    let mut other = Client::login(&server, "alice", "pw-a", "laptop").await;
    alice.available("").await;
    alice
        .send("<iq type='set' id='bye' to='localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    // Every stream of the account ends with <not-authorized/> (XEP-0077 §3.2).
    for client in [&mut alice, &mut other] {
        client.raw.expect("<stream:error>").await;
        client.raw.expect("<not-authorized").await;
        assert!(
            client.raw.closed().await,
            "stream still open: {}",
            client.raw.pending()
        );
    }
    assert!(!plain_login_succeeds(&server, "alice", "pw-a").await);
}

#[tokio::test]
async fn offline_storage_is_limited_per_account_and_the_rest_bounce() {
    let (_dir, server) = start("[limits]\nmax_offline_messages = 2\n").await;
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Client::login(&server, "alice", "pw-a", "phone").await;
    for id in ["q1", "q2", "q3"] {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='{id}'><body>{id}</body></message>"
            ))
            .await;
    }
    // The third does not fit: its sender is told (XEP-0160 §3).
    let bounced = alice
        .wait("the bounce of q3", |s| {
            s.name() == "message" && s.get_attr("type") == Some("error")
        })
        .await;
    assert_eq!(bounced.get_attr("id"), Some("q3"));
    assert_eq!(error_condition(&bounced), "service-unavailable");

    let mut bob = Client::login(&server, "bob", "pw-b", "desk").await;
    bob.send("<presence/>").await;
    let mut order = Vec::new();
    for _ in 0..2 {
        let message = bob
            .wait("an offline message", |s| s.name() == "message")
            .await;
        order.push(message.get_attr("id").unwrap().to_string());
    }
    assert_eq!(order, ["q1", "q2"]);
}
