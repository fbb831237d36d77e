//! The client side of SASL: SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) without
//! channel binding, and PLAIN (RFC 4616).
//!
//! `xmppd-sasl` holds the server side; its key derivation stops at StoredKey, while a client
//! needs ClientKey itself to build the proof, so the few lines of math live here.
//!
//! PBKDF2 costs milliseconds and a load tool logs the same users in again and again, so the
//! salted keys are cached per (hash, password, salt, iterations): a server keeps one salt per
//! account, which makes every login after the first one cheap for the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What went wrong in an exchange; the caller turns it into an error kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslClientError {
    #[error("malformed server message: {0}")]
    Malformed(&'static str),
    #[error("server nonce does not extend ours")]
    NonceMismatch,
    #[error("server signature does not verify")]
    BadServerSignature,
    #[error("server reported: {0}")]
    ServerError(String),
}

/// A mechanism the tool can run.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Mechanism {
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-1")]
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::Plain => "PLAIN",
        }
    }

    /// The strongest mechanism of `offered` that we implement.
    pub fn best_of<'a>(offered: impl IntoIterator<Item = &'a str> + Clone) -> Option<Self> {
        [Self::ScramSha256, Self::ScramSha1, Self::Plain]
            .into_iter()
            .find(|m| offered.clone().into_iter().any(|o| o == m.name()))
    }
}

/// The PLAIN initial response: `authzid NUL authcid NUL password`, with no authzid.
pub fn plain_response(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => {
                let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("hmac takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Self::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha1 => {
                pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(password, salt, iterations).to_vec()
            }
            Self::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// ClientKey and ServerKey of one (password, salt, iterations): all a client needs.
#[derive(Clone, Debug)]
struct ClientKeys {
    client_key: Vec<u8>,
    server_key: Vec<u8>,
}

type KeyCacheKey = (Hash, String, Vec<u8>, u32);

fn key_cache() -> &'static Mutex<HashMap<KeyCacheKey, Arc<ClientKeys>>> {
    static CACHE: OnceLock<Mutex<HashMap<KeyCacheKey, Arc<ClientKeys>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The server's first message, parsed, with what the proof needs.
#[derive(Debug)]
pub struct ServerFirst {
    hash: Hash,
    password: String,
    salt: Vec<u8>,
    iterations: u32,
    /// `client-first-bare "," server-first "," client-final-without-proof`.
    auth_message: String,
    client_final_without_proof: String,
}

impl ServerFirst {
    /// Whether [`ServerFirst::finish`] would run PBKDF2 (so the caller moves it off the
    /// async thread) or only a few HMACs.
    pub fn needs_pbkdf2(&self) -> bool {
        let key = (
            self.hash,
            self.password.clone(),
            self.salt.clone(),
            self.iterations,
        );
        !key_cache().lock().expect("key cache").contains_key(&key)
    }

    /// Computes the client-final message and the ServerSignature expected back.
    pub fn finish(self) -> ClientFinal {
        let keys = self.keys();
        let stored_key = self.hash.digest(&keys.client_key);
        let client_signature = self.hash.hmac(&stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let message = format!(
            "{},p={}",
            self.client_final_without_proof,
            B64.encode(proof)
        );
        let server_signature = self
            .hash
            .hmac(&keys.server_key, self.auth_message.as_bytes());
        ClientFinal {
            message: message.into_bytes(),
            server_signature,
        }
    }

    fn keys(&self) -> Arc<ClientKeys> {
        let key = (
            self.hash,
            self.password.clone(),
            self.salt.clone(),
            self.iterations,
        );
        if let Some(keys) = key_cache().lock().expect("key cache").get(&key) {
            return keys.clone();
        }
        let salted =
            self.hash
                .salted_password(self.password.as_bytes(), &self.salt, self.iterations);
        let keys = Arc::new(ClientKeys {
            client_key: self.hash.hmac(&salted, b"Client Key"),
            server_key: self.hash.hmac(&salted, b"Server Key"),
        });
        key_cache()
            .lock()
            .expect("key cache")
            .insert(key, keys.clone());
        keys
    }
}

/// The client-final message and what the server must answer with.
#[derive(Debug)]
pub struct ClientFinal {
    pub message: Vec<u8>,
    server_signature: Vec<u8>,
}

impl ClientFinal {
    /// Checks the server-final message (`v=...` or `e=...`): a server that cannot prove it
    /// knows the keys is not trusted, as in any real client.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), SaslClientError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| SaslClientError::Malformed("server-final is not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslClientError::ServerError(error.to_owned()));
        }
        let verifier = text
            .split(',')
            .find_map(|part| part.strip_prefix("v="))
            .ok_or(SaslClientError::Malformed("server-final without v="))?;
        let signature = B64
            .decode(verifier)
            .map_err(|_| SaslClientError::Malformed("server signature is not base64"))?;
        if signature == self.server_signature {
            Ok(())
        } else {
            Err(SaslClientError::BadServerSignature)
        }
    }
}

/// One SCRAM exchange from the client's side, before the server's first message.
#[derive(Debug)]
pub struct ScramClient {
    hash: Hash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
}

impl ScramClient {
    /// Starts an exchange for `username` (ASCII account names need no SASLprep escaping
    /// beyond `=` and `,`). `mechanism` must be a SCRAM one.
    pub fn new(mechanism: Mechanism, username: &str, password: &str) -> Self {
        let mut nonce = [0u8; 18];
        rand::rng().fill_bytes(&mut nonce);
        Self::with_nonce(mechanism, username, password, &B64.encode(nonce))
    }

    fn with_nonce(mechanism: Mechanism, username: &str, password: &str, nonce: &str) -> Self {
        let hash = match mechanism {
            Mechanism::ScramSha1 => Hash::Sha1,
            Mechanism::ScramSha256 | Mechanism::Plain => Hash::Sha256,
        };
        debug_assert!(mechanism != Mechanism::Plain, "PLAIN is not SCRAM");
        let username = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            hash,
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!("n={username},r={nonce}"),
        }
    }

    /// The client-first message: no channel binding, no authzid.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Parses server-first (`r=...,s=...,i=...`).
    pub fn server_first(self, message: &[u8]) -> Result<ServerFirst, SaslClientError> {
        let text = std::str::from_utf8(message)
            .map_err(|_| SaslClientError::Malformed("server-first is not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for part in text.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = Some(v),
                Some(("i=", v)) => iterations = Some(v),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(SaslClientError::Malformed("server-first without r="))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(SaslClientError::NonceMismatch);
        }
        let salt = B64
            .decode(salt.ok_or(SaslClientError::Malformed("server-first without s="))?)
            .map_err(|_| SaslClientError::Malformed("salt is not base64"))?;
        let iterations = iterations
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|&i| i > 0)
            .ok_or(SaslClientError::Malformed("bad iteration count"))?;
        // "biws" is base64("n,,"): the GS2 header without channel binding.
        let client_final_without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, text, client_final_without_proof
        );
        Ok(ServerFirst {
            hash: self.hash,
            password: self.password,
            salt,
            iterations,
            auth_message,
            client_final_without_proof,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(
        mechanism: Mechanism,
        nonce: &str,
        server_first: &str,
        expected_final: &str,
        server_final: &str,
    ) {
        let client = ScramClient::with_nonce(mechanism, "user", "pencil", nonce);
        assert_eq!(
            client.client_first(),
            format!("n,,n=user,r={nonce}").into_bytes()
        );
        let first = client.server_first(server_first.as_bytes()).unwrap();
        let fin = first.finish();
        assert_eq!(
            String::from_utf8(fin.message.clone()).unwrap(),
            expected_final
        );
        fin.verify(server_final.as_bytes()).unwrap();
        assert_eq!(
            fin.verify(b"v=AAAA"),
            Err(SaslClientError::BadServerSignature)
        );
    }

    /// RFC 5802 §5.
    #[test]
    fn rfc5802_sha1_vector() {
        exchange(
            Mechanism::ScramSha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    /// RFC 7677 §3.
    #[test]
    fn rfc7677_sha256_vector() {
        exchange(
            Mechanism::ScramSha256,
            "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    #[test]
    fn rejects_a_nonce_that_does_not_extend_ours() {
        let client = ScramClient::with_nonce(Mechanism::ScramSha1, "user", "pencil", "abc");
        let err = client
            .server_first(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")
            .unwrap_err();
        assert_eq!(err, SaslClientError::NonceMismatch);
    }

    #[test]
    fn rejects_a_zero_iteration_count() {
        let client = ScramClient::with_nonce(Mechanism::ScramSha1, "user", "pencil", "abc");
        let err = client
            .server_first(b"r=abc123,s=QSXCR+Q6sek8bf92,i=0")
            .unwrap_err();
        assert_eq!(err, SaslClientError::Malformed("bad iteration count"));
    }

    #[test]
    fn server_error_is_reported() {
        let client = ScramClient::with_nonce(Mechanism::ScramSha1, "user", "pencil", "abc");
        let fin = client
            .server_first(b"r=abc123,s=QSXCR+Q6sek8bf92,i=1")
            .unwrap()
            .finish();
        assert_eq!(
            fin.verify(b"e=invalid-proof"),
            Err(SaslClientError::ServerError("invalid-proof".into()))
        );
    }

    #[test]
    fn picks_the_strongest_offered_mechanism() {
        assert_eq!(
            Mechanism::best_of(["PLAIN", "SCRAM-SHA-1"]),
            Some(Mechanism::ScramSha1)
        );
        assert_eq!(
            Mechanism::best_of(["SCRAM-SHA-256", "SCRAM-SHA-1"]),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(Mechanism::best_of(["X-OAUTH2"]), None);
        assert_eq!(plain_response("u", "p"), b"\0u\0p");
    }
}
