//! The session registry: which resources are bound on which connection-manager,
//! their presence, the directed presence they sent, and which nodes are alive.
//!
//! # Layout
//!
//! - [`Registry`]: the one interface every service codes against.
//! - [`MemoryRegistry`]: for the all-in-one process, where nothing outlives it.
//! - [`RedisRegistry`]: for a cluster, where every node sees the same state.
//! - [`connect`]: picks one from a configuration URL, and whether a Redis
//!   registry caches its look-ups ([`Caching`]).
//!
//! Both implementations apply the same rules (private `rules` module) for what
//! bind, unbind and presence updates do to an entry, so they cannot drift apart.
//! The one rule Redis checks itself is unbind's "still held by this
//! connection", by the start of the entry's encoding, which spares the read
//! of every session end (`redis_registry.rs`, `Holder`).
//!
//! # Cached look-ups
//!
//! A router asks for the account (resources and policy) of the sender and of
//! the recipient of every stanza it routes. With [`Caching::On`],
//! [`RedisRegistry`] answers [`Registry::account`] from memory
//! (`lookup_cache.rs`, an [`xmppd_cache::Cache`]), kept decoded, shared by
//! reference, and emptied by Redis' server-assisted client-side caching:
//!
//! - The connection speaks RESP3 whatever the URL says (invalidations are
//!   RESP3 pushes). A miss sends `CLIENT TRACKING ON OPTIN`,
//!   `CLIENT CACHING YES` and the `HGETALL` in one write, so Redis remembers
//!   that this connection read that `res:` key and pushes an invalidation
//!   when anyone changes it; the entry is dropped and the next look-up
//!   reads Redis again. Tracking is asked for with every miss because a
//!   reconnected connection tracks nothing. Every other read, in particular
//!   the one of a compare-and-swap, goes to Redis untracked.
//! - A look-up is stored only if no invalidation arrived while it was
//!   fetched, so one that read the value before a change cannot outlive
//!   that change's (only) invalidation.
//! - Entries live at most `ttl`, and are swept once expired; at most
//!   `entries` are kept, and while that many live ones are held further
//!   look-ups are not kept.
//! - When the connection is lost, or Redis is flushed (a key-less
//!   invalidation), the whole cache is dropped; while Redis is unreachable
//!   look-ups fail as they do uncached, rather than answer from memory.
//!
//! The caveat, which is why session replicas and connection-managers (who
//! read to write) never cache: invalidation is an asynchronous push. Until
//! it arrives, a look-up may return an entry as it was before a change that
//! another node (or this very registry: Redis pushes a writer's
//! invalidation after its reply) has already seen acknowledged: a router
//! may route on a look-up up to one push latency old. `ttl` bounds a
//! look-up whose invalidation never came.
//!
//! # Redis key layout
//!
//! Every key starts with the configured prefix `{p}` (so that tests and
//! several deployments can share one Redis). Values are prost-encoded
//! [`xmppd_grpc`] messages.
//!
//! | key               | type   | content                                                      |
//! |-------------------|--------|--------------------------------------------------------------|
//! | `{p}res:{bare}`   | HASH   | resource → [`BoundResource`], and `""` → [`AccountPolicy`]; one `HGETALL` per look-up |
//! | `{p}sess:{node}`  | SET    | full JIDs bound on connection-manager `node`                 |
//! | `{p}nodes`        | SET    | node ids whose `sess:` set is not empty                      |
//! | `{p}hb:{node}`    | STRING | the [`Node`], expiring (`PX`) when its heartbeat stops       |
//! | `{p}role:{ROLE}`  | SET    | node ids that heartbeated with that role (`ROLE_ROUTER`, …)  |
//! | `{p}dir:{full}`   | SET    | JIDs `full` sent directed available presence to              |
//!
//! Invariants: a full JID is in `sess:{node}` exactly when its `res:` entry
//! names `node`, and `nodes` holds exactly the nodes with a non-empty `sess:`
//! set. Every write to a `res:` entry goes through one compare-and-swap Lua
//! script that updates all three together; when it deletes an entry, it
//! takes and deletes the entry's `dir:` set too, so that an unbind is one
//! round trip. The `""` field (no resource is empty) holds the account's
//! routing policy, written by its replica once the account has a resource
//! ([`Registry::set_policy`]); the script that deletes the last resource
//! deletes the key with it, so a policy lives exactly as long as the
//! account is online and is read by the same look-up (and cached and
//! invalidated with it). `role:` sets may name nodes whose heartbeat expired;
//! [`Registry::live_nodes`] prunes them.
//!
//! The scripts touch keys of several hash slots, so Redis Cluster is not
//! supported; a single primary (with replicas or Sentinel) is.

mod lookup_cache;
pub mod membership;
mod memory;
mod redis_registry;
mod rules;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use xmppd_protocol::JidRef;

pub use memory::MemoryRegistry;
pub use redis_registry::RedisRegistry;
pub use xmppd_cache::CacheStatistics;
pub use xmppd_grpc::{AccountPolicy, BoundResource, Node, ResourceFlags, Role};

/// An account as routing sees it: its bound resources and its policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Account {
    /// Sorted by full JID.
    pub resources: Vec<BoundResource>,
    /// `None` until the account's replica has written it
    /// ([`Registry::set_policy`]), which it does after the first bind.
    pub policy: Option<Arc<AccountPolicy>>,
}

/// A page of [`Registry::resources_page`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourcePage {
    pub resources: Vec<BoundResource>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

/// What [`Registry::unbind`] removed, or [`Registry::bind`] replaced.
#[derive(Clone, Debug, PartialEq)]
pub struct Unbound {
    pub session: BoundResource,
    /// Who got directed presence from it (RFC 6121 §4.6), sorted; forgotten
    /// with it, to be told it is gone.
    pub directed: Vec<String>,
    /// The account's policy when this was its last resource (the policy
    /// leaves the registry with it), for what is sent on the session's
    /// behalf once it is gone; `None` while other resources keep it.
    pub policy: Option<Arc<AccountPolicy>>,
}

/// The registry as services hold it: one instance shared by every task.
pub type SharedRegistry = Arc<dyn Registry>;

#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers a resource. Returns the session it replaced (same full JID,
    /// any node/conn), if any, with the recipients of its directed presence
    /// taken in the same step: the caller kicks that one with `<conflict/>`
    /// and tells them, and its contacts, that it is gone.
    async fn bind(&self, session: BoundResource) -> Result<Option<Unbound>, RegistryError>;

    /// Removes the resource only if it is still held by (`node_id`, `conn_id`)
    /// — a replaced connection's late unbind must not remove its replacement.
    /// The recipients of its directed presence are taken in the same step,
    /// so that a new session of the same full JID never loses its own.
    async fn unbind(
        &self,
        full_jid: &str,
        node_id: &str,
        conn_id: u64,
    ) -> Result<Option<Unbound>, RegistryError>;

    /// Updates availability, priority and last presence of a bound resource.
    /// `Ok(false)` (and no change) if `conn_id` does not hold it.
    async fn set_presence(
        &self,
        full_jid: &str,
        conn_id: u64,
        available: bool,
        priority: i32,
        presence: bytes::Bytes,
    ) -> Result<bool, RegistryError>;

    /// Updates the flags of a bound resource. `Ok(false)` (and no change) if
    /// `conn_id` does not hold it.
    async fn set_flags(
        &self,
        full_jid: &str,
        conn_id: u64,
        flags: ResourceFlags,
    ) -> Result<bool, RegistryError>;

    /// Writes the routing policy of an account that has a resource bound.
    /// `Ok(false)` (and nothing written) when it has none: the policy is
    /// written again after its next bind.
    async fn set_policy(
        &self,
        bare_jid: &str,
        policy: &AccountPolicy,
    ) -> Result<bool, RegistryError>;

    async fn session(&self, full_jid: &str) -> Result<Option<BoundResource>, RegistryError>;

    /// The resources (available or not) and policy of a bare JID
    /// (`user@domain`). With [`Caching::On`] this may be an invalidation push
    /// old (see "Cached look-ups").
    async fn account(&self, bare_jid: &str) -> Result<Arc<Account>, RegistryError>;

    /// The resources of [`Registry::account`], sorted by full JID.
    async fn resources(&self, bare_jid: &str) -> Result<Vec<BoundResource>, RegistryError> {
        Ok(self.account(bare_jid).await?.resources.clone())
    }

    /// Sessions bound on one node (to clean up after that node died), sorted
    /// by full JID.
    async fn resources_on_node(&self, node_id: &str) -> Result<Vec<BoundResource>, RegistryError>;

    /// One page of every bound resource, for administrators: the resources
    /// of at least `limit` accounts (fewer on the last page; Redis may give
    /// a few more) after `cursor` (empty: from the start), sorted by full
    /// JID within the page, and the cursor of the next page (`None` after
    /// the last). A cursor is opaque; one this registry did not make fails
    /// with [`RegistryError::BadCursor`].
    async fn resources_page(
        &self,
        cursor: &str,
        limit: usize,
    ) -> Result<ResourcePage, RegistryError>;

    async fn count_sessions(&self) -> Result<u64, RegistryError>;

    /// Directed presence (RFC 6121 §4.6): remembers that `full_jid` sent
    /// available presence to `to`, so that `to` gets unavailable presence
    /// when the session ends; unless it already remembers `max` others for
    /// `full_jid` (`max` 0: no limit), which returns false.
    async fn add_directed(&self, full_jid: &str, to: &str, max: u32)
    -> Result<bool, RegistryError>;

    async fn remove_directed(&self, full_jid: &str, to: &str) -> Result<(), RegistryError>;

    /// Returns (sorted) and forgets the directed-presence recipients of
    /// `full_jid`.
    async fn take_directed(&self, full_jid: &str) -> Result<Vec<String>, RegistryError>;

    /// Registers or refreshes a node. It counts as live until `ttl` (rounded
    /// to milliseconds, at least one) passes without another heartbeat.
    async fn heartbeat(&self, node: &Node, ttl: Duration) -> Result<(), RegistryError>;

    /// Marks a node as gone at once, as on a clean shutdown.
    async fn deregister(&self, node_id: &str) -> Result<(), RegistryError>;

    /// Live nodes of one role, sorted by id.
    async fn live_nodes(&self, role: Role) -> Result<Vec<Node>, RegistryError>;

    /// Ids (sorted) of the nodes that still own sessions but whose heartbeat
    /// expired, for the reaper to clean up.
    async fn dead_nodes_with_sessions(&self) -> Result<Vec<String>, RegistryError>;

    /// Hits, misses and invalidations of the look-up cache since connecting;
    /// `None` for a registry that does not cache (see "Cached look-ups").
    fn cache_statistics(&self) -> Option<CacheStatistics> {
        None
    }

    /// Exports the registry's own metrics: for Redis, its calls by operation
    /// (`xmppd_redis_call_seconds`, `xmppd_redis_call_errors_total`); the
    /// memory registry makes no calls and exports nothing.
    fn register_metrics(&self, _metrics: &mut prometheus_client::registry::Registry) {}
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// `tls` names certificates, but the URL is not `rediss://`.
    #[error("registry certificates are set, but the url is not rediss://")]
    TlsWithoutRediss,
    #[error("undecodable registry entry {key}: {source}")]
    Decode {
        key: String,
        source: prost::DecodeError,
    },
    /// Writers kept changing the entry between our read and our write.
    #[error("registry entry {0} kept changing, gave up")]
    Contended(String),
    /// A page cursor this registry did not hand out.
    #[error("not a cursor of this registry")]
    BadCursor,
}

/// The certificates of a `rediss://` connection, PEM. Without `ca`, Redis's
/// certificate must chain to one of the system's roots; `client` (its
/// certificate and key) is what this node presents when Redis asks for one
/// (`tls-auth-clients`). Redis's host name (or IP address) in the URL must be
/// one its certificate names.
#[derive(Clone, Debug, Default)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// Every registry error but a caller's bad cursor is Redis failing or a
/// write contended past its retries: each counts in `xmppd_redis_call_errors_total`.
impl xmppd_metrics::CallError for RegistryError {
    fn is_failure(&self) -> bool {
        !matches!(self, RegistryError::BadCursor)
    }
}

/// (bare JID, resource) of a normalised JID: the key of its account's
/// resources and the field of its entry there (empty without a resource).
fn split_full(full_jid: &str) -> (&str, &str) {
    let jid = JidRef::new(full_jid);
    (jid.bare().as_str(), jid.resource().unwrap_or(""))
}

fn sort_by_jid(mut sessions: Vec<BoundResource>) -> Vec<BoundResource> {
    sessions.sort_unstable_by(|a, b| a.full_jid.cmp(&b.full_jid));
    sessions
}

/// Whether a Redis registry keeps [`Registry::resources`] look-ups in a
/// cache that Redis invalidates (see "Cached look-ups" above). Only for a
/// reader that can route on a look-up one invalidation push old, the router;
/// whoever reads to write (session replicas, connection-managers) uses
/// [`Caching::Off`]. The memory registry ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    Off,
    On {
        /// Bare JIDs kept at most; when that many live entries are held,
        /// further look-ups are not kept until some expire.
        entries: NonZeroUsize,
        /// Longest an entry is served without asking Redis again, however
        /// quiet the key; bounds a look-up whose invalidation was lost.
        ttl: Duration,
    },
}

/// A registry for `url`: in memory when there is none, Redis for
/// `redis://…`, `rediss://…` (TLS, with `tls`) or `redis+unix://…`.
/// `key_prefix` starts every Redis key.
///
/// Redis must answer now; after that the connection reconnects by itself,
/// and calls made while it is down fail with [`RegistryError::Redis`].
pub async fn connect(
    url: Option<&str>,
    tls: &RedisTls,
    key_prefix: &str,
    caching: Caching,
) -> Result<SharedRegistry, RegistryError> {
    match url {
        None => {
            tracing::info!("session registry in memory");
            Ok(Arc::new(MemoryRegistry::default()))
        }
        Some(url) => {
            let registry = RedisRegistry::connect(url, tls, key_prefix, caching).await?;
            tracing::info!(prefix = key_prefix, ?caching, "session registry in redis");
            Ok(Arc::new(registry))
        }
    }
}
