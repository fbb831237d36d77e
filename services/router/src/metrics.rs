//! Router metrics. Labels are fixed small sets, never JIDs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// delivered, to_session, bounced, ignored, undeliverable
    pub outcome: &'static str,
}

#[derive(Clone, Default)]
pub struct RouterMetrics {
    pub stanzas: Family<OutcomeLabels, Counter>,
    pub attached_edges: Gauge,
    pub session_replicas: Gauge,
}

impl RouterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xmppd_router_stanzas",
            "Stanzas routed, by outcome",
            self.stanzas.clone(),
        );
        registry.register(
            "xmppd_router_attached_connection_managers",
            "Connection-managers attached to this router",
            self.attached_edges.clone(),
        );
        registry.register(
            "xmppd_router_session_replicas",
            "Session replicas this router has a stream to",
            self.session_replicas.clone(),
        );
    }

    pub fn count(&self, outcome: &'static str) {
        self.stanzas.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
