//! A small owned DOM for the handlers that need one (IQs, stream negotiation), and escaping.
//!
//! Messages are never turned into a DOM on the forwarding path: see [`crate::stanza::Stanza`].

use std::borrow::Cow;
use std::fmt;

use crate::error::{StreamError, StreamErrorCondition};
use crate::stream::Limits;
use crate::validate::{Namespaces, Sink, Validator};

/// Why some XML was refused; each maps to the stream error RFC 6120 prescribes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// Constructs RFC 6120 §11.1 forbids: comments, processing instructions, DTDs, entities.
    #[error("restricted xml: {0}")]
    RestrictedXml(&'static str),
    #[error("unbound or reserved namespace prefix {0:?}")]
    BadNamespacePrefix(String),
    #[error("invalid namespace: {0}")]
    InvalidNamespace(&'static str),
    #[error("unsupported encoding")]
    UnsupportedEncoding,
    /// Well-formed XML that is not a valid XMPP stream structure.
    #[error("bad format: {0}")]
    BadFormat(&'static str),
    /// A configured limit was exceeded.
    #[error("{0}")]
    PolicyViolation(&'static str),
}

impl ParseError {
    pub fn condition(&self) -> StreamErrorCondition {
        match self {
            Self::NotWellFormed(_) => StreamErrorCondition::NotWellFormed,
            Self::RestrictedXml(_) => StreamErrorCondition::RestrictedXml,
            Self::BadNamespacePrefix(_) => StreamErrorCondition::BadNamespacePrefix,
            Self::InvalidNamespace(_) => StreamErrorCondition::InvalidNamespace,
            Self::UnsupportedEncoding => StreamErrorCondition::UnsupportedEncoding,
            Self::BadFormat(_) => StreamErrorCondition::BadFormat,
            Self::PolicyViolation(_) => StreamErrorCondition::PolicyViolation,
        }
    }
}

impl From<ParseError> for StreamError {
    /// Only limits are explained to the peer: a well-behaved client needs to know which limit it
    /// hit, while parser details would only help someone probing the parser.
    fn from(error: ParseError) -> Self {
        let stream_error = StreamError::new(error.condition());
        match error {
            ParseError::PolicyViolation(text) => stream_error.with_text(text),
            _ => stream_error,
        }
    }
}

/// An element with its resolved namespace. Prefixes are not kept: on output every element is
/// written unprefixed, with `xmlns` where its namespace differs from its parent's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: String,
    namespace: String,
    /// Unprefixed attributes, plus `xml:lang` under that name; other namespaced attributes
    /// are dropped as no handler uses them.
    attrs: Vec<(String, String)>,
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            attrs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_attr(name, Some(value.into()));
        self
    }

    pub fn child(mut self, element: Element) -> Self {
        self.push_child(element);
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text.into());
        self
    }

    /// Sets, replaces or (with `None`) removes an attribute.
    pub fn set_attr(&mut self, name: &str, value: Option<String>) {
        let existing = self.attrs.iter().position(|(n, _)| n == name);
        match (existing, value) {
            (Some(i), Some(value)) => self.attrs[i].1 = value,
            (Some(i), None) => {
                self.attrs.remove(i);
            }
            (None, Some(value)) => self.attrs.push((name.to_owned(), value)),
            (None, None) => {}
        }
    }

    pub fn push_child(&mut self, element: Element) {
        self.nodes.push(Node::Element(element));
    }

    /// Appends text, merging with a preceding text node.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        match self.nodes.last_mut() {
            Some(Node::Text(last)) => last.push_str(&text),
            _ if text.is_empty() => {}
            _ => self.nodes.push(Node::Text(text)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The first child element named `name` in namespace `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|child| child.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.nodes.iter_mut().find_map(|node| match node {
            Node::Element(child) if child.is(name, ns) => Some(child),
            _ => None,
        })
    }

    /// Keeps the child elements for which `keep` holds (and every text node).
    pub fn retain_children(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        self.nodes.retain(|node| match node {
            Node::Element(child) => keep(child),
            Node::Text(_) => true,
        });
    }

    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.nodes.iter().filter_map(|node| match node {
            Node::Element(child) => Some(child),
            Node::Text(_) => None,
        })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The element's own text, without that of its descendants.
    pub fn text_content(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|node| match node {
                Node::Text(text) => Some(text.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.namespace == ns
    }

    /// Parses one complete element under the stream rules (no DTD, comments, processing
    /// instructions or undeclared entities) and the default [`Limits`]. `default_ns` is the
    /// namespace of unprefixed elements that declare none, e.g. `jabber:client`.
    pub fn parse(xml: &[u8], default_ns: &str) -> Result<Element, ParseError> {
        let mut validator = Validator::new(Namespaces::with_default(default_ns));
        let mut builder = DomBuilder::default();
        validator.check(xml, &Limits::default(), &mut builder)?;
        builder
            .root
            .ok_or_else(|| ParseError::NotWellFormed("no element".to_owned()))
    }

    /// Serialises the element as a child of an element in namespace `parent_ns`.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.namespace != parent_ns {
            write_attr(out, "xmlns", &self.namespace);
        }
        for (name, value) in &self.attrs {
            write_attr(out, name, value);
        }
        if self.nodes.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for node in &self.nodes {
            match node {
                Node::Element(child) => child.write_to(out, &self.namespace),
                Node::Text(text) => out.extend_from_slice(escape_text(text).as_bytes()),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out, parent_ns);
        // Only `&str` data and ASCII markup were written.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Writes the element as a root with no namespace in scope.
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml(""))
    }
}

fn write_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    out.extend_from_slice(escape_attr(value).as_bytes());
    out.push(b'\'');
}

/// Builds the tree from validated content.
#[derive(Default)]
struct DomBuilder {
    /// Open elements, innermost last.
    open: Vec<Element>,
    root: Option<Element>,
}

impl Sink for DomBuilder {
    const BUILDS: bool = true;

    fn start(&mut self, name: &str, namespace: &str) {
        self.open.push(Element::new(name, namespace));
    }

    fn attr(&mut self, name: &str, value: Cow<'_, str>) {
        if let Some(element) = self.open.last_mut() {
            element.attrs.push((name.to_owned(), value.into_owned()));
        }
    }

    fn text(&mut self, text: &str) {
        if let Some(element) = self.open.last_mut() {
            element.push_text(text);
        }
    }

    fn end(&mut self) {
        let Some(element) = self.open.pop() else {
            return;
        };
        match self.open.last_mut() {
            Some(parent) => parent.push_child(element),
            None => self.root = Some(element),
        }
    }
}

/// Escapes character data. `\r` is written as a reference so that it survives the parser's
/// line-end normalisation.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\r' => Some("&#13;"),
        _ => None,
    })
}

/// Escapes an attribute value for either quote style. Whitespace other than spaces is written as
/// references so that it survives attribute-value normalisation.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    escape(s, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\'' => Some("&apos;"),
        '"' => Some("&quot;"),
        '\t' => Some("&#9;"),
        '\n' => Some("&#10;"),
        '\r' => Some("&#13;"),
        _ => None,
    })
}

fn escape(s: &str, replacement: impl Fn(char) -> Option<&'static str>) -> Cow<'_, str> {
    let Some(first) = s.find(|c| replacement(c).is_some()) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match replacement(c) {
            Some(escaped) => out.push_str(escaped),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    #[test]
    fn escaping() {
        assert!(matches!(escape_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(escape_text("a<b>&c'\""), "a&lt;b&gt;&amp;c'\"");
        assert_eq!(escape_attr("a'b\"c\n"), "a&apos;b&quot;c&#10;");
    }

    #[test]
    fn build_and_serialise() {
        let iq = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr("id", "a'1")
            .child(
                Element::new("query", ns::VERSION)
                    .child(Element::new("name", ns::VERSION).text("x<y")),
            );
        assert_eq!(
            iq.to_xml(ns::CLIENT),
            "<iq type='result' id='a&apos;1'><query xmlns='jabber:iq:version'>\
             <name>x&lt;y</name></query></iq>"
        );
    }

    #[test]
    fn parse_round_trip() {
        let xml = "<iq type='get' id='1' xml:lang='en'><query xmlns='jabber:iq:roster' ver='&amp;v'>\
                   <item jid='a@b'>t&#x41;<![CDATA[<x>]]>&lt;</item><p:x xmlns:p='urn:p'/></query></iq>";
        let iq = Element::parse(xml.as_bytes(), ns::CLIENT).unwrap();
        assert!(iq.is("iq", ns::CLIENT));
        assert_eq!(iq.get_attr("xml:lang"), Some("en"));
        let query = iq.get_child("query", ns::ROSTER).unwrap();
        assert_eq!(query.get_attr("ver"), Some("&v"));
        let item = query.get_child("item", ns::ROSTER).unwrap();
        assert_eq!(item.text_content(), "tA<x><");
        assert!(query.get_child("x", "urn:p").is_some());
        let written = iq.to_xml(ns::CLIENT);
        assert_eq!(Element::parse(written.as_bytes(), ns::CLIENT).unwrap(), iq);
        assert_eq!(
            written,
            "<iq type='get' id='1' xml:lang='en'><query xmlns='jabber:iq:roster' ver='&amp;v'>\
             <item jid='a@b'>tA&lt;x&gt;&lt;</item><x xmlns='urn:p'/></query></iq>"
        );
    }

    #[test]
    fn parse_rejects_restricted_and_malformed() {
        let cases: &[(&str, StreamErrorCondition)] = &[
            ("<a><b></a>", StreamErrorCondition::NotWellFormed),
            ("<a>", StreamErrorCondition::NotWellFormed),
            ("<a/><b/>", StreamErrorCondition::NotWellFormed),
            ("<a x='1' x='2'/>", StreamErrorCondition::NotWellFormed),
            ("<a><!-- c --></a>", StreamErrorCondition::RestrictedXml),
            ("<a><?pi x?></a>", StreamErrorCondition::RestrictedXml),
            ("<a>&ent;</a>", StreamErrorCondition::RestrictedXml),
            ("<a x='&ent;'/>", StreamErrorCondition::RestrictedXml),
            ("<p:a/>", StreamErrorCondition::BadNamespacePrefix),
            ("<a p:x='1'/>", StreamErrorCondition::BadNamespacePrefix),
            ("<a xmlns:p=''/>", StreamErrorCondition::BadNamespacePrefix),
            ("<a>\u{1}</a>", StreamErrorCondition::NotWellFormed),
        ];
        for (xml, condition) in cases {
            let error = Element::parse(xml.as_bytes(), ns::CLIENT).unwrap_err();
            assert_eq!(error.condition(), *condition, "{xml}: {error}");
        }
        assert!(Element::parse(b"<a>\xff</a>", ns::CLIENT).is_err());
    }

    #[test]
    fn namespaces_inherit_and_scope() {
        let xml = "<a xmlns='urn:a'><b/><c xmlns='urn:c'><d/></c><e/></a>";
        let a = Element::parse(xml.as_bytes(), ns::CLIENT).unwrap();
        let namespaces: Vec<_> = a.children().map(Element::namespace).collect();
        assert_eq!(namespaces, ["urn:a", "urn:c", "urn:a"]);
        assert_eq!(
            a.get_child("c", "urn:c")
                .unwrap()
                .children()
                .next()
                .unwrap()
                .namespace(),
            "urn:c"
        );
        assert_eq!(a.to_xml(ns::CLIENT), xml);
    }

    #[test]
    fn set_attr_replaces_and_removes() {
        let mut e = Element::new("a", "urn:a").attr("x", "1");
        e.set_attr("x", Some("2".into()));
        assert_eq!(e.get_attr("x"), Some("2"));
        e.set_attr("x", None);
        assert_eq!(e.get_attr("x"), None);
        assert_eq!(e.to_string(), "<a xmlns='urn:a'/>");
    }
}
