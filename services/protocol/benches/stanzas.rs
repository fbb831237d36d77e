//! What the edge spends on each stanza a client sends before it is routed:
//! framing and validating it in the stream parser, then rewriting its `from`.
//! Run with `cargo bench -p xmppd-protocol`; `docs/benchmarks.md` keeps the
//! figures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xmppd_protocol::stream::{Limits, StreamEvent, StreamParser};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// What the load tool's chat scenario sends.
const LOAD_TOOL_CHAT: &[u8] =
    b"<message to='user1@localhost' type='chat'><body>42 1700000000000001</body></message>";

/// A chat message as mobile clients send one: an id, a receipt request, a
/// chat state and a hint, each child in its own namespace.
const CLIENT_CHAT: &[u8] = b"<message xml:lang='en' to='bob@localhost' type='chat' \
    id='5b4a1c2e-7d0f-4e8b-9a51-2f6c3d8e1a90'><body>See you at eight, by the north door?</body>\
    <request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/>\
    <origin-id xmlns='urn:xmpp:sid:0' id='5b4a1c2e-7d0f-4e8b-9a51-2f6c3d8e1a90'/>\
    <markable xmlns='urn:xmpp:chat-markers:0'/></message>";

/// A parser past the stream header, as a bound client stream's is.
fn open_stream() -> StreamParser {
    let mut parser = StreamParser::new(Limits::default());
    parser.feed(HEADER);
    match parser.next_event() {
        Ok(Some(StreamEvent::Open(_))) => parser,
        other => panic!("the stream header was not accepted: {other:?}"),
    }
}

fn stanza(parser: &mut StreamParser, xml: &[u8]) -> xmppd_protocol::stanza::Stanza {
    parser.feed(xml);
    match parser.next_event() {
        Ok(Some(StreamEvent::Stanza(stanza))) => stanza,
        other => panic!("the stanza was not accepted: {other:?}"),
    }
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("stanza in");
    for (name, xml) in [
        ("load tool chat", LOAD_TOOL_CHAT),
        ("client chat", CLIENT_CHAT),
    ] {
        group.throughput(Throughput::Elements(1));
        let mut parser = open_stream();
        group.bench_function(format!("{name}: frame and validate"), |b| {
            b.iter(|| black_box(stanza(&mut parser, black_box(xml))))
        });
        let received = stanza(&mut open_stream(), xml);
        group.bench_function(format!("{name}: stamp from"), |b| {
            b.iter(|| black_box(received.with_from(black_box("alice@localhost/phone"))))
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
