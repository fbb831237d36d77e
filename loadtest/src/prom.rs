//! The optional Prometheus endpoint: `/metrics` reads the live counters at scrape time, so a
//! long run can be watched in Grafana beside the server's own metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

#[derive(Debug)]
struct LoadCollector(Arc<Metrics>);

impl Collector for LoadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = self.0.counters();
        let counters = [
            ("logins", "Successful logins.", c.logins),
            ("login_failures", "Failed logins.", c.login_failures),
            ("logouts", "Clean logouts.", c.logouts),
            (
                "accounts_created",
                "Accounts created by registration.",
                c.accounts_created,
            ),
            ("messages_sent", "Messages sent.", c.messages_sent),
            (
                "messages_delivered",
                "Messages received.",
                c.messages_delivered,
            ),
            (
                "messages_reordered",
                "Messages received out of order.",
                c.messages_reordered,
            ),
            (
                "messages_skipped",
                "Gaps in message sequences.",
                c.messages_skipped,
            ),
            (
                "presences_delivered",
                "Presence stanzas received.",
                c.presences_delivered,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                &format!("loadtest_{name}"),
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let online = ConstGauge::new(self.0.online() as i64);
        online.encode(encoder.encode_descriptor(
            "loadtest_sessions_online",
            "Sessions logged in now.",
            None,
            online.metric_type(),
        )?)?;
        let errors = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "loadtest_errors",
            "Errors by kind.",
            None,
            errors.metric_type(),
        )?;
        for (kind, n) in self.0.errors() {
            let labels = [("kind", kind)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(LoadCollector(metrics)));
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => body,
                    Err(_) => String::from("# encoding failed\n"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
