//! SASL for xmppd: the server side of SCRAM-SHA-1/SHA-256 and their -PLUS variants, PLAIN
//! parsing, and the salted keys that are stored instead of passwords.
//!
//! The crate does no I/O and no async: it turns the bytes of one SASL exchange (already
//! base64-decoded by the stream layer) into a verdict. Hashing a password takes milliseconds, so
//! callers in async code run [`derive_keys`], [`verify_password`] and
//! [`ScramServer::client_final`] on a blocking thread.
//!
//! # Layout
//!
//! - [`keys`]: [`ScramHash`], [`ScramKeys`] and key derivation (RFC 5802 §3), with passwords
//!   prepared as OpaqueString (RFC 8265).
//! - [`mechanism`]: the mechanism names we offer and the channel bindings a TLS layer hands in.
//! - [`scram`]: [`ScramServer`], one SCRAM exchange as a small state machine.
//! - [`decoy`]: [`Decoys`], the keys an unknown account is answered with, from a [`DecoySecret`]
//!   the connection-managers share.
//! - [`plain`]: [`parse_plain`] for PLAIN (RFC 4616), which is only offered inside TLS.
//! - [`error`]: [`SaslError`], one variant per RFC 6120 §6.5 failure condition.
//!
//! # Invariants
//!
//! - Parsing never panics: every malformed message becomes a [`SaslError`].
//! - Secrets (StoredKey, channel-binding data) are compared in constant time.
//! - An unknown user walks the same path as a known one and fails only at the last step, with
//!   the same error as a wrong password, so accounts cannot be enumerated.

pub mod decoy;
pub mod error;
pub mod keys;
pub mod mechanism;
pub mod plain;
pub mod scram;

pub use decoy::{DecoySecret, DecoySecretTooShort, Decoys};
pub use error::SaslError;
pub use keys::{
    DEFAULT_ITERATIONS, ScramHash, ScramKeys, derive_keys, new_credentials, new_keys,
    verify_password,
};
pub use mechanism::{ChannelBinding, ChannelBindingType, Mechanism};
pub use plain::{PlainCredentials, parse_plain};
pub use scram::{ClientFirst, ScramServer};
