//! A client connection before or after STARTTLS.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub type Transport = xmppd_tls::MaybeTls<TlsStream<TcpStream>>;
