//! What all connections of one connection-manager share.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use xmppd_protocol::error::StreamErrorCondition;
use xmppd_protocol::stream::Limits;
use xmppd_runtime::Config;
use xmppd_runtime::reload::Live;
use xmppd_runtime::shutdown::Shutdown;
use xmppd_sasl::{DecoySecret, Decoys};
use xmppd_tls::ServerTls;

use crate::bound_stream::SHUTDOWN_TEXT;
use crate::cluster::Cluster;
use crate::limits::{ConnectionsPerIp, WindowCounter};
use crate::metrics::EdgeMetrics;
use crate::stream_management;

/// The configuration the edge acts on, read from [`Config`] at start and at
/// each reload.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    pub domain: String,
    pub require_tls: bool,
    pub allow_plain: bool,
    pub registration: bool,
    /// XEP-0077 password changes, answered here: `[modules.register]`.
    pub password_change: bool,
    pub scram_iterations: u32,
    pub limits: Limits,
    pub connections_per_ip: u32,
    pub max_connections: u32,
    pub max_presence_bytes: usize,
    /// Every client connection starts with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    pub stanzas_per_second: u32,
    pub stanza_burst: u32,
    pub ping_after: Duration,
    pub idle_timeout: Duration,
    pub negotiation_timeout: Duration,
    pub write_timeout: Duration,
    pub failures_per_ip_per_minute: u32,
    pub failures_per_account_per_ip_per_minute: u32,
    pub failures_per_account_per_minute: u32,
    pub failure_delay: Duration,
    pub max_failure_delay: Duration,
    pub registrations_per_ip_per_hour: u32,
    pub stream_management: stream_management::Settings,
}

impl EdgeSettings {
    pub fn from_config(config: &Config) -> Self {
        EdgeSettings {
            domain: config.server.domain.clone(),
            require_tls: config.auth.require_tls,
            allow_plain: config.auth.allow_plain,
            registration: config.auth.registration,
            // The session replicas' own reading of the section refuses an
            // `enabled` that is not a boolean at start.
            password_change: config
                .modules
                .get("register")
                .and_then(|section| section.get("enabled"))
                .and_then(|enabled| enabled.as_bool())
                .unwrap_or(true),
            scram_iterations: config.auth.scram_iterations,
            limits: Limits {
                max_stanza_bytes: config.limits.max_stanza_bytes,
                max_depth: config.limits.max_depth,
                max_attributes: config.limits.max_attributes,
            },
            connections_per_ip: config.limits.connections_per_ip,
            max_connections: config.limits.max_connections,
            max_presence_bytes: config.limits.max_presence_bytes,
            proxy_protocol: config.listen.proxy_protocol,
            stanzas_per_second: config.limits.stanzas_per_second,
            stanza_burst: config.limits.stanza_burst,
            ping_after: Duration::from_secs(config.limits.ping_after_secs),
            idle_timeout: Duration::from_secs(config.limits.idle_timeout_secs),
            negotiation_timeout: Duration::from_secs(config.limits.negotiation_timeout_secs),
            write_timeout: Duration::from_secs(config.limits.write_timeout_secs),
            failures_per_ip_per_minute: config.auth.failures_per_ip_per_minute,
            failures_per_account_per_ip_per_minute: config
                .auth
                .failures_per_account_per_ip_per_minute,
            failures_per_account_per_minute: config.auth.failures_per_account_per_minute,
            failure_delay: Duration::from_millis(config.auth.failure_delay_ms),
            max_failure_delay: Duration::from_millis(config.auth.max_failure_delay_ms),
            registrations_per_ip_per_hour: config.auth.registrations_per_ip_per_hour,
            stream_management: stream_management::Settings::from_config(&config.stream_management),
        }
    }
}

pub struct Edge {
    /// The domain served: no reload changes it.
    pub domain: String,
    /// Read through [`Edge::settings`]; a reload replaces it.
    settings: Live<EdgeSettings>,
    pub cluster: Cluster,
    pub tls: ServerTls,
    /// What unknown accounts' decoy salts are derived from: the same on every
    /// connection-manager of a deployment, fixed until a restart.
    decoy_secret: DecoySecret,
    pub metrics: EdgeMetrics,
    pub shutdown: Shutdown,
    pub connections: Arc<ConnectionsPerIp>,
    pub auth_failures_by_ip: WindowCounter<IpAddr>,
    pub auth_failures_by_account_ip: WindowCounter<(String, IpAddr)>,
    pub auth_failures_by_account: WindowCounter<String>,
    pub registrations_by_ip: WindowCounter<IpAddr>,
}

impl Edge {
    pub fn new(
        settings: EdgeSettings,
        cluster: Cluster,
        tls: ServerTls,
        decoy_secret: DecoySecret,
        metrics: EdgeMetrics,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let minute = Duration::from_secs(60);
        Arc::new(Edge {
            auth_failures_by_ip: WindowCounter::new(settings.failures_per_ip_per_minute, minute),
            auth_failures_by_account_ip: WindowCounter::new(
                settings.failures_per_account_per_ip_per_minute,
                minute,
            ),
            auth_failures_by_account: WindowCounter::new(
                settings.failures_per_account_per_minute,
                minute,
            ),
            registrations_by_ip: WindowCounter::new(
                settings.registrations_per_ip_per_hour,
                60 * minute,
            ),
            connections: Arc::default(),
            domain: settings.domain.clone(),
            settings: Live::new(settings),
            cluster,
            tls,
            decoy_secret,
            metrics,
            shutdown,
        })
    }

    /// How an unknown account is answered under the settings in force.
    pub fn decoys(&self, settings: &EdgeSettings) -> Decoys<'_> {
        Decoys {
            secret: &self.decoy_secret,
            iterations: settings.scram_iterations,
        }
    }

    /// The settings in force now; a stream takes them when it opens and
    /// keeps them.
    pub fn settings(&self) -> Arc<EdgeSettings> {
        self.settings.get()
    }

    /// Applies a reloaded configuration to what starts from now on, and to
    /// the throttles' limits (their counts are kept).
    pub fn reload(&self, config: &Config) {
        let settings = EdgeSettings::from_config(config);
        self.auth_failures_by_ip
            .set_max(settings.failures_per_ip_per_minute);
        self.auth_failures_by_account_ip
            .set_max(settings.failures_per_account_per_ip_per_minute);
        self.auth_failures_by_account
            .set_max(settings.failures_per_account_per_minute);
        self.registrations_by_ip
            .set_max(settings.registrations_per_ip_per_hour);
        self.settings.set(settings);
    }

    /// Once shutdown has begun: tells every bound client to reconnect
    /// later (`system-shutdown`) and ends its stream.
    pub fn close_bound_streams(&self) {
        self.cluster
            .close_all(StreamErrorCondition::SystemShutdown, SHUTDOWN_TEXT);
    }
}

/// The decoy secret of `auth.decoy_secret_file`: the file's bytes without a
/// trailing line break (`echo` and editors add one). No file configured: a
/// random secret of this process.
pub fn load_decoy_secret(file: Option<&Path>) -> anyhow::Result<DecoySecret> {
    let Some(file) = file else {
        return Ok(DecoySecret::random());
    };
    let mut secret = std::fs::read(file)
        .with_context(|| format!("cannot read auth.decoy_secret_file {}", file.display()))?;
    while secret
        .last()
        .is_some_and(|byte| matches!(byte, b'\n' | b'\r'))
    {
        secret.pop();
    }
    DecoySecret::new(secret).with_context(|| format!("auth.decoy_secret_file {}", file.display()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use xmppd_sasl::ScramHash;

    use super::*;

    fn salt(secret: &DecoySecret) -> Vec<u8> {
        let decoys = Decoys {
            secret,
            iterations: 10_000,
        };
        decoys.keys(ScramHash::Sha256, "nobody").salt
    }

    #[test]
    fn a_secret_file_reads_the_same_with_or_without_its_line_break() {
        let mut bare = tempfile::NamedTempFile::new().unwrap();
        bare.write_all(b"0123456789abcdef0123").unwrap();
        let mut echoed = tempfile::NamedTempFile::new().unwrap();
        echoed.write_all(b"0123456789abcdef0123\r\n").unwrap();
        let bare = load_decoy_secret(Some(bare.path())).unwrap();
        let echoed = load_decoy_secret(Some(echoed.path())).unwrap();
        assert_eq!(salt(&bare), salt(&echoed));
    }

    #[test]
    fn a_missing_or_short_secret_file_is_an_error_naming_it() {
        let missing = Path::new("/nonexistent/decoy-secret");
        let error = load_decoy_secret(Some(missing)).unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/decoy-secret"),
            "{error:#}"
        );
        let mut short = tempfile::NamedTempFile::new().unwrap();
        short.write_all(b"short\n").unwrap();
        let error = load_decoy_secret(Some(short.path())).unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("decoy_secret_file") && message.contains("at least 16 bytes"),
            "{message}"
        );
    }

    #[test]
    fn without_a_file_each_process_has_its_own_secret() {
        let (a, b) = (
            load_decoy_secret(None).unwrap(),
            load_decoy_secret(None).unwrap(),
        );
        assert_ne!(salt(&a), salt(&b));
    }
}
