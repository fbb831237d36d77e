//! A client of the admin API: HTTPS on loopback, one request per
//! connection, JSON in and out.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DOMAIN, Server, xmppd};

/// The admin API of one server, with the token requests carry (if any).
#[derive(Clone)]
pub struct AdminApi {
    pub address: SocketAddr,
    pub token: Option<String>,
}

/// An answer: status and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// Asserts an error answer with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "answer: {:?}",
            self.body
        );
    }
}

impl AdminApi {
    pub fn of(server: &Server) -> AdminApi {
        AdminApi {
            address: server.admin,
            token: None,
        }
    }

    pub fn with_token(&self, token: &str) -> AdminApi {
        AdminApi {
            address: self.address,
            token: Some(token.to_string()),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.request("POST", path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.request("PUT", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None).await
    }

    /// Logs in with a password; the API with the login token.
    pub async fn login(&self, user: &str, password: &str) -> AdminApi {
        let answer = self
            .post(
                "/api/v1/auth/login",
                json!({"jid": format!("{user}@{DOMAIN}"), "password": password}),
            )
            .await;
        assert_eq!(answer.status, 201, "login failed: {:?}", answer.body);
        self.with_token(answer.body["token"].as_str().unwrap())
    }

    /// Waits until the API answers (the server may still be starting).
    pub async fn wait_until_up(&self) {
        for _ in 0..300 {
            if self.connect().await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("admin API at {} never came up", self.address);
    }

    async fn connect(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut config = (*xmppd_tls::insecure_client_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.address).await?;
        let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
        connector.connect(name, tcp).await
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut tls = self.connect().await.expect("connect to the admin API");
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        // The server may close without close_notify once it has answered.
        let _ = tls.read_to_end(&mut response).await;
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {response:?}"));
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
        };
        Answer { status, body }
    }
}

/// `xmppd admin grant|revoke` against `server`'s configuration.
pub fn set_admin(server: &Server, user: &str, grant: bool) {
    let output = xmppd()
        .arg("--config")
        .arg(&server.config)
        .args([
            "admin",
            if grant { "grant" } else { "revoke" },
            &format!("{user}@{DOMAIN}"),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "admin grant/revoke failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A JID, group name or cursor as a path segment or query value: every
/// byte but RFC 3986's unreserved characters percent-encoded.
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
