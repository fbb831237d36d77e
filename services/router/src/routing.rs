//! The RFC 6121 §8 delivery rules as pure functions of an envelope's header
//! and the recipient's bound resources: no I/O, no XML.

use xmppd_grpc::{BoundResource, Envelope, Kind, Stage};
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::{Fanout, JidRef, MessageType, Unclaimed};

/// Where a stanza goes, decided from its header alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// Hand it to the session replica that owns this account (bare JID).
    Session(&'a str),
    /// Look up the recipient's resources, then apply [`select`].
    Recipient {
        bare: &'a str,
        resource: Option<&'a str>,
    },
    /// Answer the sender with this error.
    Bounce(StanzaErrorCondition),
    /// Nothing to do; RFC 6121 allows ignoring it.
    Ignore,
}

/// What to do once the recipient's resources are known.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection<'r> {
    Deliver(Vec<&'r BoundResource>),
    /// No resource takes it: the recipient's session replica decides
    /// (offline storage, or an error if the account does not exist).
    Session,
    Bounce(StanzaErrorCondition),
    Ignore,
}

/// Decides the next hop of `envelope` in a server for `domain`.
pub fn target<'a>(envelope: &'a Envelope, domain: &str) -> Target<'a> {
    let sender = envelope.from_jid().bare();
    let to = envelope.to_jid().unwrap_or(sender);
    if to.domain() != domain {
        // Server-to-server federation is not built yet.
        return if envelope.is_error() {
            Target::Ignore
        } else {
            Target::Bounce(StanzaErrorCondition::RemoteServerNotFound)
        };
    }
    let (to_bare, resource) = (to.bare().as_str(), to.resource());
    match Stage::try_from(envelope.stage).unwrap_or(Stage::FromClient) {
        Stage::Inbound => Target::Session(to_bare),
        Stage::Deliver if to.is_account() => Target::Recipient {
            bare: to_bare,
            resource,
        },
        Stage::Deliver => Target::Ignore,
        Stage::FromClient => from_client(envelope.kind(), sender, to),
    }
}

fn from_client<'a>(kind: Kind, sender: JidRef<'a>, to: JidRef<'a>) -> Target<'a> {
    match kind {
        // Presence always gets outbound processing by the sender's replica.
        Kind::Presence => Target::Session(sender.as_str()),
        // The server itself, or an IQ the server answers for an account.
        _ if !to.is_account() => Target::Session(sender.as_str()),
        Kind::Iq if to.is_bare() => Target::Session(to.as_str()),
        Kind::Iq | Kind::Message => Target::Recipient {
            bare: to.bare().as_str(),
            resource: to.resource(),
        },
        Kind::Unspecified => Target::Bounce(StanzaErrorCondition::BadRequest),
    }
}

/// The session replica that owns a stanza to a chat service (XEP-0045) of
/// `muc_domains`, or `None` if it is not addressed to one. A room, like an
/// account, is owned by the replica its bare JID hashes to; the service's
/// own address by the replica its domain hashes to. Presence a client sends
/// to a room goes through the sender's replica first, which keeps it as
/// directed presence (RFC 6121 §4.6), so that the room hears when the
/// occupant goes.
pub fn chat_service_owner<'a>(envelope: &'a Envelope, muc_domains: &[String]) -> Option<&'a str> {
    let to = envelope.to_jid()?;
    if !muc_domains.iter().any(|domain| domain == to.domain()) {
        return None;
    }
    let stage = Stage::try_from(envelope.stage).unwrap_or(Stage::FromClient);
    if envelope.kind() == Kind::Presence && stage == Stage::FromClient {
        return Some(envelope.from_jid().bare().as_str());
    }
    Some(to.bare().as_str())
}

/// RFC 6121 §8.5.2 (bare JID) and §8.5.3 (full JID) over the resources the
/// registry holds for the recipient.
pub fn select<'r>(
    envelope: &Envelope,
    resource: Option<&str>,
    resources: &'r [BoundResource],
) -> Selection<'r> {
    let stage = Stage::try_from(envelope.stage).unwrap_or(Stage::FromClient);
    if let Some(resource) = resource {
        if let Some(bound) = resources
            .iter()
            .find(|s| s.jid().resource() == Some(resource))
        {
            return Selection::Deliver(vec![bound]);
        }
        return unknown_resource(envelope, stage, resources);
    }
    match (envelope.message_type(), stage) {
        (Some(message_type), Stage::FromClient) => message_to_bare(message_type, resources),
        // Presence broadcasts and server-generated stanzas reach every
        // available resource, whatever its priority.
        _ => {
            let available: Vec<_> = resources.iter().filter(|s| s.available).collect();
            if !available.is_empty() {
                Selection::Deliver(available)
            } else if envelope.reaches_account_when_resource_gone() {
                Selection::Session
            } else {
                Selection::Ignore
            }
        }
    }
}

/// §8.5.3.2: the full JID names no connected resource.
fn unknown_resource<'r>(
    envelope: &Envelope,
    stage: Stage,
    resources: &'r [BoundResource],
) -> Selection<'r> {
    if envelope.is_error() {
        return Selection::Ignore;
    }
    match (envelope.kind(), envelope.message_type()) {
        // A processed message (an offline one being handed out) whose
        // resource left meanwhile goes back to storage.
        (_, Some(message_type)) if stage == Stage::Deliver => {
            if message_type.reaches_account_when_resource_gone() {
                Selection::Session
            } else {
                Selection::Ignore
            }
        }
        _ if stage == Stage::Deliver => Selection::Ignore,
        // §8.5.3.2.1: normal and chat are treated as if sent to the bare JID.
        (_, Some(message_type)) => match message_type.unclaimed() {
            Unclaimed::Account => message_to_bare(message_type, resources),
            unclaimed => unclaimed_selection(unclaimed),
        },
        (Kind::Iq, _) => Selection::Bounce(StanzaErrorCondition::ServiceUnavailable),
        _ => Selection::Ignore,
    }
}

/// §8.5.2.1: messages go to available resources of non-negative priority,
/// as [`MessageType::fanout`] says; §8.5.2.2 when none takes it.
fn message_to_bare(message_type: MessageType, resources: &[BoundResource]) -> Selection<'_> {
    let eligible = resources.iter().filter(|s| s.available && s.priority >= 0);
    let chosen: Vec<_> = match message_type.fanout() {
        Fanout::None => Vec::new(),
        Fanout::NonNegative => eligible.collect(),
        Fanout::HighestPriority => {
            let top = eligible.clone().map(|s| s.priority).max();
            eligible.filter(|s| Some(s.priority) == top).collect()
        }
    };
    if chosen.is_empty() {
        unclaimed_selection(message_type.unclaimed())
    } else {
        Selection::Deliver(chosen)
    }
}

fn unclaimed_selection<'r>(unclaimed: Unclaimed) -> Selection<'r> {
    match unclaimed {
        Unclaimed::Account => Selection::Session,
        Unclaimed::Bounce => Selection::Bounce(StanzaErrorCondition::ServiceUnavailable),
        Unclaimed::Ignore => Selection::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "example.org";

    fn envelope(kind: Kind, stanza_type: &str, to: &str, stage: Stage) -> Envelope {
        Envelope {
            to: to.into(),
            from: "juliet@example.org/balcony".into(),
            kind: kind as i32,
            r#type: stanza_type.into(),
            stage: stage as i32,
            ..Default::default()
        }
    }

    fn session(resource: &str, available: bool, priority: i32) -> BoundResource {
        BoundResource {
            full_jid: format!("romeo@example.org/{resource}"),
            node_id: "cm1".into(),
            available,
            priority,
            ..Default::default()
        }
    }

    fn delivered<'r>(selection: Selection<'r>) -> Vec<&'r str> {
        match selection {
            Selection::Deliver(sessions) => {
                sessions.iter().filter_map(|s| s.jid().resource()).collect()
            }
            other => panic!("expected delivery, got {other:?}"),
        }
    }

    #[test]
    fn split_jid_parts() {
        let parts = |jid| {
            let jid = JidRef::new(jid);
            (jid.node(), jid.domain(), jid.resource())
        };
        assert_eq!(parts("a@b/c/d"), (Some("a"), "b", Some("c/d")));
        assert_eq!(parts("b"), (None, "b", None));
        assert_eq!(parts("b/r"), (None, "b", Some("r")));
    }

    #[test]
    fn stanzas_to_a_chat_service_go_to_the_rooms_replica() {
        let services = vec!["conference.example.org".to_string()];
        let to_room = "room@conference.example.org/nick";
        let e = envelope(Kind::Message, "groupchat", to_room, Stage::FromClient);
        assert_eq!(
            chat_service_owner(&e, &services),
            Some("room@conference.example.org")
        );
        let e = envelope(Kind::Presence, "", to_room, Stage::Deliver);
        assert_eq!(
            chat_service_owner(&e, &services),
            Some("room@conference.example.org")
        );
        let e = envelope(Kind::Iq, "get", "conference.example.org", Stage::FromClient);
        assert_eq!(
            chat_service_owner(&e, &services),
            Some("conference.example.org")
        );
        // The occupant's own replica sees its presence to the room first.
        let e = envelope(Kind::Presence, "", to_room, Stage::FromClient);
        assert_eq!(
            chat_service_owner(&e, &services),
            Some("juliet@example.org")
        );
        let e = envelope(
            Kind::Message,
            "chat",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(chat_service_owner(&e, &services), None);
    }

    #[test]
    fn presence_from_client_goes_to_senders_replica() {
        let e = envelope(
            Kind::Presence,
            "subscribe",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(target(&e, DOMAIN), Target::Session("juliet@example.org"));
    }

    #[test]
    fn inbound_goes_to_recipients_replica() {
        let e = envelope(
            Kind::Presence,
            "subscribe",
            "romeo@example.org",
            Stage::Inbound,
        );
        assert_eq!(target(&e, DOMAIN), Target::Session("romeo@example.org"));
    }

    #[test]
    fn iq_without_to_or_to_server_or_bare_is_answered_by_a_replica() {
        let e = envelope(Kind::Iq, "get", "", Stage::FromClient);
        assert_eq!(target(&e, DOMAIN), Target::Session("juliet@example.org"));
        let e = envelope(Kind::Iq, "get", DOMAIN, Stage::FromClient);
        assert_eq!(target(&e, DOMAIN), Target::Session("juliet@example.org"));
        let e = envelope(Kind::Iq, "get", "romeo@example.org", Stage::FromClient);
        assert_eq!(target(&e, DOMAIN), Target::Session("romeo@example.org"));
    }

    #[test]
    fn iq_and_message_to_full_jid_go_to_the_recipient() {
        let e = envelope(
            Kind::Iq,
            "get",
            "romeo@example.org/orchard",
            Stage::FromClient,
        );
        assert_eq!(
            target(&e, DOMAIN),
            Target::Recipient {
                bare: "romeo@example.org",
                resource: Some("orchard")
            }
        );
    }

    #[test]
    fn remote_domains_bounce_until_federation_exists() {
        let e = envelope(Kind::Message, "chat", "x@elsewhere.net", Stage::FromClient);
        assert_eq!(
            target(&e, DOMAIN),
            Target::Bounce(StanzaErrorCondition::RemoteServerNotFound)
        );
        let e = envelope(Kind::Message, "error", "x@elsewhere.net", Stage::FromClient);
        assert_eq!(target(&e, DOMAIN), Target::Ignore);
    }

    #[test]
    fn chat_to_bare_goes_to_all_of_top_priority() {
        let resources = [
            session("a", true, 5),
            session("b", true, 5),
            session("c", true, 1),
        ];
        let e = envelope(
            Kind::Message,
            "chat",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(delivered(select(&e, None, &resources)), ["a", "b"]);
    }

    #[test]
    fn headline_to_bare_goes_to_all_non_negative() {
        let resources = [
            session("a", true, 5),
            session("b", true, -1),
            session("c", true, 0),
        ];
        let e = envelope(
            Kind::Message,
            "headline",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(delivered(select(&e, None, &resources)), ["a", "c"]);
    }

    #[test]
    fn negative_priority_and_unavailable_resources_get_no_messages() {
        let resources = [session("a", true, -1), session("b", false, 10)];
        let e = envelope(
            Kind::Message,
            "chat",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(select(&e, None, &resources), Selection::Session);
    }

    #[test]
    fn no_resources_means_offline_for_chat_and_nothing_for_headline() {
        let e = envelope(
            Kind::Message,
            "normal",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(select(&e, None, &[]), Selection::Session);
        let e = envelope(
            Kind::Message,
            "headline",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(select(&e, None, &[]), Selection::Ignore);
        let e = envelope(
            Kind::Message,
            "groupchat",
            "romeo@example.org",
            Stage::FromClient,
        );
        assert_eq!(
            select(&e, None, &[]),
            Selection::Bounce(StanzaErrorCondition::ServiceUnavailable)
        );
    }

    #[test]
    fn full_jid_delivers_to_that_resource_even_if_lower_priority() {
        let resources = [session("a", true, 5), session("b", true, 1)];
        let e = envelope(
            Kind::Message,
            "chat",
            "romeo@example.org/b",
            Stage::FromClient,
        );
        assert_eq!(delivered(select(&e, Some("b"), &resources)), ["b"]);
    }

    #[test]
    fn unknown_full_jid_rules() {
        let resources = [session("a", true, 5)];
        let chat = envelope(
            Kind::Message,
            "chat",
            "romeo@example.org/x",
            Stage::FromClient,
        );
        assert_eq!(delivered(select(&chat, Some("x"), &resources)), ["a"]);
        let iq = envelope(Kind::Iq, "get", "romeo@example.org/x", Stage::FromClient);
        assert_eq!(
            select(&iq, Some("x"), &resources),
            Selection::Bounce(StanzaErrorCondition::ServiceUnavailable)
        );
        let presence = envelope(Kind::Presence, "", "romeo@example.org/x", Stage::Deliver);
        assert_eq!(select(&presence, Some("x"), &resources), Selection::Ignore);
        let headline = envelope(
            Kind::Message,
            "headline",
            "romeo@example.org/x",
            Stage::FromClient,
        );
        assert_eq!(select(&headline, Some("x"), &resources), Selection::Ignore);
    }

    #[test]
    fn processed_message_whose_resources_left_goes_back_to_storage() {
        let e = envelope(
            Kind::Message,
            "chat",
            "romeo@example.org/gone",
            Stage::Deliver,
        );
        assert_eq!(select(&e, Some("gone"), &[]), Selection::Session);
        let e = envelope(Kind::Message, "chat", "romeo@example.org", Stage::Deliver);
        assert_eq!(select(&e, None, &[]), Selection::Session);
    }

    #[test]
    fn presence_broadcast_reaches_every_available_resource() {
        let resources = [
            session("a", true, -5),
            session("b", false, 0),
            session("c", true, 0),
        ];
        let e = envelope(Kind::Presence, "", "romeo@example.org", Stage::Deliver);
        assert_eq!(delivered(select(&e, None, &resources)), ["a", "c"]);
    }
}
