//! The `type` attribute of messages and IQs, and the RFC 6121 §8 decisions
//! that depend on it. The router (its routing rules and policies) and the
//! session replicas (offline storage, the fallback for messages no module
//! kept, IQ handling) all ask these methods, so that each rule is written
//! once. Parsing is a few byte comparisons on a borrowed string: the wire
//! keeps the attribute as text, which also carries unknown values losslessly.

/// A message's `type` (RFC 6121 §5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// `normal`, or no `type` at all.
    Normal,
    Chat,
    Groupchat,
    Headline,
    Error,
    /// A value RFC 6121 does not define; routed as `normal` is, but not
    /// treated as a conversation (XEP-0280 does not copy it).
    Other,
}

/// What becomes of a message that no available resource takes (RFC 6121
/// §8.5.2.2, and §8.5.3.2.1 for a full JID that is not connected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unclaimed {
    /// The account takes it: its replica stores it offline (or answers that
    /// the account does not exist).
    Account,
    /// Answered with `<service-unavailable/>`.
    Bounce,
    /// Dropped without a word.
    Ignore,
}

/// Which of an account's available resources a message to its bare JID
/// goes to (RFC 6121 §8.5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// None: the message is never delivered to a bare JID's resources.
    None,
    /// Those of the highest non-negative priority, all of them on a tie.
    HighestPriority,
    /// Every one of non-negative priority.
    NonNegative,
}

impl MessageType {
    pub fn parse(value: &str) -> Self {
        match value {
            "" | "normal" => MessageType::Normal,
            "chat" => MessageType::Chat,
            "groupchat" => MessageType::Groupchat,
            "headline" => MessageType::Headline,
            "error" => MessageType::Error,
            _ => MessageType::Other,
        }
    }

    pub fn is_error(self) -> bool {
        self == MessageType::Error
    }

    /// §8.5.2.1: errors are ignored and groupchat is refused rather than
    /// delivered to a bare JID; headlines go to every resource that takes
    /// messages, the rest to the most wanted ones.
    pub fn fanout(self) -> Fanout {
        match self {
            MessageType::Error | MessageType::Groupchat => Fanout::None,
            MessageType::Headline => Fanout::NonNegative,
            MessageType::Normal | MessageType::Chat | MessageType::Other => Fanout::HighestPriority,
        }
    }

    /// §8.5.2.2 and §8.5.3.2.1: when no resource takes it.
    pub fn unclaimed(self) -> Unclaimed {
        match self {
            MessageType::Error | MessageType::Headline => Unclaimed::Ignore,
            MessageType::Groupchat => Unclaimed::Bounce,
            MessageType::Normal | MessageType::Chat | MessageType::Other => Unclaimed::Account,
        }
    }

    /// Whether the message must still reach the account's replica when the
    /// resource it was routed to is gone: all but errors and headlines,
    /// which are dropped. The replica then delivers it to another resource,
    /// stores it, or answers it.
    pub fn reaches_account_when_resource_gone(self) -> bool {
        self.unclaimed() != Unclaimed::Ignore
    }
}

/// An IQ's `type` (RFC 6120 §8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
    /// Missing or not one of the four: a malformed IQ.
    Other,
}

impl IqType {
    pub fn parse(value: &str) -> Self {
        match value {
            "get" => IqType::Get,
            "set" => IqType::Set,
            "result" => IqType::Result,
            "error" => IqType::Error,
            _ => IqType::Other,
        }
    }

    /// A get or a set, which must be answered (RFC 6120 §8.2.3).
    pub fn is_request(self) -> bool {
        matches!(self, IqType::Get | IqType::Set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_type_is_normal_and_an_unknown_one_is_other() {
        assert_eq!(MessageType::parse(""), MessageType::Normal);
        assert_eq!(MessageType::parse("normal"), MessageType::Normal);
        assert_eq!(MessageType::parse("shout"), MessageType::Other);
        assert_eq!(IqType::parse(""), IqType::Other);
    }

    #[test]
    fn only_errors_and_headlines_are_dropped_when_their_resource_is_gone() {
        for (value, reaches) in [
            ("", true),
            ("chat", true),
            ("groupchat", true),
            ("shout", true),
            ("headline", false),
            ("error", false),
        ] {
            let reaches_account = MessageType::parse(value).reaches_account_when_resource_gone();
            assert_eq!(reaches_account, reaches, "{value}");
        }
    }

    #[test]
    fn requests_are_gets_and_sets() {
        assert!(IqType::parse("get").is_request());
        assert!(IqType::parse("set").is_request());
        assert!(!IqType::parse("result").is_request());
        assert!(!IqType::parse("error").is_request());
    }
}
