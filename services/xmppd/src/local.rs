//! In-process channels for the all-in-one server: the services call each
//! other through their gRPC interfaces, without a socket.

use std::collections::HashMap;
use std::sync::RwLock;

use xmppd_grpc::{Connector, GrpcChannel, Node};

#[derive(Default)]
pub struct LocalConnector {
    channels: RwLock<HashMap<String, GrpcChannel>>,
}

impl LocalConnector {
    pub fn add(&self, node_id: &str, channel: GrpcChannel) {
        self.channels
            .write()
            .expect("channels lock")
            .insert(node_id.to_string(), channel);
    }
}

impl Connector for LocalConnector {
    fn channel(&self, node: &Node) -> Result<GrpcChannel, tower::BoxError> {
        self.channels
            .read()
            .expect("channels lock")
            .get(&node.id)
            .cloned()
            .ok_or_else(|| format!("no in-process service for node {}", node.id).into())
    }
}
