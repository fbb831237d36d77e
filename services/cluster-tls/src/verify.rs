//! The client's check of a server: its certificate chains to the cluster CA, and names the
//! role the call needs and the node id the registry gave. The TLS server name plays no part
//! (node ids are not DNS names, and a registry entry's address proves nothing).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use xmppd_grpc::Role;

use crate::identity::{Identity, role_name};

/// What the server dialled must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub role: Role,
    pub node_id: String,
}

impl Expected {
    /// Matches no certificate: what a configuration not yet made for one node expects.
    pub(crate) fn nobody() -> Expected {
        Expected {
            role: Role::Unspecified,
            node_id: String::new(),
        }
    }
}

/// A server certificate that chains to the CA but names someone else.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate names {presented}, not the {} {:?} the registry names", role_name(expected.role), expected.node_id)]
struct NotTheExpectedNode {
    presented: String,
    expected: Expected,
}

#[derive(Debug)]
pub(crate) struct PeerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    expected: Expected,
}

impl PeerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        provider: &CryptoProvider,
        expected: Expected,
    ) -> PeerVerifier {
        PeerVerifier {
            roots,
            algorithms: provider.signature_verification_algorithms,
            expected,
        }
    }

    fn check_identity(&self, end_entity: &CertificateDer<'_>) -> Result<(), String> {
        let identity = Identity::of(end_entity).map_err(|error| error.to_string())?;
        let Expected { role, node_id } = &self.expected;
        if identity.role == *role && identity.names_node(node_id) {
            return Ok(());
        }
        Err(format!(
            "the {} {:?}",
            role_name(identity.role),
            identity.nodes
        ))
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        self.check_identity(end_entity).map_err(|presented| {
            let mismatch = NotTheExpectedNode {
                presented,
                expected: self.expected.clone(),
            };
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                mismatch,
            ))))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
