//! Account features (XEP-0191 blocking, XEP-0280 carbons, shared roster
//! groups) end to end
//! against a real all-in-one process; the same scenarios run against the
//! cluster in `cluster.rs`.

mod support;

use support::Server;
use support::admin::AdminApi;
use support::client::start;

async fn with_users(users: [&str; 2]) -> (tempfile::TempDir, Server) {
    let (dir, server) = start("").await;
    for user in users {
        server.add_user(user, &format!("pw-{user}"));
    }
    (dir, server)
}

#[tokio::test]
async fn blocking() {
    let (_dir, server) = with_users(["alice", "bob"]).await;
    support::features::blocking(server.c2s, server.c2s, "alice", "bob").await;
}

#[tokio::test]
async fn carbons() {
    let (_dir, server) = with_users(["alice", "bob"]).await;
    support::features::carbons(server.c2s, server.c2s, "alice", "bob").await;
}

#[tokio::test]
async fn shared_roster_groups() {
    let (_dir, server) = start("[admin]\nadmins = [\"root@localhost\"]\n").await;
    for user in ["root", "alice", "bob", "carol"] {
        server.add_user(user, &format!("pw-{user}"));
    }
    let api = AdminApi::of(&server);
    api.wait_until_up().await;
    let root = api.login("root", "pw-root").await;
    let users = ["alice", "bob", "carol"];
    support::features::shared_groups(server.c2s, server.c2s, &root, users).await;
}

/// `[modules.blocking] max_items`: a block past it is refused and changes
/// nothing.
#[tokio::test]
async fn a_blocklist_is_limited() {
    let (_dir, server) = start("[modules.blocking]\nmax_items = 2\n").await;
    server.add_user("alice", "pw-alice");
    let mut alice = support::client::Client::login(&server, "alice", "pw-alice", "phone").await;
    let block = |jids: &[&str]| {
        let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
        format!("<block xmlns='urn:xmpp:blocking'>{items}</block>")
    };
    support::client::assert_result(&alice.iq("set", None, &block(&["a@x", "b@x"])).await);
    let refused = alice.iq("set", None, &block(&["c@x"])).await;
    assert_eq!(
        support::client::error_condition(&refused),
        "policy-violation"
    );
    // Blocking what is already blocked adds nothing, so it fits.
    support::client::assert_result(&alice.iq("set", None, &block(&["a@x"])).await);
    let list = alice
        .iq("get", None, "<blocklist xmlns='urn:xmpp:blocking'/>")
        .await;
    let items = list
        .get_child("blocklist", xmppd_protocol::ns::BLOCKING)
        .unwrap()
        .children()
        .count();
    assert_eq!(items, 2);
}

/// A module answers its payloads only in the IQ types it declares: a get
/// of a command, or a set of what is only read, is not for any module.
#[tokio::test]
async fn a_payload_in_the_wrong_iq_type_is_service_unavailable() {
    let (_dir, server) = with_users(["alice", "bob"]).await;
    let mut alice = support::client::Client::login(&server, "alice", "pw-alice", "phone").await;
    for (iq_type, to, payload) in [
        ("get", None, "<enable xmlns='urn:xmpp:carbons:2'/>"),
        (
            "get",
            None,
            "<block xmlns='urn:xmpp:blocking'><item jid='a@x'/></block>",
        ),
        ("set", None, "<blocklist xmlns='urn:xmpp:blocking'/>"),
        (
            "set",
            Some("localhost"),
            "<query xmlns='jabber:iq:version'/>",
        ),
        ("set", Some("localhost"), "<ping xmlns='urn:xmpp:ping'/>"),
    ] {
        let answer = alice.iq(iq_type, to, payload).await;
        assert_eq!(
            support::client::error_condition(&answer),
            "service-unavailable",
            "{iq_type} {payload}"
        );
    }
}

/// What a blocked contact sends to the user's bare JID reaches the user's
/// replica, not a resource: the replica refuses it (without the block,
/// this stranger's last-activity request would be `<forbidden/>`).
#[tokio::test]
async fn the_replica_refuses_a_blocked_contacts_request_to_the_bare_jid() {
    let (_dir, server) = with_users(["alice", "bob"]).await;
    let mut alice = support::client::Client::login(&server, "alice", "pw-alice", "phone").await;
    let mut bob = support::client::Client::login(&server, "bob", "pw-bob", "desk").await;
    let last = "<query xmlns='jabber:iq:last'/>";
    let before = bob.iq("get", Some("alice@localhost"), last).await;
    assert_eq!(support::client::error_condition(&before), "forbidden");
    let block = "<block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block>";
    support::client::assert_result(&alice.iq("set", None, block).await);
    let after = bob.iq("get", Some("alice@localhost"), last).await;
    assert_eq!(
        support::client::error_condition(&after),
        "service-unavailable"
    );
}
