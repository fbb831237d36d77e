//! `/cluster`: the live nodes by role, the sessions bound, and the
//! stanzas delivered per second (each router's, from its heartbeat).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use xmppd_grpc::{Node, Role};

use crate::AdminApi;
use crate::auth::Caller;
use crate::error::ApiError;

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// Nodes whose heartbeat is current, by role.
    pub connection_managers: Vec<NodeInfo>,
    pub routers: Vec<NodeInfo>,
    pub session_replicas: Vec<NodeInfo>,
    /// Bound resources in the whole cluster.
    pub sessions: u64,
    /// Stanzas the routers delivered to resources per second, over their
    /// last heartbeat interval.
    pub stanzas_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where its gRPC server listens (empty for connection-managers and in
    /// the all-in-one process).
    pub grpc_address: String,
    /// For a router: stanzas it delivered per second over its last
    /// heartbeat interval; 0 for the other roles.
    pub stanzas_per_second: f64,
}

impl From<Node> for NodeInfo {
    fn from(node: Node) -> Self {
        NodeInfo {
            id: node.id,
            grpc_address: node.grpc_address,
            stanzas_per_second: node.stanzas_per_second,
        }
    }
}

/// `GET /cluster`.
pub async fn cluster(
    State(api): State<AdminApi>,
    _caller: Caller,
) -> Result<Json<ClusterStatus>, ApiError> {
    let registry = &api.core().registry;
    let nodes = async |role| -> Result<Vec<NodeInfo>, ApiError> {
        let live = registry.live_nodes(role).await?;
        Ok(live.into_iter().map(NodeInfo::from).collect())
    };
    let routers = nodes(Role::Router).await?;
    Ok(Json(ClusterStatus {
        connection_managers: nodes(Role::ConnectionManager).await?,
        stanzas_per_second: routers.iter().map(|r| r.stanzas_per_second).sum(),
        routers,
        session_replicas: nodes(Role::Session).await?,
        sessions: registry.count_sessions().await?,
    }))
}
