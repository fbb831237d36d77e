//! Mutual TLS between xmppd's nodes: every gRPC connection of the cluster is TLS 1.3 with a
//! certificate on both sides, issued by the cluster's CA and naming its holder's role (and
//! node); every call is allowed only to the role that needs it.
//!
//! # Layout
//!
//! - [`ClusterTls`]: the entry point. Loads and checks the CA, certificate and key
//!   ([`CertPaths`]), and loads them again when they change ([`ClusterTls::keep_reloading`]);
//!   new connections use the new ones, established ones keep theirs.
//! - [`identity`]: how a certificate names its role and node (URI SANs).
//! - [`server`]: the gRPC server's listener, which hands tonic connections whose handshake
//!   (with a client certificate) is done.
//! - [`MutualTlsConnector`]: dials a node found in the registry and accepts it only if its
//!   certificate names the role the call needs and the node id the registry gave.
//! - [`authorize`]: which role may call which RPC (one table), enforced once per call.
//! - [`issue`]: a private CA and a certificate per role, for `xmppd certs init` and tests.

pub mod authorize;
mod connector;
mod error;
pub mod identity;
pub mod issue;
mod material;
pub mod server;
mod verify;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use xmppd_grpc::Role;

pub use authorize::RequireCallerRoleLayer;
pub use connector::MutualTlsConnector;
pub use error::ClusterTlsError;
pub use material::CertPaths;
pub use verify::Expected;

use material::{FileContents, Material, Own};

/// This process's side of the cluster's TLS. Cheap to clone; every clone sees reloads.
#[derive(Clone)]
pub struct ClusterTls {
    shared: Arc<Shared>,
}

struct Shared {
    paths: CertPaths,
    own: Own,
    /// The configurations in use. Read once per connection (never per message), replaced
    /// whole on reload; never held across an await.
    current: RwLock<Arc<Material>>,
}

impl ClusterTls {
    /// Loads the files of a process of `role` registered as `node_id`, and checks them (see
    /// [`ClusterTlsError`] for what is refused).
    pub fn load(
        paths: CertPaths,
        role: Role,
        node_id: &str,
    ) -> Result<ClusterTls, ClusterTlsError> {
        let own = Own {
            role,
            node_id: node_id.to_string(),
        };
        let material = Material::load(&paths, FileContents::read(&paths)?, &own)?;
        Ok(ClusterTls {
            shared: Arc::new(Shared {
                paths,
                own,
                current: RwLock::new(Arc::new(material)),
            }),
        })
    }

    /// Loads the files again if their contents changed. `Ok(true)` when the new ones are in
    /// use; on an error the old ones stay in use.
    pub fn reload(&self) -> Result<bool, ClusterTlsError> {
        let contents = FileContents::read(&self.shared.paths)?;
        if contents == self.current().contents {
            return Ok(false);
        }
        let material = Material::load(&self.shared.paths, contents, &self.shared.own)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(material);
        Ok(true)
    }

    /// Checks the files every `interval` and reloads them when they changed (a Kubernetes
    /// Secret is updated in place, cert-manager renews before expiry). Comparing contents,
    /// not modification times, sees every change, however quick.
    pub fn keep_reloading(&self, interval: Duration) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match tls.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.shared.paths.cert.display(), "cluster certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "cluster certificate not reloaded, the previous one stays in use")
                    }
                }
            }
        });
    }

    /// The server configuration for the next connection accepted.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server_config()
    }

    /// The client configuration for the next connection to a node that must prove `expected`.
    pub fn client_config(&self, expected: Expected) -> Arc<ClientConfig> {
        self.current().client_config(expected)
    }

    fn current(&self) -> Arc<Material> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ANY_NODE;
    use crate::issue::{ClusterCa, init_dir};

    fn router_tls(dir: &std::path::Path) -> Result<ClusterTls, ClusterTlsError> {
        ClusterTls::load(
            CertPaths::in_dir(&dir.join("router")),
            Role::Router,
            "router-1",
        )
    }

    #[test]
    fn loads_what_certs_init_writes_for_each_role() {
        let dir = tempfile::tempdir().unwrap();
        init_dir(dir.path()).unwrap();
        for role in identity::CLUSTER_ROLES {
            let paths = CertPaths::in_dir(&dir.path().join(identity::role_name(role)));
            ClusterTls::load(paths, role, "any-node").unwrap();
        }
        let again = init_dir(dir.path()).unwrap_err();
        assert!(
            matches!(again, ClusterTlsError::AlreadyExists { .. }),
            "{again}"
        );
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_old_ones_when_the_new_are_unusable() {
        let dir = tempfile::tempdir().unwrap();
        init_dir(dir.path()).unwrap();
        let tls = router_tls(dir.path()).unwrap();
        assert!(!tls.reload().unwrap(), "nothing changed");

        let ca = ClusterCa::load(dir.path()).unwrap();
        let role_dir = dir.path().join("router");
        ca.write_secret_dir(&role_dir, &ca.issue(Role::Router, "router-1").unwrap())
            .unwrap();
        let before = tls.server_config();
        assert!(tls.reload().unwrap());
        assert!(
            !Arc::ptr_eq(&before, &tls.server_config()),
            "the new files are in use"
        );

        let renewed = tls.server_config();
        let stray = ca.issue(Role::Router, ANY_NODE).unwrap();
        std::fs::write(role_dir.join("tls.key"), stray.key_pem).unwrap();
        let error = tls.reload().unwrap_err();
        assert!(
            matches!(error, ClusterTlsError::KeyMismatch { .. }),
            "{error}"
        );
        assert!(
            Arc::ptr_eq(&renewed, &tls.server_config()),
            "the previous files stay in use"
        );
    }

    #[test]
    fn refuses_a_certificate_for_another_role_or_node() {
        let dir = tempfile::tempdir().unwrap();
        init_dir(dir.path()).unwrap();
        let ca = ClusterCa::load(dir.path()).unwrap();
        let role_dir = dir.path().join("router");
        ca.write_secret_dir(&role_dir, &ca.issue(Role::Session, ANY_NODE).unwrap())
            .unwrap();
        let error = router_tls(dir.path()).err().unwrap();
        assert!(
            matches!(error, ClusterTlsError::WrongRole { .. }),
            "{error}"
        );
        ca.write_secret_dir(&role_dir, &ca.issue(Role::Router, "router-2").unwrap())
            .unwrap();
        let error = router_tls(dir.path()).err().unwrap();
        assert!(
            matches!(error, ClusterTlsError::WrongNode { .. }),
            "{error}"
        );
    }

    #[test]
    fn refuses_a_certificate_from_another_ca() {
        let dir = tempfile::tempdir().unwrap();
        init_dir(dir.path()).unwrap();
        let other = ClusterCa::generate("another CA").unwrap();
        let issued = other.issue(Role::Router, ANY_NODE).unwrap();
        std::fs::write(dir.path().join("router/tls.crt"), issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("router/tls.key"), issued.key_pem).unwrap();
        let error = router_tls(dir.path()).err().unwrap();
        assert!(
            matches!(error, ClusterTlsError::NotFromCa { .. }),
            "{error}"
        );
    }
}
