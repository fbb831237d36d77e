//! The cluster as separate processes against real Redis and Postgres: two
//! session replicas, a router, two connection-managers. Clients on different
//! connection-managers subscribe to each other, exchange 10,000 messages in
//! order, and carry on through the SIGKILL of a connection-manager, the
//! restart of the router and the SIGKILL of a session replica. A real
//! Prometheus scrapes a cluster and `promtool` checks the alert rules.
//!
//! Group chat runs across both connection-managers and through the SIGKILL
//! of the replica that owns a room.
//!
//! A third scenario exports the cluster's traces to an OTLP receiver in the
//! test and follows one message, and one IQ to the server, through them.
//!
//! Needs Redis and Postgres (`XMPPD_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; `XMPPD_TEST_POSTGRES_URL`, an admin connection
//! allowed to create databases, default
//! `postgres://root@127.0.0.1:5432/postgres`). The test uses its own key
//! prefix and database and removes both at the end, pass or fail. The nodes
//! talk mutual TLS with certificates from `xmppd certs init`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::admin::{AdminApi, set_admin};
use support::cluster::{NODE_TTL, Nodes, wait_metric, with_cluster};
use support::otlp::Collector;
use support::prometheus::{self, Prometheus};
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
/// The issue's bound for contacts to hear of a dead connection-manager.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_the_failure_of_each_kind_of_node() {
    with_cluster(TEST_LIMIT, scenario).await;
}

/// Messages a client with stream management read but never acknowledged
/// outlive the SIGKILL of its connection-manager: the router kept a copy of
/// each until acknowledged and, once that node's stream breaks, routes them
/// again, here to offline storage, where the client finds them, in order,
/// at its next login on the other connection-manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_outlive_their_connection_manager() {
    with_cluster(TEST_LIMIT, unacknowledged).await;
}

/// Blocking and carbons between users on different connection-managers:
/// the router enforces and copies from the policy the replicas wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_features_work_across_connection_managers() {
    with_cluster(TEST_LIMIT, features).await;
}

/// A real Prometheus scrapes every kind of node while clients log in and
/// chat: the latency histograms, the queue and session gauges, the process
/// metrics and the build info reach it with their labels and counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_every_kind_of_node() {
    let Some(tools) = prometheus::tools() else {
        return;
    };
    with_cluster(TEST_LIMIT, move |nodes| scraped(nodes, tools)).await;
}

/// The alert rules the Helm chart installs pass `promtool check rules`, and
/// their unit tests pass `promtool test rules`.
#[test]
fn the_alert_rules_pass_promtool() {
    let Some(tools) = prometheus::tools() else {
        return;
    };
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../helm/xmppd/files");
    prometheus::promtool(&tools, &["check", "rules", "alerts.yaml"], &files);
    prometheus::promtool(&tools, &["test", "rules", "alerts_test.yaml"], &files);
}

/// One message from alice on one connection-manager to bob on another is
/// one trace, a span per hop in a different process, each the child of the
/// hop before; an IQ answered by alice's replica is one trace through it,
/// and so is her login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stanza_is_one_trace_across_the_processes_it_crosses() {
    with_cluster(TEST_LIMIT, traces).await;
}

/// Group chat with occupants on different connection-managers, then the
/// SIGKILL of the replica that owns a room while messages flow: the room
/// moves to the other replica, its occupants stay joined, and every message
/// reaches every occupant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_survives_the_sigkill_of_the_rooms_replica() {
    with_cluster(TEST_LIMIT, group_chat).await;
}

async fn group_chat(nodes: Nodes) {
    use support::muc;
    let mut sessions = [nodes.session(1), nodes.session(2)];
    for session in &sessions {
        session.ready().await;
    }
    for user in ["alice", "bob"] {
        sessions[0].add_user(user, &muc::password(user));
    }
    let router = nodes.router(None);
    router.ready().await;
    wait_metric(&router, "xmppd_router_session_replicas", 2).await;
    let cm1 = nodes.connection_manager(1);
    let cm2 = nodes.connection_manager(2);
    cm1.ready().await;
    cm2.ready().await;
    wait_metric(&router, "xmppd_router_attached_connection_managers", 2).await;
    muc::chat(cm1.c2s, cm2.c2s).await;

    let mut alice = muc::login(cm1.c2s, "alice").await;
    let mut bob = muc::login(cm2.c2s, "bob").await;
    let room = muc::room("busy");
    muc::create(&mut alice, &room, "Alice", &[]).await;
    muc::join(&mut bob, &room, "Bob", Some("")).await;
    const SENT: usize = 60;
    let owner = owner_index(&room, &sessions);
    for n in 0..SENT {
        if n == SENT / 3 {
            sessions[owner].kill();
        }
        muc::say(&mut alice, &room, &format!("b{n}"), &format!("busy {n}")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from = format!("{room}/Alice");
    for reader in [&mut alice, &mut bob] {
        let mut stanza_ids = std::collections::HashMap::new();
        for n in 0..SENT {
            let id = format!("b{n}");
            let message = muc::heard(reader, &from, &id, &format!("busy {n}")).await;
            let stanza_id = message
                .get_child("stanza-id", xmppd_protocol::ns::STANZA_ID)
                .and_then(|s| s.get_attr("id"))
                .unwrap()
                .to_string();
            stanza_ids.insert(id, stanza_id);
        }
        // A message the dead replica reflected but had not acknowledged is
        // reflected again by the new owner, under the stanza id it kept.
        let copies: Vec<_> = reader
            .backlog
            .iter()
            .filter(|s| muc::is_from(s, "message", &from))
            .collect();
        for copy in copies {
            let id = copy.get_attr("id").unwrap_or_default();
            let stanza_id = copy
                .get_child("stanza-id", xmppd_protocol::ns::STANZA_ID)
                .and_then(|s| s.get_attr("id"));
            assert_eq!(
                stanza_id,
                stanza_ids.get(id).map(String::as_str),
                "{copy:?}"
            );
        }
    }
    // Both are still occupants: the room, now on the other replica, goes on.
    muc::say(&mut bob, &room, "after", "still here").await;
    muc::heard(&mut alice, &format!("{room}/Bob"), "after", "still here").await;
}

async fn features(nodes: Nodes) {
    let sessions = [nodes.session(1), nodes.session(2)];
    for session in &sessions {
        session.ready().await;
    }
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "gina", "root",
    ] {
        sessions[0].add_user(user, &format!("pw-{user}"));
    }
    set_admin(&sessions[0], "root", true);
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
    // Group changes made on the second replica's API reach members owned by
    // either replica, on either connection-manager.
    let api = AdminApi::of(&sessions[1]);
    api.wait_until_up().await;
    let root = api.login("root", "pw-root").await;
    let users = ["erin", "frank", "gina"];
    support::features::shared_groups(cm1.c2s, cm2.c2s, &root, users).await;
}

/// One node of each kind and a second connection-manager, ready, with
/// alice and bob as users.
async fn smallest_cluster(nodes: &Nodes) -> [Server; 4] {
    let session = nodes.session(1);
    session.ready().await;
    session.add_user("alice", "alice-pw");
    session.add_user("bob", "bob-pw");
    let router = nodes.router(None);
    router.ready().await;
    let cm1 = nodes.connection_manager(1);
    let cm2 = nodes.connection_manager(2);
    cm1.ready().await;
    cm2.ready().await;
    wait_metric(&router, "xmppd_router_attached_connection_managers", 2).await;
    [session, router, cm1, cm2]
}

async fn unacknowledged(nodes: Nodes) {
    const UNACKED: usize = 20;
    let [session, router, mut cm1, cm2] = smallest_cluster(&nodes).await;
    let mut bob = login(&cm1, "bob", "bob-pw", "b").await;
    bob.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    expect_stanza(&mut bob, "stream management enabled", |s| {
        s.starts_with("<enabled")
    })
    .await;
    available(&mut bob, "bob@localhost/b").await;
    let mut alice = login(&cm2, "alice", "alice-pw", "a").await;
    let body = |n| format!("<body>unacknowledged {n}</body>");
    for n in 0..UNACKED {
        alice
            .send(&format!(
                "<message to='bob@{DOMAIN}/b' type='chat'>{}</message>",
                body(n)
            ))
            .await;
    }
    // Bob reads every one, and acknowledges none.
    for n in 0..UNACKED {
        expect_stanza(&mut bob, "a message", |s| s.contains(&body(n))).await;
    }
    wait_metric(&router, "xmppd_router_edge_unsettled", UNACKED as u64).await;

    cm1.kill();
    drop(bob);
    wait_metric(&router, "xmppd_router_edge_unsettled", 0).await;
    wait_metric(
        &session,
        "xmppd_session_events_total{event=\"offline_stored\"}",
        UNACKED as u64,
    )
    .await;
    let mut bob = login(&cm2, "bob", "bob-pw", "b2").await;
    bob.send("<presence/>").await;
    for n in 0..UNACKED {
        expect_stanza(&mut bob, "a stored message", |s| {
            s.starts_with("<message") && s.contains(&body(n))
        })
        .await;
    }
}

async fn scraped(nodes: Nodes, tools: prometheus::Tools) {
    let [session, router, cm1, cm2] = smallest_cluster(&nodes).await;
    let targets = [
        ("session-1", session.http),
        ("router-1", router.http),
        ("cm-1", cm1.http),
        ("cm-2", cm2.http),
    ];
    let prometheus = Prometheus::start(&tools, &targets);
    // Scraped before the traffic, so that rates see it grow.
    prometheus.expect_series("up == 1", 4).await;

    let mut alice = login(&cm1, "alice", "alice-pw", "a").await;
    let mut bob = login(&cm2, "bob", "bob-pw", "b").await;
    available(&mut alice, "alice@localhost/a").await;
    available(&mut bob, "bob@localhost/b").await;
    subscribe(&mut alice, "alice", &mut bob, "bob@localhost/b").await;
    for round in 0..10 {
        exchange(
            &mut alice,
            "alice",
            &mut bob,
            "bob",
            &format!("round {round}"),
        )
        .await;
    }

    // Every node: its build and its process.
    let version = env!("CARGO_PKG_VERSION");
    for expr in [
        format!("xmppd_build_info{{version=\"{version}\"}} == 1"),
        "process_resident_memory_bytes > 1e6".into(),
        "process_open_fds > 0".into(),
        "process_max_fds > 0".into(),
        "process_cpu_seconds_total > 0".into(),
        "process_start_time_seconds > 0".into(),
    ] {
        prometheus.expect_series(&expr, 4).await;
    }
    // The latency histograms, by their labels, counted.
    for (expr, series) in [
        (
            r#"xmppd_router_routing_seconds_count{node="router-1"} > 0"#,
            2,
        ),
        (
            r#"xmppd_edge_login_seconds_count{step=~"sasl|bind|total"} > 0"#,
            6,
        ),
        ("xmppd_edge_stanza_inbound_seconds_count > 0", 2),
        ("xmppd_edge_stanza_outbound_seconds_count > 0", 2),
        (
            r#"xmppd_redis_call_seconds_count{node="session-1", operation="bind"} > 0"#,
            1,
        ),
        (
            r#"xmppd_redis_call_seconds_count{node="router-1", operation="account"} > 0"#,
            1,
        ),
        (
            r#"xmppd_redis_call_seconds_count{operation="heartbeat"} > 0"#,
            4,
        ),
        (
            r#"xmppd_store_call_seconds_count{operation="credentials"} > 0"#,
            1,
        ),
        (
            r#"xmppd_store_call_seconds_count{operation="put_roster_item"} > 0"#,
            1,
        ),
        // Every operation is exported from the start, failures at 0.
        (
            r#"xmppd_redis_call_errors_total{node="session-1"} == 0"#,
            17,
        ),
        ("xmppd_store_call_errors_total == 0", 26),
        // What a dashboard asks: a quantile over a rate.
        (
            "histogram_quantile(0.99, sum by (le) (rate(xmppd_router_routing_seconds_bucket[1m]))) > 0",
            1,
        ),
    ] {
        prometheus.expect_series(expr, series).await;
    }
    // Sessions by transport, links and queues, read at scrape time.
    for (expr, series) in [
        (r#"xmppd_edge_bound_streams{transport="tcp"} == 1"#, 2),
        (r#"xmppd_edge_connections{transport="tcp"} == 1"#, 2),
        ("xmppd_edge_routers == 1", 2),
        ("xmppd_edge_session_replicas == 1", 2),
        ("xmppd_edge_mailbox_queued >= 0", 2),
        ("xmppd_edge_router_queued >= 0", 2),
        ("xmppd_router_edge_queued >= 0", 1),
        ("xmppd_router_replica_unacked >= 0", 1),
        ("xmppd_router_parked == 0", 1),
        ("xmppd_session_shard_queued >= 0", 1),
        ("xmppd_session_shard_queued_max >= 0", 1),
    ] {
        prometheus.expect_series(expr, series).await;
    }
    for node in [&session, &router, &cm1] {
        assert_metrics_documented(node).await;
    }
}

async fn traces(mut nodes: Nodes) {
    let (collector, receiver) = Collector::start().await;
    nodes.common = format!(
        "[tracing]\nenabled = true\nprotocol = \"grpc\"\n\
         endpoint = \"http://{receiver}\"\nsampling_ratio = 1.0\n\
         attributes = {{ \"deployment.environment\" = \"test\" }}\n"
    );
    let [session, router, cm1, cm2] = smallest_cluster(&nodes).await;
    let mut alice = login(&cm1, "alice", "alice-pw", "a").await;
    let mut bob = login(&cm2, "bob", "bob-pw", "b").await;
    available(&mut bob, "bob@localhost/b").await;
    send_one(&mut alice, "alice", &mut bob, "bob", "traced").await;
    alice
        .send("<iq type='get' id='traced-ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    expect_stanza(&mut alice, "the answer to the ping", |stanza| {
        stanza.starts_with("<iq") && stanza.contains("traced-ping")
    })
    .await;
    // Stopped, every process exports the spans it still holds.
    for node in [&cm1, &cm2, &router, &session] {
        stop(node).await;
    }

    let message = collector
        .wait_for("span of alice's message on cm-1", |span| {
            span.name == "receive" && span.instance == "cm-1" && span.is_stanza("message", "chat")
        })
        .await;
    assert!(message.parent_span_id.is_empty(), "{message:?}");
    assert_eq!(message.service, "xmppd-connection-manager");
    let route = collector.next_hop(&message, "route").await;
    assert_eq!(
        (route.service.as_str(), route.instance.as_str()),
        ("xmppd-router", "router-1")
    );
    let deliver = collector.next_hop(&route, "deliver").await;
    assert_eq!(
        (deliver.service.as_str(), deliver.instance.as_str()),
        ("xmppd-connection-manager", "cm-2")
    );

    let ping = collector
        .wait_for("span of alice's ping on cm-1", |span| {
            span.name == "receive" && span.instance == "cm-1" && span.is_stanza("iq", "get")
        })
        .await;
    let route = collector.next_hop(&ping, "route").await;
    let process = collector.next_hop(&route, "session.process").await;
    assert_eq!(
        (process.service.as_str(), process.instance.as_str()),
        ("xmppd-session", "session-1")
    );
    let answer = collector.next_hop(&process, "route").await;
    assert!(answer.is_stanza("iq", "result"), "{answer:?}");
    let deliver = collector.next_hop(&answer, "deliver").await;
    assert_eq!(deliver.instance, "cm-1");

    // Alice's login, one trace: its calls to her replica, and the replica's
    // Postgres and Redis work for them.
    let bind = collector
        .wait_for("alice's bind call on cm-1", |span| {
            span.name == "login.call"
                && span.instance == "cm-1"
                && span.attribute("call") == Some("bind")
        })
        .await;
    let login = collector
        .wait_for("the login span of alice's bind", |span| {
            span.name == "login" && span.span_id == bind.parent_span_id
        })
        .await;
    assert!(login.parent_span_id.is_empty(), "{login:?}");
    let credentials = collector
        .wait_for("the credentials call of alice's login", |span| {
            span.name == "login.call"
                && span.parent_span_id == login.span_id
                && span.attribute("call") == Some("credentials")
        })
        .await;
    for (call, work) in [
        (&credentials, "store.credentials"),
        (&bind, "registry.bind"),
    ] {
        let answer = collector.next_hop(call, "session.login").await;
        assert_eq!(answer.instance, "session-1");
        collector.next_hop(&answer, work).await;
    }

    for span in collector.spans() {
        assert_eq!(
            span.resource_attribute("deployment.environment"),
            Some("test"),
            "{span:?}"
        );
    }
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
