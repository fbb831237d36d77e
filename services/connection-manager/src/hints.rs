//! What routing needs to know of a message's content (`MessageHints`), read
//! once here so that the router never parses a payload.
//!
//! A byte search decides, for every message, whether anything is there to
//! read; only a message that names one of the namespaces below is parsed,
//! and then only its own children count. `<body` alone is taken at its
//! word: text cannot hold a `<`, and a `<body/>` nested in another child
//! (XHTML-IM) travels with a plain body anyway.

use memchr::memmem;
use xmppd_grpc::MessageHints;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;

/// Namespaces of payloads that make a bodiless message part of a
/// conversation (XEP-0280 §6).
const IM_PAYLOADS: [&str; 3] = [ns::CHAT_STATES, ns::RECEIPTS, ns::CHAT_MARKERS];

/// The hints of a message; `None` for presence and IQs.
pub fn read(stanza: &Stanza) -> Option<MessageHints> {
    if stanza.name() != "message" {
        return None;
    }
    let raw = stanza.raw();
    let names = |namespace: &str| memmem::find(raw, namespace.as_bytes()).is_some();
    let mut hints = MessageHints {
        body: memmem::find(raw, b"<body").is_some(),
        ..Default::default()
    };
    let worth_parsing =
        names(ns::CARBONS) || names(ns::HINTS) || IM_PAYLOADS.iter().any(|ns| names(ns));
    if !worth_parsing {
        return Some(hints);
    }
    let Ok(message) = stanza.element() else {
        return Some(hints);
    };
    for child in message.children() {
        hints.private |= child.is("private", ns::CARBONS);
        hints.no_copy |= child.is("no-copy", ns::HINTS);
        hints.im_payload |= IM_PAYLOADS.contains(&child.namespace());
    }
    Some(hints)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn hints(xml: &'static str) -> Option<MessageHints> {
        read(&Stanza::from_bytes(Bytes::from_static(xml.as_bytes()), ns::CLIENT).unwrap())
    }

    #[test]
    fn a_chat_message_has_a_body_and_nothing_else() {
        let found = hints("<message to='a@b' type='chat'><body>hi</body></message>").unwrap();
        assert_eq!(
            found,
            MessageHints {
                body: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn private_no_copy_and_conversation_payloads_are_its_own_children() {
        let found = hints(
            "<message to='a@b'><private xmlns='urn:xmpp:carbons:2'/>\
             <no-copy xmlns='urn:xmpp:hints'/>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        .unwrap();
        assert!(found.private && found.no_copy && found.im_payload && !found.body);
    }

    #[test]
    fn a_namespace_mentioned_in_text_or_deeper_is_not_a_hint() {
        let found = hints(
            "<message to='a@b'><body>see urn:xmpp:carbons:2</body>\
             <x xmlns='jabber:x:data'><private xmlns='urn:xmpp:carbons:2'/></x></message>",
        )
        .unwrap();
        assert!(found.body && !found.private);
    }

    #[test]
    fn only_messages_have_hints() {
        assert_eq!(hints("<presence/>"), None);
        assert_eq!(
            hints("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"),
            None
        );
    }
}
