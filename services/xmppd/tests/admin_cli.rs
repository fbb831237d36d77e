//! `xmppd api`: the admin CLI against a running all-in-one server, through
//! its HTTPS admin API, as an administrator would run it: logged in with a
//! password from the environment, the token in a file, the server's own
//! certificate trusted.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::admin::AdminApi;
use support::{RawClient, Server, muc, xmppd};

/// The all-in-one server whose `root` holds the admin role, and a token
/// file for the CLI beside it.
struct Setup {
    server: Server,
    token_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let setup = start_with("").await;
    AdminApi::of(&setup.server).wait_until_up().await;
    setup
}

/// [`start`] with more of the `[admin]` section, not waiting for the API.
async fn start_with(admin: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[admin]\nadmins = [\"root@localhost\"]\n{admin}");
    let server = Server::all_in_one(dir.path(), &config);
    server.ready().await;
    server.add_user("root", "rootpass");
    Setup {
        token_file: dir.path().join("cli").join("admin-token"),
        server,
        _dir: dir,
    }
}

/// What one run of the CLI printed, and whether it succeeded.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn succeeded(self) -> String {
        assert!(self.ok, "failed: {}{}", self.stdout, self.stderr);
        self.stdout
    }

    /// Asserts a failure whose message contains `text`.
    #[track_caller]
    fn failed_with(self, text: &str) {
        assert!(!self.ok, "succeeded: {}", self.stdout);
        assert!(
            self.stderr.contains(text),
            "{text:?} not in {}",
            self.stderr
        );
    }
}

impl Setup {
    /// `xmppd api <args>` with the server's configuration, the token file,
    /// and `env` (a password, a token).
    fn api(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = xmppd();
        command
            .arg("--config")
            .arg(&self.server.config)
            .arg("api")
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .env_remove("XMPPD_ADMIN_TOKEN")
            .env_remove("XMPPD_ADMIN_URL")
            .env_remove("XMPPD_PASSWORD")
            .envs(env.iter().copied());
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().unwrap();
        Run {
            ok: status.success(),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    fn login(&self) {
        let out = self
            .api(
                &["login", "root@localhost"],
                &[("XMPPD_PASSWORD", "rootpass")],
            )
            .succeeded();
        assert!(out.contains("logged in as root@localhost"), "{out}");
    }
}

/// The rows of a table whose first column is `first`.
fn column(table: &str, first: &str) -> Vec<String> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with(first), "no {first} column: {table}");
    lines
        .map(|line| {
            line.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn logging_in_keeps_a_private_token_and_logging_out_revokes_it() {
    let setup = start().await;
    setup
        .api(&["accounts", "list"], &[])
        .failed_with("no token: log in with `xmppd api login <jid>`");
    setup
        .api(&["login", "root@localhost"], &[("XMPPD_PASSWORD", "wrong")])
        .failed_with("bad_credentials");
    setup.login();
    let mode = std::fs::metadata(&setup.token_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&setup.token_file).unwrap();

    // An API token for automation, shown once, usable from the environment.
    let made = setup.api(&["tokens", "create", "backups"], &[]).succeeded();
    let secret = made
        .lines()
        .find_map(|line| line.strip_prefix("TOKEN:"))
        .unwrap()
        .trim()
        .to_string();
    let listed = setup
        .api(&["accounts", "list"], &[("XMPPD_ADMIN_TOKEN", &secret)])
        .succeeded();
    assert_eq!(column(&listed, "JID"), ["root@localhost"]);
    let tokens = setup.api(&["tokens", "list"], &[]).succeeded();
    assert!(tokens.contains("backups"), "{tokens}");

    let out = setup.api(&["logout"], &[]).succeeded();
    assert!(out.contains("logged out"), "{out}");
    assert!(!setup.token_file.exists());
    setup
        .api(
            &["accounts", "list"],
            &[("XMPPD_ADMIN_TOKEN", token.trim())],
        )
        .failed_with("token_revoked");
}

#[tokio::test]
async fn accounts_sessions_announcements_and_the_cluster() {
    let setup = start().await;
    setup.login();
    let password = [("XMPPD_PASSWORD", "carolpass")];
    let out = setup
        .api(&["accounts", "add", "carol@localhost"], &password)
        .succeeded();
    assert!(out.contains("created carol@localhost"), "{out}");
    setup
        .api(&["accounts", "add", "carol@localhost"], &password)
        .failed_with("account_exists: carol@localhost exists already (HTTP 409");
    setup
        .api(&["accounts", "add", "carol@elsewhere.example"], &password)
        .failed_with("not_local");
    let listed = setup.api(&["accounts", "list"], &[]).succeeded();
    assert_eq!(
        column(&listed, "JID"),
        ["carol@localhost", "root@localhost"]
    );
    let found = setup
        .api(&["accounts", "list", "--search", "CAR"], &[])
        .succeeded();
    assert_eq!(column(&found, "JID"), ["carol@localhost"]);
    let new_password = [("XMPPD_PASSWORD", "newpass")];
    setup
        .api(&["accounts", "passwd", "carol@localhost"], &new_password)
        .succeeded();

    // Sessions: listed, shown with their account, ended.
    let mut carol = RawClient::login(setup.server.c2s, "carol", "newpass", "laptop").await;
    carol.available().await;
    let sessions = setup.api(&["sessions", "list"], &[]).succeeded();
    assert_eq!(column(&sessions, "JID"), ["carol@localhost/laptop"]);
    let shown = setup
        .api(&["accounts", "show", "carol@localhost"], &[])
        .succeeded();
    assert!(shown.contains("carol@localhost/laptop"), "{shown}");
    let out = setup
        .api(
            &["announce", "--subject", "Notice", "maintenance at noon"],
            &[],
        )
        .succeeded();
    assert!(out.contains("sent to 1 recipients"), "{out}");
    carol.expect("maintenance at noon</body>").await;
    let cluster = setup.api(&["cluster"], &[]).succeeded();
    assert!(cluster.starts_with("SESSIONS:"), "{cluster}");
    assert!(cluster.contains("ROLE"), "{cluster}");
    let out = setup
        .api(&["sessions", "kick", "carol@localhost/laptop"], &[])
        .succeeded();
    assert!(out.contains("ended carol@localhost/laptop"), "{out}");
    carol.expect_stream_error("policy-violation").await;
    setup
        .api(&["sessions", "kick", "carol@localhost/laptop"], &[])
        .failed_with("unknown_session");

    let out = setup
        .api(&["accounts", "remove", "carol@localhost"], &[])
        .succeeded();
    assert!(out.contains("removed carol@localhost"), "{out}");
    setup
        .api(&["accounts", "remove", "carol@localhost"], &[])
        .failed_with("unknown_account");
    let audit = setup.api(&["audit", "--limit", "5"], &[]).succeeded();
    assert!(audit.contains("account.delete"), "{audit}");
}

#[tokio::test]
async fn rooms_are_listed_shown_and_destroyed() {
    let setup = start().await;
    setup.login();
    setup.server.add_user("alice", &muc::password("alice"));
    let mut alice = muc::login(setup.server.c2s, "alice").await;
    let room = muc::room("kitchen");
    muc::create(
        &mut alice,
        &room,
        "Alice",
        &[("muc#roomconfig_roomname", "Kitchen")],
    )
    .await;

    let listed = setup.api(&["rooms", "list"], &[]).succeeded();
    assert_eq!(column(&listed, "JID"), [room.as_str()]);
    assert!(listed.contains("Kitchen"), "{listed}");
    let shown = setup.api(&["rooms", "show", &room], &[]).succeeded();
    assert!(
        shown.contains("Alice") && shown.contains(alice.jid.as_str()) && shown.contains("owner"),
        "{shown}"
    );
    let out = setup
        .api(&["rooms", "destroy", &room, "--reason", "renovation"], &[])
        .succeeded();
    assert!(out.contains(&format!("destroyed {room}")), "{out}");
    let gone = alice
        .wait("the destruction", |s| {
            muc::is_from(s, "presence", &format!("{room}/Alice"))
                && s.get_attr("type") == Some("unavailable")
        })
        .await;
    let told = muc::user_x(&gone).unwrap();
    assert!(
        told.children().any(
            |c| c.name() == "destroy" && c.children().any(|r| r.text_content() == "renovation")
        ),
        "{gone:?}"
    );
    setup
        .api(&["rooms", "show", &room], &[])
        .failed_with("unknown_room");
}

#[tokio::test]
async fn only_the_servers_certificate_or_a_named_ca_is_trusted() {
    let setup = start().await;
    setup.login();
    // A certificate the server's is not signed by.
    let key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca = setup.token_file.with_file_name("other-ca.pem");
    std::fs::write(&ca, other.pem()).unwrap();
    setup
        .api(&["--ca", path(&ca), "cluster"], &[])
        .failed_with("TLS with the admin API");
    setup
        .api(
            &[
                "--ca",
                path(&setup.token_file.with_file_name("none.pem")),
                "cluster",
            ],
            &[],
        )
        .failed_with("cannot read the certificate to trust");
    // Nothing listens there.
    let closed = format!("https://127.0.0.1:{}", free_port());
    setup
        .api(&["cluster"], &[("XMPPD_ADMIN_URL", &closed)])
        .failed_with("cannot reach the admin API");
}

#[tokio::test]
async fn an_api_served_without_tls_is_reached_over_http() {
    let setup = start_with("tls = false\n").await;
    // Up once a login answers; meanwhile the port may still be closed.
    let password = [("XMPPD_PASSWORD", "rootpass")];
    let mut login = setup.api(&["login", "root@localhost"], &password);
    for _ in 0..300 {
        if login.ok {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        login = setup.api(&["login", "root@localhost"], &password);
    }
    login.succeeded();
    // No certificate is needed, not even one that cannot be read.
    let missing = setup.token_file.with_file_name("none.pem");
    let listed = setup
        .api(&["--ca", path(&missing), "accounts", "list"], &[])
        .succeeded();
    assert_eq!(column(&listed, "JID"), ["root@localhost"]);
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
