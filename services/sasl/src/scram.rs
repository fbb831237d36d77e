//! The server side of one SCRAM exchange (RFC 5802, RFC 7677) with channel binding
//! (RFC 5929, RFC 9266).
//!
//! The exchange is `client-first → server-first → client-final → server-final`. Each step
//! consumes the state of the previous one, so a failure or a call out of order leaves the
//! exchange finished: it can never be resumed half-checked.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use subtle::{Choice, ConstantTimeEq};

use crate::SaslError;
use crate::decoy::Decoys;
use crate::keys::{ScramHash, ScramKeys};
use crate::mechanism::{ChannelBinding, Mechanism};
use crate::plain::prepare_username;

/// Random bytes in a server nonce; 18 bytes encode to 24 base64 characters without padding.
const SERVER_NONCE_BYTES: usize = 18;

/// What the client-first message carries, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The authentication identity, unescaped and prepared with UsernameCaseMapped.
    pub username: String,
    /// The requested authorization identity, unescaped but otherwise as sent: the stream layer
    /// parses it as a JID and decides whether this user may act as it.
    pub authzid: Option<String>,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    /// What this TLS connection can bind to; empty without TLS.
    bindings: Vec<ChannelBinding>,
    /// Whether -PLUS mechanisms were offered: a client that says "y" (I could bind, but you
    /// cannot) was then shown a stripped mechanism list by someone in the middle.
    plus_advertised: bool,
    /// Chosen up front so tests can fix it; it is only revealed in server-first.
    server_nonce: String,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingServerFirst(Initiated),
    AwaitingClientFinal(Challenged),
    Finished,
}

/// What client-first established, kept for server-first and the final checks.
struct Initiated {
    hash: ScramHash,
    username: String,
    client_nonce: String,
    client_first_bare: String,
    /// `gs2-header || cbind-data`: what the client must echo, base64-encoded, in `c=`.
    expected_cbind_input: Vec<u8>,
}

/// What server-first committed to, kept for verifying client-final.
struct Challenged {
    keys: ScramKeys,
    /// False for an unknown user: the exchange runs to the end on decoy keys and then fails.
    known_user: bool,
    nonce: String,
    /// `client-first-bare "," server-first ","`; client-final-without-proof completes it.
    auth_message_prefix: String,
    expected_cbind_input: Vec<u8>,
}

/// The gs2 channel-binding flag of client-first.
enum CbFlag<'a> {
    /// "n": the client does not support channel binding.
    NotSupported,
    /// "y": the client supports it but thinks the server does not.
    ServerNotSupported,
    /// "p=name": the client binds to this type.
    Required(&'a str),
}

impl ScramServer {
    /// Starts an exchange for `mechanism`.
    ///
    /// `bindings` are what this TLS connection can offer (empty without TLS);
    /// `plus_advertised` says whether -PLUS mechanisms were offered to this client.
    pub fn new(mechanism: Mechanism, bindings: Vec<ChannelBinding>, plus_advertised: bool) -> Self {
        Self {
            mechanism,
            bindings,
            plus_advertised,
            server_nonce: random_nonce(),
            state: State::AwaitingClientFirst,
        }
    }

    /// Like [`ScramServer::new`] with a fixed server nonce, to replay the RFC examples.
    #[cfg(test)]
    pub(crate) fn with_nonce(
        mechanism: Mechanism,
        bindings: Vec<ChannelBinding>,
        plus_advertised: bool,
        server_nonce: &str,
    ) -> Self {
        Self {
            server_nonce: server_nonce.to_owned(),
            ..Self::new(mechanism, bindings, plus_advertised)
        }
    }

    /// Parses client-first and checks its channel-binding flag against what was offered.
    ///
    /// Returns the prepared username to look the keys up with, and the optional authzid.
    pub fn client_first(&mut self, message: &[u8]) -> Result<ClientFirst, SaslError> {
        let State::AwaitingClientFirst = std::mem::replace(&mut self.state, State::Finished) else {
            return Err(SaslError::Aborted);
        };
        let hash = self
            .mechanism
            .scram_hash()
            .ok_or(SaslError::InvalidMechanism)?;
        let parsed = ParsedClientFirst::parse(message)?;
        let cbind_data = self.binding_data(&parsed.flag)?;
        let username = prepare_username(&unescape_saslname(parsed.username)?)?;
        let authzid = parsed.authzid.map(unescape_saslname).transpose()?;

        let mut expected_cbind_input = parsed.gs2_header.as_bytes().to_vec();
        expected_cbind_input.extend_from_slice(cbind_data);
        self.state = State::AwaitingServerFirst(Initiated {
            hash,
            username: username.clone(),
            client_nonce: parsed.nonce.to_owned(),
            client_first_bare: parsed.bare.to_owned(),
            expected_cbind_input,
        });
        Ok(ClientFirst { username, authzid })
    }

    /// Builds server-first from the user's stored keys.
    ///
    /// `keys` is `None` for an unknown user (or keys for another hash, which this mechanism
    /// cannot use): `decoys` then make keys whose salt is derived from the username and a
    /// secret the connection-managers share, so every attempt on every one of them sees the same
    /// salt, and the exchange fails only at client-final.
    /// Called out of order, it returns an empty message and the exchange is over.
    pub fn server_first(&mut self, keys: Option<ScramKeys>, decoys: Decoys<'_>) -> Vec<u8> {
        let State::AwaitingServerFirst(initiated) =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Vec::new();
        };
        let (keys, known_user) = match keys {
            Some(keys) if keys.hash == initiated.hash => (keys, true),
            _ => (decoys.keys(initiated.hash, &initiated.username), false),
        };
        let nonce = format!("{}{}", initiated.client_nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&keys.salt),
            keys.iterations
        );
        self.state = State::AwaitingClientFinal(Challenged {
            auth_message_prefix: format!("{},{server_first},", initiated.client_first_bare),
            keys,
            known_user,
            nonce,
            expected_cbind_input: initiated.expected_cbind_input,
        });
        server_first.into_bytes()
    }

    /// Verifies the client's proof, nonce and channel binding.
    ///
    /// Returns server-final (`v=...`) to send in `<success/>`. Every credential failure,
    /// including an unknown user, is [`SaslError::NotAuthorized`].
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let State::AwaitingClientFinal(challenged) =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(SaslError::Aborted);
        };
        let parsed = ParsedClientFinal::parse(message)?;
        let auth_message = format!("{}{}", challenged.auth_message_prefix, parsed.without_proof);
        let keys = &challenged.keys;

        // Every check runs, whatever the outcome of the others, so timing tells nothing.
        let accepted = Choice::from(u8::from(challenged.known_user))
            & parsed.nonce.as_bytes().ct_eq(challenged.nonce.as_bytes())
            & parsed.cbind_input.ct_eq(&challenged.expected_cbind_input)
            & proof_matches(keys, auth_message.as_bytes(), &parsed.proof);
        if !bool::from(accepted) {
            return Err(SaslError::NotAuthorized);
        }
        let signature = keys.hash.hmac(&keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(signature)).into_bytes())
    }

    /// The channel-binding data the client must have bound to, or why its flag is refused.
    fn binding_data(&self, flag: &CbFlag<'_>) -> Result<&[u8], SaslError> {
        match (flag, self.mechanism.is_plus()) {
            (CbFlag::Required(name), true) => self
                .bindings
                .iter()
                .find(|binding| binding.kind.name() == *name)
                .map(|binding| binding.data.as_slice())
                .ok_or(SaslError::UnsupportedChannelBindingType),
            // Binding inside a mechanism that does not carry it is a client bug.
            (CbFlag::Required(_), false) => Err(SaslError::MalformedRequest),
            // A -PLUS mechanism without binding would silently drop the protection it promises.
            (_, true) => Err(SaslError::NotAuthorized),
            // RFC 5802 §6: "y" while we offered binding means the offer was stripped in transit.
            (CbFlag::ServerNotSupported, false) if self.plus_advertised => {
                Err(SaslError::NotAuthorized)
            }
            (CbFlag::NotSupported | CbFlag::ServerNotSupported, false) => Ok(&[]),
        }
    }
}

/// client-first, split into its parts but not yet unescaped.
struct ParsedClientFirst<'a> {
    flag: CbFlag<'a>,
    authzid: Option<&'a str>,
    /// Including its trailing comma, as it is echoed in `c=`.
    gs2_header: &'a str,
    bare: &'a str,
    username: &'a str,
    nonce: &'a str,
}

impl<'a> ParsedClientFirst<'a> {
    fn parse(message: &'a [u8]) -> Result<Self, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| SaslError::MalformedRequest)?;
        let (flag, rest) = text.split_once(',').ok_or(SaslError::MalformedRequest)?;
        let (authzid, bare) = rest.split_once(',').ok_or(SaslError::MalformedRequest)?;
        let gs2_header = &text[..text.len() - bare.len()];
        let authzid = match authzid {
            "" => None,
            attr => Some(attr.strip_prefix("a=").ok_or(SaslError::MalformedRequest)?),
        };
        // A leading "m=" (reserved-mext) must fail authentication; it fails the "n=" test.
        let mut attrs = bare.split(',');
        let username = attribute(attrs.next(), "n=")?;
        let nonce = attribute(attrs.next(), "r=")?;
        if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SaslError::MalformedRequest);
        }
        Ok(Self {
            flag: CbFlag::parse(flag)?,
            authzid,
            gs2_header,
            bare,
            username,
            nonce,
        })
    }
}

impl<'a> CbFlag<'a> {
    fn parse(flag: &'a str) -> Result<Self, SaslError> {
        match flag {
            "n" => Ok(Self::NotSupported),
            "y" => Ok(Self::ServerNotSupported),
            _ => match flag.strip_prefix("p=") {
                Some(name) if !name.is_empty() => Ok(Self::Required(name)),
                _ => Err(SaslError::MalformedRequest),
            },
        }
    }
}

/// client-final, split and base64-decoded.
struct ParsedClientFinal<'a> {
    /// client-final-message-without-proof, the last part of AuthMessage.
    without_proof: &'a str,
    cbind_input: Vec<u8>,
    nonce: &'a str,
    proof: Vec<u8>,
}

impl<'a> ParsedClientFinal<'a> {
    fn parse(message: &'a [u8]) -> Result<Self, SaslError> {
        let text = std::str::from_utf8(message).map_err(|_| SaslError::MalformedRequest)?;
        // The proof is always the last attribute; extensions may sit between r= and p=.
        let (without_proof, proof) = text.rsplit_once(',').ok_or(SaslError::MalformedRequest)?;
        let mut attrs = without_proof.split(',');
        let cbind = attribute(attrs.next(), "c=")?;
        let nonce = attribute(attrs.next(), "r=")?;
        Ok(Self {
            without_proof,
            cbind_input: decode(cbind)?,
            nonce,
            proof: decode(attribute(Some(proof), "p=")?)?,
        })
    }
}

/// The value of an `x=value` attribute that must be present with this prefix.
fn attribute<'a>(attr: Option<&'a str>, prefix: &str) -> Result<&'a str, SaslError> {
    attr.and_then(|a| a.strip_prefix(prefix))
        .ok_or(SaslError::MalformedRequest)
}

fn decode(value: &str) -> Result<Vec<u8>, SaslError> {
    BASE64
        .decode(value)
        .map_err(|_| SaslError::MalformedRequest)
}

/// Undoes saslname escaping (RFC 5802 §5.1): "=2C" is ',' and "=3D" is '='; any other '=' is
/// an error, and so is an empty name.
fn unescape_saslname(name: &str) -> Result<String, SaslError> {
    if name.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escaped = rest.get(at + 1..at + 3);
        out.push(match escaped {
            Some("2C") => ',',
            Some("3D") => '=',
            _ => return Err(SaslError::MalformedRequest),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `proof` is `ClientKey XOR HMAC(StoredKey, AuthMessage)` for a ClientKey whose hash
/// is StoredKey (RFC 5802 §3), compared in constant time.
fn proof_matches(keys: &ScramKeys, auth_message: &[u8], proof: &[u8]) -> Choice {
    let signature = keys.hash.hmac(&keys.stored_key, auth_message);
    if proof.len() != signature.len() {
        return Choice::from(0);
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
    keys.hash.digest(&client_key).ct_eq(&keys.stored_key)
}

fn random_nonce() -> String {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests;
