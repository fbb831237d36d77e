//! In-process wiring for the all-in-one server: the services call each
//! other without a socket. Every call of the cluster's API is a stream
//! (`Router.Attach`, `Session.Process`, `Session.Logins`), and each is
//! connected to the router's or the replica's stream core directly, so its
//! frames are handed over as they are instead of being encoded to protobuf
//! and decoded again. Only the transport differs from the cluster's: the
//! same cores run behind the gRPC services there.

use std::collections::HashMap;
use std::sync::RwLock;

use futures::future::BoxFuture;
use futures::stream::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use xmppd_grpc::{
    Connector, EdgeDown, EdgeUp, FrameStream, LoginAnswer, LoginCall, Node, SessionDown, SessionUp,
};
use xmppd_router::RouterService;
use xmppd_session::SessionService;

/// A service composed into this process.
#[derive(Clone)]
enum Service {
    Router(RouterService),
    Session(SessionService),
}

#[derive(Default)]
pub struct LocalConnector {
    nodes: RwLock<HashMap<String, Service>>,
}

impl LocalConnector {
    pub fn add_router(&self, node_id: &str, router: RouterService) {
        self.add(node_id, Service::Router(router));
    }

    pub fn add_session(&self, node_id: &str, session: SessionService) {
        self.add(node_id, Service::Session(session));
    }

    fn add(&self, node_id: &str, service: Service) {
        self.nodes
            .write()
            .expect("nodes lock")
            .insert(node_id.to_string(), service);
    }

    fn service(&self, node: &Node) -> Result<Service, Status> {
        self.nodes
            .read()
            .expect("nodes lock")
            .get(&node.id)
            .cloned()
            .ok_or_else(|| {
                Status::unavailable(format!("no in-process service for node {}", node.id))
            })
    }

    fn session(&self, node: &Node, call: &str) -> Result<SessionService, Status> {
        match self.service(node)? {
            Service::Session(session) => Ok(session),
            Service::Router(_) => Err(Status::unimplemented(format!(
                "{call} on a node that is no session replica"
            ))),
        }
    }
}

impl Connector for LocalConnector {
    fn attach(
        &self,
        node: &Node,
        up: mpsc::Receiver<EdgeUp>,
    ) -> BoxFuture<'static, Result<FrameStream<EdgeDown>, Status>> {
        let service = self.service(node);
        Box::pin(async move {
            let Service::Router(router) = service? else {
                return Err(Status::unimplemented(
                    "Router.Attach on a node that is no router",
                ));
            };
            let down = router.attach_edge(ReceiverStream::new(up).map(Ok)).await?;
            Ok(down.boxed())
        })
    }

    fn process(
        &self,
        node: &Node,
        up: mpsc::Receiver<SessionUp>,
    ) -> BoxFuture<'static, Result<FrameStream<SessionDown>, Status>> {
        let session = self.session(node, "Session.Process");
        Box::pin(async move {
            Ok(session?
                .process_frames(ReceiverStream::new(up).map(Ok))
                .boxed())
        })
    }

    fn logins(
        &self,
        node: &Node,
        calls: mpsc::Receiver<LoginCall>,
    ) -> BoxFuture<'static, Result<FrameStream<LoginAnswer>, Status>> {
        let session = self.session(node, "Session.Logins");
        Box::pin(async move {
            Ok(session?
                .login_calls(ReceiverStream::new(calls).map(Ok))
                .boxed())
        })
    }
}
