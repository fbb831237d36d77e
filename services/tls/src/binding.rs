//! Channel bindings (RFC 5929, RFC 9266) of an established server-side TLS connection, for
//! SCRAM -PLUS.

use rustls::{ProtocolVersion, ServerConnection};
use sha2::{Digest, Sha256, Sha384, Sha512};
use xmppd_sasl::{ChannelBinding, ChannelBindingType};

/// RFC 9266 §2: the exporter label; the context is absent.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
const EXPORTER_LEN: usize = 32;

/// The bindings `conn` supports: tls-exporter once a TLS 1.3 handshake is complete (RFC 9266
/// §3 ties it to TLS 1.3 or to 1.2 with extended master secret, which rustls does not report),
/// and tls-server-end-point always.
///
/// `leaf_cert_der` is our own end-entity certificate, the one `conn` presented.
pub fn channel_bindings(conn: &ServerConnection, leaf_cert_der: &[u8]) -> Vec<ChannelBinding> {
    with_end_point(conn, server_end_point(leaf_cert_der))
}

/// [`channel_bindings`] with the tls-server-end-point data already computed.
pub(crate) fn with_end_point(conn: &ServerConnection, end_point: Vec<u8>) -> Vec<ChannelBinding> {
    let mut bindings = Vec::with_capacity(2);
    if let Some(data) = exporter(conn) {
        bindings.push(ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data,
        });
    }
    bindings.push(ChannelBinding {
        kind: ChannelBindingType::TlsServerEndPoint,
        data: end_point,
    });
    bindings
}

fn exporter(conn: &ServerConnection) -> Option<Vec<u8>> {
    if conn.is_handshaking() || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0; EXPORTER_LEN], EXPORTER_LABEL, None)
        .ok()
}

/// RFC 5929 §4.1: the certificate hashed with its signature's hash function, except that MD5
/// and SHA-1 become SHA-256. Algorithms without a single hash (RSASSA-PSS, whose hash sits in
/// parameters, and EdDSA) also get SHA-256, as other XMPP servers do.
pub(crate) fn server_end_point(leaf_cert_der: &[u8]) -> Vec<u8> {
    match signature_algorithm(leaf_cert_der) {
        Some(oid) if SHA384_SIGNATURES.contains(&oid) => Sha384::digest(leaf_cert_der).to_vec(),
        Some(oid) if SHA512_SIGNATURES.contains(&oid) => Sha512::digest(leaf_cert_der).to_vec(),
        _ => Sha256::digest(leaf_cert_der).to_vec(),
    }
}

/// DER of sha384WithRSAEncryption (1.2.840.113549.1.1.12) and ecdsa-with-SHA384
/// (1.2.840.10045.4.3.3).
const SHA384_SIGNATURES: [&[u8]; 2] = [
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
];
/// DER of sha512WithRSAEncryption (1.2.840.113549.1.1.13) and ecdsa-with-SHA512
/// (1.2.840.10045.4.3.4).
const SHA512_SIGNATURES: [&[u8]; 2] = [
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
];

const DER_SEQUENCE: u8 = 0x30;
const DER_OID: u8 = 0x06;

/// The OID of `Certificate.signatureAlgorithm` (RFC 5280 §4.1.1.2): just enough DER walking to
/// avoid an X.509 parser dependency for one field.
fn signature_algorithm(cert_der: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_element(cert_der, DER_SEQUENCE)?;
    let (_tbs_certificate, rest) = der_element(certificate, DER_SEQUENCE)?;
    let (algorithm_identifier, _) = der_element(rest, DER_SEQUENCE)?;
    let (oid, _) = der_element(algorithm_identifier, DER_OID)?;
    Some(oid)
}

/// Splits the DER element with `tag` off the front of `input`: `(contents, rest)`.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let (len_bytes, rest) = rest.split_at_checked(usize::from(first & 0x7f))?;
        if len_bytes.is_empty() || len_bytes.len() > std::mem::size_of::<usize>() {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        (len, rest)
    };
    rest.split_at_checked(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(algorithm: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.com".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        let p256 = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(server_end_point(&p256), Sha256::digest(&p256).to_vec());
        let p384 = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(server_end_point(&p384), Sha384::digest(&p384).to_vec());
        let ed25519 = self_signed(&rcgen::PKCS_ED25519);
        assert_eq!(
            server_end_point(&ed25519),
            Sha256::digest(&ed25519).to_vec()
        );
    }

    #[test]
    fn garbage_certificates_hash_with_sha256_without_panicking() {
        let p384 = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        for end in 0..p384.len() {
            let truncated = &p384[..end];
            assert_eq!(
                server_end_point(truncated),
                Sha256::digest(truncated).to_vec()
            );
        }
        assert_eq!(der_element(&[0x30, 0x89, 0xff], DER_SEQUENCE), None);
        assert_eq!(der_element(&[0x30, 0x80], DER_SEQUENCE), None);
    }
}
