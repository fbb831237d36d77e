//! The building blocks every deployment assembles: the all-in-one process
//! and each cluster role use the same ones, so they run the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry as Metrics;
use xmppd_cluster_tls::identity::role_name;
use xmppd_cluster_tls::{CertPaths, ClusterTls};
use xmppd_connection_manager::listener;
use xmppd_connection_manager::metrics::EdgeMetrics;
use xmppd_connection_manager::tcp::{self, Security};
use xmppd_connection_manager::websocket::{self, Scheme, WebSocketSettings};
use xmppd_connection_manager::{Cluster, Edge, EdgeSettings};
use xmppd_grpc::{Node, Role};
use xmppd_registry::{Caching, SharedRegistry, membership};
use xmppd_runtime::Config;
use xmppd_runtime::config::parse_address;
use xmppd_runtime::observability::{Readiness, serve_http};
use xmppd_runtime::shutdown::Shutdown;
use xmppd_session::Settings;
use xmppd_session::module::Modules;
use xmppd_storage::{CredentialCaching, Migrations, PoolSize, Store};
use xmppd_tls::ServerTls;

/// Each configuration to run, as reloads produce them ([`xmppd_runtime::reload`]).
pub type Reloads = tokio::sync::watch::Receiver<Arc<Config>>;

/// Applies each reloaded configuration with `apply`, until the process stops.
pub fn on_reload(mut reloads: Reloads, apply: impl Fn(&Config) + Send + 'static) {
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            let config = reloads.borrow_and_update().clone();
            apply(&config);
        }
    });
}

pub fn heartbeat_interval(config: &Config) -> Duration {
    Duration::from_millis(config.cluster.heartbeat_ms)
}

pub fn node_ttl(config: &Config) -> Duration {
    Duration::from_millis(config.cluster.node_ttl_ms)
}

pub fn node(id: String, role: Role, grpc_address: String) -> Node {
    Node {
        id,
        role: role as i32,
        grpc_address,
    }
}

/// The cluster's mutual TLS for a process of `role` registered as `node_id`, its files
/// checked now (a bad one stops the start with a message naming it) and reloaded every
/// `cluster_tls.reload_ms`; `None` when `cluster_tls.enabled` is off.
pub fn cluster_tls(
    config: &Config,
    role: Role,
    node_id: &str,
) -> anyhow::Result<Option<ClusterTls>> {
    let settings = &config.cluster_tls;
    if !settings.enabled {
        tracing::warn!(
            "cluster_tls.enabled is false: gRPC between the nodes is plain text and unauthenticated"
        );
        return Ok(None);
    }
    let dir = if settings.dir.as_os_str().is_empty() {
        config
            .server
            .data_dir
            .join("cluster-tls")
            .join(role_name(role))
    } else {
        settings.dir.clone()
    };
    let in_dir = CertPaths::in_dir(&dir);
    let paths = CertPaths {
        ca: settings.ca_file.clone().unwrap_or(in_dir.ca),
        cert: settings.cert_file.clone().unwrap_or(in_dir.cert),
        key: settings.key_file.clone().unwrap_or(in_dir.key),
    };
    let tls = ClusterTls::load(paths, role, node_id).context("cluster TLS")?;
    if settings.reload_ms > 0 {
        tls.keep_reloading(Duration::from_millis(settings.reload_ms));
    }
    Ok(Some(tls))
}

/// The session registry: Redis when configured, else memory, which only a
/// single process (the all-in-one) may use. `caching` only for a registry
/// that nothing reads to write through: see [`router_caching`].
pub async fn registry(
    config: &Config,
    role: &str,
    caching: Caching,
) -> anyhow::Result<SharedRegistry> {
    let url = (!config.registry.url.is_empty()).then_some(config.registry.url.as_str());
    if url.is_none() && role != "all-in-one" {
        anyhow::bail!(
            "the {role} shares its state with the other nodes: set registry.url \
             (or XMPPD_REGISTRY__URL), e.g. redis://127.0.0.1:6379"
        );
    }
    xmppd_registry::connect(url, &config.registry.key_prefix, caching)
        .await
        .with_context(|| format!("cannot open the registry {}", url.unwrap_or("in memory")))
}

/// The look-up cache of a cluster router's own registry (`registry.cache_*`;
/// either at 0 turns it off). Session replicas and connection-managers read
/// to write (bind, presence, cleanup) and must see Redis itself, so they keep
/// [`Caching::Off`]; so does the all-in-one, whose one registry they share.
pub fn router_caching(config: &Config) -> Caching {
    let entries = usize::try_from(config.registry.cache_entries)
        .ok()
        .and_then(std::num::NonZeroUsize::new);
    match entries {
        Some(entries) if config.registry.cache_ttl_ms > 0 => Caching::On {
            entries,
            ttl: Duration::from_millis(config.registry.cache_ttl_ms),
        },
        _ => Caching::Off,
    }
}

/// The credential cache of a session replica's store (`storage.credential_cache_*`; either
/// at 0 turns it off). Only a replica caches: the other roles never read credentials, and
/// the all-in-one's embedded store cannot hear of the admin CLI's writes.
pub fn credential_caching(config: &Config) -> Option<CredentialCaching> {
    let entries = usize::try_from(config.storage.credential_cache_entries)
        .ok()
        .and_then(std::num::NonZeroUsize::new)?;
    let ttl = Duration::from_secs(config.storage.credential_cache_ttl_secs);
    (!ttl.is_zero()).then_some(CredentialCaching { entries, ttl })
}

/// The store; the embedded SQLite database lives under `data_dir`. Its
/// migrations are applied, or with `storage.migrate` off only checked.
pub async fn store(config: &Config) -> anyhow::Result<Store> {
    let migrations = if config.storage.migrate {
        Migrations::Apply
    } else {
        Migrations::Check
    };
    open_store(config, migrations).await
}

/// The store, its migrations applied or checked as `migrations` says.
pub async fn open_store(config: &Config, migrations: Migrations) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!(
            "cannot create data_dir {}",
            config.server.data_dir.display()
        )
    })?;
    let url = config.storage.url_or_embedded(&config.server.data_dir);
    let pool = PoolSize {
        max: config.storage.max_connections,
        min: config.storage.min_connections,
    };
    Store::open(&url, pool, migrations)
        .await
        .with_context(|| format!("cannot open the store {}", redact(&url)))
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The account modules `[modules]` enables, their tables migrated.
pub async fn modules(config: &Config, store: &Store) -> anyhow::Result<Modules> {
    let modules = xmppd_session::modules::all(&config.modules)?;
    modules
        .migrate(store)
        .await
        .context("cannot migrate the modules' tables")?;
    Ok(modules)
}

pub fn session_settings(config: &Config, node_id: &str) -> Settings {
    Settings {
        domain: config.server.domain.clone(),
        node_id: node_id.to_string(),
        registration: config.auth.registration,
        scram_iterations: config.auth.scram_iterations,
        max_offline_messages: config.limits.max_offline_messages,
    }
}

/// Keeps `node` registered until shutdown.
pub fn keep_registered(
    registry: &SharedRegistry,
    node: Node,
    config: &Config,
    shutdown: &Shutdown,
) {
    let mut shutdown = shutdown.clone();
    tokio::spawn(membership::keep_registered(
        registry.clone(),
        node,
        heartbeat_interval(config),
        node_ttl(config),
        async move { shutdown.wait().await },
    ));
}

/// The edge with its client listeners; returns what it listens on.
pub async fn edge(
    config: &Config,
    cluster: Cluster,
    metrics: &mut Metrics,
    shutdown: &Shutdown,
) -> anyhow::Result<(Arc<Edge>, Vec<String>)> {
    let tls = ServerTls::load(
        &config.server.domain,
        config.tls.cert_file.as_deref(),
        config.tls.key_file.as_deref(),
        &config.server.data_dir,
    )
    .context("TLS certificate")?;
    let edge_metrics = EdgeMetrics::default();
    edge_metrics.register(metrics);
    EdgeMetrics::register_scraped(metrics, &cluster);
    let edge = Edge::new(
        EdgeSettings::from_config(config),
        cluster,
        tls,
        edge_metrics,
        shutdown.clone(),
    );
    // One registration per client listener: its key, and the transport's
    // accept loop.
    let mut listening = Vec::new();
    let addresses = &config.listen;
    if let Some(socket) = listen(&mut listening, "listen.c2s", &addresses.c2s, "STARTTLS").await? {
        tokio::spawn(tcp::serve(edge.clone(), socket, Security::StartTls));
    }
    if let Some(socket) = listen(
        &mut listening,
        "listen.c2s_tls",
        &addresses.c2s_tls,
        "direct TLS",
    )
    .await?
    {
        tokio::spawn(tcp::serve(edge.clone(), socket, Security::DirectTls));
    }
    let ws = WebSocketSettings::from_config(config);
    if let Some(socket) = listen(
        &mut listening,
        "listen.websocket",
        &addresses.websocket,
        "WebSocket",
    )
    .await?
    {
        tokio::spawn(websocket::serve(
            edge.clone(),
            socket,
            Scheme::Ws,
            ws.clone(),
        ));
    }
    if let Some(socket) = listen(
        &mut listening,
        "listen.websocket_tls",
        &addresses.websocket_tls,
        "WebSocket over TLS",
    )
    .await?
    {
        tokio::spawn(websocket::serve(edge.clone(), socket, Scheme::Wss, ws));
    }
    Ok((edge, listening))
}

/// Binds a client listener unless its address is empty, and notes it for
/// the start-up log.
async fn listen(
    listening: &mut Vec<String>,
    key: &'static str,
    address: &str,
    label: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if address.is_empty() {
        return Ok(None);
    }
    let socket = listener::bind(parse_address(key, address)?).await?;
    listening.push(format!("{} ({label})", socket.local_addr()?));
    Ok(Some(socket))
}

/// The metrics every process exports whatever its role: the process's
/// resources and the build it runs. Each role adds its own.
pub fn metrics() -> Metrics {
    let mut metrics = Metrics::default();
    xmppd_metrics::process::register(&mut metrics);
    xmppd_metrics::register_build_info(&mut metrics, env!("CARGO_PKG_VERSION"));
    metrics
}

/// `/metrics`, `/healthz`, `/readyz` (and `extra`) when configured.
pub async fn http(
    config: &Config,
    metrics: Metrics,
    readiness: Readiness,
    extra: axum::Router,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<SocketAddr>> {
    if config.observability.http.is_empty() {
        return Ok(None);
    }
    let address = parse_address("observability.http", &config.observability.http)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (observability.http)"))?;
    let address = listener.local_addr()?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) =
            serve_http(listener, Arc::new(metrics), readiness, extra, shutdown).await
        {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    Ok(Some(address))
}

/// Flips `readiness` as `check` says, every second.
pub fn track_readiness(readiness: Readiness, check: impl Fn() -> bool + Send + 'static) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticker.tick().await;
            readiness.set(check());
        }
    });
}

/// Waits for the edge's connections to close after shutdown began, at most
/// `limit`, so that clients get their stream error and the cluster hears
/// every session end.
pub async fn drain(edge: &Edge, limit: Duration) {
    edge.close_bound_streams();
    let deadline = tokio::time::Instant::now() + limit;
    while edge.metrics.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last session-ended frames reach the routers.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
