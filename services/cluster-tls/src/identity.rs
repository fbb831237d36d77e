//! How a cluster certificate names its holder. Two kinds of URI SAN:
//!
//! - `xmppd:role:<role>`, exactly one: `connection-manager`, `router` or `session`. Servers
//!   check it against the RPC a caller makes; callers check it against the RPC they make.
//! - `xmppd:node:<id>`, one or more: the node ids the holder may register under, or
//!   `xmppd:node:*` for a certificate that every node of the role shares (one Kubernetes
//!   Secret per role). A caller dialling a node it found in the registry requires the
//!   node's id (or `*`) here, so a registry entry is a hint, never a credential.
//!
//! URIs rather than DNS names, because a node id is whatever the operator chose (or a
//! generated `<role>-<host>-<pid>`), not necessarily a valid DNS name.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use xmppd_grpc::Role;

/// The scheme and prefix of the role SAN.
pub const ROLE_PREFIX: &str = "xmppd:role:";
/// The scheme and prefix of the node SAN.
pub const NODE_PREFIX: &str = "xmppd:node:";
/// The node SAN value of a certificate shared by every node of its role.
pub const ANY_NODE: &str = "*";

/// The roles of the cluster, in the order `xmppd certs init` issues them.
pub const CLUSTER_ROLES: [Role; 3] = [Role::ConnectionManager, Role::Router, Role::Session];

/// The name of `role` in certificates, directories and the command line.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::ConnectionManager => "connection-manager",
        Role::Router => "router",
        Role::Session => "session",
        Role::Unspecified => "unspecified",
    }
}

/// The role named `name` (see [`role_name`]).
pub fn role_from_name(name: &str) -> Option<Role> {
    CLUSTER_ROLES
        .into_iter()
        .find(|role| role_name(*role) == name)
}

/// What a certificate proves about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The node ids it names; [`ANY_NODE`] for any node of the role.
    pub nodes: Vec<String>,
}

/// Why a certificate names no usable identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate names no role (a URI SAN {ROLE_PREFIX}<role>)")]
    NoRole,
    #[error("the certificate names more than one role")]
    SeveralRoles,
    #[error("the certificate names an unknown role {0:?}")]
    UnknownRole(String),
}

impl Identity {
    /// Reads the identity from a certificate's URI SANs.
    pub fn of(certificate: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
            .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
        let names = parsed
            .subject_alternative_name()
            .map_err(|error| IdentityError::Unparsable(error.to_string()))?
            .map(|extension| extension.value.general_names.as_slice())
            .unwrap_or_default();
        Self::from_uris(names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        }))
    }

    fn from_uris<'a>(uris: impl Iterator<Item = &'a str>) -> Result<Identity, IdentityError> {
        let mut role = None;
        let mut nodes = Vec::new();
        for uri in uris {
            if let Some(name) = uri.strip_prefix(ROLE_PREFIX) {
                let named = role_from_name(name)
                    .ok_or_else(|| IdentityError::UnknownRole(name.to_string()))?;
                if role.replace(named).is_some() {
                    return Err(IdentityError::SeveralRoles);
                }
            } else if let Some(node) = uri.strip_prefix(NODE_PREFIX) {
                nodes.push(node.to_string());
            }
        }
        Ok(Identity {
            role: role.ok_or(IdentityError::NoRole)?,
            nodes,
        })
    }

    /// True if the holder may act as the node `id`.
    pub fn names_node(&self, id: &str) -> bool {
        self.nodes.iter().any(|node| node == id || node == ANY_NODE)
    }

    /// The URI SANs that name `role` and `node` ([`ANY_NODE`] for all of the role).
    pub fn uris(role: Role, node: &str) -> [String; 2] {
        [
            format!("{ROLE_PREFIX}{}", role_name(role)),
            format!("{NODE_PREFIX}{node}"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_role_and_the_nodes() {
        let identity = Identity::from_uris(
            ["xmppd:node:router-1", "xmppd:role:router", "https://x"].into_iter(),
        )
        .unwrap();
        assert_eq!(identity.role, Role::Router);
        assert!(identity.names_node("router-1"));
        assert!(!identity.names_node("router-2"));
    }

    #[test]
    fn a_shared_certificate_names_every_node_of_its_role() {
        let identity =
            Identity::from_uris(["xmppd:role:session", "xmppd:node:*"].into_iter()).unwrap();
        assert!(identity.names_node("session-7"));
    }

    #[test]
    fn refuses_a_certificate_without_exactly_one_known_role() {
        assert_eq!(
            Identity::from_uris(["xmppd:node:*"].into_iter()),
            Err(IdentityError::NoRole)
        );
        assert_eq!(
            Identity::from_uris(["xmppd:role:router", "xmppd:role:session"].into_iter()),
            Err(IdentityError::SeveralRoles)
        );
        assert_eq!(
            Identity::from_uris(["xmppd:role:admin"].into_iter()),
            Err(IdentityError::UnknownRole("admin".into()))
        );
    }

    #[test]
    fn role_names_round_trip() {
        for role in CLUSTER_ROLES {
            assert_eq!(role_from_name(role_name(role)), Some(role));
        }
        assert_eq!(role_from_name("unspecified"), None);
    }
}
