//! A tokenizer for one start tag that reports byte positions, used where the stanza's header
//! is read without a full parse (and where [`crate::stanza::Stanza::with_from`] must splice
//! the raw bytes).

use std::ops::Range;

use crate::validate::{not_well_formed, utf8};
use crate::xml::ParseError;

/// An attribute of a start tag.
#[derive(Debug)]
pub(crate) struct RawAttr<'a> {
    pub(crate) key: &'a str,
    /// The value between the quotes, still escaped.
    pub(crate) value: Range<usize>,
    /// From the whitespace before the name to the closing quote: what to cut to remove it.
    pub(crate) span: Range<usize>,
}

pub(crate) struct StartTag<'a> {
    raw: &'a [u8],
    name: &'a str,
    name_end: usize,
    /// Next byte to tokenize.
    pos: usize,
}

impl<'a> StartTag<'a> {
    /// Reads the name of the tag opening `raw`, which starts with `open` (`<`, or `<?` for the
    /// XML declaration).
    pub(crate) fn new(raw: &'a [u8], open: &[u8]) -> Result<Self, ParseError> {
        if !raw.starts_with(open) {
            return Err(not_well_formed("expected a start tag"));
        }
        let start = open.len();
        let name_end = start
            + raw[start..]
                .iter()
                .position(|&b| is_space(b) || matches!(b, b'>' | b'/' | b'?'))
                .ok_or_else(|| not_well_formed("unterminated start tag"))?;
        let name = utf8(&raw[start..name_end])?;
        if name.is_empty() {
            return Err(not_well_formed("empty element name"));
        }
        Ok(Self {
            raw,
            name,
            name_end,
            pos: name_end,
        })
    }

    pub(crate) fn name(&self) -> &'a str {
        self.name
    }

    pub(crate) fn name_end(&self) -> usize {
        self.name_end
    }

    /// The next attribute, or `None` at the end of the tag.
    pub(crate) fn next_attr(&mut self) -> Result<Option<RawAttr<'a>>, ParseError> {
        let span_start = self.pos;
        self.skip_space();
        match self.peek()? {
            b'>' | b'/' | b'?' => return Ok(None),
            _ if self.pos == span_start => {
                return Err(not_well_formed(
                    "attributes must be separated by whitespace",
                ));
            }
            _ => {}
        }
        let key_start = self.pos;
        while !is_space(self.peek()?) && !matches!(self.peek()?, b'=' | b'>' | b'/') {
            self.pos += 1;
        }
        let key = utf8(&self.raw[key_start..self.pos])?;
        self.skip_space();
        self.expect(b'=')?;
        self.skip_space();
        let quote = self.peek()?;
        if quote != b'\'' && quote != b'"' {
            return Err(not_well_formed("unquoted attribute value"));
        }
        let value_start = self.pos + 1;
        let value_len = self.raw[value_start..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(|| not_well_formed("unterminated attribute value"))?;
        self.pos = value_start + value_len + 1;
        Ok(Some(RawAttr {
            key,
            value: value_start..value_start + value_len,
            span: span_start..self.pos,
        }))
    }

    fn peek(&self) -> Result<u8, ParseError> {
        self.raw
            .get(self.pos)
            .copied()
            .ok_or_else(|| not_well_formed("unterminated start tag"))
    }

    fn expect(&mut self, byte: u8) -> Result<(), ParseError> {
        if self.peek()? != byte {
            return Err(not_well_formed("malformed attribute"));
        }
        self.pos += 1;
        Ok(())
    }

    fn skip_space(&mut self) {
        while self.raw.get(self.pos).is_some_and(|&b| is_space(b)) {
            self.pos += 1;
        }
    }
}

/// XML's whitespace (S production).
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_attributes_with_positions() {
        let raw = b"<message to='a@b' \n from = \"c>d\"/>";
        let mut tag = StartTag::new(raw, b"<").unwrap();
        assert_eq!(tag.name(), "message");
        let to = tag.next_attr().unwrap().unwrap();
        assert_eq!((to.key, &raw[to.value.clone()]), ("to", &b"a@b"[..]));
        assert_eq!(&raw[to.span], b" to='a@b'");
        let from = tag.next_attr().unwrap().unwrap();
        assert_eq!(&raw[from.value], b"c>d");
        assert!(tag.next_attr().unwrap().is_none());
    }

    #[test]
    fn rejects_malformed_tags() {
        for raw in [
            &b"<a b>"[..],
            b"<a b=c>",
            b"<a b='c",
            b"<a b='c'd='e'>",
            b"<a",
            b"<>",
        ] {
            let result = StartTag::new(raw, b"<").and_then(|mut tag| {
                while tag.next_attr()?.is_some() {}
                Ok(())
            });
            assert!(result.is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }
}
