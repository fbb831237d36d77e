//! Logs through `tracing`, and the HTTP endpoint every service exposes:
//! `/metrics` in the Prometheus text format, `/healthz` (the process runs) and
//! `/readyz` (it can do its job: storage reachable, upstreams connected).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::shutdown::Shutdown;

/// Installs the global log subscriber. `RUST_LOG` wins over `filter`.
pub fn init_logging(filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // A second call (tests composing several services) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Whether the service is ready to take traffic; flipped by the service.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<watch::Sender<bool>>);

impl Readiness {
    pub fn new() -> Self {
        Readiness(Arc::new(watch::channel(false).0))
    }

    pub fn set(&self, ready: bool) {
        self.0.send_replace(ready);
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Registry>,
    readiness: Readiness,
}

/// Serves `/metrics`, `/healthz`, `/readyz` and the service's own `extra`
/// routes on `address` until shutdown.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Registry>,
    readiness: Readiness,
    extra: Router,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(HttpState { metrics, readiness })
        .merge(extra);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics and health endpoint listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.metrics) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz_handler(State(state): State<HttpState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
