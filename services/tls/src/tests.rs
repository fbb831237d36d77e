use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use xmppd_sasl::ChannelBindingType;

use super::*;
use crate::insecure::insecure_client_config_for;

/// What each side saw of one loopback handshake.
struct Handshake {
    server_alpn: Option<Vec<u8>>,
    server_bindings: Vec<ChannelBinding>,
    server_kind: Option<rustls::HandshakeKind>,
    suite: rustls::CipherSuite,
    client_alpn: Option<Vec<u8>>,
    client_exporter: Option<Vec<u8>>,
    leaf_der: Vec<u8>,
}

async fn handshake(tls: &ServerTls, client: ClientConfig, server_name: &str) -> Handshake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (acceptor, server_tls) = (tls.acceptor(), tls.clone());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await.unwrap();
        stream.write_all(b"x").await.unwrap();
        stream.flush().await.unwrap();
        let (_, conn) = stream.get_ref();
        (
            conn.alpn_protocol().map(<[u8]>::to_vec),
            server_tls.channel_bindings(conn),
            conn.handshake_kind(),
            conn.negotiated_cipher_suite().unwrap().suite(),
        )
    });
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut stream = TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    // Reading after the handshake takes in whatever the server sent after it (tickets).
    stream.read_exact(&mut [0u8]).await.unwrap();
    let (_, conn) = stream.get_ref();
    let client_exporter = conn
        .export_keying_material(vec![0; 32], b"EXPORTER-Channel-Binding", None)
        .ok();
    let (server_alpn, server_bindings, server_kind, suite) = server.await.unwrap();
    Handshake {
        server_alpn,
        server_bindings,
        server_kind,
        suite,
        client_alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        client_exporter,
        leaf_der: conn.peer_certificates().unwrap()[0].to_vec(),
    }
}

fn binding(bindings: &[ChannelBinding], kind: ChannelBindingType) -> Option<&[u8]> {
    bindings
        .iter()
        .find(|b| b.kind == kind)
        .map(|b| b.data.as_slice())
}

fn generated(dir: &Path) -> ServerTls {
    ServerTls::load("localhost", None, None, dir).unwrap()
}

#[tokio::test]
async fn tls13_handshake_negotiates_alpn_and_both_sides_agree_on_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let tls = generated(dir.path());
    let seen = handshake(&tls, insecure_client_config().as_ref().clone(), "localhost").await;

    assert_eq!(seen.server_alpn.as_deref(), Some(XMPP_CLIENT_ALPN));
    assert_eq!(seen.client_alpn.as_deref(), Some(XMPP_CLIENT_ALPN));
    let exporter = binding(&seen.server_bindings, ChannelBindingType::TlsExporter).unwrap();
    assert_eq!(exporter.len(), 32);
    assert_eq!(Some(exporter), seen.client_exporter.as_deref());
    let end_point = binding(&seen.server_bindings, ChannelBindingType::TlsServerEndPoint);
    assert_eq!(end_point, Some(Sha256::digest(&seen.leaf_der).as_slice()));
}

#[tokio::test]
async fn tls12_connections_offer_only_the_end_point_binding() {
    let dir = tempfile::tempdir().unwrap();
    let tls = generated(dir.path());
    let client = insecure_client_config_for(&[&rustls::version::TLS12]);
    let seen = handshake(&tls, client, "localhost").await;

    assert_eq!(seen.server_alpn.as_deref(), Some(XMPP_CLIENT_ALPN));
    let kinds: Vec<_> = seen.server_bindings.iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [ChannelBindingType::TlsServerEndPoint]);
}

#[tokio::test]
async fn clients_without_alpn_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let tls = generated(dir.path());
    let mut client = insecure_client_config().as_ref().clone();
    client.alpn_protocols.clear();
    let seen = handshake(&tls, client, "localhost").await;
    assert_eq!(seen.server_alpn, None);
}

#[tokio::test]
async fn generated_localhost_certificate_verifies_for_its_ip_san() {
    let dir = tempfile::tempdir().unwrap();
    let files = load_or_generate("localhost", None, None, dir.path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(files.chain[0].clone()).unwrap();
    let tls = ServerTls::from_files(files).unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let seen = handshake(&tls, client, "127.0.0.1").await;
    assert!(!seen.leaf_der.is_empty());
}

#[test]
fn generated_certificate_is_persisted_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = load_or_generate("example.com", None, None, dir.path()).unwrap();
    let second = load_or_generate("example.com", None, None, dir.path()).unwrap();
    assert_eq!(first.chain, second.chain);
    assert_eq!(first.cert_path, dir.path().join("example.com.tls/cert.pem"));
    assert_eq!(first.key_path, dir.path().join("example.com.tls/key.pem"));

    // The persisted files work as configured ones too.
    let configured = load_or_generate(
        "ignored",
        Some(&first.cert_path),
        Some(&first.key_path),
        dir.path(),
    );
    assert_eq!(configured.unwrap().chain, first.chain);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&first.key_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    }
}

#[test]
fn generation_creates_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    assert!(ServerTls::load("example.com", None, None, &data_dir).is_ok());
    assert!(data_dir.join("example.com.tls/cert.pem").exists());
}

#[test]
fn a_pair_generated_by_an_older_version_is_still_used() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = certs::generate("example.com").unwrap();
    std::fs::write(dir.path().join("example.com.crt.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("example.com.key.pem"), &key_pem).unwrap();
    let files = load_or_generate("example.com", None, None, dir.path()).unwrap();
    assert_eq!(files.cert_path, dir.path().join("example.com.crt.pem"));
    assert!(!dir.path().join("example.com.tls").exists());
    assert!(ServerTls::from_files(files).is_ok());
}

#[test]
fn missing_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("missing.crt.pem");
    let key = dir.path().join("missing.key.pem");
    let error = server_config("example.com", Some(&cert), Some(&key), dir.path()).unwrap_err();
    assert!(matches!(error, TlsError::Read { .. }));
    assert!(error.to_string().contains("missing.crt.pem"), "{error}");
}

#[test]
fn files_without_pem_blocks_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let files = load_or_generate("example.com", None, None, dir.path()).unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem at all\n").unwrap();

    let error = load_or_generate("x", Some(&junk), Some(&files.key_path), dir.path()).unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    assert!(error.to_string().contains("junk.pem"));
    let error = load_or_generate("x", Some(&files.cert_path), Some(&junk), dir.path()).unwrap_err();
    assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = load_or_generate("a.example", None, None, dir.path()).unwrap();
    let b = load_or_generate("b.example", None, None, dir.path()).unwrap();
    let error =
        ServerTls::load("x", Some(&a.cert_path), Some(&b.key_path), dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TlsError::InvalidKeyPair { .. }),
        "{message}"
    );
    assert!(
        message.contains("a.example.tls/cert.pem") && message.contains("b.example.tls/key.pem")
    );
}

#[test]
fn certificate_and_key_must_be_configured_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("only.pem");
    let error = load_or_generate("example.com", Some(&path), None, dir.path()).unwrap_err();
    assert!(matches!(
        error,
        TlsError::IncompleteConfig {
            configured: "certificate"
        }
    ));
    let error = load_or_generate("example.com", None, Some(&path), dir.path()).unwrap_err();
    assert!(matches!(
        error,
        TlsError::IncompleteConfig { configured: "key" }
    ));
}

#[test]
fn domains_that_are_not_file_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for domain in ["", "../etc", "a/b", ".hidden", "caf\u{e9}.example"] {
        let error = load_or_generate(domain, None, None, dir.path()).unwrap_err();
        assert!(
            matches!(error, TlsError::InvalidDomain { .. }),
            "{domain:?}: {error}"
        );
    }
}

/// A client that would resume (rustls' default client keeps the tickets it is sent, and
/// its clones share them) gets a full handshake every time: the server issues no tickets
/// and keeps no sessions.
#[tokio::test]
async fn no_session_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let tls = generated(dir.path());
    let client = insecure_client_config_for(rustls::DEFAULT_VERSIONS);
    for _ in 0..3 {
        let seen = handshake(&tls, client.clone(), "localhost").await;
        assert_eq!(seen.server_kind, Some(rustls::HandshakeKind::Full));
    }
}

/// Clients that list AES-256-GCM first, as rustls' does, get AES-128-GCM: the server's
/// order decides, in TLS 1.3 and 1.2.
#[tokio::test]
async fn the_server_prefers_aes_128_gcm() {
    let dir = tempfile::tempdir().unwrap();
    let tls = generated(dir.path());
    for (version, expected) in [
        (
            &rustls::version::TLS13,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let client = insecure_client_config_for(&[version]);
        assert_eq!(handshake(&tls, client, "localhost").await.suite, expected);
    }
}

#[test]
fn concurrent_generators_on_one_directory_all_get_one_matching_pair() {
    const GENERATORS: usize = 16;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(GENERATORS);
        let loaded: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..GENERATORS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        let files = load_or_generate("example.com", None, None, dir.path())?;
                        let chain = files.chain.clone();
                        // The server config refuses a key that is not the certificate's.
                        ServerTls::from_files(files).map(|_| chain)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let chains: Vec<_> = loaded
            .into_iter()
            .map(|result| result.unwrap_or_else(|error| panic!("a generator failed: {error}")))
            .collect();
        assert!(
            chains.windows(2).all(|pair| pair[0] == pair[1]),
            "generators ended with different certificates"
        );
    }
}
