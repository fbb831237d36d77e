//! Bad input at the edge (issue 2, item 9): each case gets exactly the error
//! RFC 6120 names for it (a stream error of §4.9.3 or a stanza error of
//! §8.3.3), and two other users on the same server chat on unharmed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::{DOMAIN, MALLORY_PASSWORD, RawClient, Server, ServerOptions, start_with_bystanders};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
                      xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

async fn mallory(server: &Server, resource: &str) -> RawClient {
    RawClient::login(server.c2s, "mallory", MALLORY_PASSWORD, resource).await
}

/// A stream opened and answered, nothing more.
async fn unauthenticated(server: &Server) -> RawClient {
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    client
}

/// Each bound client sends `input`; each gets `condition` as a stream error.
async fn each_fails(server: &Server, inputs: &[&str], condition: &str) {
    for (index, input) in inputs.iter().enumerate() {
        let mut client = mallory(server, &format!("bad{index}")).await;
        client.send(input).await;
        client.expect_stream_error(condition).await;
    }
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let inputs = [
        "<message to='bob@localhost/desk'><body>malformed 1</bogus></message>",
        "<message to='bob@localhost/desk' <body>malformed 2</body></message>",
        "<message to='bob@localhost/desk'><body>malformed & 3</body></message>",
        "<message to='bob@localhost/desk' id='a' id='b'><body>malformed 4</body></message>",
        "</iq>",
    ];
    each_fails(&server, &inputs, "not-well-formed").await;
    // Before authentication too, in the stream header itself.
    let mut client = RawClient::connect(server.c2s).await;
    client
        .send("<stream:stream to='localhost' version='1.0' <")
        .await;
    client.expect_stream_error("not-well-formed").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("malformed"), "{seen}");
}

#[tokio::test]
async fn invalid_utf8_is_not_well_formed() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut client = mallory(&server, "bytes").await;
    client
        .send_bytes(b"<message to='bob@localhost/desk'><body>\xff\xfe utf8</body></message>")
        .await
        .unwrap();
    client.expect_stream_error("not-well-formed").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("utf8"), "{seen}");
}

#[tokio::test]
async fn oversized_stanza_is_a_policy_violation() {
    // RFC 6120 §13.12: servers must accept at least 10000 bytes.
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_stanza_bytes = 10000\n").await;
    let mut client = mallory(&server, "big").await;
    let fits = "f".repeat(9000);
    client
        .send(&format!(
            "<message to='bob@localhost/desk' id='fits'><body>{fits}</body></message>"
        ))
        .await;
    others.bob.expect(&format!("<body>{fits}</body>")).await;
    let too_big = "x".repeat(20_000);
    client
        .send(&format!(
            "<message to='bob@localhost/desk' id='big'><body>{too_big}</body></message>"
        ))
        .await;
    client.expect_stream_error("policy-violation").await;
    // Before authentication the same limit holds.
    let mut client = unauthenticated(&server).await;
    client
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{too_big}</auth>"
        ))
        .await;
    client.expect_stream_error("policy-violation").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("xxxxxxxx"), "{seen}");
}

/// A message whose payload nests `depth - 1` elements inside `<message>`.
fn nested_message(depth: usize, id: &str) -> String {
    format!(
        "<message to='bob@localhost/desk' id='{id}'>{}{}</message>",
        "<x xmlns='urn:test:deep'>".repeat(depth - 1),
        "</x>".repeat(depth - 1)
    )
}

#[tokio::test]
async fn too_deep_stanza_is_a_policy_violation() {
    let (_dir, server, mut others) = start_with_bystanders("[limits]\nmax_depth = 6\n").await;
    let mut client = mallory(&server, "deep").await;
    client.send(&nested_message(6, "at-limit")).await;
    let delivered = others.bob.expect("</message>").await;
    assert!(
        delivered.contains("id='at-limit'") && delivered.contains("urn:test:deep"),
        "{delivered}"
    );
    client.send(&nested_message(7, "over-limit")).await;
    client.expect_stream_error("policy-violation").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("over-limit"), "{seen}");
}

#[tokio::test]
async fn doctype_and_entities_are_restricted_xml() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    // The billion laughs, before the stream header.
    let mut bomb =
        String::from("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY lol0 'lol'>");
    for level in 1..10 {
        bomb.push_str(&format!(
            "<!ENTITY lol{level} '{}'>",
            format!("&lol{};", level - 1).repeat(10)
        ));
    }
    bomb.push_str("]>");
    bomb.push_str(&HEADER["<?xml version='1.0'?>".len()..]);
    bomb.push_str("<message to='bob@localhost/desk'><body>&lol9;</body></message>");
    let mut client = RawClient::connect(server.c2s).await;
    client.send(&bomb).await;
    client.expect_stream_error("restricted-xml").await;
    // A DOCTYPE in the middle of a bound stream.
    each_fails(
        &server,
        &["<!DOCTYPE message [<!ENTITY e 'entity'>]>"],
        "restricted-xml",
    )
    .await;
    // An undeclared entity reference (RFC 6120 §11.1 allows only the five predefined).
    each_fails(
        &server,
        &["<message to='bob@localhost/desk'><body>&e; &amp; &lt;</body></message>"],
        "restricted-xml",
    )
    .await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("lol") && !seen.contains("entity"), "{seen}");
}

#[tokio::test]
async fn wrong_password_is_not_authorized_and_the_client_may_retry() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let not_authorized =
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>";
    let mut client = unauthenticated(&server).await;
    assert_eq!(client.auth_plain("mallory", "wrong").await, not_authorized);
    // An unknown account fails the same way: no account enumeration.
    assert_eq!(client.auth_plain("nobody", "wrong").await, not_authorized);
    // SCRAM-SHA-256 with a proof that does not match the stored keys.
    let server_first = client
        .scram_server_first("n,,n=mallory,r=rOprNGfwEbeRWgbNEkqO")
        .await;
    let nonce = server_first
        .split(',')
        .find_map(|part| part.strip_prefix("r="))
        .unwrap();
    assert!(nonce.starts_with("rOprNGfwEbeRWgbNEkqO"), "{server_first}");
    let client_final = format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 32]));
    client
        .send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            BASE64.encode(client_final)
        ))
        .await;
    assert_eq!(
        client.next_stanza(Duration::from_secs(10)).await.as_deref(),
        Some(not_authorized)
    );
    // RFC 6120 §6.4.5: the stream stays open and the client may try again.
    assert!(
        client
            .auth_plain("mallory", MALLORY_PASSWORD)
            .await
            .starts_with("<success")
    );
    others.still_chat().await;
}

#[tokio::test]
async fn iq_in_an_unknown_namespace_is_service_unavailable() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut client = mallory(&server, "iq").await;
    for (id, iq_type, to) in [
        ("server", "get", ""),
        ("domain", "set", " to='localhost'"),
        ("account", "get", " to='bob@localhost'"),
        ("nobody", "get", " to='nobody@localhost'"),
    ] {
        client
            .send(&format!(
                "<iq type='{iq_type}' id='{id}'{to}><query xmlns='urn:example:unknown'/></iq>"
            ))
            .await;
        client
            .expect_stanza_error(Some(id), "cancel", "service-unavailable")
            .await;
    }
    others.still_chat().await;
}

#[tokio::test]
async fn spoofed_from_is_invalid_from() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut client = mallory(&server, "spoof").await;
    // Its own full and bare JID are fine (RFC 6120 §8.1.2.1).
    client
        .send("<message from='mallory@localhost/spoof' to='bob@localhost/desk'><body>honest 1</body></message>")
        .await;
    client
        .send("<message from='mallory@localhost' to='bob@localhost/desk'><body>honest 2</body></message>")
        .await;
    others.bob.expect("<body>honest 2</body>").await;
    client
        .send("<message from='bob@localhost/desk' to='alice@localhost/phone'><body>spoofed 1</body></message>")
        .await;
    client.expect_stream_error("invalid-from").await;
    for spoof in [
        "alice@localhost",
        "mallory@localhost/other",
        "localhost",
        "not@@a jid",
    ] {
        let mut client = mallory(&server, "spoof").await;
        client
            .send(&format!(
                "<message from='{spoof}' to='alice@localhost/phone'><body>spoofed {spoof}</body></message>"
            ))
            .await;
        client.expect_stream_error("invalid-from").await;
    }
    let seen = others.still_chat().await;
    assert!(!seen.contains("spoofed"), "{seen}");
}

#[tokio::test]
async fn malformed_jid_in_to_is_jid_malformed() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut client = mallory(&server, "jid").await;
    let long_node = format!("{}@localhost", "n".repeat(1100));
    for (index, to) in [
        "a@b@localhost",
        "@localhost",
        "mallory@",
        "localhost/",
        "bad user@localhost",
        &long_node,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("jid{index}");
        client
            .send(&format!(
                "<message to='{to}' id='{id}'><body>misaddressed</body></message>"
            ))
            .await;
        let reply = client
            .expect_stanza_error(Some(&id), "modify", "jid-malformed")
            .await;
        // The malformed address is not sent back as if it were one.
        assert_eq!(
            support::attribute(&reply, "from").as_deref(),
            Some(DOMAIN),
            "{reply}"
        );
    }
    client
        .send("<iq to='a@b@localhost' type='get' id='iq-jid'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    client
        .expect_stanza_error(Some("iq-jid"), "modify", "jid-malformed")
        .await;
    // A stanza error leaves the stream usable.
    client
        .send("<message to='bob@localhost/desk'><body>still here</body></message>")
        .await;
    others.bob.expect("<body>still here</body>").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("misaddressed"), "{seen}");
}

#[tokio::test]
async fn stanza_before_authentication_is_not_authorized() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut client = unauthenticated(&server).await;
    client
        .send("<message to='bob@localhost/desk'><body>unauthenticated</body></message>")
        .await;
    client.expect_stream_error("not-authorized").await;
    let mut client = unauthenticated(&server).await;
    client
        .send("<iq type='get' id='early'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    client.expect_stream_error("not-authorized").await;
    // Authenticated but not bound yet: still no stanzas (RFC 6120 §7.1).
    let mut client = unauthenticated(&server).await;
    assert!(
        client
            .auth_plain("mallory", MALLORY_PASSWORD)
            .await
            .starts_with("<success")
    );
    client.open_stream().await;
    client
        .send("<message to='bob@localhost/desk'><body>unbound</body></message>")
        .await;
    client.expect_stream_error("not-authorized").await;
    let seen = others.still_chat().await;
    assert!(
        !seen.contains("unauthenticated") && !seen.contains("unbound"),
        "{seen}"
    );
}

#[tokio::test]
async fn too_many_attributes_is_a_policy_violation() {
    let (_dir, server, mut others) = start_with_bystanders("[limits]\nmax_attributes = 5\n").await;
    let mut client = mallory(&server, "attrs").await;
    client
        .send(
            "<message to='bob@localhost/desk' id='five' type='chat' xml:lang='en' a='1'>\
             <x xmlns='urn:test:attrs' b='1' c='2' d='3' e='4'/><body>five attributes</body></message>",
        )
        .await;
    others.bob.expect("<body>five attributes</body>").await;
    client
        .send("<message to='bob@localhost/desk' id='six' type='chat' xml:lang='en' a='1' b='2'><body>six</body></message>")
        .await;
    client.expect_stream_error("policy-violation").await;
    let mut client = mallory(&server, "attrs").await;
    client
        .send("<message to='bob@localhost/desk'><x xmlns='urn:test:attrs' a='1' b='2' c='3' d='4' e='5'/></message>")
        .await;
    client.expect_stream_error("policy-violation").await;
    others.still_chat().await;
}

#[tokio::test]
async fn processing_instruction_is_restricted_xml() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    each_fails(
        &server,
        &[
            "<?evil data?>",
            "<message to='bob@localhost/desk'><?evil data?><body>pi</body></message>",
            "<?xml version='1.0'?>",
        ],
        "restricted-xml",
    )
    .await;
    let mut client = unauthenticated(&server).await;
    client.send("<?evil before-auth?>").await;
    client.expect_stream_error("restricted-xml").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("<body>pi</body>"), "{seen}");
}

#[tokio::test]
async fn unbound_prefix_is_bad_namespace_prefix() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    each_fails(
        &server,
        &[
            "<message to='bob@localhost/desk'><foo:bar/><body>prefix</body></message>",
            "<foo:message to='bob@localhost/desk'><body>prefix</body></foo:message>",
            "<message to='bob@localhost/desk' foo:attr='1'><body>prefix</body></message>",
        ],
        "bad-namespace-prefix",
    )
    .await;
    // A stream header whose `stream` prefix is never declared.
    let mut client = RawClient::connect(server.c2s).await;
    client
        .send("<stream:stream to='localhost' version='1.0' xmlns='jabber:client'>")
        .await;
    client.expect_stream_error("bad-namespace-prefix").await;
    let seen = others.still_chat().await;
    assert!(!seen.contains("<body>prefix</body>"), "{seen}");
}

#[tokio::test]
async fn wrong_stream_namespace_is_invalid_namespace() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    for header in [
        "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://example.com/streams'>",
        "<stream:stream to='localhost' version='1.0' xmlns='jabber:wrong' xmlns:stream='http://etherx.jabber.org/streams'>",
        // A server-to-server stream on the client port.
        "<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
    ] {
        let mut client = RawClient::connect(server.c2s).await;
        client.send(header).await;
        client.expect_stream_error("invalid-namespace").await;
    }
    others.still_chat().await;
}

#[tokio::test]
async fn wrong_domain_in_stream_header_is_host_unknown() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    for to in ["example.com", "mallory@localhost", "localhost.evil"] {
        let mut client = RawClient::connect(server.c2s).await;
        client
            .send(&format!(
                "<stream:stream to='{to}' version='1.0' xmlns='jabber:client' \
                 xmlns:stream='http://etherx.jabber.org/streams'>"
            ))
            .await;
        client.expect_stream_error("host-unknown").await;
    }
    others.still_chat().await;
}

/// Under TLS the edge waits for the socket only once rustls holds no
/// plaintext (`XmppStream::poll_fill`): stanzas pipelined in one record, and
/// a stanza larger than one read, must each be read without more bytes
/// arriving.
#[tokio::test]
async fn tls_stanzas_pipelined_in_one_record_are_all_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    for user in ["alice", "bob"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    let mut alice = TlsClient::login(&server, "alice", "phone").await;
    let mut bob = TlsClient::login(&server, "bob", "desk").await;
    let long = "x".repeat(6000);
    alice
        .send(&format!(
            "<message to='bob@localhost' id='m1'><body>one</body></message>\
             <message to='bob@localhost' id='m2'><body>{long}</body></message>\
             <message to='bob@localhost' id='m3'><body>three</body></message>"
        ))
        .await;
    let first = bob.expect("</message>").await;
    assert!(first.contains("<body>one</body>"), "{first}");
    let second = bob.expect("</message>").await;
    assert!(second.contains(&long), "the long message was cut");
    let third = bob.expect("</message>").await;
    assert!(third.contains("<body>three</body>"), "{third}");
}

#[tokio::test]
async fn authentication_in_clear_is_refused_when_tls_is_required() {
    let dir = tempfile::tempdir().unwrap();
    // The production default: `require_tls = true`.
    let server = Server::start(ServerOptions {
        role: "run",
        data_dir: dir.path(),
        extra: "",
        env: Vec::new(),
    });
    server.ready().await;
    for user in ["alice", "bob", "mallory"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    let mut alice = TlsClient::login(&server, "alice", "phone").await;
    let mut bob = TlsClient::login(&server, "bob", "desk").await;

    let mut client = RawClient::connect(server.c2s).await;
    client.send(HEADER).await;
    let features = client.expect("</stream:features>").await;
    assert!(
        features
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
        "{features}"
    );
    assert!(
        !features.contains("<mechanisms"),
        "SASL offered in clear: {features}"
    );
    let token = BASE64.encode("\0mallory\0mallory-secret");
    client
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
    client.expect_stream_error("policy-violation").await;
    // Registration in clear is refused the same way.
    let mut client = RawClient::connect(server.c2s).await;
    client.open_stream().await;
    client
        .send("<iq type='get' id='reg'><query xmlns='jabber:iq:register'/></iq>")
        .await;
    client.expect_stream_error("policy-violation").await;

    alice
        .send("<message to='bob@localhost/desk' type='chat'><body>over tls</body></message>")
        .await;
    bob.expect("<body>over tls</body>").await;
    bob.send(
        "<message to='alice@localhost/phone' type='chat'><body>back over tls</body></message>",
    )
    .await;
    alice.expect("<body>back over tls</body>").await;
}

#[tokio::test]
async fn second_login_with_the_same_full_jid_replaces_the_first_with_conflict() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut first = mallory(&server, "twin").await;
    first.available().await;
    let mut second = mallory(&server, "twin").await;
    first.expect_stream_error("conflict").await;
    second.available().await;
    second
        .send("<message to='bob@localhost/desk' type='chat'><body>from the second</body></message>")
        .await;
    let received = others.bob.expect("<body>from the second</body>").await;
    assert!(
        received.contains("from='mallory@localhost/twin'"),
        "{received}"
    );
    // The first session's clean-up must not take the second one's route.
    others
        .bob
        .send(
            "<message to='mallory@localhost/twin' type='chat'><body>to the second</body></message>",
        )
        .await;
    second.expect("<body>to the second</body>").await;
    others.still_chat().await;
}

#[tokio::test]
async fn iq_without_id_is_bad_request() {
    let (_dir, server, mut others) = start_with_bystanders("").await;
    let mut client = mallory(&server, "noid").await;
    client
        .send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    client
        .expect_stanza_error(None, "modify", "bad-request")
        .await;
    client
        .send("<iq type='get' to='bob@localhost' ><query xmlns='jabber:iq:version'/></iq>")
        .await;
    client
        .expect_stanza_error(None, "modify", "bad-request")
        .await;
    // The stream carries on.
    client
        .send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let reply = client
        .next_stanza(Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(
        reply.contains("id='ping'") && reply.contains("type='result'"),
        "{reply}"
    );
    others.still_chat().await;
}

/// A client that does STARTTLS (trusting any certificate: the server's is
/// generated) and PLAIN inside it.
struct TlsClient {
    conn: Conn<tokio_rustls::client::TlsStream<TcpStream>>,
}

impl TlsClient {
    async fn login(server: &Server, user: &str, resource: &str) -> TlsClient {
        let mut plain = Conn::new(TcpStream::connect(server.c2s).await.unwrap());
        plain.send(HEADER).await;
        plain.expect("</stream:features>").await;
        plain
            .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        plain
            .expect("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(DOMAIN.try_into().unwrap(), plain.io)
            .await
            .expect("TLS handshake");
        let mut conn = Conn::new(tls);
        conn.send(HEADER).await;
        conn.expect("</stream:features>").await;
        let token = BASE64.encode(format!("\0{user}\0{user}-secret"));
        conn.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
        conn.expect("<success").await;
        conn.send(HEADER).await;
        conn.expect("</stream:features>").await;
        conn.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
        conn.expect("</iq>").await;
        conn.send("<presence/>").await;
        conn.expect("<presence").await;
        TlsClient { conn }
    }

    async fn send(&mut self, data: &str) {
        self.conn.send(data).await;
    }

    async fn expect(&mut self, needle: &str) -> String {
        self.conn.expect(needle).await
    }
}

struct Conn<S> {
    io: S,
    received: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Conn {
            io,
            received: String::new(),
        }
    }

    async fn send(&mut self, data: &str) {
        self.io.write_all(data.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Reads until `needle`; bytes after it stay unread on the socket only
    /// if the server sent nothing more (which holds before `<proceed/>`).
    async fn expect(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = self.received.find(needle) {
                return self.received.drain(..at + needle.len()).collect();
            }
            let mut buffer = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.io.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => self
                    .received
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
                _ => panic!(
                    "did not receive {needle:?}; got so far: {:?}",
                    self.received
                ),
            }
        }
    }
}

#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
