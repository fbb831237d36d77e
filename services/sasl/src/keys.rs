//! SCRAM salted keys (RFC 5802 §3): what is stored instead of a password.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::SaslError;

/// Iterations for new keys: what Prosody and MongooseIM store by default, well above the
/// 4096 that RFC 7677 asks for at least, and still quick on a phone (each login costs the
/// client one PBKDF2 run of this many).
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// Bytes of a salt, stored or decoy.
pub(crate) const SALT_LEN: usize = 16;

/// The hash function of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// The name of the plain (non -PLUS) mechanism using this hash, e.g. `"SCRAM-SHA-1"`.
    pub fn mechanism_name(self) -> &'static str {
        match self {
            Self::Sha1 => "SCRAM-SHA-1",
            Self::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The inverse of [`ScramHash::mechanism_name`].
    pub fn from_mechanism_name(name: &str) -> Option<Self> {
        [Self::Sha1, Self::Sha256]
            .into_iter()
            .find(|h| h.mechanism_name() == name)
    }

    /// `H(data)`.
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, data)`.
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => hmac_bytes::<Hmac<Sha1>>(key, data),
            Self::Sha256 => hmac_bytes::<Hmac<Sha256>>(key, data),
        }
    }

    /// `Hi(password, salt, iterations)`, which is PBKDF2 with this hash's HMAC.
    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
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

fn hmac_bytes<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The salted keys of one account for one hash: enough to verify a SCRAM proof or a PLAIN
/// password, not enough to impersonate the user to another server with different salt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramKeys {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// Derives the keys for `password`, prepared as an RFC 8265 OpaqueString first.
///
/// Fails with [`SaslError::MalformedRequest`] when the password is not a valid OpaqueString
/// (empty, or holding disallowed code points such as controls) or `iterations` is zero.
pub fn derive_keys(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramKeys, SaslError> {
    if iterations == 0 {
        return Err(SaslError::MalformedRequest);
    }
    // PRECIS "enforce" applies the profile's mapping and normalisation rules; "prepare"
    // would only check the string class.
    let prepared = OpaqueString::enforce(password).map_err(|_| SaslError::MalformedRequest)?;
    let salted = hash.salted_password(prepared.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    Ok(ScramKeys {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: hash.digest(&client_key),
        server_key: hash.hmac(&salted, b"Server Key"),
    })
}

/// Derives keys for a new or changed password, with a fresh random salt.
pub fn new_keys(hash: ScramHash, password: &str, iterations: u32) -> Result<ScramKeys, SaslError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    derive_keys(hash, password, &salt, iterations)
}

/// Keys for every hash this server stores, for a new or changed password.
/// Slow on purpose (PBKDF2): async callers run it with `spawn_blocking`.
pub fn new_credentials(password: &str, iterations: u32) -> Result<Vec<ScramKeys>, SaslError> {
    [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|hash| new_keys(hash, password, iterations))
        .collect()
}

/// Whether `password` matches `keys`, as PLAIN needs. The StoredKey comparison is constant-time.
pub fn verify_password(keys: &ScramKeys, password: &str) -> bool {
    derive_keys(keys.hash, password, &keys.salt, keys.iterations)
        .is_ok_and(|candidate| bool::from(candidate.stored_key.ct_eq(&keys.stored_key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    // Expected values computed independently with Python's hashlib/hmac for the salts of the
    // RFC 5802 and RFC 7677 examples.
    #[test]
    fn derive_keys_matches_reference_vectors() {
        let sha1 = derive_keys(
            ScramHash::Sha1,
            "pencil",
            &hex("4125c247e43ab1e93c6dff76"),
            4096,
        );
        let sha1 = sha1.unwrap();
        assert_eq!(
            sha1.stored_key,
            hex("e9d94660c39d65c38fbad91c358f14da0eef2bd6")
        );
        assert_eq!(
            sha1.server_key,
            hex("0fe09258b3ac852ba502cc62ba903eaacdbf7d31")
        );

        let salt = hex("5b6d99689d12358eeca04b141236fa81");
        let sha256 = derive_keys(ScramHash::Sha256, "pencil", &salt, 4096).unwrap();
        assert_eq!(
            sha256.stored_key,
            hex("586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6")
        );
        assert_eq!(
            sha256.server_key,
            hex("c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5")
        );
        assert_eq!((sha256.iterations, sha256.salt), (4096, salt));
    }

    #[test]
    fn passwords_are_prepared_as_opaque_strings() {
        // RFC 8265 §4.2.1 maps non-ASCII spaces to U+0020.
        let nbsp = derive_keys(ScramHash::Sha256, "pen\u{a0}cil", b"salt", 1).unwrap();
        let space = derive_keys(ScramHash::Sha256, "pen cil", b"salt", 1).unwrap();
        assert_eq!(nbsp, space);
        let control = derive_keys(ScramHash::Sha256, "pen\u{7}cil", b"salt", 1);
        assert_eq!(control, Err(SaslError::MalformedRequest));
        assert_eq!(
            derive_keys(ScramHash::Sha256, "", b"salt", 1),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn zero_iterations_are_refused() {
        let keys = derive_keys(ScramHash::Sha1, "pencil", b"salt", 0);
        assert_eq!(keys, Err(SaslError::MalformedRequest));
    }

    #[test]
    fn new_keys_use_a_fresh_salt() {
        let a = new_keys(ScramHash::Sha256, "pencil", 2).unwrap();
        let b = new_keys(ScramHash::Sha256, "pencil", 2).unwrap();
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn verify_password_accepts_only_the_right_password() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let keys = new_keys(hash, "pencil", 16).unwrap();
            assert!(verify_password(&keys, "pencil"));
            assert!(!verify_password(&keys, "Pencil"));
            assert!(!verify_password(&keys, ""));
            assert!(!verify_password(&keys, "pen\u{7}cil"));
        }
    }

    #[test]
    fn mechanism_names_round_trip() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            assert_eq!(
                ScramHash::from_mechanism_name(hash.mechanism_name()),
                Some(hash)
            );
        }
        assert_eq!(ScramHash::Sha1.mechanism_name(), "SCRAM-SHA-1");
        assert_eq!(ScramHash::from_mechanism_name("SCRAM-SHA-1-PLUS"), None);
    }
}
