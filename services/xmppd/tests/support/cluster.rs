//! A cluster of real processes for the multi-process tests: its own Redis
//! key prefix and Postgres database, and its own certificates.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{Ports, Server, ServerOptions, http_get, xmppd};

/// Every node's `cluster.heartbeat_ms`.
pub const HEARTBEAT_MS: u64 = 250;
/// Every node's `cluster.node_ttl_ms`: how long a killed node stays a member.
pub const NODE_TTL: Duration = Duration::from_millis(2000);

/// Runs `scenario` with the nodes of a cluster of its own (a Redis prefix,
/// a Postgres database, certificates from a CA of its own), within `limit`,
/// and removes the backing afterwards, pass or fail.
pub async fn with_cluster<F, Run>(limit: Duration, scenario: F)
where
    F: FnOnce(Nodes) -> Run,
    Run: std::future::Future<Output = ()> + Send + 'static,
{
    let backing = Backing::create().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new(backing.clone(), dir.path().to_path_buf());
    let mut run = tokio::spawn(scenario(nodes));
    let outcome = tokio::time::timeout(limit, &mut run).await;
    if outcome.is_err() {
        // Dropping the scenario kills its processes before clean-up.
        run.abort();
        let _ = run.await;
    }
    backing.remove().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => std::panic::resume_unwind(failure.into_panic()),
        Err(_) => panic!("the scenario took longer than {limit:?}"),
    }
}

/// The Redis key prefix and Postgres database of one test run.
#[derive(Clone)]
pub struct Backing {
    pub redis_url: String,
    pub key_prefix: String,
    admin_url: String,
    database: String,
}

impl Backing {
    pub async fn create() -> Backing {
        let redis_url = std::env::var("XMPPD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let admin_url = std::env::var("XMPPD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
        // Tests of one process start within the same millisecond.
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let backing = Backing::new(
            redis_url,
            format!("xmppd-test-cluster-{unique}:"),
            admin_url,
            format!("xmppd_test_cluster_{unique}"),
        );
        let mut admin = backing.admin().await;
        sqlx::query(&format!("CREATE DATABASE \"{}\"", backing.database))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        backing
    }

    /// A backing whose database `database` exists on the Postgres that
    /// `admin_url` names, or will be made by the caller.
    pub fn new(
        redis_url: String,
        key_prefix: String,
        admin_url: String,
        database: String,
    ) -> Backing {
        Backing {
            redis_url,
            key_prefix,
            admin_url,
            database,
        }
    }

    async fn admin(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.admin_url)
            .await
            .unwrap_or_else(|error| panic!("Postgres at {}: {error}", self.admin_url))
    }

    /// The test database's URL: the admin URL with another database name.
    pub fn storage_url(&self) -> String {
        let (base, query) = match self.admin_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        format!("{server}/{}{query}", self.database)
    }

    pub async fn remove(&self) {
        let mut admin = self.admin().await;
        let dropped = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.database
        ))
        .execute(&mut admin)
        .await;
        if let Err(error) = dropped {
            eprintln!("could not drop database {}: {error}", self.database);
        }
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.key_prefix))
            .query_async(&mut redis)
            .await
            .unwrap();
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
    }
}

/// Starts the nodes of one cluster, with mutual TLS: certificates from
/// `xmppd certs init` in `dir/cluster-tls`.
pub struct Nodes {
    pub backing: Backing,
    pub dir: PathBuf,
    /// Configuration every node gets.
    pub common: String,
    /// Environment variables of every node of a role, by role.
    pub env: Vec<(&'static str, String, String)>,
}

impl Nodes {
    pub fn new(backing: Backing, dir: PathBuf) -> Nodes {
        let output = xmppd()
            .args(["certs", "init", "--dir"])
            .arg(dir.join("cluster-tls"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "certs init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Nodes {
            backing,
            dir,
            common: String::new(),
            env: Vec::new(),
        }
    }

    /// The directory `xmppd certs init` wrote `role`'s certificate to.
    pub fn certs_dir(&self, role: &str) -> PathBuf {
        self.dir.join("cluster-tls").join(role)
    }

    pub fn start(&self, role: &str, name: &str, extra: &str, ports: Option<Ports>) -> Server {
        let extra = format!(
            "[registry]\nurl = \"{}\"\nkey_prefix = \"{}\"\n[cluster]\nheartbeat_ms = {HEARTBEAT_MS}\nnode_ttl_ms = {}\nnode_id = \"{name}\"\n\
             [cluster_tls]\ndir = \"{}\"\n{}\n{extra}",
            self.backing.redis_url,
            self.backing.key_prefix,
            NODE_TTL.as_millis(),
            self.certs_dir(role).display(),
            self.common
        );
        let data_dir: &Path = &self.dir.join(name);
        let options = ServerOptions {
            role,
            data_dir,
            extra: &extra,
            env: self
                .env
                .iter()
                .filter(|(of, _, _)| *of == role)
                .map(|(_, name, value)| (name.clone(), value.clone()))
                .collect(),
        };
        match ports {
            Some(ports) => Server::start_at(options, ports),
            None => Server::start(options),
        }
    }

    pub fn session(&self, index: u32) -> Server {
        let storage = format!("[storage]\nurl = \"{}\"\n", self.backing.storage_url());
        self.start("session", &format!("session-{index}"), &storage, None)
    }

    pub fn router(&self, ports: Option<Ports>) -> Server {
        self.start("router", "router-1", "", ports)
    }

    /// PLAIN without TLS for the raw clients, and no per-connection rate
    /// limit so that the message burst is not throttled.
    pub fn connection_manager(&self, index: u32) -> Server {
        let extra = "[auth]\nrequire_tls = false\n[limits]\nstanzas_per_second = 0\n";
        self.start("connection-manager", &format!("cm-{index}"), extra, None)
    }
}

/// Waits until the gauge `name` on `server`'s `/metrics` reads `value`.
pub async fn wait_metric(server: &Server, name: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((200, metrics)) = http_get(server.http, "/metrics").await {
            last = metrics.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
            if last == Some(value) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} stayed at {last:?}, not {value}; log:\n{}",
        server.log()
    );
}
