//! The frames one handler run produces, sent back to the router in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use xmppd_grpc::{Envelope, Kick, Kind, Stage, session_down};
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

#[derive(Default, Debug)]
pub struct Outbox {
    pub frames: Vec<session_down::Frame>,
    /// The trace context of the stanza being handled, which every stanza
    /// sent in answer carries on; empty with traces off.
    pub trace_context: HashMap<String, String>,
}

impl Outbox {
    /// A fully processed stanza, for the addressed resource(s) only.
    pub fn deliver(&mut self, to: &str, from: &str, kind: Kind, stanza_type: &str, payload: Bytes) {
        self.push(Stage::Deliver, to, from, kind, stanza_type, payload);
    }

    /// A stanza for the recipient account's replica to process.
    pub fn inbound(&mut self, to: &str, from: &str, kind: Kind, stanza_type: &str, payload: Bytes) {
        self.push(Stage::Inbound, to, from, kind, stanza_type, payload);
    }

    /// Delivers a stanza built here; its header is read off the element.
    pub fn deliver_element(&mut self, element: &Element) {
        let kind = Kind::from_element_name(element.name()).unwrap_or(Kind::Unspecified);
        let payload = Bytes::from(element.to_xml(ns::CLIENT));
        self.deliver(
            element.get_attr("to").unwrap_or_default(),
            element.get_attr("from").unwrap_or_default(),
            kind,
            element.get_attr("type").unwrap_or_default(),
            payload,
        );
    }

    /// An IQ set from the account to each of `resources` (roster and
    /// blocklist pushes), carrying `payload`.
    pub fn push_iq<'r>(
        &mut self,
        account: &str,
        resources: impl IntoIterator<Item = &'r str>,
        payload: &Element,
    ) {
        // Unique per process is enough: the answers are ignored.
        static PUSH_IDS: AtomicU64 = AtomicU64::new(1);
        for resource in resources {
            let id = format!("push{}", PUSH_IDS.fetch_add(1, Ordering::Relaxed));
            let iq = Element::new("iq", ns::CLIENT)
                .attr("type", "set")
                .attr("id", id)
                .attr("to", resource)
                .child(payload.clone());
            self.deliver(
                resource,
                account,
                Kind::Iq,
                "set",
                Bytes::from(iq.to_xml(ns::CLIENT)),
            );
        }
    }

    pub fn kick(&mut self, kick: Kick) {
        self.frames.push(session_down::Frame::Kick(kick));
    }

    fn push(
        &mut self,
        stage: Stage,
        to: &str,
        from: &str,
        kind: Kind,
        stanza_type: &str,
        payload: Bytes,
    ) {
        self.frames.push(session_down::Frame::Stanza(Envelope {
            to: to.to_string(),
            from: from.to_string(),
            kind: kind as i32,
            r#type: stanza_type.to_string(),
            id: String::new(),
            payload,
            stage: stage as i32,
            trace_context: self.trace_context.clone(),
            hints: None,
        }));
    }
}
