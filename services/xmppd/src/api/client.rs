//! An HTTP/1.1 client of the admin API over hyper and rustls: one
//! connection per request (a command makes a few), JSON in and out, and
//! the API's JSON errors as [`ApiError`]s with their stable code.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The path every route is under.
const API_PREFIX: &str = "/api/v1";

/// Where the API is and how to reach it.
pub struct ApiClient {
    /// `https://host:port`, without the API's prefix, for messages.
    origin: String,
    host: String,
    port: u16,
    /// `None` for `http://` (an API served without TLS, `admin.tls = false`).
    tls: Option<Arc<ClientConfig>>,
    /// What every request but a login carries as `Authorization: Bearer`.
    token: Option<String>,
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The stable code (`unknown_account`...), `docs/admin.md`.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (HTTP {})", self.code, self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl ApiClient {
    /// A client of the API at `url` (`https://host:port`, with or without
    /// the `/api/v1` prefix), trusting what `trust` does (asked for an
    /// `https://` URL only).
    pub fn new(
        url: &str,
        trust: impl FnOnce() -> anyhow::Result<Arc<ClientConfig>>,
    ) -> anyhow::Result<ApiClient> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("the admin API's URL {url:?} is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(trust()?),
            Some("http") => None,
            _ => bail!("the admin API's URL {url:?} is not http:// or https://"),
        };
        let path = uri.path().trim_end_matches('/');
        if !path.is_empty() && path != API_PREFIX {
            bail!("the admin API's URL {url:?} has a path other than {API_PREFIX}");
        }
        let Some(host) = uri.host() else {
            bail!("the admin API's URL {url:?} has no host");
        };
        let default_port = if tls.is_some() { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        Ok(ApiClient {
            origin: format!("{}://{host}:{port}", uri.scheme_str().unwrap_or_default()),
            // An IPv6 address is bracketed in a URL, not in a socket address.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            tls,
            token: None,
        })
    }

    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.request(Method::DELETE, path, body).await
    }

    /// `method` on `path` (under `/api/v1`); the answer's JSON (`null` for
    /// none), or the API's error as an [`ApiError`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"))
            .header(header::HOST, format!("{}:{}", self.host, self.port));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body))?;
        let (status, body) = self.exchange(request).await?;
        if status.is_success() {
            return if body.is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_slice(&body).context("the admin API answered something not JSON")
            };
        }
        Err(error_of(status, &body).into())
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| {
                format!(
                    "cannot reach the admin API at {}: is the server running?",
                    self.origin
                )
            })?;
        let Some(tls) = &self.tls else {
            return exchange(tcp, request).await;
        };
        let name = ServerName::try_from(self.host.clone())
            .with_context(|| format!("{:?} is not a host name", self.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with the admin API at {} failed", self.origin))?;
        exchange(stream, request).await
    }
}

/// One request and its answer on a new connection.
async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP with the admin API failed")?;
    // The connection is driven beside the request and ends with it.
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = connection.await;
    Ok((status, body))
}

/// The API's JSON error, or what the answer was if it is none.
fn error_of(status: StatusCode, body: &[u8]) -> ApiError {
    let json: Value = serde_json::from_slice(body).unwrap_or_default();
    let error = &json["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => ApiError {
            status,
            code: code.to_string(),
            message: message.to_string(),
        },
        _ => ApiError {
            status,
            code: "http".to_string(),
            message: String::from_utf8_lossy(body).trim().to_string(),
        },
    }
}

/// `text` as one path segment or query value: everything but RFC 3986's
/// unreserved characters percent-encoded (a JID's `@` and `/` included).
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> anyhow::Result<ApiClient> {
        ApiClient::new(url, || Ok(xmppd_tls::insecure_client_config()))
    }

    #[test]
    fn urls_with_or_without_the_prefix_name_the_same_api() {
        for url in [
            "https://127.0.0.1:5285",
            "https://127.0.0.1:5285/",
            "https://127.0.0.1:5285/api/v1/",
        ] {
            let client = client(url).unwrap();
            assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 5285));
            assert!(client.tls.is_some());
        }
        let plain = client("http://[::1]").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("::1", 80));
        assert!(plain.tls.is_none());
    }

    #[test]
    fn other_urls_are_refused() {
        for url in [
            "ftp://x",
            "127.0.0.1:5285",
            "https://x/elsewhere",
            "not a url",
        ] {
            assert!(client(url).is_err(), "{url}");
        }
    }

    #[test]
    fn errors_carry_the_apis_code_or_the_answer() {
        let body = br#"{"error": {"code": "unknown_room", "message": "no room x"}}"#;
        let error = error_of(StatusCode::NOT_FOUND, body);
        assert_eq!(
            error.to_string(),
            "unknown_room: no room x (HTTP 404 Not Found)"
        );
        let error = error_of(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(
            (error.code.as_str(), error.message.as_str()),
            ("http", "upstream down")
        );
    }

    #[test]
    fn jids_are_one_path_segment() {
        assert_eq!(
            encode("alice@example.org/phone 1"),
            "alice%40example.org%2Fphone%201"
        );
        assert_eq!(encode("é"), "%C3%A9");
    }
}
