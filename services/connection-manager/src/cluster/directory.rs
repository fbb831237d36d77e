//! The bound streams of this node by full JID, each with its mailbox: where
//! a router's deliveries and kicks are dispatched, and what a stream's end
//! removes.

use std::time::Instant;

use bytes::Bytes;
use xmppd_grpc::{EdgeUp, Envelope, Kind, Stage, StreamEnded, edge_down, edge_up};
use xmppd_protocol::error::StreamErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;
use xmppd_runtime::{stanza_span, traces};

use super::router_links::{PinnedRoute, send_soon};
use super::{Cluster, Delivery};
use crate::hints;
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
    /// stanza for a stream that is gone is handed back, for the router to
    /// route again: never dropped here.
    pub(super) fn dispatch(&self, frame: edge_down::Frame) -> Option<Envelope> {
        // A stanza's last hop ends once it waits in its stream's mailbox,
        // which holds the bytes alone, to keep each slot small.
        let span = match &frame {
            edge_down::Frame::Stanza(envelope) => {
                let span = stanza_span!("deliver", envelope);
                traces::follow(&span, &envelope.trace_context);
                span
            }
            edge_down::Frame::Kick(_) => tracing::Span::none(),
        };
        let _entered = span.enter();
        let sessions = self.inner.streams.read().expect("streams lock");
        let (full_jid, session, delivery) = match frame {
            edge_down::Frame::Stanza(envelope) => {
                let Some(session) = sessions.get(&envelope.to) else {
                    tracing::debug!(full_jid = %envelope.to, "stanza for a stream that is gone");
                    return Some(envelope);
                };
                let delivery = Delivery::Stanza {
                    stage: envelope.stage(),
                    payload: envelope.payload,
                    queued_at: Instant::now(),
                };
                (envelope.to, session, delivery)
            }
            edge_down::Frame::Kick(kick) => match sessions.get(&kick.full_jid) {
                Some(session) if session.conn_id == kick.conn_id => {
                    let delivery = Delivery::Close {
                        condition: StreamErrorCondition::from_name(&kick.condition)
                            .unwrap_or(StreamErrorCondition::UndefinedCondition),
                        text: kick.text.into(),
                    };
                    (kick.full_jid, session, delivery)
                }
                _ => return None,
            },
        };
        // The last slot is kept for the stream error, so that a client too
        // slow to keep up is told and disconnected; once that is queued,
        // later stanzas find the mailbox closing and go nowhere.
        let delivery = match delivery {
            Delivery::Stanza { ref payload, .. }
                if !session.mailbox.has_room_for(payload.len()) =>
            {
                tracing::warn!(%full_jid, "client too slow, its mailbox is full");
                Delivery::Close {
                    condition: StreamErrorCondition::ResourceConstraint,
                    text: "too many stanzas waiting for this client".into(),
                }
            }
            delivery => delivery,
        };
        let _ = session.mailbox.try_send(delivery);
        None
    }

    /// See [`PinnedRoute::end`]. The stanzas handed back go after the
    /// end on the same router stream, so the account's replica has
    /// forgotten the resource when they reach it and routes them elsewhere
    /// (another resource, offline storage, an error to the sender), not back
    /// here.
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
        let unacked = sm.into_iter().flat_map(|sm| sm.into_unacked());
        {
            let mut sessions = self.inner.streams.write().expect("streams lock");
            if sessions
                .get(full_jid)
                .is_some_and(|s| s.conn_id == route.conn_id)
            {
                sessions.remove(full_jid);
            }
        }
        // Its sender is gone with the directory entry: nothing more arrives.
        let queued =
            std::iter::from_fn(|| mailbox.try_recv().ok()).filter_map(|delivery| match delivery {
                Delivery::Stanza { payload, stage, .. } => Some((payload, stage)),
                Delivery::Close { .. } => None,
            });
        let ended = StreamEnded {
            full_jid: full_jid.clone(),
            node_id: self.inner.node.id.clone(),
            conn_id: route.conn_id,
        };
        let link = self.report_end(ended, &route.router);
        for (payload, stage) in unacked.chain(queued) {
            let Some(envelope) = handed_back(full_jid, payload, stage) else {
                continue;
            };
            let Some(link) = &link else {
                tracing::warn!(%full_jid, "no router to hand back a stanza the client never had");
                continue;
            };
            let frame = EdgeUp {
                frame: Some(edge_up::Frame::Undeliverable(envelope)),
            };
            send_soon(&link.up, frame);
        }
    }
}

/// The envelope of a stanza delivered to `full_jid` that its client never
/// had, rebuilt from the stanza itself for the router to route again. Only
/// stanzas of client streams come here, which their edge validated.
fn handed_back(full_jid: &str, payload: Bytes, stage: Stage) -> Option<Envelope> {
    let stanza = Stanza::from_bytes(payload, ns::CLIENT).ok()?;
    let kind = Kind::from_element_name(stanza.name())?;
    Some(Envelope {
        to: full_jid.to_owned(),
        from: stanza.from().unwrap_or_default().to_owned(),
        kind: kind as i32,
        r#type: stanza.stanza_type().unwrap_or_default().to_owned(),
        id: stanza.id().unwrap_or_default().to_owned(),
        stage: stage as i32,
        trace_context: Default::default(),
        hints: hints::read(&stanza),
        payload: stanza.raw().clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use xmppd_registry::SharedRegistry;

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

    #[test]
    fn a_client_whose_mailbox_fills_up_is_told_and_closed() {
        let jid = "slow@localhost/r";
        let (cluster, mut deliveries) = cluster_with_session(jid);
        for _ in 0..CLIENT_QUEUE_LIMITS.stanzas + 10 {
            cluster.dispatch(stanza_for(jid));
        }
        for _ in 0..CLIENT_QUEUE_LIMITS.stanzas - 1 {
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

    #[test]
    fn a_stanza_for_a_stream_that_is_gone_is_handed_back() {
        let (cluster, mut deliveries) = cluster_with_session("alice@localhost/r");
        let returned = cluster.dispatch(stanza_for("alice@localhost/gone"));
        assert_eq!(
            returned.map(|e| e.to).as_deref(),
            Some("alice@localhost/gone")
        );
        assert!(deliveries.try_recv().is_err());
        assert!(cluster.dispatch(stanza_for("alice@localhost/r")).is_none());
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
        cluster.dispatch(kick(6));
        assert!(deliveries.try_recv().is_err());
        cluster.dispatch(kick(7));
        assert!(matches!(deliveries.try_recv(), Ok(Delivery::Close { .. })));
    }
}
