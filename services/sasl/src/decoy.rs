//! Decoy keys for accounts that do not exist, so that a SCRAM challenge never tells an
//! unknown account from a known one.
//!
//! A real account answers with its own stored salt and iteration count, the same on every
//! connection-manager and every attempt. A decoy must do the same: its salt is an HMAC of the
//! username under a secret that every connection-manager of a deployment shares, so asking
//! twice, or asking two connection-managers, shows the same salt, and only someone holding the
//! secret could tell it from a stored one.

use std::fmt;

use rand::RngCore;

use crate::keys::{SALT_LEN, ScramHash, ScramKeys};

/// The secret decoy salts are derived from. Its bytes are never printed.
#[derive(Clone)]
pub struct DecoySecret(Vec<u8>);

/// A configured secret too short to resist guessing.
#[derive(Debug, thiserror::Error)]
#[error("a decoy secret needs at least {min} bytes, got {0}", min = DecoySecret::MIN_BYTES)]
pub struct DecoySecretTooShort(pub usize);

impl DecoySecret {
    /// The least a configured secret may hold: 128 bits, if random.
    pub const MIN_BYTES: usize = 16;

    /// A secret of this process alone: decoys then differ from another process's.
    pub fn random() -> Self {
        let mut secret = vec![0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        DecoySecret(secret)
    }

    /// A shared secret, as configured.
    pub fn new(secret: Vec<u8>) -> Result<Self, DecoySecretTooShort> {
        if secret.len() < Self::MIN_BYTES {
            return Err(DecoySecretTooShort(secret.len()));
        }
        Ok(DecoySecret(secret))
    }
}

impl fmt::Debug for DecoySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DecoySecret(***)")
    }
}

/// How unknown accounts are answered: the secret, and the iteration count that stored keys
/// have (the configured one), so that the count does not set decoys apart either.
#[derive(Clone, Copy, Debug)]
pub struct Decoys<'a> {
    pub secret: &'a DecoySecret,
    pub iterations: u32,
}

impl Decoys<'_> {
    /// Keys for `username`, who does not exist: a stable salt that looks random to anyone
    /// without the secret, and key material no proof can match.
    pub fn keys(&self, hash: ScramHash, username: &str) -> ScramKeys {
        // The mechanism name is mixed in because real accounts have one salt per hash.
        let input = format!("{}\0{username}", hash.mechanism_name());
        let mut salt = ScramHash::Sha256.hmac(&self.secret.0, input.as_bytes());
        salt.truncate(SALT_LEN);
        let key_len = hash.digest(b"").len();
        ScramKeys {
            hash,
            salt,
            iterations: self.iterations,
            stored_key: vec![0; key_len],
            server_key: vec![0; key_len],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: &[u8] = b"one secret for every edge";

    fn decoys(secret: &DecoySecret) -> Decoys<'_> {
        Decoys {
            secret,
            iterations: 10_000,
        }
    }

    #[test]
    fn the_same_secret_gives_the_same_salt_for_the_same_user() {
        let (a, b) = (
            DecoySecret::new(SHARED.to_vec()).unwrap(),
            DecoySecret::new(SHARED.to_vec()).unwrap(),
        );
        let salt = |secret, user| decoys(secret).keys(ScramHash::Sha256, user).salt;
        assert_eq!(salt(&a, "nobody"), salt(&b, "nobody"));
        assert_eq!(salt(&a, "nobody").len(), SALT_LEN);
        assert_ne!(salt(&a, "nobody"), salt(&a, "somebody"));
        let other = DecoySecret::new(b"another deployment's secret".to_vec()).unwrap();
        assert_ne!(salt(&a, "nobody"), salt(&other, "nobody"));
    }

    #[test]
    fn each_hash_has_its_own_salt_and_the_configured_count() {
        let secret = DecoySecret::new(SHARED.to_vec()).unwrap();
        let decoys = Decoys {
            secret: &secret,
            iterations: 4096,
        };
        let sha1 = decoys.keys(ScramHash::Sha1, "nobody");
        let sha256 = decoys.keys(ScramHash::Sha256, "nobody");
        assert_ne!(sha1.salt, sha256.salt);
        assert_eq!((sha1.iterations, sha256.iterations), (4096, 4096));
        assert_eq!((sha1.stored_key.len(), sha256.stored_key.len()), (20, 32));
    }

    #[test]
    fn random_secrets_differ_and_short_ones_are_refused() {
        let salt = |secret: &DecoySecret| decoys(secret).keys(ScramHash::Sha1, "nobody").salt;
        assert_ne!(salt(&DecoySecret::random()), salt(&DecoySecret::random()));
        let short = DecoySecret::new(b"too short".to_vec()).unwrap_err();
        assert_eq!(short.0, 9);
        assert!(short.to_string().contains("at least 16 bytes"), "{short}");
        let secret = DecoySecret::new(SHARED.to_vec()).unwrap();
        assert_eq!(format!("{secret:?}"), "DecoySecret(***)");
    }
}
