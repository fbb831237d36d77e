//! The session replicas this node asks directly, without a router in
//! between, for what a login needs: an account's credentials, its
//! registration and the binding of a resource.
//!
//! Every live replica gets one `Session.Logins` stream from this node, and
//! every login's calls ride those streams, each call tagged with an id that
//! its answer carries back: a login then costs the replica no HTTP/2 stream
//! of its own, and many logins share each write and wake-up.
//!
//! Any replica can answer these calls: they read the store, or change it
//! and the registry atomically. The account's owner by rendezvous hash is
//! asked first, so the calls spread over the replicas as the accounts do;
//! when its stream ends before it answers (the replica died or restarted),
//! the next replicas in rendezvous order are asked. A replica's own refusal
//! is the answer, `Unavailable` included (its store or registry failing):
//! every replica shares those, so asking each in turn would only multiply
//! the load on what is failing. So is a replica's silence past the call
//! timeout, with its stream still open: it may yet carry the call out, so
//! asking another could register or bind twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::Status;
use tracing::Instrument;
use xmppd_grpc::{Connector, FrameStream, LoginAnswer, LoginCall, Node, login_answer, login_call};
use xmppd_registry::membership;
use xmppd_runtime::{traced_span, traces};

/// Login calls queued towards one replica before logins wait.
const CALL_BUFFER: usize = 1024;

pub struct Replicas {
    connector: Arc<dyn Connector>,
    /// How long a call waits for its answer on an open stream.
    call_timeout: Duration,
    // A std lock, never held across an await; shared with the tasks that
    // read the streams, which retire their link when it ends.
    members: Arc<RwLock<Members>>,
}

#[derive(Default)]
struct Members {
    /// The replicas with an open stream, sorted by id, so that every node
    /// ranks the same list.
    nodes: Vec<Node>,
    links: HashMap<String, Arc<LoginLink>>,
}

/// The login stream to one replica.
struct LoginLink {
    node: Node,
    calls: mpsc::Sender<LoginCall>,
    next_id: AtomicU64,
    /// The calls waiting for their answer, by id; `None` once the stream
    /// has ended, so that no call is left waiting on it.
    waiting: Mutex<Option<HashMap<u64, oneshot::Sender<login_answer::Answer>>>>,
}

impl Replicas {
    pub fn new(connector: Arc<dyn Connector>, call_timeout: Duration) -> Self {
        Replicas {
            connector,
            call_timeout,
            members: Arc::default(),
        }
    }

    /// The replicas a login can be served by now.
    pub fn count(&self) -> usize {
        self.members.read().expect("replicas lock").nodes.len()
    }

    /// Takes the live replicas from the registry: opens a stream to each
    /// one that has none (new, or its last stream ended) and closes those
    /// of replicas that left, once their calls in flight are answered.
    pub async fn update(&self, live: &[Node]) {
        let new: Vec<Node> = {
            let mut members = self.members.write().expect("replicas lock");
            let changes = membership::changes(members.links.values().map(|link| &link.node), live);
            for id in &changes.left {
                tracing::info!(replica = %id, "session replica left");
                members.links.remove(id);
            }
            members.refresh_nodes();
            changes.joined.into_iter().cloned().collect()
        };
        for node in new {
            if let Err(status) = self.open(node.clone()).await {
                tracing::warn!(replica = %node.id, %status, "cannot open a login stream to session replica");
            }
        }
    }

    async fn open(&self, node: Node) -> Result<(), Status> {
        let (calls, rx) = mpsc::channel(CALL_BUFFER);
        let answers = self.connector.logins(&node, rx).await?;
        let link = Arc::new(LoginLink {
            node: node.clone(),
            calls,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(Some(HashMap::new())),
        });
        let mut members = self.members.write().expect("replicas lock");
        members.links.insert(node.id.clone(), link.clone());
        members.refresh_nodes();
        drop(members);
        tracing::info!(replica = %node.id, "login calls may go to session replica");
        // The reader holds the link weakly: once the registry drops the
        // replica and no call waits on it, the link and its sender go, which
        // ends the stream.
        let reader = read_answers(
            Arc::downgrade(&self.members),
            Arc::downgrade(&link),
            node.id,
            answers,
        );
        tokio::spawn(reader);
        Ok(())
    }

    /// Makes `call` on the replica owning `account`, or on the next ones in
    /// rendezvous order while a replica's stream ends before it answers. A
    /// replica's refusal is returned as the status it carries; its silence
    /// past the call timeout as `DeadlineExceeded`.
    pub async fn call(
        &self,
        account: &str,
        call: login_call::Call,
    ) -> Result<login_answer::Answer, Status> {
        let span = traced_span!("login.call", call = call.name());
        self.call_in_span(account, call).instrument(span).await
    }

    /// [`Replicas::call`] inside its span.
    async fn call_in_span(
        &self,
        account: &str,
        call: login_call::Call,
    ) -> Result<login_answer::Answer, Status> {
        for link in self.ranked(account) {
            match link.call(call.clone(), self.call_timeout).await {
                Ok(login_answer::Answer::Refused(refusal)) => return Err(refusal.into()),
                Ok(answer) => return Ok(answer),
                Err(Unanswered::TimedOut) => {
                    return Err(Status::deadline_exceeded(format!(
                        "session replica {} did not answer within {:?}",
                        link.node.id, self.call_timeout
                    )));
                }
                Err(Unanswered::StreamEnded) => tracing::warn!(
                    %account,
                    replica = %link.node.id,
                    "session replica went away before it answered, trying the next"
                ),
            }
        }
        Err(Status::unavailable("no session replica is reachable"))
    }

    fn ranked(&self, account: &str) -> Vec<Arc<LoginLink>> {
        let members = self.members.read().expect("replicas lock");
        membership::ranked(account, &members.nodes)
            .into_iter()
            .filter_map(|node| members.links.get(&node.id).cloned())
            .collect()
    }
}

impl Members {
    fn refresh_nodes(&mut self) {
        let mut nodes: Vec<Node> = self.links.values().map(|link| link.node.clone()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        self.nodes = nodes;
    }
}

/// Why a call on a login stream went unanswered.
enum Unanswered {
    /// The stream ended first: the replica died, restarted or left.
    StreamEnded,
    /// The stream is open, but the answer did not come in time.
    TimedOut,
}

impl LoginLink {
    /// The replica's answer to `call` within `timeout`.
    async fn call(
        &self,
        call: login_call::Call,
        timeout: Duration,
    ) -> Result<login_answer::Answer, Unanswered> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.waiting
            .lock()
            .expect("waiting lock")
            .as_mut()
            .ok_or(Unanswered::StreamEnded)?
            .insert(id, answer);
        let call = LoginCall {
            id,
            call: Some(call),
            trace_context: traces::current(),
        };
        let sent_and_answered = async {
            self.calls
                .send(call)
                .await
                .map_err(|_| Unanswered::StreamEnded)?;
            answered.await.map_err(|_| Unanswered::StreamEnded)
        };
        let outcome = tokio::time::timeout(timeout, sent_and_answered)
            .await
            .unwrap_or(Err(Unanswered::TimedOut));
        if outcome.is_err() {
            // No answer is coming, or it comes too late for anyone to read.
            self.answered(id);
        }
        outcome
    }

    /// Takes the caller waiting for the answer to call `id`, if it still is.
    fn answered(&self, id: u64) -> Option<oneshot::Sender<login_answer::Answer>> {
        self.waiting
            .lock()
            .expect("waiting lock")
            .as_mut()?
            .remove(&id)
    }
}

/// Hands each answer on `answers` to its caller until the stream ends, then
/// fails the calls still waiting (their callers ask the next replica) and
/// retires the link: the next registry update opens a new stream if the
/// replica is still live.
async fn read_answers(
    members: Weak<RwLock<Members>>,
    link: Weak<LoginLink>,
    replica: String,
    mut answers: FrameStream<LoginAnswer>,
) {
    loop {
        match answers.next().await {
            Some(Ok(LoginAnswer {
                id,
                answer: Some(answer),
            })) => {
                if let Some(caller) = link.upgrade().and_then(|link| link.answered(id)) {
                    let _ = caller.send(answer);
                }
            }
            Some(Ok(LoginAnswer { answer: None, .. })) => {}
            None => break,
            Some(Err(status)) => {
                tracing::warn!(%replica, %status, "login stream failed");
                break;
            }
        }
    }
    let (Some(link), Some(members)) = (link.upgrade(), members.upgrade()) else {
        return;
    };
    link.waiting.lock().expect("waiting lock").take();
    let mut members = members.write().expect("replicas lock");
    let current = members
        .links
        .get(&link.node.id)
        .is_some_and(|current| Arc::ptr_eq(current, &link));
    if current {
        members.links.remove(&link.node.id);
        members.refresh_nodes();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::future::BoxFuture;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Code, Request, Response, Streaming};
    use xmppd_grpc::session_server::{Session, SessionServer};
    use xmppd_grpc::{
        CredentialsRequest, LoginRefusal, RemoteConnector, Role, SessionDown, SessionUp,
    };

    use super::*;

    const TEST_TIMEOUT: Duration = Duration::from_secs(5);

    fn replica(id: &str, grpc_address: &str) -> Node {
        Node {
            id: id.into(),
            role: Role::Session as i32,
            grpc_address: grpc_address.into(),
            ..Default::default()
        }
    }

    async fn credentials(replicas: &Replicas) -> Result<login_answer::Answer, Status> {
        let request = CredentialsRequest {
            jid: "ann@example.org".into(),
        };
        replicas
            .call("ann@example.org", login_call::Call::Credentials(request))
            .await
    }

    /// How a [`Broken`] replica fails the calls it receives.
    #[derive(Clone, Copy, Default)]
    enum Failure {
        /// Answers each with `Unavailable`, as one whose store is down does.
        #[default]
        Refuses,
        /// Ends its stream at the first call without answering, as one that
        /// dies does.
        EndsStream,
        /// Keeps its stream open and never answers, as one that hangs does.
        SitsOnCalls,
    }

    /// A replica that can serve nothing. It counts the calls it receives.
    #[derive(Clone, Default)]
    struct Broken {
        failure: Failure,
        received: Arc<AtomicUsize>,
        /// Login streams whose caller closed them.
        closed: Arc<AtomicUsize>,
    }

    impl Broken {
        fn failing(failure: Failure) -> Self {
            Broken {
                failure,
                ..Broken::default()
            }
        }
    }

    #[tonic::async_trait]
    impl Session for Broken {
        type ProcessStream = tokio_stream::Empty<Result<SessionDown, Status>>;
        type LoginsStream = ReceiverStream<Result<LoginAnswer, Status>>;

        async fn process(
            &self,
            _: Request<Streaming<SessionUp>>,
        ) -> Result<Response<Self::ProcessStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn logins(
            &self,
            request: Request<Streaming<LoginCall>>,
        ) -> Result<Response<Self::LoginsStream>, Status> {
            let mut calls = request.into_inner();
            let (answers, rx) = mpsc::channel(16);
            let replica = self.clone();
            tokio::spawn(async move {
                while let Some(Ok(call)) = calls.next().await {
                    replica.received.fetch_add(1, Ordering::SeqCst);
                    match replica.failure {
                        Failure::Refuses => {}
                        Failure::EndsStream => return,
                        Failure::SitsOnCalls => continue,
                    }
                    let refusal = LoginRefusal::from(Status::unavailable("storage: refused"));
                    let answer = LoginAnswer {
                        id: call.id,
                        answer: Some(login_answer::Answer::Refused(refusal)),
                    };
                    let _ = answers.send(Ok(answer)).await;
                }
                replica.closed.fetch_add(1, Ordering::SeqCst);
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
    }

    async fn serve(replica: Broken) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SessionServer::new(replica))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        format!("http://{address}")
    }

    /// Replicas serving `first` as the one "ann@example.org" is asked of
    /// first, and `next` as the other; and the first one's id.
    async fn first_and_next(
        first: &Broken,
        next: &Broken,
        timeout: Duration,
    ) -> (Replicas, String) {
        let candidates = [replica("s1", ""), replica("s2", "")];
        let owner = membership::owner("ann@example.org", &candidates)
            .unwrap()
            .id
            .clone();
        let other = if owner == "s1" { "s2" } else { "s1" };
        let replicas = Replicas::new(Arc::new(RemoteConnector), timeout);
        replicas
            .update(&[
                replica(&owner, &serve(first.clone()).await),
                replica(other, &serve(next.clone()).await),
            ])
            .await;
        (replicas, owner)
    }

    fn ids(replicas: &Replicas) -> Vec<String> {
        let members = replicas.members.read().unwrap();
        members.nodes.iter().map(|n| n.id.clone()).collect()
    }

    #[tokio::test]
    async fn with_no_replica_a_call_is_unavailable() {
        let replicas = Replicas::new(Arc::new(RemoteConnector), TEST_TIMEOUT);
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }

    /// A live member of the registry that nothing listens for serves no
    /// login, and makes none wait for it.
    #[tokio::test]
    async fn an_unreachable_replica_is_no_member() {
        let replicas = Replicas::new(Arc::new(RemoteConnector), TEST_TIMEOUT);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        replicas
            .update(&[replica("s1", &format!("http://{address}"))])
            .await;
        assert_eq!(replicas.count(), 0);
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }

    /// A replica's own `Unavailable` is its answer: the call is not made again
    /// on the next replica, which shares the store that failed.
    #[tokio::test]
    async fn a_replica_that_answers_is_not_passed_over() {
        let broken = Broken::default();
        let replicas = Replicas::new(Arc::new(RemoteConnector), TEST_TIMEOUT);
        replicas
            .update(&[
                replica("s1", &serve(broken.clone()).await),
                replica("s2", &serve(broken.clone()).await),
            ])
            .await;
        assert_eq!(replicas.count(), 2);
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert_eq!(status.message(), "storage: refused");
        assert_eq!(broken.received.load(Ordering::SeqCst), 1);
    }

    /// A replica that goes away with a call unanswered leaves it to the next
    /// one, and the logins after it no longer wait for it.
    #[tokio::test]
    async fn a_call_its_replica_never_answers_goes_to_the_next() {
        let silent = Broken::failing(Failure::EndsStream);
        let answering = Broken::default();
        let (replicas, silent_id) = first_and_next(&silent, &answering, TEST_TIMEOUT).await;
        let status = credentials(&replicas).await.unwrap_err();
        assert_eq!(status.message(), "storage: refused");
        assert_eq!(silent.received.load(Ordering::SeqCst), 1);
        assert_eq!(answering.received.load(Ordering::SeqCst), 1);
        assert!(!ids(&replicas).contains(&silent_id));
        assert_eq!(replicas.count(), 1);
        credentials(&replicas).await.unwrap_err();
        assert_eq!(silent.received.load(Ordering::SeqCst), 1);
        assert_eq!(answering.received.load(Ordering::SeqCst), 2);
    }

    /// A replica that keeps its stream open but never answers holds a login
    /// no longer than the call timeout, and the call is not made again on
    /// another replica, where it could take effect twice.
    #[tokio::test]
    async fn a_call_its_replica_sits_on_times_out() {
        let hung = Broken::failing(Failure::SitsOnCalls);
        let answering = Broken::default();
        let timeout = Duration::from_millis(200);
        let (replicas, owner) = first_and_next(&hung, &answering, timeout).await;
        let started = std::time::Instant::now();
        let status = tokio::time::timeout(TEST_TIMEOUT, credentials(&replicas))
            .await
            .expect("the call waits past its timeout")
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert!(started.elapsed() >= timeout);
        assert_eq!(hung.received.load(Ordering::SeqCst), 1);
        assert_eq!(answering.received.load(Ordering::SeqCst), 0);
        let link = replicas.members.read().unwrap().links[&owner].clone();
        let waiting = link.waiting.lock().unwrap().as_ref().map(HashMap::len);
        assert_eq!(waiting, Some(0), "the timed-out call is still waiting");
    }

    /// A replica in this process that takes its login stream and never reads
    /// it, as one whose transport stalls: the test reads the calls queued.
    #[derive(Default)]
    struct Unread {
        calls: Mutex<Option<mpsc::Receiver<LoginCall>>>,
    }

    impl Connector for Unread {
        fn logins(
            &self,
            _: &Node,
            calls: mpsc::Receiver<LoginCall>,
        ) -> BoxFuture<'static, Result<FrameStream<LoginAnswer>, Status>> {
            *self.calls.lock().unwrap() = Some(calls);
            Box::pin(async { Ok(Box::pin(futures::stream::pending()) as FrameStream<_>) })
        }
    }

    /// Waits until `CALL_BUFFER` calls are queued on `calls`.
    async fn full(calls: &mpsc::Receiver<LoginCall>) -> Result<(), tokio::time::error::Elapsed> {
        tokio::time::timeout(TEST_TIMEOUT, async {
            while calls.len() < CALL_BUFFER {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// `CALL_BUFFER` calls queue towards a replica that does not take them;
    /// the next login waits for room, and goes out as soon as there is some.
    #[tokio::test]
    async fn calls_past_the_buffer_wait_for_room() {
        let unread = Arc::new(Unread::default());
        let replicas = Arc::new(Replicas::new(unread.clone(), TEST_TIMEOUT));
        replicas.update(&[replica("s1", "")]).await;
        for _ in 0..=CALL_BUFFER {
            let replicas = replicas.clone();
            tokio::spawn(async move { credentials(&replicas).await });
        }
        let mut calls = unread.calls.lock().unwrap().take().unwrap();
        full(&calls).await.expect("the buffer never filled");
        // The last call waits: give it every chance to get in.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.len(), CALL_BUFFER);
        let first = calls.recv().await.unwrap();
        full(&calls)
            .await
            .expect("the waiting call did not take the room made");
        let mut ids = vec![first.id];
        while let Ok(call) = calls.try_recv() {
            ids.push(call.id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=CALL_BUFFER as u64 + 1).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn members_are_kept_sorted_and_follow_the_registry() {
        let replicas = Replicas::new(Arc::new(RemoteConnector), TEST_TIMEOUT);
        let (a, b) = (
            replica("s1", &serve(Broken::default()).await),
            replica("s2", &serve(Broken::default()).await),
        );
        replicas.update(&[b.clone(), a.clone()]).await;
        assert_eq!(ids(&replicas), ["s1", "s2"]);
        replicas.update(&[b]).await;
        assert_eq!(ids(&replicas), ["s2"]);
        assert_eq!(replicas.members.read().unwrap().links.len(), 1);
    }

    /// The stream to a replica that left the registry is closed, not kept
    /// open by the task reading it.
    #[tokio::test]
    async fn a_replica_that_left_has_its_stream_closed() {
        let broken = Broken::default();
        let replicas = Replicas::new(Arc::new(RemoteConnector), TEST_TIMEOUT);
        replicas
            .update(&[replica("s1", &serve(broken.clone()).await)])
            .await;
        credentials(&replicas).await.unwrap_err();
        replicas.update(&[]).await;
        let closed = async {
            while broken.closed.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), closed)
            .await
            .expect("the stream to a departed replica stays open");
    }
}
