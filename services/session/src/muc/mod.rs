//! XEP-0045 Multi-User Chat, run by the session replicas.
//!
//! # Layout
//!
//! - `room.rs`: a room as read from the store, and the rules that depend
//!   only on it (affiliations, roles, the configuration form).
//! - `store.rs`: rooms, affiliations, occupants and history, in Postgres or
//!   SQLite, with their migrations in `migrations/`.
//! - `occupancy.rs`: presence to a room: join, nick change, leave, and the
//!   presence every occupant sees.
//! - `chat.rs`: messages: groupchat with its history, subject, private
//!   messages, mediated invitations.
//! - `admin.rs`: IQs: service discovery, roles and affiliations
//!   (`muc#admin`), configuration and destruction (`muc#owner`), pings.
//!
//! # Ownership
//!
//! The router sends every stanza to a room to the session replica that owns
//! the room's bare JID by rendezvous hash, as it does for accounts
//! (`xmppd_router::routing::chat_service_owner`), and the replica's shards
//! run one room's stanzas one at a time. Nothing of a room is kept in the
//! replica between stanzas: each reads the room from the store and writes
//! what it changes before its output leaves, so when the owner dies the
//! next replica in rendezvous order serves the room from where the last
//! acknowledged stanza left it, and the router hands it every stanza the
//! dead one had not acknowledged.

mod admin;
mod chat;
mod occupancy;
pub mod room;
pub mod store;

use bytes::Bytes;
use xmppd_grpc::{Envelope, Kind};
use xmppd_protocol::error::{ErrorType, StanzaError, StanzaErrorCondition};
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_runtime::config::{MucConfig, RoomCreators};

use crate::handler::refuse;
use crate::outbox::Outbox;
use crate::service::Core;

pub use store::SCHEMA;

/// What the chat service needs from the configuration.
#[derive(Clone, Debug, Default)]
pub struct MucSettings {
    /// The services' domains (none: the service is off).
    pub domains: Vec<String>,
    pub config: MucConfig,
}

impl MucSettings {
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|served| served == domain)
    }

    /// Whether the account `jid` may create rooms.
    fn may_create(&self, jid: &str) -> bool {
        self.config.create == RoomCreators::Anyone || self.is_admin(jid)
    }

    /// A service administrator, who owns every room.
    fn is_admin(&self, jid: &str) -> bool {
        self.config.admins.iter().any(|admin| admin == jid)
    }
}

/// Whether `envelope` is for the chat service (a room, an occupant, or the
/// service itself), which [`handle`] then answers.
pub fn is_for_service(core: &Core, envelope: &Envelope) -> bool {
    envelope
        .to_jid()
        .is_some_and(|to| core.settings().muc.serves(to.domain()))
}

/// A stanza to the chat service.
pub async fn handle(core: &Core, envelope: &Envelope, out: &mut Outbox) -> anyhow::Result<()> {
    let Some(to) = envelope.to_jid() else {
        return Ok(());
    };
    if to.node().is_none() {
        return admin::service(core, envelope, out).await;
    }
    match envelope.kind() {
        Kind::Presence => occupancy::presence(core, envelope, out).await,
        Kind::Message => chat::message(core, envelope, out).await,
        Kind::Iq => admin::iq(core, envelope, out).await,
        Kind::Unspecified => Ok(()),
    }
}

/// An owner's request to destroy `room` (XEP-0045 §10.9), from the server
/// itself, with the `reason` and `alternate` venue occupants are told: the
/// router hands it to the room's replica, which destroys the room as it
/// does for an owner. The answer goes to the server's domain, where the
/// router drops it.
pub fn destroy_request(
    core: &Core,
    room: &str,
    reason: &str,
    alternate: Option<&str>,
    out: &mut Outbox,
) {
    let mut destroy = Element::new("destroy", ns::MUC_OWNER);
    if let Some(alternate) = alternate {
        destroy.set_attr("jid", Some(alternate.to_string()));
    }
    if !reason.is_empty() {
        destroy.push_child(Element::new("reason", ns::MUC_OWNER).text(reason));
    }
    let iq = Element::new("iq", ns::CLIENT)
        .attr("type", "set")
        .attr("id", format!("destroy-{:016x}", rand::random::<u64>()))
        .attr("from", core.domain.clone())
        .attr("to", room)
        .child(Element::new("query", ns::MUC_OWNER).child(destroy));
    out.inbound(room, &core.domain, Kind::Iq, "set", to_bytes(&iq));
}

/// Answers `envelope` with `condition` of the type XEP-0045 gives it.
fn reject(core: &Core, envelope: &Envelope, condition: StanzaErrorCondition, out: &mut Outbox) {
    let mut error = StanzaError::new(condition);
    // §7.2.10: a full room is a condition to wait out.
    if condition == StanzaErrorCondition::ServiceUnavailable && envelope.kind() == Kind::Presence {
        error.error_type = ErrorType::Wait;
    }
    refuse(core, envelope, &error, out);
}

/// The stanza's element, or `None` if its payload does not parse (which
/// the edge already made sure of).
fn element_of(envelope: &Envelope) -> Option<Element> {
    xmppd_protocol::stanza::Stanza::from_bytes(envelope.payload.clone(), ns::CLIENT)
        .ok()?
        .element()
        .ok()
}

fn to_bytes(element: &Element) -> Bytes {
    Bytes::from(element.to_xml(ns::CLIENT))
}

/// `<x xmlns='http://jabber.org/protocol/muc#user'/>` with `children`
/// and a `<status/>` for each of `codes`.
fn user_x(children: impl IntoIterator<Item = Element>, codes: &[u16]) -> Element {
    let mut x = Element::new("x", ns::MUC_USER);
    for child in children {
        x.push_child(child);
    }
    for code in codes {
        x.push_child(Element::new("status", ns::MUC_USER).attr("code", code.to_string()));
    }
    x
}
