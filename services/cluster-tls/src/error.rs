//! What can go wrong setting the cluster's TLS up; every message names the file involved, so
//! that the one line a failed start prints says what to fix.

use std::path::PathBuf;

use crate::identity::IdentityError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("cannot read {}: {error} (create the cluster's certificates with `xmppd certs init`, or set cluster_tls.dir)", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not valid PEM: {error}", path.display())]
    Pem {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key found in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("{} is not a usable CA certificate: {error}", path.display())]
    BadCa { path: PathBuf, error: rustls::Error },
    #[error("certificate {} and key {} do not belong together: {error}", cert.display(), key.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
    #[error("certificate {} is not valid under the cluster CA {}: {error}", cert.display(), ca.display())]
    NotFromCa {
        cert: PathBuf,
        ca: PathBuf,
        error: rustls::Error,
    },
    #[error("certificate {}: {error}", path.display())]
    Identity { path: PathBuf, error: IdentityError },
    #[error("certificate {} is for a {named}, but this process is a {expected}", path.display())]
    WrongRole {
        path: PathBuf,
        named: &'static str,
        expected: &'static str,
    },
    #[error("certificate {} does not name this node {node:?} (it names {nodes:?}; `*` would name every node of its role)", path.display())]
    WrongNode {
        path: PathBuf,
        node: String,
        nodes: Vec<String>,
    },
    #[error("cannot build the cluster's tls configuration: {0}")]
    Config(rustls::Error),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{} already exists: remove it to make a new cluster CA, or keep using it", path.display())]
    AlreadyExists { path: PathBuf },
}
