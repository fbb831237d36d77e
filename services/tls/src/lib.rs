//! TLS for xmppd: the rustls server configuration for client streams, a self-signed
//! certificate when none is configured, and the channel bindings SCRAM -PLUS checks.
//!
//! # Layout
//!
//! - [`ServerTls`]: the entry point. [`ServerTls::load`] reads (or generates) the certificate
//!   once; [`ServerTls::acceptor`] wraps connections; [`ServerTls::channel_bindings`] gives
//!   the bindings of an established connection to `xmppd_sasl::ScramServer`.
//! - [`certs`]: PEM loading and the persisted self-signed certificate.
//! - [`binding`]: tls-exporter (RFC 9266) and tls-server-end-point (RFC 5929).
//! - [`insecure`]: a client configuration that trusts anything, for tests on loopback.
//!
//! Everything here is synchronous except the handshake itself, which tokio-rustls drives.

pub mod binding;
pub mod certs;
mod error;
pub mod insecure;
mod stream;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, ServerConnection};
use xmppd_sasl::ChannelBinding;

pub use binding::channel_bindings;
pub use certs::{CertifiedKeyFiles, load_or_generate};
pub use error::TlsError;
pub use insecure::insecure_client_config;
pub use stream::MaybeTls;

/// The ALPN protocol of XEP-0368 direct TLS for client streams.
pub const XMPP_CLIENT_ALPN: &[u8] = b"xmpp-client";

/// The server-side TLS of client streams: one configuration for every connection, plus what
/// channel bindings need to know about our certificate.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// tls-server-end-point data: it depends only on our certificate, so it is computed once.
    end_point_binding: Vec<u8>,
}

impl ServerTls {
    /// Loads `cert` and `key`, or a self-signed certificate for `domain` kept in `data_dir`
    /// (see [`load_or_generate`]), and builds the configuration (see [`server_config`]).
    pub fn load(
        domain: &str,
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Self, TlsError> {
        Self::from_files(load_or_generate(domain, cert, key, data_dir)?)
    }

    /// Builds the configuration from an already loaded chain and key.
    pub fn from_files(files: CertifiedKeyFiles) -> Result<Self, TlsError> {
        let CertifiedKeyFiles {
            chain,
            key,
            cert_path,
            key_path,
        } = files;
        let end_point_binding = chain
            .first()
            .map(|leaf| binding::server_end_point(leaf))
            .ok_or_else(|| TlsError::NoCertificate {
                path: cert_path.clone(),
            })?;
        let mut config = ServerConfig::builder_with_provider(server_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| TlsError::Config { error })?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::InvalidKeyPair {
                cert: cert_path,
                key: key_path,
                error,
            })?;
        // rustls refuses a client that offers ALPN without "xmpp-client" (RFC 7301 §3.2);
        // clients that offer no ALPN at all, as STARTTLS clients do, are unaffected.
        config.alpn_protocols = vec![XMPP_CLIENT_ALPN.to_vec()];
        // Our order of cipher suites, not the client's (see `server_provider`).
        config.ignore_client_order = true;
        // No session resumption. rustls' default keeps 256 sessions per process and sends
        // two tickets after every handshake: a connection-manager holding a million sessions
        // could resume almost none of them, yet paid for the tickets (about 5% of a login's
        // CPU). Resumption worth having needs stateless tickets under a key every
        // connection-manager shares.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Self {
            config: Arc::new(config),
            end_point_binding,
        })
    }

    /// The rustls configuration, for callers that drive TLS themselves.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// An acceptor for STARTTLS upgrades and direct-TLS listeners.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The channel bindings of an established connection accepted with this configuration.
    pub fn channel_bindings(&self, conn: &ServerConnection) -> Vec<ChannelBinding> {
        binding::with_end_point(conn, self.end_point_binding.clone())
    }
}

/// A rustls configuration for client streams: TLS 1.2 and 1.3, ALPN "xmpp-client" offered
/// (XEP-0368) but not required. Prefer [`ServerTls::load`], which also keeps what
/// [`ServerTls::channel_bindings`] needs.
pub fn server_config(
    domain: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    ServerTls::load(domain, cert, key, data_dir).map(|tls| tls.config)
}

/// The ring provider, named explicitly so that no process-wide default has to be installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider of client streams: AES-128-GCM first, then AES-256-GCM, then ChaCha20, as
/// Mozilla's server configurations order them. Many clients (rustls', OpenSSL's) list
/// AES-256-GCM with SHA-384 first, and SHA-384 has no instructions of its own on x86 where
/// SHA-256 has: the TLS 1.3 key schedule in SHA-384 made SHA-512's compression function the
/// largest single cost of a connection-manager in a login storm. Preferring AES-128-GCM cut
/// the all-in-one's CPU per STARTTLS login by about 9% (docs/benchmarks.md).
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| bulk_cipher_rank(suite.suite()));
    Arc::new(provider)
}

fn bulk_cipher_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite::*;
    match suite {
        TLS13_AES_128_GCM_SHA256
        | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        TLS13_AES_256_GCM_SHA384
        | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests;
