use super::*;
use crate::error::StreamErrorCondition as C;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

/// A header with two attributes, for tests of small limits.
const SHORT_HEADER: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Events rendered comparably: headers by value, stanzas by raw bytes, errors by condition.
fn events(chunks: &[&[u8]], limits: Limits) -> Vec<String> {
    let mut parser = StreamParser::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        loop {
            match parser.next_event() {
                Ok(None) => break,
                Ok(Some(StreamEvent::Open(header))) => out.push(format!("open {header:?}")),
                Ok(Some(StreamEvent::Stanza(stanza))) => {
                    out.push(String::from_utf8_lossy(stanza.raw()).into_owned());
                }
                Ok(Some(StreamEvent::Close)) => out.push("close".to_owned()),
                Err(error) => {
                    out.push(format!("error {}", error.condition));
                    return out;
                }
            }
        }
    }
    out
}

fn whole(input: &str) -> Vec<String> {
    events(&[input.as_bytes()], Limits::default())
}

fn byte_by_byte(input: &[u8], limits: Limits) -> Vec<String> {
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    events(&chunks, limits)
}

fn error_of(input: &str) -> C {
    error_with(input, Limits::default())
}

fn error_with(input: &str, limits: Limits) -> C {
    let mut parser = StreamParser::new(limits);
    parser.feed(input.as_bytes());
    loop {
        match parser.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error for {input}"),
            Err(error) => return error.condition,
        }
    }
}

#[test]
fn parses_a_session() {
    let input = format!(
        "{HEADER}\n<message to='juliet@example.com' type='chat'><body>a &amp; b</body></message> \
         \n\t<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/></stream:stream>"
    );
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(input.as_bytes());
    let Some(StreamEvent::Open(header)) = parser.next_event().unwrap() else {
        panic!("expected the header");
    };
    assert_eq!(header.to.as_deref(), Some("example.com"));
    assert_eq!(header.version.as_deref(), Some("1.0"));
    assert_eq!(header.lang.as_deref(), Some("en"));
    assert_eq!(header.default_ns, ns::CLIENT);
    let Some(StreamEvent::Stanza(message)) = parser.next_event().unwrap() else {
        panic!("expected a message");
    };
    assert_eq!(
        &message.raw()[..],
        b"<message to='juliet@example.com' type='chat'><body>a &amp; b</body></message>"
    );
    assert!(message.is_stanza());
    assert_eq!(message.to(), Some("juliet@example.com"));
    let Some(StreamEvent::Stanza(iq)) = parser.next_event().unwrap() else {
        panic!("expected an iq");
    };
    assert_eq!((iq.name(), iq.id()), ("iq", Some("1")));
    let Some(StreamEvent::Stanza(r)) = parser.next_event().unwrap() else {
        panic!("expected a nonza");
    };
    assert_eq!((r.name(), r.namespace()), ("r", ns::SM));
    assert!(matches!(parser.next_event(), Ok(Some(StreamEvent::Close))));
    assert!(matches!(parser.next_event(), Ok(None)));
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn reads_into_the_parser_buffer_frame_like_fed_ones() {
    let input = format!("{HEADER}<message id='1'><body>hi</body></message></stream:stream>");
    let mut parser = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    for chunk in input.as_bytes().chunks(7) {
        let buffer = parser.read_buffer(chunk.len());
        assert!(buffer.capacity() - buffer.len() >= chunk.len());
        buffer.extend_from_slice(chunk);
        while let Some(event) = parser.next_event().unwrap() {
            out.push(match event {
                StreamEvent::Open(_) => "open".to_owned(),
                StreamEvent::Stanza(stanza) => String::from_utf8_lossy(stanza.raw()).into_owned(),
                StreamEvent::Close => "close".to_owned(),
            });
        }
    }
    assert_eq!(
        out,
        ["open", "<message id='1'><body>hi</body></message>", "close"]
    );
    // After the close, bytes read are dropped rather than kept.
    parser.read_buffer(16).extend_from_slice(b"<late/>");
    assert_eq!(parser.read_buffer(16).len(), 0);
    assert!(matches!(parser.next_event(), Ok(None)));
}

#[test]
fn a_drained_burst_does_not_keep_its_large_read_buffer() {
    let mut parser = StreamParser::new(Limits::default());
    parser
        .read_buffer(64 * 1024)
        .extend_from_slice(HEADER.as_bytes());
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Open(_)))
    ));
    assert!(parser.read_buffer(512).capacity() <= 1024);
}

#[test]
fn byte_by_byte_matches_all_at_once() {
    let input = format!(
        "  {HEADER}<message id=\"x'>\"><body><![CDATA[<not a tag>]]]></body></message>\r\n \
         <presence/><stream:features/><iq type='set'><a xmlns='urn:a'><b><c/></b></a></iq></stream:stream>"
    );
    let all = whole(&input);
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(
        all[1],
        "<message id=\"x'>\"><body><![CDATA[<not a tag>]]]></body></message>"
    );
    assert_eq!(byte_by_byte(input.as_bytes(), Limits::default()), all);
}

#[test]
fn whitespace_keepalives_produce_no_events_and_are_dropped() {
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(HEADER.as_bytes());
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Open(_)))
    ));
    for _ in 0..100 {
        parser.feed(b" \n");
        assert!(matches!(parser.next_event(), Ok(None)));
    }
    assert_eq!(parser.buffered(), 0);
    parser.feed(b"<presence");
    assert!(matches!(parser.next_event(), Ok(None)));
    parser.shrink();
    parser.feed(b"/>");
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Stanza(_)))
    ));
    parser.shrink();
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn header_variants() {
    let server = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
                  from='a.example' id='s&amp;1'>";
    let events = whole(server);
    assert!(
        events[0].contains("default_ns: \"jabber:server\""),
        "{events:?}"
    );
    assert!(events[0].contains("id: Some(\"s&1\")"), "{events:?}");
    let unprefixed = "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
                      <presence/></s:stream>";
    assert_eq!(whole(unprefixed).len(), 3);
    assert_eq!(
        error_of(
            "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'></stream:stream>"
        ),
        C::NotWellFormed
    );
}

#[test]
fn rejects_bad_headers() {
    let stream_ns = "xmlns:stream='http://etherx.jabber.org/streams'";
    let cases = [
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>".to_owned(),
            C::InvalidNamespace,
        ),
        (
            format!("<stream:foo xmlns='jabber:client' {stream_ns}>"),
            C::InvalidNamespace,
        ),
        (
            format!("<stream:stream xmlns='urn:other' {stream_ns}>"),
            C::InvalidNamespace,
        ),
        (format!("<stream:stream {stream_ns}>"), C::InvalidNamespace),
        (
            "<stream:stream xmlns='jabber:client'>".to_owned(),
            C::BadNamespacePrefix,
        ),
        (
            format!("<stream:stream xmlns='jabber:client' {stream_ns} p:x='1'>"),
            C::BadNamespacePrefix,
        ),
        (
            format!("<?xml version='1.0' encoding='UTF-16'?><stream:stream {stream_ns}>"),
            C::UnsupportedEncoding,
        ),
        (
            format!("<?xml version='1.0'?><?xml version='1.0'?><stream:stream {stream_ns}>"),
            C::RestrictedXml,
        ),
        (
            format!("<?php x?><stream:stream {stream_ns}>"),
            C::RestrictedXml,
        ),
        (
            format!("<!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream {stream_ns}>"),
            C::RestrictedXml,
        ),
        (
            format!("<!-- hi --><stream:stream {stream_ns}>"),
            C::RestrictedXml,
        ),
        (
            format!("hello<stream:stream {stream_ns}>"),
            C::NotWellFormed,
        ),
        (
            format!("<stream:stream xmlns='jabber:client' {stream_ns}/>"),
            C::BadFormat,
        ),
        (
            format!("<stream:stream xmlns='jabber:client' {stream_ns} to='a' to='b'>"),
            C::NotWellFormed,
        ),
        ("</stream:stream>".to_owned(), C::NotWellFormed),
    ];
    for (input, condition) in cases {
        assert_eq!(error_of(&input), condition, "{input}");
    }
}

#[test]
fn rejects_restricted_and_malformed_stanzas() {
    let cases = [
        ("<message><body></message>", C::NotWellFormed),
        ("<message><body>a</body>", C::NotWellFormed),
        ("<message a='1' a='2'/>", C::NotWellFormed),
        ("<message>\u{0}</message>", C::NotWellFormed),
        ("<message><!-- c --></message>", C::RestrictedXml),
        ("<!-- c -->", C::RestrictedXml),
        ("<message><?pi x?></message>", C::RestrictedXml),
        ("<?xml version='1.0'?>", C::RestrictedXml),
        ("<message><!DOCTYPE x></message>", C::RestrictedXml),
        ("<message>&custom;</message>", C::RestrictedXml),
        ("<message to='&custom;'/>", C::RestrictedXml),
        ("<message>&#0;</message>", C::NotWellFormed),
        ("<foo:message/>", C::BadNamespacePrefix),
        ("<message><x:y/></message>", C::BadNamespacePrefix),
        ("<message foo:bar='1'/>", C::BadNamespacePrefix),
        ("hello", C::BadFormat),
        ("<![CDATA[x]]>", C::BadFormat),
        ("</foo>", C::NotWellFormed),
    ];
    for (stanza, condition) in cases {
        // The end of the stream completes any unclosed element, exposing the mismatch.
        let input = format!("{HEADER}{stanza}</stream:stream>");
        assert_eq!(error_of(&input), condition, "{stanza}");
    }
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(HEADER.as_bytes());
    parser.feed(b"<message>\xff\xfe</message>");
    parser.next_event().unwrap();
    assert_eq!(parser.next_event().unwrap_err().condition, C::NotWellFormed);
}

#[test]
fn errors_are_sticky() {
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(format!("{HEADER}<a><!--x--></a><presence/>").as_bytes());
    parser.next_event().unwrap();
    let error = parser.next_event().unwrap_err();
    parser.feed(b"<presence/>");
    assert_eq!(parser.next_event().unwrap_err(), error);
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn size_limit_is_enforced_while_buffering() {
    let limits = Limits {
        max_stanza_bytes: 100,
        ..Limits::default()
    };
    let mut parser = StreamParser::new(limits.clone());
    parser.feed(SHORT_HEADER.as_bytes());
    parser.next_event().unwrap();
    parser.feed(b"<message><body>");
    assert!(matches!(parser.next_event(), Ok(None)));
    let mut fed = 0;
    let error = loop {
        parser.feed(&[b'a'; 10]);
        fed += 10;
        if let Err(error) = parser.next_event() {
            break error;
        }
    };
    assert!(fed <= 100, "accumulated {fed} bytes");
    assert_eq!(error.condition, C::PolicyViolation);
    assert!(error.text.is_some());

    let at_limit = format!("<message>{}</message>", "a".repeat(100 - 19));
    assert_eq!(whole_with(&at_limit, &limits).len(), 2);
    let over = format!("<message>{}</message>", "a".repeat(101 - 19));
    assert_eq!(
        error_with(&format!("{SHORT_HEADER}{over}"), limits.clone()),
        C::PolicyViolation
    );
    let long_header = format!(
        "<stream:stream xmlns='jabber:client' to='{}'>",
        "a".repeat(100)
    );
    assert_eq!(error_with(&long_header, limits), C::PolicyViolation);
}

fn whole_with(stanza: &str, limits: &Limits) -> Vec<String> {
    events(
        &[SHORT_HEADER.as_bytes(), stanza.as_bytes()],
        limits.clone(),
    )
}

#[test]
fn depth_limit() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(whole_with("<a><b><c/></b></a>", &limits).len(), 2);
    assert_eq!(whole_with("<a><b><c></c></b></a>", &limits).len(), 2);
    for deep in ["<a><b><c><d/></c></b></a>", "<a><b><c><d>"] {
        assert_eq!(
            error_with(&format!("{SHORT_HEADER}{deep}"), limits.clone()),
            C::PolicyViolation
        );
    }
    let bomb = "<a>".repeat(100_000);
    assert_eq!(error_of(&format!("{HEADER}{bomb}")), C::PolicyViolation);
}

#[test]
fn attribute_limit() {
    let limits = Limits {
        max_attributes: 3,
        ..Limits::default()
    };
    assert_eq!(whole_with("<a x='=' y='1' z=\"2\"/>", &limits).len(), 2);
    assert_eq!(
        error_with(
            &format!("{SHORT_HEADER}<a><b w='0' x='1' y='2' z='3'/></a>"),
            limits.clone()
        ),
        C::PolicyViolation
    );
    let header = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' a='1' b='2'>";
    assert_eq!(error_with(header, limits), C::PolicyViolation);
}

#[test]
fn reset_expects_a_new_header_and_drops_old_bytes() {
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected/>")
            .as_bytes(),
    );
    parser.next_event().unwrap();
    let Some(StreamEvent::Stanza(starttls)) = parser.next_event().unwrap() else {
        panic!("expected starttls");
    };
    assert_eq!(starttls.namespace(), ns::TLS);
    parser.reset();
    assert_eq!(parser.buffered(), 0);
    parser.feed(HEADER.as_bytes());
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Open(_)))
    ));
    parser.feed(b"<presence/>");
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Stanza(_)))
    ));
}

#[test]
fn stanza_dom_uses_stream_namespace() {
    let mut parser = StreamParser::new(Limits::default());
    parser
        .feed(format!("{HEADER}<iq type='get'><query xmlns='jabber:iq:roster'/></iq>").as_bytes());
    parser.next_event().unwrap();
    let Some(StreamEvent::Stanza(iq)) = parser.next_event().unwrap() else {
        panic!("expected an iq");
    };
    let element = iq.element().unwrap();
    assert!(element.is("iq", ns::CLIENT));
    assert!(element.get_child("query", ns::ROSTER).is_some());
}

/// A tiny deterministic generator, so that failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_input_never_panics_and_ignores_chunking() {
    let valid = format!(
        "{SHORT_HEADER}<message to='a@b' id='1'><body>x &lt; y</body><x xmlns='urn:x' a='&#65;'/></message>\
         <iq type='get'><![CDATA[]]>]]></iq><presence/></stream:stream>"
    );
    let alphabet = b"<>/='\"&;!?-[]: \nabx\xff\x00";
    let limits = Limits {
        max_stanza_bytes: 120,
        max_depth: 4,
        max_attributes: 4,
    };
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let mut input = valid.as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            if input.is_empty() {
                break;
            }
            let at = rng.below(input.len());
            match rng.below(3) {
                0 => input[at] = alphabet[rng.below(alphabet.len())],
                1 => {
                    input.remove(at);
                }
                _ => input.truncate(at),
            }
        }
        let mut chunks = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rng.below(rest.len()).max(1).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        let expected = events(&[&input], limits.clone());
        assert_eq!(
            events(&chunks, limits.clone()),
            expected,
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
    for _ in 0..500 {
        let noise: Vec<u8> = (0..rng.below(300))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let input = [SHORT_HEADER.as_bytes(), &noise].concat();
        let expected = events(&[&input], limits.clone());
        assert_eq!(byte_by_byte(&input, limits.clone()), expected);
    }
}

#[test]
fn an_empty_buffer_is_released_and_a_half_read_one_kept() {
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><message><body>hi</body></message><message>");
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Open(_)))
    ));
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Stanza(_)))
    ));
    assert!(matches!(parser.next_event(), Ok(None)));
    parser.release_empty_buffer();
    assert_eq!(
        parser.buffered(),
        "<message>".len(),
        "a half-read stanza is kept"
    );
    parser.feed(b"<body>again</body></message>");
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Stanza(_)))
    ));
    parser.release_empty_buffer();
    assert_eq!(parser.buf.capacity(), 0);
}
