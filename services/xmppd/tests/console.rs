//! The web console in a real browser: Debian's chromium, headless, driven
//! by selenium (python3-selenium, chromium-driver) from
//! `tests/console/console.py` against the all-in-one server, with slixmpp
//! as the XMPP clients. With `XMPPD_CONSOLE_SCREENSHOTS` set to a folder,
//! the script saves the screenshots of `docs/console/` there.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{DOMAIN, Server, python};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The URL the server printed at start on the line starting with `label`.
async fn printed_url(server: &Server, label: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        let url = log
            .lines()
            .find_map(|line| line.trim_start().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(url) = url {
            return url.to_string();
        }
        assert!(Instant::now() < deadline, "no {label} line in:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_start_banner_prints_the_console_beside_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    let base = format!("https://{}/", server.admin);
    assert_eq!(
        printed_url(&server, "admin:").await,
        format!("{base}api/v1/")
    );
    assert_eq!(
        printed_url(&server, "console:").await,
        format!("{base}console/")
    );
}

#[tokio::test]
async fn an_administrator_manages_users_sessions_and_announcements_in_a_browser() {
    python::require("selenium", "python3-selenium");
    python::require("slixmpp", "python3-slixmpp");
    assert!(
        Path::new(CHROMEDRIVER).exists(),
        "{CHROMEDRIVER} is missing; run the README's test command, which installs \
         chromium and chromium-driver (apt-get install chromium chromium-driver)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "[admin]\nadmins = [\"root@localhost\"]\n");
    server.ready().await;
    server.add_user("root", "root console password");
    let console = printed_url(&server, "console:").await;

    let mut script = python::script("console/console.py");
    script
        .arg(&console)
        .args([&format!("root@{DOMAIN}"), "root console password"])
        .arg("127.0.0.1")
        .arg(server.c2s.port().to_string());
    let output = python::run(script).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("console ok"),
        "console.py failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        server.log()
    );
}
