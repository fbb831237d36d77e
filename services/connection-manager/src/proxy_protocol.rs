//! The PROXY protocol, version 2 (the binary header HAProxy, Envoy and the
//! cloud load balancers send first on a connection they forward): the
//! client's real address, for a connection-manager behind a load balancer
//! that does not keep source addresses. With `listen.proxy_protocol` on,
//! every connection to a client listener must start with one; without it,
//! the connection is closed before a byte of XMPP is read.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first twelve bytes of every version 2 header.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Addresses and TLVs a header may carry: the addresses take at most 216
/// bytes (Unix sockets); TLVs (TLS details, cloud ids) are skipped, but not
/// without bound.
const MAX_PAYLOAD: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY protocol v2 header")]
    NoHeader,
    #[error("PROXY header with version/command {0:#04x}")]
    Unsupported(u8),
    #[error("PROXY header of {0} bytes, more than allowed")]
    TooLong(usize),
    #[error("PROXY header too short for its address family")]
    Truncated,
    #[error("no PROXY header within the time allowed")]
    TimedOut,
    #[error("i/o: {0}")]
    Io(String),
}

/// Reads the header at the start of `stream` within `timeout`: the client's
/// address, or `None` when the proxy speaks for itself (a `LOCAL` health
/// check, or an address family other than TCP over IPv4 or IPv6), in which
/// case the connection's own peer address stands.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(timeout, read(stream))
        .await
        .map_err(|_| ProxyError::TimedOut)?
}

/// Reads exactly the header's bytes, so that what follows is the client's.
async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, ProxyError> {
    let io = |error: std::io::Error| ProxyError::Io(error.to_string());
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await.map_err(io)?;
    let length = payload_length(&fixed)?;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.map_err(io)?;
    parse(&fixed, &payload)
}

/// The length of the payload after the fixed 16 bytes.
fn payload_length(fixed: &[u8; 16]) -> Result<usize, ProxyError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyError::NoHeader);
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if length > MAX_PAYLOAD {
        return Err(ProxyError::TooLong(length));
    }
    Ok(length)
}

/// The source address a whole header (its fixed part and payload) names.
fn parse(fixed: &[u8; 16], payload: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    match fixed[12] {
        // Version 2, LOCAL: the proxy's own connection.
        0x20 => return Ok(None),
        // Version 2, PROXY.
        0x21 => {}
        other => return Err(ProxyError::Unsupported(other)),
    }
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    match (fixed[13], payload.len()) {
        // TCP over IPv4: source, destination, source port, destination port.
        (0x11, 12..) => {
            let source: [u8; 4] = payload[..4].try_into().expect("four bytes");
            Ok(Some(SocketAddr::new(
                Ipv4Addr::from(source).into(),
                port(8),
            )))
        }
        // TCP over IPv6.
        (0x21, 36..) => {
            let source: [u8; 16] = payload[..16].try_into().expect("sixteen bytes");
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(source).into(),
                port(32),
            )))
        }
        (0x11 | 0x21, _) => Err(ProxyError::Truncated),
        // UNSPEC, UDP, Unix sockets: no client address to take.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// A version 2 PROXY header for TCP from `source` to 10.0.0.1:5222.
    fn header(source: SocketAddr) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.push(0x21);
        let mut payload = Vec::new();
        match source.ip() {
            IpAddr::V4(ip) => {
                out.push(0x11);
                payload.extend(ip.octets());
                payload.extend([10, 0, 0, 1]);
            }
            IpAddr::V6(ip) => {
                out.push(0x21);
                payload.extend(ip.octets());
                payload.extend(Ipv6Addr::LOCALHOST.octets());
            }
        }
        payload.extend(source.port().to_be_bytes());
        payload.extend(5222u16.to_be_bytes());
        out.extend((payload.len() as u16).to_be_bytes());
        out.extend(payload);
        out
    }

    async fn read_all(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut stream = bytes;
        let result = read_header(&mut stream, Duration::from_secs(1)).await;
        (result, stream.to_vec())
    }

    #[tokio::test]
    async fn the_source_address_is_read_and_the_rest_left_for_the_stream() {
        for source in ["192.0.2.7:40000", "[2001:db8::9]:40001"] {
            let source: SocketAddr = source.parse().unwrap();
            let mut bytes = header(source);
            bytes.extend(b"<stream:stream");
            let (result, rest) = read_all(&bytes).await;
            assert_eq!(result, Ok(Some(source)));
            assert_eq!(rest, b"<stream:stream");
        }
    }

    #[tokio::test]
    async fn a_local_header_keeps_the_connection_address() {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend([0x20, 0x00, 0x00, 0x00]);
        assert_eq!(read_all(&bytes).await.0, Ok(None));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let (plain, _) = read_all(b"<?xml version='1.0'?><stream:stream>").await;
        assert_eq!(plain, Err(ProxyError::NoHeader));
        // Version 1's text header is not accepted.
        let (v1, _) = read_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 4000 5222\r\n").await;
        assert_eq!(v1, Err(ProxyError::NoHeader));
        let mut long = SIGNATURE.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        assert_eq!(read_all(&long).await.0, Err(ProxyError::TooLong(0xffff)));
        let mut short = SIGNATURE.to_vec();
        short.extend([0x21, 0x11, 0x00, 0x04, 192, 0, 2, 7]);
        assert_eq!(read_all(&short).await.0, Err(ProxyError::Truncated));
        let mut command = header("192.0.2.7:1".parse().unwrap());
        command[12] = 0x22;
        assert_eq!(
            read_all(&command).await.0,
            Err(ProxyError::Unsupported(0x22))
        );
    }
}
