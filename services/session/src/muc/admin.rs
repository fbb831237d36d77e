//! IQs to the chat service, its rooms and occupants: service discovery
//! (XEP-0045 §6), roles and affiliations (`muc#admin`, §8, §9), room
//! configuration and destruction (`muc#owner`, §10), pings (XEP-0199,
//! and XEP-0410's self-ping to one's own occupant JID).

use xmppd_grpc::Envelope;
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_protocol::{IqType, JidRef};

use super::occupancy::{self, broadcast, close_if_empty, remove};
use super::room::{Affiliation, Role, Room, apply_form};
use super::{store, user_x};
use crate::iq::{answer, payload_of};
use crate::module::IqReply;
use crate::outbox::Outbox;
use crate::service::Core;

type Result = anyhow::Result<()>;

/// Banned (§9.1).
const BANNED: u16 = 301;
/// Kicked (§8.2).
const KICKED: u16 = 307;
/// Removed by an affiliation change (§9.4).
const AFFILIATION_CHANGED: u16 = 321;
/// Removed as the room became members-only (§10.2).
const MEMBERS_ONLY: u16 = 322;

fn error(condition: StanzaErrorCondition) -> IqReply {
    IqReply::error(condition)
}

/// Answers a request with `reply`; results and errors are answers to the
/// room's own requests, which it makes none of.
async fn answered(
    core: &Core,
    envelope: &Envelope,
    out: &mut Outbox,
    reply: impl Future<Output = anyhow::Result<IqReply>>,
) -> Result {
    if !envelope.is_request() {
        return Ok(());
    }
    let reply = reply.await?;
    answer(core, envelope, reply, out);
    Ok(())
}

/// A stanza to the service's own address.
pub async fn service(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    if !matches!(envelope.kind(), xmppd_grpc::Kind::Iq) {
        return Ok(());
    }
    answered(core, envelope, out, async {
        let Some(payload) = payload_of(envelope) else {
            return Ok(error(StanzaErrorCondition::BadRequest));
        };
        let domain = envelope.to_jid().expect("checked").domain();
        Ok(if payload.is("query", ns::DISCO_INFO) {
            IqReply::with(
                Element::new("query", ns::DISCO_INFO)
                    .child(identity("conference", "text", "Chatrooms"))
                    .child(feature(ns::DISCO_INFO))
                    .child(feature(ns::DISCO_ITEMS))
                    .child(feature(ns::MUC))
                    .child(feature(ns::PING)),
            )
        } else if payload.is("query", ns::DISCO_ITEMS) {
            let mut items = Element::new("query", ns::DISCO_ITEMS);
            for (jid, config, locked) in store::rooms(&core.store, domain).await? {
                if config.public && !locked {
                    let mut item = Element::new("item", ns::DISCO_ITEMS).attr("jid", jid);
                    if !config.name.is_empty() {
                        item.set_attr("name", Some(config.name));
                    }
                    items.push_child(item);
                }
            }
            IqReply::with(items)
        } else if payload.is("ping", ns::PING) {
            IqReply::Result(None)
        } else {
            error(StanzaErrorCondition::ServiceUnavailable)
        })
    })
    .await
}

/// An IQ to a room or to one of its occupants.
pub async fn iq(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    if !envelope.is_request() {
        return Ok(());
    }
    let to = envelope.to_jid().expect("a room's stanza has a to");
    let Some(payload) = payload_of(envelope) else {
        answer(core, envelope, error(StanzaErrorCondition::BadRequest), out);
        return Ok(());
    };
    let Some(mut room) = store::load(&core.store, to.bare().as_str()).await? else {
        answer(
            core,
            envelope,
            error(StanzaErrorCondition::ItemNotFound),
            out,
        );
        return Ok(());
    };
    let set = envelope.iq_type() == Some(IqType::Set);
    let reply = match (to.resource(), payload.namespace()) {
        (Some(nick), _) => to_occupant(&room, envelope, nick, &payload),
        (None, ns::DISCO_INFO) if !set => info(&room),
        (None, ns::DISCO_ITEMS) if !set => IqReply::with(Element::new("query", ns::DISCO_ITEMS)),
        (None, ns::PING) if !set => IqReply::Result(None),
        (None, ns::MUC_OWNER) => owner(core, envelope, &mut room, &payload, set, out).await?,
        (None, ns::MUC_ADMIN) if set => set_items(core, envelope, &mut room, &payload, out).await?,
        (None, ns::MUC_ADMIN) => list(envelope, &room, &payload),
        _ => error(StanzaErrorCondition::ServiceUnavailable),
    };
    answer(core, envelope, reply, out);
    Ok(())
}

/// XEP-0410: an occupant pinging its own occupant JID learns it is still
/// joined; anyone not joined is told `not-acceptable`. Other IQs to
/// occupants are not relayed.
fn to_occupant(room: &Room, envelope: &Envelope, nick: &str, payload: &Element) -> IqReply {
    let Some(sender) = room.occupant_by_jid(&envelope.from) else {
        return error(StanzaErrorCondition::NotAcceptable);
    };
    match room.occupant(nick) {
        None => error(StanzaErrorCondition::ItemNotFound),
        Some(_) if payload.is("ping", ns::PING) && sender.nick == nick => IqReply::Result(None),
        Some(_) => error(StanzaErrorCondition::ServiceUnavailable),
    }
}

/// §6.4: the room's identity, features and `muc#roominfo` form.
fn info(room: &Room) -> IqReply {
    let name = match room.config.name.as_str() {
        "" => JidRef::new(&room.jid).node().unwrap_or_default(),
        name => name,
    };
    let mut query =
        Element::new("query", ns::DISCO_INFO).child(identity("conference", "text", name));
    for var in room.features() {
        query.push_child(feature(var));
    }
    query.push_child(room.info_form());
    IqReply::with(query)
}

/// §10: the configuration form, a submitted one, a cancelled creation, the
/// room's destruction. Owners only.
async fn owner(
    core: &Core,
    envelope: &Envelope,
    room: &mut Room,
    payload: &Element,
    set: bool,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    if !has_owner_rights(core, room, envelope.from_jid().bare().as_str()) {
        return Ok(error(StanzaErrorCondition::Forbidden));
    }
    if !set {
        return Ok(IqReply::with(
            Element::new("query", ns::MUC_OWNER).child(room.config_form()),
        ));
    }
    if let Some(destroy) = payload.get_child("destroy", ns::MUC_OWNER) {
        destroy_room(core, room, Some(destroy), out).await?;
        return Ok(IqReply::Result(None));
    }
    let Some(form) = payload.get_child("x", ns::DATA_FORMS) else {
        return Ok(error(StanzaErrorCondition::BadRequest));
    };
    match form.get_attr("type") {
        Some("cancel") if room.locked => {
            destroy_room(core, room, None, out).await?;
            Ok(IqReply::Result(None))
        }
        Some("cancel") => Ok(IqReply::Result(None)),
        Some("submit") => {
            let config = match apply_form(&room.config, form) {
                Ok(config) => config,
                Err(invalid) => {
                    let refusal = xmppd_protocol::error::StanzaError::new(
                        StanzaErrorCondition::NotAcceptable,
                    )
                    .with_text(invalid.0);
                    return Ok(IqReply::Error(refusal));
                }
            };
            let became_members_only = config.members_only && !room.config.members_only;
            room.config = config;
            room.locked = false;
            store::save_config(&core.store, room).await?;
            if became_members_only {
                let outsiders: Vec<String> = room
                    .occupants
                    .iter()
                    .filter(|o| room.affiliation(o.bare()) < Affiliation::Member)
                    .map(|o| o.nick.clone())
                    .collect();
                for nick in outsiders {
                    remove(core, room, &nick, &[MEMBERS_ONLY], None, out).await?;
                }
            }
            Ok(IqReply::Result(None))
        }
        _ => Ok(error(StanzaErrorCondition::BadRequest)),
    }
}

/// Whether `user` (a bare JID) may do what an owner of `room` does: an
/// owner, a service administrator, or the server itself, which is how the
/// admin API destroys a room (`super::destroy_request`). Only the cluster's
/// own services send from the server's domain: the edge stamps the `from`
/// of everything a client sends.
fn has_owner_rights(core: &Core, room: &Room, user: &str) -> bool {
    user == core.domain
        || room.affiliation(user) == Affiliation::Owner
        || core.settings().muc.is_admin(user)
}

/// §10.9: every occupant is told the room is gone (and where to go
/// instead), then it is deleted.
async fn destroy_room(
    core: &Core,
    room: &mut Room,
    destroy: Option<&Element>,
    out: &mut Outbox,
) -> Result {
    let mut told = Element::new("destroy", ns::MUC_USER);
    if let Some(destroy) = destroy {
        if let Some(venue) = destroy.get_attr("jid").and_then(|j| Jid::parse(j).ok()) {
            told.set_attr("jid", Some(venue.into_string()));
        }
        for child in destroy.children() {
            if child.is("reason", ns::MUC_OWNER) || child.is("password", ns::MUC_OWNER) {
                told.push_child(
                    Element::new(child.name(), ns::MUC_USER).text(child.text_content()),
                );
            }
        }
    }
    for occupant in &room.occupants {
        let presence = Element::new("presence", ns::CLIENT)
            .attr("from", room.occupant_jid(&occupant.nick))
            .attr("to", occupant.jid.as_str())
            .attr("type", "unavailable")
            .child(user_x(
                [
                    Element::new("item", ns::MUC_USER)
                        .attr("affiliation", "none")
                        .attr("role", "none"),
                    told.clone(),
                ],
                &[occupancy::SELF],
            ));
        out.deliver_element(&presence);
    }
    room.occupants.clear();
    store::destroy(&core.store, &room.jid).await?;
    Ok(())
}

/// §9.5, §8.5: an affiliation list (admins and owners) or a role list
/// (moderators).
fn list(envelope: &Envelope, room: &Room, payload: &Element) -> IqReply {
    let user = envelope.from_jid().bare().as_str();
    let requester = room.affiliation(user);
    let role = room
        .occupant_by_jid(&envelope.from)
        .map_or(Role::None, |o| o.role);
    let Some(item) = payload.get_child("item", ns::MUC_ADMIN) else {
        return error(StanzaErrorCondition::BadRequest);
    };
    let mut query = Element::new("query", ns::MUC_ADMIN);
    if let Some(affiliation) = item.get_attr("affiliation").map(Affiliation::parse) {
        let Some(affiliation) = affiliation.filter(|a| *a != Affiliation::None) else {
            return error(StanzaErrorCondition::BadRequest);
        };
        if requester < Affiliation::Admin {
            return error(StanzaErrorCondition::Forbidden);
        }
        for (jid, _) in room.affiliations.iter().filter(|(_, a)| *a == affiliation) {
            query.push_child(
                Element::new("item", ns::MUC_ADMIN)
                    .attr("affiliation", affiliation.name())
                    .attr("jid", jid.as_str()),
            );
        }
    } else if let Some(wanted) = item.get_attr("role").map(Role::parse) {
        let Some(wanted) = wanted.filter(|r| *r != Role::None) else {
            return error(StanzaErrorCondition::BadRequest);
        };
        if role != Role::Moderator {
            return error(StanzaErrorCondition::Forbidden);
        }
        for occupant in room.occupants.iter().filter(|o| o.role == wanted) {
            query.push_child(
                Element::new("item", ns::MUC_ADMIN)
                    .attr("role", wanted.name())
                    .attr("nick", occupant.nick.as_str())
                    .attr("jid", occupant.jid.as_str())
                    .attr("affiliation", room.affiliation(occupant.bare()).name()),
            );
        }
    } else {
        return error(StanzaErrorCondition::BadRequest);
    }
    IqReply::with(query)
}

/// One change a `muc#admin` set asks for.
enum Change {
    Role {
        nick: String,
        role: Role,
    },
    Affiliation {
        jid: String,
        affiliation: Affiliation,
    },
}

/// §8 and §9: role changes (kick, voice, moderator) and affiliation changes
/// (ban, member, admin, owner). Every item is checked before any applies.
async fn set_items(
    core: &Core,
    envelope: &Envelope,
    room: &mut Room,
    payload: &Element,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    let mut changes = Vec::new();
    for item in payload.children().filter(|c| c.is("item", ns::MUC_ADMIN)) {
        match check(core, envelope, room, item) {
            Ok(change) => changes.push(change),
            Err(condition) => return Ok(error(condition)),
        }
    }
    if changes.is_empty() {
        return Ok(error(StanzaErrorCondition::BadRequest));
    }
    for change in changes {
        match change {
            Change::Role { nick, role } => set_role(core, room, &nick, role, out).await?,
            Change::Affiliation { jid, affiliation } => {
                set_affiliation(core, room, &jid, affiliation, out).await?
            }
        }
    }
    close_if_empty(core, room).await?;
    Ok(IqReply::Result(None))
}

/// Whether the requester may make the change `item` asks for (§8.2–§8.6,
/// §9.1–§9.8, §10.3–§10.8).
fn check(
    core: &Core,
    envelope: &Envelope,
    room: &Room,
    item: &Element,
) -> std::result::Result<Change, StanzaErrorCondition> {
    let user = envelope.from_jid().bare().as_str();
    let requester = if core.settings().muc.is_admin(user) {
        Affiliation::Owner
    } else {
        room.affiliation(user)
    };
    let requester_role = room
        .occupant_by_jid(&envelope.from)
        .map_or(Role::None, |o| o.role);
    let affiliation = item.get_attr("affiliation").map(Affiliation::parse);
    let role = item.get_attr("role").map(Role::parse);
    match (
        item.get_attr("nick"),
        role,
        item.get_attr("jid"),
        affiliation,
    ) {
        (Some(nick), Some(role), None, None) => {
            let role = role.ok_or(StanzaErrorCondition::BadRequest)?;
            let target = room
                .occupant(nick)
                .ok_or(StanzaErrorCondition::ItemNotFound)?;
            let target_affiliation = room.affiliation(target.bare());
            if requester_role != Role::Moderator {
                return Err(StanzaErrorCondition::Forbidden);
            }
            // Moderators are made and unmade by admins and owners.
            let moderator_change = role == Role::Moderator || target.role == Role::Moderator;
            if moderator_change && requester < Affiliation::Admin {
                return Err(StanzaErrorCondition::Forbidden);
            }
            if target_affiliation >= Affiliation::Admin && role < Role::Moderator {
                return Err(StanzaErrorCondition::NotAllowed);
            }
            Ok(Change::Role {
                nick: nick.to_string(),
                role,
            })
        }
        (None, None, Some(jid), Some(affiliation)) => {
            let affiliation = affiliation.ok_or(StanzaErrorCondition::BadRequest)?;
            let jid = Jid::parse(jid).map_err(|_| StanzaErrorCondition::JidMalformed)?;
            let jid = jid.bare().into_string();
            let current = room.affiliation(&jid);
            let allowed = match requester {
                Affiliation::Owner => true,
                Affiliation::Admin => {
                    current < Affiliation::Admin && affiliation < Affiliation::Admin
                }
                _ => false,
            };
            if !allowed {
                return Err(if requester == Affiliation::Admin {
                    StanzaErrorCondition::NotAllowed
                } else {
                    StanzaErrorCondition::Forbidden
                });
            }
            // §10.9: a room keeps at least one owner.
            if current == Affiliation::Owner
                && affiliation != Affiliation::Owner
                && room.owners() <= 1
            {
                return Err(StanzaErrorCondition::Conflict);
            }
            Ok(Change::Affiliation { jid, affiliation })
        }
        _ => Err(StanzaErrorCondition::BadRequest),
    }
}

async fn set_role(
    core: &Core,
    room: &mut Room,
    nick: &str,
    role: Role,
    out: &mut Outbox,
) -> Result {
    if role == Role::None {
        return remove(core, room, nick, &[KICKED], None, out).await;
    }
    let Some(occupant) = room.occupant_mut(nick) else {
        return Ok(());
    };
    occupant.role = role;
    let occupant = occupant.clone();
    store::put_occupant(&core.store, &room.jid, &occupant, crate::clock::now_ms()).await?;
    broadcast(room, &occupant, "", &[], &[], None, out);
    Ok(())
}

async fn set_affiliation(
    core: &Core,
    room: &mut Room,
    jid: &str,
    affiliation: Affiliation,
    out: &mut Outbox,
) -> Result {
    store::set_affiliation(&core.store, &room.jid, jid, affiliation, "").await?;
    room.set_affiliation(jid, affiliation);
    let nicks: Vec<String> = room
        .occupants
        .iter()
        .filter(|o| o.bare() == jid)
        .map(|o| o.nick.clone())
        .collect();
    for nick in nicks {
        if affiliation == Affiliation::Outcast {
            remove(core, room, &nick, &[BANNED], None, out).await?;
        } else if room.config.members_only && affiliation < Affiliation::Member {
            remove(core, room, &nick, &[AFFILIATION_CHANGED], None, out).await?;
        } else {
            let role = room.default_role(affiliation);
            set_role(core, room, &nick, role, out).await?;
        }
    }
    Ok(())
}

fn identity(category: &str, kind: &str, name: &str) -> Element {
    Element::new("identity", ns::DISCO_INFO)
        .attr("category", category)
        .attr("type", kind)
        .attr("name", name)
}

fn feature(var: &str) -> Element {
    Element::new("feature", ns::DISCO_INFO).attr("var", var)
}
