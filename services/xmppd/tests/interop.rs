//! Interop with a third-party client library: slixmpp (Debian's
//! python3-slixmpp) against the all-in-one server with its default security
//! (STARTTLS required, a generated self-signed certificate), driven by
//! `tests/interop/chat.py`, and its XEP-0198 plugin resuming a session,
//! `tests/interop/resume.py`, and its XEP-0045 plugin in a room,
//! `tests/interop/muc.py`.

mod support;

use support::{DOMAIN, Server, ServerOptions, python};

fn require_slixmpp() {
    python::require("slixmpp", "python3-slixmpp");
}

#[tokio::test]
async fn slixmpp_logs_in_over_tls_subscribes_and_chats() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions {
        role: "run",
        data_dir: dir.path(),
        extra: "[auth]\nrequire_tls = true\n",
        env: Vec::new(),
    });
    server.ready().await;
    server.add_user("alice", "alice-interop-pw");
    server.add_user("bob", "bob-interop-pw");

    let mut chat = python::script("interop/chat.py");
    chat.arg("127.0.0.1")
        .arg(server.c2s.port().to_string())
        .arg(server.c2s_tls.port().to_string())
        .args([&format!("alice@{DOMAIN}/slix"), "alice-interop-pw"])
        .args([&format!("bob@{DOMAIN}/slix"), "bob-interop-pw"]);
    let output = python::run(chat).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chat.py failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        server.log()
    );
    assert!(
        stdout.contains("interop ok: 100 messages each way, in order"),
        "{stdout}"
    );
}

/// XEP-0198 with slixmpp's own `xep_0198` plugin: enabled with resumption,
/// the connection cut, the session resumed (`tests/interop/resume.py`).
#[tokio::test]
async fn slixmpp_resumes_its_session_after_its_connection_is_cut() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions {
        role: "run",
        data_dir: dir.path(),
        extra: "",
        env: Vec::new(),
    });
    server.ready().await;
    server.add_user("alice", "alice-interop-pw");
    server.add_user("bob", "bob-interop-pw");

    let mut resume = python::script("interop/resume.py");
    resume
        .arg("127.0.0.1")
        .arg(server.c2s.port().to_string())
        .args([&format!("alice@{DOMAIN}/slix"), "alice-interop-pw"])
        .args([&format!("bob@{DOMAIN}/slix"), "bob-interop-pw"]);
    let output = python::run(resume).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("interop ok: resumed"),
        "resume.py failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        server.log()
    );
}

/// slixmpp 1.8 picks SCRAM-SHA-256-PLUS whenever it is offered and binds
/// to tls-unique, which TLS 1.3 does not define; it reads no XEP-0440. Each
/// such attempt must be refused as an unsupported binding type
/// (RFC 5802 §7), not as a wrong password, and the login must then succeed.
#[tokio::test]
async fn slixmpp_binding_to_tls_unique_is_told_the_type_is_unsupported_then_logs_in() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions {
        role: "run",
        data_dir: dir.path(),
        extra: "[auth]\nrequire_tls = true\n",
        env: Vec::new(),
    });
    server.ready().await;
    server.add_user("alice", "alice-interop-pw");
    let mut login = python::script("interop/login.py");
    login
        .arg("127.0.0.1")
        .arg(server.c2s.port().to_string())
        .args([&format!("alice@{DOMAIN}/slix"), "alice-interop-pw"]);
    let output = python::run(login).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "login.py failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        server.log()
    );
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("failure"))
        .collect();
    let wrong_password = failures
        .iter()
        .filter(|line| !line.ends_with("e=unsupported-channel-binding-type"))
        .count();
    assert_eq!(wrong_password, 0, "{stdout}");
    assert!(stdout.contains("success SCRAM-SHA-256\n"), "{stdout}");
}

/// Group chat with slixmpp's XEP-0045 plugin: a reserved room configured
/// through its form, groupchat both ways in order, the subject, history on
/// a second join, the room listed by the service (`tests/interop/muc.py`).
#[tokio::test]
async fn slixmpp_creates_a_room_and_chats_in_it() {
    require_slixmpp();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions {
        role: "run",
        data_dir: dir.path(),
        extra: "",
        env: Vec::new(),
    });
    server.ready().await;
    server.add_user("alice", "alice-interop-pw");
    server.add_user("bob", "bob-interop-pw");
    let mut muc = python::script("interop/muc.py");
    muc.arg("127.0.0.1")
        .arg(server.c2s.port().to_string())
        .arg(format!("lounge@conference.{DOMAIN}"))
        .args([&format!("alice@{DOMAIN}/slix"), "alice-interop-pw"])
        .args([&format!("bob@{DOMAIN}/slix"), "bob-interop-pw"]);
    let output = python::run(muc).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("interop ok: muc"),
        "muc.py failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        server.log()
    );
}
