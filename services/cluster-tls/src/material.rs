//! One generation of the cluster's certificate files, read, checked and turned into rustls
//! configurations: the server's, shared by every connection it accepts, and the client's,
//! which [`Material::client_config`] specialises for each node dialled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use xmppd_grpc::Role;

use crate::ClusterTlsError;
use crate::identity::{Identity, role_name};
use crate::verify::{Expected, PeerVerifier};

/// gRPC speaks HTTP/2; tonic's client refuses a connection that did not agree on it.
const H2: &[u8] = b"h2";

/// Where the cluster CA, this node's certificate and its key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    /// The layout of a Kubernetes TLS Secret (cert-manager's too): `ca.crt`, `tls.crt` and
    /// `tls.key` in `dir`.
    pub fn in_dir(dir: &Path) -> CertPaths {
        CertPaths {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }
}

/// The bytes of the three files, kept to tell whether they changed since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileContents {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl FileContents {
    pub(crate) fn read(paths: &CertPaths) -> Result<FileContents, ClusterTlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| ClusterTlsError::Read {
                path: path.to_owned(),
                error,
            })
        };
        Ok(FileContents {
            ca: read(&paths.ca)?,
            cert: read(&paths.cert)?,
            key: read(&paths.key)?,
        })
    }
}

/// Who this process is: the role and node id its certificate must name.
#[derive(Clone, Debug)]
pub(crate) struct Own {
    pub role: Role,
    pub node_id: String,
}

/// The configurations built from one [`FileContents`].
pub(crate) struct Material {
    pub contents: FileContents,
    server: Arc<ServerConfig>,
    /// Verifies nothing as it is (its verifier expects no role): see [`Material::client_config`].
    client: ClientConfig,
    roots: Arc<RootCertStore>,
}

impl Material {
    /// Checks everything a handshake would find wrong later: the CA parses, the key belongs
    /// to the certificate, the certificate is valid under the CA for what this role does
    /// with it, and it names this process's role and node.
    pub(crate) fn load(
        paths: &CertPaths,
        contents: FileContents,
        own: &Own,
    ) -> Result<Material, ClusterTlsError> {
        let provider = provider();
        let roots = Arc::new(roots(&paths.ca, &contents.ca)?);
        let chain = chain(&paths.cert, &contents.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|error| match error {
            rustls::pki_types::pem::Error::NoItemsFound => ClusterTlsError::NoPrivateKey {
                path: paths.key.clone(),
            },
            error => ClusterTlsError::Pem {
                path: paths.key.clone(),
                error,
            },
        })?;
        let certified = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|error| {
            ClusterTlsError::KeyMismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
                error,
            }
        })?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|error| {
                    ClusterTlsError::Config(rustls::Error::General(error.to_string()))
                })?;
        check_issued(
            paths,
            &chain,
            own.role,
            &roots,
            &provider,
            client_verifier.as_ref(),
        )?;
        check_names(paths, &chain[0], own)?;

        let certified = Arc::new(certified);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ClusterTlsError::Config)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
        server.alpn_protocols = vec![H2.to_vec()];
        // Every connection proves its certificate afresh: no resumption, no tickets.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});

        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ClusterTlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(
                roots.clone(),
                &provider,
                Expected::nobody(),
            )))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        client.alpn_protocols = vec![H2.to_vec()];
        // A resumed session skips the server's certificate, which must name the node dialled.
        client.resumption = Resumption::disabled();
        Ok(Material {
            contents,
            server: Arc::new(server),
            client,
            roots,
        })
    }

    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The client configuration for dialling a node that must prove `expected`.
    pub(crate) fn client_config(&self, expected: Expected) -> Arc<ClientConfig> {
        let mut config = self.client.clone();
        let provider = config.crypto_provider().clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(PeerVerifier::new(
                self.roots.clone(),
                &provider,
                expected,
            )));
        Arc::new(config)
    }
}

/// The ring provider, named explicitly so that no process-wide default has to be installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, ClusterTlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in chain(path, pem)? {
        roots
            .add(certificate)
            .map_err(|error| ClusterTlsError::BadCa {
                path: path.to_owned(),
                error,
            })?;
    }
    Ok(roots)
}

/// The certificates of a PEM file, at least one.
fn chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClusterTlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ClusterTlsError::Pem {
            path: path.to_owned(),
            error,
        })?;
    if chain.is_empty() {
        return Err(ClusterTlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The certificate is valid under the CA, for each use this role makes of it: routers and
/// session replicas serve (server authentication), connection-managers and routers dial
/// (client authentication).
fn check_issued(
    paths: &CertPaths,
    chain: &[CertificateDer<'static>],
    role: Role,
    roots: &RootCertStore,
    provider: &CryptoProvider,
    client_verifier: &dyn rustls::server::danger::ClientCertVerifier,
) -> Result<(), ClusterTlsError> {
    let not_from_ca = |error| ClusterTlsError::NotFromCa {
        cert: paths.cert.clone(),
        ca: paths.ca.clone(),
        error,
    };
    let (leaf, intermediates) = (&chain[0], &chain[1..]);
    let now = UnixTime::now();
    if matches!(role, Role::Router | Role::Session) {
        let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(not_from_ca)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )
        .map_err(not_from_ca)?;
    }
    if matches!(role, Role::ConnectionManager | Role::Router) {
        client_verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(not_from_ca)?;
    }
    Ok(())
}

fn check_names(
    paths: &CertPaths,
    leaf: &CertificateDer<'_>,
    own: &Own,
) -> Result<(), ClusterTlsError> {
    let identity = Identity::of(leaf).map_err(|error| ClusterTlsError::Identity {
        path: paths.cert.clone(),
        error,
    })?;
    if identity.role != own.role {
        return Err(ClusterTlsError::WrongRole {
            path: paths.cert.clone(),
            named: role_name(identity.role),
            expected: role_name(own.role),
        });
    }
    if !identity.names_node(&own.node_id) {
        return Err(ClusterTlsError::WrongNode {
            path: paths.cert.clone(),
            node: own.node_id.clone(),
            nodes: identity.nodes,
        });
    }
    Ok(())
}
