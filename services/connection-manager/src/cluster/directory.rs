//! The bound streams of this node by full JID, each with its mailbox: where
//! a router's deliveries and kicks are dispatched, and what a stream's end
//! removes.

use std::time::Instant;

use bytes::Bytes;
use xmppd_grpc::{StreamEnded, edge_down};
use xmppd_protocol::error::StreamErrorCondition;
use xmppd_runtime::{stanza_span, traces};

use super::router_links::PinnedRoute;
use super::{Cluster, Delivery, Receipt};
use crate::mailbox::{self, CLIENT_QUEUE_LIMITS, Mailbox, MailboxSender};
use crate::stream_management::StreamManagement;

/// A bound stream of this node, as deliveries find it.
pub(super) struct LocalStream {
    /// Tells this stream from one that replaced it under the same full JID.
    conn_id: u64,
    pub(super) mailbox: MailboxSender,
    /// The router stream it is pinned to, closed with it.
    pub(super) router_id: String,
}

impl Cluster {
    /// Opens the mailbox of a stream just bound as `full_jid`; a stream
    /// bound under the same full JID on this node before yields to it.
    pub(super) fn open_mailbox(&self, full_jid: &str, conn_id: u64, router_id: &str) -> Mailbox {
        let (mailbox, deliveries) = mailbox::channel(CLIENT_QUEUE_LIMITS);
        let previous = self.inner.streams.write().expect("streams lock").insert(
            full_jid.to_string(),
            LocalStream {
                conn_id,
                mailbox,
                router_id: router_id.to_string(),
            },
        );
        // The same full JID bound again on this node: the old stream yields.
        if let Some(previous) = previous {
            let _ = previous.mailbox.try_send(Delivery::Close {
                condition: StreamErrorCondition::Conflict,
                text: "replaced by a new session".into(),
            });
        }
        deliveries
    }

    /// A router stream delivered something for a local client stream. A
    /// stanza that cannot be queued for its client (its stream is gone, or
    /// the client is too far behind) goes nowhere here: its receipt, dropped,
    /// returns it to the router, which routes it again.
    pub(super) fn dispatch(&self, frame: edge_down::Frame, receipt: Receipt) {
        match frame {
            edge_down::Frame::Stanza(envelope) => {
                // A stanza's last hop ends once it waits in its stream's
                // mailbox, which holds the bytes alone, to keep each slot small.
                let span = stanza_span!("deliver", envelope);
                traces::follow(&span, &envelope.trace_context);
                let _entered = span.enter();
                self.queue_stanza(&envelope.to, envelope.payload, receipt);
            }
            edge_down::Frame::Kick(kick) => {
                let sessions = self.inner.streams.read().expect("streams lock");
                if let Some(session) = sessions
                    .get(&kick.full_jid)
                    .filter(|session| session.conn_id == kick.conn_id)
                {
                    let _ = session.mailbox.try_send(Delivery::Close {
                        condition: StreamErrorCondition::from_name(&kick.condition)
                            .unwrap_or(StreamErrorCondition::UndefinedCondition),
                        text: kick.text.into(),
                    });
                }
            }
        }
    }

    fn queue_stanza(&self, full_jid: &str, payload: Bytes, receipt: Receipt) {
        let sessions = self.inner.streams.read().expect("streams lock");
        let Some(session) = sessions.get(full_jid) else {
            tracing::debug!(%full_jid, "stanza for a stream that is gone, returned");
            return;
        };
        // The last slot is kept for the stream error, so that a client too
        // slow to keep up is told and disconnected; what does not fit is
        // returned, and so is what finds the mailbox closing.
        if !session.mailbox.has_room_for(payload.len()) {
            tracing::warn!(%full_jid, "client too slow, its mailbox is full");
            let _ = session.mailbox.try_send(Delivery::Close {
                condition: StreamErrorCondition::ResourceConstraint,
                text: "too many stanzas waiting for this client".into(),
            });
            return;
        }
        let _ = session.mailbox.try_send(Delivery::Stanza {
            payload,
            receipt,
            queued_at: Instant::now(),
        });
    }

    /// See [`PinnedRoute::end`]. What the client never had (held by its
    /// stream management unacknowledged, or waiting in its mailbox) goes
    /// back to the routers that delivered it as its receipts drop; the end
    /// is reported first, so that the account's replica has usually
    /// forgotten the resource when those stanzas reach it, and routes them
    /// elsewhere (another resource, offline storage, an error to the sender).
    pub(super) fn end_stream(
        &self,
        route: &PinnedRoute,
        mailbox: &mut Mailbox,
        sm: Option<Box<StreamManagement>>,
    ) {
        let full_jid = &route.full_jid;
        if let Some(id) = sm.as_deref().and_then(|sm| sm.id.as_deref()) {
            self.inner.resumptions.forget(id);
        }
        {
            let mut sessions = self.inner.streams.write().expect("streams lock");
            if sessions
                .get(full_jid)
                .is_some_and(|s| s.conn_id == route.conn_id)
            {
                sessions.remove(full_jid);
            }
        }
        let ended = StreamEnded {
            full_jid: full_jid.clone(),
            node_id: self.inner.node.id.clone(),
            conn_id: route.conn_id,
        };
        self.report_end(ended, &route.router);
        drop(sm);
        // Its sender is gone with the directory entry: nothing more arrives.
        while mailbox.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use xmppd_grpc::Envelope;
    use xmppd_registry::SharedRegistry;

    use super::super::settlements;
    use super::*;

    fn cluster_with_session(full_jid: &str) -> (Cluster, Mailbox) {
        let registry: SharedRegistry = Arc::new(xmppd_registry::MemoryRegistry::default());
        let cluster = Cluster::new(
            "cm-test".into(),
            Arc::new(xmppd_grpc::RemoteConnector),
            registry,
        );
        let (mailbox, deliveries) = mailbox::channel(CLIENT_QUEUE_LIMITS);
        let session = LocalStream {
            conn_id: 7,
            mailbox,
            router_id: "router".into(),
        };
        cluster
            .inner
            .streams
            .write()
            .unwrap()
            .insert(full_jid.into(), session);
        (cluster, deliveries)
    }

    fn stanza_for(full_jid: &str) -> edge_down::Frame {
        edge_down::Frame::Stanza(Envelope {
            to: full_jid.into(),
            payload: Bytes::from_static(b"<message/>"),
            ..Default::default()
        })
    }

    /// Delivers `count` stanzas numbered from 1 to `full_jid`; the numbers
    /// of those returned.
    async fn deliver(cluster: &Cluster, full_jid: &str, count: u64) -> Vec<u64> {
        let (ledger, mut frames) = settlements::tests::ledger();
        for seq in 1..=count {
            cluster.dispatch(stanza_for(full_jid), ledger.receipt(seq));
        }
        // Something settled for sure, so that the batch is never empty.
        ledger.receipt(count + 1).delivered();
        settlements::tests::next_settled(&mut frames).await.returned
    }

    #[tokio::test]
    async fn a_client_whose_mailbox_fills_up_is_told_and_closed_and_the_rest_returned() {
        let jid = "slow@localhost/r";
        let (cluster, mut deliveries) = cluster_with_session(jid);
        let sent = CLIENT_QUEUE_LIMITS.stanzas as u64 + 10;
        let returned = deliver(&cluster, jid, sent).await;
        let fitted = CLIENT_QUEUE_LIMITS.stanzas as u64 - 1;
        assert_eq!(returned, (fitted + 1..=sent).collect::<Vec<_>>());
        for _ in 0..fitted {
            assert!(matches!(deliveries.try_recv(), Ok(Delivery::Stanza { .. })));
        }
        match deliveries.try_recv() {
            Ok(Delivery::Close { condition, .. }) => {
                assert_eq!(condition, StreamErrorCondition::ResourceConstraint)
            }
            other => panic!("expected the stream to be closed, got {other:?}"),
        }
        assert!(deliveries.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_stanza_for_a_stream_that_is_gone_is_returned() {
        let (cluster, mut deliveries) = cluster_with_session("alice@localhost/r");
        assert_eq!(deliver(&cluster, "alice@localhost/gone", 1).await, [1]);
        assert!(deliveries.try_recv().is_err());
        assert!(deliver(&cluster, "alice@localhost/r", 1).await.is_empty());
        assert!(matches!(deliveries.try_recv(), Ok(Delivery::Stanza { .. })));
    }

    #[test]
    fn a_kick_for_a_replaced_connection_is_ignored() {
        let jid = "alice@localhost/r";
        let (cluster, mut deliveries) = cluster_with_session(jid);
        let kick = |conn_id| {
            edge_down::Frame::Kick(xmppd_grpc::Kick {
                full_jid: jid.into(),
                conn_id,
                condition: "conflict".into(),
                ..Default::default()
            })
        };
        cluster.dispatch(kick(6), Receipt::NONE);
        assert!(deliveries.try_recv().is_err());
        cluster.dispatch(kick(7), Receipt::NONE);
        assert!(matches!(deliveries.try_recv(), Ok(Delivery::Close { .. })));
    }
}
