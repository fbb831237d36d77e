//! Group chat (XEP-0045) end to end against a real all-in-one process with
//! raw XML clients: discovery, joins and their refusals, messages, roles
//! and affiliations, history, destruction, and the service's limits. The
//! chat scenario runs against the cluster too (`cluster.rs`).

mod support;

use support::Server;
use support::client::{Client, assert_result, error_condition, start};
use support::muc::{
    codes, config_form, configure, create, heard, is_from, item, join, join_refused, login,
    password, room, say, send_join, service, user_x,
};
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

async fn with_users(extra: &str, users: &[&str]) -> (tempfile::TempDir, Server) {
    let (dir, server) = start(extra).await;
    for user in users {
        server.add_user(user, &password(user));
    }
    (dir, server)
}

fn unavailable_from(stanza: &Element, from: &str) -> bool {
    is_from(stanza, "presence", from) && stanza.get_attr("type") == Some("unavailable")
}

#[tokio::test]
async fn chat() {
    let (_dir, server) = with_users("", &["alice", "bob"]).await;
    support::muc::chat(server.c2s, server.c2s).await;
}

/// The server lists its chat service; the service lists its public rooms
/// and describes each with the `muc#roominfo` form.
#[tokio::test]
async fn discovery() {
    let (_dir, server) = with_users("", &["alice"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let items = alice
        .iq(
            "get",
            Some("localhost"),
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        )
        .await;
    let listed: Vec<&str> = items
        .get_child("query", ns::DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|item| item.get_attr("jid"))
        .collect();
    assert_eq!(listed, vec![service().as_str()]);
    let info = alice
        .iq(
            "get",
            Some(&service()),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    let query = info.get_child("query", ns::DISCO_INFO).unwrap();
    let identity = query.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(identity.get_attr("category"), Some("conference"));
    assert!(query.children().any(|f| f.get_attr("var") == Some(ns::MUC)));

    create(
        &mut alice,
        &room("public"),
        "Alice",
        &[("muc#roomconfig_roomname", "Public")],
    )
    .await;
    create(
        &mut alice,
        &room("hidden"),
        "Alice",
        &[("muc#roomconfig_publicroom", "0")],
    )
    .await;
    let items = alice
        .iq(
            "get",
            Some(&service()),
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        )
        .await;
    let rooms: Vec<(&str, Option<&str>)> = items
        .get_child("query", ns::DISCO_ITEMS)
        .unwrap()
        .children()
        .map(|item| (item.get_attr("jid").unwrap(), item.get_attr("name")))
        .collect();
    let public = room("public");
    assert_eq!(rooms, vec![(public.as_str(), Some("Public"))]);

    let info = alice
        .iq(
            "get",
            Some(&room("hidden")),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    let query = info.get_child("query", ns::DISCO_INFO).unwrap();
    let features: Vec<&str> = query.children().filter_map(|f| f.get_attr("var")).collect();
    for feature in [
        ns::MUC,
        "muc_hidden",
        "muc_temporary",
        "muc_open",
        "muc_semianonymous",
    ] {
        assert!(features.contains(&feature), "{feature} in {features:?}");
    }
    let form = query.get_child("x", ns::DATA_FORMS).unwrap();
    let occupants = form
        .children()
        .find(|f| f.get_attr("var") == Some("muc#roominfo_occupants"))
        .unwrap();
    assert_eq!(occupants.children().next().unwrap().text_content(), "1");
    let missing = alice
        .iq(
            "get",
            Some(&room("nowhere")),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert_eq!(error_condition(&missing), "item-not-found");
}

/// §7.2: every reason to refuse a join, with its error, and none of them
/// disturbs the occupants.
#[tokio::test]
async fn refused_joins() {
    let (_dir, server) = with_users("", &["alice", "bob", "carol"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let mut bob = login(server.c2s, "bob").await;
    let room = room("fortress");
    create(&mut alice, &room, "Alice", &[]).await;

    // No nick.
    bob.send(&format!("<presence to='{room}'/>")).await;
    let refused = bob
        .wait("the refused nickless join", |s| {
            is_from(s, "presence", &room) && s.get_attr("type") == Some("error")
        })
        .await;
    assert_eq!(error_condition(&refused), "jid-malformed");
    // A nick taken by someone else.
    assert_eq!(
        join_refused(&mut bob, &room, "Alice", Some("")).await,
        "conflict"
    );
    // A message from someone not in the room.
    bob.send(&format!(
        "<message to='{room}' type='groupchat' id='x'><body>hi</body></message>"
    ))
    .await;
    let refused = bob
        .wait("the refused message", |s| is_from(s, "message", &room))
        .await;
    assert_eq!(error_condition(&refused), "not-acceptable");

    configure(
        &mut alice,
        &room,
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "sesame"),
        ],
    )
    .await;
    assert_eq!(
        join_refused(&mut bob, &room, "Bob", Some("")).await,
        "not-authorized"
    );
    assert_eq!(
        join_refused(&mut bob, &room, "Bob", Some("<password>wrong</password>")).await,
        "not-authorized"
    );
    join(&mut bob, &room, "Bob", Some("<password>sesame</password>")).await;

    configure(&mut alice, &room, &[("muc#roomconfig_membersonly", "1")]).await;
    // Bob, no member, is removed as the room becomes members-only.
    let removed = bob
        .wait("its removal", |s| {
            unavailable_from(s, &format!("{room}/Bob"))
        })
        .await;
    assert_eq!(codes(&removed), vec![322, 110]);
    let mut carol = login(server.c2s, "carol").await;
    assert_eq!(
        join_refused(
            &mut carol,
            &room,
            "Carol",
            Some("<password>sesame</password>")
        )
        .await,
        "registration-required"
    );

    // A malformed configuration form changes nothing.
    let answer = alice
        .iq(
            "set",
            Some(&room),
            &config_form(&[("muc#roomconfig_membersonly", "maybe")]),
        )
        .await;
    assert_eq!(error_condition(&answer), "not-acceptable");
    let answer = alice
        .iq(
            "set",
            Some(&room),
            "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        )
        .await;
    assert_eq!(error_condition(&answer), "bad-request");
    // Only owners configure.
    let answer = carol
        .iq(
            "get",
            Some(&room),
            "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        )
        .await;
    assert_eq!(error_condition(&answer), "forbidden");
    // Alice never noticed any of it but Bob's coming and going.
    alice
        .send(&format!(
            "<message to='{room}' type='groupchat' id='still'><body>alone</body></message>"
        ))
        .await;
    heard(&mut alice, &format!("{room}/Alice"), "still", "alone").await;
}

/// §7.6: a nick change is unavailable with 303 and the new nick, then
/// available under the new nick; a taken nick is a conflict.
#[tokio::test]
async fn nick_change() {
    let (_dir, server) = with_users("", &["alice", "bob"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let mut bob = login(server.c2s, "bob").await;
    let room = room("masks");
    create(&mut alice, &room, "Alice", &[]).await;
    join(&mut bob, &room, "Bob", Some("")).await;
    bob.send(&format!("<presence to='{room}/Alice'/>")).await;
    let refused = bob
        .wait("the conflict", |s| {
            is_from(s, "presence", &format!("{room}/Alice")) && s.get_attr("type") == Some("error")
        })
        .await;
    assert_eq!(error_condition(&refused), "conflict");

    bob.send(&format!("<presence to='{room}/Robert'/>")).await;
    for (client, own) in [(&mut alice, false), (&mut bob, true)] {
        let gone = client
            .wait("the old nick leaving", |s| {
                unavailable_from(s, &format!("{room}/Bob"))
            })
            .await;
        let expected = if own { vec![303, 110] } else { vec![303] };
        assert_eq!(codes(&gone), expected);
        assert_eq!(item(&gone).get_attr("nick"), Some("Robert"));
        client
            .wait("the new nick", |s| {
                is_from(s, "presence", &format!("{room}/Robert")) && s.get_attr("type").is_none()
            })
            .await;
    }
    say(&mut bob, &room, "r1", "new name").await;
    heard(&mut alice, &format!("{room}/Robert"), "r1", "new name").await;
}

/// §8 and §9: voice in a moderated room, kick (307), ban (301) and the
/// lists only admins and owners read.
#[tokio::test]
async fn moderation() {
    let (_dir, server) = with_users("", &["alice", "bob", "carol"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let mut bob = login(server.c2s, "bob").await;
    let mut carol = login(server.c2s, "carol").await;
    let room = room("court");
    create(
        &mut alice,
        &room,
        "Alice",
        &[("muc#roomconfig_moderatedroom", "1")],
    )
    .await;
    let own = join(&mut bob, &room, "Bob", Some("")).await;
    assert_eq!(item(&own).get_attr("role"), Some("visitor"));
    say(&mut bob, &room, "v1", "may I?").await;
    let refused = bob
        .wait("the refused message", |s| {
            is_from(s, "message", &room) && s.get_attr("type") == Some("error")
        })
        .await;
    assert_eq!(error_condition(&refused), "forbidden");

    let admin = |items: &str| {
        format!("<query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query>")
    };
    // Voice.
    assert_result(
        &alice
            .iq(
                "set",
                Some(&room),
                &admin("<item nick='Bob' role='participant'/>"),
            )
            .await,
    );
    let voiced = bob
        .wait("its voice", |s| {
            is_from(s, "presence", &format!("{room}/Bob"))
                && item(s).get_attr("role") == Some("participant")
        })
        .await;
    assert_eq!(codes(&voiced), vec![110]);
    say(&mut bob, &room, "v2", "thank you").await;
    heard(&mut alice, &format!("{room}/Bob"), "v2", "thank you").await;
    // A participant may not kick, and nobody kicks an owner.
    let answer = bob
        .iq(
            "set",
            Some(&room),
            &admin("<item nick='Alice' role='none'/>"),
        )
        .await;
    assert_eq!(error_condition(&answer), "forbidden");
    let answer = bob
        .iq("get", Some(&room), &admin("<item affiliation='member'/>"))
        .await;
    assert_eq!(error_condition(&answer), "forbidden");

    // Kick.
    assert_result(
        &alice
            .iq("set", Some(&room), &admin("<item nick='Bob' role='none'/>"))
            .await,
    );
    let kicked = bob
        .wait("its kick", |s| unavailable_from(s, &format!("{room}/Bob")))
        .await;
    assert_eq!(codes(&kicked), vec![307, 110]);
    let seen = alice
        .wait("Bob kicked", |s| {
            unavailable_from(s, &format!("{room}/Bob"))
        })
        .await;
    assert_eq!(codes(&seen), vec![307]);

    // Ban, by bare JID, of someone in the room.
    join(&mut carol, &room, "Carol", Some("")).await;
    let ban = format!("<item affiliation='outcast' jid='{}'/>", carol.bare());
    assert_result(&alice.iq("set", Some(&room), &admin(&ban)).await);
    let banned = carol
        .wait("its ban", |s| unavailable_from(s, &format!("{room}/Carol")))
        .await;
    assert_eq!(codes(&banned), vec![301, 110]);
    assert_eq!(
        join_refused(&mut carol, &room, "Carol", Some("")).await,
        "forbidden"
    );
    let outcasts = alice
        .iq("get", Some(&room), &admin("<item affiliation='outcast'/>"))
        .await;
    let listed: Vec<&str> = outcasts
        .get_child("query", ns::MUC_ADMIN)
        .unwrap()
        .children()
        .filter_map(|i| i.get_attr("jid"))
        .collect();
    assert_eq!(listed, vec![carol.bare()]);
    // The last owner stays one.
    let demote = format!("<item affiliation='member' jid='{}'/>", alice.bare());
    let answer = alice.iq("set", Some(&room), &admin(&demote)).await;
    assert_eq!(error_condition(&answer), "conflict");
}

/// §7.2.14 history on join, limited by `maxstanzas`, with delay stamps;
/// §7.2.15 the subject last; XEP-0410 self-ping.
#[tokio::test]
async fn history_subject_and_self_ping() {
    let (_dir, server) = with_users("", &["alice", "bob"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let mut bob = login(server.c2s, "bob").await;
    let room = room("archive");
    create(&mut alice, &room, "Alice", &[]).await;
    for n in 1..=3 {
        say(&mut alice, &room, &format!("h{n}"), &format!("line {n}")).await;
        heard(
            &mut alice,
            &format!("{room}/Alice"),
            &format!("h{n}"),
            &format!("line {n}"),
        )
        .await;
    }
    alice
        .send(&format!(
            "<message to='{room}' type='groupchat' id='s1'><subject>Plans</subject></message>"
        ))
        .await;
    alice
        .wait("the new subject", |s| {
            is_from(s, "message", &format!("{room}/Alice")) && s.get_attr("id") == Some("s1")
        })
        .await;

    send_join(&mut bob, &room, "Bob", Some("<history maxstanzas='2'/>")).await;
    let mut bodies = Vec::new();
    let subject = loop {
        let stanza = bob.read().await.expect("the join's stanzas");
        if stanza.name() != "message" {
            continue;
        }
        if let Some(subject) = stanza.get_child("subject", ns::CLIENT) {
            break (
                subject.text_content(),
                stanza.get_attr("from").map(str::to_string),
            );
        }
        let delay = stanza.get_child("delay", ns::DELAY).expect("a delay stamp");
        assert_eq!(delay.get_attr("from"), Some(room.as_str()));
        bodies.push(stanza.get_child("body", ns::CLIENT).unwrap().text_content());
    };
    assert_eq!(bodies, vec!["line 2", "line 3"]);
    assert_eq!(
        subject,
        ("Plans".to_string(), Some(format!("{room}/Alice")))
    );

    let ping = bob
        .iq(
            "get",
            Some(&format!("{room}/Bob")),
            "<ping xmlns='urn:xmpp:ping'/>",
        )
        .await;
    assert_result(&ping);
    bob.send(&format!("<presence to='{room}/Bob' type='unavailable'/>"))
        .await;
    bob.wait("its leaving", |s| {
        unavailable_from(s, &format!("{room}/Bob"))
    })
    .await;
    let ping = bob
        .iq(
            "get",
            Some(&format!("{room}/Bob")),
            "<ping xmlns='urn:xmpp:ping'/>",
        )
        .await;
    assert_eq!(error_condition(&ping), "not-acceptable");
}

/// §10.9: every occupant learns of the destruction and the alternate venue;
/// the room is gone.
#[tokio::test]
async fn destruction_and_invitations() {
    let (_dir, server) = with_users("", &["alice", "bob", "carol"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let mut bob = login(server.c2s, "bob").await;
    let mut carol = login(server.c2s, "carol").await;
    let room = room("doomed");
    create(&mut alice, &room, "Alice", &[]).await;
    join(&mut bob, &room, "Bob", Some("")).await;

    // §7.8.2: a mediated invitation reaches Carol from the room.
    bob.send(&format!(
        "<message to='{room}'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <invite to='{}'><reason>come</reason></invite></x></message>",
        carol.bare()
    ))
    .await;
    let invitation = carol
        .wait("the invitation", |s| is_from(s, "message", &room))
        .await;
    let invite = user_x(&invitation)
        .unwrap()
        .get_child("invite", ns::MUC_USER)
        .unwrap();
    assert_eq!(invite.get_attr("from"), Some(bob.jid.as_str()));
    // XEP-0249: a direct invitation is a message between accounts.
    bob.send(&format!(
        "<message to='{}' id='d1'><x xmlns='jabber:x:conference' jid='{room}'/></message>",
        carol.bare()
    ))
    .await;
    let direct = carol
        .wait("the direct invitation", |s| s.get_attr("id") == Some("d1"))
        .await;
    assert_eq!(
        direct
            .get_child("x", ns::CONFERENCE)
            .unwrap()
            .get_attr("jid"),
        Some(room.as_str())
    );

    let answer = alice
        .iq(
            "set",
            Some(&room),
            &format!(
                "<query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <destroy jid='{}'><reason>moved</reason></destroy></query>",
                support::muc::room("elsewhere")
            ),
        )
        .await;
    assert_result(&answer);
    let gone = bob
        .wait("the destruction", |s| {
            unavailable_from(s, &format!("{room}/Bob"))
        })
        .await;
    let destroy = user_x(&gone)
        .unwrap()
        .get_child("destroy", ns::MUC_USER)
        .unwrap();
    assert_eq!(
        destroy.get_attr("jid"),
        Some(support::muc::room("elsewhere").as_str())
    );
    assert_eq!(
        destroy
            .get_child("reason", ns::MUC_USER)
            .unwrap()
            .text_content(),
        "moved"
    );
    let info = bob
        .iq(
            "get",
            Some(&room),
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert_eq!(error_condition(&info), "item-not-found");
}

/// `[muc]` limits: occupants per room, rooms per user, subject length, who
/// creates rooms, and the history kept.
#[tokio::test]
async fn limits() {
    let extra = "[muc]\nmax_occupants = 2\nmax_rooms_per_user = 1\nmax_subject_chars = 5\n\
                 create = \"admins\"\nadmins = [\"alice@localhost\"]\nmax_history = 1\n";
    let (_dir, server) = with_users(extra, &["alice", "bob", "carol"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let mut bob = login(server.c2s, "bob").await;
    let mut carol = login(server.c2s, "carol").await;
    let room = room("small");
    assert_eq!(
        join_refused(&mut bob, &room, "Bob", Some("")).await,
        "not-allowed"
    );
    create(&mut alice, &room, "Alice", &[]).await;
    assert_eq!(
        join_refused(&mut alice, &support::muc::room("second"), "Alice", Some("")).await,
        "not-allowed"
    );
    join(&mut bob, &room, "Bob", Some("")).await;
    send_join(&mut carol, &room, "Carol", Some("")).await;
    let refused = carol
        .wait("the refused join", |s| {
            is_from(s, "presence", &format!("{room}/Carol")) && s.get_attr("type") == Some("error")
        })
        .await;
    assert_eq!(error_condition(&refused), "service-unavailable");
    let error = refused.get_child("error", ns::CLIENT).unwrap();
    assert_eq!(error.get_attr("type"), Some("wait"));

    alice
        .send(&format!(
            "<message to='{room}' type='groupchat' id='s'><subject>too long</subject></message>"
        ))
        .await;
    let refused = alice
        .wait("the refused subject", |s| {
            is_from(s, "message", &room) && s.get_attr("type") == Some("error")
        })
        .await;
    assert_eq!(error_condition(&refused), "not-acceptable");

    for n in 1..=2 {
        say(&mut alice, &room, &format!("k{n}"), &format!("kept {n}")).await;
        heard(
            &mut bob,
            &format!("{room}/Alice"),
            &format!("k{n}"),
            &format!("kept {n}"),
        )
        .await;
    }
    bob.send(&format!("<presence to='{room}/Bob' type='unavailable'/>"))
        .await;
    bob.wait("its leaving", |s| {
        unavailable_from(s, &format!("{room}/Bob"))
    })
    .await;
    send_join(&mut bob, &room, "Bob", Some("")).await;
    let first = bob
        .wait("the history", |s| {
            is_from(s, "message", &format!("{room}/Alice"))
                && s.get_child("delay", ns::DELAY).is_some()
        })
        .await;
    assert_eq!(first.get_attr("id"), Some("k2"));
    bob.wait("the subject", |s| {
        s.get_child("subject", ns::CLIENT).is_some()
    })
    .await;
    assert!(
        !bob.received(|s| s.get_attr("id") == Some("k1")),
        "only max_history messages are kept"
    );
}

/// A room whose last occupant's stream ends hears that occupant leave, as
/// directed presence (RFC 6121 §4.6) tells it.
#[tokio::test]
async fn an_occupant_whose_stream_ends_leaves() {
    let (_dir, server) = with_users("", &["alice", "bob"]).await;
    let mut alice = login(server.c2s, "alice").await;
    let room = room("wake");
    create(&mut alice, &room, "Alice", &[]).await;
    // No initial presence: the room is the only one to have seen Bob.
    let mut bob = Client::login_at(server.c2s, "bob", &password("bob"), "desk").await;
    join(&mut bob, &room, "Bob", None).await;
    alice
        .wait("Bob's arrival", |s| {
            is_from(s, "presence", &format!("{room}/Bob"))
        })
        .await;
    drop(bob);
    alice
        .wait("Bob leaving", |s| {
            unavailable_from(s, &format!("{room}/Bob"))
        })
        .await;
}
