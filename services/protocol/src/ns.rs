//! XML namespace names used by the core protocol and the server-handled extensions.

/// Content namespace of client-to-server streams (RFC 6120 §4.8.2).
pub const CLIENT: &str = "jabber:client";
/// Content namespace of server-to-server streams (RFC 6120 §4.8.2).
pub const SERVER: &str = "jabber:server";
/// Content namespace of external component streams (XEP-0114).
pub const COMPONENT_ACCEPT: &str = "jabber:component:accept";
/// Namespace of the `<stream:stream>` element itself.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza error conditions (RFC 6120 §8.3.3).
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS negotiation (RFC 6120 §5).
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL negotiation (RFC 6120 §6).
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921 §3, kept for old clients).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Stream management (XEP-0198).
pub const SM: &str = "urn:xmpp:sm:3";
/// Roster management (RFC 6121 §2).
pub const ROSTER: &str = "jabber:iq:roster";
/// Roster versioning stream feature (RFC 6121 §2.6).
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// Service discovery, info (XEP-0030).
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Service discovery, items (XEP-0030).
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// Software version (XEP-0092).
pub const VERSION: &str = "jabber:iq:version";
/// Last activity (XEP-0012).
pub const LAST: &str = "jabber:iq:last";
/// Entity time (XEP-0202).
pub const TIME: &str = "urn:xmpp:time";
/// XMPP ping (XEP-0199).
pub const PING: &str = "urn:xmpp:ping";
/// In-band registration (XEP-0077).
pub const REGISTER: &str = "jabber:iq:register";
/// In-band registration stream feature (XEP-0077).
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// Delayed delivery (XEP-0203).
pub const DELAY: &str = "urn:xmpp:delay";
/// Offline message storage disco feature (XEP-0160).
pub const OFFLINE: &str = "msgoffline";
/// Ad-hoc commands (XEP-0050).
pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
/// Data forms (XEP-0004).
pub const DATA_FORMS: &str = "jabber:x:data";
/// Service administration (XEP-0133): its commands' nodes and `FORM_TYPE`.
pub const ADMIN: &str = "http://jabber.org/protocol/admin";
/// The namespace bound to the `xml` prefix by the XML specification.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Namespaces common enough on the wire that a parsed stanza refers to a static string
/// instead of allocating its own copy.
const WELL_KNOWN: &[&str] = &[
    CLIENT,
    SERVER,
    COMPONENT_ACCEPT,
    STREAM,
    SASL,
    TLS,
    SM,
    BIND,
    SESSION,
    STREAMS,
];

/// The static copy of `uri` when it is one of the namespaces seen on most streams.
pub(crate) fn well_known(uri: &str) -> Option<&'static str> {
    WELL_KNOWN.iter().copied().find(|known| *known == uri)
}
/// XEP-0191 Blocking Command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191 application error condition.
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0280 Message Carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 Stanza Forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 Message Processing Hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0085 Chat State Notifications.
pub const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0184 Message Delivery Receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0333 Chat Markers.
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0045 Multi-User Chat: a join.
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045: what a room says of its occupants.
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0045: roles and affiliations.
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0045: room configuration and destruction.
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0359 Unique and Stable Stanza IDs.
pub const STANZA_ID: &str = "urn:xmpp:sid:0";
/// XEP-0421 Anonymous unique occupant identifiers.
pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0249 Direct MUC Invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
