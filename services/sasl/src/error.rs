//! The failures of a SASL exchange, named after RFC 6120 §6.5 conditions.

/// Why a SASL exchange failed. [`SaslError::condition`] gives the element to put in `<failure/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The message does not follow the mechanism's grammar.
    #[error("malformed sasl request")]
    MalformedRequest,
    /// Wrong credentials, unknown user, or a failed channel-binding check.
    #[error("not authorized")]
    NotAuthorized,
    /// The authorization identity is not one this user may act as.
    #[error("invalid authorization identity")]
    InvalidAuthzid,
    /// The base64 wrapping of the payload is broken.
    #[error("incorrect base64 encoding")]
    IncorrectEncoding,
    /// The client asked for a mechanism we do not offer.
    #[error("invalid mechanism")]
    InvalidMechanism,
    /// The mechanism is only allowed over an encrypted stream.
    #[error("encryption required")]
    EncryptionRequired,
    /// Policy asks for a stronger mechanism than the one chosen.
    #[error("mechanism too weak")]
    MechanismTooWeak,
    /// The client aborted the exchange, or it was driven out of order.
    #[error("sasl exchange aborted")]
    Aborted,
    /// A -PLUS exchange names a channel-binding type this connection does not have, such as
    /// tls-unique, which TLS 1.3 does not define (RFC 9266). Not a credential failure: the
    /// password was never checked.
    #[error("unsupported channel binding type")]
    UnsupportedChannelBindingType,
}

impl SaslError {
    /// The RFC 6120 §6.5 defined-condition element name for this failure.
    pub fn condition(&self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed-request",
            Self::NotAuthorized => "not-authorized",
            Self::InvalidAuthzid => "invalid-authzid",
            Self::IncorrectEncoding => "incorrect-encoding",
            Self::InvalidMechanism => "invalid-mechanism",
            Self::EncryptionRequired => "encryption-required",
            Self::MechanismTooWeak => "mechanism-too-weak",
            Self::Aborted => "aborted",
            // RFC 6120 §6.5 has no condition for it; the generic failure, with the SCRAM
            // server-error as text, says which.
            Self::UnsupportedChannelBindingType => "not-authorized",
        }
    }

    /// The SCRAM server-error (RFC 5802 §7, `e=...`) that names this failure, for the text of
    /// `<failure/>`: XMPP carries no server-final message in a failure.
    pub fn scram_server_error(&self) -> Option<&'static str> {
        match self {
            Self::UnsupportedChannelBindingType => Some("unsupported-channel-binding-type"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_rfc6120_element_names() {
        assert_eq!(SaslError::MalformedRequest.condition(), "malformed-request");
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(
            SaslError::MechanismTooWeak.condition(),
            "mechanism-too-weak"
        );
    }
}
