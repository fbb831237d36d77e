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
            hints: None,
        })
    }
}

impl crate::AccountPolicy {
    /// Whether `jid` (normalised, full or bare) is blocked (XEP-0191), by the
    /// rules of XEP-0016 §2.1 that XEP-0191 refers to: an item names a full
    /// JID, a bare JID (any of its resources), a domain with a resource, or
    /// a domain (any JID at it). `blocked` is sorted, so each form is one
    /// binary search.
    pub fn blocks(&self, jid: &str) -> bool {
        if self.blocked.is_empty() || jid.is_empty() {
            return false;
        }
        let (bare, resource) = match jid.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (jid, None),
        };
        let domain = bare.split_once('@').map_or(bare, |(_, domain)| domain);
        let listed = |item: &str| {
            self.blocked
                .binary_search_by(|blocked| blocked.as_str().cmp(item))
                .is_ok()
        };
        let domain_with_resource = || {
            resource.is_some_and(|resource| {
                bare.contains('@') && listed(&format!("{domain}/{resource}"))
            })
        };
        listed(jid)
            || (resource.is_some() && listed(bare))
            || listed(domain)
            || domain_with_resource()
    }
}

#[cfg(test)]
mod tests {
    use crate::AccountPolicy;

    fn policy(items: &[&str]) -> AccountPolicy {
        let mut blocked: Vec<String> = items.iter().map(|item| item.to_string()).collect();
        blocked.sort();
        AccountPolicy { blocked }
    }

    #[test]
    fn a_bare_jid_blocks_every_resource_and_a_full_jid_only_itself() {
        let policy = policy(&["romeo@montague.net", "nurse@capulet.com/balcony"]);
        assert!(policy.blocks("romeo@montague.net"));
        assert!(policy.blocks("romeo@montague.net/orchard"));
        assert!(policy.blocks("nurse@capulet.com/balcony"));
        assert!(!policy.blocks("nurse@capulet.com"));
        assert!(!policy.blocks("nurse@capulet.com/kitchen"));
        assert!(!policy.blocks("benvolio@montague.net"));
    }

    #[test]
    fn a_domain_blocks_everyone_at_it_and_a_domain_resource_only_that_resource() {
        let policy = policy(&["montague.net", "capulet.com/chapel"]);
        assert!(policy.blocks("montague.net"));
        assert!(policy.blocks("romeo@montague.net"));
        assert!(policy.blocks("romeo@montague.net/orchard"));
        assert!(policy.blocks("capulet.com/chapel"));
        assert!(!policy.blocks("capulet.com"));
        assert!(!policy.blocks("juliet@capulet.com"));
        assert!(!policy.blocks("juliet@capulet.com/balcony"));
    }

    #[test]
    fn an_empty_policy_blocks_nothing() {
        assert!(!AccountPolicy::default().blocks("romeo@montague.net"));
    }
}
