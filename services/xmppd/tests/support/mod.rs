//! What the integration tests share: real `xmppd` processes on loopback with
//! their own configuration and data folder, and a raw XMPP client that can
//! say exactly the bytes a test needs (well-formed or not).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod admin;
pub mod client;
pub mod cluster;
pub mod features;
pub mod muc;
pub mod otlp;
pub mod prometheus;
pub mod python;

pub const DOMAIN: &str = "localhost";

pub fn xmppd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xmppd"))
}

/// One `xmppd` process; killed when dropped.
pub struct Server {
    child: Child,
    pub c2s: SocketAddr,
    pub c2s_tls: SocketAddr,
    pub websocket: SocketAddr,
    pub websocket_tls: SocketAddr,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The admin API (HTTPS), where the role serves it.
    pub admin: SocketAddr,
    pub config: PathBuf,
    log: PathBuf,
}

/// The loopback addresses a server listens on.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub c2s: SocketAddr,
    pub c2s_tls: SocketAddr,
    pub websocket: SocketAddr,
    pub websocket_tls: SocketAddr,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl Ports {
    pub fn free() -> Ports {
        // Held until all are picked: a port let go can be handed out again at once,
        // and a server given the same port twice fails to bind the second.
        let held: [TcpListener; 7] =
            std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
        let [c2s, c2s_tls, websocket, websocket_tls, http, grpc, admin] =
            held.map(|listener| listener.local_addr().unwrap());
        Ports {
            c2s,
            c2s_tls,
            websocket,
            websocket_tls,
            http,
            grpc,
            admin,
        }
    }
}

impl Server {
    pub fn ports(&self) -> Ports {
        Ports {
            c2s: self.c2s,
            c2s_tls: self.c2s_tls,
            websocket: self.websocket,
            websocket_tls: self.websocket_tls,
            http: self.http,
            grpc: self.grpc,
            admin: self.admin,
        }
    }
}

/// Configuration a test starts from: loopback ports, relaxed limits where a
/// test needs them, and `extra` TOML appended verbatim.
pub struct ServerOptions<'a> {
    pub role: &'a str,
    pub data_dir: &'a Path,
    pub extra: &'a str,
    pub env: Vec<(String, String)>,
}

impl Server {
    /// The all-in-one server with the embedded defaults, authentication
    /// allowed without TLS (so raw tests can speak plain XML), and in-band
    /// registration open.
    pub fn all_in_one(dir: &Path, extra: &str) -> Server {
        let extra = format!("[auth]\nrequire_tls = false\nregistration = true\n{extra}");
        Server::start(ServerOptions {
            role: "run",
            data_dir: dir,
            extra: &extra,
            env: Vec::new(),
        })
    }

    pub fn start(options: ServerOptions<'_>) -> Server {
        Server::start_at(options, Ports::free())
    }

    /// [`Server::start`] on given ports, for example to restart a node where
    /// its peers expect it.
    pub fn start_at(options: ServerOptions<'_>, ports: Ports) -> Server {
        let Ports {
            c2s,
            c2s_tls,
            websocket,
            websocket_tls,
            http,
            grpc,
            admin,
        } = ports;
        std::fs::create_dir_all(options.data_dir).unwrap();
        let config = options
            .data_dir
            .join(format!("{}-{}.toml", options.role, c2s.port()));
        let toml = format!(
            "[server]\ndomain = \"{DOMAIN}\"\ndata_dir = \"{}\"\n\
             [listen]\nc2s = \"{c2s}\"\nc2s_tls = \"{c2s_tls}\"\ngrpc = \"{grpc}\"\n\
             websocket = \"{websocket}\"\nwebsocket_tls = \"{websocket_tls}\"\n\
             [observability]\nhttp = \"{http}\"\nlog = \"info\"\n\
             [admin]\nlisten = \"{admin}\"\n{}\n",
            options.data_dir.display(),
            options.extra
        );
        let toml = merge_sections(&toml);
        std::fs::write(&config, toml).unwrap();
        let log = options
            .data_dir
            .join(format!("{}-{}.log", options.role, c2s.port()));
        let child = xmppd()
            .arg("--config")
            .arg(&config)
            .arg(options.role)
            .envs(options.env)
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start xmppd");
        Server {
            child,
            c2s,
            c2s_tls,
            websocket,
            websocket_tls,
            http,
            grpc,
            admin,
            config,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` says ready.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get(self.http, "/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server not ready in time; log:\n{}", self.log());
    }

    /// `xmppd user add` against this server's configuration.
    pub fn add_user(&self, user: &str, password: &str) {
        let output = xmppd()
            .arg("--config")
            .arg(&self.config)
            .args(["user", "add", &format!("{user}@{DOMAIN}")])
            .env("XMPPD_PASSWORD", password)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// SIGKILL: the process dies without any clean-up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sections repeated by `extra` are merged, as TOML forbids repeating one.
fn merge_sections(toml: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut current = String::new();
    for line in toml.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.starts_with('[') {
            current = line.to_string();
            if !sections.iter().any(|(name, _)| *name == current) {
                sections.push((current.clone(), Vec::new()));
            }
        } else if let Some((_, lines)) = sections.iter_mut().find(|(name, _)| *name == current) {
            lines.push(line.to_string());
        }
    }
    sections
        .into_iter()
        .map(|(name, lines)| format!("{name}\n{}\n", lines.join("\n")))
        .collect()
}

/// A minimal HTTP/1.0 GET: (status, body).
pub async fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut socket = TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())?;
    Some((status, body))
}

/// Fails unless every metric family `server` exports is in the reference,
/// `docs/observability.md`, by its name or with the `_total` of a counter or
/// the `_info` of an info metric.
pub async fn assert_metrics_documented(server: &Server) {
    let (status, scrape) = http_get(server.http, "/metrics")
        .await
        .expect("no answer from /metrics");
    assert_eq!(status, 200, "{scrape}");
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/observability.md");
    let docs = std::fs::read_to_string(reference).unwrap();
    let families: Vec<&str> = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP ")?.split_whitespace().next())
        .collect();
    assert!(!families.is_empty(), "{scrape}");
    let undocumented: Vec<&str> = families
        .into_iter()
        .filter(|name| {
            // A counter's and an info metric's samples carry a suffix.
            !["", "_total", "_info"]
                .iter()
                .any(|suffix| docs.contains(&format!("`{name}{suffix}`")))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/observability.md: {undocumented:?}"
    );
}

/// A raw client: writes what the test says, and reads until what it waits for.
pub struct RawClient {
    socket: TcpStream,
    received: String,
}

const READ_TIMEOUT: Duration = Duration::from_secs(10);

impl RawClient {
    pub async fn connect(address: SocketAddr) -> RawClient {
        RawClient {
            socket: TcpStream::connect(address).await.expect("connect"),
            received: String::new(),
        }
    }

    pub async fn send(&mut self, data: &str) {
        self.socket.write_all(data.as_bytes()).await.expect("send");
    }

    pub async fn send_bytes(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(data).await
    }

    /// Opens a stream; returns what was read up to its features' end.
    pub async fn open_stream(&mut self) -> String {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await;
        self.expect("</stream:features>").await
    }

    /// Reads until `needle` has arrived; returns everything read up to and
    /// including it, and keeps the rest for the next call.
    pub async fn expect(&mut self, needle: &str) -> String {
        match self.wait_for(needle, READ_TIMEOUT).await {
            Some(text) => text,
            None => panic!(
                "did not receive {needle:?}; got so far: {:?}",
                self.received
            ),
        }
    }

    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.received.find(needle) {
                let end = at + needle.len();
                let text = self.received[..end].to_string();
                self.received.drain(..end);
                return Some(text);
            }
            let mut buffer = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.socket.read(&mut buffer)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self
                    .received
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    }

    /// True once the server closed the connection (within the timeout).
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            let mut buffer = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.socket.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self
                    .received
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
                Err(_) => return false,
            }
        }
    }

    pub fn pending(&self) -> &str {
        &self.received
    }

    /// Opens a stream, authenticates with PLAIN (the server must allow it
    /// without TLS), and binds `resource`.
    pub async fn login(
        address: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> RawClient {
        let (mut client, _) = RawClient::authenticate(address, user, password).await;
        client
            .send(&format!(
                "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>{resource}</resource></bind></iq>"
            ))
            .await;
        client.expect("</iq>").await;
        client
    }

    /// Opens a stream, authenticates with PLAIN (the server must allow it
    /// without TLS) and opens the authenticated stream; returns its features.
    pub async fn authenticate(
        address: SocketAddr,
        user: &str,
        password: &str,
    ) -> (RawClient, String) {
        let mut client = RawClient::connect(address).await;
        client.open_stream().await;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        client
            .send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
            ))
            .await;
        client.expect("<success").await;
        let features = client.open_stream().await;
        (client, features)
    }

    /// Sends initial presence and waits for the server's echo of it.
    pub async fn available(&mut self) {
        self.send("<presence/>").await;
        self.expect("<presence").await;
        self.expect(">").await;
    }
}

impl RawClient {
    /// The next complete top-level element received (a stanza, a stream
    /// error, `<stream:features>`), or the opening `<stream:stream …>` tag or
    /// `</stream:stream>` on their own; `None` if nothing complete arrives
    /// in time or the connection closes. Whitespace between is skipped.
    pub async fn next_stanza(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = first_element_end(&self.received) {
                let text: String = self.received.drain(..end).collect();
                let text = text.trim();
                if text.starts_with("<?") {
                    continue;
                }
                return Some(text.to_string());
            }
            let mut buffer = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.socket.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self
                    .received
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    }

    /// [`RawClient::login`] that reports failure (no server, refused, cut
    /// off) as `None` instead of panicking, for clients that retry.
    pub async fn try_login(
        address: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Option<RawClient> {
        let socket = TcpStream::connect(address).await.ok()?;
        let mut client = RawClient {
            socket,
            received: String::new(),
        };
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        client.send_bytes(header.as_bytes()).await.ok()?;
        client.features().await?;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        );
        client.send_bytes(auth.as_bytes()).await.ok()?;
        client
            .next_stanza(READ_TIMEOUT)
            .await?
            .starts_with("<success")
            .then_some(())?;
        client.send_bytes(header.as_bytes()).await.ok()?;
        client.features().await?;
        let bind = format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        );
        client.send_bytes(bind.as_bytes()).await.ok()?;
        let reply = client.next_stanza(READ_TIMEOUT).await?;
        reply.contains("<jid>").then_some(client)
    }

    /// Skips the stream header; `None` unless `<stream:features>` follows.
    async fn features(&mut self) -> Option<()> {
        loop {
            let element = self.next_stanza(READ_TIMEOUT).await?;
            if element.starts_with("<stream:features") {
                return Some(());
            }
            if !element.starts_with("<stream:stream") {
                return None;
            }
        }
    }
}

/// Where the first complete top-level element of `text` ends (see
/// [`RawClient::next_stanza`]). Knows just enough XML for server output:
/// tags, quoted attribute values, declarations.
fn first_element_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(offset) = text[at..].find('<') {
        let open = at + offset;
        let close = tag_end(bytes, open)?;
        let tag = &text[open..=close];
        at = close + 1;
        if tag.starts_with("<?") || tag.starts_with("<!") {
            // At the top level, a declaration on its own, which the caller skips.
            if depth == 0 {
                return Some(at);
            }
            continue;
        }
        if tag.starts_with("<stream:stream") || tag == "</stream:stream>" {
            if depth == 0 {
                return Some(at);
            }
        } else if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return Some(at);
            }
        } else if tag.ends_with("/>") {
            if depth == 0 {
                return Some(at);
            }
        } else {
            depth += 1;
        }
    }
    None
}

/// The index of the `>` closing the tag that starts at `open`, outside quotes.
fn tag_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut quote = None;
    for (index, &byte) in bytes.iter().enumerate().skip(open) {
        match (quote, byte) {
            (None, b'\'' | b'"') => quote = Some(byte),
            (Some(q), _) if q == byte => quote = None,
            (None, b'>') => return Some(index),
            _ => {}
        }
    }
    None
}

/// RFC 6120 §4.9.3: the namespace of stream error conditions.
pub const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3.3: the namespace of stanza error conditions.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

impl RawClient {
    /// A connection from `local` (any 127.0.0.0/8 address works on
    /// loopback), so that a test can be a second client IP.
    pub async fn connect_from(local: std::net::IpAddr, address: SocketAddr) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind local address");
        RawClient {
            socket: socket.connect(address).await.expect("connect"),
            received: String::new(),
        }
    }

    /// Sends a PLAIN `<auth/>` on an open stream and returns the answer:
    /// the `<success/>` or `<failure>…</failure>` element.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> String {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        ))
        .await;
        match self.next_stanza(READ_TIMEOUT).await {
            Some(answer) => answer,
            None => panic!("no answer to <auth/>; got so far: {:?}", self.received),
        }
    }

    /// Starts a SCRAM-SHA-256 `<auth/>` on an open stream with
    /// `client_first` (`n,,n=<user>,r=<nonce>`) and returns the server's
    /// first message (`r=…,s=<salt>,i=<iterations>`), decoded.
    pub async fn scram_server_first(&mut self, client_first: &str) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            engine.encode(client_first)
        ))
        .await;
        let challenge = self.next_stanza(READ_TIMEOUT).await.unwrap_or_default();
        let encoded = challenge
            .strip_prefix("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>")
            .and_then(|rest| rest.strip_suffix("</challenge>"))
            .unwrap_or_else(|| panic!("expected a SCRAM challenge, got {challenge:?}"));
        String::from_utf8(engine.decode(encoded).unwrap()).unwrap()
    }

    /// Asserts that the stream ends with the stream error `condition`
    /// (RFC 6120 §4.9.3): `<stream:error>` whose first child is the
    /// condition in its namespace, then `</stream:stream>`, then the server
    /// closes the connection. Stanzas before the error are skipped.
    pub async fn expect_stream_error(&mut self, condition: &str) {
        let error = loop {
            match self.next_stanza(READ_TIMEOUT).await {
                Some(element) if element.starts_with("<stream:error") => break element,
                Some(_) => {}
                None => panic!(
                    "no <{condition}/> stream error; got so far: {:?}",
                    self.received
                ),
            }
        };
        let wanted = format!("<stream:error><{condition} xmlns='{NS_STREAMS}'/>");
        assert!(
            error.starts_with(&wanted),
            "expected {wanted}…, got {error}"
        );
        let end = self.next_stanza(READ_TIMEOUT).await;
        assert_eq!(end.as_deref(), Some("</stream:stream>"), "after {error}");
        assert!(
            self.closed().await,
            "the server kept the connection open after {error}"
        );
    }

    /// Waits for the error reply to the stanza with `id` (`None`: the first
    /// error stanza without an id) and asserts its `<error type=…>` and
    /// condition (RFC 6120 §8.3). Returns the error stanza.
    pub async fn expect_stanza_error(
        &mut self,
        id: Option<&str>,
        error_type: &str,
        condition: &str,
    ) -> String {
        let reply = loop {
            let Some(stanza) = self.next_stanza(READ_TIMEOUT).await else {
                panic!(
                    "no error reply to id {id:?}; got so far: {:?}",
                    self.received
                );
            };
            let stanza_id = attribute(&stanza, "id");
            let is_error = attribute(&stanza, "type").as_deref() == Some("error");
            if stanza_id.as_deref() == id && (is_error || id.is_some()) {
                break stanza;
            }
        };
        assert_eq!(
            attribute(&reply, "type").as_deref(),
            Some("error"),
            "{reply}"
        );
        let error = reply
            .find("<error")
            .map(|at| &reply[at..])
            .unwrap_or_default();
        assert_eq!(
            attribute(error, "type").as_deref(),
            Some(error_type),
            "{reply}"
        );
        let wanted = format!("<{condition} xmlns='{NS_STANZAS}'/>");
        assert!(error.contains(&wanted), "expected {wanted} in {reply}");
        reply
    }
}

/// The value of attribute `name` on the first tag of `xml` (either quote).
pub fn attribute(xml: &str, name: &str) -> Option<String> {
    let tag = &xml[..tag_end(xml.as_bytes(), 0)?];
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(at) = tag.find(&key) {
            let value = &tag[at + key.len()..];
            return Some(value[..value.find(quote)?].to_string());
        }
    }
    None
}

/// Two users chatting on a server while a test misbehaves beside them: the
/// check that bad input "never harms other users' sessions".
/// The password of `mallory`, the account of the client that misbehaves.
pub const MALLORY_PASSWORD: &str = "mallory-secret";

/// The rate limit the pacing tests of `limits.rs` and `websocket.rs` set,
/// and how many stanzas they send at once.
pub const PACED_RATE: u32 = 10;
pub const PACED_BURST: u32 = 5;
pub const PACED_SENT: u32 = 25;

/// A server with bystanders whose stanza rate limit is the pacing tests'.
pub async fn start_paced() -> (tempfile::TempDir, Server, Bystanders) {
    start_with_bystanders(&format!(
        "[limits]\nstanzas_per_second = {PACED_RATE}\nstanza_burst = {PACED_BURST}\n"
    ))
    .await
}

/// A sender starting at `started` sent `<body>paced 0</body>`… to `bob` at
/// once. Checks that all arrive, in order, and no faster than the tokens
/// past the burst allow.
pub async fn expect_paced(bob: &mut RawClient, started: Instant) {
    let (sent, rate, burst) = (PACED_SENT, PACED_RATE, PACED_BURST);
    let received = bob
        .expect(&format!("<body>paced {}</body>", sent - 1))
        .await;
    let elapsed = started.elapsed();
    let mut at = 0;
    for n in 0..sent {
        let body = format!("<body>paced {n}</body>");
        let found = received[at..]
            .find(&body)
            .unwrap_or_else(|| panic!("{body} lost or out of order"));
        at += found + body.len();
    }
    // The stanzas past the burst needed (sent - burst) / rate seconds of
    // tokens; the bound leaves room for the tokens earned before the burst.
    let least = Duration::from_secs_f64(f64::from(sent - burst) / f64::from(rate)) * 3 / 4;
    assert!(
        elapsed >= least,
        "{sent} stanzas passed in {elapsed:?}, less than {least:?}"
    );
}

/// An all-in-one server (with `extra` configuration) where Alice and Bob are
/// chatting, and an account for the client that misbehaves.
pub async fn start_with_bystanders(extra: &str) -> (tempfile::TempDir, Server, Bystanders) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::all_in_one(dir.path(), extra);
    server.ready().await;
    server.add_user("mallory", MALLORY_PASSWORD);
    let bystanders = Bystanders::login(&server).await;
    (dir, server, bystanders)
}

pub struct Bystanders {
    pub alice: RawClient,
    pub bob: RawClient,
    rounds: u32,
}

impl Bystanders {
    /// Creates `alice` and `bob`, logs them in (`alice@…/phone`,
    /// `bob@…/desk`) and makes them available.
    pub async fn login(server: &Server) -> Bystanders {
        server.add_user("alice", "alice-secret");
        server.add_user("bob", "bob-secret");
        let mut alice = RawClient::login(server.c2s, "alice", "alice-secret", "phone").await;
        let mut bob = RawClient::login(server.c2s, "bob", "bob-secret", "desk").await;
        alice.available().await;
        bob.available().await;
        Bystanders {
            alice,
            bob,
            rounds: 0,
        }
    }

    /// Alice and Bob each send the other a message and receive the other's.
    /// Returns everything they read meanwhile, so that a test can also
    /// assert what did *not* reach them.
    pub async fn still_chat(&mut self) -> String {
        self.rounds += 1;
        let round = self.rounds;
        self.alice
            .send(&format!(
                "<message to='bob@{DOMAIN}/desk' type='chat' id='a{round}'><body>from alice {round}</body></message>"
            ))
            .await;
        let mut read = self
            .bob
            .expect(&format!("<body>from alice {round}</body>"))
            .await;
        self.bob
            .send(&format!(
                "<message to='alice@{DOMAIN}/phone' type='chat' id='b{round}'><body>from bob {round}</body></message>"
            ))
            .await;
        read.push_str(
            &self
                .alice
                .expect(&format!("<body>from bob {round}</body>"))
                .await,
        );
        read
    }
}
