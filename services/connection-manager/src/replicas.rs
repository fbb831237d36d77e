//! The session replicas this node asks directly, without a router in
//! between, for what a login needs: an account's credentials, its
//! registration and the binding of a resource.
//!
//! Any replica can answer these calls: they read the store, or change it
//! and the registry atomically. The account's owner by rendezvous hash is
//! asked first, so the calls spread over the replicas as the accounts do;
//! when it cannot be reached (a replica that died stays a member until its
//! heartbeat expires), the next replicas in rendezvous order are. A
//! replica's own refusal is the answer, `Unavailable` included (its store or
//! registry failing): every replica shares those, so asking each in turn
//! would only multiply the load on what is failing.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, RwLock};

use tonic::{Code, Response, Status};
use xmppd_grpc::session_client::SessionClient;
use xmppd_grpc::{Connector, GrpcChannel, Node};
use xmppd_registry::membership;

pub type ReplicaClient = SessionClient<GrpcChannel>;

pub struct Replicas {
    connector: Arc<dyn Connector>,
    // A std lock, never held across an await.
    members: RwLock<Members>,
}

#[derive(Default)]
struct Members {
    /// Sorted by id, so every node ranks the same list.
    nodes: Vec<Node>,
    clients: HashMap<String, ReplicaClient>,
}

impl Replicas {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Replicas {
            connector,
            members: RwLock::default(),
        }
    }

    pub fn count(&self) -> usize {
        self.members.read().expect("replicas lock").nodes.len()
    }

    /// Takes the live replicas from the registry: a client for each new
    /// one (its channel connects lazily and reconnects by itself), none
    /// any more for those that left.
    pub fn update(&self, live: &[Node]) {
        let mut live = live.to_vec();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let mut members = self.members.write().expect("replicas lock");
        if members.nodes == live {
            return;
        }
        let mut clients = HashMap::with_capacity(live.len());
        live.retain(|node| {
            let unchanged = members.nodes.contains(node);
            let client = match members.clients.get(&node.id).filter(|_| unchanged) {
                Some(client) => client.clone(),
                None => match self.open(node) {
                    Some(client) => client,
                    None => return false,
                },
            };
            clients.insert(node.id.clone(), client);
            true
        });
        *members = Members {
            nodes: live,
            clients,
        };
    }

    fn open(&self, node: &Node) -> Option<ReplicaClient> {
        match self.connector.channel(node) {
            Ok(channel) => {
                tracing::info!(replica = %node.id, "login calls may go to session replica");
                Some(SessionClient::new(channel))
            }
            Err(error) => {
                tracing::warn!(replica = %node.id, %error, "cannot reach session replica");
                None
            }
        }
    }

    /// Makes `call` with `request` on the replica owning `account`, or on
    /// the next ones in rendezvous order while a replica cannot be reached.
    pub async fn call<Req, T, F, Fut>(
        &self,
        account: &str,
        request: Req,
        call: F,
    ) -> Result<T, Status>
    where
        Req: Clone,
        F: Fn(ReplicaClient, Req) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut outcome = Err(Status::unavailable("no session replica is reachable"));
        for client in self.ranked(account) {
            outcome = call(client, request.clone())
                .await
                .map(Response::into_inner);
            match &outcome {
                Err(status) if unreached(status) => {
                    tracing::warn!(%account, %status, "session replica unreachable, trying the next");
                }
                _ => break,
            }
        }
        outcome
    }

    fn ranked(&self, account: &str) -> Vec<ReplicaClient> {
        let members = self.members.read().expect("replicas lock");
        membership::ranked(account, &members.nodes)
            .into_iter()
            .filter_map(|node| members.clients.get(&node.id).cloned())
            .collect()
    }
}

/// Whether `status` says the call did not reach a replica, rather than being
/// a replica's answer: tonic makes a transport failure `Unavailable` with the
/// error as its source, and a status a server sent has none.
fn unreached(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.source().is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Streaming};
    use xmppd_grpc::session_server::{Session, SessionServer};
    use xmppd_grpc::{
        BindReply, BindRequest, CredentialsReply, CredentialsRequest, RegisterReply,
        RegisterRequest, RemoteConnector, Role, SessionDown, SessionUp,
    };

    use super::*;

    fn replica(id: &str, grpc_address: &str) -> Node {
        Node {
            id: id.into(),
            role: Role::Session as i32,
            grpc_address: grpc_address.into(),
        }
    }

    async fn credentials(replicas: &Replicas) -> Result<xmppd_grpc::CredentialsReply, Status> {
        let request = CredentialsRequest {
            jid: "ann@example.org".into(),
        };
        replicas
            .call(
                "ann@example.org",
                request,
                |mut replica, request| async move { replica.get_credentials(request).await },
            )
            .await
    }

    #[tokio::test]
    async fn with_no_replica_a_call_is_unavailable() {
        let replicas = Replicas::new(Arc::new(RemoteConnector));
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }

    /// A replica nothing listens for fails as `Unavailable`, the code the
    /// fallback to the next replica goes by; with every member so, that is
    /// the answer.
    #[tokio::test]
    async fn an_unreachable_replica_is_unavailable() {
        let replicas = Replicas::new(Arc::new(RemoteConnector));
        let closed = |id| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            drop(listener);
            replica(id, &format!("http://{address}"))
        };
        replicas.update(&[closed("s2"), closed("s1")]);
        assert_eq!(replicas.count(), 2);
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(unreached(&status), "{status:?}");
    }

    /// A replica that can serve nothing: it counts the credential calls it
    /// answers, with `Unavailable`, as one whose store is down does.
    #[derive(Clone, Default)]
    struct StoreDown {
        answered: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl Session for StoreDown {
        type ProcessStream = tokio_stream::Empty<Result<SessionDown, Status>>;

        async fn process(
            &self,
            _: Request<Streaming<SessionUp>>,
        ) -> Result<Response<Self::ProcessStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_credentials(
            &self,
            _: Request<CredentialsRequest>,
        ) -> Result<Response<CredentialsReply>, Status> {
            self.answered.fetch_add(1, Ordering::SeqCst);
            Err(Status::unavailable("storage: connection refused"))
        }

        async fn register(
            &self,
            _: Request<RegisterRequest>,
        ) -> Result<Response<RegisterReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn bind(&self, _: Request<BindRequest>) -> Result<Response<BindReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    async fn serve(replica: StoreDown) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SessionServer::new(replica))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        format!("http://{address}")
    }

    /// A replica's own `Unavailable` is its answer: the call is not made again
    /// on the next replica, which shares the store that failed.
    #[tokio::test]
    async fn a_replica_that_answers_is_not_passed_over() {
        let replica_down = StoreDown::default();
        let answered = replica_down.answered.clone();
        let replicas = Replicas::new(Arc::new(RemoteConnector));
        replicas.update(&[
            replica("s1", &serve(replica_down.clone()).await),
            replica("s2", &serve(replica_down).await),
        ]);
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(!unreached(&status), "{status:?}");
        assert_eq!(answered.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn members_are_kept_sorted_and_follow_the_registry() {
        let replicas = Replicas::new(Arc::new(RemoteConnector));
        let (a, b) = (
            replica("s1", "http://127.0.0.1:1"),
            replica("s2", "http://127.0.0.1:2"),
        );
        replicas.update(&[b.clone(), a.clone()]);
        let ids = |replicas: &Replicas| {
            let members = replicas.members.read().unwrap();
            members
                .nodes
                .iter()
                .map(|n| n.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&replicas), ["s1", "s2"]);
        replicas.update(&[b]);
        assert_eq!(ids(&replicas), ["s2"]);
        assert_eq!(replicas.members.read().unwrap().clients.len(), 1);
    }
}
