//! Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3).

use std::fmt;

use crate::ns;
use crate::xml::{Element, escape_text};

/// Declares a condition enum whose variants map one-to-one to the RFC's element names.
macro_rules! conditions {
    ($(#[$meta:meta])* $enum:ident { $($variant:ident => $name:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $enum {
            $(#[doc = concat!("`<", $name, "/>`")] $variant,)+
        }

        impl $enum {
            /// The condition's element name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            /// The condition with element name `name`, if the RFC defines one.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $enum {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

conditions! {
    /// Stream error conditions, RFC 6120 §4.9.3.
    StreamErrorCondition {
        BadFormat => "bad-format",
        BadNamespacePrefix => "bad-namespace-prefix",
        Conflict => "conflict",
        ConnectionTimeout => "connection-timeout",
        HostGone => "host-gone",
        HostUnknown => "host-unknown",
        ImproperAddressing => "improper-addressing",
        InternalServerError => "internal-server-error",
        InvalidFrom => "invalid-from",
        InvalidNamespace => "invalid-namespace",
        InvalidXml => "invalid-xml",
        NotAuthorized => "not-authorized",
        NotWellFormed => "not-well-formed",
        PolicyViolation => "policy-violation",
        RemoteConnectionFailed => "remote-connection-failed",
        Reset => "reset",
        ResourceConstraint => "resource-constraint",
        RestrictedXml => "restricted-xml",
        SeeOtherHost => "see-other-host",
        SystemShutdown => "system-shutdown",
        UndefinedCondition => "undefined-condition",
        UnsupportedEncoding => "unsupported-encoding",
        UnsupportedFeature => "unsupported-feature",
        UnsupportedStanzaType => "unsupported-stanza-type",
        UnsupportedVersion => "unsupported-version",
    }
}

conditions! {
    /// Stanza error conditions, RFC 6120 §8.3.3.
    StanzaErrorCondition {
        BadRequest => "bad-request",
        Conflict => "conflict",
        FeatureNotImplemented => "feature-not-implemented",
        Forbidden => "forbidden",
        Gone => "gone",
        InternalServerError => "internal-server-error",
        ItemNotFound => "item-not-found",
        JidMalformed => "jid-malformed",
        NotAcceptable => "not-acceptable",
        NotAllowed => "not-allowed",
        NotAuthorized => "not-authorized",
        PolicyViolation => "policy-violation",
        RecipientUnavailable => "recipient-unavailable",
        Redirect => "redirect",
        RegistrationRequired => "registration-required",
        RemoteServerNotFound => "remote-server-not-found",
        RemoteServerTimeout => "remote-server-timeout",
        ResourceConstraint => "resource-constraint",
        ServiceUnavailable => "service-unavailable",
        SubscriptionRequired => "subscription-required",
        UndefinedCondition => "undefined-condition",
        UnexpectedRequest => "unexpected-request",
    }
}

conditions! {
    /// The `type` attribute of a stanza `<error/>`, RFC 6120 §8.3.2.
    ErrorType {
        Auth => "auth",
        Cancel => "cancel",
        Continue => "continue",
        Modify => "modify",
        Wait => "wait",
    }
}

impl StanzaErrorCondition {
    /// The error type the RFC 6120 §8.3.3 examples give this condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaErrorCondition::*;
        match self {
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect
            | UndefinedCondition => ErrorType::Modify,
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                ErrorType::Wait
            }
            Conflict
            | FeatureNotImplemented
            | Gone
            | InternalServerError
            | ItemNotFound
            | NotAllowed
            | RemoteServerNotFound
            | ServiceUnavailable => ErrorType::Cancel,
        }
    }
}

/// A stream-level error: the stream is closed after it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub condition: StreamErrorCondition,
    /// Human-readable detail for the peer's logs, sent in `<text/>`.
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §4.9.4), as the XML of
    /// its element, in its own namespace.
    pub application: Option<String>,
}

impl StreamError {
    pub fn new(condition: StreamErrorCondition) -> Self {
        Self {
            condition,
            text: None,
            application: None,
        }
    }

    /// Adds an application-specific condition, `element` being its XML.
    pub fn with_application(self, element: String) -> Self {
        Self {
            application: Some(element),
            ..self
        }
    }

    pub fn with_text(self, text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..self
        }
    }

    /// The `<stream:error/>` element, for a stream whose header bound the `stream` prefix.
    pub fn to_xml(&self) -> String {
        let mut out = format!(
            "<stream:error><{} xmlns='{}'/>",
            self.condition.name(),
            ns::STREAMS
        );
        if let Some(text) = &self.text {
            out.push_str("<text xmlns='");
            out.push_str(ns::STREAMS);
            out.push_str("'>");
            out.push_str(&escape_text(text));
            out.push_str("</text>");
        }
        if let Some(application) = &self.application {
            out.push_str(application);
        }
        out.push_str("</stream:error>");
        out
    }
}

impl From<StreamErrorCondition> for StreamError {
    fn from(condition: StreamErrorCondition) -> Self {
        Self::new(condition)
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(text) => write!(f, "stream error {}: {text}", self.condition),
            None => write!(f, "stream error {}", self.condition),
        }
    }
}

impl std::error::Error for StreamError {}

/// A stanza-level error, returned to the sender in a `type='error'` stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub condition: StanzaErrorCondition,
    pub error_type: ErrorType,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.4): element name and namespace.
    pub application: Option<(&'static str, &'static str)>,
}

impl StanzaError {
    /// An error of the condition's usual type.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        Self {
            condition,
            error_type: condition.default_type(),
            text: None,
            application: None,
        }
    }

    /// With an application-specific condition element beside the defined one.
    pub fn with_application(self, name: &'static str, namespace: &'static str) -> Self {
        Self {
            application: Some((name, namespace)),
            ..self
        }
    }

    pub fn with_text(self, text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..self
        }
    }

    /// The `<error/>` child of a `jabber:client` stanza.
    pub fn to_element(&self) -> Element {
        self.to_element_in(ns::CLIENT)
    }

    /// The `<error/>` child of a stanza in namespace `stanza_ns`, which the error element
    /// shares so that no `xmlns` needs to be written for it.
    pub(crate) fn to_element_in(&self, stanza_ns: &str) -> Element {
        let mut error = Element::new("error", stanza_ns)
            .attr("type", self.error_type.name())
            .child(Element::new(self.condition.name(), ns::STANZAS));
        if let Some(text) = &self.text {
            error.push_child(Element::new("text", ns::STANZAS).text(text.as_str()));
        }
        if let Some((name, namespace)) = self.application {
            error.push_child(Element::new(name, namespace));
        }
        error
    }
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(text) => write!(f, "{} ({}): {text}", self.condition, self.error_type),
            None => write!(f, "{} ({})", self.condition, self.error_type),
        }
    }
}

impl std::error::Error for StanzaError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names_round_trip() {
        for name in [
            "bad-format",
            "see-other-host",
            "unsupported-version",
            "reset",
        ] {
            let condition = StreamErrorCondition::from_name(name).unwrap();
            assert_eq!(condition.name(), name);
        }
        for name in ["bad-request", "jid-malformed", "unexpected-request"] {
            let condition = StanzaErrorCondition::from_name(name).unwrap();
            assert_eq!(condition.name(), name);
        }
        assert_eq!(StreamErrorCondition::from_name("no-such"), None);
        assert_eq!(ErrorType::from_name("wait"), Some(ErrorType::Wait));
    }

    #[test]
    fn default_types_follow_rfc_examples() {
        use StanzaErrorCondition as C;
        assert_eq!(C::BadRequest.default_type(), ErrorType::Modify);
        assert_eq!(C::Forbidden.default_type(), ErrorType::Auth);
        assert_eq!(C::ServiceUnavailable.default_type(), ErrorType::Cancel);
        assert_eq!(C::RecipientUnavailable.default_type(), ErrorType::Wait);
        assert_eq!(
            StanzaError::new(C::ItemNotFound).error_type,
            ErrorType::Cancel
        );
    }

    #[test]
    fn stream_error_xml() {
        let error = StreamError::new(StreamErrorCondition::NotWellFormed);
        assert_eq!(
            error.to_xml(),
            "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
        let error = StreamError::new(StreamErrorCondition::PolicyViolation).with_text("a<b");
        assert_eq!(
            error.to_xml(),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>a&lt;b</text></stream:error>"
        );
        assert_eq!(error.to_string(), "stream error policy-violation: a<b");
    }

    #[test]
    fn stanza_error_element() {
        let error = StanzaError::new(StanzaErrorCondition::ServiceUnavailable).with_text("gone");
        assert_eq!(
            error.to_element().to_xml(ns::CLIENT),
            "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text></error>"
        );
    }
}
