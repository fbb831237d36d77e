//! Helpers on the wire types: typed views of an envelope's addresses and
//! `type` (the cluster's addresses are normalised strings, read through
//! [`JidRef`]; the type rules are [`MessageType`]'s and [`IqType`]'s), error
//! answers to envelopes, credentials from and to SCRAM keys.

use xmppd_protocol::error::StanzaError;
use xmppd_protocol::stanza::error_stanza;
use xmppd_protocol::{IqType, JidRef, MessageType};

use crate::{BoundResource, Credential, Envelope, Kick, Kind, Stage, StreamEnded, login_call};

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

impl Credential {
    /// The SCRAM keys for `hash` among an account's credentials, if it has
    /// them.
    pub fn keys_for(
        hash: xmppd_sasl::ScramHash,
        credentials: &[Credential],
    ) -> Option<xmppd_sasl::ScramKeys> {
        credentials
            .iter()
            .find(|credential| credential.mechanism == hash.mechanism_name())
            .map(|credential| xmppd_sasl::ScramKeys {
                hash,
                salt: credential.salt.clone(),
                iterations: credential.iterations,
                stored_key: credential.stored_key.clone(),
                server_key: credential.server_key.clone(),
            })
    }
}

impl Envelope {
    /// The recipient, `None` when the client addressed its own account.
    pub fn to_jid(&self) -> Option<JidRef<'_>> {
        (!self.to.is_empty()).then(|| JidRef::new(&self.to))
    }

    /// The sender: a full JID the edge stamped, or the server's domain.
    pub fn from_jid(&self) -> JidRef<'_> {
        JidRef::new(&self.from)
    }

    /// The `type` of a message, `None` for other stanzas.
    pub fn message_type(&self) -> Option<MessageType> {
        (self.kind() == Kind::Message).then(|| MessageType::parse(&self.r#type))
    }

    /// The `type` of an IQ, `None` for other stanzas.
    pub fn iq_type(&self) -> Option<IqType> {
        (self.kind() == Kind::Iq).then(|| IqType::parse(&self.r#type))
    }

    /// An error stanza of any kind, which is never answered with an error
    /// (RFC 6120 §8.3.1).
    pub fn is_error(&self) -> bool {
        self.r#type == "error"
    }

    /// An IQ get or set, which must be answered.
    pub fn is_request(&self) -> bool {
        self.iq_type().is_some_and(IqType::is_request)
    }

    /// Whether a router routes this stanza again if the resource it went
    /// to turns out to be gone: a message that reaches the account anyway,
    /// or a request that is answered with an error. Anything else (presence,
    /// errors, headlines) is dropped then, so nothing keeps a copy of it.
    pub fn worth_returning(&self) -> bool {
        self.reaches_account_when_resource_gone() || self.is_request()
    }

    /// Whether refusing the stanza means answering it with an error: a
    /// message that is not an error, or a request. Presence is dropped.
    pub fn expects_answer(&self) -> bool {
        self.message_type().is_some_and(|t| !t.is_error()) || self.is_request()
    }

    /// A message that must reach its account even when the resource it was
    /// routed to is gone ([`MessageType::reaches_account_when_resource_gone`]).
    pub fn reaches_account_when_resource_gone(&self) -> bool {
        self.message_type()
            .is_some_and(MessageType::reaches_account_when_resource_gone)
    }

    /// The error answer to this stanza, addressed back to its sender, ready
    /// to deliver. `None` for an error stanza (errors are never answered
    /// with errors, RFC 6120 §8.3.1) or one without a sender.
    pub fn error_reply(&self, error: &StanzaError, server: &str) -> Option<Envelope> {
        if self.is_error() || self.from.is_empty() {
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

    /// [`Envelope::error_reply`] for a stanza a blocklist refused (XEP-0191):
    /// the payload answers from the addressee, the header from the server,
    /// whose answer it is. The blocklist that refused the stanza applies to
    /// what its owner sends too, and must not stop this answer on its way
    /// back (a user who blocks a contact is told so, and so is the contact).
    pub fn refusal(&self, error: &StanzaError, server: &str) -> Option<Envelope> {
        let mut reply = self.error_reply(error, server)?;
        server.clone_into(&mut reply.from);
        Some(reply)
    }
}

impl login_call::Call {
    /// What the call asks, for traces: `credentials`, `register`, `bind`,
    /// `set_credentials`.
    pub fn name(&self) -> &'static str {
        match self {
            login_call::Call::Credentials(_) => "credentials",
            login_call::Call::Register(_) => "register",
            login_call::Call::Bind(_) => "bind",
            login_call::Call::SetCredentials(_) => "set_credentials",
        }
    }
}

impl BoundResource {
    pub fn jid(&self) -> JidRef<'_> {
        JidRef::new(&self.full_jid)
    }
}

impl StreamEnded {
    pub fn jid(&self) -> JidRef<'_> {
        JidRef::new(&self.full_jid)
    }
}

impl Kick {
    pub fn jid(&self) -> JidRef<'_> {
        JidRef::new(&self.full_jid)
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
        let jid = JidRef::new(jid);
        let (bare, resource, domain) = (jid.bare().as_str(), jid.resource(), jid.domain());
        let listed = |parts: &[&str]| {
            self.blocked
                .binary_search_by(|blocked| compare_joined(blocked, parts))
                .is_ok()
        };
        listed(&[jid.as_str()])
            || (resource.is_some() && listed(&[bare]))
            || listed(&[domain])
            || resource.is_some_and(|resource| jid.is_account() && listed(&[domain, "/", resource]))
    }
}

/// `item` compared with the concatenation of `parts`, without building it:
/// this runs for every stanza to or from an account that blocks anyone.
fn compare_joined(item: &str, parts: &[&str]) -> std::cmp::Ordering {
    let mut rest = item.as_bytes();
    for part in parts {
        let part = part.as_bytes();
        let shared = rest.len().min(part.len());
        match rest[..shared].cmp(&part[..shared]) {
            std::cmp::Ordering::Equal if shared < part.len() => return std::cmp::Ordering::Less,
            std::cmp::Ordering::Equal => rest = &rest[shared..],
            unequal => return unequal,
        }
    }
    if rest.is_empty() {
        std::cmp::Ordering::Equal
    } else {
        std::cmp::Ordering::Greater
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
    fn a_joined_comparison_orders_as_the_joined_string() {
        let joined = ["capulet.com", "/", "chapel"];
        for item in [
            "capulet.com/chapel",
            "capulet.com/chape",
            "capulet.com/chapels",
            "capulet.com",
            "capulet.co",
            "capulet.com/d",
            "b",
            "",
        ] {
            assert_eq!(
                super::compare_joined(item, &joined),
                item.cmp("capulet.com/chapel"),
                "{item}"
            );
        }
    }

    #[test]
    fn an_empty_policy_blocks_nothing() {
        assert!(!AccountPolicy::default().blocks("romeo@montague.net"));
    }
}
