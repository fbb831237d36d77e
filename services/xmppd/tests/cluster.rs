//! The cluster as separate processes against real Redis and Postgres: two
//! session replicas, a router, two connection-managers. Clients on different
//! connection-managers subscribe to each other, exchange 10,000 messages in
//! order, and carry on through the SIGKILL of a connection-manager, the
//! restart of the router and the SIGKILL of a session replica.
//!
//! Needs Redis and Postgres (`XMPPD_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; `XMPPD_TEST_POSTGRES_URL`, an admin connection
//! allowed to create databases, default
//! `postgres://root@127.0.0.1:5432/postgres`). The test uses its own key
//! prefix and database and removes both at the end, pass or fail. The nodes
//! talk mutual TLS with certificates from `xmppd certs init`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::cluster::{NODE_TTL, Nodes, wait_metric, with_cluster};
use support::{DOMAIN, RawClient, Server, assert_metrics_documented};

const MESSAGES: usize = 10_000;
/// Messages alice writes in one go.
const BATCH: usize = 100;
/// Messages sent but not yet read by bob. Below the connection-manager's
/// per-client mailbox (1024), which disconnects a client that falls further
/// behind.
const WINDOW: usize = 800;
/// How long the whole scenario may take before the test fails.
const TEST_LIMIT: Duration = Duration::from_secs(110);
/// How long any one expected stanza may take.
const STANZA_TIMEOUT: Duration = Duration::from_secs(15);
/// The bound for contacts to hear of a dead connection-manager.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_the_failure_of_each_kind_of_node() {
    with_cluster(TEST_LIMIT, scenario).await;
}

/// Blocking and carbons between users on different connection-managers:
/// the router enforces and copies from the policy the replicas wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_features_work_across_connection_managers() {
    with_cluster(TEST_LIMIT, features).await;
}

async fn features(nodes: Nodes) {
    let sessions = [nodes.session(1), nodes.session(2)];
    for session in &sessions {
        session.ready().await;
    }
    for user in ["alice", "bob", "carol", "dave"] {
        sessions[0].add_user(user, &format!("pw-{user}"));
    }
    let router = nodes.router(None);
    router.ready().await;
    wait_metric(&router, "xmppd_router_session_replicas", 2).await;
    let cm1 = nodes.connection_manager(1);
    let cm2 = nodes.connection_manager(2);
    cm1.ready().await;
    cm2.ready().await;
    wait_metric(&router, "xmppd_router_attached_connection_managers", 2).await;
    support::features::blocking(cm1.c2s, cm2.c2s, "alice", "bob").await;
    support::features::carbons(cm1.c2s, cm2.c2s, "carol", "dave").await;
}

async fn scenario(nodes: Nodes) {
    // Replicas first, so the router starts with both and account ownership
    // does not move while the clients log in.
    let mut sessions = [nodes.session(1), nodes.session(2)];
    for session in &sessions {
        session.ready().await;
    }
    sessions[0].add_user("alice", "alice-pw");
    sessions[0].add_user("bob", "bob-pw");
    let router = nodes.router(None);
    router.ready().await;
    wait_metric(&router, "xmppd_router_session_replicas", 2).await;
    let mut cm1 = nodes.connection_manager(1);
    let cm2 = nodes.connection_manager(2);
    cm1.ready().await;
    cm2.ready().await;
    wait_metric(&router, "xmppd_router_attached_connection_managers", 2).await;

    // Presence subscriptions both ways, across connection-managers.
    let mut alice = RawClient::login(cm1.c2s, "alice", "alice-pw", "a").await;
    let mut bob = RawClient::login(cm2.c2s, "bob", "bob-pw", "b").await;
    available(&mut alice, "alice@localhost/a").await;
    available(&mut bob, "bob@localhost/b").await;
    subscribe(&mut alice, "alice", &mut bob, "bob@localhost/b").await;
    subscribe(&mut bob, "bob", &mut alice, "alice@localhost/a").await;

    // 10,000 messages, pipelined, none lost, none out of order.
    let started = Instant::now();
    let read = Arc::new(AtomicUsize::new(0));
    tokio::join!(
        send_numbered(&mut alice, &read),
        read_numbered(&mut bob, &read)
    );
    let elapsed = started.elapsed();
    println!(
        "{MESSAGES} messages cm1 → router → cm2 in {elapsed:.2?}: {:.0} messages/s",
        MESSAGES as f64 / elapsed.as_secs_f64()
    );
    for node in [&router, &sessions[0], &cm2] {
        assert_metrics_documented(node).await;
    }

    // SIGKILL the connection-manager holding alice: the replicas' reapers
    // end her session once its heartbeat expires, and bob hears of it.
    cm1.kill();
    let killed = Instant::now();
    drop(alice);
    expect_presence(&mut bob, "alice@localhost/a", Some("unavailable")).await;
    let noticed = killed.elapsed();
    println!("bob got alice's unavailable presence {noticed:.2?} after the SIGKILL of cm1");
    assert!(
        noticed < UNAVAILABLE_WITHIN,
        "unavailable presence took {noticed:?}"
    );

    // Alice reconnects to the surviving connection-manager and they carry on.
    let mut alice = login(&cm2, "alice", "alice-pw", "a").await;
    available(&mut alice, "alice@localhost/a").await;
    expect_presence(&mut alice, "bob@localhost/b", None).await;
    expect_presence(&mut bob, "alice@localhost/a", None).await;
    exchange(&mut alice, "alice", &mut bob, "bob", "after cm1 died").await;

    // Restart the router in place (same id, same address), as an orchestrator
    // restarts a pod: the client streams pinned to it get a stream error, the
    // connection-managers re-attach by themselves.
    let mut router = router;
    let ports = router.ports();
    router.kill();
    for client in [&mut alice, &mut bob] {
        expect_stream_error(client, "internal-server-error").await;
    }
    let router = nodes.router(Some(ports));
    router.ready().await;
    cm2.ready().await;
    wait_metric(&router, "xmppd_router_attached_connection_managers", 1).await;
    let mut alice = login(&cm2, "alice", "alice-pw", "a").await;
    let mut bob = login(&cm2, "bob", "bob-pw", "b").await;
    // One after the other, so that each sees the other's presence: bob's
    // broadcast, or the answer to alice's probe.
    available(&mut alice, "alice@localhost/a").await;
    available(&mut bob, "bob@localhost/b").await;
    expect_presence(&mut alice, "bob@localhost/b", None).await;
    expect_presence(&mut bob, "alice@localhost/a", None).await;
    exchange(
        &mut alice,
        "alice",
        &mut bob,
        "bob",
        "after the router restart",
    )
    .await;

    // A second router, then a graceful stop (SIGTERM) of the first: its
    // clients are told to reconnect and land on the second, while the
    // connection-manager stays ready throughout.
    let router2 = nodes.start("router", "router-2", "", None);
    router2.ready().await;
    wait_metric(&router2, "xmppd_router_attached_connection_managers", 1).await;
    let stopping = Instant::now();
    stop(&router).await;
    println!("router-1 stopped {:.2?} after SIGTERM", stopping.elapsed());
    for client in [&mut alice, &mut bob] {
        expect_stream_error(client, "internal-server-error").await;
    }
    let mut alice = login(&cm2, "alice", "alice-pw", "a").await;
    let mut bob = login(&cm2, "bob", "bob-pw", "b").await;
    available(&mut alice, "alice@localhost/a").await;
    available(&mut bob, "bob@localhost/b").await;
    expect_presence(&mut alice, "bob@localhost/b", None).await;
    expect_presence(&mut bob, "alice@localhost/a", None).await;
    exchange(&mut alice, "alice", &mut bob, "bob", "on the second router").await;

    // SIGKILL the session replica that owns alice's account. Until its
    // heartbeat expires it is still a member, and a login, which the
    // connection-manager asks of the owner first, goes to the other replica.
    let owner = owner_index("alice@localhost", &sessions);
    sessions[owner].kill();
    let killed = Instant::now();
    let mut alice2 = RawClient::login(cm2.c2s, "alice", "alice-pw", "a2").await;
    let logged_in = killed.elapsed();
    println!("alice logged in {logged_in:.2?} after the SIGKILL of her replica");
    assert!(
        logged_in < NODE_TTL,
        "the login waited for the dead replica's heartbeat to expire"
    );
    available(&mut alice2, "alice@localhost/a2").await;
    exchange(
        &mut alice2,
        "alice",
        &mut bob,
        "bob",
        "after her replica died",
    )
    .await;

    // A graceful stop (SIGTERM) of the other replica while the router still
    // has a stream open to it: the replica deregisters, the router ends the
    // stream, and the replica's gRPC server, which waits for every stream,
    // lets it exit.
    let stopping = Instant::now();
    stop(&sessions[1 - owner]).await;
    println!(
        "the last session replica stopped {:.2?} after SIGTERM",
        stopping.elapsed()
    );
}

/// Which of the replicas, named `session-1`, `session-2`… as `Nodes` names
/// them, owns `account`.
fn owner_index(account: &str, sessions: &[Server]) -> usize {
    let nodes: Vec<xmppd_grpc::Node> = (1..=sessions.len())
        .map(|index| xmppd_grpc::Node {
            id: format!("session-{index}"),
            ..Default::default()
        })
        .collect();
    let owner = xmppd_registry::membership::owner(account, &nodes).expect("replicas");
    nodes
        .iter()
        .position(|node| node.id == owner.id)
        .expect("owner")
}

/// SIGTERM, then waits (bounded) until the process has exited (a zombie,
/// as nobody reaped it yet).
async fn stop(server: &Server) {
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let stat = format!("/proc/{}/stat", server.pid());
    let exited = || {
        std::fs::read_to_string(&stat).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    while !exited() {
        assert!(
            Instant::now() < deadline,
            "still running 15 s after SIGTERM; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs in, retrying while the connection-manager has no router yet (its
/// readiness lags by up to a second).
async fn login(cm: &Server, user: &str, password: &str, resource: &str) -> RawClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(client) = RawClient::try_login(cm.c2s, user, password, resource).await {
            return client;
        }
        if Instant::now() > deadline {
            eprintln!(
                "{user} could not log in; connection-manager log:\n{}",
                cm.log()
            );
            // Once more, failing with what the server said.
            return RawClient::login(cm.c2s, user, password, resource).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads stanzas until one satisfies `wanted`; answers roster pushes on the way.
async fn expect_stanza(
    client: &mut RawClient,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + STANZA_TIMEOUT;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(stanza) = client.next_stanza(left).await else {
            panic!(
                "did not receive {what}; skipped: {skipped:#?}; pending: {:?}",
                client.pending()
            );
        };
        if wanted(&stanza) {
            return stanza;
        }
        if stanza.starts_with("<iq")
            && attribute(&stanza, "type").as_deref() == Some("set")
            && let Some(id) = attribute(&stanza, "id")
        {
            client.send(&format!("<iq type='result' id='{id}'/>")).await;
        }
        skipped.push(stanza);
    }
}

/// Presence from `from` of `kind` (`None`: available).
async fn expect_presence(client: &mut RawClient, from: &str, kind: Option<&str>) -> String {
    let what = format!("presence from {from} of type {kind:?}");
    expect_stanza(client, &what, |stanza| {
        stanza.starts_with("<presence")
            && attribute(stanza, "from").as_deref() == Some(from)
            && attribute(stanza, "type").as_deref() == kind
    })
    .await
}

/// Initial presence, and the server's echo of it to the client itself.
async fn available(client: &mut RawClient, full: &str) {
    client.send("<presence/>").await;
    expect_presence(client, full, None).await;
}

/// `user` asks `contact` (an available full JID) for a presence
/// subscription, which is approved, and then receives its presence.
async fn subscribe(
    user: &mut RawClient,
    user_name: &str,
    contact: &mut RawClient,
    contact_full: &str,
) {
    let contact_bare = contact_full.split('/').next().unwrap();
    user.send(&format!("<presence to='{contact_bare}' type='subscribe'/>"))
        .await;
    let bare = format!("{user_name}@{DOMAIN}");
    expect_stanza(contact, "a subscription request", |stanza| {
        stanza.starts_with("<presence")
            && attribute(stanza, "type").as_deref() == Some("subscribe")
            && attribute(stanza, "from").is_some_and(|from| from.starts_with(&bare))
    })
    .await;
    contact
        .send(&format!("<presence to='{bare}' type='subscribed'/>"))
        .await;
    expect_presence(user, contact_full, None).await;
}

/// One message each way between two logged-in clients.
async fn exchange(a: &mut RawClient, a_name: &str, b: &mut RawClient, b_name: &str, label: &str) {
    send_one(a, a_name, b, b_name, label).await;
    send_one(b, b_name, a, a_name, label).await;
}

async fn send_one(
    from: &mut RawClient,
    from_name: &str,
    to: &mut RawClient,
    to_name: &str,
    label: &str,
) {
    let body = format!("{from_name} to {to_name} {label}");
    from.send(&format!(
        "<message to='{to_name}@{DOMAIN}' type='chat'><body>{body}</body></message>"
    ))
    .await;
    let needle = format!("<body>{body}</body>");
    expect_stanza(to, &format!("the message {body:?}"), |stanza| {
        stanza.starts_with("<message") && stanza.contains(&needle)
    })
    .await;
}

/// The stream error `condition`, then the end of the connection.
async fn expect_stream_error(client: &mut RawClient, condition: &str) {
    let error = expect_stanza(client, "a stream error", |stanza| {
        stanza.starts_with("<stream:error")
    })
    .await;
    assert!(error.contains(&format!("<{condition} ")), "{error}");
    assert!(
        client.closed().await,
        "the stream stayed open after {error}"
    );
}

/// Alice's side of the burst: numbered messages in batches, at most
/// [`WINDOW`] ahead of what bob has read.
async fn send_numbered(alice: &mut RawClient, read: &AtomicUsize) {
    let mut batch = String::new();
    for start in (0..MESSAGES).step_by(BATCH) {
        while start.saturating_sub(read.load(Ordering::Relaxed)) > WINDOW {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        batch.clear();
        for seq in start..(start + BATCH).min(MESSAGES) {
            batch.push_str(&format!(
                "<message to='bob@{DOMAIN}' type='chat' id='m{seq}'><body>{seq}</body></message>"
            ));
        }
        alice.send(&batch).await;
    }
}

/// Bob's side: every number, once, in order.
async fn read_numbered(bob: &mut RawClient, read: &AtomicUsize) {
    for expected in 0..MESSAGES {
        let stanza = expect_stanza(bob, &format!("message {expected}"), |stanza| {
            stanza.starts_with("<message")
        })
        .await;
        let body = stanza
            .split_once("<body>")
            .and_then(|(_, rest)| rest.split_once("</body>"))
            .map(|(body, _)| body);
        assert_eq!(
            body,
            Some(expected.to_string().as_str()),
            "message {expected} lost or out of order: {stanza}"
        );
        assert_eq!(
            attribute(&stanza, "from").as_deref(),
            Some("alice@localhost/a")
        );
        read.store(expected + 1, Ordering::Relaxed);
    }
}

/// The value of attribute `name` on the root element of `stanza`.
fn attribute(stanza: &str, name: &str) -> Option<String> {
    let head = &stanza[..stanza.find('>').unwrap_or(stanza.len())];
    let at = head.find(&format!(" {name}="))? + name.len() + 2;
    let quote = head[at..].chars().next()?;
    let value = &head[at + 1..];
    Some(value[..value.find(quote)?].to_string())
}
