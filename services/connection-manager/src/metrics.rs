//! Connection-manager metrics. Labels are fixed small sets, never JIDs; a
//! histogram on the stanza path is a handle resolved once, so a stanza
//! costs it one `Instant` pair and one observe.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use xmppd_metrics::latency;
use xmppd_metrics::scraped::ScrapedGauge;

use crate::cluster::Cluster;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Which client transport a connection came in by (`ClientStream::TRANSPORT`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

/// Which part of a login a duration is of.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

/// A login's durations, by step, each handle resolved once.
#[derive(Clone)]
pub struct LoginLatency {
    family: Family<StepLabels, Histogram, fn() -> Histogram>,
    /// One SASL exchange, from `<auth/>` to `<success/>` or `<failure/>`:
    /// the client's answers to challenges and the credential look-up.
    pub sasl: Histogram,
    /// The bind call to the account's session replica.
    pub bind: Histogram,
    /// From the start of negotiation (after the accept, and the handshake
    /// of direct TLS) to the bound resource: STARTTLS, SASL, bind, and the
    /// client's own round trips.
    pub total: Histogram,
}

impl Default for LoginLatency {
    fn default() -> Self {
        let family = Family::<_, _, fn() -> Histogram>::new_with_constructor(latency::login);
        let step = |step| family.get_or_create(&StepLabels { step }).clone();
        LoginLatency {
            sasl: step("sasl"),
            bind: step("bind"),
            total: step("total"),
            family,
        }
    }
}

#[derive(Clone)]
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
    /// A client's stanza from its parse to its hand-over to the pinned
    /// router stream (waiting for room there included).
    pub inbound: Histogram,
    /// A delivery from its arrival from a router to its write to the
    /// client: the mailbox wait and the socket write.
    pub outbound: Histogram,
    pub login: LoginLatency,
    stream_management: Family<OutcomeLabels, Counter>,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        EdgeMetrics {
            connections: Family::default(),
            bound_streams: Family::default(),
            open_connections: Gauge::default(),
            authentications: Family::default(),
            stanzas_in: Counter::default(),
            stanzas_out: Counter::default(),
            stream_errors: Family::default(),
            inbound: latency::stanza_hop(),
            outbound: latency::stanza_hop(),
            login: LoginLatency::default(),
            stream_management: Family::default(),
        }
    }
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
        registry.register_with_unit(
            "xmppd_edge_stanza_inbound",
            "Client stanzas from their parse to their hand-over to the router stream",
            Unit::Seconds,
            self.inbound.clone(),
        );
        registry.register_with_unit(
            "xmppd_edge_stanza_outbound",
            "Deliveries from their arrival from a router to their write to the client",
            Unit::Seconds,
            self.outbound.clone(),
        );
        registry.register_with_unit(
            "xmppd_edge_login",
            "Logins (step total) and their steps (sasl, bind)",
            Unit::Seconds,
            self.login.family.clone(),
        );
        registry.register(
            "xmppd_edge_stream_management",
            "XEP-0198 stream management events (enabled, resumable, resumed, resume_failed, expired)",
            self.stream_management.clone(),
        );
    }

    /// The gauges read at each scrape: this node's links and the depths of
    /// its queues.
    pub fn register_scraped(registry: &mut Registry, cluster: &Cluster) {
        let routers = cluster.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_edge_routers",
            "Routers this connection-manager has a stream to",
            move || routers.router_count() as i64,
        );
        let replicas = cluster.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_edge_session_replicas",
            "Session replicas this connection-manager has a login stream to",
            move || replicas.session_replica_count() as i64,
        );
        let mailboxes = cluster.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_edge_mailbox_queued",
            "Deliveries waiting in the mailboxes of bound streams",
            move || mailboxes.queued_deliveries() as i64,
        );
        let links = cluster.clone();
        ScrapedGauge::register(
            registry,
            "xmppd_edge_router_queued",
            "Frames waiting in the buffers towards routers",
            move || links.queued_router_frames() as i64,
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
