//! Each deployment shape, assembled from [`crate::assemble`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry as Metrics;
use tonic::service::Routes;
use tonic::transport::Server;
use xmppd_cluster_tls::server::incoming;
use xmppd_cluster_tls::{ClusterTls, MutualTlsConnector, RequireCallerRoleLayer};
use xmppd_connection_manager::Cluster;
use xmppd_grpc::router_server::RouterServer;
use xmppd_grpc::session_server::SessionServer;
use xmppd_grpc::{Connector, RemoteConnector, Role};
use xmppd_registry::Caching;
use xmppd_router::RouterService;
use xmppd_router::metrics::RouterMetrics;
use xmppd_runtime::Config;
use xmppd_runtime::config::parse_address;
use xmppd_runtime::observability::{CacheMetrics, Readiness};
use xmppd_runtime::reload;
use xmppd_runtime::shutdown::{Shutdown, ShutdownTrigger};
use xmppd_runtime::telemetry;
use xmppd_session::SessionService;
use xmppd_session::metrics::SessionMetrics;

use crate::admin;
use crate::assemble::{
    self, Reloads, drain, heartbeat_interval, keep_registered, node, nothing_delivered, on_reload,
};
use crate::local::LocalConnector;

/// How long connections get to close when the server stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Runs `role` (one of the functions below) with logs and traces installed
/// for `service` (the traces' `service.name`) and reloads of the
/// configuration at `path` followed, and flushes the traces when it ends,
/// however it ends. `node_role` names the node in its generated id, which is
/// the traces' `service.instance.id`.
pub async fn with_telemetry<F>(
    config: Config,
    path: Option<PathBuf>,
    service: &str,
    node_role: &str,
    role: impl FnOnce(Config, Reloads) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let instance = config.cluster.node_id_or_generated(node_role);
    let telemetry = telemetry::init(&config, service, &instance).with_context(|| {
        format!(
            "tracing.endpoint {:?}",
            config.tracing.endpoint_or_default()
        )
    })?;
    let reloads = reload::follow(path, config.clone(), telemetry.log_filter())
        .context("cannot handle SIGHUP")?;
    let result = role(config, reloads).await;
    telemetry.shutdown().await;
    result
}

/// Every service in one process, wired together without sockets
/// ([`LocalConnector`]).
pub async fn all_in_one(config: Config, reloads: Reloads) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    let mut metrics = assemble::metrics();
    let registry = assemble::registry(&config, "all-in-one", Caching::Off).await?;
    registry.register_metrics(&mut metrics);
    let store = assemble::store(&config).await?;
    store.register_metrics(&mut metrics);
    let modules = assemble::modules(&config, &store).await?;
    let connector = Arc::new(LocalConnector::default());

    let session_id = config.cluster.node_id_or_generated("session");
    let session_metrics = SessionMetrics::default();
    session_metrics.register(&mut metrics);
    let session = SessionService::new(
        assemble::session_settings(&config, &session_id),
        store,
        registry.clone(),
        session_metrics,
        modules,
    );
    SessionMetrics::register_scraped(&mut metrics, session.shards());
    let admin = assemble::admin_api(&config, session.core().clone(), &shutdown).await?;
    connector.add_session(&session_id, session.clone());
    keep_registered(
        &registry,
        node(session_id.clone(), Role::Session, String::new()),
        &config,
        &shutdown,
        nothing_delivered,
    );

    let router_id = config.cluster.node_id_or_generated("router");
    let router = start_router(&config, registry.clone(), connector.clone(), &mut metrics);
    connector.add_router(&router_id, router.clone());
    let delivering = router.clone();
    keep_registered(
        &registry,
        node(router_id, Role::Router, String::new()),
        &config,
        &shutdown,
        move || delivering.delivered(),
    );

    let cm_id = config.cluster.node_id_or_generated("cm");
    let cluster = start_cluster(&config, cm_id, registry.clone(), connector, &shutdown);
    let (edge, listening) =
        assemble::edge(&config, cluster.clone(), &mut metrics, &shutdown).await?;
    let reloaded = edge.clone();
    on_reload(reloads, move |config| {
        reloaded.reload(config);
        session.reload(assemble::session_settings(config, &session_id));
    });
    let readiness = Readiness::new();
    // Ready once a client can log in and send: the edge has its router and
    // replica, and the router has seen the replica join.
    assemble::track_readiness(readiness.clone(), move || {
        cluster.is_ready() && router.is_ready()
    });
    let extra = admin::sessions_route(registry, admin::sessions_token(&config, true)?);
    let http = assemble::http(&config, metrics, readiness, extra, &shutdown).await?;
    print_banner(&config, &listening, http, admin);
    wait_for_stop(trigger).await;
    drain(&edge, DRAIN_LIMIT).await;
    Ok(())
}

fn start_router(
    config: &Config,
    registry: xmppd_registry::SharedRegistry,
    connector: Arc<dyn Connector>,
    metrics: &mut Metrics,
) -> RouterService {
    let router_metrics = RouterMetrics::default();
    router_metrics.register(metrics);
    let router = RouterService::new(
        config.server.domain.clone(),
        config.muc.service_domains(&config.server.domain),
        registry,
        connector,
        router_metrics,
    );
    RouterMetrics::register_scraped(metrics, &router);
    tokio::spawn(
        router
            .clone()
            .follow_session_replicas(heartbeat_interval(config)),
    );
    router
}

fn start_cluster(
    config: &Config,
    id: String,
    registry: xmppd_registry::SharedRegistry,
    connector: Arc<dyn Connector>,
    shutdown: &Shutdown,
) -> Cluster {
    let cluster = Cluster::new(id, connector, registry.clone());
    keep_registered(
        &registry,
        cluster.node().clone(),
        config,
        shutdown,
        nothing_delivered,
    );
    tokio::spawn(cluster.clone().follow_routers(heartbeat_interval(config)));
    tokio::spawn(
        cluster
            .clone()
            .follow_session_replicas(heartbeat_interval(config)),
    );
    cluster
}

/// Cluster role: the edge.
pub async fn connection_manager(config: Config, reloads: Reloads) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    let mut metrics = assemble::metrics();
    let id = config.cluster.node_id_or_generated("cm");
    let tls = assemble::cluster_tls(&config, Role::ConnectionManager, &id)?;
    let registry = assemble::registry(&config, "connection-manager", Caching::Off).await?;
    registry.register_metrics(&mut metrics);
    let cluster = start_cluster(&config, id, registry, connector(tls), &shutdown);
    if config.auth.decoy_secret_file.is_none() {
        tracing::warn!(
            "auth.decoy_secret_file unset: an unknown account's SCRAM salt differs between connection-managers, which tells it from a known one"
        );
    }
    let (edge, listening) =
        assemble::edge(&config, cluster.clone(), &mut metrics, &shutdown).await?;
    let reloaded = edge.clone();
    on_reload(reloads, move |config| reloaded.reload(config));
    let readiness = Readiness::new();
    assemble::track_readiness(readiness.clone(), move || cluster.is_ready());
    assemble::http(&config, metrics, readiness, axum::Router::new(), &shutdown).await?;
    tracing::info!(listening = ?listening, "connection-manager started");
    wait_for_stop(trigger).await;
    drain(&edge, DRAIN_LIMIT).await;
    Ok(())
}

/// Cluster role: the stanza switch. Of what a reload changes, only the log
/// filter concerns it, which [`with_telemetry`] applies.
pub async fn router(config: Config, _reloads: Reloads) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    let mut metrics = assemble::metrics();
    let id = config.cluster.node_id_or_generated("router");
    let tls = assemble::cluster_tls(&config, Role::Router, &id)?;
    let registry = assemble::registry(&config, "router", assemble::router_caching(&config)).await?;
    registry.register_metrics(&mut metrics);
    let cached = registry.clone();
    CacheMetrics::register(&mut metrics, "resources", move || cached.cache_statistics());
    let router = start_router(
        &config,
        registry.clone(),
        connector(tls.clone()),
        &mut metrics,
    );
    let address = parse_address("listen.grpc", &config.listen.grpc)?;
    let delivering = router.clone();
    keep_registered(
        &registry,
        node(id, Role::Router, config.listen.grpc_advertised()),
        &config,
        &shutdown,
        move || delivering.delivered(),
    );
    let readiness = Readiness::new();
    let ready = router.clone();
    assemble::track_readiness(readiness.clone(), move || ready.is_ready());
    assemble::http(&config, metrics, readiness, axum::Router::new(), &shutdown).await?;
    tracing::info!(%address, "router started");
    serve_grpc(
        address,
        Routes::new(RouterServer::new(router)),
        tls,
        trigger,
        shutdown,
    )
    .await
}

/// Cluster role: a session replica.
pub async fn session(config: Config, reloads: Reloads) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    let mut metrics = assemble::metrics();
    let id = config.cluster.node_id_or_generated("session");
    let tls = assemble::cluster_tls(&config, Role::Session, &id)?;
    let registry = assemble::registry(&config, "session service", Caching::Off).await?;
    registry.register_metrics(&mut metrics);
    let mut store = assemble::store(&config).await?;
    store.register_metrics(&mut metrics);
    if let Some(caching) = assemble::credential_caching(&config) {
        store = store.cache_credentials(caching);
    }
    let cached = store.clone();
    CacheMetrics::register(&mut metrics, "credentials", move || {
        cached.credential_cache_statistics()
    });
    let modules = assemble::modules(&config, &store).await?;
    let session_metrics = SessionMetrics::default();
    session_metrics.register(&mut metrics);
    let session = SessionService::new(
        assemble::session_settings(&config, &id),
        store,
        registry.clone(),
        session_metrics,
        modules,
    );
    SessionMetrics::register_scraped(&mut metrics, session.shards());
    let admin = assemble::admin_api(&config, session.core().clone(), &shutdown).await?;
    let (reloaded, node_id) = (session.clone(), id.clone());
    on_reload(reloads, move |config| {
        reloaded.reload(assemble::session_settings(config, &node_id));
    });
    let members = xmppd_registry::membership::watch_members(
        registry.clone(),
        Role::Session,
        heartbeat_interval(&config),
    );
    tokio::spawn(xmppd_session::reaper::run(
        session.core().clone(),
        session.shards().clone(),
        members,
        heartbeat_interval(&config),
    ));
    let address = parse_address("listen.grpc", &config.listen.grpc)?;
    keep_registered(
        &registry,
        node(id, Role::Session, config.listen.grpc_advertised()),
        &config,
        &shutdown,
        nothing_delivered,
    );
    let readiness = Readiness::new();
    readiness.set(true);
    assemble::http(&config, metrics, readiness, axum::Router::new(), &shutdown).await?;
    tracing::info!(%address, admin = admin.as_deref().unwrap_or("off"), "session replica started");
    serve_grpc(
        address,
        Routes::new(SessionServer::new(session)),
        tls,
        trigger,
        shutdown,
    )
    .await
}

/// The connector of a cluster role: mutual TLS unless `cluster_tls.enabled` is off.
fn connector(tls: Option<ClusterTls>) -> Arc<dyn Connector> {
    match tls {
        Some(tls) => Arc::new(MutualTlsConnector::new(tls)),
        None => Arc::new(RemoteConnector),
    }
}

/// Serves `routes` on `address` until SIGINT or SIGTERM: with `tls`, to callers with a
/// certificate from the cluster CA, each call to the role that may make it.
async fn serve_grpc(
    address: std::net::SocketAddr,
    routes: Routes,
    tls: Option<ClusterTls>,
    trigger: ShutdownTrigger,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    tokio::spawn(wait_for_stop(trigger));
    let stopped = async move { shutdown.wait().await };
    let served = match tls {
        Some(tls) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (listen.grpc)"))?;
            Server::builder()
                .layer(RequireCallerRoleLayer)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming(listener, tls), stopped)
                .await
        }
        None => {
            Server::builder()
                .tcp_nodelay(true)
                .add_routes(routes)
                .serve_with_shutdown(address, stopped)
                .await
        }
    };
    served.with_context(|| format!("gRPC server on {address}"))
}

async fn wait_for_stop(trigger: ShutdownTrigger) {
    trigger.on_signal().await;
}

fn print_banner(
    config: &Config,
    listening: &[String],
    http: Option<std::net::SocketAddr>,
    admin: Option<String>,
) {
    let program = std::env::args().next().unwrap_or_else(|| "xmppd".into());
    println!(
        "xmppd {} serving {}",
        env!("CARGO_PKG_VERSION"),
        config.server.domain
    );
    for address in listening {
        println!("  clients:  {address}");
    }
    println!(
        "  storage:  {}",
        assemble::redact(&config.storage.url_or_embedded(&config.server.data_dir))
    );
    if let Some(http) = http {
        println!("  metrics:  http://{http}/metrics   health: http://{http}/healthz");
    }
    if let Some(admin) = admin {
        println!("  admin:    {admin}api/v1/   (OpenAPI: {admin}api/v1/openapi.json)");
        println!("  console:  {admin}console/");
    }
    println!(
        "Add a user: {program} user add alice@{}",
        config.server.domain
    );
}
