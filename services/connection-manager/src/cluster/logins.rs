//! The calls a login makes to the session replicas, straight to the
//! account's replica (`crate::replicas`): its credentials, XEP-0077
//! registration, and the binding that opens the stream's mailbox and pins
//! it to a router.

use std::sync::Arc;
use std::time::Duration;

use xmppd_grpc::{
    BindRequest, Credential, CredentialsRequest, Origin, RegisterOutcome, RegisterRequest, Role,
    bind_reply, login_answer, login_call,
};
use xmppd_registry::membership;

use super::router_links::PinnedRoute;
use super::{Cluster, ClusterError};
use crate::mailbox::Mailbox;

impl Cluster {
    /// Follows the live session replicas in the registry.
    pub async fn follow_session_replicas(self, interval: Duration) {
        let mut members = membership::follow(self.inner.registry.clone(), Role::Session, interval);
        while let Some(nodes) = members.next().await {
            self.inner.replicas.update(&nodes).await;
        }
    }

    /// SCRAM credentials of an account; empty when it does not exist.
    pub async fn credentials(&self, bare_jid: &str) -> Result<Vec<Credential>, ClusterError> {
        let request = CredentialsRequest {
            jid: bare_jid.to_string(),
        };
        let call = login_call::Call::Credentials(request);
        let login_answer::Answer::Credentials(reply) =
            self.inner.replicas.call(bare_jid, call).await?
        else {
            return Err(ClusterError::WrongAnswer);
        };
        Ok(reply.credentials)
    }

    /// XEP-0077 account creation with keys derived at the edge.
    pub async fn register(
        &self,
        bare_jid: &str,
        credentials: Vec<Credential>,
    ) -> Result<RegisterOutcome, ClusterError> {
        let request = RegisterRequest {
            jid: bare_jid.to_string(),
            credentials,
        };
        let call = login_call::Call::Register(request);
        let login_answer::Answer::Register(reply) =
            self.inner.replicas.call(bare_jid, call).await?
        else {
            return Err(ClusterError::WrongAnswer);
        };
        Ok(reply.outcome())
    }

    /// Binds a resource (RFC 6120 §7) and opens the stream's mailbox.
    /// `Ok(Err(condition))` is a refusal to report to the client.
    pub async fn bind(
        &self,
        bare_jid: &str,
        resource: Option<&str>,
        origin: Origin,
    ) -> Result<Result<(PinnedRoute, Mailbox), String>, ClusterError> {
        let conn_id = self.next_conn_id();
        let request = BindRequest {
            bare_jid: bare_jid.to_string(),
            resource: resource.unwrap_or_default().to_string(),
            node_id: self.inner.node.id.clone(),
            conn_id,
            origin: Some(origin),
        };
        let call = login_call::Call::Bind(request);
        let login_answer::Answer::Bind(reply) = self.inner.replicas.call(bare_jid, call).await?
        else {
            return Err(ClusterError::WrongAnswer);
        };
        let full_jid = match reply.outcome {
            Some(bind_reply::Outcome::FullJid(full_jid)) => full_jid,
            Some(bind_reply::Outcome::ErrorCondition(condition)) => return Ok(Err(condition)),
            None => return Ok(Err("internal-server-error".into())),
        };
        let router = self.router_for(&full_jid)?;
        let deliveries = self.open_mailbox(&full_jid, conn_id, &router.node.id);
        let route = PinnedRoute {
            full_jid,
            conn_id,
            router: Arc::downgrade(&router),
            cluster: self.clone(),
        };
        Ok(Ok((route, deliveries)))
    }
}
