//! Session service metrics. Labels are fixed small sets, never JIDs.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use xmppd_metrics::scraped::ScrapedGauge;

use crate::shards::Shards;

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

    /// The depths of the replica's shard queues, read at each scrape.
    pub fn register_scraped(registry: &mut Registry, shards: &Arc<Shards>) {
        let total = shards.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_session_shard_queued",
            "Jobs waiting in the queues of the replica's account workers",
            move || total.queued_jobs().0 as i64,
        );
        let fullest = shards.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_session_shard_queued_max",
            "Jobs waiting in the fullest account worker's queue",
            move || fullest.queued_jobs().1 as i64,
        );
    }

    pub fn count(&self, event: &'static str) {
        self.events.get_or_create(&EventLabels { event }).inc();
    }
}
