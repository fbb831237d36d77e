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

pub const DOMAIN: &str = "localhost";

/// A free TCP port on 127.0.0.1 (released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn xmppd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xmppd"))
}

/// One `xmppd` process; killed when dropped.
pub struct Server {
    child: Child,
    pub c2s: SocketAddr,
    pub c2s_tls: SocketAddr,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub config: PathBuf,
    log: PathBuf,
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
        let c2s: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let c2s_tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::create_dir_all(options.data_dir).unwrap();
        let config = options.data_dir.join(format!("{}-{}.toml", options.role, c2s.port()));
        let toml = format!(
            "[server]\ndomain = \"{DOMAIN}\"\ndata_dir = \"{}\"\n\
             [listen]\nc2s = \"{c2s}\"\nc2s_tls = \"{c2s_tls}\"\ngrpc = \"{grpc}\"\n\
             [observability]\nhttp = \"{http}\"\nlog = \"info\"\n{}\n",
            options.data_dir.display(),
            options.extra
        );
        let toml = merge_sections(&toml);
        std::fs::write(&config, toml).unwrap();
        let log = options.data_dir.join(format!("{}-{}.log", options.role, c2s.port()));
        let child = xmppd()
            .arg("--config")
            .arg(&config)
            .arg(options.role)
            .envs(options.env)
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
            .spawn()
            .expect("start xmppd");
        Server {
            child,
            c2s,
            c2s_tls,
            http,
            grpc,
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
            if http_get(self.http, "/readyz").await.is_some_and(|(status, _)| status == 200) {
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
            .args(["user", "add", &format!("{user}@{DOMAIN}"), "--password", password])
            .output()
            .unwrap();
        assert!(output.status.success(), "user add failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// SIGKILL: the process dies without any clean-up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
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
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())?;
    Some((status, body))
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

    pub async fn open_stream(&mut self) {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await;
        self.expect("</stream:features>").await;
    }

    /// Reads until `needle` has arrived; returns everything read up to and
    /// including it, and keeps the rest for the next call.
    pub async fn expect(&mut self, needle: &str) -> String {
        match self.wait_for(needle, READ_TIMEOUT).await {
            Some(text) => text,
            None => panic!("did not receive {needle:?}; got so far: {:?}", self.received),
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
                Ok(Ok(n)) => self.received.push_str(&String::from_utf8_lossy(&buffer[..n])),
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
                Ok(Ok(n)) => self.received.push_str(&String::from_utf8_lossy(&buffer[..n])),
                Err(_) => return false,
            }
        }
    }

    pub fn pending(&self) -> &str {
        &self.received
    }

    /// Opens a stream, authenticates with PLAIN (the server must allow it
    /// without TLS), and binds `resource`.
    pub async fn login(address: SocketAddr, user: &str, password: &str, resource: &str) -> RawClient {
        let mut client = RawClient::connect(address).await;
        client.open_stream().await;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        client
            .send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"))
            .await;
        client.expect("<success").await;
        client.open_stream().await;
        client
            .send(&format!(
                "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>{resource}</resource></bind></iq>"
            ))
            .await;
        client.expect("</iq>").await;
        client
    }

    /// Sends initial presence and waits for the server's echo of it.
    pub async fn available(&mut self) {
        self.send("<presence/>").await;
        self.expect("<presence").await;
        self.expect(">").await;
    }
}
