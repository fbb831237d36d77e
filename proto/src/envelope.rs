//! Helpers on the wire types: error answers to envelopes, credentials from SCRAM keys.

use xmppd_protocol::error::StanzaError;
use xmppd_protocol::stanza::error_stanza;

use crate::{Credential, Envelope, Stage};

impl From<xmppd_sasl::ScramKeys> for Credential {
    fn from(keys: xmppd_sasl::ScramKeys) -> Self {
        Credential {
            mechanism: keys.hash.mechanism_name().to_string(),
            salt: keys.salt,
            iterations: keys.iterations,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }
}

impl Envelope {
    /// The error answer to this stanza, addressed back to its sender, ready
    /// to deliver. `None` for an error stanza (errors are never answered
    /// with errors, RFC 6120 §8.3.1) or one without a sender.
    pub fn error_reply(&self, error: &StanzaError, server: &str) -> Option<Envelope> {
        if self.r#type == "error" || self.from.is_empty() {
            return None;
        }
        let from = if self.to.is_empty() { server } else { &self.to };
        let id = (!self.id.is_empty()).then_some(self.id.as_str());
        let payload = error_stanza(self.kind().element_name(), id, from, &self.from, error);
        Some(Envelope {
            to: self.from.clone(),
            from: from.to_string(),
            kind: self.kind,
            r#type: "error".into(),
            id: self.id.clone(),
            payload,
            stage: Stage::Deliver as i32,
            trace_context: self.trace_context.clone(),
        })
    }
}
