//! The all-in-one server as a new user runs it: accounts from the CLI,
//! two clients chatting, sessions listed.

mod support;

use support::otlp::Collector;
use support::{RawClient, Server, assert_metrics_documented, http_get, xmppd};

#[tokio::test]
async fn two_clients_chat_and_sessions_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");

    let mut alice = RawClient::login(server.c2s, "alice", "alice-secret", "phone").await;
    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "laptop").await;
    alice.available().await;
    bob.available().await;

    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let received = bob.expect("</message>").await;
    assert!(
        received.contains("from='alice@localhost/phone'")
            || received.contains("from=\"alice@localhost/phone\""),
        "{received}"
    );
    assert!(received.contains("<body>hi bob</body>"), "{received}");

    // The list names every connected user: not without the server's token.
    let (status, sessions) = http_get(server.http, "/sessions").await.unwrap();
    assert_eq!(status, 401, "{sessions}");
    assert!(!sessions.contains("alice@localhost"), "{sessions}");
    let token = std::fs::read_to_string(dir.path().join("sessions.token")).unwrap();
    let (status, _) = sessions_with(server.http, "not-the-token").await;
    assert_eq!(status, 401);
    let (status, sessions) = sessions_with(server.http, token.trim()).await;
    assert_eq!(status, 200);
    assert!(sessions.contains("alice@localhost/phone"), "{sessions}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("sessions.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the token file is its owner's alone");
    let output = xmppd()
        .arg("--config")
        .arg(&server.config)
        .arg("sessions")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.contains("bob@localhost/laptop"), "{listed}");
    assert_metrics_documented(&server).await;
}

/// `GET /sessions` with a bearer token: (status, body).
async fn sessions_with(address: std::net::SocketAddr, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /sessions HTTP/1.0\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_string())
}

#[tokio::test]
async fn user_cli_adds_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("carol", "pw");
    let list = |server: &Server| {
        let output = xmppd()
            .arg("--config")
            .arg(&server.config)
            .args(["user", "list"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(list(&server).contains("carol@localhost"));
    let duplicate = xmppd()
        .arg("--config")
        .arg(&server.config)
        .args(["user", "add", "carol@localhost"])
        .env("XMPPD_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(!duplicate.status.success());
    // A password on the command line is refused: anyone on the machine
    // could read it there.
    let on_the_command_line = xmppd()
        .arg("--config")
        .arg(&server.config)
        .args(["user", "add", "dave@localhost", "--password", "x"])
        .output()
        .unwrap();
    assert!(!on_the_command_line.status.success());
    // Without a terminal, the password is the first line of standard input.
    let mut piped = xmppd()
        .arg("--config")
        .arg(&server.config)
        .args(["user", "add", "erin@localhost"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), b"erin-pw\n").unwrap();
    assert!(piped.wait().unwrap().success());
    RawClient::login(server.c2s, "erin", "erin-pw", "cli").await;
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));
    let removed = xmppd()
        .arg("--config")
        .arg(&server.config)
        .args(["user", "remove", "carol@localhost"])
        .output()
        .unwrap();
    assert!(removed.status.success());
    assert!(!list(&server).contains("carol@localhost"));
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[server]\ndomian = \"typo\"\n").unwrap();
    let output = xmppd()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("domian"));
}

#[tokio::test]
async fn a_stopping_server_tells_bound_clients_to_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    let mut alice = RawClient::login(server.c2s, "alice", "alice-secret", "phone").await;
    alice.available().await;

    let pid = server.pid().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    // RFC 6120 §4.9.3.20, through the bound stream's mailbox (Edge::close_bound_streams).
    alice.expect_stream_error("system-shutdown").await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_server_runs_on_the_configured_worker_threads() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "[server]\nworker_threads = 3\n");
    server.ready().await;
    let workers = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "tokio-rt-worker")
        .count();
    assert_eq!(workers, 3);
}

#[tokio::test]
async fn a_negative_worker_thread_count_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[server]\nworker_threads = -1\n").unwrap();
    let output = xmppd().arg("--config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("worker_threads"));
}

#[tokio::test]
async fn logs_are_json_lines_when_asked() {
    let stderr = stderr_of_a_run(&[("XMPPD_OBSERVABILITY__LOG_FORMAT", "json")]).await;
    let mut lines = 0;
    for line in stderr.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}\n{stderr}"));
        assert!(parsed["message"].is_string(), "{line}");
        assert!(parsed["level"].is_string(), "{line}");
        assert!(parsed["timestamp"].is_string(), "{line}");
        lines += 1;
    }
    assert!(lines > 0, "nothing logged");
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_have_no_colour_codes() {
    let stderr = stderr_of_a_run(&[]).await;
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
}

/// What the all-in-one server writes to standard error, a pipe, from its
/// start until it is ready and stopped (SIGTERM), with the configuration in
/// `env` and none of the variables that would turn colours off for it.
async fn stderr_of_a_run(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ports = support::Ports::free();
    let child = xmppd()
        .arg("run")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env("XMPPD_SERVER__DATA_DIR", dir.path())
        .env("XMPPD_LISTEN__C2S", ports.c2s.to_string())
        .env("XMPPD_LISTEN__C2S_TLS", ports.c2s_tls.to_string())
        .env("XMPPD_LISTEN__WEBSOCKET", ports.websocket.to_string())
        .env("XMPPD_OBSERVABILITY__HTTP", ports.http.to_string())
        .env("XMPPD_ADMIN__LISTEN", ports.admin.to_string())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http_get(ports.http, "/readyz")
        .await
        .map(|(status, _)| status)
        != Some(200)
    {
        assert!(std::time::Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{}", output.status);
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn a_trace_endpoint_that_is_not_a_url_is_a_clear_error() {
    for protocol in ["grpc", "http"] {
        let dir = tempfile::tempdir().unwrap();
        let output = xmppd()
            .arg("run")
            .env("XMPPD_SERVER__DATA_DIR", dir.path())
            .env("XMPPD_TRACING__ENABLED", "true")
            .env("XMPPD_TRACING__PROTOCOL", protocol)
            .env("XMPPD_TRACING__ENDPOINT", "not a url")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{protocol}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("tracing.endpoint \"not a url\""),
            "{protocol}: {stderr}"
        );
    }
}

/// The all-in-one process exports over OTLP/HTTP, and a message between two
/// of its clients is one trace there too: `receive` → `route` → `deliver`.
#[tokio::test]
async fn a_message_is_one_trace_exported_over_otlp_http() {
    let (collector, receiver) = Collector::start_http().await;
    let dir = tempfile::tempdir().unwrap();
    let tracing = format!(
        "[tracing]\nenabled = true\nprotocol = \"http\"\nendpoint = \"http://{receiver}/v1/traces\"\n"
    );
    let server = Server::all_in_one(dir.path(), &tracing);
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut alice = RawClient::login(server.c2s, "alice", "alice-secret", "phone").await;
    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "laptop").await;
    bob.available().await;
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>traced</body></message>")
        .await;
    bob.expect("<body>traced</body>").await;
    let pid = server.pid();
    let status = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.terminate()
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");

    let message = collector
        .wait_for("span of alice's message", |span| {
            span.name == "receive" && span.is_stanza("message", "chat")
        })
        .await;
    assert_eq!(message.service, "xmppd");
    // The generated node id: xmppd-<host>-<pid>-<start>.
    assert!(
        message.instance.starts_with("xmppd-") && message.instance.contains(&format!("-{pid}-")),
        "{message:?}"
    );
    let route = collector.next_hop(&message, "route").await;
    collector.next_hop(&route, "deliver").await;
}
