//! Every limit of the edge, each configured small: what the client that hits
//! it gets (the RFC 6120 error, or pacing), and that the other users of the
//! server carry on. Values are seconds, so the file runs in seconds; timing
//! is only ever checked as a lower bound the server cannot beat.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::{MALLORY_PASSWORD, RawClient, start_with_bystanders};
use tokio::time::Instant;

const NOT_AUTHORIZED: &str =
    "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>";
const TEMPORARY_AUTH_FAILURE: &str =
    "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/></failure>";
const PING: &str = "<ping xmlns='urn:xmpp:ping'/></iq>";

/// Another client address on loopback (127.0.0.0/8 is all local).
fn other_ip() -> IpAddr {
    "127.0.0.2".parse().unwrap()
}

/// Sends a stream header and reports whether the server answered with
/// features (true) or a stream error (false).
async fn accepted(client: &mut RawClient) -> bool {
    client
        .send(
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
        )
        .await;
    loop {
        match client.next_stanza(Duration::from_secs(10)).await {
            Some(element) if element.starts_with("<stream:features") => return true,
            Some(element) if element.starts_with("<stream:error") => return false,
            Some(_) => {}
            None => return false,
        }
    }
}

#[tokio::test]
async fn connections_per_ip_refuses_the_next_one_with_policy_violation() {
    // Alice and Bob hold two of the four.
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nconnections_per_ip = 4\n").await;
    let mut third = RawClient::connect(server.c2s).await;
    third.open_stream().await;
    let mut fourth = RawClient::connect(server.c2s).await;
    fourth.open_stream().await;
    let mut fifth = RawClient::connect(server.c2s).await;
    fifth.expect_stream_error("policy-violation").await;
    // Another address has its own allowance.
    let mut elsewhere = RawClient::connect_from(other_ip(), server.c2s).await;
    assert!(accepted(&mut elsewhere).await, "{}", elsewhere.pending());
    // A closed connection gives its place back.
    drop(third);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = RawClient::connect(server.c2s).await;
        if accepted(&mut again).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(fourth);
    others.still_chat().await;
}

#[tokio::test]
async fn failed_authentications_per_ip_are_throttled() {
    let (_dir, server, mut others) = start_with_bystanders(
        "[auth]\nfailures_per_ip_per_minute = 3\nfailures_per_account_per_minute = 0\n",
    )
    .await;
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    for _ in 0..3 {
        assert_eq!(client.auth_plain("mallory", "wrong").await, NOT_AUTHORIZED);
    }
    // Past the limit even the right password is refused from this address…
    assert_eq!(
        client.auth_plain("mallory", MALLORY_PASSWORD).await,
        TEMPORARY_AUTH_FAILURE
    );
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    assert_eq!(
        client.auth_plain("alice", "alice-secret").await,
        TEMPORARY_AUTH_FAILURE
    );
    // …but not from another one.
    let mut client = RawClient::connect_from(other_ip(), server.c2s).await;
    client.open_stream().await;
    assert!(
        client
            .auth_plain("mallory", MALLORY_PASSWORD)
            .await
            .starts_with("<success")
    );
    // Sessions already bound from the throttled address are untouched.
    others.still_chat().await;
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Whether the owner's right password from its own address gets in.
async fn owner_logs_in(server: &support::Server) -> bool {
    let mut owner = RawClient::connect_from(loopback(1), server.c2s).await;
    owner.open_stream().await;
    owner
        .auth_plain("mallory", MALLORY_PASSWORD)
        .await
        .starts_with("<success")
}

#[tokio::test]
async fn guessing_one_account_from_many_addresses_is_slowed_but_never_locks_its_owner_out() {
    let (_dir, server, mut others) = start_with_bystanders(
        "[auth]\nfailures_per_ip_per_minute = 0\nfailures_per_account_per_minute = 4\n",
    )
    .await;
    // Six wrong guesses from three addresses: past the account's four,
    // answers are delayed (500 ms, then 1 s: the defaults), not refused.
    for last in 2..5 {
        let mut attacker = RawClient::connect_from(loopback(last), server.c2s).await;
        attacker.open_stream().await;
        for _ in 0..2 {
            assert_eq!(
                attacker.auth_plain("mallory", "guess").await,
                NOT_AUTHORIZED
            );
        }
    }
    // The owner still gets in, after the account's current delay.
    let started = Instant::now();
    assert!(owner_logs_in(&server).await, "the owner was locked out");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Guessing from yet another address waits as long, and longer after it.
    let mut attacker = RawClient::connect_from(loopback(5), server.c2s).await;
    attacker.open_stream().await;
    for delay in [2, 4] {
        let started = Instant::now();
        assert_eq!(
            attacker.auth_plain("mallory", "guess").await,
            NOT_AUTHORIZED
        );
        assert!(started.elapsed() >= Duration::from_secs(delay));
    }
    // Other accounts are not slowed.
    let mut client = RawClient::connect_from(loopback(5), server.c2s).await;
    client.open_stream().await;
    let started = Instant::now();
    assert!(
        client
            .auth_plain("alice", "alice-secret")
            .await
            .starts_with("<success")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    others.still_chat().await;
}

#[tokio::test]
async fn failures_per_account_and_address_refuse_only_that_address() {
    let (_dir, server, mut others) = start_with_bystanders(
        "[auth]\nfailures_per_ip_per_minute = 0\nfailures_per_account_per_minute = 0\n\
         failures_per_account_per_ip_per_minute = 3\n",
    )
    .await;
    let mut attacker = RawClient::connect_from(other_ip(), server.c2s).await;
    attacker.open_stream().await;
    for _ in 0..3 {
        assert_eq!(
            attacker.auth_plain("mallory", "wrong").await,
            NOT_AUTHORIZED
        );
    }
    // That address is refused for the account, whatever the mechanism or
    // password…
    assert_eq!(
        attacker.auth_plain("mallory", MALLORY_PASSWORD).await,
        TEMPORARY_AUTH_FAILURE
    );
    let mut attacker = RawClient::connect_from(other_ip(), server.c2s).await;
    attacker.open_stream().await;
    attacker
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            BASE64.encode("n,,n=mallory,r=abcdefghijklmnop")
        ))
        .await;
    assert_eq!(
        attacker
            .next_stanza(Duration::from_secs(10))
            .await
            .as_deref(),
        Some(TEMPORARY_AUTH_FAILURE)
    );
    // …but not for other accounts, and the owner elsewhere gets in.
    let mut client = RawClient::connect_from(other_ip(), server.c2s).await;
    client.open_stream().await;
    assert!(
        client
            .auth_plain("alice", "alice-secret")
            .await
            .starts_with("<success")
    );
    assert!(owner_logs_in(&server).await, "the owner was locked out");
    others.still_chat().await;
}

#[tokio::test]
async fn five_failed_attempts_on_one_stream_end_it_with_policy_violation() {
    let (_dir, server, mut others) = start_with_bystanders(
        "[auth]\nfailures_per_ip_per_minute = 0\nfailures_per_account_per_minute = 0\n\
         failures_per_account_per_ip_per_minute = 0\n",
    )
    .await;
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    for _ in 0..5 {
        assert_eq!(client.auth_plain("mallory", "wrong").await, NOT_AUTHORIZED);
    }
    client.expect_stream_error("policy-violation").await;
    // Four failures leave the stream open, and a new stream starts afresh.
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    for _ in 0..4 {
        assert_eq!(client.auth_plain("mallory", "wrong").await, NOT_AUTHORIZED);
    }
    assert!(
        client
            .auth_plain("mallory", MALLORY_PASSWORD)
            .await
            .starts_with("<success")
    );
    others.still_chat().await;
}

#[tokio::test]
async fn stanzas_over_the_burst_are_paced_not_lost() {
    let (_dir, server, mut others) = support::start_paced().await;
    let mut client = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "fast").await;
    let burst: String = (0..support::PACED_SENT)
        .map(|n| {
            format!("<message to='bob@localhost/desk' type='chat'><body>paced {n}</body></message>")
        })
        .collect();
    let started = Instant::now();
    client.send(&burst).await;
    support::expect_paced(&mut others.bob, started.into_std()).await;
    // The paced stream is still open and usable.
    client
        .send("<message to='bob@localhost/desk' type='chat'><body>after pacing</body></message>")
        .await;
    others.bob.expect("<body>after pacing</body>").await;
    others.still_chat().await;
}

#[tokio::test]
async fn negotiation_timeout_is_connection_timeout() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nnegotiation_timeout_secs = 2\n").await;
    let started = Instant::now();
    let silent = async {
        let mut client = RawClient::connect(server.c2s).await;
        client.expect_stream_error("connection-timeout").await;
    };
    let header_only = async {
        let mut client = RawClient::connect(server.c2s).await;
        client.open_stream().await;
        client.expect_stream_error("connection-timeout").await;
    };
    let never_binds = async {
        let mut client = RawClient::connect(server.c2s).await;
        client.open_stream().await;
        assert!(
            client
                .auth_plain("mallory", MALLORY_PASSWORD)
                .await
                .starts_with("<success")
        );
        client.open_stream().await;
        client.expect_stream_error("connection-timeout").await;
    };
    tokio::join!(silent, header_only, never_binds);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // Bound streams, older than the timeout by now, are not affected.
    others.still_chat().await;
}

/// Answers the server's pings until `until`; returns how many came.
async fn answer_pings(client: &mut RawClient, until: Instant) -> u32 {
    let mut pings = 0;
    while let Some(wait) = until.checked_duration_since(Instant::now()) {
        if client.wait_for(PING, wait).await.is_none() {
            break;
        }
        pings += 1;
        client
            .send("<iq type='result' id='keepalive' to='localhost'/>")
            .await;
    }
    pings
}

#[tokio::test]
async fn silent_stream_is_pinged_then_timed_out_while_answered_pings_keep_streams_alive() {
    const PING_AFTER: u64 = 1;
    const IDLE_TIMEOUT: u64 = 3;
    let (_dir, server, mut others) = start_with_bystanders(&format!(
        "[limits]\nping_after_secs = {PING_AFTER}\nidle_timeout_secs = {IDLE_TIMEOUT}\n"
    ))
    .await;
    let mut silent = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "silent").await;
    let mut spaces = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "spaces").await;
    let until = Instant::now() + Duration::from_secs(2 * IDLE_TIMEOUT);
    // Whitespace keepalives (RFC 6120 §4.6.1) count as hearing from the client.
    let keeps_alive_with_whitespace = async {
        while Instant::now() < until {
            let sent = spaces.send_bytes(b" ").await;
            assert!(
                sent.is_ok(),
                "a stream kept alive by whitespace was closed: {}",
                spaces.pending()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let times_out = async {
        let ping = silent.expect(PING).await;
        assert!(
            ping.contains("type='get'") && ping.contains("to='mallory@localhost/silent'"),
            "{ping}"
        );
        let pinged = Instant::now();
        silent.expect_stream_error("connection-timeout").await;
        pinged.elapsed()
    };
    let (unanswered_for, alice_pings, bob_pings, ()) = tokio::join!(
        times_out,
        answer_pings(&mut others.alice, until),
        answer_pings(&mut others.bob, until),
        keeps_alive_with_whitespace
    );
    let grace = Duration::from_secs(IDLE_TIMEOUT - PING_AFTER);
    assert!(
        unanswered_for >= grace * 3 / 4,
        "closed {unanswered_for:?} after the ping"
    );
    // Alice and Bob were pinged more than once and outlived the idle timeout.
    assert!(
        alice_pings >= 2 && bob_pings >= 2,
        "pings: alice {alice_pings}, bob {bob_pings}"
    );
    spaces
        .send("<message to='bob@localhost/desk' type='chat'><body>spaces kept me</body></message>")
        .await;
    others.bob.expect("<body>spaces kept me</body>").await;
    others.still_chat().await;
}

/// An XEP-0077 registration on an open, unauthenticated stream.
async fn register(client: &mut RawClient, user: &str, id: &str) {
    client
        .send(&format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
             <username>{user}</username><password>{user}-secret</password></query></iq>"
        ))
        .await;
}

#[tokio::test]
async fn registrations_per_ip_are_limited_with_resource_constraint() {
    let (_dir, server, mut others) =
        start_with_bystanders("[auth]\nregistrations_per_ip_per_hour = 2\n").await;
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    for (user, id) in [("new1", "r1"), ("new2", "r2")] {
        register(&mut client, user, id).await;
        let reply = client
            .next_stanza(Duration::from_secs(10))
            .await
            .unwrap_or_default();
        assert!(
            reply.contains(&format!("id='{id}'")) && reply.contains("type='result'"),
            "{reply}"
        );
    }
    register(&mut client, "new3", "r3").await;
    client
        .expect_stanza_error(Some("r3"), "wait", "resource-constraint")
        .await;
    // Another address registers; the refused account was not created.
    let mut client = RawClient::connect_from(other_ip(), server.c2s).await;
    client.open_stream().await;
    register(&mut client, "new4", "r4").await;
    let reply = client
        .next_stanza(Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(
        reply.contains("id='r4'") && reply.contains("type='result'"),
        "{reply}"
    );
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    assert_eq!(
        client.auth_plain("new3", "new3-secret").await,
        NOT_AUTHORIZED
    );
    RawClient::login(server.c2s, "new1", "new1-secret", "fresh").await;
    others.still_chat().await;
}

/// A name already taken counts against the allowance as a new account does:
/// probing which names exist is throttled like creating accounts.
#[tokio::test]
async fn failed_registrations_count_against_the_allowance() {
    let (_dir, server, mut others) =
        start_with_bystanders("[auth]\nregistrations_per_ip_per_hour = 2\n").await;
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    for id in ["t1", "t2"] {
        register(&mut client, "alice", id).await;
        client
            .expect_stanza_error(Some(id), "cancel", "conflict")
            .await;
    }
    register(&mut client, "fresh", "t3").await;
    client
        .expect_stanza_error(Some("t3"), "wait", "resource-constraint")
        .await;
    others.still_chat().await;
}

/// Past `max_connections`, from any address, a connection gets
/// `<resource-constraint/>`; a closed one gives its place back.
#[tokio::test]
async fn max_connections_refuses_the_next_one_with_resource_constraint() {
    // Alice and Bob hold two of the three.
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_connections = 3\nconnections_per_ip = 0\n").await;
    let mut third = RawClient::connect(server.c2s).await;
    third.open_stream().await;
    let mut fourth = RawClient::connect_from(other_ip(), server.c2s).await;
    fourth.expect_stream_error("resource-constraint").await;
    drop(third);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = RawClient::connect_from(other_ip(), server.c2s).await;
        if accepted(&mut again).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    others.still_chat().await;
}

/// A client that asks for STARTTLS and then never completes the handshake
/// is cut off at the negotiation deadline, like one that never speaks.
#[tokio::test]
async fn a_stalled_starttls_handshake_ends_at_the_negotiation_deadline() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nnegotiation_timeout_secs = 2\n").await;
    let started = Instant::now();
    let mut client = RawClient::connect(server.c2s).await;
    let features = client.open_stream().await;
    assert!(features.contains("<starttls"), "{features}");
    client
        .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    client.expect("<proceed").await;
    // No ClientHello follows.
    assert!(client.closed().await, "still open: {}", client.pending());
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    others.still_chat().await;
}

/// RFC 6120 §7.6.2.1: past `max_resources_per_account`, binding another
/// resource is refused with `<resource-constraint/>`; binding one the
/// account already has (which replaces it) is not.
#[tokio::test]
async fn resources_per_account_are_limited_with_resource_constraint() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_resources_per_account = 2\n").await;
    // Alice has her phone; a laptop makes two.
    let _laptop = RawClient::login(server.c2s, "alice", "alice-secret", "laptop").await;
    let (mut tablet, _) = RawClient::authenticate(server.c2s, "alice", "alice-secret").await;
    tablet
        .send(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>tablet</resource></bind></iq>",
        )
        .await;
    tablet
        .expect_stanza_error(Some("bind"), "wait", "resource-constraint")
        .await;
    // Bob is not Alice: his second resource is his own allowance.
    let _bob_laptop = RawClient::login(server.c2s, "bob", "bob-secret", "laptop").await;
    others.still_chat().await;
}

/// A presence larger than `max_presence_bytes` (stored per resource and
/// copied to every contact) is refused with `<policy-violation/>` and goes
/// to no one.
#[tokio::test]
async fn oversized_presence_is_refused_with_policy_violation() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_presence_bytes = 10000\n").await;
    let mut mallory = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "big").await;
    let status = "x".repeat(10_000);
    mallory
        .send(&format!(
            "<presence id='p1'><status>{status}</status></presence>"
        ))
        .await;
    let refused = mallory
        .expect_stanza_error(Some("p1"), "modify", "policy-violation")
        .await;
    assert!(refused.starts_with("<presence"), "{refused}");
    assert!(
        refused.len() < 2000,
        "the error does not echo the payload back"
    );
    // A presence within the limit still goes out.
    mallory
        .send("<presence id='p2'><status>small</status></presence>")
        .await;
    mallory.expect("small").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains(&status[..100]), "the big presence went out");
}

/// A version 2 PROXY header for TCP over IPv4 from `source`.
fn proxy_header(source: std::net::SocketAddrV4) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x21, 0x11, 0, 12]);
    header.extend(source.ip().octets());
    header.extend([127, 0, 0, 1]);
    header.extend(source.port().to_be_bytes());
    header.extend(5222u16.to_be_bytes());
    header
}

/// With `listen.proxy_protocol`, the address in each connection's PROXY
/// header is the client's, for the per-address limits too; a connection
/// without a header is closed before any XMPP.
#[tokio::test]
async fn behind_a_proxy_the_client_address_comes_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::Server::all_in_one(
        dir.path(),
        "[listen]\nproxy_protocol = true\n[limits]\nconnections_per_ip = 1\n",
    );
    server.ready().await;
    let c2s = server.c2s;
    let proxied = move |source: &str| {
        let header = proxy_header(source.parse().unwrap());
        async move {
            let mut client = RawClient::connect(c2s).await;
            client.send_bytes(&header).await.unwrap();
            client
        }
    };
    let mut first = proxied("192.0.2.7:40000").await;
    assert!(accepted(&mut first).await, "{}", first.pending());
    // The same client address again: over the limit of one, although every
    // connection comes from 127.0.0.1.
    let mut again = proxied("192.0.2.7:40001").await;
    again.expect_stream_error("policy-violation").await;
    let mut other = proxied("192.0.2.8:40000").await;
    assert!(accepted(&mut other).await, "{}", other.pending());
    // No header: closed, not a word of XMPP.
    let mut direct = RawClient::connect(server.c2s).await;
    direct
        .send(
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
        )
        .await;
    assert!(direct.closed().await);
    assert!(!direct.pending().contains("stream"), "{}", direct.pending());
}

/// Directed presence (RFC 6121 §4.6) is remembered per recipient, to be
/// followed by unavailable presence: past `max_directed_presences` the next
/// recipient gets nothing and the sender `<policy-violation/>`.
#[tokio::test]
async fn directed_presence_is_limited_with_policy_violation() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_directed_presences = 1\n").await;
    let mut mallory = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "dp").await;
    mallory
        .send("<presence to='alice@localhost/phone' id='d1'/>")
        .await;
    others.alice.expect("from='mallory@localhost/dp'").await;
    mallory
        .send("<presence to='bob@localhost/desk' id='d2'/>")
        .await;
    mallory
        .expect_stanza_error(Some("d2"), "modify", "policy-violation")
        .await;
    // Alice, already remembered, still gets a new one.
    mallory
        .send("<presence to='alice@localhost/phone' id='d3'><show>away</show></presence>")
        .await;
    others.alice.expect("<show>away</show>").await;
    let seen = others.still_chat().await;
    assert!(
        !others.bob.pending().contains("mallory") && !seen.contains("id='d2'"),
        "{seen}"
    );
}

/// A client that stops reading: the write that waits for it gives up after
/// `write_timeout_secs` and its connection is closed; nothing it was sent is
/// lost. With stream management it acknowledged none of it, so every message
/// (written, or still waiting in its mailbox, or that did not fit there) goes
/// to offline storage, and the client gets them all, in order, when it logs in again.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_what_it_was_sent_is_stored() {
    const MESSAGES: usize = 300;
    let (_dir, server) =
        support::client::start("[limits]\nwrite_timeout_secs = 1\nstanzas_per_second = 0\n").await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "b").await;
    bob.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    bob.expect("<enabled").await;
    let mut alice = RawClient::login(server.c2s, "alice", "alice-secret", "a").await;
    // 16 KiB each: together more than the mailbox's 4 MiB and the sockets'
    // buffers.
    let filler = "x".repeat(16 * 1024);
    for n in 0..MESSAGES {
        alice
            .send(&format!(
                "<message to='bob@localhost/b' id='m{n}' type='chat'><body>{filler}</body></message>"
            ))
            .await;
    }
    // Bob never reads: his connection is closed by the server.
    let started = Instant::now();
    support::cluster::wait_metric(
        &server,
        "xmppd_session_events_total{event=\"offline_stored\"}",
        MESSAGES as u64,
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    drop(bob);

    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "b2").await;
    bob.send("<presence/>").await;
    let mut ids = Vec::new();
    while ids.len() < MESSAGES {
        let Some(stanza) = bob.next_stanza(Duration::from_secs(10)).await else {
            panic!("{} of {MESSAGES} stored messages arrived", ids.len());
        };
        if stanza.starts_with("<message") {
            ids.push(support::attribute(&stanza, "id").unwrap_or_default());
        }
    }
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("m{n}")).collect();
    assert_eq!(ids, expected);
}

/// Waits for the answer to the IQ `id` and asserts that it is a result.
async fn expect_result(client: &mut RawClient, id: &str) {
    loop {
        let Some(stanza) = client.next_stanza(Duration::from_secs(10)).await else {
            panic!("no answer to {id}; got so far: {}", client.pending());
        };
        if support::attribute(&stanza, "id").as_deref() == Some(id) {
            assert_eq!(
                support::attribute(&stanza, "type").as_deref(),
                Some("result"),
                "{stanza}"
            );
            return;
        }
    }
}

fn roster_set(id: &str, item: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>")
}

/// RFC 6121 §2.3.3: past `max_roster_items`, a roster set that adds a
/// contact is refused `<not-allowed/>`, and so is a subscription request
/// that would add one; editing a contact is not, and a request waiting for
/// the user's answer takes no room.
#[tokio::test]
async fn roster_size_is_limited_with_not_allowed() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_roster_items = 2\n").await;
    let mut mallory = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "roster").await;
    mallory.available().await;
    for (id, contact) in [("r1", "one@localhost"), ("r2", "two@localhost")] {
        mallory
            .send(&roster_set(id, &format!("<item jid='{contact}'/>")))
            .await;
        expect_result(&mut mallory, id).await;
    }
    mallory
        .send(&roster_set("r3", "<item jid='three@localhost'/>"))
        .await;
    mallory
        .expect_stanza_error(Some("r3"), "cancel", "not-allowed")
        .await;
    mallory
        .send("<presence to='alice@localhost' type='subscribe' id='s1'/>")
        .await;
    let refused = mallory
        .expect_stanza_error(Some("s1"), "cancel", "not-allowed")
        .await;
    assert!(refused.starts_with("<presence"), "{refused}");
    // A contact already there may still be edited.
    mallory
        .send(&roster_set("r4", "<item jid='one@localhost' name='One'/>"))
        .await;
    expect_result(&mut mallory, "r4").await;
    // Bob's request to Mallory waits for her answer without a place in her
    // roster, so it reaches her; approving it would add a third contact.
    others
        .bob
        .send("<presence to='mallory@localhost' type='subscribe'/>")
        .await;
    let request = mallory.expect("type='subscribe'/>").await;
    assert!(request.contains("from='bob@localhost'"), "{request}");
    mallory
        .send("<presence to='bob@localhost' type='subscribed' id='s2'/>")
        .await;
    mallory
        .expect_stanza_error(Some("s2"), "cancel", "not-allowed")
        .await;
    // Room made, the roster takes a contact again.
    mallory
        .send(&roster_set(
            "r5",
            "<item jid='two@localhost' subscription='remove'/>",
        ))
        .await;
    expect_result(&mut mallory, "r5").await;
    mallory
        .send(&roster_set("r6", "<item jid='three@localhost'/>"))
        .await;
    expect_result(&mut mallory, "r6").await;
    let seen = others.still_chat().await;
    assert!(
        !seen.contains("type='subscribe'") && !seen.contains("type='subscribed'"),
        "a refused request went out: {seen}"
    );
}

/// RFC 6121 §3.1.3: past `max_pending_subscriptions` requests waiting for
/// an account's answer, a request from one more contact is refused, the
/// requester told with `<policy-violation/>`; the requests waiting are
/// kept and handed out, and an answer makes room.
#[tokio::test]
async fn pending_subscription_requests_are_limited_with_policy_violation() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_pending_subscriptions = 1\n").await;
    server.add_user("carol", "carol-secret");
    let mut mallory = RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, "spam").await;
    mallory.available().await;
    // Carol is offline: Alice's request waits for her.
    others
        .alice
        .send("<presence to='carol@localhost' type='subscribe'/>")
        .await;
    others.still_chat().await;
    mallory
        .send("<presence to='carol@localhost' type='subscribe'/>")
        .await;
    let refused = mallory
        .expect_stanza_error(None, "modify", "policy-violation")
        .await;
    assert!(refused.contains("from='carol@localhost'"), "{refused}");
    // Alice asking again is the same request, not one more.
    others
        .alice
        .send("<presence to='carol@localhost' type='subscribe' id='again'/>")
        .await;

    let mut carol = RawClient::login(server.c2s, "carol", "carol-secret", "home").await;
    carol.send("<presence/>").await;
    carol.expect("from='alice@localhost'").await;
    carol
        .send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    others.alice.expect("type='subscribed'").await;
    // Answered, Alice's request no longer takes the place.
    mallory
        .send("<presence to='carol@localhost' type='subscribe'/>")
        .await;
    carol.expect("from='mallory@localhost'").await;
    others.still_chat().await;
    assert!(
        !others.alice.pending().contains("policy-violation"),
        "{}",
        others.alice.pending()
    );
}
