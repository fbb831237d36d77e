//! The incremental XML stream parser: bytes in, stream events out.
//!
//! Framing works in two steps over one reusable buffer, as in mini-redis: a cheap resumable
//! scan finds where the next top-level element ends (enforcing the limits as bytes arrive),
//! then that element alone is validated and split off the buffer without copying.

use bytes::{Buf, BytesMut};

use crate::error::StreamError;
use crate::framer::{Frame, Framer};
use crate::ns;
use crate::stanza::{Stanza, Text};
use crate::tag::StartTag;
use crate::validate::{
    Namespaces, NoSink, Validator, check_chars, check_prefix_binding, not_well_formed, split_qname,
    unescape_attr, utf8,
};
use crate::xml::ParseError;

/// What a peer may send before the stream is closed with `policy-violation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (or stream header), in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest nesting inside a top-level element, which counts as depth 1.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attributes: 64,
        }
    }
}

/// The attributes of `<stream:stream>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
    pub id: Option<String>,
    /// The content namespace: `jabber:client`, `jabber:server` or `jabber:component:accept`.
    pub default_ns: String,
}

#[derive(Clone, Debug)]
pub enum StreamEvent {
    Open(StreamHeader),
    Stanza(Stanza),
    Close,
}

#[derive(Debug)]
enum State {
    Running,
    /// `</stream:stream>` was received; later bytes are ignored.
    Closed,
    /// The stream is dead; the error is repeated to every later call.
    Failed(StreamError),
}

/// Parses one XML stream (restarted in place after STARTTLS and SASL).
///
/// The caller feeds what it read, in reads of bounded size, then calls
/// [`next_event`](Self::next_event) until it returns `Ok(None)`: the limits are enforced as the
/// buffer is scanned, so the buffer never exceeds the stanza limit by more than one read.
#[derive(Debug)]
pub struct StreamParser {
    /// Received bytes not yet handed out. Stanzas are split off its front, so one allocation
    /// serves many stanzas and each stanza's bytes are never copied.
    buf: BytesMut,
    framer: Framer,
    limits: Limits,
    /// The stream header's namespace bindings and scratch space, reused for every stanza.
    validator: Validator,
    /// Qualified name of the stream element, which the closing tag must repeat.
    stream_name: String,
    content_ns: &'static str,
    state: State,
}

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            framer: Framer::new(),
            limits,
            validator: Validator::default(),
            stream_name: String::new(),
            content_ns: ns::CLIENT,
            state: State::Running,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(self.state, State::Running) {
            self.buf.extend_from_slice(data);
        }
    }

    /// The buffer with room for at least `room` more bytes, for a reader to fill in place
    /// (`AsyncReadExt::read_buf`) instead of copying a read through [`feed`](Self::feed).
    /// An empty buffer that a burst left much larger than `room` is given back first, so a
    /// connection waiting for its next read holds about `room`. Once the stream has failed or
    /// closed, what was buffered is dropped, as `feed` drops it.
    pub fn read_buffer(&mut self, room: usize) -> &mut BytesMut {
        let oversized = self.buf.is_empty() && self.buf.capacity() > 2 * room;
        if oversized || !matches!(self.state, State::Running) {
            self.buf = BytesMut::new();
        }
        self.buf.reserve(room);
        &mut self.buf
    }

    /// The next complete event, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable: the caller sends the error and closes.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        match &self.state {
            State::Failed(error) => return Err(error.clone()),
            State::Closed => return Ok(None),
            State::Running => {}
        }
        self.advance().map_err(|error| {
            let error = StreamError::from(error);
            self.state = State::Failed(error.clone());
            self.buf = BytesMut::new();
            error
        })
    }

    /// Prepares for the new stream header that follows STARTTLS or SASL success. Buffered
    /// bytes are discarded: they were sent before the restart, and after STARTTLS processing
    /// them would let a man in the middle inject commands into the secured stream.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.framer = Framer::new();
        self.validator = Validator::default();
        self.stream_name.clear();
        self.state = State::Running;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes received and not yet returned as events.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Gives back the buffer if nothing is buffered: cheap enough to call
    /// whenever a connection starts to wait.
    pub fn release_empty_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Gives back the buffer's spare capacity and the validator's scratch
    /// space, for connections that go quiet.
    pub fn shrink(&mut self) {
        self.buf = if self.buf.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&self.buf[..])
        };
        self.validator.shrink();
    }

    fn advance(&mut self) -> Result<Option<StreamEvent>, ParseError> {
        let Some(frame) = self.framer.next(&self.buf, &self.limits)? else {
            let idle = self.framer.idle_prefix();
            self.buf.advance(idle);
            self.framer.consumed(idle);
            return Ok(None);
        };
        let event = match frame {
            Frame::Header { end } => StreamEvent::Open(self.open_stream(end)?),
            Frame::Element { start, end } => StreamEvent::Stanza(self.split_stanza(start, end)?),
            Frame::Close { start, end } => {
                self.close_stream(start, end)?;
                StreamEvent::Close
            }
        };
        Ok(Some(event))
    }

    fn split_stanza(&mut self, start: usize, end: usize) -> Result<Stanza, ParseError> {
        self.validator
            .check(&self.buf[start..end], &self.limits, &mut NoSink)?;
        self.buf.advance(start);
        let raw = self.buf.split_to(end - start).freeze();
        self.framer.consumed(end);
        let namespaces = &self.validator.namespaces;
        Stanza::from_validated(raw, self.content_ns, |prefix| {
            namespaces.resolve(prefix).map(Text::namespace)
        })
    }

    fn close_stream(&mut self, start: usize, end: usize) -> Result<(), ParseError> {
        let name = self.buf[start + 2..end - 1].trim_ascii_end();
        if name != self.stream_name.as_bytes() {
            return Err(not_well_formed("mismatched end tag"));
        }
        self.state = State::Closed;
        self.buf = BytesMut::new();
        Ok(())
    }

    /// Reads the XML declaration, if any, and the stream header in `buf[..end]`.
    fn open_stream(&mut self, end: usize) -> Result<StreamHeader, ParseError> {
        let bytes = check_chars(&self.buf[..end])?.trim_start().as_bytes();
        let tag = match bytes.strip_prefix(b"<?") {
            Some(declaration) => {
                let declaration_end = declaration
                    .windows(2)
                    .position(|w| w == b"?>")
                    .ok_or_else(|| not_well_formed("unterminated declaration"))?
                    + 4;
                check_declaration(&bytes[..declaration_end])?;
                bytes[declaration_end..].trim_ascii_start()
            }
            None => bytes,
        };
        let (header, namespaces, stream_name) = parse_stream_tag(tag)?;
        self.content_ns = content_namespace(&header.default_ns)?;
        self.validator = Validator::new(namespaces);
        self.stream_name = stream_name;
        self.buf.advance(end);
        self.framer.consumed(end);
        Ok(header)
    }
}

/// RFC 6120 §11.6: streams are UTF-8.
fn check_declaration(declaration: &[u8]) -> Result<(), ParseError> {
    let mut tag = StartTag::new(declaration, b"<?")?;
    while let Some(attr) = tag.next_attr()? {
        let value = &declaration[attr.value];
        if attr.key == "encoding" && !value.eq_ignore_ascii_case(b"utf-8") {
            return Err(ParseError::UnsupportedEncoding);
        }
    }
    Ok(())
}

/// The header, its namespace bindings and the stream element's qualified name.
fn parse_stream_tag(raw: &[u8]) -> Result<(StreamHeader, Namespaces, String), ParseError> {
    let mut tag = StartTag::new(raw, b"<")?;
    let mut header = StreamHeader::default();
    let mut namespaces = Namespaces::default();
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    while let Some(attr) = tag.next_attr()? {
        if keys.contains(&attr.key) {
            return Err(not_well_formed("duplicate attribute"));
        }
        keys.push(attr.key);
        let value = unescape_attr(utf8(&raw[attr.value])?)?;
        let field = match attr.key {
            "to" => &mut header.to,
            "from" => &mut header.from,
            "version" => &mut header.version,
            "id" => &mut header.id,
            "xml:lang" => &mut header.lang,
            "xmlns" => {
                namespaces.declare("", &value, 0);
                continue;
            }
            key => {
                match key.strip_prefix("xmlns:") {
                    Some(prefix) if check_prefix_binding(prefix, &value)? => {
                        namespaces.declare(prefix, &value, 0);
                    }
                    Some(_) => {}
                    None => prefixes.push(split_qname(key)?.0),
                }
                continue;
            }
        };
        *field = Some(value.into_owned());
    }
    if let Some(unbound) = prefixes.iter().find(|p| namespaces.resolve(p).is_none()) {
        return Err(ParseError::BadNamespacePrefix((*unbound).to_owned()));
    }
    let (prefix, local) = split_qname(tag.name())?;
    let namespace = namespaces
        .resolve(prefix)
        .ok_or_else(|| ParseError::BadNamespacePrefix(prefix.to_owned()))?;
    if namespace != ns::STREAM || local != "stream" {
        return Err(ParseError::InvalidNamespace("not a stream element"));
    }
    header.default_ns = namespaces.resolve("").unwrap_or_default().to_owned();
    namespaces.seal();
    Ok((header, namespaces, tag.name().to_owned()))
}

/// RFC 6120 §4.9.3.10: the content namespace must be one this server speaks.
fn content_namespace(uri: &str) -> Result<&'static str, ParseError> {
    [ns::CLIENT, ns::SERVER, ns::COMPONENT_ACCEPT]
        .into_iter()
        .find(|known| *known == uri)
        .ok_or(ParseError::InvalidNamespace(
            "unsupported content namespace",
        ))
}

#[cfg(test)]
mod tests;
