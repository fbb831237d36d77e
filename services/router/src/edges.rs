//! The connection-managers attached to this router, each by one stream.

use std::collections::HashMap;
use std::sync::RwLock;

use tokio::sync::mpsc;
use tonic::Status;
use xmppd_grpc::EdgeDown;

pub type EdgeSender = mpsc::Sender<Result<EdgeDown, Status>>;

/// Attached connection-managers by node id.
#[derive(Default)]
pub struct Edges {
    // A std lock: it is never held across an await, and reads dominate.
    streams: RwLock<HashMap<String, EdgeSender>>,
}

impl Edges {
    pub fn attach(&self, node_id: &str, stream: EdgeSender) {
        let previous = self
            .streams
            .write()
            .expect("edges lock")
            .insert(node_id.to_string(), stream);
        if previous.is_some() {
            tracing::info!(node = node_id, "connection-manager re-attached");
        }
    }

    /// Forgets `stream` if it is still the one registered for `node_id` (a
    /// re-attached node must not be detached by its old stream ending).
    pub fn detach(&self, node_id: &str, stream: &EdgeSender) {
        let mut streams = self.streams.write().expect("edges lock");
        if streams
            .get(node_id)
            .is_some_and(|current| current.same_channel(stream))
        {
            streams.remove(node_id);
        }
    }

    pub fn get(&self, node_id: &str) -> Option<EdgeSender> {
        self.streams
            .read()
            .expect("edges lock")
            .get(node_id)
            .cloned()
    }

    /// Frames waiting in the buffers towards attached connection-managers.
    pub fn queued_frames(&self) -> usize {
        let streams = self.streams.read().expect("edges lock");
        streams
            .values()
            .map(|stream| stream.max_capacity() - stream.capacity())
            .sum()
    }

    pub fn count(&self) -> usize {
        self.streams.read().expect("edges lock").len()
    }
}
