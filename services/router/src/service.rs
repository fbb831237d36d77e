//! The gRPC `Router` service: attached connection-manager streams in, routing
//! decisions applied, stanzas out to connection-managers and session replicas.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use xmppd_grpc::router_server::Router;
use xmppd_grpc::{
    BoundResource, Connector, EdgeDown, EdgeUp, Envelope, Node, Role, SessionDown, Stage,
    edge_down, edge_up, session_down, session_up,
};
use xmppd_metrics::latency::time;
use xmppd_protocol::JidRef;
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_registry::{Account, SharedRegistry, membership};
use xmppd_runtime::{stanza_span, traces};

use crate::edges::{Edge, Edges};
use crate::metrics::RouterMetrics;
use crate::policy::{self, Carbon, Verdict};
use crate::replicas::{Downstream, Replicas};
use crate::routing::{self, Selection, Target};

/// Frames buffered towards one connection-manager before the router waits.
const EDGE_BUFFER: usize = 4096;

/// The router. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct RouterService {
    core: Arc<Core>,
}

struct Core {
    domain: String,
    /// The chat services' domains, whose rooms are owned by session
    /// replicas as accounts are.
    muc_domains: Vec<String>,
    registry: SharedRegistry,
    edges: Edges,
    replicas: Arc<Replicas>,
    metrics: RouterMetrics,
}

impl RouterService {
    pub fn new(
        domain: String,
        muc_domains: Vec<String>,
        registry: SharedRegistry,
        connector: Arc<dyn Connector>,
        metrics: RouterMetrics,
    ) -> Self {
        RouterService {
            core: Arc::new(Core {
                domain,
                muc_domains,
                registry,
                edges: Edges::default(),
                replicas: Arc::new(Replicas::new(connector)),
                metrics,
            }),
        }
    }

    /// Follows the live session replicas in the registry, opening and closing
    /// streams as they come and go, and reopening broken ones. Runs until the
    /// registry watch ends.
    pub async fn follow_session_replicas(self, interval: Duration) {
        let mut members = membership::follow(self.core.registry.clone(), Role::Session, interval);
        while let Some(nodes) = members.next().await {
            self.core.replicas.update_members(&nodes, &self.core).await;
            self.core
                .metrics
                .session_replicas
                .set(self.core.replicas.count() as i64);
        }
    }

    /// Frames waiting in the buffers towards attached connection-managers.
    pub fn queued_edge_frames(&self) -> usize {
        self.core.edges.queued_frames()
    }

    /// Deliveries to connection-managers not settled yet.
    pub fn unsettled_deliveries(&self) -> usize {
        self.core.edges.owed_deliveries()
    }

    /// Frames sent to session replicas and not acknowledged yet.
    pub fn unacked_replica_frames(&self) -> usize {
        self.core.replicas.unacked_frames()
    }

    /// Frames held while no session replica is reachable.
    pub fn parked_frames(&self) -> usize {
        self.core.replicas.parked_frames()
    }

    /// Stanzas delivered to resources since the router started (the
    /// `delivered` outcome of `xmppd_router_stanzas`).
    pub fn delivered(&self) -> u64 {
        self.core.metrics.delivered()
    }

    /// Whether the router can route: at least one session replica is reachable.
    pub fn is_ready(&self) -> bool {
        self.core.replicas.count() > 0
    }

    /// `Router.Attach` without its transport: `inbound` is a
    /// connection-manager's stream of frames, `hello` first; the result is
    /// the stream of frames for it. The gRPC service hands it tonic's
    /// decoded stream; the all-in-one process, its connection-manager's
    /// frames as they are. Either way the frames are routed in the order
    /// they arrive, and the stream ends when `inbound` does (or fails).
    pub async fn attach_edge<S>(&self, mut inbound: S) -> Result<EdgeStream, Status>
    where
        S: Stream<Item = Result<EdgeUp, Status>> + Unpin + Send + 'static,
    {
        let node = match inbound.next().await.transpose()? {
            Some(EdgeUp {
                frame: Some(edge_up::Frame::Hello(node)),
            }) => node,
            _ => return Err(Status::invalid_argument("the first frame must be hello")),
        };
        let (tx, rx) = mpsc::channel(EDGE_BUFFER);
        let edge = self.core.edges.attach(&node.id, tx);
        self.core
            .metrics
            .attached_edges
            .set(self.core.edges.count() as i64);
        tracing::info!(node = %node.id, "connection-manager attached");
        tokio::spawn(serve_edge(self.core.clone(), node, inbound, edge));
        Ok(ReceiverStream::new(rx))
    }
}

/// The frames a router sends one attached connection-manager.
pub type EdgeStream = ReceiverStream<Result<EdgeDown, Status>>;

impl Core {
    /// Routes a stanza a client or a replica sent: the sender's policy
    /// first, when the sender is an account of this server with a
    /// resource (which its own stanzas, and those its replica sends on its
    /// behalf, come from).
    async fn route(&self, mut envelope: Envelope) {
        let span = stanza_span!("route", envelope);
        traces::hop(&span, &mut envelope.trace_context);
        self.switch(envelope).instrument(span).await
    }

    /// [`Core::route`] inside its span.
    async fn switch(&self, envelope: Envelope) {
        let sender = match self.sender(&envelope).await {
            Ok(sender) => sender,
            Err(error) => {
                tracing::warn!(%error, "registry look-up failed, bouncing");
                return self
                    .bounce(&envelope, StanzaErrorCondition::InternalServerError)
                    .await;
            }
        };
        if let Some(sender) = &sender {
            if let Some(policy) = &sender.policy {
                match policy::outbound(policy, &envelope) {
                    Verdict::Pass => {}
                    verdict => return self.enforce(&envelope, verdict).await,
                }
            }
            self.send_carbons(&envelope, sender).await;
        }
        self.forward(envelope).await;
    }

    /// The sender's account, if the sender is another local account than
    /// the recipient (an account's stanzas to itself answer to no policy).
    async fn sender(
        &self,
        envelope: &Envelope,
    ) -> Result<Option<Arc<Account>>, xmppd_registry::RegistryError> {
        let sender = envelope.from_jid().bare();
        let to_self = envelope.to_jid().is_none_or(|to| to.bare() == sender);
        if !sender.is_account() || sender.domain() != self.domain || to_self {
            return Ok(None);
        }
        self.registry.account(sender.as_str()).await.map(Some)
    }

    /// Applies a policy's refusal (`Envelope::refusal`, past the policy) or
    /// drop.
    async fn enforce(&self, envelope: &Envelope, verdict: Verdict) {
        self.metrics.count("blocked");
        if let Verdict::Refuse(error) = verdict
            && let Some(reply) = envelope.refusal(&error, &self.domain)
        {
            Box::pin(self.forward(reply)).await;
        }
    }

    /// XEP-0280: a copy of a message a client sent to its account's other
    /// resources that enabled carbons.
    async fn send_carbons(&self, envelope: &Envelope, sender: &Account) {
        if envelope.stage() != Stage::FromClient || !policy::carbons_eligible(envelope) {
            return;
        }
        let account = envelope.from_jid().bare().as_str();
        for resource in
            policy::carbon_recipients(&sender.resources, |r| r.full_jid == envelope.from)
        {
            let copy = policy::carbon_copy(Carbon::Sent, envelope, account, &resource.full_jid);
            self.deliver_copy(resource, copy).await;
        }
    }

    /// Where a stanza goes once the sender's policy let it through; the
    /// router's own error answers start here, past any policy.
    async fn forward(&self, envelope: Envelope) {
        if let Some(owner) = routing::chat_service_owner(&envelope, &self.muc_domains) {
            let owner = owner.to_string();
            return self.to_session(owner, envelope).await;
        }
        match routing::target(&envelope, &self.domain) {
            Target::Session(owner) => {
                let owner = owner.to_string();
                self.to_session(owner, envelope).await;
            }
            Target::Recipient { bare, resource } => {
                let (bare, resource) = (bare.to_string(), resource.map(str::to_string));
                self.to_recipient(envelope, &bare, resource.as_deref())
                    .await;
            }
            Target::Bounce(condition) => self.bounce(&envelope, condition).await,
            Target::Ignore => self.metrics.count("ignored"),
        }
    }

    async fn to_session(&self, owner: String, envelope: Envelope) {
        self.metrics.count("to_session");
        self.replicas
            .send(owner, session_up::Frame::Stanza(envelope))
            .await;
    }

    async fn to_recipient(&self, envelope: Envelope, bare: &str, resource: Option<&str>) {
        let account = match self.registry.account(bare).await {
            Ok(account) => account,
            Err(error) => {
                tracing::warn!(%error, "registry look-up failed, bouncing");
                return self
                    .bounce(&envelope, StanzaErrorCondition::InternalServerError)
                    .await;
            }
        };
        let from_elsewhere = envelope.from_jid().bare().as_str() != bare;
        if let Some(policy) = account.policy.as_deref().filter(|_| from_elsewhere) {
            match policy::inbound(policy, &envelope) {
                Verdict::Pass => {}
                verdict => return self.enforce(&envelope, verdict).await,
            }
        }
        match routing::select(&envelope, resource, &account.resources) {
            Selection::Deliver(sessions) => {
                if from_elsewhere {
                    self.receive_carbons(&envelope, &account, &sessions).await;
                }
                // A copy for every resource but the last, which takes the
                // envelope itself. One that could not be handed on comes
                // back as it was, to be routed once as undeliverable.
                // `Deliver` is never empty.
                let Some((last, others)) = sessions.split_last() else {
                    return;
                };
                let mut returned = None;
                for session in others {
                    if let Some(copy) = self.deliver(session, envelope.clone()).await {
                        returned.get_or_insert(copy);
                    }
                }
                if let Some(envelope) = self.deliver(last, envelope).await {
                    returned.get_or_insert(envelope);
                }
                if let Some(envelope) = returned {
                    self.undeliverable(envelope).await;
                }
            }
            Selection::Session => self.to_session(bare.to_string(), envelope).await,
            Selection::Bounce(condition) => self.bounce(&envelope, condition).await,
            Selection::Ignore => self.metrics.count("ignored"),
        }
    }

    /// XEP-0280: a copy of a message delivered to some of an account's
    /// resources to its others that enabled carbons.
    async fn receive_carbons(
        &self,
        envelope: &Envelope,
        account: &Account,
        sessions: &[&BoundResource],
    ) {
        if !policy::carbons_eligible(envelope) {
            return;
        }
        let holds = |r: &BoundResource| sessions.iter().any(|s| s.full_jid == r.full_jid);
        let bare = JidRef::new(&envelope.to).bare().as_str();
        for resource in policy::carbon_recipients(&account.resources, holds) {
            let copy = policy::carbon_copy(Carbon::Received, envelope, bare, &resource.full_jid);
            self.deliver_copy(resource, copy).await;
        }
    }

    /// A carbon copy that cannot be handed on is not worth routing again.
    async fn deliver_copy(&self, session: &BoundResource, copy: Envelope) {
        if self.deliver(session, copy).await.is_none() {
            self.metrics.count("carbons");
        }
    }

    /// Hands `envelope`, addressed to its full JID, to the connection-manager
    /// holding `session`; gives it back untouched if that one is not attached.
    /// A stanza that would be routed again if it came back is kept until
    /// the connection-manager settles its delivery (`crate::edges`).
    async fn deliver(&self, session: &BoundResource, mut envelope: Envelope) -> Option<Envelope> {
        let not_attached = |envelope| {
            self.metrics.count("undeliverable");
            Some(envelope)
        };
        let Some(edge) = self.edges.get(&session.node_id) else {
            return not_attached(envelope);
        };
        let Ok(permit) = edge.tx.reserve().await else {
            return not_attached(envelope);
        };
        session.full_jid.clone_into(&mut envelope.to);
        let seq = if envelope.worth_returning() {
            match edge.keep(&envelope) {
                Some(seq) => seq,
                None => return not_attached(envelope),
            }
        } else {
            0
        };
        permit.send(Ok(EdgeDown {
            frame: Some(edge_down::Frame::Stanza(envelope)),
            seq,
        }));
        self.metrics.count("delivered");
        None
    }

    /// A stanza whose resource is gone (its node died, or its stream ended
    /// before its client had it): a message still reaches the account,
    /// whose replica delivers it to another resource or stores it offline,
    /// and a request is answered as if the resource did not exist (RFC 6121
    /// §8.5.3.2). Anything else is dropped, as for an unavailable resource
    /// ([`Envelope::worth_returning`]).
    async fn undeliverable(&self, envelope: Envelope) {
        if envelope.reaches_account_when_resource_gone() {
            let owner = JidRef::new(&envelope.to).bare().to_string();
            self.to_session(owner, envelope).await;
        } else if envelope.is_request() {
            self.bounce(&envelope, StanzaErrorCondition::ServiceUnavailable)
                .await;
        }
    }

    /// Answers the sender of `envelope` with a stanza error.
    async fn bounce(&self, envelope: &Envelope, condition: StanzaErrorCondition) {
        match envelope.error_reply(&StanzaError::new(condition), &self.domain) {
            Some(reply) => {
                self.metrics.count("bounced");
                Box::pin(self.forward(reply)).await;
            }
            None => self.metrics.count("ignored"),
        }
    }

    /// Deliveries a connection-manager gave back, or never settled before its
    /// stream ended: routed again as for a resource that is gone.
    async fn returned(&self, envelopes: Vec<Envelope>) {
        for envelope in envelopes {
            self.metrics.count("returned");
            self.undeliverable(envelope).await;
        }
    }

    async fn handle_edge_frame(&self, edge: &Edge, frame: edge_up::Frame) {
        match frame {
            edge_up::Frame::Stanza(envelope) => {
                time(&self.metrics.routing.from_edge, self.route(envelope)).await
            }
            edge_up::Frame::Ended(ended) => {
                let owner = ended.jid().bare().to_string();
                self.replicas
                    .send(owner, session_up::Frame::Ended(ended))
                    .await;
            }
            edge_up::Frame::Settled(settled) => self.returned(edge.settle(&settled)).await,
            edge_up::Frame::Hello(node) => {
                tracing::warn!(node = %node.id, "unexpected second hello ignored");
            }
        }
    }
}

impl Downstream for Core {
    async fn handle(&self, frame: SessionDown) {
        match frame.frame {
            Some(session_down::Frame::Stanza(envelope)) => {
                time(&self.metrics.routing.from_replica, self.route(envelope)).await
            }
            Some(session_down::Frame::Kick(kick)) => {
                if let Some(edge) = self.edges.get(&kick.node_id) {
                    let frame = EdgeDown {
                        frame: Some(edge_down::Frame::Kick(kick)),
                        seq: 0,
                    };
                    let _ = edge.tx.send(Ok(frame)).await;
                }
            }
            Some(session_down::Frame::Ack(_)) | None => {}
        }
    }
}

#[tonic::async_trait]
impl Router for RouterService {
    type AttachStream = EdgeStream;

    async fn attach(
        &self,
        request: Request<Streaming<EdgeUp>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.attach_edge(request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Routes one connection-manager's frames in the order they arrive, which
/// keeps each client stream's stanzas in order (RFC 6120 §10.1); once the
/// stream ends, routes again what the node never settled.
async fn serve_edge<S>(core: Arc<Core>, node: Node, mut inbound: S, edge: Arc<Edge>)
where
    S: Stream<Item = Result<EdgeUp, Status>> + Unpin,
{
    loop {
        match inbound.next().await {
            Some(Ok(EdgeUp { frame: Some(frame) })) => core.handle_edge_frame(&edge, frame).await,
            Some(Ok(EdgeUp { frame: None })) => {}
            None => break,
            Some(Err(status)) => {
                tracing::warn!(node = %node.id, %status, "connection-manager stream failed");
                break;
            }
        }
    }
    core.edges.detach(&node.id, &edge);
    core.metrics.attached_edges.set(core.edges.count() as i64);
    let owed = edge.close();
    tracing::info!(node = %node.id, unsettled = owed.len(), "connection-manager detached");
    core.returned(owed).await;
}
