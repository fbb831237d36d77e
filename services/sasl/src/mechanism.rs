//! SASL mechanism names and the TLS channel bindings that -PLUS mechanisms check.

use crate::keys::ScramHash;

/// A SASL mechanism the server can offer, in order of preference (strongest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order in which to advertise them.
    pub const ALL: [Mechanism; 5] = [
        Self::ScramSha256Plus,
        Self::ScramSha1Plus,
        Self::ScramSha256,
        Self::ScramSha1,
        Self::Plain,
    ];

    /// The IANA-registered mechanism name, as it appears in `<mechanism/>`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Self::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::Plain => "PLAIN",
        }
    }

    /// The mechanism named by a client's `<auth mechanism='...'/>`; names are case-sensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash this mechanism uses, `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Self::ScramSha256Plus | Self::ScramSha256 => Some(ScramHash::Sha256),
            Self::ScramSha1Plus | Self::ScramSha1 => Some(ScramHash::Sha1),
            Self::Plain => None,
        }
    }

    /// Whether this is a channel-binding (-PLUS) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(self, Self::ScramSha256Plus | Self::ScramSha1Plus)
    }
}

/// A channel-binding type we can compute from a TLS connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelBindingType {
    /// RFC 9266, TLS 1.3 only.
    TlsExporter,
    /// RFC 5929 §4: a hash of the server's certificate.
    TlsServerEndPoint,
}

impl ChannelBindingType {
    /// The registered name, as sent in the gs2 header (`p=tls-exporter`).
    pub fn name(self) -> &'static str {
        match self {
            Self::TlsExporter => "tls-exporter",
            Self::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    /// The type with this registered name, as in XEP-0440 `<sasl-channel-binding/>`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::TlsExporter, Self::TlsServerEndPoint]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// The channel-binding data of one TLS connection, for one binding type.
#[derive(Clone, Debug)]
pub struct ChannelBinding {
    pub kind: ChannelBindingType,
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mechanism in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        for kind in [
            ChannelBindingType::TlsExporter,
            ChannelBindingType::TlsServerEndPoint,
        ] {
            assert_eq!(ChannelBindingType::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn plus_mechanisms_carry_their_hash() {
        assert!(Mechanism::ScramSha256Plus.is_plus());
        assert!(!Mechanism::ScramSha256.is_plus());
        assert_eq!(Mechanism::ScramSha1Plus.scram_hash(), Some(ScramHash::Sha1));
        assert_eq!(Mechanism::Plain.scram_hash(), None);
    }
}
