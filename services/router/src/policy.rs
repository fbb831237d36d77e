//! The accounts' routing policies, applied to a stanza by its header, the
//! hints the edge read from it, and the registry entries the router looks
//! up anyway: XEP-0191 blocking in both directions and XEP-0280 carbon
//! copies. Pure functions, like `routing.rs`; the session replica's modules
//! write the policies (`services/session/src/modules/`).

use bytes::{BufMut, BytesMut};
use xmppd_grpc::{AccountPolicy, BoundResource, Envelope, Kind, Stage};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::{MessageType, ns, stanza};

/// What a policy says of a stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Dropped without a word.
    Drop,
    /// Answered with this error.
    Refuse(StanzaError),
}

/// XEP-0191 §3.3, the sender's side: nothing reaches a JID the sender
/// blocks; a message or request is answered `<not-acceptable/>` with
/// `<blocked/>`, presence is dropped.
pub fn outbound(policy: &AccountPolicy, envelope: &Envelope) -> Verdict {
    if !policy.blocks(&envelope.to) {
        Verdict::Pass
    } else if envelope.expects_answer() {
        let blocked = StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_application("blocked", ns::BLOCKING_ERRORS);
        Verdict::Refuse(blocked)
    } else {
        Verdict::Drop
    }
}

/// XEP-0191 §3.3, the recipient's side: nothing from a blocked JID reaches
/// the user, who appears offline to it: a message or request is answered
/// `<service-unavailable/>`, anything else dropped.
pub fn inbound(policy: &AccountPolicy, envelope: &Envelope) -> Verdict {
    if !policy.blocks(&envelope.from) {
        Verdict::Pass
    } else if envelope.expects_answer() {
        Verdict::Refuse(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
    } else {
        Verdict::Drop
    }
}

/// XEP-0280 §6: a message a client sent is copied unless it says not to
/// (`<private/>`, XEP-0334 `<no-copy/>`) when it is a chat, a normal
/// message with a body, or a conversation's bodiless payload (chat state,
/// receipt, marker). Groupchat, headline and error messages are not.
pub fn carbons_eligible(envelope: &Envelope) -> bool {
    let Some(hints) = envelope.hints.as_ref() else {
        return false;
    };
    if hints.private || hints.no_copy {
        return false;
    }
    match envelope.message_type() {
        Some(MessageType::Chat) => true,
        Some(MessageType::Normal) => hints.body || hints.im_payload,
        _ => false,
    }
}

/// Which carbon a copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carbon {
    /// To the sender's other resources.
    Sent,
    /// To the recipient's resources the message itself did not go to.
    Received,
}

impl Carbon {
    fn element(self) -> &'static str {
        match self {
            Carbon::Sent => "sent",
            Carbon::Received => "received",
        }
    }
}

/// The resources of an account that get a copy: carbons enabled, and not
/// already holding the message (`except`).
pub fn carbon_recipients(
    resources: &[BoundResource],
    except: impl Fn(&BoundResource) -> bool,
) -> impl Iterator<Item = &BoundResource> {
    resources
        .iter()
        .filter(move |r| r.flags.is_some_and(|flags| flags.carbons) && !except(r))
}

/// The copy of `envelope` for the resource `to` (XEP-0280 §7, §8): the
/// message wrapped in `<forwarded/>`, from the account's bare JID. Built
/// from the bytes without parsing them.
pub fn carbon_copy(carbon: Carbon, envelope: &Envelope, account: &str, to: &str) -> Envelope {
    let mut payload = BytesMut::with_capacity(envelope.payload.len() + 256);
    payload.put_slice(b"<message xmlns='jabber:client' from='");
    payload.put_slice(account.as_bytes());
    payload.put_slice(b"' to='");
    payload.put_slice(to.as_bytes());
    payload.put_slice(b"' type='");
    payload.put_slice(envelope.r#type.as_bytes());
    payload.put_slice(b"'><");
    payload.put_slice(carbon.element().as_bytes());
    payload.put_slice(b" xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>");
    match stanza::in_client_namespace(&envelope.payload) {
        Some(qualified) => payload.put_slice(&qualified),
        None => payload.put_slice(&envelope.payload),
    }
    payload.put_slice(b"</forwarded></");
    payload.put_slice(carbon.element().as_bytes());
    payload.put_slice(b"></message>");
    Envelope {
        to: to.to_owned(),
        from: account.to_owned(),
        kind: Kind::Message as i32,
        r#type: envelope.r#type.clone(),
        id: String::new(),
        payload: payload.freeze(),
        stage: Stage::Deliver as i32,
        trace_context: envelope.trace_context.clone(),
        hints: None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use xmppd_grpc::{MessageHints, ResourceFlags};

    use super::*;

    fn message(stanza_type: &str, hints: MessageHints) -> Envelope {
        Envelope {
            to: "romeo@example.org".into(),
            from: "juliet@example.org/balcony".into(),
            kind: Kind::Message as i32,
            r#type: stanza_type.into(),
            payload: Bytes::from_static(
                b"<message to='romeo@example.org' type='chat' from='juliet@example.org/balcony'><body>hi</body></message>",
            ),
            hints: Some(hints),
            ..Default::default()
        }
    }

    fn body() -> MessageHints {
        MessageHints {
            body: true,
            ..Default::default()
        }
    }

    fn blocking(jid: &str) -> AccountPolicy {
        AccountPolicy {
            blocked: vec![jid.into()],
        }
    }

    #[test]
    fn a_blocked_recipient_refuses_messages_and_requests_and_drops_the_rest() {
        let policy = blocking("romeo@example.org");
        let refused = outbound(&policy, &message("chat", body()));
        let Verdict::Refuse(error) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(error.condition, StanzaErrorCondition::NotAcceptable);
        assert_eq!(error.application, Some(("blocked", ns::BLOCKING_ERRORS)));
        let presence = Envelope {
            kind: Kind::Presence as i32,
            ..message("", body())
        };
        assert_eq!(outbound(&policy, &presence), Verdict::Drop);
        let error = message("error", body());
        assert_eq!(outbound(&policy, &error), Verdict::Drop);
        assert_eq!(
            outbound(&blocking("nurse@example.org"), &message("chat", body())),
            Verdict::Pass
        );
    }

    #[test]
    fn a_blocked_sender_finds_the_user_unavailable() {
        let policy = blocking("juliet@example.org");
        let Verdict::Refuse(error) = inbound(&policy, &message("chat", body())) else {
            panic!("not refused");
        };
        assert_eq!(error.condition, StanzaErrorCondition::ServiceUnavailable);
        let result = Envelope {
            kind: Kind::Iq as i32,
            ..message("result", body())
        };
        assert_eq!(inbound(&policy, &result), Verdict::Drop);
    }

    #[test]
    fn which_messages_are_copied() {
        assert!(carbons_eligible(&message("chat", MessageHints::default())));
        assert!(carbons_eligible(&message("normal", body())));
        assert!(carbons_eligible(&message("", body())));
        let receipt = MessageHints {
            im_payload: true,
            ..Default::default()
        };
        assert!(carbons_eligible(&message("", receipt)));
        assert!(!carbons_eligible(&message(
            "normal",
            MessageHints::default()
        )));
        for kept in ["groupchat", "headline", "error"] {
            assert!(!carbons_eligible(&message(kept, body())), "{kept}");
        }
        for private in [
            MessageHints {
                private: true,
                ..body()
            },
            MessageHints {
                no_copy: true,
                ..body()
            },
        ] {
            assert!(!carbons_eligible(&message("chat", private)));
        }
        let from_the_server = Envelope {
            hints: None,
            ..message("chat", body())
        };
        assert!(!carbons_eligible(&from_the_server));
    }

    #[test]
    fn a_copy_forwards_the_message_in_the_client_namespace() {
        let copy = carbon_copy(
            Carbon::Sent,
            &message("chat", body()),
            "juliet@example.org",
            "juliet@example.org/chamber",
        );
        assert_eq!(
            std::str::from_utf8(&copy.payload).unwrap(),
            "<message xmlns='jabber:client' from='juliet@example.org' \
             to='juliet@example.org/chamber' type='chat'>\
             <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' to='romeo@example.org' type='chat' \
             from='juliet@example.org/balcony'><body>hi</body></message>\
             </forwarded></sent></message>"
        );
        assert_eq!(copy.stage(), Stage::Deliver);
        assert_eq!(copy.to, "juliet@example.org/chamber");
    }

    #[test]
    fn copies_go_to_resources_that_enabled_them_and_lack_the_message() {
        let resource = |name: &str, carbons: bool| BoundResource {
            full_jid: format!("juliet@example.org/{name}"),
            flags: Some(ResourceFlags {
                carbons,
                ..Default::default()
            }),
            ..Default::default()
        };
        let resources = [
            resource("balcony", true),
            resource("chamber", true),
            resource("garden", false),
        ];
        let copied: Vec<&str> =
            carbon_recipients(&resources, |r| r.full_jid == "juliet@example.org/balcony")
                .map(|r| r.full_jid.as_str())
                .collect();
        assert_eq!(copied, ["juliet@example.org/chamber"]);
    }
}
