//! Presence to a room (XEP-0045 §7.1–§7.2, §7.6, §7.7, §7.14): joining,
//! changing nick or presence, leaving; and the presence each occupant sees
//! of the others, which the moderation of `admin.rs` sends too.

use bytes::Bytes;
use xmppd_grpc::{Envelope, Kind};
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use super::room::{Affiliation, Occupant, Role, Room};
use super::{MucSettings, chat, element_of, reject, store, to_bytes, user_x};
use crate::clock::now_ms;
use crate::outbox::Outbox;
use crate::service::Core;

type Result = anyhow::Result<()>;

/// Self-presence (§7.2.3).
pub const SELF: u16 = 110;
/// The room shows real JIDs to everyone (§7.2.5).
const NON_ANONYMOUS: u16 = 100;
/// A new room (§10.1.1).
const CREATED: u16 = 201;
/// A new nick (§7.6).
const NICK_CHANGED: u16 = 303;

pub async fn presence(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    let to = envelope.to_jid().expect("a room's stanza has a to");
    let room_jid = to.bare().as_str();
    let Some(nick) = to.resource() else {
        // §7.2.1: a join must name a nick.
        if envelope.r#type.is_empty() {
            reject(core, envelope, StanzaErrorCondition::JidMalformed, out);
        }
        return Ok(());
    };
    let room = store::load(&core.store, room_jid).await?;
    match envelope.r#type.as_str() {
        "" => {
            let Some(element) = element_of(envelope) else {
                return Ok(());
            };
            let current = room
                .as_ref()
                .and_then(|room| room.occupant_by_jid(&envelope.from))
                .map(|occupant| occupant.nick.clone());
            match (room, current) {
                (Some(room), Some(current)) if current == nick => {
                    update(core, room, &current, &element, out).await
                }
                (Some(room), Some(current)) => {
                    change_nick(core, envelope, room, &current, nick, &element, out).await
                }
                (room, _) => join(core, envelope, room, nick, &element, out).await,
            }
        }
        // An error from an occupant's client means it is gone (§7.2.3 of
        // XEP-0410 ends it the same way).
        "unavailable" | "error" => {
            let Some(mut room) = room else {
                return Ok(());
            };
            let Some(occupant) = room.occupant_by_jid(&envelope.from).cloned() else {
                return Ok(());
            };
            let presence = element_of(envelope).map(|element| own_presence(&element));
            remove(core, &mut room, &occupant.nick, &[], presence, out).await?;
            close_if_empty(core, &room).await
        }
        // Subscriptions and probes mean nothing to a room.
        _ => Ok(()),
    }
}

/// The reasons §7.2 gives for refusing a join, in its order.
fn refusal(
    settings: &MucSettings,
    room: &Room,
    user: &str,
    nick: &str,
    password: Option<&str>,
) -> Option<StanzaErrorCondition> {
    let affiliation = room.affiliation(user);
    let occupants = room.occupants.len();
    let room_limit = match room.config.max_users {
        0 => u32::MAX,
        limit => limit,
    } as usize;
    let nick_taken = room.occupant(nick).is_some_and(|o| o.bare() != user);
    if room.locked && affiliation != Affiliation::Owner {
        Some(StanzaErrorCondition::ItemNotFound)
    } else if affiliation == Affiliation::Outcast {
        Some(StanzaErrorCondition::Forbidden)
    } else if room.config.members_only && affiliation < Affiliation::Member {
        Some(StanzaErrorCondition::RegistrationRequired)
    } else if !room.config.password.is_empty() && password != Some(room.config.password.as_str()) {
        Some(StanzaErrorCondition::NotAuthorized)
    } else if nick_taken {
        Some(StanzaErrorCondition::Conflict)
    } else if occupants >= settings.config.max_occupants as usize
        || (occupants >= room_limit && affiliation < Affiliation::Admin)
    {
        Some(StanzaErrorCondition::ServiceUnavailable)
    } else {
        None
    }
}

async fn join(
    core: &Core,
    envelope: &Envelope,
    room: Option<Room>,
    nick: &str,
    element: &Element,
    out: &mut Outbox,
) -> Result {
    let settings = &core.settings().muc;
    let user = envelope.from_jid().bare().as_str();
    let muc = element.get_child("x", ns::MUC);
    let (mut room, created) = match room {
        Some(room) => (room, false),
        None => {
            if !settings.may_create(user)
                || store::rooms_owned(&core.store, user).await?
                    >= i64::from(settings.config.max_rooms_per_user)
            {
                reject(core, envelope, StanzaErrorCondition::NotAllowed, out);
                return Ok(());
            }
            let room_jid = envelope.to_jid().expect("checked").bare().as_str();
            // §10.1.2: a client that does not speak XEP-0045 gets an
            // instant room; one that does configures it or asks for an
            // instant one, and the room is locked until then.
            let mut room = Room::new(room_jid, muc.is_none());
            store::create(&core.store, &room, user, now_ms()).await?;
            room.set_affiliation(user, Affiliation::Owner);
            (room, true)
        }
    };
    if settings.is_admin(user) && room.affiliation(user) != Affiliation::Owner {
        room.set_affiliation(user, Affiliation::Owner);
    }
    let password = muc
        .and_then(|x| x.get_child("password", ns::MUC))
        .map(Element::text_content);
    if let Some(condition) = refusal(settings, &room, user, nick, password.as_deref()) {
        reject(core, envelope, condition, out);
        return Ok(());
    }
    let occupant = Occupant {
        nick: nick.to_string(),
        jid: envelope.from.clone(),
        role: room.default_role(room.affiliation(user)),
        presence: own_presence(element),
    };
    store::put_occupant(&core.store, &room.jid, &occupant, now_ms()).await?;
    // §7.2.3: the others' presence first, then the newcomer's to everyone,
    // its own last; then the history and the subject.
    for other in &room.occupants {
        let shown = presence_of(&room, other, "", room.shows_jids_to(&occupant), &[], None);
        deliver_presence(&occupant, &room, other, "", to_bytes(&shown), out);
    }
    room.occupants.push(occupant.clone());
    let mut own = Vec::new();
    if room.config.whois_anyone {
        own.push(NON_ANONYMOUS);
    }
    if created {
        own.push(CREATED);
    }
    broadcast(&room, &occupant, "", &[], &own, None, out);
    chat::history(core, &room, &occupant, muc, out).await?;
    chat::send_subject(&room, &occupant, out);
    Ok(())
}

/// §7.7: the occupant's new presence, seen by everyone.
async fn update(
    core: &Core,
    mut room: Room,
    nick: &str,
    element: &Element,
    out: &mut Outbox,
) -> Result {
    let occupant = room.occupant_mut(nick).expect("an occupant");
    occupant.presence = own_presence(element);
    let occupant = occupant.clone();
    store::put_occupant(&core.store, &room.jid, &occupant, now_ms()).await?;
    broadcast(&room, &occupant, "", &[], &[], None, out);
    Ok(())
}

/// §7.6: unavailable with 303 and the new nick, then available under it.
async fn change_nick(
    core: &Core,
    envelope: &Envelope,
    mut room: Room,
    old: &str,
    new: &str,
    element: &Element,
    out: &mut Outbox,
) -> Result {
    let user = envelope.from_jid().bare().as_str();
    if room.occupant(new).is_some_and(|o| o.bare() != user) {
        reject(core, envelope, StanzaErrorCondition::Conflict, out);
        return Ok(());
    }
    let before = room.occupant(old).expect("an occupant").clone();
    broadcast(
        &room,
        &before,
        "unavailable",
        &[NICK_CHANGED],
        &[],
        Some(new),
        out,
    );
    store::remove_occupant(&core.store, &room.jid, old).await?;
    let occupant = Occupant {
        nick: new.to_string(),
        presence: own_presence(element),
        ..before
    };
    store::put_occupant(&core.store, &room.jid, &occupant, now_ms()).await?;
    room.occupants.retain(|o| o.nick != old);
    room.occupants.push(occupant.clone());
    broadcast(&room, &occupant, "", &[], &[], None, out);
    Ok(())
}

/// Takes `nick` out of the room: everyone, the occupant last, sees it leave
/// with `codes` (307 kicked, 301 banned, 321/322 affiliation...).
pub async fn remove(
    core: &Core,
    room: &mut Room,
    nick: &str,
    codes: &[u16],
    presence: Option<Bytes>,
    out: &mut Outbox,
) -> Result {
    let Some(mut occupant) = room.occupant(nick).cloned() else {
        return Ok(());
    };
    store::remove_occupant(&core.store, &room.jid, nick).await?;
    if let Some(presence) = presence {
        occupant.presence = presence;
    }
    occupant.role = Role::None;
    broadcast(room, &occupant, "unavailable", codes, &[], None, out);
    room.occupants.retain(|o| o.nick != nick);
    Ok(())
}

/// A temporary room (or one never configured) ends with its last occupant.
pub async fn close_if_empty(core: &Core, room: &Room) -> Result {
    if room.occupants.is_empty() && (!room.config.persistent || room.locked) {
        store::destroy(&core.store, &room.jid).await?;
    }
    Ok(())
}

/// `occupant`'s presence with the status `codes` to every occupant of
/// `room`, itself last, whose copy adds 110 and `own_codes` (100 and 201
/// speak of the room to the newcomer only). `new_nick` for a nick change.
pub fn broadcast(
    room: &Room,
    occupant: &Occupant,
    presence_type: &str,
    codes: &[u16],
    own_codes: &[u16],
    new_nick: Option<&str>,
    out: &mut Outbox,
) {
    // One encoding per variant, not per occupant.
    let mut encoded: [Option<Bytes>; 2] = [None, None];
    for viewer in room.occupants.iter().filter(|o| o.jid != occupant.jid) {
        let shows_jid = room.shows_jids_to(viewer);
        let bytes = encoded[usize::from(shows_jid)].get_or_insert_with(|| {
            to_bytes(&presence_of(
                room,
                occupant,
                presence_type,
                shows_jid,
                codes,
                new_nick,
            ))
        });
        deliver_presence(viewer, room, occupant, presence_type, bytes.clone(), out);
    }
    let own_codes: Vec<u16> = codes
        .iter()
        .chain(&[SELF])
        .chain(own_codes)
        .copied()
        .collect();
    let own = presence_of(room, occupant, presence_type, true, &own_codes, new_nick);
    deliver_presence(occupant, room, occupant, presence_type, to_bytes(&own), out);
}

fn deliver_presence(
    viewer: &Occupant,
    room: &Room,
    occupant: &Occupant,
    presence_type: &str,
    payload: Bytes,
    out: &mut Outbox,
) {
    out.deliver(
        &viewer.jid,
        &room.occupant_jid(&occupant.nick),
        Kind::Presence,
        presence_type,
        payload,
    );
}

/// `occupant`'s presence as an occupant sees it (§7.2.3): its own presence's
/// children, then what the room says of it.
pub fn presence_of(
    room: &Room,
    occupant: &Occupant,
    presence_type: &str,
    shows_jid: bool,
    codes: &[u16],
    new_nick: Option<&str>,
) -> Element {
    let mut presence = Element::parse(&occupant.presence, ns::CLIENT)
        .unwrap_or_else(|_| Element::new("presence", ns::CLIENT));
    presence.set_attr("from", Some(room.occupant_jid(&occupant.nick)));
    if !presence_type.is_empty() {
        presence.set_attr("type", Some(presence_type.to_string()));
    }
    let affiliation = room.affiliation(occupant.bare());
    let mut item = Element::new("item", ns::MUC_USER)
        .attr("affiliation", affiliation.name())
        .attr("role", occupant.role.name());
    if shows_jid {
        item.set_attr("jid", Some(occupant.jid.clone()));
    }
    if let Some(new_nick) = new_nick {
        item.set_attr("nick", Some(new_nick.to_string()));
    }
    presence.push_child(user_x([item], codes));
    presence.push_child(
        Element::new("occupant-id", ns::OCCUPANT_ID).attr("id", room.occupant_id(&occupant.jid)),
    );
    presence
}

/// What an occupant's presence carries of its own (show, status, priority,
/// capabilities...), without what only the room may say.
fn own_presence(element: &Element) -> Bytes {
    let mut own = Element::new("presence", ns::CLIENT);
    for child in element.children() {
        let room_says = child.is("x", ns::MUC)
            || child.is("x", ns::MUC_USER)
            || child.is("occupant-id", ns::OCCUPANT_ID);
        if !room_says {
            own.push_child(child.clone());
        }
    }
    to_bytes(&own)
}
