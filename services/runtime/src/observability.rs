//! The HTTP endpoint every service exposes: `/metrics` in the Prometheus
//! text format, `/healthz` (the process runs) and `/readyz` (it can do its
//! job: storage reachable, upstreams connected).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use xmppd_cache::CacheStatistics;

use crate::shutdown::Shutdown;

/// One in-process cache's statistics, read at every scrape:
/// `xmppd_cache_lookups_total{cache, outcome="hit"|"miss"}` and
/// `xmppd_cache_invalidations_total{cache}`.
pub struct CacheMetrics<F> {
    cache: &'static str,
    statistics: F,
}

impl<F> CacheMetrics<F>
where
    F: Fn() -> Option<CacheStatistics> + Send + Sync + 'static,
{
    /// `statistics` answers `None` when the process runs without that cache.
    pub fn register(registry: &mut Registry, cache: &'static str, statistics: F) {
        registry.register_collector(Box::new(CacheMetrics { cache, statistics }));
    }
}

impl<F> std::fmt::Debug for CacheMetrics<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<F> Collector for CacheMetrics<F>
where
    F: Fn() -> Option<CacheStatistics> + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(statistics) = (self.statistics)() else {
            return Ok(());
        };
        let mut lookups = encoder.encode_descriptor(
            "xmppd_cache_lookups",
            "Look-ups of an in-process cache (credentials, resources), by outcome",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in [("hit", statistics.hits), ("miss", statistics.misses)] {
            let labels = [("cache", self.cache), ("outcome", outcome)];
            ConstCounter::new(count).encode(lookups.encode_family(&labels)?)?;
        }
        let mut invalidations = encoder.encode_descriptor(
            "xmppd_cache_invalidations",
            "Entries an in-process cache dropped because their source changed or went unheard",
            None,
            MetricType::Counter,
        )?;
        let labels = [("cache", self.cache)];
        ConstCounter::new(statistics.invalidations).encode(invalidations.encode_family(&labels)?)
    }
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

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn a_cache_is_scraped_with_its_counts_and_an_absent_one_not_at_all() {
        let mut registry = Registry::default();
        CacheMetrics::register(&mut registry, "credentials", || {
            Some(CacheStatistics {
                hits: 4,
                misses: 1,
                invalidations: 2,
            })
        });
        CacheMetrics::register(&mut registry, "resources", || None);
        let text = scrape(&registry);
        for line in [
            r#"xmppd_cache_lookups_total{cache="credentials",outcome="hit"} 4"#,
            r#"xmppd_cache_lookups_total{cache="credentials",outcome="miss"} 1"#,
            r#"xmppd_cache_invalidations_total{cache="credentials"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains(r#"cache="resources""#), "{text}");
    }
}
