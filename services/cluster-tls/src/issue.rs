//! A private cluster CA and the certificates it issues, for local clusters and tests
//! (`xmppd certs init`). In Kubernetes, cert-manager (or any CA) issues them instead; what a
//! certificate must carry is in `docs/security.md`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use xmppd_grpc::Role;

use crate::ClusterTlsError;
use crate::identity::{ANY_NODE, CLUSTER_ROLES, Identity, role_name};

/// A certificate naming a role (and a node) with its key, PEM.
pub struct RoleCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA that signs cluster certificates.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl ClusterCa {
    /// A new CA with a fresh key, called `name`.
    pub fn generate(name: &str) -> Result<ClusterCa, ClusterTlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(ClusterCa {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA `xmppd certs init` wrote to `dir` (`ca.crt`, `ca.key`).
    pub fn load(dir: &Path) -> Result<ClusterCa, ClusterTlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| ClusterTlsError::Read { path, error })
        };
        let cert_pem = read("ca.crt")?;
        let key = KeyPair::from_pem(&read("ca.key")?)?;
        Ok(ClusterCa {
            issuer: Issuer::from_ca_cert_pem(&cert_pem, key)?,
            cert_pem,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `role`, naming the node `node` ([`ANY_NODE`] for every node of the
    /// role), good for both ends of a connection.
    pub fn issue(&self, role: Role, node: &str) -> Result<RoleCertificate, ClusterTlsError> {
        self.issue_with_uris(role_name(role), &Identity::uris(role, node))
    }

    /// A certificate with exactly the URI SANs `uris`: [`ClusterCa::issue`] names a role and a
    /// node; tests make certificates that name something else.
    pub fn issue_with_uris(
        &self,
        common_name: &str,
        uris: &[String],
    ) -> Result<RoleCertificate, ClusterTlsError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = uris
            .iter()
            .map(|uri| Ok(SanType::URI(uri.as_str().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(RoleCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `issued` with this CA into `dir` as a Kubernetes TLS Secret lays them out
    /// (`ca.crt`, `tls.crt`, `tls.key`), creating `dir`.
    pub fn write_secret_dir(
        &self,
        dir: &Path,
        issued: &RoleCertificate,
    ) -> Result<(), ClusterTlsError> {
        create_dir(dir)?;
        write(&dir.join("ca.crt"), &self.cert_pem(), false)?;
        write(&dir.join("tls.crt"), &issued.cert_pem, false)?;
        write(&dir.join("tls.key"), &issued.key_pem, true)
    }
}

/// `xmppd certs init`: a new CA in `dir` (`ca.crt`, and `ca.key` to issue more), and a
/// certificate for every node of each role in `dir/<role>/`, the directory each role reads
/// by default. Refuses to replace an existing CA. Returns the directories written.
pub fn init_dir(dir: &Path) -> Result<Vec<PathBuf>, ClusterTlsError> {
    let ca_path = dir.join("ca.crt");
    if ca_path.exists() {
        return Err(ClusterTlsError::AlreadyExists { path: ca_path });
    }
    let ca = ClusterCa::generate("xmppd cluster CA")?;
    create_dir(dir)?;
    write(&dir.join("ca.key"), &ca.key_pem(), true)?;
    let mut written = Vec::new();
    for role in CLUSTER_ROLES {
        let role_dir = dir.join(role_name(role));
        ca.write_secret_dir(&role_dir, &ca.issue(role, ANY_NODE)?)?;
        written.push(role_dir);
    }
    // Last: its presence says the whole set is there.
    write(&ca_path, &ca.cert_pem(), false)?;
    Ok(written)
}

fn create_dir(dir: &Path) -> Result<(), ClusterTlsError> {
    std::fs::create_dir_all(dir).map_err(|error| ClusterTlsError::Write {
        path: dir.to_owned(),
        error,
    })
}

/// Writes `contents` to `path`, replacing it: a reload must see the whole new file, so it
/// is written beside and renamed over.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), ClusterTlsError> {
    let staging = path.with_extension("new");
    let written = (|| {
        let _ = std::fs::remove_file(&staging);
        let mut file = xmppd_tls::certs::new_file(&staging, private)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staging, path)
    })();
    written.map_err(|error| ClusterTlsError::Write {
        path: path.to_owned(),
        error,
    })
}
