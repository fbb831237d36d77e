//! Messages to a room (XEP-0045 §7.4, §7.5, §7.8, §8.1): groupchat messages
//! reflected to every occupant and kept as history, the subject, private
//! messages between occupants, mediated invitations and their declines.

use xmppd_grpc::{Envelope, Kind};
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_protocol::{JidRef, MessageType};

use super::room::{Affiliation, Occupant, Role, Room};
use super::store::{self, Archived};
use super::{element_of, reject, to_bytes, user_x};
use crate::clock::{format_utc, now_ms, parse_utc};
use crate::outbox::Outbox;
use crate::service::Core;

type Result = anyhow::Result<()>;

pub async fn message(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    if envelope.is_error() {
        return Ok(());
    }
    let to = envelope.to_jid().expect("a room's stanza has a to");
    let Some(room) = store::load(&core.store, to.bare().as_str()).await? else {
        reject(core, envelope, StanzaErrorCondition::ItemNotFound, out);
        return Ok(());
    };
    let Some(element) = element_of(envelope) else {
        return Ok(());
    };
    if let Some(x) = element.get_child("x", ns::MUC_USER)
        && to.resource().is_none()
    {
        return invitations(core, envelope, &room, x, out).await;
    }
    let Some(sender) = room.occupant_by_jid(&envelope.from).cloned() else {
        // §7.4, §7.5: only occupants speak in a room.
        reject(core, envelope, StanzaErrorCondition::NotAcceptable, out);
        return Ok(());
    };
    let groupchat = envelope.message_type() == Some(MessageType::Groupchat);
    match to.resource() {
        Some(_) if groupchat => {
            reject(core, envelope, StanzaErrorCondition::BadRequest, out);
            Ok(())
        }
        Some(nick) => {
            private(core, envelope, &room, &sender, nick, element, out);
            Ok(())
        }
        None if groupchat => groupchat_message(core, envelope, &room, &sender, element, out).await,
        // A normal or chat message to the room itself means nothing to it.
        None => {
            reject(core, envelope, StanzaErrorCondition::BadRequest, out);
            Ok(())
        }
    }
}

/// §7.4 and §8.1: reflected to every occupant, the sender included, with
/// the room's stanza id (XEP-0359) and the sender's occupant id (XEP-0421);
/// kept as history when it has a body.
async fn groupchat_message(
    core: &Core,
    envelope: &Envelope,
    room: &Room,
    sender: &Occupant,
    mut element: Element,
    out: &mut Outbox,
) -> Result {
    let subject = element
        .get_child("subject", ns::CLIENT)
        .map(Element::text_content);
    let has_body = element.get_child("body", ns::CLIENT).is_some();
    if sender.role < Role::Participant {
        reject(core, envelope, StanzaErrorCondition::Forbidden, out);
        return Ok(());
    }
    if let Some(subject) = &subject {
        let allowed = sender.role == Role::Moderator || room.config.change_subject;
        if !allowed {
            reject(core, envelope, StanzaErrorCondition::Forbidden, out);
            return Ok(());
        }
        if subject.chars().count() > core.settings().muc.config.max_subject_chars as usize {
            reject(core, envelope, StanzaErrorCondition::NotAcceptable, out);
            return Ok(());
        }
    }
    let from = room.occupant_jid(&sender.nick);
    let stanza_id = format!("{:032x}", rand::random::<u128>());
    element.set_attr("from", Some(from.clone()));
    element.set_attr("to", None);
    // XEP-0359 §3 and XEP-0421 §4: what the sender claims in the room's
    // name is removed.
    element.retain_children(|child| {
        let room_stanza_id =
            child.is("stanza-id", ns::STANZA_ID) && child.get_attr("by") == Some(room.jid.as_str());
        !room_stanza_id && !child.is("occupant-id", ns::OCCUPANT_ID)
    });
    element.push_child(
        Element::new("stanza-id", ns::STANZA_ID)
            .attr("id", stanza_id.as_str())
            .attr("by", room.jid.as_str()),
    );
    element.push_child(
        Element::new("occupant-id", ns::OCCUPANT_ID).attr("id", room.occupant_id(&sender.jid)),
    );
    let mut payload = to_bytes(&element);
    if let Some(subject) = &subject {
        store::set_subject(&core.store, &room.jid, subject, &from).await?;
    }
    if has_body {
        let origin = match envelope.id.as_str() {
            "" => stanza_id.clone(),
            id => format!("{}\n{id}", envelope.from),
        };
        let message = Archived {
            stanza_id,
            origin,
            nick: sender.nick.clone(),
            sender: sender.bare().to_string(),
            stamp: now_ms(),
            stanza: payload.clone(),
        };
        let keep = core.settings().muc.config.max_history;
        // Handed to the room again (its replica died before acknowledging
        // it): the occupants get what was kept, under the same stanza id.
        if let Some(kept) = store::archive(&core.store, &room.jid, &message, keep).await? {
            payload = kept.stanza;
        }
    }
    for occupant in &room.occupants {
        out.deliver(
            &occupant.jid,
            &from,
            Kind::Message,
            "groupchat",
            payload.clone(),
        );
    }
    Ok(())
}

/// §7.5: a private message through the room, from the sender's occupant JID.
fn private(
    core: &Core,
    envelope: &Envelope,
    room: &Room,
    sender: &Occupant,
    nick: &str,
    mut element: Element,
    out: &mut Outbox,
) {
    let Some(recipient) = room.occupant(nick) else {
        reject(core, envelope, StanzaErrorCondition::ItemNotFound, out);
        return;
    };
    let from = room.occupant_jid(&sender.nick);
    element.set_attr("from", Some(from.clone()));
    element.set_attr("to", None);
    element.retain_children(|child| !child.is("x", ns::MUC_USER));
    element.push_child(Element::new("x", ns::MUC_USER));
    out.deliver(
        &recipient.jid,
        &from,
        Kind::Message,
        &envelope.r#type,
        to_bytes(&element),
    );
}

/// §7.8.2 mediated invitations and §7.8.2's declines, each to its addressee
/// from the room.
async fn invitations(
    core: &Core,
    envelope: &Envelope,
    room: &Room,
    x: &Element,
    out: &mut Outbox,
) -> Result {
    let sender = envelope.from_jid().bare().as_str();
    let invites: Vec<&Element> = x
        .children()
        .filter(|c| c.is("invite", ns::MUC_USER))
        .collect();
    if let Some(decline) = x.get_child("decline", ns::MUC_USER) {
        let Some(inviter) = decline.get_attr("to").and_then(valid_jid) else {
            reject(core, envelope, StanzaErrorCondition::JidMalformed, out);
            return Ok(());
        };
        let declined = Element::new("decline", ns::MUC_USER).attr("from", sender);
        send_from_room(room, &inviter, with_reason(declined, decline), None, out);
        return Ok(());
    }
    if invites.is_empty() {
        reject(core, envelope, StanzaErrorCondition::BadRequest, out);
        return Ok(());
    }
    if room.occupant_by_jid(&envelope.from).is_none() {
        reject(core, envelope, StanzaErrorCondition::NotAcceptable, out);
        return Ok(());
    }
    let affiliation = room.affiliation(sender);
    let may_add_members = affiliation >= Affiliation::Admin || room.config.allow_invites;
    if room.config.members_only && !may_add_members {
        reject(core, envelope, StanzaErrorCondition::Forbidden, out);
        return Ok(());
    }
    let mut invitees = Vec::with_capacity(invites.len());
    for invite in &invites {
        match invite.get_attr("to").and_then(valid_jid) {
            Some(invitee) => invitees.push(invitee),
            None => {
                reject(core, envelope, StanzaErrorCondition::JidMalformed, out);
                return Ok(());
            }
        }
    }
    for (invite, invitee) in invites.iter().zip(&invitees) {
        let bare = JidRef::new(invitee).bare().as_str();
        if room.config.members_only && room.affiliation(bare) < Affiliation::Member {
            store::set_affiliation(&core.store, &room.jid, bare, Affiliation::Member, "").await?;
        }
        let invitation = Element::new("invite", ns::MUC_USER).attr("from", &*envelope.from);
        let password = (!room.config.password.is_empty())
            .then(|| Element::new("password", ns::MUC_USER).text(room.config.password.as_str()));
        send_from_room(
            room,
            invitee,
            with_reason(invitation, invite),
            password,
            out,
        );
    }
    Ok(())
}

fn valid_jid(jid: &str) -> Option<String> {
    Jid::parse(jid).ok().map(Jid::into_string)
}

/// `element` with the `<reason/>` of `original`, if it has one.
fn with_reason(mut element: Element, original: &Element) -> Element {
    if let Some(reason) = original.get_child("reason", ns::MUC_USER) {
        element.push_child(reason.clone());
    }
    element
}

fn send_from_room(
    room: &Room,
    to: &str,
    child: Element,
    password: Option<Element>,
    out: &mut Outbox,
) {
    let message = Element::new("message", ns::CLIENT)
        .attr("from", room.jid.as_str())
        .attr("to", to)
        .child(user_x([child].into_iter().chain(password), &[]));
    out.deliver_element(&message);
}

/// §7.2.14: the discussion history a newcomer asked for (`<history/>` of
/// its join), at most the service's limit, each with its delay stamp.
pub async fn history(
    core: &Core,
    room: &Room,
    occupant: &Occupant,
    muc: Option<&Element>,
    out: &mut Outbox,
) -> Result {
    let limits = muc.and_then(|x| x.get_child("history", ns::MUC));
    let attr = |name: &str| limits.and_then(|history| history.get_attr(name));
    let number = |name: &str| attr(name).and_then(|value| value.parse::<u64>().ok());
    let service_limit = core.settings().muc.config.max_history;
    let max_stanzas =
        number("maxstanzas").map_or(service_limit, |n| n.min(u64::from(service_limit)) as u32);
    let max_chars = number("maxchars").unwrap_or(u64::MAX);
    let now = now_ms();
    // The later of `seconds` and `since`.
    let since = [
        number("seconds").map(|s| {
            let back = i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000);
            now.saturating_sub(back)
        }),
        attr("since").and_then(parse_utc),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(i64::MIN);
    if max_stanzas == 0 || max_chars == 0 {
        return Ok(());
    }
    let messages = store::history(&core.store, &room.jid, since, max_stanzas).await?;
    // maxchars counts whole stanzas, newest first (§7.2.14).
    let mut chars = 0u64;
    let mut start = messages.len();
    while start > 0 {
        let size = messages[start - 1].stanza.len() as u64;
        if chars + size > max_chars {
            break;
        }
        chars += size;
        start -= 1;
    }
    for message in &messages[start..] {
        let Ok(mut element) = Element::parse(&message.stanza, ns::CLIENT) else {
            continue;
        };
        element.push_child(
            Element::new("delay", ns::DELAY)
                .attr("from", room.jid.as_str())
                .attr("stamp", format_utc(message.stamp)),
        );
        out.deliver(
            &occupant.jid,
            &room.occupant_jid(&message.nick),
            Kind::Message,
            "groupchat",
            to_bytes(&element),
        );
    }
    Ok(())
}

/// §7.2.15: the subject, last of a join, empty when none was set.
pub fn send_subject(room: &Room, occupant: &Occupant, out: &mut Outbox) {
    let from = match room.subject_from.as_str() {
        "" => room.jid.as_str(),
        from => from,
    };
    let message = Element::new("message", ns::CLIENT)
        .attr("from", from)
        .attr("type", "groupchat")
        .attr("id", format!("subject{:016x}", rand::random::<u64>()))
        .child(Element::new("subject", ns::CLIENT).text(room.subject.as_str()));
    out.deliver(
        &occupant.jid,
        from,
        Kind::Message,
        "groupchat",
        to_bytes(&message),
    );
}
