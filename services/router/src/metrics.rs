//! Router metrics. Labels are fixed small sets, never JIDs; the routing
//! histograms are handles resolved once, so a stanza costs them one
//! `Instant` pair and one observe.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use xmppd_metrics::latency;
use xmppd_metrics::scraped::ScrapedGauge;

use crate::RouterService;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// delivered, to_session, bounced, ignored, undeliverable
    pub outcome: &'static str,
}

/// Where a routed stanza came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// How long routing one stanza took, by where it came from: the registry
/// look-ups, the policies, and the wait for room in the buffer it goes to.
#[derive(Clone)]
pub struct RoutingLatency {
    family: Family<SourceLabels, Histogram, fn() -> Histogram>,
    /// A client's stanza, from a connection-manager.
    pub from_edge: Histogram,
    /// A session replica's output.
    pub from_replica: Histogram,
}

impl Default for RoutingLatency {
    fn default() -> Self {
        let family = Family::<_, _, fn() -> Histogram>::new_with_constructor(latency::stanza_hop);
        let source = |source| family.get_or_create(&SourceLabels { source }).clone();
        RoutingLatency {
            from_edge: source("edge"),
            from_replica: source("replica"),
            family,
        }
    }
}

#[derive(Clone, Default)]
pub struct RouterMetrics {
    pub stanzas: Family<OutcomeLabels, Counter>,
    pub attached_edges: Gauge,
    pub session_replicas: Gauge,
    pub routing: RoutingLatency,
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
        registry.register_with_unit(
            "xmppd_router_routing",
            "Time to route one stanza, by source (edge, replica)",
            Unit::Seconds,
            self.routing.family.clone(),
        );
    }

    /// The depths of the router's queues, read at each scrape.
    pub fn register_scraped(registry: &mut Registry, router: &RouterService) {
        let edges = router.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_router_edge_queued",
            "Frames waiting in the buffers towards attached connection-managers",
            move || edges.queued_edge_frames() as i64,
        );
        let owed = router.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_router_edge_unsettled",
            "Deliveries to attached connection-managers whose clients do not have them yet (the router keeps a copy of each)",
            move || owed.unsettled_deliveries() as i64,
        );
        let unacked = router.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_router_replica_unacked",
            "Frames sent to session replicas and not acknowledged yet",
            move || unacked.unacked_replica_frames() as i64,
        );
        let parked = router.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_router_parked",
            "Frames held while no session replica is reachable",
            move || parked.parked_frames() as i64,
        );
    }

    /// Stanzas counted with the outcome `delivered`.
    pub fn delivered(&self) -> u64 {
        self.stanzas
            .get_or_create(&OutcomeLabels {
                outcome: "delivered",
            })
            .get()
    }

    pub fn count(&self, outcome: &'static str) {
        self.stanzas.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
