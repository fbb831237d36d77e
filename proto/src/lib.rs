//! The gRPC API between xmppd's services (`xmppd/v1/cluster.proto`), and the
//! [`Connector`] that opens its streams to a node, whether the node is across
//! the network or in the same process.

pub mod v1 {
    tonic::include_proto!("xmppd.v1");
}

pub use v1::*;

mod envelope;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

impl Kind {
    /// The stanza element name of this kind.
    pub fn element_name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
            Kind::Unspecified => "",
        }
    }

    pub fn from_element_name(name: &str) -> Option<Self> {
        match name {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// The frames coming back on one of the cluster's bidirectional streams,
/// whatever carries them: tonic decoding HTTP/2 data frames, or an
/// in-process channel handing over the frames themselves. It ends when the
/// other side closes the stream; an error ends it too.
pub type FrameStream<T> = BoxStream<'static, Result<T, Status>>;

/// Opens the cluster's streams to other nodes. Every call of the API is a
/// long-lived stream, and each node opens at most one of each to a peer, so
/// a stream is all a caller ever asks for. The defaults run the stream over
/// HTTP/2 on [`Connector::channel`]; the all-in-one process connects each
/// stream to its service's core directly (no protobuf encoding for frames
/// handed over in memory).
pub trait Connector: Send + Sync + 'static {
    /// The HTTP/2 connection for a call to `node`, which must be a `role`
    /// (the call's, not whatever the registry entry says). The default,
    /// which [`RemoteConnector`] keeps, dials the registered address in
    /// plain text; the cluster's connector dials with mutual TLS and
    /// accepts only a certificate naming `role` and the node's id.
    fn channel(&self, node: &Node, _role: Role) -> Result<Channel, Status> {
        Ok(endpoint(node)?.connect_lazy())
    }

    /// Opens `Router.Attach` on the router `node`: `up` carries the frames
    /// to the router, starting with `hello`; the result, the router's frames
    /// back.
    fn attach(
        &self,
        node: &Node,
        up: mpsc::Receiver<EdgeUp>,
    ) -> BoxFuture<'static, Result<FrameStream<EdgeDown>, Status>> {
        let channel = self.channel(node, Role::Router);
        Box::pin(async move {
            let mut client = router_client::RouterClient::new(channel?);
            let down = client.attach(ReceiverStream::new(up)).await?.into_inner();
            Ok(down.boxed())
        })
    }

    /// Opens `Session.Process` on the session replica `node`, as
    /// [`Connector::attach`] does `Router.Attach`.
    fn process(
        &self,
        node: &Node,
        up: mpsc::Receiver<SessionUp>,
    ) -> BoxFuture<'static, Result<FrameStream<SessionDown>, Status>> {
        let channel = self.channel(node, Role::Session);
        Box::pin(async move {
            let mut client = session_client::SessionClient::new(channel?);
            let down = client.process(ReceiverStream::new(up)).await?.into_inner();
            Ok(down.boxed())
        })
    }

    /// Opens `Session.Logins` on the session replica `node`, as
    /// [`Connector::attach`] does `Router.Attach`.
    fn logins(
        &self,
        node: &Node,
        calls: mpsc::Receiver<LoginCall>,
    ) -> BoxFuture<'static, Result<FrameStream<LoginAnswer>, Status>> {
        let channel = self.channel(node, Role::Session);
        Box::pin(async move {
            let mut client = session_client::SessionClient::new(channel?);
            let answers = client
                .logins(ReceiverStream::new(calls))
                .await?
                .into_inner();
            Ok(answers.boxed())
        })
    }
}

/// How to reach `node`'s gRPC address; the connection is made by the
/// stream's first call. With keepalive, a stream whose peer vanished (no
/// reset ever comes) ends within seconds, as a reset one does.
pub fn endpoint(node: &Node) -> Result<Endpoint, Status> {
    let endpoint = Endpoint::from_shared(node.grpc_address.clone()).map_err(|error| {
        Status::invalid_argument(format!(
            "node {} registered a bad gRPC address {:?}: {error}",
            node.id, node.grpc_address
        ))
    })?;
    Ok(endpoint
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(3)))
}

impl From<Status> for LoginRefusal {
    fn from(status: Status) -> Self {
        LoginRefusal {
            code: status.code() as i32,
            message: status.message().to_string(),
        }
    }
}

impl From<LoginRefusal> for Status {
    fn from(refusal: LoginRefusal) -> Self {
        Status::new(tonic::Code::from_i32(refusal.code), refusal.message)
    }
}

/// Dials each node's registered gRPC address in plain text: for a cluster
/// with `cluster_tls.enabled = false`, and for tests of one service.
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoteConnector;

impl Connector for RemoteConnector {}
