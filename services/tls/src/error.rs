//! What can go wrong setting TLS up; every message names the file or domain involved.

use std::path::PathBuf;

/// Why TLS could not be configured. The underlying reason is part of the message (not a
/// `source()`), so that a one-line log of the error says everything an operator needs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {error}", path.display())]
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
        error: std::io::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key found in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("a tls certificate and key must be configured together, but only the {configured} is")]
    IncompleteConfig { configured: &'static str },
    #[error("{domain:?} cannot name a certificate file: use the ASCII (A-label) form of a domain")]
    InvalidDomain { domain: String },
    #[error("cannot generate a self-signed certificate for {domain}: {error}")]
    Generate { domain: String, error: rcgen::Error },
    #[error("certificate {} and key {} cannot be used together: {error}", cert.display(), key.display())]
    InvalidKeyPair {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
    #[error("cannot build the tls configuration: {error}")]
    Config { error: rustls::Error },
}
