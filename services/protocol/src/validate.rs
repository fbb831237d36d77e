//! Well-formedness and RFC 6120 §11 restricted-XML checks over one complete element, with
//! namespace resolution; shared by the stream framer (validation only) and the DOM builder.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::ns;
use crate::stream::Limits;
use crate::xml::ParseError;

/// Receives the content of a validated element. Validation-only callers use [`NoSink`], whose
/// `BUILDS = false` lets the walker skip decoding text it would throw away.
pub(crate) trait Sink {
    const BUILDS: bool;
    fn start(&mut self, name: &str, namespace: &str);
    /// An unprefixed attribute, or `xml:lang`, unescaped.
    fn attr(&mut self, name: &str, value: Cow<'_, str>);
    fn text(&mut self, text: &str);
    fn end(&mut self);
}

pub(crate) struct NoSink;

impl Sink for NoSink {
    const BUILDS: bool = false;
    fn start(&mut self, _: &str, _: &str) {}
    fn attr(&mut self, _: &str, _: Cow<'_, str>) {}
    fn text(&mut self, _: &str) {}
    fn end(&mut self) {}
}

/// The prefix bindings in scope, kept in one reusable arena so that resolving the namespaces of
/// a stanza allocates nothing once the connection has warmed up.
#[derive(Debug, Default)]
pub(crate) struct Namespaces {
    /// Prefixes and URIs of every binding, back to back.
    arena: String,
    bindings: Vec<Binding>,
    /// Bindings below this index belong to the enclosing context (the stream header) and
    /// outlive every stanza.
    base: usize,
}

#[derive(Debug)]
struct Binding {
    start: usize,
    prefix_end: usize,
    uri_end: usize,
    /// Depth of the element that declared it; 0 for the enclosing context.
    level: usize,
}

impl Namespaces {
    /// A context whose default namespace is `default_ns` and where the `stream` prefix, bound
    /// by every XMPP stream header, is known.
    pub(crate) fn with_default(default_ns: &str) -> Self {
        let mut namespaces = Self::default();
        namespaces.declare("", default_ns, 0);
        namespaces.declare("stream", ns::STREAM, 0);
        namespaces.seal();
        namespaces
    }

    /// Makes the current bindings the enclosing context.
    pub(crate) fn seal(&mut self) {
        self.base = self.bindings.len();
    }

    fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.bindings.shrink_to_fit();
    }

    pub(crate) fn declare(&mut self, prefix: &str, uri: &str, level: usize) {
        let start = self.arena.len();
        self.arena.push_str(prefix);
        let prefix_end = self.arena.len();
        self.arena.push_str(uri);
        self.bindings.push(Binding {
            start,
            prefix_end,
            uri_end: self.arena.len(),
            level,
        });
    }

    /// The namespace bound to `prefix` ("" for the default namespace).
    pub(crate) fn resolve(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(ns::XML);
        }
        self.bindings
            .iter()
            .rev()
            .find(|b| {
                let bound = &self.arena[b.start..b.prefix_end];
                // The default namespace, asked for on nearly every element,
                // is found by its length alone: `==` would call `memcmp`
                // even for empty strings, a quarter of a stanza's parsing.
                bound.len() == prefix.len() && (prefix.is_empty() || bound == prefix)
            })
            .map(|b| &self.arena[b.prefix_end..b.uri_end])
    }

    /// Forgets the bindings declared by elements at `level` or deeper.
    fn leave(&mut self, level: usize) {
        while let Some(last) = self.bindings.last() {
            if last.level < level || self.bindings.len() <= self.base {
                break;
            }
            self.arena.truncate(last.start);
            self.bindings.pop();
        }
    }

    fn reset(&mut self) {
        self.leave(1);
    }
}

/// Reusable validation state for one stream (or one DOM parse).
#[derive(Debug, Default)]
pub(crate) struct Validator {
    pub(crate) namespaces: Namespaces,
    /// Attribute names of the element being checked, for the duplicate check.
    keys: String,
    key_ends: Vec<usize>,
}

impl Validator {
    pub(crate) fn new(namespaces: Namespaces) -> Self {
        Self {
            namespaces,
            ..Self::default()
        }
    }

    /// Gives back what stanzas grew beyond the stream's own bindings, for
    /// streams that go quiet.
    pub(crate) fn shrink(&mut self) {
        self.namespaces.shrink();
        self.keys = String::new();
        self.key_ends = Vec::new();
    }

    /// Checks that `xml` is exactly one well-formed element allowed in an XMPP stream, feeding
    /// its content to `sink`.
    pub(crate) fn check<S: Sink>(
        &mut self,
        xml: &[u8],
        limits: &Limits,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        if xml.len() > limits.max_stanza_bytes {
            return Err(ParseError::PolicyViolation("stanza too large"));
        }
        check_chars(xml)?;
        self.namespaces.reset();
        let mut walk = Walk {
            validator: self,
            limits,
            sink,
            depth: 0,
            seen_root: false,
        };
        let result = walk.run(xml);
        self.namespaces.reset();
        result
    }

    fn check_duplicate(&mut self, key: &str) -> Result<(), ParseError> {
        let mut start = 0;
        for &end in &self.key_ends {
            if &self.keys[start..end] == key {
                return Err(not_well_formed(format!("duplicate attribute {key}")));
            }
            start = end;
        }
        self.keys.push_str(key);
        self.key_ends.push(self.keys.len());
        Ok(())
    }
}

/// One pass of quick-xml's reader over a complete element.
struct Walk<'a, S> {
    validator: &'a mut Validator,
    limits: &'a Limits,
    sink: &'a mut S,
    depth: usize,
    seen_root: bool,
}

impl<S: Sink> Walk<'_, S> {
    fn run(&mut self, xml: &[u8]) -> Result<(), ParseError> {
        let mut reader = Reader::from_reader(xml);
        loop {
            match reader.read_event().map_err(not_well_formed)? {
                Event::Start(tag) => self.open(&tag)?,
                Event::Empty(tag) => {
                    self.open(&tag)?;
                    self.close();
                }
                Event::End(_) => self.close(),
                Event::Text(text) => {
                    if self.depth == 0 {
                        if !text.iter().all(u8::is_ascii_whitespace) {
                            return Err(not_well_formed("text outside the element"));
                        }
                    } else if S::BUILDS {
                        self.sink
                            .text(&text.xml10_content().map_err(not_well_formed)?);
                    }
                }
                Event::GeneralRef(reference) => {
                    let c = resolve_reference(utf8(&reference)?)?;
                    if self.depth == 0 {
                        return Err(not_well_formed("reference outside the element"));
                    }
                    self.sink.text(c.encode_utf8(&mut [0; 4]));
                }
                Event::CData(data) => {
                    if self.depth == 0 {
                        return Err(not_well_formed("cdata outside the element"));
                    }
                    if S::BUILDS {
                        self.sink.text(utf8(&data)?);
                    }
                }
                Event::Comment(_) => return Err(ParseError::RestrictedXml("comment")),
                Event::PI(_) | Event::Decl(_) => {
                    return Err(ParseError::RestrictedXml("processing instruction"));
                }
                Event::DocType(_) => return Err(ParseError::RestrictedXml("doctype")),
                Event::Eof => break,
            }
        }
        match (self.depth, self.seen_root) {
            (0, true) => Ok(()),
            (0, false) => Err(not_well_formed("no element")),
            _ => Err(not_well_formed("unclosed element")),
        }
    }

    fn open(&mut self, tag: &BytesStart<'_>) -> Result<(), ParseError> {
        if self.depth == 0 && self.seen_root {
            return Err(not_well_formed("more than one root element"));
        }
        self.seen_root = true;
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(ParseError::PolicyViolation("elements nested too deeply"));
        }
        self.declare_namespaces(tag)?;
        let namespaces = &self.validator.namespaces;
        let qname = tag.name();
        let (prefix, local) = split_qname(utf8(qname.as_ref())?)?;
        let uri = namespaces
            .resolve(prefix)
            .ok_or_else(|| ParseError::BadNamespacePrefix(prefix.to_owned()))?;
        self.sink.start(local, uri);
        for attr in tag.attributes().with_checks(false) {
            let attr = attr.map_err(not_well_formed)?;
            let key = utf8(attr.key.as_ref())?;
            if is_declaration(key) {
                continue;
            }
            match split_qname(key)? {
                ("", name) if S::BUILDS => self.sink.attr(name, unescape_attr(utf8(&attr.value)?)?),
                ("", _) => {}
                ("xml", "lang") if S::BUILDS => {
                    self.sink.attr(key, unescape_attr(utf8(&attr.value)?)?);
                }
                (prefix, _) if namespaces.resolve(prefix).is_none() => {
                    return Err(ParseError::BadNamespacePrefix(prefix.to_owned()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Binds the element's `xmlns` declarations and checks its attributes: count, uniqueness,
    /// references.
    fn declare_namespaces(&mut self, tag: &BytesStart<'_>) -> Result<(), ParseError> {
        let validator = &mut *self.validator;
        validator.keys.clear();
        validator.key_ends.clear();
        for (count, attr) in tag.attributes().with_checks(false).enumerate() {
            if count >= self.limits.max_attributes {
                return Err(ParseError::PolicyViolation("too many attributes"));
            }
            let attr = attr.map_err(not_well_formed)?;
            let key = utf8(attr.key.as_ref())?;
            validator.check_duplicate(key)?;
            let value = unescape_attr(utf8(&attr.value)?)?;
            if key == "xmlns" {
                validator.namespaces.declare("", &value, self.depth);
            } else if let Some(prefix) = key.strip_prefix("xmlns:")
                && check_prefix_binding(prefix, &value)?
            {
                validator.namespaces.declare(prefix, &value, self.depth);
            }
        }
        Ok(())
    }

    fn close(&mut self) {
        self.validator.namespaces.leave(self.depth);
        self.depth = self.depth.saturating_sub(1);
        self.sink.end();
    }
}

pub(crate) fn is_declaration(key: &str) -> bool {
    key == "xmlns" || key.starts_with("xmlns:")
}

/// Namespaces in XML 1.0 §3: a prefix cannot be undeclared, and `xml`/`xmlns` are reserved.
/// Returns whether the binding needs recording (`xml` is always bound).
pub(crate) fn check_prefix_binding(prefix: &str, uri: &str) -> Result<bool, ParseError> {
    let bad = || Err(ParseError::BadNamespacePrefix(prefix.to_owned()));
    match prefix {
        "" | "xmlns" => bad(),
        "xml" if uri == ns::XML => Ok(false),
        "xml" => bad(),
        _ if uri.is_empty() || uri == ns::XML || prefix.contains(':') => bad(),
        _ => Ok(true),
    }
}

/// Splits `prefix:local`; the prefix is "" when absent.
pub(crate) fn split_qname(qname: &str) -> Result<(&str, &str), ParseError> {
    match qname.split_once(':') {
        None if !qname.is_empty() => Ok(("", qname)),
        Some((prefix, local))
            if !prefix.is_empty() && !local.is_empty() && !local.contains(':') =>
        {
            Ok((prefix, local))
        }
        _ => Err(not_well_formed(format!("invalid name {qname:?}"))),
    }
}

/// UTF-8 (RFC 6120 §11.6) made only of characters XML 1.0 allows.
pub(crate) fn check_chars(xml: &[u8]) -> Result<&str, ParseError> {
    let text = utf8(xml)?;
    // What can be a character XML forbids: a control character, or 0xEF, the
    // lead byte of U+FFFE and U+FFFF (and of other characters). Folded over
    // every byte without stopping early, so the compiler checks many at once;
    // only a stanza that has one is decoded character by character.
    let suspect = xml.iter().fold(false, |suspect, &b| {
        suspect | (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r') | (b == 0xEF)
    });
    if suspect && !text.chars().all(is_xml_char) {
        return Err(not_well_formed("character not allowed in xml"));
    }
    Ok(text)
}

pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|_| not_well_formed("invalid utf-8"))
}

pub(crate) fn not_well_formed(reason: impl ToString) -> ParseError {
    ParseError::NotWellFormed(reason.to_string())
}

/// The character a reference (without `&` and `;`) stands for. RFC 6120 §11.1 allows only the
/// predefined entities and character references.
fn resolve_reference(name: &str) -> Result<char, ParseError> {
    Ok(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => match name.strip_prefix('#') {
            Some(number) => parse_char_ref(number)
                .ok_or_else(|| not_well_formed("invalid character reference"))?,
            None => return Err(ParseError::RestrictedXml("undeclared entity reference")),
        },
    })
}

fn parse_char_ref(number: &str) -> Option<char> {
    let code = match number.strip_prefix('x') {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()?
        }
        None if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
            number.parse().ok()?
        }
        _ => return None,
    };
    char::from_u32(code).filter(|&c| is_xml_char(c))
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Resolves the references in a raw attribute value and applies XML attribute-value
/// normalisation (tab, CR and LF become spaces). Borrows when there is nothing to do, the
/// common case.
pub(crate) fn unescape_attr(raw: &str) -> Result<Cow<'_, str>, ParseError> {
    if !raw.contains(['&', '<', '\t', '\n', '\r']) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let special = &rest[i..];
        if let Some(reference) = special.strip_prefix('&') {
            let (name, after) = reference
                .split_once(';')
                .ok_or_else(|| not_well_formed("unterminated reference"))?;
            out.push(resolve_reference(name)?);
            rest = after;
        } else if special.starts_with('<') {
            return Err(not_well_formed("'<' in attribute value"));
        } else {
            out.push(' ');
            rest = &special[1..];
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_xml_characters_pass() {
        for allowed in [
            "a\tb\nc\rd",
            "caf\u{E9}",
            "\u{FF21}\u{FFFD}\u{EFFF}",
            "\u{1F600}",
            "",
        ] {
            assert_eq!(check_chars(allowed.as_bytes()).unwrap(), allowed);
        }
        for forbidden in [
            "a\u{1}",
            "\u{0}",
            "\u{1F}x",
            "x\u{FFFE}",
            "\u{FFFF}",
            "\u{FF21}\u{FFFF}",
        ] {
            assert!(check_chars(forbidden.as_bytes()).is_err(), "{forbidden:?}");
        }
        assert!(check_chars(b"a\xff").is_err());
    }

    #[test]
    fn references() {
        assert_eq!(unescape_attr("a&amp;b&#x41;&#66;").unwrap(), "a&bAB");
        assert_eq!(unescape_attr("a\tb").unwrap(), "a b");
        assert!(matches!(unescape_attr("plain"), Ok(Cow::Borrowed("plain"))));
        assert_eq!(
            unescape_attr("&foo;"),
            Err(ParseError::RestrictedXml("undeclared entity reference"))
        );
        assert!(matches!(
            unescape_attr("&#0;"),
            Err(ParseError::NotWellFormed(_))
        ));
        assert!(matches!(
            unescape_attr("&amp"),
            Err(ParseError::NotWellFormed(_))
        ));
        assert!(matches!(
            unescape_attr("&#x+1;"),
            Err(ParseError::NotWellFormed(_))
        ));
    }

    #[test]
    fn namespace_scopes() {
        let mut namespaces = Namespaces::with_default(ns::CLIENT);
        namespaces.declare("", "urn:a", 1);
        namespaces.declare("p", "urn:p", 2);
        assert_eq!(namespaces.resolve(""), Some("urn:a"));
        assert_eq!(namespaces.resolve("p"), Some("urn:p"));
        namespaces.leave(2);
        assert_eq!(namespaces.resolve("p"), None);
        namespaces.reset();
        assert_eq!(namespaces.resolve(""), Some(ns::CLIENT));
        assert_eq!(namespaces.resolve("stream"), Some(ns::STREAM));
        assert_eq!(namespaces.resolve("xml"), Some(ns::XML));
    }
}
