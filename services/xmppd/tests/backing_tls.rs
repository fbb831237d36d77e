//! A cluster whose Redis and Postgres speak only TLS: a Redis of its own with
//! client certificates required and the ACL users of `docs/redis-users.conf`
//! (one per role), and a Postgres cluster of its own (`initdb` in a temporary
//! folder) that refuses connections without TLS and checks passwords. Their
//! certificates come from a CA made here; every node verifies them
//! (`rediss://` with `registry.ca_file`, `sslmode=verify-full`).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sqlx::Connection;
use support::cluster::{Backing, Nodes};
use support::{DOMAIN, RawClient, xmppd};

/// The key prefix `docs/redis-users.conf` grants.
const KEY_PREFIX: &str = "xmppd:";
const SESSION_DB_PASSWORD: &str = "pg-session-pw-5Tq";

#[tokio::test]
async fn cluster_runs_over_tls_to_redis_and_postgres_with_a_user_per_role() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certificates::generate(dir.path());
    let redis = TlsRedis::start(dir.path(), &certs);
    let postgres = TlsPostgres::start(&certs).await;
    let storage = format!("[storage]\nurl = \"{}\"\n", postgres.session_url());

    let mut nodes = Nodes::new(
        Backing::new(
            redis.url("xmppd-admin"),
            KEY_PREFIX.into(),
            String::new(),
            String::new(),
        ),
        dir.path().join("nodes"),
    );
    nodes.common = format!(
        "[registry]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    for role in ["connection-manager", "router", "session"] {
        let url = redis.url(&format!("xmppd-{role}"));
        nodes
            .env
            .push((role, "XMPPD_REGISTRY__URL".into(), url.clone()));
    }
    let session = nodes.start("session", "session-1", &storage, None);
    session.ready().await;
    let router = nodes.router(None);
    router.ready().await;
    // No storage for the edge: it never talks to Postgres.
    let cm = nodes.connection_manager(1);
    cm.ready().await;

    session.add_user("alice", "pw-a");
    session.add_user("bob", "pw-b");
    let mut alice = RawClient::login(cm.c2s, "alice", "pw-a", "phone").await;
    let mut bob = RawClient::login(cm.c2s, "bob", "pw-b", "desk").await;
    bob.available().await;
    alice
        .send(&format!(
            "<message to='bob@{DOMAIN}/desk' type='chat' id='m1'><body>over tls</body></message>"
        ))
        .await;
    bob.expect("over tls").await;

    // The admin CLI lists the bound resources as its own Redis user.
    let resources = xmppd()
        .arg("--config")
        .arg(&session.config)
        .arg("resources")
        .env("XMPPD_REGISTRY__URL", redis.url("xmppd-admin"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&resources.stdout);
    assert!(
        resources.status.success() && listed.contains(&format!("bob@{DOMAIN}/desk")),
        "{resources:?}"
    );

    // Each role has only the rights it uses.
    let account_key = format!("{KEY_PREFIX}res:bob@{DOMAIN}");
    let mut cm_user = redis.connect("xmppd-connection-manager", &certs).await;
    let read: redis::RedisResult<Vec<(String, Vec<u8>)>> = redis::cmd("HGETALL")
        .arg(&account_key)
        .query_async(&mut cm_user)
        .await;
    assert_eq!(
        read.map_err(|e| e.code().map(str::to_owned)),
        Err(Some("NOPERM".into()))
    );
    let mut router_user = redis.connect("xmppd-router", &certs).await;
    let read: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&account_key)
        .query_async(&mut router_user)
        .await
        .unwrap();
    assert!(
        read.iter().any(|(field, _)| field == "desk"),
        "bob's resource"
    );
    let write: redis::RedisResult<()> = redis::cmd("HDEL")
        .arg(&account_key)
        .arg("desk")
        .query_async(&mut router_user)
        .await;
    assert_eq!(
        write.map_err(|e| e.code().map(str::to_owned)),
        Err(Some("NOPERM".into()))
    );
    let outside: redis::RedisResult<Option<String>> = redis::cmd("MGET")
        .arg("elsewhere:key")
        .query_async(&mut router_user)
        .await;
    assert!(outside.is_err(), "a key outside the prefix: {outside:?}");

    // Neither server takes a connection without TLS.
    assert!(postgres.plain_connection_refused().await);
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        plain.get_multiplexed_async_connection(),
    )
    .await;
    assert!(!matches!(plain, Ok(Ok(_))), "a plain connection to Redis");

    // A wrong password is reported without it.
    let wrong = postgres
        .session_url()
        .replace(SESSION_DB_PASSWORD, "not-the-pw-9Zr");
    let refused = nodes.start(
        "session",
        "session-2",
        &format!("[storage]\nurl = \"{wrong}\"\n"),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !refused.log().contains("cannot open the store") {
        assert!(Instant::now() < deadline, "{}", refused.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = refused.log();
    assert!(log.contains("xmppd_session:***@"), "{log}");
    for server in [&session, &router, &cm, &refused] {
        let log = server.log();
        for secret in [SESSION_DB_PASSWORD, "not-the-pw-9Zr", "change-me-"] {
            assert!(!log.contains(secret), "{secret} in a log:\n{log}");
        }
    }
    drop(postgres);
}

/// Files of a CA made for this test, a certificate for 127.0.0.1 that both
/// servers present, and a client certificate the nodes present to Redis.
struct Certificates {
    ca: PathBuf,
    server_cert: String,
    server_key: String,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Certificates {
    fn generate(dir: &Path) -> Certificates {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "backing test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let issue = |name: &str, sans: Vec<String>| {
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue("backing", vec!["127.0.0.1".into()]);
        let (client_cert, client_key) = issue("xmppd node", Vec::new());
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Certificates {
            ca: write("ca.crt", &ca_pem),
            server_cert,
            server_key,
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server with only a TLS port, client certificates required, and
/// the users of `docs/redis-users.conf`.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path, certs: &Certificates) -> TlsRedis {
        let port = free_port();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let users = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/redis-users.conf");
        let config = format!(
            "port 0\nbind 127.0.0.1\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients yes\nsave \"\"\nappendonly no\ndir {}\n\
             include {}\n",
            write("redis.crt", &certs.server_cert).display(),
            write("redis.key", &certs.server_key).display(),
            certs.ca.display(),
            dir.display(),
            users.canonicalize().unwrap().display(),
        );
        let config_file = write("redis.conf", &config);
        let child = Command::new("redis-server")
            .arg(&config_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_for_port(port, "redis-server");
        TlsRedis { child, port }
    }

    /// The URL of `user`, with the password `docs/redis-users.conf` gives it.
    fn url(&self, user: &str) -> String {
        let role = user.strip_prefix("xmppd-").unwrap();
        format!("rediss://{user}:change-me-{role}@127.0.0.1:{}", self.port)
    }

    async fn connect(&self, user: &str, certs: &Certificates) -> redis::aio::MultiplexedConnection {
        let tls = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(&certs.client_cert).unwrap(),
                client_key: std::fs::read(&certs.client_key).unwrap(),
            }),
            root_cert: Some(std::fs::read(&certs.ca).unwrap()),
        };
        redis::Client::build_with_tls(self.url(user), tls)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Postgres cluster of its own: TLS only over TCP, passwords checked
/// (SCRAM), and a database `xmppd` owned by the session replicas' role.
struct TlsPostgres {
    /// Owned by the `postgres` user when the test runs as root.
    dir: tempfile::TempDir,
    port: u16,
    ca: PathBuf,
}

impl TlsPostgres {
    async fn start(certs: &Certificates) -> TlsPostgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        std::fs::write(dir.path().join("server.crt"), &certs.server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &certs.server_key).unwrap();
        set_mode(&dir.path().join("server.key"), 0o600);
        give_to_postgres(dir.path());
        as_postgres(
            Command::new(pg_binary("initdb"))
                .args(["--no-sync", "-U", "postgres", "--auth=trust", "-D"])
                .arg(&data),
        );
        let folder = dir.path().display();
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{folder}'\n\
             ssl = on\nssl_cert_file = '{folder}/server.crt'\nssl_key_file = '{folder}/server.key'\n\
             fsync = off\n"
        );
        append(&data.join("postgresql.conf"), &settings);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        as_postgres(
            Command::new(pg_binary("pg_ctl"))
                .args(["-w", "-l"])
                .arg(dir.path().join("postgres.log"))
                .arg("-D")
                .arg(&data)
                .arg("start"),
        );
        let postgres = TlsPostgres {
            dir,
            port,
            ca: certs.ca.clone(),
        };
        // Over the Unix socket, where `trust` lets the superuser in.
        let socket = format!(
            "postgres://postgres@localhost/postgres?host={}&port={port}",
            postgres.dir.path().display()
        );
        let mut admin = sqlx::PgConnection::connect(&socket).await.unwrap();
        for sql in [
            format!("CREATE ROLE xmppd_session LOGIN PASSWORD '{SESSION_DB_PASSWORD}'"),
            "CREATE DATABASE xmppd OWNER xmppd_session".to_string(),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        postgres
    }

    fn session_url(&self) -> String {
        format!(
            "postgres://xmppd_session:{SESSION_DB_PASSWORD}@127.0.0.1:{}/xmppd\
             ?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca.display()
        )
    }

    async fn plain_connection_refused(&self) -> bool {
        let plain = self.session_url().replace("verify-full", "disable");
        sqlx::PgConnection::connect(&plain).await.is_err()
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        as_postgres(
            Command::new(pg_binary("pg_ctl"))
                .args(["-m", "immediate", "-D"])
                .arg(self.dir.path().join("data"))
                .arg("stop"),
        );
    }
}

/// A PostgreSQL server program: on the PATH, or in Debian's versioned folder.
fn pg_binary(name: &str) -> PathBuf {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(path) = on_path {
        return path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server programs")
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin").join(name)))
        .filter(|path| path.exists())
        .collect();
    versions.sort();
    versions.pop().expect("PostgreSQL server programs")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Postgres refuses to run as root: as root, the programs run as `postgres`.
fn as_postgres(command: &mut Command) {
    let status = if is_root() {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
    } else {
        command.stdout(Stdio::null()).status()
    };
    assert!(status.unwrap().success(), "{command:?} failed");
}

fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}
