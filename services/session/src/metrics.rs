//! Session service metrics. Labels are fixed small sets, never JIDs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone, Default)]
pub struct SessionMetrics {
    pub events: Family<EventLabels, Counter>,
}

impl SessionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xmppd_session_events",
            "Session service events: binds, unbinds, offline stores and deliveries, reaped sessions",
            self.events.clone(),
        );
    }

    pub fn count(&self, event: &'static str) {
        self.events.get_or_create(&EventLabels { event }).inc();
    }
}
