//! The gRPC API between xmppd's services (`xmppd/v1/cluster.proto`), the one
//! channel type every client of it uses, whether the server is across the
//! network or in the same process, and the [`Connector`] that opens channels
//! and streams to a node.

pub mod v1 {
    tonic::include_proto!("xmppd.v1");
}

pub use v1::*;

mod envelope;

use std::convert::Infallible;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};

/// A gRPC channel: a real HTTP/2 connection in a cluster, or a direct call into
/// a server object in the all-in-one process. Services only ever see this
/// type, so both deployments run the same code.
pub type GrpcChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, ChannelError>;

/// The transport error of a [`GrpcChannel`]. A concrete type rather than a
/// boxed trait object, so that futures calling through the channel stay
/// `Send` for every lifetime, as `async_trait` service methods need.
#[derive(Debug)]
pub struct ChannelError(BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// A lazily connecting channel to `address` (`http://host:port`). It
/// reconnects by itself after the peer restarts.
pub fn remote_channel(address: &str) -> Result<GrpcChannel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(address.to_string())?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(5))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_timeout(std::time::Duration::from_secs(3))
        .connect_lazy();
    Ok(BoxCloneSyncService::new(
        channel.map_err(|error| ChannelError(error.into())),
    ))
}

/// A channel that calls `server` (a generated `*Server`) in this process,
/// without a socket.
pub fn local_channel<S>(server: S) -> GrpcChannel
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(server.map_err(|never| match never {}))
}

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

/// The frames coming back on one of the cluster's bidirectional streams
/// (`Router.Attach`, `Session.Process`), whatever carries them: tonic
/// decoding HTTP/2 data frames, or an in-process channel handing over the
/// frames themselves. It ends when the other side closes the stream; an
/// error ends it too.
pub type FrameStream<T> = BoxStream<'static, Result<T, Status>>;

/// Opens channels and streams to other nodes of the cluster. The cluster
/// dials their registered gRPC address and makes every call over HTTP/2;
/// the all-in-one process hands out in-process channels to the services it
/// composed, and connects the streaming calls to their services' cores
/// directly (no protobuf encoding for frames handed over in memory).
pub trait Connector: Send + Sync + 'static {
    /// The channel for `node`'s calls.
    fn channel(&self, node: &Node) -> Result<GrpcChannel, BoxError>;

    /// Opens `Router.Attach` on the router `node`, reached by `channel`
    /// (from [`Connector::channel`]): `up` carries the frames to the router,
    /// starting with `hello`; the result, the router's frames back. The
    /// default makes the gRPC call on `channel`.
    fn attach(
        &self,
        _node: &Node,
        channel: GrpcChannel,
        up: mpsc::Receiver<EdgeUp>,
    ) -> BoxFuture<'static, Result<FrameStream<EdgeDown>, Status>> {
        Box::pin(async move {
            let mut client = router_client::RouterClient::new(channel);
            let down = client.attach(ReceiverStream::new(up)).await?.into_inner();
            Ok(down.boxed())
        })
    }

    /// Opens `Session.Process` on the session replica `node`, as
    /// [`Connector::attach`] does `Router.Attach`.
    fn process(
        &self,
        _node: &Node,
        channel: GrpcChannel,
        up: mpsc::Receiver<SessionUp>,
    ) -> BoxFuture<'static, Result<FrameStream<SessionDown>, Status>> {
        Box::pin(async move {
            let mut client = session_client::SessionClient::new(channel);
            let down = client.process(ReceiverStream::new(up)).await?.into_inner();
            Ok(down.boxed())
        })
    }

    /// Opens `Session.Logins` on the session replica `node`, as
    /// [`Connector::attach`] does `Router.Attach`.
    fn logins(
        &self,
        _node: &Node,
        channel: GrpcChannel,
        calls: mpsc::Receiver<LoginCall>,
    ) -> BoxFuture<'static, Result<FrameStream<LoginAnswer>, Status>> {
        Box::pin(async move {
            let mut client = session_client::SessionClient::new(channel);
            let answers = client
                .logins(ReceiverStream::new(calls))
                .await?
                .into_inner();
            Ok(answers.boxed())
        })
    }
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

/// Dials `Node::grpc_address`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RemoteConnector;

impl Connector for RemoteConnector {
    fn channel(&self, node: &Node) -> Result<GrpcChannel, BoxError> {
        Ok(remote_channel(&node.grpc_address)?)
    }
}
