//! Mutual TLS between real processes: a router and a session replica refuse
//! every call from a caller without a certificate from the cluster CA, or
//! with the certificate of a role that may not make it; a connection-manager
//! and a router give no traffic to a node in the registry whose certificate
//! does not name the role and node the entry claims; a replica serves a
//! renewed certificate (and CA) without a restart.
//!
//! Needs Redis and Postgres, as `tests/cluster.rs` does.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use support::cluster::{NODE_TTL, Nodes, with_cluster};
use support::{RawClient, Server};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use xmppd_cluster_tls::identity::ANY_NODE;
use xmppd_cluster_tls::issue::{ClusterCa, RoleCertificate};
use xmppd_cluster_tls::{CertPaths, ClusterTls, MutualTlsConnector};
use xmppd_grpc::router_client::RouterClient;
use xmppd_grpc::session_client::SessionClient;
use xmppd_grpc::session_server::{Session, SessionServer};
use xmppd_grpc::{
    Connector, CredentialsRequest, EdgeUp, LoginAnswer, LoginCall, Node, Role, SessionDown,
    SessionUp, edge_up, login_call,
};
use xmppd_registry::Caching;

const TEST_LIMIT: Duration = Duration::from_secs(100);
/// How long one call may take to be answered or refused.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_the_right_certificate_are_refused_every_call() {
    with_cluster(TEST_LIMIT, refusals).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_entry_gets_traffic_only_with_a_matching_certificate() {
    with_cluster(TEST_LIMIT, impostors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_a_renewed_certificate_without_restarting() {
    with_cluster(TEST_LIMIT, renewal).await;
}

/// An unknown account's SCRAM challenge is the same on every
/// connection-manager that shares the decoy secret, as a known account's
/// is: the same salt and iteration count for the same username, another
/// salt for another username. A connection-manager without the secret
/// answers differently, and says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_account_gets_the_same_salt_from_every_connection_manager() {
    with_cluster(TEST_LIMIT, decoys).await;
}

/// The salt and iteration count a connection-manager at `c2s` challenges
/// `user` with.
async fn salt_and_iterations(c2s: SocketAddr, user: &str) -> (String, String) {
    let mut client = RawClient::connect(c2s).await;
    client.open_stream().await;
    let server_first = client
        .scram_server_first(&format!("n,,n={user},r=decoy-test-nonce"))
        .await;
    let attribute = |name: &str| {
        server_first
            .split(',')
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {server_first}"))
            .to_string()
    };
    (attribute("s="), attribute("i="))
}

async fn decoys(nodes: Nodes) {
    let session = nodes.session(1);
    session.ready().await;
    session.add_user("alice", "alice-secret");
    let router = nodes.router(None);
    router.ready().await;
    let secret = nodes.dir.join("decoy-secret");
    std::fs::write(&secret, "a secret every connection-manager shares\n").unwrap();
    let shared = format!(
        "[auth]\nrequire_tls = false\ndecoy_secret_file = \"{}\"\n",
        secret.display()
    );
    let cm1 = nodes.start("connection-manager", "cm-1", &shared, None);
    let cm2 = nodes.start("connection-manager", "cm-2", &shared, None);
    let alone = nodes.connection_manager(3);
    for cm in [&cm1, &cm2, &alone] {
        cm.ready().await;
    }

    let nobody = salt_and_iterations(cm1.c2s, "nobody").await;
    assert_eq!(salt_and_iterations(cm2.c2s, "nobody").await, nobody);
    assert_eq!(salt_and_iterations(cm1.c2s, "nobody").await, nobody);
    let somebody = salt_and_iterations(cm2.c2s, "somebody").await;
    assert_ne!(somebody.0, nobody.0);
    assert_eq!(salt_and_iterations(cm1.c2s, "somebody").await, somebody);
    // A known account looks the same: its stored salt everywhere, with the
    // count that decoys name.
    let alice = salt_and_iterations(cm1.c2s, "alice").await;
    assert_eq!(salt_and_iterations(cm2.c2s, "alice").await, alice);
    assert_eq!(alice.1, nobody.1);
    assert_ne!(alice.0, nobody.0);

    assert_ne!(salt_and_iterations(alone.c2s, "nobody").await.0, nobody.0);
    assert!(
        alone.log().contains("auth.decoy_secret_file unset"),
        "{}",
        alone.log()
    );
    assert!(!cm1.log().contains("auth.decoy_secret_file unset"));
}

/// The calls of the cluster's API, each made as a real caller would.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rpc {
    Attach,
    Process,
    Logins,
}

const EVERY_RPC: [Rpc; 3] = [Rpc::Attach, Rpc::Process, Rpc::Logins];

impl Rpc {
    /// The process that serves this call.
    fn server<'a>(self, router: &'a Server, session: &'a Server) -> &'a Server {
        match self {
            Rpc::Attach => router,
            Rpc::Process | Rpc::Logins => session,
        }
    }

    /// Makes the call on `channel`: `Ok` once the server answered it.
    async fn call(self, channel: Channel) -> Result<(), Status> {
        let made = async {
            match self {
                Rpc::Attach => {
                    let hello = EdgeUp {
                        frame: Some(edge_up::Frame::Hello(Node {
                            id: "cm-test".into(),
                            role: Role::ConnectionManager as i32,
                            grpc_address: String::new(),
                            ..Default::default()
                        })),
                    };
                    let (up, _sender) = stream_of(hello);
                    RouterClient::new(channel).attach(up).await.map(drop)
                }
                Rpc::Process => {
                    let (up, _sender) = stream_of(SessionUp::default());
                    SessionClient::new(channel).process(up).await.map(drop)
                }
                Rpc::Logins => {
                    let (calls, _sender) = stream_of(credentials_call());
                    let mut answers = SessionClient::new(channel)
                        .logins(calls)
                        .await?
                        .into_inner();
                    match answers.message().await? {
                        Some(_) => Ok(()),
                        None => Err(Status::aborted("the login stream ended unanswered")),
                    }
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, made)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")))
    }
}

/// A stream that sends `first` and stays open while the sender lives.
fn stream_of<T: Send + 'static>(first: T) -> (ReceiverStream<T>, mpsc::Sender<T>) {
    let (sender, receiver) = mpsc::channel(1);
    sender.try_send(first).unwrap();
    (ReceiverStream::new(receiver), sender)
}

fn credentials_call() -> LoginCall {
    LoginCall {
        id: 1,
        call: Some(login_call::Call::Credentials(CredentialsRequest {
            jid: "nobody@localhost".into(),
        })),
        ..Default::default()
    }
}

/// How a test caller reaches a node: plain text, or TLS with the client
/// certificate `certificate` (none: TLS without one). It trusts any server:
/// what is tested is the server's refusal.
fn channel(address: SocketAddr, tls: Option<Option<&RoleCertificate>>) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).unwrap();
    let Some(certificate) = tls else {
        return endpoint.connect_lazy();
    };
    let mut config: ClientConfig = (*xmppd_tls::insecure_client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    if let Some(issued) = certificate {
        config.client_auth_cert_resolver = Arc::new(SingleCertAndKey::from(certified(issued)));
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
        let connector = connector.clone();
        async move {
            let socket = tokio::net::TcpStream::connect(address).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let stream = connector.connect(name, socket).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    }))
}

fn certified(certificate: &RoleCertificate) -> CertifiedKey {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes()).unwrap();
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).unwrap()
}

fn cluster_ca(nodes: &Nodes) -> ClusterCa {
    ClusterCa::load(&nodes.dir.join("cluster-tls")).unwrap()
}

async fn refusals(nodes: Nodes) {
    let session = nodes.session(1);
    session.ready().await;
    let router = nodes.router(None);
    router.ready().await;
    let ca = cluster_ca(&nodes);
    let other_ca = ClusterCa::generate("another CA").unwrap();
    let manager = ca.issue(Role::ConnectionManager, ANY_NODE).unwrap();
    let router_cert = ca.issue(Role::Router, ANY_NODE).unwrap();
    let replica = ca.issue(Role::Session, ANY_NODE).unwrap();
    let foreign_manager = other_ca.issue(Role::ConnectionManager, ANY_NODE).unwrap();

    // Certificates from the cluster CA: each role may make exactly its calls.
    let allowed: [(&str, &RoleCertificate, &[Rpc]); 3] = [
        ("connection-manager", &manager, &[Rpc::Attach, Rpc::Logins]),
        ("router", &router_cert, &[Rpc::Process]),
        ("session", &replica, &[]),
    ];
    for (role, certificate, calls) in allowed {
        for rpc in EVERY_RPC {
            let address = rpc.server(&router, &session).grpc;
            let result = rpc.call(channel(address, Some(Some(certificate)))).await;
            if calls.contains(&rpc) {
                assert!(result.is_ok(), "a {role} calling {rpc:?}: {result:?}");
            } else {
                let status = result.expect_err(&format!("a {role} called {rpc:?}"));
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "a {role} calling {rpc:?}: {status:?}"
                );
            }
        }
    }

    // No certificate from the cluster CA: no call gets past the handshake.
    let strangers: [(&str, Option<Option<&RoleCertificate>>); 3] = [
        ("plain text", None),
        ("no client certificate", Some(None)),
        (
            "a certificate from another CA",
            Some(Some(&foreign_manager)),
        ),
    ];
    for (who, tls) in strangers {
        for rpc in EVERY_RPC {
            let address = rpc.server(&router, &session).grpc;
            let result = rpc.call(channel(address, tls)).await;
            let status = result.expect_err(&format!("{who}: {rpc:?} was served"));
            assert_ne!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
        }
    }
    // Each of those calls was at least one connection its server refused
    // (a plain-text caller tries again).
    for server in [&router, &session] {
        let calls = EVERY_RPC
            .iter()
            .filter(|rpc| rpc.server(&router, &session).pid() == server.pid())
            .count();
        // The server logs a refusal after the caller has seen it: wait for the last lines.
        let wanted = calls * strangers.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let refused = server.log().matches("tls handshake failed").count();
            if refused >= wanted || Instant::now() > deadline {
                break refused;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            refused >= wanted,
            "{refused} refused handshakes; log:\n{}",
            server.log()
        );
    }
}

/// A session service that serves nothing and counts what reaches it.
#[derive(Clone, Default)]
struct Recorder {
    streams: Arc<AtomicUsize>,
    frames: Arc<AtomicUsize>,
}

impl Recorder {
    fn count<T: Send + 'static>(&self, mut incoming: Streaming<T>) {
        self.streams.fetch_add(1, Ordering::SeqCst);
        let frames = self.frames.clone();
        tokio::spawn(async move {
            while let Ok(Some(_)) = incoming.message().await {
                frames.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    fn reached(&self) -> (usize, usize) {
        (
            self.streams.load(Ordering::SeqCst),
            self.frames.load(Ordering::SeqCst),
        )
    }
}

type Silence<T> = futures::stream::Pending<Result<T, Status>>;

#[tonic::async_trait]
impl Session for Recorder {
    type ProcessStream = Silence<SessionDown>;
    type LoginsStream = Silence<LoginAnswer>;

    async fn process(
        &self,
        request: Request<Streaming<SessionUp>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        self.count(request.into_inner());
        Ok(Response::new(futures::stream::pending()))
    }

    async fn logins(
        &self,
        request: Request<Streaming<LoginCall>>,
    ) -> Result<Response<Self::LoginsStream>, Status> {
        self.count(request.into_inner());
        Ok(Response::new(futures::stream::pending()))
    }
}

/// A gRPC server in this process that presents `issued` (with `ca`'s
/// certificate as its trust anchor) and records what reaches it.
async fn start_recorder(
    dir: &Path,
    ca: &ClusterCa,
    issued: &RoleCertificate,
    role: Role,
    node: &str,
) -> (SocketAddr, Recorder) {
    ca.write_secret_dir(dir, issued).unwrap();
    let tls = ClusterTls::load(CertPaths::in_dir(dir), role, node).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    let service = SessionServer::new(recorder.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(xmppd_cluster_tls::server::incoming(listener, tls)),
    );
    (address, recorder)
}

/// Whether `server` logged `message` about the node `id`.
fn logged(server: &Server, message: &str, id: &str) -> bool {
    server
        .log()
        .lines()
        .any(|line| line.contains(message) && line.contains(id))
}

/// Keeps `node` registered as a live session replica until the task is aborted.
fn advertise(registry: xmppd_registry::SharedRegistry, node: Node) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            registry.heartbeat(&node, NODE_TTL).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn impostors(nodes: Nodes) {
    let session = nodes.session(1);
    session.ready().await;
    session.add_user("alice", "alice-pw");
    let router = nodes.router(None);
    router.ready().await;
    let cm = nodes.connection_manager(1);
    cm.ready().await;
    let registry = xmppd_registry::connect(
        Some(&nodes.backing.redis_url),
        &Default::default(),
        &nodes.backing.key_prefix,
        Caching::Off,
    )
    .await
    .unwrap();
    let ca = cluster_ca(&nodes);
    let other_ca = ClusterCa::generate("another CA").unwrap();

    // Each registered as a session replica; (the CA it comes from, its
    // certificate, the role and node that certificate names).
    let impostors = [
        (
            "session-fake-1",
            &ca,
            ca.issue(Role::Router, ANY_NODE).unwrap(),
            Role::Router,
            ANY_NODE,
        ),
        (
            "session-fake-2",
            &ca,
            ca.issue(Role::Session, "session-9").unwrap(),
            Role::Session,
            "session-9",
        ),
        (
            "session-fake-3",
            &other_ca,
            other_ca.issue(Role::Session, ANY_NODE).unwrap(),
            Role::Session,
            ANY_NODE,
        ),
    ];
    for (id, issuer, issued, role, named) in &impostors {
        let dir = nodes.dir.join(id);
        let (address, recorder) = start_recorder(&dir, issuer, issued, *role, named).await;
        let entry = Node {
            id: id.to_string(),
            role: Role::Session as i32,
            grpc_address: format!("http://{address}"),
            ..Default::default()
        };
        let advertised = advertise(registry.clone(), entry);
        // The connection-manager and the router follow the registry every
        // heartbeat: they try the entry, and refuse its certificate.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(logged(&cm, "cannot open a login stream", id)
            && logged(&router, "cannot open session stream", id))
        {
            assert!(
                Instant::now() < deadline,
                "{id} was never tried; cm log:\n{}",
                cm.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Logins carry on with the real replica.
        let client = RawClient::login(cm.c2s, "alice", "alice-pw", id).await;
        drop(client);
        assert_eq!(recorder.reached(), (0, 0), "{id} was given traffic");
        advertised.abort();
        registry.deregister(id).await.unwrap();
    }

    // The same with a certificate that names the entry's role and node: it
    // is trusted, so the test above could see traffic reach an impostor.
    let id = "session-fake-4";
    let issued = ca.issue(Role::Session, id).unwrap();
    let (address, recorder) =
        start_recorder(&nodes.dir.join(id), &ca, &issued, Role::Session, id).await;
    let _advertised = advertise(
        registry.clone(),
        Node {
            id: id.into(),
            role: Role::Session as i32,
            grpc_address: format!("http://{address}"),
            ..Default::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorder.reached().0 < 2 {
        assert!(
            Instant::now() < deadline,
            "a genuine replica got no streams"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn renewal(nodes: Nodes) {
    let storage = format!(
        "[storage]\nurl = \"{}\"\n[cluster_tls]\nreload_ms = 200\n",
        nodes.backing.storage_url()
    );
    let session = nodes.start("session", "session-1", &storage, None);
    session.ready().await;
    let replica = Node {
        id: "session-1".into(),
        role: Role::Session as i32,
        grpc_address: format!("http://{}", session.grpc),
        ..Default::default()
    };
    let old_manager = connector(&nodes.dir.join("cm-old"), &cluster_ca(&nodes));
    assert_eq!(logins(&old_manager, &replica).await, Ok(()));

    // A new CA, and the replica's certificate from it, where it reads them.
    let new_ca = ClusterCa::generate("the next CA").unwrap();
    let renewed = new_ca.issue(Role::Session, ANY_NODE).unwrap();
    new_ca
        .write_secret_dir(&nodes.certs_dir("session"), &renewed)
        .unwrap();
    let new_manager = connector(&nodes.dir.join("cm-new"), &new_ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    while logins(&new_manager, &replica).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "not reloaded; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(session.log().contains("cluster certificate reloaded"));
    assert!(
        logins(&old_manager, &replica).await.is_err(),
        "the old CA is still trusted"
    );

    // A key that does not match the certificate is not loaded: the renewed
    // pair stays in use.
    let stray = new_ca.issue(Role::Session, ANY_NODE).unwrap();
    std::fs::write(nodes.certs_dir("session").join("tls.key"), stray.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !session.log().contains("not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no complaint; log:\n{}",
            session.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logins(&new_manager, &replica).await, Ok(()));
}

/// The connector of a connection-manager whose certificate `ca` issued.
fn connector(dir: &Path, ca: &ClusterCa) -> MutualTlsConnector {
    let issued = ca.issue(Role::ConnectionManager, ANY_NODE).unwrap();
    ca.write_secret_dir(dir, &issued).unwrap();
    let tls = ClusterTls::load(CertPaths::in_dir(dir), Role::ConnectionManager, "cm-test").unwrap();
    MutualTlsConnector::new(tls)
}

/// One login call on a fresh connection to `replica`.
async fn logins(connector: &MutualTlsConnector, replica: &Node) -> Result<(), Code> {
    let (sender, calls) = mpsc::channel(1);
    sender.try_send(credentials_call()).unwrap();
    let answered = async {
        let mut answers = connector.logins(replica, calls).await?;
        match answers.next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(status)) => Err(status),
            None => Err(Status::aborted("ended unanswered")),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, answered).await {
        Ok(result) => result.map_err(|status| status.code()),
        Err(_) => Err(Code::DeadlineExceeded),
    }
}

#[test]
fn a_node_with_unusable_certificates_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("cluster-tls");
    let (status, output) = run_xmppd(&["certs", "init", "--dir", certs.to_str().unwrap()], &[]);
    assert!(status.success(), "{output}");
    let (status, output) = run_xmppd(&["certs", "init", "--dir", certs.to_str().unwrap()], &[]);
    assert!(
        !status.success() && output.contains("already exists"),
        "{output}"
    );

    let ca = ClusterCa::load(&certs).unwrap();
    let mismatched = dir.path().join("mismatched");
    ca.write_secret_dir(&mismatched, &ca.issue(Role::Router, ANY_NODE).unwrap())
        .unwrap();
    let stray_key = ca.issue(Role::Router, ANY_NODE).unwrap().key_pem;
    std::fs::write(mismatched.join("tls.key"), stray_key).unwrap();
    let foreign = dir.path().join("foreign");
    ClusterCa::generate("another CA")
        .unwrap()
        .write_secret_dir(&foreign, &ca.issue(Role::Router, ANY_NODE).unwrap())
        .unwrap();
    let other_node = dir.path().join("other-node");
    let absent = dir.path().join("absent");
    let (status, output) = run_xmppd(
        &[
            "certs",
            "issue",
            "--role",
            "router",
            "--node",
            "router-2",
            "--dir",
            absent.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !status.success() && output.contains("cannot read"),
        "{output}"
    );
    let (status, output) = run_xmppd(
        &[
            "certs",
            "issue",
            "--role",
            "router",
            "--node",
            "router-2",
            "--dir",
            certs.to_str().unwrap(),
            "--out",
            other_node.to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{output}");
    let (status, output) = run_xmppd(&["certs", "issue", "--role", "admin", "--node", "x"], &[]);
    assert!(
        !status.success() && output.contains("not a role"),
        "{output}"
    );

    let cases = [
        (absent, "cannot read"),
        (mismatched, "do not belong together"),
        (
            certs.join("session"),
            "is for a session, but this process is a router",
        ),
        (foreign, "is not valid under the cluster CA"),
        (other_node, "does not name this node \"router-1\""),
    ];
    for (tls_dir, complaint) in cases {
        let (status, output) = run_xmppd(
            &["router"],
            &[
                ("XMPPD_CLUSTER_TLS__DIR", tls_dir.to_str().unwrap()),
                ("XMPPD_CLUSTER__NODE_ID", "router-1"),
                ("XMPPD_REGISTRY__URL", "redis://127.0.0.1:6379"),
                ("XMPPD_LISTEN__GRPC", "127.0.0.1:0"),
                ("XMPPD_OBSERVABILITY__HTTP", ""),
            ],
        );
        assert!(
            !status.success(),
            "started with {}: {output}",
            tls_dir.display()
        );
        assert!(
            output.contains(complaint),
            "expected {complaint:?} in: {output}"
        );
    }
}

/// Runs `xmppd args` to its end (killed after 20 s): its status, and what
/// it wrote to stdout and stderr.
fn run_xmppd(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = support::xmppd()
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}
