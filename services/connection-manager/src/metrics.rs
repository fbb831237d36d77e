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

/// Which client transport a connection came in by (`ClientStream::TRANSPORT`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Default)]
pub struct EdgeMetrics {
    pub connections: Family<TransportLabels, Gauge>,
    pub bound_streams: Family<TransportLabels, Gauge>,
    /// Every transport's connections together, for the drain at shutdown
    /// (not exported: the sum of `connections`).
    open_connections: Gauge,
    pub authentications: Family<OutcomeLabels, Counter>,
    pub stanzas_in: Counter,
    pub stanzas_out: Counter,
    pub stream_errors: Family<OutcomeLabels, Counter>,
    stream_management: Family<OutcomeLabels, Counter>,
}

impl EdgeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xmppd_edge_connections",
            "Open client connections, by transport",
            self.connections.clone(),
        );
        registry.register(
            "xmppd_edge_bound_streams",
            "Client streams with a bound resource, by transport",
            self.bound_streams.clone(),
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
        registry.register(
            "xmppd_edge_stream_management",
            "XEP-0198 stream management events (enabled, resumable, resumed, resume_failed, expired)",
            self.stream_management.clone(),
        );
    }

    pub fn connection_opened(&self, transport: &'static str) {
        self.open_connections.inc();
        self.connections
            .get_or_create(&TransportLabels { transport })
            .inc();
    }

    pub fn connection_closed(&self, transport: &'static str) {
        self.open_connections.dec();
        self.connections
            .get_or_create(&TransportLabels { transport })
            .dec();
    }

    /// Open client connections, whatever their transport.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.get()
    }

    pub fn stream_bound(&self, transport: &'static str) {
        self.bound_streams
            .get_or_create(&TransportLabels { transport })
            .inc();
    }

    pub fn stream_ended(&self, transport: &'static str) {
        self.bound_streams
            .get_or_create(&TransportLabels { transport })
            .dec();
    }

    pub fn authentication(&self, outcome: &'static str) {
        self.authentications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A XEP-0198 event: `enabled`, `resumable`, `resumed`,
    /// `resume_failed`, `expired`.
    pub fn stream_management(&self, event: &'static str) {
        self.stream_management
            .get_or_create(&OutcomeLabels { outcome: event })
            .inc();
    }

    pub fn stream_error(&self, condition: &'static str) {
        self.stream_errors
            .get_or_create(&OutcomeLabels { outcome: condition })
            .inc();
    }
}
