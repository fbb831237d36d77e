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
use xmppd_connection_manager::{Cluster, Edge, EdgeSettings, load_decoy_secret};
use xmppd_grpc::{Node, Role};
use xmppd_protocol::jid::Jid;
use xmppd_registry::{Caching, RedisTls, SharedRegistry, membership};
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
        ..Default::default()
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
    let tls = redis_tls(config)?;
    xmppd_registry::connect(url, &tls, &config.registry.key_prefix, caching)
        .await
        .with_context(|| {
            format!(
                "cannot open the registry {}",
                url.map_or("in memory".into(), redact)
            )
        })
}

/// The certificates `registry.ca_file`, `cert_file` and `key_file` name.
fn redis_tls(config: &Config) -> anyhow::Result<RedisTls> {
    let read = |path: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        path.as_ref()
            .map(|path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            })
            .transpose()
    };
    let registry = &config.registry;
    let client = match (read(&registry.cert_file)?, read(&registry.key_file)?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => anyhow::bail!("registry.cert_file and registry.key_file go together"),
    };
    Ok(RedisTls {
        ca: read(&registry.ca_file)?,
        client,
    })
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

/// A URL without its secrets, for messages: the password of its user, and
/// the value of every query parameter whose name says it is a password or a
/// secret (`?password=`, `sslpassword=`, ...).
pub fn redact(url: &str) -> String {
    let (url, fragment) = match url.split_once('#') {
        Some((url, fragment)) => (url, format!("#{fragment}")),
        None => (url, String::new()),
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_user_password(base);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out + &fragment
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token"]
        .iter()
        .any(|secret| name.contains(secret))
}

/// `scheme://user:password@host...` with `***` for the password.
fn redact_user_password(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return url.to_string();
    };
    let authority_end = url[scheme + 3..]
        .find('/')
        .map_or(url.len(), |end| scheme + 3 + end);
    let Some(at) = url[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match url[scheme + 3..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
        None => url.to_string(),
    }
}

/// The account modules `[modules]` enables, their tables migrated.
pub async fn modules(config: &Config, store: &Store) -> anyhow::Result<Modules> {
    let commands = xmppd_admin::commands::module(admins(config)?);
    let modules = xmppd_session::modules::all(&config.modules, vec![("admin_commands", commands)])?;
    modules
        .migrate(store)
        .await
        .context("cannot migrate the modules' tables")?;
    store
        .migrate(&xmppd_session::muc::SCHEMA)
        .await
        .context("cannot migrate the chat service's tables")?;
    Ok(modules)
}

pub fn session_settings(config: &Config, node_id: &str) -> Settings {
    Settings {
        domain: config.server.domain.clone(),
        node_id: node_id.to_string(),
        registration: config.auth.registration,
        scram_iterations: config.auth.scram_iterations,
        max_offline_messages: config.limits.max_offline_messages,
        max_resources_per_account: config.limits.max_resources_per_account,
        max_directed_presences: config.limits.max_directed_presences,
        max_roster_items: config.limits.max_roster_items,
        max_pending_subscriptions: config.limits.max_pending_subscriptions,
        muc: xmppd_session::muc::MucSettings {
            domains: config.muc.service_domains(&config.server.domain),
            config: config.muc.clone(),
        },
    }
}

/// The admin API and the web console over the replica `core`, on
/// `admin.listen` unless that is empty; returns the listener's base URL
/// (`https://127.0.0.1:5285/`: the API is under `api/v1/`, the console
/// under `console/`). Its tables are the admin commands' module's,
/// migrated with the modules.
pub async fn admin_api(
    config: &Config,
    core: Arc<xmppd_session::service::Core>,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<String>> {
    if config.admin.listen.is_empty() {
        return Ok(None);
    }
    let settings = xmppd_admin::Settings {
        admins: admins(config)?,
        login_token_ttl: Duration::from_secs(config.admin.login_token_ttl_secs),
    };
    let address = parse_address("admin.listen", &config.admin.listen)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (admin.listen)"))?;
    let local = listener.local_addr()?;
    let tls = if config.admin.tls {
        let tls = ServerTls::load(
            &config.server.domain,
            config.tls.cert_file.as_deref(),
            config.tls.key_file.as_deref(),
            &config.server.data_dir,
        )
        .context("TLS certificate of the admin API")?;
        let mut server_config = (*tls.config()).clone();
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(server_config))
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let router = xmppd_admin::AdminApi::new(core, settings).router();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        let stopped = async move { shutdown.wait().await };
        if let Err(error) = xmppd_admin::serve(listener, tls, router, stopped).await {
            tracing::error!(%error, "admin API failed");
        }
    });
    Ok(Some(format!("{scheme}://{local}/")))
}

/// `admin.admins`, normalised.
fn admins(config: &Config) -> anyhow::Result<Vec<String>> {
    config
        .admin
        .admins
        .iter()
        .map(|admin| {
            Jid::parse(admin)
                .map(|jid| jid.to_string())
                .with_context(|| format!("admin.admins: {admin:?} is not a JID"))
        })
        .collect()
}

/// Keeps `node` registered until shutdown, with the rate of `delivered` (see
/// [`membership::keep_registered`]).
pub fn keep_registered(
    registry: &SharedRegistry,
    node: Node,
    config: &Config,
    shutdown: &Shutdown,
    delivered: impl Fn() -> u64 + Send + 'static,
) {
    let mut shutdown = shutdown.clone();
    tokio::spawn(membership::keep_registered(
        registry.clone(),
        node,
        heartbeat_interval(config),
        node_ttl(config),
        delivered,
        async move { shutdown.wait().await },
    ));
}

/// The `delivered` of a node that delivers no stanzas itself.
pub fn nothing_delivered() -> u64 {
    0
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
    let decoy_secret = load_decoy_secret(config.auth.decoy_secret_file.as_deref())?;
    let edge = Edge::new(
        EdgeSettings::from_config(config),
        cluster,
        tls,
        decoy_secret,
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
        assert_eq!(
            redact("rediss://router:s3cret@10.0.0.1:6379/0#insecure"),
            "rediss://router:***@10.0.0.1:6379/0#insecure"
        );
        // A password with an `@` in it, and one in the query string.
        assert_eq!(
            redact("postgres://u:p@ss@h/db?sslmode=verify-full&password=hunter2&sslpassword=k"),
            "postgres://u:***@h/db?sslmode=verify-full&password=***&sslpassword=***"
        );
        assert_eq!(
            redact("postgres://h/db?user=u&Password=x"),
            "postgres://h/db?user=u&Password=***"
        );
        // An `@` after the host is not a user's.
        assert_eq!(
            redact("postgres://h/db?options=a@b"),
            "postgres://h/db?options=a@b"
        );
    }
}
