//! The connection-managers attached to this router, each by one stream, and
//! the deliveries each still owes an answer for.
//!
//! A stanza handed to a connection-manager is not forgotten: the router keeps
//! a copy under the delivery's number on that stream until the
//! connection-manager settles it (`EdgeUp.settled`): delivered, once its
//! client has it, or returned, when it never will. When the stream ends with
//! deliveries unsettled (the node died), they are returned all the same, so
//! that a stanza in the node's buffers, a client's mailbox or its unacked
//! stream management queue goes on to another resource, to offline storage or
//! back to its sender as an error, instead of dying with the node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;
use tonic::Status;
use xmppd_grpc::{EdgeDown, Envelope, Settled};

pub type EdgeSender = mpsc::Sender<Result<EdgeDown, Status>>;

/// One connection-manager's stream, as deliveries use it.
pub struct Edge {
    pub tx: EdgeSender,
    owed: Mutex<Owed>,
}

/// Copies of the deliveries on one stream not settled yet.
#[derive(Default)]
struct Owed {
    /// The number of the last delivery; numbers start at 1 (0 means "no copy
    /// kept" on the wire).
    last_seq: u64,
    /// By number, so that what is returned at the end goes in the order it
    /// was sent.
    copies: BTreeMap<u64, Envelope>,
    /// The stream ended and its copies were returned: nothing more is kept.
    closed: bool,
}

impl Edge {
    fn new(tx: EdgeSender) -> Self {
        Edge {
            tx,
            owed: Mutex::default(),
        }
    }

    fn owed(&self) -> std::sync::MutexGuard<'_, Owed> {
        // Nothing panics while holding the lock: no half-made change to see.
        self.owed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps a copy of `envelope` until its delivery is settled: its
    /// delivery number, or `None` if the stream already ended.
    pub fn keep(&self, envelope: &Envelope) -> Option<u64> {
        let mut owed = self.owed();
        if owed.closed {
            return None;
        }
        owed.last_seq += 1;
        let seq = owed.last_seq;
        owed.copies.insert(seq, envelope.clone());
        Some(seq)
    }

    /// Forgets what was delivered; the copies of what was returned, to route
    /// again. A number not owed (settled twice, or never sent) is ignored.
    pub fn settle(&self, settled: &Settled) -> Vec<Envelope> {
        let mut owed = self.owed();
        for seq in &settled.delivered {
            owed.copies.remove(seq);
        }
        settled
            .returned
            .iter()
            .filter_map(|seq| owed.copies.remove(seq))
            .collect()
    }

    /// The stream ended: every copy still owed, oldest first, to route
    /// again; later deliveries find the edge closed.
    pub fn close(&self) -> Vec<Envelope> {
        let mut owed = self.owed();
        owed.closed = true;
        std::mem::take(&mut owed.copies).into_values().collect()
    }

    /// Deliveries not settled yet.
    pub fn owed_count(&self) -> usize {
        self.owed().copies.len()
    }
}

/// Attached connection-managers by node id.
#[derive(Default)]
pub struct Edges {
    // A std lock: it is never held across an await, and reads dominate.
    streams: RwLock<HashMap<String, Arc<Edge>>>,
}

impl Edges {
    pub fn attach(&self, node_id: &str, stream: EdgeSender) -> Arc<Edge> {
        let edge = Arc::new(Edge::new(stream));
        let previous = self
            .streams
            .write()
            .expect("edges lock")
            .insert(node_id.to_string(), edge.clone());
        if previous.is_some() {
            tracing::info!(node = node_id, "connection-manager re-attached");
        }
        edge
    }

    /// Forgets `edge` if it is still the one registered for `node_id` (a
    /// re-attached node must not be detached by its old stream ending).
    pub fn detach(&self, node_id: &str, edge: &Arc<Edge>) {
        let mut streams = self.streams.write().expect("edges lock");
        if streams
            .get(node_id)
            .is_some_and(|current| Arc::ptr_eq(current, edge))
        {
            streams.remove(node_id);
        }
    }

    pub fn get(&self, node_id: &str) -> Option<Arc<Edge>> {
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
            .map(|edge| edge.tx.max_capacity() - edge.tx.capacity())
            .sum()
    }

    /// Deliveries to attached connection-managers not settled yet.
    pub fn owed_deliveries(&self) -> usize {
        let streams = self.streams.read().expect("edges lock");
        streams.values().map(|edge| edge.owed_count()).sum()
    }

    pub fn count(&self) -> usize {
        self.streams.read().expect("edges lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            ..Default::default()
        }
    }

    fn edge() -> Edge {
        Edge::new(mpsc::channel(1).0)
    }

    #[test]
    fn delivered_copies_are_forgotten_and_returned_ones_given_back() {
        let edge = edge();
        let one = edge.keep(&envelope("1")).unwrap();
        let two = edge.keep(&envelope("2")).unwrap();
        let three = edge.keep(&envelope("3")).unwrap();
        assert_eq!((one, two, three), (1, 2, 3));
        let returned = edge.settle(&Settled {
            delivered: vec![one],
            returned: vec![three, 99],
        });
        assert_eq!(returned.len(), 1);
        assert_eq!(returned[0].id, "3");
        assert_eq!(edge.owed_count(), 1);
        // Settled twice: nothing comes back twice.
        assert!(
            edge.settle(&Settled {
                delivered: vec![],
                returned: vec![three],
            })
            .is_empty()
        );
    }

    #[test]
    fn a_closed_edge_returns_what_it_owes_in_order_and_keeps_nothing_more() {
        let edge = edge();
        for id in ["a", "b", "c"] {
            edge.keep(&envelope(id));
        }
        edge.settle(&Settled {
            delivered: vec![2],
            returned: vec![],
        });
        let ids: Vec<String> = edge.close().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(edge.keep(&envelope("d")), None);
        assert_eq!(edge.owed_count(), 0);
    }
}
