//! Stanzas as they cross the server: the raw bytes plus the few header fields routing needs.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StanzaError;
use crate::jid::Jid;
use crate::ns;
use crate::tag::StartTag;
use crate::validate::{check_prefix_binding, split_qname, unescape_attr, utf8};
use crate::xml::{Element, ParseError, escape_attr};

/// One top-level element of a stream, exactly as received, with its start tag's routing
/// attributes read out. Nothing below the start tag is parsed unless [`Stanza::element`] asks.
#[derive(Clone, Debug)]
pub struct Stanza {
    /// From the element's `<` to the final `>` of its end tag.
    raw: Bytes,
    name: Range<usize>,
    namespace: Text,
    /// The default namespace outside the stanza (the stream's content namespace), needed to
    /// rebuild its DOM.
    content_ns: Text,
    to: Option<Text>,
    from: Option<Text>,
    id: Option<Text>,
    stanza_type: Option<Text>,
    lang: Option<Text>,
    /// The bytes of the `from` attribute (leading whitespace included), cut by `with_from`.
    from_attr: Option<Range<usize>>,
    /// Where `with_from` inserts a `from` when there is none: right after the element name.
    name_end: usize,
}

/// A header value: a slice of `raw` when it needed no unescaping (the common case), else its own
/// string; well-known namespaces point at static strings.
#[derive(Clone, Debug)]
pub(crate) enum Text {
    Static(&'static str),
    Raw(Range<usize>),
    Owned(Box<str>),
}

impl Text {
    fn as_str<'a>(&'a self, raw: &'a [u8]) -> &'a str {
        match self {
            Text::Static(s) => s,
            Text::Raw(range) => raw_str(raw, range.clone()),
            Text::Owned(s) => s,
        }
    }

    pub(crate) fn namespace(uri: &str) -> Text {
        match ns::well_known(uri) {
            Some(known) => Text::Static(known),
            None => Text::Owned(uri.into()),
        }
    }

    /// An attribute value, unescaped only if it has to be.
    fn attr(raw: &[u8], value: Range<usize>) -> Result<Text, ParseError> {
        Ok(match unescape_attr(utf8(&raw[value.clone()])?)? {
            std::borrow::Cow::Borrowed(_) => Text::Raw(value),
            std::borrow::Cow::Owned(owned) => Text::Owned(owned.into()),
        })
    }
}

impl Stanza {
    /// Reads the header of `raw`, whose content has already been validated. `outer` resolves
    /// the prefixes (and "" for the default namespace) in scope around the stanza.
    pub(crate) fn from_validated(
        raw: Bytes,
        content_ns: &str,
        outer: impl Fn(&str) -> Option<Text>,
    ) -> Result<Stanza, ParseError> {
        let mut tag = StartTag::new(&raw, b"<")?;
        let (prefix, local) = split_qname(tag.name())?;
        let name_start = 1 + tag.name().len() - local.len();
        let name_end = tag.name_end();
        let mut own_namespace = None;
        let mut header = Header::default();
        while let Some(attr) = tag.next_attr()? {
            let declared = match attr.key {
                "xmlns" => Some(""),
                key => key.strip_prefix("xmlns:"),
            };
            match (attr.key, declared) {
                (_, Some(declared)) if declared == prefix => {
                    let uri = unescape_attr(utf8(&raw[attr.value.clone()])?)?;
                    if !prefix.is_empty() {
                        check_prefix_binding(prefix, &uri)?;
                    }
                    own_namespace = Some(Text::namespace(&uri));
                }
                (_, Some(_)) => {}
                ("to", _) => header.to = Some(Text::attr(&raw, attr.value)?),
                ("from", _) => {
                    header.from = Some(Text::attr(&raw, attr.value)?);
                    header.from_attr = Some(attr.span);
                }
                ("id", _) => header.id = Some(Text::attr(&raw, attr.value)?),
                ("type", _) => header.stanza_type = Some(Text::attr(&raw, attr.value)?),
                ("xml:lang", _) => header.lang = Some(Text::attr(&raw, attr.value)?),
                _ => {}
            }
        }
        let namespace = own_namespace
            .or_else(|| outer(prefix))
            .ok_or_else(|| ParseError::BadNamespacePrefix(prefix.to_owned()))?;
        Ok(Stanza {
            name: name_start..name_end,
            namespace,
            content_ns: Text::namespace(content_ns),
            to: header.to,
            from: header.from,
            id: header.id,
            stanza_type: header.stanza_type,
            lang: header.lang,
            from_attr: header.from_attr,
            name_end,
            raw,
        })
    }

    /// Re-reads the header of a stanza validated elsewhere (e.g. by the connection-manager
    /// that received it), whose stream's content namespace was `default_ns`. Only the start tag
    /// is looked at.
    pub fn from_bytes(raw: Bytes, default_ns: &str) -> Result<Stanza, ParseError> {
        Self::from_validated(raw, default_ns, |prefix| match prefix {
            "" => Some(Text::namespace(default_ns)),
            "stream" => Some(Text::Static(ns::STREAM)),
            _ => None,
        })
    }

    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The local name: "message", "presence", "iq", or a nonza's ("auth", "r", ...).
    pub fn name(&self) -> &str {
        raw_str(&self.raw, self.name.clone())
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_str(&self.raw)
    }

    pub fn to(&self) -> Option<&str> {
        self.field(&self.to)
    }

    pub fn from(&self) -> Option<&str> {
        self.field(&self.from)
    }

    pub fn id(&self) -> Option<&str> {
        self.field(&self.id)
    }

    pub fn stanza_type(&self) -> Option<&str> {
        self.field(&self.stanza_type)
    }

    pub fn lang(&self) -> Option<&str> {
        self.field(&self.lang)
    }

    fn field<'a>(&'a self, text: &'a Option<Text>) -> Option<&'a str> {
        text.as_ref().map(|t| t.as_str(&self.raw))
    }

    /// Whether this is a message, presence or IQ (RFC 6120 §8) rather than a nonza. Server
    /// streams' `jabber:server` counts too, so that the same code serves s2s later.
    pub fn is_stanza(&self) -> bool {
        matches!(self.name(), "message" | "presence" | "iq")
            && matches!(self.namespace(), ns::CLIENT | ns::SERVER)
    }

    /// The raw bytes with the start tag's `from` set to `from`, replacing any the sender gave
    /// (which is how the server prevents spoofing); every other byte is unchanged.
    pub fn with_from(&self, from: &str) -> Bytes {
        let cut = self
            .from_attr
            .clone()
            .unwrap_or(self.name_end..self.name_end);
        let escaped = escape_attr(from);
        let mut out = BytesMut::with_capacity(self.raw.len() + escaped.len() + 8 - cut.len());
        out.put_slice(&self.raw[..cut.start]);
        out.put_slice(b" from='");
        out.put_slice(escaped.as_bytes());
        out.put_u8(b'\'');
        out.put_slice(&self.raw[cut.end..]);
        out.freeze()
    }

    /// The stanza as a DOM, for handlers that need its payload.
    pub fn element(&self) -> Result<Element, ParseError> {
        Element::parse(&self.raw, self.content_ns.as_str(&self.raw))
    }
}

/// A header slice of a stanza's bytes. The range was read out of validated UTF-8 on ASCII
/// boundaries, so the fallback is unreachable; it only spares a panic path.
fn raw_str(raw: &[u8], range: Range<usize>) -> &str {
    raw.get(range)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// Routing attributes gathered while scanning the start tag.
#[derive(Default)]
struct Header {
    to: Option<Text>,
    from: Option<Text>,
    id: Option<Text>,
    stanza_type: Option<Text>,
    lang: Option<Text>,
    from_attr: Option<Range<usize>>,
}

/// `element` (a whole element, well-formed) as a document of its own in the client
/// namespace: a stanza cut from a client stream inherits `jabber:client` from the
/// stream's header, which it loses once forwarded (XEP-0297) or sent alone (RFC 7395
/// §3.4). `None` when its start tag declares a default namespace already.
pub fn in_client_namespace(element: &[u8]) -> Option<Vec<u8>> {
    let name_end = element
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'>'))?;
    let tag_end = start_tag_end(element)?;
    let start_tag = &element[..tag_end];
    let declares = start_tag.windows(6).enumerate().any(|(at, window)| {
        window == b"xmlns=" || (window == b"xmlns " && declares_at(start_tag, at + 5))
    });
    if declares {
        return None;
    }
    let declaration = b" xmlns='jabber:client'";
    let mut out = Vec::with_capacity(element.len() + declaration.len());
    out.extend_from_slice(&element[..name_end]);
    out.extend_from_slice(declaration);
    out.extend_from_slice(&element[name_end..]);
    Some(out)
}

/// Whether only spaces stand between `at` and an `=` (`xmlns = '…'`).
fn declares_at(tag: &[u8], at: usize) -> bool {
    tag[at..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'=')
}

/// Just past the first start tag's `>`, quoted attribute values (which may
/// hold a `>`) skipped.
fn start_tag_end(element: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (at, &byte) in element.iter().enumerate() {
        match (quote, byte) {
            (None, b'\'' | b'"') => quote = Some(byte),
            (Some(open), _) if open == byte => quote = None,
            (None, b'>') => return Some(at + 1),
            _ => {}
        }
    }
    None
}

/// An error reply to `stanza` (RFC 6120 §8.3.1): addresses swapped, same id, `type='error'`,
/// and the error, without the original payload. `server_from` is the sender when the original
/// had no `to` (it was addressed to the server itself), or one that is not a JID: the reply to a
/// `<jid-malformed/>` stanza must not carry the malformed address back to the client.
///
/// Callers must not answer a `type='error'` stanza with another error (RFC 6120 §8.3.1).
pub fn error_reply(stanza: &Stanza, error: &StanzaError, server_from: &str) -> Bytes {
    let from = stanza
        .to()
        .filter(|to| Jid::parse(to).is_ok())
        .unwrap_or(server_from);
    let to = stanza.from().unwrap_or_default();
    error_element(
        stanza.name(),
        stanza.namespace(),
        stanza.id(),
        from,
        to,
        error,
    )
}

/// An error stanza built from header fields alone, for services that never
/// parse the stanza they answer (the router works from an envelope).
pub fn error_stanza(
    name: &str,
    id: Option<&str>,
    from: &str,
    to: &str,
    error: &StanzaError,
) -> Bytes {
    error_element(name, ns::CLIENT, id, from, to, error)
}

fn error_element(
    name: &str,
    namespace: &str,
    id: Option<&str>,
    from: &str,
    to: &str,
    error: &StanzaError,
) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    if !matches!(namespace, ns::CLIENT | ns::SERVER | ns::COMPONENT_ACCEPT) {
        push_attr(&mut out, "xmlns", namespace);
    }
    push_attr(&mut out, "from", from);
    if !to.is_empty() {
        push_attr(&mut out, "to", to);
    }
    if let Some(id) = id {
        push_attr(&mut out, "id", id);
    }
    push_attr(&mut out, "type", "error");
    out.push(b'>');
    error.to_element_in(namespace).write_to(&mut out, namespace);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
    Bytes::from(out)
}

fn push_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    out.extend_from_slice(escape_attr(value).as_bytes());
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stanza_is_put_in_the_client_namespace_unless_it_declares_one() {
        let put =
            |xml: &str| in_client_namespace(xml.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            put("<message to='a@b' id='x>y'><body>hi</body></message>").as_deref(),
            Some("<message xmlns='jabber:client' to='a@b' id='x>y'><body>hi</body></message>")
        );
        assert_eq!(put("<iq/>").as_deref(), Some("<iq xmlns='jabber:client'/>"));
        assert_eq!(
            put("<presence>").as_deref(),
            Some("<presence xmlns='jabber:client'>")
        );
        assert_eq!(put("<message xmlns='jabber:client'/>"), None);
        assert_eq!(
            put("<auth xmlns = 'urn:ietf:params:xml:ns:xmpp-sasl'/>"),
            None
        );
        // A prefix declaration is not a default namespace; a child's is not the stanza's.
        assert_eq!(
            put("<iq xmlns:x='y'><q xmlns='z'/></iq>").as_deref(),
            Some("<iq xmlns='jabber:client' xmlns:x='y'><q xmlns='z'/></iq>")
        );
    }
    use crate::error::StanzaErrorCondition;

    fn stanza(xml: &str) -> Stanza {
        Stanza::from_bytes(Bytes::copy_from_slice(xml.as_bytes()), ns::CLIENT).unwrap()
    }

    #[test]
    fn reads_header_fields() {
        let s = stanza(
            "<message to='juliet@example.com' id=\"m&amp;1\" type='chat' xml:lang='en'>\
             <body>hi</body></message>",
        );
        assert_eq!(s.name(), "message");
        assert_eq!(s.namespace(), ns::CLIENT);
        assert_eq!(s.to(), Some("juliet@example.com"));
        assert_eq!(s.from(), None);
        assert_eq!(s.id(), Some("m&1"));
        assert_eq!(s.stanza_type(), Some("chat"));
        assert_eq!(s.lang(), Some("en"));
        assert!(s.is_stanza());
        let body = s.element().unwrap();
        assert_eq!(
            body.get_child("body", ns::CLIENT).unwrap().text_content(),
            "hi"
        );
    }

    #[test]
    fn resolves_own_namespace() {
        let auth = stanza(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
        );
        assert_eq!((auth.name(), auth.namespace()), ("auth", ns::SASL));
        assert!(!auth.is_stanza());
        let r = stanza("<sm:r xmlns:sm='urn:xmpp:sm:3'/>");
        assert_eq!((r.name(), r.namespace()), ("r", ns::SM));
        let custom = stanza("<x xmlns='urn:custom'/>");
        assert_eq!(custom.namespace(), "urn:custom");
        assert!(Stanza::from_bytes(Bytes::from_static(b"<p:x/>"), ns::CLIENT).is_err());
        assert!(Stanza::from_bytes(Bytes::from_static(b"<x a='1"), ns::CLIENT).is_err());
    }

    #[test]
    fn with_from_replaces_or_inserts() {
        let s = stanza("<message\tfrom=\"evil@x/y\"  to='a@b'><body/></message>");
        assert_eq!(
            &s.with_from("romeo@example.net/orchard")[..],
            b"<message from='romeo@example.net/orchard'  to='a@b'><body/></message>"
        );
        let s = stanza("<presence/>");
        assert_eq!(
            &s.with_from("a@b/c'd")[..],
            b"<presence from='a@b/c&apos;d'/>"
        );
        let s = stanza("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert_eq!(
            &s.with_from("a@b/c")[..],
            b"<iq from='a@b/c' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        let reparsed = Stanza::from_bytes(s.with_from("a@b/c"), ns::CLIENT).unwrap();
        assert_eq!(reparsed.from(), Some("a@b/c"));
    }

    #[test]
    fn error_reply_swaps_addresses() {
        let s = stanza(
            "<iq from='a@b/c' to='d@e' id='q1' type='get'><query xmlns='jabber:iq:version'/></iq>",
        );
        let error = StanzaError::new(StanzaErrorCondition::ServiceUnavailable);
        assert_eq!(
            &error_reply(&s, &error, "e")[..],
            &b"<iq from='d@e' to='a@b/c' id='q1' type='error'><error type='cancel'>\
               <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"[..]
        );
        let s = stanza("<message from='a@b/c' id='m'/>");
        let error = StanzaError::new(StanzaErrorCondition::BadRequest).with_text("no <body>");
        let reply = Stanza::from_bytes(error_reply(&s, &error, "example.com"), ns::CLIENT).unwrap();
        assert_eq!(reply.from(), Some("example.com"));
        assert_eq!(reply.to(), Some("a@b/c"));
        assert_eq!(reply.stanza_type(), Some("error"));
        let element = reply.element().unwrap();
        let error_element = element.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(error_element.get_attr("type"), Some("modify"));
        assert!(
            error_element
                .get_child("bad-request", ns::STANZAS)
                .is_some()
        );
        assert_eq!(
            error_element
                .get_child("text", ns::STANZAS)
                .unwrap()
                .text_content(),
            "no <body>"
        );
    }

    #[test]
    fn error_reply_to_a_malformed_address_comes_from_the_server() {
        let s = stanza("<message to='a@b@c' id='m'/>");
        let error = StanzaError::new(StanzaErrorCondition::JidMalformed);
        let reply = Stanza::from_bytes(error_reply(&s, &error, "example.com"), ns::CLIENT).unwrap();
        assert_eq!(reply.from(), Some("example.com"));
    }
}
