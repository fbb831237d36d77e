//! XMPP over WebSocket (RFC 7395) on the all-in-one's HTTP listener: SCRAM
//! logins over `ws://` and `wss://` chatting with TCP clients, the RFC's
//! answer to each bad input (other users chatting on unharmed), XEP-0156
//! discovery, the Origin allow-list, and a third-party client, xmpp.js
//! (`@xmpp/client` from npm), logging in and chatting.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use support::{DOMAIN, RawClient, Server, http_get, start_with_bystanders};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const TIMEOUT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw WebSocket client: sends the messages a test says, and collects
/// text messages until what it waits for.
struct WsClient {
    socket: WebSocketStream<Box<dyn Io>>,
    /// Text messages received and not yet matched.
    received: Vec<String>,
}

struct Handshake<'a> {
    tls: bool,
    protocol: Option<&'a str>,
    origin: Option<&'a str>,
}

const XMPP: Handshake<'static> = Handshake {
    tls: false,
    protocol: Some("xmpp"),
    origin: None,
};

impl WsClient {
    async fn connect(
        address: SocketAddr,
        handshake: Handshake<'_>,
    ) -> Result<WsClient, tungstenite::Error> {
        let scheme = if handshake.tls { "wss" } else { "ws" };
        let mut request = format!("{scheme}://{address}/xmpp-websocket")
            .into_client_request()
            .unwrap();
        if let Some(protocol) = handshake.protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        }
        if let Some(origin) = handshake.origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        let tcp = TcpStream::connect(address).await.unwrap();
        let io: Box<dyn Io> = if handshake.tls {
            // As a browser: HTTP's ALPN, not XMPP's.
            let mut config = (*xmppd_tls::insecure_client_config()).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let config = std::sync::Arc::new(config);
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            Box::new(connector.connect(name, tcp).await.unwrap())
        } else {
            Box::new(tcp)
        };
        let (socket, response) = tokio_tungstenite::client_async(request, io).await?;
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "xmpp"
        );
        Ok(WsClient {
            socket,
            received: Vec::new(),
        })
    }

    async fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    async fn open(&mut self) -> String {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"
        ))
        .await;
        self.expect("<open ").await;
        self.expect("</stream:features>").await
    }

    /// The next text message, skipping pings; `None` once closed or silent.
    async fn next_text(&mut self, timeout: Duration) -> Option<String> {
        loop {
            match tokio::time::timeout(timeout, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => return None,
            }
        }
    }

    /// Waits for a message containing `needle`; returns it, keeping the
    /// messages before it for later.
    async fn expect(&mut self, needle: &str) -> String {
        if let Some(at) = self.received.iter().position(|m| m.contains(needle)) {
            return self.received.remove(at);
        }
        loop {
            match self.next_text(TIMEOUT).await {
                Some(text) if text.contains(needle) => return text,
                Some(text) => self.received.push(text),
                None => panic!("did not receive {needle:?}; got {:?}", self.received),
            }
        }
    }

    /// The stream error, then `<close/>`, then the end of the connection.
    async fn expect_stream_error(&mut self, condition: &str) {
        let error = self.expect("<stream:error").await;
        assert!(
            error.contains(&format!("<{condition} ")),
            "expected {condition}: {error}"
        );
        assert!(
            error.contains("xmlns:stream='http://etherx.jabber.org/streams'"),
            "a stream error must declare its prefix in its own message: {error}"
        );
        self.expect(&format!("<close xmlns='{FRAMING}'/>")).await;
        assert!(self.next_text(TIMEOUT).await.is_none(), "still open");
    }

    /// SCRAM-SHA-256 (RFC 7677), then a new `<open/>` and resource binding.
    async fn login(&mut self, user: &str, password: &str, resource: &str) -> String {
        self.authenticate(user, password).await;
        self.send(&format!(
            "<iq type='set' id='bind' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
        self.expect("<jid>").await
    }

    /// SCRAM-SHA-256 (RFC 7677), then a new `<open/>`; returns its features.
    async fn authenticate(&mut self, user: &str, password: &str) -> String {
        let features = self.open().await;
        assert!(
            features.contains("<mechanism>SCRAM-SHA-256</mechanism>"),
            "{features}"
        );
        let nonce = BASE64.encode(rand_bytes());
        let first_bare = format!("n={user},r={nonce}");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            BASE64.encode(format!("n,,{first_bare}"))
        ))
        .await;
        let challenge = self.expect("<challenge").await;
        let server_first = String::from_utf8(BASE64.decode(text_of(&challenge)).unwrap()).unwrap();
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(name))
                .unwrap()
                .to_string()
        };
        let (server_nonce, salt, iterations) = (field("r="), field("s="), field("i="));
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            password.as_bytes(),
            &BASE64.decode(salt).unwrap(),
            iterations.parse().unwrap(),
            &mut salted,
        );
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let without_proof = format!("c=biws,r={server_nonce}");
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof));
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            BASE64.encode(client_final)
        ))
        .await;
        let success = self.expect("<success").await;
        let server_final = String::from_utf8(BASE64.decode(text_of(&success)).unwrap()).unwrap();
        let server_key = hmac(&salted, b"Server Key");
        let expected = BASE64.encode(hmac(&server_key, auth_message.as_bytes()));
        assert_eq!(server_final, format!("v={expected}"), "server signature");
        self.open().await
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn rand_bytes() -> [u8; 18] {
    let mut bytes = [0u8; 18];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    bytes
}

/// The character data of a one-element message.
fn text_of(element: &str) -> &str {
    let start = element.find('>').unwrap() + 1;
    let end = element.rfind("</").unwrap();
    &element[start..end]
}

fn wss() -> Handshake<'static> {
    Handshake { tls: true, ..XMPP }
}

/// Alice logs in over WebSocket and chats with Bob on TCP, both ways.
/// Bob is given back, still connected.
async fn chat_with_tcp(server: &Server, alice: &mut WsClient) -> RawClient {
    let jid = alice.login("alice", "alice-secret", "web").await;
    assert!(jid.contains("<jid>alice@localhost/web</jid>"), "{jid}");
    alice.send("<presence xmlns='jabber:client'/>").await;
    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "desk").await;
    bob.available().await;
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>over websocket</body></message>")
        .await;
    let got = bob.expect("over websocket</body>").await;
    assert!(got.contains("from='alice@localhost/web'"), "{got}");
    bob.send("<message to='alice@localhost/web' type='chat'><body>over tcp</body></message>")
        .await;
    let got = alice.expect("over tcp</body>").await;
    assert!(got.contains("from='bob@localhost/desk'"), "{got}");
    assert!(
        got.starts_with("<message xmlns='jabber:client'"),
        "each message is a document of its own: {got}"
    );
    bob
}

#[tokio::test]
async fn a_websocket_client_logs_in_with_scram_and_chats_with_a_tcp_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut alice = WsClient::connect(server.websocket, XMPP).await.unwrap();
    let _bob = chat_with_tcp(&server, &mut alice).await;
    let (_, scrape) = http_get(server.http, "/metrics").await.unwrap();
    assert!(
        scrape.contains("xmppd_edge_bound_streams{transport=\"websocket\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("xmppd_edge_bound_streams{transport=\"tcp\"} 1"),
        "{scrape}"
    );
    support::assert_metrics_documented(&server).await;
    // RFC 7395's close: ours answers theirs, then the WebSocket closes.
    alice.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    alice.expect(&format!("<close xmlns='{FRAMING}'/>")).await;
    assert!(alice.next_text(TIMEOUT).await.is_none());
}

/// XEP-0198 over WebSocket: the session of a dropped WebSocket is resumed on
/// a new one, with what its client had not acknowledged, in order.
#[tokio::test]
async fn a_websocket_session_is_resumed_after_its_connection_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut alice = WsClient::connect(server.websocket, XMPP).await.unwrap();
    alice.login("alice", "alice-secret", "web").await;
    alice
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = alice.expect("<enabled ").await;
    let id = support::attribute(&enabled, "id").expect("a session id");
    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "desk").await;
    for body in ["w1", "w2"] {
        bob.send(&format!(
            "<message to='alice@localhost/web' type='chat'><body>{body}</body></message>"
        ))
        .await;
    }
    alice.expect("w1</body>").await;
    drop(alice);
    bob.send("<message to='alice@localhost/web' type='chat'><body>w3</body></message>")
        .await;

    let mut alice = WsClient::connect(server.websocket, XMPP).await.unwrap();
    alice.authenticate("alice", "alice-secret").await;
    alice
        .send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>"
        ))
        .await;
    let resumed = alice.next_text(TIMEOUT).await.unwrap();
    assert!(resumed.starts_with("<resumed "), "{resumed}");
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let text = alice.next_text(TIMEOUT).await.expect("a message");
        if text.starts_with("<message") {
            let body = text.split("<body>").nth(1).unwrap();
            bodies.push(body.split("</body>").next().unwrap().to_string());
        }
    }
    assert_eq!(bodies, ["w2", "w3"]);
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>back</body></message>")
        .await;
    let got = bob.expect("back</body>").await;
    assert!(got.contains("from='alice@localhost/web'"), "{got}");
}

#[tokio::test]
async fn a_secure_websocket_offers_channel_binding_and_chats_with_a_tcp_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut plain = WsClient::connect(server.websocket, XMPP).await.unwrap();
    let features = plain.open().await;
    assert!(!features.contains("-PLUS"), "{features}");
    assert!(!features.contains("starttls"), "{features}");
    let mut alice = WsClient::connect(server.websocket_tls, wss())
        .await
        .unwrap();
    let features = alice.open().await;
    assert!(
        features.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"),
        "{features}"
    );
    let mut alice = WsClient::connect(server.websocket_tls, wss())
        .await
        .unwrap();
    chat_with_tcp(&server, &mut alice).await;
}

#[tokio::test]
async fn plain_websocket_is_not_secure_unless_configured_so() {
    // TLS required, as in production.
    let start = |dir: &Path, extra: &str| {
        Server::start(support::ServerOptions {
            role: "run",
            data_dir: dir,
            extra,
            env: Vec::new(),
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    server.ready().await;
    let mut plain = WsClient::connect(server.websocket, XMPP).await.unwrap();
    let features = plain.open().await;
    assert!(!features.contains("<mechanism>"), "{features}");
    plain
        .send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
        .await;
    plain.expect_stream_error("policy-violation").await;
    let mut secure = WsClient::connect(server.websocket_tls, wss())
        .await
        .unwrap();
    assert!(secure.open().await.contains("<mechanism>PLAIN</mechanism>"));

    // Behind a TLS-terminating proxy.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "[websocket]\nconsider_secure = true\n");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    let mut proxied = WsClient::connect(server.websocket, XMPP).await.unwrap();
    proxied.login("alice", "alice-secret", "web").await;
}

#[tokio::test]
async fn a_silent_websocket_is_pinged_and_closed_unless_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(
        dir.path(),
        "[limits]\nping_after_secs = 1\nidle_timeout_secs = 2\n",
    );
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut alice = WsClient::connect(server.websocket, XMPP).await.unwrap();
    alice.login("alice", "alice-secret", "web").await;
    let mut bob = WsClient::connect(server.websocket, XMPP).await.unwrap();
    bob.login("bob", "bob-secret", "web").await;
    // Bob reads (tungstenite answers the pings as it does); Alice does not,
    // so her pongs are never sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, bob.socket.next()).await;
    }
    alice.expect_stream_error("connection-timeout").await;
    bob.send("<iq type='get' id='still' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    bob.expect("id='still'").await;
}

#[tokio::test]
async fn each_bad_input_gets_the_rfc_answer_and_others_chat_on() {
    let (_dir, server, mut others) =
        start_with_bystanders("[limits]\nmax_stanza_bytes = 10000\n").await;
    let address = server.websocket;

    // No xmpp subprotocol: refused before the upgrade.
    let refused = WsClient::connect(
        address,
        Handshake {
            protocol: None,
            ..XMPP
        },
    )
    .await;
    assert_http_status(refused, 400);
    let refused = WsClient::connect(
        address,
        Handshake {
            protocol: Some("chat"),
            ..XMPP
        },
    )
    .await;
    assert_http_status(refused, 400);

    // Elements before <open/>.
    let mut client = WsClient::connect(address, XMPP).await.unwrap();
    client
        .send("<message to='bob@localhost/desk'><body>no open</body></message>")
        .await;
    client.expect_stream_error("bad-format").await;

    let inputs: [(&str, &str); 4] = [
        (
            "<message to='bob@localhost/desk'><body>two</body></message><message to='bob@localhost/desk'><body>two</body></message>",
            "bad-format",
        ),
        (
            "<message to='bob@localhost/desk'><body>malformed</bogus></message>",
            "not-well-formed",
        ),
        (
            "<message to='bob@localhost/desk'><body>half",
            "not-well-formed",
        ),
        ("</stream:stream>", "bad-format"),
    ];
    for (index, (input, condition)) in inputs.into_iter().enumerate() {
        server.add_user(&format!("m{index}"), "m-secret");
        let mut client = WsClient::connect(address, XMPP).await.unwrap();
        client.login(&format!("m{index}"), "m-secret", "bad").await;
        client.send(input).await;
        client.expect_stream_error(condition).await;
    }

    server.add_user("binary", "m-secret");
    let mut client = WsClient::connect(address, XMPP).await.unwrap();
    client.login("binary", "m-secret", "bad").await;
    client
        .socket
        .send(Message::binary(
            b"<message to='bob@localhost/desk'><body>binary</body></message>".to_vec(),
        ))
        .await
        .unwrap();
    client.expect_stream_error("unsupported-encoding").await;

    server.add_user("big", "m-secret");
    let mut client = WsClient::connect(address, XMPP).await.unwrap();
    client.login("big", "m-secret", "bad").await;
    let fits = "f".repeat(9000);
    client
        .send(&format!(
            "<message to='bob@localhost/desk'><body>{fits}</body></message>"
        ))
        .await;
    others.bob.expect(&fits).await;
    let big = "b".repeat(10_001);
    client
        .send(&format!(
            "<message to='bob@localhost/desk'><body>{big}</body></message>"
        ))
        .await;
    client.expect_stream_error("policy-violation").await;

    let seen = others.still_chat().await;
    for leaked in ["no open", "two", "malformed", "half", "binary", "bbbb"] {
        assert!(!seen.contains(leaked), "{leaked} reached bob: {seen}");
    }
}

fn assert_http_status(result: Result<WsClient, tungstenite::Error>, status: u16) {
    match result {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), status),
        Err(other) => panic!("expected HTTP {status}, got {other}"),
        Ok(_) => panic!("expected HTTP {status}, the upgrade succeeded"),
    }
}

#[tokio::test]
async fn host_meta_names_the_websocket_endpoint_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    let url = format!("ws://{}/xmpp-websocket", server.websocket);
    let (status, xrd) = http_get(server.websocket, "/.well-known/host-meta")
        .await
        .unwrap();
    assert_eq!(status, 200, "{xrd}");
    assert!(
        xrd.contains("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"),
        "{xrd}"
    );
    assert!(
        xrd.contains(&format!(
            "<Link rel='urn:xmpp:alt-connections:websocket' href='{url}'/>"
        )),
        "{xrd}"
    );
    let (status, json) = http_get(server.websocket, "/.well-known/host-meta.json")
        .await
        .unwrap();
    assert_eq!(status, 200, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["links"][0]["rel"],
        "urn:xmpp:alt-connections:websocket"
    );
    assert_eq!(json["links"][0]["href"], url.as_str());
    let (status, _) = http_get(server.websocket, "/elsewhere").await.unwrap();
    assert_eq!(status, 404);

    // The secure listener names a wss:// URL, and a configured one wins.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(
        dir.path(),
        "[websocket]\npublic_url = \"wss://chat.example.org/xmpp-websocket\"\n",
    );
    server.ready().await;
    let (_, xrd) = http_get(server.websocket, "/.well-known/host-meta")
        .await
        .unwrap();
    assert!(
        xrd.contains("href='wss://chat.example.org/xmpp-websocket'"),
        "{xrd}"
    );
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(
        dir.path(),
        "[websocket]\norigins = [\"https://chat.example.org\"]\n",
    );
    server.ready().await;
    let evil = Handshake {
        origin: Some("https://evil.example"),
        ..XMPP
    };
    assert_http_status(WsClient::connect(server.websocket, evil).await, 403);
    let good = Handshake {
        origin: Some("https://chat.example.org"),
        ..XMPP
    };
    WsClient::connect(server.websocket, good)
        .await
        .unwrap()
        .open()
        .await;
    // Clients that are not browsers send no Origin: the check is for pages.
    WsClient::connect(server.websocket, XMPP)
        .await
        .unwrap()
        .open()
        .await;
}

/// Where `@xmpp/client` is installed: `target/npm-interop`, by `.ci/test`
/// or, when missing, here.
fn xmpp_js() -> PathBuf {
    let prefix = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/npm-interop");
    if !prefix
        .join("node_modules/@xmpp/client/package.json")
        .exists()
    {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("@xmpp/client@0.14.0")
            .status()
            .expect("npm (install nodejs and npm: apt-get install nodejs npm)");
        assert!(status.success(), "npm install @xmpp/client failed");
    }
    prefix
}

#[tokio::test]
async fn xmpp_js_logs_in_over_websocket_and_chats_with_a_tcp_client() {
    let prefix = xmpp_js();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), "");
    server.ready().await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "desk").await;
    bob.available().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/xmpp_client.mjs");
    // The script is run from the prefix so that Node finds its node_modules.
    let copy = prefix.join("xmpp_client.mjs");
    std::fs::copy(&script, &copy).unwrap();
    // The script gives up by itself after 30 s, so the wait is bounded.
    // xmpp.js uses the platform's WebSocket, which Node 20 has behind a flag
    // (Node 22 by default; the flag is accepted there too).
    let node = Command::new("node")
        .arg("--experimental-websocket")
        .arg(&copy)
        .arg(format!("ws://{}/xmpp-websocket", server.websocket))
        .args(["alice", "alice-secret", "bob@localhost/desk"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    let output = tokio::task::spawn_blocking(move || node.wait_with_output());
    let Some(got) = bob
        .wait_for("hello from xmpp.js</body>", Duration::from_secs(30))
        .await
    else {
        let output = output.await.unwrap().unwrap();
        panic!(
            "bob got nothing from xmpp.js: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            server.log()
        );
    };
    assert!(got.contains("from='alice@localhost/web'"), "{got}");
    bob.send("<message to='alice@localhost/web' type='chat'><body>hello from tcp</body></message>")
        .await;
    let output = output.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\n{}",
        server.log()
    );
    assert!(stdout.contains("online alice@localhost/web"), "{stdout}");
    assert!(
        stdout.contains("received from=bob@localhost/desk body=hello from tcp"),
        "{stdout}"
    );
}

/// The stanza rate limit is the TCP one: past the burst, stanzas are paced,
/// in order, none lost, and the stream stays usable.
#[tokio::test]
async fn stanzas_over_the_burst_are_paced_not_lost() {
    let (_dir, server, mut others) = support::start_paced().await;
    let mut mallory = WsClient::connect(server.websocket, XMPP).await.unwrap();
    mallory
        .login("mallory", support::MALLORY_PASSWORD, "web")
        .await;
    let started = std::time::Instant::now();
    for n in 0..support::PACED_SENT {
        mallory
            .send(&format!(
                "<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>paced {n}</body></message>"
            ))
            .await;
    }
    support::expect_paced(&mut others.bob, started).await;
    mallory
        .send("<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>after pacing</body></message>")
        .await;
    others.bob.expect("<body>after pacing</body>").await;
    others.still_chat().await;
}
