//! A short real run of the load tool against the all-in-one xmppd server:
//! provisioning by in-band registration, then closed-loop chat over STARTTLS
//! with SCRAM, without and with the account features (carbons, a blocklist)
//! turned on at every login, checked through the JSON report.
//!
//! The server binary is the workspace's `xmppd`, which `cargo test
//! --workspace` (the README's test command) builds beside this tool.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `N` distinct free ports on 127.0.0.1: held until all are picked, since a port let go can
/// be handed out again at once.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|listener| listener.local_addr().unwrap().port())
}

fn xmppd_binary() -> PathBuf {
    let loadtest = Path::new(env!("CARGO_BIN_EXE_xmppd-loadtest"));
    let xmppd = loadtest.with_file_name(format!("xmppd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        xmppd.exists(),
        "{} is missing: run the workspace tests (.ci/test) or `cargo build -p xmppd` first",
        xmppd.display()
    );
    xmppd
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path) -> (Server, u16) {
    let [c2s, c2s_tls, http] = free_ports();
    let config = dir.join("xmppd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n\
             [listen]\nc2s = \"127.0.0.1:{c2s}\"\nc2s_tls = \"127.0.0.1:{c2s_tls}\"\n\
             [auth]\nregistration = true\nregistrations_per_ip_per_hour = 0\n\
             [limits]\nconnections_per_ip = 0\nstanzas_per_second = 0\n\
             [observability]\nhttp = \"127.0.0.1:{http}\"\nlog = \"warn\"\n",
            dir.display(),
        ),
    )
    .unwrap();
    let child = Command::new(xmppd_binary())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", c2s)).is_err() {
        assert!(Instant::now() < deadline, "xmppd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The edge listens before the router knows the session replica.
    std::thread::sleep(Duration::from_millis(1500));
    (Server(child), c2s)
}

fn loadtest(port: u16, args: &[&str]) -> serde_json::Value {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xmppd-loadtest"))
        .args(args)
        .args([
            "--target",
            &format!("127.0.0.1:{port}"),
            "--users",
            "20",
            "--quiet",
        ])
        .arg("--json")
        .arg(report.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap()
}

fn total(report: &serde_json::Value, counter: &str) -> u64 {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["counters"][counter].as_u64().unwrap())
        .sum()
}

#[test]
fn provision_then_chat_against_the_all_in_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_server(dir.path());

    let provisioned = loadtest(port, &["provision"]);
    assert_eq!(total(&provisioned, "accounts_created"), 20);
    // Provisioning resumes: a second run finds every account there.
    let again = loadtest(port, &["provision"]);
    assert_eq!(total(&again, "accounts_existed"), 20);

    let chat = loadtest(
        port,
        &[
            "chat",
            "--duration",
            "2s",
            "--drain",
            "3s",
            "--mechanism",
            "SCRAM-SHA-1",
        ],
    );
    assert_every_message_delivered(&chat);

    // Each phase's timeline adds up to the phase.
    for phase in chat["phases"].as_array().unwrap() {
        let slices = phase["timeline"].as_array().unwrap();
        assert!(!slices.is_empty(), "{phase}");
        let delivered: u64 = slices
            .iter()
            .map(|slice| slice["counters"]["messages_delivered"].as_u64().unwrap())
            .sum();
        assert_eq!(
            delivered, phase["counters"]["messages_delivered"],
            "{phase}"
        );
    }

    // The report compares and plots: one chart per phase and latency with samples, and the
    // run second by second. A second run names it twice, as two rounds.
    let report = dir.path().join("chat.json");
    std::fs::write(&report, chat.to_string()).unwrap();
    let plots = dir.path().join("plots");
    let output = Command::new(env!("CARGO_BIN_EXE_xmppd-loadtest"))
        .args(["compare", "--plot"])
        .arg(&plots)
        .arg(format!("all-in-one={}", report.display()))
        .arg(format!("again={0},{0}", report.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("delivered msgs/s"), "{table}");
    assert!(table.contains("medians of 2 rounds"), "{table}");
    for chart in [
        "ramp-up-login.svg",
        "steady-delivery.svg",
        "timeline-delivered.svg",
        "timeline-sessions.svg",
        "timeline-delivery-p99.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(chart)).unwrap();
        assert!(svg.contains("all-in-one"), "{chart}: {svg}");
    }
    assert!(!plots.join("ramp-down-delivery.svg").exists());
    assert!(!plots.join("timeline-errors.svg").exists());

    // Every user turns on carbons and blocks three strangers after its login (XEP-0280,
    // XEP-0191): the server answers each request, and delivers every message.
    let features = loadtest(
        port,
        &[
            "chat",
            "--duration",
            "2s",
            "--drain",
            "3s",
            "--mechanism",
            "SCRAM-SHA-1",
            "--carbons",
            "--blocklist",
            "3",
        ],
    );
    assert_every_message_delivered(&features);
    assert_eq!(total(&features, "logins"), 20);
    for phase in features["phases"].as_array().unwrap() {
        assert_eq!(phase["errors"], serde_json::json!({}), "{phase}");
    }
    assert_eq!(features["params"]["blocklist"], 3);
}

/// A chat report in which messages were sent, and every one arrived once, in
/// order, with every login made.
fn assert_every_message_delivered(report: &serde_json::Value) {
    let sent = total(report, "messages_sent");
    assert!(sent > 0, "no messages sent: {report}");
    assert_eq!(
        total(report, "messages_delivered"),
        sent,
        "messages lost: {report}"
    );
    assert_eq!(total(report, "messages_reordered"), 0);
    assert_eq!(total(report, "messages_skipped"), 0);
    assert_eq!(total(report, "login_failures"), 0);
}
