//! The gRPC `Session` service, and the state one replica shares between its
//! workers.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use xmppd_grpc::session_server::Session;
use xmppd_grpc::{
    AccountPolicy, BindReply, BindRequest, BoundResource, CredentialsReply, CredentialsRequest,
    Kick, LoginAnswer, LoginCall, LoginRefusal, RegisterOutcome, RegisterReply, RegisterRequest,
    SessionDown, SessionUp, SetCredentialsReply, SetCredentialsRequest, bind_reply, login_answer,
    login_call, session_down,
};
use xmppd_protocol::jid::Jid;
use xmppd_registry::{SharedRegistry, Unbound};
use xmppd_runtime::reload::Live;
use xmppd_runtime::{traced_span, traces};
use xmppd_storage::{Store, StoreError};

use crate::clock::now_ms;
use crate::metrics::SessionMetrics;
use crate::module::Modules;
use crate::shards::{AckTracker, Job, RouterSender, Shards, Sink, Work, down};

/// Frames buffered towards one router before workers wait.
const STREAM_BUFFER: usize = 4096;
/// Login calls one connection-manager can have in flight on a replica;
/// further calls wait on its stream.
const LOGIN_CALLS_IN_FLIGHT: usize = 1024;

/// What a replica needs from the configuration. A reload replaces all but
/// `domain` and `node_id` ([`SessionService::reload`]); what is not
/// reloadable keeps its running value in the configuration itself.
#[derive(Clone, Debug)]
pub struct Settings {
    pub domain: String,
    pub node_id: String,
    /// XEP-0077 in-band registration allowed.
    pub registration: bool,
    /// PBKDF2 iterations of the SCRAM keys made here, for the passwords
    /// an administrator sets (admin API, ad-hoc commands); a client's own
    /// password is turned into keys at the edge.
    pub scram_iterations: u32,
    pub max_offline_messages: u32,
    /// Resources an account may have bound at once (0 = unlimited).
    pub max_resources_per_account: u32,
    /// Entities one resource may send directed presence to (0 = unlimited).
    pub max_directed_presences: u32,
    /// Contacts one roster may hold (0 = unlimited).
    pub max_roster_items: u32,
    /// Subscription requests one account may have waiting for its answer
    /// (0 = unlimited).
    pub max_pending_subscriptions: u32,
    /// The chat service (XEP-0045) the replica runs for the rooms it owns.
    pub muc: crate::muc::MucSettings,
}

/// State shared by a replica's workers.
pub struct Core {
    pub domain: String,
    /// Read through [`Core::settings`]; a reload replaces it.
    settings: Live<Settings>,
    pub store: Store,
    pub registry: SharedRegistry,
    pub metrics: SessionMetrics,
    pub started: Instant,
    pub modules: Modules,
    /// Open streams from routers; any of them can route what the replica
    /// produces on its own (kicks, clean-up after a dead node).
    routers: Mutex<Vec<RouterSender>>,
}

impl Core {
    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.get()
    }

    /// The account's routing policy from its modules, written into the
    /// registry (while the account has a resource; after a bind otherwise).
    /// Modules call it after changing what they contribute.
    pub async fn refresh_policy(&self, account: &str) -> anyhow::Result<AccountPolicy> {
        let mut policy = AccountPolicy::default();
        for module in self.modules.iter() {
            module.policy(self, account, &mut policy).await?;
        }
        self.registry.set_policy(account, &policy).await?;
        Ok(policy)
    }

    /// After a bind: the policy, unless the account already had one (it
    /// had a resource already, and every change since rewrote it).
    pub async fn load_policy(&self, account: &str) -> anyhow::Result<()> {
        if self.registry.account(account).await?.policy.is_none() {
            self.refresh_policy(account).await?;
        }
        Ok(())
    }

    /// Hands `frames` to one attached router; false (and nothing sent) when
    /// none is attached, or when its stream closed on the way.
    pub async fn send_to_any_router(&self, frames: Vec<session_down::Frame>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let router = {
            let mut routers = self.routers.lock().expect("routers lock");
            routers.retain(|router| !router.is_closed());
            routers.first().cloned()
        };
        let Some(router) = router else {
            tracing::warn!(frames = frames.len(), "no router attached, output dropped");
            return false;
        };
        for frame in frames {
            if router.send(Ok(down(frame))).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// The frames a replica sends back on one router's stream.
pub type RouterStream = ReceiverStream<Result<SessionDown, Status>>;

/// The answers a replica sends back on one connection-manager's login
/// stream.
pub type LoginAnswers = ReceiverStream<Result<LoginAnswer, Status>>;

/// A session replica. Cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    core: Arc<Core>,
    shards: Arc<Shards>,
}

impl SessionService {
    /// A replica running `modules`, whose tables must exist
    /// ([`Modules::migrate`]).
    pub fn new(
        settings: Settings,
        store: Store,
        registry: SharedRegistry,
        metrics: SessionMetrics,
        modules: Modules,
    ) -> Self {
        let core = Arc::new(Core {
            domain: settings.domain.clone(),
            settings: Live::new(settings),
            store,
            registry,
            metrics,
            started: Instant::now(),
            modules,
            routers: Mutex::default(),
        });
        let shards = Arc::new(Shards::start(core.clone()));
        SessionService { core, shards }
    }

    /// Applies reloaded settings to the next registration, password stored
    /// and offline message; the domain and node id stay as started.
    pub fn reload(&self, settings: Settings) {
        let running = self.core.settings();
        self.core.settings.set(Settings {
            domain: running.domain.clone(),
            node_id: running.node_id.clone(),
            ..settings
        });
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub fn shards(&self) -> &Arc<Shards> {
        &self.shards
    }

    /// `Session.Process` without its transport: `inbound` is a router's
    /// stream of frames, the result the stream of frames back to it (output
    /// and acknowledgements). The gRPC service hands it tonic's decoded
    /// stream; the all-in-one process, its router's frames as they are.
    pub fn process_frames<S>(&self, mut inbound: S) -> RouterStream
    where
        S: Stream<Item = Result<SessionUp, Status>> + Unpin + Send + 'static,
    {
        let (out, rx) = mpsc::channel(STREAM_BUFFER);
        self.core
            .routers
            .lock()
            .expect("routers lock")
            .push(out.clone());
        let shards = self.shards.clone();
        let core = self.core.clone();
        tokio::spawn(async move {
            let acks = Arc::new(AckTracker::default());
            loop {
                match inbound.next().await {
                    Some(Ok(up)) => {
                        let sink = Sink::Stream {
                            out: out.clone(),
                            acks: acks.clone(),
                            seq: up.seq,
                        };
                        shards
                            .dispatch(Job {
                                owner: up.owner,
                                work: up.frame.map(Work::Frame),
                                sink,
                                tries: 0,
                            })
                            .await;
                    }
                    None => break,
                    Some(Err(status)) => {
                        tracing::warn!(%status, "router stream failed");
                        break;
                    }
                }
            }
            // The router ended its stream (this replica left, or the router
            // is going): work the replica starts itself must not pick it, and
            // once the jobs in flight are answered the answers' stream ends
            // too, which a stopping replica's gRPC server waits for.
            core.routers
                .lock()
                .expect("routers lock")
                .retain(|router| !router.same_channel(&out));
        });
        ReceiverStream::new(rx)
    }

    /// `Session.Logins` without its transport: `calls` is a
    /// connection-manager's stream of login calls, the result the stream of
    /// their answers. Each call runs as a task of its own and is answered
    /// when it is done, so a slow store write holds up no other login.
    pub fn login_calls<S>(&self, calls: S) -> LoginAnswers
    where
        S: Stream<Item = Result<LoginCall, Status>> + Unpin + Send + 'static,
    {
        self.login_calls_at_most(calls, LOGIN_CALLS_IN_FLIGHT)
    }

    /// [`SessionService::login_calls`] with at most `limit` calls in flight.
    fn login_calls_at_most<S>(&self, mut calls: S, limit: usize) -> LoginAnswers
    where
        S: Stream<Item = Result<LoginCall, Status>> + Unpin + Send + 'static,
    {
        let (out, rx) = mpsc::channel(limit);
        let service = self.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(limit));
            loop {
                let call = match calls.next().await {
                    Some(Ok(call)) => call,
                    None => break,
                    Some(Err(status)) => {
                        tracing::warn!(%status, "login stream failed");
                        break;
                    }
                };
                let Ok(slot) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let (service, out) = (service.clone(), out.clone());
                tokio::spawn(async move {
                    let answer = match call.call {
                        Some(answered) => {
                            let span = traced_span!("session.login", call = answered.name());
                            traces::follow(&span, &call.trace_context);
                            service.answer(answered).instrument(span).await
                        }
                        None => Err(Status::invalid_argument("a login call names no call")),
                    };
                    let answer = answer.unwrap_or_else(|status| {
                        login_answer::Answer::Refused(LoginRefusal::from(status))
                    });
                    let answer = LoginAnswer {
                        id: call.id,
                        answer: Some(answer),
                    };
                    let _ = out.send(Ok(answer)).await;
                    drop(slot);
                });
            }
        });
        ReceiverStream::new(rx)
    }

    /// RFC 6120 §7.7.2.2: the new session wins and the old one is closed.
    /// Its end, as any session's, tells its contacts and the recipients of
    /// its directed presence that it is gone: on the account's worker, in
    /// order with the account's other work (the new session tells them anew
    /// once it sends presence).
    async fn replace(&self, owner: &Jid, old: Unbound) {
        let session = &old.session;
        let kick = Kick {
            node_id: session.node_id.clone(),
            full_jid: session.full_jid.clone(),
            conn_id: session.conn_id,
            condition: "conflict".into(),
            text: "replaced by a new session".into(),
        };
        self.core
            .send_to_any_router(vec![session_down::Frame::Kick(kick)])
            .await;
        let job = Job {
            owner: owner.to_string(),
            work: Some(Work::Replaced(old)),
            sink: Sink::AnyRouter,
            tries: 0,
        };
        self.shards.dispatch(job).await;
    }

    /// RFC 6120 §7.6.2.1: whether `bare` has as many resources bound as it
    /// may, none of them `full` (which a new bind would replace). Two binds
    /// at once may both pass: the limit bounds an account's resources, it
    /// does not count them exactly.
    async fn too_many_resources(&self, bare: &Jid, full: &str) -> Result<bool, Status> {
        let max = self.core.settings().max_resources_per_account;
        if max == 0 {
            return Ok(false);
        }
        let bound = self
            .core
            .registry
            .resources(bare.as_str())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(bound.len() >= max as usize && !bound.iter().any(|r| r.full_jid == full))
    }

    /// The bare JID of a local account, or the reason it is not one.
    fn local_account(&self, jid: &str) -> Result<Jid, Status> {
        let jid = Jid::parse(jid).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if jid.node().is_none() || jid.resource().is_some() || jid.domain() != self.core.domain {
            return Err(Status::invalid_argument(format!(
                "{jid} is not a local account"
            )));
        }
        Ok(jid)
    }
}

fn storage_status(error: StoreError) -> Status {
    tracing::error!(%error, "storage failed");
    Status::unavailable(format!("storage: {error}"))
}

#[tonic::async_trait]
impl Session for SessionService {
    type ProcessStream = RouterStream;
    type LoginsStream = LoginAnswers;

    async fn process(
        &self,
        request: Request<Streaming<SessionUp>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        Ok(Response::new(self.process_frames(request.into_inner())))
    }

    async fn logins(
        &self,
        request: Request<Streaming<LoginCall>>,
    ) -> Result<Response<Self::LoginsStream>, Status> {
        Ok(Response::new(self.login_calls(request.into_inner())))
    }
}

/// The calls a login makes, each answered on its own.
impl SessionService {
    async fn answer(&self, call: login_call::Call) -> Result<login_answer::Answer, Status> {
        Ok(match call {
            login_call::Call::Credentials(request) => {
                login_answer::Answer::Credentials(self.credentials(request).await?)
            }
            login_call::Call::Register(request) => {
                login_answer::Answer::Register(self.register(request).await?)
            }
            login_call::Call::Bind(request) => {
                login_answer::Answer::Bind(self.bind(request).await?)
            }
            login_call::Call::SetCredentials(request) => {
                login_answer::Answer::SetCredentials(self.set_credentials(request).await?)
            }
        })
    }

    /// Keys the edge derived from a new password (XEP-0077) or from the
    /// password a login proved, stronger than the stored ones.
    async fn set_credentials(
        &self,
        request: SetCredentialsRequest,
    ) -> Result<SetCredentialsReply, Status> {
        let jid = self.local_account(&request.jid)?;
        let replaces = Some(request.replaces_stored_key.as_slice()).filter(|key| !key.is_empty());
        let changed = match self
            .core
            .store
            .set_credentials(jid.as_str(), &request.credentials, replaces)
            .instrument(traced_span!("store.set_credentials"))
            .await
        {
            Ok(()) => true,
            Err(StoreError::NotFound) => false,
            Err(error) => return Err(storage_status(error)),
        };
        if changed {
            tracing::info!(%jid, upgrade = replaces.is_some(), "credentials replaced");
        }
        Ok(SetCredentialsReply { changed })
    }

    async fn credentials(&self, request: CredentialsRequest) -> Result<CredentialsReply, Status> {
        let jid = self.local_account(&request.jid)?;
        let credentials = self
            .core
            .store
            .credentials(jid.as_str())
            .instrument(traced_span!("store.credentials"))
            .await
            .map_err(storage_status)?;
        Ok(CredentialsReply {
            found: !credentials.is_empty(),
            credentials,
        })
    }

    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, Status> {
        let reply = |outcome: RegisterOutcome| {
            Ok(RegisterReply {
                outcome: outcome as i32,
            })
        };
        if !self.core.settings().registration {
            return reply(RegisterOutcome::NotAllowed);
        }
        let jid = self.local_account(&request.jid)?;
        let credentials = request.credentials;
        match self
            .core
            .store
            .create_account(jid.as_str(), &credentials)
            .instrument(traced_span!("store.create_account"))
            .await
        {
            Ok(()) => {
                tracing::info!(%jid, "account registered");
                reply(RegisterOutcome::Created)
            }
            Err(StoreError::AlreadyExists) => reply(RegisterOutcome::Conflict),
            Err(error) => Err(storage_status(error)),
        }
    }

    async fn bind(&self, request: BindRequest) -> Result<BindReply, Status> {
        let bare = self.local_account(&request.bare_jid)?;
        let resource = if request.resource.is_empty() {
            generated_resource()
        } else {
            request.resource
        };
        let Ok(full) = bare.with_resource(&resource) else {
            return Ok(BindReply {
                outcome: Some(bind_reply::Outcome::ErrorCondition("bad-request".into())),
            });
        };
        if self.too_many_resources(&bare, full.as_str()).await? {
            return Ok(BindReply {
                outcome: Some(bind_reply::Outcome::ErrorCondition(
                    "resource-constraint".into(),
                )),
            });
        }
        let session = BoundResource {
            full_jid: full.to_string(),
            node_id: request.node_id.clone(),
            conn_id: request.conn_id,
            bound_at: now_ms(),
            origin: request.origin,
            ..Default::default()
        };
        let replaced = self
            .core
            .registry
            .bind(session)
            .instrument(traced_span!("registry.bind"))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.core.metrics.count("bound");
        let replaced = replaced.filter(|old| {
            old.session.node_id != request.node_id || old.session.conn_id != request.conn_id
        });
        if let Some(old) = replaced {
            self.replace(&bare, old).await;
        }
        // Queued before the answer, so before anything the client sends
        // once bound, which reaches the same worker after it.
        let job = Job {
            owner: bare.to_string(),
            work: Some(Work::Bound),
            sink: Sink::AnyRouter,
            tries: 0,
        };
        self.shards.dispatch(job).await;
        Ok(BindReply {
            outcome: Some(bind_reply::Outcome::FullJid(full.to_string())),
        })
    }
}

/// A resource nobody else will pick: 64 random bits.
fn generated_resource() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use sqlx::{Connection, Executor, SqliteConnection};
    use xmppd_grpc::{CredentialsRequest, RegisterRequest};
    use xmppd_registry::MemoryRegistry;

    use super::*;

    fn settings() -> Settings {
        Settings {
            domain: "example.org".into(),
            node_id: "s1".into(),
            registration: true,
            scram_iterations: 4096,
            max_offline_messages: 100,
            max_resources_per_account: 0,
            max_directed_presences: 0,
            max_roster_items: 0,
            max_pending_subscriptions: 0,
            muc: Default::default(),
        }
    }

    fn call(id: u64, call: login_call::Call) -> Result<LoginCall, Status> {
        Ok(LoginCall {
            id,
            call: Some(call),
            trace_context: Default::default(),
        })
    }

    fn register(id: u64, user: &str) -> Result<LoginCall, Status> {
        let request = RegisterRequest {
            jid: format!("{user}@example.org"),
            credentials: Vec::new(),
        };
        call(id, login_call::Call::Register(request))
    }

    /// `LOGIN_CALLS_IN_FLIGHT`: calls past the limit wait for a slot, even
    /// one that could be answered at once. Two registrations are held up by
    /// a write lock another connection keeps on the database; with a limit
    /// of two, a credential read behind them (which SQLite's write-ahead log
    /// would serve at once) is answered only once they are.
    #[tokio::test]
    async fn calls_past_the_limit_wait_for_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("xmppd.db").display());
        let store = Store::connect(&url, NonZeroU32::new(4).unwrap())
            .await
            .unwrap();
        let registry: SharedRegistry = Arc::new(MemoryRegistry::default());
        let modules = crate::modules::all(&Default::default(), Vec::new()).unwrap();
        let service = SessionService::new(
            settings(),
            store,
            registry,
            SessionMetrics::default(),
            modules,
        );
        let mut writer = SqliteConnection::connect(&url).await.unwrap();
        writer.execute("BEGIN IMMEDIATE").await.unwrap();

        let (calls, rx) = mpsc::channel(8);
        let mut answers = service.login_calls_at_most(ReceiverStream::new(rx), 2);
        calls.send(register(1, "ann")).await.unwrap();
        calls.send(register(2, "bob")).await.unwrap();
        let read = CredentialsRequest {
            jid: "ann@example.org".into(),
        };
        calls
            .send(call(3, login_call::Call::Credentials(read)))
            .await
            .unwrap();
        let early = tokio::time::timeout(Duration::from_millis(500), answers.next()).await;
        assert!(
            early.is_err(),
            "answered while both slots were taken: {early:?}"
        );

        writer.execute("COMMIT").await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(5), answers.next())
                .await
                .expect("an answer once the lock is gone")
                .unwrap()
                .unwrap();
            assert!(
                !matches!(answer.answer, Some(login_answer::Answer::Refused(_))),
                "{answer:?}"
            );
            ids.push(answer.id);
        }
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
    }
}
