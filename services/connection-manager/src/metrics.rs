//! Connection-manager metrics. Labels are fixed small sets, never JIDs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Default)]
pub struct EdgeMetrics {
    pub connections: Gauge,
    pub sessions: Gauge,
    pub authentications: Family<OutcomeLabels, Counter>,
    pub stanzas_in: Counter,
    pub stanzas_out: Counter,
    pub stream_errors: Family<OutcomeLabels, Counter>,
}

impl EdgeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xmppd_edge_connections",
            "Open client connections",
            self.connections.clone(),
        );
        registry.register(
            "xmppd_edge_sessions",
            "Client streams with a bound resource",
            self.sessions.clone(),
        );
        registry.register(
            "xmppd_edge_authentications",
            "SASL authentications by outcome",
            self.authentications.clone(),
        );
        registry.register(
            "xmppd_edge_stanzas_in",
            "Stanzas received from clients",
            self.stanzas_in.clone(),
        );
        registry.register(
            "xmppd_edge_stanzas_out",
            "Stanzas delivered to clients",
            self.stanzas_out.clone(),
        );
        registry.register(
            "xmppd_edge_stream_errors",
            "Stream errors sent, by condition",
            self.stream_errors.clone(),
        );
    }

    pub fn authentication(&self, outcome: &'static str) {
        self.authentications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn stream_error(&self, condition: &'static str) {
        self.stream_errors
            .get_or_create(&OutcomeLabels { outcome: condition })
            .inc();
    }
}
