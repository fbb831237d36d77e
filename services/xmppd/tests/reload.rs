//! Reloading the configuration without a restart (docs/configuration.md,
//! "Reloading"): on SIGHUP and when the file changes, in the all-in-one
//! process and in each cluster role. The reloadable keys take effect, the
//! others are named as needing a restart and keep their values, and a file
//! that no longer loads leaves the running configuration in place.
//!
//! The cluster scenario needs Redis and Postgres, as tests/cluster.rs does.

mod support;

use std::time::{Duration, Instant};

use support::cluster::with_cluster;
use support::{RawClient, Server};

const RELOADED: &str = "configuration reloaded";

/// Sends SIGHUP to `server`.
fn hang_up(server: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until `server`'s log holds `needle` `count` times.
async fn wait_for_log(server: &Server, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = server.log();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{count} × {needle:?} not logged in time; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's configuration file with `from` replaced by `to`.
fn edit_config(server: &Server, from: &str, to: &str) {
    let text = std::fs::read_to_string(&server.config).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(&server.config, text.replacen(from, to, 1)).unwrap();
}

/// Whether a new stream from this address is let in (features) rather than
/// refused (a stream error).
async fn let_in(server: &Server) -> (bool, RawClient) {
    let mut client = RawClient::connect(server.c2s).await;
    client
        .send(
            "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
        )
        .await;
    loop {
        match client.next_stanza(Duration::from_secs(10)).await {
            Some(element) if element.starts_with("<stream:features") => return (true, client),
            Some(element) if element.starts_with("<stream:error") => {
                assert!(element.contains("policy-violation"), "{element}");
                return (false, client);
            }
            Some(_) => {}
            None => return (false, client),
        }
    }
}

#[tokio::test]
async fn sighup_reloads_limits_and_the_log_filter_and_keeps_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // No file checks: only the signal reloads here.
    let server = Server::all_in_one(
        dir.path(),
        "[server]\nconfig_check_ms = 0\n[limits]\nconnections_per_ip = 2\n",
    );
    server.ready().await;
    let (true, _first) = let_in(&server).await else {
        panic!("first refused")
    };
    let (true, _second) = let_in(&server).await else {
        panic!("second refused")
    };
    assert!(!let_in(&server).await.0, "a third let in past the limit");

    // The file alone changes nothing while config_check_ms is 0.
    edit_config(&server, "connections_per_ip = 2", "connections_per_ip = 3");
    edit_config(
        &server,
        "domain = \"localhost\"",
        "domain = \"elsewhere.test\"",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!let_in(&server).await.0, "reloaded without a signal");

    hang_up(&server);
    let log = wait_for_log(&server, RELOADED, 1).await;
    assert!(log.contains("limits.connections_per_ip"), "{log}");
    assert!(
        log.contains("changed keys apply only after a restart") && log.contains("server.domain"),
        "{log}"
    );
    // The domain stayed: a stream to localhost is let in, not refused with host-unknown.
    let (true, third) = let_in(&server).await else {
        panic!("the new limit did not apply")
    };
    assert!(
        !let_in(&server).await.0,
        "a fourth let in past the new limit"
    );

    // A quieter log filter: this reload's own INFO line is no longer written.
    edit_config(&server, "log = \"info\"", "log = \"warn\"");
    hang_up(&server);
    wait_for_log(&server, "changed keys apply only after a restart", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.log().matches(RELOADED).count(),
        1,
        "{}",
        server.log()
    );

    // A file that does not load is reported; the running configuration stays.
    edit_config(
        &server,
        "connections_per_ip = 3",
        "connections_per_ip = \"many\"",
    );
    hang_up(&server);
    let log = wait_for_log(&server, "configuration not reloaded", 1).await;
    assert!(log.contains("connections_per_ip"), "{log}");
    assert!(
        !let_in(&server).await.0,
        "the limit changed with a bad file"
    );
    drop(third);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(let_in(&server).await.0, "the server no longer serves");
}

/// Every role follows its file: a session replica applies a smaller offline
/// store at once, and a router and a connection-manager survive SIGHUP and
/// carry on routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_role_reloads_its_configuration() {
    with_cluster(Duration::from_secs(90), |mut nodes| async move {
        nodes.common = "[server]\nconfig_check_ms = 200\n".into();
        let session = nodes.session(1);
        session.ready().await;
        let router = nodes.router(None);
        router.ready().await;
        let edge = nodes.connection_manager(1);
        edge.ready().await;
        session.add_user("alice", "alice-secret");
        session.add_user("bob", "bob-secret");
        let mut alice = RawClient::login(edge.c2s, "alice", "alice-secret", "phone").await;

        edit_config(
            &session,
            "[storage]",
            "[limits]\nmax_offline_messages = 1\n[storage]",
        );
        let log = wait_for_log(&session, RELOADED, 1).await;
        assert!(log.contains("limits.max_offline_messages"), "{log}");
        for router_or_edge in [&router, &edge] {
            hang_up(router_or_edge);
            wait_for_log(router_or_edge, RELOADED, 1).await;
        }

        // Bob is offline: the first message is stored, the second is past the limit.
        for id in ["m1", "m2"] {
            alice
                .send(&format!(
                    "<message to='bob@localhost' id='{id}' type='chat'><body>hi</body></message>"
                ))
                .await;
        }
        alice
            .expect_stanza_error(Some("m2"), "cancel", "service-unavailable")
            .await;
        let mut bob = RawClient::login(edge.c2s, "bob", "bob-secret", "desk").await;
        bob.available().await;
        bob.expect("id='m1'").await;
    })
    .await;
}
