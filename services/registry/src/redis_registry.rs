//! The cluster's registry, in Redis (key layout in the crate documentation).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncCommands, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    ProtocolVersion, PushInfo, Script, TlsCertificates,
};
use xmppd_grpc::{AccountPolicy, BoundResource, Node, ResourceFlags, Role};

use crate::lookup_cache::{self, LookupCache};
use crate::rules::{self, Change};
use crate::{
    Account, Caching, RedisTls, Registry, RegistryError, ResourcePage, Unbound, sort_by_jid,
    split_full,
};
use xmppd_cache::CacheStatistics;
use xmppd_metrics::{Calls, Operation};

/// Compare-and-swap of one resource entry that keeps `sess:` and `nodes` in
/// step with it, and takes the entry's directed-presence set when it deletes
/// the entry, or (`take`) when it replaces one. An
/// empty string stands for "absent": an encoded session never is empty, since
/// its full JID is not. The expected entry is either exactly the one held, or
/// (`holder`) the start of it, a [`Holder`]'s. Returns the entry replaced
/// (empty if none), the directed-presence set taken, and the account's
/// policy if the deletion left nothing else (the key is then deleted with
/// it) on success; nil if the entry was not as expected.
///
/// KEYS: `res:{bare}`, `nodes`, `sess:{old node}`, `sess:{new node}`,
/// `dir:{full JID}`.
/// ARGV: resource, expected entry, new entry, full JID, old node, new node,
/// `exact` or `holder`, `take` or `keep`.
const SWAP_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if ARGV[7] == 'holder' then
  if current == '' or string.sub(current, 1, #ARGV[2]) ~= ARGV[2] then return false end
elseif current ~= ARGV[2] then
  return false
end
local directed = {}
local policy = false
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 1 then
    policy = redis.call('HGET', KEYS[1], '')
    if policy then redis.call('DEL', KEYS[1]) end
  end
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
if ARGV[3] == '' or (ARGV[8] == 'take' and current ~= '') then
  directed = redis.call('SMEMBERS', KEYS[5])
  redis.call('DEL', KEYS[5])
end
if ARGV[5] ~= '' and ARGV[5] ~= ARGV[6] then
  redis.call('SREM', KEYS[3], ARGV[4])
  if redis.call('SCARD', KEYS[3]) == 0 then redis.call('SREM', KEYS[2], ARGV[5]) end
end
if ARGV[6] ~= '' then
  redis.call('SADD', KEYS[4], ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[6])
end
return {current, directed, policy}
";

/// Writes an account's policy (the `""` field) if it has a resource bound.
///
/// KEYS: `res:{bare}`. ARGV: the encoded policy.
const SET_POLICY_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], '', ARGV[1])
return 1
";

/// The field of a `res:` hash that holds the account's policy.
const POLICY_FIELD: &str = "";

/// Drops the role-set members whose heartbeat key is (still) gone: checking
/// again inside the script spares a node that heartbeated since we looked.
///
/// KEYS: `role:{ROLE}`, then one `hb:{id}` per id. ARGV: the ids.
const PRUNE_ROLE_LUA: &str = r"
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then redis.call('SREM', KEYS[1], id) end
end
";

/// Adds a directed-presence recipient unless the sender already has the
/// limit of others (0: no limit): the rule of `rules::directed_is_full`.
///
/// KEYS: `dir:{full}`. ARGV: the recipient, the limit.
const ADD_DIRECTED_LUA: &str = r"
local max = tonumber(ARGV[2])
if max > 0 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0
    and redis.call('SCARD', KEYS[1]) >= max then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";

/// How often a read-modify-write is retried when other writers get in
/// between. Writers of one full JID are one client's connections, so more
/// than a couple of rounds means something is wrong.
const MAX_ATTEMPTS: usize = 16;

/// How many keys one `SCAN` round asks for.
const SCAN_COUNT: usize = 512;

/// The `operation` label of `xmppd_redis_call_seconds`: the [`Registry`]
/// method, whatever round trips it takes.
#[derive(Clone, Copy, Debug)]
enum RedisOperation {
    Bind,
    Unbind,
    SetPresence,
    SetFlags,
    SetPolicy,
    Session,
    Account,
    ResourcesOnNode,
    ResourcesPage,
    CountSessions,
    AddDirected,
    RemoveDirected,
    TakeDirected,
    Heartbeat,
    Deregister,
    LiveNodes,
    DeadNodesWithSessions,
}

impl Operation for RedisOperation {
    const ALL: &'static [Self] = &[
        RedisOperation::Bind,
        RedisOperation::Unbind,
        RedisOperation::SetPresence,
        RedisOperation::SetFlags,
        RedisOperation::SetPolicy,
        RedisOperation::Session,
        RedisOperation::Account,
        RedisOperation::ResourcesOnNode,
        RedisOperation::ResourcesPage,
        RedisOperation::CountSessions,
        RedisOperation::AddDirected,
        RedisOperation::RemoveDirected,
        RedisOperation::TakeDirected,
        RedisOperation::Heartbeat,
        RedisOperation::Deregister,
        RedisOperation::LiveNodes,
        RedisOperation::DeadNodesWithSessions,
    ];

    fn name(self) -> &'static str {
        match self {
            RedisOperation::Bind => "bind",
            RedisOperation::Unbind => "unbind",
            RedisOperation::SetPresence => "set_presence",
            RedisOperation::SetFlags => "set_flags",
            RedisOperation::SetPolicy => "set_policy",
            RedisOperation::Session => "session",
            RedisOperation::Account => "account",
            RedisOperation::ResourcesOnNode => "resources_on_node",
            RedisOperation::ResourcesPage => "resources_page",
            RedisOperation::CountSessions => "count_sessions",
            RedisOperation::AddDirected => "add_directed",
            RedisOperation::RemoveDirected => "remove_directed",
            RedisOperation::TakeDirected => "take_directed",
            RedisOperation::Heartbeat => "heartbeat",
            RedisOperation::Deregister => "deregister",
            RedisOperation::LiveNodes => "live_nodes",
            RedisOperation::DeadNodesWithSessions => "dead_nodes_with_sessions",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

pub struct RedisRegistry {
    /// Reconnects by itself; cloned per call, which is cheap. With
    /// [`Caching::On`] it speaks RESP3, and its pushes go to `cache`.
    conn: ConnectionManager,
    /// [`Registry::resources`] look-ups, with [`Caching::On`].
    cache: Option<Arc<LookupCache>>,
    keys: Keys,
    /// Every [`Registry`] call that reaches Redis, timed by operation.
    calls: Calls<RedisOperation>,
    swap: Script,
    set_policy: Script,
    prune_role: Script,
    add_directed: Script,
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn resources(&self, bare_jid: &str) -> String {
        format!("{}res:{bare_jid}", self.prefix)
    }

    fn node_sessions(&self, node_id: &str) -> String {
        format!("{}sess:{node_id}", self.prefix)
    }

    fn nodes_with_sessions(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    fn heartbeat(&self, node_id: &str) -> String {
        format!("{}hb:{node_id}", self.prefix)
    }

    fn role(&self, role: Role) -> String {
        format!("{}role:{}", self.prefix, role.as_str_name())
    }

    fn directed(&self, full_jid: &str) -> String {
        format!("{}dir:{full_jid}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every `res:` key; the prefix is escaped so
    /// that a `*` in it matches only itself.
    fn all_resources_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 5);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("res:*");
        pattern
    }
}

/// A resource entry as read, raw bytes kept to compare-and-swap against.
struct Entry {
    raw: Bytes,
    session: BoundResource,
}

/// The swap script's reply: the entry replaced, the directed presence and
/// the policy taken.
type SwapReply = (Vec<u8>, Vec<String>, Option<Vec<u8>>);

/// What a successful compare-and-swap replaced.
struct Swapped {
    /// The entry as it was; empty if there was none.
    replaced: Vec<u8>,
    /// The directed-presence recipients, sorted, if they were taken.
    directed: Vec<String>,
    /// The account's policy, if the swap deleted its last resource.
    policy: Option<Arc<AccountPolicy>>,
}

/// What a compare-and-swap that replaces an entry does with its
/// directed-presence set; one that deletes the entry always takes it.
#[derive(Clone, Copy)]
enum OnReplace {
    /// The entry is the same session, updated (its presence).
    KeepDirected,
    /// The entry is a new session, which sent no directed presence yet.
    TakeDirected,
}

/// What a compare-and-swap expects to find in the entry.
enum Expected<'a> {
    /// Exactly this entry, or none.
    Entry(Option<&'a Entry>),
    /// Any entry of this holder.
    HeldBy(Holder<'a>),
}

/// One connection's hold on a resource, as Redis can recognise it: the
/// encoding of a session with only its full JID, node and connection id set
/// starts the encoding of every session of that holder, and of no other.
/// prost writes the fields in the order of their numbers, these three come
/// first (`cluster.proto`), and each is self-delimiting.
struct Holder<'a> {
    encoded: Vec<u8>,
    node_id: &'a str,
}

impl<'a> Holder<'a> {
    /// `None` when a value would be left out as the default (no node, or
    /// connection 0), which would make the start shared with other holders.
    fn new(full_jid: &str, node_id: &'a str, conn_id: u64) -> Option<Self> {
        if node_id.is_empty() || conn_id == 0 {
            return None;
        }
        let identity = BoundResource {
            full_jid: full_jid.to_owned(),
            node_id: node_id.to_owned(),
            conn_id,
            ..Default::default()
        };
        Some(Holder {
            encoded: identity.encode_to_vec(),
            node_id,
        })
    }
}

/// A client for `info`, with `tls`'s certificates when any is set.
fn client(info: ConnectionInfo, tls: &RedisTls) -> Result<redis::Client, RegistryError> {
    if !tls.is_set() {
        return Ok(redis::Client::open(info)?);
    }
    if !matches!(info.addr, ConnectionAddr::TcpTls { .. }) {
        return Err(RegistryError::TlsWithoutRediss);
    }
    let certificates = TlsCertificates {
        client_tls: tls
            .client
            .clone()
            .map(|(client_cert, client_key)| ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: tls.ca.clone(),
    };
    Ok(redis::Client::build_with_tls(info, certificates)?)
}

/// Decodes from `Bytes`, so that the presence stanza is a view, not a copy.
fn decode<M: Message + Default>(key: &str, raw: impl Into<Bytes>) -> Result<M, RegistryError> {
    M::decode(raw.into()).map_err(|source| RegistryError::Decode {
        key: key.to_owned(),
        source,
    })
}

/// An account from its `res:` hash, as `HGETALL` returns it.
fn decode_account(key: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Account, RegistryError> {
    let mut account = Account::default();
    for (field, raw) in fields {
        if field == POLICY_FIELD.as_bytes() {
            account.policy = Some(Arc::new(decode(key, raw)?));
        } else {
            account.resources.push(decode(key, raw)?);
        }
    }
    account.resources = sort_by_jid(account.resources);
    Ok(account)
}

impl RedisRegistry {
    /// Connects to `url` (`redis://…`, or `rediss://…` with `tls`); every
    /// key starts with `key_prefix`.
    /// With [`Caching::On`], [`Registry::resources`] is served from a cache
    /// in this process that Redis invalidates (see the crate documentation);
    /// every other call still goes to Redis.
    pub async fn connect(
        url: &str,
        tls: &RedisTls,
        key_prefix: &str,
        caching: Caching,
    ) -> Result<Self, RegistryError> {
        let mut info = url.into_connection_info()?;
        let mut config = ConnectionManagerConfig::new();
        let cache = match caching {
            Caching::Off => None,
            Caching::On { entries, ttl } => {
                // Invalidations arrive as RESP3 pushes: RESP3 whatever the
                // URL says (`?protocol=`).
                info.redis.protocol = ProtocolVersion::RESP3;
                let cache = Arc::new(LookupCache::new(entries.get(), ttl));
                let pushes = cache.clone();
                config = config.set_push_sender(move |push: PushInfo| {
                    lookup_cache::apply(&pushes, &push);
                    Ok::<(), std::convert::Infallible>(())
                });
                Some(cache)
            }
        };
        let client = client(info, tls)?;
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            cache,
            keys: Keys {
                prefix: key_prefix.to_owned(),
            },
            calls: Calls::new(),
            swap: Script::new(SWAP_LUA),
            set_policy: Script::new(SET_POLICY_LUA),
            prune_role: Script::new(PRUNE_ROLE_LUA),
            add_directed: Script::new(ADD_DIRECTED_LUA),
        })
    }

    async fn read(&self, full_jid: &str) -> Result<Option<Entry>, RegistryError> {
        let (bare, resource) = split_full(full_jid);
        let key = self.keys.resources(bare);
        let raw: Option<Vec<u8>> = self.conn.clone().hget(&key, resource).await?;
        raw.map(|raw| {
            let raw = Bytes::from(raw);
            let session = decode(&key, raw.clone())?;
            Ok(Entry { raw, session })
        })
        .transpose()
    }

    /// Writes `new` (or deletes, if `None`) as the entry of `full_jid` if it
    /// still is as `expected`. `None` if it was not as expected: another
    /// writer got in between, or another connection holds it.
    async fn swap(
        &self,
        full_jid: &str,
        expected: Expected<'_>,
        new: Option<&BoundResource>,
        on_replace: OnReplace,
    ) -> Result<Option<Swapped>, RegistryError> {
        let (bare, resource) = split_full(full_jid);
        let (mode, expected_raw, old_node) = match &expected {
            Expected::Entry(entry) => (
                "exact",
                entry.map_or(&[][..], |entry| &entry.raw[..]),
                entry.map_or("", |entry| entry.session.node_id.as_str()),
            ),
            Expected::HeldBy(holder) => ("holder", &holder.encoded[..], holder.node_id),
        };
        let new_node = new.map_or("", |session| session.node_id.as_str());
        let swapped: Option<SwapReply> = self
            .swap
            .key(self.keys.resources(bare))
            .key(self.keys.nodes_with_sessions())
            .key(self.keys.node_sessions(old_node))
            .key(self.keys.node_sessions(new_node))
            .key(self.keys.directed(full_jid))
            .arg(resource)
            .arg(expected_raw)
            .arg(new.map(Message::encode_to_vec).unwrap_or_default())
            .arg(full_jid)
            .arg(old_node)
            .arg(new_node)
            .arg(mode)
            .arg(match on_replace {
                OnReplace::KeepDirected => "keep",
                OnReplace::TakeDirected => "take",
            })
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some((replaced, mut directed, policy)) = swapped else {
            return Ok(None);
        };
        directed.sort_unstable();
        let key = self.keys.resources(bare);
        let policy = policy
            .map(|raw| decode(&key, raw).map(Arc::new))
            .transpose()?;
        Ok(Some(Swapped {
            replaced,
            directed,
            policy,
        }))
    }

    /// Applies a [`rules`] decision to the entry of `full_jid`, optimistically:
    /// read, decide, swap if unchanged, else start over. Returns the
    /// decision's outcome, and the directed presence and policy taken.
    async fn update<T>(
        &self,
        full_jid: &str,
        on_replace: OnReplace,
        decide: impl Fn(Option<&BoundResource>) -> Change<T>,
    ) -> Result<(T, Vec<String>, Option<Arc<AccountPolicy>>), RegistryError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read(full_jid).await?;
            let (new, outcome) = match decide(current.as_ref().map(|entry| &entry.session)) {
                Change::Keep(outcome) => return Ok((outcome, Vec::new(), None)),
                Change::Put(session, outcome) => (Some(session), outcome),
                Change::Delete(outcome) => (None, outcome),
            };
            let expected = Expected::Entry(current.as_ref());
            if let Some(swapped) = self
                .swap(full_jid, expected, new.as_ref(), on_replace)
                .await?
            {
                return Ok((outcome, swapped.directed, swapped.policy));
            }
        }
        tracing::warn!(full_jid, "registry entry contended, giving up");
        Err(RegistryError::Contended(full_jid.to_owned()))
    }

    async fn nodes_with_sessions(&self) -> Result<Vec<String>, RegistryError> {
        let ids = self
            .conn
            .clone()
            .smembers(self.keys.nodes_with_sessions())
            .await?;
        Ok(ids)
    }

    /// At least `limit` `res:` keys from the `SCAN` cursor `cursor` on (fewer
    /// at the end), and the cursor after them (0 at the end). `SCAN` never
    /// blocks Redis, and a key that lives through the whole scan is returned
    /// once; keys created or deleted meanwhile may or may not be.
    async fn resource_keys(
        &self,
        mut cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, u64), RegistryError> {
        let pattern = self.keys.all_resources_pattern();
        let mut conn = self.conn.clone();
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(limit.max(SCAN_COUNT))
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= limit {
                return Ok((keys, cursor));
            }
        }
    }
}

#[async_trait::async_trait]
impl Registry for RedisRegistry {
    fn cache_statistics(&self) -> Option<CacheStatistics> {
        self.cache.as_ref().map(|cache| cache.statistics())
    }

    fn register_metrics(&self, metrics: &mut prometheus_client::registry::Registry) {
        self.calls.register(metrics, "xmppd_redis", "Redis");
    }

    async fn bind(&self, session: BoundResource) -> Result<Option<Unbound>, RegistryError> {
        self.calls
            .call(RedisOperation::Bind, async {
                let take = OnReplace::TakeDirected;
                // Most binds are of a resource nobody holds: swapping against
                // "absent" first spares the read, one round trip of every login.
                if let Change::Put(new, None) = rules::bind(&session, None)
                    && self
                        .swap(&session.full_jid, Expected::Entry(None), Some(&new), take)
                        .await?
                        .is_some()
                {
                    return Ok(None);
                }
                let (replaced, directed, _) = self
                    .update(&session.full_jid, take, |current| {
                        rules::bind(&session, current)
                    })
                    .await?;
                Ok(replaced.map(|session| Unbound {
                    session,
                    directed,
                    policy: None,
                }))
            })
            .await
    }

    async fn unbind(
        &self,
        full_jid: &str,
        node_id: &str,
        conn_id: u64,
    ) -> Result<Option<Unbound>, RegistryError> {
        self.calls
            .call(RedisOperation::Unbind, async {
                // Every session end unbinds: Redis checks the holder itself, sparing
                // the read (one round trip) that `rules::unbind` would need.
                let Some(holder) = Holder::new(full_jid, node_id, conn_id) else {
                    let (removed, directed, policy) = self
                        .update(full_jid, OnReplace::KeepDirected, |current| {
                            rules::unbind(node_id, conn_id, current)
                        })
                        .await?;
                    return Ok(removed.map(|session| Unbound {
                        session,
                        directed,
                        policy,
                    }));
                };
                let expected = Expected::HeldBy(holder);
                let swapped = self
                    .swap(full_jid, expected, None, OnReplace::KeepDirected)
                    .await?;
                let Some(swapped) = swapped else {
                    return Ok(None);
                };
                let session = decode(
                    &self.keys.resources(split_full(full_jid).0),
                    swapped.replaced,
                )?;
                Ok(Some(Unbound {
                    session,
                    directed: swapped.directed,
                    policy: swapped.policy,
                }))
            })
            .await
    }

    async fn set_presence(
        &self,
        full_jid: &str,
        conn_id: u64,
        available: bool,
        priority: i32,
        presence: Bytes,
    ) -> Result<bool, RegistryError> {
        self.calls
            .call(RedisOperation::SetPresence, async {
                let (updated, ..) = self
                    .update(full_jid, OnReplace::KeepDirected, |current| {
                        rules::set_presence(conn_id, available, priority, &presence, current)
                    })
                    .await?;
                Ok(updated)
            })
            .await
    }

    async fn set_flags(
        &self,
        full_jid: &str,
        conn_id: u64,
        flags: ResourceFlags,
    ) -> Result<bool, RegistryError> {
        self.calls
            .call(RedisOperation::SetFlags, async {
                let (updated, ..) = self
                    .update(full_jid, OnReplace::KeepDirected, |current| {
                        rules::set_flags(conn_id, flags, current)
                    })
                    .await?;
                Ok(updated)
            })
            .await
    }

    async fn set_policy(
        &self,
        bare_jid: &str,
        policy: &AccountPolicy,
    ) -> Result<bool, RegistryError> {
        self.calls
            .call(RedisOperation::SetPolicy, async {
                let written: bool = self
                    .set_policy
                    .key(self.keys.resources(bare_jid))
                    .arg(policy.encode_to_vec())
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                Ok(written)
            })
            .await
    }

    async fn session(&self, full_jid: &str) -> Result<Option<BoundResource>, RegistryError> {
        self.calls
            .call(RedisOperation::Session, async {
                Ok(self.read(full_jid).await?.map(|entry| entry.session))
            })
            .await
    }

    async fn account(&self, bare_jid: &str) -> Result<Arc<Account>, RegistryError> {
        let key = self.keys.resources(bare_jid);
        let Some(cache) = &self.cache else {
            return self
                .calls
                .call(RedisOperation::Account, async {
                    let fields: Vec<(Vec<u8>, Vec<u8>)> = self.conn.clone().hgetall(&key).await?;
                    Ok(Arc::new(decode_account(&key, fields)?))
                })
                .await;
        };
        let ticket = match cache.get(&key) {
            Ok(account) => return Ok(account),
            Err(ticket) => ticket,
        };
        // Only a miss is a call to Redis, and timed as one.
        self.calls
            .call(RedisOperation::Account, async {
                // Tracking is asked for with every miss, not once: after a
                // reconnect the new connection tracks nothing until it is. One
                // write, so the three run in a row on the same connection.
                let (fields,): (Vec<(Vec<u8>, Vec<u8>)>,) = redis::pipe()
                    .cmd("CLIENT")
                    .arg(&["TRACKING", "ON", "OPTIN"][..])
                    .ignore()
                    .cmd("CLIENT")
                    .arg(&["CACHING", "YES"][..])
                    .ignore()
                    .hgetall(&key)
                    .query_async(&mut self.conn.clone())
                    .await?;
                let account = Arc::new(decode_account(&key, fields)?);
                cache.store(&key, ticket, account.clone());
                Ok(account)
            })
            .await
    }

    async fn resources_on_node(&self, node_id: &str) -> Result<Vec<BoundResource>, RegistryError> {
        self.calls
            .call(RedisOperation::ResourcesOnNode, async {
                let full_jids: Vec<String> = self
                    .conn
                    .clone()
                    .smembers(self.keys.node_sessions(node_id))
                    .await?;
                let keys: Vec<String> = full_jids
                    .iter()
                    .map(|full_jid| self.keys.resources(split_full(full_jid).0))
                    .collect();
                let mut pipe = redis::pipe();
                for (key, full_jid) in keys.iter().zip(&full_jids) {
                    pipe.hget(key, split_full(full_jid).1);
                }
                let raws: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn.clone()).await?;
                let mut sessions = Vec::with_capacity(raws.len());
                for (key, raw) in keys.iter().zip(raws) {
                    // Unbound between the two reads.
                    let Some(raw) = raw else { continue };
                    let session: BoundResource = decode(key, raw)?;
                    // The JID may have moved to another node between the two reads.
                    if session.node_id == node_id {
                        sessions.push(session);
                    }
                }
                Ok(sort_by_jid(sessions))
            })
            .await
    }

    async fn resources_page(
        &self,
        cursor: &str,
        limit: usize,
    ) -> Result<ResourcePage, RegistryError> {
        let start = match cursor {
            "" => 0,
            cursor => cursor.parse().map_err(|_| RegistryError::BadCursor)?,
        };
        self.calls
            .call(RedisOperation::ResourcesPage, async {
                let (keys, next) = self.resource_keys(start, limit.max(1)).await?;
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.hgetall(key);
                }
                let accounts: Vec<Vec<(Vec<u8>, Vec<u8>)>> =
                    pipe.query_async(&mut self.conn.clone()).await?;
                let mut resources = Vec::new();
                for (key, fields) in keys.iter().zip(accounts) {
                    resources.extend(decode_account(key, fields)?.resources);
                }
                Ok(ResourcePage {
                    resources: sort_by_jid(resources),
                    next: (next != 0).then(|| next.to_string()),
                })
            })
            .await
    }

    async fn count_sessions(&self) -> Result<u64, RegistryError> {
        self.calls
            .call(RedisOperation::CountSessions, async {
                let ids = self.nodes_with_sessions().await?;
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.scard(self.keys.node_sessions(id));
                }
                let counts: Vec<u64> = pipe.query_async(&mut self.conn.clone()).await?;
                Ok(counts.into_iter().sum())
            })
            .await
    }

    async fn add_directed(
        &self,
        full_jid: &str,
        to: &str,
        max: u32,
    ) -> Result<bool, RegistryError> {
        self.calls
            .call(RedisOperation::AddDirected, async {
                let added: i64 = self
                    .add_directed
                    .key(self.keys.directed(full_jid))
                    .arg(to)
                    .arg(max)
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                Ok(added == 1)
            })
            .await
    }

    async fn remove_directed(&self, full_jid: &str, to: &str) -> Result<(), RegistryError> {
        self.calls
            .call(RedisOperation::RemoveDirected, async {
                let () = self
                    .conn
                    .clone()
                    .srem(self.keys.directed(full_jid), to)
                    .await?;
                Ok(())
            })
            .await
    }

    async fn take_directed(&self, full_jid: &str) -> Result<Vec<String>, RegistryError> {
        self.calls
            .call(RedisOperation::TakeDirected, async {
                let key = self.keys.directed(full_jid);
                let (mut taken,): (Vec<String>,) = redis::pipe()
                    .atomic()
                    .smembers(&key)
                    .del(&key)
                    .ignore()
                    .query_async(&mut self.conn.clone())
                    .await?;
                taken.sort_unstable();
                Ok(taken)
            })
            .await
    }

    async fn heartbeat(&self, node: &Node, ttl: Duration) -> Result<(), RegistryError> {
        self.calls
            .call(RedisOperation::Heartbeat, async {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let () = redis::pipe()
                    .atomic()
                    .pset_ex(self.keys.heartbeat(&node.id), node.encode_to_vec(), ttl_ms)
                    .ignore()
                    .sadd(self.keys.role(node.role()), &node.id)
                    .ignore()
                    .query_async(&mut self.conn.clone())
                    .await?;
                Ok(())
            })
            .await
    }

    async fn deregister(&self, node_id: &str) -> Result<(), RegistryError> {
        self.calls
            .call(RedisOperation::Deregister, async {
                // Its `role:` membership goes at the next `live_nodes` of that role.
                let () = self.conn.clone().del(self.keys.heartbeat(node_id)).await?;
                Ok(())
            })
            .await
    }

    async fn live_nodes(&self, role: Role) -> Result<Vec<Node>, RegistryError> {
        self.calls
            .call(RedisOperation::LiveNodes, async {
                let role_key = self.keys.role(role);
                let ids: Vec<String> = self.conn.clone().smembers(&role_key).await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let hb_keys: Vec<String> = ids.iter().map(|id| self.keys.heartbeat(id)).collect();
                let raws: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&hb_keys)
                    .query_async(&mut self.conn.clone())
                    .await?;
                let mut live = Vec::with_capacity(ids.len());
                let mut expired = Vec::new();
                for ((id, key), raw) in ids.iter().zip(&hb_keys).zip(raws) {
                    match raw {
                        Some(raw) => live.push(decode::<Node>(key, raw)?),
                        None => expired.push((id, key)),
                    }
                }
                if !expired.is_empty() {
                    let mut prune = self.prune_role.key(&role_key);
                    for (id, key) in expired {
                        prune.key(key).arg(id);
                    }
                    let () = prune.invoke_async(&mut self.conn.clone()).await?;
                }
                live.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                Ok(live)
            })
            .await
    }

    async fn dead_nodes_with_sessions(&self) -> Result<Vec<String>, RegistryError> {
        self.calls
            .call(RedisOperation::DeadNodesWithSessions, async {
                let ids = self.nodes_with_sessions().await?;
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.exists(self.keys.heartbeat(id));
                }
                let alive: Vec<bool> = pipe.query_async(&mut self.conn.clone()).await?;
                let mut dead: Vec<String> = ids
                    .into_iter()
                    .zip(alive)
                    .filter_map(|(id, alive)| (!alive).then_some(id))
                    .collect();
                dead.sort_unstable();
                Ok(dead)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(node_id: &str, conn_id: u64) -> BoundResource {
        BoundResource {
            full_jid: "alice@example.org/phone".into(),
            node_id: node_id.into(),
            conn_id,
            available: true,
            priority: -3,
            presence: Bytes::from_static(b"<presence/>"),
            bound_at: 1_700_000_000_000,
            flags: Some(ResourceFlags {
                carbons: true,
                blocklist_pushes: true,
            }),
            origin: Some(xmppd_grpc::Origin {
                transport: "tcp".into(),
                address: "192.0.2.7".into(),
            }),
        }
    }

    fn holds(node_id: &str, conn_id: u64, entry: &BoundResource) -> bool {
        let holder = Holder::new("alice@example.org/phone", node_id, conn_id).unwrap();
        entry.encode_to_vec().starts_with(&holder.encoded)
    }

    #[test]
    fn a_holder_is_recognised_by_the_start_of_its_entries_only() {
        let entry = session("cm1", 7);
        assert!(holds("cm1", 7, &entry));
        // Freshly bound, before any presence: the fields after the three are
        // absent.
        let bare_entry = BoundResource {
            available: false,
            priority: 0,
            presence: Bytes::new(),
            ..entry.clone()
        };
        assert!(holds("cm1", 7, &bare_entry));
        // A longer or shorter node id, another connection, one whose varint
        // has the same low seven bits: none is a prefix.
        assert!(!holds("cm10", 7, &entry));
        assert!(!holds("cm", 7, &entry));
        assert!(!holds("cm1", 8, &entry));
        assert!(!holds("cm1", 7, &session("cm1", 7 + 128)));
        assert!(!holds("cm1", 7 + 128, &entry));
    }

    #[test]
    fn defaults_left_out_of_the_encoding_make_no_holder() {
        assert!(Holder::new("alice@example.org/phone", "cm1", 0).is_none());
        assert!(Holder::new("alice@example.org/phone", "", 7).is_none());
    }
}
