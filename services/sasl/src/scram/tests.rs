use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;

use super::*;
use crate::decoy::DecoySecret;
use crate::derive_keys;
use crate::mechanism::ChannelBindingType;

const EXPORTER: [u8; 32] = [7; 32];
const DECOY_ITERATIONS: u32 = 10_000;

/// What every connection-manager of one deployment answers unknown accounts with.
fn decoys() -> Decoys<'static> {
    static SECRET: std::sync::LazyLock<DecoySecret> = std::sync::LazyLock::new(|| {
        DecoySecret::new(b"the deployment's decoy secret".to_vec()).unwrap()
    });
    Decoys {
        secret: &SECRET,
        iterations: DECOY_ITERATIONS,
    }
}

fn keys(hash: ScramHash, salt_b64: &str) -> ScramKeys {
    derive_keys(hash, "pencil", &BASE64.decode(salt_b64).unwrap(), 4096).unwrap()
}

fn sha256_keys() -> ScramKeys {
    keys(ScramHash::Sha256, "W22ZaJ0SNY7soEsUEjb6gQ==")
}

fn exporter_binding() -> Vec<ChannelBinding> {
    vec![ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: EXPORTER.to_vec(),
    }]
}

/// A SCRAM client, enough to answer any server-first with `password`.
fn client_final(
    hash: ScramHash,
    password: &str,
    client_first: &str,
    server_first: &[u8],
    cbind_input: &[u8],
) -> Vec<u8> {
    let server_first = std::str::from_utf8(server_first).unwrap();
    let mut attrs = server_first.split(',');
    let nonce = attrs.next().unwrap().strip_prefix("r=").unwrap();
    let salt = BASE64
        .decode(attrs.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let iterations = attrs
        .next()
        .unwrap()
        .strip_prefix("i=")
        .unwrap()
        .parse()
        .unwrap();
    let prepared = OpaqueString::enforce(password).unwrap();
    let salted = hash.salted_password(prepared.as_bytes(), &salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    let stored_key = hash.digest(&client_key);
    let without_proof = format!("c={},r={nonce}", BASE64.encode(cbind_input));
    let bare = client_first.splitn(3, ',').nth(2).unwrap();
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hash.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes()
}

/// Runs a whole exchange as a client that knows `password` and binds to `cbind_data`.
fn run(
    mut server: ScramServer,
    client_first: &str,
    keys: Option<ScramKeys>,
    password: &str,
    cbind_data: &[u8],
) -> Result<Vec<u8>, SaslError> {
    let hash = server.mechanism.scram_hash().unwrap();
    server.client_first(client_first.as_bytes())?;
    let server_first = server.server_first(keys, decoys());
    let gs2_header_len = client_first.len() - client_first.splitn(3, ',').nth(2).unwrap().len();
    let mut cbind_input = client_first.as_bytes()[..gs2_header_len].to_vec();
    cbind_input.extend_from_slice(cbind_data);
    let message = client_final(hash, password, client_first, &server_first, &cbind_input);
    server.client_final(&message)
}

#[test]
fn rfc5802_scram_sha1_example() {
    let mut server =
        ScramServer::with_nonce(Mechanism::ScramSha1, vec![], false, "3rfcNHYJY1ZVvWVs7j");
    let first = server
        .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        .unwrap();
    assert_eq!(
        first,
        ClientFirst {
            username: "user".into(),
            authzid: None
        }
    );
    let server_first =
        server.server_first(Some(keys(ScramHash::Sha1, "QSXCR+Q6sek8bf92")), decoys());
    assert_eq!(
        server_first,
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        )
        .unwrap();
    assert_eq!(server_final, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

#[test]
fn rfc7677_scram_sha256_example() {
    let mut server = ScramServer::with_nonce(
        Mechanism::ScramSha256,
        vec![],
        false,
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    );
    server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(
        server.server_first(Some(sha256_keys()), decoys()),
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let server_final = server
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn random_server_nonce_exchange_succeeds() {
    let server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let result = run(
        server,
        "n,,n=user,r=abc",
        Some(sha256_keys()),
        "pencil",
        b"",
    );
    assert!(result.unwrap().starts_with(b"v="));
}

#[test]
fn wrong_password_is_not_authorized() {
    let server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let result = run(
        server,
        "n,,n=user,r=abc",
        Some(sha256_keys()),
        "pencil2",
        b"",
    );
    assert_eq!(result, Err(SaslError::NotAuthorized));
}

#[test]
fn unknown_user_gets_a_stable_plausible_challenge_and_fails_at_the_end() {
    let challenge = |username: &str| {
        let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
        server
            .client_first(format!("n,,n={username},r=abc").as_bytes())
            .unwrap();
        let server_first = String::from_utf8(server.server_first(None, decoys())).unwrap();
        let salt = server_first.split(',').nth(1).unwrap().to_owned();
        assert!(server_first.ends_with(&format!(",i={DECOY_ITERATIONS}")));
        assert_eq!(
            BASE64
                .decode(salt.strip_prefix("s=").unwrap())
                .unwrap()
                .len(),
            16
        );
        salt
    };
    assert_eq!(challenge("nobody"), challenge("nobody"));
    assert_ne!(challenge("nobody"), challenge("somebody"));

    let server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let result = run(server, "n,,n=nobody,r=abc", None, "pencil", b"");
    assert_eq!(result, Err(SaslError::NotAuthorized));
}

#[test]
fn keys_for_another_hash_are_treated_as_unknown_user() {
    let sha1_keys = keys(ScramHash::Sha1, "QSXCR+Q6sek8bf92");
    let server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let result = run(server, "n,,n=user,r=abc", Some(sha1_keys), "pencil", b"");
    assert_eq!(result, Err(SaslError::NotAuthorized));
}

#[test]
fn tls_exporter_binding_with_right_data_succeeds() {
    let server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_binding(), true);
    let first = "p=tls-exporter,,n=user,r=abc";
    assert!(run(server, first, Some(sha256_keys()), "pencil", &EXPORTER).is_ok());
}

#[test]
fn tls_exporter_binding_with_wrong_data_is_not_authorized() {
    let server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_binding(), true);
    let first = "p=tls-exporter,,n=user,r=abc";
    let result = run(server, first, Some(sha256_keys()), "pencil", &[8; 32]);
    assert_eq!(result, Err(SaslError::NotAuthorized));
}

#[test]
fn binding_type_this_connection_lacks_is_refused_as_unsupported() {
    let mut server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_binding(), true);
    let result = server.client_first(b"p=tls-server-end-point,,n=user,r=abc");
    assert_eq!(result, Err(SaslError::UnsupportedChannelBindingType));
}

#[test]
fn tls_unique_on_tls13_is_an_unsupported_binding_type_not_a_wrong_password() {
    // What slixmpp sends for SCRAM-SHA-256-PLUS, whatever the TLS version.
    let mut server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_binding(), true);
    let error = server
        .client_first(b"p=tls-unique,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        .unwrap_err();
    assert_eq!(error, SaslError::UnsupportedChannelBindingType);
    assert_eq!(
        error.scram_server_error(),
        Some("unsupported-channel-binding-type")
    );
    assert_ne!(error, SaslError::NotAuthorized);
    // The exchange is over: it cannot be resumed.
    assert_eq!(
        server.client_final(b"c=biws,r=x,p=eA=="),
        Err(SaslError::Aborted)
    );
}

#[test]
fn y_flag_when_plus_was_advertised_is_a_downgrade() {
    let mut server = ScramServer::new(Mechanism::ScramSha256, exporter_binding(), true);
    assert_eq!(
        server.client_first(b"y,,n=user,r=abc"),
        Err(SaslError::NotAuthorized)
    );
}

#[test]
fn y_flag_without_plus_advertised_is_accepted() {
    let server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    assert!(
        run(
            server,
            "y,,n=user,r=abc",
            Some(sha256_keys()),
            "pencil",
            b""
        )
        .is_ok()
    );
}

#[test]
fn plus_mechanism_without_binding_is_refused() {
    for flag in ["n", "y"] {
        let mut server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_binding(), true);
        let message = format!("{flag},,n=user,r=abc");
        assert_eq!(
            server.client_first(message.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }
}

#[test]
fn binding_inside_a_non_plus_mechanism_is_malformed() {
    let mut server = ScramServer::new(Mechanism::ScramSha256, exporter_binding(), true);
    let result = server.client_first(b"p=tls-exporter,,n=user,r=abc");
    assert_eq!(result, Err(SaslError::MalformedRequest));
}

#[test]
fn saslnames_are_unescaped_and_username_prepared() {
    let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let first = server
        .client_first(b"n,a=juliet=3D@example.com,n=Us=2Ce=3Dr,r=abc")
        .unwrap();
    assert_eq!(first.username, "us,e=r");
    assert_eq!(first.authzid.as_deref(), Some("juliet=@example.com"));
}

#[test]
fn authzid_is_carried_through_a_successful_exchange() {
    let server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let first = "n,a=user@example.com,n=user,r=abc";
    assert!(run(server, first, Some(sha256_keys()), "pencil", b"").is_ok());
}

#[test]
fn tampered_nonce_is_not_authorized() {
    let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    let client_first = "n,,n=user,r=abc";
    server.client_first(client_first.as_bytes()).unwrap();
    let server_first = server.server_first(Some(sha256_keys()), decoys());
    let tampered = String::from_utf8(server_first)
        .unwrap()
        .replacen("r=abc", "r=abd", 1);
    let message = client_final(
        ScramHash::Sha256,
        "pencil",
        client_first,
        tampered.as_bytes(),
        b"n,,",
    );
    assert_eq!(server.client_final(&message), Err(SaslError::NotAuthorized));
}

#[test]
fn malformed_client_first_is_rejected() {
    let cases: &[&[u8]] = &[
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"n,b=admin,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=user",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,r=abc,n=user",
        b"n,,n=us=er,r=abc",
        b"n,,n=user=2,r=abc",
        b"n,,n=user=,r=abc",
        b"n,,n=us=2cer,r=abc",
        b"n,,n=user,r=a b",
        b"n,,n=user,r=caf\xc3\xa9",
        b"n,,n=\xff,r=abc",
        b"n,,n=a\x07b,r=abc",
    ];
    for case in cases {
        let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
        assert!(
            server.client_first(case).is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn malformed_client_final_is_rejected() {
    let cases: &[&[u8]] = &[
        b"",
        b",",
        b"p=abc",
        b"c=biws,p=abc",
        b"r=abc,c=biws,p=AAAA",
        b"c=biws,r=abc,x=AAAA",
        b"c=!!!,r=abc,p=AAAA",
        b"c=biws,r=abc,p=!!!",
        b"c=biws,r=abc,p=\xff",
    ];
    for case in cases {
        let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
        server.client_first(b"n,,n=user,r=abc").unwrap();
        server.server_first(Some(sha256_keys()), decoys());
        assert!(
            server.client_final(case).is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(case)
        );
    }
}

/// Every truncation of `message`, and `message` with one odd byte inserted anywhere.
fn mangled(message: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in 0..=message.len() {
        out.push(message[..at].to_vec());
        for odd in [b'=', b',', 0, 0xff] {
            let mut input = message[..at].to_vec();
            input.push(odd);
            input.extend_from_slice(&message[at..]);
            out.push(input);
        }
    }
    out
}

#[test]
fn mangled_messages_never_panic() {
    let keys = sha256_keys();
    let client_first = "p=tls-exporter,a=x=2Cy,n=user,r=abc";
    let challenged = || {
        let mut server =
            ScramServer::with_nonce(Mechanism::ScramSha256Plus, exporter_binding(), true, "xyz");
        server.client_first(client_first.as_bytes()).unwrap();
        let server_first = server.server_first(Some(keys.clone()), decoys());
        (server, server_first)
    };
    let (_, server_first) = challenged();
    let mut cbind_input = b"p=tls-exporter,a=x=2Cy,".to_vec();
    cbind_input.extend_from_slice(&EXPORTER);
    let valid_final = client_final(
        ScramHash::Sha256,
        "pencil",
        client_first,
        &server_first,
        &cbind_input,
    );

    for input in mangled(client_first.as_bytes()) {
        let mut server = ScramServer::new(Mechanism::ScramSha256Plus, exporter_binding(), true);
        let _ = server.client_first(&input);
    }
    for input in mangled(&valid_final) {
        let (mut server, _) = challenged();
        let accepted = server.client_final(&input).is_ok();
        assert_eq!(
            accepted,
            input == valid_final,
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn steps_out_of_order_abort_the_exchange() {
    let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    assert!(
        server
            .server_first(Some(sha256_keys()), decoys())
            .is_empty()
    );
    assert_eq!(
        server.client_first(b"n,,n=user,r=abc"),
        Err(SaslError::Aborted)
    );

    let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    server.client_first(b"n,,n=user,r=abc").unwrap();
    assert_eq!(
        server.client_final(b"c=biws,r=abc,p=AAAA"),
        Err(SaslError::Aborted)
    );
}

#[test]
fn a_failed_exchange_cannot_be_resumed() {
    let mut server = ScramServer::new(Mechanism::ScramSha256, vec![], false);
    assert!(server.client_first(b"garbage").is_err());
    assert_eq!(
        server.client_first(b"n,,n=user,r=abc"),
        Err(SaslError::Aborted)
    );
}

#[test]
fn plain_is_not_a_scram_mechanism() {
    let mut server = ScramServer::new(Mechanism::Plain, vec![], false);
    assert_eq!(
        server.client_first(b"n,,n=user,r=abc"),
        Err(SaslError::InvalidMechanism)
    );
}
