//! The configuration schema shared by every service, and its loader.
//!
//! Each service reads one TOML file with the sections it needs; every key has
//! a default, so an empty file (or none) is a working configuration. Any key
//! can be overridden by an environment variable named `XMPPD_<SECTION>__<KEY>`
//! (upper case, `__` between levels), e.g. `XMPPD_STORAGE__URL`. Values in the
//! environment are read as TOML (`5222`, `true`, `["a"]`) and otherwise as
//! plain strings. `docs/configuration.md` lists every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use toml::Value;

const ENV_PREFIX: &str = "XMPPD_";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub listen: ListenConfig,
    pub websocket: WebSocketConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub stream_management: StreamManagementConfig,
    pub storage: StorageConfig,
    pub registry: RegistryConfig,
    pub cluster: ClusterConfig,
    pub cluster_tls: ClusterTlsConfig,
    pub observability: ObservabilityConfig,
    pub admin: AdminConfig,
    pub tracing: TracingConfig,
    pub muc: MucConfig,
    /// `[modules.<name>]`: the section of each account module (session
    /// replicas and the all-in-one), read by the module itself; every module
    /// takes `enabled`. The modules and their keys are in
    /// `docs/configuration.md`.
    pub modules: BTreeMap<String, toml::Table>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The XMPP domain served (the part after `@`).
    pub domain: String,
    /// Where generated certificates and the embedded database live.
    pub data_dir: PathBuf,
    /// Threads that run the server's tasks; 0 = one per CPU this process
    /// may use (its cgroup quota included, as in a Kubernetes pod).
    pub worker_threads: usize,
    /// Milliseconds between reads of the configuration file to see whether
    /// it changed, which reloads it as SIGHUP does; 0: only SIGHUP reloads.
    pub config_check_ms: u64,
}

/// `[muc]`: the multi-user chat service (XEP-0045), run by the session
/// replicas; the routers read `domains` to route rooms' stanzas.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucConfig {
    pub enabled: bool,
    /// The chat services' domains; empty: `conference.<server.domain>`.
    pub domains: Vec<String>,
    /// Who may create rooms: `anyone` (any local account) or `admins`.
    pub create: RoomCreators,
    /// The accounts (bare JIDs) that own every room of the service.
    pub admins: Vec<String>,
    /// Occupants of one room at most; a join beyond is refused
    /// `<service-unavailable/>`.
    pub max_occupants: u32,
    /// Rooms one account may have created and still own.
    pub max_rooms_per_user: u32,
    /// Messages of a room's history kept and sent on join at most.
    pub max_history: u32,
    /// Characters a room subject may have; longer ones are refused
    /// `<not-acceptable/>`.
    pub max_subject_chars: u32,
}

/// [`MucConfig::create`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomCreators {
    #[default]
    Anyone,
    Admins,
}

impl Default for MucConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            domains: Vec::new(),
            create: RoomCreators::Anyone,
            admins: Vec::new(),
            max_occupants: 1000,
            max_rooms_per_user: 100,
            max_history: 50,
            max_subject_chars: 1024,
        }
    }
}

impl MucConfig {
    /// The services' domains, the default one if none is configured, or
    /// none when the service is off.
    pub fn service_domains(&self, server_domain: &str) -> Vec<String> {
        match (self.enabled, self.domains.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => vec![format!("conference.{server_domain}")],
            (true, false) => self.domains.iter().map(|d| d.to_lowercase()).collect(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Client streams with STARTTLS (RFC 6120). Empty disables.
    pub c2s: String,
    /// Client streams over direct TLS (XEP-0368). Empty disables.
    pub c2s_tls: String,
    /// HTTP listener for XMPP over WebSocket (RFC 7395, `ws://`) and
    /// XEP-0156 discovery. Empty disables.
    pub websocket: String,
    /// The same over TLS with the server's certificate (`wss://`). Empty
    /// disables.
    pub websocket_tls: String,
    /// gRPC server of the router or session service.
    pub grpc: String,
    /// The address other nodes use to reach `grpc` (defaults to it).
    pub grpc_advertise: String,
    /// Every connection to `c2s`, `c2s_tls`, `websocket` and `websocket_tls`
    /// starts with a PROXY protocol v2 header, whose source address is the
    /// client's; connections without one are closed.
    pub proxy_protocol: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The HTTP path of the WebSocket endpoint.
    pub path: String,
    /// `Origin` values allowed to open a WebSocket (for example
    /// `https://chat.example.org`); empty allows any. Requests without an
    /// `Origin` (clients that are not browsers) are always allowed.
    pub origins: Vec<String>,
    /// Count plain `ws://` streams as encrypted, for a TLS-terminating proxy
    /// in front: authentication (and PLAIN) is then offered under
    /// `auth.require_tls`.
    pub consider_secure: bool,
    /// The endpoint's public URL for XEP-0156 discovery; empty: built from
    /// the request's `Host` and the listener's scheme.
    pub public_url: String,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            path: "/xmpp-websocket".into(),
            origins: Vec::new(),
            consider_secure: false,
            public_url: String::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; when unset a self-signed one is generated.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`.
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require STARTTLS before authentication on the c2s listener.
    pub require_tls: bool,
    /// Offer SASL PLAIN (only ever inside TLS unless `require_tls` is off).
    pub allow_plain: bool,
    /// XEP-0077 in-band registration of new accounts.
    pub registration: bool,
    /// Failed authentications allowed per client IP per minute, after which
    /// that address is refused.
    pub failures_per_ip_per_minute: u32,
    /// Failed authentications allowed per account and client IP per minute,
    /// after which that address is refused for that account only.
    pub failures_per_account_per_ip_per_minute: u32,
    /// Failed authentications per account per minute, from all addresses,
    /// after which every answer for that account is delayed (never refused,
    /// so that strangers cannot lock its owner out).
    pub failures_per_account_per_minute: u32,
    /// The delay of the first answer past `failures_per_account_per_minute`;
    /// it doubles with each further failure.
    pub failure_delay_ms: u64,
    /// The longest such delay.
    pub max_failure_delay_ms: u64,
    /// In-band registrations allowed per client IP per hour (0 = unlimited).
    pub registrations_per_ip_per_hour: u32,
    /// PBKDF2 iterations for newly stored SCRAM keys; keys with fewer are
    /// replaced at the account's next PLAIN login. Unknown accounts' decoy
    /// keys name it too.
    pub scram_iterations: u32,
    /// The secret unknown accounts' decoy salts are derived from, shared by
    /// every connection-manager; unset: a random one per process.
    pub decoy_secret_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest stanza accepted, in bytes (RFC 6120 §13.12: at least 10000).
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted inside a stanza.
    pub max_depth: usize,
    /// Most attributes accepted on one element.
    pub max_attributes: usize,
    /// Concurrent client connections from one IPv4 address or IPv6 /64
    /// (0 = unlimited).
    pub connections_per_ip: u32,
    /// Concurrent client connections to one connection-manager, all
    /// transports together (0 = unlimited).
    pub max_connections: u32,
    /// Sustained stanzas per second per connection (0 = unlimited).
    pub stanzas_per_second: u32,
    /// Burst of stanzas allowed above the sustained rate.
    pub stanza_burst: u32,
    /// Seconds a stream may stay silent before the server pings it.
    pub ping_after_secs: u64,
    /// Seconds of silence (ping unanswered) after which the stream is closed.
    pub idle_timeout_secs: u64,
    /// Seconds allowed from connect to a bound resource.
    pub negotiation_timeout_secs: u64,
    /// Seconds one write to a client may wait for the client to read before
    /// its connection is closed.
    pub write_timeout_secs: u64,
    /// Messages kept in offline storage per account.
    pub max_offline_messages: u32,
    /// Largest presence stanza accepted from a client, in bytes: presence is
    /// stored per resource and copied to every contact.
    pub max_presence_bytes: usize,
    /// Resources one account may have bound at once (0 = unlimited).
    pub max_resources_per_account: u32,
    /// Entities (outside the roster's presence subscribers) one resource may
    /// send directed presence to (0 = unlimited).
    pub max_directed_presences: u32,
    /// Contacts one roster may hold (0 = unlimited).
    pub max_roster_items: u32,
    /// Subscription requests one account may have waiting for its answer
    /// (0 = unlimited).
    pub max_pending_subscriptions: u32,
}

/// XEP-0198 stream management on client streams.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamManagementConfig {
    /// Offer the `sm` stream feature after authentication.
    pub enabled: bool,
    /// Seconds a broken resumable stream's session is kept for its client
    /// to resume, unless the client asks for less.
    pub resume_timeout_secs: u64,
    /// The most seconds a client's `max` can ask for.
    pub max_resume_timeout_secs: u64,
    /// Stanzas sent to a client before the server asks it for an ack.
    pub ack_request_after_stanzas: u32,
    /// Milliseconds after a stanza was sent before the server asks for an
    /// ack of it, if `ack_request_after_stanzas` did not come first.
    pub ack_request_after_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://path` or `postgres://user@host/db`. Empty: SQLite under data_dir.
    pub url: String,
    /// Most database connections one process opens (each is a Postgres backend).
    pub max_connections: NonZeroU32,
    /// Connections kept open from the start, even when idle; at most `max_connections`.
    pub min_connections: u32,
    /// Accounts whose SCRAM credentials a session replica keeps after reading them, until
    /// Postgres notifies a change; 0 turns the cache off. Session replicas on Postgres only.
    pub credential_cache_entries: u64,
    /// Seconds a cached credential may be used at most, even with no notification.
    pub credential_cache_ttl_secs: u64,
    /// Apply pending migrations when the store is opened; off, only check that
    /// `xmppd migrate` applied them all.
    pub migrate: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: String::new(),
            max_connections: NonZeroU32::new(10).expect("not zero"),
            min_connections: 0,
            credential_cache_entries: 100_000,
            credential_cache_ttl_secs: 600,
            migrate: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `redis://host:port`, or `rediss://host:port` for TLS; a user and password
    /// as `rediss://user:password@host:port`. Empty keeps the registry in memory
    /// (all-in-one only).
    pub url: String,
    /// The CA that signed Redis's certificate (PEM), for `rediss://`; unset: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), for a Redis that asks clients for one
    /// (`tls-auth-clients`); set with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// Prefix of every Redis key, so several clusters can share one Redis.
    pub key_prefix: String,
    /// Bare JIDs whose resources a router keeps in its look-up cache (while
    /// this many live ones are held, further look-ups are not kept until
    /// expired ones are swept); 0 turns the cache off. Routers only.
    pub cache_entries: u64,
    /// Milliseconds a cached look-up may be served without asking Redis again,
    /// even with no invalidation. Routers only.
    pub cache_ttl_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id; empty: generated from the host name and process id.
    pub node_id: String,
    /// Milliseconds between heartbeats in the registry.
    pub heartbeat_ms: u64,
    /// Milliseconds after the last heartbeat when a node counts as dead.
    pub node_ttl_ms: u64,
}

/// Mutual TLS between the cluster's nodes (connection-managers, routers and session
/// replicas; the all-in-one talks to itself in memory and uses none). `docs/security.md`
/// says what each certificate must name.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// Mutual TLS on every gRPC connection; off, the cluster's gRPC is plain text and any
    /// caller may make any call.
    pub enabled: bool,
    /// The directory of `ca.crt`, `tls.crt` and `tls.key` (a Kubernetes TLS Secret's
    /// layout); empty: `<server.data_dir>/cluster-tls/<role>`, where `xmppd certs init`
    /// writes them.
    pub dir: PathBuf,
    /// The cluster CA's certificate (PEM); unset: `<dir>/ca.crt`.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate chain (PEM); unset: `<dir>/tls.crt`.
    pub cert_file: Option<PathBuf>,
    /// This node's private key (PEM); unset: `<dir>/tls.key`.
    pub key_file: Option<PathBuf>,
    /// Milliseconds between checks of the three files; changed files are loaded for new
    /// connections. 0: never reloaded.
    pub reload_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// `/metrics`, `/healthz` and `/readyz`. Empty disables.
    pub http: String,
    /// Log filter in `RUST_LOG` syntax.
    pub log: String,
    /// How each log line is written.
    pub log_format: LogFormat,
    /// The bearer token `/sessions` asks for (all-in-one); empty: a random
    /// one written to `<data_dir>/sessions.token` at start.
    pub sessions_token: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the trace and span ids of the
    /// current span when traces are exported.
    Json,
}

/// `[tracing]`: OpenTelemetry traces exported over OTLP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Off: no span is made and nothing rides the envelopes.
    pub enabled: bool,
    /// The collector's OTLP endpoint; empty: the protocol's usual local one.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Share of new traces kept, 0.0 to 1.0; a stanza whose sender's trace
    /// was kept (or dropped) is kept (or dropped) with it.
    pub sampling_ratio: f64,
    /// Resource attributes added to every span of this process, beside
    /// `service.name` and `service.instance.id`.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC, port 4317 by convention.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, port 4318 by convention.
    Http,
}

impl OtlpProtocol {
    /// Where a collector on this host listens for the protocol.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "http://127.0.0.1:4317",
            OtlpProtocol::Http => "http://127.0.0.1:4318/v1/traces",
        }
    }
}

impl TracingConfig {
    /// The configured endpoint, or the protocol's default.
    pub fn endpoint_or_default(&self) -> &str {
        if self.endpoint.is_empty() {
            self.protocol.default_endpoint()
        } else {
            &self.endpoint
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            data_dir: "data".into(),
            worker_threads: 0,
            config_check_ms: 5000,
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            c2s: "127.0.0.1:5222".into(),
            c2s_tls: "127.0.0.1:5223".into(),
            websocket: "127.0.0.1:5280".into(),
            websocket_tls: String::new(),
            grpc: "127.0.0.1:7000".into(),
            grpc_advertise: String::new(),
            proxy_protocol: false,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            require_tls: true,
            allow_plain: true,
            registration: false,
            failures_per_ip_per_minute: 20,
            failures_per_account_per_ip_per_minute: 5,
            failures_per_account_per_minute: 5,
            failure_delay_ms: 500,
            max_failure_delay_ms: 8000,
            registrations_per_ip_per_hour: 10,
            // xmppd_sasl::DEFAULT_ITERATIONS.
            scram_iterations: 10_000,
            decoy_secret_file: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            // RFC 6120 §13.12: no stanza limit below 10000 bytes.
            max_presence_bytes: 10_000,
            max_resources_per_account: 20,
            max_directed_presences: 100,
            max_roster_items: 1000,
            max_pending_subscriptions: 100,
            max_depth: 32,
            max_attributes: 64,
            connections_per_ip: 100,
            max_connections: 100_000,
            stanzas_per_second: 50,
            stanza_burst: 200,
            ping_after_secs: 120,
            idle_timeout_secs: 180,
            negotiation_timeout_secs: 60,
            write_timeout_secs: 30,
            max_offline_messages: 1000,
        }
    }
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            resume_timeout_secs: 300,
            max_resume_timeout_secs: 600,
            ack_request_after_stanzas: 5,
            ack_request_after_ms: 1000,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_prefix: "xmppd:".into(),
            cache_entries: 100_000,
            cache_ttl_ms: 1000,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            heartbeat_ms: 1000,
            node_ttl_ms: 5000,
        }
    }
}

impl Default for ClusterTlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            reload_ms: 10_000,
        }
    }
}

/// The HTTP admin API (`docs/admin.md`), served by session replicas and the
/// all-in-one process.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens. Empty disables it.
    pub listen: String,
    /// Serve it over TLS with the server's certificate (`tls.cert_file`,
    /// `tls.key_file`, or the generated one).
    pub tls: bool,
    /// Bare JIDs that hold the admin role, besides those granted with
    /// `xmppd admin grant`.
    pub admins: Vec<String>,
    /// Lifetime of the token a password login gets.
    pub login_token_ttl_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5285".into(),
            tls: true,
            admins: Vec::new(),
            login_token_ttl_secs: 3600,
        }
    }
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:9090".into(),
            log: "info".into(),
            log_format: LogFormat::Text,
            sessions_token: String::new(),
        }
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            attributes: BTreeMap::new(),
        }
    }
}

impl StorageConfig {
    /// The configured URL, or the embedded SQLite database under `data_dir`.
    pub fn url_or_embedded(&self, data_dir: &Path) -> String {
        if self.url.is_empty() {
            format!("sqlite://{}", data_dir.join("xmppd.db").display())
        } else {
            self.url.clone()
        }
    }
}

impl ListenConfig {
    pub fn grpc_advertised(&self) -> String {
        let address = if self.grpc_advertise.is_empty() {
            &self.grpc
        } else {
            &self.grpc_advertise
        };
        format!("http://{address}")
    }
}

impl ClusterConfig {
    /// The configured id, or one that is unique per process start: a
    /// container restarted in its pod keeps its hostname and its pid (1),
    /// and must not pass for its predecessor, whose sessions are reaped once
    /// its heartbeat expires.
    pub fn node_id_or_generated(&self, role: &str) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
        generated_node_id(role, &host, std::process::id(), process_start())
    }
}

/// `<role>-<host>-<pid>-<start>`, the start in milliseconds since the epoch
/// and base 36.
fn generated_node_id(role: &str, host: &str, pid: u32, start: SystemTime) -> String {
    let mut millis = start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((millis % 36) as u32, 36).unwrap_or('0'));
        millis /= 36;
        if millis == 0 {
            break;
        }
    }
    let start: String = digits.iter().rev().collect();
    format!("{role}-{host}-{pid}-{start}")
}

/// When this process first asked: every id it generates names the same start.
fn process_start() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration (file and environment): {0}")]
    Invalid(toml::de::Error),
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
    #[error("invalid address {value:?} for {key}: {source}")]
    Address {
        key: &'static str,
        value: String,
        source: std::net::AddrParseError,
    },
}

impl Config {
    /// Reads `path` (if any), then applies `XMPPD_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        apply_env_overrides(&mut table, env);
        let config: Config = Value::Table(table)
            .try_into()
            .map_err(ConfigError::Invalid)?;
        config.check()?;
        Ok(config)
    }

    /// What no single key's type can say: keys that must agree.
    fn check(&self) -> Result<(), ConfigError> {
        if !self.websocket.path.starts_with('/') {
            return Err(ConfigError::Inconsistent(format!(
                "websocket.path ({:?}) must start with '/'",
                self.websocket.path
            )));
        }
        let sm = &self.stream_management;
        if sm.resume_timeout_secs > sm.max_resume_timeout_secs {
            return Err(ConfigError::Inconsistent(format!(
                "stream_management.resume_timeout_secs ({}) is more than \
                 stream_management.max_resume_timeout_secs ({})",
                sm.resume_timeout_secs, sm.max_resume_timeout_secs
            )));
        }
        if self.limits.write_timeout_secs == 0 {
            return Err(ConfigError::Inconsistent(
                "limits.write_timeout_secs must be at least 1".into(),
            ));
        }
        if sm.ack_request_after_stanzas == 0 || sm.ack_request_after_ms == 0 {
            return Err(ConfigError::Inconsistent(
                "stream_management.ack_request_after_stanzas and ack_request_after_ms \
                 must be at least 1"
                    .into(),
            ));
        }
        let storage = &self.storage;
        if storage.min_connections > storage.max_connections.get() {
            return Err(ConfigError::Inconsistent(format!(
                "storage.min_connections ({}) is more than storage.max_connections ({})",
                storage.min_connections, storage.max_connections
            )));
        }
        let ratio = self.tracing.sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::Inconsistent(format!(
                "tracing.sampling_ratio ({ratio}) must be between 0.0 and 1.0"
            )));
        }
        Ok(())
    }
}

/// Parses a listen address, naming the key in the error.
pub fn parse_address(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|source| ConfigError::Address {
        key,
        value: value.to_string(),
        source,
    })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Sections a variable may name; other `XMPPD_*` variables (for example the
/// test suite's) are not configuration and are left alone.
fn known_sections() -> BTreeMap<String, ()> {
    let defaults = Value::try_from(Config::default()).expect("defaults serialise");
    defaults
        .as_table()
        .map(|table| table.keys().map(|key| (key.clone(), ())).collect())
        .unwrap_or_default()
}

fn apply_env_overrides(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) {
    let sections = known_sections();
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if path.len() < 2 || !sections.contains_key(&path[0]) {
            continue;
        }
        set_path(table, &path, env_value(&raw));
    }
}

fn env_value(raw: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut parsed| parsed.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("path has at least two parts");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("just made a table");
    }
    current.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_restart_with_the_same_host_and_pid_gets_another_node_id() {
        let start = UNIX_EPOCH + std::time::Duration::from_millis(1_796_000_000_000);
        let restart = start + std::time::Duration::from_millis(1);
        let first = generated_node_id("cm", "xmppd-cm-0", 1, start);
        assert_eq!(first, "cm-xmppd-cm-0-1-mx2k114w");
        assert_ne!(first, generated_node_id("cm", "xmppd-cm-0", 1, restart));
        let config = ClusterConfig::default();
        assert_eq!(
            config.node_id_or_generated("router"),
            config.node_id_or_generated("router"),
            "one process, one id"
        );
    }

    #[test]
    fn no_file_gives_defaults() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config.server.domain, "localhost");
        assert!(config.auth.require_tls);
        assert!(!config.auth.registration);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.toml");
        std::fs::write(
            &path,
            "[server]\ndomain = \"example.org\"\n[limits]\nmax_depth = 10\n",
        )
        .unwrap();
        let config = Config::load_with_env(
            Some(&path),
            env(&[
                ("XMPPD_LIMITS__MAX_DEPTH", "20"),
                ("XMPPD_AUTH__REGISTRATION", "true"),
                ("XMPPD_STORAGE__URL", "postgres://root@127.0.0.1/x"),
                ("XMPPD_TEST_POSTGRES_URL", "not configuration"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.domain, "example.org");
        assert_eq!(config.limits.max_depth, 20);
        assert!(config.auth.registration);
        assert_eq!(config.storage.url, "postgres://root@127.0.0.1/x");
    }

    #[test]
    fn unknown_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.toml");
        std::fs::write(&path, "[server]\ndomian = \"typo\"\n").unwrap();
        let error = Config::load_with_env(Some(&path), env(&[])).unwrap_err();
        assert!(error.to_string().contains("domian"), "{error}");
    }

    #[test]
    fn tracing_is_off_and_logs_are_text_by_default() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert!(!config.tracing.enabled);
        assert_eq!(config.observability.log_format, LogFormat::Text);
        assert_eq!(
            config.tracing.endpoint_or_default(),
            "http://127.0.0.1:4317"
        );
    }

    #[test]
    fn tracing_reads_its_protocol_ratio_and_attributes_from_the_environment() {
        let overrides = [
            ("XMPPD_TRACING__ENABLED", "true"),
            ("XMPPD_TRACING__PROTOCOL", "http"),
            ("XMPPD_TRACING__SAMPLING_RATIO", "0.25"),
            (
                "XMPPD_TRACING__ATTRIBUTES",
                "{ \"deployment.environment\" = \"staging\" }",
            ),
            ("XMPPD_OBSERVABILITY__LOG_FORMAT", "json"),
        ];
        let config = Config::load_with_env(None, env(&overrides)).unwrap();
        assert!(config.tracing.enabled);
        assert_eq!(config.tracing.protocol, OtlpProtocol::Http);
        assert_eq!(
            config.tracing.endpoint_or_default(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(config.tracing.sampling_ratio, 0.25);
        assert_eq!(
            config.tracing.attributes["deployment.environment"],
            "staging"
        );
        assert_eq!(config.observability.log_format, LogFormat::Json);
    }

    #[test]
    fn a_sampling_ratio_outside_zero_to_one_is_refused() {
        for ratio in ["1.5", "-0.1"] {
            let overrides = [("XMPPD_TRACING__SAMPLING_RATIO", ratio)];
            let error = Config::load_with_env(None, env(&overrides)).unwrap_err();
            assert!(error.to_string().contains("sampling_ratio"), "{error}");
        }
        for ratio in ["0", "1", "0.0", "1.0"] {
            let overrides = [("XMPPD_TRACING__SAMPLING_RATIO", ratio)];
            Config::load_with_env(None, env(&overrides)).unwrap();
        }
    }

    #[test]
    fn an_unknown_log_format_or_protocol_is_refused() {
        let error = Config::load_with_env(None, env(&[("XMPPD_OBSERVABILITY__LOG_FORMAT", "xml")]))
            .unwrap_err();
        assert!(error.to_string().contains("xml"), "{error}");
        let error =
            Config::load_with_env(None, env(&[("XMPPD_TRACING__PROTOCOL", "udp")])).unwrap_err();
        assert!(error.to_string().contains("udp"), "{error}");
    }

    #[test]
    fn a_pool_of_no_connections_is_refused() {
        let error = Config::load_with_env(None, env(&[("XMPPD_STORAGE__MAX_CONNECTIONS", "0")]))
            .unwrap_err();
        assert!(error.to_string().contains("max_connections"), "{error}");
    }

    #[test]
    fn a_pool_kept_larger_than_its_maximum_is_refused() {
        let overrides = [
            ("XMPPD_STORAGE__MAX_CONNECTIONS", "4"),
            ("XMPPD_STORAGE__MIN_CONNECTIONS", "5"),
        ];
        let error = Config::load_with_env(None, env(&overrides)).unwrap_err();
        assert!(error.to_string().contains("min_connections (5)"), "{error}");
        let overrides = [
            ("XMPPD_STORAGE__MAX_CONNECTIONS", "4"),
            ("XMPPD_STORAGE__MIN_CONNECTIONS", "4"),
        ];
        Config::load_with_env(None, env(&overrides)).unwrap();
    }

    #[test]
    fn a_resume_timeout_beyond_its_maximum_is_refused() {
        let overrides = [
            ("XMPPD_STREAM_MANAGEMENT__RESUME_TIMEOUT_SECS", "700"),
            ("XMPPD_STREAM_MANAGEMENT__MAX_RESUME_TIMEOUT_SECS", "600"),
        ];
        let error = Config::load_with_env(None, env(&overrides)).unwrap_err();
        assert!(
            error.to_string().contains("resume_timeout_secs (700)"),
            "{error}"
        );
        let overrides = [("XMPPD_STREAM_MANAGEMENT__RESUME_TIMEOUT_SECS", "600")];
        Config::load_with_env(None, env(&overrides)).unwrap();
    }

    #[test]
    fn acks_must_be_requested() {
        for key in [
            "XMPPD_STREAM_MANAGEMENT__ACK_REQUEST_AFTER_STANZAS",
            "XMPPD_STREAM_MANAGEMENT__ACK_REQUEST_AFTER_MS",
        ] {
            let error = Config::load_with_env(None, env(&[(key, "0")])).unwrap_err();
            assert!(error.to_string().contains("at least 1"), "{error}");
        }
    }

    #[test]
    fn websocket_origins_are_a_list_in_the_environment_too() {
        let overrides = [
            ("XMPPD_WEBSOCKET__ORIGINS", "[\"https://chat.example.org\"]"),
            ("XMPPD_LISTEN__WEBSOCKET", ""),
        ];
        let config = Config::load_with_env(None, env(&overrides)).unwrap();
        assert_eq!(config.websocket.origins, ["https://chat.example.org"]);
        assert!(config.listen.websocket.is_empty());
        assert_eq!(Config::default().listen.websocket, "127.0.0.1:5280");
    }

    #[test]
    fn a_websocket_path_must_be_absolute() {
        let error =
            Config::load_with_env(None, env(&[("XMPPD_WEBSOCKET__PATH", "ws")])).unwrap_err();
        assert!(error.to_string().contains("websocket.path"), "{error}");
    }

    #[test]
    fn wrong_type_in_environment_is_an_error() {
        let error =
            Config::load_with_env(None, env(&[("XMPPD_LIMITS__MAX_DEPTH", "deep")])).unwrap_err();
        assert!(error.to_string().contains("max_depth"), "{error}");
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        let defaults = Value::try_from(Config::default()).unwrap();
        // Keys unset by default, which the serialised defaults leave out.
        let mut keys = vec![
            "XMPPD_TLS__CERT_FILE".to_string(),
            "XMPPD_TLS__KEY_FILE".to_string(),
            "XMPPD_CLUSTER_TLS__CA_FILE".to_string(),
            "XMPPD_CLUSTER_TLS__CERT_FILE".to_string(),
            "XMPPD_CLUSTER_TLS__KEY_FILE".to_string(),
        ];
        for (section, table) in defaults.as_table().unwrap() {
            for key in table.as_table().unwrap().keys() {
                keys.push(format!(
                    "XMPPD_{}__{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                ));
            }
        }
        for key in keys {
            assert!(
                doc.contains(&key),
                "{key} is missing from docs/configuration.md"
            );
        }
    }

    #[test]
    fn the_chat_service_is_at_conference_unless_configured() {
        let mut muc = MucConfig::default();
        assert_eq!(
            muc.service_domains("example.org"),
            ["conference.example.org"]
        );
        muc.domains = vec!["Rooms.example.org".into(), "chat.example.org".into()];
        assert_eq!(
            muc.service_domains("example.org"),
            ["rooms.example.org", "chat.example.org"]
        );
        muc.enabled = false;
        assert!(muc.service_domains("example.org").is_empty());
    }

    #[test]
    fn production_template_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/xmppd.production.toml");
        let config = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert!(config.auth.require_tls && !config.auth.registration);
    }

    #[test]
    fn missing_file_names_the_path() {
        let error =
            Config::load_with_env(Some(Path::new("/nonexistent/x.toml")), env(&[])).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/x.toml"));
    }
}
