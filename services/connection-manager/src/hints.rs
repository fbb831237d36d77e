//! What routing needs to know of a message's content (`MessageHints`), read
//! once here so that the router never parses a payload.
//!
//! One pass over the message's tags, without a DOM: the stream parser has
//! already checked the stanza, so its tags are well-formed, text holds no
//! `<`, and only attribute values can hold a `>`. Only the message's own
//! children count, each by its name and the namespace it declares (clients
//! declare a payload's namespace on the payload's own element).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};
use xmppd_grpc::MessageHints;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;

/// The hints of a message; `None` for presence and IQs.
pub fn read(stanza: &Stanza) -> Option<MessageHints> {
    if stanza.name() != "message" {
        return None;
    }
    let mut hints = MessageHints::default();
    for child in children(stanza.raw()) {
        match (child.name, child.namespace) {
            (b"body", None) => hints.body = true,
            (b"body", Some(namespace)) if namespace == ns::CLIENT.as_bytes() => hints.body = true,
            (b"private", Some(namespace)) if namespace == ns::CARBONS.as_bytes() => {
                hints.private = true;
            }
            (b"no-copy", Some(namespace)) if namespace == ns::HINTS.as_bytes() => {
                hints.no_copy = true;
            }
            (_, Some(namespace)) if is_im_payload(namespace) => hints.im_payload = true,
            _ => {}
        }
    }
    Some(hints)
}

/// Chat states (XEP-0085), receipts (XEP-0184) and markers (XEP-0333): what
/// makes a bodiless message part of a conversation (XEP-0280 §6).
fn is_im_payload(namespace: &[u8]) -> bool {
    [ns::CHAT_STATES, ns::RECEIPTS, ns::CHAT_MARKERS]
        .iter()
        .any(|im| namespace == im.as_bytes())
}

/// XEP-0280 §7: the sending server SHOULD remove `<private/>` before
/// delivering the message. `message` is the stanza as it goes to the router;
/// a `<private/>` with children of its own (which it should not have) stays.
pub fn without_private(message: Bytes) -> Bytes {
    let private = children(&message)
        .find(|child| child.name == b"private" && child.namespace == Some(ns::CARBONS.as_bytes()));
    let Some(span) = private.and_then(|child| child.span(&message)) else {
        return message;
    };
    let mut out = BytesMut::with_capacity(message.len() - span.len());
    out.put_slice(&message[..span.start]);
    out.put_slice(&message[span.end..]);
    out.freeze()
}

/// A child element of the stanza: its name and the default namespace its
/// start tag declares, if any.
struct Child<'a> {
    name: &'a [u8],
    namespace: Option<&'a [u8]>,
    /// Where its start tag begins and ends.
    start: usize,
    start_end: usize,
    empty: bool,
}

impl Child<'_> {
    /// The whole element, if it has no child elements.
    fn span(&self, xml: &[u8]) -> Option<Range<usize>> {
        if self.empty {
            return Some(self.start..self.start_end);
        }
        let next = self.start_end + memchr(b'<', &xml[self.start_end..])?;
        let tag = Tag::at(xml, next)?;
        matches!(tag.kind, TagKind::End).then_some(self.start..tag.end)
    }
}

/// The start tags at depth one of a well-formed element.
fn children(xml: &[u8]) -> impl Iterator<Item = Child<'_>> {
    let mut at = 0;
    let mut depth = 0usize;
    std::iter::from_fn(move || {
        loop {
            let at_tag = at + memchr(b'<', &xml[at..])?;
            let tag = Tag::at(xml, at_tag)?;
            at = tag.end;
            match tag.kind {
                TagKind::End => depth = depth.saturating_sub(1),
                TagKind::Other => {}
                TagKind::Start { empty } => {
                    let child = (depth == 1).then_some(Child {
                        name: tag.name,
                        namespace: tag.namespace,
                        start: at_tag,
                        start_end: tag.end,
                        empty,
                    });
                    if !empty {
                        depth += 1;
                    }
                    if child.is_some() {
                        return child;
                    }
                }
            }
        }
    })
}

enum TagKind {
    Start {
        empty: bool,
    },
    End,
    /// A comment or CDATA section, skipped whole.
    Other,
}

struct Tag<'a> {
    kind: TagKind,
    name: &'a [u8],
    namespace: Option<&'a [u8]>,
    /// Just past the tag.
    end: usize,
}

impl<'a> Tag<'a> {
    /// The tag whose `<` is at `start`.
    fn at(xml: &'a [u8], start: usize) -> Option<Tag<'a>> {
        let rest = &xml[start..];
        for (open, close) in [(&b"<!--"[..], &b"-->"[..]), (b"<![CDATA[", b"]]>")] {
            if rest.starts_with(open) {
                let end = memchr::memmem::find(rest, close)? + close.len();
                return Some(Tag::other(start + end));
            }
        }
        let end_tag = rest.get(1) == Some(&b'/');
        let name_start = start + 1 + usize::from(end_tag);
        let name_len = xml[name_start..]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))?;
        let name = &xml[name_start..name_start + name_len];
        let (end, namespace) = attributes(xml, name_start + name_len)?;
        let kind = if end_tag {
            TagKind::End
        } else {
            TagKind::Start {
                empty: xml[..end - 1].ends_with(b"/"),
            }
        };
        Some(Tag {
            kind,
            name,
            namespace,
            end,
        })
    }

    fn other(end: usize) -> Tag<'a> {
        Tag {
            kind: TagKind::Other,
            name: b"",
            namespace: None,
            end,
        }
    }
}

/// Walks a tag's attributes from `at` to just past its `>`, skipping quoted
/// values (which may hold `>`); returns that position and the value of
/// `xmlns`, if declared.
fn attributes(xml: &[u8], mut at: usize) -> Option<(usize, Option<&[u8]>)> {
    let mut namespace = None;
    loop {
        at += memchr2(b'>', b'=', xml.get(at..)?)?;
        if xml[at] == b'>' {
            return Some((at + 1, namespace));
        }
        // An `=`: the attribute's name before it, its quoted value after.
        let name_end = xml[..at].iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
        let name_start = xml[..name_end]
            .iter()
            .rposition(|b| b.is_ascii_whitespace())?
            + 1;
        let quote_at = at
            + 1
            + xml[at + 1..]
                .iter()
                .position(|&b| b == b'\'' || b == b'"')?;
        let quote = xml[quote_at];
        let value_len = memchr(quote, &xml[quote_at + 1..])?;
        let value = &xml[quote_at + 1..quote_at + 1 + value_len];
        if &xml[name_start..name_end] == b"xmlns" {
            namespace = Some(value);
        }
        at = quote_at + 1 + value_len + 1;
    }
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
             <no-copy xmlns=\"urn:xmpp:hints\"/>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        .unwrap();
        assert!(found.private && found.no_copy && found.im_payload && !found.body);
        let receipt = hints("<message to='a@b'><request xmlns='urn:xmpp:receipts'/></message>");
        assert!(receipt.unwrap().im_payload);
    }

    #[test]
    fn a_namespace_mentioned_in_text_in_a_value_or_deeper_is_not_a_hint() {
        let found = hints(
            "<message to='a@b' id='x>y'><body>see &lt;private xmlns='urn:xmpp:carbons:2'/&gt;</body>\
             <x xmlns='jabber:x:data' note=\"a > b\"><private xmlns='urn:xmpp:carbons:2'/>\
             <body/></x><!-- <no-copy xmlns='urn:xmpp:hints'/> --></message>",
        )
        .unwrap();
        assert_eq!(
            found,
            MessageHints {
                body: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn private_is_removed_before_delivery_and_nothing_else_is() {
        let strip = |xml: &'static str| without_private(Bytes::from_static(xml.as_bytes()));
        assert_eq!(
            &strip(
                "<message to='a@b'><body>hi</body><private xmlns='urn:xmpp:carbons:2'/></message>"
            )[..],
            b"<message to='a@b'><body>hi</body></message>"
        );
        assert_eq!(
            &strip(
                "<message to='a@b'><private xmlns=\"urn:xmpp:carbons:2\"></private><body/></message>"
            )[..],
            b"<message to='a@b'><body/></message>"
        );
        for kept in [
            "<message to='a@b'><x xmlns='jabber:x:data'><private xmlns='urn:xmpp:carbons:2'/></x></message>",
            "<message to='a@b'><private xmlns='urn:example'/></message>",
            "<message to='a@b'><private xmlns='urn:xmpp:carbons:2'><x/></private></message>",
        ] {
            assert_eq!(&strip(kept)[..], kept.as_bytes());
        }
    }

    #[test]
    fn other_hints_and_namespaced_bodies_are_not_these() {
        let found = hints(
            "<message to='a@b'><store xmlns='urn:xmpp:hints'/>\
             <body xmlns='http://www.w3.org/1999/xhtml'/></message>",
        )
        .unwrap();
        assert_eq!(found, MessageHints::default());
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
