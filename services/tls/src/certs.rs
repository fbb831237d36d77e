//! Loading a certificate chain and key from PEM files, or generating and keeping a
//! self-signed one so that a fresh install speaks TLS with no configuration.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// A certificate chain and its private key, with the files they came from (for error messages
/// and logs).
#[derive(Debug)]
pub struct CertifiedKeyFiles {
    /// Leaf first, as rustls wants it.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Loads `cert` and `key`, or, when neither is configured, a self-signed certificate for
/// `domain` kept under `data_dir`, generated on first use so that restarts (and clients that
/// pinned it) keep the same certificate.
///
/// A generated pair lives in its own directory, `{domain}.tls/` (`cert.pem`, `key.pem`), which
/// appears in one rename once both files are complete: processes sharing a `data_dir` that
/// start together each generate a pair, one rename wins, and every process loads the winner's
/// pair, never a key of one and a certificate of another. A pair from older versions,
/// `{domain}.crt.pem` and `{domain}.key.pem` beside it, is still loaded when there is no
/// directory, so an existing install keeps its certificate.
///
/// The SANs of a generated certificate are `domain`, plus 127.0.0.1 and ::1 when the domain is
/// `localhost`.
pub fn load_or_generate(
    domain: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<CertifiedKeyFiles, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => load(cert, key),
        (None, None) => load_generated(domain, data_dir),
        (Some(_), None) => Err(TlsError::IncompleteConfig {
            configured: "certificate",
        }),
        (None, Some(_)) => Err(TlsError::IncompleteConfig { configured: "key" }),
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKeyFiles, TlsError> {
    let chain = rustls_pemfile::certs(&mut read(cert_path)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(cert_path, error))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut read(key_path)?.as_slice())
        .map_err(|error| pem_error(key_path, error))?
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: key_path.to_owned(),
        })?;
    Ok(CertifiedKeyFiles {
        chain,
        key,
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
    })
}

fn load_generated(domain: &str, data_dir: &Path) -> Result<CertifiedKeyFiles, TlsError> {
    check_domain(domain)?;
    let pair = data_dir.join(format!("{domain}.tls"));
    let (cert_path, key_path) = pair_files(&pair);
    if exists(&pair)? {
        return load(&cert_path, &key_path);
    }
    let legacy_cert = data_dir.join(format!("{domain}.crt.pem"));
    let legacy_key = data_dir.join(format!("{domain}.key.pem"));
    if exists(&legacy_cert)? && exists(&legacy_key)? {
        return load(&legacy_cert, &legacy_key);
    }
    let (cert_pem, key_pem) = generate(domain)?;
    fs::create_dir_all(data_dir).map_err(|error| write_error(data_dir, error))?;
    let staging = staging_dir(data_dir, domain);
    let published = write_pair(&staging, cert_pem.as_bytes(), key_pem.as_bytes())
        .and_then(|()| fs::rename(&staging, &pair));
    match published {
        Ok(()) => tracing::warn!(
            domain,
            cert = %cert_path.display(),
            "no tls certificate configured, generated a self-signed one"
        ),
        // Another process published its pair first: ours is dropped and theirs is used.
        Err(_) if exists(&pair)? => {}
        Err(error) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(write_error(&pair, error));
        }
    }
    let _ = fs::remove_dir_all(&staging);
    load(&cert_path, &key_path)
}

fn pair_files(pair: &Path) -> (PathBuf, PathBuf) {
    (pair.join("cert.pem"), pair.join("key.pem"))
}

/// A directory name no other generator, in this process or another, uses at the same time.
fn staging_dir(data_dir: &Path, domain: &str) -> PathBuf {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    data_dir.join(format!(
        ".{domain}.tls.{}.{sequence}.tmp",
        std::process::id()
    ))
}

/// Writes both files, durably, into a fresh directory.
fn write_pair(dir: &Path, cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<()> {
    fs::create_dir(dir)?;
    let (cert_path, key_path) = pair_files(dir);
    for (path, contents, private) in [(&key_path, key_pem, true), (&cert_path, cert_pem, false)] {
        let mut file = new_file(path, private)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    Ok(())
}

/// The domain becomes a file name, so only DNS characters are allowed in it.
fn check_domain(domain: &str) -> Result<(), TlsError> {
    let valid = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.contains("..")
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(TlsError::InvalidDomain {
            domain: domain.to_owned(),
        })
    }
}

/// A self-signed certificate and its key, both PEM.
pub(crate) fn generate(domain: &str) -> Result<(String, String), TlsError> {
    let generate_error = |error| TlsError::Generate {
        domain: domain.to_owned(),
        error,
    };
    let mut names = vec![domain.to_owned()];
    if domain == "localhost" {
        names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(generate_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, domain);
    let key = rcgen::KeyPair::generate().map_err(generate_error)?;
    let cert = params.self_signed(&key).map_err(generate_error)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Creates `path`, which must not exist yet; readable by its owner only when `private` (a key).
pub fn new_file(path: &Path, private: bool) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn pem_error(path: &Path, error: std::io::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        error,
    }
}

fn write_error(path: &Path, error: std::io::Error) -> TlsError {
    TlsError::Write {
        path: path.to_owned(),
        error,
    }
}
