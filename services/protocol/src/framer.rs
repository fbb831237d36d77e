//! The cheap half of framing: a resumable scan that finds where the stream header and each
//! top-level element end, enforcing the limits as bytes arrive, before anything is parsed.

use crate::stream::Limits;
use crate::tag::is_space;
use crate::validate::not_well_formed;
use crate::xml::ParseError;

/// A complete piece of the stream, as offsets into the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The stream header, with any XML declaration and whitespace before it, ends at `end`.
    Header { end: usize },
    /// A top-level element spans `start..end`.
    Element { start: usize, end: usize },
    /// The stream's end tag spans `start..end`.
    Close { start: usize, end: usize },
}

/// Where the scan stands inside the markup, so that it resumes when more bytes arrive.
#[derive(Clone, Copy, Debug)]
enum Lex {
    /// Character data, or whitespace between stanzas.
    Content,
    /// Just after `<`.
    Open,
    /// After `<!`, having matched this much of `[CDATA[`.
    Bang(usize),
    /// Inside a CDATA section, after this many consecutive `]`.
    CData(usize),
    /// Inside a start tag: the open quote, if in an attribute value, and whether the previous
    /// byte was `/`.
    StartTag {
        quote: Option<u8>,
        slash: bool,
    },
    EndTag,
    /// Inside `<?...`; whether the previous byte was `?`.
    Declaration {
        question: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Framer {
    /// Next byte to scan; everything before it is accounted for.
    pos: usize,
    lex: Lex,
    /// Elements open inside the current top-level element (0 between stanzas).
    depth: usize,
    /// Start of the frame being scanned; `None` while only whitespace has been seen.
    start: Option<usize>,
    /// The `<` of the markup being scanned.
    markup_start: usize,
    /// Attributes of the start tag being scanned.
    attributes: usize,
    /// Until the stream header is complete, only it (and an XML declaration) may appear.
    in_header: bool,
    seen_declaration: bool,
}

const CDATA_OPEN: &[u8] = b"[CDATA[";

impl Framer {
    pub(crate) fn new() -> Self {
        Self {
            pos: 0,
            lex: Lex::Content,
            depth: 0,
            start: None,
            markup_start: 0,
            attributes: 0,
            in_header: true,
            seen_declaration: false,
        }
    }

    /// Scans `buf` onwards from where the last call stopped; `Ok(None)` means more bytes are
    /// needed.
    pub(crate) fn next(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<Frame>, ParseError> {
        while self.pos < buf.len() {
            if let Some(frame) = self.step(buf, limits)? {
                return Ok(Some(frame));
            }
            // Checked at every step, not once per read, so that the outcome does not depend on
            // how the bytes were split into reads.
            self.check_size(limits)?;
        }
        Ok(None)
    }

    /// Length of the scanned whitespace at the front of the buffer, which the caller may drop.
    pub(crate) fn idle_prefix(&self) -> usize {
        if self.start.is_none() { self.pos } else { 0 }
    }

    /// The caller removed `n` bytes (a frame or idle whitespace) from the front of the buffer.
    pub(crate) fn consumed(&mut self, n: usize) {
        debug_assert!(n == 0 || (self.start.is_none() && n <= self.pos));
        self.pos -= n.min(self.pos);
    }

    fn step(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Frame>, ParseError> {
        let byte = buf[self.pos];
        match self.lex {
            Lex::Content if self.depth > 0 => {
                self.pos = find(buf, self.pos, b'<').unwrap_or(buf.len());
                if self.pos < buf.len() {
                    self.open_markup();
                }
            }
            Lex::Content => self.between_elements(byte)?,
            Lex::Open => self.after_open(byte)?,
            Lex::Bang(matched) => self.after_bang(byte, matched)?,
            Lex::CData(brackets) => {
                self.lex = match byte {
                    b']' => Lex::CData((brackets + 1).min(2)),
                    b'>' if brackets == 2 => Lex::Content,
                    _ => Lex::CData(0),
                };
                self.pos += 1;
            }
            Lex::StartTag {
                quote: Some(quote), ..
            } => {
                self.pos = match find(buf, self.pos, quote) {
                    Some(close) => {
                        self.lex = Lex::StartTag {
                            quote: None,
                            slash: false,
                        };
                        close + 1
                    }
                    None => buf.len(),
                };
            }
            Lex::StartTag { quote: None, slash } => {
                // Names and spaces change nothing: jump to the next byte that does. The `/`
                // of an empty-element tag counts only right before its `>`.
                let Some(next) = find_any(buf, self.pos, is_start_tag_markup) else {
                    // At least one byte was skipped: a `/` before it is no longer last.
                    self.lex = Lex::StartTag {
                        quote: None,
                        slash: false,
                    };
                    self.pos = buf.len();
                    return Ok(None);
                };
                let slash = slash && next == self.pos;
                let byte = buf[next];
                self.pos = next + 1;
                return self.in_start_tag(byte, slash, limits);
            }
            Lex::EndTag => match find_any(buf, self.pos, |b| matches!(b, b'>' | b'<')) {
                Some(next) => {
                    self.pos = next + 1;
                    if buf[next] == b'<' {
                        return Err(not_well_formed("'<' in end tag"));
                    }
                    return self.end_tag_closed(limits);
                }
                None => self.pos = buf.len(),
            },
            Lex::Declaration { question } => {
                self.pos += 1;
                if question && byte == b'>' {
                    self.declaration_closed(buf)?;
                } else {
                    self.lex = Lex::Declaration {
                        question: byte == b'?',
                    };
                }
            }
        }
        Ok(None)
    }

    /// At stream level only whitespace (a keepalive) may separate elements.
    fn between_elements(&mut self, byte: u8) -> Result<(), ParseError> {
        if is_space(byte) {
            self.pos += 1;
            return Ok(());
        }
        if byte != b'<' {
            return Err(match self.in_header {
                true => not_well_formed("text before the stream header"),
                false => ParseError::BadFormat("text between stanzas"),
            });
        }
        self.start.get_or_insert(self.pos);
        self.open_markup();
        Ok(())
    }

    fn open_markup(&mut self) {
        self.markup_start = self.pos;
        self.pos += 1;
        self.lex = Lex::Open;
    }

    fn after_open(&mut self, byte: u8) -> Result<(), ParseError> {
        match byte {
            b'/' if self.in_header => {
                return Err(not_well_formed("end tag before the stream header"));
            }
            b'/' => self.lex = Lex::EndTag,
            b'!' => self.lex = Lex::Bang(0),
            // The XML declaration may only open the document, before anything else.
            b'?' if self.in_header
                && !self.seen_declaration
                && self.start == Some(self.markup_start) =>
            {
                self.lex = Lex::Declaration { question: false };
            }
            b'?' => return Err(ParseError::RestrictedXml("processing instruction")),
            _ => {
                self.attributes = 0;
                self.lex = Lex::StartTag {
                    quote: None,
                    slash: false,
                };
                return Ok(());
            }
        }
        self.pos += 1;
        Ok(())
    }

    fn after_bang(&mut self, byte: u8, matched: usize) -> Result<(), ParseError> {
        if CDATA_OPEN.get(matched) != Some(&byte) {
            return Err(match (matched, byte) {
                (0, b'-') => ParseError::RestrictedXml("comment"),
                (0, b'D') => ParseError::RestrictedXml("doctype"),
                _ => not_well_formed("invalid markup"),
            });
        }
        self.pos += 1;
        self.lex = match matched + 1 {
            n if n < CDATA_OPEN.len() => Lex::Bang(n),
            _ if self.depth == 0 => return Err(ParseError::BadFormat("text between stanzas")),
            _ => Lex::CData(0),
        };
        Ok(())
    }

    fn in_start_tag(
        &mut self,
        byte: u8,
        slash: bool,
        limits: &Limits,
    ) -> Result<Option<Frame>, ParseError> {
        let mut next_slash = false;
        match byte {
            b'\'' | b'"' => {
                self.lex = Lex::StartTag {
                    quote: Some(byte),
                    slash: false,
                };
                return Ok(None);
            }
            b'>' => return self.start_tag_closed(slash, limits),
            b'<' => return Err(not_well_formed("'<' in start tag")),
            b'/' => next_slash = true,
            b'=' => {
                self.attributes += 1;
                if self.attributes > limits.max_attributes {
                    return Err(ParseError::PolicyViolation("too many attributes"));
                }
            }
            _ => {}
        }
        self.lex = Lex::StartTag {
            quote: None,
            slash: next_slash,
        };
        Ok(None)
    }

    fn start_tag_closed(
        &mut self,
        empty: bool,
        limits: &Limits,
    ) -> Result<Option<Frame>, ParseError> {
        self.lex = Lex::Content;
        if self.in_header {
            if empty {
                return Err(ParseError::BadFormat("empty stream element"));
            }
            self.check_size(limits)?;
            self.in_header = false;
            self.start = None;
            return Ok(Some(Frame::Header { end: self.pos }));
        }
        if self.depth + 1 > limits.max_depth {
            return Err(ParseError::PolicyViolation("elements nested too deeply"));
        }
        if !empty {
            self.depth += 1;
        } else if self.depth == 0 {
            return self.element_complete(limits).map(Some);
        }
        Ok(None)
    }

    fn end_tag_closed(&mut self, limits: &Limits) -> Result<Option<Frame>, ParseError> {
        self.lex = Lex::Content;
        if self.depth == 0 {
            self.start = None;
            return Ok(Some(Frame::Close {
                start: self.markup_start,
                end: self.pos,
            }));
        }
        self.depth -= 1;
        if self.depth == 0 {
            return self.element_complete(limits).map(Some);
        }
        Ok(None)
    }

    fn element_complete(&mut self, limits: &Limits) -> Result<Frame, ParseError> {
        self.check_size(limits)?;
        let start = self.start.take().unwrap_or(self.markup_start);
        Ok(Frame::Element {
            start,
            end: self.pos,
        })
    }

    fn declaration_closed(&mut self, buf: &[u8]) -> Result<(), ParseError> {
        let declaration = &buf[self.markup_start..self.pos];
        let is_xml = declaration
            .strip_prefix(b"<?xml")
            .and_then(|rest| rest.first())
            .is_some_and(|&b| is_space(b) || b == b'?');
        if !is_xml {
            return Err(ParseError::RestrictedXml("processing instruction"));
        }
        self.seen_declaration = true;
        self.lex = Lex::Content;
        Ok(())
    }

    /// Refuses a frame as soon as it outgrows the limit, so that a peer cannot make the server
    /// buffer more than the limit plus one read.
    fn check_size(&self, limits: &Limits) -> Result<(), ParseError> {
        match self.start {
            Some(start) if self.pos - start > limits.max_stanza_bytes => {
                Err(ParseError::PolicyViolation("stanza too large"))
            }
            _ => Ok(()),
        }
    }
}

fn find(buf: &[u8], from: usize, byte: u8) -> Option<usize> {
    find_any(buf, from, |b| b == byte)
}

fn find_any(buf: &[u8], from: usize, wanted: impl Fn(u8) -> bool) -> Option<usize> {
    buf[from..]
        .iter()
        .position(|&b| wanted(b))
        .map(|i| from + i)
}

/// The bytes a start tag's scan acts on outside attribute values (`in_start_tag`).
fn is_start_tag_markup(byte: u8) -> bool {
    matches!(byte, b'\'' | b'"' | b'>' | b'<' | b'/' | b'=')
}
